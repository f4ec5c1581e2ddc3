/* Recurrent layers: a cell (one direction) over the steps of a block, masked steps carried,
 * and the two-way splits run on the engine's thread pool (pool.c): the two directions of a
 * bidirectional layer, two halves of an unmasked batch, or the two halves of the hidden units
 * of a large layer stepping one or a few rows. Per block, one GEMM projects the inputs of all
 * steps; then the recurrence runs step by step on the packed SIMD kernels (or, on kernel
 * levels with a BLAS recurrence, above their packed_max_batch on BLAS + a fused pointwise
 * pass). A single step of a packed batch skips the GEMM: the packed kernel reads x and h in
 * one pass; so does every packed step on levels with fuse_inputs (avx512). Rows are
 * time-major: row t*B + b. */
#include <string.h>

#include "blas.h"
#include "run.h"

/* One recurrent step for all B rows: x projected in gates, or read by the fused kernel. */
static void cell_step(const lf_model *m, const lf_cell *L, int32_t B, const float *x,
                      ptrdiff_t ldx, float *gates, const float *h_prev, float *c, float *h_out,
                      const lf_work *w, int no_blas)
{
    const lf_kernels *k = m->kernels;
    const int G = L->G * L->Hp;
    float *h_cell = L->whr.w ? w->hc : h_out;
    if (L->wtype == LF_WEIGHTS_I8) {
        k->cell_i8(L, B, x, ldx, h_prev, c, h_cell, w->scratch);
    } else if (lf_blas_recurrence(k, L, B)) {
        /* A GRU's n keeps its h part apart from its x part (r scales it): the x part moves
         * to scratch, then the one sgemm adds h·W_hh to the three gates (measured 1.5-3%
         * faster than a second sgemm for n alone, 256->512, B=32/64). */
        const int gru = L->kind == LF_LAYER_GRU;
        const size_t Hp = (size_t)L->Hp, xn_bytes = Hp * sizeof(float);
        for (int32_t b = 0; gru && b < B; b++) {
            memcpy(w->scratch + (size_t)b * Hp, gates + (size_t)b * G + 2 * Hp, xn_bytes);
            memset(gates + (size_t)b * G + 2 * Hp, 0, xn_bytes);
        }
        lf_sgemm(B, G, L->R, h_prev, L->Rp, L->whh_t, G, gates, G, 1);
        if (gru)
            k->gru_pointwise(L, B, gates, w->scratch, h_prev, h_cell);
        else
            k->lstm_pointwise(L, B, gates, c, h_cell);
    } else {
        k->cell_packed(L, B, x, ldx, x ? NULL : gates, G, h_prev, c, h_cell, w->scratch);
    }
    if (!L->whr.w)
        return;
    if (B <= LF_DENSE_SMALL_ROWS || no_blas || L->whr.type != LF_WEIGHTS_F32)
        k->dense_small(&L->whr, L->zero, L->H, L->Rp, B, h_cell, L->Hp, h_out);
    else
        lf_sgemm(B, L->Rp, L->H, h_cell, L->Hp, L->whr.w, L->Rp, h_out, L->Rp, 0);
}

/* DIR_NO_BLAS: read inputs in the packed kernel rather than projecting them with BLAS (for
 * directions running on their own threads: BLAS may have threads of its own). DIR_SOLO: a
 * direction on its own thread that may call a single-threaded BLAS but splits no further. */
enum { DIR_REVERSE = 1, DIR_TIME_ALIGNED = 2, DIR_ZERO_OUT = 4, DIR_TRACK_LAST = 8,
       DIR_NO_BLAS = 16, DIR_SOLO = 32 };

static void run_row_range(const lf_model *m, const lf_cell *L, unsigned mode, int32_t B,
                          int32_t b0, int32_t nb, int32_t n, const float *in,
                          ptrdiff_t ld_in, float *xproj, float *h_state, float *c_state,
                          const lf_work *w, float *out);
