"""Engine vs the float64 oracle (tests/reference.py) on random sizes, for every kernel level."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lstm_fast as lf
from lstm_fast.spec import ModelSpec, SimpleRNNLayerSpec
from tests.helpers import ISAS
from tests.reference import lstm, random_layers

TOL = 1e-5


@given(
    I=st.integers(1, 80),
    H=st.integers(1, 75),
    L=st.integers(1, 3),
    B=st.integers(1, 70),
    T=st.integers(1, 60),
    isa=st.sampled_from(ISAS),
    seed=st.integers(0, 2**32 - 1),
)
def test_predict_matches_oracle(I, H, L, B, T, isa, seed):
    rng = np.random.default_rng(seed)
    layers = random_layers(rng, I, H, L, bias=bool(seed % 2))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((L, B, H)).astype(np.float32)
    c0 = rng.standard_normal((L, B, H)).astype(np.float32)
    model = lf.Model.from_lstm_weights(layers, isa=isa)
    y, (h, c) = model.predict(x, initial_state=(h0, c0), return_state=True)
    y_ref, (h_ref, c_ref) = lstm(x, layers, (h0, c0))
    assert y.shape == (B, T, H) and y.dtype == np.float32
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(c, c_ref, rtol=0, atol=TOL)


def test_long_sequence_matches_oracle(isa, rng):
    """T = 1000 crosses the internal block boundary; errors must not accumulate."""
    layers = random_layers(rng, 24, 40, 2)
    for B in (1, 3, 9):
        x = rng.standard_normal((B, 1000, 24)).astype(np.float32)
        y, (h, c) = lf.Model.from_lstm_weights(layers, isa=isa).predict(x, return_state=True)
        y_ref, (h_ref, c_ref) = lstm(x, layers)
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=TOL)
        np.testing.assert_allclose(c, c_ref, rtol=0, atol=TOL)


def test_large_hidden_and_saturation(isa, rng):
    """Sizes of the benchmarks, and large pre-activations that saturate every gate."""
    layers = random_layers(rng, 256, 512, 1)
    x = rng.standard_normal((2, 20, 256)).astype(np.float32)
    y = lf.Model.from_lstm_weights(layers, isa=isa).predict(x)
    np.testing.assert_allclose(y, lstm(x, layers)[0], rtol=0, atol=TOL)
    big = random_layers(rng, 8, 16, 1, scale=30.0)
    xb = (rng.standard_normal((3, 50, 8)) * 10).astype(np.float32)
    y = lf.Model.from_lstm_weights(big, isa=isa).predict(xb)
    np.testing.assert_allclose(y, lstm(xb, big)[0], rtol=0, atol=TOL)


def test_strided_and_converted_inputs_match(rng):
    """Non-contiguous float32 views run without a copy; float64/float16 are converted."""
    layers = random_layers(rng, 6, 10, 2)
    model = lf.Model.from_lstm_weights(layers)
    base = rng.standard_normal((8, 40, 12)).astype(np.float32)
    view = base[::2, ::-1, ::2]
    np.testing.assert_allclose(model.predict(view), lstm(view, layers)[0], atol=TOL, rtol=0)
    np.testing.assert_array_equal(model.predict(view), model.predict(view.copy()))
    x64 = rng.standard_normal((2, 5, 6))
    np.testing.assert_array_equal(model.predict(x64), model.predict(x64.astype(np.float32)))


def test_activations_accuracy(isa):
    """Gate math over the whole float range: one unit, identity-like weights, no recurrence."""
    z = np.concatenate([np.linspace(-100, 100, 4001), np.linspace(-3, 3, 6001),
                        np.linspace(-1e-3, 1e-3, 201)]).astype(np.float32)
    # One hidden unit; the input feeds only the gate under test; c0 = 1 so f matters.
    for gate in range(4):
        w_ih = np.zeros((4, 1), np.float32)
        w_ih[gate, 0] = 1.0
        bias = np.array([0, 0, 0, 0], np.float32)
        bias[[k for k in range(4) if k != gate]] = 50.0  # other gates saturated to ~1
        model = lf.Model.from_lstm_weights([(w_ih, np.zeros((4, 1), np.float32), bias, None)],
                                           isa=isa)
        x = z.reshape(-1, 1, 1)
        state = (np.zeros((1, len(z), 1), np.float32), np.ones((1, len(z), 1), np.float32))
        y = model.predict(x, initial_state=state)[:, 0, 0].astype(np.float64)
        y_ref = lstm(x, [(w_ih, np.zeros((4, 1)), bias, None)], state)[0][:, 0, 0]
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=3e-7)


def one_unit_rnn(activation: str, isa: str) -> lf.Model:
    """h' = act(x): a SimpleRNN of one unit, input weight 1, no recurrence, no bias."""
    cell = SimpleRNNLayerSpec(np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32), None,
                              activation=activation)
    return lf.Model(ModelSpec(layers=(cell,)), isa=isa)


@pytest.mark.parametrize(("activation", "f", "max_ulp"), [
    ("tanh", np.tanh, 2.0), ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), 3.0)])
def test_tanh_and_sigmoid_are_relative_accurate(activation, f, max_ulp, isa):
    """The vector tanh and sigmoid against float64, in ulps of each float32 result over the
    whole range where the result is a normal float, tiny arguments included."""
    pos = np.concatenate([np.geomspace(1e-30, 1e-3, 2001), np.linspace(1e-3, 3, 30001),
                          np.linspace(3, 87, 20001)])
    z = np.concatenate([-pos[::-1], [0.0], pos]).astype(np.float32)
    y = one_unit_rnn(activation, isa).predict(z.reshape(-1, 1, 1))[:, 0, 0]
    want = f(z.astype(np.float64))
    ulps = np.abs(y - want) / np.spacing(np.abs(want).astype(np.float32))
    assert ulps.max() <= max_ulp, (z[ulps.argmax()], ulps.max())


def test_tanh_of_infinities_is_one(isa):
    y = one_unit_rnn("tanh", isa).predict(
        np.array([np.inf, -np.inf, 30.0, -30.0], np.float32).reshape(-1, 1, 1),
        check_finite=False)[:, 0, 0]
    assert y.tolist() == [1.0, -1.0, 1.0, -1.0]
