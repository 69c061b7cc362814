/*
 * nn/nn.h — the whole interface of rankd's dense-math module.
 *
 * Layers with hand-written forward and backward passes in the llm.c style:
 * every function works on caller-owned row-major float32 buffers, never
 * allocates, and the backward functions ACCUMULATE (+=) into parameter
 * gradients so a caller can sum over several uses; input gradients are
 * written (=) unless documented otherwise. Matrix products use OpenBLAS
 * (cblas_sgemm). nn/ knows nothing of ranking.
 *
 * Shapes use B = batch rows. Weight layout follows PyTorch (nn.Linear stores
 * W as [out, in]) so dense.safetensors is readable by torch directly.
 */
#ifndef RK_NN_H
#define RK_NN_H

#include <stddef.h>
#include <stdint.h>

#include "core.h" /* rk_status, rk_err (the device backend's errors) */

/* ---------------------------------------------------------------- linear */

/* y[B,out] = x[B,in] · W[out,in]^T + b[out]   (b may be NULL). */
void rk_linear_forward(float *y, const float *x, const float *W, const float *b, int B, int in,
                       int out);

/* Backward of rk_linear_forward.
 * dx[B,in] = dy[B,out] · W            (written; skipped when dx == NULL)
 * dW[out,in] += dy^T · x              (accumulated)
 * db[out] += sum over rows of dy      (accumulated; skipped when db == NULL) */
void rk_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x,
                        const float *W, int B, int in, int out);

/* ---------------------------------------------------------------- activations */

/* y = max(x, 0), n elements; y may alias x. */
void rk_relu_forward(float *y, const float *x, size_t n);
/* dx = dy * (y > 0); dx may alias dy. y is the forward OUTPUT. */
void rk_relu_backward(float *dx, const float *dy, const float *y, size_t n);

/* Numerically stable logistic sigmoid of one value. */
float rk_sigmoid(float z);

/* ---------------------------------------------------------------- DCNv2 cross layer */

/* Cross layer of DCN-V2 (Wang et al. 2021, "DCN V2", eq. 1):
 *   x_{l+1} = x0 ⊙ (W x_l + b) + x_l
 * x0, xl, xout: [B,D]; W: [D,D] (PyTorch Linear layout, out x in); b: [D].
 * u[B,D] receives W x_l + b (kept for backward). xout must not alias x0/xl. */
void rk_cross_forward(float *xout, float *u, const float *x0, const float *xl, const float *W,
                      const float *b, int B, int D);

/* Backward of rk_cross_forward, given dxout[B,D]:
 *   dx0 += dxout ⊙ u                      (accumulated: x0 feeds every layer)
 *   du   = dxout ⊙ x0                      (into scratch[B,D])
 *   dxl  = dxout + du · W                  (written)
 *   dW  += du^T · xl ;  db += sum_rows du  (accumulated)
 * dxl may alias dxout. scratch: caller-owned [B,D] floats. */
void rk_cross_backward(float *dx0, float *dxl, float *dW, float *db, const float *dxout,
                       const float *x0, const float *xl, const float *u, const float *W, int B,
                       int D, float *scratch);

/* ---------------------------------------------------------------- embedding bag */

typedef enum { RK_BAG_SUM = 0, RK_BAG_MEAN = 1 } rk_bag_mode;

/* Embedding bag (as torch.nn.functional.embedding_bag with offsets):
 *   out[b, :] = reduce_{k in [offsets[b], offsets[b+1])} table[idx[k], :]
 * reduce = sum, or mean (sum / count). An empty bag gives a zero row.
 * out: [B,d] written with row stride out_stride (>= d) so bags can be
 * written straight into a concatenated feature row; table: [*, d];
 * offsets: [B+1]; idx: row indices into table. Rows are summed in index
 * order so the result is bit-identical wherever the same rows are given. */
void rk_embedding_bag_forward(float *out, size_t out_stride, const float *table,
                              const uint32_t *offsets, const uint64_t *idx, int B, int d,
                              rk_bag_mode mode);

/* Backward: dtable[idx[k], :] += dout[b, :] (/ count for mean).
 * dout read with row stride dout_stride; dtable: [*, d], accumulated. */
void rk_embedding_bag_backward(float *dtable, const float *dout, size_t dout_stride,
                               const uint32_t *offsets, const uint64_t *idx, int B, int d,
                               rk_bag_mode mode);

/* ---------------------------------------------------------------- loss */

