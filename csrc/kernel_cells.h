/* Recurrent-cell and dense kernels, written once on the vector type `vf` (VW lanes) and
 * instantiated per ISA by kernels_<isa>.c, which includes its simd_<isa>.h first.
 * Packed layout: per tile of VW units, rows k of G gates x VW floats (x rows, then h rows). */
#include "internal.h"
#include "simd_math.h"

#define LF_INLINE static inline __attribute__((always_inline))
#define LF_UNROLL _Pragma("GCC unroll 16")

/* Stored weight types as template constants (lf_weights): the kernels below take one as a
 * compile-time argument WT and widen narrow weights in registers, then FMA in float32. */
enum { WT_F32 = LF_WEIGHTS_F32, WT_F16 = LF_WEIGHTS_F16, WT_BF16 = LF_WEIGHTS_BF16,
       WT_I8 = LF_WEIGHTS_I8 };

/* VW weights from element i of a packed array of type WT. */
LF_INLINE vf v_loadw(const int WT, const void *restrict w, size_t i)
{
    switch (WT) {
    case WT_F16: return v_load_f16((const uint16_t *)w + i);
    case WT_BF16: return v_load_bf16((const uint16_t *)w + i);
    case WT_I8: return v_load_i8((const int8_t *)w + i);
    default: return v_load((const float *)w + i);
    }
}

/* The packed weights of a cell as the kernel of type WT reads them. */
LF_INLINE const void *packed_of(const int WT, const lf_cell *restrict L)
{
    return WT == WT_F32 ? (const void *)L->packed : (const void *)L->packed_q;
}

/* Any element-wise activation; the ones without a vector form go lane by lane. */
LF_INLINE vf v_act(lf_activation a, vf x)
{
    switch (a) {
    case LF_ACT_LINEAR: return x;
    case LF_ACT_TANH: return v_tanh(x);
    case LF_ACT_SIGMOID: return v_sigmoid(x);
    case LF_ACT_RELU: return v_max(v_zero(), x);
    case LF_ACT_RELU6: return v_min(v_set1(6.0f), v_max(v_zero(), x));
    case LF_ACT_HARD_SIGMOID:
        return v_min(v_set1(1.0f), v_max(v_zero(), v_fmadd(x, v_set1(1.0f / 6.0f), v_set1(0.5f))));
    case LF_ACT_HARD_SIGMOID_02:
        return v_min(v_set1(1.0f), v_max(v_zero(), v_fmadd(x, v_set1(0.2f), v_set1(0.5f))));
    case LF_ACT_SOFTSIGN: return v_div(x, v_add(v_set1(1.0f), v_abs(x)));
    case LF_ACT_SILU: return v_mul(x, v_sigmoid(x));
    case LF_ACT_EXPONENTIAL: /* v_exp saturates at exp(88); real exp overflows to inf */
        return v_select_lt(v_set1(88.7228394f), x, v_set1(__builtin_inff()), v_exp(x));
    default: {
        float lane[VW];
        v_store(lane, x);
        for (int l = 0; l < VW; l++)
            lane[l] = lf_act_scalar(a, lane[l]);
        return v_load(lane);
    }
    }
}

/* c' = r(f)·c + r(i)·a(g);  returns h' = r(o)·a(c') for VW units (r = sigmoid, a = tanh when
 * def, the fully fused path; else the layer's activations). */
LF_INLINE vf lstm_cell(const lf_cell *restrict L, const int def, vf gi, vf gf, vf gg, vf go,
                       vf *c)
{
    if (def) {
        *c = v_fmadd(v_sigmoid(gf), *c, v_mul(v_sigmoid(gi), v_tanh(gg)));
        return v_mul(v_sigmoid(go), v_tanh(*c));
    }
    const lf_activation a = L->act, r = L->ract;
    *c = v_fmadd(v_act(r, gf), *c, v_mul(v_act(r, gi), v_act(a, gg)));
    return v_mul(v_act(r, go), v_act(a, *c));
}

/* lstm_cell on the state in memory: c updated in place, h' stored to h_out. */
LF_INLINE void lstm_update(const lf_cell *restrict L, vf gi, vf gf, vf gg, vf go,
                           float *restrict c, float *restrict h_out)
{
    vf cv = v_load(c), h = L->default_acts ? lstm_cell(L, 1, gi, gf, gg, go, &cv)
                                           : lstm_cell(L, 0, gi, gf, gg, go, &cv);
    v_store(c, cv);
    v_store(h_out, h);
}

LF_INLINE vf ract_of(const lf_cell *restrict L, vf x)
{
    return L->default_acts ? v_sigmoid(x) : v_act(L->ract, x);
}

LF_INLINE vf act_of(const lf_cell *restrict L, vf x)
{
    return L->default_acts ? v_tanh(x) : v_act(L->act, x);
}

