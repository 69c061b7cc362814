/*
 * tests/test_semantic_id.c — semantic_id/: token rows against the exact
 * big-integer values of tests/ref/sid_rows.py (papers.md §6.2 test vectors,
 * K = 2048, L = 6 included), the property tests of issue 5, RQ-KMeans
 * recovering known centres, greedy encoding of exact sums of centroids,
 * codebook quality figures on a hand-computed case, and the codebook /
 * item-records files (round trip and bad input). Suite sid_model: a model
 * whose item feature uses semantic IDs, trained, saved and reopened: the
 * bundle carries the records and codebooks, A/A copies score identically,
 * request-time assignment from a content embedding equals the offline
 * codes, an ad with neither falls back to the empty bag and is counted
 * (scorer and the Rank service), and the config / input errors.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "helpers.h"
#include "core.h"
#include "embed.h"
#include "serve.h"
#include "rank.pb-c.h"
#include "store.h"
#include "semantic_id.h"

static char tmp[64];

static void tmp_make(void) {
    snprintf(tmp, sizeof tmp, "/tmp/rk_test_sid.XXXXXX");
    cr_assert_not_null(mkdtemp(tmp), "mkdtemp failed");
}

static void tmp_remove(void) {
    rk_alloc_fail_after(0);
    rk_rm_rf(tmp, NULL);
}

TestSuite(sid, .init = tmp_make, .fini = tmp_remove);

static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmp, name);
    return p;
}

/* ---------------------------------------------------------------- token rows */

static void expect_rows(rk_sid_param p, const uint32_t *c, int L, uint32_t K, int ngram, uint64_t H,
                        const uint64_t *want, int G) {
    uint64_t got[RK_SID_MAX_LEVELS];
    int g = rk_sid_rows(p, c, L, K, ngram, H, got);
    cr_assert_eq(g, G, "%s: G = %d, expected %d", rk_sid_param_name(p), g, G);
    for (int i = 0; i < G; i++)
        cr_expect_eq(got[i], want[i], "%s H=%llu row %d: %llu, expected %llu", rk_sid_param_name(p),
                     (unsigned long long)H, i, (unsigned long long)got[i], (unsigned long long)want[i]);
}

Test(sid, paper_vectors_k4) {
    /* papers.md §6.2: K = 4, codes (1,2,3): prefix rows 1, 10, 47; all-bigrams 6, 27; trigram 27 */
    const uint32_t c[3] = {1, 2, 3};
    const uint64_t pre[3] = {1, 10, 47}, bi[2] = {6, 27}, tri[1] = {27};
    const uint64_t Hs[4] = {18446744073709551615ULL, 2305843009213693951ULL, 1000003ULL, 3247ULL};
    for (int h = 0; h < 4; h++) {
        expect_rows(RK_PARAM_PREFIX_NGRAM, c, 3, 4, 0, Hs[h], pre, 3);
        expect_rows(RK_PARAM_ALL_BIGRAMS, c, 3, 4, 0, Hs[h], bi, 2);
        expect_rows(RK_PARAM_TRIGRAM, c, 3, 4, 0, Hs[h], tri, 1);
    }
    /* prefix-2gram: the first two rows only; offsets 0, 4, 20 = rows of code tuples of zeros */
    expect_rows(RK_PARAM_PREFIX_NGRAM, c, 3, 4, 2, 1000003ULL, pre, 2);
    const uint32_t z[3] = {0, 0, 0};
    const uint64_t off[3] = {0, 4, 20};
    expect_rows(RK_PARAM_PREFIX_NGRAM, z, 3, 4, 0, 1000003ULL, off, 3);
}

Test(sid, paper_vectors_k2048_l6_no_overflow) {
    /* exact tok_6 = 73823022692637345791 > 2^64 (tests/ref/sid_rows.py) */
    const uint32_t c[6] = {2047, 2047, 2047, 2047, 2047, 2047};
    struct {
        uint64_t H, pre[6], bi[5], tri, four;
    } v[4] = {
        {18446744073709551615ULL,
         {2047ULL, 4196351ULL, 8594130943ULL, 17600780175359ULL, 36046397799139327ULL, 36046397799139331ULL},
         {4194303ULL, 8388607ULL, 12582911ULL, 16777215ULL, 20971519ULL},
         8589934591ULL,
         17592186044415ULL},
        {2305843009213693951ULL,
         {2047ULL, 4196351ULL, 8594130943ULL, 17600780175359ULL, 36046397799139327ULL, 36046397799139359ULL},
         {4194303ULL, 8388607ULL, 12582911ULL, 16777215ULL, 20971519ULL},
         8589934591ULL,
         17592186044415ULL},
        {1000003ULL,
         {2047ULL, 196339ULL, 105161ULL, 373178ULL, 270347ULL, 673092ULL},
         {194291ULL, 388583ULL, 582875ULL, 777167ULL, 971459ULL},
         908824ULL,
         268016ULL},
        {3247ULL, {2047ULL, 1227ULL, 566ULL, 837ULL, 608ULL, 2431ULL}, {2426ULL, 1606ULL, 786ULL, 3213ULL, 2393ULL},
         2585ULL, 270ULL},
    };
    for (int h = 0; h < 4; h++) {
        expect_rows(RK_PARAM_PREFIX_NGRAM, c, 6, 2048, 0, v[h].H, v[h].pre, 6);
        expect_rows(RK_PARAM_ALL_BIGRAMS, c, 6, 2048, 0, v[h].H, v[h].bi, 5);
        expect_rows(RK_PARAM_TRIGRAM, c, 6, 2048, 0, v[h].H, &v[h].tri, 1);
        expect_rows(RK_PARAM_FOURGRAM, c, 6, 2048, 0, v[h].H, &v[h].four, 1);
    }
    /* mixed codes */
    const uint32_t d[6] = {5, 2047, 0, 1234, 77, 2046};
    const uint64_t pre_b[6] = {5ULL, 1347ULL, 754ULL, 1902ULL, 1021ULL, 787ULL};
    const uint64_t bi_b[5] = {2546ULL, 2806ULL, 2841ULL, 1930ULL, 606ULL};
    const uint64_t tri_b = 2773ULL, four_b = 1335ULL;
    expect_rows(RK_PARAM_PREFIX_NGRAM, d, 6, 2048, 0, 3247, pre_b, 6);
    expect_rows(RK_PARAM_ALL_BIGRAMS, d, 6, 2048, 0, 3247, bi_b, 5);
    expect_rows(RK_PARAM_TRIGRAM, d, 6, 2048, 0, 3247, &tri_b, 1);
    expect_rows(RK_PARAM_FOURGRAM, d, 6, 2048, 0, 3247, &four_b, 1);
    const uint64_t pre_exact[6] = {5ULL, 14335ULL, 29360128ULL, 60129545426ULL, 123145309034573ULL,
                                   252201592902809598ULL};
    expect_rows(RK_PARAM_PREFIX_NGRAM, d, 6, 2048, 0, 18446744073709551615ULL, pre_exact, 6);
}

Test(sid, param_names_and_shapes) {
    rk_sid_param p;
    rk_err err = {0};
    for (int i = 0; i < RK_PARAM_COUNT; i++) {
        cr_assert_eq(rk_sid_param_parse(rk_sid_param_name((rk_sid_param)i), &p, &err), RK_OK);
        cr_expect_eq((int)p, i);
    }
    cr_expect_eq(rk_sid_param_parse("prefix-ngram", &p, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "unknown parameterization 'prefix-ngram'"), "%s", err.msg);
    cr_expect_eq(rk_sid_param_rows(RK_PARAM_TRIGRAM, 2, 0), 0);
    cr_expect_eq(rk_sid_param_rows(RK_PARAM_FOURGRAM, 3, 0), 0);
    cr_expect_eq(rk_sid_param_rows(RK_PARAM_PREFIX_NGRAM, 3, 4), 0);
    cr_expect_eq(rk_sid_param_rows(RK_PARAM_PREFIX_NGRAM, 6, 5), 5);
    cr_expect_eq(rk_sid_param_rows(RK_PARAM_ALL_BIGRAMS, 4, 0), 3);
    uint64_t rows[8];
    const uint32_t c[2] = {1, 2};
    cr_expect_eq(rk_sid_rows(RK_PARAM_TRIGRAM, c, 2, 4, 0, 100, rows), 0, "trigram needs 3 levels");
    cr_expect_eq(rk_sid_rows(RK_PARAM_HASH, c, 2, 4, 0, 100, rows), 0, "hash does not use codes");
    cr_expect_eq(rk_sid_mulmod(UINT64_MAX, UINT64_MAX, 1000000007ULL),
                 (uint64_t)(((unsigned __int128)UINT64_MAX * UINT64_MAX) % 1000000007ULL));
}

/* Property tests over random code tuples (issue 5). */
Test(sid, row_properties) {
    rk_rng rng;
    rk_rng_seed(&rng, 7);
    const rk_sid_param ps[4] = {RK_PARAM_TRIGRAM, RK_PARAM_FOURGRAM, RK_PARAM_ALL_BIGRAMS, RK_PARAM_PREFIX_NGRAM};
    const uint32_t K = 16;
    const int L = 4;
    for (int trial = 0; trial < 2000; trial++) {
        uint32_t a[4], b[4];
        for (int l = 0; l < L; l++) a[l] = (uint32_t)rk_rng_below(&rng, K);
        int j = (int)rk_rng_below(&rng, L + 1); /* shared prefix length */
        for (int l = 0; l < L; l++) b[l] = l < j ? a[l] : (uint32_t)rk_rng_below(&rng, K);
        if (j < L && b[j] == a[j]) b[j] = (a[j] + 1) % K; /* exactly j shared */
        uint64_t ra[8], rb[8], rc[8];
        /* identical codes -> identical rows; the rows are a function of the codes only,
         * so two raw ids with the same codes (an A/A pair) get the same rows */
        for (int q = 0; q < 4; q++) {
            uint64_t H = q == 3 ? 1000003 : 97;
            int g1 = rk_sid_rows(ps[q], a, L, K, 0, H, ra);
            int g2 = rk_sid_rows(ps[q], a, L, K, 0, H, rc);
            cr_assert_eq(g1, g2);
            for (int i = 0; i < g1; i++) cr_assert_eq(ra[i], rc[i]);
            for (int i = 0; i < g1; i++) cr_assert_lt(ra[i], H);
        }
        /* shared prefix of length j -> at least j shared rows (exactly j when H >= token space:
         * K + K^2 + K^3 + K^4 = 69904 < 1000003) */
        for (int big = 0; big < 2; big++) {
            uint64_t H = big ? 1000003 : 101;
            rk_sid_rows(RK_PARAM_PREFIX_NGRAM, a, L, K, 0, H, ra);
            rk_sid_rows(RK_PARAM_PREFIX_NGRAM, b, L, K, 0, H, rb);
            int shared = 0;
            for (int i = 0; i < L; i++) shared += ra[i] == rb[i];
            for (int i = 0; i < j; i++) cr_assert_eq(ra[i], rb[i], "prefix row %d differs with %d shared codes", i, j);
            if (big) cr_assert_eq(shared, j, "H >= token space: exactly %d shared rows, got %d", j, shared);
            else cr_assert_geq(shared, j);
        }
    }
}

