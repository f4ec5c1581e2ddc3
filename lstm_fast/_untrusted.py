"""Helpers for reading untrusted bytes: bounded JSON, and one error type for any failure.

Every reader of a model or checkpoint file parses JSON through :func:`loads_json` (a size and a
nesting limit, checked without recursion) and runs its parsing inside :func:`file_errors`, so
whatever a corrupted or hostile file makes the standard library raise (``KeyError``,
``OverflowError``, ``EOFError``, ``RecursionError``, ...) reaches the caller as a
:class:`~lstm_fast.errors.ModelFileError`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, LstmFastError, ModelFileError

_F = TypeVar("_F", bound=Callable[..., Any])

#: Default nesting limit of JSON documents in model files (ours need 6 levels, Keras configs
#: about 12).
MAX_JSON_DEPTH = 64
#: Default size limit of one JSON document.
MAX_JSON_BYTES = 64 << 20


def short(e: BaseException, limit: int = 200) -> str:
    """``str(e)`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def json_depth(value: Any, limit: int) -> int:
    """The nesting depth of a parsed JSON value (a scalar is 0), counted up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def loads_json(text: str | bytes, what: str, where: str, *, max_depth: int = MAX_JSON_DEPTH,
               max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON from an untrusted file.

    Raises
    ------
    ModelFileError
        When ``text`` is longer than ``max_bytes``, is not JSON (or not UTF-8), or nests
        arrays/objects deeper than ``max_depth``.
    """
    if len(text) > max_bytes:
        raise ModelFileError(f"{where}: {what} is larger than {max_bytes} bytes")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ModelFileError(f"{where}: corrupted {what}: nested too deeply") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError included
        raise ModelFileError(f"{where}: corrupted {what}: not valid JSON ({short(e)})") from None
    if json_depth(value, max_depth) > max_depth:
        raise ModelFileError(f"{where}: corrupted {what}: nested more than {max_depth} levels "
                             f"deep")
    return value


@contextmanager
def file_errors(where: str, what: str = "file") -> Iterator[None]:
    """Turn any exception raised while interpreting a file's content into ModelFileError.

    lstm_fast errors pass through unchanged (they already say what is wrong);
    ``KeyboardInterrupt`` and ``SystemExit`` are not touched.
    """
    try:
        yield
    except LstmFastError:
        raise
    except RecursionError as e:
        raise ModelFileError(f"{where}: the {what} is nested too deeply") from e
    except MemoryError as e:
        raise ModelFileError(f"{where}: not enough memory to read the {what} (it declares "
                             f"sizes it does not hold?)") from e
    except Exception as e:  # noqa: BLE001 - whatever a corrupted file makes a parser raise
        raise ModelFileError(f"{where}: unreadable {what} ({type(e).__name__}: {short(e)}); "
                             f"the file is truncated or corrupted") from e


def converter_errors(fn: _F) -> _F:
    """Decorate a ``spec_from_*_file(path, ...)`` converter: it raises only lstm_fast errors.

    Floating-point warnings are silenced (hostile weights overflow; the spec's own checks
    report NaN and Inf). lstm_fast errors and ``OSError`` (a missing or unreadable path) pass
    through. The readers
    below a converter already turn any failure on file content into lstm_fast errors, so a
    plain ``ValueError`` / ``TypeError`` is the converter refusing one of its arguments and
    becomes an :class:`~lstm_fast.errors.ArgumentError` / ``ArgumentTypeError`` with the same
    message; anything else comes from content the converter did not foresee and becomes a
    ``ModelFileError`` (see :func:`file_errors`).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with np.errstate(all="ignore"):  # NaN/Inf weights are reported by the spec checks
                return fn(*args, **kwargs)
        except (LstmFastError, OSError):
            raise
        except Exception as e:  # noqa: BLE001 - sorted out below
            if type(e) is ValueError:
                raise ArgumentError(str(e)) from e
            if type(e) is TypeError:
                raise ArgumentTypeError(str(e)) from e
            path = args[0] if args else kwargs.get("path", "")
            where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "<file>"
            with file_errors(where):
                raise

    return wrapper  # type: ignore[return-value]
