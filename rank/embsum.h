/*
 * rank/embsum.h — EmbSum (Zhang et al., RecSys 2024; papers.md §4, §6.6):
 * content-based user and item poly-embeddings. Part of rank.h's interface
 * (rank.h includes this file; include rank.h, not this).
 *
 * A user's time-ordered history is cut into g sessions of p items; each
 * session's text goes through the text encoder (embed.h, all-MiniLM-L6-v2;
 * the paper's T5-small encoder cannot be installed here) and is pooled into
 * one session vector (first token or mean). m learned codes attend over the
 * session vectors plus a global user vector (poly-attention, nn.h) and a
 * linear map gives the m user vectors (UPE, user poly-embedding); k codes
 * attend over a candidate's token states to give its k content vectors
 * (CPE). The relevance score is the pooled matching of UPE·CPEᵀ
 * (softmax-weighted by default) and pCTR = sigmoid(a·score + b) with a, b
 * fitted after training. Training: NCE of one positive against K sampled
 * negatives, plus optionally λ·(1 - cos(global user vector, encoded
 * summary)). The encoder is frozen; its states are computed once (cached).
 *
 * An EmbSum bundle is a directory:
 *   embsum.json          format version, kind "embsum", version, config,
 *                        encoder identity, tables, metrics
 *   embsum.safetensors   the parameters (codes, attention maps, UPE
 *                        projection, global-vector map, calibration)
 *   tables/              store (store.h) with column families "upe" (key =
 *                        user id, m·d floats) and "cpe" (key = item id, k·d
 *                        floats) in one codec (fp32, fp16, int8)
 * written into a temporary sibling and renamed into place.
 */
#ifndef RK_EMBSUM_H
#define RK_EMBSUM_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "nn.h"

#define RK_EMBSUM_FORMAT_VERSION 1
#define RK_EMBSUM_MAX_CODES 16
#define RK_EMBSUM_MAX_NEG 32

typedef enum { RK_SESSION_MEAN = 0, RK_SESSION_FIRST = 1 } rk_session_pool;

/* Hyper-parameters; RK_EMBSUM_CFG_DEFAULT gives the defaults in brackets. */
typedef struct {
    int m, k;                 /* UPE / CPE vectors per user / item [4, 4], 1..16 */
    int dc;                   /* code width of the poly-attention [32] */
    int g, p;                 /* sessions per user, items per session [4, 5] */
    int item_tokens;          /* tokens kept per item text incl. [CLS]/[SEP] [32] */
    rk_match_pool pool;       /* matching pooling [softmax] */
    float tau;                /* softmax pooling temperature [1] */
    rk_session_pool session_pool; /* session vector from the token states [mean] */
    int global;               /* 1: a global user vector among the UPE inputs [1] */
    float lambda;             /* summary loss weight, 0 = off [0] */
    int negatives;            /* K sampled negatives per positive [4] */
    int epochs;               /* [3] */
    int batch;                /* examples per Adam step [32] */
    float lr;                 /* Adam learning rate [1e-3] */
    float nce_scale;          /* NCE logits = nce_scale * score [10] */
    int max_pos_per_user;     /* training positives per user and epoch [64] */
    uint64_t seed;            /* init, negatives and order [1] */
} rk_embsum_cfg;
#define RK_EMBSUM_CFG_DEFAULT \
    {4, 4, 32, 4, 5, 32, RK_MATCH_SOFTMAX, 1.0f, RK_SESSION_MEAN, 1, 0.0f, 4, 3, 32, 1e-3f, 10.0f, 64, 1}

/* Check ranges; errors name the field ("m: 0 is outside 1..16"). */
rk_status rk_embsum_cfg_check(const rk_embsum_cfg *c, rk_err *err);
/* "softmax" | "max" | "mean" and "mean" | "first". */
const char *rk_match_pool_name(rk_match_pool p);
rk_status rk_match_pool_parse(const char *s, rk_match_pool *out, rk_err *err);
const char *rk_session_pool_name(rk_session_pool p);
rk_status rk_session_pool_parse(const char *s, rk_session_pool *out, rk_err *err);

/* ---------------------------------------------------------------- model */

typedef struct rk_embsum rk_embsum;

/* A fresh model for inputs of width d, parameters initialised from c->seed.
 * Free with rk_embsum_destroy. */
rk_status rk_embsum_create(const rk_embsum_cfg *c, int d, rk_embsum **out, rk_err *err);
void rk_embsum_destroy(rk_embsum *e);
const rk_embsum_cfg *rk_embsum_config(const rk_embsum *e);
int rk_embsum_dim(const rk_embsum *e);

