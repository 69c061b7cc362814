/*
 * embed/text_encoder.c — a BERT-family sentence encoder (all-MiniLM-L6-v2)
 * computed the way sentence-transformers does: BertModel, mean pooling over
 * the real tokens, L2 normalization.
 *
 * Loading (rk_text_encoder_open): a HuggingFace-layout directory —
 * config.json (architecture), vocab.txt (+ tokenizer_config.json),
 * model.safetensors (F32), and the optional sentence-transformers files
 * sentence_bert_config.json (max_seq_length), 1_Pooling/config.json (must be
 * mean pooling) and modules.json (a Normalize module). Every tensor's shape
 * is checked against config.json, so a wrong config is an error naming the
 * tensor, not a silent misread. Tensor names may carry a "bert." prefix (as
 * in BertForMaskedLM checkpoints). The pooler and anything else unused is
 * ignored.
 *
 * Memory (CONVENTIONS.md "Memory"): the parameters live in ONE allocation
 * with a struct of pointers into it (llm.c's malloc_and_point_parameters),
 * Q, K and V fused into one [3H, H] matrix so a layer's projections are one
 * sgemm. The activations live in one workspace sized at open for max_tokens
 * tokens; rk_text_encoder_encode never allocates, and a batch whose tokens
 * do not fit is run in several chunks of whole sentences.
 *
 * Forward, per chunk of packed sequences (T tokens, nn/nn.h ops):
 *   x = LN(word[id] + pos[p] + type[0])                       [T, H]
 *   per layer (post-LN BERT, Devlin et al. 2019 / Vaswani et al. 2017):
 *     qkv = x Wqkv^T + bqkv                                   [T, 3H]
 *     a   = attention(qkv) Wo^T + bo;   x = LN(a + x)
 *     f   = gelu(x W1^T + b1) W2^T + b2; x = LN(f + x)
 *   out[s] = normalize(mean_{t in s} x[t])                    [n, H]
 */
#include <cblas.h> /* openblas_set_num_threads; note: pulls in complex.h, whose I macro we avoid */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "embed.h"
#include "internal.h"

typedef struct {
    float *wqkv, *bqkv;   /* [3H, H], [3H] */
    float *wo, *bo;       /* [H, H], [H] */
    float *ln1_g, *ln1_b; /* [H] */
    float *w1, *b1;       /* [I, H], [I] (I = intermediate) */
    float *w2, *b2;       /* [H, I], [H] */
    float *ln2_g, *ln2_b; /* [H] */
} layer_t;

struct rk_text_encoder {
    rk_bert_config c;
    int max_len, normalize, max_tokens;
    int threads, cur_threads; /* configured OpenBLAS threads (0: not ours to set), last set */
    rk_tokenizer *tok;
    float *params; /* the one parameter allocation */
    float *word, *pos, *type, *eln_g, *eln_b;
    layer_t *layer;
    /* workspace */
    float *work; /* the one activation allocation */
    float *x, *qkv, *ctx, *tmp, *ff, *att;
    int32_t *ids, *pos_of, *offsets;
};

/* ---------------------------------------------------------------- config */

