"""StreamPool.step against its floor and against the do-it-yourself ways.

256 sessions are open on a 128 -> 256 LSTM; each tick a random subset of n of them sends a
frame (n = 64, 128, 192, 256). Per tick, timed in interleaved rounds:

``pool.step``          StreamPool.step({key: frame}) -> {key: output}
``run_rows (C)``       the engine call StreamPool makes (lf_run_rows: rows gathered and
                       scattered in C), without the pool's Python bookkeeping
``raw stream.step``    Stream(batch=n).step(x): one ordinary batch of the same n rows, the
                       floor (no gather, no scatter, no keys)
``numpy gather``       the alternative to lf_run_rows: one Stream(batch=256), its state read
                       out, the senders' rows gathered with numpy into a Stream(batch=n),
                       stepped, and scattered back
``per-session step``   one Stream(batch=1) per session, one step() call per sender

Prints the median (and p90) µs per tick and per frame over ``--rounds`` ticks, and the ratios
the issue's targets name: pool.step / raw stream.step (target <= 1.2) and per-session step /
pool.step (target >= 3).

    python benches/pool_bench.py [--rounds 300] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import lstm_fast as lf  # noqa: E402
from lstm_fast import _core  # noqa: E402
from lstm_fast.bench.timing import Contender, interleave  # noqa: E402

I, H, SESSIONS = 128, 256, 256


def make_model(seed: int = 0) -> lf.Model:
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(H)
    layer = (rng.uniform(-s, s, (4 * H, I)), rng.uniform(-s, s, (4 * H, H)),
             rng.uniform(-s, s, 4 * H), rng.uniform(-s, s, 4 * H))
    return lf.Model.from_lstm_weights([layer])


WARMUP_ROUNDS = 3


def bench(n: int, rounds: int, model: lf.Model, rng: np.random.Generator) -> dict[str, list[float]]:
    """µs per tick of each way, ``rounds`` ticks each, in interleaved rounds (each round draws
    its senders; the first WARMUP_ROUNDS rounds are not kept)."""
    pool = lf.StreamPool(model)
    keys = [pool.open() for _ in range(SESSIONS)]
    raw = model.stream(batch=n)
    big = model.stream(batch=SESSIONS)
    small = model.stream(batch=n)
    singles = [model.stream(batch=1) for _ in range(SESSIONS)]
    segs = pool._segments
    ws = np.empty(_core.rows_workspace_size(model._c, n, 1), np.uint8)
    x = rng.standard_normal((n, I)).astype(np.float32) * 0.5
    frames_x = list(x)
    tick: dict[str, object] = {}

    def draw(_round: int) -> None:
        senders = np.sort(rng.choice(SESSIONS, n, replace=False))
        rows = np.array([pool._row_of[keys[j]] for j in senders])
        tick.update(senders=senders, frames={keys[j]: frames_x[i] for i, j in enumerate(senders)},
                    which=pool._seg_of[rows], local=pool._local_of[rows])

    def numpy_gather(_: object) -> None:
        senders = tick["senders"]
        h, c = big.state
        small.state = (h[:, senders], c[:, senders])
        small.step(x)
        h2, c2 = small.state
        h[:, senders], c[:, senders] = h2, c2
        big.state = (h, c)

    def per_session(_: object) -> None:
        for i, j in enumerate(tick["senders"]):
            singles[j].step(x[i:i + 1])

    calls = {
        "pool.step": lambda _: pool.step(tick["frames"]),
        "run_rows (C)": lambda _: _core.run_rows(model._c, segs, tick["which"], tick["local"],
                                                 x, ws, None, False, True),
        "raw stream.step": lambda _: raw.step(x),
        "numpy gather": numpy_gather,
        "per-session step": per_session,
    }
    contenders = [Contender(name, call, [None]) for name, call in calls.items()]
    interleave(contenders, finished=lambda c: c.turns >= rounds + WARMUP_ROUNDS,
               count=lambda c: 1, before_round=draw)
    return {c.name: [t / 1e3 for t in c.times_ns[WARMUP_ROUNDS:]] for c in contenders}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--senders", default="64,128,192,256")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    lf.set_num_threads(args.threads)
    model = make_model()
    rng = np.random.default_rng(1)
    print(f"lstm_fast StreamPool bench: {I}->{H} LSTM, {SESSIONS} open sessions, isa "
          f"{model.isa}, {args.threads} thread(s), {args.rounds} ticks per row (medians)")
    out = []
    for n in map(int, args.senders.split(",")):
        times = bench(n, args.rounds, model, rng)
        med = {k: float(np.median(v)) for k, v in times.items()}
        p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
        print(f"\nsenders {n}:")
        print(f"  {'':20s} {'us/tick p50':>12s} {'p90':>10s} {'us/frame':>10s}")
        for k in times:
            print(f"  {k:20s} {med[k]:12.1f} {p90[k]:10.1f} {med[k] / n:10.2f}")
        r_raw = med["pool.step"] / med["raw stream.step"]
        r_one = med["per-session step"] / med["pool.step"]
        print(f"  pool.step / raw stream.step = {r_raw:.3f}   (target <= 1.2)")
        print(f"  per-session / pool.step     = {r_one:.2f}    (target >= 3)")
        out.append({"senders": n, "median_us": med, "p90_us": p90,
                    "pool_over_raw": r_raw, "per_session_over_pool": r_one})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"isa": model.isa, "threads": args.threads, "rows": out}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
