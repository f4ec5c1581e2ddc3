"""``lstm-fast bench``: latency and throughput of a model, optionally against other frameworks.

The model is a model file (``lstm-fast bench model.lfm``), a synthetic model with random
weights (``--spec "lstm:I=128,H=256,L=2"``, see :mod:`lstm_fast.bench_spec`) or a Keras /
PyTorch checkpoint converted on the fly (``--source ckpt.pt``). Three modes:

``step``
    one frame per call through ``model.stream(B).step``, the state carried (streaming apps);
``chunk``
    ``--chunk T`` frames per call through ``stream.run``, the state carried;
``sequence``
    whole sequences of ``--steps T`` frames through ``model.predict(x, lengths=...)``, with
    ``--lengths`` for ragged (right-padded) batches.

Every call is timed alone with :func:`time.perf_counter_ns` after ``--warmup`` untimed calls,
with the garbage collector off, for ``--seconds`` of measured time per engine or ``--iters``
calls per engine. With ``--compare torch,onnxruntime,keras`` the same model (same weights, same
inputs, same thread count) runs in each framework through :mod:`lstm_fast.peers`; each peer's
output must equal lstm_fast's within 1e-4 before it is timed, and the engines take turns
round by round (A, B, C, B, C, A, ...) so that machine noise hits them alike. Frameworks that
are missing or cannot run the model are listed as skipped.

FLOP counts are 2 x the multiply-adds of every weight matrix per time step (valid steps only
under ``--lengths``; layers after a last-step-only layer once per sequence); GFLOP/s is the
FLOP per call over the median latency, also shown as a fraction of the single sgemm
(1024 x 1024 x 1024, through lstm_fast's own OpenBLAS, at the bench thread count) measured at
startup.

JSON output (``--json PATH``), schema ``"lstm_fast.bench/1"``::

    {
      "schema": "lstm_fast.bench/1",
      "config": {"model": str|null, "spec": str|null, "source": str|null, "mode": str,
                 "batch": int, "frames_per_call": int, "steps": int, "chunk": int,
                 "lengths": [int]|null, "threads": int, "warmup": int,
                 "seconds": float|null, "iters": int|null, "frame_rate": float|null,
                 "seed": int, "isa": str, "compare": [str]},
      "environment": {"lstm_fast": str, "isa": str, "blas": str, "blas_core": str,
                      "best_isa": str, "threads": int, "cpu": str, "logical_cores": int,
                      "python": str, "numpy": str, "platform": str},
      "model": {"description": str, "layers": [{"kind", "input_size", "output_size"}],
                "parameters": int, "takes_ids": bool, "flop_per_step": int,
                "flop_per_call": int},
      "peak": {"sgemm_gflops": float, "size": 1024, "threads": int} | null,
      "engines": [{"name": str, "version": str,
                   "status": "ok"|"skipped"|"mismatch"|"failed", "reason": str|null,
                   "max_abs_diff": float|null,
                   "stats": {"calls", "total_s", "min_us", "mean_us", "p50_us", "p90_us",
                             "p99_us", "max_us", "us_per_step", "frames_per_s",
                             "sequences_per_s" (sequence mode, else null), "gflops",
                             "peak_fraction" (null without a peak), "rtf", "rtf_p99"
                             (null without --frame-rate or in sequence mode),
                             "ratio_vs_lstm_fast"} | null,
                   "latencies_us": [float]}],
      "noisy": bool
    }

Exit codes: 0; 1 when a peer's output differs from lstm_fast's or a peer fails; 2 for usage
errors (one line on stderr).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SCHEMA", "TOLERANCE", "add_parser", "flop_counts", "main", "run", "sgemm_peak"]

SCHEMA = "lstm_fast.bench/1"
#: Max abs difference a peer's output may have from lstm_fast's before it is timed.
TOLERANCE = 1e-4
PEER_NAMES = ("torch", "onnxruntime", "keras")
_PEER_ALIASES = {"ort": "onnxruntime", "pytorch": "torch"}
_MODES = ("step", "chunk", "sequence")
#: Frames cycled through in step mode, chunks in chunk mode.
_STEP_POOL = 64
_CHUNK_POOL = 4
#: Outputs compared with each peer: frames in step mode, chunks in chunk mode.
_VERIFY_CALLS = {"step": 8, "chunk": 2, "sequence": 1}
#: Rounds the measurement is split into (engines take turns each round).
_SETTLE_S = 0.03
"""Idle seconds before each engine's turn when several engines run on several threads."""
_ROUNDS = 20
#: Per-engine cap on recorded calls in --seconds mode (memory bound).
_MAX_CALLS = 5_000_000
_NOISY = 2.0
_PEAK_SIZE = 1024


