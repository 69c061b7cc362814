/*
 * tests/test_vision.c — embed/'s image decoding, DINOv2 preprocessing and
 * vision encoder.
 *
 * References (written by tests/ref/gen_vision_ref.py):
 *   - tests/fixtures/images/NAME_crop.png: PIL 10's 224x224 crop after the
 *     DINOv2 eval transform of tests/fixtures/images/NAME (two real photos,
 *     generated grey/palette+tRNS/RGBA/16-bit/interlaced/1x1 images);
 *   - tests/fixtures/vision_ref.safetensors: onnxruntime's CLS output (and
 *     patch-token mean) of the ONNX model on PIL's preprocessing.
 * Hostile input (truncations, bit flips, declared-size bombs, wrong magic,
 * empty, CMYK) must give a clear error, never a crash.
 *
 * The encoder tests need the real weights: $RK_VISION_MODEL, else
 * $RK_MODEL_HOME/models/dinov2-vits14, else ~/.cache/rankd/models/
 * dinov2-vits14 (scripts/setup-vision.sh). Without them they skip, unless
 * RK_REQUIRE_VISION_MODEL=1 (set by `make test`), when they fail.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "embed.h"
#include "helpers.h"

#define IMG RK_SOURCE_DIR "/tests/fixtures/images/"
#define S RK_VISION_CROP
#define NPIX (3 * S * S)

static const float mean_[3] = {0.485f, 0.456f, 0.406f}, std_[3] = {0.229f, 0.224f, 0.225f};


/* Decode + preprocess a fixture image into x[3, S, S]. */
static void pre(const char *path, float *x) {
    rk_image im;
    rk_err err = {0};
    cr_assert_eq(rk_image_load(path, NULL, &im, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_image_preprocess(&im, RK_VISION_RESIZE, S, x, &err), RK_OK, "%s", err.msg);
    rk_image_free(&im);
}

/* PIL's crop (a lossless PNG fixture) normalized as ToTensor + Normalize. */
static void pil_crop(const char *name, float *x) {
    char path[512];
    snprintf(path, sizeof path, IMG "%s_crop.png", name);
    rk_image im;
    rk_err err = {0};
    cr_assert_eq(rk_image_load(path, NULL, &im, &err), RK_OK, "%s", err.msg);
    cr_assert(im.w == S && im.h == S);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) x[c * S * S + i] = ((float)im.rgb[3 * i + c] / 255.0f - mean_[c]) / std_[c];
    rk_image_free(&im);
}

/* Largest |a - b| in 8-bit levels between two normalized images. */
static int max_level_diff(const float *a, const float *b) {
    int worst = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) {
            int d = (int)lroundf(fabsf(a[c * S * S + i] - b[c * S * S + i]) * std_[c] * 255.0f);
            if (d > worst) worst = d;
        }
    return worst;
}

static uint8_t *slurp(const char *path, size_t *len) {
    char *buf;
    rk_err err = {0};
    cr_assert_eq(rk_read_file(path, &buf, len, &err), RK_OK, "%s", err.msg);
    return (uint8_t *)buf;
}

/* ---------------------------------------------------------------- preprocessing vs PIL */

/* PNG decoding is lossless and the resize is Pillow's fixed-point
 * algorithm, so PNG inputs must match PIL to the byte. JPEGs go through
 * Debian's libjpeg-turbo 2.1 here and Pillow's bundled libjpeg-turbo 3.0
 * there: the same ISLOW IDCT and fancy upsampling, so also exact in
 * practice; the tolerance is one 8-bit level. */
