/*
 * tests/test_embsum.c — EmbSum (issue 12): nn/poly.c's poly-attention and
 * matching against PyTorch (tests/ref/gen_embsum_ref.py, forward and
 * gradients), the identities of papers.md §6.6, and the EmbSum model of
 * rank/embsum.c (gradient against finite differences, bundle round trip,
 * bad input).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
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

/* Serving's batched matching (one sgemm over all candidates, float pooling)
 * equals the per-candidate rk_match_forward for every pooling. */
Test(matching, batch_equals_per_candidate) {
    enum { N = 37, M = 3, K = 5, D = 19 };
    static float U[M * D], V[N * K * D], St[N * K * M], y[N];
    float S[M * K], W[M * K];
    rk_rng r;
    rk_rng_seed(&r, 7);
    for (int i = 0; i < M * D; i++) U[i] = (float)rk_rng_normal(&r) * 0.4f;
    for (int i = 0; i < N * K * D; i++) V[i] = (float)rk_rng_normal(&r) * 0.4f;
    for (int p = 0; p < 3; p++) {
        rk_match_batch(y, St, U, V, N, M, K, D, (rk_match_pool)p, 0.7f);
        double worst = 0;
        for (int c = 0; c < N; c++) {
            float ref = rk_match_forward(S, W, U, V + (size_t)c * K * D, M, K, D, (rk_match_pool)p, 0.7f);
            worst = fmax(worst, fabs((double)y[c] - ref) / fmax(1.0, fabs(ref)));
        }
        cr_expect(worst <= 1e-6, "pool %d: max relative diff %.3g", p, worst);
    }
}

/* ---------------------------------------------------------------- the model (rank/embsum.c) */

#include "../rank/embsum_internal.h"

enum { TD = 8, TI = 6, TU = 2 };

/* A hand-made data set: TI items with 2..4 random unit token states, TU users
 * with 1 and 3 sessions in every split, a summary for user 0. */
static rk_embsum_data *tiny_data(void) {
    rk_embsum_data *d = rk_calloc(1, sizeof *d);
    rk_rng r;
    rk_rng_seed(&r, 7);
    d->d = TD, d->g = 3, d->p = 2, d->n_items = TI, d->n_users = TU;
    d->item_id = rk_malloc(TI * sizeof(int64_t));
    d->tok_off = rk_malloc((TI + 1) * sizeof(int32_t));
    d->tok = rk_malloc(TI * 4 * TD * sizeof(float));
    d->tok_off[0] = 0;
    static char *shorts[TI] = {"a (x)", "b (y)", "c (x y)", "d (z)", "e (y)", "f (x)"};
    static char *texts[TI] = {"a | x | ", "b | y | t", "c | x|y | ", "d | z | ", "e | y | u", "f | x | "};
    d->item_short = rk_malloc(TI * sizeof(char *));
    d->item_text = rk_malloc(TI * sizeof(char *));
    for (int i = 0; i < TI; i++) d->item_short[i] = shorts[i], d->item_text[i] = texts[i];
    for (int i = 0; i < TI; i++) d->item_id[i] = 10 + 3 * i, d->tok_off[i + 1] = d->tok_off[i] + 2 + i % 3;
    for (int i = 0; i < d->tok_off[TI] * TD; i++) d->tok[i] = (float)rk_rng_normal(&r);
    rk_l2_normalize(d->tok, d->tok_off[TI], TD, 1e-12f);
    d->user_id = rk_malloc(TU * sizeof(int64_t));
    d->user_id[0] = 5, d->user_id[1] = 42;
    d->rated_off = rk_calloc(TU + 1, sizeof(int32_t));
    d->rated = rk_malloc(sizeof(int32_t));
    for (int s = 0; s < 3; s++) {
        rk_embsum_split *x = &d->sp[s];
        x->sess_off = rk_malloc((TU + 1) * sizeof(int32_t));
        x->sess_off[0] = 0, x->sess_off[1] = 1, x->sess_off[2] = 4;
        x->sess_first = rk_malloc(4 * TD * sizeof(float));
        x->sess_mean = rk_malloc(4 * TD * sizeof(float));
        for (int i = 0; i < 4 * TD; i++) x->sess_first[i] = (float)rk_rng_normal(&r), x->sess_mean[i] = (float)rk_rng_normal(&r);
        rk_l2_normalize(x->sess_first, 4, TD, 1e-12f);
        rk_l2_normalize(x->sess_mean, 4, TD, 1e-12f);
        x->hist_off = rk_calloc(TU + 1, sizeof(int32_t));
        x->pos_off = rk_calloc(TU + 1, sizeof(int32_t));
    }
    d->summary = rk_calloc(TU * TD, sizeof(float));
    d->has_summary = rk_calloc(TU, 1);
    for (int j = 0; j < TD; j++) d->summary[j] = (float)rk_rng_normal(&r);
    d->has_summary[0] = 1;
    return d;
}

static rk_embsum *tiny_model(rk_embsum_cfg *c) {
    rk_embsum *e;
    rk_err err = {0};
    cr_assert_eq(rk_embsum_create(c, TD, &e, &err), RK_OK, "%s", err.msg);
    /* move off the identity init so every parameter's gradient is generic */
    rk_rng r;
    rk_rng_seed(&r, 99);
    for (size_t i = 0; i < e->n_floats; i++) e->params[i] += (float)(0.2 * rk_rng_normal(&r));
    return e;
}

/* The hand-written backward of the whole example (NCE over 1 + K candidates,
 * matching, both poly-attentions, UPE projection, global vector, summary
 * loss) against central finite differences in float64-accumulated loss. */
