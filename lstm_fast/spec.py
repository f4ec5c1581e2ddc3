"""The canonical, validated description of a model, in the engine's internal convention.

Converters translate a framework's checkpoint into a :class:`ModelSpec`; everything below this
module (the model file, the C engine) speaks only this convention:

- a model is an ordered chain of layers; layer k+1 reads layer k's output;
- LSTM gates are row blocks in the order ``[i, f, g, o]`` (PyTorch's order), ``w_ih`` is
  (4H, I), ``w_hh`` is (4H, H), and the input and recurrent biases are folded into one
  ``bias`` of shape (4H,), so ``gates = w_ih @ x + w_hh @ h + bias``;
- an LSTM computes ``c' = ract(f)*c + ract(i)*act(g)`` and ``h' = ract(o)*act(c')`` with
  ``act = activation`` (tanh by default) and ``ract = recurrent_activation`` (sigmoid);
- Dense weights are (out, in) like ``torch.nn.Linear``: ``y = act(weight @ x + bias)``;
- Embedding weights are (vocabulary, dim); the model input is then integer ids (B, T).

Masks (from ``Masking``, ``Embedding(mask_zero=True)`` or ``lengths=``) follow
``ModelSpec.mask_semantics``: ``"keras"`` (at a masked step the state is carried and the output
repeats the previous output, 0 before the first valid step) or ``"torch"`` (packed sequences:
the state is carried and the output is 0).

``SPEC_VERSION`` changes whenever the meaning of a field changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .errors import WeightsError

SPEC_VERSION = 1

#: Activations a recurrent cell (``activation``/``recurrent_activation``) may use.
#: ``hard_sigmoid`` is Keras 3's / PyTorch's ``clip(x/6 + 0.5, 0, 1)``;
#: ``hard_sigmoid_keras2`` is Keras 1/2's ``clip(0.2x + 0.5, 0, 1)``.
CELL_ACTIVATIONS = (
    "linear", "relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras2",
    "softsign", "softplus", "elu", "selu", "silu", "gelu", "exponential",
)
#: Activations a Dense layer may use: the cell ones plus the row-wise ones.
DENSE_ACTIVATIONS = CELL_ACTIVATIONS + ("softmax", "log_softmax")

MASK_SEMANTICS = ("keras", "torch")
#: Storage types of the weight matrices (see :mod:`lstm_fast.quantize`).
WEIGHT_DTYPES = ("fp32", "fp16", "bf16", "int8")
#: How :attr:`lstm_fast.Stream.state` is shaped: ``"stacked"`` like nn.LSTM's ``(h_n, c_n)``
#: (one leading entry per recurrent state), ``"cell"`` like an nn.LSTMCell's ``(h, c)`` of
#: (B, H) each (a model converted from one cell).
STATE_LAYOUTS = ("stacked", "cell")


def _float32_array(a: object, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu" or arr.ndim != ndim:
        raise WeightsError(
            f"{name} must be a real {ndim}-D array, got dtype {arr.dtype} shape {arr.shape}"
        )
    if arr.dtype != np.float32 or not arr.flags.c_contiguous or arr.flags.writeable:
        arr = np.array(arr, dtype=np.float32, order="C", copy=True)  # never alias the caller's
        arr.flags.writeable = False
    if not np.isfinite(arr).all():
        raise WeightsError(f"{name} holds NaN or Inf (or values too large for float32)")
    return arr


def _check_activation(value: str, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise WeightsError(f"{name} {value!r} is not supported; expected one of "
                           f"{', '.join(allowed)}")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise WeightsError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --- The declarations: what each layer kind holds, written once ------------------------------

@dataclass(frozen=True)
class Tensor:
    """One tensor a layer kind holds (float32, C order).

    Parameters
    ----------
    name : str
        The spec attribute, and the tensor's name in the model file.
    shape : tuple of str
        The shape rule: one entry per dimension, a size name of the layer's :meth:`sizes`
        (``"input_size"``, ``"hidden_size"``, ...) or a product of them (``"gates*hidden_size"``).
    bridge : str
        The key the C engine reads this tensor under (the layer dicts of
        :func:`lstm_fast.model.Model`); a Bidirectional's backward cell adds ``_b``.
    optional : bool
        The tensor may be None (a bias-free layer, no projection, ...).
    quantizable : bool
        A weight matrix: stored as fp16/bf16 in a quantized model (:mod:`lstm_fast.quantize`).
        Biases, scales and shifts stay float32.
    role : {"weight", "bias", "vector"}
        ``"bias"`` tensors are left out of bias-free layers (the summary's "no bias",
        ``bias=0`` of ``lstm-fast bench --spec``).
    """

    name: str
    shape: tuple[str, ...]
    bridge: str
    optional: bool = False
    quantizable: bool = False
    role: str = "weight"

    def shape_for(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape this rule gives for the layer ``sizes``."""
        out = []
        for rule in self.shape:
            n = 1
            for sym in rule.split("*"):
                n *= int(sym) if sym.isdigit() else int(sizes[sym])
            out.append(n)
        return tuple(out)


