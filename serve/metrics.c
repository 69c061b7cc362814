/*
 * serve/metrics.c — rankd's live counters and their Prometheus text endpoint.
 *
 * Hot path: every Rank worker owns one stripe (rk_wstats, cache-line
 * aligned) per served model version and is the only thread that writes it;
 * it adds with a relaxed load + relaxed store (no locked instruction, no
 * shared cache line). The scraper sums the stripes with relaxed loads, so a
 * scrape never blocks a worker and a worker never waits for a scrape. A
 * counter read mid-request may lag by that request, never tear (64-bit
 * aligned atomics).
 *
 * Versions: rk_live_version() registers a record {model, version,
 * stripes}; a retired version's record stays (its series keep their last
 * values) for the RK_KEEP_RETIRED newest retired versions, older ones are
 * folded into server-wide totals and freed. A record is only freed once its
 * version is destroyed, so no worker writes into it any more. The record keeps a
 * pointer to the live model for the store's cache counters; the server
 * detaches it (rk_live_version_detach) before the model is destroyed,
 * under the registry mutex the scraper also takes, and the last values are
 * kept.
 *
 * HTTP: libmicrohttpd, one internal polling thread, GET /metrics only
 * (text format 0.0.4). The body is built per scrape in a growing buffer (an
 * operations path: it allocates).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "internal.h"

#define RK_KEEP_RETIRED 8 /* retired versions whose series stay on the page */

/* Upper bounds of the latency buckets, seconds (+Inf implied). */
static const double bucket_le[RK_HIST_BUCKETS] = {5e-5,   1e-4,  2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
                                                  2.5e-2, 5e-2,  0.1,    0.25, 0.5,  1.0,    2.5};
static const char *stage_name[RK_N_STAGES] = {"queue", "decode", "lookup", "model", "encode", "total"};
/* grpc_status_code names, 0..16 */
static const char *code_name[RK_N_CODES] = {
    "OK",        "CANCELLED",          "UNKNOWN",         "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",       "UNIMPLEMENTED",   "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};


const char *rk_version_string(void) { return RK_VERSION_STRING; }

/* ---------------------------------------------------------------- stripes */

static uint64_t ld(const atomic_ullong *a) { return atomic_load_explicit(a, memory_order_relaxed); }

/* Sums of one version's stripes. */
typedef struct {
    uint64_t codes[RK_N_CODES], candidates, sid_unknown, sid_assigned, update_rows, update_calls;
    uint64_t embsum[3];
    uint64_t hist[RK_N_STAGES][RK_HIST_BUCKETS + 1], sum_ns[RK_N_STAGES];
} vsum;

static void sum_version(const rk_vstats *v, vsum *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < v->n; i++) {
        const rk_wstats *w = &v->w[i];
        for (int k = 0; k < RK_N_CODES; k++) s->codes[k] += ld(&w->codes[k]);
        s->candidates += ld(&w->candidates);
        s->sid_unknown += ld(&w->sid_unknown);
        s->sid_assigned += ld(&w->sid_assigned);
        for (int k = 0; k < 3; k++) s->embsum[k] += ld(&w->embsum[k]);
        s->update_rows += ld(&w->update_rows);
        s->update_calls += ld(&w->update_calls);
        for (int st = 0; st < RK_N_STAGES; st++) {
            s->sum_ns[st] += ld(&w->sum_ns[st]);
            for (int b = 0; b <= RK_HIST_BUCKETS; b++) s->hist[st][b] += ld(&w->hist[st][b]);
        }
    }
}

struct rk_live {
    int n_stripes;
    pthread_mutex_t mu;       /* the version list and detaching */
    rk_vstats *versions;      /* newest first */
    rk_server_gauges *g;      /* owned by the caller (the server) */
    struct MHD_Daemon *httpd;
    atomic_ullong scrapes;
    vsum retired;             /* sums of the records dropped (beyond RK_KEEP_RETIRED) */
};

int rk_live_bucket(double seconds) {
    int b = 0;
    while (b < RK_HIST_BUCKETS && seconds > bucket_le[b]) b++;
    return b;
}

