"""Compare lstm_fast with torch.nn.LSTM and ONNX Runtime, single-threaded, on CPU.

Usage::

    python benches/compare.py [--quick] [--only NAME[,NAME...]] [--json PATH]

Every engine gets the same random float32 weights and inputs. Before timing,
the outputs of all engines are checked against torch (max abs difference must
be at most 1e-4). Timing interleaves the engines round by round (A, B, C, A,
B, C, ...) so that machine noise hits them alike; each round times a batch of
calls with :func:`time.perf_counter_ns` and records the per-call time. The
report gives the median per call over all rounds, with p10 and p90.

Peers are measured at their best: torch is timed with its default oneDNN
(mkldnn) RNN path and with mkldnn disabled, ONNX Runtime with ``run`` and with
pre-bound ``io_binding``; the summary table picks the faster variant of each
and says which one it was.
"""

from __future__ import annotations

import os

# Single thread for everyone; must be set before numpy / torch / BLAS load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from contextlib import AbstractContextManager  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from bench_common import (  # noqa: E402
    WORKLOADS,
    WORKLOADS_BY_NAME,
    FloatArray,
    LayerWeights,
    Workload,
    make_input,
    make_weights,
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOLERANCE = 1e-4
"""Maximum allowed abs difference between any engine's output and torch's."""
VERIFY_STEPS = 16
"""Number of consecutive frames checked for step workloads."""
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
"""onnx 1.23 writes IR version 14 by default, which ORT 1.31 rejects (max 13)."""

Engine = Literal["lstm_fast", "torch", "ort"]
ENGINES: tuple[Engine, ...] = ("lstm_fast", "torch", "ort")
ENGINE_LABELS: dict[Engine, str] = {"lstm_fast": "lstm_fast", "torch": "torch", "ort": "ORT"}
REFERENCE_VARIANT = "torch"


# --------------------------------------------------------------------------- #
# Engine variants
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Runner:
    """Closures that drive one engine variant on one workload.

    Attributes
    ----------
    call : callable
        Performs exactly one timed call (one step, or one whole sequence).
    output : callable
        Returns the output of the most recent call as a numpy array of shape
        ``(B, H)`` for step workloads or ``(B, T, H)`` for sequence workloads.
    """

    call: Callable[[], object]
    output: Callable[[], FloatArray]


@dataclass(frozen=True)
class Variant:
    """One way of running an engine (e.g. ORT via ``run`` or via io_binding).

    Attributes
    ----------
    engine : {"lstm_fast", "torch", "ort"}
        Engine family the variant belongs to.
    name : str
        Unique name, e.g. ``"ort[iobind]"``.
    tag : str
        Short label of the variant within its family, e.g. ``"iobind"``.
    build : callable
        ``build(buf)`` returns a fresh :class:`Runner` with zero initial state.
        ``buf`` is the input: shape ``(B, I)`` for step workloads, where it is
        re-read on every call (callers may overwrite it in place between calls),
        or ``(B, T, I)`` for sequence workloads.
    context : callable
        Returns the context manager every call must run under (entered once
        per timed batch, not once per call).
    """

    engine: Engine
    name: str
    tag: str
    build: Callable[[FloatArray], Runner]
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext


def _zeros(*shape: int) -> FloatArray:
    return np.zeros(shape, dtype=np.float32)


def _reshape_view(buf: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """Reshape without copying, so in-place writes to ``buf`` stay visible."""
    view = buf.reshape(shape)
    if not np.shares_memory(view, buf):
        raise ValueError("input buffer must be C-contiguous")
    return view


# ---- torch ----------------------------------------------------------------- #


def make_torch_lstm(weights: LayerWeights) -> torch.nn.LSTM:
    """Build a batch-first ``torch.nn.LSTM`` holding ``weights``.

    Parameters
    ----------
    weights : LayerWeights
        Weights in PyTorch layout.

    Returns
    -------
    torch.nn.LSTM
        The module, in eval mode with gradients disabled.
    """
    hidden_size, input_size = weights.w_hh.shape[1], weights.w_ih.shape[1]
    lstm = torch.nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)
    params = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    with torch.no_grad():
        for name, array in zip(params, weights, strict=True):
            # torch.tensor copies: the arrays may be read-only (lstm_fast freezes them).
            getattr(lstm, name).copy_(torch.tensor(array))
    return lstm.eval().requires_grad_(False)


