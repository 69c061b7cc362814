/*
 * embed/vision_encoder.c — a DINOv2 vision transformer (ViT-S/14 and any
 * checkpoint of the same architecture in HuggingFace's Dinov2Model layout),
 * inference only: images [n, 3, S, S] (already normalized, see embed/image.c)
 * -> one embedding per image.
 *
 * Loading (rk_vision_encoder_open): DIR/config.json (model_type "dinov2",
 * hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, patch_size,
 * image_size, layer_norm_eps) and DIR/model.safetensors (F32, Dinov2Model's
 * state_dict names; scripts/setup-vision.sh writes both from the ONNX file).
 * Every tensor's shape is checked against config.json.
 *
 * Memory (CONVENTIONS.md "Memory"): parameters in ONE allocation with a
 * struct of pointers into it, Q/K/V fused into one [3H, H] matrix; the
 * position table resized to the input grid is computed once at open and
 * lives in the same allocation. Activations live in one workspace sized at
 * open for max_batch images; encode never allocates and runs larger n in
 * chunks of max_batch.
 *
 * Forward (Oquab et al. 2023, "DINOv2"; Dosovitskiy et al. 2021, "An Image
 * is Worth 16x16 Words", §3.1), per chunk of n images, g = S / patch,
 * P = g*g patches, L = 1 + P tokens per image, T = n L:
 *   patches = im2col(images)                         [n P, 3 p p]
 *   e = patches W_patch^T + b  (the 14x14 stride-14 conv as one GEMM)
 *   x[i] = [cls ; e_i] + [pos_cls ; resize(pos_grid, g x g)]      [T, H]
 *   per layer (pre-norm, LayerScale, Touvron et al. 2021 "CaiT" §2):
 *     x += ls1 ⊙ (attention(LN1(x) Wqkv^T + bqkv) Wo^T + bo)
 *     x += ls2 ⊙ (gelu(LN2(x) W1^T + b1) W2^T + b2)
 *   y = LN(x); out = y[CLS] (or mean of y over patch tokens); optional L2.
 * The position grid (37x37 for 518 px) is resized to g x g as the ONNX
 * export does it: Resize mode cubic, cubic_coeff_a -0.75, half_pixel,
 * by target size, no antialias, edge-clamped taps (pos_resize below).
 * Ops are nn/'s (LayerNorm, GELU, attention, Linear); the attention's
 * softmax is unmasked within each image (offsets per image).
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "embed.h"
#include "internal.h"

typedef struct {
    float *ln1_g, *ln1_b, *wqkv, *bqkv, *wo, *bo, *ls1;
    float *ln2_g, *ln2_b, *w1, *b1, *w2, *b2, *ls2;
} vlayer_t;

struct rk_vision_encoder {
    rk_vit_config c;
    rk_vision_encoder_opts o;
    int grid, n_patch, n_tok, kdim; /* g, P = g*g, L = 1+P, 3 p p */
    float *params;
    float *patch_w, *patch_b, *cls, *pos_native, *pos, *lnf_g, *lnf_b;
    vlayer_t *layer;
    float *work;
    float *cols, *x, *xn, *qkv, *ctx, *tmp, *ff, *att;
    int32_t *offsets;
};

/* ---------------------------------------------------------------- config */

