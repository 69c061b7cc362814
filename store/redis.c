/*
 * store/redis.c — a small Redis Cluster client over hiredis (Debian has no
 * cluster client in C): the slot map, pipelined batches routed by slot,
 * MOVED/ASK, deadlines and reconnection. Used by the store's Redis tier
 * (redis_tier.c); the interface is store_internal.h's rk_redis_*.
 *
 * Slot map: CLUSTER SLOTS asked of any known node (seeds first), turned into
 * slot -> node index (masters only; reads go to masters, so an
 * acknowledged write is read back). Node addresses live in an append-only
 * table (at most RK_REDIS_MAX_NODES), so a node index stays valid while the
 * map changes. The map is re-read after MOVED, a cluster error, or a
 * connection failure, at most once per RK_REDIS_REFRESH_MS.
 *
 * A batch (rk_redis_run) is a set of items that each name a slot; items are
 * grouped by slot (one MGET or MSET per slot and per 512 keys, since a
 * cluster refuses multi-key commands across slots), the groups of one node
 * are pipelined into its connection, every node's pipeline is written
 * before any reply is read: one round trip per node per batch. A group
 * answered MOVED or ASK is sent once more (after a map refresh for MOVED,
 * with ASKING to the named node for ASK) if time is left.
 *
 * Deadlines: every batch has an absolute deadline (rk_now() seconds); the
 * socket timeouts are set to what is left before each connect, write and
 * read, so a batch never outlives its deadline by more than one syscall's
 * rounding (1 ms). A node whose connect failed is skipped (its items fail
 * at once) for RK_REDIS_DOWN_MS, then tried again: reconnection is lazy.
 * A connection that saw an error or a timeout is closed (its pipeline
 * would be out of step).
 *
 * Concurrency: connections belong to lanes (opts.lanes); a batch holds one
 * lane (a mutex) for its duration; threads pick lanes round-robin. The map
 * is under a rwlock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define RK_REDIS_MAX_NODES 64
#define RK_REDIS_REFRESH_MS 50
#define RK_REDIS_DOWN_MS 100
#define RK_REDIS_GROUP_KEYS 512

typedef struct {
    char host[64];
    int port;
    _Atomic double down_until; /* rk_now() before which connects are not tried */
} node;

typedef struct {
    pthread_mutex_t mu;
    redisContext *ctx[RK_REDIS_MAX_NODES];
} lane;

struct rk_redis {
    rk_redis_opts o;
    pthread_rwlock_t maplock;
    int16_t slot_node[RK_REDIS_SLOTS]; /* -1 = no master known */
    node nodes[RK_REDIS_MAX_NODES];
    atomic_int n_nodes;
    pthread_mutex_t nodes_mu;           /* serializes appends to nodes[] and refreshes */
    _Atomic double last_refresh;
    int n_seeds;
    lane *lanes;
    atomic_uint next_lane;
    struct {
        _Atomic uint64_t batches, round_trips, redirects, map_refreshes, connects, connect_failures, failed_items,
            default_rows, stream_updates;
    } st;
};

/* ---------------------------------------------------------------- slots */

