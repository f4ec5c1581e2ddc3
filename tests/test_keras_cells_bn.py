"""Keras ``RNN(cell)``, ``RNN(StackedRNNCells)``, ``BatchNormalization``, ``Activation`` and
``UnitNormalization`` against Keras 3's own outputs, from ``.keras``, ``.h5`` and live models.

Models whose batch normalisations all fold into a neighbour are checked with the folded
layers; the others keep an ``affine`` / ``normalize`` layer that the C engine runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("h5py")
from keras import layers  # noqa: E402

import lstm_fast  # noqa: E402
from lstm_fast.converters.keras import (  # noqa: E402
    spec_from_keras,
    spec_from_keras_file,
)
from lstm_fast.errors import UnsupportedModelError  # noqa: E402
from lstm_fast.frameworks import from_keras  # noqa: E402
from lstm_fast.spec import ModelSpec  # noqa: E402
from tests.reference import spec_forward  # noqa: E402

TOL = 1e-5
Builder = Callable[[np.random.Generator], tuple[Any, np.ndarray]]


def _set_weights(model: Any, seed: int, scale: float = 0.5) -> None:
    """Seeded uniform weights; batch-norm variances in [0.3, 2) so that they are valid."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        a = rng.uniform(-scale, scale, size=tuple(w.shape))
        if w.path.endswith("moving_variance"):
            a = rng.uniform(0.3, 2.0, size=tuple(w.shape))
        values.append(a.astype(np.float32))
    model.set_weights(values)


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)


