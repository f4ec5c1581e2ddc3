/* int8 recurrent cells (issue 13, design in docs/studies/int8/): one step of an LSTM, GRU
 * (both variants) or simple RNN cell whose W_ih and W_hh are int8 with one float32 scale per
 * output row (per gate row, each matrix separately). Included by kernels_<isa>.c after
 * kernel_cells.h, with LF_I8_MODE set:
 *   1  AVX-512 VNNI: vpdpbusd, u8 activations q + 128 x s8 weights; -128 * sum(row) is
 *      preloaded into the int32 accumulator (L->q_corr), so the sum is exactly sum(q * w);
 *   2  AVX2: vpmaddubsw + vpmaddwd with the sign trick, |q| (u8) x sign(w, q) (s8): pairs are
 *      at most 2 * 127 * 127 < 32767, so the 16-bit step never saturates;
 *   0  portable C: the same sums in scalar int32.
 * All three compute the same integers sum_k q[k] * w[k] (int32, exact), so they give the
 * same results up to float rounding of the gate math.
 *
 * Activations: per step and per batch row, x and h are each quantized with a dynamic
 * symmetric scale s = max|v| / 127, q = round(v / s) in [-127, 127] (an all-zero row has
 * s = 0). A gate = bias + sum_x * (w_scale_x * s_x) + sum_h * (w_scale_h * s_h); the gate
 * math, state and biases stay float32.
 *
 * Packed layout (L->packed_q): per tile of VW units, groups kg of 4 inputs (x groups, then h
 * groups), G gates, VW units, 4 bytes: byte (kg, g, j, kk) = W[g*H + u0 + j][4*kg + kk].
 * x is padded to Iq = I rounded up to 4, h to Rp; padding weights are 0. */
#include <math.h>
#include <string.h>

#if LF_I8_MODE == 1
#define I8_ZP 128
#define I8_BG 4
typedef __m512i vi;
typedef __m512i vw8;
LF_INLINE vw8 vw_load(const int8_t *p) { return _mm512_loadu_si512((const void *)p); }
LF_INLINE vi vi_load32(const int32_t *p) { return _mm512_loadu_si512((const void *)p); }
LF_INLINE vi vi_zero(void) { return _mm512_setzero_si512(); }
LF_INLINE vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
LF_INLINE vf vi_cvt(vi a) { return _mm512_cvtepi32_ps(a); }
LF_INLINE vi vi_dot(vi acc, int32_t a4, vw8 w)
{
    return _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(a4), w);
}
/* VW integral floats in [-127, 127] -> VW bytes q + zero point. */
LF_INLINE void q_store(int8_t *dst, vf v)
{
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(I8_ZP));
    _mm_storeu_si128((__m128i *)(void *)dst, _mm512_cvtepi32_epi8(q));
}
#elif LF_I8_MODE == 2
#define I8_ZP 0
#define I8_BG 2
typedef __m256i vi;
typedef __m256i vw8;
LF_INLINE vw8 vw_load(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
LF_INLINE vi vi_load32(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)(const void *)p); }
LF_INLINE vi vi_zero(void) { return _mm256_setzero_si256(); }
LF_INLINE vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
LF_INLINE vf vi_cvt(vi a) { return _mm256_cvtepi32_ps(a); }
LF_INLINE vi vi_dot(vi acc, int32_t a4, vw8 w)
{
    const __m256i a = _mm256_set1_epi32(a4);
    const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}
