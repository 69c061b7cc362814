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
 * real ad server exercises. Rows are read and requests built by serve/rows.c
 * (rk_req_rows_read, rk_req_build), as rank-bench and the tests build theirs.
 *
 * Output: header "pctr", then one %.9g pCTR per scored input row, in input
 * order, as `rank score` writes it. Calls are sequential on one channel; the
 * summary line gives requests/s and call latency percentiles.
 */
#include <getopt.h>
#include <limits.h>
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

/* Rows a and b agree on every user-side value. */
static int same_user(const rk_req_rows *t, const rk_model_cfg *cfg, size_t a, size_t b) {
    for (int f = 0; f < cfg->n_features; f++) {
        if (cfg->features[f].side != RK_SIDE_USER) continue;
        size_t na, nb;
        char *const *va = rk_req_rows_values(t, a, f, &na), *const *vb = rk_req_rows_values(t, b, f, &nb);
        if (na != nb) return 0;
        for (size_t i = 0; i < na; i++)
            if (strcmp(va[i], vb[i])) return 0;
    }
    return 1;
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
    rk_req_rows *t = NULL;
    float *pctr = NULL;
    double *lat = NULL;
    size_t *group_end = NULL, *idx = NULL;
    rk_client *cl = NULL;
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
    const rk_model_cfg *cfg = &mcfg;
    if (rk_req_rows_read(in, cfg, &t, &e)) goto fail;
    n_rows = rk_req_rows_count(t);
    /* Groups: a new request when any user-side value changes or it is full. */
    group_end = rk_malloc(n_rows * sizeof *group_end);
    idx = rk_malloc((size_t)n_cand * sizeof *idx);
    pctr = rk_malloc(n_rows * sizeof *pctr);
    lat = rk_malloc((n_rows + 1) * sizeof *lat);
    if (!group_end || !idx || !pctr || !lat) goto oom;
    for (size_t r = 0, first = 0; r < n_rows; r++) {
        if (r > first && ((long)(r - first) >= n_cand || !same_user(t, cfg, r, first))) {
            group_end[n_groups++] = r;
            first = r;
        }
        if (r == n_rows - 1) group_end[n_groups++] = n_rows;
    }
    if (max_requests > 0 && (size_t)max_requests < n_groups) n_groups = (size_t)max_requests;
    if (rk_client_create(addr, &cl, &e)) goto fail;

    double t_start = rk_now();
    for (size_t g = 0, r0 = 0; g < n_groups; r0 = group_end[g], g++) {
        size_t r1 = group_end[g], k = r1 - r0;
        for (size_t i = 0; i < k; i++) idx[i] = r0 + i;
        char reqid[32];
        snprintf(reqid, sizeof reqid, "q%zu", g);
        /* the bundle's model name unless --model-name: a rankd serving another
         * model answers NOT_FOUND */
        rk_req_opts ro = {.request_id = reqid, .model_name = model_name ? model_name : cfg->name};
        Rankd__V1__RankRequest *req = rk_req_build(t, idx, k, &ro);
        if (!req) goto oom;
        rk_call_result res;
        Rankd__V1__RankResponse *resp = NULL;
        rk_status st = rk_client_rank(cl, req, (int)deadline_ms, &res, &resp, &e);
        rk_free(req);
        if (st) goto fail;
        lat[sent++] = res.seconds;
        if (res.code != 0) {
            fprintf(stderr, "rank query: error: request %zu (rows %ld..%ld): %s: %s\n", g, rk_req_rows_line(t, r0),
                    rk_req_rows_line(t, r1 - 1), grpc_code_name(res.code), res.msg);
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
    rk_free(group_end);
    rk_free(idx);
    rk_free(pctr);
    rk_free(lat);
    rk_req_rows_destroy(t);
    if (have_cfg) rk_model_cfg_free(&mcfg);
    rk_free(mtext);
    return rc;
}