Test(vision_pre, matches_pil_on_every_fixture) {
    const char *png[] = {"grey", "palette_trns", "rgba", "rgb16", "interlaced", "one_px"};
    const char *jpg[] = {"chelsea", "coffee_prog", "greyj"};
    static float a[NPIX], b[NPIX];
    char path[512];
    for (size_t i = 0; i < sizeof png / sizeof *png; i++) {
        snprintf(path, sizeof path, IMG "%s.png", png[i]);
        pre(path, a);
        pil_crop(png[i], b);
        cr_expect_eq(max_level_diff(a, b), 0, "%s.png: %d levels off PIL", png[i], max_level_diff(a, b));
    }
    for (size_t i = 0; i < sizeof jpg / sizeof *jpg; i++) {
        snprintf(path, sizeof path, IMG "%s.jpg", jpg[i]);
        pre(path, a);
        pil_crop(jpg[i], b);
        cr_expect_leq(max_level_diff(a, b), 1, "%s.jpg: %d levels off PIL", jpg[i], max_level_diff(a, b));
    }
}

Test(vision_pre, one_pixel_image_is_a_flat_crop) {
    static float x[NPIX];
    pre(IMG "one_px.png", x);
    const uint8_t px[3] = {200, 30, 90};
    for (int c = 0; c < 3; c++) {
        float want = ((float)px[c] / 255.0f - mean_[c]) / std_[c];
        for (int i = 0; i < S * S; i += 997) cr_assert_float_eq(x[c * S * S + i], want, 1e-6);
    }
}

/* ---------------------------------------------------------------- hostile input */

static rk_status decode(const uint8_t *p, size_t n, rk_err *err) {
    rk_image im;
    rk_status s = rk_image_decode(p, n, NULL, &im, err);
    if (s == RK_OK) {
        cr_assert(im.w > 0 && im.h > 0 && im.rgb);
        rk_image_free(&im);
    } else {
        cr_assert(im.rgb == NULL && err->msg[0], "an error leaves no image and says why");
    }
    return s;
}

Test(vision_hostile, empty_wrong_magic_cmyk) {
    rk_err err = {0};
    cr_assert_eq(decode((const uint8_t *)"", 0, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "empty image data"), "%s", err.msg);
    cr_assert_eq(decode((const uint8_t *)"GIF89a\x01\x00\x01\x00", 10, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "not a JPEG or PNG image (first bytes 47 49 46 38)"), "%s", err.msg);
    size_t n;
    uint8_t *p = slurp(IMG "cmyk.jpg", &n);
    cr_assert_eq(decode(p, n, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "CMYK"), "%s", err.msg);
    rk_free(p);
    rk_image im;
    cr_assert_eq(rk_image_load(IMG "no-such.png", NULL, &im, &err), RK_ENOTFOUND);
}

Test(vision_hostile, truncated_jpeg_and_png) {
    rk_err err = {0};
    size_t n;
    uint8_t *p = slurp(IMG "chelsea.jpg", &n);
    cr_assert_eq(decode(p, n / 2, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "truncated JPEG"), "%s", err.msg);
    cr_assert_eq(decode(p, 100, &err), RK_EFORMAT, "%s", err.msg);
    rk_free(p);
    p = slurp(IMG "rgba.png", &n);
    cr_assert_eq(decode(p, n / 2, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "corrupt PNG") && strstr(err.msg, "truncated"), "%s", err.msg);
    rk_free(p);
}

/* Every prefix of a small JPEG and of a small interlaced PNG: each an error
 * or an image, never a crash (ASan build: never a bad access). */
Test(vision_hostile, every_prefix) {
    const char *files[] = {IMG "greyj.jpg", IMG "interlaced.png", IMG "coffee_prog.jpg"};
    for (size_t f = 0; f < 3; f++) {
        size_t n;
        uint8_t *p = slurp(files[f], &n);
        int ok = 0;
        for (size_t k = 0; k < n; k += (f == 2 ? 37 : 1)) {
            rk_err err = {0};
            ok += decode(p, k, &err) == RK_OK;
        }
        rk_err err = {0};
        cr_assert_eq(decode(p, n, &err), RK_OK, "%s", err.msg);
        cr_assert_eq(ok, 0, "%s: a strict prefix decoded as an image", files[f]);
        rk_free(p);
    }
}

