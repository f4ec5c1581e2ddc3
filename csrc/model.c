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
    case LF_E_BAD_LAYER: return "unknown layer kind, activation or flag, or a misplaced layer";
    case LF_E_BAD_ID: return "an id is outside [0, vocabulary)";
    case LF_E_BAD_LENGTH: return "a length is outside [0, steps]";
    case LF_E_INPUT_KIND: return "ids given to a float model, or floats to an id model";
    }
    return "unknown status";
}

static void free_op(lf_op *op)
{
    lf_aligned_free(op->rnn.wih_t);
    lf_aligned_free(op->rnn.whh_t);
    lf_aligned_free(op->rnn.bias);
    lf_aligned_free(op->rnn.packed);
    lf_aligned_free(op->w);
    lf_aligned_free(op->bias);
}

void lf_model_free(lf_model *model)
{
    if (!model)
        return;
    for (int32_t l = 0; l < model->num_ops; l++)
        free_op(&model->ops[l]);
    free(model);
}

/* Copies one LSTM's weights into the BLAS layout and the packed tile layout. */
static lf_status build_lstm(lf_layer *L, const lf_layer_desc *src, int32_t vw)
{
    const size_t I = (size_t)src->input_size, H = (size_t)src->units;
    const size_t Hp = (size_t)pad_hidden(src->units), G = 4 * Hp;
    size_t n_ih, n_hh, n_packed;
    if (!lf_mul_size(I, G, &n_ih) || !lf_mul_size(H, G, &n_hh)
        || !lf_mul_size(I + H, G, &n_packed) || n_packed > SIZE_MAX / sizeof(float))
        return LF_E_TOO_LARGE;
    L->I = (int32_t)I;
    L->H = (int32_t)H;
    L->Hp = (int32_t)Hp;
    L->act = src->activation;
    L->ract = src->recurrent_activation;
    L->default_acts = L->act == LF_ACT_TANH && L->ract == LF_ACT_SIGMOID;
    L->wih_t = lf_aligned_alloc(n_ih * sizeof(float));
    L->whh_t = lf_aligned_alloc(n_hh * sizeof(float));
    L->bias = lf_aligned_alloc(G * sizeof(float));
    L->packed = lf_aligned_alloc(n_packed * sizeof(float));
    if (!L->wih_t || !L->whh_t || !L->bias || !L->packed)
        return LF_E_NO_MEMORY;
    const size_t K = I + H, tile = K * 4 * (size_t)vw;
    for (size_t g = 0; g < 4; g++) {
        for (size_t u = 0; u < H; u++) {
            const float *wi = src->w + (g * H + u) * I;
            const float *wh = src->w_rec + (g * H + u) * H;
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

/* Dense: w (out, in) -> w_t (in, ld); bias (ld). Embedding: table copied as is. */
static lf_status build_op(lf_op *op, const lf_layer_desc *d, int32_t vw)
{
    size_t n;
    op->kind = d->kind;
    op->in = d->input_size;
    op->out = d->units;
    op->ld = pad_hidden(d->units);
    op->flags = d->flags;
    op->act = d->activation;
    op->mask_value = d->mask_value;
    op->slot = -1;
    switch (d->kind) {
    case LF_LAYER_LSTM:
        return build_lstm(&op->rnn, d, vw);
    case LF_LAYER_DENSE:
        if (!lf_mul_size((size_t)op->in, (size_t)op->ld, &n) || n > SIZE_MAX / sizeof(float))
            return LF_E_TOO_LARGE;
        op->w = lf_aligned_alloc(n * sizeof(float));
        op->bias = lf_aligned_alloc((size_t)op->ld * sizeof(float));
        if (!op->w || !op->bias)
            return LF_E_NO_MEMORY;
        for (size_t o = 0; o < (size_t)op->out; o++) {
            for (size_t k = 0; k < (size_t)op->in; k++)
                op->w[k * (size_t)op->ld + o] = d->w[o * (size_t)op->in + k];
            if (d->bias)
                op->bias[o] = d->bias[o];
        }
        return LF_OK;
    case LF_LAYER_EMBEDDING:
        if (!lf_mul_size((size_t)op->in, (size_t)op->out, &n) || n > SIZE_MAX / sizeof(float))
            return LF_E_TOO_LARGE;
        op->w = lf_aligned_alloc(n * sizeof(float));
        if (!op->w)
            return LF_E_NO_MEMORY;
        memcpy(op->w, d->w, n * sizeof(float));
        return LF_OK;
    case LF_LAYER_MASKING:
        return LF_OK;
    }
    return LF_E_BAD_LAYER;
}

static int elementwise(lf_activation a) { return a >= LF_ACT_LINEAR && a < LF_ACT_SOFTMAX; }

/* Checks one layer description in its place in the chain. */
static lf_status check_desc(const lf_layer_desc *d, int32_t l, const lf_layer_desc *prev,
                            int collapsed)
{
    if (!valid_dim(d->input_size) || !valid_dim(d->units))
        return LF_E_INVALID_SIZE;
    if (prev && d->input_size != prev->units)
        return LF_E_INVALID_SIZE;
    switch (d->kind) {
    case LF_LAYER_LSTM:
        if (!d->w || !d->w_rec)
            return LF_E_NULL;
        if (collapsed || !elementwise(d->activation) || !elementwise(d->recurrent_activation)
            || (d->flags & ~(LF_LAYER_RETURN_LAST | LF_LAYER_GO_BACKWARDS
                             | LF_LAYER_ZERO_MASKED_OUTPUT)))
            return LF_E_BAD_LAYER;
        return LF_OK;
    case LF_LAYER_DENSE:
        if (!d->w)
            return LF_E_NULL;
        if (d->flags || !(elementwise(d->activation) || d->activation == LF_ACT_SOFTMAX
                          || d->activation == LF_ACT_LOG_SOFTMAX))
            return LF_E_BAD_LAYER;
        return LF_OK;
    case LF_LAYER_EMBEDDING:
        if (!d->w)
            return LF_E_NULL;
        return l == 0 && !(d->flags & ~LF_LAYER_MASK_ZERO) ? LF_OK : LF_E_BAD_LAYER;
    case LF_LAYER_MASKING:
        if (d->units != d->input_size)
            return LF_E_INVALID_SIZE;
        return d->flags || d->mask_value != d->mask_value ? LF_E_BAD_LAYER : LF_OK;
    }
    return LF_E_BAD_LAYER;
}

lf_status lf_model_create(const lf_layer_desc *layers, int32_t num_layers, lf_isa isa,
                          lf_model **out)
{
    if (!layers || !out)
        return LF_E_NULL;
    *out = NULL;
    if (num_layers < 1 || num_layers > LF_MAX_LAYERS)
        return LF_E_INVALID_SIZE;
    int collapsed = 0, recurrent = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        const lf_layer_desc *d = &layers[l];
        lf_status st = check_desc(d, l, l ? &layers[l - 1] : NULL, collapsed);
        if (st != LF_OK)
            return st;
        if (d->kind == LF_LAYER_LSTM) {
            recurrent++;
            collapsed |= (d->flags & LF_LAYER_RETURN_LAST) != 0;
        }
    }
    if (!recurrent)
        return LF_E_BAD_LAYER;
    if (isa == LF_ISA_AUTO)
        isa = lf_cpu_best_isa();
    if (isa > lf_cpu_best_isa() || isa < LF_ISA_AUTO)
        return LF_E_ISA_UNAVAILABLE;
    const lf_kernels *k = lf_kernels_for(isa);
    lf_model *m = calloc(1, sizeof(lf_model) + (size_t)num_layers * sizeof(lf_op));
    if (!m)
        return LF_E_NO_MEMORY;
    m->kernels = k;
    m->collapse = -1;
    int64_t hp_sum = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        lf_op *op = &m->ops[l];
        m->num_ops = l + 1;
        lf_status st = build_op(op, &layers[l], k->vw);
        if (st != LF_OK) {
            lf_model_free(m);
            return st;
        }
        m->width_max = op->ld > m->width_max ? op->ld : m->width_max;
        if (op->kind == LF_LAYER_LSTM) {
            op->slot = m->num_slots++;
            op->state_off = (int32_t)hp_sum;
            hp_sum += op->rnn.Hp;
            m->hp_max = op->rnn.Hp > m->hp_max ? op->rnn.Hp : m->hp_max;
            if ((op->flags & LF_LAYER_RETURN_LAST) && m->collapse < 0)
                m->collapse = l;
            m->whole_call |= (op->flags & LF_LAYER_GO_BACKWARDS) != 0;
        }
        m->mask_source |= op->kind == LF_LAYER_MASKING
                          || (op->kind == LF_LAYER_EMBEDDING && (op->flags & LF_LAYER_MASK_ZERO));
        if (hp_sum > INT32_MAX) {
            lf_model_free(m);
            return LF_E_TOO_LARGE;
        }
    }
    m->state_hp_sum = (int32_t)hp_sum;
    *out = m;
    return LF_OK;
}

const lf_op *lf_slot_op(const lf_model *m, int32_t k)
{
    if (!m || k < 0 || k >= m->num_slots)
        return NULL;
    for (int32_t l = 0; l < m->num_ops; l++)
        if (m->ops[l].slot == k)
            return &m->ops[l];
    return NULL;
}

int32_t lf_model_num_recurrent(const lf_model *m) { return m ? m->num_slots : -1; }
int32_t lf_model_input_size(const lf_model *m)
{
    return !m ? -1 : m->ops[0].kind == LF_LAYER_EMBEDDING ? 1 : m->ops[0].in;
}
int32_t lf_model_output_size(const lf_model *m) { return m ? m->ops[m->num_ops - 1].out : -1; }
int lf_model_takes_ids(const lf_model *m) { return m && m->ops[0].kind == LF_LAYER_EMBEDDING; }
int lf_model_returns_last(const lf_model *m) { return m && m->collapse >= 0; }
lf_isa lf_model_isa(const lf_model *m) { return m ? m->kernels->isa : LF_ISA_AUTO; }

int32_t lf_model_hidden_size(const lf_model *m, int32_t k)
{
    const lf_op *op = lf_slot_op(m, k);
    return op ? op->rnn.H : -1;
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
    for (int32_t k = 0; k < s->model->num_slots; k++) {
        const lf_op *op = lf_slot_op(s->model, k);
        const size_t Hp = (size_t)op->rnn.Hp, off = (size_t)op->state_off * (size_t)s->batch;
        for (int32_t i = 0; i < n; i++) {
            memset(s->h + off + (size_t)indices[i] * Hp, 0, Hp * sizeof(float));
            memset(s->c + off + (size_t)indices[i] * Hp, 0, Hp * sizeof(float));
        }
    }
    return LF_OK;
}

/* Copies (B, H) rows between a caller's array and a state array of rows Hp; NULL src = 0. */
static void copy_rows(float *dst, size_t dld, const float *src, size_t sld, size_t B, size_t H)
{
    for (size_t b = 0; b < B; b++) {
        if (src)
            memcpy(dst + b * dld, src + b * sld, H * sizeof(float));
        else
            memset(dst + b * dld, 0, H * sizeof(float));
    }
}

lf_status lf_state_set(lf_state *s, int32_t k, const float *h, const float *c)
{
    if (!s)
        return LF_E_NULL;
    const lf_op *op = lf_slot_op(s->model, k);
    if (!op)
        return LF_E_INVALID_SIZE;
    const size_t H = (size_t)op->rnn.H, Hp = (size_t)op->rnn.Hp;
    const size_t off = (size_t)op->state_off * (size_t)s->batch;
    copy_rows(s->h + off, Hp, h, H, (size_t)s->batch, H);
    copy_rows(s->c + off, Hp, c, H, (size_t)s->batch, H);
    return LF_OK;
}

lf_status lf_state_get(const lf_state *s, int32_t k, float *h, float *c)
{
    if (!s)
        return LF_E_NULL;
    const lf_op *op = lf_slot_op(s->model, k);
    if (!op)
        return LF_E_INVALID_SIZE;
    const size_t H = (size_t)op->rnn.H, Hp = (size_t)op->rnn.Hp;
    const size_t off = (size_t)op->state_off * (size_t)s->batch;
    if (h)
        copy_rows(h, H, s->h + off, Hp, (size_t)s->batch, H);
    if (c)
        copy_rows(c, H, s->c + off, Hp, (size_t)s->batch, H);
    return LF_OK;
}

const char *lf_blas_core_name(void) { return LF_BLAS(openblas_get_corename)(); }
void lf_blas_set_num_threads(int32_t n) { LF_BLAS(openblas_set_num_threads)(n < 1 ? 1 : n); }
