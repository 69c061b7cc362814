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
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill.h"

int rank_distill_main(int argc, char **argv);

static void distill_usage(FILE *o) {
    fprintf(o,
            "usage: rank distill --stream FILE --teacher-config FILE --student-config FILE --out DIR\n"
            "         [--chunks N (20)] [--warmup N (6)] [--verticals SPEC] [--modes LIST (none,kd,ah,ah_sa)]\n"
            "         [--staleness K (0)] [--bias-vertical NAME --bias-factor F [--bias-mode repeat|subsample]] [--seed N]\n"
            "         [--w W (1)] [--alpha A (1)] [--beta B (1)] [--w-sa W (1)] [--sa-hidden K (8)] [--lr-sa LR (1e-3)]\n"
            "         [--checkpoints] [--json FILE]\n"
            "  FILE: a time-ordered TSV of `rank data movielens` (e.g. train+valid+test concatenated).\n"
            "  Chunks: equal-count in time order. SPEC: 'name:Genre,Genre;name2:...' (default: MovieLens\n"
            "  genre families action / comedy / drama). Modes: none (student alone), kd (single-head KD),\n"
            "  ah (auxiliary head), ah_sa (auxiliary head + student adapter). The teacher labels chunk t with\n"
            "  its version trained through chunk t-1-K. A biased teacher sees vertical NAME's rows F times per\n"
            "  chunk (repeat, default) or every other row with probability 1/F (subsample).\n");
}

static int fail(const rk_err *e) {
    fprintf(stderr, "rank distill: error: %s\n", e->msg);
    return 1;
}

static int load_cfg(const char *path, long seed, rk_model_cfg *cfg, const char *stream, rk_err *e) {
    char *text;
    if (rk_read_file(path, &text, NULL, e)) return 1;
    rk_status s = rk_model_cfg_parse(text, cfg, e);
    rk_free(text);
    if (s) {
        rk_err_prefix(e, "%s", path);
        return 1;
    }
    if (seed >= 0) cfg->train.seed = (uint64_t)seed;
    /* dense standardization statistics over the stream (no labels involved) */
    return rk_dataset_fit_dense(stream, cfg, e) != RK_OK;
}

static int parse_f(const char *name, const char *v, float *out) {
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !isfinite(d)) {
        fprintf(stderr, "rank distill: --%s: expected a number, got '%s'\n", name, v);
        return 1;
    }
    *out = (float)d;
    return 0;
}

static int parse_i(const char *name, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "rank distill: --%s: expected an integer in [%ld, %ld], got '%s'\n", name, lo, hi, v);
        return 1;
    }
    *out = x;
    return 0;
}

/* NE and AUC of the logged teacher predictions per vertical, over the rows
 * of chunks >= warmup that have one (the teacher never saw those labels
 * before predicting them). */
static int teacher_metrics(const rk_stream *st, const rk_dataset *td, rk_das *das, int warmup, double *ne, double *auc,
                           rk_err *e) {
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
        rk_metrics mt;
        if (m == 0 || rk_metrics_compute(p, y, (size_t)m, &mt, e)) {
            if (m == 0) rk_fail(e, RK_EINVAL, "teacher metrics: vertical '%s' has no logged prediction after the warm-up", st->vname[v]);
            goto out;
        }
        ne[v] = mt.ne;
        auc[v] = mt.auc;
        printf("teacher vertical=%s n=%zu ne=%.5f auc=%.5f\n", st->vname[v], mt.n, mt.ne, mt.auc);
    }
    rc = 0;
out:
    rk_free(ids);
    rk_free(lg);
    rk_free(p);
    rk_free(y);
    return rc;
}

