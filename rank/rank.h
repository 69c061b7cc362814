/*
 * rank/rank.h — the whole interface of rankd's ranking module.
 *
 * What lives here: the data conversion of public data sets into CTR
 * examples, the model (features, hashed embedding tables, towers), the
 * trainer, the model bundle, the scorer used by both `rank score` and
 * `rankd`, ranking metrics, and the gRPC Ranker service.
 *
 * A model bundle is a directory:
 *   model.json          config, schema, features, tower, training metadata
 *   dense.safetensors   every dense parameter (PyTorch-readable, [out,in])
 *   tables/             the embedding store (store.h): RocksDB, one column
 *                       family per table, key = 8-byte big-endian row,
 *                       value = the row in the table's codec (fp32, fp16 or
 *                       row-wise int8; model.json tables[].codec)
 * Bundles are written into a temporary sibling directory and renamed into
 * place, so a half-written bundle is never loadable.
 */
#ifndef RK_RANK_H
#define RK_RANK_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "nn.h"
#include "semantic_id.h"

#define RK_FORMAT_VERSION 1
/* Longest feature, column, member or model name (bytes, with the NUL).
 * Counts (features, tables, hidden and cross layers, ensemble members,
 * values per bag) have no fixed array behind them: they are sized at run
 * time. The config parser bounds the sizes that a typo could make absurd
 * (an error naming the field instead of an allocation failing at
 * training; README, "Limits that remain"): */
#define RK_NAME_MAX 64
#define RK_MAX_CROSS_LAYERS 64         /* tower.cross_layers: 0..64 */
#define RK_MAX_HIDDEN_LAYERS 64        /* tower.hidden: at most 64 widths, each 1..8192 */
#define RK_MAX_MEMBERS 64              /* ensemble.members: 1..64 */
#define RK_MAX_TABLE_ROWS 4294967296.0 /* features[].table_size: 1..2^32 rows */
#define RK_MAX_DENSE_WEIGHTS 268435456.0 /* a tower's dense weights (cross + MLP): at most 2^28 (1 GiB fp32;
                                            training keeps ~4x for gradients and Adam) */
/* Largest magnitude a raw dense feature value may have, and a standardized
 * one may reach: beyond it float32 tower math can overflow to Inf/NaN, so
 * such input is refused (offline: error naming row and column; served:
 * INVALID_ARGUMENT naming the field) instead of scored. */
#define RK_DENSE_MAX_ABS 1e9

/* A dense feature's log1p option (model.json "log1p"): off, log1p(x) (x
 * must be > -1), or log1p(max(x, 0)) ("clamp": negative counts, as in
 * Criteo's I2, become 0 first). */
typedef enum { RK_LOG1P_OFF = 0, RK_LOG1P_ON = 1, RK_LOG1P_CLAMP = 2 } rk_log1p_mode;

/* ====================================================================== data */

/* Convert MovieLens ml-latest-small (ratings.csv, movies.csv in in_dir) into
 * time-ordered CTR examples in out_dir:
 *   train.tsv, valid.tsv, test.tsv, schema.json
 * One example per rating, label = rating >= 4.0, sorted by (timestamp,
 * user id, movie id); first 80% train, next 10% valid, last 10% test.
 * TSV columns (header line first, tab-separated, '|' inside multi-valued):
 *   label      0/1
 *   timestamp  Unix seconds (UTC)
 *   user_id    MovieLens userId
 *   movie_id   MovieLens movieId
 *   genres     '|'-separated genres ("" for "(no genres listed)")
 *   year       release year parsed from the title's "(YYYY)", "" if none
 *   hour       hour of day of the event, 0..23 (UTC)
 *   weekday    day of week of the event, 0 = Monday .. 6 = Sunday (UTC)
 *   history    the user's most recent <= 20 movie ids rated strictly before
 *              this event's timestamp, most recent first, '|'-separated
 *   rating     the raw rating (not a feature: schema.json marks it
 *              "label_derived", and rk_dataset_load refuses it as one)
 * Also items.csv (RFC 4180, every field quoted): movieId, title, genres,
 * tags — one row per movie, the movie's distinct tags of tags.csv (when
 * present) joined by ", ", the content text for semantic IDs.
 * Errors name the file, row (1-based, header = row 1) and column. */
