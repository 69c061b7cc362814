/*
 * bench/bench_cluster.c — the store's Redis Cluster tier, store level (the
 * rankd-level half is bench/bench_cluster.sh).
 *
 * The table and key stream of bench-store: ROWS x 64 float32 (default 1M),
 * batches of 2,000 Zipf keys over a random permutation of the rows.
 *   1. bulk load: rk_store_redis_publish of the whole table (rows/s);
 *   2. lookup latency per batch, interleaved batch by batch so that all
 *      three see the same machine load:
 *        (a) the RAM cache alone (a cache loaded with every row first: all hits),
 *        (b) Redis behind a cache of 10% of the rows,
 *        (c) RocksDB behind a cache of 10% of the rows,
 *      with the Zipf exponent set so (c)'s cache sees ~90% hits (measured
 *      and printed for (b) and (c));
 *   3. update visibility: an update applied through one attached handle
 *      (a replica), polled on two other replicas whose caches hold the row;
 *      time until both return it, TRIALS trials.
 * Usage: bench_cluster --dir DIR --seeds HOST:PORT,... [--rows N] [--secs S]
 * Last line: bench-cluster-store: rows=N hit_b=.. hit_c=.. cache_p99_ms=..
 *   hit90_p99_ms_redis=.. hit90_p99_ms_rocksdb=.. update_visible_ms=..
 *   load_rows_per_s=..
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_internal.h"
#include "zipf.h"

#define DIM 64
#define BATCH 2000
#define TRIALS 20

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what, const rk_err *e) {
    fprintf(stderr, "bench-cluster: %s: %s\n", what, e ? e->msg : "");
    exit(1);
}

static rk_store *open_store(const char *dir, uint64_t cache_rows, rk_redis *tier) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = cache_rows * rk_cache_bytes_per_row(DIM * 4);
    o.verify = 0;
    rk_store *s = NULL;
    rk_err e = {0};
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) die("open", &e);
    if (tier && rk_store_redis_attach(s, tier, &e)) die("attach", &e);
    return s;
}

static double hits(rk_store *s, rk_store_stats *prev) {
    rk_store_stats b;
    rk_store_stats_get(s, 0, &b);
    double h = (double)(b.cache_hits - prev->cache_hits), m = (double)(b.cache_misses - prev->cache_misses);
    *prev = b;
    return h + m > 0 ? h / (h + m) : 0;
}

static void summary(const char *name, double *t, size_t n, double hit, double *p99_out) {
    qsort(t, n, sizeof *t, cmp_d);
    double p50 = rk_bench_pct(t, n, 50) * 1e3, p99 = rk_bench_pct(t, n, 99) * 1e3, p999 = rk_bench_pct(t, n, 99.9) * 1e3;
    printf("| %s | %.1f%% | %zu | %.3f | %.3f | %.3f |\n", name, hit * 100, n, p50, p99, p999);
    *p99_out = p99;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *seeds = NULL;
    uint64_t rows = 1000000;
    double secs = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--seeds")) seeds = argv[i + 1];
        else if (!strcmp(argv[i], "--rows")) rows = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--secs")) secs = atof(argv[i + 1]);
    }
    if (!dir || !seeds || rows < 1000) {
        fprintf(stderr, "usage: bench_cluster --dir DIR --seeds HOST:PORT,... [--rows N >= 1000] [--secs S]\n");
        return 2;
    }
    rk_err e = {0};
    rk_rng rng;
    rk_rng_seed(&rng, 2024);
    char path[600];
    snprintf(path, sizeof path, "%s/tables", dir);
    (void)rk_rm_rf(dir, NULL); /* a fresh version (new IDENTITY, new prefix) each run */
    if (rk_mkdir_p(dir, &e)) die("mkdir", &e);
    float *data = malloc(rows * DIM * sizeof(float));
    if (!data) die("out of memory", NULL);
    for (size_t i = 0; i < rows * DIM; i++) data[i] = (float)(rk_rng_normal(&rng) * 0.1);
    rk_table_spec spec = {"t", DIM, rows, data};
    if (rk_store_write(path, &spec, 1, &e)) die("write", &e);
    free(data);
    rk_redis_opts ro = RK_REDIS_OPTS_DEFAULT;
    ro.timeout_ms = 1000; /* the bench measures latency, not the failure budget */
    rk_redis *r = NULL;
    if (rk_redis_create(seeds, &ro, &r, &e)) die("connect", &e);

    /* 1. bulk load */
    rk_store *pub = open_store(path, 0, NULL);
    uint64_t loaded = 0;
    double t0 = rk_now();
    if (rk_store_redis_publish(pub, r, 0, &loaded, &e)) die("publish", &e);
    double load_s = rk_now() - t0;
    char prefix[96];
    rk_store_redis_prefix(pub, prefix, sizeof prefix);
    printf("bench-cluster: bulk load of %llu rows x %d fp32 (%zu B rows) into 3 masters + 3 replicas "
           "(MSET per slot, WAIT 1 per %d rows): %.2f s, %.0f rows/s\n",
           (unsigned long long)loaded, DIM, (size_t)DIM * 4, RK_REDIS_LOAD_ROWS, load_s, loaded / load_s);

    /* 2. lookups */
    rk_store *sa = open_store(path, rows, NULL), *sb = open_store(path, rows / 10, r), *sc = open_store(path, rows / 10, NULL);
    rk_zipf z;
    rk_zipf_init(&z, rows, &rng);
    rk_zipf_set(&z, 1.115); /* ~90% hits for a 10% cache (bench-store's bisection) */
    static uint64_t keys[BATCH];
    static float out[BATCH * DIM];
    for (uint64_t k = 0; k < rows; k += BATCH) { /* (a) holds every row */
        size_t m = rows - k < BATCH ? (size_t)(rows - k) : BATCH;
        for (size_t i = 0; i < m; i++) keys[i] = k + i;
        rk_store_get(sa, 0, keys, m, out, NULL, NULL);
    }
    for (int b = 0; b < 60; b++) { /* warm all three */
        rk_zipf_batch(&z, &rng, keys, BATCH);
        rk_store_get(sa, 0, keys, BATCH, out, NULL, NULL);
        rk_store_get(sb, 0, keys, BATCH, out, NULL, NULL);
        rk_store_get(sc, 0, keys, BATCH, out, NULL, NULL);
    }
    rk_store_stats pa, pb, pc;
    hits(sa, &pa), hits(sb, &pb), hits(sc, &pc);
    size_t cap = 100000, n = 0;
    double *ta = malloc(cap * sizeof *ta), *tb = malloc(cap * sizeof *tb), *tc = malloc(cap * sizeof *tc);
    double *tp = malloc(cap * sizeof *tp); /* one PING to one master: the floor of a Redis round trip here */
    const char *ping[] = {"PING"};
    size_t ping_len[] = {4};
    t0 = rk_now();
    while ((n < 300 || rk_now() - t0 < secs) && n < cap) {
        rk_zipf_batch(&z, &rng, keys, BATCH);
        double a = rk_now();
        if (rk_store_get(sa, 0, keys, BATCH, out, NULL, &e)) die("lookup (a)", &e);
        double b = rk_now();
        if (rk_store_get(sb, 0, keys, BATCH, out, NULL, &e)) die("lookup (b)", &e);
        double c = rk_now();
        if (rk_store_get(sc, 0, keys, BATCH, out, NULL, &e)) die("lookup (c)", &e);
        double d = rk_now();
        rk_redis_reply_free(rk_redis_command(r, 0, 1, ping, ping_len, d + 1.0, NULL));
        tp[n] = rk_now() - d;
        ta[n] = b - a, tb[n] = c - b, tc[n] = d - c;
        n++;
    }
    double ha = hits(sa, &pa), hb = hits(sb, &pb), hc = hits(sc, &pc);
    rk_store_stats stb;
    rk_store_stats_get(sb, 0, &stb);
    rk_redis_stats rs;
    rk_redis_stats_get(r, &rs);
    printf("\nlookups of %d Zipf keys, interleaved batch by batch\n", BATCH);
    printf("| path | cache hits | batches | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|\n");
    double pa99, pb99, pc99;
    summary("(a) RAM cache alone (all rows cached)", ta, n, ha, &pa99);
    summary("(b) cache 10% -> Redis Cluster", tb, n, hb, &pb99);
    summary("(c) cache 10% -> RocksDB", tc, n, hc, &pc99);
    double pp99;
    summary("one PING round trip to a master (the floor of (b)'s Redis part)", tp, n, 0, &pp99);
    printf("Redis: %llu batches, %.2f round trips per batch (3 masters), %llu keys failed, rocksdb reads by (b): %llu\n",
           (unsigned long long)rs.batches, rs.batches ? (double)rs.round_trips / rs.batches : 0.0,
           (unsigned long long)rs.failed_items, (unsigned long long)stb.rocksdb_reads);
    rk_store_close(sa);
    rk_store_close(sc);

    /* 3. update visibility: writer sb, readers r1, r2 with the row cached */
    rk_store *r1 = open_store(path, rows / 10, r), *r2 = open_store(path, rows / 10, r);
    double vis[TRIALS];
    float row_v[DIM], got[DIM];
    for (int t = 0; t < TRIALS; t++) {
        uint64_t row = z.perm[t]; /* hot rows: cached everywhere */
        rk_store_get(r1, 0, &row, 1, got, NULL, NULL);
        rk_store_get(r2, 0, &row, 1, got, NULL, NULL);
        for (int j = 0; j < DIM; j++) row_v[j] = (float)(t + 1) + (float)j / 64;
        usleep(7000 * (t % 3)); /* not in step with the 20 ms poll */
        double a = rk_now();
        if (rk_store_apply(sb, 0, &row, 1, row_v, &e)) die("apply", &e);
        int seen1 = 0, seen2 = 0;
        while (!(seen1 && seen2) && rk_now() - a < 5.0) {
            if (!seen1 && rk_store_get(r1, 0, &row, 1, got, NULL, NULL) == RK_OK && !memcmp(got, row_v, sizeof got)) seen1 = 1;
            if (!seen2 && rk_store_get(r2, 0, &row, 1, got, NULL, NULL) == RK_OK && !memcmp(got, row_v, sizeof got)) seen2 = 1;
            if (!(seen1 && seen2)) usleep(500);
        }
        vis[t] = seen1 && seen2 ? (rk_now() - a) * 1e3 : 5000.0;
    }
    qsort(vis, TRIALS, sizeof *vis, cmp_d);
    double apply_ack = 0;
    {
        uint64_t row = 1;
        double a = rk_now();
        for (int k = 0; k < 20; k++)
            if (rk_store_apply(sb, 0, &row, 1, row_v, &e)) die("apply", &e);
        apply_ack = (rk_now() - a) / 20 * 1e3;
    }
    printf("\nupdate visibility (apply on one replica, until 2 other replicas with the row cached return it; poll %d ms): "
           "%d trials, median %.1f ms, max %.1f ms; apply acknowledged (MSET + WAIT 1 + XADD) in %.2f ms mean\n",
           ro.poll_ms, TRIALS, vis[TRIALS / 2], vis[TRIALS - 1], apply_ack);
    rk_store_close(r1);
    rk_store_close(r2);
    rk_store_close(sb);
    uint64_t deleted = 0;
    if (rk_redis_drop_version(r, prefix, &deleted, &e)) die("drop", &e);
    printf("dropped %s from the cluster: %llu keys\n", prefix, (unsigned long long)deleted);
    rk_store_close(pub);
    rk_redis_destroy(r);
    rk_zipf_free(&z);
    free(ta), free(tb), free(tc), free(tp);
    printf("bench-cluster-store: rows=%llu hit_b=%.3f hit_c=%.3f cache_p99_ms=%.3f hit90_p99_ms_redis=%.3f "
           "hit90_p99_ms_rocksdb=%.3f update_visible_ms=%.1f load_rows_per_s=%.0f\n",
           (unsigned long long)rows, hb, hc, pa99, pb99, pc99, vis[TRIALS - 1], loaded / load_s);
    return 0;
}
