/*
 * tools/rank.c — the offline CLI: a thin main over the rank library.
 *
 *   rank data movielens --input DIR --out DIR
 *   rank data log --schema SCHEMA.json --input FILE --out DIR
 *   rank train --config FILE --data DIR --out BUNDLE [options]
 *   rank score --model BUNDLE --input FILE --output FILE [--metrics-json FILE]
 *   rank query --addr HOST:PORT --model BUNDLE --input FILE --output FILE (gRPC client)
 *   rank distill --stream FILE --teacher-config FILE --student-config FILE --out DIR (ExFM)
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rank.h"
#include "serve.h"
#include "store.h"

int rank_query_main(int argc, char **argv);  /* tools/rank_query.c */
int rank_store_main(int argc, char **argv);  /* tools/rank_store.c */
int rank_encode_main(int argc, char **argv); /* tools/rank_encode.c */
int rank_distill_main(int argc, char **argv); /* tools/rank_distill.c */
int rank_sid_main(int argc, char **argv);    /* tools/rank_sid.c */
int rank_embsum_main(int argc, char **argv); /* tools/rank_embsum.c */

static void usage(FILE *o) {
    fprintf(o,
            "usage: rank COMMAND [options]    (rank --version: the version)\n"
            "\n"
            "commands:\n"
            "  data movielens --input DIR --out DIR\n"
            "      MovieLens ml-latest-small -> time-ordered CTR examples (train/valid/test.tsv, schema.json)\n"
            "  train --config FILE --data DIR --out BUNDLE [--tower dnn|dcnv2|deepfm] [--seed N] [--epochs N]\n"
            "        [--threads N] [--version V] [--metrics-json FILE] [--force]\n"
            "      train on DIR/train.tsv with early stopping on DIR/valid.tsv, report DIR/test.tsv,\n"
            "      write the model bundle BUNDLE (model.json, dense.safetensors, tables/)\n"
            "  score --model BUNDLE --input FILE --output FILE [--metrics-json FILE] [--towers]\n"
            "      one pCTR per input row, in order; AUC, logloss, NE, calibration when labels are present;\n"
            "      --towers adds each CETNet member's pCTR and fusion weight\n"
            "  query --addr HOST:PORT --model BUNDLE --input FILE --output FILE [--candidates N]\n"
            "        [--max-requests N] [--deadline-ms N]\n"
            "      send the rows of FILE to a running rankd as Rank requests (grouped by user)\n"
            "  store convert|apply|info ...\n"
            "      re-encode a bundle's embedding tables (fp32, fp16, int8), apply row updates, inspect\n"
            "  encode text --model DIR --input FILE --output FILE ...\n"
            "      content embeddings from a BERT-family text encoder (all-MiniLM-L6-v2)\n"
            "  encode image --model DIR (--dir FOLDER | --list FILE) --output FILE ...\n"
            "      image embeddings from a DINOv2 vision encoder (ViT-S/14; JPEG, PNG)\n"
            "  encode join --text FILE --image FILE --output FILE\n"
            "      text + image embeddings concatenated by id (for rank sid build)\n"
            "  distill --stream FILE --teacher-config FILE --student-config FILE --out DIR ...\n"
            "      ExFM: streaming teacher + DAS log + vertical students (aux head, adapter), NE/AUC\n"
            "  sid build|assign --embeddings FILE --out FILE ...\n"
            "      semantic IDs: RQ-KMeans codebooks + item records (item id -> codes) from content embeddings\n"
            "  embsum train|build|inspect|score|pairs ...\n"
            "      EmbSum: user / content poly-embeddings (UPE, CPE) from the text encoder, stored in a bundle\n"
            "\n"
            "Run 'rank COMMAND --help' for a command's options; 'rank --version' prints the version.\n");
}

/* A metric, or null where it is undefined (NaN: no positives, no negatives). */
static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* The metrics as JSON (jansson), each field null exactly when stdout's
 * line prints it as nan: calibration was null whenever NE was. */
static json_t *metrics_json(const rk_metrics *m) {
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer((json_int_t)m->n));
    json_object_set_new(o, "positives", json_integer((json_int_t)m->n_pos));
    json_object_set_new(o, "base_rate", jnum(m->base_rate));
    json_object_set_new(o, "mean_pctr", jnum(m->mean_pctr));
    json_object_set_new(o, "auc", m->auc_defined ? jnum(m->auc) : json_null());
    json_object_set_new(o, "logloss", jnum(m->logloss));
    json_object_set_new(o, "ne", jnum(m->ne));
    json_object_set_new(o, "calibration", jnum(m->calibration));
    return o;
}

