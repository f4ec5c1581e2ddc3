"""The oracle: a float64 numpy LSTM written from the published equations, not from our code.

    i = σ(W_ii x + W_hi h + b_i)    f = σ(W_if x + W_hf h + b_f)
    g = tanh(W_ig x + W_hg h + b_g) o = σ(W_io x + W_ho h + b_o)
    c' = f c + i g                  h' = o tanh(c')

Weights are in PyTorch layout: per layer (W_ih (4H, I), W_hh (4H, H), b_ih, b_hh), gate
blocks i, f, g, o. Inputs are batch-first (B, T, I).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Layer = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def lstm_layer(
    x: np.ndarray, layer: Layer, h0: np.ndarray, c0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer over (B, T, I) in float64; returns (y (B, T, H), h_T, c_T)."""
    w_ih, w_hh, b_ih, b_hh = (None if a is None else np.asarray(a, np.float64) for a in layer)
    H = w_hh.shape[1]
    bias = np.zeros(4 * H)
    for b in (b_ih, b_hh):
        if b is not None:
            bias = bias + b
    h, c = np.array(h0, np.float64), np.array(c0, np.float64)
    y = np.empty((x.shape[0], x.shape[1], H))
    for t in range(x.shape[1]):
        z = x[:, t] @ w_ih.T + h @ w_hh.T + bias
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), \
            sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        y[:, t] = h
    return y, h, c


def lstm(
    x: np.ndarray,
    layers: Sequence[Layer],
    initial_state: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Stacked LSTM; states (num_layers, B, H) in PyTorch's h_n/c_n order."""
    x = np.asarray(x, np.float64)
    B, H, L = x.shape[0], layers[0][1].shape[1], len(layers)
    if initial_state is None:
        h0 = c0 = np.zeros((L, B, H))
    else:
        h0, c0 = initial_state
    hs, cs = [], []
    for k, layer in enumerate(layers):
        x, h, c = lstm_layer(x, layer, h0[k], c0[k])
        hs.append(h)
        cs.append(c)
    return x, (np.stack(hs), np.stack(cs))


def random_layers(
    rng: np.random.Generator, input_size: int, hidden_size: int, num_layers: int,
    bias: bool = True, scale: float | None = None,
) -> list[Layer]:
    """PyTorch-like random weights (uniform ±1/sqrt(H) unless ``scale`` is given), float32."""
    s = scale if scale is not None else 1.0 / np.sqrt(hidden_size)
    out = []
    for k in range(num_layers):
        i = input_size if k == 0 else hidden_size

        def u(*shape: int) -> np.ndarray:
            return rng.uniform(-s, s, size=shape).astype(np.float32)

        out.append((u(4 * hidden_size, i), u(4 * hidden_size, hidden_size),
                    u(4 * hidden_size) if bias else None, u(4 * hidden_size) if bias else None))
    return out
