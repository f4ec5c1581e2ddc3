"""Every bad input raises the documented, typed exception with a useful message."""

import numpy as np
import pytest

import lstm_fast as lf
from tests.reference import random_layers


@pytest.fixture
def model(rng):
    return lf.Model.from_lstm_weights(random_layers(rng, 6, 10, 2))


@pytest.mark.parametrize("shape", [(6,), (5, 6), (2, 3, 7), (2, 3, 6, 1)])
def test_predict_wrong_shape(model, shape):
    with pytest.raises(lf.ShapeError, match=r"expected \(B, T, 6\)"):
        model.predict(np.zeros(shape, np.float32))


def test_predict_zero_batch_and_zero_steps(model):
    with pytest.raises(lf.ShapeError, match="batch size 0"):
        model.predict(np.zeros((0, 3, 6), np.float32))
    assert model.predict(np.zeros((2, 0, 6), np.float32)).shape == (2, 0, 10)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, object])
def test_predict_wrong_dtype(model, dtype):
    with pytest.raises(lf.DTypeError, match="expected float32") as e:
        model.predict(np.zeros((1, 2, 6), dtype))
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)


def test_non_array_input(model):
    assert model.predict([[[0.0] * 6]]).shape == (1, 1, 10)
    with pytest.raises(lf.DTypeError):
        model.predict("not an array")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_policy(model, bad):
    x = np.zeros((2, 4, 6), np.float32)
    x[1, 2, 3] = bad
    with pytest.raises(lf.NonFiniteError, match="NaN or Inf"):
        model.predict(x)
    s = model.stream(batch=2)
    s.run(np.ones((2, 3, 6), np.float32))
    before = s.state
    with pytest.raises(lf.NonFiniteError):
        s.run(x)
    with pytest.raises(lf.NonFiniteError):
        s.step(x[:, 2])
    np.testing.assert_array_equal(s.state[0], before[0])  # a failed call leaves the state as is
    y = model.predict(x, check_finite=False)  # opt-out: IEEE semantics, rows independent
    assert np.isfinite(y[0]).all()
    if np.isnan(bad):
        assert np.isnan(y[1, 2:]).all()  # NaN reaches every later output of its sequence


def test_stream_batch_mismatch(model):
    s = model.stream(batch=3)
    with pytest.raises(lf.ShapeError, match=r"expected \(3, 6\)"):
        s.step(np.zeros((2, 6), np.float32))
    with pytest.raises(lf.ShapeError, match=r"expected \(3, T, 6\)"):
        s.run(np.zeros((1, 5, 6), np.float32))
    with pytest.raises(lf.ShapeError):
        s.step(np.zeros(6, np.float32))


def test_bad_state(model):
    s = model.stream(batch=2)
    with pytest.raises(lf.ShapeError, match=r"expected \(2, 2, 10\)"):
        s.state = (np.zeros((2, 1, 10)), np.zeros((2, 1, 10)))
    with pytest.raises(lf.ShapeError, match=r"state must be \(h, c\)"):
        s.state = np.zeros((3, 2, 10))
    with pytest.raises(lf.ShapeError):
        model.predict(np.zeros((2, 3, 6), np.float32), initial_state=(np.zeros((2, 2, 9)),) * 2)


@pytest.mark.parametrize("batch", [0, -1, 2.5, "1"])
def test_bad_stream_batch(model, batch):
    with pytest.raises(lf.ShapeError, match="positive integer"):
        model.stream(batch=batch)


def test_absurd_sizes(model):
    with pytest.raises((lf.ShapeError, MemoryError)):
        model.stream(batch=1 << 30)
    x = np.broadcast_to(np.zeros(6, np.float32), (1, 1 << 25, 6))  # no memory behind it
    with pytest.raises(lf.ShapeError, match="at most"):
        model.predict(x)


def test_bad_weights(rng):
    w = random_layers(rng, 3, 4, 2)
    with pytest.raises(lf.WeightsError, match=r"w_hh must be \(4H, H\)"):
        lf.Model.from_lstm_weights([(w[0][0], w[0][1][:, :3], None, None)])
    with pytest.raises(lf.WeightsError, match=r"w_ih must be \(4H, I\)"):
        lf.Model.from_lstm_weights([(w[0][0][:8], w[0][1], None, None)])
    with pytest.raises(lf.WeightsError, match=r"biases must be \(16,\)"):
        lf.Model.from_lstm_weights([(w[0][0], w[0][1], np.zeros(3), None)])
    with pytest.raises(lf.WeightsError, match=r"layer 1 \(lstm\) expects inputs of size 3"):
        lf.Model.from_lstm_weights([w[0], (w[0][0], w[0][1], None, None)])
    with pytest.raises(lf.WeightsError, match="NaN or Inf"):
        lf.Model.from_lstm_weights([(w[0][0] * np.nan, w[0][1], None, None)])
    with pytest.raises(lf.WeightsError, match=r"expected \(W_ih, W_hh, b_ih, b_hh\)"):
        lf.Model.from_lstm_weights([w[0][:2]])
    with pytest.raises(lf.WeightsError, match="at least one recurrent layer"):
        lf.Model.from_lstm_weights([])
    with pytest.raises(lf.WeightsError, match="real 2-D"):
        lf.Model.from_lstm_weights([(np.zeros((16, 3), complex), w[0][1], None, None)])


def test_bad_isa(rng):
    with pytest.raises(ValueError, match="isa must be"):
        lf.Model.from_lstm_weights(random_layers(rng, 3, 4, 1), isa="sse9")


def test_callers_weights_are_not_touched(rng):
    layers = random_layers(rng, 3, 4, 1)
    model = lf.Model.from_lstm_weights(layers)
    assert all(a.flags.writeable for a in layers[0] if a is not None)
    layers[0][0][:] = 0  # mutating the caller's arrays afterwards does not change the model
    assert not np.array_equal(model.spec.layers[0].w_ih, layers[0][0])