@contextlib.contextmanager
def _torch_context(*, mkldnn: bool | None) -> Iterator[None]:
    """``torch.inference_mode()``, optionally forcing the oneDNN (mkldnn) flag.

    ``torch.backends.mkldnn.flags()`` is not used because it also resets the
    TF32 flag, which makes torch warn on CPU-only builds. (The stubs type the
    ``enabled`` attribute as its descriptor, hence the ``type: ignore``.)
    """
    previous = bool(torch.backends.mkldnn.enabled)
    if mkldnn is not None:
        torch.backends.mkldnn.enabled = mkldnn  # type: ignore[assignment]
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.backends.mkldnn.enabled = previous  # type: ignore[assignment]


def _torch_builder(workload: Workload, lstm: torch.nn.LSTM) -> Callable[[FloatArray], Runner]:
    batch, hidden = workload.batch, workload.hidden_size

    def build_step(buf: FloatArray) -> Runner:
        x = torch.from_numpy(_reshape_view(buf, (batch, 1, workload.input_size)))
        zeros = torch.zeros(1, batch, hidden)
        state = (zeros, zeros.clone())
        y = torch.empty(0)

        def call() -> object:
            nonlocal y, state
            y, state = lstm(x, state)
            return y

        return Runner(call=call, output=lambda: y[:, 0, :].numpy())

    def build_seq(buf: FloatArray) -> Runner:
        x = torch.from_numpy(buf)
        y = torch.empty(0)

        def call() -> object:
            nonlocal y
            y, _ = lstm(x)
            return y

        return Runner(call=call, output=lambda: y.numpy())

    return build_step if workload.mode == "step" else build_seq


def torch_variants(workload: Workload, weights: LayerWeights) -> list[Variant]:
    """Return the torch variants: default, and mkldnn disabled (if available).

    Parameters
    ----------
    workload : Workload
        The workload to run.
    weights : LayerWeights
        Shared weights.

    Returns
    -------
    list of Variant
        The first one is the reference used for output verification.
    """
    build = _torch_builder(workload, make_torch_lstm(weights))
    variants = [
        Variant(
            "torch",
            REFERENCE_VARIANT,
            "default",
            build,
            lambda: _torch_context(mkldnn=None),
        )
    ]
    if torch.backends.mkldnn.is_available():
        variants.append(
            Variant(
                "torch",
                "torch[no-mkldnn]",
                "no-mkldnn",
                build,
                lambda: _torch_context(mkldnn=False),
            )
        )
    return variants


# ---- ONNX Runtime ------------------------------------------------------------ #


def _torch_gates_to_onnx(array: FloatArray) -> FloatArray:
    """Reorder gate blocks along axis 0 from torch (i, f, g, o) to ONNX (i, o, f, c)."""
    i, f, g, o = np.split(array, 4, axis=0)
    return np.ascontiguousarray(np.concatenate([i, o, f, g], axis=0))


