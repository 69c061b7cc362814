/*
 * semantic_id/semantic_id.h — the whole interface of rankd's Semantic-ID
 * module (a leaf: depends on core/ only).
 *
 * Semantic IDs (Zheng et al. 2025, papers.md §1; Singh et al. 2023 §2.1):
 * an item's dense content embedding x[D] is quantized by a residual
 * quantizer of L levels with K centroids each into codes (c_1..c_L); the
 * codes, not the raw item id, pick the item's embedding-table rows through a
 * token parameterization (papers.md §1(b) Table 1, §6.2), so items with
 * similar content share rows and a brand-new item is served through the
 * rows of its semantic neighbours.
 *
 * What lives here:
 *   - RQ-KMeans codebooks: per level k-means (k-means++ init, Lloyd with
 *     empty-cluster repair, fixed seed) on the residuals of the previous
 *     levels; greedy level-by-level encoding (papers.md §6.1, Eq. 2);
 *     quality figures (reconstruction error per level, utilisation,
 *     collision rate); save/load as safetensors.
 *   - Token rows of every parameterization with a table of H rows, computed
 *     modulo H without 64-bit overflow for any K and L (§1(i).4, §6.2).
 *   - Item records: raw item id (int64) -> codes, with the content
 *     embedding's version; a file written by `rank sid build/assign`.
 *
 * Codes are 0-based uint32 in [0, K). Errors return rk_status with a message
 * naming the file, tensor or argument.
 */
#ifndef RK_SEMANTIC_ID_H
#define RK_SEMANTIC_ID_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#define RK_SID_MAX_LEVELS 8
/* Longest records version kept, bytes with the NUL (longer is cut) */
#define RK_SID_VERSION_MAX 512

/* ---------------------------------------------------------------- codebooks */

/* L levels x K centroids of dim D: centroids[(l*K + k)*D + d]. Owned by the
 * struct; rk_sid_codebook_free releases it. */
typedef struct {
    int levels;       /* L, 1..RK_SID_MAX_LEVELS */
    int codes;        /* K, >= 2 */
    int dim;          /* D */
    float *centroids; /* [L, K, D] */
} rk_sid_codebook;

typedef struct {
    uint64_t seed;    /* k-means++ sampling; same seed + data -> same codebook (default 1) */
    int max_iters;    /* Lloyd iterations per level; stops early when no assignment changes (default 25) */
    int quiet;        /* no progress lines on stderr */
} rk_sid_train_opts;
#define RK_SID_TRAIN_OPTS_DEFAULT {1, 25, 0}

/* RQ-KMeans: level 1 is k-means on x, level l on the residuals
 * r_l = x - sum_{i<l} V_i[c_i]. Per level: k-means++ initialisation
 * (Arthur & Vassilvitskii 2007: first centre uniform, then each next one
 * drawn with probability proportional to D(x)^2), then Lloyd iterations;
 * the squared distances ||r||^2 - 2 r.v + ||v||^2 come from one OpenBLAS
 * sgemm per iteration. Empty-cluster repair: a centroid left without points
 * is moved onto the point farthest from its own centroid (each repair picks
 * a different point). x: [n, dim] float32, finite (else RK_ENUMERIC naming
 * the row); n >= codes (else RK_EINVAL). out is initialised here (free with
 * rk_sid_codebook_free). */
rk_status rk_sid_train(const float *x, size_t n, int dim, int levels, int codes,
                       const rk_sid_train_opts *o, rk_sid_codebook *out, rk_err *err);
void rk_sid_codebook_free(rk_sid_codebook *cb);

/* Greedy residual encoding of one embedding (papers.md §6.1):
 * r = x; for l: c_l = argmin_k ||r - V_l[k]||^2 (ties -> smallest k),
 * r -= V_l[c_l]. Distances are accumulated in double in a fixed order, so
 * offline and request-time assignment give the same codes for the same x.
 * codes_out[L]; resid (may be NULL) receives the final residual [dim].
 * No allocation. Returns RK_ENUMERIC if x has a non-finite value. */
rk_status rk_sid_encode_one(const rk_sid_codebook *cb, const float *x, uint32_t *codes_out,
                            float *resid, rk_err *err);
/* rk_sid_encode_one over x[n, dim] -> codes[n, L]. RK_ENUMERIC names the row. */
rk_status rk_sid_encode(const rk_sid_codebook *cb, const float *x, size_t n, uint32_t *codes,
                        rk_err *err);

/* Quality of a codebook on x[n, dim] with its codes[n, L]:
 *   recon_mse[l]   mean over items of ||x - sum_{i<=l} V_i[c_i]||^2 after
 *                  level l+1 (index 0 = after level 1)
 *   rel_error[l]   recon_mse[l] / mean ||x||^2
 *   utilisation[l] distinct codes used at level l+1 / K
 *   collision_rate share of items whose full code tuple (c_1..c_L) is
 *                  shared with at least one other item
 *   n_unique       number of distinct code tuples */
typedef struct {
    double recon_mse[RK_SID_MAX_LEVELS];
    double rel_error[RK_SID_MAX_LEVELS];
    double utilisation[RK_SID_MAX_LEVELS];
    double collision_rate;
    size_t n_unique;
} rk_sid_stats;
rk_status rk_sid_compute_stats(const rk_sid_codebook *cb, const float *x, size_t n,
                               const uint32_t *codes, rk_sid_stats *out, rk_err *err);

/* Save as safetensors: tensor "codebooks" F32 [L, K, D], metadata
 * "rankd.sid.levels"/"rankd.sid.codes" and an optional version string
 * (the content embedding's version; NULL = none). */
