/* Weights at build time: rounding to the stored type, and a cell's packed and BLAS layouts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pack.h"

size_t lf_weight_size(lf_weights t)
{
    return t == LF_WEIGHTS_F32 ? 4 : t == LF_WEIGHTS_I8 ? 1 : 2;
}

size_t lf_cell_step_bytes(const lf_cell *L)
{
    return (size_t)(L->I + L->R) * (size_t)L->G * (size_t)L->Hp * lf_weight_size(L->wtype);
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

/* int8 codes of a row of n weights: q = round(w / s) in [-127, 127] with the row's symmetric
 * scale s = max|w| / 127 (returned; 0 for an all-zero row, whose codes are 0). Values already
 * on such a grid (q * s) give back q and, to the last bit or one ulp, s. */
static float i8_row(const float *src, size_t n, int8_t *q)
{
    float m = 0.0f;
    for (size_t k = 0; k < n; k++)
        m = fabsf(src[k]) > m ? fabsf(src[k]) : m;
    const float s = m / 127.0f;
    for (size_t k = 0; k < n; k++) {
        const float t = s > 0.0f ? nearbyintf(src[k] / s) : 0.0f;
        q[k] = (int8_t)(t > 127.0f ? 127 : t >= -127.0f ? (int)t : -127);
    }
    return s;
}

/* Rounds a row of n weights to type t: out gets the values as float32, codes (if non-NULL)
 * the stored elements (fp16, bf16). */
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

lf_status lf_build_matrix(lf_weights t, const float *src, size_t rows, size_t n, size_t ld,
                          int transposed, lf_matrix *W, size_t *bytes)
{
    const size_t esize = lf_weight_size(t), scales = transposed ? ld : rows;
    size_t elems;
    if (!lf_mul_size(transposed ? n : rows, ld, &elems) || elems > SIZE_MAX / sizeof(float))
        return LF_E_TOO_LARGE;
    W->type = t;
    W->w = lf_alloc_counted(elems * esize, bytes);
    W->scale = t == LF_WEIGHTS_I8 ? lf_alloc_counted(scales * sizeof(float), bytes) : NULL;
    float *tmp = malloc((n ? n : 1) * sizeof(float));
    uint16_t *codes = malloc((n ? n : 1) * sizeof(uint16_t));
    int8_t *q = malloc(n ? n : 1);
    lf_status st = LF_OK;
    if (!W->w || (t == LF_WEIGHTS_I8 && !W->scale) || !tmp || !codes || !q)
        st = LF_E_NO_MEMORY;
    for (size_t r = 0; st == LF_OK && r < rows; r++) {
        if (t == LF_WEIGHTS_I8)
            W->scale[r] = i8_row(src + r * n, n, q);
        else
            round_row(t, src + r * n, n, tmp, codes);
        for (size_t k = 0; k < n; k++) {
            const size_t at = transposed ? k * ld + r : r * ld + k;
            switch (t) {
            case LF_WEIGHTS_I8: ((int8_t *)W->w)[at] = q[k]; break;
            case LF_WEIGHTS_F32: ((float *)W->w)[at] = tmp[k]; break;
            default: ((uint16_t *)W->w)[at] = codes[k]; break;
            }
        }
    }
    free(q);
    free(codes);
    free(tmp);
    return st;
}

void lf_free_matrix(lf_matrix *W)
{
    lf_aligned_free(W->w);
    lf_aligned_free(W->scale);
}

int32_t lf_gates_of(lf_layer_kind kind)
{
    return kind == LF_LAYER_LSTM ? 4 : kind == LF_LAYER_GRU ? 3 : 1;
}

/* An int8 cell's weights (L's sizes set): the packed int8 tiles of kernel_int8.h, the
 * per-row scales and zero-point corrections, the biases. No float32 copy of W_ih or W_hh:
 * every path of an int8 cell reads the packed tiles. */