def _padded_floats(rng: np.random.Generator, B: int, T: int, F: int) -> np.ndarray:
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    x[0, T - 3:] = 0.0                         # right padding
    x[1, :2] = 0.0                             # left padding
    x[2, T // 2] = 0.0                         # a hole
    return x


def _padded_ids(rng: np.random.Generator, B: int, T: int, vocab: int) -> np.ndarray:
    x = rng.integers(1, vocab, size=(B, T)).astype(np.int32)
    x[0, T - 3:] = 0
    x[1, :2] = 0
    x[2, T // 2] = 0
    return x


# --- RNN(cell) builders ------------------------------------------------------------------

def rnn_single_cells(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """RNN(LSTMCell, hard_sigmoid) -> RNN(GRUCell, reset before) -> RNN(SimpleRNNCell, relu)."""
    m = keras.Sequential([
        keras.Input((None, 3)),
        layers.RNN(layers.LSTMCell(6, recurrent_activation="hard_sigmoid"),
                   return_sequences=True),
        layers.RNN(layers.GRUCell(4, reset_after=False), return_sequences=True),
        layers.RNN(layers.SimpleRNNCell(3, activation="relu")),
        layers.Dense(2)])
    return m, rng.normal(size=(3, 9, 3)).astype(np.float32) * 2


def rnn_stacked_cells(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """StackedRNNCells of four cells, two of one class (group names lstm_cell, lstm_cell_1)."""
    cells = [layers.LSTMCell(5), layers.GRUCell(4), layers.LSTMCell(3, use_bias=False),
             layers.SimpleRNNCell(2, activation="tanh")]
    m = keras.Sequential([keras.Input((None, 3)),
                          layers.RNN(layers.StackedRNNCells(cells), return_sequences=True),
                          layers.Dense(2)])
    return m, rng.normal(size=(2, 8, 3)).astype(np.float32)


def rnn_stacked_masked_last(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Masking -> RNN(StackedRNNCells), last valid step -> Dense(softmax)."""
    inp = keras.Input((None, 3))
    h = layers.Masking()(inp)
    h = layers.RNN(layers.StackedRNNCells([layers.GRUCell(5), layers.LSTMCell(4)]))(h)
    y = layers.Dense(3, activation="softmax")(h)
    return keras.Model(inp, y), _padded_floats(rng, 3, 9, 3)


def rnn_stacked_backwards(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """go_backwards on a stack: the first cell reads the steps backwards, outputs in processing
    order."""
    m = keras.Sequential([
        keras.Input((None, 3)),
        layers.RNN(layers.StackedRNNCells([layers.GRUCell(5, reset_after=False),
                                           layers.LSTMCell(4)]),
                   go_backwards=True, return_sequences=True),
        layers.Dense(2)])
    return m, rng.normal(size=(2, 7, 3)).astype(np.float32)


def embedding_rnn_cell(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None,), dtype="int32"),
                          layers.Embedding(12, 5, mask_zero=True),
                          layers.RNN(layers.LSTMCell(6), return_sequences=True),
                          layers.TimeDistributed(layers.Dense(4, activation="softmax"))])
    return m, _padded_ids(rng, 3, 10, 12)


def bidirectional_rnn_cells(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Masking -> Bidirectional(RNN(GRUCell), sum) -> Bidirectional(RNN(LSTMCell)), last."""
    inp = keras.Input((None, 3))
    h = layers.Masking()(inp)
    h = layers.Bidirectional(layers.RNN(layers.GRUCell(4), return_sequences=True),
                             merge_mode="sum")(h)
    h = layers.Bidirectional(layers.RNN(layers.LSTMCell(3)))(h)
    y = layers.Dense(2)(h)
    return keras.Model(inp, y), _padded_floats(rng, 3, 9, 3)


def rnn_return_state_unused(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """return_state=True on RNN wrappers whose states are not used."""
    inp = keras.Input((None, 3))
    out, _h, _c = layers.RNN(layers.LSTMCell(4), return_sequences=True,
                             return_state=True)(inp)
    out, *_states = layers.RNN(layers.StackedRNNCells([layers.GRUCell(3),
                                                       layers.LSTMCell(2)]),
                               return_sequences=True, return_state=True)(out)
    return keras.Model(inp, layers.Dense(2)(out)), rng.normal(size=(2, 6, 3)).astype(
        np.float32)


# --- BatchNormalization builders (every one folds) ---------------------------------------

def bn_between_bidirectional(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Shakkala-like: Embedding -> BiLSTM -> BN -> BiLSTM -> BN -> Dense(softmax)."""
    m = keras.Sequential([keras.Input((None,), dtype="int32"),
                          layers.Embedding(20, 8),
                          layers.Bidirectional(layers.LSTM(6, return_sequences=True)),
                          layers.BatchNormalization(),
                          layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
                          layers.BatchNormalization(epsilon=0.1),
                          layers.Dense(5, activation="softmax")])
    return m, rng.integers(0, 20, size=(3, 11)).astype(np.int32)


def bn_dense_relu(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """BN on the input, Dense -> BN(center=False) -> ReLU, LSTM last step -> BN(scale=False)."""
    m = keras.Sequential([keras.Input((None, 3)),
                          layers.BatchNormalization(),
                          layers.Dense(6),
                          layers.BatchNormalization(center=False),
                          layers.Activation("relu"),
                          layers.LSTM(5),
                          layers.BatchNormalization(scale=False),
                          layers.Dense(3)])
    return m, rng.normal(size=(3, 8, 3)).astype(np.float32)


def bn_embedding_masked(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Embedding(mask_zero) -> BN -> BN -> GRU(cell) over padded ids."""
    m = keras.Sequential([keras.Input((None,), dtype="int32"),
                          layers.Embedding(15, 6, mask_zero=True),
                          layers.BatchNormalization(),
                          layers.BatchNormalization(),
                          layers.RNN(layers.GRUCell(5), return_sequences=True),
                          layers.Dense(3)])
    return m, _padded_ids(rng, 3, 10, 15)


FOLDED: list[Builder] = [
    rnn_single_cells, rnn_stacked_cells, rnn_stacked_masked_last, rnn_stacked_backwards,
    embedding_rnn_cell, bidirectional_rnn_cells, rnn_return_state_unused,
    bn_between_bidirectional, bn_dense_relu,
    bn_embedding_masked,
]


# --- models that keep an affine / normalize layer ----------------------------------------

def lstm_bn_relu_unit_norm(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)),
                          layers.LSTM(5, return_sequences=True),
                          layers.BatchNormalization(),
                          layers.Activation("relu"),
                          layers.UnitNormalization()])
    return m, rng.normal(size=(2, 7, 3)).astype(np.float32)


def lstm_activation_dense(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)),
                          layers.LSTM(5, return_sequences=True),
                          layers.Activation("tanh"),
                          layers.Dense(3)])
    return m, rng.normal(size=(2, 7, 3)).astype(np.float32) * 3


def gru_bn_last(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)), layers.GRU(4), layers.BatchNormalization()])
    return m, rng.normal(size=(3, 6, 3)).astype(np.float32)


