"""Keras -> lstm_fast: turn a Keras model (file or live object) into a :class:`ModelSpec`.

Reading files needs only ``h5py`` and numpy: :mod:`lstm_fast.converters.keras_file` opens the
container (``.keras`` zip, legacy ``.h5`` full model, ``save_weights`` or ``.weights.h5`` file
plus ``config=``), reduces the config to a chain of layers and finds each layer's weight
arrays. This module maps that chain to spec classes; ``keras`` is imported only for a live
model (:func:`spec_from_keras`; :func:`lstm_fast.from_keras` builds the model from it).

The model must be a ``Sequential`` or a functional model that is a single chain of layers (one
input, one output, every layer called once on one tensor). Supported layers: ``InputLayer``,
``Embedding``, ``Masking``, ``Dense``, ``TimeDistributed(Dense)``, ``LSTM`` (also
``CuDNNLSTM``, an ``LSTM`` config over cuDNN-layout weights, and Keras 1's 12-array LSTM),
``GRU`` (both ``reset_after`` variants, ``CuDNNGRU`` or cuDNN-layout weights, Keras 1's
9-array GRU), ``SimpleRNN``, ``RNN`` over an ``LSTMCell`` / ``GRUCell`` / ``SimpleRNNCell`` or
a ``StackedRNNCells`` of them (each cell becomes a layer), ``Bidirectional`` over any single
cell of those (``merge_mode`` concat, sum, ave or mul), ``BatchNormalization`` (inference form,
folded into a neighbouring layer's weights where exact), ``Activation`` (merged into the
``Dense`` or ``BatchNormalization`` before it, else a layer of its own),
``UnitNormalization`` and the layers that do nothing at inference (``Dropout`` and friends).
Anything else raises :class:`~lstm_fast.errors.UnsupportedModelError` naming the layer, its
class, the option and the file. ``hard_sigmoid`` means ``clip(0.2x+0.5)`` before Keras 3 and
``clip(x/6+0.5)`` from Keras 3 on. See ``FORMATS.md`` section 2 for the conventions mirrored
here.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._untrusted import converter_errors
from ..errors import ArgumentTypeError, ModelFileError, UnsupportedModelError, WeightsError
from ..spec import (
    CELL_ACTIVATIONS,
    DENSE_ACTIVATIONS,
    MERGE_MODES,
    RECURRENT_KINDS,
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
    batchnorm_affine,
)
from .fold import fold_affines
from .keras_file import (
    _BN_CLASSES,
    _CELL_CLASSES,
    _GRU_CLASSES,
    _LSTM_CLASSES,
    _RNN_CLASSES,
    WeightFn,
    _Arch,
    _arch_from_config,
    _as_ref,
    _by_suffix,
    _config_arg,
    _Ctx,
    _Entry,
    _open_keras_file,
    _parse_node,
    _refuse,
)

__all__ = ["spec_from_keras", "spec_from_keras_file"]

#: Layers that are the identity at inference time.
_IDENTITY = frozenset({
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization",
})
#: Layer classes the chain may hold (any other class is refused by name).
_KNOWN = _IDENTITY | _CELL_CLASSES | {"Embedding", "Masking", "Dense", "TimeDistributed",
                                      "Activation", "Bidirectional", "RNN",
                                      "UnitNormalization"} | _BN_CLASSES
#: Cells an ``RNN`` layer may wrap -> the layer class computing the same thing.
_CELL_LAYERS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
#: Options of an ``RNN`` wrapper that its cells' layer form carries.
_WRAPPER_OPTIONS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                    "zero_output_for_mask", "time_major")
#: Keras activation names -> spec names (``hard_sigmoid`` depends on the Keras version).
_ACTIVATIONS = {
    "linear": "linear", "relu": "relu", "relu6": "relu6", "tanh": "tanh",
    "sigmoid": "sigmoid", "softsign": "softsign", "softplus": "softplus", "elu": "elu",
    "selu": "selu", "silu": "silu", "swish": "silu", "exponential": "exponential",
    # Keras 3 and tf-keras: gelu(x, approximate=False) = x * Phi(x), the exact erf form.
    "gelu": "gelu", "softmax": "softmax", "log_softmax": "log_softmax",
}
_CUDNN_NOTE = "cuDNN weight layout converted as tf-keras does (FORMATS.md 2.6)"


# --------------------------------------------------------------------------------------------
# Mapping layers
# --------------------------------------------------------------------------------------------

def _bad(ctx: _Ctx, e: _Entry, detail: str) -> ModelFileError:
    return ModelFileError(f"layer {e.name!r} ({e.class_name}): {detail} [in {ctx.source}]")


def _activation(ctx: _Ctx, e: _Entry, value: Any, option: str, allowed: Sequence[str]) -> str:
    raw = value
    if value is None:
        return "linear"
    if isinstance(value, dict):                  # Keras 3: {"module", "class_name", "config"}
        module = str(value.get("module") or "")
        if value.get("class_name") != "function" or not module.startswith(
                ("keras.activations", "keras.src.activations")) \
                or not isinstance(value.get("config"), str):
            raise _refuse(ctx, e, f"{option}={_short(raw)} (a custom activation) is not "
                                  "supported")
        value = value["config"]
    if not isinstance(value, str):
        raise _refuse(ctx, e, f"{option}={_short(raw)} is not supported")
    name = value.lower()
    if name == "hard_sigmoid":
        major = ctx.major
        if major is None:
            raise _refuse(ctx, e, f"{option}='hard_sigmoid' means clip(0.2x+0.5) in Keras 1/2 "
                                  "but clip(x/6+0.5) in Keras 3, and the file does not say "
                                  "which Keras wrote it; pass keras_version=")
        spec_name = "hard_sigmoid" if major >= 3 else "hard_sigmoid_keras2"
    else:
        spec_name = _ACTIVATIONS.get(name, "")
    if spec_name not in allowed:
        raise _refuse(ctx, e, f"{option}={value!r} is not supported")
    return spec_name


def _short(value: Any) -> str:
    if isinstance(value, dict):
        inner = value.get("config")
        value = f"<{value.get('class_name', 'custom')}" + (f" {inner}>" if isinstance(inner, str)
                                                       else ">")
        return value
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _policy(cfg: Mapping[str, Any]) -> str:
    dtype = cfg.get("dtype")
    if isinstance(dtype, dict):
        return str((dtype.get("config") or {}).get("name", ""))
    return str(dtype) if isinstance(dtype, str) else ""


def _check_common(ctx: _Ctx, e: _Entry) -> None:
    cfg = e.config
    dtype = cfg.get("dtype")
    policy = _policy(cfg)
    if (isinstance(dtype, dict) and "Quantized" in str(dtype.get("class_name", ""))) or \
            policy.startswith(("int", "uint", "float8", "gptq", "awq")):
        raise _refuse(ctx, e, f"quantized dtype policy {policy!r} is not supported")
    if cfg.get("lora_rank"):
        raise _refuse(ctx, e, f"lora_rank={cfg['lora_rank']} is not supported")
    if cfg.get("quantization_config") not in (None, {}):
        raise _refuse(ctx, e, "quantization_config is not supported")


def _dense(ctx: _Ctx, e: _Entry, cfg: Mapping[str, Any], arrays: list[np.ndarray],
           names: list[str] | None, feat: int | None) -> DenseSpec:
    use_bias = bool(cfg.get("use_bias", cfg.get("bias", True)))
    arrays = _by_suffix(arrays, names, ("kernel", "bias"))
    if len(arrays) != (2 if use_bias else 1):
        raise _bad(ctx, e, f"expected {2 if use_bias else 1} weight arrays (use_bias="
                           f"{use_bias}), found {len(arrays)}")
    kernel = arrays[0]
    units = cfg.get("units", cfg.get("output_dim"))
    if kernel.ndim != 2 or (units is not None and kernel.shape[1] != units):
        raise _bad(ctx, e, f"kernel has shape {kernel.shape}, expected (in, {units})")
    if feat is not None and kernel.shape[0] != feat:
        raise _bad(ctx, e, f"kernel expects {kernel.shape[0]} input features, the previous "
                           f"layer gives {feat}")
    act = _activation(ctx, e, cfg.get("activation", "linear"), "activation", DENSE_ACTIVATIONS)
    bias = arrays[1] if use_bias else None
    if bias is not None and bias.shape != (kernel.shape[1],):
        raise _bad(ctx, e, f"bias has shape {bias.shape}, expected ({kernel.shape[1]},)")
    return DenseSpec(weight=kernel.T, bias=bias, activation=act)


def _cudnn_blocks(kernel: np.ndarray, rec: np.ndarray, units: int,
                  gates: int) -> tuple[np.ndarray, np.ndarray]:
    """cuDNN memory order -> Keras blocks (tf-keras ``_convert_rnn_weights``, FORMATS 2.6)."""
    n_in = kernel.shape[0]
    kernel = np.concatenate([blk.ravel().reshape(units, n_in).T
                             for blk in np.split(kernel, gates, axis=1)], axis=1)
    rec = np.concatenate([blk.T for blk in np.split(rec, gates, axis=1)], axis=1)
    return kernel, rec


def _kernels(ctx: _Ctx, e: _Entry, arrays: list[np.ndarray], names: list[str] | None,
             units: int, gates: int, use_bias: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(kernel (I, G*u), recurrent_kernel (u, G*u), bias or None), shapes checked."""
    arrays = _by_suffix(arrays, names, ("kernel", "recurrent_kernel", "bias"))
    if len(arrays) != (3 if use_bias else 2):
        raise _bad(ctx, e, f"expected {3 if use_bias else 2} weight arrays (use_bias="
                           f"{use_bias}), found {len(arrays)}")
    kernel, rec = arrays[0], arrays[1]
    g = gates * units
    if kernel.ndim != 2 or kernel.shape[1] != g:
        raise _bad(ctx, e, f"kernel has shape {kernel.shape}, expected (input, {g})")
    if rec.shape != (units, g):
        raise _bad(ctx, e, f"recurrent_kernel has shape {rec.shape}, expected ({units}, {g})")
    return kernel, rec, (arrays[2] if use_bias else None)


