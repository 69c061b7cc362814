/*
 * tools/rank_embsum.c — `rank embsum train|build|inspect|score|pairs`:
 * EmbSum (rank/embsum.h) from the command line. A thin main over the
 * library: option parsing, progress and result lines, output files.
 *
 *   train    load `rank data movielens` output + the encoder, train, report
 *            ranking metrics (and the untrained mean-pool baseline), write
 *            the bundle (UPE / CPE tables in one codec)
 *   build    rewrite a bundle's UPE / CPE tables (another codec, new data)
 *            from its parameters
 *   inspect  a bundle's config, tables, bytes per row; one user's / item's
 *            vectors
 *   score    pCTR of (user_id, movie_id) rows from the bundle's store
 *   pairs    raw matching scores of (split, user_id, movie_id) rows with the
 *            UPE of that split's history (features for another model)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embed.h"
#include "rank.h"
#include "store.h"

static void usage(FILE *o) {
    fprintf(o,
            "usage: rank embsum train --data DIR --encoder DIR --out BUNDLE [options]\n"
            "       rank embsum build --model BUNDLE --data DIR --encoder DIR --out BUNDLE [--codec C] [--cache DIR]\n"
            "       rank embsum inspect --model BUNDLE [--user ID] [--item ID]\n"
            "       rank embsum score --model BUNDLE --input FILE --output FILE\n"
            "       rank embsum pairs --model BUNDLE --data DIR --encoder DIR --input FILE --output FILE [--cache DIR]\n"
            "       rank embsum export --embsum BUNDLE --out MODEL [--name NAME] [--force]\n"
            "       rank embsum attach --embsum BUNDLE --model MODEL [--force]\n"
            "\n"
            "EmbSum (papers.md §4): user poly-embeddings (UPE) from session vectors of the user's history,\n"
            "content poly-embeddings (CPE) from each item's token states, score = pooled UPE·CPEᵀ.\n"
            "DIR is `rank data movielens` output (train/valid/test.tsv, items.csv); --encoder an\n"
            "all-MiniLM-L6-v2 directory (scripts/setup-encoder.sh).\n"
            "\n"
            "train options (defaults in brackets):\n"
            "  --m N --k N              UPE / CPE vectors [4, 4]        --dc N     code width [32]\n"
            "  --g N --p N              sessions, items per session [4, 5]\n"
            "  --item-tokens N          tokens per item text [32]\n"
            "  --pool softmax|max|mean  matching pooling [softmax]      --tau X    softmax temperature [1]\n"
            "  --session-pool mean|first  session vector from the encoder states [mean]\n"
            "  --no-global              no global user vector among the UPE inputs\n"
            "  --summaries FILE         user_id<TAB>summary text; --lambda X weights the summary loss [0]\n"
            "  --negatives K [4]  --epochs N [3]  --batch N [32]  --lr X [1e-3]  --nce-scale X [10]\n"
            "  --max-pos N              training positives per user and epoch [64]\n"
            "  --seed N [1]  --data-seed N (evaluation negatives) [0]\n"
            "  --codec fp32|fp16|int8   table codec [fp32]   --cache DIR  encoder state cache   --force\n"
            "  --report FILE            metrics as JSON      --impressions FILE  the evaluation rows (TSV)\n"
            "  --scores FILE            raw score of each impression row     --dump FILE  inputs for bench/ref\n"
            "  --quiet\n"
            "score input: TSV with columns user_id and movie_id; output: pctr<TAB>score per row.\n"
            "pairs input: TSV with columns split (train|valid|test), user_id, movie_id; output: score per row.\n"
            "export: a model bundle rankd serves (rankd --model MODEL [--encoder DIR]) whose pCTR is the EmbSum\n"
            "  bundle's (its only input is the dense item feature 'embsum', the matching score rankd computes;\n"
            "  its tower the calibration sigmoid(a*score + b)); name [embsum]. attach: put the EmbSum bundle\n"
            "  into an existing model bundle (MODEL/embsum) whose dense item feature 'embsum' rankd then fills.\n");
}

typedef struct {
    const char *data, *encoder, *out, *model, *cache, *summaries, *codec, *report, *impressions, *scores, *dump;
    const char *input, *output, *embsum, *name;
    int64_t user, item;
    int have_user, have_item, force, quiet;
    uint64_t data_seed;
    rk_embsum_cfg cfg;
} opts_t;

static int bad_opt(const char *name, const char *v, const char *want) {
    fprintf(stderr, "rank embsum: --%s: expected %s, got '%s'\n", name, want, v);
    return 2;
}

static int num(const char *name, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi)) {
        char want[96];
        snprintf(want, sizeof want, "a number in %g..%g", lo, hi);
        return bad_opt(name, v, want);
    }
    *out = x;
    return 0;
}

static int parse(int argc, char **argv, opts_t *o) {
    static const struct option L[] = {
        {"data", 1, 0, 1},       {"encoder", 1, 0, 2},   {"out", 1, 0, 3},         {"model", 1, 0, 4},
        {"cache", 1, 0, 5},      {"summaries", 1, 0, 6}, {"codec", 1, 0, 7},       {"report", 1, 0, 8},
        {"impressions", 1, 0, 9}, {"scores", 1, 0, 10},  {"dump", 1, 0, 11},       {"input", 1, 0, 12},
        {"output", 1, 0, 13},    {"user", 1, 0, 14},     {"item", 1, 0, 15},       {"force", 0, 0, 16},
        {"quiet", 0, 0, 17},     {"m", 1, 0, 20},        {"k", 1, 0, 21},          {"dc", 1, 0, 22},
        {"g", 1, 0, 23},         {"p", 1, 0, 24},        {"item-tokens", 1, 0, 25}, {"pool", 1, 0, 26},
        {"tau", 1, 0, 27},       {"session-pool", 1, 0, 28}, {"no-global", 0, 0, 29}, {"lambda", 1, 0, 30},
        {"negatives", 1, 0, 31}, {"epochs", 1, 0, 32},   {"batch", 1, 0, 33},      {"lr", 1, 0, 34},
        {"nce-scale", 1, 0, 35}, {"max-pos", 1, 0, 36},  {"seed", 1, 0, 37},       {"data-seed", 1, 0, 38},
        {"embsum", 1, 0, 39},    {"name", 1, 0, 40},
        {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
    optind = 2;
    int c, li;
    rk_err e = {0};
    while ((c = getopt_long(argc, argv, "h", L, &li)) != -1) {
        double x = 0;
        int r = 0;
        const char *nm = c > 0 && c < 'h' ? L[li].name : "";
        switch (c) {
        case 1: o->data = optarg; break;
        case 2: o->encoder = optarg; break;
        case 3: o->out = optarg; break;
        case 4: o->model = optarg; break;
        case 5: o->cache = optarg; break;
        case 6: o->summaries = optarg; break;
        case 7: o->codec = optarg; break;
        case 8: o->report = optarg; break;
        case 9: o->impressions = optarg; break;
        case 10: o->scores = optarg; break;
        case 11: o->dump = optarg; break;
        case 12: o->input = optarg; break;
        case 13: o->output = optarg; break;
        case 14: r = num(nm, optarg, 0, 9e15, &x), o->user = (int64_t)x, o->have_user = 1; break;
        case 15: r = num(nm, optarg, 0, 9e15, &x), o->item = (int64_t)x, o->have_item = 1; break;
        case 16: o->force = 1; break;
        case 17: o->quiet = 1; break;
        case 20: r = num(nm, optarg, 1, RK_EMBSUM_MAX_CODES, &x), o->cfg.m = (int)x; break;
        case 21: r = num(nm, optarg, 1, RK_EMBSUM_MAX_CODES, &x), o->cfg.k = (int)x; break;
        case 22: r = num(nm, optarg, 1, 1024, &x), o->cfg.dc = (int)x; break;
        case 23: r = num(nm, optarg, 1, 64, &x), o->cfg.g = (int)x; break;
        case 24: r = num(nm, optarg, 1, 64, &x), o->cfg.p = (int)x; break;
        case 25: r = num(nm, optarg, 2, 512, &x), o->cfg.item_tokens = (int)x; break;
        case 26: if (rk_match_pool_parse(optarg, &o->cfg.pool, &e)) r = bad_opt(nm, optarg, "softmax, max or mean"); break;
        case 27: r = num(nm, optarg, 1e-3, 1e3, &x), o->cfg.tau = (float)x; break;
        case 28: if (rk_session_pool_parse(optarg, &o->cfg.session_pool, &e)) r = bad_opt(nm, optarg, "mean or first"); break;
        case 29: o->cfg.global = 0; break;
        case 30: r = num(nm, optarg, 0, 1e3, &x), o->cfg.lambda = (float)x; break;
        case 31: r = num(nm, optarg, 1, RK_EMBSUM_MAX_NEG, &x), o->cfg.negatives = (int)x; break;
        case 32: r = num(nm, optarg, 0, 1000, &x), o->cfg.epochs = (int)x; break;
        case 33: r = num(nm, optarg, 1, 1 << 20, &x), o->cfg.batch = (int)x; break;
        case 34: r = num(nm, optarg, 1e-7, 1, &x), o->cfg.lr = (float)x; break;
        case 35: r = num(nm, optarg, 1e-3, 1e3, &x), o->cfg.nce_scale = (float)x; break;
        case 36: r = num(nm, optarg, 1, 1 << 30, &x), o->cfg.max_pos_per_user = (int)x; break;
        case 37: r = num(nm, optarg, 0, 9e15, &x), o->cfg.seed = (uint64_t)x; break;
        case 38: r = num(nm, optarg, 0, 9e15, &x), o->data_seed = (uint64_t)x; break;
        case 39: o->embsum = optarg; break;
        case 40: o->name = optarg; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
        if (r) return r;
    }
    if (optind < argc) {
        fprintf(stderr, "rank embsum %s: unexpected argument '%s'\n", argv[1], argv[optind]);
        return 2;
    }
    return 0;
}

static int die(const rk_err *e) {
    fprintf(stderr, "rank: error: %s\n", e->msg);
    return 1;
}

static int need(const char *sub, const char *what, const char *v) {
    if (v) return 0;
    fprintf(stderr, "rank embsum %s: --%s is required\n", sub, what);
    return 2;
}

static void metrics_line(const char *what, const rk_rank_metrics *m) {
    printf("%s: impressions=%d auc=%.4f mrr=%.4f ndcg5=%.4f ndcg10=%.4f pooled_auc=%.4f multi_genre=%d auc_multi=%.4f "
           "auc_single_genre=%.4f\n",
           what, m->n_impressions, m->auc, m->mrr, m->ndcg5, m->ndcg10, m->pooled_auc, m->n_multi, m->auc_multi,
           m->auc_single_genre);
}

static void metrics_json(FILE *f, const char *name, const rk_rank_metrics *m, int last) {
    fprintf(f,
            "  \"%s\": {\"impressions\": %d, \"auc\": %.6f, \"mrr\": %.6f, \"ndcg5\": %.6f, \"ndcg10\": %.6f, "
            "\"pooled_auc\": %.6f, \"multi_genre\": %d, \"auc_multi\": %.6f, \"ndcg10_multi\": %.6f, "
            "\"auc_single_genre\": %.6f}%s\n",
            name, m->n_impressions, m->auc, m->mrr, m->ndcg5, m->ndcg10, m->pooled_auc, m->n_multi, m->auc_multi,
            m->ndcg10_multi, m->auc_single_genre, last ? "" : ",");
}

/* Open the encoder and load the data set for o. */
static rk_status load_data(const opts_t *o, rk_text_encoder **enc, char *enc_id, size_t cap, rk_embsum_data **d,
                           rk_err *err) {
    rk_text_encoder_opts eo = RK_TEXT_ENCODER_OPTS_DEFAULT;
    rk_status s = rk_text_encoder_open(o->encoder, &eo, enc, err);
    if (s == RK_OK) s = rk_text_encoder_identity(o->encoder, enc_id, cap, err);
    if (s == RK_OK)
        s = rk_embsum_data_load(o->data, *enc, enc_id, &o->cfg, o->cache, o->summaries, o->data_seed, o->quiet, d, err);
    return s;
}

