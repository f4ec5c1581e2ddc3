/* lf_run: the main loop. Blocks of time steps, layer by layer; rows of the block buffers
 * are time-major (row t*B + b). Layers after a RETURN_LAST layer run once, after the last
 * block, on one row per sequence. */
#include <stdlib.h>
#include <string.h>

#include "run.h"

static int has_nonfinite(const float *x, int32_t B, int32_t T, int32_t I, ptrdiff_t sb,
                         ptrdiff_t st)
{
    for (int32_t b = 0; b < B; b++)
        for (int32_t t = 0; t < T; t++) {
            const float *row = x + b * sb + t * st;
            unsigned bad = 0;
            for (int32_t i = 0; i < I; i++) {
                uint32_t bits;
                memcpy(&bits, row + i, sizeof bits);
                bad |= (bits & 0x7f800000u) == 0x7f800000u;
            }
            if (bad)
                return 1;
        }
    return 0;
}

/* Rows of an (B, T, n) view must not overlap: either steps or batch rows are the outer axis. */
static int strides_ok(int32_t B, int32_t T, int32_t n, ptrdiff_t sb, ptrdiff_t st)
{
    ptrdiff_t ab = sb < 0 ? -sb : sb, at = st < 0 ? -st : st;
    if (T > 1 && at < n)
        return 0;
    if (B > 1 && ab < n)
        return 0;
    if (B > 1 && T > 1 && ab < (ptrdiff_t)(T - 1) * at + n && at < (ptrdiff_t)(B - 1) * ab + n)
        return 0;
    return 1;
}

static lf_status check_inputs(const lf_model *m, const lf_state *s, const lf_io *io)
{
    const int32_t B = s->batch, T = io->steps, O = m->layers[m->num_layers - 1].out;
    if (m->layers[0].kind == LF_LAYER_EMBEDDING ? (!io->ids || io->x) : (!io->x || io->ids))
        return io->x || io->ids ? LF_E_INPUT_KIND : LF_E_NULL;
    if (io->y && (m->return_last >= 0 ? B > 1 && (io->y_stride_batch < 0 ? -io->y_stride_batch
                                                : io->y_stride_batch) < O
                                    : !strides_ok(B, T, O, io->y_stride_batch,
                                                  io->y_stride_time)))
        return LF_E_STRIDE;
    if (io->lengths)
        for (int32_t b = 0; b < B; b++)
            if (io->lengths[b] < 0 || io->lengths[b] > T)
                return LF_E_BAD_LENGTH;
    if (io->ids) {
        const int32_t V = m->layers[0].in;
        for (int32_t b = 0; b < B; b++)
            for (int32_t t = 0; t < T; t++) {
                const int32_t id = io->ids[b * io->x_stride_batch + t * io->x_stride_time];
                if (id < 0 || id >= V)
                    return LF_E_BAD_ID;
            }
    } else if ((io->flags & LF_RUN_CHECK_FINITE)
               && has_nonfinite(io->x, B, T, m->layers[0].in, io->x_stride_batch,
                                io->x_stride_time)) {
        return LF_E_NONFINITE;
    }
    return LF_OK;
}

/* Fills rows [0, n*B) of the first buffer (and the mask) from the caller's input. Returns the
 * index of the first layer still to run; *in / *ld point at its input. */
static int32_t load_block(const lf_model *m, const lf_io *io, int32_t B, int32_t t0, int32_t n,
                          const lf_work *w, const float **in, ptrdiff_t *ld)
{
    const lf_layer *first = &m->layers[0];
    const ptrdiff_t sb = io->x_stride_batch, st = io->x_stride_time;
    const int32_t *perm = w->perm;
    if (w->mask)
        for (int32_t t = 0; t < n; t++)
            for (int32_t j = 0; j < B; j++)
                w->mask[(size_t)t * B + j] = !io->lengths
                                             || t0 + t < io->lengths[perm ? perm[j] : j];
    if (first->kind == LF_LAYER_EMBEDDING) {
        lf_run_embedding(first, io->ids, sb, st, t0, n, B, perm, w->mask, w->buf[0]);
        *in = w->buf[0];
        *ld = first->ld;
        return 1;
    }
    const int32_t I = first->in;
    if (B == 1 && (n == 1 || (st >= I && st <= INT32_MAX))) { /* BLAS lda is an int */
        *in = io->x + (ptrdiff_t)t0 * st;
        *ld = n == 1 ? I : st;
    } else {
        for (int32_t t = 0; t < n; t++)
            for (int32_t j = 0; j < B; j++)
                memcpy(w->xin + ((size_t)t * B + j) * I,
                       io->x + (perm ? perm[j] : j) * sb + (t0 + t) * st,
                       (size_t)I * sizeof(float));
        *in = w->xin;
        *ld = I;
    }
    return 0;
}

