"""Builds the C kernels and the Cython extension ``lstm_fast._core``.

BLAS is scipy-openblas32 from PyPI (headers, pkg-config data and the shared library in one
wheel). Its symbols carry the ``scipy_`` prefix. At run time ``lstm_fast._blas`` loads the
library before the extension, so the extension finds it without relying on the rpath.

Supported platforms: x86-64 Unix-likes with GCC or Clang (tested on Linux): the kernel levels
are portable C, AVX2 and AVX-512, threads are POSIX threads, the flags are GCC's. Anything else
stops here with a clear message rather than failing later in the compiler or at import. (The C
itself compiles anywhere with GCC or Clang: off x86-64 it builds the portable level only.)
"""

import platform
import sys
from pathlib import Path

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32" or platform.machine().lower() not in ("x86_64", "amd64"):
    sys.exit(f"lstm_fast builds on x86-64 Unix-likes (Linux, macOS) with GCC or Clang; this "
             f"is {sys.platform} on {platform.machine() or 'an unknown machine'}")

csrc = Path("csrc")
ext = Extension(
    "lstm_fast._core",
    sources=["lstm_fast/_core.pyx"] + [str(p) for p in sorted(csrc.glob("*.c"))],
    # a header change rebuilds the kernels; the .pxd mirrors the ABI header for _core.pyx
    depends=[str(p) for p in sorted(csrc.rglob("*.h"))] + ["lstm_fast/_lf.pxd"],
    include_dirs=[str(csrc / "include"), str(csrc), np.get_include(),
                  scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"],
    define_macros=[("LF_BLAS_PREFIX", "scipy_"), ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # only the ABI (LF_API in lstm_fast.h) and the module's init function are exported
    extra_compile_args=["-std=c11", "-O3", "-Wall", "-Wextra", "-fno-math-errno", "-pthread",
                        "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
)

setup(ext_modules=cythonize([ext], language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