rk_status rk_data_movielens(const char *in_dir, const char *out_dir, rk_err *err);

/* Convert any delimited log (CSV or TSV, with or without a header) into
 * train.tsv, valid.tsv, test.tsv and schema.json in out_dir, by the schema
 * file at schema_path: column roles (label, sparse single- or
 * multi-valued, dense), transforms (dense log1p after clamping negatives
 * at 0; sparse log_squared bucketing of integers), missing-value tokens,
 * hashed crosses, and an ordered (file = time order) or seeded random
 * split. Format and keys: rank/data_log.c. Errors name the file, row and
 * column. */
rk_status rk_data_log(const char *schema_path, const char *in_path, const char *out_dir, rk_err *err);

/* ====================================================================== metrics */

typedef struct {
    size_t n, n_pos;
    double base_rate;    /* n_pos / n */
    double mean_pctr;
    double auc;          /* ROC AUC, ties get half credit; NAN if undefined */
    int auc_defined;     /* 0 when all labels are equal */
    double logloss;      /* mean BCE, p clamped to [1e-7, 1-1e-7] */
    double ne;           /* normalized entropy = logloss / H(base_rate); NAN if base rate is 0 or 1 */
    double calibration;  /* mean_pctr / base_rate; NAN if base rate is 0 */
} rk_metrics;

/* pctr, label: n values each; labels must be 0 or 1, pctr finite in [0,1].
 * Float64 accumulation. Errors: RK_EINVAL naming the first bad index (or
 * n == 0); *out is written only on success. */
rk_status rk_metrics_compute(const float *pctr, const float *label, size_t n, rk_metrics *out,
                             rk_err *err);

/* ====================================================================== model config */

typedef enum { RK_FEAT_SPARSE = 0, RK_FEAT_DENSE = 1 } rk_feat_kind;
typedef enum { RK_SIDE_USER = 0, RK_SIDE_ITEM = 1 } rk_side;
/* DNN: ReLU MLP. DCNv2: cross layers then the MLP. DeepFM (Guo et al. 2017):
 * the MLP's logit + a first-order linear term over x0 + the FM second-order
 * term over the sparse features' pooled embeddings (all of one dim). */
typedef enum { RK_TOWER_DNN = 0, RK_TOWER_DCNV2 = 1, RK_TOWER_DEEPFM = 2 } rk_tower_type;

typedef struct {
    char name[RK_NAME_MAX];    /* feature name, also the request's feature name */
    char column[RK_NAME_MAX];  /* TSV column it is read from */
    rk_feat_kind kind;
    rk_side side;              /* where a request carries it: user or candidate */
    /* sparse */
    uint64_t table_size;       /* hashed rows */
    int dim;                   /* embedding dimension */
    rk_bag_mode pool;          /* sum or mean over the values */
    int max_values;            /* values kept per example (0 = no limit) */
    /* How a value becomes rows (semantic_id.h, papers.md §1(b) Table 1):
     * "hash" (default, rk_feature_row), "individual" (row = the item's
     * position in the item records, row table_size-1 = OOV), or a
     * code-based parameterization (trigram, fourgram, all_bigrams,
     * prefix_ngram, unigram) whose G rows come from the item's semantic-ID
     * codes and are sum/mean-pooled with the feature's other values. Values
     * are item ids (int64): the target item, or the items of a history
     * (max_values counts items; pooling mean divides by the number of token
     * rows). An item without codes (unknown to the records, not an integer)
     * adds no rows: alone, an empty bag (the zero vector), counted. */
    rk_sid_param param;
    int ngram;                 /* prefix_ngram: prefixes of length 1..ngram (0 = all L) */
    char sid[256];             /* item-records file (rank sid build/assign) read at training
                                * time; a bundle carries the records in tables/ */
    const rk_sid_items *items; /* runtime only (not in model.json): the records, owned by
                                * the model (rk_model_open / rk_train) or the caller */
    /* dense: x' = (transform(x) - mean) / std; missing -> 0 (mean imputation) */
    int log1p;                 /* rk_log1p_mode: model.json "log1p": false, true, "clamp" */
    double mean, std;
} rk_feature;

