/*
 * tests/fuzz/fuzz_payload.c — libFuzzer target, differential: the request
 * payload reader (serve/payload.c: copies, or inflates a gzip / deflate
 * message piecewise under a bound) against zlib's one-shot inflate of the
 * same bytes in one buffer. Input: [alg][cap lo][cap hi][cuts] then the
 * message; alg % 3 is none / deflate / gzip, the bound is cap bytes
 * (0..65535), and the message is handed over in 1..6 slices cut at points
 * drawn from `cuts` (empty slices anywhere), as gRPC would. Expected: the
 * same bytes when the reference inflates the whole message to at most the
 * bound and ends exactly at its end (an empty message is empty, as gRPC's
 * inflate takes it); RK_PAYLOAD_BIG when it is or inflates beyond the
 * bound; RK_PAYLOAD_BAD when it is damaged, truncated or followed by more
 * bytes, with a reason of that kind (and that count of bytes). The
 * reader writes into a buffer of exactly the bound, so ASan sees a byte
 * past it. Any difference aborts.
 * Seeds: tests/fuzz/corpus/fuzz_payload (made by tests/ref/gen_payload_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <grpc/byte_buffer.h>
#include <grpc/slice.h>

#include "internal.h"

/* zlib's inflate of m[n] into out[cap + 1] in one call: the expected
 * result of rk_payload_read under cap, and for RK_PAYLOAD_BAD the reason
 * it must give (*reason, and *rest for trailing bytes). */
static long reference(int alg, const uint8_t *m, size_t n, uint8_t *out, size_t cap, const char **reason,
                      size_t *rest) {
    *reason = NULL;
    *rest = 0;
    if (alg == 0 || n == 0) {
        if (n > cap) return RK_PAYLOAD_BIG;
        memcpy(out, m, n);
        return (long)n;
    }
    if (n > cap) return RK_PAYLOAD_BIG; /* compressed bytes beyond the bound are not inflated */
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, alg == 2 ? 15 + 16 : 15) != Z_OK) abort();
    zs.next_in = (Bytef *)m;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap + 1;
    int z = inflate(&zs, Z_FINISH);
    long r = zs.total_out > cap                       ? RK_PAYLOAD_BIG
             : z == Z_STREAM_END && zs.avail_in == 0 ? (long)zs.total_out
                                                      : RK_PAYLOAD_BAD;
    if (r == RK_PAYLOAD_BAD && z == Z_STREAM_END) {
        *reason = "bytes after the end";
        *rest = zs.avail_in;
    } else if (r == RK_PAYLOAD_BAD) {
        *reason = z == Z_BUF_ERROR ? "truncated" : z == Z_NEED_DICT ? "preset dictionary" : "damaged";
    }
    inflateEnd(&zs);
    return r;
}

static void fail(const char *what, long got, long want) {
    fprintf(stderr, "fuzz_payload: %s: got %ld, want %ld\n", what, got, want);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    static const grpc_compression_algorithm algs[3] = {GRPC_COMPRESS_NONE, GRPC_COMPRESS_DEFLATE,
                                                       GRPC_COMPRESS_GZIP};
    int alg = data[0] % 3;
    size_t cap = (size_t)data[1] | (size_t)data[2] << 8;
    unsigned seed = data[3];
    size_t pieces = 1 + seed % 6;
    const uint8_t *m = data + 4;
    size_t n = size - 4, cut[7];
    cut[0] = 0;
    for (size_t i = 1; i < pieces; i++) { /* cut points, sorted by insertion */
        seed = seed * 1103515245u + 12345u;
        size_t c = n ? (seed >> 8) % (n + 1) : 0, j = i;
        for (; j > 1 && cut[j - 1] > c; j--) cut[j] = cut[j - 1];
        cut[j] = c;
    }
    cut[pieces] = n;
    grpc_slice sl[6];
    for (size_t i = 0; i < pieces; i++)
        sl[i] = grpc_slice_from_copied_buffer((const char *)m + cut[i], cut[i + 1] - cut[i]);
    grpc_byte_buffer *bb = alg ? grpc_raw_compressed_byte_buffer_create(sl, pieces, algs[alg])
                               : grpc_raw_byte_buffer_create(sl, pieces);
    for (size_t i = 0; i < pieces; i++) grpc_slice_unref(sl[i]);
    uint8_t *want_buf = malloc(cap + 1), *got_buf = malloc(cap ? cap : 1); /* exactly the bound */
    if (!want_buf || !got_buf) abort();
    const char *reason;
    size_t rest;
    long want = reference(alg, m, n, want_buf, cap, &reason, &rest);
    char why[300] = "";
    const uint8_t *at = NULL;
    long got = rk_payload_bytes(got_buf, cap, bb, &at, why, sizeof why);
    if (got != want) fail("result", got, want);
    if (got >= 0 && got && memcmp(at, want_buf, (size_t)got) != 0) fail("bytes differ, length", got, want);
    if (got == RK_PAYLOAD_BAD && (!reason || !strstr(why, reason))) {
        fprintf(stderr, "fuzz_payload: reason '%s', want '%s'\n", why, reason ? reason : "?");
        abort();
    }
    if (got == RK_PAYLOAD_BAD && rest && strtoul(strstr(why, ": ") + 2, NULL, 10) != rest)
        fail("bytes after", 0, (long)rest);
    if (got < 0) {
        grpc_status_code st = rk_payload_status(got, cap, bb, why, sizeof why);
        if (st != (got == RK_PAYLOAD_BAD ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_RESOURCE_EXHAUSTED))
            fail("status", (long)st, got);
    }
    grpc_byte_buffer_destroy(bb);
    free(want_buf);
    free(got_buf);
    return 0;
}
