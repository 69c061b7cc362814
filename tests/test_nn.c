/*
 * tests/test_nn.c — nn/ against PyTorch and against finite differences.
 *
 * Reference values: tests/fixtures/nn_ref.safetensors, written by
 * tests/ref/gen_nn_ref.py (PyTorch autograd and torch.optim, computed in
 * float64 from float32 inputs). Every forward output and every gradient must
 * satisfy
 *     |got - ref| <= ATOL + RTOL * |ref|,   ATOL = 1e-5, RTOL = 1e-4,
 * which is loose enough for float32 summation order and OpenBLAS kernels and
 * tight enough to catch a wrong index, sign, scale or missing term.
 *
 * The finite-difference test composes linear -> relu -> cross -> linear -> BCE
 * and compares every parameter and input gradient with double-precision
 * central differences of the float forward pass (see fd_* below).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core.h"
#include "nn.h"

#define ATOL 1e-5
#define RTOL 1e-4

/* ---------------------------------------------------------------- fixture */

static rk_st_file *fx;
static float pool[16384]; /* copies of fixture tensors (4-byte aligned) */
static size_t pool_used;

static void fixture_open(void) {
    rk_err err = {0};
    const char *path = RK_SOURCE_DIR "/tests/fixtures/nn_ref.safetensors";
    rk_status s = rk_st_open(path, &fx, &err);
    cr_assert_eq(s, RK_OK, "%s (re-run tests/ref/gen_nn_ref.py?)", err.msg);
    pool_used = 0;
}

static void fixture_close(void) {
    rk_st_close(fx);
    fx = NULL;
}

TestSuite(nn, .init = fixture_open, .fini = fixture_close);

/* A private copy of fixture tensor `name`, which must hold n floats. */
static float *ld(const char *name, size_t n) {
    const float *data;
    int ndim;
    int64_t shape[4];
    rk_err err = {0};
    rk_status s = rk_st_get_f32(fx, name, &data, &ndim, shape, &err);
    cr_assert_eq(s, RK_OK, "%s", err.msg);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
    cr_assert_eq(numel, n, "fixture tensor '%s' has %zu values, test expects %zu", name, numel, n);
    cr_assert_leq(pool_used + n, sizeof pool / sizeof *pool, "test pool too small");
    float *dst = pool + pool_used;
    pool_used += n;
    memcpy(dst, data, n * sizeof *dst);
    return dst;
}

/* Integer arrays are stored as F32; they must be exact non-negative ints. */
static void ld_u64(uint64_t *dst, const char *name, size_t n) {
    const float *f = ld(name, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert(f[i] >= 0 && f[i] == floorf(f[i]), "%s[%zu] = %g is not an index", name, i, f[i]);
        dst[i] = (uint64_t)f[i];
    }
}

static void ld_u32(uint32_t *dst, const char *name, size_t n) {
    uint64_t tmp[64];
    cr_assert_leq(n, 64);
    ld_u64(tmp, name, n);
    for (size_t i = 0; i < n; i++) dst[i] = (uint32_t)tmp[i];
}

static int close_enough(double got, double ref, double atol, double rtol) {
    return fabs(got - ref) <= atol + rtol * fabs(ref); /* false for NaN */
}

static void check_close(const char *what, const float *got, const float *ref, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!close_enough(got[i], ref[i], ATOL, RTOL) && bad++ == 0) first = i;
    cr_assert_eq(bad, 0,
                 "%s: %zu of %zu values off; first [%zu]: got %.9g, ref %.9g "
                 "(tolerance %g + %g*|ref|)",
                 what, bad, n, first, (double)got[first], (double)ref[first], ATOL, RTOL);
}

