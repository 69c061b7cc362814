/*
 * tools/rank_sid.c — `rank sid`: semantic-ID codebooks and item records.
 *
 *   rank sid build  --embeddings FILE --levels L --codes K --out FILE
 *                   [--seed S] [--iters N] [--version V]
 *   rank sid assign --codebooks FILE --embeddings FILE --out FILE [--version V]
 *
 * FILE of --embeddings: safetensors with "embeddings" F32 [n, D] and "ids"
 * I64 [n] (as written by `rank encode text`, `rank encode image` or `rank
 * encode join`). build trains RQ-KMeans
 * codebooks (semantic_id.h) on all embeddings, encodes every item and
 * writes an item-records file (ids, codes [n, L], codebooks [L, K, D],
 * version); assign encodes the embeddings with the codebooks of an existing
 * records or codebook file (items created after the codebooks were built).
 * Both print the quality figures, and end with one line
 *   sid: n=N levels=L codes=K dim=D recon_rel=R1,R2,.. util=U1,U2,.. collision_rate=C unique=U seconds=S
 * The version (default: "encoder xxh64:..., text '{title} | ...'" from the
 * embeddings file's "encoder" and "text" metadata, else its "model") is
 * stored with the records as the content embedding's version; rankd
 * --encoder refuses an encoder whose identity differs.
 *
 * Everything that can be checked cheaply is checked before the k-means work:
 * the options (integers in range, only the subcommand's own; exit 2), the
 * embeddings (finite, |x| <= 1e9 as dense features, distinct ids) and --out
 * (not a directory, a symbolic link or an input file; its folder exists).
 * The output is written to OUT.tmp-PID and renamed into place; temporaries
 * of killed runs are swept first.
 */

/* Embedding values beyond this are refused (as rank's dense features,
 * RK_DENSE_MAX_ABS): squared distances of such values overflow float. */
#define SID_MAX_ABS 1e9
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "semantic_id.h"

static int die(const rk_err *e) {
    fprintf(stderr, "rank sid: %s\n", e->msg);
    return 1;
}

static void usage(FILE *f) {
    fprintf(f, "usage: rank sid build  --embeddings FILE --levels L --codes K --out FILE [--seed S] [--iters N] [--version V]\n"
               "       rank sid assign --codebooks FILE --embeddings FILE --out FILE [--version V]\n"
               "  --levels L 1..8, --codes K 2..16777216 (<= items), --iters N Lloyd iterations per level\n"
               "  1..1000000 (default 25), --seed S 0..2^64-1 (default 1). Embeddings: safetensors\n"
               "  'embeddings' F32 [n, D] (finite, |x| <= 1e9) and distinct 'ids' I64 [n] (rank encode text|image|join).\n"
               "  assign encodes with the codebooks of a records/codebook file (levels and codes are theirs).\n"
               "  --out: a file (not a directory or symbolic link), written whole or not at all.\n"
               "  --version: the records' content-embedding version (default: the embeddings' encoder\n"
               "  identity and text template, which rankd --encoder checks). assign refuses embeddings\n"
               "  whose version differs from the codebooks' unless --version is given. Usage errors exit 2.\n");
}

typedef struct {
    float *x;
    int64_t *ids;
    size_t n;
    int dim;
    char version[RK_SID_VERSION_MAX];
} emb_file;

static int cmp_id_row(const void *a, const void *b) {
    const int64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] > y[1]) - (x[1] < y[1]);
}