# --------------------------------------------------------------------------------------------
# Command line


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``lstm-fast`` subparsers ``sub``."""
    from .cli import _add_source_options

    b = sub.add_parser(
        "bench", help="time a model: latency percentiles, throughput, GFLOP/s",
        description="Time a model (a model file, a synthetic --spec model or a --source "
                    "checkpoint) step by step, chunk by chunk or on whole sequences: latency "
                    "per call (p50/p90/p99/max), us per time step, throughput, GFLOP/s and "
                    "its fraction of the measured sgemm peak, real-time factor. --compare runs "
                    "the same model in other frameworks. Exit code 1 when a compared engine's "
                    "output differs from lstm_fast's.",
        epilog='examples: lstm-fast bench --spec "lstm:I=128,H=256,L=2" --mode step; '
               "lstm-fast bench model.lfm --mode sequence --steps 200 --batch 16 "
               "--lengths random --compare torch,onnxruntime --json out.json --plot out.png")
    b.add_argument("model", nargs="?", help="model file (or use --spec / --source)")
    b.add_argument("--spec", help='synthetic model with random weights, e.g. '
                                  '"lstm:I=128,H=256,L=2", "gru:I=64,H=64", '
                                  '"emb:V=10000,D=128/bilstm:H=256,L=2,last=1/dense:O=2,'
                                  'act=softmax" (kinds lstm gru rnn bilstm bigru birnn dense '
                                  'emb; keys I H L P act last merge bias O V D)')
    b.add_argument("--source", help="a Keras or PyTorch checkpoint, converted for every engine")
    b.add_argument("--mode", choices=_MODES, default="step",
                   help="step: one frame per call, state carried (default); chunk: --chunk "
                        "frames per call; sequence: whole sequences of --steps frames")
    b.add_argument("--batch", type=int, default=1, help="sequences per call (default 1)")
    b.add_argument("--chunk", type=int, default=16, help="frames per call in chunk mode (16)")
    b.add_argument("--steps", type=int, default=100,
                   help="frames per sequence in sequence mode (100)")
    b.add_argument("--lengths", help="sequence mode: valid steps per sequence, 'random' "
                                     "(uniform in [T/4, T]) or a comma list of --batch values")
    b.add_argument("--threads", type=int, default=1,
                   help="threads for every engine (default 1)")
    b.add_argument("--warmup", type=int, default=20, help="untimed calls per engine (20)")
    how_long = b.add_mutually_exclusive_group()
    how_long.add_argument("--seconds", type=float, default=3.0,
                          help="measured seconds per engine (default 3)")
    how_long.add_argument("--iters", type=int, help="timed calls per engine (instead of "
                                                    "--seconds)")
    b.add_argument("--frame-rate", type=float, metavar="HZ",
                   help="frames per second of the input: report the real-time factor")
    b.add_argument("--compare", metavar="ENGINES",
                   help="comma list of frameworks to run the same model in: "
                        + ", ".join(PEER_NAMES))
    b.add_argument("--isa", choices=("auto", "avx512", "avx2", "portable"),
                   help="lstm_fast kernel instruction set (default auto)")
    b.add_argument("--seed", type=int, default=0, help="seed of --spec weights and inputs")
    b.add_argument("--no-peak", action="store_true", help="do not measure the sgemm peak")
    b.add_argument("--json", metavar="PATH", help=f"write the results ({SCHEMA}) to PATH")
    b.add_argument("--plot", metavar="PATH.png",
                   help="draw the latency distributions (needs matplotlib: "
                        "pip install 'lstm_fast[plot]')")
    b.add_argument("--progress", action="store_true",
                   help="show the progress bar even when stderr is not a terminal")
    _add_source_options(b.add_argument_group("--source options"))
    return b


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lstm-fast bench`` in this process with ``argv`` (the arguments after ``bench``)."""
    from .cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


