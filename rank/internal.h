/*
 * rank/internal.h — private to rank/: the model's layout shared by the
 * model, trainer and scorer files. Other modules include rank.h only.
 */
#ifndef RK_RANK_INTERNAL_H
#define RK_RANK_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "embed.h"
#include "rank.h"
#include "store.h"

/* Pointers to each layer's tensors inside one parameter-sized array (the
 * parameters themselves, or a gradient / optimizer state of the same layout).
 * The per-layer arrays live in one allocation, mem (rk_param_ptrs_free). */
typedef struct {
    float **cW, **cb;                             /* [n_cross] DCNv2 cross layers */
    float **mW, **mb;                             /* [n_hidden] MLP */
    float *oW, *ob;                               /* output layer */
    float *fW, *fb;                               /* DeepFM first-order term (NULL otherwise) */
    float **mem;
} rk_param_ptrs;

typedef struct {
    char name[32];
    int ndim;
    int64_t shape[2];
    size_t off, n; /* floats */
} rk_param_desc;

/* Forward/backward activations for up to cap rows. */
typedef struct {
    int cap;
    float *x0;                    /* [B, D] tower input */
    float **xs;                   /* [n_cross+1] cross outputs xs[l+1]; xs[0] == x0 */
    float **us;                   /* [n_cross] cross pre-activations W x_l + b */
    float **act;                  /* [n_hidden] MLP outputs after ReLU */
    float *logit;                 /* [B] */
    float *pre;                   /* [max(D, widest hidden)] shared-prefix sums (rk_gemm_prefix_sums) */
    float *fm;                    /* [2B] DeepFM terms */
    /* backward */
    float *dlogit, *da, *db_, *dx0, *dxl, *scratch;
    /* optional extra gradient at the backbone output (the input of the
     * output layer, [B, H]), added before the backward pass goes below it;
     * NULL (default) = none. Set by rk_trainer_step (ExFM's auxiliary head). */
    const float *dh_extra;
    /* training only: MLP dropout probability (0 = none, scoring) and the
     * RNG drawing its masks (seeded by the trainer) */
    float dropout;
    rk_rng drop_rng;
    float *mem;
    float **ptrs;                 /* one allocation behind xs, us and act */
} rk_work;

struct rk_model {
    rk_model_cfg cfg;
    int D;                        /* tower input width */
    int *col;                     /* [n_features] column offset of each feature in x0 */
    int max_dim;                  /* widest embedding */
    /* dense parameters: one allocation, pointers into it */
    int n_params;
    rk_param_desc *pd;            /* [n_params] */
    size_t n_floats;
    float *params;
    rk_param_ptrs p;
    /* serving: the weight matrices packed once for rk_gemm_forward (nn/gemm.c),
     * set at rk_model_open; packed == NULL: the OpenBLAS path (training) */
    float *packed;
    rk_param_ptrs pk;             /* cW, mW, oW, fW into packed; biases unused */
    int user_prefix;              /* x0 columns [0, user_prefix) are user-side features */
    int n_fm;                     /* DeepFM: sparse fields in the FM term */
    int *fm_cols;                 /* [n_features] their x0 columns */
    int fm_k;                     /* their common dim */
    /* embedding tables: RAM (training) or a store (serving) */
    float **tables;               /* [n_features]: [table_size, dim] when in RAM */
    rk_store *store;
    int *store_table;             /* [n_features] */
    char version[2 * RK_NAME_MAX + 2];
    char dir[4096];               /* bundle directory, symlinks resolved ("" when created) */
    int updatable;                /* tables opened writable: rk_model_apply_updates works */
    pthread_rwlock_t ram_mu;      /* RAM table rows: readers pool, pending updates are written (updatable only) */
    /* Updates written to the store but not yet to the RAM copy, newest
     * first: rk_model_apply_updates pushes them without a lock, the next
     * lookup writes them under ram_mu (rk_model_ram_drain). So the thread
     * applying updates, which may run at background priority, never holds
     * a lock a scoring thread waits for. */
    _Atomic(struct rk_ram_update *) ram_pending;
    /* Written ones, freed by the next rk_model_apply_updates: the thread
     * that allocated them frees them, so a scorer never takes the updating
     * thread's malloc arena lock either. */
    _Atomic(struct rk_ram_update *) ram_done;
    /* CETNet ensemble: members own their tables and towers; this model holds
     * only the shared feature definitions and the fusion (log tau). */
    int n_members;
    rk_model **member;            /* [n_members] */
    float log_tau;
    /* semantic IDs (rank/sid.c): per feature with param != hash, the item
     * records (cfg.features[f].items points here) and the codebooks
     * (levels == 0: none), both owned */
    rk_sid_items **sid_items;     /* [n_features] */
    rk_sid_codebook *sid_cb;      /* [n_features] */
};

