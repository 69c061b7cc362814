/*
 * rank/internal.h — private to rank/: the model's layout shared by the
 * model, trainer and scorer files. Other modules include rank.h only.
 */
#ifndef RK_RANK_INTERNAL_H
#define RK_RANK_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "embed.h"
#include "rank.h"
#include "store.h"

#define RK_MAX_PARAMS (2 * 8 + 2 * RK_MAX_HIDDEN + 4)

/* Pointers to each layer's tensors inside one parameter-sized array (the
 * parameters themselves, or a gradient / optimizer state of the same layout). */
typedef struct {
    float *cW[8], *cb[8];                         /* DCNv2 cross layers */
    float *mW[RK_MAX_HIDDEN], *mb[RK_MAX_HIDDEN]; /* MLP */
    float *oW, *ob;                               /* output layer */
    float *fW, *fb;                               /* DeepFM first-order term (NULL otherwise) */
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
    float *xs[9];                 /* cross outputs xs[l+1]; xs[0] == x0 */
    float *us[8];                 /* cross pre-activations W x_l + b */
    float *act[RK_MAX_HIDDEN];    /* MLP outputs after ReLU */
    float *logit;                 /* [B] */
    float *fm;                    /* [2B] DeepFM terms */
    /* backward */
    float *dlogit, *da, *db_, *dx0, *dxl, *scratch;
    /* optional extra gradient at the backbone output (the input of the
     * output layer, [B, H]), added before the backward pass goes below it;
     * NULL (default) = none. Set by rk_trainer_step (ExFM's auxiliary head). */
    const float *dh_extra;
    float *mem;
} rk_work;

struct rk_model {
    rk_model_cfg cfg;
    int D;                        /* tower input width */
    int col[RK_MAX_FEATURES];     /* column offset of each feature in x0 */
    int max_dim;                  /* widest embedding */
    /* dense parameters: one allocation, pointers into it */
    int n_params;
    rk_param_desc pd[RK_MAX_PARAMS];
    size_t n_floats;
    float *params;
    rk_param_ptrs p;
    int n_fm;                     /* DeepFM: sparse fields in the FM term */
    int fm_cols[RK_MAX_FEATURES]; /* their x0 columns */
    int fm_k;                     /* their common dim */
    /* embedding tables: RAM (training) or a store (serving) */
    float *tables[RK_MAX_FEATURES]; /* [table_size, dim] when in RAM */
    rk_store *store;
    int store_table[RK_MAX_FEATURES];
    char version[2 * RK_NAME_MAX + 2];
    char dir[4096];               /* bundle directory, symlinks resolved ("" when created) */
    int updatable;                /* tables opened writable: rk_model_apply_updates works */
    pthread_rwlock_t ram_mu;      /* RAM table rows: readers pool, updates write (updatable only) */
    /* CETNet ensemble: members own their tables and towers; this model holds
     * only the shared feature definitions and the fusion (log tau). */
    int n_members;
    rk_model *member[RK_MAX_MEMBERS];
    float log_tau;
    /* semantic IDs (rank/sid.c): per feature with param != hash, the item
     * records (cfg.features[f].items points here) and the codebooks
     * (levels == 0: none), both owned */
    rk_sid_items *sid_items[RK_MAX_FEATURES];
    rk_sid_codebook sid_cb[RK_MAX_FEATURES];
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

/* Lay out dense parameters for cfg (names, shapes, offsets) and point the
 * per-layer pointers into base (params or a gradient array of n_floats). */
void rk_model_layout(rk_model *m);
void rk_model_point(const rk_model *m, float *base, rk_param_ptrs *p);

/* Fusion of M member pCTRs (papers.md §6.4): fused pCTR, weights w[M]. */
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
/* Tower forward from w->x0 to w->logit for B rows. */
void rk_model_forward(const rk_model *m, rk_work *w, int B);
/* Backward from dlogit (already in w->dlogit) into the gradient array g
 * (same layout as params, accumulated) and w->dx0. */
void rk_model_backward(const rk_model *m, rk_work *w, int B, float *g);

/* Standardized dense value: ((log1p ? log1p(raw) : raw) - mean) / std.
 * Returns RK_ENUMERIC when raw or the result is not finite. */
rk_status rk_dense_value(const rk_feature *f, double raw, float *out);

/* Batch helpers (rk_batch_alloc, rk_batch_free, rk_batch_gather): rank.h. */


/* ---- RFC 4180 reader of rank/data_movielens.c, shared with rank/embsum_data.c */
#define RK_CSV_MAX_FIELDS 8
typedef struct {
    char *s; /* NUL-terminated in place */
    size_t len;
} rk_csv_field;
typedef struct {
    const char *file;               /* base name for messages */
    const char *const *cols;        /* column names for messages */
    int ncols;
    char *p, *end;
    size_t row;                     /* record number of the last record read */
} rk_csv_reader;
/* Next record: up to RK_CSV_MAX_FIELDS fields into f (unescaped in place),
 * *nf = the record's field count. 1 with a record, 0 at the end, or a
 * negative rk_status on a syntax error naming file, row and column. */
int rk_csv_next(rk_csv_reader *r, rk_csv_field *f, int *nf, rk_err *err);
/* The header record: exactly r->cols in order (a UTF-8 BOM is skipped). */
rk_status rk_csv_header(rk_csv_reader *r, rk_err *err);

#endif
