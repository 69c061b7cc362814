/*
 * tests/test_e2e.c — end-to-end: the real `rankd` binary on a loopback port,
 * spoken to over gRPC through rk_client.
 *
 * Once per run (a PRE_ALL hook in the Criterion runner process, before the
 * test workers fork): `rank data movielens` on the bundled ml-latest-small,
 * `rank train --epochs 1`, and `rank score` on the test split and on
 * multi.tsv — rows made here that pair one user's features with several
 * other rows' candidates, so a request of several candidates has an exact
 * offline reference. The directory is in RK_E2E_DIR; POST_ALL removes it
 * (set RK_E2E_KEEP=1 to keep it).
 *
 * Each test starts its own rankd on 127.0.0.1:0 (the port is parsed from the
 * "listening on" log line; fixed ports race) and stops it with SIGTERM.
 * Served pCTRs must equal `rank score` within 1e-6; every bad request gets
 * its status code and a message naming the field, and a good request still
 * succeeds after it.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <jansson.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serve.h"
#include "rank.pb-c.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif
#ifndef RK_BINARY_DIR
#define RK_BINARY_DIR "."
#endif
#define BIN RK_BINARY_DIR "/bin/"

#define TOL 1e-6
#define MULTI_GROUPS 30
#define MULTI_K 8
#define BIG_K 1000

/* gRPC status codes */
enum { OK = 0, INVALID_ARGUMENT = 3, DEADLINE_EXCEEDED = 4, NOT_FOUND = 5, RESOURCE_EXHAUSTED = 8, UNIMPLEMENTED = 12 };

/* ------------------------------------------------------------------ small helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static const char *e2e_dir(void) {
    const char *d = getenv("RK_E2E_DIR");
    cr_assert(d && *d, "data preparation failed: %s", getenv("RK_E2E_ERROR") ? getenv("RK_E2E_ERROR") : "?");
    return d;
}

/* A TSV held in memory: rows of fields. */
typedef struct {
    char *buf;
    char **hdr;
    int n_cols;
    char ***rows;
    int n_rows;
} tsv;

static int tsv_read(const char *path, tsv *t) {
    memset(t, 0, sizeof *t);
    size_t len;
    rk_err e = {0};
    if (rk_read_file(path, &t->buf, &len, &e)) return -1;
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += t->buf[i] == '\n';
    t->rows = calloc((size_t)lines + 1, sizeof *t->rows);
    char *p = t->buf;
    int r = -1;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        int n = 1;
        for (char *q = p; *q; q++) n += *q == '\t';
        char **f = calloc((size_t)n, sizeof *f);
        int k = 0;
        for (char *q = p;;) {
            f[k++] = q;
            char *tab = strchr(q, '\t');
            if (!tab) break;
            *tab = 0;
            q = tab + 1;
        }
        if (r < 0) {
            t->hdr = f;
            t->n_cols = n;
        } else {
            t->rows[r] = f;
        }
        r++;
        if (!nl) break;
        p = nl + 1;
    }
    t->n_rows = r < 0 ? 0 : r;
    return 0;
}

static void tsv_free(tsv *t) {
    for (int i = 0; i < t->n_rows; i++) free(t->rows[i]);
    free(t->rows);
    free(t->hdr);
    rk_free(t->buf);
}

static int tsv_col(const tsv *t, const char *name) {
    for (int i = 0; i < t->n_cols; i++)
        if (!strcmp(t->hdr[i], name)) return i;
    return -1;
}

/* pctr column of a `rank score` / `rank query` output file. */
static float *read_scores(const char *path, int *n) {
    tsv t;
    cr_assert_eq(tsv_read(path, &t), 0, "cannot read %s", path);
    cr_assert_str_eq(t.hdr[0], "pctr");
    float *p = malloc((size_t)t.n_rows * sizeof *p + 1);
    for (int i = 0; i < t.n_rows; i++) p[i] = strtof(t.rows[i][0], NULL);
    *n = t.n_rows;
    tsv_free(&t);
    return p;
}

/* ------------------------------------------------------------------ run-wide data */

static void write_multi(const char *dir, const rk_model_cfg *cfg) {
    char path[1024];
    snprintf(path, sizeof path, "%s/ml/test.tsv", dir);
    tsv t;
    if (tsv_read(path, &t)) return;
    int is_user[256] = {0};
    for (int f = 0; f < cfg->n_features; f++) {
        int c = tsv_col(&t, cfg->features[f].column);
        if (c >= 0 && cfg->features[f].side == RK_SIDE_USER) is_user[c] = 1;
    }
    snprintf(path, sizeof path, "%s/multi.tsv", dir);
    FILE *o = fopen(path, "w");
    for (int c = 0; c < t.n_cols; c++) fprintf(o, "%s%s", c ? "\t" : "", t.hdr[c]);
    fprintf(o, "\n");
    /* MULTI_GROUPS requests of MULTI_K candidates, then one of BIG_K. */
    for (int g = 0; g <= MULTI_GROUPS; g++) {
        int k = g < MULTI_GROUPS ? MULTI_K : BIG_K;
        int u = (g * 331) % t.n_rows;
        for (int j = 0; j < k; j++) {
            int r = g < MULTI_GROUPS ? (u + 1 + j * 97) % t.n_rows : j % t.n_rows;
            for (int c = 0; c < t.n_cols; c++)
                fprintf(o, "%s%s", c ? "\t" : "", is_user[c] ? t.rows[u][c] : t.rows[r][c]);
            fprintf(o, "\n");
        }
    }
    fclose(o);
    tsv_free(&t);
}

static char prep_dir[512];

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
    (void)set;
    char tmpl[] = "/tmp/rk_e2e_XXXXXX";
    const char *d = mkdtemp(tmpl);
    const char *err = NULL;
    if (!d) {
        setenv("RK_E2E_ERROR", "mkdtemp failed", 1);
        return;
    }
    snprintf(prep_dir, sizeof prep_dir, "%s", d);
    double t0 = now_s();
    if (run(BIN "rank data movielens --input " RK_SOURCE_DIR "/data/movielens --out %s/ml >%s/prep.log 2>&1", d, d))
        err = "rank data movielens failed (see prep.log)";
    else if (run(BIN "rank train --config " RK_SOURCE_DIR
                     "/configs/movielens_dcnv2.json --data %s/ml --out %s/bundle --epochs 1 >>%s/prep.log 2>&1",
                 d, d, d))
        err = "rank train failed (see prep.log)";
    else if (run(BIN "rank score --model %s/bundle --input %s/ml/test.tsv --output %s/test_scores.tsv >>%s/prep.log 2>&1",
                 d, d, d, d))
        err = "rank score failed (see prep.log)";
    if (!err) {
        char bundle[1024];
        snprintf(bundle, sizeof bundle, "%s/bundle", d);
        rk_model *m;
        rk_err e = {0};
        if (rk_model_open(bundle, &m, &e)) {
            err = "cannot open the trained bundle";
        } else {
            write_multi(d, rk_model_config(m));
            rk_model_destroy(m);
            if (run(BIN "rank score --model %s/bundle --input %s/multi.tsv --output %s/multi_scores.tsv >>%s/prep.log 2>&1",
                    d, d, d, d))
                err = "rank score on multi.tsv failed (see prep.log)";
            /* a CETNet ensemble of three members, served by its own rankd in e2e_cetnet */
            else if (run(BIN "rank train --config " RK_SOURCE_DIR
                             "/configs/movielens_cetnet.json --data %s/ml --out %s/cetnet --epochs 1 >>%s/prep.log 2>&1",
                         d, d, d))
                err = "rank train (cetnet) failed (see prep.log)";
            else if (run(BIN "rank score --model %s/cetnet --towers --input %s/multi.tsv --output %s/multi_cet_scores.tsv "
                             ">>%s/prep.log 2>&1",
                         d, d, d, d))
                err = "rank score --towers on multi.tsv failed (see prep.log)";
        }
    }
    if (err) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s in %s", err, d);
        setenv("RK_E2E_ERROR", msg, 1);
        return;
    }
    fprintf(stderr, "[e2e] data, bundle and offline scores ready in %.1fs (%s)\n", now_s() - t0, d);
    setenv("RK_E2E_DIR", d, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
    (void)stats;
    if (!prep_dir[0] || getenv("RK_E2E_KEEP")) return;
    rk_err e = {0};
    rk_rm_rf(prep_dir, &e);
}

/* ------------------------------------------------------------------ rankd process */

typedef struct {
    pid_t pid;
    int port;
    char addr[64];
    char log[1024];
} rankd_proc;

static rankd_proc srv; /* the fixture's server */
static const char *bundle_name = "bundle"; /* which bundle of the e2e dir rankd serves */

/* Start rankd with extra arguments (NULL-terminated); returns the pid after
 * "listening on" appeared, or -1 with the exit status in *status if it
 * exited first. */
static pid_t rankd_spawn(rankd_proc *p, const char *listen, int *status, const char *const *extra) {
    const char *d = e2e_dir();
    static int seq;
    snprintf(p->log, sizeof p->log, "%s/rankd.%d.%d.log", d, (int)getpid(), seq++);
    char model[1024];
    snprintf(model, sizeof model, "%s/%s", d, bundle_name);
    const char *argv[32] = {BIN "rankd", "--model", model, "--listen", listen};
    int n = 5;
    for (int i = 0; extra && extra[i] && n < 30; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    p->port = 0;
    double t0 = now_s();
    while (now_s() - t0 < 120) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (status) *status = st;
            p->pid = 0;
            return -1;
        }
        char *text = NULL;
        rk_err e = {0};
        if (rk_read_file(p->log, &text, NULL, &e) == RK_OK) {
            const char *l = strstr(text, "listening on 127.0.0.1:");
            if (l) {
                p->port = atoi(l + strlen("listening on 127.0.0.1:"));
                rk_free(text);
                snprintf(p->addr, sizeof p->addr, "127.0.0.1:%d", p->port);
                return pid;
            }
            rk_free(text);
        }
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_fail("rankd did not print 'listening on' within 120 s (log %s)", p->log);
    return -1;
}

/* SIGTERM and wait; returns the wait status (SIGKILL after 60 s). */
static int rankd_stop(rankd_proc *p) {
    if (p->pid <= 0) return 0;
    kill(p->pid, SIGTERM);
    int st = 0;
    double t0 = now_s();
    while (waitpid(p->pid, &st, WNOHANG) == 0) {
        if (now_s() - t0 > 60) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            break;
        }
        sleep_ms(5);
    }
    p->pid = 0;
    return st;
}

static void start_default(void) {
    cr_assert_neq(rankd_spawn(&srv, "127.0.0.1:0", NULL, NULL), -1, "rankd exited at start (log %s)", srv.log);
}
/* Stop p and assert it exited 0 with a clean log. Sanitizer reports of the
 * server are in its log, not in the test's output: copy them there too, for
 * ctest's FAIL_REGULAR_EXPRESSION. (Assertions in a .fini are printed but do
 * not fail a Criterion test, so tests call this at their end.) */
static void stop_checked(rankd_proc *p) {
    char log[sizeof p->log];
    snprintf(log, sizeof log, "%s", p->log);
    int st = rankd_stop(p);
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(log, &text, NULL, &e), RK_OK, "%s", e.msg);
    int dirty = strstr(text, "Sanitizer") || strstr(text, "runtime error:");
    if (dirty) fprintf(stderr, "%s", text);
    rk_free(text);
    cr_assert(!dirty, "rankd log %s has sanitizer reports", log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rankd exit status %d (log %s)", st, log);
}

/* ------------------------------------------------------------------ request building */

/* Bump memory for the tests' edits of one request (no frees needed, nothing leaks). */
static char pool[16 << 20];
static size_t pool_used;
static void *pmem(size_t n) {
    n = (n + 15) & ~(size_t)15;
    cr_assert(pool_used + n <= sizeof pool, "test pool exhausted");
    void *p = pool + pool_used;
    pool_used += n;
    memset(p, 0, n);
    return p;
}

typedef struct {
    rk_model *m;
    const rk_model_cfg *cfg;
    tsv multi, test;
    int *col; /* [n_features] */
    rk_req_rows *rmulti, *rtest; /* the same files for build() (serve/rows.c) */
    float *multi_ref, *test_ref;
    int n_multi_ref, n_test_ref;
    rk_client *cl;
} ctx;

static ctx C;
static Rankd__V1__RankRequest *last; /* build()'s request */