def build_onnx_lstm(weights: LayerWeights, seq_len: int, batch: int) -> onnx.ModelProto:
    """Build a single-node ONNX graph computing the LSTM with ``weights``.

    Parameters
    ----------
    weights : LayerWeights
        Weights in PyTorch layout and gate order.
    seq_len : int
        Sequence length ``T`` of input ``X`` (layout 0: ``X`` is ``[T, N, I]``).
    batch : int
        Batch size ``N``.

    Returns
    -------
    onnx.ModelProto
        Inputs ``X [T,N,I]``, ``initial_h [1,N,H]``, ``initial_c [1,N,H]``;
        outputs ``Y [T,1,N,H]``, ``Y_h [1,N,H]``, ``Y_c [1,N,H]``.
    """
    hidden, input_size = weights.w_hh.shape[1], weights.w_ih.shape[1]
    w = _torch_gates_to_onnx(weights.w_ih)[np.newaxis]
    r = _torch_gates_to_onnx(weights.w_hh)[np.newaxis]
    b = np.concatenate([_torch_gates_to_onnx(weights.b_ih), _torch_gates_to_onnx(weights.b_hh)])
    node = helper.make_node(
        "LSTM",
        inputs=["X", "W", "R", "B", "", "initial_h", "initial_c"],
        outputs=["Y", "Y_h", "Y_c"],
        hidden_size=hidden,
        layout=0,
    )

    def value(name: str, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        [node],
        "lstm",
        inputs=[
            value("X", [seq_len, batch, input_size]),
            value("initial_h", [1, batch, hidden]),
            value("initial_c", [1, batch, hidden]),
        ],
        outputs=[
            value("Y", [seq_len, 1, batch, hidden]),
            value("Y_h", [1, batch, hidden]),
            value("Y_c", [1, batch, hidden]),
        ],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(b[np.newaxis], "B"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="lstm_fast-benches",
    )
    onnx.checker.check_model(model)
    return model


def make_ort_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """Create a single-threaded, fully optimised CPU inference session.

    Parameters
    ----------
    model : onnx.ModelProto
        The model to load.

    Returns
    -------
    onnxruntime.InferenceSession
        The session.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _ort_run_builder(
    workload: Workload, session: ort.InferenceSession
) -> Callable[[FloatArray], Runner]:
    batch, hidden, inputs = workload.batch, workload.hidden_size, workload.input_size

    def build_step(buf: FloatArray) -> Runner:
        feed = {
            "X": _reshape_view(buf, (1, batch, inputs)),
            "initial_h": _zeros(1, batch, hidden),
            "initial_c": _zeros(1, batch, hidden),
        }
        fetch = ["Y_h", "Y_c"]

        def call() -> object:
            feed["initial_h"], feed["initial_c"] = session.run(fetch, feed)
            return feed["initial_h"]

        return Runner(call=call, output=lambda: feed["initial_h"][0])

    def build_seq(buf: FloatArray) -> Runner:
        feed = {
            "X": np.ascontiguousarray(buf.transpose(1, 0, 2)),  # [T, N, I]
            "initial_h": _zeros(1, batch, hidden),
            "initial_c": _zeros(1, batch, hidden),
        }
        fetch = ["Y"]
        y = _zeros(0)

        def call() -> object:
            nonlocal y
            (y,) = session.run(fetch, feed)
            return y

        return Runner(call=call, output=lambda: y[:, 0].transpose(1, 0, 2))

    return build_step if workload.mode == "step" else build_seq


def _ort_iobinding_builder(
    workload: Workload, session: ort.InferenceSession
) -> Callable[[FloatArray], Runner]:
    batch, hidden, inputs = workload.batch, workload.hidden_size, workload.input_size

    def ortvalue(array: FloatArray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(array)

    def build_step(buf: FloatArray) -> Runner:
        # Ping-pong: binding k reads state buffers k and writes state buffers 1-k,
        # so the state is carried with no copies and no re-binding per call.
        x = ortvalue(_reshape_view(buf, (1, batch, inputs)))
        h = [ortvalue(_zeros(1, batch, hidden)) for _ in range(2)]
        c = [ortvalue(_zeros(1, batch, hidden)) for _ in range(2)]
        bindings = []
        for k in (0, 1):
            binding = session.io_binding()
            binding.bind_ortvalue_input("X", x)
            binding.bind_ortvalue_input("initial_h", h[k])
            binding.bind_ortvalue_input("initial_c", c[k])
            binding.bind_ortvalue_output("Y_h", h[1 - k])
            binding.bind_ortvalue_output("Y_c", c[1 - k])
            bindings.append(binding)
        current = 0

        def call() -> object:
            nonlocal current
            session.run_with_iobinding(bindings[current])
            current ^= 1
            return None

        return Runner(call=call, output=lambda: h[current].numpy()[0])

    def build_seq(buf: FloatArray) -> Runner:
        x = ortvalue(np.ascontiguousarray(buf.transpose(1, 0, 2)))
        h0, c0 = ortvalue(_zeros(1, batch, hidden)), ortvalue(_zeros(1, batch, hidden))
        y = ortvalue(_zeros(workload.seq_len, 1, batch, hidden))
        binding = session.io_binding()
        binding.bind_ortvalue_input("X", x)
        binding.bind_ortvalue_input("initial_h", h0)
        binding.bind_ortvalue_input("initial_c", c0)
        binding.bind_ortvalue_output("Y", y)

        def call() -> object:
            session.run_with_iobinding(binding)
            return None

        return Runner(call=call, output=lambda: y.numpy()[:, 0].transpose(1, 0, 2))

    return build_step if workload.mode == "step" else build_seq


def ort_variants(workload: Workload, weights: LayerWeights) -> list[Variant]:
    """Return the ONNX Runtime variants: plain ``run`` and pre-bound ``io_binding``.

    Parameters
    ----------
    workload : Workload
        The workload to run.
    weights : LayerWeights
        Shared weights.

    Returns
    -------
    list of Variant
        Both variants share one session.
    """
    session = make_ort_session(build_onnx_lstm(weights, workload.seq_len, workload.batch))
    return [
        Variant("ort", "ort[run]", "run", _ort_run_builder(workload, session)),
        Variant("ort", "ort[iobind]", "iobind", _ort_iobinding_builder(workload, session)),
    ]


# ---- lstm_fast ------------------------------------------------------------- #


def import_lstm_fast() -> tuple[ModuleType | None, str]:
    """Try to import lstm_fast and pin it to one BLAS thread.

    Returns
    -------
    module : module or None
        The imported package, or ``None`` if it is not importable.
    status : str
        One-line status for the report.
    """
    try:
        lf = importlib.import_module("lstm_fast")
    except (ImportError, OSError) as exc:
        return None, f"lstm_fast: not importable ({type(exc).__name__}: {exc})"
    lf.set_num_threads(1)
    version = getattr(lf, "__version__", "unknown version")
    return lf, f"lstm_fast: {version} from {getattr(lf, '__file__', '?')}"


def lstm_fast_variants(lf: Any, workload: Workload, weights: LayerWeights) -> list[Variant]:
    """Return the lstm_fast variant: ``stream.step`` or ``model.predict``.

    Parameters
    ----------
    lf : module
        The imported ``lstm_fast`` package.
    workload : Workload
        The workload to run.
    weights : LayerWeights
        Shared weights.

    Returns
    -------
    list of Variant
        A single variant.
    """
    model = lf.Model.from_lstm_weights([tuple(weights)])

    def build_step(buf: FloatArray) -> Runner:
        stream = model.stream(batch=workload.batch)
        y: Any = None

        def call() -> object:
            nonlocal y
            y = stream.step(buf)
            return y

        return Runner(call=call, output=lambda: np.asarray(y))

    def build_seq(buf: FloatArray) -> Runner:
        y: Any = None

        def call() -> object:
            nonlocal y
            y = model.predict(buf)
            return y

        return Runner(call=call, output=lambda: np.asarray(y))

    build = build_step if workload.mode == "step" else build_seq
    return [Variant("lstm_fast", "lstm_fast", "", build)]


# --------------------------------------------------------------------------- #
# Verification and timing
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TimingConfig:
    """How much time to spend measuring.

    Attributes
    ----------
    budget_s : float
        Target time of the interleaved rounds per workload, all variants together.
    warmup_s : float
        Minimum warm-up time per variant (at least one call).
    batch_ms : float
        Target duration of one timed batch of calls.
    min_rounds : int
        Rounds to run even if that exceeds the budget (slow workloads).
    max_rounds : int
        Upper bound on rounds.
    """

    budget_s: float
    warmup_s: float
    batch_ms: float
    min_rounds: int
    max_rounds: int


DEFAULT_TIMING = TimingConfig(
    budget_s=2.5, warmup_s=0.1, batch_ms=5.0, min_rounds=3, max_rounds=2000
)
QUICK_TIMING = TimingConfig(
    budget_s=0.25, warmup_s=0.02, batch_ms=2.0, min_rounds=2, max_rounds=2000
)


@dataclass
class Prepared:
    """A variant with its runner, its input buffer and its verification result."""

    variant: Variant
    runner: Runner
    buf: FloatArray
    output: FloatArray
    calls_per_batch: int = 1
    per_call_ns: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class VariantResult:
    """Timing result of one variant on one workload (all times in ns per call)."""

    engine: Engine
    name: str
    tag: str
    calls_per_batch: int
    per_call_ns: list[float]
    max_abs_diff_vs_torch: float

    @property
    def median_ns(self) -> float:
        """Median per-call time over rounds."""
        return float(np.median(self.per_call_ns))

    @property
    def p10_ns(self) -> float:
        """10th percentile of per-call time over rounds."""
        return float(np.percentile(self.per_call_ns, 10))

    @property
    def p90_ns(self) -> float:
        """90th percentile of per-call time over rounds."""
        return float(np.percentile(self.per_call_ns, 90))


@dataclass(frozen=True)
class WorkloadResult:
    """All results for one workload."""

    workload: Workload
    variants: list[VariantResult]
    max_pairwise_diff: float
    failed: list[str]

    @property
    def agrees(self) -> bool:
        """Whether all engines' outputs agree within :data:`TOLERANCE`."""
        return self.max_pairwise_diff <= TOLERANCE

    def best(self, engine: Engine) -> VariantResult | None:
        """Return the variant of ``engine`` with the lowest median, if any."""
        own = [v for v in self.variants if v.engine == engine]
        return min(own, key=lambda v: v.median_ns) if own else None


def _prepare(variant: Variant, workload: Workload, x: FloatArray) -> Prepared:
    """Build a runner and record the output used for verification.

    For step workloads the runner steps through the ``VERIFY_STEPS`` frames of
    ``x`` (shape ``(B, VERIFY_STEPS, I)``) from a zero state and the output is
    ``(VERIFY_STEPS, B, H)``; it keeps its state and the last frame for timing.
    For sequence workloads it runs ``x`` once and the output is ``(B, T, H)``.
    """
    if workload.mode == "step":
        buf = np.zeros((workload.batch, workload.input_size), dtype=np.float32)
        runner = variant.build(buf)
        outputs = []
        with variant.context():
            for t in range(x.shape[1]):
                buf[...] = x[:, t, :]
                runner.call()
                outputs.append(np.array(runner.output(), dtype=np.float32))
        return Prepared(variant, runner, buf, np.stack(outputs))
    buf = x.copy()
    runner = variant.build(buf)
    with variant.context():
        runner.call()
        output = np.array(runner.output(), dtype=np.float32)
    return Prepared(variant, runner, buf, output)


def _time_batch(prepared: Prepared, calls: int) -> int:
    """Time ``calls`` consecutive calls; return the elapsed nanoseconds."""
    call = prepared.runner.call
    with prepared.variant.context():
        start = time.perf_counter_ns()
        for _ in itertools.repeat(None, calls):
            call()
        return time.perf_counter_ns() - start


def _warm_up(prepared: Prepared, warmup_ns: float) -> float:
    """Run calls for at least ``warmup_ns`` (and one call); return ns per call."""
    call = prepared.runner.call
    calls = 0
    with prepared.variant.context():
        start = time.perf_counter_ns()
        while True:
            call()
            calls += 1
            elapsed = time.perf_counter_ns() - start
            if elapsed >= warmup_ns:
                return elapsed / calls


def _max_abs_diff(a: FloatArray, b: FloatArray) -> float:
    if a.shape != b.shape:
        return math.inf
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def run_workload(workload: Workload, lf: ModuleType | None, timing: TimingConfig) -> WorkloadResult:
    """Verify and time all engine variants on one workload.

    Parameters
    ----------
    workload : Workload
        The workload.
    lf : module or None
        The ``lstm_fast`` package, or ``None`` to skip it.
    timing : TimingConfig
        Time budget.

    Returns
    -------
    WorkloadResult
        Per-variant timings and the verification result.
    """
    print(f"\n== {workload.name}: {workload.describe()} ==", flush=True)
    weights = make_weights(workload.input_size, workload.hidden_size, workload.seed)
    frames = VERIFY_STEPS if workload.mode == "step" else workload.seq_len
    x = make_input((workload.batch, frames, workload.input_size), workload.seed + 1)

    failed: list[str] = []
    prepared: list[Prepared] = []
    factories: list[tuple[Engine, Callable[[], list[Variant]]]] = [
        ("torch", lambda: torch_variants(workload, weights)),
        ("ort", lambda: ort_variants(workload, weights)),
    ]
    if lf is not None:
        factories.insert(0, ("lstm_fast", lambda: lstm_fast_variants(lf, workload, weights)))
    for engine, factory in factories:
        try:
            prepared.extend(_prepare(v, workload, x) for v in factory())
        except Exception as exc:
            if engine != "lstm_fast":
                raise
            # lstm_fast is under development: report and carry on with the peers.
            traceback.print_exc()
            print(f"  lstm_fast FAILED: {type(exc).__name__}: {exc}")
            failed.append(engine)

    # ---- verification --------------------------------------------------------
    reference = next(p.output for p in prepared if p.variant.name == REFERENCE_VARIANT)
    diffs = {p.variant.name: _max_abs_diff(p.output, reference) for p in prepared}
    pairwise = max(
        (_max_abs_diff(a.output, b.output) for a, b in itertools.combinations(prepared, 2)),
        default=0.0,
    )
    for p in prepared:
        if p.variant.name != REFERENCE_VARIANT:
            print(f"  max|Δ| {p.variant.name:<18} vs torch: {diffs[p.variant.name]:.3g}")
    verdict = "OK" if pairwise <= TOLERANCE else "MISMATCH"
    print(f"  agreement: max pairwise |Δ| = {pairwise:.3g} (tolerance {TOLERANCE:g}) {verdict}")

    # ---- warm-up and calibration ---------------------------------------------
    estimates = []
    for p in prepared:
        per_call = _warm_up(p, timing.warmup_s * 1e9)
        p.calls_per_batch = max(1, round(timing.batch_ms * 1e6 / per_call))
        estimates.append(per_call * p.calls_per_batch)
    rounds = math.ceil(timing.budget_s * 1e9 / sum(estimates))
    rounds = min(max(rounds, timing.min_rounds), timing.max_rounds)
    print(
        f"  timing {rounds} interleaved rounds (~{sum(estimates) * rounds / 1e9:.1f} s)", flush=True
    )

    # ---- interleaved rounds --------------------------------------------------
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for p in prepared:
                p.per_call_ns.append(_time_batch(p, p.calls_per_batch) / p.calls_per_batch)
    finally:
        if gc_was_enabled:
            gc.enable()

    results = [
        VariantResult(
            engine=p.variant.engine,
            name=p.variant.name,
            tag=p.variant.tag,
            calls_per_batch=p.calls_per_batch,
            per_call_ns=p.per_call_ns,
            max_abs_diff_vs_torch=diffs[p.variant.name],
        )
        for p in prepared
    ]
    result = WorkloadResult(workload, results, pairwise, failed)
    _print_details(result)
    return result


# --------------------------------------------------------------------------- #
# Reporting
# --------------------------------------------------------------------------- #


def format_time(ns: float | None) -> str:
    """Format a duration in nanoseconds with a human unit and 3 significant digits.

    Parameters
    ----------
    ns : float or None
        Duration in nanoseconds.

    Returns
    -------
    str
        E.g. ``"850 ns"``, ``"12.3 µs"``, ``"4.21 ms"``, ``"1.23 s"``, or ``"-"``.
    """
    if ns is None or not math.isfinite(ns):
        return "-"
    units = ((1e9, "s"), (1e6, "ms"), (1e3, "µs"))
    scale, unit = next(((s, u) for s, u in units if ns >= s), (1.0, "ns"))
    value = ns / scale
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print(" | ".join(cells))


def _print_details(result: WorkloadResult) -> None:
    rows = [
        [
            v.name,
            format_time(v.median_ns),
            format_time(v.p10_ns),
            format_time(v.p90_ns),
            str(v.calls_per_batch),
            str(len(v.per_call_ns)),
            "-" if v.name == REFERENCE_VARIANT else f"{v.max_abs_diff_vs_torch:.2g}",
        ]
        for v in result.variants
    ]
    headers = ["variant", "median", "p10", "p90", "calls/batch", "rounds", "max|Δ| vs torch"]
    print()
    _print_table(headers, rows)


def _ratio(numerator: VariantResult | None, denominator: VariantResult | None) -> str:
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator.median_ns / denominator.median_ns:.2f}x"


