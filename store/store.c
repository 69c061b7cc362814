/*
 * store/store.c — RocksDB-backed embedding tables (see store.h).
 *
 * Reads go through rocksdb_batched_multi_get_cf with pinnable slices: one
 * call per table per batch, keys sorted ascending (RocksDB then walks each
 * SST block once). Options: no compression (float rows barely compress,
 * c-stack.md §4), bloom filter 10 bits/key, 32 MiB LRU block cache with
 * index and filter blocks charged to it so memory stays bounded.
 */
#include "store.h"

#include <rocksdb/c.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define RK_STORE_STACK_KEYS 512

struct rk_store {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_cache_t *cache;
    rocksdb_readoptions_t *ro;
    int n_tables;
    rocksdb_column_family_handle_t **cf; /* [n_tables] bound tables */
    int *dims;
    rocksdb_column_family_handle_t **all_cf; /* every CF opened (for destroy) */
    int n_all;
    char path[512];
    atomic_uint_fast64_t lookups, misses;
};

static void be64(unsigned char k[8], uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        k[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static rk_status rocks_fail(rk_err *err, char **rerr, rk_status code, const char *what, const char *path) {
    rk_status s = rk_fail(err, code, "%s %s: %s", what, path, *rerr ? *rerr : "unknown RocksDB error");
    rocksdb_free(*rerr);
    *rerr = NULL;
    return s;
}

static rocksdb_options_t *make_options(rocksdb_cache_t **cache_out) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(32u << 20);
    rocksdb_block_based_options_set_block_cache(t, cache);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
    rocksdb_block_based_options_set_filter_policy(t, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    *cache_out = cache;
    return o;
}

rk_status rk_store_write(const char *dir, const rk_table_spec *tables, int n_tables, rk_err *err) {
    if (rk_path_exists(dir)) return rk_fail(err, RK_EEXIST, "store %s: already exists", dir);
    for (int i = 0; i < n_tables; i++) {
        if (!tables[i].name || !tables[i].name[0] || !strcmp(tables[i].name, "default"))
            return rk_fail(err, RK_EINVAL, "store %s: table %d has an empty or reserved name", dir, i);
        if (tables[i].dim <= 0) return rk_fail(err, RK_EINVAL, "store %s: table '%s' has dim %d", dir, tables[i].name, tables[i].dim);
    }
    rocksdb_cache_t *cache;
    rocksdb_options_t *o = make_options(&cache);
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_error_if_exists(o, 1);
    char *rerr = NULL;
    rk_status st = RK_OK;
    rocksdb_t *db = rocksdb_open(o, dir, &rerr);
    rocksdb_column_family_handle_t **cfs = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(wo, 1); /* durability comes from the flush below */
    if (!db) {
        st = rocks_fail(err, &rerr, RK_EIO, "cannot create store", dir);
        goto done;
    }
    cfs = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *cfs);
    if (!cfs) {
        st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        goto done;
    }
    for (int i = 0; i < n_tables && st == RK_OK; i++) {
        cfs[i] = rocksdb_create_column_family(db, o, tables[i].name, &rerr);
        if (!cfs[i]) {
            st = rocks_fail(err, &rerr, RK_EIO, "cannot create column family in", dir);
            break;
        }
        const rk_table_spec *t = &tables[i];
        size_t rowb = (size_t)t->dim * sizeof(float);
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        for (uint64_t r = 0; r < t->rows; r++) {
            unsigned char key[8];
            be64(key, r);
            rocksdb_writebatch_put_cf(wb, cfs[i], (const char *)key, 8, (const char *)(t->data + r * (size_t)t->dim), rowb);
            if (rocksdb_writebatch_count(wb) >= 4096 || r + 1 == t->rows) {
                rocksdb_write(db, wo, wb, &rerr);
                rocksdb_writebatch_clear(wb);
                if (rerr) {
                    st = rocks_fail(err, &rerr, RK_EIO, "write failed in", dir);
                    break;
                }
            }
        }
        rocksdb_writebatch_destroy(wb);
    }
    if (st == RK_OK) {
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        for (int i = 0; i < n_tables && st == RK_OK; i++) {
            rocksdb_flush_cf(db, fo, cfs[i], &rerr);
            if (rerr) st = rocks_fail(err, &rerr, RK_EIO, "flush failed in", dir);
        }
        rocksdb_flushoptions_destroy(fo);
    }
done:
    if (cfs) {
        for (int i = 0; i < n_tables; i++)
            if (cfs[i]) rocksdb_column_family_handle_destroy(cfs[i]);
        rk_free(cfs);
    }
    if (db) rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(o);
    rocksdb_cache_destroy(cache);
    return st;
}

void rk_store_close(rk_store *s) {
    if (!s) return;
    for (int i = 0; i < s->n_all; i++)
        if (s->all_cf[i]) rocksdb_column_family_handle_destroy(s->all_cf[i]);
    if (s->db) rocksdb_close(s->db);
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->opts) rocksdb_options_destroy(s->opts);
    if (s->cache) rocksdb_cache_destroy(s->cache);
    rk_free(s->all_cf);
    rk_free(s->cf);
    rk_free(s->dims);
    rk_free(s);
}

