/*
 * nn/cuda/ops.cu — the CUDA backend of nn/: the forward ops of nn.h on an
 * NVIDIA GPU, built into its own shared library (librankd_cuda.so) that
 * nn/device.c opens with dlopen only when a caller asks for a device.
 *
 * How it works:
 *   - One context per caller (rk_cuda_ctx): a device index, one stream, one
 *     cuBLAS handle bound to that stream. Every op is queued on the stream
 *     and returns at once; errors surface at the next sync or copy.
 *   - Matrix products go through cuBLAS (cublasSgemm, plain fp32: the math
 *     mode is set to CUBLAS_PEDANTIC_MATH so no TF32 tensor-core rounding
 *     can creep in and the result stays within 1e-5 of OpenBLAS). Row-major
 *     y[B,out] = x[B,in] W[out,in]^T is, in cuBLAS's column-major view,
 *     y^T[out,B] = W (as [in,out]^T) x^T: sgemm(T, N, out, B, in).
 *   - Everything else is our own kernels with the CPU op's arithmetic:
 *     embedding bags sum rows in index order, LayerNorm and the FM term
 *     accumulate in double, softmax subtracts the row max, GELU uses erff.
 *   - Attention over packed sequences: one block per (query token, head);
 *     the block finds its sequence by binary search in offsets, computes
 *     the scores against the sequence's keys into shared memory, the
 *     softmax, then the weighted sum of values. Shared memory: max_len
 *     floats.
 *
 * The only exported symbol is rk_cuda_api_v1 (nn/cuda/api.h).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

struct rk_cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudaDeviceProp prop;
};

static int cuda_fail(cudaError_t e, const char *what, char *msg, size_t cap) {
    if (e == cudaSuccess) return 0;
    if (msg && cap) snprintf(msg, cap, "%s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
    (void)cudaGetLastError(); /* clear a sticky-free error so the next call starts clean */
    return -1;
}

static int blas_fail(cublasStatus_t s, const char *what, char *msg, size_t cap) {
    if (s == CUBLAS_STATUS_SUCCESS) return 0;
    if (msg && cap) snprintf(msg, cap, "%s: cuBLAS status %d", what, (int)s);
    return -1;
}

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 32u ? 65535u * 32u : (b ? b : 1));
}

/* ---------------------------------------------------------------- context */

