/* The avx2 kernel level. LSTM batches of more than LF_AVX2_PACKED_MAX_BATCH rows and GRU
 * (reset-after) batches of more than LF_AVX2_GRU_PACKED_MAX_BATCH rows step on BLAS (the
 * recurrent product) + lstm_pointwise / gru_pointwise; smaller batches on the packed
 * kernels. */
#include "internal.h"
#ifdef LF_X86
/* The crossover of the LSTM recurrence, measured (issue 14; Zen 4 forced to avx2, OpenBLAS
 * Haswell kernel, 1 thread, min over rounds). Recurrence alone (LSTM with I = 1), GFLOP/s,
 * packed kernel (6 rows x 2 gates per register pass) vs cblas_sgemm of the recurrent product +
 * lstm_pointwise: H=512: B=48 87-89 vs 77-87, B=64 86-87 vs 86-88, B=96 77-82 vs 88-90; H=256:
 * B=32 83 vs 76, B=256 79 vs 83. Above 48 rows the sgemm's blocking of K and rows wins. (The
 * former 2-row x 4-gate packed kernel: H=512, B=16 74 where this one runs at 85.) */
#ifndef LF_AVX2_PACKED_MAX_BATCH
#define LF_AVX2_PACKED_MAX_BATCH 48
#endif
/* The GRU's (reset-after), whole layers 256->512, T=50, min over rounds, ms, 6-row packed
 * kernel vs BLAS + gru_pointwise: B=16 22.5 vs 23.5, B=32 44.8 vs 42.7, B=64 89.0 vs 80.9.
 * (Against the former 2-row packed kernel, T=100: B=8 28.6 vs 31.8, B=16 54.5 vs 50.7, B=24
 * 85.5 vs 73.8, B=64 277 vs 209; 64->64 B=8 0.74 vs 0.79.) */
#ifndef LF_AVX2_GRU_PACKED_MAX_BATCH
#define LF_AVX2_GRU_PACKED_MAX_BATCH 16
#endif
#define LF_BLAS_RECURRENCE 1
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
    .packed_max_batch = LF_AVX2_PACKED_MAX_BATCH,
    .gru_packed_max_batch = LF_AVX2_GRU_PACKED_MAX_BATCH,
    .lstm_pointwise = lstm_pointwise_avx2,
    .gru_pointwise = gru_pointwise_avx2,
    .dense_small = dense_small_avx2,
    .bias_act = bias_act_avx2,
};
#endif
