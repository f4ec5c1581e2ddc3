/*
 * lstm_fast.h — the C ABI of the lstm_fast inference engine.
 *
 * Three kinds of object, each with one owner:
 *
 *   lf_model      Immutable weights, packed for the CPU at build time. Built once from plain
 *                 row-major float32 arrays (PyTorch layout); the caller's arrays are copied,
 *                 so they may be freed right after lf_model_create. A model is never written
 *                 after creation: any number of threads may run it at the same time.
 *   lf_state      One stream's recurrent state: h and c of every layer for B sequences.
 *                 Owned by one thread at a time. Allocated once (lf_state_create).
 *   workspace     Caller-owned scratch memory for one run call, of at least
 *                 lf_workspace_size(model, B, T) bytes. Any alignment; reusable across calls.
 *
 * lf_run and lf_step never allocate, never do I/O and never keep pointers after they return.
 * Every function that can fail returns an lf_status; lf_status_string() names it. A failed
 * lf_run leaves the state untouched (all checks happen before any state is written).
 *
 * Conventions
 *   - LSTM gates are stacked in the order i, f, g, o (PyTorch order), each a block of H rows.
 *   - Weights: w_ih is (4H, I), w_hh is (4H, H), both row-major, so gates = w_ih @ x + w_hh @ h.
 *     bias is (4H,) = b_ih + b_hh (the two PyTorch biases fold into one); NULL means zeros.
 *   - Layer k+1 reads layer k's h, so input_size[k+1] must equal hidden_size[k].
 *   - Sequences are batch-first: x[b, t, i] lives at x[b*x_stride_batch + t*x_stride_time + i].
 *     Strides are in elements (floats), may be any value, and the innermost stride is 1.
 *   - State arrays exchanged with lf_state_get/set are (B, H) per layer, row-major.
 *
 * Equations (σ = logistic sigmoid), per layer and step:
 *     [i f g o] = w_ih x_t + w_hh h_{t-1} + bias
 *     c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
 *     h_t = σ(o) ⊙ tanh(c_t)
 * Activations are accurate to a few ulp (no crude approximations).
 *
 * Usage
 *     lf_lstm_weights layer = { .input_size = I, .hidden_size = H,
 *                               .w_ih = w_ih, .w_hh = w_hh, .bias = bias };
 *     lf_model *model;  lf_state *state;
 *     if (lf_model_create(&layer, 1, LF_ISA_AUTO, &model) != LF_OK) { ... }
 *     if (lf_state_create(model, B, &state) != LF_OK) { ... }        // h = c = 0
 *     size_t ws_bytes = lf_workspace_size(model, B, T);              // 0: too large
 *     void *ws = malloc(ws_bytes);
 *     lf_status st = lf_run(model, state, T, x, T * I, I,            // x is (B, T, I)
 *                           y, T * H, H, LF_RUN_CHECK_FINITE, ws, ws_bytes);
 *     // ... more chunks: the state carries over.  Then:
 *     free(ws); lf_state_free(state); lf_model_free(model);
 */
#ifndef LSTM_FAST_H
#define LSTM_FAST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LF_ABI_VERSION 1

/* Largest accepted size of any one dimension (input, hidden, batch, steps per call). */
#define LF_MAX_DIM (1 << 24)

typedef enum lf_status {
    LF_OK = 0,
    LF_E_NULL = 1,              /* a required pointer argument is NULL */
    LF_E_INVALID_SIZE = 2,      /* a size is < 1 or > LF_MAX_DIM, or layer sizes do not chain */
    LF_E_TOO_LARGE = 3,         /* sizes are valid one by one but their product overflows */
    LF_E_NO_MEMORY = 4,         /* allocation failed (only in *_create) */
    LF_E_WORKSPACE = 5,         /* workspace smaller than lf_workspace_size() */
    LF_E_NONFINITE = 6,         /* LF_RUN_CHECK_FINITE was set and the input holds NaN/Inf */
    LF_E_BATCH_MISMATCH = 7,    /* index out of range for the state's batch */
    LF_E_ISA_UNAVAILABLE = 8,   /* the requested instruction set is not supported by this CPU */
    LF_E_STRIDE = 9             /* a stride is too small: rows of x or y would overlap */
} lf_status;

