"""The same model run by other frameworks ("peers"), for ``lstm-fast bench --compare``.

:func:`build_peer` turns a :class:`~lstm_fast.spec.ModelSpec` into a runnable equivalent in
PyTorch (``torch.nn`` modules), ONNX Runtime (an ONNX graph built with ``onnx.helper``) or
Keras 3 (Keras layers holding the spec's weights). Every peer takes and returns what
:meth:`lstm_fast.Model.predict` does: batch-first inputs, (B, T, I) float32 features or
(B, T) integer ids, and (B, T, O) outputs ((B, O) when a recurrent layer returns only its
last step).

The frameworks are imported lazily (Keras takes seconds to import). When a framework is not
installed, or cannot express the spec (an activation it lacks, an LSTM projection in ONNX,
Keras masking in torch, ...), :func:`build_peer` raises
:class:`~lstm_fast.verify.FrameworkUnavailable` saying what is missing.

Masks. ``lengths`` (right-padded batches) map to packed sequences (torch), ``sequence_lens``
(ONNX) and a boolean mask (Keras). Those give the masked steps of a plain recurrent layer
PyTorch's output 0 (torch, ONNX) or Keras's repeated last output (Keras); the peers convert
to the spec's ``mask_semantics`` (a forward fill of the output, or Keras's
``zero_output_for_mask=True``), which is exact because the layers after the last recurrent one
act on each step alone.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._checks import check_lengths
from .errors import InputError
from .spec import (
    AffineSpec,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    MaskingSpec,
    ModelSpec,
    NormalizeSpec,
    SimpleRNNLayerSpec,
)
from .verify import FrameworkUnavailable

__all__ = [
    "FrameworkUnavailable",
    "Peer",
    "PeerStream",
    "available_peers",
    "build_peer",
]

PEER_NAMES = ("torch", "onnxruntime", "keras")


# --------------------------------------------------------------------------- #
# Interface
# --------------------------------------------------------------------------- #


class PeerStream:
    """Stateful inference in a peer framework: the state after each call starts the next.

    Create with :meth:`Peer.stream`. Streams start from the zero state.
    """

    batch: int

    def step(self, x_t: np.ndarray) -> np.ndarray:
        """Advance one step: ``x_t`` (B, I) floats or (B,) ids -> (B, O)."""
        raise NotImplementedError

    def run(self, chunk: np.ndarray) -> np.ndarray:
        """Advance T steps: ``chunk`` (B, T, I) or (B, T) ids -> (B, T, O), or (B, O) when a
        recurrent layer returns only its last step."""
        raise NotImplementedError


class Peer:
    """A :class:`ModelSpec` rebuilt in another framework. Create with :func:`build_peer`.

    Attributes
    ----------
    name : str
        ``"torch"``, ``"onnxruntime"`` or ``"keras"``.
    version : str
        The framework's version.
    spec : ModelSpec
        The model this peer runs.
    threads : int
        Intra-op threads the framework was told to use.
    """

    name: str = ""
    version: str = ""

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        self.spec = spec
        self.threads = threads

    def __repr__(self) -> str:
        kinds = ", ".join(L.kind for L in self.spec.layers)
        return f"<{type(self).__name__} {self.name} {self.version} [{kinds}]>"

    def predict(self, x: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Run whole sequences, like :meth:`lstm_fast.Model.predict`.

        Parameters
        ----------
        x : ndarray, (B, T, I) floats or (B, T) integer ids
            Batch-first inputs.
        lengths : ndarray of int, (B,), optional
            Valid steps of each right-padded sequence.

        Returns
        -------
        ndarray, float32
            (B, T, O), or (B, O) when a recurrent layer returns only its last step.

        Raises
        ------
        FrameworkUnavailable
            When the framework cannot run this model with ``lengths``.
        """
        x = _as_input(self.spec, x)
        lens = None
        if lengths is not None:
            _check_lengths_supported(self.spec, self.name)
            lens = _as_lengths(lengths, x.shape[0], x.shape[1])
        y = self._predict(x, lens)
        if lens is not None and self.packs_lengths and _fill_after_lengths(self.spec):
            y = _forward_fill(y, lens)
        return y

    #: Lengths run as packed sequences (outputs 0 past each length), so Keras-semantics specs
    #: need their masked outputs filled in afterwards.
    packs_lengths = True

    def _predict(self, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def stream(self, batch: int) -> PeerStream:
        """A stateful stream of ``batch`` sequences starting from the zero state.

        Raises
        ------
        FrameworkUnavailable
            When the model reads its input backwards (Bidirectional, ``go_backwards``) or the
            framework cannot stream it.
        """
        raise NotImplementedError

    def _check_streamable(self, batch: int) -> int:
        if not self.spec.streamable:
            raise FrameworkUnavailable(
                "this model has a layer that reads its input backwards (Bidirectional or "
                "go_backwards), so it cannot stream")
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        return int(batch)


def available_peers() -> tuple[str, ...]:
    """The peer names :func:`build_peer` knows (installed or not).

    Returns
    -------
    tuple of str
        ``("torch", "onnxruntime", "keras")``.
    """
    return PEER_NAMES


def build_peer(name: str, spec: ModelSpec, *, threads: int = 1) -> Peer:
    """Rebuild ``spec`` in the framework ``name``.

    Parameters
    ----------
    name : {"torch", "onnxruntime", "keras"}
        The framework (``"ort"`` is accepted for ``"onnxruntime"``).
    spec : ModelSpec
        The model.
    threads : int
        Intra-op threads for the framework (``torch.set_num_threads`` for torch and for Keras
        on the torch backend, ``intra_op_num_threads`` for ONNX Runtime).

    Returns
    -------
    Peer

    Raises
    ------
    FrameworkUnavailable
        When the framework is not installed or cannot express the spec; the message says why.
    ValueError
        For an unknown ``name`` or a bad ``threads``.
    """
    key = name.strip().lower()
    key = {"ort": "onnxruntime"}.get(key, key)
    if key not in PEER_NAMES:
        raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(PEER_NAMES)}")
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    threads = int(threads)
    if key == "torch":
        return _TorchPeer(spec, threads)
    if key == "onnxruntime":
        return _OrtPeer(spec, threads)
    return _KerasPeer(spec, threads)


# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _as_input(spec: ModelSpec, x: Any, ndim_floats: int = 3) -> np.ndarray:
    """``x`` as contiguous int64 ids or float32 features (no copy when already so)."""
    if spec.takes_ids:
        arr = np.ascontiguousarray(x, dtype=np.int64)
        if arr.ndim != ndim_floats - 1:
            raise ValueError(f"expected ids with {ndim_floats - 1} dimensions, got shape "
                             f"{arr.shape}")
        return arr
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != ndim_floats or arr.shape[-1] != spec.input_size:
        want = "(B, T, I)" if ndim_floats == 3 else "(B, I)"
        raise ValueError(f"expected x of shape {want} with I = {spec.input_size}, got "
                         f"{arr.shape}")
    return arr


def _as_lengths(lengths: Any, batch: int, steps: int) -> np.ndarray:
    arr = check_lengths(lengths, batch)  # the checks Model.predict applies
    if batch and arr.max() > steps:
        raise InputError(f"lengths must be in [0, {steps}]")
    return arr.astype(np.int64)


def _last_recurrent(spec: ModelSpec) -> LayerSpec:
    return spec.recurrent_layers[-1]


def _fill_after_lengths(spec: ModelSpec) -> bool:
    """True when, under ``lengths``, Keras-semantics outputs differ from packed-sequence ones:
    the final output is a sequence and the last recurrent layer is a plain (not
    Bidirectional) one, whose masked steps repeat its last valid output."""
    return (spec.mask_semantics == "keras" and spec.returns_sequences
            and _last_recurrent(spec).kind != "bidirectional")


