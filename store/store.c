/*
 * store/store.c — RocksDB-backed embedding tables (see store.h).
 *
 * Layout of a store directory: one RocksDB database; column family NAME per
 * table; in the default column family the metadata record
 * "rankd.store.meta" (text: "rankd-store 1" then one line per table
 * "table NAME DIM CODEC ROWS OOV") and one "rankd.oov.NAME" record per table
 * that has an out-of-vocabulary default row (encoded with the table codec).
 *
 * RocksDB options (memory bounded, c-stack.md §4; rk_store_rocks_options):
 * no compression (float rows barely compress); an LRU block cache of
 * opts.block_cache_bytes with index blocks charged to it; memtables capped
 * at 16 MiB in all (db_write_buffer_size). Measured on 1M x 256 B rows
 * (bench/RESULTS.md, bench-store): a monolithic index (~1.5 MB) did not fit
 * one LRU shard and was re-read by every miss batch (31 us per row of a
 * 200-key MultiGet, 0.6 ms per single Get); a partitioned index (4 KB
 * partitions, top level pinned) fixes that. 1 KB data blocks (4 rows) halve
 * the bytes read and checksummed per miss against 4 KB. No bloom filter:
 * ids >= rows never reach RocksDB and every id below exists, so a filter
 * can never save a read (measured equal speed, less block-cache memory).
 * mmap reads are faster (opts.mmap_reads) but turn a disk error into
 * SIGBUS, so they are opt-in. bench/store_levers.c measures each lever.
 *
 * Reads: the RAM cache (cache.c) first, keys grouped by cache shard (one
 * lock per shard per 512 keys, index entries prefetched in the grouping
 * pass, slots 4 keys ahead);
 * the misses are sorted, deduplicated and read with one
 * rocksdb_batched_multi_get_cf (pinnable slices, sorted input), decoded into
 * place and inserted into the cache unless an update raced with the read.
 *
 * Every RocksDB call that can fail goes through rk_rocks (store_internal.h)
 * so that tests can inject I/O errors.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#include "store_internal.h"

#define RK_STORE_STACK_KEYS 512
#define RK_STORE_META_KEY "rankd.store.meta"
#define RK_STORE_OOV_PREFIX "rankd.oov."
#define RK_STORE_FORMAT 1

/* ---------------------------------------------------------------- shim */

static void real_sst_put(rocksdb_sstfilewriter_t *w, const char *k, size_t kl, const char *v, size_t vl, char **err) {
    rocksdb_sstfilewriter_put(w, k, kl, v, vl, err);
}

/* The real RocksDB calls; tests swap entries of rk_rocks to inject faults. */
#define RK_ROCKS_REAL                                              \
    {                                                              \
        .open_cf = rocksdb_open_column_families,                   \
        .open_cf_ro = rocksdb_open_for_read_only_column_families,  \
        .write = rocksdb_write,                                    \
        .batched_multi_get_cf = rocksdb_batched_multi_get_cf,      \
        .get_cf = rocksdb_get_cf,                                  \
        .sst_open = rocksdb_sstfilewriter_open,                    \
        .sst_put = real_sst_put,                                   \
        .sst_finish = rocksdb_sstfilewriter_finish,                \
        .ingest_cf = rocksdb_ingest_external_file_cf,              \
        .flush_cf = rocksdb_flush_cf,                              \
        .create_cfs = rk_rocks_create_families,                    \
    }
static const rk_rocks_api rk_rocks_real = RK_ROCKS_REAL;
rk_rocks_api rk_rocks = RK_ROCKS_REAL;

void rk_rocks_reset(void) { rk_rocks = rk_rocks_real; }

rk_status rk_rocks_status(const char *msg) {
    if (!msg) return RK_EIO;
    if (!strncmp(msg, "Corruption", 10)) return RK_EFORMAT;
    if (!strncmp(msg, "Invalid argument", 16) || !strncmp(msg, "Not implemented", 15)) return RK_EINVAL;
    if (!strncmp(msg, "Not found", 9)) return RK_ENOTFOUND;
    if (strstr(msg, "No space left on device")) return RK_ETOOBIG; /* ENOSPC: resource exhausted */
    return RK_EIO;
}

static void drop_open_leftovers(const char *dir);

/* Turn a RocksDB error string into a status + message; frees it. */
static rk_status rocks_fail(rk_err *err, char **rerr, const char *fmt_what, const char *path) {
    const char *m = *rerr ? *rerr : "unknown RocksDB error";
    rk_status code = rk_rocks_status(*rerr);
    rk_status s = rk_fail(err, code, "store %s: %s: %s", path, fmt_what, m);
    rocksdb_free(*rerr);
    *rerr = NULL;
    return s;
}