static void print_metrics(const char *what, const rk_metrics *m) {
    printf("%s: n=%zu base_rate=%.4f auc=%.4f logloss=%.5f ne=%.4f calibration=%.4f\n", what, m->n, m->base_rate,
           m->auc_defined ? m->auc : NAN, m->logloss, m->ne, m->calibration);
}

/* Can path be created or overwritten (dir_target: can a directory be
 * created or renamed at path, i.e. is its parent writable)? Checked before
 * long work so a typo in an output path fails at once, not after training. */
static int check_writable(const char *opt, const char *path, int dir_target) {
    struct stat st;
    if (!dir_target && stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "rank: error: --%s %s: is a directory\n", opt, path);
            return -1;
        }
        if (access(path, W_OK) != 0) {
            fprintf(stderr, "rank: error: --%s %s: not writable: %s\n", opt, path, strerror(errno));
            return -1;
        }
        return 0;
    }
    char dir[4096];
    rk_path_parent(path, dir, sizeof dir);
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "rank: error: --%s %s: cannot create it in %s: %s\n", opt, path, dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* Write the scores. A regular (or new) file is written beside it and renamed
 * into place, so a failed write never leaves a half file under its name;
 * anything else (a device like /dev/null, a FIFO, a symbolic link) is
 * written in place and never replaced. */
