/* The state API: one stream's recurrent state (h and c of every cell for B sequences). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out)
{
    if (!model || !out)
        return LF_E_NULL;
    *out = NULL;
    if (!(batch >= 1 && batch <= LF_MAX_DIM))
        return LF_E_INVALID_SIZE;
    size_t nh, nc;
    if (!lf_mul_size((size_t)batch, (size_t)model->h_sum, &nh)
        || !lf_mul_size(nh, sizeof(float), &nh)
        || !lf_mul_size((size_t)batch, (size_t)model->c_sum + 1, &nc)
        || !lf_mul_size(nc, sizeof(float), &nc))
        return LF_E_TOO_LARGE;
    lf_state *s = calloc(1, sizeof(lf_state));
    if (!s)
        return LF_E_NO_MEMORY;
    s->model = model;
    s->batch = batch;
    s->h = lf_aligned_alloc(nh);
    s->c = lf_aligned_alloc(nc);
    if (!s->h || !s->c) {
        lf_state_free(s);
        return LF_E_NO_MEMORY;
    }
    *out = s;
    return LF_OK;
}

void lf_state_free(lf_state *state)
{
    if (!state)
        return;
    lf_aligned_free(state->h);
    lf_aligned_free(state->c);
    free(state);
}

int32_t lf_state_batch(const lf_state *state) { return state ? state->batch : -1; }

lf_status lf_state_reset(lf_state *s, const int32_t *indices, int32_t n)
{
    if (!s)
        return LF_E_NULL;
    const lf_model *m = s->model;
    if (!indices) {
        memset(s->h, 0, (size_t)s->batch * (size_t)m->h_sum * sizeof(float));
        memset(s->c, 0, (size_t)s->batch * (size_t)m->c_sum * sizeof(float));
        return LF_OK;
    }
    if (n < 0)
        return LF_E_INVALID_SIZE;
    for (int32_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= s->batch)
            return LF_E_BATCH_MISMATCH;
    for (int32_t k = 0; k < m->num_states; k++) {
        int32_t dir;
        const lf_layer *layer = lf_state_layer(m, k, &dir);
        const lf_cell *L = &layer->cell[dir];
        const size_t B = (size_t)s->batch;
        for (int32_t i = 0; i < n; i++) {
            const size_t b = (size_t)indices[i];
            memset(s->h + (size_t)layer->h_off[dir] * B + b * (size_t)L->Rp, 0,
                   (size_t)L->Rp * sizeof(float));
            if (L->kind == LF_LAYER_LSTM)
                memset(s->c + (size_t)layer->c_off[dir] * B + b * (size_t)L->Hp, 0,
                       (size_t)L->Hp * sizeof(float));
        }
    }
    return LF_OK;
}

/* Copies (B, n) rows between a caller's array (row stride sld) and a state array (dld);
 * a NULL src means zeros. */
static void copy_rows(float *dst, size_t dld, const float *src, size_t sld, size_t B, size_t n)
{
    for (size_t b = 0; b < B; b++) {
        if (src)
            memcpy(dst + b * dld, src + b * sld, n * sizeof(float));
        else
            memset(dst + b * dld, 0, n * sizeof(float));
    }
}

lf_status lf_state_set(lf_state *s, int32_t k, const float *h, const float *c)
{
    if (!s)
        return LF_E_NULL;
    int32_t dir;
    const lf_layer *layer = lf_state_layer(s->model, k, &dir);
    if (!layer)
        return LF_E_INVALID_SIZE;
    const lf_cell *L = &layer->cell[dir];
    const size_t B = (size_t)s->batch;
    copy_rows(s->h + (size_t)layer->h_off[dir] * B, (size_t)L->Rp, h, (size_t)L->R, B,
              (size_t)L->R);
    if (L->kind == LF_LAYER_LSTM)
        copy_rows(s->c + (size_t)layer->c_off[dir] * B, (size_t)L->Hp, c, (size_t)L->H, B,
                  (size_t)L->H);
    return LF_OK;
}

lf_status lf_state_get(const lf_state *s, int32_t k, float *h, float *c)
{
    if (!s)
        return LF_E_NULL;
    int32_t dir;
    const lf_layer *layer = lf_state_layer(s->model, k, &dir);
    if (!layer)
        return LF_E_INVALID_SIZE;
    const lf_cell *L = &layer->cell[dir];
    const size_t B = (size_t)s->batch;
    if (h)
        copy_rows(h, (size_t)L->R, s->h + (size_t)layer->h_off[dir] * B, (size_t)L->Rp, B,
                  (size_t)L->R);
    if (c && L->kind == LF_LAYER_LSTM)
        copy_rows(c, (size_t)L->H, s->c + (size_t)layer->c_off[dir] * B, (size_t)L->Hp, B,
                  (size_t)L->H);
    return LF_OK;
}
