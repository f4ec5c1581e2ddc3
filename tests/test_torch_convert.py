"""PyTorch -> ModelSpec: architecture inference from state dicts, live modules, and parity.

Parity is checked twice: torch's own output against the float64 oracle
``tests.reference.spec_forward`` run on the converted spec (is the conversion right?), and
against ``lstm_fast.Model(spec).predict`` (does the engine run it right?).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.torch import from_torch, spec_from_state_dict, spec_from_torch_file
from lstm_fast.errors import UnsupportedModelError, WeightsError
from tests.reference import spec_forward

torch = pytest.importorskip("torch")
nn = torch.nn

ATOL = 1e-5


def check_parity(spec: lf.ModelSpec, x: np.ndarray, expected: np.ndarray,
                 lengths: np.ndarray | None = None) -> None:
    y_ref, _ = spec_forward(spec, x, lengths=lengths)
    np.testing.assert_allclose(y_ref, expected, rtol=0, atol=ATOL, err_msg="oracle vs torch")
    y = lf.Model(spec).predict(x, lengths=lengths)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=ATOL, err_msg="engine vs torch")


def run_sequential(seq: Any, x: Any) -> np.ndarray:
    """What from_torch means by a Sequential: batch-first, an LSTM passes on its output."""
    with torch.inference_mode():
        for mod in seq:
            if isinstance(mod, nn.LSTM):
                x = mod(x)[0] if mod.batch_first else mod(x.transpose(0, 1))[0].transpose(0, 1)
            else:
                x = mod(x)
    return x.numpy()


class Classifier(nn.Module):
    def __init__(self, vocab: int = 30, emb: int = 6, hidden: int = 12, classes: int = 5,
                 two_linears: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 7 if two_linears else classes)
        self.out = nn.Linear(7, classes) if two_linears else None

    def forward(self, ids: Any, lengths: Any = None, last: bool = True) -> Any:
        e = self.embedding(ids)
        if lengths is not None:
            e = nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True,
                                                  enforce_sorted=False)
        y, (h, _) = self.lstm(e)
        z = self.fc(h[-1] if last else y)
        return self.out(torch.tanh(z)) if self.out is not None else z


# --------------------------------------------------------------------------------------------
# Architecture inference


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_stack_inference(num_layers: int, bias: bool) -> None:
    torch.manual_seed(num_layers)
    m = nn.LSTM(5, 9, num_layers=num_layers, bias=bias)
    sd = m.state_dict()
    spec = spec_from_state_dict(sd, source="x.pt")
    assert [L.kind for L in spec.layers] == ["lstm"] * num_layers
    assert spec.mask_semantics == "torch"
    assert spec.metadata["source_framework"] == "torch" and spec.metadata["source"] == "x.pt"
    for k, L in enumerate(spec.layers):
        assert (L.input_size, L.hidden_size) == ((5 if k == 0 else 9), 9)
        np.testing.assert_array_equal(L.w_ih, sd[f"weight_ih_l{k}"].numpy())
        np.testing.assert_array_equal(L.w_hh, sd[f"weight_hh_l{k}"].numpy())
        if bias:
            folded = (sd[f"bias_ih_l{k}"].double() + sd[f"bias_hh_l{k}"].double()).float()
            np.testing.assert_array_equal(L.bias, folded.numpy())
        else:
            assert L.bias is None
    x = torch.randn(2, 30, 5)
    with torch.inference_mode():
        y = m(x.transpose(0, 1))[0].transpose(0, 1).numpy()
    check_parity(spec, x.numpy(), y)


def test_embedding_lstm_two_linears_heads() -> None:
    torch.manual_seed(0)
    m = Classifier(two_linears=True).eval()
    ids = torch.randint(0, 30, (3, 40))
    seq = spec_from_state_dict(m.state_dict(), activations=["tanh", "linear"])
    assert [L.kind for L in seq.layers] == ["embedding", "lstm", "dense", "dense"]
    assert seq.returns_sequences and seq.takes_ids
    assert [L.activation for L in seq.layers[2:]] == ["tanh", "linear"]
    with torch.inference_mode():
        y_seq = m(ids, last=False).numpy()
        y_last = m(ids).numpy()
    check_parity(seq, ids.numpy(), y_seq)
    last = spec_from_state_dict(m.state_dict(), head="last", activations=["tanh", "linear"])
    assert not last.layers[1].return_sequences and not last.returns_sequences
    check_parity(last, ids.numpy(), y_last)
    assert spec_from_state_dict(m.state_dict(), head="last",
                                activations=("tanh", "linear")).output_size == 5


def test_head_last_with_lengths_is_a_packed_classifier() -> None:
    torch.manual_seed(1)
    m = Classifier().eval()
    ids = torch.randint(1, 30, (4, 35))
    lengths = torch.tensor([35, 20, 7, 1])
    with torch.inference_mode():
        y = m(ids, lengths).numpy()
    spec = spec_from_state_dict(m.state_dict(), head="last")
    check_parity(spec, ids.numpy(), y, lengths=lengths.numpy())


def test_head_sequence_with_lengths_outputs_zero_at_padding() -> None:
    torch.manual_seed(2)
    m = nn.LSTM(4, 6, batch_first=True).eval()
    x = torch.randn(3, 12, 4)
    lengths = torch.tensor([12, 5, 9])
    with torch.inference_mode():
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                   enforce_sorted=False)
        y, _ = nn.utils.rnn.pad_packed_sequence(m(packed)[0], batch_first=True,
                                                total_length=12)
    check_parity(spec_from_state_dict(m.state_dict()), x.numpy(), y.numpy(),
                 lengths=lengths.numpy())


def test_embedding_registered_after_the_lstm() -> None:
    torch.manual_seed(3)
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(4, 6).state_dict().items()}
    sd["emb.weight"] = torch.randn(10, 4)
    spec = spec_from_state_dict(sd)
    assert [L.kind for L in spec.layers] == ["embedding", "lstm"]


def test_dataparallel_prefix_and_numpy_input() -> None:
    sd = {f"module.rnn.{k}": v.numpy() for k, v in nn.LSTM(3, 4).state_dict().items()}
    spec = spec_from_state_dict(sd)
    assert spec.metadata["torch_modules"] == "rnn"


def test_several_recurrent_modules_need_prefix() -> None:
    torch.manual_seed(4)
    sd: dict[str, Any] = {}
    sd.update({f"encoder.{k}": v for k, v in nn.LSTM(4, 8).state_dict().items()})
    sd.update({f"decoder.{k}": v for k, v in nn.LSTM(8, 6).state_dict().items()})
    fc = nn.Linear(6, 2)
    sd.update({"fc.weight": fc.weight, "fc.bias": fc.bias})
    with pytest.raises(UnsupportedModelError, match=r"several.*'encoder'.*'decoder'.*prefix="):
        spec_from_state_dict(sd)
    with pytest.raises(UnsupportedModelError, match=r"decoder\.weight_ih_l0"):
        spec_from_state_dict(sd, prefix="encoder")  # the decoder would be dropped
    with pytest.raises(UnsupportedModelError, match=r"no recurrent module 'rnn'.*'encoder'"):
        spec_from_state_dict(sd, prefix="rnn.")
    spec = spec_from_state_dict(sd, prefix=["encoder", "decoder."])
    assert [L.hidden_size for L in spec.recurrent_layers] == [8, 6]
    assert spec.output_size == 2
    with pytest.raises(WeightsError, match="do not chain"):
        spec_from_state_dict(sd, prefix=["decoder", "encoder"])


def test_chained_lstms_parity() -> None:
    torch.manual_seed(5)
    seq = nn.Sequential(nn.LSTM(3, 10, batch_first=True), nn.LSTM(10, 4, num_layers=2),
                        nn.Linear(4, 2))
    x = torch.randn(2, 25, 3)
    expected = run_sequential(seq, x)
    sd = seq.state_dict()
    spec = spec_from_state_dict(sd, prefix=["0", "1"])
    check_parity(spec, x.numpy(), expected)


@pytest.mark.parametrize("module,option", [
    (nn.GRU(3, 4), "nn.GRU"),
    (nn.RNN(3, 4), "nn.RNN"),
    (nn.RNN(3, 4, nonlinearity="relu", num_layers=2), "nn.RNN"),
    (nn.LSTM(3, 4, bidirectional=True), "bidirectional"),
    (nn.GRU(3, 4, bidirectional=True), "nn.GRU"),
    (nn.LSTM(3, 4, proj_size=2), "proj_size"),
    (nn.LSTM(3, 8, proj_size=6, num_layers=2), "proj_size"),
])
def test_unsupported_recurrent_modules_name_prefix_and_option(module: Any, option: str) -> None:
    sd = {f"body.rnn.{k}": v for k, v in module.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match=rf"'body\.rnn'.*{option}|{option}.*body"):
        spec_from_state_dict(sd)
    with pytest.raises(UnsupportedModelError, match=option.replace("nn.", "")):
        from_torch(module)


def test_leftover_keys_are_listed() -> None:
    torch.manual_seed(6)
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    ln = nn.LayerNorm(4)
    sd.update({"norm.weight": ln.weight, "norm.bias": ln.bias})
    with pytest.raises(UnsupportedModelError, match=r"norm\.weight, norm\.bias"):
        spec_from_state_dict(sd)
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    bn = nn.BatchNorm1d(4)
    sd.update({f"bn.{k}": v for k, v in bn.state_dict().items()})
    with pytest.raises(UnsupportedModelError, match="bn.num_batches_tracked"):
        spec_from_state_dict(sd)
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    sd.update({"fc.weight": torch.zeros(2, 5), "fc.bias": torch.zeros(2)})  # does not chain
    with pytest.raises(UnsupportedModelError, match="fc.weight"):
        spec_from_state_dict(sd)


def test_other_refusals() -> None:
    with pytest.raises(UnsupportedModelError, match="no nn.LSTM"):
        spec_from_state_dict({"fc.weight": np.zeros((2, 3), np.float32)})
    cell = {f"cell.{k}": v for k, v in nn.LSTMCell(3, 4).state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="cells"):
        spec_from_state_dict(cell)
    sd = nn.LSTM(3, 4).state_dict()
    with pytest.raises(ValueError, match="head"):
        spec_from_state_dict(sd, head="first")
    with pytest.raises(ValueError, match="one activation per Linear"):
        spec_from_state_dict(sd, activations=["relu"])
    m = Classifier()
    with pytest.raises(ValueError, match="not supported"):
        spec_from_state_dict(m.state_dict(), activations=["swish"])
    with pytest.raises(ValueError, match="one activation per Linear"):
        spec_from_state_dict(m.state_dict(), activations="relu")
    bad = dict(sd)
    bad["weight_ih_l0"] = torch.zeros(16, 3, 1)
    with pytest.raises(WeightsError):
        spec_from_state_dict(bad)


def test_spec_from_torch_file(tmp_path: Any) -> None:
    torch.manual_seed(7)
    m = Classifier().eval()
    p = tmp_path / "model.pt"
    torch.save({"model_state_dict": m.state_dict(), "epoch": 2}, p)
    spec = spec_from_torch_file(p, head="last")
    assert spec.metadata["source"] == "model.pt"
    ids = torch.randint(0, 30, (2, 9))
    with torch.inference_mode():
        check_parity(spec, ids.numpy(), m(ids).numpy())


# --------------------------------------------------------------------------------------------
# Live modules


@pytest.mark.parametrize("batch_first", [True, False])
def test_from_torch_lstm(batch_first: bool) -> None:
    torch.manual_seed(8)
    m = nn.LSTM(7, 16, num_layers=2, batch_first=batch_first).eval()
    x = torch.randn(3, 40, 7)
    model = from_torch(m)
    assert isinstance(model, lf.Model)
    with torch.inference_mode():
        y = m(x if batch_first else x.transpose(0, 1))[0]
    y = y if batch_first else y.transpose(0, 1)
    np.testing.assert_allclose(model.predict(x.numpy()), y.numpy(), rtol=0, atol=ATOL)
    check_parity(model.spec, x.numpy(), y.numpy())


def test_from_torch_long_sequence_parity() -> None:
    """600 steps through a 2-layer LSTM and a Linear/Tanh/Linear/Softmax head."""
    torch.manual_seed(9)
    seq = nn.Sequential(nn.LSTM(8, 32, num_layers=2, batch_first=True), nn.Dropout(0.3),
                        nn.Linear(32, 16), nn.Tanh(), nn.Identity(), nn.Linear(16, 5),
                        nn.Softmax(dim=-1)).eval()
    x = torch.randn(2, 600, 8)
    expected = run_sequential(seq, x)
    model = from_torch(seq)
    assert [L.activation if L.kind == "dense" else L.kind for L in model.spec.layers] == \
        ["lstm", "lstm", "tanh", "softmax"]
    check_parity(model.spec, x.numpy(), expected)


def test_from_torch_sequential_with_embedding() -> None:
    torch.manual_seed(10)
    seq = nn.Sequential(nn.Embedding(50, 8, padding_idx=0), nn.LSTM(8, 12, batch_first=True),
                        nn.Linear(12, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 3),
                        nn.LogSoftmax(dim=-1)).eval()
    ids = torch.randint(0, 50, (3, 30))
    expected = run_sequential(seq, ids)
    model = from_torch(seq)
    assert model.spec.takes_ids
    check_parity(model.spec, ids.numpy(), expected)


ACTIVATION_MODULES = [
    (nn.ReLU(), "relu"), (nn.Tanh(), "tanh"), (nn.Sigmoid(), "sigmoid"),
    (nn.Softmax(dim=-1), "softmax"), (nn.LogSoftmax(dim=-1), "log_softmax"), (nn.ELU(), "elu"),
    (nn.SELU(), "selu"), (nn.SiLU(), "silu"), (nn.GELU(), "gelu"), (nn.Softsign(), "softsign"),
    (nn.Softplus(), "softplus"), (nn.Hardsigmoid(), "hard_sigmoid"), (nn.ReLU6(), "relu6"),
]


@pytest.mark.parametrize("act,name", ACTIVATION_MODULES, ids=[n for _, n in ACTIVATION_MODULES])
def test_from_torch_activations(act: Any, name: str) -> None:
    torch.manual_seed(11)
    seq = nn.Sequential(nn.LSTM(4, 8, batch_first=True), nn.Linear(8, 6), act).eval()
    with torch.no_grad():
        seq[1].weight.mul_(4.0)  # reach the interesting ranges (relu6 clip, hardsigmoid ends)
    x = torch.randn(2, 20, 4)
    expected = run_sequential(seq, x)
    model = from_torch(seq)
    assert model.spec.layers[-1].activation == name
    check_parity(model.spec, x.numpy(), expected)


@pytest.mark.parametrize("module,match", [
    (nn.Sequential(nn.LSTM(3, 4), nn.ReLU()), "directly after an nn.Linear"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.Softmax(dim=1)), "dim=-1"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.Softmax()), "dim=-1"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.GELU(approximate="tanh")), "approximate"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.Softplus(beta=2)), "beta"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.ELU(alpha=0.5)), "alpha"),
    (nn.Sequential(nn.LSTM(3, 4), nn.Linear(4, 2), nn.LeakyReLU()), "LeakyReLU"),
    (nn.Sequential(nn.Conv1d(3, 3, 1), nn.LSTM(3, 4)), "Conv1d"),
    (nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 4)), "GRU"),
    (nn.Sequential(nn.LSTM(3, 4), nn.LSTM(4, 4, bidirectional=True)), "bidirectional"),
    (nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 4), nn.LSTM(4, 4)), "first layer"),
    (nn.Sequential(nn.Embedding(5, 4, max_norm=1.0), nn.LSTM(4, 4)), "max_norm"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), "no nn.LSTM"),
    (nn.Linear(3, 4), "Linear"),
    (nn.GRUCell(3, 4), "GRUCell"),
    (Classifier(), "custom module.*spec_from_state_dict"),
])
def test_from_torch_refusals(module: Any, match: str) -> None:
    with pytest.raises(UnsupportedModelError, match=match):
        from_torch(module)


def test_from_torch_rejects_non_modules() -> None:
    with pytest.raises(UnsupportedModelError, match="torch.nn.Module"):
        from_torch(object())