static void load_ctx(void) {
    const char *d = e2e_dir();
    char p[1024];
    snprintf(p, sizeof p, "%s/bundle", d);
    rk_err e = {0};
    cr_assert_eq(rk_model_open(p, &C.m, &e), RK_OK, "%s", e.msg);
    C.cfg = rk_model_config(C.m);
    C.col = calloc((size_t)C.cfg->n_features, sizeof *C.col);
    cr_assert(C.col);
    snprintf(p, sizeof p, "%s/multi.tsv", d);
    cr_assert_eq(tsv_read(p, &C.multi), 0);
    snprintf(p, sizeof p, "%s/ml/test.tsv", d);
    cr_assert_eq(tsv_read(p, &C.test), 0);
    for (int f = 0; f < C.cfg->n_features; f++) {
        C.col[f] = tsv_col(&C.multi, C.cfg->features[f].column);
        cr_assert_geq(C.col[f], 0, "no column for feature %s", C.cfg->features[f].name);
    }
    snprintf(p, sizeof p, "%s/multi.tsv", d);
    cr_assert_eq(rk_req_rows_read(p, C.cfg, &C.rmulti, &e), RK_OK, "%s", e.msg);
    snprintf(p, sizeof p, "%s/ml/test.tsv", d);
    cr_assert_eq(rk_req_rows_read(p, C.cfg, &C.rtest, &e), RK_OK, "%s", e.msg);
    cr_assert_eq((int)rk_req_rows_count(C.rmulti), C.multi.n_rows);
    cr_assert_eq((int)rk_req_rows_count(C.rtest), C.test.n_rows);
    snprintf(p, sizeof p, "%s/multi_scores.tsv", d);
    C.multi_ref = read_scores(p, &C.n_multi_ref);
    cr_assert_eq(C.n_multi_ref, C.multi.n_rows);
    snprintf(p, sizeof p, "%s/test_scores.tsv", d);
    C.test_ref = read_scores(p, &C.n_test_ref);
    cr_assert_eq(C.n_test_ref, C.test.n_rows);
    cr_assert_eq(rk_client_create(srv.addr, &C.cl, &e), RK_OK, "%s", e.msg);
}

/* Max |score - rank score's| over ml/test.tsv, the scores read from path. */
static double max_diff_test_ref(const char *path) {
    int n;
    float *got = read_scores(path, &n);
    cr_assert_eq(n, C.n_test_ref, "%s: %d scores, rank score gave %d", path, n, C.n_test_ref);
    double mx = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, fabs((double)got[i] - C.test_ref[i]));
    free(got);
    return mx;
}

static void free_ctx(void) {
    rk_client_destroy(C.cl);
    tsv_free(&C.multi);
    tsv_free(&C.test);
    free(C.multi_ref);
    free(C.test_ref);
    free(C.col);
    rk_free(last);
    last = NULL;
    rk_req_rows_destroy(C.rmulti);
    rk_req_rows_destroy(C.rtest);
    rk_model_destroy(C.m);
    memset(&C, 0, sizeof C);
}

static void setup(void) {
    start_default();
    load_ctx();
}
static void teardown(void) {
    free_ctx();
    rankd_stop(&srv); /* only still running when the test failed early */
}

/* The end of every test: the server is still healthy, stops cleanly. */
static void finish(void) {
    rk_client_destroy(C.cl);
    C.cl = NULL;
    stop_checked(&srv);
}

/* Request for rows[r0, r0+k) of t: user features from row r0 (the rows must
 * share them), candidates from each row, built by serve/rows.c as rank query
 * and rank-bench build theirs. aliases: use user_id / recent_item_ids /
 * ad_id where the model declares them. Valid until the next build(). */
static Rankd__V1__RankRequest *build(const tsv *t, int r0, int k, int aliases) {
    rk_free(last);
    pool_used = 0; /* the pool is for the tests' own edits of the request */
    size_t idx[BIG_K + MULTI_K];
    cr_assert_leq(k, (int)(sizeof idx / sizeof *idx));
    for (int i = 0; i < k; i++) idx[i] = (size_t)(r0 + i);
    rk_req_opts o = {.request_id = "req-1", .no_aliases = !aliases};
    last = rk_req_build(t == &C.multi ? C.rmulti : C.rtest, idx, (size_t)k, &o);
    cr_assert_not_null(last);
    return last;
}

/* Index of a named feature in a candidate's / the user's list (asserts). */
static size_t dense_index(const Rankd__V1__Candidate *c, const char *name) {
    for (size_t j = 0; j < c->n_dense; j++)
        if (!strcmp(c->dense[j]->name, name)) return j;
    cr_assert_fail("candidate has no dense feature %s", name);
    return 0;
}

/* Row of multi.tsv that starts group g (all rows of a group share the user). */
static int group_row(int g) { return g * MULTI_K; }

/* Send req; assert OK and every pCTR equals ref[0..k) within TOL. */
static void expect_scores_tol(Rankd__V1__RankRequest *req, const float *ref, double tol, const char *what);
static void expect_scores(Rankd__V1__RankRequest *req, const float *ref, const char *what) {
    expect_scores_tol(req, ref, TOL, what);
}
static void expect_scores_tol(Rankd__V1__RankRequest *req, const float *ref, double tol, const char *what) {
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_client_rank(C.cl, req, 30000, &res, &resp, &e), RK_OK, "%s: %s", what, e.msg);
    cr_assert_eq(res.code, OK, "%s: status %d: %s", what, res.code, res.msg);
    cr_assert_eq(resp->n_scores, req->n_candidates, "%s: %zu scores for %zu candidates", what, resp->n_scores,
                 req->n_candidates);
    for (size_t i = 0; i < resp->n_scores; i++) {
        float got = resp->scores[i]->pctr;
        cr_assert(fabsf(got - ref[i]) <= tol, "%s: candidate %zu: served %.9g, offline %.9g", what, i, got,
                  ref[i]);
        cr_assert_str_eq(resp->scores[i]->ad_id, req->candidates[i]->ad_id ? req->candidates[i]->ad_id : "");
    }
    rk_client_free_response(resp);
}

/* A known-good request still works (after each bad one). */
static void expect_good(void) {
    expect_scores(build(&C.multi, group_row(1), MULTI_K, 1), C.multi_ref + group_row(1), "good request");
}

/* Send req (or raw bytes) and expect code and exactly msg (or a prefix when
 * prefix != 0). */
static void expect_status_raw(const char *method, const void *bytes, size_t len, int code, const char *msg,
                              int prefix) {
    rk_call_result res;
    rk_err e = {0};
    cr_assert_eq(rk_client_call(C.cl, method, bytes, len, 30000, &res, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(res.code, code, "status %d (want %d): %s", res.code, code, res.msg);
    if (prefix) cr_expect(strstr(res.msg, msg) != NULL, "message '%s' lacks '%s'", res.msg, msg);
    else cr_expect_str_eq(res.msg, msg);
    rk_call_result_free(&res);
}

static void expect_status(Rankd__V1__RankRequest *req, int code, const char *msg) {
    size_t n = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *b = malloc(n + 1);
    rankd__v1__rank_request__pack(req, b);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, n, code, msg, 0);
    free(b);
    expect_good();
}

/* ------------------------------------------------------------------ scores */

TestSuite(e2e, .init = setup, .fini = teardown, .timeout = 240);

Test(e2e, multi_candidate_requests_match_rank_score) {
    for (int aliases = 0; aliases <= 1; aliases++)
        for (int g = 0; g < MULTI_GROUPS; g++) {
            char what[64];
            snprintf(what, sizeof what, "group %d aliases=%d", g, aliases);
            expect_scores(build(&C.multi, group_row(g), MULTI_K, aliases), C.multi_ref + group_row(g), what);
        }
    /* the largest request the server accepts by default */
    int r = MULTI_GROUPS * MULTI_K;
    expect_scores(build(&C.multi, r, BIG_K, 1), C.multi_ref + r, "1000 candidates");
    finish();
}

Test(e2e, test_split_rows_match_rank_score) {
    /* the first 300 rows of the test split, one request per run of rows that
     * share every user-side value */
    int n = C.test.n_rows < 300 ? C.test.n_rows : 300, sent = 0;
    for (int r0 = 0; r0 < n;) {
        int r1 = r0 + 1;
        while (r1 < n) {
            int same = 1;
            for (int f = 0; same && f < C.cfg->n_features; f++)
                if (C.cfg->features[f].side == RK_SIDE_USER &&
                    strcmp(C.test.rows[r1][C.col[f]], C.test.rows[r0][C.col[f]]))
                    same = 0;
            if (!same) break;
            r1++;
        }
        char what[64];
        snprintf(what, sizeof what, "test rows %d..%d", r0, r1 - 1);
        expect_scores(build(&C.test, r0, r1 - r0, r0 % 2), C.test_ref + r0, what);
        sent++;
        r0 = r1;
    }
    cr_assert_gt(sent, 0);
    finish();
}

Test(e2e, rank_query_cli_matches_rank_score) {
    const char *d = e2e_dir();
    cr_assert_eq(run(BIN "rank query --addr %s --model %s/bundle --input %s/ml/test.tsv --output %s/q.%d.tsv "
                         "--candidates 50 >%s/query.%d.log 2>&1",
                     srv.addr, d, d, d, (int)getpid(), d, (int)getpid()),
                 0, "rank query failed (see %s/query.%d.log)", d, (int)getpid());
    char p[1024];
    snprintf(p, sizeof p, "%s/q.%d.tsv", d, (int)getpid());
    double mx = max_diff_test_ref(p);
    cr_assert(mx <= TOL, "rank query vs rank score: max abs diff %.3g", mx);
    /* --model-name: sent instead of the bundle's name ('' sends none) */
    cr_expect_eq(run(BIN "rank query --addr %s --model %s/bundle --input %s/ml/test.tsv --output %s/q.%d.tsv "
                         "--max-requests 1 --model-name '' >%s/query.%d.log 2>&1",
                     srv.addr, d, d, d, (int)getpid(), d, (int)getpid()),
                 0, "rank query --model-name '' failed (see %s/query.%d.log)", d, (int)getpid());
    cr_expect_neq(run(BIN "rank query --addr %s --model %s/bundle --input %s/ml/test.tsv --output %s/q.%d.tsv "
                          "--max-requests 1 --model-name other >%s/query.%d.log 2>&1",
                      srv.addr, d, d, d, (int)getpid(), d, (int)getpid()),
                  0);
    snprintf(p, sizeof p, "%s/query.%d.log", d, (int)getpid());
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(p, &text, NULL, &e), RK_OK);
    cr_expect(strstr(text, "NOT_FOUND: model_name: 'other' is not served here") != NULL, "%s", text);
    rk_free(text);
    finish();
}

Test(e2e, timing_towers_and_echoes) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, MULTI_K, 1);
    req->return_timing = 1;
    req->return_tower_scores = 1;
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_client_rank(C.cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "%s", res.msg);
    cr_assert_str_eq(resp->request_id, "req-1");
    cr_assert_str_eq(resp->model_version, rk_model_version(C.m));
    cr_assert_not_null(resp->timing);
    cr_assert_gt(resp->timing->total_us, 0);
    cr_assert_geq(resp->timing->total_us, resp->timing->model_us);
    cr_assert_eq(resp->scores[0]->n_towers, 1);
    cr_assert_str_eq(resp->scores[0]->towers[0]->tower, "dcnv2");
    cr_assert_float_eq(resp->scores[0]->towers[0]->pctr, resp->scores[0]->pctr, 0);
    rk_client_free_response(resp);
    /* model name and version, when given, must match */
    req = build(&C.multi, 0, MULTI_K, 1);
    req->model_name = (char *)C.cfg->name;
    req->model_version = (char *)rk_model_version(C.m);
    expect_scores(req, C.multi_ref, "matching model_name/model_version");
    finish();
}

/* ------------------------------------------------------------------ health */

Test(e2e, health_check) {
    rk_call_result res;
    rk_err e = {0};
    int serving = 0;
    cr_assert_eq(rk_client_health(C.cl, "", 10000, &res, &serving, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "%s", res.msg);
    cr_assert_eq(serving, 1, "SERVING");
    cr_assert_eq(rk_client_health(C.cl, "rankd.v1.Ranker", 10000, &res, &serving, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "%s", res.msg);
    cr_assert_eq(serving, 1, "SERVING");
    cr_assert_eq(rk_client_health(C.cl, "no.such.Service", 10000, &res, &serving, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, NOT_FOUND);
    cr_assert_str_eq(res.msg, "unknown service 'no.such.Service'");
    expect_good();
    finish();
}

/* ------------------------------------------------------------------ bad requests */

Test(e2e, bad_no_candidates) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 1, 1);
    req->n_candidates = 0;
    expect_status(req, INVALID_ARGUMENT, "candidates: empty");
    /* an empty message decodes to a request without candidates */
    expect_status_raw("/rankd.v1.Ranker/Rank", "", 0, INVALID_ARGUMENT, "candidates: empty", 0);
    expect_good();
    finish();
}

Test(e2e, bad_unknown_feature) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 4, 0);
    req->candidates[3]->sparse[1]->name = "foo";
    expect_status(req, INVALID_ARGUMENT, "candidates[3].sparse[1].name: unknown feature 'foo'");
    /* a sparse feature given as dense */
    req = build(&C.multi, 0, 4, 1);
    Rankd__V1__DenseFeature df = RANKD__V1__DENSE_FEATURE__INIT;
    Rankd__V1__DenseFeature *dp = &df;
    df.name = "hour";
    df.value = 3;
    req->user->dense = &dp;
    req->user->n_dense = 1;
    expect_status(req, INVALID_ARGUMENT, "user.dense[0].name: 'hour' is a sparse feature");
    finish();
}

