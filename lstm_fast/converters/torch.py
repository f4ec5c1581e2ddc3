"""PyTorch -> :class:`~lstm_fast.spec.ModelSpec`.

Two entry points:

- :func:`spec_from_state_dict` / :func:`spec_from_torch_file` infer the architecture from a
  state dict's key names and shapes (no torch needed): an optional ``nn.Embedding``, one
  ``nn.LSTM`` (or several chained ones, ``prefix=[...]``), then a chain of ``nn.Linear``
  layers. A state dict does not say what ``forward`` does with them, so two choices are
  arguments: ``head`` (is the head applied at every step or to the last step only) and
  ``activations`` (what follows each Linear).
- :func:`from_torch` converts a live module: ``nn.LSTM`` or an ``nn.Sequential`` of supported
  modules (torch is imported lazily; lstm_fast never needs it otherwise).

The result always runs batch-first: ``predict`` takes (B, T, I) floats, or (B, T) integer ids
when the first layer is an Embedding, whatever ``batch_first`` the torch module had.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UnsupportedModelError, WeightsError
from ..spec import DENSE_ACTIVATIONS, DenseSpec, EmbeddingSpec, LayerSpec, LSTMLayerSpec, ModelSpec

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["from_torch", "spec_from_state_dict", "spec_from_torch_file"]

HEADS = ("sequence", "last")

_RNN_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_CELL_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh)$")


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """An array from a numpy array or a torch tensor (detached, on the CPU, f16/bf16 -> f32)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.float16", "torch.bfloat16"):
            t = t.float()
        return np.asarray(t.numpy())
    arr = np.asarray(value)
    if arr.dtype == object:
        raise WeightsError(f"state dict entry {name!r} is not an array")
    return arr


def _normalize(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected a state dict (mapping of name to array), got "
                        f"{type(sd).__name__}")
    out = {str(k): _to_numpy(v, str(k)) for k, v in sd.items()}
    while out:
        for wrapper in ("module.", "_orig_mod."):
            if all(k.startswith(wrapper) for k in out):
                out = {k[len(wrapper):]: v for k, v in out.items()}
                break
        else:
            break
    return out


def _module_of(prefix: str) -> str:
    """``"rnn."`` -> ``"rnn"``; ``""`` (a bare nn.LSTM state dict) -> ``"<root>"``."""
    return prefix[:-1] if prefix else "<root>"


def _recurrent_prefixes(sd: Mapping[str, np.ndarray]) -> list[str]:
    found: list[str] = []
    for k in sd:
        m = _RNN_KEY.match(k)
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return found


