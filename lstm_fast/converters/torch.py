"""PyTorch -> lstm_fast. torch is imported lazily; lstm_fast never needs it otherwise."""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedModelError
from ..model import Model


def from_torch(module: Any, *, isa: str | None = None) -> Model:
    """Convert a live ``torch.nn.LSTM`` (any ``num_layers``, ``batch_first`` or not).

    The converted model is always batch-first: ``predict`` takes (B, T, I).

    Raises
    ------
    UnsupportedModelError
        For modules other than ``nn.LSTM``, and for ``bidirectional`` or ``proj_size`` LSTMs
        (not supported yet).
    """
    import torch

    if not isinstance(module, torch.nn.LSTM):
        raise UnsupportedModelError(
            f"from_torch supports torch.nn.LSTM, got {type(module).__name__}"
        )
    if module.bidirectional:
        raise UnsupportedModelError("bidirectional nn.LSTM is not supported yet")
    if module.proj_size:
        raise UnsupportedModelError("nn.LSTM with proj_size > 0 is not supported yet")

    def arr(name: str) -> Any:
        return getattr(module, name).detach().to("cpu", torch.float32).numpy()

    layers = []
    for k in range(module.num_layers):
        biases = (arr(f"bias_ih_l{k}"), arr(f"bias_hh_l{k}")) if module.bias else (None, None)
        layers.append((arr(f"weight_ih_l{k}"), arr(f"weight_hh_l{k}"), *biases))
    return Model.from_lstm_weights(layers, isa=isa)