typedef struct {
    rk_tower_type type;
    int n_cross;               /* DCNv2 cross layers */
    int n_hidden;
    int *hidden;               /* [n_hidden] MLP widths, ReLU after each; owned by the
                                * rk_model_cfg holding the tower */
} rk_tower_cfg;

typedef struct {
    char name[RK_NAME_MAX];
    rk_tower_cfg tower;
    int dim;                   /* embedding dim of every sparse feature; 0 = the features' own */
} rk_member_cfg;

typedef enum { RK_FUSION_CONFIDENCE = 0, RK_FUSION_MEAN = 1 } rk_fusion_type;

typedef struct {
    rk_fusion_type type;       /* confidence (general softmax over -entropy) or plain mean */
    float tau;                 /* softmax temperature (> 0), default 1 */
    int learn_tau;             /* learn log(tau) with the fused loss */
    float lambda;              /* weight of each member's pull toward sg(fused) */
    float w_fused, w_member;   /* weights of BCE(fused, y) and of each BCE(member, y) */
} rk_fusion_cfg;

typedef struct {
    uint64_t seed;
    int batch_size;
    int max_epochs;
    int patience;              /* early stopping on validation AUC */
    float lr_dense, lr_embed;  /* Adam / Adagrad learning rates */
    float adam_b1, adam_b2, adam_eps, adagrad_eps;
    float init_std_embed;      /* N(0, std) embedding init */
    int zero_unseen_rows;      /* after training, zero every table row no training example
                                * hashes to, so an id unseen in training gets the table's
                                * default (a zero row), not its random init (default 1) */
    int threads;               /* OpenBLAS threads while training */
    int shuffle;               /* shuffle the training rows each epoch (default 1); 0 = one
                                * pass in file order, i.e. in time for a time-ordered split,
                                * as the Semantic-ID paper trains (papers.md §1(d)) */
    /* Regularization (0 = off, the defaults). The loss gains
     * l2_embed/2 ||e||^2 over the embedding rows the batch touches (the
     * sparse, per-batch L2 of production trainers: an untouched row is not
     * decayed) and l2_dense/2 ||W||^2 over every weight matrix of the tower
     * (not the biases); dropout: each MLP hidden unit is zeroed with this
     * probability while training, the kept ones scaled by 1/(1-p)
     * (inverted dropout; scoring is unchanged). */
    float l2_embed, l2_dense, dropout;
} rk_train_cfg;

typedef struct {
    int format_version;
    char name[RK_NAME_MAX];
    char version[RK_NAME_MAX];
    char label_column[RK_NAME_MAX];
    int n_features;
    rk_feature *features;      /* [n_features], owned (rk_model_cfg_free) */
    rk_tower_cfg tower;
    rk_train_cfg train;
    /* request field aliases: a request's user.user_id, user.recent_item_ids
     * and candidate.ad_id fill these features when set ("" = no alias). */
    char alias_user_id[RK_NAME_MAX];
    char alias_recent_items[RK_NAME_MAX];
    char alias_ad_id[RK_NAME_MAX];
    /* CETNet ensemble (Liu et al. 2024; papers.md §5, §6.4). n_members == 0:
     * a single model with `tower`. n_members > 0: M members, each with its
     * own embedding tables and tower, sharing the feature definitions (a
     * member may override the embedding dim), fused per example. */
    int n_members;
    rk_member_cfg *members;    /* [n_members], owned */
    rk_fusion_cfg fusion;
    rk_strmap *by_name;        /* feature name -> index (rk_model_cfg_find), owned */
} rk_model_cfg;

