"""Builds the C kernels and the Cython extension ``lstm_fast._core``.

BLAS is scipy-openblas32 from PyPI (headers, pkg-config data and the shared library in one
wheel). Its symbols carry the ``scipy_`` prefix. At run time ``lstm_fast._blas`` loads the
library before the extension, so the extension finds it without relying on the rpath.
"""

import platform
import sys
from pathlib import Path

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

csrc = Path("csrc")
sources = ["lstm_fast/_core.pyx"] + [
    str(p) for p in sorted(csrc.glob("*.c"))
    if platform.machine().lower() in ("x86_64", "amd64") or "avx" not in p.name
]
compile_args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-fno-math-errno", "-pthread"]
if sys.platform == "win32":
    compile_args = ["/O2"]

ext = Extension(
    "lstm_fast._core",
    sources=sources,
    depends=[str(p) for p in sorted(csrc.rglob("*.h"))],  # a header change rebuilds the kernels
    include_dirs=[str(csrc / "include"), str(csrc), np.get_include(),
                  scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"] if sys.platform != "win32" else [],
    define_macros=[("LF_BLAS_PREFIX", "scipy_"), ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=compile_args,
    extra_link_args=["-pthread"] if sys.platform != "win32" else [],
)

setup(ext_modules=cythonize([ext], language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
