/* Rows of states: lf_run_rows (gather the listed rows of one or more states into a compact
 * state in the workspace, lf_run it, scatter it back) and lf_state_copy_rows (growth and
 * compaction of a pool). A gather or scatter moves n * (h_sum + c_sum) floats, small next to
 * one step's n * G * Hp * (I + R) multiply-adds; the kernels are lf_run's. */
#include <stdlib.h>
#include <string.h>

#include "run.h"

typedef struct lf_row_ref {
    uintptr_t state;
    int32_t row;
} lf_row_ref;

/* The compact state (h, c) and the (state, row) sort buffer, placed ahead of lf_run's
 * workspace: byte offsets, and the bytes they take (0 on overflow). */
typedef struct rows_plan {
    size_t h, c, refs, bytes;
} rows_plan;

static rows_plan plan_rows(const lf_model *m, int32_t n)
{
    lf_placer pl = {0, 1};
    rows_plan p;
    p.h = lf_place(&pl, (size_t)n, (size_t)m->h_sum, sizeof(float));
    p.c = lf_place(&pl, (size_t)n, (size_t)m->c_sum, sizeof(float));
    p.refs = lf_place(&pl, (size_t)n, 1, sizeof(lf_row_ref));
    p.bytes = pl.ok ? pl.next + LF_ALIGN : 0;
    return p;
}

size_t lf_workspace_size_rows(const lf_model *model, int32_t n, int32_t steps)
{
    if (!model || n < 1 || n > LF_MAX_DIM)
        return 0;
    const size_t extra = plan_rows(model, n).bytes, run = lf_workspace_size(model, n, steps);
    if (!extra || !run || run > SIZE_MAX - extra)
        return 0;
    return extra + run;
}

/* Copies every recurrent state's h row (Rp floats) and c row (Hp, LSTM) of n rows: from row
 * src_rows[i] of srcs[i] (or src) to row dst_rows[i] of dsts[i] (or dst). */
static void move_rows(const lf_model *m, lf_state *dst, lf_state *const *dsts,
                      const int32_t *dst_rows, const lf_state *src, lf_state *const *srcs,
                      const int32_t *src_rows, int32_t n)
{
    for (int32_t l = 0; l < m->num_layers; l++) {
        const lf_layer *layer = &m->layers[l];
        for (int dir = 0; dir < layer->dirs; dir++) {
            const lf_cell *L = &layer->cell[dir];
            const int lstm = L->kind == LF_LAYER_LSTM;
            const size_t Rp = (size_t)L->Rp, Hp = (size_t)L->Hp;
            const size_t ho = (size_t)layer->h_off[dir], co = lstm ? (size_t)layer->c_off[dir] : 0;
            for (int32_t i = 0; i < n; i++) {
                const lf_state *d = dsts ? dsts[i] : dst, *s = srcs ? srcs[i] : src;
                const size_t dr = (size_t)dst_rows[i], sr = (size_t)src_rows[i];
                const size_t dB = (size_t)d->batch, sB = (size_t)s->batch;
                memmove(d->h + ho * dB + dr * Rp, s->h + ho * sB + sr * Rp, Rp * sizeof(float));
                if (lstm)
                    memmove(d->c + co * dB + dr * Hp, s->c + co * sB + sr * Hp,
                            Hp * sizeof(float));
            }
        }
    }
}

static int by_ref(const void *a, const void *b)
{
    const lf_row_ref *x = a, *y = b;
    if (x->state != y->state)
        return x->state < y->state ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

lf_status lf_run_rows(const lf_model *m, lf_state *const *states, const int32_t *rows,
                      int32_t n, const lf_io *io, void *ws, size_t ws_bytes)
{
    if (!m || !states || !io || !rows)
        return LF_E_NULL;
    if (n < 1 || n > LF_MAX_DIM || io->steps < 0 || io->steps > LF_MAX_DIM)
        return LF_E_INVALID_SIZE;
    for (int32_t j = 0; j < n; j++) {
        if (!states[j])
            return LF_E_NULL;
        if (states[j]->model != m || rows[j] < 0 || rows[j] >= states[j]->batch)
            return LF_E_BATCH_MISMATCH;
    }
    const size_t need = lf_workspace_size_rows(m, n, io->steps);
    if (need == 0)
        return LF_E_TOO_LARGE;
    if (!ws)
        return LF_E_NULL;
    if (ws_bytes < need)
        return LF_E_WORKSPACE;
    const rows_plan p = plan_rows(m, n);
    char *base = (char *)(((uintptr_t)ws + LF_ALIGN - 1) & ~(uintptr_t)(LF_ALIGN - 1));
    lf_row_ref *refs = (lf_row_ref *)(void *)(base + p.refs);
    for (int32_t j = 0; j < n; j++)
        refs[j] = (lf_row_ref){(uintptr_t)states[j], rows[j]};
    qsort(refs, (size_t)n, sizeof(lf_row_ref), by_ref);
    for (int32_t j = 1; j < n; j++)
        if (refs[j].state == refs[j - 1].state && refs[j].row == refs[j - 1].row)
            return LF_E_BATCH_MISMATCH;
    lf_state compact = {m, n, (float *)(void *)(base + p.h), (float *)(void *)(base + p.c)};
    /* row j of the compact state is row j of io; refs' memory doubles as its index list */
    int32_t *ident = (int32_t *)refs;
    for (int32_t j = 0; j < n; j++)
        ident[j] = j;
    move_rows(m, &compact, NULL, ident, NULL, states, rows, n);
    lf_status st = lf_run(m, &compact, io, (char *)ws + p.bytes, ws_bytes - p.bytes);
    if (st == LF_OK)
        move_rows(m, NULL, states, rows, &compact, NULL, ident, n);
    return st;
}

lf_status lf_state_copy_rows(lf_state *dst, const int32_t *dst_rows, const lf_state *src,
                             const int32_t *src_rows, int32_t n)
{
    if (!dst || !src || (n > 0 && (!dst_rows || !src_rows)))
        return LF_E_NULL;
    if (n < 0)
        return LF_E_INVALID_SIZE;
    if (dst->model != src->model)
        return LF_E_BATCH_MISMATCH;
    for (int32_t i = 0; i < n; i++)
        if (dst_rows[i] < 0 || dst_rows[i] >= dst->batch || src_rows[i] < 0
            || src_rows[i] >= src->batch)
            return LF_E_BATCH_MISMATCH;
    move_rows(dst->model, dst, NULL, dst_rows, src, NULL, src_rows, n);
    return LF_OK;
}
