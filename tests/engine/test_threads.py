"""One model, many threads, each with its own stream: results equal serial runs. And the
engine's thread pool (``set_num_threads(2)``): the hidden-unit split of one or a few rows of a
large layer, the batch halves and the bidirectional directions against the float64 oracle
and the one-thread run, on every kernel level; no thread created by a run; several models,
copies and Python threads sharing the pool; a fork with the pool running."""

from __future__ import annotations

import copy
import os
import pickle
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import _core
from lstm_fast.spec import BidirectionalSpec, ModelSpec
from tests.helpers import ISAS, cell_spec, per_cell
from tests.int8_reference import int8_forward
from tests.reference import random_layers, spec_forward

TOL = 1e-5       # against the float64 oracle (as tests/engine/test_layers.py)
# Two threads against one: the same math up to float32 rounding. A one-thread chunk projects
# x with BLAS, two threads read x in the kernel: dot products over I + H (up to 540) terms in
# another order (measured up to 1.8e-6 with I + H = 600).
ROUNDING = 4e-6
# (inputs, units) per cell kind, and inputs per narrow weight type of an LSTM with H = 200:
# H not a multiple of any vector width but 16 (Hp = 208: 13 avx512 tiles, split 7 + 6; the
# RNN's 500: 32 tiles); each layer has more packed weights than recurrent.c's
# LF_UNIT_SPLIT_MIN_BYTES (1 MB), so B <= LF_UNIT_SPLIT_MAX_ROWS (4) rows split their hidden
# units.
SPLIT_SIZES = {"lstm": (130, 200), "gru": (240, 200), "rnn": (40, 500)}
NARROW_INPUTS = {"fp16": 450, "bf16": 450, "int8": 1100}


def test_eight_threads_share_one_model(rng):
    layers = random_layers(rng, 16, 40, 2)
    model = lf.Model.from_lstm_weights(layers)
    inputs = [rng.standard_normal((1 + k % 3 * 5, 80, 16)).astype(np.float32) for k in range(8)]
    serial = []
    for x in inputs:
        s = model.stream(batch=x.shape[0])
        serial.append((model.predict(x), np.stack([s.step(x[:, t]) for t in range(80)], 1)))
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        x = inputs[k]
        barrier.wait()
        outs = []
        for _ in range(5):
            s = model.stream(batch=x.shape[0])
            outs.append((model.predict(x), np.stack([s.step(x[:, t]) for t in range(80)], 1)))
        results[k] = outs

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        for pred, steps in results[k]:
            np.testing.assert_array_equal(pred, serial[k][0])
            np.testing.assert_array_equal(steps, serial[k][1])


@contextmanager
def two_threads() -> Iterator[None]:
    before = lf.get_num_threads()
    lf.set_num_threads(2)
    try:
        yield
    finally:
        lf.set_num_threads(before)


def streamed(model: lf.Model, x: np.ndarray, chunks: tuple[int, ...] = (1, 7, 1, 50)
             ) -> tuple[np.ndarray, list]:
    """x (B, T, I) through one stream in chunks (cycled; a chunk of 1 is a step): the outputs
    and the final state."""
    s = model.stream(x.shape[0])
    out, t, k = [], 0, 0
    while t < x.shape[1]:
        n = chunks[k % len(chunks)]
        out.append(s.step(x[:, t])[:, None] if n == 1 else s.run(x[:, t:t + n]))
        t, k = t + n, k + 1
    return np.concatenate(out, axis=1), per_cell(s.state)


def split_model(rng: np.random.Generator, kind: str, isa: str, weights: str = "fp32"
                ) -> lf.Model:
    I, H = SPLIT_SIZES[kind]
    I = I if weights == "fp32" else NARROW_INPUTS[weights]
    model = lf.Model(ModelSpec((cell_spec(rng, kind, I, H),)), isa=isa)
    return model if weights == "fp32" else model.quantize(weights)


