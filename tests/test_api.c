/*
 * tests/test_api.c — librankd's public C API (include/rank.h), linked
 * against librankd.so only: nothing here can reach a module header or an
 * internal symbol, as a user's program could not.
 *
 * Once per run (PRE_ALL, before the workers fork) the real `rank` binary
 * converts the bundled MovieLens, trains a DCNv2 bundle and a three-member
 * CETNet bundle for one epoch each, writes multi.tsv (60 users x 50
 * candidates from the test split) and scores it with `rank score` (--towers
 * for the ensemble): the offline references. Scores
 * through rank.h must equal them within 1e-6 (OpenBLAS sums a batch of
 * another size in another order, ~1e-7), with the user's features set once
 * per request of many candidates; every misuse gets its status and a
 * message naming the feature or candidate.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rank.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif
#ifndef RK_BINARY_DIR
#define RK_BINARY_DIR "."
#endif
#define BIN RK_BINARY_DIR "/bin/"
#define TOL 1e-6
#define NROWS 3000 /* rows of multi.tsv (MULTI_G * MULTI_K) */
#define MAXCOL 32
#define MAXK 100   /* candidates per request, as rank query groups them */

static int run(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static char prep_dir[256];

/* multi.tsv: MULTI_G requests of MULTI_K candidates: the rows after test
 * row g * 37, each with that row's user-side cells (sides from the model),
 * so a many-candidate request has an exact offline reference. */
#define MULTI_G 60
#define MULTI_K 50
static int write_multi(const char *d);

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    char tmpl[] = "/tmp/rk_api_XXXXXX";
    const char *d = mkdtemp(tmpl);
    if (!d) return;
    snprintf(prep_dir, sizeof prep_dir, "%s", d);
    int bad = run(BIN "rank data movielens --input " RK_SOURCE_DIR "/data/movielens --out %s/ml >%s/prep.log 2>&1", d, d) ||
              run(BIN "rank train --config " RK_SOURCE_DIR "/configs/movielens_dcnv2.json --data %s/ml --out %s/dcn "
                      "--epochs 1 >>%s/prep.log 2>&1", d, d, d) ||
              write_multi(d) ||
              run(BIN "rank score --model %s/dcn --input %s/multi.tsv --output %s/dcn.tsv >>%s/prep.log 2>&1", d, d, d, d) ||
              run(BIN "rank train --config " RK_SOURCE_DIR "/configs/movielens_cetnet.json --data %s/ml --out %s/cet "
                      "--epochs 1 >>%s/prep.log 2>&1", d, d, d) ||
              run(BIN "rank score --model %s/cet --towers --input %s/multi.tsv --output %s/cet.tsv >>%s/prep.log 2>&1",
                  d, d, d, d);
    if (!bad) setenv("RK_API_DIR", d, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    (void)stats;
    if (prep_dir[0] && !getenv("RK_API_KEEP")) run("rm -rf '%s'", prep_dir);
}

static const char *dir(void) {
    const char *d = getenv("RK_API_DIR");
    cr_assert(d, "preparation failed (rank data/train/score): see %s/prep.log", prep_dir);
    return d;
}

/* ------------------------------------------------------------------ TSV */

typedef struct {
    int n_rows, n_cols;
    char *hdr[MAXCOL];
    char **cell; /* [n_rows * n_cols], pointers into buf */
    char *buf;
} tsv;

/* First max_rows data rows of path (all columns as strings). */
static void tsv_read(const char *path, int max_rows, tsv *t) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->buf = malloc((size_t)n + 1);
    cr_assert(fread(t->buf, 1, (size_t)n, f) == (size_t)n);
    t->buf[n] = 0;
    fclose(f);
    char *line = t->buf, *nl = strchr(line, '\n');
    cr_assert(nl);
    *nl = 0;
    t->n_cols = 0;
    for (char *p = line; p; t->n_cols++) {
        t->hdr[t->n_cols] = p;
        if ((p = strchr(p, '\t'))) *p++ = 0;
    }
    t->cell = calloc((size_t)max_rows * (size_t)t->n_cols, sizeof *t->cell);
    t->n_rows = 0;
    for (line = nl + 1; *line && t->n_rows < max_rows; line = nl + 1) {
        nl = strchr(line, '\n');
        cr_assert(nl, "%s: last line without newline", path);
        *nl = 0;
        char *p = line;
        for (int c = 0; c < t->n_cols; c++) {
            cr_assert(p, "%s: short row %d", path, t->n_rows + 2);
            t->cell[(size_t)t->n_rows * t->n_cols + c] = p;
            if ((p = strchr(p, '\t'))) *p++ = 0;
        }
        t->n_rows++;
    }
}

