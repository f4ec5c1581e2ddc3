/* Run-time CPU feature detection and kernel selection. */
#include "internal.h"

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
