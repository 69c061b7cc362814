/*
 * tests/test_distill.c — ExFM (distill/): the student losses, the auxiliary
 * head's scaled backbone gradient and the student adapter against PyTorch
 * (tests/ref/gen_exfm_ref.py); the DAS log scores each unique example id
 * once; stream chunking and verticals; on the bundled MovieLens stream: a
 * student with the auxiliary weight at 0 equals a student without the head,
 * progressive validation never uses a chunk's labels before scoring it, the
 * teacher's DAS call count, and a student checkpoint serves the same pCTR
 * with and without its training-only file.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "distill.h"

static int close_to(double got, double ref, double atol, double rtol) { return fabs(got - ref) <= atol + rtol * fabs(ref); }

static char tmpdir[256];
static void mk_tmp(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-distill-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void rm_tmp(void) { rk_rm_rf(tmpdir, NULL); }

/* ---------------------------------------------------------------- losses vs PyTorch */

static const float *fx(const rk_st_file *f, const char *name, size_t want) {
    const float *d;
    int nd;
    int64_t sh[4];
    rk_err e;
    cr_assert_eq(rk_st_get_f32(f, name, &d, &nd, sh, &e), RK_OK, "%s", e.msg);
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)sh[i];
    cr_assert_eq(n, want, "%s: %zu values, want %zu", name, n, want);
    return d;
}

#define NR 6
#define HD 5

Test(exfm_loss, bce_reference_value) {
    /* papers.md §6.5: -h(0, 1) = ln 2 */
    cr_expect(close_to(rk_exfm_bce(0, 1), 0.693147180559945, 1e-15, 0));
    cr_expect(close_to(rk_exfm_bce(-800, 0), 0, 1e-300, 0), "stable for large negative logits");
    cr_expect(close_to(rk_exfm_bce(800, 0), 800, 0, 1e-15), "stable for large positive logits");
}

Test(exfm_loss, losses_and_scaled_aux_gradient_match_pytorch) {
    rk_st_file *f;
    rk_err e;
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/exfm_ref.safetensors", &f, &e), RK_OK, "%s", e.msg);
    const float *h = fx(f, "h", NR * HD), *zs = fx(f, "z_s", NR), *zf = fx(f, "z_f", NR), *y = fx(f, "y", NR);
    const float *aw = fx(f, "a_w", HD), *ab = fx(f, "a_b", 1), *q = fx(f, "q", NR);
    const float *P = fx(f, "case.params", 4 * 6), *L = fx(f, "case.loss", 4), *DZS = fx(f, "case.dz_s", 4 * NR);
    const float *DZD = fx(f, "case.dz_d", 4 * NR), *DH = fx(f, "case.dh", 4 * NR * HD), *DAW = fx(f, "case.da_w", 4 * HD);
    const float *DAB = fx(f, "case.da_b", 4);
    float pf[NR], zd[NR];
    for (int i = 0; i < NR; i++) pf[i] = isnan(zf[i]) ? NAN : rk_sigmoid(zf[i]);
    cr_assert(isnan(pf[4]), "the fixture has a row without a teacher");
    rk_exfm_aux_forward(zd, h, aw, ab, NR, HD);
    for (int c = 0; c < 4; c++) {
        const float *p = P + 6 * c;
        rk_exfm_cfg x = RK_EXFM_CFG_DEFAULT;
        x.mode = (rk_exfm_mode)p[0];
        x.w = p[1], x.alpha = p[2], x.beta = p[3], x.adapter = (int)p[4], x.w_sa = p[5];
        cr_assert_eq(rk_exfm_cfg_check(&x, &e), RK_OK, "%s", e.msg);
        float dzs[NR], dzd[NR] = {0}, dh[NR * HD], daw[HD] = {0}, dab = 0;
        double loss = rk_exfm_loss(&x, NR, zs, zd, y, pf, q, dzs, dzd);
        cr_expect(close_to(loss, L[c], 1e-6, 1e-5), "case %d: loss %.7f vs torch %.7f", c, loss, L[c]);
        for (int i = 0; i < NR; i++) {
            cr_expect(close_to(dzs[i], DZS[c * NR + i], 1e-7, 1e-5), "case %d dz_s[%d]: %g vs %g", c, i, dzs[i], DZS[c * NR + i]);
            cr_expect(close_to(dzd[i], DZD[c * NR + i], 1e-7, 1e-5), "case %d dz_d[%d]: %g vs %g", c, i, dzd[i], DZD[c * NR + i]);
        }
        if (x.mode != RK_EXFM_AH) continue;
        rk_exfm_aux_backward(dh, daw, &dab, dzd, h, aw, x.beta, NR, HD);
        for (int i = 0; i < NR * HD; i++)
            cr_expect(close_to(dh[i], DH[c * NR * HD + i], 1e-7, 1e-5), "case %d dh[%d] (beta %g): %g vs %g", c, i, x.beta, dh[i],
                      DH[c * NR * HD + i]);
        for (int j = 0; j < HD; j++)
            cr_expect(close_to(daw[j], DAW[c * HD + j], 1e-7, 1e-5), "case %d da_w[%d]: %g vs %g", c, j, daw[j], DAW[c * HD + j]);
        cr_expect(close_to(dab, DAB[c], 1e-7, 1e-5), "case %d da_b: %g vs %g", c, dab, DAB[c]);
    }
    /* the scaling is real: case 2 (beta 0.25) and 3 (beta 4) differ from beta 1 by exactly that factor */
    rk_st_close(f);
}

