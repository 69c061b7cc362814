/*
 * serve/server.c — rankd's gRPC server on the gRPC C core API (1.51).
 *
 * Layout: N worker threads (leader/follower) and one admin thread.
 *
 *   workers   each owns an rk_service (scorer, unpack arena, response
 *             buffers, all sized at start-up for the largest request) and a
 *             request buffer of max_message_bytes. A worker takes the oldest
 *             call of a bounded FIFO of accepted Rank calls (queue_depth).
 *             When the FIFO is empty and no other worker is polling, it
 *             becomes the leader: it polls the one completion queue
 *             registered with the server (so it does the network I/O) and
 *             handles every event: a new Rank call goes into the FIFO, or
 *             is answered RESOURCE_EXHAUSTED at once when the FIFO is full;
 *             Health/Check, GetMetadata, Health/Watch, reflection and
 *             unknown methods (UNIMPLEMENTED, at once: without a posted
 *             generic request they would hang until the deadline, c-stack.md
 *             §2.6) are answered inline; an Admin call goes to the admin
 *             thread's queue; a reply completion releases its call context.
 *             The leader waits for events only while the FIFO is empty; once
 *             it holds a call it handles only the events already available
 *             (a zero deadline, at most RK_DRAIN_MAX), hands leadership to a
 *             waiting worker (if any) and scores the head of the FIFO
 *             itself. So under load a call is read, scored and answered on
 *             one thread, with no hand-off and no context switch per call
 *             (an acceptor thread of its own woke ~3 times per call and
 *             preempted the worker on its core: bench/RESULTS.md, issue 16).
 *             The price: while every worker is scoring nobody polls, and a
 *             worker polls again only when the FIFO is empty, so a health
 *             check (like any new call) is read only once the calls already
 *             queued are done: at most queue_depth of them (the closed-loop
 *             bench: the 4 in flight, ~1.4 ms), not at once as when a thread
 *             of its own answered it. The leader keeps
 *             threads * requests_per_worker Rank requests posted (re-posting
 *             each as soon as it is matched, so core's own unbounded pending
 *             list stays empty), plus one of every other kind. Only the
 *             leader runs the event handlers (leadership passes under the
 *             FIFO's mutex), so their state (overload episode, health_in)
 *             is used by one thread at a time. A worker picking a call up
 *             checks its deadline first: if it has already passed it
 *             answers DEADLINE_EXCEEDED without decoding or model work;
 *             otherwise it scores it and starts the reply batch. Time spent
 *             in the queue and each stage are summed into the counters.
 *   admin     Admin/ApplyUpdates calls (see below).
 *
 * Versions (rk_server_reload): the serving bundle is a refcounted version
 * record {model, one rk_service per worker}. A worker takes a reference
 * under a short mutex when it picks a call up and drops it when the answer
 * is built, so a call runs on one version from start to end. A reload opens
 * the next bundle and builds its services off the request path, swaps the
 * pointer under the same mutex and drops the server's own reference: the
 * old version (its scorers, its RocksDB handles) is destroyed by whichever
 * thread drops the last reference. Admin/ApplyUpdates calls go through a
 * queue of their own to one admin thread (a store write waits on an fsync:
 * it must not hold a Rank worker), on the version current at pick-up.
 *
 * Background priority: the thread that opens, warms up, drains and closes
 * a version (every load, unload and reload runs on a short-lived thread of
 * its own, joined by the caller) runs at SCHED_IDLE (Linux; nice 19 where
 * that is refused): on the cores the workers use it only gets the time the
 * workers (and other processes) leave, and a worker woken by a call
 * preempts it at once. The only lock it shares with the workers is vmu,
 * held for a pointer insert. A load takes longer on a busy CPU while the
 * old version keeps serving (bench/RESULTS.md, bench-swap). The admin
 * thread runs at nice 19, not SCHED_IDLE: the store's row-cache update
 * takes the cache shard locks the workers' lookups take, and a SCHED_IDLE
 * holder could be starved by other processes while a worker waits on it;
 * at nice 19 it still gets its small share (for RAM tables, updates are
 * queued without a lock and the next lookup writes them, rank/model.c; the
 * version reference of an Admin call is taken by the leader). On an idle
 * 2-core machine this took bench-ops' updates_p99_ratio from 8.78 to 2.66
 * (SCHED_IDLE: 2.31-2.43; bench/RESULTS.md).
 * At --log-level debug every load and unload logs one line with each
 * phase's wall and CPU time and minor faults on its thread (open, ram,
 * schema, warm-up, switch; drain, close, trim: freed memory given back to
 * the system, ver_retire).
 * An Admin call is bound to a
 * completion queue of its own (acq, GRPC_CQ_NON_POLLING: nobody polls I/O
 * through it): its reply batch, started by the admin thread (which mostly
 * writes the reply itself, at nice 19), completes there and the admin
 * thread releases the context after each reply (admin_reap), so the
 * leader, at normal priority on the workers' cores, is woken once per
 * Admin call instead of twice (bench/RESULTS.md, issue 17 updates: its CPU
 * per Admin call fell by about a third). rk_server_stop reaps acq while it
 * waits for the contexts: an idle admin thread leaves its last one there.
 *
 * Counters (metrics.c): each worker, and the admin thread, writes its own
 * stripe of the version's counters without locked instructions; the
 * leader's few counters are relaxed atomics. GET /metrics sums them.
 *
 * Call contexts come from a free list under a mutex (pre-allocated at start
 * for every posted request, a full queue and a reply in flight per worker;
 * it grows only if more replies are still in flight). Nothing of a context
 * is used after grpc_call_start_batch by the thread that started it (§2.5
 * trap): the leader may handle the completion at once. No call context is
 * touched by two threads at once: the leader hands a call to exactly one
 * worker through the FIFO, and a leader only touches it again when its
 * reply batch completes.
 *
 * Shutdown (§2.2 step 8, §2.6): set the flag; grpc_server_shutdown_and_notify
 * (posted requests complete with success == 0 and are released by the
 * leader, not re-posted; queued calls are still answered by the workers);
 * wait up to
 * grace_ms until no call context is live; then pluck the shutdown tag for at
 * most 200 ms more and, if it has not come, cancel every call and pluck
 * again (under load a call can race the shutdown into core's pending queue
 * where no handler sees it; the tag then never comes by itself). Wait until
 * no context is live (shutting a cq down under a running handler aborts in
 * grpc_cq_begin_op); destroy the server; shut the cq down (the leader sees
 * GRPC_QUEUE_SHUTDOWN); stop and join the workers and the admin thread;
 * destroy the cq; grpc_shutdown().
 */
#define _GNU_SOURCE /* SCHED_IDLE */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"
#include "pbwire.h"
#include "serve.h"
#include "rank.pb-c.h"

#define RANK_METHOD "/rankd.v1.Ranker/Rank"
#define APPLY_METHOD "/rankd.v1.Admin/ApplyUpdates"
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define META_METHOD "/rankd.v1.Ranker/GetMetadata"
#define WATCH_METHOD "/grpc.health.v1.Health/Watch"
#define REFLECT_METHOD "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
#define REFLECT1_METHOD "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define MAX_REFLECTS 16 /* open reflection streams; more: RESOURCE_EXHAUSTED */
#define MAX_WATCHES 64 /* open Health/Watch streams; more: RESOURCE_EXHAUSTED */
#define RANK_SERVICE_NAME "rankd.v1.Ranker"
#define HEALTH_BUF 4096
#define RK_ROUTE_MAX 128   /* model name / version label, bytes with the NUL */
#define RK_MAX_MODELS 16   /* models served at once */
#define RK_MAX_VERSIONS 8  /* versions of one model served at once */
#define ADMIN_QUEUE 16 /* Admin calls waiting for the admin thread; more: RESOURCE_EXHAUSTED */

typedef enum {
    K_RANK = 0, K_HEALTH = 1, K_GENERIC = 2, K_APPLY = 3, K_META = 4, K_WATCH = 5, K_REFLECT = 6, K_REFLECT1 = 7, K_N
} call_kind;
typedef enum { S_REQUESTED = 0, S_REPLYING = 1, S_WATCHING = 2, S_REFLECTING = 3 } call_state;

typedef struct call_ctx {
    struct call_ctx *next_free;
    struct rk_server *srv;
    call_kind kind;
    call_state state;
    grpc_call *call;
    gpr_timespec deadline;        /* registered calls */
    grpc_call_details details;    /* generic calls */
    grpc_metadata_array md;
    grpc_byte_buffer *payload;    /* request message (registered calls) */
    grpc_byte_buffer *reply;      /* response message, or NULL */
    grpc_slice status_details;
    int cancelled;
    double t_accepted;            /* rk_now() when the leader queued it */
    struct model_ver *ver;        /* Admin calls: the version, referenced by the leader
                                   * (the admin thread, at background priority, takes no
                                   * lock a worker waits for) */
    /* Health/Watch (under the server's wmu): the stream's service, the last
     * status sent, a message in flight, the call over (client gone or
     * cancelled); its RECV_CLOSE_ON_SERVER completes with the tag c + 1. */
    struct call_ctx *watch_next;
    char watch_svc[128];
    int watch_last, watch_sending, watch_closed;
} call_ctx;

typedef struct worker {
    struct rk_server *srv;
    int idx;
    pthread_t thread;
    int thread_started;
    uint8_t *in;                  /* contiguous request bytes */
    size_t in_cap;
    uint64_t n_calls;             /* for the sampled access log */
    double t_err_log;             /* last error line (rate limit: 1/s) */
    uint64_t n_err_suppressed;
} worker;

/* A bounded FIFO of accepted calls and the threads that take from it. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    call_ctx **ring;
    int cap, head, len;
    int stop;
    int leading;                  /* a worker polls the completion queue (rq only) */
    int cq_done;                  /* the completion queue is shut down (rq only) */
    atomic_int *len_gauge;        /* mirrors len for metrics (NULL: none) */
} callq;

static void q_init(callq *q, int cap, atomic_int *gauge) {
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->cap = cap;
    q->len_gauge = gauge;
    q->ring = rk_calloc((size_t)cap, sizeof *q->ring);
}