rk_status rk_embed_cfg_int(json_t *j, const char *path, const char *key, int def, int lo, int hi, int *out,
                          rk_err *err) {
    json_t *v = json_object_get(j, key);
    if (!v) {
        if (def >= 0) {
            *out = def;
            return RK_OK;
        }
        return rk_fail(err, RK_EFORMAT, "%s: missing integer '%s'", path, key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return rk_fail(err, RK_EFORMAT, "%s: '%s' must be an integer in %d..%d", path, key, lo, hi);
    *out = (int)json_integer_value(v);
    return RK_OK;
}

rk_status rk_embed_cfg_str_is(json_t *j, const char *path, const char *key, const char *want, rk_err *err) {
    json_t *v = json_object_get(j, key);
    if (!v) return RK_OK;
    if (!json_is_string(v) || strcmp(json_string_value(v), want))
        return rk_fail(err, RK_EFORMAT, "%s: %s '%s' is not supported (only '%s')", path, key,
                      json_is_string(v) ? json_string_value(v) : "?", want);
    return RK_OK;
}

json_t *rk_embed_load_json(const char *path, rk_err *err, rk_status *s) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    *s = RK_OK;
    if (!j) {
        *s = rk_path_exists(path) ? rk_fail(err, RK_EFORMAT, "%s: line %d: %s", path, je.line, je.text)
                                  : rk_fail(err, RK_ENOTFOUND, "%s: No such file or directory", path);
    } else if (!json_is_object(j)) {
        json_decref(j);
        j = NULL;
        *s = rk_fail(err, RK_EFORMAT, "%s: not a JSON object", path);
    }
    return j;
}

rk_status rk_bert_config_load(const char *dir, rk_bert_config *c, rk_err *err) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    rk_status s;
    json_t *j = rk_embed_load_json(path, err, &s);
    if (!j) return s;
    memset(c, 0, sizeof *c);
    (void)((s = rk_embed_cfg_str_is(j, path, "model_type", "bert", err)) ||
           (s = rk_embed_cfg_str_is(j, path, "hidden_act", "gelu", err)) ||
           (s = rk_embed_cfg_str_is(j, path, "position_embedding_type", "absolute", err)) ||
           (s = rk_embed_cfg_int(j, path, "vocab_size", -1, 1, 1 << 24, &c->vocab_size, err)) ||
           (s = rk_embed_cfg_int(j, path, "hidden_size", -1, 1, 1 << 16, &c->hidden, err)) ||
           (s = rk_embed_cfg_int(j, path, "num_hidden_layers", -1, 1, 1024, &c->n_layers, err)) ||
           (s = rk_embed_cfg_int(j, path, "num_attention_heads", -1, 1, 1024, &c->n_heads, err)) ||
           (s = rk_embed_cfg_int(j, path, "intermediate_size", -1, 1, 1 << 18, &c->intermediate, err)) ||
           (s = rk_embed_cfg_int(j, path, "max_position_embeddings", -1, 2, 1 << 16, &c->max_position, err)) ||
           (s = rk_embed_cfg_int(j, path, "type_vocab_size", 2, 1, 1 << 10, &c->type_vocab, err)));
    if (s == RK_OK) {
        json_t *e = json_object_get(j, "layer_norm_eps");
        c->layer_norm_eps = 1e-12f;
        if (e && !json_is_number(e)) s = rk_fail(err, RK_EFORMAT, "%s: 'layer_norm_eps' must be a number", path);
        else if (e) c->layer_norm_eps = (float)json_number_value(e);
    }
    if (s == RK_OK && c->hidden % c->n_heads)
        s = rk_fail(err, RK_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, c->hidden,
                    c->n_heads);
    json_decref(j);
    return s;
}

/* sentence-transformers files: max_seq_length, mean pooling, Normalize. */
static rk_status st_config(const char *dir, int *max_len, int *normalize, rk_err *err) {
    char path[1024];
    rk_status s;
    json_t *j;
    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if (rk_path_exists(path)) {
        if (!(j = rk_embed_load_json(path, err, &s))) return s;
        s = rk_embed_cfg_int(j, path, "max_seq_length", 0, 2, 1 << 16, max_len, err);
        json_decref(j);
        if (s) return s;
    }
    snprintf(path, sizeof path, "%s/1_Pooling/config.json", dir);
    if (rk_path_exists(path)) {
        if (!(j = rk_embed_load_json(path, err, &s))) return s;
        json_t *m = json_object_get(j, "pooling_mode_mean_tokens");
        int ok = json_is_true(m);
        const char *other[] = {"pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                               "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"};
        for (size_t i = 0; i < sizeof other / sizeof *other; i++) ok = ok && !json_is_true(json_object_get(j, other[i]));
        json_decref(j);
        if (!ok) return rk_fail(err, RK_EFORMAT, "%s: only mean pooling (pooling_mode_mean_tokens alone) is supported", path);
    }
    snprintf(path, sizeof path, "%s/modules.json", dir);
    *normalize = 1; /* without modules.json: normalize, as all-MiniLM-L6-v2 does */
    if (rk_path_exists(path)) {
        json_error_t je;
        j = json_load_file(path, 0, &je);
        if (!json_is_array(j)) {
            json_decref(j);
            return rk_fail(err, RK_EFORMAT, "%s: not a JSON array of modules", path);
        }
        *normalize = 0;
        size_t i;
        json_t *m;
        json_array_foreach(j, i, m) {
            const char *ty = json_string_value(json_object_get(m, "type"));
            if (ty && strlen(ty) >= 9 && !strcmp(ty + strlen(ty) - 9, "Normalize")) *normalize = 1;
        }
        json_decref(j);
    }
    return RK_OK;
}

/* ---------------------------------------------------------------- weights */

static rk_status read_t(const rk_st_file *f, const char *prefix, const char *name, float *dst, int nd, int64_t d0,
                        int64_t d1, rk_err *err) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[2] = {d0, d1};
    return rk_st_read_f32(f, full, dst, nd, shape, err);
}