rk_status rk_vit_config_load(const char *dir, rk_vit_config *c, rk_err *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    rk_status s;
    json_t *j = rk_embed_load_json(path, err, &s);
    if (!j) return s;
    memset(c, 0, sizeof *c);
    int mlp_ratio = 0;
    (void)((s = rk_embed_cfg_str_is(j, path, "model_type", "dinov2", err)) ||
           (s = rk_embed_cfg_str_is(j, path, "hidden_act", "gelu", err)) ||
           (s = rk_embed_cfg_int(j, path, "hidden_size", -1, 1, 1 << 14, &c->hidden, err)) ||
           (s = rk_embed_cfg_int(j, path, "num_hidden_layers", -1, 1, 1024, &c->n_layers, err)) ||
           (s = rk_embed_cfg_int(j, path, "num_attention_heads", -1, 1, 1024, &c->n_heads, err)) ||
           (s = rk_embed_cfg_int(j, path, "mlp_ratio", 4, 1, 64, &mlp_ratio, err)) ||
           (s = rk_embed_cfg_int(j, path, "patch_size", -1, 1, 64, &c->patch, err)) ||
           (s = rk_embed_cfg_int(j, path, "image_size", -1, 1, 4096, &c->native_size, err)) ||
           (s = rk_embed_cfg_int(j, path, "num_channels", 3, 3, 3, &c->channels, err)));
    json_t *v;
    if (!s && json_is_true(json_object_get(j, "use_swiglu_ffn")))
        s = rk_fail(err, RK_EFORMAT, "%s: use_swiglu_ffn is not supported", path);
    c->layer_norm_eps = 1e-6f;
    if (!s && (v = json_object_get(j, "layer_norm_eps"))) {
        if (!json_is_number(v)) s = rk_fail(err, RK_EFORMAT, "%s: 'layer_norm_eps' must be a number", path);
        else c->layer_norm_eps = (float)json_number_value(v);
    }
    c->cubic_a = -0.75f;
    json_t *pr = json_object_get(j, "pos_embed_resize");
    if (!s && pr && (v = json_object_get(pr, "cubic_coeff_a")) && json_is_number(v)) c->cubic_a = (float)json_number_value(v);
    c->intermediate = c->hidden * mlp_ratio;
    if (!s && c->hidden % c->n_heads)
        s = rk_fail(err, RK_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, c->hidden,
                    c->n_heads);
    if (!s && c->native_size % c->patch)
        s = rk_fail(err, RK_EFORMAT, "%s: image_size %d is not a multiple of patch_size %d", path, c->native_size,
                    c->patch);
    json_decref(j);
    return s;
}

/* ---------------------------------------------------------------- position resize */

/* Cubic convolution weights (Keys 1981) for fractional offset t in [0,1),
 * taps at -1, 0, 1, 2; a = cubic_coeff_a. Same polynomial as ONNX Resize. */
static void cubic_w(double t, double a, double w[4]) {
    double d[4] = {1 + t, t, 1 - t, 2 - t};
    for (int k = 0; k < 4; k++) {
        double x = d[k];
        w[k] = x <= 1 ? ((a + 2) * x - (a + 3)) * x * x + 1 : ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    }
}

/* dst[go*go, H] = resize of src[gi*gi, H] (row-major grid, y then x): ONNX
 * Resize cubic, half_pixel: in = (out + 0.5) / scale - 0.5 with scale =
 * go / gi in float (as onnxruntime computes it from target sizes), taps
 * clamped to the edge, no antialias. Separable, accumulated in double. */
static void pos_resize(float *dst, const float *src, int gi, int go, int H, double a) {
    const float scale = (float)go / (float)gi;
    for (int oy = 0; oy < go; oy++) {
        float sy = ((float)oy + 0.5f) / scale - 0.5f;
        int y0 = (int)floorf(sy);
        double wy[4];
        cubic_w(sy - y0, a, wy);
        for (int ox = 0; ox < go; ox++) {
            float sx = ((float)ox + 0.5f) / scale - 0.5f;
            int x0 = (int)floorf(sx);
            double wx[4];
            cubic_w(sx - x0, a, wx);
            float *d = dst + ((size_t)oy * go + ox) * H;
            for (int h = 0; h < H; h++) {
                double acc = 0;
                for (int ky = 0; ky < 4; ky++) {
                    int yy = y0 - 1 + ky;
                    yy = yy < 0 ? 0 : yy >= gi ? gi - 1 : yy;
                    double row = 0;
                    for (int kx = 0; kx < 4; kx++) {
                        int xx = x0 - 1 + kx;
                        xx = xx < 0 ? 0 : xx >= gi ? gi - 1 : xx;
                        row += wx[kx] * src[((size_t)yy * gi + xx) * H + h];
                    }
                    acc += wy[ky] * row;
                }
                d[h] = (float)acc;
            }
        }
    }
}