/* acc[r][g] += sum_{k < K} w[o + k * row + g * VW] * v[r * ldv + k] for BG rows and NG gates,
 * the sums held in registers over the loop (acc is read once and written once). */
LF_INLINE void gate_rows(const int BG, const int WT, const int NG, const void *restrict w,
                         size_t o, size_t row, int32_t K, const float *restrict v, ptrdiff_t ldv,
                         vf acc[][4])
{
    vf a[BG_MAX][4];
    LF_UNROLL
    for (int r = 0; r < BG; r++)
        LF_UNROLL
        for (int g = 0; g < NG; g++)
            a[r][g] = acc[r][g];
    for (int32_t k = 0; k < K; k++) {
        const size_t wk = o + (size_t)k * row;
        vf wg[4];
        LF_UNROLL
        for (int g = 0; g < NG; g++)
            wg[g] = v_loadw(WT, w, wk + g * VW);
        LF_UNROLL
        for (int r = 0; r < BG; r++) {
            const vf b = v_set1(v[r * ldv + k]);
            LF_UNROLL
            for (int g = 0; g < NG; g++)
                a[r][g] = v_fmadd(wg[g], b, a[r][g]);
        }
    }
    LF_UNROLL
    for (int r = 0; r < BG; r++)
        LF_UNROLL
        for (int g = 0; g < NG; g++)
            acc[r][g] = a[r][g];
}

/* gate_rows for a full group of BG_MAX rows, out of line. Inlined into the tile kernel, whose
 * other values take the general registers, GCC kept 5 of the 6 rows' offsets on the stack and
 * reloaded them at every k: 13 loads per 12 FMAs on AVX2 (issue 14, Zen 4: a bare loop with its
 * offsets in memory ran 101-104 GFLOP/s vs 109-115 in registers; in the engine, min over
 * alternating runs, AVX2 LSTM 1->512 B=48 1.5 % faster, AVX-512 LSTM 256->512 B=64 1 %,
 * smaller and portable cases unchanged within noise). */
#define FULL_GROUP(WT, NG) \
    static __attribute__((noinline)) void KSUFFIX(full_group_##WT##_##NG)( \
        const void *restrict w, size_t o, size_t row, int32_t K, const float *restrict v, \
        ptrdiff_t ldv, vf acc[][4]) \
    { \
        gate_rows(BG_MAX, WT, NG, w, o, row, K, v, ldv, acc); \
    }
#define FULL_GROUPS(WT) FULL_GROUP(WT, 1) FULL_GROUP(WT, 2) FULL_GROUP(WT, 3) FULL_GROUP(WT, 4)
FULL_GROUPS(WT_F32)
FULL_GROUPS(WT_F16)
FULL_GROUPS(WT_BF16)
#undef FULL_GROUPS
#undef FULL_GROUP

/* acc[r][g - g0] += sum_k w[k][g] * v_r[k] for gates g in [g0, g0 + NG) of rows with GT
 * gates. With one batch row, two interleaved chains (acc2) keep both FMA pipes busy. */
