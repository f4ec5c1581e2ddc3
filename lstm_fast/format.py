"""The lstm_fast model file: a :class:`~lstm_fast.spec.ModelSpec` on disk.

The container is safetensors (``u64 N | N bytes of JSON header | raw little-endian tensors``):
it holds no code, so opening a file from an untrusted source cannot execute anything, it can
be read without any framework (or inspected with the ``safetensors`` package), and tensors are
memory-mapped rather than copied. The header's ``__metadata__`` carries:

``format``
    ``"lstm_fast.model"``, to tell our files from other safetensors files.
``format_version``
    :data:`FORMAT_VERSION`. A file from a newer version raises :class:`FormatVersionError`.
``model``
    JSON: ``{"spec_version", "mask_semantics", "stateful", "metadata", "layers": [...]}``; each
    layer is its kind, its options and the names of its tensors (``layers.<k>.<name>``), as
    the kind's :class:`~lstm_fast.spec.Tensor` and :class:`~lstm_fast.spec.Option`
    declarations list them (``return_last`` is kept as ``return_sequences`` = not it, the key
    older lstm_fast reads). Version 2 adds ``weights_dtype`` (``"fp16"``/``"bf16"``: the
    ``quantizable`` tensors are stored as F16/BF16, half the bytes; ``"int8"``: as I8 codes
    plus an F32 tensor ``<name>.scale`` of one scale per row, see :mod:`lstm_fast.quantize`)
    and ``quant_error`` (the error bound ``Model.quantize`` measured). Float32 models are still
    written as version 1, so older lstm_fast reads them; version 1 files load as before.

Loading memory-maps the tensors: float32 arrays are used in place (no copy); narrow weights
(int8: codes times their row scales) are widened to float32 once for the
:class:`~lstm_fast.spec.ModelSpec` (the engine then stores them narrow again, exactly).
"""

from __future__ import annotations

import json
import os
import reprlib
from typing import Any

import numpy as np

from . import safetensors
from ._untrusted import loads_json, short
from .errors import FormatVersionError, LstmFastError, ModelFileError
from .quantize import int8_codes, int8_values, narrow, widen
from .spec import (
    LAYER_KINDS,
    SPEC_VERSION,
    WEIGHT_DTYPES,
    BidirectionalSpec,
    ModelSpec,
)

FORMAT = "lstm_fast.model"
FORMAT_VERSION = 2
#: Nesting limit of the model description JSON (ours nests 6 levels).
MAX_MODEL_DEPTH = 16

#: Options the file keeps under their older name, so that the previous lstm_fast reads the
#: files we write: spec name -> (file key, the file value of a spec value; its own inverse).
_FILE_KEYS = {"return_last": ("return_sequences", lambda v: not v)}


def _file_option(name: str, value: Any) -> tuple[str, Any]:
    """The key and value an option is written under."""
    if name in _FILE_KEYS:
        key, convert = _FILE_KEYS[name]
        return key, convert(value)
    return name, value


def save_spec(spec: ModelSpec, path: str | os.PathLike[str]) -> None:
    """Write ``spec`` to ``path``."""
    safetensors.write(path, *_container(spec))


def spec_to_bytes(spec: ModelSpec) -> bytes:
    """``spec`` as the bytes of a model file (what :func:`save_spec` writes)."""
    return safetensors.dumps(*_container(spec))


def spec_from_bytes(buf: Any, name: str = "<bytes>") -> ModelSpec:
    """Read a model file's bytes (any bytes-like object: bytes, memoryview, mmap, ...).

    The spec's arrays are read-only views of ``buf`` (no copy). ``name`` is used in error
    messages. Raises as :func:`load_spec` does.
    """
    tensors, meta = safetensors.parse(buf, name)
    return _spec_from_container(tensors, meta, name)


