"""Live Keras 3 parity: build small models, save them as .keras and .h5, convert, and compare
Keras's own outputs with the float64 oracle (tests.reference.spec_forward) and lstm_fast."""

from __future__ import annotations

import importlib.util
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")
from keras import layers, ops  # noqa: E402

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
FIXTURES = Path(__file__).parent / "fixtures" / "keras"


def _set_weights(model: Any, seed: int, scale: float = 0.5) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-scale, scale, size=w.shape).astype(np.float32)
                       for w in model.get_weights()])


def _run(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(model(x, training=False)), np.float64)


def _padded_floats(rng: np.random.Generator, B: int, T: int, F: int, value: float) -> np.ndarray:
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    x[0, T - 3:] = value                       # right padding
    x[1, :2] = value                           # left padding
    x[2, T // 2] = value                       # a hole
    x[2, 1, 0] = value                         # one feature only: not masked
    return x


def _padded_ids(rng: np.random.Generator, B: int, T: int, vocab: int) -> np.ndarray:
    x = rng.integers(1, vocab, size=(B, T)).astype(np.int32)
    x[0, T - 3:] = 0
    x[1, :2] = 0
    x[2, T // 2] = 0
    return x


# --- model builders: each returns (model, inputs) ----------------------------------------

def seq_stack_last(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)), layers.LSTM(8, return_sequences=True),
                          layers.LSTM(6), layers.Dense(3, activation="softmax")])
    return m, rng.normal(size=(3, 9, 3)).astype(np.float32)


def seq_stack_td(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)), layers.LSTM(8, return_sequences=True),
                          layers.LSTM(5, return_sequences=True),
                          layers.TimeDistributed(layers.Dense(4, activation="relu"))])
    return m, rng.normal(size=(2, 7, 3)).astype(np.float32)