def _cudnn_note(notes: list[str], e: _Entry, cls: str, bias_len: int) -> None:
    """Say that a plain LSTM/GRU config got cuDNN-layout weights (recognised by the bias)."""
    notes.append(f"{e.name}: the {cls} config holds cuDNN-layout weights (bias of {bias_len}); "
                 f"{_CUDNN_NOTE}")


def _lstm_weights(ctx: _Ctx, e: _Entry, cls: str, arrays: list[np.ndarray],
                  names: list[str] | None, units: int, use_bias: bool, notes: list[str]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(w_ih, w_hh, bias) in the spec's layout. A bias of 8u is cuDNN's layout whatever the
    config's class says: tf-keras converts it when loading into an LSTM (FORMATS 2.6)."""
    if len(arrays) == 12:                      # Keras 1: W_i U_i b_i W_c U_c b_c W_f U_f b_f ...
        W = [arrays[3 * g] for g in (0, 2, 1, 3)]              # reorder i, c, f, o -> i, f, c, o
        U = [arrays[3 * g + 1] for g in (0, 2, 1, 3)]
        b = [arrays[3 * g + 2] for g in (0, 2, 1, 3)]
        arrays = [np.concatenate(W, axis=-1), np.concatenate(U, axis=-1),
                  np.concatenate(b, axis=-1)]
        names = None
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 4, use_bias)
    u4 = 4 * units
    if cls != "CuDNNLSTM" and bias is not None and bias.shape == (2 * u4,):
        _cudnn_note(notes, e, cls, 2 * u4)
        cls = "CuDNNLSTM"
    if cls == "CuDNNLSTM":
        kernel, rec = _cudnn_blocks(kernel, rec, units, 4)
        if bias is None or bias.shape != (2 * u4,):
            raise _bad(ctx, e, f"CuDNNLSTM bias must be ({2 * u4},), got "
                               f"{None if bias is None else bias.shape}")
        bias = bias[:u4].astype(np.float64) + bias[u4:].astype(np.float64)
    elif bias is not None and bias.shape != (u4,):
        raise _bad(ctx, e, f"bias has shape {bias.shape}, expected ({u4},)")
    # Keras columns i, f, c, o == spec rows i, f, g, o: a plain transpose.
    return kernel.T, rec.T, bias


