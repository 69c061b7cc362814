/*
 * bench/zipf.c — the Zipf key stream of the store benchmarks (zipf.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "zipf.h"

void rk_zipf_init(rk_zipf *z, uint64_t rows, rk_rng *rng) {
    z->rows = rows;
    z->cdf = malloc(rows * sizeof *z->cdf);
    z->perm = malloc(rows * sizeof *z->perm);
    if (!z->cdf || !z->perm) {
        fprintf(stderr, "zipf: out of memory for %llu keys\n", (unsigned long long)rows);
        exit(1);
    }
    for (uint64_t i = 0; i < rows; i++) z->perm[i] = i;
    for (uint64_t i = rows - 1; i > 0; i--) {
        uint64_t j = rk_rng_below(rng, i + 1), t = z->perm[i];
        z->perm[i] = z->perm[j], z->perm[j] = t;
    }
}

void rk_zipf_free(rk_zipf *z) {
    free(z->cdf);
    free(z->perm);
}

void rk_zipf_set(rk_zipf *z, double s) {
    double acc = 0;
    for (uint64_t k = 0; k < z->rows; k++) {
        acc += pow((double)(k + 1), -s);
        z->cdf[k] = acc;
    }
    for (uint64_t k = 0; k < z->rows; k++) z->cdf[k] /= acc;
}

void rk_zipf_batch(const rk_zipf *z, rk_rng *r, uint64_t *keys, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double u = rk_rng_uniform(r);
        uint64_t lo = 0, hi = z->rows - 1;
        while (lo < hi) {
            uint64_t mid = (lo + hi) / 2;
            if (z->cdf[mid] < u) lo = mid + 1;
            else hi = mid;
        }
        keys[i] = z->perm[lo];
    }
}

double rk_bench_pct(const double *v, size_t n, double p) {
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    if (i > 0) i--;
    if (i >= n) i = n - 1;
    return v[i];
}
