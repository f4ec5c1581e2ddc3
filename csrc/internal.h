/* Internal structures shared by the engine's translation units. Not part of the ABI. */
#ifndef LF_INTERNAL_H
#define LF_INTERNAL_H

#include <stdatomic.h>

#include "lstm_fast.h"

#define LF_ALIGN 64
#define LF_HPAD 16          /* feature sizes are padded to a multiple of this internally */
#define LF_BLOCK_ROWS 1024  /* time steps per block = max(1, LF_BLOCK_ROWS / batch) */
#define LF_DENSE_SMALL_ROWS 8 /* dense layers on at most this many rows skip BLAS */
#define LF_ONE_ROW_READ_X 16 /* inputs a one-row LSTM kernel reads itself (more: a GEMM) */
/* On fuse_inputs levels, GRU and RNN chunks of fewer rows than this, with at least
 * LF_FUSE_MIN_INPUTS inputs, are projected by one GEMM all the same (recurrent.c). */
#define LF_FUSE_MIN_ROWS 4
#define LF_FUSE_MIN_INPUTS 8

#if defined(__GNUC__) && defined(__x86_64__)
#define LF_X86 1            /* the AVX2 and AVX-512 kernel levels are built */
#endif

/* A weight matrix the dense kernels read as y = x·W (+ bias): `w` holds rows of `ld` elements
 * of `type`, row k for input feature k. Narrow types are widened in registers; int8 elements
 * are codes with one float32 scale per column (`scale`, ld of them: W's value is code * scale,
 * the per-output-row scale of the source matrix). An Embedding table is the one matrix read by
 * rows instead: its int8 scales are per row (per token). `w` is NULL when there is none. */
typedef struct lf_matrix {
    lf_weights type;
    void *w;
    float *scale;        /* int8 only, else NULL */
} lf_matrix;

/* One direction of a recurrent layer. Padded units (H..Hp, P..Rp) have zero weights and stay
 * exactly zero. G gates per unit: LSTM 4 (i f g o), GRU 3 (r z n), RNN 1. */
typedef struct lf_cell {
    lf_layer_kind kind;
    int32_t I, H, Hp, G;
    int32_t R, Rp;       /* recurrent input = h: P (projection) or H; Rp its padded stride */
    int reset_after;     /* GRU */
    lf_activation act, ract;
    int default_acts;    /* act == tanh and ract == sigmoid: the fully fused path */
    float *wih_t;        /* (I, G*Hp): gate g of unit u in column g*Hp + u; BLAS input
                            projection */
    float *whh_t;        /* (R, G*Hp), for the BLAS recurrence (lf_blas_recurrence); NULL
                            where no path reads it */
    float *bias;         /* (G*Hp): LSTM/RNN folded bias; GRU: b_ih + b_hh for r and z, b_in
                            for n (+ b_hn in reset-before) */
    float *bias_hn;      /* GRU reset-after: b_hn (Hp); else NULL */
    float *packed;       /* Hp/vw tiles, each (I + R) rows of G gates x vw floats; NULL when
                            the weights are narrow (wtype != LF_WEIGHTS_F32) */
    lf_weights wtype;    /* storage of packed_q */
    void *packed_q;      /* the packed layout in uint16 (fp16, bf16) elements; int8: the
                            layout of kernel_int8.h */
    int32_t Iq;          /* int8: I rounded up to 4 (the x groups of packed_q) */
    float *q_scale;      /* int8: per-row weight scales, W_ih then W_hh, each (G*Hp) */
    int32_t *q_corr;     /* int8: -128 * sum of each row's int8 weights, W_ih then W_hh (the
                            zero-point correction of the VNNI kernel) */
    lf_matrix whr;       /* LSTM projection (H rows of Rp), in the cell's weight type; w NULL
                            without */
    float *zero;         /* Rp zeros (the projection's bias) */
    int32_t u_lo, u_hi;  /* units [u_lo, u_hi) that cell_packed and cell_i8 compute: [0, Hp),
                            or one thread's slice in a copy of the cell (recurrent.c's
                            hidden-unit split); multiples of the kernels' vw */
} lf_cell;

/* One layer of the chain. Outputs are rows of `ld` floats (ld = out padded to LF_HPAD). */
typedef struct lf_layer {
    lf_layer_kind kind;
    int32_t in, out, ld;
    uint32_t flags;
    lf_activation act;        /* DENSE, AFFINE */
    lf_merge merge;           /* bidirectional */
    float mask_value;         /* MASKING */
    float epsilon;            /* NORMALIZE */
    int32_t dirs;             /* recurrent: 1, or 2 when bidirectional; else 0 */
    int32_t state;            /* recurrent: index of the forward direction's state, else -1 */
    int32_t h_off[2], c_off[2]; /* recurrent: floats of state per batch row before each
                                   direction's h (rows of Rp) and c (rows of Hp) */
    lf_cell cell[2];          /* recurrent: forward, backward */
    lf_matrix weights;        /* DENSE: (in, ld), transposed; EMBEDDING: (vocabulary, out) */
    float *w;                 /* AFFINE: scale (ld) */
    float *bias;              /* DENSE, AFFINE: (ld) */
} lf_layer;

