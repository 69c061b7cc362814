/*
 * nn/device.c — the loader and dispatcher of nn/'s CUDA backend.
 *
 * librankd_cuda.so (nn/cuda/ops.cu) is opened with dlopen on the first
 * rk_device_open and never linked, so the CPU build and every CPU run pay
 * nothing for CUDA (no cudart/cuBLAS mapped; c-stack.md §7). The library
 * exports one table, rk_cuda_api_v1 (nn/cuda/api.h), whose version must
 * equal the one this file was built with. The handle stays loaded for the
 * life of the process (dlclose of cudart is unsafe while its atexit
 * handlers are registered).
 *
 * rk_dev_* functions forward to the table; they check nothing the CPU ops
 * do not (shapes are the caller's), so a dispatch costs one indirect call.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda/api.h"
#include "nn.h"

struct rk_device {
    const rk_cuda_api *api;
    rk_cuda_ctx *ctx;
    char desc[160];
};

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static const rk_cuda_api *loaded_api;

/* <dir of /proc/self/exe>/../lib/librankd_cuda.so into buf; 0 if unknown. */
static int exe_relative_path(char *buf, size_t cap) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return 0;
    *slash = '\0';
    return snprintf(buf, cap, "%s/../lib/librankd_cuda.so", exe) < (int)cap;
}

