"""lstm_fast: low-latency CPU inference for LSTM networks.

>>> import lstm_fast as lf
>>> model = lf.from_torch(torch_lstm)          # or lf.Model.from_lstm_weights(...)
>>> y = model.predict(x)                       # (B, T, I) -> (B, T, H)
>>> s = model.stream(batch=1)
>>> y_t = s.step(x_t)                          # (B, I) -> (B, H), state carried
"""

from __future__ import annotations

from . import _blas

_blas_lib = _blas.load()

from . import _core  # noqa: E402
from .converters.torch import from_torch  # noqa: E402
from .errors import (  # noqa: E402
    CpuFeatureError,
    DTypeError,
    EngineError,
    InputError,
    LstmFastError,
    NonFiniteError,
    ShapeError,
    UnsupportedModelError,
    WeightsError,
)
from .model import Model, Stream  # noqa: E402
from .spec import LSTMLayerSpec, ModelSpec  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CpuFeatureError", "DTypeError", "EngineError", "InputError", "LSTMLayerSpec",
    "LstmFastError", "Model", "ModelSpec", "NonFiniteError", "ShapeError", "Stream",
    "UnsupportedModelError", "WeightsError", "blas_info", "from_torch", "set_num_threads",
]


def set_num_threads(n: int) -> None:
    """Set the number of BLAS threads lstm_fast uses for large batches (default 1)."""
    _core.blas_set_num_threads(int(n))


def blas_info() -> dict[str, str]:
    """The BLAS core type in use and the best kernel instruction set of this CPU."""
    return {"blas": "scipy-openblas32", "core": _core.blas_core_name(),
            "best_isa": _core.best_isa()}