def _zrh_to_rzn(a: np.ndarray) -> np.ndarray:
    """Keras GRU blocks z, r, h (last axis) -> the spec's r, z, n."""
    z, r, h = np.split(a, 3, axis=-1)
    return np.concatenate([r, z, h], axis=-1)


def _gru_weights(ctx: _Ctx, e: _Entry, cls: str, arrays: list[np.ndarray],
                 names: list[str] | None, units: int, use_bias: bool,
                 reset_after: bool | None, default_reset_after: bool, notes: list[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, bool]:
    """(w_ih, w_hh, b_ih, b_hh, reset_after) in the spec's layout (FORMATS 0.3).

    A flat bias of 6u is cuDNN's layout (a reset-after GRU), converted as tf-keras does when
    loading it into a GRU; like tf-keras, a config saying ``reset_after=False`` refuses it.
    Without ``reset_after`` in the config (Keras 2.0-2.2) the bias shape decides, else the
    Keras version's default (reset-before before Keras 3)."""
    if len(arrays) == 9:                       # Keras 1: W_z U_z b_z W_r U_r b_r W_h U_h b_h
        arrays = [np.concatenate(arrays[k::3], axis=-1) for k in range(3)]
        names = None
        if reset_after:
            raise _bad(ctx, e, "Keras 1 GRU weights (9 arrays) are reset_after=False, but the "
                               "config says reset_after=True")
        reset_after = False
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 3, use_bias)
    u3 = 3 * units
    if cls != "CuDNNGRU" and bias is not None and bias.shape == (2 * u3,):
        if reset_after is False:
            raise _bad(ctx, e, f"bias has shape {bias.shape} (cuDNN's layout, a reset-after "
                               "GRU), which does not fit reset_after=False")
        _cudnn_note(notes, e, cls, 2 * u3)
        cls = "CuDNNGRU"
    if cls == "CuDNNGRU":
        kernel, rec = _cudnn_blocks(kernel, rec, units, 3)
        if bias is None or bias.shape != (2 * u3,):
            raise _bad(ctx, e, f"CuDNNGRU bias must be ({2 * u3},), got "
                               f"{None if bias is None else bias.shape}")
        bias = bias.reshape(2, u3)            # [input | recurrent]: a reset-after GRU
        reset_after = True
    if bias is not None:
        if bias.shape == (2, u3):
            found = True
        elif bias.shape == (u3,):
            found = False
        else:
            raise _bad(ctx, e, f"bias has shape {bias.shape}, expected (2, {u3}) "
                               f"(reset_after=True) or ({u3},) (reset_after=False)")
        if reset_after is not None and reset_after != found:
            raise _bad(ctx, e, f"bias has shape {bias.shape}, which does not fit "
                               f"reset_after={reset_after}")
        reset_after = found
    elif reset_after is None:
        reset_after = default_reset_after
    w_ih, w_hh = _zrh_to_rzn(kernel).T, _zrh_to_rzn(rec).T
    if bias is None:
        return w_ih, w_hh, None, None, reset_after
    if reset_after:
        return w_ih, w_hh, _zrh_to_rzn(bias[0]), _zrh_to_rzn(bias[1]), True
    return w_ih, w_hh, _zrh_to_rzn(bias), None, False


def _cell(ctx: _Ctx, e: _Entry, cls: str, cfg: Mapping[str, Any], arrays: list[np.ndarray],
          names: list[str] | None, notes: list[str], go_backwards: bool) -> CellSpec:
    """One LSTM / GRU / SimpleRNN cell from its config and weights (``e`` names it in
    messages)."""
    if cfg.get("time_major"):
        raise _refuse(ctx, e, "option time_major=True is not supported")
    units = cfg.get("units", cfg.get("output_dim"))
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise _bad(ctx, e, f"units={units!r} is not a positive integer")
    use_bias = bool(cfg.get("use_bias", cfg.get("bias", True)))
    keras1 = (ctx.major or 3) < 2
    if cls in ("CuDNNLSTM", "CuDNNGRU"):
        act, ract = "tanh", "sigmoid"
        use_bias = True
        notes.append(f"{e.name}: {_CUDNN_NOTE}")
    else:
        act = _activation(ctx, e, cfg.get("activation", "tanh"), "activation",
                          CELL_ACTIVATIONS)
        ract = "sigmoid"
        if cls not in _RNN_CLASSES:
            ract_raw = cfg.get("recurrent_activation",
                               cfg.get("inner_activation", "hard_sigmoid" if keras1
                                       else "sigmoid"))
            ract = _activation(ctx, e, ract_raw, "recurrent_activation", CELL_ACTIVATIONS)
    common = dict(activation=act, return_last=not cfg.get("return_sequences", False),
                  go_backwards=go_backwards)
    if cls in _LSTM_CLASSES:
        w_ih, w_hh, bias = _lstm_weights(ctx, e, cls, arrays, names, units, use_bias, notes)
        return LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=bias, recurrent_activation=ract,
                             **common)
    if cls in _GRU_CLASSES:
        cfg_ra = cfg.get("reset_after")
        w_ih, w_hh, b_ih, b_hh, reset_after = _gru_weights(
            ctx, e, cls, arrays, names, units, use_bias,
            None if cfg_ra is None else bool(cfg_ra), default_reset_after=(ctx.major or 3) >= 3,
            notes=notes)
        return GRULayerSpec(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                            reset_after=reset_after, recurrent_activation=ract, **common)
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 1, use_bias)
    if bias is not None and bias.shape != (units,):
        raise _bad(ctx, e, f"bias has shape {bias.shape}, expected ({units},)")
    return SimpleRNNLayerSpec(w_ih=kernel.T, w_hh=rec.T, bias=bias, **common)


