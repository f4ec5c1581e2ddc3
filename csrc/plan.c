/* The workspace of one run call: placed region by region once (lf_make_plan), the same
 * offsets used to size it (lf_workspace_size) and to cut it (lf_cut_workspace). */
#include <stdint.h>

#include "run.h"

size_t lf_place(lf_placer *p, size_t rows, size_t cols, size_t elem_bytes)
{
    size_t n, bytes, at = p->next;
    if (!p->ok || !lf_mul_size(rows, cols, &n) || !lf_mul_size(n, elem_bytes, &bytes)
        || bytes > SIZE_MAX / 4
        || at > SIZE_MAX / 2 - bytes) {
        p->ok = 0;
        return 0;
    }
    p->next = at + ((bytes + LF_ALIGN - 1) & ~(size_t)(LF_ALIGN - 1));
    return at;
}

static lf_thread_plan place_thread(lf_placer *pl, size_t B, size_t width, size_t i8_row)
{
    lf_thread_plan t;
    t.hnew = lf_place(pl, B, width, sizeof(float));
    t.cold = lf_place(pl, B, width, sizeof(float));
    t.hc = lf_place(pl, B, width, sizeof(float));
    t.scratch = lf_place(pl, B, 2 * width * sizeof(float) + i8_row, 1);
    return t;
}

lf_plan lf_make_plan(const lf_model *m, int32_t batch, int32_t steps)
{
    lf_plan p = {0};
    if (!m || batch < 1 || batch > LF_MAX_DIM || steps < 1 || steps > LF_MAX_DIM)
        return p;
    const int32_t bs = LF_BLOCK_ROWS / batch;
    p.block_steps = m->whole_call || bs > steps ? steps : (bs < 1 ? 1 : bs);
    const size_t B = (size_t)batch, rows = (size_t)p.block_steps * B;  /* < 2^48 */
    const size_t width = (size_t)m->width_max, gates = (size_t)m->gates_max;
    const size_t I0 = m->layers[0].kind == LF_LAYER_EMBEDDING ? 0 : (size_t)m->layers[0].in;
    lf_placer pl = {0, 1};
    p.xin = lf_place(&pl, rows, I0, sizeof(float));
    p.xproj[0] = lf_place(&pl, rows, gates, sizeof(float));
    p.xproj[1] = m->bidirectional ? lf_place(&pl, rows, gates, sizeof(float)) : p.xproj[0];
    for (int i = 0; i < 2; i++)
        p.buf[i] = lf_place(&pl, rows, width, sizeof(float));
    for (int i = 0; i < 2; i++)
        p.dir[i] = lf_place(&pl, rows, width, sizeof(float));
    for (int i = 0; i < 2; i++)
        p.last[i] = lf_place(&pl, B, width, sizeof(float));
    p.lastout = lf_place(&pl, B, (size_t)m->h_sum, sizeof(float));
    p.mask = lf_place(&pl, rows, 1, 1);
    p.perm = lf_place(&pl, B, 1, sizeof(int32_t));
    p.keys = lf_place(&pl, B, 1, sizeof(int64_t));
    for (int i = 0; i < 2; i++)
        p.thread[i] = place_thread(&pl, B, width, (size_t)m->i8_row);
    if (pl.ok)
        p.total_bytes = pl.next + LF_ALIGN;  /* the slack to align any workspace */
    return p;
}

size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps)
{
    return lf_make_plan(model, batch, steps < 1 ? 1 : steps).total_bytes;
}

static void cut_thread(const lf_thread_plan *t, char *base, lf_work *w)
{
    w->hnew = (float *)(base + t->hnew);
    w->cold = (float *)(base + t->cold);
    w->hc = (float *)(base + t->hc);
    w->scratch = (float *)(base + t->scratch);
}

void lf_cut_workspace(const lf_plan *p, const lf_model *m, void *ws, lf_work *w,
                      lf_work *second)
{
    char *base = (char *)(((uintptr_t)ws + LF_ALIGN - 1) & ~(uintptr_t)(LF_ALIGN - 1));
    w->xin = (float *)(base + p->xin);
    w->xproj = (float *)(base + p->xproj[0]);
    for (int i = 0; i < 2; i++) {
        w->buf[i] = (float *)(base + p->buf[i]);
        w->dir[i] = (float *)(base + p->dir[i]);
        w->last[i] = (float *)(base + p->last[i]);
    }
    w->lastout = (float *)(base + p->lastout);
    w->mask = (unsigned char *)(base + p->mask);
    w->perm = (int32_t *)(void *)(base + p->perm);
    w->keys = (int64_t *)(void *)(base + p->keys);
    w->second = NULL;
    cut_thread(&p->thread[0], base, w);
    *second = *w;
    second->xproj = (float *)(base + p->xproj[m->bidirectional ? 1 : 0]);
    cut_thread(&p->thread[1], base, second);
}
