/*
 * tests/test_cetnet.c — CETNet: fusion against papers.md §6.4 and its
 * properties, the collaborative loss's gradient against PyTorch
 * (tests/ref/gen_cetnet_ref.py), the DeepFM tower's gradient against finite
 * differences, a three-member bundle round trip (RAM == bundle == scorer,
 * member scores included), and ensemble config errors.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../rank/internal.h"

static int close_to(double got, double ref, double atol, double rtol) { return fabs(got - ref) <= atol + rtol * fabs(ref); }

Test(fusion, papers_vector) {
    /* papers.md §6.4: p = (0.01, 0.5), tau = 1: H = (0.0560, 0.6931), w ~ (0.6541, 0.3459), p ~ 0.1795 */
    float p[2] = {0.01f, 0.5f};
    double w[2];
    double f = rk_fuse(RK_FUSION_CONFIDENCE, p, 2, 1.0, w);
    cr_expect(close_to(w[0], 0.6541, 1e-4, 0), "w0 %.6f", w[0]);
    cr_expect(close_to(w[1], 0.3459, 1e-4, 0), "w1 %.6f", w[1]);
    cr_expect(close_to(f, 0.1795, 1e-4, 0), "p %.6f", f);
    /* mean fusion of the same */
    f = rk_fuse(RK_FUSION_MEAN, p, 2, 1.0, w);
    cr_expect(close_to(f, 0.255, 1e-7, 0), "mean %.8f", f);
    cr_expect_eq(w[0], 0.5);
}

/* members in the property tests: more than the 8 rankd once capped ensembles at */
#define TEST_MAX_M 40

Test(fusion, properties) {
    double w[TEST_MAX_M];
    float one[1] = {0.37f};
    cr_expect(close_to(rk_fuse(RK_FUSION_CONFIDENCE, one, 1, 1.0, w), 0.37, 1e-7, 0), "one member is the identity");
    float eq[3] = {0.2f, 0.2f, 0.2f};
    cr_expect(close_to(rk_fuse(RK_FUSION_CONFIDENCE, eq, 3, 0.5, w), 0.2, 1e-7, 0), "equal members");
    rk_rng r;
    rk_rng_seed(&r, 3);
    for (int t = 0; t < 200; t++) {
        int M = 1 + (int)rk_rng_below(&r, TEST_MAX_M);
        float p[TEST_MAX_M], q[TEST_MAX_M], lo = 1, hi = 0;
        for (int i = 0; i < M; i++) {
            p[i] = (float)rk_rng_uniform(&r);
            q[i] = 1.0f - p[i];
            lo = fminf(lo, p[i]);
            hi = fmaxf(hi, p[i]);
        }
        double tau = 0.05 + 3 * rk_rng_uniform(&r);
        double f = rk_fuse(RK_FUSION_CONFIDENCE, p, M, tau, w);
        cr_expect(f >= fmax(lo, 1e-7) - 1e-7 && f <= fmin(hi, 1 - 1e-7) + 1e-7, "fused %g outside [%g, %g]", f, lo, hi);
        double sum = 0;
        for (int i = 0; i < M; i++) sum += w[i];
        cr_expect(close_to(sum, 1, 1e-12, 0), "weights sum to %g", sum);
        /* symmetry: p <-> 1 - p for all members gives 1 - fused (conf is symmetric) */
        double g = rk_fuse(RK_FUSION_CONFIDENCE, q, M, tau, NULL);
        cr_expect(close_to(g, 1 - f, 2e-7, 0), "symmetry: %g vs %g", g, 1 - f);
    }
    /* tau -> large: arithmetic mean; tau -> 0: the lowest-entropy member */
    float p3[3] = {0.05f, 0.6f, 0.3f};
    cr_expect(close_to(rk_fuse(RK_FUSION_CONFIDENCE, p3, 3, 1e6, w), (0.05 + 0.6 + 0.3) / 3, 1e-6, 0));
    cr_expect(close_to(rk_fuse(RK_FUSION_CONFIDENCE, p3, 3, 1e-3, w), 0.05, 1e-6, 0));
    /* NaN-proof and clamped at 0 and 1 */
    float bad[3] = {0.0f, 1.0f, NAN};
    double f = rk_fuse(RK_FUSION_CONFIDENCE, bad, 3, 1.0, w);
    cr_expect(isfinite(f) && f > 0 && f < 1, "fused %g", f);
}

