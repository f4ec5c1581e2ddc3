/* Activations on the vector type of the including ISA header. Cephes-style range reduction and
 * minimax polynomials: exp within 1 ulp, tanh within 2 ulp and sigmoid within 3 (checked
 * against float64 in tests/engine/test_oracle.py). NaN inputs give NaN outputs. */
#ifndef LF_SIMD_MATH_H
#define LF_SIMD_MATH_H

/* x = n ln2 + r, |r| <= ln2 / 2: returns the polynomial p with exp(r) = 1 + r + r^2 p. Estrin's
 * scheme keeps the dependency chain short: this sits on the recurrence's critical path. */
static inline vf v_exp_poly(vf x, vf *n, vf *r, vf *r2)
{
    *n = v_round(v_mul(x, v_set1(1.44269504088896341f)));
    *r = v_fnmadd(*n, v_set1(-2.12194440e-4f), v_fnmadd(*n, v_set1(0.693359375f), x));
    *r2 = v_mul(*r, *r);
    vf p01 = v_fmadd(v_set1(1.6666665459e-1f), *r, v_set1(5.0000001201e-1f));
    vf p23 = v_fmadd(v_set1(8.3334519073e-3f), *r, v_set1(4.1665795894e-2f));
    vf p45 = v_fmadd(v_set1(1.9875691500e-4f), *r, v_set1(1.3981999507e-3f));
    return v_fmadd(p45, v_mul(*r2, *r2), v_fmadd(p23, *r2, p01));
}

static inline vf v_exp(vf x)
{
    /* The clamp keeps 2^n a normal float; exp(88) < FLT_MAX, exp(-87) > FLT_MIN. */
    vf n, r, r2, p = v_exp_poly(v_max(v_set1(-87.0f), v_min(v_set1(88.0f), x)), &n, &r, &r2);
    return v_pow2n(v_fmadd(p, r2, v_add(r, v_set1(1.0f))), n);
}

static inline vf v_sigmoid(vf x)
{
    const vf one = v_set1(1.0f);
    return v_div(one, v_add(one, v_exp(v_sub(v_zero(), x))));
}

/* tanh(x) = (1 - e) / (1 + e) with e = exp(-2|x|) = 2^n (1 + q), q = expm1(r) (the
 * polynomial of v_exp without its 1): numerator fnmadd(2^n, q, 1 - 2^n) and denominator
 * fmadd(2^n, q, 1 + 2^n) round once each, so the quotient stays relative-accurate near 0
 * (n = 0: -q / (2 + q)) without a second branch (within 2 ulp, tested against float64). */
static inline vf v_tanh(vf x)
{
    /* exp(-20) is below half an ulp of 1: tanh is +-1 from there on */
    vf n, r, r2, p = v_exp_poly(v_max(v_set1(-20.0f), v_mul(v_abs(x), v_set1(-2.0f))), &n, &r, &r2);
    vf q = v_fmadd(p, r2, r);
    const vf one = v_set1(1.0f);
    vf s = v_pow2n(one, n);
    return v_copysign(v_div(v_fnmadd(s, q, v_sub(one, s)), v_fmadd(s, q, v_add(one, s))), x);
}

#endif
