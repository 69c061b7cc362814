/*
 * store/store.h — the whole interface of rankd's embedding store.
 *
 * A store is one RocksDB database directory holding embedding tables, one
 * column family per table, plus a metadata record in the default column
 * family ("rankd.store.meta": format version, and per table its name, dim,
 * row codec, row count, default row). A RocksDB directory without that
 * record is refused as foreign.
 *
 * Rows. Key: the row number as 8 bytes big-endian (byte order = numeric
 * order); value: the row encoded by the table's codec (rk_codec below):
 * fp32 (dim float32 LE), fp16 (dim IEEE half LE) or row-wise int8 (dim
 * uint8, then float32 scale and float32 bias, as FBGEMM's fused 8-bit
 * rowwise format). Lookups always decode into float32.
 *
 * Writing (bulk load): rk_store_write[_ex] builds one SST file per table
 * with RocksDB's SstFileWriter and ingests it (no row-by-row puts), inside
 * DIR.tmp-PID, then renames that into DIR. A published directory is a
 * version: it is never rewritten by a later publish (a new version is a new
 * directory); rk_store_live switches readers between versions atomically and
 * deletes an old one only when the last reader releases it.
 *
 * Reading: rk_store_get serves a batch: a sharded CLOCK RAM cache of
 * encoded rows first, then one RocksDB batched MultiGet for the distinct
 * misses. Lookups never insert a key into a table; an id absent from the
 * table gets the table's default row (zeros, or the out-of-vocabulary row
 * given at write time) and counts in the "unknown" counter. Rows of unknown
 * ids are not cached; an id >= the table's rows is answered without reading
 * RocksDB (a table holds every row of [0, rows)).
 *
 * Online updates: rk_store_apply writes a batch of rows through the WAL
 * (fsync'd before it returns), on a store opened writable. Once it returns
 * RK_OK the update survives kill -9; readers see the old or the new row,
 * never a mix. A full disk is not fatal: the write fails with RK_ETOOBIG
 * ("No space left on device"), reads go on serving the acknowledged rows,
 * and since RocksDB refuses every write after a failed one, the next
 * rk_store_apply first reopens the database in place (writable again once
 * space is freed). A writable open on a full disk opens read-only instead
 * (with a warning) and updates resume the same way. RocksDB's info log is
 * silenced (its logger aborts Debian's build after a failed write).
 *
 * Errors: RocksDB errors become status codes with RocksDB's message
 * (Corruption -> RK_EFORMAT, IO error -> RK_EIO, disk full -> RK_ETOOBIG), never
 * crashes. store/ knows nothing of models.
 */
#ifndef RK_STORE_H
#define RK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

/* Largest magnitude an embedding value written by rk_store_apply may have. */
#define RK_STORE_MAX_ABS 1e6f


/* ---------------------------------------------------------------- codecs */

typedef enum {
    RK_CODEC_FP32 = 0, /* dim * 4 bytes, exact */
    RK_CODEC_FP16 = 1, /* dim * 2 bytes, IEEE binary16, round to nearest even */
    RK_CODEC_INT8 = 2, /* dim + 8 bytes: q[dim] uint8, scale f32, bias f32; x = q*scale + bias */
} rk_codec;

/* "fp32" / "fp16" / "int8". */
const char *rk_codec_name(rk_codec c);
/* Parse a codec name; RK_EINVAL naming the bad text. */
rk_status rk_codec_parse(const char *name, rk_codec *out, rk_err *err);
/* Bytes of one encoded row of dim floats. */
size_t rk_codec_row_bytes(rk_codec c, int dim);
/* Encode x[dim] into out[rk_codec_row_bytes]. Non-finite input is the
 * caller's problem (int8 would give NaN scale). int8 (FBGEMM's
 * FloatToFused8BitRowwiseQuantized): bias = min, scale = (max-min)/255
 * (1 if max == min), q = round((x - min) * 255 / (max - min + 1e-8)).
 * Error bounds: fp16 |x - x'| <= 2^-11 |x| for |x| in the normal range
 * (>= 2^-14) and <= 2^-25 below; int8 |x - x'| <= scale/2 + 1e-8 + 1e-6*max|x|
 * (the 1e-8 is FBGEMM's epsilon in the inverse scale). */
void rk_codec_encode(rk_codec c, const float *x, int dim, void *out);
/* Decode in[rk_codec_row_bytes] into out[dim]. */
void rk_codec_decode(rk_codec c, const void *in, int dim, float *out);

