/* Internal structures shared by the engine's translation units. Not part of the ABI. */
#ifndef LF_INTERNAL_H
#define LF_INTERNAL_H

#include "lstm_fast.h"

#define LF_ALIGN 64
#define LF_HPAD 16          /* hidden sizes are padded to a multiple of this internally */
#define LF_BLOCK_ROWS 1024  /* time steps per block = max(1, LF_BLOCK_ROWS / batch) */

/* One layer. Padded hidden units (H..Hp) have zero weights and stay exactly zero. */
typedef struct lf_layer {
    int32_t I, H, Hp;
    float *wih_t;     /* (I, 4Hp): gate g of unit u in column g*Hp + u; for BLAS */
    float *whh_t;     /* (H, 4Hp) */
    float *bias;      /* (4Hp) */
    float *packed;    /* Hp/vw tiles, each (I + H) rows of [i f g o] x vw floats */
} lf_layer;

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
} lf_kernels;

extern const lf_kernels lf_kernels_portable;
extern const lf_kernels lf_kernels_avx2;
extern const lf_kernels lf_kernels_avx512;

struct lf_model {
    int32_t num_layers;
    int32_t hp_max;           /* max Hp over layers */
    int32_t state_hp_sum;     /* sum of Hp over layers: floats of h (or c) per batch row */
    const lf_kernels *kernels;
    lf_layer layers[];
};

struct lf_state {
    const lf_model *model;
    int32_t batch;
    float *h;                 /* layer l at offset batch * (sum of Hp of layers < l), rows of Hp */
    float *c;
};

/* Block plan of one run call: steps per block and workspace layout (in floats). */
typedef struct lf_plan {
    int32_t block_steps;
    size_t xin_floats, xproj_floats, out_floats; /* out_floats per ping-pong buffer */
    size_t total_bytes;                          /* 0: overflow */
} lf_plan;

lf_plan lf_make_plan(const lf_model *model, int32_t batch, int32_t steps);
size_t lf_state_layer_offset(const lf_state *state, int32_t layer);
void *lf_aligned_alloc(size_t bytes);            /* zeroed; NULL on failure or overflow */
void lf_aligned_free(void *p);
int lf_mul_size(size_t a, size_t b, size_t *out); /* 1 on success, 0 on overflow */
const lf_kernels *lf_kernels_for(lf_isa isa);

#endif