static rk_status load_weights(rk_text_encoder *e, const char *dir, rk_err *err) {
    const rk_bert_config *c = &e->c;
    const size_t H = (size_t)c->hidden, NI = (size_t)c->intermediate;
    const size_t per_layer = 3 * H * H + 3 * H + H * H + H + 2 * H + NI * H + NI + H * NI + H + 2 * H;
    const size_t total = (size_t)c->vocab_size * H + (size_t)c->max_position * H + (size_t)c->type_vocab * H + 2 * H +
                         (size_t)c->n_layers * per_layer;
    e->params = rk_malloc(total * sizeof(float));
    e->layer = rk_calloc((size_t)c->n_layers, sizeof *e->layer);
    if (!e->params || !e->layer)
        return rk_fail(err, RK_ENOMEM, "%s: out of memory for %zu parameters", dir, total);
    float *p = e->params;
#define TAKE(ptr, n) (ptr = p, p += (n))
    TAKE(e->word, (size_t)c->vocab_size * H);
    TAKE(e->pos, (size_t)c->max_position * H);
    TAKE(e->type, (size_t)c->type_vocab * H);
    TAKE(e->eln_g, H);
    TAKE(e->eln_b, H);
    for (int l = 0; l < c->n_layers; l++) {
        layer_t *L = &e->layer[l];
        TAKE(L->wqkv, 3 * H * H);
        TAKE(L->bqkv, 3 * H);
        TAKE(L->wo, H * H);
        TAKE(L->bo, H);
        TAKE(L->ln1_g, H);
        TAKE(L->ln1_b, H);
        TAKE(L->w1, NI * H);
        TAKE(L->b1, NI);
        TAKE(L->w2, H * NI);
        TAKE(L->b2, H);
        TAKE(L->ln2_g, H);
        TAKE(L->ln2_b, H);
    }
#undef TAKE
    RK_ASSERT((size_t)(p - e->params) == total);

    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rk_st_file *f;
    rk_status s = rk_st_open(path, &f, err);
    if (s != RK_OK) return s;
    const char *pre = "";
    const float *probe;
    int nd;
    int64_t sh[4];
    if (rk_st_get_f32(f, "embeddings.word_embeddings.weight", &probe, &nd, sh, NULL) == RK_ENOTFOUND &&
        rk_st_get_f32(f, "bert.embeddings.word_embeddings.weight", &probe, &nd, sh, NULL) != RK_ENOTFOUND)
        pre = "bert.";
    const int64_t h = c->hidden, in = c->intermediate;
    s = read_t(f, pre, "embeddings.word_embeddings.weight", e->word, 2, c->vocab_size, h, err);
    if (!s) s = read_t(f, pre, "embeddings.position_embeddings.weight", e->pos, 2, c->max_position, h, err);
    if (!s) s = read_t(f, pre, "embeddings.token_type_embeddings.weight", e->type, 2, c->type_vocab, h, err);
    if (!s) s = read_t(f, pre, "embeddings.LayerNorm.weight", e->eln_g, 1, h, 0, err);
    if (!s) s = read_t(f, pre, "embeddings.LayerNorm.bias", e->eln_b, 1, h, 0, err);
    for (int l = 0; l < c->n_layers && !s; l++) {
        layer_t *L = &e->layer[l];
        char n[128];
#define LT(suffix, dst, nd_, a, b)                                                                                    \
    (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix), read_t(f, pre, n, dst, nd_, a, b, err))
        if ((s = LT("attention.self.query.weight", L->wqkv, 2, h, h)) ||
            (s = LT("attention.self.key.weight", L->wqkv + H * H, 2, h, h)) ||
            (s = LT("attention.self.value.weight", L->wqkv + 2 * H * H, 2, h, h)) ||
            (s = LT("attention.self.query.bias", L->bqkv, 1, h, 0)) ||
            (s = LT("attention.self.key.bias", L->bqkv + H, 1, h, 0)) ||
            (s = LT("attention.self.value.bias", L->bqkv + 2 * H, 1, h, 0)) ||
            (s = LT("attention.output.dense.weight", L->wo, 2, h, h)) ||
            (s = LT("attention.output.dense.bias", L->bo, 1, h, 0)) ||
            (s = LT("attention.output.LayerNorm.weight", L->ln1_g, 1, h, 0)) ||
            (s = LT("attention.output.LayerNorm.bias", L->ln1_b, 1, h, 0)) ||
            (s = LT("intermediate.dense.weight", L->w1, 2, in, h)) ||
            (s = LT("intermediate.dense.bias", L->b1, 1, in, 0)) ||
            (s = LT("output.dense.weight", L->w2, 2, h, in)) || (s = LT("output.dense.bias", L->b2, 1, h, 0)) ||
            (s = LT("output.LayerNorm.weight", L->ln2_g, 1, h, 0)) ||
            (s = LT("output.LayerNorm.bias", L->ln2_b, 1, h, 0)))
            break;
#undef LT
    }
    rk_st_close(f);
    if (s) return s;
    for (size_t i = 0; i < total; i++)
        if (!isfinite(e->params[i])) return rk_fail(err, RK_ENUMERIC, "%s: non-finite weight (parameter %zu)", path, i);
    return RK_OK;
}

