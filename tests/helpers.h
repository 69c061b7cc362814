/*
 * tests/helpers.h — helpers shared by several test files (one copy each):
 *   rk_test_encoder_dir  where the real all-MiniLM-L6-v2 weights are
 *                        (scripts/setup-encoder.sh puts them in
 *                        ~/.cache/rankd/models; RK_ENCODER_MODEL or
 *                        RK_MODEL_HOME override), or skip the test with a
 *                        message (fail instead when
 *                        RK_REQUIRE_ENCODER_MODEL=1, as `make test` sets)
 *   rk_test_run          run a shell command, capture stdout + stderr
 */
#ifndef RK_TEST_HELPERS_H
#define RK_TEST_HELPERS_H

#include <sys/wait.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

static inline const char *rk_test_encoder_dir(void) {
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

/* Run a shell command; returns its exit status, stdout+stderr in out[cap]. */
static inline int rk_test_run(const char *cmd, char *out, size_t cap) {
    char full[2048];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif /* RK_TEST_HELPERS_H */
