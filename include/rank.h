/*
 * rank.h — librankd's public C API: open a model bundle, score one user and
 * N candidate ads in-process, read each candidate's pCTR.
 *
 * This header is the whole of the stable interface of librankd (the shared
 * library exports these functions and nothing else). It is self-contained
 * (standard C headers only), compiles as C99 and as C++, and exposes no
 * internal struct: models, batches and options are opaque handles made and
 * freed by the functions below. The rankd tools use the modules' own headers;
 * this is a thin layer over the same scorer, so a pCTR from here equals the
 * one `rank score` and the rankd server give for the same row (within 1e-6,
 * OpenBLAS summation order).
 *
 *   rankd_model *m; rankd_batch *b; rankd_error e;
 *   if (rankd_model_open("bundle", NULL, &m, &e)) { puts(e.message); ... }
 *   rankd_batch_create(m, &b, &e);
 *   rankd_batch_begin(b, 2, &e);                        2 candidates
 *   const char *uid[] = {"42"};
 *   rankd_batch_user_sparse(b, "user_id", uid, 1, &e);   the user, once
 *   const char *ad0[] = {"1"}, *ad1[] = {"2"};
 *   rankd_batch_candidate_sparse(b, 0, "movie_id", ad0, 1, &e);
 *   rankd_batch_candidate_sparse(b, 1, "movie_id", ad1, 1, &e);
 *   float pctr[2];
 *   rankd_batch_score(b, pctr, &e);
 *   rankd_batch_destroy(b); rankd_model_close(m);
 *
 * Errors: every fallible function returns a rankd_status (RANKD_OK == 0,
 * negative on failure) and, when err is not NULL, fills err with the same
 * code and a message naming what was wrong (file, feature, candidate).
 * Reporting an error never allocates.
 *
 * Threads: a rankd_model is shared by any number of threads once opened
 * (every function taking a const rankd_model * is thread-safe); a
 * rankd_batch belongs to one thread at a time (make one per thread). Each
 * function's comment says so again.
 *
 * Memory: every handle is freed by its own destroy/close function; strings
 * returned by the library are owned by the handle they came from.
 */
#ifndef RANKD_RANK_H
#define RANKD_RANK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- export */

#if defined(RANKD_BUILDING_LIBRARY) && defined(__GNUC__)
#define RANKD_API __attribute__((visibility("default")))
#else
#define RANKD_API
#endif

/* ---------------------------------------------------------------- version */

#define RANKD_VERSION_MAJOR 0
#define RANKD_VERSION_MINOR 1
#define RANKD_VERSION_PATCH 0
#define RANKD_VERSION "0.1.0"
/* 0xMMmmpp: compare with >= in #if */
#define RANKD_VERSION_NUM ((RANKD_VERSION_MAJOR << 16) | (RANKD_VERSION_MINOR << 8) | RANKD_VERSION_PATCH)

/* The version of the library linked at run time ("0.1.0"); compare with
 * RANKD_VERSION to detect a header/library mismatch. Thread-safe. */
RANKD_API const char *rankd_version(void);
/* Same as a number (RANKD_VERSION_NUM of the library). Thread-safe. */
RANKD_API int rankd_version_num(void);

/* ---------------------------------------------------------------- errors */

/* Values are part of the ABI and never renumbered. */
typedef enum {
    RANKD_OK = 0,
    RANKD_EINVAL = -1,     /* invalid argument (unknown feature, bad value, misuse) */
    RANKD_EIO = -2,        /* I/O error reading the bundle */
    RANKD_ENOMEM = -3,     /* out of memory */
    RANKD_ENOTFOUND = -4,  /* missing file, feature or member */
    RANKD_EFORMAT = -5,    /* bundle file malformed */
    RANKD_EVERSION = -6,   /* unsupported bundle format version */
    RANKD_ESHAPE = -7,     /* tensor / embedding shape mismatch */
    RANKD_ETOOBIG = -8,    /* over a size limit (candidates, values per row) */
    RANKD_EEXIST = -9,     /* already exists */
    RANKD_EINTERNAL = -10, /* internal error (a bug: please report it) */
    RANKD_EDEADLINE = -11, /* deadline exceeded */
    RANKD_ENUMERIC = -12,  /* non-finite number */
    RANKD_ECANCELED = -13  /* cancelled */
} rankd_status;

