/* Run-time CPU feature detection and kernel selection. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#ifdef LF_X86
#include <immintrin.h>
#include <x86intrin.h>
#include <cpuid.h>
#endif

lf_isa lf_cpu_best_isa(void)
{
#ifdef LF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return LF_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("f16c"))
        return LF_ISA_AVX2;
#endif
    return LF_ISA_PORTABLE;
}

int lf_cpu_has_vnni(void)
{
#ifdef LF_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

const lf_kernels *lf_kernels_for(lf_isa isa)
{
    switch (isa) {
#ifdef LF_X86
    case LF_ISA_AVX512: return &lf_kernels_avx512;
    case LF_ISA_AVX2: return &lf_kernels_avx2;
#endif
    default: return &lf_kernels_portable;
    }
}

#ifdef LF_X86
/* TSC ticks of n rounds of 12 independent FMA chains, zmm or ymm (latency 4 x 2 pipes needs
 * 8 in flight); the empty asm keeps the chains in registers and the loop from folding. */
#define LF_FMA12(T, FMA)                                                                    \
    T a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z, a8 = z, a9 = z, a10 = z, \
      a11 = z;                                                                              \
    const uint64_t t0 = __rdtsc();                                                          \
    for (int i = 0; i < n; i++) {                                                           \
        a0 = FMA(a0, m, z); a1 = FMA(a1, m, z); a2 = FMA(a2, m, z); a3 = FMA(a3, m, z);     \
        a4 = FMA(a4, m, z); a5 = FMA(a5, m, z); a6 = FMA(a6, m, z); a7 = FMA(a7, m, z);     \
        a8 = FMA(a8, m, z); a9 = FMA(a9, m, z); a10 = FMA(a10, m, z); a11 = FMA(a11, m, z); \
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5)); \
        __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11)); \
    }                                                                                       \
    return __rdtsc() - t0;

__attribute__((target("avx512f"), noinline)) static uint64_t fma_ticks_zmm(int n)
{
    const __m512 z = _mm512_setzero_ps(), m = _mm512_set1_ps(1.0f);
    LF_FMA12(__m512, _mm512_fmadd_ps)
}

__attribute__((target("avx2,fma"), noinline)) static uint64_t fma_ticks_ymm(int n)
{
    const __m256 z = _mm256_setzero_ps(), m = _mm256_set1_ps(1.0f);
    LF_FMA12(__m256, _mm256_fmadd_ps)
}
#undef LF_FMA12

/* Interleaved rounds, fastest of each (the clock ramps up over the first rounds, and a round
 * may be preempted). A zmm FMA taking twice the ticks of a ymm one runs at the 256-bit flop
 * rate (split in two halves, as on AMD Zen 4); the same ticks, two full-width 512-bit pipes
 * (Intel server cores: measured 24000 FMAs in 8412 vs 8246 TSC ticks, after 14000 vs 12000
 * in the first rounds). A busy SMT sibling on the host can hold a whole process at 14058 vs
 * 9810 (1.4x the flop rate, seen in 1 of 6 processes on a 2-vCPU Xeon VM), hence 1.25x. */
static int probe_fma_width(void)
{
    if (lf_cpu_best_isa() != LF_ISA_AVX512)
        return 256;
    uint64_t zmm = UINT64_MAX, ymm = UINT64_MAX;
    for (int r = 0, calm = 0; r < 512 && calm < 16; r++, calm++) {
        const uint64_t a = fma_ticks_zmm(2000), b = fma_ticks_ymm(2000);
        if (a < zmm - zmm / 64 || b < ymm - ymm / 64)
            calm = 0;   /* still speeding up: go on until 16 rounds bring no 1.5 % gain */
        zmm = a < zmm ? a : zmm;
        ymm = b < ymm ? b : ymm;
    }
    return 8 * ymm >= 5 * zmm ? 512 : 256;   /* 16 lanes per zmm: >= 1.25x the ymm flop rate */
}
#endif

int32_t lf_cpu_fma_width(void)
{
    const char *force = getenv("LSTM_FAST_FMA_WIDTH");
    if (force && (!strcmp(force, "256") || !strcmp(force, "512")))
        return atoi(force);
#ifdef LF_X86
    static _Atomic int width;   /* 0 until probed; racing probes store the same answer */
    int w = width;
    if (!w)
        width = w = probe_fma_width();
    return w;
#else
    return 256;
#endif
}

size_t lf_cpu_l2_bytes(void)
{
#ifdef LF_X86
    unsigned a, b, c, d;
    __builtin_cpu_init();
    /* CPUID leaf 4 (Intel) or 0x8000001D (AMD): the deterministic cache parameters. */
    const unsigned leaf = __builtin_cpu_is("amd") ? 0x8000001Du : 4u;
    for (unsigned i = 0; i < 8; i++) {
        __cpuid_count(leaf, i, a, b, c, d);
        if ((a & 31) == 0)
            break;
        if (((a >> 5) & 7) == 2 && (a & 31) != 2)   /* level 2, data or unified */
            return (size_t)(((b >> 22) & 1023) + 1) * (((b >> 12) & 1023) + 1)
                   * ((b & 4095) + 1) * ((size_t)c + 1);
    }
#endif
    return 1024 * 1024;
}
