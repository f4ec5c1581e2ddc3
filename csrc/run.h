/* One run call's working memory (the workspace plan and its cut) and the operations the main
 * loop (run.c) calls: recurrent layers (recurrent.c) and the other layers (layers.c). */
#ifndef LF_RUN_H
#define LF_RUN_H

#include "internal.h"

/* Per-thread row buffers (B rows of width_max floats; scratch 2B rows plus, with int8 cells,
 * B rows of lf_model.i8_row bytes). */
typedef struct lf_thread_plan {
    size_t hnew, cold, hc, scratch;
} lf_thread_plan;

/* The workspace of one lf_run call: byte offsets of its regions from the 64-byte aligned
 * start. lf_make_plan places them (and so sizes the workspace); lf_cut_workspace cuts a
 * workspace along them. A region a model does not use is still placed, so that the size
 * depends only on the model, the batch and the steps. */
typedef struct lf_plan {
    int32_t block_steps;
    size_t xin;              /* block rows x I: the caller's input rows, gathered */
    size_t xproj[2];         /* block rows x gates_max: input projections (one per thread when
                                bidirectional, else one shared) */
    size_t buf[2];           /* block rows x width_max: layer outputs, alternating */
    size_t dir[2];           /* block rows x width_max: a bidirectional layer's directions */
    size_t last[2];          /* B x width_max: the layers after the RETURN_LAST one */
    size_t lastout;          /* B x h_sum: every cell's last valid output */
    size_t mask;             /* block rows bytes: 0 = masked step */
    size_t perm, keys;       /* B int32 and B int64: rows sorted by length */
    lf_thread_plan thread[2]; /* the calling thread's, and a second thread's */
    size_t total_bytes;      /* 0: the sizes overflow */
} lf_plan;

/* Places consecutive regions of rows x cols elements, each 64-byte aligned; ok stays 0 after
 * an overflow. */
typedef struct lf_placer {
    size_t next;
    int ok;
} lf_placer;

size_t lf_place(lf_placer *p, size_t rows, size_t cols, size_t elem_bytes);
lf_plan lf_make_plan(const lf_model *model, int32_t batch, int32_t steps);

/* One thread's view of the workspace. */
typedef struct lf_work {
    float *xin, *xproj, *buf[2], *dir[2], *last[2], *lastout;
    float *hnew, *cold, *hc, *scratch;
    unsigned char *mask;      /* NULL when nothing masks */
    int32_t *perm;            /* sorted mode: internal row j is the caller's row perm[j] */
    int64_t *keys;
    const struct lf_work *second;  /* LF_RUN_PARALLEL: a second thread's private scratch */
} lf_work;

/* The calling thread's view of workspace `ws` (any alignment) along plan p, and in *second
 * a second thread's (private row buffers and, for bidirectional models, xproj). */
void lf_cut_workspace(const lf_plan *p, const lf_model *model, void *ws, lf_work *w,
                      lf_work *second);

/* recurrent.c: a recurrent layer (one or two directions) over n steps of input rows
 * r = t*B + b at in + r*ld; outputs (n*B rows of layer->ld) to out. */
void lf_run_recurrent(const lf_model *m, lf_state *s, const lf_layer *layer, int32_t n,
                      const float *in, ptrdiff_t ld, const unsigned char *mask,
                      const lf_work *w, float *out);

/* layers.c: the other layers on `rows` rows; out has rows of layer->ld floats. */
void lf_run_embedding(const lf_layer *layer, const int32_t *ids, ptrdiff_t sb, ptrdiff_t st,
                      int32_t t0, int32_t n, int32_t B, const int32_t *perm,
                      unsigned char *mask, float *out);
void lf_run_dense(const lf_model *m, const lf_layer *layer, int32_t rows, const float *in,
                  ptrdiff_t ld_in, float *out);
void lf_run_affine(const lf_model *m, const lf_layer *layer, int32_t rows, const float *in,
                   ptrdiff_t ld_in, float *out);
void lf_run_normalize(const lf_layer *layer, int32_t rows, const float *in, ptrdiff_t ld_in,
                      float *out);
void lf_run_masking(const lf_layer *layer, int32_t rows, const float *in, ptrdiff_t ld_in,
                    unsigned char *mask, float *out);
/* out (rows, ld) = merge of f and b, each (rows, Rp) with R features. */
void lf_merge_rows(lf_merge mode, int32_t rows, int32_t R, int32_t Rp, const float *f,
                   const float *b, float *out, int32_t ld);

#endif
