/*
 * distill/loss.c — ExFM's student losses, the auxiliary head's backward with
 * gradient scaling, and the student adapter (papers.md §3(b); formulas in
 * distill.h). Gradients by hand:
 *   d(-h(z, t))/dz = sigmoid(z) - t        (Eq. 1 with a soft target)
 * so per row, with t_F = min(1, alpha p_F) and the mean over n rows:
 *   KD:  dz_s = [(s(z_s) - y) + w (s(z_s) - t_F)] / n
 *   AH:  dz_s = (s(z_s) - y) / n
 *        dz_d = [w (s(z_d) - t_F) + w_sa (s(z_d) - q)] / n
 * Gradient scaling (GS): the auxiliary head z_d = h a_w + a_b passes
 * beta * dz_d a_w to the backbone output h and dz_d h / dz_d to its own
 * weights. The adapter's loss never reaches the student (q is a constant:
 * stop-gradient, Eq. 7). Loss sums in double. Checked against PyTorch by
 * tests/test_distill.c (fixture from tests/ref/gen_exfm_ref.py).
 */
#include "distill.h"

#include <math.h>
#include <string.h>

rk_status rk_exfm_cfg_check(const rk_exfm_cfg *c, rk_err *err) {
    if (c->mode < RK_EXFM_NONE || c->mode > RK_EXFM_AH) return rk_fail(err, RK_EINVAL, "exfm.mode: unknown mode %d", (int)c->mode);
    if (!(c->w >= 0) || !isfinite(c->w)) return rk_fail(err, RK_EINVAL, "exfm.w: must be finite and >= 0, got %g", c->w);
    if (!(c->alpha > 0) || !isfinite(c->alpha)) return rk_fail(err, RK_EINVAL, "exfm.alpha: must be finite and > 0, got %g", c->alpha);
    if (!(c->beta >= 0) || !isfinite(c->beta)) return rk_fail(err, RK_EINVAL, "exfm.beta: must be finite and >= 0, got %g", c->beta);
    if (!(c->w_sa >= 0) || !isfinite(c->w_sa)) return rk_fail(err, RK_EINVAL, "exfm.w_sa: must be finite and >= 0, got %g", c->w_sa);
    if (c->adapter && c->mode != RK_EXFM_AH)
        return rk_fail(err, RK_EINVAL, "exfm.adapter: needs mode 'ah' (the adapter supervises the auxiliary head)");
    if (c->sa_hidden < 1 || c->sa_hidden > 256) return rk_fail(err, RK_EINVAL, "exfm.sa_hidden: must be 1..256, got %d", c->sa_hidden);
    if (!(c->lr_sa > 0) || !isfinite(c->lr_sa)) return rk_fail(err, RK_EINVAL, "exfm.lr_sa: must be finite and > 0, got %g", c->lr_sa);
    return RK_OK;
}

static double sigm(double z) {
    if (z >= 0) return 1 / (1 + exp(-z));
    double e = exp(z);
    return e / (1 + e);
}

double rk_exfm_bce(double z, double t) { return rk_bce_logit(z, t); }

double rk_exfm_loss(const rk_exfm_cfg *c, int n, const float *z_s, const float *z_d, const float *y, const float *p_f,
                    const float *q, float *dz_s, float *dz_d) {
    double loss = 0;
    for (int i = 0; i < n; i++) {
        double zs = z_s[i], ss = sigm(zs);
        double g_s = ss - y[i];
        loss += rk_exfm_bce(zs, y[i]);
        int has_t = p_f && isfinite(p_f[i]);
        double t = has_t ? fmin(1.0, (double)c->alpha * p_f[i]) : 0;
        if (c->mode == RK_EXFM_KD && has_t) {
            loss += c->w * rk_exfm_bce(zs, t);
            g_s += c->w * (ss - t);
        }
        dz_s[i] = (float)(g_s / n);
        if (c->mode == RK_EXFM_AH) {
            double zd = z_d[i], sd = sigm(zd), g_d = 0;
            if (has_t) {
                loss += c->w * rk_exfm_bce(zd, t);
                g_d += c->w * (sd - t);
            }
            if (c->adapter && q && isfinite(q[i])) {
                loss += c->w_sa * rk_exfm_bce(zd, q[i]);
                g_d += c->w_sa * (sd - q[i]);
            }
            dz_d[i] = (float)(g_d / n);
        }
    }
    return loss / n;
}

void rk_exfm_aux_forward(float *z_d, const float *h, const float *a_w, const float *a_b, int n, int H) {
    rk_linear_forward(z_d, h, a_w, a_b, n, H, 1);
}

void rk_exfm_aux_backward(float *dh, float *da_w, float *da_b, const float *dz_d, const float *h, const float *a_w,
                          float beta, int n, int H) {
    rk_linear_backward(dh, da_w, da_b, dz_d, h, a_w, n, H, 1);
    for (size_t i = 0; i < (size_t)n * (size_t)H; i++) dh[i] *= beta;
}

/* ---------------------------------------------------------------- adapter */

