/* Building a model's weights (pack.c). */
#ifndef LF_PACK_H
#define LF_PACK_H

#include "internal.h"

int32_t lf_gates_of(lf_layer_kind kind);
/* dst[r * ld + k] (or dst[k * ld + r] when transposed) = row r of src (rows x n), rounded to
 * the stored type t and widened back to float32. */
lf_status lf_round_matrix(lf_weights t, const float *src, size_t rows, size_t n, float *dst,
                          size_t ld, int transposed);
/* Cell `backward` (0: forward) of recurrent layer d, for a kernel level; adds the bytes it
 * allocates to *bytes. On failure the cell holds what was allocated (lf_free_cell). */
lf_status lf_build_cell(lf_cell *cell, const lf_layer_desc *d, int backward,
                        const lf_kernels *kernels, size_t *bytes);
void lf_free_cell(lf_cell *cell);

#endif
