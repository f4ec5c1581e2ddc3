/* proto13.c — int8 LSTM/GRU kernel prototype for issue 13 (standalone; not part of the engine).
 *
 * Build (see Makefile):  -march=znver4 (AVX-512 + VNNI)  or  -mavx2 -mfma -mf16c (Zen 3 stand-in)
 * Modes:
 *   ./p bench            B=1 step timings, interleaved rounds, medians
 *   ./p batch            B=64 T=100 256->512 sequence timings
 *   ./p acc FILE OUT     read weights/inputs written by acc.py, run every variant, write h(t)
 *
 * Variants (each a full step: x part + h part + fused gate math + state update):
 *   f32    packed fp32, layout [tile][k][gate][VW] (as csrc/kernel_cells.h), 2 FMA chains
 *   w8     weight-only int8, same layout in bytes; per-row scales (W_ih, W_hh separately);
 *          widened to fp32 in registers, fp32 FMA
 *   vnni   (AVX-512) u8 activations (zero point 128) x s8 weights, vpdpbusd,
 *          layout [tile][k/4][gate][VW][4]; -128*sum(w) per row preloaded into the accumulator
 *   u8w7   (AVX2) vpmaddubsw+vpmaddwd, u8 activations (zp 128), weights limited to 7 bits
 *   sgn    (AVX2) vpmaddubsw+vpmaddwd with the sign trick: |a| (u8) x sign(w, a) (s8);
 *          full 8-bit weights in [-127,127], symmetric s8 activations, no zero point
 *   bw     (AVX-512 w/o VNNI: AVX512BW vpmaddubsw+vpmaddwd, u8 zp128, 7-bit weights)
 * Activation scale: dynamic symmetric per step (max|v|/127) or fixed 1/127 (g_fixed = 1).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __AVX512F__
#include "simd_avx512.h"
typedef __m512i vi;
#define HAVE512 1
#else
#include "simd_avx2.h"
typedef __m256i vi;
#define HAVE512 0
#endif
#include "simd_math.h"

#define INL static inline __attribute__((always_inline))
#define UNR _Pragma("GCC unroll 8")

static int g_fixed = 0; /* 1: fixed activation scale 1/127 (inputs and h assumed in [-1, 1]) */

/* ---------------------------------------------------------------- integer helpers */
#if HAVE512
INL vi vi_load(const void *p) { return _mm512_loadu_si512(p); }
INL vi vi_b32(int32_t a) { return _mm512_set1_epi32(a); }
INL vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
INL vf vi_cvt(vi a) { return _mm512_cvtepi32_ps(a); }
INL vf ld_i8ps(const int8_t *p) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p))); }
#ifdef __AVX512VNNI__
INL vi dot_vnni(vi acc, vi a, vi w) { return _mm512_dpbusd_epi32(acc, a, w); }
#endif
INL vi dot_ubs(vi acc, vi a, vi w)
{
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(a, w), _mm512_set1_epi16(1)));
}
/* VW floats -> VW bytes of round(v * inv) + off */
INL void quant_store(int8_t *dst, vf v, vf inv, int off)
{
    vi q = _mm512_add_epi32(_mm512_cvtps_epi32(v_mul(v, inv)), _mm512_set1_epi32(off));
    _mm_storeu_si128((__m128i *)dst, _mm512_cvtepi32_epi8(q));
}
INL float hmax(vf a) { return _mm512_reduce_max_ps(a); }
#else
INL vi vi_load(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
INL vi vi_b32(int32_t a) { return _mm256_set1_epi32(a); }
INL vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
INL vf vi_cvt(vi a) { return _mm256_cvtepi32_ps(a); }
INL vf ld_i8ps(const int8_t *p) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p))); }
INL vi dot_ubs(vi acc, vi a, vi w)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), _mm256_set1_epi16(1)));
}
INL vi dot_sgn(vi acc, vi absa, vi a, vi w)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(absa, _mm256_sign_epi8(w, a)),
                                                   _mm256_set1_epi16(1)));
}
INL void quant_store(int8_t *dst, vf v, vf inv, int off)
{
    vi q = _mm256_add_epi32(_mm256_cvtps_epi32(v_mul(v, inv)), _mm256_set1_epi32(off));
    const vi sh = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                   0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    q = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(q, sh), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)dst, _mm256_castsi256_si128(q));
}
INL float hmax(vf a)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
#endif

/* Quantize n floats (n % VW == 0) to bytes with zero point off; pad to np with off.
 * Returns the scale (dequantized value = (q - off) * scale). */
static inline float quantize_m(const float *v, int n, int np, int8_t *q, int off, int qmax)
{
    float m;
    if (g_fixed)
        m = 1.0f;
    else {
        vf mx = v_zero();
        for (int i = 0; i < n; i += VW)
            mx = v_max(mx, v_abs(v_load(v + i)));
        m = hmax(mx);
        if (m < 1e-30f) m = 1e-30f;
    }
    vf inv = v_set1((float)qmax / m);
    const vf lim = v_set1(m), nlim = v_set1(-m); /* clamp |v| <= m (matters for the fixed scale) */
    for (int i = 0; i < n; i += VW)
        quant_store(q + i, v_min(lim, v_max(nlim, v_load(v + i))), inv, off);
    for (int i = n; i < np; i++)
        q[i] = (int8_t)off;
    return m / (float)qmax;
}
static inline float quantize(const float *v, int n, int np, int8_t *q, int off)
{
    return quantize_m(v, n, np, q, off, 127);
}

/* Two-term quantization: v ~ (q1 - off) * s + (q2 - off) * s / 254, |residual| <= s / 2.
 * Returns s; q2's scale is s / 254. Gives ~15-bit activations from the same int8 dot product. */
