#include "simd_avx512.h"
#include "kernel_lstm.h"

const lf_kernels lf_kernels_avx512 = {
    .isa = LF_ISA_AVX512,
    .vw = VW,
    .lstm_packed = lstm_packed_avx512,
    .lstm_pointwise = lstm_pointwise_avx512,
};