rk_status rk_live_create(int n_stripes, rk_server_gauges *g, rk_live **out, rk_err *err) {
    rk_live *m = rk_calloc(1, sizeof *m);
    if (!m) return rk_fail(err, RK_ENOMEM, "metrics: out of memory");
    m->n_stripes = n_stripes;
    m->g = g;
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return RK_OK;
}

rk_vstats *rk_live_version(rk_live *m, const char *name, const char *version, const rk_model *model,
                           rk_err *err) {
    rk_vstats *v = rk_calloc(1, sizeof *v);
    /* stripes on their own cache lines: one spare line to align the start */
    void *base = v ? rk_calloc(1, (size_t)m->n_stripes * sizeof(rk_wstats) + 64) : NULL;
    if (!base) {
        rk_free(v);
        rk_fail(err, RK_ENOMEM, "metrics: out of memory");
        return NULL;
    }
    rk_wstats *w = (rk_wstats *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    v->base = base;
    snprintf(v->model, sizeof v->model, "%s", name);
    snprintf(v->version, sizeof v->version, "%s", version);
    v->w = w;
    v->n = m->n_stripes;
    v->live = model;
    pthread_mutex_lock(&m->mu);
    v->next = m->versions;
    m->versions = v;
    pthread_mutex_unlock(&m->mu);
    return v;
}

/* Add s into acc. */
static void vsum_add(vsum *acc, const vsum *s) {
    const uint64_t *x = (const uint64_t *)s;
    uint64_t *y = (uint64_t *)acc;
    for (size_t i = 0; i < sizeof *s / sizeof(uint64_t); i++) y[i] += x[i];
}

void rk_live_version_detach(rk_live *m, rk_vstats *v) {
    if (!m || !v) return;
    pthread_mutex_lock(&m->mu);
    if (v->live) rk_model_cache_stats(v->live, v->cache_final);
    v->live = NULL;
    /* Keep the RK_KEEP_RETIRED newest retired records; an older one (no
     * thread writes it any more: its version is destroyed) goes into the
     * totals, so a repository that publishes a version every few minutes
     * does not grow the registry and the page without bound. */
    int retired = 0;
    for (rk_vstats **p = &m->versions; *p;) {
        rk_vstats *x = *p;
        if (!x->live && ++retired > RK_KEEP_RETIRED) {
            vsum s;
            sum_version(x, &s);
            vsum_add(&m->retired, &s);
            *p = x->next;
            rk_free(x->base);
            rk_free(x);
        } else {
            p = &x->next;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---------------------------------------------------------------- text */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap : 16384;
        while (nc < b->len + (size_t)n + 1) nc *= 2;
        char *np = rk_realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
}

/* A label value with \, " and newline escaped (text format 0.0.4). */
static void escape_label(char *dst, size_t cap, const char *s) {
    size_t j = 0;
    for (; *s && j + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') dst[j++] = '\\', dst[j++] = *s;
        else if (*s == '\n') dst[j++] = '\\', dst[j++] = 'n';
        else dst[j++] = *s;
    }
    dst[j] = 0;
}

static void help(sbuf *b, const char *name, const char *type, const char *text) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

static void render_versions(rk_live *m, sbuf *b) {
    /* one pass per family, as the text format wants each family's samples together */
    enum { F_REQ, F_CAND, F_SID, F_EMBSUM, F_UPD_ROWS, F_UPD_CALLS, F_CACHE, F_HIST, F_NF };
    static const char *fam[F_NF][3] = {
        {"rankd_requests_total", "counter", "Rank calls answered by a worker, by gRPC status code"},
        {"rankd_candidates_scored_total", "counter", "candidates scored in Rank calls answered OK"},
        {"rankd_semantic_id_fallbacks_total", "counter",
         "semantic-ID ads not in the item records: kind=default (no content, scored with the empty bag), "
         "kind=assigned (codes assigned at request time)"},
        {"rankd_embsum_fallbacks_total", "counter",
         "EmbSum models: reason=upe_recent (unknown user, UPE from recent_item_ids), upe_default (unknown user, "
         "the default UPE), cpe_from_text (unknown ad, CPE from content_text)"},
        {"rankd_updates_applied_rows_total", "counter", "embedding rows written through Admin/ApplyUpdates"},
        {"rankd_update_calls_total", "counter", "Admin/ApplyUpdates calls answered OK"},
        {"rankd_store_cache_total", "counter",
         "embedding store RAM row cache events over all tables (event=hit|miss|eviction)"},
        {"rankd_request_duration_seconds", "histogram",
         "Rank calls answered OK: time per stage (queue, decode, lookup, model, encode) and in all (total), "
         "seconds"}};
    pthread_mutex_lock(&m->mu);
    for (int f = 0; f < F_NF; f++) {
        help(b, fam[f][0], fam[f][1], fam[f][2]);
        for (rk_vstats *v = m->versions; v; v = v->next) {
            char mo[256], ve[256], lab[600];
            escape_label(mo, sizeof mo, v->model);
            escape_label(ve, sizeof ve, v->version);
            snprintf(lab, sizeof lab, "model=\"%s\",version=\"%s\"", mo, ve);
            vsum s;
            sum_version(v, &s);
            const char *n = fam[f][0];
            switch (f) {
            case F_REQ:
                for (int k = 0; k < RK_N_CODES; k++)
                    if (s.codes[k] || k == 0)
                        sb_printf(b, "%s{%s,code=\"%s\"} %llu\n", n, lab, code_name[k],
                                  (unsigned long long)s.codes[k]);
                break;
            case F_CAND: sb_printf(b, "%s{%s} %llu\n", n, lab, (unsigned long long)s.candidates); break;
            case F_SID:
                sb_printf(b, "%s{%s,kind=\"default\"} %llu\n", n, lab, (unsigned long long)s.sid_unknown);
                sb_printf(b, "%s{%s,kind=\"assigned\"} %llu\n", n, lab, (unsigned long long)s.sid_assigned);
                break;
            case F_EMBSUM: {
                static const char *const why[3] = {"upe_recent", "upe_default", "cpe_from_text"};
                for (int k = 0; k < 3; k++)
                    sb_printf(b, "%s{%s,reason=\"%s\"} %llu\n", n, lab, why[k], (unsigned long long)s.embsum[k]);
                break;
            }
            case F_UPD_ROWS: sb_printf(b, "%s{%s} %llu\n", n, lab, (unsigned long long)s.update_rows); break;
            case F_UPD_CALLS: sb_printf(b, "%s{%s} %llu\n", n, lab, (unsigned long long)s.update_calls); break;
            case F_CACHE: {
                uint64_t c[3];
                if (v->live) rk_model_cache_stats(v->live, c);
                else memcpy(c, v->cache_final, sizeof c);
                static const char *ev[3] = {"hit", "miss", "eviction"};
                for (int k = 0; k < 3; k++)
                    sb_printf(b, "%s{%s,event=\"%s\"} %llu\n", n, lab, ev[k], (unsigned long long)c[k]);
                break;
            }
            default:
                for (int st = 0; st < RK_N_STAGES; st++) {
                    uint64_t cum = 0;
                    for (int k = 0; k <= RK_HIST_BUCKETS; k++) {
                        cum += s.hist[st][k];
                        if (k < RK_HIST_BUCKETS)
                            sb_printf(b, "%s_bucket{%s,stage=\"%s\",le=\"%g\"} %llu\n", n, lab, stage_name[st],
                                      bucket_le[k], (unsigned long long)cum);
                        else
                            sb_printf(b, "%s_bucket{%s,stage=\"%s\",le=\"+Inf\"} %llu\n", n, lab, stage_name[st],
                                      (unsigned long long)cum);
                    }
                    sb_printf(b, "%s_sum{%s,stage=\"%s\"} %.9f\n", n, lab, stage_name[st], s.sum_ns[st] * 1e-9);
                    sb_printf(b, "%s_count{%s,stage=\"%s\"} %llu\n", n, lab, stage_name[st],
                              (unsigned long long)cum);
                }
            }
        }
        if (f == F_REQ)
            for (int k = 0; k < RK_N_CODES; k++)
                if (ld(&m->g->unrouted[k]))
                    sb_printf(b, "rankd_requests_total{model=\"\",version=\"\",code=\"%s\"} %llu\n",
                              code_name[k], (unsigned long long)ld(&m->g->unrouted[k]));
    }
    help(b, "rankd_model_serving", "gauge", "1 for each model version taking traffic now, 0 once retired");
    for (rk_vstats *v = m->versions; v; v = v->next) {
        char mo[256], ve[256];
        escape_label(mo, sizeof mo, v->model);
        escape_label(ve, sizeof ve, v->version);
        sb_printf(b, "rankd_model_serving{model=\"%s\",version=\"%s\"} %d\n", mo, ve,
                  atomic_load_explicit(&v->serving, memory_order_relaxed));
    }
    pthread_mutex_unlock(&m->mu);
}

static void render_server(rk_live *m, sbuf *b) {
    rk_server_gauges *g = m->g;
    int busy = 0;
    for (int i = 0; i < g->n_workers; i++) busy += atomic_load_explicit(&g->busy[i].v, memory_order_relaxed);
    help(b, "rankd_queue_depth", "gauge", "accepted calls waiting for a worker");
    sb_printf(b, "rankd_queue_depth %d\n", atomic_load_explicit(&g->queue_len, memory_order_relaxed));
    help(b, "rankd_queue_capacity", "gauge", "queue depth limit (--queue-depth)");
    sb_printf(b, "rankd_queue_capacity %d\n", g->queue_cap);
    help(b, "rankd_workers_busy", "gauge", "workers handling a call now");
    sb_printf(b, "rankd_workers_busy %d\n", busy);
    help(b, "rankd_workers", "gauge", "worker threads (--threads)");
    sb_printf(b, "rankd_workers %d\n", g->n_workers);
    help(b, "rankd_overload_rejected_total", "counter",
         "Rank calls answered RESOURCE_EXHAUSTED at once because the queue was full");
    sb_printf(b, "rankd_overload_rejected_total %llu\n", (unsigned long long)ld(&g->rejected));
    help(b, "rankd_unimplemented_total", "counter", "calls to methods rankd does not serve");
    sb_printf(b, "rankd_unimplemented_total %llu\n", (unsigned long long)ld(&g->unimplemented));
    help(b, "rankd_health_checks_total", "counter", "grpc.health.v1.Health/Check calls");
    sb_printf(b, "rankd_health_checks_total %llu\n", (unsigned long long)ld(&g->health));
    help(b, "rankd_reloads_total", "counter",
         "model reloads by outcome (ok: switched; unchanged: same bundle; failed: refused, old version serves)");
    static const char *oc[3] = {"ok", "unchanged", "failed"};
    for (int k = 0; k < 3; k++)
        sb_printf(b, "rankd_reloads_total{outcome=\"%s\"} %llu\n", oc[k], (unsigned long long)ld(&g->reloads[k]));
    help(b, "rankd_admin_denied_total", "counter", "Admin calls refused: unauthenticated or not allowed");
    sb_printf(b, "rankd_admin_denied_total %llu\n", (unsigned long long)ld(&g->admin_denied));
    help(b, "rankd_metrics_scrapes_total", "counter", "scrapes of this endpoint");
    sb_printf(b, "rankd_metrics_scrapes_total %llu\n", (unsigned long long)ld(&m->scrapes));
    help(b, "rankd_build_info", "gauge", "build: rankd version, gRPC core version");
    sb_printf(b, "rankd_build_info{version=\"%s\",grpc=\"%s\"} 1\n", RK_VERSION_STRING, g->grpc_version);
}

char *rk_live_render(rk_live *m, size_t *len) {
    atomic_fetch_add_explicit(&m->scrapes, 1, memory_order_relaxed);
    sbuf b = {0};
    render_server(m, &b);
    render_versions(m, &b);
    if (b.oom) {
        rk_free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

void rk_live_totals(rk_live *m, rk_server_counters *out) {
    memset(out, 0, sizeof *out);
    double *dst[RK_ST_TOTAL] = {&out->queue_us, &out->decode_us, &out->lookup_us, &out->model_us, &out->encode_us};
    pthread_mutex_lock(&m->mu);
    for (rk_vstats *v = m->versions;; v = v->next) {
        vsum s;
        if (v) sum_version(v, &s);
        else s = m->retired;
        out->rank_ok += s.codes[0];
        for (int k = 1; k < RK_N_CODES; k++) out->rank_failed += s.codes[k];
        out->rank_expired += s.codes[4]; /* DEADLINE_EXCEEDED */
        out->sid_unknown += s.sid_unknown;
        out->sid_assigned += s.sid_assigned;
        for (int st = 0; st < RK_ST_TOTAL; st++) *dst[st] += s.sum_ns[st] * 1e-3;
        if (!v) break;
    }
    pthread_mutex_unlock(&m->mu);
    for (int k = 0; k < RK_N_CODES; k++) {
        uint64_t u = ld(&m->g->unrouted[k]);
        if (k == 0) out->rank_ok += u;
        else out->rank_failed += u;
        if (k == 4) out->rank_expired += u;
    }
}

/* ---------------------------------------------------------------- HTTP */

static void free_body(void *p) { rk_free(p); }

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_len, void **state) {
    (void)version, (void)upload, (void)upload_len, (void)state;
    rk_live *m = cls;
    struct MHD_Response *r;
    unsigned code = MHD_HTTP_OK;
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        static const char msg[] = "only GET /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics")) {
        static const char msg[] = "not found: rankd serves /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len = 0;
        char *body = rk_live_render(m, &len);
        if (!body) {
            static const char msg[] = "out of memory\n";
            r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
            code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        } else {
            r = MHD_create_response_from_buffer_with_free_callback(len, body, free_body);
            if (r) MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            else rk_free(body);
        }
    }
    if (!r) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* libmicrohttpd's own messages (mostly a client's doing: a connection
 * closed mid-request, the limit reached) through rankd's log, at debug:
 * one per connection would flood the log, and raw stderr lines would
 * break --log-json. */
static void on_httpd_message(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (!rk_log_enabled(RK_LOG_DEBUG)) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    rk_debug("metrics http: %s", msg);
}

/* Connections: a scraper needs one; MHD_CONNECTIONS in all, MHD_PER_IP from
 * one address, an idle one closed after MHD_IDLE_S, so a client holding
 * connections open does not shut the scrapers out. */
#define MHD_CONNECTIONS 64u
#define MHD_PER_IP 8u
#define MHD_IDLE_S 5u

rk_status rk_live_listen(rk_live *m, const char *hostport, int *bound_port, rk_err *err) {
    char host[256];
    const char *colon = strrchr(hostport, ':');
    /* a decimal port in 0..65535: getaddrinfo would take 99999 modulo 65536 */
    int ok = colon && colon != hostport && (size_t)(colon - hostport) < sizeof host && colon[1] && strlen(colon) <= 6;
    for (const char *q = ok ? colon + 1 : ""; *q; q++) ok = ok && *q >= '0' && *q <= '9';
    if (!ok || atol(colon + 1) > 65535)
        return rk_fail(err, RK_EINVAL, "metrics-listen '%s': expected HOST:PORT with a port in 0..65535", hostport);
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:9090 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai))
        return rk_fail(err, RK_EINVAL, "metrics-listen '%s': cannot resolve the host or port", hostport);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    m->httpd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                MHD_OPTION_EXTERNAL_LOGGER, on_httpd_message, NULL,
                                MHD_OPTION_CONNECTION_LIMIT, MHD_CONNECTIONS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                MHD_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, MHD_IDLE_S, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!m->httpd) return rk_fail(err, RK_EIO, "cannot listen for metrics on %s: address in use or invalid", hostport);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    if (bound_port) *bound_port = di ? di->port : 0;
    return RK_OK;
}

void rk_live_destroy(rk_live *m) {
    if (!m) return;
    if (m->httpd) MHD_stop_daemon(m->httpd);
    for (rk_vstats *v = m->versions, *n; v; v = n) {
        n = v->next;
        rk_free(v->base);
        rk_free(v);
    }
    pthread_mutex_destroy(&m->mu);
    rk_free(m);
}
