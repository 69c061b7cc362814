/*
 * tests/test_store.c — the embedding store: codecs, bulk load, default rows,
 * no insert on read, the RAM cache, versions under concurrent readers,
 * online updates (torn-row and kill -9 checks), fault injection through the
 * rk_rocks shim, and corrupt / foreign directories.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bench/store_crash.h"
#include "store.h"
#include "store_internal.h"

static char tmpdir[256];

static void mk_tmp(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-store-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void rm_tmp(void) {
    rk_rocks_reset();
    char mnt[300], cmd[400];
    snprintf(mnt, sizeof mnt, "%s/mnt", tmpdir);
    snprintf(cmd, sizeof cmd, "umount %s 2>/dev/null", mnt); /* the disk-full test's tmpfs */
    if (rk_is_dir(mnt) && system(cmd)) {}
    rk_rm_rf(tmpdir, NULL);
}

static float *make_rows(uint64_t rows, int dim, uint64_t seed) {
    float *d = malloc(rows * (size_t)dim * sizeof(float));
    rk_rng r;
    rk_rng_seed(&r, seed);
    for (size_t i = 0; i < rows * (size_t)dim; i++) d[i] = (float)(rk_rng_normal(&r) * 0.1);
    return d;
}

/* A store with one table "t" (and "u" when two); returns the path. */
static void write_store(const char *name, uint64_t rows, int dim, rk_codec codec, const float *data, const float *oov,
                        char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", tmpdir, name);
    rk_table_spec spec = {"t", dim, rows, data};
    rk_table_opts to = {codec, oov};
    rk_err e = {0};
    cr_assert_eq(rk_store_write_ex(path, &spec, 1, &to, &e), RK_OK, "%s", e.msg);
}

static rk_store *open_store(const char *path, size_t cache_bytes, int writable) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = cache_bytes;
    o.writable = writable;
    rk_store *s;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_ex(path, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    return s;
}

/* ====================================================================== codecs */

Test(codec, names_and_sizes) {
    rk_codec c;
    cr_expect_eq(rk_codec_parse("int8", &c, NULL), RK_OK);
    cr_expect_eq(c, RK_CODEC_INT8);
    rk_err e = {0};
    cr_expect_eq(rk_codec_parse("bf16", &c, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "got 'bf16'"), "%s", e.msg);
    cr_expect_eq(rk_codec_row_bytes(RK_CODEC_FP32, 64), 256);
    cr_expect_eq(rk_codec_row_bytes(RK_CODEC_FP16, 64), 128);
    cr_expect_eq(rk_codec_row_bytes(RK_CODEC_INT8, 64), 72);
}

Test(codec, fp32_exact) {
    float *x = make_rows(100, 64, 1), y[64];
    unsigned char b[256];
    for (int r = 0; r < 100; r++) {
        rk_codec_encode(RK_CODEC_FP32, x + r * 64, 64, b);
        rk_codec_decode(RK_CODEC_FP32, b, 64, y);
        cr_assert_eq(memcmp(x + r * 64, y, sizeof y), 0);
    }
    free(x);
}

/* fp16: bit-exact against the compiler's IEEE conversion (_Float16), and
 * within the documented error bound. */
Test(codec, fp16_matches_ieee_and_bound) {
    rk_rng r;
    rk_rng_seed(&r, 7);
    enum { N = 64 };
    float x[N], y[N];
    unsigned char b[2 * N];
    for (int it = 0; it < 20000; it++) {
        for (int i = 0; i < N; i++) {
            uint32_t bits = (uint32_t)rk_rng_next(&r);
            if (it % 2) { /* random finite values of every magnitude */
                memcpy(&x[i], &bits, 4);
                if (!isfinite(x[i])) x[i] = 1.0f;
            } else {
                x[i] = (float)(rk_rng_normal(&r) * pow(10.0, (double)(it % 11) - 6));
            }
        }
        if (it == 0) { /* special values */
            float sp[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, -70000.0f, 5.9604645e-8f, 2.9802322e-8f,
                          2.98023259e-8f, 6.097555e-5f, 6.1035156e-5f, INFINITY, -INFINITY, 1e-30f, 0.33333334f};
            memcpy(x, sp, sizeof sp);
        }
        rk_codec_encode(RK_CODEC_FP16, x, N, b);
        rk_codec_decode(RK_CODEC_FP16, b, N, y);
        for (int i = 0; i < N; i++) {
            _Float16 h = (_Float16)x[i];
            uint16_t hb;
            memcpy(&hb, &h, 2);
            uint16_t got = (uint16_t)(b[2 * i] | (b[2 * i + 1] << 8));
            cr_assert_eq(got, hb, "x=%.9g: got 0x%04x, IEEE 0x%04x", x[i], got, hb);
            cr_assert(y[i] == (float)h || (isnan(y[i]) && isnan((float)h)), "decode of 0x%04x", hb);
            float ax = fabsf(x[i]);
            if (ax < 65504.0f) {
                double bound = ax >= 6.1035156e-5f ? ldexp(ax, -11) : ldexp(1.0, -25);
                cr_assert(fabs((double)y[i] - x[i]) <= bound, "x=%.9g y=%.9g", x[i], y[i]);
            }
        }
    }
    /* NaN stays NaN */
    x[0] = NAN;
    rk_codec_encode(RK_CODEC_FP16, x, 1, b);
    rk_codec_decode(RK_CODEC_FP16, b, 1, y);
    cr_expect(isnan(y[0]));
}

Test(codec, int8_rowwise_bound) {
    rk_rng r;
    rk_rng_seed(&r, 3);
    enum { N = 64 };
    float x[N], y[N];
    unsigned char b[N + 8];
    for (int it = 0; it < 5000; it++) {
        double sc = pow(10.0, (double)(it % 9) - 4), off = (it % 3) * sc;
        for (int i = 0; i < N; i++) x[i] = (float)(rk_rng_normal(&r) * sc + off);
        if (it == 1) for (int i = 0; i < N; i++) x[i] = 0.25f; /* constant row */
        rk_codec_encode(RK_CODEC_INT8, x, N, b);
        rk_codec_decode(RK_CODEC_INT8, b, N, y);
        float mn = x[0], mx = x[0], scale, bias, amax = 0;
        for (int i = 0; i < N; i++) {
            mn = fminf(mn, x[i]), mx = fmaxf(mx, x[i]);
            amax = fmaxf(amax, fabsf(x[i]));
        }
        memcpy(&scale, b + N, 4);
        memcpy(&bias, b + N + 4, 4);
        cr_assert_eq(bias, mn);
        cr_assert(mx == mn ? scale == 1.0f : fabsf(scale - (mx - mn) / 255.0f) <= 1e-6f * scale);
        for (int i = 0; i < N; i++)
            cr_assert(fabsf(y[i] - x[i]) <= (mx == mn ? 0 : scale / 2) + 1e-8f + 1e-6f * amax,
                      "it %d i %d: x=%.9g y=%.9g scale=%g", it, i, x[i], y[i], scale);
        cr_assert_eq(y[0] == x[0] || mx != mn, 1);
    }
}

/* Every codec through the store: write, open, read back within its bound. */
Test(store, codecs_round_trip_through_store, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 32;
    const uint64_t rows = 2000;
    float *x = make_rows(rows, dim, 11), *y = malloc(rows * dim * sizeof(float));
    uint64_t *ids = malloc(rows * sizeof *ids);
    for (uint64_t i = 0; i < rows; i++) ids[i] = rows - 1 - i; /* reversed order */
    const rk_codec codecs[] = {RK_CODEC_FP32, RK_CODEC_FP16, RK_CODEC_INT8};
    for (int c = 0; c < 3; c++) {
        char path[512], nm[16];
        snprintf(nm, sizeof nm, "s%d", c);
        write_store(nm, rows, dim, codecs[c], x, NULL, path, sizeof path);
        rk_store *s = open_store(path, c == 1 ? 0 : (size_t)1 << 20, 0);
        rk_table_info ti;
        rk_store_table_info(s, 0, &ti);
        cr_expect_eq(ti.codec, codecs[c]);
        cr_expect_eq(ti.rows, rows);
        cr_expect_eq(ti.row_bytes, rk_codec_row_bytes(codecs[c], dim));
        rk_err e = {0};
        for (int pass = 0; pass < 2; pass++) { /* second pass partly from the cache */
            size_t miss = 99;
            cr_assert_eq(rk_store_get(s, 0, ids, rows, y, &miss, &e), RK_OK, "%s", e.msg);
            cr_expect_eq(miss, 0);
            for (uint64_t i = 0; i < rows; i++) {
                const float *a = x + ids[i] * dim, *b = y + i * dim;
                float mn = a[0], mx = a[0];
                for (int j = 0; j < dim; j++) mn = fminf(mn, a[j]), mx = fmaxf(mx, a[j]);
                for (int j = 0; j < dim; j++) {
                    float tol = codecs[c] == RK_CODEC_FP32 ? 0 : codecs[c] == RK_CODEC_FP16 ? ldexpf(fabsf(a[j]), -11) + 1e-7f
                                                                                           : (mx - mn) / 510 + 1e-8f + 1e-6f * fmaxf(fabsf(mn), fabsf(mx));
                    cr_assert(fabsf(a[j] - b[j]) <= tol, "codec %s row %llu col %d: %g vs %g", rk_codec_name(codecs[c]),
                              (unsigned long long)ids[i], j, a[j], b[j]);
                }
            }
        }
        uint64_t n;
        cr_assert_eq(rk_store_count_keys(s, 0, &n, &e), RK_OK, "%s", e.msg);
        cr_expect_eq(n, rows);
        rk_store_close(s);
    }
    free(x), free(y), free(ids);
}

/* ====================================================================== defaults */

