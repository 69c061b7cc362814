/*
 * tests/test_metrics.c — rk_metrics_compute against hand-computed values, a
 * brute-force pairwise AUC, and every kind of bad input.
 *
 * Tolerances: inputs are float32, so 0.9f differs from 0.9 by ~2e-8; values
 * computed by hand in double from the decimal inputs are compared with
 * |got - ref| <= 1e-6. Exact rationals (AUC from a few pairs) use 1e-12.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "rank.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void near(double got, double ref, double atol, const char *what) {
    cr_expect(fabs(got - ref) <= atol, "%s: got %.17g, expected %.17g (atol %g)", what, got, ref,
              atol);
}

static rk_metrics compute_ok(const float *p, const float *y, size_t n) {
    rk_metrics m;
    rk_err err = {0};
    rk_status s = rk_metrics_compute(p, y, n, &m, &err);
    cr_assert_eq(s, RK_OK, "rk_metrics_compute: %s", err.msg);
    return m;
}

Test(metrics, auc_no_ties) {
    /* Positives 0.35 and 0.8, negatives 0.1 and 0.4. Pairs (pos, neg):
     * (0.35,0.1) win, (0.35,0.4) loss, (0.8,0.1) win, (0.8,0.4) win -> 3/4. */
    const float p[] = {0.1f, 0.4f, 0.35f, 0.8f}, y[] = {0, 0, 1, 1};
    rk_metrics m = compute_ok(p, y, 4);
    cr_expect_eq(m.auc_defined, 1);
    near(m.auc, 0.75, 1e-12, "auc");
    cr_expect_eq(m.n, 4);
    cr_expect_eq(m.n_pos, 2);
    near(m.base_rate, 0.5, 1e-12, "base_rate");
}

Test(metrics, auc_ties_half_credit) {
    /* Scores {0.5, 0.5, 0.5, 0.9}, labels {0, 1, 0, 1}.
     * Pairs: the positive at 0.5 ties both negatives (1/2 + 1/2 = 1), the
     * positive at 0.9 beats both (2) -> U = 3 of 2 * 2 = 4 pairs -> 0.75.
     * Same by ranks: the three 0.5s share ranks 1, 2, 3 -> average 2, 0.9 has
     * rank 4; R_pos = 2 + 4 = 6; U = 6 - 2 * 3 / 2 = 3; AUC = 3 / 4.
     * Placing the tied positive first or last in the group must not matter
     * (a sort that ignored ties would give 0.5 or 1.0 for those). */
    const float p[] = {0.5f, 0.5f, 0.5f, 0.9f};
    const float ys[3][4] = {{0, 1, 0, 1}, {1, 0, 0, 1}, {0, 0, 1, 1}};
    for (int k = 0; k < 3; k++) {
        rk_metrics m = compute_ok(p, ys[k], 4);
        cr_expect_eq(m.auc_defined, 1);
        near(m.auc, 0.75, 1e-12, "auc with ties");
    }
    /* All scores equal: every pair is a tie -> 0.5. */
    const float q[] = {0.3f, 0.3f, 0.3f}, yq[] = {1, 0, 0};
    near(compute_ok(q, yq, 3).auc, 0.5, 1e-12, "auc all tied");
}

Test(metrics, auc_matches_pairwise_count_on_random_ties) {
    /* 2000 examples with scores on a 1/16 grid (many ties); reference is the
     * O(n^2) definition: P(s_pos > s_neg) + 1/2 P(s_pos == s_neg). */
    enum { N = 2000 };
    static float p[N], y[N];
    rk_rng r;
    rk_rng_seed(&r, 42);
    for (int i = 0; i < N; i++) {
        p[i] = (float)rk_rng_below(&r, 17) / 16.0f;
        y[i] = rk_rng_uniform(&r) < 0.2 + 0.6 * p[i] ? 1.0f : 0.0f;
    }
    double wins = 0, pairs = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (y[i] == 1 && y[j] == 0) {
                pairs++;
                wins += p[i] > p[j] ? 1.0 : p[i] == p[j] ? 0.5 : 0.0;
            }
    rk_metrics m = compute_ok(p, y, N);
    near(m.auc, wins / pairs, 1e-12, "auc vs pairwise");
    cr_expect(m.auc > 0.6 && m.auc < 0.9, "auc %g: generator should give a mid-range AUC", m.auc);
}

Test(metrics, logloss_ne_calibration_by_hand) {
    /* pctr {0.9, 0.2, 0.3, 0.6}, labels {1, 0, 0, 0}.
     * logloss = (-ln 0.9 - ln 0.8 - ln 0.7 - ln 0.4) / 4
     *         = (0.1053605157 + 0.2231435513 + 0.3566749439 + 0.9162907319) / 4
     *         = 1.6014697428 / 4 = 0.4003674357
     * base rate b = 1/4; H(b) = -(0.25 ln 0.25 + 0.75 ln 0.75)
     *         = 0.3465735903 + 0.2157615543 = 0.5623351446
     * NE = 0.4003674357 / 0.5623351446 = 0.7119729925
     * mean pCTR = 2.0 / 4 = 0.5; calibration = 0.5 / 0.25 = 2.0
     * AUC: the one positive (0.9) outranks all three negatives -> 1.0. */
    const float p[] = {0.9f, 0.2f, 0.3f, 0.6f}, y[] = {1, 0, 0, 0};
    rk_metrics m = compute_ok(p, y, 4);
    near(m.logloss, 0.4003674356962309, 1e-6, "logloss");
    near(m.ne, 0.7119729924894328, 1e-6, "ne");
    near(m.base_rate, 0.25, 1e-12, "base_rate");
    near(m.mean_pctr, 0.5, 1e-6, "mean_pctr");
    near(m.calibration, 2.0, 1e-6, "calibration");
    near(m.auc, 1.0, 1e-12, "auc");
}

