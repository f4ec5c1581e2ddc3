"""PyTorch -> ModelSpec: architecture inference from state dicts, live modules, and parity.

Parity is checked twice: torch's own output against the float64 oracle
``tests.reference.spec_forward`` run on the converted spec (is the conversion right?), and
against ``lstm_fast.Model(spec).predict`` (does the engine run it right?). For GRU, RNN,
bidirectional and projected LSTMs the two checks are separate test cases (``target``), and the
final states are compared with torch's ``h_n``/``c_n`` too (``spec.cells`` order is torch's
``layer * 2 + direction``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.torch import spec_from_state_dict, spec_from_torch_file
from lstm_fast.errors import UnsupportedModelError, WeightsError
from lstm_fast.frameworks import from_torch
from lstm_fast.spec import BidirectionalSpec
from tests.reference import spec_forward

torch = pytest.importorskip("torch")
nn = torch.nn

# torch 2.13 warns that oneDNN has no projected LSTM (it falls back to its own kernel).
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Any:
    """Tiny recurrent nets: torch's intra-op threads only spin (20x slower on a busy box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def check_parity(spec: lf.ModelSpec, x: np.ndarray, expected: np.ndarray,
                 lengths: np.ndarray | None = None) -> None:
    y_ref, _ = spec_forward(spec, x, lengths=lengths)
    np.testing.assert_allclose(y_ref, expected, rtol=0, atol=ATOL, err_msg="oracle vs torch")
    y = lf.Model(spec).predict(x, lengths=lengths)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=ATOL, err_msg="engine vs torch")


def per_cell(states: Any) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``[(h, c or None)]`` per cell from the oracle's list of (h, c_or_None) or any form of
    ``Model.predict``'s state: (h, c) stacked (all LSTMs of one size), h stacked (all GRU/RNN
    of one size), or a list of (h, c) (LSTM) and h (others) entries."""
    if isinstance(states, np.ndarray):
        return [(h, None) for h in states]
    if isinstance(states, tuple):
        h, c = states
        return list(zip(h, c, strict=True))
    return [(s[0], s[1]) if isinstance(s, (tuple, list)) else (s, None) for s in states]


def check_states(states: Any, h_n: np.ndarray, c_n: np.ndarray | None,
                 spec: lf.ModelSpec, who: str) -> None:
    """Final states, one per cell in ``spec.cells`` order, against torch's h_n (and c_n)."""
    cells, got = spec.cells, per_cell(states)
    assert len(cells) == len(got) == h_n.shape[0]
    for i, (cell, (h, c)) in enumerate(zip(cells, got, strict=True)):
        np.testing.assert_allclose(np.asarray(h), h_n[i], rtol=0, atol=ATOL,
                                   err_msg=f"{who}: h of cell {i} vs torch h_n[{i}]")
        if c_n is not None and cell.kind == "lstm":
            np.testing.assert_allclose(np.asarray(c), c_n[i], rtol=0, atol=ATOL,
                                       err_msg=f"{who}: c of cell {i} vs torch c_n[{i}]")


def check_target(target: str, spec: lf.ModelSpec, x: np.ndarray, expected: np.ndarray,
                 lengths: np.ndarray | None = None, h_n: np.ndarray | None = None,
                 c_n: np.ndarray | None = None) -> None:
    """Outputs (and final states, when given) of the oracle or the engine against torch's."""
    if target == "oracle":
        y, states = spec_forward(spec, x, lengths=lengths)
    else:
        y, states = lf.Model(spec).predict(x, lengths=lengths, return_state=True)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=ATOL, err_msg=f"{target} vs torch")
    if h_n is not None:
        check_states(states, h_n, c_n, spec, target)


