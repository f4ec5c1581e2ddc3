"""Deterministic mutators of model and checkpoint files, blind and format-aware.

``mutant(seed_bytes, fmt, rng)`` applies one to three mutations drawn for ``fmt``:

- blind: bit flips, interesting bytes and integers, splices, truncation, deletion, insertion;
- zip: a field of a local header, central directory record or end record set to an
  interesting value; one entry's content mutated and the archive rebuilt (stored or deflated);
- pickle: an opcode's argument set to an interesting value, an opcode replaced, deleted or
  repeated (``data.pkl`` entries and legacy torch streams);
- JSON: a node replaced by another type, a huge number, a long string or deep nesting, a key
  dropped (safetensors headers, the lfm model description, Keras ``config.json``);
- HDF5: an 8-byte field that looks like a file address or size set to an interesting value.

Everything depends only on ``rng``, so ``(seed file, format, rng seed)`` reproduces a mutant.
"""

from __future__ import annotations

import io
import json
import pickletools
import random
import struct
import warnings
import zipfile
from collections.abc import Callable

Mutator = Callable[[bytes, random.Random], bytes]

FORMATS = ("lfm", "torch_zip", "torch_legacy", "torchscript", "safetensors", "keras", "h5")
#: File extension of each format's mutants.
SUFFIX = {"lfm": ".lfm", "torch_zip": ".pt", "torch_legacy": ".pt", "torchscript": ".pt",
          "safetensors": ".safetensors", "keras": ".keras", "h5": ".h5"}

_INTS = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
         0x80000000, 0xFFFFFFFF, 1 << 32, 1 << 40, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF,
         200_000_000)


def _interesting(rng: random.Random, width: int, around: int | None = None) -> int:
    choices = [v for v in _INTS if v < 1 << (8 * width)]
    if around is not None:
        choices += [around + d for d in (-1, 1, 8, -8, 64) if 0 <= around + d < 1 << (8 * width)]
        choices += [min(around * 2, (1 << (8 * width)) - 1)]
    choices.append(rng.randrange(1 << (8 * width)))
    return rng.choice(choices)


# --------------------------------------------------------------------------------------------
# Blind mutators


def bit_flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8))):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def byte_set(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 2, 4))):
        b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return bytes(b)


def int_overwrite(data: bytes, rng: random.Random) -> bytes:
    width = rng.choice((1, 2, 4, 8))
    if len(data) <= width:
        return data
    i = rng.randrange(len(data) - width)
    order = rng.choice(("little", "little", "big"))
    old = int.from_bytes(data[i:i + width], order)
    value = _interesting(rng, width, old)
    return data[:i] + value.to_bytes(width, order) + data[i + width:]


def splice(data: bytes, rng: random.Random) -> bytes:
    n = len(data)
    size = min(n, rng.choice((4, 16, 64, 512, 4096)))
    src, dst = rng.randrange(n - size + 1), rng.randrange(n - size + 1)
    chunk = data[src:src + size]
    if rng.random() < 0.5:
        return data[:dst] + chunk + data[dst + size:]   # overwrite
    return data[:dst] + chunk + data[dst:]              # insert


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def delete(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.choice((1, 2, 8, 64, 1024)):]