/* ---------------------------------------------------------------- k-means */

/* n points around C well-separated known centres; RQ-KMeans with K = C at one
 * level must find every centre (each found centroid within 4 sigma/sqrt(n_c)
 * of a distinct true centre) and label every point by its centre. */
Test(sid, kmeans_recovers_known_centres) {
    const int C = 8, dim = 16, per = 200;
    const size_t n = (size_t)C * per;
    float centres[8 * 16];
    rk_rng rng;
    rk_rng_seed(&rng, 42);
    for (int c = 0; c < C; c++)
        for (int d = 0; d < dim; d++) centres[c * dim + d] = (float)(10.0 * rk_rng_normal(&rng));
    float *x = malloc(n * dim * sizeof(float));
    int *truth = malloc(n * sizeof(int));
    const double sigma = 0.1;
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % C);
        truth[i] = c;
        for (int d = 0; d < dim; d++) x[i * dim + d] = centres[c * dim + d] + (float)(sigma * rk_rng_normal(&rng));
    }
    rk_sid_codebook cb;
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    rk_err err = {0};
    cr_assert_eq(rk_sid_train(x, n, dim, 1, C, &o, &cb, &err), RK_OK, "%s", err.msg);
    int match[8];
    int used[8] = {0};
    for (int k = 0; k < C; k++) {
        int best = -1;
        double bd = 1e30;
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int d = 0; d < dim; d++) {
                double t = cb.centroids[k * dim + d] - centres[c * dim + d];
                s += t * t;
            }
            if (s < bd) {
                bd = s;
                best = c;
            }
        }
        match[k] = best;
        used[best]++;
        /* the mean of 200 points with sigma 0.1 per coordinate: |error| ~ 0.1/sqrt(200) per coord */
        cr_expect_lt(sqrt(bd), 4 * sigma * sqrt((double)dim / per), "centroid %d is %g from its centre", k, sqrt(bd));
    }
    for (int c = 0; c < C; c++) cr_expect_eq(used[c], 1, "true centre %d matched %d times", c, used[c]);
    uint32_t *codes = malloc(n * sizeof(uint32_t));
    cr_assert_eq(rk_sid_encode(&cb, x, n, codes, &err), RK_OK);
    for (size_t i = 0; i < n; i++) cr_assert_eq(match[codes[i]], truth[i], "point %zu mislabeled", i);
    rk_sid_stats s;
    cr_assert_eq(rk_sid_compute_stats(&cb, x, n, codes, &s, &err), RK_OK);
    cr_expect_eq(s.utilisation[0], 1.0);
    cr_expect_lt(s.recon_mse[0], dim * sigma * sigma * 1.2); /* ~ dim sigma^2 = 0.16 */
    cr_expect_gt(s.recon_mse[0], dim * sigma * sigma * 0.8);
    /* same seed -> same codebook bit for bit */
    rk_sid_codebook cb2;
    cr_assert_eq(rk_sid_train(x, n, dim, 1, C, &o, &cb2, &err), RK_OK);
    cr_expect_eq(memcmp(cb.centroids, cb2.centroids, (size_t)C * dim * sizeof(float)), 0);
    rk_sid_codebook_free(&cb);
    rk_sid_codebook_free(&cb2);
    free(codes);
    free(x);
    free(truth);
}

/* Two-level hierarchy: x = A[a] + B[b] + noise with |A| >> |B|; RQ-KMeans
 * L = 2 recovers (a, b) for every point up to a relabeling per level, the
 * error falls from level 1 to level 2, and every code is used. */
Test(sid, residual_levels_recover_hierarchy) {
    const int KA = 4, KB = 4, dim = 8, rep = 30;
    const size_t n = (size_t)KA * KB * rep;
    float A[4 * 8], B[4 * 8];
    rk_rng rng;
    rk_rng_seed(&rng, 3);
    for (int i = 0; i < KA * dim; i++) A[i] = (float)(20 * rk_rng_normal(&rng));
    for (int i = 0; i < KB * dim; i++) B[i] = (float)(2 * rk_rng_normal(&rng));
    float *x = malloc(n * dim * sizeof(float));
    int *ta = malloc(n * sizeof(int)), *tb = malloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        ta[i] = (int)(i % KA);
        tb[i] = (int)((i / KA) % KB);
        for (int d = 0; d < dim; d++)
            x[i * dim + d] = A[ta[i] * dim + d] + B[tb[i] * dim + d] + (float)(0.05 * rk_rng_normal(&rng));
    }
    rk_sid_codebook cb;
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    o.seed = 11;
    rk_err err = {0};
    cr_assert_eq(rk_sid_train(x, n, dim, 2, 4, &o, &cb, &err), RK_OK, "%s", err.msg);
    uint32_t *codes = malloc(n * 2 * sizeof(uint32_t));
    cr_assert_eq(rk_sid_encode(&cb, x, n, codes, &err), RK_OK);
    /* a consistent bijection true label -> code per level */
    int mapA[4], mapB[4];
    for (int i = 0; i < 4; i++) mapA[i] = mapB[i] = -1;
    for (size_t i = 0; i < n; i++) {
        if (mapA[ta[i]] < 0) mapA[ta[i]] = (int)codes[2 * i];
        if (mapB[tb[i]] < 0) mapB[tb[i]] = (int)codes[2 * i + 1];
        cr_assert_eq((int)codes[2 * i], mapA[ta[i]], "level 1 code of point %zu", i);
        cr_assert_eq((int)codes[2 * i + 1], mapB[tb[i]], "level 2 code of point %zu", i);
    }
    rk_sid_stats s;
    cr_assert_eq(rk_sid_compute_stats(&cb, x, n, codes, &s, &err), RK_OK);
    cr_expect_lt(s.recon_mse[1], s.recon_mse[0] / 50);
    cr_expect_eq(s.utilisation[0], 1.0);
    cr_expect_eq(s.utilisation[1], 1.0);
    cr_expect_eq(s.n_unique, 16u);
    cr_expect_eq(s.collision_rate, 1.0, "30 points per (a, b) cell all collide");
    rk_sid_codebook_free(&cb);
    free(codes);
    free(x);
    free(ta);
    free(tb);
}

/* papers.md §6.1: z = sum_l V_l[a_l] with well-separated codebooks -> codes = a. */
Test(sid, encode_exact_sums) {
    const int L = 3, K = 5, dim = 6;
    rk_sid_codebook cb = {L, K, dim, calloc((size_t)L * K * dim, sizeof(float))};
    rk_rng rng;
    rk_rng_seed(&rng, 5);
    const double scale[3] = {100, 10, 1};
    for (int l = 0; l < L; l++)
        for (int i = 0; i < K * dim; i++) cb.centroids[(size_t)l * K * dim + i] = (float)(scale[l] * rk_rng_normal(&rng));
    for (int t = 0; t < 100; t++) {
        uint32_t a[3], got[3];
        float z[6] = {0};
        for (int l = 0; l < L; l++) {
            a[l] = (uint32_t)rk_rng_below(&rng, K);
            for (int d = 0; d < dim; d++) z[d] += cb.centroids[((size_t)l * K + a[l]) * dim + d];
        }
        float r[6];
        rk_err err = {0};
        cr_assert_eq(rk_sid_encode_one(&cb, z, got, r, &err), RK_OK);
        for (int l = 0; l < L; l++) cr_assert_eq(got[l], a[l], "trial %d level %d", t, l);
        for (int d = 0; d < dim; d++) cr_assert_lt(fabsf(r[d]), 1e-3f);
    }
    float bad[6] = {0, NAN, 0, 0, 0, 0};
    uint32_t c[3];
    rk_err err = {0};
    cr_expect_eq(rk_sid_encode_one(&cb, bad, c, NULL, &err), RK_ENUMERIC);
    cr_expect(strstr(err.msg, "column 1 is not finite"), "%s", err.msg);
    /* hand-computed stats: 2 items, L = 1 */
    rk_sid_codebook one = {1, 2, 1, (float[]){0.0f, 10.0f}};
    float xs[3] = {1.0f, 9.0f, 2.0f};
    uint32_t cs[3] = {0, 1, 0};
    rk_sid_stats s;
    cr_assert_eq(rk_sid_compute_stats(&one, xs, 3, cs, &s, &err), RK_OK);
    cr_expect_float_eq(s.recon_mse[0], (1.0 + 1.0 + 4.0) / 3, 1e-12); /* residuals 1, -1, 2 */
    cr_expect_float_eq(s.rel_error[0], 2.0 / ((1 + 81 + 4) / 3.0), 1e-12);
    cr_expect_float_eq(s.utilisation[0], 1.0, 1e-12);
    cr_expect_float_eq(s.collision_rate, 2.0 / 3, 1e-12); /* items 0 and 2 share code 0 */
    cr_expect_eq(s.n_unique, 2u);
    free(cb.centroids);
}

