"""Synthetic models for ``lstm-fast bench --spec``: a short text -> a :class:`ModelSpec`.

Grammar (keys are case-insensitive; layers are separated by ``;`` or ``/``)::

    spec  := layer (("/" | ";") layer)*
    layer := kind [":" key "=" value ("," key "=" value)*]

Kinds and their keys:

``lstm``, ``gru``, ``rnn`` and ``bilstm``, ``bigru``, ``birnn`` (Bidirectional)
    ``I`` input size (required for the first layer, else taken from the previous layer and
    checked when given), ``H`` hidden size (required), ``L`` stacked layers (1),
    ``act`` activation (``tanh``; ``relu`` for an Elman RNN), ``P`` LSTM projection size
    (PyTorch's ``proj_size``), ``return_last=1`` the top layer returns only its last step
    (``last=1`` is the older spelling),
    ``merge`` (Bidirectional: ``concat``, ``sum``, ``ave`` or ``mul``), ``bias=0`` no biases.
``dense``
    ``O`` output size (required), ``act`` (``linear``; also ``softmax`` ...), ``bias=0``,
    ``I`` (checked).
``emb``
    ``V`` vocabulary, ``D`` dimension (both required); only as the first layer (the model
    then takes integer ids).

Examples: ``lstm:I=128,H=256,L=2``,
``emb:V=10000,D=128/bilstm:H=256,L=2,return_last=1/dense:O=2``.

Weights are random, one array for every tensor the layer kind declares
(:class:`lstm_fast.spec.Tensor`; ``bias=0`` leaves out the bias ones), in declaration order:
PyTorch's initialisation, uniform in ``[-1/sqrt(n), 1/sqrt(n)]`` with n the kind's
``INIT_SIZE`` (H for recurrent layers, the input size for Dense), standard normal for
Embedding, drawn from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import SpecSyntaxError
from .spec import (
    CELL_ACTIVATIONS,
    DENSE_ACTIVATIONS,
    LAYER_KINDS,
    MERGE_MODES,
    BidirectionalSpec,
    LayerSpec,
    ModelSpec,
)

__all__ = ["MAX_PARAMETERS", "SpecSyntaxError", "parse_spec"]

_RECURRENT = ("lstm", "gru", "rnn")
KINDS = (*_RECURRENT, "bilstm", "bigru", "birnn", "dense", "emb")
_ALIASES = {"embedding": "emb", "linear": "dense", "simplernn": "rnn"}
#: Keys under their older spelling.
_KEY_ALIASES = {"last": "return_last"}
_KEYS = {
    "recurrent": {"i", "h", "l", "act", "p", "return_last", "merge", "bias"},
    "dense": {"i", "o", "act", "bias"},
    "emb": {"v", "d"},
}
#: Larger synthetic models are refused (4 bytes each: 4 GB of weights).
MAX_PARAMETERS = 1_000_000_000


def _fail(message: str) -> SpecSyntaxError:
    return SpecSyntaxError(f"--spec: {message}")


def _split_layers(text: str) -> list[tuple[str, dict[str, str]]]:
    layers = []
    for part in text.replace(";", "/").split("/"):
        part = part.strip()
        if not part:
            raise _fail(f"empty layer in {text!r} (layers are separated by '/' or ';')")
        kind, _, rest = part.partition(":")
        kind = kind.strip().lower()
        kind = _ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise _fail(f"unknown layer kind {kind!r} in {part!r}; expected one of "
                        f"{', '.join(KINDS)}")
        opts: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            key = _KEY_ALIASES.get(key, key)
            if not eq or not key or not value.strip():
                raise _fail(f"expected key=value, got {item!r} in {part!r}")
            if key in opts:
                raise _fail(f"{key.upper()} given twice in {part!r}")
            opts[key] = value.strip()
        group = kind if kind in ("dense", "emb") else "recurrent"
        unknown = sorted(set(opts) - _KEYS[group])
        if unknown:
            raise _fail(f"unknown key {unknown[0]!r} for {kind} in {part!r}; expected "
                        f"{', '.join(sorted(_KEYS[group]))}")
        layers.append((kind, opts))
    return layers


def _int(opts: dict[str, str], key: str, part: str, default: int | None = None,
         minimum: int = 1) -> int:
    if key not in opts:
        if default is None:
            raise _fail(f"{part} needs {key.upper()}=")
        return default
    try:
        value = int(opts[key])
    except ValueError:
        raise _fail(f"{part}: {key.upper()} must be an integer, got {opts[key]!r}") from None
    if value < minimum:
        raise _fail(f"{part}: {key.upper()} must be at least {minimum}, got {value}")
    return value


def _flag(opts: dict[str, str], key: str, part: str, default: bool) -> bool:
    value = opts.get(key)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise _fail(f"{part}: {key} must be 0 or 1, got {value!r}")


def _choice(opts: dict[str, str], key: str, part: str, default: str,
            allowed: tuple[str, ...]) -> str:
    value = opts.get(key, default).lower()
    if value not in allowed:
        raise _fail(f"{part}: {key}={value!r} is not one of {', '.join(allowed)}")
    return value


def _sizes(kind: str, opts: dict[str, str], size_in: int, part: str) -> dict[str, int]:
    """The declared sizes of one cell or layer of a --spec layer."""
    if kind == "emb":
        return {"vocab_size": _int(opts, "v", part), "output_size": _int(opts, "d", part)}
    if kind == "dense":
        return {"input_size": size_in, "output_size": _int(opts, "o", part)}
    cell = LAYER_KINDS[kind.removeprefix("bi")]
    h = _int(opts, "h", part)
    p = _int(opts, "p", part, h) if cell.kind == "lstm" else h
    return {"gates": cell.gates, "input_size": size_in,  # type: ignore[attr-defined]
            "hidden_size": h, "output_size": p}


def _params(kind: str, opts: dict[str, str], size_in: int, part: str) -> int:
    """Parameter count of one --spec layer (checked before any weight is drawn): the declared
    tensors of each cell, every stacked cell counted with the larger input size."""
    cls = LAYER_KINDS[{"emb": "embedding"}.get(kind, kind.removeprefix("bi"))]
    if kind in ("emb", "dense"):
        sizes = _sizes(kind, opts, size_in, part)
        return sum(int(np.prod(t.shape_for(sizes))) for t in cls.TENSORS)
    dirs = 2 if kind.startswith("bi") else 1
    p = _sizes(kind, opts, size_in, part)["output_size"]
    sizes = _sizes(kind, opts, max(size_in, dirs * p), part)
    per_cell = sum(int(np.prod(t.shape_for(sizes))) for t in cls.TENSORS)
    return dirs * _int(opts, "l", part, 1) * per_cell


class _Draw:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, bound: float | None, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal values (``bound`` None), else uniform in [-bound, bound]."""
        if bound is None:
            return self.rng.standard_normal(shape, dtype=np.float32)
        a = self.rng.random(shape, dtype=np.float32)
        a *= np.float32(2 * bound)
        a -= np.float32(bound)
        return a


