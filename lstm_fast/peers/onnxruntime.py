"""The ONNX Runtime peer: the spec as an ONNX graph (built with ``onnx.helper``: one
LSTM/GRU/RNN node per recurrent layer, gates reordered to ONNX's) run by an InferenceSession.

Lengths go to the nodes' ``sequence_lens``. The graphs run are time-major and lean (no
Transpose, Squeeze or Identity node where the caller's view of an array does the same): predict's,
and the streams' (one for single steps, one for chunks), whose state inputs and outputs are fed
back through ping-pong buffers.

Quantized variants (``onnxruntime[int8]``, ``onnxruntime[int8-per-channel]``) pass each of
those graphs through ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights, one scale
per matrix or per output row): LSTM nodes become ``DynamicQuantizeLSTM`` and Dense MatMuls
integer MatMuls, activations quantized on the fly. It quantizes no GRU or RNN node: models with
those are unavailable in these variants. The calls take the same io-binding paths.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np

from ..spec import (
    AffineSpec,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    NormalizeSpec,
    SimpleRNNLayerSpec,
)
from .base import (
    FrameworkUnavailable,
    Peer,
    PeerStream,
    Quantization,
    _as_input,
    _cells_of,
    _gate_blocks,
)

__all__ = ["ONNX_IR_VERSION", "ONNX_OPSET", "OrtPeer", "build_onnx_model", "make_session",
           "quantize_onnx_model"]

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # onnx 1.2x writes newer IR versions than some onnxruntime builds read

#: Spec cell activation -> (ONNX RNN activation name, alpha, beta).
_ONNX_CELL_ACTS: dict[str, tuple[str, float | None, float | None]] = {
    "sigmoid": ("Sigmoid", None, None), "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None), "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5),
    "softsign": ("Softsign", None, None), "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
}

#: Spec gate order -> ONNX gate order, as indices of the spec's row blocks.
_ONNX_GATES = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}  # ifgo->iofc, rzn->zrh
_ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class _OnnxGraph:
    """A small helper that accumulates nodes and initializers with unique names."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: str | None = None,
           **attrs: Any) -> Any:
        outs = [out] if out is not None else [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _onnx_cell_attrs(cells: tuple[CellSpec, ...]) -> dict[str, Any]:
    """``activations`` (and alphas/betas) of an ONNX LSTM/GRU/RNN node; {} for defaults."""
    names: list[str] = []
    alphas: list[float] = []
    betas: list[float] = []
    for cell in cells:
        if isinstance(cell, LSTMLayerSpec):
            acts = (cell.recurrent_activation, cell.activation, cell.activation)
        elif isinstance(cell, GRULayerSpec):
            acts = (cell.recurrent_activation, cell.activation)
        else:
            acts = (cell.activation,)
        for a in acts:
            if a not in _ONNX_CELL_ACTS:
                raise FrameworkUnavailable(
                    f"onnxruntime: the ONNX {_ONNX_OPS[cell.kind]} operator has no activation "
                    f"{a!r} (it has {', '.join(sorted(_ONNX_CELL_ACTS))})")
            name, alpha, beta = _ONNX_CELL_ACTS[a]
            names.append(name)
            if alpha is not None:
                alphas.append(alpha)
            if beta is not None:
                betas.append(beta)
    defaults = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"],
                "rnn": ["Tanh"]}[cells[0].kind] * len(cells)
    attrs: dict[str, Any] = {}
    if names != defaults:
        attrs["activations"] = names
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _onnx_cell_weights(cell: CellSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """W [G*H, I], R [G*H, H] in ONNX gate order and B [2*G*H] = [Wb, Rb] (None: no bias)."""
    order = _ONNX_GATES[cell.kind]
    w = _gate_blocks(cell.w_ih, order)
    r = _gate_blocks(cell.w_hh, order)
    if isinstance(cell, GRULayerSpec):
        b_in, b_rec = cell.b_ih, cell.b_hh
    else:
        b_in, b_rec = cell.bias, None
    if b_in is None and b_rec is None:
        return w, r, None
    zeros = np.zeros(w.shape[0], dtype=np.float32)
    wb = zeros if b_in is None else _gate_blocks(b_in, order)
    rb = zeros if b_rec is None else _gate_blocks(b_rec, order)
    return w, r, np.concatenate([wb, rb])


def _onnx_dense_activation(g: _OnnxGraph, name: str, h: str) -> str:
    if name == "linear":
        return h
    simple = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign",
              "softplus": "Softplus", "elu": "Elu", "selu": "Selu", "exponential": "Exp"}
    if name in simple:
        return g.op(simple[name], [h])
    if name in ("softmax", "log_softmax"):
        return g.op("Softmax" if name == "softmax" else "LogSoftmax", [h], axis=-1)
    if name in ("hard_sigmoid", "hard_sigmoid_keras2"):
        return g.op("HardSigmoid", [h], alpha=1.0 / 6.0 if name == "hard_sigmoid" else 0.2,
                    beta=0.5)
    if name == "relu6":
        return g.op("Clip", [h, g.const("zero", np.float32(0.0)),
                             g.const("six", np.float32(6.0))])
    if name == "silu":
        return g.op("Mul", [h, g.op("Sigmoid", [h])])
    if name == "gelu":  # exact (erf) GELU: 0.5 x (1 + erf(x / sqrt 2))
        e = g.op("Erf", [g.op("Mul", [h, g.const("rsqrt2", np.float32(np.sqrt(0.5)))])])
        one_plus = g.op("Add", [e, g.const("one", np.float32(1.0))])
        return g.op("Mul", [g.op("Mul", [h, g.const("half", np.float32(0.5))]), one_plus])
    raise FrameworkUnavailable(f"onnxruntime: no Dense activation {name!r}")


