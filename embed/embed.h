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

/* ---------------------------------------------------------------- encoder */

/* A BERT checkpoint's architecture, from HF config.json. */
typedef struct {
    int vocab_size;      /* rows of the word-embedding table */
    int hidden;          /* H: hidden_size */
    int n_layers;        /* num_hidden_layers */
    int n_heads;         /* num_attention_heads; H % n_heads == 0 */
    int intermediate;    /* I: intermediate_size (feed-forward width) */
    int max_position;    /* max_position_embeddings */
    int type_vocab;      /* type_vocab_size (default 2) */
    float layer_norm_eps; /* default 1e-12 */
} rk_bert_config;

/* Parse DIR/config.json. Required integers: vocab_size, hidden_size,
 * num_hidden_layers, num_attention_heads, intermediate_size,
 * max_position_embeddings. When present, model_type must be "bert",
 * hidden_act "gelu" (the erf form) and position_embedding_type "absolute".
 * Errors (RK_EFORMAT unless noted), e.g. "DIR/config.json: missing integer
 * 'hidden_size'", "DIR/config.json: hidden_act 'relu' is not supported (only
 * 'gelu')", "DIR/config.json: hidden_size 384 is not a multiple of
 * num_attention_heads 5"; RK_ENOTFOUND when the file is missing. */
rk_status rk_bert_config_load(const char *dir, rk_bert_config *c, rk_err *err);

/* Options (RK_TEXT_ENCODER_OPTS_DEFAULT). */
typedef struct {
    int threads;    /* OpenBLAS threads (openblas_set_num_threads, which is
                       PROCESS-WIDE); 0 = leave OpenBLAS' setting. When > 1,
                       chunks of fewer than 64 tokens (a batch of one or two
                       short texts) run on one thread, which is faster there;
                       encode switches the process-wide setting to match.
                       Default 0. */
    int max_len;    /* tokens per text incl. [CLS]/[SEP]; 0 = the model's
                       (sentence_bert_config.json max_seq_length, else
                       max_position_embeddings). Default 0. */
    int max_tokens; /* workspace size in tokens (>= max_len is enforced);
                       memory is about max_tokens * (6 H + I) * 4 bytes
                       (63 MB for all-MiniLM-L6-v2 at 4096). Default 4096. */
} rk_text_encoder_opts;
#define RK_TEXT_ENCODER_OPTS_DEFAULT {0, 0, 4096}

/* A loaded encoder: weights, tokenizer and one activation workspace. One
 * handle serves one thread at a time (encode writes its workspace); open one
 * per worker for parallel serving. */
typedef struct rk_text_encoder rk_text_encoder;

/* Open a HuggingFace-layout model directory: config.json, vocab.txt
 * (+ tokenizer_config.json), model.safetensors (F32; tensor names as
 * BertModel's state_dict, optionally prefixed "bert."), and optionally
 * sentence-transformers' sentence_bert_config.json (max_seq_length),
 * 1_Pooling/config.json (must be mean pooling) and modules.json (L2
 * normalization iff it lists a Normalize module; without modules.json the
 * output is normalized). Reads the weights once into one allocation and
 * allocates the workspace; encode never allocates afterwards.
 * Errors name the file and the thing: missing file (RK_ENOTFOUND, "DIR/
 * model.safetensors: No such file or directory"), truncated or corrupt
 * safetensors (RK_EFORMAT, from core's reader), a tensor whose shape
 * disagrees with config.json (RK_ESHAPE, "DIR/model.safetensors: tensor
 * 'embeddings.word_embeddings.weight' has shape [30522,384], the reader
 * expects [30522,256]"), a missing tensor (RK_ENOTFOUND), non-finite weights
 * (RK_ENUMERIC), config errors as rk_bert_config_load, RK_ENOMEM.
 * opts may be NULL. Free with rk_text_encoder_close. */
rk_status rk_text_encoder_open(const char *dir, const rk_text_encoder_opts *opts, rk_text_encoder **out,
                               rk_err *err);
void rk_text_encoder_close(rk_text_encoder *e);
/* Identity of the encoder weights in dir: "xxh64:" and 16 hex digits, the
 * XXH64 of dir/model.safetensors's bytes, into out[cap >= 23]. Recorded by
 * `rank encode text` (metadata "encoder") and, through `rank sid`, in the
 * item records' version, so rankd --encoder can check it is the same
 * encoder. Reads the whole file. */
rk_status rk_text_encoder_identity(const char *dir, char *out, size_t cap, rk_err *err);

