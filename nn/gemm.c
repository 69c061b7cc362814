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
 * Blocking (x86 kernels): see gemm_tiles. x is taken a row block at a time,
 * repacked into tiles interleaved by k unless its rows fall into distinct
 * L1 sets (then read in place), W's panels stream from L2, K is chunked
 * past 4096.
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
                       rk_epilogue ep, const float *x0, const float *xl, int kb, int ke, const float *init, int raw) {
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            const float *P = Wp + (size_t)(n / NR) * NR * (size_t)K + n % NR;
            float acc = init ? init[n] : 0.0f;
            for (int k = kb; k < ke; k++) acc = fmaf(x[(size_t)i * K + k], P[(size_t)k * NR], acc);
            size_t o = (size_t)i * N + n;
            y[o] = raw ? acc : epi1(acc, b ? b[n] : 0.0f, ep, x0 ? x0[o] : 0.0f, xl ? xl[o] : 0.0f);
        }
}

#ifdef RK_GEMM_X86
/* x is copied, a row block and a K chunk at a time, into a per-thread buffer
 * as tiles of MR rows interleaved by k (xp[k * MR + r]): a tile's k-th
 * values are then one contiguous 48-byte read, instead of MR reads 4*K bytes
 * apart, which for K a multiple of 1024 all fall into one L1 set (set
 * conflicts). Row blocks are as many tiles as fit the buffer (about 192 KB,
 * in L2 beside the panel being streamed); for each panel (pair) every tile
 * of the block is done before the next, so a panel is read from L2, not L3.
 * A K longer than KC is done in chunks: the running sums are parked in y
 * between chunks (same order, so the same results) and the epilogue is
 * applied after the last.
 * When a tile's MR rows start in distinct L1 sets (rows_spread: the demo's
 * K = 97, not K = 256, 512 or 1024) the kernels read x in place instead
 * (xs = K, "direct"), in the same row blocks: the copy cost about a tenth
 * of the demo tower's time. */
#define XBUF_FLOATS 49152
#define KC 4096
static _Thread_local float xbuf[XBUF_FLOATS] __attribute__((aligned(64)));

/* One tile: kernel args. y, x0, xl at the tile's first row (row stride N);
 * xp: the packed tile (xs = 0: xp[k * MR + r]) or x's first row of the tile
 * at the chunk's first k (row r at xp + r * xs); P: first panel at the
 * chunk's first k (the next panel pstride floats on); nv: valid columns of
 * the last panel (1..16); first: sums start from init[N] (shared by every
 * row; NULL: 0), else from y; last: apply the epilogue (else park the sums
 * in y). */
typedef void (*tile_fn)(float *y, const float *xp, size_t xs, const float *P, size_t pstride, const float *b, int kc,
                        int N, int n0, int nv, int first, const float *init, int last, rk_epilogue ep, const float *x0,
                        const float *xl);

/* x value (k, r) of a tile, in a kernel: reads its direct (0: packed, 1: in
 * place; a compile-time constant), xp and xs. */
#define XAT(MR, k, r) (direct ? xp[(size_t)(r) * xs + (size_t)(k)] : xp[(size_t)(k) * (MR) + (size_t)(r)])

/* ---------------------------------------------------------------- AVX-512 */

#define MR512 12

/* mr rows (<= MR512) x np panels (1 or 2), x packed or direct: compile-time constants. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile512(float *y, const float *xp, size_t xs, int direct, const float *P0, size_t pstride, const float *b, int mr,
        int np, int kc, int N, int n0, int nv, int first, const float *init, int last, rk_epilogue ep,
        const float *x0, const float *xl) {
    __m512 c[MR512][2];
    const float *P1 = P0 + pstride;
    for (int q = 0; q < np; q++) {
        __mmask16 mk = q == np - 1 ? (__mmask16)((1u << nv) - 1u) : (__mmask16)0xffff;
        for (int r = 0; r < mr; r++)
            c[r][q] = !first ? _mm512_maskz_loadu_ps(mk, y + (size_t)r * N + n0 + q * NR)
                      : init ? _mm512_maskz_loadu_ps(mk, init + n0 + q * NR)
                             : _mm512_setzero_ps();
    }
    for (int k = 0; k < kc; k++) {
        __m512 w0 = _mm512_loadu_ps(P0 + (size_t)k * NR);
        __m512 w1 = np > 1 ? _mm512_loadu_ps(P1 + (size_t)k * NR) : w0;
        for (int r = 0; r < mr; r++) {
            __m512 a = _mm512_set1_ps(XAT(MR512, k, r));
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
            __m512 u = c[r][q];
            if (last) {
                u = _mm512_add_ps(u, bias);
                if (ep == RK_EPI_BIAS_RELU) u = _mm512_max_ps(_mm512_setzero_ps(), u); /* NaN passes through */
                else if (ep == RK_EPI_CROSS)
                    u = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, x0 + o), u, _mm512_maskz_loadu_ps(mk, xl + o));
            }
            _mm512_mask_storeu_ps(y + o, mk, u);
        }
    }
}