# --------------------------------------------------------------------------------------------
# Workload


@dataclass
class Workload:
    """What one call gets: the inputs cycled through, and what a call computes."""

    mode: str
    batch: int
    frames_per_call: int
    inputs: list[np.ndarray]
    lengths: np.ndarray | None
    flop_per_call: int


def flop_counts(spec: Any) -> tuple[int, int]:
    """FLOP (2 x multiply-adds of the weight matrices) of one sequence row.

    Returns
    -------
    per_step : int
        Per time step: every layer up to and including the first one that returns only its
        last step.
    once : int
        Once per sequence (per call in step and chunk modes): the layers after it.
    """
    per_step = once = 0
    collapsed = False
    for L in spec.layers:
        if L.kind in ("embedding", "masking"):
            macs = 0
        elif L.kind == "dense":
            macs = int(L.weight.size)
        else:
            cells = (L.forward, L.backward) if L.kind == "bidirectional" else (L,)
            macs = sum(int(a.size) for c in cells for k, a in c.arrays().items()
                       if k in ("w_ih", "w_hh", "w_hr"))
        if collapsed:
            once += 2 * macs
        else:
            per_step += 2 * macs
        if L.kind in ("lstm", "gru", "rnn", "bidirectional") and not L.return_sequences:
            collapsed = True
    return per_step, once