/* ---------------------------------------------------------------- weights */

static rk_status rd(const rk_st_file *f, const char *name, float *dst, int nd, int64_t d0, int64_t d1, int64_t d2,
                    int64_t d3, rk_err *err) {
    int64_t shape[4] = {d0, d1, d2, d3};
    return rk_st_read_f32(f, name, dst, nd, shape, err);
}

/* Floats of the parameter allocation; layout() points into it in this order. */
static size_t n_params(const rk_vision_encoder *e) {
    const rk_vit_config *c = &e->c;
    const size_t H = (size_t)c->hidden, NI = (size_t)c->intermediate, G = (size_t)(c->native_size / c->patch);
    const size_t per_layer = 2 * H + 3 * H * H + 3 * H + H * H + H + H + 2 * H + NI * H + NI + H * NI + H + H;
    return H * (size_t)e->kdim + H + H + (1 + G * G) * H + (size_t)e->n_tok * H + 2 * H + (size_t)c->n_layers * per_layer;
}

static size_t layout(rk_vision_encoder *e, float *p) {
    const rk_vit_config *c = &e->c;
    const size_t H = (size_t)c->hidden, NI = (size_t)c->intermediate, G = (size_t)(c->native_size / c->patch);
    float *p0 = p;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(e->patch_w, H * (size_t)e->kdim);
    TAKE(e->patch_b, H);
    TAKE(e->cls, H);
    TAKE(e->pos_native, (1 + G * G) * H);
    TAKE(e->pos, (size_t)e->n_tok * H);
    TAKE(e->lnf_g, H);
    TAKE(e->lnf_b, H);
    for (int l = 0; l < c->n_layers; l++) {
        vlayer_t *L = &e->layer[l];
        TAKE(L->ln1_g, H);
        TAKE(L->ln1_b, H);
        TAKE(L->wqkv, 3 * H * H);
        TAKE(L->bqkv, 3 * H);
        TAKE(L->wo, H * H);
        TAKE(L->bo, H);
        TAKE(L->ls1, H);
        TAKE(L->ln2_g, H);
        TAKE(L->ln2_b, H);
        TAKE(L->w1, NI * H);
        TAKE(L->b1, NI);
        TAKE(L->w2, H * NI);
        TAKE(L->b2, H);
        TAKE(L->ls2, H);
    }
#undef TAKE
    return (size_t)(p - p0);
}

static rk_status read_layer(const rk_st_file *f, int l, vlayer_t *L, int64_t h, int64_t in, rk_err *err) {
    char n[160];
    rk_status s;
#define LT(suffix, dst, nd, a, b)                                                                                     \
    (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix), rd(f, n, dst, nd, a, b, 0, 0, err))
    (void)((s = LT("norm1.weight", L->ln1_g, 1, h, 0)) || (s = LT("norm1.bias", L->ln1_b, 1, h, 0)) ||
           (s = LT("attention.attention.query.weight", L->wqkv, 2, h, h)) ||
           (s = LT("attention.attention.key.weight", L->wqkv + h * h, 2, h, h)) ||
           (s = LT("attention.attention.value.weight", L->wqkv + 2 * h * h, 2, h, h)) ||
           (s = LT("attention.attention.query.bias", L->bqkv, 1, h, 0)) ||
           (s = LT("attention.attention.key.bias", L->bqkv + h, 1, h, 0)) ||
           (s = LT("attention.attention.value.bias", L->bqkv + 2 * h, 1, h, 0)) ||
           (s = LT("attention.output.dense.weight", L->wo, 2, h, h)) ||
           (s = LT("attention.output.dense.bias", L->bo, 1, h, 0)) ||
           (s = LT("layer_scale1.lambda1", L->ls1, 1, h, 0)) || (s = LT("norm2.weight", L->ln2_g, 1, h, 0)) ||
           (s = LT("norm2.bias", L->ln2_b, 1, h, 0)) || (s = LT("mlp.fc1.weight", L->w1, 2, in, h)) ||
           (s = LT("mlp.fc1.bias", L->b1, 1, in, 0)) || (s = LT("mlp.fc2.weight", L->w2, 2, h, in)) ||
           (s = LT("mlp.fc2.bias", L->b2, 1, h, 0)) || (s = LT("layer_scale2.lambda1", L->ls2, 1, h, 0)));
