"""Helpers shared by the test areas: paths, the kernel levels of this CPU, random layer specs,
and the one reader of every state form. Fixtures live in ``conftest.py``; the float64 oracle
in ``reference.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import lstm_fast as lf
from lstm_fast import _core
from lstm_fast.spec import (
    BidirectionalSpec,
    DenseSpec,
    EmbeddingSpec,
    GRULayerSpec,
    LSTMLayerSpec,
    ModelSpec,
    SimpleRNNLayerSpec,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

#: Every kernel level this CPU can run, portable included.
ISAS = ["portable", "avx2", "avx512"][: ["portable", "avx2", "avx512"].index(_core.best_isa()) + 1]


def lstm_spec(rng: np.random.Generator, I: int, H: int, **kw: Any) -> LSTMLayerSpec:
    """A random LSTM at PyTorch's init scale (``bias=False`` drops the bias)."""
    s = 1.0 / np.sqrt(H)
    return LSTMLayerSpec(rng.uniform(-s, s, (4 * H, I)), rng.uniform(-s, s, (4 * H, H)),
                         rng.uniform(-s, s, 4 * H) if kw.pop("bias", True) else None, **kw)


def cell_spec(rng: np.random.Generator, kind: str, I: int, H: int, **kw: Any
              ) -> LSTMLayerSpec | GRULayerSpec | SimpleRNNLayerSpec:
    """A random cell of one kind: lstm, lstm_proj, gru, gru_before or rnn."""
    s = 1.0 / np.sqrt(H)

    def u(*shape: int) -> np.ndarray:
        return rng.uniform(-s, s, shape)

    bias = kw.pop("bias", True)
    if kind.startswith("lstm"):
        P = max(1, H // 2) if kind == "lstm_proj" else None
        return LSTMLayerSpec(u(4 * H, I), u(4 * H, P or H), u(4 * H) if bias else None,
                             w_hr=u(P, H) if P else None, **kw)
    if kind.startswith("gru"):
        return GRULayerSpec(u(3 * H, I), u(3 * H, H), u(3 * H) if bias else None,
                            u(3 * H) if bias else None, reset_after=kind == "gru", **kw)
    kw.pop("recurrent_activation", None)
    return SimpleRNNLayerSpec(u(H, I), u(H, H), u(H) if bias else None, **kw)


def dense_spec(rng: np.random.Generator, I: int, O: int, activation: str = "linear"
               ) -> DenseSpec:
    return DenseSpec(rng.uniform(-1, 1, (O, I)) / np.sqrt(I), rng.uniform(-0.5, 0.5, O),
                     activation)


def id_chain_spec(rng: np.random.Generator, bi_kind: str, second_kind: str, H: int = 48
                  ) -> ModelSpec:
    """Embedding(50, 20) -> bidirectional bi_kind (H, concat) -> second_kind (32) ->
    Dense(10, tanh): every layer kind a quantized model narrows, in one chain."""
    emb = EmbeddingSpec(rng.uniform(-1, 1, (50, 20)))
    bi = BidirectionalSpec(cell_spec(rng, bi_kind, 20, H), cell_spec(rng, bi_kind, 20, H),
                           "concat")
    second = cell_spec(rng, second_kind, 2 * H, 32)
    dense = DenseSpec(rng.uniform(-0.3, 0.3, (10, 32)), rng.uniform(-0.1, 0.1, 10), "tanh")
    return ModelSpec(layers=(emb, bi, second, dense))


def per_cell(state: Any, n: int | None = None) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``[(h, c or None)]`` per cell from any state form: the oracle's list of (h, c_or_None),
    or ``Model.predict``'s / ``Stream.state``'s (see ``lstm_fast.model.State``): (h, c)
    stacked (all LSTMs of one size), h stacked (all GRU/RNN of one size), or a list of (h, c)
    (LSTM) and h (others) entries. ``n``, when given, is the number of cells expected."""
    if isinstance(state, np.ndarray):
        out = [(h, None) for h in state]
    elif isinstance(state, tuple) and len(state) == 2 and all(
            isinstance(a, np.ndarray) and a.ndim == 3 for a in state):
        out = list(zip(state[0], state[1], strict=True))
    else:
        out = [(s[0], s[1]) if isinstance(s, (tuple, list)) else (s, None) for s in state]
    if n is not None:
        assert len(out) == n, f"{len(out)} cell states, expected {n}"
    return out


def check_states(states: Any, h_n: np.ndarray, c_n: np.ndarray | None, spec: lf.ModelSpec,
                 who: str, atol: float = 1e-5) -> None:
    """Final states, one per cell in ``spec.cells`` order (torch's ``layer * 2 + direction``),
    against torch's h_n (and c_n)."""
    cells, got = spec.cells, per_cell(states)
    assert len(cells) == len(got) == h_n.shape[0]
    for i, (cell, (h, c)) in enumerate(zip(cells, got, strict=True)):
        np.testing.assert_allclose(np.asarray(h), h_n[i], rtol=0, atol=atol,
                                   err_msg=f"{who}: h of cell {i} vs torch h_n[{i}]")
        if c_n is not None and cell.kind == "lstm":
            np.testing.assert_allclose(np.asarray(c), c_n[i], rtol=0, atol=atol,
                                       err_msg=f"{who}: c of cell {i} vs torch c_n[{i}]")
