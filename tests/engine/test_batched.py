"""Batched recurrent steps vs the float64 oracle on every ISA, around the crossovers between
the packed kernels and the BLAS recurrence (recurrent product by sgemm + lstm_pointwise or
gru_pointwise) of LSTM and GRU reset-after cells: portable above 8 rows, avx2 above
LF_AVX2_PACKED_MAX_BATCH = 48 (LSTM) and LF_AVX2_GRU_PACKED_MAX_BATCH (GRU) rows; avx512,
GRU reset-before and RNN cells stay packed (six-row register blocks on avx512 and avx2, the
avx2 one in passes of two gates; two-row blocks on portable; tails of 1-5 rows).

Hidden sizes are not multiples of the vector width and I != H. Whole sequences take the
hoisted-GEMM path (x projected), single steps and the two-thread batch halves read x in the
packed kernel; streams carry the state across calls, ragged lengths take the masked paths,
fp16 / bf16 weights the narrow-weight instantiations.
"""

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import _core
from lstm_fast.spec import BidirectionalSpec, ModelSpec
from tests.helpers import cell_spec, per_cell
from tests.reference import spec_forward

TOL = 2e-5
KINDS = ("lstm", "lstm_proj", "gru", "gru_before", "rnn")
BATCHES = (7, 8, 9, 10, 11, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65)


def random_state(rng, spec, B):
    """A random initial state per cell, in the oracle's [(h, c or None)] form."""
    out = []
    for cell in spec.cells:
        R = cell.w_hh.shape[1]
        h = rng.uniform(-1, 1, (B, R))
        c = rng.uniform(-2, 2, (B, cell.hidden_size)) if cell.kind == "lstm" else None
        out.append((h, c))
    return out


def as_model_state(state):
    """The oracle's state in Model.predict's initial_state form (one cell)."""
    h, c = state[0]
    h = h[None].astype(np.float32)
    return (h, c[None].astype(np.float32)) if c is not None else h


def check_state(got, want):
    for (h, c), (h_ref, c_ref) in zip(per_cell(got), want, strict=True):
        np.testing.assert_allclose(np.asarray(h).reshape(h_ref.shape), h_ref, rtol=0, atol=TOL)
        if c_ref is not None:
            np.testing.assert_allclose(np.asarray(c).reshape(c_ref.shape), c_ref, rtol=0,
                                       atol=TOL)


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("I, H", [(5, 13), (37, 40), (29, 43)])
@pytest.mark.parametrize("kind", KINDS)
def test_sequences_match_oracle(kind, I, H, B, isa):
    rng = np.random.default_rng(KINDS.index(kind) * 100 + B + H)
    spec = ModelSpec(layers=(cell_spec(rng, kind, I, H),))
    x = rng.standard_normal((B, 6, I)).astype(np.float32)
    s0 = random_state(rng, spec, B)
    y, state = lf.Model(spec, isa=isa).predict(x, initial_state=as_model_state(s0),
                                                return_state=True)
    y_ref, s_ref = spec_forward(spec, x.astype(np.float64), initial_state=s0)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=TOL)
    check_state(state, s_ref)


@pytest.mark.parametrize("B", [7, 9, 17, 33, 65])
@pytest.mark.parametrize("activations", [("tanh", "sigmoid"), ("softsign", "hard_sigmoid")])
def test_gru_activations_match_oracle(activations, B, isa):
    """The GRU's pointwise pass of the BLAS recurrence and the packed kernel apply the
    layer's own activations (not only the fused tanh / sigmoid path): sequences and steps."""
    rng = np.random.default_rng(B)
    act, ract = activations
    spec = ModelSpec(layers=(cell_spec(rng, "gru", 19, 43, activation=act,
                                       recurrent_activation=ract),))
    x = rng.standard_normal((B, 5, 19)).astype(np.float32)
    s0 = random_state(rng, spec, B)
    model = lf.Model(spec, isa=isa)
    y_ref = spec_forward(spec, x.astype(np.float64), initial_state=s0)[0]
    np.testing.assert_allclose(model.predict(x, initial_state=as_model_state(s0)), y_ref,
                               rtol=0, atol=TOL)
    stream = model.stream(B)
    np.testing.assert_allclose(stream.step(x[:, 0]), spec_forward(spec, x[:, :1])[0][:, 0],
                               rtol=0, atol=TOL)