def _lstm_layers(sd: Mapping[str, np.ndarray], prefix: str, used: set[str]
                 ) -> list[LSTMLayerSpec]:
    """The LSTM layers of the nn.LSTM whose keys start with ``prefix`` (marks them used)."""
    where = _module_of(prefix)
    parsed = [m for k in sd if (m := _RNN_KEY.match(k)) and m.group(1) == prefix]
    if any(m.group(2) == "weight_hr" for m in parsed):
        raise UnsupportedModelError(f"module {where!r}: nn.LSTM with proj_size > 0 is not "
                                    f"supported yet")
    w_hh0 = sd.get(f"{prefix}weight_hh_l0")
    if w_hh0 is not None and w_hh0.ndim == 2 and w_hh0.shape[0] != 4 * w_hh0.shape[1]:
        rows, cols = w_hh0.shape
        kind = "nn.GRU" if rows == 3 * cols else "nn.RNN" if rows == cols else None
        if kind:
            raise UnsupportedModelError(f"module {where!r} is an {kind} ({prefix}weight_hh_l0 "
                                        f"is {tuple(w_hh0.shape)}); only nn.LSTM is supported "
                                        f"yet")
    if any(m.group(4) for m in parsed):
        raise UnsupportedModelError(f"module {where!r}: bidirectional=True recurrent layers "
                                    f"are not supported yet")
    layers = sorted({int(m.group(3)) for m in parsed})
    if layers != list(range(len(layers))):
        raise WeightsError(f"module {where!r}: layer indices {layers} are not 0..L-1")
    out = []
    for k in layers:
        w_ih_key, w_hh_key = f"{prefix}weight_ih_l{k}", f"{prefix}weight_hh_l{k}"
        if w_ih_key not in sd or w_hh_key not in sd:
            raise WeightsError(f"module {where!r}: layer {k} lacks {w_ih_key!r} or "
                               f"{w_hh_key!r}")
        w_ih, w_hh = sd[w_ih_key], sd[w_hh_key]
        if w_hh.ndim != 2 or w_ih.ndim != 2:
            raise WeightsError(f"module {where!r}: {w_hh_key} must be 2-D, got {w_hh.shape}")
        rows, cols = w_hh.shape
        if rows != 4 * cols:
            raise WeightsError(f"module {where!r}: {w_hh_key} has shape {tuple(w_hh.shape)}, "
                               f"expected (4H, H)")
        biases = [sd[b] for b in (f"{prefix}bias_ih_l{k}", f"{prefix}bias_hh_l{k}") if b in sd]
        bias = None
        if biases:
            total = np.zeros(rows, np.float64)
            for b in biases:
                if b.shape != (rows,):
                    raise WeightsError(f"module {where!r}: layer {k} bias must be ({rows},), "
                                       f"got {b.shape}")
                total += b.astype(np.float64)
            bias = total.astype(np.float32)
        try:
            out.append(LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=bias))
        except WeightsError as e:
            raise WeightsError(f"module {where!r} layer {k}: {e}") from None
        used.update(key for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                    if (key := f"{prefix}{name}_l{k}") in sd)
    return out


def _group_modules(keys: Sequence[str]) -> dict[str, list[str]]:
    """``module name -> parameter names`` in first-appearance order."""
    mods: dict[str, list[str]] = {}
    for k in keys:
        mod, _, leaf = k.rpartition(".")
        mods.setdefault(mod, []).append(leaf)
    return mods