UNFOLDED: list[Builder] = [lstm_bn_relu_unit_norm, lstm_activation_dense, gru_bn_last]
ALL = FOLDED + UNFOLDED


@dataclass
class Case:
    name: str
    model: Any
    x: np.ndarray
    y: np.ndarray
    specs: dict[str, ModelSpec]


@pytest.fixture(scope="module", params=ALL, ids=[b.__name__ for b in ALL])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    builder = request.param
    keras.utils.set_random_seed(0)
    model, x = builder(np.random.default_rng(ALL.index(builder)))
    _set_weights(model, ALL.index(builder) + 200)
    out = tmp_path_factory.mktemp(builder.__name__)
    specs = {}
    for ext in ("keras", "h5"):
        model.save(out / f"m.{ext}")
        specs[ext] = spec_from_keras_file(out / f"m.{ext}")
    specs["live"] = spec_from_keras(model)
    return Case(builder.__name__, model, x, _run(model, x), specs)


@pytest.mark.parametrize("kind", ["keras", "h5", "live"])
def test_oracle_matches_keras(case: Case, kind: str) -> None:
    y, _ = spec_forward(case.specs[kind], case.x)
    assert y.shape == case.y.shape
    np.testing.assert_allclose(y, case.y, atol=TOL, rtol=0)


def _engine_check(case: Case) -> None:
    for kind in ("keras", "h5"):
        y = lstm_fast.Model(case.specs[kind]).predict(case.x)
        np.testing.assert_allclose(y, case.y, atol=TOL, rtol=0)
    np.testing.assert_allclose(from_keras(case.model).predict(case.x), case.y, atol=TOL,
                               rtol=0)


def test_engine_matches_keras(case: Case) -> None:
    if case.name in {b.__name__ for b in FOLDED}:  # nothing left for the engine's affine layer
        assert not any(L.kind in ("affine", "normalize") for L in case.specs["keras"].layers)
    _engine_check(case)


def test_file_and_live_specs_agree(case: Case) -> None:
    ref = case.specs["live"]
    for kind in ("keras", "h5"):
        spec = case.specs[kind]
        assert [L.kind for L in spec.layers] == [L.kind for L in ref.layers]
        assert spec.metadata.get("folded") == ref.metadata.get("folded")
        for a, b in zip(spec.layers, ref.layers, strict=True):
            for name, arr in a.arrays().items():
                np.testing.assert_array_equal(arr, b.arrays()[name])


# --- structure -----------------------------------------------------------------------------

def test_stacked_cells_become_layers() -> None:
    keras.utils.set_random_seed(0)
    model, _ = rnn_stacked_backwards(np.random.default_rng(0))
    _set_weights(model, 1)
    spec = spec_from_keras(model)
    gru, lstm, _ = spec.layers
    assert (gru.kind, gru.reset_after, gru.go_backwards, gru.return_sequences) == (
        "gru", False, True, True)
    assert (lstm.kind, lstm.go_backwards, lstm.return_sequences) == ("lstm", False, True)
    stack = model.layers[0].cell
    np.testing.assert_array_equal(lstm.w_ih, stack.cells[1].get_weights()[0].T)
    assert lstm.input_size == 5


def test_rnn_cell_options() -> None:
    keras.utils.set_random_seed(0)
    model, _ = rnn_single_cells(np.random.default_rng(0))
    _set_weights(model, 1)
    lstm, gru, rnn, _ = spec_from_keras(model).layers
    assert lstm.recurrent_activation == "hard_sigmoid" and lstm.return_sequences
    assert not gru.reset_after and gru.b_hh is None
    assert rnn.activation == "relu" and not rnn.return_sequences