void rk_store_be64(unsigned char k[8], uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        k[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

rocksdb_options_t *rk_store_rocks_options(size_t block_cache_bytes, rocksdb_cache_t **cache_out) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    rocksdb_options_set_write_buffer_size(o, (size_t)8 << 20);
    rocksdb_options_set_max_write_buffer_number(o, 2);
    rocksdb_options_set_db_write_buffer_size(o, (size_t)16 << 20);
    rocksdb_options_set_max_background_jobs(o, 2);
    /* Table files are opened by the thread opening the database: RocksDB
     * starts max_file_opening_threads (default 16) threads per column
     * family at open, 16,000 thread starts for a 1,000-table store (open
     * 2.0-4.5 s -> 0.2-0.4 s, bench-wide); a table is one file or a few. */
    rocksdb_options_set_max_file_opening_threads(o, 1);
    rocksdb_options_set_paranoid_checks(o, 1);
    /* WAL replay: a torn last record (a crash mid-write, never acknowledged)
     * is dropped, corruption before the tail fails the open
     * (kTolerateCorruptedTailRecords = 0); RocksDB's default
     * (kPointInTimeRecovery) silently stopped at the first bad record and
     * lost the acknowledged updates after it. */
    rocksdb_options_set_wal_recovery_mode(o, 0);
    /* RocksDB's info log: LOG plus at most one LOG.old.*, each <= 1 MiB
     * (every open used to keep one more LOG.old.*, ~85 KB each). */
    rocksdb_options_set_keep_log_file_num(o, 1);
    rocksdb_options_set_max_log_file_size(o, (size_t)1 << 20);
    /* No line at all (level 6 = NUM_INFO_LOG_LEVELS, above HEADER_LEVEL):
     * Debian's RocksDB is built with assertions, and its info logger
     * appends again after a failed write (disk full), which trips an
     * assertion in WritableFileWriter and aborts the process. RocksDB's
     * error texts reach our log through each failing call's errptr. The
     * OPTIONS file RocksDB writes at open then fails its read-back check and
     * stays as OPTIONS-N.dbtmp; drop_open_leftovers removes those. */
    rocksdb_options_set_info_log_level(o, 6);
    rocksdb_block_based_table_options_t *t = rocksdb_block_based_options_create();
    rocksdb_cache_t *cache = rocksdb_cache_create_lru(block_cache_bytes ? block_cache_bytes : ((size_t)1 << 20));
    rocksdb_block_based_options_set_block_cache(t, cache);
    rocksdb_block_based_options_set_block_size(t, RK_STORE_BLOCK_BYTES);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks(t, 1);
    rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(t, 1);
    rocksdb_block_based_options_set_pin_l0_filter_and_index_blocks_in_cache(t, 1);
    /* Partitioned index (kTwoLevelIndexSearch = 2), no bloom filter: see
     * the header comment. */
    rocksdb_block_based_options_set_index_type(t, 2);
    rocksdb_block_based_options_set_metadata_block_size(t, 4096);
    rocksdb_block_based_options_set_pin_top_level_index_and_filter(t, 1);
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    *cache_out = cache;
    return o;
}

/* ---------------------------------------------------------------- meta */

char *rk_store_meta_format(const rk_meta_table *mt, int n) {
    size_t cap = 64 + (size_t)n * (RK_STORE_NAME_MAX + 96), len = 0;
    char *b = rk_malloc(cap);
    if (!b) return NULL;
    len += (size_t)snprintf(b + len, cap - len, "rankd-store %d\n", RK_STORE_FORMAT);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(b + len, cap - len, "table %s %d %s %llu %d %d\n", mt[i].name, mt[i].dim,
                                rk_codec_name(mt[i].codec), (unsigned long long)mt[i].rows, mt[i].has_oov,
                                mt[i].keyed);
    return b;
}

rk_status rk_store_meta_parse(const char *v, size_t vl, const char *path, rk_meta_table **out, int *n_out, rk_err *err) {
    char *t = rk_malloc(vl + 1);
    if (!t) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", path);
    memcpy(t, v, vl);
    t[vl] = 0;
    size_t cap_mt = 1; /* tables: one per metadata line after the first */
    for (const char *q = t; *q; q++) cap_mt += *q == '\n';
    rk_meta_table *mt = rk_calloc(cap_mt, sizeof *mt);
    if (!mt) {
        rk_free(t);
        return rk_fail(err, RK_ENOMEM, "store %s: out of memory", path);
    }
    rk_status s = RK_OK;
    int n = 0, ver = 0, line = 0;
    char *save = NULL;
    for (char *ln = strtok_r(t, "\n", &save); ln && s == RK_OK; ln = strtok_r(NULL, "\n", &save)) {
        line++;
        if (line == 1) {
            if (sscanf(ln, "rankd-store %d", &ver) != 1)
                s = rk_fail(err, RK_EFORMAT, "store %s: corrupt metadata (line 1: '%.40s')", path, ln);
            else if (ver != RK_STORE_FORMAT)
                s = rk_fail(err, RK_EVERSION, "store %s: format version %d, this build reads %d", path, ver,
                            RK_STORE_FORMAT);
            continue;
        }
        char name[RK_STORE_NAME_MAX], codec[16];
        unsigned long long rows;
        int dim, oov, keyed = 0; /* the keyed flag is absent in stores written before it existed */
        int nf = sscanf(ln, "table %63s %d %15s %llu %d %d", name, &dim, codec, &rows, &oov, &keyed);
        if (nf < 5 || dim <= 0 || keyed < 0 || keyed > 1 ||
            rk_codec_parse(codec, &mt[n].codec, NULL) != RK_OK) {
            s = rk_fail(err, RK_EFORMAT, "store %s: corrupt metadata (line %d: '%.40s')", path, line, ln);
            break;
        }
        snprintf(mt[n].name, sizeof mt[n].name, "%s", name);
        mt[n].dim = dim;
        mt[n].rows = rows;
        mt[n].has_oov = oov != 0;
        mt[n].keyed = keyed;
        n++;
    }
    if (s == RK_OK && line == 0) s = rk_fail(err, RK_EFORMAT, "store %s: empty metadata record", path);
    rk_free(t);
    if (s) {
        rk_free(mt);
        return s;
    }
    *out = mt;
    *n_out = n;
    return RK_OK;
}

/* ---------------------------------------------------------------- write */

rk_status rk_store_write(const char *dir, const rk_table_spec *tables, int n_tables, rk_err *err) {
    return rk_store_write_ex(dir, tables, n_tables, NULL, err);
}

static rk_status write_table_sst(rocksdb_t *db, rocksdb_options_t *o, rocksdb_column_family_handle_t *cf,
                                 const rk_table_spec *t, const uint64_t *keys, rk_codec codec, const char *dir,
                                 const char *sst, rk_err *err) {
    size_t rb = rk_codec_row_bytes(codec, t->dim);
    unsigned char *row = rk_malloc(rb);
    if (!row) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
    rocksdb_envoptions_t *eo = rocksdb_envoptions_create();
    rocksdb_sstfilewriter_t *w = rocksdb_sstfilewriter_create(eo, o);
    char *rerr = NULL;
    rk_status st = RK_OK;
    rk_rocks.sst_open(w, sst, &rerr);
    if (rerr) st = rocks_fail(err, &rerr, "cannot create SST file", dir);
    for (uint64_t r = 0; st == RK_OK && r < t->rows; r++) {
        const float *x = t->data + r * (size_t)t->dim;
        for (int j = 0; j < t->dim; j++)
            if (!isfinite(x[j])) {
                st = rk_fail(err, RK_ENUMERIC, "store %s: table '%s' row %llu column %d is not finite", dir, t->name,
                             (unsigned long long)r, j);
                break;
            }
        if (st) break;
        unsigned char key[8];
        rk_store_be64(key, keys ? keys[r] : r);
        rk_codec_encode(codec, x, t->dim, row);
        rk_rocks.sst_put(w, (const char *)key, 8, (const char *)row, rb, &rerr);
        if (rerr) st = rocks_fail(err, &rerr, "SST write failed", dir);
    }
    if (st == RK_OK) {
        rk_rocks.sst_finish(w, &rerr);
        if (rerr) st = rocks_fail(err, &rerr, "SST finish failed", dir);
    }
    rocksdb_sstfilewriter_destroy(w);
    rocksdb_envoptions_destroy(eo);
    rk_free(row);
    if (st == RK_OK) {
        rocksdb_ingestexternalfileoptions_t *io = rocksdb_ingestexternalfileoptions_create();
        rocksdb_ingestexternalfileoptions_set_move_files(io, 1);
        const char *files[1] = {sst};
        rk_rocks.ingest_cf(db, cf, files, 1, io, &rerr);
        rocksdb_ingestexternalfileoptions_destroy(io);
        if (rerr) st = rocks_fail(err, &rerr, "SST ingestion failed", dir);
    }
    return st;
}

static int name_ok(const char *n) {
    if (!n || !n[0] || !strcmp(n, "default") || strlen(n) >= RK_STORE_NAME_MAX) return 0;
    for (const char *p = n; *p; p++)
        if (isspace((unsigned char)*p) || !isprint((unsigned char)*p)) return 0;
    return 1;
}

rk_status rk_store_write_ex(const char *dir, const rk_table_spec *tables, int n_tables, const rk_table_opts *topts,
                            rk_err *err) {
    return rk_store_write_keyed(dir, tables, NULL, n_tables, topts, err);
}

rk_status rk_store_write_keyed(const char *dir, const rk_table_spec *tables, const uint64_t *const *keys,
                               int n_tables, const rk_table_opts *topts, rk_err *err) {
    if (rk_path_exists(dir)) return rk_fail(err, RK_EEXIST, "store %s: already exists", dir);
    if (n_tables < 0) return rk_fail(err, RK_EINVAL, "store %s: %d tables", dir, n_tables);
    for (int i = 0; i < n_tables; i++) {
        if (!name_ok(tables[i].name))
            return rk_fail(err, RK_EINVAL, "store %s: table %d has an empty, reserved or invalid name", dir, i);
        if (tables[i].dim <= 0) return rk_fail(err, RK_EINVAL, "store %s: table '%s' has dim %d", dir, tables[i].name, tables[i].dim);
        if (tables[i].rows && !tables[i].data) return rk_fail(err, RK_EINVAL, "store %s: table '%s' has no data", dir, tables[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(tables[i].name, tables[j].name))
                return rk_fail(err, RK_EINVAL, "store %s: table '%s' appears twice", dir, tables[i].name);
        if (keys && keys[i])
            for (uint64_t r = 1; r < tables[i].rows; r++)
                if (keys[i][r] <= keys[i][r - 1])
                    return rk_fail(err, RK_EINVAL, "store %s: table '%s' key %llu (row %llu) is not above the previous key %llu",
                                   dir, tables[i].name, (unsigned long long)keys[i][r], (unsigned long long)r,
                                   (unsigned long long)keys[i][r - 1]);
        if (topts && (unsigned)topts[i].codec > RK_CODEC_INT8)
            return rk_fail(err, RK_EINVAL, "store %s: table '%s' has codec %d", dir, tables[i].name, (int)topts[i].codec);
    }
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid());
    rk_status st = rk_rm_rf(tmp, err);
    if (st) return st;
    rocksdb_cache_t *cache;
    rocksdb_options_t *o = rk_store_rocks_options((size_t)8 << 20, &cache);
    char *rerr = NULL;
    rocksdb_column_family_handle_t **cfs = NULL;
    rk_meta_table *mt = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(wo, 1);
    rocksdb_column_family_handle_t *dcf = NULL, **handles = NULL;
    rocksdb_t *db = NULL;
    /* Every column family is created in one call (rk_rocks_create_families),
     * then opened: creating them one by one (DB::Open with
     * create_missing_column_families does) rewrites the OPTIONS file, which
     * lists them all, each time: quadratic in the table count (bench-wide,
     * 1,000 tables: ~1,430 s). */
    const char **cf_names = rk_calloc((size_t)n_tables + 1, sizeof *cf_names);
    const rocksdb_options_t **cf_opts = rk_calloc((size_t)n_tables + 1, sizeof *cf_opts);
    handles = rk_calloc((size_t)n_tables + 1, sizeof *handles);
    mt = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *mt);
    if (!cf_names || !cf_opts || !handles || !mt) {
        rk_free(cf_names);
        rk_free(cf_opts);
        st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        goto done;
    }
    cf_names[0] = "default";
    for (int i = 0; i <= n_tables; i++) cf_opts[i] = o;
    for (int i = 0; i < n_tables; i++) cf_names[i + 1] = tables[i].name;
    if (rk_rocks.create_cfs(tmp, n_tables, cf_names + 1, &rerr) == 0)
        db = rk_rocks.open_cf(o, tmp, n_tables + 1, cf_names, cf_opts, handles, &rerr);
    rk_free(cf_names);
    rk_free(cf_opts);
    if (!db) {
        st = rocks_fail(err, &rerr, "cannot create", tmp);
        goto done;
    }
    dcf = handles[0];
    cfs = handles + 1;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    for (int i = 0; i < n_tables && st == RK_OK; i++) {
        const rk_table_spec *t = &tables[i];
        rk_codec codec = topts ? topts[i].codec : RK_CODEC_FP32;
        snprintf(mt[i].name, sizeof mt[i].name, "%s", t->name);
        mt[i].dim = t->dim;
        mt[i].codec = codec;
        mt[i].rows = t->rows;
        mt[i].has_oov = topts && topts[i].oov_row;
        mt[i].keyed = keys && keys[i];
        if (t->rows) {
            char sst[700];
            snprintf(sst, sizeof sst, "%s/ingest-%d.sst", tmp, i);
            st = write_table_sst(db, o, cfs[i], t, keys ? keys[i] : NULL, codec, dir, sst, err);
        }
        if (st == RK_OK && mt[i].has_oov) {
            size_t rb = rk_codec_row_bytes(codec, t->dim);
            unsigned char *row = rk_malloc(rb);
            char key[RK_STORE_NAME_MAX + 16];
            if (!row) {
                st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
                break;
            }
            rk_codec_encode(codec, topts[i].oov_row, t->dim, row);
            int kl = snprintf(key, sizeof key, RK_STORE_OOV_PREFIX "%s", t->name);
            rocksdb_writebatch_put_cf(wb, dcf, key, (size_t)kl, (const char *)row, rb);
            rk_free(row);
        }
    }
    if (st == RK_OK) {
        char *meta = rk_store_meta_format(mt, n_tables);
        if (!meta) st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        else {
            rocksdb_writebatch_put_cf(wb, dcf, RK_STORE_META_KEY, strlen(RK_STORE_META_KEY), meta, strlen(meta));
            rk_free(meta);
            rk_rocks.write(db, wo, wb, &rerr);
            if (rerr) st = rocks_fail(err, &rerr, "metadata write failed", dir);
        }
    }
    rocksdb_writebatch_destroy(wb);
    if (st == RK_OK) {
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        rk_rocks.flush_cf(db, fo, dcf, &rerr);
        rocksdb_flushoptions_destroy(fo);
        if (rerr) st = rocks_fail(err, &rerr, "flush failed", dir);
    }
done:
    if (db)
        for (int i = 0; i <= n_tables; i++)
            if (handles[i]) rocksdb_column_family_handle_destroy(handles[i]);
    rk_free(handles);
    rk_free(mt);
    if (db) rocksdb_close(db);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_options_destroy(o);
    rocksdb_cache_destroy(cache);
    if (st == RK_OK) drop_open_leftovers(tmp);
    if (st == RK_OK) st = rk_fsync_dir(tmp, err);
    if (st == RK_OK && rename(tmp, dir) != 0)
        st = rk_fail(err, RK_EIO, "store %s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
    if (st == RK_OK) {
        char parent[600];
        rk_path_parent(dir, parent, sizeof parent);
        (void)rk_fsync_dir(parent, NULL);
    }
    if (st != RK_OK) (void)rk_rm_rf(tmp, NULL);
    return st;
}

/* ---------------------------------------------------------------- open / close */

static rk_redis *rk_store_tier_global;
void rk_store_set_tier(rk_redis *r) { rk_store_tier_global = r; }
rk_redis *rk_store_tier(void) { return rk_store_tier_global; }

static void store_destroy(rk_store *s) {
    if (!s) return;
    rk_tier_detach(s);
    for (int i = 0; s->tabs && i < s->n_tables; i++) {
        rk_cache_free(&s->tabs[i].cache);
        rk_free(s->tabs[i].oov);
        rk_free(s->tabs[i].oov_raw);
    }
    rk_free(s->tabs);
    for (int i = 0; s->all_cf && i < s->n_all; i++) /* all_cf NULL: its allocation failed */
        if (s->all_cf[i]) rocksdb_column_family_handle_destroy(s->all_cf[i]);
    if (s->db) rocksdb_close(s->db);
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->wo) rocksdb_writeoptions_destroy(s->wo);
    if (s->opts) rocksdb_options_destroy(s->opts);
    if (s->bcache) rocksdb_cache_destroy(s->bcache);
    rk_free(s->all_cf);
    pthread_mutex_destroy(&s->wmu);
    pthread_rwlock_destroy(&s->dbmu);
    if (s->delete_dir) (void)rk_rm_rf(s->path, NULL);
    rk_free(s);
}

