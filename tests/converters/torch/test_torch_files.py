"""The torch-free checkpoint reader (lstm_fast.converters.torch_file).

Comparisons with ``torch.load`` / ``torch.jit.load`` need torch and are skipped without it; the
hostile-file tests build their files by hand and never need torch.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_fast.converters.torch_file import (
    LEGACY_MAGIC,
    load_torch_checkpoint,
    read_state_dict,
)
from lstm_fast.errors import ModelFileError, UnsupportedModelError
from lstm_fast.safetensors import write as write_safetensors
from tests import helpers

FIXTURES = helpers.FIXTURES / "torch"


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


def assert_same(ours: Any, theirs: Any, path: str = "") -> None:
    """``ours`` (numpy tree) equals ``theirs`` (torch tree) bit for bit, keys in order."""
    import torch

    if isinstance(theirs, torch.Tensor):
        t = theirs.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        expected = t.numpy()
        assert isinstance(ours, np.ndarray), f"{path}: {type(ours).__name__}, not an array"
        assert ours.dtype == expected.dtype, f"{path}: {ours.dtype} != {expected.dtype}"
        assert ours.shape == expected.shape, f"{path}: {ours.shape} != {expected.shape}"
        assert ours.tobytes() == np.ascontiguousarray(expected).tobytes(), path
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict), path
        assert list(ours) == list(theirs), f"{path}: keys {list(ours)} != {list(theirs)}"
        for k in theirs:
            assert_same(ours[k], theirs[k], f"{path}/{k}")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs and type(ours) is type(theirs), f"{path}: {ours!r} != {theirs!r}"


def _net(torch: Any) -> Any:
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 6)
            self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, ids: Any) -> Any:
            y, _ = self.rnn(self.emb(ids))
            return self.fc(y)

    torch.manual_seed(0)
    return Net().eval()


# --------------------------------------------------------------------------------------------
# Bit-identity with torch.load


def test_plain_state_dict(tmp_path: Path, torch: Any) -> None:
    sd = _net(torch).state_dict()
    p = tmp_path / "sd.pt"
    torch.save(sd, p)
    ours = load_torch_checkpoint(p)
    assert isinstance(ours, OrderedDict)
    assert_same(ours, torch.load(p))
    assert_same(read_state_dict(p), dict(torch.load(p)))


def test_training_checkpoint_with_dataparallel_prefix(tmp_path: Path, torch: Any) -> None:
    net = _net(torch)
    wrapped = torch.nn.DataParallel(net)
    opt = torch.optim.Adam(wrapped.parameters(), lr=1e-3)
    wrapped(torch.randint(0, 20, (2, 5))).sum().backward()
    opt.step()
    ckpt = {"epoch": 3, "model_state_dict": wrapped.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": 0.5, "name": "run-1",
            "flags": (True, None, b"\x00\xffraw"), "history": [1.0, 2.5]}
    p = tmp_path / "ckpt.pt"
    torch.save(ckpt, p)
    assert_same(load_torch_checkpoint(p), torch.load(p))
    sd = read_state_dict(p)
    assert list(sd) == list(net.state_dict())  # "module." removed
    assert_same(sd, dict(net.state_dict()))
    assert_same(read_state_dict(p, key="model_state_dict"), dict(net.state_dict()))


@pytest.mark.parametrize("key", ["state_dict", "model", "net"])
def test_checkpoint_sub_dict_names(tmp_path: Path, torch: Any, key: str) -> None:
    sd = _net(torch).state_dict()
    p = tmp_path / "c.pth"
    torch.save({key: sd, "epoch": 1, "optimizer": {"state": {}, "param_groups": []}}, p)
    assert_same(read_state_dict(p), dict(sd))


def test_dtypes_and_scalars(tmp_path: Path, torch: Any) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 5, generator=g)
    d = {
        "f32": base, "f16": base.half(), "bf16": base.bfloat16(), "f64": base.double(),
        "i64": torch.arange(-5, 7), "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16), "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(250, 256, dtype=torch.uint8), "bool": base > 0,
        "u16": torch.arange(3).to(torch.uint16), "c64": torch.randn(2, dtype=torch.cfloat),
        "scalar": torch.tensor(3.25), "scalar_bf16": torch.tensor(-1.5, dtype=torch.bfloat16),
        "scalar_i64": torch.tensor(7), "empty": torch.empty(0, 3),
        "empty_f16": torch.zeros(0).half(),
    }
    p = tmp_path / "dtypes.pt"
    torch.save(d, p)
    ours = load_torch_checkpoint(p)
    assert_same(ours, torch.load(p))
    assert ours["f16"].dtype == ours["bf16"].dtype == np.float32
    assert ours["scalar"].shape == () and isinstance(ours["scalar"], np.ndarray)


def test_other_values_in_checkpoints(tmp_path: Path, torch: Any) -> None:
    d = {"p": torch.nn.Parameter(torch.ones(2)), "dtype": torch.float32,
         "shape": torch.Size([3, 4]), "dev": torch.device("cpu"), "dev1": torch.device("cuda", 1),
         "set": {1, 2}, "frozen": frozenset([3]), "c": 1 + 2j, "ba": bytearray(b"xy"),
         "b": b"\x00\xff", "nested": [(1, "a"), {"k": None}]}
    for proto in (2, 4):
        p = tmp_path / f"misc{proto}.pt"
        torch.save(d, p, pickle_protocol=proto)
        got = load_torch_checkpoint(p)
        np.testing.assert_array_equal(got.pop("p"), np.ones(2, np.float32))
        assert got == {"dtype": "torch.float32", "shape": (3, 4), "dev": "cpu",
                       "dev1": "cuda:1", "set": {1, 2}, "frozen": frozenset([3]), "c": 1 + 2j,
                       "ba": bytearray(b"xy"), "b": b"\x00\xff",
                       "nested": [(1, "a"), {"k": None}]}


def test_deflated_archive(tmp_path: Path) -> None:
    src = FIXTURES / "classifier.pt"
    p = tmp_path / "deflated.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    ours, ref = load_torch_checkpoint(p), load_torch_checkpoint(src)
    assert list(ours) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])


def test_views_share_a_storage(tmp_path: Path, torch: Any) -> None:
    a = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    d = {"whole": a, "cols": a[:, 1::3], "t": a.t(), "tail": a[2:, 5:], "row": a[4],
         "elem": a[5, 7], "diag": a.diagonal(), "h": a.half()[1:, ::2]}
    p = tmp_path / "views.pt"
    torch.save(d, p)
    with zipfile.ZipFile(p) as z:  # the views really share one storage
        assert sum("/data/" in n and ".data" not in n for n in z.namelist()) == 2
    ours = load_torch_checkpoint(p)
    assert_same(ours, torch.load(p))
    assert all(v.flags.c_contiguous and not v.flags.writeable for v in ours.values())


def test_tied_weights(tmp_path: Path, torch: Any) -> None:
    emb = torch.nn.Embedding(10, 4)
    fc = torch.nn.Linear(4, 10)
    fc.weight = emb.weight
    sd = {"emb.weight": emb.weight, "fc.weight": fc.weight, "fc.bias": fc.bias}
    p = tmp_path / "tied.pt"
    torch.save(sd, p)
    assert_same(load_torch_checkpoint(p), torch.load(p))


def test_archive_prefix_is_not_hard_coded(tmp_path: Path, torch: Any) -> None:
    sd = _net(torch).state_dict()
    p = tmp_path / "my.model.v2.pth"
    torch.save(sd, p)
    with zipfile.ZipFile(p) as z:
        assert any(n.startswith("my.model.v2/") for n in z.namelist())
    assert_same(load_torch_checkpoint(p), torch.load(p))
    buf = io.BytesIO()  # saved to a file object: prefix "archive/"
    torch.save(sd, buf)
    q = tmp_path / "other.bin"
    q.write_bytes(buf.getvalue())
    assert_same(load_torch_checkpoint(q), torch.load(p))


class _Scriptable:
    """Built lazily (needs torch): Embedding + LSTM + Linear + BatchNorm-style buffers."""

    @staticmethod
    def make(torch: Any) -> Any:
        nn = torch.nn

        class TSNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = nn.Embedding(20, 6)
                self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True)
                self.fc = nn.Linear(8, 3)
                self.proj = nn.Linear(3, 3, bias=False)
                self.bn = nn.BatchNorm1d(3)
                self.heads = nn.ModuleList([nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3))])
                self.register_buffer("steps", torch.tensor(5))
                self.register_buffer("scratch", torch.ones(2), persistent=False)

            def forward(self, ids: torch.Tensor) -> torch.Tensor:
                y, _ = self.rnn(self.emb(ids))
                z = self.proj(self.fc(y))
                for head in self.heads:
                    z = head(z)
                return self.bn(z.transpose(1, 2)).transpose(1, 2) + self.scratch[0]

        torch.manual_seed(3)
        return TSNet().eval()


def test_torchscript_scripted(tmp_path: Path, torch: Any) -> None:
    try:
        m = torch.jit.script(_Scriptable.make(torch))
    except Exception as e:  # pragma: no cover - scripting needs inspectable source
        pytest.skip(f"torch.jit.script failed here: {e}")
    p = tmp_path / "scripted.pt"
    torch.jit.save(m, p)
    ours = load_torch_checkpoint(p)
    theirs = torch.jit.load(p).state_dict()
    assert "rnn.weight_ih_l1" in ours and "bn.num_batches_tracked" in ours
    assert "heads.1.0.bias" in ours and "scratch" in ours  # non-persistent buffers too
    assert_same(ours, theirs)
    assert_same(read_state_dict(p), dict(theirs))


def test_torchscript_traced(tmp_path: Path, torch: Any) -> None:
    net = _net(torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = torch.jit.trace(net, torch.zeros(1, 4, dtype=torch.long))
    p = tmp_path / "traced.pt"
    torch.jit.save(m, p)
    ours = load_torch_checkpoint(p)
    assert_same(ours, torch.jit.load(p).state_dict())
    assert list(ours) == list(net.state_dict())


def test_safetensors(tmp_path: Path, torch: Any) -> None:
    sd = _net(torch).state_dict()
    arrays = {k: v.numpy() for k, v in sd.items()}
    arrays["half"] = np.linspace(-2, 2, 7).astype(np.float16)
    p = tmp_path / "weights.safetensors"
    try:
        from safetensors.numpy import save_file
    except ImportError:
        write_safetensors(p, arrays, {"format": "pt"})
    else:
        save_file(arrays, str(p), metadata={"format": "pt"})
    ours = load_torch_checkpoint(p)
    assert list(ours) == list(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(ours[k], v.astype(np.float32) if v.dtype == np.float16
                                      else v)
    assert ours["half"].dtype == np.float32
    q = tmp_path / "no_extension"  # found by content, not by name
    q.write_bytes(p.read_bytes())
    assert list(read_state_dict(q)) == list(arrays)


def test_legacy_format_is_supported(tmp_path: Path, torch: Any) -> None:
    a = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"sd": _net(torch).state_dict(), "view": a[1:, ::2], "whole": a,
           "half": a.half(), "bf": a.bfloat16()[2], "n": 3}
    p = tmp_path / "legacy.pt"
    torch.save(obj, p, _use_new_zipfile_serialization=False)
    assert p.read_bytes().startswith(LEGACY_MAGIC)
    assert_same(load_torch_checkpoint(p), torch.load(p))
    assert_same(read_state_dict(p), dict(obj["sd"]))


def test_whole_module_is_refused_with_state_dict_hint(tmp_path: Path, torch: Any) -> None:
    net = _net(torch)
    cls = type(net)  # make the class picklable, as a user's model class would be
    cls.__qualname__ = cls.__name__ = "WholeNet"
    globals()["WholeNet"] = cls
    for legacy in (False, True):
        p = tmp_path / f"whole{legacy}.pt"
        torch.save(net, p, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(UnsupportedModelError, match=r"whole pickled module") as e:
            load_torch_checkpoint(p)
        assert "torch.save(model.state_dict(), path)" in str(e.value)
        assert "safetensors" in str(e.value)


# --------------------------------------------------------------------------------------------
# torch is never needed


_NO_TORCH = r"""
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import numpy as np
from lstm_fast.converters.torch_file import read_state_dict
from lstm_fast.converters.torch import spec_from_torch_file
try:
    import torch  # noqa: F401
    raise SystemExit("torch imported")