# --------------------------------------------------------------------------------------------
# The chain -> ModelSpec
# --------------------------------------------------------------------------------------------

@dataclass
class _State:
    layers: list[LayerSpec] = field(default_factory=list)
    feat: int | None = None                 # features per step of the current tensor
    time_axis: bool = True                  # False after return_sequences=False
    mask: _Entry | None = None              # the Masking / Embedding producing the mask
    pending_masks: list[int] = field(default_factory=list)  # Masking spec slots, size unknown
    masking_value: dict[int, float] = field(default_factory=dict)
    stateful: bool = False
    fold_ok: bool = False                   # an Activation may merge into the last spec layer
    notes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the Keras layer behind each spec layer

    def push(self, spec: LayerSpec, name: str) -> None:
        """Append a spec layer converted from Keras layer ``name``."""
        self.layers.append(spec)
        self.names.append(name)


def _set_feat(st: _State, n: int) -> None:
    for k in st.pending_masks:
        st.layers[k] = MaskingSpec(size=n, mask_value=st.masking_value[k])
    st.pending_masks.clear()
    st.feat = n


def _check_mask_ref(ctx: _Ctx, arch: _Arch, e: _Entry, st: _State) -> None:
    """A functional layer's explicit mask argument must be the chain's own Masking/Embedding
    mask (Keras 3.15 serializes it as NotEqual [+ Any] op-layers)."""
    if e.mask_ref is None:
        return
    src = st.mask

    def op(ref: tuple[str, int, int] | None, cls: str) -> _Entry | None:
        x = arch.by_name.get(ref[0]) if ref is not None else None
        return x if x is not None and x.class_name == cls and ref[2] == 0 else None

    def args(x: _Entry) -> list[Any]:
        return _parse_node(ctx, x, (x.inbound_nodes or [None])[0])[0] if x.inbound_nodes else []

    ok = False
    if src is not None and src.class_name == "Masking":
        any_op = op(e.mask_ref, "Any")
        if any_op is not None and any_op.config.get("axis") in (-1, 2, [-1], [2]) \
                and not any_op.config.get("keepdims", False):
            a = args(any_op)
            ne = op(_as_ref(a[0]) if len(a) == 1 else None, "NotEqual")
            if ne is not None:
                b = args(ne)
                ok = (len(b) == 2 and _as_ref(b[0]) == src.input_ref
                      and isinstance(b[1], (int, float))
                      and float(b[1]) == float(src.config.get("mask_value", 0.0)))
    elif src is not None and src.class_name == "Embedding":
        ne = op(e.mask_ref, "NotEqual")
        if ne is not None:
            b = args(ne)
            ok = (len(b) == 2 and _as_ref(b[0]) == src.input_ref
                  and isinstance(b[1], (int, float)) and float(b[1]) == 0.0)
    if not ok:
        raise _refuse(ctx, e, f"called with an explicit mask ({e.mask_ref[0]!r}) that is not "
                              "the mask of a Masking or Embedding(mask_zero=True) layer before "
                              "it; such masks are not supported")


def _convert(ctx: _Ctx, arch: _Arch, weights: WeightFn) -> ModelSpec:
    st = _State()
    for e in arch.chain:                      # name unsupported layers before anything else
        _check_class(ctx, e)
    if arch.input_entry is not None:
        for opt in ("sparse", "ragged"):
            if arch.input_entry.config.get(opt):
                raise _refuse(ctx, arch.input_entry, f"option {opt}=True is not supported")
    policies = sorted({p for p in (_policy(e.config) for e in arch.chain)
                       if p not in ("", "float32")})
    if policies:
        st.notes.append(f"Keras dtype policy {', '.join(policies)}: lstm_fast computes in "
                        "float32, so outputs differ from Keras's by that rounding")
    shape = arch.batch_shape
    ids_input = False
    if shape is not None:
        if len(shape) == 3:
            st.feat = int(shape[2]) if shape[2] is not None else None
        elif len(shape) == 2:
            ids_input = True
        else:
            raise _refuse(ctx, None, f"input shape {list(shape)} is not supported (expected "
                                     "(batch, time, features) or (batch, time) ids)")
    for pos, e in enumerate(arch.chain):
        _check_common(ctx, e)
        _check_mask_ref(ctx, arch, e, st)
        _convert_layer(ctx, arch, e, pos, st, ids_input, weights)
    if not st.layers or not any(L.kind in RECURRENT_KINDS for L in st.layers):
        raise _refuse(ctx, None, "the model has no recurrent layer (LSTM, GRU, SimpleRNN or "
                                 "Bidirectional)")
    if st.pending_masks:
        raise _refuse(ctx, None, "cannot tell the feature size of the Masking layer")
    if ids_input and st.layers[0].kind != "embedding":
        raise _refuse(ctx, None, f"input shape {list(shape or ())} has no feature axis but "
                                 "the first layer is not an Embedding")
    meta = {"source_framework": "keras", "keras_version": ctx.keras_version or "unknown",
            "source": ctx.source, "backend": ctx.backend or "unknown", "format": ctx.fmt}
    if arch.model_name:
        meta["model_name"] = arch.model_name
    if st.notes:
        meta["notes"] = "; ".join(st.notes)
    layers, folded = fold_affines(st.layers, st.names)
    if folded:
        meta["folded"] = "; ".join(folded)
    try:
        return ModelSpec(layers=tuple(layers), mask_semantics="keras",
                         stateful=st.stateful, metadata=meta)
    except WeightsError as err:
        raise WeightsError(f"{err} [in {ctx.source}]") from None