int rank_distill_main(int argc, char **argv) {
    const char *stream = NULL, *tpath = NULL, *spath = NULL, *out = NULL, *json = NULL, *bias_name = NULL;
    const char *spec = RK_EXFM_ML_VERTICALS, *modes = "none,kd,ah,ah_sa";
    long chunks = 20, warmup = 6, stale = 0, bias_factor = 1, seed = -1, sa_hidden = 8;
    int ckpt = 0, bias_sub = 0;
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
        case 'f': if (parse_i("bias-factor", optarg, 1, 1000, &bias_factor)) return 2; break;
        case 's': if (parse_i("seed", optarg, 0, 1L << 40, &seed)) return 2; break;
        case 'w': if (parse_f("w", optarg, &base.w)) return 2; break;
        case 'a': if (parse_f("alpha", optarg, &base.alpha)) return 2; break;
        case 'B': if (parse_f("beta", optarg, &base.beta)) return 2; break;
        case 'x': if (parse_f("w-sa", optarg, &base.w_sa)) return 2; break;
        case 'K': if (parse_i("sa-hidden", optarg, 1, 256, &sa_hidden)) return 2; break;
        case 'l': if (parse_f("lr-sa", optarg, &base.lr_sa)) return 2; break;
        case 'C': ckpt = 1; break;
        case 'j': json = optarg; break;
        case 'M':
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
    base.sa_hidden = (int)sa_hidden;
    if (!stream || !tpath || !spath || !out) {
        fprintf(stderr, "rank distill: --stream, --teacher-config, --student-config and --out are required (see --help)\n");
        return 2;
    }
    if (rk_path_exists(out)) {
        fprintf(stderr, "rank distill: --out %s already exists\n", out);
        return 1;
    }
    /* parse the modes before any work */
    rk_exfm_cfg mcfg[8];
    char mname[8][16];
    int nm = 0;
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", modes);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (nm == 8) {
                fprintf(stderr, "rank distill: --modes: at most 8\n");
                return 2;
            }
            rk_exfm_cfg x = base;
            if (!strcmp(t, "none")) x.mode = RK_EXFM_NONE;
            else if (!strcmp(t, "kd")) x.mode = RK_EXFM_KD;
            else if (!strcmp(t, "ah")) x.mode = RK_EXFM_AH;
            else if (!strcmp(t, "ah_sa")) x.mode = RK_EXFM_AH, x.adapter = 1;
            else {
                fprintf(stderr, "rank distill: --modes: unknown mode '%s' (none, kd, ah, ah_sa)\n", t);
                return 2;
            }
            rk_err e;
            if (rk_exfm_cfg_check(&x, &e)) return fail(&e);
            mcfg[nm] = x;
            snprintf(mname[nm++], sizeof mname[0], "%s", t);
        }
    }
    rk_err e = {0};
    rk_model_cfg tcfg, scfg;
    rk_stream st = {0};
    rk_dataset td = {0}, sd = {0};
    rk_das *das = NULL;
    FILE *jf = NULL;
    int rc = 1;
    if (rk_stream_load(stream, (int)chunks, spec, &st, &e)) goto done;
    if (warmup >= chunks) {
        rk_fail(&e, RK_EINVAL, "--warmup %ld leaves no chunk of the %ld to evaluate", warmup, chunks);
        goto done;
    }
    int bias_v = -1;
    if (bias_name) {
        for (int v = 0; v < st.n_verticals; v++)
            if (!strcmp(st.vname[v], bias_name)) bias_v = v;
        if (bias_v < 0) {
            rk_fail(&e, RK_EINVAL, "--bias-vertical: no vertical '%s'", bias_name);
            goto done;
        }
    }
    if (load_cfg(tpath, seed, &tcfg, stream, &e) || load_cfg(spath, seed, &scfg, stream, &e)) goto done;
    if (rk_dataset_load(stream, &tcfg, &td, &e) || rk_dataset_load(stream, &scfg, &sd, &e)) goto done;
    if (rk_mkdir_p(out, &e)) goto done;
    char path[4096];
    snprintf(path, sizeof path, "%s/das", out);
    if (rk_das_create(path, (uint64_t)st.n_rows, &das, &e)) goto done;
    for (int v = 0; v < st.n_verticals; v++) {
        int n = 0;
        for (int r = 0; r < st.n_rows; r++) n += (st.vmask[r] >> v) & 1;
        rk_info("vertical %s: %d of %d rows", st.vname[v], n, st.n_rows);
    }
    rk_teacher_opts to = RK_TEACHER_OPTS_DEFAULT;
    to.staleness = (int)stale;
    to.bias_vertical = bias_v;
    to.bias_factor = (int)bias_factor;
    to.bias_subsample = bias_sub;
    rk_teacher_report tr;
    if (rk_teacher_run(&tcfg, &td, &st, &to, das, &tr, &e)) goto done;
    printf("teacher: chunks=%d staleness=%ld bias=%s x%ld (%s) requested=%zu scored=%zu seconds=%.1f\n", st.n_chunks, stale,
           bias_name ? bias_name : "none", bias_factor, bias_sub ? "subsample" : "repeat", tr.requested, tr.scored, tr.seconds);
    /* the teacher's own quality on each vertical after the warm-up, from the log */
    double teacher_ne[RK_EXFM_MAX_VERTICALS], teacher_auc[RK_EXFM_MAX_VERTICALS];
    if (teacher_metrics(&st, &td, das, (int)warmup, teacher_ne, teacher_auc, &e)) goto done;
    if (json && !(jf = fopen(json, "w"))) {
        rk_fail(&e, RK_EIO, "%s: cannot open for writing", json);
        goto done;
    }
    if (jf)
        fprintf(jf, "{\"chunks\": %d, \"warmup\": %ld, \"staleness\": %ld, \"bias_vertical\": \"%s\", \"bias_factor\": %ld, \"bias_mode\": \"%s\", "
                    "\"teacher_scored\": %zu, \"teacher_requested\": %zu, ",
                st.n_chunks, warmup, stale, bias_name ? bias_name : "", bias_factor, bias_sub ? "subsample" : "repeat", tr.scored,
                tr.requested);
    for (int v = 0; jf && v < st.n_verticals; v++)
        fprintf(jf, "%s{\"vertical\": \"%s\", \"ne\": %.6f, \"auc\": %.6f}", v ? ", " : "\"teacher\": [", st.vname[v],
                teacher_ne[v], teacher_auc[v]);
    if (jf) fprintf(jf, "], \"results\": [");
    int first = 1;
    for (int i = 0; i < nm; i++)
        for (int v = 0; v < st.n_verticals; v++) {
            rk_student_opts so = {mcfg[i], v, (int)warmup, NULL};
            char cdir[4096];
            if (ckpt) {
                snprintf(cdir, sizeof cdir, "%s/checkpoints/%s", out, mname[i]);
                so.checkpoint_dir = cdir;
            }
            rk_student_report r;
            double t0 = rk_now();
            if (rk_student_run(&scfg, &sd, &st, das, &so, &r, NULL, &e)) goto done;
            const rk_metrics *m = &r.after_warmup;
            printf("student mode=%s vertical=%s n=%zu ne=%.5f auc=%.5f logloss=%.5f distilled=%zu seconds=%.1f\n", mname[i],
                   st.vname[v], m->n, m->ne, m->auc, m->logloss, r.distilled, rk_now() - t0);
            if (jf)
                fprintf(jf, "%s\n  {\"mode\": \"%s\", \"vertical\": \"%s\", \"n\": %zu, \"ne\": %.6f, \"auc\": %.6f, \"logloss\": %.6f}",
                        first ? "" : ",", mname[i], st.vname[v], m->n, m->ne, m->auc, m->logloss);
            first = 0;
            rk_student_report_free(&r);
        }
    if (jf) fprintf(jf, "\n]}\n");
    rc = 0;
done:
    if (jf && fclose(jf) != 0 && rc == 0) {
        rk_fail(&e, RK_EIO, "%s: write failed", json);
        rc = 1;
    }
    rk_das_close(das);
    rk_dataset_free(&td);
    rk_dataset_free(&sd);
    rk_stream_free(&st);
    return rc ? fail(&e) : 0;
}