/* Runs layers [first, last) on n steps of B rows; returns the buffer holding the result. */
static const float *run_layers(const lf_model *m, lf_state *s, int32_t first, int32_t last,
                            int32_t n, const float *in, ptrdiff_t ld, const lf_work *w,
                            float *const bufs[2], int *mask_on, ptrdiff_t *ld_out)
{
    const int32_t B = s->batch, rows = n * B;
    for (int32_t l = first; l < last; l++) {
        const lf_layer *layer = &m->layers[l];
        float *out = bufs[(l - first) & 1] == in ? bufs[((l - first) & 1) ^ 1]
                                                 : bufs[(l - first) & 1];
        switch (layer->kind) {
        case LF_LAYER_LSTM:
        case LF_LAYER_GRU:
        case LF_LAYER_RNN:
            lf_run_recurrent(m, s, layer, n, in, ld, *mask_on ? w->mask : NULL, w, out);
            break;
        case LF_LAYER_DENSE:
            lf_run_dense(m, layer, rows, in, ld, out);
            break;
        case LF_LAYER_AFFINE:
            lf_run_affine(m, layer, rows, in, ld, out);
            break;
        case LF_LAYER_NORMALIZE:
            lf_run_normalize(layer, rows, in, ld, out);
            break;
        case LF_LAYER_MASKING:
            lf_run_masking(layer, rows, in, ld, w->mask, out);
            *mask_on = w->mask != NULL;
            break;
        case LF_LAYER_EMBEDDING:
            break;
        }
        in = out;
        ld = layer->ld;
    }
    *ld_out = ld;
    return in;
}

static void store_rows(const float *src, ptrdiff_t ld, int32_t B, int32_t n, int32_t O,
                       float *y, ptrdiff_t sb, ptrdiff_t st, const int32_t *perm)
{
    for (int32_t t = 0; t < n; t++)
        for (int32_t j = 0; j < B; j++)
            memcpy(y + (perm ? perm[j] : j) * sb + t * st, src + ((size_t)t * B + j) * ld,
                   (size_t)O * sizeof(float));
}

