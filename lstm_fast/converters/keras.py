"""Keras -> lstm_fast: turn a Keras model (file or live object) into a :class:`ModelSpec`.

Reading files needs only ``h5py`` and numpy; ``keras`` is imported only by :func:`from_keras`
(a live model). Supported inputs:

- Keras 3 ``.keras`` zips (``metadata.json``, ``config.json``, ``model.weights.h5``) and
  ``tf-keras`` 2.13+ ``.keras`` zips, which use the same layout;
- legacy HDF5 full models (``model.save('x.h5')``) written by Keras 3, tf.keras / Keras 2 or
  Keras 1;
- weights-only files plus an architecture given as ``config=``: legacy ``save_weights`` HDF5
  (``layer_names`` on the root) and Keras 3 ``.weights.h5`` files.

The model must be a ``Sequential`` or a functional model that is a single chain of layers (one
input, one output, every layer called once on one tensor). Supported layers: ``InputLayer``,
``Embedding``, ``Masking``, ``Dense``, ``TimeDistributed(Dense)``, ``Activation`` (folded into
the ``Dense`` before it), ``LSTM`` (also ``CuDNNLSTM`` and Keras 1's 12-array LSTM), ``GRU``
(both ``reset_after`` variants, ``CuDNNGRU`` and Keras 1's 9-array GRU), ``SimpleRNN``,
``Bidirectional`` over any of those (``merge_mode`` concat, sum, ave or mul) and the layers
that do nothing at inference (``Dropout`` and friends). Anything else raises
:class:`~lstm_fast.errors.UnsupportedModelError` naming the layer, its class, the option and the
file. See ``FORMATS.md`` section 2 for the conventions mirrored here.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelFileError, UnsupportedModelError, WeightsError
from ..spec import (
    CELL_ACTIVATIONS,
    DENSE_ACTIVATIONS,
    MERGE_MODES,
    RECURRENT_KINDS,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    MaskingSpec,
    ModelSpec,
    SimpleRNNLayerSpec,
)

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["from_keras", "spec_from_keras", "spec_from_keras_file"]

#: Layers that are the identity at inference time.
_IDENTITY = frozenset({
    "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization",
})
_LSTM_CLASSES = frozenset({"LSTM", "CuDNNLSTM", "LSTMV1", "LSTMV2"})
_GRU_CLASSES = frozenset({"GRU", "CuDNNGRU", "GRUV1", "GRUV2"})
_RNN_CLASSES = frozenset({"SimpleRNN"})
#: Recurrent layers (one cell each) that map to a spec layer.
_CELL_CLASSES = _LSTM_CLASSES | _GRU_CLASSES | _RNN_CLASSES
#: Functional op-layers Keras 3.15 serializes to compute a Masking / Embedding mask.
_MASK_OPS = frozenset({"NotEqual", "Any"})
#: Config keys of a layer call that we understand (any other call argument is refused).
_CALL_KWARGS = frozenset({"training", "mask", "initial_state"})
#: Keras activation names -> spec names (``hard_sigmoid`` depends on the Keras version).
_ACTIVATIONS = {
    "linear": "linear", "relu": "relu", "relu6": "relu6", "tanh": "tanh",
    "sigmoid": "sigmoid", "softsign": "softsign", "softplus": "softplus", "elu": "elu",
    "selu": "selu", "silu": "silu", "swish": "silu", "exponential": "exponential",
    # Keras 3 and tf-keras: gelu(x, approximate=False) = x * Phi(x), the exact erf form.
    "gelu": "gelu", "softmax": "softmax", "log_softmax": "log_softmax",
}
_MAX_JSON_BYTES = 64 << 20
_CUDNN_NOTE = "cuDNN weight layout converted as tf-keras does (FORMATS.md 2.6)"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """One layer of the model config."""

    name: str
    class_name: str
    config: dict[str, Any]
    module: str | None = None
    inbound_nodes: Any = None
    input_ref: tuple[str, int, int] | None = None
    mask_ref: tuple[str, int, int] | None = None

    @property
    def is_op(self) -> bool:
        """A ``keras.ops`` operation serialized as a pseudo-layer (not in ``model.layers``)."""
        return (self.module or "").startswith("keras.src.ops") or self.class_name in _MASK_OPS


@dataclass
class _Arch:
    """A model config reduced to a chain of layers."""

    kind: str                                   # "Sequential" or "Functional"
    chain: list[_Entry]                         # the layers after the input, in order
    order: list[_Entry]                         # layers in ``model.layers`` order
    by_name: dict[str, _Entry] = field(default_factory=dict)
    batch_shape: tuple[int | None, ...] | None = None
    model_name: str = ""
    input_entry: _Entry | None = None


@dataclass
class _Ctx:
    source: str                                 # file path or "live Keras model '...'"
    keras_version: str | None
    backend: str | None
    fmt: str

    @property
    def major(self) -> int | None:
        return _major(self.keras_version)


def _major(version: str | None) -> int | None:
    if version is None:
        return None
    m = re.match(r"\s*(\d+)", str(version))
    return int(m.group(1)) if m else None


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.str_):
        return str(value)
    return value


def _attr_str(obj: Any, key: str) -> str | None:
    if key not in obj.attrs:
        return None
    value = _decode(obj.attrs[key])
    if isinstance(value, np.ndarray):
        value = "".join(str(_decode(v)) for v in value.ravel())
    return str(value)


def _attr_list(obj: Any, key: str) -> list[str]:
    """A list-of-strings attribute, also when HDF5's 64 KB limit split it into key0, key1, ..."""
    if key in obj.attrs:
        chunks = [obj.attrs[key]]
    else:
        chunks = []
        while f"{key}{len(chunks)}" in obj.attrs:
            chunks.append(obj.attrs[f"{key}{len(chunks)}"])
    out: list[str] = []
    for chunk in chunks:
        arr = np.asarray(chunk)
        if arr.dtype.kind == "f" and arr.size == 0:        # Keras writes [] as float64
            continue
        out.extend(str(_decode(v)) for v in arr.ravel())
    return out


