/*
 * nn/nn.c — forward and backward passes of rankd's dense layers.
 *
 * What is here: Linear, ReLU, the DCN-V2 cross layer, embedding bags, binary
 * cross-entropy on logits, and the two optimizers the trainer uses (Adam for
 * dense parameters, row-wise Adagrad for embedding tables). See nn/nn.h for
 * shapes and ownership; this comment says how the code is organised.
 *
 * Conventions (llm.c style):
 *   - All buffers are caller-owned, row-major float32. Nothing here allocates,
 *     so the trainer can keep parameters, gradients and optimizer state in one
 *     block each and the serving hot path stays malloc-free.
 *   - Backward functions ACCUMULATE (+=) into parameter gradients (a caller may
 *     reuse a layer, and the cross layers all feed on the same x0) and WRITE
 *     (=) input gradients, except dx0 of the cross layer, which accumulates
 *     because x0 feeds every layer of the cross stack.
 *   - Matrix products go through OpenBLAS' cblas_sgemm in row-major order with
 *     PyTorch's weight layout (W is [out, in]), so y = x W^T is
 *     sgemm(NoTrans, Trans) and needs no transposed copy of W.
 *   - Reductions that feed a reported number (the loss) accumulate in double.
 *     Elementwise maths stays in float, as in PyTorch's float32 kernels.
 *
 * Every op is checked against PyTorch (tests/ref/gen_nn_ref.py writes
 * tests/fixtures/nn_ref.safetensors) within |got-ref| <= 1e-5 + 1e-4*|ref|,
 * and the composed net against central finite differences (tests/test_nn.c).
 */
#include "nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- linear */

void rk_linear_forward(float *y, const float *x, const float *W, const float *b, int B, int in,
                       int out) {
    if (B <= 0 || out <= 0) return;
    float beta = 0.0f;
    if (b) {
        /* Seed y with the bias and let sgemm add x W^T on top (beta = 1). */
        for (int r = 0; r < B; r++) memcpy(y + (size_t)r * out, b, (size_t)out * sizeof *y);
        beta = 1.0f;
    }
    if (in <= 0) {
        if (!b) memset(y, 0, (size_t)B * out * sizeof *y);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x, in, W, in, beta, y,
                out);
}