/* Write text lines through rk_write_file_atomic: a regular file is replaced
 * whole or not at all, a device, FIFO or symbolic link is written through
 * (never replaced by a regular file: as root, --output /dev/full was). */
static rk_status write_floats(const char *path, const char *header, const float *a, const float *b, size_t n, rk_err *err) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    fprintf(f, "%s\n", header);
    for (size_t i = 0; i < n; i++) {
        if (b) fprintf(f, "%.9g\t%.9g\n", a[i], b[i]);
        else fprintf(f, "%.9g\n", a[i]);
    }
    int bad = ferror(f) != 0;
    bad |= fclose(f) != 0;
    rk_status s = bad ? rk_fail(err, RK_ENOMEM, "%s: out of memory", path) : rk_write_file_atomic(path, text, len, err);
    free(text);
    return s;
}

/* The --report JSON, through rk_write_file_atomic (replaced whole or not at
 * all, as write_floats). */
static rk_status write_report(const char *path, const rk_embsum_report *rep, const rk_rank_metrics *mp_valid,
                              const rk_rank_metrics *mp_test, rk_err *err) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    fprintf(f, "{\n  \"train_examples\": %d, \"epochs\": %d, \"loss\": %.6f, \"train_s\": %.3f, "
               "\"examples_per_s\": %.1f, \"upe_users_per_s\": %.1f, \"cpe_items_per_s\": %.1f,\n",
            rep->n_train_examples, rep->epochs_run, rep->final_loss, rep->train_s, rep->examples_per_s,
            rep->upe_users_per_s, rep->cpe_items_per_s);
    metrics_json(f, "meanpool_valid", mp_valid, 0);
    metrics_json(f, "meanpool_test", mp_test, 0);
    metrics_json(f, "valid", &rep->valid, 0);
    metrics_json(f, "test", &rep->test, 1);
    fprintf(f, "}\n");
    int bad = ferror(f) != 0;
    bad |= fclose(f) != 0;
    rk_status s = bad ? rk_fail(err, RK_ENOMEM, "%s: out of memory", path) : rk_write_file_atomic(path, text, len, err);
    free(text);
    return s;
}

