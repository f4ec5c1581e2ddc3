/* Model construction: the layer descriptions checked in their place in the chain, each layer
 * built (cells by pack.c), and the model's queries. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pack.h"

static int valid_dim(int32_t n) { return n >= 1 && n <= LF_MAX_DIM; }

static void free_layer(lf_layer *layer)
{
    lf_free_cell(&layer->cell[0]);
    lf_free_cell(&layer->cell[1]);
    lf_free_matrix(&layer->weights);
    lf_aligned_free(layer->w);
    lf_aligned_free(layer->bias);
}

void lf_model_free(lf_model *model)
{
    if (!model)
        return;
    for (int32_t l = 0; l < model->num_layers; l++)
        free_layer(&model->layers[l]);
    free(model);
}

/* Output features of a layer as the next layer sees them. */
static int32_t out_features(const lf_layer_desc *d)
{
    if (!lf_is_recurrent(d->kind))
        return d->units;
    int32_t h = d->w_proj ? d->proj_size : d->units;
    int bi = (d->flags & LF_LAYER_BIDIRECTIONAL) != 0;
    return bi && d->merge == LF_MERGE_CONCAT ? 2 * h : h;
}

/* Dense: w (out, in) -> weights (in, ld); bias (ld). Embedding: the table (vocabulary, out).
 * Both in the layer's weight type. */
static lf_status build_layer(lf_layer *layer, const lf_layer_desc *d, const lf_kernels *k,
                             size_t *bytes)
{
    layer->kind = d->kind;
    layer->in = d->input_size;
    layer->out = out_features(d);
    layer->ld = lf_pad_hidden(layer->out);
    layer->flags = d->flags;
    layer->act = d->activation;
    layer->merge = d->merge;
    layer->mask_value = d->mask_value;
    layer->state = -1;
    switch (d->kind) {
    case LF_LAYER_LSTM:
    case LF_LAYER_GRU:
    case LF_LAYER_RNN: {
        layer->dirs = (d->flags & LF_LAYER_BIDIRECTIONAL) ? 2 : 1;
        for (int dir = 0; dir < layer->dirs; dir++) {
            lf_status st = lf_build_cell(&layer->cell[dir], d, dir, k, bytes);
            if (st != LF_OK)
                return st;
        }
        return LF_OK;
    }
    case LF_LAYER_DENSE:
        layer->bias = lf_alloc_counted((size_t)layer->ld * sizeof(float), bytes);
        if (!layer->bias)
            return LF_E_NO_MEMORY;
        for (size_t o = 0; o < (size_t)layer->out; o++)
            if (d->bias)
                layer->bias[o] = d->bias[o];
        return lf_build_matrix(d->weights, d->w, (size_t)layer->out, (size_t)layer->in,
                               (size_t)layer->ld, 1, &layer->weights, bytes);
    case LF_LAYER_EMBEDDING:
        return lf_build_matrix(d->weights, d->w, (size_t)layer->in, (size_t)layer->out,
                               (size_t)layer->out, 0, &layer->weights, bytes);
    case LF_LAYER_AFFINE:
        layer->w = lf_alloc_counted((size_t)layer->ld * sizeof(float), bytes);
        layer->bias = lf_alloc_counted((size_t)layer->ld * sizeof(float), bytes);
        if (!layer->w || !layer->bias)
            return LF_E_NO_MEMORY;
        for (int32_t o = 0; o < layer->out; o++) {
            layer->w[o] = d->w ? d->w[o] : 1.0f;
            layer->bias[o] = d->bias ? d->bias[o] : 0.0f;
        }
        return LF_OK;
    case LF_LAYER_NORMALIZE:
        layer->epsilon = d->epsilon;
        return LF_OK;
    case LF_LAYER_MASKING:
        return LF_OK;
    }
    return LF_E_BAD_LAYER;
}

static int elementwise(lf_activation a) { return a >= LF_ACT_LINEAR && a < LF_ACT_SOFTMAX; }

static lf_status check_cell(const lf_layer_desc *d, int after_last)
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
    if (after_last || !elementwise(d->activation) || !elementwise(d->recurrent_activation)
        || (d->flags & ~allowed) || (bi && (d->flags & LF_LAYER_GO_BACKWARDS))
        || (bi && (d->merge < LF_MERGE_CONCAT || d->merge > LF_MERGE_MUL)))
        return LF_E_BAD_LAYER;
    return LF_OK;
}