static void q_free(callq *q) {
    rk_free(q->ring);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

/* Append c; 0 when the queue is full. */
static int q_push(callq *q, call_ctx *c) {
    pthread_mutex_lock(&q->mu);
    int ok = q->len < q->cap;
    if (ok) {
        q->ring[(q->head + q->len) % q->cap] = c;
        q->len++;
        if (q->len_gauge) atomic_store_explicit(q->len_gauge, q->len, memory_order_relaxed);
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

/* The oldest call, waiting for one; NULL once stopped and empty. */
static call_ctx *q_pop(callq *q) {
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
    call_ctx *c = NULL;
    if (q->len) {
        c = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
        if (q->len_gauge) atomic_store_explicit(q->len_gauge, q->len, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->mu);
    return c;
}

static void q_stop(callq *q) {
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* One serving bundle version: destroyed when refs reaches 0. */
typedef struct model_ver {
    rk_model *m;
    int owned;                    /* destroy m with the version */
    atomic_int refs;              /* the server's while current + one per call in a worker */
    int n_svc;
    rk_service **svc;             /* [n_workers]: worker i uses svc[i] */
    char dir[PATH_MAX];
    char name[RK_ROUTE_MAX];      /* the model_name it answers to */
    char label[RK_ROUTE_MAX];     /* its version: the repository's directory, or model.json's */
    long long num;                /* numeric version (repository), orders versions; -1: none */
    dev_t dev;                    /* the directory's identity when opened: a bundle saved again */
    ino_t ino;                    /* at the same path (temp dir + rename) is another version */
    rk_vstats *vs;                /* its counters (metrics.c; outlive it) */
    rk_live *metrics;             /* to detach vs before m is destroyed */
} model_ver;

/* A served model: its versions, newest first (v[0] takes calls that name
 * no version). */
typedef struct {
    char name[RK_ROUTE_MAX];
    int n;
    model_ver *v[RK_MAX_VERSIONS];
} served_model;

struct rk_server {
    rk_server_opts o;
    char listen[256];
    pthread_mutex_t vmu;          /* guards models[] (the pointers, not the versions) */
    served_model models[RK_MAX_MODELS];
    int n_models;
    model_ver *start_ver;         /* the version given to rk_server_start (NULL: none) */
    rk_model *borrowed;           /* the start-up model when the caller owns it (own_model 0):
                                   * open until rk_server_stop, so a reload back to its bundle
                                   * serves it again instead of opening the store twice (a
                                   * writable store's LOCK is held while it is open) */
    dev_t borrowed_dev;
    ino_t borrowed_ino;
    pthread_mutex_t reload_mu;    /* one load / unload / reload at a time */
    atomic_int draining;          /* health: NOT_SERVING from rk_server_drain on */
    grpc_server *server;
    grpc_completion_queue *cq;    /* polled by the leader */
    grpc_completion_queue *acq;   /* Admin calls' reply batches complete here (non-polling):
                                   * released by the admin thread (admin_reap) */
    grpc_completion_queue *shutdown_cq;
    void *method[K_N];            /* registered methods by kind (K_GENERIC: none) */
    int pollers;                  /* Rank worker threads started (they poll cq) */
    uint8_t health_in[HEALTH_BUF];
    int n_workers;
    worker *workers;
    callq rq;                     /* accepted Rank calls (queue_depth) */
    callq aq;                     /* accepted Admin calls (ADMIN_QUEUE), for the admin thread */
    worker admin;                 /* Admin/ApplyUpdates: its own thread, stripe n_workers */
    /* call contexts */
    pthread_mutex_t fmu;
    call_ctx *free_list;
    call_ctx **all;               /* every context ever allocated (to free at stop) */
    size_t n_all, cap_all;
    atomic_int shutting_down;
    atomic_long live;             /* call contexts not on the free list */
    /* live counters: per-worker stripes per version (model_ver.vs) and
     * these server-wide ones; published by metrics (metrics.c) */
    rk_server_gauges g;
    rk_live *metrics;
    int metrics_port;
    rk_auth *auth;
    uint64_t ov_n;                /* overload episode (leader): calls rejected so far */
    double ov_t0, ov_tlast, ov_tlog;
    pthread_mutex_t wmu;          /* the open Health/Watch and reflection streams */
    call_ctx *watches;
    int n_watches;
    call_ctx *reflects;           /* open reflection streams (linked by watch_next) */
    int n_reflects;
    rk_reflection *reflection;    /* NULL: o.no_reflection */
    int started;
};

/* ------------------------------------------------------------ versions */

static void ver_destroy(model_ver *v) {
    for (int i = 0; v->svc && i < v->n_svc; i++) rk_service_destroy(v->svc[i]);
    rk_free(v->svc);
    if (v->vs) atomic_store(&v->vs->serving, 0);
    rk_live_version_detach(v->metrics, v->vs);
    if (v->owned) rk_model_destroy(v->m);
    rk_free(v);
}

/* A version of m with one service per worker, refs = 1 (the server's). On
 * failure nothing is kept and m is not destroyed. */
static rk_status ver_create(rk_server *s, rk_model *m, int owned, const char *name, const char *label,
                            long long num, model_ver **out, rk_err *err) {
    if (strlen(name) >= RK_ROUTE_MAX || strlen(label) >= RK_ROUTE_MAX)
        return rk_fail(err, RK_EINVAL, "model name '%.64s' or version '%.64s' longer than %d bytes", name, label,
                       RK_ROUTE_MAX - 1);
    model_ver *v = rk_calloc(1, sizeof *v);
    if (!v) return rk_fail(err, RK_ENOMEM, "server: out of memory");
    v->m = m;
    atomic_init(&v->refs, 1);
    snprintf(v->dir, sizeof v->dir, "%s", rk_model_dir(m));
    struct stat sb;
    if (stat(v->dir, &sb) == 0) v->dev = sb.st_dev, v->ino = sb.st_ino;
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->label, sizeof v->label, "%s", label);
    v->num = num;
    v->svc = rk_calloc((size_t)s->n_workers, sizeof *v->svc);
    if (!v->svc) {
        rk_free(v);
        return rk_fail(err, RK_ENOMEM, "server: out of memory");
    }
    for (int i = 0; i < s->n_workers; i++) {
        rk_status st = rk_service_create(m, &s->o, &v->svc[i], err);
        if (st) {
            ver_destroy(v); /* owned is still 0: m survives */
            return st;
        }
        rk_service_set_routed(v->svc[i]);
        v->n_svc = i + 1;
    }
    /* warm-up: every worker's service answers a request first (scorer
     * buffers touched, tables and towers paged in) */
    rk_status st = rk_warmup(m, v->svc, v->n_svc, s->o.max_candidates, err);
    if (st) {
        ver_destroy(v);
        return st;
    }
    v->metrics = s->metrics;
    v->vs = rk_live_version(s->metrics, name, label, m, err);
    if (!v->vs) {
        ver_destroy(v);
        return RK_ENOMEM;
    }
    v->owned = owned;
    *out = v;
    return RK_OK;
}

static void ver_release(model_ver *v) {
    if (atomic_fetch_sub(&v->refs, 1) == 1) ver_destroy(v);
}

/* The calling thread from now on at background priority: SCHED_IDLE, or
 * nice 19 where that is refused (header comment). Never undone: an
 * unprivileged thread cannot come back from SCHED_IDLE. */
static void thread_background(void) {
    struct sched_param sp = {0};
    if (pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp))
        (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
}

/* Where a load or unload spends its time (--log-level debug): at each mark
 * the wall clock, this thread's CPU time and its minor faults. */
#define VCLOCK_MAX 8
typedef struct {
    int n;
    const char *name[VCLOCK_MAX];
    double wall[VCLOCK_MAX], cpu[VCLOCK_MAX];
    long flt[VCLOCK_MAX];
} vclock;

static void vclock_mark(vclock *c, const char *name) {
    if (!c || c->n == VCLOCK_MAX) return;
    int i = c->n++;
    struct timespec ts;
    struct rusage ru;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    getrusage(RUSAGE_THREAD, &ru);
    c->name[i] = name;
    c->wall[i] = rk_now();
    c->cpu[i] = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    c->flt[i] = ru.ru_minflt;
}

/* One debug line: "WHAT at T: PHASE wall/cpu ms N flt ..." (T: unix s of
 * the first mark), as bench-swap's phase analysis reads it. */
static void vclock_log(const vclock *c, const char *what) {
    if (c->n < 2 || !rk_log_enabled(RK_LOG_DEBUG)) return;
    char buf[1024];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double t0 = (double)now.tv_sec + (double)now.tv_nsec * 1e-9 - (rk_now() - c->wall[0]);
    size_t o = (size_t)snprintf(buf, sizeof buf, "%s at %.6f:", what, t0);
    for (int i = 1; i < c->n && o < sizeof buf; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, " %s %.1f/%.1f ms %ld flt", c->name[i],
                              (c->wall[i] - c->wall[i - 1]) * 1e3, (c->cpu[i] - c->cpu[i - 1]) * 1e3,
                              c->flt[i] - c->flt[i - 1]);
    rk_log(RK_LOG_DEBUG, "%s", buf);
}

/* Take v out of service: wait (up to grace_ms) until no call holds it, then
 * drop the server's reference, so it is closed here, off the request path.
 * v must already be unreachable from models[]. */
static void ver_retire(rk_server *s, model_ver *v, vclock *vc) {
    atomic_store(&v->vs->serving, 0);
    double t_end = rk_now() + s->o.grace_ms * 1e-3;
    while (atomic_load(&v->refs) > 1 && rk_now() < t_end) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    vclock_mark(vc, "drain");
    ver_release(v); /* here, or (after the timeout) by the last call on it */
    vclock_mark(vc, "close");
#ifdef __GLIBC__
    /* the version's memory back to the system: glibc keeps what is freed
     * inside a thread arena's heap (only its top is trimmed), and loads run
     * on short-lived threads whose arenas hold each version's scorers */
    malloc_trim(0);
    vclock_mark(vc, "trim");
#endif
}

/* The model named name[len] (len 0: the only one when a single model is
 * served), or NULL. */
static served_model *find_model_locked(rk_server *s, const char *name, size_t len) {
    if (!len) return s->n_models == 1 ? &s->models[0] : NULL;
    for (int i = 0; i < s->n_models; i++)
        if (strlen(s->models[i].name) == len && !memcmp(s->models[i].name, name, len)) return &s->models[i];
    return NULL;
}

static int ver_matches(const model_ver *v, const char *ver, size_t len) {
    const char *cand[3] = {v->label, rk_model_config(v->m)->version, rk_model_version(v->m)};
    for (int k = 0; k < 3; k++)
        if (strlen(cand[k]) == len && !memcmp(cand[k], ver, len)) return 1;
    return 0;
}

/* "'a', 'b'" of the names (versions == NULL) or of model sm's versions. */
static void list_names(rk_server *s, const served_model *sm, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    int cnt = sm ? sm->n : s->n_models;
    for (int i = 0; i < cnt && n + 8 < cap; i++) {
        const char *x = sm ? (sm->v[i]->num >= 0 ? sm->v[i]->label : rk_model_version(sm->v[i]->m))
                           : s->models[i].name;
        n += (size_t)snprintf(buf + n, cap - n, "%s'%.60s'", i ? ", " : "", x);
    }
}

/* The version a call for model name[nlen] / version ver[vlen] (empty: the
 * only model / its newest version) runs on, with a reference taken; NULL
 * with *code and msg (naming the request field) when there is none. */
static model_ver *ver_route(rk_server *s, const char *name, size_t nlen, const char *ver, size_t vlen,
                            grpc_status_code *code, char *msg, size_t cap) {
    char list[200];
    model_ver *v = NULL;
    pthread_mutex_lock(&s->vmu);
    served_model *sm = find_model_locked(s, name, nlen);
    if (!s->n_models) {
        *code = GRPC_STATUS_UNAVAILABLE;
        snprintf(msg, cap, "no model is loaded yet");
    } else if (!sm) {
        list_names(s, NULL, list, sizeof list);
        *code = nlen ? GRPC_STATUS_NOT_FOUND : GRPC_STATUS_INVALID_ARGUMENT;
        if (nlen)
            snprintf(msg, cap, "model_name: '%.*s' is not served here (serving %s)", (int)rk_utf8_prefix(name, nlen, 64),
                     name, list);
        else snprintf(msg, cap, "model_name: required, %d models are served (%s)", s->n_models, list);
    } else if (!vlen) {
        v = sm->v[0];
    } else {
        for (int i = 0; i < sm->n && !v; i++)
            if (ver_matches(sm->v[i], ver, vlen)) v = sm->v[i];
        if (!v) {
            list_names(s, sm, list, sizeof list);
            *code = GRPC_STATUS_NOT_FOUND;
            snprintf(msg, cap, "model_version: '%.*s' is not served here (serving %s)", (int)rk_utf8_prefix(ver, vlen, 64),
                     ver, list);
        }
    }
    if (v) atomic_fetch_add(&v->refs, 1);
    pthread_mutex_unlock(&s->vmu);
    return v;
}

/* Fields 1 (request_id), 2 (model_name) and 3 (model_version) of a serialized RankRequest
 * (or of any message with them at those numbers), found by walking the top
 * level of the wire format without decoding the rest. 0, or -1 if the bytes
 * are not a well-formed message (the service then says why). */
typedef struct {
    const char *name, *ver, *id; /* not NUL-terminated */
    size_t nlen, vlen, idlen;
} route;

/* -1 and msg when model_name or model_version is not UTF-8: a NUL would
 * make the names the router compares differ from the ones logged and
 * checked (rk_pb_check refuses it for every other field), and a name that is
 * not UTF-8 would be echoed in NOT_FOUND, undecodable by the client. One
 * UTF-8 check of each; the NUL is looked for only on a failure. */
static int route_names_bad(const route *rt, char *msg, size_t cap) {
    int ok_n = rk_utf8_ok((const unsigned char *)rt->name, rt->nlen);
    int ok_v = rk_utf8_ok((const unsigned char *)rt->ver, rt->vlen);
    if (ok_n && ok_v) return 0;
    const char *nul_n = ok_n ? NULL : memchr(rt->name, 0, rt->nlen), *nul_v = ok_v ? NULL : memchr(rt->ver, 0, rt->vlen);
    if (nul_n || nul_v)
        snprintf(msg, cap, "%s: a NUL byte inside the string (byte %zu of %zu)", nul_n ? "model_name" : "model_version",
                 nul_n ? (size_t)(nul_n - rt->name) + 1 : (size_t)(nul_v - rt->ver) + 1, nul_n ? rt->nlen : rt->vlen);
    else
        snprintf(msg, cap, "%s: invalid UTF-8", ok_n ? "model_version" : "model_name");
    return -1;
}

/* request_id, model_name and model_version of a RankRequest (the last of
 * each, as protobuf reads them), for routing and the access log; -1 when
 * the bytes are malformed (pbwire.h: the service then says why). */
static int peek_route(const uint8_t *p, size_t len, route *rt) {
    const uint8_t *end = p + len;
    rt->name = rt->ver = rt->id = "";
    rt->nlen = rt->vlen = rt->idlen = 0;
    pbw_field f;
    while (p < end) {
        if (pbw_next(&p, end, &f)) return -1;
        if (f.wt != 2) continue;
        if (f.num == 1) rt->id = (const char *)f.data, rt->idlen = f.len;
        if (f.num == 2) rt->name = (const char *)f.data, rt->nlen = f.len;
        if (f.num == 3) rt->ver = (const char *)f.data, rt->vlen = f.len;
    }
    return 0;
}

/* The newest version of the only (or first) model, with a reference; NULL
 * when none is loaded. For Admin calls and rk_server_current. */
static model_ver *ver_acquire(rk_server *s) {
    pthread_mutex_lock(&s->vmu);
    model_ver *v = s->n_models ? s->models[0].v[0] : NULL;
    if (v) atomic_fetch_add(&v->refs, 1);
    pthread_mutex_unlock(&s->vmu);
    return v;
}


/* ------------------------------------------------------------ contexts */

static call_ctx *ctx_alloc_locked(rk_server *s) {
    call_ctx *c = rk_calloc(1, sizeof *c);
    if (!c) return NULL;
    if (s->n_all == s->cap_all) {
        size_t nc = s->cap_all ? 2 * s->cap_all : 64;
        call_ctx **na = rk_realloc(s->all, nc * sizeof *na);
        if (!na) {
            rk_free(c);
            return NULL;
        }
        s->all = na;
        s->cap_all = nc;
    }
    s->all[s->n_all++] = c;
    return c;
}

static call_ctx *ctx_get(rk_server *s, call_kind kind) {
    pthread_mutex_lock(&s->fmu);
    call_ctx *c = s->free_list;
    if (c) s->free_list = c->next_free;
    else c = ctx_alloc_locked(s); /* only when more replies are in flight than planned */
    pthread_mutex_unlock(&s->fmu);
    if (!c) return NULL;
    memset(c, 0, sizeof *c);
    c->srv = s;
    c->kind = kind;
    c->state = S_REQUESTED;
    c->status_details = grpc_empty_slice();
    atomic_fetch_add(&s->live, 1);
    return c;
}

/* Release everything the call held and put the context back. */
static void ctx_put(call_ctx *c) {
    rk_server *s = c->srv;
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    if (c->kind == K_GENERIC) grpc_call_details_destroy(&c->details);
    c->call = NULL;
    c->payload = c->reply = NULL;
    pthread_mutex_lock(&s->fmu);
    c->next_free = s->free_list;
    s->free_list = c;
    pthread_mutex_unlock(&s->fmu);
    atomic_fetch_sub(&s->live, 1);
}

/* Post one request of the given kind on cq. 0 on success. */
static int post(rk_server *s, call_kind kind) {
    call_ctx *c = ctx_get(s, kind);
    if (!c) {
        rk_error("rankd: out of memory posting a request");
        return -1;
    }
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (kind == K_GENERIC) {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c);
    } else {
        int streaming = kind == K_REFLECT || kind == K_REFLECT1; /* its messages are read later */
        /* an Admin call's batches complete on acq, so the leader is not
         * woken to release it (header comment) */
        grpc_completion_queue *bound = kind == K_APPLY ? s->acq : s->cq;
        e = grpc_server_request_registered_call(s->server, s->method[kind], &c->call, &c->deadline, &c->md,
                                                streaming ? NULL : &c->payload, bound, s->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        if (!atomic_load(&s->shutting_down)) rk_error("rankd: request_call failed: %d", (int)e);
        ctx_put(c);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ handlers */


/* c's request message (none: empty) into buf[cap]: its length, or -1 with
 * c->status_details set and *code its status. */
static long read_request(call_ctx *c, uint8_t *buf, size_t cap, grpc_status_code *code) {
    char why[200];
    long n = c->payload ? rk_payload_read(buf, cap, c->payload, why, sizeof why) : 0;
    if (n >= 0) return n;
    *code = rk_payload_status(n, cap, c->payload, why, sizeof why);
    c->status_details = grpc_slice_from_copied_string(why);
    return -1;
}

static void set_reply(call_ctx *c, const void *data, size_t len) {
    grpc_slice sl = grpc_slice_from_copied_buffer(data, len);
    c->reply = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
}

/* One stage's time into worker w's stripe of the version's counters. */
static void add_stage(rk_wstats *ws, int stage, double seconds) {
    if (seconds < 0) seconds = 0;
    rk_stat_add(&ws->hist[stage][rk_live_bucket(seconds)], 1);
    rk_stat_add(&ws->sum_ns[stage], (uint64_t)(seconds * 1e9));
}

static int server_stopping(void *ctx) { return atomic_load(&((rk_server *)ctx)->shutting_down); }

/* A Rank call of the request in[n] on version v. */
static grpc_status_code rank_on(worker *w, model_ver *v, call_ctx *c, double t0, const uint8_t *in, long n) {
    rk_service *svc = v->svc[w->idx];
    rk_server *s = w->srv;
    rk_wstats *ws = &v->vs->w[w->idx];
    const uint8_t *resp;
    size_t resp_len;
    rk_err err = {0};
    /* the call's deadline on rk_now()'s clock, for the service's
     * request-time text encoding (an infinite one: none) */
    gpr_timespec left = gpr_time_sub(c->deadline, gpr_now(c->deadline.clock_type));
    double left_s = (double)left.tv_sec + 1e-9 * left.tv_nsec;
    rk_service_set_deadline(svc, left_s < 1e7 ? rk_now() + left_s : 0, server_stopping, s);
    uint64_t u0, a0, u1, a1; /* svc is this worker's alone: the difference is this request's */
    rk_service_sid_counters(svc, &u0, &a0);
    uint64_t es0[3];
    rk_service_embsum_counters(svc, es0);
    grpc_status_code code =
        (grpc_status_code)rk_service_handle(svc, in, (size_t)n, t0, &resp, &resp_len, &err);
    rk_service_sid_counters(svc, &u1, &a1);
    if (u1 != u0) rk_stat_add(&ws->sid_unknown, u1 - u0);
    if (a1 != a0) rk_stat_add(&ws->sid_assigned, a1 - a0);
    uint64_t es1[3];
    rk_service_embsum_counters(svc, es1);
    for (int k = 0; k < 3; k++)
        if (es1[k] != es0[k]) rk_stat_add(&ws->embsum[k], es1[k] - es0[k]);
    if (code == GRPC_STATUS_OK) {
        set_reply(c, resp, resp_len);
        rk_stage_times st;
        rk_service_last_timing(svc, &st);
        rk_stat_add(&ws->candidates, (uint64_t)st.n_candidates);
        add_stage(ws, RK_ST_QUEUE, t0 - c->t_accepted);
        add_stage(ws, RK_ST_DECODE, st.decode_us * 1e-6);
        add_stage(ws, RK_ST_LOOKUP, st.lookup_us * 1e-6);
        add_stage(ws, RK_ST_MODEL, st.model_us * 1e-6);
        add_stage(ws, RK_ST_ENCODE, st.encode_us * 1e-6);
        add_stage(ws, RK_ST_TOTAL, rk_now() - c->t_accepted);
    } else {
        c->status_details = grpc_slice_from_copied_string(err.msg);
    }
    rk_stat_add(&ws->codes[code >= 0 && code < RK_N_CODES ? code : GRPC_STATUS_UNKNOWN], 1);
    return code;
}

/* Per-worker log lines, never one per call by default: errors (with the
 * request id) at most one a second per worker, with the number suppressed
 * since; and, with o->access_log_sample = N, one access line per N calls. */
static void call_log(worker *w, call_ctx *c, const route *rt, const model_ver *v, grpc_status_code code, double t0) {
    rk_server *s = w->srv;
    int access = s->o.access_log_sample > 0 && ++w->n_calls % (uint64_t)s->o.access_log_sample == 0;
    int error = code != GRPC_STATUS_OK && code != GRPC_STATUS_DEADLINE_EXCEEDED;
    if (!access && !error) return;
    double now = rk_now();
    if (error && !access) {
        if (now - w->t_err_log < 1.0) {
            w->n_err_suppressed++;
            return;
        }
        w->t_err_log = now;
    }
    char det[200];
    size_t dl = GRPC_SLICE_LENGTH(c->status_details);
    snprintf(det, sizeof det, "%.*s", (int)(dl > 180 ? 180 : dl), (const char *)GRPC_SLICE_START_PTR(c->status_details));
    char supp[64] = "";
    if (error && w->n_err_suppressed) {
        snprintf(supp, sizeof supp, " (%llu earlier errors not logged)", (unsigned long long)w->n_err_suppressed);
        w->n_err_suppressed = 0;
    }
    rk_log(error ? RK_LOG_WARN : RK_LOG_INFO,
           "%s: request_id='%.*s' model=%s version=%s code=%d queue_ms=%.3f total_ms=%.3f%s%s%s",
           error ? "rank error" : "access", (int)(rt->idlen > 64 ? 64 : rt->idlen), rt->id, v ? v->name : "-",
           v ? v->label : "-", (int)code, (t0 - c->t_accepted) * 1e3, (now - c->t_accepted) * 1e3,
           error ? ": " : "", error ? det : "", supp);
}

/* A Rank call: expired while queued (no decoding, no model work), or routed
 * by model_name / model_version to a version and scored there. Calls that
 * reach no version are counted server-wide (g.unrouted). */
static grpc_status_code handle_rank(worker *w, call_ctx *c, double t0) {
    rk_server *s = w->srv;
    grpc_status_code code;
    char msg[320];
    long n = -1;
    const uint8_t *in;
    if (gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) < 0) {
        code = GRPC_STATUS_DEADLINE_EXCEEDED;
        snprintf(msg, sizeof msg, "deadline exceeded before the request was processed");
    } else if (!c->payload) {
        code = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(msg, sizeof msg, "request has no message");
    } else if ((n = rk_payload_bytes(w->in, w->in_cap, c->payload, &in, msg, sizeof msg)) < 0) {
        code = rk_payload_status(n, w->in_cap, c->payload, msg, sizeof msg);
    } else {
        route rt;
        if (peek_route(in, (size_t)n, &rt)) rt.nlen = rt.vlen = rt.idlen = 0; /* the service says why */
        model_ver *v = NULL;
        if (route_names_bad(&rt, msg, sizeof msg)) code = GRPC_STATUS_INVALID_ARGUMENT;
        else v = ver_route(s, rt.name, rt.nlen, rt.ver, rt.vlen, &code, msg, sizeof msg);
        if (v) {
            code = rank_on(w, v, c, t0, in, n);
            call_log(w, c, &rt, v, code, t0);
            ver_release(v);
            return code;
        }
        c->status_details = grpc_slice_from_copied_string(msg);
        atomic_fetch_add_explicit(&s->g.unrouted[code], 1, memory_order_relaxed);
        call_log(w, c, &rt, NULL, code, t0);
        return code;
    }
    c->status_details = grpc_slice_from_copied_string(msg);
    atomic_fetch_add_explicit(&s->g.unrouted[code], 1, memory_order_relaxed);
    return code;
}

/* Admin/ApplyUpdates on the version v (allocates: protobuf-c unpack and the
 * store's encode buffer; an admin call, not the Rank path). */
static grpc_status_code handle_apply(worker *w, model_ver *v, call_ctx *c) {
    rk_server *s = w->srv;
    if (!s->o.updates) {
        c->status_details = grpc_slice_from_static_string(
            "online updates are off: start rankd with --updates (tables opened writable)");
        return GRPC_STATUS_FAILED_PRECONDITION;
    }
    char who[160];
    if (rk_auth_admin(s->auth, c->call, &c->md, who, sizeof who)) {
        atomic_fetch_add_explicit(&s->g.admin_denied, 1, memory_order_relaxed);
        char *peer = grpc_call_get_peer(c->call);
        rk_warn("admin: ApplyUpdates from %s refused: %s", peer ? peer : "?", who);
        gpr_free(peer);
        c->status_details = grpc_slice_from_copied_string(who);
        return GRPC_STATUS_UNAUTHENTICATED;
    }
    grpc_status_code pcode;
    long n = read_request(c, w->in, w->in_cap, &pcode);
    if (n < 0) return pcode;
    char wmsg[256];
    if (rk_pb_check(&rankd__v1__apply_updates_request__descriptor, w->in, (size_t)n, wmsg, sizeof wmsg)) {
        c->status_details = grpc_slice_from_copied_string(wmsg);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    Rankd__V1__ApplyUpdatesRequest *req =
        rankd__v1__apply_updates_request__unpack(&rk_pb_allocator, (size_t)n, w->in);
    if (!req) {
        c->status_details = grpc_slice_from_static_string("request is not a valid rankd.v1.ApplyUpdatesRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    const char *bad = req->table && !rk_utf8_ok((const unsigned char *)req->table, strlen(req->table)) ? "table"
                      : req->member && !rk_utf8_ok((const unsigned char *)req->member, strlen(req->member)) ? "member"
                                                                                                              : NULL;
    rk_err err = {0}; /* a name that is not UTF-8 is refused, not echoed (the client could not decode it) */
    rk_status st = bad ? rk_fail(&err, RK_EINVAL, "%s: invalid UTF-8", bad)
                       : rk_model_apply_updates(v->m, req->member, req->table, req->rows, req->n_rows, req->values,
                                                req->n_values, &err);
    grpc_status_code code = GRPC_STATUS_OK;
    {
        char *peer = grpc_call_get_peer(c->call);
        rk_info("admin: update by %s (peer %s): model %s version %s member '%s' table '%s' rows %zu: %s", who,
                peer ? peer : "?", v->name, v->label, bad || !req->member ? "" : req->member,
                bad || !req->table ? "" : req->table, req->n_rows, st == RK_OK ? "applied" : err.msg);
        gpr_free(peer);
    }
    if (st == RK_OK) {
        rk_wstats *ws = &v->vs->w[w->idx];
        rk_stat_add(&ws->update_rows, req->n_rows);
        rk_stat_add(&ws->update_calls, 1);
        Rankd__V1__ApplyUpdatesResponse r = RANKD__V1__APPLY_UPDATES_RESPONSE__INIT;
        r.applied = req->n_rows;
        r.model_version = (char *)rk_model_version(v->m);
        uint8_t buf[256 + 16];
        size_t len = rankd__v1__apply_updates_response__get_packed_size(&r);
        if (len <= sizeof buf) {
            rankd__v1__apply_updates_response__pack(&r, buf);
            set_reply(c, buf, len);
        } else {
            code = GRPC_STATUS_INTERNAL;
            c->status_details = grpc_slice_from_static_string("response too large");
        }
    } else {
        /* a full disk (RK_ETOOBIG) or an I/O error: Rank traffic goes on
         * from the last acknowledged rows and the store retries its writable
         * open on the next update, so the caller may retry later */
        code = st == RK_ENOTFOUND                        ? GRPC_STATUS_NOT_FOUND
               : st == RK_EINVAL || st == RK_ENUMERIC    ? GRPC_STATUS_INVALID_ARGUMENT
               : st == RK_ETOOBIG                        ? GRPC_STATUS_RESOURCE_EXHAUSTED
               : st == RK_EIO                            ? GRPC_STATUS_UNAVAILABLE
                                                         : GRPC_STATUS_INTERNAL;
        c->status_details = grpc_slice_from_copied_string(err.msg);
    }
    rankd__v1__apply_updates_request__free_unpacked(req, &rk_pb_allocator);
    return code;
}

enum { HS_SERVING = 1, HS_NOT_SERVING = 2, HS_UNKNOWN = 3 }; /* grpc.health.v1 ServingStatus */

/* The health of service name: "" and "rankd.v1.Ranker" are the server
 * (SERVING once a model is loaded), a model's name that model (SERVING while
 * it has a version); every one NOT_SERVING once draining; other names are
 * unknown. */
static int health_status(rk_server *s, const char *name) {
    int draining = atomic_load(&s->draining) || atomic_load(&s->shutting_down);
    pthread_mutex_lock(&s->vmu);
    int loaded = s->n_models > 0, known = 1;
    if (name[0] && strcmp(name, RANK_SERVICE_NAME)) {
        known = 0;
        for (int i = 0; i < s->n_models; i++) known |= !strcmp(s->models[i].name, name);
    }
    pthread_mutex_unlock(&s->vmu);
    if (!known) return HS_UNKNOWN;
    return loaded && !draining ? HS_SERVING : HS_NOT_SERVING;
}

static void watch_notify(rk_server *s);
void rk_server_drain(rk_server *s) {
    atomic_store(&s->draining, 1);
    watch_notify(s);
}

/* NOT_FOUND for the name a client asked for: "<pre>'<what>'<post>", what
 * cut at 100 bytes on a character boundary; INVALID_ARGUMENT "<field>:
 * invalid UTF-8" when what cannot be echoed (the client could not decode it). */
static grpc_status_code not_found(call_ctx *c, const char *field, const char *pre, const char *what,
                                  const char *post) {
    char msg[256];
    size_t len = strlen(what);
    grpc_status_code code = GRPC_STATUS_NOT_FOUND;
    if (rk_utf8_ok((const unsigned char *)what, len)) {
        snprintf(msg, sizeof msg, "%s'%.*s'%s", pre, (int)rk_utf8_prefix(what, len, 100), what, post);
    } else {
        snprintf(msg, sizeof msg, "%s: invalid UTF-8", field);
        code = GRPC_STATUS_INVALID_ARGUMENT;
    }
    c->status_details = grpc_slice_from_copied_string(msg);
    return code;
}

static grpc_status_code handle_health(call_ctx *c) {
    rk_server *s = c->srv;
    atomic_fetch_add_explicit(&s->g.health, 1, memory_order_relaxed);
    grpc_status_code pcode;
    long n = read_request(c, s->health_in, sizeof s->health_in, &pcode); /* the leader's buffer */
    if (n < 0) return pcode;
    Grpc__Health__V1__HealthCheckRequest *req =
        grpc__health__v1__health_check_request__unpack(&rk_pb_allocator, (size_t)n, s->health_in);
    if (!req) {
        c->status_details =
            grpc_slice_from_static_string("request is not a valid grpc.health.v1.HealthCheckRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code code = GRPC_STATUS_OK;
    const char *svc = req->service ? req->service : "";
    int hs = health_status(s, svc);
    if (hs != HS_UNKNOWN) {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)hs;
        uint8_t buf[16];
        size_t len = grpc__health__v1__health_check_response__pack(&r, buf);
        set_reply(c, buf, len);
    } else {
        code = not_found(c, "service", "unknown service ", svc, "");
    }
    grpc__health__v1__health_check_request__free_unpacked(req, &rk_pb_allocator);
    return code;
}

/* Ranker/GetMetadata, on the leader (an operations call: allocates). */
static grpc_status_code handle_metadata(call_ctx *c) {
    rk_server *s = c->srv;
    grpc_status_code pcode;
    long n = read_request(c, s->health_in, sizeof s->health_in, &pcode); /* the leader's buffer */
    if (n < 0) return pcode;
    Rankd__V1__GetMetadataRequest *req =
        rankd__v1__get_metadata_request__unpack(&rk_pb_allocator, (size_t)n, s->health_in);
    if (!req) {
        c->status_details = grpc_slice_from_static_string("request is not a valid rankd.v1.GetMetadataRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    static const char *side[2] = {"user", "item"}, *kind[2] = {"sparse", "dense"};
    grpc_status_code code = GRPC_STATUS_OK;
    Rankd__V1__GetMetadataResponse r = RANKD__V1__GET_METADATA_RESPONSE__INIT;
    Rankd__V1__ModelMetadata mm[RK_MAX_MODELS], *mp[RK_MAX_MODELS];
    Rankd__V1__EmbSumInfo einfo[RK_MAX_MODELS];
    Rankd__V1__ModelVersionInfo vi[RK_MAX_MODELS][RK_MAX_VERSIONS], *vp[RK_MAX_MODELS][RK_MAX_VERSIONS];
    /* per model: its features [n_features] and the pointers to them, one allocation */
    void *fmem[RK_MAX_MODELS] = {0};
    const char *want = req->model_name ? req->model_name : "";
    pthread_mutex_lock(&s->vmu); /* the versions stay open while it is held */
    for (int i = 0; i < s->n_models; i++) {
        served_model *sm = &s->models[i];
        if (want[0] && strcmp(want, sm->name)) continue;
        Rankd__V1__ModelMetadata *m = &mm[r.n_models];
        rankd__v1__model_metadata__init(m);
        m->name = sm->name;
        for (int k = 0; k < sm->n; k++) {
            rankd__v1__model_version_info__init(&vi[r.n_models][k]);
            vi[r.n_models][k].version = sm->v[k]->label;
            vi[r.n_models][k].bundle_version = (char *)rk_model_version(sm->v[k]->m);
            vp[r.n_models][k] = &vi[r.n_models][k];
        }
        m->n_versions = (size_t)sm->n;
        m->versions = vp[r.n_models];
        const rk_model_cfg *cfg = rk_model_config(sm->v[0]->m);
        size_t nf = (size_t)cfg->n_features + 1;
        fmem[r.n_models] = rk_malloc(nf * (sizeof(Rankd__V1__FeatureInfo) + sizeof(Rankd__V1__FeatureInfo *)));
        if (!fmem[r.n_models]) {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            c->status_details = grpc_slice_from_static_string("metadata: out of memory");
            break;
        }
        Rankd__V1__FeatureInfo *fi = fmem[r.n_models], **fp = (Rankd__V1__FeatureInfo **)(fi + nf);
        for (int f = 0; f < cfg->n_features; f++) {
            const rk_feature *ft = &cfg->features[f];
            Rankd__V1__FeatureInfo *x = &fi[f];
            rankd__v1__feature_info__init(x);
            x->name = (char *)ft->name;
            x->side = (char *)side[ft->side == RK_SIDE_ITEM];
            x->kind = (char *)kind[ft->kind == RK_FEAT_DENSE];
            x->dim = ft->kind == RK_FEAT_DENSE ? 1 : ft->dim;
            fp[f] = x;
        }
        m->n_features = (size_t)cfg->n_features;
        m->features = fp;
        m->user_id_feature = (char *)cfg->alias_user_id;
        m->recent_item_ids_feature = (char *)cfg->alias_recent_items;
        m->ad_id_feature = (char *)cfg->alias_ad_id;
        const rk_embsum_bundle *es = rk_service_embsum(sm->v[0]->svc[0]);
        if (es) {
            const rk_embsum_cfg *ec = rk_embsum_config(rk_embsum_bundle_model(es));
            Rankd__V1__EmbSumInfo *ei = &einfo[r.n_models];
            rankd__v1__emb_sum_info__init(ei);
            ei->version = (char *)rk_embsum_bundle_version(es);
            ei->feature = (char *)RK_EMBSUM_FEATURE;
            ei->m = ec->m, ei->k = ec->k, ei->dim = rk_embsum_dim(rk_embsum_bundle_model(es));
            ei->pool = (char *)rk_match_pool_name(ec->pool);
            ei->codec = (char *)rk_embsum_bundle_codec(es);
            m->embsum = ei;
        }
        mp[r.n_models++] = m;
    }
    if (code != GRPC_STATUS_OK) {
        /* status_details set above */
    } else if (want[0] && !r.n_models) {
        code = not_found(c, "model_name", "model_name: ", want, " is not served here");
    } else {
        r.models = mp;
        size_t len = rankd__v1__get_metadata_response__get_packed_size(&r);
        uint8_t *buf = rk_malloc(len);
        if (buf) {
            rankd__v1__get_metadata_response__pack(&r, buf);
            set_reply(c, buf, len);
            rk_free(buf);
        } else {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            c->status_details = grpc_slice_from_static_string("metadata: out of memory");
        }
    }
    pthread_mutex_unlock(&s->vmu);
    for (int i = 0; i < RK_MAX_MODELS; i++) rk_free(fmem[i]);
    rankd__v1__get_metadata_request__free_unpacked(req, &rk_pb_allocator);
    return code;
}

static grpc_status_code handle_generic(call_ctx *c) {
    atomic_fetch_add_explicit(&c->srv->g.unimplemented, 1, memory_order_relaxed);
    char msg[200];
    const grpc_slice *m = &c->details.method;
    snprintf(msg, sizeof msg, "method '%.*s' is not implemented by rankd",
             (int)(GRPC_SLICE_LENGTH(*m) > 120 ? 120 : GRPC_SLICE_LENGTH(*m)),
             (const char *)GRPC_SLICE_START_PTR(*m));
    c->status_details = grpc_slice_from_copied_string(msg);
    return GRPC_STATUS_UNIMPLEMENTED;
}

/* Answer c with one batch; its completion arrives on cq (for the leader). */
static void reply(call_ctx *c, grpc_status_code code) {
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->status_details;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    c->state = S_REPLYING;
    /* After start_batch the leader may receive the completion and release
     * c: nothing of c is used past this call. */
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        rk_error("rankd: start_batch failed: %d", (int)e);
        ctx_put(c);
    }
}

/* ------------------------------------------------------------ workers */

/* Release the Admin calls whose reply batches have completed on acq (the
 * admin thread's own, usually completed by the time start_batch returns,
 * and the leader's RESOURCE_EXHAUSTED answers), waiting at most wait_ms
 * for the first. Safe from several threads: each event comes out once. */
static void admin_reap(rk_server *s, int wait_ms) {
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait_ms, GPR_TIMESPAN));
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->acq, until, NULL);
        if (ev.type != GRPC_OP_COMPLETE) return;
        ctx_put(ev.tag);
        until = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    }
}

static call_ctx *rank_next(worker *w);

static void *worker_main(void *arg) {
    worker *w = arg;
    rk_server *s = w->srv;
    int is_admin = w->idx == s->n_workers;
    callq *q = is_admin ? &s->aq : &s->rq;
    call_ctx *c;
    if (is_admin) (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19); /* header comment */
    while ((c = is_admin ? q_pop(q) : rank_next(w))) {
        if (!is_admin) atomic_store_explicit(&s->g.busy[w->idx].v, 1, memory_order_relaxed);
        double t0 = rk_now();
        grpc_status_code code;
        if (is_admin) {
            model_ver *v = c->ver; /* taken by the leader */
            c->ver = NULL;
            code = v ? handle_apply(w, v, c) : GRPC_STATUS_UNAVAILABLE;
            if (v) ver_release(v);
            else c->status_details = grpc_slice_from_static_string("no model is loaded yet");
        } else {
            code = handle_rank(w, c, t0); /* the answer is copied into c->reply */
        }
        if (!is_admin) atomic_store_explicit(&s->g.busy[w->idx].v, 0, memory_order_relaxed);
        reply(c, code);
        if (is_admin) admin_reap(s, 0);
    }
    return NULL;
}

/* ------------------------------------------------------------ leader */

/* Overload episodes (the leader only): the first rejection logs a
 * warning; a line every 10 s while it lasts; "over" once 1 s passes
 * without one. rejected: 1 for a rejection, 0 for any other event. */
static void overload_note(rk_server *s, int rejected) {
    double now = rk_now();
    if (rejected) {
        if (!s->ov_n) {
            s->ov_t0 = s->ov_tlog = now;
            rk_warn("overload: Rank queue full (%d), answering RESOURCE_EXHAUSTED", s->o.queue_depth);
        }
        s->ov_n++;
        s->ov_tlast = now;
        if (now - s->ov_tlog >= 10.0) {
            s->ov_tlog = now;
            rk_warn("overload: %llu calls rejected in %.0f s so far", (unsigned long long)s->ov_n, now - s->ov_t0);
        }
    } else if (s->ov_n && now - s->ov_tlast > 1.0) {
        rk_warn("overload over: %llu calls rejected in %.1f s", (unsigned long long)s->ov_n, s->ov_tlast - s->ov_t0);
        s->ov_n = 0;
    }
}

/* A new Rank (or ApplyUpdates) call: queue it, or answer
 * RESOURCE_EXHAUSTED when full. */
static void accept_queued(rk_server *s, call_ctx *c) {
    c->t_accepted = rk_now();
    callq *q = c->kind == K_APPLY ? &s->aq : &s->rq;
    if (c->kind == K_APPLY) c->ver = ver_acquire(s);
    if (q_push(q, c)) return;
    if (c->ver) ver_release(c->ver);
    c->ver = NULL;
    char msg[128];
    snprintf(msg, sizeof msg, "server overloaded: %d %s requests already queued", q->cap,
             c->kind == K_APPLY ? "Admin" : "Rank");
    c->status_details = grpc_slice_from_copied_string(msg);
    if (c->kind == K_RANK) {
        atomic_fetch_add_explicit(&s->g.rejected, 1, memory_order_relaxed);
        overload_note(s, 1);
    }
    reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED);
}

/* ------------------------------------------------------------ Health/Watch */

/* Send c's current status if it changed and nothing is in flight. wmu held. */
static void watch_push_locked(rk_server *s, call_ctx *c) {
    if (c->watch_sending || c->watch_closed) return;
    int hs = health_status(s, c->watch_svc);
    if (hs == c->watch_last) return;
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)hs;
    uint8_t buf[16];
    size_t len = grpc__health__v1__health_check_response__pack(&r, buf);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    set_reply(c, buf, len);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (c->watch_last == 0) { /* the stream's first message */
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->reply;
    n++;
    c->watch_last = hs;
    c->watch_sending = 1;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) c->watch_sending = 0;
}

/* Every open Watch stream gets its service's status if it changed. */
static void watch_notify(rk_server *s) {
    pthread_mutex_lock(&s->wmu);
    for (call_ctx *c = s->watches; c; c = c->watch_next) watch_push_locked(s, c);
    pthread_mutex_unlock(&s->wmu);
}

/* Unlink c and release it once its stream is over and no send is in flight. wmu held. */
static int watch_finish_locked(rk_server *s, call_ctx *c) {
    if (!c->watch_closed || c->watch_sending) return 0;
    for (call_ctx **p = &s->watches; *p; p = &(*p)->watch_next)
        if (*p == c) {
            *p = c->watch_next;
            s->n_watches--;
            break;
        }
    return 1;
}

static void watch_closed(rk_server *s, call_ctx *c) {
    pthread_mutex_lock(&s->wmu);
    c->watch_closed = 1;
    int done = watch_finish_locked(s, c);
    pthread_mutex_unlock(&s->wmu);
    if (done) ctx_put(c);
}

static void watch_sent(rk_server *s, call_ctx *c) {
    pthread_mutex_lock(&s->wmu);
    c->watch_sending = 0;
    int done = watch_finish_locked(s, c);
    if (!done) watch_push_locked(s, c);
    pthread_mutex_unlock(&s->wmu);
    if (done) ctx_put(c);
}

/* A new Watch: its first status now, later ones as they change; the stream
 * ends when the client goes or the server stops (UNAVAILABLE). */
static void watch_start(rk_server *s, call_ctx *c) {
    grpc_status_code pcode;
    long n = read_request(c, s->health_in, sizeof s->health_in, &pcode); /* the leader's buffer */
    if (n < 0) {
        reply(c, pcode);
        return;
    }
    Grpc__Health__V1__HealthCheckRequest *req =
        grpc__health__v1__health_check_request__unpack(&rk_pb_allocator, (size_t)n, s->health_in);
    if (!req) {
        c->status_details = grpc_slice_from_static_string("request is not a valid grpc.health.v1.HealthCheckRequest");
        reply(c, GRPC_STATUS_INVALID_ARGUMENT);
        return;
    }
    snprintf(c->watch_svc, sizeof c->watch_svc, "%s", req->service ? req->service : "");
    grpc__health__v1__health_check_request__free_unpacked(req, &rk_pb_allocator);
    pthread_mutex_lock(&s->wmu);
    if (s->n_watches >= MAX_WATCHES || atomic_load(&s->shutting_down)) {
        pthread_mutex_unlock(&s->wmu);
        c->status_details = grpc_slice_from_static_string(s->n_watches >= MAX_WATCHES
                                                              ? "too many Health/Watch streams open"
                                                              : "server shutting down");
        reply(c, s->n_watches >= MAX_WATCHES ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE);
        return;
    }
    c->state = S_WATCHING;
    c->watch_next = s->watches;
    s->watches = c;
    s->n_watches++;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, (char *)c + 1, NULL) != GRPC_CALL_OK) c->watch_closed = 1;
    watch_push_locked(s, c);
    int done = watch_finish_locked(s, c);
    pthread_mutex_unlock(&s->wmu);
    if (done) ctx_put(c);
}

/* Stop: every stream gets NOT_SERVING (when it can) and is cancelled. */
static void watch_end_all(rk_server *s) {
    watch_notify(s);
    pthread_mutex_lock(&s->wmu);
    for (call_ctx *c = s->watches; c; c = c->watch_next)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
    pthread_mutex_unlock(&s->wmu);
}

/* ------------------------------------------------------------ reflection */

/* A reflection stream is one context on the leader: each batch receives
 * the next request message and (after the first) sends the answer to the
 * previous one; no message (the client closed its side) ends the stream
 * with OK. The open streams are listed (under wmu) so stop can cancel them. */

static void reflect_unlink(rk_server *s, call_ctx *c) {
    pthread_mutex_lock(&s->wmu);
    for (call_ctx **p = &s->reflects; *p; p = &(*p)->watch_next)
        if (*p == c) {
            *p = c->watch_next;
            s->n_reflects--;
            break;
        }
    pthread_mutex_unlock(&s->wmu);
}

/* End the stream with code and msg (NULL: the details already set; its
 * initial metadata went with the first batch). */
static void reflect_finish(call_ctx *c, grpc_status_code code, const char *msg) {
    reflect_unlink(c->srv, c);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    if (msg) {
        grpc_slice_unref(c->status_details);
        c->status_details = grpc_slice_from_copied_string(msg);
    }
    ops[0].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[0].data.send_status_from_server.status = code;
    ops[0].data.send_status_from_server.status_details = &c->status_details;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &c->cancelled;
    c->state = S_REPLYING;
    if (grpc_call_start_batch(c->call, ops, 2, c, NULL) != GRPC_CALL_OK) ctx_put(c);
}

/* Receive the next request, sending c->reply (if any) in the same batch;
 * first: the stream's initial metadata too. */
static void reflect_next(call_ctx *c, int first) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (first) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->reply) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &c->payload;
    c->state = S_REFLECTING;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
        reflect_unlink(c->srv, c);
        ctx_put(c);
    }
}