static int cmd_train(opts_t *o) {
    if (need("train", "data", o->data) || need("train", "encoder", o->encoder) || need("train", "out", o->out)) return 2;
    rk_err e = {0};
    rk_text_encoder *enc = NULL;
    rk_embsum_data *d = NULL;
    rk_embsum *m = NULL;
    char enc_id[64] = "";
    float *sc = NULL;
    rk_embsum_report rep;
    rk_rank_metrics mp_valid, mp_test;
    rk_status s = load_data(o, &enc, enc_id, sizeof enc_id, &d, &e);
    if (s == RK_OK && o->impressions) s = rk_embsum_data_write_impressions(d, o->impressions, &e);
    if (s == RK_OK && o->dump) s = rk_embsum_data_dump(d, o->dump, &e);
    if (s == RK_OK) s = rk_embsum_eval_meanpool(d, RK_SPLIT_VALID, &mp_valid, &e);
    if (s == RK_OK) s = rk_embsum_eval_meanpool(d, RK_SPLIT_TEST, &mp_test, &e);
    if (s == RK_OK) s = rk_embsum_train(&o->cfg, d, o->quiet, &m, &rep, &e);
    if (s == RK_OK && o->scores) {
        size_t n = rk_embsum_data_n_impression_rows(d);
        sc = malloc((n + 1) * sizeof *sc);
        s = sc ? rk_embsum_score_impressions(m, d, sc, n, &e) : rk_fail(&e, RK_ENOMEM, "out of memory");
        if (s == RK_OK) s = write_floats(o->scores, "score", sc, NULL, n, &e);
    }
    if (s == RK_OK)
        s = rk_embsum_save(m, d, o->out, o->codec ? o->codec : "fp32", enc_id, NULL, o->force, &rep, &e);
    if (s == RK_OK) {
        metrics_line("meanpool valid", &mp_valid);
        metrics_line("meanpool test", &mp_test);
        metrics_line("embsum valid", &rep.valid);
        metrics_line("embsum test", &rep.test);
        printf("embsum: train_examples=%d epochs=%d loss=%.4f train_s=%.1f ex_per_s=%.0f upe_users_per_s=%.0f "
               "cpe_items_per_s=%.0f out=%s\n",
               rep.n_train_examples, rep.epochs_run, rep.final_loss, rep.train_s, rep.examples_per_s,
               rep.upe_users_per_s, rep.cpe_items_per_s, o->out);
    }
    if (s == RK_OK && o->report) s = write_report(o->report, &rep, &mp_valid, &mp_test, &e);
    free(sc);
    rk_embsum_destroy(m);
    rk_embsum_data_free(d);
    rk_text_encoder_close(enc);
    return s == RK_OK ? 0 : die(&e);
}

