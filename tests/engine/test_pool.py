"""StreamPool: many sessions over one model. Every session's outputs, however its frames were
interleaved with other sessions' (ticks of random subsets, growth, compaction, state moved
in and out, threads opening and closing), equal Model.predict on that session's own sequence;
sessions that send nothing keep their state bit for bit; bad input raises typed errors and
advances no session."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lstm_fast as lf
from lstm_fast.spec import DenseSpec, EmbeddingSpec, ModelSpec
from tests.helpers import cell_spec, dense_spec
from tests.reference import random_layers, spec_forward

ATOL = 1e-5


def lstm_model(rng, I=5, H=8, L=2, **kw):
    return lf.Model.from_lstm_weights(random_layers(rng, I, H, L), **kw)


def chain_model(rng, kinds=("gru", "lstm_proj"), I=6, H=10, O=3):
    layers, size = [], I
    for kind in kinds:
        cell = cell_spec(rng, kind, size, H)
        layers.append(cell)
        size = cell.output_size
    layers.append(dense_spec(rng, size, O, "tanh"))
    return lf.Model(ModelSpec(layers=tuple(layers)))


def ids_model(rng, V=11, E=4, H=7):
    emb = EmbeddingSpec(rng.uniform(-1, 1, (V, E)))
    return lf.Model(ModelSpec(layers=(emb, cell_spec(rng, "lstm", E, H),
                                      DenseSpec(rng.uniform(-1, 1, (3, H)), None, "softmax"))))


def frames_for(model, rng, n):
    if model.takes_ids:
        return rng.integers(0, model.spec.layers[0].vocab_size, n)
    return rng.standard_normal((n, model.input_size)).astype(np.float32)


class Recorder:
    """Feeds a pool from random schedules and keeps each session's inputs and outputs."""

    def __init__(self, pool, rng):
        self.pool, self.rng = pool, rng
        self.xs, self.ys = {}, {}

    def open(self, key=None):
        key = self.pool.open(key)
        self.xs[key], self.ys[key] = [], []
        return key

    def tick(self, keys):
        model = self.pool.model
        x = frames_for(model, self.rng, len(keys))
        out = self.pool.step({k: x[j] for j, k in enumerate(keys)})
        assert list(out) == list(keys)
        for j, k in enumerate(keys):
            assert out[k].shape == (model.output_size,)
            self.xs[k].append(x[j])
            self.ys[k].append(out[k])

    def check(self, key, oracle="predict"):
        x, y = np.array(self.xs[key]), np.array(self.ys[key])
        if len(x) == 0:
            return
        model = self.pool.model
        if oracle == "predict":
            want = model.predict(x[None])[0]
        else:
            want = spec_forward(model.spec, x[None])[0][0]
        np.testing.assert_allclose(y, want, rtol=0, atol=ATOL)


@given(seed=st.integers(0, 2**32 - 1), ticks=st.integers(1, 40),
       kind=st.sampled_from(["lstm", "chain", "ids"]))
def test_random_ticks_equal_predict_per_session(seed, ticks, kind):
    rng = np.random.default_rng(seed)
    model = {"lstm": lstm_model, "chain": chain_model, "ids": ids_model}[kind](rng)
    pool = lf.StreamPool(model)
    rec = Recorder(pool, rng)
    keys = [rec.open() for _ in range(int(rng.integers(1, 20)))]
    closed = []
    for _ in range(ticks):
        r = rng.random()
        if r < 0.15:
            keys.append(rec.open(("user", len(rec.xs))))
        elif r < 0.25 and len(keys) > 1:
            k = keys.pop(int(rng.integers(len(keys))))
            pool.close(k)
            closed.append(k)
        send = [k for k in keys if rng.random() < 0.6]
        rng.shuffle(send)
        if send:
            before = {k: pool.state(k) for k in keys if k not in send}
            rec.tick(send)
            for k, s in before.items():  # the others' state is untouched, bit for bit
                for a, b in zip(_flat(s), _flat(pool.state(k)), strict=True):
                    np.testing.assert_array_equal(a, b)
    for k in keys + closed:
        rec.check(k)


