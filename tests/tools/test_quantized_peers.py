"""Quantized peer variants (issue 13): torch ``quantize_dynamic`` (int8 per tensor, int8 per
channel, fp16) and ONNX Runtime ``quantize_dynamic`` (DynamicQuantizeLSTM, int8 per tensor and
per channel) build and run on small models, their error against the float32 model is loose but
sane (and nonzero: they really quantize), and what the frameworks cannot quantize is
unavailable with a clear reason."""

from __future__ import annotations

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.bench.traffic import lstm_fast_step_bytes, peer_step_bytes
from lstm_fast.peers import FrameworkUnavailable, Quantization, build_peer, peer_class
from lstm_fast.spec import BidirectionalSpec, ModelSpec
from tests.helpers import cell_spec, dense_spec

B, T, I, H, O = 2, 40, 8, 16, 3
#: A loose sanity bound on a quantized peer's max abs error (outputs in [-1, 1]).
SANE = 0.5
VARIANTS = {"torch": ("int8", "int8-per-channel", "fp16"),
            "onnxruntime": ("int8", "int8-per-channel")}
CASES = [(p, v) for p, vs in VARIANTS.items() for v in vs]


def _spec(kind: str) -> ModelSpec:
    rng = np.random.default_rng(11)
    return ModelSpec((cell_spec(rng, kind, I, H), dense_spec(rng, H, O, "tanh")))


def _x() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((B, T, I)).astype(np.float32)


def test_variant_tables() -> None:
    for name, variants in VARIANTS.items():
        cls = peer_class(name)
        assert tuple(cls.quantized_variants) == variants
        assert not set(cls.variants) & set(cls.quantized_variants)  # never a float32 variant
    assert peer_class("torch").quantized_variants["int8-per-channel"] == \
        Quantization("int8", per_row=True)


@pytest.mark.parametrize(("name", "variant"), CASES)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_quantized_variant_runs_with_a_sane_nonzero_error(name: str, variant: str,
                                                          kind: str) -> None:
    pytest.importorskip(name)
    spec = _spec(kind)
    if name == "onnxruntime" and kind == "gru":
        with pytest.raises(FrameworkUnavailable, match="only LSTM"):
            build_peer(f"{name}[{variant}]", spec)
        return
    peer = build_peer(f"{name}[{variant}]", spec)
    assert peer.label == f"{name}[{variant}]" and peer.quantization is not None
    assert peer.weights_dtype == variant[:4]
    x = _x()
    want = lf.Model(spec).predict(x)
    y = peer.predict(x)
    err = float(np.abs(y - want).max())
    assert 0 < err < SANE, err
    s = peer.stream(B)
    steps = np.stack([s.step(x[:, t]) for t in range(T)], 1)
    assert 0 < float(np.abs(steps - want).max()) < SANE
    # a stream's chunks continue each other as its steps do
    s2 = peer.stream(B)
    chunks = np.concatenate([s2.run(x[:, :15]), s2.run(x[:, 15:])], 1)
    assert float(np.abs(chunks - want).max()) < SANE


@pytest.mark.parametrize("variant", VARIANTS["torch"])
def test_torch_quantizes_each_module_bidirectional_too(variant: str) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    spec = ModelSpec((BidirectionalSpec(cell_spec(rng, "lstm", I, H), cell_spec(rng, "lstm", I, H)),
                      dense_spec(rng, 2 * H, O)))
    peer = build_peer(f"torch[{variant}]", spec)
    dynamic = torch.ao.nn.quantized.dynamic
    assert [type(m) for _, m, _ in peer._stages] == [dynamic.LSTM, dynamic.Linear]
    x = _x()
    assert 0 < np.abs(peer.predict(x) - lf.Model(spec).predict(x)).max() < SANE


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_rnn_is_unavailable(name: str, variant: str) -> None:
    pytest.importorskip(name)
    why = "no quantized nn.RNN" if name == "torch" else "only LSTM"
    with pytest.raises(FrameworkUnavailable, match=why):
        build_peer(f"{name}[{variant}]", _spec("rnn"))


def test_torch_projection_is_unavailable() -> None:
    pytest.importorskip("torch")
    spec = ModelSpec((cell_spec(np.random.default_rng(0), "lstm_proj", I, H),))
    with pytest.raises(FrameworkUnavailable, match="projection"):
        build_peer("torch[int8]", spec)


def test_torch_module_left_unquantized_is_a_typed_error(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic", lambda m, *a, **k: m)
    with pytest.raises(FrameworkUnavailable, match="not quantized"):
        build_peer("torch[int8]", _spec("lstm"))


def test_ort_graph_holds_dynamic_quantize_lstm() -> None:
    pytest.importorskip("onnxruntime")
    from lstm_fast.peers.onnxruntime import build_onnx_model, quantize_onnx_model

    spec = _spec("lstm")
    for kw in ({"time_major": True}, {"stream": True, "step": True}):
        q = quantize_onnx_model(build_onnx_model(spec, **kw), Quantization("int8", True))
        ops = [n.op_type for n in q.graph.node]
        assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    with pytest.raises(FrameworkUnavailable, match="only LSTM"):
        quantize_onnx_model(build_onnx_model(_spec("gru")), Quantization("int8"))


def test_unknown_variant_lists_the_quantized_ones() -> None:
    with pytest.raises(ValueError, match="int8-per-channel"):
        build_peer("torch[int4]", _spec("lstm"))


def test_step_bytes() -> None:
    spec = _spec("lstm")
    G = 4 * H
    weights = G * I + G * H
    dense = O * H * 4 + O * 4
    assert peer_step_bytes(spec) == 4 * weights + 4 * G + dense
    assert peer_step_bytes(spec, Quantization("int8")) == \
        weights + 4 * 2 + 4 * G + (O * H + 4) + O * 4
    assert peer_step_bytes(spec, Quantization("int8", per_row=True)) == \
        weights + 4 * 2 * G + 4 * G + (O * H + 4 * O) + O * 4
    assert peer_step_bytes(spec, Quantization("fp16")) == 2 * weights + 4 * G + 2 * O * H + 4 * O
    fp32 = lf.Model(spec)
    q8 = fp32.quantize("int8", measure_steps=0)
    scales = 4 * 2 * G * (2 if q8.isa == "avx512" else 1)  # + the VNNI corrections
    dense8 = O * H + 4 * O + 4 * O  # int8 codes, one scale per output, fp32 biases
    assert lstm_fast_step_bytes(q8) == q8.step_weight_bytes + scales + 4 * G + dense8
    assert lstm_fast_step_bytes(fp32) == fp32.step_weight_bytes + 4 * G + dense
    assert lstm_fast_step_bytes(q8) < lstm_fast_step_bytes(fp32) / 2