/* A config owns its arrays: every config filled by rk_model_cfg_parse,
 * rk_model_cfg_default, rk_model_cfg_copy or rk_member_cfg_derive is
 * released with rk_model_cfg_free (also after a failed parse). Copying the
 * struct with '=' shares the arrays: use rk_model_cfg_copy. */

/* Parse a model config (the "config" part of model.json or a config file
 * under configs/). Unknown keys are errors naming the key; missing keys take
 * documented defaults. On failure *out holds nothing to free. */
rk_status rk_model_cfg_parse(const char *json_text, rk_model_cfg *out, rk_err *err);
/* Defaults for every field (no features). RK_ENOMEM. */
rk_status rk_model_cfg_default(rk_model_cfg *c, rk_err *err);
/* Deep copy of src into *dst (features, towers, members, the name index);
 * features[].items pointers are shared, not copied. RK_ENOMEM. */
rk_status rk_model_cfg_copy(rk_model_cfg *dst, const rk_model_cfg *src, rk_err *err);
/* Free what a config owns; the struct is zeroed. NULL-safe, idempotent. */
void rk_model_cfg_free(rk_model_cfg *c);
/* Width of the tower input: sum of sparse dims + number of dense features. */
int rk_model_cfg_input_dim(const rk_model_cfg *c);
/* The config of ensemble member i: the ensemble's features (dims replaced
 * by the member's dim when set), the member's tower, name and a seed derived
 * from the ensemble's seed and i. */
rk_status rk_member_cfg_derive(const rk_model_cfg *ens, int i, rk_model_cfg *out, rk_err *err);
/* "dnn", "dcnv2" or "deepfm". */
const char *rk_tower_name(rk_tower_type t);
/* Index of a feature by name, -1 if none: a hash lookup (by_name). */
int rk_model_cfg_find(const rk_model_cfg *c, const char *name);
/* Same for a name that is not NUL-terminated. */
int rk_model_cfg_find_n(const rk_model_cfg *c, const char *name, size_t len);

/* ====================================================================== batch */

/* A featurized batch: per sparse feature a CSR list of hashed rows per
 * example, a dense matrix of standardized dense features, optional labels.
 * Feature slots follow the model's feature order (dense slots unused in
 * offsets/rows, sparse slots unused in dense). Owned by whoever creates it. */
typedef struct {
    int n_rows, cap_rows;
    int n_features;
    uint32_t **offsets;                  /* [n_features]: [n_rows+1] for sparse features, NULL for dense */
    uint64_t **rows;                     /* [n_features]: hashed row ids, cap_values[f] */
    size_t *cap_values;                  /* [n_features] */
    float *dense;                        /* [n_rows, n_features] raw slots by feature index */
    float *labels;                       /* [n_rows] */
} rk_batch;

/* ====================================================================== dataset */

/* A TSV of examples read fully into memory and featurized for a model
 * config: every sparse value hashed (rk_feature_row), dense values
 * transformed and standardized. */
typedef struct {
    rk_batch b;      /* all rows */
    int has_labels;  /* 0 when the file has no label column (labels are 0) */
    char path[512];
} rk_dataset;

/* Read path with the config's columns (header names); the label column is
 * optional (has_labels). A feature may not read the label column, nor a
 * column that schema.json beside path marks "label_derived" (RK_EINVAL,
 * also from rk_dataset_fit_dense). Dense statistics must
 * already be in cfg (rk_dataset_fit_dense sets them from a training file).
 * Errors name file, row and column. A progress bar is shown for big files. */