def _skip(cls: Any, bias: bool, projection: bool) -> tuple[str, ...]:
    """The optional tensors left out: the bias ones without biases, the others (LSTM's
    projection) unless asked for."""
    return tuple(t.name for t in cls.TENSORS if t.optional
                 and not (bias if t.role == "bias" else projection))


def parse_spec(text: str, seed: int = 0) -> ModelSpec:
    """Build a model with random weights from a ``--spec`` text (see the module docstring).

    Parameters
    ----------
    text : str
        E.g. ``"lstm:I=128,H=256,L=2"`` or ``"emb:V=10000,D=128/bilstm:H=256/dense:O=2"``.
    seed : int
        Seed of the weights.

    Returns
    -------
    ModelSpec
        Torch mask semantics; metadata records the text and the seed.

    Raises
    ------
    SpecSyntaxError
        (a ``ValueError``) when the text cannot be parsed or the model is invalid; the message
        starts with ``--spec:`` and names the offending layer.
    """
    layers = _split_layers(text)
    size_in: int | None = None
    total = 0
    for k, (kind, opts) in enumerate(layers):
        part = f"layer {k} ({kind})"
        if kind == "emb":
            if k:
                raise _fail(f"{part}: an embedding can only be the first layer")
            size_in = _int(opts, "d", part)
            total += _params(kind, opts, 0, part)
            continue
        given = _int(opts, "i", part, 0) if "i" in opts else None
        if size_in is None:
            if given is None:
                raise _fail(f"{part} needs I= (the input size of the model)")
            size_in = given
        elif given is not None and given != size_in:
            raise _fail(f"{part}: I={given} but the previous layer outputs {size_in}")
        total += _params(kind, opts, size_in, part)
        if kind == "dense":
            size_in = _int(opts, "o", part)
        else:
            h = _int(opts, "h", part)
            p = _int(opts, "p", part, h) if kind.endswith("lstm") else h
            size_in = p * (2 if kind.startswith("bi") and opts.get("merge", "concat").lower()
                           == "concat" else 1)
    if total > MAX_PARAMETERS:
        raise _fail(f"about {total:.3g} parameters; at most {MAX_PARAMETERS:.0e} are allowed")

    draw = _Draw(seed)
    out: list[LayerSpec] = []
    size_in = None
    for k, (kind, opts) in enumerate(layers):
        part = f"layer {k} ({kind})"
        if kind == "emb":
            emb = LAYER_KINDS["embedding"].random(_sizes(kind, opts, 0, part), draw)
            out.append(emb)
            size_in = emb.output_size
            continue
        size_in = size_in if size_in is not None else _int(opts, "i", part)
        bias = _flag(opts, "bias", part, True)
        if kind == "dense":
            cls = LAYER_KINDS["dense"]
            act = _choice(opts, "act", part, "linear", DENSE_ACTIVATIONS)
            dense = cls.random(_sizes(kind, opts, size_in, part), draw,
                               _skip(cls, bias, False), activation=act)
            out.append(dense)
            size_in = dense.output_size
            continue
        cell = kind.removeprefix("bi")
        h, n = _int(opts, "h", part), _int(opts, "l", part, 1)
        p = _int(opts, "p", part) if "p" in opts else None
        if p is not None and cell != "lstm":
            raise _fail(f"{part}: P= (projection) is for LSTM layers only")
        if p == h:
            p = None
        act = _choice(opts, "act", part, "tanh", ("tanh", "relu") if cell == "rnn"
                      else CELL_ACTIVATIONS)
        last = _flag(opts, "return_last", part, False)
        bi = kind.startswith("bi")
        if "merge" in opts and not bi:
            raise _fail(f"{part}: merge= is for bidirectional layers only")
        merge = _choice(opts, "merge", part, "concat", MERGE_MODES)
        cls = LAYER_KINDS[cell]
        skip = _skip(cls, bias, p is not None)
        for j in range(n):
            sizes = {"gates": cls.gates, "input_size": size_in,  # type: ignore[attr-defined]
                     "hidden_size": h, "output_size": p or h}
            options = {"activation": act, "return_last": last and j == n - 1}
            if bi:
                fwd = cls.random(sizes, draw, skip, **options)
                bwd = cls.random(sizes, draw, skip, **options)
                layer: LayerSpec = BidirectionalSpec(forward=fwd, backward=bwd, merge_mode=merge)
            else:
                layer = cls.random(sizes, draw, skip, **options)
            out.append(layer)
            size_in = layer.output_size
    try:
        return ModelSpec(layers=tuple(out), mask_semantics="torch",
                         metadata={"source": "lstm-fast bench --spec", "spec": text,
                                   "seed": str(seed)})
    except ValueError as e:
        raise _fail(str(e)) from None
