/*
 * rank/service.c — the rankd.v1.Ranker/Rank handler, without gRPC.
 *
 * One call: serialized RankRequest bytes in, serialized RankResponse bytes
 * (or a gRPC status code and a message naming the field) out. server.c owns
 * the transport; this file owns the meaning of a request.
 *
 * How a request becomes a scorer batch: one row per candidate. The user's
 * features (user.sparse, user.dense and the aliases user.user_id,
 * user.recent_item_ids) are added to every row; candidate i's features
 * (candidates[i].sparse, .dense, the alias candidates[i].ad_id) to row i.
 * Features are looked up by name in the model config (model.json
 * "features"); a feature named on the wrong side, unknown, of the wrong kind
 * or given twice on one side is INVALID_ARGUMENT. Sparse values follow the
 * offline reader (rank/dataset.c) exactly, so a served row scores the same as
 * the same row through `rank score`: empty strings are skipped and only the
 * first max_values non-empty values of a feature are kept.
 *
 * Validation is done while filling the batch, in request order, so the
 * first bad field is the one reported. Every string of the request is
 * checked to be UTF-8: protobuf-c accepts anything, but a Python client
 * cannot decode a response that echoes invalid UTF-8 (c-stack.md §3).
 *
 * A plain request takes the direct path (below): its candidates are read
 * from the wire bytes straight into the scorer; anything else, and every
 * error, the tree path: decoded, then validated over the tree. The answer
 * is the same either way.
 *
 * Memory: all buffers are sized at creation for the largest request the
 * server accepts (max_candidates rows). The request is decoded (decode.c;
 * protobuf-c for refused bytes) into a bump arena
 * (the warm block) that is reset, not freed, after each request, so steady
 * state does not call malloc for the request or the model work. A request
 * that decodes larger (unusually many small fields) overflows into chunks
 * mapped for it alone and unmapped when it ends (the arena returns to its
 * warm size; heap chunks stayed with the worker's malloc arena), and may
 * use at most ARENA_PER_MESSAGE_BYTE x max_message_bytes beyond the warm
 * block (RESOURCE_EXHAUSTED past that). The response is refused
 * (RESOURCE_EXHAUSTED) beyond max_message_bytes, like requests.
 */
#include <math.h>
#include <stdalign.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "embed.h"
#include "internal.h"
#include "pbwire.h"
#include "serve.h"
#include "store.h"
#include "rank.pb-c.h"

/* gRPC status codes (grpc/status.h), kept local so this file needs no gRPC. */
enum {
    ST_OK = 0,
    ST_INVALID_ARGUMENT = 3,
    ST_DEADLINE_EXCEEDED = 4,
    ST_NOT_FOUND = 5,
    ST_RESOURCE_EXHAUSTED = 8,
    ST_INTERNAL = 13,
    ST_UNAVAILABLE = 14,
};

#define ARENA_INITIAL (256u << 10)
/* Decoded bytes per wire byte a request may use beyond the warm block.
 * rankd's decoder needs far less (a copy of the request, and for a value
 * string of one character, 3 bytes on the wire, its 8-byte pointer: the
 * string stays in the copy); the bound is protobuf-c's, which decodes when
 * rankd's decoder could not: 24 bytes for that value (its pointer and a
 * 16-byte aligned copy), plus its scan records (~32 bytes per field, in
 * slabs that double, freed only at reset): measured, 1.8 MB of
 * one-character values needs ~50 MB. */
#define ARENA_PER_MESSAGE_BYTE 16u
#define ARENA_ALIGN 16u

/* ------------------------------------------------------------ arena */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    alignas(ARENA_ALIGN) unsigned char data[];
} arena_chunk;

typedef struct {
    unsigned char *base; /* the kept block */
    size_t cap, used;
    arena_chunk *extra;  /* overflow chunks of this request */
    size_t extra_total;  /* bytes handed out from overflow chunks */
    size_t limit;        /* most bytes one request may use beyond the warm block */
    size_t mapped;       /* bytes of the overflow chunks now mapped */
    int exhausted;       /* an allocation hit limit */
} arena;

static void *arena_alloc(void *data, size_t n) {
    arena *a = data;
    n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (n == 0) n = ARENA_ALIGN;
    if (a->used + n <= a->cap) {
        void *p = a->base + a->used;
        a->used += n;
        return p;
    }
    if (a->extra && a->extra->used + n <= a->extra->cap) {
        void *p = a->extra->data + a->extra->used;
        a->extra->used += n;
        a->extra_total += n;
        return p;
    }
    if (a->extra_total + n > a->limit) {
        a->exhausted = 1;
        return NULL;
    }
    /* mapped, not malloc'd: unmapping gives the pages back to the system
     * (glibc keeps freed heap chunks in the worker's malloc arena) */
    size_t cap = n > (1u << 20) ? n : (1u << 20);
    if (cap < a->extra_total) cap = a->extra_total; /* geometric: few chunks */
    if (cap > a->limit - a->extra_total) cap = a->limit - a->extra_total;
    if (cap < n) cap = n;
    void *mp = mmap(NULL, sizeof(arena_chunk) + cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mp == MAP_FAILED) {
        a->exhausted = 1;
        return NULL;
    }
    arena_chunk *c = mp;
    a->mapped += sizeof *c + cap;
    c->cap = cap;
    c->used = n;
    c->next = a->extra;
    a->extra = c;
    a->extra_total += n;
    return c->data;
}

static void arena_free(void *data, void *p) {
    (void)data;
    (void)p; /* released all at once by arena_reset */
}

/* Forget every allocation; unmap the overflow chunks (back to the warm
 * block alone). */
static void arena_reset(arena *a) {
    while (a->extra) {
        arena_chunk *n = a->extra->next;
        munmap(a->extra, sizeof *a->extra + a->extra->cap);
        a->extra = n;
    }
    a->mapped = 0;
    a->used = 0;
    a->extra_total = 0;
    a->exhausted = 0;
}

/* ------------------------------------------------------------ service */

struct seen_set; /* which features a request side already set (validation below) */
static struct seen_set *seen_create(int n_features);
static void seen_destroy(struct seen_set *seen);

#define DIRECT_MAX_LISTED 32 /* sparse and dense entries of one candidate the direct path takes */
typedef struct lay_entry {
    const uint8_t *name; /* its name in the request (features[f].name, the same bytes) */
    size_t len;
    int f;               /* the feature */
    int dense;           /* a dense[] entry, else a sparse[] one */
} lay_entry;

struct rk_service {
    const rk_model *m;
    const rk_model_cfg *cfg;
    struct seen_set *seen;
    rk_server_opts o;
    rk_scorer *scorer;
    arena ar;
    ProtobufCAllocator pballoc;
    float *pctr;                       /* [max_candidates] */
    const char **adp;                  /* [max_candidates] the ad_ids, for the response */
    size_t *adlen;                     /* [max_candidates] their lengths (checked as UTF-8 when set) */
    size_t *ssize;                     /* [max_candidates] the packed size of each Score */
    float *tp;                         /* [max_candidates, n_towers, 2] tower pCTR and weight */
    const char **tname;                /* [n_towers] the towers' names */
    size_t *tnlen;                     /* [n_towers] their lengths */
    uint8_t *out;                      /* packed response */
    size_t out_cap, out_warm;          /* out_warm: its size at creation */
    const char *tower_name;
    int n_towers;                      /* 1, or the ensemble's members */
    rk_stage_times last;               /* stage times of the last OK call */
    rk_device *dev;                    /* towers on a GPU (o.device), or NULL: the CPU */
    int routed;                        /* model_name/version checked by the server (rk_service_set_routed) */
    rk_text_encoder *enc;              /* candidates[i].content_text (o.encoder_dir), or NULL */
    char *text;                        /* [RK_MAX_CONTENT_TEXT_BYTES + 1]: one content_text, NUL-terminated */
    rk_vision_encoder *venc;           /* candidates[i].content_image (o.image_encoder_dir), or NULL */
    float *pix;                        /* [3, 224, 224]: one preprocessed content_image */
    float *cat;                        /* [text dim + image dim]: the request-time content embedding */
    double deadline;                   /* rk_service_set_deadline */
    int (*stop)(void *);
    void *stop_ctx;
    float *mp, *mw;                    /* [n_towers] one candidate's tower pCTRs and weights */
    rk_embsum_bundle *es;              /* the model's EmbSum bundle (<model>/embsum), or NULL */
    int es_feature;                    /* its dense item input, RK_EMBSUM_FEATURE */
    rk_embsum_candidate *es_cand;      /* [max_candidates] */
    uint64_t es_count[3];              /* fallbacks: UPE from recent items, default UPE, CPE from text */
    size_t *vlen;                      /* [max_values_per_row] one sparse feature's value lengths */
    char **vptr;                       /* [max_values_per_row] its values (direct path) */
    pbw_field *cspan;                  /* [max_candidates] the candidates' payloads (direct path) */
    size_t *fnlen;                     /* [n_features] the features' name lengths */
    lay_entry *lay;                    /* [DIRECT_MAX_LISTED] the direct path's layout (direct_candidate) */
    size_t lay_n;
    int lay_ad, lay_ok;
    int direct;                        /* the direct path is on (a model it serves; rk_service_set_direct) */
    uint64_t direct_n[2];              /* requests it scored, requests it gave up */
    int *pred[2];                      /* [n_features] sparse / dense: the feature candidates' sparse[j] /
                                        * dense[j] named last (-1: none); most requests repeat one order */
};