static void reflect_start(rk_server *s, call_ctx *c) {
    pthread_mutex_lock(&s->wmu);
    int full = s->n_reflects >= MAX_REFLECTS || atomic_load(&s->shutting_down);
    if (!full) {
        c->watch_next = s->reflects;
        s->reflects = c;
        s->n_reflects++;
    }
    pthread_mutex_unlock(&s->wmu);
    if (full) {
        c->status_details = grpc_slice_from_static_string("too many reflection streams open, or shutting down");
        reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED);
        return;
    }
    reflect_next(c, 1);
}

/* A batch of stream c completed: answer the message it received. */
static void reflect_step(rk_server *s, call_ctx *c, int success) {
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    c->reply = NULL;
    if (!success) { /* the client went away or the call was cancelled */
        reflect_unlink(s, c);
        ctx_put(c);
        return;
    }
    if (!c->payload) {
        reflect_finish(c, GRPC_STATUS_OK, "");
        return;
    }
    grpc_status_code pcode = GRPC_STATUS_OK;
    long n = read_request(c, s->health_in, sizeof s->health_in, &pcode); /* the leader's buffer */
    grpc_byte_buffer_destroy(c->payload);
    c->payload = NULL;
    uint8_t *out = NULL;
    size_t len = 0;
    rk_err err = {0};
    if (n < 0) {
        reflect_finish(c, pcode, NULL); /* read_request set the details */
    } else if (rk_reflection_answer(s->reflection, s->health_in, (size_t)n, &out, &len, &err)) {
        reflect_finish(c, GRPC_STATUS_INVALID_ARGUMENT, err.msg);
    } else {
        set_reply(c, out, len);
        rk_free(out);
        reflect_next(c, 0);
    }
}

