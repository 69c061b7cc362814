/*
 * bench/dump_tables.c — export a bundle's embedding tables (RocksDB, one
 * column family per sparse feature) to one safetensors file, for the
 * PyTorch reference server of `make bench-serve` (bench/ref/torch_server.py).
 *
 *   dump_tables BUNDLE OUT.safetensors
 *
 * Tensor "emb.<feature>" is [table_size, dim] float32: row r is the row the
 * store returns for key r. Reads the store through store.h (the same reads
 * rankd makes), 4,096 rows per batched lookup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rank.h"
#include "store.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dump_tables BUNDLE OUT.safetensors\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.json", argv[1]);
    char *text;
    rk_err e = {0};
    rk_model_cfg cfg;
    if (rk_read_file(path, &text, NULL, &e) || rk_model_cfg_parse(text, &cfg, &e)) {
        fprintf(stderr, "dump_tables: %s: %s\n", path, e.msg);
        return 1;
    }
    rk_free(text);
    const char **names = calloc((size_t)cfg.n_features, sizeof *names);
    int *dims = calloc((size_t)cfg.n_features, sizeof *dims), *feat = calloc((size_t)cfg.n_features, sizeof *feat), n = 0;
    if (!names || !dims || !feat) {
        fprintf(stderr, "dump_tables: out of memory\n");
        return 1;
    }
    for (int f = 0; f < cfg.n_features; f++) {
        if (cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        names[n] = cfg.features[f].name;
        dims[n] = cfg.features[f].dim;
        feat[n++] = f;
    }
    snprintf(path, sizeof path, "%s/tables", argv[1]);
    rk_store *st;
    if (rk_store_open(path, names, dims, n, &st, &e)) {
        fprintf(stderr, "dump_tables: %s\n", e.msg);
        return 1;
    }
    rk_st_writer *w;
    if (rk_st_writer_create(&w, &e)) return 1;
    float **bufs = calloc((size_t)n, sizeof *bufs);
    uint64_t keys[4096];
    for (int t = 0; t < n; t++) {
        uint64_t rows = cfg.features[feat[t]].table_size;
        bufs[t] = malloc(rows * (size_t)dims[t] * sizeof(float));
        for (uint64_t r0 = 0; r0 < rows; r0 += 4096) {
            size_t k = rows - r0 < 4096 ? (size_t)(rows - r0) : 4096;
            for (size_t i = 0; i < k; i++) keys[i] = r0 + i;
            if (rk_store_get(st, t, keys, k, bufs[t] + r0 * (size_t)dims[t], NULL, &e)) {
                fprintf(stderr, "dump_tables: %s\n", e.msg);
                return 1;
            }
        }
        char name[128];
        snprintf(name, sizeof name, "emb.%s", names[t]);
        int64_t shape[2] = {(int64_t)rows, dims[t]};
        if (rk_st_writer_add_f32(w, name, bufs[t], 2, shape, &e)) {
            fprintf(stderr, "dump_tables: %s\n", e.msg);
            return 1;
        }
    }
    if (rk_st_writer_write(w, argv[2], &e)) {
        fprintf(stderr, "dump_tables: %s\n", e.msg);
        return 1;
    }
    rk_st_writer_destroy(w);
    for (int t = 0; t < n; t++) free(bufs[t]);
    free(bufs);
    rk_store_close(st);
    free(names);
    free(dims);
    free(feat);
    rk_model_cfg_free(&cfg);
    printf("dump_tables: %d tables -> %s\n", n, argv[2]);
    return 0;
}
