"""Compare lstm_fast with torch and ONNX Runtime, single-threaded, on CPU.

Usage::

    python benches/compare.py [--quick] [--only NAME[,NAME...]] [--json PATH]

Workloads (see ``bench_common.py``): a single LSTM layer (``step_*``, ``seq_*``)
and a single GRU layer (``gru_*``), both stepped with the state carried or run
on whole sequences; small LSTMs on chunks of 512 frames at batch 1 (``audio_*``,
``amp_1_32``: RTNeural's ground); 256 streams advanced one step per call
(``server_256``, to set against 256 calls of ``step_128_256``: the last column
gives the time per step and batch row); and a text classifier, Embedding -> 2-layer bidirectional
LSTM -> Linear on ``cat(h_n[-2], h_n[-1])``, timed from ids to logits with
fixed (``bilstm_cls_fixed``) or ragged (``bilstm_cls_ragged``: torch packs
the batch, ORT gets ``sequence_lens``, lstm_fast gets ``lengths``) lengths.
The ORT graphs are built with ``onnx.helper`` (one LSTM/GRU node per layer,
gates reordered to ONNX's, ``linear_before_reset=1`` for the GRU).

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
    AnyWorkload,
    ClassifierWorkload,
    FloatArray,
    IdArray,
    LayerWeights,
    Workload,
    make_classifier_inputs,
    make_classifier_state_dict,
    make_input,
    make_weights,
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

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
THREADS = 1  # set by --threads: the same thread count for every engine


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
        ``(B, H)`` for step workloads, ``(B, T, H)`` for sequence workloads, or
        the logits ``(B, classes)`` for classifier workloads.
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
        ``(B, T, I)`` for sequence workloads, or the int64 ids ``(B, T)`` for
        classifier workloads.
    context : callable
        Returns the context manager every call must run under (entered once
        per timed batch, not once per call).
    """

    engine: Engine
    name: str
    tag: str
    build: Callable[[np.ndarray], Runner]
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


def make_torch_rnn(weights: LayerWeights, cell: str = "lstm") -> torch.nn.LSTM | torch.nn.GRU:
    """Build a batch-first ``torch.nn.LSTM`` or ``torch.nn.GRU`` holding ``weights``.

    Parameters
    ----------
    weights : LayerWeights
        Weights in PyTorch layout.
    cell : {"lstm", "gru"}
        Which module to build.

    Returns
    -------
    torch.nn.LSTM or torch.nn.GRU
        The module, in eval mode with gradients disabled.
    """
    hidden_size, input_size = weights.w_hh.shape[1], weights.w_ih.shape[1]
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = module(input_size, hidden_size, num_layers=1, batch_first=True)
    params = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    with torch.no_grad():
        for name, array in zip(params, weights, strict=True):
            # torch.tensor copies: the arrays may be read-only (lstm_fast freezes them).
            getattr(rnn, name).copy_(torch.tensor(array))
    return rnn.eval().requires_grad_(False)


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


def _torch_builder(
    workload: Workload, rnn: torch.nn.LSTM | torch.nn.GRU
) -> Callable[[FloatArray], Runner]:
    batch, hidden = workload.batch, workload.hidden_size

    def build_step(buf: FloatArray) -> Runner:
        x = torch.from_numpy(_reshape_view(buf, (batch, 1, workload.input_size)))
        zeros = torch.zeros(1, batch, hidden)
        # LSTM: (h, c); GRU: h alone.
        state: Any = (zeros, zeros.clone()) if workload.cell == "lstm" else zeros
        y = torch.empty(0)

        def call() -> object:
            nonlocal y, state
            y, state = rnn(x, state)
            return y

        return Runner(call=call, output=lambda: y[:, 0, :].numpy())

    def build_seq(buf: FloatArray) -> Runner:
        x = torch.from_numpy(buf)
        y = torch.empty(0)

        def call() -> object:
            nonlocal y
            y, _ = rnn(x)
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
    build = _torch_builder(workload, make_torch_rnn(weights, workload.cell))
    return _torch_pair(build)


