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
    rk_blocks b = {0};
    ProtobufCAllocator a = {rk_blocks_alloc, rk_blocks_nofree, &b};
    Rankd__V1__RankRequest *mine = NULL;
    int rc = rk_rank_request_decode(data, size, &a, &mine);
    char msg[256];
    Rankd__V1__RankRequest *ref = NULL;
    if (!rk_pb_check(&rankd__v1__rank_request__descriptor, data, size, msg, sizeof msg))
        ref = rankd__v1__rank_request__unpack(NULL, size, data);
    if ((rc == 0) != (ref != NULL)) {
        fprintf(stderr, "fuzz_decode: rankd's decoder %s, the reference %s (%s)\n", rc ? "refuses" : "accepts",
                ref ? "accepts" : "refuses", msg);
        abort();
    }
    if (ref) {
        const char *d = rk_rank_request_diff(mine, ref);
        if (d) {
            fprintf(stderr, "fuzz_decode: decoded requests differ in %s\n", d);
            abort();
        }
        rankd__v1__rank_request__free_unpacked(ref, NULL);
    }
    rk_blocks_free(&b);
    return 0;
}