static lf_status build_i8(lf_cell *L, const float *w_ih, const float *w_hh, const float *b,
                          const float *b_rec, int32_t vw, size_t *bytes)
{
    const size_t I = (size_t)L->I, H = (size_t)L->H, Hp = (size_t)L->Hp, G = (size_t)L->G;
    const size_t R = (size_t)L->R, Rp = (size_t)L->Rp, Iq = (I + 3) / 4 * 4, GH = G * Hp;
    const size_t V = (size_t)vw, tile = (Iq + Rp) * G * V;
    size_t n;
    if (!lf_mul_size(Iq + Rp, GH, &n))
        return LF_E_TOO_LARGE;
    L->Iq = (int32_t)Iq;
    L->wtype = LF_WEIGHTS_I8;
    const int has_bias_hn = L->kind == LF_LAYER_GRU && L->reset_after;
    L->packed_q = lf_alloc_counted(n, bytes);
    L->q_scale = lf_alloc_counted(2 * GH * sizeof(float), bytes);
    L->q_corr = lf_alloc_counted(2 * GH * sizeof(int32_t), bytes);
    L->bias = lf_alloc_counted(GH * sizeof(float), bytes);
    L->bias_hn = has_bias_hn ? lf_alloc_counted(Hp * sizeof(float), bytes) : NULL;
    int8_t *q = malloc(I > R ? I : R);
    if (!L->packed_q || !L->q_scale || !L->q_corr || !L->bias || (has_bias_hn && !L->bias_hn)
        || !q) {
        free(q);
        return LF_E_NO_MEMORY;
    }
    int8_t *pk = L->packed_q;
    for (size_t g = 0; g < G; g++)
        for (size_t u = 0; u < H; u++) {
            const size_t col = g * Hp + u;
            /* byte (kg, g, j, kk) of tile u / V is W[row][4 kg + kk], j = u % V */
            int8_t *t = pk + (u / V) * tile + (g * V + u % V) * 4;
            for (int part = 0; part < 2; part++) {
                const size_t K = part ? R : I, k0 = part ? Iq : 0;
                const float *src = part ? w_hh + (g * H + u) * R : w_ih + (g * H + u) * I;
                L->q_scale[part * GH + col] = i8_row(src, K, q);
                int32_t sum = 0;
                for (size_t k = 0; k < K; k++) {
                    const size_t kk = k0 + k;
                    t[(kk / 4) * G * V * 4 + kk % 4] = q[k];
                    sum += q[k];
                }
                L->q_corr[part * GH + col] = -128 * sum;
            }
            const float bi = b ? b[g * H + u] : 0.0f, bh = b_rec ? b_rec[g * H + u] : 0.0f;
            if (has_bias_hn && g == 2) {
                L->bias[col] = bi;
                L->bias_hn[u] = bh;
            } else {
                L->bias[col] = bi + bh;
            }
        }
    free(q);
    return LF_OK;
}

/* Copies one cell's weights, rounded to d->weights, into the layouts its paths read: the
 * packed tiles (the step kernels), wih_t (the BLAS input projection) and, on kernel levels
 * with a BLAS recurrence, whh_t for an LSTM or a GRU reset-after (a GRU reset-before always
 * steps on the packed kernel: its n gate needs r*h before the product). */