LF_INLINE void accumulate(const int BG, const int WT, const int GT, const int g0, const int NG,
                          const void *restrict w, size_t w0, int32_t K,
                          const float *restrict v, ptrdiff_t ldv, vf acc[][4], vf acc2[][4])
{
    const size_t row = (size_t)GT * VW, o = w0 + (size_t)g0 * VW;
    if (BG == BG_MAX && BG > 1) {
#define FULL(WT_) (NG == 1 ? KSUFFIX(full_group_##WT_##_1) : NG == 2 ? KSUFFIX(full_group_##WT_##_2) \
                   : NG == 3 ? KSUFFIX(full_group_##WT_##_3) : KSUFFIX(full_group_##WT_##_4))
        (WT == WT_F16 ? FULL(WT_F16) : WT == WT_BF16 ? FULL(WT_BF16) : FULL(WT_F32))(
            w, o, row, K, v, ldv, acc);
#undef FULL
        return;
    }
    if (BG > 1) {
        gate_rows(BG, WT, NG, w, o, row, K, v, ldv, acc);
        return;
    }
    int32_t k = 0;
    for (; k + 1 < K; k += 2) {
        const size_t wk = o + (size_t)k * row;
        vf a = v_set1(v[k]), b = v_set1(v[k + 1]);
        for (int g = 0; g < NG; g++) {
            acc[0][g] = v_fmadd(v_loadw(WT, w, wk + g * VW), a, acc[0][g]);
            acc2[0][g] = v_fmadd(v_loadw(WT, w, wk + row + g * VW), b, acc2[0][g]);
        }
    }
    if (k < K)
        for (int g = 0; g < NG; g++)
            acc[0][g] = v_fmadd(v_loadw(WT, w, o + (size_t)k * row + g * VW), v_set1(v[k]),
                                acc[0][g]);
}

LF_INLINE void fold(const int BG, const int NG, vf acc[][4], vf acc2[][4])
{
    if (BG == 1)
        for (int g = 0; g < NG; g++)
            acc[0][g] = v_add(acc[0][g], acc2[0][g]);
}

/* acc[r][g] = bias (+ xproj) for gates [g0, g0 + NG); acc2 = 0. */
LF_INLINE void init_acc(const int BG, const int g0, const int NG, const float *restrict bias,
                        const float *restrict xp, ptrdiff_t ldxp, int32_t Hp, int32_t u0,
                        vf acc[][4], vf acc2[][4])
{
    for (int g = 0; g < NG; g++) {
        vf b = v_load(bias + (g0 + g) * Hp + u0);
        for (int r = 0; r < BG; r++) {
            acc[r][g] = xp ? v_add(b, v_load(xp + r * ldxp + (g0 + g) * Hp + u0)) : b;
            acc2[r][g] = v_zero();
        }
    }
}

/* acc += the x part (x read in the kernel, if non-NULL) and the h part of gates
 * [g0, g0 + NG), folded. */
LF_INLINE void gate_sums(const int BG, const int WT, const int GT, const int g0, const int NG,
                         const lf_cell *restrict L, const void *restrict w, size_t w0, size_t wh,
                         const float *restrict x, ptrdiff_t ldx, const float *restrict h,
                         ptrdiff_t ldh, vf acc[][4], vf acc2[][4])
{
    if (x)
        accumulate(BG, WT, GT, g0, NG, w, w0, L->I, x, ldx, acc, acc2);
    accumulate(BG, WT, GT, g0, NG, w, wh, L->R, h, ldh, acc, acc2);
    fold(BG, NG, acc, acc2);
}

/* The tile step of every cell kind, for BG consecutive batch rows and units [u0, u0 + VW).
 * phase: GRU reset-before runs phase 0 (r, z; writes r*h and z to scratch) over all tiles,
 * then phase 1 (n and h'). */
LF_INLINE void cell_tile(const int BG, const int WT, const lf_cell *restrict L, int phase,
                         int32_t u0,
                         const float *restrict x, ptrdiff_t ldx,
                         const float *restrict xp, ptrdiff_t ldxp,
                         const float *restrict h, ptrdiff_t ldh, float *restrict c,
                         float *restrict h_out, float *restrict rh, float *restrict zs)
{
    const int32_t Hp = L->Hp, G = L->G;
    const void *w = packed_of(WT, L);
    const size_t w0 = (size_t)u0 * (size_t)(L->I + L->R) * (size_t)G;
    const size_t wh = w0 + (size_t)L->I * (size_t)G * VW;
    vf acc[BG_MAX][4], acc2[BG_MAX][4];
    if (L->kind == LF_LAYER_LSTM) {
        if (GATES_PER_PASS >= 4 || BG <= 2) {
            init_acc(BG, 0, 4, L->bias, xp, ldxp, Hp, u0, acc, acc2);
            gate_sums(BG, WT, 4, 0, 4, L, w, w0, wh, x, ldx, h, ldh, acc, acc2);
        } else { /* i, f then g, o: each pass keeps 2 gates x BG rows in registers */
            vf hi[BG_MAX][4], hi2[BG_MAX][4];
            init_acc(BG, 0, 2, L->bias, xp, ldxp, Hp, u0, acc, acc2);
            gate_sums(BG, WT, 4, 0, 2, L, w, w0, wh, x, ldx, h, ldh, acc, acc2);
            init_acc(BG, 2, 2, L->bias, xp, ldxp, Hp, u0, hi, hi2);
            gate_sums(BG, WT, 4, 2, 2, L, w, w0, wh, x, ldx, h, ldh, hi, hi2);
            for (int r = 0; r < BG; r++) {
                acc[r][2] = hi[r][0];
                acc[r][3] = hi[r][1];
            }
        }
        for (int r = 0; r < BG; r++)
            lstm_update(L, acc[r][0], acc[r][1], acc[r][2], acc[r][3], c + r * Hp + u0,
                        h_out + r * Hp + u0);
    } else if (L->kind == LF_LAYER_RNN) {
        init_acc(BG, 0, 1, L->bias, xp, ldxp, Hp, u0, acc, acc2);
        gate_sums(BG, WT, 1, 0, 1, L, w, w0, wh, x, ldx, h, ldh, acc, acc2);
        for (int r = 0; r < BG; r++)
            v_store(h_out + r * Hp + u0, v_act(L->act, acc[r][0]));
    } else if (L->reset_after) {
        /* acc: r, z (x and h parts), n's h part (+ b_hn); xn: n's x part (+ b_in). */
        vf xn[BG_MAX][4], xn2[BG_MAX][4];
        init_acc(BG, 0, 2, L->bias, xp, ldxp, Hp, u0, acc, acc2);
        init_acc(BG, 2, 1, L->bias, xp, ldxp, Hp, u0, xn, xn2);
        for (int r = 0; r < BG; r++)
            acc[r][2] = v_load(L->bias_hn + u0);
        if (x) {
            accumulate(BG, WT, 3, 0, 2, w, w0, L->I, x, ldx, acc, acc2);
            accumulate(BG, WT, 3, 2, 1, w, w0, L->I, x, ldx, xn, xn2);
            fold(BG, 1, xn, xn2);
        }
        for (int r = 0; r < BG; r++)
            acc2[r][2] = v_zero();
        if (GATES_PER_PASS >= 3 || BG <= 2) {
            accumulate(BG, WT, 3, 0, 3, w, wh, L->R, h, ldh, acc, acc2);
            fold(BG, 3, acc, acc2);
        } else { /* r, z then n: each pass keeps at most 2 gates x BG rows in registers */
            vf hn[BG_MAX][4], hn2[BG_MAX][4];
            for (int r = 0; r < BG; r++) {
                hn[r][0] = acc[r][2];
                hn2[r][0] = v_zero();
            }
            accumulate(BG, WT, 3, 0, 2, w, wh, L->R, h, ldh, acc, acc2);
            fold(BG, 2, acc, acc2);
            accumulate(BG, WT, 3, 2, 1, w, wh, L->R, h, ldh, hn, hn2);
            fold(BG, 1, hn, hn2);
            for (int r = 0; r < BG; r++)
                acc[r][2] = hn[r][0];
        }
        for (int r = 0; r < BG; r++) {
            vf rg = ract_of(L, acc[r][0]), z = ract_of(L, acc[r][1]);
            vf n = act_of(L, v_fmadd(rg, acc[r][2], xn[r][0]));
            vf hp = v_load(h + r * ldh + u0);
            v_store(h_out + r * Hp + u0, v_fmadd(z, v_sub(hp, n), n));
        }
    } else if (phase == 0) {
        init_acc(BG, 0, 2, L->bias, xp, ldxp, Hp, u0, acc, acc2);
        gate_sums(BG, WT, 3, 0, 2, L, w, w0, wh, x, ldx, h, ldh, acc, acc2);
        for (int r = 0; r < BG; r++) {
            v_store(rh + r * Hp + u0, v_mul(ract_of(L, acc[r][0]), v_load(h + r * ldh + u0)));
            v_store(zs + r * Hp + u0, ract_of(L, acc[r][1]));
        }
    } else {
        init_acc(BG, 2, 1, L->bias, xp, ldxp, Hp, u0, acc, acc2);
        gate_sums(BG, WT, 3, 2, 1, L, w, w0, wh, x, ldx, rh, Hp, acc, acc2);
        for (int r = 0; r < BG; r++) {
            vf n = act_of(L, acc[r][0]), z = v_load(zs + r * Hp + u0);
            vf hp = v_load(h + r * ldh + u0);
            v_store(h_out + r * Hp + u0, v_fmadd(z, v_sub(hp, n), n));
        }
    }
}

#define TILE_ROWS(BG) cell_tile(BG, WT, L, phase, u0, x ? x + b * ldx : NULL, ldx, \
                                xp ? xp + b * ldxp : NULL, ldxp, h + b * ldh, ldh, \
                                c ? c + b * Hp : NULL, h_out + b * Hp, rh + b * Hp, \
                                zs + b * Hp)