def _parse_lengths(value: str | None, batch: int, steps: int, seed: int) -> np.ndarray | None:
    if value is None:
        return None
    if value.strip().lower() == "random":
        rng = np.random.default_rng(seed + 1)
        return rng.integers(max(1, steps // 4), steps + 1, batch).astype(np.int64)
    try:
        lengths = np.array([int(v) for v in value.split(",")], dtype=np.int64)
    except ValueError:
        raise ValueError(f"--lengths must be 'random' or comma-separated integers, got "
                         f"{value!r}") from None
    if lengths.shape != (batch,):
        raise ValueError(f"--lengths has {lengths.size} values but --batch is {batch}")
    if lengths.min() < 1 or lengths.max() > steps:
        raise ValueError(f"--lengths must be in [1, --steps={steps}], got {value}")
    return lengths


def _workload(spec: Any, args: argparse.Namespace) -> Workload:
    from .verify import random_input

    per_step, once = flop_counts(spec)
    B = args.batch
    if args.mode == "sequence":
        T = args.steps
        x = random_input(spec, B, T, args.seed)
        lengths = _parse_lengths(args.lengths, B, T, args.seed)
        valid = np.full(B, T) if lengths is None else lengths
        if lengths is not None:
            for b, n in enumerate(lengths):
                x[b, n:] = 0
        flop = int(per_step * valid.sum() + once * B)
        return Workload("sequence", B, T, [x], lengths, flop)
    if args.lengths is not None:
        raise ValueError("--lengths applies to --mode sequence")
    T = 1 if args.mode == "step" else args.chunk
    pool = _STEP_POOL if args.mode == "step" else _CHUNK_POOL
    x = random_input(spec, B, T * pool, args.seed)
    if args.mode == "step":
        inputs = [np.ascontiguousarray(x[:, t]) for t in range(pool)]
    else:
        inputs = [np.ascontiguousarray(x[:, k * T:(k + 1) * T]) for k in range(pool)]
    return Workload(args.mode, B, T, inputs, None, int((per_step * T + once) * B))


# --------------------------------------------------------------------------------------------
# Engines


@dataclass
class Engine:
    """One engine in the bench: lstm_fast or a peer framework."""

    name: str
    version: str = ""
    status: str = "ok"  # ok | skipped | mismatch | failed
    reason: str | None = None
    max_abs_diff: float | None = None
    runner: Any = None  # has predict(x, lengths=) and stream(batch)
    call: Callable[[Any], Any] | None = None
    latencies: list[int] = field(default_factory=list)  # ns per call
    total_ns: int = 0
    next_input: int = 0

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}".strip()


def _outputs(runner: Any, wl: Workload) -> list[np.ndarray]:
    """The outputs compared between engines: a few steps/chunks from zero state, or one
    predict."""
    n = _VERIFY_CALLS[wl.mode]
    if wl.mode == "sequence":
        return [np.asarray(runner.predict(wl.inputs[0], lengths=wl.lengths))]
    s = runner.stream(wl.batch)
    fn = s.step if wl.mode == "step" else s.run
    return [np.asarray(fn(x)) for x in wl.inputs[:n]]


def _timed_call(runner: Any, wl: Workload) -> Callable[[Any], Any]:
    if wl.mode == "sequence":
        lengths = wl.lengths
        return lambda x: runner.predict(x, lengths=lengths)
    s = runner.stream(wl.batch)
    return s.step if wl.mode == "step" else s.run


def _load_peers() -> tuple[Any, str | None]:
    try:
        return importlib.import_module("lstm_fast.peers"), None
    except ImportError as e:
        return None, f"lstm_fast.peers cannot be imported ({e})"


def _peer_names(text: str | None) -> list[str]:
    if not text:
        return []
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        name = _PEER_ALIASES.get(name, name)
        if not name or name == "lstm_fast":
            continue
        if name not in PEER_NAMES:
            raise ValueError(f"--compare: unknown engine {raw.strip()!r}; expected "
                             f"{', '.join(PEER_NAMES)}")
        if name not in names:
            names.append(name)
    return names


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _build_peers(names: list[str], spec: Any, wl: Workload, threads: int,
                 reference: list[np.ndarray]) -> list[Engine]:
    """Build, verify and prepare each peer; those that cannot run are marked, not raised."""
    from .verify import FrameworkUnavailable

    if not names:
        return []
    peers, why = _load_peers()
    out = []
    for name in names:
        e = Engine(name)
        out.append(e)
        if peers is None:
            e.status, e.reason = "skipped", why
            continue
        try:
            e.runner = peers.build_peer(name, spec, threads=threads)
            e.version = str(getattr(e.runner, "version", "") or "")
            got = _outputs(e.runner, wl)
        except FrameworkUnavailable as err:
            e.status, e.reason = "skipped", _first_line(err)
            continue
        except Exception as err:  # noqa: BLE001 - a broken peer is reported, not fatal
            e.status, e.reason = "failed", f"{type(err).__name__}: {_first_line(err)}"
            continue
        diff = _max_diff(reference, got)
        if diff is None:
            e.status = "mismatch"
            e.reason = (f"output shapes differ: lstm_fast {reference[0].shape}, {name} "
                        f"{got[0].shape if got else None}")
            continue
        e.max_abs_diff = diff
        if not diff <= TOLERANCE:
            e.status = "mismatch"
            e.reason = f"output differs from lstm_fast by {diff:.3g} (> {TOLERANCE:g}); not timed"
            continue
        try:
            e.call = _timed_call(e.runner, wl)
        except FrameworkUnavailable as err:
            e.status, e.reason = "skipped", _first_line(err)
    return out


def _max_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> float | None:
    """Max abs difference over all compared outputs; None when the shapes differ."""
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got, strict=False)):
        return None
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
             for a, b in zip(ref, got, strict=True)]
    return float(np.nan_to_num(max(diffs), nan=np.inf))


# --------------------------------------------------------------------------------------------
# Timing


