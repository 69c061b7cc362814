/*
 * bench/store_levers.c — what one missed row costs RocksDB under each table
 * option the store considered (`make bench-store-levers`; figures in
 * bench/RESULTS.md, "bench-store").
 *
 * For each variant: a database of 1M rows x 256 B (8-byte big-endian keys,
 * random bytes), one SST written with SstFileWriter and ingested, opened
 * read-only with a 64 MB LRU block cache (index/filter blocks in it at high
 * priority), its file read once so it sits in the OS page cache. All
 * variants are open at once and measured in interleaved rounds. Batches
 * of 200 distinct uniform-random rows (sorted) through
 * rocksdb_batched_multi_get_cf, rows copied out — the shape of rankd's miss
 * path at a 90 % cache hit rate (200 misses per 2,000-key batch); 64 MB of
 * block cache holds ~25 % of the blocks, as in bench_store. Reported: the
 * median over rounds of the mean microseconds per row, and per single
 * rocksdb_get_pinned_cf of a random row. The variant "store" is
 * rk_store_rocks_options itself, so the table tracks the real options.
 * Last line: bench-store-levers: old_us=X store_us=X (per row, MultiGet).
 */
#define _GNU_SOURCE
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_internal.h"

#define ROWS 1000000ull
#define VB 256
#define BATCH 200

typedef struct {
    const char *name;
    int block;       /* data block bytes */
    int partitioned; /* two-level index (and partitioned filter when bloom) */
    int bloom;       /* bloom bits per key, 0 = none */
    int shard_bits;  /* LRU shard bits, -1 = RocksDB's default (64 shards of 1 MB here) */
    int mmap, verify;
    int store;       /* 1: rk_store_rocks_options (the others ignored) */
} variant;

static void be64(unsigned char *k, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) k[i] = (unsigned char)(v & 0xff);
}
static int u64cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static void die(const char *what, char *err) {
    fprintf(stderr, "bench-store-levers: %s: %s\n", what, err ? err : "?");
    exit(1);
}

static rocksdb_options_t *options(const variant *v, rocksdb_cache_t **cache) {
    if (v->store) {
        rocksdb_options_t *o = rk_store_rocks_options((size_t)64 << 20, cache);
        if (v->mmap) rocksdb_options_set_allow_mmap_reads(o, 1);
        return o;
    }
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_lru_cache_options_t *lo = rocksdb_lru_cache_options_create();
    rocksdb_lru_cache_options_set_capacity(lo, (size_t)64 << 20);
    if (v->shard_bits >= 0) rocksdb_lru_cache_options_set_num_shard_bits(lo, v->shard_bits);
    *cache = rocksdb_cache_create_lru_opts(lo);
    rocksdb_lru_cache_options_destroy(lo);
    rocksdb_block_based_options_set_block_cache(t, *cache);
    rocksdb_block_based_options_set_block_size(t, (size_t)v->block);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(t, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 1);
    if (v->partitioned) {
        rocksdb_block_based_options_set_index_type(t, 2);
        rocksdb_block_based_options_set_partition_filters(t, v->bloom > 0);
        rocksdb_block_based_options_set_metadata_block_size(t, 4096);
        rocksdb_block_based_options_set_pin_top_level_index_and_filter(t, 1);
    }
    if (v->bloom) rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(v->bloom));
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    if (v->mmap) rocksdb_options_set_allow_mmap_reads(o, 1);
    return o;
}