LF_INLINE void q_store(int8_t *dst, vf v)
{
    const __m256i sh = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                        -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1,
                                        -1, -1, -1, -1);
    __m256i q = _mm256_shuffle_epi8(_mm256_cvtps_epi32(v), sh);
    q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)(void *)dst, _mm256_castsi256_si128(q));
}
#else
#define I8_ZP 0
#define I8_BG 2
typedef struct { int32_t v[VW]; } vi;
typedef struct { int8_t b[4 * VW]; } vw8;
LF_INLINE vw8 vw_load(const int8_t *p) { vw8 r; memcpy(r.b, p, sizeof r.b); return r; }
LF_INLINE vi vi_load32(const int32_t *p) { vi r; memcpy(r.v, p, sizeof r.v); return r; }
LF_INLINE vi vi_zero(void) { vi r = {{0}}; return r; }
LF_INLINE vi vi_add(vi a, vi b)
{
    for (int l = 0; l < VW; l++)
        a.v[l] += b.v[l];
    return a;
}
LF_INLINE vf vi_cvt(vi a) { V_MAP1((float)a.v[l_]); }
LF_INLINE vi vi_dot(vi acc, int32_t a4, vw8 w)
{
    int8_t a[4];
    memcpy(a, &a4, 4);
    for (int l = 0; l < VW; l++)
        acc.v[l] += a[0] * w.b[4 * l] + a[1] * w.b[4 * l + 1] + a[2] * w.b[4 * l + 2]
                    + a[3] * w.b[4 * l + 3];
    return acc;
}
LF_INLINE void q_store(int8_t *dst, vf v)
{
    for (int l = 0; l < VW; l++) {
        const float t = v.v[l];
        dst[l] = (int8_t)(t > 127.0f ? 127 : t >= -127.0f ? (int)t : -127);
    }
}
#endif

/* Scalar form of one quantized activation (tails): round(v * inv) in [-127, 127] + zp. */
LF_INLINE int8_t q_scalar(float v, float inv)
{
    const float t = nearbyintf(v * inv);
    const int q = t > 127.0f ? 127 : t >= -127.0f ? (int)t : -127;
    return (int8_t)(uint8_t)(q + I8_ZP);
}

/* q[0, n) = v quantized (see the top), q[n, np) = the zero point; returns the scale. */
LF_INLINE float i8_quantize(const float *restrict v, int32_t n, int32_t np, int8_t *restrict q)
{
    vf mx = v_zero();
    int32_t k = 0;
    for (; k + VW <= n; k += VW)
        mx = v_max(mx, v_abs(v_load(v + k)));
    float lane[VW], m = 0.0f;
    v_store(lane, mx);
    for (int l = 0; l < VW; l++)
        m = lane[l] > m ? lane[l] : m;
    for (int32_t j = k; j < n; j++)
        m = fabsf(v[j]) > m ? fabsf(v[j]) : m;
    if (!(m >= 1e-30f)) { /* all zero (or below any useful scale) */
        memset(q, I8_ZP, (size_t)np);
        return 0.0f;
    }
    const float inv = 127.0f / m;
    const vf vinv = v_set1(inv), hi = v_set1(127.0f), lo = v_set1(-127.0f);
    for (k = 0; k + VW <= n; k += VW)
        q_store(q + k, v_min(hi, v_max(lo, v_round(v_mul(v_load(v + k), vinv)))));
    for (; k < n; k++)
        q[k] = q_scalar(v[k], inv);
    for (; k < np; k++)
        q[k] = (int8_t)(uint8_t)I8_ZP;
    return m / 127.0f;
}

/* out[r][g] = add + (sum over KG groups of 4 of q_r * w, gates [g0, g0 + NG) of GT) times
 * (row scale * qs[r]), for BG rows. add: bias rows (if non-NULL) else 0. One row runs two
 * interleaved int32 chains. */