#undef LT
    return s;
}

static rk_status load_weights(rk_vision_encoder *e, const char *dir, rk_err *err) {
    const rk_vit_config *c = &e->c;
    const int64_t h = c->hidden, in = c->intermediate, p = c->patch, G = c->native_size / c->patch;
    e->layer = rk_calloc((size_t)c->n_layers, sizeof *e->layer);
    const size_t total = n_params(e);
    e->params = e->layer ? rk_malloc(total * sizeof(float)) : NULL;
    if (!e->params) return rk_fail(err, RK_ENOMEM, "%s: out of memory for %zu parameters", dir, total);
    RK_ASSERT(layout(e, e->params) == total);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rk_st_file *f;
    rk_status s = rk_st_open(path, &f, err);
    if (s) return s;
    (void)((s = rd(f, "embeddings.patch_embeddings.projection.weight", e->patch_w, 4, h, c->channels, p, p, err)) ||
           (s = rd(f, "embeddings.patch_embeddings.projection.bias", e->patch_b, 1, h, 0, 0, 0, err)) ||
           (s = rd(f, "embeddings.cls_token", e->cls, 3, 1, 1, h, 0, err)) ||
           (s = rd(f, "embeddings.position_embeddings", e->pos_native, 3, 1, 1 + G * G, h, 0, err)) ||
           (s = rd(f, "layernorm.weight", e->lnf_g, 1, h, 0, 0, 0, err)) ||
           (s = rd(f, "layernorm.bias", e->lnf_b, 1, h, 0, 0, 0, err)));
    for (int l = 0; l < c->n_layers && !s; l++) s = read_layer(f, l, &e->layer[l], h, in, err);
    rk_st_close(f);
    if (s) {
        rk_err_prefix(err, "%s", path);
        return s;
    }
    for (size_t i = 0; i < total; i++)
        if (!isfinite(e->params[i])) return rk_fail(err, RK_ENUMERIC, "%s: non-finite weight (parameter %zu)", path, i);
    /* the position table for this input size: CLS row as is, the grid resized */
    memcpy(e->pos, e->pos_native, (size_t)h * sizeof(float));
    if (e->grid == G) memcpy(e->pos, e->pos_native, (size_t)e->n_tok * h * sizeof(float));
    else pos_resize(e->pos + h, e->pos_native + h, (int)G, e->grid, (int)h, c->cubic_a);
    return RK_OK;
}

/* ---------------------------------------------------------------- open / close */

void rk_vision_encoder_close(rk_vision_encoder *e) {
    if (!e) return;
    rk_free(e->params);
    rk_free(e->layer);
    rk_free(e->work);
    rk_free(e->offsets);
    rk_free(e);
}

static rk_status alloc_work(rk_vision_encoder *e, rk_err *err) {
    const size_t B = (size_t)e->o.max_batch, L = (size_t)e->n_tok, T = B * L, H = (size_t)e->c.hidden;
    const size_t NI = (size_t)e->c.intermediate, K = (size_t)e->kdim;
    const size_t n = B * (size_t)e->n_patch * K + T * H * 4 + T * 3 * H + T * NI + rk_attention_scratch_floats(e->n_tok);
    e->work = rk_malloc(n * sizeof(float));
    e->offsets = rk_malloc((B + 1) * sizeof *e->offsets);
    if (!e->work || !e->offsets)
        return rk_fail(err, RK_ENOMEM, "vision encoder: out of memory for a %zu-image workspace (%zu MB)", B,
                       n * sizeof(float) >> 20);
    float *p = e->work;
    e->cols = p, p += B * (size_t)e->n_patch * K;
    e->x = p, p += T * H;
    e->xn = p, p += T * H;
    e->ctx = p, p += T * H;
    e->tmp = p, p += T * H;
    e->qkv = p, p += T * 3 * H;
    e->ff = p, p += T * NI;
    e->att = p;
    for (size_t i = 0; i <= B; i++) e->offsets[i] = (int32_t)(i * L);
    return RK_OK;
}