def torch_forward(m: Any, x: np.ndarray, lengths: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An nn.LSTM/GRU/RNN on batch-first ``x``, packed when ``lengths`` is given:
    (output (B, T, D*H_out) with 0 at padding, h_n, c_n or None)."""
    xt = torch.from_numpy(x)
    if not m.batch_first:
        xt = xt.transpose(0, 1)
    with torch.inference_mode():
        if lengths is None:
            y, state = m(xt)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(
                xt, torch.as_tensor(lengths), batch_first=m.batch_first, enforce_sorted=False)
            out, state = m(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=m.batch_first,
                                                    total_length=x.shape[1])
    if not m.batch_first:
        y = y.transpose(0, 1)
    h, c = state if isinstance(state, tuple) else (state, None)
    return y.numpy(), h.numpy(), None if c is None else c.numpy()


def run_sequential(seq: Any, x: Any) -> np.ndarray:
    """What from_torch means by a Sequential: batch-first, a recurrent module passes on its
    output."""
    with torch.inference_mode():
        for mod in seq:
            if isinstance(mod, nn.RNNBase):
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


class MyGRU(nn.GRU):
    """A subclass: its forward may differ, so from_torch refuses it."""


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
    # A prefix scopes the conversion: the rest of the file is ignored, and said so.
    enc = spec_from_state_dict(sd, prefix="encoder")
    assert [L.kind for L in enc.layers] == ["lstm"]
    assert enc.metadata["ignored"] == "ignored 6 tensors: decoder.*, fc.*"
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


def test_leftover_keys_are_listed() -> None:
    torch.manual_seed(6)
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    ln = nn.LayerNorm(4)
    sd.update({"norm.weight": ln.weight, "norm.bias": ln.bias})
    with pytest.raises(UnsupportedModelError,
                       match=r"norm\.weight \(4\), norm\.bias \(4\).*--ignore 'norm\.\*'"):
        spec_from_state_dict(sd)
    assert [L.kind for L in spec_from_state_dict(sd, ignore=["norm.*"]).layers] == ["lstm"]
    sd = {f"rnn.{k}": v for k, v in nn.LSTM(3, 4).state_dict().items()}
    sd.update({"fc.weight": torch.zeros(2, 5), "fc.bias": torch.zeros(2)})  # does not chain
    with pytest.raises(UnsupportedModelError, match=r"fc\.weight \(2x5\)"):
        spec_from_state_dict(sd)


def test_other_refusals() -> None:
    with pytest.raises(UnsupportedModelError, match="no recurrent weights"):
        spec_from_state_dict({"fc.weight": np.zeros((2, 3), np.float32)})
    sd = nn.LSTM(3, 4).state_dict()
    with pytest.raises(ValueError, match="head"):
        spec_from_state_dict(sd, head="first")
    with pytest.raises(ValueError, match="nonlinearity"):
        spec_from_state_dict(nn.RNN(3, 4).state_dict(), nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="one activation per Linear"):
        spec_from_state_dict(sd, activations=["relu", "relu"])
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
    (nn.Sequential(nn.LSTM(3, 4), nn.LSTMCell(4, 4)), "LSTMCell"),
    (nn.Sequential(nn.LSTM(3, 4), MyGRU(4, 4)), r"layer '1' \(MyGRU\).*subclass"),
    (MyGRU(3, 4), "MyGRU.*subclass"),
    (nn.Sequential(nn.Linear(3, 4), nn.Embedding(5, 4), nn.LSTM(4, 4)), "first layer"),
    (nn.Sequential(nn.Embedding(5, 4, max_norm=1.0), nn.LSTM(4, 4)), "max_norm"),
    (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), "no nn.LSTM, nn.GRU or nn.RNN"),
    (nn.Linear(3, 4), "Linear"),
    (Classifier(), "custom module.*spec_from_state_dict"),
])
def test_from_torch_refusals(module: Any, match: str) -> None:
    with pytest.raises(UnsupportedModelError, match=match):
        from_torch(module)


def test_from_torch_rejects_non_modules() -> None:
    with pytest.raises(UnsupportedModelError, match="torch.nn.Module"):
        from_torch(object())


# --------------------------------------------------------------------------------------------
# GRU, RNN, bidirectional, LSTM projection

#: name -> module factory. Small H; every kind also appears bidirectional with 2 layers.
RNN_MODULES: dict[str, Any] = {
    "gru_l1": lambda: nn.GRU(5, 6),
    "gru_l2": lambda: nn.GRU(5, 6, num_layers=2, batch_first=True),
    "gru_l3": lambda: nn.GRU(5, 6, num_layers=3),
    "gru_l1_nobias": lambda: nn.GRU(5, 6, bias=False),
    "gru_l2_nobias": lambda: nn.GRU(5, 6, num_layers=2, bias=False),
    "gru_l3_nobias": lambda: nn.GRU(5, 6, num_layers=3, bias=False, batch_first=True),
    "rnn_tanh": lambda: nn.RNN(5, 6, num_layers=2),
    "rnn_relu": lambda: nn.RNN(5, 6, num_layers=2, nonlinearity="relu", batch_first=True),
    "rnn_relu_nobias": lambda: nn.RNN(5, 6, nonlinearity="relu", bias=False),
    "bilstm": lambda: nn.LSTM(5, 6, num_layers=2, bidirectional=True),
    "bigru": lambda: nn.GRU(5, 6, num_layers=2, bidirectional=True, batch_first=True),
    "bigru_nobias": lambda: nn.GRU(5, 6, num_layers=2, bidirectional=True, bias=False),
    "birnn_tanh": lambda: nn.RNN(5, 6, num_layers=2, bidirectional=True),
    "birnn_relu": lambda: nn.RNN(5, 6, num_layers=2, bidirectional=True, nonlinearity="relu"),
    "lstm_proj": lambda: nn.LSTM(5, 8, num_layers=2, proj_size=3, batch_first=True),
    "bilstm_proj": lambda: nn.LSTM(5, 8, num_layers=2, proj_size=3, bidirectional=True),
    "bilstm_proj_nobias": lambda: nn.LSTM(5, 7, proj_size=2, bidirectional=True, bias=False),
}
KIND = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn", "RNN_RELU": "rnn"}
TARGETS = ["oracle", "engine"]
T_LONG = 520
LENGTHS = np.array([T_LONG, 311, 1, 64])


def make_module(name: str) -> Any:
    torch.manual_seed(sum(map(ord, name)))
    return RNN_MODULES[name]().eval()


def nonlinearity_of(m: Any) -> str:
    return m.nonlinearity if isinstance(m, nn.RNN) else "tanh"


@pytest.mark.parametrize("name", list(RNN_MODULES))
def test_recurrent_kind_inference(name: str) -> None:
    m = make_module(name)
    sd = {f"enc.rnn.{k}": v for k, v in m.state_dict().items()}
    spec = spec_from_state_dict(sd, nonlinearity=nonlinearity_of(m), source="m.pt")
    kind, D = KIND[m.mode], 2 if m.bidirectional else 1
    H_out = m.proj_size or m.hidden_size
    assert [L.kind for L in spec.layers] == ["bidirectional" if D == 2 else kind] * m.num_layers
    assert spec.metadata["torch_kinds"] == f"nn.{type(m).__name__}"
    assert spec.metadata.get("rnn_nonlinearity") == (m.nonlinearity if kind == "rnn" else None)
    assert spec.output_size == D * H_out and spec.input_size == 5
    assert len(spec.cells) == m.num_layers * D
    for k, L in enumerate(spec.layers):
        assert L.input_size == (5 if k == 0 else D * H_out)
        assert L.output_size == D * H_out and L.hidden_size == m.hidden_size
        if D == 2:
            assert isinstance(L, BidirectionalSpec) and L.merge_mode == "concat"
    for i, cell in enumerate(spec.cells):  # h_n order: layer * D + direction
        k, sfx = i // D, "_reverse" if i % D else ""
        w = {n: sd[f"enc.rnn.{n}_l{k}{sfx}"].numpy() for n in
             ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
             if f"enc.rnn.{n}_l{k}{sfx}" in sd}
        assert cell.kind == kind and cell.return_sequences and not cell.go_backwards
        np.testing.assert_array_equal(cell.w_ih, w["weight_ih"])
        np.testing.assert_array_equal(cell.w_hh, w["weight_hh"])
        if kind == "gru":  # never folded: b_hn sits inside r * (W_hn h + b_hn)
            assert cell.reset_after and cell.activation == "tanh"
            for ours, theirs in ((cell.b_ih, "bias_ih"), (cell.b_hh, "bias_hh")):
                if m.bias:
                    np.testing.assert_array_equal(ours, w[theirs])
                else:
                    assert ours is None
        elif m.bias:
            folded = (w["bias_ih"].astype(np.float64) + w["bias_hh"]).astype(np.float32)
            np.testing.assert_array_equal(cell.bias, folded)
        else:
            assert cell.bias is None
        if kind == "rnn":
            assert cell.activation == m.nonlinearity
        if kind == "lstm":
            if m.proj_size:
                np.testing.assert_array_equal(cell.w_hr, w["weight_hr"])
                assert cell.state_sizes == (m.proj_size, m.hidden_size)
            else:
                assert cell.w_hr is None


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("name", list(RNN_MODULES))
def test_recurrent_parity(name: str, packed: bool, target: str) -> None:
    """520 steps, with and without pack_padded_sequence (enforce_sorted=False); outputs,
    h_n and c_n."""
    m = make_module(name)
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((len(LENGTHS), T_LONG, 5)).astype(np.float32)
    lengths = LENGTHS if packed else None
    y, h_n, c_n = torch_forward(m, x, lengths)
    if packed:
        assert not y[2, 1:].any()  # padded outputs are 0 in torch
    spec = spec_from_state_dict(m.state_dict(), nonlinearity=nonlinearity_of(m))
    check_target(target, spec, x, y, lengths, h_n, c_n)


@pytest.mark.parametrize("target", TARGETS)
def test_rnn_state_dict_needs_the_nonlinearity(target: str) -> None:
    m = make_module("rnn_relu")
    x = np.random.default_rng(0).standard_normal((2, 40, 5)).astype(np.float32)
    y, h_n, _ = torch_forward(m, x)
    tanh = spec_from_state_dict(m.state_dict())  # a state dict does not say relu
    assert {c.activation for c in tanh.cells} == {"tanh"}
    assert np.abs(spec_forward(tanh, x)[0] - y).max() > 1e-2
    relu = spec_from_state_dict(m.state_dict(), nonlinearity="relu")
    check_target(target, relu, x, y, h_n=h_n)


class BiGRUClassifier(nn.Module):
    """Embedding + 2-layer bidirectional GRU + Linear on cat(h_n[-2], h_n[-1])."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(40, 6)
        self.gru = nn.GRU(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, ids: Any, lengths: Any = None, last: bool = True) -> Any:
        e = self.embedding(ids)
        if lengths is not None:
            e = nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True,
                                                  enforce_sorted=False)
        y, h = self.gru(e)
        if not last:
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                    total_length=ids.shape[1]) \
                if lengths is not None else (y, None)
            return self.fc(y)
        return self.fc(torch.cat([h[-2], h[-1]], dim=1))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