/* Instruction-set level of the small-batch kernels. AUTO picks the best this CPU runs. */
typedef enum lf_isa {
    LF_ISA_AUTO = 0,
    LF_ISA_PORTABLE = 1,        /* plain C, any CPU */
    LF_ISA_AVX2 = 2,            /* AVX2 + FMA */
    LF_ISA_AVX512 = 3           /* AVX-512 F/DQ/BW/VL */
} lf_isa;

/* lf_run flags */
#define LF_RUN_CHECK_FINITE 1u  /* reject NaN/Inf in x with LF_E_NONFINITE before any work */

typedef struct lf_model lf_model;
typedef struct lf_state lf_state;

/* One LSTM layer's weights (see Conventions). The arrays are copied by lf_model_create. */
typedef struct lf_lstm_weights {
    int32_t input_size;         /* I */
    int32_t hidden_size;        /* H */
    const float *w_ih;          /* (4H, I) */
    const float *w_hh;          /* (4H, H) */
    const float *bias;          /* (4H,) or NULL */
} lf_lstm_weights;

const char *lf_status_string(lf_status status);

/* Best instruction set this CPU supports (never LF_ISA_AUTO). */
lf_isa lf_cpu_best_isa(void);

/* Build a stack of num_layers LSTM layers. `isa` selects the small-batch kernels; a level the
 * CPU lacks gives LF_E_ISA_UNAVAILABLE. On success *out owns the model (lf_model_free). */
lf_status lf_model_create(const lf_lstm_weights *layers, int32_t num_layers, lf_isa isa,
                          lf_model **out);
void lf_model_free(lf_model *model);

int32_t lf_model_num_layers(const lf_model *model);
int32_t lf_model_input_size(const lf_model *model);             /* I of layer 0 */
int32_t lf_model_hidden_size(const lf_model *model, int32_t layer);  /* -1 if out of range */
lf_isa lf_model_isa(const lf_model *model);                     /* the resolved level */

/* A state for `batch` independent sequences, h = c = 0. */
lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out);
void lf_state_free(lf_state *state);
int32_t lf_state_batch(const lf_state *state);

/* Zero h and c of the listed batch rows (indices[0..n)), or of all rows if indices is NULL.
 * Rows not listed are not touched. An index outside [0, batch) gives LF_E_BATCH_MISMATCH and
 * changes nothing. */
lf_status lf_state_reset(lf_state *state, const int32_t *indices, int32_t n);

/* Copy one layer's state in or out as row-major (B, H) arrays. In lf_state_set a NULL h or c
 * means zeros; in lf_state_get a NULL pointer skips that array. */
lf_status lf_state_set(lf_state *state, int32_t layer, const float *h, const float *c);
lf_status lf_state_get(const lf_state *state, int32_t layer, float *h, float *c);

/* Bytes of workspace one lf_run call with this batch and number of steps needs.
 * 0 when the sizes are invalid or the product overflows. */
size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps);

/* Run `steps` time steps for every sequence in the state's batch, starting from the state and
 * leaving the final state in it.
 *   x    (B, steps, I) with strides (x_stride_batch, x_stride_time), innermost stride 1.
 *   y    (B, steps, H_last) with strides (y_stride_batch, y_stride_time), or NULL when only the
 *        final state is wanted. y must not overlap x.
 *   ws   at least lf_workspace_size(model, B, steps) bytes.
 * steps = 0 is a no-op. Releases nothing, allocates nothing; safe to call concurrently on the
 * same model with different states and workspaces. */
lf_status lf_run(const lf_model *model, lf_state *state, int32_t steps,
                 const float *x, ptrdiff_t x_stride_batch, ptrdiff_t x_stride_time,
                 float *y, ptrdiff_t y_stride_batch, ptrdiff_t y_stride_time,
                 uint32_t flags, void *ws, size_t ws_bytes);

/* One time step: x is (B, I) with row stride x_stride, y is (B, H_last) with row stride
 * y_stride (or NULL). Same as lf_run with steps = 1. */
lf_status lf_step(const lf_model *model, lf_state *state,
                  const float *x, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride,
                  uint32_t flags, void *ws, size_t ws_bytes);

/* BLAS (OpenBLAS) runs the hoisted input projection of multi-step calls, and the recurrence
 * of large batches on the portable kernel level. */
const char *lf_blas_core_name(void);        /* e.g. "SkylakeX" */
void lf_blas_set_num_threads(int32_t n);

#ifdef __cplusplus
}
#endif
#endif /* LSTM_FAST_H */