def _load_json(text: str | bytes, what: str, source: str) -> Any:
    if len(text) > _MAX_JSON_BYTES:
        raise ModelFileError(f"{source}: {what} is larger than {_MAX_JSON_BYTES} bytes")
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{source}: {what} is not valid JSON ({e})") from None


def _read_dataset(ds: Any, source: str) -> np.ndarray:
    """A weight array as float32/float64 numpy; bfloat16 (stored as opaque 2 bytes) decoded."""
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise ModelFileError(f"{source}: {ds.name} is not a dataset")
    if ds.dtype.kind == "V" and ds.dtype.itemsize == 2 and _attr_str(ds, "dtype") == "bfloat16":
        bits = np.asarray(ds[()]).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if ds.dtype.kind not in "fiu":
        raise ModelFileError(f"{source}: weight {ds.name} has unsupported dtype {ds.dtype}")
    return np.asarray(ds[()])


# --------------------------------------------------------------------------------------------
# Config -> chain
# --------------------------------------------------------------------------------------------

def _refuse(ctx: _Ctx, e: _Entry | None, detail: str) -> UnsupportedModelError:
    where = f"layer {e.name!r} ({e.class_name})" if e is not None else "model"
    return UnsupportedModelError(f"{where}: {detail} [in {ctx.source}]")


