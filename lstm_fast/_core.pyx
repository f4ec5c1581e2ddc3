# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin Cython layer over csrc/include/lstm_fast.h: dtype/shape fast checks, GIL release,
status codes to exceptions. The Python API lives in lstm_fast.model."""

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport INT32_MAX, int32_t, int64_t

from ._lf cimport *  # the C ABI (lstm_fast.h): lf_* functions and types, LF_* names

import os

import numpy as np

from ._checks import check_array, check_ids, check_lengths
from .errors import (ConcurrentUseError, CpuFeatureError, EngineError, InputError,
                     NonFiniteError, ShapeError, WeightsError)

cnp.import_array()

ISA_NAMES = {LF_ISA_PORTABLE: "portable", LF_ISA_AVX2: "avx2", LF_ISA_AVX512: "avx512"}
ISA_CODES = {"auto": LF_ISA_AUTO, **{v: k for k, v in ISA_NAMES.items()}}
MAX_DIM = LF_MAX_DIM
ABI_VERSION = LF_ABI_VERSION
KINDS = {"lstm": LF_LAYER_LSTM, "dense": LF_LAYER_DENSE, "embedding": LF_LAYER_EMBEDDING,
         "masking": LF_LAYER_MASKING, "gru": LF_LAYER_GRU, "rnn": LF_LAYER_RNN,
         "affine": LF_LAYER_AFFINE, "normalize": LF_LAYER_NORMALIZE}
MERGES = {"concat": LF_MERGE_CONCAT, "sum": LF_MERGE_SUM, "ave": LF_MERGE_AVE,
          "mul": LF_MERGE_MUL}
ACTIVATIONS = {
    "linear": LF_ACT_LINEAR, "relu": LF_ACT_RELU, "relu6": LF_ACT_RELU6, "tanh": LF_ACT_TANH,
    "sigmoid": LF_ACT_SIGMOID, "hard_sigmoid": LF_ACT_HARD_SIGMOID,
    "hard_sigmoid_keras2": LF_ACT_HARD_SIGMOID_02, "softsign": LF_ACT_SOFTSIGN,
    "softplus": LF_ACT_SOFTPLUS, "elu": LF_ACT_ELU, "selu": LF_ACT_SELU, "silu": LF_ACT_SILU,
    "gelu": LF_ACT_GELU, "exponential": LF_ACT_EXPONENTIAL, "softmax": LF_ACT_SOFTMAX,
    "log_softmax": LF_ACT_LOG_SOFTMAX}
WEIGHTS = {"fp32": LF_WEIGHTS_F32, "fp16": LF_WEIGHTS_F16, "bf16": LF_WEIGHTS_BF16,
           "int8": LF_WEIGHTS_I8}
FLAGS = {"return_last": LF_LAYER_RETURN_LAST, "go_backwards": LF_LAYER_GO_BACKWARDS,
         "mask_zero": LF_LAYER_MASK_ZERO, "zero_masked_output": LF_LAYER_ZERO_MASKED_OUTPUT,
         "bidirectional": LF_LAYER_BIDIRECTIONAL, "reset_after": LF_LAYER_RESET_AFTER}


cdef const float *array_ptr(object a, list keep) except? NULL:
    """Pointer to the first element of a float32 C-contiguous array (kept alive by `keep`)."""
    cdef const float[::1] flat
    if a is None:
        return NULL
    flat = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    keep.append(flat)
    return &flat[0]


cdef int check(lf_status st, str what) except -1:
    if st == LF_OK:
        return 0
    msg = f"{what}: {lf_status_string(st).decode()}"
    if st == LF_E_NONFINITE:
        raise NonFiniteError(f"{what}: input contains NaN or Inf (pass check_finite=False to "
                             f"skip this check; NaN then propagates to the outputs)")
    if st == LF_E_ISA_UNAVAILABLE:
        raise CpuFeatureError(msg)
    if st == LF_E_NO_MEMORY:
        raise MemoryError(msg)
    if st in (LF_E_INVALID_SIZE, LF_E_TOO_LARGE, LF_E_BATCH_MISMATCH, LF_E_STRIDE):
        raise ShapeError(msg)
    if st == LF_E_BAD_ID:
        raise InputError(f"{what}: an id is outside [0, vocabulary size)")
    if st == LF_E_BAD_LENGTH:
        raise InputError(f"{what}: lengths must lie in [0, T]")
    if st == LF_E_BAD_LAYER:
        raise WeightsError(msg)
    raise EngineError(msg)


def best_isa():
    return ISA_NAMES[lf_cpu_best_isa()]


def fma_width():
    """Bits of the FMA pipes the engine measured (512: full-width AVX-512 pipes; else 256)."""
    return lf_cpu_fma_width()


def abi_version():
    """LF_ABI_VERSION of the compiled engine (equal to ABI_VERSION, the header's)."""
    return lf_abi_version()


def blas_core_name():
    cdef const char *name = lf_blas_core_name()
    return name.decode() if name != NULL else "unknown"


cdef int _threads = 1


def set_threads(int n, int spin_us=-1):
    """Threads of the engine: from 2 on, its thread pool (lf_pool_start: one worker, started
    here so that no run creates a thread; spin_us >= 0 sets its spin before sleeping); 1 stops
    the worker. The pool is process-wide, as this setting is. OpenBLAS is set to one thread
    either way: the pool splits the GEMM-heavy work itself (recurrent.c: input projections
    and batches in halves, each half its own sgemm), and an OpenBLAS with threads of its own
    called from both threads at once waits for its workers (measured 4-10x slower)."""
    global _threads
    if n >= 2:
        check(lf_pool_start(spin_us), "starting the thread pool")
    else:
        with nogil:
            lf_pool_stop()
    _threads = max(1, n)
    lf_blas_set_num_threads(1)


def pool_starts():
    """Worker threads the engine's pool has created since the process started."""
    return lf_pool_starts()


def pool_moves():
    """Times the pool's worker, woken on its caller's core, moved itself to another core."""
    return lf_pool_moves()


def _pool_after_fork():
    # fork() copies only the forking thread: the child's pool has no worker; start one.
    if _threads >= 2:
        lf_pool_start(-1)


os.register_at_fork(after_in_child=_pool_after_fork)


def get_threads():
    return _threads


cdef class CModel:
    """Owns an lf_model built from a list of layer dicts (see lstm_fast.model._layer_dicts):
    kind, input_size, units, w, w_rec, bias (float32 C-contiguous or None), activation,
    recurrent_activation, flags (names), mask_value."""
    cdef lf_model *ptr
    cdef readonly int input_size, output_size
    cdef readonly bint takes_ids, returns_last
    cdef readonly tuple state_sizes
    cdef readonly str isa

    def __cinit__(self, list layers, str isa="auto"):
        cdef Py_ssize_t n = len(layers), l
        cdef lf_layer_desc[256] descs
        if n < 1 or n > LF_MAX_LAYERS:
            raise WeightsError(f"a model needs 1 to {LF_MAX_LAYERS} layers, got {n}")
        keep = []
        for l in range(n):
            d = layers[l]
            descs[l].kind = KINDS[d["kind"]]
            descs[l].input_size = d["input_size"]
            descs[l].units = d["units"]
            descs[l].w = array_ptr(d.get("w"), keep)
            descs[l].w_rec = array_ptr(d.get("w_rec"), keep)
            descs[l].bias = array_ptr(d.get("bias"), keep)
            descs[l].bias_rec = array_ptr(d.get("bias_rec"), keep)
            descs[l].w_proj = array_ptr(d.get("w_proj"), keep)
            descs[l].proj_size = d.get("proj_size", 0)
            descs[l].w_b = array_ptr(d.get("w_b"), keep)
            descs[l].w_rec_b = array_ptr(d.get("w_rec_b"), keep)
            descs[l].bias_b = array_ptr(d.get("bias_b"), keep)
            descs[l].bias_rec_b = array_ptr(d.get("bias_rec_b"), keep)
            descs[l].w_proj_b = array_ptr(d.get("w_proj_b"), keep)
            descs[l].merge = <lf_merge>MERGES[d.get("merge", "concat")]
            descs[l].activation = <lf_activation>ACTIVATIONS[d.get("activation", "linear")]
            descs[l].recurrent_activation = <lf_activation>ACTIVATIONS[
                d.get("recurrent_activation", "sigmoid")]
            descs[l].flags = 0
            for name in d.get("flags", ()):
                descs[l].flags |= FLAGS[name]
            descs[l].mask_value = d.get("mask_value", 0.0)
            descs[l].epsilon = d.get("epsilon", 0.0)
            descs[l].weights = <lf_weights>WEIGHTS[d.get("weights", "fp32")]
        cdef lf_isa code = ISA_CODES[isa]
        cdef lf_status st
        with nogil:
            st = lf_model_create(descs, <int32_t>n, code, &self.ptr)
        if st == LF_E_ISA_UNAVAILABLE:
            raise CpuFeatureError(f"instruction set {isa!r} is not supported by this CPU "
                                  f"(best available: {best_isa()!r})")
        check(st, "building the model")
        self.input_size = lf_model_input_size(self.ptr)
        self.output_size = lf_model_output_size(self.ptr)
        self.takes_ids = lf_model_takes_ids(self.ptr)
        self.returns_last = lf_model_returns_last(self.ptr)
        cdef int32_t hs, cs
        sizes = []
        for l in range(lf_model_num_states(self.ptr)):
            lf_model_state_sizes(self.ptr, l, &hs, &cs)
            sizes.append((hs, cs))
        self.state_sizes = tuple(sizes)
        self.isa = ISA_NAMES[lf_model_isa(self.ptr)]

    @property
    def step_weight_bytes(self):
        """Bytes of packed weights one step of the recurrent kernels reads."""
        return lf_model_step_weight_bytes(self.ptr)

    @property
    def model_bytes(self):
        """Bytes of memory the built model holds (weights in every layout its paths read)."""
        return lf_model_bytes(self.ptr)

    def __dealloc__(self):
        lf_model_free(self.ptr)


cdef cnp.ndarray _prepare_io(lf_io *io, CModel model, cnp.ndarray xa, Py_ssize_t n, int T,
                             bint seq, object lengths, bint check_finite, list keep):
    """Fill io for x (already checked: n rows, T steps, or one step without `seq`) and return
    the output array it writes; arrays io points into are appended to `keep`."""
    cdef int O = model.output_size
    cdef cnp.npy_intp dims[3]
    cdef cnp.ndarray ya, la
    cdef int item = xa.itemsize
    io.steps = T
    io.x = NULL
    io.ids = NULL
    io.lengths = NULL
    io.x_stride_batch = xa.strides[0] // item
    io.x_stride_time = xa.strides[1] // item if seq else 0
    if model.takes_ids:
        io.ids = <const int32_t *>cnp.PyArray_DATA(xa)
    else:
        io.x = <const float *>cnp.PyArray_DATA(xa)
    if lengths is not None:
        la = check_lengths(lengths, n)
        keep.append(la)
        io.lengths = <const int32_t *>cnp.PyArray_DATA(la)
    dims[0] = n
    if seq and not model.returns_last:
        dims[1] = T
        dims[2] = O
        ya = cnp.PyArray_EMPTY(3, dims, cnp.NPY_FLOAT32, 0)
        io.y_stride_batch = <ptrdiff_t>T * O
    else:
        dims[1] = O
        ya = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        io.y_stride_batch = O
    io.y_stride_time = O
    io.y = <float *>cnp.PyArray_DATA(ya)
    io.flags = (LF_RUN_CHECK_FINITE if check_finite else 0) | \
        (LF_RUN_PARALLEL if _threads >= 2 else 0)
    return ya


cdef class CState:
    """Owns an lf_state (h, c of every recurrent layer for `batch` sequences) and a reusable
    workspace."""
    cdef lf_state *ptr
    cdef readonly CModel model
    cdef readonly int batch
    cdef object ws
    cdef size_t ws_bytes
    cdef int ws_steps
    cdef object ids_buf
    cdef int busy

    def __cinit__(self, CModel model, int batch):
        self.model = model
        self.batch = batch
        check(lf_state_create(model.ptr, batch, &self.ptr), "creating the state")
        self.ws_steps = 0

    def __dealloc__(self):
        lf_state_free(self.ptr)

    # One thread at a time: each public method takes `busy` first (a plain int, tested and set
    # while holding the GIL, hence atomically) and refuses when another thread holds it, so
    # the workspace is never replaced, nor the state touched, under another thread's lf_run.
    cdef int enter(self) except -1:
        if self.busy:
            raise ConcurrentUseError(
                "this Stream is being used by another thread at the same time; a stream "
                "belongs to one thread at a time (create one stream per thread with "
                "model.stream(); they may share the model)")
        self.busy = 1
        return 0

    def reset(self, indices=None):
        """Zero all rows' state, or the listed rows'."""
        self.enter()
        try:
            self._reset(indices)
        finally:
            self.busy = 0

    def get(self, int k):
        """State k as (h (B, h_size), c (B, c_size) or None)."""
        self.enter()
        try:
            return self._get(k)
        finally:
            self.busy = 0

    def set(self, int k, h_arr, c_arr=None):
        """Set state k from h (B, h_size) and c (B, c_size) (None for GRU/RNN cells)."""
        self.enter()
        try:
            self._set(k, h_arr, c_arr)
        finally:
            self.busy = 0

    def run(self, x, lengths=None, bint check_finite=True):
        """x: (B, T, I) float32 or (B, T) ids; returns y (B, T, O), or (B, O) for
        return-last models."""
        self.enter()
        try:
            return self._chunk(x, lengths, check_finite)
        finally:
            self.busy = 0

    def step(self, x, bint check_finite=True):
        """x: (B, I) float32 or (B,) ids; returns y (B, O)."""
        self.enter()
        try:
            return self._step(x, check_finite)
        finally:
            self.busy = 0

    property workspace:
        """The reusable workspace (a uint8 array; None before the first run). Assigning an
        array hands it to this state (Model.predict passes its last call's to the next)."""
        def __get__(self):
            return self.ws

        def __set__(self, ws):
            if not (isinstance(ws, np.ndarray) and ws.dtype == np.uint8 and ws.ndim == 1
                    and ws.flags.c_contiguous and ws.flags.writeable):
                raise ShapeError("the workspace must be a writable contiguous 1-D uint8 array")
            self.enter()
            self.ws = ws
            self.ws_bytes = ws.nbytes
            self.ws_steps = 0   # reserve() checks the size on the next run
            self.busy = 0

    cdef int reserve(self, int steps) except -1:
        cdef size_t need
        if steps <= self.ws_steps:
            return 0
        need = lf_workspace_size(self.model.ptr, self.batch, steps)
        if need == 0:
            raise ShapeError(f"batch {self.batch} x {steps} steps is too large")
        if need > self.ws_bytes:
            self.ws = np.empty(need, dtype=np.uint8)
            self.ws_bytes = need
        self.ws_steps = steps
        return 0

    cdef object _reset(self, object indices):
        cdef int32_t[::1] idx
        if indices is None:
            check(lf_state_reset(self.ptr, NULL, 0), "reset")
            return
        try:
            arr = np.asarray(indices)
        except (TypeError, ValueError):
            raise InputError(f"reset indices must be a list of integers, got {indices!r}") from None
        if arr.dtype.kind not in "iu" and arr.size:
            raise InputError(f"reset indices must be integers, got {indices!r}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.batch):
            raise ShapeError(f"reset indices must be in [0, {self.batch}), got {indices!r}")
        arr = np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)
        if arr.size == 0:
            return
        idx = arr
        check(lf_state_reset(self.ptr, &idx[0], <int32_t>arr.size), "reset")

    cdef tuple sizes(self, int k):
        if k < 0 or k >= len(self.model.state_sizes):
            raise IndexError(f"recurrent state {k} out of range")
        return self.model.state_sizes[k]

    cdef object _get(self, int k):
        """State k as (h (B, h_size), c (B, c_size) or None)."""
        cdef int hs, cs
        hs, cs = self.sizes(k)
        cdef float[:, ::1] h = np.empty((self.batch, hs), dtype=np.float32)
        cdef float[:, ::1] c = np.empty((self.batch, max(cs, 1)), dtype=np.float32)
        check(lf_state_get(self.ptr, k, &h[0, 0], &c[0, 0]), "reading the state")
        return h.base, (c.base if cs else None)

    cdef object _set(self, int k, object h_arr, object c_arr):
        cdef int hs, cs
        hs, cs = self.sizes(k)
        cdef const float[:, ::1] h = np.ascontiguousarray(h_arr, dtype=np.float32)
        cdef const float[:, ::1] c
        cdef const float *cp = NULL
        if h.shape[0] != self.batch or h.shape[1] != hs:
            raise ShapeError(f"h of state {k} must be ({self.batch}, {hs})")
        if cs:
            c = np.ascontiguousarray(c_arr, dtype=np.float32)
            if c.shape[0] != self.batch or c.shape[1] != cs:
                raise ShapeError(f"c of state {k} must be ({self.batch}, {cs})")
            cp = &c[0, 0]
        check(lf_state_set(self.ptr, k, &h[0, 0], cp), "setting the state")

    cdef object _chunk(self, object x, object lengths, bint check_finite):
        """x: (B, T, I) float32 or (B, T) ids; returns y (B, T, O), or (B, O) for
        return-last models."""
        cdef cnp.ndarray xa = x if type(x) is cnp.ndarray else None
        if self.model.takes_ids:
            if (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_INT32 or cnp.PyArray_NDIM(xa) != 2
                    or xa.shape[0] != self.batch or xa.strides[1] != 4 or xa.strides[0] % 4):
                xa = check_ids(x, "ids", (self.batch, "T"))
        elif (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32
                or cnp.PyArray_NDIM(xa) != 3 or xa.shape[0] != self.batch
                or xa.shape[2] != self.model.input_size or xa.strides[2] != 4
                or xa.strides[0] % 4 or xa.strides[1] % 4):
            xa = check_array(x, "x", (self.batch, "T", self.model.input_size))
        cdef Py_ssize_t T = xa.shape[1]
        if T > MAX_DIM:
            raise ShapeError(f"x has {T} steps; at most {MAX_DIM} per call")
        return self._run(xa, <int>T, True, lengths, check_finite)

    cdef object _step(self, object x, bint check_finite):
        """x: (B, I) float32 or (B,) ids; returns y (B, O)."""
        cdef cnp.ndarray xa = x if type(x) is cnp.ndarray else None
        if self.model.takes_ids:
            if (xa is not None and cnp.PyArray_TYPE(xa) == cnp.NPY_INT64
                    and cnp.PyArray_NDIM(xa) == 1 and xa.shape[0] == self.batch):
                xa = self.narrow_ids(xa)
            elif (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_INT32
                    or cnp.PyArray_NDIM(xa) != 1 or xa.shape[0] != self.batch
                    or xa.strides[0] % 4):
                xa = check_ids(x, "ids", (self.batch,))
        elif (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32
                or cnp.PyArray_NDIM(xa) != 2 or xa.shape[0] != self.batch
                or xa.shape[1] != self.model.input_size or xa.strides[1] != 4
                or xa.strides[0] % 4):
            xa = check_array(x, "x_t", (self.batch, self.model.input_size))
        return self._run(xa, 1, False, None, check_finite)

    cdef cnp.ndarray narrow_ids(self, cnp.ndarray xa):
        """int64 ids of one step into a reused int32 buffer; ids beyond int32 become -1, which
        the engine refuses as outside the vocabulary."""
        cdef const int64_t[:] src = xa
        cdef int32_t[::1] dst
        cdef Py_ssize_t i
        cdef int64_t v
        if self.ids_buf is None:
            self.ids_buf = np.empty(self.batch, dtype=np.int32)
        dst = self.ids_buf
        for i in range(self.batch):
            v = src[i]
            dst[i] = <int32_t>v if 0 <= v <= INT32_MAX else -1
        return self.ids_buf

    cdef object _run(self, cnp.ndarray xa, int T, bint seq, object lengths, bint check_finite):
        cdef lf_io io
        cdef lf_status st
        keep = []
        ya = _prepare_io(&io, self.model, xa, self.batch, T, seq, lengths, check_finite, keep)
        if T == 0:
            if ya.ndim == 2:
                ya.fill(0)
            return ya
        self.reserve(T)
        cdef void *wsp = cnp.PyArray_DATA(self.ws)
        with nogil:
            st = lf_run(self.model.ptr, self.ptr, &io, wsp, self.ws_bytes)
        check(st, "running the model")
        return ya


# Rows of pool states (lstm_fast.pool): some rows of one or more states run per call, and rows
# are copied between states.

def rows_workspace_size(CModel model, int n, int steps):
    """Bytes of workspace :func:`run_rows` needs for n rows and `steps` steps."""
    cdef size_t need = lf_workspace_size_rows(model.ptr, n, steps)
    if need == 0:
        raise ShapeError(f"{n} rows x {steps} steps is too large")
    return need


def run_rows(CModel model, list states, which, rows, x, ws, lengths=None, bint seq=True,
             bint check_finite=True):
    """Run x on rows rows[j] of states[which[j]] (CState objects of `model`; which and rows
    int32 (n,), the pairs distinct). With `seq`, x is (n, T, I) floats or (n, T) ids and y
    (n, T, O) (or (n, O) for return-last models); else one step, x (n, I) or (n,) ids and y
    (n, O). ws: a contiguous uint8 array of at least rows_workspace_size(model, n, T) bytes.
    A failed call changes no state."""
    cdef cnp.ndarray ra = np.ascontiguousarray(rows, dtype=np.int32)
    cdef cnp.ndarray wh = np.ascontiguousarray(which, dtype=np.int32)
    cdef cnp.ndarray wa = ws
    cdef Py_ssize_t n = ra.shape[0] if ra.ndim == 1 else 0
    cdef Py_ssize_t j, k, ns = len(states)
    if ra.ndim != 1 or n < 1 or wh.ndim != 1 or wh.shape[0] != n:
        raise ShapeError("rows and which must be non-empty 1-d arrays of one length")
    if model.takes_ids:
        xa = check_ids(x, "ids", (n, "T") if seq else (n,))
    else:
        xa = check_array(x, "x", (n, "T", model.input_size) if seq else (n, model.input_size))
    if seq and xa.shape[1] > MAX_DIM:
        raise ShapeError(f"x has {xa.shape[1]} steps; at most {MAX_DIM} per call")
    cdef int T = <int>xa.shape[1] if seq else 1
    cdef size_t need = rows_workspace_size(model, <int>n, T)
    if (cnp.PyArray_TYPE(wa) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(wa)
            or <size_t>wa.size < need):
        raise ShapeError(f"the workspace must be a contiguous uint8 array of at least "
                         f"{need} bytes")
    cdef const int32_t *wp = <const int32_t *>cnp.PyArray_DATA(wh)
    for j in range(n):
        if wp[j] < 0 or wp[j] >= ns:
            raise InputError(f"state index {wp[j]} out of range for {ns} states")
    cdef CState cs
    for k in range(ns):
        cs = states[k]
        if cs.model is not model:
            raise InputError("every state must belong to the model")
    cdef lf_io io
    cdef lf_status st
    keep = []
    ya = _prepare_io(&io, model, xa, n, T, seq, lengths, check_finite, keep)
    if T == 0:
        if ya.ndim == 2:
            ya.fill(0)
        return ya
    cdef lf_state **ptrs = <lf_state **>PyMem_Malloc(n * sizeof(lf_state *))
    if ptrs == NULL:
        raise MemoryError()
    for j in range(n):
        cs = states[wp[j]]
        ptrs[j] = cs.ptr
    cdef const int32_t *rp = <const int32_t *>cnp.PyArray_DATA(ra)
    cdef void *wsp = cnp.PyArray_DATA(wa)
    cdef size_t wsb = <size_t>wa.size
    with nogil:
        st = lf_run_rows(model.ptr, ptrs, rp, <int32_t>n, &io, wsp, wsb)
    PyMem_Free(ptrs)
    if st == LF_E_BATCH_MISMATCH:
        raise InputError("state rows must be distinct and within their states")
    check(st, "running the model")
    return ya


def copy_rows(CState dst, dst_rows, CState src, src_rows):
    """Copy the state of rows src_rows of `src` to rows dst_rows of `dst` (same model; src may
    be dst when no row is both a destination and a later source)."""
    cdef cnp.ndarray d = np.ascontiguousarray(dst_rows, dtype=np.int32).reshape(-1)
    cdef cnp.ndarray s = np.ascontiguousarray(src_rows, dtype=np.int32).reshape(-1)
    if d.shape[0] != s.shape[0]:
        raise ShapeError(f"{d.shape[0]} destination rows for {s.shape[0]} source rows")
    if src.model is not dst.model:
        raise InputError("both states must belong to the same model")
    if d.shape[0] == 0:
        return
    cdef lf_status st = lf_state_copy_rows(
        dst.ptr, <const int32_t *>cnp.PyArray_DATA(d), src.ptr,
        <const int32_t *>cnp.PyArray_DATA(s), <int32_t>d.shape[0])
    if st == LF_E_BATCH_MISMATCH:
        raise InputError(f"rows out of range: to {dst_rows!r} of {dst.batch}, from "
                         f"{src_rows!r} of {src.batch}")
    check(st, "copying state rows")