def func_options(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Dense + Activation fold, relu/hard_sigmoid/no-bias LSTM, Dropout, go_backwards."""
    inp = keras.Input((None, 4), name="feats")
    h = layers.Dense(6, name="proj")(inp)
    h = layers.Activation("tanh")(h)
    h = layers.LSTM(7, activation="relu", recurrent_activation="hard_sigmoid", use_bias=False,
                    return_sequences=True, name="relu_lstm")(h)
    h = layers.Dropout(0.3)(h)
    h = layers.GaussianNoise(0.1)(h)
    h = layers.LSTM(5, go_backwards=True, name="back")(h)
    y = layers.Dense(2, activation="sigmoid")(h)
    return keras.Model(inp, y), rng.normal(size=(3, 8, 4)).astype(np.float32) * 2


def seq_embedding(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None,), dtype="int32"),
                          layers.Embedding(12, 5, mask_zero=True),
                          layers.LSTM(6, return_sequences=True),
                          layers.TimeDistributed(layers.Dense(12, activation="softmax"))])
    return m, _padded_ids(rng, 3, 10, 12)


def func_embedding_last(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(12, 5, mask_zero=True)(inp)
    h = layers.Dense(6, activation="gelu")(h)
    h = layers.LSTM(6)(h)
    y = layers.Dense(4, activation="log_softmax")(h)
    return keras.Model(inp, y), _padded_ids(rng, 3, 10, 12)


def func_masking_backwards(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """A masked go_backwards LSTM feeding another masked LSTM (Keras passes the mask on
    unreversed while the sequence is in processing order)."""
    inp = keras.Input((None, 3))
    h = layers.Masking(mask_value=0.0)(inp)
    h = layers.LSTM(6, return_sequences=True, go_backwards=True)(h)
    h = layers.LSTM(5, return_sequences=True)(h)
    y = layers.TimeDistributed(layers.Dense(3))(h)
    return keras.Model(inp, y), _padded_floats(rng, 3, 9, 3, 0.0)


def seq_masking_dense(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)), layers.Masking(mask_value=0.5),
                          layers.Dense(4, activation="swish"), layers.LSTM(6),
                          layers.Dense(3, activation="softmax")])
    return m, _padded_floats(rng, 3, 9, 3, 0.5)


def func_return_state(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """return_state=True whose states are unused is harmless."""
    inp = keras.Input((None, 3))
    out, _h, _c = layers.LSTM(6, return_state=True, return_sequences=True)(inp)
    y = layers.Dense(2, activation="selu")(out)
    return keras.Model(inp, y), rng.normal(size=(2, 6, 3)).astype(np.float32)


def seq_cell_activations(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)), layers.Dense(4, activation="elu"),
                          layers.LSTM(5, activation="softsign",
                                      recurrent_activation="hard_sigmoid",
                                      return_sequences=True),
                          layers.Dense(3, activation="softplus")])
    return m, rng.normal(size=(2, 6, 3)).astype(np.float32) * 3


def long_sequence(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 4)), layers.LSTM(16, return_sequences=True),
                          layers.Dense(3)])
    return m, rng.normal(size=(2, 600, 4)).astype(np.float32)


Builder = Callable[[np.random.Generator], tuple[Any, np.ndarray]]


# --- GRU / SimpleRNN / Bidirectional builders --------------------------------------------

def _gru_builder(reset_after: bool, ract: str) -> Builder:
    def build(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
        m = keras.Sequential([keras.Input((None, 3)),
                              layers.GRU(6, reset_after=reset_after, recurrent_activation=ract,
                                         return_sequences=True),
                              layers.Dense(3)])
        return m, rng.normal(size=(3, 9, 3)).astype(np.float32) * 2    # reach the clip
    build.__name__ = f"gru_reset_{'after' if reset_after else 'before'}_{ract}"
    return build


def _rnn_builder(act: str) -> Builder:
    def build(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
        m = keras.Sequential([keras.Input((None, 3)),
                              layers.SimpleRNN(6, activation=act, return_sequences=True),
                              layers.SimpleRNN(4, activation=act, return_sequences=True),
                              layers.Dense(2)])
        return m, rng.normal(size=(3, 9, 3)).astype(np.float32)
    build.__name__ = f"simple_rnn_{act}"
    return build


_INNER = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}


def _bidir_builder(inner: str, merge: str, return_sequences: bool) -> Builder:
    """Masking (right/left padding, a hole) -> Bidirectional(inner, merge) -> Dense."""
    def build(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
        inp = keras.Input((None, 3))
        h = layers.Masking(mask_value=0.0)(inp)
        h = layers.Bidirectional(_INNER[inner](5, return_sequences=return_sequences),
                                 merge_mode=merge, name="bi")(h)
        y = layers.Dense(3)(h)
        return keras.Model(inp, y), _padded_floats(rng, 3, 9, 3, 0.0)
    build.__name__ = f"bidir_{inner}_{merge}_{'seq' if return_sequences else 'last'}"
    return build


def stacked_bidirectional(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Masked Bidirectional(GRU) -> Bidirectional(LSTM, sum) -> Bidirectional(SimpleRNN, last)."""
    inp = keras.Input((None, 3))
    h = layers.Masking(mask_value=0.0)(inp)
    h = layers.Bidirectional(layers.GRU(5, return_sequences=True))(h)
    h = layers.Bidirectional(layers.LSTM(4, return_sequences=True), merge_mode="sum")(h)
    h = layers.Bidirectional(layers.SimpleRNN(3), merge_mode="ave")(h)
    y = layers.Dense(2, activation="softmax")(h)
    return keras.Model(inp, y), _padded_floats(rng, 3, 10, 3, 0.0)


def embedding_bidir_gru(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Embedding(mask_zero) -> Bidirectional(GRU) per step, right padding and holes."""
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(15, 6, mask_zero=True)(inp)
    h = layers.Bidirectional(layers.GRU(5, return_sequences=True))(h)
    y = layers.TimeDistributed(layers.Dense(4, activation="softmax"))(h)
    x = _padded_ids(rng, 4, 11, 15)
    x[3, 2:4] = 0                             # a two-step hole
    x[3, 8:] = 0                              # ... and right padding in the same row
    return keras.Model(inp, y), x


def embedding_bidir_gru_last(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Sequential text classifier: Embedding(mask_zero) -> Bidirectional(GRU) last step."""
    m = keras.Sequential([keras.Input((None,), dtype="int32"),
                          layers.Embedding(15, 6, mask_zero=True),
                          layers.Bidirectional(layers.GRU(5, reset_after=False)),
                          layers.Dense(3, activation="softmax")])
    x = _padded_ids(rng, 4, 11, 15)
    x[3, 2:4] = 0
    x[3, 8:] = 0
    return m, x


def gru_go_backwards(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """Masked go_backwards GRU -> SimpleRNN -> go_backwards GRU (last step)."""
    m = keras.Sequential([keras.Input((None, 3)), layers.Masking(mask_value=0.0),
                          layers.GRU(6, go_backwards=True, return_sequences=True),
                          layers.SimpleRNN(5, return_sequences=True),
                          layers.GRU(4, go_backwards=True, reset_after=False),
                          layers.Dense(2)])
    return m, _padded_floats(rng, 3, 9, 3, 0.0)


def last_step_only(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """return_sequences=False GRU and SimpleRNN, masked."""
    inp = keras.Input((None, 4))
    h = layers.Masking(mask_value=0.5)(inp)
    h = layers.SimpleRNN(6, activation="relu", return_sequences=True)(h)
    h = layers.GRU(5)(h)
    y = layers.Dense(3, activation="softmax")(h)
    return keras.Model(inp, y), _padded_floats(rng, 3, 9, 4, 0.5)


def no_bias(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 3)),
                          layers.GRU(5, use_bias=False, return_sequences=True),
                          layers.GRU(5, use_bias=False, reset_after=False,
                                     return_sequences=True),
                          layers.SimpleRNN(4, use_bias=False, return_sequences=True),
                          layers.Bidirectional(layers.GRU(3, use_bias=False,
                                                          return_sequences=True)),
                          layers.Dense(2, use_bias=False)])
    return m, rng.normal(size=(2, 8, 3)).astype(np.float32)


def gru_return_state_unused(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    inp = keras.Input((None, 3))
    out, _fh, _bh = layers.Bidirectional(layers.GRU(4, return_sequences=True,
                                                    return_state=True))(inp)
    out, _h = layers.GRU(3, return_state=True)(out)
    return keras.Model(inp, out), rng.normal(size=(2, 6, 3)).astype(np.float32)


def long_gru(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 4)), layers.GRU(16, return_sequences=True),
                          layers.GRU(8, reset_after=False, recurrent_activation="hard_sigmoid",
                                     return_sequences=True),
                          layers.Dense(3)])
    return m, rng.normal(size=(2, 600, 4)).astype(np.float32)


