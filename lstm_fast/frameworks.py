"""Live framework objects -> a runnable :class:`~lstm_fast.Model`.

The converters (:mod:`lstm_fast.converters`) turn a torch module or a Keras model into a
:class:`~lstm_fast.spec.ModelSpec`; these two functions build the model from it. The
frameworks themselves are imported lazily by the converters.
"""

from __future__ import annotations

from typing import Any

from .converters.keras import spec_from_keras
from .converters.torch import spec_from_torch
from .model import Model

__all__ = ["from_keras", "from_torch"]


def from_torch(module: Any, *, isa: str | None = None) -> Model:
    """Convert a live PyTorch module and build a :class:`~lstm_fast.Model` from it.

    Parameters
    ----------
    module : torch.nn.Module
        See :func:`lstm_fast.converters.torch.spec_from_torch` for the supported modules.
    isa : str, optional
        See :class:`lstm_fast.Model`.

    Returns
    -------
    lstm_fast.Model

    Raises
    ------
    UnsupportedModelError
        For modules or options the engine does not run; the message names them.
    """
    return Model(spec_from_torch(module), isa=isa)


def from_keras(model: Any, *, isa: str | None = None) -> Model:
    """Convert a live Keras model and build a :class:`~lstm_fast.Model` from it.

    Parameters
    ----------
    model : keras.Model
        A ``Sequential`` or single-chain functional model (see
        :func:`lstm_fast.converters.keras.spec_from_keras_file` for the supported layers).
    isa : str, optional
        See :class:`lstm_fast.Model`.

    Returns
    -------
    lstm_fast.Model
        ``predict`` takes (B, T, I) floats, or (B, T) integer ids when the first layer is an
        ``Embedding``.
    """
    return Model(spec_from_keras(model), isa=isa)
