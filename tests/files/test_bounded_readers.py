"""Issue 11: the readers' bounds (JSON nesting, zip entries, pickle memo indices, the Keras
child process) and the CLI's single error line."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import cli, safetensors
from lstm_fast._untrusted import json_depth, loads_json
from lstm_fast.converters import _bounded
from lstm_fast.converters._zip import MAX_RATIO, SafeZip
from lstm_fast.converters.keras import _spec_from_keras_file_here, spec_from_keras_file
from lstm_fast.converters.torch_file import load_torch_checkpoint
from lstm_fast.model import _checked_sizes
from lstm_fast.spec import ModelSpec
from tests.fuzz.seeds import FIXTURES
from tests.reference import random_layers

HOSTILE = FIXTURES / "hostile"
KERAS = sorted((FIXTURES / "keras").glob("*.keras")) + sorted((FIXTURES / "keras").glob("*.h5"))


def _peak_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


@pytest.fixture
def peak() -> Any:
    """Reset this process's peak RSS; yields a function giving the growth since (kB)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc")
    with open("/proc/self/status") as f:
        base = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return lambda: _peak_kb() - base


# --- JSON ---------------------------------------------------------------------------------

def test_json_depth() -> None:
    assert json_depth(3, 10) == 0
    assert json_depth({"a": [1, {"b": []}]}, 10) == 4
    assert json_depth([[[[[]]]]], 2) == 3  # counting stops past the limit


