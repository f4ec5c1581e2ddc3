"""The Keras peer: the spec as Keras 3 layers (Embedding, Masking, LSTM/GRU/SimpleRNN,
Bidirectional, Dense). Lengths become a boolean mask; streams use stateful layers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..spec import (
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LSTMLayerSpec,
    MaskingSpec,
    ModelSpec,
    SimpleRNNLayerSpec,
)
from .base import FrameworkUnavailable, Peer, PeerStream, _as_input, _gate_blocks

__all__ = ["KerasPeer"]


def _keras_activation(keras: Any, name: str) -> Any:
    if name == "hard_sigmoid_keras2":  # Keras 1/2's hard_sigmoid; Keras 3's is x/6 + 0.5
        def hard_sigmoid_keras2(v: Any) -> Any:
            return keras.ops.clip(v * 0.2 + 0.5, 0.0, 1.0)
        return hard_sigmoid_keras2
    return name  # every other spec activation is a Keras 3 name with the same meaning


def _keras_cell_weights(cell: CellSpec) -> list[np.ndarray]:
    """The cell's weights in Keras layout: kernel (I, G*u), recurrent (u, G*u)[, bias]."""
    if isinstance(cell, GRULayerSpec):
        order = (1, 0, 2)  # r, z, n -> z, r, h
        w = [_gate_blocks(cell.w_ih, order).T, _gate_blocks(cell.w_hh, order).T]
        if cell.b_ih is None and cell.b_hh is None:
            return w
        zeros = np.zeros(cell.w_ih.shape[0], dtype=np.float32)
        b_in = _gate_blocks(zeros if cell.b_ih is None else cell.b_ih, order)
        b_rec = _gate_blocks(zeros if cell.b_hh is None else cell.b_hh, order)
        if cell.reset_after:
            return [*w, np.stack([b_in, b_rec])]
        return [*w, b_in + b_rec]  # reset-before: Keras's single bias holds both
    w = [np.asarray(cell.w_ih).T, np.asarray(cell.w_hh).T]  # LSTM blocks i,f,c,o = i,f,g,o
    return w if cell.bias is None else [*w, np.asarray(cell.bias)]


def _keras_cell_layer(keras: Any, cell: CellSpec, *, zero_masked: bool, stateful: bool,
                      go_backwards: bool) -> Any:
    # zero_output_for_mask on a last-step layer would also zero its last output
    zero_masked = zero_masked and not cell.return_last
    common = dict(activation=_keras_activation(keras, cell.activation),
                  return_sequences=not cell.return_last, go_backwards=go_backwards,
                  stateful=stateful, zero_output_for_mask=zero_masked,
                  use_bias=len(_keras_cell_weights(cell)) == 3)
    if isinstance(cell, LSTMLayerSpec):
        if cell.w_hr is not None:
            raise FrameworkUnavailable("keras: keras.layers.LSTM has no projection "
                                       "(proj_size / w_hr)")
        return keras.layers.LSTM(
            cell.hidden_size, unit_forget_bias=False,
            recurrent_activation=_keras_activation(keras, cell.recurrent_activation), **common)
    if isinstance(cell, GRULayerSpec):
        return keras.layers.GRU(
            cell.hidden_size, reset_after=cell.reset_after,
            recurrent_activation=_keras_activation(keras, cell.recurrent_activation), **common)
    return keras.layers.SimpleRNN(cell.hidden_size, **common)