static void tsv_free(tsv *t) {
    free(t->cell);
    free(t->buf);
}

static const char *at(const tsv *t, int r, int c) { return t->cell[(size_t)r * t->n_cols + c]; }

static int col(const tsv *t, const char *name) {
    for (int c = 0; c < t->n_cols; c++)
        if (!strcmp(t->hdr[c], name)) return c;
    return -1;
}

/* The body of multi.tsv (see PRE_ALL); 0 on success. */
static int write_multi(const char *d) {
    char p[512];
    snprintf(p, sizeof p, "%s/ml/test.tsv", d);
    tsv t;
    tsv_read(p, MULTI_G * 37 + MULTI_K + 1, &t);
    snprintf(p, sizeof p, "%s/dcn", d);
    rankd_model *m;
    rankd_error e;
    if (rankd_model_open(p, NULL, &m, &e)) return 1;
    int user[MAXCOL];
    for (int c = 0; c < t.n_cols; c++) {
        int f = rankd_model_find_feature(m, t.hdr[c]);
        user[c] = f >= 0 && rankd_feature_side(m, f) == RANKD_SIDE_USER;
    }
    rankd_model_close(m);
    snprintf(p, sizeof p, "%s/multi.tsv", d);
    FILE *o = fopen(p, "w");
    if (!o) return 1;
    for (int c = 0; c < t.n_cols; c++) fprintf(o, "%s%s", c ? "\t" : "", t.hdr[c]);
    fprintf(o, "\n");
    for (int g = 0; g < MULTI_G; g++)
        for (int k = 1; k <= MULTI_K; k++) {
            int u = g * 37, r = u + k;
            for (int c = 0; c < t.n_cols; c++) fprintf(o, "%s%s", c ? "\t" : "", at(&t, user[c] ? u : r, c));
            fprintf(o, "\n");
        }
    tsv_free(&t);
    return fclose(o) != 0;
}

/* ------------------------------------------------------------------ requests */

/* Set feature f of the model from row r's cell into the batch, for the user
 * (cand < 0) or candidate cand. "" leaves it unset. */
static rankd_status set_cell(rankd_model *m, rankd_batch *b, int f, int cand, const char *v, rankd_error *e) {
    const char *name = rankd_feature_name(m, f);
    if (!*v) return RANKD_OK;
    if (rankd_feature_kind(m, f) == RANKD_KIND_DENSE)
        return cand < 0 ? rankd_batch_user_dense(b, name, atof(v), e) : rankd_batch_candidate_dense(b, cand, name, atof(v), e);
    char tmp[2048];
    const char *vals[64];
    size_t n = 0;
    snprintf(tmp, sizeof tmp, "%s", v);
    for (char *p = tmp; p && n < 64; n++) {
        vals[n] = p;
        if ((p = strchr(p, '|'))) *p++ = 0;
    }
    return cand < 0 ? rankd_batch_user_sparse(b, name, vals, n, e) : rankd_batch_candidate_sparse(b, cand, name, vals, n, e);
}

/* Score rows [r0, r1) of t as one request: the user from row r0, a candidate
 * per row. */