static int cmd_build(opts_t *o) {
    if (need("build", "model", o->model) || need("build", "data", o->data) || need("build", "encoder", o->encoder) ||
        need("build", "out", o->out))
        return 2;
    rk_err e = {0};
    rk_embsum *m = NULL;
    rk_text_encoder *enc = NULL;
    rk_embsum_data *d = NULL;
    char want[64] = "", enc_id[64] = "";
    rk_embsum_report rep = {0};
    rk_status s = rk_embsum_load(o->model, &m, want, sizeof want, &e);
    if (s == RK_OK) {
        o->cfg = *rk_embsum_config(m);
        s = load_data(o, &enc, enc_id, sizeof enc_id, &d, &e);
    }
    if (s == RK_OK && *want && strcmp(want, enc_id))
        s = rk_fail(&e, RK_EINVAL, "--encoder %s is %s, the bundle was trained with %s", o->encoder, enc_id, want);
    if (s == RK_OK) s = rk_embsum_save(m, d, o->out, o->codec ? o->codec : "fp32", enc_id, NULL, o->force, &rep, &e);
    if (s == RK_OK)
        printf("embsum build: upe_users_per_s=%.0f cpe_items_per_s=%.0f codec=%s out=%s\n", rep.upe_users_per_s,
               rep.cpe_items_per_s, o->codec ? o->codec : "fp32", o->out);
    rk_embsum_destroy(m);
    rk_embsum_data_free(d);
    rk_text_encoder_close(enc);
    return s == RK_OK ? 0 : die(&e);
}

