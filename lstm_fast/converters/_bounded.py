"""Read Keras files in a bounded child process.

Keras files are HDF5 (``.h5``, and the ``model.weights.h5`` inside a ``.keras`` zip), read with
h5py. The HDF5 C library trusts the file's metadata: a corrupted file can make it loop forever
inside one call (holding the GIL, deaf to Ctrl-C) or allocate gigabytes. Neither can be
interrupted or bounded inside the calling process, so the whole read (the zip, the config, the
HDF5 weights and the mapping to a :class:`~lstm_fast.spec.ModelSpec`) runs in a child process:

- the child's address space is limited (``RLIMIT_AS``: what it had plus
  :func:`memory_budget`), as are its CPU time, output file size and core dumps;
- the parent waits at most :func:`time_budget` seconds, then kills the child;
- the child hands back the spec as an lstm_fast model file in a private temporary directory
  (read with the same checks as any other model file; nothing is unpickled) and its outcome
  as a small JSON message on a pipe: ``{"ok": true}`` or ``{"error": class name, "message"}``;
  only lstm_fast error classes are recreated, anything else becomes ``ModelFileError``.

On Linux the child is a ``fork()`` of the caller when the caller runs no other Python thread
(a few milliseconds); otherwise, and on other systems, it is a fresh interpreter
(``sys.executable``, about 0.3 s). ``LSTM_FAST_KERAS_TIMEOUT`` (seconds) and
``LSTM_FAST_KERAS_MEMORY`` (MiB) override the two budgets.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import errors
from .._untrusted import loads_json, short
from ..errors import LstmFastError, ModelFileError
from ..spec import ModelSpec

_MAX_MESSAGE = 1 << 16


def time_budget(file_size: int) -> float:
    """Seconds a child may take for a file of ``file_size`` bytes (10 s + 20 MB/s)."""
    env = os.environ.get("LSTM_FAST_KERAS_TIMEOUT", "")
    if env.replace(".", "", 1).isdigit() and float(env) > 0:
        return float(env)
    return 10.0 + file_size / 20e6


def memory_budget(file_size: int) -> int:
    """Bytes of address space a child may add for a file of ``file_size`` bytes."""
    env = os.environ.get("LSTM_FAST_KERAS_MEMORY", "")
    if env.isdigit() and int(env) > 0:
        return int(env) << 20
    return (512 << 20) + 8 * file_size


#: What runs in the child: ``reader(source, config, keras_version) -> ModelSpec``.
Reader = Callable[[str, Any, "str | None"], ModelSpec]


def read_keras_file(source: str, config: Any, keras_version: str | None,
                    reader: Reader) -> ModelSpec:
    """``reader(source, config, keras_version)`` in a bounded child process (the reader of
    :func:`~lstm_fast.converters.keras.spec_from_keras_file`, which passes it in: this module
    does not import the converters).

    ``config`` is already parsed (a dict or None). ``reader`` must be a module-level function
    (a spawned child imports it by name).

    Raises
    ------
    ModelFileError
        When the child fails, runs out of its budgets, crashes, or reports an error that is
        not an lstm_fast error; lstm_fast errors are raised as the child raised them.
    """
    from ..format import load_spec

    size = os.path.getsize(source)
    seconds, budget = time_budget(size), memory_budget(size)
    tmp = tempfile.mkdtemp(prefix="lstm_fast_keras_")
    try:
        out = os.path.join(tmp, "spec.lfm")
        request = {"source": source, "config": config, "keras_version": keras_version,
                   "out": out, "budget": budget, "seconds": seconds, "reader": reader}
        if sys.platform.startswith("linux") and threading.active_count() == 1:
            raw, code = _forked(lambda: _child(request), seconds)
        else:
            raw, code = _spawned(request, seconds)
        message = _message(raw, code, source, seconds, budget)
        if message.get("ok") is True:
            try:
                return load_spec(out)
            except LstmFastError as e:  # our own writer's output: should never happen
                raise ModelFileError(f"{source}: the Keras reader's output is unreadable "
                                     f"({e})") from None
        raise _error(message, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The child


def _child(request: dict[str, Any]) -> dict[str, Any]:
    """Read the file under limits with the request's reader (a function, or in a spawned
    child its ``module:name``); the outcome as a JSON-able dict (never raises)."""
    source = request["source"]
    try:
        _limit_self(int(request["budget"]), float(request["seconds"]))
        warnings.simplefilter("ignore")  # a disposable process: its stderr is the caller's
        np.seterr(all="ignore")  # NaN/Inf weights are reported by the spec checks
        from ..format import save_spec

        reader = request["reader"]
        if isinstance(reader, str):
            module, _, name = reader.partition(":")
            reader = getattr(importlib.import_module(module), name)
        spec = reader(source, request["config"], request["keras_version"])
        save_spec(spec, request["out"])
        return {"ok": True}
    except LstmFastError as e:
        return {"error": type(e).__name__, "message": str(e)[:_MAX_MESSAGE // 2]}
    except MemoryError:
        return {"error": "ModelFileError",
                "message": f"{source}: reading the file needs more than "
                           f"{int(request['budget']) >> 20} MiB (corrupted sizes?); set "
                           f"LSTM_FAST_KERAS_MEMORY (MiB) to allow more"}
    except RecursionError:
        return {"error": "ModelFileError", "message": f"{source}: the file is nested too deeply"}
    except Exception as e:  # noqa: BLE001 - h5py/zipfile/json errors of a corrupted file
        return {"error": "ModelFileError",
                "message": f"{source}: unreadable Keras file ({type(e).__name__}: {short(e)}); "
                           f"the file is truncated or corrupted"}


def _limit_self(budget: int, seconds: float) -> None:
    """Limit this (child) process: address space, CPU seconds, file size, no core dump."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: only the parent's timeout applies
        return
    vm = _address_space()
    usage = resource.getrusage(resource.RUSAGE_SELF)  # a spawned child has used some already
    cpu = int(usage.ru_utime + usage.ru_stime + seconds) + 2
    limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, budget),
              (resource.RLIMIT_CPU, cpu)]
    if vm is not None:
        limits.append((resource.RLIMIT_AS, vm + budget))
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        if soft == resource.RLIM_INFINITY or value < soft:
            resource.setrlimit(which, (value, hard))


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _spawned_main() -> None:
    """Entry point of a spawned child: the request as JSON on stdin, the outcome on stdout."""
    request = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(_child(request)))
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Running it


