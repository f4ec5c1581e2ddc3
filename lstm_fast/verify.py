"""Run a source model in its own framework, for ``lstm-fast convert`` and ``lstm-fast verify``.

The frameworks are imported lazily; when one is missing the caller reports the comparison as
skipped. Keras files are loaded with Keras itself. A PyTorch state dict carries no
architecture, so the torch side is the converted model rebuilt with torch's own modules
(:mod:`lstm_fast.peers`, packed sequences for ragged batches).
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
    from .peers import build_peer

    return np.asarray(build_peer("torch", spec).predict(x, lengths), dtype=np.float64)


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
