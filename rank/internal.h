/*
 * rank/internal.h — private to rank/: the model's layout shared by the
 * model, trainer and scorer files. Other modules include rank.h only.
 */
#ifndef RK_RANK_INTERNAL_H
#define RK_RANK_INTERNAL_H

#include <jansson.h>

#include "embed.h"
#include "rank.h"
#include "store.h"

#define RK_MAX_PARAMS (2 * 8 + 2 * RK_MAX_HIDDEN + 2)

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
    /* backward */
    float *dlogit, *da, *db_, *dx0, *dxl, *scratch;
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
    float *cross_W[8], *cross_b[8], *mlp_W[RK_MAX_HIDDEN], *mlp_b[RK_MAX_HIDDEN], *out_W, *out_b;
    /* embedding tables: RAM (training) or a store (serving) */
    float *tables[RK_MAX_FEATURES]; /* [table_size, dim] when in RAM */
    rk_store *store;
    int store_table[RK_MAX_FEATURES];
    char version[2 * RK_NAME_MAX + 2];
};

json_t *rk_cfg_to_json(const rk_model_cfg *c);

/* Lay out dense parameters for cfg (names, shapes, offsets) and point the
 * per-layer pointers into base (params or a gradient array of n_floats). */
void rk_model_layout(rk_model *m);
void rk_model_point(const rk_model *m, float *base, float **cross_W, float **cross_b, float **mlp_W,
                    float **mlp_b, float **out_W, float **out_b);

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

/* Batch helpers. */
rk_status rk_batch_alloc(rk_batch *b, const rk_model_cfg *c, int cap_rows, size_t values_per_feature, rk_err *err);
void rk_batch_free(rk_batch *b);

#endif
