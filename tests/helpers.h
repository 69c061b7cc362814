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

/* A model directory installed by a setup script, or skip the test (fail
 * when require_env is "1", as `make test` sets): $env, else
 * $RK_MODEL_HOME/models/NAME, else ~/.cache/rankd/models/NAME; it must hold
 * model.safetensors. buf[1024] receives the path. */
static inline const char *rk_test_model_dir(char *buf, const char *env, const char *name, const char *require_env,
                                            const char *setup) {
    const char *e = getenv(env);
    if (e && *e) snprintf(buf, 1024, "%s", e);
    else if ((e = getenv("RK_MODEL_HOME")) && *e) snprintf(buf, 1024, "%s/models/%s", e, name);
    else snprintf(buf, 1024, "%s/.cache/rankd/models/%s", getenv("HOME") ? getenv("HOME") : "", name);
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", buf);
    if (rk_path_exists(p)) return buf;
    const char *req = getenv(require_env);
    if (req && !strcmp(req, "1")) cr_assert_fail("no model at %s (run %s)", buf, setup);
    cr_skip_test("no model at %s: run %s to enable this test", buf, setup);
    return NULL;
}

/* all-MiniLM-L6-v2 (scripts/setup-encoder.sh) */
static inline const char *rk_test_encoder_dir(void) {
    static char dir[1024];
    return rk_test_model_dir(dir, "RK_ENCODER_MODEL", "all-MiniLM-L6-v2", "RK_REQUIRE_ENCODER_MODEL",
                             "scripts/setup-encoder.sh");
}

/* DINOv2 ViT-S/14 (scripts/setup-vision.sh) */
static inline const char *rk_test_vision_dir(void) {
    static char dir[1024];
    return rk_test_model_dir(dir, "RK_VISION_MODEL", "dinov2-vits14", "RK_REQUIRE_VISION_MODEL",
                             "scripts/setup-vision.sh");
}

/* Run a shell command; returns its exit status, stdout+stderr in out[cap]. */
static inline int rk_test_run(const char *cmd, char *out, size_t cap) {
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#endif /* RK_TEST_HELPERS_H */
