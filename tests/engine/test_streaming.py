"""The stateful contract: step by step or chunk by chunk equals one whole-sequence predict."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lstm_fast as lf
from tests.reference import random_layers


@given(
    B=st.integers(1, 12),
    T=st.integers(1, 120),
    cuts=st.lists(st.integers(1, 40), min_size=1, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_chunks_equal_predict(B, T, cuts, seed):
    rng = np.random.default_rng(seed)
    layers = random_layers(rng, 7, 19, 2)
    model = lf.Model.from_lstm_weights(layers)
    x = rng.standard_normal((B, T, 7)).astype(np.float32)
    y_full, (h_full, c_full) = model.predict(x, return_state=True)
    s = model.stream(batch=B)
    parts, t, k = [], 0, 0
    while t < T:
        n = min(cuts[k % len(cuts)], T - t)
        parts.append(s.run(x[:, t:t + n]) if n > 1 else s.step(x[:, t])[:, None])
        t, k = t + n, k + 1
    np.testing.assert_allclose(np.concatenate(parts, axis=1), y_full, rtol=0, atol=1e-6)
    h, c = s.state
    np.testing.assert_allclose(h, h_full, rtol=0, atol=1e-6)
    np.testing.assert_allclose(c, c_full, rtol=0, atol=1e-6)


def test_step_by_step_long_sequence(isa, rng):
    layers = random_layers(rng, 32, 64, 3)
    model = lf.Model.from_lstm_weights(layers, isa=isa)
    x = rng.standard_normal((2, 600, 32)).astype(np.float32)
    s = model.stream(batch=2)
    y_steps = np.stack([s.step(x[:, t]) for t in range(600)], axis=1)
    np.testing.assert_allclose(y_steps, model.predict(x), rtol=0, atol=1e-6)


def test_state_roundtrip_and_reset(rng):
    layers = random_layers(rng, 5, 9, 2)
    model = lf.Model.from_lstm_weights(layers)
    x = rng.standard_normal((3, 30, 5)).astype(np.float32)
    s = model.stream(batch=3)
    s.run(x[:, :10])
    saved = s.state
    assert saved[0].shape == (2, 3, 9) and saved[1].shape == (2, 3, 9)
    rest = s.run(x[:, 10:])
    s.state = saved
    np.testing.assert_array_equal(s.run(x[:, 10:]), rest)
    s.reset()
    np.testing.assert_array_equal(s.state[0], 0)
    np.testing.assert_array_equal(s.run(x), model.predict(x))
    # predict with an explicit initial state == stream started from it
    s.state = saved
    y_from_saved = s.run(x[:, 10:])
    np.testing.assert_array_equal(model.predict(x[:, 10:], initial_state=saved), y_from_saved)


def test_partial_reset_leaves_other_rows_bit_identical(rng):
    layers = random_layers(rng, 4, 33, 2)
    model = lf.Model.from_lstm_weights(layers)
    x = rng.standard_normal((5, 20, 4)).astype(np.float32)
    s = model.stream(batch=5)
    s.run(x[:, :10])
    before_h, before_c = s.state
    s.reset([1, 3])
    h, c = s.state
    keep = [0, 2, 4]
    np.testing.assert_array_equal(h[:, keep], before_h[:, keep])
    np.testing.assert_array_equal(c[:, keep], before_c[:, keep])
    np.testing.assert_array_equal(h[:, [1, 3]], 0)
    np.testing.assert_array_equal(c[:, [1, 3]], 0)
    with pytest.raises(lf.ShapeError, match=r"\[0, 5\)"):
        s.reset([5])
