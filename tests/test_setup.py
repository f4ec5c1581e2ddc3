"""How lstm_fast sets up its BLAS and kernel level: subprocesses, so each gets a fresh import."""

import os
import subprocess
import sys

import pytest

import lstm_fast as lf
from lstm_fast import _blas


def probe(env_extra: dict[str, str]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "LSTM_FAST_ISA")}
    code = ("import os, lstm_fast as lf, numpy as np;"
            "m = lf.Model.from_lstm_weights([(np.ones((8, 3)), np.ones((8, 2)), None, None)]);"
            "print(lf.blas_info()['core'], os.environ.get('OPENBLAS_CORETYPE'), m.isa)")
    run = subprocess.run([sys.executable, "-c", code], env={**env, **env_extra},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


@pytest.mark.skipif(_blas.preferred_coretype() is None, reason="CPU without AVX-512")
def test_avx512_cpus_get_the_skylakex_kernels_and_the_environment_is_restored():
    core, env_after, _ = probe({})
    assert core == "SkylakeX"
    assert env_after == "None"


def test_the_users_coretype_wins():
    core, env_after, _ = probe({"OPENBLAS_CORETYPE": "Haswell"})
    assert (core, env_after) == ("Haswell", "Haswell")


def test_isa_forced_through_the_environment():
    assert probe({"LSTM_FAST_ISA": "portable"})[2] == "portable"
    assert probe({})[2] == lf.blas_info()["best_isa"]


def test_every_subpackage_is_packaged():
    """pyproject lists packages explicitly; a new subpackage must be listed or `pip install .`
    (not editable) would ship without it."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    on_disk = {".".join(p.parent.relative_to(root).parts)
               for p in (root / "lstm_fast").rglob("__init__.py")}
    assert on_disk == listed


def test_the_build_refuses_unsupported_platforms_with_a_clear_message():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import platform, runpy, sys; platform.machine = lambda: 'aarch64'; "
            "sys.argv = ['setup.py', '--version']; runpy.run_path('setup.py')")
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "builds on x86-64" in run.stderr and "aarch64" in run.stderr