def _check_class(ctx: _Ctx, e: _Entry) -> None:
    cls = e.class_name
    if cls == "RNN":
        _rnn_cells(ctx, e)                        # refuses unsupported cells by name
    if cls in _KNOWN:
        return
    if cls == "InputLayer":
        raise _refuse(ctx, e, "an InputLayer inside the chain is not supported")
    if cls in ("Sequential", "Functional", "Model"):
        raise _refuse(ctx, e, "nested models are not supported; flatten the model first")
    raise _refuse(ctx, e, "this layer type is not supported")


def _convert_layer(ctx: _Ctx, arch: _Arch, e: _Entry, pos: int, st: _State, ids_input: bool,
                   weights: WeightFn) -> None:
    cls, cfg = e.class_name, e.config
    _check_class(ctx, e)
    if cls in _IDENTITY:
        return

    if cls == "Embedding":
        if st.layers:
            raise _refuse(ctx, e, "an Embedding must be the first layer")
        if arch.batch_shape is not None and not ids_input:
            raise _refuse(ctx, e, f"input shape {list(arch.batch_shape)} gives the Embedding "
                                  "a feature axis; only (batch, time) integer ids are "
                                  "supported")
        arrays, _ = weights(e)
        if len(arrays) != 1 or arrays[0].ndim != 2:
            raise _bad(ctx, e, f"expected one (input_dim, output_dim) array, found "
                               f"{[a.shape for a in arrays]}")
        table = arrays[0]
        if cfg.get("input_dim") not in (None, table.shape[0]) or cfg.get(
                "output_dim") not in (None, table.shape[1]):
            raise _bad(ctx, e, f"embeddings have shape {table.shape}, the config says "
                               f"({cfg.get('input_dim')}, {cfg.get('output_dim')})")
        mask_zero = bool(cfg.get("mask_zero", False))
        st.push(EmbeddingSpec(weight=table, mask_zero=mask_zero), e.name)
        if mask_zero:
            st.mask = e
        st.feat = int(table.shape[1])
        st.fold_ok = False
        return

    if cls == "Masking":
        for prev in st.layers:
            if prev.kind in ("embedding", *RECURRENT_KINDS):
                raise _refuse(ctx, e, f"a Masking layer after an {prev.kind} layer is not "
                                      "supported (only on the model input or after Dense)")
        if st.mask is not None:
            raise _refuse(ctx, e, "a second mask source is not supported")
        if not st.time_axis:
            raise _refuse(ctx, e, "Masking on an input without a time axis is not supported")
        value = float(cfg.get("mask_value", 0.0))
        if not math.isfinite(value):
            raise _refuse(ctx, e, f"mask_value={value} is not supported")
        if st.feat is None:
            st.pending_masks.append(len(st.layers))
            st.masking_value[len(st.layers)] = value
            st.push(MaskingSpec(size=1, mask_value=value), e.name)   # resized later
        else:
            st.push(MaskingSpec(size=st.feat, mask_value=value), e.name)
        st.mask = e
        st.fold_ok = False
        return

    if cls == "Dense" or cls == "TimeDistributed":
        inner = cfg
        if cls == "TimeDistributed":
            layer = cfg.get("layer")
            inner_cls = layer.get("class_name") if isinstance(layer, dict) else None
            if inner_cls in _IDENTITY:
                return
            if inner_cls != "Dense":
                raise _refuse(ctx, e, f"TimeDistributed({inner_cls}) is not supported (only "
                                      "TimeDistributed(Dense))")
            if not st.time_axis:
                raise _refuse(ctx, e, "TimeDistributed after a layer that returns only its "
                                      "last step")
            inner = layer.get("config") or {}
            _check_common(ctx, _Entry(e.name, "Dense", inner))
        arrays, names = weights(e)
        spec = _dense(ctx, e, inner, arrays, names, st.feat)
        _set_feat(st, spec.input_size)
        st.push(spec, e.name)
        st.feat = spec.output_size
        st.fold_ok = spec.activation == "linear"
        return

    if cls == "Activation":
        _activation_layer(ctx, e, st)
        return

    if cls in _BN_CLASSES:
        _batchnorm(ctx, e, st, weights)
        return

    if cls == "UnitNormalization":
        _unit_normalization(ctx, e, st)
        return

    if cls in _CELL_CLASSES or cls == "RNN":
        _recurrent(ctx, arch, e, st, weights)
        return

    if cls == "Bidirectional":
        _bidirectional(ctx, arch, e, st, weights)
        return

    raise _refuse(ctx, e, "this layer type is not supported")  # pragma: no cover


def _activation_layer(ctx: _Ctx, e: _Entry, st: _State) -> None:
    """``Activation``: merged into a linear Dense or a batch normalisation right before it,
    else a layer of its own (an :class:`AffineSpec` without scale and shift)."""
    act = _activation(ctx, e, e.config.get("activation"), "activation", DENSE_ACTIVATIONS)
    if act == "linear":
        return
    prev = st.layers[-1] if st.layers else None
    if st.fold_ok and isinstance(prev, DenseSpec):
        st.layers[-1] = DenseSpec(weight=prev.weight, bias=prev.bias, activation=act)
    elif st.fold_ok and isinstance(prev, AffineSpec):
        st.layers[-1] = AffineSpec(size=prev.size, scale=prev.scale, shift=prev.shift,
                                   activation=act)
    else:
        st.push(AffineSpec(size=_known_feat(ctx, e, st), activation=act), e.name)
    st.fold_ok = False


def _known_feat(ctx: _Ctx, e: _Entry, st: _State) -> int:
    if st.feat is None:
        raise _refuse(ctx, e, "cannot tell its feature size (give the model input a feature "
                              "size)")
    return st.feat


