"""Each layer kind is described once (spec.py's Tensor/Option declarations); the model file,
the engine's layer dicts, the quantizer and bench --spec follow that description."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.format import spec_from_bytes, spec_to_bytes
from lstm_fast.model import _layer_dicts
from lstm_fast.quantize import WEIGHT_FIELDS, quantize_spec
from lstm_fast.spec import (
    CELL_KINDS,
    LAYER_KINDS,
    BidirectionalSpec,
    DenseSpec,
    LSTMLayerSpec,
    ModelSpec,
)


def _draw(rng: np.random.Generator) -> Any:
    def draw(bound: float | None, shape: tuple[int, ...]) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return draw


def _sizes(kind: str) -> dict[str, int]:
    cls = LAYER_KINDS[kind]
    if kind in CELL_KINDS:
        return {"gates": cls.gates, "input_size": 3, "hidden_size": 5,  # type: ignore[attr-defined]
                "output_size": 2 if kind == "lstm" else 5}
    return {"dense": {"input_size": 3, "output_size": 4},
            "embedding": {"vocab_size": 7, "output_size": 3}}.get(kind, {"size": 3})


def _layer(kind: str, rng: np.random.Generator) -> Any:
    cls = LAYER_KINDS[kind]
    options = {"size": 3} if "size" in {o.name for o in cls.OPTIONS} else {}
    return cls.random(_sizes(kind), _draw(rng), **options)


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_every_declared_tensor_has_its_shape_and_reaches_the_engine(kind: str) -> None:
    rng = np.random.default_rng(0)
    L = _layer(kind, rng)
    sizes = L.sizes()
    assert set(L.arrays()) == {t.name for t in L.TENSORS}
    for t in L.TENSORS:
        assert getattr(L, t.name).shape == t.shape_for(sizes)
    head = [L] if kind != "embedding" else [L, _layer("lstm", rng)]
    if kind not in CELL_KINDS and kind != "embedding":
        head.append(LSTMLayerSpec(rng.random((8, L.output_size)), rng.random((8, 2))))
    spec = ModelSpec(tuple(head))
    d = _layer_dicts(spec)[0]
    for t in L.TENSORS:
        assert d[t.bridge] is getattr(L, t.name)
    for opt in L.OPTIONS:
        if opt.bridge == "value":
            assert d[opt.name] == getattr(L, opt.name)
    again = spec_from_bytes(spec_to_bytes(spec)).layers[0]
    assert type(again) is type(L) and again.options() == L.options()
    for name, arr in L.arrays().items():
        np.testing.assert_array_equal(again.arrays()[name], arr)
    assert lf.Model(spec).output_size == spec.output_size


def test_quantized_tensors_are_the_declared_ones() -> None:
    rng = np.random.default_rng(1)
    assert WEIGHT_FIELDS == {k: tuple(t.name for t in c.TENSORS if t.quantizable)
                             for k, c in LAYER_KINDS.items()
                             if any(t.quantizable for t in c.TENSORS)}
    spec = ModelSpec((_layer("lstm", rng), DenseSpec(rng.random((3, 2)), rng.random(3))))
    q = quantize_spec(spec, "bf16")
    for before, after in zip(spec.layers, q.layers, strict=True):
        for t in before.TENSORS:
            a, b = getattr(before, t.name), getattr(after, t.name)
            assert (a is b) == (not t.quantizable)


def test_return_last_keeps_its_older_spelling() -> None:
    rng = np.random.default_rng(2)
    w_ih, w_hh = rng.random((8, 3)), rng.random((8, 2))
    old = LSTMLayerSpec(w_ih, w_hh, return_sequences=False)
    assert old.return_last and not old.return_sequences
    assert old.options() == LSTMLayerSpec(w_ih, w_hh, return_last=True).options()
    bi = BidirectionalSpec(old, old)
    assert bi.return_last and not bi.return_sequences
    with pytest.raises(TypeError):
        LSTMLayerSpec(w_ih, w_hh, return_last=True, return_sequences=False)