void rk_store_close(rk_store *s) { store_destroy(s); }

rk_status rk_store_open(const char *dir, const char *const *names, const int *dims, int n_tables, rk_store **out,
                        rk_err *err) {
    return rk_store_open_ex(dir, names, dims, n_tables, NULL, out, err);
}

/* Give each table a share of the cache budget proportional to its size,
 * capped at what it needs to hold every row. */
rk_status rk_store_setup_caches(rk_store *s, rk_err *err) {
    double need = 0;
    for (int t = 0; t < s->n_tables; t++)
        need += (double)s->tabs[t].m.rows * (double)rk_cache_bytes_per_row(s->tabs[t].row_bytes);
    double frac = need > 0 && (double)s->o.cache_bytes < need ? (double)s->o.cache_bytes / need : 1.0;
    for (int t = 0; t < s->n_tables; t++) {
        rk_store_table *tb = &s->tabs[t];
        uint64_t slots = s->o.cache_bytes ? (uint64_t)((double)tb->m.rows * frac) : 0;
        rk_status st = rk_cache_init(&tb->cache, slots, s->o.cache_shards, tb->row_bytes, err);
        if (st) return rk_err_prefix(err, "store %s: table '%s'", s->path, tb->m.name);
    }
    return RK_OK;
}

/* Make RocksDB's open error readable and name what it is about: drop the
 * store's own path from it (the message starts with "store DIR"), put a
 * ": " before a path glued to the text ("an sstableDIR/000019.sst"), and
 * for a table file named in it add the table (column family) it belongs to
 * (from a second, lazy read-only open that does not read table files) and
 * its size on disk or that it is missing. *rerr is replaced; what gets the
 * "cannot open" context. */
static void open_error_names_file(const char *dir, const rocksdb_options_t *base, int n_cf,
                                  const char *const *cf_names, char **rerr, char *what, size_t cap) {
    char msg[1024], pre[600];
    size_t o = 0;
    int pl = snprintf(pre, sizeof pre, "%s/", dir);
    for (const char *p = *rerr; *p && o + 3 < sizeof msg;) {
        if (!strncmp(p, pre, (size_t)pl)) {
            if (o && msg[o - 1] != ' ' && msg[o - 1] != ':' && o + 2 < sizeof msg) {
                msg[o++] = ':';
                msg[o++] = ' ';
            }
            p += pl;
            continue;
        }
        msg[o++] = *p++;
    }
    msg[o] = 0;
    /* NNNNNN.sst (RocksDB calls a missing one NNNNNN.ldb, its legacy name) */
    unsigned long long num = 0;
    for (const char *p = msg; *p; p++) {
        unsigned long long n;
        char ext[4];
        int used = 0;
        if (isdigit((unsigned char)*p) && (p == msg || !isdigit((unsigned char)p[-1])) &&
            sscanf(p, "%llu.%3[a-z]%n", &n, ext, &used) == 2 && (!strcmp(ext, "sst") || !strcmp(ext, "ldb"))) {
            num = n;
            break;
        }
    }
    rocksdb_free(*rerr);
    *rerr = strdup(msg);
    /* a full disk is not about a damaged file: the file named is the one
     * RocksDB was writing (a WAL replayed into a new table file) */
    if (!num || strstr(msg, "No space left on device")) return;
    char file[64], path[700];
    snprintf(file, sizeof file, "%06llu.sst", num);
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    char state[64];
    if (stat(path, &sb)) snprintf(state, sizeof state, "missing");
    else snprintf(state, sizeof state, "%lld bytes on disk", (long long)sb.st_size);
    char table[RK_STORE_NAME_MAX + 16] = "";
    rocksdb_options_t *o2 = rocksdb_options_create_copy((rocksdb_options_t *)base);
    rocksdb_options_set_max_open_files(o2, 16); /* table files are opened lazily */
    rocksdb_options_set_skip_checking_sst_file_sizes_on_db_open(o2, 1);
    rocksdb_options_set_paranoid_checks(o2, 0);
    const rocksdb_options_t **cfo = rk_calloc((size_t)n_cf, sizeof *cfo);
    rocksdb_column_family_handle_t **h = rk_calloc((size_t)n_cf, sizeof *h);
    char *e2 = NULL;
    rocksdb_t *db = NULL;
    if (cfo && h) {
        for (int i = 0; i < n_cf; i++) cfo[i] = o2;
        db = rocksdb_open_for_read_only_column_families(o2, dir, n_cf, cf_names, cfo, h, 0, &e2);
    }
    rocksdb_free(e2);
    if (db) {
        const rocksdb_livefiles_t *lf = rocksdb_livefiles(db);
        for (int i = 0; lf && i < rocksdb_livefiles_count(lf); i++) {
            const char *nm = rocksdb_livefiles_name(lf, i);
            const char *sl = nm ? strrchr(nm, '/') : NULL;
            if (sl && !strcmp(sl + 1, file)) {
                const char *cf = rocksdb_livefiles_column_family_name(lf, i);
                if (cf && strcmp(cf, "default")) snprintf(table, sizeof table, "table '%s', ", cf);
                else if (cf) snprintf(table, sizeof table, "the metadata, ");
            }
        }
        if (lf) rocksdb_livefiles_destroy(lf);
        for (int i = 0; i < n_cf; i++)
            if (h[i]) rocksdb_column_family_handle_destroy(h[i]);
        rocksdb_close(db);
    }
    rk_free(cfo);
    rk_free(h);
    rocksdb_options_destroy(o2);
    size_t len = strlen(what);
    snprintf(what + len, cap - len, " (%sfile %s, %s)", table, file, state);
}