def test_embedding_bigru_linear_heads(packed: bool, target: str) -> None:
    """head="last" on a bidirectional layer = fc(cat(h_n[-2], h_n[-1])): forward's last valid
    output with backward's output at t=0 (its final state)."""
    torch.manual_seed(12)
    m = BiGRUClassifier().eval()
    ids = torch.randint(1, 40, (4, 505))
    lengths = torch.tensor([505, 200, 1, 37]) if packed else None
    with torch.inference_mode():
        y_last = m(ids, lengths).numpy()
        y_seq = m(ids, lengths, last=False).numpy()
    lens = None if lengths is None else lengths.numpy()
    last = spec_from_state_dict(m.state_dict(), head="last")
    assert [L.kind for L in last.layers] == ["embedding", "bidirectional", "bidirectional",
                                             "dense"]
    assert not last.returns_sequences and last.output_size == 3
    assert not last.layers[2].forward.return_sequences
    assert not last.layers[2].backward.return_sequences
    assert last.layers[1].return_sequences
    check_target(target, last, ids.numpy(), y_last, lens)
    seq = spec_from_state_dict(m.state_dict())
    check_target(target, seq, ids.numpy(), y_seq, lens)


@pytest.mark.parametrize("target", TARGETS)
def test_chained_bidirectional_gru_into_projected_lstm(target: str) -> None:
    torch.manual_seed(13)
    gru = nn.GRU(4, 5, bidirectional=True, batch_first=True).eval()
    lstm = nn.LSTM(10, 6, proj_size=2, batch_first=True).eval()
    fc = nn.Linear(2, 3).eval()
    sd = {**{f"a.{k}": v for k, v in gru.state_dict().items()},
          **{f"b.{k}": v for k, v in lstm.state_dict().items()},
          "fc.weight": fc.weight, "fc.bias": fc.bias}
    spec = spec_from_state_dict(sd, prefix=["a", "b"], head="last")
    assert [L.kind for L in spec.layers] == ["bidirectional", "lstm", "dense"]
    assert spec.metadata["torch_kinds"] == "nn.GRU,nn.LSTM"
    x = torch.randn(3, 30, 4)
    with torch.inference_mode():
        _, (h, _) = lstm(gru(x)[0])
        y = fc(h[-1]).numpy()
    check_target(target, spec, x.numpy(), y)
    with pytest.raises(WeightsError, match="do not chain"):
        spec_from_state_dict(sd, prefix=["b", "a"])