/* Prefetches what the row group after rows [.., b) of tile u0 loads before its FMA chains
 * can start or its state update can finish: the projected inputs (G lines per row, Hp floats
 * apart) and the LSTM cell state (a line per row), which the hardware prefetchers miss once a
 * step streams more weights than L2 keeps beside them. The group is rows [b, b + BG_MAX) of
 * the same tile, or past the last row the first group of the next tile. Measured (issue 14,
 * Zen 4, in one process): AVX2 LSTM 512->256 B=16 1.02-1.06x, 1->512 B=48 1.00-1.04x, AVX-512
 * 256->512 B=64 1.00-1.03x; 64->64 B=24 (128 KB of weights) 0.98-0.99x, hence the threshold. */
#define LF_PREFETCH_MIN_BYTES (512 * 1024)
LF_INLINE void prefetch_group(const lf_cell *L, const float *xp, ptrdiff_t ldxp,
                              const float *c, int32_t u0, int32_t b, int32_t B)
{
    if (!xp && !c)
        return;
    if (b >= B) {
        if (u0 + VW >= L->u_hi)
            return;
        u0 += VW;
        b = 0;
    }
    const int32_t end = b + BG_MAX < B ? b + BG_MAX : B;
    for (; b < end; b++) {
        if (xp)
            for (int32_t g = 0; g < L->G; g++)
                __builtin_prefetch(xp + b * ldxp + (ptrdiff_t)g * L->Hp + u0);
        if (c)
            __builtin_prefetch(c + (ptrdiff_t)b * L->Hp + u0, 1);
    }
}

