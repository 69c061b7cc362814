/*
 * tests/fuzz/fuzz_model_json.c — libFuzzer target: model.json through
 * rk_model_cfg_parse (every key, range and cross-check); what parses must
 * also build a model.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "rank.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    rk_model_cfg c;
    rk_err e = {0};
    rk_status s = rk_model_cfg_parse(text, &c, &e);
    free(text);
    if (s != RK_OK) {
        if (!e.msg[0]) abort();
        return 0;
    }
    size_t params = 0;
    for (int f = 0; f < c.n_features; f++)
        if (c.features[f].kind == RK_FEAT_SPARSE) params += (size_t)c.features[f].table_size * (size_t)c.features[f].dim;
    rk_model *m;
    /* keep each run small */
    if (params <= ((size_t)1 << 22) && !c.n_members && rk_model_create(&c, &m, &e) == RK_OK) rk_model_destroy(m);
    rk_model_cfg_free(&c); /* a parsed config owns its arrays */
    return 0;
}
