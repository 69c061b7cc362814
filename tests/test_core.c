/*
 * tests/test_core.c — core/: safetensors I/O (round trip and every corrupt
 * file the reader must reject, with the exact message), hashing, the RNG,
 * allocation failure injection, status and error text, file helpers.
 *
 * Each test runs with a fresh temporary directory under /tmp (mkdtemp),
 * removed afterwards.
 */
#include <criterion/criterion.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static char tmp[64];

static void tmp_make(void) {
    snprintf(tmp, sizeof tmp, "/tmp/rk_test_core.XXXXXX");
    cr_assert_not_null(mkdtemp(tmp), "mkdtemp failed");
}

static void tmp_remove(void) {
    rk_alloc_fail_after(0);
    rk_err err = {0};
    cr_expect_eq(rk_rm_rf(tmp, &err), RK_OK, "%s", err.msg);
}

TestSuite(core, .init = tmp_make, .fini = tmp_remove);

static const char *tpath(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmp, name);
    return p;
}

#define EXPECT_MSG(err, sub) \
    cr_expect(strstr((err).msg, (sub)) != NULL, "message '%s' lacks '%s'", (err).msg, (sub))

/* ---------------------------------------------------------------- safetensors */

static const float T_A[6] = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-30f};
static const int64_t S_A[2] = {2, 3};
static const float T_B[5] = {10, 20, 30, 40, 50};
static const int64_t S_B[1] = {5};
static const float T_C[4] = {0.5f, 0.25f, 0.125f, 0.0625f};
static const int64_t S_C[4] = {1, 2, 1, 2};
static const float T_S[1] = {42.0f};