/* Kernels of one instruction-set level. */
typedef struct lf_kernels {
    lf_isa isa;
    int32_t vw;        /* floats per vector = tile width of the packed layout */
    /* One step of a cell for rows [0, B): gates = bias + xproj (if non-NULL) + packed·[x (if
     * non-NULL); h], then the state update. h (B, Rp) is read, h_out (B, Hp) written; c (LSTM,
     * B x Hp) is updated in place. For an LSTM h_out is o*a(c), before any projection.
     * scratch: 2*B*Hp floats (GRU reset-before). */
    void (*cell_packed)(const lf_cell *cell, int32_t B,
                        const float *x, ptrdiff_t ldx, const float *xproj, ptrdiff_t ldxp,
                        const float *h, float *c, float *h_out, float *scratch);
    /* One step of an int8 cell (L->wtype == LF_WEIGHTS_I8, kernel_int8.h) for rows [0, B):
     * x (B rows of I floats, stride ldx) and h (B, Rp) are read and quantized; c and h_out as
     * cell_packed. scratch: lf_i8_scratch_bytes(L, B) bytes. */
    void (*cell_i8)(const lf_cell *cell, int32_t B, const float *x, ptrdiff_t ldx,
                    const float *h, float *c, float *h_out, float *scratch);
    /* One LSTM row over n steps, any Hp, no projection, float32 weights: gates = bias +
     * xproj row (if non-NULL) + packed·[x row (if non-NULL); h]. h (Rp) is read; step t writes
     * h' to out + t*ldo and reads it back as the next step's h; c (Hp) is updated in place.
     * Strides may be negative (time reversed). */
    void (*lstm_seq_one)(const lf_cell *cell, int32_t n, const float *x, ptrdiff_t ldx,
                         const float *xproj, ptrdiff_t ldxp, const float *h, float *c,
                         float *out, ptrdiff_t ldo);
    /* The BLAS recurrence, on levels that use it (else NULL): LSTM batches of more than
     * packed_max_batch rows and GRU (reset-after) batches of more than gru_packed_max_batch
     * rows compute W·x + R·h with BLAS, then a fused pointwise pass. lstm_pointwise adds the
     * bias, updates c (B, Hp) and writes h_out (B, Hp) from gates (B, 4Hp). gru_pointwise
     * reads gates (B, 3Hp: x-proj + h·W_hh of r and z, h·W_hn of n), xn (B, Hp: the x-proj
     * of n) and h (B, Rp), and writes h_out (B, Hp) = z*h + (1-z)*n with
     * n = act(xn + b_in + r*(hn + b_hn)): the formulas of the packed kernel. */
    int32_t packed_max_batch, gru_packed_max_batch;
    /* Whether packed steps of a chunk read their inputs in the kernel (1) rather than from one
     * GEMM's projection of the chunk (0): on avx512 the kernel's x reads cost less than writing
     * and re-reading the projection (measured, Zen 4, docs/architecture.md), except for the
     * few-row GRU and RNN chunks of LF_FUSE_MIN_ROWS. */
    int fuse_inputs;
    void (*lstm_pointwise)(const lf_cell *cell, int32_t B, const float *gates,
                           float *c, float *h_out);
    void (*gru_pointwise)(const lf_cell *cell, int32_t B, const float *gates, const float *xn,
                          const float *h, float *h_out);
    /* y (rows, ld) = x (rows, in; row stride ldx) · W (in, ld) + bias; no activation. Any
     * weight type; float32 callers use BLAS instead above LF_DENSE_SMALL_ROWS rows. */
    void (*dense_small)(const lf_matrix *W, const float *bias, int32_t in, int32_t ld,
                        int32_t rows, const float *x, ptrdiff_t ldx, float *y);
    /* y[r, 0..ld) = act(y + bias) for rows r; an element-wise activation. */
    void (*bias_act)(lf_activation act, const float *bias, int32_t rows, int32_t ld, float *y);
} lf_kernels;

extern const lf_kernels lf_kernels_portable;
#ifdef LF_X86
extern const lf_kernels lf_kernels_avx2;
extern const lf_kernels lf_kernels_avx512;
#endif