#define RK_TILE512(R, NP, D)                                                                                   \
    __attribute__((target("avx512f"))) static void tile512_##R##_##NP##_##D(                                   \
        float *y, const float *xp, size_t xs, const float *P, size_t ps, const float *b, int kc, int N, int n0, \
        int nv, int first, const float *init, int last, rk_epilogue ep, const float *x0, const float *xl) {    \
        tile512(y, xp, xs, D, P, ps, b, R, NP, kc, N, n0, nv, first, init, last, ep, x0, xl);                  \
    }
#define RK_TILE512_BOTH(R) RK_TILE512(R, 1, 0) RK_TILE512(R, 2, 0) RK_TILE512(R, 1, 1) RK_TILE512(R, 2, 1)
RK_TILE512_BOTH(1)
RK_TILE512_BOTH(2)
RK_TILE512_BOTH(3)
RK_TILE512_BOTH(4)
RK_TILE512_BOTH(5)
RK_TILE512_BOTH(6)
RK_TILE512_BOTH(7)
RK_TILE512_BOTH(8)
RK_TILE512_BOTH(9)
RK_TILE512_BOTH(10)
RK_TILE512_BOTH(11)
RK_TILE512_BOTH(12)
/* [panels - 1][direct][rows] */
static const tile_fn tile512_of[2][2][MR512 + 1] = {
    {{NULL, tile512_1_1_0, tile512_2_1_0, tile512_3_1_0, tile512_4_1_0, tile512_5_1_0, tile512_6_1_0,
      tile512_7_1_0, tile512_8_1_0, tile512_9_1_0, tile512_10_1_0, tile512_11_1_0, tile512_12_1_0},
     {NULL, tile512_1_1_1, tile512_2_1_1, tile512_3_1_1, tile512_4_1_1, tile512_5_1_1, tile512_6_1_1,
      tile512_7_1_1, tile512_8_1_1, tile512_9_1_1, tile512_10_1_1, tile512_11_1_1, tile512_12_1_1}},
    {{NULL, tile512_1_2_0, tile512_2_2_0, tile512_3_2_0, tile512_4_2_0, tile512_5_2_0, tile512_6_2_0,
      tile512_7_2_0, tile512_8_2_0, tile512_9_2_0, tile512_10_2_0, tile512_11_2_0, tile512_12_2_0},
     {NULL, tile512_1_2_1, tile512_2_2_1, tile512_3_2_1, tile512_4_2_1, tile512_5_2_1, tile512_6_2_1,
      tile512_7_2_1, tile512_8_2_1, tile512_9_2_1, tile512_10_2_1, tile512_11_2_1, tile512_12_2_1}}};

/* ---------------------------------------------------------------- AVX2 + FMA */

#define MR256 6

