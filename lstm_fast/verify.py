"""Run a source model in its own framework, for ``lstm-fast convert`` and ``lstm-fast verify``.

The frameworks are imported lazily; when one is missing the caller reports the comparison as
skipped. Keras files are loaded with Keras itself. A PyTorch state dict carries no
architecture, so the torch side is rebuilt from the converted layers with torch's own modules
(``nn.Embedding``, ``nn.LSTM``, ``nn.Linear``, ...) and, for ragged batches, packed sequences.
"""

from __future__ import annotations

import os

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
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def param(a: np.ndarray) -> nn.Parameter:
        return nn.Parameter(torch.from_numpy(np.array(a, dtype=np.float32)))

    T = x.shape[1]
    with torch.no_grad():
        h = torch.from_numpy(np.asarray(x))
        for L in spec.layers:
            if L.kind == "embedding":
                h = nn.functional.embedding(h.long(), torch.from_numpy(np.array(L.weight)))
            elif L.kind == "lstm":
                if L.activation != "tanh" or L.recurrent_activation != "sigmoid" \
                        or L.go_backwards:
                    raise FrameworkUnavailable("torch's LSTM has fixed activations and no "
                                               "go_backwards")
                m = nn.LSTM(L.input_size, L.hidden_size, batch_first=True)
                m.weight_ih_l0, m.weight_hh_l0 = param(L.w_ih), param(L.w_hh)
                bias = np.zeros(4 * L.hidden_size) if L.bias is None else L.bias
                m.bias_ih_l0, m.bias_hh_l0 = param(bias), param(np.zeros_like(bias))
                if lengths is not None:
                    packed = pack_padded_sequence(h, torch.as_tensor(lengths), batch_first=True,
                                                  enforce_sorted=False)
                    out, (h_n, _) = m(packed)
                    out = pad_packed_sequence(out, batch_first=True, total_length=T)[0]
                else:
                    out, (h_n, _) = m(h)
                h = out if L.return_sequences else h_n[-1]
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
