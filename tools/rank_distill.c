/*
 * tools/rank_distill.c — `rank distill`: ExFM streaming distillation, a thin
 * main over distill.h.
 *
 *   rank distill --stream FILE --teacher-config FILE --student-config FILE --out DIR [options]
 *
 * Cuts the time-ordered TSV into chunks, trains the teacher streaming over
 * the union of the verticals and logs its predictions through DAS
 * (DIR/das, a RocksDB store), then trains one student per (mode, vertical)
 * from the log with progressive validation, and prints NE/AUC after the
 * warm-up chunks (also to --json). --checkpoints writes each student's
 * bundle per chunk under DIR/checkpoints/MODE/VERTICAL/chunk-NNN.
 *
 * Outputs are all-or-nothing. Every check that does not need training runs
 * before anything is created. DIR is built as DIR.tmp-PID and renamed into
 * place at the end; --json is written once at the end through FILE.tmp-PID
 * and a rename. On an error, SIGINT or SIGTERM (checked between
 * mini-batches) what this run created is removed; what a killed run left
 * (DIR.tmp-PID, FILE.tmp-PID of a dead PID) is removed by the next run, as
 * rk_model_save does for bundles.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "distill.h"

int rank_distill_main(int argc, char **argv);

/* Upper bounds of the distillation knobs (documented in --help and README):
 * far beyond any useful setting, low enough that the loss stays finite. */
#define KNOB_MAX 1e3

static void distill_usage(FILE *o) {
    fprintf(o,
            "usage: rank distill --stream FILE --teacher-config FILE --student-config FILE --out DIR\n"
            "         [--chunks N (20)] [--warmup N (6)] [--verticals SPEC] [--modes LIST (none,kd,ah,ah_sa)]\n"
            "         [--staleness K (0)] [--bias-vertical NAME --bias-factor F [--bias-mode repeat|subsample]] [--seed N]\n"
            "         [--w W (1)] [--alpha A (1)] [--beta B (1)] [--w-sa W (1)] [--sa-hidden K (8)] [--lr-sa LR (1e-3)]\n"
            "         [--checkpoints] [--json FILE]\n"
            "  FILE: a time-ordered TSV of `rank data movielens` (e.g. train+valid+test concatenated).\n"
            "  Chunks: equal-count in time order. SPEC: 'name:Genre,Genre;name2:...', names of 1..%d letters,\n"
            "  digits, '_' or '-' (default: MovieLens genre families action / comedy / drama). Modes (each once):\n"
            "  none (student alone), kd (single-head KD), ah (auxiliary head), ah_sa (auxiliary head + student\n"
            "  adapter). The teacher labels chunk t with its version trained through chunk t-1-K; every vertical\n"
            "  needs rows in chunks >= max(N of --warmup, K+1). A biased teacher sees vertical NAME's rows F times\n"
            "  per chunk (repeat, default) or NAME's rows once and each row outside NAME with probability 1/F\n"
            "  (subsample). Ranges: --w, --beta, --w-sa in [0, 1000]; --alpha in [1e-6, 1000]; --lr-sa in\n"
            "  (0, 1]; --bias-factor 1..1000. DIR must not exist: it appears only when the run succeeds (built as\n"
            "  DIR.tmp-PID); --json is written once at the end. NE/AUC of a vertical whose evaluated labels are\n"
            "  all one class are undefined: printed as nan with a warning, null in --json. SIGINT/SIGTERM stop\n"
            "  the run at the next mini-batch, remove its outputs and exit 130/143 (a second one kills at once).\n",
            RK_EXFM_VNAME_MAX);
}

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = sig; }

static int fail(const rk_err *e) {
    fprintf(stderr, "rank distill: error: %s\n", e->msg);
    return 1;
}

