"""The timing protocol shared by ``lstm-fast bench`` and ``benches/compare.py``.

Contenders (engines, or variants of one) take turns round by round, the order rotated each
round (A, B, C, then B, C, A, ...), so that machine noise hits them alike. A turn is a block of
calls timed with :func:`time.perf_counter_ns`: either each call alone (latency distributions)
or the block as a whole (the mean per call, for calls too short to time one by one). The
garbage collector is off while timing. With several threads, each turn starts with a wait
until no contender's threads run (:meth:`Contender.quiet`: OpenMP, ONNX Runtime and OpenBLAS
pools spin for a while after their work, ORT's for up to ~90 ms, before they sleep and stop
taking the cores of the one being timed), an idle pause, then one untimed wake-up call (which
wakes the contender's own threads and the idle core). With several threads the benches
moreover build and time each engine in a process of its own (:mod:`.isolated`; a
:class:`Contender` subclass there sends each turn to its child), so that no engine's worker
threads share a process with another's.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ISA_CORETYPE", "QUIET_MAX_S", "SETTLE_S", "Contender", "Progress", "busy_threads",
           "interleave", "isa_sgemm_peak", "percentiles", "sgemm_peak", "wait_idle"]

#: Idle seconds before each turn when several contenders run on several threads.
SETTLE_S = 0.03
#: Longest wait for a contender's threads to stop running after its turn. ONNX Runtime's
#: intra-op workers spun on after a turn past the 30 ms idle pause and slowed the next
#: contender: lstm_fast's 2-thread ``server_256`` timed after ORT read 1.83 ms, after torch
#: 1.15 ms (with a 0.2 s pause after ORT too: 1.20 ms).
QUIET_MAX_S = 1.0


def busy_threads(pid: int) -> int:
    """Threads of process ``pid`` running or runnable now (Linux ``/proc``; elsewhere 0)."""
    busy = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        busy += state == "R"
    return busy


def wait_idle(pid: int, timeout_s: float, poll_s: float = 0.002) -> float:
    """Waits until no thread of process ``pid`` runs, at most ``timeout_s``; returns the
    seconds waited."""
    t0 = time.perf_counter()
    while busy_threads(pid) and time.perf_counter() - t0 < timeout_s:
        time.sleep(poll_s)
    return time.perf_counter() - t0


@dataclass
class Contender:
    """One thing being timed: ``call(x)`` on ``inputs`` cycled through.

    Attributes
    ----------
    name : str
        How reports call it.
    call : callable
        One call on one input.
    inputs : sequence
        The inputs, cycled through call by call.
    session : callable
        Returns the context every block of calls runs in (e.g. a peer's
        :meth:`~lstm_fast.peers.Peer.session`).
    times_ns : list of float
        Per call (each call timed alone) or per turn (the block's mean per call).
    calls, total_ns : int
        Timed calls so far and their total time.
    """

    name: str
    call: Callable[[Any], object]
    inputs: Sequence[Any]
    session: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    times_ns: list[float] = field(default_factory=list)
    calls: int = 0
    total_ns: int = 0
    turns: int = 0
    next_input: int = 0

    def quiet(self, timeout_s: float) -> float:
        """Waits until this contender's threads no longer run (a worker pool spinning after
        its turn), at most ``timeout_s``; returns the seconds waited. In-process contenders
        share the timing thread's process: nothing to wait for."""
        return 0.0

    def untimed(self, count: int = 1) -> None:
        """``count`` calls that are not timed (warm-up, wake-up), continuing the input cycle."""
        n, k = len(self.inputs), self.next_input
        with self.session():
            for _ in range(count):
                self.call(self.inputs[k % n])
                k += 1
        self.next_input = k % n

    def warm_up(self, calls: int = 0, seconds: float = 0.0) -> float:
        """Untimed calls: ``calls`` of them, or at least one and until ``seconds`` have passed.

        Returns
        -------
        float
            The mean ns per call (the input cycle is then continued by the timed calls).
        """
        n, k, done = len(self.inputs), self.next_input, 0
        with self.session():
            start = time.perf_counter_ns()
            while done < calls or (seconds and (not done or
                                                time.perf_counter_ns() - start < seconds * 1e9)):
                self.call(self.inputs[k % n])
                k += 1
                done += 1
            elapsed = time.perf_counter_ns() - start
        self.next_input = k % n
        return elapsed / max(done, 1)

    def turn(self, count: int = 0, budget_ns: int = 0, each: bool = True) -> None:
        """One timed block: ``count`` calls, or calls until ``budget_ns`` of measured time.

        ``each``: time every call alone and record each; else time the block and record its
        mean per call.
        """
        call, inputs, perf = self.call, self.inputs, time.perf_counter_ns
        n, k = len(inputs), self.next_input
        spent = done = 0
        with self.session():
            if not each and n == 1 and count:  # the tightest loop: one input, a fixed count
                x = inputs[0]
                t0 = perf()
                for _ in itertools.repeat(None, count):
                    call(x)
                spent, done = perf() - t0, count
            else:
                start = perf()
                while True:
                    t0 = perf()
                    call(inputs[k % n])
                    dt = perf() - t0
                    if each:
                        self.times_ns.append(dt)
                    spent += dt
                    done += 1
                    k += 1
                    if (count and done >= count) or (budget_ns and spent >= budget_ns):
                        break
                if not each:
                    spent = perf() - start
        if not each:
            self.times_ns.append(spent / done)
        self.next_input = k % n
        self.calls += done
        self.total_ns += spent
        self.turns += 1


