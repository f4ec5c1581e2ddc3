"""Run fuzz jobs in worker subprocesses and judge every outcome.

A job is ``{"i", "seed", "fmt", "rng"}``: mutant number ``i`` of seed file ``seed`` (format
``fmt``), rebuilt from ``random.Random(rng)`` (:func:`tests.fuzz.mutate.mutant`).

Two modes:

- :func:`run_in_workers`: a few long-lived workers (:mod:`tests.fuzz.worker`) run jobs one at a
  time through ``lstm_fast.cli.main``; the runner kills a worker that takes more than ``hang``
  seconds on a job or whose RSS passes ``rss_limit``, records the job, and starts a new worker
  for the remaining jobs. Fast: no interpreter start per mutant.
- :func:`run_fresh`: each mutant is a fresh ``python -m lstm_fast ...`` process, exactly as a
  user runs the CLI; peaks come from ``wait4`` (the process and its reaped children).

Acceptable outcomes: exit code 0, or exit code 2 with a single ``lstm-fast: error:`` line on
stderr, and every exception the converter/loader APIs raised an lstm_fast error. Anything else
(an exception escaping ``main``, a traceback, another exit code, a signal, a hang, a peak at or
over ``rss_limit``) is a :class:`Failure`.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mutate import SUFFIX, mutant

ROOT = Path(__file__).resolve().parents[2]
GB = 1 << 30


@dataclass
class Failure:
    """A job whose outcome is not acceptable."""

    job: dict[str, Any]
    kind: str
    detail: str

    def save(self, directory: Path) -> Path:
        """Write the mutant (and a note) to ``directory``; the mutant's path."""
        directory.mkdir(parents=True, exist_ok=True)
        job = self.job
        data = mutant(Path(job["seed"]).read_bytes(), job["fmt"], random.Random(job["rng"]))
        target = directory / f"{job['i']:06d}_{self.kind}_{job['fmt']}{SUFFIX[job['fmt']]}"
        target.write_bytes(data)
        target.with_suffix(target.suffix + ".txt").write_text(
            f"{self.kind}: {self.detail}\njob: {json.dumps(job)}\n")
        return target


@dataclass
class Report:
    """Outcome counts and failures of a run."""

    counts: dict[str, int] = field(default_factory=dict)
    by_format: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    max_peak_kb: int = 0
    max_secs: float = 0.0
    slow: int = 0

    def add(self, fmt: str, outcome: str, peak_kb: int = 0, secs: float = 0.0) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        per = self.by_format.setdefault(fmt, {})
        per[outcome] = per.get(outcome, 0) + 1
        self.max_peak_kb = max(self.max_peak_kb, peak_kb)
        self.max_secs = max(self.max_secs, secs)
        self.slow += secs > 5.0

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (f"{sum(self.counts.values())} mutants: {counts}; peak RSS "
                f"{self.max_peak_kb / 1024:.0f} MiB; slowest {self.max_secs:.1f} s "
                f"({self.slow} over 5 s); {len(self.failures)} failures")


def make_jobs(seeds: dict[str, list[Path]], per_format: int, rng_seed: int) -> list[dict]:
    """``per_format`` jobs for each format, spread over its seed files."""
    rng = random.Random(rng_seed)
    jobs = []
    for fmt, paths in seeds.items():
        for k in range(per_format):
            jobs.append({"i": len(jobs), "seed": str(paths[k % len(paths)]), "fmt": fmt,
                         "rng": rng.getrandbits(63)})
    return jobs