/* Checks one layer description in its place in the chain. */
static lf_status check_desc(const lf_layer_desc *d, int32_t l, const lf_layer_desc *prev,
                            int after_last)
{
    if (!valid_dim(d->input_size) || !valid_dim(d->units))
        return LF_E_INVALID_SIZE;
    if (d->weights != LF_WEIGHTS_F32 && d->weights != LF_WEIGHTS_F16
        && d->weights != LF_WEIGHTS_BF16 && d->weights != LF_WEIGHTS_I8)
        return LF_E_BAD_LAYER;
    if (prev && d->input_size != out_features(prev))
        return LF_E_INVALID_SIZE;
    switch (d->kind) {
    case LF_LAYER_LSTM:
    case LF_LAYER_GRU:
    case LF_LAYER_RNN:
        return check_cell(d, after_last);
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
    int after_last = 0, cells = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        const lf_layer_desc *d = &layers[l];
        lf_status st = check_desc(d, l, l ? &layers[l - 1] : NULL, after_last);
        if (st != LF_OK)
            return st;
        if (lf_is_recurrent(d->kind)) {
            cells++;
            after_last |= (d->flags & LF_LAYER_RETURN_LAST) != 0;
        }
    }
    if (!cells)
        return LF_E_BAD_LAYER;
    if (isa == LF_ISA_AUTO)
        isa = lf_cpu_best_isa();
    if (isa > lf_cpu_best_isa() || isa < LF_ISA_AUTO)
        return LF_E_ISA_UNAVAILABLE;
    /* The avx512 int8 cell is VNNI's; without VNNI an int8 model runs on the avx2 level
     * (the same integers). */
    int i8 = 0;
    for (int32_t l = 0; l < num_layers; l++)
        i8 |= lf_is_recurrent(layers[l].kind) && layers[l].weights == LF_WEIGHTS_I8;
    if (isa == LF_ISA_AVX512 && i8 && !lf_cpu_has_vnni())
        isa = LF_ISA_AVX2;
    const lf_kernels *k = lf_kernels_for(isa);
    const size_t head = sizeof(lf_model) + (size_t)num_layers * sizeof(lf_layer);
    lf_model *m = calloc(1, head);
    if (!m)
        return LF_E_NO_MEMORY;
    m->bytes = head;
    m->kernels = k;
    m->return_last = -1;
    /* recurrent.c, projection_pays: 3/4 of L2 leaves room for the state and the inputs. */
    m->project_min_bytes = k->fuse_inputs && lf_cpu_fma_width() >= 512
                           ? lf_cpu_l2_bytes() / 4 * 3 : SIZE_MAX;
    int64_t h_sum = 0, c_sum = 0;
    for (int32_t l = 0; l < num_layers; l++) {
        lf_layer *layer = &m->layers[l];
        m->num_layers = l + 1;
        lf_status st = build_layer(layer, &layers[l], k, &m->bytes);
        if (st != LF_OK) {
            lf_model_free(m);
            return st;
        }
        m->width_max = max32(m->width_max, layer->ld);
        if (layer->dirs) {
            layer->state = m->num_states;
            m->num_states += layer->dirs;
            for (int dir = 0; dir < layer->dirs; dir++) {
                const lf_cell *L = &layer->cell[dir];
                layer->h_off[dir] = (int32_t)h_sum;
                layer->c_off[dir] = (int32_t)c_sum;
                h_sum += L->Rp;
                c_sum += L->kind == LF_LAYER_LSTM ? L->Hp : 0;
                m->width_max = max32(m->width_max, max32(L->Hp, L->Rp));
                m->gates_max = max32(m->gates_max, L->G * L->Hp);
                m->i8_row = max32(m->i8_row, lf_i8_row_bytes(L));
            }
            if ((layer->flags & LF_LAYER_RETURN_LAST) && m->return_last < 0)
                m->return_last = l;
            m->whole_call |= (layer->flags & (LF_LAYER_GO_BACKWARDS | LF_LAYER_BIDIRECTIONAL))
                             != 0;
            m->bidirectional |= layer->dirs == 2;
        }
        m->mask_source |= layer->kind == LF_LAYER_MASKING
                          || (layer->kind == LF_LAYER_EMBEDDING
                              && (layer->flags & LF_LAYER_MASK_ZERO));
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

const lf_layer *lf_state_layer(const lf_model *m, int32_t k, int32_t *dir)
{
    *dir = 0;
    if (!m || k < 0 || k >= m->num_states)
        return NULL;
    for (int32_t l = 0; l < m->num_layers; l++) {
        const lf_layer *layer = &m->layers[l];
        if (layer->dirs && k >= layer->state && k < layer->state + layer->dirs) {
            *dir = k - layer->state;
            return layer;
        }
    }
    return NULL;
}

int32_t lf_model_num_states(const lf_model *m) { return m ? m->num_states : -1; }
int32_t lf_model_input_size(const lf_model *m)
{
    return !m ? -1 : m->layers[0].kind == LF_LAYER_EMBEDDING ? 1 : m->layers[0].in;
}
int32_t lf_model_output_size(const lf_model *m)
{
    return m ? m->layers[m->num_layers - 1].out : -1;
}
int lf_model_takes_ids(const lf_model *m)
{
    return m && m->layers[0].kind == LF_LAYER_EMBEDDING;
}
int lf_model_returns_last(const lf_model *m) { return m && m->return_last >= 0; }
lf_isa lf_model_isa(const lf_model *m) { return m ? m->kernels->isa : LF_ISA_AUTO; }

size_t lf_model_bytes(const lf_model *m) { return m ? m->bytes : 0; }

size_t lf_model_step_weight_bytes(const lf_model *m)
{
    size_t bytes = 0;
    for (int32_t l = 0; m && l < m->num_layers; l++)
        for (int dir = 0; dir < m->layers[l].dirs; dir++)
            bytes += lf_cell_step_bytes(&m->layers[l].cell[dir]);
    return bytes;
}

lf_status lf_model_state_sizes(const lf_model *m, int32_t k, int32_t *h_size, int32_t *c_size)
{
    int32_t dir;
    const lf_layer *layer = lf_state_layer(m, k, &dir);
    if (!layer)
        return m ? LF_E_INVALID_SIZE : LF_E_NULL;
    const lf_cell *L = &layer->cell[dir];
    if (h_size)
        *h_size = L->R;
    if (c_size)
        *c_size = L->kind == LF_LAYER_LSTM ? L->H : 0;
    return LF_OK;
}
