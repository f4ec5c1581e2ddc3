/* C-level tests of the ABI, built with AddressSanitizer + UBSan by tests/test_c_engine.py.
 * A double-precision reference in this file is the oracle. Prints "N passed, M failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lstm_fast.h"

static int passed, failed;
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; \
    printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static unsigned long long rng_state = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static float *rand_array(size_t n, float scale)
{
    float *p = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Reference stacked LSTM; x (B, T, I) contiguous; y (B, T, H); h, c (L, B, H) in/out. */
static void reference(const lf_lstm_weights *w, int L, int B, int T, const float *x, double *y,
                      double *h, double *c)
{
    int H = w[0].hidden_size, I0 = w[0].input_size, imax = I0 > H ? I0 : H;
    double *in = malloc(sizeof(double) * (size_t)B * T * imax), *z = malloc(sizeof(double) * 4 * H);
    for (size_t k = 0; k < (size_t)B * T * I0; k++) in[k] = x[k];
    for (int l = 0; l < L; l++) {
        int I = w[l].input_size;
        double *hl = h + (size_t)l * B * H, *cl = c + (size_t)l * B * H;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const double *xt = in + ((size_t)b * T + t) * I;
                for (int r = 0; r < 4 * H; r++) {
                    double s = w[l].bias ? w[l].bias[r] : 0.0;
                    for (int k = 0; k < I; k++) s += (double)w[l].w_ih[(size_t)r * I + k] * xt[k];
                    for (int k = 0; k < H; k++) s += (double)w[l].w_hh[(size_t)r * H + k] * hl[b * H + k];
                    z[r] = s;
                }
                for (int u = 0; u < H; u++) {
                    double cc = sigm(z[H + u]) * cl[b * H + u] + sigm(z[u]) * tanh(z[2 * H + u]);
                    cl[b * H + u] = cc;
                    hl[b * H + u] = sigm(z[3 * H + u]) * tanh(cc);
                    y[((size_t)b * T + t) * H + u] = hl[b * H + u];
                }
            }
        /* this layer's outputs feed the next */
        for (size_t k = 0; k < (size_t)B * T * H; k++) in[k] = y[k];
    }
    free(in);
    free(z);
}

static void test_against_reference(lf_isa isa, int I, int H, int L, int B, int T, int chunk)
{
    lf_lstm_weights w[4];
    for (int l = 0; l < L; l++) {
        int in = l ? H : I;
        w[l] = (lf_lstm_weights){in, H, rand_array((size_t)4 * H * in, 0.5f),
                                 rand_array((size_t)4 * H * H, 0.5f),
                                 l % 2 ? NULL : rand_array((size_t)4 * H, 0.5f)};
    }
    lf_model *m = NULL;
    lf_state *s = NULL;
    CHECK(lf_model_create(w, L, isa, &m) == LF_OK, "create isa=%d", isa);
    CHECK(lf_state_create(m, B, &s) == LF_OK, "state");
    float *x = rand_array((size_t)B * T * I, 1.0f), *y = malloc(sizeof(float) * (size_t)B * T * H);
    double *yr = calloc((size_t)B * T * H, sizeof(double));
    double *hr = calloc((size_t)L * B * H, sizeof(double)), *cr = calloc((size_t)L * B * H, sizeof(double));
    size_t ws_bytes = lf_workspace_size(m, B, chunk);
    void *ws = malloc(ws_bytes);
    for (int t0 = 0; t0 < T; t0 += chunk) {
        int n = T - t0 < chunk ? T - t0 : chunk;
        lf_status st = lf_run(m, s, n, x + (size_t)t0 * I, (ptrdiff_t)T * I, I,
                              y + (size_t)t0 * H, (ptrdiff_t)T * H, H, LF_RUN_CHECK_FINITE, ws, ws_bytes);
        CHECK(st == LF_OK, "run: %s", lf_status_string(st));
    }
    reference(w, L, B, T, x, yr, hr, cr);
    double err = 0;
    for (size_t k = 0; k < (size_t)B * T * H; k++) err = fmax(err, fabs(y[k] - yr[k]));
    float *hs = malloc(sizeof(float) * (size_t)B * H), *cs = malloc(sizeof(float) * (size_t)B * H);
    for (int l = 0; l < L; l++) {
        CHECK(lf_state_get(s, l, hs, cs) == LF_OK, "get");
        for (size_t k = 0; k < (size_t)B * H; k++)
            err = fmax(err, fmax(fabs(hs[k] - hr[(size_t)l * B * H + k]), fabs(cs[k] - cr[(size_t)l * B * H + k])));
    }
    CHECK(err <= 1e-5, "isa=%d I=%d H=%d L=%d B=%d T=%d chunk=%d: max err %g", isa, I, H, L, B, T, chunk, err);
    free(hs); free(cs); free(ws); free(x); free(y); free(yr); free(hr); free(cr);
    lf_state_free(s);
    lf_model_free(m);
    for (int l = 0; l < L; l++) {
        free((void *)w[l].w_ih); free((void *)w[l].w_hh); free((void *)w[l].bias);
    }
}