static inline float quantize2(const float *v, int n, int np, int8_t *q1, int8_t *q2, int off)
{
    const int qmax = off == 64 ? 63 : 127; /* off 64: 7-bit unsigned activations */
    float s = quantize_m(v, n, np, q1, off, qmax);
    vf sv = v_set1(s), inv2 = v_set1(2.0f * qmax / s);
    float tmp[VW] __attribute__((aligned(64)));
    for (int i = 0; i < n; i += VW) {
        /* dequantize q1 exactly as stored */
        for (int l = 0; l < VW; l++) tmp[l] = (float)((off ? (int)(uint8_t)q1[i + l] : (int)q1[i + l]) - off);
        vf r = v_fnmadd(v_load(tmp), sv, v_load(v + i));
        quant_store(q2 + i, r, inv2, off);
    }
    for (int i = n; i < np; i++) q2[i] = (int8_t)off;
    return s;
}

/* ---------------------------------------------------------------- model */
enum { LSTM = 0, GRU = 1 };
typedef struct {
    int kind, G, I, H, B, Ip, Hp; /* Ip, Hp: I, H padded to a multiple of 4 */
    float *Wih, *Whh, *bias, *bhn; /* row-major (G*H, I), (G*H, H); bias G*H (LSTM: b_ih+b_hh;
                                      GRU: r,z folded, n: b_in), bhn H (GRU) */
    float *w32;                    /* [tile][k < I+H][g][VW] */
    int8_t *w8;                    /* same layout, int8, scales s8x/s8h */
    float *s8x, *s8h;              /* [g*H + u] */
    int8_t *wq;                    /* [tile][kg < (Ip+Hp)/4][g][VW][4], 8-bit, scales sqx/sqh */
    float *sqx, *sqh;
    int32_t *cqx, *cqh;            /* -128 * sum of the row's int8 weights (zp correction) */
    int32_t *c64x, *c64h;          /* -64 * sum (7-bit activations, zero point 64) */
    int8_t *wq7;                   /* same layout, 7-bit weights (|w| <= 63) */
    float *s7x, *s7h;
    int32_t *c7x, *c7h;
    /* state (B rows) */
    float *h, *c, *hn;             /* B*H */
    int8_t *xq, *hq;               /* B*Ip, B*Hp quantized activations */
    int8_t *xq2, *hq2;             /* second terms (two-term variants) */
    float *xs, *hs;                /* per-row scales */
} model;

static void *xalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    memset(p, 0, (n + 63) / 64 * 64);
    return p;
}

static void quant_rows(const float *W, int rows, int K, int Kp, int bits, int8_t *q, float *s, int32_t *corr)
{
    const int qmax = (1 << (bits - 1)) - 1;
    for (int r = 0; r < rows; r++) {
        float m = 0;
        for (int k = 0; k < K; k++) m = fmaxf(m, fabsf(W[(size_t)r * K + k]));
        float sc = m > 0 ? m / qmax : 1.0f;
        s[r] = sc;
        int32_t sum = 0;
        for (int k = 0; k < Kp; k++) {
            int v = k < K ? (int)lrintf(W[(size_t)r * K + k] / sc) : 0;
            if (v > qmax) v = qmax;
            if (v < -qmax) v = -qmax;
            q[(size_t)r * Kp + k] = (int8_t)v;
            sum += v;
        }
        if (corr) corr[r] = -128 * sum;
    }
}

static void pack_dot(model *m, const int8_t *qx, const int8_t *qh, int8_t *dst)
{
    const int G = m->G, H = m->H, KG = (m->Ip + m->Hp) / 4;
    for (int t = 0; t < H / VW; t++)
        for (int kg = 0; kg < KG; kg++)
            for (int g = 0; g < G; g++)
                for (int j = 0; j < VW; j++)
                    for (int kk = 0; kk < 4; kk++) {
                        int k = kg * 4 + kk, row = g * H + t * VW + j;
                        int8_t v = k < m->Ip ? qx[(size_t)row * m->Ip + k] : qh[(size_t)row * m->Hp + k - m->Ip];
                        dst[((((size_t)t * KG + kg) * G + g) * VW + j) * 4 + kk] = v;
                    }
}

static void build(model *m)
{
    const int G = m->G, H = m->H, I = m->I, K = I + H, GH = G * H;
    m->Ip = (I + 3) & ~3;
    m->Hp = (H + 3) & ~3;
    m->w32 = xalloc(sizeof(float) * (size_t)GH * K);
    m->w8 = xalloc((size_t)GH * K);
    m->s8x = xalloc(4 * GH); m->s8h = xalloc(4 * GH);
    int8_t *qx = xalloc((size_t)GH * m->Ip), *qh = xalloc((size_t)GH * m->Hp);
    int8_t *qx8 = xalloc((size_t)GH * I), *qh8 = xalloc((size_t)GH * H);
    quant_rows(m->Wih, GH, I, I, 8, qx8, m->s8x, NULL);
    quant_rows(m->Whh, GH, H, H, 8, qh8, m->s8h, NULL);
    for (int t = 0; t < H / VW; t++)
        for (int k = 0; k < K; k++)
            for (int g = 0; g < G; g++)
                for (int j = 0; j < VW; j++) {
                    int row = g * H + t * VW + j;
                    size_t d = (((size_t)t * K + k) * G + g) * VW + j;
                    m->w32[d] = k < I ? m->Wih[(size_t)row * I + k] : m->Whh[(size_t)row * H + k - I];
                    m->w8[d] = k < I ? qx8[(size_t)row * I + k] : qh8[(size_t)row * H + k - I];
                }
    size_t nq = (size_t)GH * (m->Ip + m->Hp);
    m->wq = xalloc(nq); m->wq7 = xalloc(nq);
    m->sqx = xalloc(4 * GH); m->sqh = xalloc(4 * GH); m->cqx = xalloc(4 * GH); m->cqh = xalloc(4 * GH);
    m->s7x = xalloc(4 * GH); m->s7h = xalloc(4 * GH); m->c7x = xalloc(4 * GH); m->c7h = xalloc(4 * GH);
    quant_rows(m->Wih, GH, I, m->Ip, 8, qx, m->sqx, m->cqx);
    quant_rows(m->Whh, GH, H, m->Hp, 8, qh, m->sqh, m->cqh);
    pack_dot(m, qx, qh, m->wq);
    m->c64x = xalloc(4 * GH); m->c64h = xalloc(4 * GH);
    for (int r = 0; r < GH; r++) { m->c64x[r] = m->cqx[r] / 2; m->c64h[r] = m->cqh[r] / 2; }
    quant_rows(m->Wih, GH, I, m->Ip, 7, qx, m->s7x, m->c7x);
    quant_rows(m->Whh, GH, H, m->Hp, 7, qh, m->s7h, m->c7h);
    pack_dot(m, qx, qh, m->wq7);
    free(qx); free(qh); free(qx8); free(qh8);
    int B = m->B;
    m->h = xalloc(4 * (size_t)B * H); m->c = xalloc(4 * (size_t)B * H); m->hn = xalloc(4 * (size_t)B * H);
    m->xq = xalloc((size_t)B * m->Ip); m->hq = xalloc((size_t)B * m->Hp);
    m->xq2 = xalloc((size_t)B * m->Ip); m->hq2 = xalloc((size_t)B * m->Hp);
    m->xs = xalloc(4 * B); m->hs = xalloc(4 * B);
}