def spec_from_state_dict(
    sd: Mapping[str, Any],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    source: str = "",
) -> ModelSpec:
    """Infer a :class:`ModelSpec` from a PyTorch state dict (no torch needed).

    Recognised modules: the ``nn.LSTM`` at ``prefix`` (keys ``{prefix}weight_ih_l{k}``,
    ``weight_hh_l{k}`` and optionally ``bias_ih_l{k}``/``bias_hh_l{k}``); an optional
    ``nn.Embedding`` before it (a module with only a 2-D ``weight`` whose column count is the
    LSTM's input size); then ``nn.Linear`` modules (``weight`` (out, in), optional ``bias``)
    chained in state-dict order, the first reading the LSTM's hidden size. Parameter-free
    modules (dropout, activations) leave no trace in a state dict: give the activations with
    ``activations``.

    Parameters
    ----------
    sd : mapping of str to array
        The state dict (numpy arrays or torch tensors). A ``module.`` prefix shared by every
        key (``nn.DataParallel``) is removed.
    prefix : str or sequence of str, optional
        The recurrent module to convert, e.g. ``"rnn"`` or ``"encoder.lstm."`` (the trailing
        dot is optional; ``""`` is a bare ``nn.LSTM``). Required when the state dict holds
        several recurrent modules. A sequence chains several ``nn.LSTM`` modules in that order
        (``lstm1`` feeding ``lstm2``).
    head : {"sequence", "last"}
        ``"sequence"``: the model outputs every step, (B, T, F), and the Linear head is applied
        at every step. ``"last"``: the last LSTM returns only its last valid step (``h_n[-1]``,
        or ``out[:, -1]`` without padding) and the head maps that, giving (B, F): the usual
        ``fc(h_n[-1])`` classifier.
    activations : sequence of str, optional
        One activation per Linear layer, from :data:`lstm_fast.spec.DENSE_ACTIVATIONS`
        (``"relu"``, ``"softmax"``, ...). Default: all ``"linear"``.
    source : str
        Recorded in the spec's metadata (e.g. the file name).

    Returns
    -------
    ModelSpec
        With ``mask_semantics="torch"`` (padded steps output 0, state carried, like packed
        sequences).

    Raises
    ------
    UnsupportedModelError
        No LSTM is found; several recurrent modules exist and ``prefix`` is missing (the
        message lists them); the module is a GRU/RNN, bidirectional or uses ``proj_size``
        (not supported yet); or some keys belong to no recognised module (listed).
    WeightsError
        Shapes are inconsistent.
    ValueError
        ``head`` or ``activations`` is invalid.
    """
    if head not in HEADS:
        raise ValueError(f"head must be 'sequence' or 'last', got {head!r}")
    sd = _normalize(sd)
    candidates = _recurrent_prefixes(sd)
    if not candidates:
        cells = sorted({m.group(1) for k in sd if (m := _CELL_KEY.match(k))})
        if cells:
            raise UnsupportedModelError(
                f"recurrent cells ({', '.join(_module_of(c) for c in cells)}) are not "
                f"supported: the loop around an nn.LSTMCell/GRUCell is user code; use nn.LSTM")
        shown = ", ".join(list(sd)[:12]) + (", ..." if len(sd) > 12 else "")
        raise UnsupportedModelError(f"no nn.LSTM weights (weight_ih_l0, ...) in the state "
                                    f"dict; its keys are: {shown or 'none'}")
    listed = ", ".join(repr(_module_of(c)) for c in candidates)
    if prefix is None:
        if len(candidates) > 1:
            raise UnsupportedModelError(
                f"the state dict holds several recurrent modules ({listed}); pass prefix= to "
                f"choose one, or a list of prefixes to chain them in order")
        prefixes = candidates
    else:
        wanted = [prefix] if isinstance(prefix, str) else list(prefix)
        if not wanted:
            raise ValueError("prefix must name at least one recurrent module")
        prefixes = []
        for p in wanted:
            p = str(p)
            if p and not p.endswith("."):
                p += "."
            if p not in candidates:
                raise UnsupportedModelError(f"no recurrent module {_module_of(p)!r} in the "
                                            f"state dict; found {listed}")
            prefixes.append(p)

    used: set[str] = set()
    rnn: list[LSTMLayerSpec] = []
    for p in prefixes:
        layers = _lstm_layers(sd, p, used)
        if rnn and layers[0].input_size != rnn[-1].hidden_size:
            raise WeightsError(f"module {_module_of(p)!r} reads inputs of size "
                               f"{layers[0].input_size} but the previous LSTM outputs "
                               f"{rnn[-1].hidden_size}; these modules do not chain")
        rnn += layers
    position = {k: n for n, k in enumerate(sd)}
    first_rnn = min(position[k] for k in used)
    modules = _group_modules([k for k in sd if k not in used])
    before = {m for m, leaves in modules.items()
              if position[f"{m}.{leaves[0]}" if m else leaves[0]] < first_rnn}

    def is_embedding(m: str) -> bool:
        leaves = modules[m]
        w = sd.get(f"{m}.weight")
        return (bool(m) and leaves == ["weight"] and w is not None and w.ndim == 2
                and w.shape[1] == rnn[0].input_size)

    embedding = None
    emb = [m for m in modules if m in before and is_embedding(m)]
    if len(emb) > 1:
        raise UnsupportedModelError(f"several modules could be the input Embedding: {emb}")
    if emb:
        embedding = emb[0]

    # Linear chain, in state-dict order, after the recurrent module(s).
    linears: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    width = rnn[-1].hidden_size
    for m, leaves in modules.items():
        if m == embedding or m in before or not m:
            continue
        w, b = sd.get(f"{m}.weight"), sd.get(f"{m}.bias")
        if (sorted(leaves) in (["weight"], ["bias", "weight"]) and w is not None
                and w.ndim == 2 and w.shape[1] == width
                and (b is None or b.shape == (w.shape[0],))):
            linears.append((m, w, b))
            width = int(w.shape[0])
        else:
            break
    done = {m for m, _, _ in linears} | ({embedding} if embedding else set())
    if embedding is None:  # an Embedding registered after the LSTM
        late = [m for m in modules if m not in done and is_embedding(m)]
        if len(late) == 1:
            embedding = late[0]
            done.add(embedding)
    leftover = [f"{m}.{leaf}" if m else leaf for m, leaves in modules.items() if m not in done
                for leaf in leaves]
    if leftover:
        shown = ", ".join(leftover[:16]) + (", ..." if len(leftover) > 16 else "")
        raise UnsupportedModelError(
            f"state dict keys not used by the inferred model (Embedding -> LSTM "
            f"{', '.join(repr(_module_of(p)) for p in prefixes)} -> Linear chain): {shown}. "
            f"Only nn.Embedding, nn.LSTM and a chain of nn.Linear are recognised; filter the "
            f"state dict, or convert a live nn.Sequential with from_torch")

    acts = list(activations) if activations is not None else ["linear"] * len(linears)
    if isinstance(activations, str) or len(acts) != len(linears):
        raise ValueError(f"activations must list one activation per Linear layer "
                         f"({len(linears)}: {[m for m, _, _ in linears]}), got {activations!r}")
    for a in acts:
        if a not in DENSE_ACTIVATIONS:
            raise ValueError(f"activation {a!r} is not supported; expected one of "
                             f"{', '.join(DENSE_ACTIVATIONS)}")

    if head == "last":
        last = rnn[-1]
        rnn[-1] = LSTMLayerSpec(w_ih=last.w_ih, w_hh=last.w_hh, bias=last.bias,
                                return_sequences=False)
    spec_layers: list[LayerSpec] = []
    if embedding is not None:
        spec_layers.append(EmbeddingSpec(weight=sd[f"{embedding}.weight"]))
    spec_layers += rnn
    for (m, w, b), a in zip(linears, acts, strict=True):
        try:
            spec_layers.append(DenseSpec(weight=w, bias=b, activation=a))
        except WeightsError as e:
            raise WeightsError(f"module {m!r}: {e}") from None
    meta = {
        "source_framework": "torch",
        "source": source,
        "torch_modules": ",".join(
            ([embedding] if embedding else []) + [_module_of(p) for p in prefixes]
            + [m for m, _, _ in linears]),
        "head": head,
    }
    return ModelSpec(layers=tuple(spec_layers), mask_semantics="torch", metadata=meta)


