"""Workloads and deterministic test data shared by the lstm_fast benchmarks.

Used by ``benches/compare.py`` (lstm_fast vs torch vs ONNX Runtime, through
:mod:`lstm_fast.bench` and :mod:`lstm_fast.peers`) and by the pytest-benchmark
suites in ``benches/test_bench_lstm.py`` and ``benches/test_bench_family.py``:
:func:`make_spec` is the one model of each workload for all of them. Only numpy
is imported at module level so that all of them can import it cheaply.

Two kinds of workloads:

* :class:`Workload`: one single-layer, unidirectional LSTM or GRU, run step by
  step or on whole float sequences;
* :class:`ClassifierWorkload`: a text classifier, Embedding -> stacked
  bidirectional LSTM -> Linear on ``cat(h_n[-2], h_n[-1])``, timed from token
  ids to logits, with fixed or ragged (right-padded) sequence lengths.

A :class:`Workload` with ``weights`` other than ``"fp32"`` (``QUANTIZED_WORKLOADS``,
issue 13's speed table) runs lstm_fast on the model quantized to those weights, next to
lstm_fast's float32 model and the peers' quantized variants.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "AUDIO_WORKLOADS",
    "CLASSIFIER_WORKLOADS",
    "GATES",
    "GRU_WORKLOADS",
    "LSTM_WORKLOADS",
    "WORKLOADS",
    "WORKLOADS_BY_NAME",
    "AnyWorkload",
    "Cell",
    "ClassifierWorkload",
    "FloatArray",
    "IdArray",
    "LayerWeights",
    "Mode",
    "QUANTIZED_WORKLOADS",
    "SERVER_WORKLOADS",
    "Workload",
    "make_classifier_inputs",
    "make_classifier_state_dict",
    "make_input",
    "make_spec",
    "make_weights",
]

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
Mode = Literal["step", "seq"]
Cell = Literal["lstm", "gru"]
GATES: dict[str, int] = {"lstm": 4, "gru": 3}
"""Gate blocks per cell: rows of ``W_ih`` are ``GATES[cell] * H``."""


@dataclass(frozen=True)
class Workload:
    """One benchmark scenario for a single-layer, unidirectional LSTM or GRU.

    Attributes
    ----------
    name : str
        Identifier used on the command line and in reports.
    mode : {"step", "seq"}
        ``"step"``: one frame per call, recurrent state carried between calls.
        ``"seq"``: a whole sequence per call, starting from a zero state.
    batch : int
        Batch size ``B``.
    seq_len : int
        Frames per call ``T`` (always 1 for step workloads).
    input_size : int
        Input features ``I``.
    hidden_size : int
        Hidden units ``H``.
    cell : {"lstm", "gru"}
        The recurrent cell (GRU: PyTorch's reset-after variant, gates r, z, n).
    weights : {"fp32", "fp16", "bf16", "int8"}
        The weights lstm_fast runs (``Model.quantize``); the peers run their variants
        quantized to the same type.
    """

    name: str
    mode: Mode
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    cell: Cell = "lstm"
    weights: str = "fp32"

    @property
    def seed(self) -> int:
        """Deterministic RNG seed derived from the workload name."""
        return zlib.crc32(self.name.encode())

    def describe(self) -> str:
        """Return a short human-readable description of the shapes."""
        shape = f"B={self.batch}, I={self.input_size}, H={self.hidden_size}"
        weights = "" if self.weights == "fp32" else f", {self.weights} weights"
        if self.mode == "step":
            return f"{self.cell.upper()} step, {shape}{weights}"
        return f"{self.cell.upper()} sequence, {shape}, T={self.seq_len}{weights}"


@dataclass(frozen=True)
class ClassifierWorkload:
    """A bidirectional-LSTM text classifier, timed from token ids to logits.

    The model is ``nn.Embedding(vocab, embed_dim)`` -> ``nn.LSTM(embed_dim,
    hidden_size, num_layers, batch_first=True, bidirectional=True)`` ->
    ``nn.Linear(2 * hidden_size, num_classes)`` applied to
    ``cat(h_n[-2], h_n[-1])``. Each call runs one whole batch of ids.

    Attributes
    ----------
    name : str
        Identifier used on the command line and in reports.
    batch : int
        Batch size ``B``.
    seq_len : int
        Padded sequence length ``T``.
    vocab : int
        Embedding rows.
    embed_dim : int
        Embedding width (the LSTM's input size).
    hidden_size : int
        Hidden units ``H`` per direction.
    num_layers : int
        Stacked bidirectional layers.
    num_classes : int
        Output logits.
    min_length : int or None
        ``None``: every sequence has ``T`` steps and no lengths are passed.
        Otherwise lengths are drawn uniformly from ``[min_length, T]`` and the
        batch is right-padded (torch packs it, ORT gets ``sequence_lens``,
        lstm_fast gets ``lengths``).
    """

    name: str
    batch: int
    seq_len: int
    vocab: int
    embed_dim: int
    hidden_size: int
    num_layers: int
    num_classes: int
    min_length: int | None = None

    mode: Mode = "seq"
    """Always ``"seq"``: one call runs a whole batch."""

    @property
    def seed(self) -> int:
        """Deterministic RNG seed derived from the workload name."""
        return zlib.crc32(self.name.encode())

    @property
    def ragged(self) -> bool:
        """Whether the sequences have different lengths."""
        return self.min_length is not None

    def describe(self) -> str:
        """Return a short human-readable description of the model and inputs."""
        lengths = (
            f"lengths uniform in [{self.min_length}, {self.seq_len}]"
            if self.ragged
            else f"all lengths {self.seq_len}"
        )
        return (
            f"Embedding({self.vocab}, {self.embed_dim}) -> {self.num_layers}-layer BiLSTM "
            f"H={self.hidden_size} -> Linear({2 * self.hidden_size}, {self.num_classes}); "
            f"B={self.batch}, T={self.seq_len}, {lengths}"
        )


LSTM_WORKLOADS: tuple[Workload, ...] = (
    Workload("step_64_128", "step", batch=1, seq_len=1, input_size=64, hidden_size=128),
    Workload("step_128_256", "step", batch=1, seq_len=1, input_size=128, hidden_size=256),
    Workload("step_256_512", "step", batch=1, seq_len=1, input_size=256, hidden_size=512),
    Workload("seq_b1", "seq", batch=1, seq_len=200, input_size=128, hidden_size=256),
    Workload("seq_b64", "seq", batch=64, seq_len=100, input_size=256, hidden_size=512),
)
GRU_WORKLOADS: tuple[Workload, ...] = (
    Workload("gru_step_128_256", "step", 1, 1, input_size=128, hidden_size=256, cell="gru"),
    Workload("gru_seq_b1", "seq", 1, seq_len=200, input_size=128, hidden_size=256, cell="gru"),
    Workload("gru_seq_b64", "seq", 64, seq_len=100, input_size=256, hidden_size=512, cell="gru"),
)
AUDIO_WORKLOADS: tuple[Workload, ...] = (
    Workload("audio_16", "seq", batch=1, seq_len=512, input_size=16, hidden_size=16),
    Workload("audio_64", "seq", batch=1, seq_len=512, input_size=64, hidden_size=64),
    Workload("audio_128", "seq", batch=1, seq_len=512, input_size=128, hidden_size=128),
    Workload("amp_1_32", "seq", batch=1, seq_len=512, input_size=1, hidden_size=32),
)
"""RTNeural's ground: batch 1, small layers, a chunk of 512 frames per call."""
SERVER_WORKLOADS: tuple[Workload, ...] = (
    Workload("server_256", "step", batch=256, seq_len=1, input_size=128, hidden_size=256),
)
"""256 independent streams advanced one step in one call (compare with ``step_128_256``)."""
QUANTIZED_WORKLOADS: tuple[Workload, ...] = (
    Workload("int8_step_64_128", "step", 1, 1, input_size=64, hidden_size=128, weights="int8"),
    Workload("int8_step_128_256", "step", 1, 1, input_size=128, hidden_size=256,
             weights="int8"),
    Workload("int8_step_256_512", "step", 1, 1, input_size=256, hidden_size=512,
             weights="int8"),
    Workload("int8_gru_step_128_256", "step", 1, 1, input_size=128, hidden_size=256,
             cell="gru", weights="int8"),
    Workload("fp16_step_256_512", "step", 1, 1, input_size=256, hidden_size=512,
             weights="fp16"),
    Workload("int8_seq_b64", "seq", 64, seq_len=100, input_size=256, hidden_size=512,
             weights="int8"),
    Workload("int8_server_256", "step", 256, 1, input_size=128, hidden_size=256,
             weights="int8"),
)
"""Issue 13's speed table: lstm_fast on quantized weights vs its own float32 model and the
peers' quantized variants."""
_CLASSIFIER_SHAPE = {
    "batch": 16,
    "seq_len": 128,
    "vocab": 10000,
    "embed_dim": 128,
    "hidden_size": 256,
    "num_layers": 2,
    "num_classes": 2,
}
CLASSIFIER_WORKLOADS: tuple[ClassifierWorkload, ...] = (
    ClassifierWorkload("bilstm_cls_fixed", **_CLASSIFIER_SHAPE),
    ClassifierWorkload("bilstm_cls_ragged", **_CLASSIFIER_SHAPE, min_length=32),
)
AnyWorkload = Workload | ClassifierWorkload
WORKLOADS: tuple[AnyWorkload, ...] = (
    LSTM_WORKLOADS + AUDIO_WORKLOADS + SERVER_WORKLOADS + GRU_WORKLOADS + CLASSIFIER_WORKLOADS
    + QUANTIZED_WORKLOADS
)
"""Every workload, in report order."""
WORKLOADS_BY_NAME: dict[str, AnyWorkload] = {w.name: w for w in WORKLOADS}


class LayerWeights(NamedTuple):
    """Weights of one LSTM or GRU layer in PyTorch layout and gate order.

    LSTM gate blocks are (i, f, g, o), G = 4; GRU gate blocks are (r, z, n),
    G = 3.

    Attributes
    ----------
    w_ih : numpy.ndarray
        Input-hidden weights, shape ``(G*H, I)``.
    w_hh : numpy.ndarray
        Hidden-hidden weights, shape ``(G*H, H)``.
    b_ih : numpy.ndarray
        Input-hidden bias, shape ``(G*H,)``.
    b_hh : numpy.ndarray
        Hidden-hidden bias, shape ``(G*H,)``.
    """

    w_ih: FloatArray
    w_hh: FloatArray
    b_ih: FloatArray
    b_hh: FloatArray


def make_weights(
    input_size: int, hidden_size: int, seed: int, cell: Cell = "lstm"
) -> LayerWeights:
    """Draw random weights the way ``torch.nn.LSTM`` / ``torch.nn.GRU`` initialise them.

    Parameters
    ----------
    input_size : int
        Input features ``I``.
    hidden_size : int
        Hidden units ``H``.
    seed : int
        Seed for :func:`numpy.random.default_rng`.
    cell : {"lstm", "gru"}
        Which cell the weights are for (4 or 3 gate blocks).

    Returns
    -------
    LayerWeights
        C-contiguous float32 arrays, uniform in ``[-1/sqrt(H), 1/sqrt(H)]``.
    """
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    gates = GATES[cell] * hidden_size

    def draw(*shape: int) -> FloatArray:
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    return LayerWeights(
        w_ih=draw(gates, input_size),
        w_hh=draw(gates, hidden_size),
        b_ih=draw(gates),
        b_hh=draw(gates),
    )


def make_input(shape: tuple[int, ...], seed: int) -> FloatArray:
    """Return a C-contiguous float32 array of standard-normal values.

    Parameters
    ----------
    shape : tuple of int
        Shape of the array.
    seed : int
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    numpy.ndarray
        The random input.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32)


def make_classifier_state_dict(workload: ClassifierWorkload) -> dict[str, FloatArray]:
    """Draw the classifier's weights as a PyTorch state dict of numpy arrays.

    Keys are those of a module with attributes ``embedding`` (``nn.Embedding``),
    ``lstm`` (bidirectional ``nn.LSTM``) and ``fc`` (``nn.Linear``), in that
    order. Values follow torch's default initialisation: standard normal for the
    embedding, uniform in ``[-1/sqrt(H), 1/sqrt(H)]`` for the LSTM and in
    ``[-1/sqrt(2H), 1/sqrt(2H)]`` for the Linear layer.

    Parameters
    ----------
    workload : ClassifierWorkload
        The workload (its name seeds the generator).

    Returns
    -------
    dict of str to numpy.ndarray
        C-contiguous float32 arrays.
    """
    rng = np.random.default_rng(workload.seed)
    hidden = workload.hidden_size
    gates = 4 * hidden

    def uniform(bound: float, *shape: int) -> FloatArray:
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    sd: dict[str, FloatArray] = {
        "embedding.weight": rng.standard_normal(
            (workload.vocab, workload.embed_dim), dtype=np.float32
        )
    }
    bound = 1.0 / np.sqrt(hidden)
    for layer in range(workload.num_layers):
        inputs = workload.embed_dim if layer == 0 else 2 * hidden
        for suffix in ("", "_reverse"):
            sd[f"lstm.weight_ih_l{layer}{suffix}"] = uniform(bound, gates, inputs)
            sd[f"lstm.weight_hh_l{layer}{suffix}"] = uniform(bound, gates, hidden)
            sd[f"lstm.bias_ih_l{layer}{suffix}"] = uniform(bound, gates)
            sd[f"lstm.bias_hh_l{layer}{suffix}"] = uniform(bound, gates)
    fc_bound = 1.0 / np.sqrt(2 * hidden)
    sd["fc.weight"] = uniform(fc_bound, workload.num_classes, 2 * hidden)
    sd["fc.bias"] = uniform(fc_bound, workload.num_classes)
    return sd


def make_classifier_inputs(workload: ClassifierWorkload) -> tuple[IdArray, IdArray | None]:
    """Draw a batch of token ids and, for ragged workloads, its lengths.

    Parameters
    ----------
    workload : ClassifierWorkload
        The workload (its name seeds the generator).

    Returns
    -------
    ids : numpy.ndarray
        int64, shape ``(B, T)``, uniform in ``[1, vocab)``; 0 past each length.
    lengths : numpy.ndarray or None
        int64, shape ``(B,)``, uniform in ``[min_length, T]`` (the longest
        forced to ``T``); ``None`` when the workload is not ragged.
    """
    rng = np.random.default_rng(workload.seed + 1)
    shape = (workload.batch, workload.seq_len)
    ids = rng.integers(1, workload.vocab, size=shape, dtype=np.int64)
    if workload.min_length is None:
        return ids, None
    lengths = rng.integers(workload.min_length, workload.seq_len + 1, size=workload.batch)
    lengths = lengths.astype(np.int64)
    lengths[np.argmax(lengths)] = workload.seq_len  # the padded length is really T
    ids[np.arange(workload.seq_len) >= lengths[:, np.newaxis]] = 0
    return ids, lengths


def make_spec(workload: AnyWorkload) -> Any:
    """The workload's model as a :class:`lstm_fast.ModelSpec`, with its deterministic weights.

    A single LSTM layer as ``Model.from_lstm_weights`` builds it, a GRU layer with PyTorch's
    reset-after gates, or the classifier converted from its state dict with
    ``spec_from_state_dict(sd, head="last")``, as a user would.
    """
    import lstm_fast as lf

    if isinstance(workload, ClassifierWorkload):
        from lstm_fast.converters.torch import spec_from_state_dict

        return spec_from_state_dict(make_classifier_state_dict(workload), head="last")
    weights = make_weights(workload.input_size, workload.hidden_size, workload.seed,
                           workload.cell)
    if workload.cell == "lstm":
        return lf.Model.from_lstm_weights([tuple(weights)]).spec
    layer = lf.GRULayerSpec(*weights, reset_after=True)
    return lf.ModelSpec(layers=(layer,), mask_semantics="torch")
