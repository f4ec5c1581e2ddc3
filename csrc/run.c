/* lf_run: blocks of time steps, layer by layer. Per block and LSTM layer, one GEMM projects the
 * inputs of all steps; then the recurrence runs step by step on the packed SIMD kernels (or,
 * above the kernel level's packed_max_batch, on BLAS + a fused pointwise pass). A single step
 * of a packed-size batch skips the GEMM: the packed kernel reads x and h in one pass.
 * Rows of the block buffers are time-major: row t*B + b. Layers after a RETURN_LAST layer run
 * once, after the last block, on one row per sequence. */
#include <pthread.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "blas.h"
#include "internal.h"

static size_t round_floats(size_t n) { return (n + 15) & ~(size_t)15; }

lf_plan lf_make_plan(const lf_model *m, int32_t batch, int32_t steps)
{
    lf_plan p = {0};
    if (!m || batch < 1 || batch > LF_MAX_DIM || steps < 1 || steps > LF_MAX_DIM)
        return p;
    int32_t bs = LF_BLOCK_ROWS / batch;
    p.block_steps = m->whole_call || bs > steps ? steps : (bs < 1 ? 1 : bs);
    const size_t B = (size_t)batch;
    size_t rows, n, total = 0;
    if (!lf_mul_size((size_t)p.block_steps, B, &rows))
        return p;
    const size_t sizes[] = {(size_t)m->ops[0].in, (size_t)m->gates_max, (size_t)m->width_max,
                            1, (size_t)m->width_max, (size_t)m->h_sum, 3};
    const size_t count[] = {rows, rows, rows, rows / 4 + 1, B, B, B + 1};
    size_t *out[] = {&p.xin, &p.xproj, &p.buf, &p.mask, &p.rowbuf, &p.lastout, &p.order};
    /* a second thread's row buffers (5), and its own xproj for bidirectional layers */
    const size_t second = m->bidirectional ? 1 : 0;
    const size_t copies[] = {1, 1 + second, 4, 1, 7 + 5, 1, 1};
    for (int i = 0; i < 7; i++) {
        if (!lf_mul_size(sizes[i], count[i], &n) || n > SIZE_MAX / 8)
            return p;
        *out[i] = round_floats(n);
        if (!lf_mul_size(*out[i], copies[i], &n) || total + n < total)
            return p;
        total += n;
    }
    if (!lf_mul_size(total, sizeof(float), &total) || total > SIZE_MAX - LF_ALIGN)
        return p;
    p.total_bytes = total + LF_ALIGN;
    return p;
}

size_t lf_workspace_size(const lf_model *model, int32_t batch, int32_t steps)
{
    return lf_make_plan(model, batch, steps < 1 ? 1 : steps).total_bytes;
}

static int has_nonfinite(const float *x, int32_t B, int32_t T, int32_t I, ptrdiff_t sb, ptrdiff_t st)
{
    for (int32_t b = 0; b < B; b++)
        for (int32_t t = 0; t < T; t++) {
            const float *row = x + b * sb + t * st;
            unsigned bad = 0;
            for (int32_t i = 0; i < I; i++) {
                uint32_t bits;
                memcpy(&bits, row + i, sizeof bits);
                bad |= (bits & 0x7f800000u) == 0x7f800000u;
            }
            if (bad)
                return 1;
        }
    return 0;
}

/* Rows of an (B, T, n) view must not overlap: either steps or batch rows are the outer axis. */
static int strides_ok(int32_t B, int32_t T, int32_t n, ptrdiff_t sb, ptrdiff_t st)
{
    ptrdiff_t ab = sb < 0 ? -sb : sb, at = st < 0 ? -st : st;
    if (T > 1 && at < n)
        return 0;
    if (B > 1 && ab < n)
        return 0;
    if (B > 1 && T > 1 && ab < (ptrdiff_t)(T - 1) * at + n && at < (ptrdiff_t)(B - 1) * ab + n)
        return 0;
    return 1;
}