Test(e2e, bad_wrong_side_and_duplicates) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 2, 0);
    /* a candidate feature on the user */
    Rankd__V1__SparseFeature *sf = req->candidates[0]->sparse[0];
    req->user->sparse[req->user->n_sparse++] = sf;
    char want[256];
    snprintf(want, sizeof want, "user.sparse[%zu].name: '%s' is a candidate feature", req->user->n_sparse - 1,
             sf->name);
    expect_status(req, INVALID_ARGUMENT, want);
    /* an alias and the explicit feature together */
    req = build(&C.multi, 0, 2, 0);
    req->candidates[1]->ad_id = "1";
    size_t j = 0;
    while (strcmp(req->candidates[1]->sparse[j]->name, C.cfg->alias_ad_id)) j++;
    snprintf(want, sizeof want, "candidates[1].sparse[%zu].name: '%s' is already set by candidates[1].ad_id", j,
             C.cfg->alias_ad_id);
    expect_status(req, INVALID_ARGUMENT, want);
    finish();
}

Test(e2e, bad_dense_not_finite) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 3, 1);
    size_t j = dense_index(req->candidates[0], "year");
    req->candidates[0]->dense[j]->value = NAN;
    char want[128];
    snprintf(want, sizeof want, "candidates[0].dense[%zu].value: not finite (NaN)", j);
    expect_status(req, INVALID_ARGUMENT, want);
    req = build(&C.multi, 0, 3, 1);
    j = dense_index(req->candidates[2], "year");
    req->candidates[2]->dense[j]->value = INFINITY;
    snprintf(want, sizeof want, "candidates[2].dense[%zu].value: not finite (Inf)", j);
    expect_status(req, INVALID_ARGUMENT, want);
    req = build(&C.multi, 0, 3, 1);
    j = dense_index(req->candidates[1], "year");
    req->candidates[1]->dense[j]->value = -INFINITY;
    snprintf(want, sizeof want, "candidates[1].dense[%zu].value: not finite (-Inf)", j);
    expect_status(req, INVALID_ARGUMENT, want);
    finish();
}

Test(e2e, bad_too_many_candidates) {
    int k = BIG_K + 1;
    Rankd__V1__RankRequest *req = build(&C.multi, MULTI_GROUPS * MULTI_K, BIG_K, 1);
    Rankd__V1__Candidate **cs = pmem((size_t)k * sizeof *cs);
    memcpy(cs, req->candidates, BIG_K * sizeof *cs);
    cs[BIG_K] = cs[0];
    req->candidates = cs;
    req->n_candidates = (size_t)k;
    expect_status(req, RESOURCE_EXHAUSTED, "candidates: 1001 exceeds the maximum of 1000");
    finish();
}

Test(e2e, bad_too_many_values) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 2, 1);
    size_t n = 300;
    char **v = pmem(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = "1";
    req->user->recent_item_ids = v;
    req->user->n_recent_item_ids = n;
    expect_status(req, RESOURCE_EXHAUSTED, "user.recent_item_ids: 300 values exceed the maximum of 256");
    finish();
}

Test(e2e, bad_invalid_utf8) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 2, 1);
    req->candidates[1]->ad_id = "\xc3\x28";
    expect_status(req, INVALID_ARGUMENT, "candidates[1].ad_id: invalid UTF-8");
    req = build(&C.multi, 0, 2, 1);
    req->request_id = "ok\xed\xa0\x80"; /* a UTF-16 surrogate */
    expect_status(req, INVALID_ARGUMENT, "request_id: invalid UTF-8");
    req = build(&C.multi, 0, 2, 1);
    req->candidates[0]->sparse[0]->values[0] = "\xff";
    char want[128];
    snprintf(want, sizeof want, "candidates[0].sparse[0].values[0]: invalid UTF-8");
    expect_status(req, INVALID_ARGUMENT, want);
    finish();
}

/* Pack req, turn the '#' of the unique marker text into a NUL byte, send. */
static void expect_nul_refused(Rankd__V1__RankRequest *req, const char *marker, const char *msg) {
    size_t n = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *b = malloc(n + 1);
    rankd__v1__rank_request__pack(req, b);
    uint8_t *at = memmem(b, n, marker, strlen(marker));
    cr_assert_not_null(at, "marker %s not in the packed request", marker);
    *(uint8_t *)memchr(at, '#', strlen(marker)) = 0;
    cr_assert_null(memmem(at + 1, n - (size_t)(at + 1 - b), marker, strlen(marker)), "marker %s twice", marker);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, n, INVALID_ARGUMENT, msg, 0);
    free(b);
    expect_good();
}

/* protobuf-c cuts strings at a NUL: "3753\0junk" used to be scored as
 * movie 3753 and echoed back as "3753"; each such field is now refused by
 * name. A field number beyond 2^29-1 (not valid protobuf) was scored. */
Test(e2e, bad_nul_in_strings_and_field_numbers) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 2, 1);
    char ad[64];
    snprintf(ad, sizeof ad, "%s#junk", req->candidates[1]->ad_id);
    req->candidates[1]->ad_id = ad;
    expect_nul_refused(req, ad, "candidates[1].ad_id: a NUL byte inside the string (byte 5 of 9)");
    req = build(&C.multi, 0, 2, 1);
    req->request_id = "abc#def";
    expect_nul_refused(req, "abc#def", "request_id: a NUL byte inside the string (byte 4 of 7)");
    req = build(&C.multi, 0, 2, 1);
    char fname[64];
    snprintf(fname, sizeof fname, "%s#junk", req->user->sparse[0]->name);
    req->user->sparse[0]->name = fname;
    char want[256];
    snprintf(want, sizeof want, "user.sparse[0].name: a NUL byte inside the string (byte %zu of %zu)",
             strlen(fname) - 4, strlen(fname));
    expect_nul_refused(req, fname, want);
    req = build(&C.multi, 0, 2, 1);
    char mname[128];
    snprintf(mname, sizeof mname, "%s#other", C.cfg->name);
    req->model_name = mname;
    snprintf(want, sizeof want, "model_name: a NUL byte inside the string (byte %zu of %zu)", strlen(C.cfg->name) + 1,
             strlen(mname));
    expect_nul_refused(req, mname, want);
    /* field 2^29, varint 0, after a valid request */
    req = build(&C.multi, group_row(1), MULTI_K, 1);
    size_t n = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *b = malloc(n + 8);
    rankd__v1__rank_request__pack(req, b);
    const uint8_t bad[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x00}; /* tag (2^29 << 3 | 0) */
    memcpy(b + n, bad, sizeof bad);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, n + sizeof bad, INVALID_ARGUMENT,
                      "request: field number 536870912 outside protobuf's 1..536870911", 0);
    free(b);
    expect_good();
    finish();
}

Test(e2e, bad_model_mismatch) {
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 2, 1);
    req->model_name = "other-model";
    char want[256];
    snprintf(want, sizeof want, "model_name: 'other-model' is not served here (serving '%s')", C.cfg->name);
    expect_status(req, NOT_FOUND, want);
    req = build(&C.multi, 0, 2, 1);
    req->model_version = "v0";
    snprintf(want, sizeof want, "model_version: 'v0' is not served here (serving '%s')", rk_model_version(C.m));
    expect_status(req, NOT_FOUND, want);
    finish();
}

Test(e2e, bad_oversized_message) {
    /* 5 MiB > the default 4 MiB receive limit: gRPC answers, the handler never runs */
    size_t n = 5u << 20;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = 0;
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 1, 1);
    req->request_id = big;
    size_t len = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *b = malloc(len);
    rankd__v1__rank_request__pack(req, b);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, len, RESOURCE_EXHAUSTED, "larger than max", 1);
    free(b);
    free(big);
    expect_good();
    finish();
}

Test(e2e, bad_garbage_bytes) {
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    expect_status_raw("/rankd.v1.Ranker/Rank", junk, sizeof junk, INVALID_ARGUMENT,
                      "request is not a valid rankd.v1.RankRequest", 0);
    const char text[] = "this is not a protobuf";
    expect_status_raw("/rankd.v1.Ranker/Rank", text, strlen(text), INVALID_ARGUMENT,
                      "request is not a valid rankd.v1.RankRequest", 0);
    expect_status_raw("/grpc.health.v1.Health/Check", junk, sizeof junk, INVALID_ARGUMENT,
                      "request is not a valid grpc.health.v1.HealthCheckRequest", 0);
    expect_good();
    finish();
}

Test(e2e, unknown_method_is_unimplemented_quickly) {
    const char *methods[] = {"/rankd.v1.Ranker/Nope", "/other.v1.Svc/Rank", "/grpc.health.v1.Health/List"};
    for (int i = 0; i < 3; i++) {
        rk_call_result res;
        rk_err e = {0};
        cr_assert_eq(rk_client_call(C.cl, methods[i], "", 0, 5000, &res, &e), RK_OK, "%s", e.msg);
        cr_expect_eq(res.code, UNIMPLEMENTED, "%s: status %d: %s", methods[i], res.code, res.msg);
        cr_expect(res.seconds < 1.0, "%s took %.3fs (deadline 5s)", methods[i], res.seconds);
        char want[128];
        snprintf(want, sizeof want, "method '%s' is not implemented by rankd", methods[i]);
        cr_expect_str_eq(res.msg, want);
        rk_call_result_free(&res);
    }
    expect_good();
    finish();
}

/* ------------------------------------------------------------------ lifecycle */

Test(e2e, second_rankd_on_same_port_fails) {
    rankd_proc p2;
    int st = 0;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", srv.port);
    pid_t pid = rankd_spawn(&p2, listen, &st, NULL);
    if (pid > 0) rankd_stop(&p2);
    cr_assert_eq(pid, -1, "a second rankd started on port %d", srv.port);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(p2.log, &text, NULL, &e), RK_OK);
    char want[128];
    snprintf(want, sizeof want, "rankd: cannot listen on %s: address in use or invalid\n", listen);
    cr_expect(strstr(text, want) != NULL, "log lacks '%s':\n%s", want, text);
    rk_free(text);
    expect_good(); /* the first one still serves */
    finish();
}

Test(e2e, bad_listen_address_is_refused) {
    const char *bad[] = {"127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:12ab", "noport"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rankd_proc p2;
        int st = 0;
        pid_t pid = rankd_spawn(&p2, bad[i], &st, NULL);
        if (pid > 0) rankd_stop(&p2);
        cr_assert_eq(pid, -1, "rankd started on '%s'", bad[i]);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "'%s': exit status %d", bad[i], st);
        char *text = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_read_file(p2.log, &text, NULL, &e), RK_OK);
        cr_expect(strstr(text, "expected HOST:PORT with a port in 0..65535") != NULL, "'%s': %s", bad[i], text);
        rk_free(text);
    }
    const char *bad_metrics[] = {"127.0.0.1:99999", "127.0.0.1:9a", "127.0.0.1:"};
    for (size_t i = 0; i < sizeof bad_metrics / sizeof *bad_metrics; i++) {
        const char *extra[] = {"--metrics-listen", bad_metrics[i], NULL};
        rankd_proc p2;
        int st = 0;
        pid_t pid = rankd_spawn(&p2, "127.0.0.1:0", &st, extra);
        if (pid > 0) rankd_stop(&p2);
        cr_assert_eq(pid, -1, "rankd started with --metrics-listen '%s'", bad_metrics[i]);
        char *text = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_read_file(p2.log, &text, NULL, &e), RK_OK);
        cr_expect(strstr(text, "expected HOST:PORT with a port in 0..65535") != NULL, "'%s': %s", bad_metrics[i], text);
        rk_free(text);
    }
    /* a missing TLS or token file: the message says which flag's file */
    const char *missing[][5] = {{"--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem", NULL},
                                {"--updates", "--admin-token-file", "/nonexistent/tok", NULL, NULL}};
    const char *want[] = {"tls certificate: /nonexistent/c.pem", "admin token file: /nonexistent/tok"};
    for (size_t i = 0; i < 2; i++) {
        rankd_proc p2;
        int st = 0;
        pid_t pid = rankd_spawn(&p2, "127.0.0.1:0", &st, missing[i]);
        if (pid > 0) rankd_stop(&p2);
        cr_assert_eq(pid, -1, "rankd started without %s", want[i]);
        char *text = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_read_file(p2.log, &text, NULL, &e), RK_OK);
        cr_expect(strstr(text, want[i]) != NULL, "want '%s': %s", want[i], text);
        rk_free(text);
    }
    expect_good();
    finish();
}

