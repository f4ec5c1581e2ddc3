/* The avx2 kernel level. LSTM batches of more than LF_AVX2_PACKED_MAX_BATCH rows and GRU
 * (reset-after) batches of more than LF_AVX2_GRU_PACKED_MAX_BATCH rows step on BLAS (the
 * recurrent product) + lstm_pointwise / gru_pointwise; smaller batches on the packed
 * kernels. */
#include "internal.h"
#ifdef LF_X86
/* The crossover of the LSTM recurrence, measured (issue 14; Zen 4 forced to avx2, OpenBLAS
 * Haswell kernel, 1 thread). Recurrence alone, ms per 100 steps, packed kernel (LSTM with
 * I = 1) vs cblas_sgemm of the recurrent product: H=512: B=8 31.5 vs 31.8, B=16 63 vs 55,
 * B=32 105 vs 89, B=64 215 vs 167; H=256: B=64 56 vs 36, B=256 287 vs 143. Whole layers
 * 256->512, T=100, packed vs BLAS + lstm_pointwise: B=17 80 vs 98 (an sgemm of 17 rows is
 * mostly edge), B=32 142 vs 132, B=64 308 vs 257. The packed kernel's two-row register block
 * re-reads a tile's weights from L2 for every two rows; the sgemm blocks K and rows. */
#define LF_AVX2_PACKED_MAX_BATCH 31
/* The GRU's, measured the same way (whole layers, T=100, packed vs BLAS + gru_pointwise,
 * ms, interleaved medians): 256->512: B=8 28.6 vs 31.8, B=12 44.5 vs 42.2, B=16 54.5 vs
 * 50.7, B=24 85.5 vs 73.8, B=32 131 vs 106, B=64 277 vs 209; 1->512: B=8 23.8 vs 27.0,
 * B=16 39.2 vs 39.4, B=24 71.9 vs 54.9; 256->256: B=8 10.3 vs 10.7, B=16 22.6 vs 19.1;
 * 128->128: B=8 2.13 vs 2.73, B=12 3.38 vs 3.50, B=16 4.42 vs 4.36; 64->64: B=8 0.74 vs
 * 0.79, B=16 1.22 vs 1.11 (B=12 is a tie, 0.97-1.06x). */
#define LF_AVX2_GRU_PACKED_MAX_BATCH 15
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
