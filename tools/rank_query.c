/*
 * tools/rank_query.c — `rank query`: score a TSV through a running rankd.
 *
 *   rank query --addr HOST:PORT --model BUNDLE --input FILE.tsv --output FILE
 *              [--candidates N] [--max-requests N] [--deadline-ms N]
 *
 * The bundle is read only for its feature list (which TSV column feeds
 * which feature, user side or candidate side). Consecutive rows that agree
 * on every user-side value form one request of up to N candidates, so each
 * row is scored with exactly its own features (in MovieLens hour, weekday
 * and history change between a user's rows; a change starts a new request).
 * Multi-valued fields are split on '|' (the server skips empty values, as
 * the offline reader does); an empty dense field is left unset (missing).
 * The model's aliases are used where declared (user.user_id,
 * user.recent_item_ids, candidates[i].ad_id), so the alias path is what a
 * real ad server exercises.
 *
 * Output: header "pctr", then one %.9g pCTR per scored input row, in input
 * order, as `rank score` writes it. Calls are sequential on one channel; the
 * summary line gives requests/s and call latency percentiles.
 */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"
#include "rank.pb-c.h"

int rank_query_main(int argc, char **argv);

static const char *grpc_code_name(int c) {
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED"};
    return c >= 0 && c <= 16 ? names[c] : "?";
}

static void usage(FILE *o) {
    fprintf(o,
            "usage: rank query --addr HOST:PORT --model BUNDLE --input FILE.tsv --output FILE\n"
            "                  [--candidates N] [--max-requests N] [--deadline-ms N] [--model-name NAME]\n"
            "  Scores FILE.tsv through a running rankd: consecutive rows sharing every\n"
            "  user-side feature value go in one Rank request of up to N candidates\n"
            "  (default 100). Writes 'pctr' then one pCTR per scored row, in order.\n"
            "  --max-requests N  stop after N requests (default: all rows)\n"
            "  --deadline-ms N   per-call deadline (default 10000)\n"
            "  --model-name NAME RankRequest.model_name (default: the bundle's name;\n"
            "                    '' sends none; rankd --model-repository serves a model\n"
            "                    under its directory's name)\n"
            "  --addr takes any gRPC target; a list of replicas, e.g.\n"
            "  ipv4:127.0.0.1:P1,127.0.0.1:P2, is balanced round-robin over them\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Split s in place on '|'; appends the pieces (empty ones too: the server
 * skips them exactly as the offline reader does) to *vals. */
static int split_values(char *s, char ***vals, size_t *n, size_t *cap) {
    for (;;) {
        if (*n == *cap) {
            size_t nc = *cap ? 2 * *cap : 256;
            char **nv = rk_realloc(*vals, nc * sizeof *nv);
            if (!nv) return -1;
            *vals = nv;
            *cap = nc;
        }
        (*vals)[(*n)++] = s;
        char *bar = strchr(s, '|');
        if (!bar) return 0;
        *bar = 0;
        s = bar + 1;
    }
}

typedef struct {
    const rk_model_cfg *cfg;
    int *col; /* [n_features] TSV column of each feature */
    int alias_user, alias_hist, alias_ad;
    int n_user_sparse, n_user_dense, n_item_sparse, n_item_dense;
} plan;

/* Everything one request needs, sized for n_cand candidates; reused. */
typedef struct {
    Rankd__V1__RankRequest req;
    Rankd__V1__User user;
    Rankd__V1__SparseFeature *usp, **usp_p; /* [n_features] */
    Rankd__V1__DenseFeature *uds, **uds_p;  /* [n_features] */
    size_t *usp_inst;                       /* [n_features] */
    Rankd__V1__Candidate *cand;
    Rankd__V1__Candidate **cand_p;
    Rankd__V1__SparseFeature *csp, **csp_p; /* [n_cand * n_item_sparse] */
    Rankd__V1__DenseFeature *cds, **cds_p;  /* [n_cand * n_item_dense] */
    /* values: indices into one pool while filling (the pool may move), fixed
     * up to pointers before sending */
    char **pool;
    size_t n_pool, cap_pool;
    size_t *sp_start;       /* per sparse feature instance: first pool index */
    size_t n_sp_inst;
} reqbuf;

static int parse_float_field(const char *s, float *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v)) return -1;
    *out = (float)v;
    return 0;
}

