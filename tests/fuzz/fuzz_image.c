/*
 * tests/fuzz/fuzz_image.c — libFuzzer target for embed/'s image input path:
 * bytes -> rk_image_decode (JPEG via libjpeg-turbo, PNG via libpng) ->
 * rk_image_preprocess (the DINOv2 transform). Any input must give an image
 * or an error with a message — never a crash, leak, out-of-bounds access or
 * unbounded allocation (a 4 Mpx / 4 MiB limit keeps each run small; the
 * limit check itself is what a decompression bomb meets).
 *
 *   make fuzz                      (clang, ASan + UBSan; FUZZ_SECONDS=60)
 *   build-fuzz/fuzz/fuzz_image tests/fixtures/images -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static float px[3 * RK_VISION_CROP * RK_VISION_CROP];
    rk_image_limits lim = {4u << 20, 4u << 20};
    rk_image im;
    rk_err err = {0};
    rk_status s = rk_image_decode(data, size, &lim, &im, &err);
    if (s != RK_OK) {
        if (!err.msg[0] || im.rgb) abort(); /* an error says why and leaves nothing */
        return 0;
    }
    if (im.w < 1 || im.h < 1 || (uint64_t)im.w * (uint64_t)im.h > lim.max_pixels) abort();
    s = rk_image_preprocess(&im, RK_VISION_RESIZE, RK_VISION_CROP, px, &err);
    if (s == RK_OK)
        for (size_t i = 0; i < sizeof px / sizeof *px; i++)
            if (!(px[i] > -3.0f && px[i] < 3.0f)) abort(); /* (v/255 - mean)/std of a byte */
    rk_image_free(&im);
    return 0;
}
