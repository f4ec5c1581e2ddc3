"""The torch peer: the spec as ``torch.nn`` modules (Embedding, LSTM/GRU/RNN, Linear).

Lengths run as packed sequences; streams carry each recurrent module's (h, c) between calls.

Quantized variants (``torch[int8]``, ``torch[int8-per-channel]``, ``torch[fp16]``) pass the
modules through ``torch.ao.quantization.quantize_dynamic`` (qint8 with one scale per weight
matrix, qint8 with one scale per output row, or float16 weights): it swaps the LSTM, GRU and
Linear modules for their dynamically quantized versions (activations quantized on the fly at
each call). It has no quantized ``nn.RNN`` nor an LSTM with a projection: those models are
unavailable in these variants.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..spec import (
    AffineSpec,
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    NormalizeSpec,
    SimpleRNNLayerSpec,
)
from .base import FrameworkUnavailable, Peer, PeerStream, Quantization, _as_input, _cells_of

__all__ = ["TorchPeer"]

def _torch_dense_activation(torch: Any, name: str) -> Any:
    F = torch.nn.functional
    table = {
        "linear": None, "relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "hard_sigmoid": F.hardsigmoid,
        "hard_sigmoid_keras2": lambda v: torch.clamp(0.2 * v + 0.5, 0.0, 1.0),
        "softsign": F.softsign, "softplus": F.softplus, "elu": F.elu, "selu": F.selu,
        "silu": F.silu, "gelu": F.gelu, "exponential": torch.exp,
        "softmax": lambda v: torch.softmax(v, dim=-1),
        "log_softmax": lambda v: torch.log_softmax(v, dim=-1),
    }
    if name not in table:
        raise FrameworkUnavailable(f"torch: no Dense activation {name!r}")
    return table[name]


def _torch_rnn_module(torch: Any, L: LayerSpec) -> Any:
    """One torch recurrent module (bidirectional when ``L`` is) holding the spec's weights."""
    nn = torch.nn
    cells = _cells_of(L)
    bi = len(cells) == 2
    f = cells[0]
    ract = getattr(f, "recurrent_activation", "sigmoid")
    if f.kind == "rnn":
        if f.activation not in ("tanh", "relu"):
            raise FrameworkUnavailable(f"torch: nn.RNN has no activation {f.activation!r} "
                                       "(only tanh and relu)")
    elif f.activation != "tanh" or ract != "sigmoid":
        raise FrameworkUnavailable(
            f"torch: nn.{f.kind.upper()} only has activation tanh and recurrent_activation "
            f"sigmoid, not {f.activation!r}/{ract!r}")
    if isinstance(f, GRULayerSpec) and not f.reset_after:
        raise FrameworkUnavailable("torch: nn.GRU only has reset_after=True (a GRU with "
                                   "reset_after=False is not expressible)")
    size, hidden = f.input_size, f.hidden_size
    if isinstance(f, LSTMLayerSpec):
        proj = f.output_size if f.w_hr is not None else 0
        m = nn.LSTM(size, hidden, batch_first=True, bidirectional=bi, proj_size=proj)
    elif isinstance(f, GRULayerSpec):
        m = nn.GRU(size, hidden, batch_first=True, bidirectional=bi)
    else:
        m = nn.RNN(size, hidden, batch_first=True, bidirectional=bi, nonlinearity=f.activation)
    for cell, sfx in zip(cells, ("_l0", "_l0_reverse"), strict=False):
        rows = cell.w_ih.shape[0]
        zeros = np.zeros(rows, dtype=np.float32)
        if isinstance(cell, GRULayerSpec):
            b_ih, b_hh = cell.b_ih, cell.b_hh
        else:
            b_ih, b_hh = cell.bias, None
        named = {"weight_ih": cell.w_ih, "weight_hh": cell.w_hh,
                 "bias_ih": zeros if b_ih is None else b_ih,
                 "bias_hh": zeros if b_hh is None else b_hh}
        if isinstance(cell, LSTMLayerSpec) and cell.w_hr is not None:
            named["weight_hr"] = cell.w_hr
        for key, value in named.items():
            getattr(m, key + sfx).data.copy_(torch.tensor(np.asarray(value, np.float32)))
    m.requires_grad_(False)
    m.eval()
    return m