def spec_from_torch_file(
    path: str | os.PathLike[str],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    key: str | None = None,
) -> ModelSpec:
    """Read a checkpoint (no torch needed) and infer its :class:`ModelSpec`.

    ``path`` is any file :func:`lstm_fast.converters.torch_file.read_state_dict` reads
    (``torch.save`` zip or legacy file, TorchScript archive, safetensors); ``key`` picks the
    state dict inside a training checkpoint. The other arguments are those of
    :func:`spec_from_state_dict`.

    Raises
    ------
    ModelFileError
        The file cannot be read safely (see :func:`~.torch_file.load_torch_checkpoint`).
    UnsupportedModelError, WeightsError, ValueError
        As :func:`spec_from_state_dict`.
    """
    from .torch_file import read_state_dict

    sd = read_state_dict(path, key=key)
    return spec_from_state_dict(sd, prefix=prefix, head=head, activations=activations,
                                source=os.path.basename(os.fspath(path)))


# --------------------------------------------------------------------------------------------
# Live modules

#: torch activation module -> spec activation name (options are checked in _activation_of).
_ACTIVATIONS = {
    "ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Softmax": "softmax",
    "LogSoftmax": "log_softmax", "ELU": "elu", "SELU": "selu", "SiLU": "silu", "GELU": "gelu",
    "Softsign": "softsign", "Softplus": "softplus", "Hardsigmoid": "hard_sigmoid",
    "ReLU6": "relu6",
}


