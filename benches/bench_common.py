"""Workloads and deterministic test data shared by the lstm_fast benchmarks.

Used by ``benches/compare.py`` (lstm_fast vs torch vs ONNX Runtime) and by the
pytest-benchmark suite in ``benches/test_bench_lstm.py``. Only numpy is needed
here so that both can import it cheaply.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "WORKLOADS",
    "WORKLOADS_BY_NAME",
    "FloatArray",
    "LayerWeights",
    "Mode",
    "Workload",
    "make_input",
    "make_weights",
]

FloatArray = npt.NDArray[np.float32]
Mode = Literal["step", "seq"]


@dataclass(frozen=True)
class Workload:
    """One benchmark scenario for a single-layer, unidirectional LSTM.

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
    """

    name: str
    mode: Mode
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int

    @property
    def seed(self) -> int:
        """Deterministic RNG seed derived from the workload name."""
        return zlib.crc32(self.name.encode())

    def describe(self) -> str:
        """Return a short human-readable description of the shapes."""
        shape = f"B={self.batch}, I={self.input_size}, H={self.hidden_size}"
        if self.mode == "step":
            return f"step, {shape}"
        return f"sequence, {shape}, T={self.seq_len}"


WORKLOADS: tuple[Workload, ...] = (
    Workload("step_64_128", "step", batch=1, seq_len=1, input_size=64, hidden_size=128),
    Workload("step_128_256", "step", batch=1, seq_len=1, input_size=128, hidden_size=256),
    Workload("step_256_512", "step", batch=1, seq_len=1, input_size=256, hidden_size=512),
    Workload("seq_b1", "seq", batch=1, seq_len=200, input_size=128, hidden_size=256),
    Workload("seq_b64", "seq", batch=64, seq_len=100, input_size=256, hidden_size=512),
)
WORKLOADS_BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}


class LayerWeights(NamedTuple):
    """Weights of one LSTM layer in PyTorch layout and gate order (i, f, g, o).

    Attributes
    ----------
    w_ih : numpy.ndarray
        Input-hidden weights, shape ``(4H, I)``.
    w_hh : numpy.ndarray
        Hidden-hidden weights, shape ``(4H, H)``.
    b_ih : numpy.ndarray
        Input-hidden bias, shape ``(4H,)``.
    b_hh : numpy.ndarray
        Hidden-hidden bias, shape ``(4H,)``.
    """

    w_ih: FloatArray
    w_hh: FloatArray
    b_ih: FloatArray
    b_hh: FloatArray


def make_weights(input_size: int, hidden_size: int, seed: int) -> LayerWeights:
    """Draw random LSTM weights the way ``torch.nn.LSTM`` initialises them.

    Parameters
    ----------
    input_size : int
        Input features ``I``.
    hidden_size : int
        Hidden units ``H``.
    seed : int
        Seed for :func:`numpy.random.default_rng`.

    Returns
    -------
    LayerWeights
        C-contiguous float32 arrays, uniform in ``[-1/sqrt(H), 1/sqrt(H)]``.
    """
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(hidden_size)
    gates = 4 * hidden_size

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