static void score_rows(rankd_model *m, rankd_batch *b, const tsv *t, int r0, int r1, float *pctr) {
    rankd_error e;
    cr_assert_eq(rankd_batch_begin(b, r1 - r0, &e), RANKD_OK, "%s", e.message);
    for (int f = 0; f < rankd_model_n_features(m); f++) {
        int c = col(t, rankd_feature_name(m, f));
        cr_assert(c >= 0, "no column %s", rankd_feature_name(m, f));
        if (rankd_feature_side(m, f) == RANKD_SIDE_USER) {
            cr_assert_eq(set_cell(m, b, f, -1, at(t, r0, c), &e), RANKD_OK, "%s", e.message);
            continue;
        }
        for (int r = r0; r < r1; r++)
            cr_assert_eq(set_cell(m, b, f, r - r0, at(t, r, c), &e), RANKD_OK, "%s", e.message);
    }
    cr_assert_eq(rankd_batch_score(b, pctr, &e), RANKD_OK, "%s", e.message);
    cr_assert_eq(e.code, RANKD_OK);
    cr_assert_str_empty(e.message);
}

/* End of the request starting at r0: consecutive rows with the same user
 * cells, at most MAXK. */
static int group_end(rankd_model *m, const tsv *t, int r0) {
    int r1 = r0 + 1;
    for (; r1 < t->n_rows && r1 - r0 < MAXK; r1++) {
        int same = 1;
        for (int f = 0; f < rankd_model_n_features(m) && same; f++) {
            int c = col(t, rankd_feature_name(m, f));
            same = rankd_feature_side(m, f) != RANKD_SIDE_USER || !strcmp(at(t, r1, c), at(t, r0, c));
        }
        if (!same) break;
    }
    return r1;
}

/* Offline scores: column 0 (pctr) and, with towers, member k's pctr at
 * 1 + 2k and weight at 2 + 2k. */
static double ref_at(const tsv *ref, int r, int c) { return atof(at(ref, r, c)); }

static rankd_model *open_ok(const char *name, const rankd_options *o) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir(), name);
    rankd_model *m = NULL;
    rankd_error e;
    cr_assert_eq(rankd_model_open(path, o, &m, &e), RANKD_OK, "%s", e.message);
    cr_assert(m);
    return m;
}

static void load(const char *name, tsv *t, tsv *ref) {
    char p[512];
    snprintf(p, sizeof p, "%s/multi.tsv", dir());
    tsv_read(p, NROWS, t);
    snprintf(p, sizeof p, "%s/%s.tsv", dir(), name);
    tsv_read(p, NROWS, ref);
    cr_assert_eq(t->n_rows, NROWS);
    cr_assert_eq(ref->n_rows, NROWS);
}

static void finish(rankd_model *m, rankd_batch *b, tsv *t, tsv *ref) {
    rankd_batch_destroy(b);
    rankd_model_close(m);
    tsv_free(t);
    tsv_free(ref);
}

/* ------------------------------------------------------------------ tests */

Test(api, version) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", RANKD_VERSION_MAJOR, RANKD_VERSION_MINOR, RANKD_VERSION_PATCH);
    cr_assert_str_eq(RANKD_VERSION, want);
    cr_assert_str_eq(rankd_version(), RANKD_VERSION);
    cr_assert_eq(rankd_version_num(), RANKD_VERSION_NUM);
    cr_assert_eq(RANKD_VERSION_NUM, (RANKD_VERSION_MAJOR << 16) | (RANKD_VERSION_MINOR << 8) | RANKD_VERSION_PATCH);
}

Test(api, status_str) {
    cr_assert_str_eq(rankd_status_str(RANKD_OK), "ok");
    cr_assert_str_eq(rankd_status_str(RANKD_EINVAL), "invalid argument");
    cr_assert_str_eq(rankd_status_str(RANKD_ENOTFOUND), "not found");
    cr_assert_str_eq(rankd_status_str(RANKD_ETOOBIG), "resource exhausted");
    cr_assert_str_eq(rankd_status_str(RANKD_ENUMERIC), "non-finite number");
    cr_assert_str_eq(rankd_status_str(RANKD_ECANCELED), "cancelled");
    cr_assert(rankd_status_str((rankd_status)-999) != NULL);
}

