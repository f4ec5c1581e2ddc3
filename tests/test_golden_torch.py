"""Golden PyTorch fixtures, checked without torch.

tests/fixtures/make_torch_fixtures.py wrote each checkpoint with torch 2.13 together with
``<name>.io.npz``: the input, torch's output and the conversion arguments. Converting the file
with the torch-free reader must reproduce torch's output, both in the float64 oracle and in the
engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.torch import spec_from_torch_file
from tests.reference import spec_forward

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
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
                          "lstm_head"}
    sizes = [p.stat().st_size for p in FIXTURES.iterdir()]
    assert max(sizes) < 200_000 and sum(sizes) < 1_000_000


@pytest.mark.parametrize("name", CASES)
def test_golden_fixture(name: str) -> None:
    path, convert, io = _case(name)
    spec = spec_from_torch_file(path, **convert)
    x, y, lengths = io["x"], io["y"], io.get("lengths")
    assert spec.metadata["source_framework"] == "torch"
    y_ref, _ = spec_forward(spec, x, lengths=lengths)
    np.testing.assert_allclose(y_ref, y, rtol=0, atol=ATOL, err_msg="oracle vs torch")
    y_lf = lf.Model(spec).predict(x, lengths=lengths)
    assert y_lf.shape == y.shape
    np.testing.assert_allclose(y_lf, y, rtol=0, atol=ATOL, err_msg="engine vs torch")


def test_golden_layer_structure() -> None:
    kinds = {name: [L.kind for L in spec_from_torch_file(_case(name)[0], **_case(name)[1]).layers]
             for name in CASES}
    assert kinds == {
        "classifier": ["embedding", "lstm", "dense"],
        "lstm2_nobias": ["lstm", "lstm"],
        "checkpoint_dp": ["lstm", "dense", "dense"],
        "scripted_lm": ["embedding", "lstm", "dense"],
        "lstm_head": ["lstm", "lstm", "dense"],
    }
