"""Train the tiny character-level LSTM bundled as ``lstm_fast/data/demo_charlstm.npz``.

Deterministic (fixed seeds, CPU, 2 threads), offline, and self-contained: the
corpus is The Zen of Python (from the stdlib ``this`` module, public domain)
plus a few original lines below. The model is

    Embedding(V, 32) -> LSTM(32, 128, num_layers=2) -> Linear(128, V)

and is saved with ``numpy.savez`` (no pickled objects). The embedding is stored
as the float matrix ``embed`` (V, 32): the LSTM input for char id k is embed[k].

After saving, the file is reloaded into a fresh torch model and its greedy
output is checked against the float64 NumPy oracle in ``demo_reference.py``.

Usage::

    python examples/train_demo_model.py [--steps N] [--out PATH]
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib.util
import io
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "lstm_fast" / "data" / "demo_charlstm.npz"

EMBED_DIM = 32
HIDDEN = 128
LAYERS = 2
SEED_TEXT = "Beautiful is"

EXTRA_LINES = """\
A small model can learn a small text by heart.
Keep the state, step the cell, and emit one character at a time.
Measure first, then make it fast.
"""


def zen_of_python() -> str:
    """The Zen of Python, taken from the stdlib without printing it."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def build_corpus() -> str:
    """Zen body first (so the seed prompt starts the text), then the extra lines,
    then the title; the corpus is treated as cyclic during training."""
    title, body = zen_of_python().split("\n\n", 1)
    corpus = body.strip() + "\n\n" + EXTRA_LINES + "\n" + title + "\n\n"
    assert corpus.count(SEED_TEXT) == 1
    return corpus


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED_DIM)
        self.lstm = nn.LSTM(EMBED_DIM, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, vocab_size)

    def forward(
        self,
        ids: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.lstm(self.embed(ids), state)
        return self.head(out), state


def train(
    corpus: str, vocab: list[str], steps: int, batch: int, seq_len: int
) -> tuple[CharLSTM, float]:
    """Train on random cyclic windows of the corpus, each from a zero state."""
    char_to_id = {ch: i for i, ch in enumerate(vocab)}
    data = torch.tensor([char_to_id[c] for c in corpus], dtype=torch.long)
    n = len(data)
    # Two laps of the corpus so windows can wrap around its end.
    reps = (seq_len + 1) // n + 2
    looped = data.repeat(reps)

    model = CharLSTM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=2e-4)
    loss_fn = nn.CrossEntropyLoss()
    offsets_arange = torch.arange(seq_len + 1)
    loss_val = float("nan")
    for step in range(1, steps + 1):
        starts = torch.randint(0, n, (batch,))
        windows = looped[starts[:, None] + offsets_arange]
        logits, _ = model(windows[:, :-1])
        loss = loss_fn(logits.reshape(-1, len(vocab)), windows[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = loss.item()
        if step % 100 == 0 or step == steps:
            print(f"step {step:5d}  loss {loss_val:.4f}")
    return model, loss_val


def export_npz(model: CharLSTM, vocab: list[str], path: Path) -> None:
    def f32(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

    arrays: dict[str, np.ndarray] = {
        "vocab": np.array([ord(c) for c in vocab], dtype=np.uint32),
        "embed": f32(model.embed.weight),
        "head_w": f32(model.head.weight),
        "head_b": f32(model.head.bias),
        "seed_text": np.array([ord(c) for c in SEED_TEXT], dtype=np.uint32),
    }
    for k in range(LAYERS):
        arrays[f"w_ih_{k}"] = f32(getattr(model.lstm, f"weight_ih_l{k}"))
        arrays[f"w_hh_{k}"] = f32(getattr(model.lstm, f"weight_hh_l{k}"))
        arrays[f"b_ih_{k}"] = f32(getattr(model.lstm, f"bias_ih_l{k}"))
        arrays[f"b_hh_{k}"] = f32(getattr(model.lstm, f"bias_hh_l{k}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_torch_from_npz(path: Path) -> tuple[CharLSTM, list[str], str]:
    """Rebuild a float32 torch model from the bundled file (round-trip check)."""
    with np.load(path, allow_pickle=False) as z:
        vocab = [chr(int(c)) for c in z["vocab"]]
        seed_text = "".join(chr(int(c)) for c in z["seed_text"])
        model = CharLSTM(len(vocab))
        with torch.no_grad():
            model.embed.weight.copy_(torch.from_numpy(z["embed"]))
            model.head.weight.copy_(torch.from_numpy(z["head_w"]))
            model.head.bias.copy_(torch.from_numpy(z["head_b"]))
            for k in range(LAYERS):
                for src, dst in (
                    ("w_ih", "weight_ih_l"),
                    ("w_hh", "weight_hh_l"),
                    ("b_ih", "bias_ih_l"),
                    ("b_hh", "bias_hh_l"),
                ):
                    getattr(model.lstm, f"{dst}{k}").copy_(torch.from_numpy(z[f"{src}_{k}"]))
    return model.eval(), vocab, seed_text


@torch.no_grad()
def generate_torch(
    model: CharLSTM, vocab: list[str], prompt: str, n_chars: int
) -> tuple[str, float]:
    """Greedy generation, one character per step, with torch float32.

    Also returns the smallest top-1 minus top-2 logit gap seen, i.e. how much
    numerical slack an engine has before its greedy output could diverge."""
    char_to_id = {ch: i for i, ch in enumerate(vocab)}
    ids = torch.tensor([[char_to_id[c] for c in prompt]])
    logits, state = model(ids)
    out: list[str] = []
    min_gap = float("inf")
    for _ in range(n_chars):
        top2 = logits[0, -1].topk(2).values
        min_gap = min(min_gap, float(top2[0] - top2[1]))
        nxt = int(logits[0, -1].argmax())
        out.append(vocab[nxt])
        logits, state = model(torch.tensor([[nxt]]), state)
    return "".join(out), min_gap


def load_reference_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_reference", HERE / "demo_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(2)
    corpus = build_corpus()
    vocab = sorted(set(corpus))
    print(f"corpus: {len(corpus)} chars, vocab: {len(vocab)}")

    t0 = time.perf_counter()
    model, final_loss = train(corpus, vocab, args.steps, args.batch, args.seq_len)
    train_s = time.perf_counter() - t0
    print(f"training: {train_s:.1f} s, final loss {final_loss:.4f}")

    export_npz(model, vocab, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")

    # Verify: torch model rebuilt from the file vs. the float64 NumPy oracle.
    n_check = 2 * len(corpus)
    tmodel, tvocab, seed_text = load_torch_from_npz(args.out)
    torch_text, min_gap = generate_torch(tmodel, tvocab, seed_text, n_check)
    ref = load_reference_module()
    numpy_text = ref.generate_reference(args.out, n_check)
    if torch_text != numpy_text:
        raise SystemExit("MISMATCH: numpy reference differs from torch greedy output")
    print(f"numpy reference == torch greedy output ({n_check} chars)")
    print(f"smallest greedy top-1/top-2 logit gap: {min_gap:.3f}")

    start = corpus.index(seed_text) + len(seed_text)
    expected = (corpus * 4)[start : start + n_check]
    n_ok = sum(a == b for a, b in zip(numpy_text, expected, strict=True))
    print(f"greedy output matches the cyclic corpus on {n_ok}/{n_check} chars")
    print("sample:\n" + seed_text + numpy_text[:200])


if __name__ == "__main__":
    main()
