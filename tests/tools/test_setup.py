"""How lstm_fast sets up its BLAS and kernel level: subprocesses, so each gets a fresh import."""

import os
import subprocess
import sys

import pytest

import lstm_fast as lf
from lstm_fast import _blas
from tests.helpers import ROOT


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


def test_every_folder_of_code_is_a_package():
    """pyproject finds the packages (``lstm_fast`` and ``lstm_fast.*``); a folder of modules
    without ``__init__.py`` would be skipped by that search, and ``pip install .`` (not
    editable) would ship without it."""

    root = ROOT / "lstm_fast"
    folders = {p.parent for p in root.rglob("*.py")} | {p.parent for p in root.rglob("*.pyx")}
    missing = sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders of modules without __init__.py: {missing}"


def test_the_version_is_written_once():
    """pyproject reads the version from ``lstm_fast/_version.py``; no second copy."""
    from importlib.metadata import version

    import tomllib

    root = ROOT
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert version("lstm_fast") == lf.__version__


def test_the_core_imports_no_framework():
    """Loading and running a model needs numpy, the BLAS wheel and nothing else: torch, Keras,
    ONNX, Dask and matplotlib are extras, imported only by the tools that use them."""
    code = ("import sys, numpy as np, lstm_fast as lf;"
            "m = lf.Model.from_lstm_weights([(np.ones((8, 3)), np.ones((8, 2)), None, None)]);"
            "m2 = lf.Model.from_bytes(m.to_bytes()); m2.stream(1).step(np.ones((1, 3)));"
            "print(sorted(k for k in ('torch', 'keras', 'onnx', 'onnxruntime', 'dask',"
            " 'distributed', 'matplotlib', 'h5py') if k in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_the_build_refuses_unsupported_platforms_with_a_clear_message():
    code = ("import platform, runpy, sys; platform.machine = lambda: 'aarch64'; "
            "sys.argv = ['setup.py', '--version']; runpy.run_path('setup.py')")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "builds on x86-64" in run.stderr and "aarch64" in run.stderr
