"""Zip archives from untrusted files (torch ``.pt`` and Keras ``.keras``), read with bounds.

:class:`SafeZip` wraps :class:`zipfile.ZipFile`: every failure (a bad central directory, an
unknown zip version or compression method, a seek past the end, a bad CRC, undecodable names)
becomes a :class:`~lstm_fast.errors.ModelFileError`, and what may be decompressed is capped:

- only stored and deflated entries, no encryption;
- an entry's declared sizes must fit in the archive, a stored entry's two sizes must agree;
- a deflated entry may expand at most :data:`MAX_RATIO` times (plus :data:`SMALL_ENTRY`): torch
  and Keras store their entries uncompressed, and weights re-zipped by hand compress about
  1.1x, so only a zip bomb expands further;
- all entries read from one archive together stay under ``MAX_RATIO`` times its size (plus
  16 MiB), so many small bombs do not add up either.
"""

from __future__ import annotations

import os
import zipfile
from types import TracebackType

from .._untrusted import file_errors
from ..errors import ModelFileError

#: Most entries an archive may list (a checkpoint has a few per tensor).
MAX_ENTRIES = 1 << 17
#: Largest expansion of a deflated entry (see the module docstring).
MAX_RATIO = 64
#: Entries up to this size may expand by any ratio (HDF5 padding compresses very well).
SMALL_ENTRY = 1 << 20
_SLACK = 16 << 20
_LOCAL_HEADER = 30


class SafeZip:
    """A zip archive opened for bounded reading; use as a context manager.

    Parameters
    ----------
    path : str
        The archive.
    where : str
        How messages name the file.

    Raises
    ------
    ModelFileError
        When the archive cannot be parsed, lists more than :data:`MAX_ENTRIES` entries or
        lists a name twice.
    """

    def __init__(self, path: str, where: str) -> None:
        self.where = where
        with file_errors(where, "zip archive"):
            self._zf = zipfile.ZipFile(path)
        try:
            with file_errors(where, "zip archive"):
                self.size = os.fstat(self._zf.fp.fileno()).st_size  # type: ignore[union-attr]
                infos = self._zf.infolist()
            if len(infos) > MAX_ENTRIES:
                raise ModelFileError(f"{where}: the zip archive lists {len(infos)} entries")
            self.infos: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                if info.filename in self.infos:
                    raise ModelFileError(f"{where}: the zip archive lists "
                                         f"{info.filename[:80]!r} twice")
                self.infos[info.filename] = info
        except BaseException:
            self._zf.close()
            raise
        self.budget = MAX_RATIO * self.size + _SLACK

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the archive."""
        self._zf.close()

    @property
    def names(self) -> list[str]:
        """The entry names, in archive order."""
        return list(self.infos)

    def read(self, name: str, limit: int) -> bytes:
        """The bytes of entry ``name`` (at most ``limit`` of them, else ModelFileError)."""
        info = self.infos.get(name)
        where = self.where
        name = repr(name[:80])
        if info is None:
            raise ModelFileError(f"{where}: the zip archive has no entry {name}")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{where}: entry {name} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise ModelFileError(f"{where}: entry {name} has inconsistent sizes")
        elif info.compress_type != zipfile.ZIP_DEFLATED:
            raise ModelFileError(f"{where}: entry {name} uses an unsupported compression "
                                 f"method ({info.compress_type})")
        if (info.header_offset < 0 or info.compress_size < 0
                or info.header_offset + _LOCAL_HEADER + info.compress_size > self.size):
            raise ModelFileError(f"{where}: entry {name} extends past the end of the file; "
                                 f"the file is truncated or corrupted")
        if (info.file_size > limit
                or info.file_size > MAX_RATIO * info.compress_size + SMALL_ENTRY
                or info.file_size > self.budget):
            raise ModelFileError(f"{where}: entry {name} claims {info.file_size} bytes "
                                 f"({info.compress_size} compressed), more than this file can "
                                 f"hold; the file is corrupt (or a zip bomb)")
        self.budget -= info.file_size
        with file_errors(where, f"zip entry {name}"), self._zf.open(info) as f:
            data = f.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise ModelFileError(f"{where}: entry {name} is truncated")
        return data