static int cmd_inspect(opts_t *o) {
    if (need("inspect", "model", o->model)) return 2;
    rk_err e = {0};
    rk_embsum_bundle *b = NULL;
    rk_status s = rk_embsum_bundle_open(o->model, &b, &e);
    if (s != RK_OK) return die(&e);
    const rk_embsum *m = rk_embsum_bundle_model(b);
    const rk_embsum_cfg *c = rk_embsum_config(m);
    const int D = rk_embsum_dim(m);
    printf("version: %s\ncodec: %s\ndim: %d\nm=%d k=%d dc=%d g=%d p=%d item_tokens=%d pool=%s tau=%g session_pool=%s "
           "global=%d lambda=%g\n",
           rk_embsum_bundle_version(b), rk_embsum_bundle_codec(b), D, c->m, c->k, c->dc, c->g, c->p, c->item_tokens,
           rk_match_pool_name(c->pool), c->tau, rk_session_pool_name(c->session_pool), c->global, c->lambda);
    rk_codec cd;
    if (rk_codec_parse(rk_embsum_bundle_codec(b), &cd, &e) == RK_OK)
        printf("bytes per user (UPE): %zu\nbytes per item (CPE): %zu\n", rk_codec_row_bytes(cd, c->m * D),
               rk_codec_row_bytes(cd, c->k * D));
    float *v = malloc((size_t)RK_EMBSUM_MAX_CODES * D * sizeof *v);
    if (!v) s = rk_fail(&e, RK_ENOMEM, "out of memory");
    if (s == RK_OK && o->have_user && (s = rk_embsum_bundle_upe(b, o->user, v, &e)) == RK_OK)
        for (int r = 0; r < c->m; r++) {
            double n2 = 0;
            for (int j = 0; j < D; j++) n2 += (double)v[r * D + j] * v[r * D + j];
            printf("user %lld UPE[%d]: |v|=%.4f first=%.6f %.6f %.6f\n", (long long)o->user, r, sqrt(n2), v[r * D],
                   v[r * D + 1], v[r * D + 2]);
        }
    if (s == RK_OK && o->have_item && (s = rk_embsum_bundle_cpe(b, &o->item, 1, v, &e)) == RK_OK)
        for (int r = 0; r < c->k; r++) {
            double n2 = 0;
            for (int j = 0; j < D; j++) n2 += (double)v[r * D + j] * v[r * D + j];
            printf("item %lld CPE[%d]: |v|=%.4f first=%.6f %.6f %.6f\n", (long long)o->item, r, sqrt(n2), v[r * D],
                   v[r * D + 1], v[r * D + 2]);
        }
    free(v);
    rk_embsum_bundle_close(b);
    return s == RK_OK ? 0 : die(&e);
}