def _as_ref(value: Any) -> tuple[str, int, int] | None:
    """A tensor reference from either serialization style, or None if ``value`` is not one."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        hist = (value.get("config") or {}).get("keras_history")
        if isinstance(hist, (list, tuple)) and len(hist) == 3:
            return str(hist[0]), int(hist[1]), int(hist[2])
        return None
    if (isinstance(value, (list, tuple)) and len(value) in (3, 4) and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:3])):
        return value[0], int(value[1]), int(value[2])
    return None


def _contains_tensor(value: Any) -> bool:
    if _as_ref(value) is not None and isinstance(value, dict):
        return True
    if isinstance(value, dict):
        return any(_contains_tensor(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_tensor(v) for v in value)
    return False


def _parse_node(ctx: _Ctx, e: _Entry, node: Any) -> tuple[list[Any], dict[str, Any]]:
    """(positional args, kwargs) of one inbound node, in either serialization style."""
    if isinstance(node, dict):                                  # Keras 3 / tf-keras 2.13+ v3
        args = node.get("args", [])
        kwargs = node.get("kwargs", {}) or {}
        return list(args), dict(kwargs)
    if isinstance(node, (list, tuple)):                         # Keras 1/2: [[name, n, t, kw]]
        if len(node) != 1:
            raise _refuse(ctx, e, f"takes {len(node)} input tensors; only a single chain of "
                                  "layers is supported")
        item = node[0]
        if _as_ref(item) is None:
            raise ModelFileError(f"{ctx.source}: unreadable inbound node of layer {e.name!r}")
        kwargs = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        return [list(item[:3])], dict(kwargs)
    raise ModelFileError(f"{ctx.source}: unreadable inbound node of layer {e.name!r}")


def _entry(ctx: _Ctx, raw: Any) -> _Entry:
    if not isinstance(raw, dict) or "class_name" not in raw:
        raise ModelFileError(f"{ctx.source}: a layer entry of the model config is malformed")
    cfg = raw.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    name = raw.get("name") or cfg.get("name") or raw["class_name"].lower()
    return _Entry(name=str(name), class_name=str(raw["class_name"]), config=cfg,
                  module=raw.get("module"), inbound_nodes=raw.get("inbound_nodes"))


def _refs_list(value: Any) -> list[tuple[str, int, int]]:
    if isinstance(value, dict):
        value = list(value.values())
    if _as_ref(value) is not None:
        return [_as_ref(value)]  # type: ignore[list-item]
    if isinstance(value, (list, tuple)):
        out = [_as_ref(v) for v in value]
        if all(r is not None for r in out):
            return out  # type: ignore[return-value]
    return []


def _batch_shape(cfg: Mapping[str, Any], input_dim: bool = False
                 ) -> tuple[int | None, ...] | None:
    """The batch input shape an InputLayer (or a Keras 1/2 first layer) declares."""
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            return tuple(cfg[key])
    for key in ("input_shape", "shape"):
        if cfg.get(key) is not None:
            return (None, *tuple(cfg[key]))
    if input_dim and cfg.get("input_dim") is not None:         # Keras 1 recurrent layers
        return (None, cfg.get("input_length"), cfg["input_dim"])
    return None


def _arch_from_config(ctx: _Ctx, cfg: Any) -> _Arch:
    """Reduce a Sequential / functional config to a chain; refuse anything else."""
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{ctx.source}: the model config is not a JSON object")
    if "class_name" in cfg and "config" in cfg:
        class_name, inner = str(cfg["class_name"]), cfg["config"]
    elif "layers" in cfg:                                       # a bare get_config() dict
        inner = cfg
        functional = any(isinstance(x, dict) and x.get("inbound_nodes")
                         for x in cfg.get("layers", []))
        class_name = "Functional" if functional or "input_layers" in cfg else "Sequential"
    else:
        raise ModelFileError(f"{ctx.source}: the model config has no 'class_name'/'config'")
    if class_name == "Sequential":
        return _sequential(ctx, inner)
    if class_name in ("Functional", "Model"):
        return _functional(ctx, inner)
    raise _refuse(ctx, None, f"top-level class {class_name!r} is not supported (only "
                             "Sequential and functional models; subclassed models have no "
                             "readable architecture)")


def _sequential(ctx: _Ctx, inner: Any) -> _Arch:
    raw_layers = inner if isinstance(inner, list) else inner.get("layers")
    if not isinstance(raw_layers, list):
        raise ModelFileError(f"{ctx.source}: Sequential config has no layer list")
    entries = [_entry(ctx, r) for r in raw_layers]
    batch_shape = None
    input_entry: _Entry | None = None
    chain: list[_Entry] = []
    for k, e in enumerate(entries):
        if e.class_name == "InputLayer":
            if k != 0:
                raise _refuse(ctx, e, "an InputLayer in the middle of a Sequential model")
            batch_shape = _batch_shape(e.config)
            input_entry = e
        else:
            chain.append(e)
    if batch_shape is None and chain:
        # Keras 1/2: batch_input_shape (or Keras 1 input_dim) on the first layer
        first = chain[0]
        batch_shape = _batch_shape(first.config, input_dim=first.class_name in
                                   _CELL_CLASSES | {"Dense", "Masking"})
        wrapped = first.config.get("layer")
        if batch_shape is None and first.class_name == "Bidirectional" and isinstance(
                wrapped, dict) and isinstance(wrapped.get("config"), dict):
            batch_shape = _batch_shape(wrapped["config"], input_dim=True)
    if batch_shape is None and isinstance(inner, dict) and inner.get("build_input_shape"):
        batch_shape = tuple(inner["build_input_shape"])
    name = inner.get("name", "") if isinstance(inner, dict) else ""
    # Sequential.layers excludes the InputLayer: that is the weights-group order.
    return _Arch(kind="Sequential", chain=chain, order=list(chain),
                 by_name={e.name: e for e in entries}, batch_shape=batch_shape,
                 model_name=str(name), input_entry=input_entry)


def _functional(ctx: _Ctx, inner: Any) -> _Arch:
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ModelFileError(f"{ctx.source}: functional config has no layer list")
    entries = [_entry(ctx, r) for r in inner["layers"]]
    by_name: dict[str, _Entry] = {}
    for e in entries:
        if e.name in by_name:
            raise ModelFileError(f"{ctx.source}: two layers are named {e.name!r}")
        by_name[e.name] = e
    ins, outs = _refs_list(inner.get("input_layers")), _refs_list(inner.get("output_layers"))
    if len(ins) != 1 or len(outs) != 1:
        raise _refuse(ctx, None, f"{len(ins)} inputs and {len(outs)} outputs; only "
                                 "single-input, single-output chains are supported")
    used: set[str] = set()
    chain: list[_Entry] = []
    ref = outs[0]
    while True:
        e = by_name.get(ref[0])
        if e is None:
            raise ModelFileError(f"{ctx.source}: the config refers to an unknown layer "
                                 f"{ref[0]!r}")
        if ref[2] != 0:
            raise _refuse(ctx, e, f"its output #{ref[2]} (e.g. a return_state state) is used; "
                                  "only the main output may feed the next layer")
        if e.name in used:
            raise ModelFileError(f"{ctx.source}: the layer graph has a cycle at {e.name!r}")
        used.add(e.name)
        if e.class_name == "InputLayer":
            break
        if e.is_op:
            raise _refuse(ctx, e, "a keras.ops operation inside the layer chain is not supported")
        nodes = e.inbound_nodes or []
        if len(nodes) != 1:
            raise _refuse(ctx, e, f"the layer is called {len(nodes)} times (shared layer); only "
                                  "a single chain of layers is supported")
        args, kwargs = _parse_node(ctx, e, nodes[0])
        refs = [_as_ref(a) for a in args]
        if len(args) != 1 or refs[0] is None:
            raise _refuse(ctx, e, "it takes several inputs; only a single chain of layers is "
                                  "supported")
        for key, value in kwargs.items():
            if key == "mask" and value is not None:
                mref = _as_ref(value)
                if mref is None:
                    raise _refuse(ctx, e, "called with an unreadable mask argument")
                e.mask_ref = mref
            elif key not in _CALL_KWARGS or _contains_tensor(value) or (
                    key == "initial_state" and value is not None):
                raise _refuse(ctx, e, f"called with argument {key}=..., which is not supported")
        e.input_ref = refs[0]
        chain.append(e)
        ref = refs[0]
    if (e.name, 0, 0) != ins[0]:
        raise _refuse(ctx, None, f"the chain starts at {e.name!r}, not at the model input "
                                 f"{ins[0][0]!r}")
    batch_shape = _batch_shape(e.config)
    chain.reverse()
    # Mask op-layers reachable from the mask arguments are allowed, nothing else off the chain.
    todo = [c.mask_ref for c in chain if c.mask_ref is not None]
    while todo:
        r = todo.pop()
        op = by_name.get(r[0])
        if op is None or op.name in used:
            continue
        if op.class_name not in _MASK_OPS:
            raise _refuse(ctx, op, "used to compute a mask; only Masking / Embedding masks "
                                   "are supported")
        used.add(op.name)
        for node in op.inbound_nodes or []:
            args, _ = _parse_node(ctx, op, node)
            todo.extend(x for x in (_as_ref(a) for a in args) if x is not None)
    for other in entries:
        if other.name not in used:
            raise _refuse(ctx, other, "it is not on the single chain from the input to the "
                                      "output; branching models are not supported")
    order = [x for x in entries if not x.is_op]                 # Functional.layers order
    return _Arch(kind="Functional", chain=chain, order=order, by_name=by_name,
                 batch_shape=batch_shape, model_name=str(inner.get("name", "")),
                 input_entry=e)


# --------------------------------------------------------------------------------------------
# Weight sources: (entry) -> (arrays, names or None)
# --------------------------------------------------------------------------------------------

WeightFn = Callable[[_Entry], tuple[list[np.ndarray], list[str] | None]]


def _snake(name: str) -> str:
    """``keras.src.utils.naming.to_snake_case``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _v3_weights(ctx: _Ctx, root: Any, arch: _Arch) -> WeightFn:
    """Keras 3 ``model.weights.h5`` / ``.weights.h5`` (``layers/<group>/.../vars/<i>``)."""
    import h5py

    layers = root.get("layers")
    if layers is None:
        layers = root.get("_layer_checkpoint_dependencies")       # Keras 2.13 compatibility
    if not isinstance(layers, h5py.Group):
        raise ModelFileError(f"{ctx.source}: the weights file has no 'layers' group")
    by_attr: dict[str, Any] = {}
    for key in layers:
        g = layers[key]
        v = g.get("vars") if isinstance(g, h5py.Group) else None
        name = _attr_str(v, "name") if isinstance(v, h5py.Group) else None
        if name is not None:
            by_attr[name] = g
    by_order: dict[str, Any] = {}
    counters: dict[str, int] = {}
    for e in arch.order:
        base = _snake(e.class_name)
        if base in counters:
            counters[base] += 1
            key = f"{base}_{counters[base]}"
        else:
            counters[base] = 0
            key = base
        if key in layers:
            by_order[e.name] = layers[key]
    use_attr = bool(by_attr) and all(e.name in by_attr for e in arch.chain
                                     if _has_weights(e))

    def get(e: _Entry) -> tuple[list[np.ndarray], list[str] | None]:
        g = by_attr.get(e.name) if use_attr else by_order.get(e.name)
        if g is None:
            raise ModelFileError(f"{ctx.source}: no weights group for layer {e.name!r} "
                                 f"({e.class_name})")
        if isinstance(g.get("forward_layer"), h5py.Group):          # Bidirectional
            fwd = read(g["forward_layer"])
            bwd = read(g.get("backward_layer"))
            return fwd + bwd, None
        return read(g), None

    def read(g: Any) -> list[np.ndarray]:
        if not isinstance(g, h5py.Group):
            return []
        for sub in ("cell/vars", "layer/vars", "vars"):
            v = g.get(sub)
            if isinstance(v, h5py.Group) and len(v):
                break
        else:
            return []
        keys = sorted(v.keys(), key=lambda s: int(s) if s.isdigit() else -1)
        if keys != [str(i) for i in range(len(keys))]:
            raise ModelFileError(f"{ctx.source}: unexpected weights {keys} in {v.name}")
        return [_read_dataset(v[k], ctx.source) for k in keys]

    return get


