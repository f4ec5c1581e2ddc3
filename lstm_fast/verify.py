"""Run a source model in its own framework, for ``lstm-fast convert`` and ``lstm-fast verify``.

The frameworks are imported lazily; when one is missing the caller reports the comparison as
skipped. Keras files are loaded with Keras itself. A PyTorch state dict carries no
architecture, so the torch side is built from the conversion plan with torch's own modules,
loaded with the source file's own tensors (:mod:`lstm_fast.torch_check`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import FrameworkUnavailable
from .spec import ModelSpec

__all__ = ["FrameworkUnavailable", "framework_output", "random_input"]


def random_input(spec: ModelSpec, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """Inputs that exercise the model: ids in [1, vocabulary) or standard normal features."""
    rng = np.random.default_rng(seed)
    if spec.takes_ids:
        return rng.integers(1, max(2, spec.layers[0].vocab_size), (batch, steps)).astype(np.int64)
    return rng.standard_normal((batch, steps, spec.input_size)).astype(np.float32)


def framework_output(source: str, kind: str, x: np.ndarray, lengths: np.ndarray | None = None,
                     *, config: str | None = None,
                     torch_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """The source file's output for ``x`` in its own framework; raises
    :class:`FrameworkUnavailable` when that framework is missing. ``torch_options`` are the
    conversion options (see :func:`lstm_fast.torch_check.torch_reference`)."""
    if kind == "keras":
        return _keras_output(source, x, lengths, config)
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise FrameworkUnavailable(f"torch is not installed ({e})") from None
    from .torch_check import torch_reference

    return torch_reference(source, dict(torch_options or {}), x, lengths)


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