/* ---------------------------------------------------------------- fused gate math */
/* gx, gh: x part and h part of each gate (with biases) for VW units u0.. of row b */
INL void cell_update(const model *m, int kind, vf gx[4], vf gh[4], int u0, const float *h, float *c, float *hout)
{
    if (kind == LSTM) {
        vf gi = v_add(gx[0], gh[0]), gf = v_add(gx[1], gh[1]), gg = v_add(gx[2], gh[2]), go = v_add(gx[3], gh[3]);
        vf cv = v_load(c + u0);
        cv = v_fmadd(v_sigmoid(gf), cv, v_mul(v_sigmoid(gi), v_tanh(gg)));
        v_store(c + u0, cv);
        v_store(hout + u0, v_mul(v_sigmoid(go), v_tanh(cv)));
    } else {
        vf r = v_sigmoid(v_add(gx[0], gh[0])), z = v_sigmoid(v_add(gx[1], gh[1]));
        vf n = v_tanh(v_fmadd(r, v_add(gh[2], v_load(m->bhn + u0)), gx[2]));
        vf hp = v_load(h + u0);
        v_store(hout + u0, v_fmadd(z, v_sub(hp, n), n));
    }
}

/* ---------------------------------------------------------------- B=1 step kernels */
/* fp32 (and weight-only int8 when W8): acc[g] += w[k][g] * v[k], two chains over k pairs */
INL void acc_f(const int W8, const int G, const void *w, size_t off, int K, const float *v, vf acc[4])
{
    vf a2[4];
    for (int g = 0; g < G; g++) a2[g] = v_zero();
    const size_t row = (size_t)G * VW;
    int k = 0;
    for (; k + 1 < K; k += 2) {
        size_t o = off + k * row;
        vf a = v_set1(v[k]), b = v_set1(v[k + 1]);
        UNR for (int g = 0; g < G; g++) {
            vf w0 = W8 ? ld_i8ps((const int8_t *)w + o + g * VW) : v_load((const float *)w + o + g * VW);
            vf w1 = W8 ? ld_i8ps((const int8_t *)w + o + row + g * VW) : v_load((const float *)w + o + row + g * VW);
            acc[g] = v_fmadd(w0, a, acc[g]);
            a2[g] = v_fmadd(w1, b, a2[g]);
        }
    }
    for (; k < K; k++) {
        size_t o = off + k * row;
        vf a = v_set1(v[k]);
        for (int g = 0; g < G; g++) {
            vf w0 = W8 ? ld_i8ps((const int8_t *)w + o + g * VW) : v_load((const float *)w + o + g * VW);
            acc[g] = v_fmadd(w0, a, acc[g]);
        }
    }
    for (int g = 0; g < G; g++) acc[g] = v_add(acc[g], a2[g]);
}

INL void step_f(const int W8, const int kind, model *m, const float *x)
{
    const int G = kind == LSTM ? 4 : 3, H = m->H, I = m->I, K = I + H;
    const void *w = W8 ? (const void *)m->w8 : (const void *)m->w32;
    for (int u0 = 0; u0 < H; u0 += VW) {
        const size_t w0 = (size_t)u0 * K * G;
        vf gx[4], gh[4];
        for (int g = 0; g < G; g++) {
            gx[g] = W8 ? v_zero() : v_load(m->bias + g * H + u0);
            gh[g] = v_zero();
        }
        acc_f(W8, G, w, w0, I, x, gx);
        acc_f(W8, G, w, w0 + (size_t)I * G * VW, H, m->h, gh);
        if (W8)
            for (int g = 0; g < G; g++) {
                gx[g] = v_fmadd(gx[g], v_load(m->s8x + g * H + u0), v_load(m->bias + g * H + u0));
                gh[g] = v_mul(gh[g], v_load(m->s8h + g * H + u0));
            }
        cell_update(m, kind, gx, gh, u0, m->h, m->c, m->hn);
    }
    float *t = m->h; m->h = m->hn; m->hn = t;
}

/* integer dot kernels. MODE: 0 vnni (u8 zp128, 8-bit w), 1 maddubs u8 zp128 (7-bit w),
 * 2 sign trick (s8 act, 8-bit w) */
enum { D_VNNI = 0, D_UBS = 1, D_SGN = 2, D_U7 = 3 /* maddubs, 7-bit u8 activations (zp 64), 8-bit w */ };
INL vi dotop(const int MODE, vi acc, vi a, vi absa, vi w)
{
#if HAVE512
    (void)absa;
#ifdef __AVX512VNNI__
    if (MODE == D_VNNI) return dot_vnni(acc, a, w);
#endif
    return dot_ubs(acc, a, w);
#else
    if (MODE == D_SGN) return dot_sgn(acc, absa, a, w);
    return dot_ubs(acc, a, w);
#endif
}

INL vi absq(const int MODE, vi a)
{
#if !HAVE512
    if (MODE == D_SGN) return _mm256_abs_epi8(a);
#endif
    (void)MODE;
    return a;
}