def _flat(state):
    if isinstance(state, np.ndarray):
        return [state]
    out = []
    for item in state:
        out.extend(_flat(item) if isinstance(item, (tuple, list)) else [item])
    return out


def test_against_float64_oracle(isa, rng):
    model = chain_model(rng, kinds=("lstm", "gru", "rnn"))
    model = lf.Model(model.spec, isa=isa)
    pool = lf.StreamPool(model)
    rec = Recorder(pool, rng)
    keys = [rec.open() for _ in range(9)]
    for t in range(30):
        rec.tick(keys[t % 3:] if t % 4 else keys[::2])
    for k in keys:
        rec.check(k, oracle="reference")


def test_growth_adds_segments_and_compact_moves_only_the_sessions_it_must(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model)
    rec = Recorder(pool, rng)
    keys = [rec.open() for _ in range(100)]
    assert pool.allocated == 16 + 16 + 32 + 64 and len(pool) == 100
    for _ in range(5):
        rec.tick(keys)
    # Close all but 6 sessions: 3 in the first 16 rows, 3 in the last segment (rows 64..127).
    keep = keys[:3] + keys[70:73]
    for k in keys:
        if k not in keep:
            pool.close(k)
    saved = {k: pool.state(k) for k in keep}
    assert pool.compact() == 3  # only the three sessions of the last segment move
    assert pool.allocated == 16 and len(pool) == 6
    for k in keep:  # moved or not, every state is as it was, bit for bit
        for a, b in zip(_flat(saved[k]), _flat(pool.state(k)), strict=True):
            np.testing.assert_array_equal(a, b)
    for _ in range(4):
        rec.tick(keep[::-1])
    for k in keys:
        rec.check(k)
    assert pool.compact() == 0
    # Growth after compaction, then a compaction that only drops empty segments
    more = [rec.open() for _ in range(40)]
    assert pool.allocated == 64
    for k in more:
        pool.close(k)
    assert pool.compact() == 0 and pool.allocated == 16
    rec.tick(keep)
    for k in keep:
        rec.check(k)


def test_fixed_capacity(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model, capacity=20)
    keys = [pool.open() for _ in range(20)]
    assert pool.allocated == 20
    with pytest.raises(lf.PoolFullError, match="capacity=20"):
        pool.open()
    pool.close(keys[5])
    assert pool.open("again") == "again"
    with pytest.raises(lf.PoolFullError):
        pool.open()
    assert isinstance(lf.PoolFullError("x"), RuntimeError)


def test_open_keys_and_reuse_start_from_zero(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model)
    a = pool.open()
    b = pool.open(("tcp", 1))
    c = pool.open(1)  # the caller takes an int the pool would have generated next
    d = pool.open()
    assert len({a, b, c, d}) == 4 and d not in (a, c)
    assert b in pool and "nope" not in pool and [] not in pool
    assert set(pool.keys()) == {a, b, c, d}
    x = frames_for(model, rng, 1)[0]
    for _ in range(3):
        pool.step({a: x})
    pool.close(a)
    e = pool.open()  # takes a's row, which must start from zero
    h, c_ = pool.state(e)
    assert not h.any() and not c_.any()
    np.testing.assert_allclose(pool.step({e: x})[e], model.predict(x[None, None])[0, 0],
                               rtol=0, atol=ATOL)