/* ---------------------------------------------------------------- writing */

typedef struct {
    const char *name;   /* column family name */
    int dim;            /* floats per row */
    uint64_t rows;      /* number of rows */
    const float *data;  /* [rows, dim], borrowed */
} rk_table_spec;

/* Per-table write options (zero-initialized = fp32, zero default row). */
typedef struct {
    rk_codec codec;
    const float *oov_row; /* [dim] default row for unknown ids, or NULL = zeros; borrowed */
} rk_table_opts;

/* Create a store at dir holding the tables in fp32 (dir must not exist).
 * Same as rk_store_write_ex(dir, tables, n_tables, NULL, err). */
rk_status rk_store_write(const char *dir, const rk_table_spec *tables, int n_tables, rk_err *err);

/* Create a store (a version) at dir: every row in [0, rows) of each table is
 * encoded with topts[i].codec (topts may be NULL: fp32), written to one SST
 * file per table and ingested; built in dir.tmp-PID, fsynced, renamed.
 * Errors: RK_EEXIST (dir exists), RK_EINVAL (bad table), RK_EIO / RK_EFORMAT
 * with RocksDB's message, RK_ENOMEM. Nothing is left behind on failure. */
rk_status rk_store_write_ex(const char *dir, const rk_table_spec *tables, int n_tables,
                            const rk_table_opts *topts, rk_err *err);

/* Same as rk_store_write_ex, but table i's rows are stored under the keys
 * keys[i][0..rows) instead of 0..rows-1 (keys == NULL or keys[i] == NULL:
 * dense rows). Keys must be strictly ascending (else RK_EINVAL naming the
 * table and row). A keyed table maps sparse 64-bit ids (e.g. item ids) to
 * rows; lookups of other keys get the default row, as any unknown id. Keyed
 * tables are written whole: rk_store_apply only accepts keys below the
 * table's row count. */
rk_status rk_store_write_keyed(const char *dir, const rk_table_spec *tables, const uint64_t *const *keys,
                               int n_tables, const rk_table_opts *topts, rk_err *err);

/* ---------------------------------------------------------------- opening */

typedef struct rk_store rk_store;

/* Options, plain struct with defaults: rk_store_opts o = RK_STORE_OPTS_DEFAULT; */
typedef struct {
    size_t cache_bytes;       /* RAM row cache budget over all tables, bytes; 0 = none.
                                 Default 64 MiB. Split across tables in proportion to their
                                 size, never more than a table needs. */
    int cache_shards;         /* shards per table (power of two, <= 256), default 64 */
    size_t block_cache_bytes; /* RocksDB LRU block cache, index blocks charged
                                 to it; default 32 MiB */
    int writable;             /* 1: open read-write (takes RocksDB's LOCK) so that
                                 rk_store_apply works; rows are rewritten in place in
                                 the memtable, and the process's RocksDB flush and
                                 compaction threads run at nice 19 from then on
                                 (store.c, writable_options); 0 (default): read-only,
                                 many readers */
    int sync_writes;          /* 1 (default): fsync the WAL before rk_store_apply returns */
    int verify;               /* 1 (default): at open, read every table once with block
                                 checksums verified (block cache not filled) and check its
                                 key count against the metadata, so a corrupt or truncated
                                 SST is refused at open instead of failing the first read
                                 that reaches it. Costs one sequential read of the tables
                                 (~1 s for 256 MB here, bench-store), which also warms the
                                 OS page cache. 0: skip. */
    int mmap_reads;           /* 1: RocksDB reads table files through mmap (allow_mmap_reads):
                                 a row missing the RAM cache cost 3.0 instead of 5.8 us
                                 (bench-store-levers), but a disk read error then arrives as
                                 SIGBUS (the process dies) instead of RK_EIO, and touched file
                                 pages count in RSS. 0 (default): pread. */
    int tier;                 /* 1 (default): attach the process's Redis tier when one is
                                 set (rk_store_set_tier); 0: never */
} rk_store_opts;
#define RK_STORE_OPTS_DEFAULT {(size_t)64 << 20, 64, (size_t)32 << 20, 0, 1, 1, 0, 1}

/* Open read-only with default options and bind the given tables (column
 * families) in order; table i of the handle is names[i], whose dim must
 * equal dims[i]. Same as rk_store_open_ex(dir, names, dims, n, NULL, ...). */