def _forward_fill(y: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Repeat ``y[b, lengths[b] - 1]`` over the steps ``t >= lengths[b]`` (Keras semantics);
    sequences of length 0 are left alone (Keras outputs 0 there, as packed sequences do)."""
    T = y.shape[1]
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    idx = np.where((t >= L) & (L > 0), L - 1, t)
    return np.take_along_axis(y, idx[:, :, None], axis=1)


def _check_lengths_supported(spec: ModelSpec, framework: str) -> None:
    if any(getattr(L, "go_backwards", False) for L in spec.layers):
        raise FrameworkUnavailable(
            f"{framework}: lengths with a go_backwards layer (which reads the padding first) "
            "are not expressible")


def _gate_blocks(a: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    """Reorder the equal row blocks of ``a`` (axis 0) to ``order``."""
    blocks = np.split(np.asarray(a, dtype=np.float32), len(order), axis=0)
    return np.ascontiguousarray(np.concatenate([blocks[k] for k in order], axis=0))


def _cells_of(L: LayerSpec) -> tuple[CellSpec, ...]:
    if isinstance(L, BidirectionalSpec):
        return (L.forward, L.backward)
    return (L,)  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# torch
# --------------------------------------------------------------------------- #


def _torch_dense_activation(torch: Any, name: str) -> Any:
    F = torch.nn.functional
    table = {
        "linear": None, "relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid,
        "hard_sigmoid_keras2": lambda v: torch.clamp(0.2 * v + 0.5, 0.0, 1.0),
        "softsign": F.softsign, "softplus": F.softplus, "elu": F.elu, "selu": F.selu,
        "silu": F.silu, "gelu": F.gelu, "exponential": torch.exp,
        "softmax": lambda v: torch.softmax(v, dim=-1),
        "log_softmax": lambda v: torch.log_softmax(v, dim=-1),
    }
    if name not in table:
        raise FrameworkUnavailable(f"torch: no Dense activation {name!r}")
    return table[name]


def _torch_rnn_module(torch: Any, L: LayerSpec) -> Any:
    """One torch recurrent module (bidirectional when ``L`` is) holding the spec's weights."""
    nn = torch.nn
    cells = _cells_of(L)
    bi = len(cells) == 2
    f = cells[0]
    ract = getattr(f, "recurrent_activation", "sigmoid")
    if f.kind == "rnn":
        if f.activation not in ("tanh", "relu"):
            raise FrameworkUnavailable(f"torch: nn.RNN has no activation {f.activation!r} "
                                       "(only tanh and relu)")
    elif f.activation != "tanh" or ract != "sigmoid":
        raise FrameworkUnavailable(
            f"torch: nn.{f.kind.upper()} only has activation tanh and recurrent_activation "
            f"sigmoid, not {f.activation!r}/{ract!r}")
    if isinstance(f, GRULayerSpec) and not f.reset_after:
        raise FrameworkUnavailable("torch: nn.GRU only has reset_after=True (a GRU with "
                                   "reset_after=False is not expressible)")
    size, hidden = f.input_size, f.hidden_size
    if isinstance(f, LSTMLayerSpec):
        proj = f.output_size if f.w_hr is not None else 0
        m = nn.LSTM(size, hidden, batch_first=True, bidirectional=bi, proj_size=proj)
    elif isinstance(f, GRULayerSpec):
        m = nn.GRU(size, hidden, batch_first=True, bidirectional=bi)
    else:
        m = nn.RNN(size, hidden, batch_first=True, bidirectional=bi, nonlinearity=f.activation)
    for cell, sfx in zip(cells, ("_l0", "_l0_reverse"), strict=False):
        rows = cell.w_ih.shape[0]
        zeros = np.zeros(rows, dtype=np.float32)
        if isinstance(cell, GRULayerSpec):
            b_ih, b_hh = cell.b_ih, cell.b_hh
        else:
            b_ih, b_hh = cell.bias, None
        named = {"weight_ih": cell.w_ih, "weight_hh": cell.w_hh,
                 "bias_ih": zeros if b_ih is None else b_ih,
                 "bias_hh": zeros if b_hh is None else b_hh}
        if isinstance(cell, LSTMLayerSpec) and cell.w_hr is not None:
            named["weight_hr"] = cell.w_hr
        for key, value in named.items():
            getattr(m, key + sfx).data.copy_(torch.tensor(np.asarray(value, np.float32)))
    m.requires_grad_(False)
    m.eval()
    return m


def _torch_merge(torch: Any, mode: str, a: Any, b: Any) -> Any:
    if mode == "concat":
        return torch.cat([a, b], dim=-1)
    if mode == "sum":
        return a + b
    if mode == "ave":
        return (a + b) * 0.5
    return a * b


class _TorchPeer(Peer):
    name = "torch"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        try:
            import torch
        except ImportError as e:
            raise FrameworkUnavailable(f"torch is not installed ({e})") from None
        if spec.uses_mask:
            raise FrameworkUnavailable(
                "torch has no equivalent of Keras masking (Masking or "
                "Embedding(mask_zero=True)): torch only masks right padding, via lengths")
        self._torch = torch
        self.version = str(torch.__version__)
        torch.set_num_threads(threads)
        nn = torch.nn
        self._stages: list[tuple[LayerSpec, Any, Any]] = []
        for L in spec.layers:
            if isinstance(L, EmbeddingSpec):
                mod = nn.Embedding.from_pretrained(torch.tensor(np.asarray(L.weight)),
                                                   freeze=True)
                self._stages.append((L, mod, None))
            elif isinstance(L, DenseSpec):
                lin = nn.Linear(L.input_size, L.output_size, bias=L.bias is not None)
                lin.weight.data.copy_(torch.tensor(np.asarray(L.weight)))
                if L.bias is not None:
                    lin.bias.data.copy_(torch.tensor(np.asarray(L.bias)))
                lin.requires_grad_(False)
                self._stages.append((L, lin, _torch_dense_activation(torch, L.activation)))
            elif isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec,
                                BidirectionalSpec)):
                self._stages.append((L, _torch_rnn_module(torch, L), None))
            elif isinstance(L, AffineSpec):
                arrays = tuple(None if a is None else torch.tensor(np.asarray(a))
                               for a in (L.scale, L.shift))
                self._stages.append((L, arrays, _torch_dense_activation(torch, L.activation)))
            elif isinstance(L, NormalizeSpec):
                self._stages.append((L, None, None))
            else:
                raise FrameworkUnavailable(f"torch: no equivalent of a {L.kind} layer")

    def _tensor(self, x: np.ndarray) -> Any:
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays
            x = x.copy()
        return self._torch.from_numpy(x)

    def _forward(self, h: Any, lengths: Any, states: list[Any] | None) -> Any:
        """Run the stages; ``states`` (one per recurrent layer) is read and updated."""
        T = h.shape[1]
        k = 0
        for L, mod, act in self._stages:
            if isinstance(L, EmbeddingSpec):
                h = mod(h)
            elif isinstance(L, DenseSpec):
                h = mod(h)
                if act is not None:
                    h = act(h)
            elif isinstance(L, AffineSpec):
                scale, shift = mod
                h = h if scale is None else h * scale
                h = h if shift is None else h + shift
                h = h if act is None else act(h)
            elif isinstance(L, NormalizeSpec):
                h = self._torch.nn.functional.normalize(h, dim=-1, eps=L.epsilon)
            else:
                state = states[k] if states is not None else None
                h, new_state = self._recurrent(L, mod, h, lengths, state, T)
                if states is not None:
                    states[k] = new_state
                k += 1
        return h

    def _recurrent(self, L: Any, mod: Any, h: Any, lengths: Any, state: Any,
                   T: int) -> tuple[Any, Any]:
        torch = self._torch
        if getattr(L, "go_backwards", False):
            h = torch.flip(h, dims=(1,))
        if lengths is not None:
            rnn = torch.nn.utils.rnn
            packed = rnn.pack_padded_sequence(h, lengths, batch_first=True,
                                              enforce_sorted=False)
            out, new_state = mod(packed, state)
            out = rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
        else:
            out, new_state = mod(h, state)
        bi = isinstance(L, BidirectionalSpec)
        if L.return_sequences:
            if bi and L.merge_mode != "concat":
                half = out.shape[-1] // 2
                out = _torch_merge(torch, L.merge_mode, out[..., :half], out[..., half:])
            return out, new_state
        h_n = new_state[0] if isinstance(new_state, tuple) else new_state
        if bi:
            return _torch_merge(torch, L.merge_mode, h_n[-2], h_n[-1]), new_state
        return h_n[-1], new_state

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        torch = self._torch
        if lens is not None and lens.size and lens.min() < 1:
            raise FrameworkUnavailable("torch: packed sequences need every length >= 1")
        with torch.inference_mode():
            return self._forward(self._tensor(x), None if lens is None
                                 else torch.from_numpy(lens), None).numpy()

    def stream(self, batch: int) -> PeerStream:
        return _TorchStream(self, self._check_streamable(batch))


