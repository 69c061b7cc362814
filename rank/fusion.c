/*
 * rank/fusion.c — CETNet fusion and its collaborative loss (Liu et al. 2024,
 * "A Collaborative Ensemble Framework for CTR Prediction", arXiv 2411.13700;
 * formulas as reconstructed in papers.md §5(b) and specified in §6.4).
 *
 * Fusion of member pCTRs p_i (clamped to [1e-7, 1 - 1e-7]):
 *   conf_i = p_i ln p_i + (1 - p_i) ln(1 - p_i)        (negative binary entropy)
 *   w      = softmax(conf / tau)                        ("general softmax")
 *   p      = sum_i w_i p_i
 * Mean fusion: w_i = 1/M.
 *
 * Collaborative loss of one example with member logits z_i, p_i = sigmoid(z_i):
 *   L = a BCE(p, y) + b sum_i BCE(p_i, y) + lambda sum_i BCE(p_i, sg(p))
 * (a = w_fused, b = w_member; sg = stop-gradient). Its gradient by hand:
 *   dp/dz_i = w_i (1 + (p_i - p) logit(p_i) / tau) p_i (1 - p_i)   [confidence]
 *   dp/dz_i = p_i (1 - p_i) / M                                   [mean]
 *   dL/dz_i = a (p - y) / (p (1 - p)) dp/dz_i + b (p_i - y) + lambda (p_i - p)
 *   dp/dtau = -(1/tau^2) sum_i w_i p_i (conf_i - sum_j w_j conf_j)
 * (d conf_i / d p_i = logit(p_i); d w_j / d conf_i = w_j (delta_ij - w_i) / tau.)
 * A clamped p_i passes no gradient through p (its clamp is flat).
 * Everything in double; NaN-proof for any finite logits.
 */
#include "internal.h"

#include <math.h>

#define RK_P_EPS 1e-7

static double clampp(double p) { return p < RK_P_EPS ? RK_P_EPS : p > 1 - RK_P_EPS ? 1 - RK_P_EPS : p; }

static double sigmoid_d(double z) {
    if (z >= 0) return 1 / (1 + exp(-z));
    double e = exp(z);
    return e / (1 + e);
}

/* Stable BCE on a logit with a soft target t in [0, 1]. */

/* Confidence of a clamped pCTR q: its negative binary entropy. */
static double conf_of(double q) { return q * log(q) + (1 - q) * log(1 - q); }

/* Clamped member pCTR i: from pCTRs p (NaN counts as 0.5) or from logits z. */
static double q_at(const float *p, const float *z, int i) {
    if (z) return clampp(sigmoid_d(z[i]));
    return clampp(isnan(p[i]) ? 0.5 : (double)p[i]);
}

/* The fusion of M members, member values recomputed on demand so that any M
 * needs no arrays: softmax weight w_i = exp(conf_i / tau - mx) / sum (mean
 * fusion: 1/M), the fused pCTR and cbar = sum_i w_i conf_i. The one
 * implementation behind rk_fuse (serving) and rk_collab_grad (training). */
typedef struct {
    rk_fusion_type type;
    int M;
    double tau, mx, sum, p, cbar;
} fusion;

static double fusion_w(const fusion *f, double conf) {
    return f->type == RK_FUSION_MEAN ? 1.0 / f->M : exp(conf / f->tau - f->mx) / f->sum;
}

static void fuse_q(fusion *f, rk_fusion_type type, const float *p, const float *z, int M, double tau) {
    *f = (fusion){type, M, tau, -INFINITY, 0, 0, 0};
    if (type == RK_FUSION_MEAN) {
        for (int i = 0; i < M; i++) f->p += q_at(p, z, i) / M;
        return;
    }
    for (int i = 0; i < M; i++) {
        double c = conf_of(q_at(p, z, i));
        if (c / tau > f->mx) f->mx = c / tau;
    }
    for (int i = 0; i < M; i++) f->sum += exp(conf_of(q_at(p, z, i)) / tau - f->mx);
    for (int i = 0; i < M; i++) {
        double q = q_at(p, z, i), w = fusion_w(f, conf_of(q));
        f->p += w * q;
        f->cbar += w * conf_of(q);
    }
}

double rk_fuse(rk_fusion_type type, const float *p, int M, double tau, double *w) {
    RK_ASSERT(M >= 1);
    fusion f;
    fuse_q(&f, type, p, NULL, M, tau);
    if (w)
        for (int i = 0; i < M; i++) w[i] = fusion_w(&f, type == RK_FUSION_MEAN ? 0 : conf_of(q_at(p, NULL, i)));
    return f.p;
}

double rk_collab_grad(const rk_fusion_cfg *f, double tau, const float *z, int M, float y, double *dz, double *dlog_tau) {
    fusion fu;
    fuse_q(&fu, f->type, NULL, z, M, tau);
    double p = fu.p;
    double pc = clampp(p);
    double loss = f->w_fused * -(y * log(pc) + (1 - y) * log(1 - pc));
    double dLdp = (p > RK_P_EPS && p < 1 - RK_P_EPS) ? f->w_fused * (p - y) / (p * (1 - p)) : 0;
    double dpdtau = 0;
    for (int i = 0; i < M; i++) {
        double q = sigmoid_d(z[i]), qc = clampp(q), conf = f->type == RK_FUSION_MEAN ? 0 : conf_of(qc);
        double w = fusion_w(&fu, conf);
        double dq = (q > RK_P_EPS && q < 1 - RK_P_EPS) ? q * (1 - q) : 0;
        double dpdz = f->type == RK_FUSION_MEAN ? dq / M : w * (1 + (q - p) * log(q / (1 - q)) / tau) * dq;
        if (dq == 0) dpdz = 0;
        dz[i] = dLdp * dpdz + f->w_member * (q - y) + f->lambda * (q - p);
        loss += f->w_member * rk_bce_logit(z[i], y) + f->lambda * rk_bce_logit(z[i], p);
        if (f->type == RK_FUSION_CONFIDENCE) dpdtau += -w * qc * (conf - fu.cbar) / (tau * tau);
    }
    if (dlog_tau) *dlog_tau = dLdp * dpdtau * tau;
    return loss;
}
