"""pytest-benchmark benchmarks of lstm_fast on the GRU and classifier workloads.

Run with ``pytest benches/ --benchmark-only``. Each workload is its own
benchmark group:

* ``gru_*``: a single PyTorch-style GRU layer (reset-after, gates r, z, n);
  step workloads time one ``Stream.step`` call with the state carried from call
  to call, sequence workloads one ``Model.predict`` call;
* ``bilstm_cls_*``: Embedding -> 2-layer bidirectional LSTM -> Linear on
  ``cat(h_n[-2], h_n[-1])``, converted with ``spec_from_state_dict(sd,
  head="last")``; one ``Model.predict(ids, lengths=...)`` call per batch.

lstm_fast is pinned to one thread (see also ``benches/conftest.py``). For the
comparison with torch and ONNX Runtime use ``benches/compare.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench_common import (
    CLASSIFIER_WORKLOADS,
    GRU_WORKLOADS,
    ClassifierWorkload,
    Workload,
    make_classifier_inputs,
    make_input,
    make_spec,
)

# exc_type=ImportError: also skip (not error) when the package exists but its extension
# fails to load, e.g. mid-rebuild.
lf = pytest.importorskip("lstm_fast", exc_type=ImportError)

GRU_STEP_WORKLOADS = [w for w in GRU_WORKLOADS if w.mode == "step"]
GRU_SEQ_WORKLOADS = [w for w in GRU_WORKLOADS if w.mode == "seq"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> None:
    """Pin lstm_fast's BLAS to one thread for every benchmark in this module."""
    lf.set_num_threads(1)


def _gru_model(workload: Workload) -> Any:
    """Build a one-layer GRU model with the workload's deterministic random weights."""
    return lf.Model(make_spec(workload))


def _workload_id(workload: Workload | ClassifierWorkload) -> str:
    return workload.name


@pytest.mark.parametrize("workload", GRU_STEP_WORKLOADS, ids=_workload_id)
def test_gru_step(benchmark: Any, workload: Workload) -> None:
    """One GRU ``stream.step(x_t)`` call, state carried between calls."""
    benchmark.group = workload.name
    benchmark.extra_info["workload"] = workload.describe()
    stream = _gru_model(workload).stream(batch=workload.batch)
    x_t = make_input((workload.batch, workload.input_size), workload.seed + 1)

    y_t = benchmark(stream.step, x_t)

    assert y_t.shape == (workload.batch, workload.hidden_size)


@pytest.mark.parametrize("workload", GRU_SEQ_WORKLOADS, ids=_workload_id)
def test_gru_sequence(benchmark: Any, workload: Workload) -> None:
    """One GRU ``model.predict(x)`` call on a whole (B, T, I) sequence."""
    benchmark.group = workload.name
    benchmark.extra_info["workload"] = workload.describe()
    model = _gru_model(workload)
    x = make_input((workload.batch, workload.seq_len, workload.input_size), workload.seed + 1)
    model.predict(x)  # warm-up: first call may allocate workspaces

    y = benchmark(model.predict, x)

    assert y.shape == (workload.batch, workload.seq_len, workload.hidden_size)


@pytest.mark.parametrize("workload", CLASSIFIER_WORKLOADS, ids=_workload_id)
def test_bilstm_classifier(benchmark: Any, workload: ClassifierWorkload) -> None:
    """One ``model.predict(ids, lengths=...)`` call: token ids (B, T) -> logits (B, classes)."""
    benchmark.group = workload.name
    benchmark.extra_info["workload"] = workload.describe()
    model = lf.Model(make_spec(workload))
    ids, lengths = make_classifier_inputs(workload)
    model.predict(ids, lengths=lengths)  # warm-up

    logits = benchmark(model.predict, ids, lengths=lengths)

    assert logits.shape == (workload.batch, workload.num_classes)