struct lf_model {
    int32_t num_layers, num_states;
    int32_t return_last;      /* index of the first RETURN_LAST recurrent layer, or -1 */
    int32_t whole_call;       /* some layer needs all steps of a call in one block */
    int32_t bidirectional;    /* some layer has two directions (a second thread's scratch) */
    int32_t mask_source;      /* an embedding with MASK_ZERO or a masking layer exists */
    int32_t width_max;        /* max ld over layers, and max Hp, Rp over cells */
    int32_t gates_max;        /* max G*Hp over cells */
    int32_t i8_row;           /* int8 cells: max scratch bytes per batch row (lf_i8_row_bytes) */
    int32_t h_sum, c_sum;     /* floats of state h and c per batch row, over all states */
    size_t bytes;             /* allocated by lf_model_create (lf_model_bytes) */
    size_t project_min_bytes; /* fuse_inputs levels: larger cells may project x (recurrent.c) */
    const lf_kernels *kernels;
    lf_layer layers[];
};

struct lf_state {
    const lf_model *model;
    int32_t batch;
    float *h;                 /* direction d of a layer at offset batch * h_off[d], rows of Rp */
    float *c;                 /* at offset batch * c_off[d], rows of Hp (LSTM) */
};

/* Scratch bytes per batch row of an int8 cell step beyond its 2*Hp floats: 2 scales and
 * the quantized x (Iq) and h (Rp) rows. */
static inline int32_t lf_i8_row_bytes(const lf_cell *L)
{
    return L->wtype == LF_WEIGHTS_I8 ? 2 * (int32_t)sizeof(float) + L->Iq + L->Rp : 0;
}

static inline int32_t lf_pad_hidden(int32_t n) { return (n + LF_HPAD - 1) / LF_HPAD * LF_HPAD; }

static inline int lf_is_recurrent(lf_layer_kind kind)
{
    return kind == LF_LAYER_LSTM || kind == LF_LAYER_GRU || kind == LF_LAYER_RNN;
}

/* Whether B rows of cell L step on BLAS + a pointwise pass rather than the packed kernel
 * (whh_t exists only for the cells of a level with that path: LSTM, GRU reset-after). */
static inline int lf_blas_recurrence(const lf_kernels *k, const lf_cell *L, int32_t B)
{
    return L->whh_t && B > (L->kind == LF_LAYER_GRU ? k->gru_packed_max_batch
                                                    : k->packed_max_batch);
}

/* The thread pool (pool.c). lf_pool_begin hands fn(arg) to the worker and returns 1, or
 * returns 0 (nothing handed over) when another caller owns the pool or it is not started;
 * after 1, the caller does its own part, then lf_pool_end runs fn itself if the worker has
 * not started it yet (lf_pool_reclaim), else waits for it, and frees the pool.
 * lf_pool_reclaim (between the two) returns 1 if the caller has taken fn back (then it runs
 * fn's work itself, and lf_pool_end does not), 0 if the worker runs it.
 * lf_pool_reclaim_after first gives the worker up to wait_ns to claim fn (it may be waking
 * from its sleep), for callers with enough work left to make the wait pay. */
int lf_pool_begin(void (*fn)(void *), void *arg);
int lf_pool_reclaim(void);
int lf_pool_reclaim_after(int64_t wait_ns);
void lf_pool_end(void);

/* A spinning barrier of `parties` threads (zero-initialise count and gen). */
typedef struct lf_barrier {
    atomic_uint count, gen;
    unsigned parties;
} lf_barrier;
void lf_barrier_wait(lf_barrier *b);

/* The layer holding recurrent state k, and its direction; NULL if out of range. */
const lf_layer *lf_state_layer(const lf_model *model, int32_t k, int32_t *dir);
void *lf_aligned_alloc(size_t bytes);            /* zeroed; NULL on failure or overflow */
void lf_aligned_free(void *p);
void *lf_alloc_counted(size_t bytes, size_t *total); /* lf_aligned_alloc, adding its bytes */
int lf_mul_size(size_t a, size_t b, size_t *out); /* 1 on success, 0 on overflow */
const lf_kernels *lf_kernels_for(lf_isa isa);
int lf_cpu_has_vnni(void);                       /* AVX-512 VNNI (the int8 avx512 kernel) */
size_t lf_cpu_l2_bytes(void);                    /* L2 per core (CPUID), 1 MB if unknown */
float lf_act_scalar(lf_activation act, float x);  /* element-wise activations */
size_t lf_weight_size(lf_weights t);             /* bytes per stored weight */
size_t lf_cell_step_bytes(const lf_cell *L);     /* bytes of weights one step reads: W_ih and W_hh */
void lf_softmax_rows(int log_out, int32_t rows, int32_t n, int32_t ld, float *y);

/* fp16 / bf16 <-> float32, exact widening; narrowing rounds to nearest even. */
static inline float lf_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t bits;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f);   /* subnormal: m * 2^-24 */
        return sign ? -v : v;
    }
    bits = sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float lf_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    __builtin_memcpy(&f, &bits, sizeof f);
    return f;
}

#endif