def test_state_moves_between_pool_and_stream(rng):
    model = chain_model(rng)  # GRU + projected LSTM: a list-form state
    pool = lf.StreamPool(model)
    rec = Recorder(pool, rng)
    a, b = rec.open(), rec.open()
    for _ in range(7):
        rec.tick([a, b])
    stream = model.stream(batch=1)
    stream.state = pool.state(a)
    x = frames_for(model, rng, 5)
    y_stream = np.stack([stream.step(x[t][None])[0] for t in range(5)])
    for t in range(5):
        rec.xs[a].append(x[t])
        rec.ys[a].append(pool.step({a: x[t]})[a])
    np.testing.assert_allclose(y_stream, np.array(rec.ys[a][-5:]), rtol=0, atol=0)
    # and back: b takes the stream's state (a's), then follows a's sequence
    pool.set_state(b, stream.state)
    z = frames_for(model, rng, 1)[0]
    np.testing.assert_array_equal(pool.step({b: z})[b], pool.step({a: z})[a])
    rec.xs[a].append(z)
    rec.ys[a].append(stream.step(z[None])[0])
    rec.check(a)
    pool.reset(b)
    assert not any(v.any() for v in _flat(pool.state(b)))


def test_run_chunks_equal_predict_and_mix_with_steps(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model)
    keys = [pool.open() for _ in range(6)]
    x = rng.standard_normal((6, 30, model.input_size)).astype(np.float32)
    ys = {k: [] for k in keys}
    out = pool.run({k: x[j, :10] for j, k in enumerate(keys)})
    for k in keys:
        assert out[k].shape == (10, model.output_size)
        ys[k].append(out[k])
    for t in range(10, 15):  # only the odd sessions step
        out = pool.step({k: x[j, t] for j, k in enumerate(keys) if j % 2})
        for k, v in out.items():
            ys[k].append(v[None])
    out = pool.run([(k, x[j, 15 if j % 2 else 10:][:15]) for j, k in enumerate(keys)])
    for k in keys:
        ys[k].append(out[k])
    for j, k in enumerate(keys):
        n = 30 if j % 2 else 25
        np.testing.assert_allclose(np.concatenate(ys[k]), model.predict(x[j:j + 1, :n])[0],
                                   rtol=0, atol=ATOL)


def test_run_on_a_return_last_model(rng):
    from lstm_fast.spec import LSTMLayerSpec

    cell = cell_spec(rng, "lstm", 4, 6)
    last = LSTMLayerSpec(cell.w_ih, cell.w_hh, cell.bias, return_sequences=False)
    model = lf.Model(ModelSpec(layers=(last, dense_spec(rng, 6, 2))))
    pool = lf.StreamPool(model)
    a, b = pool.open(), pool.open()
    x = rng.standard_normal((2, 12, 4)).astype(np.float32)
    pool.run({a: x[0, :5], b: x[1, :5]})
    out = pool.run({a: x[0, 5:], b: x[1, 5:]})
    assert out[a].shape == (2,)
    np.testing.assert_allclose(np.stack([out[a], out[b]]), model.predict(x), rtol=0, atol=ATOL)


def _snapshot(pool):
    return {k: _flat(pool.state(k)) for k in pool.keys()}


def _assert_unchanged(pool, snap):
    for k, arrays in snap.items():
        for a, b in zip(arrays, _flat(pool.state(k)), strict=True):
            np.testing.assert_array_equal(a, b)


