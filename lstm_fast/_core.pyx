# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin Cython layer over csrc/include/lstm_fast.h: dtype/shape fast checks, GIL release,
status codes to exceptions. The Python API lives in lstm_fast.model."""

cimport numpy as cnp
from libc.stdint cimport int32_t, uint32_t

import numpy as np

from ._checks import check_array
from .errors import (CpuFeatureError, EngineError, NonFiniteError, ShapeError,
                     WeightsError)

cnp.import_array()

cdef extern from "lstm_fast.h" nogil:
    ctypedef enum lf_status:
        LF_OK, LF_E_NULL, LF_E_INVALID_SIZE, LF_E_TOO_LARGE, LF_E_NO_MEMORY, LF_E_WORKSPACE,
        LF_E_NONFINITE, LF_E_BATCH_MISMATCH, LF_E_ISA_UNAVAILABLE, LF_E_STRIDE
    ctypedef enum lf_isa:
        LF_ISA_AUTO, LF_ISA_PORTABLE, LF_ISA_AVX2, LF_ISA_AVX512
    ctypedef struct lf_model:
        pass
    ctypedef struct lf_state:
        pass
    ctypedef struct lf_lstm_weights:
        int32_t input_size
        int32_t hidden_size
        const float *w_ih
        const float *w_hh
        const float *bias
    unsigned LF_RUN_CHECK_FINITE
    int LF_MAX_DIM
    const char *lf_status_string(lf_status status)
    lf_isa lf_cpu_best_isa()
    lf_status lf_model_create(const lf_lstm_weights *layers, int32_t num_layers, lf_isa isa,
                              lf_model **out)
    void lf_model_free(lf_model *model)
    lf_isa lf_model_isa(const lf_model *model)
    lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out)
    void lf_state_free(lf_state *state)
    lf_status lf_state_reset(lf_state *state, const int32_t *indices, int32_t n)
    lf_status lf_state_set(lf_state *state, int32_t layer, const float *h, const float *c)
    lf_status lf_state_get(const lf_state *state, int32_t layer, float *h, float *c)
    size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps)
    lf_status lf_run(const lf_model *model, lf_state *state, int32_t steps,
                     const float *x, ptrdiff_t x_sb, ptrdiff_t x_st,
                     float *y, ptrdiff_t y_sb, ptrdiff_t y_st,
                     uint32_t flags, void *ws, size_t ws_bytes)
    const char *lf_blas_core_name()
    void lf_blas_set_num_threads(int32_t n)

ISA_NAMES = {LF_ISA_PORTABLE: "portable", LF_ISA_AVX2: "avx2", LF_ISA_AVX512: "avx512"}
ISA_CODES = {"auto": LF_ISA_AUTO, **{v: k for k, v in ISA_NAMES.items()}}
MAX_DIM = LF_MAX_DIM


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
    if st in (LF_E_INVALID_SIZE, LF_E_TOO_LARGE, LF_E_BATCH_MISMATCH):
        raise ShapeError(msg)
    raise EngineError(msg)


def best_isa():
    return ISA_NAMES[lf_cpu_best_isa()]


def blas_core_name():
    cdef const char *name = lf_blas_core_name()
    return name.decode() if name != NULL else "unknown"


def blas_set_num_threads(int n):
    lf_blas_set_num_threads(n)


cdef class CModel:
    """Owns an lf_model built from per-layer (w_ih, w_hh, bias) float32 C-contiguous arrays."""
    cdef lf_model *ptr
    cdef readonly int input_size
    cdef readonly tuple hidden_sizes
    cdef readonly str isa

    def __cinit__(self, list layers, str isa="auto"):
        cdef Py_ssize_t n = len(layers), l
        cdef lf_lstm_weights[64] small
        cdef lf_lstm_weights *descs = small
        cdef const float[:, ::1] w_ih, w_hh
        cdef const float[::1] bias
        if n < 1 or n > 64:
            raise WeightsError(f"a model needs 1 to 64 layers, got {n}")
        keep = []
        for l in range(n):
            w_ih, w_hh, bias = layers[l]
            keep.append((w_ih, w_hh, bias))
            descs[l].input_size = w_ih.shape[1]
            descs[l].hidden_size = w_hh.shape[1]
            descs[l].w_ih = &w_ih[0, 0]
            descs[l].w_hh = &w_hh[0, 0]
            descs[l].bias = &bias[0]
        cdef lf_isa code = ISA_CODES[isa]
        cdef lf_status st
        with nogil:
            st = lf_model_create(descs, <int32_t>n, code, &self.ptr)
        if st == LF_E_ISA_UNAVAILABLE:
            raise CpuFeatureError(f"instruction set {isa!r} is not supported by this CPU "
                                  f"(best available: {best_isa()!r})")
        check(st, "building the model")
        self.input_size = descs[0].input_size
        self.hidden_sizes = tuple(descs[l].hidden_size for l in range(n))
        self.isa = ISA_NAMES[lf_model_isa(self.ptr)]

    def __dealloc__(self):
        lf_model_free(self.ptr)


cdef class CState:
    """Owns an lf_state (h, c of every layer for `batch` sequences) and a reusable workspace."""
    cdef lf_state *ptr
    cdef readonly CModel model
    cdef readonly int batch
    cdef object ws
    cdef size_t ws_bytes
    cdef int ws_steps

    def __cinit__(self, CModel model, int batch):
        self.model = model
        self.batch = batch
        check(lf_state_create(model.ptr, batch, &self.ptr), "creating the state")
        self.ws_steps = 0

    def __dealloc__(self):
        lf_state_free(self.ptr)

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

    def reset(self, indices=None):
        cdef int32_t[::1] idx
        if indices is None:
            check(lf_state_reset(self.ptr, NULL, 0), "reset")
            return
        arr = np.ascontiguousarray(indices, dtype=np.int32).reshape(-1)
        if arr.size == 0:
            return
        idx = arr
        if lf_state_reset(self.ptr, &idx[0], <int32_t>arr.size) != LF_OK:
            raise ShapeError(f"reset indices must be in [0, {self.batch}), got {indices!r}")

    cdef int layer_size(self, int layer) except -1:
        if layer < 0 or layer >= len(self.model.hidden_sizes):
            raise IndexError(f"layer {layer} out of range")
        return self.model.hidden_sizes[layer]

    def get(self, int layer):
        cdef int H = self.layer_size(layer)
        cdef float[:, ::1] h = np.empty((self.batch, H), dtype=np.float32)
        cdef float[:, ::1] c = np.empty((self.batch, H), dtype=np.float32)
        check(lf_state_get(self.ptr, layer, &h[0, 0], &c[0, 0]), "reading the state")
        return h.base, c.base

    def set(self, int layer, h_arr, c_arr):
        cdef int H = self.layer_size(layer)
        cdef const float[:, ::1] h = np.ascontiguousarray(h_arr, dtype=np.float32)
        cdef const float[:, ::1] c = np.ascontiguousarray(c_arr, dtype=np.float32)
        if h.shape[0] != self.batch or h.shape[1] != H or c.shape[0] != self.batch or c.shape[1] != H:
            raise ShapeError(f"state of layer {layer} must be ({self.batch}, {H})")
        check(lf_state_set(self.ptr, layer, &h[0, 0], &c[0, 0]), "setting the state")

    def run(self, x, bint check_finite=True):
        """x: (B, T, I) float32; returns y (B, T, H_last)."""
        cdef cnp.ndarray xa = x if type(x) is cnp.ndarray else None
        if (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32
                or cnp.PyArray_NDIM(xa) != 3 or xa.shape[0] != self.batch
                or xa.shape[2] != self.model.input_size or xa.strides[2] != 4
                or xa.strides[0] % 4 or xa.strides[1] % 4):
            xa = check_array(x, "x", (self.batch, "T", self.model.input_size))
        cdef Py_ssize_t T = xa.shape[1]
        if T > MAX_DIM:
            raise ShapeError(f"x has {T} steps; at most {MAX_DIM} per call")
        return self._run(xa, <int>T, check_finite)

    def step(self, x, bint check_finite=True):
        """x: (B, I) float32; returns y (B, H_last)."""
        cdef cnp.ndarray xa = x if type(x) is cnp.ndarray else None
        if (xa is None or cnp.PyArray_TYPE(xa) != cnp.NPY_FLOAT32
                or cnp.PyArray_NDIM(xa) != 2 or xa.shape[0] != self.batch
                or xa.shape[1] != self.model.input_size or xa.strides[1] != 4
                or xa.strides[0] % 4):
            xa = check_array(x, "x_t", (self.batch, self.model.input_size))
        return self._run(xa, 1, check_finite)

    cdef object _run(self, cnp.ndarray xa, int T, bint check_finite):
        cdef int H = self.model.hidden_sizes[len(self.model.hidden_sizes) - 1]
        cdef cnp.npy_intp dims[3]
        cdef cnp.ndarray ya
        cdef ptrdiff_t x_sb = xa.strides[0] // 4
        cdef ptrdiff_t x_st = xa.strides[1] // 4 if xa.ndim == 3 else 0
        cdef ptrdiff_t y_sb, y_st = 0
        cdef lf_status st
        self.reserve(T)
        dims[0] = self.batch
        if xa.ndim == 3:
            dims[1] = T
            dims[2] = H
            ya = cnp.PyArray_EMPTY(3, dims, cnp.NPY_FLOAT32, 0)
            y_sb = <ptrdiff_t>T * H
            y_st = H
        else:
            dims[1] = H
            ya = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
            y_sb = H
        cdef float *yp = <float *>cnp.PyArray_DATA(ya)
        if T == 0:
            return ya
        cdef const float *xp = <const float *>cnp.PyArray_DATA(xa)
        cdef void *wsp = cnp.PyArray_DATA(self.ws)
        cdef uint32_t flags = LF_RUN_CHECK_FINITE if check_finite else 0
        with nogil:
            st = lf_run(self.model.ptr, self.ptr, T, xp, x_sb, x_st, yp, y_sb, y_st,
                        flags, wsp, self.ws_bytes)
        check(st, "running the model")
        return ya
