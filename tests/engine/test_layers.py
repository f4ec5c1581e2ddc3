"""Whole models (Embedding, Masking, Dense heads, LSTM options, masks) vs the float64 oracle."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lstm_fast as lf
from lstm_fast.spec import (
    CELL_ACTIVATIONS,
    DENSE_ACTIVATIONS,
    BidirectionalSpec,
    EmbeddingSpec,
    MaskingSpec,
    ModelSpec,
)
from tests.helpers import ISAS, cell_spec, dense_spec, lstm_spec, per_cell
from tests.reference import spec_forward

TOL = 1e-5
# Cell activations under which a random LSTM cannot overflow float32 in a few steps.
BOUNDED_GROWTH = tuple(a for a in CELL_ACTIVATIONS if a != "exponential")


@st.composite
def models(draw):
    """A random chain: [Embedding | Masking | Dense]? LSTM+ [Dense]*, with random options."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    layers, width = [], draw(st.integers(1, 24))
    front = draw(st.sampled_from(["none", "embedding", "masking", "dense"]))
    if front == "embedding":
        vocab = draw(st.integers(2, 30))
        layers.append(EmbeddingSpec(rng.normal(size=(vocab, width)), draw(st.booleans())))
    elif front == "masking":
        layers.append(MaskingSpec(width, draw(st.sampled_from([0.0, -1.0]))))
    elif front == "dense":
        out = draw(st.integers(1, 20))
        layers.append(dense_spec(rng, width, out, draw(st.sampled_from(CELL_ACTIVATIONS))))
        width = out
    n_rnn = draw(st.integers(1, 3))
    for k in range(n_rnn):
        H = draw(st.integers(1, 40))
        last = k == n_rnn - 1 and draw(st.booleans())
        kind = draw(st.sampled_from(["lstm", "lstm", "lstm_proj", "gru", "gru_before", "rnn"]))
        merge = draw(st.sampled_from([None, None, "concat", "sum", "ave", "mul"]))
        opts = dict(
            bias=draw(st.booleans()),
            activation=draw(st.sampled_from(["tanh", "tanh", *BOUNDED_GROWTH])),
            recurrent_activation=draw(st.sampled_from(
                ["sigmoid", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2"])),
            return_sequences=not last)
        if kind == "rnn" and opts["activation"] not in ("tanh", "softsign", "sigmoid"):
            opts["activation"] = "tanh"  # an unbounded plain RNN may overflow float32
        if merge is None:
            layer = cell_spec(rng, kind, width, H, **opts,
                              go_backwards=draw(st.integers(0, 4)) == 0)
        else:
            layer = BidirectionalSpec(cell_spec(rng, kind, width, H, **opts),
                                      cell_spec(rng, kind, width, H, **opts), merge)
        layers.append(layer)
        width = layer.output_size
    for _ in range(draw(st.integers(0, 2))):
        out = draw(st.integers(1, 20))
        layers.append(dense_spec(rng, width, out, draw(st.sampled_from(DENSE_ACTIVATIONS))))
        width = out
    return ModelSpec(tuple(layers), mask_semantics=draw(st.sampled_from(["keras", "torch"]))), seed


def random_input(spec, rng, B, T, holes):
    if spec.takes_ids:
        ids = rng.integers(0 if holes else 1, spec.layers[0].vocab_size, (B, T))
        return ids.astype(np.int64)
    x = rng.standard_normal((B, T, spec.input_size)).astype(np.float32)
    if holes and spec.layers[0].kind == "masking":
        x[rng.random((B, T)) < 0.3] = spec.layers[0].mask_value
    return x


@given(model=models(), B=st.integers(1, 12), T=st.integers(1, 40), isa=st.sampled_from(ISAS),
       use_lengths=st.booleans(), holes=st.booleans())
def test_chain_matches_oracle(model, B, T, isa, use_lengths, holes):
    spec, seed = model
    rng = np.random.default_rng(seed + 1)
    x = random_input(spec, rng, B, T, holes)
    lengths = rng.integers(0, T + 1, B) if use_lengths else None
    y_ref, states_ref = spec_forward(spec, x, lengths=lengths)
    model = lf.Model(spec, isa=isa)
    y, state = model.predict(x, lengths=lengths, return_state=True)
    assert y.shape == y_ref.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=TOL)
    for (h, c), (hr, cr) in zip(per_cell(state, len(model.state_sizes)), states_ref, strict=True):
        np.testing.assert_allclose(h, hr, rtol=1e-5, atol=TOL)
        if cr is not None:
            np.testing.assert_allclose(c, cr, rtol=1e-5, atol=TOL)


@pytest.mark.parametrize("semantics", ["keras", "torch"])
def test_long_masked_sequences(semantics, isa, rng):
    """600 steps with ragged lengths cross block boundaries; errors must not accumulate."""
    spec = ModelSpec((MaskingSpec(6, 0.0), lstm_spec(rng, 6, 48), lstm_spec(rng, 48, 32),
                      dense_spec(rng, 32, 5, "softmax")), mask_semantics=semantics)
    x = rng.standard_normal((5, 600, 6)).astype(np.float32)
    x[1, 100:130] = 0.0  # a hole
    lengths = np.array([600, 599, 350, 1, 0])
    y = lf.Model(spec, isa=isa).predict(x, lengths=lengths)
    np.testing.assert_allclose(y, spec_forward(spec, x, lengths=lengths)[0], rtol=1e-5, atol=TOL)


def test_masked_output_rules(rng):
    """The two semantics differ exactly where the issue says: padded steps and before the
    first valid step."""
    layers = (MaskingSpec(3, 0.0), lstm_spec(rng, 3, 4))
    x = rng.standard_normal((1, 6, 3)).astype(np.float32)
    x[0, [0, 3, 5]] = 0.0
    keras = lf.Model(ModelSpec(layers, mask_semantics="keras")).predict(x)[0]
    torch = lf.Model(ModelSpec(layers, mask_semantics="torch")).predict(x)[0]
    assert not keras[0].any() and not torch[0].any()          # before the first valid step
    np.testing.assert_array_equal(keras[3], keras[2])          # Keras repeats
    np.testing.assert_array_equal(keras[5], keras[4])
    assert not torch[3].any() and not torch[5].any()           # PyTorch writes zeros
    np.testing.assert_array_equal(keras[[1, 2, 4]], torch[[1, 2, 4]])


def test_streaming_chain_equals_predict(isa, rng):
    """Embedding ids -> LSTM x2 -> Dense softmax, fed one id at a time and in chunks."""
    spec = ModelSpec((EmbeddingSpec(rng.normal(size=(20, 8))), lstm_spec(rng, 8, 16),
                      lstm_spec(rng, 16, 12), dense_spec(rng, 12, 20, "softmax")))
    model = lf.Model(spec, isa=isa)
    ids = rng.integers(0, 20, (3, 50))
    y = model.predict(ids)
    s = model.stream(3)
    steps = np.stack([s.step(ids[:, t]) for t in range(50)], axis=1)
    np.testing.assert_allclose(steps, y, rtol=0, atol=1e-6)
    s.reset()
    chunks = np.concatenate([s.run(ids[:, a:b]) for a, b in ((0, 7), (7, 8), (8, 50))], axis=1)
    np.testing.assert_allclose(chunks, y, rtol=0, atol=1e-6)


def test_unequal_hidden_sizes_state_lists(rng):
    spec = ModelSpec((lstm_spec(rng, 3, 5), lstm_spec(rng, 5, 7)))
    model = lf.Model(spec)
    x = rng.standard_normal((2, 9, 3)).astype(np.float32)
    init = [(rng.standard_normal((2, 5)), rng.standard_normal((2, 5))),
            (rng.standard_normal((2, 7)), rng.standard_normal((2, 7)))]
    y, states = model.predict(x, initial_state=init, return_state=True)
    y_ref, states_ref = spec_forward(spec, x, initial_state=init)
    np.testing.assert_allclose(y, y_ref, atol=TOL)
    assert [h.shape for h, _ in states] == [(2, 5), (2, 7)]
    for (h, c), (hr, cr) in zip(states, states_ref, strict=True):
        np.testing.assert_allclose(h, hr, atol=TOL)
        np.testing.assert_allclose(c, cr, atol=TOL)
    with pytest.raises(lf.ShapeError, match="a list of 2 entries"):
        model.predict(x, initial_state=(np.zeros((2, 2, 5)), np.zeros((2, 2, 5)), 0))


def test_go_backwards_cannot_stream(rng):
    model = lf.Model(ModelSpec((lstm_spec(rng, 3, 4, go_backwards=True),)))
    with pytest.raises(lf.UnsupportedModelError, match="go_backwards"):
        model.stream()


def test_bad_ids_and_lengths(rng):
    model = lf.Model(ModelSpec((EmbeddingSpec(rng.normal(size=(5, 3))), lstm_spec(rng, 3, 4))))
    with pytest.raises(lf.InputError, match="outside"):
        model.predict(np.array([[1, 5]]))
    with pytest.raises(lf.InputError, match="outside"):
        model.predict(np.array([[1, -1]]))
    with pytest.raises(lf.DTypeError, match="integer ids"):
        model.predict(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(lf.InputError, match=r"\[0, T\]"):
        model.predict(np.array([[1, 2]]), lengths=[3])
    with pytest.raises(lf.ShapeError, match=r"expected \(1,\)"):
        model.predict(np.array([[1, 2]]), lengths=[1, 2])
    with pytest.raises(lf.DTypeError):
        model.predict(np.array([[1, 2]]), lengths=[1.5])


@pytest.mark.parametrize("kinds", [("gru", "gru"), ("gru_before", "rnn"), ("lstm_proj", "gru"),
                                   ("rnn", "lstm")])
def test_streaming_recurrent_family_equals_predict(kinds, isa, rng):
    """GRU (both variants), RNN and projected LSTM stacks: steps and chunks == predict."""
    spec = ModelSpec((cell_spec(rng, kinds[0], 5, 12), cell_spec(rng, kinds[1], 12 if
                      kinds[0] != "lstm_proj" else 6, 9), dense_spec(rng, 9, 4, "softmax")))
    model = lf.Model(spec, isa=isa)
    x = rng.standard_normal((3, 40, 5)).astype(np.float32)
    y = model.predict(x)
    np.testing.assert_allclose(y, spec_forward(spec, x)[0], rtol=1e-5, atol=TOL)
    s = model.stream(3)
    steps = np.stack([s.step(x[:, t]) for t in range(40)], axis=1)
    np.testing.assert_allclose(steps, y, rtol=0, atol=1e-6)
    s.reset()
    chunks = np.concatenate([s.run(x[:, a:b]) for a, b in ((0, 13), (13, 14), (14, 40))], axis=1)
    np.testing.assert_allclose(chunks, y, rtol=0, atol=1e-6)


def test_partial_reset_of_gru_streams_is_bit_exact(rng):
    """A server resets some streams; the others continue bit-identically."""
    spec = ModelSpec((cell_spec(rng, "gru", 4, 16), cell_spec(rng, "lstm_proj", 16, 10)))
    model = lf.Model(spec)
    x = rng.standard_normal((5, 30, 4)).astype(np.float32)
    a, b = model.stream(5), model.stream(5)
    a.run(x[:, :10])
    b.run(x[:, :10])
    a.reset([1, 3])
    ya, yb = a.run(x[:, 10:]), b.run(x[:, 10:])
    np.testing.assert_array_equal(ya[[0, 2, 4]], yb[[0, 2, 4]])
    fresh = model.stream(1)  # the reset row starts over (B=1 groups rows differently: ulps)
    np.testing.assert_allclose(ya[1], fresh.run(x[1:2, 10:])[0], rtol=0, atol=1e-6)
    sa = per_cell(a.state, len(model.state_sizes))
    assert all(h.shape[0] == 5 for h, _ in sa)


def test_bidirectional_cannot_stream_but_predicts(rng):
    spec = ModelSpec((BidirectionalSpec(cell_spec(rng, "gru", 3, 4), cell_spec(rng, "gru", 3, 4)),))
    model = lf.Model(spec)
    with pytest.raises(lf.UnsupportedModelError, match="cannot run step by step"):
        model.stream()
    y, h = model.predict(rng.standard_normal((2, 6, 3)), return_state=True)
    assert y.shape == (2, 6, 8) and h.shape == (2, 2, 4)  # PyTorch's h_n: (layers*2, B, H)


@pytest.mark.parametrize("kind", ["lstm", "gru_before", "lstm_proj"])
def test_bidirectional_on_two_threads(kind, rng):
    """set_num_threads(2) runs the two directions at once; the result is the same."""
    spec = ModelSpec((
        BidirectionalSpec(cell_spec(rng, kind, 32, 64), cell_spec(rng, kind, 32, 64), "concat"),
        BidirectionalSpec(cell_spec(rng, kind, 64 if kind == "lstm_proj" else 128, 48,
                                    return_sequences=False),
                          cell_spec(rng, kind, 64 if kind == "lstm_proj" else 128, 48,
                                    return_sequences=False), "sum")))
    model = lf.Model(spec)
    x = rng.standard_normal((5, 70, 32)).astype(np.float32)
    lengths = np.array([70, 3, 69, 40, 0])
    try:
        lf.set_num_threads(2)
        y2 = model.predict(x)
        y2l, s2 = model.predict(x, lengths=lengths, return_state=True)
    finally:
        lf.set_num_threads(1)
    y1l, s1 = model.predict(x, lengths=lengths, return_state=True)
    np.testing.assert_allclose(y2, spec_forward(spec, x)[0], rtol=1e-5, atol=TOL)
    np.testing.assert_allclose(y2l, y1l, rtol=0, atol=1e-6)
    n = len(model.state_sizes)
    for (h2, c2), (h1, c1) in zip(per_cell(s2, n), per_cell(s1, n), strict=True):
        np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-6)
        if c1 is not None:
            np.testing.assert_allclose(c2, c1, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_before", "rnn", "lstm_proj"])
@pytest.mark.parametrize("B", [13, 64])
def test_batch_halves_on_two_threads(kind, B, isa, rng):
    """set_num_threads(2) runs the two halves of a large batch on two threads, each over the
    whole sequence; outputs and states equal the oracle and the one-thread run, in whole
    calls, streamed chunks and single steps."""
    H = 96 if kind == "rnn" else 64
    spec = ModelSpec((cell_spec(rng, kind, 24, H), cell_spec(rng, kind, H // 2 if kind ==
                                                             "lstm_proj" else H, H)))
    model = lf.Model(spec, isa=isa)
    x = rng.standard_normal((B, 30, 24)).astype(np.float32)
    y1, s1 = model.predict(x, return_state=True)
    try:
        lf.set_num_threads(2)
        y2, s2 = model.predict(x, return_state=True)
        stream = model.stream(batch=B)
        chunks = np.concatenate([stream.run(x[:, :11]), stream.step(x[:, 11])[:, None],
                                 stream.run(x[:, 12:])], axis=1)
    finally:
        lf.set_num_threads(1)
    np.testing.assert_allclose(y2, spec_forward(spec, x)[0], rtol=0, atol=TOL)
    np.testing.assert_allclose(y2, y1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(chunks, y1, rtol=0, atol=1e-6)
    n = len(model.state_sizes)
    for (h2, c2), (h1, c1) in zip(per_cell(s2, n), per_cell(s1, n), strict=True):
        np.testing.assert_allclose(h2, h1, rtol=0, atol=1e-6)
        if c1 is not None:
            np.testing.assert_allclose(c2, c1, rtol=0, atol=1e-6)


def test_stream_step_ids_of_any_integer_width(rng):
    """Step ids arrive as int64 (numpy's default) or int32; ids outside the vocabulary,
    including ones beyond int32, are refused and leave the state untouched."""
    model = lf.Model(ModelSpec((EmbeddingSpec(rng.normal(size=(9, 4))), lstm_spec(rng, 4, 5))))
    a, b = model.stream(2), model.stream(2)
    ids = rng.integers(0, 9, (2, 6))
    for t in range(6):
        np.testing.assert_array_equal(a.step(ids[:, t]), b.step(ids[:, t].astype(np.int32)))
    before = per_cell(a.state, len(model.state_sizes))
    for bad in (np.array([1, 2**40]), np.array([1, -1]), np.array([1, 9])):
        with pytest.raises(lf.InputError, match="outside"):
            a.step(bad)
    for (h0, c0), (h1, c1) in zip(before, per_cell(a.state, len(model.state_sizes)), strict=True):
        np.testing.assert_array_equal(h0, h1)
        np.testing.assert_array_equal(c0, c1)