const rk_bert_config *rk_text_encoder_config(const rk_text_encoder *e);
int rk_text_encoder_dim(const rk_text_encoder *e);     /* H: floats per embedding */
int rk_text_encoder_max_len(const rk_text_encoder *e); /* tokens per text, incl. [CLS]/[SEP] */
/* The encoder's tokenizer (borrowed; valid until close). */
const rk_tokenizer *rk_text_encoder_tokenizer(const rk_text_encoder *e);

/* Encode n UTF-8 texts (lens[i] bytes each; lens NULL: NUL-terminated) into
 * out[n, dim] (caller-owned): tokenize (truncating at max_len), run the
 * encoder on packed sequences, mean-pool over each text's tokens including
 * [CLS] and [SEP], L2-normalize — sentence-transformers' encode() for
 * all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT", §3 MEAN
 * pooling). Texts are processed in chunks that fit the workspace, so any n
 * works; the result does not depend on n or chunking beyond float rounding
 * of the BLAS kernels. Never allocates.
 * Errors: RK_EINVAL "text I: invalid UTF-8 at byte N" (out is then partly
 * written). */
rk_status rk_text_encoder_encode(rk_text_encoder *e, const char *const *texts, const size_t *lens, int n,
                                 float *out, rk_err *err);

/* ================================================================ vision encoder
 *
 * A DINOv2 vision transformer (Oquab et al. 2023; ViT-S/14 as installed by
 * scripts/setup-vision.sh) and its input path: JPEG/PNG bytes decoded with
 * libjpeg-turbo/libpng to RGB, the DINOv2 evaluation transform (PIL's
 * bicubic resize of the shorter side to 256, centre crop 224, ImageNet
 * mean/std), the transformer, the CLS output. See embed/image.c and
 * embed/vision_encoder.c.
 */

#define RK_VISION_RESIZE 256 /* shorter side after resize */
#define RK_VISION_CROP 224   /* centre crop: the encoder's input size */

/* ---------------------------------------------------------------- images */

/* An 8-bit RGB image: rgb[h, w, 3] row-major, owned (rk_image_free). */
typedef struct {
    int w, h;
    uint8_t *rgb;
} rk_image;

/* Limits checked before anything is allocated for pixels. */
typedef struct {
    uint64_t max_pixels; /* declared width x height; default 40,000,000 */
    size_t max_bytes;    /* encoded size; default 64 MiB */
} rk_image_limits;
#define RK_IMAGE_LIMITS_DEFAULT {40000000ull, (size_t)64 << 20}

/* Decode JPEG or PNG bytes (told apart by their magic) into out (RGB, as
 * PIL's convert("RGB"): grey replicated, palette expanded, alpha dropped,
 * 16-bit to the high byte). lim NULL: defaults. Peak memory is bounded by
 * max_pixels (embed/image.c's header states the bound).
 * Errors (out is then empty): RK_EFORMAT "empty image data (0 bytes)",
 * "not a JPEG or PNG image (first bytes ..)", "corrupt JPEG: <libjpeg's
 * message>", "truncated JPEG: ...", "corrupt PNG: <libpng's message>",
 * "JPEG: CMYK/YCCK colour is not supported ...", "PNG: zero-size image";
 * RK_ETOOBIG "JPEG: 100000x100000 pixels is over the limit of N pixels" or
 * bytes over max_bytes; RK_ENOMEM. */
rk_status rk_image_decode(const void *data, size_t len, const rk_image_limits *lim, rk_image *out, rk_err *err);
/* Same from a file; errors prefixed with the path. */
rk_status rk_image_load(const char *path, const rk_image_limits *lim, rk_image *out, rk_err *err);
void rk_image_free(rk_image *im);

/* The DINOv2 eval transform (torchvision Resize(resize, BICUBIC) on a PIL
 * image, CenterCrop(crop), ToTensor, Normalize(ImageNet)): out[3, crop,
 * crop] (caller-owned), channel-major. Equal to PIL 10's bytes before
 * normalization (same fixed-point algorithm). Allocates a small scratch
 * (src_height x crop x 3 bytes). Errors: RK_EINVAL (resize < crop),
 * RK_EFORMAT (aspect ratio beyond 2^24 / resize), RK_ENOMEM. */
rk_status rk_image_preprocess(const rk_image *im, int resize, int crop, float *out, rk_err *err);

/* ---------------------------------------------------------------- encoder */

