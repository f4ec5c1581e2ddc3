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
- :func:`spec_from_torch` converts a live module (:func:`lstm_fast.from_torch` builds the
  model from it): ``nn.LSTM``/``nn.GRU``/``nn.RNN`` or an
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
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._untrusted import converter_errors
from ..errors import UnsupportedModelError, WeightsError
from ..spec import (
    CELL_KINDS,
    DENSE_ACTIVATIONS,
    LAYER_KINDS,
    RECURRENT_KINDS,
    AffineSpec,
    BidirectionalSpec,
    CellSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    NormalizeSpec,
    SimpleRNNLayerSpec,
    batchnorm_affine,
)
from .fold import fold_affines
from .torch_plan import Plan, Step, make_plan

__all__ = ["plan_from_state_dict", "spec_from_state_dict", "spec_from_torch",
           "spec_from_torch_file"]

HEADS = ("sequence", "last")
#: What ``head_norm`` may be: no normalisation, or L2 over each output vector.
HEAD_NORMS = (None, "l2")
#: ``nn.RNN(nonlinearity=...)`` values (a state dict does not record which one was used).
NONLINEARITIES = ("tanh", "relu")
_MODULE_NAMES = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}

_RNN_KEY = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")


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
        for kind in CELL_KINDS:
            if rows == LAYER_KINDS[kind].gates * cols:  # type: ignore[attr-defined]
                return kind
    raise WeightsError(f"module {where!r}: {hh_key} has shape {tuple(w_hh.shape)}; expected "
                       f"(4H, H) (nn.LSTM), (3H, H) (nn.GRU) or (H, H) (nn.RNN)")


def _cell_from_keys(sd: Mapping[str, np.ndarray], keys: Mapping[str, str], kind: str,
                    nonlinearity: str, where: str, used: set[str]) -> CellSpec:
    """A cell spec from the keys of one direction of one layer (``weight_ih``, ``weight_hh``,
    ``bias_ih``, ``bias_hh``, ``weight_hr``; nn.LSTM-style or nn.LSTMCell-style names)."""
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
    cell: CellSpec
    if kind == "gru":  # never fold: b_hn is multiplied by r
        cell = GRULayerSpec(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    elif kind == "rnn":
        cell = SimpleRNNLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=folded, activation=nonlinearity)
    else:
        cell = LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=folded, w_hr=sd.get(keys["weight_hr"]))
    used.update(key for key in keys.values() if key in sd)
    return cell


