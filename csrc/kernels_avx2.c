/* The avx2 kernel level. LSTM batches of more than LF_AVX2_PACKED_MAX_BATCH rows step on
 * BLAS (the recurrent product) + lstm_pointwise; smaller batches on the packed kernels. */
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
#define LF_AVX2_GRU_PACKED_MAX_BATCH 31
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
