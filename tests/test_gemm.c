/*
 * tests/test_gemm.c — nn/gemm.c's packed inference kernels.
 *
 * Two references: rk_gemm_forward_ref (plain C loops over the unpacked W,
 * the definition) must equal every kernel the CPU has BIT FOR BIT (all of
 * them sum each output in the same fma order), and OpenBLAS
 * (rk_linear_forward + the unfused ReLU / cross ops of nn.c, the reference
 * path of training) must agree within
 * |got - ref| <= 1e-5 + 1e-6 * sqrt(K) + 1e-5 * |ref| (float32 summation
 * order only; the sqrt(K) term covers the rounding of long dot products). Shapes cover every edge of the tiling:
 * rows 1..13 and a few hundred (tile and row-block tails), columns below,
 * at and past a 16-wide panel, odd panel counts, K = 1 and odd K, x packed
 * (rows in one L1 set, or within one line: K = 1, 7, 512, 4100, 8200) and
 * read in place (K = 16, 97, 400, 4196, 8292).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "core.h"
#include "nn.h"

static float *randv(rk_rng *g, size_t n) {
    float *v = rk_malloc((n ? n : 1) * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < n; i++) v[i] = (float)(2 * rk_rng_uniform(g) - 1);
    return v;
}

/* OpenBLAS reference of the three epilogues (the training path's ops). */
static void blas_ref(float *y, const float *x, const float *W, const float *b, int M, int K, int N, rk_epilogue ep,
                     const float *x0, const float *xl) {
    if (ep == RK_EPI_CROSS) {
        float *u = rk_malloc((size_t)M * N * sizeof *u);
        rk_cross_forward(y, u, x0, xl, W, b, M, K);
        rk_free(u);
        return;
    }
    rk_linear_forward(y, x, W, b, M, K, N);
    if (ep == RK_EPI_BIAS_RELU) rk_relu_forward(y, y, (size_t)M * N);
}

static void check_shape(rk_rng *g, int M, int K, int N, rk_epilogue ep) {
    if (ep == RK_EPI_CROSS) N = K;
    float *x = randv(g, (size_t)M * K), *W = randv(g, (size_t)N * K), *b = randv(g, (size_t)N);
    float *x0 = randv(g, (size_t)M * N);
    float *Wp = rk_malloc(rk_gemm_packed_floats(K, N) * sizeof(float));
    float *ref = rk_malloc((size_t)M * N * sizeof(float)), *got = rk_malloc((size_t)M * N * sizeof(float));
    float *blas = rk_malloc((size_t)M * N * sizeof(float));
    cr_assert(Wp && ref && got && blas);
    rk_gemm_pack(Wp, W, N, K);
    const float *xl = ep == RK_EPI_CROSS ? x : NULL;
    rk_gemm_forward_ref(ref, x, W, b, M, K, N, ep, x0, xl);
    blas_ref(blas, x, W, b, M, K, N, ep, x0, xl);
    for (size_t i = 0; i < (size_t)M * N; i++)
        cr_assert(fabsf(ref[i] - blas[i]) <= 1e-5f + 1e-6f * sqrtf((float)K) + 1e-5f * fabsf(blas[i]), "M=%d K=%d N=%d ep=%d [%zu]: ref %.9g, OpenBLAS %.9g",
                  M, K, N, (int)ep, i, ref[i], blas[i]);
    for (int k = RK_GEMM_PLAIN; k <= RK_GEMM_AVX512; k++) {
        if (rk_gemm_kernel_set((rk_gemm_kernel)k)) continue; /* the CPU lacks it */
        memset(got, 0xff, (size_t)M * N * sizeof(float));   /* NaN: an unwritten value fails */
        rk_gemm_forward(got, x, Wp, b, M, K, N, ep, x0, xl);
        cr_assert(memcmp(got, ref, (size_t)M * N * sizeof(float)) == 0, "kernel %s M=%d K=%d N=%d ep=%d differs from the reference",
                  rk_gemm_kernel_name((rk_gemm_kernel)k), M, K, N, (int)ep);
    }
    rk_gemm_kernel_set(RK_GEMM_AUTO);
    rk_free(x), rk_free(W), rk_free(b), rk_free(x0), rk_free(Wp), rk_free(ref), rk_free(got), rk_free(blas);
}

Test(gemm, every_kernel_equals_reference_and_openblas) {
    rk_rng g;
    rk_rng_seed(&g, 16);
    const int Ms[] = {1, 2, 5, 6, 7, 11, 12, 13, 25, 200};
    const int Ks[] = {1, 7, 16, 97};
    const int Ns[] = {1, 15, 16, 17, 33, 64, 97};
    for (int ep = RK_EPI_BIAS; ep <= RK_EPI_CROSS; ep++)
        for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
            for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++)
                for (size_t d = 0; d < (ep == RK_EPI_CROSS ? 1 : sizeof Ns / sizeof *Ns); d++)
                    check_shape(&g, Ms[a], Ks[c], Ns[d], (rk_epilogue)ep);
    /* the row-block tail (blocks of 49152 / (K * MR) tiles) at a larger K,
     * x packed (K = 512) and in place (K = 400: 120-row blocks) */
    check_shape(&g, 300, 512, 40, RK_EPI_BIAS_RELU);
    check_shape(&g, 300, 400, 40, RK_EPI_BIAS_RELU);
    /* K past one 4096-wide chunk: running sums parked in y between chunks */
    check_shape(&g, 13, 4100, 17, RK_EPI_BIAS_RELU);
    check_shape(&g, 2, 8200, 8200, RK_EPI_CROSS);
    /* x read in place (rows in distinct L1 sets: K = 16 and 97 above) across
     * K chunks: 4196 floats = 16784 bytes, 400 mod 4096 */
    check_shape(&g, 13, 4196, 17, RK_EPI_BIAS_RELU);
}