def interleave(contenders: Sequence[Contender], *, finished: Callable[[Contender], bool],
               count: Callable[[Contender], int] = lambda c: 0, budget_ns: int = 0,
               each: bool = True, settle_s: float = 0.0,
               after_turn: Callable[[], None] | None = None,
               before_round: Callable[[int], None] | None = None) -> None:
    """Rounds of turns until every contender is ``finished``.

    Parameters
    ----------
    contenders : sequence of Contender
        Warmed up already.
    finished : callable
        Whether a contender has had enough.
    count, budget_ns
        The size of a turn: ``count(c)`` calls, or calls until ``budget_ns`` (see
        :meth:`Contender.turn`).
    each : bool
        Record every call's time (else each turn's mean per call).
    settle_s : float
        With several threads: before each turn, wait until no contender's threads run
        (:meth:`Contender.quiet`, at most :data:`QUIET_MAX_S`; a contender that is still
        busy then is not waited for again), then ``settle_s`` idle seconds, then one untimed
        wake-up call; 0 for none of that.
    after_turn : callable, optional
        Called after each turn (progress bars).
    before_round : callable, optional
        Called with the round's number before each round (to draw the round's inputs).
    """
    gc.collect()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        r = 0
        restless: set[int] = set()  # contenders that never went quiet within QUIET_MAX_S
        while pending := [c for c in contenders if not finished(c)]:
            if before_round is not None:
                before_round(r)
            shift = r % len(pending)
            for c in pending[shift:] + pending[:shift]:
                if settle_s:
                    for other in contenders:  # the previous turn's threads stop spinning
                        if (id(other) not in restless
                                and other.quiet(QUIET_MAX_S) >= QUIET_MAX_S):
                            restless.add(id(other))  # waiting again would only add time
                    time.sleep(settle_s)
                    c.untimed(1)  # wakes its threads and the idle core
                c.turn(count(c), budget_ns, each)
                if after_turn is not None:
                    after_turn()
            r += 1
    finally:
        if gc_was_on:
            gc.enable()


def percentiles(times_ns: Sequence[float], qs: Sequence[float] = (50,)) -> list[float]:
    """The percentiles ``qs`` (0-100) of ``times_ns``, in ns (the median is ``qs=(50,)``)."""
    return [float(v) for v in np.percentile(np.asarray(times_ns, dtype=np.float64), qs)]