Test(exfm_loss, adapter_step_matches_pytorch_adam) {
    rk_st_file *f;
    rk_err e;
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/exfm_ref.safetensors", &f, &e), RK_OK, "%s", e.msg);
    const int K = 4;
    rk_exfm_adapter *a;
    cr_assert_eq(rk_exfm_adapter_create(K, 0.01f, 1, NR, &a, &e), RK_OK, "%s", e.msg);
    size_t np;
    float *p = rk_exfm_adapter_params(a, &np);
    cr_assert_eq(np, (size_t)(3 * K + 1));
    const char *names[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};
    size_t offs[4] = {0, (size_t)K, 2 * (size_t)K, 3 * (size_t)K}, lens[4] = {(size_t)K, (size_t)K, (size_t)K, 1};
    char nm[64];
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "adapter.%s", names[i]);
        memcpy(p + offs[i], fx(f, nm, lens[i]), lens[i] * sizeof(float));
    }
    const float *zf = fx(f, "z_f", NR), *y = fx(f, "y", NR), *q = fx(f, "q", NR);
    float grad[13];
    double loss = rk_exfm_adapter_step(a, zf, y, NR, grad);
    cr_expect(close_to(loss, fx(f, "adapter.loss", 1)[0], 1e-6, 1e-5), "L_sta %.7f", loss);
    const float *G = fx(f, "adapter.grad", 13);
    for (int i = 0; i < 13; i++) cr_expect(close_to(grad[i], G[i], 1e-7, 1e-5), "grad[%d] %g vs %g", i, grad[i], G[i]);
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "adapter_new.%s", names[i]);
        const float *ref = fx(f, nm, lens[i]);
        for (size_t j = 0; j < lens[i]; j++)
            cr_expect(close_to(p[offs[i] + j], ref[j], 1e-6, 1e-5), "%s[%zu]: %g vs %g", nm, j, p[offs[i] + j], ref[j]);
    }
    /* the stop-gradient target q = sigmoid(adapter(z_F)) after the step */
    float in[NR], z[NR];
    for (int i = 0; i < NR; i++) in[i] = isnan(zf[i]) ? 0 : zf[i];
    rk_exfm_adapter_forward(a, in, NR, z);
    for (int i = 0; i < NR; i++)
        if (!isnan(q[i])) cr_expect(close_to(rk_sigmoid(z[i]), q[i], 1e-6, 1e-5), "q[%d] %g vs %g", i, rk_sigmoid(z[i]), q[i]);
    /* no row with a teacher: nothing changes */
    float nan6[NR] = {NAN, NAN, NAN, NAN, NAN, NAN}, before[13];
    memcpy(before, p, sizeof before);
    cr_expect(isnan(rk_exfm_adapter_step(a, nan6, y, NR, NULL)));
    cr_expect_eq(memcmp(before, p, sizeof before), 0);
    rk_exfm_adapter_destroy(a);
    rk_st_close(f);
}