struct rk_exfm_adapter {
    int K, cap;
    float lr;
    long step;
    float *p, *g, *m, *v;  /* [n] each: W1[K], b1[K], W2[K], b2[1] */
    size_t n;
    float *x, *h, *z, *dz, *dh; /* work: x[cap], h[cap,K], z[cap], dz[cap], dh[cap,K] */
    float *mem;
};

rk_status rk_exfm_adapter_create(int K, float lr, uint64_t seed, int max_rows, rk_exfm_adapter **out, rk_err *err) {
    *out = NULL;
    if (K < 1 || K > 256) return rk_fail(err, RK_EINVAL, "adapter: hidden width must be 1..256, got %d", K);
    if (max_rows < 1) return rk_fail(err, RK_EINVAL, "adapter: max_rows must be > 0, got %d", max_rows);
    rk_exfm_adapter *a = rk_calloc(1, sizeof *a);
    if (!a) return rk_fail(err, RK_ENOMEM, "adapter: out of memory");
    a->K = K;
    a->cap = max_rows;
    a->lr = lr;
    a->n = 3 * (size_t)K + 1;
    size_t cap = (size_t)max_rows, total = 4 * a->n + cap * (3 + 2 * (size_t)K);
    a->mem = rk_calloc(total, sizeof(float));
    if (!a->mem) {
        rk_free(a);
        return rk_fail(err, RK_ENOMEM, "adapter: out of memory for %d rows", max_rows);
    }
    float *p = a->mem;
    a->p = p, p += a->n;
    a->g = p, p += a->n;
    a->m = p, p += a->n;
    a->v = p, p += a->n;
    a->x = p, p += cap;
    a->h = p, p += cap * (size_t)K;
    a->z = p, p += cap;
    a->dz = p, p += cap;
    a->dh = p;
    /* torch.nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in 1 then K */
    rk_rng rng;
    rk_rng_seed(&rng, seed);
    for (size_t i = 0; i < 2 * (size_t)K; i++) a->p[i] = (float)(2 * rk_rng_uniform(&rng) - 1);
    double b2 = 1 / sqrt((double)K);
    for (size_t i = 2 * (size_t)K; i < a->n; i++) a->p[i] = (float)((2 * rk_rng_uniform(&rng) - 1) * b2);
    *out = a;
    return RK_OK;
}

void rk_exfm_adapter_destroy(rk_exfm_adapter *a) {
    if (!a) return;
    rk_free(a->mem);
    rk_free(a);
}

float *rk_exfm_adapter_params(rk_exfm_adapter *a, size_t *n) {
    *n = a->n;
    return a->p;
}

/* Forward of rows x[0..n) into a->h (after ReLU) and z. */
static void adapter_fwd(rk_exfm_adapter *a, const float *x, int n, float *z) {
    const int K = a->K;
    const float *W1 = a->p, *b1 = a->p + K, *W2 = a->p + 2 * K, *b2 = a->p + 3 * K;
    rk_linear_forward(a->h, x, W1, b1, n, 1, K);
    rk_relu_forward(a->h, a->h, (size_t)n * (size_t)K);
    rk_linear_forward(z, a->h, W2, b2, n, K, 1);
}

void rk_exfm_adapter_forward(rk_exfm_adapter *a, const float *z_f, int n, float *z_sa) {
    RK_ASSERT(n <= a->cap);
    adapter_fwd(a, z_f, n, z_sa);
}

double rk_exfm_adapter_step(rk_exfm_adapter *a, const float *z_f, const float *y, int n, float *grad) {
    RK_ASSERT(n <= a->cap);
    const int K = a->K;
    int m = 0;
    /* compact the rows with a teacher logit: x = z_F, labels into dz for now */
    for (int i = 0; i < n; i++)
        if (isfinite(z_f[i])) {
            a->x[m] = z_f[i];
            a->dz[m] = y[i];
            m++;
        }
    if (m == 0) return NAN;
    adapter_fwd(a, a->x, m, a->z);
    float *lab = a->dz; /* labels, overwritten by the gradient row by row */
    double loss = 0;
    for (int i = 0; i < m; i++) {
        double z = a->z[i];
        loss += rk_exfm_bce(z, lab[i]);
        a->dz[i] = (float)((sigm(z) - lab[i]) / m);
    }
    memset(a->g, 0, a->n * sizeof(float));
    float *gW1 = a->g, *gb1 = a->g + K, *gW2 = a->g + 2 * K, *gb2 = a->g + 3 * K;
    const float *W2 = a->p + 2 * K;
    rk_linear_backward(a->dh, gW2, gb2, a->dz, a->h, W2, m, K, 1);
    rk_relu_backward(a->dh, a->dh, a->h, (size_t)m * (size_t)K);
    rk_linear_backward(NULL, gW1, gb1, a->dh, a->x, a->p, m, 1, K);
    if (grad) memcpy(grad, a->g, a->n * sizeof(float));
    rk_adam_step(a->p, a->g, a->m, a->v, a->n, a->lr, 0.9f, 0.999f, 1e-8f, ++a->step);
    return loss / m;
}