def _torch_merge(torch: Any, mode: str, a: Any, b: Any) -> Any:
    if mode == "concat":
        return torch.cat([a, b], dim=-1)
    if mode == "sum":
        return a + b
    if mode == "ave":
        return (a + b) * 0.5
    return a * b


def _quantize_dynamic(torch: Any, stages: list[tuple[LayerSpec, Any, Any]],
                      q: Quantization, label: str) -> list[tuple[LayerSpec, Any, Any]]:
    """``stages`` with their LSTM, GRU and Linear modules swapped by ``quantize_dynamic``.

    ``quantize_dynamic`` swaps only the *children* of the module it is given, so the modules
    go through it in an ``nn.Sequential``; every swapped module is checked to be the
    quantized class (torch leaves a module it cannot quantize as it was, silently).
    """
    nn = torch.nn
    aq = torch.ao.quantization
    dynamic = torch.ao.nn.quantized.dynamic
    expected = {nn.LSTM: dynamic.LSTM, nn.GRU: dynamic.GRU, nn.Linear: dynamic.Linear}
    for _, mod, _ in stages:
        if type(mod) is nn.RNN:
            raise FrameworkUnavailable(
                f"{label}: quantize_dynamic has no quantized nn.RNN (it "
                "quantizes LSTM, GRU and Linear)")
        if isinstance(mod, nn.LSTM) and mod.proj_size:
            raise FrameworkUnavailable(
                f"{label}: the dynamically quantized LSTM has no projection "
                "(proj_size)")
    if q.dtype == "fp16":
        qconfig = aq.float16_dynamic_qconfig
    else:
        qconfig = aq.per_channel_dynamic_qconfig if q.per_row else aq.default_dynamic_qconfig
    indices = [k for k, (_, mod, _) in enumerate(stages) if type(mod) in expected]
    container = nn.Sequential(*(stages[k][1] for k in indices))
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        swapped = aq.quantize_dynamic(container, {t: qconfig for t in expected})
    out = list(stages)
    for j, k in enumerate(indices):
        L, mod, act = stages[k]
        new = swapped[j]
        if type(new) is not expected[type(mod)]:
            raise FrameworkUnavailable(
                f"{label}: quantize_dynamic left a {type(mod).__name__} as "
                f"{type(new).__module__}.{type(new).__name__}, not quantized")
        out[k] = (L, new, act)
    return out


