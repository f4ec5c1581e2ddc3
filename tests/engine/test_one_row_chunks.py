"""Batch-1 chunks of a stream vs the float64 oracle, at the sizes where the one-row paths switch.

A batch-1 LSTM chunk runs on a one-row kernel: registers-resident up to 2 tiles (16 vector
registers) or 4 tiles (32), the blocked kernel beyond; it reads x itself up to
``LF_ONE_ROW_READ_X`` = 16 inputs, else one GEMM projects the chunk (the old rule switched at
24 KB of weights, e.g. I = 16, H = 32). GRU and RNN rows step on the packed kernel. These
tests walk hidden sizes around every tile width, inputs on both sides of both thresholds, and
chunk lengths 1, 2, 511 and 512 carried across calls of one stream.
"""

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.spec import ModelSpec
from tests.helpers import cell_spec
from tests.reference import spec_forward

TOL = 1e-5
CHUNKS = (1, 2, 511, 512)
HIDDEN = (8, 15, 16, 17, 24, 31, 32, 33, 40, 48, 65, 128)


def check_stream(spec: ModelSpec, isa: str, rng: np.random.Generator, I: int, H: int,
                 kind: str) -> None:
    """Runs CHUNKS through one stream from a random state, against the oracle."""
    x = rng.standard_normal((1, sum(CHUNKS), I)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (1, 1, H)).astype(np.float32)
    c0 = rng.uniform(-2, 2, (1, 1, H)).astype(np.float32)
    lstm = kind.startswith("lstm")
    stream = lf.Model(spec, isa=isa).stream(batch=1)
    stream.state = (h0, c0) if lstm else h0
    parts, t = [], 0
    for n in CHUNKS:
        parts.append(stream.run(x[:, t:t + n]))
        t += n
    y_ref, states = spec_forward(spec, x.astype(np.float64),
                                 initial_state=[(h0[0], c0[0] if lstm else None)])
    np.testing.assert_allclose(np.concatenate(parts, axis=1), y_ref, rtol=0, atol=TOL)
    state = stream.state
    h = state[0] if lstm else state
    np.testing.assert_allclose(h[0], states[0][0], rtol=0, atol=TOL)
    if lstm:
        np.testing.assert_allclose(state[1][0], states[0][1], rtol=0, atol=TOL)


@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("I", ["1", "16", "17", "H"])
def test_lstm_chunks_match_oracle(I, H, isa, rng):
    """Both one-row kernels, both x paths (I <= 16 read in the kernel, I > 16 projected)."""
    n_in = H if I == "H" else int(I)
    check_stream(ModelSpec(layers=(cell_spec(rng, "lstm", n_in, H),)), isa, rng, n_in, H,
                 "lstm")


@pytest.mark.parametrize("I", [15, 16, 17])
def test_lstm_chunks_around_old_l1_threshold(I, isa, rng):
    """H = 32: (I + H) * 4 * 32 float32 weights are 24 KB at I = 16, the old L1 threshold."""
    check_stream(ModelSpec(layers=(cell_spec(rng, "lstm", I, 32),)), isa, rng, I, 32, "lstm")


@pytest.mark.parametrize("H", [8, 15, 16, 17, 32, 33, 40, 65])
@pytest.mark.parametrize("I", ["1", "16", "H"])
@pytest.mark.parametrize("kind", ["gru", "gru_before", "rnn"])
def test_other_cells_chunks_match_oracle(kind, I, H, isa, rng):
    n_in = H if I == "H" else int(I)
    check_stream(ModelSpec(layers=(cell_spec(rng, kind, n_in, H),)), isa, rng, n_in, H, kind)


@pytest.mark.parametrize("H", [33, 80])
def test_blocked_lstm_options_match_oracle(H, isa, rng):
    """The blocked kernel with custom activations, no bias, reversed time and a stack whose
    second layer is projected (I = H > 16)."""
    layers = (cell_spec(rng, "lstm", 5, H, go_backwards=True, activation="softsign",
                        recurrent_activation="hard_sigmoid", bias=False),
              cell_spec(rng, "lstm", H, H, activation="relu"))
    spec = ModelSpec(layers=layers)
    x = rng.standard_normal((1, 70, 5)).astype(np.float32)
    y = lf.Model(spec, isa=isa).predict(x)
    np.testing.assert_allclose(y, spec_forward(spec, x.astype(np.float64))[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("B", [1, 2, 3, 4])
@pytest.mark.parametrize("I", [7, 8, 33])
@pytest.mark.parametrize("kind", ["gru", "gru_before", "rnn", "lstm"])
def test_few_row_chunks_on_both_input_paths(kind, I, B, isa, rng):
    """GRU and RNN chunks of fewer than LF_FUSE_MIN_ROWS = 4 rows with LF_FUSE_MIN_INPUTS = 8
    or more inputs are projected by a GEMM even where the packed kernels read x (avx512);
    7 inputs or 4 rows keep the kernel's reads. Two chunks carried in one stream."""
    spec = ModelSpec(layers=(cell_spec(rng, kind, I, 24),))
    x = rng.standard_normal((B, 300, I)).astype(np.float32)
    stream = lf.Model(spec, isa=isa).stream(batch=B)
    y = np.concatenate([stream.run(x[:, :137]), stream.run(x[:, 137:])], axis=1)
    np.testing.assert_allclose(y, spec_forward(spec, x.astype(np.float64))[0], rtol=0, atol=TOL)