class _Progress:
    """A one-line progress bar on stderr (rewritten with \\r), throttled to 10 updates/s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.width = 0

    def update(self, fraction: float, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        fraction = min(1.0, max(0.0, fraction))
        filled = int(round(24 * fraction))
        line = f"\rbench [{'#' * filled}{'.' * (24 - filled)}] {100 * fraction:3.0f}%  {text}"
        self.width = max(self.width, len(line))
        sys.stderr.write(line.ljust(self.width))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _calls(e: Engine, inputs: list[np.ndarray], count: int, budget_ns: int) -> None:
    """``count`` timed calls, or calls until ``budget_ns`` of measured time (whichever is set)."""
    call, lat, perf = e.call, e.latencies, time.perf_counter_ns
    n, k = len(inputs), e.next_input
    spent = done = 0
    while True:
        x = inputs[k % n]
        t0 = perf()
        call(x)  # type: ignore[misc]
        dt = perf() - t0
        lat.append(dt)
        spent += dt
        done += 1
        k += 1
        if (count and done >= count) or (budget_ns and spent >= budget_ns):
            break
    e.next_input = k % n
    e.total_ns += spent


def _measure(engines: list[Engine], wl: Workload, warmup: int, iters: int | None,
             seconds: float, progress: _Progress, settle_s: float = 0.0) -> None:
    """Warm up, then time the engines round by round, rotating who goes first. ``settle_s``:
    untimed idle time before each engine's turn, so that thread pools the previous engine left
    spinning do not take the cores of the engine being timed, followed by one untimed call
    that wakes the engine's own threads and the idle core (used with several threads)."""
    for e in engines:
        for k in range(warmup):
            e.call(wl.inputs[k % len(wl.inputs)])  # type: ignore[misc]
    goal_ns = int(seconds * 1e9)

    def fraction(e: Engine) -> float:
        if iters:
            return len(e.latencies) / iters
        return max(e.total_ns / goal_ns, len(e.latencies) / _MAX_CALLS)

    round_calls = max(1, math.ceil(iters / _ROUNDS)) if iters else 0
    round_ns = 0 if iters else int(min(0.25, max(0.005, seconds / _ROUNDS)) * 1e9)
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        r = 0
        while True:
            pending = [e for e in engines if fraction(e) < 1.0]
            if not pending:
                break
            shift = r % len(pending)
            for e in pending[shift:] + pending[:shift]:
                count = min(round_calls, iters - len(e.latencies)) if iters else 0
                if settle_s:
                    time.sleep(settle_s)
                    e.call(wl.inputs[e.next_input])  # untimed: wakes its threads and the core
                    e.next_input = (e.next_input + 1) % len(wl.inputs)
                _calls(e, wl.inputs, count, round_ns)
                done = sum(min(1.0, fraction(x)) for x in engines) / len(engines)
                progress.update(done, ", ".join(f"{x.name} {len(x.latencies)}"
                                                for x in engines))
            r += 1
    finally:
        if gc_was_on:
            gc.enable()
        progress.close()


# --------------------------------------------------------------------------------------------
# sgemm peak


def sgemm_peak(size: int = _PEAK_SIZE, min_seconds: float = 0.15) -> float:
    """GFLOP/s of a ``size``-cubed float32 matrix product through lstm_fast's OpenBLAS.

    The best of several runs (at least 3, for at least ``min_seconds``) after one untimed run,
    at the current :func:`lstm_fast.set_num_threads` count.
    """
    from . import _blas_lib

    c_int, c_float, ptr = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(None, c_int, c_int, c_int, c_int, c_int, c_int, c_float, ptr,
                             c_int, ptr, c_int, c_float, ptr, c_int)
    sgemm = proto(("scipy_cblas_sgemm", _blas_lib))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.zeros((size, size), dtype=np.float32)

    def once() -> int:
        t0 = time.perf_counter_ns()
        sgemm(101, 111, 111, size, size, size, 1.0, a.ctypes.data, size, b.ctypes.data, size,
              0.0, c.ctypes.data, size)  # row-major, no transposes
        return time.perf_counter_ns() - t0

    once()
    best, runs, start = None, 0, time.perf_counter()
    while runs < 3 or (time.perf_counter() - start < min_seconds and runs < 50):
        dt = once()
        best = dt if best is None else min(best, dt)
        runs += 1
    return 2.0 * size**3 / max(best, 1)


# --------------------------------------------------------------------------------------------
# Results