Test(api, open_errors) {
    rankd_model *m = (rankd_model *)&m;
    rankd_error e;
    rankd_status st = rankd_model_open("/nonexistent/rk_api_bundle", NULL, &m, &e);
    cr_assert_neq(st, RANKD_OK);
    cr_assert_eq(e.code, st);
    cr_assert_null(m);
    cr_assert(strstr(e.message, "/nonexistent/rk_api_bundle"), "message does not name the bundle: %s", e.message);
    cr_assert_eq(rankd_model_open("", NULL, &m, &e), RANKD_EINVAL);
    cr_assert_str_eq(e.message, "model open: no bundle directory given");
    cr_assert_eq(rankd_model_open("x", NULL, NULL, NULL), RANKD_EINVAL); /* err may be NULL */
    rankd_model_close(NULL);
    rankd_batch_destroy(NULL);
    rankd_options_destroy(NULL);
}

Test(api, describe) {
    static const struct { const char *name; rankd_side side; rankd_kind kind; int dim; } want[] = {
        {"user_id", RANKD_SIDE_USER, RANKD_KIND_SPARSE, 16},     {"hour", RANKD_SIDE_USER, RANKD_KIND_SPARSE, 16},
        {"weekday", RANKD_SIDE_USER, RANKD_KIND_SPARSE, 16},     {"history", RANKD_SIDE_USER, RANKD_KIND_SPARSE, 16},
        {"movie_id", RANKD_SIDE_CANDIDATE, RANKD_KIND_SPARSE, 16}, {"genres", RANKD_SIDE_CANDIDATE, RANKD_KIND_SPARSE, 16},
        {"year", RANKD_SIDE_CANDIDATE, RANKD_KIND_DENSE, 1},
    };
    rankd_model *m = open_ok("dcn", NULL);
    cr_assert_eq(rankd_model_n_features(m), 7);
    for (int i = 0; i < 7; i++) {
        cr_assert_str_eq(rankd_feature_name(m, i), want[i].name);
        cr_assert_eq(rankd_feature_side(m, i), want[i].side, "%s", want[i].name);
        cr_assert_eq(rankd_feature_kind(m, i), want[i].kind, "%s", want[i].name);
        cr_assert_eq(rankd_feature_dim(m, i), want[i].dim, "%s", want[i].name);
        cr_assert_eq(rankd_model_find_feature(m, want[i].name), i);
    }
    cr_assert_null(rankd_feature_name(m, 7));
    cr_assert_null(rankd_feature_name(m, -1));
    cr_assert_eq(rankd_feature_dim(m, 7), -1);
    cr_assert_eq(rankd_feature_side(m, 7), RANKD_SIDE_INVALID);
    cr_assert_eq(rankd_feature_kind(m, -1), RANKD_KIND_INVALID);
    cr_assert_eq(rankd_model_n_features(NULL), -1);
    cr_assert_eq(rankd_model_find_feature(m, "nope"), -1);
    cr_assert_eq(rankd_model_n_members(m), 0);
    cr_assert_null(rankd_model_member_name(m, 0));
    cr_assert(!strncmp(rankd_model_version(m), "movielens-dcnv2/", 16), "%s", rankd_model_version(m));
    rankd_model_close(m);
}

/* Grouped requests (user once, up to 100 candidates) and one-candidate
 * requests both equal `rank score`; the single model's member score is its
 * pCTR with weight 1. */
