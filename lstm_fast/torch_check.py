"""The torch side of ``lstm-fast convert``'s check and of ``lstm-fast verify``.

A PyTorch state dict has no ``forward``, so the reference is built from the conversion *plan*
(:mod:`lstm_fast.converters.torch_plan`: which source module does what, in which order), not
from the converted weights: each step becomes the torch module it names (``nn.LSTM``,
``nn.LSTMCell``, ``nn.Embedding``, ``nn.BatchNorm1d``, ``nn.Linear``, ``nn.Conv1d``), loaded
with ``load_state_dict(strict=True)`` from the source file's own tensors under their own key
names. A wrong gate order, a transposed matrix, a lost bias or a model file converted from
another checkpoint therefore shows up as a difference.

The file is read with lstm_fast's own reader (no pickle code runs); torch only computes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .converters.torch import plan_from_state_dict, read_checkpoint
from .converters.torch_plan import Plan, Step
from .errors import LstmFastError
from .spec import LAYER_KINDS

__all__ = ["TorchOptions", "torch_reference"]

#: Keyword arguments of :func:`lstm_fast.converters.torch.spec_from_torch_file`.
TorchOptions = Mapping[str, Any]


def _own(sd: Mapping[str, np.ndarray], module: str, torch: Any) -> dict[str, Any]:
    """The tensors of ``module`` under their names inside it (the root: all of its leaves)."""
    cut = len(module) + 1 if module else 0
    return {k[cut:]: torch.from_numpy(np.array(v)) for k, v in sd.items()
            if (k.startswith(module + ".") if module else "." not in k)}


def _load(mod: Any, tensors: dict[str, Any], what: str) -> Any:
    missing, unexpected = mod.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "num_batches_tracked"]
    if missing or unexpected:
        raise LstmFastError(f"{what}: the source tensors do not fit the inferred module "
                            f"(missing {missing}, unexpected {unexpected})")
    return mod.eval()


def _module(step: Step, sd: Mapping[str, np.ndarray], torch: Any) -> Any:
    nn = torch.nn
    own = _own(sd, step.module, torch)
    what = f"module {step.module or '<root>'!r}"
    if step.op == "embedding":
        w = own["weight"]
        return _load(nn.Embedding(w.shape[0], w.shape[1]), own, what)
    if step.op == "batchnorm":
        n = own["running_mean"].shape[0]
        mod = nn.BatchNorm1d(n, eps=step.opts["eps"], affine="weight" in own)
        return _load(mod, own, what)
    if step.op == "linear":
        w = own["weight"]
        if step.opts.get("conv"):
            mod = nn.Conv1d(w.shape[1], w.shape[0], 1, bias="bias" in own)
        else:
            mod = nn.Linear(w.shape[1], w.shape[0], bias="bias" in own)
        return _load(mod, own, what)
    typ, bias = step.opts["type"], step.opts["bias"]
    if step.op == "cell":
        w_ih, w_hh = own["weight_ih"], own["weight_hh"]
        kwargs = {"nonlinearity": step.opts["nonlinearity"]} if typ == "RNNCell" else {}
        mod = getattr(nn, typ)(w_ih.shape[1], w_hh.shape[1], bias=bias, **kwargs)
        return _load(mod, own, what)
    w_ih, w_hh = own["weight_ih_l0"], own["weight_hh_l0"]
    gates = LAYER_KINDS[typ.lower()].gates  # type: ignore[attr-defined]
    kwargs = {"bias": bias, "batch_first": True, "num_layers": step.opts["num_layers"],
              "bidirectional": step.opts["bidirectional"]}
    if typ == "RNN":
        kwargs["nonlinearity"] = step.opts["nonlinearity"]
    if typ == "LSTM" and step.opts["proj_size"]:
        kwargs["proj_size"] = step.opts["proj_size"]
    mod = getattr(nn, typ)(w_ih.shape[1], w_hh.shape[0] // gates, **kwargs)
    return _load(mod, own, what)


def _channels_last(mod: Any, h: Any) -> Any:
    """Apply a module that wants (B, C, T) (BatchNorm1d, Conv1d) to (B, T, C) or (B, C)."""
    if h.dim() == 3:
        return mod(h.transpose(1, 2)).transpose(1, 2)
    if type(mod).__name__ == "Conv1d":
        return mod(h.unsqueeze(-1)).squeeze(-1)
    return mod(h)


def _run_cell(cell: Any, h: Any, lengths: Any, torch: Any) -> tuple[Any, Any]:
    """Step ``cell`` over (B, T, I); padded steps keep the state and output 0."""
    B, T = h.shape[0], h.shape[1]
    state: Any = None
    outs = []
    for t in range(T):
        new = cell(h[:, t], state)
        if lengths is not None:
            keep = (t < lengths).unsqueeze(1)
            if state is None:
                zero = torch.zeros_like(new[0] if isinstance(new, tuple) else new)
                state = (zero, zero) if isinstance(new, tuple) else zero
            if isinstance(new, tuple):
                new = tuple(torch.where(keep, n, s) for n, s in zip(new, state, strict=True))
            else:
                new = torch.where(keep, new, state)
        state = new
        out = state[0] if isinstance(state, tuple) else state
        outs.append(out if lengths is None else out * keep)
    last = state[0] if isinstance(state, tuple) else state
    return (torch.stack(outs, 1) if outs else h.new_zeros(B, 0, 0)), last


def _run_rnn(mod: Any, h: Any, lengths: Any, torch: Any) -> tuple[Any, Any]:
    """Output sequence and the ``fc(h_n)`` input of a head on the last step."""
    T = h.shape[1]
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True,
                                                         enforce_sorted=False)
        out, state = mod(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    else:
        out, state = mod(h)
    h_n = state[0] if isinstance(state, tuple) else state
    last = torch.cat([h_n[-2], h_n[-1]], 1) if mod.bidirectional else h_n[-1]
    return out, last


def _forward(plan: Plan, mods: list[Any], x: Any, lengths: Any, torch: Any) -> Any:
    F = torch.nn.functional
    last_rec = max(i for i, s in enumerate(plan.steps) if s.op in ("rnn", "cell"))
    h = x
    for i, (step, mod) in enumerate(zip(plan.steps, mods, strict=True)):
        if step.op in ("rnn", "cell"):
            run = _run_rnn if step.op == "rnn" else _run_cell
            out, last = run(mod, h, lengths, torch)
            h = last if plan.head == "last" and i == last_rec else out
        elif step.op == "embedding":
            h = mod(h)
        elif step.op in ("batchnorm", "linear"):
            h = _channels_last(mod, h) if step.op == "batchnorm" or step.opts.get("conv") \
                else mod(h)
        elif step.op == "activation":
            h = _activation(step.opts["name"], h, F, torch)
        elif step.op == "normalize":
            h = F.normalize(h, dim=-1, eps=step.opts["eps"])
    return h


def _activation(name: str, h: Any, F: Any, torch: Any) -> Any:
    special = {
        "linear": lambda v: v, "softmax": lambda v: F.softmax(v, -1),
        "log_softmax": lambda v: F.log_softmax(v, -1), "hard_sigmoid": F.hardsigmoid,
        "hard_sigmoid_keras2": lambda v: torch.clamp(0.2 * v + 0.5, 0, 1),
        "exponential": torch.exp, "gelu": F.gelu,
    }
    if name in special:
        return special[name](h)
    return getattr(F, name, getattr(torch, name, None))(h)


def torch_reference(path: str | os.PathLike[str], options: TorchOptions, x: np.ndarray,
                    lengths: np.ndarray | None = None) -> np.ndarray:
    """The source checkpoint's output for ``x``, computed by torch modules loaded with the
    file's own tensors (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The PyTorch checkpoint (any file :func:`~.converters.torch_file.read_state_dict`
        reads).
    options : mapping
        The conversion options (``prefix``, ``key``, ``ignore``, ``head``, ``activations``,
        ``nonlinearity``, ``head_norm``), as ``lstm-fast convert`` recorded them.
    x : ndarray
        (B, T, I) floats or (B, T) ids.
    lengths : ndarray, optional
        Valid steps per sequence (packed sequences).

    Returns
    -------
    ndarray (float64)

    Raises
    ------
    ImportError
        torch is not installed.
    LstmFastError
        The file cannot be read or does not fit the inferred modules.
    """
    import torch

    opts = dict(options)
    sd = read_checkpoint(path, key=opts.pop("key", None))
    sd, plan = plan_from_state_dict(sd, **opts)
    mods = [None if s.op in ("activation", "normalize") else _module(s, sd, torch)
            for s in plan.steps]
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if not np.issubdtype(x.dtype, np.integer):
        xt = xt.float()
    lt = None if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    with torch.inference_mode():
        y = _forward(plan, mods, xt, lt, torch)
    return y.double().numpy()