/* acc[g] (int32) += sum over k groups of 4; two chains */
INL void acc_q(const int MODE, const int G, const int8_t *w, int KG, const int8_t *q, vi acc[4])
{
    vi a2[4];
    for (int g = 0; g < G; g++) a2[g] = vi_b32(0);
    const size_t row = (size_t)G * VW * 4;
    int kg = 0;
    for (; kg + 1 < KG; kg += 2) {
        int32_t q0, q1;
        memcpy(&q0, q + 4 * kg, 4);
        memcpy(&q1, q + 4 * kg + 4, 4);
        vi a = vi_b32(q0), b = vi_b32(q1), aa = absq(MODE, a), ab = absq(MODE, b);
        const int8_t *p = w + kg * row;
        UNR for (int g = 0; g < G; g++) {
            acc[g] = dotop(MODE, acc[g], a, aa, vi_load(p + g * VW * 4));
            a2[g] = dotop(MODE, a2[g], b, ab, vi_load(p + row + g * VW * 4));
        }
    }
    for (; kg < KG; kg++) {
        int32_t q0;
        memcpy(&q0, q + 4 * kg, 4);
        vi a = vi_b32(q0), aa = absq(MODE, a);
        for (int g = 0; g < G; g++)
            acc[g] = dotop(MODE, acc[g], a, aa, vi_load(w + kg * row + g * VW * 4));
    }
    for (int g = 0; g < G; g++) acc[g] = vi_add(acc[g], a2[g]);
}

/* both terms in one pass over the weights: acc[g] += w.q1, acc2[g] += w.q2 */
INL void acc_q2(const int MODE, const int G, const int8_t *w, int KG, const int8_t *q, const int8_t *q2,
                vi acc[4], vi acc2[4])
{
    const size_t row = (size_t)G * VW * 4;
    for (int kg = 0; kg < KG; kg++) {
        int32_t q0, q1;
        memcpy(&q0, q + 4 * kg, 4);
        memcpy(&q1, q2 + 4 * kg, 4);
        vi a = vi_b32(q0), b = vi_b32(q1), aa = absq(MODE, a), ab = absq(MODE, b);
        const int8_t *p = w + kg * row;
        UNR for (int g = 0; g < G; g++) {
            vi wv = vi_load(p + g * VW * 4);
            acc[g] = dotop(MODE, acc[g], a, aa, wv);
            acc2[g] = dotop(MODE, acc2[g], b, ab, wv);
        }
    }
}

INL void step_q2(const int MODE, const int kind, model *m, const float *x)
{
    const int G = kind == LSTM ? 4 : 3, H = m->H;
    const int KGx = m->Ip / 4, KGh = m->Hp / 4, KG = KGx + KGh;
    const int off = MODE == D_SGN ? 0 : MODE == D_U7 ? 64 : 128;
    const int8_t *w = MODE == D_UBS ? m->wq7 : m->wq;
    const float *sx = MODE == D_UBS ? m->s7x : m->sqx, *sh = MODE == D_UBS ? m->s7h : m->sqh;
    const int32_t *cx = MODE == D_UBS ? m->c7x : MODE == D_U7 ? m->c64x : m->cqx;
    const int32_t *ch = MODE == D_UBS ? m->c7h : MODE == D_U7 ? m->c64h : m->cqh;
    const float xs = quantize2(x, m->I, m->Ip, m->xq, m->xq2, off);
    const float hs = m->hs[0];
    const float r2 = MODE == D_U7 ? 1.0f / 126.0f : 1.0f / 254.0f;
    for (int u0 = 0; u0 < H; u0 += VW) {
        const int8_t *wt = w + (size_t)u0 * KG * G * 4;
        vi ax[4], ax2[4], ah[4], ah2[4];
        for (int g = 0; g < G; g++) {
            ax[g] = ax2[g] = MODE == D_SGN ? vi_b32(0) : vi_load(cx + g * H + u0);
            ah[g] = ah2[g] = MODE == D_SGN ? vi_b32(0) : vi_load(ch + g * H + u0);
        }
        acc_q2(MODE, G, wt, KGx, m->xq, m->xq2, ax, ax2);
        acc_q2(MODE, G, wt + (size_t)KGx * G * VW * 4, KGh, m->hq, m->hq2, ah, ah2);
        vf gx[4], gh[4];
        for (int g = 0; g < G; g++) {
            vf tx = v_fmadd(vi_cvt(ax2[g]), v_set1(r2), vi_cvt(ax[g]));
            vf th = v_fmadd(vi_cvt(ah2[g]), v_set1(r2), vi_cvt(ah[g]));
            gx[g] = v_fmadd(tx, v_mul(v_load(sx + g * H + u0), v_set1(xs)), v_load(m->bias + g * H + u0));
            gh[g] = v_mul(th, v_mul(v_load(sh + g * H + u0), v_set1(hs)));
        }
        cell_update(m, kind, gx, gh, u0, m->h, m->c, m->hn);
    }
    float *t = m->h; m->h = m->hn; m->hn = t;
    m->hs[0] = quantize2(m->h, H, m->Hp, m->hq, m->hq2, off);
}

INL void step_q(const int MODE, const int kind, model *m, const float *x)
{
    const int G = kind == LSTM ? 4 : 3, H = m->H;
    const int KGx = m->Ip / 4, KGh = m->Hp / 4, KG = KGx + KGh;
    const int off = MODE == D_SGN ? 0 : 128;
    const int8_t *w = MODE == D_UBS ? m->wq7 : m->wq;
    const float *sx = MODE == D_UBS ? m->s7x : m->sqx, *sh = MODE == D_UBS ? m->s7h : m->sqh;
    const int32_t *cx = MODE == D_UBS ? m->c7x : m->cqx, *ch = MODE == D_UBS ? m->c7h : m->cqh;
    const float xs = quantize(x, m->I, m->Ip, m->xq, off);
    const float hs = m->hs[0];
    for (int u0 = 0; u0 < H; u0 += VW) {
        const int8_t *wt = w + (size_t)u0 * KG * G * 4;
        vi ax[4], ah[4];
        for (int g = 0; g < G; g++) {
            ax[g] = MODE == D_SGN ? vi_b32(0) : vi_load(cx + g * H + u0);
            ah[g] = MODE == D_SGN ? vi_b32(0) : vi_load(ch + g * H + u0);
        }
        acc_q(MODE, G, wt, KGx, m->xq, ax);
        acc_q(MODE, G, wt + (size_t)KGx * G * VW * 4, KGh, m->hq, ah);
        vf gx[4], gh[4];
        for (int g = 0; g < G; g++) {
            gx[g] = v_fmadd(vi_cvt(ax[g]), v_mul(v_load(sx + g * H + u0), v_set1(xs)), v_load(m->bias + g * H + u0));
            gh[g] = v_mul(vi_cvt(ah[g]), v_mul(v_load(sh + g * H + u0), v_set1(hs)));
        }
        cell_update(m, kind, gx, gh, u0, m->h, m->c, m->hn);
    }
    float *t = m->h; m->h = m->hn; m->hn = t;
    m->hs[0] = quantize(m->h, H, m->Hp, m->hq, off);
}