Test(fusion, collaborative_gradient_matches_pytorch) {
    rk_st_file *st;
    rk_err e = {0};
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/cetnet_ref.safetensors", &st, &e), RK_OK, "%s", e.msg);
    const float *z, *prm, *loss, *dz, *dlt, *pf;
    int nd;
    int64_t sh[4];
    cr_assert_eq(rk_st_get_f32(st, "case.z", &z, &nd, sh, &e), RK_OK);
    int C = (int)sh[0];
    cr_assert_eq(rk_st_get_f32(st, "case.params", &prm, &nd, sh, &e), RK_OK);
    cr_assert_eq(rk_st_get_f32(st, "case.loss", &loss, &nd, sh, &e), RK_OK);
    cr_assert_eq(rk_st_get_f32(st, "case.dz", &dz, &nd, sh, &e), RK_OK);
    cr_assert_eq(rk_st_get_f32(st, "case.dlog_tau", &dlt, &nd, sh, &e), RK_OK);
    cr_assert_eq(rk_st_get_f32(st, "case.p", &pf, &nd, sh, &e), RK_OK);
    cr_assert_geq(C, 16);
    for (int c = 0; c < C; c++) {
        const float *P = prm + 8 * c;
        int M = (int)P[0];
        rk_fusion_cfg f = {.type = P[6] > 0.5f ? RK_FUSION_MEAN : RK_FUSION_CONFIDENCE, .tau = P[2], .lambda = P[3],
                           .w_fused = P[4], .w_member = P[5]};
        double g[TEST_MAX_M], glt;
        double L = rk_collab_grad(&f, P[2], z + 3 * c, M, P[1], g, &glt);
        cr_expect(close_to(L, loss[c], 1e-5, 1e-5), "case %d: loss %.7g vs torch %.7g", c, L, loss[c]);
        for (int i = 0; i < M; i++)
            cr_expect(close_to(g[i], dz[3 * c + i], 1e-5, 1e-4), "case %d: dz[%d] %.7g vs torch %.7g", c, i, g[i], dz[3 * c + i]);
        if (f.type == RK_FUSION_CONFIDENCE)
            cr_expect(close_to(glt, dlt[c], 1e-6, 1e-4), "case %d: dlog_tau %.7g vs torch %.7g", c, glt, dlt[c]);
        float zp[TEST_MAX_M];
        for (int i = 0; i < M; i++) zp[i] = 1.0f / (1.0f + expf(-z[3 * c + i]));
        cr_expect(close_to(rk_fuse(f.type, zp, M, P[2], NULL), pf[c], 1e-6, 1e-5), "case %d: fused p", c);
    }
    rk_st_close(st);
}

/* ---------------------------------------------------------------- models */

static const char *ENS_CFG =
    "{\"name\": \"ens\", \"version\": \"e1\","
    " \"features\": ["
    "  {\"name\": \"u\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 1000, \"dim\": 4},"
    "  {\"name\": \"h\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 50, \"dim\": 4, \"pooling\": \"mean\"},"
    "  {\"name\": \"i\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 1000, \"dim\": 4},"
    "  {\"name\": \"x\", \"kind\": \"dense\", \"side\": \"item\"}],"
    " \"train\": {\"seed\": 5, \"batch_size\": 64, \"max_epochs\": 6, \"patience\": 2, \"threads\": 1,"
    "            \"lr_dense\": 0.01, \"lr_embed\": 0.1, \"init_std_embed\": 0.3},"
    " \"ensemble\": {\"fusion\": \"confidence\", \"tau\": 1.0, \"learn_tau\": true, \"lambda\": 0.5, \"members\": ["
    "   {\"name\": \"dnn\", \"tower\": {\"type\": \"dnn\", \"hidden\": [6]}},"
    "   {\"name\": \"dcnv2\", \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1, \"hidden\": [5]}},"
    "   {\"name\": \"deepfm\", \"tower\": {\"type\": \"deepfm\", \"hidden\": [4]}, \"dim\": 3}]}}";

static rk_model_cfg ens_cfg(void) {
    rk_model_cfg c;
    rk_err e = {0};
    cr_assert_eq(rk_model_cfg_parse(ENS_CFG, &c, &e), RK_OK, "%s", e.msg);
    return c;
}

