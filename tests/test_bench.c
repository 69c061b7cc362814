/*
 * tests/test_bench.c — rank-bench: its histogram (bench/hdr.c) and its
 * coordinated-omission correction against a server that stalls once.
 *
 * The stall test runs a tiny Ranker server in this process (gRPC core, one
 * thread, every call answered OK with an empty RankResponse at once, except
 * one call that is held for 200 ms, blocking the thread as a GC pause or a
 * page-in would), and the real build/rank-bench against it at 1,000
 * requests/s for 3 s. A stall of 200 ms delays about 200 scheduled requests
 * (6-7% of the run), so the corrected p99 (from each request's intended
 * send time) must show it; the sender can have only 4 calls outstanding,
 * so only those few calls are *sent* before the stall ends and the
 * uncorrected p99 (from the actual send) must not show it, while its max
 * still does.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "hdr.h"
#include "helpers.h"
#include "rank.pb-c.h"
#include "serve.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif
#ifndef RK_BINARY_DIR
#define RK_BINARY_DIR "."
#endif

/* ------------------------------------------------------------------ histogram */

Test(hdr, small_values_are_exact) {
    rk_hdr h;
    cr_assert_eq(rk_hdr_init(&h, 1000000, 3), 0);
    for (int64_t v = 0; v < 2048; v++) {
        cr_assert_eq(rk_hdr_lowest_equivalent(&h, v), v);
        cr_assert_eq(rk_hdr_highest_equivalent(&h, v), v);
    }
    rk_hdr_free(&h);
}

Test(hdr, relative_error_is_bounded_by_three_digits) {
    rk_hdr h;
    cr_assert_eq(rk_hdr_init(&h, (int64_t)3600 * 1000000000, 3), 0);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t v = (int64_t)(x % ((uint64_t)3600 * 1000000000)) >> (x % 40);
        int64_t lo = rk_hdr_lowest_equivalent(&h, v), hi = rk_hdr_highest_equivalent(&h, v);
        cr_assert(lo <= v && v <= hi, "v=%lld outside [%lld, %lld]", (long long)v, (long long)lo, (long long)hi);
        cr_assert_leq((double)(hi - lo), v / 1000.0 + 1e-9, "v=%lld: counter width %lld", (long long)v,
                      (long long)(hi - lo + 1));
    }
    rk_hdr_free(&h);
}

Test(hdr, percentiles_of_a_uniform_ramp) {
    rk_hdr h;
    cr_assert_eq(rk_hdr_init(&h, 100000000, 3), 0);
    for (int64_t v = 1; v <= 100000; v++) rk_hdr_record(&h, v);
    struct {
        double p;
        double want;
    } c[] = {{50, 50000}, {90, 90000}, {99, 99000}, {99.9, 99900}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        double got = (double)rk_hdr_value_at(&h, c[i].p);
        cr_assert(got >= c[i].want && got <= c[i].want * 1.001, "p%g: %g, want %g (+0.1%%)", c[i].p, got, c[i].want);
    }
    cr_assert_eq(rk_hdr_value_at(&h, 100), 100000);
    cr_assert_eq(h.min, 1);
    cr_assert_float_eq(rk_hdr_mean(&h), 50000.5, 1e-6);
    cr_assert_eq(h.total, 100000);
    rk_hdr_free(&h);
}

/* HdrHistogram's own example: 10,000 values of 1 ms and one of 100 s. */
Test(hdr, one_outlier_in_ten_thousand) {
    rk_hdr h;
    cr_assert_eq(rk_hdr_init(&h, (int64_t)3600 * 1000000, 3), 0); /* us */
    rk_hdr_record_n(&h, 1000, 10000);
    rk_hdr_record(&h, 100000000);
    cr_assert_eq(rk_hdr_value_at(&h, 99), 1000);
    cr_assert_eq(rk_hdr_value_at(&h, 99.99), 1000);
    int64_t top = rk_hdr_value_at(&h, 99.999);
    cr_assert(top >= 100000000 && top <= 100100000, "p99.999 = %lld", (long long)top);
    cr_assert_eq(rk_hdr_value_at(&h, 100), 100000000);
    rk_hdr_free(&h);
}