/* Writes a.w [2,3], b [5], c [1,2,1,2], s (0-d) and two metadata keys. */
static void write_sample(const char *path) {
    rk_st_writer *w;
    rk_err err = {0};
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_f32(w, "a.w", T_A, 2, S_A, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_f32(w, "b", T_B, 1, S_B, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_f32(w, "c", T_C, 4, S_C, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_f32(w, "s", T_S, 0, NULL, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_meta(w, "format", "rankd-test", &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_meta(w, "seed", "7", &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_write(w, path, &err), RK_OK, "%s", err.msg);
    rk_st_writer_destroy(w);
}

Test(core, safetensors_i64_round_trip) {
    const char *path = tpath("i64.safetensors");
    static const float emb[3] = {0.5f, -1.0f, 2.0f};
    static const int64_t ids[3] = {1, -7, 9007199254740993LL}; /* 2^53 + 1: not a double */
    int64_t se[1] = {3}, si[1] = {3};
    rk_st_writer *w;
    rk_err err = {0};
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK);
    cr_assert_eq(rk_st_writer_add_f32(w, "emb", emb, 1, se, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_add_i64(w, "ids", ids, 1, si, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_writer_write(w, path, &err), RK_OK, "%s", err.msg);
    rk_st_writer_destroy(w);
    rk_st_file *f;
    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    int64_t got[3];
    cr_assert_eq(rk_st_read_i64(f, "ids", got, 3, &err), RK_OK, "%s", err.msg);
    cr_assert(!memcmp(got, ids, sizeof ids));
    float e[3];
    cr_assert_eq(rk_st_read_f32(f, "emb", e, 1, se, &err), RK_OK, "%s", err.msg);
    cr_assert(!memcmp(e, emb, sizeof emb));
    cr_assert_eq(rk_st_read_i64(f, "emb", got, 3, &err), RK_EFORMAT);
    cr_assert_eq(rk_st_read_i64(f, "ids", got, 2, &err), RK_ESHAPE);
    char want[600];
    snprintf(want, sizeof want, "%s: tensor 'ids' has 3 values, the reader expects 2", path);
    cr_assert_str_eq(err.msg, want);
    const float *p;
    int nd;
    int64_t sh[4];
    cr_assert_eq(rk_st_get_f32(f, "ids", &p, &nd, sh, &err), RK_EFORMAT);
    rk_st_close(f);
}

Test(core, safetensors_round_trip) {
    const char *path = tpath("t.safetensors");
    write_sample(path);

    rk_st_file *f;
    rk_err err = {0};
    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_count(f), 4);
    int seen = 0;
    for (size_t i = 0; i < rk_st_count(f); i++) {
        const char *n = rk_st_name(f, i);
        cr_assert_not_null(n);
        seen |= !strcmp(n, "a.w") ? 1 : !strcmp(n, "b") ? 2 : !strcmp(n, "c") ? 4 : !strcmp(n, "s") ? 8 : 0;
    }
    cr_assert_eq(seen, 15, "names listed: mask %d", seen);
    cr_assert_null(rk_st_name(f, 4));

    float a[6], b[5], c[4], s[1];
    cr_assert_eq(rk_st_read_f32(f, "a.w", a, 2, S_A, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_read_f32(f, "b", b, 1, S_B, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_read_f32(f, "c", c, 4, S_C, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_st_read_f32(f, "s", s, 0, NULL, &err), RK_OK, "%s", err.msg);
    /* Bit-exact, including -0.0 and a tiny value. */
    cr_assert(!memcmp(a, T_A, sizeof a) && !memcmp(b, T_B, sizeof b) && !memcmp(c, T_C, sizeof c) &&
              !memcmp(s, T_S, sizeof s));

    const float *p;
    int nd;
    int64_t sh[4];
    cr_assert_eq(rk_st_get_f32(f, "c", &p, &nd, sh, &err), RK_OK, "%s", err.msg);
    cr_assert(nd == 4 && sh[0] == 1 && sh[1] == 2 && sh[2] == 1 && sh[3] == 2);
    cr_assert_eq((uintptr_t)p % 4, 0, "tensor data must be float-aligned");
    cr_assert(!memcmp(p, T_C, sizeof T_C));

    cr_assert_str_eq(rk_st_meta(f, "format"), "rankd-test");
    cr_assert_str_eq(rk_st_meta(f, "seed"), "7");
    cr_assert_null(rk_st_meta(f, "absent"));
    rk_st_close(f);

    /* Layout: u64 LE header length, then the data section 8-byte aligned. */
    char *raw;
    size_t len;
    cr_assert_eq(rk_read_file(path, &raw, &len, &err), RK_OK, "%s", err.msg);
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)(unsigned char)raw[i] << (8 * i);
    cr_assert_eq(hl % 8, 0);
    cr_assert_eq(len, 8 + hl + 4 * (6 + 5 + 4 + 1), "file is %zu bytes, header %llu", len,
                 (unsigned long long)hl);
    cr_assert_eq(raw[8], '{');
    rk_free(raw);
}

Test(core, safetensors_writer_rejects_bad_input) {
    rk_st_writer *w;
    rk_err err = {0};
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK);
    int64_t sh5[5] = {1, 1, 1, 1, 1}, neg[1] = {-1};
    float x[1] = {0};
    cr_expect_eq(rk_st_writer_add_f32(w, "t", x, 5, sh5, &err), RK_EINVAL);
    EXPECT_MSG(err, "tensor 't': ndim 5 not in 0..4");
    cr_expect_eq(rk_st_writer_add_f32(w, "n", x, 1, neg, &err), RK_EINVAL);
    EXPECT_MSG(err, "tensor 'n': negative dimension");
    int64_t one[1] = {1};
    cr_expect_eq(rk_st_writer_add_f32(w, "t", x, 1, one, &err), RK_OK);
    cr_expect_eq(rk_st_writer_add_f32(w, "t", x, 1, one, &err), RK_EEXIST);
    EXPECT_MSG(err, "tensor 't' added twice");
    cr_expect_eq(rk_st_writer_write(w, tpath("nodir/x.safetensors"), &err), RK_EIO);
    EXPECT_MSG(err, "nodir/x.safetensors.tmp-"); /* written beside it, then renamed in */
    EXPECT_MSG(err, ": cannot create: No such file or directory");
    rk_st_writer_destroy(w);
}

/* Writes [u64 LE hlen][header][data]; hlen is the real header length unless
 * hlen_override is non-zero. */
static const char *write_raw(const char *name, uint64_t hlen_override, const char *header,
                             const void *data, size_t data_len) {
    size_t hl = strlen(header);
    uint64_t h = hlen_override ? hlen_override : hl;
    unsigned char *buf = malloc(8 + hl + data_len);
    cr_assert_not_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    const char *path = tpath(name);
    rk_err err = {0};
    cr_assert_eq(rk_write_file(path, buf, 8 + hl + data_len, &err), RK_OK, "%s", err.msg);
    free(buf);
    return path;
}

/* Opens path, expects failure with code and message substring, and *out NULL. */
static void expect_open_fails(const char *path, rk_status code, const char *sub) {
    rk_st_file *f = (rk_st_file *)&f; /* must be reset to NULL on failure */
    rk_err err = {0};
    rk_status s = rk_st_open(path, &f, &err);
    cr_expect_eq(s, code, "%s: got %d (%s), want %d; message '%s'", path, s, rk_status_str(s), code,
                 err.msg);
    cr_expect_eq(err.code, code);
    cr_expect_null(f);
    EXPECT_MSG(err, sub);
    EXPECT_MSG(err, path); /* messages name the file */
    if (s == RK_OK) rk_st_close(f);
}

Test(core, safetensors_file_shorter_than_length_prefix) {
    const char *p = tpath("short.safetensors");
    rk_err err = {0};
    cr_assert_eq(rk_write_file(p, "\x10\0\0\0\0", 5, &err), RK_OK);
    expect_open_fails(p, RK_EFORMAT, "file is 5 bytes, shorter than the 8-byte length prefix");
    cr_assert_eq(rk_write_file(p, "", 0, &err), RK_OK);
    expect_open_fails(p, RK_EFORMAT, "file is 0 bytes, shorter than the 8-byte length prefix");
}

Test(core, safetensors_header_length_past_file) {
    const char *p = write_raw("hl.safetensors", 1000, "{}", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "header length 1000 exceeds file size 10");
    /* A huge length must not wrap around or be allocated. */
    p = write_raw("huge.safetensors", UINT64_MAX, "{}", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "exceeds file size");
}

Test(core, safetensors_header_not_json) {
    const char *p = write_raw("nj.safetensors", 0, "{\"a\": [1, 2", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "corrupt safetensors header: JSON");
    p = write_raw("arr.safetensors", 0, "[1,2,3]", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "corrupt safetensors header: JSON is not an object");
    p = write_raw("nofields.safetensors", 0, "{\"w\":{\"dtype\":\"F32\"}}", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' lacks dtype/shape/data_offsets");
    p = write_raw("badshape.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", NULL, 0);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' has a bad shape");
}

Test(core, safetensors_offsets_outside_data) {
    float d[2] = {1, 2};
    const char *p = write_raw("off.safetensors", 0,
                              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", d,
                              sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' data_offsets outside the 8-byte data section");
    p = write_raw("rev.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' data_offsets outside");
    p = write_raw("neg.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' data_offsets outside");
    /* Inside the data but inconsistent with the shape. */
    p = write_raw("size.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' has 8 bytes for 3 floats");
}

/* Overlapping tensors and duplicate names were accepted; an edited header
 * (two same-size tensors' offsets swapped) changed the values read with the
 * data-only checksum still valid. Files with only the older data checksum
 * are still read (and their data still verified). */
Test(core, safetensors_overlaps_duplicates_and_header_checksum) {
    float d[4] = {1, 2, 3, 4};
    const char *p = write_raw("ov.safetensors", 0,
                              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
    p = write_raw("dup.safetensors", 0,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "duplicate object key");
    /* an empty tensor may sit anywhere */
    p = write_raw("empty.safetensors", 0,
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", d, sizeof d);
    rk_st_file *f = NULL;
    rk_err err = {0};
    cr_assert_eq(rk_st_open(p, &f, &err), RK_OK, "%s", err.msg);
    rk_st_close(f);
    /* header edit: swap a's and b's offsets in a rankd-written file */
    rk_st_writer *w;
    cr_assert_eq(rk_st_writer_create(&w, &err), RK_OK);
    int64_t sh[1] = {2};
    cr_assert_eq(rk_st_writer_add_f32(w, "a", d, 1, sh, &err), RK_OK);
    cr_assert_eq(rk_st_writer_add_f32(w, "b", d + 2, 1, sh, &err), RK_OK);
    const char *wp = tpath("w.safetensors");
    cr_assert_eq(rk_st_writer_write(w, wp, &err), RK_OK, "%s", err.msg);
    rk_st_writer_destroy(w);
    char *buf;
    size_t n;
    cr_assert_eq(rk_read_file(wp, &buf, &n, &err), RK_OK);
    char *oa = strstr(buf + 8, "\"a\":{"), *ob = strstr(buf + 8, "\"b\":{");
    cr_assert(oa && ob && strstr(buf + 8, "rankd.xxh64"), "%.*s", 200, buf + 8);
    oa[1] = 'b', ob[1] = 'a'; /* rename a <-> b: a reads b's bytes */
    const char *ep = tpath("edited.safetensors");
    cr_assert_eq(rk_write_file(ep, buf, n, &err), RK_OK);
    rk_free(buf);
    expect_open_fails(ep, RK_EFORMAT, "checksum of header and data");
    /* a file of an older rankd writer: data checksum only */
    char hex[17], hdr[400];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)rk_hash64(d, 8, 0));
    snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"rankd.data_xxh64\":\"%s\"},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", hex);
    p = write_raw("old.safetensors", 0, hdr, d, 8);
    cr_assert_eq(rk_st_open(p, &f, &err), RK_OK, "%s", err.msg);
    rk_st_close(f);
    float e2[2] = {1, 5};
    p = write_raw("oldbad.safetensors", 0, hdr, e2, 8);
    expect_open_fails(p, RK_EFORMAT, "data checksum");
}

Test(core, safetensors_shape_overflow) {
    float d[96] = {0};
    /* (2^62+1) * 384 wraps to 384 elements in 64 bits: must not be taken as 384 floats */
    const char *p = write_raw("ovf1.safetensors", 0,
                              "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387905,384],"
                              "\"data_offsets\":[0,384]}}", d, sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' shape dimension 0 is 4611686018427387905, the element count overflows");
    /* 2 * (2^62+48) wraps to 96: the data section has exactly 96 floats */
    p = write_raw("ovf2.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,4611686018427387952],\"data_offsets\":[0,384]}}", d,
                  sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' shape dimension 1 is 4611686018427387952, the element count overflows");
    /* a huge dimension next to a zero one is refused too */
    p = write_raw("ovf3.safetensors", 0,
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[0,4611686018427387952],\"data_offsets\":[0,0]}}", d,
                  sizeof d);
    expect_open_fails(p, RK_EFORMAT, "shape dimension 1 is 4611686018427387952");
    /* other dtypes: bytes must match the element count times the element size */
    p = write_raw("f64.safetensors", 0, "{\"w\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,16]}}", d,
                  sizeof d);
    expect_open_fails(p, RK_EFORMAT, "entry 'w' has 16 bytes for 3 elements of F64");
}

Test(core, safetensors_wrong_shape_missing_and_dtype) {
    float d[2] = {1, 2};
    /* Header padded to 128 bytes so the data is aligned, as the writer does. */
    char hdr[129];
    int hn = snprintf(hdr, sizeof hdr, "%-128s",
             "{\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]},"
             "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    cr_assert_eq(hn, 128, "test header longer than 128 bytes");
    const char *path = write_raw("m.safetensors", 0, hdr, d, sizeof d);
    write_sample(tpath("t.safetensors"));

    rk_st_file *f;
    rk_err err = {0};
    cr_assert_eq(rk_st_open(tpath("t.safetensors"), &f, &err), RK_OK, "%s", err.msg);
    float dst[6] = {-1, -1, -1, -1, -1, -1};
    int64_t want[2] = {3, 2};
    cr_expect_eq(rk_st_read_f32(f, "a.w", dst, 2, want, &err), RK_ESHAPE);
    cr_expect_eq(err.code, RK_ESHAPE);
    EXPECT_MSG(err, "tensor 'a.w' has shape [2,3]");
    EXPECT_MSG(err, "expects [3,2]");
    cr_expect_eq(dst[0], -1.0f, "nothing copied on a shape mismatch");
    int64_t want1[1] = {6};
    cr_expect_eq(rk_st_read_f32(f, "a.w", dst, 1, want1, &err), RK_ESHAPE);
    EXPECT_MSG(err, "expects [6]");

    const float *p;
    int nd;
    int64_t sh[4];
    cr_expect_eq(rk_st_get_f32(f, "nope", &p, &nd, sh, &err), RK_ENOTFOUND);
    EXPECT_MSG(err, "tensor 'nope' missing");
    cr_expect_eq(rk_st_read_f32(f, "nope", dst, 2, want, &err), RK_ENOTFOUND);
    cr_expect_eq(err.code, RK_ENOTFOUND);
    rk_st_close(f);

    cr_assert_eq(rk_st_open(path, &f, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(rk_st_get_f32(f, "i", &p, &nd, sh, &err), RK_EFORMAT);
    EXPECT_MSG(err, "tensor 'i' has dtype I32, expected F32");
    cr_expect_eq(rk_st_get_f32(f, "w", &p, &nd, sh, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(p[0], 1.0f);
    rk_st_close(f);

    expect_open_fails(tpath("does-not-exist.safetensors"), RK_ENOTFOUND, "No such file");
}

/* ---------------------------------------------------------------- hashing */

Test(core, feature_row_deterministic_and_in_range) {
    /* Pinned: xxh64("user_id" "\x1f" "42", seed 0) mod 1000003 (computed with
     * libxxhash from Python). A change here reshuffles every trained table. */
    cr_assert_eq(rk_feature_row("user_id", "42", 2, 1000003), 506626);
    cr_assert_eq(rk_hash64("", 0, 0), 0xef46db3751d8e999ULL, "xxh64 empty-input test vector");
    cr_assert_eq(rk_feature_row("user_id", "42", 2, 1000003),
                 rk_hash64("user_id\x1f" "42", 10, 0) % 1000003);
    /* Only value_len bytes of value count. */
    cr_assert_eq(rk_feature_row("user_id", "42xyz", 2, 1000003), 506626);
    /* The feature name is part of the key. */
    cr_assert_neq(rk_feature_row("item_id", "42", 2, 1ull << 40),
                  rk_feature_row("user_id", "42", 2, 1ull << 40));

    enum { T = 16, N = 16000 };
    int count[T] = {0};
    char v[32];
    for (int i = 0; i < N; i++) {
        int n = snprintf(v, sizeof v, "%d", i);
        uint64_t r = rk_feature_row("movie", v, (size_t)n, T);
        cr_assert_lt(r, T);
        cr_assert_eq(r, rk_feature_row("movie", v, (size_t)n, T), "not deterministic");
        count[r]++;
    }
    for (int t = 0; t < T; t++)
        cr_expect(count[t] > 0.8 * N / T && count[t] < 1.2 * N / T, "bucket %d has %d of %d", t,
                  count[t], N);
    cr_assert_eq(rk_feature_row("movie", "x", 1, 1), 0);
    /* Short keys are hashed in one shot, long ones (> 256 bytes with the name)
     * streamed: both are xxh64 of the same bytes, at and around the boundary. */
    char key[600], val[512];
    for (int i = 0; i < (int)sizeof val; i++) val[i] = (char)('a' + i % 26);
    const size_t lens[] = {0, 1, 248, 249, 250, 251, 300, 511};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        int n = snprintf(key, sizeof key, "user_id\x1f%.*s", (int)lens[i], val);
        cr_assert_eq(rk_feature_row("user_id", val, lens[i], 1000003), rk_hash64(key, (size_t)n, 0) % 1000003,
                     "value of %zu bytes", lens[i]);
    }
}

/* ---------------------------------------------------------------- RNG */

Test(core, rng_reproducible) {
    rk_rng a, b;
    rk_rng_seed(&a, 42);
    /* Pinned xoshiro256** outputs for splitmix64(42) seeding, computed
     * independently (Python transcription of the reference algorithm). */
    cr_assert_eq(rk_rng_next(&a), 0x15780b2e0c2ec716ULL);
    cr_assert_eq(rk_rng_next(&a), 0x6104d9866d113a7eULL);
    cr_assert_eq(rk_rng_next(&a), 0xae17533239e499a1ULL);

    rk_rng_seed(&a, 7);
    rk_rng_seed(&b, 7);
    for (int i = 0; i < 1000; i++) cr_assert_eq(rk_rng_next(&a), rk_rng_next(&b));
    rk_rng_seed(&b, 8);
    int same = 0;
    for (int i = 0; i < 100; i++) same += rk_rng_next(&a) == rk_rng_next(&b);
    cr_assert_eq(same, 0, "seeds 7 and 8 give overlapping streams");

    rk_rng_seed(&a, 1);
    double sum = 0, sum2 = 0, usum = 0;
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        double u = rk_rng_uniform(&a);
        cr_assert(u >= 0.0 && u < 1.0, "uniform %g", u);
        usum += u;
        uint64_t k = rk_rng_below(&a, 10);
        cr_assert_lt(k, 10);
        double z = rk_rng_normal(&a);
        cr_assert(isfinite(z));
        sum += z;
        sum2 += z * z;
    }
    cr_expect(fabs(usum / N - 0.5) < 0.01, "uniform mean %g", usum / N);
    cr_expect(fabs(sum / N) < 0.03, "normal mean %g", sum / N);
    cr_expect(fabs(sum2 / N - 1.0) < 0.05, "normal variance %g", sum2 / N);
}

/* ---------------------------------------------------------------- allocation */

Test(core, alloc_fail_after) {
    void *p0 = rk_malloc(0), *p1 = rk_malloc(0);
    cr_assert(p0 && p1 && p0 != p1, "rk_malloc(0) must give unique pointers");
    rk_free(p0);
    rk_free(p1);

    rk_alloc_fail_after(1);
    cr_assert_null(rk_malloc(16));
    cr_assert_null(rk_malloc(16), "failure is sticky");
    cr_assert_null(rk_calloc(2, 8));
    cr_assert_null(rk_strdup("x"));
    rk_alloc_fail_after(0);
    void *p = rk_malloc(16);
    cr_assert_not_null(p, "recovers after rk_alloc_fail_after(0)");

    rk_alloc_fail_after(3);
    void *a = rk_malloc(8), *b = rk_calloc(1, 8);
    cr_assert(a && b, "first two allocations succeed");
    cr_assert_null(rk_realloc(p, 64), "third allocation fails");
    rk_alloc_fail_after(0);
    void *q = rk_realloc(p, 64); /* p still valid after the failed realloc */
    cr_assert_not_null(q);
    rk_free(a);
    rk_free(b);
    rk_free(q);
}

/* Fail each allocation of open/write in turn: every failure reports
 * RK_ENOMEM (or I/O for the file read) and leaks nothing (checked by ASan's
 * leak detector in the sanitizer build). */
Test(core, safetensors_out_of_memory_paths) {
    const char *path = tpath("oom.safetensors");
    write_sample(path);
    int ok = 0;
    for (long n = 1; n < 50 && !ok; n++) {
        rk_st_file *f = NULL;
        rk_err err = {0};
        rk_alloc_fail_after(n);
        rk_status s = rk_st_open(path, &f, &err);
        rk_alloc_fail_after(0);
        if (s == RK_OK) {
            ok = 1;
            rk_st_close(f);
        } else {
            cr_assert_eq(s, RK_ENOMEM, "failing allocation %ld: %s", n, err.msg);
            cr_assert_null(f);
        }
    }
    cr_assert(ok, "rk_st_open never succeeded");

    ok = 0;
    for (long n = 1; n < 50 && !ok; n++) {
        rk_st_writer *w = NULL;
        rk_err err = {0};
        rk_alloc_fail_after(n);
        rk_status s = rk_st_writer_create(&w, &err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "a", T_A, 2, S_A, &err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "b", T_B, 1, S_B, &err);
        if (s == RK_OK) s = rk_st_writer_write(w, path, &err);
        rk_alloc_fail_after(0);
        rk_st_writer_destroy(w);
        if (s == RK_OK) ok = 1;
        else cr_assert_eq(s, RK_ENOMEM, "failing allocation %ld: %s", n, err.msg);
    }
    cr_assert(ok, "writer never succeeded");
}

/* ---------------------------------------------------------------- status, errors, files */

Test(core, status_and_error_text) {
    cr_assert_str_eq(rk_status_str(RK_OK), "ok");
    cr_assert_str_eq(rk_status_str(RK_ESHAPE), "shape mismatch");
    cr_assert_str_eq(rk_status_str(RK_ENUMERIC), "non-finite number");
    cr_assert_str_eq(rk_status_str((rk_status)-999), "unknown status");

    rk_err err = {0};
    cr_assert_eq(rk_fail(&err, RK_EINVAL, "row %d, column %s: bad", 1042, "C7"), RK_EINVAL);
    cr_assert_eq(err.code, RK_EINVAL);
    cr_assert_str_eq(err.msg, "row 1042, column C7: bad");
    cr_assert_eq(rk_err_prefix(&err, "file %s", "x.csv"), RK_EINVAL);
    cr_assert_str_eq(err.msg, "file x.csv: row 1042, column C7: bad");
    cr_assert_eq(rk_fail(NULL, RK_EIO, "no buffer"), RK_EIO);

    /* Long messages are truncated, never overflow. */
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    rk_fail(&err, RK_EIO, "%s", big);
    cr_assert_eq(strlen(err.msg), sizeof err.msg - 1);
}

Test(core, file_helpers) {
    rk_err err = {0};
    const char *deep = tpath("a/b/c");
    cr_assert_eq(rk_mkdir_p(deep, &err), RK_OK, "%s", err.msg);
    cr_assert(rk_is_dir(deep));
    cr_assert_eq(rk_mkdir_p(deep, &err), RK_OK, "mkdir -p of an existing dir");
    const char *file = tpath("a/b/c/f.txt");
    cr_assert_eq(rk_write_file(file, "hello", 5, &err), RK_OK, "%s", err.msg);
    char *s;
    size_t n;
    cr_assert_eq(rk_read_file(file, &s, &n, &err), RK_OK, "%s", err.msg);
    cr_assert(n == 5 && !strcmp(s, "hello"));
    rk_free(s);
    cr_assert_eq(rk_mkdir_p(file, &err), RK_EIO);
    EXPECT_MSG(err, "not a directory");
    cr_assert_eq(rk_read_file(tpath("a"), &s, &n, &err), RK_EIO);
    EXPECT_MSG(err, "not a regular file");
    cr_assert_eq(rk_rm_rf(tpath("a"), &err), RK_OK, "%s", err.msg);
    cr_assert(!rk_path_exists(tpath("a")));
    cr_assert_eq(rk_rm_rf(tpath("a"), &err), RK_OK, "missing path is not an error");
}

/* Text files: a NUL byte is refused naming line, column and byte (line
 * splitting on the NUL-terminated buffer used to stop there silently); a
 * UTF-8 BOM is dropped; CRLF lines lose their \r. */
Test(core, read_text_refuses_nul_and_drops_bom) {
    rk_err err = {0};
    const char *f = tpath("nul.tsv");
    static const char nul[] = "a\tb\n1\t2\n3\t4\0junk\n5\t6\n";
    cr_assert_eq(rk_write_file(f, nul, sizeof nul - 1, &err), RK_OK, "%s", err.msg);
    char *s = (char *)1;
    size_t n = 99;
    cr_assert_eq(rk_read_text(f, &s, &n, &err), RK_EFORMAT);
    cr_expect_null(s);
    EXPECT_MSG(err, "row 3, column 2 'b' (byte 4 of the row): a NUL byte");
    static const char bom[] = "\xEF\xBB\xBF" "a\tb\r\n1\t2\r\n";
    cr_assert_eq(rk_write_file(f, bom, sizeof bom - 1, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(rk_read_text(f, &s, &n, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(n, sizeof bom - 1 - 3);
    char *cur = s, *l = rk_next_line(&cur), *fl[4];
    cr_expect_eq(rk_split_tabs(l, fl, 4), 2);
    cr_expect_str_eq(fl[0], "a");
    cr_expect_str_eq(fl[1], "b");
    l = rk_next_line(&cur);
    cr_expect_eq(rk_split_tabs(l, fl, 4), 2);
    cr_expect_str_eq(fl[1], "2");
    cr_expect_null(rk_next_line(&cur));
    rk_free(s);
}

/* The one strict number parser: the whole text is the number. */
Test(core, strict_number_parsers) {
    rk_err err = {0};
    long long x = 0;
    cr_expect_eq(rk_parse_int("--candidates", "25", 1, 100, &x, &err), RK_OK);
    cr_expect_eq(x, 25);
    const char *bad[] = {"2.5", "", " 3", "3 ", "3x", "0x10", "101", "0", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(rk_parse_int("--candidates", bad[i], 1, 100, &x, &err), RK_EINVAL, "'%s' accepted", bad[i]);
        char want[128];
        snprintf(want, sizeof want, "--candidates: expected an integer in 1..100, got '%s'", bad[i]);
        cr_expect_str_eq(err.msg, want);
    }
    double d = 0;
    cr_expect_eq(rk_parse_double("--rate", "2.5", 0.001, 1e7, &d, &err), RK_OK);
    cr_expect_eq(d, 2.5);
    const char *badd[] = {"nan", "inf", "", "1e30", "2.5x", " 1", "0"};
    for (size_t i = 0; i < sizeof badd / sizeof *badd; i++)
        cr_expect_eq(rk_parse_double("--rate", badd[i], 0.001, 1e7, &d, &err), RK_EINVAL, "'%s' accepted", badd[i]);
    EXPECT_MSG(err, "--rate: expected a number in [0.001, 1e+07], got '0'");
    uint64_t u = 0;
    cr_expect_eq(rk_parse_u64("--seed", "18446744073709551615", &u, &err), RK_OK);
    cr_expect_eq(u, UINT64_MAX);
    cr_expect_eq(rk_parse_u64("--seed", "-1", &u, &err), RK_EINVAL);
    cr_expect_eq(rk_parse_u64("--seed", "18446744073709551616", &u, &err), RK_EINVAL);
}

/* The one atomic publish: a write that fails (injected ENOSPC / EIO) leaves
 * the old content and no temporary behind. */
Test(core, write_file_atomic_keeps_old_content_on_failure) {
    rk_err err = {0};
    const char *p = tpath("atomic.txt");
    cr_assert_eq(rk_write_file_atomic(p, "old", 3, &err), RK_OK, "%s", err.msg);
    rk_write_fail_after(1, ENOSPC);
    cr_expect_eq(rk_write_file_atomic(p, "new!", 4, &err), RK_ETOOBIG);
    rk_write_fail_after(0, 0);
    EXPECT_MSG(err, "No space left on device");
    char *s;
    size_t n;
    cr_assert_eq(rk_read_file(p, &s, &n, &err), RK_OK);
    cr_expect(n == 3 && !memcmp(s, "old", 3), "content after a failed publish: %s", s);
    rk_free(s);
    char tmpf[300];
    snprintf(tmpf, sizeof tmpf, "%s.tmp-%ld", p, (long)getpid());
    cr_expect(!rk_path_exists(tmpf), "temporary left behind");
    rk_write_fail_after(2, EIO); /* the second write from now */
    cr_expect_eq(rk_write_file_atomic(p, "one", 3, &err), RK_OK, "%s", err.msg);
    cr_expect_eq(rk_write_file_atomic(p, "two", 3, &err), RK_EIO);
    rk_write_fail_after(0, 0);
    EXPECT_MSG(err, "Input/output error");
    cr_assert_eq(rk_read_file(p, &s, &n, &err), RK_OK);
    cr_expect(n == 3 && !memcmp(s, "one", 3));
    rk_free(s);
}

/* A symbolic link (or device, FIFO) is written through, not replaced by a
 * regular file (as root, --output /dev/full became a regular file). */
Test(core, write_file_atomic_writes_through_a_link) {
    rk_err err = {0};
    char target[300], link[300];
    snprintf(target, sizeof target, "%s", tpath("target.txt"));
    snprintf(link, sizeof link, "%s", tpath("link.txt"));
    cr_assert_eq(rk_write_file_atomic(target, "old", 3, &err), RK_OK, "%s", err.msg);
    cr_assert_eq(symlink(target, link), 0);
    cr_expect_eq(rk_write_file_atomic(link, "new!", 4, &err), RK_OK, "%s", err.msg);
    struct stat st;
    cr_assert_eq(lstat(link, &st), 0);
    cr_expect(S_ISLNK(st.st_mode), "the link was replaced by a regular file");
    char *s;
    size_t n;
    cr_assert_eq(rk_read_file(target, &s, &n, &err), RK_OK);
    cr_expect(n == 4 && !memcmp(s, "new!", 4), "the link's target: %.*s", (int)n, s);
    rk_free(s);
}

/* Log lines carry the program name that was set, then the level letter. */
Test(core, log_prefix_names_the_program, .init = cr_redirect_stderr) {
    rk_log_set_program("rank");
    rk_log(RK_LOG_WARN, "hello %d", 7);
    rk_log_set_program(NULL);
    rk_log(RK_LOG_ERROR, "back");
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char a[256] = {0}, b[256] = {0};
    cr_assert_not_null(fgets(a, sizeof a, f));
    cr_assert_not_null(fgets(b, sizeof b, f));
    cr_assert(strncmp(a, "rank W ", 7) == 0, "got '%s'", a);
    cr_assert(strstr(a, "Z hello 7\n") != NULL, "got '%s'", a);
    cr_assert(strncmp(b, "rankd E ", 8) == 0, "got '%s'", b);
}

/* A client's string in a message cannot start a line of its own: control
 * bytes are escaped (text lines; --log-json has jansson's escapes). */
Test(core, log_lines_escape_control_bytes, .init = cr_redirect_stderr) {
    rk_log(RK_LOG_ERROR, "model_name: '%s' is not served", "x\nrankd E 2026-01-01T00:00:00.000Z FORGED\r\t\x01\x7f");
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char a[512] = {0}, b[64] = {0};
    cr_assert_not_null(fgets(a, sizeof a, f));
    cr_expect_null(fgets(b, sizeof b, f), "a second line: '%s'", b);
    cr_expect(strstr(a, "Z model_name: 'x\\nrankd E 2026-01-01T00:00:00.000Z FORGED\\r\\t\\x01\\x7f' is not served\n") != NULL,
              "got '%s'", a);
}

Test(core, path_parent) {
    char p[64];
    rk_path_parent("a/b/c", p, sizeof p);
    cr_expect_str_eq(p, "a/b");
    rk_path_parent("/c", p, sizeof p);
    cr_expect_str_eq(p, "/");
    rk_path_parent("c", p, sizeof p);
    cr_expect_str_eq(p, ".");
    rk_path_parent("/x/y/", p, sizeof p);
    cr_expect_str_eq(p, "/x/y");
}

/* The name map behind feature and column lookups: every key found with its
 * value after growth well past the initial size, absent keys -1, a repeat
 * refused (first value kept), keys compared by length (not NUL-terminated),
 * and an allocation failure reported, not a crash. */
Test(core, strmap_put_get_grow) {
    rk_strmap *m = rk_strmap_create(2);
    cr_assert(m);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "f%d", i);
        cr_assert_eq(rk_strmap_put(m, k, strlen(k), i * 3), RK_OK);
    }
    cr_expect_eq(rk_strmap_count(m), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "f%d", i);
        cr_expect_eq(rk_strmap_get(m, k, strlen(k)), i * 3, "key %s", k);
    }
    cr_expect_eq(rk_strmap_get(m, "f5000", 5), -1);
    cr_expect_eq(rk_strmap_get(m, "", 0), -1);
    cr_expect_eq(rk_strmap_put(m, "f7", 2, 1), RK_EEXIST);
    cr_expect_eq(rk_strmap_get(m, "f7", 2), 21, "the first value stays");
    cr_expect_eq(rk_strmap_get(m, "f71xyz", 3), 71 * 3, "a prefix of a longer buffer");
    rk_alloc_fail_after(1);
    cr_expect_eq(rk_strmap_put(m, "new", 3, 1), RK_ENOMEM);
    rk_alloc_fail_after(0);
    cr_expect_eq(rk_strmap_get(m, "new", 3), -1);
    rk_strmap_destroy(m);
}