Test(vision_hostile, bit_flips) {
    const char *files[] = {IMG "greyj.jpg", IMG "palette_trns.png", IMG "rgb16.png", IMG "coffee_prog.jpg"};
    uint64_t rng = 13;
    for (size_t f = 0; f < 4; f++) {
        size_t n;
        uint8_t *p = slurp(files[f], &n);
        for (int it = 0; it < 150; it++) {
            uint8_t *q = rk_malloc(n);
            memcpy(q, p, n);
            for (int k = 0; k < 4; k++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                q[(rng >> 33) % n] ^= (uint8_t)(1u << ((rng >> 20) & 7));
            }
            rk_err err = {0};
            decode(q, n, &err);
            rk_free(q);
        }
        rk_free(p);
    }
}

static uint32_t crc32_(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v; }

/* A PNG whose IHDR declares w x h (CRC fixed up), the pixel data unchanged. */
static uint8_t *png_with_size(uint32_t w, uint32_t h, size_t *n) {
    uint8_t *p = slurp(IMG "grey.png", n);
    put32(p + 16, w), put32(p + 20, h);
    put32(p + 29, crc32_(p + 12, 17));
    return p;
}

Test(vision_hostile, decompression_bombs_refused_before_allocating) {
    rk_err err = {0};
    size_t n;
    uint8_t *p = png_with_size(100000, 100000, &n);
    cr_assert_eq(decode(p, n, &err), RK_ETOOBIG);
    cr_assert(strstr(err.msg, "PNG: 100000x100000 pixels is over the limit of 40000000 pixels"), "%s", err.msg);
    rk_free(p);
    p = png_with_size(0, 5, &n);
    cr_assert_eq(decode(p, n, &err), RK_EFORMAT, "%s", err.msg);
    rk_free(p);
    /* a JPEG whose SOF declares 65000 x 65000 */
    p = slurp(IMG "chelsea.jpg", &n);
    size_t i = 2;
    while (i + 9 < n && !(p[i] == 0xFF && (p[i + 1] == 0xC0 || p[i + 1] == 0xC2))) i++;
    cr_assert(i + 9 < n, "no SOF marker");
    p[i + 5] = 0xFD, p[i + 6] = 0xE8, p[i + 7] = 0xFD, p[i + 8] = 0xE8;
    cr_assert_eq(decode(p, n, &err), RK_ETOOBIG);
    cr_assert(strstr(err.msg, "JPEG: 65000x65000 pixels is over the limit"), "%s", err.msg);
    /* a smaller limit applies to a real image too */
    rk_image im;
    rk_image_limits lim = {1000, 1 << 20};
    rk_free(p);
    p = slurp(IMG "chelsea.jpg", &n);
    cr_assert_eq(rk_image_decode(p, n, &lim, &im, &err), RK_ETOOBIG);
    lim.max_pixels = 1000000, lim.max_bytes = 1000;
    cr_assert_eq(rk_image_decode(p, n, &lim, &im, &err), RK_ETOOBIG);
    cr_assert(strstr(err.msg, "over the limit of 1000 bytes"), "%s", err.msg);
    rk_free(p);
}

/* ---------------------------------------------------------------- encoder */

static void ref_vec(const char *name, float *out) {
    rk_st_file *f;
    rk_err err = {0};
    cr_assert_eq(rk_st_open(RK_SOURCE_DIR "/tests/fixtures/vision_ref.safetensors", &f, &err), RK_OK, "%s", err.msg);
    int64_t sh[4] = {1, 384};
    cr_assert_eq(rk_st_read_f32(f, name, out, 2, sh, &err), RK_OK, "%s", err.msg);
    rk_st_close(f);
}

static double cosine(const float *a, const float *b, int n, double *maxabs) {
    double d = 0, na = 0, nb = 0;
    *maxabs = 0;
    for (int i = 0; i < n; i++) {
        d += (double)a[i] * b[i], na += (double)a[i] * a[i], nb += (double)b[i] * b[i];
        if (fabs(a[i] - b[i]) > *maxabs) *maxabs = fabs(a[i] - b[i]);
    }
    return d / sqrt(na * nb);
}

