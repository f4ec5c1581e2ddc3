/*
 * lstm_fast.h — the C ABI of the lstm_fast inference engine.
 *
 * Three kinds of object, each with one owner:
 *
 *   lf_model      Immutable weights, packed for the CPU at build time. Built once from plain
 *                 row-major float32 arrays (PyTorch layout); the caller's arrays are copied,
 *                 so they may be freed right after lf_model_create. A model is never written
 *                 after creation: any number of threads may run it at the same time.
 *   lf_state      One stream's recurrent state: h and c of every recurrent layer for B
 *                 sequences. Owned by one thread at a time. Allocated once (lf_state_create).
 *   workspace     Caller-owned scratch memory for one run call, of at least
 *                 lf_workspace_size(model, B, T) bytes. Any alignment; reusable across calls.
 *
 * lf_run never allocates, never creates a thread (LF_RUN_PARALLEL uses the pool started by
 * lf_pool_start), never does I/O and never keeps pointers after it returns. Every
 * function that can fail returns an lf_status; lf_status_string() names it. A failed lf_run
 * leaves the state untouched (all checks happen before any state is written).
 *
 * A model is a chain of layers (lf_layer_desc); layer k+1 reads layer k's output:
 *   LF_LAYER_EMBEDDING  first layer only: the input is int32 ids (B, T), output table[id].
 *                       LF_LAYER_MASK_ZERO masks the steps whose id is 0.
 *   LF_LAYER_MASKING    a step whose features all equal mask_value is masked, and its
 *                       features become 0 (Keras Masking).
 *   LF_LAYER_DENSE      y = activation(w x + bias) at every step; w is (units, input_size).
 *   LF_LAYER_LSTM       an LSTM (equations below), optionally projected (PyTorch proj_size).
 *   LF_LAYER_GRU        a GRU, reset-after (PyTorch) or reset-before (Keras reset_after=False).
 *   LF_LAYER_RNN        h_t = a(w_ih x_t + w_hh h_{t-1} + bias).
 *   LF_LAYER_AFFINE     y = activation(x * w + bias) per feature: w and bias are (units,) or
 *                       NULL (1 and 0); units = input_size. Inference-form batch norm, or a
 *                       bare activation between layers (softmax/log_softmax allowed).
 *   LF_LAYER_NORMALIZE  y = x / max(||x||_2, epsilon) per step (units = input_size).
 * A recurrent layer with LF_LAYER_BIDIRECTIONAL also runs a backward direction (its own
 * weights) from each call's last step to its first, puts its outputs back in time order and
 * merges the two (lf_merge); masked steps of a bidirectional layer output 0. Its state is two
 * recurrent states, forward then backward.
 * Only the layers up to the first recurrent layer with LF_LAYER_RETURN_LAST see time: that
 * layer outputs one row per sequence (its last step) and the layers after it run once.
 *
 * LSTM conventions
 *   - Gates are stacked in the order i, f, g, o (PyTorch order), each a block of H rows.
 *   - w is w_ih (4H, I), w_rec is w_hh (4H, H), row-major: gates = w_ih x + w_hh h + bias.
 *     bias is (4H,) = b_ih + b_hh (the two PyTorch biases fold into one); NULL means zeros.
 *   - With a = activation (tanh by default) and r = recurrent_activation (sigmoid):
 *         c_t = r(f) * c_{t-1} + r(i) * a(g)        h_t = r(o) * a(c_t)
 *   - LF_LAYER_GO_BACKWARDS processes the steps of each call from last to first and writes
 *     outputs in processing order (Keras go_backwards).
 *   - Masked steps (from an embedding/masking layer or from lengths) carry h and c unchanged.
 *     The output of a masked step repeats the layer's previous output of this call (0 before
 *     the first valid step: Keras), or is 0 with LF_LAYER_ZERO_MASKED_OUTPUT (PyTorch packed
 *     sequences). A RETURN_LAST layer outputs its last output (Keras), or with
 *     ZERO_MASKED_OUTPUT its final h (PyTorch h_n).
 * GRU (gates r, z, n; w_ih (3H, I), w_hh (3H, H)):
 *         r = s(W_ir x + b_ir + W_hr h + b_hr)        z = s(W_iz x + b_iz + W_hz h + b_hz)
 *         reset-after:  n = a(W_in x + b_in + r * (W_hn h + b_hn))
 *         reset-before: n = a(W_in x + b_in + W_hn (r * h) + b_hn)
 *         h_t = z * h_{t-1} + (1 - z) * n          (s = recurrent_activation, a = activation)
 * Activations are accurate to a few ulp (no crude approximations).
 *
 * Arrays
 *   - Sequences are batch-first: x[b, t, i] lives at x[b*stride_batch + t*stride_time + i].
 *     Strides are in elements, may be any value, and the innermost stride is 1.
 *   - State arrays exchanged with lf_state_get/set are row-major (B, n) per recurrent state
 *     (one per direction of each recurrent layer, in layer order, forward first): h has the
 *     layer's output size (P or H), c (LSTM only) has H.
 *
 * Usage
 *     lf_layer_desc layers[2] = {
 *         { .kind = LF_LAYER_LSTM, .input_size = I, .units = H, .w = w_ih, .w_rec = w_hh,
 *           .bias = bias, .activation = LF_ACT_TANH, .recurrent_activation = LF_ACT_SIGMOID },
 *         { .kind = LF_LAYER_DENSE, .input_size = H, .units = O, .w = w_fc, .bias = b_fc,
 *           .activation = LF_ACT_SOFTMAX } };
 *     lf_model *model;  lf_state *state;
 *     if (lf_model_create(layers, 2, LF_ISA_AUTO, &model) != LF_OK) { ... }
 *     if (lf_state_create(model, B, &state) != LF_OK) { ... }        // h = c = 0
 *     size_t ws_bytes = lf_workspace_size(model, B, T);              // 0: too large
 *     void *ws = malloc(ws_bytes);
 *     lf_io io = { .steps = T, .x = x, .x_stride_batch = T * I, .x_stride_time = I,
 *                  .y = y, .y_stride_batch = T * O, .y_stride_time = O,
 *                  .flags = LF_RUN_CHECK_FINITE };                   // x (B,T,I), y (B,T,O)
 *     lf_status st = lf_run(model, state, &io, ws, ws_bytes);
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

#define LF_ABI_VERSION 4

/* Marks the ABI functions: the shared object exports these and hides everything else (it is
 * built with -fvisibility=hidden). */