rk_status rk_dataset_load(const char *path, const rk_model_cfg *cfg, rk_dataset *out,
                          rk_err *err);
void rk_dataset_free(rk_dataset *d);
/* Compute mean/std of each dense feature over a TSV (after log1p when set). */
rk_status rk_dataset_fit_dense(const char *path, rk_model_cfg *cfg, rk_err *err);

/* ====================================================================== model */

typedef struct rk_model rk_model;

/* Create a fresh model for training: tables in RAM, dense params
 * initialised from cfg->train.seed (Kaiming-uniform like torch.nn.Linear,
 * embeddings N(0, init_std_embed)). */
rk_status rk_model_create(const rk_model_cfg *cfg, rk_model **out, rk_err *err);

/* Open a bundle for scoring: model.json, dense.safetensors, tables/ (read-only
 * RocksDB; rows fetched per batch). Errors say which file and what is wrong:
 * missing file, unsupported format_version, tensor shape vs model.json,
 * corrupt safetensors header, missing column family. */
rk_status rk_model_open(const char *dir, rk_model **out, rk_err *err);
/* Same; writable != 0 opens the tables read-write (RocksDB's LOCK: one
 * writer process per bundle) so that rk_model_apply_updates works. dir may
 * be a symlink: it is resolved once at open (rk_model_dir). */
rk_status rk_model_open_ex(const char *dir, int writable, rk_model **out, rk_err *err);
void rk_model_destroy(rk_model *m);
/* The bundle directory the model was opened from, symlinks resolved; "" for
 * a model made by rk_model_create. Owned by m. */
const char *rk_model_dir(const rk_model *m);

/* Online update of embedding rows of a model opened writable: rows[n_rows]
 * of the table named table (the sparse feature's name; in an ensemble, of
 * member member, else member is NULL or ""), values [n_rows, dim] float32
 * (n_values must be n_rows * dim). Written through the table's store
 * (rk_store_apply: one atomic write batch, WAL fsync'd, store cache updated)
 * and, when the table was copied to RAM, into the RAM copy (through the
 * table's codec; queued without a lock and written by the next lookup under
 * the model's lock, so a batch being pooled never sees a half-written row
 * and the updating thread never holds a lock a scoring thread waits for).
 * On RK_OK the update is durable and every later lookup sees it.
 * Thread-safe with scoring. Errors name the field:
 * RK_ENOTFOUND (member, table), RK_EINVAL (read-only open, empty rows,
 * values count, row outside the table), RK_ENUMERIC (value not finite or
 * beyond +-1e6), RK_EIO / RK_EFORMAT (RocksDB; nothing acknowledged). */
rk_status rk_model_apply_updates(rk_model *m, const char *member, const char *table, const uint64_t *rows,
                                 size_t n_rows, const float *values, size_t n_values, rk_err *err);

/* Serving from RAM: copy every embedding table of an opened bundle (an
 * ensemble's members too) into memory when they need at most max_bytes in
 * all; lookups then pool from RAM instead of reading RocksDB, with
 * bit-identical results. *bytes gets the bytes loaded (0: over budget,
 * nothing loaded, the store serves). Call before any scorer is created;
 * not thread-safe with scoring. */
rk_status rk_model_tables_to_ram(rk_model *m, size_t max_bytes, size_t *bytes, rk_err *err);
const rk_model_cfg *rk_model_config(const rk_model *m);
/* "name/version" string written at train time. */
const char *rk_model_version(const rk_model *m);
/* Store RAM row-cache counters summed over every table (an ensemble's
 * members too): out[0] hits, out[1] misses, out[2] evictions; zeros for a
 * model without a store. Thread-safe with scoring (atomic counters). */
void rk_model_cache_stats(const rk_model *m, uint64_t out[3]);

/* Write the model as a bundle at dir, atomically (temp dir + rename).
 * metrics_json: optional JSON object text stored under "metrics". If dir
 * exists it is replaced only when overwrite != 0, else RK_EEXIST. */