static void fill(rk_batch *b, const rk_model_cfg *c, int n) {
    rk_err e = {0};
    cr_assert_eq(rk_batch_alloc(b, c, n, 64, &e), RK_OK);
    b->n_rows = n;
    for (int f = 0; f < 3; f++) {
        uint32_t k = 0;
        for (int r = 0; r < n; r++) {
            int cnt = f == 1 ? r % 3 : 1;
            for (int j = 0; j < cnt; j++) {
                char v[16];
                snprintf(v, sizeof v, "%d", r * 7 + j);
                b->rows[f][k++] = rk_feature_row(c->features[f].name, v, strlen(v), c->features[f].table_size);
            }
            b->offsets[f][r + 1] = k;
        }
    }
    for (int r = 0; r < n; r++) b->dense[(size_t)r * c->n_features + 3] = 0.1f * (float)r - 0.4f;
}

Test(deepfm, backward_matches_finite_differences) {
    rk_model_cfg c;
    rk_err e = {0};
    rk_model_cfg ens = ens_cfg();
    cr_assert_eq(rk_member_cfg_derive(&ens, 2, &c, &e), RK_OK, "%s", e.msg);
    rk_model_cfg_free(&ens);
    cr_assert_eq(c.tower.type, RK_TOWER_DEEPFM);
    cr_assert_eq(c.features[0].dim, 3, "member dim override");
    rk_model *m;
    cr_assert_eq(rk_model_create(&c, &m, &e), RK_OK, "%s", e.msg);
    rk_batch b;
    fill(&b, &c, 5);
    for (int r = 0; r < 5; r++) b.labels[r] = (float)(r % 2);
    rk_work w;
    cr_assert_eq(rk_work_init(&w, m, 5, 1, &e), RK_OK);
    float *g = calloc(m->n_floats, sizeof(float));
    cr_assert_eq(rk_model_fill_x0(m, &b, &w, NULL, &e), RK_OK);
    rk_model_forward(m, &w, 5);
    rk_bce_logits(w.logit, b.labels, 5, w.dlogit);
    rk_model_backward(m, &w, 5, g);
    float dx0[64];
    memcpy(dx0, w.dx0, (size_t)m->D * sizeof(float)); /* row 0 */
    int checked = 0;
    for (size_t i = 0; i < m->n_floats; i++) {
        float keep = m->params[i], h = 1e-2f;
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            m->params[i] = keep + (sgn ? -h : h);
            rk_model_fill_x0(m, &b, &w, NULL, &e);
            rk_model_forward(m, &w, 5);
            l[sgn] = rk_bce_logits(w.logit, b.labels, 5, NULL);
        }
        m->params[i] = keep;
        double fd = (l[0] - l[1]) / (2 * h);
        cr_expect(fabs(fd - g[i]) <= 2e-3 + 2e-2 * fabs(fd), "param %zu: %g vs fd %g", i, g[i], fd);
        checked++;
    }
    cr_expect_gt(checked, 40);
    /* the FM term's input gradient: row 0's u embedding (a bucket of its own) */
    uint64_t row = b.rows[0][0];
    for (int r = 1; r < 5; r++) cr_assert_neq(b.rows[0][r], row);
    for (int j = 0; j < 3; j++) {
        float *p = m->tables[0] + row * 3 + j, keep = *p, h = 1e-2f;
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            *p = keep + (sgn ? -h : h);
            rk_model_fill_x0(m, &b, &w, NULL, &e);
            rk_model_forward(m, &w, 5);
            l[sgn] = rk_bce_logits(w.logit, b.labels, 5, NULL);
        }
        *p = keep;
        double fd = (l[0] - l[1]) / (2 * h);
        cr_expect(fabs(fd - dx0[m->col[0] + j]) <= 2e-3 + 2e-2 * fabs(fd), "x0[0,%d]: %g vs fd %g", j, dx0[m->col[0] + j], fd);
    }
    free(g);
    rk_work_free(&w);
    rk_batch_free(&b);
    rk_model_destroy(m);
    rk_model_cfg_free(&c);
}