/* ---------------------------------------------------------------- open / close */

void rk_text_encoder_close(rk_text_encoder *e) {
    if (!e) return;
    rk_tokenizer_close(e->tok);
    rk_free(e->params);
    rk_free(e->layer);
    rk_free(e->work);
    rk_free(e->ids);
    rk_free(e->pos_of);
    rk_free(e->offsets);
    rk_free(e);
}

rk_status rk_text_encoder_identity(const char *dir, char *out, size_t cap, rk_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *buf;
    size_t len;
    rk_status s = rk_read_file(path, &buf, &len, err);
    if (s) return s;
    snprintf(out, cap, "xxh64:%016llx", (unsigned long long)rk_hash64(buf, len, 0));
    rk_free(buf);
    return RK_OK;
}

rk_status rk_text_encoder_open(const char *dir, const rk_text_encoder_opts *opts, rk_text_encoder **out, rk_err *err) {
    *out = NULL;
    rk_text_encoder_opts o = RK_TEXT_ENCODER_OPTS_DEFAULT;
    if (opts) o = *opts;
    if (o.threads < 0 || o.threads > 256) return rk_fail(err, RK_EINVAL, "text encoder: threads %d not in 0..256", o.threads);
    rk_text_encoder *e = rk_calloc(1, sizeof *e);
    if (!e) return rk_fail(err, RK_ENOMEM, "text encoder: out of memory");
    rk_status s = rk_bert_config_load(dir, &e->c, err);
    int st_max = 0;
    if (!s) s = st_config(dir, &st_max, &e->normalize, err);
    if (!s) s = rk_tokenizer_open_dir(dir, &e->tok, err);
    if (s) goto fail;
    if (rk_tokenizer_vocab_size(e->tok) > (size_t)e->c.vocab_size) {
        s = rk_fail(err, RK_EFORMAT, "%s/vocab.txt: %zu tokens, more than config.json's vocab_size %d", dir,
                    rk_tokenizer_vocab_size(e->tok), e->c.vocab_size);
        goto fail;
    }
    e->max_len = o.max_len > 0 ? o.max_len : st_max > 0 ? st_max : e->c.max_position;
    if (e->max_len < 2 || e->max_len > e->c.max_position) {
        s = rk_fail(err, RK_EINVAL, "%s: max_len %d not in 2..%d (max_position_embeddings)", dir, e->max_len,
                    e->c.max_position);
        goto fail;
    }
    if ((s = load_weights(e, dir, err))) goto fail;
    e->max_tokens = o.max_tokens > e->max_len ? o.max_tokens : e->max_len;
    const size_t T = (size_t)e->max_tokens, H = (size_t)e->c.hidden, NI = (size_t)e->c.intermediate;
    const size_t att = rk_attention_scratch_floats(e->max_len);
    const size_t nwork = T * H * 3 + T * 3 * H + T * NI + att;
    e->work = rk_malloc(nwork * sizeof(float));
    e->ids = rk_malloc(T * sizeof *e->ids);
    e->pos_of = rk_malloc(T * sizeof *e->pos_of);
    e->offsets = rk_malloc((T / 2 + 2) * sizeof *e->offsets); /* every sequence has >= 2 tokens */
    if (!e->work || !e->ids || !e->pos_of || !e->offsets) {
        s = rk_fail(err, RK_ENOMEM, "text encoder: out of memory for a %zu-token workspace", T);
        goto fail;
    }
    float *p = e->work;
    e->x = p, p += T * H;
    e->ctx = p, p += T * H;
    e->tmp = p, p += T * H;
    e->qkv = p, p += T * 3 * H;
    e->ff = p, p += T * NI;
    e->att = p;
    e->threads = e->cur_threads = o.threads;
    if (o.threads > 0) openblas_set_num_threads(o.threads);
    *out = e;
    return RK_OK;
fail:
    rk_text_encoder_close(e);
    return s;
}