rk_status rk_model_save(const rk_model *m, const char *dir, const char *metrics_json,
                        int overwrite, rk_err *err);
/* Same, with every embedding table stored in the row codec named codec
 * ("fp32", "fp16" or "int8": store.h's rk_codec; recorded in model.json's
 * tables[].codec). rk_model_save is this with "fp32". Errors as
 * rk_model_save, plus RK_EINVAL for an unknown codec. */
rk_status rk_model_save_codec(const rk_model *m, const char *dir, const char *metrics_json,
                              int overwrite, const char *codec, rk_err *err);
/* Re-encode a bundle's embedding tables: read the bundle in_dir (tables
 * decoded to float32), write out_dir with codec; model.json (config,
 * metrics) and dense.safetensors carry over. out_dir must not exist unless
 * overwrite. `rank store convert` calls this. */
rk_status rk_model_convert(const char *in_dir, const char *out_dir, const char *codec,
                           int overwrite, rk_err *err);

/* ====================================================================== scorer */

/* Per-thread scoring context: owns every buffer a batch of up to max_rows
 * examples needs (no allocation per call) for one model. Not thread-safe;
 * create one per worker thread. The model must outlive it. */
typedef struct rk_scorer rk_scorer;
/* max_values: total sparse values per feature the batch may hold (bytes are
 * sized from it; larger requests get RK_ETOOBIG). */
rk_status rk_scorer_create(const rk_model *m, int max_rows, int max_values_per_row,
                           rk_scorer **out, rk_err *err);
void rk_scorer_destroy(rk_scorer *s);

/* Start a batch of n_rows examples (all features empty / missing). */
rk_status rk_scorer_begin(rk_scorer *s, int n_rows, rk_err *err);
/* Add one value of a sparse feature to a row (hashed here). */
rk_status rk_scorer_add_sparse(rk_scorer *s, int row, int feature, const char *value,
                               size_t len, rk_err *err);
/* The same value added to every row in [r0, r1) (a user-side feature of a
 * request), hashed once; while a feature's values all go to every row they
 * are staged once. Same truncation and limits as rk_scorer_add_sparse. */
rk_status rk_scorer_add_sparse_rows(rk_scorer *s, int r0, int r1, int feature, const char *value,
                                    size_t len, rk_err *err);
/* Semantic IDs. 1 when value is an item the feature's records know (always
 * 1 for param hash); such an item's rows come from its stored codes. */
int rk_scorer_item_known(const rk_scorer *s, int feature, const char *value, size_t len);
/* Request-time assignment: give row the rows of the codes the bundle's
 * codebooks assign to the item's content embedding emb[dim] (greedy
 * residual encoding, rk_sid_encode_one: the same codes as offline `rank sid
 * assign`). Errors: RK_EINVAL (feature without codebooks), RK_ESHAPE (dim
 * differs from the codebooks'), RK_ENUMERIC (non-finite value). No
 * allocation. Counted in rk_scorer_sid_counters' assigned. */
rk_status rk_scorer_add_item_embedding(rk_scorer *s, int row, int feature, const float *emb, int dim,
                                       rk_err *err);
/* The checks of rk_scorer_add_item_embedding (codebooks, dim, finite values)
 * without adding anything: for content embeddings of items the records know. */
rk_status rk_scorer_check_item_embedding(const rk_scorer *s, int feature, const float *emb, int dim, rk_err *err);
/* Lifetime counts of this scorer: values of semantic-ID features whose item
 * had no records (the default: empty bag = zero vector; OOV row under
 * individual), and items assigned codes at request time. */
void rk_scorer_sid_counters(const rk_scorer *s, uint64_t *unknown, uint64_t *assigned);
/* Set a dense feature of a row from its raw (untransformed) value. Not
 * finite -> RK_ENUMERIC. */