rk_status rk_model_check_encoder(const rk_model *m, const char *dir, rk_err *err) {
    char ident[64];
    rk_status st = rk_text_encoder_identity(dir, ident, sizeof ident, err);
    if (st) return rk_err_prefix(err, "encoder");
    const rk_model_cfg *cfg = rk_model_config(m);
    for (int f = 0; f < cfg->n_features; f++) {
        const rk_feature *ft = &cfg->features[f];
        if (!ft->items || !rk_sid_param_uses_codes(ft->param)) continue;
        const char *v = rk_sid_items_version(ft->items);
        const char *p = strstr(v, "encoder xxh64:");
        if (!p) {
            rk_warn("encoder %s (%s): feature '%s' records version '%s' does not identify its encoder (records "
                    "built before rankd recorded it); not checked: content_text must be encoded by the encoder "
                    "and text template of its embeddings",
                    dir, ident, ft->name, v);
            continue;
        }
        p += strlen("encoder ");
        if (strncmp(p, ident, strlen(ident)))
            return rk_fail(err, RK_EINVAL,
                           "encoder %s is %s, but feature '%s' records were built from embeddings of another "
                           "encoder (records version '%s'); start rankd with that encoder's directory",
                           dir, ident, ft->name, v);
        const char *t = strstr(v, ", text ");
        if (t) rk_info("encoder %s matches feature '%s' records; clients must build content_text as its embeddings' text %s",
                       dir, ft->name, t + 7);
    }
    return RK_OK;
}

/* The "encoder xxh64:X, image 'R'" clause of a records version, or NULL. */
static const char *image_clause(const char *v) {
    for (const char *p = strstr(v, "encoder xxh64:"); p; p = strstr(p + 1, "encoder xxh64:"))
        if (!strncmp(p + strlen("encoder xxh64:") + 16, ", image '", 9)) return p;
    return NULL;
}

rk_status rk_model_check_image_encoder(const rk_model *m, const char *dir, int *pool, int *normalize, rk_err *err) {
    char ident[64];
    rk_status st = rk_vision_encoder_identity(dir, ident, sizeof ident, err);
    if (st) return rk_err_prefix(err, "image encoder");
    const rk_model_cfg *cfg = rk_model_config(m);
    *pool = RK_VIT_POOL_CLS;
    if (normalize) *normalize = 0;
    for (int f = 0; f < cfg->n_features; f++) {
        const rk_feature *ft = &cfg->features[f];
        if (!ft->items || !rk_sid_param_uses_codes(ft->param)) continue;
        const char *v = rk_sid_items_version(ft->items), *p = image_clause(v);
        if (!p) {
            rk_warn("image encoder %s (%s): feature '%s' records version '%s' names no image encoder; not checked: "
                    "content_image is encoded with CLS pooling, unnormalized", dir, ident, ft->name, v);
            continue;
        }
        if (strncmp(p + strlen("encoder "), ident, strlen(ident)))
            return rk_fail(err, RK_EINVAL,
                           "image encoder %s is %s, but feature '%s' records were built from image embeddings of "
                           "another encoder (records version '%s'); start rankd with that encoder's directory",
                           dir, ident, ft->name, v);
        const char *r = p + strlen("encoder xxh64:") + 16 + 9; /* the recipe */
        *pool = strstr(r, "pool mean") ? RK_VIT_POOL_MEAN : RK_VIT_POOL_CLS;
        if (normalize) *normalize = strstr(r, "l2 yes") != NULL;
        rk_info("image encoder %s matches feature '%s' records (%.120s)", dir, ft->name, r);
    }
    return RK_OK;
}

void rk_service_set_deadline(rk_service *s, double deadline, int (*stop)(void *ctx), void *ctx) {
    s->deadline = deadline;
    rk_store_set_thread_deadline(deadline); /* bounds the Redis tier's lookups of this request (same thread) */
    s->stop = stop;
    s->stop_ctx = ctx;
}

/* The worker's vision encoder: one image at a time, pooling as the records'. */
static rk_status open_image_encoder(rk_service *s, const rk_model *m, const char *dir, rk_err *err) {
    rk_vision_encoder_opts vo = RK_VISION_ENCODER_OPTS_DEFAULT;
    vo.max_batch = 1;
    rk_status st = rk_model_check_image_encoder(m, dir, &vo.pool, &vo.normalize, err);
    if (!st && (st = rk_vision_encoder_open(dir, &vo, &s->venc, err))) rk_err_prefix(err, "image encoder");
    if (!st && !(s->pix = rk_malloc((size_t)3 * RK_VISION_CROP * RK_VISION_CROP * sizeof(float))))
        st = rk_fail(err, RK_ENOMEM, "service: out of memory");
    return st;
}

rk_status rk_service_create(const rk_model *m, const rk_server_opts *o, rk_service **out,
                            rk_err *err) {
    *out = NULL;
    if (o->max_candidates < 1)
        return rk_fail(err, RK_EINVAL, "max_candidates: %d, must be at least 1", o->max_candidates);
    if (o->max_values_per_row < 1)
        return rk_fail(err, RK_EINVAL, "max_values_per_row: %d, must be at least 1",
                       o->max_values_per_row);
    if (o->max_message_bytes < 1)
        return rk_fail(err, RK_EINVAL, "max_message_bytes: %d, must be at least 1",
                       o->max_message_bytes);
    rk_service *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "service: out of memory");
    s->m = m;
    s->cfg = rk_model_config(m);
    s->o = *o;
    s->o.listen = NULL; /* not ours to keep */
    size_t n = (size_t)o->max_candidates;
    rk_status st = rk_scorer_create(m, o->max_candidates, o->max_values_per_row, &s->scorer, err);
    if (st) {
        rk_free(s);
        return st;
    }
    /* Sized at start-up for the largest accepted request: protobuf-c's
     * decoded form of max_candidates candidates, each carrying every
     * item-side feature of the model with a few values (about 0.5 KiB per
     * feature per candidate, measured: a MovieLens candidate decodes to
     * ~0.4 KiB), plus the user. A request that decodes larger still works:
     * the arena overflows into a chunk once and is then re-sized to the
     * high-water mark (arena_reset), so steady state never allocates. */
    int n_item = 0;
    for (int f = 0; f < s->cfg->n_features; f++) n_item += s->cfg->features[f].side == RK_SIDE_ITEM;
    s->ar.cap = ARENA_INITIAL + n * (size_t)(256 + 512 * (size_t)n_item);
    /* Decoded structures are bigger than their wire form; a request of many
     * empty messages (2 bytes on the wire, ~80 decoded) would be the worst,
     * but a singular message given twice is refused before decoding
     * (rk_pb_check), and repeated ones are validated against max_candidates
     * after it: this bound is what a valid request can need. */
    s->ar.limit = (size_t)o->max_message_bytes * ARENA_PER_MESSAGE_BYTE;
    /* a model of many item features: no request can decode beyond the limit */
    if (s->ar.cap > s->ar.limit) s->ar.cap = s->ar.limit;
    s->ar.base = rk_malloc(s->ar.cap);
    s->pballoc.alloc = arena_alloc;
    s->pballoc.free = arena_free;
    s->pballoc.allocator_data = &s->ar;
    s->pctr = rk_malloc(n * sizeof *s->pctr);
    s->adp = rk_malloc(n * sizeof *s->adp);
    s->adlen = rk_malloc(n * sizeof *s->adlen);
    s->ssize = rk_malloc(n * sizeof *s->ssize);
    s->n_towers = rk_model_n_members(m) ? rk_model_n_members(m) : 1;
    s->tp = rk_malloc(n * (size_t)s->n_towers * 2 * sizeof *s->tp);
    s->tname = rk_malloc((size_t)s->n_towers * sizeof *s->tname);
    s->tnlen = rk_malloc((size_t)s->n_towers * sizeof *s->tnlen);
    s->out_cap = s->out_warm = 64 * n * (size_t)(1 + s->n_towers) + 4096;
    s->out = rk_malloc(s->out_cap);
    if (!s->ar.base || !s->pctr || !s->adp || !s->adlen || !s->ssize || !s->tp || !s->tname || !s->tnlen ||
        !s->out) {
        rk_service_destroy(s);
        return rk_fail(err, RK_ENOMEM, "service: out of memory for %d candidates",
                       o->max_candidates);
    }
    s->tower_name = rk_tower_name(s->cfg->tower.type);
    for (int k = 0; k < s->n_towers; k++) {
        s->tname[k] = rk_model_n_members(m) ? rk_model_member_name(m, k) : s->tower_name;
        s->tnlen[k] = strlen(s->tname[k]);
    }
    if (!(s->mp = rk_malloc((size_t)s->n_towers * sizeof *s->mp)) ||
        !(s->mw = rk_malloc((size_t)s->n_towers * sizeof *s->mw)) || !(s->seen = seen_create(s->cfg->n_features)) ||
        !(s->vlen = rk_malloc((size_t)o->max_values_per_row * sizeof *s->vlen)) ||
        !(s->vptr = rk_malloc((size_t)o->max_values_per_row * sizeof *s->vptr)) ||
        !(s->cspan = rk_malloc(n * sizeof *s->cspan)) ||
        !(s->fnlen = rk_malloc(((size_t)s->cfg->n_features + 1) * sizeof *s->fnlen)) ||
        !(s->lay = rk_malloc(DIRECT_MAX_LISTED * sizeof(lay_entry))) ||
        !(s->pred[0] = rk_malloc(((size_t)s->cfg->n_features + 1) * sizeof(int))) ||
        !(s->pred[1] = rk_malloc(((size_t)s->cfg->n_features + 1) * sizeof(int)))) {
        rk_service_destroy(s);
        return rk_fail(err, RK_ENOMEM, "service: out of memory for %d features", s->cfg->n_features);
    }
    for (int f = 0; f < s->cfg->n_features; f++) {
        s->pred[0][f] = s->pred[1][f] = -1;
        s->fnlen[f] = strlen(s->cfg->features[f].name);
    }
    if (o->encoder_dir) {
        s->o.encoder_dir = NULL; /* not ours to keep */
        rk_text_encoder_opts eo = RK_TEXT_ENCODER_OPTS_DEFAULT;
        eo.max_tokens = 512; /* one candidate's text at a time: 2 x max_len */
        if ((st = rk_text_encoder_open(o->encoder_dir, &eo, &s->enc, err))) {
            rk_service_destroy(s);
            return rk_err_prefix(err, "encoder");
        }
        s->text = rk_malloc(RK_MAX_CONTENT_TEXT_BYTES + 1);
        if (!s->text) {
            rk_service_destroy(s);
            return rk_fail(err, RK_ENOMEM, "service: out of memory");
        }
    }
    s->o.device = NULL; /* not ours to keep */
    if (o->device && (st = rk_device_open(o->device, &s->dev, err)) == RK_OK && s->dev)
        st = rk_scorer_set_device(s->scorer, s->dev, err);
    if (st) {
        rk_service_destroy(s);
        return rk_err_prefix(err, "--device %s", o->device);
    }
    if (o->image_encoder_dir && (st = open_image_encoder(s, m, o->image_encoder_dir, err))) {
        rk_service_destroy(s);
        return st;
    }
    s->o.image_encoder_dir = NULL; /* not ours to keep */
    size_t cat = (size_t)(s->enc ? rk_text_encoder_dim(s->enc) : 0) + (size_t)(s->venc ? rk_vision_encoder_dim(s->venc) : 0);
    if (!(s->cat = rk_malloc((cat ? cat : 1) * sizeof(float)))) {
        rk_service_destroy(s);
        return rk_fail(err, RK_ENOMEM, "service: out of memory");
    }
    if ((st = rk_embsum_attach_open(m, &s->es, &s->es_feature, err)) == RK_OK && s->es &&
        !(s->es_cand = rk_malloc(n * sizeof *s->es_cand)))
        st = rk_fail(err, RK_ENOMEM, "service: out of memory");
    if (st) {
        rk_service_destroy(s);
        return st;
    }
    rk_service_set_direct(s, 1);
    *out = s;
    return RK_OK;
}

