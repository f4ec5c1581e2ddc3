"""PyTorch -> :class:`~lstm_fast.spec.ModelSpec`.

Two entry points:

- :func:`spec_from_state_dict` / :func:`spec_from_torch_file` infer the architecture from a
  state dict's key names and shapes (no torch needed): an optional ``nn.Embedding``, one
  recurrent module (``nn.LSTM``, ``nn.GRU`` or ``nn.RNN``, any ``num_layers``,
  ``bidirectional``, and ``proj_size`` for LSTM; or several chained ones, ``prefix=[...]``),
  then a chain of ``nn.Linear`` layers. A state dict does not say what ``forward`` does with
  them, so three choices are arguments: ``head`` (is the head applied at every step or to the
  last step only), ``activations`` (what follows each Linear) and ``nonlinearity`` (an
  ``nn.RNN``'s tanh or relu).
- :func:`from_torch` converts a live module: ``nn.LSTM``/``nn.GRU``/``nn.RNN`` or an
  ``nn.Sequential`` of supported modules (torch is imported lazily; lstm_fast never needs it
  otherwise).

Mapping (FORMATS.md §1): each layer ``k`` of a recurrent module becomes one layer spec; with
``bidirectional=True`` it is a ``BidirectionalSpec(forward, backward, "concat")`` whose
``forward`` holds the ``*_l{k}`` weights and ``backward`` the ``*_l{k}_reverse`` ones, so
``ModelSpec.cells`` is in PyTorch's ``h_n`` order ``layer * 2 + direction``. LSTM biases (and
RNN biases) are folded into one in float64; GRU biases stay separate, since ``b_hn`` sits
inside ``r * (W_hn h + b_hn)``. An LSTM's ``weight_hr_l{k}`` becomes ``w_hr``.

The result always runs batch-first: ``predict`` takes (B, T, I) floats, or (B, T) integer ids
when the first layer is an Embedding, whatever ``batch_first`` the torch module had.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._untrusted import converter_errors
from ..errors import UnsupportedModelError, WeightsError
from ..spec import (
    DENSE_ACTIVATIONS,
    RECURRENT_KINDS,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    SimpleRNNLayerSpec,
)

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["from_torch", "spec_from_state_dict", "spec_from_torch_file"]

HEADS = ("sequence", "last")
#: ``nn.RNN(nonlinearity=...)`` values (a state dict does not record which one was used).
NONLINEARITIES = ("tanh", "relu")
_MODULE_NAMES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}

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


def _cell_kind(sd: Mapping[str, np.ndarray], prefix: str, k: int, sfx: str) -> str:
    """``"lstm"``, ``"gru"`` or ``"rnn"`` from the shapes of layer k's weights (one direction).

    ``weight_hh`` is (4H, H) for an LSTM, (4H, P) with ``weight_hr`` (P, H) for an LSTM with
    ``proj_size=P``, (3H, H) for a GRU and (H, H) for an RNN.
    """
    where = _module_of(prefix)
    hh_key, hr_key = f"{prefix}weight_hh_l{k}{sfx}", f"{prefix}weight_hr_l{k}{sfx}"
    w_hh, w_hr = sd[hh_key], sd.get(hr_key)
    if w_hh.ndim != 2:
        raise WeightsError(f"module {where!r}: {hh_key} must be 2-D, got {w_hh.shape}")
    rows, cols = w_hh.shape
    if w_hr is not None:
        if w_hr.ndim != 2 or rows != 4 * w_hr.shape[1] or cols != w_hr.shape[0]:
            raise WeightsError(
                f"module {where!r}: {hh_key} {tuple(w_hh.shape)} and {hr_key} "
                f"{tuple(w_hr.shape)} are not an nn.LSTM with proj_size: expected (4H, P) "
                f"and (P, H)")
        return "lstm"
    if cols >= 1:
        for kind, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
            if rows == gates * cols:
                return kind
    raise WeightsError(f"module {where!r}: {hh_key} has shape {tuple(w_hh.shape)}; expected "
                       f"(4H, H) (nn.LSTM), (3H, H) (nn.GRU) or (H, H) (nn.RNN)")


def _cell(sd: Mapping[str, np.ndarray], prefix: str, k: int, sfx: str, kind: str,
          nonlinearity: str, used: set[str]) -> CellSpec:
    """The cell spec of layer k, one direction (``sfx`` is ``""`` or ``"_reverse"``)."""
    where = _module_of(prefix)
    keys = {n: f"{prefix}{n}_l{k}{sfx}"
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
    w_ih, w_hh = sd[keys["weight_ih"]], sd[keys["weight_hh"]]
    if w_ih.ndim != 2:
        raise WeightsError(f"module {where!r}: {keys['weight_ih']} must be 2-D, got "
                           f"{w_ih.shape}")
    rows = w_hh.shape[0]
    b_ih, b_hh = sd.get(keys["bias_ih"]), sd.get(keys["bias_hh"])
    for key, b in ((keys["bias_ih"], b_ih), (keys["bias_hh"], b_hh)):
        if b is not None and b.shape != (rows,):
            raise WeightsError(f"module {where!r}: {key} must be ({rows},), got {b.shape}")
    folded = None
    if kind != "gru" and (b_ih is not None or b_hh is not None):
        folded = np.zeros(rows, np.float64)
        for b in (b_ih, b_hh):
            if b is not None:
                folded += b.astype(np.float64)
        folded = folded.astype(np.float32)
    try:
        cell: CellSpec
        if kind == "gru":  # never fold: b_hn is multiplied by r
            cell = GRULayerSpec(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
        elif kind == "rnn":
            cell = SimpleRNNLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=folded, activation=nonlinearity)
        else:
            cell = LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=folded, w_hr=sd.get(keys["weight_hr"]))
    except WeightsError as e:
        raise WeightsError(f"module {where!r} layer {k}{sfx}: {e}") from None
    used.update(key for key in keys.values() if key in sd)
    return cell


def _rnn_layers(sd: Mapping[str, np.ndarray], prefix: str, used: set[str],
                nonlinearity: str = "tanh") -> tuple[str, list[LayerSpec]]:
    """The kind (``"lstm"``/``"gru"``/``"rnn"``) and layer specs of the nn.LSTM/GRU/RNN whose
    keys start with ``prefix`` (marks its keys used). Bidirectional layers become
    :class:`BidirectionalSpec` (forward = ``*_l{k}``, backward = ``*_l{k}_reverse``)."""
    where = _module_of(prefix)
    parsed = [m for k in sd if (m := _RNN_KEY.match(k)) and m.group(1) == prefix]
    layers = sorted({int(m.group(3)) for m in parsed})
    if layers != list(range(len(layers))):
        raise WeightsError(f"module {where!r}: layer indices {layers} are not 0..L-1")
    reverse = {int(m.group(3)) for m in parsed if m.group(4)}
    if reverse and reverse != set(layers):
        missing = sorted(set(layers) - reverse)
        raise WeightsError(f"module {where!r} is bidirectional but layers {missing} have no "
                           f"_reverse weights")
    directions = ("", "_reverse") if reverse else ("",)
    kind = ""
    out: list[LayerSpec] = []
    for k in layers:
        cells = []
        for sfx in directions:
            ih_key, hh_key = f"{prefix}weight_ih_l{k}{sfx}", f"{prefix}weight_hh_l{k}{sfx}"
            if ih_key not in sd or hh_key not in sd:
                raise WeightsError(f"module {where!r}: layer {k} lacks {ih_key!r} or "
                                   f"{hh_key!r}")
            this = _cell_kind(sd, prefix, k, sfx)
            if kind and this != kind:
                raise WeightsError(f"module {where!r}: layer {k}{sfx} has the shapes of an "
                                   f"{_MODULE_NAMES[this]} but layer 0 those of an "
                                   f"{_MODULE_NAMES[kind]}")
            kind = this
            cells.append(_cell(sd, prefix, k, sfx, kind, nonlinearity, used))
        layer: LayerSpec = cells[0]
        if reverse:
            try:
                layer = BidirectionalSpec(forward=cells[0], backward=cells[1],
                                          merge_mode="concat")
            except WeightsError as e:
                raise WeightsError(f"module {where!r} layer {k}: {e}") from None
        if out and layer.input_size != out[-1].output_size:
            raise WeightsError(f"module {where!r}: layer {k} reads inputs of size "
                               f"{layer.input_size} but layer {k - 1} outputs "
                               f"{out[-1].output_size}")
        out.append(layer)
    return kind, out


def _last_step_only(layer: LayerSpec) -> LayerSpec:
    """``layer`` with ``return_sequences=False`` (both directions of a Bidirectional)."""
    if isinstance(layer, BidirectionalSpec):
        return dataclasses.replace(
            layer, forward=dataclasses.replace(layer.forward, return_sequences=False),
            backward=dataclasses.replace(layer.backward, return_sequences=False))
    return dataclasses.replace(layer, return_sequences=False)


def _cell_class(sd: Mapping[str, np.ndarray], prefix: str) -> str:
    """``"nn.LSTMCell"``/``"nn.GRUCell"``/``"nn.RNNCell"`` from a cell's ``weight_hh`` shape."""
    w_hh = sd.get(f"{prefix}weight_hh")
    if w_hh is not None and w_hh.ndim == 2 and w_hh.shape[1] >= 1:
        for name, gates in (("nn.LSTMCell", 4), ("nn.GRUCell", 3), ("nn.RNNCell", 1)):
            if w_hh.shape[0] == gates * w_hh.shape[1]:
                return name
    return "a cell"


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
    nonlinearity: str = "tanh",
    source: str = "",
) -> ModelSpec:
    """Infer a :class:`ModelSpec` from a PyTorch state dict (no torch needed).

    Recognised modules: the recurrent module at ``prefix``, an ``nn.LSTM``, ``nn.GRU`` or
    ``nn.RNN`` (keys ``{prefix}weight_ih_l{k}``, ``weight_hh_l{k}``, optionally
    ``bias_ih_l{k}``/``bias_hh_l{k}``, ``weight_hr_l{k}`` for an LSTM with ``proj_size``, and
    the same with ``_reverse`` when bidirectional), told apart by shapes: ``weight_hh`` is
    (4H, H) for an LSTM ((4H, P) next to ``weight_hr`` (P, H) with a projection), (3H, H) for
    a GRU and (H, H) for an RNN; an optional ``nn.Embedding`` before it (a module with only a
    2-D ``weight`` whose column count is the recurrent module's input size); then
    ``nn.Linear`` modules (``weight`` (out, in), optional ``bias``) chained in state-dict
    order, the first reading the recurrent module's output size (D * H_out: ``2 * P`` for a
    bidirectional LSTM with ``proj_size=P``). Parameter-free modules (dropout, activations)
    leave no trace in a state dict: give the activations with ``activations``.

    Each layer of the recurrent module becomes a layer spec (``LSTMLayerSpec`` with ``w_hr``
    for a projection, ``GRULayerSpec`` with ``reset_after=True`` and its two biases kept
    apart, ``SimpleRNNLayerSpec``), or a ``BidirectionalSpec(forward, backward, "concat")``
    for a bidirectional layer; ``spec.cells`` is then in PyTorch's ``h_n`` order
    (``layer * 2 + direction``).

    Parameters
    ----------
    sd : mapping of str to array
        The state dict (numpy arrays or torch tensors). A ``module.`` prefix shared by every
        key (``nn.DataParallel``) is removed.
    prefix : str or sequence of str, optional
        The recurrent module to convert, e.g. ``"rnn"`` or ``"encoder.lstm."`` (the trailing
        dot is optional; ``""`` is a bare ``nn.LSTM``/``nn.GRU``/``nn.RNN``). Required when
        the state dict holds several recurrent modules. A sequence chains several recurrent
        modules in that order (``lstm1`` feeding ``gru2``).
    head : {"sequence", "last"}
        ``"sequence"``: the model outputs every step, (B, T, F), and the Linear head is applied
        at every step. ``"last"``: the last recurrent layer returns only its last valid step
        and the head maps that, giving (B, F): the usual classifier. Unidirectional, that is
        ``fc(h_n[-1])`` (or ``out[:, -1]`` without padding). Bidirectional, it is the forward
        direction's output at the last valid step concatenated with the backward direction's
        output at t=0 (its final state): ``fc(torch.cat([h_n[-2], h_n[-1]], dim=1))``, which
        is what torch classifiers usually do (not ``fc(out[:, -1])``, whose backward half has
        seen one step only).
    activations : sequence of str, optional
        One activation per Linear layer, from :data:`lstm_fast.spec.DENSE_ACTIVATIONS`
        (``"relu"``, ``"softmax"``, ...). Default: all ``"linear"``.
    nonlinearity : {"tanh", "relu"}
        The ``nonlinearity`` of the ``nn.RNN`` module(s): a state dict does not record it.
        Ignored for LSTM and GRU.
    source : str
        Recorded in the spec's metadata (e.g. the file name).

    Returns
    -------
    ModelSpec
        With ``mask_semantics="torch"`` (padded steps output 0, state carried, like packed
        sequences; a bidirectional layer's backward direction starts at each sequence's last
        valid step).

    Raises
    ------
    UnsupportedModelError
        No recurrent module is found (or only ``nn.LSTMCell``/``GRUCell``/``RNNCell``
        weights, whose loop is user code); several recurrent modules exist and ``prefix`` is
        missing (the message lists them); or some keys belong to no recognised module
        (listed).
    WeightsError
        Shapes are inconsistent.
    ValueError
        ``head``, ``activations`` or ``nonlinearity`` is invalid.
    """
    if head not in HEADS:
        raise ValueError(f"head must be 'sequence' or 'last', got {head!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (nn.RNN's options), got "
                         f"{nonlinearity!r}")
    sd = _normalize(sd)
    candidates = _recurrent_prefixes(sd)
    if not candidates:
        matches = (_CELL_KEY.match(k) for k in sd)
        cells = list(dict.fromkeys(m.group(1) for m in matches if m))
        if cells:
            named = ", ".join(f"{_module_of(c)!r} ({_cell_class(sd, c)})" for c in cells)
            raise UnsupportedModelError(
                f"recurrent cells ({named}) are not supported: the loop around an "
                f"nn.LSTMCell/GRUCell/RNNCell is user code; use nn.LSTM, nn.GRU or nn.RNN")
        shown = ", ".join(list(sd)[:12]) + (", ..." if len(sd) > 12 else "")
        raise UnsupportedModelError(f"no nn.LSTM, nn.GRU or nn.RNN weights (weight_ih_l0, ...) "
                                    f"in the state dict; its keys are: {shown or 'none'}")
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
    rnn: list[LayerSpec] = []
    kinds: list[str] = []
    for p in prefixes:
        kind, layers = _rnn_layers(sd, p, used, nonlinearity)
        if rnn and layers[0].input_size != rnn[-1].output_size:
            raise WeightsError(f"module {_module_of(p)!r} reads inputs of size "
                               f"{layers[0].input_size} but the previous recurrent module "
                               f"outputs {rnn[-1].output_size}; these modules do not chain")
        rnn += layers
        kinds.append(kind)
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
    width = rnn[-1].output_size
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
            f"state dict keys not used by the inferred model (Embedding -> recurrent "
            f"{', '.join(repr(_module_of(p)) for p in prefixes)} -> Linear chain): {shown}. "
            f"Only nn.Embedding, nn.LSTM/GRU/RNN and a chain of nn.Linear are recognised; "
            f"filter the state dict, or convert a live nn.Sequential with from_torch")

    acts = list(activations) if activations is not None else ["linear"] * len(linears)
    if isinstance(activations, str) or len(acts) != len(linears):
        raise ValueError(f"activations must list one activation per Linear layer "
                         f"({len(linears)}: {[m for m, _, _ in linears]}), got {activations!r}")
    for a in acts:
        if a not in DENSE_ACTIVATIONS:
            raise ValueError(f"activation {a!r} is not supported; expected one of "
                             f"{', '.join(DENSE_ACTIVATIONS)}")

    if head == "last":
        rnn[-1] = _last_step_only(rnn[-1])
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
        "torch_kinds": ",".join(_MODULE_NAMES[k] for k in kinds),
        "head": head,
    }
    if "rnn" in kinds:
        meta["rnn_nonlinearity"] = nonlinearity
    return ModelSpec(layers=tuple(spec_layers), mask_semantics="torch", metadata=meta)


