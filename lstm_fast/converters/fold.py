"""Fold per-feature affine layers (inference-form batch normalisation) into their neighbours.

An :class:`~lstm_fast.spec.AffineSpec` with a linear activation, ``y = x * s + t``, is exact
to fold:

- forward into the next affine (``(x * s + t) * s2 + t2``) or into the input weights of
  the next recurrent or Dense layer:
  ``W (x * s + t) + b = (W * s) x + (W t + b)`` (for a GRU ``W t`` joins ``b_ih``, which sits
  outside ``r * (...)``, so this holds for both GRU variants);
- backward into a preceding Embedding table (``table * s + t``, row by row);
- backward into a preceding Dense layer with a linear activation:
  ``act((W x + b) * s + t) = act((s W) x + (s b + t))``. This one also takes an affine with an
  activation (e.g. batch norm then ReLU), which becomes the Dense layer's activation.

All are computed in float64 and rounded once. The engine runs the affine layers that fit
none of these (e.g. the last layer of a model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..spec import (
    CELL_KINDS,
    AffineSpec,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
)

__all__ = ["fold_affines"]


def _fold_into_cell(cell: CellSpec, s: np.ndarray, t: np.ndarray) -> CellSpec:
    w = cell.w_ih.astype(np.float64)
    extra = w @ t
    w_ih = (w * s[None, :]).astype(np.float32)
    if isinstance(cell, GRULayerSpec):
        b = extra if cell.b_ih is None else cell.b_ih.astype(np.float64) + extra
        return dataclasses.replace(cell, w_ih=w_ih, b_ih=b.astype(np.float32))
    b = extra if cell.bias is None else cell.bias.astype(np.float64) + extra
    return dataclasses.replace(cell, w_ih=w_ih, bias=b.astype(np.float32))


def _scale_shift(affine: AffineSpec) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64, 1 and 0 where the affine has none."""
    s = (np.ones(affine.size) if affine.scale is None
         else affine.scale.astype(np.float64))
    t = (np.zeros(affine.size) if affine.shift is None
         else affine.shift.astype(np.float64))
    return s, t


def _fold_forward(affine: AffineSpec, nxt: LayerSpec) -> LayerSpec | None:
    s, t = _scale_shift(affine)
    if isinstance(nxt, BidirectionalSpec):
        return dataclasses.replace(nxt, forward=_fold_into_cell(nxt.forward, s, t),
                                   backward=_fold_into_cell(nxt.backward, s, t))
    if isinstance(nxt, AffineSpec):                       # two affines in a row
        s2, t2 = _scale_shift(nxt)
        return dataclasses.replace(nxt, scale=s * s2, shift=t * s2 + t2)
    if isinstance(nxt, DenseSpec):
        w = nxt.weight.astype(np.float64)
        b = w @ t + (0.0 if nxt.bias is None else nxt.bias.astype(np.float64))
        return dataclasses.replace(nxt, weight=(w * s[None, :]).astype(np.float32),
                                   bias=b.astype(np.float32))
    if nxt.kind in CELL_KINDS:
        return _fold_into_cell(nxt, s, t)  # type: ignore[arg-type]
    return None


def _fold_backward(prev: LayerSpec, affine: AffineSpec) -> LayerSpec | None:
    if isinstance(prev, DenseSpec) and prev.activation == "linear":
        s, t = _scale_shift(affine)
        b = t if prev.bias is None else prev.bias.astype(np.float64) * s + t
        return dataclasses.replace(
            prev, weight=(prev.weight.astype(np.float64) * s[:, None]).astype(np.float32),
            bias=b.astype(np.float32), activation=affine.activation)
    if not isinstance(prev, EmbeddingSpec) or affine.activation != "linear":
        return None
    table = prev.weight.astype(np.float64)
    if affine.scale is not None:
        table = table * affine.scale.astype(np.float64)[None, :]
    if affine.shift is not None:
        table = table + affine.shift.astype(np.float64)[None, :]
    return dataclasses.replace(prev, weight=table.astype(np.float32))


def fold_affines(layers: Sequence[LayerSpec],
                 names: Sequence[str] | None = None) -> tuple[list[LayerSpec], list[str]]:
    """Fold every :class:`AffineSpec` that can be folded exactly (see the module docstring):
    a linear one forward into the next layer, else backward into the previous one.

    Parameters
    ----------
    layers : sequence of layer specs
        A model's chain.
    names : sequence of str, optional
        The source name of each layer, for the notes.

    Returns
    -------
    layers : list of layer specs
        The chain without the folded affine layers.
    notes : list of str
        One line per folded layer, e.g. ``"bn1 folded into the next layer (lstm)"``.
    """
    out: list[LayerSpec] = []
    out_names: list[str] = []
    notes: list[str] = []
    items = list(layers)
    labels = list(names) if names is not None else [f"layer {k}" for k in range(len(items))]
    k = 0
    while k < len(items):
        L, name = items[k], labels[k]
        if isinstance(L, AffineSpec):
            if k + 1 < len(items) and L.activation == "linear":
                folded = _fold_forward(L, items[k + 1])
                if folded is not None:
                    items[k + 1] = folded
                    notes.append(f"{name} folded into the next layer ({folded.kind} "
                                 f"{labels[k + 1]})")
                    k += 1
                    continue
            if out:
                folded = _fold_backward(out[-1], L)
                if folded is not None:
                    out[-1] = folded
                    notes.append(f"{name} folded into the previous layer ({folded.kind} "
                                 f"{out_names[-1]})")
                    k += 1
                    continue
        out.append(L)
        out_names.append(name)
        k += 1
    return out, notes