rk_status rk_scorer_set_dense(rk_scorer *s, int row, int feature, float raw, rk_err *err);
/* Score the batch: pctr[n_rows]. Embedding rows are fetched for the whole
 * batch at once (deduplicated) from the model's tables. Optional stage
 * timings in microseconds (lookup, model) when t != NULL. */
/* Run s's towers on dev from now on (NULL: back to the CPU): copies every
 * member's dense parameters to the device and sizes device buffers and
 * pinned staging for s's max_rows, so rk_scorer_run allocates nothing. dev
 * must outlive s (or the next call); one device per scorer (one stream).
 * Errors: RK_EIO naming the CUDA error, RK_ENOMEM. */
rk_status rk_scorer_set_device(rk_scorer *s, rk_device *dev, rk_err *err);

rk_status rk_scorer_run(rk_scorer *s, float *pctr, double *lookup_us, double *model_us,
                        rk_err *err);

/* After rk_scorer_run on an ensemble: row's member pCTRs and fusion weights,
 * M = rk_model_n_members values each (either pointer may be NULL).
 * RK_EINVAL for a single model or a row outside the last batch. */
rk_status rk_scorer_member_scores(const rk_scorer *s, int row, float *pctr, float *weight, rk_err *err);

/* Score a featurized batch directly (used by training-time evaluation and
 * `rank score`): pctr[b->n_rows]. Shows a progress bar from 100,000 rows. */
rk_status rk_model_predict(const rk_model *m, const rk_batch *b, float *pctr, rk_err *err);

/* The tower alone, for benchmarks and parity checks of an exported tower:
 * logits of tower inputs x0 [B, rk_model_cfg_input_dim] through the same
 * code rk_scorer_run uses (no lookups, no sigmoid). Single models only.
 * create: activations for up to max_rows rows (the only allocation);
 * input: the [max_rows, D] buffer to fill; forward: logits[B], valid until
 * the next forward (B <= max_rows). */
typedef struct rk_tower_run rk_tower_run;
rk_status rk_tower_run_create(const rk_model *m, int max_rows, rk_tower_run **out, rk_err *err);
float *rk_tower_run_input(rk_tower_run *t);
const float *rk_tower_run_forward(rk_tower_run *t, int B);
void rk_tower_run_destroy(rk_tower_run *t);

/* CETNet ensembles (a single model has 0 members). */
int rk_model_n_members(const rk_model *m);
/* Member name from model.json, NULL when i is out of range. */
const char *rk_model_member_name(const rk_model *m, int i);
/* Fusion temperature (learned or fixed); 0 for a single model. */
double rk_model_tau(const rk_model *m);
/* Fused pCTR[n_rows] plus each member's pCTR and fusion weight, row-major
 * [n_rows, M] (either may be NULL). A single model behaves as
 * rk_model_predict. Fusion: papers.md §6.4 (rank/fusion.c). */
rk_status rk_model_predict_members(const rk_model *m, const rk_batch *b, float *pctr, float *member_pctr,
                                   float *member_w, rk_err *err);
/* rk_model_predict_members with every tower's dense math on a GPU (dev from
 * nn.h rk_device_open; NULL = the CPU). Embedding bags are still pooled on
 * the host; each chunk's tower input is copied to the device and the logits
 * back. The dense parameters are copied to the device for the call. Scores
 * equal the CPU path's within 1e-5 (tests/test_cuda.c). Errors: those of
 * rk_model_predict, and RK_EIO naming the CUDA error. */
rk_status rk_model_predict_dev(const rk_model *m, const rk_batch *b, rk_device *dev, float *pctr, float *member_pctr,
                               float *member_w, rk_err *err);

/* ====================================================================== training */

typedef struct {
    const char *train_path, *valid_path, *test_path; /* test optional */
    int quiet;
} rk_train_io;