/* Stop: every open stream is cancelled (its batch completes unsuccessfully). */
static void reflect_end_all(rk_server *s) {
    pthread_mutex_lock(&s->wmu);
    for (call_ctx *c = s->reflects; c; c = c->watch_next)
        grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
    pthread_mutex_unlock(&s->wmu);
}

/* One completion-queue event, on the leader (header comment). */
static void handle_event(rk_server *s, grpc_event ev) {
    if ((uintptr_t)ev.tag & 1) { /* a Health/Watch stream is over */
        watch_closed(s, (call_ctx *)((char *)ev.tag - 1));
        return;
    }
    if (s->ov_n) overload_note(s, 0);
    call_ctx *c = ev.tag;
    if (c->state == S_WATCHING) {
        watch_sent(s, c);
        return;
    }
    if (c->state == S_REFLECTING) {
        reflect_step(s, c, ev.success);
        return;
    }
    if (c->state == S_REPLYING || !ev.success) {
        /* reply done (or failed: the client went away), or the server is
         * shutting down and the request will not be matched */
        ctx_put(c);
        return;
    }
    call_kind kind = c->kind;
    /* Re-post first, so core never holds a call no request can match. */
    if (!atomic_load(&s->shutting_down)) post(s, kind);
    switch (kind) {
    case K_RANK:
    case K_APPLY: accept_queued(s, c); break;
    case K_HEALTH: reply(c, handle_health(c)); break;
    case K_META: reply(c, handle_metadata(c)); break;
    case K_WATCH: watch_start(s, c); break;
    case K_REFLECT:
    case K_REFLECT1: reflect_start(s, c); break;
    default: reply(c, handle_generic(c)); break;
    }
}