/* A thread's part of a recurrent layer: a direction (run_cell's arguments), or rows
 * [b0, b0 + nb) of an unmasked batch (run_row_range's). */
typedef struct lf_dir_job {
    const lf_model *m;
    const lf_cell *L;
    unsigned mode;
    int32_t B, n;
    const float *in;
    ptrdiff_t ld;
    const unsigned char *mask;
    float *h, *c, *lastout, *out;
    const lf_work *w;
    int32_t b0, nb;
    float *xproj;
} lf_dir_job;

static void run_row_range_job(void *arg);

/* Floating-point work of a layer below which a second thread costs more than it saves. */
#define LF_PARALLEL_MIN_FLOPS 2e6

/* Rows of a block's input projection: rows (r = t*B + b) of `in` times W_ih into xproj. */
typedef struct lf_proj_job {
    const lf_cell *L;
    int32_t rows;
    const float *in;
    ptrdiff_t ld;
    float *xproj;
} lf_proj_job;

static void project_rows(void *arg)
{
    const lf_proj_job *j = arg;
    const int G = j->L->G * j->L->Hp;
    lf_sgemm(j->rows, G, j->L->I, j->in, (int)j->ld, j->L->wih_t, G, j->xproj, G, 0);
}

/* The input projection of `rows` rows; with `two` (a second thread may run BLAS, see
 * run_cell) and enough work, the second half of the rows on the pool's worker (or after the
 * first if the pool is busy). */
static void project(const lf_cell *L, int32_t rows, const float *in, ptrdiff_t ld,
                    float *xproj, int two)
{
    const size_t G = (size_t)L->G * (size_t)L->Hp;
    const int halves = two && rows >= 2 && 2.0 * rows * G * L->I >= LF_PARALLEL_MIN_FLOPS;
    const int32_t r0 = halves ? rows / 2 : rows;
    lf_proj_job first = {L, r0, in, ld, xproj};
    lf_proj_job second = {L, rows - r0, in + (ptrdiff_t)r0 * ld, ld, xproj + (size_t)r0 * G};
    const int pooled = halves && lf_pool_begin(project_rows, &second);
    project_rows(&first);
    if (pooled)
        lf_pool_end();
    else if (halves)
        project_rows(&second);
}

/* Whether OpenBLAS runs each call on the calling thread: only then may two threads of a
 * split call it at once (with more BLAS threads, concurrent calls queue for its workers and
 * its workers spin on the cores the halves use; measured 4-10x slower on a busy machine). */
static int blas_single_threaded(void)
{
    return LF_BLAS(openblas_get_num_threads)() == 1;
}

/* On fuse_inputs levels (avx512) the packed kernels read a chunk's inputs next to h. Where the
 * FMA pipes are full-width 512-bit (lf_cpu_fma_width), the kernel runs at twice the FMA rate
 * of Zen 4 through an L2 of the same speed, and a cell whose step weights (W_ih and W_hh) do
 * not stay in L2 is bound by streaming them: projecting x for the whole chunk by one GEMM
 * (OpenBLAS SkylakeX, ~190 GFLOP/s there) leaves the step only W_hh. Measured on an Intel
 * Xeon (2 MB L2, 1 thread, 128-step chunks, fused / projected time): LSTM 512->256 B=4 2.23x,
 * B=16 1.25x, B=32 1.08x, B=64 0.99x; 256->256 B=4 1.48x, B=32 1.02x, B=64 0.95x; 512->512
 * B=8 1.32x, B=48 0.96x; GRU 512->256 B=8 1.70x, B=32 1.24x; cells within L2 (64->64,
 * 128->128, 128->256 at 1.5 MB) 0.85-1.08x; bidirectional 512->256 B=16 on 2 threads 1.28x.
 * On Zen 4 (256-bit FMA pipes) reading x won everywhere (docs/architecture.md). */
#define LF_PROJECT_MAX_ROWS 32
static int projection_pays(const lf_model *m, const lf_cell *L, int32_t B)
{
    return B <= LF_PROJECT_MAX_ROWS && L->wtype != LF_WEIGHTS_I8
           && lf_cell_step_bytes(L) > m->project_min_bytes;
}