def _torch_pair(build: Callable[[Any], Runner]) -> list[Variant]:
    """The two torch variants (default, mkldnn off) sharing one builder."""
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


class TorchBiLSTMClassifier(torch.nn.Module):
    """Embedding -> bidirectional LSTM -> Linear on ``cat(h_n[-2], h_n[-1])``.

    ``forward(ids, lengths)`` packs the embedded batch with
    ``pack_padded_sequence(enforce_sorted=False)`` when ``lengths`` is given.
    """

    def __init__(self, workload: ClassifierWorkload) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(workload.vocab, workload.embed_dim)
        self.lstm = torch.nn.LSTM(
            workload.embed_dim,
            workload.hidden_size,
            num_layers=workload.num_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.fc = torch.nn.Linear(2 * workload.hidden_size, workload.num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x: Any = self.embedding(ids)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(x)
        return self.fc(torch.cat([h_n[-2], h_n[-1]], dim=1))


def make_torch_classifier(
    workload: ClassifierWorkload, state_dict: dict[str, FloatArray]
) -> TorchBiLSTMClassifier:
    """Build the torch classifier and load ``state_dict`` (numpy arrays) into it."""
    model = TorchBiLSTMClassifier(workload)
    model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()})
    return model.eval().requires_grad_(False)


def torch_classifier_variants(
    workload: ClassifierWorkload, state_dict: dict[str, FloatArray], lengths: IdArray | None
) -> list[Variant]:
    """Return the torch variants of the classifier (ids -> logits per call).

    Parameters
    ----------
    workload : ClassifierWorkload
        The workload to run.
    state_dict : dict of str to numpy.ndarray
        Shared weights.
    lengths : numpy.ndarray or None
        Sequence lengths (the batch is packed on every call), or ``None``.

    Returns
    -------
    list of Variant
        The first one is the reference used for output verification.
    """
    model = make_torch_classifier(workload, state_dict)
    lengths_t = None if lengths is None else torch.from_numpy(lengths)

    def build(buf: IdArray) -> Runner:
        ids = torch.from_numpy(buf)
        y = torch.empty(0)

        def call() -> object:
            nonlocal y
            y = model(ids, lengths_t)
            return y

        return Runner(call=call, output=lambda: y.numpy())

    return _torch_pair(build)


# ---- ONNX Runtime ------------------------------------------------------------ #


def _torch_gates_to_onnx(array: FloatArray, cell: str = "lstm") -> FloatArray:
    """Reorder gate blocks along axis 0 from torch to ONNX order.

    LSTM: (i, f, g, o) -> (i, o, f, c). GRU: (r, z, n) -> (z, r, h).
    """
    if cell == "gru":
        r, z, n = np.split(array, 3, axis=0)
        return np.ascontiguousarray(np.concatenate([z, r, n], axis=0))
    i, f, g, o = np.split(array, 4, axis=0)
    return np.ascontiguousarray(np.concatenate([i, o, f, g], axis=0))


def _onnx_rnn_initializers(
    directions: Sequence[LayerWeights], cell: str, prefix: str
) -> list[onnx.TensorProto]:
    """W ``[D, G*H, I]``, R ``[D, G*H, H]``, B ``[D, 2*G*H]`` named ``{prefix}W/R/B``."""
    w = np.stack([_torch_gates_to_onnx(d.w_ih, cell) for d in directions])
    r = np.stack([_torch_gates_to_onnx(d.w_hh, cell) for d in directions])
    b = np.stack(
        [
            np.concatenate([_torch_gates_to_onnx(d.b_ih, cell), _torch_gates_to_onnx(d.b_hh, cell)])
            for d in directions
        ]
    )
    return [
        numpy_helper.from_array(w, f"{prefix}W"),
        numpy_helper.from_array(r, f"{prefix}R"),
        numpy_helper.from_array(b, f"{prefix}B"),
    ]


def _onnx_value(name: str, shape: list[int], dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _onnx_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="lstm_fast-benches",
    )
    onnx.checker.check_model(model)
    return model


