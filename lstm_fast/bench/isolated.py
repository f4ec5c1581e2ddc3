"""Engines built, checked and timed in their own processes: the protocol with several threads.

With several threads every engine keeps worker threads between its calls: ONNX Runtime's
intra-op pool and torch's OpenMP threads spin after each call, lstm_fast's pool worker spins
100 µs and then sleeps. In one process the engines then take each other's cores (on 2 cores
``step_256_512`` at 2 threads was timed at 102 µs interleaved in one process, 42 µs alone).
So with threads > 1 each engine lives in a child process of its own, started with ``spawn`` (a
fresh interpreter: no threads, OpenBLAS locks or framework state copied from the parent),
which builds it (lstm_fast's model, or a peer through :func:`lstm_fast.peers.build_peer`),
sends the outputs :func:`.engines.outputs` compares back to the parent (checked there against
lstm_fast's as in-process) and then times turns when told to. The parent drives the children
through :func:`.timing.interleave` exactly as it drives in-process contenders (a
:class:`RemoteContender` per child): rounds, rotation, idle pause and wake-up call are the
same, and only one child runs at a time; the others block on a pipe read (asleep, not
spinning). Every request has a timeout: a child that dies or hangs raises
:class:`EngineProcessError` naming the engine, and is killed. :func:`close` ends the children.

One thread keeps the in-process protocol (:mod:`.timing`): single-threaded engines leave no
worker threads behind, and one process spares each engine a child's start-up (an interpreter
plus its framework's import, seconds) and each turn the two pipe round trips.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FrameworkUnavailable, LstmFastError
from .engines import (
    TOLERANCE,
    Engine,
    Workload,
    contender,
    first_line,
    judge,
    load_peers,
    max_diff,
    outputs,
)
from .timing import Contender, wait_idle
from .traffic import peer_step_bytes

__all__ = ["BUILD_TIMEOUT_S", "REQUEST_TIMEOUT_S", "EngineProcess", "EngineProcessError",
           "RemoteContender", "build_isolated", "close", "lstm_fast_runner"]

#: Seconds a child may take to start and build its engine (an interpreter, a framework's
#: import, an ONNX Runtime session: seconds each, longer on a loaded machine).
BUILD_TIMEOUT_S = 600.0
#: Seconds a child may take to answer any other request (a turn is at most a few seconds).
REQUEST_TIMEOUT_S = 300.0


class EngineProcessError(LstmFastError, RuntimeError):
    """A child process failed, died or did not answer in time (the message names the engine
    and says which)."""


def lstm_fast_runner(spec: Any, isa: str, threads: int) -> Any:
    """lstm_fast's model of ``spec`` on ``isa``, running ``threads`` threads (in a child)."""
    import lstm_fast as lf

    lf.set_num_threads(threads)
    return lf.Model(spec, isa=isa)


def _serve(conn: Any, name: str, build: Callable[[], Any]) -> None:
    """The child: build the runner, then answer requests until told to stop (or the parent
    is gone). Replies are ``("ok", value)``, ``("unavailable", why)`` (the framework cannot
    run the model) or ``("error", why)``; after anything but ``"ok"`` the child ends."""
    try:
        runner = build()
        info = {"version": str(getattr(runner, "version", "") or ""),
                "quantization": getattr(runner, "quantization", None)}
    except FrameworkUnavailable as e:
        conn.send(("unavailable", first_line(e)))
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        conn.send(("error", f"{type(e).__name__}: {first_line(e)}"))
        return
    conn.send(("ok", info))
    c: Contender | None = None
    while True:
        try:
            request, args = conn.recv()
        except EOFError:  # the parent is gone
            return
        try:
            if request == "stop":
                conn.send(("ok", None))
                return
            if request == "outputs":
                reply: Any = outputs(runner, args[0])
            elif request == "contender":
                c = contender(Engine(name, runner=runner), args[0])
                gc.collect()
                gc.disable()  # the child only times from now on
                reply = None
            elif request == "warm_up":
                reply = c.warm_up(*args)  # type: ignore[union-attr]
            elif request == "untimed":
                reply = c.untimed(*args)  # type: ignore[union-attr]
            elif request == "turn":
                calls, spent = c.calls, c.total_ns  # type: ignore[union-attr]
                c.turn(*args)  # type: ignore[union-attr]
                reply = (c.times_ns, c.calls - calls, c.total_ns - spent)  # type: ignore
                c.times_ns = []  # type: ignore[union-attr]
            else:
                raise ValueError(f"unknown request {request!r}")
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            conn.send(("error", f"{type(e).__name__}: {first_line(e)}"))
            return
        conn.send(("ok", reply))


