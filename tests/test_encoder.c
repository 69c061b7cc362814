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
#include <sys/wait.h>

#include "helpers.h"
#include "core.h"
#include "embed.h"
#include "nn.h"

/* ---------------------------------------------------------------- helpers */


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
    const char *dir = rk_test_encoder_dir();
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
    const char *dir = rk_test_encoder_dir();
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

static void make_tiny(char *dir); /* a tiny random BERT directory, below */

Test(tokenizer, invalid_utf8_is_an_error) {
    char dir[64];
    make_tiny(dir); /* its vocabulary is enough: no real model needed */
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
    rk_rm_rf(dir, &err);
}

/* Random bytes and random code points from every plane: the tokenizer
 * returns RK_OK or "invalid UTF-8", never reads or writes out of bounds
 * (checked under ASan by `make asan`), and always emits [CLS] ... [SEP]
 * within max_len. A deterministic stand-in for a fuzz target. */
Test(tokenizer, random_input_is_safe) {
    char dir[64];
    make_tiny(dir);
    rk_tokenizer *t;
    rk_err err = {0};
    cr_assert_eq(rk_tokenizer_open_dir(dir, &t, &err), RK_OK, "%s", err.msg);
    rk_rng r;
    rk_rng_seed(&r, 11);
    char buf[1200];
    int32_t ids[64];
    for (int it = 0; it < 3000; it++) {
        size_t n = 0, len = rk_rng_below(&r, 300);
        int valid = it % 2;
        while (n < len) {
            if (!valid) {
                buf[n++] = (char)rk_rng_below(&r, 256);
                continue;
            }
            uint32_t cp;
            do cp = (uint32_t)rk_rng_below(&r, it % 4 == 1 ? 0x110000 : 0x3000);
            while (cp >= 0xD800 && cp <= 0xDFFF);
            if (rk_rng_below(&r, 3) == 0) cp = " !,.-\tAb"[rk_rng_below(&r, 8)];
            if (cp < 0x80) buf[n++] = (char)cp;
            else if (cp < 0x800) buf[n++] = (char)(0xC0 | (cp >> 6)), buf[n++] = (char)(0x80 | (cp & 0x3F));
            else if (cp < 0x10000)
                buf[n++] = (char)(0xE0 | (cp >> 12)), buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)),
                buf[n++] = (char)(0x80 | (cp & 0x3F));
            else
                buf[n++] = (char)(0xF0 | (cp >> 18)), buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3F)),
                buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3F)), buf[n++] = (char)(0x80 | (cp & 0x3F));
        }
        int max_len = 2 + (int)rk_rng_below(&r, 62), k = -1;
        rk_status s = rk_tokenizer_encode(t, buf, n, max_len, ids, &k, &err);
        if (valid) cr_assert_eq(s, RK_OK, "iteration %d: %s", it, err.msg);
        if (s == RK_OK) {
            cr_assert(k >= 2 && k <= max_len, "iteration %d: %d ids for max_len %d", it, k, max_len);
            cr_assert(ids[0] == 2 && ids[k - 1] == 3, "iteration %d: not [CLS] ... [SEP]", it);
            for (int j = 1; j < k - 1; j++) cr_assert(ids[j] >= 0 && ids[j] < 12 && ids[j] != 2 && ids[j] != 3);
        } else {
            cr_assert_eq(s, RK_EINVAL);
            cr_assert(!strncmp(err.msg, "invalid UTF-8 at byte ", 22), "%s", err.msg);
        }
    }
    rk_tokenizer_close(t);
    rk_rm_rf(dir, &err);
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

/* ---------------------------------------------------------------- encoder vs sentence-transformers */

static void check_embeddings(const float *got, const float *want, size_t n, int dim, double *min_cos, double *max_diff) {
    *min_cos = 1.0;
    *max_diff = 0.0;
    for (size_t i = 0; i < n; i++) {
        double dot = 0, ng = 0, nw = 0;
        for (int j = 0; j < dim; j++) {
            double g = got[i * dim + j], w = want[i * dim + j];
            dot += g * w;
            ng += g * g;
            nw += w * w;
            if (fabs(g - w) > *max_diff) *max_diff = fabs(g - w);
        }
        double c = dot / sqrt(ng * nw);
        if (c < *min_cos) *min_cos = c;
    }
}

