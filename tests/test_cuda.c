/*
 * tests/test_cuda.c — nn/'s CUDA backend (nn/cuda/ops.cu, nn/device.c).
 *
 * Everywhere: the backend library was built when nvcc was found and exports
 * a table of the expected version; device specs are checked; opening a
 * device without a usable GPU is an error that names the CUDA error (never a
 * silent fallback); a missing library is an error that says where it was
 * looked for.
 * On a GPU (skipped with "skipped: no GPU" otherwise): every CUDA op against
 * the CPU op of nn.h on the same random inputs — towers |gpu - cpu| <= 1e-5,
 * encoder ops cosine >= 0.99999 and |gpu - cpu| <= 1e-4 — and a whole DCNv2
 * tower (embedding bags -> cross layers -> MLP -> logit -> sigmoid) composed
 * from the device ops against the same tower on the CPU.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "cuda/api.h"
#include "nn.h"

#define LIB_PATH RK_BINARY_DIR "/lib/librankd_cuda.so"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}

/* The GPU, or skip the test naming why there is none. */
static rk_device *gpu_or_skip(void) {
    rk_device *d = NULL;
    rk_err e = {0};
    if (rk_device_open("cuda:0", &d, &e) != RK_OK) cr_skip_test("skipped: no GPU (%s)", e.msg);
    return d;
}

static void *up(rk_device *d, const void *host, size_t bytes) {
    void *p = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_device_alloc(d, bytes, &p, &e), RK_OK, "%s", e.msg);
    if (host) cr_assert_eq(rk_device_upload(d, p, host, bytes, &e), RK_OK, "%s", e.msg);
    return p;
}

/* Sync, copy n floats back, free the device buffer. */
static float *down(rk_device *d, float *dev, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    rk_err e = {0};
    cr_assert_eq(rk_device_download(d, h, dev, n * sizeof *h, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_device_sync(d, &e), RK_OK, "%s", e.msg);
    rk_device_free(d, dev);
    return h;
}

static void expect_close(const float *got, const float *ref, size_t n, double atol, const char *what) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)got[i] - ref[i]);
        if (!(diff <= worst)) worst = diff, at = i;
    }
    cr_expect(worst <= atol, "%s: max |gpu - cpu| = %g at %zu (gpu %g, cpu %g) > %g", what, worst, at,
              (double)got[at], (double)ref[at], atol);
}

static void expect_cosine(const float *got, const float *ref, size_t n, double min_cos, const char *what) {
    double dot = 0, a = 0, b = 0;
    for (size_t i = 0; i < n; i++) dot += (double)got[i] * ref[i], a += (double)got[i] * got[i], b += (double)ref[i] * ref[i];
    double cos = dot / (sqrt(a) * sqrt(b) + 1e-30);
    cr_expect(cos >= min_cos, "%s: cosine %.8f < %.8f", what, cos, min_cos);
}

/* ---------------------------------------------------------------- everywhere */

Test(cuda, library_built_with_the_expected_table) {
    if (!RK_CUDA_BUILT) {
        cr_expect_eq(access(LIB_PATH, F_OK), -1, "no nvcc at configure time, yet %s exists", LIB_PATH);
        cr_skip_test("skipped: the CUDA library was not built (no nvcc at configure time)");
    }
    void *h = dlopen(LIB_PATH, RTLD_NOW | RTLD_LOCAL);
    cr_assert(h, "dlopen %s: %s", LIB_PATH, dlerror());
    const rk_cuda_api *api = dlsym(h, "rk_cuda_api_v1");
    cr_assert(api, "rk_cuda_api_v1 not exported");
    cr_expect_eq(api->version, RK_CUDA_API_VERSION);
    cr_expect(api->open && api->linear_forward && api->attention_forward && api->l2_normalize);
    /* Only the table is exported: the kernels' host stubs stay hidden. */
    cr_expect_null(dlsym(h, "ctx_open"));
}

Test(cuda, spec_is_checked) {
    const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "cuda:1x", "", NULL};
    for (int i = 0; bad[i]; i++) {
        rk_device *d = (rk_device *)1;
        rk_err e = {0};
        cr_expect_eq(rk_device_open(bad[i], &d, &e), RK_EINVAL, "spec '%s'", bad[i]);
        cr_expect_null(d);
        cr_expect(strstr(e.msg, "expected cpu, auto, cuda or cuda:N"), "%s", e.msg);
    }
}