class _TorchStream(PeerStream):
    def __init__(self, peer: _TorchPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        torch = peer._torch
        self._states: list[Any] = []
        with torch.inference_mode():
            for L in peer.spec.recurrent_layers:
                h = torch.zeros(1, batch, L.output_size)
                if isinstance(L, LSTMLayerSpec):
                    self._states.append((h, torch.zeros(1, batch, L.hidden_size)))
                else:
                    self._states.append(h)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        peer = self._peer
        with peer._torch.inference_mode():
            return peer._forward(peer._tensor(chunk), None, self._states).numpy()

    def step(self, x_t: np.ndarray) -> np.ndarray:
        x_t = _as_input(self._peer.spec, x_t, 2)
        y = self._run(x_t[:, None])
        return y[:, 0] if y.ndim == 3 else y

    def run(self, chunk: np.ndarray) -> np.ndarray:
        return self._run(_as_input(self._peer.spec, chunk))


# --------------------------------------------------------------------------- #
# ONNX Runtime
# --------------------------------------------------------------------------- #

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


def build_onnx_model(spec: ModelSpec, *, lengths: bool = False, stream: bool = False) -> Any:
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

    Returns
    -------
    onnx.ModelProto
        Input ``x`` [N, T, I] float32 or ``ids`` [N, T] int64; output ``y`` [N, T, O] (or
        [N, O] when a recurrent layer returns only its last step). T and N swap places in
        ``x``, ``ids`` and a sequence ``y`` with ``stream=True``.

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
    graph_inputs = []
    if spec.takes_ids:
        graph_inputs.append(helper.make_tensor_value_info(
            "ids", tp.INT64, ["T", "N"] if stream else ["N", "T"]))
        emb = spec.layers[0]
        ids_t = "ids" if stream else g.op("Transpose", ["ids"], perm=[1, 0])  # [T, N]
        h = g.op("Gather", [g.const("embedding", emb.weight), ids_t], axis=0)  # [T, N, E]
    else:
        graph_inputs.append(helper.make_tensor_value_info(
            "x", tp.FLOAT, ["T" if stream else "N", "N" if stream else "T", spec.input_size]))
        h = "x" if stream else g.op("Transpose", ["x"], perm=[1, 0, 2])  # [T, N, I]
    seq_lens = ""
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("lengths", tp.INT32, ["N"]))
        seq_lens = "lengths"
    graph_outputs = []
    time_major = True  # False once a layer returned only its last step: h is [N, F]
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
        if L.return_sequences:  # Y [T, D, N, H]
            if len(cells) == 1:
                h = g.op("Squeeze", [y, g.const("axes", np.array([1], np.int64))])
            elif mode == "concat":
                yt = g.op("Transpose", [y], perm=[0, 2, 1, 3])
                h = g.op("Reshape", [yt, g.const("shape", np.array([0, 0, -1], np.int64))])
            else:
                h = _onnx_merge(g, mode, y, 1)
        else:  # Y_h [D, N, H]
            time_major = False
            if len(cells) == 1:
                h = g.op("Squeeze", [y_h, g.const("axes", np.array([0], np.int64))])
            elif mode == "concat":
                yt = g.op("Transpose", [y_h], perm=[1, 0, 2])
                h = g.op("Reshape", [yt, g.const("shape", np.array([0, -1], np.int64))])
            else:
                h = _onnx_merge(g, mode, y_h, 0)
        k += 1
    if time_major and stream:
        g.op("Identity", [h], out="y")
        y_shape: list[Any] = ["T", "N", spec.output_size]
    elif time_major:
        g.op("Transpose", [h], perm=[1, 0, 2], out="y")
        y_shape = ["N", "T", spec.output_size]
    else:
        g.op("Identity", [h], out="y")
        y_shape = ["N", spec.output_size]
    graph_outputs.insert(0, helper.make_tensor_value_info("y", tp.FLOAT, y_shape))
    graph = helper.make_graph(g.nodes, "lstm_fast_peer", graph_inputs, graph_outputs,
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="lstm_fast.peers")
    onnx.checker.check_model(model)
    return model