static char tmpdir[256];
static void mk_tmp(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-cetnet-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void rm_tmp(void) { rk_rm_rf(tmpdir, NULL); }

Test(ensemble, three_members_round_trip, .init = mk_tmp, .fini = rm_tmp) {
    rk_model_cfg c = ens_cfg();
    rk_model *m;
    rk_err e = {0};
    cr_assert_eq(rk_model_create(&c, &m, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_n_members(m), 3);
    m->log_tau = logf(0.7f);
    rk_batch b;
    fill(&b, &c, 9);
    float p_ram[9], mp_ram[27], mw_ram[27], p_b[9], mp_b[27], mw_b[27];
    cr_assert_eq(rk_model_predict_members(m, &b, p_ram, mp_ram, mw_ram, &e), RK_OK, "%s", e.msg);
    /* the members really differ, and the fusion is the §6.4 formula of their pCTRs */
    cr_expect_neq(mp_ram[0], mp_ram[1]);
    for (int r = 0; r < 9; r++) {
        double w[3];
        double f = rk_fuse(RK_FUSION_CONFIDENCE, mp_ram + 3 * r, 3, 0.7, w);
        cr_expect(close_to(f, p_ram[r], 1e-7, 1e-6));
        cr_expect(close_to(w[2], mw_ram[3 * r + 2], 1e-7, 1e-6));
    }
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ens", tmpdir);
    cr_assert_eq(rk_model_save(m, dir, NULL, 0, &e), RK_OK, "%s", e.msg);
    rk_model *m2;
    cr_assert_eq(rk_model_open(dir, &m2, &e), RK_OK, "%s", e.msg);
    cr_expect_str_eq(rk_model_member_name(m2, 2), "deepfm");
    cr_expect(close_to(rk_model_tau(m2), 0.7, 1e-6, 0), "tau %g", rk_model_tau(m2));
    cr_assert_eq(rk_model_predict_members(m2, &b, p_b, mp_b, mw_b, &e), RK_OK, "%s", e.msg);
    for (int i = 0; i < 9; i++) cr_expect_eq(p_ram[i], p_b[i], "row %d: %.9g vs %.9g", i, p_ram[i], p_b[i]);
    for (int i = 0; i < 27; i++) cr_expect_eq(mp_ram[i], mp_b[i]);
    /* the serving scorer: same fused and member scores */
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m2, 16, 8, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 9, &e), RK_OK);
    for (int r = 0; r < 9; r++) {
        for (int f = 0; f < 3; f++) {
            int cnt = f == 1 ? r % 3 : 1;
            for (int j = 0; j < cnt; j++) {
                char v[16];
                snprintf(v, sizeof v, "%d", r * 7 + j);
                cr_assert_eq(rk_scorer_add_sparse(s, r, f, v, strlen(v), &e), RK_OK, "%s", e.msg);
            }
        }
        cr_assert_eq(rk_scorer_set_dense(s, r, 3, 0.1f * (float)r - 0.4f, &e), RK_OK);
    }
    float p_s[9], mp_s[3], mw_s[3];
    cr_assert_eq(rk_scorer_run(s, p_s, NULL, NULL, &e), RK_OK, "%s", e.msg);
    for (int r = 0; r < 9; r++) {
        cr_expect_eq(p_s[r], p_ram[r], "row %d", r);
        cr_assert_eq(rk_scorer_member_scores(s, r, mp_s, mw_s, &e), RK_OK);
        for (int i = 0; i < 3; i++) {
            cr_expect_eq(mp_s[i], mp_ram[3 * r + i]);
            cr_expect_eq(mw_s[i], mw_ram[3 * r + i]);
        }
    }
    cr_expect_eq(rk_scorer_member_scores(s, 9, mp_s, mw_s, &e), RK_EINVAL);
    rk_scorer_destroy(s);
    rk_model_destroy(m2);
    /* a missing member bundle, then a member that does not match model.json */
    char p[700], q[700];
    snprintf(p, sizeof p, "%s/members/deepfm", dir);
    snprintf(q, sizeof q, "%s/deepfm.away", tmpdir);
    cr_assert_eq(rename(p, q), 0);
    cr_expect_eq(rk_model_open(dir, &m2, &e), RK_ENOTFOUND);
    cr_expect(strstr(e.msg, "members/deepfm"), "%s", e.msg);
    cr_assert_eq(rename(q, p), 0);
    snprintf(p, sizeof p, "%s/members/dnn", dir);
    rk_rm_rf(p, NULL);
    snprintf(q, sizeof q, "%s/members/dcnv2", dir);
    cr_assert_eq(rename(q, p), 0);
    cr_expect_eq(rk_model_open(dir, &m2, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "member 'dnn' does not match"), "%s", e.msg);
    rk_model_destroy(m);
    rk_batch_free(&b);
    rk_model_cfg_free(&c);
}