/* The per-call buffers of the workspace. */
typedef struct lf_bufs {
    float *xin, *xproj, *buf[2], *dir[2], *hnew, *cold, *hc, *scratch, *lastout, *coll[2];
    unsigned char *mask;
    const int32_t *perm;   /* sorted mode: internal row j is the caller's row perm[j] */
    const struct lf_bufs *second;  /* LF_RUN_PARALLEL: private scratch of a second thread */
} lf_bufs;

/* One recurrent step for all B rows: x projected in gates, or read by the fused kernel. */
static void cell_step(const lf_model *m, const lf_layer *L, int32_t B, const float *x,
                      ptrdiff_t ldx, float *gates, const float *h_prev, float *c, float *h_out,
                      const lf_bufs *w, int no_blas)
{
    const lf_kernels *k = m->kernels;
    const int G = L->G * L->Hp;
    float *h_cell = L->whr_t ? w->hc : h_out;
    if (L->kind != LF_LAYER_LSTM || B <= k->packed_max_batch) {
        k->cell_packed(L, B, x, ldx, x ? NULL : gates, G, h_prev, c, h_cell, w->scratch);
    } else {
        lf_sgemm(B, G, L->R, h_prev, L->Rp, L->whh_t, G, gates, G, 1);
        k->lstm_pointwise(L, B, gates, c, h_cell);
    }
    if (!L->whr_t)
        return;
    if (B <= LF_DENSE_SMALL_ROWS || no_blas)
        k->dense_small(L->whr_t, L->zero, L->H, L->Rp, B, h_cell, L->Hp, h_out);
    else
        lf_sgemm(B, L->Rp, L->H, h_cell, L->Hp, L->whr_t, L->Rp, h_out, L->Rp, 0);
}

/* DIR_NO_BLAS: read inputs in the packed kernel rather than projecting them with BLAS (for
 * directions running on their own threads: BLAS may have threads of its own). */
enum { DIR_REVERSE = 1, DIR_TIME_ALIGNED = 2, DIR_ZERO_OUT = 4, DIR_TRACK_LAST = 8,
       DIR_NO_BLAS = 16 };

static void run_rows(const lf_model *m, const lf_layer *L, unsigned mode, int32_t B,
                     int32_t b0, int32_t nb, int32_t n, const float *in, ptrdiff_t ld_in,
                     float *xproj, float *h_state, float *c_state, const lf_bufs *w,
                     float *out);
/* A thread's part of a recurrent layer: a direction (run_cell's arguments), or rows
 * [b0, b0 + nb) of an unmasked batch (run_rows's). */
typedef struct lf_dir_job {
    const lf_model *m;
    const lf_layer *L;
    unsigned mode;
    int32_t B, n;
    const float *in;
    ptrdiff_t ld;
    const unsigned char *mask;
    float *h, *c, *lastout, *out;
    const lf_bufs *w;
    int32_t b0, nb;
    float *xproj;
} lf_dir_job;

static void *run_rows_job(void *arg);

/* Floating-point work of a layer below which a second thread costs more than it saves. */
#define LF_PARALLEL_MIN_FLOPS 2e6

/* One cell over n steps. Input rows r = t*B + b at in + r*ld_in; outputs (n*B, Rp) to out,
 * in processing order or (DIR_TIME_ALIGNED) at their step's row. mask (n*B bytes, 0 =
 * masked) may be NULL. Masked steps carry the state and output 0 (DIR_ZERO_OUT) or the
 * previous output; lastout keeps the last valid output (DIR_TRACK_LAST). */
