"""pytest-benchmark benchmarks of lstm_fast on the standard LSTM workloads.

Run with ``pytest benches/ --benchmark-only``. Each workload is its own
benchmark group; step workloads time one ``Stream.step`` call with the state
carried from call to call, sequence workloads time one ``Model.predict`` call.
lstm_fast is pinned to one thread (see also ``benches/conftest.py``). For the
comparison with torch and ONNX Runtime use ``benches/compare.py``; GRU and the
bidirectional classifier are in ``benches/test_bench_family.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench_common import LSTM_WORKLOADS, Workload, make_input, make_spec

# exc_type=ImportError: also skip (not error) when the package exists but its extension
# fails to load, e.g. mid-rebuild.
lf = pytest.importorskip("lstm_fast", exc_type=ImportError)

STEP_WORKLOADS = [w for w in LSTM_WORKLOADS if w.mode == "step"]
SEQ_WORKLOADS = [w for w in LSTM_WORKLOADS if w.mode == "seq"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> None:
    """Pin lstm_fast's BLAS to one thread for every benchmark in this module."""
    lf.set_num_threads(1)


def _model(workload: Workload) -> Any:
    """Build an lstm_fast model with the workload's deterministic random weights."""
    return lf.Model(make_spec(workload))


def _workload_id(workload: Workload) -> str:
    return workload.name


@pytest.mark.parametrize("workload", STEP_WORKLOADS, ids=_workload_id)
def test_step(benchmark: Any, workload: Workload) -> None:
    """One ``stream.step(x_t)`` call, B=1, state carried between calls."""
    benchmark.group = workload.name
    benchmark.extra_info["workload"] = workload.describe()
    stream = _model(workload).stream(batch=workload.batch)
    x_t = make_input((workload.batch, workload.input_size), workload.seed + 1)

    y_t = benchmark(stream.step, x_t)

    assert y_t.shape == (workload.batch, workload.hidden_size)


@pytest.mark.parametrize("workload", SEQ_WORKLOADS, ids=_workload_id)
def test_sequence(benchmark: Any, workload: Workload) -> None:
    """One ``model.predict(x)`` call on a whole (B, T, I) sequence."""
    benchmark.group = workload.name
    benchmark.extra_info["workload"] = workload.describe()
    model = _model(workload)
    x = make_input((workload.batch, workload.seq_len, workload.input_size), workload.seed + 1)
    model.predict(x)  # warm-up: first call may allocate workspaces

    y = benchmark(model.predict, x)

    assert y.shape == (workload.batch, workload.seq_len, workload.hidden_size)