rk_status rk_store_open(const char *dir, const char *const *names, const int *dims, int n_tables, rk_store **out,
                        rk_err *err) {
    *out = NULL;
    if (!rk_is_dir(dir)) return rk_fail(err, RK_ENOTFOUND, "store %s: missing directory", dir);
    rk_store *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
    snprintf(s->path, sizeof s->path, "%s", dir);
    s->opts = make_options(&s->cache);
    char *rerr = NULL;
    rk_status st = RK_OK;
    size_t n_cf = 0;
    char **cf_names = rocksdb_list_column_families(s->opts, dir, &n_cf, &rerr);
    if (!cf_names) {
        st = rocks_fail(err, &rerr, RK_EFORMAT, "store is not a readable RocksDB database:", dir);
        goto fail;
    }
    s->n_all = (int)n_cf;
    s->all_cf = rk_calloc(n_cf, sizeof *s->all_cf);
    s->cf = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *s->cf);
    s->dims = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *s->dims);
    const rocksdb_options_t **cfo = rk_calloc(n_cf, sizeof *cfo);
    if (!s->all_cf || !s->cf || !s->dims || !cfo) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        rk_free(cfo);
        st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        goto fail;
    }
    for (size_t i = 0; i < n_cf; i++) cfo[i] = s->opts;
    s->db = rocksdb_open_for_read_only_column_families(s->opts, dir, (int)n_cf, (const char *const *)cf_names, cfo,
                                                       s->all_cf, 0, &rerr);
    rk_free(cfo);
    if (!s->db) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        st = rocks_fail(err, &rerr, RK_EFORMAT, "cannot open store", dir);
        goto fail;
    }
    for (int t = 0; t < n_tables; t++) {
        int found = -1;
        for (size_t i = 0; i < n_cf; i++)
            if (!strcmp(cf_names[i], names[t])) found = (int)i;
        if (found < 0) {
            rocksdb_list_column_families_destroy(cf_names, n_cf);
            st = rk_fail(err, RK_ENOTFOUND, "store %s: table '%s' (column family) missing", dir, names[t]);
            goto fail;
        }
        s->cf[t] = s->all_cf[found];
        s->dims[t] = dims[t];
    }
    rocksdb_list_column_families_destroy(cf_names, n_cf);
    s->n_tables = n_tables;
    s->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(s->ro, 1);
    *out = s;
    return RK_OK;
fail:
    rk_store_close(s);
    return st;
}

typedef struct {
    uint64_t row;
    size_t pos;
} keypos;

static int keypos_cmp(const void *a, const void *b) {
    uint64_t x = ((const keypos *)a)->row, y = ((const keypos *)b)->row;
    return x < y ? -1 : x > y;
}