LF_INLINE void cell_packed_wt(const int WT, const lf_cell *L, int32_t B,
                              const float *x, ptrdiff_t ldx, const float *xp, ptrdiff_t ldxp,
                              const float *h, float *c, float *h_out, float *scratch)
{
    const ptrdiff_t Hp = L->Hp, ldh = L->Rp;
    float *rh = scratch, *zs = scratch ? scratch + (size_t)B * Hp : NULL;
    const int phases = L->kind == LF_LAYER_GRU && !L->reset_after ? 2 : 1;
    const int pf = lf_cell_step_bytes(L) >= LF_PREFETCH_MIN_BYTES;
    const float *pxp = pf ? xp : NULL, *pc = pf ? c : NULL;
    for (int phase = 0; phase < phases; phase++)
        for (int32_t u0 = L->u_lo; u0 < L->u_hi; u0 += VW) {
            int32_t b = 0;
            for (; b + BG_MAX <= B; b += BG_MAX) {
                prefetch_group(L, pxp, ldxp, pc, u0, b + BG_MAX, B);
                TILE_ROWS(BG_MAX);
            }
            if (b < B)
                prefetch_group(L, pxp, ldxp, pc, u0, B, B);
            switch (B - b) {
#if BG_MAX > 5
            case 5: TILE_ROWS(5); break;
#endif
#if BG_MAX > 4
            case 4: TILE_ROWS(4); break;
#endif
#if BG_MAX > 3
            case 3: TILE_ROWS(3); break;
#endif
#if BG_MAX > 2
            case 2: TILE_ROWS(2); break;
#endif
            case 1: TILE_ROWS(1); break;
            default: break;
            }
        }
}

static void KSUFFIX(cell_packed)(const lf_cell *L, int32_t B,
                                 const float *x, ptrdiff_t ldx, const float *xp, ptrdiff_t ldxp,
                                 const float *h, float *c, float *h_out, float *scratch)
{
    switch (L->wtype) {
    case LF_WEIGHTS_F16: cell_packed_wt(WT_F16, L, B, x, ldx, xp, ldxp, h, c, h_out, scratch); break;
    case LF_WEIGHTS_BF16: cell_packed_wt(WT_BF16, L, B, x, ldx, xp, ldxp, h, c, h_out, scratch); break;
    default: cell_packed_wt(WT_F32, L, B, x, ldx, xp, ldxp, h, c, h_out, scratch); break;
    }
}

/* A(t, s, g) += w[t * tile + g * VW] * a for every tile t and gate g (chain s). */
LF_INLINE void fma_tiles(const int NT, const int S, const int s, const int WT,
                         const void *restrict w, size_t w0, size_t tile, vf a, vf acc[16])
{
    LF_UNROLL
    for (int t = 0; t < NT; t++)
        LF_UNROLL
        for (int g = 0; g < 4; g++)
            acc[(t * S + s) * 4 + g] = v_fmadd(v_loadw(WT, w, w0 + t * tile + g * VW), a,
                                               acc[(t * S + s) * 4 + g]);
}

/* One LSTM row over n steps with h and c held in registers (NT tiles): each step's NT*4*S gate
 * accumulators stay in registers, each dot product runs as S interleaved chains, and h's lanes
 * are broadcast from registers, so a small layer's step is bound by the activations' latency
 * rather than by a long FMA chain or a store-to-load round trip. */
