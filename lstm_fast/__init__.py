"""lstm_fast: low-latency CPU inference for LSTM networks.

>>> import lstm_fast as lf
>>> model = lf.from_torch(torch_lstm)          # or lf.Model.from_lstm_weights(...)
>>> y = model.predict(x)                       # (B, T, I) -> (B, T, H)
>>> s = model.stream(batch=1)
>>> y_t = s.step(x_t)                          # (B, I) -> (B, H), state carried
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import _blas
from ._version import __version__ as __version__

_blas_lib = _blas.load()

from . import _core  # noqa: E402
from .errors import (  # noqa: E402
    ArgumentError,
    ArgumentTypeError,
    ConcurrentUseError,
    CpuFeatureError,
    DTypeError,
    DuplicateFrameError,
    EngineError,
    FormatVersionError,
    InputError,
    LstmFastError,
    ModelFileError,
    NonFiniteError,
    PoolFullError,
    SessionKeyError,
    ShapeError,
    UnsupportedModelError,
    WeightsError,
)
from .frameworks import from_keras, from_torch  # noqa: E402
from .model import Model, Stream  # noqa: E402
from .pool import StreamPool  # noqa: E402
from .spec import (  # noqa: E402
    AffineSpec,
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LSTMLayerSpec,
    MaskingSpec,
    ModelSpec,
    NormalizeSpec,
    SimpleRNNLayerSpec,
)

__all__ = [
    "AffineSpec", "ArgumentError", "ArgumentTypeError", "BidirectionalSpec",
    "ConcurrentUseError", "CpuFeatureError", "DTypeError", "DenseSpec", "DuplicateFrameError",
    "EmbeddingSpec", "EngineError", "FormatVersionError", "GRULayerSpec", "InputError",
    "LSTMLayerSpec", "LstmFastError", "MaskingSpec", "Model", "ModelFileError", "ModelSpec",
    "NonFiniteError", "NormalizeSpec", "PoolFullError", "SessionKeyError", "ShapeError",
    "SimpleRNNLayerSpec", "Stream", "StreamPool",
    "UnsupportedModelError", "WeightsError", "blas_info", "from_keras", "from_torch",
    "MAX_THREADS", "get_num_threads", "load", "set_num_threads",
]


def load(path: str | os.PathLike[str], *, isa: str | None = None) -> Model:
    """Load a model file written by ``lstm-fast convert`` or :meth:`Model.save`.

    Parameters
    ----------
    path : str or path-like
        The model file (safetensors container; no code is executed when reading it).
    isa : str, optional
        See :class:`Model`.

    Raises
    ------
    ModelFileError
        When the file is not an lstm_fast model, or is truncated or corrupted.
    FormatVersionError
        When the file was written by a newer lstm_fast.
    """
    from ._untrusted import file_errors
    from .format import load_spec

    spec = load_spec(path)
    with file_errors(os.fspath(path), "model"):
        return Model(spec, isa=isa)


#: Largest thread count :func:`set_num_threads` accepts.
MAX_THREADS = 1024


def set_num_threads(n: int) -> None:
    """Set the threads lstm_fast may use (default 1, or ``$LSTM_FAST_NUM_THREADS``).

    From 2 on, they go to the engine's thread pool: one worker thread, started by this call
    and kept (``1`` stops it), shared by every model in the process, so no run creates a
    thread. Each recurrent layer large enough to gain is split in two: the two directions of
    a bidirectional layer run at the same time, a batch of several sequences (without lengths
    or masks) runs as two halves, one or a few sequences of a large layer split its hidden
    units (each core streams half of the weights), and the input projection of a long chunk
    or a large batch runs as two halves. BLAS itself is set to one thread (the pool splits
    its work instead). Results agree across thread counts to float32 rounding;
    several Python threads may run at once (a layer that finds the pool busy runs both parts
    itself, with the same result). A forked child process starts its own worker.

    Parameters
    ----------
    n : int
        1 to :data:`MAX_THREADS`.

    Raises
    ------
    ArgumentTypeError
        When ``n`` is not an integer (a bool is not one).
    ArgumentError
        When ``n`` is outside 1 to :data:`MAX_THREADS`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ArgumentTypeError(f"set_num_threads takes an integer from 1 to {MAX_THREADS}, "
                                f"got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ArgumentError(f"set_num_threads takes 1 to {MAX_THREADS} threads, got {n}")
    _core.set_threads(int(n))


def get_num_threads() -> int:
    """The thread count set by :func:`set_num_threads`."""
    return _core.get_threads()


def _threads_from_env() -> None:
    value = os.environ.get("LSTM_FAST_NUM_THREADS", "").strip()
    if not value:
        return
    if value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_THREADS:
        set_num_threads(int(value))
    else:
        warnings.warn(f"LSTM_FAST_NUM_THREADS={value[:20]!r} ignored: expected 1 to "
                      f"{MAX_THREADS}", RuntimeWarning, stacklevel=2)


_threads_from_env()


def blas_info() -> dict[str, str | int]:
    """The BLAS core type in use, the best kernel instruction set of this CPU and the width in
    bits of its FMA pipes as the engine measured them (``fma_width``: 512 where AVX-512 runs
    on full-width pipes, and avx512 models then project large cells' inputs by GEMM; else
    256; ``$LSTM_FAST_FMA_WIDTH`` overrides it for models created afterwards)."""
    return {"blas": "scipy-openblas32", "core": _core.blas_core_name(),
            "best_isa": _core.best_isa(), "fma_width": _core.fma_width()}
