"""The same model run by other frameworks ("peers"), for ``lstm-fast bench --compare``.

:func:`build_peer` turns a :class:`~lstm_fast.spec.ModelSpec` into a runnable equivalent in
PyTorch (``torch.nn`` modules), ONNX Runtime (an ONNX graph built with ``onnx.helper``) or
Keras 3 (Keras layers holding the spec's weights). Every peer takes and returns what
:meth:`lstm_fast.Model.predict` does: batch-first inputs, (B, T, I) float32 features or
(B, T) integer ids, and (B, T, O) outputs ((B, O) when a recurrent layer returns only its
last step).

The frameworks are imported lazily (Keras takes seconds to import). When a framework is not
installed, or cannot express the spec (an activation it lacks, an LSTM projection in ONNX,
Keras masking in torch, ...), :func:`build_peer` raises
:class:`~lstm_fast.errors.FrameworkUnavailable` saying what is missing.

One module per framework (:mod:`.torch`, :mod:`.onnxruntime`, :mod:`.keras`), each defining a
:class:`Peer` subclass named by its module's ``PEER``; :data:`PEER_MODULES` lists them. Adding
a peer (say a quantized one) is one module and one line there. A peer may run in several
variants (torch with oneDNN off, ONNX Runtime with plain ``run``): ask for one with
``build_peer(name, spec, variant=...)`` or the name ``"torch[no-mkldnn]"``. Quantized variants
(a class's ``quantized_variants``, each a :class:`Quantization`) run the framework's own
quantization of the model: ``torch[int8]``, ``torch[int8-per-channel]``, ``torch[fp16]``
(``quantize_dynamic``; LSTM, GRU and Linear, no RNN), ``onnxruntime[int8]``,
``onnxruntime[int8-per-channel]`` (``quantize_dynamic``, DynamicQuantizeLSTM; LSTM only).

Masks. ``lengths`` (right-padded batches) map to packed sequences (torch), ``sequence_lens``
(ONNX) and a boolean mask (Keras). Those give the masked steps of a plain recurrent layer
PyTorch's output 0 (torch, ONNX) or Keras's repeated last output (Keras); the peers convert
to the spec's ``mask_semantics`` (a forward fill of the output, or Keras's
``zero_output_for_mask=True``), which is exact because the layers after the last recurrent one
act on each step alone.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..errors import FrameworkUnavailable
from ..spec import ModelSpec
from .base import Peer, PeerStream, Quantization

__all__ = [
    "FrameworkUnavailable",
    "PEER_MODULES",
    "Peer",
    "PeerStream",
    "Quantization",
    "available_peers",
    "build_peer",
    "peer_class",
    "split_variant",
]

#: Peer name -> the module (in this package) that defines it.
PEER_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "keras": "keras"}
PEER_NAMES = tuple(PEER_MODULES)
_ALIASES = {"ort": "onnxruntime", "pytorch": "torch"}


def available_peers() -> tuple[str, ...]:
    """The peer names :func:`build_peer` knows (installed or not).

    Returns
    -------
    tuple of str
        ``("torch", "onnxruntime", "keras")``.
    """
    return PEER_NAMES


def split_variant(name: str) -> tuple[str, str | None]:
    """``"torch[no-mkldnn]"`` -> ``("torch", "no-mkldnn")``; the name lower-cased and
    de-aliased (``"ort"`` -> ``"onnxruntime"``), the variant None when not given."""
    key, variant = name.strip().lower(), None
    if key.endswith("]") and "[" in key:
        key, variant = key[:-1].split("[", 1)
    return _ALIASES.get(key, key), variant


def peer_class(name: str) -> type[Peer]:
    """The :class:`Peer` subclass of the peer ``name`` (its module imported; the framework
    itself is imported only when the peer is built).

    Raises
    ------
    ValueError
        For an unknown name.
    """
    key, _ = split_variant(name)
    if key not in PEER_MODULES:
        raise ValueError(f"unknown peer {name!r}; expected one of {', '.join(PEER_NAMES)}")
    return importlib.import_module(f"{__name__}.{PEER_MODULES[key]}").PEER


def build_peer(name: str, spec: ModelSpec, *, threads: int = 1,
               variant: str | None = None) -> Peer:
    """Rebuild ``spec`` in the framework ``name``.

    Parameters
    ----------
    name : {"torch", "onnxruntime", "keras"}
        The framework (``"ort"`` is accepted for ``"onnxruntime"``), optionally with a variant
        in brackets (``"torch[no-mkldnn]"``).
    spec : ModelSpec
        The model.
    threads : int
        Intra-op threads for the framework (``torch.set_num_threads`` for torch and for Keras
        on the torch backend, ``intra_op_num_threads`` for ONNX Runtime).
    variant : str, optional
        One of the peer class's ``variants`` (default: its first) or ``quantized_variants``.

    Returns
    -------
    Peer

    Raises
    ------
    FrameworkUnavailable
        When the framework is not installed or cannot express the spec; the message says why.
    ValueError
        For an unknown ``name`` or variant, or a bad ``threads``.
    """
    cls = peer_class(name)
    variant = variant or split_variant(name)[1]
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return cls(spec, int(threads), variant)