/* Binary cross-entropy on logits, mean over B rows (torch's
 * binary_cross_entropy_with_logits, reduction='mean'):
 *   loss = mean( max(z,0) - z*y + log(1 + exp(-|z|)) )
 * Returns the loss in double; if dz != NULL writes dz[b] = (sigmoid(z)-y)/B. */
double rk_bce_logits(const float *z, const float *y, int B, float *dz);
/* One row of it: max(z,0) - z*t + log(1 + exp(-|z|)) for a logit z and a
 * (soft) target t in [0, 1]; stable for any finite z (log1p of a value <= 1).
 * Used by the CETNet collaborative loss and the ExFM losses. */
double rk_bce_logit(double z, double t);

/* ---------------------------------------------------------------- optimizers */

/* Adam (Kingma & Ba 2015, Algorithm 1; torch.optim.Adam, no weight decay).
 * t: 1-based step number. m, v: state arrays of n floats, zero-initialised.
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) */
void rk_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                  float b2, float eps, long t);

/* Adagrad (Duchi et al. 2011; torch.optim.Adagrad, lr_decay 0,
 * initial_accumulator_value 0) over selected rows of a [*, d] table:
 *   for each r in rows:  s[r] += g[r]^2 ;  p[r] -= lr * g[r] / (sqrt(s[r]) + eps)
 * rows must be distinct. Rows with g == 0 are unchanged, so updating only
 * the touched rows equals torch's dense update. */
void rk_adagrad_rows(float *p, const float *g, float *s, const uint64_t *rows, size_t n_rows,
                     int d, float lr, float eps);

/* ---------------------------------------------------------------- FM interaction */

/* Second-order factorization-machine term over n_fields field vectors of
 * width k (Rendle 2010, eq. 5; DeepFM, Guo et al. 2017, eq. 2):
 *   y[b] = 1/2 * sum_j ( (sum_f e_{f,j})^2 - sum_f e_{f,j}^2 )
 * Field f of row b starts at x[b*stride + cols[f]]. y: [B], written. */
void rk_fm_forward(float *y, const float *x, size_t stride, const int *cols, int n_fields, int k,
                   int B);
/* Backward: dx[b*stride + cols[f] + j] += dy[b] * (sum_g e_{g,j} - e_{f,j})
 * (accumulated). */
void rk_fm_backward(float *dx, const float *dy, const float *x, size_t stride, const int *cols,
                    int n_fields, int k, int B);

/* ---------------------------------------------------------------- transformer encoder (forward only)
 *
 * The ops of a BERT-style encoder (Vaswani et al. 2017, "Attention Is All You
 * Need"; Devlin et al. 2019, "BERT"), inference only. Like the layers above
 * they work on caller-owned row-major float32 buffers and never allocate;
 * each has a plain reference in tests/test_encoder.c. Sequences of a batch
 * are PACKED: the T = sum of lengths tokens lie back to back as rows of a
 * [T, D] matrix, and int32 offsets[n_seq + 1] (offsets[0] = 0, increasing)
 * say where sequence s starts and ends. This equals the padded [B, L, D]
 * layout with a key-padding mask for every real token, and spends no work on
 * padding. The same signatures are meant for a later CUDA backend. */

/* LayerNorm over the last dimension (Ba et al. 2016; torch layer_norm, biased
 * variance), optionally after a residual add:
 *   z = x[r,:] + res[r,:]   (res may be NULL: z = x[r,:])
 *   y[r,:] = (z - mean(z)) / sqrt(var(z) + eps) * gamma + beta
 * x, res, y: [N, D]; gamma, beta: [D]. y may alias x or res. Mean and
 * variance accumulate in double. */
void rk_layernorm_forward(float *y, const float *x, const float *res, const float *gamma, const float *beta,
                          int N, int D, float eps);

/* GELU, exact erf form (Hendrycks & Gimpel 2016, eq. 1; BERT's "gelu"):
 *   y = 0.5 x (1 + erf(x / sqrt 2)), n elements; y may alias x. */
void rk_gelu_forward(float *y, const float *x, size_t n);

/* Row softmax with a column mask:
 *   y[r,c] = exp(scale x[r,c] - m) / sum_{c': mask[c']} exp(scale x[r,c'] - m)  if mask[c]
 *   y[r,c] = 0                                                                  otherwise
 * m = the row's largest unmasked scale*x. mask: [cols] (nonzero = keep; NULL =
 * keep all), shared by every row: a key-padding mask. A row with no unmasked
 * column is all zeros. x, y: [rows, cols]; y may alias x. Equals torch
 * softmax with -inf added at masked columns (HF BERT adds finfo.min, which
 * gives the same probabilities whenever one column is unmasked). */
