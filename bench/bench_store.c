/*
 * bench/bench_store.c — rankd's embedding store against raw RocksDB.
 *
 * One table of 1M rows x 64 float32 (256 B rows, ~256 MB), bulk-loaded by
 * SST ingestion. Batches of 2,000 keys drawn from a Zipf distribution over
 * a random permutation of the rows; the Zipf exponent is tuned (bisection on
 * the measured hit rate) so that a fixed RAM cache budget of 10% of the
 * rows sees 50/80/90/95/99% hits. For each level, in the same run:
 *   (a) rankd: rk_store_get (cache, then one MultiGet for the misses);
 *   (b) raw RocksDB: rocksdb_batched_multi_get_cf of the batch as it comes
 *       (the ratio of the last line), and the same after sorting and
 *       deduplicating the batch (rankd's dedup given to the baseline), on a
 *       second read-only handle of the same database with the same options
 *       (rk_store_rocks_options: same block cache size, index in it),
 *       rows copied out.
 * Prints p50/p99/p99.9 per batch and rows/s (keys per second), then the
 * cache's bytes per key (allocated, and heap bytes measured), then RSS while random
 * reads run with online updates and a full compaction going on.
 * Last line: bench-store: hit90_p99_ms=... ratio_vs_rocksdb=...
 * bytes_per_key_ratio=... int8_auc_ratio=... fp16_auc_ratio=...
 * (AUC ratios are passed in by bench/bench_store.sh).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_internal.h"
#include "zipf.h"

#define ROWS 1000000ull
#define DIM 64
#define BATCH 2000

static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static rk_zipf zipf;

/* ---------------------------------------------------------------- raw rocksdb */
typedef struct {
    rocksdb_t *db;
    rocksdb_options_t *o;
    rocksdb_cache_t *cache;
    rocksdb_readoptions_t *ro;
    rocksdb_column_family_handle_t *cf[2];
} raw_db;

static int u64cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void raw_open(raw_db *r, const char *dir, size_t block_cache, int mmap_reads) {
    r->o = rk_store_rocks_options(block_cache, &r->cache); /* the store's own options */
    if (mmap_reads) rocksdb_options_set_allow_mmap_reads(r->o, 1);
    const char *names[2] = {"default", "t"};
    const rocksdb_options_t *cfo[2] = {r->o, r->o};
    char *err = NULL;
    r->db = rocksdb_open_for_read_only_column_families(r->o, dir, 2, names, cfo, r->cf, 0, &err);
    if (!r->db) {
        fprintf(stderr, "bench-store: raw open: %s\n", err);
        exit(1);
    }
    r->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(r->ro, 1);
}

/* One batched MultiGet of keys[0..n) (sorted_input: already ascending),
 * value i copied to out[i * DIM]. */
static void raw_multiget(raw_db *r, const uint64_t *keys, size_t n, unsigned char sorted_input, float *out) {
    static unsigned char kb[BATCH * 8];
    static const char *kp[BATCH];
    static size_t ks[BATCH];
    static rocksdb_pinnableslice_t *v[BATCH];
    static char *e[BATCH];
    for (size_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) kb[8 * i + b] = (unsigned char)(keys[i] >> (56 - 8 * b));
        kp[i] = (const char *)kb + 8 * i;
        ks[i] = 8;
    }
    rocksdb_batched_multi_get_cf(r->db, r->ro, r->cf[1], n, kp, ks, v, e, sorted_input);
    for (size_t i = 0; i < n; i++) {
        if (v[i]) {
            size_t vl;
            const char *p = rocksdb_pinnableslice_value(v[i], &vl);
            memcpy(out + i * DIM, p, vl < DIM * 4 ? vl : DIM * 4);
            rocksdb_pinnableslice_destroy(v[i]);
        }
        if (e[i]) rocksdb_free(e[i]);
    }
}

/* Raw MultiGet of the batch as it comes (duplicates included, RocksDB
 * sorts): what a server without rankd's store would do. */
static void raw_get_plain(raw_db *r, const uint64_t *keys, float *out) { raw_multiget(r, keys, BATCH, 0, out); }

