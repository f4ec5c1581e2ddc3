/* Activations on the vector type of the including ISA header. Cephes-style range reduction and
 * minimax polynomials: exp within 1 ulp, sigmoid and tanh within a few ulp (tested against
 * float64). NaN inputs give NaN outputs. */
#ifndef LF_SIMD_MATH_H
#define LF_SIMD_MATH_H

static inline vf v_exp(vf x)
{
    /* The clamp keeps 2^n a normal float; exp(88) < FLT_MAX, exp(-87) > FLT_MIN. Estrin's
     * scheme keeps the polynomial's dependency chain short: these sit on the recurrence's
     * critical path. */
    x = v_max(v_set1(-87.0f), v_min(v_set1(88.0f), x));
    vf n = v_round(v_mul(x, v_set1(1.44269504088896341f)));
    vf r = v_fnmadd(n, v_set1(0.693359375f), x);
    r = v_fnmadd(n, v_set1(-2.12194440e-4f), r);
    vf r2 = v_mul(r, r);
    vf p01 = v_fmadd(v_set1(1.6666665459e-1f), r, v_set1(5.0000001201e-1f));
    vf p23 = v_fmadd(v_set1(8.3334519073e-3f), r, v_set1(4.1665795894e-2f));
    vf p45 = v_fmadd(v_set1(1.9875691500e-4f), r, v_set1(1.3981999507e-3f));
    vf p = v_fmadd(p45, v_mul(r2, r2), v_fmadd(p23, r2, p01));
    vf y = v_fmadd(p, r2, v_add(r, v_set1(1.0f)));
    return v_pow2n(y, n);
}

static inline vf v_sigmoid(vf x)
{
    const vf one = v_set1(1.0f);
    return v_div(one, v_add(one, v_exp(v_sub(v_zero(), x))));
}

/* |x| < 0.625: odd polynomial; else (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29. */
static inline vf v_tanh(vf x)
{
    vf ax = v_abs(x);
    vf s = v_mul(x, x);
    vf p = v_set1(-5.70498872745e-3f);
    p = v_fmadd(p, s, v_set1(2.06390887954e-2f));
    p = v_fmadd(p, s, v_set1(-5.37397155531e-2f));
    p = v_fmadd(p, s, v_set1(1.33314422036e-1f));
    p = v_fmadd(p, s, v_set1(-3.33332819422e-1f));
    vf small = v_fmadd(v_mul(p, s), x, x);
    const vf one = v_set1(1.0f);
    vf e = v_exp(v_mul(ax, v_set1(-2.0f)));
    vf large = v_copysign(v_div(v_sub(one, e), v_add(one, e)), x);
    return v_select_lt(ax, v_set1(0.625f), small, large);
}

#endif
