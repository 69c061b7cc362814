/*
 * tests/test_model.c — model config parsing, whole-model backward against
 * finite differences, bundle round trip (RAM model == bundle == scorer) and
 * every corrupt-bundle case with its exact error, training determinism and
 * learning a planted signal.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../rank/internal.h"

static const char *TINY_CFG =
    "{\"name\": \"tiny\", \"version\": \"t1\","
    " \"features\": ["
    "  {\"name\": \"u\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 13, \"dim\": 3},"
    "  {\"name\": \"h\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 11, \"dim\": 2, \"pooling\": \"mean\", \"max_values\": 4},"
    "  {\"name\": \"i\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 17, \"dim\": 3},"
    "  {\"name\": \"x\", \"kind\": \"dense\", \"side\": \"item\"}],"
    " \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 2, \"hidden\": [5, 4]},"
    " \"train\": {\"seed\": 7, \"batch_size\": 8, \"max_epochs\": 3, \"patience\": 2, \"threads\": 1},"
    " \"aliases\": {\"user_id\": \"u\", \"recent_item_ids\": \"h\", \"ad_id\": \"i\"}}";

static rk_model_cfg tiny_cfg(void) {
    rk_model_cfg c;
    rk_err e = {0};
    rk_status s = rk_model_cfg_parse(TINY_CFG, &c, &e);
    cr_assert_eq(s, RK_OK, "%s", e.msg);
    return c;
}

static char tmpdir[256];
static void mk_tmp(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-model-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void rm_tmp(void) { rk_rm_rf(tmpdir, NULL); }

/* A small featurized batch with fixed values. */
static void fill_batch(rk_batch *b, const rk_model_cfg *c, int n) {
    rk_err e = {0};
    cr_assert_eq(rk_batch_alloc(b, c, n, 64, &e), RK_OK);
    b->n_rows = n;
    for (int f = 0; f < c->n_features; f++) {
        if (c->features[f].kind != RK_FEAT_SPARSE) continue;
        uint32_t k = 0;
        b->offsets[f][0] = 0;
        for (int r = 0; r < n; r++) {
            int cnt = (f == 1) ? r % 4 : 1; /* feature h: 0..3 values, row 0 empty */
            for (int j = 0; j < cnt; j++) {
                char v[16];
                snprintf(v, sizeof v, "%d", r * 3 + j);
                b->rows[f][k++] = rk_feature_row(c->features[f].name, v, strlen(v), c->features[f].table_size);
            }
            b->offsets[f][r + 1] = k;
        }
    }
    for (int r = 0; r < n; r++) {
        b->dense[(size_t)r * c->n_features + 3] = (float)(r - n / 2) * 0.3f;
        b->labels[r] = (float)(r % 3 == 0);
    }
}

Test(config, parses_and_defaults) {
    rk_model_cfg c = tiny_cfg();
    cr_expect_eq(c.n_features, 4);
    cr_expect_eq(c.features[1].pool, RK_BAG_MEAN);
    cr_expect_eq(c.features[0].pool, RK_BAG_SUM);
    cr_expect_eq(c.tower.n_cross, 2);
    cr_expect_eq(rk_model_cfg_input_dim(&c), 3 + 2 + 3 + 1);
    cr_expect_eq(c.train.batch_size, 8);
    cr_expect_float_eq(c.train.lr_dense, 1e-3f, 1e-9);
    cr_expect_str_eq(c.alias_ad_id, "i");
    rk_model_cfg_free(&c);
}

Test(config, errors_name_the_key) {
    rk_model_cfg c;
    rk_err e = {0};
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [], \"bogus\": 1}", &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "unknown key 'bogus'"), "%s", e.msg);
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [{\"name\": \"a\", \"side\": \"left\", \"table_size\": 3}]}", &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "features[0].side: 'left'"), "%s", e.msg);
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [{\"name\": \"a\", \"side\": \"user\"}]}", &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "features[0].table_size: missing"), "%s", e.msg);
    cr_expect_eq(rk_model_cfg_parse("{\"format_version\": 2, \"features\": []}", &c, &e), RK_EVERSION);
    cr_expect(strstr(e.msg, "format_version 2 is not supported"), "%s", e.msg);
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [", &c, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "not valid JSON"), "%s", e.msg);
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [{\"name\": \"a\", \"side\": \"user\", \"table_size\": 3}], "
                                    "\"train\": {\"batch_size\": 0}}", &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "train.batch_size"), "%s", e.msg);
}

/* Loss of the model on batch b (double precision of the float forward). */
static double model_loss(rk_model *m, const rk_batch *b, rk_work *w) {
    rk_err e = {0};
    cr_assert_eq(rk_model_fill_x0(m, b, w, NULL, &e), RK_OK);
    rk_model_forward(m, w, b->n_rows);
    return rk_bce_logits(w->logit, b->labels, b->n_rows, NULL);
}

Test(model, backward_matches_finite_differences) {
    rk_model_cfg c = tiny_cfg();
    c.train.init_std_embed = 0.5f; /* large enough that every path carries signal */
    rk_model *m;
    rk_err e = {0};
    cr_assert_eq(rk_model_create(&c, &m, &e), RK_OK, "%s", e.msg);
    rk_batch b;
    fill_batch(&b, &c, 6);
    rk_work w;
    cr_assert_eq(rk_work_init(&w, m, 6, 1, &e), RK_OK);
    model_loss(m, &b, &w);
    rk_bce_logits(w.logit, b.labels, 6, w.dlogit);
    float *g = calloc(m->n_floats, sizeof(float));
    rk_model_backward(m, &w, 6, g);
    /* dense parameters: every 3rd, central differences */
    int checked = 0;
    double worst = 0;
    for (size_t i = 0; i < m->n_floats; i += 3) {
        float keep = m->params[i];
        const float h = 1e-2f;
        m->params[i] = keep + h;
        double lp = model_loss(m, &b, &w);
        m->params[i] = keep - h;
        double lm = model_loss(m, &b, &w);
        m->params[i] = keep;
        double fd = (lp - lm) / (2 * h);
        double err = fabs(fd - g[i]);
        if (err > worst) worst = err;
        cr_expect(err <= 2e-3 + 2e-2 * fabs(fd), "param %zu: analytic %g vs finite difference %g", i, g[i], fd);
        checked++;
    }
    cr_expect_gt(checked, 50);
    /* tower input gradient: x0 columns of row 2 through the embedding of feature u */
    model_loss(m, &b, &w);
    rk_bce_logits(w.logit, b.labels, 6, w.dlogit);
    memset(g, 0, m->n_floats * sizeof(float));
    rk_model_backward(m, &w, 6, g);
    /* a row whose u value hashes to a table row no other batch row uses */
    int rr = -1;
    for (int r = 0; r < 6 && rr < 0; r++) {
        int uniq = 1;
        for (int q = 0; q < 6; q++)
            if (q != r && b.rows[0][q] == b.rows[0][r]) uniq = 0;
        if (uniq) rr = r;
    }
    cr_assert_geq(rr, 0, "fixture: no row with a distinct u bucket");
    float dx0[9];
    memcpy(dx0, w.dx0 + (size_t)rr * m->D, sizeof dx0);
    uint64_t row = b.rows[0][rr];
    for (int j = 0; j < 3; j++) {
        float *p = m->tables[0] + row * 3 + j, keep = *p;
        const float h = 1e-2f;
        *p = keep + h;
        double lp = model_loss(m, &b, &w);
        *p = keep - h;
        double lm = model_loss(m, &b, &w);
        *p = keep;
        double fd = (lp - lm) / (2 * h);
        cr_expect(fabs(fd - dx0[m->col[0] + j]) <= 2e-3 + 2e-2 * fabs(fd), "x0[%d,%d]: %g vs %g", rr, j, dx0[m->col[0] + j], fd);
    }
    free(g);
    rk_work_free(&w);
    rk_batch_free(&b);
    rk_model_destroy(m);
    rk_model_cfg_free(&c);
}

