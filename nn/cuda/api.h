/*
 * nn/cuda/api.h — the table of entry points that librankd_cuda.so exports,
 * private to nn/ (nn/device.c loads it; nn/cuda/ops.cu fills it).
 *
 * The CUDA backend is its own shared library, opened with dlopen only when
 * a caller asks for a device (rk_device_open), so a CPU run never maps
 * cudart or cuBLAS (linking them costs ~200 MB of RSS at start-up,
 * c-stack.md §7). The library exports one symbol, rk_cuda_api_v1, of this
 * type; the loader checks .version before using anything else.
 *
 * Conventions: every pointer an op takes is DEVICE memory, row-major
 * float32 as in nn.h, and each op has exactly the semantics of the CPU op
 * of the same name in nn.h. Ops are queued on the context's one stream and
 * return nothing; a launch or kernel error is reported by the next sync
 * (or copy), which writes cudaGetErrorName + cudaGetErrorString into msg.
 * Functions returning int return 0 on success.
 */
#ifndef RK_NN_CUDA_API_H
#define RK_NN_CUDA_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RK_CUDA_API_VERSION 1

typedef struct rk_cuda_ctx rk_cuda_ctx;

typedef struct {
    int version; /* RK_CUDA_API_VERSION */
    /* Select device `device`, create a stream and a cuBLAS handle. On failure
     * msg names the CUDA call and error (e.g. "cudaGetDeviceCount:
     * cudaErrorInsufficientDriver: CUDA driver version is insufficient ..."). */
    int (*open)(int device, rk_cuda_ctx **out, char *msg, size_t cap);
    void (*close)(rk_cuda_ctx *c);
    /* "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB" */
    void (*describe)(const rk_cuda_ctx *c, char *buf, size_t cap);
    int (*alloc)(rk_cuda_ctx *c, void **p, size_t bytes, char *msg, size_t cap);
    void (*free)(rk_cuda_ctx *c, void *p);
    /* Pinned host memory, for staging (cudaMallocHost). */
    int (*alloc_host)(rk_cuda_ctx *c, void **p, size_t bytes, char *msg, size_t cap);
    void (*free_host)(rk_cuda_ctx *c, void *p);
    /* Copies on the stream; upload/download return when the copy is queued
     * (upload from pinned memory is asynchronous; from pageable memory the
     * driver stages it). Call sync before reading a download. */
    int (*upload)(rk_cuda_ctx *c, void *dst, const void *src, size_t bytes, char *msg, size_t cap);
    int (*download)(rk_cuda_ctx *c, void *dst, const void *src, size_t bytes, char *msg, size_t cap);
    int (*sync)(rk_cuda_ctx *c, char *msg, size_t cap);

    /* ---- ops (nn.h semantics; relu = 1 fuses ReLU into the bias epilogue) */
    void (*linear_forward)(rk_cuda_ctx *c, float *y, const float *x, const float *W, const float *b, int B,
                           int in, int out, int relu);
    void (*cross_forward)(rk_cuda_ctx *c, float *xout, float *u, const float *x0, const float *xl, const float *W,
                          const float *b, int B, int D);
    void (*relu_forward)(rk_cuda_ctx *c, float *y, const float *x, size_t n);
    void (*sigmoid_forward)(rk_cuda_ctx *c, float *y, const float *x, size_t n);
    void (*embedding_bag_forward)(rk_cuda_ctx *c, float *out, size_t out_stride, const float *table,
                                  const uint32_t *offsets, const uint64_t *idx, int B, int d, int mean);
    void (*fm_forward)(rk_cuda_ctx *c, float *y, const float *x, size_t stride, const int *cols, int n_fields,
                       int k, int B);
    void (*layernorm_forward)(rk_cuda_ctx *c, float *y, const float *x, const float *res, const float *gamma,
                              const float *beta, int N, int D, float eps);
    void (*gelu_forward)(rk_cuda_ctx *c, float *y, const float *x, size_t n);
    void (*softmax_masked_forward)(rk_cuda_ctx *c, float *y, const float *x, const uint8_t *mask, int rows,
                                   int cols, float scale);
    /* offsets: device int32 [n_seq + 1]; T = tokens; max_len bounds every
     * sequence's length (sizes the kernel's shared memory). */
    void (*attention_forward)(rk_cuda_ctx *c, float *out, const float *qkv, const int32_t *offsets, int n_seq,
                              int T, int n_heads, int head_dim, int max_len);
    void (*mean_pool_forward)(rk_cuda_ctx *c, float *out, const float *x, const int32_t *offsets, int n_seq,
                              int D);
    void (*l2_normalize)(rk_cuda_ctx *c, float *x, int N, int D, float eps);
} rk_cuda_api;

#ifdef __cplusplus
}
#endif

#endif /* RK_NN_CUDA_API_H */