Test(vision_encoder, matches_onnxruntime) {
    const char *dir = rk_test_vision_dir();
    rk_vision_encoder *e;
    rk_err err = {0};
    rk_vision_encoder_opts o = RK_VISION_ENCODER_OPTS_DEFAULT;
    o.max_batch = 2;
    cr_assert_eq(rk_vision_encoder_open(dir, &o, &e, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_vision_encoder_dim(e), 384);
    const char *names[] = {"chelsea", "coffee_prog"};
    static float x[3 * NPIX], y[3 * 384], ref[384], y1[384];
    for (int i = 0; i < 2; i++) {
        char key[64], path[256];
        snprintf(key, sizeof key, "cls/%s", names[i]);
        ref_vec(key, ref);
        double mx, c;
        /* the encoder alone, on PIL's exact input */
        pil_crop(names[i], x);
        cr_assert_eq(rk_vision_encoder_encode(e, x, 1, y, &err), RK_OK, "%s", err.msg);
        c = cosine(y, ref, 384, &mx);
        cr_expect(c >= 0.9999 && mx <= 1e-3, "%s: cosine %.6f, max |diff| %g vs onnxruntime", names[i], c, mx);
        /* the whole path: our decoder + preprocessing + encoder */
        snprintf(path, sizeof path, IMG "%s.jpg", names[i]);
        pre(path, x + (size_t)i * NPIX);
        cr_assert_eq(rk_vision_encoder_encode(e, x + (size_t)i * NPIX, 1, y, &err), RK_OK);
        c = cosine(y, ref, 384, &mx);
        cr_expect(c >= 0.9999, "%s.jpg end to end: cosine %.6f, max |diff| %g", names[i], c, mx);
    }
    /* batch of 3 through a 2-image workspace = one by one */
    memcpy(x + 2 * NPIX, x, NPIX * sizeof(float));
    cr_assert_eq(rk_vision_encoder_encode(e, x, 3, y, &err), RK_OK);
    for (int i = 0; i < 3; i++) {
        double mx;
        cr_assert_eq(rk_vision_encoder_encode(e, x + (size_t)i * NPIX, 1, y1, &err), RK_OK);
        cosine(y + i * 384, y1, 384, &mx);
        cr_expect(mx <= 1e-4, "image %d: batched vs alone differ by %g", i, mx);
    }
    x[5] = NAN;
    cr_assert_eq(rk_vision_encoder_encode(e, x, 1, y, &err), RK_ENUMERIC);
    cr_assert(strstr(err.msg, "image 0: non-finite pixel"), "%s", err.msg);
    rk_vision_encoder_close(e);
}

Test(vision_encoder, mean_pool_and_normalize) {
    const char *dir = rk_test_vision_dir();
    rk_vision_encoder *e;
    rk_err err = {0};
    rk_vision_encoder_opts o = RK_VISION_ENCODER_OPTS_DEFAULT;
    o.max_batch = 1, o.pool = RK_VIT_POOL_MEAN, o.normalize = 1;
    cr_assert_eq(rk_vision_encoder_open(dir, &o, &e, &err), RK_OK, "%s", err.msg);
    static float x[NPIX], y[384], ref[384];
    pil_crop("chelsea", x);
    ref_vec("mean/chelsea", ref);
    cr_assert_eq(rk_vision_encoder_encode(e, x, 1, y, &err), RK_OK);
    double mx, c = cosine(y, ref, 384, &mx), nrm = 0;
    for (int i = 0; i < 384; i++) nrm += (double)y[i] * y[i];
    cr_expect(c >= 0.9999, "mean pool: cosine %.6f", c);
    cr_expect(fabs(sqrt(nrm) - 1) < 1e-5, "norm %g", sqrt(nrm));
    rk_vision_encoder_close(e);
}

Test(vision_encoder, open_errors_name_the_file) {
    rk_vision_encoder *e;
    rk_err err = {0};
    char dir[] = "/tmp/rk_vision_XXXXXX";
    cr_assert(mkdtemp(dir));
    cr_assert_eq(rk_vision_encoder_open(dir, NULL, &e, &err), RK_ENOTFOUND);
    cr_assert(strstr(err.msg, "config.json"), "%s", err.msg);
    char p[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"model_type\":\"bert\",\"hidden_size\":384}", f);
    fclose(f);
    cr_assert_eq(rk_vision_encoder_open(dir, NULL, &e, &err), RK_EFORMAT);
    cr_assert(strstr(err.msg, "model_type 'bert' is not supported (only 'dinov2')"), "%s", err.msg);
    f = fopen(p, "w");
    fputs("{\"model_type\":\"dinov2\",\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
          "\"patch_size\":14,\"image_size\":28}", f);
    fclose(f);
    cr_assert_eq(rk_vision_encoder_open(dir, NULL, &e, &err), RK_ENOTFOUND);
    cr_assert(strstr(err.msg, "model.safetensors"), "%s", err.msg);
    remove(p);
    rmdir(dir);
}

/* ---------------------------------------------------------------- rank encode image / join (CLI) */

#define RANK RK_BINARY_DIR "/bin/rank"

static void sh(const char *fmt, const char *a, const char *b) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* Input errors are found before the model is opened, and name the file/line. */
Test(vision_cli, bad_inputs_name_the_file) {
    char dir[] = "/tmp/rk_vcli_XXXXXX", cmd[2048], out[8192];
    cr_assert(mkdtemp(dir));
    sh("cp " IMG "chelsea.jpg %s/cat.jpg%s", dir, "");
    snprintf(cmd, sizeof cmd, RANK " encode image --model /nonexistent --dir %s --output %s/o.st", dir, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "cat.jpg: the file name is not an integer id"), "%s", out);
    sh("printf '1,cat.jpg\\n# comment\\nxx,cat.jpg\\n' > %s/list.csv%s", dir, "");
    snprintf(cmd, sizeof cmd, RANK " encode image --model /nonexistent --list %s/list.csv --output %s/o.st", dir, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "list.csv: line 3: expected 'ID,PATH' with an integer ID, got 'xx,cat.jpg'"), "%s", out);
    sh("printf '1,cat.jpg\\n1,dog.jpg\\n' > %s/list.csv%s", dir, "");
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "list.csv: id 1 given twice") && strstr(out, "cat.jpg and") && strstr(out, "dog.jpg"), "%s", out);
    sh("printf '1,cat.jpg\\n2,dog\\000.jpg\\n' > %s/list.csv%s", dir, "");
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "list.csv: line 2: a NUL byte in the line"), "%s", out);
    snprintf(cmd, sizeof cmd, RANK " encode image --model /x --dir %s --list %s/l --output o", dir, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 2, "--dir and --list together: usage error");
    sh("rm -rf %s%s", dir, "");
}