def long_simple_rnn(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    m = keras.Sequential([keras.Input((None, 4)), layers.SimpleRNN(16, return_sequences=True),
                          layers.SimpleRNN(8, activation="relu", return_sequences=True),
                          layers.Dense(3)])
    return m, rng.normal(size=(2, 600, 4)).astype(np.float32)


def long_bidirectional(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    inp = keras.Input((None, 4))
    h = layers.Masking(mask_value=0.0)(inp)
    h = layers.Bidirectional(layers.GRU(8, return_sequences=True))(h)
    h = layers.Bidirectional(layers.LSTM(6, return_sequences=True), merge_mode="ave")(h)
    y = layers.Dense(3)(h)
    x = rng.normal(size=(2, 550, 4)).astype(np.float32)
    x[0, 500:] = 0.0                           # right padding
    x[1, 200:230] = 0.0                        # a hole
    return keras.Model(inp, y), x


_MERGES = ("concat", "sum", "ave", "mul")
NEW_BUILDERS: list[Builder] = [
    *(_gru_builder(ra, ract) for ra in (True, False) for ract in ("sigmoid", "hard_sigmoid")),
    _rnn_builder("tanh"), _rnn_builder("relu"),
    *(_bidir_builder(inner, merge, (k + j) % 2 == 0)
      for k, inner in enumerate(_INNER) for j, merge in enumerate(_MERGES)),
    stacked_bidirectional, embedding_bidir_gru, embedding_bidir_gru_last, gru_go_backwards,
    last_step_only, no_bias, gru_return_state_unused, long_gru, long_simple_rnn,
    long_bidirectional,
]

BUILDERS: list[Builder] = [
    seq_stack_last, seq_stack_td, func_options, seq_embedding, func_embedding_last,
    func_masking_backwards, seq_masking_dense, func_return_state, seq_cell_activations,
    long_sequence, *NEW_BUILDERS,
]


@dataclass
class Case:
    name: str
    model: Any
    x: np.ndarray
    y: np.ndarray
    specs: dict[str, ModelSpec]
    paths: dict[str, Path]


@pytest.fixture(scope="module", params=BUILDERS, ids=[b.__name__ for b in BUILDERS])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Case:
    builder = request.param
    keras.utils.set_random_seed(0)
    model, x = builder(np.random.default_rng(BUILDERS.index(builder)))
    _set_weights(model, BUILDERS.index(builder) + 100)
    out = tmp_path_factory.mktemp(builder.__name__)
    paths = {"keras": out / "m.keras", "h5": out / "m.h5"}
    for p in paths.values():
        model.save(p)
    specs = {k: spec_from_keras_file(p) for k, p in paths.items()}
    specs["live"] = spec_from_keras(model)
    return Case(builder.__name__, model, x, _run(model, x), specs, paths)


@pytest.mark.parametrize("kind", ["keras", "h5", "live"])
def test_oracle_matches_keras(case: Case, kind: str) -> None:
    spec = case.specs[kind]
    assert spec.mask_semantics == "keras"
    assert spec.metadata["source_framework"] == "keras"
    assert spec.metadata["keras_version"] == keras.__version__
    y, _ = spec_forward(spec, case.x)
    assert y.shape == case.y.shape
    np.testing.assert_allclose(y, case.y, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_engine_matches_keras(case: Case, kind: str) -> None:
    y = lstm_fast.Model(case.specs[kind]).predict(case.x)
    np.testing.assert_allclose(y, case.y, atol=TOL, rtol=0)


def test_from_keras_matches_keras(case: Case) -> None:
    m = from_keras(case.model)
    assert isinstance(m, lstm_fast.Model)
    np.testing.assert_allclose(m.predict(case.x), case.y, atol=TOL, rtol=0)


def test_file_and_live_specs_agree(case: Case) -> None:
    ref = case.specs["live"]
    for kind in ("keras", "h5"):
        spec = case.specs[kind]
        assert [L.kind for L in spec.layers] == [L.kind for L in ref.layers]
        for a, b in zip(spec.layers, ref.layers, strict=True):
            for name, arr in a.arrays().items():
                np.testing.assert_array_equal(arr, b.arrays()[name])


@pytest.mark.parametrize("builder", [seq_embedding, func_masking_backwards])
def test_model_predict_api(builder: Callable[[np.random.Generator], tuple[Any, np.ndarray]],
                           tmp_path: Path) -> None:
    """Keras's model.predict (not just __call__) agrees too."""
    keras.utils.set_random_seed(0)
    model, x = builder(np.random.default_rng(7))
    _set_weights(model, 7)
    model.save(tmp_path / "m.keras")
    y = np.asarray(model.predict(x, verbose=0), np.float64)
    spec = spec_from_keras_file(tmp_path / "m.keras")
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    np.testing.assert_allclose(lstm_fast.Model(spec).predict(x), y, atol=TOL, rtol=0)


# --- structure checks on specific models -------------------------------------------------

def test_options_mapped(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model, _ = func_options(np.random.default_rng(0))
    spec = spec_from_keras(model)
    kinds = [L.kind for L in spec.layers]
    assert kinds == ["dense", "lstm", "lstm", "dense"]        # Activation folded, noise dropped
    proj, relu_lstm, back, head = spec.layers
    assert proj.activation == "tanh"
    assert relu_lstm.activation == "relu"
    assert relu_lstm.recurrent_activation == "hard_sigmoid"    # Keras 3: x/6 + 0.5
    assert relu_lstm.bias is None
    assert back.go_backwards and not back.return_sequences
    assert head.activation == "sigmoid"
    kernel = model.get_layer("relu_lstm").get_weights()[0]
    np.testing.assert_array_equal(relu_lstm.w_ih, kernel.T)


def test_stateful(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape=(2, None, 3)),
                              layers.LSTM(6, return_sequences=True, stateful=True),
                              layers.Dense(2)])
    _set_weights(model, 5)
    x = np.random.default_rng(5).normal(size=(2, 11, 3)).astype(np.float32)
    y = np.concatenate([_run(model, x[:, :4]), _run(model, x[:, 4:])], axis=1)
    model.save(tmp_path / "s.keras")
    spec = spec_from_keras_file(tmp_path / "s.keras")
    assert spec.stateful
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    stream = lstm_fast.Model(spec).stream(batch=2)
    got = np.concatenate([stream.run(x[:, :4]), stream.run(x[:, 4:])], axis=1)
    np.testing.assert_allclose(got, y, atol=TOL, rtol=0)


def _swap_zr(a: np.ndarray) -> np.ndarray:
    """Keras GRU blocks z, r, h -> r, z, h on the last axis (written out, not the converter's)."""
    u = a.shape[-1] // 3
    return np.concatenate([a[..., u:2 * u], a[..., :u], a[..., 2 * u:]], axis=-1)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_mapping(reset_after: bool, tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 3)),
                              layers.GRU(4, reset_after=reset_after, name="g",
                                         recurrent_activation="hard_sigmoid"),
                              ])
    _set_weights(model, 1)
    kernel, rec, bias = model.get_layer("g").get_weights()
    model.save(tmp_path / "g.h5")
    for spec in (spec_from_keras(model), spec_from_keras_file(tmp_path / "g.h5")):
        (gru,) = spec.layers
        assert gru.kind == "gru" and gru.reset_after is reset_after
        assert gru.recurrent_activation == "hard_sigmoid" and not gru.return_sequences
        np.testing.assert_array_equal(gru.w_ih, _swap_zr(kernel).T)
        np.testing.assert_array_equal(gru.w_hh, _swap_zr(rec).T)
        if reset_after:
            assert bias.shape == (2, 12)
            np.testing.assert_array_equal(gru.b_ih, _swap_zr(bias[0]))
            np.testing.assert_array_equal(gru.b_hh, _swap_zr(bias[1]))
        else:
            assert bias.shape == (12,)
            np.testing.assert_array_equal(gru.b_ih, _swap_zr(bias))
            assert gru.b_hh is None


