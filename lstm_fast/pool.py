"""Many independent sessions over one model: :class:`StreamPool`.

A pool keeps the recurrent state of many sessions (speech or sensor streams, generations, ...)
as rows of a few multi-row engine states, its *segments*. A tick steps only the sessions that
sent a frame, in one engine call (``lf_run_rows``): the C engine gathers their rows into a
compact batch, runs it with the kernels of an ordinary batch, and writes the rows back; no
other row is read or written. Growing adds a segment (no row is copied); :meth:`StreamPool.compact`
moves the sessions of the last segment into free rows of the others and drops it (only the
rows that move are copied).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import threading
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np

from . import _core
from ._checks import check_array
from .errors import (
    DTypeError,
    DuplicateFrameError,
    InputError,
    NonFiniteError,
    PoolFullError,
    SessionKeyError,
    ShapeError,
    UnsupportedModelError,
)
from .model import Model, State, _get_state, _set_state

__all__ = ["StreamPool"]

#: Rows of the first segment; each later segment doubles the rows allocated so far.
FIRST_SEGMENT = 16

_FREE, _LIVE, _PENDING = 0, 1, 2

Frames = Mapping[Hashable, Any] | Iterable[tuple[Hashable, Any]]


class StreamPool:
    """Many independent stateful sessions over one model, stepped together.

    Each session is one sequence of a stream: it starts from zero state when opened, and its
    state carries over from one of its frames to the next. :meth:`step` advances only the
    sessions that sent a frame, in one engine call; the state of every other session is left
    untouched (not read, not written).

    Parameters
    ----------
    model : Model
        A streamable model (no Bidirectional or ``go_backwards`` layer).
    capacity : int, optional
        Most sessions open at once; opening one more raises :class:`PoolFullError`. Default:
        no limit. Rows are allocated as sessions open, in segments (16 rows, then doubling the
        rows allocated so far), so a large capacity costs nothing until it is used.
    tick_us : float, optional
        For :meth:`step_async`: the longest a frame waits for others to join its engine call,
        in microseconds (default 500). A tick also ends as soon as every open session has sent
        a frame.
    check_finite : bool, optional
        Refuse frames holding NaN or Inf with :class:`NonFiniteError` (default True).

    Notes
    -----
    Thread safety: one thread may step (:meth:`step`, :meth:`run`; calls from several threads
    are serialised) while other threads open and close sessions. :meth:`open` and
    :meth:`close` never wait for an engine call: a session closed during a call keeps its row
    until the call ends, and a session opened during one gets a row the call does not touch.
    :meth:`state`, :meth:`set_state`, :meth:`reset` and :meth:`compact` wait for a running call
    to end.

    A failed call (unknown key, bad frame) raises before any state is written: no session
    advances.

    Examples
    --------
    >>> pool = lf.StreamPool(model)
    >>> a, b = pool.open(), pool.open("caller-key")
    >>> out = pool.step({a: frame_a, b: frame_b})      # {a: (O,), b: (O,)}
    >>> out = pool.step({b: next_frame_b})             # a's state is untouched
    >>> pool.close(a)
    """

    def __init__(self, model: Model, capacity: int | None = None, *, tick_us: float = 500.0,
                 check_finite: bool = True) -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model must be an lstm_fast Model, got {type(model).__name__}")
        if not model.spec.streamable:
            raise UnsupportedModelError(
                "this model has a layer that reads its input backwards (Bidirectional or "
                "go_backwards), so its sessions cannot run step by step")
        if capacity is not None and (isinstance(capacity, bool)
                                     or not isinstance(capacity, (int, np.integer))
                                     or capacity < 1):
            raise InputError(f"capacity must be a positive integer or None, got {capacity!r}")
        if not tick_us >= 0:
            raise InputError(f"tick_us must be >= 0, got {tick_us!r}")
        self._model = model
        self._capacity = None if capacity is None else int(capacity)
        self._tick = float(tick_us) * 1e-6
        self._check_finite = bool(check_finite)
        self._segments: list[_core.CState] = []
        self._bases: list[int] = []
        self._total = 0
        self._seg_of = np.zeros(0, np.int32)    # global row -> segment
        self._local_of = np.zeros(0, np.int32)  # global row -> row within its segment
        self._row_of: dict[Hashable, int] = {}
        self._key_of: list[Hashable | None] = []
        self._status = bytearray()
        self._free: list[int] = []              # min-heap: low rows first, so compact() moves few
        self._pending: list[int] = []           # closed during an engine call
        self._stepping = False
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._step_lock = threading.Lock()
        self._ws = np.empty(0, np.uint8)
        self._counter = itertools.count()
        self._ticker: _Ticker | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None  # step_async's
        self._vocab = model.spec.layers[0].vocab_size if model.takes_ids else 0
        self._calls = 0
        self._stepped = 0

    # -- sessions ------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        """The model every session runs."""
        return self._model

    @property
    def capacity(self) -> int | None:
        """Most sessions open at once (None: no limit)."""
        return self._capacity

    @property
    def allocated(self) -> int:
        """Rows of state allocated now (open sessions plus free rows)."""
        return self._total

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._row_of
        except TypeError:
            return False

    @property
    def stats(self) -> dict[str, int]:
        """Engine calls made so far, and the session steps (frames, or chunks) they ran."""
        return {"calls": self._calls, "frames": self._stepped}

    def keys(self) -> list[Hashable]:
        """The keys of the open sessions."""
        with self._lock:
            return list(self._row_of)

    def __repr__(self) -> str:
        return (f"StreamPool({len(self)} open, {self._total} rows allocated, "
                f"capacity={self._capacity}, model={self._model!r})")

    def open(self, key: Hashable | None = None) -> Hashable:
        """Open a session with zero state.

        Parameters
        ----------
        key : hashable, optional
            The caller's key for the session. Default: a new int key, not in use.

        Returns
        -------
        key : hashable
            The session's key.

        Raises
        ------
        SessionKeyError
            When ``key`` is already open.
        PoolFullError
            When ``capacity`` sessions are open.
        """
        with self._lock:
            if key is None:
                key = next(self._counter)
                while key in self._row_of:
                    key = next(self._counter)
            elif key in self._row_of:
                raise SessionKeyError(f"session {key!r} is already open")
            if not self._free:
                self._grow()
            row = heapq.heappop(self._free)
            seg = self._segments[self._seg_of[row]]
            seg.reset([int(self._local_of[row])])  # a free row is never in a running call
            self._row_of[key] = row
            self._key_of[row] = key
            self._status[row] = _LIVE
        return key

    def close(self, key: Hashable) -> None:
        """Close a session; its row is reused by a later :meth:`open`.

        Raises
        ------
        SessionKeyError
            When no session ``key`` is open.
        """
        with self._lock:
            try:
                row = self._row_of.pop(key)
            except (KeyError, TypeError):
                raise SessionKeyError(f"no open session {key!r}") from None
            self._key_of[row] = None
            if self._stepping:
                self._status[row] = _PENDING
                self._pending.append(row)
            else:
                self._status[row] = _FREE
                heapq.heappush(self._free, row)

    def _grow(self) -> None:
        """Add a segment (lock held). Existing rows do not move."""
        cap = self._capacity
        if cap is not None and self._total >= cap:
            raise PoolFullError(f"the pool is full: {cap} sessions are open (capacity={cap})")
        size = max(FIRST_SEGMENT, self._total)
        if cap is not None:
            size = min(size, cap - self._total)
        seg = _core.CState(self._model._c, size)
        index, base = len(self._segments), self._total
        self._seg_of = np.concatenate([self._seg_of, np.full(size, index, np.int32)])
        self._local_of = np.concatenate([self._local_of, np.arange(size, dtype=np.int32)])
        self._key_of.extend([None] * size)
        self._status.extend(bytes(size))
        self._segments.append(seg)
        self._bases.append(base)
        self._total += size
        for row in range(base, base + size):
            heapq.heappush(self._free, row)

    def compact(self) -> int:
        """Release memory: move the sessions of the last segments into free rows of the
        earlier ones and drop those segments, while they fit.

        Only the rows of the sessions that move are copied. Waits for a running engine call.

        Returns
        -------
        moved : int
            The number of sessions moved.
        """
        moved = 0
        with self._lock:
            while self._stepping:
                self._idle.wait()
            while len(self._segments) > 1:
                base, last = self._bases[-1], self._segments[-1]
                live = [r for r in range(base, self._total) if self._status[r] == _LIVE]
                below = sorted(r for r in self._free if r < base)
                if len(live) > len(below):
                    break
                dst = below[:len(live)]
                for s in sorted({int(self._seg_of[d]) for d in dst}):
                    pairs = [(d, r) for d, r in zip(dst, live, strict=True)
                             if self._seg_of[d] == s]
                    _core.copy_rows(self._segments[s], [self._local_of[d] for d, _ in pairs],
                                    last, [self._local_of[r] for _, r in pairs])
                for d, r in zip(dst, live, strict=True):
                    key = self._key_of[r]
                    self._row_of[key] = d
                    self._key_of[d] = key
                    self._status[d] = _LIVE
                moved += len(live)
                taken = set(dst)
                self._free = [r for r in self._free if r < base and r not in taken]
                heapq.heapify(self._free)
                del self._segments[-1], self._bases[-1]
                del self._key_of[base:], self._status[base:]
                self._seg_of, self._local_of = self._seg_of[:base], self._local_of[:base]
                self._total = base
        return moved

    def _row_idle(self, key: Hashable) -> tuple[_core.CState, int]:
        """The segment and row of an open session, once no engine call runs (lock held)."""
        while self._stepping:
            self._idle.wait()
        try:
            row = self._row_of[key]
        except (KeyError, TypeError):
            raise SessionKeyError(f"no open session {key!r}") from None
        return self._segments[self._seg_of[row]], int(self._local_of[row])

    def state(self, key: Hashable) -> State:
        """A copy of one session's state, in the form of ``model.stream(batch=1).state``
        (see :meth:`Model.predict`), so it can move to a :class:`Stream` and back.

        Raises
        ------
        SessionKeyError
            When no session ``key`` is open.
        """
        one = _core.CState(self._model._c, 1)
        with self._lock:
            seg, local = self._row_idle(key)
            _core.copy_rows(one, [0], seg, [local])
        return _get_state(one, self._model)

    def set_state(self, key: Hashable, state: State) -> None:
        """Set one session's state (the form :meth:`state` returns, batch 1).

        Raises
        ------
        SessionKeyError
            When no session ``key`` is open.
        ShapeError
            When ``state`` does not have the model's state form with batch 1.
        """
        one = _core.CState(self._model._c, 1)
        _set_state(one, self._model, state)
        with self._lock:
            seg, local = self._row_idle(key)
            _core.copy_rows(seg, [local], one, [0])

    def reset(self, key: Hashable) -> None:
        """Zero one session's state.

        Raises
        ------
        SessionKeyError
            When no session ``key`` is open.
        """
        with self._lock:
            seg, local = self._row_idle(key)
            seg.reset([local])

    # -- compute ---------------------------------------------------------------------------

    def step(self, frames: Frames, *, skip_closed: bool = False) -> dict[Hashable, np.ndarray]:
        """Advance the sessions that sent a frame by one step, in one engine call.

        Parameters
        ----------
        frames : mapping or iterable of (key, frame) pairs
            One frame per session: an (I,) float vector, or an integer id for a model that
            starts with an Embedding. float32 frames are used as they are; other float dtypes
            are converted.
        skip_closed : bool, optional
            Drop the frames of keys that are not open (closed by another thread, say) and
            step the others, rather than raise :class:`SessionKeyError`. Their keys are absent
            from the result.

        Returns
        -------
        outputs : dict
            key -> (O,) float32 output of the session's step (rows of one array).

        Raises
        ------
        SessionKeyError
            When a key is not open (unless ``skip_closed``).
        DuplicateFrameError
            When a key has two frames.
        ShapeError, DTypeError, NonFiniteError, InputError
            For a bad frame (the message names its session). No session advances.
        """
        keys, vals = _split(frames)
        if not keys:
            return {}
        x = self._stack(keys, vals, seq=False)
        keys, y, _ = self._run(keys, x, seq=False, strict=not skip_closed)
        return dict(zip(keys, y, strict=True))

    def run(self, chunks: Frames) -> dict[Hashable, np.ndarray]:
        """Advance sessions by a chunk of T steps each (the same T for all), in one engine
        call.

        Parameters
        ----------
        chunks : mapping or iterable of (key, chunk) pairs
            (T, I) floats, or (T,) integer ids, per session.

        Returns
        -------
        outputs : dict
            key -> (T, O) outputs, or (O,) when a recurrent layer returns only its last step.

        Raises
        ------
        ShapeError
            When the chunks' lengths differ or a chunk has the wrong shape; see :meth:`step`
            for the other errors.
        """
        keys, vals = _split(chunks)
        if not keys:
            return {}
        x = self._stack(keys, vals, seq=True)
        keys, y, _ = self._run(keys, x, seq=True, strict=True)
        return dict(zip(keys, y, strict=True))

    def _stack(self, keys: list[Hashable], vals: list[Any], seq: bool) -> np.ndarray:
        """The frames (chunks) as one (n, I) / (n,) ((n, T, I) / (n, T)) array."""
        per = ("T",) if seq else ()
        if not self._model.takes_ids:
            per = (*per, self._model.input_size)
        try:
            x = np.array(vals)  # ragged frames raise; 3x faster than np.stack
        except (ValueError, TypeError):
            x = None
        if x is None or x.ndim != len(per) + 1 or any(
                isinstance(e, int) and d != e for d, e in zip(x.shape[1:], per, strict=True)):
            self._raise_shape(keys, vals, per, seq)
        if self._model.takes_ids:
            if x.dtype.kind not in "iu":
                raise DTypeError(f"frames have dtype {x.dtype}; this model starts with an "
                                 f"Embedding and takes integer ids")
            if x.size and (x.min() < 0 or x.max() >= self._vocab):
                bad = [k for k, v in zip(keys, x, strict=True)
                       if np.any((v < 0) | (v >= self._vocab))]
                raise InputError(f"ids of sessions {bad!r} lie outside [0, {self._vocab})")
            return np.ascontiguousarray(x, dtype=np.int32)
        return check_array(x, "frames", (len(keys), *per))

    def _raise_shape(self, keys: list[Hashable], vals: list[Any], per: tuple[Any, ...],
                     seq: bool) -> None:
        want = "(" + ", ".join(map(str, per)) + ("," if len(per) == 1 else "") + ")"
        shapes = [np.shape(v) for v in vals]
        for k, s in zip(keys, shapes, strict=True):
            if len(s) != len(per) or any(isinstance(e, int) and d != e
                                         for d, e in zip(s, per, strict=True)):
                raise ShapeError(f"{'chunk' if seq else 'frame'} of session {k!r} has shape "
                                 f"{s}; expected {want}")
        if seq:
            raise ShapeError(f"chunks must have equal lengths; got lengths "
                             f"{sorted({s[0] for s in shapes})}")
        raise ShapeError(f"frames must have shape {want}")

    def _run(self, keys: list[Hashable], x: np.ndarray, seq: bool, strict: bool
             ) -> tuple[list[Hashable], np.ndarray, list[Hashable]]:
        """One engine call on the sessions ``keys`` (rows of x). strict: an unknown key is an
        error; else it is dropped (with its row of x) and returned in ``missing``."""
        with self._step_lock:
            with self._lock:
                row_of, missing = self._row_of, []
                try:
                    rows = [row_of[k] for k in keys]
                except KeyError:
                    missing = [k for k in keys if k not in row_of]
                    if strict:
                        raise SessionKeyError(
                            f"no open session {missing[0]!r}" if len(missing) == 1
                            else f"no open sessions {missing!r}") from None
                    keep = [j for j, k in enumerate(keys) if k in row_of]
                    keys = [keys[j] for j in keep]
                    x = x[keep]
                    rows = [row_of[k] for k in keys]
                if not keys:
                    return [], np.empty((0, self._model.output_size), np.float32), missing
                r = np.array(rows, dtype=np.intp)
                which, local = self._seg_of[r], self._local_of[r]
                segments = self._segments
                self._stepping = True
            try:
                T = x.shape[1] if seq else 1
                need = _core.rows_workspace_size(self._model._c, len(keys), T)
                if self._ws.size < need:
                    self._ws = np.empty(need, np.uint8)
                try:
                    y = _core.run_rows(self._model._c, segments, which, local, x, self._ws,
                                       None, seq, self._check_finite)
                    self._calls += 1
                    self._stepped += len(keys)
                except NonFiniteError:
                    bad = [k for k, v in zip(keys, x, strict=True) if not np.isfinite(v).all()]
                    raise NonFiniteError(f"frames of sessions {bad!r} contain NaN or Inf; no "
                                         f"session advanced") from None
            finally:
                with self._lock:
                    self._stepping = False
                    for row in self._pending:
                        if self._status[row] == _PENDING:
                            self._status[row] = _FREE
                            heapq.heappush(self._free, row)
                    self._pending.clear()
                    self._idle.notify_all()
        return keys, y, missing

    # -- asyncio -----------------------------------------------------------------------------

    def step_async(self, key: Hashable, frame: Any) -> asyncio.Future[np.ndarray]:
        """Step one session from an event loop (``y = await pool.step_async(key, frame)``);
        frames of many sessions that arrive within one tick go to the engine in one call.

        A tick starts with the first frame after the previous call was dispatched and ends
        ``tick_us`` later, or as soon as every open session has sent a frame; if the previous
        call is still running then, the frames wait for it (one call at a time runs, on the
        pool's own worker thread, so the event loop keeps receiving frames meanwhile).

        Parameters
        ----------
        key : hashable
            An open session.
        frame : array_like
            (I,) floats, or an integer id.

        Returns
        -------
        asyncio.Future
            Resolves to the session's (O,) output for this frame. (A plain future, not a
            coroutine, so protocol callbacks can use it without creating a task.)

        Raises
        ------
        SessionKeyError
            When ``key`` is not open (the future raises it when ``key`` is closed before its
            tick runs).
        DuplicateFrameError
            When ``key`` already has a frame waiting in this tick.
        ShapeError, DTypeError, NonFiniteError, InputError
            For a bad frame; only this call fails, the tick runs without it.
        RuntimeError
            When no event loop runs in this thread.
        """
        loop = asyncio.get_running_loop()
        ticker = self._ticker
        if ticker is None or ticker.loop is not loop:
            if ticker is not None and (ticker.batch or ticker.busy):
                raise RuntimeError("step_async is in use from another event loop")
            ticker = self._ticker = _Ticker(self, loop)
        return ticker.submit(key, frame)

    def _check_frame(self, key: Hashable, frame: Any) -> np.ndarray:
        """One frame, checked on its own: (I,) float32 (finite), or an int32 id in range."""
        if self._model.takes_ids:
            a = np.asarray(frame)
            if a.dtype.kind not in "iu":
                raise DTypeError(f"frame of session {key!r} has dtype {a.dtype}; this model "
                                 f"takes integer ids")
            if a.ndim:
                raise ShapeError(f"frame of session {key!r} has shape {a.shape}; expected one "
                                 f"id")
            if not 0 <= int(a) < self._vocab:
                raise InputError(f"id {int(a)} of session {key!r} lies outside "
                                 f"[0, {self._vocab})")
            return a.astype(np.int32)
        a = check_array(frame, f"frame of session {key!r}", (self._model.input_size,))
        if self._check_finite and not np.isfinite(a).all():
            raise NonFiniteError(f"frame of session {key!r} contains NaN or Inf")
        return a


class _Ticker:
    """Gathers step_async frames into ticks, one engine call at a time (event-loop side)."""

    def __init__(self, pool: StreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.loop = pool, loop
        self.batch: dict[Hashable, tuple[np.ndarray, asyncio.Future[np.ndarray]]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.due = False
        self.busy = False

    def submit(self, key: Hashable, frame: Any) -> asyncio.Future[np.ndarray]:
        if key in self.batch:
            raise DuplicateFrameError(f"session {key!r} already has a frame in this tick; "
                                      f"await its output before sending the next")
        if key not in self.pool:
            raise SessionKeyError(f"no open session {key!r}")
        x = self.pool._check_frame(key, frame)
        fut: asyncio.Future[np.ndarray] = self.loop.create_future()
        self.batch[key] = (x, fut)
        if len(self.batch) >= len(self.pool):
            self.due = True
            self.flush()
        elif self.timer is None and not self.due:
            self.timer = self.loop.call_later(self.pool._tick, self.on_timer)
        return fut

    def on_timer(self) -> None:
        self.timer = None
        self.due = True
        self.flush()

    def flush(self) -> None:
        if self.busy or not self.due or not self.batch:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.batch = self.batch, {}
        self.due, self.busy = False, True
        keys = list(batch)
        x = np.array([v[0] for v in batch.values()])
        futs = {k: v[1] for k, v in batch.items()}
        if self.pool._executor is None:
            self.pool._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="lstm_fast-pool")
        call = self.loop.run_in_executor(self.pool._executor, self.pool._run, keys, x, False,
                                         False)
        call.add_done_callback(lambda f: self.done(f, futs))

    def done(self, call: asyncio.Future[Any], futs: dict[Hashable, asyncio.Future[Any]]
             ) -> None:
        self.busy = False
        exc = call.exception()
        if exc is not None:
            for fut in futs.values():
                if not fut.done():
                    fut.set_exception(exc)
        else:
            keys, y, missing = call.result()
            for k, row in zip(keys, y, strict=True):
                if not futs[k].done():
                    futs[k].set_result(row)
            for k in missing:
                if not futs[k].done():
                    futs[k].set_exception(SessionKeyError(f"session {k!r} was closed before "
                                                          f"its frame ran"))
        if self.batch and len(self.batch) >= len(self.pool):
            self.due = True
        self.flush()


def _split(frames: Frames) -> tuple[list[Hashable], list[Any]]:
    """Keys and values of a mapping, or of (key, value) pairs (a repeated key is an error)."""
    if isinstance(frames, Mapping):
        return list(frames), list(frames.values())
    keys, vals, seen = [], [], set()
    for item in frames:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise InputError("frames must be a mapping or (key, frame) pairs") from None
        if k in seen:
            raise DuplicateFrameError(f"session {k!r} has two frames in one tick")
        seen.add(k)
        keys.append(k)
        vals.append(v)
    return keys, vals
