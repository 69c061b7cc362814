/*
 * nn/poly.c — EmbSum's two dense ops (papers.md §4(b), §6.6), forward and
 * backward, on caller-owned row-major float32 buffers with plain shapes so
 * that a CUDA backend can take the same signatures:
 *
 *   poly-attention (Humeau et al. 2020, "Poly-encoders", §4.4; EmbSum's UPE
 *   and CPE):  Z = tanh(H W_a)  [n,dc]
 *              A = softmax_rows(C Zᵀ)  [m,n]
 *              E = A H  [m,d]
 *   m learned codes C[m,dc] each pick a convex combination of the n input
 *   vectors H[n,d] (session vectors of a user, token states of an item).
 *
 *   matching: S = U Vᵀ [m,k] for U[m,d] (UPE) and V[k,d] (CPE), pooled into
 *   one score: softmax-weighted Σ softmax(vec S / τ) ∘ S (default), max or
 *   mean (papers.md §6.6).
 *
 * The products with the input width d (keys, E = A H and their gradients)
 * go through OpenBLAS sgemm; the small ones (codes x keys, m x k matching)
 * are loops with double accumulation. rk_match_batch (serving) matches one
 * user against many candidates with a single sgemm. Nothing here allocates.
 */
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define SGEMM(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc) \
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc)

void rk_poly_attention_forward(float *E, float *A, float *Z, const float *H, const float *C, const float *Wa,
                               int n, int d, int m, int dc) {
    /* Z = tanh(H W_a) */
    SGEMM(CblasNoTrans, CblasNoTrans, n, dc, d, H, d, Wa, dc, 0.0f, Z, dc);
    for (size_t i = 0; i < (size_t)n * dc; i++) Z[i] = tanhf(Z[i]);
    for (int r = 0; r < m; r++) {
        float *a = A + (size_t)r * n;
        const float *c = C + (size_t)r * dc;
        float mx = -INFINITY;
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int t = 0; t < dc; t++) s += (double)c[t] * Z[(size_t)i * dc + t];
            a[i] = (float)s;
            if (a[i] > mx) mx = a[i];
        }
        double sum = 0;
        for (int i = 0; i < n; i++) sum += (a[i] = expf(a[i] - mx));
        for (int i = 0; i < n; i++) a[i] = (float)(a[i] / sum);
    }
    /* E = A H */
    SGEMM(CblasNoTrans, CblasNoTrans, m, d, n, A, n, H, d, 0.0f, E, d);
}

void rk_poly_attention_backward(float *dH, float *dC, float *dWa, const float *dE, const float *H, const float *C,
                                const float *Wa, const float *A, const float *Z, int n, int d, int m, int dc,
                                float *scratch) {
    float *dL = scratch;                 /* [m,n] */
    float *dU = scratch + (size_t)m * n; /* [n,dc] */
    /* dA = dE Hᵀ (into dL); then dL = A ∘ (dA - Σ_i A dA), the softmax backward per row */
    SGEMM(CblasNoTrans, CblasTrans, m, n, d, dE, d, H, d, 0.0f, dL, n);
    for (int r = 0; r < m; r++) {
        const float *a = A + (size_t)r * n;
        float *dl = dL + (size_t)r * n;
        double dot = 0;
        for (int i = 0; i < n; i++) dot += (double)dl[i] * a[i];
        for (int i = 0; i < n; i++) dl[i] = a[i] * (float)(dl[i] - dot);
    }
    /* dC += dL Z ; dU = (dLᵀ C) ∘ (1 - Z²) */
    SGEMM(CblasNoTrans, CblasNoTrans, m, dc, n, dL, n, Z, dc, 1.0f, dC, dc);
    SGEMM(CblasTrans, CblasNoTrans, n, dc, m, dL, n, C, dc, 0.0f, dU, dc);
    for (size_t i = 0; i < (size_t)n * dc; i++) dU[i] *= 1 - Z[i] * Z[i];
    /* dWa += Hᵀ dU */
    SGEMM(CblasTrans, CblasNoTrans, d, dc, n, H, d, dU, dc, 1.0f, dWa, dc);
    if (!dH) return;
    /* dH = Aᵀ dE + dU W_aᵀ */
    SGEMM(CblasTrans, CblasNoTrans, n, d, m, A, n, dE, d, 0.0f, dH, d);
    SGEMM(CblasNoTrans, CblasTrans, n, d, dc, dU, dc, Wa, dc, 1.0f, dH, d);
}