Test(encoder, equals_sentence_transformers, .timeout = 300) {
    const char *dir = rk_test_encoder_dir();
    ref_t r;
    ref_load(&r);
    rk_st_file *f;
    rk_err err = {0};
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/encoder_ref.safetensors", &f, &err), RK_OK, "%s", err.msg);
    rk_text_encoder *e;
    rk_text_encoder_opts o = RK_TEXT_ENCODER_OPTS_DEFAULT;
    o.max_tokens = 1024; /* force several chunks */
    cr_assert_eq(rk_text_encoder_open(dir, &o, &e, &err), RK_OK, "%s", err.msg);
    const int dim = rk_text_encoder_dim(e);
    cr_assert_eq(dim, 384);
    cr_assert_eq(rk_text_encoder_max_len(e), 256);
    float *want = malloc(r.n * dim * sizeof *want), *got = malloc(r.n * dim * sizeof *got);
    int64_t shape[2] = {(int64_t)r.n, dim};
    cr_assert_eq(rk_st_read_f32(f, "embeddings", want, 2, shape, &err), RK_OK, "%s", err.msg);
    const char **texts = malloc(r.n * sizeof *texts);
    size_t *lens = malloc(r.n * sizeof *lens);
    for (size_t i = 0; i < r.n; i++) texts[i] = ref_text(&r, i, &lens[i]);
    cr_assert_eq(rk_text_encoder_encode(e, texts, lens, (int)r.n, got, &err), RK_OK, "%s", err.msg);
    double min_cos, max_diff;
    check_embeddings(got, want, r.n, dim, &min_cos, &max_diff);
    cr_log_info("encoder vs sentence-transformers on %zu strings: min cosine %.8f, max |diff| %.3g", r.n, min_cos,
                max_diff);
    cr_expect_geq(min_cos, 0.9999, "min cosine %.8f", min_cos);
    cr_expect_leq(max_diff, 1e-4, "max abs diff %.3g", max_diff);
    /* one at a time (batch 1) gives the same vectors */
    for (size_t i = 0; i < r.n; i += 23) {
        float one[384];
        cr_assert_eq(rk_text_encoder_encode(e, &texts[i], &lens[i], 1, one, &err), RK_OK);
        double c1, d1;
        check_embeddings(one, got + i * dim, 1, dim, &c1, &d1);
        cr_expect_leq(d1, 1e-5, "string %zu: batch 1 vs batched differ by %.3g", i, d1);
    }
    /* invalid UTF-8 in a batch names the text */
    const char *bad[] = {"fine", "also fine", "caf\xc3"};
    cr_expect_eq(rk_text_encoder_encode(e, bad, NULL, 3, got, &err), RK_EINVAL);
    cr_expect_str_eq(err.msg, "text 2: invalid UTF-8 at byte 3");
    free(texts);
    free(lens);
    free(want);
    free(got);
    rk_text_encoder_close(e);
    rk_st_close(f);
    json_decref(r.doc);
}

/* ---------------------------------------------------------------- bad model directories */

/* A tiny random BERT (H=8, 2 heads, 1 layer, I=16, vocab 12, 16 positions)
 * written as a HF directory; no sentence-transformers files. */
#define TINY_H 8
#define TINY_I 16
#define TINY_V 12
#define TINY_P 16
static const char *tiny_config =
    "{\"model_type\": \"bert\", \"hidden_act\": \"gelu\", \"vocab_size\": 12, \"hidden_size\": 8,"
    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"intermediate_size\": 16,"
    " \"max_position_embeddings\": 16, \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12}";

static void write_text(const char *dir, const char *name, const char *text) {
    char p[512];
    rk_err err = {0};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cr_assert_eq(rk_write_file(p, text, strlen(text), &err), RK_OK, "%s", err.msg);
}