def insert(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    size = rng.choice((1, 4, 64, 1024))
    filler = rng.choice((b"\0" * size, b"\xff" * size, rng.randbytes(size)))
    return data[:i] + filler + data[i:]


BLIND: tuple[Mutator, ...] = (bit_flip, byte_set, int_overwrite, splice, truncate, delete,
                              insert)


def blind(data: bytes, rng: random.Random) -> bytes:
    return rng.choice(BLIND)(data, rng) if data else rng.randbytes(rng.randrange(1, 64))


# --------------------------------------------------------------------------------------------
# Zip


# signature -> (record size, [(offset, width)] of its fields)
_ZIP_RECORDS = {
    b"PK\x03\x04": [(4, 2), (6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2)],
    b"PK\x01\x02": [(4, 2), (6, 2), (8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2),
                    (30, 2), (32, 2), (34, 2), (42, 4)],
    b"PK\x05\x06": [(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
    b"PK\x06\x06": [(24, 8), (32, 8), (40, 8), (48, 8)],
    b"PK\x06\x07": [(8, 8), (16, 4)],
}


def zip_field(data: bytes, rng: random.Random) -> bytes:
    """Set one field of one zip record to an interesting value (methods and versions too)."""
    spots = []
    for sig, fields in _ZIP_RECORDS.items():
        start = data.find(sig)
        while start != -1:
            spots += [(start + off, width) for off, width in fields]
            start = data.find(sig, start + 1)
    spots = [(p, w) for p, w in spots if p + w <= len(data)]
    if not spots:
        return blind(data, rng)
    pos, width = rng.choice(spots)
    old = int.from_bytes(data[pos:pos + width], "little")
    if width == 2 and rng.random() < 0.3:   # methods and versions
        value = rng.choice((0, 8, 9, 12, 14, 93, 95, 98, 99, 20, 45, 63, 64, 0xFFFF))
    else:
        value = _interesting(rng, width, old)
    return data[:pos] + value.to_bytes(width, "little") + data[pos + width:]


def zip_entry(data: bytes, rng: random.Random, content: Callable[[str, bytes,
              random.Random], bytes]) -> bytes:
    """Rebuild the archive with one entry's bytes mutated by ``content(name, bytes, rng)``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            entries = [(i.filename, z.read(i)) for i in z.infolist()]
    except Exception:  # noqa: BLE001 - an already broken archive: mutate blindly
        return blind(data, rng)
    if not entries:
        return blind(data, rng)
    k = rng.randrange(len(entries))
    name, blob = entries[k]
    entries[k] = (name, content(name, blob, rng))
    if rng.random() < 0.1:
        entries.append((rng.choice(entries)[0], rng.randbytes(16)))   # a duplicate name
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.15 else zipfile.ZIP_STORED
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression=method) as z:
        warnings.simplefilter("ignore")  # duplicate names are wanted
        for name, blob in entries:
            z.writestr(zipfile.ZipInfo(name), blob, compress_type=method)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Pickle


# pickletools' codes for length-prefixed arguments -> width of the length
_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4,
           pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8}


def pickle_op(data: bytes, rng: random.Random, start: int = 0) -> bytes:
    """Mutate one opcode of the pickle at ``start`` (legacy files hold several in a row)."""
    ops = []
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for _ in range(rng.randrange(1, 6)):   # legacy: one of the first pickles in the stream
            chunk = []
            for op, arg, pos in pickletools.genops(stream):
                chunk.append((op, arg, pos))
            ops.extend(chunk)
            if stream.tell() >= len(data):
                break
    except Exception:  # noqa: BLE001 - the tail is raw storage bytes
        pass
    if len(ops) < 2:
        return blind(data, rng)
    k = rng.randrange(len(ops) - 1)
    op, arg, pos = ops[k]
    end = ops[k + 1][2] if ops[k + 1][2] > pos else pos + 1
    choice = rng.random()
    n = op.arg.n if op.arg is not None else 0
    width = n if n > 0 and isinstance(arg, int) else _PREFIX.get(n, 0)
    if width and choice < 0.6:   # an integer argument, or the length of a string argument
        old = int.from_bytes(data[pos + 1:pos + 1 + width], "little")
        value = _interesting(rng, width, old)
        return data[:pos + 1] + value.to_bytes(width, "little") + data[pos + 1 + width:]
    if choice < 0.8:   # replace the opcode byte
        codes = [o.code.encode("latin-1") for o in pickletools.opcodes]
        return data[:pos] + rng.choice(codes) + data[pos + 1:]
    if choice < 0.9:   # delete the opcode with its argument
        return data[:pos] + data[end:]
    return data[:end] + data[pos:end] * rng.choice((1, 2, 100)) + data[end:]


# --------------------------------------------------------------------------------------------
# JSON


def _deep(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "0" + "}" * depth


def _values(rng: random.Random) -> object:
    return rng.choice((None, True, False, 0, -1, 1.5, 2**31, 2**63, 2**70, -(2**63), 1e308,
                       "", "x", "F32", "lstm", "bidirectional", "x" * 10_000, [], {}, [0] * 50,
                       [[1, 2], [3]], {"kind": "lstm"}, [2**40, 2**40], [-1], ["F32"]))


def json_text(text: bytes, rng: random.Random) -> bytes:
    """Mutate one node of a JSON document (or blindly, when it does not parse)."""
    try:
        doc = json.loads(text)
    except Exception:  # noqa: BLE001
        return blind(text, rng) if text else text
    nodes: list[tuple[object, object]] = []   # (container, key) of every value
    stack: list[object] = [doc]
    while stack and len(nodes) < 5000:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                nodes.append((item, key))
                stack.append(value)
        elif isinstance(item, list):
            for i, value in enumerate(item):
                nodes.append((item, i))
                stack.append(value)
    marker = "\u0001deep\u0001"
    deep = None
    if not nodes:
        doc = _values(rng)
    else:
        parent, key = rng.choice(nodes)
        r = rng.random()
        if r < 0.15 and isinstance(parent, dict):
            del parent[key]                                   # type: ignore[arg-type]
        elif r < 0.3:
            deep = _deep(rng.choice((20, 100, 1000, 20_000)), rng)
            parent[key] = marker                              # type: ignore[index]
        elif r < 0.45 and isinstance(parent[key], str):      # type: ignore[index]
            # a nested JSON document in a string (the lfm model description)
            inner = parent[key].encode()                      # type: ignore[index]
            parent[key] = json_text(inner, rng).decode("utf-8", "replace")  # type: ignore[index]
        else:
            parent[key] = _values(rng)                        # type: ignore[index]
    out = json.dumps(doc)
    if deep is not None:
        out = out.replace(json.dumps(marker), deep)
    return out.encode()


def safetensors_header(data: bytes, rng: random.Random) -> bytes:
    """Mutate the header JSON of a safetensors file (its length fixed up, or not)."""
    if len(data) < 8:
        return blind(data, rng)
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        return blind(data, rng)
    header = json_text(data[8:8 + n], rng)
    length = len(header) if rng.random() < 0.9 else _interesting(rng, 8, len(header))
    return struct.pack("<Q", length) + header + data[8 + n:]


# --------------------------------------------------------------------------------------------
# HDF5


def h5_field(data: bytes, rng: random.Random) -> bytes:
    """Set an 8-, 4- or 2-byte field that looks like an address or size to another value."""
    width = rng.choice((8, 8, 4, 2))
    candidates = []
    for _ in range(400):
        i = rng.randrange(0, max(1, len(data) - width))
        v = int.from_bytes(data[i:i + width], "little")
        if 0 < v < len(data) * (1 if width == 8 else 4):
            candidates.append((i, v))
    if not candidates:
        return int_overwrite(data, rng)
    i, v = rng.choice(candidates)
    value = _interesting(rng, width, v)
    return data[:i] + value.to_bytes(width, "little") + data[i + width:]


# --------------------------------------------------------------------------------------------
# Per format


def _entry_content(name: str, blob: bytes, rng: random.Random) -> bytes:
    if name.endswith(".json"):
        return json_text(blob, rng)
    if name.endswith(".pkl"):
        return pickle_op(blob, rng) if rng.random() < 0.7 else blind(blob, rng)
    if name.endswith(".h5"):
        return h5_field(blob, rng) if rng.random() < 0.5 else blind(blob, rng)
    return blind(blob, rng)


def _one(data: bytes, fmt: str, rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return blind(data, rng)
    if fmt in ("lfm", "safetensors"):
        return safetensors_header(data, rng)
    if fmt in ("torch_zip", "torchscript", "keras"):
        if rng.random() < 0.4:
            return zip_field(data, rng)
        return zip_entry(data, rng, _entry_content)
    if fmt == "torch_legacy":
        return pickle_op(data, rng)
    if fmt == "h5":
        return h5_field(data, rng)
    raise ValueError(f"unknown format {fmt!r}")


def mutant(data: bytes, fmt: str, rng: random.Random) -> bytes:
    """One to three mutations of ``data`` (a valid file of format ``fmt``)."""
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = _one(data, fmt, rng) if data else rng.randbytes(rng.randrange(1, 64))
    return data
