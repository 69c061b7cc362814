/*
 * store/store_internal.h — private to store/ (and its tests): the thin shim
 * over the RocksDB calls that can fail, and the RAM row cache.
 *
 * Fault injection: every RocksDB call whose failure the store must survive
 * goes through the function-pointer table rk_rocks. It starts out pointing
 * at the real functions; a test replaces an entry with a function that sets
 * *errptr (malloc'd, RocksDB style, e.g. "IO error: No space left on
 * device") and restores the table with rk_rocks_reset(). Not thread-safe to
 * change while a store is in use by other threads.
 */
#ifndef RK_STORE_INTERNAL_H
#define RK_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <rocksdb/c.h>

#include "store.h"

typedef struct {
    rocksdb_t *(*open_cf)(const rocksdb_options_t *o, const char *path, int n, const char *const *names,
                          const rocksdb_options_t *const *cfo, rocksdb_column_family_handle_t **h, char **err);
    rocksdb_t *(*open_cf_ro)(const rocksdb_options_t *o, const char *path, int n, const char *const *names,
                             const rocksdb_options_t *const *cfo, rocksdb_column_family_handle_t **h,
                             unsigned char error_if_wal_exists, char **err);
    void (*write)(rocksdb_t *db, const rocksdb_writeoptions_t *wo, rocksdb_writebatch_t *wb, char **err);
    void (*batched_multi_get_cf)(rocksdb_t *db, const rocksdb_readoptions_t *ro, rocksdb_column_family_handle_t *cf,
                                 size_t n, const char *const *keys, const size_t *sizes,
                                 rocksdb_pinnableslice_t **vals, char **errs, const bool sorted);
    char *(*get_cf)(rocksdb_t *db, const rocksdb_readoptions_t *ro, rocksdb_column_family_handle_t *cf,
                    const char *key, size_t klen, size_t *vlen, char **err);
    void (*sst_open)(rocksdb_sstfilewriter_t *w, const char *name, char **err);
    void (*sst_put)(rocksdb_sstfilewriter_t *w, const char *k, size_t kl, const char *v, size_t vl, char **err);
    void (*sst_finish)(rocksdb_sstfilewriter_t *w, char **err);
    void (*ingest_cf)(rocksdb_t *db, rocksdb_column_family_handle_t *cf, const char *const *files, size_t n,
                      const rocksdb_ingestexternalfileoptions_t *o, char **err);
    void (*flush_cf)(rocksdb_t *db, const rocksdb_flushoptions_t *fo, rocksdb_column_family_handle_t *cf,
                     char **err);
    /* rk_rocks_create_families (store/rocks_cf.cc): 0, or -1 with *err */
    int (*create_cfs)(const char *dir, int n, const char *const *names, char **err);
} rk_rocks_api;

/* Create a new database at dir (must not exist) holding "default" and
 * names[0..n), in one DB::CreateColumnFamilies (one OPTIONS file write;
 * creating them one by one is quadratic in n), then close it. 0, or -1 with
 * *err a malloc'd RocksDB status text. store/rocks_cf.cc, the only C++. */
int rk_rocks_create_families(const char *dir, int n, const char *const *names, char **err);

extern rk_rocks_api rk_rocks;
/* Point every entry back at the real RocksDB function. */
void rk_rocks_reset(void);

/* Map a RocksDB error text to a status: "Corruption" -> RK_EFORMAT,
 * "Invalid argument" -> RK_EINVAL, "Not found" -> RK_ENOTFOUND,
 * "Not implemented" -> RK_EINVAL, "No space left on device" (ENOSPC) ->
 * RK_ETOOBIG ("resource exhausted"), else (IO error, ...) RK_EIO. */
rk_status rk_rocks_status(const char *msg);

/* The RocksDB options every store is opened and written with (the
 * benchmark's raw-RocksDB baseline uses them too): no compression, data
 * blocks of RK_STORE_BLOCK_BYTES, partitioned index (no bloom filter)
 * cached at high priority in an LRU block cache of
 * block_cache_bytes (*cache_out, the caller destroys it after the options),
 * top level pinned, memtables capped at 16 MiB in all. */
#define RK_STORE_BLOCK_BYTES 1024
rocksdb_options_t *rk_store_rocks_options(size_t block_cache_bytes, rocksdb_cache_t **cache_out);

/* ---------------------------------------------------------------- cache
 * One cache per table, n_shards (power of two) shards, each with a mutex,
 * a fixed number of slots, CLOCK eviction, and an open-addressing index
 * (linear probing, backward-shift deletion) of capacity ~1.5 x slots
 * holding slot+1 (0 = empty). A slot is [key u64][encoded row]. */