def _container(spec: ModelSpec
               ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """The tensors, metadata and stored dtypes (narrow weights) of ``spec``'s model file."""
    tensors: dict[str, np.ndarray] = {}
    stored: dict[str, str] = {}
    wdt = spec.weights_dtype

    def entry_of(L: Any, prefix: str) -> dict[str, Any]:
        if isinstance(L, BidirectionalSpec):
            return {"kind": "bidirectional", "merge_mode": L.merge_mode,
                    "forward": entry_of(L.forward, prefix + "forward."),
                    "backward": entry_of(L.backward, prefix + "backward.")}
        entry: dict[str, Any] = {"kind": L.kind}
        entry.update(_file_option(opt.name, getattr(L, opt.name)) for opt in L.OPTIONS)
        names = {}
        for t in L.TENSORS:
            arr = getattr(L, t.name)
            if arr is not None:
                names[t.name] = prefix + t.name
                if wdt == "int8" and t.quantizable:
                    arr, tensors[names[t.name] + _SCALE] = int8_codes(arr)
                elif wdt != "fp32" and t.quantizable:
                    arr = narrow(arr, wdt)
                    stored[names[t.name]] = "F16" if wdt == "fp16" else "BF16"
                tensors[names[t.name]] = arr
        entry["tensors"] = names
        return entry

    layers = [entry_of(L, f"layers.{k}.") for k, L in enumerate(spec.layers)]
    model = {"spec_version": SPEC_VERSION, "mask_semantics": spec.mask_semantics,
             "stateful": spec.stateful, "metadata": spec.metadata, "layers": layers}
    if spec.state_layout != "stacked":
        model["state_layout"] = spec.state_layout
    version = format_version(spec)
    if version >= 2:
        model["weights_dtype"] = wdt
        model["quant_error"] = spec.quant_error
    meta = {"format": FORMAT, "format_version": str(version), "model": json.dumps(model)}
    return tensors, meta, stored


def format_version(spec: ModelSpec) -> int:
    """The format version ``spec``'s file is written with: 1 for a float32 model (so older
    lstm_fast reads it), 2 with narrow weights or a recorded quantization error."""
    return 2 if spec.weights_dtype != "fp32" or spec.quant_error is not None else 1


def load_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read a model file written by :func:`save_spec`.

    Raises
    ------
    ModelFileError
        When the file is not an lstm_fast model file, or is truncated or corrupted.
    FormatVersionError
        When the file comes from a newer lstm_fast.
    """
    path = os.fspath(path)
    tensors, meta = safetensors.read(path)
    return _spec_from_container(tensors, meta, path)


def _spec_from_container(tensors: dict[str, np.ndarray], meta: dict[str, str], path: str
                         ) -> ModelSpec:
    """The spec of a parsed container (``path`` names it in errors)."""
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an lstm_fast model file (a safetensors file without "
                             f"the lstm_fast header); convert checkpoints with `lstm-fast "
                             f"convert`")
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit() and len(version) < 10):
        raise ModelFileError(f"{path}: invalid format_version {version[:20]!r}")
    if int(version) > FORMAT_VERSION:
        raise FormatVersionError(f"{path}: written with model format version {version}, this "
                                 f"lstm_fast reads versions up to {FORMAT_VERSION}; upgrade "
                                 f"lstm_fast")
    model = loads_json(meta.get("model", ""), "model description", path,
                       max_depth=MAX_MODEL_DEPTH)
    try:
        return _spec_from_json(model, tensors, path)
    except ModelFileError:
        raise
    except LstmFastError as e:
        raise ModelFileError(f"{path}: invalid model: {e}") from None
    except Exception as e:  # noqa: BLE001 - a description of the right depth but odd content
        raise ModelFileError(f"{path}: corrupted model description ({type(e).__name__}: "
                             f"{short(e)})") from None


def _spec_from_json(model: Any, tensors: dict[str, np.ndarray], path: str) -> ModelSpec:
    if not isinstance(model, dict) or not isinstance(model.get("layers"), list):
        raise ModelFileError(f"{path}: the model description has no layer list")
    version = model.get("spec_version")
    if type(version) is int and version > SPEC_VERSION:
        raise FormatVersionError(f"{path}: spec version {version} is newer than "
                                 f"{SPEC_VERSION}; upgrade lstm_fast")
    if version != SPEC_VERSION:
        raise ModelFileError(f"{path}: invalid spec version {reprlib.repr(version)}")
    used: set[str] = set()
    wdt = model.get("weights_dtype", "fp32")
    if wdt not in WEIGHT_DTYPES:
        raise ModelFileError(f"{path}: unknown weights_dtype {wdt!r}")
    layers = [_layer_from_json(entry, str(k), tensors, used, path, wdt)
              for k, entry in enumerate(model["layers"])]
    extra = set(tensors) - used
    if extra:
        raise ModelFileError(f"{path}: tensors not used by any layer: {sorted(extra)[:5]}")
    meta = model.get("metadata", {})
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: metadata must be an object")
    try:
        return ModelSpec(layers=tuple(layers), mask_semantics=model.get("mask_semantics"),
                         stateful=bool(model.get("stateful", False)), metadata=meta,
                         state_layout=model.get("state_layout", "stacked"),
                         weights_dtype=wdt, quant_error=model.get("quant_error"))
    except LstmFastError as e:
        raise ModelFileError(f"{path}: invalid model: {e}") from None


_SCALE = ".scale"  # int8: the per-row scales of tensor KEY are stored as KEY + _SCALE


def _layer_from_json(entry: Any, k: str, tensors: dict[str, np.ndarray], used: set[str],
                     path: str, wdt: str = "fp32", outer: bool = True) -> Any:
    if isinstance(entry, dict) and entry.get("kind") == "bidirectional":
        merge = entry.get("merge_mode")
        if not isinstance(merge, str) or not outer:
            raise ModelFileError(f"{path}: layer {k} (bidirectional): invalid merge_mode or "
                                 f"nesting")
        inner = [_layer_from_json(entry.get(d), f"{k}.{d}", tensors, used, path, wdt, False)
                 for d in ("forward", "backward")]
        try:
            return BidirectionalSpec(inner[0], inner[1], merge)
        except LstmFastError as e:
            raise ModelFileError(f"{path}: layer {k} (bidirectional): {e}") from None
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if not isinstance(kind, str) or kind not in LAYER_KINDS:
        raise ModelFileError(f"{path}: layer {k} has an unknown kind {str(kind)[:40]!r}")
    cls = LAYER_KINDS[kind]
    kwargs: dict[str, Any] = {}
    for opt in cls.OPTIONS:
        key, _ = _file_option(opt.name, opt.default)
        value, typ = entry.get(key), opt.type
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not typ:
            raise ModelFileError(f"{path}: layer {k} ({kind}): option {key!r} "
                                 f"must be {typ.__name__}, got {reprlib.repr(value)}")
        kwargs[opt.name] = _FILE_KEYS[opt.name][1](value) if opt.name in _FILE_KEYS else value
    quantizable = {t.name for t in cls.TENSORS if t.quantizable}
    names = entry.get("tensors")
    if not isinstance(names, dict) or not set(names) <= {t.name for t in cls.TENSORS}:
        raise ModelFileError(f"{path}: layer {k}: invalid tensor list {reprlib.repr(names)}")
    for name, key in names.items():
        if not isinstance(key, str) or key not in tensors:
            raise ModelFileError(f"{path}: layer {k}: tensor {reprlib.repr(key)} is missing")
        arr = tensors[key]
        # narrow weights: F16 for fp16; BF16 arrives widened to float32 by the reader; int8:
        # I8 codes plus the F32 scale of each row in the tensor KEY + ".scale"
        if wdt == "int8" and name in quantizable:
            scales = tensors.get(key + _SCALE)
            if arr.dtype != np.int8 or arr.ndim != 2 or scales is None \
                    or scales.dtype != np.float32 or scales.shape != (arr.shape[0],) \
                    or not np.isfinite(scales).all():
                raise ModelFileError(f"{path}: tensor {key!r} must be I8 with an F32 "
                                     f"{key + _SCALE!r} of one finite scale per row")
            arr = int8_values(arr, scales)
            used.add(key + _SCALE)
        elif wdt == "fp16" and name in quantizable:
            if arr.dtype != np.float16:
                raise ModelFileError(f"{path}: tensor {key!r} must be F16, got {arr.dtype}")
            arr = widen(arr, wdt)
        elif arr.dtype != np.float32:
            raise ModelFileError(f"{path}: tensor {key!r} must be F32, got "
                                 f"{arr.dtype}")
        kwargs[name] = arr
        used.add(key)
    try:
        return cls(**kwargs)
    except LstmFastError as e:
        raise ModelFileError(f"{path}: layer {k} ({kind}): {e}") from None