Test(api, score_matches_rank_score, .timeout = 120) {
    tsv t, ref;
    load("dcn", &t, &ref);
    rankd_model *m = open_ok("dcn", NULL);
    rankd_batch *b;
    rankd_error e;
    cr_assert_eq(rankd_batch_create(m, &b, &e), RANKD_OK, "%s", e.message);
    float p[MAXK];
    double maxd = 0;
    int n_req = 0, max_k = 0;
    for (int r0 = 0, r1; r0 < t.n_rows; r0 = r1, n_req++) {
        r1 = group_end(m, &t, r0);
        if (r1 - r0 > max_k) max_k = r1 - r0;
        score_rows(m, b, &t, r0, r1, p);
        for (int r = r0; r < r1; r++) maxd = fmax(maxd, fabs(p[r - r0] - ref_at(&ref, r, 0)));
        float mp, mw;
        cr_assert_eq(rankd_batch_member_scores(b, r1 - r0 - 1, &mp, &mw, &e), RANKD_OK, "%s", e.message);
        cr_assert_eq(mp, p[r1 - r0 - 1]);
        cr_assert_eq(mw, 1.0f);
    }
    cr_assert(max_k == 50 && n_req == 60, "%d requests of up to %d candidates, want 60 of 50", n_req, max_k);
    cr_assert(maxd <= TOL, "grouped: max abs diff %.3g vs rank score", maxd);
    for (int r = 0; r < 200; r++) {
        score_rows(m, b, &t, r, r + 1, p);
        cr_assert(fabs(p[0] - ref_at(&ref, r, 0)) <= TOL, "row %d alone: %.9g vs %.9g", r, p[0], ref_at(&ref, r, 0));
    }
    fprintf(stderr, "[api] %d rows in %d requests (up to %d candidates): max abs diff %.3g\n", t.n_rows, n_req, max_k, maxd);
    finish(m, b, &t, &ref);
}

/* CETNet: fused pCTR and each member's pCTR and fusion weight equal
 * `rank score --towers`. */
Test(api, ensemble_member_scores, .timeout = 120) {
    tsv t, ref;
    load("cet", &t, &ref);
    rankd_model *m = open_ok("cet", NULL);
    const int M = rankd_model_n_members(m);
    cr_assert_eq(M, 3);
    cr_assert_eq(ref.n_cols, 1 + 2 * M);
    for (int k = 0; k < M; k++) {
        char h[80];
        snprintf(h, sizeof h, "%s.pctr", rankd_model_member_name(m, k));
        cr_assert_str_eq(ref.hdr[1 + 2 * k], h);
    }
    cr_assert_str_eq(rankd_model_member_name(m, 1), "dcnv2");
    cr_assert_null(rankd_model_member_name(m, M));
    rankd_batch *b;
    rankd_error e;
    cr_assert_eq(rankd_batch_create(m, &b, &e), RANKD_OK, "%s", e.message);
    float p[MAXK], mp[8], mw[8];
    double maxd = 0;
    for (int r0 = 0, r1; r0 < t.n_rows; r0 = r1) {
        r1 = group_end(m, &t, r0);
        score_rows(m, b, &t, r0, r1, p);
        for (int r = r0; r < r1; r++) {
            cr_assert_eq(rankd_batch_member_scores(b, r - r0, mp, mw, &e), RANKD_OK, "%s", e.message);
            maxd = fmax(maxd, fabs(p[r - r0] - ref_at(&ref, r, 0)));
            double wsum = 0;
            for (int k = 0; k < M; k++) {
                maxd = fmax(maxd, fabs(mp[k] - ref_at(&ref, r, 1 + 2 * k)));
                maxd = fmax(maxd, fabs(mw[k] - ref_at(&ref, r, 2 + 2 * k)));
                wsum += mw[k];
            }
            cr_assert(fabs(wsum - 1) < 1e-5, "row %d: fusion weights sum to %g", r, wsum);
        }
    }
    cr_assert(maxd <= TOL, "max abs diff %.3g vs rank score --towers", maxd);
    cr_assert_eq(rankd_batch_member_scores(b, MAXK, mp, mw, &e), RANKD_EINVAL);
    finish(m, b, &t, &ref);
}

