"""Input coercion shared by the Python API and the Cython fast path's slow branch.

Policy: float32 arrays are used as they are (any strides whose innermost step is one element;
others are copied). Other real floating dtypes (float16, float64, ...) are converted to float32
(a copy). Integer, boolean, complex and object arrays are refused with :class:`DTypeError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DTypeError, InputError, ShapeError


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _asarray(a: Any, name: str) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:  # ragged nested lists, objects numpy cannot take
        raise ShapeError(f"{name} is not a rectangular array ({e})") from None


def as_float32(a: Any, name: str) -> np.ndarray:
    """Return ``a`` as a float32 array whose rows are unit-stride, copying only when needed."""
    arr = _asarray(a, name)
    if arr.dtype != np.float32:
        if arr.dtype.kind != "f":
            raise DTypeError(
                f"{name} has dtype {arr.dtype}; expected float32 (other float dtypes are "
                f"converted, integer/bool/complex/object arrays are not accepted)"
            )
        arr = arr.astype(np.float32)
    if arr.ndim and (arr.strides[-1] != 4 or any(s % 4 for s in arr.strides)):
        arr = np.ascontiguousarray(arr)
    return arr


def check_array(a: Any, name: str, expected: tuple[Any, ...]) -> np.ndarray:
    """Coerce ``a`` (see :func:`as_float32`) and check it against ``expected``.

    ``expected`` holds ints (must match) and strings (any size, named in the message).
    """
    arr = as_float32(a, name)
    if arr.ndim != len(expected) or any(
        isinstance(e, int) and d != e for d, e in zip(arr.shape, expected, strict=True)
    ):
        raise ShapeError(
            f"{name} has shape {_shape_text(arr.shape)}; expected {_shape_text(expected)}"
        )
    return arr


def check_ids(a: Any, name: str, expected: tuple[Any, ...]) -> np.ndarray:
    """Token ids for an Embedding model: integers, converted to int32 (unit inner stride)."""
    arr = _asarray(a, name)
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"{name} has dtype {arr.dtype}; this model starts with an Embedding "
                         f"and takes integer ids")
    if arr.ndim != len(expected) or any(
        isinstance(e, int) and d != e for d, e in zip(arr.shape, expected, strict=True)
    ):
        raise ShapeError(
            f"{name} has shape {_shape_text(arr.shape)}; expected {_shape_text(expected)}"
        )
    if arr.dtype != np.int32:
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise InputError(f"{name} holds ids outside the int32 range")
        arr = arr.astype(np.int32)
    if arr.ndim and (arr.strides[-1] != 4 or any(s % 4 for s in arr.strides)):
        arr = np.ascontiguousarray(arr)
    return arr


def check_lengths(lengths: Any, batch: int) -> np.ndarray:
    """Valid steps per sequence: (B,) integers, as a contiguous int32 array."""
    arr = _asarray(lengths, "lengths")
    if arr.dtype.kind not in "iu":
        raise DTypeError(f"lengths has dtype {arr.dtype}; expected integers")
    if arr.shape != (batch,):
        raise ShapeError(f"lengths has shape {_shape_text(arr.shape)}; expected ({batch},)")
    if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
        raise InputError("lengths must be >= 0")
    return np.ascontiguousarray(arr, dtype=np.int32)
