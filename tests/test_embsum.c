/*
 * tests/test_embsum.c — EmbSum (issue 12): nn/poly.c's poly-attention and
 * matching against PyTorch (tests/ref/gen_embsum_ref.py, forward and
 * gradients), the identities of papers.md §6.6, and the EmbSum model of
 * rank/embsum.c (gradient against finite differences, bundle round trip,
 * bad input).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "nn.h"

static int close_to(double got, double ref, double atol, double rtol) { return fabs(got - ref) <= atol + rtol * fabs(ref); }

static void expect_all_close(const float *got, const float *ref, size_t n, double atol, double rtol, const char *what) {
    for (size_t i = 0; i < n; i++)
        cr_expect(close_to(got[i], ref[i], atol, rtol), "%s[%zu]: got %.7g, torch %.7g", what, i, got[i], ref[i]);
}

static const float *fx(rk_st_file *st, const char *name, size_t want) {
    const float *p;
    int nd;
    int64_t sh[4];
    rk_err e = {0};
    cr_assert_eq(rk_st_get_f32(st, name, &p, &nd, sh, &e), RK_OK, "%s", e.msg);
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    cr_assert_eq(n, want, "%s has %zu values", name, n);
    return p;
}

Test(poly_attention, torch_forward_backward) {
    rk_st_file *st;
    rk_err e = {0};
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/embsum_ref.safetensors", &st, &e), RK_OK, "%s", e.msg);
    enum { N = 5, D = 8, M = 3, DC = 4 };
    const float *H = fx(st, "pa.H", N * D), *C = fx(st, "pa.C", M * DC), *Wa = fx(st, "pa.Wa", D * DC);
    const float *G = fx(st, "pa.G", M * D);
    float E[M * D], A[M * N], Z[N * DC], dH[N * D], dC[M * DC] = {0}, dWa[D * DC] = {0}, scr[M * N + N * DC];
    rk_poly_attention_forward(E, A, Z, H, C, Wa, N, D, M, DC);
    expect_all_close(E, fx(st, "pa.E", M * D), M * D, 1e-6, 1e-5, "E");
    expect_all_close(A, fx(st, "pa.A", M * N), M * N, 1e-6, 1e-5, "A");
    rk_poly_attention_backward(dH, dC, dWa, G, H, C, Wa, A, Z, N, D, M, DC, scr);
    expect_all_close(dH, fx(st, "pa.dH", N * D), N * D, 1e-5, 1e-4, "dH");
    expect_all_close(dC, fx(st, "pa.dC", M * DC), M * DC, 1e-5, 1e-4, "dC");
    expect_all_close(dWa, fx(st, "pa.dWa", D * DC), D * DC, 1e-5, 1e-4, "dWa");
    /* parameter gradients accumulate: a second backward doubles them */
    rk_poly_attention_backward(NULL, dC, dWa, G, H, C, Wa, A, Z, N, D, M, DC, scr);
    const float *rdc = fx(st, "pa.dC", M * DC);
    for (int i = 0; i < M * DC; i++) cr_expect(close_to(dC[i], 2 * rdc[i], 1e-5, 1e-4), "accumulated dC[%d]", i);
    rk_st_close(st);
}

Test(poly_attention, one_vector_is_that_vector) {
    float H[4] = {0.5f, -1, 2, 3}, C[2 * 3] = {1, 2, 3, -1, 0, 4}, Wa[4 * 3] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f,
                                                                                 0.7f, 0.8f, 0.9f, 1, 1.1f, 1.2f};
    float E[2 * 4], A[2], Z[3];
    rk_poly_attention_forward(E, A, Z, H, C, Wa, 1, 4, 2, 3);
    for (int r = 0; r < 2; r++) {
        cr_expect_eq(A[r], 1.0f);
        for (int j = 0; j < 4; j++) cr_expect_eq(E[r * 4 + j], H[j]);
    }
}

