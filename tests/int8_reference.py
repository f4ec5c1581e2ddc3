"""The int8 oracle: a numpy simulation of the engine's exact int8 cell math (issue 13).

The engine's int8 cells (``csrc/kernel_int8.h``) quantize x and h per step and per batch row
with a dynamic symmetric scale ``s = max|v| / 127``, ``q = round(v * (127 / max|v|))`` in
[-127, 127], take exact int32 dot products with the per-row int8 weight codes, and dequantize
``sum * (w_scale * s)`` before float32 gate math. This module runs the same integers (with
float64 gate math, the activations cast to float32 where the engine quantizes them) through
:func:`tests.reference.spec_forward`'s chain, masks and directions, by swapping its cell
step. Use it on a spec that ``Model.quantize("int8")`` produced (its weights are on the grid).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from lstm_fast.quantize import int8_codes
from tests import reference
from tests.reference import activation


def quantize_rows(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) floats -> int64 codes and float64 scales (B,), as the engine's i8_quantize."""
    v = np.asarray(v, np.float32)
    m = np.abs(v).max(axis=1)
    zero = ~(m >= np.float32(1e-30))
    mm = np.where(zero, np.float32(1), m).astype(np.float32)
    inv = (np.float32(127) / mm).astype(np.float32)
    q = np.clip(np.rint((v * inv[:, None]).astype(np.float32)), -127, 127)
    q[zero] = 0
    s = np.where(zero, np.float32(0), (mm / np.float32(127)).astype(np.float32))
    return q.astype(np.int64), s.astype(np.float64)


def _dot(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The int8 product v @ w.T: activations and weights quantized, exact integer sums."""
    q, s = quantize_rows(v)
    codes, ws = int8_codes(np.asarray(w, np.float32))
    acc = q @ codes.astype(np.int64).T
    return acc.astype(np.float64) * (ws.astype(np.float64)[None, :] * s[:, None])


def _f64(a: Any) -> Any:
    return None if a is None else np.asarray(a, np.float64)


def int8_cell_step(L: Any, x: np.ndarray, h: np.ndarray, c: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """One step of an int8 cell (the replacement of ``reference._cell_step``)."""
    x32, h32 = np.asarray(x, np.float32), np.asarray(h, np.float32)
    if L.kind == "lstm":
        H = L.hidden_size
        z = _dot(x32, L.w_ih) + _dot(h32, L.w_hh)
        if L.bias is not None:
            z = z + _f64(L.bias)
        ract, act = L.recurrent_activation, L.activation
        i, f = activation(ract, z[:, :H]), activation(ract, z[:, H:2 * H])
        g, o = activation(act, z[:, 2 * H:3 * H]), activation(ract, z[:, 3 * H:])
        c = f * c + i * g
        hn = o * activation(act, c)
        if L.w_hr is not None:
            hn = np.asarray(hn, np.float32).astype(np.float64) @ _f64(L.w_hr).T
        return np.asarray(hn, np.float32).astype(np.float64), c
    if L.kind == "gru":
        H = L.hidden_size
        w_hh = np.asarray(L.w_hh, np.float32)
        b_ih = np.zeros(3 * H) if L.b_ih is None else _f64(L.b_ih)
        b_hh = np.zeros(3 * H) if L.b_hh is None else _f64(L.b_hh)
        gx = _dot(x32, L.w_ih) + b_ih
        gh = _dot(h32, w_hh[:2 * H]) + b_hh[:2 * H]
        r = activation(L.recurrent_activation, gx[:, :H] + gh[:, :H])
        z = activation(L.recurrent_activation, gx[:, H:2 * H] + gh[:, H:])
        if L.reset_after:
            hn = _dot(h32, w_hh[2 * H:]) + b_hh[2 * H:]
            n = activation(L.activation, gx[:, 2 * H:] + r * hn)
        else:
            rh = np.asarray(r * h32, np.float32)
            n = activation(L.activation, gx[:, 2 * H:] + _dot(rh, w_hh[2 * H:]) + b_hh[2 * H:])
        return np.asarray(z * h32 + (1.0 - z) * n, np.float32).astype(np.float64), None
    if L.kind == "rnn":
        z = _dot(x32, L.w_ih) + _dot(h32, L.w_hh)
        if L.bias is not None:
            z = z + _f64(L.bias)
        return np.asarray(activation(L.activation, z), np.float32).astype(np.float64), None
    raise ValueError(f"unknown cell kind {L.kind!r}")


@contextlib.contextmanager
def _int8_cells() -> Iterator[None]:
    saved = reference._cell_step
    reference._cell_step = int8_cell_step
    try:
        yield
    finally:
        reference._cell_step = saved


def int8_forward(spec: Any, x: np.ndarray, **kw: Any) -> tuple[np.ndarray, list]:
    """``reference.spec_forward`` with every cell stepping on the int8 math."""
    with _int8_cells():
        return reference.spec_forward(spec, x, **kw)