static void run_cell(const lf_model *m, const lf_layer *L, unsigned mode, int32_t B, int32_t n,
                     const float *in, ptrdiff_t ld_in, const unsigned char *mask,
                     float *h_state, float *c_state, float *lastout, const lf_bufs *w,
                     float *out)
{
    const size_t Rp = (size_t)L->Rp, Hp = (size_t)L->Hp, G = (size_t)L->G * Hp;
    const size_t hb = Rp * sizeof(float), cb = Hp * sizeof(float);
    const int packed = L->kind != LF_LAYER_LSTM || B <= m->kernels->packed_max_batch;
    /* Rows sorted by length: the valid rows of a step are a prefix; only they are computed,
     * each step reading its inputs directly (no projection of padded rows). */
    const int prefix = mask && w->perm && packed;
    const int no_blas = (mode & DIR_NO_BLAS) && packed;
    if (B == 1 && !mask && L->kind == LF_LAYER_LSTM && !L->whr_t
        && L->Hp <= 4 * m->kernels->vw && L->wtype == LF_WEIGHTS_F32) {
        /* One small row: a step is latency bound; x is read in the kernel while the weights
         * fit in L1, else projected by one GEMM. */
        const int read_x = n == 1 || no_blas
                           || (size_t)(L->I + L->R) * G * sizeof(float) <= LF_L1_WEIGHTS;
        if (!read_x)
            lf_sgemm(n, (int)G, L->I, in, (int)ld_in, L->wih_t, (int)G, w->xproj, (int)G, 0);
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
    /* Rows are independent: with a second thread's buffers and enough work, the two halves
     * of an unmasked batch run their whole sequences on two threads, each reading its inputs
     * in the packed kernel (no BLAS: its threads would spin on the cores the halves use). */
    const int32_t half = B / 2;
    const int split = !mask && w->second && packed && half > 0 && !(mode & DIR_NO_BLAS)
                      && 2.0 * n * B * G * (double)(L->I + L->R) >= LF_PARALLEL_MIN_FLOPS;
    const int fused = (n == 1 && packed) || prefix || no_blas || split;
    if (!fused)
        lf_sgemm(n * B, (int)G, L->I, in, (int)ld_in, L->wih_t, (int)G, w->xproj, (int)G, 0);
    if (!mask) {
        float *xproj = fused ? NULL : w->xproj;
        lf_dir_job job = {m, L, mode | DIR_NO_BLAS, B, n, in, ld_in, NULL, h_state, c_state,
                          NULL, out, w->second, half, B - half, xproj};
        pthread_t thread;
        const int threaded = split && pthread_create(&thread, NULL, run_rows_job, &job) == 0;
        run_rows(m, L, threaded ? job.mode : mode, B, 0, threaded ? half : B, n, in, ld_in,
                 xproj, h_state, c_state, w, out);
        if (threaded)
            pthread_join(thread, NULL);
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
static void run_rows(const lf_model *m, const lf_layer *L, unsigned mode, int32_t B,
                     int32_t b0, int32_t nb, int32_t n, const float *in, ptrdiff_t ld_in,
                     float *xproj, float *h_state, float *c_state, const lf_bufs *w,
                     float *out)
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

static void *run_rows_job(void *arg)
{
    const lf_dir_job *j = arg;
    run_rows(j->m, j->L, j->mode, j->B, j->b0, j->nb, j->n, j->in, j->ld, j->xproj, j->h, j->c,
             j->w, j->out);
    return NULL;
}

/* out (rows, ld) = merge of f and b, each (rows, Rp) with R features. */
static void merge_rows(lf_merge mode, int32_t rows, int32_t R, int32_t Rp, const float *f,
                       const float *b, float *out, int32_t ld)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *fr = f + (size_t)r * Rp, *br = b + (size_t)r * Rp;
        float *o = out + (size_t)r * ld;
        switch (mode) {
        case LF_MERGE_CONCAT:
            memcpy(o, fr, (size_t)R * sizeof(float));
            memcpy(o + R, br, (size_t)R * sizeof(float));
            break;
        case LF_MERGE_SUM:
            for (int32_t i = 0; i < R; i++)
                o[i] = fr[i] + br[i];
            break;
        case LF_MERGE_AVE:
            for (int32_t i = 0; i < R; i++)
                o[i] = (fr[i] + br[i]) * 0.5f;
            break;
        case LF_MERGE_MUL:
            for (int32_t i = 0; i < R; i++)
                o[i] = fr[i] * br[i];
            break;
        }
    }
}

static void *run_dir(void *arg)
{
    const lf_dir_job *j = arg;
    run_cell(j->m, j->L, j->mode, j->B, j->n, j->in, j->ld, j->mask, j->h, j->c, j->lastout,
             j->w, j->out);
    return NULL;
}

/* A recurrent layer (one or two directions) over n steps. With a second thread's scratch
 * (w->second), the backward direction runs on that thread. */
static void run_recurrent(const lf_model *m, lf_state *s, const lf_op *op, int32_t n,
                          const float *in, ptrdiff_t ld, const unsigned char *mask,
                          const lf_bufs *w, float *out)
{
    const size_t B = (size_t)s->batch;
    const int keras = !(op->flags & LF_LAYER_ZERO_MASKED_OUTPUT);
    unsigned base = (keras ? DIR_TRACK_LAST : 0) | (op->dirs == 2 || !keras ? DIR_ZERO_OUT : 0);
    lf_dir_job jobs[2];
    for (int dir = 0; dir < op->dirs; dir++) {
        const lf_layer *L = &op->cell[dir];
        unsigned mode = base;
        if (op->dirs == 2)
            mode |= DIR_TIME_ALIGNED | (dir ? DIR_REVERSE : 0);
        else if (op->flags & LF_LAYER_GO_BACKWARDS)
            mode |= DIR_REVERSE;
        jobs[dir] = (lf_dir_job){m, L, mode, (int32_t)B, n, in, ld, mask,
                                 s->h + op->h_off[dir] * B,
                                 L->kind == LF_LAYER_LSTM ? s->c + op->c_off[dir] * B : NULL,
                                 w->lastout + op->h_off[dir] * B,
                                 op->dirs == 2 ? w->dir[dir] : out, w, 0, (int32_t)B, NULL};
    }
    const lf_layer *L0 = &op->cell[0];
    const double flops = 2.0 * n * (double)B * L0->G * L0->Hp * (double)(L0->I + L0->R);
    pthread_t thread;
    int threaded = 0;
    if (op->dirs == 2 && w->second && flops >= LF_PARALLEL_MIN_FLOPS) {
        jobs[1].w = w->second;
        jobs[0].mode |= DIR_NO_BLAS;
        jobs[1].mode |= DIR_NO_BLAS;
        threaded = pthread_create(&thread, NULL, run_dir, &jobs[1]) == 0;
        if (!threaded) {
            jobs[1].w = w;
            jobs[0].mode &= ~(unsigned)DIR_NO_BLAS;
            jobs[1].mode &= ~(unsigned)DIR_NO_BLAS;
        }
    }
    run_dir(&jobs[0]);
    if (threaded)
        pthread_join(thread, NULL);
    else if (op->dirs == 2)
        run_dir(&jobs[1]);
    if (op->dirs == 2)
        merge_rows(op->merge, n * (int32_t)B, op->cell[0].R, op->cell[0].Rp, w->dir[0],
                   w->dir[1], out, op->ld);
}

static void run_dense(const lf_model *m, const lf_op *op, int32_t rows, const float *in,
                      ptrdiff_t ld_in, float *out)
{
    const lf_kernels *k = m->kernels;
    const int rowwise = op->act == LF_ACT_SOFTMAX || op->act == LF_ACT_LOG_SOFTMAX;
    if (rows <= LF_DENSE_SMALL_ROWS) {
        k->dense_small(op->w, op->bias, op->in, op->ld, rows, in, ld_in, out);
        if (!rowwise && op->act != LF_ACT_LINEAR)
            k->bias_act(op->act, NULL, rows, op->ld, out);
    } else {
        lf_sgemm(rows, op->ld, op->in, in, (int)ld_in, op->w, op->ld, out, op->ld, 0);
        k->bias_act(rowwise ? LF_ACT_LINEAR : op->act, op->bias, rows, op->ld, out);
    }
    if (rowwise)
        lf_softmax_rows(op->act == LF_ACT_LOG_SOFTMAX, rows, op->out, op->ld, out);
}

/* y = act(x * scale + shift), per feature; padded columns become 0 before the activation. */
static void run_affine(const lf_model *m, const lf_op *op, int32_t rows, const float *in,
                       ptrdiff_t ld_in, float *out)
{
    const int rowwise = op->act == LF_ACT_SOFTMAX || op->act == LF_ACT_LOG_SOFTMAX;
    for (int32_t r = 0; r < rows; r++) {
        const float *restrict x = in + r * ld_in;
        float *restrict y = out + (size_t)r * op->ld;
        for (int32_t i = 0; i < op->out; i++)
            y[i] = x[i] * op->w[i] + op->bias[i];
        for (int32_t i = op->out; i < op->ld; i++)
            y[i] = 0.0f;
    }
    if (rowwise)
        lf_softmax_rows(op->act == LF_ACT_LOG_SOFTMAX, rows, op->out, op->ld, out);
    else if (op->act != LF_ACT_LINEAR)
        m->kernels->bias_act(op->act, NULL, rows, op->ld, out);
}

/* y = x / max(||x||_2, epsilon) per row (the sum of squares in double). */
static void run_normalize(const lf_op *op, int32_t rows, const float *in, ptrdiff_t ld_in,
                          float *out)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *restrict x = in + r * ld_in;
        float *restrict y = out + (size_t)r * op->ld;
        double ss = 0.0;
        for (int32_t i = 0; i < op->out; i++)
            ss += (double)x[i] * x[i];
        double norm = sqrt(ss);
        const float inv = (float)(1.0 / (norm > op->mask_value ? norm : (double)op->mask_value));
        const float scale = norm > 0.0 || op->mask_value > 0.0f ? inv : 0.0f;
        for (int32_t i = 0; i < op->out; i++)
            y[i] = x[i] * scale;
        for (int32_t i = op->out; i < op->ld; i++)
            y[i] = 0.0f;
    }
}

