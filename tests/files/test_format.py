"""The model file: round trips, versions, and hostile or broken files (each a clear error)."""

import json
import struct

import numpy as np
import pytest

import lstm_fast as lf
from lstm_fast import safetensors
from lstm_fast.format import FORMAT_VERSION, load_spec, save_spec
from lstm_fast.spec import DenseSpec, EmbeddingSpec, MaskingSpec, ModelSpec
from tests.helpers import dense_spec, lstm_spec


@pytest.fixture
def spec(rng):
    return ModelSpec(
        (EmbeddingSpec(rng.normal(size=(11, 6)), mask_zero=True),
         lstm_spec(rng, 6, 9, activation="relu", recurrent_activation="hard_sigmoid_keras2"),
         lstm_spec(rng, 9, 5, bias=False, return_sequences=False),
         dense_spec(rng, 5, 3, "softmax")),
        mask_semantics="keras", stateful=True,
        metadata={"source_framework": "keras", "keras_version": "3.15.1"})


@pytest.fixture
def saved(spec, tmp_path):
    path = tmp_path / "model.lfm"
    lf.Model(spec).save(path)
    return path


def test_round_trip_every_field(spec, saved, rng):
    back = load_spec(saved)
    assert back.mask_semantics == "keras" and back.stateful and back.metadata == spec.metadata
    assert [L.kind for L in back.layers] == [L.kind for L in spec.layers]
    for a, b in zip(spec.layers, back.layers, strict=True):
        assert a.arrays().keys() == b.arrays().keys()
        for name, arr in a.arrays().items():
            np.testing.assert_array_equal(arr, b.arrays()[name])
        for field in ("activation", "recurrent_activation", "return_sequences", "go_backwards",
                      "mask_zero"):
            assert getattr(a, field, None) == getattr(b, field, None)
    ids = rng.integers(0, 11, (3, 20))
    np.testing.assert_array_equal(lf.Model(spec).predict(ids), lf.load(saved).predict(ids))


def test_masking_and_dense_front_round_trip(rng, tmp_path):
    spec = ModelSpec((MaskingSpec(4, -1.0), DenseSpec(rng.normal(size=(7, 4))),
                      lstm_spec(rng, 7, 3, go_backwards=True)))
    save_spec(spec, tmp_path / "m")
    back = load_spec(tmp_path / "m")
    assert back.layers[0].mask_value == -1.0 and back.layers[1].bias is None
    assert back.layers[2].go_backwards


def test_weights_are_memory_mapped_not_copied(saved):
    back = load_spec(saved)
    w = back.layers[1].w_ih
    assert not w.flags.writeable and not w.flags.owndata


def test_file_is_plain_safetensors(saved):
    tensors, meta = safetensors.read(saved)
    # float32 models are still written as version 1 (readable by older lstm_fast)
    assert meta["format"] == "lstm_fast.model" and meta["format_version"] == "1"
    assert FORMAT_VERSION == 2
    assert all(a.dtype == np.float32 for a in tensors.values())
    assert len(json.loads(meta["model"])["layers"]) == 4


def rewrite_model_json(path, edit):
    tensors, meta = safetensors.read(path)
    model = json.loads(meta["model"])
    edit(model, meta, tensors)
    meta["model"] = json.dumps(model)
    safetensors.write(path, {k: np.array(v) for k, v in tensors.items()}, meta)


def test_newer_format_version_is_refused(saved):
    rewrite_model_json(saved, lambda m, meta, t: meta.update(format_version="99"))
    with pytest.raises(lf.FormatVersionError, match="version 99.*upgrade lstm_fast"):
        lf.load(saved)


@pytest.mark.parametrize("edit, message", [
    (lambda m, meta, t: m["layers"][1].update(kind="gru2"), "unknown kind"),
    (lambda m, meta, t: m["layers"][1].update(activation=3), "must be str"),
    (lambda m, meta, t: m["layers"][1].update(activation="swishy"), "not supported"),
    (lambda m, meta, t: m["layers"][1]["tensors"].update(w_ih="nope"), "missing"),
    (lambda m, meta, t: t.update(extra=np.zeros(2, np.float32)), "not used"),
    (lambda m, meta, t: t.update({"layers.1.w_ih": np.zeros((2, 2), np.float32)}), "w_ih"),
    (lambda m, meta, t: t.update({"layers.1.w_ih": np.full((36, 6), np.nan, np.float32)}),
     "NaN"),
    (lambda m, meta, t: m.update(layers="x"), "no layer list"),
    (lambda m, meta, t: m.update(mask_semantics="tf"), "mask_semantics"),
    (lambda m, meta, t: (m["layers"].pop(1), [t.pop(k) for k in list(t) if ".1." in k]),
     "expects inputs"),
    (lambda m, meta, t: meta.update(format="something.else"), "not an lstm_fast model"),
])
def test_inconsistent_model_description(saved, edit, message):
    rewrite_model_json(saved, edit)
    with pytest.raises(lf.ModelFileError, match=message):
        lf.load(saved)


