/*
 * rank/metrics.c — offline ranking metrics for a scored set of examples.
 *
 * rk_metrics_compute validates its input (labels exactly 0 or 1, pctr finite
 * and in [0, 1]) and fills an rk_metrics in one sort plus one pass:
 *
 *   AUC          ROC AUC as the Mann-Whitney U statistic (Mann & Whitney 1947;
 *                Hanley & McNeil 1982, eq. 2): sort by score ascending, give
 *                every example its 1-based rank, tied groups the average rank
 *                of the group, then
 *                    AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)
 *                where R_pos is the sum of the positives' ranks. A tied
 *                (positive, negative) pair counts 1/2, exactly as in
 *                sklearn.metrics.roc_auc_score. O(n log n).
 *   logloss      mean binary cross-entropy, p clamped to [1e-7, 1 - 1e-7]
 *                so a confident miss costs at most -ln(1e-7) ~ 16.1.
 *   NE           normalized entropy (He et al. 2014, "Practical Lessons from
 *                Predicting Clicks on Ads at Facebook", §2): logloss divided by
 *                the entropy of the base rate b,
 *                    H(b) = -(b ln b + (1 - b) ln(1 - b)).
 *   calibration  mean pCTR / base rate (1.0 = calibrated on average).
 *
 * Everything accumulates in double. The sort needs one temporary array of n
 * (score, label) pairs from rk_malloc; nothing else is allocated.
 */
#include "rank.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RK_P_MIN 1e-7
#define RK_P_MAX (1.0 - 1e-7)

typedef struct {
    float score;
    int label;
} scored;

static int cmp_score(const void *a, const void *b) {
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

rk_status rk_metrics_compute(const float *pctr, const float *label, size_t n, rk_metrics *out,
                             rk_err *err) {
    if (n == 0) return rk_fail(err, RK_EINVAL, "metrics: n == 0, no examples to score");
    if (!pctr || !label || !out) return rk_fail(err, RK_EINVAL, "metrics: NULL argument");

    size_t n_pos = 0;
    double sum_p = 0.0, sum_ll = 0.0;
    for (size_t i = 0; i < n; i++) {
        float y = label[i], p = pctr[i];
        if (y != 0.0f && y != 1.0f)
            return rk_fail(err, RK_EINVAL, "metrics: label[%zu] = %g: expected 0 or 1", i,
                           (double)y);
        if (!isfinite(p) || p < 0.0f || p > 1.0f)
            return rk_fail(err, RK_EINVAL,
                           "metrics: pctr[%zu] = %g: expected a finite probability in [0, 1]", i,
                           (double)p);
        double pd = (double)p;
        double pc = pd < RK_P_MIN ? RK_P_MIN : pd > RK_P_MAX ? RK_P_MAX : pd;
        sum_p += pd;
        if (y == 1.0f) {
            n_pos++;
            sum_ll -= log(pc);
        } else {
            sum_ll -= log1p(-pc);
        }
    }

    rk_metrics m;
    memset(&m, 0, sizeof m);
    m.n = n;
    m.n_pos = n_pos;
    m.base_rate = (double)n_pos / (double)n;
    m.mean_pctr = sum_p / (double)n;
    m.logloss = sum_ll / (double)n;
    if (n_pos == 0 || n_pos == n) {
        m.ne = NAN;
        m.auc = NAN;
        m.auc_defined = 0;
    } else {
        double b = m.base_rate;
        m.ne = m.logloss / -(b * log(b) + (1.0 - b) * log1p(-b));

        scored *s = rk_malloc(n * sizeof *s);
        if (!s)
            return rk_fail(err, RK_ENOMEM, "metrics: out of memory sorting %zu scores", n);
        for (size_t i = 0; i < n; i++) {
            s[i].score = pctr[i];
            s[i].label = label[i] == 1.0f;
        }
        qsort(s, n, sizeof *s, cmp_score);
        /* Ranks are 1-based; the group s[i..j) shares the average rank
         * (i+1 + j) / 2. */
        double rank_sum_pos = 0.0;
        for (size_t i = 0; i < n;) {
            size_t j = i + 1, pos_in_group = (size_t)s[i].label;
            while (j < n && s[j].score == s[i].score) pos_in_group += (size_t)s[j++].label;
            rank_sum_pos += (double)pos_in_group * ((double)(i + 1) + (double)j) * 0.5;
            i = j;
        }
        rk_free(s);
        double np = (double)n_pos, nn = (double)(n - n_pos);
        m.auc = (rank_sum_pos - np * (np + 1.0) * 0.5) / (np * nn);
        m.auc_defined = 1;
    }
    m.calibration = n_pos == 0 ? NAN : m.mean_pctr / m.base_rate;
    *out = m;
    return RK_OK;
}
