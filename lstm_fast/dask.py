"""Batch scoring with Dask: :func:`predict` over a ``dask.array`` chunked along the batch.

Needs the ``dask`` extra (``pip install "lstm_fast[dask]"``: ``dask[array]`` and
``distributed``). Each chunk of sequences runs ``Model.predict`` on a worker; chunks are
independent (no state is kept between them), so a chunk whose worker dies is simply run
again by Dask.

With a ``dask.distributed`` client, the model is scattered to every worker once
(``client.scatter(model, broadcast=True, hash=True)``; a model pickles as its file's bytes, see
:meth:`lstm_fast.Model.__reduce_ex__`) and each chunk's task refers to it: it is pickled once,
not per chunk, and scoring the same model again with the same client reuses that future (a
worker that dropped its copy in the meantime fetches it from another worker).
Without a client (Dask's local schedulers), the model enters the graph once as a delayed
object.

    >>> from distributed import Client, LocalCluster
    >>> import dask.array as da
    >>> import lstm_fast as lf, lstm_fast.dask as lfd
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
    >>> x = da.from_npy_stack("x/")            # (B, T, I), chunked along B
    >>> y = lfd.predict(lf.load("model.lfm"), x, batch_size=1024)
    >>> da.to_npy_stack("y/", y)               # computed on the workers
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from .errors import DTypeError, InputError, ShapeError
from .model import Model

try:
    import dask
    import dask.array as da
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("lstm_fast.dask needs Dask: pip install \"lstm_fast[dask]\" (dask[array] "
                      "and distributed)") from e

__all__ = ["predict"]


def predict(model: Model, x: Any, lengths: Any = None, batch_size: int | None = None, *,
            check_finite: bool = True, client: Any = None) -> da.Array:
    """Run ``model.predict`` over a Dask array of sequences, chunk by chunk.

    Parameters
    ----------
    model : Model
        The model; sent to the workers once (see the module docstring).
    x : dask.array.Array or array_like, (B, T, I) floats or (B, T) integer ids
        The sequences, chunked along the batch axis (chunks along the other axes are merged:
        a sequence runs whole on one worker). A NumPy array is wrapped with
        ``dask.array.from_array``.
    lengths : dask.array.Array or array_like of int, (B,), optional
        Valid steps of each right-padded sequence (see :meth:`Model.predict`); rechunked to
        match ``x``.
    batch_size : int, optional
        Sequences per chunk (per task): ``x`` is rechunked along the batch to this size.
        Default: ``x``'s own chunks.
    check_finite : bool, optional
        As in :meth:`Model.predict` (a chunk with NaN/Inf fails its task with
        :class:`NonFiniteError`).
    client : distributed.Client, optional
        The client to scatter the model with. Default: the current client, if any.

    Returns
    -------
    y : dask.array.Array, float32, (B, T, O), or (B, O) when a recurrent layer returns only
        its last step
        Chunked along the batch as the input; nothing runs until it is computed.

    Raises
    ------
    ShapeError, DTypeError, InputError
        When ``x``, ``lengths`` or ``batch_size`` cannot be used (checked before any task
        runs, from shapes and dtypes; values such as ids and lengths are checked by each task).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an lstm_fast Model, got {type(model).__name__}")
    if not isinstance(x, da.Array):
        x = da.from_array(np.asarray(x), chunks=batch_size or "auto")
    ndim = 2 if model.takes_ids else 3
    if x.ndim != ndim or (ndim == 3 and x.shape[2] != model.input_size):
        want = "(B, T)" if model.takes_ids else f"(B, T, {model.input_size})"
        raise ShapeError(f"x has shape {x.shape}; expected {want}")
    if model.takes_ids and x.dtype.kind not in "iu":
        raise DTypeError(f"x has dtype {x.dtype}; this model starts with an Embedding and "
                         f"takes integer ids")
    if not model.takes_ids and x.dtype.kind != "f":
        raise DTypeError(f"x has dtype {x.dtype}; expected float32 (other float dtypes are "
                         f"converted)")
    if x.shape[0] < 1:
        raise ShapeError("x has batch size 0")
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        x = x.rechunk({0: int(batch_size)})
    x = x.rechunk({a: -1 for a in range(1, ndim)})
    args: list[Any] = [x, "bt" if model.takes_ids else "bti"]
    if lengths is not None:
        if not isinstance(lengths, da.Array):
            lengths = da.from_array(np.asarray(lengths), chunks=-1)
        if lengths.shape != (x.shape[0],):
            raise ShapeError(f"lengths has shape {lengths.shape}; expected ({x.shape[0]},)")
        if lengths.dtype.kind not in "iu":
            raise DTypeError(f"lengths has dtype {lengths.dtype}; expected integers")
        args += [lengths.rechunk((x.chunks[0],)), "b"]
    args += [_shipped(model, client), None]
    out = "bto" if model.spec.returns_sequences else "bo"
    meta = np.empty((0,) * len(out), np.float32)
    return da.blockwise(_predict_block, out, *args, new_axes={"o": model.output_size},
                        concatenate=True, dtype=np.float32, meta=meta,
                        has_lengths=lengths is not None, check_finite=check_finite)


def _predict_block(x: np.ndarray, *rest: Any, has_lengths: bool, check_finite: bool
                   ) -> np.ndarray:
    """One chunk: (lengths,) model -> model.predict. Keeps nothing between calls."""
    lengths, model = rest if has_lengths else (None, rest[0])
    return model.predict(x, lengths=lengths, check_finite=check_finite)


def _shipped(model: Model, client: Any) -> Any:
    """The model as the graph should carry it: a future of a copy scattered to every worker
    (distributed), else a delayed object (one graph key)."""
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            client = None
    if client is None:
        return dask.delayed(model, pure=True, traverse=False)
    per_client = _scattered.setdefault(model, {})
    future = per_client.get(client.id)
    if future is None or future.status != "finished":
        future = per_client[client.id] = client.scatter(model, broadcast=True, hash=True)
    return future


#: The futures of models already scattered, per client: scoring the same model again does not
#: send it again. An entry lives as long as its model (the workers' copies are released then).
_scattered: weakref.WeakKeyDictionary[Model, dict[str, Any]] = weakref.WeakKeyDictionary()
