"""Issue 11 regressions: every hostile file of ``../shared/reliability`` (copied to
``tests/fixtures/hostile``) ends in one typed error, quickly and with bounded memory, through
the CLI and the Python API; one stream used by two threads raises ConcurrentUseError instead
of crashing."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.converters.keras import spec_from_keras_file
from lstm_fast.converters.torch import spec_from_torch_file
from tests.fuzz.runner import GB, ROOT, run_cli, worker_env
from tests.helpers import FIXTURES

HOSTILE = FIXTURES / "hostile"
SHARED = ROOT.parent / "shared" / "reliability"
#: The Keras reader's time limit in these tests (the default is 10 s; two files make HDF5 loop).
KERAS_TIMEOUT = "3"

#: What each file's error says (a regex), beyond being a ModelFileError.
EXPECTED = {
    "00072_st_deep_rnnrelu_lfm.lfm": "nested",
    "00194_st_deep_embclf_lfm.lfm": "nested",
    "lfm_json_deep.lfm": "nested",
    "00556_st_json_lstm2_lfm.lfm": "unsupported dtype",
    "02241_pkl_op_rnnrelu_legacy_pt.pt": "memo index",
    "zip_memo_bomb_1.pt": "memo index",
    "zip_bomb_storage.pt": "zip bomb",
    "01959_splice_k_lstm_h5.h5": "did not finish within 3 s",
    "02275_zip_entry_k_bigru_keras.keras": "did not finish within 3 s",
    "01235_zip_field_k_emb_keras.keras": "unsupported compression method",
    "01783_flip_rnnrelu_pt.pt": "unreadable zip archive",
    "00719_intover_rnnrelu_pt.pt": "unreadable zip archive",
    "00057_splice_k_emb_keras.keras": "extends past the end of the file",
    "01238_zip_field_k_lstm_keras.keras": "unreadable zip entry 'model.weights.h5'",
    # h5py errors inside the bounded reader; 13928 made HDF5 allocate 3.5 GB (now refused)
    "00015_flip_k_bigru_h5.h5": "unreadable Keras file",
    "00246_flip_k_emb_h5.h5": "unreadable Keras file",
    "00363_flip_k_lstm_h5.h5": "unreadable Keras file",
    "13928_splice_k_emb_h5.h5": "unreadable Keras file|needs more than",
    "28937_zip_entry_k_emb_keras.keras": "unreadable Keras file",
    "05874_zip_entry_k_lstm_keras.keras": "unreadable Keras file",
}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in (".lfm", ".pt", ".h5", ".keras"))


def _new_shared_files() -> list[Path]:
    """Files in the shared reliability folder that have no copy here (added since)."""
    if not SHARED.is_dir():
        return []
    known = {hashlib.sha256(p.read_bytes()).digest() for p in _files(HOSTILE)}
    return [p for p in _files(SHARED) if hashlib.sha256(p.read_bytes()).digest() not in known]


CASES = _files(HOSTILE) + _new_shared_files()


def _argv(path: Path, tmp_path: Path) -> list[str]:
    if path.suffix == ".lfm":
        return ["info", str(path)]
    return ["convert", str(path), "-o", str(tmp_path / "out.lfm"), "--no-verify"]


def test_every_reliability_file_is_here() -> None:
    assert len(_files(HOSTILE)) == 20
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent; the copies in {HOSTILE} are tested")
    assert {p.name for p in _files(SHARED)} <= {p.name for p in CASES}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_cli_one_typed_line(path: Path, tmp_path: Path) -> None:
    """As a user runs it: exit code 2, one ``lstm-fast: error:`` line, no signal, seconds,
    far below 1 GB."""
    env = worker_env({"LSTM_FAST_KERAS_TIMEOUT": KERAS_TIMEOUT})
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        status, peak_kb = run_cli(_argv(path, tmp_path), cwd=tmp_path, env=env, stderr=err,
                                  hang=20)
        err.seek(0)
        lines = err.read().decode().splitlines()
    assert status is not None, "hang: still running after 20 s"
    assert os.waitstatus_to_exitcode(status) == 2, lines
    assert len(lines) == 1 and lines[0].startswith("lstm-fast: error: "), lines
    assert re.search(EXPECTED.get(path.name, "."), lines[0]), lines[0]
    assert time.monotonic() - t0 < 15
    assert peak_kb * 1024 < GB / 2


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_python_api_raises_model_file_error(path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_FAST_KERAS_TIMEOUT", KERAS_TIMEOUT)
    read = {".lfm": lf.load, ".pt": spec_from_torch_file, ".h5": spec_from_keras_file,
            ".keras": spec_from_keras_file}[path.suffix]
    with pytest.raises(lf.ModelFileError, match=EXPECTED.get(path.name)):
        read(path)


def test_two_threads_one_stream_script(tmp_path: Path) -> None:
    """The reliability script: it used to segfault; now one thread gets ConcurrentUseError."""
    script = HOSTILE / "two_threads_one_stream.py"
    done = subprocess.run([sys.executable, str(script), "3"], cwd=tmp_path, env=worker_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived" in done.stdout
    raised = re.findall(r"^(\w+(?:\.\w+)*Error)", done.stderr, re.MULTILINE)
    assert raised and set(raised) == {"lstm_fast.errors.ConcurrentUseError"}, done.stderr[-2000:]


def test_concurrent_use_is_refused_and_harmless(rng: np.random.Generator) -> None:
    """While one thread runs a long chunk, another thread's calls on the same stream raise
    ConcurrentUseError and change nothing: the final state is that of the run alone."""
    model = lf.Model.from_lstm_weights([
        (rng.standard_normal((1024, 64)) * 0.1, rng.standard_normal((1024, 256)) * 0.1, None,
         None)])
    x = rng.standard_normal((2, 20000, 64)).astype(np.float32)
    s = model.stream(2)
    t = threading.Thread(target=s.run, args=(x,))
    t.start()
    refused = 0
    while t.is_alive() and not refused:  # read-only probes until the run has started
        try:
            s.state  # noqa: B018
        except lf.ConcurrentUseError:
            refused += 1
    assert refused, "the 20000-step run never overlapped a call"
    for call in (lambda: s.step(x[:, 0]), lambda: s.reset(), lambda: s.run(x[:, :3]),
                 lambda: setattr(s, "state", s.state)):
        with pytest.raises(lf.ConcurrentUseError, match="one thread at a time") as e:
            call()
        assert isinstance(e.value, RuntimeError)
    t.join()
    alone = model.stream(2)
    alone.run(x)
    np.testing.assert_array_equal(s.state[0], alone.state[0])
    np.testing.assert_array_equal(s.step(x[:, 0]), alone.step(x[:, 0]))