def _summary_cell(result: WorkloadResult, engine: Engine) -> str:
    best = result.best(engine)
    if best is None:
        return "failed" if engine in result.failed else "-"
    cell = format_time(best.median_ns)
    if sum(v.engine == engine for v in result.variants) > 1:
        cell += f" ({best.tag})"
    if not result.agrees and best.max_abs_diff_vs_torch > TOLERANCE:
        cell += " MISMATCH"
    return cell


def print_summary(results: Sequence[WorkloadResult]) -> None:
    """Print the final comparison table (median time per call).

    Parameters
    ----------
    results : sequence of WorkloadResult
        One entry per workload.
    """
    rows = []
    for r in results:
        lf_best = r.best("lstm_fast")
        rows.append(
            [
                r.workload.name,
                *(_summary_cell(r, engine) for engine in ENGINES),
                _ratio(r.best("torch"), lf_best),
                _ratio(r.best("ort"), lf_best),
            ]
        )
    headers = ["workload", *(ENGINE_LABELS[e] for e in ENGINES), "torch/lstm_fast", "ORT/lstm_fast"]
    print("\nMedian time per call, single thread (ratios > 1: lstm_fast is faster)")
    _print_table(headers, rows)


def environment(lf_status: str) -> dict[str, Any]:
    """Describe the machine and library versions.

    Parameters
    ----------
    lf_status : str
        Status line of the lstm_fast import.

    Returns
    -------
    dict
        JSON-serialisable description.
    """
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "lstm_fast": lf_status,
    }