LF_INLINE void lstm_seq_tiles(const int NT, const int S, const int DEF, const int WT,
                              const lf_cell *restrict L,
                              int32_t n,
                              const float *x, ptrdiff_t ldx, const float *xp, ptrdiff_t ldxp,
                              const float *h, float *c, float *out, ptrdiff_t ldo)
{
    const int32_t I = L->I, R = L->R, Hp = L->Hp;
    const size_t row = 4 * VW, tile = (size_t)(I + R) * row;
    const void *w = packed_of(WT, L);
    vf hv[4], cv[4], acc[16]; /* NT * S * 4 <= 16: tile t, chain s, gate g at A(t, s, g) */
#define A(t, s, g) acc[((t) * S + (s)) * 4 + (g)]
    LF_UNROLL
    for (int t = 0; t < NT; t++) {
        hv[t] = v_load(h + t * VW);
        cv[t] = v_load(c + t * VW);
    }
    for (int32_t step = 0; step < n; step++) {
        const float *xs = x ? x + step * ldx : NULL, *ps = xp ? xp + step * ldxp : NULL;
        LF_UNROLL
        for (int t = 0; t < NT; t++)
            LF_UNROLL
            for (int g = 0; g < 4; g++) {
                vf b = v_load(L->bias + g * Hp + t * VW);
                A(t, 0, g) = ps ? v_add(b, v_load(ps + g * Hp + t * VW)) : b;
                LF_UNROLL
                for (int s = 1; s < S; s++)
                    A(t, s, g) = v_zero();
            }
        if (xs) {
            int32_t k = 0;
            for (; k + S <= I; k += S)
                LF_UNROLL
                for (int s = 0; s < S; s++)
                    fma_tiles(NT, S, s, WT, w, (k + s) * row, tile, v_set1(xs[k + s]), acc);
            for (; k < I; k++)
                fma_tiles(NT, S, 0, WT, w, k * row, tile, v_set1(xs[k]), acc);
        }
        const size_t wh = (size_t)I * row;
        LF_UNROLL
        for (int th = 0; th < NT; th++) {
            const int32_t lim = R - th * VW < VW ? R - th * VW : VW;
            const size_t wt0 = wh + (size_t)th * VW * row;
            int32_t j = 0;
            for (; j + S <= lim; j += S)
                LF_UNROLL
                for (int s = 0; s < S; s++)
                    fma_tiles(NT, S, s, WT, w, wt0 + (j + s) * row, tile, v_lane(hv[th], j + s),
                              acc);
            for (; j < lim; j++)
                fma_tiles(NT, S, 0, WT, w, wt0 + j * row, tile, v_lane(hv[th], j), acc);
        }
        float *o = out + step * ldo;
        LF_UNROLL
        for (int t = 0; t < NT; t++) {
            vf gate[4];
            LF_UNROLL
            for (int g = 0; g < 4; g++) {
                gate[g] = A(t, 0, g);
                if (S == 4)
                    gate[g] = v_add(v_add(gate[g], A(t, 1, g)), v_add(A(t, 2, g), A(t, 3, g)));
                else if (S == 2)
                    gate[g] = v_add(gate[g], A(t, 1, g));
            }
            hv[t] = lstm_cell(L, DEF, gate[0], gate[1], gate[2], gate[3], &cv[t]);
            v_store(o + t * VW, hv[t]);
        }
    }
    LF_UNROLL
    for (int t = 0; t < NT; t++)
        v_store(c + t * VW, cv[t]);
#undef A
}

/* acc[t][g] += w[t * tile + k * row + g * VW] * v[k] for k < K: NB tiles of 4 gates. */
LF_INLINE void fma_rows(const int NB, vf acc[][4], const float *restrict w, size_t tile,
                        size_t row, const float *v, int32_t K)
{
    for (int32_t k = 0; k < K; k++) {
        const vf a = v_set1(v[k]);
        LF_UNROLL
        for (int t = 0; t < NB; t++)
            LF_UNROLL
            for (int g = 0; g < 4; g++)
                acc[t][g] = v_fmadd(v_load(w + t * tile + k * row + g * VW), a, acc[t][g]);
    }
}

/* Tiles [u0 / VW, u0 / VW + NB) of one LSTM step on one row: the NB*4 gate accumulators in
 * registers over x (if non-NULL) and h (R floats, read from memory), then the state update:
 * c loaded and stored once, h' stored to o. */
LF_INLINE void lstm_row_block(const int NB, const int DEF, const lf_cell *restrict L,
                              int32_t u0, const float *restrict xs, const float *restrict ps,
                              const float *hp, float *restrict c, float *o)
{
    const int32_t I = L->I, R = L->R, Hp = L->Hp;
    const size_t row = 4 * VW, tile = (size_t)(I + R) * row;
    const float *restrict wb = L->packed + (size_t)(u0 / VW) * tile;
    vf acc[NB][4];
    LF_UNROLL
    for (int t = 0; t < NB; t++)
        LF_UNROLL
        for (int g = 0; g < 4; g++) {
            vf b = v_load(L->bias + g * Hp + u0 + t * VW);
            acc[t][g] = ps ? v_add(b, v_load(ps + g * Hp + u0 + t * VW)) : b;
        }
    if (xs)
        fma_rows(NB, acc, wb, tile, row, xs, I);
    fma_rows(NB, acc, wb + (size_t)I * row, tile, row, hp, R);
    LF_UNROLL
    for (int t = 0; t < NB; t++) {
        vf cv = v_load(c + u0 + t * VW);
        v_store(o + u0 + t * VW, lstm_cell(L, DEF, acc[t][0], acc[t][1], acc[t][2], acc[t][3],
                                           &cv));
        v_store(c + u0 + t * VW, cv);
    }
}

/* One LSTM row over n steps for any Hp: each step reads h back from the previous step's output
 * row (L1) and runs the tiles in blocks of NB (lstm_row_block): enough independent chains to
 * keep both FMA pipes busy, few enough not to spill. The cost grows with the weights, without
 * the register-resident kernel's limit of 4 tiles. h (R floats) must not overlap out. */