#define RK_DRAIN_MAX 64 /* events handled per turn once a Rank call is queued */

/* The leader's turn: handle events, waiting for them while no Rank call is
 * queued; once one is, only those already available (a zero deadline, at
 * most RK_DRAIN_MAX). 1 when the completion queue is shut down. */
static int poll_cq(rk_server *s) {
    for (int drained = 0; drained < RK_DRAIN_MAX;) {
        pthread_mutex_lock(&s->rq.mu);
        int queued = s->rq.len > 0;
        pthread_mutex_unlock(&s->rq.mu);
        gpr_timespec dl = queued ? gpr_time_0(GPR_CLOCK_MONOTONIC) : gpr_inf_future(GPR_CLOCK_MONOTONIC);
        grpc_event ev = grpc_completion_queue_next(s->cq, dl, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return 1;
        if (ev.type == GRPC_QUEUE_TIMEOUT) return 0;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        handle_event(s, ev);
        drained += queued;
    }
    return 0;
}

/* The next Rank call for worker w: the head of the FIFO, else w leads (polls
 * the completion queue) while no other worker does, else it waits. NULL once
 * stopped and empty. */
static call_ctx *rank_next(worker *w) {
    rk_server *s = w->srv;
    callq *q = &s->rq;
    call_ctx *c = NULL;
    pthread_mutex_lock(&q->mu);
    while (!c) {
        if (q->len) {
            c = q->ring[q->head];
            q->head = (q->head + 1) % q->cap;
            q->len--;
            atomic_store_explicit(q->len_gauge, q->len, memory_order_relaxed);
        } else if (q->stop) {
            break;
        } else if (!q->leading && !q->cq_done) {
            q->leading = 1;
            pthread_mutex_unlock(&q->mu);
            int done = poll_cq(s);
            pthread_mutex_lock(&q->mu);
            q->leading = 0;
            q->cq_done |= done;
            pthread_cond_signal(&q->cv); /* a waiting worker leads while this one scores */
        } else {
            pthread_cond_wait(&q->cv, &q->mu);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return c;
}

/* ------------------------------------------------------------ start / stop */

void rk_server_get_counters(const rk_server *s, rk_server_counters *out) {
    rk_server *m = (rk_server *)s; /* atomics: loads only */
    rk_live_totals(m->metrics, out);
    out->rank_rejected = atomic_load_explicit(&m->g.rejected, memory_order_relaxed);
    out->rank_failed += out->rank_rejected;
    out->health = atomic_load_explicit(&m->g.health, memory_order_relaxed);
    out->unimplemented = atomic_load_explicit(&m->g.unimplemented, memory_order_relaxed);
}

int rk_server_metrics_port(const rk_server *s) { return s->metrics_port; }

/* Free what start created, in the reverse order; for a failed start and for
 * the last step of stop. Threads must have been joined. */
static void server_free(rk_server *s) {
    for (int i = 0; i < s->n_models; i++) /* the server's references; no call holds one any more */
        for (int k = 0; k < s->models[i].n; k++) ver_release(s->models[i].v[k]);
    if (s->workers) {
        for (int i = 0; i < s->n_workers; i++) rk_free(s->workers[i].in);
        rk_free(s->workers);
    }
    for (size_t k = 0; k < s->n_all; k++) rk_free(s->all[k]);
    rk_free(s->all);
    q_free(&s->rq);
    q_free(&s->aq);
    rk_free(s->admin.in);
    rk_live_destroy(s->metrics); /* after every version: they detach from it */
    rk_auth_destroy(s->auth);
    rk_reflection_destroy(s->reflection);
    rk_free(s->g.busy);
    pthread_mutex_destroy(&s->fmu);
    pthread_mutex_destroy(&s->vmu);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->reload_mu);
    rk_free(s);
}

/* Wait until every call context is back on the free list. It reaps acq
 * while it waits (a plain sleep here could wait forever: an Admin reply
 * that completed after the admin thread's last admin_reap is released by
 * nobody else). */
static void wait_contexts(rk_server *s) {
    while (atomic_load(&s->live) > 0) admin_reap(s, 1);
}

/* Release the posted contexts when no worker started (a failed
 * start), from the calling thread: after shutdown_and_notify they complete
 * at once with success == 0. */
static void drain_unstarted(rk_server *s) {
    for (;;) {
        grpc_event e = grpc_completion_queue_next(
            s->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)), NULL);
        if (e.type != GRPC_OP_COMPLETE) break;
        ctx_put(e.tag);
    }
}