/* what = "cannot open (write-ahead log NNNNNN.log, N bytes, ...)" when dir
 * holds non-empty WAL files (the ones replayed at open). */
static void wal_names(const char *dir, char *what, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t len = strlen(what);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 4, ".log")) continue;
        char p[1024];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &sb) || sb.st_size == 0) continue;
        len += (size_t)snprintf(what + len, len < cap ? cap - len : 0, "%s%s (%lld bytes)",
                                n++ ? ", " : " (replaying write-ahead log ", de->d_name, (long long)sb.st_size);
        if (len >= cap) break;
    }
    closedir(d);
    if (n && len + 2 < cap) snprintf(what + len, cap - len, ")");
}

/* RocksDB 7.8 keeps the empty WAL of every writable open that wrote
 * nothing (one more NNNNNN.log per reopen). With the LOCK held (after a
 * writable open), an empty WAL older than the newest one holds no record
 * and is not the one being written: delete it. Also the OPTIONS-N.dbtmp
 * files of rk_store_rocks_options' silenced info log (never read). */
static void drop_open_leftovers(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    unsigned long long newest = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned long long n;
        char tail[8];
        if (sscanf(de->d_name, "%llu.%7s", &n, tail) == 2 && !strcmp(tail, "log") && n > newest) newest = n;
    }
    rewinddir(d);
    while ((de = readdir(d))) {
        unsigned long long n;
        char tail[8], p[1024];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        size_t nl = strlen(de->d_name);
        if (!strncmp(de->d_name, "OPTIONS-", 8) && nl > 6 && !strcmp(de->d_name + nl - 6, ".dbtmp")) {
            (void)unlink(p);
            continue;
        }
        if (sscanf(de->d_name, "%llu.%7s", &n, tail) != 2 || strcmp(tail, "log") || n >= newest) continue;
        if (!stat(p, &sb) && sb.st_size == 0) (void)unlink(p);
    }
    closedir(d);
}

/* The checking process (rk_store_set_probe) is started once and kept: each
 * probe_open sends it a directory over a socket pair (its stdin/stdout) and
 * reads back one byte. A fresh process per open (exec, dynamic loading,
 * RocksDB's threads started and stopped) cost ~22 ms CPU and ~1,560 page
 * faults per open, and reaping it livelocked: its last thread wakes
 * waitpid before it has dropped its own /proc entries, and the reaper's
 * walk of the child's /proc directory and that thread's kept each other
 * going, for seconds of the loading thread's CPU time in the kernel while
 * rankd's workers kept the core busy (bench/RESULTS.md, issue 17, "swap
 * phases"). Now a process is only reaped when it dies (a store that
 * aborts RocksDB) or is replaced (rk_store_set_probe). */
static char probe_exe[512];
static pthread_mutex_t probe_mu = PTHREAD_MUTEX_INITIALIZER; /* guards the process */
static pid_t probe_pid;                                       /* 0: none running */
static int probe_fd = -1;                                     /* our end of its socket pair */

/* Close our end and reap the process; its wait status. Under probe_mu. */
static int probe_reap(void) {
    int ws = 0;
    if (probe_fd >= 0) close(probe_fd);
    probe_fd = -1;
    if (probe_pid > 0)
        while (waitpid(probe_pid, &ws, 0) < 0 && errno == EINTR) {
        }
    probe_pid = 0;
    return ws;
}

void rk_store_set_probe(const char *exe) {
    pthread_mutex_lock(&probe_mu);
    if (probe_pid > 0) (void)probe_reap(); /* EOF on its stdin: it exits */
    snprintf(probe_exe, sizeof probe_exe, "%s", exe ? exe : "");
    pthread_mutex_unlock(&probe_mu);
}

/* One store opened read-only without the scan and closed: 0, 1 refused. */
static int probe_one(const char *dir) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.verify = 0;
    o.cache_bytes = 0;
    o.block_cache_bytes = (size_t)1 << 20;
    rk_store *s = NULL;
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, NULL)) return 1;
    rk_store_close(s);
    return 0;
}

