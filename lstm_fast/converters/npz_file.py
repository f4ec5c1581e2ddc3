"""NumPy ``.npz`` archives (``np.savez``) as PyTorch-style state dicts.

Some packages ship the weights of a PyTorch-trained model as a plain ``.npz`` and run it with
hand-written numpy code (a grapheme-to-phoneme model keeps ``enc_w_ih``, ``enc_emb``,
``fc_w``, ...). Such names are read under the PyTorch names they stand for, so that the
ordinary state-dict inference applies; the mapping is applied to ``.npz`` archives only:

==================================  ==================================
name in the archive                 read as
==================================  ==================================
``P_w_ih``, ``P_w_hh``              ``P.weight_ih``, ``P.weight_hh``
``P_b_ih``, ``P_b_hh``              ``P.bias_ih``, ``P.bias_hh``
``P_w``, ``P_b``                    ``P.weight``, ``P.bias``
``P_emb``, ``P_embedding`` (2-D)    ``P_emb.weight`` (an Embedding)
``a.b.c`` (already dotted)          unchanged
==================================  ==================================

Arrays are loaded with ``allow_pickle=False`` (an object array is refused, nothing runs), each
member's declared size is checked against the archive before it is read.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from ..errors import ModelFileError

__all__ = ["read_npz_state_dict"]

#: Largest total of uncompressed member bytes accepted, as a multiple of the file size
#: (np.savez_compressed of real weights compresses far less than this).
_MAX_RATIO = 64
_ALIASES = [
    (re.compile(r"^(.+?)_?w_(ih|hh)$"), r"\1.weight_\2"),
    (re.compile(r"^(.+?)_?b_(ih|hh)$"), r"\1.bias_\2"),
    (re.compile(r"^(.+?)_w$"), r"\1.weight"),
    (re.compile(r"^(.+?)_b$"), r"\1.bias"),
]
_EMBEDDING = re.compile(r"^(.+_)?(emb|embedding|embeddings)$")


def _torch_name(name: str, arr: np.ndarray) -> str:
    if "." in name:
        return name
    if arr.ndim == 2 and _EMBEDDING.match(name):
        return f"{name}.weight"
    for pattern, repl in _ALIASES:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return name


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member, its declared size checked against the member's before reading."""
    fmt = np.lib.format
    with zf.open(info) as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ModelFileError(f"{where}: {info.filename}: unknown .npy version {version}")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) \
            else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject or len(shape) > 32:
            raise ModelFileError(f"{where}: {info.filename} is not a numeric array")
        count = int(np.prod(shape, dtype=object))
        if count * dtype.itemsize > info.file_size:
            raise ModelFileError(f"{where}: {info.filename} declares {shape} {dtype} but "
                                 f"holds {info.file_size} bytes")
        data = f.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ModelFileError(f"{where}: {info.filename} is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return np.ascontiguousarray(arr)


def read_npz_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive under PyTorch-style names (see the module docstring).

    Raises
    ------
    ModelFileError
        A damaged or oversized archive, an object array, or two names that map to one.
    """
    where = os.fspath(path)
    size = os.path.getsize(where)
    try:
        with zipfile.ZipFile(where) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > _MAX_RATIO * max(size, 1 << 20):
                raise ModelFileError(f"{where}: the archive declares far more data than the "
                                     f"file holds (a zip bomb?)")
            out: dict[str, np.ndarray] = {}
            for info in infos:
                arr = _read_member(zf, info, where)
                if arr.dtype.kind not in "fiub":
                    raise ModelFileError(f"{where}: {info.filename} holds {arr.dtype} data, "
                                         f"not numbers")
                name = _torch_name(info.filename[: -len(".npy")], arr)
                if name in out:
                    raise ModelFileError(f"{where}: two arrays are read as {name!r}")
                if arr.dtype in (np.float16, np.float64):
                    arr = arr.astype(np.float32)
                out[name] = arr
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
            RuntimeError, SyntaxError, TypeError, KeyError, RecursionError, MemoryError,
            OverflowError) as e:
        raise ModelFileError(f"{where}: damaged .npz archive ({type(e).__name__}: {e})"
                             ) from None
    return out