static void reset_state(model *m, int mode)
{
    memset(m->h, 0, 4 * (size_t)m->B * m->H);
    memset(m->c, 0, 4 * (size_t)m->B * m->H);
    for (int b = 0; b < m->B; b++)
        m->hs[b] = quantize2(m->h + (size_t)b * m->H, m->H, m->Hp, m->hq + (size_t)b * m->Hp,
                             m->hq2 + (size_t)b * m->Hp, mode == D_SGN ? 0 : mode == D_U7 ? 64 : 128);
}

/* variant table */
typedef void (*stepfn)(model *, const float *);
static void s_f32_l(model *m, const float *x) { step_f(0, LSTM, m, x); }
static void s_w8_l(model *m, const float *x) { step_f(1, LSTM, m, x); }
static void s_f32_g(model *m, const float *x) { step_f(0, GRU, m, x); }
static void s_w8_g(model *m, const float *x) { step_f(1, GRU, m, x); }
#if HAVE512
#ifdef __AVX512VNNI__
static void s_vnni_l(model *m, const float *x) { step_q(D_VNNI, LSTM, m, x); }
static void s_vnni_g(model *m, const float *x) { step_q(D_VNNI, GRU, m, x); }
static void s_vnni2_l(model *m, const float *x) { step_q2(D_VNNI, LSTM, m, x); }
static void s_vnni2_g(model *m, const float *x) { step_q2(D_VNNI, GRU, m, x); }
#endif
static void s_bw_l(model *m, const float *x) { step_q(D_UBS, LSTM, m, x); }
static void s_bw_g(model *m, const float *x) { step_q(D_UBS, GRU, m, x); }
#else
static void s_u8w7_l(model *m, const float *x) { step_q(D_UBS, LSTM, m, x); }
static void s_u8w7_g(model *m, const float *x) { step_q(D_UBS, GRU, m, x); }
static void s_sgn_l(model *m, const float *x) { step_q(D_SGN, LSTM, m, x); }
static void s_sgn_g(model *m, const float *x) { step_q(D_SGN, GRU, m, x); }
static void s_sgn2_l(model *m, const float *x) { step_q2(D_SGN, LSTM, m, x); }
static void s_sgn2_g(model *m, const float *x) { step_q2(D_SGN, GRU, m, x); }
static void s_u8w72_l(model *m, const float *x) { step_q2(D_UBS, LSTM, m, x); }
static void s_u7a2_l(model *m, const float *x) { step_q2(D_U7, LSTM, m, x); }
static void s_u7a2_g(model *m, const float *x) { step_q2(D_U7, GRU, m, x); }
static void s_u8w72_g(model *m, const float *x) { step_q2(D_UBS, GRU, m, x); }
#endif
typedef struct { const char *name; stepfn l, g; int mode; int wbytes; } variant;
static const variant VARS[] = {
    {"f32", s_f32_l, s_f32_g, -1, 4},
    {"w8", s_w8_l, s_w8_g, -1, 1},
#if HAVE512
#ifdef __AVX512VNNI__
    {"vnni", s_vnni_l, s_vnni_g, D_VNNI, 1},
    {"vnni2t", s_vnni2_l, s_vnni2_g, D_VNNI, 1},
#endif
    {"bw_u8w7", s_bw_l, s_bw_g, D_UBS, 1},
#else
    {"u8w7", s_u8w7_l, s_u8w7_g, D_UBS, 1},
    {"sgn", s_sgn_l, s_sgn_g, D_SGN, 1},
    {"sgn2t", s_sgn2_l, s_sgn2_g, D_SGN, 1},
    {"u8w7_2t", s_u8w72_l, s_u8w72_g, D_UBS, 1},
    {"u7a_2t", s_u7a2_l, s_u7a2_g, D_U7, 1},
#endif
};
#define NV ((int)(sizeof VARS / sizeof VARS[0]))

/* ---------------------------------------------------------------- random model */
static uint64_t rng = 88172645463325252ull;
static double urand(void) /* [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}

static model *make(int kind, int I, int H, int B, float wscale)
{
    model *m = calloc(1, sizeof *m);
    m->kind = kind; m->G = kind == LSTM ? 4 : 3; m->I = I; m->H = H; m->B = B;
    int GH = m->G * H;
    float a = wscale / sqrtf((float)H);
    m->Wih = xalloc(4 * (size_t)GH * I); m->Whh = xalloc(4 * (size_t)GH * H);
    m->bias = xalloc(4 * GH); m->bhn = xalloc(4 * H);
    for (size_t i = 0; i < (size_t)GH * I; i++) m->Wih[i] = a * urand();
    for (size_t i = 0; i < (size_t)GH * H; i++) m->Whh[i] = a * urand();
    for (int i = 0; i < GH; i++) m->bias[i] = a * urand();
    for (int i = 0; i < H; i++) m->bhn[i] = a * urand();
    build(m);
    return m;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); /* CPU time of this thread: the 2 cores are shared */
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