Test(metrics, all_same_label_leaves_auc_and_ne_undefined) {
    const float p[] = {0.2f, 0.7f, 0.4f};
    const float ones[] = {1, 1, 1}, zeros[] = {0, 0, 0};
    rk_metrics m = compute_ok(p, ones, 3);
    cr_expect_eq(m.auc_defined, 0);
    cr_expect(isnan(m.auc), "auc %g", m.auc);
    cr_expect(isnan(m.ne), "ne %g", m.ne);
    near(m.base_rate, 1.0, 0, "base_rate");
    /* ln loss still defined: (-ln 0.2 - ln 0.7 - ln 0.4) / 3 = (1.6094379124 + 0.3566749439 +
     * 0.9162907319) / 3 = 0.9608011961; calibration = mean 1.3 / 3 / 1. */
    near(m.logloss, 0.9608011961, 1e-6, "logloss all positive");
    near(m.calibration, 1.3 / 3.0, 1e-6, "calibration all positive");

    m = compute_ok(p, zeros, 3);
    cr_expect_eq(m.auc_defined, 0);
    cr_expect(isnan(m.auc));
    cr_expect(isnan(m.ne));
    cr_expect(isnan(m.calibration), "calibration with base rate 0: %g", m.calibration);
    cr_expect_eq(m.n_pos, 0);
}

Test(metrics, clamping_keeps_logloss_finite) {
    /* p = 0 for a positive and p = 1 for a negative: each costs
     * -ln(1e-7) = 16.11809565095832 after clamping. */
    const float p[] = {0.0f, 1.0f}, bad[] = {1, 0}, good[] = {0, 1};
    rk_metrics m = compute_ok(p, bad, 2);
    cr_expect(isfinite(m.logloss));
    near(m.logloss, 16.11809565095832, 1e-9, "logloss of two confident misses");
    near(m.ne, 16.11809565095832 / log(2.0), 1e-9, "ne");
    near(m.auc, 0.0, 1e-12, "auc");
    /* Confident hits cost -ln(1 - 1e-7) = 1.00000005e-7, not 0. */
    m = compute_ok(p, good, 2);
    near(m.logloss, 1.0000000500000033e-07, 1e-15, "logloss of two confident hits");
    cr_expect(m.logloss > 0);
}

static void expect_einval(const float *p, const float *y, size_t n, const char *substr) {
    rk_metrics m;
    memset(&m, 0x5a, sizeof m);
    rk_metrics before = m;
    rk_err err = {0};
    rk_status s = rk_metrics_compute(p, y, n, &m, &err);
    cr_expect_eq(s, RK_EINVAL, "status %d for case '%s'", s, substr);
    cr_expect(strstr(err.msg, substr) != NULL, "message '%s' lacks '%s'", err.msg, substr);
    cr_expect(memcmp(&m, &before, sizeof m) == 0, "output written on error ('%s')", substr);
}

Test(metrics, bad_label_names_the_index) {
    const float p[] = {0.1f, 0.2f, 0.3f, 0.4f};
    const float y2[] = {0, 1, 2, 0}, yhalf[] = {0, 1, 0, 0.5f}, yneg[] = {-1, 1, 0, 0};
    const float ynan[] = {0, NAN, 0, 1};
    expect_einval(p, y2, 4, "label[2] = 2: expected 0 or 1");
    expect_einval(p, yhalf, 4, "label[3] = 0.5: expected 0 or 1");
    expect_einval(p, yneg, 4, "label[0] = -1");
    expect_einval(p, ynan, 4, "label[1] = nan");
}

Test(metrics, bad_pctr_names_the_index) {
    const float y[] = {0, 1, 0, 1};
    const float pnan[] = {0.1f, NAN, 0.3f, 0.4f}, pinf[] = {0.1f, 0.2f, INFINITY, 0.4f};
    const float pneg[] = {-0.1f, 0.2f, 0.3f, 0.4f}, pbig[] = {0.1f, 0.2f, 0.3f, 1.5f};
    expect_einval(pnan, y, 4, "pctr[1] = nan: expected a finite probability in [0, 1]");
    expect_einval(pinf, y, 4, "pctr[2] = inf");
    expect_einval(pneg, y, 4, "pctr[0] = -0.1");
    expect_einval(pbig, y, 4, "pctr[3] = 1.5");
    /* The first bad index wins. */
    const float ptwo[] = {0.1f, 0.2f, NAN, NAN};
    expect_einval(ptwo, y, 4, "pctr[2]");
}

Test(metrics, empty_input_is_an_error) {
    const float p[] = {0.5f}, y[] = {1};
    expect_einval(p, y, 0, "n == 0");
}

Test(metrics, out_of_memory_is_reported) {
    const float p[] = {0.1f, 0.4f, 0.35f, 0.8f}, y[] = {0, 0, 1, 1};
    rk_metrics m;
    rk_err err = {0};
    rk_alloc_fail_after(1);
    rk_status s = rk_metrics_compute(p, y, 4, &m, &err);
    rk_alloc_fail_after(0);
    cr_expect_eq(s, RK_ENOMEM, "status %d: %s", s, err.msg);
}