static void test_errors(void)
{
    float wih[4 * 2 * 3] = {0}, whh[4 * 2 * 2] = {0}, x[3 * 5] = {0}, y[2 * 5];
    lf_lstm_weights w = {3, 2, wih, whh, NULL}, bad = w;
    lf_model *m = NULL, *m2 = NULL;
    lf_state *s = NULL, *s2 = NULL;
    CHECK(lf_model_create(NULL, 1, LF_ISA_AUTO, &m) == LF_E_NULL, "null layers");
    CHECK(lf_model_create(&w, 0, LF_ISA_AUTO, &m) == LF_E_INVALID_SIZE, "0 layers");
    bad.hidden_size = 0;
    CHECK(lf_model_create(&bad, 1, LF_ISA_AUTO, &m) == LF_E_INVALID_SIZE, "H = 0");
    bad = w; bad.input_size = LF_MAX_DIM + 1;
    CHECK(lf_model_create(&bad, 1, LF_ISA_AUTO, &m) == LF_E_INVALID_SIZE, "huge I");
    bad = w; bad.w_hh = NULL;
    CHECK(lf_model_create(&bad, 1, LF_ISA_AUTO, &m) == LF_E_NULL, "null w_hh");
    lf_lstm_weights two[2] = {w, w};
    CHECK(lf_model_create(two, 2, LF_ISA_AUTO, &m) == LF_E_INVALID_SIZE, "layers do not chain");
    CHECK(lf_model_create(&w, 1, (lf_isa)99, &m) == LF_E_ISA_UNAVAILABLE, "bad isa");
    CHECK(lf_model_create(&w, 1, LF_ISA_AUTO, &m) == LF_OK, "create");
    CHECK(lf_model_create(&w, 1, LF_ISA_AUTO, &m2) == LF_OK, "create 2");
    CHECK(lf_state_create(m, 0, &s) == LF_E_INVALID_SIZE, "batch 0");
    CHECK(lf_state_create(m, 1, &s) == LF_OK && lf_state_create(m2, 1, &s2) == LF_OK, "states");
    size_t need = lf_workspace_size(m, 1, 5);
    char *ws = malloc(need);
    CHECK(lf_run(m, s, 5, x, 15, 3, y, 10, 2, 0, ws, need - 1) == LF_E_WORKSPACE, "small ws");
    CHECK(lf_run(m, s, 5, x, 15, 3, y, 10, 2, 0, NULL, need) == LF_E_NULL, "null ws");
    CHECK(lf_run(m, s2, 5, x, 15, 3, y, 10, 2, 0, ws, need) == LF_E_BATCH_MISMATCH, "foreign state");
    CHECK(lf_run(m, s, -1, x, 15, 3, y, 10, 2, 0, ws, need) == LF_E_INVALID_SIZE, "negative T");
    CHECK(lf_run(m, s, 5, x, 15, 3, y, 10, 1, 0, ws, need) == LF_E_STRIDE, "overlapping y");
    CHECK(lf_run(m, s, 0, x, 15, 3, y, 10, 2, 0, ws, need) == LF_OK, "T = 0");
    x[7] = NAN;
    CHECK(lf_run(m, s, 5, x, 15, 3, y, 10, 2, LF_RUN_CHECK_FINITE, ws, need) == LF_E_NONFINITE, "nan");
    CHECK(lf_run(m, s, 5, x, 15, 3, y, 10, 2, 0, ws, need) == LF_OK, "nan unchecked");
    CHECK(isnan(y[2 * 4]), "nan propagates");
    int32_t idx[2] = {0, 1};
    CHECK(lf_state_reset(s, idx, 2) == LF_E_BATCH_MISMATCH, "reset out of range");
    CHECK(lf_state_reset(s, idx, 1) == LF_OK, "reset row 0");
    CHECK(lf_state_get(s, 1, y, y) == LF_E_INVALID_SIZE, "get bad layer");
    CHECK(lf_workspace_size(m, LF_MAX_DIM, LF_MAX_DIM) > 0, "big but representable plan");
    CHECK(lf_workspace_size(m, 0, 1) == 0, "invalid plan");
    CHECK(strcmp(lf_status_string(LF_E_NONFINITE), "input contains NaN or Inf") == 0, "message");
    free(ws);
    lf_state_free(s); lf_state_free(s2);
    lf_model_free(m); lf_model_free(m2);
    lf_model_free(NULL); lf_state_free(NULL);
}

int main(void)
{
    static const int sizes[][6] = {
        /* I, H, L, B, T, chunk */
        {1, 1, 1, 1, 1, 1}, {3, 5, 2, 1, 9, 1}, {7, 17, 2, 3, 20, 6}, {16, 16, 1, 8, 12, 12},
        {5, 33, 3, 9, 15, 4}, {40, 24, 2, 12, 30, 30}, {9, 31, 1, 1, 1100, 1100}, {2, 3, 1, 700, 3, 2},
    };
    lf_isa best = lf_cpu_best_isa();
    for (lf_isa isa = LF_ISA_PORTABLE; isa <= best; isa++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
            test_against_reference(isa, sizes[k][0], sizes[k][1], sizes[k][2], sizes[k][3],
                                   sizes[k][4], sizes[k][5]);
    test_errors();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