static int read_full(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* The kept checking process: requests "u32 length, path" on stdin, one
 * status byte each on stdout, until EOF. */
static int probe_serve(void) {
    char dir[4096];
    uint32_t len;
    while (read_full(0, &len, sizeof len) == 0) {
        if (len == 0 || len >= sizeof dir || read_full(0, dir, len)) return 2;
        dir[len] = 0;
        unsigned char st = (unsigned char)probe_one(dir);
        if (write(1, &st, 1) != 1) return 2;
    }
    return 0;
}

int rk_store_probe_main(int argc, char **argv) {
    if (argc < 2) return -1;
    int one = !strcmp(argv[1], RK_STORE_PROBE_ARG), serve = !strcmp(argv[1], RK_STORE_PROBE_SERVE_ARG);
    if (!one && !serve) return -1;
    probe_exe[0] = 0; /* no probe of the probe */
    if (serve) return argc == 2 ? probe_serve() : 2;
    return argc == 3 ? probe_one(argv[2]) : 2;
}

/* Start the checking process. Under probe_mu. */
static rk_status probe_start(rk_err *err) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
        return rk_fail(err, RK_EIO, "store: cannot create the checking process's socket pair: %s", strerror(errno));
    char *argv[] = {probe_exe, (char *)RK_STORE_PROBE_SERVE_ARG, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    /* the child's output (RocksDB's assertion text) is not ours to print */
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&probe_pid, probe_exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (rc) {
        close(sv[0]);
        probe_pid = 0;
        return rk_fail(err, RK_EIO, "store: cannot start the checking process %s: %s", probe_exe, strerror(rc));
    }
    probe_fd = sv[0];
    return RK_OK;
}

/* Send dir to the checking process: 0 sent, -1 it is gone. Under probe_mu. */
static int probe_send(const char *dir) {
    uint32_t len = (uint32_t)strlen(dir);
    char buf[4 + 4096];
    memcpy(buf, &len, 4);
    memcpy(buf + 4, dir, len);
    for (size_t off = 0, n = 4 + (size_t)len; off < n;) {
        ssize_t w = send(probe_fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        off += (size_t)w;
    }
    return 0;
}

/* Open dir in the checking process (see rk_store_set_probe). RK_OK when it
 * answered (cleanly refusing is fine: this process's open reports why). */
static rk_status probe_open(const char *dir, rk_err *err) {
    if (strlen(dir) >= 4096) return rk_fail(err, RK_EINVAL, "store %.200s...: path longer than 4095 bytes", dir);
    pthread_mutex_lock(&probe_mu);
    rk_status st = RK_OK;
    int sent = -1;
    /* a kept process that died meanwhile (killed from outside) is replaced once */
    for (int attempt = 0; attempt < 2 && sent < 0 && st == RK_OK; attempt++) {
        if (probe_pid > 0 && attempt) (void)probe_reap();
        if (probe_pid <= 0) st = probe_start(err);
        if (st == RK_OK) sent = probe_send(dir);
    }
    unsigned char answer;
    if (st == RK_OK && (sent < 0 || read_full(probe_fd, &answer, 1))) {
        int ws = probe_reap();
        if (WIFSIGNALED(ws))
            st = rk_fail(err, RK_EFORMAT,
                         "store %s: opening its table files killed a checking process (signal %d, %s): a damaged SST "
                         "file (RocksDB asserts while parsing it); refused",
                         dir, WTERMSIG(ws), strsignal(WTERMSIG(ws)));
        else
            st = rk_fail(err, RK_EIO, "store %s: the checking process %s exited (status %d) without answering", dir,
                         probe_exe, WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    }
    pthread_mutex_unlock(&probe_mu);
    return st;
}

rk_status rk_store_check_opts(const char *what, const rk_store_opts *opts, rk_err *err) {
    if (opts->cache_shards < 1 || opts->cache_shards > 256 || (opts->cache_shards & (opts->cache_shards - 1)))
        return rk_fail(err, RK_EINVAL, "store %s: cache_shards must be a power of two in 1..256, got %d", what,
                       opts->cache_shards);
    return RK_OK;
}

rk_store *rk_store_alloc(const rk_store_opts *opts) {
    rk_store *s = rk_calloc(1, sizeof *s);
    if (!s) return NULL;
    pthread_mutex_init(&s->wmu, NULL);
    pthread_rwlock_init(&s->dbmu, NULL);
    atomic_init(&s->refs, 1);
    s->o = *opts;
    if (opts->tier && rk_store_tier_global && rk_redis_options(rk_store_tier_global)->cache_bytes >= 0 && opts->cache_bytes)
        s->o.cache_bytes = (size_t)rk_redis_options(rk_store_tier_global)->cache_bytes;
    return s;
}

/* A writable store serves lookups while it takes updates (rankd --updates),
 * so its write path is set up to cost the lookups' cores little:
 *  - rows are rewritten in place in the memtable (inplace_update_support;
 *    it needs allow_concurrent_memtable_write off; rows of a table have one
 *    size): a row updated again and again stays one memtable entry instead
 *    of one per update, so the memtable stays small (inserts walk a short
 *    skiplist) and seldom fills. Reads take RocksDB's per-key lock.
 *  - the WAL is bounded by max_total_wal_size (16 MiB, the memtable budget):
 *    past it RocksDB flushes, as a full memtable did before, so restart
 *    replays at most that.
 *  - RocksDB's flush and compaction threads run at nice 19 (the process's
 *    default Env pools, lowered once): at normal priority a flush took the
 *    serving worker's core in bursts (bench/RESULTS.md, issue 17 updates).
 *    Writes wait on a flush only when both memtables are full. */
static void lower_pools_once(void) {
    rocksdb_env_t *env = rocksdb_create_default_env();
    rocksdb_env_lower_thread_pool_cpu_priority(env);
    rocksdb_env_lower_high_priority_thread_pool_cpu_priority(env);
    rocksdb_env_destroy(env); /* the default Env itself lives on */
}

static void writable_options(rocksdb_options_t *o) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    rocksdb_options_set_inplace_update_support(o, 1);
    rocksdb_options_set_allow_concurrent_memtable_write(o, 0);
    rocksdb_options_set_max_total_wal_size(o, (uint64_t)16 << 20);
    pthread_once(&once, lower_pools_once);
}

rk_status rk_store_open_ex(const char *dir, const char *const *names, const int *dims, int n_tables,
                           const rk_store_opts *opts, rk_store **out, rk_err *err) {
    *out = NULL;
    rk_store_opts defo = RK_STORE_OPTS_DEFAULT;
    if (!opts) opts = &defo;
    rk_status cs = rk_store_check_opts(dir, opts, err);
    if (cs) return cs;
    if (!rk_is_dir(dir)) return rk_fail(err, RK_ENOTFOUND, "store %s: missing directory", dir);
    char cur[700];
    snprintf(cur, sizeof cur, "%s/CURRENT", dir);
    if (!rk_path_exists(cur))
        return rk_fail(err, RK_EFORMAT, "store %s: not a RocksDB database (no CURRENT file): foreign or incomplete directory", dir);
    if (probe_exe[0]) {
        rk_status ps = probe_open(dir, err);
        if (ps) return ps;
    }
    rk_store *s = rk_store_alloc(opts);
    if (!s) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
    snprintf(s->path, sizeof s->path, "%s", dir);
    s->opts = rk_store_rocks_options(opts->block_cache_bytes, &s->bcache);
    if (opts->mmap_reads) rocksdb_options_set_allow_mmap_reads(s->opts, 1);
    if (opts->writable) writable_options(s->opts);
    char *rerr = NULL;
    rk_status st = RK_OK;
    size_t n_cf = 0;
    rk_meta_table *mt = NULL;
    int n_mt = 0;
    char **cf_names = rocksdb_list_column_families(s->opts, dir, &n_cf, &rerr);
    if (!cf_names) {
        st = rocks_fail(err, &rerr, "not a readable RocksDB database", dir);
        goto fail;
    }
    s->n_all = (int)n_cf;
    s->all_cf = rk_calloc(n_cf, sizeof *s->all_cf);
    const rocksdb_options_t **cfo = rk_calloc(n_cf, sizeof *cfo);
    if (!s->all_cf || !cfo) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        rk_free(cfo);
        st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        goto fail;
    }
    for (size_t i = 0; i < n_cf; i++) cfo[i] = s->opts;
    if (opts->writable)
        s->db = rk_rocks.open_cf(s->opts, dir, (int)n_cf, (const char *const *)cf_names, cfo, s->all_cf, &rerr);
    else
        s->db = rk_rocks.open_cf_ro(s->opts, dir, (int)n_cf, (const char *const *)cf_names, cfo, s->all_cf, 0, &rerr);
    if (!s->db && opts->writable && rk_rocks_status(rerr) == RK_ETOOBIG) {
        /* disk full: serve read-only; every rk_store_apply retries the
         * writable open, so updates resume once space is freed */
        rk_warn("store %s: cannot open writable (%s): serving read-only, updates refused until space is freed", dir,
                rerr);
        rocksdb_free(rerr);
        rerr = NULL;
        s->db = rk_rocks.open_cf_ro(s->opts, dir, (int)n_cf, (const char *const *)cf_names, cfo, s->all_cf, 0, &rerr);
        s->write_failed = s->db != NULL;
    }
    rk_free(cfo);
    if (!s->db) {
        /* RocksDB's message does not say which file: a corruption found
         * while replaying the write-ahead log names the non-empty WALs. */
        char what[300] = "cannot open";
        if (rerr && !strncmp(rerr, "Corruption", 10)) wal_names(dir, what, sizeof what);
        if (rerr) open_error_names_file(dir, s->opts, (int)n_cf, (const char *const *)cf_names, &rerr, what, sizeof what);
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        st = rocks_fail(err, &rerr, what, dir);
        goto fail;
    }
    if (opts->writable && !s->write_failed) drop_open_leftovers(dir);
    int dflt = -1;
    for (size_t i = 0; i < n_cf; i++)
        if (!strcmp(cf_names[i], "default")) dflt = (int)i;
    s->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(s->ro, 1);
    s->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo, opts->sync_writes ? 1 : 0);
    /* metadata */
    size_t vl = 0;
    char *v = dflt < 0 ? NULL
                       : rk_rocks.get_cf(s->db, s->ro, s->all_cf[dflt], RK_STORE_META_KEY, strlen(RK_STORE_META_KEY), &vl,
                                         &rerr);
    if (rerr) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        st = rocks_fail(err, &rerr, "cannot read metadata", dir);
        goto fail;
    }
    if (!v) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        st = rk_fail(err, RK_EFORMAT, "store %s: a RocksDB database but not a rankd store (no '%s' record): foreign directory",
                     dir, RK_STORE_META_KEY);
        goto fail;
    }
    st = rk_store_meta_parse(v, vl, dir, &mt, &n_mt, err);
    rocksdb_free(v);
    if (st) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        goto fail;
    }
    if (!names && n_tables == 0) n_tables = n_mt;
    s->tabs = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *s->tabs);
    if (!s->tabs) {
        rocksdb_list_column_families_destroy(cf_names, n_cf);
        st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        goto fail;
    }
    s->n_tables = n_tables;
    for (int t = 0; t < n_tables && st == RK_OK; t++) {
        const char *want = names ? names[t] : mt[t].name;
        int mi = -1, ci = -1;
        for (int i = 0; i < n_mt; i++)
            if (!strcmp(mt[i].name, want)) mi = i;
        for (size_t i = 0; i < n_cf; i++)
            if (!strcmp(cf_names[i], want)) ci = (int)i;
        if (mi < 0 || ci < 0) {
            st = rk_fail(err, RK_ENOTFOUND, "store %s: table '%s' (column family) missing", dir, want);
            break;
        }
        rk_store_table *tb = &s->tabs[t];
        tb->m = mt[mi];
        tb->cf = s->all_cf[ci];
        tb->row_bytes = rk_codec_row_bytes(tb->m.codec, tb->m.dim);
        if (dims && dims[t] != tb->m.dim) {
            st = rk_fail(err, RK_EFORMAT, "store %s: table '%s' has dim %d, expected %d", dir, want, tb->m.dim, dims[t]);
            break;
        }
        if (tb->m.has_oov) {
            char key[RK_STORE_NAME_MAX + 16];
            int kl = snprintf(key, sizeof key, RK_STORE_OOV_PREFIX "%s", want);
            char *ov = rk_rocks.get_cf(s->db, s->ro, s->all_cf[dflt], key, (size_t)kl, &vl, &rerr);
            if (rerr) {
                st = rocks_fail(err, &rerr, "cannot read the default row", dir);
                break;
            }
            if (!ov || vl != tb->row_bytes) {
                rocksdb_free(ov);
                st = rk_fail(err, RK_EFORMAT, "store %s: table '%s': default (OOV) row missing or of the wrong size", dir, want);
                break;
            }
            tb->oov = rk_malloc((size_t)tb->m.dim * sizeof(float));
            tb->oov_raw = rk_malloc(tb->row_bytes);
            if (tb->oov) rk_codec_decode(tb->m.codec, ov, tb->m.dim, tb->oov);
            if (tb->oov_raw) memcpy(tb->oov_raw, ov, tb->row_bytes);
            rocksdb_free(ov);
            if (!tb->oov || !tb->oov_raw) st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", dir);
        }
    }
    rocksdb_list_column_families_destroy(cf_names, n_cf);
    rk_free(mt);
    mt = NULL;
    if (st == RK_OK) st = rk_store_setup_caches(s, err);
    for (int t = 0; st == RK_OK && opts->verify && t < s->n_tables; t++) {
        uint64_t keys = 0;
        st = rk_store_count_keys(s, t, &keys, err);
        if (st) rk_err_prefix(err, "table '%s': open-time checksum scan", s->tabs[t].m.name);
        else if (keys != s->tabs[t].m.rows)
            st = rk_fail(err, RK_EFORMAT, "store %s: table '%s' holds %llu rows, its metadata says %llu: damaged or foreign files",
                         dir, s->tabs[t].m.name, (unsigned long long)keys, (unsigned long long)s->tabs[t].m.rows);
    }
    if (st == RK_OK && opts->tier && rk_store_tier_global) st = rk_store_redis_attach(s, rk_store_tier_global, err);
    if (st) goto fail;
    *out = s;
    return RK_OK;
