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

from dataclasses import dataclass, field

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
WEIGHT_DTYPES = ("fp32", "fp16", "bf16")
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


@dataclass(frozen=True)
class LSTMLayerSpec:
    """One unidirectional LSTM layer (see the module docstring for the convention).

    ``bias=None`` means no bias. ``return_sequences=False`` outputs only the last step (the last
    *valid* step under a mask) and must be the last recurrent layer. ``go_backwards`` processes
    the steps of each call from last to first and emits outputs in that processing order (Keras).
    ``w_hr`` (P, H) is PyTorch's projection (``proj_size=P``): ``h = w_hr @ (o * act(c))``, so
    ``h`` and the output have P features, ``w_hh`` is (4H, P) and ``c`` keeps H.
    """

    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"
    return_sequences: bool = True
    go_backwards: bool = False
    w_hr: np.ndarray | None = None

    kind = "lstm"

    def __post_init__(self) -> None:
        w_ih = _float32_array(self.w_ih, "w_ih", 2)
        w_hh = _float32_array(self.w_hh, "w_hh", 2)
        w_hr = self.w_hr
        four_h = w_hh.shape[0]
        hidden = four_h // 4
        if w_hr is not None:
            w_hr = _float32_array(w_hr, "w_hr", 2)
            if w_hr.shape[1] != hidden or not 1 <= w_hr.shape[0]:
                raise WeightsError(f"w_hr must be (P, H) = (P, {hidden}), got {w_hr.shape}")
            if w_hh.shape != (four_h, w_hr.shape[0]) or four_h % 4:
                raise WeightsError(f"with a projection, w_hh must be (4H, P) = "
                                   f"({four_h}, {w_hr.shape[0]}), got {w_hh.shape}")
        elif four_h != 4 * w_hh.shape[1] or hidden < 1:
            raise WeightsError(f"w_hh must be (4H, H), got {w_hh.shape}")
        if w_ih.shape[0] != four_h or w_ih.shape[1] < 1:
            raise WeightsError(f"w_ih must be (4H, I) = ({four_h}, I), got {w_ih.shape}")
        bias = self.bias
        if bias is not None:
            bias = _float32_array(bias, "bias", 1)
            if bias.shape != (four_h,):
                raise WeightsError(f"bias must be ({four_h},), got {bias.shape}")
        _check_activation(self.activation, CELL_ACTIVATIONS, "activation")
        _check_activation(self.recurrent_activation, CELL_ACTIVATIONS, "recurrent_activation")
        object.__setattr__(self, "w_ih", w_ih)
        object.__setattr__(self, "w_hh", w_hh)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "w_hr", w_hr)
        object.__setattr__(self, "return_sequences", bool(self.return_sequences))
        object.__setattr__(self, "go_backwards", bool(self.go_backwards))

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        """H: units of the cell state c."""
        return int(self.w_hh.shape[0]) // 4

    @property
    def output_size(self) -> int:
        """Features of h and of the output: P with a projection, else H."""
        return int(self.w_hh.shape[1])

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c)."""
        return self.output_size, self.hidden_size

    def arrays(self) -> dict[str, np.ndarray]:
        return _present(w_ih=self.w_ih, w_hh=self.w_hh, bias=self.bias, w_hr=self.w_hr)


def _present(**arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if v is not None}


def _recurrent_common(spec: object, gates: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Checks w_ih (G*H, I) and w_hh (G*H, H) and the activations; returns them as float32."""
    w_ih = _float32_array(spec.w_ih, "w_ih", 2)  # type: ignore[attr-defined]
    w_hh = _float32_array(spec.w_hh, "w_hh", 2)  # type: ignore[attr-defined]
    gh, hidden = w_hh.shape
    if gh != gates * hidden or hidden < 1:
        raise WeightsError(f"{name} w_hh must be ({gates}H, H), got {w_hh.shape}")
    if w_ih.shape[0] != gh or w_ih.shape[1] < 1:
        raise WeightsError(f"{name} w_ih must be ({gates}H, I) = ({gh}, I), got {w_ih.shape}")
    _check_activation(spec.activation, CELL_ACTIVATIONS, "activation")  # type: ignore[attr-defined]
    object.__setattr__(spec, "return_sequences", bool(spec.return_sequences))  # type: ignore[attr-defined]
    object.__setattr__(spec, "go_backwards", bool(spec.go_backwards))  # type: ignore[attr-defined]
    return w_ih, w_hh


def _bias(value: object, name: str, size: int) -> np.ndarray | None:
    if value is None:
        return None
    bias = _float32_array(value, name, 1)
    if bias.shape != (size,):
        raise WeightsError(f"{name} must be ({size},), got {bias.shape}")
    return bias