/* The hidden-unit split (LF_RUN_PARALLEL, one or a few unmasked rows): each of the two
 * threads computes half of the units of every step, reading x and the whole h, so each
 * core streams only its half of the packed weights (and keeps it in its own L2 when it
 * fits); a spinning barrier per step hands the new h to both. It pays once one thread's
 * step no longer reads its weights from its own L2 (1 MB per core on Zen 4, 512 KB on Zen
 * 3): below, a step takes a few microseconds and the hand-over and the barrier (~1-2 us)
 * eat the gain. Measured on Zen 4 (docs/architecture.md; a shared, loaded machine, so
 * provisional): 256->512 fp32 (6 MB) and int8 (1.5 MB) steps 1.5-1.7x, 64->128 fp32
 * (384 KB) 0.4x. Above LF_UNIT_SPLIT_MAX_ROWS rows the batch halves take over. */
#define LF_UNIT_SPLIT_MIN_BYTES (1024 * 1024)
#define LF_UNIT_SPLIT_MAX_ROWS 4
/* A chunk with more than this many steps left waits up to LF_UNIT_SPLIT_WAIT_NS for a worker
 * waking from its sleep (tens of microseconds) before running alone: measured, a 100-step
 * 256->512 chunk otherwise ran alone on the slower per-step path (0.73x the serial run). */
#define LF_UNIT_SPLIT_WAIT_STEPS 4
#define LF_UNIT_SPLIT_WAIT_NS 300000

/* The two threads' shares of a hidden-unit split of run_row_range's steps. */
typedef struct lf_unit_split {
    const lf_model *m;
    const lf_cell *L;
    unsigned mode;
    int32_t B, n;
    const float *in;
    ptrdiff_t ld;
    const float *h;
    float *c, *out;
    const lf_work *w[2];
    int32_t u_split;        /* thread 0: units [0, u_split), thread 1: [u_split, Hp) */
    lf_barrier barrier;
} lf_unit_split;

/* Whether B rows of cell L step faster split by hidden units (see LF_UNIT_SPLIT_MIN_BYTES).
 * Not for projected LSTMs (the projection needs all units) nor GRU reset-before (its two
 * phases would need a second barrier per step). */
static int unit_split_pays(const lf_kernels *k, const lf_cell *L, int32_t B, int32_t n)
{
    /* A float chunk of several steps stays on one thread: its one GEMM projects every
     * step's x, so a step reads only W_hh, and two cores reading halves of W_ih and W_hh
     * per step measured slower (256->512, 100 steps: fp32 0.71x, fp16 0.70x; int8, which
     * reads x in its kernel either way, 1.9-2.3x). */
    if (n > 1 && L->wtype != LF_WEIGHTS_I8)
        return 0;
    return B <= LF_UNIT_SPLIT_MAX_ROWS && !L->whr.w && L->Hp >= 2 * k->vw
           && !(L->kind == LF_LAYER_GRU && !L->reset_after) && !lf_blas_recurrence(k, L, B)
           && lf_cell_step_bytes(L) >= LF_UNIT_SPLIT_MIN_BYTES;
}

/* Thread `part`'s units of every step of a hidden-unit split (inputs read in the kernel).
 * The caller's part (0) meets the worker's at a barrier after each step; if the worker has
 * not started by then (its core busy), the caller takes its part back (lf_pool_reclaim) and
 * runs every unit itself from there on. */