void rk_softmax_masked_forward(float *y, const float *x, const uint8_t *mask, int rows, int cols, float scale);

/* Floats of scratch rk_attention_forward needs for sequences up to max_len. */
size_t rk_attention_scratch_floats(int max_len);

/* Multi-head self-attention over packed sequences (Vaswani et al. 2017,
 * §3.2.2), per sequence s and head h:
 *   out_sh = softmax(Q_sh K_sh^T / sqrt(head_dim)) V_sh
 * qkv: [T, 3 D] with D = n_heads * head_dim; row t = [q | k | v] of token t
 * (as one fused Linear computes it), head h at columns h*head_dim.. of each
 * part. out: [T, D], heads concatenated (the input of the output
 * projection). Tokens attend only within their own sequence, which is BERT's
 * key-padding mask. Products by OpenBLAS sgemm on strided views (no
 * transposed copies). scratch: rk_attention_scratch_floats(longest) floats.
 * out must not alias qkv. */
void rk_attention_forward(float *out, const float *qkv, const int32_t *offsets, int n_seq, int n_heads,
                          int head_dim, float *scratch);

/* Mean over each packed sequence's rows (sentence-transformers' mean pooling
 * over the attention mask): out[s,:] = mean_{t in seq s} x[t,:]. x: [T, D],
 * out: [n_seq, D]; sums in double; an empty sequence gives zeros. */
void rk_mean_pool_forward(float *out, const float *x, const int32_t *offsets, int n_seq, int D);

/* Row-wise L2 normalization in place, as torch.nn.functional.normalize:
 * x[r,:] /= max(||x[r,:]||_2, eps). x: [N, D]. */
void rk_l2_normalize(float *x, int N, int D, float eps);

/* ---------------------------------------------------------------- inference GEMM (nn/gemm.c)
 *
 * y[M,N] = epilogue(x[M,K] · W^T + b) over weights packed once (W [N,K] in
 * PyTorch's Linear layout) by kernels picked from cpuid at run time: AVX-512,
 * AVX2+FMA, or plain C. Every kernel sums each output in the same order
 * (one fma chain over k = 0..K-1, then + b, then the epilogue), so results
 * are bit-identical across kernels, batch sizes and row positions, and equal
 * rk_gemm_forward_ref. Forward only (serving); training keeps
 * rk_linear_forward (OpenBLAS). */

typedef enum {
    RK_EPI_BIAS = 0,      /* y = xW^T + b */
    RK_EPI_BIAS_RELU = 1, /* y = max(xW^T + b, 0) (NaN passes through, as torch.relu) */
    RK_EPI_CROSS = 2      /* y = x0 ⊙ (xW^T + b) + xl: the DCN-V2 cross layer (N == K) */
} rk_epilogue;

typedef enum { RK_GEMM_AUTO = -1, RK_GEMM_PLAIN = 0, RK_GEMM_AVX2 = 1, RK_GEMM_AVX512 = 2 } rk_gemm_kernel;

/* Floats rk_gemm_pack writes for W [N,K] (0 when K or N <= 0). */
size_t rk_gemm_packed_floats(int K, int N);
/* Pack W [N,K] into dst[rk_gemm_packed_floats(K, N)] (panels of 16 outputs). */
void rk_gemm_pack(float *dst, const float *W, int N, int K);
/* y[M,N] = epilogue(x[M,K] · W^T + b) with Wp from rk_gemm_pack. b may be
 * NULL (zero). RK_EPI_CROSS reads x0, xl [M,N] (unused otherwise, may be
 * NULL). y must not alias x, x0 or xl. Never allocates. */
void rk_gemm_forward(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                     rk_epilogue ep, const float *x0, const float *xl);
/* Work once per request what every row shares. When rows agree on their
 * first k1 inputs (a request's user-side features come first in the tower
 * input), the partial sums over those inputs are the same for every row:
 * rk_gemm_prefix_sums computes them once, s[N] = x[0, 0:k1] · W[:, 0:k1]^T
 * (one row, no bias, no epilogue), and rk_gemm_forward_from resumes every
 * row's fma chain from s over inputs k1..K-1, then applies b and the
 * epilogue. Same order, so bit-identical to rk_gemm_forward for such rows. */