LF_INLINE void lstm_seq_blocked(const int NB, const int DEF, const lf_cell *restrict L,
                                int32_t n, const float *x, ptrdiff_t ldx, const float *xp,
                                ptrdiff_t ldxp, const float *h, float *c, float *out,
                                ptrdiff_t ldo)
{
    const int32_t Hp = L->Hp;
    const float *hp = h;
    for (int32_t step = 0; step < n; step++) {
        const float *xs = x ? x + step * ldx : NULL, *ps = xp ? xp + step * ldxp : NULL;
        float *o = out + step * ldo;
        int32_t u0 = 0;
        for (; u0 + NB * VW <= Hp; u0 += NB * VW)
            lstm_row_block(NB, DEF, L, u0, xs, ps, hp, c, o);
        for (; u0 < Hp; u0 += VW)
            lstm_row_block(1, DEF, L, u0, xs, ps, hp, c, o);
        hp = o;
    }
}

/* lstm_seq_blocked for float32 weights in blocks of 2 tiles (8 accumulators: both FMA pipes
 * busy, no spill on 16 registers), kept out of lstm_seq_one: inlined there it changed the code
 * of the register kernels (measured: AVX-512 LSTM 16->16 77 -> 145 ns per frame). */
static __attribute__((noinline)) void KSUFFIX(lstm_seq_rows)(
    const lf_cell *L, int32_t n, const float *x, ptrdiff_t ldx, const float *xp, ptrdiff_t ldxp,
    const float *h, float *c, float *out, ptrdiff_t ldo)
{
    if (L->default_acts)
        lstm_seq_blocked(2, 1, L, n, x, ldx, xp, ldxp, h, c, out, ldo);
    else
        lstm_seq_blocked(2, 0, L, n, x, ldx, xp, ldxp, h, c, out, ldo);
}

static void KSUFFIX(lstm_seq_one)(const lf_cell *L, int32_t n, const float *x, ptrdiff_t ldx,
                                  const float *xp, ptrdiff_t ldxp, const float *h, float *c,
                                  float *out, ptrdiff_t ldo)
{
    /* Measured (512-frame chunks): the register kernel wins up to 4 tiles with 32 registers,
     * up to 2 with 16 (at 4 tiles its 16 accumulators plus h and c spill: AVX2 LSTM 1->32
     * 297 -> 196 ns per frame on the blocked kernel); the blocked kernel beyond. */
    if (L->Hp > (VW >= 16 ? 4 : 2) * VW) {
        KSUFFIX(lstm_seq_rows)(L, n, x, ldx, xp, ldxp, h, c, out, ldo);
        return;
    }
#define SEQ_WT(NT, S, WT) \
    (L->default_acts ? lstm_seq_tiles(NT, S, 1, WT, L, n, x, ldx, xp, ldxp, h, c, out, ldo) \
                     : lstm_seq_tiles(NT, S, 0, WT, L, n, x, ldx, xp, ldxp, h, c, out, ldo))
/* float32 weights only: recurrent.c sends narrow-weight cells to cell_packed (measured: a small
 * cell's weights sit in L1, where narrow weights save no time, and each weight type would
 * triple this function's instantiations and the build time). */
#define SEQ_TILES(NT, S) SEQ_WT(NT, S, WT_F32)
    switch (L->Hp / VW) {
    case 1: SEQ_TILES(1, 4); break;
    case 2: SEQ_TILES(2, 2); break;
    case 3: SEQ_TILES(3, 1); break;
    case 4: SEQ_TILES(4, 1); break;
    default: break;
    }
#undef SEQ_TILES
#undef SEQ_WT
}

#ifdef LF_BLAS_RECURRENCE
static void KSUFFIX(lstm_pointwise)(const lf_cell *L, int32_t B, const float *gates,
                                    float *c, float *h_out)
{
    const int32_t Hp = L->Hp;
    const float *bias = L->bias;
    for (int32_t b = 0; b < B; b++) {
        const float *gb = gates + (size_t)b * 4 * Hp;
        for (int32_t u = 0; u < Hp; u += VW)
            lstm_update(L, v_add(v_load(gb + u), v_load(bias + u)),
                        v_add(v_load(gb + Hp + u), v_load(bias + Hp + u)),
                        v_add(v_load(gb + 2 * Hp + u), v_load(bias + 2 * Hp + u)),
                        v_add(v_load(gb + 3 * Hp + u), v_load(bias + 3 * Hp + u)),
                        c + (size_t)b * Hp + u, h_out + (size_t)b * Hp + u);
    }
}

static void KSUFFIX(gru_pointwise)(const lf_cell *L, int32_t B, const float *gates,
                                   const float *xn, const float *h, float *h_out)
{
    const int32_t Hp = L->Hp, Rp = L->Rp;
    const float *bias = L->bias;
    for (int32_t b = 0; b < B; b++) {
        const float *gb = gates + (size_t)b * 3 * Hp, *xb = xn + (size_t)b * Hp;
        for (int32_t u = 0; u < Hp; u += VW) {
            vf r = ract_of(L, v_add(v_load(gb + u), v_load(bias + u)));
            vf z = ract_of(L, v_add(v_load(gb + Hp + u), v_load(bias + Hp + u)));
            vf n = act_of(L, v_fmadd(r, v_add(v_load(gb + 2 * Hp + u), v_load(L->bias_hn + u)),
                                     v_add(v_load(xb + u), v_load(bias + 2 * Hp + u))));
            vf hp = v_load(h + (size_t)b * Rp + u);
            v_store(h_out + (size_t)b * Hp + u, v_fmadd(z, v_sub(hp, n), n));
        }
    }
}
#endif

