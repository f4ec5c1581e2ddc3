/* The BLAS library's name and thread count, for the ABI. */
#include "blas.h"
#include "internal.h"

const char *lf_blas_core_name(void) { return LF_BLAS(openblas_get_corename)(); }
void lf_blas_set_num_threads(int32_t n) { LF_BLAS(openblas_set_num_threads)(n < 1 ? 1 : n); }