/* Write the database for v at dir (SST ingest), same rows for every variant. */
static void build(const variant *v, const char *dir) {
    rocksdb_cache_t *cache;
    rocksdb_options_t *o = options(v, &cache);
    rocksdb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);
    if (!db) die("create", err);
    rocksdb_envoptions_t *eo = rocksdb_envoptions_create();
    rocksdb_sstfilewriter_t *w = rocksdb_sstfilewriter_create(eo, o);
    char sst[600];
    snprintf(sst, sizeof sst, "%s.sst", dir);
    rocksdb_sstfilewriter_open(w, sst, &err);
    if (err) die("sst open", err);
    rk_rng r;
    rk_rng_seed(&r, 7);
    unsigned char k[8], val[VB];
    for (uint64_t row = 0; row < ROWS; row++) {
        be64(k, row);
        for (int j = 0; j < VB; j += 8) {
            uint64_t x = rk_rng_next(&r);
            memcpy(val + j, &x, 8);
        }
        rocksdb_sstfilewriter_put(w, (const char *)k, 8, (const char *)val, VB, &err);
        if (err) die("sst put", err);
    }
    rocksdb_sstfilewriter_finish(w, &err);
    if (err) die("sst finish", err);
    rocksdb_sstfilewriter_destroy(w);
    rocksdb_envoptions_destroy(eo);
    const char *files[1] = {sst};
    rocksdb_ingestexternalfileoptions_t *io = rocksdb_ingestexternalfileoptions_create();
    rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
    rocksdb_ingest_external_file(db, files, 1, io, &err);
    if (err) die("ingest", err);
    rocksdb_ingestexternalfileoptions_destroy(io);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    rocksdb_cache_destroy(cache);
}

typedef struct {
    rocksdb_cache_t *cache;
    rocksdb_options_t *o;
    rocksdb_column_family_handle_t *cf;
    rocksdb_t *db;
    rocksdb_readoptions_t *ro;
} handle;

static void hopen(const variant *v, const char *dir, handle *h) {
    h->o = options(v, &h->cache);
    const char *names[1] = {"default"};
    const rocksdb_options_t *cfo[1] = {h->o};
    char *err = NULL;
    h->db = rocksdb_open_for_read_only_column_families(h->o, dir, 1, names, cfo, &h->cf, 0, &err);
    if (!h->db) die("open", err);
    h->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(h->ro, (unsigned char)v->verify);
    /* the file into the page cache (SstFileWriter dropped it) */
    rocksdb_readoptions_t *scan = rocksdb_readoptions_create();
    rocksdb_readoptions_set_fill_cache(scan, 0);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(h->db, scan, h->cf);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(scan);
}

static void hclose(handle *h) {
    rocksdb_readoptions_destroy(h->ro);
    rocksdb_column_family_handle_destroy(h->cf);
    rocksdb_close(h->db);
    rocksdb_options_destroy(h->o);
    rocksdb_cache_destroy(h->cache);
}

/* Seconds per row over nb MultiGet batches of 200 distinct random rows. */
static double mget(handle *h, rk_rng *r, int nb) {
    static uint64_t keys[BATCH];
    static unsigned char kb[BATCH * 8];
    static const char *kp[BATCH];
    static size_t ks[BATCH];
    static rocksdb_pinnableslice_t *vals[BATCH];
    static char *errs[BATCH];
    static unsigned char out[BATCH * VB];
    double t = 0;
    size_t rows = 0;
    for (int b = 0; b < nb; b++) {
        for (int i = 0; i < BATCH; i++) keys[i] = rk_rng_below(r, ROWS);
        qsort(keys, BATCH, 8, u64cmp);
        size_t u = 0;
        for (int i = 0; i < BATCH; i++) {
            if (i && keys[i] == keys[i - 1]) continue;
            be64(kb + 8 * u, keys[i]);
            kp[u] = (const char *)kb + 8 * u;
            ks[u++] = 8;
        }
        double a = rk_now();
        rocksdb_batched_multi_get_cf(h->db, h->ro, h->cf, u, kp, ks, vals, errs, 1);
        for (size_t i = 0; i < u; i++) {
            size_t vl = 0;
            if (errs[i]) die("multiget", errs[i]);
            if (!vals[i]) die("multiget", "row missing");
            memcpy(out + i * VB, rocksdb_pinnableslice_value(vals[i], &vl), VB);
            rocksdb_pinnableslice_destroy(vals[i]);
        }
        t += rk_now() - a;
        rows += u;
    }
    return t / (double)rows;
}