Test(e2e, sigterm_stops_with_exit_0) {
    expect_good();
    char log[sizeof srv.log];
    snprintf(log, sizeof log, "%s", srv.log);
    finish(); /* closes the channel, SIGTERM, exit status 0, clean log */
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(log, &text, NULL, &e), RK_OK);
    cr_expect(strstr(text, "SIGTERM: draining") != NULL, "log:\n%s", text);
    cr_expect(strstr(text, "stopped: rank_ok=1 rank_failed=0 rank_expired=0 rank_rejected=0 health=0 unimplemented=0") != NULL, "log:\n%s", text);
    rk_free(text);
}

Test(e2e, options_max_candidates_and_message_bytes) {
    /* a second server with small limits */
    rankd_proc p2;
    const char *extra[] = {"--max-candidates", "4", "--max-message-bytes", "2048", "--threads", "1", NULL};
    cr_assert_neq(rankd_spawn(&p2, "127.0.0.1:0", NULL, extra), -1, "log %s", p2.log);
    rk_client *cl;
    rk_err e = {0};
    cr_assert_eq(rk_client_create(p2.addr, &cl, &e), RK_OK);
    rk_client *keep = C.cl;
    C.cl = cl;
    Rankd__V1__RankRequest *req = build(&C.multi, 0, 5, 1);
    size_t n = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *b = malloc(n);
    rankd__v1__rank_request__pack(req, b);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, n, RESOURCE_EXHAUSTED, "candidates: 5 exceeds the maximum of 4", 0);
    free(b);
    expect_scores(build(&C.multi, 0, 4, 1), C.multi_ref, "4 candidates");
    char big[4096];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = 0;
    req = build(&C.multi, 0, 1, 1);
    req->request_id = big;
    n = rankd__v1__rank_request__get_packed_size(req);
    b = malloc(n);
    rankd__v1__rank_request__pack(req, b);
    expect_status_raw("/rankd.v1.Ranker/Rank", b, n, RESOURCE_EXHAUSTED, "larger than max", 1);
    free(b);
    C.cl = keep;
    rk_client_destroy(cl);
    stop_checked(&p2);
    finish();
}

/* ------------------------------------------------------------------ concurrency */

#include <pthread.h>
#include <stdatomic.h>

/* Pre-packed requests (build() is not thread-safe) with their references. */
typedef struct {
    uint8_t *bytes;
    size_t len;
    const float *ref;
    size_t k;
} packed_req;

typedef struct {
    const char *addr;
    const packed_req *reqs;
    int n_reqs, rounds;
    atomic_int *stopping; /* NULL: every call must succeed */
    long ok;
    int bad;
    char msg[300];
} load_arg;

static void *load_thread(void *p) {
    load_arg *a = p;
    rk_client *cl;
    rk_err e = {0};
    if (rk_client_create(a->addr, &cl, &e)) {
        a->bad = 1;
        snprintf(a->msg, sizeof a->msg, "client: %s", e.msg);
        return NULL;
    }
    for (int r = 0; r < a->rounds && !a->bad; r++) {
        for (int i = 0; i < a->n_reqs; i++) {
            const packed_req *q = &a->reqs[(i + r) % a->n_reqs];
            rk_call_result res;
            if (rk_client_call(cl, "/rankd.v1.Ranker/Rank", q->bytes, q->len, 10000, &res, &e)) {
                a->bad = 1;
                snprintf(a->msg, sizeof a->msg, "call: %s", e.msg);
                break;
            }
            if (res.code != OK) {
                if (!a->stopping || !atomic_load(a->stopping)) {
                    a->bad = 1;
                    snprintf(a->msg, sizeof a->msg, "status %d before shutdown: %s", res.code, res.msg);
                }
                rk_call_result_free(&res);
                goto out; /* the server is going away: done */
            }
            Rankd__V1__RankResponse *resp = rankd__v1__rank_response__unpack(NULL, res.body_len, res.body);
            rk_call_result_free(&res);
            if (!resp || resp->n_scores != q->k) {
                a->bad = 1;
                snprintf(a->msg, sizeof a->msg, "bad response");
            } else {
                for (size_t j = 0; j < q->k && !a->bad; j++)
                    if (fabsf(resp->scores[j]->pctr - q->ref[j]) > TOL) {
                        a->bad = 1;
                        snprintf(a->msg, sizeof a->msg, "candidate %zu: %.9g vs offline %.9g", j,
                                 resp->scores[j]->pctr, q->ref[j]);
                    }
            }
            if (resp) rankd__v1__rank_response__free_unpacked(resp, NULL);
            if (a->bad) goto out;
            a->ok++;
        }
    }
out:
    rk_client_destroy(cl);
    return NULL;
}

static packed_req *pack_groups(int *n) {
    *n = MULTI_GROUPS + 1;
    packed_req *q = calloc((size_t)*n, sizeof *q);
    for (int g = 0; g < *n; g++) {
        int r = g < MULTI_GROUPS ? group_row(g) : MULTI_GROUPS * MULTI_K;
        int k = g < MULTI_GROUPS ? MULTI_K : BIG_K;
        Rankd__V1__RankRequest *req = build(&C.multi, r, k, g % 2);
        q[g].len = rankd__v1__rank_request__get_packed_size(req);
        q[g].bytes = malloc(q[g].len);
        rankd__v1__rank_request__pack(req, q[g].bytes);
        q[g].ref = C.multi_ref + r;
        q[g].k = (size_t)k;
    }
    return q;
}

static void free_groups(packed_req *q, int n) {
    for (int i = 0; i < n; i++) free(q[i].bytes);
    free(q);
}

#define N_THREADS 4

Test(e2e, concurrent_clients_match_rank_score) {
    int n;
    packed_req *q = pack_groups(&n);
    pthread_t th[N_THREADS];
    load_arg a[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        a[i] = (load_arg){.addr = srv.addr, .reqs = q, .n_reqs = n, .rounds = 3};
        pthread_create(&th[i], NULL, load_thread, &a[i]);
    }
    long ok = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_expect(!a[i].bad, "thread %d: %s", i, a[i].msg);
        ok += a[i].ok;
    }
    free_groups(q, n);
    cr_assert_eq(ok, (long)N_THREADS * 3 * n);
    finish();
}

Test(e2e, sigterm_under_load_drains_and_exits_0) {
    int n;
    packed_req *q = pack_groups(&n);
    pthread_t th[N_THREADS];
    load_arg a[N_THREADS];
    atomic_int stopping = 0;
    for (int i = 0; i < N_THREADS; i++) {
        a[i] = (load_arg){.addr = srv.addr, .reqs = q, .n_reqs = n, .rounds = 1000000, .stopping = &stopping};
        pthread_create(&th[i], NULL, load_thread, &a[i]);
    }
    sleep_ms(300);
    atomic_store(&stopping, 1);
    char log[sizeof srv.log];
    snprintf(log, sizeof log, "%s", srv.log);
    stop_checked(&srv); /* exit 0, no sanitizer reports, while calls are in flight */
    long ok = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        cr_expect(!a[i].bad, "thread %d: %s", i, a[i].msg);
        ok += a[i].ok;
    }
    free_groups(q, n);
    cr_assert_gt(ok, 0, "no call succeeded before SIGTERM");
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(log, &text, NULL, &e), RK_OK);
    cr_expect(strstr(text, "stopped: rank_ok=") != NULL, "log:\n%s", text);
    rk_free(text);
    rk_client_destroy(C.cl);
    C.cl = NULL;
}

/* ------------------------------------------------------------------ CETNet ensemble */

static void setup_cetnet(void) {
    bundle_name = "cetnet";
    setup();
}

TestSuite(e2e_cetnet, .init = setup_cetnet, .fini = teardown, .timeout = 240);

Test(e2e_cetnet, fused_and_member_scores_match_rank_score) {
    char p[1024];
    snprintf(p, sizeof p, "%s/multi_cet_scores.tsv", e2e_dir());
    tsv ref;
    cr_assert_eq(tsv_read(p, &ref), 0, "cannot read %s", p);
    cr_assert_eq(ref.n_rows, C.multi.n_rows);
    cr_assert_eq(ref.n_cols, 7, "pctr + 3 members x (pctr, weight)");
    cr_assert_str_eq(ref.hdr[1], "dnn.pctr");
    cr_assert_str_eq(ref.hdr[6], "deepfm.weight");
    for (int g = 0; g < MULTI_GROUPS; g++) {
        Rankd__V1__RankRequest *req = build(&C.multi, group_row(g), MULTI_K, g % 2);
        req->return_tower_scores = 1;
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_client_rank(C.cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, OK, "%s", res.msg);
        cr_assert(strstr(resp->model_version, "movielens-cetnet/"), "%s", resp->model_version);
        for (size_t i = 0; i < resp->n_scores; i++) {
            char **row = ref.rows[group_row(g) + (int)i];
            const Rankd__V1__Score *sc = resp->scores[i];
            cr_assert(fabsf(sc->pctr - strtof(row[0], NULL)) <= TOL, "group %d candidate %zu: fused %.9g vs %s", g, i,
                      sc->pctr, row[0]);
            cr_assert_eq(sc->n_towers, 3);
            float wsum = 0;
            for (int k = 0; k < 3; k++) {
                cr_assert_str_eq(sc->towers[k]->tower, k == 0 ? "dnn" : k == 1 ? "dcnv2" : "deepfm");
                cr_assert(fabsf(sc->towers[k]->pctr - strtof(row[1 + 2 * k], NULL)) <= TOL, "member %d pctr", k);
                cr_assert(fabsf(sc->towers[k]->weight - strtof(row[2 + 2 * k], NULL)) <= TOL, "member %d weight", k);
                wsum += sc->towers[k]->weight;
            }
            cr_assert(fabsf(wsum - 1.0f) <= 1e-5f, "weights sum to %g", wsum);
        }
        rk_client_free_response(resp);
    }
    tsv_free(&ref);
    finish();
}

/* ------------------------------------------------------------------ live versions and updates */

static char live_link[64];

/* rankd serves --model LINK, a symlink in the e2e dir pointing at "bundle". */
static void setup_live(void) {
    snprintf(live_link, sizeof live_link, "live-%d", (int)getpid());
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", e2e_dir(), live_link);
    unlink(p);
    cr_assert_eq(symlink("bundle", p), 0, "symlink %s: %s", p, strerror(errno));
    bundle_name = live_link;
    setup();
}

static void teardown_live(void) {
    teardown();
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", e2e_dir(), live_link);
    unlink(p);
}

/* Point the link at target atomically (new link + rename), as a publisher does. */
static void relink(const char *target) {
    char p[1024], q[1040];
    snprintf(p, sizeof p, "%s/%s", e2e_dir(), live_link);
    snprintf(q, sizeof q, "%s.new", p);
    unlink(q);
    cr_assert_eq(symlink(target, q), 0, "symlink: %s", strerror(errno));
    cr_assert_eq(rename(q, p), 0, "rename: %s", strerror(errno));
}

/* Wait until rankd's log holds text (60 s at most). */
static void wait_log(const rankd_proc *p, const char *text) {
    double t0 = now_s();
    for (;;) {
        char *t = NULL;
        rk_err e = {0};
        int found = rk_read_file(p->log, &t, NULL, &e) == RK_OK && strstr(t, text);
        rk_free(t);
        if (found) return;
        cr_assert_lt(now_s() - t0, 60.0, "rankd log %s: no '%s' after 60 s", p->log, text);
        sleep_ms(5);
    }
}

/* 0: req's scores are ref's (within TOL), else -1. */
static int scores_match(const Rankd__V1__RankResponse *resp, const float *ref, size_t n) {
    if (resp->n_scores != n) return -1;
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(resp->scores[i]->pctr - ref[i]) <= TOL)) return -1;
    return 0;
}

TestSuite(e2e_live, .init = setup_live, .fini = teardown_live, .timeout = 240);

/* Relink --model to the CETNet bundle and SIGHUP: rankd switches while it
 * serves; every answer is the old bundle's or the new one's (rank score's
 * offline pCTRs), and the new one's arrive. SIGHUP with the link unchanged
 * does nothing; a link to a directory that is not a bundle is refused and
 * the serving version stays. */