def _onnx_merge(g: _OnnxGraph, mode: str, y: str, axis: int) -> str:
    """Merge the direction axis ``axis`` (size 2) of ``y`` with ``sum``/``ave``/``mul``."""
    a, b = g.op("Split", [y], n_out=2, axis=axis)
    m = g.op("Mul" if mode == "mul" else "Add", [a, b])
    if mode == "ave":
        m = g.op("Mul", [m, g.const("half", np.float32(0.5))])
    return g.op("Squeeze", [m, g.const("axes", np.array([axis], dtype=np.int64))])


def build_onnx_model(spec: ModelSpec, *, lengths: bool = False, stream: bool = False,
                     step: bool = False, time_major: bool = False) -> Any:
    """The spec as an ONNX graph (opset 17, layout 0 recurrent nodes).

    Parameters
    ----------
    spec : ModelSpec
        The model; must not use Keras masking or an LSTM projection.
    lengths : bool
        Add the input ``lengths`` [N] int32, fed to every node's ``sequence_lens``.
    stream : bool
        Add per recurrent layer k the inputs ``h0_k`` [1, N, H] (and ``c0_k`` for an LSTM)
        and the outputs ``hn_k`` (and ``cn_k``), to carry the state between calls; inputs
        and outputs are then time-major ([T, N, ...]), which spares the graph two Transpose
        nodes per call (the caller's swap of two axes is free for one step or one row).
        The stream graph is lean (no Squeeze or Identity node on the way out): the last
        recurrent layer's ``Y`` is the output ``y`` [T, 1, N, O] when nothing follows it,
        and when the last layer returns only its last step its ``hn_k`` is the output (the
        graph then has no ``y``).
    step : bool
        With ``stream``: a graph for one step (T = 1), whose recurrent layers pass on their
        ``Y_h`` ([1, N, H], the time-major output of one step) and compute no ``Y``; a model
        ending in a recurrent layer has no ``y`` (its last ``hn_k`` is the output).
    time_major : bool
        Time-major inputs and outputs without the state (implied by ``stream``), as lean as
        a stream's: a model ending in a one-direction recurrent layer outputs its ``Y``
        ([T, 1, N, O]) or ``Y_h`` ([1, N, O]) as ``y``.

    Returns
    -------
    onnx.ModelProto
        Input ``x`` [N, T, I] float32 or ``ids`` [N, T] int64; output ``y`` [N, T, O] (or
        [N, O] when a recurrent layer returns only its last step). T and N swap places in
        ``x``, ``ids`` and a sequence ``y`` with ``time_major`` or ``stream`` (see there for
        when ``y`` is [T, 1, N, O], [1, N, O] or absent).

    Raises
    ------
    FrameworkUnavailable
        When onnx is missing or the spec is not expressible in ONNX.
    """
    try:
        import onnx
    except ImportError as e:
        raise FrameworkUnavailable(f"onnx is not installed ({e})") from None
    if spec.uses_mask:
        raise FrameworkUnavailable(
            "onnxruntime: Keras masking (Masking or Embedding(mask_zero=True)) is not "
            "expressible in ONNX recurrent operators, which only take right padding "
            "(sequence_lens)")
    helper, tp = onnx.helper, onnx.TensorProto
    g = _OnnxGraph(onnx)
    time_major = time_major or stream
    graph_inputs = []
    if spec.takes_ids:
        graph_inputs.append(helper.make_tensor_value_info(
            "ids", tp.INT64, ["T", "N"] if time_major else ["N", "T"]))
        emb = spec.layers[0]
        ids_t = "ids" if time_major else g.op("Transpose", ["ids"], perm=[1, 0])  # [T, N]
        h = g.op("Gather", [g.const("embedding", emb.weight), ids_t], axis=0)  # [T, N, E]
    else:
        graph_inputs.append(helper.make_tensor_value_info(
            "x", tp.FLOAT, ["T" if time_major else "N", "N" if time_major else "T",
                            spec.input_size]))
        h = "x" if time_major else g.op("Transpose", ["x"], perm=[1, 0, 2])  # [T, N, I]
    seq_lens = ""
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", tp.INT32, ["N"]))
        seq_lens = "lengths"
    graph_outputs = []
    per_step = True  # False once a layer returned only its last step: h is [N, F]
    k = 0
    for L in spec.layers:
        if isinstance(L, EmbeddingSpec):
            continue
        if isinstance(L, DenseSpec):
            h = g.op("MatMul", [h, g.const("dense_wt", np.ascontiguousarray(L.weight.T))])
            if L.bias is not None:
                h = g.op("Add", [h, g.const("dense_b", L.bias)])
            h = _onnx_dense_activation(g, L.activation, h)
            continue
        if isinstance(L, AffineSpec):
            if L.scale is not None:
                h = g.op("Mul", [h, g.const("affine_scale", L.scale)])
            if L.shift is not None:
                h = g.op("Add", [h, g.const("affine_shift", L.shift)])
            h = _onnx_dense_activation(g, L.activation, h)
            continue
        if isinstance(L, NormalizeSpec):
            norm = g.op("ReduceL2", [h], axes=[-1], keepdims=1)  # opset 17: axes attribute
            norm = g.op("Max", [norm, g.const("eps", np.float32(L.epsilon))])
            h = g.op("Div", [h, norm])
            continue
        if not isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec,
                              BidirectionalSpec)):
            raise FrameworkUnavailable(f"onnxruntime: no equivalent of a {L.kind} layer")
        cells = _cells_of(L)
        f = cells[0]
        if isinstance(f, LSTMLayerSpec) and f.w_hr is not None:
            raise FrameworkUnavailable(
                "onnxruntime: the ONNX LSTM operator has no projection (proj_size / w_hr)")
        parts = [_onnx_cell_weights(c) for c in cells]
        inputs = [h, g.const("W", np.stack([p[0] for p in parts])),
                  g.const("R", np.stack([p[1] for p in parts]))]
        if L.go_backwards:  # forward over the reversed steps, outputs in processing order
            inputs[0] = g.op("Slice", [
                h, g.const("starts", np.array([-1], np.int64)),
                g.const("ends", np.array([np.iinfo(np.int64).min], np.int64)),
                g.const("axes", np.array([0], np.int64)),
                g.const("steps", np.array([-1], np.int64))])
        has_bias = any(p[2] is not None for p in parts)
        if has_bias:
            zero = np.zeros(2 * parts[0][0].shape[0], dtype=np.float32)
            inputs.append(g.const("B", np.stack([zero if p[2] is None else p[2]
                                                 for p in parts])))
        else:
            inputs.append("")
        inputs.append(seq_lens)
        lstm = isinstance(f, LSTMLayerSpec)
        outs = [g.name("Y"), g.name("Y_h")] + ([g.name("Y_c")] if lstm else [])
        # a time-major one-direction layer's outputs skip Squeeze (stream layers are such)
        lean = time_major and len(cells) == 1
        last = L is spec.layers[-1]
        if lean and step:
            outs[0] = ""  # one step: Y equals Y_h, already time-major [T=1, N, H]
        elif lean and last and not L.return_last:
            outs[0] = "y"  # the graph's output, [T, 1, N, H]
        if stream:
            inputs.append(f"h0_{k}")
            graph_inputs.append(helper.make_tensor_value_info(
                f"h0_{k}", tp.FLOAT, [1, "N", f.output_size]))
            outs[1] = f"hn_{k}"
            graph_outputs.append(helper.make_tensor_value_info(
                f"hn_{k}", tp.FLOAT, [1, "N", f.output_size]))
            if lstm:
                inputs.append(f"c0_{k}")
                graph_inputs.append(helper.make_tensor_value_info(
                    f"c0_{k}", tp.FLOAT, [1, "N", f.hidden_size]))
                outs[2] = f"cn_{k}"
                graph_outputs.append(helper.make_tensor_value_info(
                    f"cn_{k}", tp.FLOAT, [1, "N", f.hidden_size]))
        elif lean and last and L.return_last:
            outs[1] = "y"  # the graph's output, [1, N, H]
        while inputs and inputs[-1] == "":
            inputs.pop()
        attrs = _onnx_cell_attrs(cells)
        if isinstance(f, GRULayerSpec):
            attrs["linear_before_reset"] = int(f.reset_after)
        g.nodes.append(helper.make_node(
            _ONNX_OPS[f.kind], inputs, outs, hidden_size=f.hidden_size,
            direction="bidirectional" if len(cells) == 2 else "forward", **attrs))
        y, y_h = outs[0], outs[1]
        mode = getattr(L, "merge_mode", "concat")
        if not L.return_last:  # Y [T, D, N, H]
            if lean and step:
                h = y_h
            elif lean and last:
                h = y
            elif len(cells) == 1:
                h = g.op("Squeeze", [y, g.const("axes", np.array([1], np.int64))])
            elif mode == "concat":
                yt = g.op("Transpose", [y], perm=[0, 2, 1, 3])
                h = g.op("Reshape", [yt, g.const("shape", np.array([0, 0, -1], np.int64))])
            else:
                h = _onnx_merge(g, mode, y, 1)
        else:  # Y_h [D, N, H]
            per_step = False
            if lean and last:
                h = y_h  # [1, N, H]: "y", or the state output a stream reads as y
            elif len(cells) == 1:
                h = g.op("Squeeze", [y_h, g.const("axes", np.array([0], np.int64))])
            elif mode == "concat":
                yt = g.op("Transpose", [y_h], perm=[1, 0, 2])
                h = g.op("Reshape", [yt, g.const("shape", np.array([0, -1], np.int64))])
            else:
                h = _onnx_merge(g, mode, y_h, 0)
        k += 1
    y_shape: list[Any] = ["T", "N", spec.output_size] if per_step else ["N", spec.output_size]
    if time_major and h == "y":  # the last recurrent node's Y or Y_h
        y_shape = ["T", 1, "N", spec.output_size] if per_step else [1, "N", spec.output_size]
    elif stream and h.startswith("hn_"):  # the last layer's state is the output: no "y"
        y_shape = []
    elif time_major and g.nodes and h == g.nodes[-1].output[0]:
        g.nodes[-1].output[0] = "y"  # the last node writes the output (no Identity)
    elif time_major:
        g.op("Identity", [h], out="y")
    elif per_step:
        g.op("Transpose", [h], perm=[1, 0, 2], out="y")
        y_shape = ["N", "T", spec.output_size]
    else:
        g.op("Identity", [h], out="y")
    if y_shape:
        graph_outputs.insert(0, helper.make_tensor_value_info("y", tp.FLOAT, y_shape))
    graph = helper.make_graph(g.nodes, "lstm_fast_peer", graph_inputs, graph_outputs,
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="lstm_fast.peers")
    onnx.checker.check_model(model)
    return model