typedef struct {
    pthread_mutex_t mu;
    uint32_t nslots, used, hand, icap;
    uint32_t *index;      /* [icap] */
    uint8_t *ref;         /* [nslots] CLOCK reference bits */
    unsigned char *data;  /* [nslots, stride] */
    uint64_t hits, misses, evictions;
    uint64_t gen;         /* bumped by every update, under mu */
} rk_cache_shard;

typedef struct {
    int n_shards, shard_shift;
    size_t row_bytes, stride;
    rk_cache_shard *shards;
    size_t bytes; /* allocated */
    uint64_t slots;
} rk_cache;

/* Bytes one cached row costs (slot + index share + reference bit). */
size_t rk_cache_bytes_per_row(size_t row_bytes);
/* slots = 0 gives an empty cache that never hits. */
rk_status rk_cache_init(rk_cache *c, uint64_t slots, int n_shards, size_t row_bytes, rk_err *err);
void rk_cache_free(rk_cache *c);

static inline uint64_t rk_cache_hash(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}
static inline rk_cache_shard *rk_cache_shard_of(const rk_cache *c, uint64_t h) {
    return &c->shards[c->shard_shift >= 64 ? 0 : (h >> c->shard_shift)];
}
static inline uint32_t rk_cache_home(const rk_cache_shard *sh, uint64_t h) {
    return (uint32_t)(((h & 0xffffffffu) * (uint64_t)sh->icap) >> 32);
}
/* Look up keys[0..n): for each keys[i] found, decode its row into
 * out[i * dim .. ) and set hit[i] = 1 (else hit[i] = 0, out untouched).
 * Keys are grouped by shard in chunks of RK_CACHE_BATCH_CHUNK, one lock per
 * shard and chunk. Returns the number of hits. */
#define RK_CACHE_BATCH_CHUNK 512
size_t rk_cache_get_batch(rk_cache *c, const uint64_t *keys, size_t n, rk_codec codec, int dim, float *out,
                          unsigned char *hit);
/* Insert key's encoded row unless the shard's generation differs from gen
 * (an update raced with the read that produced row) or key is present. */
void rk_cache_fill(rk_cache *c, uint64_t key, const void *row, const uint64_t *gens);
/* Record each shard's generation (gens[n_shards]) before reading RocksDB. */
void rk_cache_gens(rk_cache *c, uint64_t *gens);
/* After a durable update: overwrite key's row if cached, bump the generation. */
void rk_cache_update(rk_cache *c, uint64_t key, const void *row);
void rk_cache_stats(rk_cache *c, uint64_t *hits, uint64_t *misses, uint64_t *evictions, uint64_t *entries);

/* ---------------------------------------------------------------- the store's own types
 * (store.c; the Redis tier in redis_tier.c reads them too) */
#define RK_STORE_NAME_MAX 64

typedef struct {
    char name[RK_STORE_NAME_MAX];
    int dim;
    rk_codec codec;
    uint64_t rows;
    int has_oov;
    int keyed; /* rows stored under sparse keys (rk_store_write_keyed), not 0..rows-1 */
} rk_meta_table;

typedef struct {
    rk_meta_table m;
    size_t row_bytes;
    float *oov; /* [dim] decoded default row, NULL = zeros */
    unsigned char *oov_raw; /* [row_bytes] the default row as stored (published to Redis as is), or NULL */
    rocksdb_column_family_handle_t *cf;
    rk_cache cache;
    atomic_uint_fast64_t lookups, unknown, db_reads, updates;
    atomic_uint_fast64_t redis_reads, redis_failed, redis_defaulted, stream_updates;
    uint16_t rslot[RK_REDIS_GROUPS]; /* Redis slot of each hash-tag group (attached stores) */
} rk_store_table;

typedef struct rk_tier rk_tier; /* redis_tier.c: the attached cluster, poller, lease */

struct rk_store {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_cache_t *bcache;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo;
    rocksdb_column_family_handle_t **all_cf; /* every CF opened (for destroy) */
    int n_all;
    int n_tables;
    rk_store_table *tabs;
    rk_store_opts o;
    pthread_mutex_t wmu; /* serializes rk_store_apply */
    /* db and the column family handles change only in reopen_db, under
     * dbmu held exclusively; RocksDB reads hold it shared */
    pthread_rwlock_t dbmu;
    int write_failed;    /* a write failed (or the writable open did): the next apply reopens first */
    atomic_int refs;     /* used by rk_store_live */
    int delete_dir;      /* rm -rf path when the last reference goes */
    rk_tier *tier;       /* NULL: no Redis tier */
    char remote[64];     /* non-empty: a version that lives only in the cluster under this
                            prefix (rk_store_open_redis): no RocksDB (db NULL), no fallback */
    char path[512];
};

