"""The command line, through a subprocess: the demo's text against an independent float64
reference (examples/demo_reference.py), exit codes and one-line errors."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