rk_status rk_store_open(const char *dir, const char *const *names, const int *dims, int n_tables,
                        rk_store **out, rk_err *err);

/* Open with options. names == NULL and n_tables == 0 binds every table in
 * the store's metadata order; dims may be NULL (no check).
 * Errors: RK_ENOTFOUND (missing directory, or table '%s' (column family)
 * missing), RK_EFORMAT (not a RocksDB database, a RocksDB database that is
 * not a rankd store, corrupt metadata or files, dim mismatch; with
 * opts.verify a block checksum mismatch or a key count other than the
 * table's rows, naming the table), RK_EVERSION,
 * RK_EIO (RocksDB I/O error, e.g. the LOCK is held by another writer).
 * The handle owns everything; rk_store_close frees it. */
rk_status rk_store_open_ex(const char *dir, const char *const *names, const int *dims, int n_tables,
                           const rk_store_opts *opts, rk_store **out, rk_err *err);
void rk_store_close(rk_store *s);

/* Crash isolation. Debian's librocksdb keeps its assertions, and a few
 * damaged bytes in an SST's properties block (parsed before its checksum is
 * checked, RocksDB 7.8) abort the process: no RocksDB option avoids it.
 * rk_store_set_probe(exe) makes every later rk_store_open_ex first open the
 * store (read-only, no scan) in a child process, exe RK_STORE_PROBE_ARG DIR
 * (posix_spawn, safe in a multithreaded process); if the child dies by a
 * signal the open fails with RK_EFORMAT naming the store and the signal,
 * and this process never touches the files. exe must call
 * rk_store_probe_main first thing in main (tools/rank.c, tools/rankd.c pass
 * "/proc/self/exe"). NULL (the default) turns it off. The child is one
 * process kept across opens (exe RK_STORE_PROBE_SERVE_ARG, stores named to
 * it over its stdin, one at a time), started by the first open and
 * replaced after it dies; rk_store_set_probe ends it (and reaps it).
 * Cost: one RocksDB open in the child, plus one exec for the first open
 * and after a refusal by signal (README, "Store"). */
#define RK_STORE_PROBE_ARG "--rk-store-probe"
#define RK_STORE_PROBE_SERVE_ARG "--rk-store-probe-serve"
void rk_store_set_probe(const char *exe);
/* If argv[1] is RK_STORE_PROBE_ARG: open argv[2] read-only without the scan,
 * close it, return the exit status (0 opened, 1 refused cleanly). If it is
 * RK_STORE_PROBE_SERVE_ARG: the kept checking process (until EOF on stdin;
 * 0). Else -1: not a probe, go on with main. */
int rk_store_probe_main(int argc, char **argv);

typedef struct {
    const char *name;  /* owned by the store */
    int dim;
    rk_codec codec;
    uint64_t rows;     /* rows written at publish time */
    size_t row_bytes;  /* encoded bytes per row */
    int has_oov_row;   /* 1 when unknown ids get a stored OOV row, 0: zeros */
} rk_table_info;

int rk_store_n_tables(const rk_store *s);
void rk_store_table_info(const rk_store *s, int t, rk_table_info *out);
/* Index of a bound table by name, -1 if none. */
int rk_store_find(const rk_store *s, const char *name);

/* ---------------------------------------------------------------- reading */

/* Fetch rows[0..n) of table t into out[n, dim] (float32, decoded).
 * Duplicates are allowed (each distinct miss is read once). Thread-safe.
 * Unknown ids get the table default row; *n_missing (may be NULL) receives
 * how many keys were unknown. Never inserts into the table.
 * Errors: RK_EIO / RK_EFORMAT naming table and row (the other rows are
 * still filled). Allocation: none when at most 512 keys miss the cache. */
rk_status rk_store_get(rk_store *s, int t, const uint64_t *rows, size_t n, float *out,
                       size_t *n_missing, rk_err *err);

/* Lifetime counters (atomic): lookups and unknown ids over all tables. */
void rk_store_counters(const rk_store *s, uint64_t *lookups, uint64_t *misses);