except ImportError:
    pass
for p in sys.argv[1:]:
    sd = read_state_dict(p)
    print(p, sum(float(np.abs(v.astype(np.float64)).sum()) for v in sd.values()), len(sd))
print("spec", spec_from_torch_file(sys.argv[1], head="last").num_parameters())
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
"""


def test_reader_runs_without_torch(tmp_path: Path) -> None:
    files = [FIXTURES / "classifier.pt", FIXTURES / "checkpoint_dp.pt",
             FIXTURES / "scripted_lm.pt", FIXTURES / "lstm_head.safetensors"]
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, *map(str, files)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for p, line in zip(files, lines, strict=False):
        expected = read_state_dict(p)
        total = sum(float(np.abs(v.astype(np.float64)).sum()) for v in expected.values())
        name, value, count = line.rsplit(" ", 2)
        assert name == str(p) and int(count) == len(expected)
        assert float(value) == pytest.approx(total, rel=1e-12)
    assert lines[-1].startswith("spec ")


# --------------------------------------------------------------------------------------------
# Hand-made archives (no torch): hostile and broken files


def _p(obj: Any) -> bytes:
    """The opcodes that push ``obj`` (a str or int), without PROTO/STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _tuple(items: Any) -> bytes:
    return b"(" + b"".join(_p(i) for i in items) + b"t"


