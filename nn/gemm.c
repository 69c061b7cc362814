/*
 * nn/gemm.c — inference matrix kernels over packed weights, picked by cpuid.
 *
 * Why: a serving tower multiplies the same weights by a new batch on every
 * request. OpenBLAS re-packs W on each call and chooses its kernels from its
 * own run-time core detection (OPENBLAS_CORETYPE can demote an AVX-512 CPU
 * to AVX2 kernels, halving sgemm); these kernels pack W once, at model open,
 * and pick AVX-512, AVX2+FMA or plain C from cpuid themselves (as ggml and
 * llm.c do). The epilogue (bias; bias + ReLU; the DCN-V2 cross layer
 * x0 ⊙ (x W^T + b) + xl) is applied to the tile while it is still in
 * registers, so no separate pass over the activations is made.
 *
 * Packed layout: W [N, K] (PyTorch's Linear layout) becomes ceil(N/16)
 * panels of 16 output columns; panel p holds, for k = 0..K-1, the 16 values
 * W[16p + j, k] (j = 0..15) contiguous, zero past N. A tile of MR batch rows
 * x one or two panels keeps its sums in registers: per k it loads the panel
 * row(s) and broadcasts one x value per batch row (a rank-1 update).
 *
 * Summation order is the same in every kernel: for each output, one
 * accumulator, acc = fma(x[i,k], W[j,k], acc) for k = 0, 1, ..., K-1 from
 * acc = 0, then acc + b[j], then the epilogue (the cross layer's
 * x0 * u + xl also as one fma). The result therefore does not depend on the
 * kernel chosen, on the batch size or on a row's position in the batch:
 * AVX-512, AVX2 and the plain C reference (fmaf) give bit-identical outputs,
 * and `rank score` and rankd agree exactly whatever their batch sizes.
 *
 * Blocking: rows in blocks of about 256 KB of x (stays in L2 while every
 * panel pair streams past it); a panel (K x 16 floats, 64 KB at K = 1024)
 * streams from L2. No K blocking: the tower's K is at most a few thousand.
 */
#include "nn.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RK_GEMM_X86 1
#endif

#define NR 16 /* columns per packed panel */

size_t rk_gemm_packed_floats(int K, int N) {
    if (K <= 0 || N <= 0) return 0;
    return (size_t)((N + NR - 1) / NR) * NR * (size_t)K;
}

void rk_gemm_pack(float *dst, const float *W, int N, int K) {
    int np = (N + NR - 1) / NR;
    for (int p = 0; p < np; p++) {
        float *P = dst + (size_t)p * NR * (size_t)K;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < NR; j++) {
                int n = p * NR + j;
                P[(size_t)k * NR + j] = n < N ? W[(size_t)n * K + k] : 0.0f;
            }
    }
}

/* Epilogue of one output value (the scalar definition every kernel follows). */
static inline float epi1(float acc, float bias, rk_epilogue ep, float x0, float xl) {
    float u = acc + bias;
    if (ep == RK_EPI_BIAS_RELU) return u < 0.0f ? 0.0f : u;
    if (ep == RK_EPI_CROSS) return fmaf(x0, u, xl);
    return u;
}

/* ---------------------------------------------------------------- plain C */

void rk_gemm_forward_ref(float *y, const float *x, const float *W, const float *b, int M, int K, int N,
                         rk_epilogue ep, const float *x0, const float *xl) {
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)i * K + k], W[(size_t)n * K + k], acc);
            size_t o = (size_t)i * N + n;
            y[o] = epi1(acc, b ? b[n] : 0.0f, ep, x0 ? x0[o] : 0.0f, xl ? xl[o] : 0.0f);
        }
}

/* The same arithmetic on the packed layout: the path of CPUs without FMA. */
static void gemm_plain(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                       rk_epilogue ep, const float *x0, const float *xl) {
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            const float *P = Wp + (size_t)(n / NR) * NR * (size_t)K + n % NR;
            float acc = 0.0f;
            for (int k = 0; k < K; k++) acc = fmaf(x[(size_t)i * K + k], P[(size_t)k * NR], acc);
            size_t o = (size_t)i * N + n;
            y[o] = epi1(acc, b ? b[n] : 0.0f, ep, x0 ? x0[o] : 0.0f, xl ? xl[o] : 0.0f);
        }
}

/* Rows per block: about 256 KB of x, a multiple of mr, at least mr. */
static int row_block(int K, int mr) {
    int mc = (65536 / (K > 0 ? K : 1)) / mr * mr;
    return mc < mr ? mr : mc;
}

#ifdef RK_GEMM_X86
/* ---------------------------------------------------------------- AVX-512 */

#define MR512 12

/* One tile: mr rows (<= MR512) x np panels (1 or 2) starting at column n0;
 * nv = valid columns of the last panel (1..16). */