typedef struct {
    uint64_t lookups;          /* keys asked for */
    uint64_t unknown;          /* keys absent from the table (got the default row) */
    uint64_t cache_hits, cache_misses, cache_evictions;
    uint64_t cache_entries;    /* rows cached now */
    uint64_t cache_slots;      /* capacity in rows */
    size_t cache_bytes;        /* bytes the cache allocated (index + keys + rows + bits) */
    size_t cache_row_bytes;    /* encoded row bytes held if full (slots * row_bytes) */
    uint64_t rocksdb_reads;    /* keys read from RocksDB (distinct cache misses) */
    uint64_t updates;          /* rows written by rk_store_apply */
    size_t block_cache_usage;  /* RocksDB block cache bytes in use */
    size_t block_cache_pinned; /* of which pinned */
    uint64_t redis_reads;      /* keys asked of the Redis tier */
    uint64_t redis_failed;     /* of which Redis could not answer (fallback or default row) */
    uint64_t redis_defaulted;  /* of which got the default row (no RocksDB fallback) */
    uint64_t stream_updates;   /* rows refreshed from the update stream */
} rk_store_stats;
/* Stats for table t, or summed over all tables when t < 0. */
void rk_store_stats_get(rk_store *s, int t, rk_store_stats *out);

/* Count the keys of table t by a full scan with checksum verification
 * (slow: for tests and `rank store info --verify`). Errors: RK_EFORMAT on
 * corruption, with RocksDB's message. */
rk_status rk_store_count_keys(rk_store *s, int t, uint64_t *count, rk_err *err);

/* Visit every stored row of table t in key order (checksums verified):
 * fn(ctx, key, row[dim] decoded to float32); a non-zero return stops the
 * scan. Errors: RK_EFORMAT (corrupt record), RK_EIO with RocksDB's message. */
rk_status rk_store_scan(rk_store *s, int t, int (*fn)(void *ctx, uint64_t key, const float *row), void *ctx,
                        rk_err *err);

/* ---------------------------------------------------------------- updates */

/* Apply n row updates to table t: data [n, dim] float32, encoded with the
 * table's codec and written as one atomic write batch through the WAL
 * (fsync'd when opts.sync_writes). RK_OK = acknowledged: durable and
 * visible to later lookups (the cache is updated in place). A row outside
 * [0, rows) is RK_EINVAL (hashed lookups never reach it), a value that is
 * not finite or beyond +-RK_STORE_MAX_ABS is RK_ENUMERIC; both name the
 * update. Store must be writable: else RK_EINVAL. Errors: RK_EIO /
 * RK_EFORMAT with RocksDB's message; then nothing of the batch is
 * acknowledged. Thread-safe (writers serialize). */
rk_status rk_store_apply(rk_store *s, int t, const uint64_t *rows, size_t n, const float *data,
                         rk_err *err);
/* rk_store_apply's checks of rows and data alone, its errors naming the
 * request's fields ("rows[2]: ...", "values[17] (rows[1], column 1): ...")
 * without the store's path (rk_store_apply prefixes it): for a server that
 * answers a remote caller. */
rk_status rk_store_check_update(const rk_store *s, int t, const uint64_t *rows, size_t n, const float *data,
                                rk_err *err);

/* Compact table t's whole key range now (blocks until done), folding online
 * updates into the bottom level. Writable stores only (else RK_EINVAL). */
rk_status rk_store_compact(rk_store *s, int t, rk_err *err);

/* ---------------------------------------------------------------- versions */

/* A live store: the version readers use now. Readers take a reference per
 * request (acquire/release, a short mutex); rk_store_live_switch opens the
 * new version while the old one keeps serving, swaps the pointer under the
 * mutex, and drops the old version's reference: it is closed (and its
 * directory deleted when delete_old) when its last reader releases it. */
typedef struct rk_store_live rk_store_live;

/* Open dir (all tables) as the first version. opts is copied (NULL = defaults). */
rk_status rk_store_live_open(const char *dir, const rk_store_opts *opts, rk_store_live **out,
                             rk_err *err);
/* Switch to the version at dir. Its tables must have the same names, order
 * and dims as the current one (else RK_EINVAL naming the table), so table
 * indices stay valid. On error the old version keeps serving. */
rk_status rk_store_live_switch(rk_store_live *l, const char *dir, int delete_old, rk_err *err);
/* A reference to the current version; never NULL. Release it exactly once. */
rk_store *rk_store_live_acquire(rk_store_live *l);
void rk_store_live_release(rk_store_live *l, rk_store *s);
/* Directory of the current version (copied into buf). */
void rk_store_live_current(rk_store_live *l, char *buf, size_t cap);
/* Drop the live handle's reference (the version closes when no reader holds it). */
void rk_store_live_close(rk_store_live *l);


