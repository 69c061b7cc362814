/*
 * bench/rank_bench.c — rank-bench, the load tester for rankd (and for any
 * server of rankd.v1.Ranker/Rank), on the gRPC C core API.
 *
 *   rank-bench --addr 127.0.0.1:PORT --model BUNDLE --data test.tsv
 *              [--candidates 200] [--rate 1000 | --closed --streams 8] ...
 *
 * Requests are built once, before the clock starts, from real rows: the
 * TSV (the MovieLens test split) is grouped by user (the model's user-id
 * alias, in order of first appearance); each user's rows are cut into
 * requests of --candidates rows, in file order. A request's user-side
 * features come from its first row (that event's hour, weekday and
 * history); candidate i carries row i's item-side features. A request with
 * fewer rows than --candidates (a user with few test rows, the last piece
 * of a user) is padded with the item-side features of other test rows,
 * taken from a cursor that walks the whole split cyclically, so every
 * request has exactly --candidates candidates and the server does the same
 * work per request. Requests are sent in a fixed order, cycling through all
 * of them. Each is serialized once; sending it costs no encoding.
 *
 * Open loop (default): request k is due at its intended time t0 + k/rate
 * (--arrivals constant) or after exponential gaps of mean 1/rate (poisson,
 * seeded). A sender thread sleeps until each intended time and starts the
 * call; at most --max-inflight calls are outstanding (a connection-limited
 * client, like wrk2's -c); a sender that has to wait for a slot falls
 * behind its schedule. Two latencies are recorded per call:
 *   corrected   = completion - intended send time (wrk2's coordinated-
 *                 omission correction: a stalled server shows up in every
 *                 request it delayed, including those not yet sent);
 *   uncorrected = completion - actual send time (what a tester without the
 *                 correction reports: a stall shows up in one request).
 * Closed loop (--closed): --streams calls are kept outstanding; each
 * completion starts the next call at once; latency is from the send (both
 * figures are the same there).
 *
 * Calls due (open) or sent (closed) during --warmup seconds are excluded
 * from every figure. Only calls answered OK enter the latency histograms;
 * other answers are counted by gRPC status code. Latencies go to log-linear
 * histograms with 3 significant digits (bench/hdr.h).
 *
 * Reports: a text summary (stdout), --json FILE, a per-second timeline
 * (offered, completed, errors, p50/p99/max of that second), and a stability
 * check after perf_analyzer: the measured seconds are cut into windows of
 * --window seconds; the run is stable when the last three windows have
 * throughput and mean latency within ±10% of their mean. A progress line is
 * printed on stderr once a second (--quiet: off).
 *
 * --timing asks the server for its per-stage timing (RankRequest.
 * return_timing) and reports decode/lookup/model/encode/total.
 *
 * --inprocess scores the same requests without gRPC or protobuf, through
 * rk_scorer in this process (one thread): the in-process baseline that
 * rankd's throughput is compared with.
 *
 * A run is bounded by --duration (seconds after the warm-up) and --requests
 * (measured requests, 0 = no limit); it talks to the one address it is given,
 * which must be a loopback address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <math.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>

#include "hdr.h"
#include "inprocess.h"
#include "rank.h"
#include "rank.pb-c.h"
#include "serve.h"

#define HIST_MAX_NS ((int64_t)100 * 1000000000) /* 100 s */
#define N_CODES 17

