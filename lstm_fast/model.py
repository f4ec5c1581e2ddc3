"""The Python API users touch: :class:`Model` (immutable, shareable) and :class:`Stream`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import check_array, check_ids
from ._core import MAX_DIM, CModel, CState
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    ShapeError,
    UnsupportedModelError,
    WeightsError,
)
from .spec import CELL_KINDS, LAYER_KINDS, BidirectionalSpec, LSTMLayerSpec, ModelSpec

#: A recurrent state, one entry per cell in ModelSpec.cells order (each direction of each
#: recurrent layer): ``(h, c)`` stacked to (N, B, ·) when every cell is an LSTM of one size
#: (PyTorch's ``(h_n, c_n)``), ``h`` stacked to (N, B, H) when every cell is a GRU/RNN of one
#: size (PyTorch's ``h_n``), else a list with ``(h, c)`` for LSTM cells and ``h`` for others.
State = Any


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
        isa = _isa_name(isa)
        if not isinstance(spec, ModelSpec):
            raise ArgumentTypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        self._spec = spec
        self._c = CModel(_checked_sizes(_layer_dicts(spec)), isa)
        self._spare_workspace: list[np.ndarray] = []

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
    def num_layers(self) -> int:
        """Number of recurrent layers (a Bidirectional counts once)."""
        return len(self._spec.recurrent_layers)

    @property
    def state_sizes(self) -> tuple[tuple[int, int], ...]:
        """(h size, c size) of each recurrent state, in :attr:`ModelSpec.cells` order (each
        direction of each recurrent layer; c size 0 for GRU and RNN cells)."""
        return self._c.state_sizes

    @property
    def takes_ids(self) -> bool:
        """True when the input is integer token ids (B, T) (the model starts with an
        Embedding)."""
        return self._spec.takes_ids

    @property
    def isa(self) -> str:
        """The instruction set the small-batch kernels use."""
        return self._c.isa

    @property
    def weights_dtype(self) -> str:
        """Storage type of the weight matrices: ``"fp32"``, ``"fp16"``, ``"bf16"`` or
        ``"int8"``."""
        return self._spec.weights_dtype

    @property
    def step_weight_bytes(self) -> int:
        """Bytes of packed recurrent weights one step reads (all cells)."""
        return self._c.step_weight_bytes

    def quantize(self, dtype: str, *, measure_steps: int = 500) -> Model:
        """A copy of the model with its weight matrices stored as ``dtype``.

        Parameters
        ----------
        dtype : {"fp16", "bf16", "int8", "fp32"}
            fp16 and bf16 round every weight matrix (cells of both directions, projections,
            Dense, Embedding) to nearest even; the step kernels widen them to float32 in
            registers. int8 rounds every weight matrix to int8 with one symmetric float32
            scale per output row (max|row| / 127; W_ih and W_hh of a cell separately); the
            cells' steps run on int8 dot products with x and h quantized per step and batch
            row (docs/architecture.md); projections, Dense and Embedding weights stay int8
            in memory and are widened in registers (float32 activations). Biases, state and
            gate math stay float32.
            ``"fp32"``: a copy with ``weights_dtype`` fp32 (the values stay as they are).
        measure_steps : int
            The new model's max abs output error against this one is measured on a random
            input of this many steps (one sequence) and recorded as ``spec.quant_error``
            (``lstm-fast info`` shows it; 0 skips the measurement).

        Raises
        ------
        WeightsError
            When a weight is too large for fp16.
        """
        from .quantize import measure_error, quantize_spec

        spec = quantize_spec(self._spec, dtype)
        q = Model(spec, isa=self.isa)
        if measure_steps > 0:
            spec = dataclasses.replace(spec, quant_error=measure_error(self, q, measure_steps))
            q._spec = spec
        return q

    def __repr__(self) -> str:
        kinds = ", ".join(L.kind for L in self._spec.layers)
        dt = "" if self.weights_dtype == "fp32" else f", weights={self.weights_dtype!r}"
        return (f"Model([{kinds}], input_size={self.input_size}, "
                f"output_size={self.output_size}, isa={self.isa!r}{dt})")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` in the lstm_fast model file format (see
        :mod:`lstm_fast.format`)."""
        from .format import save_spec

        save_spec(self._spec, path)

    def to_bytes(self) -> bytes:
        """The model file's bytes (what :meth:`save` writes), e.g. to store in a database or
        send over a network; read back with :meth:`from_bytes`."""
        from .format import spec_to_bytes

        return spec_to_bytes(self._spec)

    @classmethod
    def from_bytes(cls, data: Any, *, isa: str | None = None) -> Model:
        """A model from a model file's bytes (any bytes-like object).

        The spec's arrays are views of ``data`` (no copy; the engine packs its own copy of
        the weights). Raises :class:`ModelFileError` as :func:`lstm_fast.load` does.
        """
        from .format import spec_from_bytes

        return cls(spec_from_bytes(data), isa=isa)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickle as the model file's bytes (a PickleBuffer from protocol 5 on, so a
        buffer_callback such as Dask's can ship it out of band, without a copy). The
        receiving process chooses its own instruction set (``$LSTM_FAST_ISA`` or the best
        its CPU runs): an ``isa=`` given here is not carried over."""
        import pickle

        data: Any = self.to_bytes()
        if isinstance(protocol, int) and protocol >= 5:
            data = pickle.PickleBuffer(data)
        return (_model_from_bytes, (data,))

    def __dask_tokenize__(self) -> tuple[str, str]:
        """Dask's content token: a hash of the model file's bytes, computed once (so Dask
        does not pickle the model to tokenize it)."""
        token = self.__dict__.get("_token")
        if token is None:
            import hashlib

            token = self.__dict__["_token"] = hashlib.sha256(self.to_bytes()).hexdigest()
        return ("lstm_fast.Model", token)

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

        The scratch memory of the call (up to ``SPARE_WORKSPACE_MAX`` = 64 MB) stays with the
        model for the next call, so repeated calls do not page-fault it in again.

        Parameters
        ----------
        x : array_like, (B, T, I) floats or (B, T) integer ids
            Batch-first inputs (also for models converted from ``batch_first=False`` torch
            modules); ids when the model starts with an Embedding. float32 is used without a
            copy (any strides); other float dtypes are converted; integer/complex/object
            dtypes for a float model raise :class:`DTypeError`.
        initial_state : optional
            One entry per recurrent cell in :attr:`ModelSpec.cells` order (PyTorch's ``h_n``
            order ``layer * 2 + direction``; Keras's ``return_state`` order): ``(h0, c0)``
            each (N, B, H) when all cells are LSTMs of one size, ``h0`` (N, B, H) when all are
            GRU/RNN cells of one size, else a list of ``(h, c)`` (LSTM) or ``h`` entries.
            With a projection, h has P features. Default zeros.
        return_state : bool
            Also return the final state in the same form.
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
        if not 1 <= x.shape[0] <= MAX_DIM:
            want = "(B, T)" if self.takes_ids else "(B, T, I)"
            raise ShapeError(f"x has batch size {x.shape[0]}; expected {want} with "
                             f"1 <= B <= {MAX_DIM}")
        state = CState(self._c, x.shape[0])
        if initial_state is not None:
            _set_state(state, self, initial_state)
        spare = self._spare_workspace
        with contextlib.suppress(IndexError):   # each call pops its own (pop is atomic)
            state.workspace = spare.pop()
        y = state.run(x, lengths, check_finite)
        ws = state.workspace
        if ws is not None and ws.nbytes <= SPARE_WORKSPACE_MAX and not spare:
            spare.append(ws)
        return (y, _get_state(state, self)) if return_state else y

    def stream(self, batch: int = 1) -> Stream:
        """A stateful stream of ``batch`` independent sequences, starting from zero state.

        Raises
        ------
        UnsupportedModelError
            When a layer needs the whole sequence (Bidirectional, ``go_backwards``): use
            :meth:`predict`.
        ShapeError
            When ``batch`` is not an integer from 1 to 2**24 (a bool is not one).
        """
        if not self._spec.streamable:
            raise UnsupportedModelError(
                "this model has a layer that reads its input backwards (Bidirectional or "
                "go_backwards), so it cannot run step by step; use predict() on whole "
                "sequences")
        return Stream(self, batch)


class Stream:
    """Stateful inference: the state after each call is the start of the next.

    A stream belongs to one thread at a time; make one stream per thread (they may share the
    model). A call made while another thread is inside a call on the same stream raises
    :class:`~lstm_fast.errors.ConcurrentUseError` and changes nothing. Create with
    :meth:`Model.stream`.
    """

    def __init__(self, model: Model, batch: int = 1) -> None:
        if (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
                or not 1 <= batch <= MAX_DIM):
            raise ShapeError(f"batch must be a positive integer (1 to {MAX_DIM}), got "
                             f"{batch!r}")
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
        """A copy of the current state (see :meth:`Model.predict` for its form)."""
        return _get_state(self._c, self._model)

    @state.setter
    def state(self, value: State) -> None:
        _set_state(self._c, self._model, value)


#: Instruction sets ``isa=`` accepts.
ISAS = ("auto", "avx512", "avx2", "portable")
#: Model.predict keeps its last call's workspace up to this size for the next call: a fresh
#: one is page-faulted in on every call (measured on an Intel Xeon, the BiLSTM classifier of
#: benches/compare.py, B=16 T=128, 25 MB of workspace: 67.8 vs 66.2 ms per call at 1 thread).
SPARE_WORKSPACE_MAX = 64 << 20


def _isa_name(isa: object) -> str:
    """``isa`` (None: ``$LSTM_FAST_ISA`` or auto) checked and lower-cased."""
    where = "isa"
    if isa is None:
        isa, where = os.environ.get("LSTM_FAST_ISA") or "auto", "LSTM_FAST_ISA"
    if not isinstance(isa, str):
        raise ArgumentTypeError(f"isa must be a str ({', '.join(ISAS)}), got "
                                f"{type(isa).__name__}")
    if isa.lower() not in ISAS:
        raise ArgumentError(f"{where} must be auto, avx512, avx2 or portable, got {isa!r}")
    return isa.lower()


def _checked_sizes(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refuse sizes the C engine cannot hold (a spec allows any positive int)."""
    for k, d in enumerate(layers):
        for key in ("input_size", "units", "proj_size"):
            value = d.get(key) or 0
            if not 0 <= value <= MAX_DIM:
                raise WeightsError(f"layer {k} ({d.get('kind')}): {key} {value} is outside "
                                   f"the engine's limit 1 to {MAX_DIM}")
    return layers