void rk_service_set_direct(rk_service *s, int on) {
    int hashed = 1; /* every sparse feature hashes its raw values (no semantic-ID counters) */
    for (int f = 0; f < s->cfg->n_features; f++)
        hashed &= s->cfg->features[f].kind != RK_FEAT_SPARSE || s->cfg->features[f].param == RK_PARAM_HASH;
    s->direct = on && hashed && !s->es;
}

void rk_service_direct_counts(const rk_service *s, uint64_t *scored, uint64_t *gave_up) {
    *scored = s->direct_n[0], *gave_up = s->direct_n[1];
}

void rk_service_destroy(rk_service *s) {
    if (!s) return;
    arena_reset(&s->ar);
    rk_free(s->ar.base);
    rk_scorer_destroy(s->scorer); /* frees its device buffers: before the device */
    rk_device_close(s->dev);
    rk_free(s->pctr);
    rk_free(s->adp);
    rk_free(s->adlen);
    rk_free(s->ssize);
    rk_free(s->tp);
    rk_free(s->tname);
    rk_free(s->tnlen);
    rk_free(s->out);
    rk_text_encoder_close(s->enc);
    rk_free(s->text);
    rk_vision_encoder_close(s->venc);
    rk_free(s->pix);
    rk_free(s->cat);
    rk_free(s->mp);
    rk_free(s->mw);
    seen_destroy(s->seen);
    rk_free(s->vlen);
    rk_free(s->vptr);
    rk_free(s->cspan);
    rk_free(s->fnlen);
    rk_free(s->lay);
    rk_free(s->pred[0]);
    rk_free(s->pred[1]);
    rk_embsum_bundle_close(s->es);
    rk_free(s->es_cand);
    rk_free(s);
}

/* ------------------------------------------------------------ validation */

/* 1 and *len = strlen(str) when str is valid UTF-8 (rk_utf8_ok), else 0. */
static int utf8_len(const char *str, size_t *len) {
    *len = strlen(str);
    return rk_utf8_ok((const unsigned char *)str, *len);
}

static int utf8_valid(const char *str) {
    size_t len;
    return utf8_len(str, &len);
}

/* Fail with a gRPC code; the message is "<where><field>: <what>". */
static int failf(rk_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(rk_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code == ST_RESOURCE_EXHAUSTED ? RK_ETOOBIG
                    : code == ST_NOT_FOUND        ? RK_ENOTFOUND
                    : code == ST_INTERNAL         ? RK_EINTERNAL
                    : code == ST_DEADLINE_EXCEEDED ? RK_EDEADLINE
                    : code == ST_UNAVAILABLE      ? RK_ECANCELED
                                                  : RK_EINVAL;
    }
    return code;
}

static int check_str(const char *s, const char *where, const char *field, rk_err *err) {
    if (s && !utf8_valid(s))
        return failf(err, ST_INVALID_ARGUMENT, "%s%s: invalid UTF-8", where, field);
    return ST_OK;
}

/* Where a field is in the request, e.g. "candidates[7].sparse[1].name".
 * Kept as numbers and formatted only when an error names it: formatting
 * every field of a 1,000-candidate request would cost more than hashing. */
typedef enum { FR_ALIAS = 0, FR_SPARSE_NAME, FR_SPARSE_VALUES, FR_DENSE_NAME } fref_kind;
typedef struct {
    int cand;           /* -1: user; else the candidate's index */
    fref_kind kind;
    size_t j;           /* index in sparse[] / dense[] */
    const char *alias;  /* FR_ALIAS: "user_id", ... */
} fref;

/* "user" (cand -1) or "candidates[cand]" into buf[32]. */
static const char *side_str(int cand, char *buf) {
    if (cand < 0) snprintf(buf, 32, "user");
    else snprintf(buf, 32, "candidates[%d]", cand);
    return buf;
}

static const char *fref_str(const fref *r, char *buf, size_t cap) {
    char where[32];
    side_str(r->cand, where);
    switch (r->kind) {
    case FR_ALIAS: snprintf(buf, cap, "%s.%s", where, r->alias); break;
    case FR_SPARSE_NAME: snprintf(buf, cap, "%s.sparse[%zu].name", where, r->j); break;
    case FR_SPARSE_VALUES: snprintf(buf, cap, "%s.sparse[%zu].values", where, r->j); break;
    default: snprintf(buf, cap, "%s.dense[%zu].name", where, r->j); break;
    }
    return buf;
}

/* Resolve a feature name given at side/kind; returns its index, or -1 after
 * filling err ("<field>: ...") and *code. */
static int resolve(const rk_model_cfg *cfg, const char *name, rk_side side, rk_feat_kind kind,
                   const fref *at, int *code, rk_err *err) {
    char fb[80];
    if (!utf8_valid(name)) {
        *code = failf(err, ST_INVALID_ARGUMENT, "%s: invalid UTF-8", fref_str(at, fb, sizeof fb));
        return -1;
    }
    int f = rk_model_cfg_find(cfg, name);
    if (f < 0) {
        *code = failf(err, ST_INVALID_ARGUMENT, "%s: unknown feature '%.64s'", fref_str(at, fb, sizeof fb),
                      name);
        return -1;
    }
    const rk_feature *ft = &cfg->features[f];
    if (ft->side != side) {
        *code = failf(err, ST_INVALID_ARGUMENT, "%s: '%s' is a%s feature", fref_str(at, fb, sizeof fb),
                      ft->name, ft->side == RK_SIDE_USER ? " user" : " candidate");
        return -1;
    }
    if (ft->kind != kind) {
        *code = failf(err, ST_INVALID_ARGUMENT, "%s: '%s' is a %s feature", fref_str(at, fb, sizeof fb),
                      ft->name, ft->kind == RK_FEAT_DENSE ? "dense" : "sparse");
        return -1;
    }
    return f;
}

/* a[0, n) == b[0, n), inline for names of up to 16 bytes (no byte read
 * past either end: overlapping words). */
static inline int same_bytes(const char *a, const char *b, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8), memcpy(&a1, a + n - 8, 8), memcpy(&b0, b, 8), memcpy(&b1, b + n - 8, 8);
        return !((a0 ^ b0) | (a1 ^ b1));
    }
    if (n >= 4 && n < 8) {
        uint32_t a0, a1, b0, b1;
        memcpy(&a0, a, 4), memcpy(&a1, a + n - 4, 4), memcpy(&b0, b, 4), memcpy(&b1, b + n - 4, 4);
        return !((a0 ^ b0) | (a1 ^ b1));
    }
    return !memcmp(a, b, n);
}

/* resolve() for sparse[j] / dense[j] of a side named name[len] (a C
 * string, or from the direct path bytes not NUL-terminated: then len <
 * RK_NAME_MAX), first trying the feature that candidates' sparse[j] /
 * dense[j] named last: the same name is the same feature, of the side and
 * kind resolve() checked then (one compare instead of a lookup; the user
 * side is resolved once per request). */
