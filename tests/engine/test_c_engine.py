"""Builds csrc/tests/test_engine.c with AddressSanitizer + UBSan, and with ThreadSanitizer (the
two directions of bidirectional layers run on two threads), and runs it: the C ABI against its
own double-precision reference, error paths included, on every kernel level of this CPU."""

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import ROOT

SANITIZERS = {
    "address+undefined": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"],
    "thread": ["-fsanitize=thread"],
}


def gcc(*args: str) -> None:
    run = subprocess.run(["gcc", *args], capture_output=True, text=True)
    assert run.returncode == 0, f"gcc {' '.join(args)}\n{run.stderr}"


def build(sanitizer: str, out_dir: Path) -> Path:
    """The C test binary under `sanitizer`: its sources compiled side by side, one per core
    (the kernel files take a minute each under the sanitizers), then linked. -g1 keeps the
    line tables the sanitizers' reports need and halves the compile time of -g."""
    scipy_openblas32 = pytest.importorskip("scipy_openblas32")
    flags = ["-std=c11", "-O1", "-g1", "-Wall", "-Wextra", "-Werror", "-pthread",
             *SANITIZERS[sanitizer], "-fno-omit-frame-pointer", "-DLF_BLAS_PREFIX=scipy_",
             f"-I{ROOT / 'csrc/include'}", f"-I{scipy_openblas32.get_include_dir()}"]
    sources = [ROOT / "csrc/tests/test_engine.c", *sorted((ROOT / "csrc").glob("*.c"))]
    sources.sort(key=lambda src: -src.stat().st_size)  # the longest compiles first

    def compile_one(src: Path) -> Path:
        obj = out_dir / f"{src.stem}.o"
        gcc(*flags, "-c", str(src), "-o", str(obj))
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    exe = out_dir / "test_engine"
    lib_dir = scipy_openblas32.get_lib_dir()
    gcc(*flags, *map(str, objects), f"-L{lib_dir}", f"-l{scipy_openblas32.get_library()}",
        f"-Wl,-rpath,{lib_dir}", "-lm", "-o", str(exe))
    return exe


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("gcc") is None,
                    reason="needs gcc on Linux")
@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
def test_c_engine_under_sanitizers(tmp_path, sanitizer):
    exe = build(sanitizer, tmp_path)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", ASAN_OPTIONS="detect_leaks=1",
               TSAN_OPTIONS="halt_on_error=1")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("0 failed"), run.stdout


def abi_functions() -> set[str]:
    """Names of the functions lstm_fast.h exports (declared with LF_API)."""
    header = (ROOT / "csrc/include/lstm_fast.h").read_text()
    return set(re.findall(r"^LF_API\b[^(]*?\b(lf_\w+)\(", header, flags=re.MULTILINE))


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("nm") is None,
                    reason="needs nm on Linux")
def test_the_extension_exports_only_the_abi_and_its_init():
    import lstm_fast._core as core

    assert core.abi_version() == core.ABI_VERSION
    run = subprocess.run(["nm", "-D", "--defined-only", core.__file__], check=True,
                         capture_output=True, text=True)
    exported = {line.split()[-1] for line in run.stdout.splitlines() if line.strip()}
    abi = abi_functions()
    assert len(abi) > 20 and {"lf_run", "lf_abi_version", "lf_model_bytes"} <= abi
    assert exported == abi | {"PyInit__core"}
