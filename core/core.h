/*
 * core/core.h — the whole interface of rankd's core module.
 *
 * Everything the other modules share and that knows nothing of ranking:
 * status codes and error messages, logging, allocation (with fault
 * injection for tests), hashing (xxHash), a deterministic RNG, wall clock,
 * small file-system helpers, safetensors I/O and a progress bar.
 *
 * Errors: every fallible function returns rk_status (RK_OK == 0, negative on
 * failure) and, when the caller passes a non-NULL rk_err, a message in a
 * fixed buffer that names the thing that was wrong (file, row, column, field).
 * Reporting an error never allocates.
 */
#ifndef RK_CORE_H
#define RK_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---------------------------------------------------------------- status */

/* X-macro list: name, value, text. Values are never renumbered. */
#define RK_STATUS_LIST(X)                                                   \
    X(RK_OK, 0, "ok")                                                       \
    X(RK_EINVAL, -1, "invalid argument")                                    \
    X(RK_EIO, -2, "I/O error")                                              \
    X(RK_ENOMEM, -3, "out of memory")                                       \
    X(RK_ENOTFOUND, -4, "not found")                                        \
    X(RK_EFORMAT, -5, "bad format")                                         \
    X(RK_EVERSION, -6, "unsupported version")                               \
    X(RK_ESHAPE, -7, "shape mismatch")                                      \
    X(RK_ETOOBIG, -8, "resource exhausted")                                 \
    X(RK_EEXIST, -9, "already exists")                                      \
    X(RK_EINTERNAL, -10, "internal error")                                  \
    X(RK_EDEADLINE, -11, "deadline exceeded")                               \
    X(RK_ENUMERIC, -12, "non-finite number")                                \
    X(RK_ECANCELED, -13, "cancelled")

typedef enum {
#define RK_X_ENUM(name, val, text) name = val,
    RK_STATUS_LIST(RK_X_ENUM)
#undef RK_X_ENUM
} rk_status;

/* Static text for a status code ("invalid argument", ...). Never NULL. */
const char *rk_status_str(rk_status s);

/* Error message buffer, embedded by the caller; never heap-allocated. */
typedef struct {
    rk_status code;
    char msg[256];
} rk_err;

