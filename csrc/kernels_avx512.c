/* The avx512 kernel level. Every batch size steps on the packed kernels (measured, issue 14:
 * they beat or tie OpenBLAS SkylakeX at every batch size; docs/architecture.md), so this
 * level has no BLAS recurrence, and its kernels read a chunk's inputs themselves
 * (fuse_inputs; measured faster than the projection on Zen 4; on full-width 512-bit FMA pipes
 * cells larger than L2 project them, recurrent.c's projection_pays; docs/architecture.md). */
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
