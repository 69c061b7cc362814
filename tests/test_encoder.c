/*
 * tests/test_encoder.c — embed/'s text encoder and nn/'s transformer ops.
 *
 * References:
 *   - tests/fixtures/encoder_ref.json: strings and the token ids of
 *     HuggingFace's fast BERT tokenizer; encoder_ref.safetensors: the
 *     sentence-transformers embeddings of the same strings. Both written by
 *     tests/ref/gen_encoder_ref.py from the real all-MiniLM-L6-v2.
 *   - the ops (LayerNorm, GELU, masked softmax, attention) against the plain
 *     double-precision loops below, |got - ref| <= ATOL + RTOL * |ref|.
 *
 * The tests that need the real weights find them at $RK_ENCODER_MODEL, else
 * $RK_MODEL_HOME/models/all-MiniLM-L6-v2, else
 * ~/.cache/rankd/models/all-MiniLM-L6-v2 (scripts/setup-encoder.sh puts them
 * there). Without them they skip with a message, unless
 * RK_REQUIRE_ENCODER_MODEL=1 (set by `make test`), when they fail.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "embed.h"
#include "nn.h"

/* ---------------------------------------------------------------- helpers */

static char model_dir[1024];

/* Path of the real model, or NULL (after skipping or failing the test). */
static const char *need_model(void) {
    const char *e = getenv("RK_ENCODER_MODEL");
    if (e && *e) snprintf(model_dir, sizeof model_dir, "%s", e);
    else if ((e = getenv("RK_MODEL_HOME")) && *e)
        snprintf(model_dir, sizeof model_dir, "%s/models/all-MiniLM-L6-v2", e);
    else snprintf(model_dir, sizeof model_dir, "%s/.cache/rankd/models/all-MiniLM-L6-v2", getenv("HOME") ? getenv("HOME") : "");
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", model_dir);
    if (rk_path_exists(p)) return model_dir;
    const char *req = getenv("RK_REQUIRE_ENCODER_MODEL");
    if (req && !strcmp(req, "1")) cr_assert_fail("no model at %s (run scripts/setup-encoder.sh)", model_dir);
    cr_skip_test("no model at %s: run scripts/setup-encoder.sh to enable this test", model_dir);
    return NULL;
}

typedef struct {
    json_t *doc;
    size_t n;
    int max_len;
} ref_t;

static void ref_load(ref_t *r) {
    json_error_t je;
    r->doc = json_load_file(RK_SOURCE_DIR "/tests/fixtures/encoder_ref.json", JSON_ALLOW_NUL, &je);
    cr_assert(r->doc, "encoder_ref.json: %s (line %d)", je.text, je.line);
    r->n = json_array_size(json_object_get(r->doc, "texts"));
    r->max_len = (int)json_integer_value(json_object_get(r->doc, "max_len"));
    cr_assert_geq(r->n, 200, "fixture has %zu strings", r->n);
    cr_assert_eq(r->max_len, 256);
}

static const char *ref_text(const ref_t *r, size_t i, size_t *len) {
    json_t *s = json_array_get(json_object_get(r->doc, "texts"), i);
    *len = json_string_length(s);
    return json_string_value(s);
}

static json_t *ref_ids(const ref_t *r, size_t i) { return json_array_get(json_object_get(r->doc, "ids"), i); }

/* ---------------------------------------------------------------- tokenizer */