static int ctx_open(int device, rk_cuda_ctx **out, char *msg, size_t cap) {
    *out = NULL;
    int n = 0;
    if (cuda_fail(cudaGetDeviceCount(&n), "cudaGetDeviceCount", msg, cap)) return -1;
    if (device < 0 || device >= n) {
        snprintf(msg, cap, "cuda:%d: no such device (%d CUDA device%s found)", device, n, n == 1 ? "" : "s");
        return -1;
    }
    rk_cuda_ctx *c = (rk_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(msg, cap, "out of host memory");
        return -1;
    }
    c->device = device;
    int rc = -1;
    if (cuda_fail(cudaSetDevice(device), "cudaSetDevice", msg, cap)) goto done;
    if (cuda_fail(cudaGetDeviceProperties(&c->prop, device), "cudaGetDeviceProperties", msg, cap)) goto done;
    if (cuda_fail(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate", msg, cap))
        goto done;
    if (blas_fail(cublasCreate(&c->blas), "cublasCreate", msg, cap)) goto done;
    if (blas_fail(cublasSetStream(c->blas, c->stream), "cublasSetStream", msg, cap)) goto done;
    if (blas_fail(cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode", msg, cap)) goto done;
    rc = 0;
done:
    if (rc) {
        if (c->blas) cublasDestroy(c->blas);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void ctx_close(rk_cuda_ctx *c) {
    if (!c) return;
    cudaSetDevice(c->device);
    cudaStreamSynchronize(c->stream);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c);
}

static void ctx_describe(const rk_cuda_ctx *c, char *buf, size_t cap) {
    snprintf(buf, cap, "cuda:%d %s, sm_%d%d, %d SMs, %.1f GiB", c->device, c->prop.name, c->prop.major,
             c->prop.minor, c->prop.multiProcessorCount, (double)c->prop.totalGlobalMem / (1024.0 * 1024 * 1024));
}

static int mem_alloc(rk_cuda_ctx *c, void **p, size_t bytes, char *msg, size_t cap) {
    (void)c;
    *p = NULL;
    return cuda_fail(cudaMalloc(p, bytes ? bytes : 1), "cudaMalloc", msg, cap);
}
static void mem_free(rk_cuda_ctx *c, void *p) {
    (void)c;
    if (p) cudaFree(p);
}
static int host_alloc(rk_cuda_ctx *c, void **p, size_t bytes, char *msg, size_t cap) {
    (void)c;
    *p = NULL;
    return cuda_fail(cudaMallocHost(p, bytes ? bytes : 1), "cudaMallocHost", msg, cap);
}
static void host_free(rk_cuda_ctx *c, void *p) {
    (void)c;
    if (p) cudaFreeHost(p);
}
static int upload(rk_cuda_ctx *c, void *dst, const void *src, size_t bytes, char *msg, size_t cap) {
    return cuda_fail(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpyAsync(H2D)",
                     msg, cap);
}
static int download(rk_cuda_ctx *c, void *dst, const void *src, size_t bytes, char *msg, size_t cap) {
    return cuda_fail(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "cudaMemcpyAsync(D2H)",
                     msg, cap);
}
static int sync_stream(rk_cuda_ctx *c, char *msg, size_t cap) {
    if (cuda_fail(cudaGetLastError(), "kernel launch", msg, cap)) return -1;
    return cuda_fail(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize", msg, cap);
}

/* ---------------------------------------------------------------- elementwise */

__global__ void k_bias_rows(float *y, const float *b, int B, int out, int relu) {
    size_t n = (size_t)B * out;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = y[i] + (b ? b[i % out] : 0.0f);
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

__global__ void k_relu(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = fmaxf(x[i], 0.0f);
}

/* Stable logistic, as rk_sigmoid: z >= 0 -> 1/(1+e^-z); else e^z/(1+e^z). */
__global__ void k_sigmoid(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float z = x[i];
        if (z >= 0.0f) {
            y[i] = 1.0f / (1.0f + expf(-z));
        } else {
            float e = expf(z);
            y[i] = e / (1.0f + e);
        }
    }
}

__global__ void k_gelu(float *y, const float *x, size_t n) {
    const float r = 0.70710678118654752440f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * r));
}

/* xout = x0 * u + xl (the DCNv2 cross layer's epilogue) */
__global__ void k_cross_epilogue(float *xout, const float *x0, const float *u, const float *xl, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        xout[i] = x0[i] * u[i] + xl[i];
}

static void op_relu(rk_cuda_ctx *c, float *y, const float *x, size_t n) {
    if (n) k_relu<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, x, n);
}
static void op_sigmoid(rk_cuda_ctx *c, float *y, const float *x, size_t n) {
    if (n) k_sigmoid<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, x, n);
}
static void op_gelu(rk_cuda_ctx *c, float *y, const float *x, size_t n) {
    if (n) k_gelu<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, x, n);
}

/* ---------------------------------------------------------------- linear, cross */

static void op_linear(rk_cuda_ctx *c, float *y, const float *x, const float *W, const float *b, int B, int in,
                      int out, int relu) {
    if (B <= 0 || out <= 0) return;
    size_t n = (size_t)B * out;
    if (in <= 0) {
        cudaMemsetAsync(y, 0, n * sizeof(float), c->stream);
    } else {
        const float one = 1.0f, zero = 0.0f;
        /* column-major: y^T[out,B] = op(W)[out,in] * x^T[in,B], W stored [in,out] col-major -> transpose */
        cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, B, in, &one, W, in, x, in, &zero, y, out);
    }
    if (b || relu) k_bias_rows<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, b, B, out, relu);
}

static void op_cross(rk_cuda_ctx *c, float *xout, float *u, const float *x0, const float *xl, const float *W,
                     const float *b, int B, int D) {
    if (B <= 0 || D <= 0) return;
    op_linear(c, u, xl, W, b, B, D, D, 0);
    size_t n = (size_t)B * D;
    k_cross_epilogue<<<blocks_for(n, 256), 256, 0, c->stream>>>(xout, x0, u, xl, n);
}

/* ---------------------------------------------------------------- embedding bag, FM */

