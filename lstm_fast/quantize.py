"""Narrow weights: fp16, bf16, int8 (and their float32 values) for
:meth:`lstm_fast.Model.quantize`.

A quantized :class:`~lstm_fast.spec.ModelSpec` keeps float32 arrays whose values lie exactly
on the narrow type's grid (``weights_dtype`` says which); the engine stores them narrow in its
packed step layout (rounding an on-grid value is exact, so Python and C hold the same numbers)
and the model file stores them narrow (:func:`narrow` / :func:`widen`).

int8: one symmetric float32 scale per output row (row = the first axis: a gate row of
``w_ih`` / ``w_hh``, an output of ``w_hr`` or Dense, a token of an Embedding),
``s = max|row| / 127``, codes ``round(w / s)`` in [-127, 127]; the float32 values are
``code * s`` (:func:`int8_codes`, the same arithmetic as the engine's ``csrc/pack.c``).

Quantized: every weight matrix, i.e. every tensor a layer kind declares ``quantizable``
(:class:`lstm_fast.spec.Tensor`: ``w_ih``, ``w_hh`` and ``w_hr`` of LSTM, GRU and RNN cells of
both directions, Dense ``weight``, Embedding ``weight``). Biases, Affine scales/shifts, the
state and all gate math stay float32.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .errors import WeightsError
from .spec import LAYER_KINDS, WEIGHT_DTYPES, BidirectionalSpec, ModelSpec

#: Per layer kind, its weight-matrix fields (the ones that are quantized), read from the
#: kinds' declarations.
WEIGHT_FIELDS = {kind: fields for kind, cls in LAYER_KINDS.items()
                 if (fields := tuple(t.name for t in cls.TENSORS if t.quantizable))}
_ITEMSIZE = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
_FP16_MAX = 65504.0


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounded to nearest even (as the engine does)."""
    x = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)


def int8_codes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row int8 codes and scales of a 2-D weight array (see the module docstring).

    Returns
    -------
    (codes, scales)
        ``codes`` int8 of ``a``'s shape, ``scales`` float32 of shape ``(rows,)``.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    a2 = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
    m = np.abs(a2).max(axis=1, initial=np.float32(0)).astype(np.float32)
    s = (m / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.rint(a2 / np.where(s > 0, s, np.float32(1))[:, None]).astype(np.float32)
    t = np.where(s[:, None] > 0, t, 0)
    return np.clip(t, -127, 127).astype(np.int8).reshape(a.shape), s


def int8_values(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """float32 values ``code * scale`` of per-row int8 codes."""
    c = np.asarray(codes, dtype=np.int8)
    s = np.asarray(scales, dtype=np.float32).reshape((-1,) + (1,) * (c.ndim - 1))
    with np.errstate(over="ignore"):  # a file's huge scale: Inf, refused by the spec's check
        return (c.astype(np.float32) * s).astype(np.float32)


def narrow(a: np.ndarray, dtype: str) -> np.ndarray:
    """The stored form of a weight array: float16, or uint16 bf16 bit patterns."""
    if dtype == "fp16":
        if np.abs(a).max(initial=0.0) > _FP16_MAX:
            raise WeightsError(f"a weight of magnitude {np.abs(a).max():g} does not fit in fp16 "
                               f"(max {_FP16_MAX:g}); use bf16")
        return np.ascontiguousarray(a, dtype=np.float32).astype(np.float16)
    if dtype == "bf16":
        return _bf16_bits(a)
    raise ValueError(f"no narrow form for {dtype!r}")


def widen(q: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of a stored narrow array (exact)."""
    if dtype == "fp16":
        return np.asarray(q, dtype=np.float32)
    if dtype == "bf16":
        return (np.asarray(q, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"no narrow form for {dtype!r}")


def round_weights(a: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values of ``a`` rounded to ``dtype``'s grid."""
    if dtype == "fp32":
        return np.asarray(a, dtype=np.float32)
    if dtype == "int8":
        return int8_values(*int8_codes(a))
    return widen(narrow(a, dtype), dtype)


def _map_weights(L: Any, fn: Any) -> Any:
    if isinstance(L, BidirectionalSpec):
        return dataclasses.replace(L, forward=_map_weights(L.forward, fn),
                                   backward=_map_weights(L.backward, fn))
    fields = WEIGHT_FIELDS.get(L.kind, ())
    changes = {f: fn(getattr(L, f)) for f in fields if getattr(L, f) is not None}
    return dataclasses.replace(L, **changes) if changes else L


def quantize_spec(spec: ModelSpec, dtype: str) -> ModelSpec:
    """A copy of ``spec`` with every weight matrix rounded to ``dtype`` (see the module
    docstring); ``quant_error`` is cleared (the caller measures it)."""
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {', '.join(WEIGHT_DTYPES)}, got "
                         f"{dtype!r}")
    layers = tuple(_map_weights(L, lambda a: round_weights(a, dtype)) for L in spec.layers)
    return dataclasses.replace(spec, layers=layers, weights_dtype=dtype, quant_error=None)


def weight_bytes(spec: ModelSpec) -> int:
    """Bytes of the model's weight matrices in their storage type (int8: with the float32
    scale of each row)."""
    n = rows = 0

    def count(a: np.ndarray) -> np.ndarray:
        nonlocal n, rows
        n += a.size
        rows += a.shape[0] if a.ndim else 1
        return a

    for L in spec.layers:
        _map_weights(L, count)
    return n * _ITEMSIZE[spec.weights_dtype] + (4 * rows if spec.weights_dtype == "int8" else 0)


def random_input(spec: ModelSpec, steps: int, seed: int = 0) -> np.ndarray:
    """A (1, steps, I) standard-normal input, or (1, steps) random ids for an id model."""
    rng = np.random.default_rng(seed)
    if spec.takes_ids:
        return rng.integers(0, spec.layers[0].vocab_size, (1, steps)).astype(np.int32)
    return rng.standard_normal((1, steps, spec.input_size)).astype(np.float32)


def measure_error(reference: Any, quantized: Any, steps: int = 500, seed: int = 0) -> float:
    """Max abs difference of two models' outputs over a ``steps``-step random input."""
    x = random_input(reference.spec, steps, seed)
    return float(np.abs(np.asarray(reference.predict(x), np.float64)
                        - quantized.predict(x)).max())


__all__ = ["WEIGHT_DTYPES", "WEIGHT_FIELDS", "narrow", "widen", "round_weights",
           "int8_codes", "int8_values",
           "quantize_spec", "weight_bytes", "measure_error", "random_input"]
