/* Internal structures shared by the engine's translation units. Not part of the ABI. */
#ifndef LF_INTERNAL_H
#define LF_INTERNAL_H

#include "lstm_fast.h"

#define LF_ALIGN 64
#define LF_HPAD 16          /* feature sizes are padded to a multiple of this internally */
#define LF_BLOCK_ROWS 1024  /* time steps per block = max(1, LF_BLOCK_ROWS / batch) */
#define LF_DENSE_SMALL_ROWS 8 /* dense layers on at most this many rows skip BLAS */

/* Recurrent weights. Padded hidden units (H..Hp) have zero weights and stay exactly zero. */
typedef struct lf_layer {
    int32_t I, H, Hp;
    lf_activation act, ract;
    int default_acts;  /* act == tanh and ract == sigmoid: the fully fused path */
    float *wih_t;      /* (I, 4Hp): gate g of unit u in column g*Hp + u; for BLAS */
    float *whh_t;      /* (H, 4Hp) */
    float *bias;       /* (4Hp) */
    float *packed;     /* Hp/vw tiles, each (I + H) rows of [i f g o] x vw floats */
} lf_layer;

/* One layer of the chain. Outputs are rows of `ld` floats (ld = out padded to LF_HPAD). */
typedef struct lf_op {
    lf_layer_kind kind;
    int32_t in, out, ld;
    uint32_t flags;
    lf_activation act;        /* DENSE */
    float mask_value;         /* MASKING */
    int32_t slot;             /* LSTM: index of its state, else -1 */
    int32_t state_off;        /* LSTM: floats of state per batch row before this layer's */
    lf_layer rnn;             /* LSTM */
    float *w;                 /* DENSE: (in, ld) transposed; EMBEDDING: (vocabulary, out) */
    float *bias;              /* DENSE: (ld) */
} lf_op;

/* Kernels of one instruction-set level. Rows of h, c and h_out have stride Hp. */
typedef struct lf_kernels {
    lf_isa isa;
    int32_t vw;        /* floats per vector = tile width of the packed layout */
    int32_t packed_max_batch;  /* larger batches use BLAS + lstm_pointwise for the recurrence */
    /* Fused cell for rows [0, B), B <= packed_max_batch:
     * gates = bias + xproj (if non-NULL) + packed·[x (if non-NULL); h], then c and h_out. */
    void (*lstm_packed)(const lf_layer *layer, int32_t B,
                        const float *x, ptrdiff_t ldx, const float *xproj, ptrdiff_t ldxp,
                        const float *h, float *c, float *h_out);
    /* gates (B, 4Hp) hold W·x + R·h already; add bias, update c, write h_out. */
    void (*lstm_pointwise)(const lf_layer *layer, int32_t B, const float *gates,
                           float *c, float *h_out);
    /* y (rows, ld) = x (rows, in; row stride ldx) · w_t (in, ld) + bias; no activation. */
    void (*dense_small)(const float *w_t, const float *bias, int32_t in, int32_t ld,
                        int32_t rows, const float *x, ptrdiff_t ldx, float *y);
    /* y[r, 0..ld) = act(y + bias) for rows r; an element-wise activation. */
    void (*bias_act)(lf_activation act, const float *bias, int32_t rows, int32_t ld, float *y);
} lf_kernels;

extern const lf_kernels lf_kernels_portable;
extern const lf_kernels lf_kernels_avx2;
extern const lf_kernels lf_kernels_avx512;

struct lf_model {
    int32_t num_ops, num_slots;
    int32_t collapse;         /* index of the RETURN_LAST recurrent op, or -1 */
    int32_t whole_call;       /* some op needs all steps of a call in one block */
    int32_t mask_source;      /* an embedding with MASK_ZERO or a masking op exists */
    int32_t width_max;        /* max ld over ops */
    int32_t hp_max;           /* max Hp over recurrent ops */
    int32_t state_hp_sum;     /* sum of Hp over recurrent ops: floats of h (or c) per row */
    const lf_kernels *kernels;
    lf_op ops[];
};

struct lf_state {
    const lf_model *model;
    int32_t batch;
    float *h;                 /* slot k at offset batch * state_off, rows of Hp */
    float *c;
};

/* Block plan of one run call: steps per block and workspace layout (in floats). */
typedef struct lf_plan {
    int32_t block_steps;
    size_t xin, xproj, buf, mask, rowbuf, lastout;
    size_t total_bytes;       /* 0: overflow */
} lf_plan;

lf_plan lf_make_plan(const lf_model *model, int32_t batch, int32_t steps);
const lf_op *lf_slot_op(const lf_model *model, int32_t k);  /* NULL if out of range */
void *lf_aligned_alloc(size_t bytes);            /* zeroed; NULL on failure or overflow */
void lf_aligned_free(void *p);
int lf_mul_size(size_t a, size_t b, size_t *out); /* 1 on success, 0 on overflow */
const lf_kernels *lf_kernels_for(lf_isa isa);
float lf_act_scalar(lf_activation act, float x);  /* element-wise activations */
void lf_softmax_rows(int log_out, int32_t rows, int32_t n, int32_t ld, float *y);

#endif
