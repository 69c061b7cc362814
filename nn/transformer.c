/*
 * nn/transformer.c — forward ops of a BERT-style transformer encoder.
 *
 * LayerNorm (with an optional residual add), GELU (erf form), row softmax
 * with a key mask, multi-head self-attention over packed sequences, mean
 * pooling and L2 normalization. Shapes, formulas and sources are in nn/nn.h.
 *
 * How it is organised: every op is a plain loop over rows except the two
 * attention products, which call OpenBLAS sgemm per (sequence, head) on
 * strided views of the fused [T, 3D] QKV matrix — Q K^T is
 * sgemm(NoTrans, Trans) with lda = ldb = 3D, and P V is sgemm(NoTrans,
 * NoTrans) writing straight into the head's columns of out (ldc = D) — so
 * no head is ever transposed or copied. Sequences are packed (no padding):
 * a batch of short titles spends no work on pad tokens, and padding rows
 * never need masking because they do not exist. Nothing here allocates;
 * nothing here is multi-threaded except what OpenBLAS does inside sgemm (the
 * elementwise ops are a few percent of the FLOPs of the Linear layers).
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "nn.h"

void rk_layernorm_forward(float *y, const float *x, const float *res, const float *gamma, const float *beta,
                          int N, int D, float eps) {
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * D;
        const float *rr = res ? res + (size_t)r * D : NULL;
        float *yr = y + (size_t)r * D;
        double sum = 0.0;
        for (int j = 0; j < D; j++) {
            float z = rr ? xr[j] + rr[j] : xr[j]; /* float add, as torch's residual add */
            yr[j] = z;
            sum += z;
        }
        double mean = sum / D, var = 0.0;
        for (int j = 0; j < D; j++) {
            double d = yr[j] - mean;
            var += d * d;
        }
        float inv = (float)(1.0 / sqrt(var / D + (double)eps)), m = (float)mean;
        for (int j = 0; j < D; j++) yr[j] = (yr[j] - m) * inv * gamma[j] + beta[j];
    }
}

/* exp and erf for the elementwise loops: branch-free, so the loops below
 * vectorize (target_clones: AVX-512 / AVX2 / baseline, chosen at load).
 * fast_expf: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, and the
 * degree-7 Taylor polynomial of e^r (truncation < 6e-9 relative), times 2^n
 * built in the exponent bits; x is clamped to [-87, 88] (e^-87 ~ 1.6e-38
 * stands for 0). fast_erff: Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7.
 * glibc's scalar erff/expf were 21% of a ViT-S forward (perf). */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 */
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720, p = p * r + 1.0f / 120, p = p * r + 1.0f / 24, p = p * r + 1.0f / 6;
    p = p * r + 0.5f, p = p * r + 1.0f, p = p * r + 1.0f;
    union { int32_t i; float f; } sc = {.i = ((int32_t)n + 127) << 23};
    return p * sc.f;
}

static inline float fast_erff(float x) {
    const float a = fabsf(x), t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f, p = p * t + 1.421413741f, p = p * t - 0.284496736f, p = p * t + 0.254829592f;
    return copysignf(1.0f - p * t * fast_expf(-a * a), x);
}

/* GCC builds AVX-512, AVX2 and baseline copies picked at load time; clang 14
 * (the fuzz build) does not link target_clones reliably, so it gets one. */
#if defined(__GNUC__) && !defined(__clang__)
#define RK_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RK_SIMD_CLONES
#endif

RK_SIMD_CLONES void rk_gelu_forward(float *y, const float *x, size_t n) {
    const float r = 0.70710678118654752440f; /* 1/sqrt(2) */
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + fast_erff(x[i] * r));
}

/* y[c] = exp(scale x[c] - m) over one row; y may alias x. */
RK_SIMD_CLONES static void softmax_exp(float *y, const float *x, int cols, float scale, float m) {
    for (int c = 0; c < cols; c++) y[c] = fast_expf(scale * x[c] - m);
}

void rk_softmax_masked_forward(float *y, const float *x, const uint8_t *mask, int rows, int cols, float scale) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        float m = -INFINITY;
        for (int c = 0; c < cols; c++)
            if ((!mask || mask[c]) && scale * xr[c] > m) m = scale * xr[c];
        if (m == -INFINITY) { /* every column masked */
            memset(yr, 0, (size_t)cols * sizeof *yr);
            continue;
        }
        float sum = 0.0f;
        if (!mask) {
            softmax_exp(yr, xr, cols, scale, m); /* vectorized */
            for (int c = 0; c < cols; c++) sum += yr[c];
        } else {
            for (int c = 0; c < cols; c++) {
                float e = mask[c] ? fast_expf(scale * xr[c] - m) : 0.0f;
                yr[c] = e;
                sum += e;
            }
        }
        float inv = 1.0f / sum;
        for (int c = 0; c < cols; c++) yr[c] *= inv;
    }
}

size_t rk_attention_scratch_floats(int max_len) { return max_len > 0 ? (size_t)max_len * (size_t)max_len : 1; }

void rk_attention_forward(float *out, const float *qkv, const int32_t *offsets, int n_seq, int n_heads,
                          int head_dim, float *scratch) {
    const int D = n_heads * head_dim, ld = 3 * D;
    const float scale = 1.0f / sqrtf((float)head_dim);
    for (int s = 0; s < n_seq; s++) {
        const int t0 = offsets[s], L = offsets[s + 1] - offsets[s];
        if (L <= 0) continue;
        for (int h = 0; h < n_heads; h++) {
            const float *q = qkv + (size_t)t0 * ld + (size_t)h * head_dim;
            const float *k = q + D, *v = q + 2 * D;
            float *o = out + (size_t)t0 * D + (size_t)h * head_dim;
            /* scores[L,L] = Q K^T / sqrt(dh) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, head_dim, scale, q, ld, k, ld, 0.0f,
                        scratch, L);
            rk_softmax_masked_forward(scratch, scratch, NULL, L, L, 1.0f);
            /* o[L,dh] = P V */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, head_dim, L, 1.0f, scratch, L, v, ld, 0.0f, o,
                        D);
        }
    }
}

void rk_mean_pool_forward(float *out, const float *x, const int32_t *offsets, int n_seq, int D) {
    for (int s = 0; s < n_seq; s++) {
        float *o = out + (size_t)s * D;
        const int t0 = offsets[s], L = offsets[s + 1] - offsets[s];
        for (int j = 0; j < D; j++) {
            double sum = 0.0;
            for (int t = 0; t < L; t++) sum += x[(size_t)(t0 + t) * D + j];
            o[j] = L > 0 ? (float)(sum / L) : 0.0f;
        }
    }
}

void rk_l2_normalize(float *x, int N, int D, float eps) {
    for (int r = 0; r < N; r++) {
        float *xr = x + (size_t)r * D;
        double ss = 0.0;
        for (int j = 0; j < D; j++) ss += (double)xr[j] * xr[j];
        double nrm = sqrt(ss);
        float inv = (float)(1.0 / (nrm > eps ? nrm : eps));
        for (int j = 0; j < D; j++) xr[j] *= inv;
    }
}
