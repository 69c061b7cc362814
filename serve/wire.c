/*
 * serve/wire.c — checks of a protobuf message's wire bytes that protobuf-c's
 * unpack does not make, run before unpacking a request.
 *
 * protobuf-c hands string fields over as NUL-terminated C strings: a string
 * with a NUL byte inside ("3753\0junk") would silently become its prefix
 * ("3753"). And it accepts field numbers beyond protobuf's maximum
 * (2^29 - 1), and decodes a singular message field given many times into
 * as many merged copies. rk_pb_check walks the encoding with the message's descriptor,
 * recursing into sub-messages, and refuses both, naming the field by its
 * path ("candidates[3].ad_id"), as the request validation does.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define RK_PB_MAX_FIELD ((1u << 29) - 1)
#define RK_PB_MAX_DEPTH 16

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Where the walk is: the field (and its index, for repeated ones) entered
 * at each nesting level. The path text ("candidates[3].ad_id") is built
 * from it only when a check fails: formatting it for every field of a
 * 200-candidate request cost more than unpacking it. */
typedef struct {
    const ProtobufCFieldDescriptor *f[RK_PB_MAX_DEPTH + 2];
    unsigned k[RK_PB_MAX_DEPTH + 2];
} pb_path;

/* The first n levels of at as text ("" for none), at most cap - 1 bytes. */
static const char *path_str(const pb_path *at, int n, char *path, size_t cap) {
    size_t plen = 0;
    path[0] = 0;
    for (int i = 0; i < n; i++) {
        const ProtobufCFieldDescriptor *f = at->f[i];
        int w = f->label == PROTOBUF_C_LABEL_REPEATED
                    ? snprintf(path + plen, cap - plen, "%s%s[%u]", plen ? "." : "", f->name, at->k[i])
                    : snprintf(path + plen, cap - plen, "%s%s", plen ? "." : "", f->name);
        plen += w > 0 ? (size_t)w : 0;
        if (plen >= cap) plen = cap - 1;
    }
    return path;
}

/* seen[i]: how many times field i of d was seen so far (for "name[k]") */
static int check(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, pb_path *at, int depth,
                 char *msg, size_t msg_cap) {
    unsigned seen[64] = {0};
    char path[256];
    if (depth > RK_PB_MAX_DEPTH) {
        snprintf(msg, msg_cap, "%s: messages nested more than %d deep",
                 depth ? path_str(at, depth, path, sizeof path) : "request", RK_PB_MAX_DEPTH);
        return -1;
    }
    while (p < end) {
        uint64_t tag, n = 0;
        if (varint(&p, end, &tag)) return 1; /* malformed: unpack says so */
        uint64_t num = tag >> 3;
        unsigned wt = (unsigned)(tag & 7);
        if (num == 0 || num > RK_PB_MAX_FIELD) {
            snprintf(msg, msg_cap, "%s: field number %llu outside protobuf's 1..%u",
                     depth ? path_str(at, depth, path, sizeof path) : "request", (unsigned long long)num,
                     RK_PB_MAX_FIELD);
            return -1;
        }
        switch (wt) {
        case 0:
            if (varint(&p, end, &n)) return 1;
            continue;
        case 1:
            if (end - p < 8) return 1;
            p += 8;
            continue;
        case 5:
            if (end - p < 4) return 1;
            p += 4;
            continue;
        case 2:
            if (varint(&p, end, &n) || n > (uint64_t)(end - p)) return 1;
            break;
        default:
            return 1;
        }
        const uint8_t *v = p;
        p += n;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)num);
        if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)) continue;
        size_t fi = (size_t)(f - d->fields);
        at->f[depth] = f;
        at->k[depth] = fi < 64 ? seen[fi]++ : 0;
        const uint8_t *nul = f->type == PROTOBUF_C_TYPE_STRING ? memchr(v, 0, (size_t)n) : NULL;
        if (nul) {
            snprintf(msg, msg_cap, "%s: a NUL byte inside the string (byte %zu of %llu)",
                     path_str(at, depth + 1, path, sizeof path), (size_t)(nul - v) + 1, (unsigned long long)n);
            return -1;
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if (f->label != PROTOBUF_C_LABEL_REPEATED && at->k[depth] > 0) {
            /* protobuf-c decodes each occurrence and merges: thousands of
             * tiny copies decode to ~40x their wire size */
            snprintf(msg, msg_cap, "%s: given more than once (a singular message field)",
                     path_str(at, depth + 1, path, sizeof path));
            return -1;
        }
        int r = check(f->descriptor, v, v + n, at, depth + 1, msg, msg_cap);
        if (r) return r;
    }
    return 0;
}

int rk_pb_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, char *msg, size_t cap) {
    pb_path at;
    msg[0] = 0;
    return check(d, buf, buf + len, &at, 0, msg, cap) < 0 ? -1 : 0;
}

/* Strict UTF-8 (RFC 3629) of p[0, n), with no NUL: no overlongs, no
 * surrogates, nothing above U+10FFFF. ASCII goes 8 bytes at a time. */
int rk_utf8_ok(const unsigned char *p, size_t n) {
    const uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;
    if (n <= 8) { /* most names and values: two overlapping 4-byte words, none past p + n */
        uint32_t a, b;
        if (n >= 4) memcpy(&a, p, 4), memcpy(&b, p + n - 4, 4);
        else if (n >= 2) a = b = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[n - 1] << 16 | 0x01000000u;
        else a = b = n ? (uint32_t)p[0] | 0x01010100u : 0x01010101u;
        if (!(((a | b) | ((a - (uint32_t)lo) & ~a) | ((b - (uint32_t)lo) & ~b)) & (uint32_t)hi)) return 1;
    }
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        if (i + 8 <= n && (memcpy(&w, p + i, 8), !((w | ((w - lo) & ~w)) & hi))) { /* 8 ASCII, no NUL */
            i += 8;
            continue;
        }
        unsigned c = p[i++];
        if (c && c < 0x80) continue;
        int k;
        unsigned lo8 = 0x80, hi8 = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c == 0xE0) k = 2, lo8 = 0xA0;
        else if (c >= 0xE1 && c <= 0xEC) k = 2;
        else if (c == 0xED) k = 2, hi8 = 0x9F;
        else if (c >= 0xEE && c <= 0xEF) k = 2;
        else if (c == 0xF0) k = 3, lo8 = 0x90;
        else if (c >= 0xF1 && c <= 0xF3) k = 3;
        else if (c == 0xF4) k = 3, hi8 = 0x8F;
        else return 0; /* NUL, a continuation byte, C0, C1, F5..FF */
        if (n - i < (size_t)k) return 0;
        for (int j = 0; j < k; j++, i++) {
            if (p[i] < lo8 || p[i] > hi8) return 0;
            lo8 = 0x80;
            hi8 = 0xBF;
        }
    }
    return 1;
}

size_t rk_utf8_prefix(const char *s, size_t len, size_t max) {
    if (len <= max) return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--; /* s[max]: a continuation byte */
    return max;
}
