#include "simd_avx2.h"
#include "kernel_cells.h"

const lf_kernels lf_kernels_avx2 = {
    .isa = LF_ISA_AVX2,
    .vw = VW,
    .packed_max_batch = INT32_MAX, /* measured: packed beats BLAS at every batch size */
    .cell_packed = cell_packed_avx2,
    .lstm_seq_one = lstm_seq_one_avx2,
    .lstm_pointwise = lstm_pointwise_avx2,
    .dense_small = dense_small_avx2,
    .bias_act = bias_act_avx2,
};