class _OrtPeer(Peer):
    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise FrameworkUnavailable(f"onnxruntime is not installed ({e})") from None
        self._ort = ort
        self.version = str(ort.__version__)
        self._input = "ids" if spec.takes_ids else "x"
        self._sessions: dict[tuple[bool, bool], Any] = {}
        self._session(lengths=False, stream=False)  # fail now if the spec is not expressible

    def _session(self, *, lengths: bool, stream: bool) -> Any:
        key = (lengths, stream)
        if key not in self._sessions:
            model = build_onnx_model(self.spec, lengths=lengths, stream=stream)
            ort = self._ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            try:
                self._sessions[key] = ort.InferenceSession(
                    model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - any ORT refusal means "cannot express"
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise FrameworkUnavailable(f"onnxruntime {self.version} cannot load the "
                                           f"graph: {first}") from None
        return self._sessions[key]

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        feed = {self._input: x}
        if lens is not None:
            feed["lengths"] = lens.astype(np.int32)
        return self._session(lengths=lens is not None, stream=False).run(["y"], feed)[0]

    def stream(self, batch: int) -> PeerStream:
        return _OrtStream(self, self._check_streamable(batch))


class _OrtStream(PeerStream):
    """The stream graph, state fed back. The first call of each chunk shape runs plainly and
    pre-binds two io_bindings over fixed buffers (ONNX Runtime's fastest way to call): binding
    k reads the state from slot k and writes it to slot 1 - k, so later calls copy only the
    input in and the output out, and never re-bind."""

    def __init__(self, peer: _OrtPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        self._session = peer._session(lengths=False, stream=True)
        self._names: list[tuple[str, str]] = []  # (state input, state output)
        self._zeros: list[np.ndarray] = []
        for k, L in enumerate(peer.spec.recurrent_layers):
            self._names.append((f"h0_{k}", f"hn_{k}"))
            self._zeros.append(np.zeros((1, batch, L.output_size), np.float32))
            if isinstance(L, LSTMLayerSpec):
                self._names.append((f"c0_{k}", f"cn_{k}"))
                self._zeros.append(np.zeros((1, batch, L.hidden_size), np.float32))
        self._key: tuple[Any, ...] | None = None
        self._slots: list[list[np.ndarray]] = []  # per state: the two ping-pong buffers
        self._bindings: list[Any] = []
        self._current = 0

    def _state(self) -> list[np.ndarray]:
        if not self._slots:
            return self._zeros
        return [pair[self._current] for pair in self._slots]

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        chunk = chunk.swapaxes(0, 1)  # the stream graph is time-major
        key = (chunk.shape, chunk.dtype)
        if key == self._key:
            np.copyto(self._x, chunk)
            self._session.run_with_iobinding(self._bindings[self._current])
            self._current ^= 1
            return self._batch_first(self._y)
        feed = {self._peer._input: np.ascontiguousarray(chunk)}
        feed.update((name, value) for (name, _), value in zip(self._names, self._state(),
                                                              strict=True))
        y, *states = self._session.run(["y", *(out for _, out in self._names)], feed)
        self._prebind(chunk, y, states)
        self._key = key
        return self._batch_first(y)

    @staticmethod
    def _batch_first(y: np.ndarray) -> np.ndarray:
        return (y.swapaxes(0, 1) if y.ndim == 3 else y).copy()  # never a view of a bound buffer

    def _prebind(self, chunk: np.ndarray, y: np.ndarray, states: list[np.ndarray]) -> None:
        value = self._peer._ort.OrtValue.ortvalue_from_numpy  # shares the array's memory
        self._x = np.ascontiguousarray(chunk).copy()
        self._y = np.empty_like(y)
        self._slots = [[np.ascontiguousarray(s, np.float32).copy(), np.empty_like(s)]
                       for s in states]
        self._current = 0
        x, out = value(self._x), value(self._y)
        slots = [[value(a) for a in pair] for pair in self._slots]
        self._bindings = []
        for k in (0, 1):
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(self._peer._input, x)
            binding.bind_ortvalue_output("y", out)
            for (name_in, name_out), pair in zip(self._names, slots, strict=True):
                binding.bind_ortvalue_input(name_in, pair[k])
                binding.bind_ortvalue_output(name_out, pair[1 - k])
            self._bindings.append(binding)

    def step(self, x_t: np.ndarray) -> np.ndarray:
        x_t = _as_input(self._peer.spec, x_t, 2)
        y = self._run(x_t[:, None])
        return y[:, 0] if y.ndim == 3 else y

    def run(self, chunk: np.ndarray) -> np.ndarray:
        return self._run(_as_input(self._peer.spec, chunk))


# --------------------------------------------------------------------------- #
# Keras
# --------------------------------------------------------------------------- #


def _keras_activation(keras: Any, name: str) -> Any:
    if name == "hard_sigmoid_keras2":  # Keras 1/2's hard_sigmoid; Keras 3's is x/6 + 0.5
        def hard_sigmoid_keras2(v: Any) -> Any:
            return keras.ops.clip(v * 0.2 + 0.5, 0.0, 1.0)
        return hard_sigmoid_keras2
    return name  # every other spec activation is a Keras 3 name with the same meaning


def _keras_cell_weights(cell: CellSpec) -> list[np.ndarray]:
    """The cell's weights in Keras layout: kernel (I, G*u), recurrent (u, G*u)[, bias]."""
    if isinstance(cell, GRULayerSpec):
        order = (1, 0, 2)  # r, z, n -> z, r, h
        w = [_gate_blocks(cell.w_ih, order).T, _gate_blocks(cell.w_hh, order).T]
        if cell.b_ih is None and cell.b_hh is None:
            return w
        zeros = np.zeros(cell.w_ih.shape[0], dtype=np.float32)
        b_in = _gate_blocks(zeros if cell.b_ih is None else cell.b_ih, order)
        b_rec = _gate_blocks(zeros if cell.b_hh is None else cell.b_hh, order)
        if cell.reset_after:
            return [*w, np.stack([b_in, b_rec])]
        return [*w, b_in + b_rec]  # reset-before: Keras's single bias holds both
    w = [np.asarray(cell.w_ih).T, np.asarray(cell.w_hh).T]  # LSTM blocks i,f,c,o = i,f,g,o
    return w if cell.bias is None else [*w, np.asarray(cell.bias)]


def _keras_cell_layer(keras: Any, cell: CellSpec, *, zero_masked: bool, stateful: bool,
                      go_backwards: bool) -> Any:
    # zero_output_for_mask on a last-step layer would also zero its last output
    zero_masked = zero_masked and cell.return_sequences
    common = dict(activation=_keras_activation(keras, cell.activation),
                  return_sequences=cell.return_sequences, go_backwards=go_backwards,
                  stateful=stateful, zero_output_for_mask=zero_masked,
                  use_bias=len(_keras_cell_weights(cell)) == 3)
    if isinstance(cell, LSTMLayerSpec):
        if cell.w_hr is not None:
            raise FrameworkUnavailable("keras: keras.layers.LSTM has no projection "
                                       "(proj_size / w_hr)")
        return keras.layers.LSTM(
            cell.hidden_size, unit_forget_bias=False,
            recurrent_activation=_keras_activation(keras, cell.recurrent_activation), **common)
    if isinstance(cell, GRULayerSpec):
        return keras.layers.GRU(
            cell.hidden_size, reset_after=cell.reset_after,
            recurrent_activation=_keras_activation(keras, cell.recurrent_activation), **common)
    return keras.layers.SimpleRNN(cell.hidden_size, **common)


def _keras_layers(keras: Any, spec: ModelSpec, batch: int | None) -> list[Any]:
    """One built Keras layer per spec layer, holding its weights (stateful with a batch)."""
    stateful = batch is not None
    zero_masked = spec.mask_semantics == "torch"
    out = []
    for L in spec.layers:
        if isinstance(L, EmbeddingSpec):
            layer = keras.layers.Embedding(L.vocab_size, L.output_size, mask_zero=L.mask_zero)
            layer.build((batch, None))
            layer.set_weights([np.asarray(L.weight)])
        elif isinstance(L, MaskingSpec):
            layer = keras.layers.Masking(mask_value=L.mask_value)
        elif isinstance(L, DenseSpec):
            layer = keras.layers.Dense(L.output_size, use_bias=L.bias is not None,
                                       activation=_keras_activation(keras, L.activation))
            layer.build((batch, L.input_size))
            layer.set_weights([np.asarray(L.weight).T]
                              + ([] if L.bias is None else [np.asarray(L.bias)]))
        elif isinstance(L, BidirectionalSpec):
            inner = _keras_cell_layer(keras, L.forward, zero_masked=zero_masked,
                                      stateful=False, go_backwards=False)
            layer = keras.layers.Bidirectional(inner, merge_mode=L.merge_mode)
            layer.build((batch, None, L.input_size))
            layer.set_weights(_keras_cell_weights(L.forward) + _keras_cell_weights(L.backward))
        elif isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec)):
            layer = _keras_cell_layer(keras, L, zero_masked=zero_masked, stateful=stateful,
                                      go_backwards=L.go_backwards)
            layer.build((batch, None, L.input_size))
            layer.set_weights(_keras_cell_weights(L))
        else:
            raise FrameworkUnavailable(f"keras: no equivalent of a {L.kind} layer")
        out.append(layer)
    return out