class _HiddenStateCell:
    """Sizes of a cell whose only state is h (GRU, simple RNN): w_ih (G*H, I), w_hh (G*H, H)."""

    w_ih: np.ndarray
    w_hh: np.ndarray

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.w_hh.shape[1])

    output_size = hidden_size

    @property
    def state_sizes(self) -> tuple[int, int]:
        """(size of h, size of c = 0)."""
        return self.hidden_size, 0


@dataclass(frozen=True)
class GRULayerSpec(_HiddenStateCell):
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
    return_sequences: bool = True
    go_backwards: bool = False

    kind = "gru"

    def __post_init__(self) -> None:
        w_ih, w_hh = _recurrent_common(self, 3, "GRU")
        _check_activation(self.recurrent_activation, CELL_ACTIVATIONS, "recurrent_activation")
        object.__setattr__(self, "w_ih", w_ih)
        object.__setattr__(self, "w_hh", w_hh)
        object.__setattr__(self, "b_ih", _bias(self.b_ih, "b_ih", w_hh.shape[0]))
        object.__setattr__(self, "b_hh", _bias(self.b_hh, "b_hh", w_hh.shape[0]))
        object.__setattr__(self, "reset_after", bool(self.reset_after))

    def arrays(self) -> dict[str, np.ndarray]:
        return _present(w_ih=self.w_ih, w_hh=self.w_hh, b_ih=self.b_ih, b_hh=self.b_hh)