rk_status rk_vision_encoder_open(const char *dir, const rk_vision_encoder_opts *opts, rk_vision_encoder **out,
                                 rk_err *err) {
    *out = NULL;
    rk_vision_encoder_opts o = RK_VISION_ENCODER_OPTS_DEFAULT;
    if (opts) o = *opts;
    if (o.threads < 0 || o.threads > 256) return rk_fail(err, RK_EINVAL, "vision encoder: threads %d not in 0..256", o.threads);
    if (o.max_batch < 1 || o.max_batch > 1024)
        return rk_fail(err, RK_EINVAL, "vision encoder: max_batch %d not in 1..1024", o.max_batch);
    if (o.pool != RK_VIT_POOL_CLS && o.pool != RK_VIT_POOL_MEAN)
        return rk_fail(err, RK_EINVAL, "vision encoder: pool %d is neither CLS (0) nor mean (1)", o.pool);
    rk_vision_encoder *e = rk_calloc(1, sizeof *e);
    if (!e) return rk_fail(err, RK_ENOMEM, "vision encoder: out of memory");
    rk_status s = rk_vit_config_load(dir, &e->c, err);
    if (s) goto fail;
    if (o.image_size == 0) o.image_size = RK_VISION_CROP;
    if (o.image_size < e->c.patch || o.image_size > 4096 || o.image_size % e->c.patch) {
        s = rk_fail(err, RK_EINVAL, "vision encoder: image_size %d is not a multiple of patch_size %d in %d..4096",
                    o.image_size, e->c.patch, e->c.patch);
        goto fail;
    }
    e->o = o;
    e->grid = o.image_size / e->c.patch;
    e->n_patch = e->grid * e->grid;
    e->n_tok = 1 + e->n_patch;
    e->kdim = e->c.channels * e->c.patch * e->c.patch;
    if ((s = load_weights(e, dir, err)) || (s = alloc_work(e, err))) goto fail;
    if (o.threads > 0) openblas_set_num_threads(o.threads);
    *out = e;
    return RK_OK;
fail:
    rk_vision_encoder_close(e);
    return s;
}

rk_status rk_vision_encoder_identity(const char *dir, char *out, size_t cap, rk_err *err) {
    return rk_text_encoder_identity(dir, out, cap, err); /* the same rule: xxh64 of DIR/model.safetensors */
}

const rk_vit_config *rk_vision_encoder_config(const rk_vision_encoder *e) { return &e->c; }
int rk_vision_encoder_dim(const rk_vision_encoder *e) { return e->c.hidden; }
int rk_vision_encoder_image_size(const rk_vision_encoder *e) { return e->o.image_size; }

/* ---------------------------------------------------------------- forward */

/* cols[img*P + py*g + px, c*p*p + ky*p + kx] = px[img, c, py*p+ky, px*p+kx]:
 * the input of the patch conv as a GEMM (kernel == stride, so no overlap). */
static void im2col(rk_vision_encoder *e, const float *pix, int n) {
    const int p = e->c.patch, g = e->grid, S = e->o.image_size, C = e->c.channels;
    for (int i = 0; i < n; i++)
        for (int py = 0; py < g; py++)
            for (int px = 0; px < g; px++) {
                float *d = e->cols + ((size_t)i * e->n_patch + (size_t)py * g + px) * e->kdim;
                for (int c = 0; c < C; c++)
                    for (int ky = 0; ky < p; ky++) {
                        const float *s = pix + (((size_t)i * C + c) * S + (size_t)py * p + ky) * S + (size_t)px * p;
                        memcpy(d + (c * p + ky) * p, s, (size_t)p * sizeof(float));
                    }
            }
}