def quantize_onnx_model(model: Any, q: Quantization, label: str = "onnxruntime") -> Any:
    """``model`` through ``onnxruntime.quantization.quantize_dynamic`` (QInt8 weights, per
    output row when ``q.per_row``), each LSTM node checked to have become a
    ``DynamicQuantizeLSTM``.

    Raises
    ------
    FrameworkUnavailable
        When the graph has a GRU or RNN node (which ONNX Runtime does not quantize), or an
        LSTM node was left in float32.
    """
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise FrameworkUnavailable(f"{label}: onnxruntime.quantization cannot be imported "
                                   f"({e})") from None
    kinds = {n.op_type for n in model.graph.node}
    if kinds & {"GRU", "RNN"}:
        raise FrameworkUnavailable(
            f"{label}: quantize_dynamic quantizes only LSTM nodes (DynamicQuantizeLSTM), not "
            f"{' or '.join(sorted(kinds & {'GRU', 'RNN'}))}")
    lstms = sum(n.op_type == "LSTM" for n in model.graph.node)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its advice to pre-process the model, on every call
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "quantized.onnx")
            quantize_dynamic(model, path, per_channel=q.per_row, weight_type=QuantType.QInt8)
            out = onnx.load(path)
    finally:
        logging.disable(previous)
    done = sum(n.op_type == "DynamicQuantizeLSTM" for n in out.graph.node)
    if done != lstms:
        raise FrameworkUnavailable(f"{label}: quantize_dynamic quantized {done} of the "
                                   f"{lstms} LSTM nodes")
    return out