/* Error report, embedded by the caller (e.g. on the stack). */
typedef struct {
    rankd_status code;
    char message[256]; /* NUL-terminated; "" on success */
} rankd_error;

/* Static text of a status ("invalid argument"); never NULL. Thread-safe. */
RANKD_API const char *rankd_status_str(rankd_status s);

/* ---------------------------------------------------------------- options */

/* Options of rankd_model_open and of the batches made from the model.
 * Defaults: max_candidates 1000, max_values_per_row 256, ram_tables_mb 0
 * (embedding rows are read from the bundle's RocksDB tables per batch). */
typedef struct rankd_options rankd_options;

/* NULL when out of memory. Free with rankd_options_destroy. Thread-safe. */
RANKD_API rankd_options *rankd_options_create(void);
/* NULL is a no-op. */
RANKD_API void rankd_options_destroy(rankd_options *o);
/* Candidates per batch, 1..1000000: the batch's buffers are sized for it. */
RANKD_API rankd_status rankd_options_set_max_candidates(rankd_options *o, int n, rankd_error *err);
/* Sparse values of one feature in one row, 1..1000000. */
RANKD_API rankd_status rankd_options_set_max_values_per_row(rankd_options *o, int n, rankd_error *err);
/* Copy every embedding table into RAM at open when they need at most mb
 * MiB in all (0 = never); scores are bit-identical either way. */
RANKD_API rankd_status rankd_options_set_ram_tables_mb(rankd_options *o, size_t mb, rankd_error *err);
/* Functions on one rankd_options are not thread-safe with each other. */

/* ---------------------------------------------------------------- model */

typedef struct rankd_model rankd_model;

/* *_INVALID: what the accessors below return for a feature index out of range. */
typedef enum { RANKD_SIDE_INVALID = -1, RANKD_SIDE_USER = 0, RANKD_SIDE_CANDIDATE = 1 } rankd_side;
typedef enum { RANKD_KIND_INVALID = -1, RANKD_KIND_SPARSE = 0, RANKD_KIND_DENSE = 1 } rankd_kind;

/* Open the bundle directory dir (written by `rank train`) read-only, with
 * opts (NULL = defaults; copied, so it may be destroyed after). On success
 * *out owns the model: close it with rankd_model_close after every batch
 * made from it is destroyed. Errors name the file and what is wrong.
 * Thread-safe (each call opens its own read-only model; open a bundle once
 * and share the model between threads rather than opening it per thread). */
RANKD_API rankd_status rankd_model_open(const char *dir, const rankd_options *opts, rankd_model **out,
                                        rankd_error *err);
/* NULL is a no-op. Not thread-safe with anything using m. */
RANKD_API void rankd_model_close(rankd_model *m);

/* "name/version" of the bundle (owned by m). Thread-safe. */
RANKD_API const char *rankd_model_version(const rankd_model *m);

/* Features, in the model's order, 0 <= i < rankd_model_n_features(m).
 * Names are owned by m. Out-of-range i (or m NULL): NULL, -1 or *_INVALID.
 * Thread-safe. */
RANKD_API int rankd_model_n_features(const rankd_model *m);
RANKD_API const char *rankd_feature_name(const rankd_model *m, int i);
/* Where a request carries it: the user (once) or each candidate. */
RANKD_API rankd_side rankd_feature_side(const rankd_model *m, int i);
RANKD_API rankd_kind rankd_feature_kind(const rankd_model *m, int i);
/* Embedding dimension of a sparse feature, 1 for a dense one. */
RANKD_API int rankd_feature_dim(const rankd_model *m, int i);
/* Index of the feature named name, -1 if the model has none. */
RANKD_API int rankd_model_find_feature(const rankd_model *m, const char *name);