int rank_query_main(int argc, char **argv) {
    const char *addr = NULL, *model = NULL, *in = NULL, *out = NULL, *model_name = NULL;
    long n_cand = 100, max_requests = 0, deadline_ms = 10000;
    static struct option opts[] = {{"addr", 1, 0, 'a'},        {"model", 1, 0, 'm'},
                                   {"input", 1, 0, 'i'},       {"output", 1, 0, 'o'},
                                   {"candidates", 1, 0, 'c'},  {"max-requests", 1, 0, 'r'},
                                   {"deadline-ms", 1, 0, 'd'}, {"help", 0, 0, 'h'},
                                   {"model-name", 1, 0, 'n'},
                                   {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long long x = 0;
        rk_status bad = RK_OK;
        rk_err pe = {0};
        switch (c) {
        case 'a': addr = optarg; break;
        case 'm': model = optarg; break;
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'n': model_name = optarg; break;
        case 'c': bad = rk_parse_int("--candidates", optarg, 1, 100000, &x, &pe), n_cand = (long)x; break;
        case 'r': bad = rk_parse_int("--max-requests", optarg, 0, LONG_MAX, &x, &pe), max_requests = (long)x; break;
        case 'd': bad = rk_parse_int("--deadline-ms", optarg, 0, 86400000, &x, &pe), deadline_ms = (long)x; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "rank query: error: %s\n", pe.msg);
            return 2;
        }
    }
    if (!addr || !model || !in || !out) {
        fprintf(stderr, "rank query: --addr, --model, --input and --output are required (see --help)\n");
        return 2;
    }

    rk_err e = {0};
    rk_model_cfg mcfg;
    int have_cfg = 0;
    char *mtext = NULL, mpath[4200];
    char *buf = NULL;
    char ***rowv = NULL; /* [n_rows][n_features] field pointers into cells */
    char **cells = NULL;
    float *pctr = NULL;
    double *lat = NULL;
    size_t *group_end = NULL;
    rk_client *cl = NULL;
    reqbuf rb;
    memset(&rb, 0, sizeof rb);
    plan pl;
    memset(&pl, 0, sizeof pl);
    char **fields = NULL; /* [header columns + 1] one row's fields */
    rk_strmap *hdr_map = NULL;
    int rc = 1;
    size_t n_rows = 0, n_groups = 0, sent = 0, scored_rows = 0;

    /* the features from model.json alone: the tables stay with rankd (a thin bundle works too) */
    snprintf(mpath, sizeof mpath, "%s/model.json", model);
    if (rk_read_file(mpath, &mtext, NULL, &e)) goto fail;
    have_cfg = 1;
    if (rk_model_cfg_parse(mtext, &mcfg, &e)) {
        rk_err_prefix(&e, "%s", mpath);
        goto fail;
    }
    memset(&pl, 0, sizeof pl);
    pl.cfg = &mcfg;
    const rk_model_cfg *cfg = pl.cfg;
    const int nf = cfg->n_features;
    pl.alias_user = cfg->alias_user_id[0] ? rk_model_cfg_find(cfg, cfg->alias_user_id) : -1;
    pl.alias_hist = cfg->alias_recent_items[0] ? rk_model_cfg_find(cfg, cfg->alias_recent_items) : -1;
    pl.alias_ad = cfg->alias_ad_id[0] ? rk_model_cfg_find(cfg, cfg->alias_ad_id) : -1;

    size_t len;
    if (rk_read_text(in, &buf, &len, &e)) goto fail;
    /* header */
    char *cur = buf, *p = rk_next_line(&cur);
    if (!p || !*cur) {
        rk_fail(&e, RK_EFORMAT, "%s: no header line", in);
        goto fail;
    }
    {
        int nh = 1;
        for (const char *q = p; (q = strchr(q, '\t')); q++) nh++;
        fields = rk_malloc(((size_t)nh + 1) * sizeof *fields);
        pl.col = rk_malloc(((size_t)nf + 1) * sizeof *pl.col);
        hdr_map = rk_strmap_create((size_t)nh);
        if (!fields || !pl.col || !hdr_map) goto oom;
        rk_split_tabs(p, fields, nh);
        for (int h = 0; h < nh; h++)
            if (rk_strmap_put(hdr_map, fields[h], strlen(fields[h]), h) == RK_ENOMEM) goto oom; /* a repeat: first wins */
        for (int f = 0; f < nf; f++) {
            pl.col[f] = rk_strmap_get(hdr_map, cfg->features[f].column, strlen(cfg->features[f].column));
            if (pl.col[f] < 0) {
                rk_fail(&e, RK_EFORMAT, "%s row 1: no column '%s' (feature '%s')", in,
                        cfg->features[f].column, cfg->features[f].name);
                goto fail;
            }
        }
        /* rows: count lines, then split each into the feature fields */
        size_t cap_rows = 1;
        for (char *q = cur; *q; q++) cap_rows += *q == '\n';
        rowv = rk_calloc(cap_rows, sizeof *rowv);
        cells = rk_malloc(cap_rows * (size_t)nf * sizeof(char *) + 1);
        if (!rowv || !cells) {
            rk_fail(&e, RK_ENOMEM, "out of memory for %zu rows", cap_rows);
            goto fail;
        }
        long line_no = 1;
        char *q;
        while ((q = rk_next_line(&cur))) {
            line_no++;
            if (!*q) continue;
            int n = rk_split_tabs(q, fields, nh);
            if (n != nh) {
                rk_fail(&e, RK_EFORMAT, "%s row %ld: %d fields, the header has %d", in, line_no, n, nh);
                goto fail;
            }
            rowv[n_rows] = cells + n_rows * (size_t)nf;
            for (int f = 0; f < nf; f++) rowv[n_rows][f] = fields[pl.col[f]];
            n_rows++;
        }
        if (n_rows == 0) {
            rk_fail(&e, RK_EFORMAT, "%s: no rows after the header", in);
            goto fail;
        }
    }
    for (int f = 0; f < nf; f++) {
        const rk_feature *ft = &cfg->features[f];
        int sparse = ft->kind == RK_FEAT_SPARSE;
        if (ft->side == RK_SIDE_USER) ++*(sparse ? &pl.n_user_sparse : &pl.n_user_dense);
        else ++*(sparse ? &pl.n_item_sparse : &pl.n_item_dense);
    }

    /* Groups: a new request when any user-side value changes or it is full. */
    group_end = rk_malloc(n_rows * sizeof *group_end);
    if (!group_end) {
        rk_fail(&e, RK_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t r = 0, first = 0; r < n_rows; r++) {
        int same = r > first && (long)(r - first) < n_cand;
        for (int f = 0; same && f < nf; f++)
            if (cfg->features[f].side == RK_SIDE_USER && strcmp(rowv[r][f], rowv[first][f]))
                same = 0;
        if (!same && r > first) {
            group_end[n_groups++] = r;
            first = r;
        }
        if (r == n_rows - 1) group_end[n_groups++] = n_rows;
    }
    if (max_requests > 0 && (size_t)max_requests < n_groups) n_groups = (size_t)max_requests;

    /* request buffers */
    size_t nc = (size_t)n_cand;
    rb.cand = rk_calloc(nc, sizeof *rb.cand);
    rb.cand_p = rk_calloc(nc, sizeof *rb.cand_p);
    rb.csp = rk_calloc(nc * (size_t)(pl.n_item_sparse + 1), sizeof *rb.csp);
    rb.csp_p = rk_calloc(nc * (size_t)(pl.n_item_sparse + 1), sizeof *rb.csp_p);
    rb.cds = rk_calloc(nc * (size_t)(pl.n_item_dense + 1), sizeof *rb.cds);
    rb.cds_p = rk_calloc(nc * (size_t)(pl.n_item_dense + 1), sizeof *rb.cds_p);
    rb.sp_start = rk_calloc(nc * (size_t)(pl.n_item_sparse + 1) + (size_t)nf + 2, sizeof *rb.sp_start);
    rb.usp = rk_calloc((size_t)nf + 1, sizeof *rb.usp);
    rb.usp_p = rk_calloc((size_t)nf + 1, sizeof *rb.usp_p);
    rb.uds = rk_calloc((size_t)nf + 1, sizeof *rb.uds);
    rb.uds_p = rk_calloc((size_t)nf + 1, sizeof *rb.uds_p);
    rb.usp_inst = rk_calloc((size_t)nf + 1, sizeof *rb.usp_inst);
    pctr = rk_malloc(n_rows * sizeof *pctr);
    lat = rk_malloc((n_groups + 1) * sizeof *lat);
    if (!rb.cand || !rb.cand_p || !rb.csp || !rb.csp_p || !rb.cds || !rb.cds_p || !rb.sp_start || !rb.usp ||
        !rb.usp_p || !rb.uds || !rb.uds_p || !rb.usp_inst || !pctr || !lat) {
        rk_fail(&e, RK_ENOMEM, "out of memory");
        goto fail;
    }
    if (rk_client_create(addr, &cl, &e)) goto fail;

    double t_start = rk_now();
    for (size_t g = 0, r0 = 0; g < n_groups; r0 = group_end[g], g++) {
        size_t r1 = group_end[g];
        size_t k = r1 - r0;
        char **u = rowv[r0];
        /* pass 1: split every multi-valued field into the pool, remember where */
        rb.n_pool = 0;
        rb.n_sp_inst = 0;
        Rankd__V1__RankRequest *req = &rb.req;
        rankd__v1__rank_request__init(req);
        rankd__v1__user__init(&rb.user);
        req->user = &rb.user;
        char reqid[32];
        snprintf(reqid, sizeof reqid, "q%zu", g);
        req->request_id = reqid;
        /* the bundle's model name unless --model-name: a rankd serving another
         * model answers NOT_FOUND */
        req->model_name = (char *)(model_name ? model_name : cfg->name);
        req->n_candidates = k;
        req->candidates = rb.cand_p;
        size_t hist_inst = (size_t)-1;
        int nus = 0, nud = 0;
        size_t *usp_inst = rb.usp_inst;
        for (int f = 0; f < nf; f++) {
            const rk_feature *ft = &cfg->features[f];
            if (ft->side != RK_SIDE_USER) continue;
            char *v = u[f];
            if (ft->kind == RK_FEAT_DENSE) {
                if (!*v) continue;
                Rankd__V1__DenseFeature *d = &rb.uds[nud];
                rankd__v1__dense_feature__init(d);
                d->name = (char *)ft->name;
                if (parse_float_field(v, &d->value)) {
                    rk_fail(&e, RK_EFORMAT, "%s row %zu, column %s: expected a finite number, got '%.40s'",
                            in, r0 + 2, ft->column, v);
                    goto fail;
                }
                rb.uds_p[nud] = d;
                nud++;
                continue;
            }
            if (f == pl.alias_user && !strchr(v, '|')) {
                rb.user.user_id = v;
                continue;
            }
            size_t inst = rb.n_sp_inst++;
            rb.sp_start[inst] = rb.n_pool;
            if (split_values(v, &rb.pool, &rb.n_pool, &rb.cap_pool)) goto oom;
            if (f == pl.alias_hist) {
                hist_inst = inst;
                continue;
            }
            Rankd__V1__SparseFeature *sf = &rb.usp[nus];
            rankd__v1__sparse_feature__init(sf);
            sf->name = (char *)ft->name;
            usp_inst[nus] = inst;
            rb.usp_p[nus] = sf;
            nus++;
        }
        rb.user.n_sparse = (size_t)nus;
        rb.user.sparse = rb.usp_p;
        rb.user.n_dense = (size_t)nud;
        rb.user.dense = rb.uds_p;
        size_t first_cand_inst = rb.n_sp_inst;
        for (size_t i = 0; i < k; i++) {
            char **row = rowv[r0 + i];
            Rankd__V1__Candidate *cd = &rb.cand[i];
            rankd__v1__candidate__init(cd);
            rb.cand_p[i] = cd;
            Rankd__V1__SparseFeature *sp = &rb.csp[i * (size_t)pl.n_item_sparse];
            Rankd__V1__SparseFeature **spp = &rb.csp_p[i * (size_t)pl.n_item_sparse];
            Rankd__V1__DenseFeature *ds = &rb.cds[i * (size_t)pl.n_item_dense];
            Rankd__V1__DenseFeature **dsp = &rb.cds_p[i * (size_t)pl.n_item_dense];
            int ns = 0, nd = 0;
            for (int f = 0; f < nf; f++) {
                const rk_feature *ft = &cfg->features[f];
                if (ft->side != RK_SIDE_ITEM) continue;
                char *v = row[f];
                if (ft->kind == RK_FEAT_DENSE) {
                    if (!*v) continue;
                    rankd__v1__dense_feature__init(&ds[nd]);
                    ds[nd].name = (char *)ft->name;
                    if (parse_float_field(v, &ds[nd].value)) {
                        rk_fail(&e, RK_EFORMAT,
                                "%s row %zu, column %s: expected a finite number, got '%.40s'", in,
                                r0 + i + 2, ft->column, v);
                        goto fail;
                    }
                    dsp[nd] = &ds[nd];
                    nd++;
                    continue;
                }
                if (f == pl.alias_ad && !strchr(v, '|')) {
                    cd->ad_id = v;
                    continue;
                }
                rankd__v1__sparse_feature__init(&sp[ns]);
                sp[ns].name = (char *)ft->name;
                size_t inst = rb.n_sp_inst++;
                rb.sp_start[inst] = rb.n_pool;
                if (split_values(v, &rb.pool, &rb.n_pool, &rb.cap_pool)) goto oom;
                spp[ns] = &sp[ns];
                ns++;
            }
            cd->n_sparse = (size_t)ns;
            cd->sparse = spp;
            cd->n_dense = (size_t)nd;
            cd->dense = dsp;
        }
        /* pass 2: the pool no longer moves; point the value lists into it */
        rb.sp_start[rb.n_sp_inst] = rb.n_pool;
        for (int j = 0; j < nus; j++) {
            size_t inst = usp_inst[j];
            rb.usp[j].values = rb.pool + rb.sp_start[inst];
            rb.usp[j].n_values = rb.sp_start[inst + 1] - rb.sp_start[inst];
        }
        if (hist_inst != (size_t)-1) {
            rb.user.recent_item_ids = rb.pool + rb.sp_start[hist_inst];
            rb.user.n_recent_item_ids = rb.sp_start[hist_inst + 1] - rb.sp_start[hist_inst];
        }
        for (size_t i = 0, inst = first_cand_inst; i < k; i++) {
            Rankd__V1__Candidate *cd = &rb.cand[i];
            for (size_t j = 0; j < cd->n_sparse; j++, inst++) {
                cd->sparse[j]->values = rb.pool + rb.sp_start[inst];
                cd->sparse[j]->n_values = rb.sp_start[inst + 1] - rb.sp_start[inst];
            }
        }

        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        if (rk_client_rank(cl, req, (int)deadline_ms, &res, &resp, &e)) goto fail;
        lat[sent++] = res.seconds;
        if (res.code != 0) {
            fprintf(stderr, "rank query: error: request %zu (rows %zu..%zu): %s: %s\n", g, r0 + 2,
                    r1 + 1, grpc_code_name(res.code), res.msg);
            goto done;
        }
        if (resp->n_scores != k) {
            fprintf(stderr, "rank query: error: request %zu: %zu scores for %zu candidates\n", g,
                    resp->n_scores, k);
            rk_client_free_response(resp);
            goto done;
        }
        for (size_t i = 0; i < k; i++) pctr[r0 + i] = resp->scores[i]->pctr;
        scored_rows = r1;
        rk_client_free_response(resp);
    }
    double el = rk_now() - t_start;

    {
        char *text = NULL;
        size_t tlen = 0;
        FILE *o = open_memstream(&text, &tlen);
        if (!o) {
            rk_fail(&e, RK_ENOMEM, "%s: out of memory", out);
            goto fail;
        }
        fprintf(o, "pctr\n");
        for (size_t i = 0; i < scored_rows; i++) fprintf(o, "%.9g\n", pctr[i]);
        int bad = fclose(o) != 0 ? rk_fail(&e, RK_ENOMEM, "%s: out of memory", out)
                                 : rk_write_file_atomic(out, text, tlen, &e);
        free(text);
        if (bad) goto fail;
    }
    qsort(lat, sent, sizeof *lat, cmp_double);
    double p50 = sent ? lat[(sent - 1) / 2] : 0, p99 = sent ? lat[(size_t)((sent - 1) * 0.99)] : 0;
    double mx = sent ? lat[sent - 1] : 0;
    printf("rank query: requests=%zu rows=%zu seconds=%.3f requests_per_s=%.0f rows_per_s=%.0f "
           "latency_ms p50=%.3f p99=%.3f max=%.3f -> %s\n",
           sent, scored_rows, el, el > 0 ? sent / el : 0, el > 0 ? scored_rows / el : 0, p50 * 1e3,
           p99 * 1e3, mx * 1e3, out);
    rc = 0;
    goto done;
oom:
    rk_fail(&e, RK_ENOMEM, "out of memory");
fail:
    fprintf(stderr, "rank query: error: %s\n", e.msg);
    rc = 1;
done:
    rk_client_destroy(cl);
    rk_free(cells);
    rk_free(rowv);
    rk_free(group_end);
    rk_free(pctr);
    rk_free(lat);
    rk_free(rb.cand);
    rk_free(rb.cand_p);
    rk_free(rb.csp);
    rk_free(rb.csp_p);
    rk_free(rb.cds);
    rk_free(rb.cds_p);
    rk_free(rb.sp_start);
    rk_free(rb.usp);
    rk_free(rb.usp_p);
    rk_free(rb.uds);
    rk_free(rb.uds_p);
    rk_free(rb.usp_inst);
    rk_free(rb.pool);
    rk_free(fields);
    rk_free(pl.col);
    rk_strmap_destroy(hdr_map);
    rk_free(buf);
    if (have_cfg) rk_model_cfg_free(&mcfg);
    rk_free(mtext);
    return rc;
}
