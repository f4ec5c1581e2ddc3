"""Models pickle as their model file's bytes: every protocol, out of band without a copy, to
another process, with the instruction set chosen again on the receiving side; broken bytes
raise ModelFileError."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import _core
from lstm_fast.format import spec_from_bytes, spec_to_bytes
from lstm_fast.spec import BidirectionalSpec, EmbeddingSpec, ModelSpec
from tests.helpers import cell_spec, dense_spec, lstm_spec


def specs(rng):
    yield ModelSpec((EmbeddingSpec(rng.normal(size=(11, 6)), mask_zero=True),
                     lstm_spec(rng, 6, 9, activation="relu"),
                     lstm_spec(rng, 9, 5, bias=False, return_sequences=False),
                     dense_spec(rng, 5, 3, "softmax")),
                    mask_semantics="keras", stateful=True, metadata={"source": "test"})
    yield ModelSpec((cell_spec(rng, "gru_before", 4, 7), cell_spec(rng, "lstm_proj", 7, 6),
                     BidirectionalSpec(cell_spec(rng, "rnn", 3, 5), cell_spec(rng, "rnn", 3, 5),
                                       "concat")))
    yield ModelSpec((cell_spec(rng, "lstm", 4, 6),), state_layout="cell")


def inputs(model, rng, B=3, T=12):
    if model.takes_ids:
        return rng.integers(0, 11, (B, T))
    return rng.standard_normal((B, T, model.input_size)).astype(np.float32)


def assert_same_spec(a, b):
    assert (a.mask_semantics, a.stateful, a.metadata, a.state_layout) == \
        (b.mask_semantics, b.stateful, b.metadata, b.state_layout)
    assert [L.kind for L in a.layers] == [L.kind for L in b.layers]
    for La, Lb in zip(a.layers, b.layers, strict=True):
        for name, arr in La.arrays().items():
            np.testing.assert_array_equal(arr, Lb.arrays()[name])


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_round_trip_every_protocol(rng, protocol):
    for spec in specs(rng):
        model = lf.Model(spec)
        back = pickle.loads(pickle.dumps(model, protocol=protocol))
        assert_same_spec(model.spec, back.spec)
        x = inputs(model, rng)
        np.testing.assert_array_equal(back.predict(x), model.predict(x))
        if spec.state_layout == "cell":
            assert isinstance(back.stream().state, tuple) and back.stream().state[0].shape == (1, 6)


def test_pickle_carries_the_file_bytes(rng, tmp_path):
    model = lf.Model(next(specs(rng)))
    model.save(tmp_path / "m.lfm")
    data = (tmp_path / "m.lfm").read_bytes()
    assert model.to_bytes() == data
    bufs = []
    small = pickle.dumps(model, protocol=5, buffer_callback=bufs.append)
    assert len(bufs) == 1 and bytes(bufs[0].raw()) == data
    assert len(small) < 200  # the weights travel out of band


def test_out_of_band_unpickling_does_not_copy(rng):
    model = lf.Model(next(specs(rng)))
    bufs = []
    data = pickle.dumps(model, protocol=5, buffer_callback=bufs.append)
    raw = bytearray(bufs[0].raw())  # what a transport hands the receiver
    back = pickle.loads(data, buffers=[raw])
    whole = np.frombuffer(raw, np.uint8)
    for L in back.spec.layers:
        for arr in L.arrays().values():
            assert np.shares_memory(arr, whole)
    x = inputs(model, rng)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_isa_is_chosen_again_by_the_receiver(rng, monkeypatch):
    model = lf.Model(next(specs(rng)), isa="portable")
    assert model.isa == "portable"
    data = pickle.dumps(model)
    monkeypatch.delenv("LSTM_FAST_ISA", raising=False)
    assert pickle.loads(data).isa == _core.best_isa()
    monkeypatch.setenv("LSTM_FAST_ISA", "portable")
    assert pickle.loads(data).isa == "portable"


def _predict_in_child(model, x):
    return model.predict(x), model.isa


def test_model_sent_to_another_process(rng):
    model = lf.Model(next(specs(rng)))
    x = inputs(model, rng)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        y, isa = ex.submit(_predict_in_child, model, x).result(timeout=120)
    np.testing.assert_array_equal(y, model.predict(x))
    assert isa == _core.best_isa()


def test_bytes_round_trip_from_any_buffer(rng, tmp_path):
    spec = next(specs(rng))
    data = spec_to_bytes(spec)
    for buf in (data, bytearray(data), memoryview(data)):
        assert_same_spec(spec, spec_from_bytes(buf))
    model = lf.Model.from_bytes(memoryview(data), isa="portable")
    assert model.isa == "portable"
    x = inputs(model, rng)
    np.testing.assert_array_equal(model.predict(x), lf.Model(spec).predict(x))


def test_broken_bytes_raise_model_file_error(rng):
    data = spec_to_bytes(next(specs(rng)))
    with pytest.raises(lf.ModelFileError, match="<bytes>"):
        lf.Model.from_bytes(data[:-10])
    with pytest.raises(lf.ModelFileError):
        lf.Model.from_bytes(b"")
    with pytest.raises(lf.ModelFileError, match="shipped"):
        spec_from_bytes(data[:40], name="shipped")
    # a pickle whose buffer was damaged in transit fails with the same typed error
    bufs = []
    small = pickle.dumps(lf.Model(next(specs(rng))), protocol=5, buffer_callback=bufs.append)
    damaged = bytearray(bufs[0].raw())
    damaged[3:8] = b"\xff" * 5
    with pytest.raises(lf.ModelFileError):
        pickle.loads(small, buffers=[damaged])