static const char *const code_names[N_CODES] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED"};

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until_ns(int64_t t) {
    struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ------------------------------------------------------------ options */

typedef struct {
    const char *addr, *model, *config, *data, *json;
    int candidates;
    int closed, streams, max_inflight;
    double rate;
    int poisson;
    double duration, warmup, window;
    long requests;
    int deadline_ms;
    int timing, quiet, inprocess;
    uint64_t seed;
    int max_distinct;
    int ram_tables_mb;
    const char *latency_log; /* one line per measured call (gRPC load only) */
} opts;

static void usage(FILE *o) {
    fprintf(o,
            "usage: rank-bench --addr HOST:PORT (--model BUNDLE | --config FILE) --data FILE.tsv [options]\n"
            "       rank-bench --inprocess --model BUNDLE --data FILE.tsv [options]\n"
            "Load-tests a rankd.v1.Ranker/Rank server with requests built from real rows:\n"
            "the TSV's rows grouped by user, --candidates per request (short requests are\n"
            "padded with other rows' item features), cycling through all requests.\n"
            "\n"
            "  --addr HOST:PORT     the server (loopback addresses only); a list of replicas\n"
            "                       (ipv4:127.0.0.1:P1,127.0.0.1:P2) is balanced round-robin\n"
            "  --model BUNDLE       read the feature list from BUNDLE/model.json\n"
            "  --config FILE        ... or from a model config (configs/*.json)\n"
            "  --data FILE.tsv      rows to build requests from (e.g. the MovieLens test split)\n"
            "  --candidates N       candidates per request (default 200)\n"
            "  --max-distinct N     at most N distinct requests (default 4096)\n"
            "open loop (default):\n"
            "  --rate QPS           planned request rate (default 100)\n"
            "  --arrivals KIND      constant (default) or poisson\n"
            "  --max-inflight N     outstanding calls at most (default 256); a sender\n"
            "                       waiting for a slot falls behind its schedule\n"
            "closed loop:\n"
            "  --closed             keep --streams calls outstanding, back to back\n"
            "  --streams N          concurrent calls (default 8)\n"
            "bounds and reports:\n"
            "  --duration S         measured seconds after the warm-up (default 10)\n"
            "  --warmup S           seconds excluded from the figures (default 2)\n"
            "  --requests N         stop after N measured requests (default 0: no limit)\n"
            "  --deadline-ms N      per-call deadline (default 1000)\n"
            "  --window S           stability window, seconds (default 2)\n"
            "  --timing             ask the server for per-stage timing and report it\n"
            "  --seed N             seed of the Poisson arrivals (default 1)\n"
            "  --json FILE          write every figure as JSON\n"
            "  --latency-log FILE   one line per measured call: intended send time (Unix s),\n"
            "                       latency from it (ms), gRPC status code\n"
            "  --quiet              no progress line\n"
            "  --version            print the version and exit\n"
            "  --inprocess          no server: score the same requests in this process\n"
            "                       through rk_scorer (needs --model), the overhead baseline\n"
            "  --ram-tables-mb N    --inprocess: tables in RAM when they fit in N MiB, as\n"
            "                       rankd does (default 512; 0: read RocksDB)\n"
            "Latency is reported twice in open loop: corrected (from each request's\n"
            "intended send time, wrk2-style) and uncorrected (from the actual send).\n");
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    rk_err e = {0};
    if (rk_parse_double(opt, s, lo, hi, out, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* Integer options: "2.5" is refused, not truncated. */
static int parse_count(const char *opt, const char *s, long long lo, long long hi, long long *out) {
    rk_err e = {0};
    if (rk_parse_int(opt, s, lo, hi, out, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* Loopback only. Every address the target can lead to is checked, since
 * gRPC moves on to the next address of a list and a name may resolve
 * anywhere: "ipv4:A,B" / "ipv6:[A]:p,[B]:p" (each numeric, in 127.0.0.0/8
 * or ::1), "dns:[//authority/]HOST:PORT" or plain "HOST:PORT" (every address
 * HOST resolves to, by getaddrinfo), "unix:" / "unix-abstract:" (local).
 * 0 with why[] filled when not. */
static int sockaddr_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a)) return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

/* hostport: "HOST:PORT" or "[V6]:PORT"; numeric: no name resolution. */
static int host_loopback(const char *hostport, size_t len, int numeric, char *why, size_t cap) {
    char host[256];
    const char *end = hostport + len, *h = hostport, *he;
    if (len && *h == '[') {
        he = memchr(h, ']', len);
        h++;
    } else {
        he = NULL;
        for (const char *q = hostport; q < end; q++)
            if (*q == ':') he = q; /* the last ':' splits off the port */
    }
    if (!he || he <= h || (size_t)(he - h) >= sizeof host) {
        snprintf(why, cap, "'%.*s' is not HOST:PORT", (int)len, hostport);
        return 0;
    }
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = numeric ? AI_NUMERICHOST : 0;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc) {
        snprintf(why, cap, "'%s' does not resolve%s (%s)", host, numeric ? " as a numeric address" : "",
                 gai_strerror(rc));
        return 0;
    }
    int ok = 1;
    for (struct addrinfo *ai = res; ai && ok; ai = ai->ai_next)
        if (!sockaddr_loopback(ai->ai_addr)) {
            char a[INET6_ADDRSTRLEN] = "?";
            const void *in = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                                      : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            inet_ntop(ai->ai_family, in, a, sizeof a);
            snprintf(why, cap, "'%s' resolves to %s, not a loopback address", host, a);
            ok = 0;
        }
    freeaddrinfo(res);
    return ok;
}

static int is_loopback(const char *target, char *why, size_t cap) {
    if (!strncmp(target, "unix:", 5) || !strncmp(target, "unix-abstract:", 14)) return 1;
    int list = !strncmp(target, "ipv4:", 5) || !strncmp(target, "ipv6:", 5);
    const char *a = target;
    if (list) {
        a += 5;
    } else if (!strncmp(a, "dns:", 4)) {
        a += 4;
        if (!strncmp(a, "//", 2)) { /* dns://AUTHORITY/HOST:PORT (authority may be empty) */
            const char *sl = strchr(a + 2, '/');
            if (!sl) {
                snprintf(why, cap, "'%s' has no host after the authority", target);
                return 0;
            }
            a = sl + 1;
        }
    }
    for (;;) { /* a list (ipv4:/ipv6:) or one HOST:PORT */
        size_t n = list ? strcspn(a, ",") : strlen(a);
        if (!host_loopback(a, n, list, why, cap)) return 0;
        if (!list || !a[n]) return 1;
        a += n + 1;
    }
}

/* ------------------------------------------------------------ requests from rows */

typedef struct {
    uint8_t *bytes;
    size_t len;
    Rankd__V1__RankRequest *msg; /* kept for --inprocess (unpacked copy) */
} request;

typedef struct {
    rk_model_cfg cfg;
    rk_req_rows *rows; /* the data file, read for cfg (serve/rows.c, as rank query reads it) */
    int n_rows;
    int user_col; /* feature that groups rows by user */
    int n_req;
    request *req;
    size_t total_bytes;
} workload;

static int load_cfg(const opts *o, rk_model_cfg *cfg) {
    char path[4096];
    if (o->model) snprintf(path, sizeof path, "%s/model.json", o->model);
    else snprintf(path, sizeof path, "%s", o->config);
    char *text;
    rk_err e = {0};
    if (rk_read_file(path, &text, NULL, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        return -1;
    }
    rk_status st = rk_model_cfg_parse(text, cfg, &e);
    rk_free(text);
    if (st) {
        fprintf(stderr, "rank-bench: %s: %s\n", path, e.msg);
        return -1;
    }
    return 0;
}

static int read_rows(const opts *o, workload *w) {
    const rk_model_cfg *cfg = &w->cfg;
    rk_err e = {0};
    if (rk_req_rows_read(o->data, cfg, &w->rows, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        return -1;
    }
    size_t n = rk_req_rows_count(w->rows);
    if (n > INT_MAX) {
        fprintf(stderr, "rank-bench: %s: %zu rows, at most %d\n", o->data, n, INT_MAX);
        return -1;
    }
    w->n_rows = (int)n;
    /* group by the user-id alias, else the first user-side sparse feature */
    w->user_col = cfg->alias_user_id[0] ? rk_model_cfg_find(cfg, cfg->alias_user_id) : -1;
    for (int f = 0; w->user_col < 0 && f < cfg->n_features; f++)
        if (cfg->features[f].side == RK_SIDE_USER && cfg->features[f].kind == RK_FEAT_SPARSE) w->user_col = f;
    if (w->user_col < 0) {
        fprintf(stderr, "rank-bench: the model has no user-side sparse feature to group rows by\n");
        return -1;
    }
    return 0;
}

/* Row r's grouping value (the first value of its user column). */
static const char *user_of(const workload *w, int r) {
    size_t n;
    return rk_req_rows_values(w->rows, (size_t)r, w->user_col, &n)[0];
}

static int cmp_user(const void *a, const void *b, void *arg) {
    const workload *w = arg;
    int ra = *(const int *)a, rb = *(const int *)b;
    int c = strcmp(user_of(w, ra), user_of(w, rb));
    return c ? c : (ra > rb) - (ra < rb);
}

/* Request k: the user of rows[0], candidates rows[0..n), packed into q. */
static int build_one(const workload *w, const int *rows, int n, int timing, int k, request *q) {
    size_t *idx = rk_malloc((size_t)n * sizeof *idx);
    if (!idx) return -1;
    for (int i = 0; i < n; i++) idx[i] = (size_t)rows[i];
    char id[32];
    snprintf(id, sizeof id, "bench-%d", k);
    rk_req_opts ro = {.request_id = id, .return_timing = timing};
    Rankd__V1__RankRequest *r = rk_req_build(w->rows, idx, (size_t)n, &ro);
    rk_free(idx);
    if (!r) return -1;
    q->len = rankd__v1__rank_request__get_packed_size(r);
    q->bytes = malloc(q->len ? q->len : 1);
    if (q->bytes) rankd__v1__rank_request__pack(r, q->bytes);
    rk_free(r);
    return q->bytes ? 0 : -1;
}

static int build_requests(const opts *o, workload *w) {
    const int N = o->candidates;
    int *order = malloc((size_t)w->n_rows * sizeof *order);
    int *rows = malloc((size_t)N * sizeof *rows);
    w->req = calloc((size_t)o->max_distinct, sizeof *w->req);
    if (!order || !rows || !w->req) return -1;
    for (int i = 0; i < w->n_rows; i++) order[i] = i;
    /* stable grouping by user; users then ordered by their first row */
    qsort_r(order, (size_t)w->n_rows, sizeof *order, cmp_user, w);
    typedef struct {
        int first, start, end;
    } grp;
    grp *g = malloc((size_t)w->n_rows * sizeof *g);
    int ng = 0;
    for (int i = 0; i < w->n_rows;) {
        int j = i + 1;
        while (j < w->n_rows && cmp_user(&order[i], &order[j], w) < 0 && !strcmp(user_of(w, order[i]), user_of(w, order[j])))
            j++;
        g[ng].first = order[i];
        g[ng].start = i;
        g[ng].end = j;
        ng++;
        i = j;
    }
    /* users in order of first appearance */
    for (int a = 1; a < ng; a++) {
        grp t = g[a];
        int b = a - 1;
        while (b >= 0 && g[b].first > t.first) {
            g[b + 1] = g[b];
            b--;
        }
        g[b + 1] = t;
    }
    int pad = 0, n_padded = 0;
    for (int gi = 0; gi < ng && w->n_req < o->max_distinct; gi++) {
        for (int s = g[gi].start; s < g[gi].end && w->n_req < o->max_distinct; s += N) {
            int n = g[gi].end - s < N ? g[gi].end - s : N;
            for (int i = 0; i < n; i++) rows[i] = order[s + i];
            if (n < N) n_padded++;
            for (int i = n; i < N; i++) {
                rows[i] = pad;
                pad = (pad + 1) % w->n_rows;
            }
            request *q = &w->req[w->n_req];
            if (build_one(w, rows, N, o->timing, w->n_req, q)) return -1;
            w->n_req++;
            w->total_bytes += q->len;
        }
    }
    if (o->inprocess) {
        for (int i = 0; i < w->n_req; i++) {
            w->req[i].msg = rankd__v1__rank_request__unpack(NULL, w->req[i].len, w->req[i].bytes);
            if (!w->req[i].msg) return -1;
        }
    }
    if (!o->quiet)
        fprintf(stderr,
                "rank-bench: %d rows, %d users -> %d requests of %d candidates (%d padded with other rows' "
                "items), %.1f KiB per request on average\n",
                w->n_rows, ng, w->n_req, N, n_padded, w->total_bytes / 1024.0 / (w->n_req ? w->n_req : 1));
    free(g);
    free(order);
    free(rows);
    return 0;
}

/* ------------------------------------------------------------ results */

typedef struct {
    rk_hdr hist; /* corrected, 2 digits */
    uint64_t offered, ok, err;
} second;

typedef struct {
    rk_hdr corrected, uncorrected;
    rk_hdr st[5]; /* server stages: decode, lookup, model, encode, total (us) */
    uint64_t timing_n;
    uint64_t codes[N_CODES + 1];
    uint64_t offered, completed, ok;
    int n_sec;
    second *sec;
    double measured_s;
    int64_t t0, t_meas0, t_meas1;
    uint64_t ok_total;  /* OK answers including the warm-up */
    double cpu_s;       /* this process's CPU time (user + system) during the run */
} results;

static const char *const stage_names[5] = {"decode", "lookup", "model", "encode", "total"};

static int results_init(results *r, int n_sec) {
    memset(r, 0, sizeof *r);
    if (rk_hdr_init(&r->corrected, HIST_MAX_NS, 3) || rk_hdr_init(&r->uncorrected, HIST_MAX_NS, 3)) return -1;
    for (int i = 0; i < 5; i++)
        if (rk_hdr_init(&r->st[i], 100000000, 3)) return -1;
    r->n_sec = n_sec;
    r->sec = calloc((size_t)n_sec, sizeof *r->sec);
    if (!r->sec) return -1;
    for (int i = 0; i < n_sec; i++)
        if (rk_hdr_init(&r->sec[i].hist, HIST_MAX_NS, 2)) return -1;
    return 0;
}

static void results_free(results *r) {
    rk_hdr_free(&r->corrected);
    rk_hdr_free(&r->uncorrected);
    for (int i = 0; i < 5; i++) rk_hdr_free(&r->st[i]);
    for (int i = 0; i < r->n_sec; i++) rk_hdr_free(&r->sec[i].hist);
    free(r->sec);
}

static int sec_of(const results *r, int64_t t) {
    int64_t s = (t - r->t0) / 1000000000;
    if (s < 0) s = 0;
    if (s >= r->n_sec) s = r->n_sec - 1;
    return (int)s;
}

/* ------------------------------------------------------------ gRPC load */

typedef struct call {
    struct call *next_free;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array im, tm;
    grpc_status_code status;
    grpc_slice details;
    const char *errstr;
    int64_t t_intended, t_sent;
} call;

typedef struct {
    const opts *o;
    workload *w;
    results *r;
    grpc_channel *ch;
    void *method;
    grpc_completion_queue *cq;
    call *calls;
    call *free_list;
    pthread_mutex_t mu;
    sem_t slots;
    atomic_long inflight;
    atomic_ullong sent, done, ok, err;
    atomic_int sending_done;
    long next_req; /* cycling index (sender thread / closed loop: receiver) */
    int64_t t_end; /* no call is started at or after this */
    long measured_started;
    int cq_shut;
    char first_error[256];
    FILE *lat_log;       /* --latency-log (receiver thread only) */
    double mono_to_unix; /* Unix seconds minus CLOCK_MONOTONIC seconds */
} loadgen;

static call *call_get(loadgen *g) {
    pthread_mutex_lock(&g->mu);
    call *c = g->free_list;
    if (c) g->free_list = c->next_free;
    pthread_mutex_unlock(&g->mu);
    return c;
}

static void call_put(loadgen *g, call *c) {
    pthread_mutex_lock(&g->mu);
    c->next_free = g->free_list;
    g->free_list = c;
    pthread_mutex_unlock(&g->mu);
}

static int start_call(loadgen *g, call *c, int64_t t_intended) {
    const request *q = &g->w->req[g->next_req];
    g->next_req = (g->next_req + 1) % g->w->n_req;
    c->t_intended = t_intended;
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                   gpr_time_from_millis(g->o->deadline_ms, GPR_TIMESPAN));
    c->call = grpc_channel_create_registered_call(g->ch, NULL, GRPC_PROPAGATE_DEFAULTS, g->cq, g->method,
                                                  dl, NULL);
    grpc_slice sl = grpc_slice_from_static_buffer(q->bytes, q->len);
    c->send = grpc_raw_byte_buffer_create(&sl, 1);
    c->recv = NULL;
    grpc_metadata_array_init(&c->im);
    grpc_metadata_array_init(&c->tm);
    c->status = GRPC_STATUS_UNKNOWN;
    c->details = grpc_empty_slice();
    c->errstr = NULL;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->tm;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    ops[5].data.recv_status_on_client.error_string = &c->errstr;
    atomic_fetch_add(&g->inflight, 1);
    c->t_sent = now_ns();
    atomic_fetch_add(&g->sent, 1);
    if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "rank-bench: grpc_call_start_batch failed\n");
        exit(1);
    }
    return 0;
}

static void read_timing(loadgen *g, call *c) {
    grpc_byte_buffer_reader rd;
    if (!c->recv || !grpc_byte_buffer_reader_init(&rd, c->recv)) return;
    grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    Rankd__V1__RankResponse *resp =
        rankd__v1__rank_response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!resp) return;
    if (resp->timing) {
        const Rankd__V1__Timing *t = resp->timing;
        uint32_t v[5] = {t->decode_us, t->lookup_us, t->model_us, t->encode_us, t->total_us};
        for (int i = 0; i < 5; i++) rk_hdr_record(&g->r->st[i], v[i]);
        g->r->timing_n++;
    }
    rankd__v1__rank_response__free_unpacked(resp, NULL);
}

/* Account one completed call (receiver thread only). */
static void finish_call(loadgen *g, call *c, int success) {
    int64_t t = now_ns();
    results *r = g->r;
    int code = success ? (int)c->status : GRPC_STATUS_UNKNOWN;
    int measured = c->t_intended >= r->t_meas0 && c->t_intended < r->t_meas1;
    second *s = &r->sec[sec_of(r, t)];
    if (code == GRPC_STATUS_OK) {
        atomic_fetch_add(&g->ok, 1);
        s->ok++;
        rk_hdr_record(&s->hist, t - c->t_intended);
        if (measured) {
            r->ok++;
            rk_hdr_record(&r->corrected, t - c->t_intended);
            rk_hdr_record(&r->uncorrected, t - c->t_sent);
            if (g->o->timing) read_timing(g, c);
        }
    } else {
        atomic_fetch_add(&g->err, 1);
        s->err++;
        if (!g->first_error[0]) {
            size_t dl = GRPC_SLICE_LENGTH(c->details);
            snprintf(g->first_error, sizeof g->first_error, "%s: %.*s",
                     code >= 0 && code < N_CODES ? code_names[code] : "?", (int)(dl > 200 ? 200 : dl),
                     (const char *)GRPC_SLICE_START_PTR(c->details));
        }
    }
    if (measured) {
        r->completed++;
        r->codes[code >= 0 && code < N_CODES ? code : N_CODES]++;
        if (g->lat_log)
            fprintf(g->lat_log, "%.6f %.4f %d\n", c->t_intended * 1e-9 + g->mono_to_unix, (t - c->t_intended) * 1e-6,
                    code);
    }
    grpc_slice_unref(c->details);
    gpr_free((void *)c->errstr);
    grpc_metadata_array_destroy(&c->im);
    grpc_metadata_array_destroy(&c->tm);
    grpc_byte_buffer_destroy(c->send);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    grpc_call_unref(c->call);
    c->call = NULL;
    atomic_fetch_add(&g->done, 1);
}

/* Open loop: the sender keeps the schedule. */
static void *sender_main(void *arg) {
    loadgen *g = arg;
    const opts *o = g->o;
    results *r = g->r;
    rk_rng rng;
    rk_rng_seed(&rng, o->seed);
    double gap_ns = 1e9 / o->rate;
    double t_next = (double)r->t0;
    for (long k = 0;; k++) {
        if (k > 0) t_next += o->poisson ? -log(1.0 - rk_rng_uniform(&rng)) * gap_ns : gap_ns;
        int64_t ti = (int64_t)t_next;
        if (ti >= g->t_end) break;
        if (ti >= r->t_meas0) {
            if (o->requests > 0 && g->measured_started >= o->requests) break;
            g->measured_started++;
            r->offered++;
        }
        r->sec[sec_of(r, ti)].offered++;
        sleep_until_ns(ti);
        while (sem_wait(&g->slots) == -1 && errno == EINTR) {
        }
        call *c = call_get(g);
        start_call(g, c, ti);
    }
    atomic_store(&g->sending_done, 1);
    return NULL;
}

static void *receiver_main(void *arg) {
    loadgen *g = arg;
    const opts *o = g->o;
    results *r = g->r;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            g->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(50, GPR_TIMESPAN)), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) {
            call *c = ev.tag;
            finish_call(g, c, ev.success);
            atomic_fetch_sub(&g->inflight, 1);
            if (o->closed) {
                int64_t t = now_ns();
                int more = t < g->t_end;
                if (more && t >= r->t_meas0 && o->requests > 0 && g->measured_started >= o->requests) more = 0;
                if (more) {
                    if (t >= r->t_meas0) {
                        g->measured_started++;
                        r->offered++;
                    }
                    r->sec[sec_of(r, t)].offered++;
                    start_call(g, c, t);
                    continue;
                }
                call_put(g, c);
            } else {
                call_put(g, c);
                sem_post(&g->slots);
            }
        }
        if (!g->cq_shut && (o->closed || atomic_load(&g->sending_done)) && atomic_load(&g->inflight) == 0) {
            if (o->closed) atomic_store(&g->sending_done, 1);
            grpc_completion_queue_shutdown(g->cq); /* once; QUEUE_SHUTDOWN ends the loop */
            g->cq_shut = 1;
        }
    }
    return NULL;
}

