/* The avx512 kernel level. Every batch size steps on the packed kernels (measured, issue 14:
 * they beat or tie OpenBLAS SkylakeX at every batch size; docs/architecture.md), so this
 * level has no BLAS recurrence, and the kernels read a chunk's inputs themselves: serial
 * split_bench, Zen 4, projected vs read in the kernel, ms: LSTM 512->256 B=16 T=128
 * 36.5-40.1 vs 32.9-33.5, 128->256 B=16 18.3 vs 16.3, 256->512 B=8 T=50 14.1 vs 12.7,
 * 256->512 B=64 T=50 108-113 vs 99-113, GRU 256->512 B=64 81.0 vs 75.0, fp16 512->256 B=16
 * 37.2-38.0 vs 31.6-33.1. (On avx2 and portable the same runs were mixed, 0.7-1.2x.) */
#include "internal.h"
#ifdef LF_X86
#include "simd_avx512.h"
#include "kernel_cells.h"
/* The int8 cell needs VNNI (vpdpbusd); lf_model_create picks the avx2 level for models with
 * int8 weights on AVX-512 CPUs without it. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512vnni")
#define LF_I8_MODE 1
#include "kernel_int8.h"
#pragma GCC pop_options

const lf_kernels lf_kernels_avx512 = {
    .isa = LF_ISA_AVX512,
    .vw = VW,
    .cell_packed = cell_packed_avx512,
    .cell_i8 = cell_i8_avx512,
    .lstm_seq_one = lstm_seq_one_avx512,
    .packed_max_batch = INT32_MAX,
    .gru_packed_max_batch = INT32_MAX,
    .fuse_inputs = 1,
    .lstm_pointwise = NULL,
    .dense_small = dense_small_avx512,
    .bias_act = bias_act_avx512,
};
#endif
