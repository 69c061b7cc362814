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
 * user against many candidates in one fused pass over their CPE rows. Nothing here allocates.
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

/* Pool one candidate's m*k products S[i*stride + j] (i < m, j < k) as
 * rk_match_forward does, in float. */
static float pool_block(const float *S, size_t stride, int m, int k, rk_match_pool pool, float tau) {
    float mx = S[0], sum = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) {
            const float v = S[i * stride + j];
            mx = v > mx ? v : mx;
            sum += v;
        }
    if (pool == RK_MATCH_MEAN) return sum / (float)(m * k);
    if (pool == RK_MATCH_MAX) return mx;
    float z = 0, y = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) {
            const float v = S[i * stride + j], w = expf((v - mx) / tau);
            z += w;
            y += w * v;
        }
    return y / z;
}

/* One candidate's m*k products S[i*k + j] = U_i · V_j, U[m,d] and V[k,d] (both
 * L1-resident after the first row): 8-float lanes, four CPE rows per pass
 * of a UPE row, the lanes summed at the end. The candidate's V is read from
 * memory once, nothing is packed (sgemm spent more time packing V than
 * multiplying: bench-embsum's profile). */
typedef float rk_v8 __attribute__((vector_size(32), aligned(4)));
#define RK_LOAD8(p) (*(const rk_v8 *)(p))
__attribute__((target("avx2,fma"))) static inline float hsum8(rk_v8 a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}
/* Four CPE rows v0..v3 against one UPE row u: S[0..3] (d8 = d rounded down to 8). */
__attribute__((target("avx2,fma"))) static void dot1x4(float *S, const float *u, const float *v, size_t d, int d8) {
    rk_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    for (int t = 0; t < d8; t += 8) {
        const rk_v8 x = RK_LOAD8(u + t);
        a0 += x * RK_LOAD8(v + t), a1 += x * RK_LOAD8(v + d + t);
        a2 += x * RK_LOAD8(v + 2 * d + t), a3 += x * RK_LOAD8(v + 3 * d + t);
    }
    S[0] = hsum8(a0), S[1] = hsum8(a1), S[2] = hsum8(a2), S[3] = hsum8(a3);
    for (size_t t = (size_t)d8; t < d; t++)
        for (int j = 0; j < 4; j++) S[j] += u[t] * v[j * d + t];
}
__attribute__((target("avx2,fma"))) static float dot1(const float *u, const float *v, int d, int d8) {
    rk_v8 a = {0};
    for (int t = 0; t < d8; t += 8) a += RK_LOAD8(u + t) * RK_LOAD8(v + t);
    float r = hsum8(a);
    for (int t = d8; t < d; t++) r += u[t] * v[t];
    return r;
}
__attribute__((target("avx2,fma"))) static void dots_avx2(float *S, const float *U, const float *V, int m, int k,
                                                          int d) {
    const int d8 = d & ~7;
    for (int i = 0; i < m; i++) {
        const float *u = U + (size_t)i * d;
        int j = 0;
        for (; j + 4 <= k; j += 4) dot1x4(S + i * k + j, u, V + (size_t)j * d, (size_t)d, d8);
        for (; j < k; j++) S[i * k + j] = dot1(u, V + (size_t)j * d, d, d8);
    }
}

static void dots_plain(float *S, const float *U, const float *V, int m, int k, int d) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) {
            const float *u = U + (size_t)i * d, *v = V + (size_t)j * d;
            float r0 = 0, r1 = 0, r2 = 0, r3 = 0;
            int t = 0;
            for (; t + 4 <= d; t += 4) r0 += u[t] * v[t], r1 += u[t + 1] * v[t + 1], r2 += u[t + 2] * v[t + 2], r3 += u[t + 3] * v[t + 3];
            for (; t < d; t++) r0 += u[t] * v[t];
            S[i * k + j] = (r0 + r1) + (r2 + r3);
        }
}

void rk_match_batch(float *y, float *St, const float *U, const float *V, int n, int m, int k, int d,
                    rk_match_pool pool, float tau) {
    /* asked per call (cheap: libgcc's cached cpuid), so no shared state between rankd's workers */
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const size_t kd = (size_t)k * d, mk = (size_t)m * k;
    for (int c = 0; c < n; c++) {
        float *S = St + (size_t)c * mk;
        if (avx2) dots_avx2(S, U, V + (size_t)c * kd, m, k, d);
        else dots_plain(S, U, V + (size_t)c * kd, m, k, d);
        y[c] = pool_block(S, (size_t)k, m, k, pool, tau);
    }
}
