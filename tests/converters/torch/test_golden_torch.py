"""Golden PyTorch fixtures, checked without torch.

tests/fixtures/make_torch_fixtures.py wrote each checkpoint with torch 2.13 together with
``<name>.io.npz``: the input, torch's output (and final states ``h_n``/``c_n`` for the newer
fixtures) and the conversion arguments. Converting the file with the torch-free reader must
reproduce torch's output and states, both in the float64 oracle and in the engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.torch import spec_from_torch_file
from tests import helpers
from tests.helpers import check_states
from tests.reference import spec_forward

FIXTURES = helpers.FIXTURES / "torch"
CASES = sorted(p.name[: -len(".io.npz")] for p in FIXTURES.glob("*.io.npz"))
ATOL = 1e-5


def _case(name: str) -> tuple[Path, dict, dict[str, np.ndarray]]:
    files = [p for p in FIXTURES.glob(f"{name}.*") if not p.name.endswith(".io.npz")]
    assert len(files) == 1, files
    with np.load(FIXTURES / f"{name}.io.npz", allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    return files[0], json.loads(str(arrays.pop("convert"))), arrays


def test_fixture_set_is_complete_and_small() -> None:
    assert set(CASES) == {"classifier", "lstm2_nobias", "checkpoint_dp", "scripted_lm",
                          "lstm_head", "bigru_packed", "rnn_relu", "lstm_proj", "bilstm_proj",
                          "gru_cell_ts", "speaker_bn"}
    sizes = [p.stat().st_size for p in FIXTURES.iterdir()]
    assert max(sizes) < 100_000 and sum(sizes) < 1_000_000


@pytest.mark.parametrize("target", ["oracle", "engine"])
@pytest.mark.parametrize("name", CASES)
def test_golden_fixture(name: str, target: str) -> None:
    path, convert, io = _case(name)
    spec = spec_from_torch_file(path, **convert)
    x, y, lengths = io["x"], io["y"], io.get("lengths")
    assert spec.metadata["source_framework"] == "torch"
    if target == "oracle":
        y_got, states = spec_forward(spec, x, lengths=lengths)
    else:
        y_got, states = lf.Model(spec).predict(x, lengths=lengths, return_state=True)
        if spec.state_layout == "cell":  # the cell's own (h, c) or h: one state
            states = [states]
    assert y_got.shape == y.shape
    np.testing.assert_allclose(y_got, y, rtol=0, atol=ATOL, err_msg=f"{target} vs torch")
    if "h_n" in io:
        check_states(states, io["h_n"], io.get("c_n"), spec, target)


def test_golden_layer_structure() -> None:
    kinds = {name: [L.kind for L in spec_from_torch_file(_case(name)[0], **_case(name)[1]).layers]
             for name in CASES}
    assert kinds == {
        "classifier": ["embedding", "lstm", "dense"],
        "lstm2_nobias": ["lstm", "lstm"],
        "checkpoint_dp": ["lstm", "dense", "dense"],
        "scripted_lm": ["embedding", "lstm", "dense"],
        "lstm_head": ["lstm", "lstm", "dense"],
        "bigru_packed": ["embedding", "bidirectional", "bidirectional", "dense"],
        "rnn_relu": ["rnn", "rnn", "dense"],
        "lstm_proj": ["lstm", "lstm"],
        "bilstm_proj": ["bidirectional", "bidirectional"],
        "gru_cell_ts": ["gru", "dense"],
        "speaker_bn": ["lstm", "lstm", "lstm", "dense", "normalize"],  # the batch norm folded
    }


def test_golden_new_kinds_details() -> None:
    """What the state dicts alone cannot say comes from the recorded conversion arguments."""
    bigru = spec_from_torch_file(*_case("bigru_packed")[:1], **_case("bigru_packed")[1])
    assert [c.kind for c in bigru.cells] == ["gru"] * 4
    assert all(c.b_ih is not None and c.b_hh is not None for c in bigru.cells)
    assert not bigru.returns_sequences and bigru.output_size == 3
    relu = spec_from_torch_file(*_case("rnn_relu")[:1], **_case("rnn_relu")[1])
    assert [c.activation for c in relu.cells] == ["relu", "relu"]
    cell = spec_from_torch_file(_case("gru_cell_ts")[0], **_case("gru_cell_ts")[1])
    assert cell.state_layout == "cell" and cell.metadata["torch_kinds"] == "nn.GRUCell"
    speaker = spec_from_torch_file(_case("speaker_bn")[0], **_case("speaker_bn")[1])
    assert speaker.metadata["folded"] == "bn folded into the next layer (lstm lstm2)"
    assert speaker.metadata["ignored"] == "ignored 2 tensors: similarity_weight, similarity_bias"
    proj = spec_from_torch_file(_case("bilstm_proj")[0])
    assert [(c.output_size, c.hidden_size) for c in proj.cells] == [(3, 8)] * 4
    assert proj.layers[1].input_size == 6 and proj.output_size == 6