/* ---------------------------------------------------------------- batch (B rows) kernels */
#if HAVE512
#define BGM 4
#else
#define BGM 2
#endif
/* fp32: BG rows per tile pass, x and h parts, weights read once per tile pass for BG rows */
INL void seq_f32_rows(const int BG, model *m, const float *x, int ldx, int b0, int u0)
{
    const int G = 4, H = m->H, I = m->I, K = I + H;
    {
        const float *w = m->w32 + (size_t)u0 * K * G;
        vf acc[BGM][4];
        for (int r = 0; r < BG; r++)
            for (int g = 0; g < G; g++) acc[r][g] = v_load(m->bias + g * H + u0);
        for (int part = 0; part < 2; part++) {
            const float *v = part ? m->h + (size_t)b0 * H : x + (size_t)b0 * ldx;
            const int ld = part ? H : ldx, k0 = part ? I : 0, k1 = part ? K : I;
            for (int k = k0; k < k1; k++) {
                vf wg[4];
                for (int g = 0; g < 4; g++) wg[g] = v_load(w + (size_t)k * G * VW + g * VW);
                UNR for (int r = 0; r < BG; r++) {
                    vf a = v_set1(v[(size_t)r * ld + k - k0]);
                    for (int g = 0; g < 4; g++) acc[r][g] = v_fmadd(wg[g], a, acc[r][g]);
                }
            }
        }
        vf z[4] = {v_zero(), v_zero(), v_zero(), v_zero()};
        for (int r = 0; r < BG; r++)
            cell_update(m, LSTM, acc[r], z, u0, NULL, m->c + (size_t)(b0 + r) * H, m->hn + (size_t)(b0 + r) * H);
    }
}
#if HAVE512
#define BGQ 4
#else
#define BGQ 2
#endif
INL void seq_q_rows(const int MODE, const int BG, model *m, const int8_t *xq, const float *xs, int b0, int u0)
{
    const int G = 4, H = m->H, KGx = m->Ip / 4, KGh = m->Hp / 4, KG = KGx + KGh;
    const int8_t *w0 = MODE == D_UBS ? m->wq7 : m->wq;
    const float *sx = MODE == D_UBS ? m->s7x : m->sqx, *sh = MODE == D_UBS ? m->s7h : m->sqh;
    const int32_t *cx = MODE == D_UBS ? m->c7x : m->cqx, *ch = MODE == D_UBS ? m->c7h : m->cqh;
    {
        const int8_t *w = w0 + (size_t)u0 * KG * G * 4;
        vi acc[BGQ][4];
        float gxs[BGQ][4][VW] __attribute__((aligned(64)));
        for (int part = 0; part < 2; part++) {
            const int8_t *q = part ? m->hq : xq;
            const int ld = part ? m->Hp : m->Ip, k0 = part ? KGx : 0, k1 = part ? KG : KGx;
            const int32_t *cc = part ? ch : cx;
            for (int r = 0; r < BG; r++)
                for (int g = 0; g < 4; g++)
                    acc[r][g] = MODE == D_SGN ? vi_b32(0) : vi_load(cc + g * H + u0);
            for (int kg = k0; kg < k1; kg++) {
                vi wg[4];
                for (int g = 0; g < 4; g++) wg[g] = vi_load(w + ((size_t)kg * G + g) * VW * 4);
                UNR for (int r = 0; r < BG; r++) {
                    int32_t qq;
                    memcpy(&qq, q + (size_t)(b0 + r) * ld + 4 * (kg - k0), 4);
                    vi a = vi_b32(qq), aa = absq(MODE, a);
                    for (int g = 0; g < 4; g++) acc[r][g] = dotop(MODE, acc[r][g], a, aa, wg[g]);
                }
            }
            for (int r = 0; r < BG; r++) {
                float s = part ? m->hs[b0 + r] : xs[b0 + r];
                vf gx[4], gh[4];
                for (int g = 0; g < 4; g++) {
                    const float *sc = part ? sh : sx;
                    vf v = v_mul(vi_cvt(acc[r][g]), v_mul(v_load(sc + g * H + u0), v_set1(s)));
                    if (!part)
                        v_store(gxs[r][g], v_add(v, v_load(m->bias + g * H + u0)));
                    else {
                        gh[g] = v;
                        gx[g] = v_load(gxs[r][g]);
                    }
                }
                if (part)
                    cell_update(m, LSTM, gx, gh, u0, NULL, m->c + (size_t)(b0 + r) * H, m->hn + (size_t)(b0 + r) * H);
            }
        }
    }
}

/* two-term activations in batch: BG rows, acc (q1) and acc2 (q2) per gate */
#if HAVE512
#define BGQ2 2
#else
#define BGQ2 1
#endif
INL void seq_q2_rows(const int MODE, const int BG, model *m, const int8_t *xq, const int8_t *xq2, const float *xs,
                     int b0, int u0)
{
    const int G = 4, H = m->H, KGx = m->Ip / 4, KGh = m->Hp / 4, KG = KGx + KGh;
    const int32_t *cx = MODE == D_U7 ? m->c64x : m->cqx, *ch = MODE == D_U7 ? m->c64h : m->cqh;
    const float r2 = MODE == D_U7 ? 1.0f / 126.0f : 1.0f / 254.0f;
    const int8_t *w = m->wq + (size_t)u0 * KG * G * 4;
    vi acc[BGQ2][4], acc2[BGQ2][4];
    float gxs[BGQ2][4][VW] __attribute__((aligned(64)));
    for (int part = 0; part < 2; part++) {
        const int8_t *q = part ? m->hq : xq, *q2 = part ? m->hq2 : xq2;
        const int ld = part ? m->Hp : m->Ip, k0 = part ? KGx : 0, k1 = part ? KG : KGx;
        const int32_t *cc = part ? ch : cx;
        for (int r = 0; r < BG; r++)
            for (int g = 0; g < 4; g++)
                acc[r][g] = acc2[r][g] = vi_load(cc + g * H + u0);
        for (int kg = k0; kg < k1; kg++) {
            vi wg[4];
            for (int g = 0; g < 4; g++) wg[g] = vi_load(w + ((size_t)kg * G + g) * VW * 4);
            UNR for (int r = 0; r < BG; r++) {
                int32_t qa, qb;
                memcpy(&qa, q + (size_t)(b0 + r) * ld + 4 * (kg - k0), 4);
                memcpy(&qb, q2 + (size_t)(b0 + r) * ld + 4 * (kg - k0), 4);
                vi a = vi_b32(qa), b = vi_b32(qb);
                for (int g = 0; g < 4; g++) {
                    acc[r][g] = dotop(MODE, acc[r][g], a, a, wg[g]);
                    acc2[r][g] = dotop(MODE, acc2[r][g], b, b, wg[g]);
                }
            }
        }
        for (int r = 0; r < BG; r++) {
            float s = part ? m->hs[b0 + r] : xs[b0 + r];
            vf gx[4], gh[4];
            for (int g = 0; g < 4; g++) {
                const float *sc = part ? m->sqh : m->sqx;
                vf t = v_fmadd(vi_cvt(acc2[r][g]), v_set1(r2), vi_cvt(acc[r][g]));
                vf v = v_mul(t, v_mul(v_load(sc + g * H + u0), v_set1(s)));
                if (!part)
                    v_store(gxs[r][g], v_add(v, v_load(m->bias + g * H + u0)));
                else {
                    gh[g] = v;
                    gx[g] = v_load(gxs[r][g]);
                }
            }
            if (part)
                cell_update(m, LSTM, gx, gh, u0, NULL, m->c + (size_t)(b0 + r) * H, m->hn + (size_t)(b0 + r) * H);
        }
    }
}