/* y (rows, ld) = x · w_t + bias, VW output columns at a time. */
/* Columns [j, j + VW) of RB rows of y = x · W + bias (dense_small), W of type WT: two chains
 * of FMAs per row (even and odd k); int8 sums are scaled once per column. */
LF_INLINE void dense_strip_wt(const int WT, const int RB, const lf_matrix *restrict W,
                              const float *restrict bias, int32_t in, int32_t ld, int32_t j,
                              const float *restrict x, ptrdiff_t ldx, float *restrict y)
{
    const void *restrict w = W->w;
    vf acc[RB][2];
    LF_UNROLL
    for (int r = 0; r < RB; r++) {
        acc[r][0] = WT == WT_I8 ? v_zero() : v_load(bias + j);
        acc[r][1] = v_zero();
    }
    int32_t k = 0;
    for (; k + 1 < in; k += 2) {
        const vf w0 = v_loadw(WT, w, (size_t)k * ld + j);
        const vf w1 = v_loadw(WT, w, (size_t)(k + 1) * ld + j);
        LF_UNROLL
        for (int r = 0; r < RB; r++) {
            acc[r][0] = v_fmadd(w0, v_set1(x[r * ldx + k]), acc[r][0]);
            acc[r][1] = v_fmadd(w1, v_set1(x[r * ldx + k + 1]), acc[r][1]);
        }
    }
    if (k < in) {
        const vf w0 = v_loadw(WT, w, (size_t)k * ld + j);
        LF_UNROLL
        for (int r = 0; r < RB; r++)
            acc[r][0] = v_fmadd(w0, v_set1(x[r * ldx + k]), acc[r][0]);
    }
    LF_UNROLL
    for (int r = 0; r < RB; r++) {
        const vf sum = v_add(acc[r][0], acc[r][1]);
        v_store(y + (size_t)r * ld + j,
                WT == WT_I8 ? v_fmadd(sum, v_load(W->scale + j), v_load(bias + j)) : sum);
    }
}

/* Rows in chunks whose inputs stay in L2 (about 128 KB); per chunk, each column strip of W
 * (in x VW weights) is read once per four rows, from L1 after the first. */
LF_INLINE void dense_wt(const int WT, const lf_matrix *restrict W, const float *restrict bias,
                        int32_t in, int32_t ld, int32_t rows, const float *restrict x,
                        ptrdiff_t ldx, float *restrict y)
{
    int32_t chunk = (32 * 1024 / in) & ~3;
    chunk = chunk < 4 ? 4 : chunk;
    for (int32_t r0 = 0; r0 < rows; r0 += chunk) {
        const int32_t r1 = rows - r0 < chunk ? rows : r0 + chunk;
        for (int32_t j = 0; j < ld; j += VW) {
            int32_t r = r0;
            for (; r + 4 <= r1; r += 4)
                dense_strip_wt(WT, 4, W, bias, in, ld, j, x + r * ldx, ldx, y + (size_t)r * ld);
            for (; r < r1; r++)
                dense_strip_wt(WT, 1, W, bias, in, ld, j, x + r * ldx, ldx, y + (size_t)r * ld);
        }
    }
}

static void KSUFFIX(dense_small)(const lf_matrix *W, const float *bias, int32_t in, int32_t ld,
                                 int32_t rows, const float *x, ptrdiff_t ldx, float *y)
{
    switch (W->type) {
    case LF_WEIGHTS_F16: dense_wt(WT_F16, W, bias, in, ld, rows, x, ldx, y); break;
    case LF_WEIGHTS_BF16: dense_wt(WT_BF16, W, bias, in, ld, rows, x, ldx, y); break;
    case LF_WEIGHTS_I8: dense_wt(WT_I8, W, bias, in, ld, rows, x, ldx, y); break;
    default: dense_wt(WT_F32, W, bias, in, ld, rows, x, ldx, y); break;
    }
}

static void KSUFFIX(bias_act)(lf_activation act, const float *bias, int32_t rows, int32_t ld,
                              float *y)
{
    for (int32_t r = 0; r < rows; r++)
        for (int32_t j = 0; j < ld; j += VW) {
            float *p = y + (size_t)r * ld + j;
            vf v = bias ? v_add(v_load(p), v_load(bias + j)) : v_load(p);
            v_store(p, v_act(act, v));
        }
}