static rk_model *tiny_model(void) {
    rk_model_cfg c = tiny_cfg();
    c.train.init_std_embed = 0.3f;
    rk_model *m;
    rk_err e = {0};
    cr_assert_eq(rk_model_create(&c, &m, &e), RK_OK, "%s", e.msg);
    rk_model_cfg_free(&c);
    return m;
}

Test(bundle, round_trip_identical_scores, .init = mk_tmp, .fini = rm_tmp) {
    rk_model *m = tiny_model();
    rk_batch b;
    fill_batch(&b, &m->cfg, 10);
    float p_ram[10], p_bundle[10], p_scorer[10];
    rk_err e = {0};
    cr_assert_eq(rk_model_predict(m, &b, p_ram, &e), RK_OK, "%s", e.msg);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bundle", tmpdir);
    cr_assert_eq(rk_model_save(m, dir, "{\"test\": {\"auc\": 0.5}}", 0, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(rk_model_save(m, dir, NULL, 0, &e), RK_EEXIST);
    cr_expect(strstr(e.msg, "already exists"), "%s", e.msg);
    rk_model *m2;
    cr_assert_eq(rk_model_open(dir, &m2, &e), RK_OK, "%s", e.msg);
    cr_expect_str_eq(rk_model_version(m2), "tiny/t1");
    cr_assert_eq(rk_model_predict(m2, &b, p_bundle, &e), RK_OK, "%s", e.msg);
    for (int i = 0; i < 10; i++) cr_expect_eq(p_ram[i], p_bundle[i], "row %d: %.9g vs %.9g", i, p_ram[i], p_bundle[i]);
    /* the scorer (serving path) from raw values gives the same bits */
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m2, 16, 8, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 10, &e), RK_OK);
    for (int r = 0; r < 10; r++) {
        for (int f = 0; f < 3; f++) {
            int cnt = f == 1 ? r % 4 : 1;
            for (int j = 0; j < cnt; j++) {
                char v[16];
                snprintf(v, sizeof v, "%d", r * 3 + j);
                cr_assert_eq(rk_scorer_add_sparse(s, r, f, v, strlen(v), &e), RK_OK, "%s", e.msg);
            }
        }
        /* raw value whose standardization (mean 0, std 1) is the fixture's */
        cr_assert_eq(rk_scorer_set_dense(s, r, 3, (float)(r - 5) * 0.3f, &e), RK_OK);
    }
    cr_assert_eq(rk_scorer_run(s, p_scorer, NULL, NULL, &e), RK_OK, "%s", e.msg);
    for (int i = 0; i < 10; i++) cr_expect_eq(p_ram[i], p_scorer[i], "row %d: %.9g vs %.9g", i, p_ram[i], p_scorer[i]);
    /* scorer errors */
    cr_expect_eq(rk_scorer_begin(s, 17, &e), RK_ETOOBIG);
    cr_expect_eq(rk_scorer_begin(s, 2, &e), RK_OK);
    cr_expect_eq(rk_scorer_set_dense(s, 0, 3, NAN, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "feature 'x'"), "%s", e.msg);
    cr_expect_eq(rk_scorer_add_sparse(s, 0, 3, "a", 1, &e), RK_EINVAL);
    rk_scorer_destroy(s);
    rk_model_destroy(m2);
    rk_model_destroy(m);
    rk_batch_free(&b);
}

