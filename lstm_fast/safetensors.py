"""A small, strict reader and writer of the safetensors container.

Layout: ``u64 little-endian N | N bytes of UTF-8 JSON | data``. The JSON maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data) plus an
optional ``"__metadata__"`` dict of str to str. Tensors are C-contiguous little-endian.

Reading never executes code and never allocates more than the file holds: every size, shape
and offset in the header is checked against the file before any array is made. Arrays are
read-only views of a memory map (no copy) when the file is mapped.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._untrusted import loads_json
from .errors import ModelFileError

MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Nesting limit of the header JSON (a valid header nests 3 levels).
MAX_DEPTH = 8

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "BF16": np.dtype("<u2"),
}
_NAMES = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
          np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("u1"): "U8",
          np.dtype("i1"): "I8",
          np.dtype("?"): "BOOL"}


def write(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
          metadata: Mapping[str, str] | None = None,
          dtypes: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) and ``metadata`` to ``path`` (atomically).
    ``dtypes`` names the stored dtype of some tensors (``"BF16"`` for uint16 bit patterns)."""
    pieces = _pieces(tensors, metadata, dtypes)
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            for piece in pieces:
                f.write(piece)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def dumps(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
          dtypes: Mapping[str, str] | None = None) -> bytes:
    """The bytes :func:`write` would write (read them back with :func:`parse`)."""
    return b"".join(_pieces(tensors, metadata, dtypes))


def _pieces(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None,
            dtypes: Mapping[str, str] | None = None) -> list[Any]:
    """The container as a list of bytes-like pieces: length, header, each tensor's data."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        stored = (dtypes or {}).get(name) or _NAMES.get(a.dtype)
        if stored is None or _DTYPES[stored] != a.dtype:
            raise ModelFileError(f"cannot store tensor {name!r} of dtype {a.dtype}")
        header[name] = {"dtype": stored, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a)
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 64)  # data starts 64-byte aligned
    return [struct.pack("<Q", len(text)), text, *(memoryview(a).cast("B") for a in blobs)]


def read(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``.

    BF16 tensors are widened to float32; every other dtype is returned as stored. Arrays are
    read-only.

    Raises
    ------
    ModelFileError
        When the file is not a well-formed safetensors file (the message says what is wrong).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ModelFileError(f"{path}: too short to be a safetensors file ({size} bytes)")
        buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return parse(buf, path)


def parse(buf: Any, path: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Like :func:`read`, from a bytes-like object."""
    view = memoryview(buf)
    if len(view) < 8:
        raise ModelFileError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", view[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(view):
        raise ModelFileError(f"{path}: header length {n} does not fit the file "
                             f"({len(view)} bytes); the file is truncated or not safetensors")
    header = loads_json(bytes(view[8:8 + n]), "header JSON", path, max_depth=MAX_DEPTH,
                        max_bytes=MAX_HEADER_BYTES)
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: header must be a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{path}: __metadata__ must map strings to strings")
    data = view[8 + n:]
    tensors = {}
    for name, info in header.items():
        tensors[name] = _tensor(data, name, info, path)
    return tensors, dict(meta)


def _tensor(data: memoryview, name: str, info: Any, path: str) -> np.ndarray:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise ModelFileError(f"{where}: entry must be an object")
    code = info.get("dtype")
    dtype = _DTYPES.get(code) if isinstance(code, str) else None
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if dtype is None:
        raise ModelFileError(f"{where}: unsupported dtype {info.get('dtype')!r}")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(type(d) is int and 0 <= d < 2**40 for d in shape)):
        raise ModelFileError(f"{where}: invalid shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise ModelFileError(f"{where}: invalid data_offsets {offsets!r}")
    begin, end = offsets
    count = int(np.prod(shape, dtype=object))
    if not 0 <= begin <= end <= len(data):
        raise ModelFileError(f"{where}: data_offsets {offsets} lie outside the data "
                             f"({len(data)} bytes); the file is truncated or corrupted")
    if end - begin != count * dtype.itemsize:
        raise ModelFileError(f"{where}: shape {shape} needs {count * dtype.itemsize} bytes, "
                             f"data_offsets give {end - begin}")
    arr = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    if code == "BF16":
        wide = arr.astype(np.uint32)
        wide <<= 16
        arr = wide.view(np.float32)
        arr.flags.writeable = False
    return arr