class TorchPeer(Peer):
    """``torch.nn`` modules holding the spec's weights. Variants: ``"default"``, and
    ``"no-mkldnn"`` (oneDNN off, torch's own RNN kernels), the faster one for small layers.
    Quantized variants (``torch.ao.quantization.quantize_dynamic`` on the LSTM, GRU and Linear
    modules): ``"int8"`` (qint8 weights, one scale per matrix), ``"int8-per-channel"`` (qint8,
    one scale per output row) and ``"fp16"`` (float16 weights)."""

    name = "torch"
    variants = ("default", "no-mkldnn")
    quantized_variants = {"int8": Quantization("int8"),
                          "int8-per-channel": Quantization("int8", per_row=True),
                          "fp16": Quantization("fp16")}

    def __init__(self, spec: ModelSpec, threads: int, variant: str | None = None) -> None:
        super().__init__(spec, threads, variant)
        self._inside = False
        try:
            import torch
        except ImportError as e:
            raise FrameworkUnavailable(f"torch is not installed ({e})") from None
        if spec.uses_mask:
            raise FrameworkUnavailable(
                "torch has no equivalent of Keras masking (Masking or "
                "Embedding(mask_zero=True)): torch only masks right padding, via lengths")
        self._torch = torch
        self.version = str(torch.__version__)
        torch.set_num_threads(threads)
        nn = torch.nn
        self._stages: list[tuple[LayerSpec, Any, Any]] = []
        for L in spec.layers:
            if isinstance(L, EmbeddingSpec):
                mod = nn.Embedding.from_pretrained(torch.tensor(np.asarray(L.weight)),
                                                   freeze=True)
                self._stages.append((L, mod, None))
            elif isinstance(L, DenseSpec):
                lin = nn.Linear(L.input_size, L.output_size, bias=L.bias is not None)
                lin.weight.data.copy_(torch.tensor(np.asarray(L.weight)))
                if L.bias is not None:
                    lin.bias.data.copy_(torch.tensor(np.asarray(L.bias)))
                lin.requires_grad_(False)
                self._stages.append((L, lin, _torch_dense_activation(torch, L.activation)))
            elif isinstance(L, (LSTMLayerSpec, GRULayerSpec, SimpleRNNLayerSpec,
                                BidirectionalSpec)):
                self._stages.append((L, _torch_rnn_module(torch, L), None))
            elif isinstance(L, AffineSpec):
                arrays = tuple(None if a is None else torch.tensor(np.asarray(a))
                               for a in (L.scale, L.shift))
                self._stages.append((L, arrays, _torch_dense_activation(torch, L.activation)))
            elif isinstance(L, NormalizeSpec):
                self._stages.append((L, None, None))
            else:
                raise FrameworkUnavailable(f"torch: no equivalent of a {L.kind} layer")
        if self.quantization is not None:
            self._stages = _quantize_dynamic(torch, self._stages, self.quantization,
                                             self.label)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """``torch.inference_mode()``, with oneDNN off for the ``"no-mkldnn"`` variant.

        (``torch.backends.mkldnn.flags()`` is not used: it also resets the TF32 flag, which
        makes torch warn on CPU-only builds.)
        """
        if self._inside:
            yield
            return
        mkldnn = self._torch.backends.mkldnn
        previous = bool(mkldnn.enabled)
        if self.variant == "no-mkldnn":
            mkldnn.enabled = False
        self._inside = True
        try:
            with self._torch.inference_mode():
                yield
        finally:
            self._inside = False
            mkldnn.enabled = previous

    def _tensor(self, x: np.ndarray) -> Any:
        if not x.flags.writeable:  # torch.from_numpy warns on read-only arrays
            x = x.copy()
        return self._torch.from_numpy(x)

    def _forward(self, h: Any, lengths: Any, states: list[Any] | None) -> Any:
        """Run the stages; ``states`` (one per recurrent layer) is read and updated."""
        T = h.shape[1]
        k = 0
        for L, mod, act in self._stages:
            if isinstance(L, EmbeddingSpec):
                h = mod(h)
            elif isinstance(L, DenseSpec):
                h = mod(h)
                if act is not None:
                    h = act(h)
            elif isinstance(L, AffineSpec):
                h = _affine(h, *mod, act)
            elif isinstance(L, NormalizeSpec):
                h = self._torch.nn.functional.normalize(h, dim=-1, eps=L.epsilon)
            else:
                state = states[k] if states is not None else None
                h, new_state = self._recurrent(L, mod, h, lengths, state, T)
                if states is not None:
                    states[k] = new_state
                k += 1
        return h

    def _recurrent(self, L: Any, mod: Any, h: Any, lengths: Any, state: Any,
                   T: int) -> tuple[Any, Any]:
        torch = self._torch
        if getattr(L, "go_backwards", False):
            h = torch.flip(h, dims=(1,))
        if lengths is not None:
            rnn = torch.nn.utils.rnn
            packed = rnn.pack_padded_sequence(h, lengths, batch_first=True,
                                              enforce_sorted=False)
            out, new_state = mod(packed, state)
            out = rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
        else:
            out, new_state = mod(h, state)
        bi = isinstance(L, BidirectionalSpec)
        if not L.return_last:
            if bi and L.merge_mode != "concat":
                half = out.shape[-1] // 2
                out = _torch_merge(torch, L.merge_mode, out[..., :half], out[..., half:])
            return out, new_state
        h_n = new_state[0] if isinstance(new_state, tuple) else new_state
        if bi:
            return _torch_merge(torch, L.merge_mode, h_n[-2], h_n[-1]), new_state
        return h_n[-1], new_state

    def _predict(self, x: np.ndarray, lens: np.ndarray | None) -> np.ndarray:
        torch = self._torch
        if lens is not None and lens.size and lens.min() < 1:
            raise FrameworkUnavailable("torch: packed sequences need every length >= 1")
        lengths = None if lens is None else torch.from_numpy(lens)
        if self._inside:  # in a session already: spare the context's cost per call
            return self._forward(self._tensor(x), lengths, None).numpy()
        with self.session():
            return self._forward(self._tensor(x), lengths, None).numpy()

    def stream(self, batch: int) -> PeerStream:
        return _TorchStream(self, self._check_streamable(batch))


