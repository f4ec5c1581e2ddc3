"""The bench protocol with several threads (:mod:`lstm_fast.bench.isolated`): each engine built,
checked and timed in a spawned child process, the children taking turns; per-engine figures,
the output checks, children that fail, die or hang (clear errors, timeouts, no hang), and the
children ended afterwards. No timing asserts: only that figures exist and are positive."""

import functools
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.bench.engines import Engine, contender, make_workload, outputs
from lstm_fast.bench.isolated import (
    EngineProcess,
    EngineProcessError,
    RemoteContender,
    _check_peer,
    build_isolated,
    close,
    lstm_fast_runner,
)
from lstm_fast.bench.timing import Contender, busy_threads, interleave, percentiles, wait_idle
from lstm_fast.bench_spec import parse_spec
from lstm_fast.errors import FrameworkUnavailable

SPEC = parse_spec("gru:I=3,H=5/dense:O=2", seed=4)


class _Runner:
    """lstm_fast's model of ``SPEC`` with its outputs shifted; after ``ok_calls`` calls each
    further call exits the process (``then="exit"``), hangs or raises."""

    version = "0.0-test"

    def __init__(self, shift: float, ok_calls: int | None, then: str) -> None:
        self.model = lf.Model(SPEC)
        self.shift, self.ok_calls, self.then, self.calls = shift, ok_calls, then, 0

    def _call(self, y: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.ok_calls is not None and self.calls > self.ok_calls:
            if self.then == "exit":
                os._exit(3)
            if self.then == "hang":
                time.sleep(3600)
            raise ZeroDivisionError("the test's runner fails")
        return y + self.shift

    def predict(self, x, lengths=None):
        return self._call(self.model.predict(x, lengths=lengths))

    def stream(self, batch):
        s = self.model.stream(batch)
        return type("S", (), {"step": lambda _, x: self._call(s.step(x)),
                              "run": lambda _, x: self._call(s.run(x))})()


def fake(shift: float = 0.0, ok_calls: int | None = None, then: str = "raise",
         build: str = "ok") -> _Runner:
    """Builds :class:`_Runner` in the child; ``build`` "unavailable", "raise" or "hang"
    instead."""
    if build == "unavailable":
        raise FrameworkUnavailable("fakework cannot run this model (test)")
    if build == "raise":
        raise ValueError("the test's build fails")
    if build == "hang":
        time.sleep(3600)
    return _Runner(shift, ok_calls, then)


def step_workload():
    return make_workload(SPEC, "step", 2, 1, seed=1)


def test_children_take_turns_and_return_per_engine_figures():
    wl = step_workload()
    local = Engine("lstm_fast", runner=lf.Model(SPEC))
    reference = outputs(local.runner, wl)
    procs = [EngineProcess(name, functools.partial(lstm_fast_runner, SPEC, "auto", 2))
             for name in ("a", "b")]
    engines = [Engine(p.name, process=p) for p in procs]
    try:
        for p in procs:
            assert np.array_equal(p.outputs(wl)[0], reference[0])  # same model, same outputs
        cs = [contender(e, wl) for e in engines]
        assert all(isinstance(c, RemoteContender) for c in cs)
        for c in cs:
            assert c.warm_up(calls=3) > 0
        interleave(cs, finished=lambda c: c.turns >= 4, count=lambda c: 5, each=True,
                   settle_s=0.001)
        for c in cs:
            assert c.turns == 4 and c.calls == 20 and len(c.times_ns) == 20
            assert c.total_ns >= sum(c.times_ns) * 0.999 and percentiles(c.times_ns)[0] > 0
        interleave(cs, finished=lambda c: c.turns >= 6, budget_ns=100_000, each=False)
        assert all(c.turns == 6 and len(c.times_ns) == 22 for c in cs)  # one mean per turn
    finally:
        close(engines)
    assert all(not p.process.is_alive() and p.process.exitcode == 0 for p in procs)
    assert all(e.process is None for e in engines)


SPINNER = """
import sys, time
print("spinning", flush=True)
t = time.perf_counter()
while time.perf_counter() - t < 0.6:
    pass
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_wait_idle_waits_while_a_process_spins_and_not_once_it_sleeps():
    # A peer's pool spinning after its turn (ONNX Runtime's, for up to ~90 ms) would take a
    # core from the next contender: the pause before a turn waits for it.
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "spinning"
        assert busy_threads(child.pid) >= 1
        waited = wait_idle(child.pid, timeout_s=30.0)
        assert 0.3 <= waited < 30.0  # the spin's rest, and not the timeout
        assert busy_threads(child.pid) == 0
        assert wait_idle(child.pid, timeout_s=30.0) < 5.0  # asleep: back at once
    finally:
        child.kill()
        child.wait()
    assert busy_threads(child.pid) == 0  # gone: nothing to wait for


def test_the_pause_before_each_turn_waits_for_every_contender_to_be_quiet():
    quiet_calls: list[str] = []

    class Quiet(Contender):
        def quiet(self, timeout_s: float) -> float:
            quiet_calls.append(self.name)
            return 0.0

    cs = [Quiet(name, lambda x: x, [0]) for name in ("a", "b")]
    interleave(cs, finished=lambda c: c.turns >= 3, count=lambda c: 2)
    assert quiet_calls == []  # no pause asked for (one thread)
    interleave(cs, finished=lambda c: c.turns >= 5, count=lambda c: 2, settle_s=0.001)
    assert len(quiet_calls) == 2 * 2 * 2 and set(quiet_calls) == {"a", "b"}


def test_a_contender_that_never_goes_quiet_is_waited_for_once(monkeypatch):
    # A peer whose threads never stop running would otherwise add QUIET_MAX_S to every turn.
    from lstm_fast.bench import timing

    monkeypatch.setattr(timing, "QUIET_MAX_S", 0.01)
    waits: list[str] = []

    class Busy(Contender):
        def quiet(self, timeout_s: float) -> float:
            waits.append(self.name)
            return timeout_s if self.name == "busy" else 0.0

    cs = [Busy(name, lambda x: x, [0]) for name in ("busy", "calm")]
    interleave(cs, finished=lambda c: c.turns >= 3, count=lambda c: 1, settle_s=0.001)
    assert waits.count("busy") == 1 and waits.count("calm") == 2 * 3


def test_peer_outputs_are_checked_and_failures_marked():
    wl = make_workload(SPEC, "sequence", 2, 6, seed=2)
    reference = outputs(lf.Model(SPEC), wl)
    cases = {"same": fake, "shifted": functools.partial(fake, shift=0.5),
             "unavailable": functools.partial(fake, build="unavailable"),
             "broken": functools.partial(fake, build="raise"),
             "dies": functools.partial(fake, ok_calls=0, then="exit")}
    started = {name: (Engine(name), EngineProcess(name, build)) for name, build in cases.items()}
    try:
        ok = {name: _check_peer(e, p, SPEC, wl, reference, 1e-4)
              for name, (e, p) in started.items()}
    finally:
        for _, p in started.values():
            p.close()
    assert ok == {"same": True, "shifted": False, "unavailable": False, "broken": False,
                  "dies": False}
    e = {name: e for name, (e, _) in started.items()}
    assert e["same"].status == "ok" and e["same"].max_abs_diff == 0.0
    assert e["same"].version == "0.0-test" and e["same"].weights == "fp32"
    assert e["same"].bytes_per_step > 0
    assert e["shifted"].status == "mismatch" and "differs from lstm_fast by 0.5" in \
        e["shifted"].reason
    assert (e["unavailable"].status, e["unavailable"].reason) == \
        ("skipped", "fakework cannot run this model (test)")
    assert (e["broken"].status, e["broken"].reason) == \
        ("failed", "ValueError: the test's build fails")
    assert e["dies"].status == "failed" and "its process died (exit code 3)" in \
        e["dies"].reason
    assert all(not p.process.is_alive() for _, p in started.values())


@pytest.mark.parametrize(("then", "message"), [
    ("raise", "timed: ZeroDivisionError: the test's runner fails"),
    ("exit", "timed: its process died (exit code 3)"),
    ("hang", "timed: its process did not answer within 2 s; killed"),
])
def test_a_child_failing_while_timed_is_a_clear_error_and_is_ended(then, message):
    wl = step_workload()
    # the check's calls and the wake-up call pass; the first timed turn fails
    p = EngineProcess("timed", functools.partial(fake, ok_calls=wl.verify_calls + 1, then=then),
                      timeout_s=2)
    try:
        assert len(p.outputs(wl)) == wl.verify_calls
        c = p.contender("timed", wl)
        c.untimed(1)
        t0 = time.monotonic()
        with pytest.raises(EngineProcessError) as err:
            c.turn(count=3)
        assert time.monotonic() - t0 < 30
    finally:
        p.close()
    assert str(err.value) == message
    assert not p.process.is_alive()
    with pytest.raises(EngineProcessError, match="timed: its process"):
        c.turn(count=1)  # no hang on a child that is gone either


def test_a_build_that_hangs_times_out_and_is_killed():
    p = EngineProcess("slow", functools.partial(fake, build="hang"), build_timeout_s=2)
    with pytest.raises(EngineProcessError, match="slow: its process did not answer within 2 s"):
        p.built()
    assert not p.process.is_alive()


def test_build_isolated_local_and_peers_then_close(monkeypatch):
    """lstm_fast's engine in a child checked against the local model; a peer that cannot be
    imported is skipped (no child); close() ends every child."""
    wl = step_workload()
    me = Engine("lstm_fast", runner=lf.Model(SPEC))
    reference = outputs(me.runner, wl)
    monkeypatch.setattr("lstm_fast.bench.isolated.load_peers",
                        lambda: (None, "lstm_fast.peers cannot be imported (test)"))
    engines = build_isolated([me], ["torch"], SPEC, wl, 2, reference)
    try:
        assert [e.name for e in engines] == ["lstm_fast", "torch"]
        assert engines[1].status == "skipped" and engines[1].process is None
        assert "cannot be imported (test)" in engines[1].reason
        proc = me.process
        assert proc is not None and proc.process.is_alive()
        c = contender(me, wl)
        c.warm_up(calls=2)
        c.turn(count=4)
        assert c.calls == 4 and len(c.times_ns) == 4
    finally:
        close(engines)
    assert not proc.process.is_alive() and me.process is None