LF_INLINE void i8_part(const int BG, const int GT, const int g0, const int NG,
                       const int8_t *restrict w, int32_t KG, const int8_t *restrict q,
                       ptrdiff_t ldq, const float *restrict qs, const float *restrict wscale,
                       const int32_t *restrict corr, const float *restrict bias, int32_t Hp,
                       int32_t u0, vf out[][4])
{
    vi acc[I8_BG][4], acc2[I8_BG][4];
    for (int g = 0; g < NG; g++)
        for (int r = 0; r < BG; r++) {
            acc[r][g] = I8_ZP ? vi_load32(corr + (g0 + g) * Hp + u0) : vi_zero();
            acc2[r][g] = vi_zero();
        }
    (void)corr;
    const size_t row = (size_t)GT * VW * 4, gs = (size_t)g0 * VW * 4;
    int32_t kg = 0;
    if (BG == 1) {
        for (; kg + 1 < KG; kg += 2) {
            const int8_t *wk = w + (size_t)kg * row + gs;
            int32_t a, b;
            memcpy(&a, q + 4 * kg, 4);
            memcpy(&b, q + 4 * kg + 4, 4);
            for (int g = 0; g < NG; g++) {
                acc[0][g] = vi_dot(acc[0][g], a, vw_load(wk + g * VW * 4));
                acc2[0][g] = vi_dot(acc2[0][g], b, vw_load(wk + row + g * VW * 4));
            }
        }
    }
    for (; kg < KG; kg++) {
        const int8_t *wk = w + (size_t)kg * row + gs;
        vw8 wg[4];
        for (int g = 0; g < NG; g++)
            wg[g] = vw_load(wk + g * VW * 4);
        for (int r = 0; r < BG; r++) {
            int32_t a;
            memcpy(&a, q + r * ldq + 4 * kg, 4);
            for (int g = 0; g < NG; g++)
                acc[r][g] = vi_dot(acc[r][g], a, wg[g]);
        }
    }
    for (int g = 0; g < NG; g++) {
        const vf ws = v_load(wscale + (g0 + g) * Hp + u0);
        const vf b = bias ? v_load(bias + (g0 + g) * Hp + u0) : v_zero();
        for (int r = 0; r < BG; r++)
            out[r][g] = v_fmadd(vi_cvt(vi_add(acc[r][g], acc2[r][g])), v_mul(ws, v_set1(qs[r])),
                                b);
    }
}

/* The int8 tile step for BG rows and units [u0, u0 + VW); phases as cell_tile. xq/hq: the
 * rows' quantized x and h (or r*h in GRU reset-before phase 1), xs/hs their scales. */
LF_INLINE void i8_tile(const int BG, const lf_cell *restrict L, int phase, int32_t u0,
                       const int8_t *restrict xq, const float *restrict xs,
                       const int8_t *restrict hq, const float *restrict hs,
                       const float *restrict h, float *restrict c, float *restrict h_out,
                       float *restrict rh, float *restrict zs)
{
    const int32_t Hp = L->Hp, G = L->G, Iq = L->Iq, Rp = L->Rp;
    const int8_t *w = (const int8_t *)L->packed_q + (size_t)u0 * (size_t)(Iq + Rp) * (size_t)G;
    const int8_t *wh = w + (size_t)Iq * (size_t)G * VW;
    const float *sx = L->q_scale, *sh = L->q_scale + (size_t)G * Hp;
    const int32_t *cx = L->q_corr, *ch = L->q_corr + (size_t)G * Hp;
    const int32_t KGx = Iq / 4, KGh = Rp / 4;
    vf gx[I8_BG][4], gh[I8_BG][4];
    if (L->kind == LF_LAYER_LSTM) {
        i8_part(BG, 4, 0, 4, w, KGx, xq, Iq, xs, sx, cx, L->bias, Hp, u0, gx);
        i8_part(BG, 4, 0, 4, wh, KGh, hq, Rp, hs, sh, ch, NULL, Hp, u0, gh);
        for (int r = 0; r < BG; r++)
            lstm_update(L, v_add(gx[r][0], gh[r][0]), v_add(gx[r][1], gh[r][1]),
                        v_add(gx[r][2], gh[r][2]), v_add(gx[r][3], gh[r][3]),
                        c + r * Hp + u0, h_out + r * Hp + u0);
    } else if (L->kind == LF_LAYER_RNN) {
        i8_part(BG, 1, 0, 1, w, KGx, xq, Iq, xs, sx, cx, L->bias, Hp, u0, gx);
        i8_part(BG, 1, 0, 1, wh, KGh, hq, Rp, hs, sh, ch, NULL, Hp, u0, gh);
        for (int r = 0; r < BG; r++)
            v_store(h_out + r * Hp + u0, v_act(L->act, v_add(gx[r][0], gh[r][0])));
    } else if (L->reset_after) {
        i8_part(BG, 3, 0, 3, w, KGx, xq, Iq, xs, sx, cx, L->bias, Hp, u0, gx);
        i8_part(BG, 3, 0, 3, wh, KGh, hq, Rp, hs, sh, ch, NULL, Hp, u0, gh);
        const vf bhn = v_load(L->bias_hn + u0);
        for (int r = 0; r < BG; r++) {
            vf rg = ract_of(L, v_add(gx[r][0], gh[r][0]));
            vf z = ract_of(L, v_add(gx[r][1], gh[r][1]));
            vf n = act_of(L, v_fmadd(rg, v_add(gh[r][2], bhn), gx[r][2]));
            vf hp = v_load(h + r * Rp + u0);
            v_store(h_out + r * Hp + u0, v_fmadd(z, v_sub(hp, n), n));
        }
    } else if (phase == 0) {
        i8_part(BG, 3, 0, 2, w, KGx, xq, Iq, xs, sx, cx, L->bias, Hp, u0, gx);
        i8_part(BG, 3, 0, 2, wh, KGh, hq, Rp, hs, sh, ch, NULL, Hp, u0, gh);
        for (int r = 0; r < BG; r++) {
            v_store(rh + r * Hp + u0, v_mul(ract_of(L, v_add(gx[r][0], gh[r][0])),
                                            v_load(h + r * Rp + u0)));
            v_store(zs + r * Hp + u0, ract_of(L, v_add(gx[r][1], gh[r][1])));
        }
    } else {
        i8_part(BG, 3, 2, 1, w, KGx, xq, Iq, xs, sx, cx, L->bias, Hp, u0, gx);
        i8_part(BG, 3, 2, 1, wh, KGh, hq, Rp, hs, sh, ch, NULL, Hp, u0, gh);
        for (int r = 0; r < BG; r++) {
            vf n = act_of(L, v_add(gx[r][0], gh[r][0])), z = v_load(zs + r * Hp + u0);
            vf hp = v_load(h + r * Rp + u0);
            v_store(h_out + r * Hp + u0, v_fmadd(z, v_sub(hp, n), n));
        }
    }
}