/* mr rows (<= MR256) x one panel (two 8-wide halves), x packed or direct. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile256(float *y, const float *xp, size_t xs, int direct, const float *P, const float *b, int mr, int kc, int N, int n0,
        int nv, int first, const float *init, int last, rk_epilogue ep, const float *x0, const float *xl) {
    __m256 c[MR256][2];
    float t[NR];
    for (int r = 0; r < mr; r++) {
        if (first && !init) {
            c[r][0] = c[r][1] = _mm256_setzero_ps();
            continue;
        }
        memset(t, 0, sizeof t);
        memcpy(t, first ? init + n0 : y + (size_t)r * N + n0, (size_t)nv * sizeof *t);
        c[r][0] = _mm256_loadu_ps(t);
        c[r][1] = _mm256_loadu_ps(t + 8);
    }
#pragma GCC unroll 4 /* the large tower +1 % on Zen 4 (bench/RESULTS.md, stop 20) */
    for (int k = 0; k < kc; k++) {
        __m256 w0 = _mm256_loadu_ps(P + (size_t)k * NR), w1 = _mm256_loadu_ps(P + (size_t)k * NR + 8);
        for (int r = 0; r < mr; r++) {
            /* set1 of a value, not _mm256_broadcast_ss(pointer): with that
             * builtin GCC 12 stored all 12 sums to the stack on every k
             * (no store motion past it), a third of the FMA peak */
            __m256 a = _mm256_set1_ps(XAT(MR256, k, r));
            c[r][0] = _mm256_fmadd_ps(a, w0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, w1, c[r][1]);
        }
    }
    float bias[NR] = {0};
    if (b) memcpy(bias, b + n0, (size_t)nv * sizeof *bias);
    for (int r = 0; r < mr; r++) {
        size_t o = (size_t)r * N + n0;
        if (nv == NR) {
            for (int h = 0; h < 2; h++) {
                __m256 u = c[r][h];
                if (last) {
                    u = _mm256_add_ps(u, _mm256_loadu_ps(bias + 8 * h));
                    if (ep == RK_EPI_BIAS_RELU) u = _mm256_max_ps(_mm256_setzero_ps(), u);
                    else if (ep == RK_EPI_CROSS)
                        u = _mm256_fmadd_ps(_mm256_loadu_ps(x0 + o + 8 * h), u, _mm256_loadu_ps(xl + o + 8 * h));
                }
                _mm256_storeu_ps(y + o + 8 * h, u);
            }
            continue;
        }
        /* a partial last panel: through a small buffer, the same arithmetic */
        _mm256_storeu_ps(t, c[r][0]);
        _mm256_storeu_ps(t + 8, c[r][1]);
        for (int j = 0; j < nv; j++)
            y[o + j] = !last ? t[j] : epi1(t[j], bias[j], ep, ep == RK_EPI_CROSS ? x0[o + j] : 0.0f,
                                            ep == RK_EPI_CROSS ? xl[o + j] : 0.0f);
    }
}

#define RK_TILE256(R, D)                                                                                       \
    __attribute__((target("avx2,fma"))) static void tile256_##R##_##D(                                         \
        float *y, const float *xp, size_t xs, const float *P, size_t ps, const float *b, int kc, int N, int n0, \
        int nv, int first, const float *init, int last, rk_epilogue ep, const float *x0, const float *xl) {    \
        (void)ps;                                                                                              \
        tile256(y, xp, xs, D, P, b, R, kc, N, n0, nv, first, init, last, ep, x0, xl);                          \
    }
#define RK_TILE256_BOTH(R) RK_TILE256(R, 0) RK_TILE256(R, 1)
RK_TILE256_BOTH(1)
RK_TILE256_BOTH(2)
RK_TILE256_BOTH(3)
RK_TILE256_BOTH(4)
RK_TILE256_BOTH(5)
RK_TILE256_BOTH(6)
/* [direct][rows] */
static const tile_fn tile256_of[2][MR256 + 1] = {
    {NULL, tile256_1_0, tile256_2_0, tile256_3_0, tile256_4_0, tile256_5_0, tile256_6_0},
    {NULL, tile256_1_1, tile256_2_1, tile256_3_1, tile256_4_1, tile256_5_1, tile256_6_1}};

/* Copy rows [i0, i1) x columns [k0, k0 + kc) of x into xbuf as tiles of mr
 * rows interleaved by k (rows past i1 in the last tile are zero). */
static void pack_x(const float *x, int K, int i0, int i1, int k0, int kc, int mr) {
    for (int t = 0; i0 + t * mr < i1; t++) {
        float *d = xbuf + (size_t)t * mr * kc;
        for (int r = 0; r < mr; r++) {
            int i = i0 + t * mr + r;
            if (i >= i1) {
                for (int k = 0; k < kc; k++) d[(size_t)k * mr + r] = 0.0f;
                continue;
            }
            const float *s = x + (size_t)i * K + k0;
            for (int k = 0; k < kc; k++) d[(size_t)k * mr + r] = s[k];
        }
    }
}

/* 1 when mr rows K floats apart start at least a cache line apart mod
 * 4096, i.e. in different L1 sets (set = address bits 6-11): the kernels
 * may then read them in place. Sufficient, not necessary (a set holds 8-12
 * lines), and it never picks a conflicting shape. */
static int rows_spread(int K, int mr) {
    const size_t S = (size_t)K * sizeof(float);
    for (int a = 1; a < mr; a++) { /* row pairs (r, r + a): their offset is a * S */
        size_t d = (size_t)a * S % 4096;
        if (d < 64 || d > 4096 - 64) return 0;
    }
    return 1;
}

/* The blocked loops around a tile kernel over inputs k in [kb, ke) (kb < ke):
 * K chunks, row blocks, panels (in pairs when of2), tiles. of1[r] / of2[r]:
 * the kernel of r rows x 1 / 2 panels, taking x packed or, when direct
 * (rows_spread(K, mr)), in place. Sums start from init (see tile_fn); raw:
 * leave the sums in y, no epilogue. */