/* ---------------------------------------------------------------- Redis Cluster tier
 *
 * A shared RAM tier between the RAM cache and RocksDB, on a Redis Cluster
 * (README "Redis Cluster tier", ARCHITECTURE.md). A published version's rows
 * live under the prefix "rk/" + the store's RocksDB IDENTITY (a UUID made
 * when the version was written: one per model version), one key per row:
 *   {rk/ID/TABLE/G}ROW   (ROW decimal, G = ROW % RK_REDIS_GROUPS: the hash
 *                         tag puts a table on RK_REDIS_GROUPS slots, so a
 *                         batch is a few MGETs per master)
 * value = the row in the table's codec (store.h, rk_codec), as in RocksDB.
 * Keys of the version itself: {rk/ID}/ready (the completion marker: the
 * store's metadata text, written last by rk_store_redis_publish),
 * {rk/ID}/load/TABLE (rows loaded so far: a publish resumes from it),
 * {rk/ID}/updates (a stream of online updates), {rk/ID}/lease/OWNER (a
 * replica serving the version; PX RK_REDIS_LEASE_MS, renewed every second).
 *
 * Lookups on an attached store: RAM cache -> Redis (one pipelined round trip
 * per master) -> RocksDB (opts.rocksdb_fallback), never past
 * opts.timeout_ms per lookup; a key Redis cannot answer (node down, failover,
 * timeout) is answered from RocksDB when rocksdb_fallback, else with the
 * table's default row, and counted (rk_store_stats.redis_failed).
 *
 * Updates (rk_store_apply on an attached store) go to Redis first: MSET per
 * slot, then WAIT opts.wait_replicas per master (acknowledged = in the
 * master's memory and in wait_replicas replicas' memory; with the test
 * cluster's one replica per master, losing any one node loses no
 * acknowledged update; every node also appends to its AOF, fsync'd every
 * second), then XADD to the version's update stream; every attached
 * replica reads the stream every opts.poll_ms and refreshes its RAM cache:
 * an update is visible everywhere within poll_ms + one round trip. An
 * update that returns an error was not acknowledged, but some of its rows
 * may have reached some masters (a batch spans several): apply it again.
 */
typedef struct rk_redis rk_redis;

#define RK_REDIS_GROUPS 64
#define RK_REDIS_LEASE_MS 5000

typedef struct {
    int timeout_ms;      /* a lookup's whole Redis budget, and every connect; default 50 */
    int lanes;           /* connection sets (threads using Redis at once), default 8 */
    int wait_replicas;   /* WAIT this many replicas per update batch; default 1 */
    int wait_ms;         /* WAIT timeout; default 1000 */
    int poll_ms;         /* update stream poll period; default 20 */
    int rocksdb_fallback;/* 1 (default): a key Redis cannot answer is read from RocksDB */
    long long cache_bytes; /* >= 0: RAM cache budget of the stores attached through
                              rk_store_set_tier that have a cache (replaces
                              rk_store_opts.cache_bytes); -1 (default): theirs */
    int drop_retired;    /* 1: when a store lets go of its version (close) and a newer
                            version of the version's lineage exists, drop it once no
                            lease holds it (rk_redis_lineage_add); rankd sets it.
                            0 (default): never drop by itself */
} rk_redis_opts;
#define RK_REDIS_OPTS_DEFAULT {50, 8, 1, 1000, 20, 1, -1, 0}

/* Connect to a cluster: seeds "HOST:PORT[,HOST:PORT...]"; reads the slot
 * map (CLUSTER SLOTS) from the first seed that answers. Errors: RK_EINVAL
 * naming the bad address, RK_EIO when no seed gives a slot map. Thread-safe
 * after creation; destroy after every store using it is closed. */
rk_status rk_redis_create(const char *seeds, const rk_redis_opts *opts, rk_redis **out, rk_err *err);
void rk_redis_destroy(rk_redis *r);

typedef struct {
    uint64_t batches, round_trips, redirects, map_refreshes, connects, connect_failures;
    uint64_t failed_items;   /* keys Redis did not answer (then RocksDB or the default row) */
    uint64_t default_rows;   /* keys answered with the default row because Redis failed */
    uint64_t stream_updates; /* cached rows refreshed from update streams */
} rk_redis_stats;
void rk_redis_stats_get(rk_redis *r, rk_redis_stats *out);