@dataclass(frozen=True)
class SimpleRNNLayerSpec(_HiddenStateCell):
    """``h' = act(w_ih @ x + w_hh @ h + bias)``; w_ih (H, I), w_hh (H, H), bias (H,) or None
    (PyTorch ``nn.RNN``'s two biases folded). Options as in :class:`LSTMLayerSpec`."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "tanh"
    return_sequences: bool = True
    go_backwards: bool = False

    kind = "rnn"

    def __post_init__(self) -> None:
        w_ih, w_hh = _recurrent_common(self, 1, "SimpleRNN")
        object.__setattr__(self, "w_ih", w_ih)
        object.__setattr__(self, "w_hh", w_hh)
        object.__setattr__(self, "bias", _bias(self.bias, "bias", w_hh.shape[0]))

    def arrays(self) -> dict[str, np.ndarray]:
        return _present(w_ih=self.w_ih, w_hh=self.w_hh, bias=self.bias)


MERGE_MODES = ("concat", "sum", "ave", "mul")


@dataclass(frozen=True)
class BidirectionalSpec:
    """Two recurrent layers of one kind over the same input: ``forward`` reads steps 0..T-1,
    ``backward`` reads T-1..0 (each sequence from its own last valid step under a mask) and its
    outputs are put back in time order. Outputs are merged: ``concat`` ([fwd, bwd], PyTorch's
    layout), ``sum``, ``ave`` or ``mul`` (Keras). Masked steps output 0 (Keras forces this
    inside Bidirectional; PyTorch packed sequences do it too). With
    ``return_sequences=False`` the merged pair is each direction's last output.

    Both inner layers have ``go_backwards=False`` and the same ``return_sequences``.
    """

    forward: LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec
    backward: LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec
    merge_mode: str = "concat"

    kind = "bidirectional"

    def __post_init__(self) -> None:
        f, b = self.forward, self.backward
        if f.kind not in CELL_KINDS or b.kind != f.kind:
            raise WeightsError(f"Bidirectional needs two recurrent layers of one kind, got "
                               f"{f.kind} and {b.kind}")
        if f.go_backwards or b.go_backwards:
            raise WeightsError("the inner layers of a Bidirectional must have "
                               "go_backwards=False (the wrapper reverses the backward one)")
        if f.return_sequences != b.return_sequences:
            raise WeightsError("both directions must agree on return_sequences")
        if (f.input_size, f.output_size, f.hidden_size) != (b.input_size, b.output_size,
                                                            b.hidden_size):
            raise WeightsError("both directions must have the same sizes")
        if self.merge_mode not in MERGE_MODES:
            raise WeightsError(f"merge_mode must be one of {', '.join(MERGE_MODES)}, got "
                               f"{self.merge_mode!r}")

    @property
    def return_sequences(self) -> bool:
        return self.forward.return_sequences

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


@dataclass(frozen=True)
class DenseSpec:
    """``y = activation(weight @ x + bias)`` on every step; weight is (out, in)."""

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "linear"

    kind = "dense"

    def __post_init__(self) -> None:
        weight = _float32_array(self.weight, "weight", 2)
        if min(weight.shape) < 1:
            raise WeightsError(f"Dense weight must be (out, in) with both >= 1, got "
                               f"{weight.shape}")
        bias = self.bias
        if bias is not None:
            bias = _float32_array(bias, "bias", 1)
            if bias.shape != (weight.shape[0],):
                raise WeightsError(f"Dense bias must be ({weight.shape[0]},), got {bias.shape}")
        _check_activation(self.activation, DENSE_ACTIVATIONS, "Dense activation")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)

    @property
    def input_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def output_size(self) -> int:
        return int(self.weight.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"weight": self.weight}
        if self.bias is not None:
            out["bias"] = self.bias
        return out


@dataclass(frozen=True)
class EmbeddingSpec:
    """Row lookup ``weight[ids]``; weight is (vocabulary, dim). Must be the first layer.

    ``mask_zero`` masks the steps whose id is 0 (Keras ``Embedding(mask_zero=True)``).
    """

    weight: np.ndarray
    mask_zero: bool = False

    kind = "embedding"

    def __post_init__(self) -> None:
        weight = _float32_array(self.weight, "embedding weight", 2)
        if min(weight.shape) < 1:
            raise WeightsError(f"Embedding weight must be (vocabulary, dim), got {weight.shape}")
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "mask_zero", bool(self.mask_zero))

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return int(self.weight.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight}


class _SameSize:
    """Sizes of a layer that keeps its ``size`` features (masking, affine, normalize)."""

    size: int

    @property
    def input_size(self) -> int:
        return self.size

    @property
    def output_size(self) -> int:
        return self.size


@dataclass(frozen=True)
class MaskingSpec(_SameSize):
    """Keras ``Masking``: a step whose ``size`` features all equal ``mask_value`` is masked,
    and its features are replaced by 0."""

    size: int
    mask_value: float = 0.0

    kind = "masking"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _positive_int(self.size, "Masking size"))
        value = float(self.mask_value)
        if not np.isfinite(value):
            raise WeightsError(f"mask_value must be finite, got {value}")
        object.__setattr__(self, "mask_value", value)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


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

    def __post_init__(self) -> None:
        size = _positive_int(self.size, "Affine size")
        object.__setattr__(self, "size", size)
        for name in ("scale", "shift"):
            value = getattr(self, name)
            if value is not None:
                arr = _float32_array(value, f"affine {name}", 1)
                if arr.shape != (size,):
                    raise WeightsError(f"affine {name} must be ({size},), got {arr.shape}")
                object.__setattr__(self, name, arr)
        _check_activation(self.activation, DENSE_ACTIVATIONS, "Affine activation")

    def arrays(self) -> dict[str, np.ndarray]:
        return _present(scale=self.scale, shift=self.shift)


@dataclass(frozen=True)
class NormalizeSpec(_SameSize):
    """L2 normalisation of each step's feature vector: ``y = x / max(||x||_2, epsilon)``
    (``torch.nn.functional.normalize``; speaker and word embeddings)."""

    size: int
    epsilon: float = 1e-12

    kind = "normalize"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _positive_int(self.size, "Normalize size"))
        eps = float(self.epsilon)
        if not (np.isfinite(eps) and eps >= 0):
            raise WeightsError(f"Normalize epsilon must be finite and >= 0, got {eps}")
        object.__setattr__(self, "epsilon", eps)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


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
        one with ``return_sequences=False``.
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
    weights_dtype : {"fp32", "fp16", "bf16"}
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
            if L.kind in RECURRENT_KINDS and not L.return_sequences:
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
        return all(L.return_sequences for L in self.recurrent_layers)

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
    if isinstance(L, BidirectionalSpec):
        return f"bidirectional {L.forward.kind} (merge {L.merge_mode}), " + \
            _options_text(L.forward)
    if isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec)):
        opts = [f"activation={L.activation}"]
        if not isinstance(L, SimpleRNNLayerSpec):
            opts.append(f"recurrent_activation={L.recurrent_activation}")
        if isinstance(L, GRULayerSpec):
            opts.append("reset_after" if L.reset_after else "reset_before")
        if isinstance(L, LSTMLayerSpec) and L.w_hr is not None:
            opts.append(f"proj_size={L.output_size}")
        if not L.arrays().keys() - {"w_ih", "w_hh", "w_hr"}:
            opts.append("no bias")
        if not L.return_sequences:
            opts.append("last step only")
        if L.go_backwards:
            opts.append("go_backwards")
        return ", ".join(opts)
    if isinstance(L, DenseSpec):
        return f"activation={L.activation}" + ("" if L.bias is not None else ", no bias")
    if isinstance(L, EmbeddingSpec):
        return f"vocabulary={L.vocab_size}" + (", mask_zero" if L.mask_zero else "")
    if isinstance(L, AffineSpec):
        parts = ["batch-norm affine" if L.scale is not None or L.shift is not None else ""]
        if L.activation != "linear" or not parts[0]:
            parts.append(f"activation={L.activation}")
        return ", ".join(p for p in parts if p)
    if isinstance(L, NormalizeSpec):
        return f"l2, epsilon={L.epsilon:g}"
    return f"mask_value={L.mask_value:g}"