/* Scratch for one thread's forward passes over up to max_n input vectors. */
typedef struct rk_embsum_work rk_embsum_work;
rk_status rk_embsum_work_create(const rk_embsum *e, int max_n, rk_embsum_work **out, rk_err *err);
void rk_embsum_work_destroy(rk_embsum_work *w);

/* UPE of one user: session vectors sess[ns, d] (1 <= ns <= g, each already
 * L2-normalized as rk_embsum_session_vectors gives them) -> upe[m, d].
 * Errors: RK_EINVAL "history: no sessions" (ns == 0), RK_ETOOBIG. */
rk_status rk_embsum_upe(const rk_embsum *e, const float *sess, int ns, float *upe, rk_embsum_work *w, rk_err *err);
/* CPE of one item: token states tok[nt, d] (row-normalized, as
 * rk_embsum_item_states gives them), 1 <= nt <= work's max_n -> cpe[k, d]. */
rk_status rk_embsum_cpe(const rk_embsum *e, const float *tok, int nt, float *cpe, rk_embsum_work *w, rk_err *err);
/* Matching score of upe[m,d] and cpe[k,d] (pooling per the config), and the
 * calibrated pCTR sigmoid(a * score + b). */
float rk_embsum_score(const rk_embsum *e, const float *upe, const float *cpe, rk_embsum_work *w);
float rk_embsum_pctr(const rk_embsum *e, float score);

/* ---------------------------------------------------------------- encoder inputs */

struct rk_text_encoder;
/* Token states of n texts for CPE: at most item_tokens tokens each, every
 * row L2-normalized. states: n * item_tokens * d floats, offsets: n + 1. */
rk_status rk_embsum_item_states(struct rk_text_encoder *enc, const char *const *texts, int n, int item_tokens,
                                float *states, int32_t *offsets, rk_err *err);
/* Session vectors of n session texts (each text = its items' texts joined):
 * both poolings at once, each L2-normalized: first[n, d] ([CLS] state) and
 * mean[n, d] (mean over the tokens). Either may be NULL. */
rk_status rk_embsum_session_vectors(struct rk_text_encoder *enc, const char *const *texts, int n, float *first,
                                    float *mean, rk_err *err);

/* ---------------------------------------------------------------- data (MovieLens layout) */

/* Ranking metrics of one split, MIND's definitions averaged over
 * impressions (one impression per user: the user's positives of the period
 * and 4 sampled unrated items per positive). */
typedef struct {
    int n_impressions;
    double auc, mrr, ndcg5, ndcg10;
    double pooled_auc;          /* AUC over every (impression, candidate) pooled */
    int n_multi;                /* impressions of multi-genre users */
    double auc_multi, ndcg10_multi;
    double auc_single_genre;    /* the other users */
} rk_rank_metrics;

typedef struct rk_embsum_data rk_embsum_data;
enum { RK_SPLIT_TRAIN = 0, RK_SPLIT_VALID = 1, RK_SPLIT_TEST = 2 };

/* Load the output of rk_data_movielens (train.tsv, valid.tsv, test.tsv,
 * items.csv in data_dir) for EmbSum: item texts (title | genres | tags);
 * per user, time-ordered events split by the user's own fractions: train
 * targets [40%, 80%), valid [80%, 90%), test the rest; per split each
 * user's history (their last g*p events before the period), positives
 * (label 1) and evaluation impressions with 4 negatives per positive
 * sampled from the items the user never rated (seed data_seed). Token
 * states and session vectors come from enc, cached under cache_dir (NULL:
 * no cache) and keyed by the encoder identity enc_id and the file sizes.
 * summaries_path (NULL: none): TSV user_id<TAB>text; an unknown user, an
 * empty text or a duplicate is an error naming the file, row and column.
 * Progress on stderr unless quiet. */
rk_status rk_embsum_data_load(const char *data_dir, struct rk_text_encoder *enc, const char *enc_id,
                              const rk_embsum_cfg *c, const char *cache_dir, const char *summaries_path,
                              uint64_t data_seed, int quiet, rk_embsum_data **out, rk_err *err);
void rk_embsum_data_free(rk_embsum_data *d);
int rk_embsum_data_dim(const rk_embsum_data *d);
/* Write the splits' impressions as TSV (split, impression, user_id,
 * movie_id, label) for other models to score the same candidates. */
rk_status rk_embsum_data_write_impressions(const rk_embsum_data *d, const char *path, rk_err *err);
/* Dump what a reference implementation needs (bench/ref/embsum_torch.py):
 * token states, session vectors, histories, training positives and
 * impressions as one safetensors file. */
rk_status rk_embsum_data_dump(const rk_embsum_data *d, const char *path, rk_err *err);

/* ---------------------------------------------------------------- training and evaluation */

