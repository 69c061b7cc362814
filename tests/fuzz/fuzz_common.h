/*
 * tests/fuzz/fuzz_common.h — shared by the libFuzzer targets (tests/fuzz/
 * fuzz_*.c): the small model config they use and a per-process scratch file
 * for readers that take a path.
 */
#ifndef RK_FUZZ_COMMON_H
#define RK_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core.h"

/* A MovieLens-shaped config small enough to build in milliseconds. */
static const char *const RK_FUZZ_CFG =
    "{\"name\": \"fuzz\", \"version\": \"f1\","
    " \"features\": ["
    "  {\"name\": \"user_id\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 64, \"dim\": 4},"
    "  {\"name\": \"history\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 64, \"dim\": 4, \"pooling\": \"mean\","
    "   \"max_values\": 8},"
    "  {\"name\": \"hour\", \"kind\": \"sparse\", \"side\": \"user\", \"table_size\": 32, \"dim\": 4},"
    "  {\"name\": \"movie_id\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 64, \"dim\": 4},"
    "  {\"name\": \"genres\", \"kind\": \"sparse\", \"side\": \"item\", \"table_size\": 32, \"dim\": 4, \"pooling\": \"sum\"},"
    "  {\"name\": \"year\", \"kind\": \"dense\", \"side\": \"item\", \"log1p\": \"clamp\"}],"
    " \"tower\": {\"type\": \"dcnv2\", \"cross_layers\": 1, \"hidden\": [8]},"
    " \"aliases\": {\"user_id\": \"user_id\", \"recent_item_ids\": \"history\", \"ad_id\": \"movie_id\"}}";

/* Write data to this process's scratch file (for path-taking readers). */
static inline const char *rk_fuzz_file(const uint8_t *data, size_t size, const char *suffix) {
    static char path[256];
    snprintf(path, sizeof path, "/tmp/rk_fuzz_%ld%s", (long)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

#endif /* RK_FUZZ_COMMON_H */