rk_status rk_sid_codebook_save(const rk_sid_codebook *cb, const char *path, const char *version,
                               rk_err *err);
/* Load a codebook from a safetensors file holding a "codebooks" F32
 * [L, K, D] tensor (an item-records file holds one too). Errors name the
 * file: missing tensor, wrong rank, L or K out of range, non-finite value. */
rk_status rk_sid_codebook_load(const char *path, rk_sid_codebook *out, rk_err *err);

/* ---------------------------------------------------------------- token rows */

/* Token parameterizations of one item feature (papers.md §1(b) Table 1).
 * RK_PARAM_HASH and RK_PARAM_INDIVIDUAL use the raw id; the others only the
 * codes. */
typedef enum {
    RK_PARAM_HASH = 0,        /* random hashing of the raw id: rk_feature_row, G = 1 */
    RK_PARAM_INDIVIDUAL = 1,  /* one row per known id, row H-1 = OOV for unknown ids, G = 1 */
    RK_PARAM_TRIGRAM = 2,     /* (K^2 c1 + K c2 + c3) mod H, G = 1 (L >= 3) */
    RK_PARAM_FOURGRAM = 3,    /* (K^3 c1 + K^2 c2 + K c3 + c4) mod H, G = 1 (L >= 4) */
    RK_PARAM_ALL_BIGRAMS = 4, /* (K^2 (i-1) + K c_i + c_{i+1}) mod H, i = 1..L-1, G = L-1 */
    RK_PARAM_PREFIX_NGRAM = 5,/* (sum_{t<=i} K^{i-t} (c_t + 1) - 1) mod H, i = 1..n, G = n */
    RK_PARAM_UNIGRAM = 6,     /* (K (l-1) + c_l) mod H, l = 1..L, G = L (extra baseline) */
} rk_sid_param;
#define RK_PARAM_COUNT 7

/* "hash", "individual", "trigram", "fourgram", "all_bigrams", "prefix_ngram", "unigram". */
const char *rk_sid_param_name(rk_sid_param p);
/* Parse a name; RK_EINVAL naming the text and listing the valid names. */
rk_status rk_sid_param_parse(const char *name, rk_sid_param *out, rk_err *err);
/* 1 when p takes its rows from semantic-ID codes (trigram .. unigram). */
int rk_sid_param_uses_codes(rk_sid_param p);
/* Rows per item, G, for a code-based p with L levels (prefix: n, 0 = L);
 * 0 when p is not valid for L (trigram needs L >= 3, fourgram L >= 4,
 * all-bigrams L >= 2, prefix n > L). Raw-id parameterizations: 1. */
int rk_sid_param_rows(rk_sid_param p, int levels, int ngram);

/* (a * b) mod m without overflow (128-bit product), m > 0. */
uint64_t rk_sid_mulmod(uint64_t a, uint64_t b, uint64_t m);

/* Rows of one item for a code-based parameterization: codes[L] (each < K),
 * table of H >= 1 rows, rows_out[G]. Every row is the exact token of Table 1
 * reduced mod H, computed by modular recurrences (prefix:
 * t_0 = H-1, t_i = (K (t_{i-1} + 1) + c_i) mod H; papers.md §6.2), so any
 * K and L are safe (e.g. K = 2048, L = 6: tok_6 ~ 7.4e19 > 2^64).
 * Returns G (> 0), or 0 when p/L/ngram do not fit (see rk_sid_param_rows). */
int rk_sid_rows(rk_sid_param p, const uint32_t *codes, int levels, uint32_t K, int ngram,
                uint64_t H, uint64_t *rows_out);

/* ---------------------------------------------------------------- item records */

/* Item id -> codes (+ the content embedding's version), in memory: an
 * open-addressing index over int64 ids. Built by rk_sid_items_create or
 * loaded from an item-records file; owned by the caller
 * (rk_sid_items_destroy). Lookups are read-only and thread-safe. */
typedef struct rk_sid_items rk_sid_items;

/* Build from ids[n] (distinct, else RK_EINVAL naming the duplicate) and
 * codes[n, L] (< K). version: the content-embedding version (copied; NULL =
 * ""). */
rk_status rk_sid_items_create(const int64_t *ids, const uint32_t *codes, size_t n, int levels,
                              int K, const char *version, rk_sid_items **out, rk_err *err);
void rk_sid_items_destroy(rk_sid_items *it);
size_t rk_sid_items_count(const rk_sid_items *it);
int rk_sid_items_levels(const rk_sid_items *it);
int rk_sid_items_K(const rk_sid_items *it);
const char *rk_sid_items_version(const rk_sid_items *it);
/* Position of id in [0, count) (insertion order), or -1 when unknown. */
long rk_sid_items_find(const rk_sid_items *it, int64_t id);
/* ids[count] and codes[count, L] in insertion order (borrowed). */
const int64_t *rk_sid_items_ids(const rk_sid_items *it);
const uint32_t *rk_sid_items_codes(const rk_sid_items *it);

/* Item-records file (safetensors): "ids" I64 [n], "codes" I64 [n, L],
 * "codebooks" F32 [L, K, D] (optional on load), metadata
 * "rankd.sid.version". Written atomically (temp + rename). */
rk_status rk_sid_items_save(const rk_sid_items *it, const rk_sid_codebook *cb, const char *path,
                            rk_err *err);
/* Load the records; codes outside [0, K) or a duplicate id are RK_EFORMAT
 * naming the file and the row. */
rk_status rk_sid_items_load(const char *path, rk_sid_items **out, rk_err *err);

#endif /* RK_SEMANTIC_ID_H */
