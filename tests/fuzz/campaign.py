"""A mutation fuzz campaign over every format, from the command line.

    python -m tests.fuzz.campaign --per-format 1500 --seed 7           # in-process workers
    python -m tests.fuzz.campaign --per-format 300 --seed 8 --fresh    # a process per mutant

Prints the outcome counts, the largest peak RSS and the slowest mutant, and saves every
failing mutant (with a note) under ``--save``; exit code 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .runner import GB, make_jobs, run_fresh, run_in_workers, worker_env
from .seeds import build_seeds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-format", type=int, default=1500, help="mutants per format")
    p.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--hang", type=float, default=20.0, help="seconds before a hang")
    p.add_argument("--rss-limit-mb", type=int, default=GB >> 20)
    p.add_argument("--fresh", action="store_true", help="one `python -m lstm_fast` per mutant")
    p.add_argument("--formats", default="", help="comma list (default: all)")
    p.add_argument("--save", default="fuzz-failures", help="directory for failing mutants")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lstm_fast_seeds_") as tmp:
        seeds = build_seeds(Path(tmp))
        if args.formats:
            seeds = {k: v for k, v in seeds.items() if k in args.formats.split(",")}
        jobs = make_jobs(seeds, args.per_format, args.seed)
        run = run_fresh if args.fresh else run_in_workers
        t0 = time.monotonic()
        report = run(jobs, workers=args.workers, hang=args.hang,
                     rss_limit=args.rss_limit_mb << 20, env=worker_env())
        print(f"seed {args.seed}: {report.summary()} in {time.monotonic() - t0:.0f} s")
        for failure in report.failures:
            path = failure.save(Path(args.save))
            print(f"  {failure.kind}: {path}: {failure.detail[:300]}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
