/*
 * embed/embed.h — the whole interface of rankd's embedding module.
 *
 * Feature hashing (the random-hashing baseline: row = xxh64(name "\x1f"
 * value) mod H, via core's rk_feature_row) and embedding bags whose rows
 * come from the store: for one table and one batch, the rows of every bag
 * are deduplicated, fetched in one batched store call, and pooled with
 * nn's rk_embedding_bag_forward — the same op training uses on RAM tables,
 * so a served pooled vector is bit-identical to the trained one.
 */
#ifndef RK_EMBED_H
#define RK_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "nn.h"
#include "store.h"

/* Per-thread scratch for pooled lookups of up to max_keys values per call
 * and rows of up to max_dim floats. Allocated once (create/destroy); a call
 * never allocates. */
typedef struct rk_embed_scratch rk_embed_scratch;
rk_status rk_embed_scratch_create(size_t max_keys, int max_dim, rk_embed_scratch **out, rk_err *err);
void rk_embed_scratch_destroy(rk_embed_scratch *s);

/* Pooled embedding bag over store table t (dimension d):
 *   out[b, 0:d] (row stride out_stride) = pool of rows[offsets[b]..offsets[b+1])
 * offsets: [B+1]; total values offsets[B] <= max_keys else RK_ETOOBIG.
 * *n_unique (may be NULL) receives the number of distinct rows fetched. */
rk_status rk_embed_bag_store(rk_store *st, int t, int d, const uint32_t *offsets, const uint64_t *rows,
                             int B, rk_bag_mode mode, float *out, size_t out_stride,
                             rk_embed_scratch *scr, size_t *n_unique, rk_err *err);

/* ================================================================ text encoder
 *
 * A BERT-family sentence encoder (all-MiniLM-L6-v2 and any checkpoint of
 * the same architecture in a HuggingFace-layout directory): a WordPiece
 * tokenizer equal to HuggingFace's, and (below) the transformer with mean
 * pooling and L2 normalization, as sentence-transformers computes it.
 */

/* ---------------------------------------------------------------- tokenizer */

/* Options of BERT's basic tokenizer (HF tokenizer_config.json names in
 * brackets). Defaults (RK_TOKENIZER_OPTS_DEFAULT) are the uncased BERT ones. */
typedef struct {
    int lowercase;      /* [do_lower_case] 1: full Unicode lower-casing. Default 1. */
    int strip_accents;  /* [strip_accents] 1: NFD then drop Mn; -1 (HF's null):
                           same as lowercase. Default -1. */
    int split_cjk;      /* [tokenize_chinese_chars] each CJK ideograph is a word. Default 1. */
    int max_word_chars; /* words longer than this (in characters, after
                           normalization) become [UNK]; 1..200. Default 100. */
} rk_tokenizer_opts;
#define RK_TOKENIZER_OPTS_DEFAULT {1, -1, 1, 100}

/* Read-only once opened: one tokenizer may serve several threads at once. */
typedef struct rk_tokenizer rk_tokenizer;

/* Open a WordPiece vocabulary (vocab.txt: one token per line, id = line
 * number, the last of repeated lines wins). opts may be NULL (defaults).
 * The vocabulary must hold [CLS], [SEP], [PAD] and [UNK].
 * Errors: RK_EIO/RK_ENOTFOUND (file, from rk_read_file), RK_EFORMAT ("PATH:
 * empty vocabulary", "PATH: the vocabulary has no '[UNK]' token"),
 * RK_EINVAL (options), RK_ENOMEM. Free with rk_tokenizer_close. */
rk_status rk_tokenizer_open(const char *vocab_path, const rk_tokenizer_opts *opts, rk_tokenizer **out,
                            rk_err *err);
/* Same from a HuggingFace model directory: DIR/vocab.txt, with options from
 * DIR/tokenizer_config.json when present (do_lower_case, strip_accents,
 * tokenize_chinese_chars; defaults otherwise). */
rk_status rk_tokenizer_open_dir(const char *dir, rk_tokenizer **out, rk_err *err);
void rk_tokenizer_close(rk_tokenizer *t);

size_t rk_tokenizer_vocab_size(const rk_tokenizer *t);
int32_t rk_tokenizer_pad_id(const rk_tokenizer *t);
/* Token text of an id (borrowed, valid until close), or NULL if out of range. */
const char *rk_tokenizer_token(const rk_tokenizer *t, int32_t id);

/* Tokenize one UTF-8 text of len bytes (NUL bytes inside are allowed and
 * dropped, as HF does) into ids[0 .. *n_ids): [CLS] pieces [SEP], keeping the
 * first max_len - 2 pieces (HF's truncation of one sequence). ids holds
 * max_len int32 (caller-owned); max_len >= 2. Never allocates; thread-safe.
 * Normalization and splitting: see embed/tokenizer.c's header comment
 * (Devlin et al. 2019, "BERT", §3 and Google's tokenization.py; HF
 * tokenizers' BertNormalizer/BertPreTokenizer/WordPiece).
 * Errors: RK_EINVAL "invalid UTF-8 at byte N" (the whole text is checked,
 * also past the truncation point), RK_EINVAL on max_len < 2. */
rk_status rk_tokenizer_encode(const rk_tokenizer *t, const char *text, size_t len, int max_len, int32_t *ids,
                              int *n_ids, rk_err *err);

/* Tokenize n texts into a padded batch, as HF's tokenizer(padding=True):
 * ids and mask are caller-owned buffers of n * max_len entries; on return
 * they hold [n, *seq_len] row-major (seq_len = the longest row, <= max_len),
 * rows padded with [PAD] and mask 0 (mask 1 on real tokens). lens may be
 * NULL (texts NUL-terminated). Errors as rk_tokenizer_encode, prefixed with
 * "text I: ". */
rk_status rk_tokenizer_encode_batch(const rk_tokenizer *t, const char *const *texts, const size_t *lens, int n,
                                    int max_len, int32_t *ids, uint8_t *mask, int *seq_len, rk_err *err);

#endif /* RK_EMBED_H */
