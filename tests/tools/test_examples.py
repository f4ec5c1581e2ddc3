"""The end-to-end examples in examples/ run, convert through the CLI and match their framework."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

EXAMPLES = ROOT / "examples"
DIFF = re.compile(r"max abs difference vs (\w+)(?: \(streaming\))?: ([0-9.eE+-]+)")


def run_example(name: str, workdir: Path) -> str:
    env = dict(os.environ, KERAS_BACKEND="torch")
    run = subprocess.run([sys.executable, str(EXAMPLES / name), "--workdir", str(workdir),
                          "--calls", "30"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def diffs(stdout: str) -> dict[str, float]:
    return {line.strip(): float(m.group(2)) for line in stdout.splitlines()
            if (m := DIFF.search(line))}


def test_torch_text_classifier(tmp_path):
    pytest.importorskip("torch")
    out = run_example("torch_text_classifier.py", tmp_path)
    found = diffs(out)
    assert any("vs torch:" in line for line in found), out
    assert all(d < 1e-4 for d in found.values()), found
    assert "held-out accuracy" in out and "us/sequence" in out
    assert (tmp_path / "text_classifier.pt").is_file()
    assert (tmp_path / "text_classifier.lfm").is_file()


def test_keras_forecaster(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("h5py")
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras")
    out = run_example("keras_forecaster.py", tmp_path)
    found = diffs(out)
    assert any("vs Keras:" in line for line in found), out
    assert any("(streaming)" in line for line in found), out
    assert all(d < 1e-4 for d in found.values()), found
    assert "streaming step" in out
    for name in ("forecaster_window", "forecaster_seq"):
        assert (tmp_path / f"{name}.keras").is_file()
        assert (tmp_path / f"{name}.lfm").is_file()
