/*
 * bench/hdr.h — a small log-linear latency histogram with bounded relative
 * error, after HdrHistogram (Gil Tene; the C port HdrHistogram_c).
 *
 * Values are non-negative integers (rank-bench records nanoseconds). The
 * range [1, highest] is split into power-of-two buckets, each split linearly
 * into sub-buckets; with sigfigs significant decimal digits a sub-bucket is
 * at most 1 / 10^sigfigs of its value wide (sub_bucket_count = the next
 * power of two >= 2 * 10^sigfigs), so every recorded value is known to
 * within 10^-sigfigs relative error. Percentiles report the highest value
 * equivalent to the bucket that holds the requested rank (as HdrHistogram
 * does); min, max and the mean are exact.
 *
 * Memory: (bucket_count + 1) * sub_bucket_count / 2 counters of 8 bytes —
 * 3 digits over 1 ns .. 100 s is about 270 KiB. Not thread-safe: one
 * histogram per thread, merged with rk_hdr_add.
 */
#ifndef RK_BENCH_HDR_H
#define RK_BENCH_HDR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t highest;          /* largest trackable value; larger ones are clamped to it */
    int sigfigs;              /* 1..5 */
    int sub_bucket_count_mag; /* log2(sub_bucket_count) */
    int64_t sub_bucket_count, sub_bucket_half_count, sub_bucket_mask;
    int bucket_count;
    size_t counts_len;
    uint64_t *counts;         /* [counts_len] */
    uint64_t total;           /* values recorded */
    uint64_t clamped;         /* values above highest (recorded as highest) */
    int64_t min, max;         /* exact; min = INT64_MAX when empty */
    double sum;               /* for the mean */
} rk_hdr;

/* Allocate counters for values in [0, highest] with sigfigs significant
 * digits (1..5). Returns 0, or -1 on bad arguments or out of memory.
 * Free with rk_hdr_free. */
int rk_hdr_init(rk_hdr *h, int64_t highest, int sigfigs);
void rk_hdr_free(rk_hdr *h);
void rk_hdr_reset(rk_hdr *h);

/* Record value (negative values count as 0) n times. */
void rk_hdr_record_n(rk_hdr *h, int64_t value, uint64_t n);
static inline void rk_hdr_record(rk_hdr *h, int64_t value) { rk_hdr_record_n(h, value, 1); }

/* Add every count of src to dst; both must have the same highest and
 * sigfigs. Returns 0, or -1 when they differ. */
int rk_hdr_add(rk_hdr *dst, const rk_hdr *src);

/* Value at percentile p (0..100): the highest value equivalent to the
 * bucket holding the ceil(p/100 * total)-th smallest value, capped at the
 * exact max; 0 when empty. p = 100 gives the exact max. */
int64_t rk_hdr_value_at(const rk_hdr *h, double p);
double rk_hdr_mean(const rk_hdr *h);

/* The range of values recorded in the same counter as v. */
int64_t rk_hdr_lowest_equivalent(const rk_hdr *h, int64_t v);
int64_t rk_hdr_highest_equivalent(const rk_hdr *h, int64_t v);

#endif
