"""The Python API users touch: :class:`Model` (immutable, shareable) and :class:`Stream`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import check_array, check_ids
from ._core import CModel, CState
from .errors import ShapeError, UnsupportedModelError, WeightsError
from .spec import DenseSpec, EmbeddingSpec, LSTMLayerSpec, MaskingSpec, ModelSpec

State = tuple[np.ndarray, np.ndarray]


class Model:
    """A recurrent model (a chain of layers) ready to run on the CPU.

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
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        self._spec = spec
        self._c = CModel(_layer_dicts(spec), isa)

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
        return cls(ModelSpec(layers=tuple(specs)), isa=isa)

    @property
    def spec(self) -> ModelSpec:
        """The model's :class:`ModelSpec`."""
        return self._spec

    @property
    def input_size(self) -> int:
        """Features per step (1 when the model takes token ids)."""
        return self._spec.input_size

    @property
    def output_size(self) -> int:
        """Features of the model's output per step."""
        return self._spec.output_size

    @property
    def hidden_size(self) -> int:
        """Hidden size of the last recurrent layer."""
        return self._spec.recurrent_layers[-1].hidden_size

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """Hidden size of each recurrent layer, in order."""
        return tuple(L.hidden_size for L in self._spec.recurrent_layers)

    @property
    def num_layers(self) -> int:
        """Number of recurrent layers (the length of the state lists)."""
        return len(self._spec.recurrent_layers)

    @property
    def takes_ids(self) -> bool:
        """True when the input is integer token ids (B, T) (the model starts with an
        Embedding)."""
        return self._spec.takes_ids

    @property
    def isa(self) -> str:
        """The instruction set the small-batch kernels use."""
        return self._c.isa

    def __repr__(self) -> str:
        kinds = ", ".join(L.kind for L in self._spec.layers)
        return (f"Model([{kinds}], input_size={self.input_size}, "
                f"output_size={self.output_size}, isa={self.isa!r})")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` in the lstm_fast model file format (see
        :mod:`lstm_fast.format`)."""
        from .format import save_spec

        save_spec(self._spec, path)

    def predict(
        self,
        x: Any,
        initial_state: State | None = None,
        return_state: bool = False,
        *,
        lengths: Any = None,
        check_finite: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, State]:
        """Run whole sequences.

        Parameters
        ----------
        x : array_like, (B, T, I) floats or (B, T) integer ids
            Batch-first inputs (also for models converted from ``batch_first=False`` torch
            modules); ids when the model starts with an Embedding. float32 is used without a
            copy (any strides); other float dtypes are converted; integer/complex/object
            dtypes for a float model raise :class:`DTypeError`.
        initial_state : (h0, c0), optional
            Each (num_layers, B, H) (PyTorch's ``h_0``/``c_0`` order) when all recurrent layers
            have the same size, else a list with one (B, H_k) array per recurrent layer.
            Default zeros.
        return_state : bool
            Also return the final ``(h_n, c_n)`` in the same form.
        lengths : array_like of int, (B,), optional
            Valid steps of each (right-padded) sequence. Steps ``t >= lengths[b]`` are masked:
            the state is carried through them, so the final state is the one after the last
            valid step; their output follows the model's mask semantics (0 for models from
            PyTorch, the previous output for models from Keras).
        check_finite : bool
            Raise :class:`NonFiniteError` when ``x`` holds NaN/Inf (default). With False, NaN
            propagates to the outputs of the affected sequences.

        Returns
        -------
        y : ndarray, (B, T, O), or (B, O) when a recurrent layer returns only its last step
            The model's output; ``(y, (h_n, c_n))`` with ``return_state``.
        """
        if self.takes_ids:
            x = check_ids(x, "ids", ("B", "T"))
        else:
            x = check_array(x, "x", ("B", "T", self.input_size))
        if x.shape[0] < 1:
            want = "(B, T)" if self.takes_ids else "(B, T, I)"
            raise ShapeError(f"x has batch size 0; expected {want} with B >= 1")
        state = CState(self._c, x.shape[0])
        if initial_state is not None:
            _set_state(state, self, initial_state)
        y = state.run(x, lengths, check_finite)
        return (y, _get_state(state, self)) if return_state else y

    def stream(self, batch: int = 1) -> Stream:
        """A stateful stream of ``batch`` independent sequences, starting from zero state.

        Raises
        ------
        UnsupportedModelError
            When a layer needs the whole sequence (``go_backwards``): use :meth:`predict`.
        """
        if not self._spec.streamable:
            raise UnsupportedModelError(
                "this model has a layer that reads its input backwards (go_backwards), so it "
                "cannot run step by step; use predict() on whole sequences")
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
        """Advance one time step: ``x_t`` (B, I) floats or (B,) ids -> ``y_t`` (B, O)."""
        return self._c.step(x_t, check_finite)

    def run(self, chunk: Any, *, lengths: Any = None, check_finite: bool = True) -> np.ndarray:
        """Advance ``T`` steps: ``chunk`` (B, T, I) floats or (B, T) ids -> (B, T, O)
        (or (B, O) when a recurrent layer returns only its last step). ``lengths`` masks
        steps ``t >= lengths[b]`` of this chunk, as in :meth:`Model.predict`."""
        return self._c.run(chunk, lengths, check_finite)

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


def _layer_dicts(spec: ModelSpec) -> list[dict[str, Any]]:
    """The spec's layers as the plain dicts the Cython layer builds the C model from."""
    out: list[dict[str, Any]] = []
    for L in spec.layers:
        if isinstance(L, LSTMLayerSpec):
            flags = [name for name, on in (
                ("return_last", not L.return_sequences), ("go_backwards", L.go_backwards),
                ("zero_masked_output", spec.mask_semantics == "torch")) if on]
            out.append(dict(kind="lstm", input_size=L.input_size, units=L.hidden_size,
                            w=L.w_ih, w_rec=L.w_hh, bias=L.bias, activation=L.activation,
                            recurrent_activation=L.recurrent_activation, flags=flags))
        elif isinstance(L, DenseSpec):
            out.append(dict(kind="dense", input_size=L.input_size, units=L.output_size,
                            w=L.weight, bias=L.bias, activation=L.activation))
        elif isinstance(L, EmbeddingSpec):
            out.append(dict(kind="embedding", input_size=L.vocab_size, units=L.output_size,
                            w=L.weight, flags=["mask_zero"] if L.mask_zero else []))
        elif isinstance(L, MaskingSpec):
            out.append(dict(kind="masking", input_size=L.size, units=L.size,
                            mask_value=L.mask_value))
        else:
            raise UnsupportedModelError(f"layer kind {L.kind!r} is not supported")
    return out


def _uniform(model: Model) -> bool:
    return len(set(model.hidden_sizes)) == 1


def _get_state(state: CState, model: Model) -> State:
    parts = [state.get(k) for k in range(model.num_layers)]
    hs, cs = [h for h, _ in parts], [c for _, c in parts]
    if _uniform(model):
        return np.stack(hs), np.stack(cs)
    return hs, cs  # type: ignore[return-value]


def _set_state(state: CState, model: Model, value: State) -> None:
    try:
        h, c = value
    except (TypeError, ValueError):
        raise ShapeError("state must be a pair (h, c)") from None
    n = model.num_layers
    if isinstance(h, (list, tuple)) or isinstance(c, (list, tuple)) or not _uniform(model):
        if not (isinstance(h, (list, tuple)) and isinstance(c, (list, tuple))
                and len(h) == n and len(c) == n):
            raise ShapeError(f"state must be (h, c), each a list of {n} arrays (B, H_k) with "
                             f"H_k = {model.hidden_sizes}, or arrays (num_layers, B, H) when "
                             f"all layers have the same size")
        for k in range(n):
            shape = (state.batch, model.hidden_sizes[k])
            state.set(k, check_array(h[k], f"h[{k}]", shape), check_array(c[k], f"c[{k}]", shape))
        return
    shape = (n, state.batch, model.hidden_size)
    h = check_array(h, "h", shape)
    c = check_array(c, "c", shape)
    for k in range(n):
        state.set(k, h[k], c[k])