Test(sid, train_bad_input) {
    rk_sid_codebook cb;
    rk_err err = {0};
    float x[8] = {0, 1, 2, 3, 4, 5, 6, INFINITY};
    cr_expect_eq(rk_sid_train(x, 4, 2, 1, 8, NULL, &cb, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "4 embeddings, need at least K = 8"), "%s", err.msg);
    cr_expect_eq(rk_sid_train(x, 4, 2, 9, 2, NULL, &cb, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "levels 9"), "%s", err.msg);
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    cr_expect_eq(rk_sid_train(x, 4, 2, 1, 2, &o, &cb, &err), RK_ENUMERIC);
    cr_expect(strstr(err.msg, "row 3 column 1 is not finite"), "%s", err.msg);
    /* duplicate points: fewer distinct points than K still gives a codebook (repair) */
    float y[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    cr_expect_eq(rk_sid_train(y, 4, 2, 1, 2, &o, &cb, &err), RK_OK, "%s", err.msg);
    rk_sid_codebook_free(&cb);
}

/* ---------------------------------------------------------------- files */

Test(sid, codebook_and_items_round_trip) {
    const int L = 2, K = 3, dim = 4;
    rk_sid_codebook cb = {L, K, dim, malloc((size_t)L * K * dim * sizeof(float))};
    for (int i = 0; i < L * K * dim; i++) cb.centroids[i] = (float)i * 0.25f - 1.0f;
    rk_err err = {0};
    cr_assert_eq(rk_sid_codebook_save(&cb, tpath("cb.safetensors"), "minilm-v1", &err), RK_OK, "%s", err.msg);
    rk_sid_codebook back;
    cr_assert_eq(rk_sid_codebook_load(tpath("cb.safetensors"), &back, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(back.levels, L);
    cr_expect_eq(back.codes, K);
    cr_expect_eq(back.dim, dim);
    cr_expect_eq(memcmp(back.centroids, cb.centroids, (size_t)L * K * dim * sizeof(float)), 0);
    rk_sid_codebook_free(&back);

    const int64_t ids[3] = {7, 193609, -2};
    const uint32_t codes[6] = {0, 1, 2, 2, 1, 0};
    rk_sid_items *it;
    cr_assert_eq(rk_sid_items_create(ids, codes, 3, L, K, "minilm-v1", &it, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(rk_sid_items_find(it, 193609), 1);
    cr_expect_eq(rk_sid_items_find(it, 8), -1);
    cr_assert_eq(rk_sid_items_save(it, &cb, tpath("items.safetensors"), &err), RK_OK, "%s", err.msg);
    rk_sid_items *it2;
    cr_assert_eq(rk_sid_items_load(tpath("items.safetensors"), &it2, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(rk_sid_items_count(it2), 3u);
    cr_expect_eq(rk_sid_items_levels(it2), L);
    cr_expect_eq(rk_sid_items_K(it2), K);
    cr_expect_str_eq(rk_sid_items_version(it2), "minilm-v1");
    for (int i = 0; i < 3; i++) {
        long p = rk_sid_items_find(it2, ids[i]);
        cr_assert_eq(p, i);
        cr_expect_eq(rk_sid_items_codes(it2)[2 * p], codes[2 * i]);
        cr_expect_eq(rk_sid_items_codes(it2)[2 * p + 1], codes[2 * i + 1]);
    }
    /* the records file carries the codebooks too */
    cr_assert_eq(rk_sid_codebook_load(tpath("items.safetensors"), &back, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(memcmp(back.centroids, cb.centroids, (size_t)L * K * dim * sizeof(float)), 0);
    rk_sid_codebook_free(&back);
    rk_sid_items_destroy(it);
    rk_sid_items_destroy(it2);

    /* bad input */
    const int64_t dup[2] = {5, 5};
    cr_expect_eq(rk_sid_items_create(dup, codes, 2, L, K, NULL, &it, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "item id 5 appears twice"), "%s", err.msg);
    const uint32_t big[2] = {0, 3};
    cr_expect_eq(rk_sid_items_create(ids, big, 1, L, K, NULL, &it, &err), RK_EINVAL);
    cr_expect(strstr(err.msg, "code 3 >= K = 3"), "%s", err.msg);
    /* a codebook file is not an item-records file */
    cr_expect_eq(rk_sid_items_load(tpath("cb.safetensors"), &it, &err), RK_ENOTFOUND);
    cr_expect(strstr(err.msg, "cb.safetensors: tensor 'ids' missing"), "%s", err.msg);
    cr_expect_neq(rk_sid_codebook_load(tpath("missing.safetensors"), &back, &err), RK_OK);
    cr_expect(strstr(err.msg, "missing.safetensors"), "%s", err.msg);
    /* a records file whose codes are out of range */
    rk_st_writer *w;
    rk_st_writer_create(&w, &err);
    int64_t s1[1] = {1}, s2[2] = {1, 2}, bc[2] = {0, 9};
    rk_st_writer_add_i64(w, "ids", ids, 1, s1, &err);
    rk_st_writer_add_i64(w, "codes", bc, 2, s2, &err);
    rk_st_writer_add_meta(w, "rankd.sid.levels", "2", &err);
    rk_st_writer_add_meta(w, "rankd.sid.codes", "3", &err);
    cr_assert_eq(rk_st_writer_write(w, tpath("bad.safetensors"), &err), RK_OK);
    rk_st_writer_destroy(w);
    cr_expect_eq(rk_sid_items_load(tpath("bad.safetensors"), &it, &err), RK_EFORMAT);
    cr_expect(strstr(err.msg, "item row 0 (id 7) level 1: code 9 outside [0, 3)"), "%s", err.msg);
    free(cb.centroids);
}

/* ---------------------------------------------------------------- model */

/* 60 items in 6 content clusters, dim 8; item 1000 + k is an exact copy
 * (same embedding, so the same codes) of item k for k < 3. Records built by
 * RQ-KMeans L = 2, K = 4 and saved with the codebooks at tpath("items.sid").
 * emb_out [63, 8] receives the embeddings in record order (ids 0..59, 1000..1002). */
#define NI 60
#define NA 3
#define ED 8
static void make_records(float *emb_out, int64_t *ids_out) {
    rk_rng rng;
    rk_rng_seed(&rng, 99);
    float cent[6 * ED];
    for (int i = 0; i < 6 * ED; i++) cent[i] = (float)(3 * rk_rng_normal(&rng));
    for (int i = 0; i < NI; i++) {
        ids_out[i] = i;
        for (int d = 0; d < ED; d++) emb_out[i * ED + d] = cent[(i % 6) * ED + d] + (float)(0.3 * rk_rng_normal(&rng));
    }
    for (int k = 0; k < NA; k++) {
        ids_out[NI + k] = 1000 + k;
        memcpy(emb_out + (NI + k) * ED, emb_out + k * ED, ED * sizeof(float));
    }
    rk_sid_codebook cb;
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    rk_err err = {0};
    cr_assert_eq(rk_sid_train(emb_out, NI, ED, 2, 4, &o, &cb, &err), RK_OK, "%s", err.msg);
    uint32_t codes[(NI + NA) * 2];
    cr_assert_eq(rk_sid_encode(&cb, emb_out, NI + NA, codes, &err), RK_OK);
    rk_sid_items *it;
    cr_assert_eq(rk_sid_items_create(ids_out, codes, NI + NA, 2, 4, "test-v1", &it, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_sid_items_save(it, &cb, tpath("items.sid"), &err), RK_OK, "%s", err.msg);
    rk_sid_items_destroy(it);
    rk_sid_codebook_free(&cb);
}

/* Clicks depend on the item's cluster: label = (item % 6 < 3) xor (user odd), some noise. */
static void write_tsv(const char *path, int n, uint64_t seed) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "label\tuser\titem\thist\n");
    rk_rng rng;
    rk_rng_seed(&rng, seed);
    for (int r = 0; r < n; r++) {
        int u = (int)rk_rng_below(&rng, 20), i = (int)rk_rng_below(&rng, NI);
        int y = ((i % 6) < 3) ^ (u & 1);
        if (rk_rng_uniform(&rng) < 0.1) y ^= 1;
        fprintf(f, "%d\t%d\t%d\t%d|%d|%d\n", y, u, i, (i + 1) % NI, 777 + u, (i + 7) % NI);
    }
    fclose(f);
}

static const char *cfg_json(const char *param, int item_rows, char *buf, size_t cap) {
    snprintf(buf, cap,
             "{\"name\": \"sidtest\", \"label_column\": \"label\", \"features\": ["
             "{\"name\": \"user\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 64, \"dim\": 4},"
             "{\"name\": \"item\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": %d, \"dim\": 4,"
             " \"param\": \"%s\"%s%s%s}],"
             "\"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1, \"hidden\": [8]},"
             "\"train\": {\"seed\": 3, \"batch_size\": 32, \"max_epochs\": 2, \"patience\": 1, \"threads\": 1},"
             "\"aliases\": {\"user_id\": \"user\", \"ad_id\": \"item\"}}",
             item_rows, param, strcmp(param, "hash") ? ", \"sid\": \"" : "", /* hash uses no records */
             strcmp(param, "hash") ? tpath("items.sid") : "", strcmp(param, "hash") ? "\"" : "");
    return buf;
}

static rk_model *train_bundle_json(const char *json, const char *dir) {
    rk_model_cfg c;
    rk_err e = {0};
    cr_assert_eq(rk_model_cfg_parse(json, &c, &e), RK_OK, "%s", e.msg);
    write_tsv(tpath("train.tsv"), 600, 1);
    write_tsv(tpath("valid.tsv"), 200, 2);
    rk_train_io io = {tpath("train.tsv"), tpath("valid.tsv"), NULL, 1};
    rk_model *m;
    rk_train_report rep;
    cr_assert_eq(rk_train(&c, &io, &m, &rep, &e), RK_OK, "%s", e.msg);
    rk_model_cfg_free(&c);
    rk_train_report_free(&rep);
    cr_assert_eq(rk_model_save(m, dir, NULL, 0, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
    rk_model *back;
    cr_assert_eq(rk_model_open(dir, &back, &e), RK_OK, "%s", e.msg);
    return back;
}

static rk_model *train_bundle(const char *param, int item_rows, const char *dir) {
    char buf[2048];
    return train_bundle_json(cfg_json(param, item_rows, buf, sizeof buf), dir);
}

TestSuite(sid_model, .init = tmp_make, .fini = tmp_remove);

/* Score rows (user u, item value) of one batch: pctr[n]. */
static void score_items(rk_model *m, const char *const *items, int n, float *pctr, uint64_t *unknown) {
    rk_scorer *s;
    rk_err e = {0};
    cr_assert_eq(rk_scorer_create(m, 16, 16, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, n, &e), RK_OK);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(rk_scorer_add_sparse(s, i, 0, "3", 1, &e), RK_OK, "%s", e.msg);
        if (items[i]) cr_assert_eq(rk_scorer_add_sparse(s, i, 1, items[i], strlen(items[i]), &e), RK_OK, "%s", e.msg);
    }
    cr_assert_eq(rk_scorer_run(s, pctr, NULL, NULL, &e), RK_OK, "%s", e.msg);
    if (unknown) rk_scorer_sid_counters(s, unknown, NULL);
    rk_scorer_destroy(s);
}

/* Pack a Rank request of user "3" and candidates c[n] into buf. */
static size_t pack_request(Rankd__V1__Candidate *c, int n, uint8_t *buf) {
    static Rankd__V1__User u = RANKD__V1__USER__INIT;
    u.user_id = "3";
    Rankd__V1__Candidate *cp[8];
    for (int i = 0; i < n; i++) cp[i] = &c[i];
    Rankd__V1__RankRequest r = RANKD__V1__RANK_REQUEST__INIT;
    r.user = &u;
    r.n_candidates = (size_t)n;
    r.candidates = cp;
    return rankd__v1__rank_request__pack(&r, buf);
}

Test(sid_model, bundle_aa_request_time_and_fallback) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tpath("bundle"));
    rk_model *m = train_bundle("prefix_ngram", 7, dir);
    rk_err e = {0};
    cr_expect(rk_path_exists(tpath("bundle/sid.item.safetensors")), "the bundle carries the codebooks");
    /* the records live in the bundle's RocksDB: keyed table sid.item with L = 2 codes per item */
    {
        char tables[300];
        snprintf(tables, sizeof tables, "%s/tables", dir);
        rk_store *st;
        const char *names[1] = {"sid.item"};
        const int dims[1] = {2};
        cr_assert_eq(rk_store_open(tables, names, dims, 1, &st, &e), RK_OK, "%s", e.msg);
        uint64_t n;
        cr_assert_eq(rk_store_count_keys(st, 0, &n, &e), RK_OK);
        cr_expect_eq(n, (uint64_t)(NI + NA));
        rk_sid_items *want;
        cr_assert_eq(rk_sid_items_load(tpath("items.sid"), &want, &e), RK_OK);
        uint64_t keys[3] = {5, 1001, 77777};
        float got[6];
        size_t missing = 0;
        cr_assert_eq(rk_store_get(st, 0, keys, 3, got, &missing, &e), RK_OK, "%s", e.msg);
        const uint32_t *wc = rk_sid_items_codes(want);
        long p5 = rk_sid_items_find(want, 5), p1001 = rk_sid_items_find(want, 1001);
        cr_expect_eq(got[0], (float)wc[2 * p5]);
        cr_expect_eq(got[1], (float)wc[2 * p5 + 1]);
        cr_expect_eq(got[2], (float)wc[2 * p1001]);
        cr_expect_eq(got[3], (float)wc[2 * p1001 + 1]);
        cr_expect_eq(got[4], -1.0f, "an unknown item's default row is 'no codes'");
        cr_expect_eq(missing, 1u);
        rk_sid_items_destroy(want);
        rk_store_close(st);
    }
    /* A/A: item k and its copy 1000 + k score exactly alike; the rows never depend on the raw id */
    const char *items[8] = {"0", "1000", "1", "1001", "2", "1002", "4", "5"};
    float p[8];
    score_items(m, items, 8, p, NULL);
    for (int k = 0; k < 3; k++) cr_expect_eq(p[2 * k], p[2 * k + 1], "A/A pair %d: %g vs %g", k, p[2 * k], p[2 * k + 1]);
    cr_expect_neq(p[6], p[7], "different clusters score differently");
    /* request-time assignment from the content embedding == the stored (offline) codes */
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m, 16, 16, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 4, &e), RK_OK);
    for (int i = 0; i < 4; i++) cr_assert_eq(rk_scorer_add_sparse(s, i, 0, "3", 1, &e), RK_OK);
    cr_assert_eq(rk_scorer_add_sparse(s, 0, 1, "4", 1, &e), RK_OK);
    cr_assert_eq(rk_scorer_add_item_embedding(s, 1, 1, emb + 4 * ED, ED, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_add_sparse(s, 2, 1, "424242", 6, &e), RK_OK); /* unknown, no embedding */
    /* row 3: no item value at all */
    float q[4];
    cr_assert_eq(rk_scorer_run(s, q, NULL, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(q[0], q[1], "request-time codes %g vs stored codes %g", q[1], q[0]);
    cr_expect_eq(q[2], q[3], "fallback = empty bag: %g vs %g", q[2], q[3]);
    cr_expect_neq(q[0], q[2]);
    uint64_t unknown, assigned;
    rk_scorer_sid_counters(s, &unknown, &assigned);
    cr_expect_eq(unknown, 1u);
    cr_expect_eq(assigned, 1u);
    /* bad embeddings */
    float nan_emb[ED] = {0, 0, NAN};
    cr_expect_eq(rk_scorer_add_item_embedding(s, 0, 1, emb, ED - 1, &e), RK_ESHAPE);
    cr_expect(strstr(e.msg, "content_embedding: 7 values, the codebooks of feature 'item' expect 8"), "%s", e.msg);
    cr_expect_eq(rk_scorer_add_item_embedding(s, 0, 1, nan_emb, ED, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "column 2 is not finite"), "%s", e.msg);
    cr_expect_eq(rk_scorer_add_item_embedding(s, 0, 0, emb, ED, &e), RK_EINVAL);
    rk_scorer_destroy(s);

    /* the Rank service: candidates 0 (known id 4), 1 (new id with item 4's embedding),
     * 2 (new id, nothing) */
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    o.max_candidates = 8;
    rk_service *svc;
    cr_assert_eq(rk_service_create(m, &o, &svc, &e), RK_OK, "%s", e.msg);
    Rankd__V1__Candidate c[3] = {RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT};
    c[0].ad_id = "4";
    c[1].ad_id = "new-ad-1";
    c[1].n_content_embedding = ED;
    c[1].content_embedding = emb + 4 * ED;
    c[2].ad_id = "new-ad-2";
    uint8_t buf[4096];
    size_t len = pack_request(c, 3, buf);
    const uint8_t *resp;
    size_t resp_len;
    cr_assert_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    Rankd__V1__RankResponse *rr = rankd__v1__rank_response__unpack(NULL, resp_len, resp);
    cr_assert_not_null(rr);
    cr_assert_eq(rr->n_scores, 3u);
    cr_expect_eq(rr->scores[0]->pctr, q[0]);
    cr_expect_eq(rr->scores[1]->pctr, q[0], "served request-time assignment %g vs stored %g", rr->scores[1]->pctr, q[0]);
    cr_expect_eq(rr->scores[2]->pctr, q[3], "served fallback %g vs empty bag %g", rr->scores[2]->pctr, q[3]);
    rankd__v1__rank_response__free_unpacked(rr, NULL);
    rk_service_sid_counters(svc, &unknown, &assigned);
    cr_expect_eq(unknown, 1u, "the fallback is counted");
    cr_expect_eq(assigned, 1u);
    /* warm: request-time assignment and the fallback allocate nothing */
    rk_alloc_fail_after(1);
    int code = rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e);
    rk_alloc_fail_after(0);
    cr_expect_eq(code, 0, "with every rk_malloc failing: %s", e.msg);
    /* a wrong-sized embedding names the field */
    c[1].n_content_embedding = 3;
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[1].content_embedding: 3 values"), "%s", e.msg);
    c[1].n_content_embedding = ED;
    /* a known ad's embedding gets the same checks as an unknown one's */
    c[0].n_content_embedding = ED;
    c[0].content_embedding = nan_emb;
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[0].content_embedding: column 2 is not finite"), "%s", e.msg);
    c[0].n_content_embedding = 5;
    c[0].content_embedding = emb;
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[0].content_embedding: 5 values, the codebooks of feature 'item' expect 8"),
              "%s", e.msg);
    c[0].n_content_embedding = 0;
    c[0].content_embedding = NULL;
    /* an embedding without an ad_id is refused, not scored with the default */
    c[1].ad_id = "";
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[1].ad_id: empty, but content_embedding is set"), "%s", e.msg);
    c[1].ad_id = "new-ad-1";
    /* content this service cannot encode (no encoders) is refused, not ignored */
    c[2].content_text = (ProtobufCBinaryData){9, (uint8_t *)"red shoes"};
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect_str_eq(e.msg, "candidates[2].content_text: this rankd has no text encoder (--encoder) to encode it");
    c[2].content_text = (ProtobufCBinaryData){3, (uint8_t *)" \t "}; /* only whitespace: no text */
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    c[2].content_text = (ProtobufCBinaryData){0, NULL};
    c[2].content_image = (ProtobufCBinaryData){4, (uint8_t *)"\xff\xd8\xff\xe0"};
    len = pack_request(c, 3, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect_str_eq(e.msg, "candidates[2].content_image: this rankd has no image encoder (--image-encoder) to encode it");
    c[2].content_image = (ProtobufCBinaryData){0, NULL};
    rk_service_destroy(svc);

    /* a bundle that lost its codebooks file is refused, naming it */
    {
        char cp[600], cbf[600];
        snprintf(cp, sizeof cp, "cp -r %s %s", dir, tpath("broken"));
        cr_assert_eq(system(cp), 0);
        snprintf(cbf, sizeof cbf, "%s/sid.item.safetensors", tpath("broken"));
        cr_assert_eq(remove(cbf), 0);
        rk_model *bad;
        cr_expect_neq(rk_model_open(tpath("broken"), &bad, &e), RK_OK);
        cr_expect(strstr(e.msg, "sid.item.safetensors"), "%s", e.msg);
    }

    /* the gRPC server sums the workers' counts */
    rk_server_opts so = RK_SERVER_OPTS_DEFAULT;
    so.listen = "127.0.0.1:0";
    so.threads = 1;
    rk_server *srv;
    int port;
    cr_assert_eq(rk_server_start(&so, m, &srv, &port, &e), RK_OK, "%s", e.msg);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rk_client *cl;
    cr_assert_eq(rk_client_create(addr, &cl, &e), RK_OK, "%s", e.msg);
    for (int k = 0; k < 2; k++) {
        Rankd__V1__RankRequest *req = rankd__v1__rank_request__unpack(NULL, pack_request(c, 3, buf), buf);
        rk_call_result res;
        Rankd__V1__RankResponse *resp2;
        cr_assert_eq(rk_client_rank(cl, req, 10000, &res, &resp2, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, 0, "%s", res.msg);
        cr_expect_eq(resp2->scores[1]->pctr, q[0]);
        rk_client_free_response(resp2);
        rk_call_result_free(&res);
        rankd__v1__rank_request__free_unpacked(req, NULL);
    }
    rk_client_destroy(cl);
    rk_server_counters cnt;
    rk_server_stop(srv, &cnt);
    cr_expect_eq(cnt.rank_ok, 2u);
    cr_expect_eq(cnt.sid_assigned, 2u);
    cr_expect_eq(cnt.sid_unknown, 2u);
    rk_model_destroy(m);
}

Test(sid_model, individual_and_hash_aa) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    /* individual: one row per record + OOV; a copy (never trained, zeroed) differs from its original */
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tpath("ie"));
    rk_model *m = train_bundle("individual", NI + NA + 1, dir);
    const char *items[4] = {"0", "1000", "99999", "abc"};
    float p[4];
    uint64_t unknown;
    score_items(m, items, 4, p, &unknown);
    cr_expect_neq(p[0], p[1], "individual embeddings are per raw id");
    cr_expect_eq(p[2], p[3], "both unknown ids get the OOV row");
    cr_expect_eq(unknown, 2u);
    rk_model_destroy(m);
    /* random hashing: the copy hashes elsewhere */
    snprintf(dir, sizeof dir, "%s", tpath("rh"));
    m = train_bundle("hash", 7, dir);
    score_items(m, items, 2, p, NULL);
    cr_expect_neq(p[0], p[1], "random hashing depends on the raw id");
    rk_model_destroy(m);
}

Test(sid_model, config_errors) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    char buf[2048];
    rk_model_cfg c;
    rk_err e = {0};
    cr_expect_eq(rk_model_cfg_parse(cfg_json("prefix-5gram", 7, buf, sizeof buf), &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "features[1].param: unknown parameterization 'prefix-5gram'"), "%s", e.msg);
    /* keys that do not apply are errors naming the feature and the key */
    static const struct { const char *json, *want; } keyerr[] = {
        {"{\"features\": [{\"name\": \"y\", \"kind\": \"dense\", \"side\": \"item\", \"param\": \"trigram\"}]}",
         "features[0].param: feature 'y' is dense; \"param\" applies to sparse features only"},
        {"{\"features\": [{\"name\": \"y\", \"kind\": \"dense\", \"side\": \"item\", \"sid\": \"a.sid\"}]}",
         "features[0].sid: feature 'y' is dense"},
        {"{\"features\": [{\"name\": \"y\", \"kind\": \"dense\", \"side\": \"item\", \"ngram\": 2}]}",
         "features[0].ngram: feature 'y' is dense"},
        {"{\"features\": [{\"name\": \"i\", \"side\": \"item\", \"table_size\": 9, \"param\": \"hash\", "
         "\"sid\": \"a.sid\"}]}",
         "features[0].sid: feature 'i' has param hash (the default), which uses no item records"},
        {"{\"features\": [{\"name\": \"i\", \"side\": \"item\", \"table_size\": 9, \"sid\": \"a.sid\"}]}",
         "features[0].sid: feature 'i' has param hash"},
        {"{\"features\": [{\"name\": \"i\", \"side\": \"item\", \"table_size\": 9, \"param\": \"trigram\", "
         "\"ngram\": 2, \"sid\": \"a.sid\"}]}",
         "features[0].ngram: feature 'i' has param trigram; \"ngram\" applies to prefix_ngram only"},
        {"{\"features\": [{\"name\": \"i\", \"side\": \"item\", \"table_size\": 9, \"log1p\": true}]}",
         "features[0].log1p: feature 'i' is sparse; \"log1p\" applies to dense features only"},
    };
    for (size_t k = 0; k < sizeof keyerr / sizeof keyerr[0]; k++) {
        cr_expect_eq(rk_model_cfg_parse(keyerr[k].json, &c, &e), RK_EINVAL, "case %zu", k);
        cr_expect(strstr(e.msg, keyerr[k].want), "case %zu: %s", k, e.msg);
    }
    /* missing records file */
    cr_assert_eq(rk_model_cfg_parse(cfg_json("trigram", 7, buf, sizeof buf), &c, &e), RK_OK, "%s", e.msg);
    write_tsv(tpath("train.tsv"), 50, 1);
    write_tsv(tpath("valid.tsv"), 50, 2);
    rk_train_io io = {tpath("train.tsv"), tpath("valid.tsv"), NULL, 1};
    rk_model *m;
    rk_train_report rep;
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EINVAL, "trigram needs 3 levels, the records have 2");
    cr_expect(strstr(e.msg, "feature 'item': \"param\": \"trigram\" needs records of at least 3 levels") &&
                  strstr(e.msg, "items.sid has 2"),
              "%s", e.msg);
    /* prefix_ngram with ngram past the records' levels names the key */
    {
        char b2[2048];
        cfg_json("prefix_ngram\", \"ngram\": 3, \"x\": \"", 7, b2, sizeof b2);
        char *x = strstr(b2, ", \"x\": \"\"");
        cr_assert_not_null(x);
        memmove(x, x + 9, strlen(x + 9) + 1);
        rk_model_cfg_free(&c);
        cr_assert_eq(rk_model_cfg_parse(b2, &c, &e), RK_OK, "%s: %s", b2, e.msg);
        cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EINVAL);
        cr_expect(strstr(e.msg, "feature 'item': \"ngram\": 3 does not fit the 2 levels of the records"), "%s", e.msg);
    }
    snprintf(c.features[1].sid, sizeof c.features[1].sid, "%s", tpath("nope.sid"));
    c.features[1].param = RK_PARAM_PREFIX_NGRAM;
    cr_expect_neq(rk_train(&c, &io, &m, &rep, &e), RK_OK);
    cr_expect(strstr(e.msg, "feature 'item' sid") && strstr(e.msg, "nope.sid"), "%s", e.msg);
    /* individual with a table too small for the records */
    rk_model_cfg_free(&c);
    cr_assert_eq(rk_model_cfg_parse(cfg_json("individual", 10, buf, sizeof buf), &c, &e), RK_OK);
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "param individual needs table_size >= 64"), "%s", e.msg);
    /* item ids that are not canonical int64 are refused, naming file, row, column and value */
    {
        static const char *const badids[] = {"abc", "1.5", "0x10", "99999999999999999999999", " 1", "+1", "01", "-0"};
        rk_model_cfg_free(&c);
        cr_assert_eq(rk_model_cfg_parse(cfg_json("prefix_ngram", 7, buf, sizeof buf), &c, &e), RK_OK);
        for (size_t k = 0; k < sizeof badids / sizeof badids[0]; k++) {
            FILE *f = fopen(tpath("badid.tsv"), "w");
            cr_assert_not_null(f);
            fprintf(f, "label\tuser\titem\thist\n1\t3\t4\t5\n0\t3\t%s\t5\n", badids[k]);
            fclose(f);
            rk_train_io bio = {tpath("train.tsv"), tpath("badid.tsv"), NULL, 1};
            cr_expect_eq(rk_train(&c, &bio, &m, &rep, &e), RK_EFORMAT, "id '%s'", badids[k]);
            char want[200];
            snprintf(want, sizeof want,
                     "badid.tsv row 3, column item: feature 'item' (param prefix_ngram) expects integer item ids "
                     "(canonical decimal int64), got '%s'",
                     badids[k]);
            cr_expect(strstr(e.msg, want), "%s", e.msg);
        }
    }
    /* no "sid" at all */
    rk_model_cfg_free(&c);
    cr_assert_eq(rk_model_cfg_parse(cfg_json("prefix_ngram", 7, buf, sizeof buf), &c, &e), RK_OK);
    c.features[1].sid[0] = 0;
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "needs \"sid\""), "%s", e.msg);
    rk_model_cfg_free(&c);
}