rk_status rk_store_get(rk_store *s, int t, const uint64_t *rows, size_t n, float *out, size_t *n_missing,
                       rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    if (n_missing) *n_missing = 0;
    if (n == 0) return RK_OK;
    const int dim = s->dims[t];
    const size_t rowb = (size_t)dim * sizeof(float);
    /* Stack scratch for typical batches; heap beyond. */
    keypos kp_stack[RK_STORE_STACK_KEYS];
    unsigned char kb_stack[RK_STORE_STACK_KEYS * 8];
    const char *kptr_stack[RK_STORE_STACK_KEYS];
    size_t ksz_stack[RK_STORE_STACK_KEYS];
    rocksdb_pinnableslice_t *val_stack[RK_STORE_STACK_KEYS];
    char *err_stack[RK_STORE_STACK_KEYS];
    keypos *kp = kp_stack;
    unsigned char *kb = kb_stack;
    const char **kptr = kptr_stack;
    size_t *ksz = ksz_stack;
    rocksdb_pinnableslice_t **vals = val_stack;
    char **errs = err_stack;
    if (n > RK_STORE_STACK_KEYS) {
        kp = rk_malloc(n * sizeof *kp);
        kb = rk_malloc(n * 8);
        kptr = rk_malloc(n * sizeof *kptr);
        ksz = rk_malloc(n * sizeof *ksz);
        vals = rk_malloc(n * sizeof *vals);
        errs = rk_malloc(n * sizeof *errs);
        if (!kp || !kb || !kptr || !ksz || !vals || !errs) {
            rk_free(kp), rk_free(kb), rk_free(kptr), rk_free(ksz), rk_free(vals), rk_free(errs);
            return rk_fail(err, RK_ENOMEM, "store lookup of %zu keys: out of memory", n);
        }
    }
    for (size_t i = 0; i < n; i++) {
        kp[i].row = rows[i];
        kp[i].pos = i;
    }
    qsort(kp, n, sizeof *kp, keypos_cmp);
    for (size_t i = 0; i < n; i++) {
        be64(kb + 8 * i, kp[i].row);
        kptr[i] = (const char *)(kb + 8 * i);
        ksz[i] = 8;
        vals[i] = NULL;
        errs[i] = NULL;
    }
    rocksdb_batched_multi_get_cf(s->db, s->ro, s->cf[t], n, kptr, ksz, vals, errs, 1);
    rk_status st = RK_OK;
    size_t miss = 0;
    for (size_t i = 0; i < n; i++) {
        float *dst = out + kp[i].pos * (size_t)dim;
        if (errs[i]) {
            if (st == RK_OK)
                st = rk_fail(err, RK_EIO, "store %s: table %d row %llu: %s", s->path, t, (unsigned long long)kp[i].row, errs[i]);
            rocksdb_free(errs[i]);
            memset(dst, 0, rowb);
        } else if (!vals[i]) {
            memset(dst, 0, rowb);
            miss++;
        } else {
            size_t vl = 0;
            const char *v = rocksdb_pinnableslice_value(vals[i], &vl);
            if (vl != rowb) {
                if (st == RK_OK)
                    st = rk_fail(err, RK_EFORMAT, "store %s: table %d row %llu has %zu bytes, expected %zu (dim %d)", s->path,
                                 t, (unsigned long long)kp[i].row, vl, rowb, dim);
                memset(dst, 0, rowb);
            } else {
                memcpy(dst, v, rowb);
            }
        }
        if (vals[i]) rocksdb_pinnableslice_destroy(vals[i]);
    }
    atomic_fetch_add(&s->lookups, n);
    atomic_fetch_add(&s->misses, miss);
    if (n_missing) *n_missing = miss;
    if (n > RK_STORE_STACK_KEYS) {
        rk_free(kp), rk_free(kb), rk_free(kptr), rk_free(ksz), rk_free(vals), rk_free(errs);
    }
    return st;
}

void rk_store_counters(const rk_store *s, uint64_t *lookups, uint64_t *misses) {
    if (lookups) *lookups = atomic_load(&((rk_store *)s)->lookups);
    if (misses) *misses = atomic_load(&((rk_store *)s)->misses);
}