def _activation_of(mod: Any, name: str) -> str | None:
    """The spec name of an activation module, None when ``mod`` is not one."""
    import torch.nn as nn

    cls = type(mod).__name__
    if cls not in _ACTIVATIONS or type(mod) is not getattr(nn, cls, None):
        return None  # a user subclass may override forward
    if cls in ("Softmax", "LogSoftmax") and mod.dim != -1:
        raise UnsupportedModelError(f"{name} ({cls}(dim={mod.dim})): only dim=-1 (the feature "
                                    f"axis) is supported")
    if cls == "ELU" and mod.alpha != 1.0:
        raise UnsupportedModelError(f"{name} (ELU(alpha={mod.alpha})): only alpha=1 is "
                                    f"supported")
    if cls == "GELU" and mod.approximate != "none":
        raise UnsupportedModelError(f"{name} (GELU(approximate={mod.approximate!r})): only "
                                    f"approximate='none' is supported")
    if cls == "Softplus" and (mod.beta != 1 or mod.threshold != 20):
        raise UnsupportedModelError(f"{name} (Softplus(beta={mod.beta}, "
                                    f"threshold={mod.threshold})): only beta=1, threshold=20 "
                                    f"is supported")
    return _ACTIVATIONS[cls]


def _check_rnn_module(mod: Any, name: str) -> None:
    import torch.nn as nn

    if isinstance(mod, (nn.GRU, nn.RNN)) or (isinstance(mod, nn.RNNBase)
                                             and not isinstance(mod, nn.LSTM)):
        raise UnsupportedModelError(f"{name} ({type(mod).__name__}): only nn.LSTM is "
                                    f"supported yet")
    if type(mod) is not nn.LSTM:
        raise UnsupportedModelError(f"{name} ({type(mod).__name__}): subclasses of nn.LSTM "
                                    f"may change forward; convert an nn.LSTM")
    if mod.bidirectional:
        raise UnsupportedModelError(f"{name} (nn.LSTM): bidirectional=True is not supported "
                                    f"yet")
    if mod.proj_size:
        raise UnsupportedModelError(f"{name} (nn.LSTM): proj_size > 0 is not supported yet")


def _module_layers(module: Any) -> list[LayerSpec]:
    """Layer specs of an nn.LSTM or of the supported modules of an nn.Sequential."""
    import torch.nn as nn

    if isinstance(module, nn.RNNBase):
        _check_rnn_module(module, "the module")
        used: set[str] = set()
        return list(_lstm_layers(_normalize(dict(module.state_dict())), "", used))
    if type(module) is not nn.Sequential:
        cls = type(module).__name__
        hint = ""
        if isinstance(module, nn.Module) and not isinstance(module, (nn.Linear, nn.Embedding)):
            hint = (" A custom module's forward cannot be read: convert its weights with "
                    "lstm_fast.converters.torch.spec_from_state_dict(module.state_dict(), "
                    "head=...) and build lstm_fast.Model(spec).")
        raise UnsupportedModelError(f"from_torch supports nn.LSTM and nn.Sequential, got "
                                    f"{cls}.{hint}")
    layers: list[LayerSpec] = []
    prev_dense = False  # the last layer is a Dense that has no activation yet
    for child_name, mod in module.named_children():
        name = f"layer {child_name!r}"
        if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.AlphaDropout)) or type(mod) is nn.Identity:
            continue
        act = _activation_of(mod, name)
        if act is not None:
            if not prev_dense:
                raise UnsupportedModelError(
                    f"{name} ({type(mod).__name__}): an activation is supported only "
                    f"directly after an nn.Linear")
            last = layers[-1]
            assert isinstance(last, DenseSpec)
            layers[-1] = DenseSpec(weight=last.weight, bias=last.bias, activation=act)
            prev_dense = False
            continue
        prev_dense = False
        if isinstance(mod, nn.RNNBase):
            _check_rnn_module(mod, name)
            sd = _normalize(dict(mod.state_dict()))
            lstm = _lstm_layers(sd, "", set())
            layers += lstm
        elif type(mod) is nn.Embedding:
            if layers:
                raise UnsupportedModelError(f"{name} (Embedding): must be the first layer")
            if mod.max_norm is not None:
                raise UnsupportedModelError(f"{name} (Embedding): max_norm is not supported "
                                            f"(it rescales rows at lookup time)")
            layers.append(EmbeddingSpec(weight=_to_numpy(mod.weight, name)))
        elif type(mod) is nn.Linear:
            bias = None if mod.bias is None else _to_numpy(mod.bias, name)
            layers.append(DenseSpec(weight=_to_numpy(mod.weight, name), bias=bias))
            prev_dense = True
        else:
            raise UnsupportedModelError(f"{name} ({type(mod).__name__}) is not supported; "
                                        f"supported: Embedding, LSTM, Linear, Dropout, "
                                        f"Identity and activations after a Linear")
    return layers