#if defined(__GNUC__)
#define LF_API __attribute__((visibility("default")))
#else
#define LF_API
#endif

/* Largest accepted size of any one dimension (input, hidden, batch, steps per call). */
#define LF_MAX_DIM (1 << 24)
/* Most layers in one model. */
#define LF_MAX_LAYERS 256

typedef enum lf_status {
    LF_OK = 0,
    LF_E_NULL = 1,              /* a required pointer argument is NULL */
    LF_E_INVALID_SIZE = 2,      /* a size is < 1 or > LF_MAX_DIM, or layer sizes do not chain */
    LF_E_TOO_LARGE = 3,         /* sizes are valid one by one but their product overflows */
    LF_E_NO_MEMORY = 4,         /* allocation failed (only in *_create) */
    LF_E_WORKSPACE = 5,         /* workspace smaller than lf_workspace_size() */
    LF_E_NONFINITE = 6,         /* LF_RUN_CHECK_FINITE was set and the input holds NaN/Inf */
    LF_E_BATCH_MISMATCH = 7,    /* index out of range for the state's batch, or foreign state */
    LF_E_ISA_UNAVAILABLE = 8,   /* the requested instruction set is not supported by this CPU */
    LF_E_STRIDE = 9,            /* a stride is too small: rows of y would overlap */
    LF_E_BAD_LAYER = 10,        /* unknown kind/activation/flag, or a layer in a place it
                                   cannot be (embedding not first, recurrent after RETURN_LAST,
                                   row-wise activation inside a recurrent cell) */
    LF_E_BAD_ID = 11,           /* an id is outside [0, vocabulary) */
    LF_E_BAD_LENGTH = 12,       /* a length is outside [0, steps] */
    LF_E_INPUT_KIND = 13        /* ids given to a float model or x given to an id model */
} lf_status;

