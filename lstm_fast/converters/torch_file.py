"""Read PyTorch checkpoints without torch and without running any code stored in them.

Supported inputs (see ``/work/shared/FORMATS.md`` §1.6-1.9 for the layouts):

- the default zip format of ``torch.save`` (``<prefix>/data.pkl`` + ``<prefix>/data/<key>``),
  for state dicts, training-checkpoint dicts and any nesting of dicts/lists/tuples/primitives;
- TorchScript archives (``torch.jit.save``): their module tree becomes the flat state dict
  ``torch.jit.load(path).state_dict()`` would give (parameters and buffers, same names);
- the legacy non-zip stream of ``torch.save(..., _use_new_zipfile_serialization=False)``;
- ``.safetensors`` files.

The pickles are read by a restricted unpickler: only an explicit allow-list of globals
resolves, and every allowed callable is one of ours (tensor rebuild helpers that only record
what they were given, container constructors). Nothing a file names is ever imported or called.
Whole pickled modules (``torch.save(model, path)``) are refused with a hint to save the
``state_dict()`` instead; any other unknown global is refused by name.

Every size in the file (storage element counts, tensor shapes, strides and offsets) is checked
against the bytes the file really holds before an array is made, so a hostile or truncated file
raises :class:`~lstm_fast.errors.ModelFileError` instead of allocating or crashing.

Arrays are read-only, C-contiguous and native-endian (contiguous tensors share the bytes read
from the file, views are copied); float16 and bfloat16 are widened to float32, every other
dtype is kept as stored.
"""

from __future__ import annotations

import _compat_pickle
import ast
import io
import os
import pickle
import pickletools
import re
import reprlib
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._untrusted import converter_errors
from ..errors import ForbiddenGlobal, LstmFastError, ModelFileError, UnsupportedModelError
from ._zip import SafeZip
from .source import LEGACY_MAGIC, identify

__all__ = ["LEGACY_MAGIC", "load_torch_checkpoint", "read_state_dict"]

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

#: Largest pickle we decompress (torch stores pickles uncompressed, so this is generous).
MAX_PICKLE_BYTES = 1 << 30
#: A deflated data.pkl may expand at most this much (torch stores it uncompressed).
_MAX_PICKLE_RATIO = 16
_MAX_NDIM = 64
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MAX_CODE_BYTES = 64 << 20

_STATE_DICT_HINT = ("this file is a whole pickled module (torch.save(model, path)); reading it "
                    "would execute code from the file. Re-save only the weights with "
                    "`torch.save(model.state_dict(), path)` (or export them with "
                    "safetensors' `save_file(model.state_dict(), path)`) and convert that")


# --------------------------------------------------------------------------------------------
# Inert markers the unpickler builds. None of them has behaviour a pickle can reach.


class _Inert:
    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError(f"cannot set the state of a {type(self).__name__}")


class _DType(_Inert):
    """A torch dtype global such as ``torch.float32``."""

    __slots__ = ("name", "np_dtype")

    def __init__(self, name: str, np_dtype: np.dtype | None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "np_dtype", np_dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _StorageType(_Inert):
    """A storage class global such as ``torch.FloatStorage`` (its dtype is all we need)."""

    __slots__ = ("name", "np_dtype")

    def __init__(self, name: str, np_dtype: np.dtype | None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "np_dtype", np_dtype)


class _StorageRef(_Inert):
    """A persistent-id storage reference; ``numel`` counts elements of ``np_dtype``."""

    __slots__ = ("key", "type", "numel", "offset")

    def __init__(self, key: str, stype: _StorageType, numel: int, offset: int = 0) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "type", stype)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "offset", offset)  # legacy storage views only


class _TensorRef(_Inert):
    """What ``torch._utils._rebuild_tensor*`` was given; checked and read when materialized."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage: object, offset: object, size: object, stride: object,
                 dtype: _DType | None = None) -> None:
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "dtype", dtype)


class _Call(_Inert):
    """An allowed callable. Slotted, with no ``__dict__`` and a refusing ``__setstate__``, so a
    pickle's BUILD cannot alter it or the function it wraps."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)


class _ScriptObject:
    """An inert stand-in for a TorchScript ``__torch__.*`` object: it only records its state."""

    __slots__ = ("_ts_state",)
    _ts_name = "__torch__"

    def __setstate__(self, state: object) -> None:
        object.__setattr__(self, "_ts_state", state)