def judge(result: dict[str, Any], rss_limit: int) -> tuple[str, str]:
    """(outcome, detail): outcome ``ok``, ``error`` (typed) or a failure kind."""
    untyped = [a for a in result["api"] if not a.startswith("typed")]
    lines = result["stderr"]
    if result["escaped"]:
        return "escaped", result["escaped"]
    if untyped:
        return "untyped", untyped[0]
    if result["peak_kb"] * 1024 >= rss_limit:
        return "memory", f"peak {result['peak_kb']} kB"
    if result["rc"] == 0:
        return "ok", ""
    if result["rc"] == 2 and len(lines) == 1 and lines[0].startswith("lstm-fast: error:"):
        return "error", lines[0]
    return f"exit{result['rc']}", " | ".join(lines)[:500]


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Worker:
    """One worker subprocess, fed one job at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.worker"], cwd=ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.buffer = b""
        self.children_kb = 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def line(self, deadline: float, rss_limit: int) -> tuple[str, Any]:
        """("line", dict) / ("hang", None) / ("dead", returncode) / ("memory", kB)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            if time.monotonic() > deadline:
                return "hang", None
            rss = _rss_kb(self.proc.pid)
            if rss * 1024 >= rss_limit:
                return "memory", rss
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return "dead", self.proc.wait()
                self.buffer += chunk
        text, _, self.buffer = self.buffer.partition(b"\n")
        return "line", json.loads(text)

    def run(self, job: dict[str, Any], hang: float, rss_limit: int) -> tuple[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "dead", self.proc.wait()
        deadline = time.monotonic() + 60.0  # the start line: the worker may still be importing
        kind, value = self.line(deadline, rss_limit)
        if kind != "line":
            return kind, value
        return self.line(time.monotonic() + hang, rss_limit)


def _drive(jobs: list[dict], env: dict[str, str], hang: float, rss_limit: int,
           report: Report, lock: threading.Lock) -> None:
    worker: _Worker | None = None
    try:
        for job in jobs:
            if worker is None:
                worker = _Worker(env)
            kind, value = worker.run(job, hang, rss_limit)
            if kind == "line":
                outcome, detail = judge(value, rss_limit)
                children = value["children_kb"]
                if children * 1024 >= rss_limit > worker.children_kb * 1024:
                    outcome, detail = "memory", f"child peak {children} kB"
                worker.children_kb = children
                peak, secs = max(value["peak_kb"], children), value["secs"]
            else:
                worker.kill()
                worker = None
                outcome = {"hang": "hang", "memory": "memory", "dead": "crash"}[kind]
                detail = (f"no result within {hang} s" if kind == "hang"
                          else f"RSS {value} kB" if kind == "memory"
                          else f"worker exit code {value}")
                peak, secs = 0, hang if kind == "hang" else 0.0
            with lock:
                report.add(job["fmt"], outcome, peak, secs)
                if outcome not in ("ok", "error"):
                    report.failures.append(Failure(job, outcome, detail))
    finally:
        if worker is not None:
            worker.kill()


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of workers: this checkout first on the path, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def run_in_workers(jobs: list[dict], *, workers: int = 2, hang: float = 20.0,
                   rss_limit: int = GB, env: dict[str, str] | None = None) -> Report:
    """Run ``jobs`` in ``workers`` long-lived worker processes (see the module docstring)."""
    report, lock = Report(), threading.Lock()
    env = env or worker_env()
    parts = [jobs[k::workers] for k in range(workers)]
    threads = [threading.Thread(target=_drive, args=(part, env, hang, rss_limit, report, lock))
               for part in parts if part]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report


def _fresh_one(job: dict[str, Any], scratch: Path, env: dict[str, str], hang: float,
               rss_limit: int) -> tuple[str, str, int, float]:
    data = mutant(Path(job["seed"]).read_bytes(), job["fmt"], random.Random(job["rng"]))
    path = scratch / f"m{job['i']}{SUFFIX[job['fmt']]}"
    path.write_bytes(data)
    argv = (["info", str(path)] if job["fmt"] == "lfm"
            else ["convert", str(path), "-o", str(scratch / f"o{job['i']}.lfm"), "--no-verify"])
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        status, peak_kb = run_cli(argv, cwd=scratch, env=env, stderr=err, hang=hang)
        secs = time.monotonic() - t0
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").splitlines()
    path.unlink()
    (scratch / f"o{job['i']}.lfm").unlink(missing_ok=True)
    if status is None:
        return "hang", f"still running after {hang} s", 0, secs
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return "signal", f"signal {-code}", peak_kb, secs
    if any("Traceback" in line for line in lines):
        return "traceback", " | ".join(lines[-3:])[:500], peak_kb, secs
    if peak_kb * 1024 >= rss_limit:
        return "memory", f"peak {peak_kb} kB", peak_kb, secs
    if code == 0:
        return "ok", "", peak_kb, secs
    if code == 2 and len(lines) == 1 and lines[0].startswith("lstm-fast: error:"):
        return "error", lines[0], peak_kb, secs
    return f"exit{code}", " | ".join(lines)[:500], peak_kb, secs


# A small launcher between the caller and the CLI: a process's peak RSS (ru_maxrss) counts the
# memory of the process it was forked (or vforked) from until its exec, so a CLI started straight
# from a large process (pytest, after torch and Keras) would report the parent's size. The
# launcher is small; the CLI it spawns reports its own peak.
_LAUNCHER = """
import os, signal, sys, time
deadline = time.monotonic() + float(sys.argv[1])
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        print(status, usage.ru_maxrss)
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.wait4(pid, 0)
        print("hang")
        break
    time.sleep(0.01)
"""


def run_cli(argv: list[str], *, cwd: Path, env: dict[str, str], stderr: Any, hang: float
            ) -> tuple[int | None, int]:
    """Run ``python -m lstm_fast *argv`` (stdout discarded, stderr to ``stderr``), killing it
    after ``hang`` seconds. Returns its wait status (None if it hung) and its own peak RSS
    in kB."""
    launcher = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(hang), sys.executable, "-m", "lstm_fast",
         *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        timeout=hang + 30, check=True)
    report = launcher.stdout.split()
    if report == ["hang"]:
        return None, 0
    return int(report[0]), int(report[1])


def run_fresh(jobs: Iterable[dict], *, workers: int = 2, hang: float = 20.0,
              rss_limit: int = GB, env: dict[str, str] | None = None) -> Report:
    """Run each job as a fresh ``python -m lstm_fast`` process (see the module docstring)."""
    report, lock = Report(), threading.Lock()
    env = env or worker_env()
    todo = list(jobs)

    def drive(part: list[dict]) -> None:
        with tempfile.TemporaryDirectory(prefix="lstm_fast_fuzz_") as tmp:
            for job in part:
                outcome, detail, peak, secs = _fresh_one(job, Path(tmp), env, hang, rss_limit)
                with lock:
                    report.add(job["fmt"], outcome, peak, secs)
                    if outcome not in ("ok", "error"):
                        report.failures.append(Failure(job, outcome, detail))

    threads = [threading.Thread(target=drive, args=(todo[k::workers],)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return report