INL void seq_q2(const int MODE, model *m, const float *x, int T, int8_t *xqall, int8_t *xq2all, float *xsall)
{
    const int B = m->B, I = m->I, H = m->H, off = MODE == D_U7 ? 64 : 128;
    for (int i = 0; i < T * B; i++)
        xsall[i] = quantize2(x + (size_t)i * I, I, m->Ip, xqall + (size_t)i * m->Ip, xq2all + (size_t)i * m->Ip, off);
    for (int t = 0; t < T; t++) {
        const int8_t *xq = xqall + (size_t)t * B * m->Ip, *xq2 = xq2all + (size_t)t * B * m->Ip;
        const float *xs = xsall + (size_t)t * B;
        for (int u0 = 0; u0 < H; u0 += VW)
            for (int b = 0; b + BGQ2 <= B; b += BGQ2) seq_q2_rows(MODE, BGQ2, m, xq, xq2, xs, b, u0);
        float *tt = m->h; m->h = m->hn; m->hn = tt;
        for (int b2 = 0; b2 < B; b2++)
            m->hs[b2] = quantize2(m->h + (size_t)b2 * H, H, m->Hp, m->hq + (size_t)b2 * m->Hp,
                                  m->hq2 + (size_t)b2 * m->Hp, off);
    }
}

static void seq_f32(model *m, const float *x, int T)
{
    const int B = m->B, I = m->I;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * B * I;
        for (int u0 = 0; u0 < m->H; u0 += VW) {
            int b = 0;
            for (; b + BGM <= B; b += BGM) seq_f32_rows(BGM, m, xt, I, b, u0);
            for (; b < B; b++) seq_f32_rows(1, m, xt, I, b, u0);
        }
        float *tt = m->h; m->h = m->hn; m->hn = tt;
    }
}

INL void seq_q(const int MODE, model *m, const float *x, int T, int8_t *xqall, float *xsall)
{
    const int B = m->B, I = m->I, H = m->H, off = MODE == D_SGN ? 0 : 128;
    for (int i = 0; i < T * B; i++) /* inputs quantized up front (one pass, outside the recurrence) */
        xsall[i] = quantize(x + (size_t)i * I, I, m->Ip, xqall + (size_t)i * m->Ip, off);
    for (int t = 0; t < T; t++) {
        const int8_t *xq = xqall + (size_t)t * B * m->Ip;
        const float *xs = xsall + (size_t)t * B;
        for (int u0 = 0; u0 < H; u0 += VW) {
            int b = 0;
            for (; b + BGQ <= B; b += BGQ) seq_q_rows(MODE, BGQ, m, xq, xs, b, u0);
            for (; b < B; b++) seq_q_rows(MODE, 1, m, xq, xs, b, u0);
        }
        float *tt = m->h; m->h = m->hn; m->hn = tt;
        for (int b2 = 0; b2 < B; b2++)
            m->hs[b2] = quantize(m->h + (size_t)b2 * H, H, m->Hp, m->hq + (size_t)b2 * m->Hp, off);
    }
}

static void batch_bench(int rounds)
{
    const int B = 64, T = 100, I = 256, H = 512;
    model *m = make(LSTM, I, H, B, 1.0f);
    float *x = xalloc(4 * (size_t)T * B * I);
    for (size_t i = 0; i < (size_t)T * B * I; i++) x[i] = (float)urand();
    int8_t *xq = xalloc((size_t)T * B * m->Ip);
    float *xs = xalloc(4 * (size_t)T * B);
    const char *names[] = {"f32", HAVE512 ? "vnni" : "sgn", HAVE512 ? "bw_u8w7" : "u8w7", HAVE512 ? "vnni2t" : "u7a_2t"};
    const int nv = 4;
    int8_t *xq2 = xalloc((size_t)T * B * m->Ip);
#if HAVE512
    const int M2 = D_VNNI;
#else
    const int M2 = D_U7;
#endif
    double *tm = calloc((size_t)nv * rounds, sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int v0 = 0; v0 < nv; v0++) {
            int v = (v0 + r) % nv;
            reset_state(m, v == 3 ? M2 : v == 1 && !HAVE512 ? D_SGN : D_VNNI);
            double t0 = now();
            if (v == 0) seq_f32(m, x, T);
            else if (v == 3) seq_q2(M2, m, x, T, xq, xq2, xs);
#if HAVE512
#ifdef __AVX512VNNI__
            else if (v == 1) seq_q(D_VNNI, m, x, T, xq, xs);
#endif
#else
            else if (v == 1) seq_q(D_SGN, m, x, T, xq, xs);
#endif
            else seq_q(D_UBS, m, x, T, xq, xs);
            tm[v * rounds + r] = now() - t0;
        }
    /* sanity: the int8 paths against the fp32 path over the same 100 steps */
    float *hf = xalloc(4 * (size_t)B * H);
    reset_state(m, D_VNNI); seq_f32(m, x, T); memcpy(hf, m->h, 4 * (size_t)B * H);
    for (int v = 1; v < nv; v++) {
        int mode = v == 3 ? M2 : v == 2 ? D_UBS : HAVE512 ? D_VNNI : D_SGN;
        reset_state(m, mode);
        if (v == 3) seq_q2(M2, m, x, T, xq, xq2, xs);
#if HAVE512 && defined(__AVX512VNNI__)
        if (mode == D_VNNI && v != 3) seq_q(D_VNNI, m, x, T, xq, xs);
#endif
#if !HAVE512
        if (mode == D_SGN) seq_q(D_SGN, m, x, T, xq, xs);
#endif
        if (mode == D_UBS && v == 2) seq_q(D_UBS, m, x, T, xq, xs);
        float e = 0;
        for (size_t i = 0; i < (size_t)B * H; i++) e = fmaxf(e, fabsf(m->h[i] - hf[i]));
        printf("batch check %s: max |h_int8 - h_f32| after %d steps = %.2e\n", names[v], T, e);
    }
    double flops = 2.0 * B * T * 4.0 * H * (I + H);
    for (int v = 0; v < nv; v++) {
        qsort(tm + v * rounds, rounds, sizeof(double), cmpd);
        double med = tm[v * rounds + rounds / 2];
        printf("batch B=%d T=%d %d->%d %-8s median %8.2f ms  min %8.2f ms  %6.1f GOP/s\n", B, T, I, H, names[v],
               med / 1e6, tm[v * rounds] / 1e6, flops / med);
    }
}

