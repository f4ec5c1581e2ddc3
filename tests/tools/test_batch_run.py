"""`lstm-fast run --batch-size`: a memory-mapped input scored batch by batch into a .npy output,
equal to Model.predict; an interrupted run (KeyboardInterrupt, or a killed process) resumes
where its progress file says and writes the same bytes as an uninterrupted run; a progress
file of another job is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import batch_run
from lstm_fast.cli import main
from lstm_fast.spec import EmbeddingSpec, ModelSpec
from tests.helpers import ROOT, cell_spec, dense_spec
from tests.reference import random_layers


def per_batch(model, x, lengths, size):
    return np.concatenate([
        model.predict(x[b:b + size], lengths=None if lengths is None else lengths[b:b + size])
        for b in range(0, len(x), size)])


@pytest.fixture
def job(tmp_path, rng):
    model = lf.Model.from_lstm_weights(random_layers(rng, 6, 10, 2))
    model.save(tmp_path / "m.lfm")
    x = rng.standard_normal((1000, 15, 6)).astype(np.float32)
    lengths = rng.integers(0, 16, 1000)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "len.npy", lengths)
    return model, x, lengths, tmp_path


def run_cli(tmp_path, *extra):
    return main(["run", str(tmp_path / "m.lfm"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npy"), *extra])


def test_batches_equal_predict(job, capsys):
    model, x, lengths, tmp = job
    assert run_cli(tmp, "--batch-size", "128", "--lengths", str(tmp / "len.npy")) == 0
    y = np.load(tmp / "y.npy")
    np.testing.assert_array_equal(y, per_batch(model, x, lengths, 128))
    np.testing.assert_allclose(y, model.predict(x, lengths=lengths), rtol=0, atol=1e-6)
    out, err = capsys.readouterr()
    assert "1,000 sequences in" in out and "seq/s" in out
    assert "100.0% 1,000/1,000 seq" in err and "seq/s" in err
    assert not (tmp / "y.npy.partial").exists() and not (tmp / "y.npy.partial.json").exists()


def test_ids_and_return_last_models(tmp_path, rng):
    c = cell_spec(rng, "gru", 5, 7)
    spec = ModelSpec((EmbeddingSpec(rng.normal(size=(20, 5)), mask_zero=True),
                      type(c)(c.w_ih, c.w_hh, c.b_ih, c.b_hh, return_sequences=False),
                      dense_spec(rng, 7, 3, "softmax")), mask_semantics="keras")
    model = lf.Model(spec)
    model.save(tmp_path / "m.lfm")
    ids = rng.integers(0, 20, (333, 9)).astype(np.int64)
    np.save(tmp_path / "x.npy", ids)
    assert run_cli(tmp_path, "--batch-size", "50", "--no-progress") == 0
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (333, 3)
    np.testing.assert_array_equal(y, per_batch(model, ids, None, 50))


def test_interrupted_run_resumes_to_the_same_bytes(job, monkeypatch, capsys):
    model, x, lengths, tmp = job
    assert run_cli(tmp, "--batch-size", "100", "--lengths", str(tmp / "len.npy")) == 0
    whole = (tmp / "y.npy").read_bytes()
    os.remove(tmp / "y.npy")
    monkeypatch.setattr(batch_run, "CHECKPOINT_SECONDS", 0.0)
    calls = []
    predict = lf.Model.predict

    def interrupting(self, *a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return predict(self, *a, **kw)

    monkeypatch.setattr(lf.Model, "predict", interrupting)
    assert run_cli(tmp, "--batch-size", "100", "--lengths", str(tmp / "len.npy")) == 130
    assert "interrupted after 300 of 1,000" in capsys.readouterr().err
    assert not (tmp / "y.npy").exists()
    assert json.loads((tmp / "y.npy.partial.json").read_text())["done"] == 300
    calls.clear()
    monkeypatch.setattr(lf.Model, "predict", lambda self, *a, **kw: calls.append(1) or
                        predict(self, *a, **kw))
    assert run_cli(tmp, "--batch-size", "100", "--lengths", str(tmp / "len.npy"),
                   "--resume") == 0
    assert len(calls) == 7  # batches 300..999 only
    assert "resumed after 300" in capsys.readouterr().out
    assert (tmp / "y.npy").read_bytes() == whole


def test_killed_process_resumes(tmp_path, rng):
    """A process killed with SIGKILL mid-run: its progress file only counts rows on disk."""
    model = lf.Model.from_lstm_weights(random_layers(rng, 64, 128, 1))
    model.save(tmp_path / "m.lfm")
    x = rng.standard_normal((3000, 120, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    cmd = [sys.executable, "-m", "lstm_fast", "run", str(tmp_path / "m.lfm"), "--input",
           str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"), "--batch-size", "40"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), LSTM_FAST_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecar = tmp_path / "y.npy.partial.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if sidecar.exists() and json.loads(sidecar.read_text() or "{}").get("done", 0) > 0:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = json.loads(sidecar.read_text())["done"]
    assert 0 < done < 3000
    run = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"resumed after {done:,}" in run.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), per_batch(model, x, None, 40))


def test_resume_refuses_another_job(job, monkeypatch, capsys):
    model, x, lengths, tmp = job
    monkeypatch.setattr(lf.Model, "predict", lambda *a, **kw: (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert run_cli(tmp, "--batch-size", "100") == 130
    monkeypatch.undo()
    # another batch size, other lengths, a changed input: each refused with the reason
    assert run_cli(tmp, "--batch-size", "50", "--resume") == 2
    assert "differs in batch_size" in capsys.readouterr().err
    assert run_cli(tmp, "--batch-size", "100", "--resume", "--lengths",
                   str(tmp / "len.npy")) == 2
    assert "lengths_sha256" in capsys.readouterr().err
    np.save(tmp / "x.npy", x[:, ::-1])
    os.utime(tmp / "x.npy", ns=(0, 12345))
    assert run_cli(tmp, "--batch-size", "100", "--resume") == 2
    assert "input_mtime_ns" in capsys.readouterr().err
    # without --resume: starts over
    assert run_cli(tmp, "--batch-size", "100") == 0
    assert "starting over" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp / "y.npy"),
                                  per_batch(model, x[:, ::-1], None, 100))


def test_bad_input(job, tmp_path, capsys):
    model, x, lengths, tmp = job
    for extra, message in (
            (("--batch-size", "0"), "--batch-size must be a positive integer"),
            (("--batch-size", "10", "--lengths", "1,2"), "lengths have shape (2,)"),
            (("--batch-size", "10", "--lengths", str(tmp / "x.npy")), "dtype float32")):
        assert run_cli(tmp, *extra) == 2
        assert message in capsys.readouterr().err
    np.save(tmp / "bad.npy", np.zeros((4, 5, 7), np.float32))
    assert main(["run", str(tmp / "m.lfm"), "--input", str(tmp / "bad.npy"), "--output",
                 str(tmp / "o.npy"), "--batch-size", "2"]) == 2
    assert "expected (B, T, 6)" in capsys.readouterr().err
    np.save(tmp / "ints.npy", np.zeros((4, 5, 6), np.int32))
    assert main(["run", str(tmp / "m.lfm"), "--input", str(tmp / "ints.npy"), "--output",
                 str(tmp / "o.npy"), "--batch-size", "2"]) == 2
    assert "dtype int32" in capsys.readouterr().err
    assert main(["run", str(tmp / "m.lfm"), "--input", str(tmp / "x.npy"), "--output",
                 str(tmp / "x.npy"), "--batch-size", "2"]) == 2
    assert "must not be the input" in capsys.readouterr().err
    (tmp / "empty.npy").write_bytes(b"")
    assert main(["run", str(tmp / "m.lfm"), "--input", str(tmp / "empty.npy"), "--output",
                 str(tmp / "o.npy"), "--batch-size", "2"]) == 2
    assert "empty or truncated" in capsys.readouterr().err
    assert not (tmp / "o.npy").exists()
