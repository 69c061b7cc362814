/*
 * tests/fuzz/fuzz_decode.c — libFuzzer target, differential: rankd's own
 * RankRequest decoder (serve/decode.c) against the reference path it
 * replaces for valid requests (rk_pb_check, then protobuf-c's unpack). Both
 * must accept or both refuse every input, and when they accept, decode the
 * same request (tests/fuzz/rank_request_eq.h). Any difference aborts.
 * Seeds: the fuzz_request corpus (valid requests) and this target's own.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"
#include "rank.pb-c.h"
#include "rank_request_eq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int accepted;
    char why[512];
    if (rk_decode_both(data, size, &accepted, why, sizeof why)) {
        fprintf(stderr, "fuzz_decode: %s\n", why);
        abort();
    }
    return 0;
}