def tensor_pickle(numel: int, size: tuple, stride: tuple, offset: int = 0, key: str = "0",
                  storage: str = "FloatStorage") -> bytes:
    """data.pkl of ``{"w": tensor}`` exactly as torch writes it (protocol 2)."""
    return (b"\x80\x02}(" + _p("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
            + b"(" + _p("storage") + f"ctorch\n{storage}\n".encode() + _p(key) + _p("cpu")
            + _p(numel) + b"tQ" + _p(offset) + _tuple(size) + _tuple(stride)
            + b"\x89ccollections\nOrderedDict\n)RtRu.")


def make_archive(path: Path, pkl: bytes, entries: dict[str, bytes] | None = None,
                 prefix: str = "archive", extra: dict[str, bytes] | None = None,
                 byteorder: bytes = b"little") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for k, v in (entries or {}).items():
            z.writestr(f"{prefix}/data/{k}", v)
        for k, v in (extra or {}).items():
            z.writestr(f"{prefix}/{k}", v)
        z.writestr(f"{prefix}/version", b"3\n")
    return path


def test_hand_made_archive_sanity(tmp_path: Path) -> None:
    data = np.arange(12, dtype="<f4")
    p = make_archive(tmp_path / "ok.pt", tensor_pickle(12, (3, 2), (4, 2), offset=1),
                     {"0": data.tobytes()})
    got = load_torch_checkpoint(p)["w"]
    np.testing.assert_array_equal(got, [[1, 3], [5, 7], [9, 11]])


_LEGACY_HEADER = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
                  + pickle.dumps(1001, protocol=2) + pickle.dumps({"little_endian": True}, 2))


