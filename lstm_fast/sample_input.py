"""Random inputs that exercise a model, for ``lstm-fast convert/verify`` and the bench."""

from __future__ import annotations

import numpy as np

from .spec import ModelSpec

__all__ = ["random_input"]


def random_input(spec: ModelSpec, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """Inputs that exercise the model: ids in [1, vocabulary) or standard normal features.

    Parameters
    ----------
    spec : ModelSpec
        The model the input is for.
    batch, steps : int
        The input's batch and time dimensions.
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    ndarray
        (batch, steps) int64 ids when the model starts with an Embedding, else
        (batch, steps, input_size) float32.
    """
    rng = np.random.default_rng(seed)
    if spec.takes_ids:
        return rng.integers(1, max(2, spec.layers[0].vocab_size), (batch, steps)).astype(np.int64)
    return rng.standard_normal((batch, steps, spec.input_size)).astype(np.float32)