/* ---------------------------------------------------------------- B=1 bench */
static void step_bench(int rounds)
{
    struct { int kind, I, H; } sizes[] = {{LSTM, 64, 128}, {LSTM, 128, 256}, {LSTM, 256, 512}, {GRU, 128, 256}};
    for (int si = 0; si < 4; si++) {
        model *m = make(sizes[si].kind, sizes[si].I, sizes[si].H, 1, 1.0f);
        float x[1024];
        for (int i = 0; i < m->I; i++) x[i] = (float)urand();
        const int G = m->G;
        double wparams = (double)G * m->H * (m->I + m->H);
        int nsteps = (int)(4e6 / wparams) + 20; /* ~ tens of µs .. ms per timing */
        double *tm = calloc((size_t)NV * rounds, sizeof(double));
        for (int r = 0; r < rounds; r++)
            for (int v0 = 0; v0 < NV; v0++) {
                int v = (v0 + r) % NV;
                reset_state(m, VARS[v].mode);
                stepfn f = m->kind == LSTM ? VARS[v].l : VARS[v].g;
                for (int i = 0; i < 3; i++) f(m, x); /* warm */
                double t0 = now();
                for (int i = 0; i < nsteps; i++) f(m, x);
                tm[v * rounds + r] = (now() - t0) / nsteps;
            }
        double f32med = 0;
        for (int v = 0; v < NV; v++) {
            qsort(tm + v * rounds, rounds, sizeof(double), cmpd);
            double med = tm[v * rounds + rounds / 2], q1 = tm[v * rounds + rounds / 4], q3 = tm[v * rounds + 3 * rounds / 4];
            if (v == 0) f32med = med;
            double bytes = wparams * VARS[v].wbytes;
            printf("%s %4d->%-4d %-8s %9.0f ns/step (IQR %6.0f-%6.0f)  weights %8.0f KB  %6.1f GB/s  x%.2f vs f32\n",
                   m->kind == LSTM ? "LSTM" : "GRU ", m->I, m->H, VARS[v].name, med, q1, q3, bytes / 1024,
                   bytes / med, f32med / med);
        }
        fflush(stdout);
        free(tm);
    }
}

/* ---------------------------------------------------------------- accuracy mode */
/* file: int32 kind, I, H, T; float Wih[G*H*I], Whh[G*H*H], bias[G*H], bhn[H], x[T*I] */
static void acc_mode(const char *in, const char *out)
{
    FILE *f = fopen(in, "rb");
    int32_t hdr[4];
    if (!f || fread(hdr, 4, 4, f) != 4) { perror(in); exit(1); }
    model *m = calloc(1, sizeof *m);
    m->kind = hdr[0]; m->G = m->kind == LSTM ? 4 : 3; m->I = hdr[1]; m->H = hdr[2]; m->B = 1;
    int T = hdr[3], GH = m->G * m->H;
    m->Wih = xalloc(4 * (size_t)GH * m->I); m->Whh = xalloc(4 * (size_t)GH * m->H);
    m->bias = xalloc(4 * GH); m->bhn = xalloc(4 * m->H);
    float *x = xalloc(4 * (size_t)T * m->I);
    size_t ok = fread(m->Wih, 4, (size_t)GH * m->I, f) + fread(m->Whh, 4, (size_t)GH * m->H, f) +
                fread(m->bias, 4, GH, f) + fread(m->bhn, 4, m->H, f) + fread(x, 4, (size_t)T * m->I, f);
    (void)ok;
    fclose(f);
    build(m);
    FILE *o = fopen(out, "wb");
    int32_t nv = 0;
    for (int fx = 0; fx < 2; fx++)
        for (int v = 0; v < NV; v++) {
            if (fx && VARS[v].mode < 0) continue;
            nv++;
        }
    fwrite(&nv, 4, 1, o);
    for (int fx = 0; fx < 2; fx++)
        for (int v = 0; v < NV; v++) {
            if (fx && VARS[v].mode < 0) continue; /* fixed scale only matters for the dot kernels */
            g_fixed = fx;
            char name[32] = {0};
            snprintf(name, sizeof name, "%s%s", VARS[v].name, fx ? "_fixed" : "");
            fwrite(name, 1, 32, o);
            reset_state(m, VARS[v].mode);
            stepfn fn = m->kind == LSTM ? VARS[v].l : VARS[v].g;
            for (int t = 0; t < T; t++) {
                fn(m, x + (size_t)t * m->I);
                fwrite(m->h, 4, m->H, o);
            }
        }
    g_fixed = 0;
    fclose(o);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "acc") && argc > 3) acc_mode(argv[2], argv[3]);
    else if (argc > 1 && !strcmp(argv[1], "batch")) batch_bench(argc > 2 ? atoi(argv[2]) : 7);
    else step_bench(argc > 2 ? atoi(argv[2]) : 41);
    return 0;
}
