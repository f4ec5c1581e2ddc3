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
    from_keras,
    spec_from_keras,
    spec_from_keras_file,
)
from lstm_fast.errors import UnsupportedModelError  # noqa: E402
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


BUILDERS: list[Callable[[np.random.Generator], tuple[Any, np.ndarray]]] = [
    seq_stack_last, seq_stack_td, func_options, seq_embedding, func_embedding_last,
    func_masking_backwards, seq_masking_dense, func_return_state, seq_cell_activations,
    long_sequence,
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


def test_weights_h5_with_json_config(tmp_path: Path) -> None:
    """A Keras 3 ``.weights.h5`` plus ``model.to_json()``."""
    keras.utils.set_random_seed(0)
    model, x = seq_masking_dense(np.random.default_rng(1))
    _set_weights(model, 9)
    model.save_weights(tmp_path / "w.weights.h5")
    (tmp_path / "arch.json").write_text(model.to_json())
    for config in (tmp_path / "arch.json", model.to_json()):
        spec = spec_from_keras_file(tmp_path / "w.weights.h5", config=config)
        np.testing.assert_allclose(spec_forward(spec, x)[0], _run(model, x), atol=TOL, rtol=0)


def test_keras_zip_without_name_attributes(tmp_path: Path) -> None:
    """Files without the ``@name`` attribute on ``vars`` (tf-keras, older Keras 3) are read by
    the snake_case-class-name + counter order rule."""
    keras.utils.set_random_seed(0)
    model, x = func_options(np.random.default_rng(2))
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
        assert "name" not in f["layers/lstm/vars"].attrs
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


# --- refusals ----------------------------------------------------------------------------

REFUSED = {
    "gru": (lambda: keras.Sequential([keras.Input((None, 3)), layers.GRU(4, name="my_gru")]),
            "my_gru", ["GRU", "not supported yet"]),
    "bidirectional": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Bidirectional(layers.LSTM(4), name="bi")]),
        "bi", ["Bidirectional", "not supported yet"]),
    "simple_rnn": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.SimpleRNN(4, name="srnn")]),
        "srnn", ["SimpleRNN", "not supported yet"]),
    "conv1d": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.Conv1D(4, 3, name="conv"), layers.LSTM(3)]),
        "conv", ["Conv1D"]),
    "masking_after_embedding": (lambda: keras.Sequential([
        keras.Input((None,), dtype="int32"), layers.Embedding(5, 3),
        layers.Masking(name="late_mask"), layers.LSTM(3)]), "late_mask", ["Masking"]),
    "activation_after_lstm": (lambda: keras.Sequential([
        keras.Input((None, 3)), layers.LSTM(3, return_sequences=True),
        layers.Activation("relu", name="act")]), "act", ["Activation"]),
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


REFUSED["branching"] = (_branching, "merge", ["Add", "single chain"])
REFUSED["state_used"] = (_state_used, "stateful_out", ["LSTM", "output #1"])


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