Test(hdr, merge_clamp_and_reset) {
    rk_hdr a, b, c;
    cr_assert_eq(rk_hdr_init(&a, 1000000, 3), 0);
    cr_assert_eq(rk_hdr_init(&b, 1000000, 3), 0);
    cr_assert_eq(rk_hdr_init(&c, 1000000, 2), 0);
    rk_hdr_record(&a, 10);
    rk_hdr_record(&b, 5000000); /* above highest: clamped */
    rk_hdr_record(&b, -3);      /* negative: 0 */
    cr_assert_eq(b.clamped, 1);
    cr_assert_eq(rk_hdr_add(&a, &b), 0);
    cr_assert_eq(a.total, 3);
    cr_assert_eq(a.min, 0);
    cr_assert_eq(a.max, 1000000);
    cr_assert_eq(rk_hdr_add(&a, &c), -1, "different precision must not merge");
    rk_hdr_free(&c);
    rk_hdr_reset(&a);
    cr_assert_eq(a.total, 0);
    cr_assert_eq(rk_hdr_value_at(&a, 99), 0);
    cr_assert_eq(rk_hdr_init(&c, 100, 9), -1);
    rk_hdr_free(&a);
    rk_hdr_free(&b);
}

/* ------------------------------------------------------------------ a server that stalls once */

#define STALL_AT 1500 /* the 1,500th call: 1.5 s in, after the 0.5 s warm-up */
#define STALL_MS 200

typedef struct {
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    pthread_t thread;
    int port;
    atomic_long calls;
    /* record mode: keep each distinct request (bytes, in order of arrival)
     * and answer it with one score per candidate, as rank query expects */
    int record;
    int n_rec;
    uint8_t *rec[64];
    size_t rec_len[64];
} stall_server;

typedef struct {
    int replying;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload, *reply;
    int cancelled;
} scall;

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts)) {
    }
}

static void post(stall_server *s) {
    scall *c = calloc(1, sizeof *c);
    grpc_metadata_array_init(&c->md);
    grpc_call_error e = grpc_server_request_registered_call(s->server, s->method, &c->call, &c->deadline, &c->md,
                                                            &c->payload, s->cq, s->cq, c);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        free(c);
    }
}

static void scall_free(scall *c) {
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_metadata_array_destroy(&c->md);
    free(c);
}

/* Record mode: keep payload's bytes if new; the reply, n_candidates scores. */
static grpc_byte_buffer *record_call(stall_server *s, grpc_byte_buffer *payload) {
    grpc_byte_buffer_reader rd;
    grpc_slice all = grpc_empty_slice();
    if (payload && grpc_byte_buffer_reader_init(&rd, payload)) {
        all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
    }
    const uint8_t *b = GRPC_SLICE_START_PTR(all);
    size_t len = GRPC_SLICE_LENGTH(all);
    int seen = 0;
    for (int i = 0; i < s->n_rec && !seen; i++) seen = s->rec_len[i] == len && !memcmp(s->rec[i], b, len);
    if (!seen && s->n_rec < 64) {
        s->rec[s->n_rec] = malloc(len + 1);
        memcpy(s->rec[s->n_rec], b, len);
        s->rec_len[s->n_rec++] = len;
    }
    Rankd__V1__RankRequest *q = rankd__v1__rank_request__unpack(NULL, len, b);
    grpc_slice_unref(all);
    size_t n = q ? q->n_candidates : 0;
    if (q) rankd__v1__rank_request__free_unpacked(q, NULL);
    Rankd__V1__Score *sc = calloc(n + 1, sizeof *sc), **scp = calloc(n + 1, sizeof *scp);
    for (size_t i = 0; i < n; i++) {
        rankd__v1__score__init(&sc[i]);
        sc[i].pctr = 0.5f;
        scp[i] = &sc[i];
    }
    Rankd__V1__RankResponse r = RANKD__V1__RANK_RESPONSE__INIT;
    r.n_scores = n;
    r.scores = scp;
    size_t rl = rankd__v1__rank_response__get_packed_size(&r);
    uint8_t *rb = malloc(rl + 1);
    rankd__v1__rank_response__pack(&r, rb);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)rb, rl);
    grpc_byte_buffer *reply = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    free(rb), free(sc), free(scp);
    return reply;
}

static void *stall_main(void *arg) {
    stall_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        scall *c = ev.tag;
        if (c->replying || !ev.success) {
            scall_free(c);
            continue;
        }
        post(s);
        if (atomic_fetch_add(&s->calls, 1) + 1 == STALL_AT) sleep_ms(STALL_MS);
        grpc_slice empty = grpc_empty_slice();
        c->reply = s->record ? record_call(s, c->payload)
                             : grpc_raw_byte_buffer_create(&empty, 0); /* an empty RankResponse */
        grpc_op ops[4];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = c->reply;
        ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
        ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
        c->replying = 1;
        if (grpc_call_start_batch(c->call, ops, 4, c, NULL) != GRPC_CALL_OK) scall_free(c);
    }
    return NULL;
}

