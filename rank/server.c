/*
 * rank/server.c — rankd's gRPC server on the gRPC C core API (1.51).
 *
 * Layout (c-stack.md §2.5 layout (a)): one completion queue per worker
 * thread, each registered with the server, each worker owning an
 * rk_service (scorer, unpack arena, response buffers) so a worker never
 * shares request state. Every cq has posted at all times:
 *   - requests_per_worker registered requests for /rankd.v1.Ranker/Rank,
 *   - one registered request for /grpc.health.v1.Health/Check,
 *   - one generic grpc_server_request_call, answered UNIMPLEMENTED at once
 *     (without it an unknown method hangs until the client's deadline, §2.6).
 * A request is re-posted only after its call has been handled, so calls of
 * one busy channel spread over the idle workers instead of queueing behind a
 * busy one (§2.5).
 *
 * A call context (call_ctx) lives from the moment a request is posted until
 * its reply batch completes. Contexts come from a per-worker free list and
 * are only touched by their worker's thread (every event for them arrives
 * on that worker's cq), so there is no locking; the server keeps an atomic
 * count of live contexts for shutdown. Everything the worker needs after
 * grpc_call_start_batch is copied before it (§2.5 use-after-free trap).
 *
 * Shutdown (§2.2 step 8, §2.6): set the flag; grpc_server_shutdown_and_notify
 * (posted requests then complete with success == 0 and are released, not
 * re-posted; calls being answered finish); wait up to grace_ms until no call
 * context is live; then pluck the shutdown tag for at most 200 ms more and,
 * if it has not come, cancel every call and pluck again. (Under load a call
 * can race the shutdown into core's pending queue where no handler will see
 * it; the tag then never comes by itself: seen as a 5 s stall with the plain
 * grace-then-cancel sequence.) Then wait until no context is live (the tag
 * alone does not mean our handlers are done, and shutting a cq down under a
 * running handler aborts in grpc_cq_begin_op); destroy the server; shut the
 * cqs down; join the workers; destroy the cqs; grpc_shutdown().
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rank.h"

#define RANK_METHOD "/rankd.v1.Ranker/Rank"
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define RANK_SERVICE_NAME "rankd.v1.Ranker"

typedef enum { K_RANK = 0, K_HEALTH = 1, K_GENERIC = 2 } call_kind;
typedef enum { S_REQUESTED = 0, S_REPLYING = 1 } call_state;

struct worker;

typedef struct call_ctx {
    struct call_ctx *next_free;
    struct worker *w;
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
} call_ctx;

typedef struct worker {
    rk_server *srv;
    int idx;
    pthread_t thread;
    int thread_started;
    grpc_completion_queue *cq;
    rk_service *svc;
    uint8_t *in;                  /* contiguous request bytes */
    size_t in_cap;
    call_ctx *free_list;
    call_ctx **all;               /* every context ever allocated (to free at stop) */
    size_t n_all, cap_all;
} worker;

struct rk_server {
    rk_server_opts o;
    char listen[256];
    const rk_model *m;
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    void *rank_method, *health_method;
    int n_workers;
    worker *workers;
    atomic_int shutting_down;
    atomic_long live;             /* call contexts not on a free list */
    atomic_ullong rank_ok, rank_failed, health, unimplemented;
    int started;
};

/* ------------------------------------------------------------ contexts */

static call_ctx *ctx_get(worker *w, call_kind kind) {
    call_ctx *c = w->free_list;
    if (c) {
        w->free_list = c->next_free;
    } else {
        /* Grows to (posted requests + replies in flight) and then stays. */
        c = rk_calloc(1, sizeof *c);
        if (!c) return NULL;
        if (w->n_all == w->cap_all) {
            size_t nc = w->cap_all ? 2 * w->cap_all : 16;
            call_ctx **na = rk_realloc(w->all, nc * sizeof *na);
            if (!na) {
                rk_free(c);
                return NULL;
            }
            w->all = na;
            w->cap_all = nc;
        }
        w->all[w->n_all++] = c;
    }
    memset(c, 0, sizeof *c);
    c->w = w;
    c->kind = kind;
    c->state = S_REQUESTED;
    c->status_details = grpc_empty_slice();
    atomic_fetch_add(&w->srv->live, 1);
    return c;
}