/* Without a GPU the open fails naming the CUDA error; with one it works and
 * describes the device. Never a silent CPU fallback. */
Test(cuda, open_names_the_cuda_error_or_succeeds) {
    rk_device *d = NULL;
    rk_err e = {0};
    rk_status st = rk_device_open("cuda", &d, &e);
    if (!RK_CUDA_BUILT) {
        cr_expect_eq(st, RK_ENOTFOUND, "%s", e.msg);
        cr_expect(strstr(e.msg, "RK_CUDA_LIBRARY"), "%s", e.msg);
        return;
    }
    if (st == RK_OK) {
        cr_expect(strstr(rk_device_describe(d), "cuda:0 "), "%s", rk_device_describe(d));
        rk_device_close(d);
        return;
    }
    cr_expect_eq(st, RK_EIO, "%s", e.msg);
    cr_expect_null(d);
    cr_expect(strstr(e.msg, "device 'cuda': ") && strstr(e.msg, "cudaError"), "names the CUDA error: %s", e.msg);
}

Test(cuda, a_missing_library_is_a_clear_error) {
    setenv("RK_CUDA_LIBRARY", "/nonexistent/librankd_cuda.so", 1);
    unsetenv("LD_LIBRARY_PATH");
    rk_device *d = NULL;
    rk_err e = {0};
    rk_status st = rk_device_open("cuda:0", &d, &e);
    /* The build tree's copy may still be found next to the executable; the
     * message must then be a CUDA one. Otherwise: which paths, and why. */
    if (st == RK_ENOTFOUND) {
        cr_expect(strstr(e.msg, "/nonexistent/librankd_cuda.so"), "%s", e.msg);
    } else if (st == RK_OK) {
        rk_device_close(d);
    } else {
        cr_expect_eq(st, RK_EIO, "%s", e.msg);
    }
}

/* ---------------------------------------------------------------- on a GPU: tower ops */

Test(cuda, linear_with_bias_relu_and_without) {
    rk_device *d = gpu_or_skip();
    const int B = 37, in = 97, out = 65;
    float *x = rand_buf((size_t)B * in, 1), *W = rand_buf((size_t)out * in, 0.2f), *b = rand_buf(out, 0.5f);
    float *ref = malloc(sizeof(float) * B * out);
    for (int variant = 0; variant < 3; variant++) {
        const float *bias = variant == 2 ? NULL : b;
        int relu = variant == 1;
        rk_linear_forward(ref, x, W, bias, B, in, out);
        if (relu) rk_relu_forward(ref, ref, (size_t)B * out);
        float *dx = up(d, x, sizeof(float) * B * in), *dW = up(d, W, sizeof(float) * out * in);
        float *db = up(d, b, sizeof(float) * out), *dy = up(d, NULL, sizeof(float) * B * out);
        rk_dev_linear_forward(d, dy, dx, dW, bias ? db : NULL, B, in, out, relu);
        float *got = down(d, dy, (size_t)B * out);
        expect_close(got, ref, (size_t)B * out, 1e-5, variant == 0 ? "linear" : variant == 1 ? "linear+relu" : "linear, no bias");
        free(got);
        rk_device_free(d, dx), rk_device_free(d, dW), rk_device_free(d, db);
    }
    free(x), free(W), free(b), free(ref);
    rk_device_close(d);
}

