/*
 * bench/service_cost.c — CPU time per call of rankd's Rank handler without
 * gRPC, beside rank-bench's in-process baseline, in one process:
 *   handle  rk_service_handle on the packed request (decode, validation and
 *           featurization, lookup, towers, the response);
 *   inproc  the same request already unpacked by protobuf-c (outside the
 *           clock), fed to an rk_scorer as rank-bench --inprocess does
 *           (bench/inprocess.c) and scored;
 *   decode  rankd's request decoder alone (serve/decode.c).
 * The requests are built from a data file as rank-bench builds them
 * (rk_req_build, the model's aliases), N consecutive rows each. The two
 * paths alternate in short windows (ROUNDS of them, each a pass over the
 * requests) and each figure is the median over windows of thread CPU time
 * per call, so a neighbour's load falls on both alike; extra, the median
 * of handle - inproc over adjacent windows, is what the service adds to
 * the scoring itself.
 *
 *   service_cost MODEL DATA [CANDIDATES] [ROUNDS] [RAM_TABLES_MB]
 *
 * SERVICE_COST_ONLY=handle|inproc|decode runs that path alone (for perf).
 *
 * Prints one line: service_cost: handle_us=X inproc_us=X extra_us=X
 * decode_us=X rounds=R requests=K request_bytes=B
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inprocess.h"
#include "internal.h"
#include "rank.pb-c.h"

#define MAX_REQ 16

static double thread_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A bump allocator for the decoder alone (reset before each decode). */
typedef struct {
    unsigned char *base;
    size_t cap, used;
} bump;

static void *bump_alloc(void *data, size_t n) {
    bump *b = data;
    n = (n + 15) & ~(size_t)15;
    if (b->used + n > b->cap) return NULL;
    void *p = b->base + b->used;
    b->used += n;
    return p;
}

static void bump_free(void *data, void *p) {
    (void)data;
    (void)p;
}

typedef struct {
    uint8_t *bytes[MAX_REQ];
    size_t len[MAX_REQ];
    Rankd__V1__RankRequest *msg[MAX_REQ]; /* unpacked by protobuf-c, for inproc */
    int n;
} reqs;

static int build(const char *data, const rk_model_cfg *cfg, int n_cand, reqs *q, rk_err *e) {
    rk_req_rows *rows;
    if (rk_req_rows_read(data, cfg, &rows, e)) return -1;
    size_t total = rk_req_rows_count(rows), *idx = malloc((size_t)n_cand * sizeof *idx);
    q->n = 0;
    for (int k = 0; idx && k < MAX_REQ && (size_t)(k + 1) * (size_t)n_cand <= total; k++) {
        for (int i = 0; i < n_cand; i++) idx[i] = (size_t)k * (size_t)n_cand + (size_t)i;
        rk_req_opts ro = {.request_id = "service-cost"};
        Rankd__V1__RankRequest *r = rk_req_build(rows, idx, (size_t)n_cand, &ro);
        if (!r) break;
        q->len[k] = rankd__v1__rank_request__get_packed_size(r);
        q->bytes[k] = malloc(q->len[k]);
        if (q->bytes[k]) rankd__v1__rank_request__pack(r, q->bytes[k]);
        rk_free(r);
        if (!q->bytes[k] || !(q->msg[k] = rankd__v1__rank_request__unpack(NULL, q->len[k], q->bytes[k]))) break;
        q->n++;
    }
    free(idx);
    rk_req_rows_destroy(rows);
    if (q->n == 0) return rk_fail(e, RK_EINVAL, "%s: fewer than %d rows", data, n_cand), -1;
    return 0;
}

