"""Time-series forecasting: a Keras 3 LSTM, converted and run by lstm_fast.

End to end, in a few seconds on a CPU (Keras runs on its PyTorch backend; no TensorFlow):

1. make a synthetic multivariate series: three noisy sines, the task is to forecast the next
   value of channel 0;
2. train a tiny Keras model ``LSTM(32, return_sequences=True) -> Dense(1)`` that forecasts the
   next value at *every* step of a window (a causal, streamable forecaster);
3. save two ``.keras`` files with the same weights: the *window* forecaster
   ``LSTM(32) -> Dense(1)`` (one forecast per window, ``return_sequences=False``) and the
   *streaming* forecaster (one forecast per step, ``return_sequences=True``);
4. convert both with the CLI (``lstm-fast convert model.keras -o model.lfm``);
5. window use: ``lstm_fast.load(...).predict`` on held-out windows, compared with Keras;
6. streaming use: the held-out series is fed one frame at a time through
   ``model.stream().step``, the state carried between calls, compared with Keras on the whole
   series and with a ``stateful=True`` Keras model stepped frame by frame;
7. latency per call at batch 1 (median of ``--calls`` calls), lstm_fast vs Keras: indicative
   only (one machine, one thread, Keras on its torch backend).

Usage::

    python examples/keras_forecaster.py [--workdir DIR]

Outputs (``.keras`` files, converted models) go to ``--workdir`` (default: a temporary
directory).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lstm_fast  # noqa: E402

SEED = 0
TOLERANCE = 1e-4
CHANNELS = 3
WINDOW = 48
UNITS = 32
TRAIN_STEPS, TEST_STEPS = 6000, 1000


def make_series(steps: int, rng: np.random.Generator, t0: int = 0) -> np.ndarray:
    """(steps, CHANNELS) float32: three related noisy sines (periods 40, 40 and 23 steps)."""
    t = np.arange(t0, t0 + steps, dtype=np.float64)
    phase = 2 * np.pi * t
    series = np.stack([
        np.sin(phase / 40) + 0.4 * np.sin(phase / 23),
        np.cos(phase / 40),
        np.sin(phase / 23),
    ], axis=1)
    return (series + 0.05 * rng.standard_normal(series.shape)).astype(np.float32)


def windows(series: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, WINDOW, C) and per-step targets (N, WINDOW, 1): channel 0 one step ahead."""
    idx = starts[:, None] + np.arange(WINDOW)[None, :]
    return series[idx], series[idx + 1, :1]


def forecaster(return_sequences: bool, batch_shape: tuple | None = None,
               stateful: bool = False) -> keras.Model:
    """LSTM(UNITS) -> Dense(1); the Dense applies at every step when sequences are returned."""
    inp = (keras.Input(batch_shape=batch_shape) if batch_shape
           else keras.Input((None if return_sequences else WINDOW, CHANNELS)))
    return keras.Sequential([
        inp,
        keras.layers.LSTM(UNITS, return_sequences=return_sequences, stateful=stateful),
        keras.layers.Dense(1),
    ])


def to_numpy(y: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(y))


