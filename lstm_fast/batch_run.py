"""Score a .npy file bigger than memory: ``lstm-fast run MODEL --input big.npy --output out.npy
--batch-size 256``.

The input is memory-mapped (``np.load(mmap_mode="r")``) and read one batch at a time (the next
batch is read on a second thread while the engine runs the current one); the output is a
memory-mapped .npy (``np.lib.format.open_memmap``) written batch by batch. Until the run
completes, the output lives at ``OUT.partial`` next to a small progress file
``OUT.partial.json``, updated after each batch is flushed: the number of sequences done and
the job's fingerprint (model file hash, input size and modification time, lengths hash,
batch size, output shape). ``--resume`` continues from there, after checking the fingerprint;
an interrupted and resumed run writes the same bytes as an uninterrupted one. On success the
output is renamed to ``OUT`` and the progress file removed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from .errors import DTypeError, InputError, ShapeError
from .model import Model

__all__ = ["RunStats", "score_file"]

#: Exit code of an interrupted run (as for SIGINT).
INTERRUPTED = 130
#: The progress file is rewritten (after flushing the output) at most this often; a crash
#: repeats at most this much work.
CHECKPOINT_SECONDS = 0.5


@dataclass
class RunStats:
    """What :func:`score_file` did."""

    sequences: int          #: sequences in the input
    resumed_from: int       #: sequences already done by an earlier run (0: a fresh run)
    seconds: float          #: wall time of this run
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Sequences per second of this run."""
        return (self.sequences - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(model_path: str, input_path: str, lengths: np.ndarray | None,
                 batch_size: int, out_shape: tuple[int, ...]) -> dict[str, Any]:
    st = os.stat(input_path)
    return {"model_sha256": _sha256_file(model_path),
            "input": os.path.abspath(input_path), "input_bytes": st.st_size,
            "input_mtime_ns": st.st_mtime_ns,
            "lengths_sha256": None if lengths is None else hashlib.sha256(
                np.ascontiguousarray(lengths, dtype=np.int64).tobytes()).hexdigest(),
            "batch_size": batch_size, "output_shape": list(out_shape)}


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Progress:
    """A progress bar with sequences/s on a stream (a line per 10% when not a terminal)."""

    def __init__(self, total: int, start: int, stream: IO[str] | None) -> None:
        self.total, self.start, self.stream = total, start, stream
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.next_line = start + max(1, total // 10)
        self.printed = -1

    def update(self, done: int, final: bool = False) -> None:
        if self.stream is None:
            return
        now = time.perf_counter()
        if self.tty and not final and now - self.last < 0.1:
            return
        if not self.tty and (done < self.next_line if not final else done == self.printed):
            return
        self.last, self.printed = now, done
        self.next_line = done + max(1, self.total // 10)
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        frac = done / self.total if self.total else 1.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        bar = "#" * int(frac * 30)
        eta_text = "--:--" if eta == float("inf") else time.strftime("%M:%S", time.gmtime(eta))
        line = (f"[{bar:<30s}] {100 * frac:5.1f}% {done:,}/{self.total:,} seq  "
                f"{rate:,.0f} seq/s  ETA {eta_text}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _check_input(model: Model, x: np.ndarray, path: str) -> None:
    if model.takes_ids:
        if x.ndim != 2:
            raise ShapeError(f"{path} has shape {x.shape}; expected (B, T) ids")
        if x.dtype.kind not in "iu":
            raise DTypeError(f"{path} has dtype {x.dtype}; this model takes integer ids")
    else:
        if x.ndim != 3 or x.shape[2] != model.input_size:
            raise ShapeError(f"{path} has shape {x.shape}; expected (B, T, {model.input_size})")
        if x.dtype.kind != "f":
            raise DTypeError(f"{path} has dtype {x.dtype}; expected floats")
    if x.shape[0] < 1:
        raise ShapeError(f"{path} holds no sequences")


def score_file(model_path: str, input_path: str, output_path: str, batch_size: int, *,
               lengths: np.ndarray | None = None, resume: bool = False,
               progress: IO[str] | None = sys.stderr, model: Model | None = None) -> RunStats:
    """Run a model over a .npy file batch by batch into a .npy output (see the module doc).

    Parameters
    ----------
    model_path : str
        The model file (its hash is part of the resume fingerprint).
    input_path : str
        (B, T, I) floats or (B, T) ids, memory-mapped.
    output_path : str
        The .npy to write: (B, T, O), or (B, O) for models that return the last step.
    batch_size : int
        Sequences per engine call.
    lengths : ndarray of int, (B,), optional
        Valid steps of each sequence, as for :meth:`Model.predict`.
    resume : bool
        Continue an interrupted run of the same job from its progress file.
    progress : text stream or None
        Where the progress bar goes (default stderr; None: no progress).
    model : Model, optional
        The loaded model (default: loaded from ``model_path``).

    Returns
    -------
    RunStats
        With ``interrupted=True`` after a KeyboardInterrupt (the progress is saved).

    Raises
    ------
    ShapeError, DTypeError, InputError
        For an unusable input, lengths or batch size, or a progress file of another job.
    """
    from . import load

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if os.path.abspath(output_path) == os.path.abspath(input_path):
        raise InputError("the output must not be the input file")
    model = model if model is not None else load(model_path)
    try:
        x = np.load(input_path, mmap_mode="r", allow_pickle=False)
    except EOFError:
        raise InputError(f"{input_path}: empty or truncated .npy file") from None
    except ValueError as e:
        raise InputError(f"{input_path}: cannot memory-map it ({e})") from None
    _check_input(model, x, input_path)
    B, T = x.shape[0], x.shape[1]
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "iu":
            raise DTypeError(f"lengths have dtype {lengths.dtype}; expected integers")
        if lengths.shape != (B,):
            raise ShapeError(f"lengths have shape {lengths.shape}; expected ({B},)")
        if lengths.size and (lengths.min() < 0 or lengths.max() > T):
            raise InputError(f"lengths must lie in [0, {T}]")
    out_shape = (B, T, model.output_size) if model.spec.returns_sequences \
        else (B, model.output_size)
    partial, sidecar = output_path + ".partial", output_path + ".partial.json"
    job = _fingerprint(model_path, input_path, lengths, int(batch_size), out_shape)
    start = 0
    if resume and os.path.exists(sidecar) and os.path.exists(partial):
        with open(sidecar) as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or saved.get("job") != job:
            diff = sorted(k for k in job if not isinstance(saved, dict)
                          or saved.get("job", {}).get(k) != job[k])
            raise InputError(f"{sidecar} belongs to another job (differs in {', '.join(diff)});"
                             f" run without --resume to start over")
        start = int(saved["done"])
        y = np.lib.format.open_memmap(partial, mode="r+")
        if y.shape != out_shape or y.dtype != np.float32:
            raise InputError(f"{partial} has shape {y.shape}, expected {out_shape}; run "
                             f"without --resume to start over")
    else:
        if resume and progress is not None:
            progress.write(f"no interrupted run of {output_path} to resume: starting\n")
        elif os.path.exists(sidecar) and progress is not None:
            progress.write(f"starting over ({output_path} has an interrupted run; --resume "
                           f"continues it)\n")
        y = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=out_shape)
        _write_json(sidecar, {"job": job, "done": 0})

    bar = _Progress(B, start, progress)
    t0 = time.perf_counter()
    done = start

    def read(b0: int) -> tuple[np.ndarray, np.ndarray | None]:
        b1 = min(b0 + batch_size, B)
        return (np.ascontiguousarray(x[b0:b1]),
                None if lengths is None else lengths[b0:b1])

    def checkpoint(y: np.memmap, done: int) -> None:
        y.flush()  # the rows counted as done are on disk before the count is
        _write_json(sidecar, {"job": job, "done": done})

    interrupted, saved_at = False, time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(read, start) if start < B else None
        try:
            while ahead is not None:
                xb, lb = ahead.result()
                b0 = done
                ahead = reader.submit(read, b0 + len(xb)) if b0 + len(xb) < B else None
                y[b0:b0 + len(xb)] = model.predict(xb, lengths=lb)
                done = b0 + len(xb)
                if time.perf_counter() - saved_at >= CHECKPOINT_SECONDS:
                    checkpoint(y, done)
                    saved_at = time.perf_counter()
                bar.update(done)
        except KeyboardInterrupt:
            interrupted = True
            if ahead is not None:
                ahead.cancel()
    checkpoint(y, done)
    del y
    seconds = time.perf_counter() - t0
    if interrupted:
        if progress is not None:
            progress.write(f"\ninterrupted after {done:,} of {B:,} sequences; run again with "
                           f"--resume to continue\n")
    else:
        bar.update(done, final=True)
        os.replace(partial, output_path)
        os.remove(sidecar)
    return RunStats(B, start, seconds, tuple(x.shape), out_shape, interrupted)