Test(gemm, relu_passes_nan_and_zeroes_negatives) {
    /* K = 1, W = 1, b = 0: y = relu(x). */
    float x[3] = {-2.0f, NAN, 3.0f}, W[1] = {1.0f}, Wp[16], y[3];
    rk_gemm_pack(Wp, W, 1, 1);
    for (int k = RK_GEMM_PLAIN; k <= RK_GEMM_AVX512; k++) {
        if (rk_gemm_kernel_set((rk_gemm_kernel)k)) continue;
        rk_gemm_forward(y, x, Wp, NULL, 3, 1, 1, RK_EPI_BIAS_RELU, NULL, NULL);
        cr_assert(y[0] == 0.0f && isnan(y[1]) && y[2] == 3.0f, "kernel %s: relu gave %g %g %g",
                  rk_gemm_kernel_name((rk_gemm_kernel)k), y[0], y[1], y[2]);
    }
    rk_gemm_kernel_set(RK_GEMM_AUTO);
}

Test(gemm, hand_computed_cross_layer) {
    /* x = x0 = xl = [1, 2], W = [[1, 0], [2, 1]], b = [0.5, -1]:
     * u = W x + b = [1.5, 3]; y = x0 * u + xl = [2.5, 8]. */
    float x[2] = {1, 2}, W[4] = {1, 0, 2, 1}, b[2] = {0.5f, -1}, Wp[32], y[2];
    rk_gemm_pack(Wp, W, 2, 2);
    rk_gemm_forward(y, x, Wp, b, 1, 2, 2, RK_EPI_CROSS, x, x);
    cr_assert(y[0] == 2.5f && y[1] == 8.0f, "got %g %g", y[0], y[1]);
}

/* Rows sharing their first k1 inputs (a request's user-side features): the
 * prefix sums once + the resumed chains equal the full product bit for bit. */
static void check_prefix(rk_rng *g, int M, int K, int N, int k1, rk_epilogue ep) {
    if (ep == RK_EPI_CROSS) N = K;
    float *x = randv(g, (size_t)M * K), *W = randv(g, (size_t)N * K), *b = randv(g, (size_t)N);
    float *x0 = randv(g, (size_t)M * N), *s = rk_malloc((size_t)N * sizeof(float));
    float *Wp = rk_malloc(rk_gemm_packed_floats(K, N) * sizeof(float));
    float *full = rk_malloc((size_t)M * N * sizeof(float)), *got = rk_malloc((size_t)M * N * sizeof(float));
    cr_assert(s && Wp && full && got);
    for (int i = 1; i < M; i++) memcpy(x + (size_t)i * K, x, (size_t)(k1 < K ? k1 : K) * sizeof(float));
    rk_gemm_pack(Wp, W, N, K);
    const float *xl = ep == RK_EPI_CROSS ? x : NULL;
    for (int k = RK_GEMM_PLAIN; k <= RK_GEMM_AVX512; k++) {
        if (rk_gemm_kernel_set((rk_gemm_kernel)k)) continue;
        rk_gemm_forward(full, x, Wp, b, M, K, N, ep, x0, xl);
        memset(got, 0xff, (size_t)M * N * sizeof(float));
        rk_gemm_prefix_sums(s, x, Wp, K, N, k1);
        rk_gemm_forward_from(got, x, Wp, b, M, K, N, ep, x0, xl, k1, s);
        cr_assert(memcmp(got, full, (size_t)M * N * sizeof(float)) == 0, "kernel %s M=%d K=%d N=%d k1=%d ep=%d: prefix path differs",
                  rk_gemm_kernel_name((rk_gemm_kernel)k), M, K, N, k1, (int)ep);
    }
    rk_gemm_kernel_set(RK_GEMM_AUTO);
    rk_free(x), rk_free(W), rk_free(b), rk_free(x0), rk_free(s), rk_free(Wp), rk_free(full), rk_free(got);
}

Test(gemm, shared_prefix_resumes_the_same_sums) {
    rk_rng g;
    rk_rng_seed(&g, 1616);
    const int k1s[] = {0, 1, 5, 16, 64, 96, 97};
    for (int ep = RK_EPI_BIAS; ep <= RK_EPI_CROSS; ep++)
        for (size_t i = 0; i < sizeof k1s / sizeof *k1s; i++) check_prefix(&g, 25, 97, 33, k1s[i], (rk_epilogue)ep);
    check_prefix(&g, 13, 8200, 20, 4100, RK_EPI_BIAS_RELU); /* the prefix ends inside the second K chunk */
    check_prefix(&g, 13, 8200, 20, 5000, RK_EPI_BIAS);
    /* the same with x read in place (8292 floats = 33168 bytes, 400 mod 4096) */
    check_prefix(&g, 13, 8292, 20, 4100, RK_EPI_BIAS_RELU);
    check_prefix(&g, 13, 8292, 20, 50, RK_EPI_BIAS);
}