def _legacy_weights(ctx: _Ctx, group: Any, arch: _Arch) -> WeightFn:
    """Legacy HDF5: ``layer_names`` + per-layer ``weight_names`` (datasets read in that order)."""
    import h5py

    layer_names = _attr_list(group, "layer_names")
    with_weights = [n for n in layer_names
                    if isinstance(group.get(n), h5py.Group) and _attr_list(group[n],
                                                                          "weight_names")]
    weighted = [e for e in arch.order if _has_weights(e)]
    by_name = all(e.name in with_weights for e in weighted)
    if not by_name and len(weighted) != len(with_weights):
        raise ModelFileError(
            f"{ctx.source}: the weights file holds {len(with_weights)} layers with weights "
            f"({', '.join(with_weights)}) but the architecture has {len(weighted)} "
            f"({', '.join(e.name for e in weighted)})"
        )
    position = {e.name: with_weights[k] for k, e in enumerate(weighted)} if not by_name else {}

    def get(e: _Entry) -> tuple[list[np.ndarray], list[str] | None]:
        key = e.name if by_name else position.get(e.name)
        g = group.get(key) if key is not None else None
        if not isinstance(g, h5py.Group):
            return [], None
        names = _attr_list(g, "weight_names")
        arrays = []
        for n in names:
            if n not in g:
                raise ModelFileError(f"{ctx.source}: weight {n!r} of layer {e.name!r} is "
                                     "listed but missing")
            arrays.append(_read_dataset(g[n], ctx.source))
        return arrays, names

    return get