lf_status lf_build_cell(lf_cell *L, const lf_layer_desc *d, int backward,
                        const lf_kernels *kernels, size_t *bytes)
{
    const float *w_ih = backward ? d->w_b : d->w, *w_hh = backward ? d->w_rec_b : d->w_rec;
    const float *b = backward ? d->bias_b : d->bias, *b_rec = backward ? d->bias_rec_b
                                                                        : d->bias_rec;
    const float *w_hr = backward ? d->w_proj_b : d->w_proj;
    const size_t I = (size_t)d->input_size, H = (size_t)d->units, G = (size_t)lf_gates_of(d->kind);
    const size_t Hp = (size_t)lf_pad_hidden(d->units), GH = G * Hp;
    const size_t R = w_hr ? (size_t)d->proj_size : H, Rp = (size_t)lf_pad_hidden((int32_t)R);
    size_t n_ih, n_hh, n_packed;
    if (!lf_mul_size(I, GH, &n_ih) || !lf_mul_size(R, GH, &n_hh)
        || !lf_mul_size(I + R, GH, &n_packed) || n_packed > SIZE_MAX / sizeof(float))
        return LF_E_TOO_LARGE;
    L->kind = d->kind;
    L->I = (int32_t)I;
    L->H = (int32_t)H;
    L->Hp = (int32_t)Hp;
    L->u_hi = (int32_t)Hp;
    L->G = (int32_t)G;
    L->R = (int32_t)R;
    L->Rp = (int32_t)Rp;
    L->reset_after = (d->flags & LF_LAYER_RESET_AFTER) != 0;
    L->act = d->activation;
    L->ract = d->recurrent_activation;
    L->default_acts = L->act == LF_ACT_TANH && L->ract == LF_ACT_SIGMOID;
    if (d->weights == LF_WEIGHTS_I8) {
        lf_status st = build_i8(L, w_ih, w_hh, b, b_rec, kernels->vw, bytes);
        if (st != LF_OK || !w_hr)
            return st;
        L->zero = lf_alloc_counted(Rp * sizeof(float), bytes);
        if (!L->zero)
            return LF_E_NO_MEMORY;
        return lf_build_matrix(LF_WEIGHTS_I8, w_hr, R, H, Rp, 1, &L->whr, bytes);
    }
    const int blas_recurrence = (d->kind == LF_LAYER_LSTM && kernels->lstm_pointwise)
                                || (d->kind == LF_LAYER_GRU && L->reset_after
                                    && kernels->gru_pointwise);
    const int has_bias_hn = d->kind == LF_LAYER_GRU && L->reset_after;
    L->wih_t = lf_alloc_counted(n_ih * sizeof(float), bytes);
    L->whh_t = blas_recurrence ? lf_alloc_counted(n_hh * sizeof(float), bytes) : NULL;
    L->bias = lf_alloc_counted(GH * sizeof(float), bytes);
    L->bias_hn = has_bias_hn ? lf_alloc_counted(Hp * sizeof(float), bytes) : NULL;
    const lf_weights wt = d->weights;
    const int32_t vw = kernels->vw;
    L->wtype = wt;
    if (wt == LF_WEIGHTS_F32)
        L->packed = lf_alloc_counted(n_packed * sizeof(float), bytes);
    else
        L->packed_q = lf_alloc_counted(n_packed * lf_weight_size(wt), bytes);
    float *row = malloc((I > R ? I : R) * sizeof(float));
    uint16_t *codes = malloc((I > R ? I : R) * sizeof(uint16_t));
    if (!L->wih_t || (blas_recurrence && !L->whh_t) || !L->bias || (has_bias_hn && !L->bias_hn)
        || !(L->packed || L->packed_q) || !row || !codes) {
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
                if (L->whh_t)
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
        L->zero = lf_alloc_counted(Rp * sizeof(float), bytes);
        if (!L->zero)
            return LF_E_NO_MEMORY;
        return lf_build_matrix(wt, w_hr, R, H, Rp, 1, &L->whr, bytes);
    }
    return LF_OK;
}

void lf_free_cell(lf_cell *L)
{
    lf_aligned_free(L->q_scale);
    lf_aligned_free(L->q_corr);
    lf_aligned_free(L->packed_q);
    lf_aligned_free(L->wih_t);
    lf_aligned_free(L->whh_t);
    lf_aligned_free(L->bias);
    lf_aligned_free(L->bias_hn);
    lf_aligned_free(L->packed);
    lf_free_matrix(&L->whr);
    lf_aligned_free(L->zero);
}