def _cell(sd: Mapping[str, np.ndarray], prefix: str, k: int, sfx: str, kind: str,
          nonlinearity: str, used: set[str]) -> CellSpec:
    """The cell spec of layer k, one direction (``sfx`` is ``""`` or ``"_reverse"``)."""
    keys = {n: f"{prefix}{n}_l{k}{sfx}"
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
    try:
        return _cell_from_keys(sd, keys, kind, nonlinearity, _module_of(prefix), used)
    except WeightsError as e:
        raise WeightsError(f"module {_module_of(prefix)!r} layer {k}{sfx}: {e}") from None


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
    """``layer`` with ``return_last=True`` (both directions of a Bidirectional)."""
    if isinstance(layer, BidirectionalSpec):
        return dataclasses.replace(
            layer, forward=dataclasses.replace(layer.forward, return_last=True),
            backward=dataclasses.replace(layer.backward, return_last=True))
    return dataclasses.replace(layer, return_last=True)


def spec_from_state_dict(
    sd: Mapping[str, Any],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    nonlinearity: str = "tanh",
    ignore: Sequence[str] = (),
    head_norm: str | None = None,
    source: str = "",
) -> ModelSpec:
    """Infer a :class:`ModelSpec` from a PyTorch state dict (no torch needed).

    Recognised modules (:mod:`lstm_fast.converters.torch_plan` says how they are found):

    - recurrent: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` (keys ``weight_ih_l{k}``,
      ``weight_hh_l{k}``, optional biases, ``weight_hr_l{k}`` for ``proj_size``, ``_reverse``
      when bidirectional; told apart by shapes: ``weight_hh`` is (4H, H), (3H, H) or (H, H))
      and the cells ``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell`` (``weight_ih``,
      ``weight_hh``, ``bias_ih``, ``bias_hh``): a cell becomes a one-layer model whose
      ``stream().step()`` is the cell stepped in a loop, with ``stream.state`` in the cell's
      own shapes (``(h, c)`` of (B, H) each; ``h`` for GRU/RNN cells);
    - before it: an ``nn.Embedding`` (a lone 2-D ``weight`` whose dim is the input size),
      ``nn.BatchNorm1d`` and ``nn.Linear`` layers that chain into it;
    - after it: ``nn.Linear`` layers (``nn.Conv1d`` with kernel size 1 too) and
      ``nn.BatchNorm1d`` layers chained in registration order.

    Batch norms (inference form, epsilon 1e-5, torch's default) are folded into the next
    layer's input weights where that is exact; ``spec.metadata["folded"]`` says which.

    Parameters
    ----------
    sd : mapping of str to array
        The state dict (numpy arrays or torch tensors). A ``module.`` prefix shared by every
        key (``nn.DataParallel``) is removed.
    prefix : str or sequence of str, optional
        The recurrent module to convert, e.g. ``"rnn"`` or ``"decoder.lstm"`` (``""`` is a
        bare module's state dict). Required when there are several. A prefix *scopes* the
        conversion: the modules around it under the same parent module are placed, and every
        other tensor of the file is ignored and summarised in ``metadata["ignored"]``. A
        sequence chains several recurrent modules in that order (with the batch norms and
        Linear layers registered between them).
    head : {"sequence", "last"}
        ``"sequence"``: outputs (B, T, F), the head applied at every step. ``"last"``: the
        last recurrent layer returns only its last valid step, (B, F): ``fc(h_n[-1])`` for a
        unidirectional module, ``fc(torch.cat([h_n[-2], h_n[-1]], 1))`` for a bidirectional
        one.
    activations : sequence of str, optional
        From :data:`lstm_fast.spec.DENSE_ACTIVATIONS`. With N Linear layers after the
        recurrent module, N activations apply after each Linear; N + 1 activations apply the
        first one to the recurrent output (before the first Linear) and the others after each
        Linear (``["relu", "sigmoid"]``: ``sigmoid(fc(relu(out)))``). Default: all linear.
    nonlinearity : {"tanh", "relu"}
        The nonlinearity of ``nn.RNN``/``nn.RNNCell`` modules (a state dict does not record
        it).
    ignore : sequence of str
        Glob patterns (``fnmatch``, e.g. ``"similarity_*"``) of tensors to drop explicitly.
    head_norm : {None, "l2"}
        ``"l2"`` divides each output vector by its L2 norm (speaker and word embeddings:
        ``x / x.norm(dim=-1, keepdim=True)``).
    source : str
        Recorded in the spec's metadata (e.g. the file name).

    Returns
    -------
    ModelSpec
        With ``mask_semantics="torch"``. ``metadata["torch_plan"]`` (JSON) records the source
        modules per step, which :mod:`lstm_fast.torch_check` uses to rebuild the model in
        torch from the file's own tensors.

    Raises
    ------
    UnsupportedModelError
        No recurrent module; several and no ``prefix`` (they are listed with shapes and the
        flag to pass); a prefix that matches none; without a prefix, tensors that cannot be
        placed (listed, with the ``ignore`` glob that drops them).
    WeightsError
        Shapes are inconsistent.
    ValueError
        ``head``, ``activations``, ``nonlinearity``, ``head_norm`` or an ``ignore`` glob is
        invalid.
    """
    sd, plan = plan_from_state_dict(sd, prefix=prefix, head=head, activations=activations,
                                    nonlinearity=nonlinearity, ignore=ignore,
                                    head_norm=head_norm)
    return spec_from_plan(sd, plan, source=source)


def plan_from_state_dict(
    sd: Mapping[str, Any],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    nonlinearity: str = "tanh",
    ignore: Sequence[str] = (),
    head_norm: str | None = None,
) -> tuple[dict[str, np.ndarray], Plan]:
    """The normalised state dict and its conversion plan (arguments as
    :func:`spec_from_state_dict`)."""
    if head not in HEADS:
        raise ValueError(f"head must be 'sequence' or 'last', got {head!r}")
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (nn.RNN's options), got "
                         f"{nonlinearity!r}")
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"head_norm must be None or 'l2', got {head_norm!r}")
    if isinstance(ignore, str):
        ignore = [ignore]
    norm = _normalize(sd)
    plan = make_plan(norm, prefix=prefix, head=head, nonlinearity=nonlinearity, ignore=ignore)
    add_head_steps(plan, activations, head_norm)
    return norm, plan


def add_head_steps(plan: Plan, activations: Sequence[str] | None,
                   head_norm: str | None) -> None:
    """Insert the activation steps (see :func:`spec_from_state_dict` for the position rule)
    and the L2 normalisation into ``plan``."""
    after = max(i for i, s in enumerate(plan.steps) if s.op in ("rnn", "cell"))
    linears = [i for i, s in enumerate(plan.steps) if s.op == "linear" and i > after]
    names = [plan.steps[i].module for i in linears]
    acts = list(activations) if activations is not None else ["linear"] * len(linears)
    if isinstance(activations, str) or len(acts) not in (len(linears), len(linears) + 1):
        raise ValueError(f"activations must list one activation per Linear layer after the "
                         f"recurrent module ({len(linears)}: {names}), or one more to apply "
                         f"the first to the recurrent output, got {activations!r}")
    for a in acts:
        if a not in DENSE_ACTIVATIONS:
            raise ValueError(f"activation {a!r} is not supported; expected one of "
                             f"{', '.join(DENSE_ACTIVATIONS)}")
    at = ([after] if len(acts) > len(linears) else []) + linears
    for i, a in sorted(zip(at, acts, strict=True), reverse=True):
        if a != "linear":
            plan.steps.insert(i + 1, Step("activation", "", {"name": a}))
    if head_norm == "l2":
        plan.steps.append(Step("normalize", "", {"eps": 1e-12}))