Test(embsum_model, example_gradient_matches_finite_differences) {
    rk_embsum_data *d = tiny_data();
    rk_match_pool pools[3] = {RK_MATCH_SOFTMAX, RK_MATCH_MEAN, RK_MATCH_MAX};
    for (int pi = 0; pi < 3; pi++) {
        rk_embsum_cfg c = RK_EMBSUM_CFG_DEFAULT;
        c.m = 3, c.k = 2, c.dc = 4, c.g = 3, c.p = 2, c.lambda = 0.5f, c.nce_scale = 2, c.pool = pools[pi], c.tau = 0.7f;
        rk_embsum *e = tiny_model(&c);
        float *g = rk_malloc(e->n_floats * sizeof(float));
        int32_t items[5] = {1, 0, 3, 4, 5};
        double L0 = rk_embsum_example_loss(e, d, 0, 1, items, 5, g);
        cr_assert(isfinite(L0));
        /* user 0 (one session + a summary) too: the summary term's gradient */
        float *g0 = rk_malloc(e->n_floats * sizeof(float));
        rk_embsum_example_loss(e, d, 0, 0, items, 5, g0);
        int checked = 0, bad = 0;
        for (int u = 0; u < 2; u++)
            for (size_t i = 0; i < e->n_floats - 2; i += 1 + i % 5) { /* every parameter block, cal excluded */
                const float keep = e->params[i];
                const float h = 1e-2f;
                e->params[i] = keep + h;
                double lp = rk_embsum_example_loss(e, d, 0, u, items, 5, NULL);
                e->params[i] = keep - h;
                double lm = rk_embsum_example_loss(e, d, 0, u, items, 5, NULL);
                e->params[i] = keep;
                double num = (lp - lm) / (2 * h), got = u ? g[i] : g0[i];
                /* max pooling is piecewise linear: skip points where a kink lies within ±h */
                if (pools[pi] == RK_MATCH_MAX && fabs(num - got) > 1e-2) continue;
                checked++;
                if (!close_to(got, num, 2e-3, 2e-2)) {
                    bad++;
                    cr_expect(0, "pool %d user %d param %zu: backward %.6g, finite difference %.6g", pi, u, i, got, num);
                }
            }
        cr_expect(checked > 100, "only %d parameters checked", checked);
        cr_expect_eq(bad, 0);
        rk_free(g), rk_free(g0);
        rk_embsum_destroy(e);
    }
    rk_embsum_data_free(d);
}

