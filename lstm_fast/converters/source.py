"""What a source checkpoint file is: the one place that looks at a file's first bytes.

:func:`identify` tells the formats ``lstm-fast convert`` reads apart; the CLI picks the
converter from it and each reader opens the file the way it says. Nothing here parses more
than a zip archive's central directory (read with :mod:`zipfile` and given up on at the first
error: the readers then report what is wrong with the file).
"""

from __future__ import annotations

import functools
import os
import struct
import zipfile
from dataclasses import dataclass

__all__ = ["KINDS", "LEGACY_MAGIC", "Source", "identify"]

#: First bytes of a legacy (non-zip) ``torch.save`` stream: pickle protocol 2 + LONG1 magic.
LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

#: What :func:`identify` may say, and the framework each kind belongs to.
KINDS = {
    "torch_zip": "torch",      # torch.save (zip archive with a data.pkl)
    "torchscript": "torch",    # torch.jit.save (zip archive with code/ or constants.pkl)
    "torch_legacy": "torch",   # torch.save(..., _use_new_zipfile_serialization=False)
    "torch_tar": "torch",      # the tar format of PyTorch < 0.4 (refused by the reader)
    "safetensors": "torch",    # a safetensors file of a state dict
    "npz": "torch",            # np.savez of a PyTorch-trained model's weights
    "keras_zip": "keras",      # Keras 3 .keras zip
    "h5": "keras",             # Keras HDF5 (.h5 full model, save_weights, .weights.h5)
    "unknown": "torch",        # no known magic: the torch reader says what it expected
}


@dataclass(frozen=True)
class Source:
    """A source file and what it is (made by :func:`identify`).

    Attributes
    ----------
    path : str
    size : int
        Bytes in the file.
    head : bytes
        Its first 512 bytes.
    is_hdf5 : bool
        HDF5's signature is at the start or after a user block.
    """

    path: str
    size: int
    head: bytes
    is_hdf5: bool

    @property
    def is_zip(self) -> bool:
        """The file starts like a zip archive."""
        return self.head[:4] in _ZIP_MAGICS

    @property
    def is_torch_legacy(self) -> bool:
        """The file starts like a legacy (non-zip) ``torch.save`` stream."""
        return self.head.startswith(LEGACY_MAGIC)

    @property
    def is_tar(self) -> bool:
        """A tar archive (the format of PyTorch < 0.4)."""
        return len(self.head) >= 262 and self.head[257:262] == b"ustar"

    @property
    def is_safetensors(self) -> bool:
        """The file starts like a safetensors container or is named ``*.safetensors``."""
        return _looks_like_safetensors(self.head, self.size) or \
            self.path.endswith(".safetensors")

    @functools.cached_property
    def kind(self) -> str:
        """One of :data:`KINDS` (for a zip archive, read from its entry names)."""
        if self.is_zip:
            return _zip_kind(self.path)
        if self.is_torch_legacy:
            return "torch_legacy"
        if self.is_tar:
            return "torch_tar"
        if self.is_hdf5:
            return "h5"
        if self.is_safetensors:
            return "safetensors"
        if self.path.endswith(".keras"):
            return "keras_zip"
        if self.path.endswith(_KERAS_SUFFIXES):
            return "h5"
        return "unknown"

    @property
    def framework(self) -> str:
        """``"torch"`` or ``"keras"``: which converter reads it."""
        return KINDS[self.kind]


def identify(path: str | os.PathLike[str]) -> Source:
    """Open ``path`` and say what kind of source file it is (:attr:`Source.kind`, one of
    :data:`KINDS`).

    The magic bytes decide; a zip archive's entry names tell a ``.keras`` zip, an ``.npz``
    archive, a TorchScript archive and a ``torch.save`` archive apart (read only when
    :attr:`Source.kind` is asked for; a zip whose directory cannot be read is taken by its
    suffix: ``.keras`` or else a torch archive); a file with no known magic is taken by its
    suffix (``.safetensors``, ``.keras``/``.h5``/``.hdf5``).

    Raises
    ------
    OSError
        When the file cannot be opened.
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(512)
        hdf5 = head.startswith(_HDF5_MAGIC) or _hdf5_at_user_block(f, size)
    return Source(name, size, head, hdf5)


def _zip_kind(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception:  # noqa: BLE001 - a damaged zip: the reader says what is wrong
        return "keras_zip" if path.endswith(".keras") else "torch_zip"
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        return "keras_zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    return "torch_zip"


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _hdf5_at_user_block(f: object, size: int) -> bool:
    """HDF5's signature after a user block (at 512, 1024, 2048, ... bytes), as HDF5 looks."""
    offset = 512
    while offset + len(_HDF5_MAGIC) <= size:
        f.seek(offset)  # type: ignore[attr-defined]
        if f.read(len(_HDF5_MAGIC)) == _HDF5_MAGIC:  # type: ignore[attr-defined]
            return True
        offset *= 2
    return False