/* Shut acq down once the server is destroyed (every context is back). */
static void acq_close(rk_server *s) {
    grpc_completion_queue_shutdown(s->acq);
    grpc_event ev;
    while ((ev = grpc_completion_queue_next(s->acq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)).type != GRPC_QUEUE_SHUTDOWN)
        if (ev.type == GRPC_OP_COMPLETE) ctx_put(ev.tag);
    grpc_completion_queue_destroy(s->acq);
}

static void stop_workers(rk_server *s) {
    q_stop(&s->rq);
    q_stop(&s->aq);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].thread_started) pthread_join(s->workers[i].thread, NULL);
    if (s->admin.thread_started) pthread_join(s->admin.thread, NULL);
}

/* grpc_server_add_http2_port failed on a TLS port: does HOST:PORT bind as a
 * plain socket (every address it resolves to, as gRPC binds them)? Then the
 * certificate, key or client CA were refused (gRPC checks them only when
 * binding), not the address. */
static int tls_refused(const char *listen, rk_auth *auth) {
    const char *colon = strrchr(listen, ':');
    char host[256];
    size_t n = colon ? (size_t)(colon - listen) : 0;
    if (!rk_auth_tls(auth) || !colon || n >= sizeof host) return 0;
    memcpy(host, listen, n);
    host[n] = 0;
    char *h = host;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') host[n - 1] = 0, h++;
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(*h ? h : NULL, colon + 1, &hints, &res) != 0) return 0;
    int binds = 1;
    for (struct addrinfo *ai = res; ai && binds; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        binds = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (fd >= 0) close(fd);
    }
    freeaddrinfo(res);
    return binds;
}

/* gRPC's own log lines (gpr_log) go through rk_log, in its format and under
 * its level, at most GRPC_LOG_PER_S a second: gRPC logs some client errors
 * once per call (an invalid grpc-encoding header: "Error parsing
 * metadata"), which a client could repeat to flood the log. The lines
 * dropped are counted in the next one written; an assertion's line (gRPC
 * aborts after it) is never dropped, nor is anything while GRPC_TRACE asks
 * for gRPC's traces. Process-wide, set once. */
#define GRPC_LOG_PER_S 10
static pthread_mutex_t grpc_log_mu = PTHREAD_MUTEX_INITIALIZER;
static long grpc_log_sec, grpc_log_n, grpc_log_dropped; /* under grpc_log_mu */
static int grpc_log_unlimited;                          /* GRPC_TRACE set: set once, before any line */
static pthread_once_t grpc_once = PTHREAD_ONCE_INIT;