def _has_weights(e: _Entry) -> bool:
    return e.class_name in _CELL_CLASSES | {"Dense", "Embedding", "TimeDistributed",
                                            "Bidirectional"}


# --------------------------------------------------------------------------------------------
# Mapping layers
# --------------------------------------------------------------------------------------------

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


def _by_suffix(arrays: list[np.ndarray], names: list[str] | None,
               wanted: Sequence[str]) -> list[np.ndarray]:
    """Reorder ``arrays`` by the last component of their names when all are recognized."""
    if not names or len(names) != len(arrays):
        return arrays
    suffixes = [re.sub(r":\d+$", "", n).rsplit("/", 1)[-1] for n in names]
    if len(set(suffixes)) == len(suffixes) and all(s in wanted for s in suffixes):
        return [arrays[suffixes.index(w)] for w in wanted if w in suffixes]
    return arrays


def _bad(ctx: _Ctx, e: _Entry, detail: str) -> ModelFileError:
    return ModelFileError(f"layer {e.name!r} ({e.class_name}): {detail} [in {ctx.source}]")


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


def _lstm_weights(ctx: _Ctx, e: _Entry, cls: str, arrays: list[np.ndarray],
                  names: list[str] | None, units: int, use_bias: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if len(arrays) == 12:                      # Keras 1: W_i U_i b_i W_c U_c b_c W_f U_f b_f ...
        W = [arrays[3 * g] for g in (0, 2, 1, 3)]              # reorder i, c, f, o -> i, f, c, o
        U = [arrays[3 * g + 1] for g in (0, 2, 1, 3)]
        b = [arrays[3 * g + 2] for g in (0, 2, 1, 3)]
        arrays = [np.concatenate(W, axis=-1), np.concatenate(U, axis=-1),
                  np.concatenate(b, axis=-1)]
        names = None
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 4, use_bias)
    u4 = 4 * units
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
                 reset_after: bool | None, default_reset_after: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, bool]:
    """(w_ih, w_hh, b_ih, b_hh, reset_after) in the spec's layout (FORMATS 0.3)."""
    if len(arrays) == 9:                       # Keras 1: W_z U_z b_z W_r U_r b_r W_h U_h b_h
        arrays = [np.concatenate(arrays[k::3], axis=-1) for k in range(3)]
        names = None
        if reset_after:
            raise _bad(ctx, e, "Keras 1 GRU weights (9 arrays) are reset_after=False, but the "
                               "config says reset_after=True")
        reset_after = False
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 3, use_bias)
    u3 = 3 * units
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
    common = dict(activation=act, return_sequences=bool(cfg.get("return_sequences", False)),
                  go_backwards=go_backwards)
    if cls in _LSTM_CLASSES:
        w_ih, w_hh, bias = _lstm_weights(ctx, e, cls, arrays, names, units, use_bias)
        return LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=bias, recurrent_activation=ract,
                             **common)
    if cls in _GRU_CLASSES:
        cfg_ra = cfg.get("reset_after")
        w_ih, w_hh, b_ih, b_hh, reset_after = _gru_weights(
            ctx, e, cls, arrays, names, units, use_bias,
            None if cfg_ra is None else bool(cfg_ra), default_reset_after=(ctx.major or 3) >= 3)
        return GRULayerSpec(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
                            reset_after=reset_after, recurrent_activation=ract, **common)
    kernel, rec, bias = _kernels(ctx, e, arrays, names, units, 1, use_bias)
    if bias is not None and bias.shape != (units,):
        raise _bad(ctx, e, f"bias has shape {bias.shape}, expected ({units},)")
    return SimpleRNNLayerSpec(w_ih=kernel.T, w_hh=rec.T, bias=bias, **common)