Test(cuda, cross_relu_sigmoid) {
    rk_device *d = gpu_or_skip();
    const int B = 200, D = 97;
    size_t n = (size_t)B * D;
    float *x0 = rand_buf(n, 1), *xl = rand_buf(n, 1), *W = rand_buf((size_t)D * D, 0.1f), *b = rand_buf(D, 0.1f);
    float *ref = malloc(sizeof(float) * n), *uref = malloc(sizeof(float) * n);
    rk_cross_forward(ref, uref, x0, xl, W, b, B, D);
    float *dx0 = up(d, x0, n * 4), *dxl = up(d, xl, n * 4), *dW = up(d, W, (size_t)D * D * 4), *db = up(d, b, D * 4);
    float *dout = up(d, NULL, n * 4), *du = up(d, NULL, n * 4);
    rk_dev_cross_forward(d, dout, du, dx0, dxl, dW, db, B, D);
    float *got = down(d, dout, n), *ugot = down(d, du, n);
    expect_close(got, ref, n, 1e-5, "cross x_{l+1}");
    expect_close(ugot, uref, n, 1e-5, "cross u");
    /* relu and sigmoid over values that cross 0 and reach +-30 */
    float *z = rand_buf(n, 30), *r1 = malloc(n * 4), *r2 = malloc(n * 4);
    rk_relu_forward(r1, z, n);
    for (size_t i = 0; i < n; i++) r2[i] = rk_sigmoid(z[i]);
    float *dz = up(d, z, n * 4), *dr = up(d, NULL, n * 4), *ds = up(d, NULL, n * 4);
    rk_dev_relu_forward(d, dr, dz, n);
    rk_dev_sigmoid_forward(d, ds, dz, n);
    float *g1 = down(d, dr, n), *g2 = down(d, ds, n);
    expect_close(g1, r1, n, 0, "relu");
    expect_close(g2, r2, n, 1e-6, "sigmoid");
    rk_device_free(d, dx0), rk_device_free(d, dxl), rk_device_free(d, dW), rk_device_free(d, db), rk_device_free(d, dz);
    free(x0), free(xl), free(W), free(b), free(ref), free(uref), free(got), free(ugot), free(z), free(r1), free(r2);
    free(g1), free(g2);
    rk_device_close(d);
}

Test(cuda, embedding_bag_sum_mean_empty_and_fm) {
    rk_device *d = gpu_or_skip();
    const int B = 50, dim = 16, rows = 300, stride = 3 * dim + 5;
    float *table = rand_buf((size_t)rows * dim, 1);
    uint32_t off[51];
    uint64_t idx[400];
    off[0] = 0;
    for (int b = 0; b < B; b++) off[b + 1] = off[b] + (uint32_t)(b % 7 == 0 ? 0 : 1 + b % 9); /* some empty bags */
    for (uint32_t k = 0; k < off[B]; k++) idx[k] = (uint64_t)((k * 7919u) % rows);
    size_t n = (size_t)B * stride;
    float *ref = calloc(n, 4);
    rk_embedding_bag_forward(ref, stride, table, off, idx, B, dim, RK_BAG_SUM);
    rk_embedding_bag_forward(ref + dim, stride, table, off, idx, B, dim, RK_BAG_MEAN);
    rk_embedding_bag_forward(ref + 2 * dim, stride, table, off, idx, B, dim, RK_BAG_SUM);
    float *dt = up(d, table, (size_t)rows * dim * 4), *dout = up(d, ref, n * 4); /* same untouched columns */
    uint32_t *doff = up(d, off, sizeof off);
    uint64_t *didx = up(d, idx, sizeof(uint64_t) * off[B]);
    rk_dev_embedding_bag_forward(d, dout, stride, dt, doff, didx, B, dim, RK_BAG_SUM);
    rk_dev_embedding_bag_forward(d, dout + dim, stride, dt, doff, didx, B, dim, RK_BAG_MEAN);
    rk_dev_embedding_bag_forward(d, dout + 2 * dim, stride, dt, doff, didx, B, dim, RK_BAG_SUM);
    /* FM over the three bags as fields */
    int cols[3] = {0, dim, 2 * dim};
    float *fref = malloc(B * 4);
    rk_fm_forward(fref, ref, stride, cols, 3, dim, B);
    int *dcols = up(d, cols, sizeof cols);
    float *dfm = up(d, NULL, B * 4);
    rk_dev_fm_forward(d, dfm, dout, stride, dcols, 3, dim, B);
    float *fgot = down(d, dfm, B), *got = down(d, dout, n);
    expect_close(got, ref, n, 0, "embedding bag (rows summed in index order: bit-identical)");
    expect_close(fgot, fref, B, 1e-5, "fm");
    rk_device_free(d, dt), rk_device_free(d, doff), rk_device_free(d, didx), rk_device_free(d, dcols);
    free(table), free(ref), free(fref), free(fgot), free(got);
    rk_device_close(d);
}

/* A whole DCNv2 tower of the demo's shape (6 bags of dim 16 + 1 dense ->
 * D = 97, 2 cross layers, MLP 128-64, logit, sigmoid) on both sides. */
