#include "simd_avx512.h"
#include "kernel_cells.h"

const lf_kernels lf_kernels_avx512 = {
    .isa = LF_ISA_AVX512,
    .vw = VW,
    .packed_max_batch = INT32_MAX, /* measured: packed beats BLAS at every batch size */
    .cell_packed = cell_packed_avx512,
    .lstm_seq_one = lstm_seq_one_avx512,
    .lstm_pointwise = lstm_pointwise_avx512,
    .dense_small = dense_small_avx512,
    .bias_act = bias_act_avx512,
};