def _check_feature_axis(ctx: _Ctx, e: _Entry, st: _State) -> None:
    """Refuse an ``axis`` option other than the feature (last) axis."""
    axis = e.config.get("axis", -1)
    value = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    last = 2 if st.time_axis else 1                  # tf-keras saves the built axis, e.g. [2]
    if isinstance(value, bool) or not isinstance(value, int) or value not in (-1, last):
        raise _refuse(ctx, e, f"option axis={_short(axis)} is not supported (only the feature "
                              f"axis, -1 or {last})")


#: BatchNormalization weights in Keras's order (gamma only with scale, beta only with center).
_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _batchnorm(ctx: _Ctx, e: _Entry, st: _State, weights: WeightFn) -> None:
    """``BatchNormalization`` in its inference form (moving statistics) as an
    :class:`AffineSpec`; :func:`fold_affines` later folds it into a neighbour where exact."""
    cfg = e.config
    _check_feature_axis(ctx, e, st)
    if cfg.get("renorm"):
        raise _refuse(ctx, e, "option renorm=True is not supported")
    if cfg.get("virtual_batch_size") is not None:
        raise _refuse(ctx, e, f"option virtual_batch_size={cfg['virtual_batch_size']!r} is not "
                              "supported")
    if (ctx.major or 3) < 2:
        raise _refuse(ctx, e, "a Keras 1 BatchNormalization is not supported (its running_std "
                              "is a standard deviation in Keras 1.0 and a variance from 1.1, "
                              "and Keras 1 files do not record their version)")
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    arrays, names = weights(e)
    arrays = _by_suffix(arrays, names, _BN_WEIGHTS)
    expected = int(scale) + int(center) + 2
    if len(arrays) != expected:
        raise _bad(ctx, e, f"expected {expected} weight arrays (scale={scale}, center="
                           f"{center}), found {len(arrays)}")
    size = st.feat if st.feat is not None else arrays[-1].shape[0]
    if any(a.shape != (size,) for a in arrays):
        raise _bad(ctx, e, f"weights have shapes {[a.shape for a in arrays]}, expected "
                           f"({size},) each")
    eps = cfg.get("epsilon", 1e-3)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise _bad(ctx, e, f"epsilon={eps!r} is not a number >= 0")
    try:
        spec = batchnorm_affine(arrays[0] if scale else None, arrays[int(scale)] if center
                                else None, arrays[-2], arrays[-1], float(eps))
    except WeightsError as err:
        raise _bad(ctx, e, str(err)) from None
    _set_feat(st, size)
    st.push(spec, e.name)
    st.fold_ok = True


def _version_pair(ctx: _Ctx) -> tuple[int, int]:
    """(major, minor) of the producing Keras; an unknown part counts as the newest."""
    parts = [int(p) for p in re.findall(r"\d+", str(ctx.keras_version or ""))[:2]]
    major, minor = (parts + [99, 99])[:2]
    return major, minor


def _unit_normalization(ctx: _Ctx, e: _Entry, st: _State) -> None:
    """``UnitNormalization`` over the feature axis as a :class:`NormalizeSpec`.

    NormalizeSpec computes ``x / max(||x||, epsilon)``. Keras 3.6+ computes
    ``x * min(rsqrt(sum x^2), 1 / 1e-12)`` (``ops.normalize``), which is that with
    epsilon = 1e-12. tf-keras and Keras 3 before 3.6 compute ``x * rsqrt(max(sum x^2, 1e-12))``
    (``tf.math.l2_normalize``): the bound is on the squared norm, so epsilon = sqrt(1e-12) =
    1e-6 on the norm.
    """
    _check_feature_axis(ctx, e, st)
    eps = 1e-12 if _version_pair(ctx) >= (3, 6) else 1e-6
    st.push(NormalizeSpec(size=_known_feat(ctx, e, st), epsilon=eps), e.name)
    st.fold_ok = False


def _rnn_cells(ctx: _Ctx, e: _Entry) -> list[tuple[_Entry, str]]:
    """The cells of an ``RNN`` layer as (entry, layer class computing the same), in order.

    Each entry's config is the cell's plus the wrapper's options (``return_sequences``,
    ``go_backwards``, ...). A ``StackedRNNCells`` steps its cells one after the other at each
    step, which is a stack of layers where only the first reads the steps backwards and all but
    the last return sequences.
    """
    cell = e.config.get("cell")
    stacked = isinstance(cell, list) or (isinstance(cell, dict)
                                         and cell.get("class_name") == "StackedRNNCells")
    raws = cell if isinstance(cell, list) else (
        (cell.get("config") or {}).get("cells") if stacked and isinstance(cell, dict)
        else [cell])
    if not isinstance(raws, list) or not raws:
        raise ModelFileError(f"{ctx.source}: layer {e.name!r} (RNN) has no readable cell "
                             "config")
    out = []
    for k, raw in enumerate(raws):
        ccls = raw.get("class_name") if isinstance(raw, dict) else None
        if ccls not in _CELL_LAYERS:
            raise _refuse(ctx, e, f"a cell of class {ccls} is not supported (RNN takes "
                                  "LSTMCell, GRUCell, SimpleRNNCell or a StackedRNNCells of "
                                  "them)")
        if not isinstance(raw.get("config"), dict):
            raise ModelFileError(f"{ctx.source}: layer {e.name!r} (RNN) has no readable "
                                 f"{ccls} config")
        cfg = dict(raw["config"])
        cfg.update({key: e.config[key] for key in _WRAPPER_OPTIONS if key in e.config})
        if k < len(raws) - 1:
            cfg["return_sequences"] = True
        if k > 0:
            cfg["go_backwards"] = False
        label = f"RNN(StackedRNNCells[{k}]: {ccls})" if stacked else f"RNN({ccls})"
        out.append((_Entry(e.name, label, cfg), _CELL_LAYERS[str(ccls)]))
    return out