/* A knob: a finite double in [lo, hi], the error naming the flag and what was typed. */
static int parse_d(const char *name, const char *v, double lo, double hi, double *out) {
    char what[64];
    snprintf(what, sizeof what, "--%s", name);
    rk_err e = {0};
    int open0 = lo == 0 && hi == 1; /* learning rates: (0, 1] */
    if (rk_parse_double(what, v, lo, hi, out, &e) || (open0 && *out == 0)) {
        if (open0) fprintf(stderr, "rank distill: %s: expected a number in (0, 1], got '%s'\n", what, v);
        else fprintf(stderr, "rank distill: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int parse_i(const char *name, const char *v, long lo, long hi, long *out) {
    char what[64];
    snprintf(what, sizeof what, "--%s", name);
    long long x;
    rk_err e = {0};
    if (rk_parse_int(what, v, lo, hi, &x, &e)) {
        fprintf(stderr, "rank distill: %s\n", e.msg);
        return 1;
    }
    *out = (long)x;
    return 0;
}

/* Can this process create entries in dir? (access() says yes to root even
 * on read-only file systems, so try: a directory made and removed.) 0 or errno. */
static int probe_dir(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/.rank-distill-probe-%ld", dir, (long)getpid());
    if (mkdir(p, 0700) != 0) return errno;
    rmdir(p);
    return 0;
}

/* --json FILE: its directory must be writable, and it must not be one of the inputs. */
static int check_json(const char *json, const char *const inputs[][2], int n_in, rk_err *e) {
    char dir[4096];
    rk_path_parent(json, dir, sizeof dir);
    int er = probe_dir(dir);
    if (er) return rk_fail(e, RK_EIO, "--json %s: cannot write in directory %s: %s", json, dir, strerror(er)), 1;
    if (rk_is_dir(json)) return rk_fail(e, RK_EINVAL, "--json %s: is a directory", json), 1;
    for (int i = 0; i < n_in; i++)
        if (rk_same_file(inputs[i][1], json))
            return rk_fail(e, RK_EINVAL, "--json %s: is the same file as --%s %s (it would be overwritten)", json, inputs[i][0],
                           inputs[i][1]),
                   1;
    return 0;
}

/* Split --modes: each of none, kd, ah, ah_sa at most once, none empty. */
static int parse_modes(const char *modes, const rk_exfm_cfg *base, rk_exfm_cfg *mcfg, char (*mname)[16], int *nm) {
    static const char *const known[] = {"none", "kd", "ah", "ah_sa"};
    *nm = 0;
    const char *p = modes;
    for (;;) {
        size_t L = strcspn(p, ",");
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (strlen(known[i]) == L && !strncmp(p, known[i], L)) k = i;
        if (L == 0) {
            fprintf(stderr, "rank distill: --modes '%s': empty mode (expected a comma-separated list of none, kd, ah, ah_sa)\n",
                    modes);
            return 1;
        }
        if (k < 0) {
            fprintf(stderr, "rank distill: --modes '%s': unknown mode '%.*s' (none, kd, ah, ah_sa)\n", modes, (int)(L > 64 ? 64 : L), p);
            return 1;
        }
        for (int i = 0; i < *nm; i++)
            if (!strcmp(mname[i], known[k])) {
                fprintf(stderr, "rank distill: --modes '%s': '%s' appears twice\n", modes, known[k]);
                return 1;
            }
        rk_exfm_cfg x = *base;
        x.mode = k == 0 ? RK_EXFM_NONE : k == 1 ? RK_EXFM_KD : RK_EXFM_AH;
        x.adapter = k == 3;
        mcfg[*nm] = x;
        snprintf(mname[(*nm)++], 16, "%s", known[k]);
        if (!p[L]) return 0;
        p += L + 1;
    }
}

static int load_cfg(const char *opt, const char *path, const char *role, long seed, rk_model_cfg *cfg, const char *stream,
                    rk_err *e) {
    char *text;
    if (rk_read_file(path, &text, NULL, e)) return 1;
    rk_status s = rk_model_cfg_parse(text, cfg, e);
    rk_free(text);
    if (s) {
        rk_err_prefix(e, "--%s %s", opt, path);
        return 1;
    }
    if (cfg->n_members)
        return rk_fail(e, RK_EINVAL, "--%s %s: an ensemble config (%d members) cannot be the %s; give a single model", opt, path,
                       cfg->n_members, role),
               1;
    if (seed >= 0) cfg->train.seed = (uint64_t)seed;
    /* dense standardization statistics over the stream (no labels involved) */
    return rk_dataset_fit_dense(stream, cfg, e) != RK_OK;
}

/* A metric for the JSON: null where undefined (NaN is not JSON); else to 6
 * decimals, the values this file always had (bench/exfm_report.py averages
 * them), printed exactly by JSON_REAL_PRECISION(15). */
static json_t *jnum(double x) {
    if (!isfinite(x)) return json_null();
    char b[64];
    snprintf(b, sizeof b, "%.6f", x);
    return json_real(strtod(b, NULL));
}

/* Warn when NE/AUC are undefined (all evaluated labels one class). */
static void warn_undefined(const char *who, const char *vname, const rk_metrics *m, int warmup, int chunks) {
    if (isfinite(m->ne) && isfinite(m->auc)) return;
    fprintf(stderr,
            "rank distill: warning: %s vertical=%s: NE and AUC are undefined: %zu of the %zu labels in chunks %d..%d are 1 "
            "(one class only); reported as nan, null in --json\n",
            who, vname, m->n_pos, m->n, warmup, chunks - 1);
}

/* NE and AUC of the logged teacher predictions per vertical, over the rows
 * of chunks >= warmup that have one (the teacher never saw those labels
 * before predicting them). */
static int teacher_metrics(const rk_stream *st, const rk_dataset *td, rk_das *das, int warmup, rk_metrics *tm, rk_err *e) {
    int n0 = st->chunk_start[warmup], n = st->n_rows - n0, rc = 1;
    uint32_t *ids = rk_malloc((size_t)n * sizeof(uint32_t));
    float *lg = rk_malloc((size_t)n * sizeof(float)), *p = rk_malloc((size_t)n * sizeof(float)),
          *y = rk_malloc((size_t)n * sizeof(float));
    if (!ids || !lg || !p || !y) {
        rk_fail(e, RK_ENOMEM, "teacher metrics: out of memory");
        goto out;
    }
    for (int v = 0; v < st->n_verticals; v++) {
        int k = 0;
        for (int r = n0; r < st->n_rows; r++)
            if ((st->vmask[r] >> v) & 1) ids[k++] = (uint32_t)r;
        if (rk_das_get(das, ids, (size_t)k, lg, NULL, e)) goto out;
        int m = 0;
        for (int i = 0; i < k; i++)
            if (!isnan(lg[i])) p[m] = rk_sigmoid(lg[i]), y[m++] = td->b.labels[ids[i]];
        if (m == 0) {
            rk_fail(e, RK_EINVAL, "teacher metrics: vertical '%s' has no logged prediction after the warm-up", st->vname[v]);
            goto out;
        }
        if (rk_metrics_compute(p, y, (size_t)m, &tm[v], e)) goto out;
        printf("teacher vertical=%s n=%zu ne=%.5f auc=%.5f\n", st->vname[v], tm[v].n, tm[v].ne, tm[v].auc);
        warn_undefined("teacher", st->vname[v], &tm[v], warmup, st->n_chunks);
    }
    rc = 0;
out:
    rk_free(ids);
    rk_free(lg);
    rk_free(p);
    rk_free(y);
    return rc;
}

/* Checks on the loaded stream that need no training: every vertical has
 * rows, and rows with a teacher prediction after the warm-up. */
static int check_stream(const rk_stream *st, const char *stream, const char *spec, long warmup, long stale, rk_err *e) {
    long first = warmup > stale + 1 ? warmup : stale + 1; /* first chunk evaluated and labelled by the teacher */
    for (int v = 0; v < st->n_verticals; v++) {
        int n = 0, late = 0;
        for (int r = 0; r < st->n_rows; r++)
            if ((st->vmask[r] >> v) & 1) {
                n++;
                late += r >= (first < st->n_chunks ? st->chunk_start[first] : st->n_rows);
            }
        if (n == 0)
            return rk_fail(e, RK_EINVAL, "--verticals '%s': vertical '%s' matches no row of --stream %s (check its genres)", spec,
                           st->vname[v], stream),
                   1;
        if (late == 0)
            return rk_fail(e, RK_EINVAL,
                           "--staleness %ld / --warmup %ld: vertical '%s' has no row with a teacher prediction after the warm-up "
                           "(the teacher labels chunks >= %ld, metrics count chunks >= %ld, of %d); lower --staleness or --warmup",
                           stale, warmup, st->vname[v], stale + 1, warmup, st->n_chunks),
                   1;
        rk_info("vertical %s: %d of %d rows", st->vname[v], n, st->n_rows);
    }
    return 0;
}

/* Write root to path through path.tmp-PID + rename. */
static int write_json(const char *path, json_t *root, rk_err *e) {
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    if (!text) return rk_fail(e, RK_ENOMEM, "--json %s: out of memory", path), 1;
    rk_status s = rk_write_file_atomic(path, text, strlen(text), e);
    free(text);
    if (s) return rk_err_prefix(e, "--json"), 1;
    return 0;
}

int rank_distill_main(int argc, char **argv) {
    const char *stream = NULL, *tpath = NULL, *spath = NULL, *out = NULL, *json = NULL, *bias_name = NULL, *bias_mode = NULL;
    const char *spec = RK_EXFM_ML_VERTICALS, *modes = "none,kd,ah,ah_sa";
    long chunks = 20, warmup = 6, stale = 0, bias_factor = 1, seed = -1, sa_hidden = 8;
    int ckpt = 0, bias_sub = 0, bias_factor_set = 0;
    double w = 1, alpha = 1, beta = 1, w_sa = 1, lr_sa = 1e-3;
    rk_exfm_cfg base = RK_EXFM_CFG_DEFAULT;
    static struct option opts[] = {
        {"stream", 1, 0, 'i'},      {"teacher-config", 1, 0, 'T'}, {"student-config", 1, 0, 'S'}, {"out", 1, 0, 'o'},
        {"chunks", 1, 0, 'c'},      {"warmup", 1, 0, 'W'},         {"verticals", 1, 0, 'v'},      {"modes", 1, 0, 'm'},
        {"staleness", 1, 0, 'k'},   {"bias-vertical", 1, 0, 'b'},  {"bias-factor", 1, 0, 'f'},    {"seed", 1, 0, 's'},
        {"w", 1, 0, 'w'},           {"alpha", 1, 0, 'a'},          {"beta", 1, 0, 'B'},           {"w-sa", 1, 0, 'x'},
        {"sa-hidden", 1, 0, 'K'},   {"lr-sa", 1, 0, 'l'},          {"checkpoints", 0, 0, 'C'},    {"json", 1, 0, 'j'},
        {"bias-mode", 1, 0, 'M'},   {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    optind = 1;
    setvbuf(stdout, NULL, _IOLBF, 0); /* one result per line, even into a pipe that is cut */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': stream = optarg; break;
        case 'T': tpath = optarg; break;
        case 'S': spath = optarg; break;
        case 'o': out = optarg; break;
        case 'c': if (parse_i("chunks", optarg, 1, 100000, &chunks)) return 2; break;
        case 'W': if (parse_i("warmup", optarg, 0, 100000, &warmup)) return 2; break;
        case 'v': spec = optarg; break;
        case 'm': modes = optarg; break;
        case 'k': if (parse_i("staleness", optarg, 0, 100000, &stale)) return 2; break;
        case 'b': bias_name = optarg; break;
        case 'f': if (parse_i("bias-factor", optarg, 1, 1000, &bias_factor)) return 2; bias_factor_set = 1; break;
        case 's': if (parse_i("seed", optarg, 0, 1L << 40, &seed)) return 2; break;
        case 'w': if (parse_d("w", optarg, 0, KNOB_MAX, &w)) return 2; break;
        case 'a': if (parse_d("alpha", optarg, 1e-6, KNOB_MAX, &alpha)) return 2; break;
        case 'B': if (parse_d("beta", optarg, 0, KNOB_MAX, &beta)) return 2; break;
        case 'x': if (parse_d("w-sa", optarg, 0, KNOB_MAX, &w_sa)) return 2; break;
        case 'K': if (parse_i("sa-hidden", optarg, 1, 256, &sa_hidden)) return 2; break;
        case 'l': if (parse_d("lr-sa", optarg, 0, 1, &lr_sa)) return 2; break;
        case 'C': ckpt = 1; break;
        case 'j': json = optarg; break;
        case 'M':
            bias_mode = optarg;
            if (!strcmp(optarg, "repeat")) bias_sub = 0;
            else if (!strcmp(optarg, "subsample")) bias_sub = 1;
            else {
                fprintf(stderr, "rank distill: --bias-mode: expected repeat or subsample, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': distill_usage(stdout); return 0;
        default: distill_usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "rank distill: unexpected argument '%s' (every option is --name VALUE; see --help)\n", argv[optind]);
        return 2;
    }
    if (!stream || !tpath || !spath || !out) {
        fprintf(stderr, "rank distill: --stream, --teacher-config, --student-config and --out are required (see --help)\n");
        return 2;
    }
    if (bias_factor_set != (bias_name != NULL)) {
        fprintf(stderr, "rank distill: --bias-vertical and --bias-factor go together: %s without %s\n",
                bias_name ? "--bias-vertical" : "--bias-factor", bias_name ? "--bias-factor" : "--bias-vertical");
        return 2;
    }
    if (bias_mode && !bias_name) {
        fprintf(stderr, "rank distill: --bias-mode needs --bias-vertical and --bias-factor\n");
        return 2;
    }
    if (warmup >= chunks) {
        fprintf(stderr, "rank distill: --warmup %ld leaves no chunk of the %ld (--chunks) to evaluate\n", warmup, chunks);
        return 2;
    }
    base.w = (float)w, base.alpha = (float)alpha, base.beta = (float)beta, base.w_sa = (float)w_sa, base.lr_sa = (float)lr_sa;
    base.sa_hidden = (int)sa_hidden;
    rk_exfm_cfg mcfg[4];
    char mname[4][16];
    int nm = 0;
    if (parse_modes(modes, &base, mcfg, mname, &nm)) return 2;
    rk_err e = {0};
    for (int i = 0; i < nm; i++)
        if (rk_exfm_cfg_check(&mcfg[i], &e)) return fail(&e); /* unreachable with the bounds above */
    rk_err se;
    if (rk_stream_check_spec(spec, &se)) {
        const char *msg = strncmp(se.msg, "verticals: ", 11) ? se.msg : se.msg + 11;
        rk_fail(&e, se.code, "--verticals '%.200s': %s", spec, msg);
        return fail(&e);
    }
    /* --out: not there (after removing what dead runs left), parent writable */
    char outtmp[4200], parent[4096], created_top[4096] = "";
    snprintf(outtmp, sizeof outtmp, "%s.tmp-%ld", out, (long)getpid());
    rk_sweep_dead_writers(out, 0, "rank distill --out");
    if (rk_path_exists(out)) {
        fprintf(stderr, "rank distill: --out %s already exists (remove it or choose another directory)\n", out);
        return 1;
    }
    rk_path_parent(out, parent, sizeof parent);
    {
        /* the first missing ancestor is what a failed run removes */
        char p[4096];
        snprintf(p, sizeof p, "%s", parent);
        while (!rk_path_exists(p)) {
            snprintf(created_top, sizeof created_top, "%s", p);
            char q[4096];
            rk_path_parent(p, q, sizeof q);
            if (!strcmp(q, p)) break;
            snprintf(p, sizeof p, "%s", q);
        }
        int er = probe_dir(p);
        if (er) {
            fprintf(stderr, "rank distill: --out %s: cannot create it in %s: %s\n", out, p, strerror(er));
            return 1;
        }
    }
    if (json && !strcmp(json, out)) {
        fprintf(stderr, "rank distill: --json %s: is the --out directory; give a file outside it\n", json);
        return 2;
    }
    if (json) {
        const char *inputs[3][2] = {{"stream", stream}, {"teacher-config", tpath}, {"student-config", spath}};
        rk_sweep_dead_writers(json, 0, "rank distill --json");
        if (check_json(json, inputs, 3, &e)) return fail(&e);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* the flag is polled, so I/O in progress need not see EINTR; a second
     * signal kills at once (what it leaves, DIR.tmp-PID, the next run sweeps) */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rk_model_cfg tcfg = {0}, scfg = {0};
    rk_stream st = {0};
    rk_dataset td = {0}, sd = {0};
    rk_das *das = NULL;
    json_t *root = NULL, *jt = NULL, *jr = NULL;
    int rc = 1, created = 0, published = 0, bias_v = -1;
    if (rk_stream_load(stream, (int)chunks, spec, &st, &e)) goto done;
    if (check_stream(&st, stream, spec, warmup, stale, &e)) goto done;
    if (bias_name) {
        for (int v = 0; v < st.n_verticals; v++)
            if (!strcmp(st.vname[v], bias_name)) bias_v = v;
        if (bias_v < 0) {
            rk_fail(&e, RK_EINVAL, "--bias-vertical: no vertical '%s' in --verticals", bias_name);
            goto done;
        }
    }
    if (load_cfg("teacher-config", tpath, "teacher", seed, &tcfg, stream, &e) ||
        load_cfg("student-config", spath, "student", seed, &scfg, stream, &e))
        goto done;
    if (rk_dataset_load(stream, &tcfg, &td, &e) || rk_dataset_load(stream, &scfg, &sd, &e)) goto done;
    if (!td.has_labels || !sd.has_labels) {
        const rk_model_cfg *lc = !td.has_labels ? &tcfg : &scfg;
        rk_fail(&e, RK_EFORMAT, "--stream %s: no column '%s' (the label column of --%s %s)", stream, lc->label_column,
                !td.has_labels ? "teacher-config" : "student-config", !td.has_labels ? tpath : spath);
        goto done;
    }
    if (g_stop) goto done;
    /* everything checked: from here on, outputs exist only under outtmp */
    if (rk_mkdir_p(outtmp, &e)) goto done;
    created = 1;
    char path[4300];
    snprintf(path, sizeof path, "%s/das", outtmp);
    if (rk_das_create(path, (uint64_t)st.n_rows, &das, &e)) goto done;
    rk_teacher_opts to = RK_TEACHER_OPTS_DEFAULT;
    to.staleness = (int)stale;
    to.bias_vertical = bias_v;
    to.bias_factor = (int)bias_factor;
    to.bias_subsample = bias_sub;
    to.stop = &g_stop;
    rk_teacher_report tr;
    if (rk_teacher_run(&tcfg, &td, &st, &to, das, &tr, &e)) goto done;
    printf("teacher: chunks=%d staleness=%ld bias=%s x%ld (%s) requested=%zu scored=%zu seconds=%.1f\n", st.n_chunks, stale,
           bias_name ? bias_name : "none", bias_factor, bias_sub ? "subsample" : "repeat", tr.requested, tr.scored, tr.seconds);
    /* the teacher's own quality on each vertical after the warm-up, from the log */
    rk_metrics tm[RK_EXFM_MAX_VERTICALS];
    if (teacher_metrics(&st, &td, das, (int)warmup, tm, &e)) goto done;
    root = json_object();
    jt = json_array();
    jr = json_array();
    if (!root || !jt || !jr) {
        rk_fail(&e, RK_ENOMEM, "--json: out of memory");
        goto done;
    }
    json_object_set_new(root, "chunks", json_integer(st.n_chunks));
    json_object_set_new(root, "warmup", json_integer(warmup));
    json_object_set_new(root, "staleness", json_integer(stale));
    json_object_set_new(root, "bias_vertical", json_string(bias_name ? bias_name : ""));
    json_object_set_new(root, "bias_factor", json_integer(bias_factor));
    json_object_set_new(root, "bias_mode", json_string(bias_sub ? "subsample" : "repeat"));
    json_object_set_new(root, "teacher_scored", json_integer((json_int_t)tr.scored));
    json_object_set_new(root, "teacher_requested", json_integer((json_int_t)tr.requested));
    for (int v = 0; v < st.n_verticals; v++) {
        json_t *o = json_object();
        json_object_set_new(o, "vertical", json_string(st.vname[v]));
        json_object_set_new(o, "n", json_integer((json_int_t)tm[v].n));
        json_object_set_new(o, "ne", jnum(tm[v].ne));
        json_object_set_new(o, "auc", jnum(tm[v].auc));
        json_array_append_new(jt, o);
    }
    for (int i = 0; i < nm; i++)
        for (int v = 0; v < st.n_verticals; v++) {
            rk_student_opts so = {mcfg[i], v, (int)warmup, NULL, &g_stop};
            char cdir[4400];
            if (ckpt) {
                snprintf(cdir, sizeof cdir, "%s/checkpoints/%s", outtmp, mname[i]);
                so.checkpoint_dir = cdir;
            }
            rk_student_report r;
            double t0 = rk_now();
            if (rk_student_run(&scfg, &sd, &st, das, &so, &r, NULL, &e)) goto done;
            const rk_metrics *m = &r.after_warmup;
            printf("student mode=%s vertical=%s n=%zu ne=%.5f auc=%.5f logloss=%.5f distilled=%zu seconds=%.1f\n", mname[i],
                   st.vname[v], m->n, m->ne, m->auc, m->logloss, r.distilled, rk_now() - t0);
            char who[64];
            snprintf(who, sizeof who, "student mode=%s", mname[i]);
            warn_undefined(who, st.vname[v], m, (int)warmup, st.n_chunks);
            json_t *o = json_object();
            json_object_set_new(o, "mode", json_string(mname[i]));
            json_object_set_new(o, "vertical", json_string(st.vname[v]));
            json_object_set_new(o, "n", json_integer((json_int_t)m->n));
            json_object_set_new(o, "ne", jnum(m->ne));
            json_object_set_new(o, "auc", jnum(m->auc));
            json_object_set_new(o, "logloss", jnum(m->logloss));
            json_object_set_new(o, "distilled", json_integer((json_int_t)r.distilled));
            json_array_append_new(jr, o);
            rk_student_report_free(&r);
        }
    json_object_set_new(root, "teacher", jt);
    json_object_set_new(root, "results", jr);
    jt = jr = NULL;
    rk_das_close(das);
    das = NULL;
    if (g_stop) goto done;
    /* publish: the directory, then the JSON (removing the directory if that fails) */
    if (rk_fsync_dir(outtmp, &e)) goto done;
    if (rename(outtmp, out) != 0) {
        rk_fail(&e, RK_EIO, "--out %s: rename from %s failed: %s", out, outtmp, strerror(errno));
        goto done;
    }
    published = 1;
    (void)rk_fsync_dir(parent, NULL);
    if (json && write_json(json, root, &e)) goto done;
    rc = 0;
done:
    json_decref(root);
    json_decref(jt);
    json_decref(jr);
    rk_das_close(das);
    rk_dataset_free(&td);
    rk_dataset_free(&sd);
    rk_stream_free(&st);
    rk_model_cfg_free(&tcfg);
    rk_model_cfg_free(&scfg);
    if (rc == 0) return 0;
    /* remove what this run created */
    if (published) (void)rk_rm_rf(out, NULL);
    if (created) (void)rk_rm_rf(outtmp, NULL);
    if (created_top[0] && (created || published)) (void)rk_rm_rf(created_top, NULL);
    if (g_stop) {
        fprintf(stderr, "rank distill: interrupted by %s; removed what this run had written (nothing under --out %s%s%s)\n",
                g_stop == SIGINT ? "SIGINT" : "SIGTERM", out, json ? " or --json " : "", json ? json : "");
        return 128 + g_stop;
    }
    return fail(&e);
}