def _state_names(cell: str) -> tuple[list[str], list[str]]:
    """ONNX state inputs and the outputs that feed them: h (and c for an LSTM)."""
    if cell == "lstm":
        return ["initial_h", "initial_c"], ["Y_h", "Y_c"]
    return ["initial_h"], ["Y_h"]


def build_onnx_rnn(
    weights: LayerWeights, seq_len: int, batch: int, cell: str = "lstm"
) -> onnx.ModelProto:
    """Build a single-node ONNX graph computing the LSTM or GRU with ``weights``.

    Parameters
    ----------
    weights : LayerWeights
        Weights in PyTorch layout and gate order.
    seq_len : int
        Sequence length ``T`` of input ``X`` (layout 0: ``X`` is ``[T, N, I]``).
    batch : int
        Batch size ``N``.
    cell : {"lstm", "gru"}
        The operator; a GRU gets ``linear_before_reset=1`` (PyTorch's variant).

    Returns
    -------
    onnx.ModelProto
        Inputs ``X [T,N,I]``, ``initial_h [1,N,H]`` (and ``initial_c [1,N,H]``
        for an LSTM); outputs ``Y [T,1,N,H]``, ``Y_h [1,N,H]`` (and
        ``Y_c [1,N,H]``).
    """
    hidden, input_size = weights.w_hh.shape[1], weights.w_ih.shape[1]
    states, state_outputs = _state_names(cell)
    if cell == "lstm":
        node = helper.make_node(
            "LSTM",
            inputs=["X", "W", "R", "B", "", *states],
            outputs=["Y", *state_outputs],
            hidden_size=hidden,
            layout=0,
        )
    else:
        node = helper.make_node(
            "GRU",
            inputs=["X", "W", "R", "B", "", *states],
            outputs=["Y", *state_outputs],
            hidden_size=hidden,
            linear_before_reset=1,
            layout=0,
        )
    graph = helper.make_graph(
        [node],
        cell,
        inputs=[
            _onnx_value("X", [seq_len, batch, input_size]),
            *(_onnx_value(name, [1, batch, hidden]) for name in states),
        ],
        outputs=[
            _onnx_value("Y", [seq_len, 1, batch, hidden]),
            *(_onnx_value(name, [1, batch, hidden]) for name in state_outputs),
        ],
        initializer=_onnx_rnn_initializers([weights], cell, ""),
    )
    return _onnx_model(graph)