static void stall_start(stall_server *s, int record) {
    memset(s, 0, sizeof *s);
    s->record = record;
    grpc_init();
    s->server = grpc_server_create(NULL, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->method = grpc_server_register_method(s->server, "/rankd.v1.Ranker/Rank", NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *cr = grpc_insecure_server_credentials_create();
    s->port = grpc_server_add_http2_port(s->server, "127.0.0.1:0", cr);
    grpc_server_credentials_release(cr);
    cr_assert_gt(s->port, 0);
    grpc_server_start(s->server);
    for (int i = 0; i < 16; i++) post(s);
    pthread_create(&s->thread, NULL, stall_main, s);
}

static void stall_stop(stall_server *s) {
    grpc_completion_queue *shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    int tag;
    grpc_server_shutdown_and_notify(s->server, shutdown_cq, &tag);
    grpc_server_cancel_all_calls(s->server);
    grpc_completion_queue_pluck(shutdown_cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    sleep_ms(50); /* the thread releases what the shutdown completed */
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    pthread_join(s->thread, NULL);
    grpc_completion_queue_destroy(s->cq);
    grpc_completion_queue_shutdown(shutdown_cq);
    grpc_completion_queue_destroy(shutdown_cq);
    grpc_shutdown();
}

static void stall_free_records(stall_server *s) {
    for (int i = 0; i < s->n_rec; i++) free(s->rec[i]);
    s->n_rec = 0;
}

static double jnum(json_t *root, const char *obj, const char *key) {
    json_t *o = obj ? json_object_get(root, obj) : root;
    cr_assert(o, "no '%s' in the JSON", obj);
    json_t *v = json_object_get(o, key);
    cr_assert(v && json_is_number(v), "no number '%s.%s' in the JSON", obj ? obj : "", key);
    return json_number_value(v);
}

Test(rank_bench, corrected_p99_shows_a_stall_the_uncorrected_one_hides, .timeout = 60) {
    char dir[] = "/tmp/rk_bench_test_XXXXXX";
    cr_assert(mkdtemp(dir));
    /* a few real-shaped rows (the MovieLens TSV columns) */
    char tsv[512], out[512], log[512];
    snprintf(tsv, sizeof tsv, "%s/rows.tsv", dir);
    snprintf(out, sizeof out, "%s/out.json", dir);
    snprintf(log, sizeof log, "%s/bench.log", dir);
    FILE *f = fopen(tsv, "w");
    fprintf(f, "label\ttimestamp\tuser_id\tmovie_id\tgenres\tyear\thour\tweekday\thistory\trating\n");
    for (int i = 0; i < 30; i++)
        fprintf(f, "%d\t%d\t%d\t%d\tAction|Drama\t%d\t%d\t%d\t1|2|3\t4.0\n", i % 2, 1000 + i, 1 + i % 3, 100 + i,
                1990 + i % 20, i % 24, i % 7);
    fclose(f);

    stall_server s;
    stall_start(&s, 0);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             RK_BINARY_DIR "/rank-bench --addr 127.0.0.1:%d --config " RK_SOURCE_DIR
                           "/configs/movielens_dcnv2.json --data %s --candidates 5 --rate 1000 --warmup 0.5 "
                           "--duration 3 --max-inflight 4 --deadline-ms 5000 --window 1 --quiet --json %s >%s 2>&1",
             s.port, tsv, out, log);
    int rc = system(cmd);
    long calls = atomic_load(&s.calls);
    stall_stop(&s);
    char *text = NULL;
    size_t n = 0;
    FILE *lf = fopen(log, "r");
    if (lf) {
        text = calloc(1, 1 << 16);
        n = fread(text, 1, (1 << 16) - 1, lf);
        fclose(lf);
    }
    cr_assert_eq(rc, 0, "rank-bench failed (%d):\n%.*s", rc, (int)n, text ? text : "");
    fprintf(stderr, "%s", text ? text : "");
    free(text);
    cr_assert_geq(calls, STALL_AT, "the server saw only %ld calls: the stall never happened", calls);

    json_error_t je;
    json_t *root = json_load_file(out, 0, &je);
    cr_assert(root, "%s: %s", out, je.text);
    double offered = jnum(root, NULL, "offered"), ok = jnum(root, NULL, "ok");
    double c99 = jnum(root, "latency_ms_corrected", "p99"), u99 = jnum(root, "latency_ms_uncorrected", "p99");
    double umax = jnum(root, "latency_ms_uncorrected", "max"), cmax = jnum(root, "latency_ms_corrected", "max");
    cr_assert_geq(offered, 2900, "offered %g of 3000", offered);
    cr_assert_eq(ok, offered, "every call must succeed (%g of %g)", ok, offered);
    cr_assert_geq(c99, 100.0, "corrected p99 %.3f ms does not show the 200 ms stall", c99);
    cr_assert_lt(u99, 50.0, "uncorrected p99 %.3f ms shows the stall", u99);
    cr_assert_geq(umax, 190.0, "uncorrected max %.3f ms: the stalled call itself must be seen", umax);
    cr_assert_geq(cmax, umax);
    json_decref(root);
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    cr_assert_eq(system(rm), 0);
}

/* ------------------------------------------------------------------ loopback guard */

/* rank-bench's output (stderr) for --addr a, with paths that do not exist:
 * the address check comes first, then loading fails. */
static int bench_addr(const char *a, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/rank-bench --addr '%s' --data /nonexistent --model /nonexistent 2>&1", a);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every address a target can lead to must be loopback: a list whose second
 * address is remote, a name that resolves elsewhere (or not at all) and the
 * dns: scheme used to pass the prefix check. */
Test(rank_bench, loopback_guard_checks_every_address) {
    const char *bad[] = {"ipv4:127.0.0.1:1,192.0.2.1:50051", "ipv6:[::1]:1,[2001:db8::1]:50051",
                         "127.example.com:50051", "dns:127.evil.example:443", "dns:///192.0.2.7:50051",
                         "dns://8.8.8.8/192.0.2.7:50051", "192.0.2.1:50051", "ipv4:127.0.0.1"};
    const char *good[] = {"127.0.0.1:1", "localhost:1", "[::1]:1", "ipv4:127.0.0.1:1,127.0.0.2:2", "ipv6:[::1]:1",
                          "dns:///localhost:1", "dns:127.0.0.1:1"};
    char out[2048];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(bench_addr(bad[i], out, sizeof out), 2, "%s: %s", bad[i], out);
        cr_expect(strstr(out, "refusing to load-test"), "%s accepted: %s", bad[i], out);
    }
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        bench_addr(good[i], out, sizeof out);
        cr_expect(!strstr(out, "refusing"), "%s refused: %s", good[i], out);
        cr_expect(strstr(out, "/nonexistent"), "%s: %s", good[i], out);
    }
}

/* "--candidates 2.5" silently ran with 2: integer options are parsed strictly. */
Test(rank_bench, integer_options_refuse_fractions) {
    char cmd[512], out[1024];
    snprintf(cmd, sizeof cmd,
             RK_BINARY_DIR "/rank-bench --addr 127.0.0.1:1 --candidates 2.5 --data /nonexistent --model /nonexistent 2>&1");
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit %d: %s", st, out);
    cr_expect(strstr(out, "rank-bench: --candidates: expected an integer in 1..100000, got '2.5'"), "%s", out);
}

/* ------------------------------------------------------------------ the same requests from the same rows */

/* Request bytes without the fields each tool sets on purpose (request_id,
 * model_name, return_timing): what is left is built from the rows. */
static size_t rows_part(const uint8_t *b, size_t len, uint8_t *out) {
    Rankd__V1__RankRequest *q = rankd__v1__rank_request__unpack(NULL, len, b);
    cr_assert_not_null(q);
    char *id = q->request_id, *name = q->model_name;
    q->request_id = q->model_name = "";
    q->return_timing = 0;
    size_t n = rankd__v1__rank_request__pack(q, out);
    q->request_id = id, q->model_name = name;
    rankd__v1__rank_request__free_unpacked(q, NULL);
    return n;
}

/* rank query and rank-bench build their requests through one builder
 * (serve/rows.c): from one file (a BOM, CRLF lines, an empty dense cell)
 * they send the same requests, byte for byte apart from request_id and
 * model_name, and a bad dense cell is refused by both with the same message
 * naming row and column (rank-bench used to send strtof's prefix of it). */
Test(rank_bench, query_and_bench_send_the_same_requests, .timeout = 120) {
    char dir[] = "/tmp/rk_bench_rows_XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[600], cmd[4096], out[8192];
    const char *hdr = "label\ttimestamp\tuser_id\tmovie_id\tgenres\tyear\thour\tweekday\thistory\trating";
    snprintf(path, sizeof path, "%s/data", dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    for (int k = 0; k < 2; k++) { /* a tiny bundle for rank query (it opens one) */
        snprintf(path, sizeof path, "%s/data/%s.tsv", dir, k ? "valid" : "train");
        FILE *f = fopen(path, "w");
        fprintf(f, "%s\n", hdr);
        for (int i = 0; i < 40; i++)
            fprintf(f, "%d\t%d\t%d\t%d\tAction|Drama\t%d\t%d\t%d\t1|2|3\t4.0\n", (i + k) % 2, 1000 + i, 1 + i % 4,
                    100 + i, 1990 + i % 20, i % 24, i % 7);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank train --config " RK_SOURCE_DIR
             "/configs/movielens_dcnv2.json --data %s/data --out %s/bundle --epochs 1", dir, dir);
    cr_assert_eq(rk_test_run(cmd, out, sizeof out), 0, "rank train: %s", out);
    /* 3 users x 5 rows, a user's rows together and sharing the user side */
    char rows[600], bad[600];
    snprintf(rows, sizeof rows, "%s/rows.tsv", dir);
    snprintf(bad, sizeof bad, "%s/bad.tsv", dir);
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(k ? bad : rows, "w");
        fprintf(f, "\xef\xbb\xbf%s\r\n", hdr);
        for (int i = 0; i < 15; i++) {
            int u = i / 5;
            char year[16];
            snprintf(year, sizeof year, "%d", 1980 + i);
            if (i == 7) snprintf(year, sizeof year, k ? "19x5" : "");
            fprintf(f, "%d\t%d\t%d\t%d\tAction|Drama|%d\t%s\t%d\t%d\t%d|%d|7\t3.5\r\n", i % 2, 2000 + i, 10 + u, 500 + i,
                    i, year, u + 3, u, 40 + u, 41 + u);
        }
        fclose(f);
    }
    stall_server s;
    stall_start(&s, 1);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank query --addr 127.0.0.1:%d --model %s/bundle --input %s "
             "--output %s/q.tsv --candidates 5", s.port, dir, rows, dir);
    int rc = rk_test_run(cmd, out, sizeof out);
    int nq = s.n_rec;
    uint8_t *q[64];
    size_t ql[64];
    for (int i = 0; i < nq; i++) q[i] = s.rec[i], ql[i] = s.rec_len[i];
    s.n_rec = 0;
    cr_assert_eq(rc, 0, "rank query: %s", out);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/rank-bench --addr 127.0.0.1:%d --model %s/bundle --data %s "
             "--candidates 5 --rate 100 --warmup 0.2 --duration 0.5 --quiet", s.port, dir, rows);
    rc = rk_test_run(cmd, out, sizeof out);
    stall_stop(&s);
    cr_assert_eq(rc, 0, "rank-bench: %s", out);
    cr_assert_eq(nq, 3, "rank query sent %d distinct requests, not 3", nq);
    cr_assert_eq(s.n_rec, 3, "rank-bench sent %d distinct requests, not 3", s.n_rec);
    static uint8_t a[1 << 16], b[1 << 16];
    for (int i = 0; i < 3; i++) { /* as sets: rank-bench's calls may overlap */
        size_t la = rows_part(q[i], ql[i], a);
        int same = 0;
        for (int j = 0; j < 3 && !same; j++) {
            size_t lb = rows_part(s.rec[j], s.rec_len[j], b);
            same = la == lb && !memcmp(a, b, la);
        }
        cr_expect(same, "rank query's request %d (%zu bytes) is none of rank-bench's", i, la);
        free(q[i]);
    }
    stall_free_records(&s);
    /* the same refusal, naming row and column */
    char want[700];
    snprintf(want, sizeof want, "%s row 9, column year: expected a finite number within +-1e+09, got '19x5'", bad);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank query --addr 127.0.0.1:1 --model %s/bundle --input %s "
             "--output %s/q.tsv", dir, bad, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1, "rank query: %s", out);
    cr_expect(strstr(out, want), "rank query: '%s' lacks '%s'", out, want);
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/rank-bench --addr 127.0.0.1:1 --model %s/bundle --data %s "
             "--duration 0.1 --warmup 0 --quiet", dir, bad);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1, "rank-bench: %s", out);
    cr_expect(strstr(out, want), "rank-bench: '%s' lacks '%s'", out, want);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