static void grpc_log_to_rk(gpr_log_func_args *a) {
    rk_log_level lvl = a->severity == GPR_LOG_SEVERITY_ERROR  ? RK_LOG_ERROR
                       : a->severity == GPR_LOG_SEVERITY_INFO ? RK_LOG_INFO
                                                              : RK_LOG_DEBUG;
    const char *msg = a->message ? a->message : "";
    if (!rk_log_enabled(lvl)) return;
    int always = grpc_log_unlimited || strncmp(msg, "assertion failed", 16) == 0;
    long dropped = 0;
    pthread_mutex_lock(&grpc_log_mu);
    long sec = (long)rk_now();
    if (sec > grpc_log_sec) {
        grpc_log_sec = sec;
        grpc_log_n = 0;
    }
    int write = always || grpc_log_n < GRPC_LOG_PER_S;
    if (write) {
        grpc_log_n++;
        dropped = grpc_log_dropped;
        grpc_log_dropped = 0;
    } else {
        grpc_log_dropped++;
    }
    pthread_mutex_unlock(&grpc_log_mu);
    if (!write) return;
    const char *base = a->file ? strrchr(a->file, '/') : NULL;
    char more[64] = "";
    if (dropped) snprintf(more, sizeof more, " [%ld earlier gRPC lines not logged]", dropped);
    rk_log(lvl, "grpc (%s:%d)%s: %.900s", base ? base + 1 : a->file ? a->file : "?", a->line, more, msg);
}

/* Once per process, before grpc_init: gRPC's log lines through rk_log, and
 * Abseil's debug-build lock-order graph off (absl_mode.cc). */
static void grpc_process_init(void) {
    const char *trace = getenv("GRPC_TRACE");
    grpc_log_unlimited = trace && *trace;
    gpr_set_log_function(grpc_log_to_rk);
    rk_absl_deadlock_detection_off();
}

void rk_grpc_init(void) {
    pthread_once(&grpc_once, grpc_process_init);
    grpc_init();
}

rk_status rk_server_start(const rk_server_opts *o, const rk_model *m, rk_server **out,
                          int *bound_port, rk_err *err) {
    *out = NULL;
    if (bound_port) *bound_port = 0;
    if (!o->listen || !o->listen[0]) return rk_fail(err, RK_EINVAL, "listen: empty address");
    if (strlen(o->listen) >= 256) return rk_fail(err, RK_EINVAL, "listen: address too long");
    if (o->threads < 1 || o->threads > 256)
        return rk_fail(err, RK_EINVAL, "threads: %d, must be 1..256", o->threads);
    if (o->requests_per_worker < 1 || o->requests_per_worker > 1024)
        return rk_fail(err, RK_EINVAL, "requests_per_worker: %d, must be 1..1024",
                       o->requests_per_worker);
    if (o->queue_depth < 1 || o->queue_depth > 1000000)
        return rk_fail(err, RK_EINVAL, "queue_depth: %d, must be 1..1000000", o->queue_depth);
    if (o->max_message_bytes < 64)
        return rk_fail(err, RK_EINVAL, "max_message_bytes: %d, must be at least 64",
                       o->max_message_bytes);
    if (o->encoder_dir && m) {
        rk_status est = rk_model_check_encoder(m, o->encoder_dir, err);
        if (est) return est;
    }
    rk_server *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "server: out of memory");
    pthread_mutex_init(&s->fmu, NULL);
    pthread_mutex_init(&s->vmu, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->reload_mu, NULL);
    s->o = *o;
    snprintf(s->listen, sizeof s->listen, "%s", o->listen);
    s->o.listen = s->listen;
    s->n_workers = o->threads;
    s->workers = rk_calloc((size_t)o->threads, sizeof *s->workers);
    q_init(&s->rq, o->queue_depth, &s->g.queue_len);
    q_init(&s->aq, ADMIN_QUEUE, NULL);
    s->admin.srv = s;
    s->admin.idx = o->threads; /* its stripe: after the workers' */
    s->admin.in_cap = (size_t)o->max_message_bytes;
    s->admin.in = rk_malloc(s->admin.in_cap);
    s->g.busy = rk_calloc((size_t)o->threads, sizeof *s->g.busy);
    s->g.n_workers = o->threads;
    s->g.queue_cap = o->queue_depth;
    snprintf(s->g.grpc_version, sizeof s->g.grpc_version, "%s", grpc_version_string());
    if (!s->workers || !s->rq.ring || !s->aq.ring || !s->admin.in || !s->g.busy) {
        server_free(s);
        return rk_fail(err, RK_ENOMEM, "server: out of memory");
    }
    {
        rk_status st = rk_auth_create(o, &s->auth, err);
        if (st == RK_OK) st = rk_live_create(o->threads + 1, &s->g, &s->metrics, err);
        if (st == RK_OK && !o->no_reflection) st = rk_reflection_create(&s->reflection, err);
        if (st == RK_OK && o->metrics_listen)
            st = rk_live_listen(s->metrics, o->metrics_listen, &s->metrics_port, err);
        if (st) {
            server_free(s);
            return st;
        }
    }
    /* Call contexts for every posted request, a full queue and one reply in
     * flight per worker: the steady state allocates none. */
    int n_posted = o->threads * o->requests_per_worker + K_N - 1;
    for (int i = 0; i < n_posted + o->queue_depth + ADMIN_QUEUE + 2 * o->threads + 1; i++) {
        call_ctx *c = ctx_alloc_locked(s);
        if (!c) {
            server_free(s);
            return rk_fail(err, RK_ENOMEM, "server: out of memory for call contexts");
        }
        c->next_free = s->free_list;
        s->free_list = c;
    }
    /* Per-worker model state first: nothing of gRPC exists yet if it fails. */
    for (int i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        w->srv = s;
        w->idx = i;
        w->in_cap = (size_t)o->max_message_bytes;
        w->in = rk_malloc(w->in_cap);
        if (!w->in) {
            server_free(s);
            return rk_fail(err, RK_ENOMEM, "server: out of memory for request buffers");
        }
    }
    {
        /* The model is only written through rk_model_apply_updates, which
         * synchronizes with scoring itself (o->updates; doc of rank.h). */
        rk_status st = m ? ver_create(s, (rk_model *)m, o->own_model, rk_model_config(m)->name,
                                      rk_model_config(m)->version, -1, &s->start_ver, err)
                         : RK_OK;
        if (st) {
            server_free(s);
            return st;
        }
        if (m && !o->own_model) {
            s->borrowed = (rk_model *)m;
            s->borrowed_dev = s->start_ver->dev;
            s->borrowed_ino = s->start_ver->ino;
        }
        if (m) {
            snprintf(s->models[0].name, sizeof s->models[0].name, "%s", s->start_ver->name);
            s->models[0].v[0] = s->start_ver;
            s->models[0].n = s->n_models = 1;
            atomic_store(&s->start_ver->vs->serving, 1);
        }
    }

    rk_grpc_init();
    /* gRPC's own decompression is off: it inflated a request whole before
     * any size check (a 1.5 MB gzip of zeros grew rankd by 1.5 GB); the
     * handlers inflate under max_message_bytes (rk_payload_read). Channelz's
     * per-call counters are off: rankd serves no channelz service. gRPC's
     * minimal stack (no deadline, message-size or compression filter) was
     * measured and not kept: once rankd did those filters' jobs itself
     * (stream deadlines, grpc-accept-encoding) it saved no CPU per Rank call
     * beyond the host's noise (bench/RESULTS.md, stop 17). */
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = o->max_message_bytes}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}}, /* a used port must fail (c-stack.md §2.6) */
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = -1}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, {.integer = 0}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_CHANNELZ, {.integer = 0}},
    };
    grpc_channel_args ca = {sizeof args / sizeof args[0], args};
    s->server = grpc_server_create(&ca, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    grpc_completion_queue_attributes acq_at = {GRPC_CQ_CURRENT_VERSION, GRPC_CQ_NEXT, GRPC_CQ_NON_POLLING, NULL};
    s->acq = grpc_completion_queue_create(grpc_completion_queue_factory_lookup(&acq_at), &acq_at, NULL);
    s->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
    const char *const names[K_N] = {RANK_METHOD, HEALTH_METHOD, NULL, APPLY_METHOD, META_METHOD, WATCH_METHOD,
                                    s->reflection ? REFLECT_METHOD : NULL, s->reflection ? REFLECT1_METHOD : NULL};
    int reg_ok = 1;
    for (int k = 0; k < K_N; k++)
        if (names[k]) {
            int streaming = k == K_REFLECT || k == K_REFLECT1;
            s->method[k] = grpc_server_register_method(
                s->server, names[k], NULL, streaming ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
            reg_ok &= s->method[k] != NULL;
        }
    grpc_server_credentials *creds = rk_auth_server_credentials(s->auth);
    int port = grpc_server_add_http2_port(s->server, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0 || !reg_ok) {
        rk_status st = reg_ok && tls_refused(s->listen, s->auth)
                           ? rk_fail(err, RK_EINVAL,
                                     "tls: gRPC refused --tls-cert %s / --tls-key %s%s%s (a key that does not match the "
                                     "certificate, or a damaged PEM); %s itself is free",
                                     s->o.tls_cert_file, s->o.tls_key_file,
                                     s->o.tls_client_ca_file ? " / --tls-client-ca " : "",
                                     s->o.tls_client_ca_file ? s->o.tls_client_ca_file : "", s->listen)
                           : rk_fail(err, RK_EIO, "cannot listen on %s: address in use or invalid", s->listen);
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s->cq);
        acq_close(s);
        grpc_completion_queue_shutdown(s->shutdown_cq);
        grpc_completion_queue_destroy(s->shutdown_cq);
        if (s->start_ver) s->start_ver->owned = 0; /* a failed start leaves m to the caller */
        server_free(s);
        grpc_shutdown();
        return st;
    }
    grpc_server_start(s->server);
    s->started = 1;
    /* Post the first requests from here, before any thread runs. */
    int bad = 0;
    for (int k = 0; k < o->threads * o->requests_per_worker; k++) bad |= post(s, K_RANK);
    bad |= post(s, K_HEALTH);
    bad |= post(s, K_META);
    bad |= post(s, K_WATCH);
    bad |= post(s, K_GENERIC);
    bad |= post(s, K_APPLY);
    if (s->reflection) bad |= post(s, K_REFLECT) | post(s, K_REFLECT1);
    if (bad) {
        if (s->start_ver) s->start_ver->owned = 0; /* a failed start leaves m to the caller */
        rk_server_stop(s, NULL);
        return rk_fail(err, RK_ENOMEM, "server: cannot post requests");
    }
    for (int i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w)) {
            if (s->start_ver) s->start_ver->owned = 0;
            rk_server_stop(s, NULL);
            return rk_fail(err, RK_EINTERNAL, "server: cannot start worker thread %d", i);
        }
        w->thread_started = 1;
        s->pollers++;
    }
    if (pthread_create(&s->admin.thread, NULL, worker_main, &s->admin)) {
        if (s->start_ver) s->start_ver->owned = 0;
        rk_server_stop(s, NULL);
        return rk_fail(err, RK_EINTERNAL, "server: cannot start the admin thread");
    }
    s->admin.thread_started = 1;
    if (bound_port) *bound_port = port;
    *out = s;
    return RK_OK;
}

/* Open the bundle at real (resolved), as the server opens every version. */
static rk_status open_bundle(rk_server *s, const char *real, rk_model **m, vclock *vc, rk_err *err) {
    *m = NULL;
    rk_status st = rk_model_open_ex(real, s->o.updates, m, err);
    vclock_mark(vc, "open");
    if (st == RK_OK && s->o.ram_tables_bytes) st = rk_model_tables_to_ram(*m, s->o.ram_tables_bytes, NULL, err);
    vclock_mark(vc, "ram");
    if (st == RK_OK && s->o.encoder_dir) st = rk_model_check_encoder(*m, s->o.encoder_dir, err);
    if (st) {
        rk_model_destroy(*m);
        *m = NULL;
    }
    return st;
}