class _Evil:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> Any:
        return self.func, self.args


def _evil_pickles(marker: Path) -> list[tuple[str, bytes]]:
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    out = []
    for proto in (2, 4):
        out.append(("system", pickle.dumps({"w": _Evil(os.system, cmd)}, protocol=proto)))
        out.append(("exec", pickle.dumps(OrderedDict(w=_Evil(exec, code)), protocol=proto)))
        out.append(("eval", pickle.dumps([_Evil(eval, code)], protocol=proto)))
        out.append(("Popen", pickle.dumps(_Evil(subprocess.Popen, ["touch", str(marker)]),
                                          protocol=proto)))
    # a "whole module" disguise does not hide a dangerous global
    out.append(("system", b"\x80\x02c__main__\nNet\n)\x81" + pickle.dumps(
        _Evil(os.system, cmd), protocol=2)[2:-1] + b"b."))
    return out


def test_code_in_pickles_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pickle.loads(_evil_pickles(marker)[1][1])  # sanity: plain pickle does run these
    assert marker.exists()
    marker.unlink()
    for n, (name, pkl) in enumerate(_evil_pickles(marker)):
        for kind in ("zip", "torchscript", "legacy"):
            if kind == "zip":
                p = make_archive(tmp_path / f"e{n}.pt", pkl)
            elif kind == "torchscript":
                p = make_archive(tmp_path / f"t{n}.pt", pkl, extra={
                    "constants.pkl": b"\x80\x02).", "code/__torch__.py": b"class X(Module):\n"})
            else:
                p = tmp_path / f"l{n}.pt"
                p.write_bytes(_LEGACY_HEADER + pkl)
            with pytest.raises(ModelFileError, match=name) as e:
                load_torch_checkpoint(p)
            assert "never" in str(e.value) or "refus" in str(e.value)
            assert not marker.exists(), f"{kind} pickle {n} ran code"


