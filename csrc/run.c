/* lf_run: blocks of time steps, layer by layer. Per block and layer, one GEMM projects the
 * inputs of all steps; then the recurrence runs step by step on the packed SIMD kernels (or,
 * above the kernel level's packed_max_batch, on BLAS + a fused pointwise pass). A single step
 * of a packed-size batch skips the GEMM: the packed kernel reads x and h in one pass. */
#include <string.h>

#include "blas.h"
#include "internal.h"

static size_t round_floats(size_t n) { return (n + 15) & ~(size_t)15; }

lf_plan lf_make_plan(const lf_model *m, int32_t batch, int32_t steps)
{
    lf_plan p = {0};
    if (!m || batch < 1 || batch > LF_MAX_DIM || steps < 1 || steps > LF_MAX_DIM)
        return p;
    int32_t bs = LF_BLOCK_ROWS / batch;
    p.block_steps = bs < 1 ? 1 : (bs > steps ? steps : bs);
    size_t rows, n;
    if (!lf_mul_size((size_t)p.block_steps, (size_t)batch, &rows)
        || !lf_mul_size(rows, (size_t)m->layers[0].I, &n))
        return p;
    p.xin_floats = round_floats(n);
    if (!lf_mul_size(rows, 4 * (size_t)m->hp_max, &n))
        return p;
    p.xproj_floats = round_floats(n);
    p.out_floats = round_floats(rows * (size_t)m->hp_max);
    size_t total = p.xin_floats + p.xproj_floats + 2 * p.out_floats;
    if (total < p.xproj_floats || !lf_mul_size(total, sizeof(float), &total)
        || total > SIZE_MAX - LF_ALIGN || total > (size_t)INT32_MAX * 4 * sizeof(float))
        return p;
    p.total_bytes = total + LF_ALIGN;
    return p;
}

size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps)
{
    return lf_make_plan(model, batch, steps < 1 ? 1 : steps).total_bytes;
}

static int has_nonfinite(const float *x, int32_t B, int32_t T, int32_t I, ptrdiff_t sb, ptrdiff_t st)
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

/* One layer over n steps. Input rows r = t*B + b at in + r*ld_in; outputs (n*B, Hp) to out. */
static void run_layer(const lf_model *m, const lf_layer *L, int32_t B, int32_t n,
                      const float *in, ptrdiff_t ld_in, float *h_state, float *c_state,
                      float *xproj, float *out)
{
    const lf_kernels *k = m->kernels;
    const size_t Hp = (size_t)L->Hp, G = 4 * Hp;
    const int small = B <= k->packed_max_batch;
    if (small && n == 1) {
        k->lstm_packed(L, B, in, ld_in, NULL, 0, h_state, c_state, out);
    } else {
        lf_sgemm(n * B, (int)G, L->I, in, (int)ld_in, L->wih_t, (int)G, xproj, (int)G, 0);
        for (int32_t t = 0; t < n; t++) {
            const float *h_prev = t == 0 ? h_state : out + (size_t)(t - 1) * B * Hp;
            float *gates = xproj + (size_t)t * B * G, *h_out = out + (size_t)t * B * Hp;
            if (small) {
                k->lstm_packed(L, B, NULL, 0, gates, (ptrdiff_t)G, h_prev, c_state, h_out);
            } else {
                lf_sgemm(B, (int)G, L->H, h_prev, (int)Hp, L->whh_t, (int)G, gates, (int)G, 1);
                k->lstm_pointwise(L, B, gates, c_state, h_out);
            }
        }
    }
    memcpy(h_state, out + (size_t)(n - 1) * B * Hp, (size_t)B * Hp * sizeof(float));
}

lf_status lf_run(const lf_model *m, lf_state *s, int32_t T,
                 const float *x, ptrdiff_t x_sb, ptrdiff_t x_st,
                 float *y, ptrdiff_t y_sb, ptrdiff_t y_st,
                 uint32_t flags, void *ws, size_t ws_bytes)
{
    if (!m || !s || !x)
        return LF_E_NULL;
    if (s->model != m)
        return LF_E_BATCH_MISMATCH;
    if (T < 0 || T > LF_MAX_DIM)
        return LF_E_INVALID_SIZE;
    if (T == 0)
        return LF_OK;
    const int32_t B = s->batch, I = m->layers[0].I;
    const lf_layer *last = &m->layers[m->num_layers - 1];
    if (y && !strides_ok(B, T, last->H, y_sb, y_st))
        return LF_E_STRIDE;
    lf_plan p = lf_make_plan(m, B, T);
    if (p.total_bytes == 0)
        return LF_E_TOO_LARGE;
    if (!ws)
        return LF_E_NULL;
    if (ws_bytes < p.total_bytes)
        return LF_E_WORKSPACE;
    if ((flags & LF_RUN_CHECK_FINITE) && has_nonfinite(x, B, T, I, x_sb, x_st))
        return LF_E_NONFINITE;

    float *base = (float *)(((uintptr_t)ws + LF_ALIGN - 1) & ~(uintptr_t)(LF_ALIGN - 1));
    float *xin = base, *xproj = xin + p.xin_floats;
    float *buf[2] = {xproj + p.xproj_floats, xproj + p.xproj_floats + p.out_floats};
    for (int32_t t0 = 0; t0 < T; t0 += p.block_steps) {
        const int32_t n = T - t0 < p.block_steps ? T - t0 : p.block_steps;
        const float *in;
        ptrdiff_t ld;
        if (B == 1 && (n == 1 || (x_st >= I && x_st <= INT32_MAX))) { /* BLAS lda is an int */
            in = x + (ptrdiff_t)t0 * x_st;
            ld = n == 1 ? I : x_st;
        } else {
            for (int32_t t = 0; t < n; t++)
                for (int32_t b = 0; b < B; b++)
                    memcpy(xin + ((size_t)t * B + b) * I, x + b * x_sb + (t0 + t) * x_st,
                           (size_t)I * sizeof(float));
            in = xin;
            ld = I;
        }
        for (int32_t l = 0; l < m->num_layers; l++) {
            const lf_layer *L = &m->layers[l];
            const size_t off = lf_state_layer_offset(s, l);
            float *out = buf[l & 1];
            run_layer(m, L, B, n, in, ld, s->h + off, s->c + off, xproj, out);
            in = out;
            ld = L->Hp;
        }
        if (y)
            for (int32_t t = 0; t < n; t++)
                for (int32_t b = 0; b < B; b++)
                    memcpy(y + b * y_sb + (t0 + t) * y_st, in + ((size_t)t * B + b) * last->Hp,
                           (size_t)last->H * sizeof(float));
    }
    return LF_OK;
}

lf_status lf_step(const lf_model *m, lf_state *s, const float *x, ptrdiff_t x_stride,
                  float *y, ptrdiff_t y_stride, uint32_t flags, void *ws, size_t ws_bytes)
{
    return lf_run(m, s, 1, x, x_stride, 0, y, y_stride, 0, flags, ws, ws_bytes);
}