class EngineProcess:
    """One engine in a child process of its own (see the module's docstring).

    Parameters
    ----------
    name : str
        The engine's name (in error messages and the process's name).
    build : callable
        Picklable, no arguments: builds the runner in the child (something with
        ``predict(x, lengths=)`` and ``stream(batch)``, as :class:`.engines.Engine` runs).
    build_timeout_s, timeout_s : float
        Seconds to wait for the build, for any other reply.
    """

    def __init__(self, name: str, build: Callable[[], Any], *,
                 build_timeout_s: float = BUILD_TIMEOUT_S,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._build_timeout_s = build_timeout_s
        self._info: dict[str, Any] | None = None
        ctx = multiprocessing.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(theirs, name, build), daemon=True,
                                   name=f"lstm_fast bench: {name}")
        self.process.start()
        theirs.close()

    def _reply(self, timeout_s: float) -> Any:
        ready = multiprocessing.connection.wait([self._conn, self.process.sentinel], timeout_s)
        if not ready:
            self.kill()
            raise EngineProcessError(f"{self.name}: its process did not answer within "
                                     f"{timeout_s:g} s; killed")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            self.kill()
            raise EngineProcessError(f"{self.name}: its process died (exit code "
                                     f"{self.process.exitcode})") from None
        if status == "ok":
            return value
        self.process.join(5)
        self.kill()
        if status == "unavailable":
            raise FrameworkUnavailable(value)
        raise EngineProcessError(f"{self.name}: {value}")

    def request(self, request: str, *args: Any) -> Any:
        """The child's reply to ``request`` (see :func:`_serve`).

        Raises
        ------
        EngineProcessError
            When the child failed, died or did not answer within ``timeout_s`` (it is then
            killed).
        """
        self.built()
        try:
            self._conn.send((request, args))
        except (BrokenPipeError, OSError):
            self.kill()
            raise EngineProcessError(f"{self.name}: its process is gone (exit code "
                                     f"{self.process.exitcode})") from None
        return self._reply(self.timeout_s)

    def built(self) -> dict[str, Any]:
        """Wait for the build: the runner's ``version`` and ``quantization``.

        Raises
        ------
        FrameworkUnavailable
            When the framework cannot run the model (the child has ended).
        EngineProcessError
            When the build failed or timed out.
        """
        if self._info is None:
            self._info = self._reply(self._build_timeout_s)
        return self._info

    def outputs(self, wl: Workload) -> list[np.ndarray]:
        """:func:`.engines.outputs` of the engine on ``wl``, computed in the child."""
        return self.request("outputs", wl)  # type: ignore[no-any-return]

    def contender(self, name: str, wl: Workload) -> RemoteContender:
        """The engine timed on ``wl`` (a fresh stream in step and chunk modes), as a
        :class:`RemoteContender` for :func:`.timing.interleave`."""
        self.request("contender", wl)
        return RemoteContender(name, _in_child, (), process=self)

    def kill(self) -> None:
        """End the child now (if it still runs) and close the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self._conn.close()

    def close(self) -> None:
        """Ask the child to stop; kill it when it does not within a few seconds."""
        if self.process.is_alive() and not self._conn.closed:
            try:
                self._conn.send(("stop", ()))
            except OSError:
                pass
            self.process.join(5)
        self.kill()


def _in_child(_: Any) -> None:
    raise RuntimeError("a RemoteContender's calls run in its child process")


@dataclass
class RemoteContender(Contender):
    """A :class:`~.timing.Contender` whose calls run in its :class:`EngineProcess`: each
    method is one request, the times recorded here."""

    process: EngineProcess | None = None

    def quiet(self, timeout_s: float) -> float:
        return wait_idle(self.process.process.pid, timeout_s)  # type: ignore[union-attr]

    def untimed(self, count: int = 1) -> None:
        self.process.request("untimed", count)  # type: ignore[union-attr]

    def warm_up(self, calls: int = 0, seconds: float = 0.0) -> float:
        return float(self.process.request("warm_up", calls, seconds))  # type: ignore

    def turn(self, count: int = 0, budget_ns: int = 0, each: bool = True) -> None:
        times, done, spent = self.process.request("turn", count, budget_ns,  # type: ignore
                                                  each)
        self.times_ns.extend(times)
        self.calls += done
        self.total_ns += spent
        self.turns += 1


def build_isolated(local: Sequence[Engine], names: Sequence[str], spec: Any, wl: Workload,
                   threads: int, reference: list[np.ndarray],
                   tolerance: float = TOLERANCE) -> list[Engine]:
    """lstm_fast's engines and the peers ``names``, each in its own :class:`EngineProcess`
    (started together, then checked one by one), ready for :func:`.engines.contender`.

    Parameters
    ----------
    local : sequence of Engine
        lstm_fast's engines, each with its :class:`~lstm_fast.Model` as ``runner``: a child
        builds the same model (same spec and instruction set), and its outputs must equal the
        local model's within ``tolerance``.
    names : sequence of str
        Peers, as :func:`.engines.build_peers` takes them (and marked as it marks them:
        skipped, failed, mismatch).
    spec, wl, threads, reference, tolerance
        As :func:`.engines.build_peers`.

    Returns
    -------
    list of Engine
        ``local`` then the peers; each engine that is ``"ok"`` has its ``process``.

    Raises
    ------
    EngineProcessError
        When one of lstm_fast's children fails or differs from the local model (the other
        children are ended).
    """
    peers, why = load_peers() if names else (None, None)
    engines = [*local, *(Engine(name) for name in names)]
    started: list[tuple[Engine, EngineProcess]] = []
    try:
        for e in local:
            build = functools.partial(lstm_fast_runner, e.runner.spec, e.runner.isa, threads)
            started.append((e, EngineProcess(e.name, build)))
        for e in engines[len(local):]:
            if peers is None:
                e.status, e.reason = "skipped", why
                continue
            build = functools.partial(peers.build_peer, e.name, spec, threads=threads)
            started.append((e, EngineProcess(e.name, build)))
        for k, (e, proc) in enumerate(started):
            if k < len(local):
                diff = max_diff(outputs(e.runner, wl), proc.outputs(wl))
                if diff is None or not diff <= tolerance:
                    raise EngineProcessError(f"{e.name}: its process's outputs differ from "
                                             f"this process's by {diff}")
                e.process = proc
            elif _check_peer(e, proc, spec, wl, reference, tolerance):
                e.process = proc
    except BaseException:
        for _, proc in started:
            proc.kill()
        raise
    for e, proc in started:
        if e.process is None:
            proc.close()
    return engines


def _check_peer(e: Engine, proc: EngineProcess, spec: Any, wl: Workload,
                reference: list[np.ndarray], tolerance: float) -> bool:
    """Wait for the peer's build, fill in what it runs and :func:`.engines.judge` its
    outputs; a peer that cannot run is marked (skipped, failed), not raised."""
    try:
        info = proc.built()
        e.version = info["version"]
        quantization = info["quantization"]
        e.weights = "fp32" if quantization is None else quantization.dtype
        e.bytes_per_step = peer_step_bytes(spec, quantization)
        got = proc.outputs(wl)
    except FrameworkUnavailable as err:
        e.status, e.reason = "skipped", first_line(err)
        return False
    except EngineProcessError as err:
        e.status, e.reason = "failed", str(err).removeprefix(f"{e.name}: ")
        return False
    return judge(e, reference, got, tolerance)


def close(engines: Sequence[Engine]) -> None:
    """End the child processes of ``engines`` (those that have one)."""
    for e in engines:
        if e.process is not None:
            e.process.close()
            e.process = None
