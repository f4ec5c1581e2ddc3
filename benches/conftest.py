"""pytest configuration for the benchmarks in ``benches/``.

Pins every BLAS / OpenMP pool to one thread before the benchmark modules import
numpy or lstm_fast, and makes ``bench_common`` importable whatever pytest's
import mode is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