/* Release everything the call held and put the context back. */
static void ctx_put(call_ctx *c) {
    worker *w = c->w;
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->reply) grpc_byte_buffer_destroy(c->reply);
    grpc_slice_unref(c->status_details);
    grpc_metadata_array_destroy(&c->md);
    if (c->kind == K_GENERIC) grpc_call_details_destroy(&c->details);
    c->call = NULL;
    c->payload = c->reply = NULL;
    c->next_free = w->free_list;
    w->free_list = c;
    atomic_fetch_sub(&w->srv->live, 1);
}

/* Post one request of the given kind on w's cq. Returns 0 on success. */
static int post(worker *w, call_kind kind) {
    rk_server *s = w->srv;
    call_ctx *c = ctx_get(w, kind);
    if (!c) {
        rk_error("rankd: worker %d: out of memory posting a request", w->idx);
        return -1;
    }
    grpc_metadata_array_init(&c->md);
    grpc_call_error e;
    if (kind == K_GENERIC) {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, w->cq, w->cq, c);
    } else {
        e = grpc_server_request_registered_call(
            s->server, kind == K_RANK ? s->rank_method : s->health_method, &c->call, &c->deadline,
            &c->md, &c->payload, w->cq, w->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        if (!atomic_load(&s->shutting_down))
            rk_error("rankd: worker %d: request_call failed: %d", w->idx, (int)e);
        ctx_put(c);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ handlers */

/* protobuf-c allocations (health requests) through rk_malloc. */
static void *pb_alloc(void *d, size_t n) {
    (void)d;
    return rk_malloc(n);
}
static void pb_free(void *d, void *p) {
    (void)d;
    rk_free(p);
}
static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

/* Copy the request message into w->in. Returns its length, or -1 if it is
 * larger than the buffer (cannot happen below the max receive size). */
static long read_payload(worker *w, grpc_byte_buffer *bb) {
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) return -1;
    size_t n = 0;
    grpc_slice sl;
    long ret = 0;
    while (grpc_byte_buffer_reader_next(&rd, &sl)) {
        size_t L = GRPC_SLICE_LENGTH(sl);
        if (ret == 0 && n + L <= w->in_cap) {
            memcpy(w->in + n, GRPC_SLICE_START_PTR(sl), L);
            n += L;
        } else {
            ret = -1;
        }
        grpc_slice_unref(sl);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    return ret < 0 ? -1 : (long)n;
}

static void set_reply(call_ctx *c, const void *data, size_t len) {
    grpc_slice sl = grpc_slice_from_copied_buffer(data, len);
    c->reply = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
}

static grpc_status_code handle_rank(call_ctx *c, double t0) {
    worker *w = c->w;
    rk_server *s = w->srv;
    grpc_status_code code;
    if (gpr_time_cmp(c->deadline, gpr_now(c->deadline.clock_type)) < 0) {
        code = GRPC_STATUS_DEADLINE_EXCEEDED;
        c->status_details =
            grpc_slice_from_static_string("deadline exceeded before the request was processed");
    } else if (!c->payload) {
        code = GRPC_STATUS_INVALID_ARGUMENT;
        c->status_details = grpc_slice_from_static_string("request has no message");
    } else {
        long n = read_payload(w, c->payload);
        if (n < 0) {
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            c->status_details = grpc_slice_from_static_string("request larger than the maximum");
        } else {
            const uint8_t *resp;
            size_t resp_len;
            rk_err err = {0};
            code = (grpc_status_code)rk_service_handle(w->svc, w->in, (size_t)n, t0, &resp,
                                                       &resp_len, &err);
            if (code == GRPC_STATUS_OK) set_reply(c, resp, resp_len);
            else c->status_details = grpc_slice_from_copied_string(err.msg);
        }
    }
    atomic_fetch_add(code == GRPC_STATUS_OK ? &s->rank_ok : &s->rank_failed, 1);
    return code;
}

static grpc_status_code handle_health(call_ctx *c) {
    worker *w = c->w;
    atomic_fetch_add(&w->srv->health, 1);
    long n = c->payload ? read_payload(w, c->payload) : 0;
    Grpc__Health__V1__HealthCheckRequest *req =
        n < 0 ? NULL : grpc__health__v1__health_check_request__unpack(&pb_allocator, (size_t)n, w->in);
    if (!req) {
        c->status_details =
            grpc_slice_from_static_string("request is not a valid grpc.health.v1.HealthCheckRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code code = GRPC_STATUS_OK;
    const char *svc = req->service ? req->service : "";
    if (!svc[0] || !strcmp(svc, RANK_SERVICE_NAME)) {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        uint8_t buf[16];
        size_t len = grpc__health__v1__health_check_response__pack(&r, buf);
        set_reply(c, buf, len);
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown service '%.100s'", svc);
        c->status_details = grpc_slice_from_copied_string(msg);
        code = GRPC_STATUS_NOT_FOUND;
    }
    grpc__health__v1__health_check_request__free_unpacked(req, &pb_allocator);
    return code;
}

static grpc_status_code handle_generic(call_ctx *c) {
    atomic_fetch_add(&c->w->srv->unimplemented, 1);
    char msg[200];
    const grpc_slice *m = &c->details.method;
    snprintf(msg, sizeof msg, "method '%.*s' is not implemented by rankd",
             (int)(GRPC_SLICE_LENGTH(*m) > 120 ? 120 : GRPC_SLICE_LENGTH(*m)),
             (const char *)GRPC_SLICE_START_PTR(*m));
    c->status_details = grpc_slice_from_copied_string(msg);
    return GRPC_STATUS_UNIMPLEMENTED;
}

/* A new call arrived on c: answer it with one batch. */
static void on_call(call_ctx *c) {
    double t0 = rk_now();
    worker *w = c->w;
    grpc_status_code code;
    switch (c->kind) {
    case K_RANK: code = handle_rank(c, t0); break;
    case K_HEALTH: code = handle_health(c); break;
    default: code = handle_generic(c); break;
    }
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
    /* After start_batch the completion for c may be delivered; only this
     * worker reads its cq, but keep nothing of c in use past this point. */
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        rk_error("rankd: worker %d: start_batch failed: %d", w->idx, (int)e);
        ctx_put(c);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    rk_server *s = w->srv;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        call_ctx *c = ev.tag;
        if (c->state == S_REPLYING) { /* reply batch done (or failed: the client went away) */
            ctx_put(c);
            continue;
        }
        if (!ev.success) { /* server shutting down: the request will not be matched */
            ctx_put(c);
            continue;
        }
        call_kind kind = c->kind;
        on_call(c);
        /* Re-post only now, after handling (spreads one channel's calls). */
        if (!atomic_load(&s->shutting_down)) post(w, kind);
    }
    return NULL;
}

/* ------------------------------------------------------------ start / stop */

void rk_server_get_counters(const rk_server *s, rk_server_counters *out) {
    rk_server *m = (rk_server *)s; /* atomics: loads only */
    out->rank_ok = atomic_load_explicit(&m->rank_ok, memory_order_relaxed);
    out->rank_failed = atomic_load_explicit(&m->rank_failed, memory_order_relaxed);
    out->health = atomic_load_explicit(&m->health, memory_order_relaxed);
    out->unimplemented = atomic_load_explicit(&m->unimplemented, memory_order_relaxed);
}

static void drain_destroy_cq(grpc_completion_queue *cq) {
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

/* Free what start created, in the reverse order; for a failed start and for
 * the last step of stop. Workers must have been joined. */
static void server_free(rk_server *s) {
    if (s->workers) {
        for (int i = 0; i < s->n_workers; i++) {
            worker *w = &s->workers[i];
            for (size_t k = 0; k < w->n_all; k++) rk_free(w->all[k]);
            rk_free(w->all);
            rk_service_destroy(w->svc);
            rk_free(w->in);
        }
        rk_free(s->workers);
    }
    rk_free(s);
}

/* Wait until every call context is back on its free list. */
static void wait_contexts(rk_server *s) {
    while (atomic_load(&s->live) > 0) sleep_ms(1);
}

/* Release the posted contexts of a worker whose thread never started (a
 * failed start), from the calling thread: after shutdown_and_notify they
 * complete at once with success == 0. */
static void drain_unstarted(worker *w) {
    for (;;) {
        grpc_event e = grpc_completion_queue_next(
            w->cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(200, GPR_TIMESPAN)), NULL);
        if (e.type != GRPC_OP_COMPLETE) break;
        ctx_put(e.tag);
    }
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
    if (o->max_message_bytes < 64)
        return rk_fail(err, RK_EINVAL, "max_message_bytes: %d, must be at least 64",
                       o->max_message_bytes);
    rk_server *s = rk_calloc(1, sizeof *s);
    if (!s) return rk_fail(err, RK_ENOMEM, "server: out of memory");
    s->o = *o;
    snprintf(s->listen, sizeof s->listen, "%s", o->listen);
    s->o.listen = s->listen;
    s->m = m;
    s->n_workers = o->threads;
    s->workers = rk_calloc((size_t)o->threads, sizeof *s->workers);
    if (!s->workers) {
        server_free(s);
        return rk_fail(err, RK_ENOMEM, "server: out of memory");
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
        rk_status st = rk_service_create(m, &s->o, &w->svc, err);
        if (st) {
            server_free(s);
            return st;
        }
    }

    grpc_init();
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = o->max_message_bytes;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_ALLOW_REUSEPORT; /* a used port must fail (c-stack.md §2.6) */
    args[1].value.integer = 0;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = -1;
    grpc_channel_args ca = {3, args};
    s->server = grpc_server_create(&ca, NULL);
    for (int i = 0; i < s->n_workers; i++) {
        s->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(s->server, s->workers[i].cq, NULL);
    }
    s->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_server_register_completion_queue(s->server, s->shutdown_cq, NULL);
    s->rank_method = grpc_server_register_method(s->server, RANK_METHOD, NULL,
                                                 GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    s->health_method = grpc_server_register_method(s->server, HEALTH_METHOD, NULL,
                                                   GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, s->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0 || !s->rank_method || !s->health_method) {
        rk_status st = rk_fail(err, RK_EIO, "cannot listen on %s: address in use or invalid",
                               s->listen);
        grpc_server_destroy(s->server);
        for (int i = 0; i < s->n_workers; i++) drain_destroy_cq(s->workers[i].cq);
        grpc_completion_queue_shutdown(s->shutdown_cq);
        grpc_completion_queue_destroy(s->shutdown_cq);
        server_free(s);
        grpc_shutdown();
        return st;
    }
    grpc_server_start(s->server);
    s->started = 1;
    /* Post every worker's first requests from here, before any thread runs:
     * a live context then exists for the whole life of each worker loop. */
    for (int i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        int bad = 0;
        for (int k = 0; k < o->requests_per_worker; k++) bad |= post(w, K_RANK);
        bad |= post(w, K_HEALTH);
        bad |= post(w, K_GENERIC);
        if (bad) {
            *out = s;
            rk_server_stop(s, NULL);
            *out = NULL;
            return rk_fail(err, RK_ENOMEM, "server: cannot post requests");
        }
    }
    for (int i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w)) {
            rk_server_stop(s, NULL);
            return rk_fail(err, RK_EINTERNAL, "server: cannot start worker thread %d", i);
        }
        w->thread_started = 1;
    }
    if (bound_port) *bound_port = port;
    *out = s;
    return RK_OK;
}

void rk_server_stop(rk_server *s, rk_server_counters *final) {
    if (!s) return;
    atomic_store(&s->shutting_down, 1);
    static int shutdown_tag;
    grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &shutdown_tag);
    /* Our calls: the posted requests fail at once (released by the
     * workers); calls being answered finish. Give them grace_ms. */
    double t_end = rk_now() + s->o.grace_ms * 1e-3;
    for (int i = 0; i < s->n_workers; i++)
        if (!s->workers[i].thread_started) drain_unstarted(&s->workers[i]);
    while (atomic_load(&s->live) > 0 && rk_now() < t_end) sleep_ms(1);
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
    /* after a cancel, the handlers' reply batches fail and release their contexts */
    wait_contexts(s);
    grpc_server_destroy(s->server);
    for (int i = 0; i < s->n_workers; i++) grpc_completion_queue_shutdown(s->workers[i].cq);
    for (int i = 0; i < s->n_workers; i++)
        if (s->workers[i].thread_started) pthread_join(s->workers[i].thread, NULL);
    for (int i = 0; i < s->n_workers; i++) {
        worker *w = &s->workers[i];
        if (!w->thread_started) {
            while (grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
                   GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(w->cq);
    }
    grpc_completion_queue_shutdown(s->shutdown_cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    if (final) rk_server_get_counters(s, final);
    server_free(s);
    grpc_shutdown();
}