def check_two_thread_run(model: lf.Model, x: np.ndarray, one: tuple, two: tuple) -> None:
    """A two-thread run (predict's y and state, the streamed chunks and their state) equals
    the oracle, and the one-thread run ``one`` (y, chunks, state) to float32 rounding."""
    y1, chunks1, s1 = one
    y2, chunks2, s2, state2 = two
    y_ref, states_ref = spec_forward(model.spec, x)
    for got in (y2, chunks2):
        np.testing.assert_allclose(got, y_ref, rtol=0, atol=TOL)
        np.testing.assert_allclose(got, y1, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(chunks2, chunks1, rtol=0, atol=ROUNDING)
    for (h2, c2), (hr, cr) in zip(state2, states_ref, strict=True):
        np.testing.assert_allclose(h2, hr, rtol=0, atol=TOL)
        if cr is not None:
            np.testing.assert_allclose(c2, cr, rtol=0, atol=TOL)
    for (h2, c2), (h1, c1) in zip(per_cell(s2, 1), per_cell(s1, 1), strict=True):
        np.testing.assert_allclose(h2, h1, rtol=0, atol=ROUNDING)
        if c1 is not None:
            np.testing.assert_allclose(c2, c1, rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("kind", list(SPLIT_SIZES))
@pytest.mark.parametrize("B", [1, 7, 8, 9, 64])
@pytest.mark.parametrize("isa", ISAS)
def test_two_threads_against_the_oracle(kind, B, isa, rng):
    """One row or a few rows: the hidden units split over the two threads; more: the batch
    halves. Whole calls, streamed chunks and steps equal the oracle, and the one-thread run
    to float32 rounding (a GRU/RNN step of the hidden-unit split bit for bit: both read x in
    the kernel, and each unit's arithmetic does not depend on the split)."""
    model = split_model(rng, kind, isa)
    x = rng.standard_normal((B, 40, model.input_size)).astype(np.float32)
    y1, s1 = model.predict(x, return_state=True)
    steps1 = model.stream(B).step(x[:, 0])
    chunks1, _ = streamed(model, x)
    with two_threads():
        y2, s2 = model.predict(x, return_state=True)
        steps2 = model.stream(B).step(x[:, 0])
        chunks2, state2 = streamed(model, x)
    if B <= 4 and kind != "lstm":  # the hidden-unit split: the same kernel per unit and row
        np.testing.assert_array_equal(steps2, steps1)
    else:  # batch halves: rows grouped differently; one LSTM row steps on the one-row kernel
        # with one thread (lstm_seq_one), on the packed kernel when split
        np.testing.assert_allclose(steps2, steps1, rtol=0, atol=ROUNDING)
    check_two_thread_run(model, x, (y1, chunks1, s1), (y2, chunks2, s2, state2))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("B", [16, 17, 33, 64, 65])
@pytest.mark.parametrize("isa", ISAS)
def test_two_threads_blas_recurrence(kind, B, isa, rng):
    """Large batches on the BLAS recurrence (avx2, portable) split too (set_num_threads keeps
    OpenBLAS single-threaded): each thread projects half of a block's rows, then steps its
    half of the batch on its own sgemm (two OpenBLAS calls at once), or, as few rows, on the
    packed kernel with the projected x. Whole calls, streamed chunks and steps against the
    oracle and the one-thread run (float32 rounding: the sgemm blocks rows differently)."""
    model = split_model(rng, kind, isa)
    x = rng.standard_normal((B, 30, model.input_size)).astype(np.float32)
    y1, s1 = model.predict(x, return_state=True)
    chunks1, _ = streamed(model, x)
    with two_threads():
        y2, s2 = model.predict(x, return_state=True)
        chunks2, state2 = streamed(model, x)
    check_two_thread_run(model, x, (y1, chunks1, s1), (y2, chunks2, s2, state2))


@pytest.mark.parametrize("weights", ["fp16", "bf16", "int8"])
@pytest.mark.parametrize("B", [1, 3, 9])
@pytest.mark.parametrize("isa", ISAS)
def test_two_threads_narrow_weights(weights, B, isa, rng):
    """fp16 / bf16 / int8 LSTMs split by hidden units (B <= 4) or batch halves: against the
    oracle of the rounded weights (fp16, bf16) or the integer simulation (int8), and the
    one-thread run (int8: bit for bit, both read and quantize x in the kernel)."""
    model = split_model(rng, "lstm", isa, weights)
    x = rng.standard_normal((B, 30, model.input_size)).astype(np.float32)
    y1 = model.predict(x)
    chunks1, _ = streamed(model, x)
    with two_threads():
        y2 = model.predict(x)
        chunks2, _ = streamed(model, x)
    if weights == "int8":
        np.testing.assert_array_equal(y2, y1)
        np.testing.assert_array_equal(chunks2, chunks1)
        np.testing.assert_allclose(y2, int8_forward(model.spec, x)[0], rtol=0, atol=2e-3)
    else:
        np.testing.assert_allclose(y2, spec_forward(model.spec, x)[0], rtol=0, atol=TOL)
        np.testing.assert_allclose(y2, y1, rtol=0, atol=ROUNDING)
        np.testing.assert_allclose(chunks2, chunks1, rtol=0, atol=ROUNDING)


@pytest.mark.parametrize("isa", ISAS)
def test_two_threads_bidirectional(isa, rng):
    """The directions of a bidirectional layer on the pool, whole and ragged."""
    spec = ModelSpec((BidirectionalSpec(cell_spec(rng, "lstm", 40, 100),
                                        cell_spec(rng, "lstm", 40, 100), "concat"),))
    model = lf.Model(spec, isa=isa)
    x = rng.standard_normal((5, 30, 40)).astype(np.float32)
    lengths = np.array([30, 3, 29, 17, 0])
    y1 = model.predict(x, lengths=lengths)
    with two_threads():
        y2 = model.predict(x)
        y2l = model.predict(x, lengths=lengths)
    np.testing.assert_allclose(y2, spec_forward(spec, x)[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(y2l, spec_forward(spec, x, lengths=lengths)[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(y2l, y1, rtol=0, atol=ROUNDING)


def test_runs_create_no_thread(rng):
    """set_num_threads(2) starts the pool's one worker; runs never create one; 1 stops it."""
    model = split_model(rng, "lstm", ISAS[-1])
    x = rng.standard_normal((1, 20, SPLIT_SIZES["lstm"][0])).astype(np.float32)
    lf.set_num_threads(1)
    start = _core.pool_starts()
    with two_threads():
        assert _core.pool_starts() == start + 1
        lf.set_num_threads(2)
        for _ in range(5):
            model.predict(x)
            streamed(model, x)
        assert _core.pool_starts() == start + 1
    model.predict(x)
    assert _core.pool_starts() == start + 1


def test_blas_stays_single_threaded():
    """set_num_threads gives its threads to the pool, not to OpenBLAS (two threads of a split
    call OpenBLAS at once; recurrent.c splits only with a single-threaded BLAS)."""
    with two_threads():
        assert lf._blas_lib.scipy_openblas_get_num_threads() == 1
    assert lf._blas_lib.scipy_openblas_get_num_threads() == 1


def test_models_copies_and_threads_share_the_pool(rng):
    """Several models, a pickled and a deep copy, on four Python threads at once with the pool
    on: each result equals its serial one bit for bit (a section that finds the pool busy runs
    both parts on its own thread, with the same kernels)."""
    base = split_model(rng, "lstm", ISAS[-1])
    models = [base, pickle.loads(pickle.dumps(base)), copy.deepcopy(base),
              split_model(rng, "gru", ISAS[-1])]
    xs = [rng.standard_normal((B, 25, m.input_size)).astype(np.float32)
          for B, m in zip((1, 2, 9, 1), models, strict=True)]
    with two_threads():
        serial = [streamed(m, x)[0] for m, x in zip(models, xs, strict=True)]
        results: list = [None] * 4
        barrier = threading.Barrier(4)

        def work(k: int) -> None:
            barrier.wait()
            results[k] = [streamed(models[k], xs[k])[0] for _ in range(4)]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k in range(4):
        for got in results[k]:
            np.testing.assert_array_equal(got, serial[k])


def run_in_child(model: lf.Model, x: np.ndarray, timeout: float = 120.0) -> np.ndarray:
    """model.predict(x) in a forked child; its result through a pipe. Fails on a hang."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, leave with os._exit
        code = 1
        try:
            os.close(r)
            out = np.concatenate([model.predict(x).ravel(),
                                  [float(_core.pool_starts()), float(lf.get_num_threads())]])
            os.write(w, out.astype(np.float64).tobytes())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    deadline, data = time.monotonic() + timeout, b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, 9)
                pytest.fail("the forked child hung")
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return np.frombuffer(data, np.float64)


def test_fork_with_the_pool_running(rng):
    """A fork while the pool runs (even while another thread is inside a parallel run): the
    child starts its own worker and computes the same result; the parent's pool still works."""
    model = split_model(rng, "lstm", ISAS[-1])
    x = rng.standard_normal((1, 30, SPLIT_SIZES["lstm"][0])).astype(np.float32)
    with two_threads():
        want = model.predict(x)
        parent_starts = _core.pool_starts()
        stop = threading.Event()

        def busy() -> None:
            # Single steps: the hidden-unit split, no BLAS. (A float chunk projects its
            # inputs with OpenBLAS, whose locks a fork copies as they are: forking while
            # another thread is inside OpenBLAS hangs the child in any process, numpy too.)
            s = model.stream(1)
            while not stop.is_set():
                s.step(x[:, 0])

        thread = threading.Thread(target=busy)
        thread.start()
        try:
            for _ in range(3):
                got = run_in_child(model, x)
                np.testing.assert_array_equal(got[:-2].reshape(want.shape), want)
                assert got[-2] == parent_starts + 1 and got[-1] == 2
        finally:
            stop.set()
            thread.join()
        np.testing.assert_array_equal(model.predict(x), want)
        assert _core.pool_starts() == parent_starts