/* CETNet ensembles: number of members (0 for a single model) and member
 * i's name (owned by m; NULL out of range). Thread-safe. */
RANKD_API int rankd_model_n_members(const rankd_model *m);
RANKD_API const char *rankd_model_member_name(const rankd_model *m, int i);

/* ---------------------------------------------------------------- batch */

/* One request's worth of scoring: one user and up to max_candidates
 * candidates. Its buffers are sized at creation (from the options), so a
 * request never grows them. One thread at a time per batch; make one batch
 * per thread. */
typedef struct rankd_batch rankd_batch;

/* Thread-safe (m is only read). *out is freed with rankd_batch_destroy,
 * before m is closed. */
RANKD_API rankd_status rankd_batch_create(const rankd_model *m, rankd_batch **out, rankd_error *err);
/* NULL is a no-op. Not while another thread uses b. */
RANKD_API void rankd_batch_destroy(rankd_batch *b);

/* Start a request of n_candidates candidates (1..max_candidates), every
 * feature unset: an unset sparse feature is an empty bag (zero vector), an
 * unset dense one its training mean. RANKD_ETOOBIG past max_candidates.
 * After a failed set (a bag may be cut short, a value left unset; the
 * failed feature counts as set), rankd_batch_score refuses the request
 * (RANKD_EINVAL quoting the first failure) rather than score what is left:
 * begin again to start over. A failed score keeps the request as it was.
 * This and the batch functions below: not thread-safe on one b (other
 * threads may use other batches of the same model at the same time). */
RANKD_API rankd_status rankd_batch_begin(rankd_batch *b, int n_candidates, rankd_error *err);

/* Set a user-side sparse feature: values[n_values] (NUL-terminated
 * strings, e.g. {"comedy", "drama"}; "" values are skipped, at most the
 * feature's max_values are kept, as in training). Each feature may be set
 * once per request. Errors: RANKD_EINVAL naming the feature (unknown, a
 * candidate-side or dense feature, set twice), RANKD_ETOOBIG (values).
 * Not thread-safe on one b. */
RANKD_API rankd_status rankd_batch_user_sparse(rankd_batch *b, const char *feature, const char *const *values,
                                               size_t n_values, rankd_error *err);
/* Set a user-side dense feature from its raw value (not standardized).
 * RANKD_ENUMERIC for NaN/Inf or a magnitude beyond 1e9. Not thread-safe
 * on one b. */
RANKD_API rankd_status rankd_batch_user_dense(rankd_batch *b, const char *feature, double value,
                                              rankd_error *err);
/* The same for candidate i (0 <= i < n_candidates) and a candidate-side
 * feature. Not thread-safe on one b. */
RANKD_API rankd_status rankd_batch_candidate_sparse(rankd_batch *b, int i, const char *feature,
                                                    const char *const *values, size_t n_values,
                                                    rankd_error *err);
RANKD_API rankd_status rankd_batch_candidate_dense(rankd_batch *b, int i, const char *feature, double value,
                                                   rankd_error *err);

/* Score the request: pctr[n_candidates] gets each candidate's calibrated
 * click probability (an ensemble's fused one). The batch keeps the scores
 * (rankd_batch_member_scores) until the next rankd_batch_begin. Not
 * thread-safe on one b; batches of one model score in parallel. */
RANKD_API rankd_status rankd_batch_score(rankd_batch *b, float *pctr, rankd_error *err);

/* After rankd_batch_score on an ensemble: candidate i's per-member pCTRs
 * and fusion weights, rankd_model_n_members(m) values each (either pointer
 * may be NULL). A single model gives its one pCTR with weight 1 (n = 1).
 * RANKD_EINVAL before a score or for i out of range. Only reads b: safe
 * with other readers of b, not with a thread changing it. */
RANKD_API rankd_status rankd_batch_member_scores(const rankd_batch *b, int i, float *pctr, float *weight,
                                                 rankd_error *err);

#ifdef __cplusplus
}
#endif

#endif /* RANKD_RANK_H */