static int resolve_at(rk_service *s, const char *name, size_t len, rk_side side, rk_feat_kind kind, size_t j,
                      const fref *at, int *code, rk_err *err) {
    int *pred = side == RK_SIDE_ITEM && j < (size_t)s->cfg->n_features ? &s->pred[kind == RK_FEAT_DENSE][j] : NULL;
    if (pred && *pred >= 0 && s->fnlen[*pred] == len && same_bytes(name, s->cfg->features[*pred].name, len))
        return *pred;
    char nb[RK_NAME_MAX];
    if (len < sizeof nb) { /* longer: a C string (tree path), no feature's name */
        memcpy(nb, name, len);
        nb[len] = 0;
        name = nb;
    }
    int f = resolve(s->cfg, name, side, kind, at, code, err);
    if (pred && f >= 0) *pred = f;
    return f;
}

/* Which field already set a feature on this side (for duplicate errors):
 * feature f is set when mark[f].gen == gen, by the field mark[f].kj (its
 * fref_kind in the low 2 bits, its index j above: a request has fewer than
 * 2^30 fields) of the side's own candidate (an alias: alias[f]). Each side
 * starts a new generation, so nothing is cleared per request whatever the
 * number of features; a mark is one 8-byte store. */
typedef struct {
    uint32_t gen, kj;
} seen_mark;

typedef struct seen_set {
    uint32_t gen;
    int n;
    seen_mark *mark;     /* [n] */
    const char **alias;  /* [n]: valid where mark[f] is an alias's */
} seen_set;

static seen_set *seen_create(int n_features) {
    seen_set *s = rk_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n = n_features;
    s->mark = rk_calloc((size_t)n_features + 1, sizeof *s->mark);
    s->alias = rk_calloc((size_t)n_features + 1, sizeof *s->alias);
    if (!s->mark || !s->alias) {
        seen_destroy(s);
        return NULL;
    }
    return s;
}

static void seen_destroy(seen_set *s) {
    if (!s) return;
    rk_free(s->mark);
    rk_free(s->alias);
    rk_free(s);
}

/* A new side: no feature set. */
static void seen_reset(seen_set *s) {
    if (++s->gen == 0) { /* wrapped: old marks could match again */
        memset(s->mark, 0, (size_t)s->n * sizeof *s->mark);
        s->gen = 1;
    }
}

__attribute__((cold, noinline)) static int seen_fail(const seen_set *seen, int f, const fref *at, const char *name,
                                                     rk_err *err) {
    char a[80], b[80];
    uint32_t kj = seen->mark[f].kj;
    fref by = {at->cand, (fref_kind)(kj & 3), kj >> 2, (kj & 3) == FR_ALIAS ? seen->alias[f] : NULL};
    return failf(err, ST_INVALID_ARGUMENT, "%s: '%s' is already set by %s", fref_str(at, a, sizeof a), name,
                 fref_str(&by, b, sizeof b));
}

static inline int mark_seen(seen_set *seen, int f, const fref *at, const char *name, rk_err *err) {
    if (seen->mark[f].gen == seen->gen) return seen_fail(seen, f, at, name, err);
    seen->mark[f] = (seen_mark){seen->gen, (uint32_t)at->j << 2 | (uint32_t)at->kind};
    if (at->kind == FR_ALIAS) seen->alias[f] = at->alias;
    return ST_OK;
}

/* add_values' failures, formatted out of its loop: too many values
 * (k == n_values), invalid UTF-8 in values[k] (st RK_OK), or the scorer's
 * error st (e). */
__attribute__((cold, noinline)) static int values_fail(const rk_service *s, const fref *at, size_t k,
                                                       size_t n_values, rk_status st, const rk_err *e, rk_err *err) {
    char fb[80];
    fref_str(at, fb, sizeof fb);
    if (k == n_values)
        return failf(err, ST_RESOURCE_EXHAUSTED, "%s: %zu values exceed the maximum of %d", fb, n_values,
                     s->o.max_values_per_row);
    if (st == RK_OK) return failf(err, ST_INVALID_ARGUMENT, "%s[%zu]: invalid UTF-8", fb, k);
    if (st == RK_ETOOBIG) return failf(err, ST_RESOURCE_EXHAUSTED, "%s: too many sparse values (%s)", fb, e->msg);
    return failf(err, ST_INTERNAL, "%s: %s", fb, e->msg);
}

/* Add the values of sparse feature f to rows [r0, r1), as rank/dataset.c
 * does: empty values skipped, at most max_values non-empty values kept.
 * lens: NULL, or the values' lengths when they were checked already.
 * Small enough to inline into the direct path's loop (values_fail). */
static inline int add_values(rk_service *s, int f, char **values, const size_t *lens, size_t n_values, int r0,
                             int r1, const fref *at, rk_err *err) {
    const rk_feature *ft = &s->cfg->features[f];
    if (n_values > (size_t)s->o.max_values_per_row) return values_fail(s, at, n_values, n_values, RK_OK, NULL, err);
    for (size_t k = 0; k < n_values && !lens; k++)
        if (!utf8_len(values[k], &s->vlen[k])) return values_fail(s, at, k, n_values, RK_OK, NULL, err);
    if (!lens) lens = s->vlen;
    int taken = 0;
    rk_err e; /* written only on failure: not cleared per value (it is 260 bytes) */
    e.code = RK_OK, e.msg[0] = 0;
    for (size_t k = 0; k < n_values; k++) {
        size_t len = lens[k];
        if (!len) continue;
        if (ft->max_values > 0 && taken >= ft->max_values) break;
        taken++;
        /* a user-side value goes to every row: hashed once */
        rk_status st = rk_scorer_add_sparse_rows(s->scorer, r0, r1, f, values[k], len, &e);
        if (st) return values_fail(s, at, k, n_values, st, &e, err);
    }
    return ST_OK;
}

static const char *nonfinite_name(float v) {
    return isnan(v) ? "NaN" : v > 0 ? "Inf" : "-Inf";
}

/* One sparse feature of a side: sparse[j] of the user (cand -1) or of
 * candidate cand, into rows [r0, r1). lens: as add_values. *fp: -1 to
 * resolve and check the name (then its feature), or the feature already
 * resolved and checked for this side. */
static int side_sparse(rk_service *s, rk_side side, int cand, size_t j, const char *name, size_t name_len,
                       char **values, const size_t *lens, size_t n_values, int r0, int r1, int *fp, rk_err *err) {
    int code, f = *fp;
    fref at = {cand, FR_SPARSE_NAME, j, NULL};
    if (f < 0) { /* else resolved and checked (the direct path's layout) */
        if ((f = resolve_at(s, name, name_len, side, RK_FEAT_SPARSE, j, &at, &code, err)) < 0) return code;
        if ((code = mark_seen(s->seen, f, &at, s->cfg->features[f].name, err))) return code;
        *fp = f;
    }
    at.kind = FR_SPARSE_VALUES;
    return add_values(s, f, values, lens, n_values, r0, r1, &at, err);
}

/* One dense feature of a side: dense[j], as side_sparse. */
static int side_dense(rk_service *s, rk_side side, int cand, size_t j, const char *name, size_t name_len, float value,
                      int r0, int r1, int *fp, rk_err *err) {
    int code, f = *fp;
    fref at = {cand, FR_DENSE_NAME, j, NULL};
    if (f < 0) {
        if ((f = resolve_at(s, name, name_len, side, RK_FEAT_DENSE, j, &at, &code, err)) < 0) return code;
        if ((code = mark_seen(s->seen, f, &at, s->cfg->features[f].name, err))) return code;
        *fp = f;
    }
    char where[32]; /* "user" / "candidates[i]", formatted on failure only */
    if (!isfinite(value))
        return failf(err, ST_INVALID_ARGUMENT, "%s.dense[%zu].value: not finite (%s)", side_str(cand, where), j,
                     nonfinite_name(value));
    rk_err e; /* written only on failure */
    e.code = RK_OK, e.msg[0] = 0;
    for (int r = r0; r < r1; r++) {
        rk_status st = rk_scorer_set_dense(s->scorer, r, f, value, &e);
        if (st)
            return failf(err, st == RK_ENUMERIC || st == RK_EINVAL ? ST_INVALID_ARGUMENT : ST_INTERNAL,
                         "%s.dense[%zu].value: %s", side_str(cand, where), j, e.msg);
    }
    return ST_OK;
}

/* Fill one side (user: rows [0, n); candidate i: row i) from its sparse and
 * dense lists and its aliases. */
typedef struct {
    int feature;       /* -1: alias not declared by the model */
    const char *field; /* "user_id", ... */
    char **values;
    size_t n_values;
    const size_t *lens; /* NULL, or the values' lengths: checked UTF-8 already */
} alias_in;

/* The aliases of a side. check: mark their features in the seen set (0:
 * known not to be set yet on this side: the direct path's layout). */
static int side_aliases(rk_service *s, int cand, const alias_in *aliases, int n_aliases, int r0, int r1, int check,
                        rk_err *err) {
    int code;
    char fb[80];
    for (int a = 0; a < n_aliases; a++) {
        const alias_in *al = &aliases[a];
        fref at = {cand, FR_ALIAS, 0, al->field};
        if (al->feature < 0) { /* not a model input; still no invalid UTF-8 anywhere */
            for (size_t k = 0; k < al->n_values; k++)
                if (!utf8_valid(al->values[k]))
                    return failf(err, ST_INVALID_ARGUMENT, "%s[%zu]: invalid UTF-8",
                                 fref_str(&at, fb, sizeof fb), k);
            continue;
        }
        if (al->n_values == 0) continue;
        if (check && (code = mark_seen(s->seen, al->feature, &at, s->cfg->features[al->feature].name, err)))
            return code;
        if ((code = add_values(s, al->feature, al->values, al->lens, al->n_values, r0, r1, &at, err)))
            return code;
    }
    return ST_OK;
}

