/* Building a model's weights (pack.c). */
#ifndef LF_PACK_H
#define LF_PACK_H

#include "internal.h"

int32_t lf_gates_of(lf_layer_kind kind);
/* *W = src (rows x n) stored as type t: row r of src becomes W's column r (transposed: W is
 * n rows of ld, the dense layout) or W's row r (W is rows of ld, an Embedding table); int8
 * scales are per row r of src. Padding elements are zero. Adds the bytes to *bytes; on
 * failure *W holds what was allocated (lf_free_matrix). */
lf_status lf_build_matrix(lf_weights t, const float *src, size_t rows, size_t n, size_t ld,
                          int transposed, lf_matrix *W, size_t *bytes);
void lf_free_matrix(lf_matrix *W);
/* Cell `backward` (0: forward) of recurrent layer d, for a kernel level; adds the bytes it
 * allocates to *bytes. On failure the cell holds what was allocated (lf_free_cell). */
lf_status lf_build_cell(lf_cell *cell, const lf_layer_desc *d, int backward,
                        const lf_kernels *kernels, size_t *bytes);
void lf_free_cell(lf_cell *cell);

#endif