/* Keras Masking: a row whose features all equal the mask value is masked and zeroed. */
static void run_masking(const lf_op *op, int32_t rows, const float *in, ptrdiff_t ld_in,
                        unsigned char *mask, float *out)
{
    for (int32_t r = 0; r < rows; r++) {
        const float *x = in + r * ld_in;
        float *y = out + (size_t)r * op->ld;
        int keep = 0;
        for (int32_t i = 0; i < op->in; i++)
            keep |= x[i] != op->mask_value;
        if (mask)
            mask[r] &= (unsigned char)keep;
        if (keep)
            memcpy(y, x, (size_t)op->in * sizeof(float));
        else
            memset(y, 0, (size_t)op->in * sizeof(float));
    }
}

static lf_status check_inputs(const lf_model *m, const lf_state *s, const lf_io *io)
{
    const int32_t B = s->batch, T = io->steps, O = m->ops[m->num_ops - 1].out;
    if (m->ops[0].kind == LF_LAYER_EMBEDDING ? (!io->ids || io->x) : (!io->x || io->ids))
        return io->x || io->ids ? LF_E_INPUT_KIND : LF_E_NULL;
    if (io->y && (m->collapse >= 0 ? B > 1 && (io->y_stride_batch < 0 ? -io->y_stride_batch
                                                : io->y_stride_batch) < O
                                    : !strides_ok(B, T, O, io->y_stride_batch,
                                                  io->y_stride_time)))
        return LF_E_STRIDE;
    if (io->lengths)
        for (int32_t b = 0; b < B; b++)
            if (io->lengths[b] < 0 || io->lengths[b] > T)
                return LF_E_BAD_LENGTH;
    if (io->ids) {
        const int32_t V = m->ops[0].in;
        for (int32_t b = 0; b < B; b++)
            for (int32_t t = 0; t < T; t++) {
                const int32_t id = io->ids[b * io->x_stride_batch + t * io->x_stride_time];
                if (id < 0 || id >= V)
                    return LF_E_BAD_ID;
            }
    } else if ((io->flags & LF_RUN_CHECK_FINITE)
               && has_nonfinite(io->x, B, T, m->ops[0].in, io->x_stride_batch,
                                io->x_stride_time)) {
        return LF_E_NONFINITE;
    }
    return LF_OK;
}