static void progress(const loadgen *g, int64_t t, int final) {
    const results *r = g->r;
    double el = (t - r->t0) / 1e9, total = (r->t_meas1 - r->t0) / 1e9;
    unsigned long long ok = atomic_load(&((loadgen *)g)->ok), err = atomic_load(&((loadgen *)g)->err);
    int s = sec_of(r, t) - 1;
    double p99 = s >= 0 ? rk_hdr_value_at(&r->sec[s].hist, 99) / 1e6 : 0;
    double qps = s >= 0 ? (double)r->sec[s].ok : 0;
    fprintf(stderr, "%s[%5.1f/%.0fs]%s sent=%llu ok=%llu err=%llu inflight=%ld last_s: qps=%.0f p99=%.2fms   %s",
            isatty(2) ? "\r" : "", el > total ? total : el, total, el < (r->t_meas0 - r->t0) / 1e9 ? " warmup" : "",
            (unsigned long long)atomic_load(&((loadgen *)g)->sent), ok, err,
            atomic_load(&((loadgen *)g)->inflight), qps, p99, (final || !isatty(2)) ? "\n" : "");
}

static int run_grpc(const opts *o, workload *w, results *r) {
    rk_grpc_init();
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = -1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    /* a target listing several replicas ("ipv4:127.0.0.1:P1,127.0.0.1:P2")
     * spreads calls over all of them; gRPC's default (pick_first) would use one */
    args[2].type = GRPC_ARG_STRING;
    args[2].key = GRPC_ARG_LB_POLICY_NAME;
    args[2].value.string = "round_robin";
    grpc_channel_args ca = {3, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    loadgen g;
    memset(&g, 0, sizeof g);
    g.o = o;
    g.w = w;
    g.r = r;
    g.ch = grpc_channel_create(o->addr, creds, &ca);
    grpc_channel_credentials_release(creds);
    g.method = grpc_channel_register_call(g.ch, "/rankd.v1.Ranker/Rank", NULL, NULL);
    g.cq = grpc_completion_queue_create_for_next(NULL);
    int n_calls = o->closed ? o->streams : o->max_inflight;
    g.calls = calloc((size_t)n_calls, sizeof *g.calls);
    for (int i = 0; i < n_calls; i++) {
        g.calls[i].next_free = g.free_list;
        g.free_list = &g.calls[i];
    }
    pthread_mutex_init(&g.mu, NULL);
    sem_init(&g.slots, 0, (unsigned)n_calls);
    if (o->latency_log) {
        g.lat_log = fopen(o->latency_log, "w");
        if (!g.lat_log) fprintf(stderr, "rank-bench: cannot write %s: %s\n", o->latency_log, strerror(errno));
        struct timespec rt, mt;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mt);
        g.mono_to_unix = (rt.tv_sec - mt.tv_sec) + 1e-9 * (rt.tv_nsec - mt.tv_nsec);
    }

    /* Connect before the clock starts (a first call would pay the handshake). */
    grpc_connectivity_state cs = grpc_channel_check_connectivity_state(g.ch, 1);
    int64_t tc = now_ns();
    while (cs != GRPC_CHANNEL_READY && now_ns() - tc < (int64_t)10 * 1000000000) {
        grpc_channel_watch_connectivity_state(
            g.ch, cs, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)), g.cq, NULL);
        grpc_completion_queue_next(g.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        cs = grpc_channel_check_connectivity_state(g.ch, 1);
    }
    if (cs != GRPC_CHANNEL_READY) {
        fprintf(stderr, "rank-bench: cannot connect to %s within 10 s\n", o->addr);
        return -1;
    }

    double cpu0 = cpu_seconds();
    r->t0 = now_ns() + 10 * 1000000; /* first send in 10 ms */
    r->t_meas0 = r->t0 + (int64_t)(o->warmup * 1e9);
    r->t_meas1 = r->t_meas0 + (int64_t)(o->duration * 1e9);
    g.t_end = r->t_meas1;
    pthread_t snd, rcv;
    if (o->closed) {
        sleep_until_ns(r->t0);
        for (int i = 0; i < o->streams; i++) {
            int64_t t = now_ns();
            if (t >= r->t_meas0) {
                g.measured_started++;
                r->offered++;
            }
            r->sec[sec_of(r, t)].offered++;
            start_call(&g, call_get(&g), t);
        }
    } else {
        pthread_create(&snd, NULL, sender_main, &g);
    }
    pthread_create(&rcv, NULL, receiver_main, &g);
    /* progress until the receiver has drained every call */
    for (;;) {
        int64_t t = now_ns();
        int64_t wake = t + 1000000000;
        struct timespec ts = {0, 50 * 1000000};
        int done = 0;
        while (now_ns() < wake) {
            nanosleep(&ts, NULL);
            if (atomic_load(&g.sending_done) && atomic_load(&g.inflight) == 0) {
                done = 1;
                break;
            }
        }
        if (!o->quiet && !done) progress(&g, now_ns(), 0);
        if (done) break;
    }
    if (!o->closed) pthread_join(snd, NULL);
    pthread_join(rcv, NULL);
    if (!o->quiet) progress(&g, now_ns(), 1);
    int64_t t_last = now_ns();
    r->measured_s = ((t_last < r->t_meas1 ? t_last : r->t_meas1) - r->t_meas0) / 1e9;
    if (o->requests > 0 && r->offered >= (uint64_t)o->requests && t_last < r->t_meas1)
        r->measured_s = (t_last - r->t_meas0) / 1e9;
    r->cpu_s = cpu_seconds() - cpu0;
    r->ok_total = atomic_load(&g.ok);
    if (g.first_error[0]) fprintf(stderr, "rank-bench: first error: %s\n", g.first_error);
    grpc_completion_queue_destroy(g.cq);
    grpc_channel_destroy(g.ch);
    sem_destroy(&g.slots);
    pthread_mutex_destroy(&g.mu);
    free(g.calls);
    if (g.lat_log) fclose(g.lat_log);
    grpc_shutdown();
    return 0;
}