Test(exfm_loss, config_errors_name_the_field) {
    rk_err e;
    rk_exfm_cfg x = RK_EXFM_CFG_DEFAULT;
    x.mode = RK_EXFM_KD;
    x.adapter = 1;
    cr_expect_eq(rk_exfm_cfg_check(&x, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "exfm.adapter") != NULL, "%s", e.msg);
    x = (rk_exfm_cfg)RK_EXFM_CFG_DEFAULT;
    x.w = -1;
    cr_expect_eq(rk_exfm_cfg_check(&x, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "exfm.w:") != NULL, "%s", e.msg);
    x = (rk_exfm_cfg)RK_EXFM_CFG_DEFAULT;
    x.alpha = NAN;
    cr_expect_eq(rk_exfm_cfg_check(&x, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "exfm.alpha") != NULL, "%s", e.msg);
    x = (rk_exfm_cfg)RK_EXFM_CFG_DEFAULT;
    x.sa_hidden = 0;
    cr_expect_eq(rk_exfm_cfg_check(&x, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "exfm.sa_hidden") != NULL, "%s", e.msg);
}

/* ---------------------------------------------------------------- DAS log */

typedef struct {
    size_t calls_ids;
    int seen[200];
} counter;

static rk_status count_score(void *ctx, const uint32_t *ids, int n, float *logit, rk_err *err) {
    (void)err;
    counter *c = ctx;
    for (int i = 0; i < n; i++) {
        c->seen[ids[i]]++;
        logit[i] = 0.25f * (float)ids[i] - 3.0f;
    }
    c->calls_ids += (size_t)n;
    return RK_OK;
}

static rk_status nan_score(void *ctx, const uint32_t *ids, int n, float *logit, rk_err *err) {
    (void)ctx, (void)ids, (void)err;
    for (int i = 0; i < n; i++) logit[i] = i == n - 1 ? NAN : 0;
    return RK_OK;
}

