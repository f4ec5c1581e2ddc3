/* The BLAS entry points used by the engine. scipy-openblas prefixes its symbols (`scipy_`):
 * the build defines LF_BLAS_PREFIX accordingly; an unprefixed CBLAS works with an empty one. */
#ifndef LF_BLAS_H
#define LF_BLAS_H

#ifndef LF_BLAS_PREFIX
#define LF_BLAS_PREFIX
#endif
#define LF_CAT_(a, b) a##b
#define LF_CAT(a, b) LF_CAT_(a, b)
#define LF_BLAS(name) LF_CAT(LF_BLAS_PREFIX, name)

enum { LF_CBLAS_ROW_MAJOR = 101, LF_CBLAS_NO_TRANS = 111 };

void LF_BLAS(cblas_sgemm)(int order, int trans_a, int trans_b, int m, int n, int k,
                          float alpha, const float *a, int lda, const float *b, int ldb,
                          float beta, float *c, int ldc);
void LF_BLAS(openblas_set_num_threads)(int n);
int LF_BLAS(openblas_get_num_threads)(void);
char *LF_BLAS(openblas_get_corename)(void);

/* C = A·B (+ C if accumulate), row-major, no transposes. */
static inline void lf_sgemm(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                            float *c, int ldc, int accumulate)
{
    LF_BLAS(cblas_sgemm)(LF_CBLAS_ROW_MAJOR, LF_CBLAS_NO_TRANS, LF_CBLAS_NO_TRANS, m, n, k,
                         1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
}

#endif