def test_batchnorm_fold_notes(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model, _ = bn_dense_relu(np.random.default_rng(0))
    _set_weights(model, 1)
    model.save(tmp_path / "m.keras")
    spec = spec_from_keras_file(tmp_path / "m.keras")
    assert [L.kind for L in spec.layers] == ["dense", "lstm", "dense"]
    assert spec.layers[0].activation == "relu"            # BN then ReLU folded into the Dense
    bns = [L.name for L in model.layers if isinstance(L, layers.BatchNormalization)]
    notes = spec.metadata["folded"].split("; ")
    assert len(notes) == 3                                 # the ReLU merged into its BN
    assert all(any(bn in n for n in notes) for bn in bns)
    assert spec.metadata["folded"].count("folded into the next layer") == 2


def test_unfolded_layers_kept() -> None:
    keras.utils.set_random_seed(0)
    model, _ = lstm_bn_relu_unit_norm(np.random.default_rng(0))
    _set_weights(model, 1)
    spec = spec_from_keras(model)
    lstm, affine, norm = spec.layers
    assert affine.kind == "affine" and affine.activation == "relu"   # BN + ReLU, one layer
    assert affine.scale is not None and affine.shift is not None
    assert norm.kind == "normalize" and norm.epsilon == 1e-12        # Keras >= 3.6
    assert "folded" not in spec.metadata


def _tiny_vector_model() -> tuple[Any, np.ndarray]:
    """LSTM -> Dense (zero kernel, bias of norm ~2e-8) -> UnitNormalization."""
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((None, 3)), layers.LSTM(4, return_sequences=True),
                          layers.Dense(3), layers.UnitNormalization()])
    _set_weights(m, 3)
    kernel, _ = m.layers[1].get_weights()
    m.layers[1].set_weights([np.zeros_like(kernel), np.array([1e-8, -2e-8, 1e-8], np.float32)])
    return m, np.random.default_rng(3).normal(size=(2, 5, 3)).astype(np.float32)


def test_unit_normalization_epsilon(tmp_path: Path) -> None:
    """Keras 3.6+ bounds the norm by 1e-12: a vector of norm 2e-8 still comes out with norm 1.
    tf-keras bounds the squared norm by 1e-12 (the norm by 1e-6): the same file read as a
    Keras 2 file gives a vector of norm 0.02, so the epsilon really follows the version."""
    m, x = _tiny_vector_model()
    y = _run(m, x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1.0, atol=1e-5)
    m.save(tmp_path / "m.keras")
    spec = spec_from_keras_file(tmp_path / "m.keras")
    assert spec.layers[-1].epsilon == 1e-12
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    old = spec_from_keras_file(tmp_path / "m.keras", keras_version="2.15.0")
    assert old.layers[-1].epsilon == pytest.approx(1e-6)
    assert spec_from_keras_file(tmp_path / "m.keras", keras_version="3.5.0").layers[
        -1].epsilon == pytest.approx(1e-6)
    np.testing.assert_allclose(np.linalg.norm(spec_forward(old, x)[0], axis=-1),
                               np.sqrt(6e-16) / 1e-6, rtol=1e-4)


def test_unit_normalization_epsilon_engine(tmp_path: Path) -> None:
    m, x = _tiny_vector_model()
    m.save(tmp_path / "m.keras")
    y = lstm_fast.Model(spec_from_keras_file(tmp_path / "m.keras")).predict(x)
    np.testing.assert_allclose(y, _run(m, x), atol=TOL, rtol=0)


def test_stateful_stacked_cells() -> None:
    """A stateful RNN(StackedRNNCells) run by Keras in two calls equals a stream fed the same
    chunks (every cell's state carried)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(batch_shape=(2, None, 3)),
        layers.RNN(layers.StackedRNNCells([layers.LSTMCell(5), layers.GRUCell(4)]),
                   return_sequences=True, stateful=True),
        layers.Dense(2)])
    _set_weights(model, 9)
    x = np.random.default_rng(9).normal(size=(2, 11, 3)).astype(np.float32)
    y = np.concatenate([_run(model, x[:, :4]), _run(model, x[:, 4:])], axis=1)
    spec = spec_from_keras(model)
    assert spec.stateful and [L.kind for L in spec.layers] == ["lstm", "gru", "dense"]
    stream = lstm_fast.Model(spec).stream(batch=2)
    got = np.concatenate([stream.run(x[:, :4]), stream.run(x[:, 4:])], axis=1)
    np.testing.assert_allclose(got, y, atol=TOL, rtol=0)


def test_tfkeras2_rnn_cells_file(tmp_path: Path) -> None:
    """A synthesized tf-keras 2 file with RNN(StackedRNNCells) and Bidirectional(RNN(cell))
    computes what Keras 3 computes for the same architecture with Keras 2's hard_sigmoid
    (clip(0.2x + 0.5)) as a custom recurrent activation."""
    import importlib.util

    path = Path(__file__).parent / "fixtures" / "keras" / "make_keras2_h5.py"
    spec_mod = importlib.util.spec_from_file_location("make_keras2_h5", path)
    assert spec_mod is not None and spec_mod.loader is not None
    mk = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(mk)
    weights = mk.write_rnn_cells_model(tmp_path / "cells.h5")

    def hs(z: Any) -> Any:
        return keras.ops.clip(0.2 * z + 0.5, 0.0, 1.0)

    model = keras.Sequential([
        keras.Input((None, mk.I)),
        layers.RNN(layers.StackedRNNCells([
            layers.LSTMCell(5, recurrent_activation=hs),
            layers.GRUCell(mk.G, reset_after=False, recurrent_activation=hs)]),
            return_sequences=True),
        layers.Bidirectional(layers.RNN(layers.SimpleRNNCell(3))),
        layers.Dense(mk.O, activation="softmax")])
    model.set_weights(weights)
    x = np.random.default_rng(5).normal(size=(3, 9, mk.I)).astype(np.float32) * 2
    y = _run(model, x)
    spec = spec_from_keras_file(tmp_path / "cells.h5")
    assert [L.kind for L in spec.layers] == ["lstm", "gru", "bidirectional", "dense"]
    assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    np.testing.assert_allclose(lstm_fast.Model(spec).predict(x), y, atol=TOL, rtol=0)


# --- refusals ------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="lstm_fast_tests")
class MinimalCell(layers.Layer):
    """A user-written cell: ``h' = tanh(x K + h)``."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x: Any, states: Any) -> Any:
        h = keras.ops.tanh(keras.ops.matmul(x, self.kernel) + states[0])
        return h, [h]

    def get_config(self) -> dict[str, Any]:
        return dict(super().get_config(), units=self.units)


