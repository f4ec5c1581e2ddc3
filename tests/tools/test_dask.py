"""lstm_fast.dask.predict: chunks of a dask array scored on workers, equal to Model.predict;
on a real distributed LocalCluster of two worker processes (loopback only) the model is
pickled once and unpickled once per worker, however many chunks; bad input is refused before
any task runs."""

from __future__ import annotations

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.spec import EmbeddingSpec, LSTMLayerSpec, ModelSpec
from tests.helpers import cell_spec, dense_spec
from tests.reference import random_layers

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
lfd = pytest.importorskip("lstm_fast.dask")

ATOL = 1e-6


def float_model(rng, I=8, H=16):
    return lf.Model.from_lstm_weights(random_layers(rng, I, H, 2))


def ids_model(rng):
    return lf.Model(ModelSpec((EmbeddingSpec(rng.normal(size=(13, 5)), mask_zero=True),
                               cell_spec(rng, "gru", 5, 7), dense_spec(rng, 7, 3, "softmax")),
                              mask_semantics="keras"))


def last_model(rng):
    c = cell_spec(rng, "lstm", 4, 6)
    return lf.Model(ModelSpec((LSTMLayerSpec(c.w_ih, c.w_hh, c.bias, return_sequences=False),
                               dense_spec(rng, 6, 2))))


def per_chunk(model, x, lengths, size):
    """The oracle at the chunks' own batch sizes: Model.predict chunk by chunk."""
    return np.concatenate([
        model.predict(x[b:b + size], lengths=None if lengths is None else lengths[b:b + size])
        for b in range(0, len(x), size)])


@pytest.mark.parametrize("kind", ["float", "ids", "last"])
def test_local_scheduler_equals_predict(rng, kind):
    model = {"float": float_model, "ids": ids_model, "last": last_model}[kind](rng)
    B, T = 90, 17
    if model.takes_ids:
        x = rng.integers(0, 13, (B, T))
    else:
        x = rng.standard_normal((B, T, model.input_size)).astype(np.float32)
    lengths = rng.integers(0, T + 1, B)
    # chunked along time and features too: merged, so each sequence runs whole
    xd = da.from_array(x, chunks=(20, 5) + ((3,) if x.ndim == 3 else ()))
    y = lfd.predict(model, xd, lengths=da.from_array(lengths, chunks=7), batch_size=25)
    assert y.chunks[0] == (25, 25, 25, 15) and y.dtype == np.float32
    got = y.compute(scheduler="threads")
    np.testing.assert_array_equal(got, per_chunk(model, x, lengths, 25))
    np.testing.assert_allclose(got, model.predict(x, lengths=lengths), rtol=0, atol=ATOL)
    # numpy inputs, no lengths, the input's own chunks
    got = lfd.predict(model, x, batch_size=40).compute(scheduler="sync")
    np.testing.assert_array_equal(got, per_chunk(model, x, None, 40))


def test_bad_input_is_refused_before_any_task(rng):
    model = float_model(rng)
    x = da.zeros((10, 5, 8), chunks=5, dtype=np.float32)
    with pytest.raises(lf.ShapeError, match=r"expected \(B, T, 8\)"):
        lfd.predict(model, da.zeros((10, 5, 7), chunks=5))
    with pytest.raises(lf.ShapeError):
        lfd.predict(model, da.zeros((10, 5), chunks=5))
    with pytest.raises(lf.DTypeError):
        lfd.predict(model, da.zeros((10, 5, 8), chunks=5, dtype=np.int32))
    with pytest.raises(lf.DTypeError):
        lfd.predict(ids_model(rng), da.zeros((10, 5), chunks=5, dtype=np.float32))
    with pytest.raises(lf.ShapeError, match="lengths"):
        lfd.predict(model, x, lengths=np.ones(9, int))
    with pytest.raises(lf.DTypeError):
        lfd.predict(model, x, lengths=np.ones(10))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(lf.InputError):
            lfd.predict(model, x, batch_size=bad)
    with pytest.raises(TypeError):
        lfd.predict("model.lfm", x)
    # values are checked by the tasks, with the engine's typed errors
    bad = np.zeros((10, 5, 8), np.float32)
    bad[7, 2, 1] = np.nan
    with pytest.raises(lf.NonFiniteError):
        lfd.predict(model, da.from_array(bad, chunks=5)).compute(scheduler="sync")
    with pytest.raises(lf.InputError):
        lfd.predict(model, x, lengths=np.full(10, 6)).compute(scheduler="sync")


# -- a real cluster: two worker processes on 127.0.0.1 -------------------------------------

_unpickled = {"n": 0}


def _count_unpickling() -> None:
    """Runs on each worker: count the models unpickled there from now on (unpickling calls
    Model.from_bytes; the function pickle names, _model_from_bytes, stays as it is)."""
    from lstm_fast.model import Model

    if "_original_from_bytes" not in Model.__dict__:
        Model._original_from_bytes = Model.from_bytes

        def counting(cls, data, **kw):
            _unpickled["n"] += 1
            return cls._original_from_bytes(data, **kw)

        Model.from_bytes = classmethod(counting)
    _unpickled["n"] = 0


def _unpickled_count() -> int:
    return _unpickled["n"]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       worker_dashboard_address=None, silence_logs=40)
    c = distributed.Client(cluster, timeout=60)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close(timeout=30)
        cluster.close(timeout=30)


def test_local_cluster_of_two_processes(rng, client, monkeypatch):
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in client.scheduler_info()["workers"])
    model = float_model(rng)
    pickled = []
    reduce = lf.Model.__reduce_ex__
    monkeypatch.setattr(lf.Model, "__reduce_ex__",
                        lambda self, p: pickled.append(p) or reduce(self, p))
    client.run(_count_unpickling)
    B, T = 600, 20
    x = rng.standard_normal((B, T, 8)).astype(np.float32)
    lengths = rng.integers(0, T + 1, B)
    xd = da.from_array(x, chunks=(50, T, 8))  # 12 chunks, 12 tasks
    y = lfd.predict(model, xd, lengths=lengths)
    got = client.compute(y).result(timeout=60)
    np.testing.assert_array_equal(got, per_chunk(model, x, lengths, 50))
    np.testing.assert_allclose(got, model.predict(x, lengths=lengths), rtol=0, atol=ATOL)
    # pickled once in this process, unpickled once in each worker, for 12 chunks
    assert len(pickled) == 1, pickled
    assert sorted(client.run(_unpickled_count).values()) == [1, 1]
    # scoring again with the same model does not send it again (a worker whose copy Dask's
    # memory manager dropped meanwhile fetches it again from the other worker)
    y2 = lfd.predict(model, da.from_array(x[:100], chunks=25), batch_size=50)
    np.testing.assert_array_equal(client.compute(y2).result(timeout=60),
                                  per_chunk(model, x[:100], None, 50))
    assert len(pickled) == 1, pickled
    assert max(client.run(_unpickled_count).values()) <= 2
    # a bad chunk fails its task with the engine's typed error, raised here
    bad = x[:100].copy()
    bad[60, 3, 2] = np.inf
    with pytest.raises(lf.NonFiniteError):
        client.compute(lfd.predict(model, da.from_array(bad, chunks=50))).result(timeout=60)