static void fill(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

/* ---------------------------------------------------------------- shapes */

enum { B = 5, IN = 7, OUT = 3, D = 6, DE = 4, ROWS = 10, NIDX = 9, STEPS = 3 };

/* ---------------------------------------------------------------- linear */

Test(nn, linear_forward_backward) {
    float *x = ld("linear.x", B * IN), *W = ld("linear.W", OUT * IN), *b = ld("linear.b", OUT);
    float *dy = ld("linear.dy", B * OUT), *y_ref = ld("linear.y", B * OUT);
    float *dx_ref = ld("linear.dx", B * IN), *dW_ref = ld("linear.dW", OUT * IN);
    float *db_ref = ld("linear.db", OUT);

    float y[B * OUT];
    fill(y, B * OUT, NAN); /* forward must overwrite, not accumulate */
    rk_linear_forward(y, x, W, b, B, IN, OUT);
    check_close("linear y", y, y_ref, B * OUT);

    /* Without bias: y - b. */
    float y_nb[B * OUT], y_nb_ref[B * OUT];
    fill(y_nb, B * OUT, NAN);
    rk_linear_forward(y_nb, x, W, NULL, B, IN, OUT);
    for (int r = 0; r < B; r++)
        for (int j = 0; j < OUT; j++) y_nb_ref[r * OUT + j] = y_ref[r * OUT + j] - b[j];
    check_close("linear y (no bias)", y_nb, y_nb_ref, B * OUT);

    /* dx is written; dW and db accumulate onto what is there. */
    float dx[B * IN], dW[OUT * IN], db[OUT], dW_exp[OUT * IN], db_exp[OUT];
    fill(dx, B * IN, NAN);
    fill(dW, OUT * IN, 0.25f);
    fill(db, OUT, -0.5f);
    for (int i = 0; i < OUT * IN; i++) dW_exp[i] = dW_ref[i] + 0.25f;
    for (int i = 0; i < OUT; i++) db_exp[i] = db_ref[i] - 0.5f;
    rk_linear_backward(dx, dW, db, dy, x, W, B, IN, OUT);
    check_close("linear dx", dx, dx_ref, B * IN);
    check_close("linear dW (accumulated)", dW, dW_exp, OUT * IN);
    check_close("linear db (accumulated)", db, db_exp, OUT);

    /* dx == NULL and db == NULL are skipped; dW still accumulates. */
    memset(dW, 0, sizeof dW);
    rk_linear_backward(NULL, dW, NULL, dy, x, W, B, IN, OUT);
    check_close("linear dW (dx, db NULL)", dW, dW_ref, OUT * IN);
}

/* ---------------------------------------------------------------- activations */

Test(nn, relu_forward_backward) {
    float *x = ld("relu.x", B * IN), *dy = ld("relu.dy", B * IN);
    float *y_ref = ld("relu.y", B * IN), *dx_ref = ld("relu.dx", B * IN);
    float y[B * IN], dx[B * IN];
    rk_relu_forward(y, x, B * IN);
    check_close("relu y", y, y_ref, B * IN);
    rk_relu_backward(dx, dy, y, B * IN);
    check_close("relu dx", dx, dx_ref, B * IN);

    /* In place: y aliases x, dx aliases dy. */
    float buf[B * IN], g[B * IN];
    memcpy(buf, x, sizeof buf);
    memcpy(g, dy, sizeof g);
    rk_relu_forward(buf, buf, B * IN);
    check_close("relu y (in place)", buf, y_ref, B * IN);
    rk_relu_backward(g, g, buf, B * IN);
    check_close("relu dx (in place)", g, dx_ref, B * IN);
}

Test(nn, sigmoid_matches_torch_and_saturates) {
    enum { N = 10 };
    float *z = ld("sigmoid.z", N), *y_ref = ld("sigmoid.y", N);
    float y[N];
    for (int i = 0; i < N; i++) {
        y[i] = rk_sigmoid(z[i]);
        cr_assert(isfinite(y[i]) && y[i] >= 0.0f && y[i] <= 1.0f, "sigmoid(%g) = %g", z[i], y[i]);
    }
    check_close("sigmoid", y, y_ref, N);
    /* Symmetry away from saturation: sigmoid(-z) = 1 - sigmoid(z). */
    for (float t = -8.0f; t <= 8.0f; t += 0.5f)
        cr_assert(close_enough(rk_sigmoid(-t), 1.0 - rk_sigmoid(t), 1e-6, 0),
                  "sigmoid(%g) + sigmoid(%g) != 1", -t, t);
}

/* ---------------------------------------------------------------- DCNv2 cross */

Test(nn, cross_layer_forward_backward) {
    float *x0 = ld("cross.x0", B * D), *xl = ld("cross.xl", B * D), *W = ld("cross.W", D * D);
    float *b = ld("cross.b", D), *dy = ld("cross.dy", B * D);
    float *u_ref = ld("cross.u", B * D), *y_ref = ld("cross.y", B * D);
    float *dx0_ref = ld("cross.dx0", B * D), *dxl_ref = ld("cross.dxl", B * D);
    float *dW_ref = ld("cross.dW", D * D), *db_ref = ld("cross.db", D);

    float y[B * D], u[B * D];
    fill(y, B * D, NAN);
    fill(u, B * D, NAN);
    rk_cross_forward(y, u, x0, xl, W, b, B, D);
    check_close("cross u", u, u_ref, B * D);
    check_close("cross y", y, y_ref, B * D);

    /* dx0, dW, db accumulate; dxl is written. */
    float dx0[B * D], dxl[B * D], dW[D * D], db[D], scratch[B * D];
    float dx0_exp[B * D], dW_exp[D * D], db_exp[D];
    fill(dx0, B * D, 1.5f);
    fill(dxl, B * D, NAN);
    fill(dW, D * D, -1.0f);
    fill(db, D, 2.0f);
    fill(scratch, B * D, NAN);
    for (int i = 0; i < B * D; i++) dx0_exp[i] = dx0_ref[i] + 1.5f;
    for (int i = 0; i < D * D; i++) dW_exp[i] = dW_ref[i] - 1.0f;
    for (int i = 0; i < D; i++) db_exp[i] = db_ref[i] + 2.0f;
    rk_cross_backward(dx0, dxl, dW, db, dy, x0, xl, u, W, B, D, scratch);
    check_close("cross dx0 (accumulated)", dx0, dx0_exp, B * D);
    check_close("cross dxl", dxl, dxl_ref, B * D);
    check_close("cross dW (accumulated)", dW, dW_exp, D * D);
    check_close("cross db (accumulated)", db, db_exp, D);

    /* dxl may alias dxout. */
    float g[B * D];
    memcpy(g, dy, sizeof g);
    memset(dx0, 0, sizeof dx0);
    memset(dW, 0, sizeof dW);
    memset(db, 0, sizeof db);
    rk_cross_backward(dx0, g, dW, db, g, x0, xl, u, W, B, D, scratch);
    check_close("cross dxl (aliasing dxout)", g, dxl_ref, B * D);
    check_close("cross dx0 (aliasing)", dx0, dx0_ref, B * D);
    check_close("cross dW (aliasing)", dW, dW_ref, D * D);
}

/* Two layers sharing x0: x1 = cross(x0, x0), y = cross(x0, x1). The gradient
 * of x0 collects both layers' dx0 plus layer 1's dxl. */
Test(nn, cross_stack_shares_x0) {
    float *x0 = ld("cross2.x0", B * D), *W1 = ld("cross2.W1", D * D), *b1 = ld("cross2.b1", D);
    float *W2 = ld("cross2.W2", D * D), *b2 = ld("cross2.b2", D), *dy = ld("cross2.dy", B * D);
    float *y_ref = ld("cross2.y", B * D), *dx0_ref = ld("cross2.dx0", B * D);
    float *dW1_ref = ld("cross2.dW1", D * D), *db1_ref = ld("cross2.db1", D);
    float *dW2_ref = ld("cross2.dW2", D * D), *db2_ref = ld("cross2.db2", D);

    float x1[B * D], u1[B * D], y[B * D], u2[B * D];
    rk_cross_forward(x1, u1, x0, x0, W1, b1, B, D);
    rk_cross_forward(y, u2, x0, x1, W2, b2, B, D);
    check_close("cross2 y", y, y_ref, B * D);

    float dx0[B * D] = {0}, dx1[B * D], dxl1[B * D], scratch[B * D];
    float dW1[D * D] = {0}, db1[D] = {0}, dW2[D * D] = {0}, db2[D] = {0};
    rk_cross_backward(dx0, dx1, dW2, db2, dy, x0, x1, u2, W2, B, D, scratch);
    rk_cross_backward(dx0, dxl1, dW1, db1, dx1, x0, x0, u1, W1, B, D, scratch);
    for (int i = 0; i < B * D; i++) dx0[i] += dxl1[i];
    check_close("cross2 dx0", dx0, dx0_ref, B * D);
    check_close("cross2 dW1", dW1, dW1_ref, D * D);
    check_close("cross2 db1", db1, db1_ref, D);
    check_close("cross2 dW2", dW2, dW2_ref, D * D);
    check_close("cross2 db2", db2, db2_ref, D);
}

/* ---------------------------------------------------------------- embedding bag */

typedef struct {
    float *table, *dout;
    uint32_t offsets[B + 1];
    uint64_t idx[NIDX];
} bag_fx;

static void load_bag(bag_fx *f) {
    f->table = ld("bag.table", ROWS * DE);
    f->dout = ld("bag.dout", B * DE);
    ld_u32(f->offsets, "bag.offsets", B + 1);
    ld_u64(f->idx, "bag.idx", NIDX);
    cr_assert_eq(f->offsets[B], NIDX, "last offset must be len(idx)");
}

static void bag_case(rk_bag_mode mode, const char *name) {
    bag_fx f;
    load_bag(&f);
    char key[64];
    snprintf(key, sizeof key, "bag.%s.out", name);
    float *out_ref = ld(key, B * DE);
    snprintf(key, sizeof key, "bag.%s.dtable", name);
    float *dt_ref = ld(key, ROWS * DE);

    float out[B * DE];
    fill(out, B * DE, NAN); /* empty bags must come out as zeros, not stale data */
    rk_embedding_bag_forward(out, DE, f.table, f.offsets, f.idx, B, DE, mode);
    check_close(name, out, out_ref, B * DE);
    for (int j = 0; j < DE; j++)
        cr_assert(out[1 * DE + j] == 0.0f && out[4 * DE + j] == 0.0f, "%s: empty bag not zero", name);

    /* Backward accumulates: two calls give twice the gradient. */
    float dt[ROWS * DE] = {0}, dt2_ref[ROWS * DE];
    rk_embedding_bag_backward(dt, f.dout, DE, f.offsets, f.idx, B, DE, mode);
    check_close(name, dt, dt_ref, ROWS * DE);
    rk_embedding_bag_backward(dt, f.dout, DE, f.offsets, f.idx, B, DE, mode);
    for (int i = 0; i < ROWS * DE; i++) dt2_ref[i] = 2.0f * dt_ref[i];
    check_close(name, dt, dt2_ref, ROWS * DE);
}

Test(nn, embedding_bag_sum) { bag_case(RK_BAG_SUM, "sum"); }
Test(nn, embedding_bag_mean) { bag_case(RK_BAG_MEAN, "mean"); }

/* With out_stride > d the bag writes only its d columns of each row, and the
 * backward reads only those columns of dout. */
Test(nn, embedding_bag_stride_touches_only_its_slice) {
    enum { STRIDE = 11, COL = 3 };
    const float SENTINEL = -777.0f;
    bag_fx f;
    load_bag(&f);
    float *out_ref = ld("bag.mean.out", B * DE), *dt_ref = ld("bag.mean.dtable", ROWS * DE);

    float wide[B * STRIDE];
    fill(wide, B * STRIDE, SENTINEL);
    rk_embedding_bag_forward(wide + COL, STRIDE, f.table, f.offsets, f.idx, B, DE, RK_BAG_MEAN);
    float got[B * DE];
    for (int r = 0; r < B; r++)
        for (int c = 0; c < STRIDE; c++) {
            float v = wide[r * STRIDE + c];
            if (c >= COL && c < COL + DE) got[r * DE + c - COL] = v;
            else cr_assert(v == SENTINEL, "row %d column %d outside the slice written: %g", r, c, v);
        }
    check_close("strided bag out", got, out_ref, B * DE);

    /* Backward: garbage outside the slice must not leak into the gradient. */
    float dwide[B * STRIDE];
    fill(dwide, B * STRIDE, 1e6f);
    for (int r = 0; r < B; r++) memcpy(dwide + r * STRIDE + COL, f.dout + r * DE, DE * sizeof(float));
    float dt[ROWS * DE] = {0};
    rk_embedding_bag_backward(dt, dwide + COL, STRIDE, f.offsets, f.idx, B, DE, RK_BAG_MEAN);
    check_close("strided bag dtable", dt, dt_ref, ROWS * DE);
}

/* ---------------------------------------------------------------- loss */

Test(nn, bce_logits_stable_and_matches_torch) {
    enum { N = 9 };
    float *z = ld("bce.z", N), *y = ld("bce.y", N), *loss_ref = ld("bce.loss", 1);
    float *dz_ref = ld("bce.dz", N);
    float dz[N];
    fill(dz, N, NAN);
    double loss = rk_bce_logits(z, y, N, dz);
    cr_assert(close_enough(loss, loss_ref[0], ATOL, RTOL), "bce loss: got %.9g, ref %.9g", loss,
              (double)loss_ref[0]);
    check_close("bce dz", dz, dz_ref, N);
    cr_assert_eq(rk_bce_logits(z, y, N, NULL), loss, "loss must not depend on dz == NULL");

    /* Saturated logits: the loss is |z| when wrong and ~exp(-|z|) when right,
     * never inf or NaN (a naive log(sigmoid) gives log(0) here). */
    float zz[2] = {100.0f, -100.0f}, y_wrong[2] = {0.0f, 1.0f}, y_right[2] = {1.0f, 0.0f};
    cr_assert(close_enough(rk_bce_logits(zz, y_wrong, 2, NULL), 100.0, 1e-9, 1e-12));
    double small = rk_bce_logits(zz, y_right, 2, NULL);
    cr_assert(small > 0 && close_enough(small, exp(-100.0), 0, 1e-6), "got %g", small);
}

/* ---------------------------------------------------------------- optimizers */

Test(nn, adam_matches_torch) {
    enum { N = 12 };
    float *hp = ld("adam.hparams", 4), *p0 = ld("adam.p0", N), *g = ld("adam.g", STEPS * N);
    float *p_ref = ld("adam.p", STEPS * N), *m_ref = ld("adam.m", N), *v_ref = ld("adam.v", N);
    float p[N], m[N] = {0}, v[N] = {0};
    memcpy(p, p0, sizeof p);
    for (long t = 1; t <= STEPS; t++) {
        rk_adam_step(p, g + (t - 1) * N, m, v, N, hp[0], hp[1], hp[2], hp[3], t);
        char what[32];
        snprintf(what, sizeof what, "adam p after step %ld", t);
        check_close(what, p, p_ref + (t - 1) * N, N);
    }
    check_close("adam m", m, m_ref, N);
    check_close("adam v", v, v_ref, N);
}

Test(nn, adagrad_rows_matches_torch_dense) {
    enum { K = 3 };
    float *hp = ld("adagrad.hparams", 2), *p0 = ld("adagrad.p0", ROWS * DE);
    float *g = ld("adagrad.g", STEPS * ROWS * DE), *p_ref = ld("adagrad.p", STEPS * ROWS * DE);
    float *s_ref = ld("adagrad.s", ROWS * DE);
    uint64_t rows[STEPS * K];
    ld_u64(rows, "adagrad.rows", STEPS * K);
    cr_assert(hp[1] > 0 && hp[1] < 1e-9f, "fixture eps %g is not torch's default 1e-10", hp[1]);

    float p[ROWS * DE], s[ROWS * DE] = {0};
    memcpy(p, p0, sizeof p);
    for (int t = 0; t < STEPS; t++) {
        float before[ROWS * DE];
        memcpy(before, p, sizeof p);
        rk_adagrad_rows(p, g + t * ROWS * DE, s, rows + t * K, K, DE, hp[0], hp[1]);
        char what[40];
        snprintf(what, sizeof what, "adagrad p after step %d", t + 1);
        check_close(what, p, p_ref + t * ROWS * DE, ROWS * DE);
        /* Rows not listed are bit-for-bit untouched. */
        for (int r = 0; r < ROWS; r++) {
            int listed = 0;
            for (int k = 0; k < K; k++) listed |= rows[t * K + k] == (uint64_t)r;
            if (!listed)
                cr_assert(!memcmp(p + r * DE, before + r * DE, DE * sizeof(float)),
                          "step %d: unlisted row %d changed", t + 1, r);
        }
    }
    check_close("adagrad state", s, s_ref, ROWS * DE);
}

/* ---------------------------------------------------------------- finite differences */

/* A small net: x[FB,FI] -> linear(W1,b1) -> relu -> h[FB,FH]
 *   -> cross(x0 = h, xl = h; Wc, bc) -> c -> linear(W2,b2) -> z[FB] -> BCE.
 * The analytic gradient of every parameter and of the input is compared with
 * central differences (L(w+e) - L(w-e)) / 2e in double from the float forward
 * pass. e = 1e-2 keeps float rounding of the loss (~1e-7) well below the
 * difference; the O(e^2) truncation and that noise stay under the tolerance
 * FD_ATOL + FD_RTOL*|analytic|. A coordinate whose perturbation flips a
 * ReLU's sign is skipped (the loss has a kink there); at most a few are. */
enum { FB = 4, FI = 5, FH = 6 };
#define FD_EPS 1e-2f
#define FD_ATOL 5e-4
#define FD_RTOL 1e-2

typedef struct {
    float x[FB * FI], y[FB];
    float W1[FH * FI], b1[FH], Wc[FH * FH], bc[FH], W2[FH], b2[1];
} fd_net;

typedef struct {
    float a1[FB * FH], h[FB * FH], u[FB * FH], c[FB * FH], z[FB], dz[FB];
} fd_acts;

static double fd_forward(const fd_net *n, fd_acts *a) {
    rk_linear_forward(a->a1, n->x, n->W1, n->b1, FB, FI, FH);
    rk_relu_forward(a->h, a->a1, FB * FH);
    rk_cross_forward(a->c, a->u, a->h, a->h, n->Wc, n->bc, FB, FH);
    rk_linear_forward(a->z, a->c, n->W2, n->b2, FB, FH, 1);
    return rk_bce_logits(a->z, n->y, FB, a->dz);
}

static void fd_backward(const fd_net *n, const fd_acts *a, fd_net *g) {
    memset(g, 0, sizeof *g);
    float dc[FB * FH], dh[FB * FH] = {0}, dhl[FB * FH], scratch[FB * FH];
    rk_linear_backward(dc, g->W2, g->b2, a->dz, a->c, n->W2, FB, FH, 1);
    rk_cross_backward(dh, dhl, g->Wc, g->bc, dc, a->h, a->h, a->u, n->Wc, FB, FH, scratch);
    for (int i = 0; i < FB * FH; i++) dh[i] += dhl[i]; /* h is both x0 and xl */
    rk_relu_backward(dh, dh, a->h, FB * FH);
    rk_linear_backward(g->x, g->W1, g->b1, dh, n->x, n->W1, FB, FI, FH);
}

static int same_relu_pattern(const fd_acts *a, const fd_acts *b) {
    for (int i = 0; i < FB * FH; i++)
        if ((a->a1[i] > 0) != (b->a1[i] > 0)) return 0;
    return 1;
}

Test(nn, finite_difference_gradients) {
    fd_net n, g;
    rk_rng rng;
    rk_rng_seed(&rng, 42);
    float *all = (float *)&n;
    for (size_t i = 0; i < sizeof n / sizeof(float); i++) all[i] = (float)(0.7 * rk_rng_normal(&rng));
    for (int i = 0; i < FB; i++) n.y[i] = (float)(i % 2);

    fd_acts a0, a;
    fd_forward(&n, &a0);
    int active = 0;
    for (int i = 0; i < FB * FH; i++) active += a0.a1[i] > 0;
    cr_assert(active > 0 && active < FB * FH, "ReLU should be partly active (%d of %d)", active,
              FB * FH);
    fd_backward(&n, &a0, &g);

    /* Every array of fd_net except the labels, by offset into the struct. */
    static const struct {
        const char *name;
        size_t off, len;
    } arrs[] = {
        {"x", offsetof(fd_net, x), FB * FI},    {"W1", offsetof(fd_net, W1), FH * FI},
        {"b1", offsetof(fd_net, b1), FH},       {"Wc", offsetof(fd_net, Wc), FH * FH},
        {"bc", offsetof(fd_net, bc), FH},       {"W2", offsetof(fd_net, W2), FH},
        {"b2", offsetof(fd_net, b2), 1},
    };
    int checked = 0, skipped = 0, total = 0;
    double worst = 0;
    for (size_t k = 0; k < sizeof arrs / sizeof *arrs; k++) {
        float *p = (float *)((char *)&n + arrs[k].off);
        const float *gp = (const float *)((const char *)&g + arrs[k].off);
        for (size_t i = 0; i < arrs[k].len; i++, total++) {
            float save = p[i];
            p[i] = save + FD_EPS;
            double lp = fd_forward(&n, &a);
            int ok = same_relu_pattern(&a0, &a);
            p[i] = save - FD_EPS;
            double lm = fd_forward(&n, &a);
            ok = ok && same_relu_pattern(&a0, &a);
            p[i] = save;
            if (!ok) {
                skipped++;
                continue;
            }
            double fd = (lp - lm) / (2.0 * (double)FD_EPS);
            double err = fabs(gp[i] - fd) / (FD_ATOL + FD_RTOL * fabs(fd));
            if (err > worst) worst = err;
            cr_expect(close_enough(gp[i], fd, FD_ATOL, FD_RTOL),
                      "d loss / d %s[%zu]: analytic %.7g, finite difference %.7g", arrs[k].name, i,
                      (double)gp[i], fd);
            checked++;
        }
    }
    cr_log_info("finite differences: %d coordinates checked, %d skipped at ReLU kinks, worst "
                "error %.2f of tolerance",
                checked, skipped, worst);
    cr_assert_geq(checked, total - 5, "only %d of %d coordinates checked", checked, total);
}