/* Raw MultiGet after sorting and deduplicating the batch. */
static void raw_get(raw_db *r, const uint64_t *keys, float *out) {
    static uint64_t k[BATCH];
    memcpy(k, keys, sizeof k);
    qsort(k, BATCH, 8, u64cmp);
    size_t u = 0;
    for (size_t i = 0; i < BATCH; i++)
        if (!i || k[i] != k[i - 1]) k[u++] = k[i];
    raw_multiget(r, k, u, 1, out);
}

static void raw_close(raw_db *r) {
    rocksdb_column_family_handle_destroy(r->cf[0]);
    rocksdb_column_family_handle_destroy(r->cf[1]);
    rocksdb_close(r->db);
    rocksdb_readoptions_destroy(r->ro);
    rocksdb_options_destroy(r->o);
    rocksdb_cache_destroy(r->cache);
}

/* ---------------------------------------------------------------- runs */
static double hit_rate(rk_store *s, rk_store_stats *a) {
    rk_store_stats b;
    rk_store_stats_get(s, 0, &b);
    double h = (double)(b.cache_hits - a->cache_hits), m = (double)(b.cache_misses - a->cache_misses);
    *a = b;
    return h + m > 0 ? h / (h + m) : 0;
}

typedef struct {
    double p50, p99, p999, rows_per_s;
} lat;

static lat summarize(double *t, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += t[i];
    qsort(t, n, sizeof *t, cmp_d);
    lat l = {rk_bench_pct(t, n, 50) * 1e3, rk_bench_pct(t, n, 99) * 1e3, rk_bench_pct(t, n, 99.9) * 1e3, (double)n * BATCH / sum};
    return l;
}

/* ---------------------------------------------------------------- churn (RSS phase) */
typedef struct {
    rk_store *s;
    atomic_int *stop;
    long updates;
    double compact_s;
} churn_arg;

