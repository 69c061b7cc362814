/* serve/pbwire.h — reading protobuf's wire format field by field, for
 * rankd's own request readers: decode.c (a RankRequest into protobuf-c's
 * structs) and service.c's direct path (candidates straight into the
 * scorer). One reader, so the two accept exactly the same bytes.
 *
 * pbw_next accepts what protobuf-c's unpack and rk_pb_check (wire.c) both
 * accept field by field: tags of at most 5 bytes numbered 1..2^29-1,
 * varints of at most 10 bytes, length prefixes of at most 5 bytes and at
 * most INT_MAX, wire types 0, 1, 2 and 5. */
#ifndef RK_SERVE_PBWIRE_H
#define RK_SERVE_PBWIRE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define PBW_MAX_FIELD ((1u << 29) - 1)

typedef struct { /* one field as read from the wire */
    uint32_t num;
    unsigned wt;
    const uint8_t *data; /* wire type 2: the payload; 1 and 5: the bytes */
    size_t len;          /* wire type 2: the payload's length */
    const uint8_t *raw;  /* the value as on the wire (a length prefix included) */
    size_t raw_len;
} pbw_field;

/* A varint of at most 5 bytes at p (a tag, a length): its byte count, or
 * -1 when longer or cut off. One byte, the common case, first. */
__attribute__((always_inline)) static inline int pbw_varint5(const uint8_t *p, const uint8_t *end, uint64_t *v) {
    if (p < end && !(p[0] & 0x80)) {
        *v = p[0];
        return 1;
    }
    uint64_t x = 0;
    for (int i = 0;; i++) {
        if (i == 5 || p + i >= end) return -1;
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
}

/* Read one field at *p; -1 when it is malformed for protobuf-c or
 * rk_pb_check (the reference path then says which). */
__attribute__((always_inline)) static inline int pbw_next(const uint8_t **pp, const uint8_t *end, pbw_field *f) {
    const uint8_t *p = *pp;
    /* most fields: a string or message (fields 1..15) under 128 bytes, its tag and length one byte each */
    if (end - p >= 2 && (p[0] & 0x87) == 2 && p[0] >= 8 && p[1] < 0x80 && p[1] <= end - p - 2) {
        f->num = p[0] >> 3, f->wt = 2;
        f->raw = p + 1, f->raw_len = 1 + (size_t)p[1];
        f->data = p + 2, f->len = p[1];
        *pp = p + 2 + p[1];
        return 0;
    }
    uint64_t tag;
    int i = pbw_varint5(p, end, &tag); /* fields 1..15: one byte */
    if (i < 0) return -1;
    p += i;
    f->raw = p;
    f->num = (uint32_t)(tag >> 3);
    f->wt = (unsigned)(tag & 7);
    if ((tag >> 3) == 0 || (tag >> 3) > PBW_MAX_FIELD) return -1;
    switch (f->wt) {
    case 0:
        f->data = p, f->len = 0; /* a varint: read as raw */
        for (i = 0;; i++) {
            if (i == 10 || p + i >= end) return -1;
            if (!(p[i] & 0x80)) break;
        }
        p += i + 1;
        break;
    case 1:
    case 5: {
        size_t w = f->wt == 1 ? 8 : 4;
        if ((size_t)(end - p) < w) return -1;
        f->data = p;
        f->len = w;
        p += w;
        break;
    }
    case 2: {
        uint64_t n;
        if ((i = pbw_varint5(p, end, &n)) < 0) return -1; /* under 128 bytes: one byte */
        p += i;
        if (n > INT_MAX || n > (uint64_t)(end - p)) return -1;
        f->data = p;
        f->len = (size_t)n;
        p += n;
        break;
    }
    default: return -1;
    }
    f->raw_len = (size_t)(p - f->raw);
    *pp = p;
    return 0;
}

/* A bool as protobuf-c 1.4 reads one: in any wire type, true when a byte
 * of the value (a length prefix included) has one of its low 7 bits set. */
static inline int pbw_bool(const pbw_field *f) {
    for (size_t i = 0; i < f->raw_len; i++)
        if (f->raw[i] & 0x7f) return 1;
    return 0;
}

#endif
