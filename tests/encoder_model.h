/*
 * tests/encoder_model.h — the one helper of the tests that need the real
 * all-MiniLM-L6-v2 weights (scripts/setup-encoder.sh puts them in
 * ~/.cache/rankd/models): where they are, or skip the test with a message
 * (fail instead when RK_REQUIRE_ENCODER_MODEL=1, as `make test` sets).
 * RK_ENCODER_MODEL (a directory) or RK_MODEL_HOME override the place.
 */
#ifndef RK_TEST_ENCODER_MODEL_H
#define RK_TEST_ENCODER_MODEL_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static const char *rk_test_encoder_dir(void) {
    static char dir[1024];
    const char *e = getenv("RK_ENCODER_MODEL");
    if (e && *e) snprintf(dir, sizeof dir, "%s", e);
    else if ((e = getenv("RK_MODEL_HOME")) && *e) snprintf(dir, sizeof dir, "%s/models/all-MiniLM-L6-v2", e);
    else snprintf(dir, sizeof dir, "%s/.cache/rankd/models/all-MiniLM-L6-v2", getenv("HOME") ? getenv("HOME") : "");
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (rk_path_exists(p)) return dir;
    const char *req = getenv("RK_REQUIRE_ENCODER_MODEL");
    if (req && !strcmp(req, "1")) cr_assert_fail("no model at %s (run scripts/setup-encoder.sh)", dir);
    cr_skip_test("no model at %s: run scripts/setup-encoder.sh to enable this test", dir);
    return NULL;
}

#endif /* RK_TEST_ENCODER_MODEL_H */