def from_torch(module: Any, *, isa: str | None = None) -> Model:
    """Convert a live PyTorch module into a :class:`lstm_fast.Model`.

    Supported:

    - ``nn.LSTM`` (any ``num_layers``, ``bias``, ``batch_first``): outputs the last layer's
      hidden state at every step, like ``module(x)[0]``;
    - ``nn.Sequential`` of ``nn.Embedding`` (first only), ``nn.LSTM``, ``nn.Linear``,
      ``nn.Dropout`` / ``nn.Identity`` (skipped: inference) and activation modules (``ReLU``,
      ``Tanh``, ``Sigmoid``, ``Softmax(dim=-1)``, ``LogSoftmax(dim=-1)``, ``ELU(alpha=1)``,
      ``SELU``, ``SiLU``, ``GELU()``, ``Softsign``, ``Softplus()``, ``Hardsigmoid``,
      ``ReLU6``) directly after a Linear, which become that layer's activation. In a
      Sequential, an ``nn.LSTM``'s output is taken to be its full output sequence
      (``output``, not ``(h_n, c_n)``) - plain ``nn.Sequential`` cannot pass a tuple on, so
      this is what a wrapper selecting ``[0]`` computes.

    The model is always batch-first: ``predict`` takes (B, T, I) floats, or (B, T) integer ids
    when the Sequential starts with an Embedding. For a custom ``nn.Module`` (whose ``forward``
    cannot be read), use :func:`spec_from_state_dict` with ``head=``/``activations=`` and
    build ``lstm_fast.Model(spec)``.

    Parameters
    ----------
    module : torch.nn.Module
        The module to convert (its weights are copied; it is not modified).
    isa : str, optional
        See :class:`lstm_fast.Model`.

    Returns
    -------
    lstm_fast.Model

    Raises
    ------
    UnsupportedModelError
        For other modules (GRU, RNN, Conv, custom modules, ...) or options (bidirectional,
        proj_size, ``Softmax(dim=1)``, ...); the message names the module and option.
    """
    import torch.nn as nn

    from ..model import Model

    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"from_torch expects a torch.nn.Module, got "
                                    f"{type(module).__name__}")
    layers = _module_layers(module)
    if not any(isinstance(L, LSTMLayerSpec) for L in layers):
        raise UnsupportedModelError("the module holds no nn.LSTM")
    meta = {"source_framework": "torch", "source": type(module).__name__}
    try:
        import torch

        meta["torch_version"] = str(torch.__version__)
    except ImportError:  # pragma: no cover - torch is imported above
        pass
    spec = ModelSpec(layers=tuple(layers), mask_semantics="torch", metadata=meta)
    return Model(spec, isa=isa)