def _stats(e: Engine, wl: Workload, peak: float | None,
           frame_rate: float | None) -> dict[str, Any]:
    lat = np.asarray(e.latencies, dtype=np.float64) / 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(lat, [50, 90, 99]))
    T = wl.frames_per_call
    gflops = wl.flop_per_call / (p50 * 1e3) if p50 > 0 else 0.0
    rtf = rtf99 = None
    if frame_rate and wl.mode != "sequence":
        rtf, rtf99 = p50 * 1e-6 * frame_rate / T, p99 * 1e-6 * frame_rate / T
    return {
        "calls": int(lat.size), "total_s": e.total_ns / 1e9, "min_us": float(lat.min()),
        "mean_us": float(lat.mean()), "p50_us": p50, "p90_us": p90, "p99_us": p99,
        "max_us": float(lat.max()), "us_per_step": p50 / T,
        "frames_per_s": wl.batch * T / (p50 * 1e-6),
        "sequences_per_s": wl.batch / (p50 * 1e-6) if wl.mode == "sequence" else None,
        "gflops": gflops, "peak_fraction": gflops / peak if peak else None,
        "rtf": rtf, "rtf_p99": rtf99,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(model: Any, threads: int) -> dict[str, Any]:
    import lstm_fast as lf

    info = lf.blas_info()
    return {"lstm_fast": lf.__version__, "isa": model.isa, "blas": info["blas"],
            "blas_core": info["core"], "best_isa": info["best_isa"], "threads": threads,
            "cpu": _cpu_name(), "logical_cores": os.cpu_count() or 1,
            "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform()}


def _describe(spec: Any) -> str:
    parts = []
    for L in spec.layers:
        kind = f"bi{L.forward.kind}" if L.kind == "bidirectional" else L.kind
        size = (f"{L.vocab_size}x{L.output_size}" if L.kind == "embedding"
                else f"{L.input_size}->{L.output_size}")
        last = " (last step)" if getattr(L, "return_sequences", True) is False else ""
        parts.append(f"{kind} {size}{last}")
    return " / ".join(parts)


def _fmt(v: float) -> str:
    """A latency in µs with 3-4 significant digits."""
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _flop_text(flop: float) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flop >= scale:
            return f"{flop / scale:.3g} {unit}"
    return f"{flop:.0f} FLOP"


def _header(env: dict[str, Any], spec: Any, args: argparse.Namespace, wl: Workload,
            origin: str, peak: float | None) -> list[str]:
    how = f"{args.iters} calls" if args.iters else f"{args.seconds:g} s"
    per_call = {"step": "1 frame per call (state carried)",
                "chunk": f"{wl.frames_per_call} frames per call (state carried)",
                "sequence": f"whole sequences of {wl.frames_per_call} steps"}[wl.mode]
    if wl.lengths is not None:
        per_call += f", lengths {wl.lengths.min()}..{wl.lengths.max()} " \
                    f"(mean {wl.lengths.mean():.1f})"
    threads = f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}"
    lines = [
        f"lstm_fast {env['lstm_fast']}, isa {env['isa']}, BLAS {env['blas']} "
        f"(core {env['blas_core']}), {threads} for every engine",
        f"cpu: {env['cpu']} ({env['logical_cores']} logical cores), Python {env['python']}, "
        f"numpy {env['numpy']}",
        f"model: {origin}: {_describe(spec)}; {spec.num_parameters():,} parameters",
        f"mode {wl.mode}: batch {wl.batch}, {per_call}; warmup {args.warmup}, {how} per engine",
        f"compute: {_flop_text(wl.flop_per_call)} per call",
    ]
    if peak:
        lines.append(f"sgemm peak: {peak:.1f} GFLOP/s ({_PEAK_SIZE}^3, {threads})")
    return lines


def _report(engines: list[Engine], stats: dict[str, dict[str, Any]], wl: Workload,
            args: argparse.Namespace, peak: float | None) -> list[str]:
    lines: list[str] = []
    ref = stats.get("lstm_fast")
    if ref:
        s = ref
        lines.append(f"latency per call: p50 {_fmt(s['p50_us'])} us, p90 {_fmt(s['p90_us'])} "
                     f"us, p99 {_fmt(s['p99_us'])} us, max {_fmt(s['max_us'])} us "
                     f"({s['calls']:,} calls)")
        tput = f"frames/s {s['frames_per_s']:,.0f}"
        if s["sequences_per_s"] is not None:
            tput += f", sequences/s {s['sequences_per_s']:,.1f}"
        lines.append(f"per time step: {_fmt(s['us_per_step'])} us; {tput}")
        g = f"GFLOP/s: {s['gflops']:.2f}"
        if s["peak_fraction"] is not None:
            g += f" = {100 * s['peak_fraction']:.1f}% of the sgemm peak"
        lines.append(g)
        if s["rtf"] is not None:
            lines.append(f"real-time factor at {args.frame_rate:g} Hz: {s['rtf']:.4g} "
                         f"(p99 {s['rtf_p99']:.4g}; below 1 keeps up)")
        elif args.frame_rate and wl.mode == "sequence":
            lines.append("real-time factor: for step and chunk modes only")
    if len(engines) > 1:
        lines.append("")
        rows = [("engine", "calls", "p50 us", "p90 us", "p99 us", "us/step", "GFLOP/s",
                 "vs lstm_fast")]
        for e in engines:
            s = stats.get(e.name)
            if s is None:
                continue
            ratio = s["ratio_vs_lstm_fast"]
            rows.append((e.label, f"{s['calls']:,}", _fmt(s["p50_us"]), _fmt(s["p90_us"]),
                         _fmt(s["p99_us"]), _fmt(s["us_per_step"]), f"{s['gflops']:.2f}",
                         "-" if ratio is None else f"{ratio:.2f}x"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        lines.append("(ratio = p50 / lstm_fast's p50: above 1 is slower than lstm_fast)")
        for e in engines:
            if e.status != "ok":
                lines.append(f"{e.status}: {e.label}: {e.reason}")
    noisy = [(e.name, stats[e.name]) for e in engines if e.name in stats
             and stats[e.name]["p99_us"] > _NOISY * stats[e.name]["p50_us"]]
    if noisy:
        which = ", ".join(f"{n} p99 = {s['p99_us'] / s['p50_us']:.1f}x p50" for n, s in noisy)
        lines.append(f"note: noisy machine ({which}): other load, frequency scaling or "
                     f"interrupts; trust the p50s, or rerun on a quiet machine")
    return lines


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'lstm_fast[plot]'") from None


def _plot(path: str, engines: list[Engine], title: str) -> None:
    """Latency histogram and CDF, one curve per timed engine."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 4.4))
    hist, cdf = fig.subplots(1, 2)
    timed = [e for e in engines if e.latencies]
    lo = min(min(e.latencies) for e in timed) / 1e3
    # up to the largest p99.9: a few outliers would squeeze every curve into one corner
    hi = max(float(np.percentile(e.latencies, 99.9)) for e in timed) / 1e3
    log = hi > 10 * lo  # a log axis only when the latencies span more than a decade
    bins = (np.geomspace if log else np.linspace)(lo, max(hi, lo * 1.01), 80)
    for k, e in enumerate(timed):
        lat = np.sort(np.asarray(e.latencies, dtype=np.float64)) / 1e3
        color = f"C{k}"
        p50 = float(np.percentile(lat, 50))
        hist.hist(lat[lat <= bins[-1]], bins=bins, histtype="step", color=color, label=f"{e.label}")
        hist.axvline(p50, color=color, linestyle="--", linewidth=0.8)
        cdf.plot(lat, np.arange(1, lat.size + 1) / lat.size, color=color,
                 label=f"{e.label} (p50 {_fmt(p50)} us)")
    for ax in (hist, cdf):
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(
                lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
        ax.set_xlim(lo / 1.05, hi * 1.05)
        ax.set_xlabel("latency per call (us)")
        ax.grid(True, which="both", alpha=0.3)
    hist.set_ylabel("calls")
    hist.set_title("distribution up to p99.9 (dashed: p50)")
    cdf.set_ylabel("fraction of calls")
    cdf.set_title("CDF")
    for q in (0.5, 0.9, 0.99):
        cdf.axhline(q, color="0.6", linewidth=0.6)
    cdf.legend(loc="lower right", fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------------------------
# The command


def _check_args(args: argparse.Namespace) -> None:
    given = [n for n, v in (("MODEL", args.model), ("--spec", args.spec),
                            ("--source", args.source)) if v]
    if len(given) != 1:
        raise ValueError("give one of MODEL, --spec or --source" if not given
                         else f"give only one of {', '.join(given)}")
    for name in ("batch", "chunk", "steps", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if args.warmup < 0:
        raise ValueError("--warmup must be at least 0")
    if args.iters is not None and args.iters < 1:
        raise ValueError("--iters must be at least 1")
    if not args.seconds > 0 or not math.isfinite(args.seconds):
        raise ValueError("--seconds must be positive")
    if args.frame_rate is not None and not (args.frame_rate > 0
                                            and math.isfinite(args.frame_rate)):
        raise ValueError("--frame-rate must be positive")


def _load_spec(args: argparse.Namespace) -> tuple[Any, str]:
    if args.spec:
        from .bench_spec import parse_spec

        return parse_spec(args.spec, seed=args.seed), f"--spec {args.spec}"
    if args.source:
        from .cli import _convert_source

        spec, kind = _convert_source(args, args.source)
        return spec, f"{args.source} ({kind})"
    from .format import load_spec

    return load_spec(args.model), args.model


def run(args: argparse.Namespace) -> int:
    """Run the bench for parsed ``lstm-fast bench`` arguments; returns the exit code."""
    import lstm_fast as lf

    from .model import Model

    _check_args(args)
    names = _peer_names(args.compare)
    if args.plot:
        _require_matplotlib()
    spec, origin = _load_spec(args)
    previous_threads = lf.get_num_threads()
    lf.set_num_threads(args.threads)
    try:
        return _run(args, spec, origin, names, Model(spec, isa=args.isa))
    finally:
        lf.set_num_threads(previous_threads)


def _run(args: argparse.Namespace, spec: Any, origin: str, names: list[str],
         model: Any) -> int:
    wl = _workload(spec, args)
    import lstm_fast as lf

    me = Engine("lstm_fast", lf.__version__, runner=model)
    reference = _outputs(model, wl)  # also fails early (stream of a bidirectional model)
    me.call = _timed_call(model, wl)
    env = _environment(model, args.threads)
    peak = None if args.no_peak else sgemm_peak()
    for line in _header(env, spec, args, wl, origin, peak):
        print(line)
    sys.stdout.flush()
    engines = [me, *_build_peers(names, spec, wl, args.threads, reference)]
    timed = [e for e in engines if e.status == "ok"]
    progress = _Progress(args.progress or sys.stderr.isatty())
    settle = _SETTLE_S if args.threads > 1 and len(timed) > 1 else 0.0
    _measure(timed, wl, args.warmup, args.iters, args.seconds, progress, settle)

    stats = {e.name: _stats(e, wl, peak, args.frame_rate) for e in timed}
    ref_p50 = stats[me.name]["p50_us"]  # the same number lstm_fast's own row shows
    for s in stats.values():
        s["ratio_vs_lstm_fast"] = s["p50_us"] / ref_p50 if ref_p50 else None
    print()
    for line in _report(engines, stats, wl, args, peak):
        print(line)
    noisy = any(s["p99_us"] > _NOISY * s["p50_us"] for s in stats.values())

    if args.json:
        per_step, _ = flop_counts(spec)
        doc = {
            "schema": SCHEMA,
            "config": {"model": args.model, "spec": args.spec, "source": args.source,
                       "mode": wl.mode, "batch": wl.batch, "frames_per_call": wl.frames_per_call,
                       "steps": args.steps, "chunk": args.chunk,
                       "lengths": None if wl.lengths is None else wl.lengths.tolist(),
                       "threads": args.threads, "warmup": args.warmup,
                       "seconds": None if args.iters else args.seconds, "iters": args.iters,
                       "frame_rate": args.frame_rate, "seed": args.seed,
                       "isa": args.isa or "auto", "compare": names},
            "environment": env,
            "model": {"description": _describe(spec),
                      "layers": [{"kind": L.kind, "input_size": L.input_size,
                                  "output_size": L.output_size} for L in spec.layers],
                      "parameters": spec.num_parameters(), "takes_ids": spec.takes_ids,
                      "flop_per_step": per_step, "flop_per_call": wl.flop_per_call},
            "peak": None if peak is None else {"sgemm_gflops": peak,
                                               "size": _PEAK_SIZE, "threads": args.threads},
            "engines": [{"name": e.name, "version": e.version, "status": e.status,
                         "reason": e.reason, "max_abs_diff": e.max_abs_diff,
                         "stats": stats.get(e.name),
                         "latencies_us": [round(v / 1e3, 3) for v in e.latencies]}
                        for e in engines],
            "noisy": noisy,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot:
        title = (f"{_describe(spec)} - {wl.mode}, batch {wl.batch}, "
                 f"{wl.frames_per_call} frame{'s' if wl.frames_per_call > 1 else ''}/call, "
                 f"{args.threads} thread{'s' if args.threads > 1 else ''}")
        _plot(args.plot, timed, title)
        print(f"wrote {args.plot}")
    return 1 if any(e.status in ("mismatch", "failed") for e in engines) else 0