const rk_bert_config *rk_text_encoder_config(const rk_text_encoder *e) { return &e->c; }
int rk_text_encoder_dim(const rk_text_encoder *e) { return e->c.hidden; }
int rk_text_encoder_max_len(const rk_text_encoder *e) { return e->max_len; }
const rk_tokenizer *rk_text_encoder_tokenizer(const rk_text_encoder *e) { return e->tok; }

/* ---------------------------------------------------------------- forward */

/* Below this many tokens a chunk runs on one OpenBLAS thread: for [T, 384]
 * x [384, 1152] products with small T, OpenBLAS' threads cost more than they
 * gain (measured on 2 cores: 40 vs 25 sentences/s at batch 1). */
#define SMALL_CHUNK_TOKENS 64

/* n_seq packed sequences (e->ids, e->pos_of, e->offsets) -> the last
 * layer's token states in e->x [T, H]. */
static void forward_states(rk_text_encoder *e, int n_seq) {
    const rk_bert_config *c = &e->c;
    const int T = e->offsets[n_seq], H = c->hidden, NI = c->intermediate;
    if (e->threads > 1) {
        int want = T < SMALL_CHUNK_TOKENS ? 1 : e->threads;
        if (want != e->cur_threads) openblas_set_num_threads(e->cur_threads = want);
    }
    const float eps = c->layer_norm_eps;
    for (int t = 0; t < T; t++) {
        const float *w = e->word + (size_t)e->ids[t] * H, *ps = e->pos + (size_t)e->pos_of[t] * H;
        float *x = e->x + (size_t)t * H;
        for (int j = 0; j < H; j++) x[j] = w[j] + ps[j] + e->type[j]; /* token type 0 */
    }
    rk_layernorm_forward(e->x, e->x, NULL, e->eln_g, e->eln_b, T, H, eps);
    for (int l = 0; l < c->n_layers; l++) {
        const layer_t *L = &e->layer[l];
        rk_linear_forward(e->qkv, e->x, L->wqkv, L->bqkv, T, H, 3 * H);
        rk_attention_forward(e->ctx, e->qkv, e->offsets, n_seq, c->n_heads, H / c->n_heads, e->att);
        rk_linear_forward(e->tmp, e->ctx, L->wo, L->bo, T, H, H);
        rk_layernorm_forward(e->x, e->tmp, e->x, L->ln1_g, L->ln1_b, T, H, eps);
        rk_linear_forward(e->ff, e->x, L->w1, L->b1, T, H, NI);
        rk_gelu_forward(e->ff, e->ff, (size_t)T * NI);
        rk_linear_forward(e->tmp, e->ff, L->w2, L->b2, T, NI, H);
        rk_layernorm_forward(e->x, e->tmp, e->x, L->ln2_g, L->ln2_b, T, H, eps);
    }
}