Test(e2e_live, sighup_switches_to_the_relinked_bundle) {
    char p[1024];
    snprintf(p, sizeof p, "%s/multi_cet_scores.tsv", e2e_dir());
    int n_cet = 0;
    float *cet = read_scores(p, &n_cet);
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(0), MULTI_K, 1);
    const float *old_ref = C.multi_ref + group_row(0), *new_ref = cet + group_row(0);
    expect_scores(req, old_ref, "before the switch");
    relink("cetnet");
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    long n_old = 0, n_new = 0;
    double t0 = now_s();
    while (n_new < 5) {
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_client_rank(C.cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, OK, "during the switch: status %d: %s", res.code, res.msg);
        if (scores_match(resp, new_ref, MULTI_K) == 0) {
            cr_assert(strstr(resp->model_version, "movielens-cetnet/"), "%s", resp->model_version);
            n_new++;
        } else {
            cr_assert_eq(scores_match(resp, old_ref, MULTI_K), 0, "an answer is neither bundle's scores");
            cr_assert(n_new == 0, "the old bundle answered after the new one did");
            n_old++;
        }
        rk_client_free_response(resp);
        cr_assert_lt(now_s() - t0, 60.0, "no answer of the new bundle 60 s after SIGHUP");
    }
    wait_log(&srv, "SIGHUP: now serving model movielens-cetnet/");
    cr_assert_eq(kill(srv.pid, SIGHUP), 0); /* link unchanged */
    wait_log(&srv, "nothing to reload");
    relink("ml"); /* a directory without model.json */
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    wait_log(&srv, "failed, the old version keeps serving: model bundle");
    expect_scores(req, new_ref, "after a failed reload");
    free(cet);
    finish();
}

/* A bundle whose largest SST has 4 bytes flipped at size-100 (the end of
 * its properties block, which RocksDB 7.8 parses before checking its
 * checksum and asserts on): the reload is refused by the checking child
 * process, rankd survives and the old version keeps serving. */
Test(e2e_live, sighup_to_a_bundle_with_a_damaged_sst_is_refused) {
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(0), MULTI_K, 1);
    const float *ref = C.multi_ref + group_row(0);
    char dst[64];
    snprintf(dst, sizeof dst, "damaged-%d", (int)getpid());
    cr_assert_eq(run("cd %s && rm -rf %s && cp -r bundle %s && f=$(ls -S %s/tables/*.sst | head -1) && "
                     "/usr/bin/python3 -c \"import os,sys;p=sys.argv[1];n=os.path.getsize(p);f=open(p,'r+b');"
                     "f.seek(n-100);b=bytes(x^255 for x in f.read(4));f.seek(n-100);f.write(b)\" $f",
                     e2e_dir(), dst, dst, dst),
                 0);
    relink(dst);
    cr_assert_eq(kill(srv.pid, SIGHUP), 0);
    wait_log(&srv, "killed a checking process");
    int st = 0;
    cr_assert_eq(waitpid(srv.pid, &st, WNOHANG), 0, "rankd died on the reload: status 0x%x", st);
    expect_scores(req, ref, "after the refused reload");
    relink("bundle");
    run("rm -rf %s/%s", e2e_dir(), dst);
    finish();
}

/* SIGHUPs in bursts, arriving while the previous reload is still opening a
 * bundle (the ensemble takes ~100 ms or more): none may kill rankd (a
 * second SIGHUP used to take its default action in a thread that did not
 * block it), the last link wins, and SIGINT afterwards still drains to exit
 * 0 (finish -> stop_checked). */
Test(e2e_live, sighup_bursts_during_reloads_are_absorbed) {
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(0), MULTI_K, 1);
    for (int i = 0; i < 8; i++) {
        relink(i % 2 ? "bundle" : "cetnet");
        cr_assert_eq(kill(srv.pid, SIGHUP), 0);
        cr_assert_eq(kill(srv.pid, SIGHUP), 0);
        sleep_ms(20);
        cr_assert_eq(kill(srv.pid, SIGHUP), 0);
        int st = 0;
        cr_assert_eq(waitpid(srv.pid, &st, WNOHANG), 0, "rankd died during SIGHUP burst %d: status 0x%x", i, st);
    }
    /* the link names "bundle" again: its scores come back */
    double t0 = now_s();
    for (;;) {
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_client_rank(C.cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, OK, "after the bursts: status %d: %s", res.code, res.msg);
        int done = scores_match(resp, C.multi_ref + group_row(0), MULTI_K) == 0;
        rk_client_free_response(resp);
        if (done) break;
        cr_assert_lt(now_s() - t0, 60.0, "the relinked bundle's scores never came back");
        sleep_ms(10);
    }
    finish();
}

/* ApplyUpdates of n rows of table movie_id (rows first..first+n, value x);
 * returns the gRPC code, the message into msg. */
static int apply_rows(rk_client *cl, uint64_t first, size_t n, float x, char *msg, size_t cap) {
    int f = -1;
    for (int k = 0; k < C.cfg->n_features; k++)
        if (!strcmp(C.cfg->features[k].name, "movie_id")) f = k;
    cr_assert_geq(f, 0);
    const int dim = C.cfg->features[f].dim;
    uint64_t *rows = malloc(n * sizeof *rows);
    float *v = malloc(n * (size_t)dim * sizeof *v);
    for (size_t i = 0; i < n; i++) rows[i] = (first + i) % C.cfg->features[f].table_size;
    for (size_t i = 0; i < n * (size_t)dim; i++) v[i] = x;
    Rankd__V1__ApplyUpdatesRequest u = RANKD__V1__APPLY_UPDATES_REQUEST__INIT;
    u.table = "movie_id";
    u.rows = rows;
    u.n_rows = n;
    u.values = v;
    u.n_values = n * (size_t)dim;
    size_t len = rankd__v1__apply_updates_request__get_packed_size(&u);
    uint8_t *b = malloc(len + 1);
    rankd__v1__apply_updates_request__pack(&u, b);
    rk_call_result res;
    rk_err e = {0};
    cr_assert_eq(rk_client_call(cl, "/rankd.v1.Admin/ApplyUpdates", b, len, 30000, &res, &e), RK_OK, "%s", e.msg);
    snprintf(msg, cap, "%s", res.msg);
    int code = res.code;
    rk_call_result_free(&res);
    free(b), free(rows), free(v);
    return code;
}

static void rank_ok(rk_client *cl, Rankd__V1__RankRequest *req, const char *when) {
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s: %s", when, e.msg);
    cr_assert_eq(res.code, OK, "%s: Rank %d %s", when, res.code, res.msg);
    rk_client_free_response(resp);
}

/* Fill the file system of dir (a file dir/fill written until ENOSPC). */
static void fill_disk(const char *dir) {
    cr_assert_eq(run("dd if=/dev/zero of=%s/fill bs=4k 2>/dev/null; dd if=/dev/zero of=%s/fill bs=1 oflag=append "
                     "conv=notrunc 2>/dev/null; true", dir, dir), 0);
}

/* The bundle on a small tmpfs (root only; skipped otherwise) that fills up
 * under ApplyUpdates: the call fails with RESOURCE_EXHAUSTED naming "No
 * space left on device" (rankd used to abort in RocksDB), Rank traffic goes
 * on, updates resume once space is freed; a restart while full comes up and
 * serves, refusing updates until space is freed. */
Test(e2e_live, disk_full_during_updates) {
    char mnt[1024], copy[64];
    snprintf(copy, sizeof copy, "dfull-%d", (int)getpid());
    snprintf(mnt, sizeof mnt, "%s/%s", e2e_dir(), copy);
    cr_assert_eq(run("mkdir -p %s", mnt), 0);
    if (geteuid() != 0 || run("mount -t tmpfs -o size=5m rk-test-tmpfs %s 2>/dev/null", mnt) != 0)
        cr_skip_test("needs root to mount a tmpfs");
    cr_assert_eq(run("cp -a %s/bundle %s/bundle", e2e_dir(), mnt), 0);
    static char bn[128];
    snprintf(bn, sizeof bn, "%s/bundle", copy);
    bundle_name = bn;
    rankd_proc p;
    const char *extra[] = {"--updates", NULL};
    cr_assert_neq(rankd_spawn(&p, "127.0.0.1:0", NULL, extra), -1, "rankd --updates exited (log %s)", p.log);
    rk_client *cl;
    rk_err e = {0};
    cr_assert_eq(rk_client_create(p.addr, &cl, &e), RK_OK, "%s", e.msg);
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(2), MULTI_K, 1);
    fill_disk(mnt);
    char msg[1024] = "";
    int code = OK;
    for (int i = 0; i < 200 && code == OK; i++) code = apply_rows(cl, (uint64_t)i * 2000, 2000, 0.25f, msg, sizeof msg);
    cr_assert_eq(code, 8 /* RESOURCE_EXHAUSTED */, "ApplyUpdates on a full disk: %d %s (log %s)", code, msg, p.log);
    cr_expect(strstr(msg, "No space left on device"), "%s", msg);
    rank_ok(cl, req, "after the failed update");
    cr_assert_eq(run("rm -f %s/fill", mnt), 0);
    code = apply_rows(cl, 7, 10, 0.5f, msg, sizeof msg);
    cr_assert_eq(code, OK, "ApplyUpdates after space was freed: %d %s", code, msg);
    rank_ok(cl, req, "after resuming");
    rk_client_destroy(cl);
    stop_checked(&p);
    fill_disk(mnt);
    cr_assert_neq(rankd_spawn(&p, "127.0.0.1:0", NULL, extra), -1, "restart on a full disk failed (log %s)", p.log);
    cr_assert_eq(rk_client_create(p.addr, &cl, &e), RK_OK, "%s", e.msg);
    rank_ok(cl, req, "restarted on a full disk");
    code = OK;
    for (int i = 0; i < 200 && code == OK; i++) code = apply_rows(cl, (uint64_t)i * 2000, 2000, 0.75f, msg, sizeof msg);
    cr_assert_eq(code, 8, "ApplyUpdates after a restart on a full disk: %d %s", code, msg);
    cr_assert_eq(run("rm -f %s/fill", mnt), 0);
    code = apply_rows(cl, 7, 10, 0.5f, msg, sizeof msg);
    cr_assert_eq(code, OK, "ApplyUpdates after space was freed: %d %s", code, msg);
    rank_ok(cl, req, "after resuming");
    rk_client_destroy(cl);
    stop_checked(&p);
    bundle_name = "bundle";
    (void)run("umount %s; rm -rf %s", mnt, mnt);
    finish();
}

/* ApplyUpdates through cl: the movie_id row of ad := +-sign alternating; asserts it was applied. */
static void apply_movie_row(rk_client *cl, const char *ad, float sign) {
    int f = -1;
    for (int k = 0; k < C.cfg->n_features; k++)
        if (!strcmp(C.cfg->features[k].name, "movie_id")) f = k;
    cr_assert_geq(f, 0);
    uint64_t row = rk_feature_row("movie_id", ad, strlen(ad), C.cfg->features[f].table_size);
    float v[1024];
    for (int j = 0; j < C.cfg->features[f].dim; j++) v[j] = sign * (j % 2 ? 1.f : -1.f);
    Rankd__V1__ApplyUpdatesRequest u = RANKD__V1__APPLY_UPDATES_REQUEST__INIT;
    u.table = "movie_id";
    u.rows = &row;
    u.n_rows = 1;
    u.values = v;
    u.n_values = (size_t)C.cfg->features[f].dim;
    size_t n = rankd__v1__apply_updates_request__get_packed_size(&u);
    uint8_t *b = malloc(n + 1);
    rankd__v1__apply_updates_request__pack(&u, b);
    rk_call_result res;
    rk_err e = {0};
    cr_assert_eq(rk_client_call(cl, "/rankd.v1.Admin/ApplyUpdates", b, n, 30000, &res, &e), RK_OK, "%s", e.msg);
    free(b);
    cr_assert_eq(res.code, OK, "ApplyUpdates: %d %s", res.code, res.msg);
    Rankd__V1__ApplyUpdatesResponse *ur = rankd__v1__apply_updates_response__unpack(NULL, res.body_len, res.body);
    cr_assert(ur && ur->applied == 1);
    rankd__v1__apply_updates_response__free_unpacked(ur, NULL);
    rk_call_result_free(&res);
}

/* rankd --updates on a copy of the bundle: an ApplyUpdates call changes the
 * next score of the candidate whose movie_id row it rewrites (only that
 * one), and a restarted rankd (read-only) serves the same scores. */