/* One block per bag; threads over the columns; rows summed in index order. */
__global__ void k_embedding_bag(float *out, size_t out_stride, const float *table, const uint32_t *offsets,
                                const uint64_t *idx, int d, int mean) {
    int b = blockIdx.x;
    uint32_t k0 = offsets[b], k1 = offsets[b + 1];
    float *o = out + (size_t)b * out_stride;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float s = 0.0f;
        for (uint32_t k = k0; k < k1; k++) s += table[idx[k] * (size_t)d + j];
        if (mean && k1 > k0) s /= (float)(k1 - k0);
        o[j] = s;
    }
}

static void op_embedding_bag(rk_cuda_ctx *c, float *out, size_t out_stride, const float *table,
                             const uint32_t *offsets, const uint64_t *idx, int B, int d, int mean) {
    if (B <= 0 || d <= 0) return;
    unsigned t = d >= 128 ? 128 : (unsigned)((d + 31) / 32 * 32);
    k_embedding_bag<<<B, t, 0, c->stream>>>(out, out_stride, table, offsets, idx, d, mean);
}

/* One thread per row (the FM term is small: n_fields x k per row). */
__global__ void k_fm(float *y, const float *x, size_t stride, const int *cols, int n_fields, int k, int B) {
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float *row = x + (size_t)b * stride;
    double acc = 0;
    for (int j = 0; j < k; j++) {
        double s = 0, q = 0;
        for (int f = 0; f < n_fields; f++) {
            double e = row[cols[f] + j];
            s += e;
            q += e * e;
        }
        acc += s * s - q;
    }
    y[b] = (float)(0.5 * acc);
}

static void op_fm(rk_cuda_ctx *c, float *y, const float *x, size_t stride, const int *cols, int n_fields, int k,
                  int B) {
    if (B > 0) k_fm<<<(B + 127) / 128, 128, 0, c->stream>>>(y, x, stride, cols, n_fields, k, B);
}

/* ---------------------------------------------------------------- block reductions */

template <typename T> __device__ T block_sum(T v, T *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : (T)0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

__device__ float block_max(float v, float *sh) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : -INFINITY;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    return sh[0];
}

/* ---------------------------------------------------------------- LayerNorm, softmax, pooling */

/* One block per row; mean and variance in double, as the CPU op. */
__global__ void k_layernorm(float *y, const float *x, const float *res, const float *gamma, const float *beta, int D,
                            float eps) {
    __shared__ double shd[32];
    size_t r = blockIdx.x;
    const float *xr = x + r * D;
    const float *rr = res ? res + r * D : NULL;
    float *yr = y + r * D;
    double s = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        float z = rr ? xr[j] + rr[j] : xr[j];
        yr[j] = z;
        s += z;
    }
    double mean = block_sum<double>(s, shd) / D;
    double v = 0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double d = yr[j] - mean;
        v += d * d;
    }
    double var = block_sum<double>(v, shd);
    float inv = (float)(1.0 / sqrt(var / D + (double)eps)), m = (float)mean;
    for (int j = threadIdx.x; j < D; j += blockDim.x) yr[j] = (yr[j] - m) * inv * gamma[j] + beta[j];
}

static void op_layernorm(rk_cuda_ctx *c, float *y, const float *x, const float *res, const float *gamma,
                         const float *beta, int N, int D, float eps) {
    if (N > 0 && D > 0) k_layernorm<<<N, 128, 0, c->stream>>>(y, x, res, gamma, beta, D, eps);
}

__global__ void k_softmax(float *y, const float *x, const uint8_t *mask, int cols, float scale) {
    __shared__ float shf[32];
    size_t r = blockIdx.x;
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        if (!mask || mask[j]) m = fmaxf(m, scale * xr[j]);
    m = block_max(m, shf);
    if (m == -INFINITY) {
        for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = 0.0f;
        return;
    }
    float s = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float e = (!mask || mask[j]) ? expf(scale * xr[j] - m) : 0.0f;
        yr[j] = e;
        s += e;
    }
    float inv = 1.0f / block_sum<float>(s, shf);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] *= inv;
}

static void op_softmax(rk_cuda_ctx *c, float *y, const float *x, const uint8_t *mask, int rows, int cols,
                       float scale) {
    if (rows > 0 && cols > 0) k_softmax<<<rows, 128, 0, c->stream>>>(y, x, mask, cols, scale);
}