def results_to_json(
    results: Sequence[WorkloadResult], timing: TimingConfig, env: dict[str, Any]
) -> dict[str, Any]:
    """Convert results to a JSON-serialisable dict with the raw per-round numbers.

    Parameters
    ----------
    results : sequence of WorkloadResult
        One entry per workload.
    timing : TimingConfig
        The timing configuration used.
    env : dict
        Output of :func:`environment`.

    Returns
    -------
    dict
        Times are in nanoseconds per call.
    """
    workloads: dict[str, Any] = {}
    for r in results:
        best = {
            engine: {"variant": b.name, "median_ns": b.median_ns}
            for engine in ENGINES
            if (b := r.best(engine)) is not None
        }
        workloads[r.workload.name] = {
            "workload": asdict(r.workload),
            "agrees": r.agrees,
            "max_pairwise_abs_diff": r.max_pairwise_diff,
            "tolerance": TOLERANCE,
            "failed": r.failed,
            "best": best,
            "variants": {
                v.name: {
                    "engine": v.engine,
                    "calls_per_batch": v.calls_per_batch,
                    "rounds": len(v.per_call_ns),
                    "median_ns": v.median_ns,
                    "p10_ns": v.p10_ns,
                    "p90_ns": v.p90_ns,
                    "max_abs_diff_vs_torch": v.max_abs_diff_vs_torch,
                    "per_call_ns": v.per_call_ns,
                }
                for v in r.variants
            },
        }
    return {"environment": env, "timing": asdict(timing), "workloads": workloads}


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
        Parsed arguments; ``only`` is a list of workload names.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="much shorter timing (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="workload(s) to run, comma-separated or repeated: " + ", ".join(WORKLOADS_BY_NAME),
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write raw numbers to PATH")
    parser.add_argument(
        "--no-lstm-fast",
        action="store_true",
        help="measure only the peers (torch, ORT), without importing lstm_fast",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="timed seconds per workload (default 2.5, or 0.25 with --quick)",
    )
    args = parser.parse_args(argv)
    names = [n for item in args.only or [] for n in item.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS_BY_NAME]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS_BY_NAME)}")
    args.only = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments.

    Returns
    -------
    int
        0 on success, 1 if some engine's output disagreed or lstm_fast failed.
    """
    args = parse_args(argv)
    timing = QUICK_TIMING if args.quick else DEFAULT_TIMING
    if args.budget is not None:
        timing = replace(timing, budget_s=args.budget)
    workloads = [WORKLOADS_BY_NAME[n] for n in args.only] if args.only else list(WORKLOADS)

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # raises if inter-op pool already started
        torch.set_num_interop_threads(1)
    ort.set_default_logger_severity(3)
    if args.no_lstm_fast:
        lf, lf_status = None, "lstm_fast: skipped (--no-lstm-fast)"
    else:
        lf, lf_status = import_lstm_fast()

    env = environment(lf_status)
    print(lf_status)
    print(
        f"torch {env['torch']} (threads={env['torch_num_threads']}), "
        f"onnxruntime {env['onnxruntime']}, numpy {env['numpy']}, CPU: {env['cpu']}"
    )

    results = [run_workload(w, lf, timing) for w in workloads]
    print_summary(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results_to_json(results, timing, env), indent=1) + "\n")
        print(f"\nraw numbers written to {args.json}")
    ok = all(r.agrees and not r.failed for r in results)
    if not ok:
        print("\nWARNING: some engines disagree beyond tolerance or failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