@dataclass
class _State:
    layers: list[LayerSpec] = field(default_factory=list)
    feat: int | None = None                 # features per step of the current tensor
    time_axis: bool = True                  # False after return_sequences=False
    mask: _Entry | None = None              # the Masking / Embedding producing the mask
    pending_masks: list[int] = field(default_factory=list)  # Masking spec slots, size unknown
    masking_value: dict[int, float] = field(default_factory=dict)
    stateful: bool = False
    fold_ok: bool = False                   # the last spec layer is a linear Dense
    notes: list[str] = field(default_factory=list)


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
    try:
        return ModelSpec(layers=tuple(st.layers), mask_semantics="keras",
                         stateful=st.stateful, metadata=meta)
    except WeightsError as err:
        raise WeightsError(f"{err} [in {ctx.source}]") from None


_KNOWN = _IDENTITY | _CELL_CLASSES | {"Embedding", "Masking", "Dense", "TimeDistributed",
                                      "Activation", "Bidirectional"}


def _check_class(ctx: _Ctx, e: _Entry) -> None:
    cls = e.class_name
    if cls in _KNOWN:
        return
    if cls == "InputLayer":
        raise _refuse(ctx, e, "an InputLayer inside the chain is not supported")
    if cls in ("Sequential", "Functional", "Model"):
        raise _refuse(ctx, e, "nested models are not supported; flatten the model first")
    if cls == "RNN":
        cell = e.config.get("cell")
        inner_cls = cell.get("class_name") if isinstance(cell, dict) else "?"
        raise _refuse(ctx, e, f"the generic RNN({inner_cls}) wrapper is not supported (use "
                              "LSTM, GRU or SimpleRNN)")
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
        st.layers.append(EmbeddingSpec(weight=table, mask_zero=mask_zero))
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
            st.layers.append(MaskingSpec(size=1, mask_value=value))   # resized later
        else:
            st.layers.append(MaskingSpec(size=st.feat, mask_value=value))
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
        st.layers.append(spec)
        st.feat = spec.output_size
        st.fold_ok = spec.activation == "linear"
        return

    if cls == "Activation":
        act = _activation(ctx, e, cfg.get("activation"), "activation", DENSE_ACTIVATIONS)
        if act == "linear":
            return
        prev = st.layers[-1] if st.layers else None
        if not st.fold_ok or not isinstance(prev, DenseSpec):
            raise _refuse(ctx, e, f"activation={act!r} not directly after a Dense layer "
                                  "with a linear activation is not supported")
        st.layers[-1] = DenseSpec(weight=prev.weight, bias=prev.bias, activation=act)
        st.fold_ok = False
        return

    if cls in _CELL_CLASSES:
        _recurrent(ctx, arch, e, st, weights)
        return

    if cls == "Bidirectional":
        _bidirectional(ctx, arch, e, st, weights)
        return

    raise _refuse(ctx, e, "this layer type is not supported")  # pragma: no cover


