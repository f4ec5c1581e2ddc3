/* Times LF_RUN_PARALLEL (the engine's pool: hidden-unit split, batch halves) against the
 * serial run of one recurrent layer, interleaved rounds, medians. The crossover of
 * recurrent.c's LF_UNIT_SPLIT_MIN_BYTES / LF_UNIT_SPLIT_MAX_ROWS was picked with it.
 *   gcc -O2 -pthread -DLF_BLAS_PREFIX=scipy_ -Icsrc/include -I<openblas include> \
 *       benches/c/split_bench.c csrc/\*.c -L<openblas lib> -l<openblas> -lm -o split_bench
 *   ./split_bench KIND I H WEIGHTS B STEPS ISA [SPIN_US]
 * KIND lstm|gru|bilstm, WEIGHTS f32|f16|bf16|i8, ISA auto|avx2|portable. Prints the median time per
 * call of each mode and serial / parallel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lstm_fast.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: %s KIND I H WEIGHTS B STEPS ISA [SPIN_US]\n", argv[0]);
        return 2;
    }
    const int gru = !strcmp(argv[1], "gru"), bi = !strcmp(argv[1], "bilstm");
    const int I = atoi(argv[2]), H = atoi(argv[3]), O = bi ? 2 * H : H;
    const int B = atoi(argv[5]), T = atoi(argv[6]), G = gru ? 3 : 4;
    const char *wt = argv[4], *isa_name = argv[7];
    const lf_weights weights = !strcmp(wt, "f16") ? LF_WEIGHTS_F16 : !strcmp(wt, "bf16")
                               ? LF_WEIGHTS_BF16 : !strcmp(wt, "i8") ? LF_WEIGHTS_I8
                               : LF_WEIGHTS_F32;
    const lf_isa isa = !strcmp(isa_name, "avx2") ? LF_ISA_AVX2 : !strcmp(isa_name, "portable")
                       ? LF_ISA_PORTABLE : LF_ISA_AUTO;
    float *w = malloc(sizeof(float) * (size_t)G * H * I), *u = malloc(sizeof(float) * (size_t)G * H * H);
    for (size_t k = 0; k < (size_t)G * H * I; k++) w[k] = (float)((k * 7919 % 1000) / 1000.0 - 0.5) * 0.1f;
    for (size_t k = 0; k < (size_t)G * H * H; k++) u[k] = (float)((k * 104729 % 1000) / 1000.0 - 0.5) * 0.1f;
    lf_layer_desc d = {.kind = gru ? LF_LAYER_GRU : LF_LAYER_LSTM, .input_size = I, .units = H,
                       .w = w, .w_rec = u, .activation = LF_ACT_TANH,
                       .recurrent_activation = LF_ACT_SIGMOID,
                       .flags = gru ? LF_LAYER_RESET_AFTER : bi ? LF_LAYER_BIDIRECTIONAL : 0u,
                       .w_b = bi ? w : NULL, .w_rec_b = bi ? u : NULL, .weights = weights};
    lf_model *m;
    lf_state *s;
    if (lf_model_create(&d, 1, isa, &m) != LF_OK || lf_state_create(m, B, &s) != LF_OK)
        return 1;
    if (lf_pool_start(argc > 8 ? atoi(argv[8]) : -1) != LF_OK)
        return 1;
    const size_t ws_bytes = lf_workspace_size(m, B, T);
    void *ws = malloc(ws_bytes);
    float *x = malloc(sizeof(float) * (size_t)B * T * I), *y = malloc(sizeof(float) * (size_t)B * T * O);
    for (size_t k = 0; k < (size_t)B * T * I; k++) x[k] = (float)((k % 17) / 17.0 - 0.5);
    enum { ROUNDS = 41 };
    double t[2][ROUNDS];
    /* calls per turn: about 2 ms of work */
    int calls = 1;
    for (double t0 = now(); calls < 100000; calls *= 2) {
        lf_io io = {.steps = T, .x = x, .x_stride_batch = (ptrdiff_t)T * I, .x_stride_time = I,
                    .y = y, .y_stride_batch = (ptrdiff_t)T * O, .y_stride_time = O};
        for (int c = 0; c < calls; c++)
            lf_run(m, s, &io, ws, ws_bytes);
        if (now() - t0 > 2e-3)
            break;
        t0 = now();
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < 2; k++) {
            const int par = (r & 1) ^ k;
            lf_io io = {.steps = T, .x = x, .x_stride_batch = (ptrdiff_t)T * I,
                        .x_stride_time = I, .y = y, .y_stride_batch = (ptrdiff_t)T * O,
                        .y_stride_time = O, .flags = par ? LF_RUN_PARALLEL : 0u};
            lf_run(m, s, &io, ws, ws_bytes);  /* untimed: caches, worker awake */
            const double t0 = now();
            for (int c = 0; c < calls; c++)
                lf_run(m, s, &io, ws, ws_bytes);
            t[par][r] = (now() - t0) / calls;
        }
    qsort(t[0], ROUNDS, sizeof(double), cmp);
    qsort(t[1], ROUNDS, sizeof(double), cmp);
    const double a = t[0][ROUNDS / 2], b = t[1][ROUNDS / 2];
    const double a10 = t[0][ROUNDS / 10], b10 = t[1][ROUNDS / 10];
    printf("%s %d->%d %s B=%d steps=%d isa=%s: median serial %.2f us, parallel %.2f us, "
           "serial/parallel %.2fx (p10: %.2fx; weights %zu KB)\n", argv[1], I, H, wt, B, T,
           isa_name, a * 1e6, b * 1e6, a / b, a10 / b10, lf_model_step_weight_bytes(m) / 1024);
    lf_pool_stop();
    free(ws); free(x); free(y); free(w); free(u);
    lf_state_free(s);
    lf_model_free(m);
    return 0;
}
