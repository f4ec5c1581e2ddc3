"""lstm_fast.peers: the same spec run by torch, onnxruntime and Keras agrees with lstm_fast."""

from __future__ import annotations

import os

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.peers import FrameworkUnavailable, Peer, available_peers, build_peer
from lstm_fast.sample_input import random_input
from lstm_fast.spec import (
    BidirectionalSpec,
    EmbeddingSpec,
    MaskingSpec,
    ModelSpec,
)
from tests.helpers import cell_spec, dense_spec

TOL = 1e-5
B, T, I, H, O, VOCAB = 3, 7, 4, 5, 3, 13
LENGTHS = np.array([7, 2, 5])
MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "keras": "keras"}
ALL = frozenset(MODULES)


def _specs() -> dict[str, tuple[ModelSpec, frozenset[str]]]:
    """name -> (spec, the peers that can express it)."""
    rng = np.random.default_rng(7)

    def cell(kind: str, i: int, **kw: object) -> object:
        return cell_spec(rng, kind, i, H, **kw)

    def bi(kind: str, merge: str = "concat", **kw: object) -> BidirectionalSpec:
        return BidirectionalSpec(cell(kind, I, **kw), cell(kind, I, **kw), merge)

    return {
        "lstm_stack_softmax": (ModelSpec((cell("lstm", I), cell("lstm", H),
                                          dense_spec(rng, H, O, "softmax"))), ALL),
        "gru_reset_after": (ModelSpec((cell("gru", I), dense_spec(rng, H, O))), ALL),
        "bilstm_concat": (ModelSpec((bi("lstm"), dense_spec(rng, 2 * H, O, "tanh"))), ALL),
        "bigru_ave_last": (ModelSpec((bi("gru", "ave", return_sequences=False),
                                      dense_spec(rng, H, O))), ALL),
        "embedding_gru": (ModelSpec((EmbeddingSpec(rng.normal(size=(VOCAB, I))),
                                     cell("gru", I), dense_spec(rng, H, O, "relu"))), ALL),
        "rnn_relu_last": (ModelSpec((cell("rnn", I, activation="relu"),
                                     cell("rnn", H, return_sequences=False),
                                     dense_spec(rng, H, O, "gelu"))), ALL),
        "lstm_keras_semantics": (ModelSpec((cell("lstm", I), dense_spec(rng, H, O, "silu")),
                                           mask_semantics="keras"), ALL),
        "lstm_go_backwards": (ModelSpec((cell("lstm", I, go_backwards=True),),
                                        mask_semantics="keras"), ALL),
        "gru_reset_before_hard_sigmoid": (
            ModelSpec((cell("gru_before", I, recurrent_activation="hard_sigmoid"),
                       dense_spec(rng, H, O)), mask_semantics="keras"),
            frozenset({"onnxruntime", "keras"})),
        "lstm_hard_sigmoid_keras2": (
            ModelSpec((cell("lstm", I, recurrent_activation="hard_sigmoid_keras2"),),
                      mask_semantics="keras"), frozenset({"onnxruntime", "keras"})),
        "lstm_projection": (ModelSpec((cell("lstm_proj", I), dense_spec(rng, H // 2, O))),
                            frozenset({"torch"})),
        "masking_lstm": (ModelSpec((MaskingSpec(I), cell("lstm", I), dense_spec(rng, H, O)),
                                   mask_semantics="keras"), frozenset({"keras"})),
    }


SPECS = _specs()


@pytest.fixture(scope="module")
def cache() -> dict[tuple[str, str], Peer | FrameworkUnavailable]:
    return {}


def _peer(cache: dict, name: str, spec_name: str) -> Peer:
    """The peer (built once per module); skips when the framework is not installed."""
    _importorskip(name)
    key = (name, spec_name)
    if key not in cache:
        try:
            cache[key] = build_peer(name, SPECS[spec_name][0])
        except FrameworkUnavailable as e:
            cache[key] = e
    result = cache[key]
    if isinstance(result, FrameworkUnavailable):
        if name in SPECS[spec_name][1]:
            raise AssertionError(f"{name} should express {spec_name}: {result}")
        pytest.skip(f"{name} cannot express {spec_name}")
    return result


def _inputs(spec: ModelSpec) -> np.ndarray:
    x = random_input(spec, B, T, seed=3)
    if spec.uses_mask:
        x[1, 3:5] = 0.0  # masked steps inside a sequence
    return x


def _importorskip(name: str) -> None:
    if name == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3's default needs TensorFlow
    pytest.importorskip(MODULES[name])


PAIRS = [(p, s) for p in MODULES for s in SPECS]


@pytest.mark.parametrize(("name", "spec_name"), PAIRS)
def test_predict_matches_lstm_fast(cache: dict, name: str, spec_name: str) -> None:
    peer = _peer(cache, name, spec_name)
    spec = SPECS[spec_name][0]
    x = _inputs(spec)
    assert peer.name == name and peer.version
    y = peer.predict(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, lf.Model(spec).predict(x), atol=TOL, rtol=0)


@pytest.mark.parametrize(("name", "spec_name"), PAIRS)
def test_predict_with_lengths(cache: dict, name: str, spec_name: str) -> None:
    peer = _peer(cache, name, spec_name)
    spec = SPECS[spec_name][0]
    x = _inputs(spec)
    if any(getattr(L, "go_backwards", False) for L in spec.layers):
        with pytest.raises(FrameworkUnavailable, match="go_backwards"):
            peer.predict(x, LENGTHS)
        return
    want = lf.Model(spec).predict(x, lengths=LENGTHS)
    np.testing.assert_allclose(peer.predict(x, LENGTHS), want, atol=TOL, rtol=0)


@pytest.mark.parametrize(("name", "spec_name"), PAIRS)
def test_stream_step_and_run_match(cache: dict, name: str, spec_name: str) -> None:
    peer = _peer(cache, name, spec_name)
    spec = SPECS[spec_name][0]
    if not spec.streamable:
        with pytest.raises(FrameworkUnavailable, match="backwards"):
            peer.stream(B)
        return
    x = _inputs(spec)
    model = lf.Model(spec)
    s = peer.stream(B)
    steps = [s.step(x[:, t]) for t in range(T)]
    ref = model.stream(B)
    np.testing.assert_allclose(np.stack(steps, 1),
                               np.stack([ref.step(x[:, t]) for t in range(T)], 1),
                               atol=TOL, rtol=0)
    want = model.predict(x)
    if not spec.uses_mask:  # masks restart per call in a stream (lstm_fast's and Keras's)
        got = np.stack(steps, 1) if want.ndim == 3 else steps[-1]
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    s, ref = peer.stream(B), model.stream(B)
    outs, refs = [], []
    for a, b in ((0, 3), (3, 4), (4, T)):
        outs.append(s.run(x[:, a:b]))
        refs.append(ref.run(x[:, a:b]))
    np.testing.assert_allclose(np.concatenate(outs, 1) if want.ndim == 3 else outs[-1],
                               np.concatenate(refs, 1) if want.ndim == 3 else refs[-1],
                               atol=TOL, rtol=0)
    if not spec.uses_mask:
        np.testing.assert_allclose(np.concatenate(outs, 1) if want.ndim == 3 else outs[-1],
                                   want, atol=TOL, rtol=0)


@pytest.mark.parametrize(("name", "spec_name", "reason"), [
    ("onnxruntime", "lstm_projection", "projection"),
    ("keras", "lstm_projection", "projection"),
    ("torch", "masking_lstm", "masking"),
    ("onnxruntime", "masking_lstm", "masking"),
    ("torch", "gru_reset_before_hard_sigmoid", "recurrent_activation"),
    ("torch", "lstm_hard_sigmoid_keras2", "hard_sigmoid_keras2"),
])
def test_unexpressible_specs_say_why(name: str, spec_name: str, reason: str) -> None:
    _importorskip(name)
    assert name not in SPECS[spec_name][1]
    with pytest.raises(FrameworkUnavailable, match=reason):
        build_peer(name, SPECS[spec_name][0])


def test_onnx_cell_activation_missing_is_explained() -> None:
    pytest.importorskip("onnxruntime")
    spec = ModelSpec((cell_spec(np.random.default_rng(0), "gru", I, H, activation="selu"),))
    with pytest.raises(FrameworkUnavailable, match="no activation 'selu'"):
        build_peer("onnxruntime", spec)


def test_torch_zero_length_is_unavailable(cache: dict) -> None:
    peer = _peer(cache, "torch", "gru_reset_after")
    x = _inputs(SPECS["gru_reset_after"][0])
    with pytest.raises(FrameworkUnavailable, match="length"):
        peer.predict(x, np.array([7, 0, 3]))


def test_zero_length_rows_in_ort_and_keras(cache: dict) -> None:
    spec = SPECS["lstm_keras_semantics"][0]
    x, lengths = _inputs(spec), np.array([7, 0, 3])
    want = lf.Model(spec).predict(x, lengths=lengths)
    for name in ("onnxruntime", "keras"):
        got = _peer(cache, name, "lstm_keras_semantics").predict(x, lengths)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_names_and_errors() -> None:
    assert available_peers() == ("torch", "onnxruntime", "keras")
    spec = SPECS["gru_reset_after"][0]
    with pytest.raises(ValueError, match="unknown peer"):
        build_peer("tensorflow", spec)
    with pytest.raises(ValueError, match="threads"):
        build_peer("torch", spec, threads=0)


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_peers_run_affine_and_normalize_layers(name: str) -> None:
    """A converted model's batch norm / activation / L2 head layers, in each peer, equal
    lstm_fast (the peers are built from the spec, so this checks both sides' layer math)."""
    if name not in available_peers():
        pytest.skip(f"{name} is not installed")
    from lstm_fast.spec import AffineSpec, NormalizeSpec

    r = np.random.default_rng(3)
    spec = ModelSpec(layers=(
        cell_spec(r, "lstm", 3, 4),
        AffineSpec(4, scale=r.standard_normal(4), shift=r.standard_normal(4), activation="relu"),
        dense_spec(r, 4, 5), AffineSpec(5, activation="softmax"), NormalizeSpec(5)))
    x = r.standard_normal((2, 30, 3)).astype(np.float32)
    y = lf.Model(spec).predict(x)
    peer = build_peer(name, spec)
    np.testing.assert_allclose(peer.predict(x), y, atol=1e-5)
    stream = peer.stream(2)
    np.testing.assert_allclose(np.stack([stream.step(x[:, t]) for t in range(30)], 1), y,
                               atol=1e-5)