void rk_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x,
                        const float *W, int B, int in, int out) {
    if (B <= 0) return;
    if (dx && in > 0) {
        if (out > 0)
            /* dx[B,in] = dy[B,out] · W[out,in] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dy, out, W,
                        in, 0.0f, dx, in);
        else
            memset(dx, 0, (size_t)B * in * sizeof *dx);
    }
    if (out <= 0) return;
    if (in > 0)
        /* dW[out,in] += dy^T[out,B] · x[B,in] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, dy, out, x, in,
                    1.0f, dW, in);
    if (db)
        for (int r = 0; r < B; r++) {
            const float *g = dy + (size_t)r * out;
            for (int j = 0; j < out; j++) db[j] += g[j];
        }
}

/* ---------------------------------------------------------------- activations */

void rk_relu_forward(float *y, const float *x, size_t n) {
    /* "x < 0 ? 0 : x" rather than fmaxf so a NaN propagates as in torch.relu
     * instead of being hidden as 0. */
    for (size_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void rk_relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    /* torch's threshold_backward: the gradient passes where the output > 0
     * (the subgradient at 0 is 0). */
    for (size_t i = 0; i < n; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

float rk_sigmoid(float z) {
    /* exp of a non-positive argument only, so neither branch overflows. */
    if (z >= 0.0f) return 1.0f / (1.0f + expf(-z));
    float e = expf(z);
    return e / (1.0f + e);
}

/* ---------------------------------------------------------------- DCNv2 cross layer */

void rk_cross_forward(float *xout, float *u, const float *x0, const float *xl, const float *W,
                      const float *b, int B, int D) {
    rk_linear_forward(u, xl, W, b, B, D, D); /* u = W x_l + b, row-wise */
    size_t n = (size_t)(B > 0 ? B : 0) * (size_t)(D > 0 ? D : 0);
    for (size_t i = 0; i < n; i++) xout[i] = x0[i] * u[i] + xl[i];
}

void rk_cross_backward(float *dx0, float *dxl, float *dW, float *db, const float *dxout,
                       const float *x0, const float *xl, const float *u, const float *W, int B,
                       int D, float *scratch) {
    if (B <= 0 || D <= 0) return;
    size_t n = (size_t)B * (size_t)D;
    float *du = scratch;
    /* Everything that reads dxout happens before dxl is written: the two may
     * be the same buffer. */
    for (size_t i = 0; i < n; i++) {
        dx0[i] += dxout[i] * u[i];
        du[i] = dxout[i] * x0[i];
    }
    /* dW += du^T · xl, db += sum_rows du */
    rk_linear_backward(NULL, dW, db, du, xl, W, B, D, D);
    /* dxl = dxout (identity path) + du · W */
    if (dxl != dxout) memcpy(dxl, dxout, n * sizeof *dxl);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, D, 1.0f, du, D, W, D, 1.0f, dxl,
                D);
}

/* ---------------------------------------------------------------- embedding bag */

/* Rows are fetched this many ahead (across bags): a batch's rows are
 * scattered over the table, and the lookups are independent. */
#define RK_BAG_PREFETCH 8

void rk_embedding_bag_forward(float *out, size_t out_stride, const float *table,
                              const uint32_t *offsets, const uint64_t *idx, int B, int d,
                              rk_bag_mode mode) {
    const uint32_t kend = B > 0 ? offsets[B] : 0;
    const size_t row_bytes = (size_t)d * sizeof *table;
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * out_stride;
        memset(o, 0, (size_t)d * sizeof *o);
        uint32_t k0 = offsets[b], k1 = offsets[b + 1];
        for (uint32_t k = k0; k < k1; k++) {
            if (k + RK_BAG_PREFETCH < kend) {
                const char *ahead = (const char *)(table + idx[k + RK_BAG_PREFETCH] * (size_t)d);
                for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(ahead + off);
            }
            const float *row = table + idx[k] * (size_t)d;
            for (int j = 0; j < d; j++) o[j] += row[j];
        }
        if (mode == RK_BAG_MEAN && k1 > k0) {
            float cnt = (float)(k1 - k0);
            for (int j = 0; j < d; j++) o[j] /= cnt;
        }
    }
}

void rk_embedding_bag_backward(float *dtable, const float *dout, size_t dout_stride,
                               const uint32_t *offsets, const uint64_t *idx, int B, int d,
                               rk_bag_mode mode) {
    for (int b = 0; b < B; b++) {
        const float *g = dout + (size_t)b * dout_stride;
        uint32_t k0 = offsets[b], k1 = offsets[b + 1];
        float cnt = mode == RK_BAG_MEAN ? (float)(k1 - k0) : 1.0f;
        for (uint32_t k = k0; k < k1; k++) {
            float *row = dtable + idx[k] * (size_t)d;
            if (mode == RK_BAG_MEAN)
                for (int j = 0; j < d; j++) row[j] += g[j] / cnt;
            else
                for (int j = 0; j < d; j++) row[j] += g[j];
        }
    }
}

/* ---------------------------------------------------------------- loss */

double rk_bce_logit(double z, double t) { return (z > 0.0 ? z : 0.0) - z * t + log1p(exp(-fabs(z))); }

double rk_bce_logits(const float *z, const float *y, int B, float *dz) {
    if (B <= 0) return 0.0;
    double sum = 0.0;
    for (int i = 0; i < B; i++) {
        double zi = z[i], yi = y[i];
        /* max(z,0) - z*y + log(1 + exp(-|z|)): log1p of exp(-|z|) <= 1 never
         * overflows, and for large |z| the loss is the linear term exactly. */
        sum += rk_bce_logit(zi, yi);
        if (dz) {
            double p = zi >= 0.0 ? 1.0 / (1.0 + exp(-zi)) : exp(zi) / (1.0 + exp(zi));
            dz[i] = (float)((p - yi) / B);
        }
    }
    return sum / B;
}

/* ---------------------------------------------------------------- optimizers */

void rk_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                  float b2, float eps, long t) {
    /* Same order of operations as torch.optim.Adam (_single_tensor_adam):
     * bias corrections in double, then denom = sqrt(v)/sqrt(bc2) + eps and
     * p -= (lr/bc1) * m / denom. */
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    float step_size = (float)((double)lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        m[i] = m[i] * b1 + gi * (1.0f - b1);
        v[i] = v[i] * b2 + gi * gi * (1.0f - b2);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] -= step_size * m[i] / denom;
    }
}

void rk_adagrad_rows(float *p, const float *g, float *s, const uint64_t *rows, size_t n_rows,
                     int d, float lr, float eps) {
    for (size_t k = 0; k < n_rows; k++) {
        size_t off = rows[k] * (size_t)d;
        float *pr = p + off, *sr = s + off;
        const float *gr = g + off;
        for (int j = 0; j < d; j++) {
            sr[j] += gr[j] * gr[j];
            pr[j] -= lr * gr[j] / (sqrtf(sr[j]) + eps);
        }
    }
}

/* ---------------------------------------------------------------- FM interaction */

void rk_fm_forward(float *y, const float *x, size_t stride, const int *cols, int n_fields, int k, int B) {
    for (int b = 0; b < B; b++) {
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
}

void rk_fm_backward(float *dx, const float *dy, const float *x, size_t stride, const int *cols, int n_fields, int k,
                    int B) {
    for (int b = 0; b < B; b++) {
        const float *row = x + (size_t)b * stride;
        float *drow = dx + (size_t)b * stride;
        for (int j = 0; j < k; j++) {
            float s = 0;
            for (int f = 0; f < n_fields; f++) s += row[cols[f] + j];
            for (int f = 0; f < n_fields; f++) drow[cols[f] + j] += dy[b] * (s - row[cols[f] + j]);
        }
    }
}
