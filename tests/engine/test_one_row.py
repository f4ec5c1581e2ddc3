"""The one-row LSTM kernel (batch 1, no mask, no projection, H <= 4 vector widths) vs the oracle.

That kernel keeps h and c in registers across the steps of a call, splits each dot product into
interleaved chains and reads x itself while the weights fit in L1 (else one GEMM projects x).
These tests walk the edges of that path: sizes around the tile widths of every ISA, inputs
small and large (both x paths), reversed time, bidirectional layers, stacked layers, custom
activations, no bias, and streams whose state crosses calls.
"""

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.spec import BidirectionalSpec, DenseSpec, ModelSpec
from tests.helpers import lstm_spec
from tests.reference import spec_forward

TOL = 1e-5
HIDDEN = (1, 5, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65)


@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("I", [1, 3, 16, 130])
def test_one_row_matches_oracle(I, H, isa, rng):
    spec = ModelSpec(layers=(lstm_spec(rng, I, H),))
    x = rng.standard_normal((1, 37, I)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (1, 1, H)).astype(np.float32)
    c0 = rng.uniform(-2, 2, (1, 1, H)).astype(np.float32)
    y, (h, c) = lf.Model(spec, isa=isa).predict(x, initial_state=(h0, c0), return_state=True)
    y_ref, states = spec_forward(spec, x.astype(np.float64), initial_state=[(h0[0], c0[0])])
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(h[0], states[0][0], rtol=0, atol=TOL)
    np.testing.assert_allclose(c[0], states[0][1], rtol=0, atol=TOL)


@pytest.mark.parametrize("H", [7, 16, 40, 64])
def test_one_row_options_match_oracle(H, isa, rng):
    """go_backwards, custom activations, no bias, a bidirectional layer and a stack."""
    layers = (
        lstm_spec(rng, 6, H, go_backwards=True, activation="softsign",
                  recurrent_activation="hard_sigmoid", bias=False),
        BidirectionalSpec(lstm_spec(rng, H, H), lstm_spec(rng, H, H), merge_mode="concat"),
        lstm_spec(rng, 2 * H, H, activation="relu"),
        DenseSpec(rng.uniform(-0.3, 0.3, (3, H)), rng.uniform(-0.3, 0.3, 3)),
    )
    spec = ModelSpec(layers=layers)
    x = rng.standard_normal((1, 50, 6)).astype(np.float32)
    y = lf.Model(spec, isa=isa).predict(x)
    np.testing.assert_allclose(y, spec_forward(spec, x.astype(np.float64))[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("H", [16, 32, 50])
def test_one_row_stream_carries_state(H, isa, rng):
    """Chunks of any length, and single steps, continue the sequence exactly."""
    spec = ModelSpec(layers=(lstm_spec(rng, 4, H), lstm_spec(rng, H, H)))
    model = lf.Model(spec, isa=isa)
    x = rng.standard_normal((1, 300, 4)).astype(np.float32)
    whole = model.predict(x)
    stream = model.stream(batch=1)
    parts, t = [], 0
    for n in (1, 1, 7, 128, 2, 161):
        parts.append(stream.run(x[:, t:t + n]))
        t += n
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, spec_forward(spec, x.astype(np.float64))[0], rtol=0,
                               atol=TOL)