Test(tokenizer, ids_equal_huggingface) {
    const char *dir = need_model();
    ref_t r;
    ref_load(&r);
    rk_tokenizer *t;
    rk_err err = {0};
    cr_assert_eq(rk_tokenizer_open_dir(dir, &t, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_tokenizer_vocab_size(t), 30522);
    int32_t ids[256];
    size_t bad = 0;
    for (size_t i = 0; i < r.n; i++) {
        size_t len;
        const char *s = ref_text(&r, i, &len);
        int n;
        cr_assert_eq(rk_tokenizer_encode(t, s, len, r.max_len, ids, &n, &err), RK_OK, "string %zu: %s", i, err.msg);
        json_t *want = ref_ids(&r, i);
        int same = (size_t)n == json_array_size(want);
        for (int k = 0; same && k < n; k++) same = ids[k] == json_integer_value(json_array_get(want, (size_t)k));
        if (!same) {
            bad++;
            char got[512] = "", exp[512] = "";
            size_t o = 0;
            for (int k = 0; k < n && o < 400; k++) o += (size_t)snprintf(got + o, sizeof got - o, "%d ", ids[k]);
            o = 0;
            for (size_t k = 0; k < json_array_size(want) && o < 400; k++)
                o += (size_t)snprintf(exp + o, sizeof exp - o, "%lld ", (long long)json_integer_value(json_array_get(want, k)));
            cr_log_error("string %zu '%.60s': got [%s] want [%s]", i, s, got, exp);
        }
    }
    cr_expect_eq(bad, 0, "%zu of %zu strings tokenized differently from HuggingFace", bad, r.n);
    rk_tokenizer_close(t);
    json_decref(r.doc);
}

Test(tokenizer, padded_batch_and_truncation) {
    const char *dir = need_model();
    rk_tokenizer *t;
    rk_err err = {0};
    cr_assert_eq(rk_tokenizer_open_dir(dir, &t, &err), RK_OK, "%s", err.msg);
    const char *texts[] = {"Toy Story (1995)", "", "Léon: The Professional"};
    int32_t ids[3 * 8];
    uint8_t mask[3 * 8];
    int L;
    cr_assert_eq(rk_tokenizer_encode_batch(t, texts, NULL, 3, 8, ids, mask, &L, &err), RK_OK, "%s", err.msg);
    /* HF: [CLS] toy story ( 1995 ) [SEP] = 7; [CLS] [SEP]; [CLS] leon : the professional [SEP] = 6 */
    cr_assert_eq(L, 7);
    int32_t want0[] = {101, 9121, 2466, 1006, 2786, 1007, 102};
    for (int j = 0; j < 7; j++) cr_expect_eq(ids[j], want0[j], "row 0 col %d", j);
    cr_expect_eq(ids[7], 101);
    cr_expect_eq(ids[8], 102);
    for (int j = 2; j < 7; j++) cr_expect(ids[7 + j] == 0 && mask[7 + j] == 0, "row 1 col %d is padding", j);
    cr_expect(mask[7] && mask[8]);
    /* truncation to 5: [CLS] toy story ( [SEP] */
    int n;
    cr_assert_eq(rk_tokenizer_encode(t, texts[0], strlen(texts[0]), 5, ids, &n, &err), RK_OK);
    cr_expect_eq(n, 5);
    cr_expect_eq(ids[3], 1006);
    cr_expect_eq(ids[4], 102);
    rk_tokenizer_close(t);
}

Test(tokenizer, invalid_utf8_is_an_error) {
    const char *dir = need_model();
    rk_tokenizer *t;
    rk_err err = {0};
    cr_assert_eq(rk_tokenizer_open_dir(dir, &t, &err), RK_OK, "%s", err.msg);
    int32_t ids[16];
    int n;
    struct {
        const char *s;
        const char *msg;
    } cases[] = {
        {"ok \xff bad", "invalid UTF-8 at byte 3"},         /* byte that never starts a sequence */
        {"caf\xc3", "invalid UTF-8 at byte 3"},             /* truncated 2-byte sequence */
        {"\xc0\xaf", "invalid UTF-8 at byte 0"},            /* overlong '/' */
        {"ab\xed\xa0\x80", "invalid UTF-8 at byte 2"},      /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "invalid UTF-8 at byte 0"},    /* > U+10FFFF */
        {"x\x80", "invalid UTF-8 at byte 1"},               /* stray continuation byte */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rk_status s = rk_tokenizer_encode(t, cases[i].s, strlen(cases[i].s), 16, ids, &n, &err);
        cr_expect_eq(s, RK_EINVAL, "case %zu", i);
        cr_expect_str_eq(err.msg, cases[i].msg, "case %zu", i);
    }
    /* past the truncation point too */
    const char *late = "one two three four five six \xff";
    cr_expect_eq(rk_tokenizer_encode(t, late, strlen(late), 4, ids, &n, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "invalid UTF-8 at byte 28");
    const char *batch[] = {"fine", "bad \xfe"};
    int L;
    int32_t bids[2 * 16];
    uint8_t bm[2 * 16];
    cr_expect_eq(rk_tokenizer_encode_batch(t, batch, NULL, 2, 16, bids, bm, &L, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "text 1: invalid UTF-8 at byte 4");
    rk_tokenizer_close(t);
}

Test(tokenizer, vocab_errors) {
    rk_tokenizer *t;
    rk_err err = {0};
    char dir[] = "/tmp/rk_test_vocab_XXXXXX";
    cr_assert(mkdtemp(dir));
    char p[256];
    snprintf(p, sizeof p, "%s/vocab.txt", dir);
    char want[512];
    cr_expect_eq(rk_tokenizer_open(p, NULL, &t, &err), RK_ENOTFOUND);
    snprintf(want, sizeof want, "%s: No such file or directory", p);
    cr_expect_str_eq(err.msg, want);
    cr_assert_eq(rk_write_file(p, "", 0, &err), RK_OK);
    cr_expect_eq(rk_tokenizer_open(p, NULL, &t, &err), RK_EFORMAT);
    snprintf(want, sizeof want, "%s: empty vocabulary", p);
    cr_expect_str_eq(err.msg, want);
    const char *v = "[PAD]\n[CLS]\n[SEP]\nhello\n";
    cr_assert_eq(rk_write_file(p, v, strlen(v), &err), RK_OK);
    cr_expect_eq(rk_tokenizer_open(p, NULL, &t, &err), RK_EFORMAT);
    snprintf(want, sizeof want, "%s: the vocabulary has no '[UNK]' token", p);
    cr_expect_str_eq(err.msg, want);
    /* a tiny vocabulary: WordPiece splitting, unknown words, ## pieces */
    v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\n!\naff\n";
    cr_assert_eq(rk_write_file(p, v, strlen(v), &err), RK_OK);
    cr_assert_eq(rk_tokenizer_open(p, NULL, &t, &err), RK_OK, "%s", err.msg);
    int32_t ids[16];
    int n;
    cr_assert_eq(rk_tokenizer_encode(t, "UNAFFABLE! unx aff", 18, 16, ids, &n, &err), RK_OK);
    int32_t want_ids[] = {2, 4, 5, 6, 7, 1, 8, 3};
    cr_assert_eq(n, 8);
    for (int i = 0; i < n; i++) cr_expect_eq(ids[i], want_ids[i], "id %d", i);
    cr_expect_str_eq(rk_tokenizer_token(t, 5), "##aff");
    rk_tokenizer_close(t);
    rk_rm_rf(dir, &err);
}

/* ---------------------------------------------------------------- ops vs plain references */

#define ATOL 1e-5
#define RTOL 1e-4

static void expect_close(const float *got, const double *ref, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        cr_expect(fabs(got[i] - ref[i]) <= ATOL + RTOL * fabs(ref[i]), "%s[%zu]: got %.8g want %.8g", what, i, got[i],
                  ref[i]);
}

static void fill(rk_rng *r, float *x, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rk_rng_normal(r));
}

Test(ops, layernorm_with_and_without_residual) {
    enum { N = 5, D = 37 };
    rk_rng r;
    rk_rng_seed(&r, 1);
    float x[N * D], res[N * D], g[D], b[D], y[N * D];
    double ref[N * D];
    fill(&r, x, N * D, 3.0);
    fill(&r, res, N * D, 1.0);
    fill(&r, g, D, 1.0);
    fill(&r, b, D, 0.5);
    for (int with_res = 0; with_res < 2; with_res++) {
        for (int i = 0; i < N; i++) {
            double z[D], mean = 0, var = 0;
            for (int j = 0; j < D; j++) mean += z[j] = (double)x[i * D + j] + (with_res ? res[i * D + j] : 0.0);
            mean /= D;
            for (int j = 0; j < D; j++) var += (z[j] - mean) * (z[j] - mean);
            var /= D;
            for (int j = 0; j < D; j++) ref[i * D + j] = (z[j] - mean) / sqrt(var + 1e-12) * g[j] + b[j];
        }
        rk_layernorm_forward(y, x, with_res ? res : NULL, g, b, N, D, 1e-12f);
        expect_close(y, ref, N * D, with_res ? "layernorm+res" : "layernorm");
    }
    /* in place, y aliasing the residual (how the encoder calls it) */
    memcpy(y, res, sizeof y);
    rk_layernorm_forward(y, x, y, g, b, N, D, 1e-12f);
    expect_close(y, ref, N * D, "layernorm in place");
}

Test(ops, gelu_erf_form) {
    enum { N = 241 };
    float x[N], y[N];
    double ref[N];
    for (int i = 0; i < N; i++) {
        x[i] = -6.0f + 0.05f * (float)i;
        ref[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
    }
    rk_gelu_forward(y, x, N);
    expect_close(y, ref, N, "gelu");
    rk_gelu_forward(x, x, N); /* in place */
    expect_close(x, ref, N, "gelu in place");
}

Test(ops, softmax_with_mask) {
    enum { R = 4, C = 9 };
    rk_rng r;
    rk_rng_seed(&r, 2);
    float x[R * C], y[R * C];
    double ref[R * C];
    fill(&r, x, R * C, 4.0);
    x[3] = 80.0f; /* large logit: must not overflow */
    uint8_t mask[C] = {1, 1, 0, 1, 1, 0, 0, 1, 1};
    const float scale = 0.7f;
    for (int i = 0; i < R; i++) {
        double m = -INFINITY, s = 0;
        for (int c = 0; c < C; c++)
            if (mask[c] && scale * (double)x[i * C + c] > m) m = scale * (double)x[i * C + c];
        for (int c = 0; c < C; c++) s += mask[c] ? exp(scale * (double)x[i * C + c] - m) : 0.0;
        for (int c = 0; c < C; c++) ref[i * C + c] = mask[c] ? exp(scale * (double)x[i * C + c] - m) / s : 0.0;
    }
    rk_softmax_masked_forward(y, x, mask, R, C, scale);
    expect_close(y, ref, R * C, "softmax");
    uint8_t none[C] = {0};
    rk_softmax_masked_forward(y, x, none, R, C, 1.0f);
    for (int i = 0; i < R * C; i++) cr_expect_eq(y[i], 0.0f, "all-masked row gives zeros");
    rk_softmax_masked_forward(y, x, NULL, 1, C, 1.0f);
    double sum = 0;
    for (int c = 0; c < C; c++) sum += y[c];
    cr_expect(fabs(sum - 1.0) < 1e-6);
}

/* Packed attention against the padded-batch formulation with a key-padding
 * mask (what HF BERT computes), in double. */
Test(ops, attention_packed_equals_padded_with_mask) {
    enum { H = 3, DH = 5, D = H * DH, NS = 3, LMAX = 7 };
    const int lens[NS] = {1, 4, 7};
    int32_t off[NS + 1] = {0};
    for (int s = 0; s < NS; s++) off[s + 1] = off[s] + lens[s];
    const int T = off[NS];
    rk_rng r;
    rk_rng_seed(&r, 3);
    float qkv[12 * 3 * D], out[12 * D], scratch[LMAX * LMAX];
    fill(&r, qkv, (size_t)T * 3 * D, 1.5);
    /* padded layout [NS, LMAX, 3D] with garbage in the padding */
    static double pad[NS][LMAX][3 * D];
    for (int s = 0; s < NS; s++)
        for (int i = 0; i < LMAX; i++)
            for (int c = 0; c < 3 * D; c++) pad[s][i][c] = i < lens[s] ? qkv[(off[s] + i) * 3 * D + c] : 1e3 * (c + 1);
    double ref[12 * D];
    for (int s = 0; s < NS; s++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < lens[s]; i++) {
                double sc[LMAX], m = -INFINITY, sum = 0;
                for (int j = 0; j < LMAX; j++) {
                    double d = 0;
                    for (int k = 0; k < DH; k++) d += pad[s][i][h * DH + k] * pad[s][j][D + h * DH + k];
                    sc[j] = j < lens[s] ? d / sqrt((double)DH) : -1e300; /* key-padding mask */
                    if (sc[j] > m) m = sc[j];
                }
                for (int j = 0; j < LMAX; j++) sum += sc[j] = exp(sc[j] - m);
                for (int k = 0; k < DH; k++) {
                    double o = 0;
                    for (int j = 0; j < LMAX; j++) o += sc[j] / sum * pad[s][j][2 * D + h * DH + k];
                    ref[(off[s] + i) * D + h * DH + k] = o;
                }
            }
    cr_assert_geq(rk_attention_scratch_floats(LMAX), LMAX * LMAX);
    rk_attention_forward(out, qkv, off, NS, H, DH, scratch);
    expect_close(out, ref, (size_t)T * D, "attention");
}

Test(ops, mean_pool_and_l2_normalize) {
    enum { D = 6 };
    float x[5 * D], out[3 * D];
    for (int i = 0; i < 5 * D; i++) x[i] = (float)(i % 7) - 2.5f;
    int32_t off[4] = {0, 2, 2, 5}; /* second sequence empty */
    double ref[3 * D];
    for (int s = 0; s < 3; s++)
        for (int j = 0; j < D; j++) {
            double sum = 0;
            for (int t = off[s]; t < off[s + 1]; t++) sum += x[t * D + j];
            ref[s * D + j] = off[s + 1] > off[s] ? sum / (off[s + 1] - off[s]) : 0.0;
        }
    rk_mean_pool_forward(out, x, off, 3, D);
    expect_close(out, ref, 3 * D, "mean pool");
    for (int s = 0; s < 3; s++) {
        double n = 0;
        for (int j = 0; j < D; j++) n += ref[s * D + j] * ref[s * D + j];
        n = sqrt(n) > 1e-12 ? sqrt(n) : 1e-12;
        for (int j = 0; j < D; j++) ref[s * D + j] /= n;
    }
    rk_l2_normalize(out, 3, D, 1e-12f);
    expect_close(out, ref, 3 * D, "l2 normalize");
}