/* Tables copied to RAM score bit-identically to tables read from RocksDB. */
Test(api, ram_tables_identical, .timeout = 120) {
    tsv t, ref;
    load("dcn", &t, &ref);
    rankd_options *o = rankd_options_create();
    rankd_error e;
    cr_assert_eq(rankd_options_set_ram_tables_mb(o, 64, &e), RANKD_OK, "%s", e.message);
    rankd_model *ram = open_ok("dcn", o);
    rankd_options_destroy(o); /* copied at open */
    rankd_model *disk = open_ok("dcn", NULL);
    rankd_batch *a, *b;
    cr_assert_eq(rankd_batch_create(ram, &a, &e), RANKD_OK, "%s", e.message);
    cr_assert_eq(rankd_batch_create(disk, &b, &e), RANKD_OK, "%s", e.message);
    float p[MAXK], q[MAXK];
    for (int r0 = 0, r1; r0 < 1000; r0 = r1) {
        r1 = group_end(ram, &t, r0);
        score_rows(ram, a, &t, r0, r1, p);
        score_rows(disk, b, &t, r0, r1, q);
        cr_assert(!memcmp(p, q, sizeof(float) * (size_t)(r1 - r0)), "rows %d..%d differ", r0, r1 - 1);
    }
    rankd_batch_destroy(a);
    rankd_batch_destroy(b);
    rankd_model_close(ram);
    rankd_model_close(disk);
    tsv_free(&t);
    tsv_free(&ref);
}

/* One model, one batch per thread, scoring at once: the same scores as
 * one thread alone. */
typedef struct {
    rankd_model *m;
    const tsv *t;
    float *out;
} thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    rankd_batch *b;
    rankd_error e;
    if (rankd_batch_create(a->m, &b, &e)) return NULL;
    for (int r0 = 0, r1; r0 < a->t->n_rows; r0 = r1) {
        r1 = group_end(a->m, a->t, r0);
        score_rows(a->m, b, a->t, r0, r1, a->out + r0);
    }
    rankd_batch_destroy(b);
    return a;
}

Test(api, threads_share_a_model, .timeout = 120) {
    tsv t, ref;
    load("dcn", &t, &ref);
    rankd_model *m = open_ok("dcn", NULL);
    enum { T = 3 };
    float *out = calloc((size_t)T * NROWS, sizeof *out);
    pthread_t th[T];
    thr_arg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (thr_arg){m, &t, out + (size_t)i * NROWS};
        cr_assert_eq(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        cr_assert_eq(rv, &args[i], "thread %d failed", i);
    }
    for (int i = 1; i < T; i++)
        cr_assert(!memcmp(out, out + (size_t)i * NROWS, sizeof(float) * NROWS), "thread %d scored differently", i);
    for (int r = 0; r < NROWS; r++) cr_assert(fabs(out[r] - ref_at(&ref, r, 0)) <= TOL, "row %d", r);
    free(out);
    rankd_model_close(m);
    tsv_free(&t);
    tsv_free(&ref);
}