@pytest.mark.parametrize("text, message", [
    ("[" * 65 + "]" * 65, "nested more than 64 levels"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"a": 1', "not valid JSON"),
    (b'{"a": "\xff"}', "not valid JSON"),
])
def test_loads_json_refuses(text: str | bytes, message: str) -> None:
    with pytest.raises(lf.ModelFileError, match=f"f.json: corrupted config: {message}"):
        loads_json(text, "config", "f.json")
    with pytest.raises(lf.ModelFileError, match="larger than 10 bytes"):
        loads_json("[" * 11, "config", "f.json", max_bytes=10)
    assert json_depth(loads_json("[" * 64 + "]" * 64, "config", "f.json"), 100) == 64


# --- lstm_fast model files ----------------------------------------------------------------

@pytest.fixture
def saved(rng: np.random.Generator, tmp_path: Path) -> Path:
    path = tmp_path / "m.lfm"
    lf.Model.from_lstm_weights(random_layers(rng, 3, 4, 2)).save(path)
    return path


def _edit(path: Path, edit: Any) -> Path:
    tensors, meta = safetensors.read(path)
    model = json.loads(meta["model"])
    edit(model, meta, tensors)
    meta["model"] = json.dumps(model)
    safetensors.write(path, {k: np.array(v) for k, v in tensors.items()}, meta)
    return path


@pytest.mark.parametrize("edit, error, message", [
    (lambda m, meta, t: m.update(spec_version=2), lf.FormatVersionError, "spec version 2 is"),
    (lambda m, meta, t: m.update(spec_version="1"), lf.ModelFileError, "invalid spec version"),
    (lambda m, meta, t: meta.update(format_version="9" * 5000), lf.ModelFileError,
     "invalid format_version"),
    (lambda m, meta, t: meta.update(format_version="\u0663"), lf.ModelFileError,
     "invalid format_version"),
    (lambda m, meta, t: m["layers"].__setitem__(0, {
        "kind": "bidirectional", "merge_mode": "concat",
        "forward": {"kind": "bidirectional", "merge_mode": "concat"}, "backward": {}}),
     lf.ModelFileError, "nesting"),
    (lambda m, meta, t: m["layers"][0].update(kind=["lstm"]), lf.ModelFileError,
     "unknown kind"),
    (lambda m, meta, t: m["layers"][0]["tensors"].update(w_ih=["layers.0.w_ih"]),
     lf.ModelFileError, "is missing"),
    (lambda m, meta, t: m.update(metadata={"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}),
     lf.ModelFileError, "nested more than 16"),
])
def test_model_description_checks(saved: Path, edit: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        lf.load(_edit(saved, edit))


def test_safetensors_dtype_must_be_a_string(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}).encode()
    p = tmp_path / "h.lfm"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(lf.ModelFileError, match=r"unsupported dtype \['F32'\]"):
        lf.load(p)


def test_sizes_beyond_the_engine_are_weights_errors() -> None:
    """A spec accepts any positive size; one the C engine cannot hold is a WeightsError, not
    an OverflowError from the C layer."""
    with pytest.raises(lf.WeightsError, match="outside the engine's limit 1 to 16777216"):
        _checked_sizes([{"kind": "masking", "input_size": 2**40, "units": 2**40}])


# --- zip ----------------------------------------------------------------------------------

def _zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def test_deflate_bomb_is_refused_before_decompressing(tmp_path: Path, peak: Any) -> None:
    p = _zip(tmp_path / "bomb.zip", {"big": bytes(200 << 20), "small": bytes(1 << 20)},
             zipfile.ZIP_DEFLATED)
    assert p.stat().st_size < (200 << 20) // MAX_RATIO
    with SafeZip(str(p), "bomb.zip") as z:
        assert z.read("small", 1 << 30) == bytes(1 << 20)  # small entries may expand freely
        with pytest.raises(lf.ModelFileError, match="zip bomb"):
            z.read("big", 1 << 30)
    assert peak() < 100_000


def test_many_small_bombs_share_one_budget(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lstm_fast.converters._zip._SLACK", 4 << 20)
    p = _zip(tmp_path / "bombs.zip", {f"e{k}": bytes(1 << 20) for k in range(40)},
             zipfile.ZIP_DEFLATED)
    with SafeZip(str(p), "bombs.zip") as z:
        with pytest.raises(lf.ModelFileError, match="zip bomb"):
            for name in z.names:
                z.read(name, 1 << 30)


def _patch(data: bytes, sig: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(data)
    pos = out.find(sig)
    while pos != -1:
        out[pos + offset:pos + offset + len(value)] = value
        pos = out.find(sig, pos + 1)
    return bytes(out)


@pytest.mark.parametrize("edit, message", [
    (lambda d: _patch(_patch(d, b"PK\x03\x04", 8, b"\x0c\x00"), b"PK\x01\x02", 10,
                      b"\x0c\x00"), "unsupported compression method"),
    (lambda d: _patch(_patch(d, b"PK\x03\x04", 6, b"\x01\x00"), b"PK\x01\x02", 8, b"\x01\x00"),
     "encrypted"),
    (lambda d: _patch(d, b"PK\x01\x02", 6, b"\x40\x00"), "zip file version"),
    (lambda d: _patch(d, b"PK\x01\x02", 42, b"\xff\xff\xff\x7f"), "past the end"),
])
def test_zip_fields(tmp_path: Path, edit: Any, message: str) -> None:
    data = _zip(tmp_path / "a.zip", {"a": b"hello"}).read_bytes()
    p = tmp_path / "b.zip"
    p.write_bytes(edit(data))
    with pytest.raises(lf.ModelFileError, match=message), SafeZip(str(p), "b.zip") as z:
        z.read("a", 100)


def test_duplicate_names(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a", b"1")
        with pytest.warns(UserWarning):
            z.writestr("a", b"2")
    p = tmp_path / "d.zip"
    p.write_bytes(buf.getvalue())
    with pytest.raises(lf.ModelFileError, match="'a' twice"):
        SafeZip(str(p), "d.zip")


# --- pickles ------------------------------------------------------------------------------

def test_memo_index_bomb(tmp_path: Path, peak: Any) -> None:
    """LONG_BINPUT 2**31 in a 40-byte pickle: refused before the C unpickler grows its memo
    to 16 GB."""
    pkl = b"\x80\x02}q\x00r\xff\xff\xff\x7f."
    p = _zip(tmp_path / "memo.pt", {"memo/data.pkl": pkl})
    with pytest.raises(lf.ModelFileError, match="memo index 2147483647 in a pickle of 5 opcodes"):
        load_torch_checkpoint(p)
    assert peak() < 100_000


# --- the Keras child ----------------------------------------------------------------------

def _same(a: ModelSpec, b: ModelSpec) -> None:
    assert (a.mask_semantics, a.stateful, a.metadata) == (b.mask_semantics, b.stateful,
                                                          b.metadata)
    assert [L.kind for L in a.layers] == [L.kind for L in b.layers]
    for x, y in zip(a.layers, b.layers, strict=True):
        for (k, u), (m, v) in zip(x.arrays().items(), y.arrays().items(), strict=True):
            assert k == m and u.dtype == v.dtype == np.float32
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("path", KERAS, ids=lambda p: p.name)
def test_child_gives_the_in_process_spec(path: Path) -> None:
    _same(spec_from_keras_file(path), _spec_from_keras_file_here(str(path), None, None))


def test_spawned_child_when_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """With another Python thread running, the child is a fresh interpreter (no fork)."""
    forks = []
    monkeypatch.setattr(_bounded, "_forked", lambda *a: forks.append(1))
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        spec = spec_from_keras_file(KERAS[0])
        monkeypatch.setenv("LSTM_FAST_KERAS_TIMEOUT", "2")
        t0 = time.monotonic()
        with pytest.raises(lf.ModelFileError, match="did not finish within 2 s"):
            spec_from_keras_file(HOSTILE / "01959_splice_k_lstm_h5.h5")
        assert time.monotonic() - t0 < 15
    finally:
        stop.set()
        t.join()
    assert not forks
    _same(spec, _spec_from_keras_file_here(str(KERAS[0]), None, None))


def test_child_crash_is_a_model_file_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bounded, "_child", lambda request: os.kill(os.getpid(),
                                                                    signal.SIGSEGV))
    with pytest.raises(lf.ModelFileError, match="reader crashed .signal SIGSEGV"):
        spec_from_keras_file(KERAS[0])


def test_child_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's address space is capped: a read that needs 400 MB more than the 16 MiB
    allowed fails with MemoryError in the child, reported as a ModelFileError."""
    def greedy(*args: Any) -> Any:
        return np.ones(100 << 20, np.float32)

    monkeypatch.setattr("lstm_fast.converters.keras._spec_from_keras_file_here", greedy)
    monkeypatch.setenv("LSTM_FAST_KERAS_MEMORY", "16")
    with pytest.raises(lf.ModelFileError, match="needs more than 16 MiB .* LSTM_FAST_KERAS_MEM"):
        spec_from_keras_file(KERAS[0])


def test_hang_is_cut_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_FAST_KERAS_TIMEOUT", "1.5")
    before = set(Path(tempfile.gettempdir()).glob("lstm_fast_keras_*"))
    t0 = time.monotonic()
    with pytest.raises(lf.ModelFileError, match="LSTM_FAST_KERAS_TIMEOUT"):
        spec_from_keras_file(HOSTILE / "02275_zip_entry_k_bigru_keras.keras")
    assert 1.5 <= time.monotonic() - t0 < 10
    assert set(Path(tempfile.gettempdir()).glob("lstm_fast_keras_*")) == before


def test_budgets() -> None:
    assert _bounded.time_budget(1 << 20) < 11 and _bounded.time_budget(2 << 30) > 100
    assert _bounded.memory_budget(1 << 20) < 600 << 20
    assert _bounded.memory_budget(1 << 30) > 8 << 30


# --- the CLI ------------------------------------------------------------------------------

def _boom(exc: BaseException) -> Any:
    def convert(*args: Any, **kwargs: Any) -> Any:
        raise exc
    return convert


def test_cli_error_is_one_line(monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr("lstm_fast.converters.torch.spec_from_torch_file",
                        _boom(lf.ModelFileError("first\nsecond")))
    pt = FIXTURES / "torch" / "classifier.pt"
    assert cli.main(["convert", str(pt), "-o", str(tmp_path / "o.lfm"), "--no-verify"]) == 2
    assert capsys.readouterr().err == "lstm-fast: error: first second\n"


def test_cli_internal_error(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A bug is one line too (exit code 70); LSTM_FAST_DEBUG=1 shows the traceback."""
    monkeypatch.setattr("lstm_fast.converters.torch.spec_from_torch_file",
                        _boom(KeyError("oops")))
    argv = ["convert", str(FIXTURES / "torch" / "classifier.pt"), "-o",
            str(tmp_path / "o.lfm"), "--no-verify"]
    assert cli.main(argv) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (KeyError: 'oops')" in err
    monkeypatch.setenv("LSTM_FAST_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(argv)