/* A Dinov2 checkpoint's architecture, from HF config.json. */
typedef struct {
    int hidden, n_layers, n_heads, intermediate; /* intermediate = hidden * mlp_ratio */
    int patch;          /* patch_size (conv kernel = stride) */
    int native_size;    /* image_size: the position grid is native_size / patch square */
    int channels;       /* num_channels (3) */
    float layer_norm_eps; /* default 1e-6 */
    float cubic_a;      /* position-grid resize's cubic coefficient (-0.75) */
} rk_vit_config;

/* Parse DIR/config.json (model_type "dinov2", hidden_act "gelu" when
 * present; required: hidden_size, num_hidden_layers, num_attention_heads,
 * patch_size, image_size). Errors RK_EFORMAT/RK_ENOTFOUND naming the file
 * and key, as rk_bert_config_load. */
rk_status rk_vit_config_load(const char *dir, rk_vit_config *c, rk_err *err);

typedef enum { RK_VIT_POOL_CLS = 0, RK_VIT_POOL_MEAN = 1 } rk_vit_pool;

typedef struct {
    int threads;    /* OpenBLAS threads (process-wide); 0 = leave. Default 0. */
    int image_size; /* input side in pixels, multiple of patch; 0 = 224 */
    int max_batch;  /* images per forward; workspace ~ max_batch x 11 MB
                       for ViT-S/14 at 224. Default 16. */
    int pool;       /* RK_VIT_POOL_CLS (default: the CLS token after the final
                       LayerNorm, Dinov2Model's pooler_output) or
                       RK_VIT_POOL_MEAN (mean of the patch tokens) */
    int normalize;  /* 1: L2-normalize the output. Default 0. */
} rk_vision_encoder_opts;
#define RK_VISION_ENCODER_OPTS_DEFAULT {0, 0, 16, RK_VIT_POOL_CLS, 0}

/* Weights + workspace; one handle serves one thread at a time. */
typedef struct rk_vision_encoder rk_vision_encoder;

/* Open DIR (config.json + model.safetensors, Dinov2Model names). Reads the
 * weights into one allocation, resizes the position grid to the input
 * grid once, allocates the workspace; encode never allocates. Errors name
 * the file and tensor (RK_ENOTFOUND, RK_ESHAPE, RK_EFORMAT, RK_ENUMERIC),
 * RK_EINVAL on options, RK_ENOMEM. Free with rk_vision_encoder_close. */
rk_status rk_vision_encoder_open(const char *dir, const rk_vision_encoder_opts *opts, rk_vision_encoder **out,
                                 rk_err *err);
void rk_vision_encoder_close(rk_vision_encoder *e);
/* "xxh64:" + 16 hex of DIR/model.safetensors (as rk_text_encoder_identity). */
rk_status rk_vision_encoder_identity(const char *dir, char *out, size_t cap, rk_err *err);
const rk_vit_config *rk_vision_encoder_config(const rk_vision_encoder *e);
int rk_vision_encoder_dim(const rk_vision_encoder *e);        /* hidden: floats per embedding */
int rk_vision_encoder_image_size(const rk_vision_encoder *e); /* S: input side */

/* Encode n preprocessed images pixels[n, 3, S, S] (rk_image_preprocess's
 * output, back to back) into out[n, dim]. Never allocates; batches of more
 * than max_batch run in chunks (results independent of chunking up to
 * BLAS rounding). Errors: RK_ENUMERIC "image I: non-finite pixel ...". */
rk_status rk_vision_encoder_encode(rk_vision_encoder *e, const float *pixels, int n, float *out, rk_err *err);

/* Like rk_text_encoder_encode, but the last layer's token states instead of
 * one pooled vector per text (EmbSum's content poly-embedding attends over
 * them; first-token or mean pooling of them gives a session vector):
 * text i's tokens ([CLS] .. [SEP], at most max_len, 0 = the encoder's
 * max_len) are rows offsets[i] .. offsets[i+1] of states [*, dim].
 * states: cap_rows * dim floats, offsets: n + 1 int32, both caller-owned.
 * Errors: as rk_text_encoder_encode; RK_ETOOBIG when the tokens need more
 * than cap_rows rows (n * max_len always suffices). Never allocates. */
rk_status rk_text_encoder_encode_tokens(rk_text_encoder *e, const char *const *texts, const size_t *lens, int n,
                                        int max_len, float *states, size_t cap_rows, int32_t *offsets, rk_err *err);

#endif /* RK_EMBED_H */