def test_simple_rnn_and_no_bias_mapping() -> None:
    keras.utils.set_random_seed(0)
    model, _ = no_bias(np.random.default_rng(0))
    gru_a, gru_b, rnn, bi, dense = spec_from_keras(model).layers
    assert (gru_a.b_ih, gru_a.b_hh, gru_b.b_ih, gru_b.b_hh, rnn.bias) == (None,) * 5
    assert gru_a.reset_after and not gru_b.reset_after
    assert bi.forward.b_ih is None and bi.backward.b_hh is None and dense.bias is None
    kernel, rec = model.layers[2].get_weights()
    np.testing.assert_array_equal(rnn.w_ih, kernel.T)
    np.testing.assert_array_equal(rnn.w_hh, rec.T)


def test_bidirectional_mapping(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model, _ = stacked_bidirectional(np.random.default_rng(0))
    _set_weights(model, 2)
    model.save(tmp_path / "b.keras")
    spec = spec_from_keras_file(tmp_path / "b.keras")
    kinds = [(L.kind, getattr(L, "merge_mode", None)) for L in spec.layers]
    assert kinds == [("masking", None), ("bidirectional", "concat"), ("bidirectional", "sum"),
                     ("bidirectional", "ave"), ("dense", None)]
    first = spec.layers[1]
    assert first.forward.kind == first.backward.kind == "gru"
    assert not first.forward.go_backwards and not first.backward.go_backwards
    assert first.output_size == 10 and spec.layers[2].output_size == 4
    assert not spec.layers[3].return_sequences
    assert [c.kind for c in spec.cells] == ["gru", "gru", "lstm", "lstm", "rnn", "rnn"]
    bi = model.layers[2]                                       # Masking is layers[1]
    fwd_kernel = bi.forward_layer.get_weights()[0]
    bwd_kernel = bi.backward_layer.get_weights()[0]
    assert not np.array_equal(fwd_kernel, bwd_kernel)
    np.testing.assert_array_equal(first.forward.w_ih, _swap_zr(fwd_kernel).T)
    np.testing.assert_array_equal(first.backward.w_ih, _swap_zr(bwd_kernel).T)
    assert not spec.streamable


def test_bidirectional_explicit_backward_layer(tmp_path: Path) -> None:
    """A backward_layer given explicitly (other activation) is read from its own config."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, 3))
    h = layers.Bidirectional(
        layers.GRU(4, return_sequences=True),
        backward_layer=layers.GRU(4, activation="relu", go_backwards=True,
                                  return_sequences=True), name="bi")(inp)
    model = keras.Model(inp, h)
    _set_weights(model, 3)
    x = np.random.default_rng(3).normal(size=(2, 7, 3)).astype(np.float32)
    model.save(tmp_path / "b.keras")
    model.save(tmp_path / "b.h5")
    for spec in (spec_from_keras_file(tmp_path / "b.keras"),
                 spec_from_keras_file(tmp_path / "b.h5"), spec_from_keras(model)):
        bi = spec.layers[0]
        assert (bi.forward.activation, bi.backward.activation) == ("tanh", "relu")
        np.testing.assert_allclose(spec_forward(spec, x)[0], _run(model, x), atol=TOL, rtol=0)


def test_stateful_gru(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(batch_shape=(2, None, 3)),
                              layers.GRU(6, return_sequences=True, stateful=True),
                              layers.SimpleRNN(4, return_sequences=True, stateful=True),
                              layers.Dense(2)])
    _set_weights(model, 6)
    x = np.random.default_rng(6).normal(size=(2, 11, 3)).astype(np.float32)
    y = np.concatenate([_run(model, x[:, :4]), _run(model, x[:, 4:])], axis=1)
    model.save(tmp_path / "s.keras")
    spec = spec_from_keras_file(tmp_path / "s.keras")
    assert spec.stateful and spec.streamable
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    stream = lstm_fast.Model(spec).stream(batch=2)
    got = np.concatenate([stream.run(x[:, :4]), stream.run(x[:, 4:])], axis=1)
    np.testing.assert_allclose(got, y, atol=TOL, rtol=0)


def _state_models() -> tuple[Any, Any]:
    """(main model, a model on the same layers that outputs Keras's return_state states)."""
    inp = keras.Input((None,), dtype="int32")
    h = layers.Embedding(15, 4, mask_zero=True)(inp)
    out1 = layers.Bidirectional(layers.GRU(5, return_sequences=True, return_state=True))(h)
    out2 = layers.Bidirectional(layers.LSTM(5, return_sequences=True, return_state=True),
                                merge_mode="mul")(out1[0])
    out3 = layers.SimpleRNN(5, return_state=True)(out2[0])
    y = layers.Dense(2)(out3[0])
    # Keras orders: [out, fwd_h, bwd_h], [out, fwd_h, fwd_c, bwd_h, bwd_c], [out, h]
    return keras.Model(inp, y), keras.Model(inp, [*out1[1:], *out2[1:], *out3[1:]])


def _per_cell(state: Any, n: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """A state in any of Model.predict's forms (``(h, c)`` stacked for all-LSTM models, ``h``
    stacked for all-GRU/RNN models, else a list of ``(h, c)`` / ``h``) as (h, c or None) per
    cell."""
    if isinstance(state, np.ndarray):
        out = [(h, None) for h in state]
    elif isinstance(state, tuple) and len(state) == 2 and all(
            isinstance(a, np.ndarray) and a.ndim == 3 for a in state):
        out = list(zip(state[0], state[1], strict=True))
    else:
        out = [tuple(s) if isinstance(s, (tuple, list)) else (s, None) for s in state]
    assert len(out) == n
    return out


def test_return_state_final_states(tmp_path: Path) -> None:
    """Final states, in spec.cells order [fwd, bwd] per Bidirectional, match the states Keras
    returns with return_state=True; masked rows (padding, holes) included."""
    keras.utils.set_random_seed(0)
    main, with_states = _state_models()
    _set_weights(main, 8)
    x = _padded_ids(np.random.default_rng(8), 4, 10, 15)
    x[3, 6:] = 0
    ks = [np.asarray(ops.convert_to_numpy(t), np.float64) for t in with_states(x)]
    # (cell index, "h" or "c") for each Keras state output
    order = [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0)]
    main.save(tmp_path / "m.keras")
    spec = spec_from_keras_file(tmp_path / "m.keras")
    assert [c.kind for c in spec.cells] == ["gru", "gru", "lstm", "lstm", "rnn"]
    y_ref, states = spec_forward(spec, x)
    np.testing.assert_allclose(y_ref, _run(main, x), atol=TOL, rtol=0)
    states = _per_cell(states, 5)
    for (cell, part), k_state in zip(order, ks, strict=True):
        np.testing.assert_allclose(states[cell][part], k_state, atol=TOL, rtol=0)
    y, state = lstm_fast.Model(spec).predict(x, return_state=True)
    np.testing.assert_allclose(y, _run(main, x), atol=TOL, rtol=0)
    got = _per_cell(state, 5)
    for (cell, part), k_state in zip(order, ks, strict=True):
        np.testing.assert_allclose(got[cell][part], k_state, atol=TOL, rtol=0)


@pytest.mark.parametrize("builder", [seq_masking_dense, stacked_bidirectional, gru_go_backwards])
def test_weights_h5_with_json_config(builder: Builder, tmp_path: Path) -> None:
    """A Keras 3 ``.weights.h5`` plus ``model.to_json()``."""
    keras.utils.set_random_seed(0)
    model, x = builder(np.random.default_rng(1))
    _set_weights(model, 9)
    model.save_weights(tmp_path / "w.weights.h5")
    (tmp_path / "arch.json").write_text(model.to_json())
    for config in (tmp_path / "arch.json", model.to_json()):
        spec = spec_from_keras_file(tmp_path / "w.weights.h5", config=config)
        np.testing.assert_allclose(spec_forward(spec, x)[0], _run(model, x), atol=TOL, rtol=0)


@pytest.mark.parametrize("builder", [func_options, stacked_bidirectional, no_bias])
def test_keras_zip_without_name_attributes(builder: Builder, tmp_path: Path) -> None:
    """Files without the ``@name`` attribute on ``vars`` (tf-keras, older Keras 3) are read by
    the snake_case-class-name + counter order rule."""
    keras.utils.set_random_seed(0)
    model, x = builder(np.random.default_rng(2))
    _set_weights(model, 10)
    src = tmp_path / "m.keras"
    model.save(src)
    with zipfile.ZipFile(src) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(buf, "r+") as f:
        def strip(_name: str, obj: Any) -> None:
            if "name" in obj.attrs:
                del obj.attrs["name"]
        f.visititems(strip)
        assert not any("name" in f[f"layers/{k}/vars"].attrs for k in f["layers"])
    entries["model.weights.h5"] = buf.getvalue()
    dst = tmp_path / "noname.keras"
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    spec = spec_from_keras_file(dst)
    np.testing.assert_allclose(spec_forward(spec, x)[0], _run(model, x), atol=TOL, rtol=0)


def test_keras2_hard_sigmoid_against_keras3_custom_activation(tmp_path: Path) -> None:
    """A synthesized tf-keras 2 file with hard_sigmoid must compute clip(0.2x + 0.5): compare
    with a Keras 3 model using that function as a custom recurrent activation."""
    spec_mod = importlib.util.spec_from_file_location("make_keras2_h5",
                                                      FIXTURES / "make_keras2_h5.py")
    mk = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(mk)
    w = mk.make_weights()
    path = tmp_path / "k2.h5"
    mk.write_full_model(path, w)
    model = keras.Sequential([
        keras.Input((None, mk.I)),
        layers.LSTM(mk.U, return_sequences=True,
                    recurrent_activation=lambda z: ops.clip(0.2 * z + 0.5, 0.0, 1.0)),
        layers.TimeDistributed(layers.Dense(mk.O, activation="softmax")),
    ])
    model.set_weights([w["kernel"], w["recurrent_kernel"], w["bias"], w["dense_kernel"],
                       w["dense_bias"]])
    x = np.random.default_rng(3).normal(size=(2, 12, mk.I)).astype(np.float32) * 2
    y = _run(model, x)
    spec = spec_from_keras_file(path)
    assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    np.testing.assert_allclose(lstm_fast.Model(spec).predict(x), y, atol=TOL, rtol=0)
    # ... and the Keras 3 reading of the same name really differs on these inputs
    k3 = spec_from_keras_file(path, keras_version="3.15.1")
    assert np.abs(spec_forward(k3, x)[0] - y).max() > 1e-3


def test_keras2_gru_hard_sigmoid_against_keras3_custom_activation(tmp_path: Path) -> None:
    """The synthesized tf-keras 2 GRU(reset_after=False, hard_sigmoid) file computes what a
    Keras 3 GRU with recurrent_activation clip(0.2x + 0.5) computes."""
    spec_mod = importlib.util.spec_from_file_location("make_keras2_h5",
                                                      FIXTURES / "make_keras2_h5.py")
    mk = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(mk)
    g = mk.make_gru_weights()
    path = tmp_path / "k2gru.h5"
    mk.write_gru_model(path, g)
    model = keras.Sequential([
        keras.Input((None, mk.I)),
        layers.GRU(mk.G, return_sequences=True, reset_after=False,
                   recurrent_activation=lambda z: ops.clip(0.2 * z + 0.5, 0.0, 1.0)),
        layers.TimeDistributed(layers.Dense(mk.O, activation="softmax")),
    ])
    model.set_weights([g["kernel"], g["recurrent_kernel"], g["bias"], g["dense_kernel"],
                       g["dense_bias"]])
    x = np.random.default_rng(4).normal(size=(2, 12, mk.I)).astype(np.float32) * 2
    y = _run(model, x)
    spec = spec_from_keras_file(path)
    assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    np.testing.assert_allclose(lstm_fast.Model(spec).predict(x), y, atol=TOL, rtol=0)


# --- refusals ----------------------------------------------------------------------------

REFUSED = {
    "bidirectional_stateful": (lambda: keras.Sequential([
        keras.Input(batch_shape=(2, None, 3)),
        layers.Bidirectional(layers.GRU(4, stateful=True), name="bi")]),
        "bi", ["Bidirectional(GRU)", "stateful"]),
    "bidirectional_mixed_kinds": (lambda: keras.Sequential([
        keras.Input((None, 3)),
        layers.Bidirectional(layers.GRU(4), backward_layer=layers.SimpleRNN(
            4, go_backwards=True), name="bi")]), "bi", ["SimpleRNN", "GRU", "backward_layer"]),
    "bidirectional_units_differ": (lambda: keras.Sequential([
        keras.Input((None, 3)),
        layers.Bidirectional(layers.LSTM(4), backward_layer=layers.LSTM(
            3, go_backwards=True), name="bi")]), "bi", ["Bidirectional", "size"]),
    "bidirectional_forward_backwards": (lambda: keras.Sequential([
        keras.Input((None, 3)),
        layers.Bidirectional(layers.GRU(4, go_backwards=True),
                             backward_layer=layers.GRU(4), name="bi")]),
        "bi", ["Bidirectional", "go_backwards"]),
    "gru_zero_output_for_mask": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Masking(),
        layers.GRU(3, zero_output_for_mask=True, name="zg")]), "zg",
        ["GRU", "zero_output_for_mask"]),
    "gru_return_state_sequential": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.SimpleRNN(3, return_state=True, name="rs_rnn")]),
        "rs_rnn", ["SimpleRNN", "return_state"]),
    "conv_lstm": (lambda: keras.Sequential([
        keras.Input((None, 5, 2)), layers.ConvLSTM1D(2, 3, name="clstm")]),
        "clstm", ["ConvLSTM1D"]),
    "conv1d": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Conv1D(4, 3, name="conv"), layers.LSTM(3)]),
        "conv", ["Conv1D"]),
    "masking_after_embedding": (lambda: keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(5, 3),
        layers.Masking(name="late_mask"), layers.LSTM(3)]), "late_mask", ["Masking"]),
    "leaky_relu": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Dense(3, activation="leaky_relu", name="d"),
        layers.LSTM(3)]), "d", ["leaky_relu"]),
    "zero_output_for_mask": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Masking(),
        layers.LSTM(3, zero_output_for_mask=True, name="z")]), "z", ["zero_output_for_mask"]),
    "return_state_sequential": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.LSTM(3, return_state=True, name="rs")]),
        "rs", ["return_state"]),
}