/* Instruction-set level of the small-batch kernels. AUTO picks the best this CPU runs. */
typedef enum lf_isa {
    LF_ISA_AUTO = 0,
    LF_ISA_PORTABLE = 1,        /* plain C, any CPU */
    LF_ISA_AVX2 = 2,            /* AVX2 + FMA */
    LF_ISA_AVX512 = 3           /* AVX-512 F/DQ/BW/VL */
} lf_isa;

typedef enum lf_layer_kind {
    LF_LAYER_LSTM = 1,
    LF_LAYER_DENSE = 2,
    LF_LAYER_EMBEDDING = 3,
    LF_LAYER_MASKING = 4,
    LF_LAYER_GRU = 5,
    LF_LAYER_RNN = 6,
    LF_LAYER_AFFINE = 7,
    LF_LAYER_NORMALIZE = 8
} lf_layer_kind;

/* How a bidirectional layer combines its two directions' outputs. */
typedef enum lf_merge {
    LF_MERGE_CONCAT = 0,        /* [forward, backward] (PyTorch's layout, Keras's default) */
    LF_MERGE_SUM = 1,
    LF_MERGE_AVE = 2,
    LF_MERGE_MUL = 3
} lf_merge;

/* Element-wise activations, plus two row-wise ones (softmax, log_softmax) for dense layers. */
typedef enum lf_activation {
    LF_ACT_LINEAR = 0,
    LF_ACT_RELU = 1,
    LF_ACT_RELU6 = 2,           /* min(max(x, 0), 6) */
    LF_ACT_TANH = 3,
    LF_ACT_SIGMOID = 4,
    LF_ACT_HARD_SIGMOID = 5,    /* clip(x/6 + 0.5, 0, 1): Keras 3, PyTorch */
    LF_ACT_HARD_SIGMOID_02 = 6, /* clip(0.2x + 0.5, 0, 1): Keras 1/2, ONNX default */
    LF_ACT_SOFTSIGN = 7,        /* x / (1 + |x|) */
    LF_ACT_SOFTPLUS = 8,        /* log(1 + e^x) */
    LF_ACT_ELU = 9,             /* alpha = 1 */
    LF_ACT_SELU = 10,
    LF_ACT_SILU = 11,           /* x * sigmoid(x), a.k.a. swish */
    LF_ACT_GELU = 12,           /* exact: x/2 (1 + erf(x/sqrt 2)) */
    LF_ACT_EXPONENTIAL = 13,
    LF_ACT_SOFTMAX = 14,        /* dense only, over the units of one step */
    LF_ACT_LOG_SOFTMAX = 15     /* dense only */
} lf_activation;

/* lf_layer_desc.flags */
#define LF_LAYER_RETURN_LAST 1u        /* recurrent: output only the last step */
#define LF_LAYER_GO_BACKWARDS 2u       /* recurrent: process each call's steps last to first */
#define LF_LAYER_MASK_ZERO 4u          /* embedding: id 0 masks the step */
#define LF_LAYER_ZERO_MASKED_OUTPUT 8u /* recurrent: masked steps output 0 (PyTorch) */
#define LF_LAYER_BIDIRECTIONAL 16u     /* recurrent: add a backward direction (w_b, ...) */
#define LF_LAYER_RESET_AFTER 32u       /* GRU: r multiplies (w_hn h + b_hn) (PyTorch, Keras
                                          default); without it r multiplies h before w_hn */

/* Storage type of a layer's weight matrices (lf_layer_desc.weights): w and w_rec of a cell
 * (and w_proj), w of a dense layer, the table of an embedding. The caller still passes float32
 * arrays; lf_model_create rounds each weight to the type (fp16 and bf16 round to nearest even;
 * int8: one symmetric scale per output row, max|row| / 127, separately for w and w_rec), so
 * values already on the type's grid (lstm_fast's Model.quantize) are stored exactly. Biases,
 * state and all gate math stay float32. The recurrent step kernels read fp16/bf16 weights and
 * widen them in registers (fp32 FMA); int8 cells run int8 dot products, with x and h quantized
 * per step and batch row (max|v| / 127), on every batch size (AVX-512 needs VNNI, else the
 * model runs on the avx2 level); the BLAS paths (the hoisted input projection, large
 * batches on the portable level), projections, dense layers and embeddings hold the rounded
 * values widened to float32 at build time: the same numbers, in float32 storage. */
