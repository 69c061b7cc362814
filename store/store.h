/*
 * store/store.h — the whole interface of rankd's embedding store.
 *
 * A store is one RocksDB database holding embedding tables, one column
 * family per table. Key: the row number as 8 bytes big-endian (so byte order
 * equals numeric order); value: dim float32 little-endian (the fp32 row
 * codec; fp16 and row-wise int8 come with the store issue).
 *
 * Writing: rk_store_write builds a NEW database directory from in-memory
 * tables (fails if the directory exists), one write batch per chunk of rows,
 * then flushes and closes it so the directory is complete on return.
 * Reading: rk_store_open opens read-only (many readers, no LOCK); lookups
 * are batched with RocksDB's batched MultiGet per table. A row absent from
 * the table reads as zeros and is counted as a miss (lookups never insert).
 * store/ knows nothing of models.
 */
#ifndef RK_STORE_H
#define RK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef struct {
    const char *name;   /* column family name */
    int dim;            /* floats per row */
    uint64_t rows;      /* number of rows */
    const float *data;  /* [rows, dim], borrowed */
} rk_table_spec;

/* Create a RocksDB database at dir holding the tables (dir must not exist).
 * Rows that are all zero are still written, so every row in [0, rows) is
 * present. Errors: RK_EEXIST, RK_EIO with RocksDB's message. */
rk_status rk_store_write(const char *dir, const rk_table_spec *tables, int n_tables, rk_err *err);

typedef struct rk_store rk_store;

/* Open read-only and bind the given tables (column families) in order;
 * table i of the handle is names[i]. Each table's dim is checked on first
 * read: a value of the wrong size is RK_EFORMAT naming the table and row.
 * Errors: RK_ENOTFOUND (no database / missing column family, named),
 * RK_EIO / RK_EFORMAT (RocksDB says corrupt). */
rk_status rk_store_open(const char *dir, const char *const *names, const int *dims, int n_tables,
                        rk_store **out, rk_err *err);
void rk_store_close(rk_store *s);

/* Fetch rows[0..n) of table t into out[n, dim] (dim of table t). Keys must
 * be distinct for efficiency but duplicates are allowed. Thread-safe.
 * *n_missing (may be NULL) receives how many keys were absent (zero rows).
 * Allocation: RocksDB's own; rankd allocates nothing here when n <= 512. */
rk_status rk_store_get(rk_store *s, int t, const uint64_t *rows, size_t n, float *out,
                       size_t *n_missing, rk_err *err);

/* Lifetime counters (atomic): lookups and misses over all tables. */
void rk_store_counters(const rk_store *s, uint64_t *lookups, uint64_t *misses);

#endif /* RK_STORE_H */