static int fill_side(rk_service *s, rk_side side, int cand, size_t n_sparse,
                     Rankd__V1__SparseFeature **sparse, size_t n_dense,
                     Rankd__V1__DenseFeature **dense, const alias_in *aliases, int n_aliases,
                     int r0, int r1, rk_err *err) {
    seen_reset(s->seen); /* a new side */
    int code = side_aliases(s, cand, aliases, n_aliases, r0, r1, 1, err);
    for (size_t j = 0; j < n_sparse && !code; j++)
        code = side_sparse(s, side, cand, j, sparse[j]->name, strlen(sparse[j]->name), sparse[j]->values, NULL,
                           sparse[j]->n_values, r0, r1, &(int){-1}, err);
    for (size_t j = 0; j < n_dense && !code; j++)
        code = side_dense(s, side, cand, j, dense[j]->name, strlen(dense[j]->name), dense[j]->value, r0, r1,
                          &(int){-1}, err);
    return code;
}

static int alias_feature(const rk_model_cfg *cfg, const char *name) {
    return name[0] ? rk_model_cfg_find(cfg, name) : -1;
}

static uint32_t us(double seconds) {
    double v = seconds * 1e6;
    return v <= 0 ? 0 : v >= 4e9 ? 4000000000u : (uint32_t)(v + 0.5);
}

/* The request part of a call, after decoding; fills s->pctr. */
/* A candidate's content field that this version cannot use is refused, as
 * an unknown feature name is (a client would otherwise believe it counted):
 * content_embedding / content_text / content_image on a model without a
 * semantic-ID ad feature (content_text: nor an EmbSum bundle), content_text
 * without --encoder, content_image
 * without --image-encoder. Text of only whitespace is no text. */
static int unused_content(const rk_service *s, const Rankd__V1__Candidate *c, int i, int sid_ad, rk_err *err) {
    int text = 0;
    for (size_t k = 0; k < c->content_text.len && !text; k++)
        text = !memchr(" \t\n\r\f\v", c->content_text.data[k], 6);
    /* content_text also feeds an attached EmbSum bundle (the CPE of an unknown ad) */
    const char *f = c->n_content_embedding ? "content_embedding" : text && !s->es ? "content_text"
                  : c->content_image.len ? "content_image" : NULL;
    if (f && !sid_ad)
        return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].%s: model '%s' has no semantic-ID ad feature to "
                     "assign codes from it (leave it unset for this model)", i, f, s->cfg->name);
    if (text && !s->enc)
        return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_text: this rankd has no text encoder "
                     "(--encoder) to encode it", i);
    if (c->content_image.len && !s->venc)
        return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_image: this rankd has no image encoder "
                     "(--image-encoder) to encode it", i);
    return ST_OK;
}

/* candidates[i].content_image -> out[image dim]: decode (bounded by
 * RK_MAX_CONTENT_IMAGE_PIXELS before any pixel buffer exists), preprocess,
 * encode. The deadline and shutdown are checked again after decoding, the
 * step whose time depends on the client's bytes. Returns a gRPC code. */
static int encode_image(rk_service *s, const ProtobufCBinaryData *img, float *out, int i, int n, rk_err *err) {
    rk_image_limits lim = {RK_MAX_CONTENT_IMAGE_PIXELS, RK_MAX_CONTENT_IMAGE_BYTES};
    rk_image im;
    rk_err e = {0};
    rk_status st = rk_image_decode(img->data, img->len, &lim, &im, &e);
    if (!st) st = rk_image_preprocess(&im, RK_VISION_RESIZE, RK_VISION_CROP, s->pix, &e);
    rk_image_free(&im);
    if (st == RK_ENOMEM) return failf(err, ST_RESOURCE_EXHAUSTED, "candidates[%d].content_image: %s", i, e.msg);
    if (st) return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_image: %s", i, e.msg);
    if (s->deadline > 0 && rk_now() > s->deadline)
        return failf(err, ST_DEADLINE_EXCEEDED, "deadline exceeded while encoding content_image: reached candidates[%d] of %d",
                     i, n);
    if (s->stop && s->stop(s->stop_ctx))
        return failf(err, ST_UNAVAILABLE, "server shutting down while encoding content_image: reached candidates[%d] of %d",
                     i, n);
    if ((st = rk_vision_encoder_encode(s->venc, s->pix, 1, out, &e)))
        return failf(err, ST_INTERNAL, "candidates[%d].content_image: %s", i, e.msg);
    return ST_OK;
}

/* EmbSum (rank/embsum.h): the model's RK_EMBSUM_FEATURE input of every
 * candidate, computed from the attached bundle; a client may not send it. */
static int embsum_fill(rk_service *s, const Rankd__V1__RankRequest *req, int n, rk_err *err) {
    const Rankd__V1__User *u = req->user;
    for (int i = 0; i < n; i++) {
        const Rankd__V1__Candidate *c = req->candidates[i];
        for (size_t j = 0; j < c->n_dense; j++)
            if (c->dense[j]->name && !strcmp(c->dense[j]->name, RK_EMBSUM_FEATURE))
                return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].dense[%zu]: '%s' is computed by rankd from the "
                             "model's EmbSum bundle; do not send it", i, j, RK_EMBSUM_FEATURE);
        s->es_cand[i] = (rk_embsum_candidate){c->ad_id, (const char *)c->content_text.data, c->content_text.len};
    }
    rk_embsum_request r = {u ? u->user_id : "", u ? (const char *const *)u->recent_item_ids : NULL,
                           u ? (int)u->n_recent_item_ids : 0, s->es_cand, n, s->deadline};
    rk_embsum_rank_info info;
    rk_err e = {0};
    rk_status st = rk_embsum_fill(s->es, s->es_feature, s->enc, &r, s->scorer, &info, &e);
    if (st == RK_EDEADLINE) return failf(err, ST_DEADLINE_EXCEEDED, "%s", e.msg);
    if (st == RK_ENOMEM || st == RK_EIO || st == RK_EINTERNAL) return failf(err, ST_INTERNAL, "%s", e.msg);
    if (st) return failf(err, ST_INVALID_ARGUMENT, "%s", e.msg);
    s->es_count[0] += info.upe == RK_UPE_RECENT, s->es_count[1] += info.upe == RK_UPE_DEFAULT;
    s->es_count[2] += (uint64_t)info.n_encoded;
    return ST_OK;
}

/* A request's head: request_id, model_name and model_version, and the
 * number of candidates (n_candidates; the list itself is not read). A gRPC
 * code; then rk_scorer_begin for them. */
static int begin_request(rk_service *s, const Rankd__V1__RankRequest *req, rk_err *err) {
    const rk_model_cfg *cfg = s->cfg;
    int code;
    if ((code = check_str(req->request_id, "", "request_id", err))) return code;
    if ((code = check_str(req->model_name, "", "model_name", err))) return code;
    if ((code = check_str(req->model_version, "", "model_version", err))) return code;
    if (!s->routed && req->model_name && req->model_name[0] && strcmp(req->model_name, cfg->name))
        return failf(err, ST_NOT_FOUND, "model_name: '%.64s' is not served here (serving '%s')",
                     req->model_name, cfg->name);
    if (!s->routed && req->model_version && req->model_version[0] && strcmp(req->model_version, cfg->version) &&
        strcmp(req->model_version, rk_model_version(s->m)))
        return failf(err, ST_NOT_FOUND,
                     "model_version: '%.64s' is not served here (serving '%s')",
                     req->model_version, rk_model_version(s->m));
    if (req->n_candidates == 0) return failf(err, ST_INVALID_ARGUMENT, "candidates: empty");
    if (req->n_candidates > (size_t)s->o.max_candidates)
        return failf(err, ST_RESOURCE_EXHAUSTED, "candidates: %zu exceeds the maximum of %d",
                     req->n_candidates, s->o.max_candidates);
    rk_err e;
    if (rk_scorer_begin(s->scorer, (int)req->n_candidates, &e))
        return failf(err, ST_INTERNAL, "candidates: %s", e.msg);
    return ST_OK;
}

/* The user's features (the aliases user_id and recent_item_ids, sparse,
 * dense) into each of the n rows. */
static int fill_user(rk_service *s, const Rankd__V1__User *u, int n, rk_err *err) {
    const rk_model_cfg *cfg = s->cfg;
    int code;
    if ((code = check_str(u->user_id, "user.", "user_id", err))) return code;
    char *uid[1] = {u->user_id};
    alias_in al[2] = {
        {alias_feature(cfg, cfg->alias_user_id), "user_id", uid, u->user_id && u->user_id[0] ? 1u : 0u, NULL},
        {alias_feature(cfg, cfg->alias_recent_items), "recent_item_ids", u->recent_item_ids, u->n_recent_item_ids,
         NULL},
    };
    return fill_side(s, RK_SIDE_USER, -1, u->n_sparse, u->sparse, u->n_dense, u->dense, al, 2, 0, n, err);
}