typedef enum lf_weights {
    LF_WEIGHTS_F32 = 0,
    LF_WEIGHTS_F16 = 1,
    LF_WEIGHTS_BF16 = 2,
    LF_WEIGHTS_I8 = 3
} lf_weights;

/* One layer (see the top of this file). The arrays are copied by lf_model_create. */
typedef struct lf_layer_desc {
    lf_layer_kind kind;
    int32_t input_size;   /* LSTM: I; DENSE: inputs; EMBEDDING: vocabulary; others: features */
    int32_t units;        /* LSTM: H; DENSE: outputs; EMBEDDING: dim; others: = input_size */
    const float *w;       /* w_ih: LSTM (4H, I), GRU (3H, I), RNN (H, I); DENSE: (units,
                             input_size); EMBEDDING: (vocabulary, units); AFFINE: scale
                             (units,) or NULL; MASKING, NORMALIZE: unused */
    const float *w_rec;   /* w_hh: LSTM (4H, R), GRU (3H, H), RNN (H, H); R = proj_size or H */
    const float *bias;    /* LSTM (4H,) = b_ih + b_hh; GRU: b_ih (3H,); RNN (H,) = b_ih + b_hh;
                             DENSE, AFFINE (units,); NULL means zeros */
    const float *bias_rec; /* GRU: b_hh (3H,) (b_hn cannot be folded); NULL means zeros */
    const float *w_proj;  /* LSTM: w_hr (proj_size, H), or NULL for no projection */
    int32_t proj_size;    /* LSTM with w_proj: P; h and the output have P features */
    lf_activation activation;            /* cells: candidate (and LSTM cell); DENSE, AFFINE:
                                            output */
    lf_activation recurrent_activation;  /* LSTM: the i, f, o gates; GRU: r and z */
    uint32_t flags;       /* LF_LAYER_* */
    float mask_value;     /* MASKING */
    /* LF_LAYER_BIDIRECTIONAL: the backward direction's arrays, shaped as the forward ones. */
    const float *w_b, *w_rec_b, *bias_b, *bias_rec_b, *w_proj_b;
    lf_merge merge;
    float epsilon;        /* NORMALIZE: >= 0 */
    lf_weights weights;   /* storage of the weight matrices (0: float32, see lf_weights) */
} lf_layer_desc;

/* One lf_run call. */
typedef struct lf_io {
    int32_t steps;                 /* T >= 0; 0 is a no-op */
    const float *x;                /* (B, T, I) for models without an embedding, else NULL */
    const int32_t *ids;            /* (B, T) for models that start with an embedding */
    ptrdiff_t x_stride_batch;      /* strides of x or ids, in elements */
    ptrdiff_t x_stride_time;
    const int32_t *lengths;        /* (B,) or NULL: steps t >= lengths[b] are masked */
    float *y;                      /* (B, T, O) or, for RETURN_LAST models, (B, O); NULL when
                                      only the final state is wanted. Must not overlap x. */
    ptrdiff_t y_stride_batch;
    ptrdiff_t y_stride_time;       /* ignored for RETURN_LAST models */
    uint32_t flags;                /* LF_RUN_* */
} lf_io;

/* lf_io.flags */
#define LF_RUN_CHECK_FINITE 1u  /* reject NaN/Inf in x with LF_E_NONFINITE before any work */
#define LF_RUN_PARALLEL 2u      /* split the work of large enough layers in two parts, the
                                   second on the engine's thread pool (lf_pool_start): the
                                   two directions of a bidirectional layer, the two halves
                                   of an unmasked batch, or, for a single row or a few rows
                                   of a large layer, its hidden units (see lf_pool_start);
                                   inputs are then read by the packed kernels, not projected
                                   with BLAS (equal to the serial run to float32 rounding;
                                   the same bits whether or not the pool was free) */

