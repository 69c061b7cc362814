/*
 * store/codec.c — row codecs: fp32, fp16 (IEEE binary16) and row-wise int8.
 *
 * fp16 conversion is done in software (bit manipulation, round to nearest
 * even, subnormals, inf and NaN kept) so results are the same on every
 * machine. int8 follows FBGEMM's fused 8-bit rowwise quantization
 * (fbgemm/QuantUtils.cc, FloatToFused8BitRowwiseQuantizedSBFloat): per row
 * bias = min, scale = (max - min) / 255, q = lrintf((x - min) / (range +
 * 1e-8) * 255), stored q[dim] then scale and bias as float32 little-endian.
 */
#include <math.h>
#include <string.h>

#include "store.h"

const char *rk_codec_name(rk_codec c) {
    switch (c) {
    case RK_CODEC_FP32: return "fp32";
    case RK_CODEC_FP16: return "fp16";
    case RK_CODEC_INT8: return "int8";
    }
    return "?";
}

rk_status rk_codec_parse(const char *name, rk_codec *out, rk_err *err) {
    if (name && !strcmp(name, "fp32")) *out = RK_CODEC_FP32;
    else if (name && !strcmp(name, "fp16")) *out = RK_CODEC_FP16;
    else if (name && !strcmp(name, "int8")) *out = RK_CODEC_INT8;
    else return rk_fail(err, RK_EINVAL, "codec: expected fp32, fp16 or int8, got '%s'", name ? name : "(null)");
    return RK_OK;
}

size_t rk_codec_row_bytes(rk_codec c, int dim) {
    switch (c) {
    case RK_CODEC_FP16: return (size_t)dim * 2;
    case RK_CODEC_INT8: return (size_t)dim + 8;
    default: return (size_t)dim * 4;
    }
}

static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN (keep a quiet NaN) */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal half or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;          /* < 2^-25: rounds to zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = (m >> shift) units of 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax + 0xc8000fffu + ((ax >> 13) & 1); /* rebias (-112 << 23) and round to nearest even */
    return (uint16_t)(sign | (r >> 13));
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, x;
    if (e == 0) {
        float f = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        memcpy(&x, &f, 4);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void rk_codec_encode(rk_codec c, const float *x, int dim, void *out) {
    unsigned char *o = out;
    if (c == RK_CODEC_FP32) {
        memcpy(o, x, (size_t)dim * 4);
    } else if (c == RK_CODEC_FP16) {
        for (int i = 0; i < dim; i++) {
            uint16_t h = f32_to_f16(x[i]);
            o[2 * i] = (unsigned char)(h & 0xff);
            o[2 * i + 1] = (unsigned char)(h >> 8);
        }
    } else {
        float mn = dim ? x[0] : 0, mx = mn;
        for (int i = 1; i < dim; i++) {
            if (x[i] < mn) mn = x[i];
            if (x[i] > mx) mx = x[i];
        }
        float range = mx - mn;
        float scale = range == 0 ? 1.0f : range / 255.0f;
        float inv = 255.0f / (range + 1e-8f);
        for (int i = 0; i < dim; i++) {
            long q = lrintf((x[i] - mn) * inv);
            o[i] = (unsigned char)(q < 0 ? 0 : q > 255 ? 255 : q);
        }
        memcpy(o + dim, &scale, 4);
        memcpy(o + dim + 4, &mn, 4);
    }
}

void rk_codec_decode(rk_codec c, const void *in, int dim, float *out) {
    const unsigned char *p = in;
    if (c == RK_CODEC_FP32) {
        memcpy(out, p, (size_t)dim * 4);
    } else if (c == RK_CODEC_FP16) {
        for (int i = 0; i < dim; i++) out[i] = f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
    } else {
        float scale, bias;
        memcpy(&scale, p + dim, 4);
        memcpy(&bias, p + dim + 4, 4);
        for (int i = 0; i < dim; i++) out[i] = (float)p[i] * scale + bias;
    }
}