static void run_unit_part(lf_unit_split *s, int part)
{
    lf_cell view = *s->L;
    if (part)
        view.u_lo = s->u_split;
    else
        view.u_hi = s->u_split;
    const size_t Rp = (size_t)view.Rp;
    const int32_t B = s->B;
    const float *h_prev = s->h;
    int alone = 0;
    for (int32_t p = 0; p < s->n; p++) {
        const int32_t t = (s->mode & DIR_REVERSE) ? s->n - 1 - p : p;
        float *h_out = s->out + (size_t)((s->mode & DIR_TIME_ALIGNED) ? t : p) * B * Rp;
        const float *x = s->in + (ptrdiff_t)t * B * s->ld;
        cell_step(s->m, &view, B, x, s->ld, NULL, h_prev, s->c, h_out, s->w[part], 1);
        if (!part && !alone
            && lf_pool_reclaim_after(s->n - p > LF_UNIT_SPLIT_WAIT_STEPS ? LF_UNIT_SPLIT_WAIT_NS
                                                                         : 0)) {
            alone = 1;      /* this step's other half, then every unit */
            view.u_lo = s->u_split;
            view.u_hi = s->L->Hp;
            cell_step(s->m, &view, B, x, s->ld, NULL, h_prev, s->c, h_out, s->w[0], 1);
            view.u_lo = 0;
        } else if (!alone && p + 1 < s->n) {
            lf_barrier_wait(&s->barrier);
        }
        h_prev = h_out;
    }
}

static void run_unit_part1(void *arg) { run_unit_part(arg, 1); }

/* The steps of an unmasked batch of B <= LF_UNIT_SPLIT_MAX_ROWS rows split by hidden units:
 * the second half on the pool's worker, or, if the pool is busy, the whole on this thread
 * with the same kernels (the same bits: each unit's arithmetic does not depend on the
 * split). */
static void run_unit_split(const lf_model *m, const lf_cell *L, unsigned mode, int32_t B,
                           int32_t n, const float *in, ptrdiff_t ld_in, float *h_state,
                           float *c_state, const lf_work *w, float *out)
{
    const size_t Rp = (size_t)L->Rp;
    const int32_t vw = m->kernels->vw, tiles = L->Hp / vw;
    lf_unit_split s = {m, L, mode, B, n, in, ld_in, h_state, c_state, out, {w, w->second},
                       (tiles + 1) / 2 * vw, {0, 0, 2}};
    if (!lf_pool_begin(run_unit_part1, &s)) {
        run_row_range(m, L, mode | DIR_NO_BLAS, B, 0, B, n, in, ld_in, NULL, h_state, c_state,
                      w, out);
        return;
    }
    run_unit_part(&s, 0);
    lf_pool_end();
    const int32_t last = (mode & (DIR_TIME_ALIGNED | DIR_REVERSE))
                         == (DIR_TIME_ALIGNED | DIR_REVERSE) ? 0 : n - 1;
    memcpy(h_state, out + (size_t)last * B * Rp, (size_t)B * Rp * sizeof(float));
}

/* One cell over n steps. Input rows r = t*B + b at in + r*ld_in; outputs (n*B, Rp) to out,
 * in processing order or (DIR_TIME_ALIGNED) at their step's row. mask (n*B bytes, 0 =
 * masked) may be NULL. Masked steps carry the state and output 0 (DIR_ZERO_OUT) or the
 * previous output; lastout keeps the last valid output (DIR_TRACK_LAST). */