def _keras_layers(keras: Any, spec: ModelSpec, batch: int | None) -> list[Any]:
    """One built Keras layer per spec layer, holding its weights (stateful with a batch)."""
    stateful = batch is not None
    zero_masked = spec.mask_semantics == "torch"
    out = []
    for L in spec.layers:
        if isinstance(L, EmbeddingSpec):
            layer = keras.layers.Embedding(L.vocab_size, L.output_size, mask_zero=L.mask_zero)
            layer.build((batch, None))
            layer.set_weights([np.asarray(L.weight)])
        elif isinstance(L, MaskingSpec):
            layer = keras.layers.Masking(mask_value=L.mask_value)
        elif isinstance(L, DenseSpec):
            layer = keras.layers.Dense(L.output_size, use_bias=L.bias is not None,
                                       activation=_keras_activation(keras, L.activation))
            layer.build((batch, L.input_size))
            layer.set_weights([np.asarray(L.weight).T]
                              + ([] if L.bias is None else [np.asarray(L.bias)]))
        elif isinstance(L, BidirectionalSpec):
            inner = _keras_cell_layer(keras, L.forward, zero_masked=zero_masked,
                                      stateful=False, go_backwards=False)
            layer = keras.layers.Bidirectional(inner, merge_mode=L.merge_mode)
            layer.build((batch, None, L.input_size))
            layer.set_weights(_keras_cell_weights(L.forward) + _keras_cell_weights(L.backward))
        elif isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec)):
            layer = _keras_cell_layer(keras, L, zero_masked=zero_masked, stateful=stateful,
                                      go_backwards=L.go_backwards)
            layer.build((batch, None, L.input_size))
            layer.set_weights(_keras_cell_weights(L))
        else:
            raise FrameworkUnavailable(f"keras: no equivalent of a {L.kind} layer")
        out.append(layer)
    return out


class KerasPeer(Peer):
    """Keras 3 layers holding the spec's weights (on the torch backend unless
    ``KERAS_BACKEND`` says otherwise)."""

    name = "keras"

    def __init__(self, spec: ModelSpec, threads: int, variant: str | None = None) -> None:
        super().__init__(spec, threads, variant)
        os.environ.setdefault("KERAS_BACKEND", "torch")
        try:
            import keras
        except Exception as e:  # noqa: BLE001 - e.g. a backend whose package is missing
            raise FrameworkUnavailable(f"keras cannot be imported with backend "
                                       f"{os.environ.get('KERAS_BACKEND')!r} ({e})") from None
        self._keras = keras
        self.backend = keras.backend.backend()
        self.version = f"{keras.__version__} ({self.backend} backend)"
        self._torch: Any = None
        if self.backend == "torch":
            import torch

            self._torch = torch
            torch.set_num_threads(threads)
        self._layers = _keras_layers(keras, spec, None)

    def _no_grad(self) -> Any:
        import contextlib

        return self._torch.no_grad() if self._torch is not None else contextlib.nullcontext()

    def _head_mask(self, x: np.ndarray) -> np.ndarray | None:
        head = self.spec.layers[0]
        if isinstance(head, MaskingSpec):
            return np.any(x != np.float32(head.mask_value), axis=-1)
        if isinstance(head, EmbeddingSpec) and head.mask_zero:
            return x != 0
        return None

    def _forward(self, layers: list[Any], x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Run the layers; with ``mask`` (B, T) it is given to every recurrent layer."""
        keras = self._keras
        ops = keras.ops
        h = ops.convert_to_tensor(x)
        m = None if mask is None else ops.convert_to_tensor(mask)
        with self._no_grad():
            for L, layer in zip(self.spec.layers, layers, strict=True):
                if m is not None and L.kind in ("lstm", "gru", "rnn", "bidirectional"):
                    h = layer(h, mask=m)
                    if L.return_last:
                        m = None
                else:
                    h = layer(h)
            if self._torch is not None and isinstance(h, self._torch.Tensor):
                return h.detach().numpy()  # no copy (convert_to_numpy copies, and warns)
            return ops.convert_to_numpy(h)

    packs_lengths = False  # Keras masks follow the spec's own semantics

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        mask = None
        if lens is not None:
            mask = np.arange(x.shape[1])[None, :] < lens[:, None]
            head = self._head_mask(x)
            if head is not None:
                mask &= head
        return self._forward(self._layers, x, mask)

    def stream(self, batch: int) -> PeerStream:
        return _KerasStream(self, self._check_streamable(batch))


class _KerasStream(PeerStream):
    def __init__(self, peer: KerasPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        self._layers = _keras_layers(peer._keras, peer.spec, batch)

    def step(self, x_t: np.ndarray) -> np.ndarray:
        x_t = _as_input(self._peer.spec, x_t, 2)
        y = self.run(x_t[:, None])
        return y[:, 0] if y.ndim == 3 else y

    def run(self, chunk: np.ndarray) -> np.ndarray:
        chunk = _as_input(self._peer.spec, chunk)
        if chunk.shape[0] != self.batch:
            raise ValueError(f"this stream has batch {self.batch}, got {chunk.shape[0]} rows")
        return self._peer._forward(self._layers, chunk, self._peer._head_mask(chunk))


PEER = KerasPeer