/* The towers over the filled rows, into s->pctr. */
static int run_scorer(rk_service *s, double *lookup_us, double *model_us, rk_err *err) {
    rk_err e;
    rk_status st = rk_scorer_run(s->scorer, s->pctr, lookup_us, model_us, &e);
    if (st == RK_ETOOBIG) return failf(err, ST_RESOURCE_EXHAUSTED, "candidates: %s", e.msg);
    if (st) return failf(err, ST_INTERNAL, "scoring failed: %s", e.msg);
    return ST_OK;
}

static int score_request(rk_service *s, const Rankd__V1__RankRequest *req, double *lookup_us,
                         double *model_us, rk_err *err) {
    const rk_model_cfg *cfg = s->cfg;
    int code = begin_request(s, req, err);
    if (code) return code;
    int n = (int)req->n_candidates;
    if (req->user && (code = fill_user(s, req->user, n, err))) return code;
    rk_err e = {0};
    int ad_f = alias_feature(cfg, cfg->alias_ad_id);
    for (int i = 0; i < n; i++) {
        const Rankd__V1__Candidate *c = req->candidates[i];
        size_t ad_len = 0;
        if (c->ad_id && !utf8_len(c->ad_id, &ad_len)) {
            char where[32];
            snprintf(where, sizeof where, "candidates[%d]", i);
            return check_str(c->ad_id, where, ".ad_id", err);
        }
        s->adp[i] = c->ad_id, s->adlen[i] = ad_len; /* for the response */
        char *ad[1] = {c->ad_id};
        int has_ad = c->ad_id && c->ad_id[0];
        /* Semantic IDs: an ad the item records do not know (an id that is
         * not a canonical int64 is never in them), sent with its content
         * embedding or text, gets codes from the bundle's codebooks now;
         * without either it falls back to the default (empty bag), counted
         * by the scorer. A content field this version cannot use is refused
         * (unused_content). */
        int sid_ad = ad_f >= 0 && rk_sid_param_uses_codes(cfg->features[ad_f].param);
        if ((code = unused_content(s, c, i, sid_ad, err))) return code;
        int has_text = 0;
        if (sid_ad && s->enc && c->content_text.len) {
            const char *t = (const char *)c->content_text.data;
            size_t tl = c->content_text.len;
            if (tl > RK_MAX_CONTENT_TEXT_BYTES)
                return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_text: %zu bytes, over the maximum of %d",
                             i, tl, RK_MAX_CONTENT_TEXT_BYTES);
            if (memchr(t, 0, tl))
                return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_text: contains a NUL byte at offset %zu",
                             i, (size_t)((const char *)memchr(t, 0, tl) - t));
            memcpy(s->text, t, tl);
            s->text[tl] = 0;
            if (!utf8_valid(s->text))
                return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_text: invalid UTF-8", i);
            for (size_t k = 0; k < tl && !has_text; k++)
                has_text = !strchr(" \t\n\r\f\v", s->text[k]); /* only whitespace = no text, as "" */
        }
        int has_image = sid_ad && s->venc && c->content_image.len > 0;
        if (has_image && c->content_image.len > RK_MAX_CONTENT_IMAGE_BYTES)
            return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_image: %zu bytes, over the maximum of %d", i,
                         c->content_image.len, RK_MAX_CONTENT_IMAGE_BYTES);
        int has_emb = sid_ad && c->n_content_embedding > 0;
        if (sid_ad && !has_ad && (has_emb || has_text || has_image))
            return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].ad_id: empty, but content_%s is set (an ad's "
                         "content is assigned codes under its ad_id)", i, has_emb ? "embedding" : has_text ? "text" : "image");
        /* the same check of the embedding for every ad, known or not */
        if (has_emb) {
            rk_status st = rk_scorer_check_item_embedding(s->scorer, ad_f, c->content_embedding,
                                                          (int)c->n_content_embedding, &e);
            if (st) return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].%s", i, e.msg);
        }
        int assign = sid_ad && has_ad && (has_emb || has_text || has_image) &&
                     !rk_scorer_item_known(s->scorer, ad_f, c->ad_id, ad_len);
        alias_in al[1] = {{ad_f, "ad_id", ad, has_ad && !assign ? 1u : 0u, &ad_len}};
        if ((code = fill_side(s, RK_SIDE_ITEM, i, c->n_sparse, c->sparse, c->n_dense, c->dense,
                              al, 1, i, i + 1, err)))
            return code;
        if (assign) {
            const float *emb = c->content_embedding;
            int dim = (int)c->n_content_embedding;
            if (dim == 0) { /* from content: text, image, or text then image (the records' encoders) */
                const char *what = has_text ? "content_text" : "content_image";
                if (s->deadline > 0 && rk_now() > s->deadline)
                    return failf(err, ST_DEADLINE_EXCEEDED,
                                 "deadline exceeded while encoding %s: reached candidates[%d] of %d", what, i, n);
                if (s->stop && s->stop(s->stop_ctx))
                    return failf(err, ST_UNAVAILABLE,
                                 "server shutting down while encoding %s: reached candidates[%d] of %d", what, i, n);
                if (has_text) {
                    const char *txt = s->text;
                    rk_status st = rk_text_encoder_encode(s->enc, &txt, NULL, 1, s->cat, &e);
                    if (st) return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].content_text: %s", i, e.msg);
                    dim = rk_text_encoder_dim(s->enc);
                }
                if (has_image) {
                    if ((code = encode_image(s, &c->content_image, s->cat + dim, i, n, err))) return code;
                    dim += rk_vision_encoder_dim(s->venc);
                }
                emb = s->cat;
            }
            rk_status st = rk_scorer_add_item_embedding(s->scorer, i, ad_f, emb, dim, &e);
            if (st == RK_ETOOBIG) return failf(err, ST_RESOURCE_EXHAUSTED, "candidates[%d].content_embedding: %s", i, e.msg);
            if (st) return failf(err, ST_INVALID_ARGUMENT, "candidates[%d].%s", i, e.msg);
        }
    }
    if (s->es && (code = embsum_fill(s, req, n, err))) return code;
    return run_scorer(s, lookup_us, model_us, err);
}

/* ------------------------------------------------------------ direct path */

/* Most requests are plain: each candidate an ad_id with its sparse and
 * dense features, nothing else. The direct path featurizes those
 * candidates straight from the wire bytes (pbwire.h, the reader decode.c
 * uses), with no protobuf-c tree: one walk over each candidate where the
 * tree path has decode.c's scan and fill and then its own walk of the
 * tree. The head and the user are decoded as before (decode.c) and
 * checked by the same functions (begin_request, fill_user); each
 * candidate's fields go through side_aliases, side_sparse and side_dense
 * in the order fill_side takes them, so a row is the same row.
 *
 * It decides nothing of its own. Anything it does not take as it is (a
 * content field, an ad_id or a feature name given twice, a string with a
 * NUL or not UTF-8, more entries than it keeps) and every error make it
 * give up: the request then takes the tree path from the start, which
 * scores or refuses it exactly as it would have (tests/fuzz/fuzz_request.c
 * compares the two on every input). Models with a semantic-ID feature or an EmbSum bundle
 * always take the tree path (their counters would count a given-up request
 * twice). */

#define GAVE_UP (-1)

/* A string field as the tree path keeps it: wire type 2, UTF-8, no NUL. */
static int direct_str(const pbw_field *f) { return f->wt == 2 && rk_utf8_ok(f->data, f->len); }

/* The direct path's layout: the features of the candidate it featurized
 * last, in wire order (the ad_id alias apart), each resolved and all
 * distinct. A candidate whose entries name the same features in the same
 * order (most do: the same name bytes, which resolved to the same feature)
 * is filled without resolving them again or checking for duplicates; from
 * the first entry that differs on, it is checked as usual, the entries
 * before it marked first (layout_marks). The names point into the request:
 * the layout lasts one request. */

/* Candidate i's entries [0, k) and its ad_id alias (ad_f, when applied) marked
 * in the seen set, as the checks would have marked them. */
static void layout_marks(rk_service *s, int i, int ad_f, size_t k) {
    rk_err e;
    fref at = {i, FR_ALIAS, 0, "ad_id"}; /* the direct path reports no error: any fref */
    if (ad_f >= 0) (void)mark_seen(s->seen, ad_f, &at, "", &e);
    for (size_t q = 0; q < k; q++) (void)mark_seen(s->seen, s->lay[q].f, &at, "", &e);
}

/* The name (the last one) of a SparseFeature / DenseFeature payload [p,
 * end), its values (sparse: into s->vptr / s->vlen, *nv of them; dense:
 * *v, the last); 0, or GAVE_UP. The name is not checked for UTF-8 here:
 * the caller checks it unless it is the layout's name, bytes checked when
 * the layout took them (most candidates'). */
static int direct_entry(rk_service *s, int dense, const uint8_t *p, const uint8_t *end, const uint8_t **name,
                        size_t *name_len, size_t *nv, float *v) {
    pbw_field f;
    int n_names = 0;
    *name = (const uint8_t *)"", *name_len = 0, *nv = 0, *v = 0;
    while (p < end) {
        if (pbw_next(&p, end, &f)) return GAVE_UP;
        if (f.num == 1) { /* given twice: the tree path's (decode.c refuses a NUL in any of them) */
            if (f.wt != 2 || n_names++) return GAVE_UP;
            *name = f.data, *name_len = f.len;
        } else if (f.num == 2 && dense) {
            if (f.wt != 5) return GAVE_UP;
            memcpy(v, f.data, 4); /* little-endian wire, as decode.c reads it */
        } else if (f.num == 2) {
            if (!direct_str(&f) || *nv == (size_t)s->o.max_values_per_row) return GAVE_UP;
            s->vptr[*nv] = (char *)f.data, s->vlen[(*nv)++] = f.len;
        }
    }
    return *name_len < RK_NAME_MAX ? 0 : GAVE_UP; /* longer: no feature's name, the tree path says so */
}