/* S = U Vᵀ for U[m,d], V[k,d]: each dot product in double over four
 * interleaved partial sums (a fixed order, so every caller — training,
 * offline scoring, serving — gets the same bits; the independent sums let
 * the CPU overlap the multiply-adds, ~3x faster than one running sum). */
static void match_products(float *S, const float *U, const float *V, int m, int k, int d) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) {
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            const float *u = U + (size_t)i * d, *v = V + (size_t)j * d;
            int t = 0;
            for (; t + 4 <= d; t += 4) {
                s0 += (double)u[t] * v[t];
                s1 += (double)u[t + 1] * v[t + 1];
                s2 += (double)u[t + 2] * v[t + 2];
                s3 += (double)u[t + 3] * v[t + 3];
            }
            for (; t < d; t++) s0 += (double)u[t] * v[t];
            S[(size_t)i * k + j] = (float)((s0 + s1) + (s2 + s3));
        }
}

float rk_match_forward(float *S, float *W, const float *U, const float *V, int m, int k, int d, rk_match_pool pool,
                       float tau) {
    match_products(S, U, V, m, k, d);
    const int n = m * k;
    if (pool == RK_MATCH_MEAN) {
        double s = 0;
        for (int i = 0; i < n; i++) s += S[i];
        for (int i = 0; i < n; i++) W[i] = 1.0f / (float)n;
        return (float)(s / n);
    }
    int arg = 0;
    for (int i = 1; i < n; i++)
        if (S[i] > S[arg]) arg = i;
    if (pool == RK_MATCH_MAX) {
        for (int i = 0; i < n; i++) W[i] = i == arg ? 1.0f : 0.0f;
        return S[arg];
    }
    double z = 0, y = 0;
    for (int i = 0; i < n; i++) z += exp(((double)S[i] - S[arg]) / tau);
    for (int i = 0; i < n; i++) {
        W[i] = (float)(exp(((double)S[i] - S[arg]) / tau) / z);
        y += (double)W[i] * S[i];
    }
    return (float)y;
}

void rk_match_backward(float *dU, float *dV, float dy, float y, const float *S, const float *W, const float *U,
                       const float *V, int m, int k, int d, rk_match_pool pool, float tau, float *dS) {
    const int n = m * k;
    for (int i = 0; i < n; i++) {
        /* softmax pooling: ∂y/∂S_ij = w_ij (1 + (S_ij - y) / τ); max and mean: the weights themselves */
        float g = W[i];
        if (pool == RK_MATCH_SOFTMAX) g *= 1.0f + (S[i] - y) / tau;
        dS[i] = dy * g;
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) {
            const float g = dS[(size_t)i * k + j];
            if (g == 0) continue;
            const float *u = U + (size_t)i * d, *v = V + (size_t)j * d;
            float *du = dU + (size_t)i * d, *dv = dV + (size_t)j * d;
            for (int t = 0; t < d; t++) {
                du[t] += g * v[t];
                dv[t] += g * u[t];
            }
        }
}

/* Pool one candidate's m*k products (strided: St holds its k rows of m) as
 * rk_match_forward does, in float. */
static float pool_block(const float *St, int m, int k, rk_match_pool pool, float tau) {
    const int n = m * k;
    if (pool == RK_MATCH_MEAN) {
        float s = 0;
        for (int i = 0; i < n; i++) s += St[i];
        return s / (float)n;
    }
    float mx = St[0];
    for (int i = 1; i < n; i++) mx = St[i] > mx ? St[i] : mx;
    if (pool == RK_MATCH_MAX) return mx;
    float z = 0, y = 0;
    for (int i = 0; i < n; i++) {
        float w = expf((St[i] - mx) / tau);
        z += w;
        y += w * St[i];
    }
    return y / z;
}

void rk_match_batch(float *y, float *St, const float *U, const float *V, int n, int m, int k, int d,
                    rk_match_pool pool, float tau) {
    if (n <= 0) return;
    /* St[n*k, m] = V[n*k, d] · U[m, d]ᵀ: candidate c's products are rows c*k .. c*k+k-1 */
    SGEMM(CblasNoTrans, CblasTrans, n * k, m, d, V, d, U, d, 0.0f, St, m);
    const size_t block = (size_t)m * k;
    for (int c = 0; c < n; c++) y[c] = pool_block(St + (size_t)c * block, m, k, pool, tau);
}