__device__ int seq_of(const int32_t *offsets, int n_seq, int t) {
    int lo = 0, hi = n_seq - 1; /* last s with offsets[s] <= t */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Block (t, h): query token t, head h. Shared: scores[max_len]. */
__global__ void k_attention(float *out, const float *qkv, const int32_t *offsets, int n_seq, int n_heads,
                            int head_dim) {
    extern __shared__ float sc[];
    __shared__ float shf[32];
    const int t = blockIdx.x, h = blockIdx.y, D = n_heads * head_dim, ld = 3 * D;
    const int s = seq_of(offsets, n_seq, t), t0 = offsets[s], L = offsets[s + 1] - t0;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const float *q = qkv + (size_t)t * ld + (size_t)h * head_dim;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        const float *k = qkv + (size_t)(t0 + j) * ld + D + (size_t)h * head_dim;
        float a = 0.0f;
        for (int e = 0; e < head_dim; e++) a += q[e] * k[e];
        sc[j] = a * scale;
    }
    float m = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) m = fmaxf(m, sc[j]);
    m = block_max(m, shf);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        float e = expf(sc[j] - m);
        sc[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum<float>(sum, shf); /* block_sum syncs: sc[] is complete */
    float *o = out + (size_t)t * D + (size_t)h * head_dim;
    for (int e = threadIdx.x; e < head_dim; e += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < L; j++) a += sc[j] * qkv[(size_t)(t0 + j) * ld + 2 * D + (size_t)h * head_dim + e];
        o[e] = a * inv;
    }
}

static void op_attention(rk_cuda_ctx *c, float *out, const float *qkv, const int32_t *offsets, int n_seq, int T,
                         int n_heads, int head_dim, int max_len) {
    if (T <= 0 || n_seq <= 0 || n_heads <= 0 || head_dim <= 0) return;
    dim3 grid((unsigned)T, (unsigned)n_heads);
    size_t shm = (size_t)(max_len > 0 ? max_len : 1) * sizeof(float);
    if (shm > 48 * 1024) /* past the default dynamic shared-memory limit */
        cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shm);
    k_attention<<<grid, 64, shm, c->stream>>>(out, qkv, offsets, n_seq, n_heads, head_dim);
}

/* One block per sequence, threads over columns; sums in double. */
__global__ void k_mean_pool(float *out, const float *x, const int32_t *offsets, int D) {
    int s = blockIdx.x, t0 = offsets[s], L = offsets[s + 1] - t0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        double sum = 0.0;
        for (int t = 0; t < L; t++) sum += x[(size_t)(t0 + t) * D + j];
        out[(size_t)s * D + j] = L > 0 ? (float)(sum / L) : 0.0f;
    }
}

static void op_mean_pool(rk_cuda_ctx *c, float *out, const float *x, const int32_t *offsets, int n_seq, int D) {
    if (n_seq > 0 && D > 0) k_mean_pool<<<n_seq, 128, 0, c->stream>>>(out, x, offsets, D);
}

__global__ void k_l2(float *x, int D, float eps) {
    __shared__ double shd[32];
    float *xr = x + (size_t)blockIdx.x * D;
    double ss = 0.0;
    for (int j = threadIdx.x; j < D; j += blockDim.x) ss += (double)xr[j] * xr[j];
    double nrm = sqrt(block_sum<double>(ss, shd));
    float inv = (float)(1.0 / (nrm > eps ? nrm : eps));
    for (int j = threadIdx.x; j < D; j += blockDim.x) xr[j] *= inv;
}

static void op_l2(rk_cuda_ctx *c, float *x, int N, int D, float eps) {
    if (N > 0 && D > 0) k_l2<<<N, 128, 0, c->stream>>>(x, D, eps);
}

/* ---------------------------------------------------------------- the table */

extern "C" __attribute__((visibility("default"))) const rk_cuda_api rk_cuda_api_v1 = {
    RK_CUDA_API_VERSION,
    ctx_open,
    ctx_close,
    ctx_describe,
    mem_alloc,
    mem_free,
    host_alloc,
    host_free,
    upload,
    download,
    sync_stream,
    op_linear,
    op_cross,
    op_relu,
    op_sigmoid,
    op_embedding_bag,
    op_fm,
    op_layernorm,
    op_gelu,
    op_softmax,
    op_attention,
    op_mean_pool,
    op_l2,
};