@dataclass(frozen=True)
class Option:
    """One option of a layer kind.

    Parameters
    ----------
    name : str
        The spec attribute (and the model file's key, except where :mod:`lstm_fast.format`
        keeps an older key).
    type : type
        ``bool``, ``int``, ``float`` or ``str``.
    default : object
        The value when not given (``None``: required).
    allowed : tuple of str, optional
        The values a ``str`` option may take.
    bridge : {"value", "flag", ""}
        How the C engine receives it: under its own name, as a flag when true, or not at all
        (a size the engine gets as ``input_size``/``units``).
    """

    name: str
    type: type
    default: object = None
    allowed: tuple[str, ...] | None = None
    bridge: str = "value"


def _checked_option(opt: Option, value: Any, label: str) -> Any:
    """``value`` converted to ``opt``'s type and checked against its allowed values."""
    if opt.type is bool:
        return bool(value)
    if opt.type is int:
        return _positive_int(value, f"{label} {opt.name}")
    if opt.type is float:
        return float(value)
    if opt.allowed is not None:
        _check_activation(value, opt.allowed, opt.name if not label else f"{label} {opt.name}")
    return value


class _Declared:
    """A layer kind described by its :data:`TENSORS` and :data:`OPTIONS`.

    Subclasses set ``kind``, ``TENSORS``, ``OPTIONS``, ``BRIDGE_SIZES`` (the two size names
    the engine receives as ``input_size`` and ``units``), ``INIT_SIZE`` (the size whose
    ``1/sqrt`` bounds PyTorch's uniform initialisation; None: standard normal) and
    :meth:`sizes`.
    """

    kind: ClassVar[str]
    TENSORS: ClassVar[tuple[Tensor, ...]] = ()
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    BRIDGE_SIZES: ClassVar[tuple[str, str]]
    INIT_SIZE: ClassVar[str | None] = None
    #: Prefix of option names in error messages ("Dense activation ..."); "" for cells.
    _LABEL: ClassVar[str] = ""

    def sizes(self) -> dict[str, int]:
        """The layer's sizes by name (the symbols of the shape rules)."""
        raise NotImplementedError

    def engine_sizes(self) -> dict[str, int]:
        """The sizes the C engine receives: ``input_size`` and ``units`` (the two sizes named
        by ``BRIDGE_SIZES``)."""
        sizes = self.sizes()
        return {"input_size": sizes[self.BRIDGE_SIZES[0]], "units": sizes[self.BRIDGE_SIZES[1]]}

    def _take_declared(self, names: dict[str, str] | None = None) -> None:
        """Convert every declared tensor to read-only float32 and check every option."""
        for t in self.TENSORS:
            value = getattr(self, t.name)
            if value is None:
                if not t.optional:
                    raise WeightsError(f"{self.kind}: {t.name} is required")
                continue
            label = (names or {}).get(t.name, t.name)
            object.__setattr__(self, t.name, _float32_array(value, label, len(t.shape)))
        for opt in self.OPTIONS:
            object.__setattr__(self, opt.name,
                               _checked_option(opt, getattr(self, opt.name), self._LABEL))

    def _check_declared_shapes(self) -> None:
        """Every present tensor has the shape its rule gives (after the kind's own checks,
        which word the usual mistakes)."""
        sizes = self.sizes()
        for t in self.TENSORS:
            arr = getattr(self, t.name)
            if arr is not None and arr.shape != t.shape_for(sizes):
                raise WeightsError(f"{self.kind} {t.name} must be ({', '.join(t.shape)}) = "
                                   f"{t.shape_for(sizes)}, got {arr.shape}")

    def arrays(self) -> dict[str, np.ndarray]:
        """The present tensors by declared name."""
        return {t.name: getattr(self, t.name) for t in self.TENSORS
                if getattr(self, t.name) is not None}

    def options(self) -> dict[str, Any]:
        """The options by declared name."""
        return {opt.name: getattr(self, opt.name) for opt in self.OPTIONS}

    @classmethod
    def random(cls, sizes: Mapping[str, int], draw: Callable[[float | None, tuple[int, ...]],
                                                             np.ndarray],
               skip: tuple[str, ...] = (), **options: Any) -> Any:
        """A layer of this kind with every declared tensor drawn by ``draw(bound, shape)``
        (``bound`` is ``1/sqrt(sizes[INIT_SIZE])``, or None when ``INIT_SIZE`` is None), in
        declaration order, except the optional ones named in ``skip``."""
        bound = None if cls.INIT_SIZE is None else 1.0 / np.sqrt(sizes[cls.INIT_SIZE])
        arrays = {t.name: (None if t.optional and t.name in skip
                           else draw(bound, t.shape_for(sizes))) for t in cls.TENSORS}
        return cls(**arrays, **options)  # type: ignore[call-arg]