/* ---- semantic IDs (rank/sid.c) */
/* Rows of one value of sparse feature ft into out[<= RK_SID_MAX_LEVELS]
 * (rank.h rk_feature.param); returns how many (0: an item without codes).
 * *unknown = 1 when the value is not a known item (param != hash). */
int rk_value_rows(const rk_feature *ft, const char *value, size_t len, uint64_t *out, int *unknown);
/* Item id of a semantic-ID / individual feature value v[len]: 1 and *out set
 * when it is a canonical decimal int64 ("-?[1-9][0-9]*" or "0", no spaces,
 * no '+', no leading zeros, in range), else 0. */
int rk_sid_parse_id(const char *v, size_t len, int64_t *out);
/* Rows of a code tuple (L = the feature's records' levels) under ft's param. */
int rk_codes_rows(const rk_feature *ft, const uint32_t *codes, uint64_t *out);
/* The records fit the feature: param valid for their L, individual's table
 * holds every item + the OOV row. */
rk_status rk_sid_check_feature(const rk_feature *ft, const rk_sid_items *it, rk_err *err);
/* Load every feature's records (and the codebooks, when the records file
 * holds them) from features[].sid where param != hash and items is NULL;
 * sets features[].items. owned[]/cbs[] [n_features] receive what was
 * loaded (the caller frees or hands it to a model). */
rk_status rk_cfg_sid_attach(rk_model_cfg *cfg, rk_sid_items **owned, rk_sid_codebook *cbs, rk_err *err);
/* "sid.<feature>": the bundle's column family of the feature's records. */
void rk_sid_table_name(const rk_feature *ft, char *buf, size_t cap);
/* Keyed-table data of the records: keys (item ids, ascending) and codes
 * as float32 [n, L]; both rk_malloc'd (caller frees). */
rk_status rk_sid_table_data(const rk_sid_items *it, uint64_t **keys, float **data, rk_err *err);
/* Read the records of ft from the bundle's store table "sid.<feature>". */
rk_status rk_sid_load_from_store(rk_store *st, const rk_feature *ft, int K, const char *version,
                                 rk_sid_items **out, rk_err *err);

json_t *rk_cfg_to_json(const rk_model_cfg *c);

/* ---- a tower on a GPU (rank/device.c, over nn.h's rk_dev_* ops) */
/* m's dense parameters copied to dev once, device activations for up to
 * max_rows rows and pinned staging for the tower input and the logits. m is
 * a single model (an ensemble's member, not the ensemble). */
typedef struct rk_tower_dev rk_tower_dev;
rk_status rk_tower_dev_create(const rk_model *m, rk_device *dev, int max_rows, rk_tower_dev **out, rk_err *err);
void rk_tower_dev_destroy(rk_tower_dev *t); /* NULL: no-op */
/* logit[B] (host) = the tower (cross layers, MLP, output, DeepFM terms) over
 * x0[B, m->D] (host), B <= max_rows; what rk_model_forward leaves in
 * w->logit. Synchronous. */
rk_status rk_tower_dev_forward(rk_tower_dev *t, const float *x0, int B, float *logit, rk_err *err);

/* Lay out dense parameters for cfg (names, shapes, offsets; m->pd sized for
 * them) and point the per-layer pointers into base (params or a gradient
 * array of n_floats). rk_model_point allocates p's per-layer arrays once
 * (reused when p already has them); rk_param_ptrs_free releases them. */