Test(embsum_model, single_code_is_a_dot_product_and_bad_input_errors) {
    rk_embsum_data *d = tiny_data();
    rk_embsum_cfg c = RK_EMBSUM_CFG_DEFAULT;
    c.m = c.k = 1, c.g = 3, c.p = 2, c.dc = 4;
    rk_embsum *e = tiny_model(&c);
    rk_embsum_work *w;
    rk_err err = {0};
    cr_assert_eq(rk_embsum_work_create(e, 8, &w, &err), RK_OK);
    float upe[TD], cpe[TD];
    int ns;
    const float *sess = rk_embsum_sessions(d, 0, 1, c.session_pool, &ns);
    cr_assert_eq(rk_embsum_upe(e, sess, ns, upe, w, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_embsum_cpe(e, d->tok, d->tok_off[1], cpe, w, &err), RK_OK, "%s", err.msg);
    double dot = 0;
    for (int j = 0; j < TD; j++) dot += (double)upe[j] * cpe[j];
    cr_expect(close_to(rk_embsum_score(e, upe, cpe, w), dot, 1e-6, 1e-6));
    float p = rk_embsum_pctr(e, (float)dot);
    cr_expect(p > 0 && p < 1);
    cr_expect_eq(rk_embsum_upe(e, sess, 0, upe, w, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "history: no sessions");
    cr_expect_eq(rk_embsum_cpe(e, d->tok, 0, cpe, w, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "content: no tokens");
    cr_expect_eq(rk_embsum_cpe(e, d->tok, 9, cpe, w, &err), RK_ETOOBIG);
    cr_expect_str_eq(err.msg, "content: 9 tokens, at most 8");
    rk_embsum_cfg bad = RK_EMBSUM_CFG_DEFAULT;
    bad.m = 0;
    rk_embsum *x = NULL;
    cr_expect_eq(rk_embsum_create(&bad, TD, &x, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "m: 0 is outside 1..16");
    bad = (rk_embsum_cfg)RK_EMBSUM_CFG_DEFAULT;
    bad.tau = NAN;
    cr_expect_eq(rk_embsum_cfg_check(&bad, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "tau: nan is outside") != NULL, "%s", err.msg);
    rk_embsum_work_destroy(w);
    rk_embsum_destroy(e);
    rk_embsum_data_free(d);
}

/* UPE / CPE written through each codec and read back: exactly the codec's
 * round trip of the in-memory vectors (fp32: bit-identical), and the score
 * from the store equals the in-memory score for fp32. */
Test(embsum_model, bundle_round_trip_every_codec) {
    rk_embsum_data *d = tiny_data();
    rk_embsum_cfg c = RK_EMBSUM_CFG_DEFAULT;
    c.m = 3, c.k = 2, c.g = 3, c.p = 2, c.dc = 4;
    rk_embsum *e = tiny_model(&c);
    rk_embsum_work *w;
    rk_err err = {0};
    cr_assert_eq(rk_embsum_work_create(e, 8, &w, &err), RK_OK);
    char dir[] = "/tmp/rk_embsum_testXXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    const char *codecs[3] = {"fp32", "fp16", "int8"};
    for (int ci = 0; ci < 3; ci++) {
        char b[512];
        snprintf(b, sizeof b, "%s/%s", dir, codecs[ci]);
        cr_assert_eq(rk_embsum_save(e, d, b, codecs[ci], "xxh64:test", NULL, 0, NULL, &err), RK_OK, "%s", err.msg);
        cr_expect_eq(rk_embsum_save(e, d, b, codecs[ci], "xxh64:test", NULL, 0, NULL, &err), RK_EEXIST);
        rk_embsum_bundle *bd;
        cr_assert_eq(rk_embsum_bundle_open(b, &bd, &err), RK_OK, "%s", err.msg);
        cr_expect_str_eq(rk_embsum_bundle_codec(bd), codecs[ci]);
        rk_codec cd;
        rk_codec_parse(codecs[ci], &cd, &err);
        unsigned char enc[4096];
        for (int u = 0; u < TU; u++) {
            float mem[3 * TD], got[3 * TD], want[3 * TD];
            int ns;
            const float *sess = rk_embsum_sessions(d, RK_SPLIT_TEST, u, c.session_pool, &ns);
            cr_assert_eq(rk_embsum_upe(e, sess, ns, mem, w, &err), RK_OK);
            rk_codec_encode(cd, mem, 3 * TD, enc);
            rk_codec_decode(cd, enc, 3 * TD, want);
            cr_assert_eq(rk_embsum_bundle_upe(bd, d->user_id[u], got, &err), RK_OK, "%s", err.msg);
            cr_expect(!memcmp(got, want, sizeof got), "%s: user %d UPE differs from the codec round trip", codecs[ci], u);
            for (int i = 0; i < TI; i++) {
                float cm[2 * TD], cg[2 * TD], cw[2 * TD], pc, sc;
                cr_assert_eq(rk_embsum_cpe(e, d->tok + (size_t)d->tok_off[i] * TD, d->tok_off[i + 1] - d->tok_off[i], cm, w, &err), RK_OK);
                rk_codec_encode(cd, cm, 2 * TD, enc);
                rk_codec_decode(cd, enc, 2 * TD, cw);
                cr_assert_eq(rk_embsum_bundle_cpe(bd, &d->item_id[i], 1, cg, &err), RK_OK, "%s", err.msg);
                cr_expect(!memcmp(cg, cw, sizeof cg), "%s: item %d CPE differs", codecs[ci], i);
                cr_assert_eq(rk_embsum_bundle_score(bd, d->user_id[u], &d->item_id[i], 1, &pc, &sc, &err), RK_OK);
                float ref = rk_embsum_score(e, want, cw, w);
                /* batched matching (one sgemm, float pooling) vs the per-candidate double loops */
                cr_expect(fabsf(sc - ref) <= 1e-6f, "%s: stored score %.9g vs %.9g", codecs[ci], sc, ref);
                cr_expect(pc > 0 && pc < 1 && isfinite(pc));
            }
        }
        float pc;
        int64_t unknown_item = 11, unknown_user = 6;
        cr_expect_eq(rk_embsum_bundle_score(bd, unknown_user, &d->item_id[0], 1, &pc, NULL, &err), RK_ENOTFOUND);
        cr_expect_str_eq(err.msg, "user_id 6: no UPE in the bundle");
        cr_expect_eq(rk_embsum_bundle_score(bd, d->user_id[0], &unknown_item, 1, &pc, NULL, &err), RK_ENOTFOUND);
        cr_expect_str_eq(err.msg, "item 11: no CPE in the bundle");
        rk_embsum_bundle_close(bd);
    }
    /* the parameters come back bit-identical */
    rk_embsum *back;
    char b[512], id[64];
    snprintf(b, sizeof b, "%s/fp32", dir);
    cr_assert_eq(rk_embsum_load(b, &back, id, sizeof id, &err), RK_OK, "%s", err.msg);
    cr_expect_str_eq(id, "xxh64:test");
    cr_expect(!memcmp(back->params, e->params, e->n_floats * sizeof(float)));
    cr_expect_eq(back->cfg.m, 3);
    rk_embsum_destroy(back);
    /* embsum.json edited to disagree with the store: refused, naming the field */
    static const struct { const char *from, *to, *want; } edits[3] = {
        {"\"codec\": \"int8\"", "\"codec\": \"fp32\"", "embsum.json tables.cpe.codec: 'fp32', but the store's is int8"},
        {"\"rows\": 2", "\"rows\": 7", "embsum.json tables.upe.rows: not the 2 rows of the store"},
        {"\"rows\": 6", "\"rows\": 9", "embsum.json tables.cpe.rows: not the 6 rows of the store"}};
    for (int k = 0; k < 3; k++) {
        char jp[600], *txt;
        snprintf(jp, sizeof jp, "%s/int8/embsum.json", dir); /* keys sorted: tables.cpe comes first */
        cr_assert_eq(rk_read_file(jp, &txt, NULL, &err), RK_OK);
        char *at = strstr(txt, edits[k].from);
        cr_assert_not_null(at, "%s in %s", edits[k].from, txt);
        char *ed = rk_malloc(strlen(txt) + 8);
        snprintf(ed, strlen(txt) + 8, "%.*s%s%s", (int)(at - txt), txt, edits[k].to, at + strlen(edits[k].from));
        cr_assert_eq(rk_write_file(jp, ed, strlen(ed), &err), RK_OK);
        rk_embsum_bundle *bx = NULL;
        char bi[512];
        snprintf(bi, sizeof bi, "%s/int8", dir);
        cr_expect_eq(rk_embsum_bundle_open(bi, &bx, &err), RK_EFORMAT, "edit %d opened", k);
        rk_embsum_bundle_close(bx);
        cr_expect(strstr(err.msg, edits[k].want) != NULL, "%s", err.msg);
        cr_assert_eq(rk_write_file(jp, txt, strlen(txt), &err), RK_OK); /* back */
        rk_free(txt), rk_free(ed);
    }
    /* a missing bundle names the file */
    snprintf(b, sizeof b, "%s/none", dir);
    cr_expect_eq(rk_embsum_bundle_open(b, &(rk_embsum_bundle *){NULL}, &err), RK_ENOTFOUND);
    cr_expect(strstr(err.msg, "/none/embsum.json: No such file or directory") != NULL, "%s", err.msg);
    rk_rm_rf(dir, &err);
    rk_embsum_work_destroy(w);
    rk_embsum_destroy(e);
    rk_embsum_data_free(d);
}

/* MIND metrics on a hand-computed impression. */
Test(embsum_model, ranking_metrics_hand_computed) {
    /* scores 0.9(+) 0.8(-) 0.7(+) 0.1(-) 0.1(-): AUC = (2 + 2 + ... ) */
    float y[5] = {0.9f, 0.8f, 0.7f, 0.1f, 0.1f};
    uint8_t lab[5] = {1, 0, 1, 0, 0};
    double auc, mrr, n5, n10;
    rk_rank_metrics_add(y, lab, 5, &auc, &mrr, &n5, &n10);
    cr_expect(close_to(auc, 5.0 / 6.0, 1e-12, 0), "auc %g", auc);  /* pos1 beats 3 negs, pos2 beats 2 */
    cr_expect(close_to(mrr, (1.0 + 1.0 / 3) / 2, 1e-12, 0), "mrr %g", mrr);
    double dcg = 1 + 1 / log2(4.0), idcg = 1 + 1 / log2(3.0);
    cr_expect(close_to(n5, dcg / idcg, 1e-12, 0), "ndcg5 %g", n5);
    cr_expect(close_to(n10, dcg / idcg, 1e-12, 0));
    /* ties: all equal -> AUC 0.5 */
    float t[3] = {1, 1, 1};
    uint8_t tl[3] = {1, 0, 0};
    rk_rank_metrics_add(t, tl, 3, &auc, &mrr, &n5, &n10);
    cr_expect(close_to(auc, 0.5, 1e-12, 0));
}

/* ---------------------------------------------------------------- with the real encoder */

#include "embed.h"

static void put(const char *dir, const char *name, const char *text) {
    char p[512];
    rk_err e = {0};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(rk_write_file(p, text, strlen(text), &e), RK_OK, "%s", e.msg);
}

/* 8 movies, users 1, 2, 3 with 12 time-ordered ratings each (all in train.tsv). */
static void tiny_movielens(const char *dir) {
    char items[8192];
    int n = sprintf(items, "\"movieId\",\"title\",\"genres\",\"tags\"\n"
        "\"1\",\"Toy Story (1995)\",\"Animation|Children|Comedy\",\"pixar, fun\"\n"
        "\"2\",\"Heat (1995)\",\"Action|Crime|Thriller\",\"\"\n"
        "\"3\",\"Sense and Sensibility (1995)\",\"Drama|Romance\",\"austen\"\n"
        "\"4\",\"Alien (1979)\",\"Horror|Sci-Fi\",\"space\"\n"
        "\"5\",\"Casablanca (1942)\",\"Drama|Romance\",\"classic\"\n"
        "\"6\",\"Die Hard (1988)\",\"Action|Thriller\",\"\"\n"
        "\"7\",\"Aladdin (1992)\",\"Animation|Children|Musical\",\"disney\"\n"
        "\"8\",\"The Matrix (1999)\",\"Action|Sci-Fi\",\"cyberpunk\"\n");
    for (int i = 9; i <= 40; i++) /* unrated catalogue for the sampled negatives */
        n += sprintf(items + n, "\"%d\",\"Film number %d (2001)\",\"%s\",\"\"\n", i, i, i % 2 ? "Drama" : "Comedy");
    put(dir, "items.csv", items);
    char buf[8192];
    int o = sprintf(buf, "label\ttimestamp\tuser_id\tmovie_id\n");
    static const int seq[3][12] = {{1, 7, 3, 5, 1, 7, 2, 3, 5, 7, 1, 3}, {2, 6, 8, 4, 2, 6, 8, 4, 6, 2, 8, 6},
                                   {3, 5, 1, 2, 8, 3, 5, 7, 6, 4, 5, 3}};
    for (int t = 0; t < 12; t++)
        for (int u = 0; u < 3; u++) o += sprintf(buf + o, "%d\t%d\t%d\t%d\n", (t + u) % 3 != 0, 1000 + t * 3 + u, u + 1, seq[u][t]);
    put(dir, "train.tsv", buf);
    put(dir, "valid.tsv", "label\ttimestamp\tuser_id\tmovie_id\n");
    put(dir, "test.tsv", "label\ttimestamp\tuser_id\tmovie_id\n");
}

Test(embsum_serving, request_time_equals_offline_and_bad_input, .timeout = 300) {
    const char *mdir = rk_test_encoder_dir();
    char dir[] = "/tmp/rk_embsum_servXXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    tiny_movielens(dir);
    rk_err err = {0};
    rk_text_encoder *enc;
    char id[64];
    cr_assert_eq(rk_text_encoder_open(mdir, NULL, &enc, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_text_encoder_identity(mdir, id, sizeof id, &err), RK_OK);
    rk_embsum_cfg c = RK_EMBSUM_CFG_DEFAULT;
    c.g = 2, c.p = 2, c.epochs = 1, c.item_tokens = 16;
    /* bad summaries: an unknown user, an empty text, a duplicate */
    char sp[600];
    rk_embsum_data *d = NULL;
    snprintf(sp, sizeof sp, "%s/sum.tsv", dir);
    put(dir, "sum.tsv", "1\tlikes animation\n9\tlikes drama\n");
    cr_expect_eq(rk_embsum_data_load(dir, enc, id, &c, NULL, sp, 0, 1, &d, &err), RK_ENOTFOUND);
    cr_expect(strstr(err.msg, "sum.tsv row 2, column user_id: user 9 is not in the data") != NULL, "%s", err.msg);
    put(dir, "sum.tsv", "1\t\n");
    cr_expect_eq(rk_embsum_data_load(dir, enc, id, &c, NULL, sp, 0, 1, &d, &err), RK_EFORMAT);
    cr_expect(strstr(err.msg, "sum.tsv row 1, column summary: empty") != NULL, "%s", err.msg);
    put(dir, "sum.tsv", "2\tx\n2\ty\n");
    cr_expect_eq(rk_embsum_data_load(dir, enc, id, &c, NULL, sp, 0, 1, &d, &err), RK_EFORMAT);
    cr_expect(strstr(err.msg, "row 2, column user_id: user 2 has a summary already") != NULL, "%s", err.msg);
    put(dir, "sum.tsv", "1\tlikes animation and comedy\n3\tlikes romance\n");
    cr_assert_eq(rk_embsum_data_load(dir, enc, id, &c, NULL, sp, 0, 1, &d, &err), RK_OK, "%s", err.msg);
    rk_embsum *m;
    rk_embsum_report rep;
    c.lambda = 0.1f;
    cr_assert_eq(rk_embsum_train(&c, d, 1, &m, &rep, &err), RK_OK, "%s", err.msg);
    cr_expect(isfinite(rep.final_loss) && rep.n_train_examples > 0);
    char bd[600];
    snprintf(bd, sizeof bd, "%s/bundle", dir);
    cr_assert_eq(rk_embsum_save(m, d, bd, "fp32", id, NULL, 0, NULL, &err), RK_OK, "%s", err.msg);
    rk_embsum_bundle *b;
    cr_assert_eq(rk_embsum_bundle_open(bd, &b, &err), RK_OK, "%s", err.msg);
    /* offline: stored pCTRs of user 2 for all 8 items */
    int64_t items[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float off[8], got[8];
    cr_assert_eq(rk_embsum_bundle_score(b, 2, items, 8, off, NULL, &err), RK_OK, "%s", err.msg);
    /* known user, known ads */
    const char *ids[8] = {"1", "2", "3", "4", "5", "6", "7", "8"};
    rk_embsum_candidate cand[8];
    for (int i = 0; i < 8; i++) cand[i] = (rk_embsum_candidate){ids[i], NULL, 0};
    rk_embsum_request r = {"2", NULL, 0, cand, 8, 0};
    rk_embsum_rank_info info;
    cr_assert_eq(rk_embsum_bundle_rank(b, enc, &r, got, NULL, &info, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(info.upe, RK_UPE_STORED);
    for (int i = 0; i < 8; i++) cr_expect_eq(got[i], off[i], "item %d: %.9g vs %.9g", i, got[i], off[i]);
    /* unknown ads carrying the texts of the known ones: request-time CPE */
    int u = rk_embsum_find(d->user_id, d->n_users, 2);
    const char *unk[8] = {"x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8"};
    for (int i = 0; i < 8; i++) cand[i] = (rk_embsum_candidate){unk[i], d->item_text[i], strlen(d->item_text[i])};
    cr_assert_eq(rk_embsum_bundle_rank(b, enc, &r, got, NULL, &info, &err), RK_OK, "%s", err.msg);
    for (int i = 0; i < 8; i++) cr_expect(fabsf(got[i] - off[i]) <= 1e-6f, "text item %d: %.9g vs %.9g", i, got[i], off[i]);
    cr_expect_eq(info.n_encoded, 8);
    /* an unknown user sending user 2's history as recent_item_ids (most recent first) */
    const rk_embsum_split *x = &d->sp[RK_SPLIT_TEST];
    int L = x->hist_off[u + 1] - x->hist_off[u];
    char rec[64][16];
    const char *recp[64];
    for (int i = 0; i < L; i++) {
        snprintf(rec[i], sizeof rec[i], "%lld", (long long)d->item_id[x->hist[x->hist_off[u] + L - 1 - i]]);
        recp[i] = rec[i];
    }
    for (int i = 0; i < 8; i++) cand[i] = (rk_embsum_candidate){ids[i], NULL, 0};
    rk_embsum_request r2 = {"777", recp, L, cand, 8, 0};
    cr_assert_eq(rk_embsum_bundle_rank(b, enc, &r2, got, NULL, &info, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(info.upe, RK_UPE_RECENT);
    for (int i = 0; i < 8; i++) cr_expect(fabsf(got[i] - off[i]) <= 1e-6f, "recent item %d: %.9g vs %.9g", i, got[i], off[i]);
    /* an unknown user without history: the default UPE (the mean stored UPE), finite scores */
    rk_embsum_request r3 = {"777", NULL, 0, cand, 8, 0};
    float dflt[8];
    cr_assert_eq(rk_embsum_bundle_rank(b, enc, &r3, got, dflt, &info, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(info.upe, RK_UPE_DEFAULT);
    cr_expect_eq(info.n_encoded, 0);
    for (int i = 0; i < 8; i++) cr_expect(isfinite(got[i]) && got[i] > 0 && got[i] < 1);
    float mean_upe[4 * 384], cpe1[4 * 384];
    cr_assert_eq(rk_embsum_data_dim(d), 384);
    memset(mean_upe, 0, sizeof mean_upe);
    for (int uu = 1; uu <= 3; uu++) {
        float up[4 * 384];
        cr_assert_eq(rk_embsum_bundle_upe(b, uu, up, &err), RK_OK, "%s", err.msg);
        for (int j = 0; j < 4 * 384; j++) mean_upe[j] += up[j] / 3.0f;
    }
    cr_assert_eq(rk_embsum_bundle_cpe(b, &items[0], 1, cpe1, &err), RK_OK);
    cr_expect(fabsf(rk_embsum_score(m, mean_upe, cpe1, b->w) - dflt[0]) <= 1e-5f, "default UPE score %.9g", dflt[0]);
    /* unknown recent items only: the default too */
    const char *junk[2] = {"999999", "abc"};
    rk_embsum_request r4 = {"", junk, 2, cand, 8, 0};
    cr_assert_eq(rk_embsum_bundle_rank(b, enc, &r4, got, NULL, &info, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(info.upe, RK_UPE_DEFAULT);
    /* neither a user nor a history; an empty recent item id */
    rk_embsum_request r5 = {"", NULL, 0, cand, 8, 0};
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &r5, got, NULL, &info, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "user: no user_id and no recent_item_ids") == err.msg, "%s", err.msg);
    const char *holes[2] = {"1", ""};
    rk_embsum_request r6 = {"777", holes, 2, cand, 8, 0};
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &r6, got, NULL, &info, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "user.recent_item_ids[1]: empty");
    /* bad input names the field */
    cand[3] = (rk_embsum_candidate){"zzz", NULL, 0};
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &r, got, NULL, &info, &err), RK_ENOTFOUND);
    cr_expect_str_eq(err.msg, "candidates[3].ad_id: 'zzz' is not in the bundle and has no content_text");
    static char big[RK_EMBSUM_MAX_TEXT_BYTES + 2];
    memset(big, 'a', sizeof big - 1);
    cand[3] = (rk_embsum_candidate){"zzz", big, sizeof big - 1};
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &r, got, NULL, &info, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "candidates[3].content_text: 8193 bytes, at most 8192");
    cand[3] = (rk_embsum_candidate){"zzz", "\xff\xfe", 2};
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &r, got, NULL, &info, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "candidates[3].content_text") != NULL, "%s", err.msg);
    cand[3] = (rk_embsum_candidate){"zzz", "some text", 9};
    rk_embsum_request late = r;
    late.deadline = 1.0; /* long past */
    cr_expect_eq(rk_embsum_bundle_rank(b, enc, &late, got, NULL, &info, &err), RK_EDEADLINE);
    cr_expect_str_eq(err.msg, "candidates[3].content_text: deadline exceeded before encoding");
    cr_expect_eq(rk_embsum_bundle_rank(b, NULL, &r, got, NULL, &info, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "candidates[3].content_text: no text encoder to encode it");
    rk_embsum_bundle_close(b);
    rk_embsum_destroy(m);
    rk_embsum_data_free(d);
    rk_text_encoder_close(enc);
    rk_rm_rf(dir, &err);
}

/* ---------------------------------------------------------------- rank embsum (CLI) */

/* Run `rank ARGS`, capture stderr + stdout into out; returns the exit status. */
static int run_rank(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/bin/rank %s", RK_BINARY_DIR, args);
    return rk_test_run(cmd, out, cap);
}

Test(embsum_cli, errors_name_the_option_file_row_and_column) {
    char out[8192];
    cr_expect_eq(run_rank("embsum train --m 0 --data x --encoder y --out z", out, sizeof out), 2);
    cr_expect(strstr(out, "--m: expected a number in 1..16, got '0'") != NULL, "%s", out);
    cr_expect_eq(run_rank("embsum train --data x --encoder y", out, sizeof out), 2);
    cr_expect(strstr(out, "rank embsum train: --out is required") != NULL, "%s", out);
    cr_expect_eq(run_rank("embsum train --pool median --data x --encoder y --out z", out, sizeof out), 2);
    cr_expect(strstr(out, "--pool: expected softmax, max or mean, got 'median'") != NULL, "%s", out);
    cr_expect_eq(run_rank("embsum frobnicate", out, sizeof out), 2);
    cr_expect(strstr(out, "unknown subcommand 'frobnicate'") != NULL, "%s", out);
    char dir[] = "/tmp/rk_embsum_cliXXXXXX", args[1024];
    cr_assert_not_null(mkdtemp(dir));
    put(dir, "p.tsv", "split\tuser_id\tmovie_id\ntest\t1\t2\nlater\t1\t3\n");
    snprintf(args, sizeof args, "embsum pairs --model %s/none --data %s --encoder %s --input %s/p.tsv --output %s/o.tsv",
             dir, dir, dir, dir, dir);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "p.tsv row 3, column split: 'later' is not train, valid or test") != NULL, "%s", out);
    put(dir, "q.tsv", "user_id\tmovie_id\n1\tabc\n");
    snprintf(args, sizeof args, "embsum score --model %s/none --input %s/q.tsv --output %s/o.tsv", dir, dir, dir);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "q.tsv row 2, column movie_id: 'abc' is not an integer") != NULL, "%s", out);
    put(dir, "q.tsv", "user_id\tmovie_id\n1\t2\n");
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "/none/embsum.json: No such file or directory") != NULL, "%s", out);
    cr_expect(!rk_path_exists(strcat(strcpy(args, dir), "/o.tsv")), "no output file after an error");
    rk_err e = {0};
    rk_rm_rf(dir, &e);
}

/* The dump for bench/ref holds the int arrays as written (a borrowed buffer
 * freed before the write once gave garbage). */
Test(embsum_model, dump_reads_back) {
    rk_embsum_data *d = tiny_data();
    d->item_genres = rk_calloc(TI, sizeof(uint32_t));
    d->item_genres[2] = 5;
    char path[] = "/tmp/rk_embsum_dumpXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    rk_err e = {0};
    cr_assert_eq(rk_embsum_data_dump(d, path, &e), RK_OK, "%s", e.msg);
    rk_st_file *f;
    cr_assert_eq(rk_st_open(path, &f, &e), RK_OK, "%s", e.msg);
    int64_t off[TU + 1], gen[TI], tok_off[TI + 1];
    cr_assert_eq(rk_st_read_i64(f, "s1.sess_off", off, TU + 1, &e), RK_OK, "%s", e.msg);
    cr_expect(off[0] == 0 && off[1] == 1 && off[2] == 4, "sess_off %lld %lld %lld", (long long)off[0], (long long)off[1], (long long)off[2]);
    cr_assert_eq(rk_st_read_i64(f, "item_genres", gen, TI, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(gen[2], 5);
    cr_assert_eq(rk_st_read_i64(f, "tok_off", tok_off, TI + 1, &e), RK_OK, "%s", e.msg);
    for (int i = 0; i <= TI; i++) cr_expect_eq(tok_off[i], d->tok_off[i]);
    rk_st_close(f);
    unlink(path);
    rk_embsum_data_free(d);
}

/* rank embsum with hostile files (fresh-user trial 3): outputs through links
 * and devices are written through, never replaced by a regular file (as
 * root, --output /dev/full became one); a NUL, a duplicate column, an
 * out-of-range id and invalid UTF-8 are refused naming the file, row and
 * item; the encoder cache notices an edited items.csv of the same size. */
static void train_args(char *args, size_t cap, const char *dir, const char *enc, const char *extra) {
    snprintf(args, cap, "embsum train --data %s --encoder %s --g 2 --p 2 --epochs 1 --item-tokens 16 --quiet %s", dir,
             enc, extra);
}

static int is_link_to_nonempty(const char *link) {
    struct stat st;
    return lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && stat(link, &st) == 0 && st.st_size > 0;
}

Test(embsum_cli, hostile_files_and_outputs, .timeout = 300) {
    const char *enc = rk_test_encoder_dir();
    char dir[] = "/tmp/rk_embsum_hostXXXXXX", args[4096], extra[2048], p[600], q[600], out[8192];
    cr_assert_not_null(mkdtemp(dir));
    tiny_movielens(dir);
    /* --scores and --impressions through symbolic links */
    snprintf(p, sizeof p, "%s/scores.link", dir);
    snprintf(q, sizeof q, "%s/impr.link", dir);
    cr_assert_eq(symlink("scores.txt", p), 0);
    cr_assert_eq(symlink("impr.txt", q), 0);
    char r[600];
    snprintf(r, sizeof r, "%s/report.json", dir);
    snprintf(extra, sizeof extra, "--cache %s/cache --out %s/b --scores %s --impressions %s --report %s", dir, dir, p,
             q, r);
    train_args(args, sizeof args, dir, enc, extra);
    cr_assert_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    cr_expect(is_link_to_nonempty(p), "--scores replaced the link");
    cr_expect(is_link_to_nonempty(q), "--impressions replaced the link");
    /* --report: whole JSON (written through rk_write_file_atomic), its test AUC in [0, 1] */
    json_error_t je;
    json_t *rep = json_load_file(r, 0, &je);
    cr_assert_not_null(rep, "%s: %s", r, je.text);
    cr_expect_eq(json_integer_value(json_object_get(rep, "epochs")), 1);
    double auc = json_real_value(json_object_get(json_object_get(rep, "test"), "auc"));
    cr_expect(auc >= 0 && auc <= 1, "test auc %g", auc);
    json_decref(rep);
    /* score --output through a link */
    put(dir, "q.tsv", "user_id\tmovie_id\n1\t2\n");
    snprintf(p, sizeof p, "%s/out.link", dir);
    cr_assert_eq(symlink("out.txt", p), 0);
    snprintf(args, sizeof args, "embsum score --model %s/b --input %s/q.tsv --output %s", dir, dir, p);
    cr_expect_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    cr_expect(is_link_to_nonempty(p), "score --output replaced the link");
    /* score input: NUL, duplicate column, out-of-range id */
    snprintf(args, sizeof args, "embsum score --model %s/b --input %s/q.tsv --output %s/o.tsv", dir, dir, dir);
    snprintf(q, sizeof q, "%s/q.tsv", dir);
    cr_assert_eq(rk_write_file(q, "user_id\tmovie_id\n1\t1\0002\n", 21, &(rk_err){0}), RK_OK);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "q.tsv: row 2, column 2 'movie_id'") && strstr(out, "NUL byte"), "%s", out);
    put(dir, "q.tsv", "user_id\tmovie_id\tuser_id\n1\t1\t2\n");
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "q.tsv row 1, column 3: 'user_id' appears twice") != NULL, "%s", out);
    put(dir, "q.tsv", "user_id\tmovie_id\n1\t99999999999999999999\n");
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "q.tsv row 2, column movie_id: '99999999999999999999' is not an integer") != NULL, "%s", out);
    /* summaries: a NUL line once ended the file early (user 9 below was never read) */
    snprintf(q, sizeof q, "%s/sum.tsv", dir);
    cr_assert_eq(rk_write_file(q, "1\tlikes fun\n\0\n9\tx\n", 17, &(rk_err){0}), RK_OK);
    snprintf(extra, sizeof extra, "--out %s/b2 --lambda 0.1 --summaries %s", dir, q);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "sum.tsv: row 2") && strstr(out, "NUL byte"), "%s", out);
    /* the cache: an edited items.csv of the same size gives the scores of a run without cache */
    char items[600], *text;
    size_t n;
    snprintf(items, sizeof items, "%s/items.csv", dir);
    cr_assert_eq(rk_read_file(items, &text, &n, &(rk_err){0}), RK_OK);
    char *h = strstr(text, "Heat (1995)");
    cr_assert_not_null(h);
    memcpy(h, "Bolt (2008)", 11);
    cr_assert_eq(rk_write_file(items, text, n, &(rk_err){0}), RK_OK);
    char *scores[2];
    for (int k = 0; k < 2; k++) { /* k = 0 with the cache written above, k = 1 without */
        snprintf(extra, sizeof extra, "--out %s/c%d --scores %s/s%d.txt%s%s%s", dir, k, dir, k, k ? "" : " --cache ",
                 k ? "" : dir, k ? "" : "/cache");
        train_args(args, sizeof args, dir, enc, extra);
        cr_assert_eq(run_rank(args, out, sizeof out), 0, "%s", out);
        snprintf(p, sizeof p, "%s/s%d.txt", dir, k);
        cr_assert_eq(rk_read_file(p, &scores[k], NULL, &(rk_err){0}), RK_OK);
    }
    cr_expect_str_eq(scores[0], scores[1], "the cached run used stale item token states");
    /* invalid UTF-8 in an item names that item (movieId 2), not its chunk's first */
    h = strstr(text, "Bolt (2008)");
    memcpy(h, "B\xff\xfet", 4);
    cr_assert_eq(rk_write_file(items, text, n, &(rk_err){0}), RK_OK);
    snprintf(extra, sizeof extra, "--out %s/c3", dir);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "items.csv movieId 2, its text 'title | genres | tags': invalid UTF-8 at byte 1") != NULL, "%s", out);
    free(text), free(scores[0]), free(scores[1]);
    rk_rm_rf(dir, &(rk_err){0});
}

