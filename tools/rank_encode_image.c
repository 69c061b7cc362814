/*
 * tools/rank_encode_image.c — `rank encode image`: one embedding per image.
 *
 *   rank encode image --model DIR (--dir FOLDER | --list FILE) --output FILE
 *                     [--batch N] [--threads N] [--limit N] [--pool cls|mean]
 *                     [--normalize] [--skip-bad]
 *
 * Images (JPEG or PNG) come from a folder (every *.jpg, *.jpeg, *.png in it,
 * by name; each file's name without extension is its integer id, e.g.
 * 1042.jpg) or from a list file (lines "ID,PATH"; relative paths are
 * relative to the list's folder; blank lines and lines starting with # are
 * skipped). Each image is decoded and preprocessed (embed/image.c: the
 * DINOv2 evaluation transform) and encoded in batches of --batch with the
 * library's vision encoder. The output is a safetensors file with
 * "embeddings" F32 [n, dim] and "ids" I64 [n] in input order — the layout of
 * `rank encode text`, so `rank sid build` takes either — plus metadata:
 * model, encoder (xxh64 of the weights), image (the transform and pooling),
 * dim, normalized. A bad image stops the run with an error naming the file,
 * or with --skip-bad is reported and left out. The last stdout line is
 *   encode: n=N skipped=K dim=D batch=B threads=T seconds=S img_per_s=R output=FILE
 * where seconds count decoding + preprocessing + encoding.
 *
 *   rank encode join --text FILE --image FILE --output FILE
 *
 * Text + image content embeddings for `rank sid build`: the rows of the two
 * files (`rank encode text`, `rank encode image`) with the same id, each
 * row [text ; image] concatenated, in the text file's order; ids in only one
 * file are counted and left out. Metadata keeps both recipes (encoder, text,
 * image_encoder, image), so rank sid's records version names both encoders
 * and rankd --encoder --image-encoder can check both and concatenate
 * content_text's and content_image's embeddings the same way. Encode the
 * images with --normalize: all-MiniLM-L6-v2's vectors have norm 1, DINOv2's
 * CLS about 50, which would otherwise drown the text in k-means.
 */
#include <cblas.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"

typedef struct {
    char **path;
    int64_t *id;
    size_t n, cap;
} list_t;

static void list_free(list_t *l) {
    for (size_t i = 0; i < l->n; i++) rk_free(l->path[i]);
    rk_free(l->path);
    rk_free(l->id);
}

static rk_status list_add(list_t *l, const char *path, int64_t id, rk_err *err) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        char **p = rk_realloc(l->path, cap * sizeof *p);
        if (p) l->path = p;
        int64_t *d = rk_realloc(l->id, cap * sizeof *d);
        if (d) l->id = d;
        if (!p || !d) return rk_fail(err, RK_ENOMEM, "out of memory for %zu images", cap);
        l->cap = cap;
    }
    if (!(l->path[l->n] = rk_strdup(path))) return rk_fail(err, RK_ENOMEM, "out of memory");
    l->id[l->n++] = id;
    return RK_OK;
}

static int parse_id(const char *s, size_t len, int64_t *out) {
    char buf[32];
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (*end || errno || isspace((unsigned char)buf[0])) return 0;
    *out = v;
    return 1;
}

static int is_image_name(const char *n) {
    const char *dot = strrchr(n, '.');
    return dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png"));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static rk_status scan_dir(const char *dir, list_t *l, rk_err *err) {
    DIR *d = opendir(dir);
    if (!d) return rk_fail(err, errno == ENOENT ? RK_ENOTFOUND : RK_EIO, "%s: %s", dir, strerror(errno));
    list_t names = {0};
    struct dirent *de;
    rk_status s = RK_OK;
    while (!s && (de = readdir(d)))
        if (de->d_name[0] != '.' && is_image_name(de->d_name)) s = list_add(&names, de->d_name, 0, err);
    closedir(d);
    if (!s) qsort(names.path, names.n, sizeof *names.path, cmp_str);
    char full[4096];
    for (size_t i = 0; i < names.n && !s; i++) {
        int64_t id;
        snprintf(full, sizeof full, "%s/%s", dir, names.path[i]);
        if (!parse_id(names.path[i], (size_t)(strrchr(names.path[i], '.') - names.path[i]), &id))
            s = rk_fail(err, RK_EINVAL, "%s: the file name is not an integer id (name images ID.jpg, or use --list)", full);
        else s = list_add(l, full, id, err);
    }
    if (!s && l->n == 0) s = rk_fail(err, RK_ENOTFOUND, "%s: no *.jpg, *.jpeg or *.png files", dir);
    list_free(&names);
    return s;
}

