"""fold_affines: a folded chain computes what the chain with its affine layers computes (the
float64 oracle runs both), and the affines that cannot be folded stay."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lstm_fast.converters.fold import fold_affines
from lstm_fast.spec import (
    AffineSpec,
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    batchnorm_affine,
)
from tests.reference import spec_forward

F, H = 4, 5


def _u(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.uniform(-0.7, 0.7, size=shape)


def _bn(rng: np.random.Generator, n: int) -> AffineSpec:
    return batchnorm_affine(1 + _u(rng, n), _u(rng, n), _u(rng, n),
                            rng.uniform(0.2, 2.0, n), 1e-3)


def _lstm(rng: np.random.Generator, n_in: int, **kw: object) -> LSTMLayerSpec:
    return LSTMLayerSpec(w_ih=_u(rng, 4 * H, n_in), w_hh=_u(rng, 4 * H, H), bias=_u(rng, 4 * H),
                         **kw)


def _gru(rng: np.random.Generator, n_in: int, reset_after: bool) -> GRULayerSpec:
    return GRULayerSpec(w_ih=_u(rng, 3 * H, n_in), w_hh=_u(rng, 3 * H, H),
                        b_ih=_u(rng, 3 * H), b_hh=_u(rng, 3 * H) if reset_after else None,
                        reset_after=reset_after)


def _dense(rng: np.random.Generator, n_in: int, n_out: int, act: str = "linear") -> DenseSpec:
    return DenseSpec(weight=_u(rng, n_out, n_in), bias=_u(rng, n_out), activation=act)


Chain = Callable[[np.random.Generator], list[LayerSpec]]
#: name -> (chain builder, kinds after folding)
CHAINS: dict[str, tuple[Chain, list[str]]] = {
    "into_lstm": (lambda r: [_bn(r, F), _lstm(r, F)], ["lstm"]),
    "into_gru_reset_after": (lambda r: [_bn(r, F), _gru(r, F, True)], ["gru"]),
    "into_gru_reset_before": (lambda r: [_bn(r, F), _gru(r, F, False)], ["gru"]),
    "into_bidirectional": (lambda r: [_lstm(r, F), _bn(r, H), BidirectionalSpec(
        forward=_gru(r, H, True), backward=_gru(r, H, True), merge_mode="concat")],
        ["lstm", "bidirectional"]),
    "into_dense": (lambda r: [_lstm(r, F), _bn(r, H), _dense(r, H, 3, "softmax")],
                   ["lstm", "dense"]),
    "into_embedding": (lambda r: [EmbeddingSpec(weight=_u(r, 9, F)), _bn(r, F), _lstm(r, F)],
                       ["embedding", "lstm"]),
    "two_in_a_row": (lambda r: [_bn(r, F), _bn(r, F), _lstm(r, F)], ["lstm"]),
    "back_into_linear_dense_with_relu": (lambda r: [
        _dense(r, F, 6), AffineSpec(size=6, scale=1 + _u(r, 6), shift=_u(r, 6),
                                    activation="relu"), _lstm(r, 6)], ["dense", "lstm"]),
    "bare_activation_after_dense": (lambda r: [
        _dense(r, F, 6), AffineSpec(size=6, activation="tanh"), _lstm(r, 6)],
        ["dense", "lstm"]),
    "last_layer_stays": (lambda r: [_lstm(r, F), _bn(r, H)], ["lstm", "affine"]),
    "activation_after_lstm_stays": (lambda r: [
        _lstm(r, F), AffineSpec(size=H, scale=_u(r, H), activation="relu"), _dense(r, H, 2)],
        ["lstm", "affine", "dense"]),
    "not_into_nonlinear_dense": (lambda r: [
        _lstm(r, F), _dense(r, H, 3, "tanh"), _bn(r, 3)], ["lstm", "dense", "affine"]),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_fold_is_exact(name: str) -> None:
    build, kinds = CHAINS[name]
    rng = np.random.default_rng(len(name))
    layers = build(rng)
    before = ModelSpec(layers=tuple(layers), mask_semantics="keras")
    folded, notes = fold_affines(layers, [f"L{k}" for k in range(len(layers))])
    after = ModelSpec(layers=tuple(folded), mask_semantics="keras")
    assert [L.kind for L in folded] == kinds
    assert len(notes) == len(layers) - len(folded)
    x = (rng.integers(1, 9, size=(3, 7)) if before.takes_ids
         else rng.normal(size=(3, 7, F)) * 2)
    lengths = np.array([7, 4, 6])
    for kw in ({}, {"lengths": lengths}):
        y0, _ = spec_forward(before, x, **kw)
        y1, _ = spec_forward(after, x, **kw)
        np.testing.assert_allclose(y1, y0, atol=1e-5, rtol=0)


def test_notes_name_the_layers() -> None:
    rng = np.random.default_rng(0)
    layers = [_bn(rng, F), _lstm(rng, F), _bn(rng, H)]
    _, notes = fold_affines(layers, ["bn_in", "rnn", "bn_out"])
    assert notes == ["bn_in folded into the next layer (lstm rnn)"]