def _masked_backwards_stack() -> Any:
    inp = keras.Input((None, 3))
    h = layers.Masking()(inp)
    h = layers.RNN(layers.StackedRNNCells([layers.GRUCell(3), layers.GRUCell(2)]),
                   go_backwards=True, name="back_stack")(h)
    return keras.Model(inp, h)


def _rnn_state_used() -> Any:
    inp = keras.Input((None, 3))
    _out, h, _c = layers.RNN(layers.LSTMCell(3), return_state=True, name="cell_state")(inp)
    return keras.Model(inp, layers.Dense(2)(h))


REFUSED: dict[str, tuple[Callable[[], Any], str, list[str]]] = {
    "rnn_state_used": (_rnn_state_used, "cell_state", ["RNN", "output #1"]),
    "rnn_return_state_sequential": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.RNN(layers.GRUCell(3), return_state=True,
                                           name="rs_cell")]), "rs_cell", ["return_state"]),
    "custom_cell": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.RNN(MinimalCell(3), name="wrapped")]),
        "wrapped", ["RNN", "MinimalCell"]),
    "bidirectional_stacked_cells": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Bidirectional(layers.RNN(layers.StackedRNNCells(
            [layers.GRUCell(3), layers.GRUCell(2)])), name="bi_stack")]),
        "bi_stack", ["Bidirectional(RNN(StackedRNNCells))"]),
    "masked_backwards_stack": (_masked_backwards_stack, "back_stack",
                               ["go_backwards", "StackedRNNCells", "mask"]),
    "batchnorm_time_axis": (lambda: keras.Sequential([
        keras.Input((5, 3)), layers.BatchNormalization(axis=1, name="bn_t"), layers.LSTM(2)]),
        "bn_t", ["BatchNormalization", "axis=1"]),
    "batchnorm_renorm": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.LSTM(2, return_sequences=True),
        layers.BatchNormalization(renorm=True, name="bn_r")]),
        "bn_r", ["BatchNormalization", "renorm"]),
    "unit_normalization_time_axis": (lambda: keras.Sequential([
        keras.Input((5, 3)), layers.LSTM(2, return_sequences=True),
        layers.UnitNormalization(axis=1, name="un")]), "un", ["UnitNormalization", "axis=1"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
@pytest.mark.parametrize("ext", ["keras", "h5"])
def test_refused(name: str, ext: str, tmp_path: Path) -> None:
    build, layer_name, words = REFUSED[name]
    model = build()
    path = tmp_path / f"{name}.{ext}"
    model.save(path)
    with pytest.raises(UnsupportedModelError) as err:
        spec_from_keras_file(path)
    msg = str(err.value)
    assert f"'{layer_name}'" in msg and str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg
    with pytest.raises(UnsupportedModelError, match=layer_name):
        spec_from_keras(model)
