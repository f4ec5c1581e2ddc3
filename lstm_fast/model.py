"""The Python API users touch: :class:`Model` (immutable, shareable) and :class:`Stream`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import check_array
from ._core import CModel, CState
from .errors import ShapeError, WeightsError
from .spec import LSTMLayerSpec, ModelSpec

State = tuple[np.ndarray, np.ndarray]


class Model:
    """A stack of LSTM layers ready to run on the CPU.

    A model is immutable: one instance may serve any number of threads at once, each with its
    own :class:`Stream` (or its own ``predict`` calls). All compute releases the GIL.

    Parameters
    ----------
    spec : ModelSpec
        The layers, in the internal convention (see :mod:`lstm_fast.spec`).
    isa : {"auto", "avx512", "avx2", "portable"}, optional
        Instruction set of the small-batch kernels. Default: ``$LSTM_FAST_ISA`` or ``"auto"``
        (the best this CPU supports).
    """

    def __init__(self, spec: ModelSpec, *, isa: str | None = None) -> None:
        isa = (isa or os.environ.get("LSTM_FAST_ISA") or "auto").lower()
        if isa not in ("auto", "avx512", "avx2", "portable"):
            raise ValueError(f"isa must be auto, avx512, avx2 or portable, got {isa!r}")
        self._spec = spec
        self._c = CModel([(L.w_ih, L.w_hh, L.bias) for L in spec.layers], isa)

    @classmethod
    def from_lstm_weights(
        cls, layers: Sequence[Sequence[Any]], *, isa: str | None = None
    ) -> Model:
        """Build a model from per-layer PyTorch-style weights.

        Parameters
        ----------
        layers : sequence of (W_ih, W_hh, b_ih, b_hh)
            One tuple per layer, exactly as ``torch.nn.LSTM`` stores them: ``W_ih`` is
            (4H, I) (for layer k > 0, I is the previous layer's H), ``W_hh`` is (4H, H),
            ``b_ih`` and ``b_hh`` are (4H,) or None (``bias=False``). Gate row blocks are in
            the order i, f, g, o. Any real dtype; converted to float32.
        isa : str, optional
            See :class:`Model`.

        Raises
        ------
        WeightsError
            When the shapes are inconsistent, a layer does not chain, or a value is not finite.
        """
        specs = []
        for k, item in enumerate(layers):
            if len(item) != 4:
                raise WeightsError(f"layer {k}: expected (W_ih, W_hh, b_ih, b_hh), got "
                                   f"{len(item)} items")
            w_ih, w_hh, b_ih, b_hh = item
            w_hh = np.asarray(w_hh)
            bias = np.zeros(w_hh.shape[0] if w_hh.ndim else 0, dtype=np.float64)
            for b in (b_ih, b_hh):
                if b is not None:
                    b = np.asarray(b)
                    if b.shape != bias.shape:
                        raise WeightsError(f"layer {k}: biases must be ({bias.shape[0]},), got "
                                           f"{b.shape}")
                    bias = bias + b.astype(np.float64)
            try:
                specs.append(LSTMLayerSpec(w_ih=w_ih, w_hh=w_hh, bias=bias))
            except WeightsError as e:
                raise WeightsError(f"layer {k}: {e}") from None
        spec = ModelSpec(layers=tuple(specs))
        if len({L.hidden_size for L in spec.layers}) != 1:
            raise WeightsError("all layers must have the same hidden size (as in torch.nn.LSTM)")
        return cls(spec, isa=isa)

    @property
    def spec(self) -> ModelSpec:
        """The model's :class:`ModelSpec`."""
        return self._spec

    @property
    def input_size(self) -> int:
        return self._spec.input_size

    @property
    def hidden_size(self) -> int:
        return self._spec.output_size

    @property
    def num_layers(self) -> int:
        return len(self._spec.layers)

    @property
    def isa(self) -> str:
        """The instruction set the small-batch kernels use."""
        return self._c.isa

    def __repr__(self) -> str:
        return (f"Model(num_layers={self.num_layers}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, isa={self.isa!r})")

    def predict(
        self,
        x: Any,
        initial_state: State | None = None,
        return_state: bool = False,
        *,
        check_finite: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, State]:
        """Run whole sequences.

        Parameters
        ----------
        x : array_like, (B, T, I)
            Batch-first inputs (also for models converted from ``batch_first=False`` torch
            modules). float32 is used without a copy (any strides); other float dtypes are
            converted; integer/complex/object dtypes raise :class:`DTypeError`.
        initial_state : (h0, c0), optional
            Each (num_layers, B, H), PyTorch's ``h_0``/``c_0`` order. Default zeros.
        return_state : bool
            Also return the final ``(h_n, c_n)``, each (num_layers, B, H).
        check_finite : bool
            Raise :class:`NonFiniteError` when ``x`` holds NaN/Inf (default). With False, NaN
            propagates to the outputs of the affected sequences.

        Returns
        -------
        y : ndarray, (B, T, H)
            The last layer's hidden state at every step; ``(y, (h_n, c_n))`` with
            ``return_state``.
        """
        xa = check_array(x, "x", ("B", "T", self.input_size))
        if xa.shape[0] < 1:
            raise ShapeError("x has batch size 0; expected (B, T, I) with B >= 1")
        state = CState(self._c, xa.shape[0])
        if initial_state is not None:
            _set_state(state, self, initial_state)
        y = state.run(xa, check_finite)
        return (y, _get_state(state, self)) if return_state else y

    def stream(self, batch: int = 1) -> Stream:
        """A stateful stream of ``batch`` independent sequences, starting from zero state."""
        return Stream(self, batch)


class Stream:
    """Stateful inference: the state after each call is the start of the next.

    A stream belongs to one thread at a time; make one stream per thread (they may share the
    model). Create with :meth:`Model.stream`.
    """

    def __init__(self, model: Model, batch: int = 1) -> None:
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ShapeError(f"batch must be a positive integer, got {batch!r}")
        self._model = model
        self._c = CState(model._c, int(batch))

    @property
    def model(self) -> Model:
        return self._model

    @property
    def batch(self) -> int:
        return self._c.batch

    def step(self, x_t: Any, *, check_finite: bool = True) -> np.ndarray:
        """Advance one time step: ``x_t`` (B, I) -> ``y_t`` (B, H)."""
        return self._c.step(x_t, check_finite)

    def run(self, chunk: Any, *, check_finite: bool = True) -> np.ndarray:
        """Advance ``T`` steps: ``chunk`` (B, T, I) -> (B, T, H)."""
        return self._c.run(chunk, check_finite)

    def reset(self, indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Zero the state of all sequences, or only of the listed batch rows."""
        self._c.reset(indices)

    @property
    def state(self) -> State:
        """``(h, c)``, each (num_layers, B, H): a copy of the current state."""
        return _get_state(self._c, self._model)

    @state.setter
    def state(self, value: State) -> None:
        _set_state(self._c, self._model, value)


def _get_state(state: CState, model: Model) -> State:
    parts = [state.get(k) for k in range(model.num_layers)]
    return np.stack([h for h, _ in parts]), np.stack([c for _, c in parts])


def _set_state(state: CState, model: Model, value: State) -> None:
    try:
        h, c = value
    except (TypeError, ValueError):
        raise ShapeError("state must be a pair (h, c)") from None
    shape = (model.num_layers, state.batch, model.hidden_size)
    h = check_array(h, "h", shape)
    c = check_array(c, "c", shape)
    for k in range(model.num_layers):
        state.set(k, h[k], c[k])