def _branching() -> Any:
    inp = keras.Input((None, 3))
    a = layers.LSTM(3, return_sequences=True)(inp)
    b = layers.Dense(3)(inp)
    return keras.Model(inp, layers.Add(name="merge")([a, b]))


def _state_used() -> Any:
    inp = keras.Input((None, 3))
    _out, h, _c = layers.LSTM(3, return_state=True, name="stateful_out")(inp)
    return keras.Model(inp, layers.Dense(2)(h))


def _merge_none() -> Any:
    inp = keras.Input((None, 3))
    fwd, _bwd = layers.Bidirectional(layers.GRU(3, return_sequences=True), merge_mode=None,
                                     name="bi_none")(inp)
    return keras.Model(inp, fwd)


def _bidir_state_used() -> Any:
    inp = keras.Input((None, 3))
    _out, fh, bh = layers.Bidirectional(layers.GRU(3, return_state=True), name="bi_rs")(inp)
    return keras.Model(inp, layers.Dense(2)(bh))


def _attention() -> Any:
    inp = keras.Input((None, 3))
    h = layers.LSTM(3, return_sequences=True)(inp)
    return keras.Model(inp, layers.Attention(name="attn")([h, h]))


REFUSED["branching"] = (_branching, "merge", ["Add", "single chain"])
REFUSED["state_used"] = (_state_used, "stateful_out", ["LSTM", "output #1"])
REFUSED["merge_mode_none"] = (_merge_none, "bi_none", ["Bidirectional", "merge_mode=None"])
REFUSED["bidirectional_state_used"] = (_bidir_state_used, "bi_rs", ["Bidirectional", "output #2"])
REFUSED["attention"] = (_attention, "attn", ["Attention"])


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
    assert layer_name in msg and str(path) in msg
    for w in words:
        assert w in msg
    with pytest.raises(UnsupportedModelError, match=layer_name):
        spec_from_keras(model)


def test_subclassed_model_refused() -> None:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = layers.LSTM(3)

        def call(self, x: Any) -> Any:
            return self.lstm(x)

    net = Net()
    net(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(UnsupportedModelError, match="Net"):
        spec_from_keras(net)