static void *churn(void *p) {
    churn_arg *a = p;
    static uint64_t ids[1000];
    static float v[1000 * DIM];
    rk_rng r;
    rk_rng_seed(&r, 77);
    double t0 = rk_now();
    int compacted = 0;
    while (!atomic_load(a->stop)) {
        for (int i = 0; i < 1000; i++) {
            ids[i] = rk_rng_below(&r, ROWS);
            for (int j = 0; j < DIM; j++) v[i * DIM + j] = (float)(i + j) * 1e-3f;
        }
        if (rk_store_apply(a->s, 0, ids, 1000, v, NULL)) break;
        a->updates += 1000;
        if (!compacted && a->updates >= 200000) { /* ~50 MB of updates, then a full compaction */
            double c0 = rk_now();
            rk_store_compact(a->s, 0, NULL);
            a->compact_s = rk_now() - c0;
            compacted = 1;
        }
        if (rk_now() - t0 > 30) break;
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *dir = "build/bench-store-db";
    double int8_ratio = NAN, fp16_ratio = NAN, secs = 1.0, hit90_p99 = NAN, ratio90 = NAN;
    int levels = 31, mmap_reads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--int8-auc-ratio") && i + 1 < argc) int8_ratio = atof(argv[++i]);
        else if (!strcmp(argv[i], "--fp16-auc-ratio") && i + 1 < argc) fp16_ratio = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
        else if (!strcmp(argv[i], "--levels") && i + 1 < argc) levels = atoi(argv[++i]); /* bit mask */
        else if (!strcmp(argv[i], "--no-rss")) levels |= 1 << 10;
        else if (!strcmp(argv[i], "--mmap")) mmap_reads = 1; /* opts.mmap_reads, for both handles */
        else if (!strcmp(argv[i], "--rss-only")) levels = 1 << 11; /* a fresh process for the RSS phase */
        else {
            fprintf(stderr, "usage: bench_store [--dir DIR] [--seconds S] [--levels MASK] [--no-rss | --rss-only] [--mmap] [--int8-auc-ratio R] [--fp16-auc-ratio R]\n");
            return 2;
        }
    }
    rk_rng rng;
    rk_rng_seed(&rng, 2024);
    rk_err e = {0};
    /* ---- bulk load */
    (void)rk_rm_rf(dir, NULL);
    float *data = malloc(ROWS * DIM * sizeof(float));
    for (size_t i = 0; i < ROWS * DIM; i++) data[i] = (float)(rk_rng_normal(&rng) * 0.05);
    rk_table_spec spec = {"t", DIM, ROWS, data};
    double t0 = rk_now();
    if (rk_store_write(dir, &spec, 1, &e)) {
        fprintf(stderr, "bench-store: %s\n", e.msg);
        return 1;
    }
    double load_s = rk_now() - t0;
    printf("bench-store: table %llu rows x %d dims fp32 (%.0f MB), bulk load by SST ingestion %.2fs\n",
           (unsigned long long)ROWS, DIM, ROWS * DIM * 4 / 1e6, load_s);
    /* ---- bytes per key (cache alone): heap bytes in use by malloc's count
     * (mallinfo2: arena + mmapped chunks, malloc overhead included). The
     * process RSS is no measure here: RocksDB's threads free memory of the
     * bulk load meanwhile (one run showed 0.77x, below the raw rows). */
    {
        size_t rb = rk_codec_row_bytes(RK_CODEC_FP32, DIM);
        struct mallinfo2 mi0 = mallinfo2();
        size_t r0 = mi0.uordblks + mi0.hblkhd;
        rk_cache c;
        if (rk_cache_init(&c, 200000, 64, rb, &e)) return 1;
        uint64_t gens[256];
        rk_cache_gens(&c, gens);
        for (uint64_t k = 0; k < 200000; k++) rk_cache_fill(&c, k * 7919, data + (k % ROWS) * DIM, gens);
        struct mallinfo2 mi1 = mallinfo2();
        size_t r1 = mi1.uordblks + mi1.hblkhd;
        uint64_t h = 0, m = 0, ev = 0, ent = 0;
        rk_cache_stats(&c, &h, &m, &ev, &ent);
        printf("bench-store: cache bytes per key: allocated %.1f B, heap-measured %.1f B for %zu-byte rows "
               "(%.3fx / %.3fx raw; %llu entries)\n",
               (double)c.bytes / (double)c.slots, (double)(r1 - r0) / (double)ent, rb,
               (double)c.bytes / (double)c.slots / (double)rb, (double)(r1 - r0) / (double)ent / (double)rb,
               (unsigned long long)ent);
        rk_cache_free(&c);
    }
    double bpk_ratio = (double)rk_cache_bytes_per_row(DIM * 4) / (DIM * 4);
    free(data);
    const size_t block_cache = (size_t)64 << 20;
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = (size_t)(ROWS / 10) * rk_cache_bytes_per_row(DIM * 4); /* 10% of the rows */
    o.block_cache_bytes = block_cache;
    o.mmap_reads = mmap_reads;
    rk_store *s;
    rk_store_stats st;
    static uint64_t keys[BATCH];
    static float out[BATCH * DIM];
    rk_zipf_init(&zipf, ROWS, &rng);
    if (levels & (1 << 11)) goto rss_phase;
    /* ---- open both. Open-time cost of the checksum scan (opts.verify):
     * SstFileWriter drops the file's pages from the OS page cache after
     * writing (invalidate_page_cache), so the first verifying open reads
     * the file from the disk; the scan leaves it in the page cache, where a
     * server that has run a while has it too (256 MB on a 23 GB machine),
     * so both handles below measure RocksDB, not the virtual disk. */
    double open_s[3];
    for (int k = 0; k < 3; k++) {
        rk_store_opts ov = o;
        ov.verify = k != 1; /* scan (cold), no scan, scan (page cache warm) */
        double a = rk_now();
        if (rk_store_open_ex(dir, NULL, NULL, 0, &ov, &s, &e)) {
            fprintf(stderr, "bench-store: %s\n", e.msg);
            return 1;
        }
        open_s[k] = rk_now() - a;
        if (k < 2) rk_store_close(s);
    }
    printf("bench-store: open with the checksum scan of all %llu rows: %.2f s with the file out of the page cache, "
           "%.2f s in it; without the scan %.1f ms\n",
           (unsigned long long)ROWS, open_s[0], open_s[2], open_s[1] * 1e3);
    raw_db raw;
    raw_open(&raw, dir, block_cache, o.mmap_reads);
    rk_store_stats_get(s, 0, &st);
    printf("bench-store: row cache %.1f MB for %llu rows (10%%), block cache %zu MB each (index inside, same options), batch %d keys\n",
           st.cache_bytes / 1e6, (unsigned long long)st.cache_slots, block_cache >> 20, BATCH);
    /* warm RocksDB's block cache for both handles */
    rk_zipf_set(&zipf, 0.8);
    for (int b = 0; b < 30; b++) {
        rk_zipf_batch(&zipf, &rng, keys, BATCH);
        rk_store_get(s, 0, keys, BATCH, out, NULL, NULL);
        raw_get(&raw, keys, out);
    }
    const double targets[] = {0.50, 0.80, 0.90, 0.95, 0.99};
    const double guess[] = {0.80, 1.01, 1.115, 1.20, 1.35}; /* from earlier runs; refined below */
    printf("\n| target hit | measured hit | zipf s | rankd p50 ms | p99 ms | p99.9 ms | rankd rows/s "
           "| RocksDB p50 ms | p99 ms | p99.9 ms | RocksDB rows/s | ratio | RocksDB+dedup rows/s | ratio |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    size_t cap = 20000;
    double *tt = malloc(cap * sizeof *tt);
    for (int ti = 0; ti < 5; ti++) {
        if (!(levels & (1 << ti))) continue;
        double target = targets[ti], lo = guess[ti] - 0.05, hi = guess[ti] + 0.05, sz = guess[ti], h = 0;
        for (int it = 0; it < 6; it++) { /* bisection on the measured hit rate */
            rk_zipf_set(&zipf, sz);
            for (int b = 0; b < 40; b++) { /* re-warm */
                rk_zipf_batch(&zipf, &rng, keys, BATCH);
                rk_store_get(s, 0, keys, BATCH, out, NULL, NULL);
            }
            hit_rate(s, &st);
            for (int b = 0; b < 40; b++) {
                rk_zipf_batch(&zipf, &rng, keys, BATCH);
                rk_store_get(s, 0, keys, BATCH, out, NULL, NULL);
            }
            h = hit_rate(s, &st);
            if (fabs(h - target) < 0.004) break;
            if (h < target) lo = sz;
            else hi = sz;
            sz = (lo + hi) / 2;
        }
        /* rankd */
        size_t n = 0;
        hit_rate(s, &st);
        double start = rk_now();
        while ((n < 300 || rk_now() - start < secs) && n < cap) {
            rk_zipf_batch(&zipf, &rng, keys, BATCH);
            double a = rk_now();
            if (rk_store_get(s, 0, keys, BATCH, out, NULL, &e)) {
                fprintf(stderr, "bench-store: %s\n", e.msg);
                return 1;
            }
            tt[n++] = rk_now() - a;
        }
        double hm = hit_rate(s, &st);
        lat lr = summarize(tt, n);
        /* raw RocksDB MultiGet of the batch as is, then sorted + deduplicated */
        lat lb[2];
        for (int k = 0; k < 2; k++) {
            size_t nr = 0;
            start = rk_now();
            while ((nr < 100 || rk_now() - start < secs / 2) && nr < cap) {
                rk_zipf_batch(&zipf, &rng, keys, BATCH);
                double a = rk_now();
                if (k == 0) raw_get_plain(&raw, keys, out);
                else raw_get(&raw, keys, out);
                tt[nr++] = rk_now() - a;
            }
            lb[k] = summarize(tt, nr);
        }
        double ratio = lr.rows_per_s / lb[0].rows_per_s;
        printf("| %.0f%% | %.1f%% | %.3f | %.3f | %.3f | %.3f | %.0f | %.3f | %.3f | %.3f | %.0f | %.1fx | %.0f | %.1fx |\n",
               target * 100, hm * 100, sz, lr.p50, lr.p99, lr.p999, lr.rows_per_s, lb[0].p50, lb[0].p99, lb[0].p999,
               lb[0].rows_per_s, ratio, lb[1].rows_per_s, lr.rows_per_s / lb[1].rows_per_s);
        fflush(stdout);
        if (ti == 2) hit90_p99 = lr.p99, ratio90 = ratio;
    }
    /* the hit path alone: 2,000 keys drawn from 50,000 rows that are all cached */
    {
        static uint64_t hot[50000];
        for (int i = 0; i < 50000; i++) hot[i] = zipf.perm[(uint64_t)i * 13 % ROWS];
        for (int b = 0; b < 50000; b += BATCH) rk_store_get(s, 0, hot + b, BATCH, out, NULL, NULL);
        for (int b = 0; b < 50000; b += BATCH) rk_store_get(s, 0, hot + b, BATCH, out, NULL, NULL);
        hit_rate(s, &st);
        size_t n = 0;
        double start = rk_now();
        while ((n < 300 || rk_now() - start < secs) && n < cap) {
            for (int i = 0; i < BATCH; i++) keys[i] = hot[rk_rng_below(&rng, 50000)];
            double a = rk_now();
            rk_store_get(s, 0, keys, BATCH, out, NULL, NULL);
            tt[n++] = rk_now() - a;
        }
        double hm = hit_rate(s, &st);
        lat lr = summarize(tt, n);
        printf("| all cached | %.1f%% | - | %.3f | %.3f | %.3f | %.0f | | | | | | | |\n", hm * 100, lr.p50, lr.p99, lr.p999,
               lr.rows_per_s);
    }
    free(tt);
    rk_store_stats_get(s, 0, &st);
    printf("\nbench-store: cache hits %llu misses %llu evictions %llu entries %llu; RocksDB reads %llu; block cache %.1f MB\n",
           (unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses, (unsigned long long)st.cache_evictions,
           (unsigned long long)st.cache_entries, (unsigned long long)st.rocksdb_reads, st.block_cache_usage / 1e6);
    raw_close(&raw);
    rk_store_close(s);
    /* ---- RSS with random reads while updates and a full compaction run */
    if (levels & (1 << 10)) goto summary;
rss_phase:
    o.writable = 1;
    o.sync_writes = 0;
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) {
        fprintf(stderr, "bench-store: %s\n", e.msg);
        return 1;
    }
    size_t rss0 = rss_bytes(), rss_max = rss0;
    atomic_int stop = 0;
    churn_arg ca = {s, &stop, 0, -1};
    pthread_t th;
    pthread_create(&th, NULL, churn, &ca);
    rk_zipf_set(&zipf, 1.0);
    double start = rk_now();
    long reads = 0;
    while (rk_now() - start < 12 && (ca.compact_s < 0 || rk_now() - start < 4)) {
        rk_zipf_batch(&zipf, &rng, keys, BATCH);
        rk_store_get(s, 0, keys, BATCH, out, NULL, NULL);
        reads += BATCH;
        size_t r = rss_bytes();
        if (r > rss_max) rss_max = r;
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    rk_store_stats_get(s, 0, &st);
    printf("bench-store: fresh process; RSS during random reads (%ld keys) + %ld online updates + full compaction (%.1fs): start %.0f MB, "
           "max %.0f MB; budgets: row cache %.0f MB + block cache %zu MB + memtables 16 MB; block cache in use %.0f MB\n",
           reads, ca.updates, ca.compact_s, rss0 / 1e6, rss_max / 1e6, o.cache_bytes / 1e6, block_cache >> 20,
           st.block_cache_usage / 1e6);
    rk_store_close(s);
    if (levels & (1 << 11)) {
        (void)rk_rm_rf(dir, NULL);
        return 0;
    }
summary:
    (void)rk_rm_rf(dir, NULL);
    rk_zipf_free(&zipf);
    printf("bench-store: hit90_p99_ms=%.3f ratio_vs_rocksdb=%.2f bytes_per_key_ratio=%.3f int8_auc_ratio=%.5f fp16_auc_ratio=%.5f\n",
           hit90_p99, ratio90, bpk_ratio, int8_ratio, fp16_ratio);
    return 0;
}