_BF16 = "bfloat16"
_STORAGE_DTYPES: dict[str, str | None] = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2",
    "BFloat16Storage": _BF16, "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "ComplexDoubleStorage": "<c16", "ComplexFloatStorage": "<c8",
    "QInt8Storage": None, "QInt32Storage": None, "QUInt8Storage": None,
    "QUInt4x2Storage": None, "QUInt2x4Storage": None,
}
_TORCH_DTYPES: dict[str, str | None] = {
    "float64": "<f8", "double": "<f8", "float32": "<f4", "float": "<f4", "float16": "<f2",
    "half": "<f2", "bfloat16": _BF16, "int64": "<i8", "long": "<i8", "int32": "<i4",
    "int": "<i4", "int16": "<i2", "short": "<i2", "int8": "i1", "uint8": "u1", "bool": "?",
    "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "complex128": "<c16",
    "cdouble": "<c16", "complex64": "<c8", "cfloat": "<c8",
}
_UNSUPPORTED_DTYPES = (
    "complex32", "chalf", "qint8", "qint32", "quint8", "quint4x2", "quint2x4",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
    *(f"uint{k}" for k in range(1, 8)), *(f"int{k}" for k in range(1, 8)),
)


def _np_dtype(code: str | None) -> np.dtype | None:
    if code is None:
        return None
    return np.dtype("<u2") if code == _BF16 else np.dtype(code)


# --------------------------------------------------------------------------------------------
# The restricted unpickler


