"""Batch scoring on a Dask LocalCluster of 2 worker processes vs one process.

The job: ``--sequences`` (default 24,000) sequences of ``--steps`` (50) frames of 64 features
through a 64 -> 128 LSTM whose last step feeds a Dense(8) head (a classifier: the output is
small, so gathering it costs little). The input lives on the workers before timing starts
(persisted in chunks of ``--chunk`` sequences, as if each worker had read its part from
storage); the one-process baseline holds the same array in memory and runs ``Model.predict``
chunk by chunk on one thread. Each worker runs one thread. Rounds alternate between the two;
medians are printed, with the speedup (the issue's target: >= 1.7x).

    python benches/dask_bench.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LSTM_FAST_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402


def make_model():
    import lstm_fast as lf
    from lstm_fast.spec import DenseSpec, LSTMLayerSpec, ModelSpec

    rng = np.random.default_rng(0)
    I, H, O = 64, 128, 8
    s = 1 / np.sqrt(H)
    cell = LSTMLayerSpec(rng.uniform(-s, s, (4 * H, I)), rng.uniform(-s, s, (4 * H, H)),
                         rng.uniform(-s, s, 4 * H), return_sequences=False)
    head = DenseSpec(rng.uniform(-s, s, (O, H)), rng.uniform(-s, s, O))
    return lf.Model(ModelSpec((cell, head)))


def _cpu_seconds() -> float:
    """CPU time of the calling (worker) process."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, default=24_000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args(argv)

    import dask.array as da
    from distributed import Client, LocalCluster, wait

    import lstm_fast.dask as lfd
    from lstm_fast.bench.timing import Contender, interleave

    model = make_model()
    x = np.random.default_rng(1).standard_normal(
        (args.sequences, args.steps, model.input_size)).astype(np.float32)
    B, c = args.sequences, args.chunk
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=40) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        xd = client.persist(da.from_array(x, chunks=(c, args.steps, model.input_size)))
        wait(xd)
        ref = np.concatenate([model.predict(x[b:b + c]) for b in range(0, B, c)])
        got = lfd.predict(model, xd).compute()  # warm-up: model scattered, workers warm
        assert np.array_equal(got, ref), "dask result differs from Model.predict per chunk"
        one_cpu_s = [0.0]

        def one_process(_: object) -> None:
            c0 = time.thread_time()
            for b in range(0, B, c):
                model.predict(x[b:b + c])
            one_cpu_s[0] += time.thread_time() - c0

        contenders = [Contender("one process", one_process, [None]),
                      Contender("dask", lambda _: lfd.predict(model, xd).compute(), [None])]
        cpu0 = client.run(_cpu_seconds)
        interleave(contenders, finished=lambda k: k.turns >= args.rounds, count=lambda k: 1)
        one, two = ([t / 1e9 for t in k.times_ns] for k in contenders)
        one_cpu = one_cpu_s[0]
        cpu = {w: t - cpu0[w] for w, t in client.run(_cpu_seconds).items()}
    s1, s2 = float(np.median(one)), float(np.median(two))
    print(f"{B:,} sequences x {args.steps} steps, 64->128 LSTM + Dense(8) head, chunks of {c}")
    print(f"  one process, 1 thread : {s1:7.3f} s  {B / s1:10,.0f} seq/s   (median of "
          f"{args.rounds}: {', '.join(f'{t:.3f}' for t in one)})")
    print(f"  dask, 2 workers x 1   : {s2:7.3f} s  {B / s2:10,.0f} seq/s   (median of "
          f"{args.rounds}: {', '.join(f'{t:.3f}' for t in two)})")
    print(f"  CPU seconds: one process {one_cpu:.2f} (wall {sum(one):.2f}); dask workers "
          f"{', '.join(f'{v:.2f}' for v in cpu.values())} (wall {sum(two):.2f})")
    eff = (B * args.rounds / sum(cpu.values())) / (B * args.rounds / one_cpu)
    print(f"  sequences per CPU second: dask workers / one process = {eff:.2f} (2 idle cores "
          f"would give about {2 * eff:.2f}x)")
    print(f"  speedup {s1 / s2:.2f}x (target >= 1.7x); load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sequences": B, "steps": args.steps, "chunk": c, "one_process_s": one,
                       "dask_2_workers_s": two, "speedup": s1 / s2,
                       "worker_cpu_s": list(cpu.values()),
                       "one_process_cpu_s": one_cpu}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
