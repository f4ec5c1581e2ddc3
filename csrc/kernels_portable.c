/* The portable kernel level: plain C, any CPU. LSTM and GRU (reset-after) batches step on
 * BLAS above a few rows. */
#define LF_BLAS_RECURRENCE 1
#include "simd_portable.h"
#include "kernel_cells.h"
#define LF_I8_MODE 0
#include "kernel_int8.h"

const lf_kernels lf_kernels_portable = {
    .isa = LF_ISA_PORTABLE,
    .vw = VW,
    .cell_packed = cell_packed_portable,
    .cell_i8 = cell_i8_portable,
    .lstm_seq_one = lstm_seq_one_portable,
    .packed_max_batch = 8, /* measured: BLAS wins above 8 rows */
    .gru_packed_max_batch = 3, /* measured (GRU 64->64, 256->256): BLAS wins from 2-4 rows */
    .lstm_pointwise = lstm_pointwise_portable,
    .gru_pointwise = gru_pointwise_portable,
    .dense_small = dense_small_portable,
    .bias_act = bias_act_portable,
};
