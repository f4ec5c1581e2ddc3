"""Keras golden files, checked without Keras (h5py + numpy only).

- ``tests/fixtures/keras/*.keras|.h5`` were written by Keras 3 (torch backend) with their
  outputs in ``<name>.io.npz`` (regenerate with ``tests/fixtures/make_keras_fixtures.py``);
- tf.keras 2 / Keras 1 files cannot be produced here, so ``make_keras2_h5.py`` synthesizes them
  with h5py as FORMATS.md section 2.5 describes, and the expected outputs come from a numpy
  LSTM / GRU written below in Keras's own layout (x @ kernel, column blocks i, f, c, o / z, r, h,
  hard_sigmoid = clip(0.2x + 0.5, 0, 1)).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import lstm_fast  # noqa: E402
from lstm_fast.converters.keras import spec_from_keras_file  # noqa: E402
from lstm_fast.errors import ModelFileError, UnsupportedModelError  # noqa: E402
from tests import helpers  # noqa: E402
from tests.reference import spec_forward  # noqa: E402

TOL = 1e-5
FIXTURES = helpers.FIXTURES / "keras"
GOLDEN = {
    "text_embedding": "keras",
    "masking_backwards": "keras",
    "stacked_hard_sigmoid": "h5",
    "stateful": "keras",
    "bidir_gru_text": "keras",
    "gru_simple_rnn": "h5",
    "masking_bidir_lstm": "keras",
    "stacked_cells_bn": "keras",
    "rnn_cells_bn_h5": "h5",
}


def _load_golden(name: str) -> tuple[Path, dict[str, np.ndarray]]:
    path = FIXTURES / f"{name}.{GOLDEN[name]}"
    with np.load(FIXTURES / f"{name}.io.npz") as z:
        return path, dict(z)


# --- Keras 3 golden files ----------------------------------------------------------------

@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_oracle(name: str) -> None:
    path, io = _load_golden(name)
    spec = spec_from_keras_file(path)
    assert spec.mask_semantics == "keras"
    assert spec.metadata["source_framework"] == "keras"
    assert spec.metadata["keras_version"].startswith("3.")
    assert spec.metadata["backend"] in ("torch", "unknown")
    assert spec.metadata["source"] == str(path)
    y, _ = spec_forward(spec, io["x"])
    np.testing.assert_allclose(y, io["y"], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_engine(name: str) -> None:
    path, io = _load_golden(name)
    model = lstm_fast.Model(spec_from_keras_file(path))
    np.testing.assert_allclose(model.predict(io["x"]), io["y"], atol=TOL, rtol=0)


def test_golden_stateful_stream() -> None:
    """Keras ran the stateful model in two calls; a stream fed the same chunks matches."""
    path, io = _load_golden("stateful")
    spec = spec_from_keras_file(path)
    assert spec.stateful
    split = int(io["split"])
    stream = lstm_fast.Model(spec).stream(batch=io["x"].shape[0])
    y = np.concatenate([stream.run(io["x"][:, :split]), stream.run(io["x"][:, split:])], axis=1)
    np.testing.assert_allclose(y, io["y"], atol=TOL, rtol=0)


def test_golden_structure() -> None:
    spec = spec_from_keras_file(FIXTURES / "text_embedding.keras")
    emb, lstm, dense = spec.layers
    assert (emb.kind, emb.mask_zero, emb.vocab_size) == ("embedding", True, 20)
    assert not lstm.return_sequences and dense.activation == "softmax"
    assert spec.takes_ids

    spec = spec_from_keras_file(FIXTURES / "masking_backwards.keras")
    assert [L.kind for L in spec.layers] == ["masking", "lstm", "dense"]    # Dropout dropped
    assert spec.layers[0].mask_value == -1.0 and spec.layers[0].size == 3
    assert spec.layers[1].go_backwards and spec.layers[1].return_sequences
    assert spec.layers[2].activation == "relu"

    spec = spec_from_keras_file(FIXTURES / "stacked_hard_sigmoid.h5")
    first, second, _ = spec.layers
    assert first.bias is None and first.recurrent_activation == "hard_sigmoid"   # Keras 3
    assert second.activation == "relu" and second.bias is not None
    assert spec.metadata["format"] == "h5"

    spec = spec_from_keras_file(FIXTURES / "bidir_gru_text.keras")
    emb, bi, dense = spec.layers
    assert emb.mask_zero and spec.takes_ids and dense.activation == "softmax"
    assert (bi.kind, bi.merge_mode, bi.output_size, bi.return_sequences) == (
        "bidirectional", "concat", 20, False)
    assert bi.forward.kind == bi.backward.kind == "gru"
    assert bi.forward.reset_after and bi.backward.b_hh is not None
    assert not bi.forward.go_backwards and not bi.backward.go_backwards
    assert not spec.returns_sequences and not spec.streamable
    assert [c.kind for c in spec.cells] == ["gru", "gru"]

    spec = spec_from_keras_file(FIXTURES / "gru_simple_rnn.h5")
    gru, rnn, _ = spec.layers
    assert (gru.kind, gru.reset_after, gru.recurrent_activation) == (
        "gru", False, "hard_sigmoid")                                # Keras 3: x/6 + 0.5
    assert gru.b_ih is not None and gru.b_hh is None
    assert (rnn.kind, rnn.activation) == ("rnn", "relu")
    assert spec.metadata["format"] == "h5" and io_steps("gru_simple_rnn") >= 500

    spec = spec_from_keras_file(FIXTURES / "masking_bidir_lstm.keras")
    masking, bi, _ = spec.layers
    assert masking.mask_value == 0.0 and masking.size == 3
    assert (bi.merge_mode, bi.forward.kind, bi.output_size) == ("ave", "lstm", 7)


def test_golden_cells_and_batchnorm_structure() -> None:
    """RNN(StackedRNNCells) -> one layer per cell; each BatchNormalization folded into the next
    layer, and the folds recorded in the metadata."""
    spec = spec_from_keras_file(FIXTURES / "stacked_cells_bn.keras")
    assert [L.kind for L in spec.layers] == ["masking", "lstm", "gru", "bidirectional", "dense"]
    lstm, gru, bi = spec.layers[1:4]
    assert lstm.return_sequences and gru.return_sequences and gru.reset_after
    assert bi.forward.kind == "rnn" and bi.merge_mode == "concat"
    assert spec.metadata["folded"] == (
        "bn1 folded into the next layer (bidirectional birnn); "
        "bn2 folded into the next layer (dense time_distributed)")

    spec = spec_from_keras_file(FIXTURES / "rnn_cells_bn_h5.h5")
    assert [L.kind for L in spec.layers] == ["embedding", "gru", "lstm", "dense"]
    assert not spec.layers[1].reset_after and not spec.layers[2].return_sequences
    assert spec.metadata["folded"].count("folded into the next layer") == 2
    assert spec.metadata["format"] == "h5"


def io_steps(name: str) -> int:
    return int(_load_golden(name)[1]["x"].shape[1])


def test_golden_bidirectional_masked_outputs_are_zero() -> None:
    """Keras's Bidirectional outputs exactly 0 at masked steps (holes included)."""
    _, io = _load_golden("masking_bidir_lstm")
    masked = ~np.any(io["x"] != 0.0, axis=-1)
    assert masked.sum() >= 5
    spec = spec_from_keras_file(FIXTURES / "masking_bidir_lstm.keras")
    dense = spec.layers[-1]
    np.testing.assert_allclose(io["y"][masked], np.broadcast_to(dense.bias, io["y"][masked].shape),
                               atol=1e-6, rtol=0)


