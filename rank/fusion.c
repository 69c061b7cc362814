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

/* Fusion of clamped member pCTRs q[M]: weights w[M], confidences conf[M]
 * (0 for mean fusion) and the fused pCTR. The one implementation behind
 * rk_fuse (serving) and rk_collab_grad (training). */
static double fuse_q(rk_fusion_type type, const double *q, int M, double tau, double *w, double *conf) {
    double out = 0;
    if (type == RK_FUSION_MEAN) {
        for (int i = 0; i < M; i++) {
            w[i] = 1.0 / M;
            conf[i] = 0;
            out += q[i] / M;
        }
        return out;
    }
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < M; i++) {
        conf[i] = q[i] * log(q[i]) + (1 - q[i]) * log(1 - q[i]);
        if (conf[i] / tau > mx) mx = conf[i] / tau;
    }
    for (int i = 0; i < M; i++) sum += (w[i] = exp(conf[i] / tau - mx));
    for (int i = 0; i < M; i++) {
        w[i] /= sum;
        out += w[i] * q[i];
    }
    return out;
}

double rk_fuse(rk_fusion_type type, const float *p, int M, double tau, double *w) {
    double q[RK_MAX_MEMBERS] = {0}, wl[RK_MAX_MEMBERS], conf[RK_MAX_MEMBERS];
    RK_ASSERT(M >= 1 && M <= RK_MAX_MEMBERS);
    for (int i = 0; i < M; i++) q[i] = clampp(isnan(p[i]) ? 0.5 : (double)p[i]);
    double out = fuse_q(type, q, M, tau, wl, conf);
    if (w)
        for (int i = 0; i < M; i++) w[i] = wl[i];
    return out;
}

double rk_collab_grad(const rk_fusion_cfg *f, double tau, const float *z, int M, float y, double *dz, double *dlog_tau) {
    double pi[RK_MAX_MEMBERS] = {0}, qc[RK_MAX_MEMBERS] = {0}, w[RK_MAX_MEMBERS], conf[RK_MAX_MEMBERS];
    for (int i = 0; i < M; i++) {
        pi[i] = sigmoid_d(z[i]);
        qc[i] = clampp(pi[i]);
    }
    double p = fuse_q(f->type, qc, M, tau, w, conf), cbar = 0;
    for (int i = 0; i < M; i++) cbar += w[i] * conf[i];
    double pc = clampp(p);
    double loss = f->w_fused * -(y * log(pc) + (1 - y) * log(1 - pc));
    double dLdp = (p > RK_P_EPS && p < 1 - RK_P_EPS) ? f->w_fused * (p - y) / (p * (1 - p)) : 0;
    double dpdtau = 0;
    for (int i = 0; i < M; i++) {
        double q = pi[i], dq = (q > RK_P_EPS && q < 1 - RK_P_EPS) ? q * (1 - q) : 0;
        double dpdz = f->type == RK_FUSION_MEAN ? dq / M : w[i] * (1 + (q - p) * log(q / (1 - q)) / tau) * dq;
        if (dq == 0) dpdz = 0;
        dz[i] = dLdp * dpdz + f->w_member * (q - y) + f->lambda * (q - p);
        loss += f->w_member * rk_bce_logit(z[i], y) + f->lambda * rk_bce_logit(z[i], p);
        if (f->type == RK_FUSION_CONFIDENCE) dpdtau += -w[i] * qc[i] * (conf[i] - cbar) / (tau * tau);
    }
    if (dlog_tau) *dlog_tau = dLdp * dpdtau * tau;
    return loss;
}