/* Load the library once (under load_mu); the table or NULL with err set. */
static const rk_cuda_api *load_api(rk_err *err) {
    pthread_mutex_lock(&load_mu);
    const rk_cuda_api *api = loaded_api;
    char tried[3][PATH_MAX], why[3][200];
    int n = 0;
    const char *env = getenv("RK_CUDA_LIBRARY");
    if (env && *env) snprintf(tried[n++], PATH_MAX, "%s", env);
    if (exe_relative_path(tried[n], PATH_MAX)) n++;
    snprintf(tried[n++], PATH_MAX, "librankd_cuda.so");
    for (int i = 0; !api && i < n; i++) {
        void *h = dlopen(tried[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *e = dlerror();
            snprintf(why[i], sizeof why[i], "%s", e ? e : "dlopen failed");
            continue;
        }
        const rk_cuda_api *a = (const rk_cuda_api *)dlsym(h, "rk_cuda_api_v1");
        if (!a || a->version != RK_CUDA_API_VERSION) {
            snprintf(why[i], sizeof why[i], "%s: %s", tried[i],
                     a ? "built for another API version (rebuild rankd and the CUDA library together)"
                       : "no rk_cuda_api_v1 symbol");
            dlclose(h);
            continue;
        }
        api = loaded_api = a;
    }
    pthread_mutex_unlock(&load_mu);
    if (!api)
        rk_fail(err, RK_ENOTFOUND,
                "CUDA backend library not loaded (set RK_CUDA_LIBRARY, or build with nvcc present): %s%s%s",
                why[0], n > 1 ? "; " : "", n > 1 ? why[n - 1] : "");
    return api;
}

/* "cuda" -> 0, "cuda:N" -> N; -1 for anything else. */
static int parse_spec(const char *spec) {
    if (!spec || strncmp(spec, "cuda", 4) != 0) return -1;
    if (spec[4] == '\0') return 0;
    if (spec[4] != ':' || spec[5] < '0' || spec[5] > '9') return -1;
    char *end = NULL;
    long v = strtol(spec + 5, &end, 10);
    return (*end == '\0' && v >= 0 && v < 1024) ? (int)v : -1;
}

rk_status rk_device_open(const char *spec, rk_device **out, rk_err *err) {
    *out = NULL;
    if (spec && !strcmp(spec, "cpu")) return RK_OK;
    if (spec && !strcmp(spec, "auto")) {
        rk_err why = {0};
        if (rk_device_open("cuda:0", out, &why) == RK_OK) return RK_OK;
        rk_info("device auto: no usable GPU (%s); using the CPU", why.msg);
        return RK_OK;
    }
    int index = parse_spec(spec);
    if (index < 0)
        return rk_fail(err, RK_EINVAL, "device '%s': expected cpu, auto, cuda or cuda:N", spec ? spec : "(null)");
    const rk_cuda_api *api = load_api(err);
    if (!api) return RK_ENOTFOUND;
    rk_device *d = rk_malloc(sizeof *d);
    if (!d) return rk_fail(err, RK_ENOMEM, "device '%s': out of memory", spec);
    char msg[256] = "";
    d->api = api;
    if (api->open(index, &d->ctx, msg, sizeof msg)) {
        rk_free(d);
        return rk_fail(err, RK_EIO, "device '%s': %s", spec, msg);
    }
    api->describe(d->ctx, d->desc, sizeof d->desc);
    *out = d;
    return RK_OK;
}

void rk_device_close(rk_device *d) {
    if (!d) return;
    d->api->close(d->ctx);
    rk_free(d);
}

const char *rk_device_describe(const rk_device *d) { return d->desc; }

/* The table's int-returning calls: 0 or a CUDA message -> RK_EIO. */
static rk_status io_status(int rc, const char *msg, rk_err *err) {
    return rc ? rk_fail(err, RK_EIO, "%s", msg) : RK_OK;
}

rk_status rk_device_alloc(rk_device *d, size_t bytes, void **out, rk_err *err) {
    char msg[256] = "";
    return io_status(d->api->alloc(d->ctx, out, bytes, msg, sizeof msg), msg, err);
}
void rk_device_free(rk_device *d, void *p) { d->api->free(d->ctx, p); }

rk_status rk_device_alloc_host(rk_device *d, size_t bytes, void **out, rk_err *err) {
    char msg[256] = "";
    return io_status(d->api->alloc_host(d->ctx, out, bytes, msg, sizeof msg), msg, err);
}
void rk_device_free_host(rk_device *d, void *p) { d->api->free_host(d->ctx, p); }

rk_status rk_device_upload(rk_device *d, void *dst, const void *src, size_t bytes, rk_err *err) {
    char msg[256] = "";
    return io_status(d->api->upload(d->ctx, dst, src, bytes, msg, sizeof msg), msg, err);
}
rk_status rk_device_download(rk_device *d, void *dst, const void *src, size_t bytes, rk_err *err) {
    char msg[256] = "";
    return io_status(d->api->download(d->ctx, dst, src, bytes, msg, sizeof msg), msg, err);
}
rk_status rk_device_sync(rk_device *d, rk_err *err) {
    char msg[256] = "";
    return io_status(d->api->sync(d->ctx, msg, sizeof msg), msg, err);
}

/* ---------------------------------------------------------------- ops */

void rk_dev_linear_forward(rk_device *d, float *y, const float *x, const float *W, const float *b, int B, int in,
                           int out, int relu) {
    d->api->linear_forward(d->ctx, y, x, W, b, B, in, out, relu);
}
void rk_dev_cross_forward(rk_device *d, float *xout, float *u, const float *x0, const float *xl, const float *W,
                          const float *b, int B, int D) {
    d->api->cross_forward(d->ctx, xout, u, x0, xl, W, b, B, D);
}
void rk_dev_relu_forward(rk_device *d, float *y, const float *x, size_t n) { d->api->relu_forward(d->ctx, y, x, n); }
void rk_dev_sigmoid_forward(rk_device *d, float *y, const float *x, size_t n) {
    d->api->sigmoid_forward(d->ctx, y, x, n);
}
void rk_dev_embedding_bag_forward(rk_device *d, float *out, size_t out_stride, const float *table,
                                  const uint32_t *offsets, const uint64_t *idx, int B, int dim, rk_bag_mode mode) {
    d->api->embedding_bag_forward(d->ctx, out, out_stride, table, offsets, idx, B, dim, mode == RK_BAG_MEAN);
}
void rk_dev_fm_forward(rk_device *d, float *y, const float *x, size_t stride, const int *cols, int n_fields, int k,
                       int B) {
    d->api->fm_forward(d->ctx, y, x, stride, cols, n_fields, k, B);
}
void rk_dev_layernorm_forward(rk_device *d, float *y, const float *x, const float *res, const float *gamma,
                              const float *beta, int N, int D, float eps) {
    d->api->layernorm_forward(d->ctx, y, x, res, gamma, beta, N, D, eps);
}
void rk_dev_gelu_forward(rk_device *d, float *y, const float *x, size_t n) { d->api->gelu_forward(d->ctx, y, x, n); }
void rk_dev_softmax_masked_forward(rk_device *d, float *y, const float *x, const uint8_t *mask, int rows, int cols,
                                   float scale) {
    d->api->softmax_masked_forward(d->ctx, y, x, mask, rows, cols, scale);
}
void rk_dev_attention_forward(rk_device *d, float *out, const float *qkv, const int32_t *offsets, int n_seq, int T,
                              int n_heads, int head_dim, int max_len) {
    d->api->attention_forward(d->ctx, out, qkv, offsets, n_seq, T, n_heads, head_dim, max_len);
}
void rk_dev_mean_pool_forward(rk_device *d, float *out, const float *x, const int32_t *offsets, int n_seq, int D) {
    d->api->mean_pool_forward(d->ctx, out, x, offsets, n_seq, D);
}
void rk_dev_l2_normalize(rk_device *d, float *x, int N, int D, float eps) { d->api->l2_normalize(d->ctx, x, N, D, eps); }
