/*
 * tests/test_serve.c — rankd's serving path under load, in-process.
 *
 * A bundle is made once per test from configs/movielens_dcnv2.json with
 * freshly initialised weights (no training: these tests are about memory,
 * deadlines and the queue, not scores), saved and reopened from disk so the
 * tables are served from RocksDB as in rankd.
 *
 *  - no allocation on the request path: after two warm-up calls, every
 *    rk_malloc fails (rk_alloc_fail_after(1)) and requests of 1..500
 *    candidates must still be answered OK. This covers the service (unpack
 *    arena, validation, response), the scorer and the embedding lookups;
 *    RocksDB's and gRPC core's own allocations do not go through rk_malloc
 *    (bench/RESULTS.md counts them with an LD_PRELOAD counter). Through the
 *    store, up to 500 candidates (rk_store_get allocates past 512 unique
 *    keys per table); with the tables in RAM, up to 1000.
 *  - a full queue answers RESOURCE_EXHAUSTED at once instead of growing;
 *  - a request whose deadline passed while it waited in the queue is
 *    answered DEADLINE_EXCEEDED without model work (counted by the server).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "rank.h"
#include "rank.pb-c.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif

static char bundle_dir[256];
static rk_model *M;

static void make_bundle(void) {
    char *text;
    rk_err e = {0};
    cr_assert_eq(rk_read_file(RK_SOURCE_DIR "/configs/movielens_dcnv2.json", &text, NULL, &e), RK_OK, "%s", e.msg);
    rk_model_cfg cfg;
    cr_assert_eq(rk_model_cfg_parse(text, &cfg, &e), RK_OK, "%s", e.msg);
    rk_free(text);
    for (int f = 0; f < cfg.n_features; f++) /* the dense feature needs statistics */
        if (cfg.features[f].kind == RK_FEAT_DENSE) cfg.features[f].mean = 1990, cfg.features[f].std = 20;
    rk_model *m;
    cr_assert_eq(rk_model_create(&cfg, &m, &e), RK_OK, "%s", e.msg);
    snprintf(bundle_dir, sizeof bundle_dir, "/tmp/rk_serve_test_%d", (int)getpid());
    cr_assert_eq(rk_model_save(m, bundle_dir, NULL, 1, &e), RK_OK, "%s", e.msg);
    rk_model_destroy(m);
    cr_assert_eq(rk_model_open(bundle_dir, &M, &e), RK_OK, "%s", e.msg);
}

static void drop_bundle(void) {
    rk_model_destroy(M);
    M = NULL;
    rk_err e = {0};
    rk_rm_rf(bundle_dir, &e);
}

/* A MovieLens-shaped request of n candidates (user u), serialized; free(). */
static uint8_t *make_request(int n, int u, size_t *len) {
    static char vals[1100][3][16];
    static char *hist[20];
    static char hist_s[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(hist_s[i], 16, "%d", 100 + i * 7 + u);
        hist[i] = hist_s[i];
    }
    Rankd__V1__RankRequest r = RANKD__V1__RANK_REQUEST__INIT;
    Rankd__V1__User us = RANKD__V1__USER__INIT;
    char uid[16], hour[8];
    snprintf(uid, sizeof uid, "%d", u);
    snprintf(hour, sizeof hour, "%d", u % 24);
    us.user_id = uid;
    us.recent_item_ids = hist;
    us.n_recent_item_ids = 20;
    char *hv[1] = {hour}, *wv[1] = {"3"};
    Rankd__V1__SparseFeature sh = RANKD__V1__SPARSE_FEATURE__INIT, sw = RANKD__V1__SPARSE_FEATURE__INIT;
    sh.name = "hour", sh.values = hv, sh.n_values = 1;
    sw.name = "weekday", sw.values = wv, sw.n_values = 1;
    Rankd__V1__SparseFeature *usp[2] = {&sh, &sw};
    us.sparse = usp;
    us.n_sparse = 2;
    r.user = &us;
    r.request_id = "t";
    Rankd__V1__Candidate *cands = calloc((size_t)n, sizeof *cands);
    Rankd__V1__Candidate **cp = calloc((size_t)n, sizeof *cp);
    Rankd__V1__SparseFeature *g = calloc((size_t)n, sizeof *g), **gp = calloc((size_t)n, sizeof *gp);
    Rankd__V1__DenseFeature *d = calloc((size_t)n, sizeof *d), **dp = calloc((size_t)n, sizeof *dp);
    char *gv[2][2] = {{"Action", "Drama"}, {"Comedy", "Romance"}};
    for (int i = 0; i < n; i++) {
        rankd__v1__candidate__init(&cands[i]);
        snprintf(vals[i][0], 16, "%d", 1 + i * 13 + u);
        cands[i].ad_id = vals[i][0];
        rankd__v1__sparse_feature__init(&g[i]);
        g[i].name = "genres";
        g[i].values = gv[i % 2];
        g[i].n_values = 2;
        gp[i] = &g[i];
        cands[i].sparse = &gp[i];
        cands[i].n_sparse = 1;
        rankd__v1__dense_feature__init(&d[i]);
        d[i].name = "year";
        d[i].value = 1980 + i % 40;
        dp[i] = &d[i];
        cands[i].dense = &dp[i];
        cands[i].n_dense = 1;
        cp[i] = &cands[i];
    }
    r.candidates = cp;
    r.n_candidates = (size_t)n;
    *len = rankd__v1__rank_request__get_packed_size(&r);
    uint8_t *buf = malloc(*len);
    rankd__v1__rank_request__pack(&r, buf);
    free(cands), free(cp), free(g), free(gp), free(d), free(dp);
    return buf;
}