void rk_gemm_prefix_sums(float *s, const float *x, const float *Wp, int K, int N, int k1);
void rk_gemm_forward_from(float *y, const float *x, const float *Wp, const float *b, int M, int K, int N,
                          rk_epilogue ep, const float *x0, const float *xl, int k1, const float *s);
/* The same definition on the unpacked W [N,K], plain C loops (the reference). */
void rk_gemm_forward_ref(float *y, const float *x, const float *W, const float *b, int M, int K, int N,
                         rk_epilogue ep, const float *x0, const float *xl);
/* The kernel in use (detected on first use) and its name. */
rk_gemm_kernel rk_gemm_kernel_get(void);
const char *rk_gemm_kernel_name(rk_gemm_kernel k);
/* Use kernel k (RK_GEMM_AUTO: the best the CPU has); -1 when the CPU lacks
 * it. For tests and benchmarks; not thread-safe against running kernels. */
int rk_gemm_kernel_set(rk_gemm_kernel k);
/* ---------------------------------------------------------------- device backend (CUDA)
 *
 * The same forward ops on an NVIDIA GPU. The CUDA code is its own shared
 * library, librankd_cuda.so (nn/cuda/), built whenever nvcc is found and
 * opened with dlopen only by rk_device_open, so a CPU run never maps cudart
 * or cuBLAS. Where the library is looked for, in order: $RK_CUDA_LIBRARY
 * (a path), <dir of the executable>/../lib/librankd_cuda.so (the build tree
 * and an installed prefix), then the dynamic linker's search path.
 *
 * An rk_device is one GPU with one stream: not thread-safe; one per worker.
 * Every pointer the rk_dev_* ops take is device memory (rk_device_alloc),
 * with the semantics of the CPU op of the same name above; ops are queued
 * and return at once, and a failure of any of them is reported by the next
 * rk_device_sync / rk_device_download. Tolerances against the CPU ops
 * (tests/test_cuda.c): towers |gpu - cpu| <= 1e-5; encoder ops cosine >=
 * 0.99999. */
typedef struct rk_device rk_device;

/* spec: "cuda" (= "cuda:0") or "cuda:N": that GPU or an error; "cpu":
 * *out = NULL (the CPU ops), RK_OK; "auto": cuda:0 when it opens, else
 * *out = NULL and RK_OK with the reason logged at info level. Errors:
 * RK_EINVAL for another spec; RK_ENOTFOUND when librankd_cuda.so cannot be
 * loaded (the message says which paths were tried and dlerror()); RK_EIO
 * naming the CUDA error when no usable GPU answers (e.g. "cudaGetDeviceCount:
 * cudaErrorInsufficientDriver: ..." on a machine without a driver). A
 * "cuda" spec never falls back to the CPU silently. */
rk_status rk_device_open(const char *spec, rk_device **out, rk_err *err);
void rk_device_close(rk_device *d);
/* "cuda:0 NVIDIA H200, sm_90, 132 SMs, 139.8 GiB"; owned by d. */
const char *rk_device_describe(const rk_device *d);
/* Device memory (rk_device_free) and pinned host memory (rk_device_free_host). */
rk_status rk_device_alloc(rk_device *d, size_t bytes, void **out, rk_err *err);
void rk_device_free(rk_device *d, void *p);
rk_status rk_device_alloc_host(rk_device *d, size_t bytes, void **out, rk_err *err);
void rk_device_free_host(rk_device *d, void *p);
/* Queue a copy on d's stream; read a download only after rk_device_sync. */
rk_status rk_device_upload(rk_device *d, void *dst, const void *src, size_t bytes, rk_err *err);
rk_status rk_device_download(rk_device *d, void *dst, const void *src, size_t bytes, rk_err *err);
/* Wait for everything queued; reports the first launch or kernel error. */
rk_status rk_device_sync(rk_device *d, rk_err *err);

/* rk_linear_forward, with ReLU fused into the bias epilogue when relu != 0. */
void rk_dev_linear_forward(rk_device *d, float *y, const float *x, const float *W, const float *b, int B, int in,
                           int out, int relu);
void rk_dev_cross_forward(rk_device *d, float *xout, float *u, const float *x0, const float *xl, const float *W,
                          const float *b, int B, int D);
void rk_dev_relu_forward(rk_device *d, float *y, const float *x, size_t n);
/* y[i] = rk_sigmoid(x[i]) */
void rk_dev_sigmoid_forward(rk_device *d, float *y, const float *x, size_t n);
void rk_dev_embedding_bag_forward(rk_device *d, float *out, size_t out_stride, const float *table,
                                  const uint32_t *offsets, const uint64_t *idx, int B, int dim, rk_bag_mode mode);