def _classifier_layer(sd: dict[str, FloatArray], layer: int) -> list[LayerWeights]:
    """Forward and reverse weights of one layer of the classifier's LSTM."""
    return [
        LayerWeights(
            *(
                sd[f"lstm.{name}_l{layer}{suffix}"]
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
        )
        for suffix in ("", "_reverse")
    ]


def build_onnx_classifier(
    workload: ClassifierWorkload, sd: dict[str, FloatArray]
) -> onnx.ModelProto:
    """Build the classifier as an ONNX graph (the layout ``torch.onnx.export`` produces).

    ``Gather`` (embedding) -> ``Transpose`` to ``[T, N, E]`` -> one bidirectional
    ``LSTM`` node per layer (with ``sequence_lens`` when the workload is ragged),
    ``Transpose(0, 2, 1, 3)`` + ``Reshape`` to ``[T, N, 2H]`` between layers ->
    the last layer's ``Y_h [2, N, H]`` transposed and reshaped to
    ``[N, 2H]`` = ``cat(h_n[-2], h_n[-1])`` -> ``Gemm`` with the Linear layer.

    Parameters
    ----------
    workload : ClassifierWorkload
        The workload (static shapes are taken from it).
    sd : dict of str to numpy.ndarray
        The PyTorch state dict (see :func:`bench_common.make_classifier_state_dict`).

    Returns
    -------
    onnx.ModelProto
        Inputs ``ids [N, T]`` int64 (and ``seq_lens [N]`` int32 when ragged);
        output ``logits [N, classes]``.
    """
    batch, seq_len, hidden = workload.batch, workload.seq_len, workload.hidden_size
    seq_lens = "seq_lens" if workload.ragged else ""
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["emb"], axis=0),  # [N, T, E]
        helper.make_node("Transpose", ["emb"], ["x0"], perm=[1, 0, 2]),  # [T, N, E]
    ]
    initializers = [
        numpy_helper.from_array(sd["embedding.weight"], "embedding"),
        numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "shape_tnf"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape_nf"),
        numpy_helper.from_array(sd["fc.weight"], "fc_weight"),
        numpy_helper.from_array(sd["fc.bias"], "fc_bias"),
    ]
    x = "x0"
    for layer in range(workload.num_layers):
        prefix = f"l{layer}_"
        initializers += _onnx_rnn_initializers(_classifier_layer(sd, layer), "lstm", prefix)
        last = layer == workload.num_layers - 1
        y = "" if last else f"{prefix}Y"  # [T, 2, N, H]
        nodes.append(
            helper.make_node(
                "LSTM",
                inputs=[x, f"{prefix}W", f"{prefix}R", f"{prefix}B", seq_lens],
                outputs=[y, f"{prefix}Y_h"],
                hidden_size=hidden,
                direction="bidirectional",
                layout=0,
            )
        )
        if not last:
            x = f"x{layer + 1}"
            nodes += [
                helper.make_node("Transpose", [y], [f"{prefix}Yt"], perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", [f"{prefix}Yt", "shape_tnf"], [x]),  # [T, N, 2H]
            ]
    h_n = f"l{workload.num_layers - 1}_Y_h"  # [2, N, H]: forward, reverse
    nodes += [
        helper.make_node("Transpose", [h_n], ["h_t"], perm=[1, 0, 2]),  # [N, 2, H]
        helper.make_node("Reshape", ["h_t", "shape_nf"], ["features"]),  # [N, 2H]
        helper.make_node("Gemm", ["features", "fc_weight", "fc_bias"], ["logits"], transB=1),
    ]
    inputs = [_onnx_value("ids", [batch, seq_len], TensorProto.INT64)]
    if workload.ragged:
        inputs.append(_onnx_value("seq_lens", [batch], TensorProto.INT32))
    graph = helper.make_graph(
        nodes,
        "bilstm_classifier",
        inputs=inputs,
        outputs=[_onnx_value("logits", [batch, workload.num_classes])],
        initializer=initializers,
    )
    return _onnx_model(graph)


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
    options.intra_op_num_threads = THREADS
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
    states, state_outputs = _state_names(workload.cell)

    def build_step(buf: FloatArray) -> Runner:
        feed = {"X": _reshape_view(buf, (1, batch, inputs))}
        feed.update((name, _zeros(1, batch, hidden)) for name in states)

        def call_lstm() -> object:
            feed["initial_h"], feed["initial_c"] = session.run(state_outputs, feed)
            return feed["initial_h"]

        def call_gru() -> object:
            (feed["initial_h"],) = session.run(state_outputs, feed)
            return feed["initial_h"]

        call = call_lstm if workload.cell == "lstm" else call_gru
        return Runner(call=call, output=lambda: feed["initial_h"][0])

    def build_seq(buf: FloatArray) -> Runner:
        feed = {"X": np.ascontiguousarray(buf.transpose(1, 0, 2))}  # [T, N, I]
        feed.update((name, _zeros(1, batch, hidden)) for name in states)
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
    states, state_outputs = _state_names(workload.cell)

    def ortvalue(array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(array)

    def build_step(buf: FloatArray) -> Runner:
        # Ping-pong: binding k reads state buffers k and writes state buffers 1-k,
        # so the state is carried with no copies and no re-binding per call.
        x = ortvalue(_reshape_view(buf, (1, batch, inputs)))
        # buffers[s][k]: state s (h, then c for an LSTM), ping-pong slot k.
        buffers = [[ortvalue(_zeros(1, batch, hidden)) for _ in range(2)] for _ in states]
        bindings = []
        for k in (0, 1):
            binding = session.io_binding()
            binding.bind_ortvalue_input("X", x)
            for name, output, pair in zip(states, state_outputs, buffers, strict=True):
                binding.bind_ortvalue_input(name, pair[k])
                binding.bind_ortvalue_output(output, pair[1 - k])
            bindings.append(binding)
        h = buffers[0]
        current = 0

        def call() -> object:
            nonlocal current
            session.run_with_iobinding(bindings[current])
            current ^= 1
            return None

        return Runner(call=call, output=lambda: h[current].numpy()[0])

    def build_seq(buf: FloatArray) -> Runner:
        x = ortvalue(np.ascontiguousarray(buf.transpose(1, 0, 2)))
        y = ortvalue(_zeros(workload.seq_len, 1, batch, hidden))
        binding = session.io_binding()
        binding.bind_ortvalue_input("X", x)
        for name in states:
            binding.bind_ortvalue_input(name, ortvalue(_zeros(1, batch, hidden)))
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
    model = build_onnx_rnn(weights, workload.seq_len, workload.batch, workload.cell)
    session = make_ort_session(model)
    return [
        Variant("ort", "ort[run]", "run", _ort_run_builder(workload, session)),
        Variant("ort", "ort[iobind]", "iobind", _ort_iobinding_builder(workload, session)),
    ]


def ort_classifier_variants(
    workload: ClassifierWorkload, state_dict: dict[str, FloatArray], lengths: IdArray | None
) -> list[Variant]:
    """Return the ONNX Runtime variants of the classifier: ``run`` and ``io_binding``.

    Parameters
    ----------
    workload : ClassifierWorkload
        The workload to run.
    state_dict : dict of str to numpy.ndarray
        Shared weights.
    lengths : numpy.ndarray or None
        Sequence lengths (fed as ``sequence_lens``), or ``None``.

    Returns
    -------
    list of Variant
        Both variants share one session.
    """
    session = make_ort_session(build_onnx_classifier(workload, state_dict))
    extra = {} if lengths is None else {"seq_lens": lengths.astype(np.int32)}
    fetch = ["logits"]

    def build_run(buf: IdArray) -> Runner:
        feed = {"ids": buf, **extra}
        y = _zeros(0)

        def call() -> object:
            nonlocal y
            (y,) = session.run(fetch, feed)
            return y

        return Runner(call=call, output=lambda: y)

    def build_iobind(buf: IdArray) -> Runner:
        binding = session.io_binding()
        for name, array in {"ids": buf, **extra}.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        y = ort.OrtValue.ortvalue_from_numpy(_zeros(workload.batch, workload.num_classes))
        binding.bind_ortvalue_output("logits", y)

        def call() -> object:
            session.run_with_iobinding(binding)
            return None

        return Runner(call=call, output=lambda: y.numpy())

    return [
        Variant("ort", "ort[run]", "run", build_run),
        Variant("ort", "ort[iobind]", "iobind", build_iobind),
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
    lf.set_num_threads(THREADS)
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
    if workload.cell == "lstm":
        model = lf.Model.from_lstm_weights([tuple(weights)])
    else:
        layer = lf.GRULayerSpec(*weights, reset_after=True)
        model = lf.Model(lf.ModelSpec(layers=(layer,), mask_semantics="torch"))

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


def lstm_fast_classifier_variants(
    lf: Any, state_dict: dict[str, FloatArray], lengths: IdArray | None
) -> list[Variant]:
    """Return the lstm_fast variant of the classifier: ``predict(ids, lengths=...)``.

    The model is converted from the state dict with
    ``spec_from_state_dict(sd, head="last")``, as a user would.

    Parameters
    ----------
    lf : module
        The imported ``lstm_fast`` package.
    state_dict : dict of str to numpy.ndarray
        Shared weights.
    lengths : numpy.ndarray or None
        Sequence lengths, or ``None`` (all sequences full length).

    Returns
    -------
    list of Variant
        A single variant.
    """
    from lstm_fast.converters.torch import spec_from_state_dict

    model = lf.Model(spec_from_state_dict(state_dict, head="last"))

    def build(buf: IdArray) -> Runner:
        y: Any = None

        def call() -> object:
            nonlocal y
            y = model.predict(buf, lengths=lengths)
            return y

        return Runner(call=call, output=lambda: np.asarray(y))

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
    settle_ms : float
        With more than one thread: idle time before each timed batch, so that the worker
        threads an engine left spinning (OpenMP, ONNX Runtime and OpenBLAS pools spin for a
        while after their work) have gone to sleep and do not take the cores of the engine
        being timed; then one untimed call wakes the timed engine's own threads and the
        idle core. Not timed, not counted in the budget.
    """

    budget_s: float
    warmup_s: float
    batch_ms: float
    min_rounds: int
    max_rounds: int
    settle_ms: float = 30.0


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
    buf: np.ndarray
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

    workload: AnyWorkload
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


def _prepare(variant: Variant, workload: AnyWorkload, x: np.ndarray) -> Prepared:
    """Build a runner and record the output used for verification.

    For step workloads the runner steps through the ``VERIFY_STEPS`` frames of
    ``x`` (shape ``(B, VERIFY_STEPS, I)``) from a zero state and the output is
    ``(VERIFY_STEPS, B, H)``; it keeps its state and the last frame for timing.
    For sequence workloads it runs ``x`` once and the output is ``(B, T, H)``
    (classifier workloads: ``x`` is the ids, the output the logits).
    """
    if isinstance(workload, Workload) and workload.mode == "step":
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


Factory = Callable[[], list[Variant]]


def _setup(
    workload: AnyWorkload, lf: ModuleType | None
) -> tuple[np.ndarray, list[tuple[Engine, Factory]]]:
    """Draw the workload's weights and input; return the input and the variant factories.

    The factories are ``(engine, factory)`` pairs, lstm_fast first when ``lf`` is given.
    """
    factories: list[tuple[Engine, Factory]] = []
    if isinstance(workload, ClassifierWorkload):
        sd = make_classifier_state_dict(workload)
        ids, lengths = make_classifier_inputs(workload)
        if lf is not None:
            factories.append(("lstm_fast", lambda: lstm_fast_classifier_variants(lf, sd, lengths)))
        factories += [
            ("torch", lambda: torch_classifier_variants(workload, sd, lengths)),
            ("ort", lambda: ort_classifier_variants(workload, sd, lengths)),
        ]
        return ids, factories
    weights = make_weights(workload.input_size, workload.hidden_size, workload.seed, workload.cell)
    frames = VERIFY_STEPS if workload.mode == "step" else workload.seq_len
    x = make_input((workload.batch, frames, workload.input_size), workload.seed + 1)
    if lf is not None:
        factories.append(("lstm_fast", lambda: lstm_fast_variants(lf, workload, weights)))
    factories += [
        ("torch", lambda: torch_variants(workload, weights)),
        ("ort", lambda: ort_variants(workload, weights)),
    ]
    return x, factories


def run_workload(
    workload: AnyWorkload, lf: ModuleType | None, timing: TimingConfig
) -> WorkloadResult:
    """Verify and time all engine variants on one workload.

    Parameters
    ----------
    workload : Workload or ClassifierWorkload
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
    x, factories = _setup(workload, lf)

    failed: list[str] = []
    prepared: list[Prepared] = []
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
                if THREADS > 1:
                    time.sleep(timing.settle_ms / 1e3)
                    _time_batch(p, 1)  # wakes this engine's threads (and the idle core)
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


def _per_row_step(result: WorkloadResult) -> str:
    """lstm_fast's median per time step and batch row (a chunk's frame, a server's stream)."""
    best = result.best("lstm_fast")
    if best is None:
        return "-"
    return format_time(best.median_ns / (result.workload.seq_len * result.workload.batch))


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
                _per_row_step(r),
            ]
        )
    headers = ["workload", *(ENGINE_LABELS[e] for e in ENGINES), "torch/lstm_fast", "ORT/lstm_fast",
               "lstm_fast per step·row"]
    print(
        "\nMedian time per call (one step, one sequence batch, or ids -> logits for one "
        f"classifier batch),\n{THREADS} thread(s) for every engine (ratios > 1: lstm_fast is "
        "faster)"
    )
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
        "--threads",
        type=int,
        default=1,
        help="threads for every engine (torch, ORT intra-op, lstm_fast); default 1",
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

    global THREADS
    THREADS = max(1, args.threads)
    torch.set_num_threads(THREADS)
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
