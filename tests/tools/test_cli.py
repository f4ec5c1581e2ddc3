"""The command line, through a subprocess: the demo's text against an independent float64
reference (examples/demo_reference.py), exit codes and one-line errors."""

import subprocess
import sys

import numpy as np

from tests.helpers import FIXTURES, ROOT

sys.path.insert(0, str(ROOT / "examples"))

from demo_reference import DEFAULT_NPZ, generate_reference  # noqa: E402


def lstm_fast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lstm_fast", *args], capture_output=True,
                          text=True, timeout=300)


def test_demo_generates_what_the_reference_generates():
    run = lstm_fast("demo", "--chars", "300")
    assert run.returncode == 0, run.stderr
    expected = generate_reference(DEFAULT_NPZ, 300)
    assert "Beautiful is" + expected in run.stdout
    assert "per step" in run.stdout


def test_demo_sampling_is_reproducible():
    a, b = lstm_fast("demo", "--chars", "50", "--temperature", "0.8", "--seed", "3"), \
        lstm_fast("demo", "--chars", "50", "--temperature", "0.8", "--seed", "3")
    assert a.returncode == 0 and a.stdout.splitlines()[:4] == b.stdout.splitlines()[:4]


def test_user_errors_are_one_line_without_traceback():
    run = lstm_fast("demo", "--chars", "0")
    assert run.returncode == 2
    assert run.stderr.strip() == "lstm-fast: error: --chars must be at least 1"
    run = lstm_fast("no-such-command")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert lstm_fast("demo", "--help").returncode == 0




def test_every_command_has_help():
    for command in ("convert", "info", "run", "verify", "demo"):
        run = lstm_fast(command, "--help")
        assert run.returncode == 0 and "usage: lstm-fast " + command in run.stdout


def test_convert_keras_prints_table_and_framework_difference(tmp_path):
    out = tmp_path / "text.lfm"
    run = lstm_fast("convert", str(FIXTURES / "keras" / "text_embedding.keras"), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert "(keras)" in run.stdout and "embedding" in run.stdout and "lstm" in run.stdout
    if "skipped" not in run.stdout:  # keras installed: the difference is printed and tiny
        diff = float(run.stdout.split("max abs difference vs keras")[1].split(":")[1].split()[0])
        assert diff < 1e-5
    info = lstm_fast("info", str(out))
    assert info.returncode == 0
    assert "format_version: 1" in info.stdout and "parameters:" in info.stdout
    assert "source keras_version: 3.15.1" in info.stdout


def test_convert_torch_state_dict_then_run_and_verify(tmp_path):
    src = FIXTURES / "torch" / "lstm2_nobias.pt"
    out = tmp_path / "m.lfm"
    run = lstm_fast("convert", str(src), "-o", str(out), "--no-verify")
    assert run.returncode == 0, run.stderr
    assert "(torch)" in run.stdout and "no bias" in run.stdout
    io = np.load(FIXTURES / "torch" / "lstm2_nobias.io.npz")
    np.save(tmp_path / "x.npy", io["x"])
    run = lstm_fast("run", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                    str(tmp_path / "y.npy"))
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), io["y"], atol=1e-5)
    lengths = np.full(io["x"].shape[0], io["x"].shape[1] // 2)
    run = lstm_fast("run", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                    str(tmp_path / "y2.npy"), "--lengths", ",".join(map(str, lengths)))
    assert run.returncode == 0, run.stderr
    y2 = np.load(tmp_path / "y2.npy")
    np.testing.assert_array_equal(y2[:, lengths[0]:], 0.0)  # PyTorch packed semantics
    verify = lstm_fast("verify", str(out), "--against", str(src), "--steps", "600")
    if verify.returncode == 3:
        assert "skipped" in verify.stdout  # torch missing
    else:
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "within tolerance" in verify.stdout
        strict = lstm_fast("verify", str(out), "--against", str(src), "--tolerance", "1e-12")
        assert strict.returncode == 1 and "OVER tolerance" in strict.stdout


def test_cli_errors_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    model = tmp_path / "m.lfm"
    assert lstm_fast("convert", str(FIXTURES / "torch" / "lstm2_nobias.pt"), "-o", str(model),
                     "--no-verify").returncode == 0
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    for args in (("convert", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "o")),
                 ("convert", str(garbage), "-o", str(tmp_path / "o")),
                 ("info", str(garbage)),
                 ("run", str(garbage), "--input", "x.npy", "--output", "y.npy"),
                 ("run", str(model), "--input", str(empty), "--output", "y.npy")):
        run = lstm_fast(*args)
        assert run.returncode == 2, args
        assert run.stderr.startswith("lstm-fast: error: ") and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1


def test_run_refuses_wrong_input_shape(tmp_path):
    out = tmp_path / "m.lfm"
    assert lstm_fast("convert", str(FIXTURES / "torch" / "lstm2_nobias.pt"), "-o", str(out),
                     "--no-verify").returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 999), np.float32))
    run = lstm_fast("run", str(out), "--input", str(tmp_path / "x.npy"), "--output",
                    str(tmp_path / "y.npy"))
    assert run.returncode == 2 and "expected (B, T," in run.stderr