@converter_errors
def spec_from_torch_file(
    path: str | os.PathLike[str],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    nonlinearity: str = "tanh",
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
                                nonlinearity=nonlinearity,
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


def _rnn_module_layers(mod: Any, name: str) -> list[LayerSpec]:
    """Layer specs of a live nn.LSTM/GRU/RNN (its nonlinearity read from the module)."""
    import torch.nn as nn

    cls = type(mod).__name__
    if type(mod) not in (nn.LSTM, nn.GRU, nn.RNN):
        raise UnsupportedModelError(f"{name} ({cls}): only plain nn.LSTM, nn.GRU and nn.RNN "
                                    f"are supported (a subclass may change forward)")
    nonlinearity = getattr(mod, "nonlinearity", "tanh") if type(mod) is nn.RNN else "tanh"
    if nonlinearity not in NONLINEARITIES:
        raise UnsupportedModelError(f"{name} (nn.RNN): nonlinearity={nonlinearity!r} is not "
                                    f"supported")
    kind, layers = _rnn_layers(_normalize(dict(mod.state_dict())), "", set(), nonlinearity)
    if _MODULE_NAMES[kind] != f"nn.{cls}":  # pragma: no cover - shapes always match the class
        raise WeightsError(f"{name} ({cls}) has the weight shapes of an {_MODULE_NAMES[kind]}")
    return layers


def _module_layers(module: Any) -> list[LayerSpec]:
    """Layer specs of an nn.LSTM/GRU/RNN or of the supported modules of an nn.Sequential."""
    import torch.nn as nn

    if isinstance(module, nn.RNNBase):
        return _rnn_module_layers(module, "the module")
    if type(module) is not nn.Sequential:
        cls = type(module).__name__
        hint = ""
        if isinstance(module, nn.RNNCellBase):
            hint = (" A cell's loop is user code: use nn.LSTM, nn.GRU or nn.RNN over the whole "
                    "sequence.")
        elif isinstance(module, nn.Module) and not isinstance(module, (nn.Linear, nn.Embedding)):
            hint = (" A custom module's forward cannot be read: convert its weights with "
                    "lstm_fast.converters.torch.spec_from_state_dict(module.state_dict(), "
                    "head=...) and build lstm_fast.Model(spec).")
        raise UnsupportedModelError(f"from_torch supports nn.LSTM, nn.GRU, nn.RNN and "
                                    f"nn.Sequential, got {cls}.{hint}")
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
            layers += _rnn_module_layers(mod, name)
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
            hint = (" (a cell's loop is user code; use nn.LSTM, nn.GRU or nn.RNN)"
                    if isinstance(mod, nn.RNNCellBase) else "")
            raise UnsupportedModelError(f"{name} ({type(mod).__name__}) is not supported{hint}; "
                                        f"supported: Embedding, LSTM, GRU, RNN, Linear, "
                                        f"Dropout, Identity and activations after a Linear")
    return layers


def from_torch(module: Any, *, isa: str | None = None) -> Model:
    """Convert a live PyTorch module into a :class:`lstm_fast.Model`.

    Supported:

    - ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (tanh or relu; any ``num_layers``, ``bias``,
      ``batch_first``, ``bidirectional``, and ``proj_size`` for LSTM): outputs the last
      layer's output at every step, like ``module(x)[0]`` (``[fwd, bwd]`` concatenated when
      bidirectional); ``predict(..., return_state=True)`` gives the states in ``h_n`` order
      (``layer * 2 + direction``);
    - ``nn.Sequential`` of ``nn.Embedding`` (first only), ``nn.LSTM``/``GRU``/``RNN``,
      ``nn.Linear``,
      ``nn.Dropout`` / ``nn.Identity`` (skipped: inference) and activation modules (``ReLU``,
      ``Tanh``, ``Sigmoid``, ``Softmax(dim=-1)``, ``LogSoftmax(dim=-1)``, ``ELU(alpha=1)``,
      ``SELU``, ``SiLU``, ``GELU()``, ``Softsign``, ``Softplus()``, ``Hardsigmoid``,
      ``ReLU6``) directly after a Linear, which become that layer's activation. In a
      Sequential, a recurrent module's output is taken to be its full output sequence
      (``output``, not ``h_n``) - plain ``nn.Sequential`` cannot pass a tuple on, so this is
      what a wrapper selecting ``[0]`` computes.

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
        For other modules (``LSTMCell``/``GRUCell``/``RNNCell``, subclasses of the recurrent
        modules, Conv, custom modules, ...) or options (``Softmax(dim=1)``, ``max_norm``, ...);
        the message names the module and option.
    """
    import torch.nn as nn

    from ..model import Model

    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"from_torch expects a torch.nn.Module, got "
                                    f"{type(module).__name__}")
    layers = _module_layers(module)
    if not any(L.kind in RECURRENT_KINDS for L in layers):
        raise UnsupportedModelError("the module holds no nn.LSTM, nn.GRU or nn.RNN")
    meta = {"source_framework": "torch", "source": type(module).__name__}
    try:
        import torch

        meta["torch_version"] = str(torch.__version__)
    except ImportError:  # pragma: no cover - torch is imported above
        pass
    spec = ModelSpec(layers=tuple(layers), mask_semantics="torch", metadata=meta)
    return Model(spec, isa=isa)