def _append_recurrent(ctx: _Ctx, e: _Entry, st: _State, spec: LayerSpec,
                      stateful: bool) -> None:
    if st.feat is not None and spec.input_size != st.feat:
        raise _bad(ctx, e, f"kernel expects {spec.input_size} input features, the previous "
                           f"layer gives {st.feat}")
    _set_feat(st, spec.input_size)
    st.layers.append(spec)
    st.feat = spec.output_size
    st.fold_ok = False
    if stateful:
        st.stateful = True
    if not spec.return_sequences:
        st.time_axis = False
        st.mask = None


def _recurrent(ctx: _Ctx, arch: _Arch, e: _Entry, st: _State, weights: WeightFn) -> None:
    """A plain LSTM / GRU / SimpleRNN layer."""
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
    arrays, names = weights(e)
    spec = _cell(ctx, e, e.class_name, cfg, arrays, names, st.notes,
                 go_backwards=bool(cfg.get("go_backwards", False)))
    _append_recurrent(ctx, e, st, spec, bool(cfg.get("stateful")))


def _inner(ctx: _Ctx, e: _Entry, raw: Any, which: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict) or \
            not isinstance(raw.get("class_name"), str):
        raise ModelFileError(f"{ctx.source}: layer {e.name!r} (Bidirectional) has no readable "
                             f"{which} config")
    return raw["class_name"], dict(raw["config"])


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
    fcls, fcfg = _inner(ctx, e, cfg.get("layer"), "layer")
    if cfg.get("backward_layer") is None:       # Keras 2: the backward copy is implied
        bcls, bcfg = fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
    else:
        bcls, bcfg = _inner(ctx, e, cfg["backward_layer"], "backward_layer")
    for cls in (fcls, bcls):
        if cls not in _CELL_CLASSES:
            raise _refuse(ctx, e, f"Bidirectional({cls}) is not supported (only LSTM, GRU and "
                                  "SimpleRNN inside)")
    kinds = [("lstm" if c in _LSTM_CLASSES else "gru" if c in _GRU_CLASSES else "rnn")
             for c in (fcls, bcls)]
    if kinds[0] != kinds[1]:
        raise _refuse(ctx, e, f"a backward_layer of class {bcls} with a forward {fcls} is not "
                              "supported (both directions must be the same kind)")
    fe = _Entry(e.name, f"Bidirectional({fcls})", fcfg)
    be = _Entry(e.name, f"Bidirectional({bcls}, backward)", bcfg)
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
                                                    merge_mode=merge), False)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def _config_arg(config: Any, source: str) -> Any:
    if config is None or isinstance(config, dict):
        return config
    if isinstance(config, str) and config.lstrip().startswith("{"):
        return _load_json(config, "config", source)
    try:
        with open(os.fspath(config), "rb") as fh:
            text = fh.read(_MAX_JSON_BYTES + 1)
    except TypeError:
        raise TypeError(f"config must be a dict, a JSON string or a path, got "
                        f"{type(config).__name__}") from None
    return _load_json(text, f"config file {os.fspath(config)}", source)


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

    Raises
    ------
    UnsupportedModelError
        A layer or option lstm_fast does not run; the message names the layer, its class, the
        option and the file.
    ModelFileError
        The file is not a Keras model, is corrupted, or its weights do not match its config.
    """
    source = os.fspath(path)
    with open(source, "rb") as fh:
        head = fh.read(8)
    cfg = _config_arg(config, source)
    if head[:4] == b"PK\x03\x04":
        return _from_zip(source, cfg, keras_version)
    try:
        import h5py
    except ImportError as err:                               # pragma: no cover
        raise ImportError("reading Keras HDF5 files needs h5py (pip install h5py)") from err
    if not h5py.is_hdf5(source):
        raise ModelFileError(f"{source}: not a Keras file (neither a .keras zip nor HDF5)")
    try:
        f = h5py.File(source, "r")
    except OSError as err:
        raise ModelFileError(f"{source}: cannot open the HDF5 file ({err})") from None
    with f:
        return _from_h5(source, f, cfg, keras_version)


def _from_zip(source: str, cfg: Any, keras_version: str | None) -> ModelSpec:
    import h5py

    try:
        with zipfile.ZipFile(source) as z:
            names = set(z.namelist())
            if "model.weights.h5" not in names:
                extra = " (sharded weights are not supported)" if any(
                    n.endswith(".weights.json") for n in names) else ""
                raise ModelFileError(f"{source}: the .keras zip has no model.weights.h5{extra}")
            meta: dict[str, Any] = {}
            if "metadata.json" in names:
                meta = _load_json(z.read("metadata.json"), "metadata.json", source) or {}
            if cfg is None:
                if "config.json" not in names:
                    raise ModelFileError(f"{source}: the .keras zip has no config.json")
                cfg = _load_json(z.read("config.json"), "config.json", source)
            blob = z.read("model.weights.h5")
    except zipfile.BadZipFile as err:
        raise ModelFileError(f"{source}: corrupted .keras zip ({err})") from None
    version = keras_version or (str(meta["keras_version"]) if isinstance(meta, dict)
                                and meta.get("keras_version") else None)
    try:
        f = h5py.File(io.BytesIO(blob), "r")
    except OSError as err:
        raise ModelFileError(f"{source}: model.weights.h5 is not readable HDF5 ({err})") \
            from None
    with f:
        ctx = _Ctx(source=source, keras_version=version, backend=None, fmt="keras_v3")
        arch = _arch_from_config(ctx, cfg)
        return _convert(ctx, arch, _v3_weights(ctx, f, arch))


def _from_h5(source: str, f: Any, cfg: Any, keras_version: str | None) -> ModelSpec:
    import h5py

    model_config = _attr_str(f, "model_config")
    version = keras_version or _attr_str(f, "keras_version")
    backend = _attr_str(f, "backend")
    if model_config is not None or "model_weights" in f:
        group = f.get("model_weights")
        if not isinstance(group, h5py.Group):
            raise ModelFileError(f"{source}: the HDF5 model has no model_weights group (saved "
                                 "without weights?)")
        version = version or _attr_str(group, "keras_version") or "1"   # absent: Keras 1
        backend = backend or _attr_str(group, "backend")
        if cfg is None:
            if model_config is None:
                raise ModelFileError(f"{source}: the HDF5 file has no model_config; pass "
                                     "config=")
            cfg = _load_json(model_config, "model_config", source)
        ctx = _Ctx(source=source, keras_version=version, backend=backend, fmt="h5")
        arch = _arch_from_config(ctx, cfg)
        return _convert(ctx, arch, _legacy_weights(ctx, group, arch))
    if _attr_list(f, "layer_names") or "layer_names" in f.attrs or "layer_names0" in f.attrs:
        if cfg is None:
            raise ModelFileError(f"{source}: a weights-only file (save_weights); pass the "
                                 "architecture as config= (model.to_json())")
        if version is None and isinstance(cfg, dict) and cfg.get("keras_version"):
            version = str(cfg["keras_version"])
        if version is None:
            version = "1"                                # Keras 2+ always record it
        ctx = _Ctx(source=source, keras_version=version, backend=backend, fmt="h5_weights")
        arch = _arch_from_config(ctx, cfg)
        return _convert(ctx, arch, _legacy_weights(ctx, f, arch))
    if "layers" in f or "_layer_checkpoint_dependencies" in f:
        if cfg is None:
            raise ModelFileError(f"{source}: a Keras .weights.h5 file; pass the architecture "
                                 "as config= (model.to_json())")
        if version is None and isinstance(cfg, dict) and cfg.get("keras_version"):
            version = str(cfg["keras_version"])
        v = f.get("vars")
        if version is None and isinstance(v, h5py.Group) and "name" in v.attrs:
            version = "3"                                # only Keras 3 writes @name
        ctx = _Ctx(source=source, keras_version=version, backend=backend, fmt="keras_weights")
        arch = _arch_from_config(ctx, cfg)
        return _convert(ctx, arch, _v3_weights(ctx, f, arch))
    raise ModelFileError(f"{source}: an HDF5 file that is not a Keras model or weights file")


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


def from_keras(model: Any, *, isa: str | None = None) -> Model:
    """Convert a live Keras model and build an :class:`lstm_fast.Model` from it.

    Parameters
    ----------
    model : keras.Model
        A ``Sequential`` or single-chain functional model (see :func:`spec_from_keras_file`
        for the supported layers).
    isa : str, optional
        See :class:`lstm_fast.Model`.

    Returns
    -------
    lstm_fast.Model
        ``predict`` takes (B, T, I) floats, or (B, T) integer ids when the first layer is an
        ``Embedding``.
    """
    from ..model import Model

    return Model(spec_from_keras(model), isa=isa)