Test(e2e_live, update_through_rankd_survives_restart) {
    char copy[64], cmd[2200];
    snprintf(copy, sizeof copy, "upd-%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s && cp -a %s/bundle %s/%s", e2e_dir(), copy, e2e_dir(), e2e_dir(), copy);
    cr_assert_eq(run("%s", cmd), 0);
    bundle_name = copy;
    rankd_proc p;
    const char *extra[] = {"--updates", NULL};
    cr_assert_neq(rankd_spawn(&p, "127.0.0.1:0", NULL, extra), -1, "rankd --updates exited (log %s)", p.log);
    rk_client *cl;
    rk_err e = {0};
    cr_assert_eq(rk_client_create(p.addr, &cl, &e), RK_OK, "%s", e.msg);
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(2), MULTI_K, 1);
    {   /* table "movie_id\0x" used to write into movie_id */
        uint64_t row = 1;
        float v[64] = {0};
        Rankd__V1__ApplyUpdatesRequest u = RANKD__V1__APPLY_UPDATES_REQUEST__INIT;
        u.table = "movie_id#x";
        u.rows = &row;
        u.n_rows = 1;
        u.values = v;
        u.n_values = 16;
        size_t n = rankd__v1__apply_updates_request__get_packed_size(&u);
        uint8_t *b = malloc(n + 1);
        rankd__v1__apply_updates_request__pack(&u, b);
        *(uint8_t *)memchr(memmem(b, n, "movie_id#x", 10), '#', 10) = 0;
        rk_call_result res;
        cr_assert_eq(rk_client_call(cl, "/rankd.v1.Admin/ApplyUpdates", b, n, 30000, &res, &e), RK_OK, "%s", e.msg);
        free(b);
        cr_expect_eq(res.code, INVALID_ARGUMENT, "%d %s", res.code, res.msg);
        cr_expect_str_eq(res.msg, "table: a NUL byte inside the string (byte 9 of 10)");
        rk_call_result_free(&res);
    }
    float before[MULTI_K], after[MULTI_K];
    for (int pass = 0; pass < 2; pass++) {
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, OK, "%s", res.msg);
        for (int i = 0; i < MULTI_K; i++) (pass ? after : before)[i] = resp->scores[i]->pctr;
        rk_client_free_response(resp);
        if (pass) break;
        apply_movie_row(cl, req->candidates[0]->ad_id, 0.5f);
    }
    /* other candidates could share the row only by a hash collision */
    for (int i = 0; i < MULTI_K; i++) {
        int same_ad = !strcmp(req->candidates[i]->ad_id, req->candidates[0]->ad_id);
        if (same_ad) cr_assert_neq(after[i], before[i], "candidate %d: update not served", i);
        else cr_assert_eq(after[i], before[i], "candidate %d changed", i);
    }
    rk_client_destroy(cl);
    stop_checked(&p);
    cr_assert_neq(rankd_spawn(&p, "127.0.0.1:0", NULL, NULL), -1, "restart failed (log %s)", p.log);
    cr_assert_eq(rk_client_create(p.addr, &cl, &e), RK_OK, "%s", e.msg);
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "%s", res.msg);
    for (int i = 0; i < MULTI_K; i++)
        cr_assert_eq(resp->scores[i]->pctr, after[i], "candidate %d after restart: %.9g, served %.9g", i,
                     resp->scores[i]->pctr, after[i]);
    rk_client_free_response(resp);
    rk_client_destroy(cl);
    stop_checked(&p);
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s", e2e_dir(), copy);
    (void)run("%s", cmd);
    finish();
}

/* rankd --updates started on bundle v1 (a copy), SIGHUP to v2 (a CETNet copy)
 * and back to v1: the way back used to fail on RocksDB's LOCK (v1, opened
 * writable, was never closed once drained); now each version answers with
 * its own offline pCTRs and updates are still accepted on v1 afterwards. */
Test(e2e_live, updates_sighup_back_to_the_start_bundle) {
    char v1[64], v2[64], p2[1024];
    snprintf(v1, sizeof v1, "back1-%d", (int)getpid());
    snprintf(v2, sizeof v2, "back2-%d", (int)getpid());
    cr_assert_eq(run("cd %s && rm -rf %s %s && cp -a bundle %s && cp -a cetnet %s", e2e_dir(), v1, v2, v1, v2), 0);
    snprintf(p2, sizeof p2, "%s/multi_cet_scores.tsv", e2e_dir());
    int n_cet = 0;
    float *cet = read_scores(p2, &n_cet);
    relink(v1);
    rankd_proc p;
    const char *extra[] = {"--updates", NULL};
    cr_assert_neq(rankd_spawn(&p, "127.0.0.1:0", NULL, extra), -1, "rankd --updates exited (log %s)", p.log);
    rk_client *keep = C.cl, *cl;
    rk_err e = {0};
    cr_assert_eq(rk_client_create(p.addr, &cl, &e), RK_OK, "%s", e.msg);
    C.cl = cl; /* expect_scores asks this rankd */
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(0), MULTI_K, 1);
    const float *ref1 = C.multi_ref + group_row(0), *ref2 = cet + group_row(0);
    expect_scores(req, ref1, "v1 at start");
    relink(v2);
    cr_assert_eq(kill(p.pid, SIGHUP), 0);
    wait_log(&p, "SIGHUP: now serving model movielens-cetnet/");
    expect_scores(req, ref2, "after SIGHUP to v2");
    relink(v1);
    cr_assert_eq(kill(p.pid, SIGHUP), 0);
    wait_log(&p, "SIGHUP: now serving model movielens-dcnv2/");
    expect_scores(req, ref1, "after SIGHUP back to v1");
    float before = 0;
    {
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(res.code, OK, "%s", res.msg);
        before = resp->scores[0]->pctr;
        rk_client_free_response(resp);
    }
    apply_movie_row(cl, req->candidates[0]->ad_id, 0.5f);
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "%s", res.msg);
    cr_assert_neq(resp->scores[0]->pctr, before, "the update on v1 after the way back was not served");
    rk_client_free_response(resp);
    C.cl = keep;
    rk_client_destroy(cl);
    stop_checked(&p);
    relink("bundle");
    (void)run("cd %s && rm -rf %s %s", e2e_dir(), v1, v2);
    free(cet);
    finish();
}

/* ------------------------------------------------------------------ --device (nn/cuda/) */

/* Towers on a GPU agree with the CPU within 1e-5 (cuBLAS sums in another
 * order); without one, a cuda device is a start-up error naming the CUDA
 * error, and auto is the CPU. */
#define DEVICE_TOL 1e-5

static int have_gpu(void) {
    rk_device *d = NULL;
    rk_err e = {0};
    if (rk_device_open("cuda:0", &d, &e) != RK_OK) return 0;
    rk_device_close(d);
    return 1;
}

static void expect_all_groups(double tol) {
    for (int g = 0; g < MULTI_GROUPS; g++) {
        char what[64];
        snprintf(what, sizeof what, "group %d", g);
        expect_scores_tol(build(&C.multi, group_row(g), MULTI_K, g % 2), C.multi_ref + group_row(g), tol, what);
    }
    int r = MULTI_GROUPS * MULTI_K;
    expect_scores_tol(build(&C.multi, r, BIG_K, 1), C.multi_ref + r, tol, "1000 candidates");
}

static void setup_device(void) {
    static const char *const args[] = {"--device", "auto", NULL};
    cr_assert_neq(rankd_spawn(&srv, "127.0.0.1:0", NULL, args), -1, "rankd --device auto exited at start (log %s)",
                  srv.log);
    load_ctx();
}

TestSuite(e2e_device, .init = setup_device, .fini = teardown, .timeout = 240);

Test(e2e_device, auto_serves_rank_scores) {
    expect_all_groups(have_gpu() ? DEVICE_TOL : TOL);
    finish();
}

Test(e2e_device, cuda_serves_rank_scores_or_refuses_to_start) {
    static const char *const args[] = {"--device", "cuda", NULL};
    rankd_proc p = {0};
    int st = 0;
    pid_t pid = rankd_spawn(&p, "127.0.0.1:0", &st, args);
    if (!have_gpu()) {
        cr_assert_eq(pid, -1, "rankd --device cuda started without a GPU (log %s)", p.log);
        cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "exit status %d", st);
        char *text = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_read_file(p.log, &text, NULL, &e), RK_OK, "%s", e.msg);
        cr_expect(strstr(text, "--device cuda") && (strstr(text, "cudaError") || strstr(text, "librankd_cuda")),
                  "the start-up error names the device and the CUDA error:\n%s", text);
        rk_free(text);
        finish();
        return;
    }
    cr_assert_neq(pid, -1, "rankd --device cuda exited at start on a GPU machine (log %s)", p.log);
    rk_client_destroy(C.cl);
    rk_err e = {0};
    cr_assert_eq(rk_client_create(p.addr, &C.cl, &e), RK_OK, "%s", e.msg);
    expect_all_groups(DEVICE_TOL);
    stop_checked(&p);
    finish();
}

Test(e2e_device, rank_score_device_matches_or_names_the_error) {
    const char *d = e2e_dir();
    int pid = (int)getpid();
    int bad = run(BIN "rank score --model %s/bundle --input %s/ml/test.tsv --output %s/bogus.%d.tsv --device tpu "
                      ">%s/dev_bogus.%d.log 2>&1",
                  d, d, d, pid, d, pid);
    cr_expect_neq(bad, 0, "--device tpu accepted");
    int rc = run(BIN "rank score --model %s/bundle --input %s/ml/test.tsv --output %s/dev.%d.tsv --device cuda "
                     ">%s/dev.%d.log 2>&1",
                 d, d, d, pid, d, pid);
    char p[1024];
    if (!have_gpu()) {
        cr_expect_neq(rc, 0, "rank score --device cuda succeeded without a GPU");
        snprintf(p, sizeof p, "%s/dev.%d.log", d, pid);
        char *text = NULL;
        rk_err e = {0};
        cr_assert_eq(rk_read_file(p, &text, NULL, &e), RK_OK, "%s", e.msg);
        cr_expect(strstr(text, "device 'cuda'") && (strstr(text, "cudaError") || strstr(text, "librankd_cuda")),
                  "names the CUDA error:\n%s", text);
        rk_free(text);
    } else {
        cr_assert_eq(rc, 0, "rank score --device cuda failed (see %s/dev.%d.log)", d, pid);
        snprintf(p, sizeof p, "%s/dev.%d.tsv", d, pid);
        double mx = max_diff_test_ref(p);
        cr_expect(mx <= DEVICE_TOL, "rank score --device cuda vs cpu: max abs diff %.3g", mx);
    }
    finish();
}

/* ------------------------------------------------------------------ Redis Cluster tier */

static char redis_dir[1200], redis_seeds[512];
static rankd_proc r2; /* the second replica; stopped by the teardown when a test fails first */

static void setup_redis(void) {
    snprintf(redis_dir, sizeof redis_dir, "%s/redis-%d", e2e_dir(), (int)getpid());
    cr_assert_eq(run("bash " RK_SOURCE_DIR "/scripts/redis-cluster.sh start %s %d", redis_dir, (int)getpid()), 0,
                 "cannot start the test Redis Cluster");
    char p[1300], *text = NULL;
    rk_err e = {0};
    snprintf(p, sizeof p, "%s/env", redis_dir);
    cr_assert_eq(rk_read_file(p, &text, NULL, &e), RK_OK, "%s", e.msg);
    const char *s = strstr(text, "RK_REDIS_SEEDS=");
    cr_assert_not_null(s);
    snprintf(redis_seeds, sizeof redis_seeds, "%.*s", (int)strcspn(s + 15, "\n"), s + 15);
    rk_free(text);
    cr_assert_eq(run(BIN "rank store publish-redis --model %s/bundle --redis-cluster %s >/dev/null 2>&1", e2e_dir(),
                     redis_seeds), 0, "rank store publish-redis failed");
}

static void teardown_redis(void) {
    free_ctx();
    rankd_stop(&srv);
    rankd_stop(&r2);
    (void)run("bash " RK_SOURCE_DIR "/scripts/redis-cluster.sh stop %s", redis_dir);
}

