/*
 * bench/embsum_cost.c — bench-embsum's serving cost: time to score N
 * candidates (default 1,000) for one user from an EmbSum bundle, the way
 * `rank embsum score` and rankd do it (UPE of the user and CPE of each
 * candidate through the store, its RAM cache warm after the first pass, then
 * the pooled m x k matching). Prints the minimum, median and p99 of REPS requests.
 *
 *   embsum_cost BUNDLE USER_ID ITEM_IDS_FILE [N] [REPS]
 *
 * ITEM_IDS_FILE: one item id per line (the first N are used, cycled).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rank.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: embsum_cost BUNDLE USER_ID ITEM_IDS_FILE [N] [REPS]\n");
        return 2;
    }
    int n = argc > 4 ? atoi(argv[4]) : 1000, reps = argc > 5 ? atoi(argv[5]) : 50;
    if (n < 1 || reps < 1 || reps > 100000) return 2;
    int64_t user = strtoll(argv[2], NULL, 10);
    FILE *f = fopen(argv[3], "r");
    if (!f) {
        perror(argv[3]);
        return 1;
    }
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    float *p = malloc((size_t)n * sizeof *p);
    double *t = malloc((size_t)reps * sizeof *t);
    int have = 0;
    long long v;
    while (have < n && fscanf(f, "%lld", &v) == 1) ids[have++] = v;
    fclose(f);
    if (!have) return 1;
    for (int i = have; i < n; i++) ids[i] = ids[i % have];
    rk_err e = {0};
    rk_embsum_bundle *b;
    if (rk_embsum_bundle_open(argv[1], &b, &e) != RK_OK) {
        fprintf(stderr, "embsum_cost: %s\n", e.msg);
        return 1;
    }
    if (rk_embsum_bundle_score(b, user, ids, n, p, NULL, &e) != RK_OK) { /* warm-up */
        fprintf(stderr, "embsum_cost: %s\n", e.msg);
        return 1;
    }
    for (int r = 0; r < reps; r++) {
        double t0 = rk_now();
        rk_embsum_bundle_score(b, user, ids, n, p, NULL, &e);
        t[r] = (rk_now() - t0) * 1e6;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    double tmin = t[0], p50 = t[reps / 2], p99 = t[(int)(0.99 * (reps - 1))];
    /* the store lookup alone (UPE + the N CPEs), to split the time */
    const rk_embsum *m = rk_embsum_bundle_model(b);
    const rk_embsum_cfg *c = rk_embsum_config(m);
    float *buf = malloc((size_t)n * c->k * rk_embsum_dim(m) * sizeof *buf);
    for (int r = 0; buf && r < reps; r++) {
        double t0 = rk_now();
        rk_embsum_bundle_upe(b, user, buf, &e);
        rk_embsum_bundle_cpe(b, ids, n, buf, &e);
        t[r] = (rk_now() - t0) * 1e6;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    printf("embsum_cost: candidates=%d reps=%d score_us_min=%.1f score_us_p50=%.1f score_us_p99=%.1f lookup_us_p50=%.1f codec=%s\n", n,
           reps, tmin, p50, p99, t[reps / 2], rk_embsum_bundle_codec(b));
    free(buf);
    rk_embsum_bundle_close(b);
    free(ids), free(p), free(t);
    return 0;
}