__attribute__((target("avx512f"), always_inline)) static inline void
tile512(float *y, const float *x, const float *P0, const float *b, int mr, int np, int K, int N, int n0, int nv,
        rk_epilogue ep, const float *x0, const float *xl) {
    __m512 c[MR512][2];
    for (int r = 0; r < MR512; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    const float *P1 = P0 + (size_t)NR * K;
    for (int k = 0; k < K; k++) {
        __m512 w0 = _mm512_loadu_ps(P0 + (size_t)k * NR);
        __m512 w1 = np > 1 ? _mm512_loadu_ps(P1 + (size_t)k * NR) : w0;
        for (int r = 0; r < MR512; r++) {
            if (r >= mr) break;
            __m512 a = _mm512_set1_ps(x[(size_t)r * K + k]);
            c[r][0] = _mm512_fmadd_ps(a, w0, c[r][0]);
            if (np > 1) c[r][1] = _mm512_fmadd_ps(a, w1, c[r][1]);
        }
    }
    for (int q = 0; q < np; q++) {
        int col = n0 + q * NR;
        __mmask16 mk = q == np - 1 ? (__mmask16)((1u << nv) - 1u) : (__mmask16)0xffff;
        __m512 bias = b ? _mm512_maskz_loadu_ps(mk, b + col) : _mm512_setzero_ps();
        for (int r = 0; r < mr; r++) {
            size_t o = (size_t)r * N + col;
            __m512 u = _mm512_add_ps(c[r][q], bias);
            if (ep == RK_EPI_BIAS_RELU) u = _mm512_max_ps(_mm512_setzero_ps(), u); /* NaN passes through */
            else if (ep == RK_EPI_CROSS)
                u = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x0 + o), u, _mm512_maskz_loadu_ps(mk, xl + o));
            _mm512_mask_storeu_ps(y + o, mk, u);
        }
    }
}

/* Tiles of one row block of mr rows (a compile-time constant after inlining). */
__attribute__((target("avx512f"), always_inline)) static inline void
rows512(float *y, const float *x, const float *Wp, const float *b, int mr, int K, int N, rk_epilogue ep,
        const float *x0, const float *xl) {
    int np = (N + NR - 1) / NR, p = 0;
    for (; p + 1 < np; p += 2) { /* panel pairs; the panel count is a constant in each call */
        int nv = N - (p + 1) * NR;
        tile512(y, x, Wp + (size_t)p * NR * K, b, mr, 2, K, N, p * NR, nv > NR ? NR : nv, ep, x0, xl);
    }
    if (p < np) tile512(y, x, Wp + (size_t)p * NR * K, b, mr, 1, K, N, p * NR, N - p * NR, ep, x0, xl);
}

#define RK_ROWS512(R)                                                                               \
    __attribute__((target("avx512f"))) static void rows512_##R(float *y, const float *x, const float *Wp, \
                                                               const float *b, int K, int N, rk_epilogue ep,  \
                                                               const float *x0, const float *xl) {        \
        rows512(y, x, Wp, b, R, K, N, ep, x0, xl);                                                  \
    }
RK_ROWS512(1)
RK_ROWS512(2)
RK_ROWS512(3)
RK_ROWS512(4)
RK_ROWS512(5)
RK_ROWS512(6)
RK_ROWS512(7)
RK_ROWS512(8)
RK_ROWS512(9)
RK_ROWS512(10)
RK_ROWS512(11)
RK_ROWS512(12)

typedef void (*rows_fn)(float *, const float *, const float *, const float *, int, int, rk_epilogue, const float *,
                        const float *);
static const rows_fn rows512_of[MR512 + 1] = {NULL,      rows512_1, rows512_2, rows512_3,  rows512_4,
                                              rows512_5, rows512_6, rows512_7, rows512_8,  rows512_9,
                                              rows512_10, rows512_11, rows512_12};

/* ---------------------------------------------------------------- AVX2 + FMA */

#define MR256 6