/* Seconds per single rocksdb_get_pinned_cf of a random row. */
static double get1(handle *h, rk_rng *r, int n) {
    double t = 0;
    unsigned char out[VB];
    for (int i = 0; i < n; i++) {
        unsigned char k[8];
        char *err = NULL;
        be64(k, rk_rng_below(r, ROWS));
        double a = rk_now();
        rocksdb_pinnableslice_t *p = rocksdb_get_pinned_cf(h->db, h->ro, h->cf, (const char *)k, 8, &err);
        if (err || !p) die("get", err);
        size_t vl;
        memcpy(out, rocksdb_pinnableslice_value(p, &vl), VB);
        rocksdb_pinnableslice_destroy(p);
        t += rk_now() - a;
    }
    return t / n;
}

static int dcmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *base = argc > 1 ? argv[1] : "build/bench-store-levers";
    static const variant vs[] = {
        {"old options: 4 KB blocks, monolithic index, bloom 10", 4096, 0, 10, -1, 0, 1, 0},
        {"same, LRU in 4 shards (index fits one)", 4096, 0, 10, 2, 0, 1, 0},
        {"4 KB blocks, partitioned index + filter", 4096, 1, 10, -1, 0, 1, 0},
        {"1 KB blocks, partitioned index + filter", 1024, 1, 10, -1, 0, 1, 0},
        {"1 KB blocks, partitioned index + filter, mmap reads", 1024, 1, 10, -1, 1, 1, 0},
        {"store: 1 KB blocks, partitioned index, no filter", 1024, 1, 0, -1, 0, 1, 1},
        {"store options, checksums not verified (for scale)", 1024, 1, 0, -1, 0, 0, 1},
        {"store options + mmap reads", 1024, 1, 0, -1, 1, 1, 1},
    };
    enum { NV = sizeof vs / sizeof vs[0], ROUNDS = 7 };
    static handle h[NV];
    rk_err e = {0};
    if (rk_mkdir_p(base, &e)) die("mkdir", e.msg);
    for (int i = 0; i < NV; i++) {
        char dir[512], sst[600];
        snprintf(dir, sizeof dir, "%s/v%d", base, i);
        snprintf(sst, sizeof sst, "%s.sst", dir);
        (void)rk_rm_rf(dir, NULL);
        (void)remove(sst);
        build(&vs[i], dir);
        hopen(&vs[i], dir, &h[i]);
    }
    /* Rounds interleave the variants, so machine noise spreads over all of
     * them; each round: 100 warm-up batches, 150 measured, 10,000 Gets.
     * Reported: the median round. */
    rk_rng r;
    rk_rng_seed(&r, 11);
    static double mg[NV][ROUNDS], g[NV][ROUNDS];
    for (int k = 0; k < ROUNDS; k++)
        for (int i = 0; i < NV; i++) {
            (void)mget(&h[i], &r, 100);
            mg[i][k] = mget(&h[i], &r, 150) * 1e6;
            g[i][k] = get1(&h[i], &r, 10000) * 1e6;
        }
    printf("| variant | MultiGet us/row (200 rows), median [min-max] of %d rounds | single Get us, median |\n|---|---|---|\n",
           ROUNDS);
    double old_us = 0, store_us = 0;
    for (int i = 0; i < NV; i++) {
        qsort(mg[i], ROUNDS, sizeof(double), dcmp);
        qsort(g[i], ROUNDS, sizeof(double), dcmp);
        printf("| %s | %.2f [%.2f-%.2f] | %.2f |\n", vs[i].name, mg[i][ROUNDS / 2], mg[i][0], mg[i][ROUNDS - 1],
               g[i][ROUNDS / 2]);
        if (i == 0) old_us = mg[i][ROUNDS / 2];
        if (vs[i].store && vs[i].verify && !vs[i].mmap) store_us = mg[i][ROUNDS / 2];
        hclose(&h[i]);
    }
    (void)rk_rm_rf(base, NULL);
    printf("bench-store-levers: old_us=%.2f store_us=%.2f\n", old_us, store_us);
    return 0;
}