def _affine(h: Any, scale: Any, shift: Any, act: Any) -> Any:
    h = h if scale is None else h * scale
    h = h if shift is None else h + shift
    return h if act is None else act(h)


class _TorchStream(PeerStream):
    """The stages run on batch-first chunks, each recurrent module's state carried.

    A step of the usual shape ((B, I) floats or (B,) ids) is copied into a preallocated
    array that a tensor shares (``torch.from_numpy`` once), and the output tensor's own
    memory is returned as an array, so no conversion is paid per call."""

    def __init__(self, peer: TorchPeer, batch: int) -> None:
        self.batch = batch
        self._peer = peer
        torch = peer._torch
        self._states: list[Any] = []
        with torch.inference_mode():
            for L in peer.spec.recurrent_layers:
                h = torch.zeros(1, batch, L.output_size)
                if isinstance(L, LSTMLayerSpec):
                    self._states.append((h, torch.zeros(1, batch, L.hidden_size)))
                else:
                    self._states.append(h)
        self._fns = self._stage_functions()
        spec = peer.spec
        if spec.takes_ids:
            self._x = np.zeros((batch, 1), np.int64)
        else:
            self._x = np.zeros((batch, 1, spec.input_size), np.float32)
        self._x_step = self._x[:, 0]  # (B, I) or (B,): where a step's input is copied
        self._x_tensor = torch.from_numpy(self._x)  # shares self._x's memory

    def _stage_functions(self) -> list[Any]:
        """One function per stage, tensor -> tensor (the recurrent ones carry the state)."""
        peer, torch = self._peer, self._peer._torch
        fns: list[Any] = []
        k = 0
        for L, mod, act in peer._stages:
            if isinstance(L, EmbeddingSpec):
                fns.append(mod)
            elif isinstance(L, DenseSpec):
                fns.append(mod if act is None else (lambda h, m=mod, a=act: a(m(h))))
            elif isinstance(L, AffineSpec):
                scale, shift = mod
                fns.append(lambda h, sc=scale, sh=shift, a=act: _affine(h, sc, sh, a))
            elif isinstance(L, NormalizeSpec):
                fns.append(lambda h, eps=L.epsilon: torch.nn.functional.normalize(
                    h, dim=-1, eps=eps))
            else:
                fns.append(self._recurrent_function(L, mod, k))
                k += 1
        if all(isinstance(L, AffineSpec) for L, _, _ in peer._stages):
            fns.append(torch.clone)  # the output must not be the input buffer
        return fns

    def _recurrent_function(self, L: LayerSpec, module: Any, k: int) -> Any:
        states = self._states
        mod = module.forward  # the module has no hooks: spare __call__'s dispatch
        if L.return_last:
            def run(h: Any) -> Any:
                _, state = mod(h, states[k])
                states[k] = state
                return (state[0] if isinstance(state, tuple) else state)[-1]
        else:
            def run(h: Any) -> Any:
                out, states[k] = mod(h, states[k])
                return out
        return run

    def _forward(self, h: Any) -> np.ndarray:
        for f in self._fns:
            h = f(h)
        return h.numpy()  # the fresh output's own memory

    def step(self, x_t: np.ndarray) -> np.ndarray:
        peer = self._peer
        if (type(x_t) is not np.ndarray or x_t.shape != self._x_step.shape
                or x_t.dtype != self._x.dtype):
            x_t = _as_input(peer.spec, x_t, 2)
            if x_t.shape != self._x_step.shape:  # another batch: the module says what is wrong
                y = self._run(x_t[:, None])
                return y[:, 0] if y.ndim == 3 else y
        self._x_step[...] = x_t
        if peer._inside:  # in a session already: spare the context's cost per call
            y = self._forward(self._x_tensor)
        else:
            with peer.session():
                y = self._forward(self._x_tensor)
        return y.reshape(self.batch, -1)  # (B, 1, O) or (B, O) -> (B, O)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        peer = self._peer
        if peer._inside:
            return self._forward(peer._tensor(chunk))
        with peer.session():
            return self._forward(peer._tensor(chunk))

    def run(self, chunk: np.ndarray) -> np.ndarray:
        return self._run(_as_input(self._peer.spec, chunk))


PEER = TorchPeer