/* Fills rows [0, n*B) of the first buffer (and the mask) from the caller's input. Returns the
 * index of the first op still to run; *in / *ld point at its input. */
static int32_t load_block(const lf_model *m, const lf_io *io, int32_t B, int32_t t0, int32_t n,
                          const lf_bufs *w, const float **in, ptrdiff_t *ld)
{
    const lf_op *op0 = &m->ops[0];
    const ptrdiff_t sb = io->x_stride_batch, st = io->x_stride_time;
    const int32_t *perm = w->perm;
    if (w->mask)
        for (int32_t t = 0; t < n; t++)
            for (int32_t j = 0; j < B; j++)
                w->mask[(size_t)t * B + j] = !io->lengths
                                             || t0 + t < io->lengths[perm ? perm[j] : j];
    if (op0->kind == LF_LAYER_EMBEDDING) {
        for (int32_t t = 0; t < n; t++)
            for (int32_t j = 0; j < B; j++) {
                const size_t r = (size_t)t * B + j;
                const int32_t id = io->ids[(perm ? perm[j] : j) * sb + (t0 + t) * st];
                memcpy(w->buf[0] + r * op0->ld, op0->w + (size_t)id * op0->out,
                       (size_t)op0->out * sizeof(float));
                if (w->mask && (op0->flags & LF_LAYER_MASK_ZERO) && id == 0)
                    w->mask[r] = 0;
            }
        *in = w->buf[0];
        *ld = op0->ld;
        return 1;
    }
    const int32_t I = op0->in;
    if (B == 1 && (n == 1 || (st >= I && st <= INT32_MAX))) { /* BLAS lda is an int */
        *in = io->x + (ptrdiff_t)t0 * st;
        *ld = n == 1 ? I : st;
    } else {
        for (int32_t t = 0; t < n; t++)
            for (int32_t j = 0; j < B; j++)
                memcpy(w->xin + ((size_t)t * B + j) * I,
                       io->x + (perm ? perm[j] : j) * sb + (t0 + t) * st,
                       (size_t)I * sizeof(float));
        *in = w->xin;
        *ld = I;
    }
    return 0;
}