/* meta text of tables (store.c): "rankd-store 1\ntable NAME DIM CODEC ROWS OOV KEYED\n..."; rk_free it. */
char *rk_store_meta_format(const rk_meta_table *mt, int n);
rk_status rk_store_meta_parse(const char *v, size_t vl, const char *path, rk_meta_table **out, int *n_out, rk_err *err);
void rk_store_be64(unsigned char k[8], uint64_t v);
void rk_store_default_row(const rk_store_table *tb, float *dst);
/* Split the cache budget across s's tables (store.c). */
rk_status rk_store_setup_caches(rk_store *s, rk_err *err);
/* RK_EINVAL naming what (a directory or prefix) when opts are out of range. */
rk_status rk_store_check_opts(const char *what, const rk_store_opts *opts, rk_err *err);
/* An empty handle for rk_store_open_redis: locks initialized, one reference, options copied. */
rk_store *rk_store_alloc(const rk_store_opts *opts);

/* The Redis tier (redis_tier.c). Lookup: resolve kp[0..m) (sorted by row,
 * duplicates adjacent) from Redis into out; returns how many entries remain
 * for RocksDB (compacted to the front of kp, order kept); *unknown grows by
 * the keys answered with the default row as unknown. */
typedef struct {
    uint64_t row;
    size_t pos;
} rk_keypos;
size_t rk_tier_get(rk_store *s, rk_store_table *tb, rk_keypos *kp, size_t m, float *out, const uint64_t *gens,
                   size_t *unknown);
/* Write encoded rows to Redis (+ WAIT) and the update stream. */
rk_status rk_tier_apply(rk_store *s, rk_store_table *tb, const uint64_t *rows, size_t n, const unsigned char *enc,
                        rk_err *err);
void rk_tier_detach(rk_store *s);

/* ---------------------------------------------------------------- Redis (redis.c) */
#define RK_REDIS_SLOTS 16384
enum { RK_REDIS_GET = 0, RK_REDIS_SET = 1, RK_REDIS_DEL = 2 /* UNLINK; state FOUND when done */ };
enum { RK_REDIS_FOUND = 1, RK_REDIS_ABSENT = 0, RK_REDIS_FAILED = -1, RK_REDIS_BADLEN = -2 };

/* One key of a batch. GET: out[cap] receives the value when it is exactly
 * cap bytes (state FOUND), ABSENT when the key does not exist, BADLEN when
 * it has another length. SET: val[vlen] written, state FOUND once the
 * master and the WAITed replicas acknowledged it. FAILED: not answered. */
typedef struct {
    const char *key;
    size_t klen;
    uint16_t slot;     /* rk_redis_slot(key, klen), computed by the caller */
    const void *val;
    size_t vlen;
    void *out;
    size_t cap;
    int state;
} rk_redis_item;

/* CRC16 (XMODEM) and the cluster slot of a key (its {hash tag} if any). */
uint16_t rk_redis_crc16(const void *buf, size_t len);
uint16_t rk_redis_slot(const char *key, size_t len);
/* Run a batch (op RK_REDIS_GET / RK_REDIS_SET; SET: WAIT wait_replicas per
 * master when > 0) before deadline (rk_now() seconds). RK_OK when every
 * item was answered; else RK_EIO / RK_EDEADLINE naming the first failure,
 * the other items answered as their state says. */
rk_status rk_redis_run(rk_redis *r, int op, rk_redis_item *it, size_t n, int wait_replicas, double deadline,
                       rk_err *err);
/* One command to the master of slot (one MOVED / ASK followed); returns a
 * hiredis redisReply * (free with rk_redis_reply_free) or NULL with err. */
void *rk_redis_command(rk_redis *r, uint16_t slot, int argc, const char **argv, const size_t *lens, double deadline,
                       rk_err *err);
/* One command to the node at "HOST:PORT". */
void *rk_redis_command_at(rk_redis *r, const char *addr, int argc, const char **argv, const size_t *lens,
                          double deadline, rk_err *err);
void rk_redis_reply_free(void *reply);
/* Addresses "HOST:PORT" of the masters in the current slot map; returns their count. */
int rk_redis_masters(rk_redis *r, char addrs[][64], int cap);
const rk_redis_opts *rk_redis_options(const rk_redis *r);
/* Add to the client's default_rows / stream_updates counters (the tier's). */
void rk_redis_count(rk_redis *r, uint64_t default_rows, uint64_t stream_updates);

#endif /* RK_STORE_INTERNAL_H */