Test(das, teacher_called_once_per_unique_id, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/das", tmpdir);
    rk_das *d;
    rk_err e;
    cr_assert_eq(rk_das_create(dir, 200, &d, &e), RK_OK, "%s", e.msg);
    /* three overlapping "verticals" request ids of one chunk: multiples of 2, 3 and 5 below 120 */
    uint32_t req[200];
    size_t n = 0;
    int uniq = 0, want[200] = {0};
    for (int k = 2; k <= 5; k++) {
        if (k == 4) continue;
        for (uint32_t i = 0; i < 120; i += (uint32_t)k) req[n++] = i, want[i] = 1;
    }
    for (int i = 0; i < 200; i++) uniq += want[i];
    cr_assert_gt(n, (size_t)uniq, "requests overlap");
    counter c = {0};
    size_t scored;
    cr_assert_eq(rk_das_log(d, req, n, count_score, &c, 3, &scored, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(c.calls_ids, (size_t)uniq, "teacher scored %zu ids, %d unique requested", c.calls_ids, uniq);
    cr_expect_eq(scored, (size_t)uniq);
    for (int i = 0; i < 200; i++) cr_expect_eq(c.seen[i], want[i], "id %d scored %d times", i, c.seen[i]);
    /* a later request overlapping the log scores only the new ids */
    uint32_t more[4] = {0, 6, 121, 121};
    cr_assert_eq(rk_das_log(d, more, 4, count_score, &c, 4, &scored, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(scored, 1u);
    cr_expect_eq(c.seen[121], 1);
    cr_expect_eq(c.seen[0], 1);
    /* read back: logged logits exactly, versions, NaN / -1 where never logged */
    uint32_t ids[4] = {6, 121, 7, 199};
    float lg[4];
    int ver[4];
    cr_assert_eq(rk_das_get(d, ids, 4, lg, ver, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(lg[0], 0.25f * 6 - 3.0f);
    cr_expect_eq(ver[0], 3);
    cr_expect_eq(lg[1], 0.25f * 121 - 3.0f);
    cr_expect_eq(ver[1], 4);
    cr_expect(isnan(lg[2]) && ver[2] == -1, "id 7 was never requested");
    cr_expect(isnan(lg[3]) && ver[3] == -1);
    /* bad input */
    uint32_t bad[1] = {200};
    cr_expect_eq(rk_das_log(d, bad, 1, count_score, &c, 0, NULL, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "example id 200 out of range") != NULL, "%s", e.msg);
    uint32_t fresh[2] = {150, 151};
    cr_expect_eq(rk_das_log(d, fresh, 2, nan_score, NULL, 0, NULL, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "teacher logit of example 151") != NULL, "%s", e.msg);
    rk_das_close(d);
    /* the log is a store: an existing directory is refused */
    cr_expect_eq(rk_das_create(dir, 10, &d, &e), RK_EEXIST, "%s", e.msg);
}

/* ---------------------------------------------------------------- stream */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(stream, chunks_and_verticals, .init = mk_tmp, .fini = rm_tmp) {
    char path[512];
    snprintf(path, sizeof path, "%s/s.tsv", tmpdir);
    /* 8 rows, timestamps with a tie across the equal-count boundary at row 4 */
    write_text(path, "label\ttimestamp\tgenres\n"
                     "1\t10\tAction|Comedy\n0\t11\tDrama\n1\t12\t\n0\t13\tComedy\n"
                     "1\t13\tWar\n0\t14\tRomance|Horror\n1\t15\tIMAX\n0\t16\tSci-Fi\n");
    rk_stream s;
    rk_err e;
    cr_assert_eq(rk_stream_load(path, 2, RK_EXFM_ML_VERTICALS, &s, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(s.n_rows, 8);
    cr_expect_eq(s.n_verticals, 3);
    cr_expect_str_eq(s.vname[1], "comedy");
    /* boundary 8*1/2 = 4 moves past row 4 (same timestamp 13 as row 3) */
    cr_expect_eq(s.chunk_start[1], 5);
    uint8_t want[8] = {1 | 2, 4, 0, 2, 1, 2 | 4, 0, 1};
    for (int r = 0; r < 8; r++) cr_expect_eq(s.vmask[r], want[r], "row %d mask %d", r, s.vmask[r]);
    uint32_t ids[8];
    cr_expect_eq(rk_stream_rows(&s, 0, 1, ids, 8), 2);
    cr_expect_eq(ids[0], 0u);
    cr_expect_eq(ids[1], 3u);
    cr_expect_eq(rk_stream_rows(&s, 1, -1, ids, 8), 2, "rows in any vertical of chunk 1: 5 and 7");
    rk_stream_free(&s);
    /* errors */
    write_text(path, "label\ttimestamp\tgenres\n1\t10\tDrama\n1\t9\tDrama\n");
    cr_expect_eq(rk_stream_load(path, 1, RK_EXFM_ML_VERTICALS, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column timestamp: 9 is before") != NULL, "%s", e.msg);
    write_text(path, "label\ttime\tgenres\n1\t10\tDrama\n");
    cr_expect_eq(rk_stream_load(path, 1, RK_EXFM_ML_VERTICALS, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "no column 'timestamp'") != NULL, "%s", e.msg);
    write_text(path, "label\ttimestamp\tgenres\n1\t10\tDrama\n1\t10\tDrama\n");
    cr_expect_eq(rk_stream_load(path, 2, RK_EXFM_ML_VERTICALS, &s, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "chunk 1 is empty") != NULL, "%s", e.msg);
    cr_expect_eq(rk_stream_load(path, 1, "action", &s, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "not NAME:GENRE") != NULL, "%s", e.msg);
}

Test(stream, timestamp_overflow_names_its_row, .init = mk_tmp, .fini = rm_tmp) {
    char path[512];
    snprintf(path, sizeof path, "%s/s.tsv", tmpdir);
    /* row 3 overflows int64: it is blamed (not row 4 for going "back in time") */
    write_text(path, "label\ttimestamp\tgenres\n1\t10\tDrama\n1\t99999999999999999999\tDrama\n1\t11\tDrama\n");
    rk_stream s;
    rk_err e;
    cr_expect_eq(rk_stream_load(path, 1, RK_EXFM_ML_VERTICALS, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column timestamp: '99999999999999999999' overflows a 64-bit integer") != NULL, "%s", e.msg);
    write_text(path, "label\ttimestamp\tgenres\n1\t-99999999999999999999\tDrama\n");
    cr_expect_eq(rk_stream_load(path, 1, RK_EXFM_ML_VERTICALS, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 2, column timestamp") != NULL && strstr(e.msg, "overflows") != NULL, "%s", e.msg);
}

Test(stream, too_many_columns_is_said, .init = mk_tmp, .fini = rm_tmp) {
    char path[512];
    snprintf(path, sizeof path, "%s/s.tsv", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 300; i++) fprintf(f, "c%d\t", i);
    fprintf(f, "timestamp\tgenres\n");
    for (int i = 0; i < 300; i++) fprintf(f, "0\t");
    fprintf(f, "10\tDrama\n");
    fclose(f);
    rk_stream s;
    rk_err e;
    cr_expect_eq(rk_stream_load(path, 1, RK_EXFM_ML_VERTICALS, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "302 columns in the header, more than the 256") != NULL, "%s", e.msg);
}

Test(stream, vertical_names_are_path_and_json_safe) {
    rk_err e;
    cr_expect_eq(rk_stream_check_spec("a_1-B:Drama;x:Comedy", &e), RK_OK, "%s", e.msg);
    const char *bad[] = {"../../../../escaped:Drama", "dr\"am\\a:Drama;x:Comedy", "a/b:Drama", ".:Drama", "a b:Drama",
                         "x:Comedy;d\xc3\xa9:Drama"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(rk_stream_check_spec(bad[i], &e), RK_EINVAL, "%s", bad[i]);
        cr_expect(strstr(e.msg, "may contain only letters, digits, '_' and '-'") != NULL, "%s: %s", bad[i], e.msg);
    }
    char lng[64];
    memset(lng, 'a', 32);
    strcpy(lng + 32, ":Drama");
    cr_expect_eq(rk_stream_check_spec(lng, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "longer than 31 characters") != NULL, "%s", e.msg);
}

/* ---------------------------------------------------------------- on MovieLens */

#define CHUNKS 10

typedef struct {
    rk_model_cfg scfg, tcfg;
    rk_stream st;
    rk_dataset sd, td;
    char tsv[512];
} ml_env;

static void load_cfg(const char *path, const char *tsv, rk_model_cfg *c) {
    char *text;
    rk_err e;
    cr_assert_eq(rk_read_file(path, &text, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_cfg_parse(text, c, &e), RK_OK, "%s", e.msg);
    rk_free(text);
    cr_assert_eq(rk_dataset_fit_dense(tsv, c, &e), RK_OK, "%s", e.msg);
}

/* The first 80% of MovieLens (train.tsv, ~80k events) as a stream of 10
 * chunks; the small teacher config keeps the tests fast. */
static void ml_open(ml_env *m) {
    rk_err e;
    char out[512];
    snprintf(out, sizeof out, "%s/ml", tmpdir);
    cr_assert_eq(rk_data_movielens(RK_SOURCE_DIR "/data/movielens", out, &e), RK_OK, "%s", e.msg);
    snprintf(m->tsv, sizeof m->tsv, "%s/train.tsv", out);
    load_cfg(RK_SOURCE_DIR "/configs/exfm_student.json", m->tsv, &m->scfg);
    load_cfg(RK_SOURCE_DIR "/configs/exfm_teacher_small.json", m->tsv, &m->tcfg);
    cr_assert_eq(rk_stream_load(m->tsv, CHUNKS, RK_EXFM_ML_VERTICALS, &m->st, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_dataset_load(m->tsv, &m->scfg, &m->sd, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_dataset_load(m->tsv, &m->tcfg, &m->td, &e), RK_OK, "%s", e.msg);
}

static void ml_close(ml_env *m) {
    rk_stream_free(&m->st);
    rk_dataset_free(&m->sd);
    rk_dataset_free(&m->td);
    rk_model_cfg_free(&m->scfg);
    rk_model_cfg_free(&m->tcfg);
}

static rk_das *teach(ml_env *m, const char *name, int staleness, rk_teacher_report *rep) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    rk_das *d;
    rk_err e;
    cr_assert_eq(rk_das_create(dir, (uint64_t)m->st.n_rows, &d, &e), RK_OK, "%s", e.msg);
    rk_teacher_opts o = RK_TEACHER_OPTS_DEFAULT;
    o.staleness = staleness;
    cr_assert_eq(rk_teacher_run(&m->tcfg, &m->td, &m->st, &o, d, rep, &e), RK_OK, "%s", e.msg);
    return d;
}

static void student(ml_env *m, rk_das *d, rk_exfm_cfg x, int v, const char *ckpt, rk_student_report *r, rk_model **out) {
    rk_student_opts o = {x, v, 3, ckpt, NULL};
    rk_err e;
    cr_assert_eq(rk_student_run(&m->scfg, &m->sd, &m->st, d, &o, r, out, &e), RK_OK, "%s", e.msg);
}

Test(exfm_stream, teacher_scores_each_unique_id_once, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    ml_env m;
    ml_open(&m);
    rk_teacher_report rep;
    const int k = 2;
    rk_das *d = teach(&m, "das", k, &rep);
    /* expected by counting here: chunks 1+k.. are labelled; requests = sum of the
     * verticals' rows, unique = rows in any vertical */
    size_t req = 0, uniq = 0;
    for (int c = 1 + k; c < CHUNKS; c++)
        for (int r = m.st.chunk_start[c]; r < m.st.chunk_start[c + 1]; r++) {
            req += (size_t)__builtin_popcount(m.st.vmask[r]);
            uniq += m.st.vmask[r] != 0;
        }
    cr_expect_eq(rep.requested, req);
    cr_expect_eq(rep.scored, uniq, "teacher calls %zu, unique ids %zu", rep.scored, uniq);
    cr_expect_gt(rep.requested, rep.scored + 1000, "the verticals overlap");
    /* the log: chunk c's rows carry version c - k (trained through chunk c-1-k); chunks <= k none */
    uint32_t ids[2] = {(uint32_t)m.st.chunk_start[k], (uint32_t)m.st.chunk_start[CHUNKS - 1]};
    while (!m.st.vmask[ids[1]]) ids[1]++;
    float lg[2];
    int ver[2];
    rk_err e;
    cr_assert_eq(rk_das_get(d, ids, 2, lg, ver, &e), RK_OK, "%s", e.msg);
    cr_expect(isnan(lg[0]) && ver[0] == -1, "chunk %d has no teacher yet", k);
    cr_expect(isfinite(lg[1]) && ver[1] == CHUNKS - 1 - k, "version %d", ver[1]);
    /* bad teacher options are refused before any training */
    rk_teacher_opts bad = RK_TEACHER_OPTS_DEFAULT;
    bad.bias_vertical = 2;
    bad.bias_factor = 0;
    cr_expect_eq(rk_teacher_run(&m.tcfg, &m.td, &m.st, &bad, d, &rep, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "bias_factor must be >= 1") != NULL, "%s", e.msg);
    bad.bias_factor = 2;
    bad.bias_vertical = 3;
    cr_expect_eq(rk_teacher_run(&m.tcfg, &m.td, &m.st, &bad, d, &rep, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "bias vertical 3") != NULL, "%s", e.msg);
    rk_das_close(d);
    ml_close(&m);
}

Test(exfm_stream, aux_weight_zero_equals_no_aux_head, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    ml_env m;
    ml_open(&m);
    rk_teacher_report tr;
    rk_das *d = teach(&m, "das", 0, &tr);
    rk_exfm_cfg none = RK_EXFM_CFG_DEFAULT, ah0 = RK_EXFM_CFG_DEFAULT, ah1 = RK_EXFM_CFG_DEFAULT;
    ah0.mode = RK_EXFM_AH;
    ah0.w = 0;
    ah0.beta = 3; /* the scaled zero gradient is still zero */
    ah1.mode = RK_EXFM_AH;
    rk_student_report a, b, c;
    student(&m, NULL, none, 0, NULL, &a, NULL);
    student(&m, d, ah0, 0, NULL, &b, NULL);
    student(&m, d, ah1, 0, NULL, &c, NULL);
    cr_assert_eq(a.n, b.n);
    cr_assert_gt(b.distilled, 0u, "the aux head saw teacher targets");
    cr_expect_eq(memcmp(a.pctr, b.pctr, (size_t)a.n * sizeof(float)), 0, "w = 0 must equal no aux head, bit for bit");
    int differ = memcmp(a.pctr, c.pctr, (size_t)a.n * sizeof(float)) != 0;
    cr_expect(differ, "w = 1 must change the student (else this test could not fail)");
    rk_student_report_free(&a);
    rk_student_report_free(&b);
    rk_student_report_free(&c);
    rk_das_close(d);
    ml_close(&m);
}

Test(exfm_stream, nonfinite_loss_and_stop_are_reported, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    ml_env m;
    ml_open(&m);
    rk_teacher_report tr;
    rk_das *d = teach(&m, "das", 0, &tr);
    /* knobs the CLI would refuse (> 1e3): the message names the mode and every knob */
    rk_exfm_cfg x = RK_EXFM_CFG_DEFAULT;
    x.mode = RK_EXFM_AH;
    x.adapter = 1;
    x.w = 1e30f;
    x.beta = 1e30f;
    rk_student_opts o = {x, 2, 3, NULL, NULL};
    rk_student_report r;
    rk_err e;
    cr_expect_eq(rk_student_run(&m.scfg, &m.sd, &m.st, d, &o, &r, NULL, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "student mode=ah_sa vertical=drama: loss became non-finite in chunk") != NULL, "%s", e.msg);
    cr_expect(strstr(e.msg, "w=1e+30 alpha=1 beta=1e+30 w_sa=1 lr_sa=0.001") != NULL, "%s", e.msg);
    /* a stop flag already set: nothing is trained */
    volatile sig_atomic_t stop = 1;
    o.exfm = (rk_exfm_cfg)RK_EXFM_CFG_DEFAULT;
    o.stop = &stop;
    cr_expect_eq(rk_student_run(&m.scfg, &m.sd, &m.st, d, &o, &r, NULL, &e), RK_ECANCELED);
    cr_expect(strstr(e.msg, "student 'drama': stopped in chunk 0") != NULL, "%s", e.msg);
    rk_teacher_opts to = RK_TEACHER_OPTS_DEFAULT;
    to.stop = &stop;
    cr_expect_eq(rk_teacher_run(&m.tcfg, &m.td, &m.st, &to, d, &tr, &e), RK_ECANCELED);
    cr_expect(strstr(e.msg, "teacher: stopped in chunk 0") != NULL, "%s", e.msg);
    rk_das_close(d);
    ml_close(&m);
}

Test(exfm_stream, progressive_validation_scores_before_labels, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    /* Flip every label of chunk T (in the teacher's and the student's data),
     * rerun teacher + student: every score of chunks <= T is bit-identical
     * (chunk T was scored before its labels were read), and chunk T+1's
     * scores change (the flipped labels were then trained on). */
    const int T = 5;
    ml_env m;
    ml_open(&m);
    rk_exfm_cfg x = RK_EXFM_CFG_DEFAULT;
    x.mode = RK_EXFM_AH;
    x.adapter = 1;
    rk_teacher_report tr;
    rk_student_report a, b;
    rk_das *d1 = teach(&m, "das1", 0, &tr);
    student(&m, d1, x, 2, NULL, &a, NULL);
    rk_das_close(d1);
    for (int r = m.st.chunk_start[T]; r < m.st.chunk_start[T + 1]; r++) {
        m.sd.b.labels[r] = 1 - m.sd.b.labels[r];
        m.td.b.labels[r] = 1 - m.td.b.labels[r];
    }
    rk_das *d2 = teach(&m, "das2", 0, &tr);
    student(&m, d2, x, 2, NULL, &b, NULL);
    rk_das_close(d2);
    cr_assert_eq(a.n, b.n);
    int upto = 0, next = 0, diff_next = 0;
    for (int i = 0; i < a.n; i++) {
        if (a.chunk[i] <= T) {
            upto++;
            cr_expect(memcmp(&a.pctr[i], &b.pctr[i], sizeof(float)) == 0, "row %u of chunk %d: %.9g vs %.9g", a.id[i], a.chunk[i],
                      a.pctr[i], b.pctr[i]);
        } else if (a.chunk[i] == T + 1) {
            next++;
            diff_next += a.pctr[i] != b.pctr[i];
        }
    }
    cr_expect_gt(upto, 1000);
    cr_expect_gt(diff_next, next / 2, "chunk %d: only %d of %d scores changed after flipping chunk %d's labels", T + 1, diff_next,
                 next, T);
    rk_student_report_free(&a);
    rk_student_report_free(&b);
    ml_close(&m);
}

/* 50 MovieLens-shaped rows through rk_scorer, as rankd's workers score a
 * Rank request's candidates. */
static void score_raw(const rk_model *m, float *pctr) {
    rk_scorer *sc;
    rk_err e;
    cr_assert_eq(rk_scorer_create(m, 50, 32, &sc, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(sc, 50, &e), RK_OK, "%s", e.msg);
    const rk_model_cfg *c = rk_model_config(m);
    const char *genres[4] = {"Action", "Comedy", "Drama", "Romance"};
    char v[32];
    for (int r = 0; r < 50; r++) {
        struct {
            const char *name;
            int val;
        } sp[5] = {{"user_id", 1 + r % 7}, {"hour", r % 24}, {"weekday", r % 7}, {"movie_id", 1 + 37 * r}, {"history", 50 + r}};
        for (int k = 0; k < 5; k++) {
            int f = rk_model_cfg_find(c, sp[k].name);
            cr_assert_geq(f, 0, "feature %s", sp[k].name);
            int len = snprintf(v, sizeof v, "%d", sp[k].val);
            cr_assert_eq(rk_scorer_add_sparse(sc, r, f, v, (size_t)len, &e), RK_OK, "%s", e.msg);
        }
        int g = rk_model_cfg_find(c, "genres"), y = rk_model_cfg_find(c, "year");
        cr_assert_eq(rk_scorer_add_sparse(sc, r, g, genres[r % 4], strlen(genres[r % 4]), &e), RK_OK, "%s", e.msg);
        cr_assert_eq(rk_scorer_set_dense(sc, r, y, (float)(1960 + r), &e), RK_OK, "%s", e.msg);
    }
    cr_assert_eq(rk_scorer_run(sc, pctr, NULL, NULL, &e), RK_OK, "%s", e.msg);
    rk_scorer_destroy(sc);
}

Test(exfm_stream, checkpoint_serves_same_pctr_without_training_only_parts, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    ml_env m;
    ml_open(&m);
    rk_teacher_report tr;
    rk_das *d = teach(&m, "das", 1, &tr);
    rk_exfm_cfg x = RK_EXFM_CFG_DEFAULT;
    x.mode = RK_EXFM_AH;
    x.adapter = 1;
    char ck[512], last[600], path[700], copy[600];
    snprintf(ck, sizeof ck, "%s/ckpt", tmpdir);
    rk_student_report r;
    rk_model *mem;
    student(&m, d, x, 1, ck, &r, &mem);
    rk_das_close(d);
    snprintf(last, sizeof last, "%s/comedy/chunk-%03d", ck, CHUNKS - 1);
    /* the checkpoint has the training-only file with the aux head and adapter ... */
    snprintf(path, sizeof path, "%s/exfm_training.safetensors", last);
    rk_st_file *f;
    rk_err e;
    cr_assert_eq(rk_st_open(path, &f, &e), RK_OK, "%s", e.msg);
    const float *t;
    int nd;
    int64_t sh[4];
    cr_expect_eq(rk_st_get_f32(f, "aux_head.weight", &t, &nd, sh, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(sh[1], 16, "aux head over the 16-wide backbone output");
    cr_expect_eq(rk_st_get_f32(f, "adapter.0.weight", &t, &nd, sh, &e), RK_OK, "%s", e.msg);
    rk_st_close(f);
    /* ... and the serving tensors hold none of it */
    snprintf(path, sizeof path, "%s/dense.safetensors", last);
    cr_assert_eq(rk_st_open(path, &f, &e), RK_OK, "%s", e.msg);
    for (size_t i = 0; i < rk_st_count(f); i++)
        cr_expect(!strstr(rk_st_name(f, i), "aux") && !strstr(rk_st_name(f, i), "adapter"), "%s", rk_st_name(f, i));
    rk_st_close(f);
    /* the same bundle without the training-only file */
    snprintf(copy, sizeof copy, "%s/serving", tmpdir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && rm '%s/exfm_training.safetensors'", last, copy, copy);
    cr_assert_eq(system(cmd), 0);
    rk_model *with, *without;
    cr_assert_eq(rk_model_open(last, &with, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_open(copy, &without, &e), RK_OK, "%s", e.msg);
    /* score the last chunk's rows of the vertical through the serving path */
    const rk_batch *all = &m.sd.b;
    uint32_t *ids = malloc((size_t)all->n_rows * sizeof(uint32_t));
    int n = rk_stream_rows(&m.st, CHUNKS - 1, 1, ids, all->n_rows);
    rk_batch b;
    cr_assert_eq(rk_batch_alloc(&b, &m.scfg, n, (size_t)n * 64, &e), RK_OK, "%s", e.msg);
    rk_batch_gather(all, &m.scfg, ids, n, &b);
    float *p1 = malloc((size_t)n * sizeof(float)), *p2 = malloc((size_t)n * sizeof(float)), *p3 = malloc((size_t)n * sizeof(float));
    cr_assert_eq(rk_model_predict(with, &b, p1, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_predict(without, &b, p2, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_predict(mem, &b, p3, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(memcmp(p1, p2, (size_t)n * sizeof(float)), 0, "served pCTR must be bit-identical with and without the training-only file");
    for (int i = 0; i < n; i++) cr_expect(close_to(p1[i], p3[i], 1e-6, 0), "row %d: bundle %g vs the trained student %g", i, p1[i], p3[i]);
    /* rankd's path: the per-worker scorer (featurize raw values, store lookups, tower) */
    float s1[50], s2[50];
    score_raw(with, s1);
    score_raw(without, s2);
    cr_expect_eq(memcmp(s1, s2, sizeof s1), 0, "scorer pCTR must be bit-identical with and without the training-only file");
    rk_model_destroy(with);
    rk_model_destroy(without);
    rk_model_destroy(mem);
    rk_batch_free(&b);
    free(ids);
    free(p1);
    free(p2);
    free(p3);
    rk_student_report_free(&r);
    ml_close(&m);
}
