/*
 * rank/device.c — a model's tower on a GPU, through nn.h's device ops.
 *
 * The same tower as rk_model_forward (DCNv2 cross layers, the ReLU MLP, the
 * output layer, DeepFM's first- and second-order terms), run with the
 * rk_dev_* ops of nn/'s CUDA backend instead of the CPU ops:
 *
 *   host x0 [B, D] --memcpy--> pinned staging --upload--> device x0
 *   device: cross layers (cuBLAS + epilogue), MLP (cuBLAS, bias+ReLU fused),
 *           logit; DeepFM: w_fm . x0 + b_fm and the FM term
 *   device logit (and DeepFM terms) --download--> pinned --> host logit
 *
 * The dense parameters are one device allocation with the host layout
 * (rk_model_point gives the per-layer pointers into it), copied once at
 * creation; activations and staging are sized for max_rows at creation, so
 * a forward allocates nothing. Embedding bags are pooled on the host (the
 * tables stay where the model keeps them: RAM or the store); a device cache
 * of hot rows is not built. DeepFM's final sum is done on the host in the
 * CPU path's float order, so both paths add the same three numbers.
 */
#include <string.h>

#include "internal.h"

struct rk_tower_dev {
    const rk_model *m;
    rk_device *dev;
    int cap;
    float *params;      /* device: m->n_floats */
    rk_param_ptrs p;    /* device pointers into params */
    float *act;         /* device: x0 | two cross buffers | u | two MLP buffers | logit | fm1 | fm2 */
    float *x0, *xa, *xb, *u, *ha, *hb, *logit, *fm1, *fm2;
    int *fm_cols;       /* device copy of m->fm_cols (DeepFM) */
    float *stage;       /* pinned: x0 [cap, D] then 3 x [cap] */
};

void rk_tower_dev_destroy(rk_tower_dev *t) {
    if (!t) return;
    rk_device_free(t->dev, t->params);
    rk_device_free(t->dev, t->act);
    rk_device_free(t->dev, t->fm_cols);
    rk_device_free_host(t->dev, t->stage);
    rk_param_ptrs_free(&t->p);
    rk_free(t);
}

/* Device activations: carve t->act into the buffers the forward uses. */
static size_t lay_out_act(rk_tower_dev *t, float *base) {
    const rk_tower_cfg *tc = &t->m->cfg.tower;
    size_t B = (size_t)t->cap, D = (size_t)t->m->D, H = 1;
    for (int i = 0; i < tc->n_hidden; i++)
        if ((size_t)tc->hidden[i] > H) H = (size_t)tc->hidden[i];
    size_t off = 0;
#define CARVE(field, n) (t->field = base ? base + off : NULL, off += (n))
    CARVE(x0, B * D);
    CARVE(xa, B * D);
    CARVE(xb, B * D);
    CARVE(u, B * D);
    CARVE(ha, B * H);
    CARVE(hb, B * H);
    CARVE(logit, B);
    CARVE(fm1, B);
    CARVE(fm2, B);
#undef CARVE
    return off;
}

rk_status rk_tower_dev_create(const rk_model *m, rk_device *dev, int max_rows, rk_tower_dev **out, rk_err *err) {
    *out = NULL;
    RK_ASSERT(m->n_members == 0 && max_rows > 0);
    rk_tower_dev *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "device tower: out of memory");
    t->m = m, t->dev = dev, t->cap = max_rows;
    size_t n_act = lay_out_act(t, NULL), stage = (size_t)max_rows * ((size_t)m->D + 3);
    void *params = NULL, *act = NULL, *cols = NULL, *pinned = NULL;
    rk_status s = rk_device_alloc(dev, m->n_floats * sizeof(float), &params, err);
    if (s == RK_OK) t->params = params, s = rk_device_alloc(dev, n_act * sizeof(float), &act, err);
    if (s == RK_OK) t->act = act, s = rk_device_alloc(dev, (size_t)(m->n_fm + 1) * sizeof(int), &cols, err);
    if (s == RK_OK) t->fm_cols = cols, s = rk_device_alloc_host(dev, stage * sizeof(float), &pinned, err);
    if (s == RK_OK) t->stage = pinned, s = rk_device_upload(dev, t->params, m->params, m->n_floats * sizeof(float), err);
    if (s == RK_OK && m->n_fm) s = rk_device_upload(dev, t->fm_cols, m->fm_cols, (size_t)m->n_fm * sizeof(int), err);
    if (s == RK_OK) s = rk_device_sync(dev, err);
    if (s) {
        rk_tower_dev_destroy(t);
        return rk_err_prefix(err, "device tower (%s)", rk_device_describe(dev));
    }
    lay_out_act(t, t->act);
    if ((s = rk_model_point(m, t->params, &t->p, err)) != RK_OK) {
        rk_tower_dev_destroy(t);
        return s;
    }
    *out = t;
    return RK_OK;
}

/* Queue the tower over the device x0; the logit ends in t->logit. */
static void queue_tower(rk_tower_dev *t, int B) {
    const rk_model *m = t->m;
    const rk_tower_cfg *tc = &m->cfg.tower;
    const int D = m->D;
    const float *xl = t->x0;
    for (int l = 0; l < tc->n_cross; l++) {
        float *xo = (l % 2 == 0) ? t->xa : t->xb;
        rk_dev_cross_forward(t->dev, xo, t->u, t->x0, xl, t->p.cW[l], t->p.cb[l], B, D);
        xl = xo;
    }
    const float *h = xl;
    int prev = D;
    for (int i = 0; i < tc->n_hidden; i++) {
        float *o = (i % 2 == 0) ? t->ha : t->hb;
        rk_dev_linear_forward(t->dev, o, h, t->p.mW[i], t->p.mb[i], B, prev, tc->hidden[i], 1);
        h = o, prev = tc->hidden[i];
    }
    rk_dev_linear_forward(t->dev, t->logit, h, t->p.oW, t->p.ob, B, prev, 1, 0);
    if (tc->type == RK_TOWER_DEEPFM) {
        rk_dev_linear_forward(t->dev, t->fm1, t->x0, t->p.fW, t->p.fb, B, D, 1, 0);
        rk_dev_fm_forward(t->dev, t->fm2, t->x0, (size_t)D, t->fm_cols, m->n_fm, m->fm_k, B);
    }
}

rk_status rk_tower_dev_forward(rk_tower_dev *t, const float *x0, int B, float *logit, rk_err *err) {
    RK_ASSERT(B >= 0 && B <= t->cap);
    if (B == 0) return RK_OK;
    const size_t nx = (size_t)B * (size_t)t->m->D;
    const int fm = t->m->cfg.tower.type == RK_TOWER_DEEPFM;
    float *s_x0 = t->stage, *s_out = t->stage + (size_t)t->cap * (size_t)t->m->D;
    memcpy(s_x0, x0, nx * sizeof(float));
    rk_status s = rk_device_upload(t->dev, t->x0, s_x0, nx * sizeof(float), err);
    if (s == RK_OK) {
        queue_tower(t, B);
        /* logit, fm1 and fm2 lie back to back ([cap] each): one download. */
        size_t n = fm ? 3 * (size_t)t->cap : (size_t)B;
        s = rk_device_download(t->dev, s_out, t->logit, n * sizeof(float), err);
    }
    if (s == RK_OK) s = rk_device_sync(t->dev, err);
    if (s) return rk_err_prefix(err, "tower on %s", rk_device_describe(t->dev));
    for (int b = 0; b < B; b++)
        logit[b] = fm ? s_out[b] + (s_out[t->cap + b] + s_out[2 * t->cap + b]) : s_out[b];
    return RK_OK;
}