static int always_stop(void *ctx) {
    (void)ctx;
    return 1;
}

/* rankd's --encoder path: an unknown ad that carries only its text is encoded
 * in-process and gets the codes of the same text encoded offline. */
Test(sid_model, request_text_assignment, .timeout = 120) {
    const char *dir = rk_test_encoder_dir();
    static const char *const topics[4] = {"space adventure with aliens and starships",
                                          "romantic comedy about a wedding in Paris",
                                          "documentary about whales in the ocean",
                                          "horror movie in a haunted house at night"};
    enum { NT = 24 };
    char texts[NT][160];
    const char *tp[NT];
    for (int i = 0; i < NT; i++) {
        snprintf(texts[i], sizeof texts[i], "%s, part %d (%d)", topics[i % 4], i / 4 + 1, 1980 + i);
        tp[i] = texts[i];
    }
    rk_text_encoder *enc;
    rk_err e = {0};
    cr_assert_eq(rk_text_encoder_open(dir, NULL, &enc, &e), RK_OK, "%s", e.msg);
    int D = rk_text_encoder_dim(enc);
    float *emb = malloc((size_t)NT * D * sizeof(float));
    for (int i = 0; i < NT; i++) /* one text per call, as the server encodes */
        cr_assert_eq(rk_text_encoder_encode(enc, &tp[i], NULL, 1, emb + (size_t)i * D, &e), RK_OK, "%s", e.msg);
    rk_text_encoder_close(enc);
    rk_sid_codebook cb;
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    cr_assert_eq(rk_sid_train(emb, NT, D, 2, 4, &o, &cb, &e), RK_OK, "%s", e.msg);
    uint32_t codes[NT * 2];
    cr_assert_eq(rk_sid_encode(&cb, emb, NT, codes, &e), RK_OK);
    int64_t ids[NT];
    for (int i = 0; i < NT; i++) ids[i] = i;
    rk_sid_items *it;
    /* records of three versions: this encoder's identity, another's, none */
    char ident[64], ver[3][160];
    cr_assert_eq(rk_text_encoder_identity(dir, ident, sizeof ident, &e), RK_OK, "%s", e.msg);
    cr_expect(!strncmp(ident, "xxh64:", 6) && strlen(ident) == 22, "%s", ident);
    snprintf(ver[0], sizeof ver[0], "encoder %s, text '{title}'", ident);
    snprintf(ver[1], sizeof ver[1], "encoder xxh64:0123456789abcdef, text '{title}'");
    snprintf(ver[2], sizeof ver[2], "minilm");
    rk_model *mv[3];
    for (int k = 2; k >= 0; k--) {
        cr_assert_eq(rk_sid_items_create(ids, codes, NT, 2, 4, ver[k], &it, &e), RK_OK);
        cr_assert_eq(rk_sid_items_save(it, &cb, tpath("items.sid"), &e), RK_OK, "%s", e.msg);
        rk_sid_items_destroy(it);
        char vdir[256];
        snprintf(vdir, sizeof vdir, "%s%d", tpath("vbundle"), k);
        mv[k] = k ? train_bundle("prefix_ngram", 7, vdir) : NULL;
    }
    rk_sid_codebook_free(&cb);
    char bdir[256];
    snprintf(bdir, sizeof bdir, "%s", tpath("bundle"));
    rk_model *m = train_bundle("prefix_ngram", 7, bdir);
    /* rankd --encoder checks the encoder against the records (rk_server_start calls this) */
    cr_expect_eq(rk_model_check_encoder(m, dir, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(rk_model_check_encoder(mv[1], dir, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "but feature 'item' records were built from embeddings of another encoder") &&
                  strstr(e.msg, "xxh64:0123456789abcdef"),
              "%s", e.msg);
    cr_expect_eq(rk_model_check_encoder(mv[2], dir, &e), RK_OK, "no identity: a warning only");
    {
        rk_server_opts bo = RK_SERVER_OPTS_DEFAULT;
        bo.listen = "127.0.0.1:0";
        bo.encoder_dir = dir;
        rk_server *srv;
        cr_expect_eq(rk_server_start(&bo, mv[1], &srv, NULL, &e), RK_EINVAL, "the server refuses to start");
    }
    rk_model_destroy(mv[1]);
    rk_model_destroy(mv[2]);
    rk_server_opts so = RK_SERVER_OPTS_DEFAULT;
    so.max_candidates = 8;
    so.encoder_dir = dir;
    rk_service *svc;
    cr_assert_eq(rk_service_create(m, &so, &svc, &e), RK_OK, "%s", e.msg);
    Rankd__V1__Candidate c[4] = {RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT,
                                 RANKD__V1__CANDIDATE__INIT};
    c[0].ad_id = "5";
    c[1].ad_id = "brand-new";
    c[1].content_text = (ProtobufCBinaryData){strlen(texts[5]), (uint8_t *)texts[5]};
    c[2].ad_id = "6";
    c[3].ad_id = "brand-new-2";
    c[3].content_text = (ProtobufCBinaryData){strlen(texts[6]), (uint8_t *)texts[6]};
    static uint8_t buf[RK_MAX_CONTENT_TEXT_BYTES + 4096];
    size_t len = pack_request(c, 4, buf);
    const uint8_t *resp;
    size_t resp_len;
    cr_assert_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    Rankd__V1__RankResponse *rr = rankd__v1__rank_response__unpack(NULL, resp_len, resp);
    cr_assert_not_null(rr);
    cr_expect_eq(rr->scores[1]->pctr, rr->scores[0]->pctr, "text-assigned %g vs stored %g", rr->scores[1]->pctr,
                 rr->scores[0]->pctr);
    cr_expect_eq(rr->scores[3]->pctr, rr->scores[2]->pctr, "text-assigned %g vs stored %g", rr->scores[3]->pctr,
                 rr->scores[2]->pctr);
    rankd__v1__rank_response__free_unpacked(rr, NULL);
    uint64_t unknown, assigned;
    rk_service_sid_counters(svc, &unknown, &assigned);
    cr_expect_eq(assigned, 2u);
    cr_expect_eq(unknown, 0u);

    /* bad text: NUL byte (a string field would have cut it there), invalid
     * UTF-8, over the cap; each names the field */
    static uint8_t big[RK_MAX_CONTENT_TEXT_BYTES + 1];
    memset(big, 'a', sizeof big);
    struct { ProtobufCBinaryData t; const char *want; } bad[] = {
        {{7, (uint8_t *)"ab\0cdef"}, "candidates[1].content_text: contains a NUL byte at offset 2"},
        {{3, (uint8_t *)"a\xff" "b"}, "candidates[1].content_text: invalid UTF-8"},
        {{sizeof big, big}, "candidates[1].content_text: 8193 bytes, over the maximum of 8192"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        c[1].content_text = bad[k].t;
        len = pack_request(c, 4, buf);
        cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3, "case %zu", k);
        cr_expect(strstr(e.msg, bad[k].want), "case %zu: %s", k, e.msg);
    }
    /* whitespace only = no text, as "": the default, counted as unknown */
    c[1].content_text = (ProtobufCBinaryData){4, (uint8_t *)" \t\n "};
    len = pack_request(c, 4, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    rk_service_sid_counters(svc, &unknown, &assigned);
    cr_expect_eq(assigned, 3u, "only candidates[3] encoded");
    cr_expect_eq(unknown, 1u);
    /* text with an empty ad_id: refused, not scored with the default */
    c[1].content_text = (ProtobufCBinaryData){strlen(texts[5]), (uint8_t *)texts[5]};
    c[1].ad_id = "";
    len = pack_request(c, 4, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[1].ad_id: empty, but content_text is set"), "%s", e.msg);
    c[1].ad_id = "brand-new";
    /* the deadline and a shutdown are checked before each encode */
    len = pack_request(c, 4, buf);
    rk_service_set_deadline(svc, rk_now() - 1, NULL, NULL);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 4);
    cr_expect(strstr(e.msg, "deadline exceeded while encoding content_text: reached candidates[1] of 4"), "%s", e.msg);
    rk_service_set_deadline(svc, 0, always_stop, NULL);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 14);
    cr_expect(strstr(e.msg, "server shutting down while encoding content_text"), "%s", e.msg);
    rk_service_set_deadline(svc, rk_now() + 60, NULL, NULL);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    rk_service_destroy(svc);
    rk_model_destroy(m);
    free(emb);
}


/* rankd's --image-encoder path: an unknown ad sent with only its image bytes
 * is decoded and encoded in-process and gets the codes of the same image
 * encoded offline (the `rank encode image` path); bad images, the size cap
 * and the deadline name the field. */
Test(sid_model, request_image_assignment, .timeout = 300) {
    const char *dir = rk_test_vision_dir();
    static const char *const files[8] = {"chelsea.jpg", "coffee_prog.jpg", "greyj.jpg", "rgba.png",
                                         "interlaced.png", "palette_trns.png", "rgb16.png", "grey.png"};
    enum { NT = 8 };
    char *bytes[NT];
    size_t blen[NT];
    rk_err e = {0};
    rk_vision_encoder *enc;
    cr_assert_eq(rk_vision_encoder_open(dir, NULL, &enc, &e), RK_OK, "%s", e.msg);
    const int D = rk_vision_encoder_dim(enc);
    float *emb = malloc((size_t)NT * D * sizeof(float)), *px = malloc(3 * 224 * 224 * sizeof(float));
    for (int i = 0; i < NT; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/tests/fixtures/images/%s", RK_SOURCE_DIR, files[i]);
        cr_assert_eq(rk_read_file(path, &bytes[i], &blen[i], &e), RK_OK, "%s", e.msg);
        rk_image im;
        cr_assert_eq(rk_image_decode(bytes[i], blen[i], NULL, &im, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(rk_image_preprocess(&im, RK_VISION_RESIZE, RK_VISION_CROP, px, &e), RK_OK);
        rk_image_free(&im);
        cr_assert_eq(rk_vision_encoder_encode(enc, px, 1, emb + (size_t)i * D, &e), RK_OK, "%s", e.msg);
    }
    rk_vision_encoder_close(enc);
    rk_sid_codebook cb;
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    o.quiet = 1;
    cr_assert_eq(rk_sid_train(emb, NT, D, 2, 4, &o, &cb, &e), RK_OK, "%s", e.msg);
    uint32_t codes[NT * 2];
    cr_assert_eq(rk_sid_encode(&cb, emb, NT, codes, &e), RK_OK);
    int64_t ids[NT];
    for (int i = 0; i < NT; i++) ids[i] = i;
    char ident[64], ver[2][200];
    cr_assert_eq(rk_vision_encoder_identity(dir, ident, sizeof ident, &e), RK_OK, "%s", e.msg);
    snprintf(ver[0], sizeof ver[0], "encoder %s, image 'dinov2 eval 256/224 bicubic, pool cls, l2 no'", ident);
    snprintf(ver[1], sizeof ver[1], "encoder xxh64:0123456789abcdef, image 'dinov2 eval 256/224 bicubic, pool cls, l2 no'");
    rk_model *mv[2];
    for (int k = 1; k >= 0; k--) {
        rk_sid_items *it;
        cr_assert_eq(rk_sid_items_create(ids, codes, NT, 2, 4, ver[k], &it, &e), RK_OK);
        cr_assert_eq(rk_sid_items_save(it, &cb, tpath("items.sid"), &e), RK_OK, "%s", e.msg);
        rk_sid_items_destroy(it);
        char vdir[256];
        snprintf(vdir, sizeof vdir, "%s%d", tpath("ibundle"), k);
        mv[k] = train_bundle("prefix_ngram", 7, vdir);
    }
    rk_sid_codebook_free(&cb);
    int pool = -1, norm = -1;
    cr_expect_eq(rk_model_check_image_encoder(mv[0], dir, &pool, &norm, &e), RK_OK, "%s", e.msg);
    cr_expect(pool == RK_VIT_POOL_CLS && norm == 0);
    cr_expect_eq(rk_model_check_image_encoder(mv[1], dir, &pool, &norm, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "records were built from image embeddings of another encoder"), "%s", e.msg);
    rk_server_opts so = RK_SERVER_OPTS_DEFAULT;
    so.max_candidates = 8;
    so.image_encoder_dir = dir;
    rk_service *svc;
    cr_expect_eq(rk_service_create(mv[1], &so, &svc, &e), RK_EINVAL, "a worker refuses another encoder's records");
    rk_model_destroy(mv[1]);
    cr_assert_eq(rk_service_create(mv[0], &so, &svc, &e), RK_OK, "%s", e.msg);
    Rankd__V1__Candidate c[4] = {RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT,
                                 RANKD__V1__CANDIDATE__INIT};
    c[0].ad_id = "0";
    c[1].ad_id = "brand-new";
    c[1].content_image = (ProtobufCBinaryData){blen[0], (uint8_t *)bytes[0]};
    c[2].ad_id = "4";
    c[3].ad_id = "brand-new-2";
    c[3].content_image = (ProtobufCBinaryData){blen[4], (uint8_t *)bytes[4]};
    static uint8_t buf[RK_MAX_CONTENT_IMAGE_BYTES + 8192];
    size_t len = pack_request(c, 4, buf);
    const uint8_t *resp;
    size_t resp_len;
    cr_assert_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    Rankd__V1__RankResponse *rr = rankd__v1__rank_response__unpack(NULL, resp_len, resp);
    cr_assert_not_null(rr);
    cr_expect_eq(rr->scores[1]->pctr, rr->scores[0]->pctr, "image-assigned %g vs stored %g", rr->scores[1]->pctr,
                 rr->scores[0]->pctr);
    cr_expect_eq(rr->scores[3]->pctr, rr->scores[2]->pctr, "image-assigned %g vs stored %g", rr->scores[3]->pctr,
                 rr->scores[2]->pctr);
    rankd__v1__rank_response__free_unpacked(rr, NULL);
    uint64_t unknown, assigned;
    rk_service_sid_counters(svc, &unknown, &assigned);
    cr_expect_eq(assigned, 2u);
    /* bad images: each INVALID_ARGUMENT naming the field and the reason */
    static uint8_t big[RK_MAX_CONTENT_IMAGE_BYTES + 1];
    memset(big, 0xFF, sizeof big);
    struct { ProtobufCBinaryData b; const char *want; } bad[] = {
        {{blen[0] / 2, (uint8_t *)bytes[0]}, "candidates[1].content_image: truncated JPEG"},
        {{6, (uint8_t *)"GIF89a"}, "candidates[1].content_image: not a JPEG or PNG image"},
        {{sizeof big, big}, "candidates[1].content_image: 4194305 bytes, over the maximum of 4194304"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        c[1].content_image = bad[k].b;
        len = pack_request(c, 4, buf);
        cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3, "case %zu", k);
        cr_expect(strstr(e.msg, bad[k].want), "case %zu: %s", k, e.msg);
    }
    c[1].content_image = (ProtobufCBinaryData){blen[0], (uint8_t *)bytes[0]};
    c[1].ad_id = "";
    len = pack_request(c, 4, buf);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 3);
    cr_expect(strstr(e.msg, "candidates[1].ad_id: empty, but content_image is set"), "%s", e.msg);
    c[1].ad_id = "brand-new";
    len = pack_request(c, 4, buf);
    rk_service_set_deadline(svc, rk_now() - 1, NULL, NULL);
    cr_expect_eq(rk_service_handle(svc, buf, len, rk_now(), &resp, &resp_len, &e), 4);
    cr_expect(strstr(e.msg, "deadline exceeded while encoding content_image: reached candidates[1] of 4"), "%s", e.msg);
    rk_service_set_deadline(svc, 0, NULL, NULL);
    rk_service_destroy(svc);
    rk_model_destroy(mv[0]);
    for (int i = 0; i < NT; i++) rk_free(bytes[i]);
    free(emb);
    free(px);
}

/* A history feature over semantic IDs (user side, mean pooling, max_values
 * 2 counting items, unknown items included): the scorer (rankd's path)
 * gives the pCTRs of rk_model_predict on the same rows read from a TSV
 * (rank score's path), truncation and unknown items included. */
Test(sid_model, history_feature_served_equals_offline) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    char json[2048], dir[256];
    snprintf(json, sizeof json,
             "{\"name\": \"sidhist\", \"label_column\": \"label\", \"features\": ["
             "{\"name\": \"user\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 64, \"dim\": 4},"
             "{\"name\": \"hist\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 11, \"dim\": 4,"
             " \"pooling\": \"mean\", \"max_values\": 2, \"param\": \"prefix_ngram\", \"sid\": \"%s\"},"
             "{\"name\": \"item\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 7, \"dim\": 4,"
             " \"param\": \"all_bigrams\", \"sid\": \"%s\"}],"
             "\"tower\": {\"type\": \"dnn\", \"hidden\": [8]},"
             "\"train\": {\"seed\": 5, \"batch_size\": 32, \"max_epochs\": 1, \"patience\": 1, \"threads\": 1}}",
             tpath("items.sid"), tpath("items.sid"));
    snprintf(dir, sizeof dir, "%s", tpath("hb"));
    rk_model *m = train_bundle_json(json, dir);
    const char *rows[4][4] = {{"3", "5", "1|2|3", "1"}, {"4", "9", "888|2", "0"}, {"3", "1001", "1000|1", "1"},
                              {"7", "424242", "", "0"}};
    FILE *f = fopen(tpath("s.tsv"), "w");
    fprintf(f, "label\tuser\titem\thist\n");
    for (int r = 0; r < 4; r++) fprintf(f, "%s\t%s\t%s\t%s\n", rows[r][3], rows[r][0], rows[r][1], rows[r][2]);
    fclose(f);
    rk_dataset d;
    rk_err e = {0};
    cr_assert_eq(rk_dataset_load(tpath("s.tsv"), rk_model_config(m), &d, &e), RK_OK, "%s", e.msg);
    float off[4], on[4];
    cr_assert_eq(rk_model_predict(m, &d.b, off, &e), RK_OK, "%s", e.msg);
    /* the history of row 0 is truncated at 2 items: 2 items x 2 prefix rows */
    cr_expect_eq(d.b.offsets[1][1] - d.b.offsets[1][0], 4u);
    cr_expect_eq(d.b.offsets[1][2] - d.b.offsets[1][1], 2u, "888 is unknown: no rows");
    rk_dataset_free(&d);
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m, 8, 16, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 4, &e), RK_OK);
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(rk_scorer_add_sparse(s, r, 0, rows[r][0], strlen(rows[r][0]), &e), RK_OK);
        cr_assert_eq(rk_scorer_add_sparse(s, r, 2, rows[r][1], strlen(rows[r][1]), &e), RK_OK);
        char h[32];
        snprintf(h, sizeof h, "%s", rows[r][2]);
        for (char *tok = strtok(h, "|"); tok; tok = strtok(NULL, "|"))
            cr_assert_eq(rk_scorer_add_sparse_rows(s, r, r + 1, 1, tok, strlen(tok), &e), RK_OK, "%s", e.msg);
    }
    cr_assert_eq(rk_scorer_run(s, on, NULL, NULL, &e), RK_OK, "%s", e.msg);
    for (int r = 0; r < 4; r++) cr_expect_float_eq(on[r], off[r], 1e-6, "row %d: served %g, offline %g", r, on[r], off[r]);
    /* one request's history for every row (staged once), then rows 1 and 2
     * an item of their own, then one more item for every row: max_values 2
     * drops it in rows 1 and 2 only. Likewise an item for every row, then
     * row 1 the codes of a content embedding. Each row must get the bits it
     * gets scored alone. */
    float whole[4], alone[4];
    for (int pass = 0; pass < 2; pass++) {
        int n = pass == 0 ? 4 : 1;
        for (int r0 = 0; r0 < 4; r0 += n) {
            cr_assert_eq(rk_scorer_begin(s, n, &e), RK_OK);
            cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 1, "3", 1, &e), RK_OK, "%s", e.msg);
            cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 2, "5", 1, &e), RK_OK, "%s", e.msg);
            if (r0 <= 1 && 1 < r0 + n) /* the item feature's first value for one row */
                cr_assert_eq(rk_scorer_add_item_embedding(s, 1 - r0, 2, emb + 2 * ED, ED, &e), RK_OK, "%s", e.msg);
            for (int r = 0; r < n; r++) {
                cr_assert_eq(rk_scorer_add_sparse(s, r, 0, rows[r0 + r][0], strlen(rows[r0 + r][0]), &e), RK_OK);
                cr_assert_eq(rk_scorer_add_sparse(s, r, 2, rows[r0 + r][1], strlen(rows[r0 + r][1]), &e), RK_OK);
                if (r0 + r == 1 || r0 + r == 2) cr_assert_eq(rk_scorer_add_sparse(s, r, 1, "2", 1, &e), RK_OK, "%s", e.msg);
            }
            cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 1, "1", 1, &e), RK_OK, "%s", e.msg);
            cr_assert_eq(rk_scorer_run(s, (pass == 0 ? whole : alone) + r0, NULL, NULL, &e), RK_OK, "%s", e.msg);
        }
    }
    for (int r = 0; r < 4; r++) cr_expect_eq(whole[r], alone[r], "row %d: %.9g in the request, %.9g alone", r, whole[r], alone[r]);
    rk_scorer_destroy(s);
    rk_model_destroy(m);
}

