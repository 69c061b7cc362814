/*
 * tests/fuzz/fuzz_tsv.c — libFuzzer target: a TSV data file through
 * rk_dataset_load (rk_read_text, line and tab splitting, the header
 * mapping, labels, numbers with log1p "clamp", sparse values). Any input
 * must end in RK_OK or an error naming the row / column, never a crash.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "rank.h"

static rk_model_cfg cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    rk_err e = {0};
    if (rk_model_cfg_parse(RK_FUZZ_CFG, &cfg, &e)) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = rk_fuzz_file(data, size, ".tsv");
    rk_dataset d;
    rk_err e = {0};
    if (rk_dataset_load(p, &cfg, &d, &e) == RK_OK) rk_dataset_free(&d);
    else if (!e.msg[0]) abort(); /* every error says what */
    rk_model_cfg c2; /* fit_dense writes the statistics: into a copy, not the shared config */
    if (rk_model_cfg_copy(&c2, &cfg, &e) != RK_OK) return 0;
    (void)rk_dataset_fit_dense(p, &c2, &e);
    rk_model_cfg_free(&c2);
    return 0;
}
