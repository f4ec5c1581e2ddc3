"""Read Keras model files without keras: the containers, their weights and the model config.

Needs only ``h5py`` and numpy; ``keras`` is never imported. Containers (``FORMATS.md`` §2):

- Keras 3 ``.keras`` zips (``metadata.json``, ``config.json``, ``model.weights.h5``) and
  ``tf-keras`` 2.13+ ``.keras`` zips, which use the same layout;
- legacy HDF5 full models (``model.save('x.h5')``) written by Keras 3, tf.keras / Keras 2 or
  Keras 1;
- weights-only files plus an architecture given as ``config=``: legacy ``save_weights`` HDF5
  (``layer_names`` on the root) and Keras 3 ``.weights.h5`` files.

This module owns everything up to "layer entry + its weight arrays":

- the config JSON reduced to a chain of layer entries (:class:`_Arch`): a ``Sequential`` or a
  functional model that is a single chain (one input, one output, every layer called once on
  one tensor); only the ``NotEqual`` / ``Any`` op-layers Keras 3.15 writes to compute a
  Masking / Embedding mask may sit off the chain, anything else is refused here;
- a layer's weight arrays (:data:`WeightFn`): in ``.keras`` / ``.weights.h5`` files the group
  whose ``vars`` carries ``@name`` = the layer name, else the group named after the class in
  ``model.layers`` order (``lstm``, ``lstm_1``, ...); in legacy HDF5 the datasets listed in
  ``weight_names`` (layers matched by name, else by order; arrays reordered by name suffix on
  request), with attributes split into ``key0``, ``key1``, ... joined and bfloat16 datasets
  decoded to float32.

What the layers mean (classes, options, weight layouts) is decided in
:mod:`lstm_fast.converters.keras`, the only user of these private helpers.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._untrusted import loads_json
from ..errors import ArgumentTypeError, ModelFileError, UnsupportedModelError
from ._zip import SafeZip
from .source import identify

#: Recurrent layer classes by kind (cuDNN and Keras 2 V1/V2 variants included).
_LSTM_CLASSES = frozenset({"LSTM", "CuDNNLSTM", "LSTMV1", "LSTMV2"})
_GRU_CLASSES = frozenset({"GRU", "CuDNNGRU", "GRUV1", "GRUV2"})
_RNN_CLASSES = frozenset({"SimpleRNN"})
#: Recurrent layers (one cell each) that map to a spec layer.
_CELL_CLASSES = _LSTM_CLASSES | _GRU_CLASSES | _RNN_CLASSES
#: Batch normalisation classes (tf.keras 1.x may write the V1/V2 names).
_BN_CLASSES = frozenset({"BatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2"})
#: Functional op-layers Keras 3.15 serializes to compute a Masking / Embedding mask.
_MASK_OPS = frozenset({"NotEqual", "Any"})
#: Config keys of a layer call that we understand (any other call argument is refused).
_CALL_KWARGS = frozenset({"training", "mask", "initial_state"})
_MAX_JSON_BYTES = 64 << 20
#: Largest ``model.weights.h5`` read from a ``.keras`` zip.
MAX_WEIGHTS_BYTES = 1 << 36


# --------------------------------------------------------------------------------------------
# Layer entries and the read context
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


def _refuse(ctx: _Ctx, e: _Entry | None, detail: str) -> UnsupportedModelError:
    where = f"layer {e.name!r} ({e.class_name})" if e is not None else "model"
    return UnsupportedModelError(f"{where}: {detail} [in {ctx.source}]")


# --------------------------------------------------------------------------------------------
# HDF5 attributes and datasets, JSON
# --------------------------------------------------------------------------------------------

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


def _load_json(text: str | bytes, what: str, source: str) -> Any:
    return loads_json(text, what, source, max_bytes=_MAX_JSON_BYTES)


# --------------------------------------------------------------------------------------------
# Config -> chain
# --------------------------------------------------------------------------------------------

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


def _has_weights(e: _Entry) -> bool:
    return e.class_name in _CELL_CLASSES | {"Dense", "Embedding", "TimeDistributed",
                                            "Bidirectional", "RNN"} | _BN_CLASSES


def _stacked_cell_keys(e: _Entry) -> list[str]:
    """Group names of an ``RNN(StackedRNNCells([...]))``'s cells under ``cell/cells/``: the
    snake_case class name, deduplicated in list order (Keras 3 ``_save_container_state``)."""
    cell = e.config.get("cell")
    cells = (cell.get("config") or {}).get("cells") if isinstance(cell, dict) else None
    counters: dict[str, int] = {}
    keys = []
    for raw in cells if isinstance(cells, list) else []:
        base = _snake(str(raw.get("class_name", ""))) if isinstance(raw, dict) else ""
        counters[base] = counters.get(base, -1) + 1
        keys.append(f"{base}_{counters[base]}" if counters[base] else base)
    return keys


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
        cells = g.get("cell/cells")
        if isinstance(cells, h5py.Group):                           # RNN(StackedRNNCells)
            return [a for key in _stacked_cell_keys(e) for a in read(cells.get(key))], None
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


def _by_suffix(arrays: list[np.ndarray], names: list[str] | None,
               wanted: Sequence[str]) -> list[np.ndarray]:
    """Reorder ``arrays`` by the last component of their names when all are recognized."""
    if not names or len(names) != len(arrays):
        return arrays
    suffixes = [re.sub(r":\d+$", "", n).rsplit("/", 1)[-1] for n in names]
    if len(set(suffixes)) == len(suffixes) and all(s in wanted for s in suffixes):
        return [arrays[suffixes.index(w)] for w in wanted if w in suffixes]
    return arrays


# --------------------------------------------------------------------------------------------
# Containers
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
        raise ArgumentTypeError(f"config must be a dict, a JSON string or a path, got "
                                f"{type(config).__name__}") from None
    return _load_json(text, f"config file {os.fspath(config)}", source)


#: What :func:`_open_keras_file` yields: the read context, the chain and its weight source.
_Opened = tuple[_Ctx, _Arch, WeightFn]


@contextmanager
def _open_keras_file(path: str | os.PathLike[str], config: Any,
                     keras_version: str | None) -> Iterator[_Opened]:
    """Open a Keras model or weights file (the format is detected from the content) and yield
    ``(ctx, arch, weights)``; ``weights`` reads from the open file, so call it inside the
    ``with``. ``config`` and ``keras_version`` are those of ``spec_from_keras_file``."""
    source = os.fspath(path)
    src = identify(source)
    cfg = _config_arg(config, source)
    if src.is_zip:
        yield from _open_zip(source, cfg, keras_version)
        return
    try:
        import h5py
    except ImportError as err:                               # pragma: no cover
        raise ImportError("reading Keras HDF5 files needs h5py (pip install h5py)") from err
    if not src.is_hdf5:
        raise ModelFileError(f"{source}: not a Keras file (neither a .keras zip nor HDF5)")
    try:
        f = h5py.File(source, "r")
    except OSError as err:
        raise ModelFileError(f"{source}: cannot open the HDF5 file ({err})") from None
    with f:
        yield from _open_h5(source, f, cfg, keras_version)


def _open_zip(source: str, cfg: Any, keras_version: str | None) -> Iterator[_Opened]:
    """A ``.keras`` zip: its config (unless given), version and ``model.weights.h5``."""
    import h5py

    with SafeZip(source, source) as z:
        names = set(z.names)
        if "model.weights.h5" not in names:
            extra = " (sharded weights are not supported)" if any(
                n.endswith(".weights.json") for n in names) else ""
            raise ModelFileError(f"{source}: the .keras zip has no model.weights.h5{extra}")
        meta: Any = {}
        if "metadata.json" in names:
            meta = _load_json(z.read("metadata.json", _MAX_JSON_BYTES), "metadata.json",
                              source) or {}
        if cfg is None:
            if "config.json" not in names:
                raise ModelFileError(f"{source}: the .keras zip has no config.json")
            cfg = _load_json(z.read("config.json", _MAX_JSON_BYTES), "config.json", source)
        blob = z.read("model.weights.h5", MAX_WEIGHTS_BYTES)
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
        yield ctx, arch, _v3_weights(ctx, f, arch)


def _open_h5(source: str, f: Any, cfg: Any, keras_version: str | None) -> Iterator[_Opened]:
    """An open HDF5 file: a legacy full model, a ``save_weights`` file or a Keras 3
    ``.weights.h5`` file (the last two need ``cfg``)."""
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
        yield ctx, arch, _legacy_weights(ctx, group, arch)
        return
    if _attr_list(f, "layer_names") or "layer_names" in f.attrs or "layer_names0" in f.attrs:
        if cfg is None:
            held = ", ".join(n for n in _attr_list(f, "layer_names")[:12])
            raise ModelFileError(f"{source}: a weights-only file (save_weights) holding layers "
                                 f"{held or '?'}; pass the architecture (model.to_json()) as "
                                 "--config FILE.json, or config= in Python")
        if version is None and isinstance(cfg, dict) and cfg.get("keras_version"):
            version = str(cfg["keras_version"])
        if version is None:
            version = "1"                                # Keras 2+ always record it
        ctx = _Ctx(source=source, keras_version=version, backend=backend, fmt="h5_weights")
        arch = _arch_from_config(ctx, cfg)
        yield ctx, arch, _legacy_weights(ctx, f, arch)
        return
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
        yield ctx, arch, _v3_weights(ctx, f, arch)
        return
    raise ModelFileError(f"{source}: an HDF5 file that is not a Keras model or weights file")
