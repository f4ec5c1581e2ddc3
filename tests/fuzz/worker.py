"""Fuzz worker: runs mutants through the ``lstm-fast`` entry point inside this process.

Started by :mod:`tests.fuzz.runner` as ``python -m tests.fuzz.worker``. It reads one JSON job
per line on stdin (``{"i", "seed", "fmt", "rng"}``), rebuilds the mutant, writes it to a
scratch file and runs ``lstm-fast info FILE`` (``.lfm``) or
``lstm-fast convert FILE -o OUT --no-verify`` (every other format) by calling
``lstm_fast.cli.main``; a model file that loads is also loaded with ``lf.load`` and run on a
few steps. Before and after each job it writes a JSON line on its original stdout:
``{"start": i}``, then the result: exit code, any exception that escaped ``main``, the stderr
lines, the exceptions the converter/loader APIs raised, the seconds, the job's peak RSS (VmHWM,
reset before each job) and the largest peak of a child process so far (the Keras reader's).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .mutate import SUFFIX, mutant

_API: list[str] = []


def _watch(module: Any, name: str) -> None:
    """Record the type of any exception ``module.name`` raises (the public API under test)."""
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except BaseException as e:
            _API.append(_describe(e))
            raise

    setattr(module, name, wrapper)


def _describe(e: BaseException) -> str:
    from lstm_fast.errors import LstmFastError

    kind = "typed" if isinstance(e, LstmFastError) else "UNTYPED"
    return f"{kind} {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _self_test(kind: str) -> None:
    """Misbehave on purpose (``LSTM_FAST_FUZZ_SELFTEST``), so tests can check the runner."""
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "hang":
        time.sleep(3600)
    elif kind == "memory":
        block = bytearray(300 << 20)
        block[::4096] = b"x" * len(block[::4096])
    elif kind == "untyped":
        import lstm_fast.converters.torch as torch_conv

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise KeyError("self test")

        torch_conv.spec_from_torch_file = broken
        _watch(torch_conv, "spec_from_torch_file")


def run_job(job: dict[str, Any], scratch: Path, seeds: dict[str, bytes]) -> dict[str, Any]:
    """Run one mutant; the result line."""
    import numpy as np

    import lstm_fast as lf
    from lstm_fast import cli

    seed = seeds.setdefault(job["seed"], Path(job["seed"]).read_bytes())
    data = mutant(seed, job["fmt"], random.Random(job["rng"]))
    path = scratch / f"m{job['i']}{SUFFIX[job['fmt']]}"
    path.write_bytes(data)
    out = scratch / "out.lfm"
    argv = (["info", str(path)] if job["fmt"] == "lfm"
            else ["convert", str(path), "-o", str(out), "--no-verify"])
    _API.clear()
    _reset_peak()
    t0 = time.monotonic()
    if job["i"] == 0:
        _self_test(os.environ.get("LSTM_FAST_FUZZ_SELFTEST", ""))
    err, escaped, rc = io.StringIO(), None, None
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - what escapes main is a failure
            escaped = f"{type(e).__name__}: {e}"[:300]
    if job["fmt"] == "lfm":
        try:
            model = lf.load(path)
            x = (np.zeros((1, 3), np.int32) if model.takes_ids
                 else np.zeros((1, 3, model.input_size), np.float32))
            model.predict(x)
        except BaseException as e:  # noqa: BLE001 - recorded and judged by the runner
            _API.append(_describe(e))
    secs = time.monotonic() - t0
    path.unlink()
    return {"i": job["i"], "rc": rc, "escaped": escaped, "stderr": err.getvalue().splitlines(),
            "api": list(_API), "secs": secs, "peak_kb": _peak_kb(),
            "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # C libraries printing to stdout must not garble the protocol
    import lstm_fast.converters.keras as keras_conv
    import lstm_fast.converters.torch as torch_conv
    import lstm_fast.format as fmt

    _watch(torch_conv, "spec_from_torch_file")
    _watch(keras_conv, "spec_from_keras_file")
    _watch(fmt, "load_spec")
    seeds: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="lstm_fast_fuzz_") as tmp:
        for line in sys.stdin:
            job = json.loads(line)
            proto.write(json.dumps({"start": job["i"]}) + "\n")
            proto.write(json.dumps(run_job(job, Path(tmp), seeds)) + "\n")


if __name__ == "__main__":
    main()