static rk_status read_embeddings(const char *path, emb_file *e, rk_err *err) {
    memset(e, 0, sizeof *e);
    rk_st_file *f;
    rk_status s = rk_st_open(path, &f, err);
    if (s) return s;
    int nd;
    int64_t sh[4];
    if ((s = rk_st_shape(f, "embeddings", &nd, sh, err))) goto done;
    if (nd != 2 || sh[0] < 1 || sh[1] < 1 || sh[1] > INT_MAX) {
        s = rk_fail(err, RK_ESHAPE, "%s: tensor 'embeddings' must be [n, dim] with n, dim >= 1", path);
        goto done;
    }
    e->n = (size_t)sh[0];
    e->dim = (int)sh[1];
    e->x = malloc(e->n * (size_t)e->dim * sizeof(float));
    e->ids = malloc(e->n * sizeof(int64_t));
    if (!e->x || !e->ids) {
        s = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    int64_t want[2] = {sh[0], sh[1]};
    if ((s = rk_st_read_f32(f, "embeddings", e->x, 2, want, err))) goto done;
    if ((s = rk_st_read_i64(f, "ids", e->ids, e->n, err))) goto done;
    for (size_t i = 0; i < e->n * (size_t)e->dim; i++) {
        float v = e->x[i];
        if (!isfinite(v) || fabsf(v) > SID_MAX_ABS) {
            s = rk_fail(err, RK_ENUMERIC, "%s: tensor 'embeddings' row %zu column %zu: %g is %s", path, i / (size_t)e->dim,
                        i % (size_t)e->dim, (double)v, isfinite(v) ? "beyond +-1e9" : "not finite");
            goto done;
        }
    }
    {
        int64_t *p = malloc(e->n * 2 * sizeof(int64_t));
        if (!p) {
            s = rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
            goto done;
        }
        for (size_t i = 0; i < e->n; i++) p[2 * i] = e->ids[i], p[2 * i + 1] = (int64_t)i;
        qsort(p, e->n, 2 * sizeof(int64_t), cmp_id_row);
        for (size_t i = 1; i < e->n && !s; i++)
            if (p[2 * i] == p[2 * i - 2])
                s = rk_fail(err, RK_EINVAL, "%s: tensor 'ids': id %lld at rows %lld and %lld (ids must be distinct)", path,
                            (long long)p[2 * i], (long long)p[2 * i - 1], (long long)p[2 * i + 1]);
        free(p);
        if (s) goto done;
    }
    /* the content embedding's version: the encoder's identity and the text
     * template (rank encode text's metadata), which rankd --encoder checks;
     * else whatever "model" says */
    const char *m = rk_st_meta(f, "model"), *enc = rk_st_meta(f, "encoder"), *tx = rk_st_meta(f, "text");
    const char *im = rk_st_meta(f, "image"), *ie = rk_st_meta(f, "image_encoder"); /* rank encode image / join */
    if (enc && im && !tx) snprintf(e->version, sizeof e->version, "encoder %s, image '%s'", enc, im);
    else if (enc && tx && im && ie)
        snprintf(e->version, sizeof e->version, "encoder %s, text '%s' + encoder %s, image '%s'", enc, tx, ie, im);
    else if (enc) snprintf(e->version, sizeof e->version, "encoder %s, text '%s'", enc, tx ? tx : "");
    else snprintf(e->version, sizeof e->version, "%s", m ? m : "");
done:
    rk_st_close(f);
    return s;
}

/* --out must be a file we can create by rename in an existing folder: not a
 * directory, not a symbolic link (the rename would replace the link, not
 * write through it), not one of the inputs. */
static int check_out(const char *out, const char *const *inputs, int n_in) {
    struct stat so, si;
    if (!*out) {
        fprintf(stderr, "rank sid: --out: empty path\n");
        return 1;
    }
    if (!lstat(out, &so)) {
        if (S_ISLNK(so.st_mode)) {
            fprintf(stderr, "rank sid: --out %s is a symbolic link; give the file it points to (the output is "
                            "renamed into place, which would replace the link)\n", out);
            return 1;
        }
        if (S_ISDIR(so.st_mode)) {
            fprintf(stderr, "rank sid: --out %s is a directory; give a file name\n", out);
            return 1;
        }
        for (int i = 0; i < n_in; i++)
            if (rk_same_file(inputs[i], out)) {
                fprintf(stderr, "rank sid: --out %s is the input %s; write to another file\n", out, inputs[i]);
                return 1;
            }
    }
    char dir[4096];
    rk_path_parent(out, dir, sizeof dir);
    if (stat(dir, &si)) {
        fprintf(stderr, "rank sid: --out %s: folder %s: %s\n", out, dir, strerror(errno));
        return 1;
    }
    if (!S_ISDIR(si.st_mode)) {
        fprintf(stderr, "rank sid: --out %s: %s is not a directory\n", out, dir);
        return 1;
    }
    if (access(dir, W_OK)) {
        fprintf(stderr, "rank sid: --out %s: folder %s: %s\n", out, dir, strerror(errno));
        return 1;
    }
    return 0;
}

/* strtoll with the whole string, in [lo, hi]; else a message naming the option, 2 */
static int parse_opt(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char what[64];
    snprintf(what, sizeof what, "--%s", opt);
    rk_err e = {0};
    if (rk_parse_int(what, v, lo, hi, out, &e)) {
        fprintf(stderr, "rank sid: %s\n", e.msg);
        return 2;
    }
    return 0;
}

static rk_status report_and_save(const rk_sid_codebook *cb, const emb_file *e, const char *version, const char *out,
                                 double t0, rk_err *err) {
    uint32_t *codes = malloc(e->n * (size_t)cb->levels * sizeof(uint32_t));
    if (!codes) return rk_fail(err, RK_ENOMEM, "out of memory");
    rk_status s = rk_sid_encode(cb, e->x, e->n, codes, err);
    rk_sid_stats st;
    if (!s) s = rk_sid_compute_stats(cb, e->x, e->n, codes, &st, err);
    rk_sid_items *it = NULL;
    if (!s) s = rk_sid_items_create(e->ids, codes, e->n, cb->levels, cb->codes, version, &it, err);
    if (!s) s = rk_sid_items_save(it, cb, out, err);
    if (!s) {
        char rel[256] = "", util[256] = "";
        size_t a = 0, b = 0;
        for (int l = 0; l < cb->levels; l++) {
            printf("level %d: recon mse %.6f (%.4f of mean ||x||^2), codebook utilisation %.4f\n", l + 1,
                   st.recon_mse[l], st.rel_error[l], st.utilisation[l]);
            a += (size_t)snprintf(rel + a, sizeof rel - a, "%s%.4f", l ? "," : "", st.rel_error[l]);
            b += (size_t)snprintf(util + b, sizeof util - b, "%s%.4f", l ? "," : "", st.utilisation[l]);
        }
        printf("items %zu, distinct code tuples %zu, collision rate %.4f (items sharing all %d codes)\n", e->n,
               st.n_unique, st.collision_rate, cb->levels);
        printf("sid: n=%zu levels=%d codes=%d dim=%d recon_rel=%s util=%s collision_rate=%.4f unique=%zu "
               "seconds=%.2f output=%s\n",
               e->n, cb->levels, cb->codes, cb->dim, rel, util, st.collision_rate, st.n_unique, rk_now() - t0, out);
    }
    rk_sid_items_destroy(it);
    free(codes);
    return s;
}

int rank_sid_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "build") && strcmp(sub, "assign")) {
        fprintf(stderr, "rank sid: unknown subcommand '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    const char *emb = NULL, *out = NULL, *cbpath = NULL, *version = NULL;
    int levels = 0, codes = 0, build = !strcmp(sub, "build");
    rk_sid_train_opts o = RK_SID_TRAIN_OPTS_DEFAULT;
    static const struct option opts[] = {{"embeddings", 1, 0, 'e'}, {"levels", 1, 0, 'l'}, {"codes", 1, 0, 'k'},
                                         {"out", 1, 0, 'o'},        {"seed", 1, 0, 's'},   {"iters", 1, 0, 'i'},
                                         {"version", 1, 0, 'v'},    {"codebooks", 1, 0, 'c'}, {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 2;
    int c, li = 0;
    while ((c = getopt_long(argc, argv, "", opts, &li)) != -1) {
        long long x = 0;
        int bad = 0;
        if ((!build && strchr("lksi", c)) || (build && c == 'c')) {
            fprintf(stderr, "rank sid %s: --%s is not an option of %s%s\n", sub, opts[li].name, sub,
                    build ? "" : " (the codebooks fix levels and codes)");
            usage(stderr);
            return 2;
        }
        switch (c) {
        case 'e': emb = optarg; break;
        case 'o': out = optarg; break;
        case 'c': cbpath = optarg; break;
        case 'v': version = optarg; break;
        case 'l': bad = parse_opt("levels", optarg, 1, RK_SID_MAX_LEVELS, &x), levels = (int)x; break;
        case 'k': bad = parse_opt("codes", optarg, 2, 1 << 24, &x), codes = (int)x; break;
        case 'i': bad = parse_opt("iters", optarg, 1, 1000000, &x), o.max_iters = (int)x; break;
        case 's': {
            rk_err se = {0};
            uint64_t sd = 0;
            if (rk_parse_u64("--seed", optarg, &sd, &se)) {
                fprintf(stderr, "rank sid: %s\n", se.msg);
                bad = 2;
            }
            o.seed = sd;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "rank sid %s: unexpected argument '%s'\n", sub, argv[optind]);
        return 2;
    }
    if (!emb || !out) {
        fprintf(stderr, "rank sid %s: --embeddings and --out are required\n", sub);
        return 2;
    }
    if (build && (levels < 1 || codes < 2)) {
        fprintf(stderr, "rank sid build: --levels (1..%d) and --codes (>= 2) are required\n", RK_SID_MAX_LEVELS);
        return 2;
    }
    if (!build && !cbpath) {
        fprintf(stderr, "rank sid assign: --codebooks is required\n");
        return 2;
    }
    const char *inputs[2] = {emb, cbpath};
    if (check_out(out, inputs, 2)) return 1;
    rk_sweep_dead_writers(out, 0, "rank sid --out");
    rk_log_blas_info();
    rk_err e = {0};
    emb_file ef;
    double t0 = rk_now();
    if (read_embeddings(emb, &ef, &e)) {
        free(ef.x);
        free(ef.ids);
        return die(&e);
    }
    rk_sid_codebook cb = {0};
    rk_status s;
    if (build) {
        s = rk_sid_train(ef.x, ef.n, ef.dim, levels, codes, &o, &cb, &e);
        if (s) rk_err_prefix(&e, "%s", emb); /* the message is about the embeddings */
    } else {
        s = rk_sid_codebook_load(cbpath, &cb, &e);
        if (!s && cb.dim != ef.dim)
            s = rk_fail(&e, RK_ESHAPE, "%s: embeddings of dim %d, the codebooks of %s expect %d", emb, ef.dim, cbpath,
                        cb.dim);
        /* Codes are only comparable when the new embeddings come from the
         * same encoder and text template as the codebooks' items. */
        rk_st_file *cf = NULL;
        if (!s && !version && ef.version[0] && rk_st_open(cbpath, &cf, NULL) == RK_OK) {
            const char *cv = rk_st_meta(cf, "rankd.sid.version");
            if (cv && cv[0] && strcmp(cv, ef.version) != 0)
                s = rk_fail(&e, RK_EINVAL,
                            "%s: content embedding version \"%s\" differs from the codebooks' (%s: \"%s\"): encode "
                            "with the same encoder and text template, or pass --version to assign anyway",
                            emb, ef.version, cbpath, cv);
            rk_st_close(cf);
        }
    }
    if (!s) s = report_and_save(&cb, &ef, version ? version : ef.version, out, t0, &e);
    rk_sid_codebook_free(&cb);
    free(ef.x);
    free(ef.ids);
    return s ? die(&e) : 0;
}
