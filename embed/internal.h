/*
 * embed/internal.h — private to embed/: the generated Unicode tables of the
 * BERT tokenizer (embed/bert_unicode.c, written by
 * tests/ref/gen_unicode_tables.py), and the config.json helpers the text and
 * vision encoders share. Other modules include embed.h only.
 */
#ifndef RK_EMBED_INTERNAL_H
#define RK_EMBED_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* One entry of a code point map: cp -> pool[off .. off+len). */
typedef struct {
    uint32_t cp;
    uint16_t off;
    uint8_t len;
} rk_ucd_map;

extern const char rk_ucd_version[];

/* Sorted, disjoint, inclusive [lo, hi] ranges. */
extern const uint32_t rk_ucd_control[][2];
extern const size_t rk_ucd_control_n;
extern const uint32_t rk_ucd_space[][2];
extern const size_t rk_ucd_space_n;
extern const uint32_t rk_ucd_punct[][2];
extern const size_t rk_ucd_punct_n;

/* NFD minus nonspacing marks (Hangul syllables excluded: algorithmic). */
extern const rk_ucd_map rk_ucd_strip[];
extern const size_t rk_ucd_strip_n;
extern const uint32_t rk_ucd_strip_pool[];

/* Full lower-case mapping of one code point. */
extern const rk_ucd_map rk_ucd_lower[];
extern const size_t rk_ucd_lower_n;
extern const uint32_t rk_ucd_lower_pool[];

/* ---------------------------------------------------------------- config.json */

#include <jansson.h>

#include "core.h"

/* Integer j[key] in lo..hi into *out; when absent: def if def >= 0, else
 * RK_EFORMAT "PATH: missing integer 'KEY'". */
rk_status rk_embed_cfg_int(json_t *j, const char *path, const char *key, int def, int lo, int hi, int *out,
                          rk_err *err);
/* When j[key] is present it must be the string want, else RK_EFORMAT
 * "PATH: KEY 'V' is not supported (only 'WANT')". */
rk_status rk_embed_cfg_str_is(json_t *j, const char *path, const char *key, const char *want, rk_err *err);
/* Load a JSON object file (new reference; NULL with *s and err set:
 * RK_ENOTFOUND missing, RK_EFORMAT "PATH: line N: ..." or not an object). */
json_t *rk_embed_load_json(const char *path, rk_err *err, rk_status *s);

#endif /* RK_EMBED_INTERNAL_H */