Test(matching, torch_forward_backward) {
    rk_st_file *st;
    rk_err e = {0};
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/embsum_ref.safetensors", &st, &e), RK_OK, "%s", e.msg);
    enum { M = 3, K = 2, D = 8 };
    const float *U = fx(st, "mt.U", M * D), *V = fx(st, "mt.V", K * D);
    struct { const char *name; rk_match_pool pool; float tau; } cases[] = {
        {"softmax1", RK_MATCH_SOFTMAX, 1}, {"softmax05", RK_MATCH_SOFTMAX, 0.5f}, {"max", RK_MATCH_MAX, 1},
        {"mean", RK_MATCH_MEAN, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char nm[64];
        float S[M * K], W[M * K], dS[M * K], dU[M * D] = {0}, dV[K * D] = {0};
        float y = rk_match_forward(S, W, U, V, M, K, D, cases[c].pool, cases[c].tau);
        snprintf(nm, sizeof nm, "mt.%s.y", cases[c].name);
        cr_expect(close_to(y, fx(st, nm, 1)[0], 1e-6, 1e-5), "%s: y %.7g vs %.7g", cases[c].name, y, fx(st, nm, 1)[0]);
        rk_match_backward(dU, dV, 1.0f, y, S, W, U, V, M, K, D, cases[c].pool, cases[c].tau, dS);
        snprintf(nm, sizeof nm, "mt.%s.dU", cases[c].name);
        expect_all_close(dU, fx(st, nm, M * D), M * D, 1e-5, 1e-4, nm);
        snprintf(nm, sizeof nm, "mt.%s.dV", cases[c].name);
        expect_all_close(dV, fx(st, nm, K * D), K * D, 1e-5, 1e-4, nm);
    }
    rk_st_close(st);
}

/* papers.md §6.6: all S equal -> that value; mean <= softmax <= max; m = k = 1 -> the dot product. */
Test(matching, identities) {
    float S[16], W[16];
    /* U rows all equal, V rows all equal: every S_ij is u·v */
    float U[4 * 3], V[4 * 3], u[3] = {0.3f, -0.2f, 0.9f}, v[3] = {1.5f, 0.25f, -0.5f};
    for (int i = 0; i < 4; i++) memcpy(U + 3 * i, u, sizeof u), memcpy(V + 3 * i, v, sizeof v);
    const float dot = 0.3f * 1.5f - 0.2f * 0.25f - 0.9f * 0.5f;
    for (int p = 0; p < 3; p++) {
        float y = rk_match_forward(S, W, U, V, 4, 4, 3, (rk_match_pool)p, 0.7f);
        cr_expect(close_to(y, dot, 1e-6, 0), "pool %d, all equal: %.8f vs %.8f", p, y, dot);
        y = rk_match_forward(S, W, u, v, 1, 1, 3, (rk_match_pool)p, 1.0f);
        cr_expect(close_to(y, dot, 1e-7, 0), "pool %d, m = k = 1: %.8f vs %.8f", p, y, dot);
    }
    rk_rng r;
    rk_rng_seed(&r, 12);
    for (int t = 0; t < 300; t++) {
        int m = 1 + (int)rk_rng_below(&r, 4), k = 1 + (int)rk_rng_below(&r, 4), d = 1 + (int)rk_rng_below(&r, 3);
        for (int i = 0; i < m * d; i++) U[i] = (float)rk_rng_normal(&r);
        for (int i = 0; i < k * d; i++) V[i] = (float)rk_rng_normal(&r);
        float tau = 0.1f + 2 * (float)rk_rng_uniform(&r);
        float mean = rk_match_forward(S, W, U, V, m, k, d, RK_MATCH_MEAN, 1);
        float soft = rk_match_forward(S, W, U, V, m, k, d, RK_MATCH_SOFTMAX, tau);
        float mx = rk_match_forward(S, W, U, V, m, k, d, RK_MATCH_MAX, 1);
        cr_expect(mean <= soft + 1e-6f && soft <= mx + 1e-6f, "trial %d: mean %g softmax %g max %g", t, mean, soft, mx);
    }
}