def median_us(fn, calls: int) -> float:
    """Median wall time of ``fn()`` in microseconds, after a few warm-up calls."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def convert(source: Path, out: Path) -> None:
    """``lstm-fast convert SOURCE -o OUT`` in a subprocess, its output indented."""
    # --no-verify: the CLI would load Keras again to compare on random input; this script
    # compares on real data below, with Keras already loaded.
    cmd = [sys.executable, "-m", "lstm_fast", "convert", str(source), "-o", str(out),
           "--no-verify"]
    print("  $ " + " ".join(["lstm-fast", *cmd[3:]]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        print("  | " + line)
    if proc.returncode != 0:
        raise SystemExit(f"conversion failed (exit code {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="where to write the files (default: a temporary dir)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per engine")
    args = ap.parse_args(argv)
    if args.workdir:
        return run(Path(args.workdir), args.epochs, args.calls)
    with tempfile.TemporaryDirectory(prefix="lstm_fast_forecast_") as tmp:
        code = run(Path(tmp), args.epochs, args.calls)
        print("(a temporary directory, removed now; keep the files with --workdir DIR)")
        return code


def run(workdir: Path, epochs: int, calls: int) -> int:
    import torch  # Keras's backend here; used for its no_grad() and thread count only

    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(SEED)
    torch.set_num_threads(1)  # lstm_fast runs on one thread too: a like-for-like comparison
    rng = np.random.default_rng(SEED)

    print("== 1. data")
    train_series = make_series(TRAIN_STEPS, rng)
    test_series = make_series(TEST_STEPS, rng, t0=TRAIN_STEPS)  # held out: later in time
    x_train, y_train = windows(train_series, np.arange(0, TRAIN_STEPS - WINDOW - 1, 3))
    x_test, y_test = windows(test_series, np.arange(0, TEST_STEPS - WINDOW - 1, 4))
    print(f"  {CHANNELS} channels; training windows {x_train.shape}, held-out {x_test.shape}; "
          f"target: channel 0 one step ahead")

    print(f"== 2. train Keras {keras.__version__} ({keras.backend.backend()} backend): "
          f"LSTM({UNITS}, return_sequences=True) -> Dense(1)")
    seq_model = forecaster(return_sequences=True)
    seq_model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    t0 = time.perf_counter()
    seq_model.fit(x_train, y_train, batch_size=64, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: print(
                      f"  epoch {e + 1}/{epochs}: mse {logs['loss']:.4f}"))])
    print(f"  trained in {time.perf_counter() - t0:.1f} s")

    print("== 3. save as .keras: a window forecaster and a streaming forecaster, same weights")
    window_model = forecaster(return_sequences=False)  # one forecast per window
    window_model.set_weights(seq_model.get_weights())
    window_path, seq_path = workdir / "forecaster_window.keras", workdir / "forecaster_seq.keras"
    window_model.save(window_path)
    seq_model.save(seq_path)
    print(f"  {window_path}\n  {seq_path}")

    print("== 4. convert with the CLI")
    window_lfm, seq_lfm = workdir / "forecaster_window.lfm", workdir / "forecaster_seq.lfm"
    convert(window_path, window_lfm)
    convert(seq_path, seq_lfm)

    print("== 5. window use: lstm_fast.load(...).predict on held-out windows")
    fast_window = lstm_fast.load(window_lfm)
    y_fast = fast_window.predict(x_test)  # (N, 1): the forecast after each window
    with torch.no_grad():
        y_keras = to_numpy(window_model(x_test, training=False))
    diff_window = float(np.max(np.abs(y_fast.astype(np.float64) - y_keras)))
    truth = y_test[:, -1]
    rmse = float(np.sqrt(np.mean((y_fast - truth) ** 2)))
    naive = float(np.sqrt(np.mean((x_test[:, -1, :1] - truth) ** 2)))
    print(f"  forecasts {y_fast.shape}; max abs difference vs Keras: {diff_window:.3g}")
    print(f"  forecast RMSE {rmse:.3f} (repeating the last value: {naive:.3f})")
    assert diff_window < TOLERANCE, f"lstm_fast differs from Keras by {diff_window:.3g}"

    print("== 6. streaming use: one frame at a time through model.stream()")
    fast_seq = lstm_fast.load(seq_lfm)
    stream = fast_seq.stream(batch=1)  # state starts at zero and carries over between calls
    frames = test_series[:-1]  # forecast frame t+1 from frames 0..t
    y_stream = np.concatenate([stream.step(frame[None, :]) for frame in frames])  # (T, 1)
    with torch.no_grad():  # Keras on the whole series at once
        y_whole = to_numpy(seq_model(frames[None], training=False))[0]
    # The same thing in Keras: a stateful=True copy called once per frame.
    keras_stateful = forecaster(True, batch_shape=(1, 1, CHANNELS), stateful=True)
    keras_stateful.set_weights(seq_model.get_weights())
    with torch.no_grad():
        y_keras_steps = np.concatenate(
            [to_numpy(keras_stateful(frame[None, None], training=False))[0] for frame in frames])
    diff_whole = float(np.max(np.abs(y_stream.astype(np.float64) - y_whole)))
    diff_steps = float(np.max(np.abs(y_stream.astype(np.float64) - y_keras_steps)))
    diff_stream = max(diff_whole, diff_steps)
    rmse = float(np.sqrt(np.mean((y_stream[:, 0] - test_series[1:, 0]) ** 2)))
    print(f"  {len(frames)} frames streamed; forecast RMSE {rmse:.3f}")
    print(f"  max abs difference vs Keras on the whole series: {diff_whole:.3g}; vs a stateful "
          f"Keras model stepped frame by frame: {diff_steps:.3g}")
    print(f"  max abs difference vs Keras (streaming): {diff_stream:.3g}")
    assert diff_stream < TOLERANCE, f"lstm_fast differs from Keras by {diff_stream:.3g}"
    stream.reset()  # e.g. a new sensor / a new recording: start again from the zero state

    print(f"== 7. latency per call, batch 1, median of {calls} calls "
          "(indicative only: one machine, one thread, Keras on torch)")
    window_x = x_test[:1]
    frame = test_series[:1]
    frame_k = test_series[None, :1]

    def keras_window() -> None:
        with torch.no_grad():
            window_model(window_x, training=False)

    def keras_frame() -> None:
        with torch.no_grad():
            keras_stateful(frame_k, training=False)

    rows = [
        (f"window forecast (1, {WINDOW}, {CHANNELS})",
         median_us(lambda: fast_window.predict(window_x), calls), median_us(keras_window, calls)),
        (f"streaming step (1, {CHANNELS})",
         median_us(lambda: stream.step(frame), calls), median_us(keras_frame, calls)),
    ]
    print(f"  {'call':34} {'lstm_fast':>12} {'Keras':>12}")
    for name, us_fast, us_keras in rows:
        print(f"  {name:34} {us_fast:9.1f} us {us_keras:9.1f} us  ({us_keras / us_fast:.0f}x)")
    print(f"done; files in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