static void save_tiny(char *dir, size_t cap) {
    rk_model *m = tiny_model();
    rk_err e = {0};
    snprintf(dir, cap, "%s/b", tmpdir);
    cr_assert_eq(rk_model_save(m, dir, NULL, 0, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
}

static void expect_open_error(const char *dir, rk_status code, const char *needle) {
    rk_model *m = NULL;
    rk_err e = {0};
    rk_status s = rk_model_open(dir, &m, &e);
    cr_expect_eq(s, code, "status %d (%s), expected %d", s, e.msg, code);
    cr_expect_null(m);
    cr_expect(strstr(e.msg, needle) != NULL, "message '%s' lacks '%s'", e.msg, needle);
}

static void replace_in_file(const char *path, const char *from, const char *to) {
    char *t;
    size_t n;
    cr_assert_eq(rk_read_file(path, &t, &n, NULL), RK_OK);
    char *at = strstr(t, from);
    cr_assert_not_null(at, "'%s' not in %s", from, path);
    FILE *f = fopen(path, "w");
    fwrite(t, 1, (size_t)(at - t), f);
    fputs(to, f);
    fputs(at + strlen(from), f);
    fclose(f);
    rk_free(t);
}

Test(bundle, missing_model_json, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.json", dir);
    unlink(p);
    expect_open_error(dir, RK_ENOTFOUND, "missing file model.json");
}

Test(bundle, missing_dense, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/dense.safetensors", dir);
    unlink(p);
    expect_open_error(dir, RK_ENOTFOUND, "missing file dense.safetensors");
}

Test(bundle, missing_tables, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/tables", dir);
    rk_rm_rf(p, NULL);
    expect_open_error(dir, RK_ENOTFOUND, "missing directory tables/");
}

Test(bundle, wrong_version, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.json", dir);
    replace_in_file(p, "\"format_version\": 1", "\"format_version\": 99");
    expect_open_error(dir, RK_EVERSION, "format_version 99 is not supported");
}

Test(bundle, wrong_shape, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.json", dir);
    /* a wider first hidden layer in model.json than in dense.safetensors */
    replace_in_file(p, "\"hidden\": [\n      5,", "\"hidden\": [\n      6,");
    expect_open_error(dir, RK_ESHAPE, "tensor 'mlp.0.weight' has shape [5,9], the reader expects [6,9]");
}

/* model.json's table_size must match the rows tables/ holds (hashing ids
 * onto another row count serves other scores). */
Test(bundle, table_size_other_than_the_stores_rows, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.json", dir);
    replace_in_file(p, "\"table_size\": 11", "\"table_size\": 22");
    expect_open_error(dir, RK_EFORMAT, "feature 'h': model.json says table_size 22, tables/ holds 11 rows");
}

/* dense.safetensors records the identity of the tables/ saved with it:
 * another bundle's dense file next to these tables is refused. */
Test(bundle, dense_of_another_bundle_is_refused, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], other[600], p[700], cmd[2000];
    save_tiny(dir, sizeof dir);
    rk_model *m = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_model_open(dir, &m, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
    snprintf(other, sizeof other, "%s/other", tmpdir);
    m = tiny_model();
    cr_assert_eq(rk_model_save(m, other, NULL, 0, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
    snprintf(cmd, sizeof cmd, "cp %s/dense.safetensors %s/dense.safetensors", other, dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(p, sizeof p, "%s/tables/IDENTITY", other);
    char *id = NULL;
    cr_assert_eq(rk_read_file(p, &id, NULL, NULL), RK_OK);
    id[strcspn(id, "\n")] = 0;
    char want[200];
    snprintf(want, sizeof want, "dense.safetensors was saved with tables/ %s, but tables/IDENTITY is ", id);
    expect_open_error(dir, RK_EFORMAT, want);
    rk_free(id);
}

Test(bundle, corrupt_safetensors_header, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/dense.safetensors", dir);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fseek(f, 8, SEEK_SET);
    fputs("#garbage", f); /* break the JSON header */
    fclose(f);
    expect_open_error(dir, RK_EFORMAT, "corrupt safetensors header");
    /* and a length prefix past the end of the file */
    f = fopen(p, "r+b");
    unsigned char big[8] = {0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0};
    fwrite(big, 1, 8, f);
    fclose(f);
    expect_open_error(dir, RK_EFORMAT, "exceeds file size");
}

Test(bundle, missing_column_family, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/model.json", dir);
    /* rename feature i -> j in model.json: the store has no table 'j' */
    replace_in_file(p, "\"name\": \"i\"", "\"name\": \"j\"");
    replace_in_file(p, "\"ad_id\": \"i\"", "\"ad_id\": \"j\"");
    expect_open_error(dir, RK_ENOTFOUND, "table 'j' (column family) missing");
}

Test(bundle, not_a_bundle, .init = mk_tmp, .fini = rm_tmp) {
    expect_open_error("/nonexistent/rk-bundle", RK_ENOTFOUND, "not a directory");
    expect_open_error(tmpdir, RK_ENOTFOUND, "missing file model.json");
}

Test(bundle, overwrite_replaces_atomically, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512];
    save_tiny(dir, sizeof dir);
    rk_model *m = tiny_model();
    m->params[0] += 1.0f;
    rk_err e = {0};
    cr_assert_eq(rk_model_save(m, dir, NULL, 1, &e), RK_OK, "%s", e.msg);
    rk_model *m2;
    cr_assert_eq(rk_model_open(dir, &m2, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(m2->params[0], m->params[0]);
    /* nothing left beside the bundle */
    char p[600];
    snprintf(p, sizeof p, "%s/b.tmp-%ld", tmpdir, (long)getpid());
    cr_expect_not(rk_path_exists(p));
    snprintf(p, sizeof p, "%s/b.old-%ld", tmpdir, (long)getpid());
    cr_expect_not(rk_path_exists(p));
    rk_model_destroy(m2);
    rk_model_destroy(m);
}

/* ---------------------------------------------------------------- training */

/* Planted signal: label = 1 iff u + i >= 9; u, i in 0..9 (additive, so even
 * logistic regression can learn it; tables are made large enough below
 * that no two values share a row). */
static void write_planted(const char *path, int n, unsigned seed) {
    FILE *f = fopen(path, "w");
    fprintf(f, "label\tu\th\ti\tx\n");
    srand(seed);
    for (int r = 0; r < n; r++) {
        int u = rand() % 10, i = rand() % 10;
        fprintf(f, "%d\t%d\t%d|%d\t%d\t%s\n", u + i >= 9, u, rand() % 5, rand() % 5, i, r % 7 ? "1.5" : "");
    }
    fclose(f);
}

Test(train, learns_planted_signal_and_is_deterministic, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    char tr[600], va[600];
    snprintf(tr, sizeof tr, "%s/train.tsv", tmpdir);
    snprintf(va, sizeof va, "%s/valid.tsv", tmpdir);
    write_planted(tr, 4000, 1);
    write_planted(va, 1000, 2);
    rk_model_cfg c = tiny_cfg();
    c.train.max_epochs = 6;
    c.train.batch_size = 64;
    c.train.lr_dense = 0.01f;
    c.train.lr_embed = 0.1f;
    c.features[0].table_size = 1000;
    c.features[2].table_size = 1000;
    rk_train_io io = {tr, va, va, 1};
    rk_train_report r1, r2;
    rk_model *m1, *m2;
    rk_err e = {0};
    cr_assert_eq(rk_train(&c, &io, &m1, &r1, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_train(&c, &io, &m2, &r2, &e), RK_OK, "%s", e.msg);
    cr_expect_gt(r1.valid.auc, 0.95, "valid AUC %.4f on a learnable signal", r1.valid.auc);
    cr_expect_eq(r1.test.auc, r2.test.auc);
    cr_expect_eq(memcmp(m1->params, m2->params, m1->n_floats * sizeof(float)), 0, "same seed, different dense params");
    cr_expect_eq(memcmp(m1->tables[2], m2->tables[2], 1000 * 3 * sizeof(float)), 0, "same seed, different table");
    /* rows no training value hashes to are zero (the unseen-id default); a seen row is not */
    uint64_t seen = rk_feature_row("u", "3", 1, 1000), unseen = rk_feature_row("u", "77", 2, 1000);
    for (int v = 0; v < 10; v++) {
        char b[4];
        snprintf(b, sizeof b, "%d", v);
        cr_assert_neq(rk_feature_row("u", b, strlen(b), 1000), unseen, "fixture: '77' collides with a training value");
    }
    int zero = 1, nonzero = 0;
    for (int j = 0; j < 3; j++) {
        zero &= m1->tables[0][unseen * 3 + j] == 0.0f;
        nonzero |= m1->tables[0][seen * 3 + j] != 0.0f;
    }
    cr_expect(zero, "an unseen row keeps its random init");
    cr_expect(nonzero, "a trained row is zero");
    /* dense feature statistics come from the training file: 1.5 everywhere present */
    cr_expect_float_eq(m1->cfg.features[3].mean, 1.5, 1e-9);
    rk_model_destroy(m2);
    c.train.seed = 8;
    cr_assert_eq(rk_train(&c, &io, &m2, &r2, &e), RK_OK, "%s", e.msg);
    cr_expect_neq(memcmp(m1->params, m2->params, m1->n_floats * sizeof(float)), 0, "other seed, same params");
    rk_model_destroy(m1);
    rk_model_destroy(m2);
    rk_model_cfg_free(&c);
}

Test(train, bad_tsv_names_row_and_column, .init = mk_tmp, .fini = rm_tmp) {
    char tr[600];
    snprintf(tr, sizeof tr, "%s/bad.tsv", tmpdir);
    FILE *f = fopen(tr, "w");
    fprintf(f, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n2\t3\t\t4\t2.0\n");
    fclose(f);
    rk_model_cfg c = tiny_cfg();
    rk_dataset d;
    rk_err e = {0};
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column label: expected 0 or 1, got '2'"), "%s", e.msg);
    f = fopen(tr, "w");
    fprintf(f, "label\tu\th\ti\tx\n1\t3\t\t4\tnan\n");
    fclose(f);
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 2, column x: expected a finite number within +-1e+09, got 'nan'"), "%s", e.msg);
    f = fopen(tr, "w");
    fprintf(f, "label\tu\th\tx\n1\t3\t\t1\n");
    fclose(f);
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 1: no column 'i'"), "%s", e.msg);
    f = fopen(tr, "w");
    fprintf(f, "label\tu\th\ti\tx\n1\t3\t4\n");
    fclose(f);
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 2: 3 fields, the header has 5"), "%s", e.msg);
    /* a NUL inside row 3 (field count intact): refused, not a silent end of
     * the file after row 2 */
    f = fopen(tr, "w");
    fprintf(f, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t3\t\t4\t2");
    fputc(0, f);
    fprintf(f, "5\n1\t3\t\t4\t2.0\n");
    fclose(f);
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column 5 'x' (byte 9 of the row): a NUL byte"), "%s", e.msg);
    rk_model_cfg_free(&c);
}

/* log1p of a negative count: refused for the right reason (it said
 * "expected a finite number within +-1e9, got '-1'"), and "clamp" gives
 * log1p(max(x, 0)). */
Test(train, log1p_negative_counts_refused_or_clamped, .init = mk_tmp, .fini = rm_tmp) {
    char tr[600];
    snprintf(tr, sizeof tr, "%s/l.tsv", tmpdir);
    FILE *f = fopen(tr, "w");
    fprintf(f, "label\tu\th\ti\tx\n1\t3\t\t4\t3\n0\t3\t\t4\t-1\n");
    fclose(f);
    rk_model_cfg c = tiny_cfg();
    c.features[3].log1p = RK_LOG1P_ON;
    rk_dataset d;
    rk_err e = {0};
    cr_expect_eq(rk_dataset_load(tr, &c, &d, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column x: log1p is undefined at or below -1 (a negative count? set \"log1p\": "
                            "\"clamp\""), "%s", e.msg);
    cr_expect_eq(rk_dataset_fit_dense(tr, &c, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 3, column x: log1p is undefined"), "%s", e.msg);
    c.features[3].log1p = RK_LOG1P_CLAMP;
    c.features[3].mean = 0.5, c.features[3].std = 2;
    cr_assert_eq(rk_dataset_load(tr, &c, &d, &e), RK_OK, "%s", e.msg);
    cr_expect_float_eq(d.b.dense[0 * 4 + 3], (float)((log(4.0) - 0.5) / 2), 1e-6);
    cr_expect_float_eq(d.b.dense[1 * 4 + 3], (float)((0.0 - 0.5) / 2), 1e-6);
    rk_dataset_free(&d);
    /* the option round-trips through model.json */
    json_t *jo = rk_cfg_to_json(&c);
    char *js = json_dumps(jo, 0);
    json_decref(jo);
    cr_expect(strstr(js, "\"log1p\": \"clamp\""), "%s", js);
    rk_model_cfg c2;
    cr_assert_eq(rk_model_cfg_parse(js, &c2, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(c2.features[3].log1p, RK_LOG1P_CLAMP);
    free(js);
    rk_model_cfg_free(&c2);
    rk_model_cfg_free(&c);
}

/* Bundles with quantized tables: model.json records the codec, scores stay
 * close to fp32, convert re-encodes and keeps the metrics. */
Test(bundle, codecs_and_convert, .init = mk_tmp, .fini = rm_tmp) {
    rk_model *m = tiny_model();
    rk_batch b;
    fill_batch(&b, &m->cfg, 10);
    float p_ram[10], p[10];
    rk_err e = {0};
    cr_assert_eq(rk_model_predict(m, &b, p_ram, &e), RK_OK, "%s", e.msg);
    char dir[512], out[512], mj[600];
    snprintf(dir, sizeof dir, "%s/b16", tmpdir);
    cr_expect_eq(rk_model_save_codec(m, dir, NULL, 0, "bf16", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "got 'bf16'"), "%s", e.msg);
    cr_assert_eq(rk_model_save_codec(m, dir, "{\"test\": {\"auc\": 0.75}}", 0, "fp16", &e), RK_OK, "%s", e.msg);
    snprintf(out, sizeof out, "%s/b8", tmpdir);
    cr_assert_eq(rk_model_convert(dir, out, "int8", 0, &e), RK_OK, "%s", e.msg);
    const char *dirs[2] = {dir, out}, *codec[2] = {"\"codec\": \"fp16\"", "\"codec\": \"int8\""};
    for (int k = 0; k < 2; k++) {
        snprintf(mj, sizeof mj, "%s/model.json", dirs[k]);
        char *t;
        cr_assert_eq(rk_read_file(mj, &t, NULL, NULL), RK_OK);
        cr_expect(strstr(t, codec[k]), "%s lacks %s", mj, codec[k]);
        cr_expect(strstr(t, "0.75"), "%s lost the metrics", mj);
        rk_free(t);
        rk_model *m2;
        cr_assert_eq(rk_model_open(dirs[k], &m2, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(rk_model_predict(m2, &b, p, &e), RK_OK, "%s", e.msg);
        for (int i = 0; i < 10; i++) cr_expect(fabsf(p[i] - p_ram[i]) < 0.02f, "%s row %d: %g vs %g", codec[k], i, p[i], p_ram[i]);
        rk_model_destroy(m2);
    }
    cr_expect_eq(rk_model_convert(dir, out, "fp32", 0, &e), RK_EEXIST);
    rk_model_destroy(m);
    rk_batch_free(&b);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(train, bad_input_is_refused_before_training, .init = mk_tmp, .fini = rm_tmp) {
    char tr[600], va[600];
    snprintf(tr, sizeof tr, "%s/train.tsv", tmpdir);
    snprintf(va, sizeof va, "%s/valid.tsv", tmpdir);
    rk_model_cfg c = tiny_cfg();
    rk_train_io io = {tr, va, NULL, 1};
    rk_train_report rep;
    rk_model *m = NULL;
    rk_err e = {0};
    write_file(va, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t4\t\t5\t1.0\n");
    /* a bad dense value in the training file (its statistics are fitted first) */
    write_file(tr, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t3\t\t4\tabc\n");
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "train.tsv row 3, column x: expected a finite number within +-1e+09, got 'abc'"), "%s", e.msg);
    cr_expect_null(m);
    /* finite but beyond the bound: float tower math would overflow */
    write_file(tr, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t3\t\t4\t1e30\n");
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "got '1e30'"), "%s", e.msg);
    /* a column named twice */
    write_file(tr, "label\tu\th\ti\tx\tx\n1\t3\t\t4\t2.0\t1\n");
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 1: column 'x' appears twice (columns 5 and 6)"), "%s", e.msg);
    /* a validation file with one class: early stopping on AUC is impossible */
    write_file(tr, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t4\t\t5\t1.0\n");
    write_file(va, "label\tu\th\ti\tx\n1\t3\t\t4\t2.0\n1\t4\t\t5\t1.0\n");
    cr_expect_eq(rk_train(&c, &io, &m, &rep, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "valid.tsv: every label is 1"), "%s", e.msg);
    /* a UTF-8 byte-order mark does not hide the first column */
    write_file(va, "\xef\xbb\xbflabel\tu\th\ti\tx\n1\t3\t\t4\t2.0\n0\t4\t\t5\t1.0\n");
    rk_dataset d;
    cr_assert_eq(rk_dataset_load(va, &c, &d, &e), RK_OK, "%s", e.msg);
    cr_expect(d.has_labels);
    rk_dataset_free(&d);
    rk_model_cfg_free(&c);
}

Test(config, label_column_cannot_be_a_feature) {
    rk_model_cfg c;
    rk_err e = {0};
    cr_expect_eq(rk_model_cfg_parse("{\"features\": [{\"name\": \"label\", \"side\": \"user\", \"table_size\": 3}]}", &c, &e),
                 RK_EINVAL);
    cr_expect(strstr(e.msg, "features[0].column: 'label' is the label column"), "%s", e.msg);
}

Test(bundle, flipped_weight_byte_is_detected, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512], p[600];
    save_tiny(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/dense.safetensors", dir);
    FILE *f = fopen(p, "r+b");
    cr_assert_not_null(f);
    fseek(f, -3, SEEK_END); /* inside the last tensor's data */
    int c = fgetc(f);
    fseek(f, -3, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
    expect_open_error(dir, RK_EFORMAT, "checksum of header and data");
}

/* A save killed mid-way leaves DIR.tmp-PID / DIR.old-PID; the next save
 * removes the half-written one and puts an orphaned old bundle back. */
Test(bundle, next_save_sweeps_dead_saves, .init = mk_tmp, .fini = rm_tmp) {
    rk_model *m = tiny_model();
    rk_err e = {0};
    pid_t child = fork();
    if (child == 0) _exit(0);
    cr_assert(child > 0);
    cr_assert_eq(waitpid(child, NULL, 0), child); /* a pid that no longer exists */
    char dir[512], junk[600], other[600], live[600];
    snprintf(dir, sizeof dir, "%s/bundle", tmpdir);
    /* the previous bundle, moved aside by a save that died before its rename */
    snprintf(other, sizeof other, "%s/bundle.old-%ld", tmpdir, (long)child);
    cr_assert_eq(rk_model_save(m, other, NULL, 0, &e), RK_OK, "%s", e.msg);
    snprintf(junk, sizeof junk, "%s/bundle.tmp-%ld", tmpdir, (long)child);
    cr_assert_eq(rk_mkdir_p(junk, &e), RK_OK, "%s", e.msg);
    snprintf(live, sizeof live, "%s/bundle.tmp-%ld", tmpdir, (long)getppid()); /* a live process */
    cr_assert_eq(rk_mkdir_p(live, &e), RK_OK, "%s", e.msg);
    /* without --force the restored bundle is not overwritten */
    cr_expect_eq(rk_model_save(m, dir, NULL, 0, &e), RK_EEXIST);
    cr_expect(rk_path_exists(dir), "the orphaned old bundle was put back");
    cr_expect(!rk_path_exists(other));
    cr_expect(!rk_path_exists(junk), "half-written bundle of a dead save removed");
    cr_expect(rk_path_exists(live), "a live process's temp dir is left alone");
    rk_model *m2;
    cr_assert_eq(rk_model_open(dir, &m2, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m2);
    rk_model_destroy(m);
}

/* A request: the user's values added once for every row (rk_scorer_add_sparse_rows),
 * candidates' values per row. The scorer then pools the user's bags once and
 * computes the first layer's user-side part once (rank/model.c first_layer);
 * both must give the bits each candidate gets when scored alone. */
Test(bundle, request_with_shared_user_scores_as_rows_alone, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512];
    save_tiny(dir, sizeof dir);
    rk_model *m;
    rk_err e = {0};
    cr_assert_eq(rk_model_open(dir, &m, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(m->user_prefix, 5, "u (dim 3) and h (dim 2) come first");
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m, 16, 8, &s, &e), RK_OK, "%s", e.msg);
    const char *hist[3] = {"4", "9", "11"};
    float whole[12], alone[12];
    for (int pass = 0; pass < 2; pass++) {
        int n = pass == 0 ? 12 : 1;
        for (int r0 = 0; r0 < 12; r0 += n) {
            cr_assert_eq(rk_scorer_begin(s, n, &e), RK_OK, "%s", e.msg);
            cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 0, "u7", 2, &e), RK_OK, "%s", e.msg);
            for (int j = 0; j < 3; j++) cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 1, hist[j], strlen(hist[j]), &e), RK_OK);
            for (int r = 0; r < n; r++) {
                char v[16];
                snprintf(v, sizeof v, "%d", r0 + r);
                cr_assert_eq(rk_scorer_add_sparse(s, r, 2, v, strlen(v), &e), RK_OK, "%s", e.msg);
                cr_assert_eq(rk_scorer_set_dense(s, r, 3, (float)(r0 + r) * 0.25f - 1.0f, &e), RK_OK);
            }
            cr_assert_eq(rk_scorer_run(s, (pass == 0 ? whole : alone) + r0, NULL, NULL, &e), RK_OK, "%s", e.msg);
        }
    }
    for (int i = 0; i < 12; i++) cr_expect_eq(whole[i], alone[i], "candidate %d: %.9g in the request, %.9g alone", i, whole[i], alone[i]);
    rk_scorer_destroy(s);
    rk_model_destroy(m);
}

/* A user-side feature whose values first go to every row (staged once, as
 * row 0's) and then to some rows only (rk_scorer_add_sparse, or
 * add_sparse_rows over part of the batch): each row's bag must hold its
 * values in the order they were added, with max_values (h: 4) counted per
 * row, i.e. the bits each candidate gets when scored alone. The user ids'
 * bag (u, sum) starts with rows of +1e7 and -1e7 (set_order_rows): summed
 * in any other order its small values are lost. */
static const char *UIDS[5] = {"u7", "u12", "u17", "u22", "u27"};

static void set_order_rows(rk_model *m) {
    uint64_t big = rk_feature_row("u", UIDS[0], 2, 13), neg = rk_feature_row("u", UIDS[1], 3, 13);
    cr_assert_neq(big, neg);
    for (int j = 0; j < 3; j++) m->tables[0][big * 3 + j] = 1e7f, m->tables[0][neg * 3 + j] = -1e7f;
}

static void add_mixed(rk_scorer *s, int n, int r0) {
    rk_err e = {0};
    const char *lo[3] = {"4", "9", "5"}, *hi[2] = {"11", "2"};
    for (int j = 0; j < 5; j++)
        cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 0, UIDS[j], strlen(UIDS[j]), &e), RK_OK, "%s", e.msg);
    for (int j = 0; j < 3; j++) cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 1, lo[j], 1, &e), RK_OK, "%s", e.msg);
    for (int r = 0; r < n; r++) {
        char v[16];
        int row = r0 + r;
        snprintf(v, sizeof v, "%d", row);
        if (row % 3 == 0) cr_assert_eq(rk_scorer_add_sparse(s, r, 1, v, strlen(v), &e), RK_OK, "%s", e.msg);
        cr_assert_eq(rk_scorer_add_sparse(s, r, 2, v, strlen(v), &e), RK_OK, "%s", e.msg);
        cr_assert_eq(rk_scorer_set_dense(s, r, 3, (float)row * 0.25f - 1.0f, &e), RK_OK);
    }
    /* rows 2..4 of the whole request get a second user id */
    int a = r0 > 2 ? r0 : 2, b = r0 + n < 5 ? r0 + n : 5;
    if (a < b) cr_assert_eq(rk_scorer_add_sparse_rows(s, a - r0, b - r0, 0, "u8", 2, &e), RK_OK, "%s", e.msg);
    for (int j = 0; j < 2; j++) /* max_values 4: rows r % 3 == 0 keep neither, the others "11" */
        cr_assert_eq(rk_scorer_add_sparse_rows(s, 0, n, 1, hi[j], strlen(hi[j]), &e), RK_OK, "%s", e.msg);
}

Test(bundle, shared_values_then_per_row_values_score_as_rows_alone, .init = mk_tmp, .fini = rm_tmp) {
    char dir[512];
    rk_model *m = tiny_model();
    rk_err e = {0};
    set_order_rows(m);
    snprintf(dir, sizeof dir, "%s/b", tmpdir);
    cr_assert_eq(rk_model_save(m, dir, NULL, 0, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
    cr_assert_eq(rk_model_open(dir, &m, &e), RK_OK, "%s", e.msg);
    rk_scorer *s;
    cr_assert_eq(rk_scorer_create(m, 16, 8, &s, &e), RK_OK, "%s", e.msg);
    float whole[12], alone[12];
    for (int pass = 0; pass < 2; pass++) {
        int n = pass == 0 ? 12 : 1;
        for (int r0 = 0; r0 < 12; r0 += n) {
            cr_assert_eq(rk_scorer_begin(s, n, &e), RK_OK, "%s", e.msg);
            add_mixed(s, n, r0);
            cr_assert_eq(rk_scorer_run(s, (pass == 0 ? whole : alone) + r0, NULL, NULL, &e), RK_OK, "%s", e.msg);
        }
    }
    for (int i = 0; i < 12; i++) cr_expect_eq(whole[i], alone[i], "candidate %d: %.9g in the request, %.9g alone", i, whole[i], alone[i]);
    rk_scorer_destroy(s);
    rk_model_destroy(m);
}

/* No fixed caps: a config of 1,200 features, 12 hidden layers, 10 cross
 * layers and an ensemble of 12 members parses (rankd refused more than 32
 * features, 8 layers and 8 members before), names resolve through the hash
 * index, a copy is deep (freeing the original leaves it intact) and a
 * repeated name among many is still named. */
Test(config, no_fixed_caps) {
    size_t cap = 1 << 20, n = 0;
    char *j = malloc(cap);
    n += (size_t)snprintf(j + n, cap - n, "{\"features\": [");
    for (int i = 0; i < 1200; i++)
        n += (size_t)snprintf(j + n, cap - n, "%s{\"name\": \"f%d\", \"side\": \"%s\", %s}", i ? "," : "", i,
                              i % 2 ? "item" : "user",
                              i < 1000 ? "\"table_size\": 10, \"dim\": 2, \"max_values\": 1" : "\"kind\": \"dense\"");
    n += (size_t)snprintf(j + n, cap - n, "], \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 10, \"hidden\": [");
    for (int i = 0; i < 12; i++) n += (size_t)snprintf(j + n, cap - n, "%s%d", i ? "," : "", 4 + i);
    n += (size_t)snprintf(j + n, cap - n, "]}, \"ensemble\": {\"members\": [");
    for (int i = 0; i < 12; i++)
        n += (size_t)snprintf(j + n, cap - n, "%s{\"name\": \"m%d\", \"tower\": {\"type\": \"dnn\", \"hidden\": [3]}}", i ? "," : "", i);
    snprintf(j + n, cap - n, "]}}");
    rk_model_cfg c, d;
    rk_err e = {0};
    cr_assert_eq(rk_model_cfg_parse(j, &c, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(c.n_features, 1200);
    cr_expect_eq(c.tower.n_hidden, 12);
    cr_expect_eq(c.tower.hidden[11], 15);
    cr_expect_eq(c.tower.n_cross, 10);
    cr_expect_eq(c.n_members, 12);
    cr_expect_eq(rk_model_cfg_find(&c, "f1199"), 1199);
    cr_expect_eq(rk_model_cfg_find(&c, "f1200"), -1);
    cr_expect_eq(rk_model_cfg_input_dim(&c), 1000 * 2 + 200);
    cr_assert_eq(rk_model_cfg_copy(&d, &c, &e), RK_OK, "%s", e.msg);
    rk_model_cfg_free(&c);
    cr_expect_eq(rk_model_cfg_find(&d, "f640"), 640);
    cr_expect_str_eq(d.features[640].name, "f640");
    cr_expect_eq(d.members[11].tower.hidden[0], 3);
    rk_model_cfg m11;
    cr_assert_eq(rk_member_cfg_derive(&d, 11, &m11, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(m11.n_members, 0);
    cr_expect_eq(m11.tower.n_hidden, 1);
    cr_expect_eq(rk_model_cfg_find(&m11, "f999"), 999);
    rk_model_cfg_free(&m11);
    rk_model_cfg_free(&d);
    /* a repeat far down the list */
    char *r = strstr(j, "\"f1100\"");
    memcpy(r, "\"f1\"   ", 7); /* JSON whitespace pads the shorter name */
    cr_assert_eq(rk_model_cfg_parse(j, &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "features[1100].name: 'f1' repeats features[1]"), "%s", e.msg);
    free(j);
}

/* The size fields have documented ranges (rank.h, README "Limits that
 * remain"): an absurd value is a range error naming the field, not an
 * allocation failing at training (cross_layers 1000000 was "out of
 * memory"). */
static rk_status parse_sized(const char *feats, const char *tower, const char *extra, rk_err *e) {
    char j[4096];
    snprintf(j, sizeof j, "{\"features\": [%s], \"tower\": %s%s}", feats, tower, extra);
    rk_model_cfg c;
    rk_status s = rk_model_cfg_parse(j, &c, e);
    if (s == RK_OK) rk_model_cfg_free(&c);
    return s;
}

Test(config, size_fields_have_ranges) {
    const char *two = "{\"name\": \"a\", \"side\": \"user\", \"table_size\": 10, \"dim\": 2},"
                      " {\"name\": \"b\", \"side\": \"item\", \"table_size\": 10, \"dim\": 2}";
    rk_err e = {0};
    cr_expect_eq(parse_sized(two, "{\"cross_layers\": 1000000}", "", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower.cross_layers: 1e+06 outside [0, 64]"), "%s", e.msg);
    cr_expect_eq(parse_sized(two, "{\"cross_layers\": 2.5}", "", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower.cross_layers: expected an integer"), "%s", e.msg);
    cr_expect_eq(parse_sized(two, "{\"cross_layers\": 64, \"hidden\": [4]}", "", &e), RK_OK, "%s", e.msg);
    char h[1024] = "{\"type\": \"dnn\", \"hidden\": [1";
    for (int i = 1; i < 65; i++) strcat(h, ",1");
    strcat(h, "]}");
    cr_expect_eq(parse_sized(two, h, "", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower.hidden: 65 layers, at most 64"), "%s", e.msg);
    /* the MLP's weights: 4 inputs, then four 8192 x 8192 layers = 2.7e8 > 2^28; the first of the largest is named */
    cr_expect_eq(parse_sized(two, "{\"type\": \"dnn\", \"hidden\": [8192, 8192, 8192, 8192, 8192]}", "", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower.hidden[1]: the MLP's 2.69e+08 weights (4 inputs) exceed a tower's 2.68e+08"), "%s", e.msg);
    cr_expect_eq(parse_sized(two, "{\"type\": \"dnn\", \"hidden\": [8192, 8192, 8192, 8192]}", "", &e), RK_OK, "%s", e.msg);
    /* cross layers are D x D: 64 features of dim 1024 = D 65,536, one layer = 4.3e9 weights */
    char wide[8192] = "";
    for (int i = 0; i < 64; i++)
        snprintf(wide + strlen(wide), sizeof wide - strlen(wide), "%s{\"name\": \"f%d\", \"side\": \"user\", \"table_size\": 4, \"dim\": 1024}",
                 i ? "," : "", i);
    cr_expect_eq(parse_sized(wide, "{\"cross_layers\": 1, \"hidden\": [4]}", "", &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "tower.cross_layers: 1 cross layers over 65536 inputs are 4.3e+09 weights"), "%s", e.msg);
    cr_expect_eq(parse_sized(wide, "{\"type\": \"dnn\", \"hidden\": [64]}", "", &e), RK_OK, "%s", e.msg);
    /* an ensemble member's tower is checked with the member's own dims */
    cr_expect_eq(parse_sized(two, "{\"type\": \"dnn\", \"hidden\": [4]}",
                             ", \"ensemble\": {\"members\": [{\"name\": \"m\", \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1}, \"dim\": 1024}]}", &e),
                 RK_OK, "%s", e.msg);
    char ms[4096] = ", \"ensemble\": {\"members\": [";
    for (int i = 0; i < 65; i++)
        snprintf(ms + strlen(ms), sizeof ms - strlen(ms), "%s{\"name\": \"m%d\", \"tower\": {\"type\": \"dnn\", \"hidden\": [2]}}", i ? "," : "", i);
    strcat(ms, "]}");
    cr_expect_eq(parse_sized(two, "{\"type\": \"dnn\", \"hidden\": [4]}", ms, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "ensemble.members: 65 members, at most 64"), "%s", e.msg);
    cr_expect_eq(parse_sized("{\"name\": \"a\", \"side\": \"user\", \"table_size\": 4294967297}", "{\"type\": \"dnn\", \"hidden\": [4]}", "", &e),
                 RK_EINVAL);
    cr_expect(strstr(e.msg, "features[0].table_size: 4.29497e+09 outside [1, 4.29497e+09]"), "%s", e.msg);
    cr_expect_eq(parse_sized("{\"name\": \"a\", \"side\": \"user\", \"table_size\": 4294967296, \"dim\": 1}", "{\"type\": \"dnn\", \"hidden\": [4]}", "", &e),
                 RK_OK, "%s", e.msg);
}

/* ---------------------------------------------------------------- regularization */

static const char *REG_CFG =
    "{\"features\": [{\"name\": \"u\", \"side\": \"user\", \"table_size\": 50, \"dim\": 4},"
    " {\"name\": \"i\", \"side\": \"item\", \"table_size\": 50, \"dim\": 4},"
    " {\"name\": \"x\", \"kind\": \"dense\", \"side\": \"item\"}],"
    " \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1, \"hidden\": [3]},"
    " \"train\": {\"seed\": 4, \"lr_dense\": 0.01, \"lr_embed\": 0.1, \"l2_embed\": 0.5, \"l2_dense\": 0.2,"
    "            \"init_std_embed\": 0.3, \"threads\": 1%s}}";

static rk_model *reg_model(const char *extra, rk_batch *b) {
    char j[2048];
    snprintf(j, sizeof j, REG_CFG, extra);
    rk_model_cfg c;
    rk_err e = {0};
    cr_assert_eq(rk_model_cfg_parse(j, &c, &e), RK_OK, "%s", e.msg);
    rk_model *m;
    cr_assert_eq(rk_model_create(&c, &m, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_batch_alloc(b, &c, 2, 4, &e), RK_OK);
    b->n_rows = 2;
    uint64_t u[2] = {3, 7}, it[2] = {5, 5};
    for (int r = 0; r < 2; r++) {
        b->rows[0][r] = u[r];
        b->offsets[0][r + 1] = (uint32_t)r + 1;
        b->rows[1][r] = it[r];
        b->offsets[1][r + 1] = (uint32_t)r + 1;
        b->dense[r * 3 + 2] = 0.5f - (float)r;
        b->labels[r] = (float)r;
    }
    rk_model_cfg_free(&c);
    return m;
}

/* L2 by hand: with a zero loss gradient (dlogit = 0), one optimizer step
 * sees only the L2 gradients g = lambda w. Adagrad's first step on a touched
 * embedding row: w - lr g / (|g| + eps); Adam's first step on a weight:
 * w - lr g / (|g| + eps) (bias corrections cancel). Untouched rows and the
 * biases do not move: the decay is sparse and on weights only. Fails
 * before train.l2_embed / l2_dense existed (they were unknown keys). */
Test(regularization, l2_first_step_by_hand) {
    rk_batch b;
    rk_model *m = reg_model("", &b);
    size_t nf = m->n_floats, nt = 50 * 4;
    float *p0 = malloc(nf * sizeof *p0), *u0 = malloc(nt * sizeof *u0), *i0 = malloc(nt * sizeof *i0);
    memcpy(p0, m->params, nf * sizeof *p0);
    memcpy(u0, m->tables[0], nt * sizeof *u0);
    memcpy(i0, m->tables[1], nt * sizeof *i0);
    rk_trainer *t;
    rk_err e = {0};
    cr_assert_eq(rk_trainer_create(m, &b, 2, &t, &e), RK_OK, "%s", e.msg);
    uint32_t idx[2] = {0, 1};
    const float *logit;
    cr_assert_eq(rk_trainer_forward(t, &b, idx, 2, &logit, NULL, NULL, &e), RK_OK, "%s", e.msg);
    float zero[2] = {0, 0};
    rk_trainer_step(t, zero, NULL);
    const double lre = 0.1, lrd = 0.01;
    for (int r = 0; r < 50; r++)
        for (int k = 0; k < 4; k++) {
            double w = u0[r * 4 + k], g = 0.5 * w;
            double want = (r == 3 || r == 7) ? w - lre * g / (fabs(g) + 1e-10) : w;
            cr_expect(fabs(m->tables[0][r * 4 + k] - want) <= 1e-6, "u row %d[%d]: %.7g vs %.7g", r, k, m->tables[0][r * 4 + k], want);
            w = i0[r * 4 + k], g = 0.5 * w;
            want = r == 5 ? w - lre * g / (fabs(g) + 1e-10) : w;
            cr_expect(fabs(m->tables[1][r * 4 + k] - want) <= 1e-6, "i row %d[%d]", r, k);
        }
    int checked = 0;
    for (int p = 0; p < m->n_params; p++)
        for (size_t k = 0; k < m->pd[p].n; k++) {
            double w = p0[m->pd[p].off + k], g = m->pd[p].ndim == 2 ? 0.2 * w : 0.0;
            double want = w - lrd * g / (fabs(g) + 1e-8);
            cr_expect(fabs(m->params[m->pd[p].off + k] - want) <= 1e-6, "%s[%zu]: %.7g vs %.7g", m->pd[p].name, k,
                      m->params[m->pd[p].off + k], want);
            checked++;
        }
    cr_expect_gt(checked, 30);
    rk_trainer_destroy(t);
    rk_model_destroy(m);
    rk_batch_free(&b);
    free(p0);
    free(u0);
    free(i0);
}

/* Dropout: while training each hidden unit is 0 or relu(z) / (1 - p)
 * (checked against the same forward without dropout), about p of them are
 * dropped, and the backward matches finite differences of the loss for the
 * same mask (the RNG replayed); scoring (rk_model_predict) is unchanged. */
Test(regularization, dropout_forward_and_gradient) {
    rk_batch b;
    rk_model *m = reg_model(", \"dropout\": 0.5", &b);
    rk_err e = {0};
    rk_work w, w0;
    cr_assert_eq(rk_work_init(&w, m, 2, 1, &e), RK_OK);
    cr_assert_eq(rk_work_init(&w0, m, 2, 0, &e), RK_OK);
    cr_assert_eq(rk_model_fill_x0(m, &b, &w, NULL, &e), RK_OK);
    cr_assert_eq(rk_model_fill_x0(m, &b, &w0, NULL, &e), RK_OK);
    rk_model_forward(m, &w0, 2);
    w.dropout = 0.5f;
    int dropped = 0, kept = 0;
    for (int rep = 0; rep < 200; rep++) {
        rk_rng_seed(&w.drop_rng, (uint64_t)rep);
        rk_model_forward(m, &w, 2);
        for (int k = 0; k < 6; k++) {
            float a = w.act[0][k], a0 = w0.act[0][k];
            if (a0 == 0) continue;
            if (a == 0) dropped++;
            else {
                kept++;
                cr_expect(fabsf(a - 2 * a0) <= 1e-6f * fabsf(a0) + 1e-7f, "kept unit %d: %g vs 2 x %g", k, a, a0);
            }
        }
    }
    cr_expect(dropped > 0.4 * (dropped + kept) && dropped < 0.6 * (dropped + kept), "dropped %d of %d", dropped, dropped + kept);
    /* gradient of the BCE for one fixed mask vs central differences on the first weight of mlp.0 */
    rk_rng_seed(&w.drop_rng, 99);
    rk_model_forward(m, &w, 2);
    rk_bce_logits(w.logit, b.labels, 2, w.dlogit);
    float *g = calloc(m->n_floats, sizeof *g);
    rk_rng_seed(&w.drop_rng, 99);
    rk_model_forward(m, &w, 2);
    rk_model_backward(m, &w, 2, g);
    int pi = 2 * 1; /* cross.0.weight, cross.0.bias, then mlp.0.weight */
    cr_assert_str_eq(m->pd[pi].name, "mlp.0.weight");
    for (int k = 0; k < 6; k++) {
        size_t off = m->pd[pi].off + (size_t)k;
        float keep = m->params[off];
        double L[2];
        for (int s = 0; s < 2; s++) {
            m->params[off] = keep + (s ? -1e-3f : 1e-3f);
            rk_rng_seed(&w.drop_rng, 99);
            rk_model_forward(m, &w, 2);
            float dl[2];
            L[s] = rk_bce_logits(w.logit, b.labels, 2, dl);
        }
        m->params[off] = keep;
        double num = (L[0] - L[1]) / 2e-3;
        cr_expect(fabs(num - g[off]) <= 2e-3 * fabs(num) + 2e-4, "mlp.0.weight[%d]: analytic %.6g vs numeric %.6g", k, g[off], num);
    }
    /* scoring ignores the training-time dropout */
    float p1[2], p2[2];
    cr_assert_eq(rk_model_predict(m, &b, p1, &e), RK_OK);
    cr_assert_eq(rk_model_predict(m, &b, p2, &e), RK_OK);
    for (int r = 0; r < 2; r++) cr_expect_eq(p1[r], p2[r]);
    cr_expect(fabsf(p1[0] - rk_sigmoid(w0.logit[0])) <= 1e-6f);
    free(g);
    rk_work_free(&w);
    rk_work_free(&w0);
    rk_model_destroy(m);
    rk_batch_free(&b);
}

/* ====================================================================== fault injection */

static int open_version_is(const char *dir, const char *want) {
    rk_model *m;
    rk_err e = {0};
    if (rk_model_open(dir, &m, &e) != RK_OK) return 0;
    int ok = !strcmp(rk_model_version(m), want);
    rk_model_destroy(m);
    return ok;
}

/* SQLite-style: the Nth allocation, or the Nth file write (ENOSPC, then
 * EIO), fails, for every N from 1 until the operation completes (N past
 * 64 sampled): a bundle save over a published bundle, opening it (rankd's
 * start-up) and training. Every run ends in a clean error or a correct
 * result; the published bundle stays openable, old or new, never half. */
Test(faults, nth_alloc_and_write_in_save_open_and_train, .init = mk_tmp, .fini = rm_tmp, .timeout = 300) {
    rk_model *m1 = tiny_model();
    rk_model_cfg c2 = tiny_cfg();
    snprintf(c2.version, sizeof c2.version, "t2");
    rk_model *m2;
    rk_err e = {0};
    cr_assert_eq(rk_model_create(&c2, &m2, &e), RK_OK, "%s", e.msg);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bundle", tmpdir);
    cr_assert_eq(rk_model_save(m1, dir, NULL, 0, &e), RK_OK, "%s", e.msg);
    long runs = 0, failed = 0;
    for (int kind = 0; kind < 3; kind++) { /* allocation, write ENOSPC, write EIO */
        int done = 0;
        for (long n = 1; n <= 4000 && !done; n += n < 64 ? 1 : n / 8) {
            if (kind == 0) rk_alloc_fail_after(n);
            else rk_write_fail_after(n, kind == 1 ? ENOSPC : EIO);
            rk_status st = rk_model_save(m2, dir, NULL, 1, &e);
            rk_alloc_fail_after(0);
            rk_write_fail_after(0, 0);
            runs++;
            if (st == RK_OK) {
                cr_assert(open_version_is(dir, "tiny/t2"), "kind %d n %ld: saved but not the new bundle", kind, n);
                cr_assert_eq(rk_model_save(m1, dir, NULL, 1, &e), RK_OK, "%s", e.msg); /* back to t1 */
                done = 1;
                continue;
            }
            failed++;
            cr_assert(e.msg[0], "kind %d n %ld: failed without a message", kind, n);
            cr_assert(open_version_is(dir, "tiny/t1"), "kind %d n %ld: the published bundle was damaged (%s)", kind, n,
                      e.msg);
        }
        cr_assert(done, "kind %d: the save never completed", kind);
    }
    /* opening (rankd's start-up) */
    int opened = 0;
    for (long n = 1; n <= 4000 && !opened; n += n < 64 ? 1 : n / 8) {
        rk_model *m;
        rk_alloc_fail_after(n);
        rk_status st = rk_model_open(dir, &m, &e);
        rk_alloc_fail_after(0);
        runs++;
        if (st == RK_OK) {
            cr_assert_str_eq(rk_model_version(m), "tiny/t1");
            rk_model_destroy(m);
            opened = 1;
        } else {
            failed++;
            cr_assert(e.msg[0], "open n %ld: failed without a message", n);
        }
    }
    cr_assert(opened);
    /* training */
    char tr[600];
    snprintf(tr, sizeof tr, "%s/train.tsv", tmpdir);
    write_planted(tr, 300, 1);
    rk_model_cfg c = tiny_cfg();
    c.train.max_epochs = 1;
    rk_train_io io = {tr, tr, NULL, 1};
    int trained = 0;
    for (long n = 1; n <= 100000 && !trained; n += n < 32 ? 1 : n / 4) {
        rk_model *m;
        rk_train_report r;
        rk_alloc_fail_after(n);
        rk_status st = rk_train(&c, &io, &m, &r, &e);
        rk_alloc_fail_after(0);
        runs++;
        if (st == RK_OK) {
            rk_model_destroy(m);
            trained = 1;
        } else {
            failed++;
            cr_assert(e.msg[0], "train n %ld: failed without a message", n);
        }
    }
    cr_assert(trained);
    fprintf(stderr, "[faults] %ld runs, %ld ended in a clean error, the rest completed\n", runs, failed);
    rk_model_destroy(m1);
    rk_model_destroy(m2);
    rk_model_cfg_free(&c2);
    rk_model_cfg_free(&c);
}

/* pCTR of one candidate (item value ad) for user "u7" of the tiny model. */
static float score_tiny(rk_model *m, const char *ad) {
    rk_scorer *s;
    rk_err e = {0};
    float p = 0;
    cr_assert_eq(rk_scorer_create(m, 1, 8, &s, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_begin(s, 1, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_add_sparse(s, 0, 0, "u7", 2, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_add_sparse(s, 0, 2, ad, strlen(ad), &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_scorer_set_dense(s, 0, 3, 0.5f, &e), RK_OK);
    cr_assert_eq(rk_scorer_run(s, &p, NULL, NULL, &e), RK_OK, "%s", e.msg);
    rk_scorer_destroy(s);
    return p;
}

typedef struct {
    rk_model *m;
    uint64_t row;
    float vals[3];
    rk_status st;
    atomic_int done;
} update_job;

static void *apply_update_thread(void *arg) {
    update_job *j = arg;
    rk_err e = {0};
    j->st = rk_model_apply_updates(j->m, NULL, "i", &j->row, 1, j->vals, 3, &e);
    atomic_store(&j->done, 1);
    return NULL;
}

/* An online update of a model serving from RAM tables does not wait for a
 * scoring thread that holds the RAM tables' lock (rankd applies updates on
 * a background-priority thread: had it to take the lock, a worker could
 * wait on it while it is starved): rk_model_apply_updates returns while a
 * reader holds the lock, the next score sees the row, and a fresh open
 * from RocksDB scores it bit for bit the same. */
Test(bundle, ram_table_update_does_not_wait_for_scoring, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    char dir[512];
    save_tiny(dir, sizeof dir);
    rk_model *m;
    rk_err e = {0};
    size_t bytes = 0;
    cr_assert_eq(rk_model_open_ex(dir, 1, &m, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_tables_to_ram(m, 1 << 20, &bytes, &e), RK_OK, "%s", e.msg);
    cr_assert_gt(bytes, 0);
    float before = score_tiny(m, "5"), other = score_tiny(m, "6");
    cr_assert_neq(rk_feature_row("i", "6", 1, 17), rk_feature_row("i", "5", 1, 17));
    update_job j = {.m = m, .row = rk_feature_row("i", "5", 1, 17), .vals = {0.5f, -0.25f, 0.125f}};
    atomic_init(&j.done, 0);
    pthread_t t;
    pthread_rwlock_rdlock(&m->ram_mu); /* a scorer pooling right now */
    cr_assert_eq(pthread_create(&t, NULL, apply_update_thread, &j), 0);
    for (int i = 0; i < 1000 && !atomic_load(&j.done); i++) usleep(5000);
    int done_while_read = atomic_load(&j.done);
    pthread_rwlock_unlock(&m->ram_mu);
    pthread_join(t, NULL);
    cr_assert(done_while_read, "the update waited for a reader of the RAM tables");
    cr_assert_eq(j.st, RK_OK);
    float after = score_tiny(m, "5");
    cr_assert_neq(after, before, "the update is not served");
    cr_assert_eq(score_tiny(m, "6"), other, "another row changed");
    rk_model_destroy(m);
    cr_assert_eq(rk_model_open(dir, &m, &e), RK_OK, "%s", e.msg); /* read-only, from RocksDB */
    float again = score_tiny(m, "5");
    cr_assert_eq(again, after, "from RocksDB %.9g, served from RAM %.9g", again, after);
    rk_model_destroy(m);
}