def _model_from_bytes(data: Any) -> Model:
    """Unpickling: the model from its file bytes, with this process's instruction set."""
    return Model.from_bytes(data)


def _tensors(L: Any, suffix: str = "") -> dict[str, Any]:
    """A layer's declared tensors under the C descriptor's names (None when absent; suffix
    "_b": a Bidirectional's backward cell)."""
    return {t.bridge + suffix: getattr(L, t.name) for t in L.TENSORS}


def _layer_dict(L: Any, spec: ModelSpec) -> dict[str, Any]:
    """One layer as the dict the Cython layer builds its C descriptor from: its kind, the two
    sizes of :meth:`~lstm_fast.spec.LSTMLayerSpec.engine_sizes`, its declared tensors and options
    (flags for the ``bridge="flag"`` ones), walked from the kind's declarations."""
    outer = L
    if isinstance(L, BidirectionalSpec):
        L = L.forward  # the backward cell's tensors follow with the suffix "_b"
    d: dict[str, Any] = dict(kind=L.kind, **L.engine_sizes())
    flags = []
    for opt in L.OPTIONS:
        if opt.bridge == "flag":
            if getattr(L, opt.name):
                flags.append(opt.name)
        elif opt.bridge == "value":
            d[opt.name] = getattr(L, opt.name)
    if L.kind in CELL_KINDS:
        d.setdefault("recurrent_activation", "sigmoid")
        flags += [name for name, on in (
            ("zero_masked_output", spec.mask_semantics == "torch"),
            ("bidirectional", outer.kind == "bidirectional")) if on]
    if any(o.bridge == "flag" for o in L.OPTIONS):  # cells and Embedding: a list, maybe empty
        d["flags"] = flags
    d.update(_tensors(L))
    if isinstance(outer, BidirectionalSpec):
        d.update(_tensors(outer.backward, "_b"), merge=outer.merge_mode)
    if spec.weights_dtype != "fp32" and any(t.quantizable for t in L.TENSORS):
        d["weights"] = spec.weights_dtype  # the engine stores the (on-grid) matrices narrow
    return d


