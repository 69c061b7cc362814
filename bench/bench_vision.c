/*
 * bench/bench_vision.c — images/s of rankd's vision encoder alone (no
 * decoding), for make bench-vision (bench/bench_vision.sh drives it,
 * interleaved with onnxruntime and PyTorch).
 *
 *   bench_vision MODEL_DIR PIXELS.f32 N THREADS BATCH ITERS
 *
 * PIXELS.f32: N preprocessed images [N, 3, 224, 224] float32 (the bench's
 * real photos after the DINOv2 transform). One untimed warm-up batch, then
 * ITERS batches of BATCH images cycling through the N; prints
 *   bench_vision: threads=T batch=B images=K seconds=S img_per_s=R
 *
 *   bench_vision --preprocess LIST.csv PIXELS.f32
 *
 * Preprocessing parity: decodes and preprocesses every "ID,PATH" of LIST
 * with embed/image.c and compares with PIXELS.f32 (PIL's, same order) in
 * 8-bit levels; prints
 *   preprocess: images=N exact=E max_levels=M
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "embed.h"

static int preprocess_check(const char *list, const char *pixels) {
    static const float sd[3] = {0.229f, 0.224f, 0.225f};
    static float a[3 * RK_VISION_CROP * RK_VISION_CROP], b[3 * RK_VISION_CROP * RK_VISION_CROP];
    const int plane = RK_VISION_CROP * RK_VISION_CROP;
    FILE *l = fopen(list, "r"), *px = fopen(pixels, "rb");
    char line[4096];
    int n = 0, exact = 0, worst = 0, rc = 1;
    if (!l || !px) {
        fprintf(stderr, "bench_vision: cannot open %s or %s\n", list, pixels);
        goto done;
    }
    while (fgets(line, sizeof line, l)) {
        line[strcspn(line, "\n")] = 0;
        char *path = strchr(line, ',');
        rk_image im;
        rk_err err = {0};
        if (!path || rk_image_load(path + 1, NULL, &im, &err) ||
            rk_image_preprocess(&im, RK_VISION_RESIZE, RK_VISION_CROP, a, &err) ||
            fread(b, sizeof(float), 3 * (size_t)plane, px) != 3 * (size_t)plane) {
            fprintf(stderr, "bench_vision: %s: %s\n", line, err.msg);
            goto done;
        }
        rk_image_free(&im);
        int w = 0;
        for (int i = 0; i < 3 * plane; i++) {
            int d = (int)lroundf(fabsf(a[i] - b[i]) * sd[i / plane] * 255.0f);
            w = d > w ? d : w;
        }
        exact += w == 0, worst = w > worst ? w : worst, n++;
    }
    printf("preprocess: images=%d exact=%d max_levels=%d\n", n, exact, worst);
    rc = 0;
done:
    if (l) fclose(l);
    if (px) fclose(px);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--preprocess")) return preprocess_check(argv[2], argv[3]);
    if (argc != 7) {
        fprintf(stderr, "usage: bench_vision MODEL_DIR PIXELS.f32 N THREADS BATCH ITERS\n");
        return 2;
    }
    const int n = atoi(argv[3]), threads = atoi(argv[4]), batch = atoi(argv[5]), iters = atoi(argv[6]);
    if (n < batch || n < 1 || threads < 1 || batch < 1 || iters < 1) {
        fprintf(stderr, "bench_vision: need N >= BATCH >= 1, THREADS >= 1, ITERS >= 1\n");
        return 2;
    }
    rk_log_set_program("bench_vision");
    rk_err err = {0};
    rk_vision_encoder *e = NULL;
    rk_vision_encoder_opts o = RK_VISION_ENCODER_OPTS_DEFAULT;
    o.threads = threads, o.max_batch = batch;
    const size_t per = 3 * RK_VISION_CROP * RK_VISION_CROP;
    float *px = NULL, *out = rk_malloc((size_t)batch * 384 * sizeof(float));
    char *buf = NULL;
    size_t len;
    int rc = 1;
    if (rk_vision_encoder_open(argv[1], &o, &e, &err) || rk_read_file(argv[2], &buf, &len, &err)) goto fail;
    if (len != (size_t)n * per * sizeof(float)) {
        rk_fail(&err, RK_ESHAPE, "%s: %zu bytes, expected %d images", argv[2], len, n);
        goto fail;
    }
    rk_log_blas_info();
    px = (float *)buf;
    if (rk_vision_encoder_encode(e, px, batch, out, &err)) goto fail;
    double t0 = rk_now();
    for (int it = 0; it < iters; it++) {
        int first = (it * batch) % (n - batch + 1);
        if (rk_vision_encoder_encode(e, px + (size_t)first * per, batch, out, &err)) goto fail;
    }
    double secs = rk_now() - t0;
    printf("bench_vision: threads=%d batch=%d images=%d seconds=%.3f img_per_s=%.3f\n", threads, batch, iters * batch,
           secs, iters * batch / secs);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_vision: %s\n", err.msg);
done:
    rk_free(buf);
    rk_free(out);
    rk_vision_encoder_close(e);
    return rc;
}