#define I8_ROWS(BG) i8_tile(BG, L, phase, u0, xq + b * Iq, xs + b, hq + b * Rp, hs + b, \
                            h + b * Rp, c ? c + b * Hp : NULL, h_out + b * Hp, rh + b * Hp, \
                            zs + b * Hp)

/* One step of an int8 cell for rows [0, B): x (B rows of I, stride ldx) and h (B, Rp) are
 * quantized into scratch (see lf_cell_i8_scratch), then the tiles run as cell_packed's. */
static void KSUFFIX(cell_i8)(const lf_cell *L, int32_t B, const float *x, ptrdiff_t ldx,
                             const float *h, float *c, float *h_out, float *scratch)
{
    const int32_t Hp = L->Hp, Rp = L->Rp, Iq = L->Iq;
    float *rh = scratch, *zs = scratch + (size_t)B * Hp;
    float *xs = zs + (size_t)B * Hp, *hs = xs + B;
    int8_t *xq = (int8_t *)(hs + B), *hq = xq + (size_t)B * Iq;
    for (int32_t b = 0; b < B; b++) {
        xs[b] = i8_quantize(x + b * ldx, L->I, Iq, xq + (size_t)b * Iq);
        hs[b] = i8_quantize(h + (size_t)b * Rp, Rp, Rp, hq + (size_t)b * Rp);
    }
    const int phases = L->kind == LF_LAYER_GRU && !L->reset_after ? 2 : 1;
    for (int phase = 0; phase < phases; phase++) {
        if (phase == 1) /* n's recurrent input is r*h (Hp == Rp for a GRU) */
            for (int32_t b = 0; b < B; b++)
                hs[b] = i8_quantize(rh + (size_t)b * Hp, Hp, Rp, hq + (size_t)b * Rp);
        for (int32_t u0 = L->u_lo; u0 < L->u_hi; u0 += VW) {
            int32_t b = 0;
            for (; b + I8_BG <= B; b += I8_BG)
                I8_ROWS(I8_BG);
            switch (B - b) {
#if I8_BG > 3
            case 3: I8_ROWS(3); break;
#endif
#if I8_BG > 2
            case 2: I8_ROWS(2); break;
#endif
            case 1: I8_ROWS(1); break;
            default: break;
            }
        }
    }
}
#undef I8_ROWS