/* A folder with a corrupt image: stop naming it, or --skip-bad; the
 * embeddings equal the library's; join concatenates by id. */
Test(vision_cli, encode_folder_and_join, .timeout = 300) {
    const char *model = rk_test_vision_dir();
    char dir[] = "/tmp/rk_vcli_XXXXXX", cmd[4096], out[8192];
    cr_assert(mkdtemp(dir));
    sh("mkdir %s/img && cp " IMG "chelsea.jpg %s/img/7.jpg", dir, dir);
    sh("cp " IMG "rgba.png %s/img/3.png && head -c 5000 " IMG "coffee_prog.jpg > %s/img/5.jpg", dir, dir);
    snprintf(cmd, sizeof cmd, RANK " encode image --model %s --dir %s/img --output %s/o.st", model, dir, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1);
    cr_expect(strstr(out, "img/5.jpg: truncated JPEG"), "%s", out);
    snprintf(cmd, sizeof cmd, RANK " encode image --model %s --dir %s/img --output %s/o.st --skip-bad", model, dir, dir);
    cr_assert_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "encode: n=2 skipped=1 dim=384"), "%s", out);
    rk_st_file *f;
    rk_err err = {0};
    char path[256];
    snprintf(path, sizeof path, "%s/o.st", dir);
    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    int64_t ids[2], sh2[2] = {2, 384};
    static float got[2 * 384], x[NPIX], want[384];
    cr_assert_eq(rk_st_read_i64(f, "ids", ids, 2, &err), RK_OK);
    cr_assert_eq(rk_st_read_f32(f, "embeddings", got, 2, sh2, &err), RK_OK);
    cr_expect(ids[0] == 3 && ids[1] == 7, "ids in name order: %lld %lld", (long long)ids[0], (long long)ids[1]);
    cr_expect(strstr(rk_st_meta(f, "image"), "pool cls, l2 no"), "%s", rk_st_meta(f, "image"));
    rk_st_close(f);
    rk_vision_encoder *e;
    cr_assert_eq(rk_vision_encoder_open(model, NULL, &e, &err), RK_OK);
    pre(IMG "chelsea.jpg", x);
    cr_assert_eq(rk_vision_encoder_encode(e, x, 1, want, &err), RK_OK);
    rk_vision_encoder_close(e);
    double mx, c = cosine(got + 384, want, 384, &mx);
    cr_expect(c > 0.99999 && mx < 1e-4, "CLI vs library: cosine %g, max diff %g", c, mx);
    /* join with a text-embeddings file of ids 7, 8 (as rank encode text writes it) */
    rk_st_writer *w;
    static float te[2 * 4] = {1, 0, 0, 0, 0, 1, 0, 0};
    int64_t tid[2] = {7, 8}, ts[2] = {2, 4}, ti[1] = {2};
    snprintf(path, sizeof path, "%s/t.st", dir);
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK);
    rk_st_writer_add_f32(w, "embeddings", te, 2, ts, &err);
    rk_st_writer_add_i64(w, "ids", tid, 1, ti, &err);
    rk_st_writer_add_meta(w, "encoder", "xxh64:0000000000000001", &err);
    rk_st_writer_add_meta(w, "text", "{title}", &err);
    cr_assert_eq(rk_st_writer_write(w, path, &err), RK_OK, "%s", err.msg);
    rk_st_writer_destroy(w);
    snprintf(cmd, sizeof cmd, RANK " encode join --text %s/t.st --image %s/o.st --output %s/j.st", dir, dir, dir);
    cr_assert_eq(rk_test_run(cmd, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "join: n=1 text_only=1 image_only=1 dim=388"), "%s", out);
    cr_expect(strstr(out, "not L2-normalized"), "warns about the scale: %s", out);
    snprintf(path, sizeof path, "%s/j.st", dir);
    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    static float j[388];
    int64_t js[2] = {1, 388};
    cr_assert_eq(rk_st_read_f32(f, "embeddings", j, 2, js, &err), RK_OK, "%s", err.msg);
    cr_expect(j[0] == 1 && j[1] == 0 && j[4] == got[384] && j[387] == got[384 + 383], "[text ; image] of id 7");
    rk_st_close(f);
    /* --output naming an input (here through a link) is refused, the input kept */
    sh("ln -s t.st %s/t.link%s", dir, "");
    snprintf(cmd, sizeof cmd, RANK " encode join --text %s/t.st --image %s/o.st --output %s/t.link", dir, dir, dir);
    cr_expect_eq(rk_test_run(cmd, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "t.link is the input") != NULL, "%s", out);
    snprintf(path, sizeof path, "%s/t.st", dir);
    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    cr_expect_not_null(rk_st_meta(f, "text"), "the text input was replaced");
    rk_st_close(f);
    sh("rm -rf %s%s", dir, "");
}