typedef struct {
    double train_s, examples_per_s, final_loss;
    int epochs_run, n_train_examples;
    rk_rank_metrics valid, test;
    double upe_users_per_s, cpe_items_per_s;
} rk_embsum_report;

/* Train a fresh model on d's training split (NCE, Adam), fit the
 * calibration, evaluate valid and test. *out: free with rk_embsum_destroy. */
rk_status rk_embsum_train(const rk_embsum_cfg *c, const rk_embsum_data *d, int quiet, rk_embsum **out,
                          rk_embsum_report *rep, rk_err *err);
/* Ranking metrics of model e on split s. */
rk_status rk_embsum_evaluate(const rk_embsum *e, const rk_embsum_data *d, int split, rk_rank_metrics *out,
                             rk_err *err);
/* Baseline without training: mean of the history items' encoder vectors
 * dotted with the candidate's (both the encoder's normalized mean-pooled
 * sentence vectors). */
rk_status rk_embsum_eval_meanpool(const rk_embsum_data *d, int split, rk_rank_metrics *out, rk_err *err);
/* Scores of every impression row of the splits, in the order of
 * rk_embsum_data_write_impressions: raw matching scores into score[n]. */
rk_status rk_embsum_score_impressions(const rk_embsum *e, const rk_embsum_data *d, float *score, size_t n,
                                      rk_err *err);
size_t rk_embsum_data_n_impression_rows(const rk_embsum_data *d);
/* Rows of a TSV with a header naming the columns user_id, movie_id and,
 * when want_split, split (train | valid | test -> 0 | 1 | 2; else -1).
 * Errors name the file, row and column. Free with rk_embsum_pairs_free. */
typedef struct {
    size_t n;
    int64_t *user, *item;
    int *split;
} rk_embsum_pairs;
rk_status rk_embsum_pairs_read(const char *path, int want_split, rk_embsum_pairs *p, rk_err *err);
void rk_embsum_pairs_free(rk_embsum_pairs *p);
/* Raw matching scores of n (split, user, item) pairs, the user's UPE from
 * that split's history (0 = train, 1 = valid, 2 = test); a user without a
 * history in the period scores 0. Errors name the pair (1-based) and column. */
rk_status rk_embsum_score_pairs(const rk_embsum *e, const rk_embsum_data *d, const int *split, const int64_t *user,
                                const int64_t *item, size_t n, float *score, rk_err *err);

/* ---------------------------------------------------------------- bundle */

/* Precompute UPE of every user (history before the test period) and CPE of
 * every item, and write the bundle at dir (must not exist unless
 * overwrite, and then be an EmbSum bundle: another directory is refused,
 * RK_EEXIST) with tables in codec ("fp32", "fp16", "int8"). An old bundle
 * is replaced only once the new one is complete; temporaries of a save
 * that died are swept first. enc_id: the
 * encoder identity recorded. metrics_json: optional object text. Reports
 * the build rates into rep when non-NULL. */
rk_status rk_embsum_save(const rk_embsum *e, const rk_embsum_data *d, const char *dir, const char *codec,
                         const char *enc_id, const char *metrics_json, int overwrite, rk_embsum_report *rep,
                         rk_err *err);
/* Load only the parameters (and config) of a bundle: a model to rebuild
 * tables with (rank embsum build) or to compute request-time CPE. */
rk_status rk_embsum_load(const char *dir, rk_embsum **out, char *enc_id, size_t enc_id_cap, rk_err *err);

typedef struct rk_embsum_bundle rk_embsum_bundle;
/* Open a bundle for scoring: parameters + the upe/cpe tables. */
rk_status rk_embsum_bundle_open(const char *dir, rk_embsum_bundle **out, rk_err *err);
void rk_embsum_bundle_close(rk_embsum_bundle *b);
const rk_embsum *rk_embsum_bundle_model(const rk_embsum_bundle *b);
/* Version string "name/version" and codec of the tables. */
const char *rk_embsum_bundle_version(const rk_embsum_bundle *b);
const char *rk_embsum_bundle_codec(const rk_embsum_bundle *b);
/* The bundle's items (items.tsv, ids ascending): how many, and the id of item i. */
int rk_embsum_bundle_n_items(const rk_embsum_bundle *b);
int64_t rk_embsum_bundle_item(const rk_embsum_bundle *b, int i);
/* Stored UPE of a user (upe[m*d]) / CPE of items (cpe[n, k*d]); RK_ENOTFOUND
 * naming the user or the first unknown item. */
rk_status rk_embsum_bundle_upe(rk_embsum_bundle *b, int64_t user_id, float *upe, rk_err *err);
rk_status rk_embsum_bundle_cpe(rk_embsum_bundle *b, const int64_t *item_ids, int n, float *cpe, rk_err *err);
/* rank embsum score / rankd: pCTR of n items for a user, all from the
 * store; score (may be NULL) receives the raw matching scores. */
