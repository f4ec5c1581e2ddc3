"""Loads the BLAS (scipy-openblas32) before the C extension, on its fast path.

OpenBLAS picks its compute kernels when the library is loaded. On AMD Zen 4/5 it detects the
CPU as "Haswell" and uses its AVX2 kernels (~75-110 GFLOP/s sgemm per core here) although the
AVX-512 "SkylakeX" kernels reach ~200 GFLOP/s. So, unless the user has set OPENBLAS_CORETYPE
(then their choice stands), lstm_fast sets OPENBLAS_CORETYPE=SkylakeX while loading *its own*
OpenBLAS on CPUs with AVX-512 F/BW/DQ/VL, then restores the environment, so numpy's OpenBLAS
and anything else loaded later are unaffected.

The BLAS thread count is 1 unless OPENBLAS_NUM_THREADS or LSTM_FAST_NUM_THREADS is set;
:func:`lstm_fast.set_num_threads` sets it back to 1 (the engine's thread pool splits the
BLAS work in halves itself).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import scipy_openblas32

_AVX512 = ("avx512f", "avx512bw", "avx512dq", "avx512vl")


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def preferred_coretype() -> str | None:
    """The OpenBLAS core type lstm_fast asks for on this CPU, or None to let OpenBLAS pick."""
    return "SkylakeX" if all(f in cpu_flags() for f in _AVX512) else None


def library_path() -> Path:
    lib_dir = Path(scipy_openblas32.get_lib_dir())
    name = scipy_openblas32.get_library()
    for candidate in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        if (lib_dir / candidate).exists():
            return lib_dir / candidate
    raise ImportError(f"lstm_fast: cannot find the OpenBLAS library in {lib_dir}")


def load() -> ctypes.CDLL:
    """Load scipy-openblas32 globally (so ``_core`` resolves against it), with our core type."""
    coretype = None if "OPENBLAS_CORETYPE" in os.environ else preferred_coretype()
    if coretype:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        lib = ctypes.CDLL(str(library_path()), mode=ctypes.RTLD_GLOBAL)
    finally:
        if coretype:
            del os.environ["OPENBLAS_CORETYPE"]
    threads = os.environ.get("LSTM_FAST_NUM_THREADS", "").strip()
    if not (threads.isascii() and threads.isdigit() and 1 <= int(threads) <= 1024):
        threads = "" if "OPENBLAS_NUM_THREADS" in os.environ else "1"  # bad values: warned later
    if threads:
        lib.scipy_openblas_set_num_threads(int(threads))
    return lib
