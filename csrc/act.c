/* Scalar activations (the reference forms, and the lane-by-lane fallback of the kernels). */
#include <math.h>

#include "internal.h"

float lf_act_scalar(lf_activation act, float x)
{
    switch (act) {
    case LF_ACT_LINEAR: return x;
    case LF_ACT_RELU: return x > 0.0f ? x : (x == x ? 0.0f : x);
    case LF_ACT_RELU6: return x != x ? x : (x < 0.0f ? 0.0f : (x > 6.0f ? 6.0f : x));
    case LF_ACT_TANH: return tanhf(x);
    case LF_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case LF_ACT_HARD_SIGMOID: return x != x ? x : fminf(1.0f, fmaxf(0.0f, x / 6.0f + 0.5f));
    case LF_ACT_HARD_SIGMOID_02: return x != x ? x : fminf(1.0f, fmaxf(0.0f, 0.2f * x + 0.5f));
    case LF_ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case LF_ACT_SOFTPLUS: return x > 20.0f ? x : log1pf(expf(x));
    case LF_ACT_ELU: return x > 0.0f ? x : expm1f(x);
    case LF_ACT_SELU:
        return 1.05070098735548049f * (x > 0.0f ? x : 1.67326324235437728f * expm1f(x));
    case LF_ACT_SILU: return x / (1.0f + expf(-x));
    case LF_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case LF_ACT_EXPONENTIAL: return expf(x);
    case LF_ACT_SOFTMAX:
    case LF_ACT_LOG_SOFTMAX: break;
    }
    return x;
}

/* Softmax (or log-softmax) over the first n entries of each row, in place. */
void lf_softmax_rows(int log_out, int32_t rows, int32_t n, int32_t ld, float *y)
{
    for (int32_t r = 0; r < rows; r++) {
        float *p = y + (size_t)r * (size_t)ld, m = p[0];
        for (int32_t j = 1; j < n; j++)
            m = p[j] > m || p[j] != p[j] ? p[j] : m;
        double sum = 0.0;
        for (int32_t j = 0; j < n; j++)
            sum += exp((double)(p[j] - m));
        if (log_out) {
            const float shift = m + (float)log(sum);
            for (int32_t j = 0; j < n; j++)
                p[j] -= shift;
        } else {
            const double inv = 1.0 / sum;
            for (int32_t j = 0; j < n; j++)
                p[j] = (float)(exp((double)(p[j] - m)) * inv);
        }
    }
}
