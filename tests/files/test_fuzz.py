"""Issue 11: a bounded mutation fuzz run over every file format, in the default suite.

Each format's seeds (:mod:`tests.fuzz.seeds`) yield ``PER_FORMAT`` mutants
(:mod:`tests.fuzz.mutate`), run through ``lstm-fast info`` / ``lstm-fast convert --no-verify``
in two worker processes (:mod:`tests.fuzz.runner`): any exception escaping the CLI, untyped API
error, exit code other than 0 or 2 (with one error line), signal, hang or peak RSS of 1 GB
fails the test and saves the mutant. ``LSTM_FAST_FUZZ_SEED`` / ``LSTM_FAST_FUZZ_PER_FORMAT``
change the run (docs/fuzzing.md has the long campaigns).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fuzz.mutate import FORMATS
from tests.fuzz.runner import GB, make_jobs, run_in_workers, worker_env
from tests.fuzz.seeds import build_seeds

PER_FORMAT = int(os.environ.get("LSTM_FAST_FUZZ_PER_FORMAT", "500"))
SEED = int(os.environ.get("LSTM_FAST_FUZZ_SEED", "1111"))
#: The Keras reader's time limit in workers: a few mutants make HDF5 loop until it.
ENV = {"LSTM_FAST_KERAS_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return build_seeds(tmp_path_factory.mktemp("seeds"))


def test_mutants_of_every_format(seeds: dict[str, list[Path]], tmp_path: Path) -> None:
    jobs = make_jobs(seeds, PER_FORMAT, SEED)
    t0 = time.monotonic()
    report = run_in_workers(jobs, workers=2, hang=20.0, rss_limit=GB, env=worker_env(ENV))
    seconds = time.monotonic() - t0
    saved = [f"{f.kind}: {f.save(tmp_path / 'failures')}: {f.detail[:200]}"
             for f in report.failures]
    assert not saved, f"seed {SEED}: {report.summary()}\n" + "\n".join(saved)
    assert sum(report.counts.values()) == len(jobs) == PER_FORMAT * len(FORMATS)
    for fmt in FORMATS:  # the mutants reach past the first check, and some still convert
        counts = report.by_format[fmt]
        assert counts.get("ok", 0) >= PER_FORMAT // 50, (fmt, counts)
        assert counts.get("error", 0) >= PER_FORMAT // 2, (fmt, counts)
    assert report.max_peak_kb < GB >> 10
    print(f"seed {SEED}: {report.summary()} in {seconds:.0f} s")


@pytest.mark.parametrize("kind, outcome", [("crash", "crash"), ("hang", "hang"),
                                           ("memory", "memory"), ("untyped", "untyped")])
def test_runner_detects_failures(seeds: dict[str, list[Path]], kind: str,
                                 outcome: str) -> None:
    """The harness itself: a worker that crashes, hangs, balloons or lets an untyped error
    through (on purpose, ``LSTM_FAST_FUZZ_SELFTEST``) is reported, and the jobs after it
    still run in a new worker."""
    jobs = make_jobs({"torch_zip": seeds["torch_zip"]}, 3, SEED)
    report = run_in_workers(jobs, workers=1, hang=3.0, rss_limit=200 << 20,
                            env=worker_env({**ENV, "LSTM_FAST_FUZZ_SELFTEST": kind}))
    assert [(f.job["i"], f.kind) for f in report.failures][:1] == [(0, outcome)]
    assert sum(report.counts.values()) == 3
    if kind != "untyped":  # the broken converter stays broken in that worker
        assert len(report.failures) == 1