/* Train per cfg on train_path with early stopping on valid AUC, keeping the
 * best epoch's parameters. Fills metrics (valid/test) and returns the model.
 * Progress bar with examples/s on stderr. A single model minimizes BCE; an
 * ensemble (cfg->n_members > 0) trains all members in one run on the
 * collaborative loss of rank/fusion.c (lambda = 0: members independent but
 * for the fused term's gradient; w_fused = 0 and lambda = 0: independent). */
typedef struct {
    int best_epoch, epochs_run;
    double train_examples_per_s;
    rk_metrics valid, test;          /* the model's (an ensemble's fused) metrics */
    int have_test;
    int n_members;                   /* ensembles: each member's metrics inside the ensemble */
    rk_metrics *member_valid, *member_test; /* [n_members] (NULL for a single model), owned */
} rk_train_report;
rk_status rk_train(const rk_model_cfg *cfg, const rk_train_io *io, rk_model **out,
                   rk_train_report *rep, rk_err *err);
/* Free what a report owns (the member metrics). NULL-safe. */
void rk_train_report_free(rk_train_report *rep);

/* ---- online trainer: one optimizer step at a time (streaming, distillation)
 *
 * rk_train's per-step machinery for callers that own the loop and the loss
 * (distill/'s streaming ExFM students and teachers): forward a mini-batch,
 * read the logits and the backbone output, then give d loss / d logit and
 * optionally an extra gradient at the backbone output; one step applies
 * Adam to the dense parameters and Adagrad to the touched embedding rows,
 * exactly as rk_train does. Single models only (not ensembles). */
typedef struct rk_trainer rk_trainer;
/* Width H of the backbone output: the last hidden layer (the output layer's
 * input); the tower input width D when the MLP has no hidden layer. */
int rk_model_backbone_dim(const rk_model *m);
/* Trainer of m (RAM tables, e.g. from rk_model_create) for batches of up to
 * max_rows rows gathered from src (src sizes the per-feature value buffers:
 * max_rows x src's widest row). m must outlive it. RK_EINVAL for an
 * ensemble or a model without RAM tables; RK_ENOMEM. */
rk_status rk_trainer_create(rk_model *m, const rk_batch *src, int max_rows, rk_trainer **out, rk_err *err);
void rk_trainer_destroy(rk_trainer *t);
/* Forward rows idx[0..n) of src (n <= max_rows). *logit gets [n] logits,
 * *hidden (may be NULL) the backbone output [n, H], both owned by t and
 * valid until the next call; labels of the rows are in *labels [n]. */
rk_status rk_trainer_forward(rk_trainer *t, const rk_batch *src, const uint32_t *idx, int n, const float **logit,
                             const float **hidden, const float **labels, rk_err *err);
/* Backward of the last forward and one optimizer step. dlogit[n]: d loss /
 * d logit (the batch mean already applied); dhidden [n, H] or NULL: a
 * gradient added at the backbone output (ExFM's scaled auxiliary-head
 * gradient). Adam's step counter is the trainer's own (1-based). */
void rk_trainer_step(rk_trainer *t, const float *dlogit, const float *dhidden);
/* A batch with room for cap_rows rows and values_per_feature hashed values
 * per sparse feature (labels, dense slots zeroed). RK_ENOMEM. Free with
 * rk_batch_free. */
rk_status rk_batch_alloc(rk_batch *b, const rk_model_cfg *c, int cap_rows, size_t values_per_feature, rk_err *err);
void rk_batch_free(rk_batch *b);
/* Copy rows idx[0..n) of src into dst (CSR rebuilt; dst from rk_batch_alloc
 * with room for n rows and their values). */
void rk_batch_gather(const rk_batch *src, const rk_model_cfg *c, const uint32_t *idx, int n, rk_batch *dst);

/* EmbSum: UPE / CPE content poly-embeddings (rank/embsum.h). */
#include "embsum.h"

#endif /* RK_RANK_H */
