/*
 * bench/bench_store_crash.c — kill -9 durability of online updates:
 * N trials (default 120) of bench/store_crash.h, each killing the updating
 * child with SIGKILL after a random delay of 5..150 ms.
 * Last line: bench-store-crash: trials=N acked=N lost=0 torn=0
 */
#include <stdio.h>
#include <stdlib.h>

#include "store_crash.h"

int main(int argc, char **argv) {
    int trials = argc > 1 ? atoi(argv[1]) : 120;
    const char *base = argc > 2 ? argv[2] : "build/bench-store-crash";
    rk_rng r;
    rk_rng_seed(&r, 4242);
    uint64_t acked = 0, lost = 0, torn = 0, batches = 0;
    int done = 0;
    double t0 = rk_now();
    for (int t = 0; t < trials; t++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s-%d", base, t);
        long us = 5000 + (long)rk_rng_below(&r, 145000);
        rk_crash_result res;
        if (rk_crash_trial(dir, (uint64_t)t + 1, us, &res)) {
            fprintf(stderr, "bench-store-crash: trial %d: %s\n", t, res.err);
            return 1;
        }
        acked += res.acked, lost += res.lost, torn += res.torn, batches += res.batches;
        done++;
        if (res.lost || res.torn)
            printf("trial %d (kill after %ld us): acked %llu lost %llu torn %llu\n", t, us, (unsigned long long)res.acked,
                   (unsigned long long)res.lost, (unsigned long long)res.torn);
    }
    printf("bench-store-crash: %d trials in %.1fs, %llu acknowledged batches of %d rows, every update WAL-fsynced\n", done,
           rk_now() - t0, (unsigned long long)batches, RK_CRASH_BATCH);
    printf("bench-store-crash: trials=%d acked=%llu lost=%llu torn=%llu\n", done, (unsigned long long)acked,
           (unsigned long long)lost, (unsigned long long)torn);
    return lost || torn ? 1 : 0;
}