/* n_seq packed sequences -> pooled (and normalized) out[n_seq, H]. */
static void forward(rk_text_encoder *e, int n_seq, float *out) {
    const int H = e->c.hidden;
    forward_states(e, n_seq);
    rk_mean_pool_forward(out, e->x, e->offsets, n_seq, H);
    if (e->normalize) rk_l2_normalize(out, n_seq, H, 1e-12f);
}

/* Where the chunks of encode / encode_tokens go: pooled vectors, or token
 * states copied out of the workspace. */
typedef struct {
    float *out;        /* pooled: [n, H] */
    float *states;     /* token states: [cap_rows, H] */
    size_t cap_rows;
    int32_t *offsets;  /* [n + 1] */
} sink_t;

static rk_status run_chunk(rk_text_encoder *e, int n_seq, int first, const sink_t *k, rk_err *err) {
    const int H = e->c.hidden;
    if (k->out) {
        forward(e, n_seq, k->out + (size_t)first * H);
        return RK_OK;
    }
    const int T = e->offsets[n_seq];
    const size_t base = (size_t)k->offsets[first];
    if (base + (size_t)T > k->cap_rows)
        return rk_fail(err, RK_ETOOBIG, "text %d: token states need more than the %zu rows given", first + n_seq - 1,
                       k->cap_rows);
    forward_states(e, n_seq);
    memcpy(k->states + base * H, e->x, (size_t)T * H * sizeof(float));
    for (int s = 1; s <= n_seq; s++) k->offsets[first + s] = (int32_t)(base + (size_t)e->offsets[s]);
    return RK_OK;
}

static rk_status encode_into(rk_text_encoder *e, const char *const *texts, const size_t *lens, int n, int max_len,
                             const sink_t *sink, rk_err *err) {
    int first = 0; /* first sequence of the current chunk */
    int n_seq = 0;
    e->offsets[0] = 0;
    if (sink->offsets) sink->offsets[0] = 0;
    for (int i = 0; i < n; i++) {
        int T = e->offsets[n_seq];
        if (T + max_len > e->max_tokens) { /* the next text may not fit: run what we have */
            rk_status s = run_chunk(e, n_seq, first, sink, err);
            if (s != RK_OK) return s;
            first = i;
            n_seq = 0;
            T = 0;
        }
        int k;
        size_t len = lens ? lens[i] : strlen(texts[i]);
        rk_status s = rk_tokenizer_encode(e->tok, texts[i], len, max_len, e->ids + T, &k, err);
        if (s != RK_OK) {
            if (err) rk_err_prefix(err, "text %d", i);
            return s;
        }
        for (int j = 0; j < k; j++) {
            if (e->ids[T + j] >= e->c.vocab_size)
                return rk_fail(err, RK_EINTERNAL, "text %d: token id %d outside the embedding table", i, e->ids[T + j]);
            e->pos_of[T + j] = j;
        }
        e->offsets[++n_seq] = T + k;
    }
    return n_seq ? run_chunk(e, n_seq, first, sink, err) : RK_OK;
}

rk_status rk_text_encoder_encode(rk_text_encoder *e, const char *const *texts, const size_t *lens, int n, float *out,
                                 rk_err *err) {
    const sink_t sink = {out, NULL, 0, NULL};
    return encode_into(e, texts, lens, n, e->max_len, &sink, err);
}

rk_status rk_text_encoder_encode_tokens(rk_text_encoder *e, const char *const *texts, const size_t *lens, int n,
                                        int max_len, float *states, size_t cap_rows, int32_t *offsets, rk_err *err) {
    if (max_len <= 0 || max_len > e->max_len) max_len = e->max_len;
    if (max_len < 2) return rk_fail(err, RK_EINVAL, "max_len %d: must be at least 2", max_len);
    const sink_t sink = {NULL, states, cap_rows, offsets};
    return encode_into(e, texts, lens, n, max_len, &sink, err);
}