/* Runs ops [first, last) on `rows` rows; returns the buffer holding the result. */
static const float *run_ops(const lf_model *m, lf_state *s, int32_t first, int32_t last,
                            int32_t n, const float *in, ptrdiff_t ld, const lf_bufs *w,
                            float *const bufs[2], int *mask_on, ptrdiff_t *ld_out)
{
    const int32_t B = s->batch, rows = n * B;
    for (int32_t l = first; l < last; l++) {
        const lf_op *op = &m->ops[l];
        float *out = bufs[(l - first) & 1] == in ? bufs[((l - first) & 1) ^ 1]
                                                 : bufs[(l - first) & 1];
        switch (op->kind) {
        case LF_LAYER_LSTM:
        case LF_LAYER_GRU:
        case LF_LAYER_RNN:
            run_recurrent(m, s, op, n, in, ld, *mask_on ? w->mask : NULL, w, out);
            break;
        case LF_LAYER_DENSE:
            run_dense(m, op, rows, in, ld, out);
            break;
        case LF_LAYER_AFFINE:
            run_affine(m, op, rows, in, ld, out);
            break;
        case LF_LAYER_NORMALIZE:
            run_normalize(op, rows, in, ld, out);
            break;
        case LF_LAYER_MASKING:
            run_masking(op, rows, in, ld, w->mask, out);
            *mask_on = w->mask != NULL;
            break;
        case LF_LAYER_EMBEDDING:
            break;
        }
        in = out;
        ld = op->ld;
    }
    *ld_out = ld;
    return in;
}