/* x[r,:] += ls ⊙ a[r,:] for N rows: LayerScale residual. */
static void add_scaled(float *x, const float *a, const float *ls, int N, int H) {
    for (int r = 0; r < N; r++) {
        float *xr = x + (size_t)r * H;
        const float *ar = a + (size_t)r * H;
        for (int j = 0; j < H; j++) xr[j] += ls[j] * ar[j];
    }
}

static void forward(rk_vision_encoder *e, const float *pix, int n, float *out) {
    const rk_vit_config *c = &e->c;
    const int H = c->hidden, NI = c->intermediate, L = e->n_tok, P = e->n_patch, T = n * L;
    const float eps = c->layer_norm_eps;
    im2col(e, pix, n);
    rk_linear_forward(e->tmp, e->cols, e->patch_w, e->patch_b, n * P, e->kdim, H);
    for (int i = 0; i < n; i++) {
        float *x = e->x + (size_t)i * L * H;
        for (int j = 0; j < H; j++) x[j] = e->cls[j] + e->pos[j];
        for (int t = 1; t < L; t++) {
            const float *pe = e->tmp + ((size_t)i * P + t - 1) * H, *ps = e->pos + (size_t)t * H;
            for (int j = 0; j < H; j++) x[(size_t)t * H + j] = pe[j] + ps[j];
        }
    }
    for (int l = 0; l < c->n_layers; l++) {
        const vlayer_t *Ly = &e->layer[l];
        rk_layernorm_forward(e->xn, e->x, NULL, Ly->ln1_g, Ly->ln1_b, T, H, eps);
        rk_linear_forward(e->qkv, e->xn, Ly->wqkv, Ly->bqkv, T, H, 3 * H);
        rk_attention_forward(e->ctx, e->qkv, e->offsets, n, c->n_heads, H / c->n_heads, e->att);
        rk_linear_forward(e->tmp, e->ctx, Ly->wo, Ly->bo, T, H, H);
        add_scaled(e->x, e->tmp, Ly->ls1, T, H);
        rk_layernorm_forward(e->xn, e->x, NULL, Ly->ln2_g, Ly->ln2_b, T, H, eps);
        rk_linear_forward(e->ff, e->xn, Ly->w1, Ly->b1, T, H, NI);
        rk_gelu_forward(e->ff, e->ff, (size_t)T * NI);
        rk_linear_forward(e->tmp, e->ff, Ly->w2, Ly->b2, T, NI, H);
        add_scaled(e->x, e->tmp, Ly->ls2, T, H);
    }
    if (e->o.pool == RK_VIT_POOL_CLS) {
        for (int i = 0; i < n; i++)
            rk_layernorm_forward(out + (size_t)i * H, e->x + (size_t)i * L * H, NULL, e->lnf_g, e->lnf_b, 1, H, eps);
    } else {
        int32_t off[2] = {0, P};
        rk_layernorm_forward(e->xn, e->x, NULL, e->lnf_g, e->lnf_b, T, H, eps);
        for (int i = 0; i < n; i++)
            rk_mean_pool_forward(out + (size_t)i * H, e->xn + ((size_t)i * L + 1) * H, off, 1, H);
    }
    if (e->o.normalize) rk_l2_normalize(out, n, H, 1e-12f);
}

rk_status rk_vision_encoder_encode(rk_vision_encoder *e, const float *pixels, int n, float *out, rk_err *err) {
    if (n < 0) return rk_fail(err, RK_EINVAL, "vision encoder: n %d < 0", n);
    const size_t per = (size_t)e->c.channels * e->o.image_size * e->o.image_size;
    for (size_t i = 0; i < (size_t)n * per; i++)
        if (!isfinite(pixels[i]))
            return rk_fail(err, RK_ENUMERIC, "image %zu: non-finite pixel value at %zu", i / per, i % per);
    for (int i = 0; i < n; i += e->o.max_batch) {
        int k = n - i < e->o.max_batch ? n - i : e->o.max_batch;
        forward(e, pixels + (size_t)i * per, k, out + (size_t)i * e->c.hidden);
    }
    return RK_OK;
}