def _split_cells(ctx: _Ctx, e: _Entry, cells: list[tuple[_Entry, str]],
                 arrays: list[np.ndarray], names: list[str] | None
                 ) -> list[tuple[list[np.ndarray], list[str] | None]]:
    """A layer's weight arrays cut into one chunk per cell (kernel, recurrent kernel and, with
    ``use_bias``, a bias each, in the cells' order)."""
    if len(cells) == 1:
        return [(arrays, names)]
    counts = [3 if ce.config.get("use_bias", True) else 2 for ce, _ in cells]
    if sum(counts) != len(arrays):
        raise _bad(ctx, e, f"expected {sum(counts)} weight arrays for {len(cells)} stacked "
                           f"cells, found {len(arrays)}")
    out: list[tuple[list[np.ndarray], list[str] | None]] = []
    start = 0
    for n in counts:
        out.append((arrays[start:start + n], names[start:start + n] if names else None))
        start += n
    return out


def _append_recurrent(ctx: _Ctx, e: _Entry, st: _State, spec: LayerSpec,
                      stateful: bool, name: str) -> None:
    if st.feat is not None and spec.input_size != st.feat:
        raise _bad(ctx, e, f"kernel expects {spec.input_size} input features, the previous "
                           f"layer gives {st.feat}")
    _set_feat(st, spec.input_size)
    st.push(spec, name)
    st.feat = spec.output_size
    st.fold_ok = False
    if stateful:
        st.stateful = True
    if spec.return_last:
        st.time_axis = False
        st.mask = None


def _recurrent(ctx: _Ctx, arch: _Arch, e: _Entry, st: _State, weights: WeightFn) -> None:
    """A plain LSTM / GRU / SimpleRNN layer, or an ``RNN`` over one cell or a stack of cells
    (one spec layer per cell)."""
    cfg = e.config
    if not st.time_axis:
        raise _refuse(ctx, e, "a recurrent layer after a layer that returns only its last "
                              "step")
    if cfg.get("return_state") and arch.kind == "Sequential":
        raise _refuse(ctx, e, "option return_state=True is not supported in a Sequential "
                              "model (its output would be a list)")
    # Functional: the chain builder already checked that only output #0 is used; harmless.
    if cfg.get("zero_output_for_mask") and st.mask is not None:
        raise _refuse(ctx, e, "option zero_output_for_mask=True with a mask is not supported")
    cells = _rnn_cells(ctx, e) if e.class_name == "RNN" else [(e, e.class_name)]
    if len(cells) > 1 and cfg.get("go_backwards") and st.mask is not None:
        raise _refuse(ctx, e, "option go_backwards=True over StackedRNNCells with a mask is "
                              "not supported")
    arrays, names = weights(e)
    chunks = _split_cells(ctx, e, cells, arrays, names)
    for k, ((ce, cls), (a, n)) in enumerate(zip(cells, chunks, strict=True)):
        _check_common(ctx, ce)
        spec = _cell(ctx, ce, cls, ce.config, a, n, st.notes,
                     go_backwards=bool(ce.config.get("go_backwards", False)))
        _append_recurrent(ctx, ce, st, spec, bool(cfg.get("stateful")),
                          e.name if len(cells) == 1 else f"{e.name}[{k}]")


def _inner(ctx: _Ctx, e: _Entry, raw: Any, which: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict) or \
            not isinstance(raw.get("class_name"), str):
        raise ModelFileError(f"{ctx.source}: layer {e.name!r} (Bidirectional) has no readable "
                             f"{which} config")
    return raw["class_name"], dict(raw["config"])


def _unwrap_rnn(ctx: _Ctx, e: _Entry, cls: str, cfg: dict[str, Any]
                ) -> tuple[str, dict[str, Any], str]:
    """A Bidirectional's inner layer as (layer class, config, label): an ``RNN`` over one cell
    becomes that cell's layer form."""
    if cls != "RNN":
        return cls, cfg, cls
    cells = _rnn_cells(ctx, _Entry(e.name, "RNN", cfg))
    if len(cells) != 1:
        raise _refuse(ctx, e, "Bidirectional(RNN(StackedRNNCells)) is not supported (each "
                              "direction would run the whole stack); stack Bidirectional "
                              "layers instead")
    ce, layer_cls = cells[0]
    return layer_cls, ce.config, ce.class_name