@pytest.mark.parametrize("name", ["gru_l2", "rnn_relu", "bilstm", "birnn_relu", "bilstm_proj"])
def test_from_torch_recurrent_modules(name: str) -> None:
    """The live path reads nn.RNN's nonlinearity from the module (needs the engine)."""
    m = make_module(name)
    x = np.random.default_rng(1).standard_normal((3, 60, 5)).astype(np.float32)
    lengths = np.array([60, 17, 33])
    y, h_n, c_n = torch_forward(m, x, lengths)
    model = from_torch(m)
    assert [c.activation for c in model.spec.cells] == \
        [nonlinearity_of(m)] * (m.num_layers * (2 if m.bidirectional else 1))
    check_target("oracle", model.spec, x, y, lengths, h_n, c_n)
    check_target("engine", model.spec, x, y, lengths, h_n, c_n)


def test_from_torch_sequential_bigru_head() -> None:
    torch.manual_seed(14)
    seq = nn.Sequential(nn.Embedding(20, 4), nn.GRU(4, 6, bidirectional=True, batch_first=True),
                        nn.Dropout(0.2), nn.RNN(12, 5, nonlinearity="relu", batch_first=True),
                        nn.Linear(5, 3), nn.Softmax(dim=-1)).eval()
    ids = torch.randint(0, 20, (2, 50))
    expected = run_sequential(seq, ids)
    model = from_torch(seq)
    assert [L.kind for L in model.spec.layers] == ["embedding", "bidirectional", "rnn", "dense"]
    assert model.spec.layers[2].activation == "relu"
    check_parity(model.spec, ids.numpy(), expected)