Test(ensemble, config_errors) {
    rk_model_cfg c;
    rk_err e = {0};
    const char *feats = "\"features\": [{\"name\": \"a\", \"side\": \"user\", \"table_size\": 9, \"dim\": 4},"
                        " {\"name\": \"b\", \"side\": \"item\", \"table_size\": 9, \"dim\": 8}]";
    char buf[1024];
    snprintf(buf, sizeof buf, "{%s, \"tower\": {\"type\": \"deepfm\"}}", feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower: a deepfm tower needs every sparse feature to have one dim"), "%s", e.msg);
    snprintf(buf, sizeof buf, "{%s, \"ensemble\": {\"members\": [{\"name\": \"x\", \"tower\": {\"type\": \"deepfm\"}, \"dim\": 4}]}}",
             feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_OK, "member dim makes deepfm valid: %s", e.msg);
    rk_model_cfg_free(&c);
    snprintf(buf, sizeof buf,
             "{%s, \"ensemble\": {\"members\": [{\"name\": \"x\", \"tower\": {\"type\": \"dnn\"}}, {\"name\": \"x\", \"tower\": {}}]}}", feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "ensemble.members[1].name: 'x' repeats members[0]"), "%s", e.msg);
    snprintf(buf, sizeof buf, "{%s, \"ensemble\": {\"fusion\": \"max\", \"members\": [{\"name\": \"x\", \"tower\": {}}]}}", feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "ensemble.fusion: 'max'"), "%s", e.msg);
    snprintf(buf, sizeof buf, "{%s, \"ensemble\": {\"tau\": 0, \"members\": [{\"name\": \"x\", \"tower\": {}}]}}", feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "ensemble.tau"), "%s", e.msg);
    snprintf(buf, sizeof buf, "{%s, \"ensemble\": {\"members\": [{\"name\": \"../x\", \"tower\": {}}]}}", feats);
    cr_expect_eq(rk_model_cfg_parse(buf, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "may hold only"), "%s", e.msg);
}

static void write_planted(const char *path, int n, unsigned seed) {
    FILE *f = fopen(path, "w");
    fprintf(f, "label\tu\th\ti\tx\n");
    srand(seed);
    for (int r = 0; r < n; r++) {
        int u = rand() % 10, i = rand() % 10;
        fprintf(f, "%d\t%d\t%d\t%d\t%d\n", u + i >= 9, u, rand() % 5, i, rand() % 3);
    }
    fclose(f);
}

Test(ensemble, trains_collaboratively, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    char tr[600], va[600];
    snprintf(tr, sizeof tr, "%s/train.tsv", tmpdir);
    snprintf(va, sizeof va, "%s/valid.tsv", tmpdir);
    write_planted(tr, 3000, 1);
    write_planted(va, 800, 2);
    rk_model_cfg c = ens_cfg();
    rk_train_io io = {tr, va, va, 1};
    rk_train_report r1, r2;
    rk_model *m1, *m2;
    rk_err e = {0};
    cr_assert_eq(rk_train(&c, &io, &m1, &r1, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_train(&c, &io, &m2, &r2, &e), RK_OK, "%s", e.msg);
    cr_expect_gt(r1.valid.auc, 0.95, "fused valid AUC %.4f", r1.valid.auc);
    cr_expect_eq(r1.n_members, 3);
    for (int i = 0; i < 3; i++) cr_expect_gt(r1.member_valid[i].auc, 0.9, "member %d AUC %.4f", i, r1.member_valid[i].auc);
    cr_expect_eq(r1.test.auc, r2.test.auc, "same seed, same ensemble");
    cr_expect_eq(m1->log_tau, m2->log_tau);
    cr_expect_neq(m1->log_tau, 0.0f, "learn_tau moved tau");
    rk_model_destroy(m1);
    rk_model_destroy(m2);
    rk_train_report_free(&r1);
    rk_train_report_free(&r2);
    rk_model_cfg_free(&c);
}