/* ------------------------------------------------------------ in-process baseline */

static int run_inprocess(const opts *o, workload *w, results *r) {
    rk_model *m;
    rk_err e = {0};
    int64_t t_open = now_ns();
    if (rk_model_open(o->model, &m, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        return -1;
    }
    /* the bundle's open (model.json, dense.safetensors, every table's column family) */
    printf("rank-bench: model open %.1f ms\n", (double)(now_ns() - t_open) / 1e6);
    rk_scorer *s;
    size_t ram = 0;
    if (o->ram_tables_mb > 0 && rk_model_tables_to_ram(m, (size_t)o->ram_tables_mb << 20, &ram, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        rk_model_destroy(m);
        return -1;
    }
    if (!o->quiet) fprintf(stderr, "rank-bench: embedding tables %s\n", ram ? "in RAM" : "read from RocksDB");
    if (rk_scorer_create(m, o->candidates, 256, &s, &e)) {
        fprintf(stderr, "rank-bench: %s\n", e.msg);
        rk_model_destroy(m);
        return -1;
    }
    float *pctr = malloc((size_t)o->candidates * sizeof *pctr);
    const rk_model_cfg *cfg = rk_model_config(m);
    double cpu0 = cpu_seconds();
    r->t0 = now_ns();
    r->t_meas0 = r->t0 + (int64_t)(o->warmup * 1e9);
    r->t_meas1 = r->t_meas0 + (int64_t)(o->duration * 1e9);
    long k = 0;
    int64_t t_last_print = r->t0;
    for (;;) {
        int64_t t = now_ns();
        if (t >= r->t_meas1) break;
        if (o->requests > 0 && t >= r->t_meas0 && r->offered >= (uint64_t)o->requests) break;
        int measured = t >= r->t_meas0;
        const Rankd__V1__RankRequest *q = w->req[k % w->n_req].msg;
        k++;
        int rc = rk_bench_score_inprocess(s, cfg, q, pctr);
        int64_t t2 = now_ns();
        second *sec = &r->sec[sec_of(r, t2)];
        sec->offered++;
        if (rc) sec->err++;
        else {
            sec->ok++;
            r->ok_total++;
            rk_hdr_record(&sec->hist, t2 - t);
        }
        if (measured) {
            r->offered++;
            r->completed++;
            r->codes[rc ? GRPC_STATUS_INTERNAL : GRPC_STATUS_OK]++;
            if (!rc) {
                r->ok++;
                rk_hdr_record(&r->corrected, t2 - t);
                rk_hdr_record(&r->uncorrected, t2 - t);
            }
        }
        if (!o->quiet && t2 - t_last_print > 1000000000) {
            t_last_print = t2;
            fprintf(stderr, "%s[%5.1fs] scored %ld requests%s", isatty(2) ? "\r" : "", (t2 - r->t0) / 1e9, k,
                    isatty(2) ? "" : "\n");
        }
    }
    if (!o->quiet && isatty(2)) fprintf(stderr, "\n");
    r->cpu_s = cpu_seconds() - cpu0;
    int64_t t_end = now_ns();
    r->measured_s = ((t_end < r->t_meas1 ? t_end : r->t_meas1) - r->t_meas0) / 1e9;
    free(pctr);
    rk_scorer_destroy(s);
    rk_model_destroy(m);
    return 0;
}

/* ------------------------------------------------------------ report */

typedef struct {
    int n;
    double qps[4096], mean_ms[4096], p99_ms[4096];
    int stable;
    double qps_dev, lat_dev; /* largest relative deviation from the mean of the last three */
} windows;

static void compute_windows(const opts *o, const results *r, windows *wd) {
    memset(wd, 0, sizeof *wd);
    /* whole timeline seconds inside the measured span */
    int first = (int)((r->t_meas0 - r->t0 + 999999999) / 1000000000);
    int last = (int)((r->t_meas0 + (int64_t)(r->measured_s * 1e9) - r->t0) / 1000000000);
    if (last > r->n_sec) last = r->n_sec;
    int W = (int)(o->window < 1 ? 1 : o->window);
    rk_hdr h;
    rk_hdr_init(&h, HIST_MAX_NS, 2);
    for (int s = first; s + W <= last && wd->n < 4096; s += W) {
        rk_hdr_reset(&h);
        uint64_t ok = 0;
        for (int k = s; k < s + W; k++) {
            rk_hdr_add(&h, &r->sec[k].hist);
            ok += r->sec[k].ok;
        }
        wd->qps[wd->n] = ok / (double)W;
        wd->mean_ms[wd->n] = rk_hdr_mean(&h) / 1e6;
        wd->p99_ms[wd->n] = rk_hdr_value_at(&h, 99) / 1e6;
        wd->n++;
    }
    rk_hdr_free(&h);
    if (wd->n >= 3) {
        double mq = 0, ml = 0;
        for (int i = wd->n - 3; i < wd->n; i++) mq += wd->qps[i] / 3, ml += wd->mean_ms[i] / 3;
        for (int i = wd->n - 3; i < wd->n; i++) {
            double dq = mq > 0 ? fabs(wd->qps[i] - mq) / mq : 0, dl = ml > 0 ? fabs(wd->mean_ms[i] - ml) / ml : 0;
            if (dq > wd->qps_dev) wd->qps_dev = dq;
            if (dl > wd->lat_dev) wd->lat_dev = dl;
        }
        wd->stable = wd->qps_dev <= 0.10 && wd->lat_dev <= 0.10;
    }
}

static json_t *lat_json(const rk_hdr *h) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:I}", "p50", rk_hdr_value_at(h, 50) / 1e6, "p90",
                     rk_hdr_value_at(h, 90) / 1e6, "p99", rk_hdr_value_at(h, 99) / 1e6, "p99_9",
                     rk_hdr_value_at(h, 99.9) / 1e6, "max", rk_hdr_value_at(h, 100) / 1e6, "mean",
                     rk_hdr_mean(h) / 1e6, "min", h->total ? h->min / 1e6 : 0.0, "count", (json_int_t)h->total);
}