class Progress:
    """A one-line progress bar on stderr (rewritten with \\r), throttled to 10 updates/s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.width = 0

    def update(self, fraction: float, text: str, force: bool = False) -> None:
        """Redraw the bar at ``fraction`` (0..1) with ``text`` after it."""
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
        """Erase the bar."""
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


#: Size of the sgemm whose speed is the peak of GFLOP/s figures.
PEAK_SIZE = 1024


def sgemm_peak(size: int = PEAK_SIZE, min_seconds: float = 0.15, threads: int = 1) -> float:
    """GFLOP/s of a ``size``-cubed float32 matrix product through lstm_fast's OpenBLAS.

    The best of several runs (at least 3, for at least ``min_seconds``) after one untimed run,
    with OpenBLAS on ``threads`` threads (set back to 1 after: lstm_fast runs it
    single-threaded, see :func:`lstm_fast.set_num_threads`).
    """
    from .. import _blas_lib

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

    _blas_lib.scipy_openblas_set_num_threads(threads)
    try:
        once()
        best, runs, start = None, 0, time.perf_counter()
        while runs < 3 or (time.perf_counter() - start < min_seconds and runs < 50):
            dt = once()
            best = dt if best is None else min(best, dt)
            runs += 1
    finally:
        _blas_lib.scipy_openblas_set_num_threads(1)
    return 2.0 * size**3 / max(best, 1)


#: The OpenBLAS core type whose sgemm kernels use the instruction set of each lstm_fast kernel
#: level (the portable level: the BLAS as loaded).
ISA_CORETYPE = {"avx512": "SkylakeX", "avx2": "Haswell"}
_PEAKS: dict[tuple[str, int, int], float] = {}
#: The child process of :func:`isa_sgemm_peak`: prints the peak and the core type it ran on.
_CHILD = ("import json, sys, lstm_fast; from lstm_fast.bench.timing import sgemm_peak; "
          "print(json.dumps({'gflops': sgemm_peak(int(sys.argv[1]), threads=int(sys.argv[2])), "
          "'core': lstm_fast.blas_info()['core']}))")


def isa_sgemm_peak(isa: str, threads: int = 1, size: int = PEAK_SIZE) -> tuple[float, str]:
    """The sgemm peak of the instruction set ``isa``: :func:`sgemm_peak` through OpenBLAS
    with the matching core type (:data:`ISA_CORETYPE`), so that a fraction of it means the
    same on every machine (``LSTM_FAST_ISA=avx2`` on an AVX-512 CPU: the Haswell kernels).

    OpenBLAS picks its kernels when it is loaded, so when the core type differs from the one
    loaded here, the peak is measured in a child Python with ``OPENBLAS_CORETYPE`` set.
    Figures are cached for the life of the process.

    Parameters
    ----------
    isa : {"avx512", "avx2", "portable"}
        The lstm_fast kernel level in use.
    threads : int
        BLAS threads.
    size : int
        The matrices' size.

    Returns
    -------
    (gflops, core)
        GFLOP/s and the OpenBLAS core type it was measured on.

    Raises
    ------
    RuntimeError
        When the child process fails or OpenBLAS ran another core type than asked for.
    """
    import lstm_fast as lf

    loaded = lf.blas_info()["core"]
    core = ISA_CORETYPE.get(isa, loaded)
    key = (core.lower(), threads, size)
    if key not in _PEAKS:
        if core.lower() == loaded.lower():
            _PEAKS[key] = sgemm_peak(size, threads=threads)
        else:
            _PEAKS[key] = _child_peak(core, threads, size)
    return _PEAKS[key], core


def _child_peak(core: str, threads: int, size: int) -> float:
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OPENBLAS_CORETYPE=core)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(size), str(threads)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the sgemm peak with OPENBLAS_CORETYPE={core} failed: {last}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if str(result["core"]).lower() != core.lower():
        raise RuntimeError(f"OPENBLAS_CORETYPE={core} ran OpenBLAS core {result['core']}")
    return float(result["gflops"])
