"""The two input paths of the avx512 packed kernels, against the float64 oracle.

On the avx512 level the packed kernels read a chunk's inputs next to h. Where the engine
measured full-width 512-bit FMA pipes (``lstm_fast.blas_info()["fma_width"] == 512``), cells
whose step weights exceed 3/4 of the L2 project x by one GEMM per chunk instead, for batches of
at most ``LF_PROJECT_MAX_ROWS`` = 32 rows, also on two threads (batch halves, bidirectional
directions). ``LSTM_FAST_FMA_WIDTH`` forces the measurement, so both paths run on any machine:
the cells here (I = 1024, H = 256: 5 MB of LSTM weights, 3.9 MB of GRU) exceed 3/4 of any L2
up to 5 MB. On the other levels both widths take the same path, and must agree all the same.
"""

from __future__ import annotations

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast.spec import BidirectionalSpec, ModelSpec
from tests.helpers import cell_spec
from tests.reference import spec_forward

TOL = 1e-5
I, H = 1024, 256


@pytest.fixture(params=[256, 512])
def fma_width(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Models created in the test see this FMA width (read at lf_model_create)."""
    monkeypatch.setenv("LSTM_FAST_FMA_WIDTH", str(request.param))
    return request.param


def test_the_override_is_what_models_see(fma_width):
    assert lf.blas_info()["fma_width"] == fma_width


def test_the_measured_width_is_256_or_512(monkeypatch):
    monkeypatch.delenv("LSTM_FAST_FMA_WIDTH", raising=False)
    width = lf.blas_info()["fma_width"]
    assert width in (256, 512)
    if lf.blas_info()["best_isa"] != "avx512":
        assert width == 256


@pytest.mark.parametrize("B", [1, 4, 7, 8, 9, 31, 32, 33])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_before"])
def test_large_cells_on_both_input_paths(kind, B, fma_width, isa, rng):
    """Batches on both sides of 32 rows, two chunks carried in one stream."""
    spec = ModelSpec(layers=(cell_spec(rng, kind, I, H),))
    x = rng.standard_normal((B, 23, I)).astype(np.float32)
    stream = lf.Model(spec, isa=isa).stream(batch=B)
    y = np.concatenate([stream.run(x[:, :9]), stream.run(x[:, 9:])], axis=1)
    np.testing.assert_allclose(y, spec_forward(spec, x.astype(np.float64))[0], rtol=0, atol=TOL)


@pytest.mark.parametrize("B", [3, 16])
def test_two_threads_on_both_input_paths(B, fma_width, isa, rng):
    """A bidirectional LSTM (one direction per thread) over a GRU (batch halves, or the
    hidden-unit split at 3 rows): against the oracle and the one-thread run."""
    spec = ModelSpec(layers=(
        BidirectionalSpec(cell_spec(rng, "lstm", I, H), cell_spec(rng, "lstm", I, H)),
        cell_spec(rng, "gru", 2 * H, 3 * H)))
    x = rng.standard_normal((B, 40, I)).astype(np.float32)
    model = lf.Model(spec, isa=isa)
    one = model.predict(x)
    before = lf.get_num_threads()
    lf.set_num_threads(2)
    try:
        two = model.predict(x)
    finally:
        lf.set_num_threads(before)
    y_ref = spec_forward(spec, x.astype(np.float64))[0]
    np.testing.assert_allclose(two, y_ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(two, one, rtol=0, atol=4e-6)
