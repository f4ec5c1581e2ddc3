"""The bundled example: a small character-level LSTM (2 x 128, trained on the Zen of Python)
that writes text one character at a time through a stateful stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .model import Model, Stream


@dataclass
class CharModel:
    """Embedding rows -> LSTM stack -> linear head, with the vocabulary."""

    model: Model
    embed: np.ndarray
    head_w: np.ndarray
    head_b: np.ndarray
    vocab: list[str]
    seed_text: str

    @classmethod
    def load_bundled(cls) -> CharModel:
        path = resources.files("lstm_fast") / "data" / "demo_charlstm.npz"
        with resources.as_file(path) as p, np.load(p, allow_pickle=False) as z:
            n = sum(1 for k in z.files if k.startswith("w_ih_"))
            layers = [(z[f"w_ih_{k}"], z[f"w_hh_{k}"], z[f"b_ih_{k}"], z[f"b_hh_{k}"])
                      for k in range(n)]
            return cls(Model.from_lstm_weights(layers), z["embed"], z["head_w"], z["head_b"],
                       [chr(int(c)) for c in z["vocab"]],
                       "".join(chr(int(c)) for c in z["seed_text"]))

    def generate(self, n_chars: int, temperature: float = 0.0, seed: int = 0,
                 prompt: str | None = None) -> tuple[str, np.ndarray]:
        """Feed the prompt, then generate ``n_chars`` characters (greedy at temperature 0).

        Returns the generated text and the latency of each engine step in seconds.
        """
        ids = {ch: i for i, ch in enumerate(self.vocab)}
        prompt = self.seed_text if prompt is None else prompt
        unknown = sorted(set(prompt) - set(ids))
        if unknown or not prompt:
            raise ValueError(f"the prompt must be non-empty and use only the model's "
                             f"characters; unknown: {unknown!r}")
        rng = np.random.default_rng(seed)
        stream: Stream = self.model.stream(batch=1)
        step = stream.step
        x = np.empty((1, self.embed.shape[1]), np.float32)
        out, times = [], np.empty(n_chars + len(prompt) - 1)
        h = None
        for k, ch in enumerate(prompt):
            x[0] = self.embed[ids[ch]]
            t0 = time.perf_counter()
            h = step(x)
            times[k] = time.perf_counter() - t0
        for k in range(n_chars):
            logits = self.head_w @ h[0] + self.head_b
            if temperature > 0:
                p = np.exp((logits - logits.max()) / temperature)
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            else:
                nxt = int(np.argmax(logits))
            out.append(self.vocab[nxt])
            if k == n_chars - 1:
                break
            x[0] = self.embed[nxt]
            t0 = time.perf_counter()
            h = step(x)
            times[len(prompt) + k] = time.perf_counter() - t0
        return "".join(out), times


def run_demo(n_chars: int = 400, temperature: float = 0.0, seed: int = 0) -> str:
    """Print generated text and per-step latency; returns the generated text."""
    cm = CharModel.load_bundled()
    m = cm.model
    print(f"lstm_fast demo: character-level LSTM, {m.num_layers} layers x {m.hidden_size} "
          f"units, kernels: {m.isa}")
    print(f"prompt: {cm.seed_text!r}\n")
    text, times = cm.generate(n_chars, temperature, seed)
    print(cm.seed_text + text)
    us = np.sort(times) * 1e6
    print(f"\n{len(times)} stream steps (one character each): median {np.median(us):.2f} us, "
          f"p90 {us[int(0.9 * (len(us) - 1))]:.2f} us, p99 {us[int(0.99 * (len(us) - 1))]:.2f} us "
          f"per step (Python call included)")
    return text
