/* Model and state construction: all of the engine's allocation happens here. */
#include <math.h>
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

size_t lf_weight_size(lf_weights t)
{
    return t == LF_WEIGHTS_F32 ? 4 : t == LF_WEIGHTS_I8 ? 1 : 2;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u)                 /* >= 65520: rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {                /* < 2^-14: a subnormal half (or zero) */
        float a;
        memcpy(&a, &ax, sizeof a);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f));
    }
    uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
    const uint32_t rem = ax & 0x1fffu;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1u));
    return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* Rounds a row of n weights to type t: out gets the values as float32, codes (if non-NULL)
 * the stored elements. */
static void round_row(lf_weights t, const float *src, size_t n, float *out, uint16_t *codes)
{
    for (size_t k = 0; k < n; k++) {
        uint16_t q = 0;
        switch (t) {
        case LF_WEIGHTS_F16: q = f32_to_f16(src[k]); out[k] = lf_f16_to_f32(q); break;
        case LF_WEIGHTS_BF16: q = f32_to_bf16(src[k]); out[k] = lf_bf16_to_f32(q); break;
        default: out[k] = src[k]; break;
        }
        if (codes)
            codes[k] = q;
    }
}

/* dst[r * ld + k] (or dst[k * ld + r] when transposed) = row r of src (rows x n) rounded. */
static lf_status round_matrix(lf_weights t, const float *src, size_t rows, size_t n, float *dst,
                              size_t ld, int transposed)
{
    float *tmp = malloc((n ? n : 1) * sizeof(float));
    if (!tmp)
        return LF_E_NO_MEMORY;
    for (size_t r = 0; r < rows; r++) {
        round_row(t, src + r * n, n, tmp, NULL);
        for (size_t k = 0; k < n; k++)
            dst[transposed ? k * ld + r : r * ld + k] = tmp[k];
    }
    free(tmp);
    return LF_OK;
}

static void free_cell(lf_layer *L)
{
    lf_aligned_free(L->packed_q);
    lf_aligned_free(L->qscale);
    lf_aligned_free(L->wih_t);
    lf_aligned_free(L->whh_t);
    lf_aligned_free(L->bias);
    lf_aligned_free(L->bias_hn);
    lf_aligned_free(L->packed);
    lf_aligned_free(L->whr_t);
    lf_aligned_free(L->zero);
}