def _accepts_return_sequences(cls: type) -> type:
    """Let a recurrent spec still be built with ``return_sequences=`` (the name before
    ``return_last``): ``return_sequences=False`` is ``return_last=True``."""
    init = cls.__init__  # type: ignore[misc]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, return_sequences: bool | None = None,
                 **kwargs: Any) -> None:
        if return_sequences is not None:
            if "return_last" in kwargs:
                raise TypeError("give return_last or return_sequences, not both")
            kwargs["return_last"] = not return_sequences
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


class _Recurrent(_Declared):
    """What every recurrent cell kind shares: gates, sizes and the step-order options."""

    gates: ClassVar[int]
    w_ih: np.ndarray
    w_hh: np.ndarray
    return_last: bool
    BRIDGE_SIZES = ("input_size", "hidden_size")
    INIT_SIZE = "hidden_size"

    @property
    def return_sequences(self) -> bool:
        """``not return_last`` (the name before ``return_last``; Keras's option)."""
        return not self.return_last

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        """H: units of the cell state (c for an LSTM, h for others)."""
        return int(self.w_hh.shape[0]) // self.gates

    @property
    def output_size(self) -> int:
        """Features of h and of the output."""
        return int(self.w_hh.shape[1])

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c; 0 when the cell has no c)."""
        return self.output_size, 0

    def sizes(self) -> dict[str, int]:
        return {"gates": self.gates, "input_size": self.input_size,
                "hidden_size": self.hidden_size, "output_size": self.output_size}


def _cell_options(recurrent_activation: bool = True) -> tuple[Option, ...]:
    """The options of a recurrent cell kind (the cell's activations, then the step order)."""
    acts = (Option("activation", str, "tanh", CELL_ACTIVATIONS),)
    if recurrent_activation:
        acts += (Option("recurrent_activation", str, "sigmoid", CELL_ACTIVATIONS),)
    return acts


_STEP_OPTIONS = (Option("return_last", bool, False, bridge="flag"),
                 Option("go_backwards", bool, False, bridge="flag"))


@_accepts_return_sequences
@dataclass(frozen=True)
class LSTMLayerSpec(_Recurrent):
    """One unidirectional LSTM layer (see the module docstring for the convention).

    ``bias=None`` means no bias. ``return_last=True`` outputs only the last step (the last
    *valid* step under a mask) and must be the last recurrent layer (``return_sequences=False``
    is accepted as its older spelling). ``go_backwards`` processes the steps of each call from
    last to first and emits outputs in that processing order (Keras).
    ``w_hr`` (P, H) is PyTorch's projection (``proj_size=P``): ``h = w_hr @ (o * act(c))``, so
    ``h`` and the output have P features, ``w_hh`` is (4H, P) and ``c`` keeps H.
    """

    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    return_last: bool = False
    go_backwards: bool = False
    w_hr: np.ndarray | None = None

    kind = "lstm"
    gates = 4
    TENSORS = (
        Tensor("w_ih", ("gates*hidden_size", "input_size"), "w", quantizable=True),
        Tensor("w_hh", ("gates*hidden_size", "output_size"), "w_rec", quantizable=True),
        Tensor("bias", ("gates*hidden_size",), "bias", optional=True, role="bias"),
        Tensor("w_hr", ("output_size", "hidden_size"), "w_proj", optional=True,
               quantizable=True),
    )
    OPTIONS = (*_cell_options(), *_STEP_OPTIONS)

    def __post_init__(self) -> None:
        self._take_declared()
        w_ih, w_hh, w_hr = self.w_ih, self.w_hh, self.w_hr
        four_h = w_hh.shape[0]
        hidden = four_h // 4
        if w_hr is not None:
            if w_hr.shape[1] != hidden or not 1 <= w_hr.shape[0]:
                raise WeightsError(f"w_hr must be (P, H) = (P, {hidden}), got {w_hr.shape}")
            if w_hh.shape != (four_h, w_hr.shape[0]) or four_h % 4:
                raise WeightsError(f"with a projection, w_hh must be (4H, P) = "
                                   f"({four_h}, {w_hr.shape[0]}), got {w_hh.shape}")
        elif four_h != 4 * w_hh.shape[1] or hidden < 1:
            raise WeightsError(f"w_hh must be (4H, H), got {w_hh.shape}")
        if w_ih.shape[0] != four_h or w_ih.shape[1] < 1:
            raise WeightsError(f"w_ih must be (4H, I) = ({four_h}, I), got {w_ih.shape}")
        if self.bias is not None and self.bias.shape != (four_h,):
            raise WeightsError(f"bias must be ({four_h},), got {self.bias.shape}")
        self._check_declared_shapes()

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c)."""
        return self.output_size, self.hidden_size

    def engine_sizes(self) -> dict[str, int]:
        """As for every kind, plus ``proj_size`` (P) with a projection."""
        out = super().engine_sizes()
        if self.w_hr is not None:
            out["proj_size"] = self.output_size
        return out


def _recurrent_common(spec: _Recurrent, name: str) -> None:
    """Checks w_ih (G*H, I) and w_hh (G*H, H) after :meth:`_Declared._take_declared`."""
    gates, w_ih, w_hh = spec.gates, spec.w_ih, spec.w_hh
    gh, hidden = w_hh.shape
    if gh != gates * hidden or hidden < 1:
        raise WeightsError(f"{name} w_hh must be ({gates}H, H), got {w_hh.shape}")
    if w_ih.shape[0] != gh or w_ih.shape[1] < 1:
        raise WeightsError(f"{name} w_ih must be ({gates}H, I) = ({gh}, I), got {w_ih.shape}")
    spec._check_declared_shapes()


@_accepts_return_sequences
@dataclass(frozen=True)
class GRULayerSpec(_Recurrent):
    """One unidirectional GRU layer; gate row blocks ``[r, z, n]`` (PyTorch's order)::

        r = ract(W_ir x + b_ir + W_hr h + b_hr)      z = ract(W_iz x + b_iz + W_hz h + b_hz)
        reset_after=True  (PyTorch, Keras default):  n = act(W_in x + b_in + r * (W_hn h + b_hn))
        reset_after=False (Keras reset_after=False): n = act(W_in x + b_in + W_hn (r * h) + b_hn)
        h' = z * h + (1 - z) * n

    ``b_ih``/``b_hh`` are (3H,) or None (zeros). Options as in :class:`LSTMLayerSpec`.
    """

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None = None
    b_hh: np.ndarray | None = None
    reset_after: bool = True
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    return_last: bool = False
    go_backwards: bool = False

    kind = "gru"
    gates = 3
    TENSORS = (
        Tensor("w_ih", ("gates*hidden_size", "input_size"), "w", quantizable=True),
        Tensor("w_hh", ("gates*hidden_size", "hidden_size"), "w_rec", quantizable=True),
        Tensor("b_ih", ("gates*hidden_size",), "bias", optional=True, role="bias"),
        Tensor("b_hh", ("gates*hidden_size",), "bias_rec", optional=True, role="bias"),
    )
    OPTIONS = (*_cell_options(), Option("reset_after", bool, True, bridge="flag"),
               *_STEP_OPTIONS)

    def __post_init__(self) -> None:
        self._take_declared()
        _recurrent_common(self, "GRU")


@_accepts_return_sequences
@dataclass(frozen=True)
class SimpleRNNLayerSpec(_Recurrent):
    """``h' = act(w_ih @ x + w_hh @ h + bias)``; w_ih (H, I), w_hh (H, H), bias (H,) or None
    (PyTorch ``nn.RNN``'s two biases folded). Options as in :class:`LSTMLayerSpec`."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "tanh"
    return_last: bool = False
    go_backwards: bool = False

    kind = "rnn"
    gates = 1
    TENSORS = (
        Tensor("w_ih", ("hidden_size", "input_size"), "w", quantizable=True),
        Tensor("w_hh", ("hidden_size", "hidden_size"), "w_rec", quantizable=True),
        Tensor("bias", ("hidden_size",), "bias", optional=True, role="bias"),
    )
    OPTIONS = (*_cell_options(recurrent_activation=False), *_STEP_OPTIONS)

    def __post_init__(self) -> None:
        self._take_declared()
        _recurrent_common(self, "SimpleRNN")


MERGE_MODES = ("concat", "sum", "ave", "mul")


@dataclass(frozen=True)
class BidirectionalSpec:
    """Two recurrent layers of one kind over the same input: ``forward`` reads steps 0..T-1,
    ``backward`` reads T-1..0 (each sequence from its own last valid step under a mask) and its
    outputs are put back in time order. Outputs are merged: ``concat`` ([fwd, bwd], PyTorch's
    layout), ``sum``, ``ave`` or ``mul`` (Keras). Masked steps output 0 (Keras forces this
    inside Bidirectional; PyTorch packed sequences do it too). With
    ``return_last=True`` the merged pair is each direction's last output.

    Both inner layers have ``go_backwards=False`` and the same ``return_last``.
    """

    forward: LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec
    backward: LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec
    merge_mode: str = "concat"

    kind = "bidirectional"
    OPTIONS: ClassVar[tuple[Option, ...]] = (Option("merge_mode", str, "concat", MERGE_MODES),)

    def __post_init__(self) -> None:
        f, b = self.forward, self.backward
        if f.kind not in CELL_KINDS or b.kind != f.kind:
            raise WeightsError(f"Bidirectional needs two recurrent layers of one kind, got "
                               f"{f.kind} and {b.kind}")
        if f.go_backwards or b.go_backwards:
            raise WeightsError("the inner layers of a Bidirectional must have "
                               "go_backwards=False (the wrapper reverses the backward one)")
        if f.return_last != b.return_last:
            raise WeightsError("both directions must agree on return_last")
        if (f.input_size, f.output_size, f.hidden_size) != (b.input_size, b.output_size,
                                                            b.hidden_size):
            raise WeightsError("both directions must have the same sizes")
        if self.merge_mode not in MERGE_MODES:
            raise WeightsError(f"merge_mode must be one of {', '.join(MERGE_MODES)}, got "
                               f"{self.merge_mode!r}")

    @property
    def return_last(self) -> bool:
        return self.forward.return_last

    @property
    def return_sequences(self) -> bool:
        """``not return_last`` (the name before ``return_last``)."""
        return not self.return_last

    go_backwards = False

    @property
    def input_size(self) -> int:
        return self.forward.input_size

    @property
    def hidden_size(self) -> int:
        return self.forward.hidden_size

    @property
    def output_size(self) -> int:
        return self.forward.output_size * (2 if self.merge_mode == "concat" else 1)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**{f"forward.{k}": v for k, v in self.forward.arrays().items()},
                **{f"backward.{k}": v for k, v in self.backward.arrays().items()}}

    def options(self) -> dict[str, Any]:
        return {"merge_mode": self.merge_mode}


@dataclass(frozen=True)
class DenseSpec(_Declared):
    """``y = activation(weight @ x + bias)`` on every step; weight is (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "linear"

    kind = "dense"
    TENSORS = (
        Tensor("weight", ("output_size", "input_size"), "w", quantizable=True),
        Tensor("bias", ("output_size",), "bias", optional=True, role="bias"),
    )
    OPTIONS = (Option("activation", str, "linear", DENSE_ACTIVATIONS),)
    BRIDGE_SIZES = ("input_size", "output_size")
    INIT_SIZE = "input_size"
    _LABEL = "Dense"

    def __post_init__(self) -> None:
        self._take_declared({"weight": "weight", "bias": "bias"})
        weight = self.weight
        if min(weight.shape) < 1:
            raise WeightsError(f"Dense weight must be (out, in) with both >= 1, got "
                               f"{weight.shape}")
        if self.bias is not None and self.bias.shape != (weight.shape[0],):
            raise WeightsError(f"Dense bias must be ({weight.shape[0]},), got "
                               f"{self.bias.shape}")
        self._check_declared_shapes()

    @property
    def input_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.weight.shape[0])

    def sizes(self) -> dict[str, int]:
        return {"input_size": self.input_size, "output_size": self.output_size}


@dataclass(frozen=True)
class EmbeddingSpec(_Declared):
    """Row lookup ``weight[ids]``; weight is (vocabulary, dim). Must be the first layer.

    ``mask_zero`` masks the steps whose id is 0 (Keras ``Embedding(mask_zero=True)``).
    """

    weight: np.ndarray
    mask_zero: bool = False

    kind = "embedding"
    TENSORS = (Tensor("weight", ("vocab_size", "output_size"), "w", quantizable=True),)
    OPTIONS = (Option("mask_zero", bool, False, bridge="flag"),)
    BRIDGE_SIZES = ("vocab_size", "output_size")
    INIT_SIZE = None

    def __post_init__(self) -> None:
        self._take_declared({"weight": "embedding weight"})
        if min(self.weight.shape) < 1:
            raise WeightsError(f"Embedding weight must be (vocabulary, dim), got "
                               f"{self.weight.shape}")

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return int(self.weight.shape[1])

    def sizes(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size, "output_size": self.output_size}


class _SameSize(_Declared):
    """Sizes of a layer that keeps its ``size`` features (masking, affine, normalize)."""

    size: int
    BRIDGE_SIZES = ("size", "size")

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def output_size(self) -> int:
        return self.size

    def sizes(self) -> dict[str, int]:
        return {"size": self.size}


_SIZE = Option("size", int, None, bridge="")


@dataclass(frozen=True)
class MaskingSpec(_SameSize):
    """Keras ``Masking``: a step whose ``size`` features all equal ``mask_value`` is masked,
    and its features are replaced by 0."""

    size: int
    mask_value: float = 0.0

    kind = "masking"
    OPTIONS = (_SIZE, Option("mask_value", float, 0.0))
    _LABEL = "Masking"

    def __post_init__(self) -> None:
        self._take_declared()
        if not np.isfinite(self.mask_value):
            raise WeightsError(f"mask_value must be finite, got {self.mask_value}")


@dataclass(frozen=True)
class AffineSpec(_SameSize):
    """Per-feature ``y = activation(x * scale + shift)``; ``scale``/``shift`` are (size,) or
    None (1 and 0).

    The inference form of a batch normalisation (see :func:`batchnorm_affine`), or with
    neither array a bare activation between layers (e.g. a ReLU before a Linear head).
    Converters fold a linear one into the next layer's input weights where that is exact
    (:func:`fold_affines`); the engine runs the others.
    """

    size: int
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    activation: str = "linear"

    kind = "affine"
    TENSORS = (Tensor("scale", ("size",), "w", optional=True, role="vector"),
               Tensor("shift", ("size",), "bias", optional=True, role="vector"))
    OPTIONS = (_SIZE, Option("activation", str, "linear", DENSE_ACTIVATIONS))
    _LABEL = "Affine"

    def __post_init__(self) -> None:
        self._take_declared({"scale": "affine scale", "shift": "affine shift"})
        for name in ("scale", "shift"):
            arr = getattr(self, name)
            if arr is not None and arr.shape != (self.size,):
                raise WeightsError(f"affine {name} must be ({self.size},), got {arr.shape}")


@dataclass(frozen=True)
class NormalizeSpec(_SameSize):
    """L2 normalisation of each step's feature vector: ``y = x / max(||x||_2, epsilon)``
    (``torch.nn.functional.normalize``; speaker and word embeddings)."""

    size: int
    epsilon: float = 1e-12

    kind = "normalize"
    OPTIONS = (_SIZE, Option("epsilon", float, 1e-12))
    _LABEL = "Normalize"

    def __post_init__(self) -> None:
        self._take_declared()
        eps = self.epsilon
        if not (np.isfinite(eps) and eps >= 0):
            raise WeightsError(f"Normalize epsilon must be finite and >= 0, got {eps}")


#: Every single layer kind by name (a Bidirectional wraps two cells of one of the cell kinds).
LAYER_KINDS: dict[str, type[_Declared]] = {
    cls.kind: cls for cls in (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec, DenseSpec,
                              EmbeddingSpec, MaskingSpec, AffineSpec, NormalizeSpec)
}


def batchnorm_affine(gamma: object, beta: object, mean: object, var: object,
                     epsilon: float) -> AffineSpec:
    """The inference form of a batch normalisation,
    ``(x - mean) / sqrt(var + epsilon) * gamma + beta``, as an :class:`AffineSpec`
    (computed in float64). ``gamma``/``beta`` may be None (Keras ``scale``/``center=False``).
    """
    mean64 = np.asarray(_float32_array(mean, "moving mean", 1), np.float64)
    var64 = np.asarray(_float32_array(var, "moving variance", 1), np.float64)
    size = mean64.shape[0]
    if var64.shape != (size,) or float(epsilon) < 0 or (var64 + float(epsilon) <= 0).any():
        raise WeightsError(f"batch normalisation: variance must be ({size},) with "
                           f"variance + epsilon > 0")
    scale = 1.0 / np.sqrt(var64 + float(epsilon))
    if gamma is not None:
        scale = scale * np.asarray(_float32_array(gamma, "gamma", 1), np.float64)
    shift = -mean64 * scale
    if beta is not None:
        shift = shift + np.asarray(_float32_array(beta, "beta", 1), np.float64)
    if scale.shape != (size,) or shift.shape != (size,):
        raise WeightsError(f"batch normalisation: gamma and beta must be ({size},)")
    return AffineSpec(size=size, scale=scale, shift=shift)


CellSpec = LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec
LayerSpec = (CellSpec | BidirectionalSpec | DenseSpec | EmbeddingSpec | MaskingSpec | AffineSpec
             | NormalizeSpec)
#: Kinds that hold a recurrent cell, and kinds that have a recurrent state.
CELL_KINDS = ("lstm", "gru", "rnn")
RECURRENT_KINDS = (*CELL_KINDS, "bidirectional")


@dataclass(frozen=True)
class ModelSpec:
    """An ordered chain of layers; layer k+1 reads layer k's output.

    Parameters
    ----------
    layers : sequence of layer specs
        At least one recurrent layer. ``EmbeddingSpec`` only first; no recurrent layer after
        one with ``return_last=True``.
    mask_semantics : {"keras", "torch"}
        What masked steps output (see the module docstring). Converters set it from the
        source framework.
    stateful : bool
        The source model was a Keras ``stateful=True`` model: it is meant to be run through
        :meth:`lstm_fast.Model.stream`.
    metadata : dict of str to str
        Provenance (source framework and version, source file, ...), kept in the model file.
    state_layout : {"stacked", "cell"}
        The shape of states at the Python API (:data:`STATE_LAYOUTS`); ``"cell"`` needs
        exactly one unidirectional recurrent layer.
    weights_dtype : {"fp32", "fp16", "bf16", "int8"}
        Storage type of the weight matrices (:data:`WEIGHT_DTYPES`); the float32 arrays then
        hold values exactly on that type's grid (:meth:`lstm_fast.Model.quantize`).
    quant_error : float or None
        Max abs output error against the float32 model, measured by ``Model.quantize``.
    """

    layers: tuple[LayerSpec, ...]
    mask_semantics: str = "torch"
    stateful: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    state_layout: str = "stacked"
    weights_dtype: str = "fp32"
    quant_error: float | None = None

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not any(L.kind in RECURRENT_KINDS for L in layers):
            raise WeightsError("a model needs at least one recurrent layer")
        if self.mask_semantics not in MASK_SEMANTICS:
            raise WeightsError(f"mask_semantics must be 'keras' or 'torch', got "
                               f"{self.mask_semantics!r}")
        collapsed = None
        for k, L in enumerate(layers):
            if L.kind == "embedding" and k != 0:
                raise WeightsError(f"layer {k}: an Embedding must be the first layer")
            if L.kind in RECURRENT_KINDS and collapsed is not None:
                raise WeightsError(f"layer {k}: a recurrent layer cannot follow layer "
                                   f"{collapsed}, which returns only its last step")
            if L.kind in RECURRENT_KINDS and L.return_last:
                collapsed = k
            if k and L.input_size != layers[k - 1].output_size:
                raise WeightsError(
                    f"layer {k} ({L.kind}) expects inputs of size {L.input_size} but layer "
                    f"{k - 1} ({layers[k - 1].kind}) produces {layers[k - 1].output_size}"
                )
        if self.state_layout not in STATE_LAYOUTS:
            raise WeightsError(f"state_layout must be one of {', '.join(STATE_LAYOUTS)}, got "
                               f"{self.state_layout!r}")
        if self.state_layout == "cell" and not (
                len([L for L in layers if L.kind in RECURRENT_KINDS]) == 1
                and any(L.kind in CELL_KINDS for L in layers)):
            raise WeightsError("state_layout 'cell' needs exactly one unidirectional recurrent "
                               "layer")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise WeightsError(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got "
                               f"{self.weights_dtype!r}")
        if self.quant_error is not None:
            object.__setattr__(self, "quant_error", float(self.quant_error))
        meta = {str(k): str(v) for k, v in dict(self.metadata).items()}
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "metadata", meta)
        object.__setattr__(self, "stateful", bool(self.stateful))

    @property
    def takes_ids(self) -> bool:
        """True when the input is integer ids (B, T) for a leading Embedding."""
        return self.layers[0].kind == "embedding"

    @property
    def input_size(self) -> int:
        """Features per step (1 for id inputs)."""
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].output_size

    @property
    def recurrent_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(L for L in self.layers if L.kind in RECURRENT_KINDS)

    @property
    def cells(self) -> tuple[CellSpec, ...]:
        """The recurrent cells in state order: each layer's, a Bidirectional's forward then
        backward (PyTorch's ``h_n`` order ``layer * 2 + direction``)."""
        out: list[CellSpec] = []
        for L in self.recurrent_layers:
            out.extend((L.forward, L.backward) if L.kind == "bidirectional" else (L,))
        return tuple(out)

    @property
    def returns_sequences(self) -> bool:
        """False when some recurrent layer returns only its last step: outputs are (B, F)."""
        return not any(L.return_last for L in self.recurrent_layers)

    @property
    def streamable(self) -> bool:
        """True when the model can be fed step by step (no layer looks at future steps)."""
        return not any(L.kind == "bidirectional" or (L.kind in CELL_KINDS and L.go_backwards)
                       for L in self.layers)

    @property
    def uses_mask(self) -> bool:
        return any(L.kind == "masking" or (L.kind == "embedding" and L.mask_zero)
                   for L in self.layers)

    def num_parameters(self) -> int:
        return sum(int(a.size) for L in self.layers for a in L.arrays().values())

    def summary(self) -> str:
        """A table of the layers: kind, sizes, options and parameter count."""
        rows = [("#", "layer", "in -> out", "options", "params")]
        for k, L in enumerate(self.layers):
            rows.append((str(k), L.kind, f"{L.input_size} -> {L.output_size}",
                         _options_text(L), str(sum(a.size for a in L.arrays().values()))))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.append(f"{self.num_parameters()} parameters ({self.weights_dtype} weights), "
                     f"mask semantics "
                     f"{self.mask_semantics}" + (", stateful" if self.stateful else ""))
        return "\n".join(lines)


def _options_text(L: LayerSpec) -> str:
    """The summary's options column, from the kind's declarations: options that differ from
    their default (activations always), "no bias" for a layer without its bias tensors,
    present optional tensors, and sizes the in -> out column does not show."""
    if isinstance(L, BidirectionalSpec):
        return f"bidirectional {L.forward.kind} (merge {L.merge_mode}), " + \
            _options_text(L.forward)
    opts = []
    for opt in L.OPTIONS:
        value = getattr(L, opt.name)
        if opt.bridge == "":
            continue  # a size, shown in the in -> out column
        if opt.type is bool:
            if value != opt.default:
                opts.append(opt.name if value else f"{opt.name}=False")
        elif opt.type is float:
            opts.append(f"{opt.name}={value:g}")
        elif value != opt.default or opt.name == "activation":
            opts.append(f"{opt.name}={value}")
    present = L.arrays()
    biases = [t.name for t in L.TENSORS if t.role == "bias"]
    if biases and not present.keys() & set(biases):
        opts.append("no bias")
    opts += [f"{t.name} {present[t.name].shape}" for t in L.TENSORS
             if t.optional and t.role != "bias" and t.name in present]
    sizes = L.sizes()
    opts += [f"{name}={value}" for name, value in sizes.items()
             if name not in ("gates", "input_size", "output_size", "size")
             and value != L.output_size]
    return ", ".join(opts)
