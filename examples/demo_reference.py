"""Pure float64 NumPy reference for the bundled demo character-level LSTM.

This is an independent oracle for ``lstm-fast demo``: it re-implements the
LSTM equations directly (no torch, no lstm_fast) on the weights stored in
``lstm_fast/data/demo_charlstm.npz``.

Usage::

    python examples/demo_reference.py [npz_path] [n_chars] [temperature]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

DEFAULT_NPZ = Path(__file__).resolve().parent.parent / "lstm_fast" / "data" / "demo_charlstm.npz"


def _sigmoid(x: F64) -> F64:
    # Numerically stable logistic: avoids overflow in exp for large |x|.
    out: F64 = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


class CharLSTMReference:
    """Stacked LSTM + linear head, evaluated one step at a time in float64."""

    def __init__(self, npz_path: str | Path) -> None:
        with np.load(npz_path, allow_pickle=False) as z:
            self.vocab: list[str] = [chr(int(c)) for c in z["vocab"]]
            self.embed: F64 = z["embed"].astype(np.float64)
            n_layers = 0
            while f"w_ih_{n_layers}" in z:
                n_layers += 1
            self.w_ih: list[F64] = [z[f"w_ih_{k}"].astype(np.float64) for k in range(n_layers)]
            self.w_hh: list[F64] = [z[f"w_hh_{k}"].astype(np.float64) for k in range(n_layers)]
            self.bias: list[F64] = [
                z[f"b_ih_{k}"].astype(np.float64) + z[f"b_hh_{k}"].astype(np.float64)
                for k in range(n_layers)
            ]
            self.head_w: F64 = z["head_w"].astype(np.float64)
            self.head_b: F64 = z["head_b"].astype(np.float64)
            self.seed_text: str = "".join(chr(int(c)) for c in z["seed_text"])
        self.n_layers = n_layers
        self.hidden_size = self.w_hh[0].shape[1]
        self.char_to_id = {ch: i for i, ch in enumerate(self.vocab)}
        self.reset()

    def reset(self) -> None:
        """Zero the hidden and cell state of every layer."""
        self.h: list[F64] = [np.zeros(self.hidden_size) for _ in range(self.n_layers)]
        self.c: list[F64] = [np.zeros(self.hidden_size) for _ in range(self.n_layers)]

    def step(self, char_id: int) -> F64:
        """Feed one character id; return the float64 logits for the next one."""
        x = self.embed[char_id]
        hs = self.hidden_size
        for k in range(self.n_layers):
            gates = self.w_ih[k] @ x + self.w_hh[k] @ self.h[k] + self.bias[k]
            i = _sigmoid(gates[0 * hs : 1 * hs])
            f = _sigmoid(gates[1 * hs : 2 * hs])
            g = np.tanh(gates[2 * hs : 3 * hs])
            o = _sigmoid(gates[3 * hs : 4 * hs])
            self.c[k] = f * self.c[k] + i * g
            self.h[k] = o * np.tanh(self.c[k])
            x = self.h[k]
        logits: F64 = self.head_w @ x + self.head_b
        return logits

    def generate(
        self,
        n_chars: int,
        temperature: float = 0.0,
        prompt: str | None = None,
        seed: int = 0,
    ) -> str:
        """Reset state, feed ``prompt`` (default: the bundled seed text), then
        generate ``n_chars`` characters. ``temperature <= 0`` means greedy argmax.
        Returns only the generated characters (not the prompt)."""
        prompt = self.seed_text if prompt is None else prompt
        if not prompt:
            raise ValueError("prompt must be non-empty")
        rng = np.random.default_rng(seed)
        self.reset()
        logits = np.zeros(len(self.vocab))
        for ch in prompt:
            logits = self.step(self.char_to_id[ch])
        out: list[str] = []
        for _ in range(n_chars):
            if temperature <= 0.0:
                nxt = int(np.argmax(logits))
            else:
                z = logits / temperature
                p = np.exp(z - z.max())
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(self.vocab[nxt])
            logits = self.step(nxt)
        return "".join(out)


def generate_reference(
    npz_path: str | Path, n_chars: int, temperature: float = 0.0, seed: int = 0
) -> str:
    """Feed the bundled seed text, then generate ``n_chars`` characters.

    ``temperature == 0`` (default) is greedy argmax decoding; otherwise samples
    from softmax(logits / temperature) with ``np.random.default_rng(seed)``.
    The returned string excludes the seed text.
    """
    return CharLSTMReference(npz_path).generate(n_chars, temperature, seed=seed)


def main(argv: list[str]) -> None:
    npz = Path(argv[1]) if len(argv) > 1 else DEFAULT_NPZ
    n = int(argv[2]) if len(argv) > 2 else 200
    temp = float(argv[3]) if len(argv) > 3 else 0.0
    model = CharLSTMReference(npz)
    text = model.generate(n, temp)
    print(f"seed: {model.seed_text!r}")
    print(model.seed_text + text)


if __name__ == "__main__":
    main(sys.argv)