def _layer_dicts(spec: ModelSpec) -> list[dict[str, Any]]:
    """The spec's layers as the plain dicts the Cython layer builds the C model from."""
    for L in spec.layers:
        if L.kind not in LAYER_KINDS and L.kind != "bidirectional":
            raise UnsupportedModelError(f"layer kind {L.kind!r} is not supported")
    return [_layer_dict(L, spec) for L in spec.layers]


def _state_form(model: Model) -> str:
    """'lstm': (h, c) stacked; 'h': h stacked; 'list': one entry per recurrent state;
    'cell_lstm' / 'cell_h': one cell's own (h, c) or h, each (B, H), unstacked."""
    sizes = model.state_sizes
    if model.spec.state_layout == "cell":
        return "cell_lstm" if sizes[0][1] else "cell_h"
    if len(set(sizes)) == 1:
        return "lstm" if sizes[0][1] else "h"
    return "list"


def _get_state(state: CState, model: Model) -> Any:
    parts = [state.get(k) for k in range(len(model.state_sizes))]
    form = _state_form(model)
    if form == "cell_lstm":
        return parts[0]
    if form == "cell_h":
        return parts[0][0]
    if form == "lstm":
        return np.stack([h for h, _ in parts]), np.stack([c for _, c in parts])
    if form == "h":
        return np.stack([h for h, _ in parts])
    return [(h, c) if c is not None else h for h, c in parts]