uint16_t rk_redis_crc16(const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) { /* CRC16-CCITT (XMODEM), as Redis Cluster's key hash */
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++) crc = crc & 0x8000 ? (uint16_t)(crc << 1 ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

uint16_t rk_redis_slot(const char *key, size_t len) {
    const char *o = memchr(key, '{', len);
    if (o) {
        const char *c = memchr(o + 1, '}', len - (size_t)(o + 1 - key));
        if (c && c > o + 1) return rk_redis_crc16(o + 1, (size_t)(c - o - 1)) & (RK_REDIS_SLOTS - 1);
    }
    return rk_redis_crc16(key, len) & (RK_REDIS_SLOTS - 1);
}

/* ---------------------------------------------------------------- nodes */

static void stat_add(_Atomic uint64_t *c, uint64_t n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }

/* Index of host:port in the node table, appended if new; -1 when full. */
static int node_index(rk_redis *r, const char *host, int port) {
    int n = atomic_load(&r->n_nodes);
    for (int i = 0; i < n; i++)
        if (r->nodes[i].port == port && !strcmp(r->nodes[i].host, host)) return i;
    pthread_mutex_lock(&r->nodes_mu);
    n = atomic_load(&r->n_nodes);
    int idx = -1;
    for (int i = 0; i < n && idx < 0; i++)
        if (r->nodes[i].port == port && !strcmp(r->nodes[i].host, host)) idx = i;
    if (idx < 0 && n < RK_REDIS_MAX_NODES && strlen(host) < sizeof r->nodes[n].host) {
        snprintf(r->nodes[n].host, sizeof r->nodes[n].host, "%s", host);
        r->nodes[n].port = port;
        atomic_store(&r->nodes[n].down_until, 0.0);
        atomic_store(&r->n_nodes, n + 1);
        idx = n;
    }
    pthread_mutex_unlock(&r->nodes_mu);
    return idx;
}

static struct timeval tv_left(double deadline) {
    double left = deadline - rk_now();
    if (left < 0.001) left = 0.001;
    struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    return tv;
}

static redisContext *connect_node(rk_redis *r, int i, double deadline) {
    node *nd = &r->nodes[i];
    double now = rk_now();
    if (now < atomic_load(&nd->down_until) || now >= deadline) return NULL;
    double cap = now + r->o.timeout_ms / 1e3;
    redisContext *c = redisConnectWithTimeout(nd->host, nd->port, tv_left(cap < deadline ? cap : deadline));
    if (!c || c->err) {
        if (c) redisFree(c);
        atomic_store(&nd->down_until, rk_now() + RK_REDIS_DOWN_MS / 1e3);
        stat_add(&r->st.connect_failures, 1);
        return NULL;
    }
    stat_add(&r->st.connects, 1);
    return c;
}

/* ---------------------------------------------------------------- map */

static int parse_slots(rk_redis *r, redisReply *rep, int16_t *map) {
    if (!rep || rep->type != REDIS_REPLY_ARRAY) return -1;
    for (int s = 0; s < RK_REDIS_SLOTS; s++) map[s] = -1;
    for (size_t i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2 || e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            return -1;
        long long a = e->element[0]->integer, b = e->element[1]->integer;
        const char *host = e->element[2]->element[0]->str;
        int idx = node_index(r, host[0] ? host : "127.0.0.1", (int)e->element[2]->element[1]->integer);
        if (a < 0 || b >= RK_REDIS_SLOTS || a > b || idx < 0) return -1;
        for (long long s = a; s <= b; s++) map[s] = (int16_t)idx;
    }
    return 0;
}

/* Re-read the slot map from the first node that answers; force skips the
 * rate limit. Returns 0 when a map was read. */
static int refresh_map(rk_redis *r, double deadline, int force, rk_err *err) {
    double now = rk_now();
    if (!force && now - atomic_load(&r->last_refresh) < RK_REDIS_REFRESH_MS / 1e3) return -1;
    atomic_store(&r->last_refresh, now);
    int16_t *map = rk_malloc(sizeof(int16_t) * RK_REDIS_SLOTS);
    if (!map) return -1;
    int ok = -1, n = atomic_load(&r->n_nodes);
    char last[160] = "no node answered";
    for (int i = 0; i < n && ok != 0 && rk_now() < deadline; i++) {
        double cap = rk_now() + r->o.timeout_ms / 1e3;
        redisContext *c = redisConnectWithTimeout(r->nodes[i].host, r->nodes[i].port, tv_left(cap < deadline ? cap : deadline));
        if (!c || c->err) {
            snprintf(last, sizeof last, "%s:%d: %s", r->nodes[i].host, r->nodes[i].port, c ? c->errstr : "out of memory");
            if (c) redisFree(c);
            continue;
        }
        redisSetTimeout(c, tv_left(cap < deadline ? cap : deadline));
        redisReply *rep = redisCommand(c, "CLUSTER SLOTS");
        ok = parse_slots(r, rep, map);
        if (ok) snprintf(last, sizeof last, "%s:%d: %s", r->nodes[i].host, r->nodes[i].port,
                         rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no slot map in the reply to CLUSTER SLOTS");
        if (rep) freeReplyObject(rep);
        redisFree(c);
    }
    if (ok == 0) {
        pthread_rwlock_wrlock(&r->maplock);
        memcpy(r->slot_node, map, sizeof(int16_t) * RK_REDIS_SLOTS);
        pthread_rwlock_unlock(&r->maplock);
        stat_add(&r->st.map_refreshes, 1);
    } else {
        rk_fail(err, RK_EIO, "redis cluster: cannot read the slot map (%s)", last);
    }
    rk_free(map);
    return ok;
}

/* ---------------------------------------------------------------- create */

rk_status rk_redis_create(const char *seeds, const rk_redis_opts *opts, rk_redis **out, rk_err *err) {
    *out = NULL;
    rk_redis_opts d = RK_REDIS_OPTS_DEFAULT;
    rk_redis *r = rk_calloc(1, sizeof *r);
    if (!r) return rk_fail(err, RK_ENOMEM, "redis cluster: out of memory");
    r->o = opts ? *opts : d;
    if (r->o.lanes < 1) r->o.lanes = 1;
    if (r->o.timeout_ms < 1) r->o.timeout_ms = 1;
    pthread_rwlock_init(&r->maplock, NULL);
    pthread_mutex_init(&r->nodes_mu, NULL);
    for (int s = 0; s < RK_REDIS_SLOTS; s++) r->slot_node[s] = -1;
    rk_status st = RK_OK;
    const char *p = seeds ? seeds : "";
    while (st == RK_OK && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char one[96], *colon;
        long port = 0;
        if (len == 0 || len >= sizeof one) {
            st = rk_fail(err, RK_EINVAL, "--redis-cluster: bad address '%.*s' (HOST:PORT[,HOST:PORT...])", (int)(len > 60 ? 60 : len), p);
            break;
        }
        memcpy(one, p, len);
        one[len] = 0;
        colon = strrchr(one, ':');
        char *end = NULL;
        if (colon) port = strtol(colon + 1, &end, 10);
        if (!colon || colon == one || !end || *end || port < 1 || port > 65535) {
            st = rk_fail(err, RK_EINVAL, "--redis-cluster: bad address '%s' (HOST:PORT[,HOST:PORT...])", one);
            break;
        }
        *colon = 0;
        if (node_index(r, one, (int)port) < 0) st = rk_fail(err, RK_EINVAL, "--redis-cluster: too many addresses");
        p = e ? e + 1 : p + len;
    }
    if (st == RK_OK && atomic_load(&r->n_nodes) == 0) st = rk_fail(err, RK_EINVAL, "--redis-cluster: no address given");
    r->n_seeds = atomic_load(&r->n_nodes);
    if (st == RK_OK && !(r->lanes = rk_calloc((size_t)r->o.lanes, sizeof *r->lanes)))
        st = rk_fail(err, RK_ENOMEM, "redis cluster: out of memory");
    for (int i = 0; st == RK_OK && i < r->o.lanes; i++) pthread_mutex_init(&r->lanes[i].mu, NULL);
    double budget = r->o.timeout_ms / 1e3 * 4 > 1.0 ? r->o.timeout_ms / 1e3 * 4 : 1.0;
    if (st == RK_OK && refresh_map(r, rk_now() + budget, 1, err)) st = RK_EIO;
    if (st) {
        rk_redis_destroy(r);
        return st;
    }
    *out = r;
    return RK_OK;
}

void rk_redis_destroy(rk_redis *r) {
    if (!r) return;
    for (int l = 0; r->lanes && l < r->o.lanes; l++) {
        for (int i = 0; i < RK_REDIS_MAX_NODES; i++)
            if (r->lanes[l].ctx[i]) redisFree(r->lanes[l].ctx[i]);
        pthread_mutex_destroy(&r->lanes[l].mu);
    }
    rk_free(r->lanes);
    pthread_rwlock_destroy(&r->maplock);
    pthread_mutex_destroy(&r->nodes_mu);
    rk_free(r);
}

void rk_redis_stats_get(rk_redis *r, rk_redis_stats *out) {
    out->batches = atomic_load(&r->st.batches);
    out->round_trips = atomic_load(&r->st.round_trips);
    out->redirects = atomic_load(&r->st.redirects);
    out->map_refreshes = atomic_load(&r->st.map_refreshes);
    out->connects = atomic_load(&r->st.connects);
    out->connect_failures = atomic_load(&r->st.connect_failures);
    out->failed_items = atomic_load(&r->st.failed_items);
    out->default_rows = atomic_load(&r->st.default_rows);
    out->stream_updates = atomic_load(&r->st.stream_updates);
}

int rk_redis_masters(rk_redis *r, char addrs[][64], int cap) {
    int seen[RK_REDIS_MAX_NODES] = {0}, n = 0;
    pthread_rwlock_rdlock(&r->maplock);
    for (int s = 0; s < RK_REDIS_SLOTS; s++) {
        int i = r->slot_node[s];
        if (i >= 0 && !seen[i] && n < cap) {
            seen[i] = 1;
            snprintf(addrs[n++], 64, "%s:%d", r->nodes[i].host, r->nodes[i].port);
        }
    }
    pthread_rwlock_unlock(&r->maplock);
    return n;
}

/* ---------------------------------------------------------------- batches */

typedef struct {
    uint32_t first, n;  /* range of ord[] */
    int16_t node;
    uint16_t slot;
    int8_t asking;      /* send ASKING first (an ASK redirect) */
    int8_t result;      /* 0 done, 1 MOVED, 2 ASK (node = the named one), -1 failed */
} grp;

typedef struct {
    rk_redis *r;
    lane *ln;
    int op, wait;
    rk_redis_item *it;
    const uint32_t *ord;
    double deadline;
    const char **argv;  /* [1 + 2 * RK_REDIS_GROUP_KEYS] */
    size_t *lens;
    char why[160];      /* first failure */
} batch;

static int grp_by_node(const void *a, const void *b) {
    const grp *x = a, *y = b;
    if (x->node != y->node) return x->node < y->node ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

static void fail_why(batch *b, int node, const char *what) {
    if (b->why[0]) return;
    if (node >= 0) snprintf(b->why, sizeof b->why, "%s:%d: %s", b->r->nodes[node].host, b->r->nodes[node].port, what);
    else snprintf(b->why, sizeof b->why, "%s", what);
}

static void close_ctx(batch *b, int node) {
    if (b->ln->ctx[node]) redisFree(b->ln->ctx[node]);
    b->ln->ctx[node] = NULL;
}

static void append_group(batch *b, redisContext *c, const grp *g) {
    int argc = 1;
    b->argv[0] = b->op == RK_REDIS_SET ? "MSET" : b->op == RK_REDIS_DEL ? "UNLINK" : "MGET";
    b->lens[0] = strlen(b->argv[0]);
    for (uint32_t k = 0; k < g->n; k++) {
        const rk_redis_item *it = &b->it[b->ord[g->first + k]];
        b->argv[argc] = it->key;
        b->lens[argc++] = it->klen;
        if (b->op == RK_REDIS_SET) {
            b->argv[argc] = it->val;
            b->lens[argc++] = it->vlen;
        }
    }
    if (g->asking) redisAppendCommand(c, "ASKING");
    redisAppendCommandArgv(c, argc, b->argv, b->lens);
}

/* Parse "MOVED 3999 127.0.0.1:6381" / "ASK ..."; returns 1 / 2 (with *node), or 0. */
static int redirect_of(rk_redis *r, const char *msg, int16_t *node) {
    int kind = !strncmp(msg, "MOVED ", 6) ? 1 : !strncmp(msg, "ASK ", 4) ? 2 : 0;
    if (!kind) return 0;
    const char *addr = strchr(msg + (kind == 1 ? 6 : 4), ' ');
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!addr || !colon) return 0;
    char host[64];
    size_t hl = (size_t)(colon - addr - 1);
    if (hl >= sizeof host) return 0;
    memcpy(host, addr + 1, hl);
    host[hl] = 0;
    int idx = node_index(r, hl ? host : "127.0.0.1", atoi(colon + 1));
    if (idx < 0) return 0;
    *node = (int16_t)idx;
    return kind;
}

/* Take one group's reply apart into its items; sets g->result. */
static void take_reply(batch *b, grp *g, redisReply *rep) {
    g->result = -1;
    if (rep->type == REDIS_REPLY_ERROR) {
        int16_t to = -1;
        int kind = redirect_of(b->r, rep->str, &to);
        if (kind) {
            g->result = (int8_t)kind;
            if (kind == 2) g->node = to;
            stat_add(&b->r->st.redirects, 1);
        } else {
            fail_why(b, g->node, rep->str);
        }
        return;
    }
    if (b->op != RK_REDIS_GET) {
        if (rep->type == (b->op == RK_REDIS_SET ? REDIS_REPLY_STATUS : REDIS_REPLY_INTEGER)) g->result = 0;
        else fail_why(b, g->node, "unexpected reply to MSET / UNLINK");
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != g->n) {
        fail_why(b, g->node, "unexpected reply to MGET");
        return;
    }
    for (uint32_t k = 0; k < g->n; k++) {
        rk_redis_item *it = &b->it[b->ord[g->first + k]];
        redisReply *e = rep->element[k];
        if (e->type == REDIS_REPLY_NIL) {
            it->state = RK_REDIS_ABSENT;
        } else if (e->type == REDIS_REPLY_STRING && e->len == it->cap) {
            memcpy(it->out, e->str, e->len);
            it->state = RK_REDIS_FOUND;
        } else {
            it->state = RK_REDIS_BADLEN;
        }
    }
    g->result = 0;
}

static void fail_node_groups(batch *b, grp *g, int n, const char *what) {
    for (int i = 0; i < n; i++) g[i].result = -1;
    fail_why(b, g[0].node, what);
}

/* One round: every group of g[0..ng) (sorted by node) sent, then every reply read. */
static void run_round(batch *b, grp *g, int ng) {
    rk_redis *r = b->r;
    int starts[RK_REDIS_MAX_NODES + 2], nn = 0; /* + the group of slots without a master */
    for (int i = 0; i < ng; i++)
        if (i == 0 || g[i].node != g[i - 1].node) starts[nn++] = i;
    starts[nn] = ng;
    int sent[RK_REDIS_MAX_NODES + 1] = {0};
    for (int i = 0; i < ng; i++) g[i].result = -1;
    for (int k = 0; k < nn; k++) { /* append + write */
        grp *gg = g + starts[k];
        int cnt = starts[k + 1] - starts[k], nd = gg[0].node;
        if (nd < 0) {
            fail_node_groups(b, gg, cnt, "no master serves the slot");
            continue;
        }
        redisContext *c = b->ln->ctx[nd];
        if (!c && !(c = b->ln->ctx[nd] = connect_node(r, nd, b->deadline))) {
            fail_node_groups(b, gg, cnt, rk_now() >= b->deadline ? "deadline before connecting" : "cannot connect");
            continue;
        }
        for (int i = 0; i < cnt; i++) append_group(b, c, &gg[i]);
        if (b->op == RK_REDIS_SET && b->wait > 0) redisAppendCommand(c, "WAIT %d %d", b->wait, r->o.wait_ms);
        redisSetTimeout(c, tv_left(b->deadline));
        int done = 0;
        while (!done && redisBufferWrite(c, &done) == REDIS_OK) {}
        if (!done) {
            fail_node_groups(b, gg, cnt, c->errstr[0] ? c->errstr : "write failed");
            close_ctx(b, nd);
            continue;
        }
        sent[k] = 1;
        stat_add(&r->st.round_trips, 1);
    }
    for (int k = 0; k < nn; k++) { /* read */
        if (!sent[k]) continue;
        grp *gg = g + starts[k];
        int cnt = starts[k + 1] - starts[k], nd = gg[0].node, broken = 0;
        redisContext *c = b->ln->ctx[nd];
        for (int i = 0; i <= cnt && !broken; i++) {
            if (i == cnt && !(b->op == RK_REDIS_SET && b->wait > 0)) break;
            redisReply *rep = NULL;
            redisSetTimeout(c, tv_left(b->deadline));
            if (i < cnt && gg[i].asking) { /* the +OK of ASKING */
                if (redisGetReply(c, (void **)&rep) != REDIS_OK) broken = 1;
                if (rep) freeReplyObject(rep);
                rep = NULL;
                if (broken) break;
            }
            if (redisGetReply(c, (void **)&rep) != REDIS_OK || !rep) {
                broken = 1;
                break;
            }
            if (i < cnt) take_reply(b, &gg[i], rep);
            else if (rep->type != REDIS_REPLY_INTEGER || rep->integer < b->wait) { /* WAIT */
                char m[96];
                snprintf(m, sizeof m, "WAIT: %lld of %d replicas acknowledged within %d ms",
                         rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1LL, b->wait, r->o.wait_ms);
                fail_node_groups(b, gg, cnt, m);
            }
            freeReplyObject(rep);
        }
        if (broken) {
            fail_why(b, nd, rk_now() >= b->deadline ? "deadline exceeded" : c->errstr[0] ? c->errstr : "connection lost");
            for (int i = 0; i < cnt; i++) /* a write is acknowledged only by its WAIT */
                if (b->op == RK_REDIS_SET || gg[i].result != 0) gg[i].result = -1;
            close_ctx(b, nd);
        }
    }
}

static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Items -> groups sorted by (node, slot), at most RK_REDIS_GROUP_KEYS keys each. */
static int make_groups(rk_redis *r, rk_redis_item *it, size_t n, uint32_t *ord, uint64_t *tmp, grp *g) {
    pthread_rwlock_rdlock(&r->maplock);
    for (size_t i = 0; i < n; i++) {
        int nd = r->slot_node[it[i].slot & (RK_REDIS_SLOTS - 1)];
        tmp[i] = (uint64_t)(nd < 0 ? 0xffff : nd) << 48 | (uint64_t)it[i].slot << 32 | i;
    }
    pthread_rwlock_unlock(&r->maplock);
    qsort(tmp, n, sizeof *tmp, u64_cmp);
    int ng = 0;
    for (size_t i = 0; i < n; i++) {
        ord[i] = (uint32_t)(tmp[i] & 0xffffffffu);
        int nd = (int)(tmp[i] >> 48) == 0xffff ? -1 : (int)(tmp[i] >> 48);
        uint16_t slot = (uint16_t)(tmp[i] >> 32 & 0xffff);
        if (ng && g[ng - 1].node == nd && g[ng - 1].slot == slot && g[ng - 1].n < RK_REDIS_GROUP_KEYS) {
            g[ng - 1].n++;
            continue;
        }
        g[ng++] = (grp){(uint32_t)i, 1, (int16_t)nd, slot, 0, -1};
    }
    return ng;
}

rk_status rk_redis_run(rk_redis *r, int op, rk_redis_item *it, size_t n, int wait_replicas, double deadline,
                       rk_err *err) {
    if (n == 0) return RK_OK;
    uint32_t *ord = rk_malloc(n * sizeof *ord);
    uint64_t *tmp = rk_malloc(n * sizeof *tmp);
    grp *g = rk_malloc(n * sizeof *g);
    const char **argv = rk_malloc((1 + 2 * RK_REDIS_GROUP_KEYS) * sizeof *argv);
    size_t *lens = rk_malloc((1 + 2 * RK_REDIS_GROUP_KEYS) * sizeof *lens);
    if (!ord || !tmp || !g || !argv || !lens) {
        rk_free(ord), rk_free(tmp), rk_free(g), rk_free(argv), rk_free(lens);
        return rk_fail(err, RK_ENOMEM, "redis cluster: out of memory for a batch of %zu keys", n);
    }
    for (size_t i = 0; i < n; i++) it[i].state = RK_REDIS_FAILED;
    int ng = make_groups(r, it, n, ord, tmp, g);
    lane *ln = &r->lanes[atomic_fetch_add(&r->next_lane, 1) % (unsigned)r->o.lanes];
    batch b = {r, ln, op, wait_replicas, it, ord, deadline, argv, lens, ""};
    stat_add(&r->st.batches, 1);
    pthread_mutex_lock(&ln->mu);
    run_round(&b, g, ng);
    int moved = 0, nr = 0, need_refresh = 0;
    for (int i = 0; i < ng; i++) {
        moved |= g[i].result == 1;
        need_refresh |= g[i].result == -1;
        if (g[i].result == 0 && op != RK_REDIS_GET)
            for (uint32_t k = 0; k < g[i].n; k++) it[ord[g[i].first + k]].state = RK_REDIS_FOUND;
        if (g[i].result > 0) g[nr++] = g[i];
    }
    if (moved || need_refresh) refresh_map(r, deadline, moved, NULL);
    if (nr && rk_now() < deadline) { /* one more try for the redirected groups */
        pthread_rwlock_rdlock(&r->maplock);
        for (int i = 0; i < nr; i++) {
            g[i].asking = g[i].result == 2;
            if (g[i].result == 1) g[i].node = r->slot_node[g[i].slot];
        }
        pthread_rwlock_unlock(&r->maplock);
        qsort(g, (size_t)nr, sizeof *g, grp_by_node);
        run_round(&b, g, nr);
        for (int i = 0; i < nr; i++)
            if (g[i].result == 0 && op != RK_REDIS_GET)
                for (uint32_t k = 0; k < g[i].n; k++) it[ord[g[i].first + k]].state = RK_REDIS_FOUND;
            else if (g[i].result > 0)
                fail_why(&b, g[i].node, "redirected twice");
    } else if (nr) {
        fail_why(&b, -1, "deadline exceeded before following a redirect");
    }
    pthread_mutex_unlock(&ln->mu);
    size_t failed = 0;
    for (size_t i = 0; i < n; i++) failed += it[i].state == RK_REDIS_FAILED;
    stat_add(&r->st.failed_items, failed);
    rk_status st = RK_OK;
    if (failed)
        st = rk_fail(err, rk_now() >= deadline ? RK_EDEADLINE : RK_EIO, "redis cluster: %zu of %zu keys failed (%s)",
                     failed, n, b.why[0] ? b.why : "unknown error");
    rk_free(ord), rk_free(tmp), rk_free(g), rk_free(argv), rk_free(lens);
    return st;
}

/* ---------------------------------------------------------------- single commands */

static redisReply *command_on(rk_redis *r, int nd, int asking, int argc, const char **argv, const size_t *lens,
                              double deadline, rk_err *err) {
    lane *ln = &r->lanes[atomic_fetch_add(&r->next_lane, 1) % (unsigned)r->o.lanes];
    pthread_mutex_lock(&ln->mu);
    redisContext *c = ln->ctx[nd];
    redisReply *rep = NULL;
    if (!c) c = ln->ctx[nd] = connect_node(r, nd, deadline);
    if (c) {
        redisSetTimeout(c, tv_left(deadline));
        if (asking) redisAppendCommand(c, "ASKING");
        redisAppendCommandArgv(c, argc, argv, lens);
        redisReply *ok = NULL;
        if (asking && (redisGetReply(c, (void **)&ok) != REDIS_OK)) c->err = c->err ? c->err : REDIS_ERR_IO;
        if (ok) freeReplyObject(ok);
        if (!c->err && redisGetReply(c, (void **)&rep) != REDIS_OK) rep = NULL;
        if (!rep) {
            rk_fail(err, RK_EIO, "redis %s:%d: %s: %s", r->nodes[nd].host, r->nodes[nd].port, argv[0],
                    c->errstr[0] ? c->errstr : "no reply");
            redisFree(c);
            ln->ctx[nd] = NULL;
        }
    } else {
        rk_fail(err, RK_EIO, "redis %s:%d: cannot connect", r->nodes[nd].host, r->nodes[nd].port);
    }
    pthread_mutex_unlock(&ln->mu);
    return rep;
}

void *rk_redis_command(rk_redis *r, uint16_t slot, int argc, const char **argv, const size_t *lens, double deadline,
                       rk_err *err) {
    int asking = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_rwlock_rdlock(&r->maplock);
        int nd = r->slot_node[slot & (RK_REDIS_SLOTS - 1)];
        pthread_rwlock_unlock(&r->maplock);
        if (nd < 0) {
            refresh_map(r, deadline, 0, NULL);
            rk_fail(err, RK_EIO, "redis cluster: no master serves slot %u", slot);
            return NULL;
        }
        redisReply *rep = command_on(r, nd, asking, argc, argv, lens, deadline, err);
        if (!rep) {
            refresh_map(r, deadline, 0, NULL);
            return NULL;
        }
        int16_t to = -1;
        int kind = rep->type == REDIS_REPLY_ERROR ? redirect_of(r, rep->str, &to) : 0;
        if (!kind || attempt == 1) return rep;
        freeReplyObject(rep);
        stat_add(&r->st.redirects, 1);
        if (kind == 1) refresh_map(r, deadline, 1, NULL);
        asking = kind == 2;
        if (asking) { /* one ASK: straight to the named node */
            rep = command_on(r, to, 1, argc, argv, lens, deadline, err);
            return rep;
        }
    }
    return NULL;
}

void *rk_redis_command_at(rk_redis *r, const char *addr, int argc, const char **argv, const size_t *lens,
                          double deadline, rk_err *err) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        rk_fail(err, RK_EINVAL, "redis: bad address '%s'", addr);
        return NULL;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    int nd = node_index(r, host, atoi(colon + 1));
    if (nd < 0) {
        rk_fail(err, RK_EINVAL, "redis: too many nodes");
        return NULL;
    }
    return command_on(r, nd, 0, argc, argv, lens, deadline, err);
}

void rk_redis_reply_free(void *reply) {
    if (reply) freeReplyObject(reply);
}

const rk_redis_opts *rk_redis_options(const rk_redis *r) { return &r->o; }

void rk_redis_count(rk_redis *r, uint64_t default_rows, uint64_t stream_updates) {
    if (default_rows) stat_add(&r->st.default_rows, default_rows);
    if (stream_updates) stat_add(&r->st.stream_updates, stream_updates);
}
