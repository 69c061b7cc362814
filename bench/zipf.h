/*
 * bench/zipf.h — the Zipf key stream of the store benchmarks (bench-store,
 * bench-cluster): keys drawn from a Zipf distribution of exponent s over a
 * random permutation of [0, rows), so hot keys are spread over the table.
 * Also the percentile helper both report with.
 */
#ifndef RK_BENCH_ZIPF_H
#define RK_BENCH_ZIPF_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

typedef struct {
    uint64_t rows;
    double *cdf;    /* [rows] */
    uint64_t *perm; /* [rows] */
} rk_zipf;

/* Allocate for rows keys and draw the permutation from rng; exits on no memory (bench only). */
void rk_zipf_init(rk_zipf *z, uint64_t rows, rk_rng *rng);
void rk_zipf_free(rk_zipf *z);
/* Set the exponent s. */
void rk_zipf_set(rk_zipf *z, double s);
/* Draw n keys. */
void rk_zipf_batch(const rk_zipf *z, rk_rng *r, uint64_t *keys, size_t n);
/* The p-th percentile (0..100) of v[0..n), sorted ascending. */
double rk_bench_pct(const double *v, size_t n, double p);

#endif