static int by_key(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Rows by length, longest first (ties by row index). */
static void sort_rows(const int32_t *lengths, int32_t B, int32_t T, int64_t *keys, int32_t *perm)
{
    for (int32_t b = 0; b < B; b++)
        keys[b] = ((int64_t)(T - lengths[b]) << 32) | b;
    qsort(keys, (size_t)B, sizeof(int64_t), by_key);
    for (int32_t j = 0; j < B; j++)
        perm[j] = (int32_t)(keys[j] & 0xffffffff);
}

/* Reorders the rows of every recurrent state: row j <- row perm[j] (inverse: perm[j] <- j). */
static void permute_state(const lf_model *m, lf_state *s, const int32_t *perm, int inverse,
                          float *tmp)
{
    const size_t B = (size_t)s->batch;
    for (int32_t l = 0; l < m->num_layers; l++) {
        const lf_layer *layer = &m->layers[l];
        for (int dir = 0; dir < layer->dirs; dir++) {
            const lf_cell *L = &layer->cell[dir];
            float *arr[2] = {s->h + (size_t)layer->h_off[dir] * B,
                             L->kind == LF_LAYER_LSTM ? s->c + (size_t)layer->c_off[dir] * B
                                                      : NULL};
            const size_t ld[2] = {(size_t)L->Rp, (size_t)L->Hp};
            for (int a = 0; a < 2 && arr[a]; a++) {
                for (size_t j = 0; j < B; j++)
                    memcpy(tmp + (inverse ? (size_t)perm[j] : j) * ld[a],
                           arr[a] + (inverse ? j : (size_t)perm[j]) * ld[a],
                           ld[a] * sizeof(float));
                memcpy(arr[a], tmp, B * ld[a] * sizeof(float));
            }
        }
    }
}

lf_status lf_run(const lf_model *m, lf_state *s, const lf_io *io, void *ws, size_t ws_bytes)
{
    if (!m || !s || !io)
        return LF_E_NULL;
    if (s->model != m)
        return LF_E_BATCH_MISMATCH;
    const int32_t T = io->steps, B = s->batch;
    if (T < 0 || T > LF_MAX_DIM)
        return LF_E_INVALID_SIZE;
    if (T == 0)
        return LF_OK;
    lf_status st = check_inputs(m, s, io);
    if (st != LF_OK)
        return st;
    lf_plan p = lf_make_plan(m, B, T);
    if (p.total_bytes == 0)
        return LF_E_TOO_LARGE;
    if (!ws)
        return LF_E_NULL;
    if (ws_bytes < p.total_bytes)
        return LF_E_WORKSPACE;

    lf_work w, second;
    lf_cut_workspace(&p, m, ws, &w, &second);
    const int masked = io->lengths || m->mask_source;
    if (masked)
        memset(w.lastout, 0, (size_t)m->h_sum * (size_t)B * sizeof(float));
    else
        w.mask = NULL;
    /* Ragged lengths as the only mask: run the rows sorted by length (longest first). */
    int32_t *perm = NULL;
    if (io->lengths && !m->mask_source && B > 1) {
        perm = w.perm;
        sort_rows(io->lengths, B, T, w.keys, perm);
        permute_state(m, s, perm, 0, w.hnew);
    }
    w.perm = second.perm = perm;
    second.mask = w.mask;
    if (io->flags & LF_RUN_PARALLEL)
        w.second = &second;

    const int32_t seq_end = m->return_last >= 0 ? m->return_last + 1 : m->num_layers;
    const int32_t O = m->layers[m->num_layers - 1].out;
    int mask_on = 0;
    for (int32_t t0 = 0; t0 < T; t0 += p.block_steps) {
        const int32_t n = T - t0 < p.block_steps ? T - t0 : p.block_steps;
        const float *in;
        ptrdiff_t ld;
        mask_on = io->lengths || (m->layers[0].flags & LF_LAYER_MASK_ZERO);
        int32_t first = load_block(m, io, B, t0, n, &w, &in, &ld);
        in = run_layers(m, s, first, seq_end, n, in, ld, &w, w.buf, &mask_on, &ld);
        if (m->return_last < 0 && io->y)
            store_rows(in, ld, B, n, O, io->y + (ptrdiff_t)t0 * io->y_stride_time,
                       io->y_stride_batch, io->y_stride_time, w.perm);
    }
    if (m->return_last >= 0) {
        const lf_layer *layer = &m->layers[m->return_last];
        /* mask_on: whether the RETURN_LAST layer ran under a mask. */
        const int keras_last = mask_on && !(layer->flags & LF_LAYER_ZERO_MASKED_OUTPUT);
        const float *last[2] = {NULL, NULL};
        for (int dir = 0; dir < layer->dirs; dir++)
            last[dir] = (keras_last ? w.lastout : s->h) + (size_t)layer->h_off[dir] * (size_t)B;
        const float *in = last[0];
        ptrdiff_t ld = layer->cell[0].Rp;
        if (layer->dirs == 2) {
            lf_merge_rows(layer->merge, B, layer->cell[0].R, layer->cell[0].Rp, last[0],
                          last[1], w.last[0], layer->ld);
            in = w.last[0];
            ld = layer->ld;
        }
        mask_on = 0;
        in = run_layers(m, s, m->return_last + 1, m->num_layers, 1, in, ld, &w, w.last,
                        &mask_on, &ld);
        if (io->y)
            store_rows(in, ld, B, 1, O, io->y, io->y_stride_batch, 0, w.perm);
    }
    if (perm)
        permute_state(m, s, perm, 1, w.hnew);
    return LF_OK;
}