/* Load every table of s into the cluster under s's prefix (pipelined MSETs
 * of RK_REDIS_LOAD_ROWS rows, WAIT for replicas per chunk), recording
 * progress per table after each chunk so that a publish interrupted (killed,
 * node down) resumes where it stopped; writes the completion marker last.
 * progress: 1 = a progress line on stderr. *rows_loaded (may be NULL):
 * rows written by this call. Already complete: RK_OK at once. */
#define RK_REDIS_LOAD_ROWS 16384
rk_status rk_store_redis_publish(rk_store *s, rk_redis *r, int progress, uint64_t *rows_loaded, rk_err *err);

/* Attach the cluster to an open store: later lookups go cache -> Redis ->
 * RocksDB. Refused (RK_ENOTFOUND naming the prefix) unless the version's
 * completion marker is present and equals s's metadata: a replica never
 * serves a half-loaded version. Starts the update-stream poller and the
 * lease. The store must not be in use by other threads during the call. */
rk_status rk_store_redis_attach(rk_store *s, rk_redis *r, rk_err *err);
/* The version prefix of s ("rk/" + IDENTITY) into buf. */
void rk_store_redis_prefix(const rk_store *s, char *buf, size_t cap);

/* Delete a version's keys from every master (SCAN + UNLINK). Refused
 * (RK_EEXIST) while any replica holds a lease on it (is serving it):
 * "unused" = no lease key alive. The completion marker goes first (no
 * replica attaches to a version being dropped), the version's entry in its
 * lineage last (an interrupted drop is retried by the next
 * rk_redis_lineage_add). *deleted (may be NULL): keys removed. */
rk_status rk_redis_drop_version(rk_redis *r, const char *prefix, uint64_t *deleted, rk_err *err);

/* Lineages: the versions of one model, oldest to newest, in the sorted set
 * {rk/lineage/NAME} (score: a counter, {rk/lineage/NAME}/seq), the name
 * also under {prefix}/lineage. rk_redis_lineage_add records a completely
 * published prefix as the newest version of lineage (NAME: 1..100 bytes,
 * the caller's choice, e.g. the model's name; publishing an older prefix
 * again makes it the newest: a rollback), then drops every older version
 * that no lease holds (*dropped: how many); a leased one stays and is
 * dropped by the last replica that lets go of it (drop_retired) or by a
 * later publish. A version that is in no lineage is never dropped by
 * itself. Errors: RK_EINVAL (name), RK_EIO; a failed drop is reported
 * after the others were tried. */
rk_status rk_redis_lineage_add(rk_redis *r, const char *lineage, const char *prefix, uint64_t *dropped, rk_err *err);

/* Open a version that lives only in the cluster (a thin bundle: no local
 * tables/): its tables' metadata (names, dims, codecs, rows, keyed) from the
 * completion marker under prefix, default rows from {prefix}/oov/TABLE,
 * then bound and attached as rk_store_open_ex + rk_store_redis_attach do.
 * Lookups: RAM cache -> Redis; a key Redis cannot answer gets the default
 * row (counted as redis_defaulted): there is no RocksDB to fall back to.
 * Updates (rk_store_apply) go to the cluster only. Scans, key counts and
 * compaction are refused (RK_EINVAL). opts: cache_bytes, cache_shards
 * (the cluster's cache_bytes >= 0 replaces cache_bytes as for attached
 * stores); the RocksDB options are ignored. Errors: RK_ENOTFOUND (no
 * completion marker: not (fully) published; a table missing),
 * RK_EFORMAT (bad marker, dim mismatch, default row missing), RK_EIO. */
rk_status rk_store_open_redis(rk_redis *r, const char *prefix, const char *const *names, const int *dims, int n_tables,
                              const rk_store_opts *opts, rk_store **out, rk_err *err);

/* A deadline (rk_now() seconds; 0 = none) for the calling thread's later
 * lookups: their Redis work ends by it, besides opts.timeout_ms per lookup;
 * past it, keys that miss the RAM cache go straight to the fallback. A
 * server sets each request's deadline before handling it on the thread
 * (serve/service.c), so the tables of one request share one budget. */
void rk_store_set_thread_deadline(double deadline);

/* The process-wide tier: every later rk_store_open_ex whose opts.tier is 1
 * attaches r (rk_store_redis_attach) and fails if it cannot. rankd sets it
 * from --redis-cluster. NULL (default) turns it off. Not thread-safe. */
void rk_store_set_tier(rk_redis *r);
/* The process-wide tier, NULL when none. */
rk_redis *rk_store_tier(void);

#endif /* RK_STORE_H */