def test_bad_input_is_typed_and_advances_no_session(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model)
    a, b = pool.open("a"), pool.open("b")
    good = frames_for(model, rng, 1)[0]
    pool.step({a: good, b: good})
    snap = _snapshot(pool)
    with pytest.raises(lf.SessionKeyError, match="'zz'") as e:
        pool.step({a: good, "zz": good})
    assert isinstance(e.value, KeyError) and "no open session 'zz'" == str(e.value)
    pool.close(b)
    with pytest.raises(lf.SessionKeyError):
        pool.step({a: good, b: good})
    with pytest.raises(lf.SessionKeyError):
        pool.close(b)
    with pytest.raises(lf.SessionKeyError):
        pool.state(b)
    with pytest.raises(lf.SessionKeyError):
        pool.set_state(b, pool.state(a))
    with pytest.raises(lf.SessionKeyError):
        pool.reset(b)
    with pytest.raises(lf.SessionKeyError, match="already open"):
        pool.open(a)
    b = pool.open("b")
    pool.set_state(b, [s for s in pool.state(a)])
    snap = _snapshot(pool)
    with pytest.raises(lf.ShapeError, match=r"session 'b' has shape \(6,\); expected \(5,\)"):
        pool.step({a: good, b: np.zeros(6, np.float32)})
    with pytest.raises(lf.ShapeError, match="session 'a'"):
        pool.step({a: good[None], b: good})
    with pytest.raises(lf.ShapeError):
        pool.step({a: np.zeros(7), b: np.zeros(7)})
    with pytest.raises(lf.DTypeError):
        pool.step({a: np.arange(5), b: np.arange(5)})
    with pytest.raises(lf.DuplicateFrameError, match="'a'"):
        pool.step([(a, good), (b, good), (a, good)])
    with pytest.raises(lf.InputError):
        pool.step([a, b])
    bad = good.copy()
    bad[2] = np.nan
    with pytest.raises(lf.NonFiniteError, match=r"\['b'\]"):
        pool.step({a: good, b: bad})
    with pytest.raises(lf.ShapeError, match="equal lengths"):
        pool.run({a: np.zeros((3, 5)), b: np.zeros((4, 5))})
    with pytest.raises(lf.ShapeError):
        pool.set_state(a, (np.zeros((2, 1, 8)), np.zeros((2, 2, 8))))
    _assert_unchanged(pool, snap)
    assert pool.step({}) == {} and pool.run({}) == {}
    # skip_closed: the closed session's frame is dropped, the others step
    out = pool.step({a: good, "gone": good}, skip_closed=True)
    assert list(out) == [a]
    assert issubclass(lf.DuplicateFrameError, ValueError)
    assert issubclass(lf.SessionKeyError, KeyError)


def test_bad_ids(rng):
    model = ids_model(rng)
    pool = lf.StreamPool(model)
    a, b = pool.open(), pool.open()
    pool.step({a: 3, b: np.int64(4)})
    snap = _snapshot(pool)
    with pytest.raises(lf.InputError, match=rf"\[{b}\]"):
        pool.step({a: 3, b: 11})
    with pytest.raises(lf.DTypeError):
        pool.step({a: 1.5, b: 2.0})
    with pytest.raises(lf.ShapeError):
        pool.step({a: [1, 2], b: [1, 2]})
    _assert_unchanged(pool, snap)


def test_bad_pool_arguments(rng):
    model = lstm_model(rng)
    for cap in (0, -3, 2.5, True, "8"):
        with pytest.raises(lf.InputError):
            lf.StreamPool(model, capacity=cap)
    with pytest.raises(TypeError):
        lf.StreamPool("model.lfm")
    from lstm_fast.spec import BidirectionalSpec

    bi = lf.Model(ModelSpec(layers=(BidirectionalSpec(cell_spec(rng, "lstm", 3, 4),
                                                      cell_spec(rng, "lstm", 3, 4)),)))
    with pytest.raises(lf.UnsupportedModelError):
        lf.StreamPool(bi)


