/* The layers that are not recurrent: embedding, dense, masking, affine, normalize; and the
 * merge of a bidirectional layer's two directions. */
#include <math.h>
#include <string.h>

#include "blas.h"
#include "run.h"

/* y = row id of an Embedding table (n wide), widened to float32. */
static void table_row(const lf_matrix *W, int32_t id, int32_t n, float *restrict y)
{
    const size_t at = (size_t)id * n;
    switch (W->type) {
    case LF_WEIGHTS_F16:
        for (int32_t i = 0; i < n; i++)
            y[i] = lf_f16_to_f32(((const uint16_t *)W->w)[at + i]);
        break;
    case LF_WEIGHTS_BF16:
        for (int32_t i = 0; i < n; i++)
            y[i] = lf_bf16_to_f32(((const uint16_t *)W->w)[at + i]);
        break;
    case LF_WEIGHTS_I8:
        for (int32_t i = 0; i < n; i++)
            y[i] = (float)((const int8_t *)W->w)[at + i] * W->scale[id];
        break;
    default:
        memcpy(y, (const float *)W->w + at, (size_t)n * sizeof(float));
        break;
    }
}

/* Rows t*B + j of out (and mask: 0 for id 0 with MASK_ZERO) from the ids of steps t0 + t,
 * t < n, of the caller's row perm[j] (or j). */
void lf_run_embedding(const lf_layer *layer, const int32_t *ids, ptrdiff_t sb, ptrdiff_t st,
                      int32_t t0, int32_t n, int32_t B, const int32_t *perm,
                      unsigned char *mask, float *out)
{
    for (int32_t t = 0; t < n; t++)
        for (int32_t j = 0; j < B; j++) {
            const size_t r = (size_t)t * B + j;
            const int32_t id = ids[(perm ? perm[j] : j) * sb + (t0 + t) * st];
            table_row(&layer->weights, id, layer->out, out + r * layer->ld);
            if (mask && (layer->flags & LF_LAYER_MASK_ZERO) && id == 0)
                mask[r] = 0;
        }
}

void lf_run_dense(const lf_model *m, const lf_layer *layer, int32_t rows, const float *in,
                  ptrdiff_t ld_in, float *out)
{
    const lf_kernels *k = m->kernels;
    const int rowwise = layer->act == LF_ACT_SOFTMAX || layer->act == LF_ACT_LOG_SOFTMAX;
    const lf_matrix *W = &layer->weights;
    if (rows <= LF_DENSE_SMALL_ROWS || W->type != LF_WEIGHTS_F32) {
        k->dense_small(W, layer->bias, layer->in, layer->ld, rows, in, ld_in, out);
        if (!rowwise && layer->act != LF_ACT_LINEAR)
            k->bias_act(layer->act, NULL, rows, layer->ld, out);
    } else {
        lf_sgemm(rows, layer->ld, layer->in, in, (int)ld_in, W->w, layer->ld, out, layer->ld, 0);
        k->bias_act(rowwise ? LF_ACT_LINEAR : layer->act, layer->bias, rows, layer->ld, out);
    }
    if (rowwise)
        lf_softmax_rows(layer->act == LF_ACT_LOG_SOFTMAX, rows, layer->out, layer->ld, out);
}

/* y = act(x * scale + shift), per feature; padded columns become 0 before the activation. */
void lf_run_affine(const lf_model *m, const lf_layer *layer, int32_t rows, const float *in,
                   ptrdiff_t ld_in, float *out)
{
    const int rowwise = layer->act == LF_ACT_SOFTMAX || layer->act == LF_ACT_LOG_SOFTMAX;
    for (int32_t r = 0; r < rows; r++) {
        const float *restrict x = in + r * ld_in;
        float *restrict y = out + (size_t)r * layer->ld;
        for (int32_t i = 0; i < layer->out; i++)
            y[i] = x[i] * layer->w[i] + layer->bias[i];
        for (int32_t i = layer->out; i < layer->ld; i++)
            y[i] = 0.0f;
    }
    if (rowwise)
        lf_softmax_rows(layer->act == LF_ACT_LOG_SOFTMAX, rows, layer->out, layer->ld, out);
    else if (layer->act != LF_ACT_LINEAR)
        m->kernels->bias_act(layer->act, NULL, rows, layer->ld, out);
}

/* y = x / max(||x||_2, epsilon) per row (the sum of squares in double). */
void lf_run_normalize(const lf_layer *layer, int32_t rows, const float *in, ptrdiff_t ld_in,
                      float *out)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *restrict x = in + r * ld_in;
        float *restrict y = out + (size_t)r * layer->ld;
        double ss = 0.0;
        for (int32_t i = 0; i < layer->out; i++)
            ss += (double)x[i] * x[i];
        double norm = sqrt(ss);
        const float inv = (float)(1.0 / (norm > layer->epsilon ? norm : (double)layer->epsilon));
        const float scale = norm > 0.0 || layer->epsilon > 0.0f ? inv : 0.0f;
        for (int32_t i = 0; i < layer->out; i++)
            y[i] = x[i] * scale;
        for (int32_t i = layer->out; i < layer->ld; i++)
            y[i] = 0.0f;
    }
}

/* Keras Masking: a row whose features all equal the mask value is masked and zeroed. */
void lf_run_masking(const lf_layer *layer, int32_t rows, const float *in, ptrdiff_t ld_in,
                    unsigned char *mask, float *out)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *x = in + r * ld_in;
        float *y = out + (size_t)r * layer->ld;
        int keep = 0;
        for (int32_t i = 0; i < layer->in; i++)
            keep |= x[i] != layer->mask_value;
        if (mask)
            mask[r] &= (unsigned char)keep;
        if (keep)
            memcpy(y, x, (size_t)layer->in * sizeof(float));
        else
            memset(y, 0, (size_t)layer->in * sizeof(float));
    }
}

/* out (rows, ld) = merge of f and b, each (rows, Rp) with R features. */
void lf_merge_rows(lf_merge mode, int32_t rows, int32_t R, int32_t Rp, const float *f,
                   const float *b, float *out, int32_t ld)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *fr = f + (size_t)r * Rp, *br = b + (size_t)r * Rp;
        float *o = out + (size_t)r * ld;
        switch (mode) {
        case LF_MERGE_CONCAT:
            memcpy(o, fr, (size_t)R * sizeof(float));
            memcpy(o + R, br, (size_t)R * sizeof(float));
            break;
        case LF_MERGE_SUM:
            for (int32_t i = 0; i < R; i++)
                o[i] = fr[i] + br[i];
            break;
        case LF_MERGE_AVE:
            for (int32_t i = 0; i < R; i++)
                o[i] = (fr[i] + br[i]) * 0.5f;
            break;
        case LF_MERGE_MUL:
            for (int32_t i = 0; i < R; i++)
                o[i] = fr[i] * br[i];
            break;
        }
    }
}
