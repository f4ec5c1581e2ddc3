"""Checkpoints as real models hold them (issue 10): recurrent cells, files with several models
(``--prefix`` scopes the conversion), stray tensors (``--ignore``), batch norms between
layers, activations before the head, L2-normalised embeddings; and ``verify`` checking the
source file itself. Every model is compared with torch running the same weights."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lstm_fast as lf  # noqa: E402
from lstm_fast.cli import main  # noqa: E402
from lstm_fast.converters.torch import (  # noqa: E402
    spec_from_state_dict,
    spec_from_torch_file,
)
from lstm_fast.errors import UnsupportedModelError  # noqa: E402
from lstm_fast.frameworks import from_torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


def cli(*args: str) -> tuple[int, str, str]:
    """``lstm-fast ARGS`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def step_cell(cell: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, Any]:
    """Outputs (B, T, H) and the final state of ``cell`` stepped over x (B, T, I)."""
    state = None
    outs = []
    with torch.inference_mode():
        for t in range(x.shape[1]):
            state = cell(x[:, t], state)
            outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outs, 1).numpy(), state


def save(obj: Any, path: Path, how: str) -> Path:
    if how == "safetensors":
        from lstm_fast import safetensors

        safetensors.write(path, {k: v.detach().numpy() for k, v in obj.items()}, {})
    else:
        torch.save(obj, path)
    return path


# --- recurrent cells ------------------------------------------------------------------------

CELLS = [
    (lambda: nn.LSTMCell(5, 7), "tanh"),
    (lambda: nn.GRUCell(5, 7), "tanh"),
    (lambda: nn.RNNCell(5, 7, nonlinearity="relu"), "relu"),
    (lambda: nn.LSTMCell(5, 7, bias=False), "tanh"),
]


@pytest.mark.parametrize("make,nonlinearity", CELLS)
@pytest.mark.parametrize("container", ["state_dict", "torchscript"])
def test_cell_checkpoint_streams_like_the_cell_in_a_loop(tmp_path: Path, make: Any,
                                                         nonlinearity: str,
                                                         container: str) -> None:
    torch.manual_seed(0)
    cell = make().eval()
    x = torch.randn(2, 500, 5)
    y, state = step_cell(cell, x)
    if container == "torchscript":
        path = tmp_path / "cell.pt"
        torch.jit.save(torch.jit.script(nn.Sequential(cell)), path)
    else:
        path = save({f"net.rnn.{k}": v for k, v in cell.state_dict().items()},
                    tmp_path / "cell.pt", "torch")
    spec = spec_from_torch_file(path, nonlinearity=nonlinearity)
    assert spec.state_layout == "cell" and len(spec.layers) == 1
    model = lf.Model(spec)
    stream = model.stream(batch=2)
    got = np.stack([stream.step(x[:, t].numpy()) for t in range(500)], 1)
    np.testing.assert_allclose(got, y, atol=TOL)
    np.testing.assert_allclose(model.predict(x.numpy()), y, atol=TOL)
    if isinstance(state, tuple):  # the cell's own (h, c) shapes, (B, H) each
        h, c = stream.state
        assert h.shape == c.shape == (2, 7)
        np.testing.assert_allclose(h, state[0].numpy(), atol=TOL)
        np.testing.assert_allclose(c, state[1].numpy(), atol=TOL)
    else:
        assert stream.state.shape == (2, 7)
        np.testing.assert_allclose(stream.state, state.numpy(), atol=TOL)
    # a state set from torch continues where the cell would
    stream.state = state if not isinstance(state, tuple) else (state[0], state[1])
    with torch.inference_mode():
        nxt = cell(x[:, 0], state)
    nxt_h = nxt[0] if isinstance(nxt, tuple) else nxt
    np.testing.assert_allclose(stream.step(x[:, 0].numpy()), nxt_h.numpy(), atol=TOL)


def test_cell_in_safetensors_and_live_module(tmp_path: Path) -> None:
    torch.manual_seed(1)
    cell = nn.GRUCell(4, 6).eval()
    x = torch.randn(1, 300, 4)
    y, h = step_cell(cell, x)
    path = save(dict(cell.state_dict()), tmp_path / "gru.safetensors", "safetensors")
    for model in (lf.Model(spec_from_torch_file(path)), from_torch(cell)):
        stream = model.stream()
        got = stream.run(x.numpy())
        np.testing.assert_allclose(got, y, atol=TOL)
        np.testing.assert_allclose(stream.state, h.numpy(), atol=TOL)


def test_stacked_cells_chain_with_prefixes() -> None:
    torch.manual_seed(2)
    cells = nn.ModuleList([nn.LSTMCell(3, 8), nn.LSTMCell(8, 4)]).eval()
    x = torch.randn(2, 50, 3)
    states: list[Any] = [None, None]
    outs = []
    with torch.inference_mode():
        for t in range(50):
            h = x[:, t]
            for i, c in enumerate(cells):
                states[i] = c(h, states[i])
                h = states[i][0]
            outs.append(h)
    sd = {f"cells.{k}": v for k, v in cells.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match=r"'cells\.0' nn\.LSTMCell\(3 -> 8\).*"
                                                     r"--prefix cells\.0 --prefix cells\.1"):
        spec_from_state_dict(sd)
    spec = spec_from_state_dict(sd, prefix=["cells.0", "cells.1"])
    assert spec.state_layout == "stacked"
    np.testing.assert_allclose(lf.Model(spec).predict(x.numpy()),
                               torch.stack(outs, 1).numpy(), atol=TOL)


# --- files holding several models -----------------------------------------------------------

class Seq2Seq(nn.Module):
    """An encoder-decoder: two Embeddings, two GRUs, a Linear on the decoder, and a loss
    scale parameter that belongs to no module."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"emb": nn.Embedding(20, 8), "rnn": nn.GRU(8, 16,
                                                                                batch_first=True)})
        self.decoder = nn.ModuleDict({"emb": nn.Embedding(30, 8),
                                      "rnn": nn.GRU(8, 16, batch_first=True),
                                      "out": nn.Linear(16, 30)})
        self.temperature = nn.Parameter(torch.ones(()))


def test_encoder_decoder_each_side_with_prefix(tmp_path: Path) -> None:
    torch.manual_seed(3)
    m = Seq2Seq().eval()
    path = save({"model": m.state_dict(), "step": 1000}, tmp_path / "s2s.pt", "torch")
    with pytest.raises(UnsupportedModelError,
                       match=r"'encoder\.rnn' nn\.GRU\(8 -> 16, 1 layer\); 'decoder\.rnn'.*"
                             r"--prefix encoder\.rnn"):
        spec_from_torch_file(path)
    with pytest.raises(UnsupportedModelError, match=r"no recurrent module 'rnn'.*encoder\.rnn"):
        spec_from_torch_file(path, prefix="rnn")
    enc = spec_from_torch_file(path, prefix="encoder.rnn")
    dec = spec_from_torch_file(path, prefix="decoder.rnn")
    assert [L.kind for L in enc.layers] == ["embedding", "gru"]
    assert [L.kind for L in dec.layers] == ["embedding", "gru", "dense"]
    assert enc.metadata["ignored"] == "ignored 8 tensors: temperature, decoder.*"
    src = torch.randint(0, 20, (2, 12))
    tgt = torch.randint(0, 30, (2, 40))
    with torch.inference_mode():
        _, h = m.encoder["rnn"](m.encoder["emb"](src))
        y, _ = m.decoder["rnn"](m.decoder["emb"](tgt), h)
        logits = m.decoder["out"](y).numpy()
    _, state = lf.Model(enc).predict(src.numpy(), return_state=True)
    np.testing.assert_allclose(state, h.numpy(), atol=TOL)
    stream = lf.Model(dec).stream(batch=2)
    stream.state = state
    got = np.stack([stream.step(tgt[:, t].numpy()) for t in range(40)], 1)
    np.testing.assert_allclose(got, logits, atol=TOL)


def test_stray_tensors_are_listed_then_ignored_explicitly() -> None:
    torch.manual_seed(4)
    sd = {f"lstm.{k}": v for k, v in nn.LSTM(4, 6).state_dict().items()}
    sd.update({"similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0]),
               "linear.weight": torch.randn(3, 6), "linear.bias": torch.randn(3)})
    with pytest.raises(UnsupportedModelError,
                       match=r"similarity_weight \(1\), similarity_bias \(1\).*"
                             r"--ignore 'similarity_\*'"):
        spec_from_state_dict(sd)
    spec = spec_from_state_dict(sd, ignore=["similarity_*"])
    assert [L.kind for L in spec.layers] == ["lstm", "dense"]
    assert spec.metadata["ignored"] == "ignored 2 tensors: similarity_weight, similarity_bias"
    with pytest.raises(ValueError, match="matches no tensor"):
        spec_from_state_dict(sd, ignore=["similarity_*", "typo*"])


# --- batch norms, activations before the head, L2 heads ----------------------------------------

class NormNet(nn.Module):
    """LSTM -> BatchNorm1d -> GRU -> BatchNorm1d -> Linear -> BatchNorm1d (the last one folds
    back into the Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 8, batch_first=True)
        self.bn1 = nn.BatchNorm1d(8)
        self.gru = nn.GRU(8, 6, batch_first=True, bidirectional=True)
        self.bn2 = nn.BatchNorm1d(12)
        self.fc = nn.Linear(12, 4)
        self.bn3 = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lstm(x)[0]
        h = self.bn1(h.transpose(1, 2)).transpose(1, 2)
        h = self.gru(h)[0]
        h = self.bn2(h.transpose(1, 2)).transpose(1, 2)
        return self.bn3(self.fc(h).transpose(1, 2)).transpose(1, 2)


def trained_batchnorms(m: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n))
                mod.running_var.copy_(torch.rand(n) + 0.2)
                mod.weight.copy_(torch.randn(n))
                mod.bias.copy_(torch.randn(n))
    return m.eval()


def test_batchnorm_between_recurrent_layers(tmp_path: Path) -> None:
    torch.manual_seed(5)
    m = trained_batchnorms(NormNet())
    x = torch.randn(3, 200, 5)
    with torch.inference_mode():
        expected = m(x).numpy()
    path = save(m.state_dict(), tmp_path / "norm.pt", "torch")
    spec = spec_from_torch_file(path, prefix=["lstm", "gru"])
    assert [L.kind for L in spec.layers] == ["lstm", "bidirectional", "dense"]
    assert "bn1 folded into the next layer (bidirectional gru)" in spec.metadata["folded"]
    assert "bn2 folded into the next layer (dense fc)" in spec.metadata["folded"]
    assert "bn3 folded into the previous layer (dense fc)" in spec.metadata["folded"]
    np.testing.assert_allclose(lf.Model(spec).predict(x.numpy()), expected, atol=TOL)
    code, out, _ = cli("convert", str(path), "-o", str(tmp_path / "n.lfm"), "--prefix", "lstm",
                       "--prefix", "gru")
    assert code == 0 and "folded: bn1 folded" in out
    assert float(out.split("max abs difference vs torch")[1].split(":")[1].split()[0]) < TOL


class SpeakerEncoder(nn.Module):
    """The shape of the GE2E speaker encoders: LSTM stack, Linear + ReLU on h_n[-1], L2 norm,
    and two scalars of the training loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(10, 16, num_layers=3, batch_first=True)
        self.linear = nn.Linear(16, 12)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        e = self.relu(self.linear(h[-1]))
        return e / torch.norm(e, dim=1, keepdim=True)


def test_speaker_encoder_with_l2_head_through_the_cli(tmp_path: Path) -> None:
    torch.manual_seed(6)
    m = SpeakerEncoder().eval()
    path = save({"model_state": m.state_dict(), "step": 7}, tmp_path / "encoder.pt", "torch")
    out_path = tmp_path / "enc.lfm"
    code, out, err = cli("convert", str(path), "-o", str(out_path), "--ignore", "similarity_*",
                         "--head", "last", "--activations", "relu", "--head-norm", "l2")
    assert code == 0, err
    assert "ignored 2 tensors: similarity_weight, similarity_bias" in out
    x = torch.randn(4, 160, 10)
    with torch.inference_mode():
        expected = m(x).numpy()
    got = lf.load(out_path).predict(x.numpy())
    np.testing.assert_allclose(got, expected, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_activation_before_a_conv1x1_head(tmp_path: Path) -> None:
    """A VAD-style decoder: LSTMCell -> ReLU -> Conv1d(H, 1, 1) -> Sigmoid, inside a file
    that also holds a conv front end."""
    torch.manual_seed(7)
    net = nn.ModuleDict({
        "encoder": nn.Sequential(nn.Conv1d(1, 8, 3), nn.ReLU()),
        "decoder": nn.ModuleDict({"rnn": nn.LSTMCell(8, 8),
                                  "head": nn.Sequential(nn.ReLU(), nn.Conv1d(8, 1, 1))}),
    }).eval()
    path = save(net.state_dict(), tmp_path / "vad.pt", "torch")
    spec = spec_from_torch_file(path, prefix="decoder.rnn", activations=["relu", "sigmoid"])
    assert [L.kind for L in spec.layers] == ["lstm", "affine", "dense"]
    assert spec.metadata["ignored"] == "ignored 2 tensors: encoder.*"
    x = torch.randn(1, 100, 8)
    y, _ = step_cell(net["decoder"]["rnn"], x)
    with torch.inference_mode():
        expected = torch.sigmoid(net["decoder"]["head"](torch.from_numpy(y).transpose(1, 2))
                                 ).transpose(1, 2).numpy()
    stream = lf.Model(spec).stream()
    got = np.stack([stream.step(x[:, t].numpy()) for t in range(100)], 1)
    np.testing.assert_allclose(got, expected, atol=TOL)


# --- verify reads the source file --------------------------------------------------------------

def test_verify_checks_the_source_file(tmp_path: Path) -> None:
    torch.manual_seed(8)
    a, b = SpeakerEncoder().eval(), SpeakerEncoder().eval()
    pa = save(a.state_dict(), tmp_path / "a.pt", "torch")
    pb = save(b.state_dict(), tmp_path / "b.pt", "torch")
    flags = ["--ignore", "similarity_*", "--head", "last", "--activations", "relu",
             "--head-norm", "l2"]
    model = tmp_path / "a.lfm"
    assert cli("convert", str(pa), "-o", str(model), *flags)[0] == 0
    code, out, _ = cli("verify", str(model), "--against", str(pa))
    assert code == 0 and "within tolerance" in out          # options recorded in the file
    code, out, _ = cli("verify", str(model), "--against", str(pb))
    assert code == 1 and "OVER tolerance" in out            # another checkpoint, same shapes
    code, out, _ = cli("verify", str(model), "--against", str(pa), *flags[:4])  # no l2 norm
    assert code == 1


def test_verify_catches_a_wrong_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter bug (the i and f gates swapped) must fail verify, and convert's check."""
    import lstm_fast.converters.torch as conv

    torch.manual_seed(9)
    m = nn.LSTM(4, 6, batch_first=True)
    path = save(m.state_dict(), tmp_path / "lstm.pt", "torch")
    original = conv._cell_from_keys

    def swapped(*args: Any, **kwargs: Any) -> Any:
        cell = original(*args, **kwargs)
        H = cell.hidden_size
        order = np.r_[H:2 * H, 0:H, 2 * H:4 * H]
        import dataclasses

        return dataclasses.replace(cell, w_ih=cell.w_ih[order], w_hh=cell.w_hh[order],
                                   bias=cell.bias[order])

    monkeypatch.setattr(conv, "_cell_from_keys", swapped)
    out_path = tmp_path / "bad.lfm"
    code, out, _ = cli("convert", str(path), "-o", str(out_path))
    assert code == 0
    assert float(out.split("max abs difference vs torch")[1].split(":")[1].split()[0]) > 1e-3
    code, out, _ = cli("verify", str(out_path), "--against", str(path))
    assert code == 1 and "OVER tolerance" in out


def test_torch_options_are_recorded(tmp_path: Path) -> None:
    m = nn.GRU(3, 4)
    path = save({"net": m.state_dict()}, tmp_path / "g.pt", "torch")
    spec = spec_from_torch_file(path, key="net", head="last")
    opts = json.loads(spec.metadata["torch_options"])
    assert opts["key"] == "net" and opts["head"] == "last" and opts["ignore"] == []


# --- the torch-free path -----------------------------------------------------------------------

def test_conversions_run_without_torch(tmp_path: Path) -> None:
    torch.manual_seed(10)
    cell = nn.LSTMCell(3, 5).eval()
    m = trained_batchnorms(NormNet())
    save({f"rnn.{k}": v for k, v in cell.state_dict().items()}, tmp_path / "cell.pt", "torch")
    torch.jit.save(torch.jit.script(nn.Sequential(cell)), tmp_path / "cell_ts.pt")
    save(m.state_dict(), tmp_path / "norm.pt", "torch")
    x = torch.randn(2, 30, 5)
    with torch.inference_mode():
        np.save(tmp_path / "norm_y.npy", m(x).numpy())
    np.save(tmp_path / "norm_x.npy", x.numpy())
    xc = torch.randn(2, 30, 3)
    np.save(tmp_path / "cell_x.npy", xc.numpy())
    np.save(tmp_path / "cell_y.npy", step_cell(cell, xc)[0])
    script = f"""
import sys
sys.modules["torch"] = None   # import torch fails
import numpy as np
import lstm_fast as lf
from lstm_fast.converters.torch import spec_from_torch_file
d = {str(tmp_path)!r}
for name in ("cell.pt", "cell_ts.pt"):
    y = lf.Model(spec_from_torch_file(d + "/" + name)).predict(np.load(d + "/cell_x.npy"))
    assert np.abs(y - np.load(d + "/cell_y.npy")).max() < 1e-5, name
spec = spec_from_torch_file(d + "/norm.pt", prefix=["lstm", "gru"])
y = lf.Model(spec).predict(np.load(d + "/norm_x.npy"))
assert np.abs(y - np.load(d + "/norm_y.npy")).max() < 1e-5
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


# --- NumPy archives of PyTorch-trained weights ----------------------------------------------

def test_npz_encoder_decoder_with_numpy_names(tmp_path: Path) -> None:
    """A g2p-style archive: ``enc_emb``, ``enc_w_ih``, ..., ``fc_w``, ``fc_b``; the encoder
    GRU runs over the word, the decoder GRUCell is stepped from its final state."""
    torch.manual_seed(11)
    enc_emb, dec_emb = nn.Embedding(12, 6), nn.Embedding(9, 6)
    enc, dec, fc = nn.GRUCell(6, 8), nn.GRUCell(6, 8), nn.Linear(8, 9)
    arrays = {"enc_emb": enc_emb.weight, "enc_w_ih": enc.weight_ih, "enc_w_hh": enc.weight_hh,
              "enc_b_ih": enc.bias_ih, "enc_b_hh": enc.bias_hh, "dec_emb": dec_emb.weight,
              "dec_w_ih": dec.weight_ih, "dec_w_hh": dec.weight_hh, "dec_b_ih": dec.bias_ih,
              "dec_b_hh": dec.bias_hh, "fc_w": fc.weight, "fc_b": fc.bias}
    path = tmp_path / "g2p.npz"
    np.savez(path, **{k: v.detach().numpy() for k, v in arrays.items()})
    with pytest.raises(UnsupportedModelError, match=r"'enc' nn\.GRUCell.*'dec' nn\.GRUCell"):
        spec_from_torch_file(path)
    encoder = lf.Model(spec_from_torch_file(path, prefix="enc"))
    decoder = lf.Model(spec_from_torch_file(path, prefix="dec"))
    assert [L.kind for L in encoder.spec.layers] == ["embedding", "gru"]
    assert [L.kind for L in decoder.spec.layers] == ["embedding", "gru", "dense"]
    word = torch.tensor([[3, 7, 1, 4, 2]])
    feed = torch.tensor([[2, 5, 8, 1]])
    with torch.inference_mode():
        h = torch.zeros(1, 8)
        for t in range(word.shape[1]):
            h = enc(enc_emb(word[:, t]), h)
        logits = []
        for t in range(feed.shape[1]):
            h = dec(dec_emb(feed[:, t]), h)
            logits.append(fc(h))
    _, state = encoder.predict(word.numpy(), return_state=True)
    stream = decoder.stream()
    stream.state = state
    got = np.stack([stream.step(feed[:, t].numpy()) for t in range(feed.shape[1])], 1)
    np.testing.assert_allclose(got, torch.stack(logits, 1).numpy(), atol=TOL)
    code, out, _ = cli("convert", str(path), "-o", str(tmp_path / "dec.lfm"), "--prefix", "dec")
    assert code == 0 and "ignored 5 tensors: enc_emb.*, enc.*" in out
    assert float(out.split("max abs difference vs torch")[1].split(":")[1].split()[0]) < TOL


def test_npz_refuses_object_arrays(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(lf.ModelFileError, match="evil.npz"):
        spec_from_torch_file(path)


def test_npz_refuses_sizes_it_does_not_hold(tmp_path: Path) -> None:
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2, np.float32))
    raw = buf.getvalue().replace(b"(2,)", b"(99999999999,)")
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("rnn_w_ih.npy", raw)
    with pytest.raises(lf.ModelFileError, match=r"declares \(99999999999,\)"):
        spec_from_torch_file(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(lf.ModelFileError):
        spec_from_torch_file(path)


def test_npz_mutants_raise_only_lstm_fast_errors(tmp_path: Path) -> None:
    """Byte flips and truncations of a valid archive: a spec or an lstm_fast error, nothing
    else (the fuzz suite's formats do not include .npz)."""
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(12)
    np.savez(good, enc_emb=rng.standard_normal((5, 3)).astype(np.float32),
             enc_w_ih=rng.standard_normal((12, 3)).astype(np.float32),
             enc_w_hh=rng.standard_normal((12, 4)).astype(np.float32))
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    for trial in range(300):
        b = bytearray(data[: rng.integers(1, len(data) + 1)] if trial % 5 == 0 else data)
        for _ in range(rng.integers(1, 8)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
        bad.write_bytes(bytes(b))
        try:
            spec_from_torch_file(bad)
        except lf.LstmFastError:
            pass