Test(store, default_rows_zero_or_oov, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 8;
    float *x = make_rows(100, dim, 5);
    float oov[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char p1[512], p2[512];
    write_store("zero", 100, dim, RK_CODEC_FP32, x, NULL, p1, sizeof p1);
    write_store("oov", 100, dim, RK_CODEC_INT8, x, oov, p2, sizeof p2);
    uint64_t ids[5] = {3, 100, 99, 1ull << 40, 3};
    float y[5 * 8];
    rk_err e = {0};
    for (int k = 0; k < 2; k++) {
        rk_store *s = open_store(k ? p2 : p1, 1 << 20, 0);
        rk_table_info ti;
        rk_store_table_info(s, 0, &ti);
        cr_expect_eq(ti.has_oov_row, k);
        for (int rep = 0; rep < 2; rep++) {
            size_t miss = 0;
            cr_assert_eq(rk_store_get(s, 0, ids, 5, y, &miss, &e), RK_OK, "%s", e.msg);
            cr_expect_eq(miss, 2);
            for (int j = 0; j < dim; j++) {
                float want = k ? oov[j] : 0.0f;
                cr_expect(fabsf(y[1 * dim + j] - want) < 0.02f, "row 100 col %d: %g", j, y[dim + j]);
                cr_expect(fabsf(y[3 * dim + j] - want) < 0.02f);
                cr_expect(fabsf(y[0 * dim + j] - x[3 * dim + j]) < 0.01f);
                cr_expect_eq(y[4 * dim + j], y[j]); /* duplicate key, same row */
            }
        }
        uint64_t lookups, unknown;
        rk_store_counters(s, &lookups, &unknown);
        cr_expect_eq(lookups, 10);
        cr_expect_eq(unknown, 4);
        rk_store_close(s);
    }
    free(x);
}

/* 1M unseen ids: the table's key count and the cache are unchanged. */
Test(store, no_insert_on_read, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 16;
    float *x = make_rows(1000, dim, 9);
    char p[512];
    write_store("s", 1000, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store *s = open_store(p, 1 << 20, 1); /* writable: reads still must not write */
    rk_err e = {0};
    uint64_t before, after;
    cr_assert_eq(rk_store_count_keys(s, 0, &before, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(before, 1000);
    enum { B = 10000 };
    uint64_t *ids = malloc(B * sizeof *ids);
    float *y = malloc((size_t)B * dim * sizeof(float));
    rk_rng r;
    rk_rng_seed(&r, 1);
    size_t total_miss = 0;
    for (int b = 0; b < 100; b++) {
        for (int i = 0; i < B; i++) ids[i] = 1000 + rk_rng_below(&r, 1ull << 50);
        size_t miss;
        cr_assert_eq(rk_store_get(s, 0, ids, B, y, &miss, &e), RK_OK, "%s", e.msg);
        total_miss += miss;
    }
    cr_expect_eq(total_miss, 1000000);
    cr_assert_eq(rk_store_count_keys(s, 0, &after, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(after, before, "key count %llu -> %llu", (unsigned long long)before, (unsigned long long)after);
    rk_store_stats st;
    rk_store_stats_get(s, 0, &st);
    cr_expect_eq(st.cache_entries, 0, "unknown ids must not be cached");
    cr_expect_eq(st.unknown, 1000000);
    rk_store_close(s);
    /* and a fresh read-only open sees the same count */
    s = open_store(p, 0, 0);
    cr_assert_eq(rk_store_count_keys(s, 0, &after, &e), RK_OK);
    cr_expect_eq(after, 1000);
    rk_store_close(s);
    free(ids), free(y), free(x);
}

/* ====================================================================== cache */

Test(cache, eviction_under_byte_budget, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 16;
    const uint64_t rows = 20000;
    float *x = make_rows(rows, dim, 2);
    char p[512];
    write_store("s", rows, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    size_t per = rk_cache_bytes_per_row(64);
    size_t budget = 2000 * per; /* 10% of the rows */
    rk_store *s = open_store(p, budget, 0);
    rk_store_stats st;
    rk_store_stats_get(s, 0, &st);
    cr_expect(st.cache_bytes <= budget + 64 * 1024, "cache allocated %zu bytes, budget %zu", st.cache_bytes, budget);
    cr_expect(st.cache_slots >= 1900 && st.cache_slots <= 2000, "slots %llu", (unsigned long long)st.cache_slots);
    /* scan everything twice: must evict, stay within the slots, stay correct */
    uint64_t ids[500];
    float y[500 * 16];
    rk_err e = {0};
    for (int pass = 0; pass < 2; pass++)
        for (uint64_t b = 0; b < rows; b += 500) {
            for (int i = 0; i < 500; i++) ids[i] = b + (uint64_t)i;
            cr_assert_eq(rk_store_get(s, 0, ids, 500, y, NULL, &e), RK_OK, "%s", e.msg);
            cr_assert_eq(memcmp(y, x + b * dim, sizeof y), 0, "rows from %llu", (unsigned long long)b);
        }
    rk_store_stats_get(s, 0, &st);
    cr_expect_eq(st.cache_entries, st.cache_slots);
    cr_expect(st.cache_evictions >= 2 * rows - st.cache_slots - 10, "evictions %llu", (unsigned long long)st.cache_evictions);
    /* CLOCK keeps a hot set: 200 hot keys read between cold scans stay cached */
    rk_rng r;
    rk_rng_seed(&r, 4);
    uint64_t h0 = st.cache_hits, m0 = st.cache_misses;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 200; i++) ids[i] = (uint64_t)i * 97;
        cr_assert_eq(rk_store_get(s, 0, ids, 200, y, NULL, &e), RK_OK);
        for (int i = 0; i < 500; i++) ids[i] = 100000 % rows + rk_rng_below(&r, rows);
        cr_assert_eq(rk_store_get(s, 0, ids, 500, y, NULL, &e), RK_OK);
    }
    rk_store_stats_get(s, 0, &st);
    (void)h0, (void)m0;
    /* hot hits: verify directly */
    uint64_t hits_before = st.cache_hits;
    for (int i = 0; i < 200; i++) ids[i] = (uint64_t)i * 97;
    cr_assert_eq(rk_store_get(s, 0, ids, 200, y, NULL, &e), RK_OK);
    rk_store_stats_get(s, 0, &st);
    cr_expect(st.cache_hits - hits_before >= 180, "hot set hits %llu of 200", (unsigned long long)(st.cache_hits - hits_before));
    rk_store_close(s);
    free(x);
}

/* Batch lookups group keys by shard in chunks of 512: a 1,300-key batch
 * with duplicates and unknown ids, for 1, 64 and 256 shards, returns every
 * row exactly (zeros for unknown ids); once cached, every known key of the
 * batch (duplicates included) counts as a hit and none reads RocksDB. */
Test(cache, batch_lookup_by_shard_is_exact, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 16;
    const uint64_t rows = 5000;
    float *x = make_rows(rows, dim, 9);
    char p[512];
    write_store("s", rows, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    enum { N = 1300 };
    static uint64_t ids[N];
    static float y[N * 16];
    rk_rng r;
    rk_rng_seed(&r, 10);
    size_t known = 0;
    for (int i = 0; i < N; i++) {
        ids[i] = i % 7 == 3 ? ids[i / 2] : rk_rng_below(&r, rows + 1000); /* duplicates; >= rows unknown */
        known += ids[i] < rows;
    }
    const int shards[] = {1, 64, 256};
    for (int k = 0; k < 3; k++) {
        rk_store_opts o = RK_STORE_OPTS_DEFAULT;
        o.cache_bytes = rows * rk_cache_bytes_per_row(64) * 2;
        o.cache_shards = shards[k];
        rk_store *s;
        rk_err e = {0};
        cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
        for (int pass = 0; pass < 2; pass++) {
            rk_store_stats a, b;
            rk_store_stats_get(s, 0, &a);
            memset(y, 0xff, sizeof y);
            size_t unknown = 0;
            cr_assert_eq(rk_store_get(s, 0, ids, N, y, &unknown, &e), RK_OK, "%s", e.msg);
            cr_assert_eq(unknown, N - known);
            for (int i = 0; i < N; i++)
                for (int j = 0; j < dim; j++) {
                    float want = ids[i] < rows ? x[ids[i] * dim + (uint64_t)j] : 0.f;
                    cr_assert_eq(y[i * dim + j], want, "shards %d pass %d key %d (row %llu) col %d", shards[k], pass, i,
                                 (unsigned long long)ids[i], j);
                }
            rk_store_stats_get(s, 0, &b);
            if (pass == 1) {
                cr_assert_eq(b.cache_hits - a.cache_hits, known, "shards %d: hits", shards[k]);
                cr_assert_eq(b.cache_misses - a.cache_misses, N - known, "shards %d: misses", shards[k]);
                /* known ids come from the cache; ids >= rows get the default
                 * row without a RocksDB read */
                cr_assert_eq(b.rocksdb_reads - a.rocksdb_reads, 0, "shards %d: RocksDB reads", shards[k]);
                cr_assert_eq(b.unknown - a.unknown, N - known);
            }
        }
        rk_store_close(s);
    }
    free(x);
}

Test(cache, bytes_per_row_within_1_3x) {
    const struct { rk_codec c; int dim; } cases[] = {{RK_CODEC_FP32, 64}, {RK_CODEC_FP16, 64}, {RK_CODEC_INT8, 64},
                                                     {RK_CODEC_FP32, 16}};
    for (int i = 0; i < 4; i++) {
        size_t rb = rk_codec_row_bytes(cases[i].c, cases[i].dim);
        rk_cache c;
        cr_assert_eq(rk_cache_init(&c, 100000, 64, rb, NULL), RK_OK);
        double ratio = (double)c.bytes / (double)c.slots / (double)rb;
        cr_expect(ratio <= 1.3, "%s dim %d: %.3f bytes per row byte", rk_codec_name(cases[i].c), cases[i].dim, ratio);
        rk_cache_free(&c);
    }
}

/* ====================================================================== updates */

Test(update, apply_is_visible_and_read_only_refuses, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 8;
    float *x = make_rows(100, dim, 8);
    char p[512];
    write_store("s", 100, dim, RK_CODEC_FP16, x, NULL, p, sizeof p);
    rk_err e = {0};
    rk_store *ro = open_store(p, 1 << 20, 0);
    uint64_t id = 5;
    float v[8] = {1, 1, 1, 1, 1, 1, 1, 1}, y[8];
    cr_expect_eq(rk_store_apply(ro, 0, &id, 1, v, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "read-only"), "%s", e.msg);
    rk_store_close(ro);
    rk_store *s = open_store(p, 1 << 20, 1);
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK); /* now cached */
    cr_assert_eq(rk_store_apply(s, 0, &id, 1, v, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(memcmp(y, v, sizeof v), 0, "cached row updated in place");
    uint64_t nid = 1000; /* outside the table: refused, and nothing is written */
    cr_expect_eq(rk_store_apply(s, 0, &nid, 1, v, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "rows[0]: 1000 outside the table's 100 rows"), "%s", e.msg);
    size_t miss;
    cr_assert_eq(rk_store_get(s, 0, &nid, 1, y, &miss, &e), RK_OK);
    cr_expect_eq(miss, 1);
    v[2] = 1e7f; /* finite but beyond RK_STORE_MAX_ABS */
    cr_expect_eq(rk_store_apply(s, 0, &id, 1, v, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "column 2"), "%s", e.msg);
    v[2] = 1;
    v[3] = NAN;
    cr_expect_eq(rk_store_apply(s, 0, &id, 1, v, &e), RK_ENUMERIC);
    cr_expect(strstr(e.msg, "column 3"), "%s", e.msg);
    rk_store_close(s);
    free(x);
}

typedef struct {
    rk_store *s;
    atomic_int *stop;
    long reads, torn;
} torn_arg;

static void torn_row(uint64_t row, uint64_t k, float *v) {
    for (int j = 0; j < 64; j++) v[j] = (float)(row * 1000 + k) + (float)j * 0.0f;
}

static void *torn_reader(void *p) {
    torn_arg *a = p;
    uint64_t ids[64];
    float y[64 * 64];
    rk_rng r;
    rk_rng_seed(&r, (uint64_t)(uintptr_t)p);
    while (!atomic_load(a->stop)) {
        for (int i = 0; i < 64; i++) ids[i] = rk_rng_below(&r, 256);
        if (rk_store_get(a->s, 0, ids, 64, y, NULL, NULL)) continue;
        for (int i = 0; i < 64; i++) {
            for (int j = 1; j < 64; j++)
                if (y[i * 64 + j] != y[i * 64]) {
                    a->torn++;
                    break;
                }
            a->reads++;
        }
    }
    return NULL;
}

/* Readers racing a writer through the cache never see a mixed row. */
Test(update, readers_never_see_torn_rows, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    float *x = malloc(256 * 64 * sizeof(float));
    for (uint64_t i = 0; i < 256; i++) torn_row(i, 0, x + i * 64);
    char p[512];
    write_store("s", 256, 64, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.writable = 1;
    o.sync_writes = 0; /* speed; durability is the crash test's job */
    o.cache_bytes = 128 * rk_cache_bytes_per_row(256); /* half the rows: fills and evictions race too */
    rk_store *s;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    atomic_int stop = 0;
    torn_arg a[2] = {{s, &stop, 0, 0}, {s, &stop, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, torn_reader, &a[i]);
    rk_rng r;
    rk_rng_seed(&r, 99);
    float v[16 * 64];
    uint64_t ids[16];
    for (uint64_t k = 1; k <= 2000; k++) {
        for (int i = 0; i < 16; i++) {
            ids[i] = rk_rng_below(&r, 256);
            torn_row(ids[i], k, v + i * 64);
        }
        cr_assert_eq(rk_store_apply(s, 0, ids, 16, v, &e), RK_OK, "%s", e.msg);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    cr_expect_eq(a[0].torn + a[1].torn, 0);
    cr_expect(a[0].reads + a[1].reads > 1000, "reads %ld", a[0].reads + a[1].reads);
    /* after the writer stops, every row read equals the last write */
    rk_store_close(s);
    free(x);
}

Test(update, kill9_loses_no_acknowledged_update, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    uint64_t acked = 0;
    for (int t = 0; t < 4; t++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/crash%d", tmpdir, t);
        rk_crash_result r;
        int rc = rk_crash_trial(dir, 100 + (uint64_t)t, 20000 + 30000 * t, &r);
        cr_assert_eq(rc, 0, "trial %d: %s", t, r.err);
        cr_expect_eq(r.lost, 0, "trial %d: %llu rows lost an acknowledged update", t, (unsigned long long)r.lost);
        cr_expect_eq(r.torn, 0, "trial %d: %llu torn rows", t, (unsigned long long)r.torn);
        acked += r.acked;
    }
    cr_expect(acked > 0, "no update was acknowledged before the kills");
}

/* ====================================================================== versions */

typedef struct {
    rk_store_live *l;
    atomic_int *stop;
    long batches, mixed, errors;
    atomic_int max_version; /* read by the main thread while readers run */
} ver_arg;

static void *ver_reader(void *p) {
    ver_arg *a = p;
    uint64_t ids[64];
    float y[64 * 4];
    rk_rng r;
    rk_rng_seed(&r, (uint64_t)(uintptr_t)p);
    while (!atomic_load(a->stop)) {
        rk_store *s = rk_store_live_acquire(a->l);
        for (int i = 0; i < 64; i++) ids[i] = rk_rng_below(&r, 1000);
        if (rk_store_get(s, 0, ids, 64, y, NULL, NULL)) a->errors++;
        rk_store_live_release(a->l, s);
        /* value = row * 10 + version; one batch = one version */
        int v0 = (int)lrintf(y[0] - (float)ids[0] * 10);
        for (int i = 0; i < 64; i++)
            if ((int)lrintf(y[i * 4] - (float)ids[i] * 10) != v0) {
                a->mixed++;
                break;
            }
        if (v0 > atomic_load(&a->max_version)) atomic_store(&a->max_version, v0);
        a->batches++;
    }
    return NULL;
}

static void write_version(int v, char *path, size_t cap) {
    float *x = malloc(1000 * 4 * sizeof(float));
    for (int i = 0; i < 1000; i++)
        for (int j = 0; j < 4; j++) x[i * 4 + j] = (float)(i * 10 + v);
    char nm[32];
    snprintf(nm, sizeof nm, "v%d", v);
    write_store(nm, 1000, 4, RK_CODEC_FP32, x, NULL, path, cap);
    free(x);
}

Test(versions, switch_under_concurrent_readers, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    char paths[6][512];
    for (int v = 0; v < 6; v++) write_version(v, paths[v], sizeof paths[v]);
    rk_store_live *l;
    rk_err e = {0};
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = 1 << 20;
    cr_assert_eq(rk_store_live_open(paths[0], &o, &l, &e), RK_OK, "%s", e.msg);
    atomic_int stop = 0;
    ver_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (ver_arg){l, &stop, 0, 0, 0, 0};
        atomic_store(&a[i].max_version, -1);
        pthread_create(&th[i], NULL, ver_reader, &a[i]);
    }
    for (int v = 1; v < 6; v++) {
        struct timespec ts = {0, 30 * 1000 * 1000};
        nanosleep(&ts, NULL);
        cr_assert_eq(rk_store_live_switch(l, paths[v], 1, &e), RK_OK, "%s", e.msg);
    }
    /* until every reader has read the last version (no fixed sleep: on a
     * loaded machine a reader may not run for a while) */
    double t0 = rk_now();
    for (int i = 0; i < 3; i++)
        while (atomic_load(&a[i].max_version) < 5 && rk_now() - t0 < 30) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    atomic_store(&stop, 1);
    long batches = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(a[i].mixed, 0, "reader %d saw a batch mixing versions", i);
        cr_expect_eq(a[i].errors, 0);
        cr_expect_eq(atomic_load(&a[i].max_version), 5, "reader %d never read the last version in 30 s", i);
        batches += a[i].batches;
    }
    cr_expect(batches > 100, "batches %ld", batches);
    /* old versions are gone once no reader holds them; the current one stays */
    for (int v = 0; v < 5; v++) cr_expect(!rk_path_exists(paths[v]), "version %d not deleted", v);
    cr_expect(rk_path_exists(paths[5]));
    /* a held reference keeps a retired version's directory */
    char p6[512];
    write_version(6, p6, sizeof p6);
    rk_store *held = rk_store_live_acquire(l);
    cr_assert_eq(rk_store_live_switch(l, p6, 1, &e), RK_OK, "%s", e.msg);
    cr_expect(rk_path_exists(paths[5]), "deleted while a reader holds it");
    uint64_t id = 7;
    float y[4];
    cr_expect_eq(rk_store_get(held, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(y[0], 75.0f);
    rk_store_live_release(l, held);
    cr_expect(!rk_path_exists(paths[5]), "not deleted after the last release");
    char cur[512];
    rk_store_live_current(l, cur, sizeof cur);
    cr_expect_str_eq(cur, p6);
    /* an incompatible version is refused and the old one keeps serving */
    char p7[512];
    float z[10 * 8] = {0};
    snprintf(p7, sizeof p7, "%s/bad", tmpdir);
    rk_table_spec sp = {"t", 8, 10, z};
    cr_assert_eq(rk_store_write(p7, &sp, 1, &e), RK_OK);
    cr_expect_eq(rk_store_live_switch(l, p7, 1, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "dim 8"), "%s", e.msg);
    rk_store_live_current(l, cur, sizeof cur);
    cr_expect_str_eq(cur, p6);
    rk_store_live_close(l);
    cr_expect(rk_path_exists(p6), "closing does not delete the current version");
}

Test(versions, publish_is_immutable_and_atomic, .init = mk_tmp, .fini = rm_tmp) {
    char p[512];
    write_version(1, p, sizeof p);
    float z[4] = {0};
    rk_table_spec sp = {"t", 4, 1, z};
    rk_err e = {0};
    cr_expect_eq(rk_store_write(p, &sp, 1, &e), RK_EEXIST);
    cr_expect(strstr(e.msg, "already exists"), "%s", e.msg);
    /* the build directory never carries the final name: failed builds leave nothing */
    char q[512];
    snprintf(q, sizeof q, "%s/bad", tmpdir);
    rk_table_spec bad[2] = {{"a", 4, 1, z}, {"a", 4, 1, z}};
    cr_expect_eq(rk_store_write(q, bad, 2, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "appears twice"), "%s", e.msg);
    float inf[4] = {0, INFINITY, 0, 0};
    rk_table_spec sp2 = {"a", 4, 1, inf};
    cr_expect_eq(rk_store_write(q, &sp2, 1, &e), RK_ENUMERIC);
    cr_expect(!rk_path_exists(q));
    char tmpq[600];
    snprintf(tmpq, sizeof tmpq, "%s.tmp-%ld", q, (long)getpid());
    cr_expect(!rk_path_exists(tmpq));
}

/* ====================================================================== faults */

static void set_err(char **errptr, const char *msg) {
    free(*errptr);
    *errptr = strdup(msg);
}
static void fail_write(rocksdb_t *db, const rocksdb_writeoptions_t *wo, rocksdb_writebatch_t *wb, char **err) {
    (void)db, (void)wo, (void)wb;
    set_err(err, "IO error: No space left on device: While appending to file: 000009.log");
}
static void fail_mget(rocksdb_t *db, const rocksdb_readoptions_t *ro, rocksdb_column_family_handle_t *cf, size_t n,
                      const char *const *keys, const size_t *sizes, rocksdb_pinnableslice_t **vals, char **errs,
                      const bool sorted) {
    (void)db, (void)ro, (void)cf, (void)keys, (void)sizes, (void)sorted;
    for (size_t i = 0; i < n; i++) {
        vals[i] = NULL;
        errs[i] = strdup("Corruption: block checksum mismatch: stored = 1, computed = 2 in 000007.sst offset 0 size 4021");
    }
}
static rocksdb_t *fail_open_ro(const rocksdb_options_t *o, const char *path, int n, const char *const *names,
                               const rocksdb_options_t *const *cfo, rocksdb_column_family_handle_t **h, unsigned char w,
                               char **err) {
    (void)o, (void)path, (void)n, (void)names, (void)cfo, (void)h, (void)w;
    set_err(err, "IO error: While open a file for random read: 000007.sst: Input/output error");
    return NULL;
}
static void fail_ingest(rocksdb_t *db, rocksdb_column_family_handle_t *cf, const char *const *files, size_t n,
                        const rocksdb_ingestexternalfileoptions_t *o, char **err) {
    (void)db, (void)cf, (void)files, (void)n, (void)o;
    set_err(err, "IO error: No space left on device: While copying file");
}
static void fail_sst_put(rocksdb_sstfilewriter_t *w, const char *k, size_t kl, const char *v, size_t vl, char **err) {
    (void)w, (void)k, (void)kl, (void)v, (void)vl;
    set_err(err, "IO error: No space left on device: While appending to file: ingest-0.sst");
}

static int fail_create_cfs(const char *dir, int n, const char *const *names, char **err) {
    (void)dir, (void)n, (void)names;
    set_err(err, "IO error: No space left on device: While appending to file: MANIFEST-000001");
    return -1;
}

Test(faults, apply_io_error_is_a_status_and_nothing_changes, .init = mk_tmp, .fini = rm_tmp) {
    float *x = make_rows(10, 4, 1);
    char p[512];
    write_store("s", 10, 4, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store *s = open_store(p, 1 << 20, 1);
    rk_rocks.write = fail_write;
    uint64_t id = 2;
    float v[4] = {9, 9, 9, 9}, y[4];
    rk_err e = {0};
    cr_expect_eq(rk_store_apply(s, 0, &id, 1, v, &e), RK_ETOOBIG, "disk full is resource exhausted, not a plain I/O error");
    cr_expect(strstr(e.msg, "No space left on device") && strstr(e.msg, "nothing acknowledged"), "%s", e.msg);
    rk_rocks_reset();
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(memcmp(y, x + 8, sizeof y), 0, "a failed update must not reach the cache");
    /* the next update reopens the database in place, then writes */
    cr_assert_eq(rk_store_apply(s, 0, &id, 1, v, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(memcmp(y, v, sizeof y), 0, "the update after the reopen is served");
    rk_store_close(s);
    s = open_store(p, 1 << 20, 0);
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(memcmp(y, v, sizeof y), 0, "the update after the reopen is durable");
    rk_store_close(s);
    free(x);
}

Test(faults, read_errors_name_table_and_row, .init = mk_tmp, .fini = rm_tmp) {
    float *x = make_rows(10, 4, 1);
    char p[512];
    write_store("s", 10, 4, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store *s = open_store(p, 0, 0);
    rk_rocks.batched_multi_get_cf = fail_mget;
    uint64_t ids[2] = {4, 1};
    float y[8];
    rk_err e = {0};
    cr_expect_eq(rk_store_get(s, 0, ids, 2, y, NULL, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "table 't' row 1") && strstr(e.msg, "checksum mismatch"), "%s", e.msg);
    rk_rocks_reset();
    rk_store_close(s);
    free(x);
}

Test(faults, open_io_error, .init = mk_tmp, .fini = rm_tmp) {
    float *x = make_rows(10, 4, 1);
    char p[512];
    write_store("s", 10, 4, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_rocks.open_cf_ro = fail_open_ro;
    rk_store *s = (rk_store *)1;
    rk_err e = {0};
    cr_expect_eq(rk_store_open_ex(p, NULL, NULL, 0, NULL, &s, &e), RK_EIO);
    cr_expect_null(s);
    cr_expect(strstr(e.msg, "Input/output error"), "%s", e.msg);
    free(x);
}

Test(faults, bulk_load_errors_leave_nothing, .init = mk_tmp, .fini = rm_tmp) {
    float *x = make_rows(10, 4, 1);
    rk_table_spec sp = {"t", 4, 10, x};
    char p[512];
    snprintf(p, sizeof p, "%s/s", tmpdir);
    rk_err e = {0};
    rk_rocks.ingest_cf = fail_ingest;
    cr_expect_eq(rk_store_write(p, &sp, 1, &e), RK_ETOOBIG);
    cr_expect(strstr(e.msg, "SST ingestion failed") && strstr(e.msg, "No space"), "%s", e.msg);
    cr_expect(!rk_path_exists(p));
    rk_rocks_reset();
    rk_rocks.sst_put = fail_sst_put;
    cr_expect_eq(rk_store_write(p, &sp, 1, &e), RK_ETOOBIG);
    cr_expect(strstr(e.msg, "SST write failed"), "%s", e.msg);
    cr_expect(!rk_path_exists(p));
    rk_rocks.sst_put = NULL;
    rk_rocks_reset();
    rk_rocks.create_cfs = fail_create_cfs; /* the column families' creation */
    cr_expect_eq(rk_store_write(p, &sp, 1, &e), RK_ETOOBIG);
    cr_expect(strstr(e.msg, "cannot create") && strstr(e.msg, "No space"), "%s", e.msg);
    cr_expect(!rk_path_exists(p));
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    int left = 0;
    while (d && (de = readdir(d)))
        left += de->d_name[0] != '.';
    if (d) closedir(d);
    cr_expect_eq(left, 0, "the temporary directory is removed too");
    rk_rocks_reset();
    cr_expect_eq(rk_store_write(p, &sp, 1, &e), RK_OK, "%s", e.msg);
    free(x);
}

static int n_open_creating, n_create_calls, create_calls_n;
static rocksdb_t *open_cf_counting(const rocksdb_options_t *o, const char *path, int n, const char *const *names,
                                   const rocksdb_options_t *const *cfo, rocksdb_column_family_handle_t **h, char **err) {
    n_open_creating += rocksdb_options_get_create_missing_column_families((rocksdb_options_t *)o) != 0;
    return rocksdb_open_column_families(o, path, n, names, cfo, h, err);
}
static int create_cfs_counting(const char *dir, int n, const char *const *names, char **err) {
    n_create_calls++;
    create_calls_n = n;
    return rk_rocks_create_families(dir, n, names, err);
}

/* The column families of a new store are created in one call, never one by
 * one by RocksDB's open (create_missing_column_families), which rewrites the
 * OPTIONS file per family: quadratic in the table count (issue 15). */
Test(store, write_creates_every_family_in_one_call, .init = mk_tmp, .fini = rm_tmp) {
    enum { NT = 40 };
    float *x = make_rows(8, 2, 3);
    rk_table_spec sp[NT];
    char names[NT][16], p[512];
    for (int i = 0; i < NT; i++) {
        snprintf(names[i], sizeof names[i], "f%02d", i);
        sp[i] = (rk_table_spec){names[i], 2, i % 3 ? 8 : 0, x};
    }
    snprintf(p, sizeof p, "%s/s", tmpdir);
    rk_rocks.open_cf = open_cf_counting;
    rk_rocks.create_cfs = create_cfs_counting;
    rk_err e = {0};
    cr_assert_eq(rk_store_write(p, sp, NT, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(n_open_creating, 0, "an open with create_missing_column_families creates families one by one");
    cr_expect_eq(n_create_calls, 1);
    cr_expect_eq(create_calls_n, NT);
    rk_rocks_reset();
    rk_store *s = open_store(p, 0, 0);
    cr_assert_eq(rk_store_n_tables(s), NT);
    uint64_t id = 5;
    float y[2];
    cr_assert_eq(rk_store_get(s, 38, &id, 1, y, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect(y[0] == x[10] && y[1] == x[11], "table f38 row 5 reads back");
    rk_store_close(s);
    free(x);
}

/* Table files are opened by the opening thread: RocksDB's default starts 16
 * threads per column family at every open (16,000 for 1,000 tables). */
Test(store, options_open_table_files_on_one_thread) {
    rocksdb_cache_t *c;
    rocksdb_options_t *o = rk_store_rocks_options(1 << 20, &c);
    cr_expect_eq(rocksdb_options_get_max_file_opening_threads(o), 1);
    rocksdb_options_destroy(o);
    rocksdb_cache_destroy(c);
}

static void expect_open_fails(const char *dir, rk_status code, const char *needle) {
    rk_store *s = NULL;
    rk_err e = {0};
    rk_status st = rk_store_open_ex(dir, NULL, NULL, 0, NULL, &s, &e);
    cr_expect_eq(st, code, "%s: status %d (%s)", dir, st, e.msg);
    cr_expect_null(s);
    cr_expect(strstr(e.msg, needle), "'%s' lacks '%s'", e.msg, needle);
}

Test(faults, foreign_and_corrupt_directories, .init = mk_tmp, .fini = rm_tmp) {
    char p[512], q[600];
    /* missing */
    snprintf(p, sizeof p, "%s/none", tmpdir);
    expect_open_fails(p, RK_ENOTFOUND, "missing directory");
    /* a directory of other files */
    snprintf(p, sizeof p, "%s/other", tmpdir);
    mkdir(p, 0755);
    snprintf(q, sizeof q, "%s/notes.txt", p);
    cr_assert_eq(rk_write_file(q, "hello", 5, NULL), RK_OK);
    expect_open_fails(p, RK_EFORMAT, "not a RocksDB database");
    /* a RocksDB database that is not a rankd store */
    snprintf(p, sizeof p, "%s/plain", tmpdir);
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    char *rerr = NULL;
    rocksdb_t *db = rocksdb_open(o, p, &rerr);
    cr_assert_not_null(db, "%s", rerr);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_put(db, wo, "k", 1, "v", 1, &rerr);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    expect_open_fails(p, RK_EFORMAT, "not a rankd store");
    /* CURRENT names a manifest that is garbage */
    float *x = make_rows(10, 4, 1);
    write_store("cur", 10, 4, RK_CODEC_FP32, x, NULL, p, sizeof p);
    snprintf(q, sizeof q, "%s/CURRENT", p);
    cr_assert_eq(rk_write_file(q, "MANIFEST-999999\n", 16, NULL), RK_OK);
    rk_store *s = NULL;
    rk_err e = {0};
    rk_status st = rk_store_open_ex(p, NULL, NULL, 0, NULL, &s, &e);
    cr_expect(st == RK_EIO || st == RK_EFORMAT || st == RK_ENOTFOUND, "status %d", st);
    cr_expect_null(s);
    cr_expect(strstr(e.msg, "MANIFEST"), "%s", e.msg);
    free(x);
}

/* Flip bytes inside the data of the table's SST file: reads and scans
 * report corruption as RK_EFORMAT, never crash. */
Test(faults, corrupt_sst_is_reported, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 16;
    const uint64_t rows = 4000;
    float *x = make_rows(rows, dim, 6);
    char p[512];
    write_store("s", rows, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    /* the biggest .sst is the table's */
    char cmd[1200], sst[800] = {0};
    snprintf(cmd, sizeof cmd, "ls -S %s/*.sst | head -1", p);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(sst, sizeof sst, f));
    pclose(f);
    sst[strcspn(sst, "\n")] = 0;
    f = fopen(sst, "r+b");
    cr_assert_not_null(f, "%s", sst);
    for (long off = 1000; off < 200000; off += 4096) {
        fseek(f, off, SEEK_SET);
        fwrite("\xde\xad\xbe\xef\xde\xad\xbe\xef", 1, 8, f);
    }
    fclose(f);
    rk_store *s = NULL;
    rk_err e = {0};
    /* default options: refused at open, naming the table and the check */
    rk_status st = rk_store_open_ex(p, NULL, NULL, 0, NULL, &s, &e);
    cr_assert_eq(st, RK_EFORMAT, "status %d: %s", st, e.msg);
    cr_assert_null(s);
    cr_expect(strstr(e.msg, "table 't': open-time checksum scan") && strstr(e.msg, "Corruption"), "%s", e.msg);
    /* without the open-time scan the store opens and the reads that reach
     * a damaged block report it */
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.verify = 0;
    cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    uint64_t *ids = malloc(rows * sizeof *ids);
    float *y = malloc(rows * dim * sizeof(float));
    for (uint64_t i = 0; i < rows; i++) ids[i] = i;
    st = rk_store_get(s, 0, ids, rows, y, NULL, &e);
    cr_expect_eq(st, RK_EFORMAT, "status %d: %s", st, e.msg);
    cr_expect(strstr(e.msg, "Corruption"), "%s", e.msg);
    uint64_t n;
    cr_expect_eq(rk_store_count_keys(s, 0, &n, &e), RK_EFORMAT, "%s", e.msg);
    rk_store_close(s);
    free(ids), free(y);
    free(x);
}

/* A table that lost rows (deleted behind the store's back by another
 * RocksDB writer) is refused at open by the key count check. */
Test(faults, missing_rows_are_refused_at_open, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 4;
    float *x = make_rows(300, dim, 8);
    char p[512];
    write_store("s", 300, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rocksdb_options_t *o = rocksdb_options_create();
    const char *names[2] = {"default", "t"};
    const rocksdb_options_t *cfo[2] = {o, o};
    rocksdb_column_family_handle_t *cf[2];
    char *rerr = NULL;
    rocksdb_t *db = rocksdb_open_column_families(o, p, 2, names, cfo, cf, &rerr);
    cr_assert_not_null(db, "%s", rerr);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    const char key[8] = {0, 0, 0, 0, 0, 0, 0, 17}; /* row 17 */
    rocksdb_delete_cf(db, wo, cf[1], key, 8, &rerr);
    cr_assert_null(rerr, "%s", rerr);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_column_family_handle_destroy(cf[0]);
    rocksdb_column_family_handle_destroy(cf[1]);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    rk_store *s = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, NULL, &s, &e), RK_EFORMAT, "%s", e.msg);
    cr_expect(strstr(e.msg, "table 't' holds 299 rows, its metadata says 300"), "%s", e.msg);
    free(x);
}

/* The old entry points still work: fp32, explicit names and dims. */
Test(store, legacy_open_checks_names_and_dims, .init = mk_tmp, .fini = rm_tmp) {
    float *a = make_rows(50, 4, 1), *b = make_rows(60, 8, 2);
    rk_table_spec sp[2] = {{"a", 4, 50, a}, {"b", 8, 60, b}};
    char p[512];
    snprintf(p, sizeof p, "%s/s", tmpdir);
    rk_err e = {0};
    cr_assert_eq(rk_store_write(p, sp, 2, &e), RK_OK, "%s", e.msg);
    const char *names[2] = {"b", "a"};
    int dims[2] = {8, 4};
    rk_store *s;
    cr_assert_eq(rk_store_open(p, names, dims, 2, &s, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(rk_store_find(s, "a"), 1);
    uint64_t id = 59;
    float y[8];
    cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK);
    cr_expect_eq(memcmp(y, b + 59 * 8, sizeof y), 0);
    rk_store_close(s);
    dims[1] = 5;
    cr_expect_eq(rk_store_open(p, names, dims, 2, &s, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "table 'a' has dim 4, expected 5"), "%s", e.msg);
    names[0] = "zz";
    cr_expect_eq(rk_store_open(p, names, dims, 2, &s, &e), RK_ENOTFOUND);
    cr_expect(strstr(e.msg, "table 'zz' (column family) missing"), "%s", e.msg);
    free(a), free(b);
}

/* ====================================================================== keyed tables */

static int collect(void *ctx, uint64_t key, const float *row) {
    float *out = ctx;
    static int i;
    if (key == 3) i = 0; /* first key of the test table: restart */
    out[3 * i] = (float)key;
    out[3 * i + 1] = row[0];
    out[3 * i + 2] = row[1];
    i++;
    return 0;
}

/* Sparse 64-bit keys (item ids): rows under their keys, other keys get the
 * default row and count as unknown; the scan visits keys in order with the
 * decoded rows; keys must ascend. */
Test(store, keyed_table_and_scan, .init = mk_tmp, .fini = rm_tmp) {
    char path[512];
    snprintf(path, sizeof path, "%s/keyed", tmpdir);
    const float data[6] = {1, 2, 3, 4, 5, 6};
    const uint64_t keys[3] = {3, 1000000007ULL, UINT64_MAX - 1};
    const uint64_t *kp[1] = {keys};
    const float oov[2] = {-1, -1};
    rk_table_spec spec = {"items", 2, 3, data};
    rk_table_opts to = {RK_CODEC_FP32, oov};
    rk_err e = {0};
    cr_assert_eq(rk_store_write_keyed(path, &spec, kp, 1, &to, &e), RK_OK, "%s", e.msg);
    rk_store *s = open_store(path, 1 << 20, 0);
    const uint64_t q[4] = {1000000007ULL, 0, UINT64_MAX - 1, 3};
    float out[8];
    size_t missing = 0;
    cr_assert_eq(rk_store_get(s, 0, q, 4, out, &missing, &e), RK_OK, "%s", e.msg);
    const float want[8] = {3, 4, -1, -1, 5, 6, 1, 2};
    for (int i = 0; i < 8; i++) cr_expect_eq(out[i], want[i], "value %d: %g, expected %g", i, out[i], want[i]);
    cr_expect_eq(missing, 1u);
    float seen[9] = {0};
    cr_assert_eq(rk_store_scan(s, 0, collect, seen, &e), RK_OK, "%s", e.msg);
    const float wscan[9] = {3, 1, 2, (float)1000000007ULL, 3, 4, (float)(UINT64_MAX - 1), 5, 6};
    for (int i = 0; i < 9; i++) cr_expect_eq(seen[i], wscan[i], "scan value %d", i);
    rk_store_close(s);
    const uint64_t bad[3] = {3, 3, 9};
    const uint64_t *bp[1] = {bad};
    snprintf(path, sizeof path, "%s/keyed2", tmpdir);
    cr_expect_eq(rk_store_write_keyed(path, &spec, bp, 1, &to, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "table 'items' key 3 (row 1) is not above the previous key 3"), "%s", e.msg);
    cr_expect(!rk_path_exists(path), "nothing written");
}

/* ====================================================================== WAL and files */

static int count_files(const char *dir, const char *suffix_or_prefix, int prefix) {
    char cmd[1200], line[64] = {0};
    if (prefix) snprintf(cmd, sizeof cmd, "ls %s | grep -c '^%s' || true", dir, suffix_or_prefix);
    else snprintf(cmd, sizeof cmd, "ls %s | grep -c '%s$' || true", dir, suffix_or_prefix);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    pclose(f);
    return atoi(line);
}

/* Acknowledged updates sit in the WAL until a flush; a WAL damaged before
 * its tail must fail the open (naming the log file), not silently drop the
 * updates after the damage. */
Test(update, corrupt_wal_is_refused_not_dropped, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 16;
    const uint64_t rows = 200;
    float *x = make_rows(rows, dim, 9);
    char p[512];
    write_store("s", rows, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store *s = open_store(p, 1 << 20, 1);
    rk_err e = {0};
    float v[16];
    for (uint64_t r = 0; r < 61; r++) {
        for (int j = 0; j < dim; j++) v[j] = (float)(r + 1);
        cr_assert_eq(rk_store_apply(s, 0, &r, 1, v, &e), RK_OK, "%s", e.msg);
    }
    /* the WAL with the updates: the biggest .log */
    char cmd[1200], wal[800] = {0};
    snprintf(cmd, sizeof cmd, "ls -S %s/*.log | head -1", p);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(wal, sizeof wal, f));
    pclose(f);
    wal[strcspn(wal, "\n")] = 0;
    struct stat sb;
    cr_assert_eq(stat(wal, &sb), 0);
    cr_assert(sb.st_size > 1000, "%s: %lld bytes", wal, (long long)sb.st_size);
    /* damage it in the middle, as the store is still open (the close would
     * not rewrite it: the updates are only in the memtable and the WAL) */
    f = fopen(wal, "r+b");
    cr_assert_not_null(f);
    fseek(f, sb.st_size / 2, SEEK_SET);
    unsigned char b[8];
    cr_assert_eq(fread(b, 1, 8, f), 8);
    for (int i = 0; i < 8; i++) b[i] ^= 0xff;
    fseek(f, sb.st_size / 2, SEEK_SET);
    fwrite(b, 1, 8, f);
    fclose(f);
    /* simulate a crash: copy the directory as it is now, then close */
    char q[600];
    snprintf(q, sizeof q, "%s/copy", tmpdir);
    snprintf(cmd, sizeof cmd, "cp -r %s %s && rm -f %s/LOCK", p, q, q);
    cr_assert_eq(system(cmd), 0);
    rk_store_close(s);
    const char *base = strrchr(wal, '/') + 1;
    for (int w = 0; w < 2; w++) {
        rk_store_opts o = RK_STORE_OPTS_DEFAULT;
        o.writable = w;
        rk_store *t = NULL;
        rk_status st = rk_store_open_ex(q, NULL, NULL, 0, &o, &t, &e);
        cr_expect_eq(st, RK_EFORMAT, "writable=%d: status %d: %s", w, st, e.msg);
        cr_expect_null(t);
        cr_expect(strstr(e.msg, base), "writable=%d: '%s' does not name %s", w, e.msg, base);
        if (t) rk_store_close(t);
    }
    free(x);
}

/* Writable opens must not pile up WAL and info-log files. */
Test(store, writable_reopens_leave_bounded_files, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 4;
    float *x = make_rows(50, dim, 10);
    char p[512];
    write_store("s", 50, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    int before = count_files(p, "", 1);
    for (int i = 0; i < 20; i++) {
        rk_store *s = open_store(p, 0, 1);
        if (i % 5 == 0) {
            uint64_t r = (uint64_t)i;
            float v[4] = {1, 2, 3, 4};
            rk_err e = {0};
            cr_assert_eq(rk_store_apply(s, 0, &r, 1, v, &e), RK_OK, "%s", e.msg);
        }
        rk_store_close(s);
    }
    int logs = count_files(p, ".log", 0), old = count_files(p, "LOG.old", 1), all = count_files(p, "", 1);
    cr_expect(logs <= 2, "%d .log files after 20 writable opens", logs);
    cr_expect(old <= 1, "%d LOG.old files after 20 writable opens", old);
    cr_expect(all <= before + 8, "%d files after 20 writable opens, %d before", all, before);
    if (all > before + 8) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "ls -l %s >&2", p);
        (void)system(cmd);
    }
    free(x);
}

/* The nice value of each RocksDB background thread (comm "rocksdb:*") of
 * this process; returns how many there are, -1 on a read error. */
static int rocks_thread_nices(int *nice, int cap) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < cap) {
        if (de->d_name[0] == '.') continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        if (!open || !close || strncmp(open + 1, "rocksdb:", 8)) continue;
        /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
         * majflt cmajflt utime stime cutime cstime priority nice */
        char *q = close + 2;
        for (int i = 0; i < 16 && q; i++) q = strchr(q + 1, ' ');
        if (q) nice[n++] = atoi(q + 1);
    }
    closedir(d);
    return n;
}

/* A writable store (rankd --updates) rewrites a row in place in the
 * memtable: the same 64 rows applied 50 times are 64 memtable entries, not
 * 3,200 (issue 17: each entry cost the updater a longer skiplist walk and
 * the flush thread more work). Its flush and compaction threads run at
 * nice 19 (they shared the serving core at normal priority). Updates stay
 * visible and survive a reopen. */
Test(update, rows_rewritten_in_place_and_background_at_nice_19, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 16;
    float *x = make_rows(256, dim, 17);
    char p[512];
    write_store("s", 256, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store *s = open_store(p, 0, 1);
    uint64_t rows[64];
    float v[64 * 16], y[64 * 16];
    rk_err e = {0};
    for (int k = 0; k < 50; k++) {
        for (int i = 0; i < 64; i++) rows[i] = (uint64_t)(i * 4 + 1);
        for (int i = 0; i < 64 * dim; i++) v[i] = (float)k + (float)i * 1e-3f;
        cr_assert_eq(rk_store_apply(s, 0, rows, 64, v, &e), RK_OK, "%s", e.msg);
    }
    char *entries = rocksdb_property_value_cf(s->db, s->tabs[0].cf, "rocksdb.num-entries-active-mem-table");
    cr_assert_not_null(entries);
    cr_expect_eq(atoll(entries), 64, "memtable entries after 50 rewrites of the same 64 rows: %s", entries);
    rocksdb_free(entries);
    cr_assert_eq(rk_store_get(s, 0, rows, 64, y, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(memcmp(y, v, sizeof v), 0, "the last update is the one read");
    cr_assert_eq(rk_store_compact(s, 0, &e), RK_OK, "%s", e.msg); /* a flush, then a compaction */
    int nice[16];
    int n = rocks_thread_nices(nice, 16);
    cr_expect(n >= 2, "%d RocksDB background threads", n);
    for (int i = 0; i < n; i++) cr_expect_eq(nice[i], 19, "RocksDB background thread %d at nice %d", i, nice[i]);
    rk_store_close(s);
    s = open_store(p, 0, 0);
    memset(y, 0, sizeof y);
    cr_assert_eq(rk_store_get(s, 0, rows, 64, y, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(memcmp(y, v, sizeof v), 0, "the last update survives a reopen");
    rk_store_close(s);
    free(x);
}

/* ====================================================================== crash isolation */

/* 4 bytes flipped at size-100 of the table's SST land at the end of its
 * properties block, which RocksDB 7.8 parses before verifying its checksum:
 * Debian's build asserts (data_block_hash_index.cc:79) and aborts. With a
 * probe executable set, the open runs first in a child, which dies; this
 * process gets RK_EFORMAT naming the store and the signal. */
Test(faults, sst_that_aborts_rocksdb_is_refused_by_the_probe, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 16;
    const uint64_t rows = 20000;
    float *x = make_rows(rows, dim, 11);
    char p[512];
    write_store("s", rows, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store_set_probe(RK_BINARY_DIR "/bin/rank");
    /* an intact store opens through the probe; time it against no probe */
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    rk_err e = {0};
    rk_store *s = NULL;
    double best[2] = {1e9, 1e9};
    for (int rep = 0; rep < 6; rep++) {
        int with = rep % 2;
        rk_store_set_probe(with ? RK_BINARY_DIR "/bin/rank" : NULL);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
        clock_gettime(CLOCK_MONOTONIC, &b);
        rk_store_close(s);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        if (ms < best[with]) best[with] = ms;
    }
    cr_log_info("open of a %llu x %d store: %.1f ms, with the probe %.1f ms", (unsigned long long)rows, dim, best[0],
                best[1]);
    char cmd[1200], sst[800] = {0};
    snprintf(cmd, sizeof cmd, "ls -S %s/*.sst | head -1", p);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(sst, sizeof sst, f));
    pclose(f);
    sst[strcspn(sst, "\n")] = 0;
    struct stat sb;
    cr_assert_eq(stat(sst, &sb), 0);
    f = fopen(sst, "r+b");
    cr_assert_not_null(f);
    unsigned char bb[4];
    fseek(f, sb.st_size - 100, SEEK_SET);
    cr_assert_eq(fread(bb, 1, 4, f), 4);
    for (int i = 0; i < 4; i++) bb[i] ^= 0xff;
    fseek(f, sb.st_size - 100, SEEK_SET);
    fwrite(bb, 1, 4, f);
    fclose(f);
    rk_store_set_probe(RK_BINARY_DIR "/bin/rank");
    for (int w = 0; w < 2; w++) {
        o.writable = w;
        s = NULL;
        rk_status st = rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e);
        cr_expect_eq(st, RK_EFORMAT, "status %d: %s", st, e.msg);
        cr_expect_null(s);
        cr_expect(strstr(e.msg, p) && strstr(e.msg, "killed a checking process (signal 6"), "%s", e.msg);
    }
    rk_store_set_probe(NULL);
    free(x);
}

/* The pids listed in /proc/self/task/TID/children of this thread (the
 * checking process is started by the thread that opens), up to cap. */
static int my_children(pid_t *out, int cap) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)gettid());
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int k = 0;
    for (char *tok = strtok(buf, " \n"); tok && k < cap; tok = strtok(NULL, " \n")) out[k++] = (pid_t)atoi(tok);
    return k;
}

/* The checking process is kept across opens (one exec, not one per open:
 * reaping a fresh one per open livelocked in the kernel under load, issue
 * 17), is replaced when it has died, and is ended and reaped when the probe
 * is changed. */
Test(faults, probe_process_is_kept_across_opens_and_replaced, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 8;
    float *x = make_rows(500, dim, 13);
    char p[512];
    write_store("s", 500, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    rk_store_set_probe(RK_BINARY_DIR "/bin/rank");
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    rk_err e = {0};
    rk_store *s = NULL;
    pid_t kids[8], first = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
        rk_store_close(s);
        cr_assert_eq(my_children(kids, 8), 1, "open %d: one checking process", i);
        if (!i) first = kids[0];
        cr_expect_eq(kids[0], first, "open %d: checking process %d, the first open started %d", i, (int)kids[0],
                     (int)first);
    }
    char cmd[64], argv1[64] = "";
    snprintf(cmd, sizeof cmd, "/proc/%d/cmdline", (int)first);
    FILE *f = fopen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(argv1, 1, sizeof argv1 - 1, f);
    fclose(f);
    argv1[n] = 0;
    cr_expect_str_eq(argv1 + strlen(argv1) + 1, RK_STORE_PROBE_SERVE_ARG);
    /* killed from outside: the next open starts another one */
    cr_assert_eq(kill(first, SIGKILL), 0);
    siginfo_t si;
    cr_assert_eq(waitid(P_PID, (id_t)first, &si, WEXITED | WNOWAIT), 0);
    cr_assert_eq(rk_store_open_ex(p, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    rk_store_close(s);
    cr_assert_eq(my_children(kids, 8), 1, "after the kill: one checking process (the dead one reaped)");
    cr_expect_neq(kids[0], first);
    rk_store_set_probe(NULL);
    cr_expect_eq(my_children(kids, 8), 0, "rk_store_set_probe(NULL) ends and reaps it");
    free(x);
}

/* A truncated or deleted table file: the open error names the table, the
 * file and its state on disk, with a readable RocksDB message (no path
 * glued to the text, the store's path not repeated). */
Test(faults, missing_or_truncated_sst_names_the_table, .init = mk_tmp, .fini = rm_tmp) {
    const int dim = 16;
    float *x = make_rows(2000, dim, 12);
    char p[512], cmd[1400], sst[800];
    for (int k = 0; k < 2; k++) {
        write_store(k ? "trunc" : "del", 2000, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
        snprintf(cmd, sizeof cmd, "ls -S %s/*.sst | head -1", p);
        FILE *f = popen(cmd, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(sst, sizeof sst, f));
        pclose(f);
        sst[strcspn(sst, "\n")] = 0;
        if (k) cr_assert_eq(truncate(sst, 1000), 0);
        else cr_assert_eq(unlink(sst), 0);
        rk_store *s = NULL;
        rk_err e = {0};
        rk_status st = rk_store_open_ex(p, NULL, NULL, 0, NULL, &s, &e);
        cr_expect(st == RK_EFORMAT || st == RK_EIO, "status %d: %s", st, e.msg);
        cr_expect_null(s);
        char want[200];
        snprintf(want, sizeof want, "(table 't', file %s, %s)", strrchr(sst, '/') + 1,
                 k ? "1000 bytes on disk" : "missing");
        cr_expect(strstr(e.msg, want), "'%s' lacks '%s'", e.msg, want);
        cr_expect(!strstr(e.msg, "sstable/"), "path glued to the text: %s", e.msg);
    }
    free(x);
}

/* ====================================================================== rank store CLI */

static int run_rank(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, RK_BINARY_DIR "/bin/rank store %s 2>&1", args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* `rank store apply` names the bad token and line, refuses negative rows
 * and an input without updates; info/apply detect an ensemble bundle and
 * take --member. */
Test(cli, store_apply_input_errors_and_ensembles, .init = mk_tmp, .fini = rm_tmp, .timeout = 60) {
    const int dim = 4;
    float *x = make_rows(10, dim, 13);
    char p[512], args[1600], out[4096], in[600];
    write_store("s", 10, dim, RK_CODEC_FP32, x, NULL, p, sizeof p);
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"abc 1 2 3 4\n", "line 1: row 'abc': expected a row id"},
        {"# comment\n-1 1 2 3 4\n", "line 2: row '-1': expected a row id"},
        {"3 0.5 abc 1 1\n", "line 1 (row 3): value 2 of 4: expected a number, got 'abc'"},
        {"3 0.5 1\n", "line 1 (row 3): expected 4 values, got 2"},
        {"", "no updates"},
        {"# only a comment\n\n", "no updates"},
    };
    snprintf(in, sizeof in, "%s/in.txt", tmpdir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(rk_write_file(in, cases[i].text, strlen(cases[i].text), NULL), RK_OK);
        snprintf(args, sizeof args, "apply --store %s --table t --input %s", p, in);
        cr_expect_eq(run_rank(args, out, sizeof out), 1, "case %zu: %s", i, out);
        cr_expect(strstr(out, cases[i].want), "case %zu: '%s' lacks '%s'", i, out, cases[i].want);
    }
    /* fresh-user trial 3: a NUL ended the line unseen, a directory read as an
     * empty input, a row past the table was caught only at apply time (no
     * line named), a byte-order mark was a bad row id */
    static const struct {
        const char *text;
        size_t len;
        int rc;
        const char *want;
    } raw[] = {
        {"3 1 2\0003 4\n", 10, 1, "line 1: a NUL byte at byte 6"},
        {"2 1 2 3 4\n\0\n", 12, 1, "line 2: a NUL byte at byte 1"},
        {"10 1 2 3 4\n", 11, 1, "line 1: row '10': expected a row id (an integer in 0..9)"},
        {"\xEF\xBB\xBF" "2 1 2 3 4\n", 13, 0, "applied 1 rows"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        cr_assert_eq(rk_write_file(in, raw[i].text, raw[i].len, NULL), RK_OK);
        snprintf(args, sizeof args, "apply --store %s --table t --input %s", p, in);
        cr_expect_eq(run_rank(args, out, sizeof out), raw[i].rc, "raw case %zu: %s", i, out);
        cr_expect(strstr(out, raw[i].want), "raw case %zu: '%s' lacks '%s'", i, out, raw[i].want);
    }
    snprintf(args, sizeof args, "apply --store %s --table t --input %s", p, tmpdir);
    cr_expect_eq(run_rank(args, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "read failed after line 0: Is a directory (0 rows applied)"), "%s", out);
    /* an ensemble: members/NAME/tables */
    char ens[600], q[700];
    snprintf(ens, sizeof ens, "%s/ens", tmpdir);
    snprintf(q, sizeof q, "%s/members", ens);
    cr_assert_eq(mkdir(ens, 0755), 0);
    cr_assert_eq(mkdir(q, 0755), 0);
    snprintf(q, sizeof q, "%s/members/dnn", ens);
    cr_assert_eq(mkdir(q, 0755), 0);
    snprintf(q, sizeof q, "%s/members/dnn/tables", ens);
    rk_table_spec spec = {"t", dim, 10, x};
    cr_assert_eq(rk_store_write(q, &spec, 1, NULL), RK_OK);
    snprintf(args, sizeof args, "info --model %s", ens);
    cr_expect_eq(run_rank(args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "is an ensemble") && strstr(out, "(dnn)") && strstr(out, "--member NAME"), "%s", out);
    snprintf(args, sizeof args, "info --model %s --member dnn", ens);
    cr_expect_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "members/dnn/tables: 1 tables"), "%s", out);
    snprintf(args, sizeof args, "info --model %s --member nope", ens);
    cr_expect_eq(run_rank(args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "no member 'nope' (members: dnn)"), "%s", out);
    cr_assert_eq(rk_write_file(in, "2 1 2 3 4\n", 10, NULL), RK_OK);
    snprintf(args, sizeof args, "apply --model %s --member dnn --table t --input %s", ens, in);
    cr_expect_eq(run_rank(args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "applied 1 rows"), "%s", out);
    free(x);
}

/* ====================================================================== fault sweep of `rank store apply` */

int rank_store_main(int argc, char **argv); /* tools/rank_store.c, linked in */

/* The shim's write path (writable open, batch write, flush) with the Nth
 * call from now and every later one failing as RocksDB reports ENOSPC /
 * EIO (as rk_write_fail_after does for files); 0: none. */
static rk_rocks_api real_rocks;
static long sweep_left;
static const char *sweep_msg;
static int sweep_fails(char **err) {
    if (sweep_left <= 0 || (sweep_left > 1 && --sweep_left)) return 0;
    set_err(err, sweep_msg);
    return 1;
}
static rocksdb_t *sweep_open_cf(const rocksdb_options_t *o, const char *path, int n, const char *const *names,
                                const rocksdb_options_t *const *cfo, rocksdb_column_family_handle_t **h, char **err) {
    return sweep_fails(err) ? NULL : real_rocks.open_cf(o, path, n, names, cfo, h, err);
}
static void sweep_write(rocksdb_t *db, const rocksdb_writeoptions_t *wo, rocksdb_writebatch_t *wb, char **err) {
    if (!sweep_fails(err)) real_rocks.write(db, wo, wb, err);
}
static void sweep_flush_cf(rocksdb_t *db, const rocksdb_flushoptions_t *fo, rocksdb_column_family_handle_t *cf,
                           char **err) {
    if (!sweep_fails(err)) real_rocks.flush_cf(db, fo, cf, err);
}

/* `rank store apply --store p --table t --input in --batch 4` in this
 * process, its stdout and stderr into out; returns the exit code. */
static int apply_in_process(const char *p, const char *in, char *out, size_t cap) {
    char path[600];
    snprintf(path, sizeof path, "%s/apply.out", tmpdir);
    fflush(stdout), fflush(stderr);
    int o1 = dup(1), o2 = dup(2);
    FILE *f = fopen(path, "w");
    cr_assert(f && o1 >= 0 && o2 >= 0);
    dup2(fileno(f), 1), dup2(fileno(f), 2);
    char *argv[] = {"store", "apply", "--store", (char *)p, "--table", "t", "--input", (char *)in, "--batch", "4", NULL};
    int rc = rank_store_main(10, argv);
    rk_alloc_fail_after(0); /* the caller's fault ends with the command */
    fflush(stdout), fflush(stderr);
    dup2(o1, 1), dup2(o2, 2);
    close(o1), close(o2);
    fclose(f);
    char *text = NULL;
    size_t n = 0;
    cr_assert_eq(rk_read_file(path, &text, &n, NULL), RK_OK);
    snprintf(out, cap, "%s", text);
    rk_free(text);
    return rc;
}

/* SQLite-style sweep over `rank store apply` (24 updates, 6 batches of 4):
 * the Nth allocation fails (rk_alloc_fail_after), or the Nth RocksDB write
 * call through the store shim (open, batch write, flush) fails with ENOSPC
 * or EIO, for every N until the command completes. Every run ends in exit 0
 * with all updates, or exit 1 with a message; the store then opens, every
 * row holds its old or its new values (never a mix), each batch entirely,
 * and every row acknowledged before the failure is there. */
Test(faults, store_apply_nth_alloc_and_write, .init = mk_tmp, .fini = rm_tmp, .timeout = 300) {
    enum { ROWS = 40, DIM = 4, NU = 24, BATCH = 4 };
    float *x = make_rows(ROWS, DIM, 21), v[NU][DIM];
    char in[600], p[512], out[4096], text[NU * 64] = "";
    snprintf(in, sizeof in, "%s/updates.txt", tmpdir);
    size_t tl = 0;
    for (int i = 0; i < NU; i++) {
        for (int j = 0; j < DIM; j++) v[i][j] = (float)(i + 1) + 0.125f * (float)j; /* exact in fp32 */
        tl += (size_t)snprintf(text + tl, sizeof text - tl, "%d %g %g %g %g\n", 3 + i, v[i][0], v[i][1], v[i][2], v[i][3]);
    }
    cr_assert_eq(rk_write_file(in, text, tl, NULL), RK_OK);
    real_rocks = rk_rocks;
    static const char *const msgs[2] = {"IO error: No space left on device: While appending to file: 000009.log",
                                        "IO error: While appending to file: 000009.log: Input/output error"};
    long runs = 0, failed = 0;
    for (int kind = 0; kind < 3; kind++) {
        int done = 0;
        long n_done = 0;
        for (long n = 1; n <= 4000 && !done; n += n < 64 ? 1 : n / 8) {
            char sub[64];
            snprintf(sub, sizeof sub, "k%d-%ld", kind, n);
            write_store(sub, ROWS, DIM, RK_CODEC_FP32, x, NULL, p, sizeof p);
            if (kind == 0) {
                rk_alloc_fail_after(n);
            } else {
                sweep_left = n, sweep_msg = msgs[kind - 1];
                rk_rocks.open_cf = sweep_open_cf, rk_rocks.write = sweep_write, rk_rocks.flush_cf = sweep_flush_cf;
            }
            int rc = apply_in_process(p, in, out, sizeof out);
            rk_alloc_fail_after(0);
            rk_rocks_reset();
            sweep_left = 0;
            runs++;
            cr_assert(rc == 0 || rc == 1, "kind %d n %ld: exit %d: %s", kind, n, rc, out);
            long acked = 0;
            if (rc == 0) {
                cr_assert(strstr(out, "applied 24 rows"), "kind %d n %ld: %s", kind, n, out);
                done = 1, n_done = n;
                acked = NU;
            } else {
                failed++;
                cr_assert(strstr(out, "error: "), "kind %d n %ld: failed without a message: '%s'", kind, n, out);
                const char *a = strstr(out, "after ");
                if (a) acked = strtol(a + 6, NULL, 10);
                if (kind) cr_assert(strstr(out, kind == 1 ? "No space left on device" : "Input/output error"),
                                    "kind %d n %ld: the cause is not named: %s", kind, n, out);
            }
            rk_store *s = open_store(p, 0, 0); /* asserts it opens */
            int state[NU / BATCH];
            for (int i = 0; i < NU; i++) {
                uint64_t id = (uint64_t)(3 + i);
                float y[DIM];
                rk_err e = {0};
                cr_assert_eq(rk_store_get(s, 0, &id, 1, y, NULL, &e), RK_OK, "%s", e.msg);
                int is_new = !memcmp(y, v[i], sizeof y), is_old = !memcmp(y, x + id * DIM, sizeof y);
                cr_assert(is_new || is_old, "kind %d n %ld: row %llu is neither old nor new", kind, n,
                          (unsigned long long)id);
                if (i < acked) cr_assert(is_new, "kind %d n %ld: acknowledged row %llu lost", kind, n,
                                         (unsigned long long)id);
                if (i % BATCH == 0) state[i / BATCH] = is_new;
                else cr_assert_eq(is_new, state[i / BATCH], "kind %d n %ld: batch %d half applied", kind, n, i / BATCH);
            }
            rk_store_close(s);
            rk_rm_rf(p, NULL);
        }
        cr_assert(done, "kind %d: rank store apply never completed", kind);
        fprintf(stderr, "[faults] rank store apply, %s: completed at N = %ld\n",
                kind == 0 ? "Nth allocation" : kind == 1 ? "Nth write ENOSPC" : "Nth write EIO", n_done);
    }
    fprintf(stderr, "[faults] rank store apply: %ld runs, %ld ended in a clean error, the rest completed\n", runs,
            failed);
    free(x);
}

/* ====================================================================== disk full */

/* Fill the file system holding dir: write zeros to dir/fill until ENOSPC. */
static void fill_fs(const char *dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/fill", dir);
    FILE *f = fopen(p, "ab");
    cr_assert_not_null(f);
    static char z[4096];
    while (fwrite(z, 1, sizeof z, f) == sizeof z) {}
    fclose(f);
    f = fopen(p, "ab"); /* the last partial block too */
    while (f && fwrite(z, 1, 1, f) == 1 && fflush(f) == 0) {}
    if (f) fclose(f);
}

/* A real full file system (a 3 MiB tmpfs; needs root to mount, skipped
 * otherwise): updates fail with RK_ETOOBIG naming "No space left on device"
 * instead of RocksDB asserting (it used to abort the process in its info
 * log writer), reads keep serving the last acknowledged rows, a writable
 * reopen while full fails cleanly (callers fall back to read-only), and once
 * space is freed updates resume and nothing acknowledged is lost. */
Test(diskfull, tmpfs_apply_fails_cleanly_and_resumes, .init = mk_tmp, .fini = rm_tmp, .timeout = 120) {
    char mnt[512];
    snprintf(mnt, sizeof mnt, "%s/mnt", tmpdir);
    cr_assert_eq(mkdir(mnt, 0700), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=3m rk-test-tmpfs %s 2>/dev/null", mnt);
    if (geteuid() != 0 || system(cmd) != 0) cr_skip_test("needs root to mount a tmpfs");
    const int dim = 16;
    const uint64_t rows = 4096;
    float *x = make_rows(rows, dim, 3);
    char p[600];
    snprintf(p, sizeof p, "%s/s", mnt);
    rk_table_spec spec = {"t", dim, rows, x};
    rk_table_opts to = {RK_CODEC_FP32, NULL};
    rk_err e = {0};
    cr_assert_eq(rk_store_write_ex(p, &spec, 1, &to, &e), RK_OK, "%s", e.msg);
    rk_store *s = open_store(p, 1 << 20, 1);
    fill_fs(mnt);
    /* keep writing until the disk refuses; every acknowledged batch is
     * remembered in x */
    enum { B = 256 };
    uint64_t ids[B];
    float v[B * 16];
    rk_status st = RK_OK;
    int acked = 0;
    for (int round = 0; round < 4000 && st == RK_OK; round++) {
        for (int i = 0; i < B; i++) {
            ids[i] = (uint64_t)((round * B + i) % (int)rows);
            for (int k = 0; k < dim; k++) v[i * dim + k] = (float)round + (float)k * 0.01f;
        }
        st = rk_store_apply(s, 0, ids, B, v, &e);
        if (st == RK_OK) {
            acked++;
            for (int i = 0; i < B; i++) memcpy(x + ids[i] * dim, v + i * dim, dim * sizeof(float));
        }
    }
    cr_assert_eq(st, RK_ETOOBIG, "expected RK_ETOOBIG, got %d: %s", st, e.msg);
    cr_expect(strstr(e.msg, "No space left on device"), "%s", e.msg);
    float y[16];
    for (uint64_t r = 0; r < rows; r += 97) {
        cr_assert_eq(rk_store_get(s, 0, &r, 1, y, NULL, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(memcmp(y, x + r * dim, sizeof y), 0, "row %llu after the failed update", (unsigned long long)r);
    }
    /* still full: the next update fails the same way (it reopens first) */
    cr_expect_eq(rk_store_apply(s, 0, ids, B, v, &e), RK_ETOOBIG, "%s", e.msg);
    cr_expect(strstr(e.msg, "No space left on device"), "%s", e.msg);
    char fill[700];
    snprintf(fill, sizeof fill, "%s/fill", mnt);
    /* space freed: updates resume on the same handle, no restart */
    cr_assert_eq(unlink(fill), 0);
    cr_assert_eq(rk_store_apply(s, 0, ids, B, v, &e), RK_OK, "%s", e.msg);
    for (int i = 0; i < B; i++) memcpy(x + ids[i] * dim, v + i * dim, dim * sizeof(float));
    for (uint64_t r = 0; r < rows; r += 13) {
        cr_assert_eq(rk_store_get(s, 0, &r, 1, y, NULL, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(memcmp(y, x + r * dim, sizeof y), 0, "row %llu after resuming", (unsigned long long)r);
    }
    rk_store_close(s);
    /* a restart while full: the writable open serves read-only, updates are
     * refused naming the cause, and resume once space is freed */
    fill_fs(mnt);
    s = open_store(p, 1 << 20, 1);
    for (uint64_t r = 0; r < rows; r += 13) {
        cr_assert_eq(rk_store_get(s, 0, &r, 1, y, NULL, &e), RK_OK, "%s", e.msg);
        cr_assert_eq(memcmp(y, x + r * dim, sizeof y), 0, "row %llu after a restart while full (%d batches acknowledged)",
                     (unsigned long long)r, acked);
    }
    st = rk_store_apply(s, 0, ids, B, v, &e);
    if (st != RK_OK) { /* RocksDB may find room for its open and this write */
        cr_expect_eq(st, RK_ETOOBIG, "%s", e.msg);
        cr_expect(strstr(e.msg, "No space left on device") && !strstr(e.msg, "missing"), "%s", e.msg);
        cr_assert_eq(unlink(fill), 0);
        cr_assert_eq(rk_store_apply(s, 0, ids, B, v, &e), RK_OK, "%s", e.msg);
    }
    rk_store_close(s);
    free(x);
}