def test_inconsistent_recurrent_weights() -> None:
    torch.manual_seed(15)
    sd = dict(nn.LSTM(3, 4, num_layers=2).state_dict())
    sd["weight_hh_l1"] = torch.zeros(12, 4)  # GRU-shaped layer 1 under an LSTM layer 0
    with pytest.raises(WeightsError, match=r"layer 1 has the shapes of an nn.GRU.*nn.LSTM"):
        spec_from_state_dict(sd)
    sd = dict(nn.GRU(3, 4, num_layers=2, bidirectional=True).state_dict())
    for k in [k for k in sd if k.endswith("l1_reverse")]:
        del sd[k]
    with pytest.raises(WeightsError, match=r"bidirectional but layers \[1\]"):
        spec_from_state_dict(sd)
    sd = dict(nn.LSTM(3, 6, proj_size=2).state_dict())
    sd["weight_hr_l0"] = torch.zeros(2, 5)
    with pytest.raises(WeightsError, match="proj_size"):
        spec_from_state_dict(sd)
    sd = dict(nn.LSTM(3, 4).state_dict())
    sd["weight_hh_l0"] = torch.zeros(10, 4)
    with pytest.raises(WeightsError, match=r"\(4H, H\).*\(3H, H\).*\(H, H\)"):
        spec_from_state_dict(sd)
    sd = dict(nn.GRU(3, 4).state_dict())
    sd["bias_hh_l0"] = torch.zeros(4)
    with pytest.raises(WeightsError, match="bias_hh_l0 must be"):
        spec_from_state_dict(sd)


def test_spec_from_torch_file_nonlinearity(tmp_path: Any) -> None:
    m = make_module("birnn_relu")
    p = tmp_path / "rnn.pt"
    torch.save({"state": m.state_dict()}, p)
    spec = spec_from_torch_file(p, key="state", nonlinearity="relu")
    assert {c.activation for c in spec.cells} == {"relu"}
    assert spec.metadata["rnn_nonlinearity"] == "relu"
    x = np.random.default_rng(2).standard_normal((2, 20, 5)).astype(np.float32)
    y, h_n, _ = torch_forward(m, x)
    check_target("oracle", spec, x, y, h_n=h_n)
