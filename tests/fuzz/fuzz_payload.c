/*
 * tests/fuzz/fuzz_payload.c — libFuzzer target, differential: the request
 * payload reader (serve/payload.c: copies, or inflates a gzip / deflate
 * message piecewise under a bound) against zlib's one-shot inflate of the
 * same bytes in one buffer. Input: [alg][cap][pieces] then the message;
 * alg % 3 is none / deflate / gzip, the bound is cap * 97 bytes, and the
 * message is handed over in 1..4 slices as gRPC would. Expected: the same
 * bytes when the reference inflates the whole message to at most the bound
 * and ends exactly at its end; RK_PAYLOAD_BIG when it is or inflates beyond
 * the bound; RK_PAYLOAD_BAD (with a reason) when it is damaged, truncated or
 * followed by more bytes. Any difference aborts.
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
 * result of rk_payload_read under cap. */
static long reference(int alg, const uint8_t *m, size_t n, uint8_t *out, size_t cap) {
    if (alg == 0) {
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
    inflateEnd(&zs);
    return r;
}

static void fail(const char *what, long got, long want) {
    fprintf(stderr, "fuzz_payload: %s: got %ld, want %ld\n", what, got, want);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    static const grpc_compression_algorithm algs[3] = {GRPC_COMPRESS_NONE, GRPC_COMPRESS_DEFLATE,
                                                       GRPC_COMPRESS_GZIP};
    int alg = data[0] % 3;
    size_t cap = (size_t)data[1] * 97, pieces = 1 + data[2] % 4;
    const uint8_t *m = data + 3;
    size_t n = size - 3;
    grpc_slice sl[4];
    for (size_t i = 0, at = 0; i < pieces; i++) {
        size_t len = i + 1 == pieces ? n - at : n / pieces;
        sl[i] = grpc_slice_from_copied_buffer((const char *)m + at, len);
        at += len;
    }
    grpc_byte_buffer *bb = alg ? grpc_raw_compressed_byte_buffer_create(sl, pieces, algs[alg])
                               : grpc_raw_byte_buffer_create(sl, pieces);
    for (size_t i = 0; i < pieces; i++) grpc_slice_unref(sl[i]);
    uint8_t *want_buf = malloc(cap + 1), *got_buf = malloc(cap + 1);
    if (!want_buf || !got_buf) abort();
    long want = reference(alg, m, n, want_buf, cap);
    char why[300] = "";
    const uint8_t *at = NULL;
    long got = rk_payload_bytes(got_buf, cap, bb, &at, why, sizeof why);
    if (got != want) fail("result", got, want);
    if (got >= 0 && memcmp(at, want_buf, (size_t)got) != 0) fail("bytes differ, length", got, want);
    if (got == RK_PAYLOAD_BAD && why[0] == 0) fail("no reason given", got, want);
    if (got < 0) {
        grpc_status_code st = rk_payload_status(got, cap, bb, why, sizeof why);
        if (st != (got == RK_PAYLOAD_BIG ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT))
            fail("status", (long)st, got);
        if (strlen(why) >= sizeof why) abort();
    }
    grpc_byte_buffer_destroy(bb);
    free(want_buf);
    free(got_buf);
    return 0;
}