class _KerasPeer(Peer):
    name = "keras"

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        super().__init__(spec, threads)
        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except Exception as e:  # noqa: BLE001 - e.g. a backend whose package is missing
            raise FrameworkUnavailable(f"keras cannot be imported with backend "
                                       f"{os.environ.get('KERAS_BACKEND')!r} ({e})") from None
        self._keras = keras
        self.backend = keras.backend.backend()
        self.version = f"{keras.__version__} ({self.backend} backend)"
        self._torch: Any = None
        if self.backend == "torch":
            import torch

            self._torch = torch
            torch.set_num_threads(threads)
        self._layers = _keras_layers(keras, spec, None)

    def _no_grad(self) -> Any:
        import contextlib

        return self._torch.no_grad() if self._torch is not None else contextlib.nullcontext()

    def _head_mask(self, x: np.ndarray) -> np.ndarray | None:
        head = self.spec.layers[0]
        if isinstance(head, MaskingSpec):
            return np.any(x != np.float32(head.mask_value), axis=-1)
        if isinstance(head, EmbeddingSpec) and head.mask_zero:
            return x != 0
        return None

    def _forward(self, layers: list[Any], x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Run the layers; with ``mask`` (B, T) it is given to every recurrent layer."""
        keras = self._keras
        ops = keras.ops
        h = ops.convert_to_tensor(x)
        m = None if mask is None else ops.convert_to_tensor(mask)
        with self._no_grad():
            for L, layer in zip(self.spec.layers, layers, strict=True):
                if m is not None and L.kind in ("lstm", "gru", "rnn", "bidirectional"):
                    h = layer(h, mask=m)
                    if not L.return_sequences:
                        m = None
                else:
                    h = layer(h)
            if self._torch is not None and isinstance(h, self._torch.Tensor):
                return h.detach().numpy()  # no copy (convert_to_numpy copies, and warns)
            return ops.convert_to_numpy(h)

    packs_lengths = False  # Keras masks follow the spec's own semantics

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        mask = None
        if lens is not None:
            mask = np.arange(x.shape[1])[None, :] < lens[:, None]
            head = self._head_mask(x)
            if head is not None:
                mask &= head
        return self._forward(self._layers, x, mask)

    def stream(self, batch: int) -> PeerStream:
        return _KerasStream(self, self._check_streamable(batch))


class _KerasStream(PeerStream):
    def __init__(self, peer: _KerasPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        self._layers = _keras_layers(peer._keras, peer.spec, batch)

    def step(self, x_t: np.ndarray) -> np.ndarray:
        x_t = _as_input(self._peer.spec, x_t, 2)
        y = self.run(x_t[:, None])
        return y[:, 0] if y.ndim == 3 else y

    def run(self, chunk: np.ndarray) -> np.ndarray:
        chunk = _as_input(self._peer.spec, chunk)
        if chunk.shape[0] != self.batch:
            raise ValueError(f"this stream has batch {self.batch}, got {chunk.shape[0]} rows")
        return self._peer._forward(self._layers, chunk, self._peer._head_mask(chunk))