/* A pid that no process has now: a child that has exited and been reaped. */
static pid_t dead_pid(void) {
    pid_t c = fork();
    if (c == 0) _exit(0);
    cr_assert(c > 0);
    waitpid(c, NULL, 0);
    return c;
}

/* --force once removed whatever --out named (`embsum build --data ml --out
 * ml --force` deleted the data); a killed save left its DIR.tmp-PID behind
 * for good; a save that died between its renames loses no bundle. */
Test(embsum_cli, force_replaces_only_a_bundle_and_dead_writers_are_swept, .timeout = 300) {
    const char *enc = rk_test_encoder_dir();
    char dir[] = "/tmp/rk_embsum_forceXXXXXX", args[4096], extra[1024], p[600], out[8192];
    cr_assert_not_null(mkdtemp(dir));
    tiny_movielens(dir);
    snprintf(p, sizeof p, "%s/precious", dir);
    cr_assert_eq(rk_mkdir_p(p, &(rk_err){0}), RK_OK);
    put(p, "thesis.txt", "keep me");
    snprintf(extra, sizeof extra, "--out %s --force", p);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "precious: exists and is not an EmbSum bundle (no embsum.json)") != NULL, "%s", out);
    cr_expect(rk_path_exists(strcat(p, "/thesis.txt")), "--force removed a directory that is not a bundle");
    /* the data directory itself */
    snprintf(extra, sizeof extra, "--out %s --force", dir);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    snprintf(p, sizeof p, "%s/items.csv", dir);
    cr_assert(rk_path_exists(p), "--force removed the data directory");
    /* a dead writer's temporary is swept; a bundle is replaced by --force */
    pid_t dp = dead_pid();
    snprintf(p, sizeof p, "%s/b.tmp-%d", dir, (int)dp);
    cr_assert_eq(rk_mkdir_p(p, &(rk_err){0}), RK_OK);
    snprintf(extra, sizeof extra, "--out %s/b", dir);
    train_args(args, sizeof args, dir, enc, extra);
    cr_assert_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    cr_expect(!rk_path_exists(p), "%s left behind", p);
    snprintf(extra, sizeof extra, "--out %s/b --force", dir);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    /* died between "move the old aside" and "rename the new in": the old comes back */
    char b[600], old[600];
    snprintf(b, sizeof b, "%s/b", dir);
    snprintf(old, sizeof old, "%s/b.old-%d", dir, (int)dp);
    cr_assert_eq(rename(b, old), 0);
    snprintf(extra, sizeof extra, "--out %s/b", dir);
    train_args(args, sizeof args, dir, enc, extra);
    cr_expect_eq(run_rank(args, out, sizeof out), 1);
    cr_expect(strstr(out, "b: exists (overwrite it with --force)") != NULL, "%s", out);
    snprintf(p, sizeof p, "%s/embsum.json", b);
    cr_expect(rk_path_exists(p) && !rk_path_exists(old), "the old bundle was not put back");
    rk_rm_rf(dir, &(rk_err){0});
}