static void run_cell(const lf_model *m, const lf_cell *L, unsigned mode, int32_t B, int32_t n,
                     const float *in, ptrdiff_t ld_in, const unsigned char *mask,
                     float *h_state, float *c_state, float *lastout, const lf_work *w,
                     float *out)
{
    const size_t Rp = (size_t)L->Rp, Hp = (size_t)L->Hp, G = (size_t)L->G * Hp;
    const size_t hb = Rp * sizeof(float), cb = Hp * sizeof(float);
    const int packed = !lf_blas_recurrence(m->kernels, L, B);
    /* Rows sorted by length: the valid rows of a step are a prefix; only they are computed,
     * each step reading its inputs directly (no projection of padded rows). */
    const int prefix = mask && w->perm && packed;
    const int no_blas = (mode & DIR_NO_BLAS) && packed;
    /* Rows are independent: with a second thread's buffers and enough work, one or a few
     * rows of a large layer split its hidden units, and the two halves of a larger unmasked
     * batch run their whole sequences on two threads. On the packed kernels each thread
     * reads its inputs in the kernel (no BLAS: its threads would spin on the cores the
     * halves use); on the BLAS recurrence (only with a single-threaded BLAS) the two
     * threads project half of the block's rows each, then each half of the batch steps on
     * its own sgemm (or, as few rows, on the packed kernel with the projected x). */
    const int32_t half = B / 2;
    /* A second thread may call BLAS too (the input projection's halves, the BLAS
     * recurrence's batch halves). */
    const int second = w->second && !(mode & (DIR_NO_BLAS | DIR_SOLO));
    const int two = second && blas_single_threaded();
    const int threadable = !mask && second && (packed || two);
    if (threadable && packed && unit_split_pays(m->kernels, L, B, n)) {
        run_unit_split(m, L, mode, B, n, in, ld_in, h_state, c_state, w, out);
        return;
    }
    if (B == 1 && !mask && L->kind == LF_LAYER_LSTM && !L->whr.w
        && L->wtype == LF_WEIGHTS_F32) {
        /* One row: a step is latency bound (small H) or bound by reading the recurrent
         * weights (large H). A few inputs are read in the kernel, off the recurrence's
         * critical path; more are projected for the whole chunk by one GEMM, which runs at
         * full FMA throughput (measured: AVX2 LSTM 32->32 332 -> 304, 64->64 1452 -> 1174 ns
         * per frame; at I <= 16 reading x is as fast or faster). */
        const int read_x = n == 1 || no_blas || L->I <= LF_ONE_ROW_READ_X;
        if (!read_x)
            project(L, n, in, ld_in, w->xproj, two);
        const int rev = (mode & DIR_REVERSE) != 0;
        const ptrdiff_t sx = rev ? -ld_in : ld_in, sp = rev ? -(ptrdiff_t)G : (ptrdiff_t)G;
        const ptrdiff_t so = rev && (mode & DIR_TIME_ALIGNED) ? -(ptrdiff_t)Rp : (ptrdiff_t)Rp;
        float *o = out + (so < 0 ? (size_t)(n - 1) * Rp : 0);
        m->kernels->lstm_seq_one(L, n, read_x ? in + (rev ? (n - 1) * ld_in : 0) : NULL, sx,
                                 read_x ? NULL : w->xproj + (rev ? (size_t)(n - 1) * G : 0), sp,
                                 h_state, c_state, o, so);
        memcpy(h_state, o + (n - 1) * so, hb);
        return;
    }
    const int split = threadable && half > 0
                      && 2.0 * n * B * G * (double)(L->I + L->R) >= LF_PARALLEL_MIN_FLOPS;
    /* Measured (Zen 4, AVX-512, 512-frame chunks, ns per row and frame, kernel's x reads vs
     * the projection): GRU 64->64 B=1 1302 vs 813, B=2 875 vs 784, B=4 539 vs 582; 128->128
     * B=1 5283 vs 2958; 16->16 B=1 136 vs 110, 8->16 89 vs 87, 1->32 190 vs 192; RNN
     * 128->128 B=1 1587 vs 1214. LSTM is neutral at B=2-3 (B=1 takes the one-row path). */
    const int project_x = projection_pays(m, L, B);
    const int fuse_x = m->kernels->fuse_inputs && !project_x
                       && !(B < LF_FUSE_MIN_ROWS && L->kind != LF_LAYER_LSTM
                            && L->I >= LF_FUSE_MIN_INPUTS);
    /* int8 cells always read (and quantize) x in the kernel: there is no float projection.
     * (prefix and no_blas imply packed.) */
    const int fused = (packed && (n == 1 || fuse_x || prefix || no_blas || (split && !project_x)))
                      || L->wtype == LF_WEIGHTS_I8;
    if (!fused)
        project(L, n * B, in, ld_in, w->xproj, two);
    if (!mask) {
        float *xproj = fused ? NULL : w->xproj;
        if (!split) {
            run_row_range(m, L, mode, B, 0, B, n, in, ld_in, xproj, h_state, c_state, w, out);
            return;
        }
        /* The second half on the pool's worker, or after the first if the pool is busy. */
        lf_dir_job job = {m, L, mode | DIR_NO_BLAS, B, n, in, ld_in, NULL, h_state, c_state,
                          NULL, out, w->second, half, B - half, xproj};
        const int pooled = lf_pool_begin(run_row_range_job, &job);
        run_row_range(m, L, job.mode, B, 0, half, n, in, ld_in, xproj, h_state, c_state, w,
                      out);
        if (pooled)
            lf_pool_end();
        else
            run_row_range_job(&job);
        return;
    }
    for (int32_t p = 0; p < n; p++) {
        const int32_t t = (mode & DIR_REVERSE) ? n - 1 - p : p;
        const float *x = fused ? in + (ptrdiff_t)t * B * ld_in : NULL;
        float *gates = w->xproj + (size_t)t * B * G;
        float *h_out = out + (size_t)((mode & DIR_TIME_ALIGNED) ? t : p) * B * Rp;
        const unsigned char *mk = mask ? mask + (size_t)t * B : NULL;
        if (prefix) {
            const unsigned char *end = memchr(mk, 0, (size_t)B);
            const int32_t nb = end ? (int32_t)(end - mk) : B;
            if (nb > 0) {
                cell_step(m, L, nb, x, ld_in, gates, h_state, c_state, h_out, w, no_blas);
                memcpy(h_state, h_out, (size_t)nb * hb);
                if (mode & DIR_TRACK_LAST)
                    memcpy(lastout, h_out, (size_t)nb * hb);
            }
            if (mode & DIR_ZERO_OUT)
                memset(h_out + (size_t)nb * Rp, 0, (size_t)(B - nb) * hb);
            else
                memcpy(h_out + (size_t)nb * Rp, lastout + (size_t)nb * Rp,
                       (size_t)(B - nb) * hb);
            continue;
        }
        if (!memchr(mk, 0, (size_t)B)) {
            cell_step(m, L, B, x, ld_in, gates, h_state, c_state, h_out, w, no_blas);
            memcpy(h_state, h_out, (size_t)B * hb);
            if (mode & DIR_TRACK_LAST)
                memcpy(lastout, h_out, (size_t)B * hb);
            continue;
        }
        if (c_state)
            for (int32_t b = 0; b < B; b++)
                if (!mk[b])
                    memcpy(w->cold + b * Hp, c_state + b * Hp, cb);
        cell_step(m, L, B, x, ld_in, gates, h_state, c_state, w->hnew, w, no_blas);
        for (int32_t b = 0; b < B; b++) {
            float *o = h_out + b * Rp;
            if (mk[b]) {
                memcpy(h_state + b * Rp, w->hnew + b * Rp, hb);
                memcpy(o, w->hnew + b * Rp, hb);
                if (mode & DIR_TRACK_LAST)
                    memcpy(lastout + b * Rp, o, hb);
            } else {
                if (c_state)
                    memcpy(c_state + b * Hp, w->cold + b * Hp, cb);
                if (mode & DIR_ZERO_OUT)
                    memset(o, 0, hb);
                else
                    memcpy(o, lastout + b * Rp, hb);
            }
        }
    }
}