static int cmd_score(opts_t *o) {
    if (need("score", "model", o->model) || need("score", "input", o->input) || need("score", "output", o->output)) return 2;
    rk_err e = {0};
    rk_embsum_bundle *b = NULL;
    rk_embsum_pairs p = {0};
    float *pc = NULL, *sc = NULL;
    rk_status s = rk_embsum_pairs_read(o->input, 0, &p, &e);
    if (s == RK_OK) s = rk_embsum_bundle_open(o->model, &b, &e);
    if (s == RK_OK) {
        pc = malloc((p.n + 1) * sizeof *pc), sc = malloc((p.n + 1) * sizeof *sc);
        if (!pc || !sc) s = rk_fail(&e, RK_ENOMEM, "out of memory");
    }
    for (size_t i = 0, j; i < p.n && s == RK_OK; i = j) { /* consecutive rows of one user: one batch, as rankd */
        for (j = i + 1; j < p.n && j - i < 4096 && p.user[j] == p.user[i];) j++;
        s = rk_embsum_bundle_score(b, p.user[i], &p.item[i], (int)(j - i), &pc[i], &sc[i], &e);
        if (s != RK_OK) rk_err_prefix(&e, "%s rows %zu..%zu", o->input, i + 2, j + 1);
    }
    if (s == RK_OK) s = write_floats(o->output, "pctr\tscore", pc, sc, p.n, &e);
    free(pc), free(sc);
    rk_embsum_pairs_free(&p);
    rk_embsum_bundle_close(b);
    return s == RK_OK ? 0 : die(&e);
}

static int cmd_pairs(opts_t *o) {
    if (need("pairs", "model", o->model) || need("pairs", "data", o->data) || need("pairs", "encoder", o->encoder) ||
        need("pairs", "input", o->input) || need("pairs", "output", o->output))
        return 2;
    rk_err e = {0};
    rk_embsum *m = NULL;
    rk_text_encoder *enc = NULL;
    rk_embsum_data *d = NULL;
    char enc_id[64];
    rk_embsum_pairs p = {0};
    float *sc = NULL;
    rk_status s = rk_embsum_pairs_read(o->input, 1, &p, &e);
    if (s == RK_OK) s = rk_embsum_load(o->model, &m, NULL, 0, &e);
    if (s == RK_OK) o->cfg = *rk_embsum_config(m), s = load_data(o, &enc, enc_id, sizeof enc_id, &d, &e);
    if (s == RK_OK) s = (sc = malloc((p.n + 1) * sizeof *sc)) ? RK_OK : rk_fail(&e, RK_ENOMEM, "out of memory");
    if (s == RK_OK) s = rk_embsum_score_pairs(m, d, p.split, p.user, p.item, p.n, sc, &e);
    if (s == RK_OK) s = write_floats(o->output, "embsum", sc, NULL, p.n, &e);
    free(sc);
    rk_embsum_pairs_free(&p);
    rk_embsum_destroy(m);
    rk_embsum_data_free(d);
    rk_text_encoder_close(enc);
    return s == RK_OK ? 0 : die(&e);
}

static int cmd_export(opts_t *o, int model) {
    const char *sub = model ? "export" : "attach";
    if (need(sub, "embsum", o->embsum) || need(sub, model ? "out" : "model", model ? o->out : o->model)) return 2;
    rk_err e = {0};
    rk_status s = rk_embsum_export(o->embsum, model ? o->out : o->model, o->name ? o->name : "embsum", model, o->force, &e);
    if (s != RK_OK) return die(&e);
    printf("rank embsum %s: %s%s\n", sub, model ? o->out : o->model, model ? "" : "/embsum");
    return 0;
}

int rank_embsum_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    opts_t o = {0};
    o.cfg = (rk_embsum_cfg)RK_EMBSUM_CFG_DEFAULT;
    int r = parse(argc, argv, &o);
    if (r) return r == 1 ? 0 : r;
    const char *sub = argv[1];
    if (!strcmp(sub, "train")) return cmd_train(&o);
    if (!strcmp(sub, "build")) return cmd_build(&o);
    if (!strcmp(sub, "inspect")) return cmd_inspect(&o);
    if (!strcmp(sub, "score")) return cmd_score(&o);
    if (!strcmp(sub, "pairs")) return cmd_pairs(&o);
    if (!strcmp(sub, "export")) return cmd_export(&o, 1);
    if (!strcmp(sub, "attach")) return cmd_export(&o, 0);
    fprintf(stderr, "rank embsum: unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
