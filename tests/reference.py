"""The oracle: a float64 numpy LSTM written from the published equations, not from our code.

    i = σ(W_ii x + W_hi h + b_i)    f = σ(W_if x + W_hf h + b_f)
    g = tanh(W_ig x + W_hg h + b_g) o = σ(W_io x + W_ho h + b_o)
    c' = f c + i g                  h' = o tanh(c')

Weights are in PyTorch layout: per layer (W_ih (4H, I), W_hh (4H, H), b_ih, b_hh), gate
blocks i, f, g, o. Inputs are batch-first (B, T, I).
"""

from __future__ import annotations

import math
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


# --- Whole-model oracle: a float64 interpretation of a ModelSpec, from its documented semantics.

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_erf = np.frompyfunc(math.erf, 1, 1)


def activation(name: str, x: np.ndarray) -> np.ndarray:
    """Float64 activations by their spec names (see lstm_fast.spec.DENSE_ACTIVATIONS)."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        if name == "linear":
            return x
        if name == "relu":
            return np.maximum(x, 0.0)
        if name == "relu6":
            return np.clip(x, 0.0, 6.0)
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            return sigmoid(x)
        if name == "hard_sigmoid":
            return np.clip(x / 6.0 + 0.5, 0.0, 1.0)
        if name == "hard_sigmoid_keras2":
            return np.clip(0.2 * x + 0.5, 0.0, 1.0)
        if name == "softsign":
            return x / (1.0 + np.abs(x))
        if name == "softplus":
            return np.logaddexp(0.0, x)
        if name == "elu":
            return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))
        if name == "selu":
            return _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
        if name == "silu":
            return x * sigmoid(x)
        if name == "gelu":
            return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
        if name == "exponential":
            return np.exp(x)
        if name == "softmax":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        if name == "log_softmax":
            m = x.max(axis=-1, keepdims=True)
            return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


def _cell_step(L, x, h, c):
    """One step of a cell spec in float64: returns (output h', c' or None)."""
    f64 = lambda a: None if a is None else np.asarray(a, np.float64)  # noqa: E731
    if L.kind == "lstm":
        H = L.hidden_size
        z = x @ f64(L.w_ih).T + h @ f64(L.w_hh).T
        if L.bias is not None:
            z = z + f64(L.bias)
        ract, act = L.recurrent_activation, L.activation
        i, f = activation(ract, z[:, :H]), activation(ract, z[:, H:2 * H])
        g, o = activation(act, z[:, 2 * H:3 * H]), activation(ract, z[:, 3 * H:])
        c = f * c + i * g
        h = o * activation(act, c)
        if L.w_hr is not None:
            h = h @ f64(L.w_hr).T
        return h, c
    if L.kind == "gru":
        H = L.hidden_size
        w_hh = f64(L.w_hh)
        b_ih = np.zeros(3 * H) if L.b_ih is None else f64(L.b_ih)
        b_hh = np.zeros(3 * H) if L.b_hh is None else f64(L.b_hh)
        gx = x @ f64(L.w_ih).T + b_ih
        gh = h @ w_hh[:2 * H].T + b_hh[:2 * H]
        r = activation(L.recurrent_activation, gx[:, :H] + gh[:, :H])
        z = activation(L.recurrent_activation, gx[:, H:2 * H] + gh[:, H:])
        if L.reset_after:
            hn = h @ w_hh[2 * H:].T + b_hh[2 * H:]
            n = activation(L.activation, gx[:, 2 * H:] + r * hn)
        else:
            n = activation(L.activation, gx[:, 2 * H:] + (r * h) @ w_hh[2 * H:].T + b_hh[2 * H:])
        return z * h + (1.0 - z) * n, None
    if L.kind == "rnn":
        z = x @ f64(L.w_ih).T + h @ f64(L.w_hh).T
        if L.bias is not None:
            z = z + f64(L.bias)
        return activation(L.activation, z), None
    raise ValueError(f"unknown cell kind {L.kind!r}")


def _run_cell(x, mask, L, h, c, *, keras, reverse, time_aligned, zero_out):
    """One cell over (B, T, I) with a (B, T) mask. Masked steps carry the state and output
    0 (zero_out) or the previous output (0 before the first valid one). Steps run T-1..0 when
    reverse; outputs go to their step's time (time_aligned) or to processing order.
    Returns (y, last output, h, c)."""
    B, T = x.shape[:2]
    y = np.zeros((B, T, L.output_size))
    prev_out = np.zeros((B, L.output_size))
    for p in range(T):
        t = T - 1 - p if reverse else p
        h_new, c_new = _cell_step(L, x[:, t], h, c)
        m = mask[:, t][:, None]
        h = np.where(m, h_new, h)
        if c is not None:
            c = np.where(m, c_new, c)
        prev_out = np.where(m, h_new, prev_out)
        y[:, t if time_aligned else p] = np.where(m, h_new, 0.0) if zero_out else prev_out
    return y, (prev_out if keras else h), h, c


_MERGE = {"concat": lambda f, b: np.concatenate([f, b], axis=-1), "sum": np.add,
          "ave": lambda f, b: (f + b) / 2.0, "mul": np.multiply}


def _initial(L, B, initial_state, k):
    if initial_state is None:
        h = np.zeros((B, L.output_size))
        c = np.zeros((B, L.hidden_size)) if L.kind == "lstm" else None
        return h, c
    h, c = initial_state[k]
    return np.asarray(h, np.float64), (None if c is None else np.asarray(c, np.float64))


def spec_forward(spec, x, *, lengths=None, initial_state=None):
    """Run a ``lstm_fast.spec.ModelSpec`` in float64.

    ``x`` is (B, T, F) floats or (B, T) ids; ``lengths`` (B,) masks steps t >= lengths[b];
    ``initial_state`` is a list of (h, c or None) per cell in ``spec.cells`` order. Returns
    ``(y, states)`` with ``states`` the final (h, c or None) per cell, in the same order.
    """
    x = np.asarray(x)
    B, T = x.shape[:2]
    mask = np.ones((B, T), dtype=bool)
    if lengths is not None:
        mask &= np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    keras = spec.mask_semantics == "keras"
    states: list = []
    for L in spec.layers:
        if L.kind == "embedding":
            ids = x.astype(np.int64)
            if L.mask_zero:
                mask &= ids != 0
            x = L.weight.astype(np.float64)[ids]
        elif L.kind == "masking":
            x = np.asarray(x, np.float64)
            keep = np.any(x != L.mask_value, axis=-1)
            mask &= keep
            x = np.where(keep[..., None], x, 0.0)
        elif L.kind == "dense":
            z = np.asarray(x, np.float64) @ L.weight.astype(np.float64).T
            if L.bias is not None:
                z = z + L.bias
            x = activation(L.activation, z)
        elif L.kind == "affine":
            z = np.asarray(x, np.float64)
            if L.scale is not None:
                z = z * L.scale.astype(np.float64)
            if L.shift is not None:
                z = z + L.shift.astype(np.float64)
            x = activation(L.activation, z)
        elif L.kind == "normalize":
            z = np.asarray(x, np.float64)
            norm = np.sqrt(np.sum(z * z, axis=-1, keepdims=True))
            x = z / np.maximum(norm, L.epsilon)
        elif L.kind in ("lstm", "gru", "rnn"):
            h, c = _initial(L, B, initial_state, len(states))
            y, last, h, c = _run_cell(np.asarray(x, np.float64), mask, L, h, c, keras=keras,
                                      reverse=L.go_backwards, time_aligned=False,
                                      zero_out=not keras)
            states.append((h, c))
            x = y if L.return_sequences else last
        elif L.kind == "bidirectional":
            xs, outs = np.asarray(x, np.float64), []
            for cell, reverse in ((L.forward, False), (L.backward, True)):
                h, c = _initial(cell, B, initial_state, len(states))
                y, last, h, c = _run_cell(xs, mask, cell, h, c, keras=keras, reverse=reverse,
                                          time_aligned=True, zero_out=True)
                states.append((h, c))
                outs.append(y if L.return_sequences else last)
            x = _MERGE[L.merge_mode](*outs)
        else:
            raise ValueError(f"unknown layer kind {L.kind!r}")
    return x, states