static int write_scores(const char *out, const rk_model *m, int n, const float *p, int towers, const float *mp,
                        const float *mw) {
    struct stat st;
    int in_place = lstat(out, &st) == 0 && !S_ISREG(st.st_mode);
    char *text = NULL;
    size_t tlen = 0;
    FILE *o = in_place ? fopen(out, "w") : open_memstream(&text, &tlen);
    if (!o) {
        fprintf(stderr, "rank: error: %s: cannot create: %s\n", out, strerror(errno));
        return 1;
    }
    const int M = rk_model_n_members(m);
    fprintf(o, "pctr");
    for (int k = 0; towers && k < M; k++) fprintf(o, "\t%s.pctr\t%s.weight", rk_model_member_name(m, k), rk_model_member_name(m, k));
    fprintf(o, "\n");
    for (int i = 0; i < n; i++) {
        fprintf(o, "%.9g", p[i]);
        for (int k = 0; towers && k < M; k++) fprintf(o, "\t%.9g\t%.9g", mp[(size_t)i * M + k], mw[(size_t)i * M + k]);
        fprintf(o, "\n");
    }
    int bad = ferror(o);
    int e = errno;
    if (fclose(o) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    rk_err err = {0};
    if (!bad && !in_place && rk_write_file_atomic(out, text, tlen, &err)) {
        fprintf(stderr, "rank: error: %s\n", err.msg);
        free(text);
        return 1;
    }
    free(text);
    if (bad) {
        fprintf(stderr, "rank: error: %s: write failed: %s\n", out, strerror(e));
        return 1;
    }
    return 0;
}

static int die(const rk_err *e) {
    fprintf(stderr, "rank: error: %s\n", e->msg);
    return 1;
}

static int parse_int(const char *opt, const char *v, long lo, long hi, long *out) {
    char what[64];
    snprintf(what, sizeof what, "--%s", opt);
    long long x;
    rk_err e = {0};
    if (rk_parse_int(what, v, lo, hi, &x, &e)) {
        fprintf(stderr, "rank: %s\n", e.msg);
        return -1;
    }
    *out = (long)x;
    return 0;
}

#define DATA_LOG_USAGE                                                                                         \
    "usage: rank data log --schema SCHEMA.json --input FILE --out DIR\n"                                      \
    "  any delimited log (CSV or TSV, header or none) -> DIR/{train,valid,test}.tsv and schema.json;\n"      \
    "  SCHEMA gives the columns' roles and transforms (README \"Your own data\"; configs/*_schema.json)\n"

static int cmd_data_log(int argc, char **argv) {
    const char *schema = NULL, *in = NULL, *out = NULL;
    static struct option opts[] = {{"schema", 1, 0, 's'}, {"input", 1, 0, 'i'}, {"out", 1, 0, 'o'}, {"help", 0, 0, 'h'},
                                   {0, 0, 0, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 's') schema = optarg;
        else if (c == 'i') in = optarg;
        else if (c == 'o') out = optarg;
        else {
            fprintf(c == 'h' ? stdout : stderr, DATA_LOG_USAGE);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!schema || !in || !out) {
        fprintf(stderr, "rank data log: --schema, --input and --out are required\n" DATA_LOG_USAGE);
        return 2;
    }
    rk_err e = {0};
    if (rk_data_log(schema, in, out, &e)) return die(&e);
    printf("wrote %s/{train,valid,test}.tsv and %s/schema.json\n", out, out);
    return 0;
}

static int cmd_data(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "log")) return cmd_data_log(argc, argv);
    if (argc < 2 || strcmp(argv[1], "movielens")) {
        int help = argc >= 2 && !strcmp(argv[1], "--help");
        fprintf(help ? stdout : stderr, DATA_LOG_USAGE "usage: rank data movielens --input DIR --out DIR\n"
                "  DIR of --input: MovieLens ratings.csv, movies.csv and, optional, tags.csv;\n"
                "  writes train/valid/test.tsv, schema.json and items.csv (movieId, title, genres, tags:\n"
                "  the content text for `rank encode text` and `rank sid`)\n");
        return help ? 0 : 2;
    }
    const char *in = NULL, *out = NULL;
    static struct option opts[] = {{"input", 1, 0, 'i'}, {"out", 1, 0, 'o'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'i') in = optarg;
        else if (c == 'o') out = optarg;
        else {
            fprintf(c == 'h' ? stdout : stderr, "usage: rank data movielens --input DIR --out DIR\n"
                "  DIR of --input: MovieLens ratings.csv, movies.csv and, optional, tags.csv;\n"
                "  writes train/valid/test.tsv, schema.json and items.csv (movieId, title, genres, tags:\n"
                "  the content text for `rank encode text` and `rank sid`)\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "rank data movielens: --input and --out are required\n");
        return 2;
    }
    rk_err e = {0};
    if (rk_data_movielens(in, out, &e)) return die(&e);
    printf("wrote %s/{train,valid,test}.tsv, %s/schema.json and %s/items.csv\n", out, out, out);
    return 0;
}

static int cmd_train(int argc, char **argv) {
    const char *config = NULL, *data = NULL, *out = NULL, *mjson = NULL, *tower = NULL, *version = NULL;
    long seed = -1, epochs = -1, threads = -1;
    int force = 0;
    static struct option opts[] = {{"config", 1, 0, 'c'},  {"data", 1, 0, 'd'},         {"out", 1, 0, 'o'},
                                   {"seed", 1, 0, 's'},    {"epochs", 1, 0, 'e'},       {"threads", 1, 0, 't'},
                                   {"tower", 1, 0, 'w'},   {"metrics-json", 1, 0, 'm'}, {"version", 1, 0, 'v'},
                                   {"force", 0, 0, 'f'},   {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config = optarg; break;
        case 'd': data = optarg; break;
        case 'o': out = optarg; break;
        case 'm': mjson = optarg; break;
        case 'w': tower = optarg; break;
        case 'v': version = optarg; break;
        case 'f': force = 1; break;
        case 's': if (parse_int("seed", optarg, 0, 1L << 40, &seed)) return 2; break;
        case 'e': if (parse_int("epochs", optarg, 1, 1000, &epochs)) return 2; break;
        case 't': if (parse_int("threads", optarg, 1, 64, &threads)) return 2; break;
        default:
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: rank train --config FILE --data DIR --out BUNDLE [--tower dnn|dcnv2|deepfm] [--seed N]\n"
                    "                  [--epochs N] [--threads N] [--version V] [--metrics-json FILE] [--force]\n"
                    "  --data DIR holds train.tsv, valid.tsv and (optional) test.tsv from 'rank data'.\n"
                    "  --epochs is the maximum; training stops early on validation AUC (config train.patience).\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!config || !data || !out) {
        fprintf(stderr, "rank train: --config, --data and --out are required (see --help)\n");
        return 2;
    }
    rk_err e = {0};
    char *text;
    if (rk_read_file(config, &text, NULL, &e)) return die(&e);
    rk_model_cfg cfg;
    rk_status s = rk_model_cfg_parse(text, &cfg, &e);
    rk_free(text);
    if (s) {
        rk_err_prefix(&e, "%s", config);
        return die(&e);
    }
    int rc = 1;
    rk_train_report rep = {0};
    if (seed >= 0) cfg.train.seed = (uint64_t)seed;
    if (epochs > 0) cfg.train.max_epochs = (int)epochs;
    if (threads > 0) cfg.train.threads = (int)threads;
    if (tower) {
        if (!strcmp(tower, "dnn")) {
            cfg.tower.type = RK_TOWER_DNN;
            cfg.tower.n_cross = 0;
        } else if (!strcmp(tower, "dcnv2")) {
            cfg.tower.type = RK_TOWER_DCNV2;
            if (!cfg.tower.n_cross) cfg.tower.n_cross = 2;
        } else if (!strcmp(tower, "deepfm")) {
            cfg.tower.type = RK_TOWER_DEEPFM;
            cfg.tower.n_cross = 0;
        } else {
            fprintf(stderr, "rank train: --tower: expected dnn, dcnv2 or deepfm, got '%s'\n", tower);
            rc = 2;
            goto out;
        }
        if (cfg.n_members) {
            fprintf(stderr, "rank train: --tower does not apply to an ensemble config (%s)\n", config);
            rc = 2;
            goto out;
        }
    }
    if (version) {
        size_t L = strlen(version);
        int ok = L > 0 && L < sizeof cfg.version;
        for (const char *q = version; ok && *q; q++)
            ok = (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || strchr("._:-", *q);
        if (!ok) {
            fprintf(stderr, "rank train: --version: 1..%zu characters of A-Z a-z 0-9 . _ : -, got '%s'\n", sizeof cfg.version - 1,
                    version);
            rc = 2;
            goto out;
        }
        snprintf(cfg.version, sizeof cfg.version, "%s", version);
    } else {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cfg.version, sizeof cfg.version, "%Y%m%dT%H%M%SZ", &tm);
    }
    char trp[4096], vap[4096], tep[4096];
    snprintf(trp, sizeof trp, "%s/train.tsv", data);
    snprintf(vap, sizeof vap, "%s/valid.tsv", data);
    snprintf(tep, sizeof tep, "%s/test.tsv", data);
    char outp[4096];
    snprintf(outp, sizeof outp, "%s", out);
    for (size_t L = strlen(outp); L > 1 && outp[L - 1] == '/'; L--) outp[L - 1] = 0; /* "m/" is "m" */
    out = outp;
    if (!strcmp(out, ".") || !strcmp(out, "..") || !strcmp(out, "/")) {
        fprintf(stderr, "rank: error: --out %s: name a new directory for the bundle\n", out);
        rc = 2;
        goto out;
    }
    if (rk_path_exists(out) && !force) {
        fprintf(stderr, "rank: error: %s already exists (pass --force to replace it)\n", out);
        rc = 1;
        goto out;
    }
    if (rk_path_exists(out)) {
        char mj[4200];
        snprintf(mj, sizeof mj, "%s/model.json", out);
        if (!rk_is_dir(out) || !rk_path_exists(mj)) {
            fprintf(stderr, "rank: error: %s exists and is not a model bundle (no model.json); --force replaces only bundles\n", out);
            rc = 1;
            goto out;
        }
    }
    if (check_writable("out", out, 1) || (mjson && check_writable("metrics-json", mjson, 0))) {
        rc = 1;
        goto out;
    }
    rk_info("train: model=%s seed=%llu threads=%d data=%s", cfg.n_members ? "cetnet" : rk_tower_name(cfg.tower.type),
            (unsigned long long)cfg.train.seed, cfg.train.threads, data);
    rk_train_io io = {trp, vap, rk_path_exists(tep) ? tep : NULL, 0};
    rk_model *m;
    if (rk_train(&cfg, &io, &m, &rep, &e)) {
        if (e.code == RK_EINVAL && !strncmp(e.msg, "feature '", 9)) rk_err_prefix(&e, "%s", config); /* a config key */
        rc = die(&e);
        goto out;
    }
    json_t *root = json_object();
    json_object_set_new(root, "best_epoch", json_integer(rep.best_epoch));
    json_object_set_new(root, "epochs_run", json_integer(rep.epochs_run));
    json_object_set_new(root, "train_examples_per_s", jnum(rep.train_examples_per_s));
    json_object_set_new(root, "valid", metrics_json(&rep.valid));
    if (rep.have_test) json_object_set_new(root, "test", metrics_json(&rep.test));
    if (rep.n_members) {
        json_object_set_new(root, "tau", jnum(rk_model_tau(m)));
        json_t *mem = json_object();
        for (int i = 0; i < rep.n_members; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "valid", metrics_json(&rep.member_valid[i]));
            if (rep.have_test) json_object_set_new(o, "test", metrics_json(&rep.member_test[i]));
            json_object_set_new(mem, cfg.members[i].name, o);
        }
        json_object_set_new(root, "members", mem);
    }
    char *mj = json_dumps(root, JSON_PRESERVE_ORDER);
    json_decref(root);
    size_t mjl = mj ? strlen(mj) : 0;
    if (!mj) {
        rk_model_destroy(m);
        fprintf(stderr, "rank: error: out of memory\n");
        return 1;
    }
    s = rk_model_save(m, out, mj, force, &e);
    rk_model_destroy(m);
    if (s == RK_OK && mjson && rk_write_file(mjson, mj, mjl, &e)) s = e.code;
    free(mj);
    if (s) {
        rc = die(&e);
        goto out;
    }
    if (cfg.n_members) {
        printf("model %s: cetnet members=%d fusion=%s best_epoch=%d train_examples_per_s=%.0f\n", out, cfg.n_members,
               cfg.fusion.type == RK_FUSION_MEAN ? "mean" : "confidence", rep.best_epoch, rep.train_examples_per_s);
        for (int i = 0; i < rep.n_members; i++) {
            char what[96];
            snprintf(what, sizeof what, "  member %s valid", cfg.members[i].name);
            print_metrics(what, &rep.member_valid[i]);
            if (rep.have_test) {
                snprintf(what, sizeof what, "  member %s test", cfg.members[i].name);
                print_metrics(what, &rep.member_test[i]);
            }
        }
    } else {
        printf("model %s: tower=%s best_epoch=%d train_examples_per_s=%.0f\n", out, rk_tower_name(cfg.tower.type),
               rep.best_epoch, rep.train_examples_per_s);
    }
    /* the model as saved: after train.zero_unseen_rows, which the epoch lines precede */
    print_metrics(cfg.train.zero_unseen_rows ? "valid (after zeroing unseen rows)" : "valid", &rep.valid);
    if (rep.have_test) print_metrics("test", &rep.test);
    rc = 0;
out:
    rk_train_report_free(&rep);
    rk_model_cfg_free(&cfg);
    return rc;
}

static int cmd_score(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL, *mjson = NULL, *device = "cpu";
    int towers = 0;
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"input", 1, 0, 'i'}, {"output", 1, 0, 'o'},
                                   {"metrics-json", 1, 0, 'j'}, {"towers", 0, 0, 't'}, {"device", 1, 0, 'd'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 'i') in = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 'j') mjson = optarg;
        else if (c == 't') towers = 1;
        else if (c == 'd') device = optarg;
        else {
            fprintf(c == 'h' ? stdout : stderr,
                    "usage: rank score --model BUNDLE --input FILE --output FILE [--metrics-json FILE] [--towers]\n"
                    "                  [--device cpu|auto|cuda[:N]]\n"
                    "  FILE is a TSV with a header naming the model's feature columns (label optional).\n"
                    "  Output: a header line 'pctr', then one pCTR per input row, in order.\n"
                    "  --towers (CETNet ensembles): also NAME.pctr and NAME.weight columns for each member.\n"
                    "  --device: where the towers run: cpu (default), cuda[:N] (an NVIDIA GPU; an error\n"
                    "    naming the CUDA error when none works), auto (a GPU when one works, else the CPU).\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (!model || !in || !out) {
        fprintf(stderr, "rank score: --model, --input and --output are required (see --help)\n");
        return 2;
    }
    {
        char a[PATH_MAX], b[PATH_MAX];
        if (realpath(in, a) && realpath(out, b) && !strcmp(a, b)) {
            fprintf(stderr, "rank: error: --output %s is the --input file\n", out);
            return 2;
        }
    }
    if (check_writable("output", out, 0) || (mjson && check_writable("metrics-json", mjson, 0))) return 1;
    rk_err e = {0};
    rk_device *dev = NULL;
    if (rk_device_open(device, &dev, &e)) return die(&e);
    if (dev) rk_info("score: towers on %s", rk_device_describe(dev));
    rk_model *m;
    if (rk_model_open(model, &m, &e)) {
        rk_device_close(dev);
        return die(&e);
    }
    rk_info("score: model %s", rk_model_version(m));
    rk_dataset d;
    if (rk_dataset_load(in, rk_model_config(m), &d, &e)) {
        rk_model_destroy(m);
        rk_device_close(dev);
        return die(&e);
    }
    int n = d.b.n_rows, M = rk_model_n_members(m);
    if (towers && M == 0) {
        fprintf(stderr, "rank: warning: --towers: %s is a single model; writing its pCTR only\n", model);
        towers = 0;
    }
    float *p = rk_malloc((size_t)n * sizeof(float));
    float *mp = towers ? rk_malloc((size_t)n * (size_t)M * sizeof(float)) : NULL;
    float *mw = towers ? rk_malloc((size_t)n * (size_t)M * sizeof(float)) : NULL;
    int rc = 0;
    double t0 = rk_now();
    if (!p || (towers && (!mp || !mw)) || rk_model_predict_dev(m, &d.b, dev, p, mp, mw, &e)) {
        if (!p || (towers && (!mp || !mw))) rk_fail(&e, RK_ENOMEM, "out of memory");
        rc = die(&e);
        goto done;
    }
    double el = rk_now() - t0;
    if ((rc = write_scores(out, m, n, p, towers, mp, mw))) goto done;
    printf("scored %d rows in %.2fs (%.0f rows/s) -> %s\n", n, el, el > 0 ? n / el : 0, out);
    if (d.has_labels) {
        rk_metrics mt;
        if (rk_metrics_compute(p, d.b.labels, (size_t)n, &mt, &e)) {
            rc = die(&e);
            goto done;
        }
        print_metrics("metrics", &mt);
        if (mjson) {
            json_t *jo = metrics_json(&mt);
            char *txt = json_dumps(jo, JSON_PRESERVE_ORDER);
            json_decref(jo);
            size_t tl = txt ? strlen(txt) : 0;
            char *line = txt ? realloc(txt, tl + 2) : NULL; /* newline-terminated, as before */
            if (line) line[tl] = '\n', line[tl + 1] = 0;
            else free(txt);
            if (!line) rk_fail(&e, RK_ENOMEM, "%s: out of memory", mjson);
            int bad = !line || rk_write_file(mjson, line, tl + 1, &e);
            free(line);
            if (bad) {
                rc = die(&e);
                goto done;
            }
        }
    } else if (mjson) {
        fprintf(stderr, "rank: warning: %s has no label column '%s'; no metrics written\n", in,
                rk_model_config(m)->label_column);
    }
done:
    rk_free(p);
    rk_free(mp);
    rk_free(mw);
    rk_dataset_free(&d);
    rk_model_destroy(m);
    rk_device_close(dev);
    return rc;
}

int main(int argc, char **argv) {
    int probe = rk_store_probe_main(argc, argv);
    if (probe >= 0) return probe;
    /* a damaged SST can abort RocksDB: open every store in a child first */
    rk_store_set_probe("/proc/self/exe");
    rk_log_set_program("rank");
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("rank %s\n", rk_version_string());
        return 0;
    }
    const char *cmd = argv[1];
    int help = 0;
    for (int i = 2; i < argc; i++) help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (!help && (!strcmp(cmd, "train") || !strcmp(cmd, "score") || !strcmp(cmd, "query") || !strcmp(cmd, "encode") ||
                  !strcmp(cmd, "distill") || !strcmp(cmd, "embsum")))
        rk_log_blas_info();
    if (!strcmp(cmd, "data")) return cmd_data(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "score")) return cmd_score(argc - 1, argv + 1);
    if (!strcmp(cmd, "query")) return rank_query_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "store")) return rank_store_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "encode")) return rank_encode_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "distill")) return rank_distill_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "sid")) return rank_sid_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "embsum")) return rank_embsum_main(argc - 1, argv + 1);
    fprintf(stderr, "rank: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
