/*
 * serve/payload.c — a request message's bytes out of gRPC's byte buffer:
 * in place when gRPC hands it over in one slice, copied when it comes in
 * pieces, inflated when the client sent it compressed (gRPC's "gzip" and
 * "deflate"), always within a bound the caller gives (--max-message-bytes
 * for Rank and Admin calls). rankd inflates requests itself because gRPC
 * 1.51's decompression has no bound: it inflated a request whole before its
 * size check, so a 1.5 MB gzip of zeros grew rankd by 1.5 GB.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#include <grpc/byte_buffer.h>

#include "internal.h"

/* zlib's memory through rk_malloc (tests fail it with rk_alloc_fail_after). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    (void)opaque;
    return rk_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf p) {
    (void)opaque;
    rk_free(p);
}

/* Inflate a compressed request message into buf[cap]. gRPC's "deflate" is
 * zlib's format, "gzip" gzip's. Its length, RK_PAYLOAD_BIG when it is or
 * inflates beyond cap, RK_PAYLOAD_BAD (why[] says why), RK_PAYLOAD_NOMEM. */
static long inflate_payload(uint8_t *buf, size_t cap, grpc_byte_buffer *bb, char *why, size_t why_len) {
    grpc_compression_algorithm alg = bb->data.raw.compression;
    const char *name = alg == GRPC_COMPRESS_GZIP ? "gzip" : "deflate";
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    if (alg != GRPC_COMPRESS_GZIP && alg != GRPC_COMPRESS_DEFLATE) {
        snprintf(why, why_len, "request: compression algorithm %d is not supported", (int)alg);
        return RK_PAYLOAD_BAD;
    }
    if (bb->data.raw.slice_buffer.length > cap) return RK_PAYLOAD_BIG; /* the bound holds on the wire too */
    if (bb->data.raw.slice_buffer.length == 0) return 0; /* an empty message, as gRPC's inflate takes it */
    if (inflateInit2(&zs, alg == GRPC_COMPRESS_GZIP ? 15 + 16 : 15) != Z_OK) return RK_PAYLOAD_NOMEM;
    if (cap > UINT_MAX) cap = UINT_MAX; /* zlib counts output room in uInt */
    uint8_t spare; /* room for one byte past cap: a message that fills it is too long */
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    int z = Z_OK;
    const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    size_t i = 0;
    for (; i <= sb->count; i++) { /* the last round, with no input, flushes what inflate holds */
        zs.next_in = i < sb->count ? GRPC_SLICE_START_PTR(sb->slices[i]) : Z_NULL;
        zs.avail_in = i < sb->count ? (uInt)GRPC_SLICE_LENGTH(sb->slices[i]) : 0;
        do {
            if (zs.avail_out == 0) {
                zs.next_out = &spare;
                zs.avail_out = 1;
            }
            z = inflate(&zs, Z_NO_FLUSH); /* Z_BUF_ERROR: it needs more input (output room there is) */
        } while (z == Z_OK && zs.avail_in > 0 && zs.total_out <= cap);
        if ((z != Z_OK && z != Z_BUF_ERROR) || zs.total_out > cap) break;
    }
    size_t rest = zs.avail_in; /* input left once it stopped */
    for (size_t j = i + 1; j < sb->count; j++) rest += GRPC_SLICE_LENGTH(sb->slices[j]);
    long n = zs.total_out > cap               ? RK_PAYLOAD_BIG
             : z == Z_STREAM_END && !rest     ? (long)zs.total_out
             : z == Z_MEM_ERROR               ? RK_PAYLOAD_NOMEM
                                              : RK_PAYLOAD_BAD;
    if (n == RK_PAYLOAD_BAD && z == Z_STREAM_END)
        snprintf(why, why_len, "request: %zu bytes after the end of the %s message", rest, name);
    else if (n == RK_PAYLOAD_BAD && (z == Z_OK || z == Z_BUF_ERROR))
        snprintf(why, why_len, "request: truncated %s message", name);
    else if (n == RK_PAYLOAD_BAD && z == Z_NEED_DICT)
        snprintf(why, why_len, "request: the deflate message needs a preset dictionary, which gRPC has not");
    else if (n == RK_PAYLOAD_BAD)
        snprintf(why, why_len, "request: damaged %s message (zlib: %s)", name, zs.msg ? zs.msg : "error");
    inflateEnd(&zs);
    return n;
}

/* Copy the request message into buf[cap] (inflating a compressed one).
 * Its length, or an RK_PAYLOAD_ code (internal.h). */
long rk_payload_read(uint8_t *buf, size_t cap, grpc_byte_buffer *bb, char *why, size_t why_len) {
    if (bb->type != GRPC_BB_RAW) {
        snprintf(why, why_len, "request: byte buffer of unknown type %d", (int)bb->type);
        return RK_PAYLOAD_BAD;
    }
    if (bb->data.raw.compression != GRPC_COMPRESS_NONE) return inflate_payload(buf, cap, bb, why, why_len);
    const grpc_slice_buffer *sb = &bb->data.raw.slice_buffer;
    if (sb->length > cap) return RK_PAYLOAD_BIG;
    size_t n = 0;
    for (size_t i = 0; i < sb->count; i++) {
        memcpy(buf + n, GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i]));
        n += GRPC_SLICE_LENGTH(sb->slices[i]);
    }
    return (long)n;
}

/* The request message's bytes: its one slice in place (how gRPC hands
 * over a message read at once), else copied into buf[cap]. Their length,
 * or an RK_PAYLOAD_ code. */
long rk_payload_bytes(uint8_t *buf, size_t cap, grpc_byte_buffer *bb, const uint8_t **out, char *why,
                      size_t why_len) {
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        grpc_slice *sl = &bb->data.raw.slice_buffer.slices[0]; /* an inlined slice's bytes are in it: not a copy */
        if (GRPC_SLICE_LENGTH(*sl) > cap) return RK_PAYLOAD_BIG;
        *out = GRPC_SLICE_START_PTR(*sl);
        return (long)GRPC_SLICE_LENGTH(*sl);
    }
    *out = buf;
    return rk_payload_read(buf, cap, bb, why, why_len);
}

/* The status of a request whose bytes could not be read (n < 0 from
 * rk_payload_read), its text in why[] (already there for RK_PAYLOAD_BAD); cap is
 * the limit it was read under. */
grpc_status_code rk_payload_status(long n, size_t cap, const grpc_byte_buffer *bb, char *why, size_t why_len) {
    size_t len = bb->data.raw.slice_buffer.length;
    int compressed = bb->data.raw.compression != GRPC_COMPRESS_NONE;
    if (n == RK_PAYLOAD_BAD) return GRPC_STATUS_INVALID_ARGUMENT;
    if (n == RK_PAYLOAD_NOMEM)
        snprintf(why, why_len, "request: out of memory to inflate its %zu compressed bytes", len);
    else if (compressed && len <= cap)
        snprintf(why, why_len, "request larger than max: its %zu compressed bytes inflate beyond %zu", len, cap);
    else
        snprintf(why, why_len, "request larger than max: %zu%s bytes, at most %zu", len,
                 compressed ? " compressed" : "", cap);
    return GRPC_STATUS_RESOURCE_EXHAUSTED;
}