fail:
    rk_free(mt);
    store_destroy(s);
    return st;
}

int rk_store_n_tables(const rk_store *s) { return s->n_tables; }

void rk_store_table_info(const rk_store *s, int t, rk_table_info *out) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    const rk_store_table *tb = &s->tabs[t];
    out->name = tb->m.name;
    out->dim = tb->m.dim;
    out->codec = tb->m.codec;
    out->rows = tb->m.rows;
    out->row_bytes = tb->row_bytes;
    out->has_oov_row = tb->m.has_oov;
}

int rk_store_find(const rk_store *s, const char *name) {
    for (int t = 0; t < s->n_tables; t++)
        if (!strcmp(s->tabs[t].m.name, name)) return t;
    return -1;
}

/* ---------------------------------------------------------------- get */

static int rk_keypos_cmp(const void *a, const void *b) {
    const rk_keypos *x = a, *y = b;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

void rk_store_default_row(const rk_store_table *tb, float *dst) {
    if (tb->oov) memcpy(dst, tb->oov, (size_t)tb->m.dim * sizeof(float));
    else memset(dst, 0, (size_t)tb->m.dim * sizeof(float));
}

rk_status rk_store_get(rk_store *s, int t, const uint64_t *rows, size_t n, float *out, size_t *n_missing,
                       rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    if (n_missing) *n_missing = 0;
    if (n == 0) return RK_OK;
    rk_store_table *tb = &s->tabs[t];
    const int dim = tb->m.dim;
    const size_t rowf = (size_t)dim;
    rk_cache *c = &tb->cache;
    uint64_t gens[256];
    if (c->slots) rk_cache_gens(c, gens);
    rk_keypos kp_stack[RK_STORE_STACK_KEYS];
    rk_keypos *kp = kp_stack;
    size_t m = 0, kcap = RK_STORE_STACK_KEYS;
    unsigned char hit[RK_CACHE_BATCH_CHUNK];
    size_t oor = 0; /* ids >= rows: the default row without RocksDB */
    for (size_t i = 0; i < n; i++) {
        if (c->slots) {
            if (i % RK_CACHE_BATCH_CHUNK == 0) {
                size_t k = n - i < RK_CACHE_BATCH_CHUNK ? n - i : RK_CACHE_BATCH_CHUNK;
                rk_cache_get_batch(c, rows + i, k, tb->m.codec, dim, out + i * rowf, hit);
            }
            if (hit[i % RK_CACHE_BATCH_CHUNK]) continue;
        }
        if (m == kcap) {
            rk_keypos *nk = rk_malloc(n * sizeof *nk);
            if (!nk) {
                if (kp != kp_stack) rk_free(kp);
                return rk_fail(err, RK_ENOMEM, "store lookup of %zu keys: out of memory", n);
            }
            memcpy(nk, kp, m * sizeof *kp);
            kp = nk;
            kcap = n;
        }
        if (!tb->m.keyed && rows[i] >= tb->m.rows) { /* never written, never reachable by an update */
            rk_store_default_row(tb, out + i * rowf);
            oor++;
            continue;
        }
        kp[m].row = rows[i];
        kp[m].pos = i;
        m++;
    }
    atomic_fetch_add_explicit(&tb->lookups, n, memory_order_relaxed);
    if (m == 0) {
        atomic_fetch_add_explicit(&tb->unknown, oor, memory_order_relaxed);
        if (n_missing) *n_missing = oor;
        return RK_OK;
    }
    qsort(kp, m, sizeof *kp, rk_keypos_cmp);
    if (s->tier) { /* the Redis tier between the cache and RocksDB */
        m = rk_tier_get(s, tb, kp, m, out, gens, &oor);
        if (m == 0) {
            atomic_fetch_add_explicit(&tb->unknown, oor, memory_order_relaxed);
            if (n_missing) *n_missing = oor;
            if (kp != kp_stack) rk_free(kp);
            return RK_OK;
        }
    }
    /* distinct keys: u[j] = index into kp of the first occurrence */
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (i == 0 || kp[i].row != kp[i - 1].row) u++;
    unsigned char kb_stack[RK_STORE_STACK_KEYS * 8];
    const char *kptr_stack[RK_STORE_STACK_KEYS];
    size_t ksz_stack[RK_STORE_STACK_KEYS], first_stack[RK_STORE_STACK_KEYS];
    rocksdb_pinnableslice_t *val_stack[RK_STORE_STACK_KEYS];
    char *err_stack[RK_STORE_STACK_KEYS];
    unsigned char *kb = kb_stack;
    const char **kptr = kptr_stack;
    size_t *ksz = ksz_stack, *first = first_stack;
    rocksdb_pinnableslice_t **vals = val_stack;
    char **errs = err_stack;
    int heap = u > RK_STORE_STACK_KEYS;
    if (heap) {
        kb = rk_malloc(u * 8);
        kptr = rk_malloc(u * sizeof *kptr);
        ksz = rk_malloc(u * sizeof *ksz);
        first = rk_malloc((u + 1) * sizeof *first);
        vals = rk_malloc(u * sizeof *vals);
        errs = rk_malloc(u * sizeof *errs);
        if (!kb || !kptr || !ksz || !first || !vals || !errs) {
            rk_free(kb), rk_free(kptr), rk_free(ksz), rk_free(first), rk_free(vals), rk_free(errs);
            if (kp != kp_stack) rk_free(kp);
            return rk_fail(err, RK_ENOMEM, "store lookup of %zu keys: out of memory", n);
        }
    }
    for (size_t i = 0, j = 0; i < m; i++) {
        if (i && kp[i].row == kp[i - 1].row) continue;
        rk_store_be64(kb + 8 * j, kp[i].row);
        kptr[j] = (const char *)(kb + 8 * j);
        ksz[j] = 8;
        vals[j] = NULL;
        errs[j] = NULL;
        first[j++] = i;
    }
    pthread_rwlock_rdlock(&s->dbmu);
    if (s->db) {
        rk_rocks.batched_multi_get_cf(s->db, s->ro, tb->cf, u, kptr, ksz, vals, errs, 1);
    } else {
        for (size_t j = 0; j < u; j++) errs[j] = strdup("IO error: the database could not be reopened after a failed write");
    }
    pthread_rwlock_unlock(&s->dbmu);
    rk_status st = RK_OK;
    size_t unknown = oor;
    for (size_t j = 0; j < u; j++) {
        size_t i0 = first[j], i1 = j + 1 < u ? first[j + 1] : m;
        uint64_t row = kp[i0].row;
        float *dst = out + kp[i0].pos * rowf;
        if (errs[j]) {
            if (st == RK_OK)
                st = rk_fail(err, rk_rocks_status(errs[j]), "store %s: table '%s' row %llu: %s", s->path, tb->m.name,
                             (unsigned long long)row, errs[j]);
            rocksdb_free(errs[j]);
            memset(dst, 0, rowf * sizeof(float));
        } else if (!vals[j]) {
            rk_store_default_row(tb, dst);
            unknown += i1 - i0;
        } else {
            size_t vl = 0;
            const char *v = rocksdb_pinnableslice_value(vals[j], &vl);
            if (vl != tb->row_bytes) {
                if (st == RK_OK)
                    st = rk_fail(err, RK_EFORMAT, "store %s: table '%s' row %llu has %zu bytes, expected %zu (%s, dim %d)",
                                 s->path, tb->m.name, (unsigned long long)row, vl, tb->row_bytes,
                                 rk_codec_name(tb->m.codec), dim);
                memset(dst, 0, rowf * sizeof(float));
            } else {
                rk_codec_decode(tb->m.codec, v, dim, dst);
                if (c->slots) rk_cache_fill(c, row, v, gens);
            }
        }
        if (vals[j]) rocksdb_pinnableslice_destroy(vals[j]);
        for (size_t i = i0 + 1; i < i1; i++) memcpy(out + kp[i].pos * rowf, dst, rowf * sizeof(float));
    }
    atomic_fetch_add_explicit(&tb->unknown, unknown, memory_order_relaxed);
    atomic_fetch_add_explicit(&tb->db_reads, u, memory_order_relaxed);
    if (n_missing) *n_missing = unknown;
    if (heap) rk_free(kb), rk_free(kptr), rk_free(ksz), rk_free(first), rk_free(vals), rk_free(errs);
    if (kp != kp_stack) rk_free(kp);
    return st;
}

void rk_store_counters(const rk_store *s, uint64_t *lookups, uint64_t *misses) {
    uint64_t l = 0, m = 0;
    for (int t = 0; t < s->n_tables; t++) {
        l += atomic_load(&((rk_store *)s)->tabs[t].lookups);
        m += atomic_load(&((rk_store *)s)->tabs[t].unknown);
    }
    if (lookups) *lookups = l;
    if (misses) *misses = m;
}

void rk_store_stats_get(rk_store *s, int t, rk_store_stats *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < s->n_tables; i++) {
        if (t >= 0 && i != t) continue;
        rk_store_table *tb = &s->tabs[i];
        out->lookups += atomic_load(&tb->lookups);
        out->unknown += atomic_load(&tb->unknown);
        out->rocksdb_reads += atomic_load(&tb->db_reads);
        out->updates += atomic_load(&tb->updates);
        out->redis_reads += atomic_load(&tb->redis_reads);
        out->redis_failed += atomic_load(&tb->redis_failed);
        out->redis_defaulted += atomic_load(&tb->redis_defaulted);
        out->stream_updates += atomic_load(&tb->stream_updates);
        rk_cache_stats(&tb->cache, &out->cache_hits, &out->cache_misses, &out->cache_evictions, &out->cache_entries);
        out->cache_slots += tb->cache.slots;
        out->cache_bytes += tb->cache.bytes;
        out->cache_row_bytes += tb->cache.slots * tb->row_bytes;
    }
    if (s->bcache) { /* none on a cluster-only store */
        out->block_cache_usage = rocksdb_cache_get_usage(s->bcache);
        out->block_cache_pinned = rocksdb_cache_get_pinned_usage(s->bcache);
    }
}