# --- synthesized Keras 2 / Keras 1 files -------------------------------------------------

def _load_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mk = _load_module("make_keras2_h5")


@pytest.fixture(scope="module")
def k2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mk.write_all(tmp_path_factory.mktemp("keras2"))


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return mk.make_weights()


def keras2_lstm(x: np.ndarray, w: dict[str, np.ndarray], mask: np.ndarray | None = None,
                slope: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Keras layout, Keras 2 hard_sigmoid; returns (outputs (B, T, U), last output)."""
    def hs(z: np.ndarray) -> np.ndarray:
        return np.clip(slope * z + 0.5, 0.0, 1.0)

    kernel, rec, bias = (np.asarray(w[k], np.float64)
                         for k in ("kernel", "recurrent_kernel", "bias"))
    B, T, _ = x.shape
    u = rec.shape[0]
    h, c, out = np.zeros((B, u)), np.zeros((B, u)), np.zeros((B, u))
    ys = np.zeros((B, T, u))
    for t in range(T):
        z = x[:, t] @ kernel + h @ rec + bias
        i, f, cand, o = (z[:, k * u:(k + 1) * u] for k in range(4))
        c_new = hs(f) * c + hs(i) * np.tanh(cand)
        h_new = hs(o) * np.tanh(c_new)
        m = np.ones((B, 1), bool) if mask is None else mask[:, t, None]
        h, c, out = np.where(m, h_new, h), np.where(m, c_new, c), np.where(m, h_new, out)
        ys[:, t] = out
    return ys, out


def keras2_gru(x: np.ndarray, kernel: np.ndarray, rec: np.ndarray, bias: np.ndarray, *,
               reset_after: bool, ract: str = "hard_sigmoid", go_backwards: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Keras layout (column blocks z, r, h), Keras 2 hard_sigmoid or sigmoid; ``bias`` is
    (3u,) or (2, 3u). Returns (outputs in processing order (B, T, U), last output)."""
    def f(z: np.ndarray) -> np.ndarray:
        if ract == "sigmoid":
            return 1.0 / (1.0 + np.exp(-z))
        return np.clip(0.2 * z + 0.5, 0.0, 1.0)

    kernel, rec, bias = (np.asarray(a, np.float64) for a in (kernel, rec, bias))
    B, T, _ = x.shape
    u = rec.shape[0]
    h = np.zeros((B, u))
    ys = np.zeros((B, T, u))
    steps = range(T - 1, -1, -1) if go_backwards else range(T)
    for p, t in enumerate(steps):
        if reset_after:
            xz = x[:, t] @ kernel + bias[0]
            hz = h @ rec + bias[1]
            z, r = f(xz[:, :u] + hz[:, :u]), f(xz[:, u:2 * u] + hz[:, u:2 * u])
            cand = np.tanh(xz[:, 2 * u:] + r * hz[:, 2 * u:])
        else:
            xz = x[:, t] @ kernel + bias
            z = f(xz[:, :u] + h @ rec[:, :u])
            r = f(xz[:, u:2 * u] + h @ rec[:, u:2 * u])
            cand = np.tanh(xz[:, 2 * u:] + (r * h) @ rec[:, 2 * u:])
        h = z * h + (1.0 - z) * cand
        ys[:, p] = h
    return ys, h


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def x2() -> np.ndarray:
    return np.random.default_rng(21).normal(size=(3, 11, mk.I)) * 2.0


def _seq_reference(x: np.ndarray, w: dict[str, np.ndarray], slope: float = 0.2) -> np.ndarray:
    ys, _ = keras2_lstm(x, w, slope=slope)
    return softmax(ys @ w["dense_kernel"] + w["dense_bias"])


def _check(spec: lstm_fast.ModelSpec, x: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(spec_forward(spec, x)[0], expected, atol=TOL, rtol=0)
    y = lstm_fast.Model(spec).predict(x.astype(np.float32))
    np.testing.assert_allclose(y, expected, atol=TOL, rtol=0)


def test_keras2_full_model_mapping(k2: dict[str, Path], weights: dict[str, np.ndarray]) -> None:
    spec = spec_from_keras_file(k2["full"])
    lstm, dense = spec.layers
    assert lstm.recurrent_activation == "hard_sigmoid_keras2"     # keras_version 2.15.0
    assert lstm.activation == "tanh" and lstm.return_sequences
    np.testing.assert_array_equal(lstm.w_ih, weights["kernel"].T)
    np.testing.assert_array_equal(lstm.w_hh, weights["recurrent_kernel"].T)
    np.testing.assert_array_equal(lstm.bias, weights["bias"])
    np.testing.assert_array_equal(dense.weight, weights["dense_kernel"].T)
    assert dense.activation == "softmax"
    assert spec.metadata["keras_version"] == mk.KERAS2_VERSION
    assert spec.metadata["backend"] == "tensorflow"


def test_keras2_full_model_numbers(k2: dict[str, Path], weights: dict[str, np.ndarray],
                                   x2: np.ndarray) -> None:
    expected = _seq_reference(x2, weights)
    _check(spec_from_keras_file(k2["full"]), x2, expected)
    # the Keras 3 meaning of "hard_sigmoid" (slope 1/6) really gives other numbers here
    assert np.abs(_seq_reference(x2, weights, slope=1 / 6) - expected).max() > 1e-3


def test_keras2_save_weights_with_config(k2: dict[str, Path], weights: dict[str, np.ndarray],
                                         x2: np.ndarray) -> None:
    expected = _seq_reference(x2, weights)
    text = k2["json"].read_text()
    for config in (k2["json"], str(k2["json"]), text, json.loads(text)):
        spec = spec_from_keras_file(k2["weights"], config=config)
        assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
        assert spec.metadata["format"] == "h5_weights"
        _check(spec, x2, expected)
    with pytest.raises(ModelFileError, match="config="):
        spec_from_keras_file(k2["weights"])


def test_keras2_save_weights_matched_by_order(k2: dict[str, Path],
                                              weights: dict[str, np.ndarray],
                                              x2: np.ndarray) -> None:
    """An architecture re-created with other auto-generated names still loads (by order, as
    Keras's load_weights does)."""
    cfg = json.loads(k2["json"].read_text())
    cfg["config"]["layers"][1]["config"]["name"] = "lstm_7"
    cfg["config"]["layers"][2]["config"]["name"] = "time_distributed_3"
    _check(spec_from_keras_file(k2["weights"], config=cfg), x2, _seq_reference(x2, weights))


def test_keras2_functional_masking(k2: dict[str, Path], weights: dict[str, np.ndarray]) -> None:
    """Functional config with Keras 2 inbound nodes, weight names with global counters
    (lstm_1/lstm_cell_1/kernel:0), a split weight_names attribute, Masking, last step only."""
    spec = spec_from_keras_file(k2["functional"])
    assert [L.kind for L in spec.layers] == ["masking", "lstm", "dense"]
    assert not spec.layers[1].return_sequences
    x = np.random.default_rng(22).normal(size=(3, 9, mk.I)) * 2.0
    x[0, 6:] = 0.0
    x[1, :3] = 0.0
    x[2, 4] = 0.0
    mask = np.any(x != 0.0, axis=-1)
    _, last = keras2_lstm(x, weights, mask)
    _check(spec, x, softmax(last @ weights["dense_kernel"] + weights["dense_bias"]))


def test_keras1_twelve_arrays(k2: dict[str, Path], weights: dict[str, np.ndarray],
                              x2: np.ndarray) -> None:
    spec = spec_from_keras_file(k2["keras1"])
    assert spec.metadata["keras_version"] == "1"
    assert spec.layers[0].recurrent_activation == "hard_sigmoid_keras2"
    np.testing.assert_array_equal(spec.layers[0].w_ih, weights["kernel"].T)
    _check(spec, x2, _seq_reference(x2, weights))


def test_cudnn_lstm(k2: dict[str, Path], weights: dict[str, np.ndarray], x2: np.ndarray) -> None:
    spec = spec_from_keras_file(k2["cudnn"])
    lstm = spec.layers[0]
    assert (lstm.activation, lstm.recurrent_activation) == ("tanh", "sigmoid")
    np.testing.assert_array_equal(lstm.w_ih, weights["kernel"].T)
    np.testing.assert_array_equal(lstm.w_hh, weights["recurrent_kernel"].T)
    np.testing.assert_allclose(lstm.bias, weights["bias"], atol=1e-7, rtol=0)
    # tf-keras's own conversion (kernel.T.reshape(shape, order='F') per gate) agrees
    with h5py.File(k2["cudnn"], "r") as f:
        stored = f["model_weights/cu_dnnlstm/cu_dnnlstm/kernel:0"][()]
    tfk = np.concatenate([k.T.reshape(k.shape, order="F") for k in np.split(stored, 4, axis=1)],
                         axis=1)
    np.testing.assert_array_equal(lstm.w_ih, tfk.T)


@pytest.fixture(scope="module")
def gru_weights() -> dict[str, np.ndarray]:
    return mk.make_gru_weights(8)


def _gru_seq_reference(x: np.ndarray, g: dict[str, np.ndarray], bias_key: str = "bias",
                       ract: str = "hard_sigmoid") -> np.ndarray:
    ys, _ = keras2_gru(x, g["kernel"], g["recurrent_kernel"], g[bias_key],
                       reset_after=bias_key == "bias_ra", ract=ract)
    return softmax(ys @ g["dense_kernel"] + g["dense_bias"])


def test_keras2_gru_reset_before_hard_sigmoid(k2: dict[str, Path],
                                              gru_weights: dict[str, np.ndarray],
                                              x2: np.ndarray) -> None:
    spec = spec_from_keras_file(k2["gru"])
    gru, dense = spec.layers
    assert (gru.kind, gru.reset_after, gru.recurrent_activation) == (
        "gru", False, "hard_sigmoid_keras2")                          # keras_version 2.15.0
    assert gru.b_hh is None and dense.activation == "softmax"
    expected = _gru_seq_reference(x2, gru_weights)
    _check(spec, x2, expected)
    # the Keras 3 meaning of "hard_sigmoid" (slope 1/6) really gives other numbers here
    k3 = spec_from_keras_file(k2["gru"], keras_version="3.15.1")
    assert k3.layers[0].recurrent_activation == "hard_sigmoid"
    assert np.abs(spec_forward(k3, x2)[0] - expected).max() > 1e-3


def test_keras2_bidirectional_gru_implied_backward(k2: dict[str, Path],
                                                   gru_weights: dict[str, np.ndarray],
                                                   x2: np.ndarray) -> None:
    """tf-keras Bidirectional config with only ``layer``: the backward copy is implied; its
    weights are the second half (names with global counters, ``backward_gru_4``)."""
    spec = spec_from_keras_file(k2["bidir_gru"])
    bi, dense = spec.layers
    assert (bi.kind, bi.merge_mode, bi.return_sequences) == ("bidirectional", "concat", False)
    assert bi.forward.reset_after and bi.backward.reset_after
    assert bi.forward.recurrent_activation == bi.backward.recurrent_activation == "sigmoid"
    g = gru_weights
    _, fwd = keras2_gru(x2, g["kernel"], g["recurrent_kernel"], g["bias_ra"], reset_after=True,
                        ract="sigmoid")
    _, bwd = keras2_gru(x2, g["bwd_kernel"], g["bwd_recurrent_kernel"], g["bwd_bias_ra"],
                        reset_after=True, ract="sigmoid", go_backwards=True)
    merged = np.concatenate([fwd, bwd], axis=-1)
    _check(spec, x2, softmax(merged @ g["bi_dense_kernel"] + g["dense_bias"]))


def test_keras1_gru_nine_arrays(k2: dict[str, Path], gru_weights: dict[str, np.ndarray],
                                x2: np.ndarray) -> None:
    spec = spec_from_keras_file(k2["keras1_gru"])
    gru = spec.layers[0]
    assert spec.metadata["keras_version"] == "1"
    assert (gru.reset_after, gru.recurrent_activation) == (False, "hard_sigmoid_keras2")
    _check(spec, x2, _gru_seq_reference(x2, gru_weights))


def test_cudnn_gru(k2: dict[str, Path], gru_weights: dict[str, np.ndarray],
                   x2: np.ndarray) -> None:
    spec = spec_from_keras_file(k2["cudnn_gru"])
    gru = spec.layers[0]
    assert (gru.reset_after, gru.activation, gru.recurrent_activation) == (True, "tanh",
                                                                            "sigmoid")
    _check(spec, x2, _gru_seq_reference(x2, gru_weights, "bias_ra", ract="sigmoid"))


def test_keras2_gru_bias_shape_contradicts_config(k2: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "contradiction.h5"
    mk.write_gru_model(path, mk.make_gru_weights(8))
    cfg = mk.gru_sequential_config()
    cfg["config"]["layers"][1]["config"]["reset_after"] = True
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(cfg).encode()
    with pytest.raises(ModelFileError, match="reset_after"):
        spec_from_keras_file(path)


def test_keras2_time_major_refused(k2: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "time_major.h5"
    mk.write_full_model(path, mk.make_weights())
    cfg = mk.sequential_config()
    cfg["config"]["layers"][1]["config"]["time_major"] = True
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(cfg).encode()
    with pytest.raises(UnsupportedModelError) as err:
        spec_from_keras_file(path)
    msg = str(err.value)
    assert "'lstm'" in msg and "LSTM" in msg and "time_major" in msg and str(path) in msg


def test_keras_version_override(k2: dict[str, Path]) -> None:
    spec = spec_from_keras_file(k2["full"], keras_version="3.15.1")
    assert spec.layers[0].recurrent_activation == "hard_sigmoid"


def test_lstm_config_over_cudnn_weights(k2: dict[str, Path], weights: dict[str, np.ndarray],
                                        x2: np.ndarray) -> None:
    """An ``LSTM`` config whose weights are a CuDNNLSTM's (bias 8u): converted as tf-keras does
    on load, and run with the config's own activations (hard_sigmoid here)."""
    spec = spec_from_keras_file(k2["lstm_over_cudnn"])
    lstm = spec.layers[0]
    assert lstm.recurrent_activation == "hard_sigmoid_keras2"
    np.testing.assert_array_equal(lstm.w_ih, weights["kernel"].T)
    np.testing.assert_array_equal(lstm.w_hh, weights["recurrent_kernel"].T)
    assert "cuDNN" in spec.metadata["notes"] and "'lstm'" not in spec.metadata["notes"]
    assert "lstm: the LSTM config holds cuDNN-layout weights" in spec.metadata["notes"]
    _check(spec, x2, _seq_reference(x2, weights))


@pytest.mark.parametrize("kind", ["gru_over_cudnn", "gru_over_cudnn_keras20"])
def test_gru_config_over_cudnn_weights(kind: str, k2: dict[str, Path],
                                       gru_weights: dict[str, np.ndarray],
                                       x2: np.ndarray) -> None:
    """A ``GRU`` config (reset_after=True, or no reset_after key as Keras 2.0-2.2 wrote)
    over CuDNNGRU weights (bias 6u): a reset-after GRU with the config's hard_sigmoid."""
    spec = spec_from_keras_file(k2[kind])
    gru = spec.layers[0]
    assert gru.reset_after and gru.recurrent_activation == "hard_sigmoid_keras2"
    assert "cuDNN" in spec.metadata["notes"]
    _check(spec, x2, _gru_seq_reference(x2, gru_weights, "bias_ra"))


def test_gru_reset_before_over_cudnn_weights_refused(k2: dict[str, Path]) -> None:
    """tf-keras refuses CuDNNGRU weights in a GRU(reset_after=False); so do we."""
    with pytest.raises(ModelFileError) as err:
        spec_from_keras_file(k2["gru_reset_before_over_cudnn"])
    msg = str(err.value)
    assert "'gru'" in msg and "cuDNN" in msg and "reset_after=False" in msg
    assert str(k2["gru_reset_before_over_cudnn"]) in msg


# --- committed Keras 2.0 / 2.1 files (structure of real pretrained diacritizers) ------------

oracle2 = _load_module("keras2_oracle")


@pytest.mark.parametrize("name", list(mk.KERAS2_GOLDEN))
def test_keras2_golden(name: str) -> None:
    """Keras 2.0.8 / 2.1.6 files that Keras 3 cannot load: the converted model equals the
    independent float64 Keras 2 oracle (outputs committed, and recomputed here)."""
    path = FIXTURES / f"{name}.h5"
    with np.load(FIXTURES / f"{name}.io.npz") as z:
        x, y = z["x"], z["y"]
    np.testing.assert_allclose(oracle2.keras2_predict(str(path), x), y, atol=1e-12, rtol=0)
    spec = spec_from_keras_file(path)
    assert spec.metadata["keras_version"].startswith(("2.0", "2.1"))
    assert all(c.recurrent_activation == "hard_sigmoid_keras2" for c in spec.cells)
    assert all(c.reset_after is False for c in spec.cells if c.kind == "gru")
    np.testing.assert_allclose(spec_forward(spec, x)[0], y, atol=TOL, rtol=0)
    np.testing.assert_allclose(lstm_fast.Model(spec).predict(x), y, atol=TOL, rtol=0)


def test_keras2_golden_batchnorm_folded() -> None:
    spec = spec_from_keras_file(FIXTURES / "keras21_bilstm_bn.h5")
    assert [L.kind for L in spec.layers] == ["embedding", "bidirectional", "bidirectional",
                                             "bidirectional", "dense"]
    assert spec.metadata["folded"] == ("batch_normalization_13 folded into the next layer "
                                       "(bidirectional bidirectional_20)")


@pytest.mark.parametrize("axis", [[2], 2, -1, [1], 1, [1, 2]])
def test_keras2_batchnorm_axis(axis: object, tmp_path: Path) -> None:
    """tf-keras saves the built axis (``[2]`` for (B, T, F) inputs): the feature axis is
    accepted in every spelling, any other axis is refused."""
    path = tmp_path / "bn_axis.h5"
    path.write_bytes((FIXTURES / "keras21_bilstm_bn.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        cfg["config"][2]["config"]["axis"] = axis
        f.attrs["model_config"] = json.dumps(cfg).encode()
    if axis in ([2], 2, -1):
        assert spec_from_keras_file(path).metadata["folded"].startswith("batch_normalization_13")
        return
    with pytest.raises(UnsupportedModelError, match=r"'batch_normalization_13'.*axis="):
        spec_from_keras_file(path)


def test_keras1_batchnorm_refused() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        spec_from_keras_file(FIXTURES / "keras21_bilstm_bn.h5", keras_version="1")
    msg = str(err.value)
    assert "'batch_normalization_13' (BatchNormalization)" in msg and "Keras 1" in msg
    assert "keras21_bilstm_bn.h5" in msg


# --- malformed files ---------------------------------------------------------------------

def test_not_a_keras_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="junk.h5"):
        spec_from_keras_file(junk)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(ModelFileError, match="not a Keras"):
        spec_from_keras_file(empty)
    bad_zip = tmp_path / "bad.keras"
    bad_zip.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(ModelFileError, match="bad.keras"):
        spec_from_keras_file(bad_zip)


def test_weights_inconsistent_with_config(k2: dict[str, Path], tmp_path: Path) -> None:
    cfg = mk.sequential_config()
    cfg["config"]["layers"][1]["config"]["units"] = 7
    with pytest.raises(ModelFileError, match="recurrent_kernel|kernel"):
        spec_from_keras_file(k2["weights"], config=cfg)


def test_reading_files_never_imports_keras() -> None:
    code = (
        "import sys\n"
        "from lstm_fast.converters.keras import spec_from_keras_file\n"
        f"for p in {[str(FIXTURES / f'{n}.{e}') for n, e in GOLDEN.items()]!r}:\n"
        "    spec_from_keras_file(p)\n"
        "bad = [m for m in ('keras', 'tensorflow', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
