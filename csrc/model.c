/* Model and state construction: all of the engine's allocation happens here. */
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "internal.h"

int lf_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

void *lf_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + LF_ALIGN - 1) & ~(size_t)(LF_ALIGN - 1);
    if (bytes == 0 || rounded < bytes)
        return NULL;
    void *p = aligned_alloc(LF_ALIGN, rounded);
    if (p)
        memset(p, 0, rounded);
    return p;
}

void lf_aligned_free(void *p) { free(p); }

static int valid_dim(int32_t n) { return n >= 1 && n <= LF_MAX_DIM; }
static int32_t pad_hidden(int32_t h) { return (h + LF_HPAD - 1) / LF_HPAD * LF_HPAD; }

const char *lf_status_string(lf_status status)
{
    switch (status) {
    case LF_OK: return "ok";
    case LF_E_NULL: return "a required pointer is NULL";
    case LF_E_INVALID_SIZE: return "invalid size (< 1, > LF_MAX_DIM, or layers do not chain)";
    case LF_E_TOO_LARGE: return "sizes overflow the address space";
    case LF_E_NO_MEMORY: return "out of memory";
    case LF_E_WORKSPACE: return "workspace smaller than lf_workspace_size()";
    case LF_E_NONFINITE: return "input contains NaN or Inf";
    case LF_E_BATCH_MISMATCH: return "batch index or state does not match";
    case LF_E_ISA_UNAVAILABLE: return "instruction set not supported by this CPU";
    case LF_E_STRIDE: return "stride too small: rows would overlap";
    }
    return "unknown status";
}

static void free_layer(lf_layer *L)
{
    lf_aligned_free(L->wih_t);
    lf_aligned_free(L->whh_t);
    lf_aligned_free(L->bias);
    lf_aligned_free(L->packed);
}

void lf_model_free(lf_model *model)
{
    if (!model)
        return;
    for (int32_t l = 0; l < model->num_layers; l++)
        free_layer(&model->layers[l]);
    free(model);
}

/* Copies one layer's weights into the BLAS layout and the packed tile layout. */
static lf_status build_layer(lf_layer *L, const lf_lstm_weights *src, int32_t vw)
{
    const size_t I = (size_t)src->input_size, H = (size_t)src->hidden_size;
    const size_t Hp = (size_t)pad_hidden(src->hidden_size), G = 4 * Hp;
    size_t n_ih, n_hh, n_packed;
    if (!lf_mul_size(I, G, &n_ih) || !lf_mul_size(H, G, &n_hh)
        || !lf_mul_size(I + H, G, &n_packed) || n_packed > SIZE_MAX / sizeof(float))
        return LF_E_TOO_LARGE;
    L->I = (int32_t)I;
    L->H = (int32_t)H;
    L->Hp = (int32_t)Hp;
    L->wih_t = lf_aligned_alloc(n_ih * sizeof(float));
    L->whh_t = lf_aligned_alloc(n_hh * sizeof(float));
    L->bias = lf_aligned_alloc(G * sizeof(float));
    L->packed = lf_aligned_alloc(n_packed * sizeof(float));
    if (!L->wih_t || !L->whh_t || !L->bias || !L->packed)
        return LF_E_NO_MEMORY;
    const size_t K = I + H, tile = K * 4 * (size_t)vw;
    for (size_t g = 0; g < 4; g++) {
        for (size_t u = 0; u < H; u++) {
            const float *wi = src->w_ih + (g * H + u) * I;
            const float *wh = src->w_hh + (g * H + u) * H;
            const size_t col = g * Hp + u;
            float *pk = L->packed + (u / (size_t)vw) * tile + g * (size_t)vw + u % (size_t)vw;
            for (size_t k = 0; k < I; k++) {
                L->wih_t[k * G + col] = wi[k];
                pk[k * 4 * (size_t)vw] = wi[k];
            }
            for (size_t k = 0; k < H; k++) {
                L->whh_t[k * G + col] = wh[k];
                pk[(I + k) * 4 * (size_t)vw] = wh[k];
            }
            if (src->bias)
                L->bias[col] = src->bias[g * H + u];
        }
    }
    return LF_OK;
}

lf_status lf_model_create(const lf_lstm_weights *layers, int32_t num_layers, lf_isa isa,
                          lf_model **out)
{
    if (!layers || !out)
        return LF_E_NULL;
    *out = NULL;
    if (!valid_dim(num_layers))
        return LF_E_INVALID_SIZE;
    for (int32_t l = 0; l < num_layers; l++) {
        const lf_lstm_weights *w = &layers[l];
        if (!w->w_ih || !w->w_hh)
            return LF_E_NULL;
        if (!valid_dim(w->input_size) || !valid_dim(w->hidden_size))
            return LF_E_INVALID_SIZE;
        if (l > 0 && w->input_size != layers[l - 1].hidden_size)
            return LF_E_INVALID_SIZE;
    }
    if (isa == LF_ISA_AUTO)
        isa = lf_cpu_best_isa();
    if (isa > lf_cpu_best_isa() || isa < LF_ISA_AUTO)
        return LF_E_ISA_UNAVAILABLE;
    const lf_kernels *k = lf_kernels_for(isa);
    lf_model *m = calloc(1, sizeof(lf_model) + (size_t)num_layers * sizeof(lf_layer));
    if (!m)
        return LF_E_NO_MEMORY;
    m->num_layers = num_layers;
    m->kernels = k;
    int64_t hp_sum = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        lf_status st = build_layer(&m->layers[l], &layers[l], k->vw);
        if (st != LF_OK) {
            m->num_layers = l + 1;
            lf_model_free(m);
            return st;
        }
        const lf_layer *L = &m->layers[l];
        m->hp_max = L->Hp > m->hp_max ? L->Hp : m->hp_max;
        hp_sum += L->Hp;
    }
    if (hp_sum > INT32_MAX) {
        lf_model_free(m);
        return LF_E_TOO_LARGE;
    }
    m->state_hp_sum = (int32_t)hp_sum;
    *out = m;
    return LF_OK;
}