rk_status rk_embsum_bundle_score(rk_embsum_bundle *b, int64_t user_id, const int64_t *item_ids, int n, float *pctr,
                                 float *score, rk_err *err);

/* ---------------------------------------------------------------- request-time scoring
 * (rank/embsum_serve.c): what a server does with one request. */

#define RK_EMBSUM_MAX_TEXT_BYTES 8192
typedef struct {
    const char *ad_id;          /* the item id (decimal) */
    const char *content_text;   /* UTF-8, content_len bytes; used when ad_id is unknown */
    size_t content_len;
} rk_embsum_candidate;
typedef struct {
    const char *user_id;                 /* decimal, or "" */
    const char *const *recent_item_ids;  /* most recent first */
    int n_recent;
    const rk_embsum_candidate *cand;
    int n_cand;
    double deadline;                     /* rk_now() seconds; 0 = none */
} rk_embsum_request;
typedef enum { RK_UPE_STORED = 0, RK_UPE_RECENT = 1, RK_UPE_DEFAULT = 2 } rk_upe_source;
typedef struct {
    rk_upe_source upe;  /* where the user's UPE came from */
    int n_encoded;      /* candidates whose CPE was computed from content_text */
} rk_embsum_rank_info;

/* pCTR[n_cand] and raw matching scores score[n_cand] (either may be NULL)
 * of one request. UPE: the user's stored row; an unknown user whose
 * recent_item_ids include items of the bundle (items.tsv) gets a UPE
 * computed now from their last g*p known items (needs enc); otherwise the
 * default UPE, the mean of the stored ones. CPE: the stored rows (one
 * batched store lookup); an unknown ad with content_text gets its CPE now
 * from enc (the deadline is checked before each text). Matching: one fused pass
 * for all candidates (rk_match_batch), as rk_embsum_bundle_score. enc may be
 * NULL (no request-time encoding). info (may be NULL) says which UPE and how
 * many CPEs were encoded. Errors name the field (RK_EINVAL unless said):
 * user (neither user_id nor recent_item_ids), user.recent_item_ids[i]
 * (empty), candidates[i].ad_id (unknown without text, RK_ENOTFOUND),
 * candidates[i].content_text (over RK_EMBSUM_MAX_TEXT_BYTES, invalid UTF-8,
 * no encoder; deadline: RK_EDEADLINE), candidates[i] (non-finite score:
 * RK_ENUMERIC). Not thread-safe: one bundle per thread (it keeps the
 * request scratch). */
struct rk_text_encoder;
rk_status rk_embsum_bundle_rank(rk_embsum_bundle *b, struct rk_text_encoder *enc, const rk_embsum_request *r,
                                float *pctr, float *score, rk_embsum_rank_info *info, rk_err *err);

/* ---------------------------------------------------------------- in rankd
 * A model bundle may carry an EmbSum bundle in its subdirectory embsum/
 * (`rank embsum export` / `rank embsum attach`); the model then has a dense
 * item feature named RK_EMBSUM_FEATURE whose value rankd computes per
 * candidate: the raw matching score of the request's user and the ad. An
 * EmbSum model of its own is such a bundle whose only feature is that one,
 * with a tower that is the calibration sigmoid(a·score + b). */
#define RK_EMBSUM_FEATURE "embsum"

/* The EmbSum bundle of model m (NULL in *out when it has none) and the index
 * of its RK_EMBSUM_FEATURE. Errors: a bundle without that dense item
 * feature (RK_EINVAL), the bundle's own errors. One per thread. */
rk_status rk_embsum_attach_open(const rk_model *m, rk_embsum_bundle **out, int *feature, rk_err *err);
/* Score request r (rk_embsum_bundle_rank) and set each candidate's row i of
 * sc: dense feature `feature` = the raw matching score. */
rk_status rk_embsum_fill(rk_embsum_bundle *b, int feature, struct rk_text_encoder *enc, const rk_embsum_request *r,
                         rk_scorer *sc, rk_embsum_rank_info *info, rk_err *err);
/* `rank embsum export`: a model bundle at out_dir whose only input is the
 * EmbSum score and whose tower is the bundle's calibration (pCTR equal to
 * rk_embsum_bundle_score's), named name, with the EmbSum bundle at
 * embsum_dir copied into out_dir/embsum. `rank embsum attach` (export_model
 * 0): copy the EmbSum bundle into an existing model bundle out_dir that has
 * the RK_EMBSUM_FEATURE input. */
rk_status rk_embsum_export(const char *embsum_dir, const char *out_dir, const char *name, int export_model,
                           int overwrite, rk_err *err);

#endif /* RK_EMBSUM_H */