/* One tile: mr rows (<= MR256) x one panel (two 8-wide halves) at column n0,
 * nv valid columns (1..16). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile256(float *y, const float *x, const float *P, const float *b, int mr, int K, int N, int n0, int nv,
        rk_epilogue ep, const float *x0, const float *xl) {
    __m256 c[MR256][2];
    for (int r = 0; r < MR256; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        __m256 w0 = _mm256_loadu_ps(P + (size_t)k * NR), w1 = _mm256_loadu_ps(P + (size_t)k * NR + 8);
        for (int r = 0; r < MR256; r++) {
            if (r >= mr) break;
            __m256 a = _mm256_broadcast_ss(x + (size_t)r * K + k);
            c[r][0] = _mm256_fmadd_ps(a, w0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, w1, c[r][1]);
        }
    }
    float bias[NR] = {0}, t[NR], tx0[NR], txl[NR];
    if (b) memcpy(bias, b + n0, (size_t)nv * sizeof *bias);
    for (int r = 0; r < mr; r++) {
        size_t o = (size_t)r * N + n0;
        if (nv == NR) {
            for (int h = 0; h < 2; h++) {
                __m256 u = _mm256_add_ps(c[r][h], _mm256_loadu_ps(bias + 8 * h));
                if (ep == RK_EPI_BIAS_RELU) u = _mm256_max_ps(_mm256_setzero_ps(), u);
                else if (ep == RK_EPI_CROSS)
                    u = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + o + 8 * h), u, _mm256_loadu_ps(xl + o + 8 * h));
                _mm256_storeu_ps(y + o + 8 * h, u);
            }
            continue;
        }
        /* a partial last panel: through a small buffer, the same arithmetic */
        _mm256_storeu_ps(t, c[r][0]);
        _mm256_storeu_ps(t + 8, c[r][1]);
        for (int j = 0; j < nv; j++) {
            tx0[j] = ep == RK_EPI_CROSS ? x0[o + j] : 0.0f;
            txl[j] = ep == RK_EPI_CROSS ? xl[o + j] : 0.0f;
        }
        for (int j = 0; j < nv; j++) y[o + j] = epi1(t[j], bias[j], ep, tx0[j], txl[j]);
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
rows256(float *y, const float *x, const float *Wp, const float *b, int mr, int K, int N, rk_epilogue ep,
        const float *x0, const float *xl) {
    int np = (N + NR - 1) / NR;
    for (int p = 0; p < np; p++) {
        int nv = N - p * NR;
        tile256(y, x, Wp + (size_t)p * NR * K, b, mr, K, N, p * NR, nv > NR ? NR : nv, ep, x0, xl);
    }
}

#define RK_ROWS256(R)                                                                               \
    __attribute__((target("avx2,fma"))) static void rows256_##R(float *y, const float *x, const float *Wp, \
                                                                const float *b, int K, int N, rk_epilogue ep, \
                                                                const float *x0, const float *xl) {       \
        rows256(y, x, Wp, b, R, K, N, ep, x0, xl);                                                  \
    }
RK_ROWS256(1)
RK_ROWS256(2)
RK_ROWS256(3)
RK_ROWS256(4)
RK_ROWS256(5)
RK_ROWS256(6)
static const rows_fn rows256_of[MR256 + 1] = {NULL, rows256_1, rows256_2, rows256_3, rows256_4, rows256_5, rows256_6};

/* Row blocks of mc rows, tiles of mr rows (the tail through a smaller kernel). */
static void gemm_tiles(const rows_fn *of, int mr, float *y, const float *x, const float *Wp, const float *b, int M,
                       int K, int N, rk_epilogue ep, const float *x0, const float *xl) {
    int mc = row_block(K, mr);
    for (int i0 = 0; i0 < M; i0 += mc) {
        int i1 = M - i0 < mc ? M : i0 + mc;
        for (int i = i0; i < i1; i += mr) {
            int r = i1 - i < mr ? i1 - i : mr;
            size_t o = (size_t)i * N;
            of[r](y + o, x + (size_t)i * K, Wp, b, K, N, ep, x0 ? x0 + o : NULL, xl ? xl + o : NULL);
        }
    }
}
#endif /* RK_GEMM_X86 */

/* ---------------------------------------------------------------- dispatch */

static rk_gemm_kernel chosen = RK_GEMM_AUTO;

static rk_gemm_kernel detect(void) {
#ifdef RK_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return RK_GEMM_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return RK_GEMM_AVX2;
#endif
    return RK_GEMM_PLAIN;
}

rk_gemm_kernel rk_gemm_kernel_get(void) {
    if (chosen == RK_GEMM_AUTO) chosen = detect();
    return chosen;
}

int rk_gemm_kernel_set(rk_gemm_kernel k) {
    rk_gemm_kernel best = detect();
    if (k == RK_GEMM_AUTO) k = best;
    if (k > best) return -1; /* the CPU lacks it */
    chosen = k;
    return 0;
}

const char *rk_gemm_kernel_name(rk_gemm_kernel k) {
    switch (k) {
    case RK_GEMM_PLAIN: return "plain";
    case RK_GEMM_AVX2: return "avx2";
    case RK_GEMM_AVX512: return "avx512";
    default: return "auto";
    }
}

void rk_gemm_forward(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                     rk_epilogue ep, const float *x0, const float *xl) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* no products: the epilogue of acc = 0 */
        for (int i = 0; i < M; i++)
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)i * N + n;
                y[o] = epi1(0.0f, b ? b[n] : 0.0f, ep, x0 ? x0[o] : 0.0f, xl ? xl[o] : 0.0f);
            }
        return;
    }
    switch (rk_gemm_kernel_get()) {
#ifdef RK_GEMM_X86
    case RK_GEMM_AVX512: gemm_tiles(rows512_of, MR512, y, x, Wp, b, M, K, N, ep, x0, xl); return;
    case RK_GEMM_AVX2: gemm_tiles(rows256_of, MR256, y, x, Wp, b, M, K, N, ep, x0, xl); return;
#endif
    default: gemm_plain(y, x, Wp, b, M, K, N, ep, x0, xl); return;
    }
}