int32_t lf_model_num_layers(const lf_model *m) { return m ? m->num_layers : -1; }
int32_t lf_model_input_size(const lf_model *m) { return m ? m->layers[0].I : -1; }
lf_isa lf_model_isa(const lf_model *m) { return m ? m->kernels->isa : LF_ISA_AUTO; }

int32_t lf_model_hidden_size(const lf_model *m, int32_t layer)
{
    if (!m || layer < 0 || layer >= m->num_layers)
        return -1;
    return m->layers[layer].H;
}

lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out)
{
    if (!model || !out)
        return LF_E_NULL;
    *out = NULL;
    if (!valid_dim(batch))
        return LF_E_INVALID_SIZE;
    size_t n;
    if (!lf_mul_size((size_t)batch, (size_t)model->state_hp_sum, &n)
        || !lf_mul_size(n, sizeof(float), &n))
        return LF_E_TOO_LARGE;
    lf_state *s = calloc(1, sizeof(lf_state));
    if (!s)
        return LF_E_NO_MEMORY;
    s->model = model;
    s->batch = batch;
    s->h = lf_aligned_alloc(n);
    s->c = lf_aligned_alloc(n);
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

size_t lf_state_layer_offset(const lf_state *s, int32_t layer)
{
    size_t off = 0;
    for (int32_t l = 0; l < layer; l++)
        off += (size_t)s->model->layers[l].Hp;
    return off * (size_t)s->batch;
}

lf_status lf_state_reset(lf_state *s, const int32_t *indices, int32_t n)
{
    if (!s)
        return LF_E_NULL;
    if (!indices) {
        size_t bytes = (size_t)s->batch * (size_t)s->model->state_hp_sum * sizeof(float);
        memset(s->h, 0, bytes);
        memset(s->c, 0, bytes);
        return LF_OK;
    }
    if (n < 0)
        return LF_E_INVALID_SIZE;
    for (int32_t i = 0; i < n; i++)
        if (indices[i] < 0 || indices[i] >= s->batch)
            return LF_E_BATCH_MISMATCH;
    for (int32_t l = 0; l < s->model->num_layers; l++) {
        const size_t Hp = (size_t)s->model->layers[l].Hp, off = lf_state_layer_offset(s, l);
        for (int32_t i = 0; i < n; i++) {
            memset(s->h + off + (size_t)indices[i] * Hp, 0, Hp * sizeof(float));
            memset(s->c + off + (size_t)indices[i] * Hp, 0, Hp * sizeof(float));
        }
    }
    return LF_OK;
}

lf_status lf_state_set(lf_state *s, int32_t layer, const float *h, const float *c)
{
    if (!s)
        return LF_E_NULL;
    if (layer < 0 || layer >= s->model->num_layers)
        return LF_E_INVALID_SIZE;
    const size_t H = (size_t)s->model->layers[layer].H, Hp = (size_t)s->model->layers[layer].Hp;
    float *hs = s->h + lf_state_layer_offset(s, layer), *cs = s->c + lf_state_layer_offset(s, layer);
    for (size_t b = 0; b < (size_t)s->batch; b++) {
        if (h)
            memcpy(hs + b * Hp, h + b * H, H * sizeof(float));
        else
            memset(hs + b * Hp, 0, H * sizeof(float));
        if (c)
            memcpy(cs + b * Hp, c + b * H, H * sizeof(float));
        else
            memset(cs + b * Hp, 0, H * sizeof(float));
    }
    return LF_OK;
}

lf_status lf_state_get(const lf_state *s, int32_t layer, float *h, float *c)
{
    if (!s)
        return LF_E_NULL;
    if (layer < 0 || layer >= s->model->num_layers)
        return LF_E_INVALID_SIZE;
    const size_t H = (size_t)s->model->layers[layer].H, Hp = (size_t)s->model->layers[layer].Hp;
    const size_t off = lf_state_layer_offset(s, layer);
    for (size_t b = 0; b < (size_t)s->batch; b++) {
        if (h)
            memcpy(h + b * H, s->h + off + b * Hp, H * sizeof(float));
        if (c)
            memcpy(c + b * H, s->c + off + b * Hp, H * sizeof(float));
    }
    return LF_OK;
}

const char *lf_blas_core_name(void) { return LF_BLAS(openblas_get_corename)(); }
void lf_blas_set_num_threads(int32_t n) { LF_BLAS(openblas_set_num_threads)(n < 1 ? 1 : n); }
