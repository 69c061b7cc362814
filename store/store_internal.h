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
} rk_rocks_api;

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

#endif /* RK_STORE_INTERNAL_H */
