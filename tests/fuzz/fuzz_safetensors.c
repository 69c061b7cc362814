/*
 * tests/fuzz/fuzz_safetensors.c — libFuzzer target: the safetensors reader
 * (header length, JSON header, dtypes, shapes, offsets, overlaps, duplicate
 * names, checksums), then reading every tensor it accepted.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = rk_fuzz_file(data, size, ".safetensors");
    rk_st_file *f = NULL;
    rk_err e = {0};
    if (rk_st_open(p, &f, &e) != RK_OK) {
        if (!e.msg[0] || f) abort();
        return 0;
    }
    for (size_t i = 0; i < rk_st_count(f); i++) {
        const char *name = rk_st_name(f, i);
        int ndim;
        int64_t shape[4];
        if (rk_st_shape(f, name, &ndim, shape, &e)) continue;
        size_t n = 1;
        for (int k = 0; k < ndim; k++) n *= (size_t)shape[k];
        if (n > (1u << 20)) continue;
        const float *x;
        if (rk_st_get_f32(f, name, &x, &ndim, shape, &e) == RK_OK) {
            float *dst = malloc(n * sizeof *dst + 1);
            if (rk_st_read_f32(f, name, dst, ndim, shape, &e)) abort(); /* its own shape must read */
            free(dst);
        }
        int64_t *iv = malloc(n * sizeof *iv + 1);
        (void)rk_st_read_i64(f, name, iv, n, &e);
        free(iv);
    }
    (void)rk_st_meta(f, RK_ST_CHECKSUM_KEY);
    rk_st_close(f);
    return 0;
}