class OrtPeer(Peer):
    """An ONNX graph in an ``onnxruntime.InferenceSession``. Variants: ``"iobind"`` (default;
    calls go through pre-bound ``io_binding``s: ONNX Runtime's fastest way to call) and
    ``"run"`` (plain ``session.run`` with a feed dict). Quantized variants (LSTM models only;
    io-binding calls): ``"int8"`` (``quantize_dynamic``, QInt8 weights with one scale per
    matrix) and ``"int8-per-channel"`` (one scale per output row)."""

    name = "onnxruntime"
    variants = ("iobind", "run")
    quantized_variants = {"int8": Quantization("int8"),
                          "int8-per-channel": Quantization("int8", per_row=True)}

    def __init__(self, spec: ModelSpec, threads: int, variant: str | None = None) -> None:
        super().__init__(spec, threads, variant)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise FrameworkUnavailable(f"onnxruntime is not installed ({e})") from None
        if self.quantization is not None:
            kinds = {c.kind for L in spec.recurrent_layers for c in _cells_of(L)}
            if kinds - {"lstm"}:
                raise FrameworkUnavailable(
                    f"{self.label}: quantize_dynamic quantizes only LSTM (DynamicQuantizeLSTM),"
                    f" not {' or '.join(k.upper() for k in sorted(kinds - {'lstm'}))}")
        self._ort = ort
        self.version = str(ort.__version__)
        self._input = "ids" if spec.takes_ids else "x"
        self._sessions: dict[tuple[bool, ...], Any] = {}
        self._bound: tuple[Any, ...] | None = None  # predict's binding, see _predict
        self._session(lengths=False, time_major=True)  # fail now if the spec is not expressible

    def _session(self, *, lengths: bool, stream: bool = False, step: bool = False,
                 time_major: bool = False) -> Any:
        key = (lengths, stream, step, time_major)
        if key not in self._sessions:
            model = build_onnx_model(self.spec, lengths=lengths, stream=stream, step=step,
                                     time_major=time_major)
            if self.quantization is not None:
                model = quantize_onnx_model(model, self.quantization, self.label)
            self._sessions[key] = make_session(self._ort, model, self.threads, self.version)
        return self._sessions[key]

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        """Runs the time-major graph: the swap of x's first two axes is free for one row (the
        array is then bound as it is), a copy otherwise (as the Transpose node it spares)."""
        xt = np.ascontiguousarray(x.swapaxes(0, 1))
        feed = {self._input: xt}
        if lens is not None:
            feed["lengths"] = lens.astype(np.int32)
        session = self._session(lengths=lens is not None, time_major=True)
        if self.variant == "run":
            return np.ascontiguousarray(self._batch_first(session.run(["y"], feed)[0], x))
        bound = self._bound
        if (bound is None or bound[0] is not x or (bound[1] is None) != (lens is None)
                or (lens is not None and not np.array_equal(bound[1], lens))):
            # the first call of each input array runs plainly and binds the array (whose
            # memory ONNX Runtime then reads at every run; a transposed copy, refreshed at
            # every run, when it is not one row) and an output buffer
            y = session.run(["y"], feed)[0]
            value = self._ort.OrtValue.ortvalue_from_numpy
            binding = session.io_binding()
            for name, array in feed.items():
                binding.bind_ortvalue_input(name, value(array))
            out = np.empty_like(y)
            binding.bind_ortvalue_output("y", value(out))
            refresh = not np.shares_memory(xt, x)
            # feed: keeps the bound arrays alive
            self._bound = (x, lens, binding, self._batch_first(out, x), feed, refresh)
            return np.ascontiguousarray(self._batch_first(y, x))
        if bound[5]:
            np.copyto(bound[4][self._input], x.swapaxes(0, 1))
        session.run_with_iobinding(bound[2])
        return bound[3].copy()  # never a view of the bound buffer

    def _batch_first(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """A view of the time-major graph's output as (B, T, O), or (B, O)."""
        B, T = x.shape[:2]
        if self.spec.returns_sequences:
            return y.reshape(T, B, self.spec.output_size).swapaxes(0, 1)
        return y.reshape(B, self.spec.output_size)

    def stream(self, batch: int) -> PeerStream:
        return _OrtStream(self, self._check_streamable(batch))


def make_session(ort: Any, model: Any, threads: int, version: str = "") -> Any:
    """A sequential, fully optimised CPU ``InferenceSession`` of ``model`` on ``threads``
    intra-op threads; :class:`FrameworkUnavailable` when ONNX Runtime refuses the graph."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any ORT refusal means "cannot express"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FrameworkUnavailable(f"onnxruntime {version} cannot load the graph: "
                                   f"{first}") from None


class _OrtStream(PeerStream):
    """The stream graphs (one for single steps, one for chunks), state fed back.

    Variant ``"run"``: every call feeds the state and fetches the new one. Variant
    ``"iobind"``: the state lives in two fixed buffers per state tensor (slots 0 and 1); the
    first call of each chunk shape runs plainly and pre-binds two io_bindings over the input
    buffer, the output buffer and the slots: binding k reads the state from slot k and writes
    it to slot 1 - k (the ping-pong), so later calls copy only the input in and the output
    out, and never re-bind. When the model's output is its last layer's state (one step of a
    recurrent layer, or a layer returning only its last step), it is read from the slot just
    written.
    """

    def __init__(self, peer: OrtPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        self._names: list[tuple[str, str]] = []  # (state input, state output)
        zeros: list[np.ndarray] = []
        for k, L in enumerate(peer.spec.recurrent_layers):
            self._names.append((f"h0_{k}", f"hn_{k}"))
            zeros.append(np.zeros((1, batch, L.output_size), np.float32))
            if isinstance(L, LSTMLayerSpec):
                self._names.append((f"c0_{k}", f"cn_{k}"))
                zeros.append(np.zeros((1, batch, L.hidden_size), np.float32))
        self._inputs = [name for name, _ in self._names]
        # the feed of plain runs: the input and (variant "run") the state
        self._feed: dict[str, np.ndarray] = dict(zip(self._inputs, zeros, strict=True))
        self._plans: dict[bool, tuple[Any, list[str], int]] = {}  # step -> session, fetch, y
        # variant "iobind": per state, its two ping-pong slots; the state is in slot _current
        self._slots = [[z, np.zeros_like(z)] for z in zeros]
        self._current = 0
        self._bound: dict[tuple[Any, ...], _Bound] = {}
        self._step: _Bound | None = None  # the binding of a step of the usual shape
        self._step_shape: tuple[int, ...] = ()  # set by the first step: (B, I) or (B,)
        self._step_dtype = np.dtype(np.float32)
        self._plain = peer.variant == "run"
        self._sequences = peer.spec.returns_sequences

    def _run(self, chunk: np.ndarray, step: bool) -> np.ndarray:
        """``chunk`` time-major (T, B, ...); returns the output (B, T, O), or (B, O) for a
        step or a model whose output is only the last step; never a view of a bound
        buffer."""
        key = (step, chunk.shape, chunk.dtype)
        bound = self._bound.get(key)
        if bound is not None:
            np.copyto(bound.x, chunk)
            return bound.run(self)
        plan = self._plans.get(step)
        if plan is None:
            session = self._peer._session(lengths=False, stream=True, step=step)
            fetch = [out for _, out in self._names]
            if "y" in [o.name for o in session.get_outputs()]:
                fetch.append("y")
                y_index = len(fetch) - 1
            else:  # the output is the last recurrent layer's state
                y_index = fetch.index([out for out in fetch if out.startswith("hn_")][-1])
            plan = self._plans[step] = (session, fetch, y_index)
        session, fetch, y_index = plan
        if step and chunk.shape[1] == self.batch and not self._step_shape:
            # later steps of this shape and dtype take step()'s short path
            self._step_shape, self._step_dtype = chunk.shape[1:], chunk.dtype
        feed = self._feed
        chunk = feed[self._peer._input] = np.ascontiguousarray(chunk)
        if self._peer.variant == "run":
            outs = session.run(fetch, feed)
            feed.update(zip(self._inputs, outs, strict=False))  # the state the next call feeds
            return self._shaped(outs[y_index], chunk.shape[0], step).copy()  # not the state
        feed.update(zip(self._inputs, [pair[self._current] for pair in self._slots],
                        strict=True))
        outs = session.run(fetch, feed)
        self._current ^= 1
        for pair, state in zip(self._slots, outs, strict=False):
            np.copyto(pair[self._current], state)
        bound = _Bound(self, session, chunk, outs[y_index], fetch[y_index], step)
        self._bound[key] = bound
        if step and chunk.shape[1:] == self._step_shape and chunk.dtype == self._step_dtype:
            self._step = bound
        return self._shaped(outs[y_index], chunk.shape[0], step).copy()

    def _shaped(self, y: np.ndarray, steps: int, step: bool) -> np.ndarray:
        """A view of the graph's output as the call returns it: (B, T, O) (a copy of it is
        C-contiguous), or (B, O) for a step or a model whose output is only the last step."""
        size = self._peer.spec.output_size
        if self._sequences and not step:
            return y.reshape(steps, self.batch, size).swapaxes(0, 1)
        return y.reshape(self.batch, size)

    def step(self, x_t: np.ndarray) -> np.ndarray:
        if (type(x_t) is np.ndarray and x_t.shape == self._step_shape
                and x_t.dtype == self._step_dtype):  # the usual call: no checks to redo
            bound = self._step
            if bound is not None:  # variant "iobind"
                bound.x_step[...] = x_t
                k = self._current
                run, binding, out = bound.calls[k]
                run(binding, None)
                self._current = k ^ 1
                return out.copy()  # never a view of a bound buffer
            if self._plain:  # variant "run"
                session, fetch, y_index = self._plans[True]
                feed = self._feed
                feed[self._peer._input] = x_t[None]
                outs = session.run(fetch, feed)
                feed.update(zip(self._inputs, outs, strict=False))  # the next call's state
                return self._shaped(outs[y_index], 1, True).copy()  # not the state
        return self._run(_as_input(self._peer.spec, x_t, 2)[None], step=True)

    def run(self, chunk: np.ndarray) -> np.ndarray:
        chunk = _as_input(self._peer.spec, chunk)
        return self._run(chunk.swapaxes(0, 1), step=False)  # the stream graphs are time-major


class _Bound:
    """A chunk shape's two pre-bound io_bindings (see :class:`_OrtStream`): the input buffer
    ``x`` and, per slot the state is read from, the view of the buffer the output lands in."""

    def __init__(self, stream: _OrtStream, session: Any, x: np.ndarray, y: np.ndarray,
                 y_name: str, step: bool) -> None:
        value = stream._peer._ort.OrtValue.ortvalue_from_numpy  # shares the array's memory
        self.session = session
        self.x = np.array(x)  # a fresh, writable copy
        self.x_step = self.x[0]  # a step's (B, ...) view
        self.dtype = self.x.dtype
        steps = x.shape[0]
        slots = [[value(a) for a in pair] for pair in stream._slots]
        x_value = value(self.x)
        y_buf = None if y_name != "y" else np.empty_like(y)
        self.bindings = []
        self.outputs = []  # outputs[k]: where the output is after running bindings[k]
        for k in (0, 1):
            binding = session.io_binding()
            binding.bind_ortvalue_input(stream._peer._input, x_value)
            if y_buf is not None:
                binding.bind_ortvalue_output("y", value(y_buf))
            for (name_in, name_out), pair in zip(stream._names, slots, strict=True):
                binding.bind_ortvalue_input(name_in, pair[k])
                binding.bind_ortvalue_output(name_out, pair[1 - k])
            self.bindings.append(binding)
            if y_buf is not None:
                out = y_buf
            else:
                index = [n for _, n in stream._names].index(y_name)
                out = stream._slots[index][1 - k]
            self.outputs.append(stream._shaped(out, steps, step))
        self._keep = (x_value, slots)  # the OrtValues the bindings use
        # calls[k]: run(binding, None) runs bindings[k]; the session's C++ object is called
        # directly when this onnxruntime exposes it (its Python method only forwards there)
        inner = getattr(session, "_sess", None)
        if inner is not None and all(hasattr(b, "_iobinding") for b in self.bindings):
            self.calls = [(inner.run_with_iobinding, b._iobinding, out)
                          for b, out in zip(self.bindings, self.outputs, strict=True)]
        else:
            self.calls = [(session.run_with_iobinding, b, out)
                          for b, out in zip(self.bindings, self.outputs, strict=True)]

    def run(self, stream: _OrtStream) -> np.ndarray:
        k = stream._current
        run, binding, out = self.calls[k]
        run(binding, None)
        stream._current = k ^ 1
        return out.copy()  # never a view of a bound buffer


PEER = OrtPeer
