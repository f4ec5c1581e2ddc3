"""The canonical, validated description of a model, in the engine's internal convention.

Converters translate a framework's weights into a :class:`ModelSpec`; everything below this
module (the model file, the C engine) speaks only this convention:

- LSTM gates are row blocks in the order ``[i, f, g, o]`` (PyTorch's order);
- ``w_ih`` is (4H, I), ``w_hh`` is (4H, H), so gates = w_ih @ x + w_hh @ h + bias;
- the input and recurrent biases are folded into one ``bias`` of shape (4H,).

Layers are a tuple so later kinds (GRU, simple RNN, bidirectional wrappers, heads) can join
the same ordered list; ``SPEC_VERSION`` changes when the meaning of a field changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import WeightsError

SPEC_VERSION = 1


def _float32_matrix(a: np.ndarray, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu" or arr.ndim != ndim:
        raise WeightsError(
            f"{name} must be a real {ndim}-D array, got dtype {arr.dtype} shape {arr.shape}"
        )
    arr = np.array(arr, dtype=np.float32, order="C", copy=True)  # never alias the caller's
    if not np.isfinite(arr).all():
        raise WeightsError(f"{name} holds NaN or Inf (or values too large for float32)")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class LSTMLayerSpec:
    """One unidirectional LSTM layer (see the module docstring for the convention)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        w_ih = _float32_matrix(self.w_ih, "w_ih", 2)
        w_hh = _float32_matrix(self.w_hh, "w_hh", 2)
        bias = _float32_matrix(self.bias, "bias", 1)
        four_h, hidden = w_hh.shape
        if four_h != 4 * hidden or hidden < 1:
            raise WeightsError(f"w_hh must be (4H, H), got {w_hh.shape}")
        if w_ih.shape[0] != four_h or w_ih.shape[1] < 1:
            raise WeightsError(f"w_ih must be (4H, I) = ({four_h}, I), got {w_ih.shape}")
        if bias.shape != (four_h,):
            raise WeightsError(f"bias must be ({four_h},), got {bias.shape}")
        object.__setattr__(self, "w_ih", w_ih)
        object.__setattr__(self, "w_hh", w_hh)
        object.__setattr__(self, "bias", bias)

    @property
    def input_size(self) -> int:
        return int(self.w_ih.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.w_hh.shape[1])


@dataclass(frozen=True)
class ModelSpec:
    """An ordered stack of layers; layer k+1 reads layer k's output."""

    layers: tuple[LSTMLayerSpec, ...]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise WeightsError("a model needs at least one layer")
        for k in range(1, len(layers)):
            if layers[k].input_size != layers[k - 1].hidden_size:
                raise WeightsError(
                    f"layer {k} expects inputs of size {layers[k].input_size} but layer "
                    f"{k - 1} produces {layers[k - 1].hidden_size}"
                )
        object.__setattr__(self, "layers", layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self) -> int:
        return self.layers[-1].hidden_size
