"""What is timed: a workload (the inputs of each call, what a call computes) and the engines
that run it (lstm_fast and its peers), each checked against lstm_fast before it is timed.

Quantized engines (lstm_fast with narrow weights, a peer's quantized variant such as
``torch[int8]``) are not held to the tolerance: their max abs difference from the float32
model's outputs is measured (over a stream of at least :data:`ERROR_STEPS` steps, the timed
inputs) and reported next to their latency.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FrameworkUnavailable
from ..peers import PEER_NAMES, peer_class, split_variant
from ..sample_input import random_input
from .timing import Contender
from .traffic import peer_step_bytes

__all__ = ["ERROR_STEPS", "MODES", "TOLERANCE", "Engine", "Workload", "build_peers",
           "contender", "first_line", "flop_counts", "is_quantized", "judge", "make_workload",
           "max_diff", "outputs", "parse_engine_names", "timed_call"]

#: Max abs difference a peer's output may have from lstm_fast's before it is timed.
TOLERANCE = 1e-4
MODES = ("step", "chunk", "sequence")
#: Frames cycled through in step mode, chunks in chunk mode.
STEP_POOL = 64
CHUNK_POOL = 4
#: Outputs compared with each peer: frames in step mode, chunks in chunk mode.
VERIFY_CALLS = {"step": 8, "chunk": 2, "sequence": 1}
#: Steps of the stream a quantized engine's error is measured over (step and chunk modes).
ERROR_STEPS = 500


@dataclass
class Workload:
    """What one call gets: the inputs cycled through, and what a call computes.

    Attributes
    ----------
    mode : {"step", "chunk", "sequence"}
        ``stream.step`` on one frame, ``stream.run`` on a chunk (state carried), or
        ``predict`` on whole sequences.
    batch, frames_per_call : int
        Rows per call; frames per row and call.
    inputs : list of ndarray
        Cycled through call by call.
    lengths : ndarray or None
        Valid steps per row (sequence mode).
    flop_per_call : int
        See :func:`flop_counts`.
    verify_calls : int
        Calls compared between engines (from the zero state).
    """

    mode: str
    batch: int
    frames_per_call: int
    inputs: list[np.ndarray]
    lengths: np.ndarray | None
    flop_per_call: int
    verify_calls: int = 1


def flop_counts(spec: Any) -> tuple[int, int]:
    """FLOP (2 x multiply-adds of the weight matrices) of one sequence row.

    Returns
    -------
    per_step : int
        Per time step: every layer up to and including the first one that returns only its
        last step.
    once : int
        Once per sequence (per call in step and chunk modes): the layers after it.
    """
    per_step = once = 0
    collapsed = False
    for L in spec.layers:
        if L.kind in ("embedding", "masking"):
            macs = 0
        elif L.kind == "dense":
            macs = int(L.weight.size)
        else:
            cells = (L.forward, L.backward) if L.kind == "bidirectional" else (L,)
            macs = sum(int(a.size) for c in cells for k, a in c.arrays().items()
                       if k in ("w_ih", "w_hh", "w_hr"))
        if collapsed:
            once += 2 * macs
        else:
            per_step += 2 * macs
        if L.kind in ("lstm", "gru", "rnn", "bidirectional") and L.return_last:
            collapsed = True
    return per_step, once


def make_workload(spec: Any, mode: str, batch: int, frames: int, *,
                  lengths: np.ndarray | None = None, seed: int = 0,
                  x: np.ndarray | None = None, accuracy: bool = False) -> Workload:
    """The workload of ``mode`` on ``spec``.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    mode : {"step", "chunk", "sequence"}
        How it is called.
    batch : int
        Rows per call.
    frames : int
        Steps per sequence (sequence mode) or per chunk (chunk mode); 1 in step mode.
    lengths : ndarray, optional
        Sequence mode: valid steps per row (the input is zeroed past them).
    seed : int
        Seed of the random input.
    x : ndarray, optional
        The input instead of a random one: (B, T, I) or (B, T) ids; step and chunk modes cut it
        into their frames / chunks.
    accuracy : bool
        Step and chunk modes: a random input of at least :data:`ERROR_STEPS` steps, all of
        them compared between engines (to measure a quantized engine's error on a stream).
    """
    per_step, once = flop_counts(spec)
    if mode == "sequence":
        x = random_input(spec, batch, frames, seed) if x is None else x
        valid = np.full(batch, frames) if lengths is None else lengths
        if lengths is not None:
            for b, n in enumerate(lengths):
                x[b, n:] = 0
        flop = int(per_step * valid.sum() + once * batch)
        return Workload("sequence", batch, frames, [x], lengths, flop, VERIFY_CALLS[mode])
    if lengths is not None:
        raise ValueError("--lengths applies to --mode sequence")
    T = 1 if mode == "step" else frames
    if x is None:
        pool = STEP_POOL if mode == "step" else CHUNK_POOL
        if accuracy:
            pool = max(pool, -(-ERROR_STEPS // T))
        x = random_input(spec, batch, T * pool, seed)
    pool = x.shape[1] // T
    if mode == "step":
        inputs = [np.ascontiguousarray(x[:, t]) for t in range(pool)]
    else:
        inputs = [np.ascontiguousarray(x[:, k * T:(k + 1) * T]) for k in range(pool)]
    return Workload(mode, batch, T, inputs, None, int((per_step * T + once) * batch),
                    pool if accuracy else min(VERIFY_CALLS[mode], pool))


@dataclass
class Engine:
    """One engine in the bench: lstm_fast or a peer framework (or a variant of one)."""

    name: str
    version: str = ""
    status: str = "ok"  # ok | skipped | mismatch | failed
    reason: str | None = None
    #: Max abs difference of its outputs from the float32 lstm_fast model's (the reference).
    max_abs_diff: float | None = None
    runner: Any = None  # has predict(x, lengths=) and stream(batch)
    contender: Contender | None = None  # set when it is timed
    #: Storage type of the weight matrices it runs ("fp32", "fp16", "bf16", "int8").
    weights: str = "fp32"
    #: Bytes of weights one step reads (:mod:`.traffic`).
    bytes_per_step: int | None = None
    #: The child process it is built and timed in (:mod:`.isolated`, threads > 1), or None.
    process: Any = None

    @property
    def quantized(self) -> bool:
        """Runs narrow weights: its error is reported, not checked against the tolerance."""
        return self.weights != "fp32"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}".strip()

    @property
    def latencies(self) -> list[float]:
        """Recorded times in ns (per call, or per turn's mean)."""
        return [] if self.contender is None else self.contender.times_ns


def outputs(runner: Any, wl: Workload) -> list[np.ndarray]:
    """The outputs compared between engines: a few steps/chunks from zero state, or one
    predict."""
    if wl.mode == "sequence":
        return [np.asarray(runner.predict(wl.inputs[0], lengths=wl.lengths))]
    s = runner.stream(wl.batch)
    fn = s.step if wl.mode == "step" else s.run
    return [np.asarray(fn(x)) for x in wl.inputs[:wl.verify_calls]]


def timed_call(runner: Any, wl: Workload) -> Callable[[Any], Any]:
    """The call timed: ``predict`` with the workload's lengths, or a fresh stream's
    ``step``/``run``."""
    if wl.mode == "sequence":
        lengths = wl.lengths
        return lambda x: runner.predict(x, lengths=lengths)
    s = runner.stream(wl.batch)
    return s.step if wl.mode == "step" else s.run


def contender(e: Engine, wl: Workload) -> Contender:
    """The engine as a timing :class:`Contender` (in its peer's session, if it has one; in its
    child process, if it has one)."""
    if e.process is not None:
        return e.process.contender(e.name, wl)  # type: ignore[no-any-return]
    session = getattr(e.runner, "session", None)
    c = Contender(e.name, timed_call(e.runner, wl), wl.inputs)
    if callable(session):
        c.session = session
    return c


def load_peers() -> tuple[Any, str | None]:
    try:
        return importlib.import_module("lstm_fast.peers"), None
    except ImportError as e:
        return None, f"lstm_fast.peers cannot be imported ({e})"


def parse_engine_names(text: str | None) -> list[str]:
    """``--compare``'s comma list as peer names (``"ort"`` -> ``"onnxruntime"``; a variant in
    brackets kept: ``"torch[no-mkldnn]"``); ``lstm_fast`` itself and repeats dropped."""
    if not text:
        return []
    names: list[str] = []
    for raw in text.split(","):
        key, variant = split_variant(raw)
        if not key or key == "lstm_fast":
            continue
        if key not in PEER_NAMES:
            raise ValueError(f"--compare: unknown engine {raw.strip()!r}; expected "
                             f"{', '.join(PEER_NAMES)}")
        name = key if variant is None else f"{key}[{variant}]"
        if name not in names:
            names.append(name)
    return names


def is_quantized(name: str) -> bool:
    """Whether the peer name (``"torch[int8]"``) asks for one of its quantized variants
    (False when :mod:`lstm_fast.peers` cannot be imported: the peer is then skipped)."""
    key, variant = split_variant(name)
    if variant is None:
        return False
    try:
        return variant in peer_class(key).quantized_variants
    except ImportError:
        return False


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def build_peers(names: list[str], spec: Any, wl: Workload, threads: int,
                reference: list[np.ndarray], tolerance: float = TOLERANCE) -> list[Engine]:
    """Build, verify and prepare each peer; those that cannot run are marked, not raised.

    ``reference``: the float32 model's outputs. A float32 peer must match them within
    ``tolerance``; a quantized variant's difference is recorded (``max_abs_diff``) and only a
    non-finite one stops it."""
    if not names:
        return []
    peers, why = load_peers()
    out = []
    for name in names:
        e = Engine(name)
        out.append(e)
        if peers is None:
            e.status, e.reason = "skipped", why
            continue
        try:
            e.runner = peers.build_peer(name, spec, threads=threads)
            e.version = str(getattr(e.runner, "version", "") or "")
            quantization = getattr(e.runner, "quantization", None)
            e.weights = "fp32" if quantization is None else quantization.dtype
            e.bytes_per_step = peer_step_bytes(spec, quantization)
            got = outputs(e.runner, wl)
        except FrameworkUnavailable as err:
            e.status, e.reason = "skipped", first_line(err)
            continue
        except Exception as err:  # noqa: BLE001 - a broken peer is reported, not fatal
            e.status, e.reason = "failed", f"{type(err).__name__}: {first_line(err)}"
            continue
        if not judge(e, reference, got, tolerance):
            continue
        try:
            e.contender = contender(e, wl)
        except FrameworkUnavailable as err:
            e.status, e.reason = "skipped", first_line(err)
    return out


def judge(e: Engine, reference: list[np.ndarray], got: list[np.ndarray],
          tolerance: float = TOLERANCE) -> bool:
    """Whether the outputs ``got`` of ``e`` let it be timed: a float32 engine's must equal
    ``reference`` within ``tolerance``, a quantized one's be finite. Records its
    ``max_abs_diff``; else marks it ``"mismatch"`` with the reason."""
    diff = max_diff(reference, got)
    if diff is None:
        e.status = "mismatch"
        e.reason = (f"output shapes differ: lstm_fast {reference[0].shape}, {e.name} "
                    f"{got[0].shape if got else None}")
        return False
    e.max_abs_diff = diff
    if e.quantized and not np.isfinite(diff):
        e.status, e.reason = "mismatch", "quantized output is not finite; not timed"
        return False
    if not e.quantized and not diff <= tolerance:
        e.status = "mismatch"
        e.reason = f"output differs from lstm_fast by {diff:.3g} (> {tolerance:g}); not timed"
        return False
    return True


def max_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> float | None:
    """Max abs difference over all compared outputs; None when the shapes differ."""
    if len(ref) != len(got) or any(a.shape != b.shape for a, b in zip(ref, got, strict=False)):
        return None
    diffs = [float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))
             for a, b in zip(ref, got, strict=True)]
    return float(np.nan_to_num(max(diffs), nan=np.inf))