/* A load that failed after taking reload_mu: close what was opened, count it. */
static rk_status load_failed(rk_server *s, rk_model *m, rk_status st) {
    rk_model_destroy(m);
    pthread_mutex_unlock(&s->reload_mu);
    atomic_fetch_add(&s->g.reloads[2], 1);
    return st;
}

static rk_status reload_now(rk_server *s, const char *dir, int *switched, rk_err *err) {
    if (switched) *switched = 0;
    char real[PATH_MAX];
    if (!realpath(dir, real)) {
        atomic_fetch_add(&s->g.reloads[2], 1);
        return rk_fail(err, RK_ENOTFOUND, "model bundle %s: %s", dir, strerror(errno));
    }
    pthread_mutex_lock(&s->reload_mu);
    model_ver *cur = s->n_models ? s->models[0].v[0] : NULL; /* changes only under reload_mu */
    struct stat sb;
    int same_dir = cur && !strcmp(real, cur->dir) && stat(real, &sb) == 0 && sb.st_dev == cur->dev &&
                   sb.st_ino == cur->ino;
    if (same_dir) {
        pthread_mutex_unlock(&s->reload_mu);
        atomic_fetch_add(&s->g.reloads[1], 1);
        return RK_OK;
    }
    rk_model *m = NULL;
    model_ver *v = NULL;
    /* back to the caller's start-up bundle (still open): serve that model again */
    int reuse = s->borrowed && !strcmp(real, rk_model_dir(s->borrowed)) && stat(real, &sb) == 0 &&
                sb.st_dev == s->borrowed_dev && sb.st_ino == s->borrowed_ino;
    rk_status st = reuse ? (m = s->borrowed, RK_OK) : open_bundle(s, real, &m, NULL, err);
    if (st == RK_OK && cur) st = rk_schema_check(cur->m, m, err);
    if (st == RK_OK) {
        const rk_model_cfg *c = rk_model_config(m);
        st = ver_create(s, m, !reuse, cur ? cur->name : c->name, c->version, -1, &v, err);
    }
    if (st) return load_failed(s, reuse ? NULL : m, st);
    pthread_mutex_lock(&s->vmu);
    if (!cur) {
        snprintf(s->models[0].name, sizeof s->models[0].name, "%s", v->name);
        s->n_models = 1;
    }
    s->models[0].v[0] = v;
    s->models[0].n = 1;
    pthread_mutex_unlock(&s->vmu);
    atomic_store(&v->vs->serving, 1);
    watch_notify(s);
    if (cur) ver_retire(s, cur, NULL);
    pthread_mutex_unlock(&s->reload_mu);
    atomic_fetch_add(&s->g.reloads[0], 1);
    if (switched) *switched = 1;
    return RK_OK;
}

static rk_status load_version_now(rk_server *s, const char *name, const char *label, long long num,
                                  const char *dir, rk_err *err) {
    char real[PATH_MAX];
    if (!realpath(dir, real)) return rk_fail(err, RK_ENOTFOUND, "model bundle %s: %s", dir, strerror(errno));
    pthread_mutex_lock(&s->reload_mu);
    rk_status st = RK_OK;
    served_model *sm = find_model_locked(s, name, strlen(name)); /* stable under reload_mu */
    if (!name[0]) sm = NULL, st = rk_fail(err, RK_EINVAL, "model name: empty");
    else if (sm && sm->n == RK_MAX_VERSIONS)
        st = rk_fail(err, RK_EINVAL, "model %s: already %d versions served", name, RK_MAX_VERSIONS);
    else if (!sm && s->n_models == RK_MAX_MODELS)
        st = rk_fail(err, RK_EINVAL, "model %s: already %d models served", name, RK_MAX_MODELS);
    for (int i = 0; st == RK_OK && sm && i < sm->n; i++)
        if (!strcmp(sm->v[i]->label, label)) st = rk_fail(err, RK_EEXIST, "model %s version %s: already served", name, label);
    rk_model *m = NULL;
    model_ver *v = NULL;
    vclock vc = {0};
    vclock_mark(&vc, "start");
    if (st == RK_OK) st = open_bundle(s, real, &m, &vc, err);
    if (st == RK_OK && sm) st = rk_schema_check(sm->v[0]->m, m, err);
    vclock_mark(&vc, "schema");
    if (st == RK_OK) st = ver_create(s, m, 1, name, label, num, &v, err);
    vclock_mark(&vc, "warm-up");
    if (st) return load_failed(s, m, st);
    pthread_mutex_lock(&s->vmu);
    if (!sm) {
        sm = &s->models[s->n_models];
        memset(sm, 0, sizeof *sm);
        snprintf(sm->name, sizeof sm->name, "%s", name);
        s->n_models++;
    }
    int at = 0; /* newest first */
    while (at < sm->n && sm->v[at]->num > num) at++;
    memmove(&sm->v[at + 1], &sm->v[at], (size_t)(sm->n - at) * sizeof sm->v[0]);
    sm->v[at] = v;
    sm->n++;
    pthread_mutex_unlock(&s->vmu);
    atomic_store(&v->vs->serving, 1);
    pthread_mutex_unlock(&s->reload_mu);
    watch_notify(s);
    atomic_fetch_add(&s->g.reloads[0], 1);
    vclock_mark(&vc, "switch");
    char what[300];
    snprintf(what, sizeof what, "model %s version %s load", name, label);
    vclock_log(&vc, what);
    return RK_OK;
}

static rk_status unload_version_now(rk_server *s, const char *name, const char *label, rk_err *err) {
    vclock vc = {0};
    vclock_mark(&vc, "start");
    pthread_mutex_lock(&s->reload_mu);
    pthread_mutex_lock(&s->vmu);
    served_model *sm = name[0] ? find_model_locked(s, name, strlen(name)) : NULL;
    model_ver *v = NULL;
    for (int i = 0; sm && i < sm->n && !v; i++)
        if (!strcmp(sm->v[i]->label, label)) {
            v = sm->v[i];
            memmove(&sm->v[i], &sm->v[i + 1], (size_t)(sm->n - i - 1) * sizeof sm->v[0]);
            sm->n--;
        }
    if (sm && sm->n == 0) { /* the model goes with its last version */
        int k = (int)(sm - s->models);
        memmove(&s->models[k], &s->models[k + 1], (size_t)(s->n_models - k - 1) * sizeof s->models[0]);
        s->n_models--;
    }
    pthread_mutex_unlock(&s->vmu);
    watch_notify(s);
    if (v) ver_retire(s, v, &vc);
    pthread_mutex_unlock(&s->reload_mu);
    if (!v) return rk_fail(err, RK_ENOTFOUND, "model %s version %s: not served", name, label);
    char what[300];
    snprintf(what, sizeof what, "model %s version %s unload", name, label);
    vclock_log(&vc, what);
    return RK_OK;
}

/* ------------------------------------------------ loads on a background thread */

/* One load, unload or reload, run by bg_main on a thread of its own at
 * background priority while the caller waits. */
typedef struct {
    enum { BG_RELOAD, BG_LOAD, BG_UNLOAD } op;
    rk_server *s;
    const char *name, *label, *dir;
    long long num;
    int *switched;
    rk_err *err;
    rk_status st;
} bg_job;

static void bg_do(bg_job *j) {
    j->st = j->op == BG_RELOAD ? reload_now(j->s, j->dir, j->switched, j->err)
            : j->op == BG_LOAD ? load_version_now(j->s, j->name, j->label, j->num, j->dir, j->err)
                               : unload_version_now(j->s, j->name, j->label, j->err);
}

static void *bg_main(void *arg) {
    thread_background();
    bg_do(arg);
    return NULL;
}

/* j on its own background thread, or on this one (its priority unchanged)
 * if none can start. */
static rk_status bg_run(bg_job *j) {
    pthread_t t;
    if (pthread_create(&t, NULL, bg_main, j)) bg_do(j);
    else pthread_join(t, NULL);
    return j->st;
}

rk_status rk_server_reload(rk_server *s, const char *dir, int *switched, rk_err *err) {
    bg_job j = {.op = BG_RELOAD, .s = s, .dir = dir, .switched = switched, .err = err};
    return bg_run(&j);
}

rk_status rk_server_load_version(rk_server *s, const char *name, const char *label, long long num,
                                 const char *dir, rk_err *err) {
    bg_job j = {.op = BG_LOAD, .s = s, .name = name, .label = label, .num = num, .dir = dir, .err = err};
    return bg_run(&j);
}

rk_status rk_server_unload_version(rk_server *s, const char *name, const char *label, rk_err *err) {
    bg_job j = {.op = BG_UNLOAD, .s = s, .name = name, .label = label, .err = err};
    return bg_run(&j);
}

int rk_server_list(rk_server *s, rk_served_version *out, int cap) {
    int n = 0;
    pthread_mutex_lock(&s->vmu);
    for (int i = 0; i < s->n_models; i++)
        for (int k = 0; k < s->models[i].n; k++, n++) {
            if (n >= cap) continue;
            const model_ver *v = s->models[i].v[k];
            snprintf(out[n].name, sizeof out[n].name, "%s", v->name);
            snprintf(out[n].version, sizeof out[n].version, "%s", v->label);
            snprintf(out[n].dir, sizeof out[n].dir, "%s", v->dir);
            out[n].num = v->num;
        }
    pthread_mutex_unlock(&s->vmu);
    return n;
}

void rk_server_current(rk_server *s, char *version, size_t vcap, char *dir, size_t dcap) {
    model_ver *v = ver_acquire(s);
    if (version && vcap) snprintf(version, vcap, "%s", v ? rk_model_version(v->m) : "");
    if (dir && dcap) snprintf(dir, dcap, "%s", v ? v->dir : "");
    if (v) ver_release(v);
}

void rk_server_stop(rk_server *s, rk_server_counters *final) {
    if (!s) return;
    atomic_store(&s->shutting_down, 1);
    static int shutdown_tag;
    grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &shutdown_tag);
    watch_end_all(s);
    reflect_end_all(s);
    /* Our calls: the posted requests fail at once (released by the
     * leader); queued calls are answered by the workers; replies finish.
     * Give them grace_ms. */
    double t_end = rk_now() + s->o.grace_ms * 1e-3;
    if (!s->pollers) drain_unstarted(s);
    while (atomic_load(&s->live) > 0 && rk_now() < t_end) admin_reap(s, 1); /* an idle admin thread's last reply */
    /* Once none of ours is left, what core still waits for are calls no
     * handler will ever see (a call that raced the shutdown into the
     * pending queue, an idle connection): wait briefly, then cancel. */
    int wait_ms = atomic_load(&s->live) > 0 ? 0 : 200;
    grpc_event ev = grpc_completion_queue_pluck(
        s->shutdown_cq, &shutdown_tag,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(wait_ms, GPR_TIMESPAN)), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        if (atomic_load(&s->live) > 0)
            rk_warn("rankd: calls still running after %d ms: cancelling them", s->o.grace_ms);
        grpc_server_cancel_all_calls(s->server);
        grpc_completion_queue_pluck(s->shutdown_cq, &shutdown_tag,
                                    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    /* after a cancel, queued calls are still answered (their batches fail)
     * and every context comes back */
    if (s->pollers) wait_contexts(s);
    else drain_unstarted(s);
    grpc_server_destroy(s->server);
    /* no context is live, so no batch can start on cq any more: shut it
     * down; the leader sees GRPC_QUEUE_SHUTDOWN, the other workers the stop */
    grpc_completion_queue_shutdown(s->cq);
    stop_workers(s);
    if (!s->pollers)
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    grpc_completion_queue_destroy(s->cq);
    acq_close(s);
    grpc_completion_queue_shutdown(s->shutdown_cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    if (final) rk_server_get_counters(s, final);
    server_free(s);
    grpc_shutdown();
}