class _Unpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, each to an inert marker or a callable of ours."""

    def __init__(self, data: bytes | io.BytesIO, *, script: bool = False,
                 legacy: bool = False) -> None:
        super().__init__(data if isinstance(data, io.BytesIO) else io.BytesIO(data))
        self._script = script
        self._legacy = legacy
        self._script_classes: dict[str, type] = {}
        self.storages: dict[str, _StorageRef] = {}
        self._allowed: dict[str, Any] = {
            "collections.OrderedDict": _Call(self._ordered_dict),
            "torch._utils._rebuild_tensor": _Call(self._rebuild_tensor),
            "torch._utils._rebuild_tensor_v2": _Call(self._rebuild_tensor_v2),
            "torch._utils._rebuild_tensor_v3": _Call(self._rebuild_tensor_v3),
            "torch._utils._rebuild_parameter": _Call(self._rebuild_parameter),
            "torch._utils._rebuild_parameter_with_state": _Call(self._rebuild_parameter),
            "torch.Size": _Call(self._size),
            "torch.device": _Call(self._device),
            "_codecs.encode": _Call(self._codecs_encode),
            "builtins.set": _Call(self._set),
            "builtins.frozenset": _Call(self._frozenset),
            "builtins.bytearray": _Call(self._bytearray),
            "builtins.complex": _Call(self._complex),
            "torch.storage.UntypedStorage": _StorageType("UntypedStorage", np.dtype("u1")),
        }
        for name, code in _STORAGE_DTYPES.items():
            self._allowed[f"torch.{name}"] = _StorageType(name, _np_dtype(code))
        for name, code in _TORCH_DTYPES.items():
            self._allowed[f"torch.{name}"] = _DType(name, _np_dtype(code))
        for name in _UNSUPPORTED_DTYPES:
            self._allowed[f"torch.{name}"] = _DType(name, None)
        if script:
            for helper in ("build_tensorlist", "build_intlist", "build_doublelist",
                           "build_boollist"):
                self._allowed[f"torch.jit._pickle.{helper}"] = _Call(self._build_list)
            self._allowed["torch.jit._pickle.restore_type_tag"] = _Call(self._restore_type_tag)

    # -- pickle hooks --------------------------------------------------------------------------

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        found = self._allowed.get(full)
        if found is not None:
            return found
        if self._script and (module == "__torch__" or module.startswith("__torch__.")):
            cls = self._script_classes.get(full)
            if cls is None:  # a fresh inert class per load: nothing is shared between files
                cls = type(name, (_ScriptObject,), {"__slots__": (), "_ts_name": full})
                self._script_classes[full] = cls
            return cls
        raise ForbiddenGlobal(full)

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError("persistent id is not a tuple")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and self._legacy:
            raise ForbiddenGlobal("torch.nn.Module source (legacy whole-module pickle)")
        if kind != "storage" or len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"unknown persistent id kind {_brief(kind)}")
        stype, key, _location, numel = pid[1:5]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError("storage persistent id without a storage class")
        if isinstance(key, bytes):
            key = key.decode("ascii")
        if not isinstance(key, str) or not key or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError("malformed storage persistent id")
        if stype.np_dtype is None:
            raise UnsupportedModelError(f"tensors of storage type torch.{stype.name} are not "
                                        f"supported by the torch-free reader")
        ref = _StorageRef(key, stype, int(numel))
        prev = self.storages.get(key)
        nbytes = numel * stype.np_dtype.itemsize
        if prev is None or prev.numel * prev.type.np_dtype.itemsize < nbytes:
            self.storages[key] = ref
        if len(pid) == 6 and pid[5] is not None:  # legacy storage view (view_key, offset, size)
            view = pid[5]
            if (not isinstance(view, tuple) or len(view) != 3 or not _is_int(view[1])
                    or not _is_int(view[2]) or view[1] < 0 or view[2] < 0
                    or view[1] + view[2] > numel):
                raise pickle.UnpicklingError("malformed legacy storage view")
            return _StorageRef(key, stype, int(view[2]), int(view[1]))
        return ref

    # -- allowed callables (each wrapped in a _Call: a pickle cannot alter them) ------------

    @staticmethod
    def _ordered_dict(*args: Any) -> OrderedDict:
        if args and not isinstance(args[0], (list, tuple, dict)):
            raise pickle.UnpicklingError("OrderedDict expects a list of pairs")
        return OrderedDict(*args[:1])

    @staticmethod
    def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
        return _TensorRef(storage, offset, size, stride)

    @staticmethod
    def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any,
                           requires_grad: Any = False, hooks: Any = None,
                           metadata: Any = None) -> _TensorRef:
        return _TensorRef(storage, offset, size, stride)

    @staticmethod
    def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any,
                           requires_grad: Any, hooks: Any, dtype: Any,
                           metadata: Any = None) -> _TensorRef:
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("_rebuild_tensor_v3 without a dtype")
        return _TensorRef(storage, offset, size, stride, dtype)

    @staticmethod
    def _rebuild_parameter(data: Any, *args: Any) -> _TensorRef:
        if not isinstance(data, _TensorRef):
            raise pickle.UnpicklingError("_rebuild_parameter applied to something not a tensor")
        return data

    @staticmethod
    def _size(*args: Any) -> tuple:
        if len(args) != 1 or not isinstance(args[0], (tuple, list)):
            raise pickle.UnpicklingError("torch.Size expects one tuple")
        return tuple(args[0])

    @staticmethod
    def _device(*args: Any) -> str:
        if not args or not all(isinstance(a, (str, int)) for a in args):
            raise pickle.UnpicklingError("malformed torch.device")
        return ":".join(str(a) for a in args)

    @staticmethod
    def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
            raise pickle.UnpicklingError("_codecs.encode only rebuilds bytes")
        return text.encode(encoding)

    @staticmethod
    def _set(items: Any = ()) -> set:
        if not isinstance(items, (list, tuple)):
            raise pickle.UnpicklingError("set expects a list")
        return set(items)

    @staticmethod
    def _frozenset(items: Any = ()) -> frozenset:
        if not isinstance(items, (list, tuple)):
            raise pickle.UnpicklingError("frozenset expects a list")
        return frozenset(items)

    @staticmethod
    def _bytearray(data: Any = b"", *args: Any) -> bytearray:
        if isinstance(data, str) and args and args[0] in ("latin1", "latin-1"):
            return bytearray(data.encode("latin1"))
        if not isinstance(data, (bytes, list)):  # never an int: bytearray(2**40) allocates
            raise pickle.UnpicklingError("bytearray expects bytes")
        return bytearray(data)

    @staticmethod
    def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
        if not all(isinstance(v, (int, float)) for v in (real, imag)):
            raise pickle.UnpicklingError("complex expects two numbers")
        return complex(real, imag)

    @staticmethod
    def _build_list(data: Any, *args: Any) -> list:
        if not isinstance(data, list):
            raise pickle.UnpicklingError("TorchScript list helper expects a list")
        return data

    @staticmethod
    def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
        return value


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pickle_globals(data: bytes) -> list[str]:
    """The globals a pickle names, found by parsing its opcodes (nothing is executed)."""
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                found.append(f"{module}.{name}")
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                strings.append(memo[arg])
    except Exception:  # a corrupt tail: report what was found before it
        pass
    out: list[str] = []
    for g in found:
        module, _, name = g.rpartition(".")
        if (module, name) in _compat_pickle.NAME_MAPPING:
            g = ".".join(_compat_pickle.NAME_MAPPING[(module, name)])
        elif module in _compat_pickle.IMPORT_MAPPING:
            g = f"{_compat_pickle.IMPORT_MAPPING[module]}.{name}"
        if g not in out:
            out.append(g)
    return out


def _is_module_global(name: str) -> bool:
    return name.startswith(("__main__.", "torch.nn."))


def _refuse_globals(where: str, data: bytes, first: str, allowed: Mapping[str, Any],
                    script: bool) -> LstmFastError:
    """The error for a pickle naming ``first`` (not allow-listed): whole module or hostile."""
    names = [g for g in _pickle_globals(data)
             if g not in allowed and not (script and g.startswith("__torch__."))]
    if first not in names:
        names.insert(0, first)
    if any(_is_module_global(g) for g in names):
        stdlib = sys.stdlib_module_names
        bad = [g for g in names if not _is_module_global(g)
               and (g.split(".")[0] in stdlib or g.startswith("torch."))]
        if not bad:
            classes = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            return UnsupportedModelError(f"{where}: {_STATE_DICT_HINT} (it references {classes})")
        first = bad[0]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return ModelFileError(
        f"{where}: the pickle references the global {first!r}, which a weights file never "
        f"needs; refusing to load it (nothing from the file was executed). Unknown globals: "
        f"{shown}")


def _unpickle(data: bytes | io.BytesIO, where: str, *, script: bool = False,
              legacy: bool = False) -> tuple[Any, _Unpickler]:
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    start = stream.tell()
    # Walk the opcodes first (pure parsing, nothing is built): it rejects corrupt streams and
    # length fields larger than the data before the C unpickler would allocate them
    # (BINBYTES8/BYTEARRAY8 allocate their claimed size before reading).
    # The C unpickler also grows its memo array to the largest PUT index it meets, so an index
    # of 2**31 in a 1 KB pickle would allocate gigabytes: indices must stay below the number
    # of opcodes (a real pickle numbers its memo entries 0, 1, 2, ...).
    ops = top = 0
    try:
        for op, arg, _pos in pickletools.genops(stream):
            ops += 1
            if op.name in _MEMO_PUTS and isinstance(arg, int):
                top = max(top, arg)
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt pickle
        raise ModelFileError(f"{where}: corrupted pickle data ({type(e).__name__}: "
                             f"{_short(e)})") from None
    if top >= ops:
        raise ModelFileError(f"{where}: corrupted pickle data (memo index {top} in a pickle of "
                             f"{ops} opcodes)")
    stream.seek(start)
    unpickler = _Unpickler(stream, script=script, legacy=legacy)
    try:
        return unpickler.load(), unpickler
    except ForbiddenGlobal as e:
        raw = stream.getbuffer()[start:].tobytes()
        raise _refuse_globals(where, raw, e.name, unpickler._allowed, script) from None
    except LstmFastError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a corrupt pickle is a file error
        raise ModelFileError(f"{where}: corrupted pickle data ({type(e).__name__}: "
                             f"{_short(e)})") from None


def _brief(value: object) -> str:
    """A short repr of a value taken from the file (long strings are cut)."""
    return reprlib.repr(value)


def _short(e: BaseException) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "..."


# --------------------------------------------------------------------------------------------
# Turning the recorded references into arrays


class _Materializer:
    """Replaces every ``_TensorRef`` in an unpickled tree by a read-only numpy array.

    ``storage_bytes(ref)`` returns the raw bytes of a storage (already checked to hold
    ``ref.numel`` elements). ``budget`` caps the total bytes of arrays made.
    """

    def __init__(self, where: str, storage_bytes: Callable[[_StorageRef], memoryview],
                 budget: int, big_endian: bool = False) -> None:
        self.where = where
        self.storage_bytes = storage_bytes
        self.budget = budget
        self.big_endian = big_endian
        self.memo: dict[int, Any] = {}

    def __call__(self, obj: Any) -> Any:
        try:
            return self._walk(obj)
        except RecursionError:
            raise ModelFileError(f"{self.where}: the pickled object is nested too deeply"
                                 ) from None

    def _walk(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, _TensorRef):
            out: Any = self._array(obj)
            self.memo[key] = out
            return out
        if isinstance(obj, dict):
            out = OrderedDict() if isinstance(obj, OrderedDict) else {}
            self.memo[key] = out
            for k, v in obj.items():
                out[self._walk(k)] = self._walk(v)
            return out
        if isinstance(obj, list):
            out = []
            self.memo[key] = out
            out.extend(self._walk(v) for v in obj)
            return out
        if isinstance(obj, tuple):
            out = tuple(self._walk(v) for v in obj)
            self.memo[key] = out
            return out
        if isinstance(obj, (set, frozenset, bytearray)):
            return obj  # elements are hashable, hence never tensors
        if isinstance(obj, _ScriptObject):
            state = getattr(obj, "_ts_state", None)
            self.memo[key] = obj
            object.__setattr__(obj, "_ts_state", self._walk(state))
            return obj
        if isinstance(obj, _DType):
            return repr(obj)
        if isinstance(obj, (_StorageRef, _StorageType)):
            raise UnsupportedModelError(f"{self.where}: the file holds a bare torch storage; "
                                        f"only tensors are supported")
        raise ModelFileError(f"{self.where}: unexpected {type(obj).__name__} object in the "
                             f"pickle")

    def _array(self, t: _TensorRef) -> np.ndarray:
        where = self.where
        storage = t.storage
        if not isinstance(storage, _StorageRef):
            raise ModelFileError(f"{where}: a tensor is not backed by a storage")
        dtype = storage.type.np_dtype
        is_bf16 = storage.type.name == "BFloat16Storage"
        avail_bytes = storage.numel * dtype.itemsize
        if t.dtype is not None:  # _rebuild_tensor_v3: an untyped (byte) storage plus a dtype
            if t.dtype.np_dtype is None:
                raise UnsupportedModelError(f"{where}: tensors of dtype torch.{t.dtype.name} "
                                            f"are not supported by the torch-free reader")
            dtype, is_bf16 = t.dtype.np_dtype, t.dtype.name == "bfloat16"
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        item = dtype.itemsize
        numel = avail_bytes // item
        offset, size, stride = t.offset, t.size, t.stride
        if isinstance(size, list):
            size = tuple(size)
        if isinstance(stride, list):
            stride = tuple(stride)
        if (not _is_int(offset) or not isinstance(size, tuple) or not isinstance(stride, tuple)
                or len(size) != len(stride) or len(size) > _MAX_NDIM
                or not all(_is_int(v) for v in size + stride)):
            raise ModelFileError(f"{where}: malformed tensor geometry (offset {_brief(offset)}, "
                                 f"size {_brief(size)}, stride {_brief(stride)})")
        if offset < 0 or any(v < 0 for v in size) or any(v < 0 for v in stride):
            raise ModelFileError(f"{where}: negative tensor offset, size or stride "
                                 f"(offset {offset}, size {_brief(size)}, stride {_brief(stride)})")
        count = 1
        for v in size:
            count *= v
        out_item = 4 if (is_bf16 or (dtype.kind == "f" and item == 2)) else item
        if count * out_item > self.budget:
            raise ModelFileError(f"{where}: a tensor of size {_brief(size)} needs "
                                 f"{count * out_item} bytes, more than the file could hold; "
                                 f"the file is corrupt")
        self.budget -= count * out_item
        widen = is_bf16 or (dtype.kind == "f" and item == 2)
        if count == 0:
            empty = np.zeros(size, np.float32 if widen else dtype.newbyteorder("="))
            empty.flags.writeable = False
            return empty
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= numel:
            raise ModelFileError(
                f"{where}: tensor (offset {offset}, size {_brief(size)}, stride {_brief(stride)}) "
                f"reaches element {last} of storage {_brief(storage.key)}, which holds {numel}")
        raw = self.storage_bytes(storage)
        base = np.frombuffer(raw, dtype=dtype, count=numel,
                             offset=storage.offset * storage.type.np_dtype.itemsize)
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
        if is_bf16:
            arr = np.array(view, dtype=np.uint32)
            arr <<= 16  # in place: a 0-d array stays an array
            arr = arr.view(np.float32)
        elif widen:
            arr = np.array(view, dtype=np.float32)
        elif view.flags.c_contiguous and dtype.isnative:
            return view  # read-only, shares the bytes read from the file: no copy
        else:
            arr = np.array(view, dtype=dtype.newbyteorder("="), order="C")
        arr.flags.writeable = False
        return arr


# --------------------------------------------------------------------------------------------
# Containers


def _budget(file_size: int) -> int:
    # Arrays may exceed the file (fp16 -> fp32, tied weights viewing one storage twice), but
    # never by much: 4x the file plus 64 MiB covers every real checkpoint.
    return 4 * file_size + (64 << 20)


def _find_pickle(names: list[str], where: str) -> str:
    top = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(top) == 1:
        return top[0]
    if not top:
        deeper = sorted((n for n in names if n.endswith("/data.pkl")), key=len)
        if len(deeper) == 1:
            return deeper[0]
        if not deeper:
            hint = ""
            if any(n.endswith(("archive_format", "/models/model.json")) or "/models/" in n
                   for n in names):
                hint = " (this looks like a torch.export .pt2 archive, which is not supported)"
            raise ModelFileError(f"{where}: zip archive without a data.pkl entry: not a "
                                 f"PyTorch checkpoint{hint}")
        top = deeper
    raise ModelFileError(f"{where}: the zip archive holds several data.pkl entries "
                         f"({', '.join(top[:5])}); cannot tell which one is the checkpoint")


def _load_zip(path: str, file_size: int) -> Any:
    where = path
    with SafeZip(path, where) as z:
        infos = z.infos
        pkl = _find_pickle(z.names, where)
        prefix = pkl[: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in infos:
            order = z.read(prefix + "byteorder", 64).strip()
            if order not in (b"little", b"big"):
                raise ModelFileError(f"{where}: unknown byteorder {order[:20]!r}")
            big_endian = order == b"big"
        script = prefix + "constants.pkl" in infos or any(
            n.startswith(prefix + "code/") for n in infos)
        data = z.read(pkl, min(MAX_PICKLE_BYTES, max(file_size, _MAX_PICKLE_RATIO * file_size)))
        obj, unpickler = _unpickle(data, f"{where} ({pkl})", script=script)
        cache: dict[str, bytes] = {}

        def storage_bytes(ref: _StorageRef) -> memoryview:
            raw = cache.get(ref.key)
            if raw is None:
                name = f"{prefix}data/{ref.key}"
                info = infos.get(name)
                if info is None or "/" in ref.key or ref.key in (".", ".."):
                    raise ModelFileError(f"{where}: storage {_brief(ref.key)} has no entry "
                                         f"{_brief(name)}; the file is incomplete")
                full = unpickler.storages.get(ref.key, ref)
                need = full.numel * full.type.np_dtype.itemsize
                if need > info.file_size:
                    raise ModelFileError(
                        f"{where}: storage {_brief(ref.key)} claims {full.numel} elements "
                        f"({need} bytes) but its entry holds only {info.file_size} bytes")
                raw = z.read(name, info.file_size)
                cache[ref.key] = raw
            return memoryview(raw)

        # Check every storage's claimed size before reading any data (fails fast on 2**40).
        for ref in unpickler.storages.values():
            info = infos.get(f"{prefix}data/{ref.key}")
            need = ref.numel * ref.type.np_dtype.itemsize
            if info is not None and need > info.file_size:
                raise ModelFileError(
                    f"{where}: storage {_brief(ref.key)} claims {ref.numel} elements ({need} "
                    f"bytes) but its entry holds only {info.file_size} bytes")
        result = _Materializer(where, storage_bytes, _budget(file_size), big_endian)(obj)
        if script:
            return _script_state_dict(result, _script_classes(z, prefix), where)
        return result


def _load_legacy(path: str, data: bytes) -> Any:
    where = path
    f = io.BytesIO(data)
    magic, _ = _unpickle(f, where)
    if magic != _LEGACY_MAGIC_NUMBER:
        raise ModelFileError(f"{where}: invalid legacy torch magic number")
    version, _ = _unpickle(f, where)
    if version != _LEGACY_PROTOCOL_VERSION:
        raise ModelFileError(f"{where}: unknown legacy torch protocol version {_brief(version)}")
    sys_info, _ = _unpickle(f, where)
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True) is not False
    obj, unpickler = _unpickle(f, where, legacy=True)
    keys, _ = _unpickle(f, where)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFileError(f"{where}: corrupted legacy storage key list")
    pos = f.tell()
    spans: dict[str, tuple[int, int]] = {}
    for key in keys:
        ref = unpickler.storages.get(key)
        if ref is None:
            raise ModelFileError(f"{where}: legacy storage {_brief(key)} is not used by any tensor")
        if pos + 8 > len(data):
            raise ModelFileError(f"{where}: truncated legacy file (storage {_brief(key)} missing)")
        (numel,) = struct.unpack("<q" if little else ">q", data[pos:pos + 8])
        nbytes = numel * ref.type.np_dtype.itemsize
        if numel < 0 or numel < ref.numel or pos + 8 + nbytes > len(data):
            raise ModelFileError(f"{where}: legacy storage {_brief(key)} claims {numel} elements, "
                                 f"which the file does not hold; the file is truncated or "
                                 f"corrupt")
        spans[key] = (pos + 8, nbytes)
        pos += 8 + nbytes
    view = memoryview(data)

    def storage_bytes(ref: _StorageRef) -> memoryview:
        if ref.key not in spans:
            raise ModelFileError(f"{where}: storage {_brief(ref.key)} has no data in the file")
        start, nbytes = spans[ref.key]
        return view[start:start + nbytes]

    return _Materializer(where, storage_bytes, _budget(len(data)), not little)(obj)


# --------------------------------------------------------------------------------------------
# TorchScript: module tree -> state dict

_CLASS_RE = re.compile(r"^class\s+(\w+)\s*\(", re.MULTILINE)
_LIST_RE = re.compile(r"\s+(__parameters__|__buffers__)\s*=\s*(\[[^\]\n]*\])\s*\n")


def _script_classes(z: SafeZip, prefix: str) -> dict[str, tuple[list[str], list[str]] | None]:
    """``qualified class name -> (parameter names, buffer names)`` from the archive's code/.

    Classes that are not modules (no ``__parameters__``) map to None. The code is only scanned
    as text for the two literal lists; it is never run.
    """
    classes: dict[str, tuple[list[str], list[str]] | None] = {}
    base = prefix + "code/"
    for name in z.names:
        if not (name.startswith(base) and name.endswith(".py")):
            continue
        module = name[len(base):-3].replace("/", ".")
        text = z.read(name, _MAX_CODE_BYTES).decode("utf-8", "replace")
        for m in _CLASS_RE.finditer(text):
            found: dict[str, list[str]] = {}
            pos = text.index("\n", m.end()) if "\n" in text[m.end():] else len(text)
            for _ in range(2):  # the two lists directly follow the class line
                lm = _LIST_RE.match(text, pos)
                if lm is None:
                    break
                try:
                    value = ast.literal_eval(lm.group(2))
                except (ValueError, SyntaxError):
                    break
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    found[lm.group(1)] = value
                pos = lm.end() - 1
            qual = f"{module}.{m.group(1)}"
            if "__parameters__" in found:
                classes[qual] = (found["__parameters__"], found.get("__buffers__", []))
            else:
                classes[qual] = None
    return classes


def _script_state_dict(root: Any,
                       classes: Mapping[str, tuple[list[str], list[str]] | None],
                       where: str) -> OrderedDict:
    if not isinstance(root, _ScriptObject):
        raise ModelFileError(f"{where}: TorchScript archive whose root is not a module")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    seen: set[int] = set()

    def visit(obj: _ScriptObject, prefix: str) -> None:
        if id(obj) in seen:  # a module reachable twice: torch lists it once
            return
        seen.add(id(obj))
        state = getattr(obj, "_ts_state", None)
        if not isinstance(state, dict):
            return
        qual = type(obj)._ts_name
        if qual in classes and classes[qual] is None:
            return  # a TorchScript class, not a module: not part of the state dict
        info = classes.get(qual)
        names = info[0] + info[1] if info else [
            k for k, v in state.items() if isinstance(v, np.ndarray)]
        for n in names:
            v = state.get(n)
            if isinstance(v, np.ndarray):
                out[prefix + n] = v
        for k, v in state.items():
            if isinstance(k, str) and isinstance(v, _ScriptObject):
                visit(v, f"{prefix}{k}.")

    try:
        visit(root, "")
    except RecursionError:
        raise ModelFileError(f"{where}: the TorchScript module tree is nested too deeply"
                             ) from None
    return out


# --------------------------------------------------------------------------------------------
# Public API


def _widen_half(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        if v.dtype == np.float16:
            v = v.astype(np.float32)
            v.flags.writeable = False
        out[k] = v
    return out


def load_torch_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a PyTorch checkpoint without torch and without executing pickled code.

    Parameters
    ----------
    path : str or os.PathLike
        A ``torch.save`` file (zip, or the legacy non-zip stream), a TorchScript archive
        (``torch.jit.save``) or a ``.safetensors`` file.

    Returns
    -------
    object
        What was saved, with every tensor replaced by a numpy array: nested dicts (an
        ``OrderedDict`` stays one), lists, tuples and primitives. A TorchScript archive and a
        safetensors file give a flat ``name -> array`` dict (for TorchScript the names of
        ``torch.jit.load(path).state_dict()``). Arrays are read-only and C-contiguous;
        float16/bfloat16 become float32.

    Raises
    ------
    ModelFileError
        The file is truncated, corrupted, of an unknown format, or its pickle references a
        global a weights file never needs (e.g. ``os.system``); nothing is executed.
    UnsupportedModelError
        The file is a whole pickled module (``torch.save(model, path)``), or holds tensors of a
        dtype numpy cannot represent (float8, quantized).
    """
    path = os.fspath(path)
    src = identify(path)
    size, head = src.size, src.head
    try:
        if src.is_zip:
            return _load_zip(path, size)
        if src.is_torch_legacy:
            with open(path, "rb") as f:
                data = f.read()
            return _load_legacy(path, data)
        if src.is_tar:
            raise ModelFileError(
                f"{path}: this is a tar-format torch checkpoint (PyTorch < 0.4), which is not "
                f"supported; load it with torch and re-save it with "
                f"`torch.save(obj, path)` (the default zip format)")
        if src.is_safetensors:
            from .. import safetensors

            tensors, _meta = safetensors.read(path)
            return _widen_half(tensors)
    except LstmFastError:
        raise
    except RecursionError:
        raise ModelFileError(f"{path}: the checkpoint is nested too deeply") from None
    except MemoryError:
        raise ModelFileError(f"{path}: not enough memory to read the checkpoint") from None
    except Exception as e:  # noqa: BLE001 - zipfile/zlib/struct/pickle errors of a bad file
        raise ModelFileError(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                             f"{_short(e)}); the file is truncated or corrupted") from None
    raise ModelFileError(
        f"{path}: not a PyTorch checkpoint (unknown magic bytes {head[:8].hex(' ')}); "
        f"expected a torch.save zip archive, a TorchScript archive, a legacy torch.save "
        f"stream or a safetensors file")


