"""Run a source model in its own framework, for ``lstm-fast convert`` and ``lstm-fast verify``.

The frameworks are imported lazily; when one is missing the caller reports the comparison as
skipped. Keras files are loaded with Keras itself. A PyTorch state dict carries no
architecture, so the torch side is rebuilt from the converted layers with torch's own modules
(``nn.Embedding``, ``nn.LSTM``, ``nn.Linear``, ...) and, for ragged batches, packed sequences.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import LstmFastError
from .spec import ModelSpec


class FrameworkUnavailable(LstmFastError):
    """The source framework is not installed (or cannot run this file)."""


def random_input(spec: ModelSpec, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """Inputs that exercise the model: ids in [1, vocabulary) or standard normal features."""
    rng = np.random.default_rng(seed)
    if spec.takes_ids:
        return rng.integers(1, max(2, spec.layers[0].vocab_size), (batch, steps)).astype(np.int64)
    return rng.standard_normal((batch, steps, spec.input_size)).astype(np.float32)


def framework_output(source: str, kind: str, spec: ModelSpec, x: np.ndarray,
                     lengths: np.ndarray | None = None, config: str | None = None) -> np.ndarray:
    """The source framework's output for ``x``; raises :class:`FrameworkUnavailable`."""
    if kind == "keras":
        return _keras_output(source, x, lengths, config)
    return _torch_output(spec, x, lengths)


def _keras_output(source: str, x: np.ndarray, lengths: np.ndarray | None,
                  config: str | None) -> np.ndarray:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as e:
        raise FrameworkUnavailable(f"keras is not installed ({e})") from None
    if lengths is not None:
        raise FrameworkUnavailable("Keras models take masks, not lengths")
    try:
        if config is not None:
            with open(config) as f:
                model = keras.models.model_from_json(f.read())
            model.load_weights(source)
        else:
            model = keras.saving.load_model(source, compile=False)
        y = keras.ops.convert_to_numpy(model(x, training=False))
    except Exception as e:  # noqa: BLE001 - any Keras failure means "cannot compare"
        raise FrameworkUnavailable(f"Keras {keras.__version__} cannot run {source}: "
                                   f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                   ) from None
    return np.asarray(y, dtype=np.float64)


_TORCH_ACTS = {
    "linear": None, "relu": "ReLU", "relu6": "ReLU6", "tanh": "Tanh", "sigmoid": "Sigmoid",
    "hard_sigmoid": "Hardsigmoid", "softsign": "Softsign", "softplus": "Softplus", "elu": "ELU",
    "selu": "SELU", "silu": "SiLU", "gelu": "GELU",
}


def _torch_output(spec: ModelSpec, x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    try:
        import torch
    except ImportError as e:
        raise FrameworkUnavailable(f"torch is not installed ({e})") from None
    from torch import nn

    def param(a: np.ndarray) -> nn.Parameter:
        return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float32)))

    T = x.shape[1]
    with torch.no_grad():
        h = torch.from_numpy(np.asarray(x))
        for L in spec.layers:
            if L.kind == "embedding":
                h = nn.functional.embedding(h.long(), torch.from_numpy(np.array(L.weight)))
            elif L.kind in ("lstm", "gru", "rnn", "bidirectional"):
                h = _torch_recurrent(torch, L, h, lengths, T)
            elif L.kind == "dense":
                h = nn.functional.linear(h, torch.from_numpy(np.array(L.weight)),
                                         None if L.bias is None
                                         else torch.from_numpy(np.array(L.bias)))
                if L.activation in ("softmax", "log_softmax"):
                    h = getattr(torch, L.activation)(h, dim=-1)
                elif L.activation not in _TORCH_ACTS:
                    raise FrameworkUnavailable(f"no torch module for activation "
                                               f"{L.activation!r}")
                elif _TORCH_ACTS[L.activation]:
                    h = getattr(nn, _TORCH_ACTS[L.activation])()(h)
            else:
                raise FrameworkUnavailable(f"no torch equivalent of a {L.kind} layer")
        return h.double().numpy()


def _torch_recurrent(torch: Any, L: Any, h: Any, lengths: np.ndarray | None, T: int) -> Any:
    """One recurrent layer (or Bidirectional) as a one-layer torch module."""
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    bi = L.kind == "bidirectional"
    cells = (L.forward, L.backward) if bi else (L,)
    f = cells[0]
    if bi and L.merge_mode != "concat":
        raise FrameworkUnavailable("torch's bidirectional layers only concatenate")
    if f.go_backwards or f.activation not in ("tanh", "relu") \
            or getattr(f, "recurrent_activation", "sigmoid") != "sigmoid" \
            or (f.kind != "rnn" and f.activation != "tanh") \
            or (f.kind == "gru" and not f.reset_after):
        raise FrameworkUnavailable(f"torch has no {f.kind} with these options")
    if f.kind == "lstm":
        m = nn.LSTM(f.input_size, f.hidden_size, batch_first=True, bidirectional=bi,
                    proj_size=f.output_size if f.w_hr is not None else 0)
    elif f.kind == "gru":
        m = nn.GRU(f.input_size, f.hidden_size, batch_first=True, bidirectional=bi)
    else:
        m = nn.RNN(f.input_size, f.hidden_size, batch_first=True, bidirectional=bi,
                   nonlinearity=f.activation)
    for cell, sfx in zip(cells, ("_l0", "_l0_reverse"), strict=False):
        arrays = cell.arrays()
        b_ih = arrays.get("b_ih", arrays.get("bias"))
        b_hh = arrays.get("b_hh")
        size = cell.w_ih.shape[0]
        named = {"weight_ih": cell.w_ih, "weight_hh": cell.w_hh, "weight_hr": arrays.get("w_hr"),
                 "bias_ih": np.zeros(size) if b_ih is None else b_ih,
                 "bias_hh": np.zeros(size) if b_hh is None else b_hh}
        for name, value in named.items():
            if value is not None:
                setattr(m, name + sfx, nn.Parameter(torch.tensor(np.asarray(value),
                                                                 dtype=torch.float32)))
    if lengths is not None:
        packed = pack_padded_sequence(h, torch.as_tensor(lengths), batch_first=True,
                                      enforce_sorted=False)
        out, state = m(packed)
        out = pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    else:
        out, state = m(h)
    if L.return_sequences:
        return out
    h_n = state[0] if f.kind == "lstm" else state
    return torch.cat([h_n[-2], h_n[-1]], dim=-1) if bi else h_n[-1]
