"""Which modules of a PyTorch state dict form the model, in which order: the *plan*.

A state dict names tensors but holds no ``forward``. :func:`make_plan` finds the recurrent
modules (``nn.LSTM``/``GRU``/``RNN``: ``weight_ih_l{k}`` keys; ``nn.LSTMCell``/``GRUCell``/
``RNNCell``: ``weight_ih`` keys) and the modules chained to them by shape and by registration
order: an ``nn.Embedding`` (and ``nn.BatchNorm1d``/``nn.Linear`` layers) before, ``nn.Linear``
(or ``nn.Conv1d`` with kernel size 1) and ``nn.BatchNorm1d`` layers after.

- Without a prefix there must be exactly one recurrent module, and every tensor must be
  placed (or dropped with ``ignore`` globs): nothing is dropped silently.
- With a prefix (or several, chained in order) the conversion is scoped: the modules around
  the chosen ones under the same parent module are placed, every other tensor of the file is
  ignored and summarised in the plan's ``ignored`` line.

The plan lists steps with the source module names, so that the same plan can build the
:class:`~lstm_fast.spec.ModelSpec` (:mod:`lstm_fast.converters.torch`) and, independently,
torch modules loaded with the file's own tensors (:mod:`lstm_fast.torch_check`).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError, WeightsError
from ..spec import CELL_KINDS, LAYER_KINDS

__all__ = ["Plan", "Step", "make_plan", "module_of"]

#: ``nn.BatchNorm1d``'s default epsilon (a state dict does not record it).
BN_EPS = 1e-5
_BN_LEAVES = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
#: nn.LSTM / nn.GRU / nn.RNN -> gate row blocks (the spec's cell kinds say how many).
_GATES = {kind.upper(): LAYER_KINDS[kind].gates for kind in CELL_KINDS}  # type: ignore[attr-defined]


@dataclass
class Step:
    """One step of the chain: ``op`` is ``embedding``, ``batchnorm``, ``linear``, ``rnn``
    (an nn.LSTM/GRU/RNN), ``cell`` (an nn.*Cell), ``activation`` or ``normalize``;
    ``module`` the source module name (``""`` for the root)."""

    op: str
    module: str = ""
    opts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, "module": self.module, **self.opts}


@dataclass
class Plan:
    steps: list[Step]
    used: list[str]          # state dict keys the steps consume
    ignored: list[str]       # keys left out on purpose (scope or ignore globs)
    head: str = "sequence"
    parent: str = ""         # the scope: module path of the chosen modules' parent, with "."

    def ignored_summary(self) -> str:
        """``"ignored 37 tensors: encoder.*, conv.*"``, or ``""``."""
        if not self.ignored:
            return ""
        groups = list(dict.fromkeys(_group_of(k, self.parent) for k in self.ignored))
        shown = ", ".join(groups[:8]) + (", ..." if len(groups) > 8 else "")
        n = len(self.ignored)
        return f"ignored {n} tensor{'s' if n != 1 else ''}: {shown}"


def _group_of(key: str, parent: str) -> str:
    """``key`` cut after its first component outside ``parent``: ``"encoder.*"``."""
    parts, scope = key.split("."), parent[:-1].split(".") if parent else []
    n = 0
    while n < len(scope) and n < len(parts) - 1 and parts[n] == scope[n]:
        n += 1
    return ".".join(parts[: n + 1]) + (".*" if n + 1 < len(parts) else "")


def module_of(prefix: str) -> str:
    """``"rnn."`` -> ``"rnn"``; ``""`` (a bare module's state dict) -> ``"<root>"``."""
    return prefix[:-1] if prefix else "<root>"


def _shape(a: np.ndarray) -> str:
    return "x".join(str(d) for d in a.shape) or "scalar"


def _rnn_type(sd: Mapping[str, np.ndarray], hh_key: str, hr_key: str) -> str | None:
    w_hh, w_hr = sd.get(hh_key), sd.get(hr_key)
    if w_hh is None or w_hh.ndim != 2 or w_hh.shape[1] < 1:
        return None
    rows, cols = w_hh.shape
    if w_hr is not None:
        return "LSTM" if w_hr.ndim == 2 and rows == 4 * w_hr.shape[1] else None
    for name, gates in _GATES.items():
        if rows == gates * cols:
            return name
    return None


def _find_candidates(sd: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """``prefix -> ("rnn" | "cell", type name)`` for every recurrent module, in file order."""
    import re

    rnn_key = re.compile(r"^(.*?)(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)"
                         r"(_reverse)?$")
    out: dict[str, tuple[str, str]] = {}
    for k in sd:
        m = rnn_key.match(k)
        if m and m.group(1) not in out:
            p = m.group(1)
            out[p] = ("rnn", _rnn_type(sd, f"{p}weight_hh_l0", f"{p}weight_hr_l0") or "LSTM")
            continue
        if k.endswith("weight_hh") and (k == "weight_hh" or k.endswith(".weight_hh")):
            p = k[: -len("weight_hh")]
            kind = _rnn_type(sd, k, "")
            if p not in out and kind and f"{p}weight_ih" in sd:
                out[p] = ("cell", kind + "Cell")
    return out


def _describe(sd: Mapping[str, np.ndarray], prefix: str, what: tuple[str, str]) -> str:
    op, typ = what
    sfx = "_l0" if op == "rnn" else ""
    w_ih = sd.get(f"{prefix}weight_ih{sfx}")
    w_hh = sd[f"{prefix}weight_hh{sfx}"]
    size_in = w_ih.shape[1] if w_ih is not None and w_ih.ndim == 2 else "?"
    hidden = w_hh.shape[0] // (4 if typ.startswith("LSTM") else 3 if typ.startswith("GRU")
                               else 1)
    extra = ""
    if op == "rnn":
        layers = {k for k in sd if k.startswith(f"{prefix}weight_ih_l")
                  and not k.endswith("_reverse")}
        extra = f", {len(layers)} layer{'s' if len(layers) > 1 else ''}"
        if f"{prefix}weight_ih_l0_reverse" in sd:
            extra += ", bidirectional"
    return f"{module_of(prefix)!r} nn.{typ}({size_in} -> {hidden}{extra})"


def _flag_for(prefix: str) -> str:
    return f"--prefix {module_of(prefix) if prefix else chr(39) * 2}"


def _module_groups(keys: Sequence[str]) -> dict[str, list[str]]:
    """``module name -> leaf names`` in first-appearance order (``""`` is the root)."""
    mods: dict[str, list[str]] = {}
    for k in keys:
        mod, _, leaf = k.rpartition(".")
        mods.setdefault(mod, []).append(leaf)
    return mods


def _key(mod: str, leaf: str) -> str:
    return f"{mod}.{leaf}" if mod else leaf


def _classify(sd: Mapping[str, np.ndarray], mod: str, leaves: list[str]) -> str | None:
    """``"batchnorm"``, ``"linear"`` (possibly an Embedding: a lone 2-D weight) or None."""
    leafset = set(leaves)
    w, b = sd.get(_key(mod, "weight")), sd.get(_key(mod, "bias"))
    if {"running_mean", "running_var"} <= leafset <= _BN_LEAVES:
        n = sd[_key(mod, "running_mean")]
        if n.ndim == 1 and all(sd[_key(mod, leaf)].shape == n.shape
                               for leaf in ("running_var", "weight", "bias") if leaf in leafset):
            return "batchnorm"
        return None
    if leafset not in ({"weight"}, {"weight", "bias"}) or w is None:
        return None
    if not (w.ndim == 2 or (w.ndim == 3 and w.shape[2] == 1)):
        return None
    if b is not None and b.shape != (w.shape[0],):
        return None
    return "linear"


@dataclass
class _Mod:
    name: str
    kind: str               # "batchnorm" | "linear" | "embedding" (a lone weight named *emb*)
    pos: int
    n_in: int
    n_out: int
    lone_weight: bool       # only a 2-D weight: an Embedding or a bias-free Linear
    conv: bool = False


def _modules(sd: Mapping[str, np.ndarray], keys: Sequence[str],
             position: Mapping[str, int]) -> list[_Mod]:
    """The modules of ``keys`` that are batch norms or Linear layers, by position."""
    mods: list[_Mod] = []
    for mod, leaves in _module_groups(keys).items():
        kind = _classify(sd, mod, leaves)
        pos = position[_key(mod, leaves[0])]
        if kind == "batchnorm":
            n = int(sd[_key(mod, "running_mean")].shape[0])
            mods.append(_Mod(mod, kind, pos, n, n, False))
        elif kind == "linear":
            w = sd[_key(mod, "weight")]
            lone = leaves == ["weight"] and w.ndim == 2
            if lone and "emb" in mod.rpartition(".")[2].lower():
                kind = "embedding"   # never read an Embedding's table as a Linear layer
            mods.append(_Mod(mod, kind, pos, int(w.shape[1]), int(w.shape[0]), lone,
                             conv=w.ndim == 3))
    return sorted(mods, key=lambda m: m.pos)


def _rnn_sizes(sd: Mapping[str, np.ndarray], prefix: str, op: str) -> tuple[int, int]:
    """(input size, output size) of a recurrent module."""
    sfx = "_l0" if op == "rnn" else ""
    w_ih = sd[f"{prefix}weight_ih{sfx}"]
    if w_ih.ndim != 2:
        raise WeightsError(f"module {module_of(prefix)!r}: {prefix}weight_ih{sfx} must be 2-D, "
                           f"got {w_ih.shape}")
    if op == "cell":
        return int(w_ih.shape[1]), int(sd[f"{prefix}weight_hh"].shape[1])
    last = max(int(k[len(prefix) + len("weight_ih_l"):].split("_")[0]) for k in sd
               if k.startswith(f"{prefix}weight_ih_l"))
    hh = sd[f"{prefix}weight_hh_l{last}"]
    hr = sd.get(f"{prefix}weight_hr_l{last}")
    out = int(hr.shape[0]) if hr is not None and hr.ndim == 2 else int(hh.shape[1])
    return int(w_ih.shape[1]), out * (2 if f"{prefix}weight_ih_l0_reverse" in sd else 1)


def _recurrent_step(sd: Mapping[str, np.ndarray], prefix: str, what: tuple[str, str],
                    nonlinearity: str) -> Step:
    op, typ = what
    name = module_of(prefix) if prefix else ""
    if op == "cell":
        return Step("cell", name, {"type": typ, "bias": f"{prefix}bias_ih" in sd
                                   or f"{prefix}bias_hh" in sd,
                                   "nonlinearity": nonlinearity})
    layers = {int(k[len(prefix) + len("weight_ih_l"):].split("_")[0]) for k in sd
              if k.startswith(f"{prefix}weight_ih_l")}
    hr = sd.get(f"{prefix}weight_hr_l0")
    return Step("rnn", name, {
        "type": typ, "num_layers": len(layers),
        "bidirectional": f"{prefix}weight_ih_l0_reverse" in sd,
        "bias": f"{prefix}bias_ih_l0" in sd or f"{prefix}bias_hh_l0" in sd,
        "proj_size": int(hr.shape[0]) if hr is not None else 0,
        "nonlinearity": nonlinearity})


def _linear_step(m: _Mod) -> Step:
    return Step("linear", m.name, {"conv": m.conv})


def _bn_step(m: _Mod) -> Step:
    return Step("batchnorm", m.name, {"eps": BN_EPS})


def _chain_before(mods: list[_Mod], need: int) -> list[_Mod]:
    """Modules before the first recurrent one that feed it, walking back from it: batch norms
    of the current width, Linear layers whose output is the current width, and at most one
    Embedding (a lone 2-D weight whose dim is the current width), where the walk stops."""
    chain: list[_Mod] = []
    for m in reversed(mods):
        if m.kind == "batchnorm" and m.n_out == need:
            chain.insert(0, m)
        elif m.lone_weight and m.n_in == need:     # Embedding (vocabulary, dim): n_in is dim
            chain.insert(0, _Mod(m.name, "embedding", m.pos, 1, m.n_in, True))
            break
        elif m.kind == "linear" and not m.lone_weight and m.n_out == need:
            chain.insert(0, m)
            need = m.n_in
        else:
            break
    return chain


def _chain_after(mods: list[_Mod], width: int) -> tuple[list[_Mod], int]:
    """Batch norms and Linear layers after a recurrent module that chain from ``width``."""
    chain: list[_Mod] = []
    for m in mods:
        if m.kind == "batchnorm" and m.n_in == width:
            chain.append(m)
        elif m.kind == "linear" and m.n_in == width:
            chain.append(m)
            width = m.n_out
        else:
            break
    return chain, width


def _parent(prefixes: Sequence[str]) -> str:
    """The deepest module containing every prefix's parent (``""`` for the root)."""
    common = os.path.commonprefix([p[:-1].split(".")[:-1] for p in prefixes])
    return ".".join(common) + "." if common else ""


def _listing(sd: Mapping[str, np.ndarray], keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(f"{k} ({_shape(sd[k])})" for k in keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _ignore_globs(keys: Sequence[str]) -> str:
    """``--ignore`` flags that drop exactly ``keys``: one ``'module.*'`` per module, one
    ``'prefix*'`` for the loose tensors at the root."""
    modules = list(dict.fromkeys(k.rpartition(".")[0] for k in keys))
    globs = [f"{m}.*" for m in modules if m]
    loose = [k for k in keys if "." not in k]
    if loose:
        common = os.path.commonprefix(loose)
        globs += [f"{common}*"] if len(loose) > 1 and len(common) >= 2 else loose
    shown = " ".join(f"--ignore '{g}'" for g in globs[:6])
    return shown + (" ..." if len(globs) > 6 else "")


def make_plan(sd: Mapping[str, np.ndarray], *, prefix: str | Sequence[str] | None,
              head: str, nonlinearity: str, ignore: Sequence[str] = ()) -> Plan:
    """The plan of a (normalised) state dict; see the module docstring.

    Raises
    ------
    UnsupportedModelError
        No recurrent module; several and no ``prefix`` (the message lists them with shapes and
        the flag to pass); a prefix that matches none (the recurrent modules are listed); or,
        without a prefix, tensors that cannot be placed (listed with shapes, with the
        ``--ignore`` glob that would drop them).
    WeightsError
        Chosen recurrent modules that do not chain.
    ValueError
        An ``ignore`` glob that matches no tensor.
    """
    keys = list(sd)
    dropped: list[str] = []
    for glob in ignore:
        hit = [k for k in keys if fnmatch.fnmatchcase(k, glob)]
        if not hit:
            raise ValueError(f"--ignore {glob!r} matches no tensor of the state dict")
        dropped += hit
        keys = [k for k in keys if k not in hit]
    live = {k: sd[k] for k in keys}
    candidates = _find_candidates(live)
    if not candidates:
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        raise UnsupportedModelError(
            f"no recurrent weights (nn.LSTM/GRU/RNN: weight_ih_l0, ...; nn.LSTMCell/GRUCell/"
            f"RNNCell: weight_ih, weight_hh) in the state dict; its keys are: "
            f"{shown or 'none'}")
    listed = "; ".join(_describe(live, p, w) for p, w in candidates.items())
    if prefix is None:
        if len(candidates) > 1:
            flags = " ".join(_flag_for(p) for p in candidates)
            raise UnsupportedModelError(
                f"the state dict holds several recurrent modules: {listed}. Pass "
                f"{_flag_for(next(iter(candidates)))} (prefix= in Python) to convert one and "
                f"its Embedding/Linear neighbours, or several in order to chain them (e.g. "
                f"{flags})")
        chosen = list(candidates)
    else:
        wanted = [prefix] if isinstance(prefix, str) else list(prefix)
        if not wanted:
            raise ValueError("prefix must name at least one recurrent module")
        chosen = []
        for p in wanted:
            p = str(p)
            if p and not p.endswith("."):
                p += "."
            if p not in candidates:
                raise UnsupportedModelError(f"no recurrent module {module_of(p)!r} in the "
                                            f"state dict; found {listed}")
            chosen.append(p)
    scoped = prefix is not None

    position = {k: n for n, k in enumerate(keys)}
    owned = {p: [k for k in keys if k.startswith(p) and _owned_by(k, p, candidates[p][0])]
             for p in candidates}
    used_rnn = [k for p in chosen for k in owned[p]]
    other_rnn = {k for p in candidates if p not in chosen for k in owned[p]}
    parent = _parent(chosen) if scoped else ""
    rest = [k for k in keys if k not in set(used_rnn) and k not in other_rnn]
    in_scope = [k for k in rest if k.startswith(parent)]
    out_scope = [k for k in rest if not k.startswith(parent)]
    mods = _modules(live, in_scope, position)

    steps: list[Step] = []
    sizes = [_rnn_sizes(live, p, candidates[p][0]) for p in chosen]
    first_pos = min(position[k] for k in owned[chosen[0]])
    pre = _chain_before([m for m in mods if m.pos < first_pos], sizes[0][0])
    for m in pre:
        steps.append(Step("embedding", m.name) if m.kind == "embedding"
                      else _bn_step(m) if m.kind == "batchnorm" else _linear_step(m))
    placed = {m.name for m in pre}
    width = sizes[0][1]
    for i, p in enumerate(chosen):
        steps.append(_recurrent_step(live, p, candidates[p], nonlinearity))
        if i + 1 == len(chosen):
            break
        start = max(position[k] for k in owned[p])
        stop = min(position[k] for k in owned[chosen[i + 1]])
        mid, width = _chain_after([m for m in mods if start < m.pos < stop], sizes[i][1])
        if width != sizes[i + 1][0]:
            raise WeightsError(
                f"module {module_of(chosen[i + 1])!r} reads inputs of size {sizes[i + 1][0]} "
                f"but the previous recurrent module outputs {width}; these modules do not "
                f"chain (give the prefixes in the order the model runs them)")
        steps += [_bn_step(m) if m.kind == "batchnorm" else _linear_step(m) for m in mid]
        placed |= {m.name for m in mid}
        width = sizes[i + 1][1]
    last_pos = max(position[k] for k in owned[chosen[-1]])
    post, _ = _chain_after([m for m in mods if m.pos > last_pos], width)
    steps += [_bn_step(m) if m.kind == "batchnorm" else _linear_step(m) for m in post]
    placed |= {m.name for m in post}
    if not any(s.op == "embedding" for s in steps):   # an Embedding registered after the RNN
        late = [m for m in mods if m.name not in placed and m.lone_weight
                and m.n_in == sizes[0][0]]
        if len(late) == 1:
            steps.insert(0, Step("embedding", late[0].name))
            placed.add(late[0].name)

    leftover = [k for k in in_scope if k.rpartition(".")[0] not in placed]
    ignored = dropped + (sorted(out_scope + list(other_rnn) + leftover, key=position.__getitem__)
                         if scoped else [])
    if not scoped and (leftover or other_rnn or out_scope):
        left = [k for k in keys if k in set(leftover) | other_rnn | set(out_scope)]
        raise UnsupportedModelError(
            f"tensors not placed in the inferred model ({_chain_text(steps)}): "
            f"{_listing(live, left)}. Drop them explicitly with {_ignore_globs(left)} "
            f"(ignore= in Python), or pass "
            f"{_flag_for(chosen[0])} to convert only that module and its neighbours")
    used = [k for k in keys if k in set(used_rnn)
            or (k.rpartition(".")[0] in placed and k in set(in_scope))]
    return Plan(steps=steps, used=used, ignored=ignored, head=head, parent=parent)


def _owned_by(key: str, prefix: str, op: str) -> bool:
    leaf = key[len(prefix):]
    if op == "cell":
        return leaf in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return leaf.split("_l")[0] in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                   "weight_hr") and "." not in leaf


def _chain_text(steps: Sequence[Step]) -> str:
    return " -> ".join(f"{s.op} {s.module or '<root>'}" if s.module or s.op in ("rnn", "cell")
                       else s.op for s in steps)