def _step_layers(sd: Mapping[str, np.ndarray], step: Step, width: int,
                 used: set[str]) -> list[LayerSpec]:
    m = step.module

    def key(leaf: str) -> str:
        return f"{m}.{leaf}" if m else leaf

    if step.op == "embedding":
        return [EmbeddingSpec(weight=sd[key("weight")])]
    if step.op == "batchnorm":
        try:
            return [batchnorm_affine(sd.get(key("weight")), sd.get(key("bias")),
                                     sd[key("running_mean")], sd[key("running_var")],
                                     step.opts["eps"])]
        except WeightsError as e:
            raise WeightsError(f"module {m!r} (BatchNorm1d): {e}") from None
    if step.op == "linear":
        w = sd[key("weight")]
        try:
            return [DenseSpec(weight=w.reshape(w.shape[0], w.shape[1]), bias=sd.get(key("bias")))]
        except WeightsError as e:
            raise WeightsError(f"module {m!r}: {e}") from None
    if step.op == "rnn":
        kind, layers = _rnn_layers(sd, f"{m}." if m else "", used, step.opts["nonlinearity"])
        return list(layers)
    if step.op == "cell":
        p = f"{m}." if m else ""
        kind = step.opts["type"][:-4].lower()
        keys = {n: f"{p}{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        keys["weight_hr"] = f"{p}weight_hr"  # absent in cells: never read
        return [_cell_from_keys(sd, keys, kind, step.opts["nonlinearity"], _module_of(p),
                                used)]
    if step.op == "activation":
        return [AffineSpec(size=width, activation=step.opts["name"])]
    if step.op == "normalize":
        return [NormalizeSpec(size=width, epsilon=step.opts["eps"])]
    raise UnsupportedModelError(f"unknown plan step {step.op!r}")  # pragma: no cover


def spec_from_plan(sd: Mapping[str, np.ndarray], plan: Plan, *, source: str = "") -> ModelSpec:
    """Build the spec of a :class:`~lstm_fast.converters.torch_plan.Plan` from ``sd``."""
    layers: list[LayerSpec] = []
    names: list[str] = []
    used: set[str] = set()
    for step in plan.steps:
        width = layers[-1].output_size if layers else 0
        made = _step_layers(sd, step, width, used)
        if (step.op == "activation" and layers and isinstance(layers[-1], DenseSpec)
                and layers[-1].activation == "linear"):
            layers[-1] = dataclasses.replace(layers[-1], activation=step.opts["name"])
            continue
        layers += made
        names += [step.module or step.op] * len(made)
    if plan.head == "last":
        k = max(i for i, L in enumerate(layers) if L.kind in RECURRENT_KINDS)
        layers[k] = _last_step_only(layers[k])
    layers, notes = fold_affines(layers, names)
    cells = [s for s in plan.steps if s.op in ("rnn", "cell")]
    meta = {
        "source_framework": "torch",
        "source": source,
        "torch_modules": ",".join(s.module or "<root>" for s in plan.steps
                                  if s.op in ("embedding", "rnn", "cell", "linear",
                                              "batchnorm")),
        "torch_kinds": ",".join(f"nn.{s.opts['type']}" for s in cells),
        "head": plan.head,
        "torch_plan": json.dumps([s.as_json() for s in plan.steps]),
    }
    if any(s.opts["type"].startswith("RNN") for s in cells):
        meta["rnn_nonlinearity"] = cells[0].opts["nonlinearity"]
    if notes:
        meta["folded"] = "; ".join(notes)
    if plan.ignored_summary():
        meta["ignored"] = plan.ignored_summary()
    layout = "cell" if len(cells) == 1 and cells[0].op == "cell" else "stacked"
    try:
        return ModelSpec(layers=tuple(layers), mask_semantics="torch", metadata=meta,
                         state_layout=layout)
    except WeightsError as e:
        raise WeightsError(f"the inferred model ({', '.join(names)}) is inconsistent: {e}"
                           ) from None


def read_checkpoint(path: str | os.PathLike[str], key: str | None = None
                    ) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch checkpoint (:func:`.torch_file.read_state_dict`), or of a
    NumPy ``.npz`` archive of a PyTorch-trained model (:mod:`.npz_file`)."""
    from .npz_file import read_npz_state_dict
    from .source import identify
    from .torch_file import read_state_dict

    if identify(path).kind == "npz":
        if key is not None:
            raise ValueError("key= (--key) selects an entry of a torch checkpoint; an .npz "
                             "archive is one flat set of arrays")
        return read_npz_state_dict(path)
    return read_state_dict(path, key=key)


@converter_errors
def spec_from_torch_file(
    path: str | os.PathLike[str],
    *,
    prefix: str | Sequence[str] | None = None,
    head: str = "sequence",
    activations: Sequence[str] | None = None,
    nonlinearity: str = "tanh",
    key: str | None = None,
    ignore: Sequence[str] = (),
    head_norm: str | None = None,
) -> ModelSpec:
    """Read a checkpoint (no torch needed) and infer its :class:`ModelSpec`.

    ``path`` is any file :func:`read_checkpoint` reads (``torch.save`` zip or legacy file,
    TorchScript archive, safetensors, NumPy ``.npz``); ``key`` picks the
    state dict inside a training checkpoint. The other arguments are those of
    :func:`spec_from_state_dict`. The options are recorded in ``metadata["torch_options"]``
    (JSON), so that ``lstm-fast verify`` can read the source file the same way.

    Raises
    ------
    ModelFileError
        The file cannot be read safely (see :func:`~.torch_file.load_torch_checkpoint`).
    UnsupportedModelError, WeightsError, ValueError
        As :func:`spec_from_state_dict`.
    """
    sd = read_checkpoint(path, key=key)
    name = os.path.basename(os.fspath(path))
    try:
        spec = spec_from_state_dict(sd, prefix=prefix, head=head, activations=activations,
                                    nonlinearity=nonlinearity, ignore=ignore,
                                    head_norm=head_norm, source=name)
    except (UnsupportedModelError, WeightsError) as e:
        raise type(e)(f"{name}: {e}") from None
    options = {"prefix": prefix, "head": head, "nonlinearity": nonlinearity, "key": key,
               "activations": None if activations is None else list(activations),
               "ignore": [ignore] if isinstance(ignore, str) else list(ignore),
               "head_norm": head_norm}
    return dataclasses.replace(spec, metadata={**spec.metadata,
                                               "torch_options": json.dumps(options)})


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


def _cell_module_layers(cell: Any) -> list[LayerSpec]:
    """The one-layer spec of a live nn.LSTMCell/GRUCell/RNNCell."""
    typ = type(cell).__name__
    nonlinearity = getattr(cell, "nonlinearity", "tanh")
    if nonlinearity not in NONLINEARITIES:
        raise UnsupportedModelError(f"the module (nn.RNNCell): nonlinearity={nonlinearity!r} "
                                    f"is not supported")
    sd = _normalize(dict(cell.state_dict()))
    keys = {n: n for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
    return [_cell_from_keys(sd, keys, typ[:-4].lower(), nonlinearity, "<root>", set())]


def _module_layers(module: Any) -> list[LayerSpec]:
    """Layer specs of an nn.LSTM/GRU/RNN or of the supported modules of an nn.Sequential."""
    import torch.nn as nn

    if isinstance(module, nn.RNNBase):
        return _rnn_module_layers(module, "the module")
    if type(module) in (nn.LSTMCell, nn.GRUCell, nn.RNNCell):
        return _cell_module_layers(module)
    if type(module) is not nn.Sequential:
        cls = type(module).__name__
        hint = ""
        if isinstance(module, nn.Module) and not isinstance(module, (nn.Linear, nn.Embedding)):
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


def spec_from_torch(module: Any) -> ModelSpec:
    """Convert a live PyTorch module into a :class:`ModelSpec` (:func:`lstm_fast.from_torch`
    builds the :class:`lstm_fast.Model`).

    Supported:

    - ``nn.LSTMCell``, ``nn.GRUCell``, ``nn.RNNCell``: a one-layer model whose
      ``stream().step(x_t)`` is ``cell(x_t, state)`` (``predict`` steps it over a sequence);
      ``stream.state`` is the cell's own ``(h, c)`` of (B, H) each (``h`` for GRU/RNN cells);
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

    Returns
    -------
    ModelSpec

    Raises
    ------
    UnsupportedModelError
        For other modules (subclasses of the recurrent modules, cells inside a Sequential,
        Conv, custom modules, ...) or options (``Softmax(dim=1)``, ``max_norm``, ...);
        the message names the module and option.
    """
    import torch.nn as nn

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
    layout = "cell" if isinstance(module, nn.RNNCellBase) else "stacked"
    return ModelSpec(layers=tuple(layers), mask_semantics="torch", metadata=meta,
                     state_layout=layout)