Test(serve, request_path_does_not_allocate) {
    make_bundle();
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    rk_service *svc;
    rk_err e = {0};
    cr_assert_eq(rk_service_create(M, &o, &svc, &e), RK_OK, "%s", e.msg);
    int sizes[] = {200, 500, 1, 37, 200, 500};
    size_t len[6];
    uint8_t *req[6];
    for (int i = 0; i < 6; i++) req[i] = make_request(sizes[i], 7 + i, &len[i]);
    const uint8_t *resp;
    size_t resp_len;
    for (int i = 0; i < 2; i++) /* warm-up */
        cr_assert_eq(rk_service_handle(svc, req[1], len[1], rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    rk_alloc_fail_after(1); /* every rk_malloc from now on fails */
    int bad = 0;
    char msg[256] = "";
    for (int k = 0; k < 30; k++) {
        int i = k % 6;
        int code = rk_service_handle(svc, req[i], len[i], rk_now(), &resp, &resp_len, &e);
        if (code && !bad) snprintf(msg, sizeof msg, "%d candidates: code %d: %s", sizes[i], code, e.msg);
        bad += code != 0;
        Rankd__V1__RankResponse *r = code ? NULL : rankd__v1__rank_response__unpack(NULL, resp_len, resp);
        if (r) {
            if ((int)r->n_scores != sizes[i]) bad++;
            rankd__v1__rank_response__free_unpacked(r, NULL);
        }
    }
    rk_alloc_fail_after(0);
    cr_assert_eq(bad, 0, "a request allocated through rk_malloc: %s", msg);
    for (int i = 0; i < 6; i++) free(req[i]);
    rk_service_destroy(svc);
    drop_bundle();
}

/* With the tables in RAM (rankd's default when they fit) the store is not
 * read at all, so even the largest request (1000 candidates, more unique
 * rows than rk_store_get serves without allocating) allocates nothing. */
Test(serve, request_path_does_not_allocate_with_tables_in_ram) {
    make_bundle();
    size_t bytes = 0;
    rk_err e = {0};
    cr_assert_eq(rk_model_tables_to_ram(M, (size_t)64 << 20, &bytes, &e), RK_OK, "%s", e.msg);
    cr_assert_gt(bytes, 0);
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    rk_service *svc;
    cr_assert_eq(rk_service_create(M, &o, &svc, &e), RK_OK, "%s", e.msg);
    int sizes[] = {1000, 200, 1, 999};
    size_t len[4];
    uint8_t *req[4];
    for (int i = 0; i < 4; i++) req[i] = make_request(sizes[i], 11 + i, &len[i]);
    const uint8_t *resp;
    size_t resp_len;
    for (int i = 0; i < 2; i++)
        cr_assert_eq(rk_service_handle(svc, req[0], len[0], rk_now(), &resp, &resp_len, &e), 0, "%s", e.msg);
    rk_alloc_fail_after(1);
    int bad = 0;
    char msg[256] = "";
    for (int k = 0; k < 20; k++) {
        int code = rk_service_handle(svc, req[k % 4], len[k % 4], rk_now(), &resp, &resp_len, &e);
        if (code && !bad) snprintf(msg, sizeof msg, "%d candidates: code %d: %s", sizes[k % 4], code, e.msg);
        bad += code != 0;
    }
    rk_alloc_fail_after(0);
    cr_assert_eq(bad, 0, "a request allocated through rk_malloc: %s", msg);
    /* over budget: nothing loaded */
    rk_model *m2;
    char dir[300];
    snprintf(dir, sizeof dir, "%s", bundle_dir);
    cr_assert_eq(rk_model_open(dir, &m2, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_model_tables_to_ram(m2, 1024, &bytes, &e), RK_OK);
    cr_assert_eq(bytes, 0);
    rk_model_destroy(m2);
    for (int i = 0; i < 4; i++) free(req[i]);
    rk_service_destroy(svc);
    drop_bundle();
}

/* Start n calls at once on one channel, wait for all; codes[i] per call. */
static void burst(const char *addr, const uint8_t *req, size_t len, int n, int deadline_ms, int *codes) {
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, cr, NULL);
    grpc_channel_credentials_release(cr);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    typedef struct {
        grpc_call *call;
        grpc_byte_buffer *send, *recv;
        grpc_metadata_array im, tm;
        grpc_status_code st;
        grpc_slice details;
    } c_t;
    c_t *c = calloc((size_t)n, sizeof *c);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_static_string("/rankd.v1.Ranker/Rank");
    for (int i = 0; i < n; i++) {
        c[i].call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, dl, NULL);
        grpc_slice sl = grpc_slice_from_static_buffer(req, len);
        c[i].send = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_metadata_array_init(&c[i].im);
        grpc_metadata_array_init(&c[i].tm);
        grpc_op ops[6];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = c[i].send;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &c[i].im;
        ops[4].op = GRPC_OP_RECV_MESSAGE;
        ops[4].data.recv_message.recv_message = &c[i].recv;
        ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[5].data.recv_status_on_client.trailing_metadata = &c[i].tm;
        ops[5].data.recv_status_on_client.status = &c[i].st;
        ops[5].data.recv_status_on_client.status_details = &c[i].details;
        cr_assert_eq(grpc_call_start_batch(c[i].call, ops, 6, &c[i], NULL), GRPC_CALL_OK);
    }
    for (int k = 0; k < n; k++) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        cr_assert_eq(ev.type, GRPC_OP_COMPLETE);
    }
    for (int i = 0; i < n; i++) {
        codes[i] = (int)c[i].st;
        grpc_slice_unref(c[i].details);
        grpc_metadata_array_destroy(&c[i].im);
        grpc_metadata_array_destroy(&c[i].tm);
        grpc_byte_buffer_destroy(c[i].send);
        if (c[i].recv) grpc_byte_buffer_destroy(c[i].recv);
        grpc_call_unref(c[i].call);
    }
    free(c);
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

static rk_server *start(int queue_depth, char *addr, size_t cap) {
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    o.listen = "127.0.0.1:0";
    o.threads = 1;
    o.queue_depth = queue_depth;
    o.requests_per_worker = 64;
    rk_server *s;
    int port;
    rk_err e = {0};
    cr_assert_eq(rk_server_start(&o, M, &s, &port, &e), RK_OK, "%s", e.msg);
    snprintf(addr, cap, "127.0.0.1:%d", port);
    return s;
}

Test(serve, full_queue_answers_resource_exhausted, .timeout = 120) {
    make_bundle();
    grpc_init();
    char addr[64];
    rk_server *s = start(2, addr, sizeof addr);
    size_t len;
    uint8_t *req = make_request(1000, 3, &len);
    enum { N = 40 };
    int codes[N];
    burst(addr, req, len, N, 60000, codes);
    int ok = 0, busy = 0, other = 0;
    for (int i = 0; i < N; i++) ok += codes[i] == 0, busy += codes[i] == 8, other += codes[i] != 0 && codes[i] != 8;
    rk_server_counters c;
    rk_server_stop(s, &c);
    cr_assert_gt(ok, 0, "no call succeeded");
    cr_assert_gt(busy, 0, "40 calls at once into 1 worker with a queue of 2: none was refused");
    cr_assert_eq(other, 0);
    cr_assert_eq(c.rank_rejected, (uint64_t)busy);
    cr_assert_eq(c.rank_ok, (uint64_t)ok);
    cr_assert_gt(c.model_us, 0);
    free(req);
    grpc_shutdown_blocking();
    drop_bundle();
}

Test(serve, expired_in_queue_is_deadline_exceeded_without_model_work, .timeout = 120) {
    make_bundle();
    grpc_init();
    char addr[64];
    rk_server *s = start(64, addr, sizeof addr);
    size_t len;
    uint8_t *req = make_request(1000, 5, &len);
    /* warm the scorer, then 40 calls of 1000 candidates into one worker with
     * a 40 ms deadline: the later ones wait longer than that */
    int codes[40];
    burst(addr, req, len, 1, 60000, codes);
    cr_assert_eq(codes[0], 0);
    burst(addr, req, len, 40, 40, codes);
    int late = 0;
    for (int i = 0; i < 40; i++) late += codes[i] == 4;
    /* the server answers the expired calls once the worker reaches them */
    usleep(500 * 1000);
    rk_server_counters c;
    rk_server_stop(s, &c);
    cr_assert_gt(late, 0, "no call ran past its 40 ms deadline");
    cr_assert_gt(c.rank_expired, 0, "no queued call was found expired by the worker (ok=%llu)",
                 (unsigned long long)c.rank_ok);
    cr_assert_eq(c.rank_ok + c.rank_failed, 41);
    free(req);
    grpc_shutdown_blocking();
    drop_bundle();
}