def _bidirectional(ctx: _Ctx, arch: _Arch, e: _Entry, st: _State, weights: WeightFn) -> None:
    cfg = e.config
    if not st.time_axis:
        raise _refuse(ctx, e, "a recurrent layer after a layer that returns only its last "
                              "step")
    merge = cfg.get("merge_mode", "concat")
    if merge is None:
        raise _refuse(ctx, e, "option merge_mode=None is not supported (the layer returns the "
                              "two directions as two outputs); use concat, sum, ave or mul")
    if merge not in MERGE_MODES:
        raise _refuse(ctx, e, f"option merge_mode={merge!r} is not supported")
    fcls, fcfg, flabel = _unwrap_rnn(ctx, e, *_inner(ctx, e, cfg.get("layer"), "layer"))
    if cfg.get("backward_layer") is None:       # Keras 2: the backward copy is implied
        bcls, bcfg = fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
        blabel = flabel
    else:
        bcls, bcfg, blabel = _unwrap_rnn(ctx, e, *_inner(ctx, e, cfg["backward_layer"],
                                                         "backward_layer"))
    for cls in (fcls, bcls):
        if cls not in _CELL_CLASSES:
            raise _refuse(ctx, e, f"Bidirectional({cls}) is not supported (only LSTM, GRU and "
                                  "SimpleRNN inside)")
    kinds = [("lstm" if c in _LSTM_CLASSES else "gru" if c in _GRU_CLASSES else "rnn")
             for c in (fcls, bcls)]
    if kinds[0] != kinds[1]:
        raise _refuse(ctx, e, f"a backward_layer of class {bcls} with a forward {fcls} is not "
                              "supported (both directions must be the same kind)")
    fe = _Entry(e.name, f"Bidirectional({flabel})", fcfg)
    be = _Entry(e.name, f"Bidirectional({blabel}, backward)", bcfg)
    for x in (fe, be):
        _check_common(ctx, x)
        if x.config.get("stateful"):
            raise _refuse(ctx, x, "option stateful=True inside a Bidirectional is not supported")
        if x.config.get("return_state") and arch.kind == "Sequential":
            raise _refuse(ctx, x, "option return_state=True is not supported in a Sequential "
                                  "model (its output would be a list)")
    if fcfg.get("go_backwards") or not bcfg.get("go_backwards"):
        raise _refuse(ctx, e, "a forward layer with go_backwards=True (or a backward_layer "
                              "with go_backwards=False) is not supported")
    if bool(fcfg.get("return_sequences", False)) != bool(bcfg.get("return_sequences", False)):
        raise _bad(ctx, e, "the two directions disagree on return_sequences")
    arrays, names = weights(e)
    if len(arrays) % 2:
        raise _bad(ctx, e, f"expected the forward and backward weights (an even number of "
                           f"arrays), found {len(arrays)}")
    half = len(arrays) // 2                   # forward first, as Keras's load_weights splits
    fwd = _cell(ctx, fe, fcls, fcfg, arrays[:half], names[:half] if names else None, st.notes,
                go_backwards=False)
    bwd = _cell(ctx, be, bcls, bcfg, arrays[half:], names[half:] if names else None, st.notes,
                go_backwards=False)
    if (fwd.input_size, fwd.output_size) != (bwd.input_size, bwd.output_size):
        raise _refuse(ctx, e, f"the backward layer's size ({bwd.output_size} units) differs "
                              f"from the forward one's ({fwd.output_size}); not supported")
    if fwd.kind == "gru" and fwd.reset_after != bwd.reset_after:  # type: ignore[union-attr]
        raise _refuse(ctx, e, "the two directions differ in reset_after; not supported")
    _append_recurrent(ctx, e, st, BidirectionalSpec(forward=fwd, backward=bwd,
                                                    merge_mode=merge), False, e.name)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

@converter_errors
def spec_from_keras_file(path: str | os.PathLike[str], *, config: Any = None,
                         keras_version: str | None = None) -> ModelSpec:
    """Read a Keras model file into a :class:`ModelSpec` (needs ``h5py``, not ``keras``).

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` zip, a legacy ``.h5`` full model, a legacy ``save_weights`` ``.h5`` file,
        or a Keras 3 ``.weights.h5`` file. The format is detected from the content.
    config : dict, str or path-like, optional
        The architecture (``model.to_json()`` output: a dict, the JSON text, or a path to a
        file holding it). Required for weights-only files; for full model files it replaces
        the stored architecture.
    keras_version : str, optional
        The Keras version that produced the file, when the file does not record it (it decides
        what ``hard_sigmoid`` means: ``clip(0.2x+0.5)`` before Keras 3, ``clip(x/6+0.5)``
        from Keras 3 on). Overrides the recorded version.

    Returns
    -------
    ModelSpec
        With ``mask_semantics="keras"``, ``stateful`` set for ``stateful=True`` models, and
        metadata ``source_framework``, ``keras_version``, ``source``, ``backend``, ``format``.

    Notes
    -----
    The file is read in a child process with a time and memory limit (HDF5 can loop forever
    or allocate gigabytes on corrupted metadata); see ``docs/security.md``.

    Raises
    ------
    UnsupportedModelError
        A layer or option lstm_fast does not run; the message names the layer, its class, the
        option and the file.
    ModelFileError
        The file is not a Keras model, is corrupted or hostile (including a read that crashes
        or exceeds its time or memory limit), or its weights do not match its config.
    ArgumentTypeError
        ``config`` or ``keras_version`` has the wrong type.
    OSError
        ``path`` cannot be opened.
    """
    from ._bounded import read_keras_file

    source = os.fspath(path)
    if keras_version is not None and not isinstance(keras_version, str):
        raise ArgumentTypeError(f"keras_version must be a str such as '2.15.0', got "
                                f"{type(keras_version).__name__}")
    with open(source, "rb"):  # a missing or unreadable path is an OSError, as for open()
        pass
    cfg = _config_arg(config, source)
    # HDF5 is read in a bounded child
    return read_keras_file(source, cfg, keras_version, _spec_from_keras_file_here)


def _spec_from_keras_file_here(path: str, config: Any, keras_version: str | None
                               ) -> ModelSpec:
    """:func:`spec_from_keras_file` in this process (no time or memory bound)."""
    with _open_keras_file(path, config, keras_version) as (ctx, arch, weights):
        return _convert(ctx, arch, weights)


def spec_from_keras(model: Any) -> ModelSpec:
    """Convert a live Keras ``Sequential`` / functional model into a :class:`ModelSpec`.

    Uses ``model.get_config()`` and each layer's ``get_weights()``; imports ``keras``.

    Raises
    ------
    UnsupportedModelError
        As :func:`spec_from_keras_file`.
    """
    import keras

    name = getattr(model, "name", "?")
    source = f"live Keras model {name!r}"
    if isinstance(model, keras.Sequential):
        class_name = "Sequential"
    elif isinstance(model, keras.Model) and type(model).__name__ == "Functional":
        class_name = "Functional"
    else:
        raise UnsupportedModelError(
            f"model: {type(model).__name__} is not supported (only Sequential and functional "
            f"models) [in {source}]")
    try:
        backend = keras.backend.backend()
    except Exception:                                       # pragma: no cover
        backend = None
    ctx = _Ctx(source=source, keras_version=keras.__version__, backend=backend, fmt="live")
    arch = _arch_from_config(ctx, {"class_name": class_name, "config": model.get_config()})

    def get(e: _Entry) -> tuple[list[np.ndarray], list[str] | None]:
        layer = model.get_layer(e.name)
        return [np.asarray(w) for w in layer.get_weights()], None

    return _convert(ctx, arch, get)