def test_legacy_magic_sanity() -> None:
    # The hand-made legacy header is what torch writes (FORMATS.md §1.6).
    assert pickle.loads(LEGACY_MAGIC + b".") == 0x1950A86A20F9469CFC6C
    assert _LEGACY_HEADER.startswith(LEGACY_MAGIC)


def test_whole_module_without_torch(tmp_path: Path) -> None:
    pkl = (b"\x80\x02c__main__\nNet\n)\x81}(" + _p("rnn")
           + b"ctorch.nn.modules.rnn\nLSTM\n)\x81}bub.")
    with pytest.raises(UnsupportedModelError, match="state_dict"):
        load_torch_checkpoint(make_archive(tmp_path / "m.pt", pkl))


def test_storage_entry_too_short(tmp_path: Path) -> None:
    p = make_archive(tmp_path / "short.pt", tensor_pickle(12, (12,), (1,)),
                     {"0": np.zeros(11, "<f4").tobytes()})
    with pytest.raises(ModelFileError, match="holds only 44 bytes"):
        load_torch_checkpoint(p)


def test_missing_storage_entry(tmp_path: Path) -> None:
    p = make_archive(tmp_path / "missing.pt", tensor_pickle(4, (4,), (1,), key="7"),
                     {"0": np.zeros(4, "<f4").tobytes()})
    with pytest.raises(ModelFileError, match="data/7"):
        load_torch_checkpoint(p)