/* Candidate i, from its payload c, into row i, in one walk of its fields. */
static int direct_candidate(rk_service *s, int i, int ad_f, const pbw_field *c) {
    const uint8_t *p = c->data, *end = c->data + c->len;
    int fast = s->lay_ok, n_ad = 0, ad_in = 0; /* ad_in: the alias applied */
    size_t k = 0, js = 0, jd = 0;             /* entries, sparse[] and dense[] ones */
    s->adp[i] = NULL, s->adlen[i] = 0;
    seen_reset(s->seen);
    rk_err e;
    pbw_field f;
    while (p < end) {
        if (pbw_next(&p, end, &f)) return GAVE_UP;
        if (f.num == 1) { /* ad_id: its alias feature, when the model has one */
            if (n_ad++ || !direct_str(&f)) return GAVE_UP;
            s->adp[i] = (const char *)f.data, s->adlen[i] = f.len;
            if (ad_f < 0 || !f.len) continue;
            if (fast && !s->lay_ad) layout_marks(s, i, -1, k), fast = 0;
            alias_in al = {ad_f, "ad_id", (char **)&s->adp[i], 1, &s->adlen[i]};
            if (side_aliases(s, i, &al, 1, i, i + 1, !fast, &e)) return GAVE_UP;
            ad_in = 1;
        } else if (f.num == 2 || f.num == 3) { /* sparse[js] / dense[jd] */
            int dense = f.num == 3;
            const uint8_t *name;
            size_t name_len, nv;
            float v;
            if (f.wt != 2 || k == DIRECT_MAX_LISTED ||
                direct_entry(s, dense, f.data, f.data + f.len, &name, &name_len, &nv, &v))
                return GAVE_UP;
            const lay_entry *l = &s->lay[k];
            if (fast && !(k < s->lay_n && l->dense == dense && l->len == name_len &&
                          same_bytes((const char *)name, (const char *)l->name, name_len)))
                layout_marks(s, i, ad_in ? ad_f : -1, k), fast = 0;
            if (!fast && !rk_utf8_ok(name, name_len)) return GAVE_UP;
            int fi = fast ? l->f : -1;
            if (dense ? side_dense(s, RK_SIDE_ITEM, i, jd++, (const char *)name, name_len, v, i, i + 1, &fi, &e)
                      : side_sparse(s, RK_SIDE_ITEM, i, js++, (const char *)name, name_len, s->vptr, s->vlen, nv, i,
                                    i + 1, &fi, &e))
                return GAVE_UP;
            s->lay[k++] = (lay_entry){name, name_len, fi, dense};
        } else if (f.num >= 4 && f.num <= 6) {
            return GAVE_UP; /* content: the tree path's */
        } /* else unknown: skipped, as decode.c does */
    }
    s->lay_n = k, s->lay_ad = ad_in, s->lay_ok = 1;
    return ST_OK;
}

/* head's string field from the wire, NUL-terminated in the arena. */
static int direct_head_str(rk_service *s, const pbw_field *f, char **out) {
    if (!f->len) return 1; /* "" as rankd__v1__rank_request__init left it */
    char *c = arena_alloc(&s->ar, f->len + 1);
    if (!c) return 0;
    memcpy(c, f->data, f->len);
    c[f->len] = 0;
    *out = c;
    return 1;
}

/* The request buf[len] by the direct path: ST_OK with s->pctr, s->adp and
 * s->adlen filled, and *head the request without its candidates (their
 * number in n_candidates); the scorer's error (err); or GAVE_UP. */
static int direct_request(rk_service *s, const uint8_t *buf, size_t len, Rankd__V1__RankRequest *head,
                          double *t_decoded, double *lookup_us, double *model_us, rk_err *err) {
    rankd__v1__rank_request__init(head);
    const uint8_t *p = buf, *end = buf + len;
    pbw_field f, str[4] = {{0}}, user = {0};
    int n_str[4] = {0}, n_user = 0;
    size_t n = 0;
    while (p < end) {
        if (pbw_next(&p, end, &f)) return GAVE_UP;
        switch (f.num) {
        case 1: case 2: case 3: /* the last one counts */
            if (!direct_str(&f)) return GAVE_UP;
            str[f.num] = f, n_str[f.num] = 1;
            break;
        case 4:
            if (f.wt != 2 || n_user++) return GAVE_UP;
            user = f;
            break;
        case 5:
            if (f.wt != 2 || n == (size_t)s->o.max_candidates) return GAVE_UP;
            s->cspan[n++] = f;
            break;
        case 6: head->return_tower_scores = pbw_bool(&f); break;
        case 7: head->return_timing = pbw_bool(&f); break;
        default: break;
        }
    }
    char **hs[4] = {NULL, &head->request_id, &head->model_name, &head->model_version};
    for (int k = 1; k <= 3; k++)
        if (n_str[k] && !direct_head_str(s, &str[k], hs[k])) return GAVE_UP;
    if (n_user && rk_user_decode(user.data, user.len, &s->pballoc, &head->user)) return GAVE_UP;
    head->n_candidates = n;
    rk_err e;
    if (begin_request(s, head, &e) || (head->user && fill_user(s, head->user, (int)n, &e))) return GAVE_UP;
    *t_decoded = rk_now();
    int ad_f = alias_feature(s->cfg, s->cfg->alias_ad_id);
    s->lay_ok = 0;
    for (size_t i = 0; i < n; i++)
        if (direct_candidate(s, (int)i, ad_f, &s->cspan[i])) return GAVE_UP;
    /* a failure now is the tree path's too (the same function over the same
     * rows), and not retried: a store's or device's error may not recur */
    return run_scorer(s, lookup_us, model_us, err);
}

/* ------------------------------------------------------------ response */

/* The RankResponse is packed here, as protobuf-c packs it, byte for byte:
 * fields in number order, tags of one byte (numbers 1..15), proto3
 * defaults left out (an empty or unset string, a float whose bits are 0,
 * a uint32 of 0), a set sub-message always written, repeated ones one by
 * one. Without protobuf-c's descriptor walk it costs a fraction.
 * tests/test_serve.c holds it to rankd__v1__rank_response__pack. */
typedef struct {
    const char *request_id, *model_version;
    const float *pctr;
    const char *const *ad;      /* [n] the ad_ids echoed (lengths in s->adlen) */
    int n, n_towers;            /* n_towers: 0 unless return_tower_scores */
    const float *tower_scores;  /* [n, n_towers, 2]: pCTR, weight */
    const Rankd__V1__Timing *timing; /* or NULL */
} resp_in;

static size_t pb_varint_size(uint64_t v) {
    size_t n = 1;
    for (; v >= 0x80; v >>= 7) n++;
    return n;
}