def test_not_json_model_description(saved):
    tensors, meta = safetensors.read(saved)
    meta["model"] = "{not json"
    safetensors.write(saved, {k: np.array(v) for k, v in tensors.items()}, meta)
    with pytest.raises(lf.ModelFileError, match="corrupted model description"):
        lf.load(saved)


def test_truncated_anywhere(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 4, 8, 20, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}"
        p.write_bytes(data[:cut])
        with pytest.raises(lf.ModelFileError):
            lf.load(p)


def header_file(tmp_path, header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    p = tmp_path / "hostile.lfm"
    p.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return p


def test_wrong_magic_and_garbage(tmp_path):
    p = tmp_path / "garbage"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(lf.ModelFileError, match="header length"):
        lf.load(p)


def test_corrupted_header_json(tmp_path):
    with pytest.raises(lf.ModelFileError, match="corrupted header JSON"):
        lf.load(header_file(tmp_path, None, raw_header=b'{"__metadata__": {"fo'))
    with pytest.raises(lf.ModelFileError, match="header must be a JSON object"):
        lf.load(header_file(tmp_path, [1, 2]))


def test_header_claiming_huge_tensors_allocates_nothing(tmp_path):
    header = {"__metadata__": {"format": "lstm_fast.model"},
              "w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}}
    with pytest.raises(lf.ModelFileError, match="outside the data"):
        lf.load(header_file(tmp_path, header, b"\0" * 64))
    header["w"]["shape"] = [2**45]
    with pytest.raises(lf.ModelFileError, match="invalid shape"):
        lf.load(header_file(tmp_path, header, b"\0" * 64))


@pytest.mark.parametrize("offsets, message", [
    ([0, 65], "outside the data"), ([-8, 8], "outside the data"), ([40, 8], "outside the data"),
    ([0, 8], "needs 16 bytes"), ([0, "16"], "invalid data_offsets"), ([0], "invalid"),
])
def test_tensor_offsets_checked(tmp_path, offsets, message):
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": offsets}}
    with pytest.raises(lf.ModelFileError, match=message):
        lf.load(header_file(tmp_path, header, b"\0" * 64))


def test_unknown_dtype_and_huge_header_length(tmp_path):
    header = {"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}
    with pytest.raises(lf.ModelFileError, match="unsupported dtype"):
        lf.load(header_file(tmp_path, header, b"\0" * 16))
    p = tmp_path / "huge"
    p.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(lf.ModelFileError, match="header length"):
        lf.load(p)


def test_plain_safetensors_without_our_header(tmp_path):
    p = tmp_path / "plain.safetensors"
    safetensors.write(p, {"weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(lf.ModelFileError, match="lstm-fast convert"):
        lf.load(p)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        lf.load(tmp_path / "nope.lfm")


def test_recurrent_family_round_trip(rng, tmp_path):
    """GRU (both variants), simple RNN, projected LSTM and Bidirectional wrappers survive
    save/load with every field, and run identically."""
    from tests.helpers import cell_spec

    spec = ModelSpec((
        lf.BidirectionalSpec(cell_spec(rng, "gru", 4, 6), cell_spec(rng, "gru", 4, 6), "ave"),
        cell_spec(rng, "gru_before", 6, 5, recurrent_activation="hard_sigmoid"),
        lf.BidirectionalSpec(cell_spec(rng, "lstm_proj", 5, 8),
                             cell_spec(rng, "lstm_proj", 5, 8), "concat"),
        cell_spec(rng, "rnn", 8, 3, activation="relu", bias=False),
    ))
    save_spec(spec, tmp_path / "family.lfm")
    back = load_spec(tmp_path / "family.lfm")
    for a, b in zip(spec.cells, back.cells, strict=True):
        assert type(a) is type(b) and a.arrays().keys() == b.arrays().keys()
        for name in a.arrays():
            np.testing.assert_array_equal(a.arrays()[name], b.arrays()[name])
    assert back.layers[0].merge_mode == "ave" and not back.layers[1].reset_after
    assert back.layers[3].activation == "relu"
    x = rng.standard_normal((2, 11, 4)).astype(np.float32)
    np.testing.assert_array_equal(lf.Model(spec).predict(x), lf.Model(back).predict(x))