static void gemm_tiles(const tile_fn *of1, const tile_fn *of2, int mr, int direct, float *y, const float *x,
                       const float *Wp, const float *b, int M, int K, int N, rk_epilogue ep, const float *x0,
                       const float *xl, int kb, int ke, const float *init, int raw) {
    const int np = (N + NR - 1) / NR, step = of2 ? 2 : 1;
    const size_t pstride = (size_t)NR * K;
    for (int k0 = kb; k0 < ke; k0 += KC) {
        int kc = ke - k0 < KC ? ke - k0 : KC, first = k0 == kb, last = !raw && k0 + kc == ke;
        int mc = XBUF_FLOATS / (kc * mr) * mr; /* rows of a block, in L2 in either mode */
        for (int i0 = 0; i0 < M; i0 += mc) {
            int i1 = M - i0 < mc ? M : i0 + mc;
            if (!direct) pack_x(x, K, i0, i1, k0, kc, mr);
            for (int p = 0; p < np; p += step) {
                int two = step == 2 && p + 1 < np, n0 = p * NR;
                int nv = N - (p + two) * NR;
                nv = nv > NR ? NR : nv;
                const float *P = Wp + (size_t)p * pstride + (size_t)k0 * NR;
                for (int i = i0; i < i1; i += mr) {
                    int r = i1 - i < mr ? i1 - i : mr;
                    size_t o = (size_t)i * N;
                    const float *xp = direct ? x + (size_t)i * K + k0 : xbuf + (size_t)(i - i0) * kc;
                    (two ? of2 : of1)[r](y + o, xp, direct ? (size_t)K : 0, P, pstride, b, kc, N, n0, nv, first, init,
                                         last, ep, x0 ? x0 + o : NULL, xl ? xl + o : NULL);
                }
            }
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

/* Read and written atomically: worker threads may all make the first call
 * at once (they all store the same detected value). */
rk_gemm_kernel rk_gemm_kernel_get(void) {
    rk_gemm_kernel k = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
    if (k == RK_GEMM_AUTO) {
        k = detect();
        __atomic_store_n(&chosen, k, __ATOMIC_RELAXED);
    }
    return k;
}

int rk_gemm_kernel_set(rk_gemm_kernel k) {
    rk_gemm_kernel best = detect();
    if (k == RK_GEMM_AUTO) k = best;
    if (k > best) return -1; /* the CPU lacks it */
    __atomic_store_n(&chosen, k, __ATOMIC_RELAXED);
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

/* Inputs [kb, ke) of every row, sums from init (NULL: 0); raw: no epilogue. */
static void gemm_range(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N, rk_epilogue ep,
                       const float *x0, const float *xl, int kb, int ke, const float *init, int raw) {
    if (M <= 0 || N <= 0) return;
    if (kb >= ke) { /* no products: the epilogue of the starting sums */
        for (int i = 0; i < M; i++)
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)i * N + n;
                float acc = init ? init[n] : 0.0f;
                y[o] = raw ? acc : epi1(acc, b ? b[n] : 0.0f, ep, x0 ? x0[o] : 0.0f, xl ? xl[o] : 0.0f);
            }
        return;
    }
    switch (rk_gemm_kernel_get()) {
#ifdef RK_GEMM_X86
    case RK_GEMM_AVX512: {
        const int d = rows_spread(K, MR512);
        gemm_tiles(tile512_of[0][d], tile512_of[1][d], MR512, d, y, x, Wp, b, M, K, N, ep, x0, xl, kb, ke, init, raw);
        return;
    }
    case RK_GEMM_AVX2: {
        const int d = rows_spread(K, MR256);
        gemm_tiles(tile256_of[d], NULL, MR256, d, y, x, Wp, b, M, K, N, ep, x0, xl, kb, ke, init, raw);
        return;
    }
#endif
    default: gemm_plain(y, x, Wp, b, M, K, N, ep, x0, xl, kb, ke, init, raw); return;
    }
}

void rk_gemm_forward(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                     rk_epilogue ep, const float *x0, const float *xl) {
    gemm_range(y, x, Wp, b, M, K, N, ep, x0, xl, 0, K, NULL, 0);
}

void rk_gemm_prefix_sums(float *s, const float *x, const float *Wp, int K, int N, int k1) {
    gemm_range(s, x, Wp, NULL, 1, K, N, RK_EPI_BIAS, NULL, NULL, 0, k1 < K ? k1 : K, NULL, 1);
}

void rk_gemm_forward_from(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                          rk_epilogue ep, const float *x0, const float *xl, int k1, const float *s) {
    gemm_range(y, x, Wp, b, M, K, N, ep, x0, xl, k1 < K ? k1 : K, K, s, 0);
}