Test(cuda, dcnv2_tower_end_to_end) {
    rk_device *d = gpu_or_skip();
    const int B = 1000, D = 97, H1 = 128, H2 = 64;
    size_t n = (size_t)B * D;
    float *x0 = rand_buf(n, 0.5f), *cW[2], *cb[2], *W1 = rand_buf((size_t)H1 * D, 0.1f), *b1 = rand_buf(H1, 0.1f);
    float *W2 = rand_buf((size_t)H2 * H1, 0.1f), *b2 = rand_buf(H2, 0.1f), *Wo = rand_buf(H2, 0.2f), *bo = rand_buf(1, 0.1f);
    for (int l = 0; l < 2; l++) cW[l] = rand_buf((size_t)D * D, 0.05f), cb[l] = rand_buf(D, 0.05f);
    float *xa = malloc(n * 4), *xb = malloc(n * 4), *u = malloc(n * 4), *h1 = malloc((size_t)B * H1 * 4);
    float *h2 = malloc((size_t)B * H2 * 4), *ref = malloc(B * 4);
    rk_cross_forward(xa, u, x0, x0, cW[0], cb[0], B, D);
    rk_cross_forward(xb, u, x0, xa, cW[1], cb[1], B, D);
    rk_linear_forward(h1, xb, W1, b1, B, D, H1), rk_relu_forward(h1, h1, (size_t)B * H1);
    rk_linear_forward(h2, h1, W2, b2, B, H1, H2), rk_relu_forward(h2, h2, (size_t)B * H2);
    rk_linear_forward(ref, h2, Wo, bo, B, H2, 1);
    for (int b = 0; b < B; b++) ref[b] = rk_sigmoid(ref[b]);

    float *g_x0 = up(d, x0, n * 4), *g_xa = up(d, NULL, n * 4), *g_xb = up(d, NULL, n * 4), *g_u = up(d, NULL, n * 4);
    float *g_cW[2], *g_cb[2];
    for (int l = 0; l < 2; l++) g_cW[l] = up(d, cW[l], (size_t)D * D * 4), g_cb[l] = up(d, cb[l], D * 4);
    float *g_W1 = up(d, W1, (size_t)H1 * D * 4), *g_b1 = up(d, b1, H1 * 4), *g_W2 = up(d, W2, (size_t)H2 * H1 * 4);
    float *g_b2 = up(d, b2, H2 * 4), *g_Wo = up(d, Wo, H2 * 4), *g_bo = up(d, bo, 4);
    float *g_h1 = up(d, NULL, (size_t)B * H1 * 4), *g_h2 = up(d, NULL, (size_t)B * H2 * 4), *g_p = up(d, NULL, B * 4);
    rk_dev_cross_forward(d, g_xa, g_u, g_x0, g_x0, g_cW[0], g_cb[0], B, D);
    rk_dev_cross_forward(d, g_xb, g_u, g_x0, g_xa, g_cW[1], g_cb[1], B, D);
    rk_dev_linear_forward(d, g_h1, g_xb, g_W1, g_b1, B, D, H1, 1);
    rk_dev_linear_forward(d, g_h2, g_h1, g_W2, g_b2, B, H1, H2, 1);
    rk_dev_linear_forward(d, g_p, g_h2, g_Wo, g_bo, B, H2, 1, 0);
    rk_dev_sigmoid_forward(d, g_p, g_p, B);
    float *got = down(d, g_p, B);
    expect_close(got, ref, B, 1e-5, "DCNv2 tower pCTR");
    void *all[] = {g_x0, g_xa, g_xb, g_u, g_cW[0], g_cW[1], g_cb[0], g_cb[1], g_W1, g_b1, g_W2, g_b2, g_Wo, g_bo, g_h1, g_h2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) rk_device_free(d, all[i]);
    void *host[] = {x0, cW[0], cW[1], cb[0], cb[1], W1, b1, W2, b2, Wo, bo, xa, xb, u, h1, h2, ref, got};
    for (size_t i = 0; i < sizeof host / sizeof *host; i++) free(host[i]);
    rk_device_close(d);
}

/* ---------------------------------------------------------------- on a GPU: encoder ops */