def _state_help(model: Model) -> str:
    n, form = len(model.state_sizes), _state_form(model)
    if form == "cell_lstm":
        h, c = model.state_sizes[0]
        return f"the cell's (h, c) with h (B, {h}) and c (B, {c})"
    if form == "cell_h":
        return f"the cell's h of shape (B, {model.state_sizes[0][0]})"
    if form == "lstm":
        h, c = model.state_sizes[0]
        return f"(h, c) with h ({n}, B, {h}) and c ({n}, B, {c})"
    if form == "h":
        return f"h of shape ({n}, B, {model.state_sizes[0][0]})"
    return (f"a list of {n} entries, (h, c) for LSTM states and h for others, with "
            f"(h, c) sizes {model.state_sizes}")


def _set_state(state: CState, model: Model, value: Any) -> None:
    form, B = _state_form(model), state.batch
    n = len(model.state_sizes)
    try:
        if form in ("cell_lstm", "cell_h"):
            hs, cs = model.state_sizes[0]
            h, c = value if form == "cell_lstm" else (value, None)
            entries = [(check_array(h, "h", (B, hs)),
                        None if c is None else check_array(c, "c", (B, cs)))]
        elif form == "lstm":
            h, c = value
            hs, cs = model.state_sizes[0]
            h = check_array(h, "h", (n, B, hs))
            c = check_array(c, "c", (n, B, cs))
            entries = [(h[k], c[k]) for k in range(n)]
        elif form == "h":
            h = check_array(value, "h", (n, B, model.state_sizes[0][0]))
            entries = [(h[k], None) for k in range(n)]
        else:
            if len(value) != n:
                raise ValueError
            entries = []
            for k, (item, (hs, cs)) in enumerate(zip(value, model.state_sizes, strict=True)):
                h, c = item if cs else (item, None)
                entries.append((check_array(h, f"h[{k}]", (B, hs)),
                                None if c is None else check_array(c, f"c[{k}]", (B, cs))))
    except (TypeError, ValueError) as e:
        if isinstance(e, ShapeError):
            raise
        raise ShapeError(f"state must be {_state_help(model)}") from None
    for k, (h, c) in enumerate(entries):
        state.set(k, h, c)
