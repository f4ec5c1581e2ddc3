#include "simd_portable.h"
#include "kernel_cells.h"

const lf_kernels lf_kernels_portable = {
    .isa = LF_ISA_PORTABLE,
    .vw = VW,
    .packed_max_batch = 8, /* measured: BLAS wins above 8 rows */
    .cell_packed = cell_packed_portable,
    .lstm_seq_one = lstm_seq_one_portable,
    .lstm_pointwise = lstm_pointwise_portable,
    .dense_small = dense_small_portable,
    .bias_act = bias_act_portable,
};
