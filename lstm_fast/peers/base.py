"""The interface every peer implements, and the helpers the framework modules share."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import check_lengths
from ..errors import FrameworkUnavailable, InputError
from ..spec import BidirectionalSpec, CellSpec, LayerSpec, ModelSpec

__all__ = ["FrameworkUnavailable", "Peer", "PeerStream", "Quantization"]


@dataclass(frozen=True)
class Quantization:
    """How a quantized peer variant stores its weight matrices.

    Attributes
    ----------
    dtype : {"int8", "fp16"}
        The storage type of the weight matrices (biases and state stay float32).
    per_row : bool
        int8: one scale per output row ("per-channel"); False: one scale per matrix.
    """

    dtype: str
    per_row: bool = False


class PeerStream:
    """Stateful inference in a peer framework: the state after each call starts the next.

    Create with :meth:`Peer.stream`. Streams start from the zero state.
    """

    batch: int

    def step(self, x_t: np.ndarray) -> np.ndarray:
        """Advance one step: ``x_t`` (B, I) floats or (B,) ids -> (B, O)."""
        raise NotImplementedError

    def run(self, chunk: np.ndarray) -> np.ndarray:
        """Advance T steps: ``chunk`` (B, T, I) or (B, T) ids -> (B, T, O), or (B, O) when a
        recurrent layer returns only its last step."""
        raise NotImplementedError


class Peer:
    """A :class:`ModelSpec` rebuilt in another framework. Create with :func:`build_peer`.

    Attributes
    ----------
    name : str
        ``"torch"``, ``"onnxruntime"`` or ``"keras"``.
    variant : str
        How the framework runs the model (one of ``variants``, e.g. torch's ``"no-mkldnn"``).
    version : str
        The framework's version.
    spec : ModelSpec
        The model this peer runs.
    threads : int
        Intra-op threads the framework was told to use.
    """

    name: str = ""
    version: str = ""
    #: The ways this framework can run a model at float32; the first is the default.
    variants: tuple[str, ...] = ("default",)
    #: The variants that run the model with the framework's own quantized weights (never the
    #: default, and not in ``variants``: their outputs differ from the float32 model's).
    quantized_variants: dict[str, Quantization] = {}

    def __init__(self, spec: ModelSpec, threads: int, variant: str | None = None) -> None:
        self.spec = spec
        self.threads = threads
        if variant is None:
            variant = self.variants[0]
        if variant not in self.variants and variant not in self.quantized_variants:
            raise ValueError(f"{self.name} has no variant {variant!r}; expected one of "
                             f"{', '.join((*self.variants, *self.quantized_variants))}")
        self.variant = variant
        #: The quantized weights this variant runs on; None for float32.
        self.quantization: Quantization | None = self.quantized_variants.get(variant)

    @property
    def weights_dtype(self) -> str:
        """Storage type of the weight matrices the framework runs: ``"fp32"``, or the
        quantized variant's (``"int8"``, ``"fp16"``)."""
        return "fp32" if self.quantization is None else self.quantization.dtype

    def __repr__(self) -> str:
        kinds = ", ".join(L.kind for L in self.spec.layers)
        return f"<{type(self).__name__} {self.label} {self.version} [{kinds}]>"

    @property
    def label(self) -> str:
        """``name``, or ``name[variant]`` for a variant other than the default."""
        return self.name if self.variant == self.variants[0] else f"{self.name}[{self.variant}]"

    def session(self) -> AbstractContextManager[Any]:
        """A context to make many calls in: the framework's per-call setup (e.g. torch's
        inference mode) is then entered once instead of at every call. Calls are correct
        without it."""
        return contextlib.nullcontext()

    def predict(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Run whole sequences, like :meth:`lstm_fast.Model.predict`.

        Parameters
        ----------
        x : ndarray, (B, T, I) floats or (B, T) integer ids
            Batch-first inputs.
        lengths : ndarray of int, (B,), optional
            Valid steps of each right-padded sequence.

        Returns
        -------
        ndarray, float32
            (B, T, O), or (B, O) when a recurrent layer returns only its last step.

        Raises
        ------
        FrameworkUnavailable
            When the framework cannot run this model with ``lengths``.
        """
        x = _as_input(self.spec, x)
        lens = None
        if lengths is not None:
            _check_lengths_supported(self.spec, self.name)
            lens = _as_lengths(lengths, x.shape[0], x.shape[1])
        y = self._predict(x, lens)
        if lens is not None and self.packs_lengths and _fill_after_lengths(self.spec):
            y = _forward_fill(y, lens)
        return y

    #: Lengths run as packed sequences (outputs 0 past each length), so Keras-semantics specs
    #: need their masked outputs filled in afterwards.
    packs_lengths = True

    def _predict(self, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def stream(self, batch: int) -> PeerStream:
        """A stateful stream of ``batch`` sequences starting from the zero state.

        Raises
        ------
        FrameworkUnavailable
            When the model reads its input backwards (Bidirectional, ``go_backwards``) or the
            framework cannot stream it.
        """
        raise NotImplementedError

    def _check_streamable(self, batch: int) -> int:
        if not self.spec.streamable:
            raise FrameworkUnavailable(
                "this model has a layer that reads its input backwards (Bidirectional or "
                "go_backwards), so it cannot stream")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        return int(batch)


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _as_input(spec: ModelSpec, x: Any, ndim_floats: int = 3) -> np.ndarray:
    """``x`` as contiguous int64 ids or float32 features (no copy when already so)."""
    if spec.takes_ids:
        arr = np.ascontiguousarray(x, dtype=np.int64)
        if arr.ndim != ndim_floats - 1:
            raise ValueError(f"expected ids with {ndim_floats - 1} dimensions, got shape "
                             f"{arr.shape}")
        return arr
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != ndim_floats or arr.shape[-1] != spec.input_size:
        want = "(B, T, I)" if ndim_floats == 3 else "(B, I)"
        raise ValueError(f"expected x of shape {want} with I = {spec.input_size}, got "
                         f"{arr.shape}")
    return arr


def _as_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    arr = check_lengths(lengths, batch)  # the checks Model.predict applies
    if batch and arr.max() > steps:
        raise InputError(f"lengths must be in [0, {steps}]")
    return arr.astype(np.int64)


def _last_recurrent(spec: ModelSpec) -> LayerSpec:
    return spec.recurrent_layers[-1]


def _fill_after_lengths(spec: ModelSpec) -> bool:
    """True when, under ``lengths``, Keras-semantics outputs differ from packed-sequence ones:
    the final output is a sequence and the last recurrent layer is a plain (not
    Bidirectional) one, whose masked steps repeat its last valid output."""
    return (spec.mask_semantics == "keras" and spec.returns_sequences
            and _last_recurrent(spec).kind != "bidirectional")


def _forward_fill(y: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Repeat ``y[b, lengths[b] - 1]`` over the steps ``t >= lengths[b]`` (Keras semantics);
    sequences of length 0 are left alone (Keras outputs 0 there, as packed sequences do)."""
    T = y.shape[1]
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    idx = np.where((t >= L) & (L > 0), L - 1, t)
    return np.take_along_axis(y, idx[:, :, None], axis=1)


def _check_lengths_supported(spec: ModelSpec, framework: str) -> None:
    if any(getattr(L, "go_backwards", False) for L in spec.layers):
        raise FrameworkUnavailable(
            f"{framework}: lengths with a go_backwards layer (which reads the padding first) "
            "are not expressible")


def _gate_blocks(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """Reorder the equal row blocks of ``a`` (axis 0) to ``order``."""
    blocks = np.split(np.asarray(a, dtype=np.float32), len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in order], axis=0))


def _cells_of(L: LayerSpec) -> tuple[CellSpec, ...]:
    if isinstance(L, BidirectionalSpec):
        return (L.forward, L.backward)
    return (L,)  # type: ignore[return-value]
