"""Text classification: a PyTorch LSTM classifier, converted and run by lstm_fast.

End to end, in a few seconds on a CPU:

1. make a tiny synthetic "review" data set: variable-length token sequences whose class is
   positive when the word "good" appears, negative when "bad" appears, neutral otherwise;
2. train ``nn.Embedding -> nn.LSTM(batch_first=True) -> nn.Linear`` on the final hidden state
   ``h_n[-1]`` of packed sequences (``pack_padded_sequence``), the usual torch classifier;
3. ``torch.save(model.state_dict(), ...)``;
4. convert the state dict with the CLI: ``lstm-fast convert ... --return-last`` (the Linear
   reads the last *valid* step, i.e. ``h_n[-1]``);
5. load it with ``lstm_fast.load`` and run ``predict(ids, lengths=lengths)`` on the padded
   held-out batch: compare the logits with torch's and the accuracy;
6. time one sequence at a time (batch 1) in lstm_fast and in torch (indicative only).

Usage::

    python examples/torch_text_classifier.py [--workdir DIR]

Outputs (checkpoint, converted model) go to ``--workdir`` (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_fast

SEED = 0
TOLERANCE = 1e-4
FILLER = ("the movie was plot actors a and it very quite story film music scenes ending "
          "long short really acting script director cast i we saw this").split()
VOCAB = ["<pad>", "good", "bad", *FILLER]  # id 0 is padding
GOOD, BAD = VOCAB.index("good"), VOCAB.index("bad")
CLASSES = ("neutral", "positive", "negative")
MIN_LEN, MAX_LEN = 4, 40
EMBED, HIDDEN = 16, 32


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded ids (n, MAX_LEN), lengths (n,) and labels (n,)."""
    ids = np.zeros((n, MAX_LEN), dtype=np.int64)
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, n)
    labels = rng.integers(0, len(CLASSES), n)
    for k in range(n):
        L = lengths[k]
        ids[k, :L] = rng.integers(3, len(VOCAB), L)  # filler words only
        if labels[k]:  # put the class word somewhere in the sentence
            ids[k, rng.integers(0, L)] = GOOD if labels[k] == 1 else BAD
    return ids, lengths, labels


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), EMBED, padding_idx=0)
        self.lstm = nn.LSTM(EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, len(CLASSES))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.head(h_n[-1])  # logits (B, classes) from the last valid step


def train(model: Classifier, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
          epochs: int, rng: np.random.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    x, n, y = torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(labels)
    for epoch in range(epochs):
        order = torch.from_numpy(rng.permutation(len(ids)))
        total = 0.0
        for b in order.split(64):
            opt.zero_grad()
            loss = loss_fn(model(x[b], n[b]), y[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(ids):.4f}")


def median_us(fn, calls: int) -> float:
    """Median wall time of ``fn()`` in microseconds, after a few warm-up calls."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", help="where to write the files (default: a temporary dir)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per engine")
    args = ap.parse_args(argv)
    if args.workdir:
        return run(Path(args.workdir), args.epochs, args.calls)
    with tempfile.TemporaryDirectory(prefix="lstm_fast_text_") as tmp:
        code = run(Path(tmp), args.epochs, args.calls)
        print("(a temporary directory, removed now; keep the files with --workdir DIR)")
        return code


def run(workdir: Path, epochs: int, calls: int) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # lstm_fast runs on one thread too: a like-for-like comparison
    rng = np.random.default_rng(SEED)

    print("== 1. data")
    train_ids, train_len, train_y = make_data(3000, rng)
    test_ids, test_len, test_y = make_data(500, rng)
    print(f"  vocabulary {len(VOCAB)} words, classes {CLASSES}, lengths {MIN_LEN}..{MAX_LEN}; "
          f"{len(train_ids)} training and {len(test_ids)} held-out sequences")
    print(f"  e.g. [{CLASSES[test_y[0]]}] "
          + " ".join(VOCAB[i] for i in test_ids[0, :test_len[0]]))

    print("== 2. train Embedding -> LSTM -> Linear(h_n[-1]) on packed sequences")
    model = Classifier()
    t0 = time.perf_counter()
    model.train()
    train(model, train_ids, train_len, train_y, epochs, rng)
    model.eval()
    print(f"  trained in {time.perf_counter() - t0:.1f} s")

    print("== 3. save the state dict")
    ckpt = workdir / "text_classifier.pt"
    torch.save(model.state_dict(), ckpt)
    print(f"  {ckpt}: keys {list(model.state_dict())}")

    print("== 4. convert with the CLI (--return-last: the Linear reads h_n[-1])")
    out = workdir / "text_classifier.lfm"
    cmd = [sys.executable, "-m", "lstm_fast", "convert", str(ckpt), "-o", str(out),
           "--return-last"]
    print("  $ " + " ".join(["lstm-fast", *cmd[3:]]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        print("  | " + line)
    if proc.returncode != 0:
        print(f"conversion failed (exit code {proc.returncode})")
        return 1

    print("== 5. run with lstm_fast.load(...).predict(ids, lengths=lengths)")
    fast = lstm_fast.load(out)
    logits = fast.predict(test_ids, lengths=test_len)  # (B, classes); padding is ignored
    with torch.no_grad():
        ref = model(torch.from_numpy(test_ids), torch.from_numpy(test_len)).numpy()
    diff = float(np.max(np.abs(logits.astype(np.float64) - ref)))
    print(f"  logits {logits.shape}, max abs difference vs torch: {diff:.3g}")
    acc_fast = float(np.mean(logits.argmax(1) == test_y))
    acc_torch = float(np.mean(ref.argmax(1) == test_y))
    same = int(np.sum(logits.argmax(1) == ref.argmax(1)))
    print(f"  held-out accuracy: lstm_fast {acc_fast:.1%}, torch {acc_torch:.1%} "
          f"(same class for {same}/{len(ref)} sequences)")
    assert diff < TOLERANCE, f"lstm_fast differs from torch by {diff:.3g}"
    assert acc_fast == acc_torch

    print(f"== 6. latency per sequence, batch 1, median of {calls} calls "
          "(indicative only: one machine, one thread)")
    # One unpadded sequence at a time, as a service answering requests would see them. For
    # torch the fastest equivalent path is used (no packing is needed for a single sequence).
    seqs = [test_ids[k:k + 1, :test_len[k]] for k in range(calls)]
    it = iter(range(10**9))

    def call_fast() -> None:
        fast.predict(seqs[next(it) % calls])

    def call_torch() -> None:
        with torch.no_grad():
            x = torch.from_numpy(seqs[next(it) % calls])
            _, (h_n, _) = model.lstm(model.embed(x))
            model.head(h_n[-1])

    us_fast = median_us(call_fast, calls)
    us_torch = median_us(call_torch, calls)
    mean_len = float(np.mean(test_len[:calls]))
    print(f"  lstm_fast: {us_fast:8.1f} us/sequence (mean length {mean_len:.0f} tokens)")
    print(f"  torch:     {us_torch:8.1f} us/sequence   ({us_torch / us_fast:.1f}x)")
    print(f"done; files in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