/* One window: a pass over the requests by one path; CPU us per call, or -1. */
static double window(int path, rk_service *svc, rk_scorer *sc, const rk_model_cfg *cfg, float *pctr, bump *b,
                     const reqs *q) {
    ProtobufCAllocator a = {bump_alloc, bump_free, b};
    const uint8_t *resp;
    size_t resp_len;
    rk_err e = {0};
    double c0 = thread_cpu();
    for (int k = 0; k < q->n; k++) {
        Rankd__V1__RankRequest *r;
        b->used = 0;
        int rc = path == 0   ? rk_service_handle(svc, q->bytes[k], q->len[k], rk_now(), &resp, &resp_len, &e)
                 : path == 1 ? rk_bench_score_inprocess(sc, cfg, q->msg[k], pctr)
                             : rk_rank_request_decode(q->bytes[k], q->len[k], &a, &r);
        if (rc) {
            fprintf(stderr, "service_cost: path %d, request %d: %s\n", path, k, path == 0 ? e.msg : "failed");
            return -1;
        }
    }
    return (thread_cpu() - c0) / q->n * 1e6;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: service_cost MODEL DATA [CANDIDATES] [ROUNDS] [RAM_TABLES_MB]\n");
        return 2;
    }
    int n_cand = argc > 3 ? atoi(argv[3]) : 200, rounds = argc > 4 ? atoi(argv[4]) : 200;
    size_t ram_mb = argc > 5 ? (size_t)atol(argv[5]) : 1024;
    if (n_cand < 1 || n_cand > 100000 || rounds < 1 || rounds > 100000) return 2;
    rk_err e = {0};
    rk_model *m;
    rk_service *svc = NULL;
    rk_scorer *sc = NULL;
    reqs q = {0};
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    o.max_candidates = n_cand;
    size_t ram = 0;
    if (rk_model_open(argv[1], &m, &e) || (ram_mb && rk_model_tables_to_ram(m, ram_mb << 20, &ram, &e)) ||
        build(argv[2], rk_model_config(m), n_cand, &q, &e) || rk_service_create(m, &o, &svc, &e) ||
        rk_scorer_create(m, n_cand, 256, &sc, &e)) { /* rank-bench --inprocess's scorer */
        fprintf(stderr, "service_cost: %s\n", e.msg);
        return 1;
    }
    float *pctr = malloc((size_t)n_cand * sizeof *pctr);
    bump b = {malloc(64u << 20), 64u << 20, 0};
    double *t[3];
    for (int p = 0; p < 3; p++) t[p] = malloc((size_t)rounds * sizeof(double));
    if (!pctr || !b.base || !t[0] || !t[1] || !t[2]) return 1;
    for (int p = 0; p < 3; p++) /* warm-up */
        if (window(p, svc, sc, rk_model_config(m), pctr, &b, &q) < 0) return 1;
    const char *only = getenv("SERVICE_COST_ONLY");
    int one = !only ? -1 : !strcmp(only, "handle") ? 0 : !strcmp(only, "inproc") ? 1 : !strcmp(only, "decode") ? 2 : -1;
    for (int r = 0; r < rounds; r++)
        for (int p = 0; p < 3; p++)
            if (one < 0 || one == p) {
                if ((t[p][r] = window(p, svc, sc, rk_model_config(m), pctr, &b, &q)) < 0) return 1;
            } else {
                t[p][r] = 0;
            }
    double h = median(t[0], rounds), ip = median(t[1], rounds), d = median(t[2], rounds);
    for (int r = 0; r < rounds; r++) t[2][r] = t[0][r] - t[1][r]; /* paired: the same moment's load */
    double x = median(t[2], rounds);
    printf("service_cost: handle_us=%.1f inproc_us=%.1f extra_us=%.1f decode_us=%.1f rounds=%d requests=%d "
           "request_bytes=%zu\n",
           h, ip, x, d, rounds, q.n, q.len[0]);
    for (int p = 0; p < 3; p++) free(t[p]);
    free(b.base);
    free(pctr);
    for (int k = 0; k < q.n; k++) {
        rankd__v1__rank_request__free_unpacked(q.msg[k], NULL);
        free(q.bytes[k]);
    }
    rk_scorer_destroy(sc);
    rk_service_destroy(svc);
    rk_model_destroy(m);
    return 0;
}
