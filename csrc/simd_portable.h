/* 8-lane vectors in plain C (the compiler maps them to SSE2). Runs on any CPU. Multiply-add
 * is not fused: fmaf is a slow library call where the CPU has no FMA. */
#include <math.h>

#include "internal.h"

#define VW 8
#define BG_MAX 2
#define GATES_PER_PASS 4
#define KSUFFIX(name) name##_portable
typedef struct { float v[VW]; } vf;

#define V_MAP1(expr) vf r; for (int l_ = 0; l_ < VW; l_++) { r.v[l_] = (expr); } return r
static inline vf v_load(const float *p) { V_MAP1(p[l_]); }
static inline void v_store(float *p, vf a) { for (int l = 0; l < VW; l++) p[l] = a.v[l]; }
static inline vf v_load_f16(const uint16_t *p) { V_MAP1(lf_f16_to_f32(p[l_])); }
static inline vf v_load_bf16(const uint16_t *p) { V_MAP1(lf_bf16_to_f32(p[l_])); }
static inline vf v_load_i8(const int8_t *p) { V_MAP1((float)p[l_]); }
static inline vf v_set1(float a) { V_MAP1(a); }
/* Every lane = lane j of a. */
static inline vf v_lane(vf a, int j) { V_MAP1(a.v[j]); }
static inline vf v_zero(void) { V_MAP1(0.0f); }
static inline vf v_add(vf a, vf b) { V_MAP1(a.v[l_] + b.v[l_]); }
static inline vf v_sub(vf a, vf b) { V_MAP1(a.v[l_] - b.v[l_]); }
static inline vf v_mul(vf a, vf b) { V_MAP1(a.v[l_] * b.v[l_]); }
static inline vf v_div(vf a, vf b) { V_MAP1(a.v[l_] / b.v[l_]); }
static inline vf v_fmadd(vf a, vf b, vf c) { V_MAP1(a.v[l_] * b.v[l_] + c.v[l_]); }
static inline vf v_fnmadd(vf a, vf b, vf c) { V_MAP1(c.v[l_] - a.v[l_] * b.v[l_]); }
static inline vf v_min(vf a, vf b) { V_MAP1(a.v[l_] < b.v[l_] ? a.v[l_] : b.v[l_]); }
static inline vf v_max(vf a, vf b) { V_MAP1(a.v[l_] > b.v[l_] ? a.v[l_] : b.v[l_]); }
static inline vf v_round(vf a) { V_MAP1(nearbyintf(a.v[l_])); }
static inline vf v_pow2n(vf y, vf n) { V_MAP1(isnan(n.v[l_]) ? n.v[l_] : ldexpf(y.v[l_], (int)n.v[l_])); }
static inline vf v_abs(vf a) { V_MAP1(fabsf(a.v[l_])); }
static inline vf v_select_lt(vf a, vf b, vf if_lt, vf otherwise)
{
    V_MAP1(a.v[l_] < b.v[l_] ? if_lt.v[l_] : otherwise.v[l_]);
}
static inline vf v_copysign(vf mag, vf sign) { V_MAP1(copysignf(mag.v[l_], sign.v[l_])); }