/* Scans, counts and compactions read local files: a cluster-only store has none. */
static rk_status refuse_remote(const rk_store *s, const char *what, rk_err *err) {
    return rk_fail(err, RK_EINVAL, "store %s: %s needs the local tables/, but this version lives only in the Redis Cluster",
                   s->path, what);
}

rk_status rk_store_count_keys(rk_store *s, int t, uint64_t *count, rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    *count = 0;
    if (s->remote[0]) return refuse_remote(s, "counting keys", err);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(ro, 1);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    pthread_rwlock_rdlock(&s->dbmu);
    uint64_t n = 0;
    char *rerr = NULL;
    if (s->db) {
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->tabs[t].cf);
        for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) n++;
        rocksdb_iter_get_error(it, &rerr);
        rocksdb_iter_destroy(it);
    } else {
        rerr = strdup("IO error: the database could not be reopened after a failed write");
    }
    pthread_rwlock_unlock(&s->dbmu);
    rocksdb_readoptions_destroy(ro);
    *count = n;
    if (rerr) return rocks_fail(err, &rerr, "scan failed", s->path);
    return RK_OK;
}

rk_status rk_store_scan(rk_store *s, int t, int (*fn)(void *ctx, uint64_t key, const float *row), void *ctx,
                        rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    if (s->remote[0]) return refuse_remote(s, "a scan", err);
    const rk_store_table *tb = &s->tabs[t];
    float *row = rk_malloc((size_t)tb->m.dim * sizeof(float));
    if (!row) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", s->path);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(ro, 1);
    rocksdb_readoptions_set_fill_cache(ro, 0);
    pthread_rwlock_rdlock(&s->dbmu);
    if (!s->db) {
        pthread_rwlock_unlock(&s->dbmu);
        rocksdb_readoptions_destroy(ro);
        rk_free(row);
        return rk_fail(err, RK_EIO, "store %s: the database could not be reopened after a failed write", s->path);
    }
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, tb->cf);
    rk_status st = RK_OK;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl != 8 || vl != tb->row_bytes) {
            st = rk_fail(err, RK_EFORMAT, "store %s: table '%s' has a record of %zu key / %zu value bytes, expected 8 / %zu",
                         s->path, tb->m.name, kl, vl, tb->row_bytes);
            break;
        }
        uint64_t key = 0;
        for (int i = 0; i < 8; i++) key = key << 8 | k[i];
        rk_codec_decode(tb->m.codec, v, tb->m.dim, row);
        if (fn(ctx, key, row)) break;
    }
    char *rerr = NULL;
    rocksdb_iter_get_error(it, &rerr);
    rocksdb_iter_destroy(it);
    pthread_rwlock_unlock(&s->dbmu);
    rocksdb_readoptions_destroy(ro);
    rk_free(row);
    if (rerr) return rocks_fail(err, &rerr, "scan failed", s->path);
    return st;
}

/* ---------------------------------------------------------------- apply */

/* Open s->path into s->db and remap the tables' column families by name:
 * writable, else (that failing) read-only so that reads keep serving. */
static rk_status open_db_handles(rk_store *s, rk_err *err) {
    size_t n_cf = 0;
    char *rerr = NULL, *rerr2 = NULL;
    char **names = rocksdb_list_column_families(s->opts, s->path, &n_cf, &rerr);
    if (!names) return rocks_fail(err, &rerr, "cannot list column families", s->path);
    if ((int)n_cf != s->n_all) {
        rocksdb_list_column_families_destroy(names, n_cf);
        return rk_fail(err, RK_EFORMAT, "store %s: %zu column families, %d at open", s->path, n_cf, s->n_all);
    }
    const rocksdb_options_t **cfo = rk_calloc(n_cf, sizeof *cfo);
    if (!cfo) {
        rocksdb_list_column_families_destroy(names, n_cf);
        return rk_fail(err, RK_ENOMEM, "store %s: out of memory", s->path);
    }
    for (size_t i = 0; i < n_cf; i++) cfo[i] = s->opts;
    const char *const *nm = (const char *const *)names;
    s->db = rk_rocks.open_cf(s->opts, s->path, (int)n_cf, nm, cfo, s->all_cf, &rerr);
    if (!s->db) s->db = rk_rocks.open_cf_ro(s->opts, s->path, (int)n_cf, nm, cfo, s->all_cf, 0, &rerr2);
    rk_free(cfo);
    rk_status st = RK_OK;
    if (!s->db) {
        rocksdb_free(rerr2);
        st = rocks_fail(err, &rerr, "cannot reopen", s->path);
    } else {
        for (int t = 0; t < s->n_tables; t++)
            for (size_t i = 0; i < n_cf; i++)
                if (!strcmp(names[i], s->tabs[t].m.name)) s->tabs[t].cf = s->all_cf[i];
        if (rerr) st = rocks_fail(err, &rerr, "cannot reopen writable (serving read-only)", s->path);
        rocksdb_free(rerr2);
    }
    rocksdb_list_column_families_destroy(names, n_cf);
    return st;
}