/* Fill err (may be NULL) with a printf-style message and return code. */
rk_status rk_fail(rk_err *err, rk_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "ctx: old message". Returns err->code. */
rk_status rk_err_prefix(rk_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Abort with file and line when a programmer invariant is broken. */
#define RK_ASSERT(cond)                                                     \
    do {                                                                    \
        if (!(cond)) rk_assert_fail(#cond, __FILE__, __LINE__);             \
    } while (0)
void rk_assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

/* ---------------------------------------------------------------- logging */

typedef enum { RK_LOG_DEBUG = 0, RK_LOG_INFO, RK_LOG_WARN, RK_LOG_ERROR } rk_log_level;

/* Threshold from env RK_LOG_LEVEL (debug|info|warn|error), default info.
 * Lines go to stderr as "PROG I 2026-11-29T09:00:00.123Z message", PROG
 * being the name set by rk_log_set_program ("rankd" until then). */
void rk_log(rk_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Name that prefixes log lines (kept by pointer: pass a string literal or
 * argv[0]-lifetime string). Each tool sets its own so that interleaved
 * logs of `rank` and `rankd` can be told apart. NULL or "" restores "rankd". */
void rk_log_set_program(const char *name);
/* "debug" | "info" | "warn" | "error" -> *out; -1 for anything else. */
int rk_log_parse_level(const char *s, rk_log_level *out);
/* Threshold (overrides RK_LOG_LEVEL) and format: on != 0 writes each line
 * as one JSON object {"ts","level","program","msg"} (jansson). Call at
 * start-up, before other threads log. */
void rk_log_set_level(rk_log_level lvl);
void rk_log_set_json(int on);
/* Would a line at lvl be written? (skip building costly messages) */
int rk_log_enabled(rk_log_level lvl);
#define rk_info(...) rk_log(RK_LOG_INFO, __VA_ARGS__)
#define rk_warn(...) rk_log(RK_LOG_WARN, __VA_ARGS__)
#define rk_error(...) rk_log(RK_LOG_ERROR, __VA_ARGS__)
#define rk_debug(...) rk_log(RK_LOG_DEBUG, __VA_ARGS__)

/* Log OpenBLAS' configuration and chosen kernel (openblas_get_corename()).
 * Every program calls this once at start-up (c-stack.md §5). */
void rk_log_blas_info(void);

/* ---------------------------------------------------------------- memory */

/* All allocation goes through these so tests can fail the N-th call.
 * rk_malloc(0) returns a valid unique pointer. Free with rk_free. */
void *rk_malloc(size_t n);
void *rk_calloc(size_t count, size_t size);
void *rk_realloc(void *p, size_t n);
char *rk_strdup(const char *s);
void rk_free(void *p);
/* Test hook: the n-th allocation from now (1-based) and all later ones fail;
 * n = 0 switches failure injection off. */
void rk_alloc_fail_after(long n);

/* ---------------------------------------------------------------- hashing */

/* xxh64 of bytes with a seed. */
uint64_t rk_hash64(const void *data, size_t len, uint64_t seed);

/* Row of a hashed embedding table: xxh64(name "\x1f" value, seed 0) mod
 * table_size. The random-hashing baseline (Zheng et al. 2025, §3 "random
 * hashing"); table_size > 0. */
uint64_t rk_feature_row(const char *feature, const char *value, size_t value_len,
                        uint64_t table_size);

/* ---------------------------------------------------------------- string map */

/* Name -> int map (open addressing over xxh64, keys copied), for lookups by
 * name that must not scan: feature names in requests and data headers,
 * column names of a data file. Grows as needed; no deletion. */
typedef struct rk_strmap rk_strmap;
/* A map sized for about n keys (it grows past that). NULL when out of memory. */
rk_strmap *rk_strmap_create(size_t n);
void rk_strmap_destroy(rk_strmap *m);
/* Key s[len] (need not be NUL-terminated) -> value. RK_EEXIST (value kept)
 * when the key is already there, RK_ENOMEM. */
rk_status rk_strmap_put(rk_strmap *m, const char *s, size_t len, int value);
/* Value of key s[len], or -1 when absent. */
int rk_strmap_get(const rk_strmap *m, const char *s, size_t len);
size_t rk_strmap_count(const rk_strmap *m);

/* ---------------------------------------------------------------- RNG */

/* xoshiro256** seeded through splitmix64; explicit seeds everywhere. */
typedef struct { uint64_t s[4]; } rk_rng;
void rk_rng_seed(rk_rng *r, uint64_t seed);
uint64_t rk_rng_next(rk_rng *r);
/* Uniform in [0, 1). */
double rk_rng_uniform(rk_rng *r);
/* Standard normal (Box-Muller). */
double rk_rng_normal(rk_rng *r);
/* Uniform integer in [0, n). */
uint64_t rk_rng_below(rk_rng *r, uint64_t n);

/* ---------------------------------------------------------------- time */

/* Monotonic seconds. */
double rk_now(void);

/* ---------------------------------------------------------------- files */

/* Read a whole file into a NUL-terminated heap buffer (rk_free it).
 * *len receives the size without the NUL. Errors name the path. */
rk_status rk_read_file(const char *path, char **out, size_t *len, rk_err *err);
/* Same for a text file (TSV, a list of paths): a leading UTF-8 byte order
 * mark is dropped, and a NUL byte anywhere is refused (RK_EFORMAT) naming
 * its row (line, the header being row 1), tab-separated column (number and
 * header name) and byte, so that line splitting on the NUL-terminated
 * buffer never stops early at one. Every TSV reader reads through it. */
rk_status rk_read_text(const char *path, char **out, size_t *len, rk_err *err);
/* Write a whole file and fsync it (not atomic; see rk_write_file_atomic).
 * A full disk (ENOSPC on write or fsync) is RK_ETOOBIG, other errors RK_EIO. */
rk_status rk_write_file(const char *path, const void *data, size_t len, rk_err *err);
/* The one "write temp, fsync, rename, fsync the folder" of the project:
 * write_tmp(ctx, TMP) writes the whole content to TMP = PATH.tmp-PID (a
 * writer that fsyncs, as rk_write_file and the safetensors writer do); then
 * TMP is renamed over PATH and PATH's folder fsync'd. On any failure TMP is
 * removed and PATH keeps its old content (or stays absent). A writer that
 * dies leaves PATH.tmp-PID, which rk_sweep_dead_writers removes. A PATH that
 * is a device, FIFO or symbolic link is written through in place (never
 * replaced by a regular file: --output /dev/stdout, a link to elsewhere). */
rk_status rk_publish_file(const char *path, rk_status (*write_tmp)(void *ctx, const char *tmp, rk_err *err), void *ctx,
                          rk_err *err);
/* rk_publish_file of data[len]. */
rk_status rk_write_file_atomic(const char *path, const void *data, size_t len, rk_err *err);
/* Test hook: the n-th rk_write_file from now (1-based) and every later one
 * fail in their first write(2) with errnum (0: ENOSPC); n = 0 switches it off. */
void rk_write_fail_after(long n, int errnum);
/* mkdir -p. */
rk_status rk_mkdir_p(const char *path, rk_err *err);
/* rm -rf; missing path is not an error. */
rk_status rk_rm_rf(const char *path, rk_err *err);
/* fsync a directory so a rename inside it is durable. */
rk_status rk_fsync_dir(const char *path, rk_err *err);
int rk_path_exists(const char *path);
int rk_is_dir(const char *path);
/* 1 when both paths exist and name the same file (same device and inode,
 * through links), else 0: an output that is one of the inputs is refused
 * before anything is written. */
int rk_same_file(const char *a, const char *b);
/* The folder holding path, into out[cap]: "a/b/c" -> "a/b", "/c" -> "/",
 * "c" -> ".". Text only (no file system access). */
void rk_path_parent(const char *path, char *out, size_t cap);
/* Clean up after writers that died. Writers here publish PATH by writing
 * PATH.tmp-PID and renaming it in (a bundle also moves the previous one to
 * PATH.old-PID first). For each such sibling of PATH whose PID no longer
 * exists (never this process's, never a live one's): PATH.tmp-PID is
 * removed; PATH.old-PID is renamed back to PATH when restore_old is set and
 * PATH is missing (a publish that died between its two renames), else
 * removed. Each action is logged as a warning prefixed with `what`. Best
 * effort: errors are ignored. */
void rk_sweep_dead_writers(const char *path, int restore_old, const char *what);

/* ---------------------------------------------------------------- numbers */

/* The one strict number parser of every tool's options: the whole text must
 * be the number (no empty text, no surrounding space, no trailing text: an
 * integer option given "2.5" is refused), within [lo, hi]. Errors name
 * `what` (the option, e.g. "--candidates") and the text:
 *   "--candidates: expected an integer in 1..100000, got '2.5'". */
rk_status rk_parse_int(const char *what, const char *text, long long lo, long long hi, long long *out, rk_err *err);
rk_status rk_parse_u64(const char *what, const char *text, uint64_t *out, rk_err *err);
/* Finite only. */
rk_status rk_parse_double(const char *what, const char *text, double lo, double hi, double *out, rk_err *err);

/* ---------------------------------------------------------------- text */

/* In-place line splitting of a NUL-terminated buffer: returns the line at
 * *cursor (its '\n' and a trailing '\r' replaced by NUL) and advances the
 * cursor; NULL at the end of the buffer. */
char *rk_next_line(char **cursor);
/* In-place split of a line at tabs: fields[0..min(n, max)) point into line;
 * returns the number of fields n (which may exceed max). */
int rk_split_tabs(char *line, char **fields, int max);

/* ---------------------------------------------------------------- delimited records */

/* The one reader of delimiter-separated records (core/dsv.c): CSV per RFC
 * 4180 (quotes = 1: "..." fields, "" inside them, CRLF or LF) or a plain
 * delimited log (quotes = 0: '"' is an ordinary character, as in Criteo's
 * TSV). Reads a NUL-terminated buffer in place: each field is unquoted and
 * NUL-terminated where it lies. A record ends at LF or CRLF (a quoted field
 * may span lines). */
typedef struct {
    char *s; /* NUL-terminated in place */
    size_t len;
} rk_dsv_field;
typedef struct {
    const char *file;        /* name used in messages */
    const char *const *cols; /* column names used in messages (NULL: numbers) */
    int ncols;
    char *p, *end;           /* unread input */
    size_t row;              /* 1-based number of the last record read */
    char delim;              /* ',' or '\t', ... */
    int quotes;              /* 1: RFC 4180 quoting */
} rk_dsv_reader;
/* Skip a UTF-8 byte-order mark at the reader's position. */
void rk_dsv_skip_bom(rk_dsv_reader *r);
/* The next record: up to max fields into f, *nf = the record's field count
 * (may exceed max). Returns 1 with a record, 0 at the end, or a negative
 * rk_status (RK_EFORMAT naming file, row and column: unterminated quote,
 * text after a closing quote, '"' inside an unquoted field, a NUL byte). */
int rk_dsv_next(rk_dsv_reader *r, rk_dsv_field *f, int max, int *nf, rk_err *err);
/* The header record (a UTF-8 BOM skipped first): exactly r->cols in order
 * (r->ncols <= 32). RK_EFORMAT "FILE: empty file, expected a header row",
 * "FILE row 1, column K: bad header: expected 'X', got 'Y'" or "FILE row 1:
 * bad header: expected N columns, got M". */
rk_status rk_dsv_header(rk_dsv_reader *r, rk_err *err);
/* Column k's name for messages: cols[k], else its 1-based number in tmp. */
const char *rk_dsv_col_name(const rk_dsv_reader *r, int k, char tmp[16]);
/* Records in [p, end) without parsing them (newlines outside quotes; a last
 * record without a newline counts). */
size_t rk_dsv_count(const char *p, const char *end, char delim, int quotes);

/* ---------------------------------------------------------------- safetensors */

/* Writer: collects float32 tensors, then writes one safetensors file
 * (8-byte little-endian header length, JSON header, raw little-endian data)
 * readable by the Python `safetensors` package and PyTorch. Also int64.
 * Tensors are borrowed: the data must stay valid until rk_st_writer_write. */
typedef struct rk_st_writer rk_st_writer;
/* The writer stores xxh64 of the header (canonical JSON without this key)
 * followed by the data section (16 hex digits) under this metadata key; the
 * reader verifies it when present, so an edited header is caught too. Files
 * of older rankd writers carry RK_ST_DATA_CHECKSUM_KEY (the data alone),
 * still verified and read; files from other writers have neither and are
 * read as they are. The reader also refuses duplicate tensor names and
 * tensors whose byte ranges overlap. */
#define RK_ST_CHECKSUM_KEY "rankd.xxh64"
#define RK_ST_DATA_CHECKSUM_KEY "rankd.data_xxh64"
rk_status rk_st_writer_create(rk_st_writer **out, rk_err *err);
/* name: copied; shape: up to 4 dims; data: n = prod(shape) floats, borrowed. */
rk_status rk_st_writer_add_f32(rk_st_writer *w, const char *name, const float *data,
                               int ndim, const int64_t *shape, rk_err *err);
/* Same for an int64 tensor (dtype "I64"), e.g. ids beside embeddings. */
rk_status rk_st_writer_add_i64(rk_st_writer *w, const char *name, const int64_t *data, int ndim,
                               const int64_t *shape, rk_err *err);
/* metadata: optional string key/value pair stored in "__metadata__". */
rk_status rk_st_writer_add_meta(rk_st_writer *w, const char *key, const char *value,
                                rk_err *err);
rk_status rk_st_writer_write(rk_st_writer *w, const char *path, rk_err *err);
void rk_st_writer_destroy(rk_st_writer *w);

/* Reader: reads the whole file; validates the header (length, JSON, dtype,
 * offsets inside the data section, byte count = shape). Owns its buffer. */
typedef struct rk_st_file rk_st_file;
rk_status rk_st_open(const char *path, rk_st_file **out, rk_err *err);
void rk_st_close(rk_st_file *f);
size_t rk_st_count(const rk_st_file *f);
const char *rk_st_name(const rk_st_file *f, size_t i);
/* Look up a float32 tensor by name. Returns RK_ENOTFOUND if absent,
 * RK_EFORMAT if the dtype is not F32. *data points into the file buffer,
 * valid until rk_st_close. It is 4-byte aligned only when the header length
 * is (rankd's writer and the safetensors package pad it to 8); otherwise
 * read through memcpy, as rk_st_read_f32 does. */
rk_status rk_st_get_f32(const rk_st_file *f, const char *name, const float **data,
                        int *ndim, int64_t shape[4], rk_err *err);
/* Same, but also checks the shape equals want[0..want_ndim) and copies the
 * data into dst (prod(want) floats). Errors name the tensor and both shapes. */
rk_status rk_st_read_f32(const rk_st_file *f, const char *name, float *dst, int want_ndim,
                         const int64_t *want, rk_err *err);
/* Rank and shape of tensor `name` (any dtype); RK_ENOTFOUND if absent. */
rk_status rk_st_shape(const rk_st_file *f, const char *name, int *ndim, int64_t shape[4], rk_err *err);
/* Copy int64 tensor `name` (dtype I64, exactly n values, any shape) into
 * dst. RK_ENOTFOUND if absent, RK_EFORMAT if not I64, RK_ESHAPE if the count
 * differs. */
rk_status rk_st_read_i64(const rk_st_file *f, const char *name, int64_t *dst, size_t n, rk_err *err);
/* Metadata value, or NULL. */
const char *rk_st_meta(const rk_st_file *f, const char *key);

/* ---------------------------------------------------------------- progress */

/* A progress line on stderr: "label  45.0% 36000/80000  23.4k ex/s  eta 2s".
 * Redrawn in place (\r) at most 10 times a second on a terminal; on a
 * non-terminal one line every 5 seconds. total may be 0 (unknown). */
typedef struct {
    const char *label;
    const char *unit;
    uint64_t total, done;
    double t0, last;
    int tty;
    int printed;
} rk_progress;
void rk_progress_start(rk_progress *p, const char *label, const char *unit, uint64_t total);
void rk_progress_add(rk_progress *p, uint64_t n);
/* Final line with the rate; newline-terminated. */
void rk_progress_finish(rk_progress *p);

#endif /* RK_CORE_H */