static void store_rows(const float *src, ptrdiff_t ld, int32_t B, int32_t n, int32_t O,
                       float *y, ptrdiff_t sb, ptrdiff_t st, const int32_t *perm)
{
    for (int32_t t = 0; t < n; t++)
        for (int32_t j = 0; j < B; j++)
            memcpy(y + (perm ? perm[j] : j) * sb + t * st, src + ((size_t)t * B + j) * ld,
                   (size_t)O * sizeof(float));
}

static int by_key(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Rows by length, longest first (ties by row index). */
static void sort_rows(const int32_t *lengths, int32_t B, int32_t T, int64_t *keys, int32_t *perm)
{
    for (int32_t b = 0; b < B; b++)
        keys[b] = ((int64_t)(T - lengths[b]) << 32) | b;
    qsort(keys, (size_t)B, sizeof(int64_t), by_key);
    for (int32_t j = 0; j < B; j++)
        perm[j] = (int32_t)(keys[j] & 0xffffffff);
}

/* Reorders the rows of every recurrent state: row j <- row perm[j] (inverse: perm[j] <- j). */
static void permute_state(const lf_model *m, lf_state *s, const int32_t *perm, int inverse,
                          float *tmp)
{
    const size_t B = (size_t)s->batch;
    for (int32_t l = 0; l < m->num_ops; l++) {
        const lf_op *op = &m->ops[l];
        for (int dir = 0; dir < op->dirs; dir++) {
            const lf_layer *L = &op->cell[dir];
            float *arr[2] = {s->h + (size_t)op->h_off[dir] * B,
                             L->kind == LF_LAYER_LSTM ? s->c + (size_t)op->c_off[dir] * B : NULL};
            const size_t ld[2] = {(size_t)L->Rp, (size_t)L->Hp};
            for (int a = 0; a < 2 && arr[a]; a++) {
                for (size_t j = 0; j < B; j++)
                    memcpy(tmp + (inverse ? (size_t)perm[j] : j) * ld[a],
                           arr[a] + (inverse ? j : (size_t)perm[j]) * ld[a],
                           ld[a] * sizeof(float));
                memcpy(arr[a], tmp, B * ld[a] * sizeof(float));
            }
        }
    }
}

lf_status lf_run(const lf_model *m, lf_state *s, const lf_io *io, void *ws, size_t ws_bytes)
{
    if (!m || !s || !io)
        return LF_E_NULL;
    if (s->model != m)
        return LF_E_BATCH_MISMATCH;
    const int32_t T = io->steps, B = s->batch;
    if (T < 0 || T > LF_MAX_DIM)
        return LF_E_INVALID_SIZE;
    if (T == 0)
        return LF_OK;
    lf_status st = check_inputs(m, s, io);
    if (st != LF_OK)
        return st;
    lf_plan p = lf_make_plan(m, B, T);
    if (p.total_bytes == 0)
        return LF_E_TOO_LARGE;
    if (!ws)
        return LF_E_NULL;
    if (ws_bytes < p.total_bytes)
        return LF_E_WORKSPACE;

    float *f = (float *)(((uintptr_t)ws + LF_ALIGN - 1) & ~(uintptr_t)(LF_ALIGN - 1));
    lf_bufs w;
    w.xin = f;
    w.xproj = w.xin + p.xin;
    w.buf[0] = w.xproj + (m->bidirectional ? 2 : 1) * p.xproj;
    w.buf[1] = w.buf[0] + p.buf;
    w.dir[0] = w.buf[1] + p.buf;
    w.dir[1] = w.dir[0] + p.buf;
    w.hnew = w.dir[1] + p.buf;
    w.cold = w.hnew + p.rowbuf;
    w.hc = w.cold + p.rowbuf;
    w.scratch = w.hc + p.rowbuf;
    w.coll[0] = w.scratch + 2 * p.rowbuf;
    w.coll[1] = w.coll[0] + p.rowbuf;
    w.lastout = w.coll[1] + p.rowbuf;
    w.second = NULL;
    const int masked = io->lengths || m->mask_source;
    w.mask = masked ? (unsigned char *)(w.lastout + p.lastout) : NULL;
    if (masked)
        memset(w.lastout, 0, (size_t)m->h_sum * (size_t)B * sizeof(float));
    /* Ragged lengths as the only mask: run the rows sorted by length (longest first). */
    w.perm = NULL;
    float *order = w.lastout + p.lastout + p.mask;
    if (io->lengths && !m->mask_source && B > 1) {
        int32_t *perm = (int32_t *)order;
        sort_rows(io->lengths, B, T, (int64_t *)(order + ((size_t)B + 1) / 2 * 2), perm);
        permute_state(m, s, perm, 0, w.hnew);
        w.perm = perm;
    }
    lf_bufs second = w;  /* a second thread's private scratch (and xproj if bidirectional) */
    second.xproj = m->bidirectional ? w.xproj + p.xproj : w.xproj;
    second.hnew = order + p.order;
    second.cold = second.hnew + p.rowbuf;
    second.hc = second.cold + p.rowbuf;
    second.scratch = second.hc + p.rowbuf;
    if (io->flags & LF_RUN_PARALLEL)
        w.second = &second;

    const int32_t seq_end = m->collapse >= 0 ? m->collapse + 1 : m->num_ops;
    const int32_t O = m->ops[m->num_ops - 1].out;
    int mask_on = 0;
    for (int32_t t0 = 0; t0 < T; t0 += p.block_steps) {
        const int32_t n = T - t0 < p.block_steps ? T - t0 : p.block_steps;
        const float *in;
        ptrdiff_t ld;
        mask_on = io->lengths || (m->ops[0].flags & LF_LAYER_MASK_ZERO);
        int32_t first = load_block(m, io, B, t0, n, &w, &in, &ld);
        in = run_ops(m, s, first, seq_end, n, in, ld, &w, w.buf, &mask_on, &ld);
        if (m->collapse < 0 && io->y)
            store_rows(in, ld, B, n, O, io->y + (ptrdiff_t)t0 * io->y_stride_time,
                       io->y_stride_batch, io->y_stride_time, w.perm);
    }
    if (m->collapse >= 0) {
        const lf_op *op = &m->ops[m->collapse];
        /* mask_on: whether the collapsing layer ran under a mask. */
        const int keras_last = mask_on && !(op->flags & LF_LAYER_ZERO_MASKED_OUTPUT);
        const float *last[2] = {NULL, NULL};
        for (int dir = 0; dir < op->dirs; dir++)
            last[dir] = (keras_last ? w.lastout : s->h) + (size_t)op->h_off[dir] * (size_t)B;
        const float *in = last[0];
        ptrdiff_t ld = op->cell[0].Rp;
        if (op->dirs == 2) {
            merge_rows(op->merge, B, op->cell[0].R, op->cell[0].Rp, last[0], last[1],
                       w.coll[0], op->ld);
            in = w.coll[0];
            ld = op->ld;
        }
        mask_on = 0;
        in = run_ops(m, s, m->collapse + 1, m->num_ops, 1, in, ld, &w, w.coll, &mask_on, &ld);
        if (io->y)
            store_rows(in, ld, B, 1, O, io->y, io->y_stride_batch, 0, w.perm);
    }
    if (w.perm)
        permute_state(m, s, w.perm, 1, w.hnew);
    return LF_OK;
}