def test_threads_open_and_close_while_one_thread_steps(rng):
    """Churn threads open, check and close sessions while a thread steps 24 stable sessions
    and 40 doomed ones; another thread closes doomed sessions while a call runs on them and
    at once opens a session, which gets the lowest free row: a row freed during a call must
    not be reused before the call ends, so the new session starts from zero."""
    model = lstm_model(rng, I=64, H=256, L=1)
    pool = lf.StreamPool(model)
    doomed = [pool.open(("doomed", j)) for j in range(40)]  # rows 0..39: reused first
    rec = Recorder(pool, rng)
    stable = [rec.open() for _ in range(24)]
    stop = threading.Event()
    errors: list[BaseException] = []
    during = []

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)
                stop.set()
        return threading.Thread(target=run)

    def assert_zero(k):
        for v in _flat(pool.state(k)):
            assert not v.any(), f"session {k!r} must start from zero"

    def churn(seed):
        r = np.random.default_rng(seed)
        n = 0
        while not stop.is_set():
            k = pool.open(("churn", seed, n))
            n += 1
            assert_zero(k)
            if r.random() < 0.5:
                pool.reset(k)
            pool.close(k)

    def closer():
        for k in doomed:
            while not pool._stepping and not stop.is_set():
                pass
            during.append(pool._stepping)
            pool.close(k)
            new = pool.open(("reuse", k))
            assert_zero(new)
            pool.close(new)

    threads = [guarded(lambda s=s: churn(s)) for s in (1, 2)] + [guarded(closer)]
    for t in threads:
        t.start()
    try:
        x_doomed = frames_for(model, rng, 1)[0]
        # Until every doomed session is closed: on a loaded machine the closer may need many
        # calls to land its closes (the cap only bounds a broken run).
        for _ in range(4000):
            if stop.is_set() or not any(k in pool for k in doomed):
                break
            rec.tick(stable)
            pool.step({k: x_doomed for k in doomed if k in pool}, skip_closed=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert sum(during) >= 20, "closes did not land during calls"
    for k in stable:
        rec.check(k)
    rows = list(pool._row_of.values())
    assert len(rows) == len(set(rows)) == len(pool)


def test_step_async_gathers_frames_into_ticks(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model, tick_us=2000)
    keys = [pool.open() for _ in range(40)]
    x = rng.standard_normal((40, 25, model.input_size)).astype(np.float32)
    calls = []
    run = pool._run

    def counting(keys_, *args):
        calls.append(len(keys_))
        return run(keys_, *args)

    pool._run = counting

    async def session(j, k):
        return [await pool.step_async(k, x[j, t]) for t in range(25)]

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(session(j, k) for j, k in enumerate(keys))), 60)

    outs = asyncio.run(main())
    np.testing.assert_allclose(np.array(outs), model.predict(x), rtol=0, atol=ATOL)
    assert sum(calls) == 40 * 25
    assert len(calls) <= 25 * 3, calls  # frames were gathered (40 per tick when all send)


def test_step_async_bad_input_fails_only_its_caller(rng):
    model = lstm_model(rng)
    pool = lf.StreamPool(model, tick_us=5000)
    a, b, c = pool.open(), pool.open(), pool.open()
    x = rng.standard_normal((3, model.input_size)).astype(np.float32)
    bad = x[1].copy()
    bad[0] = np.inf

    async def main():
        ya = asyncio.ensure_future(pool.step_async(a, x[0]))
        await asyncio.sleep(0)  # a's frame is now waiting in the tick
        with pytest.raises(lf.DuplicateFrameError):
            await pool.step_async(a, x[0])
        with pytest.raises(lf.NonFiniteError, match=f"session {b}"):
            await pool.step_async(b, bad)
        with pytest.raises(lf.ShapeError):
            await pool.step_async(b, x[1][:3])
        with pytest.raises(lf.SessionKeyError):
            await pool.step_async("nobody", x[1])
        yc = asyncio.ensure_future(pool.step_async(c, x[2]))
        await asyncio.sleep(0)
        pool.close(c)  # closed before its tick runs
        ya = await asyncio.wait_for(ya, 10)
        with pytest.raises(lf.SessionKeyError, match="closed"):
            await asyncio.wait_for(yc, 10)
        yb = await asyncio.wait_for(pool.step_async(b, x[1]), 10)
        return ya, yb

    ya, yb = asyncio.run(main())
    np.testing.assert_allclose(ya, model.predict(x[0][None, None])[0, 0], rtol=0, atol=ATOL)
    np.testing.assert_allclose(yb, model.predict(x[1][None, None])[0, 0], rtol=0, atol=ATOL)