/* The Rank of req through cl: candidate 0's pCTR. */
static float score0(rk_client *cl, Rankd__V1__RankRequest *req) {
    rk_call_result res;
    Rankd__V1__RankResponse *resp = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_client_rank(cl, req, 30000, &res, &resp, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(res.code, OK, "status %d: %s", res.code, res.msg);
    float v = resp->scores[0]->pctr;
    rk_client_free_response(resp);
    return v;
}

/* One client per replica. */
static void clients_of(const rankd_proc *a, const rankd_proc *b, rk_client **ca, rk_client **cb) {
    rk_err e = {0};
    cr_assert_eq(rk_client_create(a->addr, ca, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_client_create(b->addr, cb, &e), RK_OK, "%s", e.msg);
}

TestSuite(e2e_redis, .init = setup_redis, .fini = teardown_redis, .timeout = 240);

/* Two rankd replicas on one bundle whose rows live in a Redis Cluster (a
 * 1 MiB cache in front, --redis-fallback default: a row Redis did not
 * answer would change the score), behind one round_robin channel: every
 * score equals `rank score`'s (RocksDB); an update through replica 1 reaches
 * replica 2, which had the row cached, within a second; after replica 2 is
 * killed (-9) every call on the channel still succeeds, and replica 1
 * served only part of the calls before (round_robin). */
Test(e2e_redis, replicas_round_robin_update_and_kill) {
    const char *extra[] = {"--redis-cluster", redis_seeds, "--redis-cache-mb", "1", "--redis-fallback", "default",
                           "--updates", NULL};
    cr_assert_neq(rankd_spawn(&srv, "127.0.0.1:0", NULL, extra), -1, "replica 1 exited (log %s)", srv.log);
    cr_assert_neq(rankd_spawn(&r2, "127.0.0.1:0", NULL, extra), -1, "replica 2 exited (log %s)", r2.log);
    load_ctx();
    rk_client_destroy(C.cl);
    char target[200];
    snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d", srv.port, r2.port);
    rk_err e = {0};
    cr_assert_eq(rk_client_create(target, &C.cl, &e), RK_OK, "%s", e.msg);
    int sent = 0;
    for (int g = 0; g < MULTI_GROUPS; g++, sent++) {
        char what[64];
        snprintf(what, sizeof what, "group %d through both replicas", g);
        expect_scores(build(&C.multi, group_row(g), MULTI_K, 1), C.multi_ref + group_row(g), what);
    }
    /* an update written once, through replica 1 */
    rk_client *c1, *c2;
    clients_of(&srv, &r2, &c1, &c2);
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(3), MULTI_K, 1);
    float before = score0(c2, req); /* replica 2 caches the row */
    cr_assert_eq(score0(c1, req), before);
    sent += 2;
    double t0 = now_s();
    apply_movie_row(c1, req->candidates[0]->ad_id, 0.75f);
    float after1 = score0(c1, req), after2 = before;
    sent++;
    cr_assert_neq(after1, before, "replica 1 does not serve its own update");
    while (after2 != after1 && now_s() - t0 < 5.0) {
        after2 = score0(c2, req);
        sent++;
        if (after2 != after1) sleep_ms(2);
    }
    double seen_ms = (now_s() - t0) * 1e3;
    cr_log_info("update through replica 1 served by replica 2 after %.1f ms", seen_ms);
    cr_assert_eq(after2, after1, "replica 2 never served the update");
    cr_assert_lt(seen_ms, 1000.0, "replica 2 served the update after %.0f ms", seen_ms);
    rk_client_destroy(c1);
    rk_client_destroy(c2);
    /* replica 2 dies; nothing is in flight, so nothing fails once the
     * client's channel has seen the connection close (its I/O thread may
     * wait for a core on a loaded 2-core machine: 300 ms was seen too short) */
    kill(r2.pid, SIGKILL);
    waitpid(r2.pid, NULL, 0);
    r2.pid = 0;
    sleep_ms(2000);
    for (int i = 0; i < 10; i++, sent++) expect_good();
    rk_client_destroy(C.cl);
    C.cl = NULL;
    char log[sizeof srv.log];
    snprintf(log, sizeof log, "%s", srv.log);
    stop_checked(&srv);
    char *text = NULL;
    cr_assert_eq(rk_read_file(log, &text, NULL, &e), RK_OK, "%s", e.msg);
    const char *ok = strstr(text, "rank_ok="), *dr = strstr(text, "default_rows=");
    cr_assert(ok && dr, "replica 1's exit counters are missing (log %s)", log);
    long served = atol(ok + 8), defaulted = atol(dr + 13);
    rk_free(text);
    cr_assert_gt(served, 10, "replica 1 served %ld calls", served);
    cr_assert_lt(served, sent, "replica 1 served all %d calls: no round robin", sent);
    cr_assert_eq(defaulted, 0, "%ld rows got the default row with a healthy cluster", defaulted);
}

/* The tables leave the machine: `rank store thin` copies the published
 * bundle without tables/; rankd refuses it without a cluster, naming why;
 * two replicas serve it from the cluster alone (--redis-fallback is moot:
 * no RocksDB) behind round_robin with every score equal to `rank score` on
 * the full bundle; an update through replica 1 reaches replica 2. Then a
 * newer version of the same lineage is published while both serve the old
 * one (kept: leased), and when the last replica stops, the old version is
 * dropped from the cluster by itself. */
Test(e2e_redis, thin_bundle_from_the_cluster_and_old_version_dropped) {
    const char *d = e2e_dir();
    char thin[64], path[1400], err[1400];
    snprintf(thin, sizeof thin, "thin-%d", (int)getpid());
    cr_assert_eq(run(BIN "rank store thin --model %s/bundle --out %s/%s --redis-cluster %s >/dev/null", d, d, thin,
                     redis_seeds), 0, "rank store thin failed");
    snprintf(path, sizeof path, "%s/%s/tables", d, thin);
    cr_assert(!rk_path_exists(path), "the thin bundle has tables/");
    snprintf(path, sizeof path, "%s/%s/dense.safetensors", d, thin);
    cr_assert(rk_path_exists(path), "the thin bundle lacks dense.safetensors");
    snprintf(err, sizeof err, "%s/thin-refused-%d.txt", d, (int)getpid());
    cr_assert_eq(run(BIN "rankd --model %s/%s --listen 127.0.0.1:0 >/dev/null 2>%s", d, thin, err), 1);
    char *text = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(err, &text, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert(strstr(text, "needs rankd --redis-cluster"), "rankd without a cluster said: %s", text);
    rk_free(text);

    bundle_name = thin;
    /* a key Redis does not answer in time gets the default row (no RocksDB here): on a loaded
     * 2-core machine 50 ms was seen too short for exact scores, so a wide budget */
    const char *extra[] = {"--redis-cluster", redis_seeds, "--redis-cache-mb", "1", "--redis-timeout-ms", "5000",
                           "--updates", NULL};
    cr_assert_neq(rankd_spawn(&srv, "127.0.0.1:0", NULL, extra), -1, "replica 1 exited (log %s)", srv.log);
    cr_assert_neq(rankd_spawn(&r2, "127.0.0.1:0", NULL, extra), -1, "replica 2 exited (log %s)", r2.log);
    bundle_name = "bundle";
    load_ctx(); /* the full bundle: requests are built from its model.json */
    rk_client_destroy(C.cl);
    char target[200];
    snprintf(target, sizeof target, "ipv4:127.0.0.1:%d,127.0.0.1:%d", srv.port, r2.port);
    cr_assert_eq(rk_client_create(target, &C.cl, &e), RK_OK, "%s", e.msg);
    expect_all_groups(TOL); /* every score from the cluster alone equals rank score's on the full bundle */
    /* rank query takes the thin bundle too (it reads model.json only) */
    cr_assert_eq(run(BIN "rank query --addr %s --model %s/%s --input %s/ml/test.tsv --output %s/%s.q.tsv --candidates 50 "
                         ">%s/%s.query.log 2>&1", target, d, thin, d, d, thin, d, thin),
                 0, "rank query on the thin bundle failed (see %s/%s.query.log)", d, thin);
    snprintf(path, sizeof path, "%s/%s.q.tsv", d, thin);
    double mx = max_diff_test_ref(path);
    cr_log_info("thin bundle, 2 replicas: rank query vs rank score on the full bundle: max abs diff %.3g", mx);
    cr_assert(mx <= TOL, "rank query through the thin replicas vs rank score: max abs diff %.3g", mx);
    rk_client *c1, *c2;
    clients_of(&srv, &r2, &c1, &c2);
    Rankd__V1__RankRequest *req = build(&C.multi, group_row(2), MULTI_K, 1);
    float before = score0(c2, req);
    apply_movie_row(c1, req->candidates[0]->ad_id, -0.5f);
    float after1 = score0(c1, req), after2 = before;
    cr_assert_neq(after1, before, "replica 1 does not serve its own update");
    double t0 = now_s();
    while (after2 != after1 && now_s() - t0 < 5.0) {
        after2 = score0(c2, req);
        if (after2 != after1) sleep_ms(2);
    }
    cr_assert_eq(after2, after1, "replica 2 never served the update");
    cr_log_info("thin bundle: update through replica 1 served by replica 2 after %.1f ms", (now_s() - t0) * 1e3);
    rk_client_destroy(c1);
    rk_client_destroy(c2);
    rk_client_destroy(C.cl);
    C.cl = NULL;

    /* a newer version of the lineage (the model's name) while both serve the old one */
    cr_assert_eq(run(BIN "rank store convert --model %s/bundle --codec fp16 --out %s/%s-v2 >/dev/null 2>&1", d, d, thin), 0);
    snprintf(err, sizeof err, "%s/thin-publish-%d.txt", d, (int)getpid());
    cr_assert_eq(run(BIN "rank store publish-redis --model %s/%s-v2 --redis-cluster %s >%s 2>/dev/null", d, thin,
                     redis_seeds, err), 0);
    cr_assert_eq(rk_read_file(err, &text, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert(strstr(text, "0 older version(s) dropped"), "publish of v2 said: %s", text);
    rk_free(text);
    char log1[sizeof srv.log];
    snprintf(log1, sizeof log1, "%s", srv.log);
    stop_checked(&srv);
    cr_assert_eq(rk_read_file(log1, &text, NULL, &e), RK_OK, "%s", e.msg);
    const char *dr = strstr(text, "default_rows=");
    cr_assert(dr && atol(dr + 13) == 0, "replica 1 served default rows: %s", dr ? dr : "(no exit counters)");
    rk_free(text);
    cr_assert_eq(run(BIN "rank store thin --model %s/bundle --out %s/%s-again --redis-cluster %s >/dev/null 2>&1", d, d,
                     thin, redis_seeds), 0, "the old version was dropped while replica 2 still served it");
    char log2[sizeof r2.log];
    snprintf(log2, sizeof log2, "%s", r2.log);
    stop_checked(&r2);
    snprintf(err, sizeof err, "%s/thin-gone-%d.txt", d, (int)getpid());
    cr_assert_eq(run(BIN "rank store thin --model %s/bundle --out %s/%s-gone --redis-cluster %s >/dev/null 2>%s", d, d,
                     thin, redis_seeds, err), 1, "the old version is still in the cluster after its last replica stopped");
    cr_assert_eq(rk_read_file(err, &text, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert(strstr(text, "not (fully) loaded"), "%s", text);
    rk_free(text);
    cr_assert_eq(rk_read_file(log2, &text, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert(strstr(text, "dropped retired version"), "replica 2's log does not say it dropped the old version");
    rk_free(text);
}

/* ------------------------------------------------------------------ a wide model */

/* No fixed caps, end to end: a model of 1,000 sparse and 200 dense features
 * (rankd refused more than 32 before), generated here, trained with
 * `rank train`, saved, scored offline with `rank score`, served by the real
 * rankd and queried with `rank query`: served pCTRs equal the offline ones
 * and the planted signal is learned (test AUC). Users are runs of 10 rows
 * that share every user-side value, so `rank query` sends real
 * multi-candidate requests. */
#ifdef __SANITIZE_ADDRESS__
/* Under AddressSanitizer (make asan) the save of 1,000 tables takes over 10
 * minutes: RocksDB rewrites and re-parses its OPTIONS file per column
 * family (quadratic, allocation-heavy; README "Limits that remain"). The
 * sanitizer build checks the same paths with 300 sparse features; `make
 * test` (CI) runs the full 1,000. */
#define WIDE_SPARSE 300
#else
#define WIDE_SPARSE 1000
#endif
#define WIDE_DENSE 200
#define WIDE_USER_SPARSE (WIDE_SPARSE * 3 / 10)
#define WIDE_USER_DENSE 100

static void wide_write(const char *path, int n, unsigned seed) {
    FILE *o = fopen(path, "w");
    cr_assert(o, "%s", path);
    fprintf(o, "label");
    for (int f = 0; f < WIDE_SPARSE; f++) fprintf(o, "\ts%d", f);
    for (int f = 0; f < WIDE_DENSE; f++) fprintf(o, "\td%d", f);
    fprintf(o, "\n");
    rk_rng r;
    rk_rng_seed(&r, seed);
    int *sv = calloc(WIDE_SPARSE, sizeof *sv);
    double *dv = calloc(WIDE_DENSE, sizeof *dv);
    for (int i = 0; i < n; i++) {
        int new_user = i % 10 == 0;
        for (int f = 0; f < WIDE_SPARSE; f++)
            if (f >= WIDE_USER_SPARSE || new_user) sv[f] = (int)rk_rng_below(&r, 20);
        for (int f = 0; f < WIDE_DENSE; f++)
            if (f >= WIDE_USER_DENSE || new_user) dv[f] = rk_rng_normal(&r);
        /* planted: a user feature, two item features, a dense of each side */
        double z = 1.5 * (sv[7] % 2 ? 1 : -1) + 1.5 * (sv[WIDE_SPARSE * 2 / 3] < 10 ? 1 : -1) +
                   (sv[WIDE_SPARSE - 1] % 3 == 0 ? 1 : -1) + dv[3] - dv[150];
        int y = rk_rng_uniform(&r) < 1 / (1 + exp(-z));
        fprintf(o, "%d", y);
        for (int f = 0; f < WIDE_SPARSE; f++) fprintf(o, "\t%d", sv[f]);
        for (int f = 0; f < WIDE_DENSE; f++) fprintf(o, "\t%.4f", dv[f]);
        fprintf(o, "\n");
    }
    free(sv);
    free(dv);
    cr_assert_eq(fclose(o), 0);
}

static void wide_config(const char *path) {
    FILE *o = fopen(path, "w");
    cr_assert(o, "%s", path);
    fprintf(o, "{\"name\": \"wide\", \"features\": [");
    for (int f = 0; f < WIDE_SPARSE; f++)
        fprintf(o, "%s{\"name\": \"s%d\", \"side\": \"%s\", \"table_size\": 64, \"dim\": 4, \"max_values\": 1}", f ? "," : "",
                f, f < WIDE_USER_SPARSE ? "user" : "item");
    for (int f = 0; f < WIDE_DENSE; f++)
        fprintf(o, ",{\"name\": \"d%d\", \"kind\": \"dense\", \"side\": \"%s\"}", f, f < WIDE_USER_DENSE ? "user" : "item");
    fprintf(o, "], \"tower\": {\"type\": \"dnn\", \"hidden\": [32, 16]},"
               " \"train\": {\"seed\": 3, \"batch_size\": 128, \"max_epochs\": 3, \"patience\": 1, \"threads\": 1,"
               " \"lr_dense\": 0.003, \"lr_embed\": 0.05}}\n");
    cr_assert_eq(fclose(o), 0);
}

static void setup_wide(void) {
    const char *d = e2e_dir();
    cr_assert_eq(run("mkdir -p %s/wide/data", d), 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/wide/data/train.tsv", d);
    wide_write(p, 3000, 1);
    snprintf(p, sizeof p, "%s/wide/data/valid.tsv", d);
    wide_write(p, 600, 2);
    snprintf(p, sizeof p, "%s/wide/data/test.tsv", d);
    wide_write(p, 600, 3);
    snprintf(p, sizeof p, "%s/wide/config.json", d);
    wide_config(p);
    cr_assert_eq(run(BIN "rank train --config %s/wide/config.json --data %s/wide/data --out %s/wide/bundle >%s/wide/train.log 2>&1",
                     d, d, d, d),
                 0, "rank train of the wide model failed (see %s/wide/train.log)", d);
    cr_assert_eq(run(BIN "rank score --model %s/wide/bundle --input %s/wide/data/test.tsv --output %s/wide/scores.tsv "
                         ">>%s/wide/train.log 2>&1",
                     d, d, d, d),
                 0, "rank score of the wide model failed (see %s/wide/train.log)", d);
    bundle_name = "wide/bundle";
    start_default();
}

static void teardown_wide(void) { rankd_stop(&srv); }

TestSuite(e2e_wide, .init = setup_wide, .fini = teardown_wide, .timeout = 600);

Test(e2e_wide, thousand_sparse_two_hundred_dense_served_as_scored) {
    const char *d = e2e_dir();
    rk_model *m;
    rk_err e = {0};
    char p[1024];
    snprintf(p, sizeof p, "%s/wide/bundle", d);
    cr_assert_eq(rk_model_open(p, &m, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(rk_model_config(m)->n_features, WIDE_SPARSE + WIDE_DENSE);
    cr_expect_eq(rk_model_cfg_input_dim(rk_model_config(m)), WIDE_SPARSE * 4 + WIDE_DENSE);
    rk_model_destroy(m);
    cr_assert_eq(run(BIN "rank query --addr %s --model %s/wide/bundle --input %s/wide/data/test.tsv --output %s/wide/q.tsv "
                         "--candidates 10 >%s/wide/query.log 2>&1",
                     srv.addr, d, d, d, d),
                 0, "rank query failed (see %s/wide/query.log)", d);
    int n_ref, n_got;
    snprintf(p, sizeof p, "%s/wide/scores.tsv", d);
    float *ref = read_scores(p, &n_ref);
    snprintf(p, sizeof p, "%s/wide/q.tsv", d);
    float *got = read_scores(p, &n_got);
    cr_assert_eq(n_ref, 600);
    cr_assert_eq(n_got, n_ref);
    double mx = 0;
    for (int i = 0; i < n_ref; i++) mx = fmax(mx, fabs((double)got[i] - ref[i]));
    cr_expect(mx <= TOL, "served vs rank score: max abs diff %.3g", mx);
    /* the planted signal is learned: AUC of the offline scores on the test labels */
    tsv t;
    snprintf(p, sizeof p, "%s/wide/data/test.tsv", d);
    cr_assert_eq(tsv_read(p, &t), 0);
    float *lab = calloc((size_t)n_ref, sizeof *lab);
    for (int i = 0; i < n_ref; i++) lab[i] = strtof(t.rows[i][0], NULL);
    rk_metrics mt;
    cr_assert_eq(rk_metrics_compute(ref, lab, (size_t)n_ref, &mt, &e), RK_OK, "%s", e.msg);
    cr_expect_gt(mt.auc, 0.68, "test AUC %.4f", mt.auc);
    free(lab);
    tsv_free(&t);
    free(ref);
    free(got);
    stop_checked(&srv);
}

/* ------------------------------------------------------------------ README recipes */

/* The README's recipes, command for command, on generated files in the raw
 * formats: Criteo's train.txt (label, I1..I13, C1..C26; tab-separated, no
 * header, empty = missing) and Avazu's train.csv (header, click label,
 * 22 categorical columns): rank data log with the shipped schema, rank
 * train with the shipped 39- / 23-field config, rank score, then rankd
 * serving the bundle and rank query: served = offline. */
static void gen_criteo(const char *path, int n) {
    FILE *o = fopen(path, "w");
    cr_assert(o);
    rk_rng r;
    rk_rng_seed(&r, 11);
    for (int i = 0; i < n; i++) {
        int c0 = (int)rk_rng_below(&r, 30), i0 = (int)rk_rng_below(&r, 2000) - 3;
        fprintf(o, "%d", rk_rng_uniform(&r) < (c0 < 10 ? 0.6 : 0.1) + (i0 > 1000 ? 0.2 : 0));
        for (int k = 0; k < 13; k++) {
            if (rk_rng_below(&r, 5) == 0) fprintf(o, "\t");
            else fprintf(o, "\t%d", k ? (int)rk_rng_below(&r, 100) : i0);
        }
        for (int k = 0; k < 26; k++) fprintf(o, k == 5 && i % 3 == 0 ? "\t" : "\t%08x", k ? (unsigned)(rk_rng_below(&r, 50) * 2654435761u) : (unsigned)c0);
        fprintf(o, "\n");
    }
    cr_assert_eq(fclose(o), 0);
}

static void gen_avazu(const char *path, int n) {
    static const char *cols[] = {"hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                                 "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                                 "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"};
    FILE *o = fopen(path, "w");
    cr_assert(o);
    fprintf(o, "id,click");
    for (int k = 0; k < 22; k++) fprintf(o, ",%s", cols[k]);
    fprintf(o, "\n");
    rk_rng r;
    rk_rng_seed(&r, 12);
    for (int i = 0; i < n; i++) {
        int site = (int)rk_rng_below(&r, 20);
        fprintf(o, "%d,%d,%d", 1000 + i, rk_rng_uniform(&r) < (site < 5 ? 0.5 : 0.1), 14102100 + i / 100);
        for (int k = 1; k < 22; k++) {
            if (k == 3) fprintf(o, ",s%d", site);
            else fprintf(o, ",%x", (unsigned)rk_rng_below(&r, 40));
        }
        fprintf(o, "\n");
    }
    cr_assert_eq(fclose(o), 0);
}

static void recipe(const char *name, const char *raw, const char *schema, const char *config) {
    const char *d = e2e_dir();
    char dir[700];
    snprintf(dir, sizeof dir, "%s/recipe_%s", d, name);
    cr_assert_eq(run("rm -rf %s && mkdir -p %s", dir, dir), 0);
    char in[800];
    snprintf(in, sizeof in, "%s/%s", dir, raw);
    if (!strcmp(name, "criteo")) gen_criteo(in, 3000);
    else gen_avazu(in, 3000);
    cr_assert_eq(run(BIN "rank data log --schema " RK_SOURCE_DIR "/configs/%s --input %s --out %s/data >%s/log 2>&1", schema,
                     in, dir, dir),
                 0, "rank data log (see %s/log)", dir);
    cr_assert_eq(run(BIN "rank train --config " RK_SOURCE_DIR "/configs/%s --data %s/data --out %s/model --epochs 2 >>%s/log 2>&1",
                     config, dir, dir, dir),
                 0, "rank train (see %s/log)", dir);
    cr_assert_eq(run(BIN "rank score --model %s/model --input %s/data/test.tsv --output %s/scores.tsv >>%s/log 2>&1", dir, dir,
                     dir, dir),
                 0, "rank score (see %s/log)", dir);
    char rel[800];
    snprintf(rel, sizeof rel, "recipe_%s/model", name);
    bundle_name = rel;
    start_default();
    cr_assert_eq(run(BIN "rank query --addr %s --model %s/model --input %s/data/test.tsv --output %s/q.tsv --candidates 50 "
                         ">>%s/log 2>&1",
                     srv.addr, dir, dir, dir, dir),
                 0, "rank query (see %s/log)", dir);
    char p[900];
    int n_ref, n_got;
    snprintf(p, sizeof p, "%s/scores.tsv", dir);
    float *ref = read_scores(p, &n_ref);
    snprintf(p, sizeof p, "%s/q.tsv", dir);
    float *got = read_scores(p, &n_got);
    cr_assert_eq(n_ref, 300, "the ordered split's last 10%%");
    cr_assert_eq(n_got, n_ref);
    double mx = 0;
    for (int i = 0; i < n_ref; i++) mx = fmax(mx, fabs((double)got[i] - ref[i]));
    cr_expect(mx <= TOL, "%s: served vs rank score: max abs diff %.3g", name, mx);
    free(ref);
    free(got);
    stop_checked(&srv);
}

TestSuite(e2e_recipes, .fini = teardown_wide, .timeout = 300);

Test(e2e_recipes, criteo_raw_to_served_model) { recipe("criteo", "train.txt", "criteo_schema.json", "criteo_dcnv2.json"); }

Test(e2e_recipes, avazu_raw_to_served_model) { recipe("avazu", "train.csv", "avazu_schema.json", "avazu_dcnv2.json"); }

/* ------------------------------------------------------------------ offline CLI */

/* rank score on rows whose labels are all 1: NE is undefined (null) but the
 * calibration is mean pCTR / 1, printed on stdout; --metrics-json wrote
 * calibration null whenever NE was. A NUL inside a row is refused naming
 * it (rank score used to score the rows before it and exit 0). */
Test(e2e_cli, score_metrics_json_and_nul_rows) {
    const char *d = e2e_dir();
    int pid = (int)getpid();
    cr_assert_eq(run("awk 'BEGIN{FS=OFS=\"\\t\"} NR==1{print; next} NR<=51{$1=1; print}' %s/ml/test.tsv >%s/pos.%d.tsv",
                     d, d, pid), 0);
    cr_assert_eq(run(BIN "rank score --model %s/bundle --input %s/pos.%d.tsv --output %s/pos.%d.out --metrics-json "
                         "%s/pos.%d.json >%s/pos.%d.log 2>&1", d, d, pid, d, pid, d, pid, d, pid), 0);
    char p[1024];
    snprintf(p, sizeof p, "%s/pos.%d.json", d, pid);
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    cr_assert_not_null(j, "%s: %s", p, je.text);
    cr_expect(json_is_null(json_object_get(j, "ne")), "ne with only positives");
    json_t *cal = json_object_get(j, "calibration"), *mp = json_object_get(j, "mean_pctr");
    cr_assert(json_is_number(cal) && json_is_number(mp), "calibration / mean_pctr not numbers");
    cr_expect_float_eq(json_number_value(cal), json_number_value(mp), 1e-9, "calibration = mean pCTR / 1");
    cr_expect_eq(json_integer_value(json_object_get(j, "n")), 50);
    json_decref(j);
    /* a NUL byte inside row 12 */
    cr_assert_eq(run("head -n 11 %s/ml/test.tsv >%s/nul.%d.tsv && printf '1\\t1\\t2\\t3\\000x\\t\\t2000\\t1\\t1\\t\\t4\\n' >>%s/nul.%d.tsv "
                     "&& sed -n 13,50p %s/ml/test.tsv >>%s/nul.%d.tsv", d, d, pid, d, pid, d, d, pid), 0);
    cr_expect_neq(run(BIN "rank score --model %s/bundle --input %s/nul.%d.tsv --output %s/nul.%d.out >%s/nul.%d.log 2>&1",
                      d, d, pid, d, pid, d, pid), 0, "rank score accepted a NUL byte");
    char *log = NULL;
    snprintf(p, sizeof p, "%s/nul.%d.log", d, pid);
    rk_err e = {0};
    cr_assert_eq(rk_read_file(p, &log, NULL, &e), RK_OK);
    cr_expect(strstr(log, "row 12, column 4 'movie_id' (byte 8 of the row"), "%s", log);
    rk_free(log);
}