static void print_lat(const char *label, const rk_hdr *h) {
    printf("  %-34s p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f mean=%.3f\n", label,
           rk_hdr_value_at(h, 50) / 1e6, rk_hdr_value_at(h, 90) / 1e6, rk_hdr_value_at(h, 99) / 1e6,
           rk_hdr_value_at(h, 99.9) / 1e6, rk_hdr_value_at(h, 100) / 1e6, rk_hdr_mean(h) / 1e6);
}

static int report(const opts *o, const workload *w, const results *r) {
    windows wd;
    compute_windows(o, r, &wd);
    double secs = r->measured_s > 0 ? r->measured_s : 1e-9;
    double offered_qps = r->offered / secs, achieved_qps = r->ok / secs;
    const char *mode = o->inprocess ? "inprocess" : o->closed ? "closed" : "open";
    printf("rank-bench: target=%s mode=%s", o->inprocess ? "(in-process rk_scorer)" : o->addr, mode);
    if (!o->inprocess && !o->closed) printf(" arrivals=%s rate=%.1f/s max_inflight=%d", o->poisson ? "poisson" : "constant", o->rate, o->max_inflight);
    if (o->closed) printf(" streams=%d", o->streams);
    printf(" candidates=%d warmup=%.1fs measured=%.2fs distinct_requests=%d\n", o->candidates, o->warmup,
           r->measured_s, w->n_req);
    printf("  requests: offered=%llu (%.1f/s) completed=%llu ok=%llu achieved=%.1f/s candidates/s=%.0f\n",
           (unsigned long long)r->offered, offered_qps, (unsigned long long)r->completed,
           (unsigned long long)r->ok, achieved_qps, achieved_qps * o->candidates);
    printf("  this process: %.2f CPU s for %llu OK answers (warm-up included)%s\n", r->cpu_s,
           (unsigned long long)r->ok_total,
           o->inprocess ? "" : " -- the client's own cost");
    printf("  errors:");
    int any = 0;
    for (int c = 1; c <= N_CODES; c++)
        if (r->codes[c]) {
            printf(" %s=%llu", c < N_CODES ? code_names[c] : "OTHER", (unsigned long long)r->codes[c]);
            any = 1;
        }
    printf("%s\n", any ? "" : " none");
    printf("  latency, ms (OK calls):\n");
    if (!o->closed && !o->inprocess) {
        print_lat("corrected (from intended send):", &r->corrected);
        print_lat("uncorrected (from actual send):", &r->uncorrected);
    } else {
        print_lat(o->inprocess ? "per request (scoring only):" : "from send (closed loop):", &r->corrected);
    }
    if (o->timing && r->timing_n) {
        printf("  server stages, us (%llu responses): ", (unsigned long long)r->timing_n);
        for (int i = 0; i < 5; i++)
            printf("%s mean=%.0f p50=%lld p99=%lld%s", stage_names[i], rk_hdr_mean(&r->st[i]),
                   (long long)rk_hdr_value_at(&r->st[i], 50), (long long)rk_hdr_value_at(&r->st[i], 99),
                   i < 4 ? " | " : "\n");
    }
    printf("  stability (windows of %.0fs, qps / mean ms):", o->window);
    for (int i = 0; i < wd.n; i++) printf(" %.0f/%.2f", wd.qps[i], wd.mean_ms[i]);
    if (wd.n >= 3)
        printf(" -> %s (last 3: qps within %.1f%%, latency within %.1f%%; need 10%%)\n",
               wd.stable ? "stable" : "NOT stable", 100 * wd.qps_dev, 100 * wd.lat_dev);
    else
        printf(" -> too few windows to judge\n");
    printf("  timeline (s: offered ok err p50 p99 max ms):");
    int last = sec_of(r, r->t_meas1 - 1);
    for (int s = 0; s <= last && s < r->n_sec; s++) {
        const second *sc = &r->sec[s];
        printf("%s%d%s: %llu %llu %llu %.2f %.2f %.2f", s % 4 ? " | " : "\n    ", s,
               r->t0 + (int64_t)s * 1000000000 < r->t_meas0 ? "w" : "", (unsigned long long)sc->offered,
               (unsigned long long)sc->ok, (unsigned long long)sc->err, rk_hdr_value_at(&sc->hist, 50) / 1e6,
               rk_hdr_value_at(&sc->hist, 99) / 1e6, rk_hdr_value_at(&sc->hist, 100) / 1e6);
    }
    printf("\n");
    fflush(stdout);
    if (!o->json) return 0;

    json_t *root = json_object();
    json_object_set_new(root, "target", json_string(o->inprocess ? "inprocess" : o->addr));
    json_object_set_new(root, "mode", json_string(mode));
    json_object_set_new(root, "arrivals", json_string(o->poisson ? "poisson" : "constant"));
    json_object_set_new(root, "rate", json_real(o->closed || o->inprocess ? 0 : o->rate));
    json_object_set_new(root, "max_inflight", json_integer(o->max_inflight));
    json_object_set_new(root, "streams", json_integer(o->closed ? o->streams : 0));
    json_object_set_new(root, "candidates", json_integer(o->candidates));
    json_object_set_new(root, "distinct_requests", json_integer(w->n_req));
    json_object_set_new(root, "warmup_s", json_real(o->warmup));
    json_object_set_new(root, "measured_s", json_real(r->measured_s));
    json_object_set_new(root, "offered", json_integer((json_int_t)r->offered));
    json_object_set_new(root, "completed", json_integer((json_int_t)r->completed));
    json_object_set_new(root, "ok", json_integer((json_int_t)r->ok));
    json_object_set_new(root, "offered_qps", json_real(offered_qps));
    json_object_set_new(root, "achieved_qps", json_real(achieved_qps));
    json_object_set_new(root, "candidates_per_s", json_real(achieved_qps * o->candidates));
    json_object_set_new(root, "ok_total", json_integer((json_int_t)r->ok_total));
    json_object_set_new(root, "cpu_s", json_real(r->cpu_s));
    json_t *errs = json_object();
    for (int c = 1; c <= N_CODES; c++)
        if (r->codes[c]) json_object_set_new(errs, c < N_CODES ? code_names[c] : "OTHER", json_integer((json_int_t)r->codes[c]));
    json_object_set_new(root, "errors", errs);
    json_object_set_new(root, "latency_ms_corrected", lat_json(&r->corrected));
    json_object_set_new(root, "latency_ms_uncorrected", lat_json(&r->uncorrected));
    if (o->timing && r->timing_n) {
        json_t *st = json_object();
        for (int i = 0; i < 5; i++)
            json_object_set_new(st, stage_names[i],
                                json_pack("{s:f,s:I,s:I}", "mean", rk_hdr_mean(&r->st[i]), "p50",
                                          (json_int_t)rk_hdr_value_at(&r->st[i], 50), "p99",
                                          (json_int_t)rk_hdr_value_at(&r->st[i], 99)));
        json_object_set_new(root, "server_stages_us", st);
    }
    json_t *win = json_array();
    for (int i = 0; i < wd.n; i++)
        json_array_append_new(win, json_pack("{s:f,s:f,s:f}", "qps", wd.qps[i], "mean_ms", wd.mean_ms[i], "p99_ms", wd.p99_ms[i]));
    json_object_set_new(root, "stability",
                        json_pack("{s:f,s:o,s:b,s:f,s:f}", "window_s", o->window, "windows", win, "stable", wd.stable,
                                  "qps_dev", wd.qps_dev, "latency_dev", wd.lat_dev));
    json_t *tl = json_array();
    for (int s = 0; s <= last && s < r->n_sec; s++) {
        const second *sc = &r->sec[s];
        json_array_append_new(
            tl, json_pack("{s:i,s:b,s:I,s:I,s:I,s:f,s:f,s:f}", "second", s, "warmup",
                          r->t0 + (int64_t)s * 1000000000 < r->t_meas0, "offered", (json_int_t)sc->offered, "ok",
                          (json_int_t)sc->ok, "errors", (json_int_t)sc->err, "p50_ms",
                          rk_hdr_value_at(&sc->hist, 50) / 1e6, "p99_ms", rk_hdr_value_at(&sc->hist, 99) / 1e6,
                          "max_ms", rk_hdr_value_at(&sc->hist, 100) / 1e6));
    }
    json_object_set_new(root, "timeline", tl);
    int rc = json_dump_file(root, o->json, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc) fprintf(stderr, "rank-bench: cannot write %s\n", o->json);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    opts o = {.candidates = 200, .streams = 8, .max_inflight = 256, .rate = 100, .duration = 10, .warmup = 2,
              .window = 2, .deadline_ms = 1000, .seed = 1, .max_distinct = 4096, .ram_tables_mb = 512};
    static struct option lo[] = {
        {"addr", 1, 0, 'a'},      {"model", 1, 0, 'm'},      {"config", 1, 0, 'C'},     {"data", 1, 0, 'd'},
        {"candidates", 1, 0, 'n'}, {"rate", 1, 0, 'r'},       {"arrivals", 1, 0, 'A'},   {"max-inflight", 1, 0, 'i'},
        {"closed", 0, 0, 'c'},    {"streams", 1, 0, 's'},    {"duration", 1, 0, 'D'},   {"warmup", 1, 0, 'W'},
        {"requests", 1, 0, 'R'},  {"deadline-ms", 1, 0, 'L'}, {"window", 1, 0, 'w'},    {"timing", 0, 0, 'T'},
        {"seed", 1, 0, 'S'},      {"json", 1, 0, 'j'},       {"quiet", 0, 0, 'q'},      {"inprocess", 0, 0, 'P'},
        {"max-distinct", 1, 0, 'M'}, {"ram-tables-mb", 1, 0, 'G'}, {"help", 0, 0, 'h'},
        {"latency-log", 1, 0, 'K'},  {"version", 0, 0, 'V'}, {0, 0, 0, 0}};
    int c;
    long long iv = 0;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'a': o.addr = optarg; break;
        case 'm': o.model = optarg; break;
        case 'C': o.config = optarg; break;
        case 'd': o.data = optarg; break;
        case 'n': bad = parse_count("--candidates", optarg, 1, 100000, &iv); o.candidates = (int)iv; break;
        case 'r': bad = parse_num("--rate", optarg, 0.001, 1e7, &o.rate); break;
        case 'A':
            if (!strcmp(optarg, "poisson")) o.poisson = 1;
            else if (!strcmp(optarg, "constant")) o.poisson = 0;
            else {
                fprintf(stderr, "rank-bench: --arrivals: constant or poisson, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case 'i': bad = parse_count("--max-inflight", optarg, 1, 100000, &iv); o.max_inflight = (int)iv; break;
        case 'c': o.closed = 1; break;
        case 's': bad = parse_count("--streams", optarg, 1, 100000, &iv); o.streams = (int)iv; break;
        case 'D': bad = parse_num("--duration", optarg, 0.1, 3600, &o.duration); break;
        case 'W': bad = parse_num("--warmup", optarg, 0, 600, &o.warmup); break;
        case 'R': bad = parse_count("--requests", optarg, 0, 1000000000000LL, &iv); o.requests = (long)iv; break;
        case 'L': bad = parse_count("--deadline-ms", optarg, 1, 3600000, &iv); o.deadline_ms = (int)iv; break;
        case 'w': bad = parse_num("--window", optarg, 1, 600, &o.window); break;
        case 'T': o.timing = 1; break;
        case 'S': bad = parse_count("--seed", optarg, 0, 1000000000000000000LL, &iv); o.seed = (uint64_t)iv; break;
        case 'j': o.json = optarg; break;
        case 'q': o.quiet = 1; break;
        case 'P': o.inprocess = 1; break;
        case 'M': bad = parse_count("--max-distinct", optarg, 1, 1000000, &iv); o.max_distinct = (int)iv; break;
        case 'G': bad = parse_count("--ram-tables-mb", optarg, 0, 1 << 30, &iv); o.ram_tables_mb = (int)iv; break;
        case 'K': o.latency_log = optarg; break;
        case 'V': printf("rank-bench %s\n", rk_version_string()); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "rank-bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o.data || (!o.model && !o.config) || (!o.addr && !o.inprocess) || (o.inprocess && !o.model)) {
        fprintf(stderr, "rank-bench: --data, --model or --config, and --addr (or --inprocess with --model) are required (see --help)\n");
        return 2;
    }
    char why[512];
    if (o.addr && !is_loopback(o.addr, why, sizeof why)) {
        fprintf(stderr, "rank-bench: refusing to load-test '%s': only loopback addresses (127.0.0.0/8, localhost, "
                "[::1]): %s\n", o.addr, why);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o.inprocess) {
        openblas_set_num_threads(1); /* as each rankd worker */
        if (!o.quiet) rk_log_blas_info();
    }
    workload w;
    memset(&w, 0, sizeof w);
    if (load_cfg(&o, &w.cfg) || read_rows(&o, &w) || build_requests(&o, &w)) return 1;
    results r;
    int n_sec = (int)ceil(o.warmup + o.duration) + 3;
    if (results_init(&r, n_sec)) {
        fprintf(stderr, "rank-bench: out of memory\n");
        return 1;
    }
    int rc = o.inprocess ? run_inprocess(&o, &w, &r) : run_grpc(&o, &w, &r);
    if (rc == 0) rc = report(&o, &w, &r);
    results_free(&r);
    for (int i = 0; i < w.n_req; i++) {
        free(w.req[i].bytes);
        if (w.req[i].msg) rankd__v1__rank_request__free_unpacked(w.req[i].msg, NULL);
    }
    free(w.req);
    rk_req_rows_destroy(w.rows);
    rk_model_cfg_free(&w.cfg);
    return rc ? 1 : 0;
}