/* A CETNet ensemble over a semantic-ID item feature: members share the
 * records; the reopened bundle featurizes with them (no crash, A/A equal),
 * and request-time assignment uses the codebooks. */
Test(sid_model, ensemble_bundle) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    char json[2048], dir[256];
    snprintf(json, sizeof json,
             "{\"name\": \"sidens\", \"label_column\": \"label\", \"features\": ["
             "{\"name\": \"user\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 64, \"dim\": 4},"
             "{\"name\": \"item\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 7, \"dim\": 4,"
             " \"param\": \"prefix_ngram\", \"sid\": \"%s\"}],"
             "\"ensemble\": {\"members\": [{\"name\": \"a\", \"tower\": {\"type\": \"dnn\", \"hidden\": [8]}},"
             " {\"name\": \"b\", \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1, \"hidden\": [8]}}]},"
             "\"train\": {\"seed\": 2, \"batch_size\": 32, \"max_epochs\": 1, \"patience\": 1, \"threads\": 1}}",
             tpath("items.sid"));
    snprintf(dir, sizeof dir, "%s", tpath("ens"));
    rk_model *m = train_bundle_json(json, dir);
    cr_assert_eq(rk_model_n_members(m), 2);
    rk_scorer *s;
    rk_err e = {0};
    cr_assert_eq(rk_scorer_create(m, 8, 16, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 3, &e), RK_OK);
    for (int r = 0; r < 3; r++) cr_assert_eq(rk_scorer_add_sparse(s, r, 0, "3", 1, &e), RK_OK);
    cr_assert_eq(rk_scorer_add_sparse(s, 0, 1, "2", 1, &e), RK_OK);
    cr_assert_eq(rk_scorer_add_sparse(s, 1, 1, "1002", 4, &e), RK_OK);
    cr_assert_eq(rk_scorer_add_item_embedding(s, 2, 1, emb + 2 * ED, ED, &e), RK_OK, "%s", e.msg);
    float p[3];
    cr_assert_eq(rk_scorer_run(s, p, NULL, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(p[0], p[1], "A/A copy: %g vs %g", p[1], p[0]);
    cr_expect_eq(p[0], p[2], "request-time assignment: %g vs %g", p[2], p[0]);
    rk_scorer_destroy(s);
    rk_model_destroy(m);
}

/* ---------------------------------------------------------------- rank sid CLI */


Test(sid, cli_build_and_assign) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids); /* the embeddings; the records file is not used here */
    rk_st_writer *w;
    rk_err e = {0};
    int64_t se[2] = {NI, ED}, si[1] = {NI};
    cr_assert_eq(rk_st_writer_create(&w, &e), RK_OK);
    rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &e);
    rk_st_writer_add_i64(w, "ids", ids, 1, si, &e);
    rk_st_writer_add_meta(w, "model", "test-encoder", &e);
    cr_assert_eq(rk_st_writer_write(w, tpath("emb.safetensors"), &e), RK_OK, "%s", e.msg);
    rk_st_writer_destroy(w);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --codes 4 --out %s",
             tpath("emb.safetensors"), tpath("cli.sid"));
    cr_assert_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "sid: n=60 levels=2 codes=4 dim=8 "), "%s", out);
    rk_sid_items *it;
    cr_assert_eq(rk_sid_items_load(tpath("cli.sid"), &it, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(rk_sid_items_count(it), (size_t)NI);
    cr_expect_str_eq(rk_sid_items_version(it), "test-encoder");
    /* the codes are rk_sid_encode's with the file's codebooks */
    rk_sid_codebook cb;
    cr_assert_eq(rk_sid_codebook_load(tpath("cli.sid"), &cb, &e), RK_OK);
    uint32_t codes[NI * 2];
    cr_assert_eq(rk_sid_encode(&cb, emb, NI, codes, &e), RK_OK);
    cr_expect_eq(memcmp(codes, rk_sid_items_codes(it), sizeof codes), 0);
    rk_sid_items_destroy(it);
    rk_sid_codebook_free(&cb);
    /* assign with those codebooks: same codes */
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid assign --codebooks %s --embeddings %s --out %s",
             tpath("cli.sid"), tpath("emb.safetensors"), tpath("cli2.sid"));
    cr_assert_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_assert_eq(rk_sid_items_load(tpath("cli2.sid"), &it, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(memcmp(codes, rk_sid_items_codes(it), sizeof codes), 0);
    rk_sid_items_destroy(it);
    /* embeddings of another encoder/template than the codebooks': refused
     * unless --version says what to record */
    cr_assert_eq(rk_st_writer_create(&w, &e), RK_OK);
    rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &e);
    rk_st_writer_add_i64(w, "ids", ids, 1, si, &e);
    rk_st_writer_add_meta(w, "model", "other-encoder", &e);
    cr_assert_eq(rk_st_writer_write(w, tpath("emb_other.safetensors"), &e), RK_OK, "%s", e.msg);
    rk_st_writer_destroy(w);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid assign --codebooks %s --embeddings %s --out %s",
             tpath("cli.sid"), tpath("emb_other.safetensors"), tpath("cli3.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "\"other-encoder\" differs from the codebooks'") && strstr(out, "\"test-encoder\""), "%s", out);
    cr_expect(!rk_path_exists(tpath("cli3.sid")), "no output on error");
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid assign --codebooks %s --embeddings %s --out %s --version v2",
             tpath("cli.sid"), tpath("emb_other.safetensors"), tpath("cli3.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    /* errors: missing --codes, missing file, dim mismatch */
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --out %s",
             tpath("emb.safetensors"), tpath("x.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 2);
    cr_expect(strstr(out, "--levels (1..8) and --codes (>= 2) are required"), "%s", out);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --codes 4 --out %s",
             tpath("missing.safetensors"), tpath("x.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "missing.safetensors"), "%s", out);
    rk_sid_codebook small = {2, 4, 5, calloc(2 * 4 * 5, sizeof(float))};
    cr_assert_eq(rk_sid_codebook_save(&small, tpath("cb5.safetensors"), NULL, &e), RK_OK);
    free(small.centroids);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid assign --codebooks %s --embeddings %s --out %s",
             tpath("cb5.safetensors"), tpath("emb.safetensors"), tpath("x.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "embeddings of dim 8, the codebooks of") && strstr(out, "expect 5"), "%s", out);
    cr_expect(!rk_path_exists(tpath("x.sid")), "no output on error");
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels two --codes 4 --out %s",
             tpath("emb.safetensors"), tpath("x.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 2);
    cr_expect(strstr(out, "--levels: expected an integer in 1..8, got 'two'"), "%s", out);
    /* usage errors: exit 2 before any work, naming the option; no wrap-around */
    static const struct { const char *args, *want; } usage_err[] = {
        {"build --levels 4294967299 --codes 4", "--levels: expected an integer in 1..8, got '4294967299'"},
        {"build --levels 100 --codes 4", "--levels: expected an integer in 1..8, got '100'"},
        {"build --levels 2 --codes 4294967304", "--codes: expected an integer in 2..16777216, got '4294967304'"},
        {"build --levels 2 --codes 4 --iters 4294967297", "--iters: expected an integer in 1..1000000"},
        {"build --levels 2 --codes 4 --iters -5", "--iters: expected an integer in 1..1000000, got '-5'"},
        {"assign --codebooks cli.sid --levels 2", "--levels is not an option of assign"},
    };
    for (size_t k = 0; k < sizeof usage_err / sizeof usage_err[0]; k++) {
        snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid %s --embeddings %s --out %s", usage_err[k].args,
                 tpath("emb.safetensors"), tpath("x.sid"));
        cr_expect_eq(rk_test_run(cmd, out, sizeof out), 2, "%s: %s", usage_err[k].args, out);
        cr_expect(strstr(out, usage_err[k].want), "%s: %s", usage_err[k].args, out);
    }
    /* --out checked before the k-means work */
    char lnk[600];
    snprintf(lnk, sizeof lnk, "ln -sf %s %s", tpath("target.sid"), tpath("link.sid"));
    cr_assert_eq(system(lnk), 0);
    const char *outs[][2] = {{"", "is a directory"},
                             {"nodir/x.sid", "nodir: No such file or directory"},
                             {"emb.safetensors", "is the input"},
                             {"link.sid", "is a symbolic link"}};
    for (size_t k = 0; k < 4; k++) {
        char op[600];
        snprintf(op, sizeof op, "%s", tpath(outs[k][0]));
        snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --codes 4 --out %s",
                 tpath("emb.safetensors"), op);
        cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1, "%s", out);
        cr_expect(strstr(out, outs[k][1]), "%s: %s", op, out);
    }
    /* embeddings: huge values and duplicate ids refused, naming the file and row */
    emb[5 * ED + 3] = 3e38f;
    ids[7] = ids[2];
    cr_assert_eq(rk_st_writer_create(&w, &e), RK_OK);
    rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &e);
    rk_st_writer_add_i64(w, "ids", ids, 1, si, &e);
    cr_assert_eq(rk_st_writer_write(w, tpath("bad.safetensors"), &e), RK_OK, "%s", e.msg);
    rk_st_writer_destroy(w);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --codes 4 --out %s",
             tpath("bad.safetensors"), tpath("x.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "bad.safetensors: tensor 'embeddings' row 5 column 3: 3e+38 is beyond +-1e9"), "%s", out);
    emb[5 * ED + 3] = 0;
    cr_assert_eq(rk_st_writer_create(&w, &e), RK_OK);
    rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &e);
    rk_st_writer_add_i64(w, "ids", ids, 1, si, &e);
    cr_assert_eq(rk_st_writer_write(w, tpath("bad.safetensors"), &e), RK_OK, "%s", e.msg);
    rk_st_writer_destroy(w);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "bad.safetensors: tensor 'ids': id ") && strstr(out, "at rows 2 and 7"), "%s", out);
    /* a killed run's temporary is swept */
    char tmpf[600];
    snprintf(tmpf, sizeof tmpf, "%s.tmp-999999", tpath("cli.sid"));
    cr_assert_eq(rk_write_file(tmpf, "x", 1, &e), RK_OK);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank sid build --embeddings %s --levels 2 --codes 4 --out %s",
             tpath("emb.safetensors"), tpath("cli.sid"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(!rk_path_exists(tmpf), "the dead writer's temporary is removed");
}

/* `rank store apply` to the records table would write arbitrary codes
 * (-3, 1.5) the bundle then refuses to open: it is refused, saying how
 * records are changed, and the bundle still opens. */
Test(sid_model, store_apply_refuses_records_table) {
    float emb[(NI + NA) * ED];
    int64_t ids[NI + NA];
    make_records(emb, ids);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", tpath("applybundle"));
    rk_model *m = train_bundle("prefix_ngram", 7, dir);
    rk_model_destroy(m);
    FILE *f = fopen(tpath("upd.txt"), "w");
    cr_assert_not_null(f);
    fprintf(f, "5 -3 1.5\n");
    fclose(f);
    char cmd[1024], out[8192];
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank store apply --model %s --table sid.item --input %s", dir,
             tpath("upd.txt"));
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "table 'sid.item' holds semantic-ID item records") && strstr(out, "rank sid build"), "%s",
              out);
    rk_err e = {0};
    cr_expect_eq(rk_model_open(dir, &m, &e), RK_OK, "the bundle still opens: %s", e.msg);
    rk_model_destroy(m);
}