rk_status rk_model_layout(rk_model *m, rk_err *err);
rk_status rk_model_point(const rk_model *m, float *base, rk_param_ptrs *p, rk_err *err);
void rk_param_ptrs_free(rk_param_ptrs *p);
/* rk_batch_alloc with per-feature value capacities caps[n_features]. */
rk_status rk_batch_alloc_caps(rk_batch *b, const rk_model_cfg *c, int cap_rows, const size_t *caps, rk_err *err);

/* Fusion of M member pCTRs (papers.md §6.4): fused pCTR, weights w[M]
 * (w may be NULL). Any M >= 1; no allocation. */
double rk_fuse(rk_fusion_type type, const float *p, int M, double tau, double *w);
/* Gradients of the collaborative loss for one example (see rank/fusion.c):
 * given member logits z[M] and label y, writes dz[M] (d loss / d z_i, not yet
 * divided by the batch size) and returns the example's loss; *dlog_tau gets
 * d loss / d log(tau). */
double rk_collab_grad(const rk_fusion_cfg *f, double tau, const float *z, int M, float y, double *dz,
                      double *dlog_tau);

rk_status rk_work_init(rk_work *w, const rk_model *m, int cap, int backward, rk_err *err);
void rk_work_free(rk_work *w);

/* Fill w->x0 for batch rows [0, B): sparse features from RAM tables or the
 * store (scr required then), dense slots from b->dense. */
rk_status rk_model_fill_x0(const rk_model *m, const rk_batch *b, rk_work *w, rk_embed_scratch *scr,
                           rk_err *err);
/* The same; same[f] != 0 (same may be NULL) says every row has the same
 * bag of sparse feature f (a request's user side): only row 0's bag is read
 * and pooled, once (rows 1.. may be empty: rk_scorer leaves them so). */
rk_status rk_model_fill_x0_ex(const rk_model *m, const rk_batch *b, rk_work *w, rk_embed_scratch *scr,
                              const uint8_t *same, rk_err *err);
/* Pack the weights for rk_gemm_forward (m->packed); rk_model_unpack drops
 * them (the trainer does, as it changes the weights). */
rk_status rk_model_pack(rk_model *m, rk_err *err);
void rk_model_unpack(rk_model *m);
/* Tower forward from w->x0 to w->logit for B rows: packed kernels with fused
 * epilogues when m->packed (w->us then not written: inference only), else
 * OpenBLAS + separate ReLU / cross ops (what backward needs). */
void rk_model_forward(const rk_model *m, rk_work *w, int B);
/* Backward from dlogit (already in w->dlogit) into the gradient array g
 * (same layout as params, accumulated) and w->dx0. */
void rk_model_backward(const rk_model *m, rk_work *w, int B, float *g);

/* Standardized dense value: ((log1p ? log1p(raw) : raw) - mean) / std.
 * Returns RK_ENUMERIC when raw or the result is not finite. */
rk_status rk_dense_value(const rk_feature *f, double raw, float *out);
/* log1p per the feature's option: x, log1p(x), or log1p(max(x, 0)) for
 * "clamp"; RK_EINVAL when x <= -1 under plain log1p (undefined there). */
rk_status rk_dense_log1p(const rk_feature *f, double raw, double *out);
/* Why rk_dense_value refused raw, for an error message: "not a finite
 * number within +-1e9", "log1p of -1 is undefined (...)", ... */
const char *rk_dense_why(const rk_feature *f, double raw);

/* Batch helpers (rk_batch_alloc, rk_batch_free, rk_batch_gather): rank.h. */



/* The engine of `rank data log` (rank/data_log.c), shared by its presets
 * (MovieLens): the delimited log in buf (len bytes, parsed in place; file
 * names it in errors) by the schema object (the keys of a schema file) into
 * out_dir's train.tsv, valid.tsv and test.tsv, each fsynced and renamed in.
 * Fewer than min_train train rows is an error. rows/pos: rows and positives
 * written per split (train, valid, test). schema.json is the caller's. */
rk_status rk_data_log_convert(json_t *schema, char *buf, size_t len, const char *file, const char *out_dir, size_t min_train,
                              size_t rows[3], size_t pos[3], rk_err *err);
/* dir/name: the JSON object o, indented by 2, one newline at the end,
 * written atomically (rk_write_file_atomic): the data converters' schema.json. */
rk_status rk_data_write_json(const char *dir, const char *name, const json_t *o, rk_err *err);

#endif