def _is_tensor_dict(obj: object) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()))


def _find_state_dicts(obj: object, path: str = "", depth: int = 0) -> list[str]:
    if _is_tensor_dict(obj):
        return [path]
    if not isinstance(obj, dict) or depth >= 3:
        return []
    found: list[str] = []
    for k, v in obj.items():
        if isinstance(k, str):
            found += _find_state_dicts(v, f"{path}/{k}" if path else k, depth + 1)
    return found


def _strip_wrappers(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop ``module.`` (DataParallel) / ``_orig_mod.`` (torch.compile) when every key has it."""
    out = dict(sd)
    while out:
        for wrapper in ("module.", "_orig_mod."):
            if all(k.startswith(wrapper) for k in out):
                out = {k[len(wrapper):]: v for k, v in out.items()}
                break
        else:
            return out
    return out


@converter_errors
def read_state_dict(path: str | os.PathLike[str], key: str | None = None
                    ) -> dict[str, np.ndarray]:
    """Read the flat ``name -> array`` state dict of a checkpoint (no torch needed).

    Parameters
    ----------
    path : str or os.PathLike
        Any file :func:`load_torch_checkpoint` reads.
    key : str, optional
        Where the state dict sits inside a training checkpoint, e.g. ``"model_state_dict"``
        (nested levels joined by ``/``). By default the file's top level is used when it is a
        dict of tensors; otherwise the unique sub-dict of tensors (``state_dict``,
        ``model_state_dict``, ``model``, ``net``, ...) is picked.

    Returns
    -------
    dict of str to ndarray
        In file order. A ``module.`` prefix (``nn.DataParallel``) or ``_orig_mod.``
        (``torch.compile``) shared by every key is removed.

    Raises
    ------
    ModelFileError
        The file cannot be read (see :func:`load_torch_checkpoint`), holds no dict of tensors,
        ``key`` does not lead to one, or several candidates exist (the message lists them; pass
        ``key=``).
    """
    obj = load_torch_checkpoint(path)
    where = os.fspath(path)
    if key is not None:
        cur: Any = obj
        for part in key.split("/"):
            if not isinstance(cur, dict) or part not in cur:
                avail = sorted(str(k) for k in cur) if isinstance(cur, dict) else []
                raise ModelFileError(f"{where}: no entry {key!r} in the checkpoint (available: "
                                     f"{', '.join(avail[:20]) or 'none'})")
            cur = cur[part]
        if not _is_tensor_dict(cur):
            raise ModelFileError(f"{where}: entry {key!r} is not a dict of tensors")
        return _strip_wrappers(cur)
    if _is_tensor_dict(obj):
        return _strip_wrappers(obj)
    found = _find_state_dicts(obj)
    if len(found) == 1:
        cur = obj
        for part in found[0].split("/"):
            cur = cur[part]
        return _strip_wrappers(cur)
    if not found:
        what = (f"a dict with keys {', '.join(sorted(map(str, obj))[:20])}"
                if isinstance(obj, dict) else f"a {type(obj).__name__}")
        raise ModelFileError(f"{where}: no dict of tensors (state dict) found in the "
                             f"checkpoint; it holds {what}")
    raise ModelFileError(f"{where}: the checkpoint holds several state dicts ("
                         f"{', '.join(repr(f) for f in found)}); pass key= to choose one")