void rk_dev_fm_forward(rk_device *d, float *y, const float *x, size_t stride, const int *cols, int n_fields, int k,
                       int B);
void rk_dev_layernorm_forward(rk_device *d, float *y, const float *x, const float *res, const float *gamma,
                              const float *beta, int N, int D, float eps);
void rk_dev_gelu_forward(rk_device *d, float *y, const float *x, size_t n);
void rk_dev_softmax_masked_forward(rk_device *d, float *y, const float *x, const uint8_t *mask, int rows, int cols,
                                   float scale);
/* T = offsets[n_seq] tokens (the caller knows it: offsets live on the
 * device); max_len >= every sequence's length. No scratch: the kernel keeps
 * a row of scores in shared memory. */
void rk_dev_attention_forward(rk_device *d, float *out, const float *qkv, const int32_t *offsets, int n_seq, int T,
                              int n_heads, int head_dim, int max_len);
void rk_dev_mean_pool_forward(rk_device *d, float *out, const float *x, const int32_t *offsets, int n_seq, int D);
void rk_dev_l2_normalize(rk_device *d, float *x, int N, int D, float eps);

/* ---------------------------------------------------------------- EmbSum: poly-attention and matching
 * (nn/poly.c; papers.md §4(b), §6.6). Plain buffers and shapes, ready for a
 * CUDA port; no allocation. */

/* Poly-attention: m codes C[m,dc] attend over n vectors H[n,d]:
 *   Z = tanh(H W_a) [n,dc];  A = softmax_rows(C Zᵀ) [m,n];  E = A H [m,d]
 * W_a: [d,dc] (columns = code space). E, A, Z are written; A and Z are kept
 * for the backward. n >= 1. */
void rk_poly_attention_forward(float *E, float *A, float *Z, const float *H, const float *C, const float *Wa,
                               int n, int d, int m, int dc);
/* Backward of rk_poly_attention_forward given dE[m,d]:
 *   dC[m,dc] += ..., dWa[d,dc] += ... (accumulated);
 *   dH[n,d] written (skipped when dH == NULL: frozen inputs).
 * scratch: caller-owned m*n + n*dc floats. */
void rk_poly_attention_backward(float *dH, float *dC, float *dWa, const float *dE, const float *H, const float *C,
                                const float *Wa, const float *A, const float *Z, int n, int d, int m, int dc,
                                float *scratch);

typedef enum { RK_MATCH_SOFTMAX = 0, RK_MATCH_MAX = 1, RK_MATCH_MEAN = 2 } rk_match_pool;

/* Matching of U[m,d] (UPE) and V[k,d] (CPE): S = U Vᵀ [m,k] (dot products in
 * double), returns the pooled score y:
 *   softmax: y = Σ softmax(vec S / tau) ∘ S   (tau > 0; default 1)
 *   max:     y = max S;   mean: y = mean S
 * S and W[m*k] (the pooling weights: softmax probabilities, one-hot of the
 * first maximum, or 1/(mk)) are written for the backward. Properties
 * (papers.md §6.6): all S equal -> that value; mean <= softmax <= max;
 * m = k = 1 -> the plain dot product. */
float rk_match_forward(float *S, float *W, const float *U, const float *V, int m, int k, int d, rk_match_pool pool,
                       float tau);
/* Serving: the pooled matching of one U[m,d] against n candidates V[n*k, d]
 * (candidate c's k CPE rows at c*k) at once: each candidate's m*k products
 * S = U Vᵀ by a fused AVX2/FMA kernel (plain C without AVX2) that streams V
 * once, then pooled as rk_match_forward pools them, in float (|y -
 * rk_match_forward's| ~ 1e-7 relative) -> y[n]. St: caller scratch of
 * n*m*k floats (candidate c's products at c*m*k). */
void rk_match_batch(float *y, float *St, const float *U, const float *V, int n, int m, int k, int d,
                    rk_match_pool pool, float tau);
/* Backward given dy = ∂L/∂y and the forward's y, S, W:
 *   dU[m,d] += ..., dV[k,d] += ...  (accumulated). dS: scratch of m*k floats
 *   (receives ∂L/∂S). */
void rk_match_backward(float *dU, float *dV, float dy, float y, const float *S, const float *W, const float *U,
                       const float *V, int m, int k, int d, rk_match_pool pool, float tau, float *dS);

#endif /* RK_NN_H */
