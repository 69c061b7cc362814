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

void rk_gelu_forward(float *y, const float *x, size_t n) {
    const float r = 0.70710678118654752440f; /* 1/sqrt(2) */
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * r));
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
        for (int c = 0; c < cols; c++) {
            float e = (!mask || mask[c]) ? expf(scale * xr[c] - m) : 0.0f;
            yr[c] = e;
            sum += e;
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
