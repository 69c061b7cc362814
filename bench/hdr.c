/*
 * bench/hdr.c — log-linear histogram (see hdr.h). The index arithmetic is
 * HdrHistogram's with unit magnitude 0 (lowest discernible value 1):
 *   bucket     = position of the value's highest bit above the sub-bucket range
 *   sub-bucket = value >> bucket, in [half_count, count) except in bucket 0
 *   index      = (bucket + 1) * half_count + (sub-bucket - half_count)
 */
#include "hdr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bucket_index(const rk_hdr *h, int64_t v) {
    int pow2ceiling = 64 - __builtin_clzll((uint64_t)(v | h->sub_bucket_mask));
    return pow2ceiling - h->sub_bucket_count_mag;
}

static size_t counts_index(const rk_hdr *h, int64_t v) {
    int b = bucket_index(h, v);
    int64_t sb = v >> b;
    return (size_t)(((int64_t)(b + 1) << (h->sub_bucket_count_mag - 1)) + (sb - h->sub_bucket_half_count));
}

/* Lowest value and width of counter i. */
static void index_range(const rk_hdr *h, size_t i, int64_t *lo, int64_t *width) {
    int b = (int)(i >> (h->sub_bucket_count_mag - 1)) - 1;
    int64_t sb = (int64_t)(i & (size_t)(h->sub_bucket_half_count - 1)) + h->sub_bucket_half_count;
    if (b < 0) {
        sb -= h->sub_bucket_half_count;
        b = 0;
    }
    *lo = sb << b;
    *width = (int64_t)1 << b;
}

int rk_hdr_init(rk_hdr *h, int64_t highest, int sigfigs) {
    memset(h, 0, sizeof *h);
    if (sigfigs < 1 || sigfigs > 5 || highest < 2) return -1;
    int64_t largest_single_unit = 2 * (int64_t)pow(10, sigfigs);
    int mag = (int)ceil(log2((double)largest_single_unit));
    h->sub_bucket_count_mag = mag < 1 ? 1 : mag;
    h->sub_bucket_count = (int64_t)1 << h->sub_bucket_count_mag;
    h->sub_bucket_half_count = h->sub_bucket_count / 2;
    h->sub_bucket_mask = h->sub_bucket_count - 1;
    int64_t untrackable = h->sub_bucket_count;
    int buckets = 1;
    while (untrackable <= highest) {
        if (untrackable > INT64_MAX / 2) {
            buckets++;
            break;
        }
        untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = (size_t)(buckets + 1) * (size_t)h->sub_bucket_half_count;
    h->highest = highest;
    h->sigfigs = sigfigs;
    h->counts = calloc(h->counts_len, sizeof *h->counts);
    if (!h->counts) return -1;
    h->min = INT64_MAX;
    return 0;
}

void rk_hdr_free(rk_hdr *h) {
    free(h->counts);
    h->counts = NULL;
}

void rk_hdr_reset(rk_hdr *h) {
    memset(h->counts, 0, h->counts_len * sizeof *h->counts);
    h->total = h->clamped = 0;
    h->min = INT64_MAX;
    h->max = 0;
    h->sum = 0;
}

void rk_hdr_record_n(rk_hdr *h, int64_t v, uint64_t n) {
    if (n == 0) return;
    if (v < 0) v = 0;
    if (v > h->highest) {
        v = h->highest;
        h->clamped += n;
    }
    size_t i = counts_index(h, v);
    if (i >= h->counts_len) i = h->counts_len - 1; /* cannot happen for v <= highest */
    h->counts[i] += n;
    h->total += n;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->sum += (double)v * (double)n;
}

int rk_hdr_add(rk_hdr *dst, const rk_hdr *src) {
    if (dst->highest != src->highest || dst->sigfigs != src->sigfigs) return -1;
    for (size_t i = 0; i < dst->counts_len; i++) dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->clamped += src->clamped;
    if (src->total) {
        if (src->min < dst->min) dst->min = src->min;
        if (src->max > dst->max) dst->max = src->max;
    }
    dst->sum += src->sum;
    return 0;
}

int64_t rk_hdr_lowest_equivalent(const rk_hdr *h, int64_t v) {
    int64_t lo, w;
    index_range(h, counts_index(h, v < 0 ? 0 : v), &lo, &w);
    return lo;
}

int64_t rk_hdr_highest_equivalent(const rk_hdr *h, int64_t v) {
    int64_t lo, w;
    index_range(h, counts_index(h, v < 0 ? 0 : v), &lo, &w);
    return lo + w - 1;
}

int64_t rk_hdr_value_at(const rk_hdr *h, double p) {
    if (h->total == 0) return 0;
    if (p >= 100.0) return h->max;
    if (p < 0) p = 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->total);
    if (want < 1) want = 1;
    uint64_t cum = 0;
    for (size_t i = 0; i < h->counts_len; i++) {
        cum += h->counts[i];
        if (cum >= want) {
            int64_t lo, w;
            index_range(h, i, &lo, &w);
            int64_t v = lo + w - 1;
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double rk_hdr_mean(const rk_hdr *h) {
    return h->total ? h->sum / (double)h->total : 0.0;
}