typedef struct lf_model lf_model;
typedef struct lf_state lf_state;

LF_API const char *lf_status_string(lf_status status);
/* LF_ABI_VERSION of the built library: a caller compiled against this header checks that it
 * equals its own LF_ABI_VERSION. */
LF_API int32_t lf_abi_version(void);

/* Best instruction set this CPU supports (never LF_ISA_AUTO). */
LF_API lf_isa lf_cpu_best_isa(void);
/* Width in bits of the FMA pipes the engine found, measured once per process: 512 when zmm FMAs
 * reach at least 1.25x the ymm flop rate (two full-width pipes, Intel server cores: 2x when
 * idle), else 256
 * (AVX-512 split in halves as on AMD Zen 4, or no AVX-512). On 512, avx512 models project the
 * inputs of large recurrent cells by one GEMM per chunk instead of reading them in the step
 * kernel (docs/architecture.md). The environment variable LSTM_FAST_FMA_WIDTH=256|512, read
 * at each call, overrides the measurement (tests force both). Models take it at creation. */
LF_API int32_t lf_cpu_fma_width(void);

/* Build a chain of num_layers layers (at least one recurrent). `isa` selects the small-batch
 * kernels; a level the CPU lacks gives LF_E_ISA_UNAVAILABLE. On success *out owns the model
 * (lf_model_free). */
LF_API lf_status lf_model_create(const lf_layer_desc *layers, int32_t num_layers, lf_isa isa,
                                 lf_model **out);
LF_API void lf_model_free(lf_model *model);

/* Recurrent states: one per direction of each recurrent layer. */
LF_API int32_t lf_model_num_states(const lf_model *model);
/* Sizes of recurrent state k: h (P or H) and c (H for an LSTM, 0 otherwise). */
LF_API lf_status lf_model_state_sizes(const lf_model *model, int32_t k, int32_t *h_size,
                                      int32_t *c_size);
LF_API int32_t lf_model_input_size(const lf_model *model);  /* I, or 1 for id models */
LF_API int32_t lf_model_output_size(const lf_model *model); /* O: features of the last layer */
LF_API int lf_model_takes_ids(const lf_model *model);  /* 1 if the first layer is an embedding */
/* 1 if y is (B, O) rather than (B, T, O): the model has a RETURN_LAST layer. */
LF_API int lf_model_returns_last(const lf_model *model);
LF_API lf_isa lf_model_isa(const lf_model *model);          /* the resolved level */
/* Bytes of weights one step of the model's recurrent kernels reads (all cells, packed). */
LF_API size_t lf_model_step_weight_bytes(const lf_model *model);
/* Bytes of memory the model holds (all of it allocated by lf_model_create). */
LF_API size_t lf_model_bytes(const lf_model *model);

/* A state for `batch` independent sequences, h = c = 0. */
LF_API lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out);
LF_API void lf_state_free(lf_state *state);
LF_API int32_t lf_state_batch(const lf_state *state);

/* Zero h and c of the listed batch rows (indices[0..n)), or of all rows if indices is NULL.
 * Rows not listed are not touched. An index outside [0, batch) gives LF_E_BATCH_MISMATCH and
 * changes nothing. */
LF_API lf_status lf_state_reset(lf_state *state, const int32_t *indices, int32_t n);

/* Copy recurrent state k in or out as row-major (B, h_size) and (B, c_size) arrays (see
 * lf_model_state_sizes). In lf_state_set a NULL h or c means zeros; in lf_state_get a NULL
 * pointer skips that array. c is ignored for cells without one. */
LF_API lf_status lf_state_set(lf_state *state, int32_t k, const float *h, const float *c);
LF_API lf_status lf_state_get(const lf_state *state, int32_t k, float *h, float *c);

/* Bytes of workspace one lf_run call with this batch and number of steps needs.
 * 0 when the sizes are invalid or the product overflows. */
LF_API size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps);

/* Run io->steps time steps for every sequence in the state's batch, starting from the state
 * and leaving the final state in it. ws holds at least lf_workspace_size(model, B, steps)
 * bytes. Allocates nothing; safe to call concurrently on the same model with different states
 * and workspaces. */