static void free_op(lf_op *op)
{
    free_cell(&op->cell[0]);
    free_cell(&op->cell[1]);
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

static int32_t gates_of(lf_layer_kind kind)
{
    return kind == LF_LAYER_LSTM ? 4 : kind == LF_LAYER_GRU ? 3 : 1;
}

/* Copies one cell's weights into the BLAS layout and the packed tile layout. */
static lf_status build_cell(lf_layer *L, const lf_layer_desc *d, int backward, int32_t vw)
{
    const float *w_ih = backward ? d->w_b : d->w, *w_hh = backward ? d->w_rec_b : d->w_rec;
    const float *b = backward ? d->bias_b : d->bias, *b_rec = backward ? d->bias_rec_b
                                                                        : d->bias_rec;
    const float *w_hr = backward ? d->w_proj_b : d->w_proj;
    const size_t I = (size_t)d->input_size, H = (size_t)d->units, G = (size_t)gates_of(d->kind);
    const size_t Hp = (size_t)pad_hidden(d->units), GH = G * Hp;
    const size_t R = w_hr ? (size_t)d->proj_size : H, Rp = (size_t)pad_hidden((int32_t)R);
    size_t n_ih, n_hh, n_packed, n_hr;
    if (!lf_mul_size(I, GH, &n_ih) || !lf_mul_size(R, GH, &n_hh)
        || !lf_mul_size(I + R, GH, &n_packed) || !lf_mul_size(H, Rp, &n_hr)
        || n_packed > SIZE_MAX / sizeof(float) || n_hr > SIZE_MAX / sizeof(float))
        return LF_E_TOO_LARGE;
    L->kind = d->kind;
    L->I = (int32_t)I;
    L->H = (int32_t)H;
    L->Hp = (int32_t)Hp;
    L->G = (int32_t)G;
    L->R = (int32_t)R;
    L->Rp = (int32_t)Rp;
    L->reset_after = (d->flags & LF_LAYER_RESET_AFTER) != 0;
    L->act = d->activation;
    L->ract = d->recurrent_activation;
    L->default_acts = L->act == LF_ACT_TANH && L->ract == LF_ACT_SIGMOID;
    L->wih_t = lf_aligned_alloc(n_ih * sizeof(float));
    L->whh_t = lf_aligned_alloc(n_hh * sizeof(float));
    L->bias = lf_aligned_alloc(GH * sizeof(float));
    L->bias_hn = lf_aligned_alloc(Hp * sizeof(float));
    const lf_weights wt = d->weights;
    L->wtype = wt;
    if (wt == LF_WEIGHTS_F32)
        L->packed = lf_aligned_alloc(n_packed * sizeof(float));
    else
        L->packed_q = lf_aligned_alloc(n_packed * lf_weight_size(wt));
    float *row = malloc((I > R ? I : R) * sizeof(float));
    uint16_t *codes = malloc((I > R ? I : R) * sizeof(uint16_t));
    if (!L->wih_t || !L->whh_t || !L->bias || !L->bias_hn || !(L->packed || L->packed_q)
        || !row || !codes) {
        free(row);
        free(codes);
        return LF_E_NO_MEMORY;
    }
    const size_t K = I + R, tile = K * G * (size_t)vw;
    for (size_t g = 0; g < G; g++) {
        for (size_t u = 0; u < H; u++) {
            const float *wi = w_ih + (g * H + u) * I;
            const float *wh = w_hh + (g * H + u) * R;
            const size_t col = g * Hp + u;
            const size_t pk = (u / (size_t)vw) * tile + g * (size_t)vw + u % (size_t)vw;
            round_row(wt, wi, I, row, codes);
            for (size_t k = 0; k < I; k++) {
                L->wih_t[k * GH + col] = row[k];
                if (L->packed)
                    L->packed[pk + k * G * (size_t)vw] = row[k];
                else
                    ((uint16_t *)L->packed_q)[pk + k * G * (size_t)vw] = codes[k];
            }
            round_row(wt, wh, R, row, codes);
            for (size_t k = 0; k < R; k++) {
                L->whh_t[k * GH + col] = row[k];
                if (L->packed)
                    L->packed[pk + (I + k) * G * (size_t)vw] = row[k];
                else
                    ((uint16_t *)L->packed_q)[pk + (I + k) * G * (size_t)vw] = codes[k];
            }
            float bi = b ? b[g * H + u] : 0.0f, bh = b_rec ? b_rec[g * H + u] : 0.0f;
            if (d->kind == LF_LAYER_GRU && g == 2 && L->reset_after) {
                L->bias[col] = bi;
                L->bias_hn[u] = bh;
            } else {
                L->bias[col] = bi + bh;
            }
        }
    }
    free(row);
    free(codes);
    if (w_hr) {
        L->whr_t = lf_aligned_alloc(n_hr * sizeof(float));
        L->zero = lf_aligned_alloc(Rp * sizeof(float));
        if (!L->whr_t || !L->zero)
            return LF_E_NO_MEMORY;
        return round_matrix(wt, w_hr, R, H, L->whr_t, Rp, 1);
    }
    return LF_OK;
}

static int recurrent(lf_layer_kind kind)
{
    return kind == LF_LAYER_LSTM || kind == LF_LAYER_GRU || kind == LF_LAYER_RNN;
}

/* Output features of a layer as the next layer sees them. */
static int32_t out_features(const lf_layer_desc *d)
{
    if (!recurrent(d->kind))
        return d->units;
    int32_t h = d->w_proj ? d->proj_size : d->units;
    int bi = (d->flags & LF_LAYER_BIDIRECTIONAL) != 0;
    return bi && d->merge == LF_MERGE_CONCAT ? 2 * h : h;
}

/* Dense: w (out, in) -> w_t (in, ld); bias (ld). Embedding: table copied as is. */
static lf_status build_op(lf_op *op, const lf_layer_desc *d, int32_t vw)
{
    size_t n;
    op->kind = d->kind;
    op->in = d->input_size;
    op->out = out_features(d);
    op->ld = pad_hidden(op->out);
    op->flags = d->flags;
    op->act = d->activation;
    op->merge = d->merge;
    op->mask_value = d->mask_value;
    op->slot = -1;
    switch (d->kind) {
    case LF_LAYER_LSTM:
    case LF_LAYER_GRU:
    case LF_LAYER_RNN: {
        op->dirs = (d->flags & LF_LAYER_BIDIRECTIONAL) ? 2 : 1;
        for (int dir = 0; dir < op->dirs; dir++) {
            lf_status st = build_cell(&op->cell[dir], d, dir, vw);
            if (st != LF_OK)
                return st;
        }
        return LF_OK;
    }
    case LF_LAYER_DENSE:
        if (!lf_mul_size((size_t)op->in, (size_t)op->ld, &n) || n > SIZE_MAX / sizeof(float))
            return LF_E_TOO_LARGE;
        op->w = lf_aligned_alloc(n * sizeof(float));
        op->bias = lf_aligned_alloc((size_t)op->ld * sizeof(float));
        if (!op->w || !op->bias)
            return LF_E_NO_MEMORY;
        for (size_t o = 0; o < (size_t)op->out; o++)
            if (d->bias)
                op->bias[o] = d->bias[o];
        return round_matrix(d->weights, d->w, (size_t)op->out, (size_t)op->in, op->w,
                            (size_t)op->ld, 1);
    case LF_LAYER_EMBEDDING:
        if (!lf_mul_size((size_t)op->in, (size_t)op->out, &n) || n > SIZE_MAX / sizeof(float))
            return LF_E_TOO_LARGE;
        op->w = lf_aligned_alloc(n * sizeof(float));
        if (!op->w)
            return LF_E_NO_MEMORY;
        return round_matrix(d->weights, d->w, (size_t)op->in, (size_t)op->out, op->w,
                            (size_t)op->out, 0);
    case LF_LAYER_AFFINE:
        op->w = lf_aligned_alloc((size_t)op->ld * sizeof(float));
        op->bias = lf_aligned_alloc((size_t)op->ld * sizeof(float));
        if (!op->w || !op->bias)
            return LF_E_NO_MEMORY;
        for (int32_t o = 0; o < op->out; o++) {
            op->w[o] = d->w ? d->w[o] : 1.0f;
            op->bias[o] = d->bias ? d->bias[o] : 0.0f;
        }
        return LF_OK;
    case LF_LAYER_NORMALIZE:
        op->mask_value = d->epsilon;
        return LF_OK;
    case LF_LAYER_MASKING:
        return LF_OK;
    }
    return LF_E_BAD_LAYER;
}

static int elementwise(lf_activation a) { return a >= LF_ACT_LINEAR && a < LF_ACT_SOFTMAX; }

static lf_status check_cell(const lf_layer_desc *d, int collapsed)
{
    const uint32_t allowed = LF_LAYER_RETURN_LAST | LF_LAYER_GO_BACKWARDS
                             | LF_LAYER_ZERO_MASKED_OUTPUT | LF_LAYER_BIDIRECTIONAL
                             | (d->kind == LF_LAYER_GRU ? LF_LAYER_RESET_AFTER : 0);
    const int bi = (d->flags & LF_LAYER_BIDIRECTIONAL) != 0;
    if (!d->w || !d->w_rec || (bi && (!d->w_b || !d->w_rec_b)))
        return LF_E_NULL;
    if (d->w_proj && (d->kind != LF_LAYER_LSTM || !valid_dim(d->proj_size)))
        return d->kind != LF_LAYER_LSTM ? LF_E_BAD_LAYER : LF_E_INVALID_SIZE;
    if (bi && (!d->w_proj) != (!d->w_proj_b))
        return LF_E_NULL;
    if (collapsed || !elementwise(d->activation) || !elementwise(d->recurrent_activation)
        || (d->flags & ~allowed) || (bi && (d->flags & LF_LAYER_GO_BACKWARDS))
        || (bi && (d->merge < LF_MERGE_CONCAT || d->merge > LF_MERGE_MUL)))
        return LF_E_BAD_LAYER;
    return LF_OK;
}

/* Checks one layer description in its place in the chain. */
static lf_status check_desc(const lf_layer_desc *d, int32_t l, const lf_layer_desc *prev,
                            int collapsed)
{
    if (!valid_dim(d->input_size) || !valid_dim(d->units))
        return LF_E_INVALID_SIZE;
    if (d->weights != LF_WEIGHTS_F32 && d->weights != LF_WEIGHTS_F16
        && d->weights != LF_WEIGHTS_BF16)
        return LF_E_BAD_LAYER;
    if (prev && d->input_size != out_features(prev))
        return LF_E_INVALID_SIZE;
    switch (d->kind) {
    case LF_LAYER_LSTM:
    case LF_LAYER_GRU:
    case LF_LAYER_RNN:
        return check_cell(d, collapsed);
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
    case LF_LAYER_AFFINE:
        if (d->units != d->input_size)
            return LF_E_INVALID_SIZE;
        return d->flags || !(elementwise(d->activation) || d->activation == LF_ACT_SOFTMAX
                             || d->activation == LF_ACT_LOG_SOFTMAX) ? LF_E_BAD_LAYER : LF_OK;
    case LF_LAYER_NORMALIZE:
        if (d->units != d->input_size)
            return LF_E_INVALID_SIZE;
        return d->flags || !(d->epsilon >= 0.0f) || d->epsilon > 1e30f ? LF_E_BAD_LAYER
                                                                          : LF_OK;
    }
    return LF_E_BAD_LAYER;
}

static int32_t max32(int32_t a, int32_t b) { return a > b ? a : b; }

lf_status lf_model_create(const lf_layer_desc *layers, int32_t num_layers, lf_isa isa,
                          lf_model **out)
{
    if (!layers || !out)
        return LF_E_NULL;
    *out = NULL;
    if (num_layers < 1 || num_layers > LF_MAX_LAYERS)
        return LF_E_INVALID_SIZE;
    int collapsed = 0, cells = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        const lf_layer_desc *d = &layers[l];
        lf_status st = check_desc(d, l, l ? &layers[l - 1] : NULL, collapsed);
        if (st != LF_OK)
            return st;
        if (recurrent(d->kind)) {
            cells++;
            collapsed |= (d->flags & LF_LAYER_RETURN_LAST) != 0;
        }
    }
    if (!cells)
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
    int64_t h_sum = 0, c_sum = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        lf_op *op = &m->ops[l];
        m->num_ops = l + 1;
        lf_status st = build_op(op, &layers[l], k->vw);
        if (st != LF_OK) {
            lf_model_free(m);
            return st;
        }
        m->width_max = max32(m->width_max, op->ld);
        if (op->dirs) {
            op->slot = m->num_slots;
            m->num_slots += op->dirs;
            for (int dir = 0; dir < op->dirs; dir++) {
                const lf_layer *L = &op->cell[dir];
                op->h_off[dir] = (int32_t)h_sum;
                op->c_off[dir] = (int32_t)c_sum;
                h_sum += L->Rp;
                c_sum += L->kind == LF_LAYER_LSTM ? L->Hp : 0;
                m->width_max = max32(m->width_max, max32(L->Hp, L->Rp));
                m->gates_max = max32(m->gates_max, L->G * L->Hp);
            }
            if ((op->flags & LF_LAYER_RETURN_LAST) && m->collapse < 0)
                m->collapse = l;
            m->whole_call |= (op->flags & (LF_LAYER_GO_BACKWARDS | LF_LAYER_BIDIRECTIONAL)) != 0;
            m->bidirectional |= op->dirs == 2;
        }
        m->mask_source |= op->kind == LF_LAYER_MASKING
                          || (op->kind == LF_LAYER_EMBEDDING && (op->flags & LF_LAYER_MASK_ZERO));
        if (h_sum > INT32_MAX / 2 || c_sum > INT32_MAX / 2) {
            lf_model_free(m);
            return LF_E_TOO_LARGE;
        }
    }
    m->h_sum = (int32_t)h_sum;
    m->c_sum = (int32_t)c_sum;
    *out = m;
    return LF_OK;
}