def test_giant_claims_fail_fast_without_allocating(tmp_path: Path) -> None:
    small = np.zeros(4, "<f4").tobytes()
    cases = [
        tensor_pickle(2**40, (2**40,), (1,)),                  # storage claims 4 TiB
        tensor_pickle(4, (2**20, 2**20), (0, 0)),              # broadcast view of 1 TiB
        tensor_pickle(4, (2**62, 2**62, 4), (1, 1, 1)),        # element count overflows int64
        tensor_pickle(4, (4,), (1,), offset=2**60),            # offset far outside
        tensor_pickle(4, (2, 2), (2**61, 1)),                  # stride far outside
        tensor_pickle(4, (5,), (1,)),                          # one element too many
        tensor_pickle(4, (2,), (-1,)),                         # negative stride
        tensor_pickle(4, (-2,), (1,)),                         # negative size
    ]
    cases.append(b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.")  # BINBYTES8 of 1 TiB
    cases.append(b"\x80\x05\x96" + struct.pack("<Q", 2**35) + b"abc.")  # BYTEARRAY8 of 32 GiB
    for n, pkl in enumerate(cases):
        p = make_archive(tmp_path / f"g{n}.pt", pkl, {"0": small})
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            with pytest.raises(ModelFileError):
                load_torch_checkpoint(p)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert time.perf_counter() - t0 < 2.0, n
        assert peak < 16 << 20, (n, peak)


def test_malformed_tensor_arguments(tmp_path: Path) -> None:
    small = np.zeros(4, "<f4").tobytes()
    bad = [
        tensor_pickle(4, (2,), (1, 1)),                        # size/stride rank mismatch
        tensor_pickle(4, (2,), (1,)).replace(b"FloatStorage", b"NoSuchStorage"),
        b"\x80\x02}(" + _p("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" + _p("x")
        + b"K\x00)K\x00\x89)tRu.",                             # storage is a str
        b"\x80\x02ctorch._utils\n_rebuild_parameter\n(" + _p(1) + b"\x89)tR.",
    ]
    for n, pkl in enumerate(bad):
        p = make_archive(tmp_path / f"m{n}.pt", pkl, {"0": small})
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(p)


@pytest.mark.parametrize("fixture", ["classifier.pt", "scripted_lm.pt", "lstm_head.safetensors"])
def test_truncated_files(tmp_path: Path, fixture: str) -> None:
    data = (FIXTURES / fixture).read_bytes()
    for cut in sorted({1, 7, 9, 30, 100, 700, len(data) // 3, len(data) // 2,
                       len(data) - 200, len(data) - 22, len(data) - 1}):
        p = tmp_path / f"cut{cut}{Path(fixture).suffix}"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(p)


def test_truncated_legacy_file(tmp_path: Path, torch: Any) -> None:
    p = tmp_path / "legacy.pt"
    torch.save(_net(torch).state_dict(), p, _use_new_zipfile_serialization=False)
    data = p.read_bytes()
    for cut in (20, 40, len(data) // 2, len(data) - 1):
        q = tmp_path / f"cut{cut}.pt"
        q.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(q)


def test_wrong_magic_and_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = [b"", b"x", b"GARBAGE!" * 100, rng.bytes(4096), b"\x89HDF\r\n\x1a\n" + rng.bytes(99),
             b"PK\x03\x04" + rng.bytes(500), b"\x80\x02" + rng.bytes(300)]
    for n, blob in enumerate(blobs):
        p = tmp_path / f"r{n}.pt"
        p.write_bytes(blob)
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(p)
    with pytest.raises(ModelFileError, match="magic"):
        load_torch_checkpoint(tmp_path / "r2.pt")


def _rewrite(src: Path, dst: Path, change: Any) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def test_corrupted_data_pkl(tmp_path: Path) -> None:
    src = FIXTURES / "classifier.pt"
    rng = np.random.default_rng(1)
    changes = {
        "random": lambda b: rng.bytes(len(b)),
        "truncated": lambda b: b[: len(b) // 2],
        "no_stop": lambda b: b[:-1],
        "empty": lambda b: b"",
        "flipped": lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:],
        "bad_memo": lambda b: b"\x80\x02h\x09.",
    }
    for name, change in changes.items():
        p = _rewrite(src, tmp_path / f"{name}.pt",
                     lambda n, b, c=change: c(b) if n.endswith("data.pkl") else b)
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(p)
    p = _rewrite(src, tmp_path / "nopkl.pt", lambda n, b: None if n.endswith("data.pkl") else b)
    with pytest.raises(ModelFileError, match="data.pkl"):
        load_torch_checkpoint(p)
    p = _rewrite(src, tmp_path / "short.pt",
                 lambda n, b: b[:-4] if n.endswith("/data/0") else b)
    with pytest.raises(ModelFileError, match="holds only"):
        load_torch_checkpoint(p)


@pytest.mark.parametrize("fixture", ["classifier.pt", "scripted_lm.pt", "checkpoint_dp.pt"])
def test_random_byte_flips(tmp_path: Path, fixture: str) -> None:
    """Corrupted files load (the flip hit unused bytes) or raise ModelFileError: nothing else."""
    rng = np.random.default_rng(2)
    data = (FIXTURES / fixture).read_bytes()
    p = tmp_path / fixture
    for _ in range(150):
        b = bytearray(data)
        for i in rng.integers(0, len(b), size=rng.integers(1, 4)):
            b[i] = int(rng.integers(0, 256))
        p.write_bytes(bytes(b))
        try:
            load_torch_checkpoint(p)
        except ModelFileError:
            pass


def test_deeply_nested_pickle(tmp_path: Path) -> None:
    pkl = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
    with pytest.raises(ModelFileError):
        load_torch_checkpoint(make_archive(tmp_path / "deep.pt", pkl))


# --------------------------------------------------------------------------------------------
# read_state_dict


def _arrays_archive(tmp_path: Path, name: str, pkl: bytes, n: int = 4) -> Path:
    return make_archive(tmp_path / name, pkl, {"0": np.arange(n, dtype="<f4").tobytes()})


def _tensor_ops(numel: int = 4) -> bytes:
    return (b"ctorch._utils\n_rebuild_tensor_v2\n((" + _p("storage") + b"ctorch\nFloatStorage\n"
            + _p("0") + _p("cpu") + _p(numel) + b"tQK\x00" + _tuple((numel,)) + _tuple((1,))
            + b"\x89ccollections\nOrderedDict\n)RtR")


def test_read_state_dict_choices(tmp_path: Path) -> None:
    t = _tensor_ops()
    two = _arrays_archive(tmp_path, "two.pt", b"\x80\x02}(" + _p("a") + b"}(" + _p("x.weight")
                          + t + b"u" + _p("b") + b"}(" + _p("y.weight") + t + b"u" + _p("epoch")
                          + _p(2) + b"u.")
    with pytest.raises(ModelFileError, match=r"'a'.*'b'.*key="):
        read_state_dict(two)
    assert list(read_state_dict(two, key="b")) == ["y.weight"]
    with pytest.raises(ModelFileError, match="no entry 'c'"):
        read_state_dict(two, key="c")
    with pytest.raises(ModelFileError, match="not a dict of tensors"):
        read_state_dict(two, key="epoch")
    nested = _arrays_archive(tmp_path, "n.pt", b"\x80\x02}(" + _p("state") + b"}(" + _p("model")
                             + b"}(" + _p("module.w") + t + b"uuu.")
    assert list(read_state_dict(nested)) == ["w"]
    assert list(read_state_dict(nested, key="state/model")) == ["w"]
    none = _arrays_archive(tmp_path, "none.pt", b"\x80\x02}(" + _p("epoch") + _p(1) + b"u.")
    with pytest.raises(ModelFileError, match="no dict of tensors"):
        read_state_dict(none)
    listed = _arrays_archive(tmp_path, "list.pt", b"\x80\x02]" + t + b"a.")
    with pytest.raises(ModelFileError, match="list"):
        read_state_dict(listed)
    compiled = _arrays_archive(tmp_path, "c.pt", b"\x80\x02}(" + _p("module._orig_mod.fc.w")
                               + t + b"u.")
    assert list(read_state_dict(compiled)) == ["fc.w"]
    partial = _arrays_archive(tmp_path, "p.pt", b"\x80\x02}(" + _p("module.a") + t + _p("b")
                              + t + b"u.")
    assert list(read_state_dict(partial)) == ["module.a", "b"]  # only stripped when all have it


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_torch_checkpoint(tmp_path / "nope.pt")


def test_big_endian_storage_flag(tmp_path: Path) -> None:
    data = np.arange(6, dtype=">f4")
    p = make_archive(tmp_path / "be.pt", tensor_pickle(6, (2, 3), (3, 1)), {"0": data.tobytes()},
                     byteorder=b"big")
    got = load_torch_checkpoint(p)["w"]
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))