static int cmp_pair(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* The first two places (*a < *b) sharing an id, by the smaller id: 1 when
 * there are such, 0 when every id is distinct, -1 out of memory. Shared by
 * rank encode image and text (tools/rank_encode.c). */
int rank_encode_dup_ids(const int64_t *id, size_t n, size_t *a, size_t *b) {
    int64_t(*p)[2] = rk_malloc((n ? n : 1) * sizeof *p);
    if (!p) return -1;
    for (size_t i = 0; i < n; i++) p[i][0] = id[i], p[i][1] = (int64_t)i;
    qsort(p, n, sizeof *p, cmp_pair);
    int dup = 0;
    for (size_t i = 1; i < n && !dup; i++)
        if (p[i][0] == p[i - 1][0]) {
            dup = 1;
            *a = (size_t)(p[i][1] < p[i - 1][1] ? p[i][1] : p[i - 1][1]);
            *b = (size_t)(p[i][1] < p[i - 1][1] ? p[i - 1][1] : p[i][1]);
        }
    rk_free(p);
    return dup;
}

/* Each id once: rows sharing an id would be refused later by rank sid and
 * made ambiguous by rank encode join. src names the --dir or --list. */
static rk_status check_ids(const char *src, const list_t *l, rk_err *err) {
    size_t a, b;
    int dup = rank_encode_dup_ids(l->id, l->n, &a, &b);
    if (dup < 0) return rk_fail(err, RK_ENOMEM, "out of memory for %zu ids", l->n);
    if (dup) return rk_fail(err, RK_EINVAL, "%s: id %lld given twice (%s and %s)", src, (long long)l->id[a], l->path[a], l->path[b]);
    return RK_OK;
}

static rk_status read_list(const char *path, list_t *l, rk_err *err) {
    char *buf;
    size_t len;
    rk_status s = rk_read_file(path, &buf, &len, err);
    if (s) return s;
    char base[4096], full[8192];
    rk_path_parent(path, base, sizeof base);
    size_t line = 0;
    for (char *p = buf, *end = buf + len; p < end && !s;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line++;
        if (e > p && e[-1] == '\r') e--;
        if (memchr(p, 0, (size_t)(e - p))) {
            s = rk_fail(err, RK_EFORMAT, "%s: line %zu: a NUL byte in the line", path, line);
            break;
        }
        *e = 0;
        if (*p && *p != '#') {
            char *comma = strchr(p, ',');
            int64_t id;
            if (!comma || !parse_id(p, (size_t)(comma - p), &id) || !comma[1])
                s = rk_fail(err, RK_EFORMAT, "%s: line %zu: expected 'ID,PATH' with an integer ID, got '%.60s'", path,
                            line, p);
            else {
                if (comma[1] == '/') snprintf(full, sizeof full, "%s", comma + 1);
                else snprintf(full, sizeof full, "%s/%s", base, comma + 1);
                s = list_add(l, full, id, err);
            }
        }
        p = nl ? nl + 1 : end;
    }
    rk_free(buf);
    if (!s && l->n == 0) s = rk_fail(err, RK_EFORMAT, "%s: no images listed", path);
    return s;
}

static void usage(FILE *o) {
    fprintf(o, "usage: rank encode image --model DIR (--dir FOLDER | --list FILE) --output FILE [options]\n"
               "  --model DIR          DINOv2 checkpoint (config.json + model.safetensors; scripts/setup-vision.sh)\n"
               "  --dir FOLDER         every *.jpg/*.jpeg/*.png in FOLDER; the name without extension is the id\n"
               "  --list FILE          lines 'ID,PATH' (PATH relative to FILE's folder unless absolute)\n"
               "  --output FILE        safetensors: \"embeddings\" F32 [n, dim], \"ids\" I64 [n]\n"
               "  --batch N            images per encoder call (default 16)\n"
               "  --threads N          OpenBLAS threads (default: OpenBLAS' own setting)\n"
               "  --limit N            only the first N images\n"
               "  --pool cls|mean      CLS token (default) or mean of the patch tokens, after the final LayerNorm\n"
               "  --normalize          L2-normalize each embedding\n"
               "  --skip-bad           report and leave out images that fail to decode (default: stop)\n");
}

/* Decode + preprocess images [i, i + b) of l into px; bad ones skipped or fatal. */
static rk_status load_batch(const list_t *l, size_t i, size_t b, int skip_bad, float *px, int64_t *ids, size_t *got,
                            size_t *skipped, rk_err *err) {
    const size_t per = 3 * RK_VISION_CROP * RK_VISION_CROP;
    *got = 0;
    for (size_t k = i; k < i + b; k++) {
        rk_image im;
        rk_status s = rk_image_load(l->path[k], NULL, &im, err); /* errors name the file */
        if (!s && (s = rk_image_preprocess(&im, RK_VISION_RESIZE, RK_VISION_CROP, px + *got * per, err)))
            rk_err_prefix(err, "%s", l->path[k]);
        rk_image_free(&im);
        if (s && s != RK_ENOMEM && skip_bad) {
            fprintf(stderr, "rank encode image: skipped: %s\n", err->msg);
            (*skipped)++;
            continue;
        }
        if (s) return s;
        ids[*got] = l->id[k];
        (*got)++;
    }
    return RK_OK;
}

/* ---------------------------------------------------------------- join */

typedef struct {
    rk_st_file *f;
    int64_t n, dim;
    float *x;
    int64_t *ids;
} embfile_t;

static rk_status emb_open(const char *path, embfile_t *e, rk_err *err) {
    memset(e, 0, sizeof *e);
    int nd;
    int64_t sh[4];
    rk_status s = rk_st_open(path, &e->f, err);
    if (!s) s = rk_st_shape(e->f, "embeddings", &nd, sh, err);
    if (!s && (nd != 2 || sh[0] < 1 || sh[1] < 1))
        s = rk_fail(err, RK_ESHAPE, "%s: tensor 'embeddings' must be [n, dim] with n, dim >= 1", path);
    if (s) return s;
    e->n = sh[0], e->dim = sh[1];
    e->x = rk_malloc((size_t)(e->n * e->dim) * sizeof(float));
    e->ids = rk_malloc((size_t)e->n * sizeof(int64_t));
    if (!e->x || !e->ids) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    if ((s = rk_st_read_f32(e->f, "embeddings", e->x, 2, sh, err)) ||
        (s = rk_st_read_i64(e->f, "ids", e->ids, (size_t)e->n, err)))
        return s;
    return RK_OK;
}

static void emb_close(embfile_t *e) {
    rk_st_close(e->f);
    rk_free(e->x);
    rk_free(e->ids);
}


static int join_main(int argc, char **argv) {
    const char *tpath = NULL, *ipath = NULL, *output = NULL;
    static struct option opts[] = {{"text", 1, 0, 't'}, {"image", 1, 0, 'i'}, {"output", 1, 0, 'o'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't': tpath = optarg; break;
        case 'i': ipath = optarg; break;
        case 'o': output = optarg; break;
        case 'h':
            printf("usage: rank encode join --text FILE --image FILE --output FILE\n"
                   "  rows of the two files (rank encode text, rank encode image) with the same id,\n"
                   "  concatenated [text ; image] in the text file's order; ids in one file only are\n"
                   "  left out (counted). Encode the images with --normalize (text vectors have norm 1).\n");
            return 0;
        default: return 2;
        }
    }
    if (!tpath || !ipath || !output) {
        fprintf(stderr, "rank encode join: --text, --image and --output are required\n");
        return 2;
    }
    if (rk_same_file(output, tpath) || rk_same_file(output, ipath)) {
        fprintf(stderr, "rank encode join: --output %s is the input %s; write to another file\n", output,
                rk_same_file(output, tpath) ? tpath : ipath);
        return 1;
    }
    int rc = 1;
    rk_err err = {0};
    embfile_t t, im;
    int64_t *idx = NULL, *ids = NULL;
    float *out = NULL;
    rk_st_writer *w = NULL;
    if (emb_open(tpath, &t, &err) || emb_open(ipath, &im, &err)) goto fail_err;
    const char *te = rk_st_meta(t.f, "encoder"), *tt = rk_st_meta(t.f, "text");
    const char *ie = rk_st_meta(im.f, "encoder"), *ir = rk_st_meta(im.f, "image");
    if (!te || !tt) {
        rk_fail(&err, RK_EFORMAT, "%s: no 'encoder' and 'text' metadata (not written by rank encode text)", tpath);
        goto fail_err;
    }
    if (!ie || !ir) {
        rk_fail(&err, RK_EFORMAT, "%s: no 'encoder' and 'image' metadata (not written by rank encode image)", ipath);
        goto fail_err;
    }
    const char *nz = rk_st_meta(im.f, "normalized");
    if (!nz || strcmp(nz, "true"))
        fprintf(stderr, "rank encode join: warning: %s is not L2-normalized (rank encode image --normalize): its "
                        "scale will dominate the text's in k-means\n", ipath);
    /* image rows by id: sorted (id, row) pairs, binary search */
    idx = rk_malloc((size_t)im.n * 2 * sizeof(int64_t));
    const int64_t D = t.dim + im.dim;
    out = rk_malloc((size_t)(t.n * D) * sizeof(float));
    ids = rk_malloc((size_t)t.n * sizeof(int64_t));
    if (!idx || !out || !ids) {
        rk_fail(&err, RK_ENOMEM, "out of memory");
        goto fail_err;
    }
    for (int64_t r = 0; r < im.n; r++) idx[2 * r] = im.ids[r], idx[2 * r + 1] = r;
    qsort(idx, (size_t)im.n, 2 * sizeof(int64_t), cmp_pair);
    int64_t n = 0;
    for (int64_t r = 0; r < t.n; r++) {
        int64_t key[2] = {t.ids[r], 0};
        const int64_t *hit = bsearch(key, idx, (size_t)im.n, 2 * sizeof(int64_t), cmp_pair);
        if (!hit) continue;
        memcpy(out + n * D, t.x + r * t.dim, (size_t)t.dim * sizeof(float));
        memcpy(out + n * D + t.dim, im.x + hit[1] * im.dim, (size_t)im.dim * sizeof(float));
        ids[n++] = t.ids[r];
    }
    if (n == 0) {
        rk_fail(&err, RK_EINVAL, "%s and %s share no id", tpath, ipath);
        goto fail_err;
    }
    int64_t se[2] = {n, D}, si[1] = {n};
    char dims[32];
    snprintf(dims, sizeof dims, "%lld", (long long)D);
    if (rk_st_writer_create(&w, &err) || rk_st_writer_add_f32(w, "embeddings", out, 2, se, &err) ||
        rk_st_writer_add_i64(w, "ids", ids, 1, si, &err) || rk_st_writer_add_meta(w, "encoder", te, &err) ||
        rk_st_writer_add_meta(w, "text", tt, &err) || rk_st_writer_add_meta(w, "image_encoder", ie, &err) ||
        rk_st_writer_add_meta(w, "image", ir, &err) || rk_st_writer_add_meta(w, "dim", dims, &err) ||
        rk_st_writer_write(w, output, &err))
        goto fail_err;
    printf("join: n=%lld text_only=%lld image_only=%lld dim=%lld output=%s\n", (long long)n, (long long)(t.n - n),
           (long long)(im.n - n), (long long)D, output);
    rc = 0;
    goto done;
fail_err:
    fprintf(stderr, "rank: error: %s\n", err.msg);
done:
    rk_st_writer_destroy(w);
    rk_free(idx);
    rk_free(out);
    rk_free(ids);
    emb_close(&t);
    emb_close(&im);
    return rc;
}

int rank_encode_image_main(int argc, char **argv) {
    if (!strcmp(argv[1], "join")) return join_main(argc, argv);
    const char *model = NULL, *dir = NULL, *listf = NULL, *output = NULL, *pool = "cls";
    long batch = 16, threads = 0, limit = -1;
    int normalize = 0, skip_bad = 0;
    static struct option opts[] = {{"model", 1, 0, 'm'},  {"dir", 1, 0, 'D'},      {"list", 1, 0, 'L'},
                                   {"output", 1, 0, 'o'}, {"batch", 1, 0, 'b'},    {"threads", 1, 0, 't'},
                                   {"limit", 1, 0, 'l'},  {"pool", 1, 0, 'p'},     {"normalize", 0, 0, 'n'},
                                   {"skip-bad", 0, 0, 's'}, {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long *dst = NULL, lo = 0, hi = 0;
        const char *name = "";
        switch (ch) {
        case 'm': model = optarg; break;
        case 'D': dir = optarg; break;
        case 'L': listf = optarg; break;
        case 'o': output = optarg; break;
        case 'p': pool = optarg; break;
        case 'n': normalize = 1; break;
        case 's': skip_bad = 1; break;
        case 'b': dst = &batch, lo = 1, hi = 1024, name = "batch"; break;
        case 't': dst = &threads, lo = 1, hi = 256, name = "threads"; break;
        case 'l': dst = &limit, lo = 0, hi = 1L << 40, name = "limit"; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (dst) {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || v < lo || v > hi) {
                fprintf(stderr, "rank encode image: --%s: expected an integer in %ld..%ld, got '%s'\n", name, lo, hi, optarg);
                return 2;
            }
            *dst = v;
        }
    }
    if (!model || !output || (!dir == !listf)) {
        fprintf(stderr, "rank encode image: --model, --output and exactly one of --dir or --list are required\n");
        return 2;
    }
    if (strcmp(pool, "cls") && strcmp(pool, "mean")) {
        fprintf(stderr, "rank encode image: --pool: expected 'cls' or 'mean', got '%s'\n", pool);
        return 2;
    }
    int rc = 1;
    rk_err err = {0};
    list_t l = {0};
    rk_vision_encoder *enc = NULL;
    float *px = NULL, *emb = NULL;
    int64_t *ids = NULL;
    rk_st_writer *w = NULL;
    rk_vision_encoder_opts eo = RK_VISION_ENCODER_OPTS_DEFAULT;
    eo.threads = (int)threads, eo.max_batch = (int)batch, eo.normalize = normalize;
    eo.pool = strcmp(pool, "mean") ? RK_VIT_POOL_CLS : RK_VIT_POOL_MEAN;
    if ((dir ? scan_dir(dir, &l, &err) : read_list(listf, &l, &err)) || check_ids(dir ? dir : listf, &l, &err))
        goto fail_err;
    if (rk_vision_encoder_open(model, &eo, &enc, &err)) goto fail_err;
    size_t n = l.n;
    if (limit >= 0 && (size_t)limit < n) n = (size_t)limit;
    const int dim = rk_vision_encoder_dim(enc);
    px = rk_malloc((size_t)batch * 3 * RK_VISION_CROP * RK_VISION_CROP * sizeof(float));
    emb = rk_malloc((n ? n : 1) * (size_t)dim * sizeof(float));
    ids = rk_malloc((n ? n : 1) * sizeof *ids);
    if (!px || !emb || !ids) {
        rk_fail(&err, RK_ENOMEM, "out of memory for %zu images", n);
        goto fail_err;
    }
    rk_progress pr;
    rk_progress_start(&pr, "encode", "img", n);
    double t0 = rk_now();
    size_t done = 0, skipped = 0;
    for (size_t i = 0; i < n; i += (size_t)batch) {
        size_t b = n - i < (size_t)batch ? n - i : (size_t)batch, got;
        if (load_batch(&l, i, b, skip_bad, px, ids + done, &got, &skipped, &err)) goto fail_err;
        if (rk_vision_encoder_encode(enc, px, (int)got, emb + done * (size_t)dim, &err)) goto fail_err;
        done += got;
        rk_progress_add(&pr, (uint64_t)b);
    }
    double secs = rk_now() - t0;
    rk_progress_finish(&pr);
    if (done == 0) {
        rk_fail(&err, RK_EINVAL, "no image could be encoded (%zu skipped)", skipped);
        goto fail_err;
    }
    int64_t se[2] = {(int64_t)done, dim}, si[1] = {(int64_t)done};
    char ident[64], dims[32], recipe[160];
    if (rk_vision_encoder_identity(model, ident, sizeof ident, &err)) goto fail_err;
    snprintf(dims, sizeof dims, "%d", dim);
    /* rankd --image-encoder reads "pool cls|mean" and "l2 yes|no" back from the records version */
    snprintf(recipe, sizeof recipe, "dinov2 eval %d/%d bicubic, pool %s, l2 %s", RK_VISION_RESIZE, RK_VISION_CROP, pool,
             normalize ? "yes" : "no");
    if (rk_st_writer_create(&w, &err) || rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &err) ||
        rk_st_writer_add_i64(w, "ids", ids, 1, si, &err) || rk_st_writer_add_meta(w, "model", model, &err) ||
        rk_st_writer_add_meta(w, "encoder", ident, &err) || rk_st_writer_add_meta(w, "image", recipe, &err) ||
        rk_st_writer_add_meta(w, "dim", dims, &err) ||
        rk_st_writer_add_meta(w, "normalized", normalize ? "true" : "false", &err) ||
        rk_st_writer_write(w, output, &err))
        goto fail_err;
    printf("encode: n=%zu skipped=%zu dim=%d batch=%ld threads=%d seconds=%.3f img_per_s=%.2f output=%s\n", done,
           skipped, dim, batch, openblas_get_num_threads(), secs, secs > 0 ? (double)n / secs : 0.0, output);
    rc = 0;
    goto done;
fail_err:
    fprintf(stderr, "rank: error: %s\n", err.msg);
done:
    rk_st_writer_destroy(w);
    rk_free(px);
    rk_free(emb);
    rk_free(ids);
    list_free(&l);
    rk_vision_encoder_close(enc);
    return rc;
}
