"""Valid seed files of every format, built from the committed fixtures (and torch if present).

- ``torch_zip``, ``torchscript``, ``safetensors``, ``keras``, ``h5``: the fixtures under
  ``tests/fixtures`` (for ``h5`` also the tf.keras 2 / Keras 1 / CuDNN files that
  ``make_keras2_h5.py`` synthesizes);
- ``torch_legacy``: small state dicts and a training checkpoint saved by torch with
  ``_use_new_zipfile_serialization=False``; without torch, the same stream is assembled from a
  zip fixture's ``data.pkl`` and storages (the layout torch writes, FORMATS.md 1.6);
- ``lfm``: fixtures converted with lstm_fast (torch and Keras sources).
"""

from __future__ import annotations

import importlib.util
import pickle
import struct
import zipfile
from pathlib import Path

from .mutate import FORMATS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def build_seeds(out: Path) -> dict[str, list[Path]]:
    """Write or pick seed files; ``{format: [paths]}`` with at least one path per format."""
    out.mkdir(parents=True, exist_ok=True)
    torch_dir, keras_dir = FIXTURES / "torch", FIXTURES / "keras"
    seeds: dict[str, list[Path]] = {fmt: [] for fmt in FORMATS}
    for p in sorted(torch_dir.glob("*.pt")):
        if not zipfile.is_zipfile(p):
            continue
        with zipfile.ZipFile(p) as z:
            script = any("/code/" in n for n in z.namelist())
        seeds["torchscript" if script else "torch_zip"].append(p)
    seeds["safetensors"] = sorted(torch_dir.glob("*.safetensors"))
    seeds["keras"] = sorted(keras_dir.glob("*.keras"))
    seeds["h5"] = sorted(keras_dir.glob("*.h5")) + _keras2_seeds(out / "keras2")
    seeds["torch_legacy"] = _legacy_seeds(out, seeds["torch_zip"])
    seeds["lfm"] = _lfm_seeds(out, seeds)
    missing = [fmt for fmt, paths in seeds.items() if not paths]
    if missing:
        raise RuntimeError(f"no fuzz seeds for {missing}")
    return seeds


def _keras2_seeds(out: Path) -> list[Path]:
    """tf.keras 2 / Keras 1 / CuDNN layouts, synthesized with h5py (make_keras2_h5.py)."""
    spec = importlib.util.spec_from_file_location(
        "make_keras2_h5", FIXTURES / "keras" / "make_keras2_h5.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = module.write_all(out)
    return [p for kind, p in paths.items() if kind not in ("weights", "json")]


def _legacy_seeds(out: Path, zips: list[Path]) -> list[Path]:
    try:
        import torch
    except ImportError:
        return [_legacy_from_zip(out, p) for p in zips[:2]]
    torch.manual_seed(0)
    paths = []
    objects = {
        "legacy_gru.pt": torch.nn.GRU(3, 4).state_dict(),
        "legacy_ckpt.pt": {"model_state_dict": torch.nn.LSTM(2, 3, num_layers=2).state_dict(),
                           "epoch": 3, "note": "x"},
        "legacy_rnn_head.pt": {**{f"rnn.{k}": v for k, v in torch.nn.RNN(2, 3).state_dict()
                                  .items()},
                               "fc.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)},
    }
    for name, obj in objects.items():
        p = out / name
        torch.save(obj, p, _use_new_zipfile_serialization=False)
        paths.append(p)
    return paths


def _legacy_from_zip(out: Path, path: Path) -> Path:
    """The legacy stream of a zip checkpoint: magic, version, sys info, data.pkl, storage
    keys, then each storage as an int64 element count and its bytes."""
    from lstm_fast.converters.torch_file import _unpickle

    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        data = z.read(pkl)
        _, unpickler = _unpickle(data, str(path))
        keys = sorted(unpickler.storages)
        blobs = [z.read(f"{prefix}data/{k}") for k in keys]
    parts = [pickle.dumps(_LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
             data, pickle.dumps(keys, protocol=2)]
    for key, blob in zip(keys, blobs, strict=True):
        item = unpickler.storages[key].type.np_dtype.itemsize
        parts += [struct.pack("<q", len(blob) // item), blob]
    target = out / f"legacy_{path.stem}.pt"
    target.write_bytes(b"".join(parts))
    return target


def _lfm_seeds(out: Path, seeds: dict[str, list[Path]]) -> list[Path]:
    from lstm_fast.converters.keras import spec_from_keras_file
    from lstm_fast.converters.torch import spec_from_torch_file
    from lstm_fast.errors import LstmFastError
    from lstm_fast.format import save_spec

    paths = []
    sources = [(p, spec_from_torch_file) for p in seeds["torch_zip"][:3]]
    sources += [(p, spec_from_keras_file) for p in seeds["keras"][:2]]
    for src, convert in sources:
        try:
            spec = convert(src)
        except LstmFastError:  # a fixture that needs options: not a seed
            continue
        target = out / f"{src.stem}.lfm"
        save_spec(spec, target)
        paths.append(target)
    if paths:  # quantized files too: narrow codes and per-row scales are read differently
        import lstm_fast as lf

        model = lf.load(paths[0])
        for dtype in ("fp16", "int8"):
            target = out / f"{paths[0].stem}_{dtype}.lfm"
            model.quantize(dtype, measure_steps=20).save(target)
            paths.append(target)
    return paths