const lf_op *lf_slot_op(const lf_model *m, int32_t k, int32_t *dir)
{
    *dir = 0;
    if (!m || k < 0 || k >= m->num_slots)
        return NULL;
    for (int32_t l = 0; l < m->num_ops; l++) {
        const lf_op *op = &m->ops[l];
        if (op->dirs && k >= op->slot && k < op->slot + op->dirs) {
            *dir = k - op->slot;
            return op;
        }
    }
    return NULL;
}

int32_t lf_model_num_states(const lf_model *m) { return m ? m->num_slots : -1; }
int32_t lf_model_input_size(const lf_model *m)
{
    return !m ? -1 : m->ops[0].kind == LF_LAYER_EMBEDDING ? 1 : m->ops[0].in;
}
int32_t lf_model_output_size(const lf_model *m) { return m ? m->ops[m->num_ops - 1].out : -1; }
int lf_model_takes_ids(const lf_model *m) { return m && m->ops[0].kind == LF_LAYER_EMBEDDING; }
int lf_model_returns_last(const lf_model *m) { return m && m->collapse >= 0; }
lf_isa lf_model_isa(const lf_model *m) { return m ? m->kernels->isa : LF_ISA_AUTO; }

size_t lf_model_step_weight_bytes(const lf_model *m)
{
    size_t bytes = 0;
    for (int32_t l = 0; m && l < m->num_ops; l++)
        for (int dir = 0; dir < m->ops[l].dirs; dir++) {
            const lf_layer *L = &m->ops[l].cell[dir];
            bytes += (size_t)(L->I + L->R) * (size_t)L->G * (size_t)L->Hp
                     * lf_weight_size(L->wtype);
        }
    return bytes;
}