@pytest.mark.parametrize("B", [8, 17, 33, 65])
@pytest.mark.parametrize("kind", KINDS)
def test_stream_steps_and_chunks_carry_state(kind, B, isa):
    """Single steps (x read by the kernel) and chunks continue one sequence exactly."""
    rng = np.random.default_rng(B + 7 * KINDS.index(kind))
    first = cell_spec(rng, kind, 11, 24)
    spec = ModelSpec(layers=(first, cell_spec(rng, kind, first.output_size, 19)))
    x = rng.standard_normal((B, 12, 11)).astype(np.float32)
    want = spec_forward(spec, x.astype(np.float64))[0]
    stream = lf.Model(spec, isa=isa).stream(B)
    parts = [stream.step(x[:, 0])[:, None], stream.step(x[:, 1])[:, None],
             stream.run(x[:, 2:7]), stream.step(x[:, 7])[:, None], stream.run(x[:, 8:])]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), want, rtol=0, atol=TOL)


@pytest.mark.parametrize("B", [9, 17, 33, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_lengths_match_oracle(kind, B, isa):
    """Ragged lengths: the masked paths (valid rows a prefix or a masked step)."""
    rng = np.random.default_rng(3 * B + KINDS.index(kind))
    spec = ModelSpec(layers=(cell_spec(rng, kind, 9, 21),), mask_semantics="torch")
    x = rng.standard_normal((B, 10, 9)).astype(np.float32)
    lengths = rng.integers(1, 11, B)
    y = lf.Model(spec, isa=isa).predict(x, lengths=lengths)
    y_ref = spec_forward(spec, x.astype(np.float64), lengths=lengths)[0]
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [16, 65])
def test_bidirectional_and_batch_halves(B, threads, isa):
    """Two threads run the directions, or halves of the batch, each reading x in the kernel."""
    rng = np.random.default_rng(B)
    spec = ModelSpec(layers=(
        BidirectionalSpec(cell_spec(rng, "lstm", 20, 72), cell_spec(rng, "lstm", 20, 72),
                          merge_mode="concat"),
        cell_spec(rng, "gru", 144, 100),
    ))
    x = rng.standard_normal((B, 7, 20)).astype(np.float32)
    old = _core.get_threads()
    _core.set_threads(threads)
    try:
        y = lf.Model(spec, isa=isa).predict(x)
    finally:
        _core.set_threads(old)
    np.testing.assert_allclose(y, spec_forward(spec, x.astype(np.float64))[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_narrow_weights_match_oracle(kind, dtype, isa):
    """The narrow-weight kernels compute with exactly the rounded weights (q.spec)."""
    rng = np.random.default_rng(KINDS.index(kind))
    spec = ModelSpec(layers=(cell_spec(rng, kind, 30, 45),))
    q = lf.Model(spec, isa=isa).quantize(dtype, measure_steps=0)
    x = rng.standard_normal((40, 5, 30)).astype(np.float32)
    np.testing.assert_allclose(q.predict(x), spec_forward(q.spec, x.astype(np.float64))[0],
                               rtol=0, atol=TOL)
    s = q.stream(40)
    np.testing.assert_allclose(s.step(x[:, 0]),
                               spec_forward(q.spec, x[:, :1].astype(np.float64))[0][:, 0],
                               rtol=0, atol=TOL)


def test_predict_reuses_its_workspace_across_shapes(isa, rng):
    """Model.predict hands its last call's workspace to the next: calls of growing and
    shrinking batches and lengths (ragged too) match the oracle, and a repeated call its first
    result bit for bit."""
    spec = ModelSpec(layers=(
        BidirectionalSpec(cell_spec(rng, "lstm", 6, 20), cell_spec(rng, "lstm", 6, 20)),
        cell_spec(rng, "gru", 40, 12)))
    model = lf.Model(spec, isa=isa)
    shapes = [(5, 40), (2, 7), (9, 60), (5, 40)]
    xs = [rng.standard_normal((B, T, 6)).astype(np.float32) for B, T in shapes]
    first = model.predict(xs[0])
    for x in xs[1:]:
        lengths = np.arange(x.shape[0]) % x.shape[1] + 1
        y = model.predict(x, lengths=lengths)
        ref = spec_forward(spec, x.astype(np.float64), lengths=lengths)[0]
        np.testing.assert_allclose(y, ref, rtol=0, atol=TOL)
    np.testing.assert_array_equal(model.predict(xs[0]), first)


def test_a_state_takes_only_a_writable_uint8_workspace(rng):
    model = lf.Model(ModelSpec(layers=(cell_spec(rng, "lstm", 3, 8),)))
    state = _core.CState(model._c, 2)
    for bad in (np.zeros(64, np.float32), np.zeros((8, 8), np.uint8), [0] * 64,
                np.zeros(128, np.uint8)[::2]):
        with pytest.raises(lf.ShapeError, match="workspace"):
            state.workspace = bad
    readonly = np.zeros(64, np.uint8)
    readonly.flags.writeable = False
    with pytest.raises(lf.ShapeError, match="workspace"):
        state.workspace = readonly
    state.workspace = np.zeros(16, np.uint8)   # too small: the next run allocates its own
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(state.run(x), model.predict(x))
    assert state.workspace.nbytes > 16
