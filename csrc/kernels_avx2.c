/* The avx2 kernel level. Every batch size steps on the packed kernels (measured: they beat
 * BLAS at every batch size), so this level has no BLAS recurrence. */
#include "internal.h"
#ifdef LF_X86
#include "simd_avx2.h"
#include "kernel_cells.h"
#define LF_I8_MODE 2
#include "kernel_int8.h"

const lf_kernels lf_kernels_avx2 = {
    .isa = LF_ISA_AVX2,
    .vw = VW,
    .cell_packed = cell_packed_avx2,
    .cell_i8 = cell_i8_avx2,
    .lstm_seq_one = lstm_seq_one_avx2,
    .packed_max_batch = INT32_MAX,
    .lstm_pointwise = NULL,
    .dense_small = dense_small_avx2,
    .bias_act = bias_act_avx2,
};
#endif