def _forked(work: Callable[[], dict[str, Any]], seconds: float) -> tuple[bytes | None, int]:
    """Run ``work`` in a fork; (its JSON message or None on timeout, its exit code: -signal
    when a signal ended it)."""
    import h5py  # noqa: F401 - loaded before the fork, so the child maps nothing new for it

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            os.close(r)
            _quiet()
            data = json.dumps(work()).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        raw = _read_pipe(r, time.monotonic() + seconds)
    finally:
        os.close(r)
        status = _reap(pid)
    return raw, os.waitstatus_to_exitcode(status)


def _quiet() -> None:
    """Send the child's stderr (the caller's terminal) to /dev/null: nothing it could print
    (a crash report of a faulting HDF5 call, library warnings) is meant for the user."""
    import faulthandler

    faulthandler.disable()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def _read_pipe(fd: int, deadline: float) -> bytes | None:
    """Bytes until EOF, or None when ``deadline`` passes first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size <= _MAX_MESSAGE:
            chunks.append(chunk)


def _reap(pid: int) -> int:
    """The wait status of ``pid``, after a short grace period and then SIGKILL."""
    for _ in range(200):  # the child closed its pipe: it is exiting
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.001)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # pragma: no cover - exited in between
        pass
    return os.waitpid(pid, 0)[1]


def _spawned(request: dict[str, Any], seconds: float) -> tuple[bytes | None, int]:
    """Run the read in a fresh interpreter; (its JSON message or None on timeout, exit code)."""
    # Import this very lstm_fast package (not another one earlier on the path), without
    # putting its parent directory (say, site-packages) ahead of the standard library.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('lstm_fast', "
            f"{os.path.join(package, '__init__.py')!r}, submodule_search_locations=[{package!r}])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "sys.modules['lstm_fast'] = module\n"
            "spec.loader.exec_module(module)\n"
            "from lstm_fast.converters._bounded import _spawned_main\n"
            "_spawned_main()\n")
    reader = request["reader"]
    request = dict(request, reader=f"{reader.__module__}:{reader.__qualname__}")
    data = json.dumps(request, default=str).encode()
    try:
        done = subprocess.run([sys.executable, "-c", code], input=data,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=seconds + 5.0, check=False)
    except subprocess.TimeoutExpired:
        return None, 0
    return done.stdout[:_MAX_MESSAGE], done.returncode


def _message(raw: bytes | None, code: int, source: str, seconds: float,
             budget: int) -> dict[str, Any]:
    if raw is None or (not raw and code == -getattr(signal, "SIGXCPU", -1)):
        raise ModelFileError(f"{source}: reading the Keras file did not finish within "
                             f"{seconds:.0f} s (corrupted HDF5 metadata can make the HDF5 "
                             f"library loop forever); set LSTM_FAST_KERAS_TIMEOUT (seconds) "
                             f"if the file is genuine and very large")
    if not raw:
        raise ModelFileError(f"{source}: the Keras file reader crashed ({_describe(code)}; "
                             f"it was limited to {budget >> 20} MiB more memory); the file is "
                             f"corrupted")
    message = loads_json(raw, "reader message", source, max_depth=2)
    if not isinstance(message, dict):
        raise ModelFileError(f"{source}: the Keras file reader answered {short(Exception(raw))}")
    return message


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _error(message: dict[str, Any], source: str) -> LstmFastError:
    name, text = message.get("error"), message.get("message")
    cls = getattr(errors, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, LstmFastError)):
        cls = ModelFileError
    if not isinstance(text, str):
        text = f"{source}: the Keras file could not be read"
    return cls(text)