static void make_tiny(char *dir) {
    strcpy(dir, "/tmp/rk_tiny_bert_XXXXXX");
    cr_assert(mkdtemp(dir));
    write_text(dir, "config.json", tiny_config);
    write_text(dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\ncat\nsat\n##s\n.\non\nmat\n!\n");
    static float buf[20000];
    rk_rng r;
    rk_rng_seed(&r, 7);
    for (size_t i = 0; i < sizeof buf / sizeof *buf; i++) buf[i] = (float)(0.2 * rk_rng_normal(&r));
    rk_st_writer *w;
    rk_err err = {0};
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK);
    size_t off = 0;
#define ADD(name, d0, d1)                                                                                      \
    do {                                                                                                       \
        int64_t sh[2] = {d0, d1};                                                                              \
        cr_assert_eq(rk_st_writer_add_f32(w, name, buf + off, (d1) ? 2 : 1, sh, &err), RK_OK, "%s", err.msg); \
        off += (size_t)(d0) * ((d1) ? (d1) : 1);                                                               \
    } while (0)
    ADD("embeddings.word_embeddings.weight", TINY_V, TINY_H);
    ADD("embeddings.position_embeddings.weight", TINY_P, TINY_H);
    ADD("embeddings.token_type_embeddings.weight", 2, TINY_H);
    ADD("embeddings.LayerNorm.weight", TINY_H, 0);
    ADD("embeddings.LayerNorm.bias", TINY_H, 0);
    const char *sq[] = {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"};
    char n[128];
    for (int i = 0; i < 4; i++) {
        snprintf(n, sizeof n, "encoder.layer.0.%s.weight", sq[i]);
        ADD(n, TINY_H, TINY_H);
        snprintf(n, sizeof n, "encoder.layer.0.%s.bias", sq[i]);
        ADD(n, TINY_H, 0);
    }
    ADD("encoder.layer.0.attention.output.LayerNorm.weight", TINY_H, 0);
    ADD("encoder.layer.0.attention.output.LayerNorm.bias", TINY_H, 0);
    ADD("encoder.layer.0.intermediate.dense.weight", TINY_I, TINY_H);
    ADD("encoder.layer.0.intermediate.dense.bias", TINY_I, 0);
    ADD("encoder.layer.0.output.dense.weight", TINY_H, TINY_I);
    ADD("encoder.layer.0.output.dense.bias", TINY_H, 0);
    ADD("encoder.layer.0.output.LayerNorm.weight", TINY_H, 0);
    ADD("encoder.layer.0.output.LayerNorm.bias", TINY_H, 0);
#undef ADD
    cr_assert_leq(off, sizeof buf / sizeof *buf);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    cr_assert_eq(rk_st_writer_write(w, p, &err), RK_OK, "%s", err.msg);
    rk_st_writer_destroy(w);
}

static void expect_open_error(const char *dir, rk_status code, const char *msg) {
    rk_text_encoder *e = NULL;
    rk_err err = {0};
    rk_status s = rk_text_encoder_open(dir, NULL, &e, &err);
    cr_expect_eq(s, code, "status %d (%s), want %d; message: %s", s, rk_status_str(s), code, err.msg);
    cr_expect_str_eq(err.msg, msg);
    cr_expect_null(e);
    rk_text_encoder_close(e);
}

Test(encoder, tiny_model_runs_and_is_normalized) {
    char dir[64];
    make_tiny(dir);
    rk_text_encoder *e;
    rk_err err = {0};
    cr_assert_eq(rk_text_encoder_open(dir, NULL, &e, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(rk_text_encoder_max_len(e), TINY_P);
    const char *t[] = {"The cats sat on the mat!", "", "the cat the cat the cat the cat the cat the cat the cat"};
    float out[3 * TINY_H];
    cr_assert_eq(rk_text_encoder_encode(e, t, NULL, 3, out, &err), RK_OK, "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        double n = 0;
        for (int j = 0; j < TINY_H; j++) n += out[i * TINY_H + j] * out[i * TINY_H + j];
        cr_expect(fabs(n - 1.0) < 1e-5, "row %d has squared norm %g", i, n);
    }
    rk_text_encoder_close(e);
    rk_rm_rf(dir, &err);
}

/* Token states (EmbSum's CPE input): their mean, L2-normalized, is encode's
 * vector; max_len truncates; too few rows is an error, not an overflow. */
Test(encoder, token_states_pool_to_encode) {
    char dir[64];
    make_tiny(dir);
    rk_text_encoder *e;
    rk_err err = {0};
    cr_assert_eq(rk_text_encoder_open(dir, NULL, &e, &err), RK_OK, "%s", err.msg);
    const char *t[] = {"The cats sat on the mat!", "", "the cat the cat the cat the cat the cat the cat the cat"};
    float out[3 * TINY_H], st[3 * TINY_P * TINY_H], pooled[TINY_H];
    int32_t off[4];
    cr_assert_eq(rk_text_encoder_encode(e, t, NULL, 3, out, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_text_encoder_encode_tokens(e, t, NULL, 3, 0, st, 3 * TINY_P, off, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(off[0], 0);
    cr_expect_eq(off[2] - off[1], 2, "the empty text is [CLS] [SEP]");
    for (int i = 0; i < 3; i++) {
        rk_mean_pool_forward(pooled, st + (size_t)off[i] * TINY_H, (const int32_t[]){0, off[i + 1] - off[i]}, 1, TINY_H);
        rk_l2_normalize(pooled, 1, TINY_H, 1e-12f);
        for (int j = 0; j < TINY_H; j++)
            cr_expect(fabsf(pooled[j] - out[i * TINY_H + j]) <= 1e-6f, "text %d dim %d: %g vs %g", i, j, pooled[j],
                      out[i * TINY_H + j]);
    }
    cr_assert_eq(rk_text_encoder_encode_tokens(e, t, NULL, 3, 4, st, 3 * TINY_P, off, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(off[1], 4, "max_len 4 keeps 4 tokens, got %d", off[1]);
    cr_expect_eq(off[3] - off[2], 4);
    cr_expect_eq(rk_text_encoder_encode_tokens(e, t, NULL, 3, 0, st, 5, off, &err), RK_ETOOBIG);
    cr_expect(strstr(err.msg, "token states need more than the 5 rows given") != NULL, "%s", err.msg);
    rk_text_encoder_close(e);
    rk_rm_rf(dir, &err);
}

Test(encoder, missing_and_truncated_weights) {
    char dir[64], p[128], want[512];
    make_tiny(dir);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    char *data;
    size_t len;
    rk_err err = {0};
    cr_assert_eq(rk_read_file(p, &data, &len, &err), RK_OK);
    /* truncated inside the data section */
    cr_assert_eq(rk_write_file(p, data, len - 100, &err), RK_OK);
    snprintf(want, sizeof want,
             "%s: corrupt safetensors: entry 'encoder.layer.0.output.LayerNorm.bias' data_offsets outside the %zu-byte "
             "data section",
             p, len - 100 - 8 - (size_t)(unsigned char)data[0] - 256 * (size_t)(unsigned char)data[1]);
    expect_open_error(dir, RK_EFORMAT, want);
    /* truncated inside the header */
    cr_assert_eq(rk_write_file(p, data, 20, &err), RK_OK);
    snprintf(want, sizeof want, "%s: corrupt safetensors header: header length %zu exceeds file size 20", p,
             (size_t)(unsigned char)data[0] + 256 * (size_t)(unsigned char)data[1]);
    expect_open_error(dir, RK_EFORMAT, want);
    /* missing */
    remove(p);
    snprintf(want, sizeof want, "%s: No such file or directory", p);
    expect_open_error(dir, RK_ENOTFOUND, want);
    rk_free(data);
    rk_rm_rf(dir, &err);
}

Test(encoder, config_errors) {
    char dir[64], want[512];
    rk_err err = {0};
    make_tiny(dir);
    /* wrong shape: hidden_size 16 (heads still divide it) */
    write_text(dir, "config.json",
               "{\"vocab_size\": 12, \"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
               " \"intermediate_size\": 16, \"max_position_embeddings\": 16}");
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor 'embeddings.word_embeddings.weight' has shape [12,8], the reader expects [12,16]",
             dir);
    expect_open_error(dir, RK_ESHAPE, want);
    /* wrong intermediate size: caught at the first feed-forward tensor */
    write_text(dir, "config.json",
               "{\"vocab_size\": 12, \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,"
               " \"intermediate_size\": 32, \"max_position_embeddings\": 16}");
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor 'encoder.layer.0.intermediate.dense.weight' has shape [16,8], the reader "
             "expects [32,8]",
             dir);
    expect_open_error(dir, RK_ESHAPE, want);
    /* more layers than the file has */
    write_text(dir, "config.json",
               "{\"vocab_size\": 12, \"hidden_size\": 8, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
               " \"intermediate_size\": 16, \"max_position_embeddings\": 16}");
    snprintf(want, sizeof want, "%s/model.safetensors: tensor 'encoder.layer.1.attention.self.query.weight' missing", dir);
    expect_open_error(dir, RK_ENOTFOUND, want);
    /* heads do not divide hidden */
    write_text(dir, "config.json",
               "{\"vocab_size\": 12, \"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 3,"
               " \"intermediate_size\": 16, \"max_position_embeddings\": 16}");
    snprintf(want, sizeof want, "%s/config.json: hidden_size 8 is not a multiple of num_attention_heads 3", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    /* missing key, unsupported activation */
    write_text(dir, "config.json", "{\"vocab_size\": 12, \"num_hidden_layers\": 1}");
    snprintf(want, sizeof want, "%s/config.json: missing integer 'hidden_size'", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    write_text(dir, "config.json", "{\"hidden_act\": \"relu\", \"vocab_size\": 12}");
    snprintf(want, sizeof want, "%s/config.json: hidden_act 'relu' is not supported (only 'gelu')", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    write_text(dir, "config.json", "{\"vocab_size\": 12, \"hidden_size\": \"8\"}");
    snprintf(want, sizeof want, "%s/config.json: 'hidden_size' must be an integer in 1..65536", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    write_text(dir, "config.json", "{not json");
    snprintf(want, sizeof want, "%s/config.json: line 1: string or '}' expected near 'not'", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    /* vocabulary larger than the embedding table */
    write_text(dir, "config.json", tiny_config);
    write_text(dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\nc\nd\ne\nf\ng\nh\ni\n");
    snprintf(want, sizeof want, "%s/vocab.txt: 13 tokens, more than config.json's vocab_size 12", dir);
    expect_open_error(dir, RK_EFORMAT, want);
    /* pooling other than mean */
    write_text(dir, "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    char p[128];
    snprintf(p, sizeof p, "%s/1_Pooling", dir);
    cr_assert_eq(rk_mkdir_p(p, &err), RK_OK);
    write_text(dir, "1_Pooling/config.json", "{\"pooling_mode_cls_token\": true, \"pooling_mode_mean_tokens\": false}");
    snprintf(want, sizeof want, "%s/1_Pooling/config.json: only mean pooling (pooling_mode_mean_tokens alone) is supported",
             dir);
    expect_open_error(dir, RK_EFORMAT, want);
    /* missing config */
    rk_rm_rf(p, &err);
    snprintf(p, sizeof p, "%s/config.json", dir);
    remove(p);
    snprintf(want, sizeof want, "%s/config.json: No such file or directory", dir);
    expect_open_error(dir, RK_ENOTFOUND, want);
    rk_rm_rf(dir, &err);
}

/* Every allocation of open failing in turn: a clean ENOMEM, nothing leaked
 * (ASan's leak checker watches `make asan`). */
Test(encoder, open_survives_allocation_failures) {
    char dir[64];
    make_tiny(dir);
    rk_err err = {0};
    int ok = 0;
    for (long n = 1; n < 200 && !ok; n++) {
        rk_text_encoder *e = NULL;
        rk_alloc_fail_after(n);
        rk_status s = rk_text_encoder_open(dir, NULL, &e, &err);
        rk_alloc_fail_after(0);
        cr_assert(s == RK_OK || s == RK_ENOMEM, "n=%ld: %s", n, err.msg);
        ok = s == RK_OK;
        rk_text_encoder_close(e);
    }
    cr_expect(ok, "open never succeeded");
    rk_rm_rf(dir, &err);
}

/* ---------------------------------------------------------------- rank encode text (the CLI) */

static int run_cli(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "RK_LOG_LEVEL=error %s/bin/rank encode text %s 2>&1", RK_BINARY_DIR, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p, "popen %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(encoder, cli_csv_to_safetensors) {
    char dir[64], args[1024], out[4096], want[512];
    rk_err err = {0};
    make_tiny(dir);
    /* RFC 4180: quoted commas, doubled quotes, a newline inside quotes, CRLF */
    write_text(dir, "in.csv", "movieId,title,genres\r\n7,\"Cat, The (1999)\",Comedy|Drama\r\n"
                              "9,\"the \"\"mat\"\"\nsat\",(no genres listed)\r\n12,on,\r\n");
    snprintf(args, sizeof args,
             "--model %s --input %s/in.csv --text-template '{title} | {genres}' --id-column movieId --output %s/o.st "
             "--batch 2",
             dir, dir, dir);
    cr_assert_eq(run_cli(args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "encode: n=3 dim=8 batch=2"), "%s", out);
    char p[128];
    snprintf(p, sizeof p, "%s/o.st", dir);
    rk_st_file *f;
    cr_assert_eq(rk_st_open(p, &f, &err), RK_OK, "%s", err.msg);
    int64_t ids[3], sh[2] = {3, TINY_H};
    float emb[3 * TINY_H], ref[3 * TINY_H];
    cr_assert_eq(rk_st_read_i64(f, "ids", ids, 3, &err), RK_OK, "%s", err.msg);
    cr_expect(ids[0] == 7 && ids[1] == 9 && ids[2] == 12);
    cr_assert_eq(rk_st_read_f32(f, "embeddings", emb, 2, sh, &err), RK_OK, "%s", err.msg);
    cr_expect_str_eq(rk_st_meta(f, "text"), "{title} | {genres}");
    rk_st_close(f);
    rk_text_encoder *e;
    cr_assert_eq(rk_text_encoder_open(dir, NULL, &e, &err), RK_OK, "%s", err.msg);
    const char *t[] = {"Cat, The (1999) | Comedy|Drama", "the \"mat\"\nsat | (no genres listed)", "on | "};
    cr_assert_eq(rk_text_encoder_encode(e, t, NULL, 3, ref, &err), RK_OK);
    for (int i = 0; i < 3 * TINY_H; i++) cr_expect(fabsf(emb[i] - ref[i]) <= 1e-6f, "value %d", i);
    rk_text_encoder_close(e);

    /* bad input: each a clear message and exit status 1 */
    write_text(dir, "bad.csv", "movieId,title\n1,ok\nx2,oops\n");
    snprintf(args, sizeof args, "--model %s --input %s/bad.csv --column title --id-column movieId --output %s/o.st", dir,
             dir, dir);
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank encode: %s/bad.csv: row 3, column movieId: expected an integer id, got 'x2'", dir);
    cr_expect(strstr(out, want), "%s", out);
    /* an id twice, or no row at all: refused (both were written: rank sid refused the file later) */
    write_text(dir, "bad.csv", "movieId,title\n1,a\n2,b\n1,c\n");
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank encode: %s/bad.csv: rows 2 and 4, column movieId: id 1 given twice", dir);
    cr_expect(strstr(out, want), "%s", out);
    write_text(dir, "bad.csv", "movieId,title\n");
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank encode: %s/bad.csv: no rows to encode (a header only)", dir);
    cr_expect(strstr(out, want), "%s", out);
    write_text(dir, "bad.csv", "movieId,title\n1,\"fine\"\n2,\"caf\xc3\"\n");
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank: error: %s/bad.csv: row 3 ({title}): invalid UTF-8 at byte 3", dir);
    cr_expect(strstr(out, want), "%s", out);
    write_text(dir, "bad.csv", "movieId,title\n1,\"open\n");
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank: error: %s/bad.csv row 2, column title: unterminated quoted field", dir);
    cr_expect(strstr(out, want), "%s", out);
    write_text(dir, "bad.csv", "movieId,title\n1,a,b\n");
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank: error: %s/bad.csv: row 2 has 3 fields, the header has 2", dir);
    cr_expect(strstr(out, want), "%s", out);
    snprintf(args, sizeof args, "--model %s --input %s/in.csv --text-template '{title} {year}' --id-column movieId --output x",
             dir, dir);
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank encode: --text-template: %s/in.csv has no column 'year'", dir);
    cr_expect(strstr(out, want), "%s", out);
    snprintf(args, sizeof args, "--model %s/nope --input %s/in.csv --column title --id-column movieId --output x", dir, dir);
    cr_expect_eq(run_cli(args, out, sizeof out), 1);
    snprintf(want, sizeof want, "rank: error: %s/nope/config.json: No such file or directory", dir);
    cr_expect(strstr(out, want), "%s", out);
    cr_expect_eq(run_cli("--model m --input i --id-column x --output o", out, sizeof out), 2, "neither --column nor template");
    rk_rm_rf(dir, &err);
}