lf_status lf_model_state_sizes(const lf_model *m, int32_t k, int32_t *h_size, int32_t *c_size)
{
    int32_t dir;
    const lf_op *op = lf_slot_op(m, k, &dir);
    if (!op)
        return m ? LF_E_INVALID_SIZE : LF_E_NULL;
    const lf_layer *L = &op->cell[dir];
    if (h_size)
        *h_size = L->R;
    if (c_size)
        *c_size = L->kind == LF_LAYER_LSTM ? L->H : 0;
    return LF_OK;
}

lf_status lf_state_create(const lf_model *model, int32_t batch, lf_state **out)
{
    if (!model || !out)
        return LF_E_NULL;
    *out = NULL;
    if (!valid_dim(batch))
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
    for (int32_t k = 0; k < m->num_slots; k++) {
        int32_t dir;
        const lf_op *op = lf_slot_op(m, k, &dir);
        const lf_layer *L = &op->cell[dir];
        const size_t B = (size_t)s->batch;
        for (int32_t i = 0; i < n; i++) {
            const size_t b = (size_t)indices[i];
            memset(s->h + (size_t)op->h_off[dir] * B + b * (size_t)L->Rp, 0,
                   (size_t)L->Rp * sizeof(float));
            if (L->kind == LF_LAYER_LSTM)
                memset(s->c + (size_t)op->c_off[dir] * B + b * (size_t)L->Hp, 0,
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
    const lf_op *op = lf_slot_op(s->model, k, &dir);
    if (!op)
        return LF_E_INVALID_SIZE;
    const lf_layer *L = &op->cell[dir];
    const size_t B = (size_t)s->batch;
    copy_rows(s->h + (size_t)op->h_off[dir] * B, (size_t)L->Rp, h, (size_t)L->R, B,
              (size_t)L->R);
    if (L->kind == LF_LAYER_LSTM)
        copy_rows(s->c + (size_t)op->c_off[dir] * B, (size_t)L->Hp, c, (size_t)L->H, B,
                  (size_t)L->H);
    return LF_OK;
}

lf_status lf_state_get(const lf_state *s, int32_t k, float *h, float *c)
{
    if (!s)
        return LF_E_NULL;
    int32_t dir;
    const lf_op *op = lf_slot_op(s->model, k, &dir);
    if (!op)
        return LF_E_INVALID_SIZE;
    const lf_layer *L = &op->cell[dir];
    const size_t B = (size_t)s->batch;
    if (h)
        copy_rows(h, (size_t)L->R, s->h + (size_t)op->h_off[dir] * B, (size_t)L->Rp, B,
                  (size_t)L->R);
    if (c && L->kind == LF_LAYER_LSTM)
        copy_rows(c, (size_t)L->H, s->c + (size_t)op->c_off[dir] * B, (size_t)L->Hp, B,
                  (size_t)L->H);
    return LF_OK;
}

const char *lf_blas_core_name(void) { return LF_BLAS(openblas_get_corename)(); }
void lf_blas_set_num_threads(int32_t n) { LF_BLAS(openblas_set_num_threads)(n < 1 ? 1 : n); }