/* After a failed write RocksDB refuses every later one; close and reopen
 * the database in place (readers wait on dbmu meanwhile; the RAM cache
 * keeps what they read). RK_OK when it is writable again; otherwise the
 * error (a full disk: RK_ETOOBIG), reads keep serving from a read-only
 * open, and the next apply tries again. Caller holds wmu. */
static rk_status reopen_db(rk_store *s, rk_err *err) {
    pthread_rwlock_wrlock(&s->dbmu);
    for (int i = 0; i < s->n_all; i++) {
        if (s->all_cf[i]) rocksdb_column_family_handle_destroy(s->all_cf[i]);
        s->all_cf[i] = NULL;
    }
    if (s->db) rocksdb_close(s->db);
    s->db = NULL;
    rk_status st = open_db_handles(s, err);
    s->write_failed = st != RK_OK;
    pthread_rwlock_unlock(&s->dbmu);
    if (st == RK_OK) {
        drop_open_leftovers(s->path);
        rk_info("store %s: reopened writable after a failed write; updates resume", s->path);
    }
    return st;
}

rk_status rk_store_check_update(const rk_store *s, int t, const uint64_t *rows, size_t n, const float *data,
                                rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    const rk_store_table *tb = &s->tabs[t];
    const size_t dim = (size_t)tb->m.dim;
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= tb->m.rows)
            return rk_fail(err, RK_EINVAL, "rows[%zu]: %llu outside the table's %llu rows", i,
                           (unsigned long long)rows[i], (unsigned long long)tb->m.rows);
    /* Bounded like dense inputs: larger values overflow float32 tower math. */
    for (size_t i = 0; i < n * dim; i++)
        if (!isfinite(data[i]) || fabsf(data[i]) > RK_STORE_MAX_ABS)
            return rk_fail(err, RK_ENUMERIC, "values[%zu] (rows[%zu], column %zu): %g is not finite or beyond +-%g", i,
                           i / dim, i % dim, (double)data[i], (double)RK_STORE_MAX_ABS);
    return RK_OK;
}

rk_status rk_store_apply(rk_store *s, int t, const uint64_t *rows, size_t n, const float *data, rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    rk_store_table *tb = &s->tabs[t];
    if (!s->o.writable && !s->tier)
        return rk_fail(err, RK_EINVAL, "store %s: opened read-only; updates need opts.writable or a Redis tier", s->path);
    if (n == 0) return RK_OK;
    if (rk_store_check_update(s, t, rows, n, data, err))
        return rk_err_prefix(err, "store %s: table '%s'", s->path, tb->m.name);
    unsigned char *enc = rk_malloc(n * tb->row_bytes);
    if (!enc) return rk_fail(err, RK_ENOMEM, "store %s: out of memory for %zu updates", s->path, n);
    for (size_t i = 0; i < n; i++)
        rk_codec_encode(tb->m.codec, data + i * (size_t)tb->m.dim, tb->m.dim, enc + i * tb->row_bytes);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    char *rerr = NULL;
    rk_status st = RK_OK;
    pthread_mutex_lock(&s->wmu); /* tb->cf changes only under it (reopen_db) */
    if (s->write_failed) st = reopen_db(s, err);
    for (size_t i = 0; st == RK_OK && s->o.writable && i < n; i++) {
        unsigned char key[8];
        rk_store_be64(key, rows[i]);
        rocksdb_writebatch_put_cf(wb, tb->cf, (const char *)key, 8, (const char *)(enc + i * tb->row_bytes), tb->row_bytes);
    }
    if (st == RK_OK && s->tier) st = rk_tier_apply(s, tb, rows, n, enc, err); /* Redis first: shared, WAITed */
    if (st == RK_OK && s->o.writable) rk_rocks.write(s->db, s->wo, wb, &rerr);
    if (st) {
        rk_err_prefix(err, "update refused (nothing acknowledged)");
    } else if (rerr) {
        /* RocksDB stays in its error state after a failed WAL write (7.8
         * does not resume by itself): the next apply reopens the database */
        s->write_failed = 1;
        st = rocks_fail(err, &rerr, "update write failed (nothing acknowledged)", s->path);
    } else {
        for (size_t i = 0; i < n; i++) rk_cache_update(&tb->cache, rows[i], enc + i * tb->row_bytes);
        atomic_fetch_add(&tb->updates, n);
    }
    pthread_mutex_unlock(&s->wmu);
    rocksdb_writebatch_destroy(wb);
    rk_free(enc);
    return st;
}

rk_status rk_store_compact(rk_store *s, int t, rk_err *err) {
    RK_ASSERT(t >= 0 && t < s->n_tables);
    if (!s->o.writable) return rk_fail(err, RK_EINVAL, "store %s: opened read-only; compaction needs opts.writable", s->path);
    pthread_mutex_lock(&s->wmu);
    int failed = s->write_failed;
    if (!failed) rocksdb_compact_range_cf(s->db, s->tabs[t].cf, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&s->wmu);
    if (failed) return rk_fail(err, RK_EIO, "store %s: a write failed; compaction waits for the next successful update", s->path);
    return RK_OK;
}

/* ---------------------------------------------------------------- versions */

struct rk_store_live {
    pthread_mutex_t mu;
    rk_store *cur;
    rk_store_opts o;
};

rk_status rk_store_live_open(const char *dir, const rk_store_opts *opts, rk_store_live **out, rk_err *err) {
    *out = NULL;
    rk_store_live *l = rk_calloc(1, sizeof *l);
    if (!l) return rk_fail(err, RK_ENOMEM, "live store: out of memory");
    rk_store_opts d = RK_STORE_OPTS_DEFAULT;
    l->o = opts ? *opts : d;
    rk_status st = rk_store_open_ex(dir, NULL, NULL, 0, &l->o, &l->cur, err);
    if (st) {
        rk_free(l);
        return st;
    }
    pthread_mutex_init(&l->mu, NULL);
    *out = l;
    return RK_OK;
}

rk_store *rk_store_live_acquire(rk_store_live *l) {
    pthread_mutex_lock(&l->mu);
    rk_store *s = l->cur;
    atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&l->mu);
    return s;
}

void rk_store_live_release(rk_store_live *l, rk_store *s) {
    (void)l;
    if (atomic_fetch_sub(&s->refs, 1) == 1) store_destroy(s);
}

rk_status rk_store_live_switch(rk_store_live *l, const char *dir, int delete_old, rk_err *err) {
    rk_store *nw;
    rk_status st = rk_store_open_ex(dir, NULL, NULL, 0, &l->o, &nw, err);
    if (st) return st;
    rk_store *old = rk_store_live_acquire(l);
    if (old->n_tables != nw->n_tables) st = rk_fail(err, RK_EINVAL, "store %s: %d tables, the serving version has %d", dir, nw->n_tables, old->n_tables);
    for (int t = 0; st == RK_OK && t < nw->n_tables; t++)
        if (strcmp(old->tabs[t].m.name, nw->tabs[t].m.name) || old->tabs[t].m.dim != nw->tabs[t].m.dim)
            st = rk_fail(err, RK_EINVAL, "store %s: table %d is '%s' dim %d, the serving version has '%s' dim %d", dir, t,
                         nw->tabs[t].m.name, nw->tabs[t].m.dim, old->tabs[t].m.name, old->tabs[t].m.dim);
    rk_store_live_release(l, old);
    if (st) {
        store_destroy(nw);
        return st;
    }
    pthread_mutex_lock(&l->mu);
    old = l->cur;
    l->cur = nw;
    pthread_mutex_unlock(&l->mu);
    old->delete_dir = delete_old && strcmp(old->path, nw->path) != 0;
    rk_store_live_release(l, old); /* the live handle's own reference */
    return RK_OK;
}

void rk_store_live_current(rk_store_live *l, char *buf, size_t cap) {
    rk_store *s = rk_store_live_acquire(l);
    snprintf(buf, cap, "%s", s->path);
    rk_store_live_release(l, s);
}

void rk_store_live_close(rk_store_live *l) {
    if (!l) return;
    rk_store_live_release(l, l->cur);
    pthread_mutex_destroy(&l->mu);
    rk_free(l);
}