Test(cuda, layernorm_gelu_softmax_l2) {
    rk_device *d = gpu_or_skip();
    const int N = 70, D = 384;
    size_t n = (size_t)N * D;
    float *x = rand_buf(n, 3), *res = rand_buf(n, 1), *g = rand_buf(D, 1), *b = rand_buf(D, 0.2f);
    float *ref = malloc(n * 4);
    rk_layernorm_forward(ref, x, res, g, b, N, D, 1e-12f);
    float *dx = up(d, x, n * 4), *dres = up(d, res, n * 4), *dg = up(d, g, D * 4), *db = up(d, b, D * 4);
    float *dy = up(d, NULL, n * 4);
    rk_dev_layernorm_forward(d, dy, dx, dres, dg, db, N, D, 1e-12f);
    float *got = down(d, dy, n);
    expect_close(got, ref, n, 1e-4, "layernorm");
    expect_cosine(got, ref, n, 0.99999, "layernorm");
    free(got);
    /* GELU */
    float *gref = malloc(n * 4);
    rk_gelu_forward(gref, x, n);
    float *dgl = up(d, NULL, n * 4);
    rk_dev_gelu_forward(d, dgl, dx, n);
    got = down(d, dgl, n);
    expect_close(got, gref, n, 1e-5, "gelu");
    free(got);
    /* masked softmax, with one fully masked column set as a second call */
    uint8_t mask[384];
    for (int j = 0; j < D; j++) mask[j] = (uint8_t)(j % 5 != 0);
    float *sref = malloc(n * 4);
    rk_softmax_masked_forward(sref, x, mask, N, D, 0.125f);
    uint8_t *dmask = up(d, mask, sizeof mask);
    float *dsm = up(d, NULL, n * 4);
    rk_dev_softmax_masked_forward(d, dsm, dx, dmask, N, D, 0.125f);
    got = down(d, dsm, n);
    expect_close(got, sref, n, 1e-6, "softmax masked");
    free(got);
    memset(mask, 0, sizeof mask);
    cr_assert_eq(rk_device_upload(d, dmask, mask, sizeof mask, NULL), RK_OK);
    dsm = up(d, NULL, n * 4);
    rk_dev_softmax_masked_forward(d, dsm, dx, dmask, N, D, 1.0f);
    got = down(d, dsm, n);
    for (size_t i = 0; i < n; i++) cr_expect_eq(got[i], 0.0f, "all columns masked -> zeros");
    free(got);
    /* L2 normalize (in place) */
    float *lref = malloc(n * 4);
    memcpy(lref, x, n * 4);
    rk_l2_normalize(lref, N, D, 1e-12f);
    rk_dev_l2_normalize(d, dx, N, D, 1e-12f);
    got = down(d, dx, n);
    expect_close(got, lref, n, 1e-6, "l2 normalize");
    free(got);
    rk_device_free(d, dres), rk_device_free(d, dg), rk_device_free(d, db), rk_device_free(d, dmask);
    free(x), free(res), free(g), free(b), free(ref), free(gref), free(sref), free(lref);
    rk_device_close(d);
}

Test(cuda, packed_attention_and_mean_pool) {
    rk_device *d = gpu_or_skip();
    const int n_heads = 12, hd = 32, D = n_heads * hd, n_seq = 4;
    int32_t off[5] = {0, 5, 6, 6, 129}; /* lengths 5, 1, 0 (empty) and 123 */
    const int T = off[n_seq], max_len = 123;
    float *qkv = rand_buf((size_t)T * 3 * D, 1), *ref = calloc((size_t)T * D, 4);
    float *scratch = malloc(rk_attention_scratch_floats(max_len) * 4);
    rk_attention_forward(ref, qkv, off, n_seq, n_heads, hd, scratch);
    float *dq = up(d, qkv, (size_t)T * 3 * D * 4), *dout = up(d, NULL, (size_t)T * D * 4);
    int32_t *doff = up(d, off, sizeof off);
    rk_dev_attention_forward(d, dout, dq, doff, n_seq, T, n_heads, hd, max_len);
    float *got = down(d, dout, (size_t)T * D);
    expect_close(got, ref, (size_t)T * D, 1e-5, "attention");
    expect_cosine(got, ref, (size_t)T * D, 0.99999, "attention");
    /* mean pool over the same packing, the empty sequence -> zeros */
    float *pref = malloc((size_t)n_seq * D * 4);
    rk_mean_pool_forward(pref, ref, off, n_seq, D);
    float *dx = up(d, ref, (size_t)T * D * 4), *dp = up(d, NULL, (size_t)n_seq * D * 4);
    rk_dev_mean_pool_forward(d, dp, dx, doff, n_seq, D);
    float *pgot = down(d, dp, (size_t)n_seq * D);
    expect_close(pgot, pref, (size_t)n_seq * D, 1e-6, "mean pool");
    rk_device_free(d, dq), rk_device_free(d, doff), rk_device_free(d, dx);
    free(qkv), free(ref), free(scratch), free(got), free(pref), free(pgot);
    rk_device_close(d);
}