#define EXPECT(call, code_, msg_)                                                                       \
    do {                                                                                                \
        rankd_error e_;                                                                                 \
        memset(&e_, 'x', sizeof e_);                                                                    \
        rankd_status st_ = call;                                                                        \
        (void)e;                                                                                        \
        cr_assert_eq(st_, (code_), "%s: status %d (%s)", #call, st_, e.message);                        \
        cr_assert_eq(e.code, (code_));                                                                  \
        cr_assert_str_eq(e.message, (msg_));                                                            \
        (void)e_;                                                                                       \
    } while (0)

/* Misuse and bad input: the status and a message naming the feature or
 * candidate; a good request still scores the same afterwards. */
Test(api, errors_name_the_field, .timeout = 60) {
    rankd_options *o = rankd_options_create();
    rankd_error e;
    EXPECT(rankd_options_set_max_candidates(o, 0, &e), RANKD_EINVAL, "max_candidates: 0 is outside 1..1000000");
    EXPECT(rankd_options_set_max_values_per_row(o, 1000001, &e), RANKD_EINVAL,
           "max_values_per_row: 1000001 is outside 1..1000000");
    EXPECT(rankd_options_set_max_candidates(o, 4, &e), RANKD_OK, "");
    EXPECT(rankd_options_set_max_values_per_row(o, 2, &e), RANKD_OK, "");
    rankd_model *m = open_ok("dcn", o);
    rankd_options_destroy(o);
    rankd_batch *b;
    EXPECT(rankd_batch_create(m, &b, &e), RANKD_OK, "");
    const char *one[] = {"7"}, *three[] = {"1", "2", "3"}, *g[] = {"Comedy"};
    float p[4];
    EXPECT(rankd_batch_user_sparse(b, "user_id", one, 1, &e), RANKD_EINVAL, "user: no request begun (rankd_batch_begin)");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_EINVAL, "score: no request begun (rankd_batch_begin)");
    EXPECT(rankd_batch_member_scores(b, 0, p, NULL, &e), RANKD_EINVAL, "member scores: no scored request");
    EXPECT(rankd_batch_begin(b, 0, &e), RANKD_EINVAL, "candidates: 0, need at least 1");
    EXPECT(rankd_batch_begin(b, 5, &e), RANKD_ETOOBIG,
           "candidates: 5 exceed the maximum of 4 (rankd_options_set_max_candidates)");
    EXPECT(rankd_batch_begin(b, 2, &e), RANKD_OK, "");
    EXPECT(rankd_batch_user_sparse(b, "foo", one, 1, &e), RANKD_EINVAL, "user: unknown feature 'foo'");
    EXPECT(rankd_batch_user_sparse(b, "movie_id", one, 1, &e), RANKD_EINVAL, "user: 'movie_id' is a candidate feature");
    EXPECT(rankd_batch_user_dense(b, "user_id", 1.0, &e), RANKD_EINVAL, "user: 'user_id' is a sparse feature");
    EXPECT(rankd_batch_candidate_sparse(b, 0, "hour", one, 1, &e), RANKD_EINVAL, "candidates[0]: 'hour' is a user feature");
    EXPECT(rankd_batch_candidate_sparse(b, 1, "year", one, 1, &e), RANKD_EINVAL, "candidates[1]: 'year' is a dense feature");
    EXPECT(rankd_batch_candidate_sparse(b, 2, "genres", g, 1, &e), RANKD_EINVAL, "candidates[2]: outside the request's 2 candidates");
    EXPECT(rankd_batch_candidate_dense(b, -1, "year", 1990, &e), RANKD_EINVAL, "candidates[-1]: negative index");
    EXPECT(rankd_batch_candidate_sparse(b, 1, NULL, g, 1, &e), RANKD_EINVAL, "candidates[1]: feature name is NULL");
    EXPECT(rankd_batch_candidate_dense(b, 1, "year", NAN, &e), RANKD_ENUMERIC,
           "feature 'year': value nan is not finite or beyond +-1e+09");
    EXPECT(rankd_batch_candidate_dense(b, 0, "year", 1e300, &e), RANKD_ENUMERIC,
           "feature 'year': value 1e+300 is not finite or beyond +-1e+09");
    EXPECT(rankd_batch_user_sparse(b, "history", three, 3, &e), RANKD_ETOOBIG,
           "feature 'history': more than 2 values in one row");
    EXPECT(rankd_batch_begin(b, 2, &e), RANKD_OK, ""); /* start over */
    EXPECT(rankd_batch_candidate_sparse(b, 1, "genres", g, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_candidate_sparse(b, 1, "genres", g, 1, &e), RANKD_EINVAL,
           "candidates[1]: 'genres' is already set in this request");
    EXPECT(rankd_batch_candidate_sparse(b, 0, "genres", NULL, 1, &e), RANKD_EINVAL, "feature 'genres': values is NULL");
    EXPECT(rankd_batch_user_sparse(b, "user_id", one, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_score(b, NULL, &e), RANKD_EINVAL, "score: pctr is NULL");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_EINVAL,
           "score: a set failed in this request (candidates[1]: 'genres' is already set in this request); begin it again");
    EXPECT(rankd_batch_begin(b, 2, &e), RANKD_OK, "");
    EXPECT(rankd_batch_candidate_sparse(b, 1, "genres", g, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_user_sparse(b, "user_id", one, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_OK, "");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_EINVAL, "score: the request is already scored (begin a new one)");
    EXPECT(rankd_batch_user_sparse(b, "hour", one, 1, &e), RANKD_EINVAL,
           "user: the request is already scored (begin a new one)");
    /* the same request again, after all of the errors: the same scores */
    float q[2];
    EXPECT(rankd_batch_begin(b, 2, &e), RANKD_OK, "");
    EXPECT(rankd_batch_user_sparse(b, "user_id", one, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_candidate_sparse(b, 1, "genres", g, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_score(b, q, &e), RANKD_OK, "");
    cr_assert(p[0] == q[0] && p[1] == q[1]);
    cr_assert(p[0] != p[1], "candidate 1's genre did not change its score");
    rankd_batch_destroy(b);
    rankd_model_close(m);
}

/* A request with a failed set is refused by rankd_batch_score (the first
 * error quoted, err NULL or not) rather than scored from what is left: a
 * bag cut short at its limit, a dense value left at its mean. After begin
 * the batch scores the full request as a fresh batch does. */
Test(api, score_refused_after_failed_set, .timeout = 60) {
    rankd_options *o = rankd_options_create();
    rankd_error e;
    EXPECT(rankd_options_set_max_values_per_row(o, 2, &e), RANKD_OK, "");
    rankd_model *m = open_ok("dcn", o);
    rankd_options_destroy(o);
    rankd_batch *b, *fresh;
    EXPECT(rankd_batch_create(m, &b, &e), RANKD_OK, "");
    EXPECT(rankd_batch_create(m, &fresh, &e), RANKD_OK, "");
    const char *three[] = {"1", "2", "3"}, *two[] = {"1", "2"};
    float p[2] = {-1, -1}, q[2] = {-2, -2};
    EXPECT(rankd_batch_begin(b, 2, &e), RANKD_OK, "");
    cr_assert_eq(rankd_batch_user_sparse(b, "history", three, 3, NULL), RANKD_ETOOBIG);
    EXPECT(rankd_batch_candidate_dense(b, 1, "year", NAN, &e), RANKD_ENUMERIC,
           "feature 'year': value nan is not finite or beyond +-1e+09");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_EINVAL,
           "score: a set failed in this request (feature 'history': more than 2 values in one row); begin it again");
    cr_assert(p[0] == -1 && p[1] == -1, "pctr written by a refused score");
    EXPECT(rankd_batch_begin(b, 1, &e), RANKD_OK, "");
    EXPECT(rankd_batch_user_sparse(b, "nope", two, 2, &e), RANKD_EINVAL, "user: unknown feature 'nope'");
    EXPECT(rankd_batch_score(b, p, &e), RANKD_EINVAL,
           "score: a set failed in this request (user: unknown feature 'nope'); begin it again");
    rankd_batch *both[2] = {b, fresh};
    float *out[2] = {p, q};
    for (int k = 0; k < 2; k++) {
        EXPECT(rankd_batch_begin(both[k], 2, &e), RANKD_OK, "");
        EXPECT(rankd_batch_user_sparse(both[k], "history", two, 2, &e), RANKD_OK, "");
        EXPECT(rankd_batch_candidate_dense(both[k], 1, "year", 1995, &e), RANKD_OK, "");
        EXPECT(rankd_batch_score(both[k], out[k], &e), RANKD_OK, "");
    }
    cr_assert(p[0] == q[0] && p[1] == q[1], "after begin: %g %g, a fresh batch: %g %g", p[0], p[1], q[0], q[1]);
    rankd_batch_destroy(b);
    rankd_batch_destroy(fresh);
    rankd_model_close(m);
}