static uint8_t *pb_varint(uint8_t *p, uint64_t v) {
    for (; v >= 0x80; v >>= 7) *p++ = (uint8_t)(v | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

static size_t pb_len_size(size_t len) { return 1 + pb_varint_size(len) + len; } /* tag, length, payload */
static size_t pb_str_size(size_t len) { return len ? pb_len_size(len) : 0; }

static int pb_float_set(float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return b != 0;
}

/* memcpy(d, s, n), inline for n up to 16 (most ad_ids): overlapping words,
 * no byte outside either range. */
static inline void copy_small(uint8_t *d, const char *s, size_t n) {
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
        memcpy(d, &a, 8), memcpy(d + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, s, 4), memcpy(&b, s + n - 4, 4);
        memcpy(d, &a, 4), memcpy(d + n - 4, &b, 4);
    } else {
        memcpy(d, s, n);
    }
}

static uint8_t *pb_str(uint8_t *p, unsigned field, const char *str, size_t len) {
    if (!len) return p;
    *p++ = (uint8_t)(field << 3 | 2);
    p = pb_varint(p, len);
    copy_small(p, str, len);
    return p + len;
}

static uint8_t *pb_float(uint8_t *p, unsigned field, float v) {
    if (!pb_float_set(v)) return p;
    *p++ = (uint8_t)(field << 3 | 5);
    memcpy(p, &v, 4);
    return p + 4;
}

static uint8_t *pb_u32(uint8_t *p, unsigned field, uint32_t v) {
    if (!v) return p;
    *p++ = (uint8_t)(field << 3);
    return pb_varint(p, v);
}

static size_t tower_size(const rk_service *s, int k, const float *ts) {
    return pb_str_size(s->tnlen[k]) + 5 * (size_t)pb_float_set(ts[0]) + 5 * (size_t)pb_float_set(ts[1]);
}

static size_t timing_size(const Rankd__V1__Timing *t) {
    const uint32_t v[5] = {t->decode_us, t->lookup_us, t->model_us, t->encode_us, t->total_us};
    size_t n = 0;
    for (int k = 0; k < 5; k++) n += v[k] ? 1 + pb_varint_size(v[k]) : 0;
    return n;
}

/* The packed size; each Score's into s->ssize. */
static size_t resp_size(rk_service *s, const resp_in *r) {
    size_t total = pb_str_size(r->request_id ? strlen(r->request_id) : 0) + pb_str_size(strlen(r->model_version));
    for (int i = 0; i < r->n; i++) {
        size_t ss = pb_str_size(s->adlen[i]) + 5 * (size_t)pb_float_set(r->pctr[i]);
        for (int k = 0; k < r->n_towers; k++)
            ss += pb_len_size(tower_size(s, k, &r->tower_scores[((size_t)i * r->n_towers + k) * 2]));
        s->ssize[i] = ss;
        total += pb_len_size(ss);
    }
    if (r->timing) total += pb_len_size(timing_size(r->timing));
    return total;
}

/* Pack r into out (resp_size's bytes, after resp_size); the bytes written. */
static size_t resp_pack(const rk_service *s, const resp_in *r, uint8_t *out) {
    uint8_t *p = pb_str(out, 1, r->request_id, r->request_id ? strlen(r->request_id) : 0);
    for (int i = 0; i < r->n; i++) {
        *p++ = 2 << 3 | 2;
        p = pb_varint(p, s->ssize[i]);
        p = pb_str(p, 1, r->ad[i], s->adlen[i]);
        p = pb_float(p, 2, r->pctr[i]);
        for (int k = 0; k < r->n_towers; k++) {
            const float *ts = &r->tower_scores[((size_t)i * r->n_towers + k) * 2];
            *p++ = 3 << 3 | 2;
            p = pb_varint(p, tower_size(s, k, ts));
            p = pb_str(p, 1, s->tname[k], s->tnlen[k]);
            p = pb_float(p, 2, ts[0]);
            p = pb_float(p, 3, ts[1]);
        }
    }
    p = pb_str(p, 3, r->model_version, strlen(r->model_version));
    if (r->timing) {
        const Rankd__V1__Timing *t = r->timing;
        *p++ = 4 << 3 | 2;
        p = pb_varint(p, timing_size(t));
        p = pb_u32(p, 1, t->decode_us);
        p = pb_u32(p, 2, t->lookup_us);
        p = pb_u32(p, 3, t->model_us);
        p = pb_u32(p, 4, t->encode_us);
        p = pb_u32(p, 5, t->total_us);
    }
    return (size_t)(p - out);
}

/* The tree path: rankd's decoder (decode.c) for valid requests,
 * protobuf-c after the wire check for the rest (it names what is wrong),
 * then score_request. A gRPC code; *req the decoded request. */
static int tree_request(rk_service *s, const uint8_t *req_bytes, size_t len, Rankd__V1__RankRequest **req,
                        double *t_decoded, double *lookup_us, double *model_us, rk_err *err) {
    if (rk_rank_request_decode(req_bytes, len, &s->pballoc, req)) {
        arena_reset(&s->ar);
        char wmsg[sizeof err->msg];
        if (rk_pb_check(&rankd__v1__rank_request__descriptor, req_bytes, len, wmsg, sizeof wmsg))
            return failf(err, ST_INVALID_ARGUMENT, "%s", wmsg);
        *req = rankd__v1__rank_request__unpack(&s->pballoc, len, req_bytes);
    }
    *t_decoded = rk_now();
    if (!*req)
        return s->ar.exhausted ? failf(err, ST_RESOURCE_EXHAUSTED, "request: decoding needs more than %zu bytes of memory",
                                       s->ar.limit)
                               : failf(err, ST_INVALID_ARGUMENT, "request is not a valid rankd.v1.RankRequest");
    return score_request(s, *req, lookup_us, model_us, err);
}

/* rk_service_handle by the direct path (direct: GAVE_UP when it gives up,
 * for the tree path to answer) or by the tree path. */
static int handle_with(rk_service *s, const uint8_t *req_bytes, size_t len, double t0, const uint8_t **resp,
                       size_t *resp_len, rk_err *err, int direct) {
    *resp = NULL;
    *resp_len = 0;
    if (err) err->msg[0] = 0;
    if (s->out_cap > s->out_warm) { /* the last response was larger: back to the warm size */
        uint8_t *nb = rk_malloc(s->out_warm);
        if (nb) {
            rk_free(s->out);
            s->out = nb;
            s->out_cap = s->out_warm;
        }
    }
    Rankd__V1__RankRequest head, *req = &head;
    double t_decoded = 0, lookup_us = 0, model_us = 0;
    int code = direct ? direct_request(s, req_bytes, len, &head, &t_decoded, &lookup_us, &model_us, err)
                      : tree_request(s, req_bytes, len, &req, &t_decoded, &lookup_us, &model_us, err);
    if (code) { /* GAVE_UP too */
        arena_reset(&s->ar);
        return code;
    }
    double t_scored = rk_now();

    int n = (int)req->n_candidates;
    resp_in ri = {.request_id = req->request_id, .model_version = rk_model_version(s->m), .pctr = s->pctr, .n = n,
                  .n_towers = req->return_tower_scores ? s->n_towers : 0};
    if (ri.n_towers) {
        /* a single model: its one tower with all of the weight; an
         * ensemble: each member's pCTR and fusion weight */
        const int T = s->n_towers;
        for (int i = 0; i < n; i++) {
            float *mp = s->mp, *mw = s->mw, *tp = &s->tp[(size_t)i * T * 2];
            if (rk_model_n_members(s->m)) {
                if (rk_scorer_member_scores(s->scorer, i, mp, mw, err)) {
                    arena_reset(&s->ar);
                    return ST_INTERNAL;
                }
            } else {
                mp[0] = s->pctr[i];
                mw[0] = 1.0f;
            }
            for (int k = 0; k < T; k++) tp[2 * k] = mp[k], tp[2 * k + 1] = mw[k];
        }
        ri.tower_scores = s->tp;
    }
    Rankd__V1__Timing timing = RANKD__V1__TIMING__INIT;
    double t_built = rk_now();
    /* "lookup" is everything between decoding and the towers: validation,
     * hashing the values to rows, fetching and pooling the rows; so the
     * four stages add up to the total. */
    lookup_us = (t_scored - t_decoded) * 1e6 - model_us;
    if (lookup_us < 0) lookup_us = 0;
    s->last.decode_us = (t_decoded - t0) * 1e6;
    s->last.lookup_us = lookup_us;
    s->last.model_us = model_us;
    s->last.encode_us = (t_built - t_scored) * 1e6;
    s->last.n_candidates = n;
    if (req->return_timing) {
        /* encode_us covers building the response; the final serialization
         * (about a microsecond per 100 candidates) runs after these fields
         * are written and is not included. */
        timing.decode_us = us(t_decoded - t0);
        timing.lookup_us = us(lookup_us * 1e-6);
        timing.model_us = us(model_us * 1e-6);
        timing.encode_us = us(t_built - t_scored);
        timing.total_us = us(t_built - t0);
        ri.timing = &timing;
    }
    ri.ad = s->adp;
    size_t need = resp_size(s, &ri);
    if (need > (size_t)s->o.max_message_bytes && direct) {
        /* the tree path may refuse such a request before (its decoding's
         * memory bound): its answer is the one */
        arena_reset(&s->ar);
        return GAVE_UP;
    }
    if (need > (size_t)s->o.max_message_bytes) {
        /* a client's receive limit is usually the same as ours; echoed
         * ad_id / request_id strings can make a response outgrow it */
        arena_reset(&s->ar);
        return failf(err, ST_RESOURCE_EXHAUSTED,
                     "response: %zu bytes exceed the message-size limit of %d bytes (long ad_id or request_id strings "
                     "echoed back; send fewer candidates or shorter ids)",
                     need, s->o.max_message_bytes);
    }
    if (need > s->out_cap) {
        /* Only ad_id/request_id lengths (bounded by the request size) make a
         * response outgrow the initial buffer: grow for this response, back
         * to the warm size on the next call. */
        uint8_t *nb = rk_malloc(need);
        if (!nb) {
            arena_reset(&s->ar);
            return failf(err, ST_RESOURCE_EXHAUSTED, "response: %zu bytes, out of memory", need);
        }
        rk_free(s->out);
        s->out = nb;
        s->out_cap = need;
    }
    size_t got = resp_pack(s, &ri, s->out);
    RK_ASSERT(got == need);
    arena_reset(&s->ar);
    *resp = s->out;
    *resp_len = got;
    s->last.encode_us = (rk_now() - t_scored) * 1e6; /* with the serialization */
    return ST_OK;
}

int rk_service_handle(rk_service *s, const uint8_t *req_bytes, size_t len, double t0,
                      const uint8_t **resp, size_t *resp_len, rk_err *err) {
    int code = s->direct ? handle_with(s, req_bytes, len, t0, resp, resp_len, err, 1) : GAVE_UP;
    if (s->direct) s->direct_n[code == GAVE_UP]++;
    return code == GAVE_UP ? handle_with(s, req_bytes, len, t0, resp, resp_len, err, 0) : code;
}

size_t rk_service_memory(const rk_service *s) {
    return s->ar.cap + s->ar.mapped + s->out_cap;
}
void rk_service_set_routed(rk_service *s) { s->routed = 1; }

void rk_service_last_timing(const rk_service *s, rk_stage_times *out) {
    *out = s->last;
}

void rk_service_sid_counters(const rk_service *s, uint64_t *unknown, uint64_t *assigned) {
    rk_scorer_sid_counters(s->scorer, unknown, assigned);
}

void rk_service_embsum_counters(const rk_service *s, uint64_t out[3]) {
    memcpy(out, s->es_count, sizeof s->es_count);
}

const rk_embsum_bundle *rk_service_embsum(const rk_service *s) { return s->es; }