/* The steps of rows [b0, b0 + nb): inputs read by the kernel, or projected (xproj) for all
 * rows already. */
static void run_row_range(const lf_model *m, const lf_cell *L, unsigned mode, int32_t B,
                          int32_t b0, int32_t nb, int32_t n, const float *in,
                          ptrdiff_t ld_in, float *xproj, float *h_state, float *c_state,
                          const lf_work *w, float *out)
{
    const size_t Rp = (size_t)L->Rp, Hp = (size_t)L->Hp, G = (size_t)L->G * Hp;
    const int no_blas = (mode & DIR_NO_BLAS) != 0;
    const float *h_prev = h_state + b0 * Rp;
    float *c = c_state ? c_state + b0 * Hp : NULL;
    for (int32_t p = 0; p < n; p++) {
        const int32_t t = (mode & DIR_REVERSE) ? n - 1 - p : p;
        const size_t row = (size_t)t * B + b0;
        float *h_out = out + ((size_t)((mode & DIR_TIME_ALIGNED) ? t : p) * B + b0) * Rp;
        cell_step(m, L, nb, xproj ? NULL : in + (ptrdiff_t)row * ld_in, ld_in,
                  xproj ? xproj + row * G : NULL, h_prev, c, h_out, w, no_blas);
        h_prev = h_out;
    }
    memcpy(h_state + b0 * Rp, h_prev, (size_t)nb * Rp * sizeof(float));
}