LF_API lf_status lf_run(const lf_model *model, lf_state *state, const lf_io *io,
                        void *ws, size_t ws_bytes);

/* Rows of states: a pool of many independent sessions, each a row of some lf_state (a pool
 * may hold several states and grow by adding one), of which each call runs only some.
 *
 * lf_run_rows runs io (n sequences: x/ids (n, T, ...), lengths (n,), y (n, ...)) with row j of
 * io on row rows[j] of states[j] (all of one model; a state may appear many times). The
 * listed rows are gathered into a compact n-row state in the workspace, run as lf_run runs
 * them, and written back; no other row is read or written, so another thread may reset, get,
 * set or copy rows that are not listed while it runs. The (state, row) pairs must be distinct
 * and rows[j] in [0, batch of states[j]), else LF_E_BATCH_MISMATCH (also for a state of
 * another model). ws holds at least lf_workspace_size_rows(model, n, steps) bytes. A failed
 * call changes no state. */
LF_API size_t lf_workspace_size_rows(const lf_model *model, int32_t n, int32_t steps);
LF_API lf_status lf_run_rows(const lf_model *model, lf_state *const *states,
                             const int32_t *rows, int32_t n, const lf_io *io, void *ws,
                             size_t ws_bytes);

/* Copy the whole state (h and c of every recurrent state) of rows src_rows[i] of src to rows
 * dst_rows[i] of dst, for i in [0, n). Both states belong to the same model (else
 * LF_E_BATCH_MISMATCH, as for an index out of range); nothing is copied on error. dst may be
 * src (compaction moves rows within one state): pairs are copied in order, so a row should
 * not be a destination and a later source. */
LF_API lf_status lf_state_copy_rows(lf_state *dst, const int32_t *dst_rows, const lf_state *src,
                                    const int32_t *src_rows, int32_t n);

/* The thread pool of LF_RUN_PARALLEL: one process-wide worker thread (the calling thread is
 * the other part of every split), created by lf_pool_start and kept until lf_pool_stop (also
 * run at exit); lf_run never creates a thread. Between sections the worker spins for spin_us
 * microseconds (a negative value keeps the current setting; default 100), then sleeps on a
 * condition variable; a caller whose section part the worker has not taken up yet runs it
 * itself, and one waiting for the worker's part spins (yielding now and then). The pool is
 * process-wide rather than per model because the cores are: any number of models and
 * threads share it. A parallel section (one layer of one block) takes the pool with a
 * try-lock; when several threads run lf_run at once, a section that finds the pool taken (or
 * not started) runs its second part itself, with the same buffers and kernels, so results
 * never depend on contention and callers never wait for each other. A batch-1 (or few-row)
 * layer split by hidden units runs each step's two halves on the two threads with a
 * spinning barrier per step; the split results are bit-identical to the unsplit run on the
 * packed kernels. After fork() the child has no worker (its sections run on the calling
 * thread) until it calls lf_pool_start. lf_pool_start returns LF_OK when the worker runs (or
 * ran already), LF_E_NO_MEMORY when it cannot be created. lf_pool_starts counts the workers
 * created since the process started (tests check that runs do not grow it).
 * On Linux the worker, each time it takes up a section, checks whether it runs on the core of
 * the section's caller (the kernel may wake it there after both slept, e.g. in a VM whose idle
 * vCPU counts as preempted); if so it moves itself to another core of the affinity mask it
 * started with (taskset and cpusets are honoured), and leaves that mask as it was.
 * lf_pool_moves counts those moves since the process started. */
LF_API lf_status lf_pool_start(int32_t spin_us);
LF_API void lf_pool_stop(void);
LF_API int64_t lf_pool_starts(void);
LF_API int64_t lf_pool_moves(void);

/* BLAS (OpenBLAS) runs the hoisted input projection of multi-step calls, and the recurrence
 * of large batches on the portable kernel level. */
LF_API const char *lf_blas_core_name(void);        /* e.g. "SkylakeX" */
LF_API void lf_blas_set_num_threads(int32_t n);

#ifdef __cplusplus
}
#endif
#endif /* LSTM_FAST_H */