static void run_row_range_job(void *arg)
{
    const lf_dir_job *j = arg;
    run_row_range(j->m, j->L, j->mode, j->B, j->b0, j->nb, j->n, j->in, j->ld, j->xproj, j->h,
                  j->c, j->w, j->out);
}

static void run_dir(void *arg)
{
    const lf_dir_job *j = arg;
    run_cell(j->m, j->L, j->mode, j->B, j->n, j->in, j->ld, j->mask, j->h, j->c, j->lastout,
             j->w, j->out);
}

/* A recurrent layer (one or two directions) over n steps. With a second thread's scratch
 * (w->second) and enough work, the backward direction runs on the pool's worker (or, if the
 * pool is busy, after the forward one with the same modes and buffers). */
void lf_run_recurrent(const lf_model *m, lf_state *s, const lf_layer *layer, int32_t n,
                      const float *in, ptrdiff_t ld, const unsigned char *mask,
                      const lf_work *w, float *out)
{
    const size_t B = (size_t)s->batch;
    const int keras = !(layer->flags & LF_LAYER_ZERO_MASKED_OUTPUT);
    unsigned base = (keras ? DIR_TRACK_LAST : 0)
                    | (layer->dirs == 2 || !keras ? DIR_ZERO_OUT : 0);
    lf_dir_job jobs[2] = {0};
    for (int dir = 0; dir < layer->dirs; dir++) {
        const lf_cell *L = &layer->cell[dir];
        unsigned mode = base;
        if (layer->dirs == 2)
            mode |= DIR_TIME_ALIGNED | (dir ? DIR_REVERSE : 0);
        else if (layer->flags & LF_LAYER_GO_BACKWARDS)
            mode |= DIR_REVERSE;
        jobs[dir] = (lf_dir_job){m, L, mode, (int32_t)B, n, in, ld, mask,
                                 s->h + layer->h_off[dir] * B,
                                 L->kind == LF_LAYER_LSTM ? s->c + layer->c_off[dir] * B : NULL,
                                 w->lastout + layer->h_off[dir] * B,
                                 layer->dirs == 2 ? w->dir[dir] : out, w, 0, (int32_t)B, NULL};
    }
    const lf_cell *L0 = &layer->cell[0];
    const double flops = 2.0 * n * (double)B * L0->G * L0->Hp * (double)(L0->I + L0->R);
    int pooled = 0;
    if (layer->dirs == 2 && w->second && flops >= LF_PARALLEL_MIN_FLOPS) {
        jobs[1].w = w->second;
        const unsigned own = blas_single_threaded() && projection_pays(m, L0, (int32_t)B)
                             ? DIR_SOLO : DIR_NO_BLAS;
        jobs[0].mode |= own;
        jobs[1].mode |= own;
        pooled = lf_pool_begin(run_dir, &jobs[1]);
    }
    run_dir(&jobs[0]);
    if (pooled)
        lf_pool_end();
    else if (layer->dirs == 2)
        run_dir(&jobs[1]);
    if (layer->dirs == 2)
        lf_merge_rows(layer->merge, n * (int32_t)B, layer->cell[0].R, layer->cell[0].Rp,
                      w->dir[0], w->dir[1], out, layer->ld);
}

