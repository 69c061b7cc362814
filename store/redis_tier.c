/*
 * store/redis_tier.c — the Redis Cluster tier of the store (store.h,
 * "Redis Cluster tier"): key layout, bulk publish with resume and a
 * completion marker, lookups between the RAM cache and RocksDB, online
 * updates (MSET + WAIT + the update stream), the per-replica poller that
 * refreshes the RAM cache from the stream and renews the replica's lease,
 * and dropping an unused version.
 *
 * Why one key per row and not a hash per group: MGET of plain strings is the
 * cheapest multi-key read Redis has, a row update is one SET, and the value
 * is the codec's bytes as RocksDB stores them (no re-encoding).
 */
#define _GNU_SOURCE
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_internal.h"

#define RK_TIER_PREFIX_MAX 64
#define RK_TIER_KEY_MAX (RK_TIER_PREFIX_MAX + RK_STORE_NAME_MAX + 48)
#define RK_TIER_STREAM_MAXLEN "100000"

struct rk_tier {
    rk_redis *r;
    char prefix[RK_TIER_PREFIX_MAX]; /* rk/IDENTITY */
    char owner[96];                  /* lease owner: host:pid:handle */
    uint16_t vslot;                  /* slot of {prefix}: marker, progress, stream, leases */
    pthread_t poller;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, started;
    char last_id[48];                /* last stream entry applied */
};

/* ---------------------------------------------------------------- keys */

void rk_store_redis_prefix(const rk_store *s, char *buf, size_t cap) {
    if (s->remote[0]) {
        snprintf(buf, cap, "%s", s->remote);
        return;
    }
    char path[600], id[64] = "";
    snprintf(path, sizeof path, "%s/IDENTITY", s->path);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(id, sizeof id, f)) id[0] = 0;
        fclose(f);
    }
    id[strcspn(id, "\r\n")] = 0;
    snprintf(buf, cap, "rk/%s", id[0] ? id : "no-identity");
}

static int row_key(char *k, const char *prefix, const char *table, uint64_t row) {
    return snprintf(k, RK_TIER_KEY_MAX, "{%s/%s/%u}%llu", prefix, table, (unsigned)(row % RK_REDIS_GROUPS),
                    (unsigned long long)row);
}

static int ver_key(char *k, const char *prefix, const char *what) {
    return snprintf(k, RK_TIER_KEY_MAX, "{%s}/%s", prefix, what);
}

static void table_slots(rk_store_table *tb, const char *prefix) {
    for (unsigned g = 0; g < RK_REDIS_GROUPS; g++) {
        char tag[RK_TIER_KEY_MAX];
        int n = snprintf(tag, sizeof tag, "%s/%s/%u", prefix, tb->m.name, g);
        tb->rslot[g] = rk_redis_crc16(tag, (size_t)n) & (RK_REDIS_SLOTS - 1);
    }
}

static double deadline_in(const rk_redis *r, double factor) {
    return rk_now() + rk_redis_options(r)->timeout_ms / 1e3 * factor;
}

/* A simple command on the version's slot, args as C strings. */
static redisReply *vcmd(rk_redis *r, uint16_t vslot, double deadline, rk_err *err, int argc, const char **argv) {
    size_t lens[8];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    return rk_redis_command(r, vslot, argc, argv, lens, deadline, err);
}

static void drop_if_retired(rk_tier *t);

/* ---------------------------------------------------------------- lookup */

static _Thread_local double rk_tier_thread_deadline;
void rk_store_set_thread_deadline(double deadline) { rk_tier_thread_deadline = deadline; }

/* Kept items as FAILED, none sent, when the deadline has passed already. */
static void skip_all(rk_redis_item *it, size_t n) {
    for (size_t i = 0; i < n; i++) it[i].state = RK_REDIS_FAILED;
}

size_t rk_tier_get(rk_store *s, rk_store_table *tb, rk_keypos *kp, size_t m, float *out, const uint64_t *gens,
                   size_t *unknown) {
    rk_tier *t = s->tier;
    const int fallback = rk_redis_options(t->r)->rocksdb_fallback && s->db; /* a cluster-only store has no RocksDB */
    const size_t rowf = (size_t)tb->m.dim;
    size_t u = 0;
    for (size_t i = 0; i < m; i++) u += i == 0 || kp[i].row != kp[i - 1].row;
    rk_redis_item *it = rk_malloc(u * sizeof *it);
    char *keys = rk_malloc(u * RK_TIER_KEY_MAX);
    unsigned char *vals = rk_malloc(u * tb->row_bytes);
    size_t *first = rk_malloc((u + 1) * sizeof *first);
    size_t failed = 0, defaulted = 0, keep = 0;
    if (!it || !keys || !vals || !first) { /* no memory: RocksDB answers all */
        rk_free(it), rk_free(keys), rk_free(vals), rk_free(first);
        return m;
    }
    for (size_t i = 0, j = 0; i < m; i++) {
        if (i && kp[i].row == kp[i - 1].row) continue;
        char *k = keys + j * RK_TIER_KEY_MAX;
        it[j] = (rk_redis_item){k, (size_t)row_key(k, t->prefix, tb->m.name, kp[i].row),
                                tb->rslot[kp[i].row % RK_REDIS_GROUPS], NULL, 0, vals + j * tb->row_bytes,
                                tb->row_bytes, RK_REDIS_FAILED};
        first[j++] = i;
    }
    first[u] = m;
    double deadline = deadline_in(t->r, 1.0), tl = rk_tier_thread_deadline;
    if (tl > 0 && tl < deadline) deadline = tl;
    if (deadline <= rk_now()) skip_all(it, u);
    else (void)rk_redis_run(t->r, RK_REDIS_GET, it, u, 0, deadline, NULL);
    for (size_t j = 0; j < u; j++) {
        size_t i0 = first[j], i1 = first[j + 1];
        float *dst = out + kp[i0].pos * rowf;
        if (it[j].state == RK_REDIS_FOUND) {
            rk_codec_decode(tb->m.codec, it[j].out, tb->m.dim, dst);
            if (tb->cache.slots) rk_cache_fill(&tb->cache, kp[i0].row, it[j].out, gens);
        } else if (fallback) { /* RocksDB answers it */
            failed += it[j].state != RK_REDIS_ABSENT;
            for (size_t i = i0; i < i1; i++) kp[keep++] = kp[i];
            continue;
        } else {
            rk_store_default_row(tb, dst);
            if (it[j].state == RK_REDIS_ABSENT) {
                *unknown += i1 - i0;
            } else {
                failed++;
                defaulted += i1 - i0;
            }
        }
        for (size_t i = i0 + 1; i < i1; i++) memcpy(out + kp[i].pos * rowf, dst, rowf * sizeof(float));
    }
    atomic_fetch_add_explicit(&tb->redis_reads, u, memory_order_relaxed);
    atomic_fetch_add_explicit(&tb->redis_failed, failed, memory_order_relaxed);
    atomic_fetch_add_explicit(&tb->redis_defaulted, defaulted, memory_order_relaxed);
    rk_redis_count(t->r, defaulted, 0);
    rk_free(it), rk_free(keys), rk_free(vals), rk_free(first);
    return keep;
}

/* ---------------------------------------------------------------- updates */

rk_status rk_tier_apply(rk_store *s, rk_store_table *tb, const uint64_t *rows, size_t n, const unsigned char *enc,
                        rk_err *err) {
    rk_tier *t = s->tier;
    const rk_redis_opts *o = rk_redis_options(t->r);
    rk_redis_item *it = rk_malloc(n * sizeof *it);
    char *keys = rk_malloc(n * RK_TIER_KEY_MAX);
    size_t argc = 8 + 2 * n;
    const char **argv = rk_malloc(argc * sizeof *argv);
    size_t *lens = rk_malloc(argc * sizeof *lens);
    char *rowtxt = rk_malloc(n * 24);
    rk_status st = RK_OK;
    if (!it || !keys || !argv || !lens || !rowtxt) st = rk_fail(err, RK_ENOMEM, "redis tier: out of memory for %zu updates", n);
    for (size_t i = 0; st == RK_OK && i < n; i++) {
        char *k = keys + i * RK_TIER_KEY_MAX;
        it[i] = (rk_redis_item){k, (size_t)row_key(k, t->prefix, tb->m.name, rows[i]), tb->rslot[rows[i] % RK_REDIS_GROUPS],
                                enc + i * tb->row_bytes, tb->row_bytes, NULL, 0, RK_REDIS_FAILED};
    }
    /* Acknowledged = every master took its MSETs and o->wait_replicas replicas each confirmed (WAIT). */
    double deadline = rk_now() + (o->timeout_ms + o->wait_ms) / 1e3;
    if (st == RK_OK) st = rk_redis_run(t->r, RK_REDIS_SET, it, n, o->wait_replicas, deadline, err);
    if (st == RK_OK) { /* XADD {prefix}/updates MAXLEN ~ N * t TABLE ROW VALUE ... */
        char skey[RK_TIER_KEY_MAX];
        size_t a = 0;
        lens[a] = 4, argv[a++] = "XADD";
        lens[a] = (size_t)ver_key(skey, t->prefix, "updates"), argv[a++] = skey;
        lens[a] = 6, argv[a++] = "MAXLEN";
        lens[a] = 1, argv[a++] = "~";
        lens[a] = strlen(RK_TIER_STREAM_MAXLEN), argv[a++] = RK_TIER_STREAM_MAXLEN;
        lens[a] = 1, argv[a++] = "*";
        lens[a] = 1, argv[a++] = "t";
        lens[a] = strlen(tb->m.name), argv[a++] = tb->m.name;
        for (size_t i = 0; i < n; i++) {
            lens[a] = (size_t)snprintf(rowtxt + 24 * i, 24, "%llu", (unsigned long long)rows[i]);
            argv[a++] = rowtxt + 24 * i;
            lens[a] = tb->row_bytes, argv[a++] = (const char *)(enc + i * tb->row_bytes);
        }
        redisReply *rep = rk_redis_command(t->r, t->vslot, (int)a, argv, lens, deadline, err);
        if (!rep) st = RK_EIO, rk_err_prefix(err, "update stream (rows written, other replicas' caches not told)");
        else if (rep->type == REDIS_REPLY_ERROR)
            st = rk_fail(err, RK_EIO, "redis tier: XADD to the update stream: %s", rep->str);
        rk_redis_reply_free(rep);
    }
    rk_free(it), rk_free(keys), rk_free(argv), rk_free(lens), rk_free(rowtxt);
    return st;
}

/* Apply one stream entry's fields ["t", TABLE, ROW, VALUE, ...] to the caches. */
static void apply_entry(rk_store *s, redisReply *f) {
    if (f->type != REDIS_REPLY_ARRAY || f->elements < 2 || f->elements % 2) return;
    int ti = -1;
    for (int x = 0; x < s->n_tables; x++)
        if (f->element[1]->type == REDIS_REPLY_STRING && !strcmp(s->tabs[x].m.name, f->element[1]->str)) ti = x;
    if (ti < 0) return; /* a table this handle does not bind */
    rk_store_table *tb = &s->tabs[ti];
    for (size_t k = 2; k + 1 < f->elements; k += 2) {
        redisReply *rr = f->element[k], *vv = f->element[k + 1];
        if (rr->type != REDIS_REPLY_STRING || vv->type != REDIS_REPLY_STRING || vv->len != tb->row_bytes) continue;
        rk_cache_update(&tb->cache, strtoull(rr->str, NULL, 10), vv->str);
        atomic_fetch_add_explicit(&tb->stream_updates, 1, memory_order_relaxed);
        rk_redis_count(s->tier->r, 0, 1);
    }
}

/* Read the update stream after last_id (up to 1024 entries). */
static void poll_stream(rk_store *s) {
    rk_tier *t = s->tier;
    char skey[RK_TIER_KEY_MAX];
    ver_key(skey, t->prefix, "updates");
    const char *argv[] = {"XREAD", "COUNT", "1024", "STREAMS", skey, t->last_id};
    redisReply *rep = vcmd(t->r, t->vslot, deadline_in(t->r, 2.0), NULL, 6, argv);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
        rep->element[0]->elements == 2) {
        redisReply *ents = rep->element[0]->element[1];
        for (size_t e = 0; ents->type == REDIS_REPLY_ARRAY && e < ents->elements; e++) {
            redisReply *ent = ents->element[e];
            if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[0]->type != REDIS_REPLY_STRING) continue;
            apply_entry(s, ent->element[1]);
            snprintf(t->last_id, sizeof t->last_id, "%s", ent->element[0]->str);
        }
    }
    rk_redis_reply_free(rep);
}

static void renew_lease(rk_tier *t) {
    char k[RK_TIER_KEY_MAX], what[160], px[16];
    snprintf(what, sizeof what, "lease/%s", t->owner);
    ver_key(k, t->prefix, what);
    snprintf(px, sizeof px, "%d", RK_REDIS_LEASE_MS);
    const char *argv[] = {"SET", k, "1", "PX", px};
    rk_redis_reply_free(vcmd(t->r, t->vslot, deadline_in(t->r, 2.0), NULL, 5, argv));
}

static void *poller_main(void *arg) {
    rk_store *s = arg;
    rk_tier *t = s->tier;
    const int poll_ms = rk_redis_options(t->r)->poll_ms > 0 ? rk_redis_options(t->r)->poll_ms : 20;
    double next_lease = 0;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        pthread_mutex_unlock(&t->mu);
        poll_stream(s);
        if (rk_now() >= next_lease) {
            renew_lease(t);
            next_lease = rk_now() + 1.0;
        }
        pthread_mutex_lock(&t->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)poll_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        if (!t->stop) pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

void rk_tier_detach(rk_store *s) {
    rk_tier *t = s->tier;
    if (!t) return;
    if (t->started) {
        pthread_mutex_lock(&t->mu);
        t->stop = 1;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->poller, NULL);
        char k[RK_TIER_KEY_MAX], what[160];
        snprintf(what, sizeof what, "lease/%s", t->owner);
        ver_key(k, t->prefix, what);
        const char *argv[] = {"DEL", k};
        rk_redis_reply_free(vcmd(t->r, t->vslot, deadline_in(t->r, 2.0), NULL, 2, argv));
        drop_if_retired(t);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    rk_free(t);
    s->tier = NULL;
}

/* ---------------------------------------------------------------- attach */

/* The marker's tables must include every table s binds, with the same dim, codec and rows. */
static rk_status check_marker(rk_store *s, const char *prefix, redisReply *rep, rk_err *err) {
    if (!rep || rep->type != REDIS_REPLY_STRING)
        return rk_fail(err, RK_ENOTFOUND, "redis tier: version %s is not (fully) loaded: no completion marker; "
                                          "run `rank store publish-redis` for store %s", prefix, s->path);
    rk_meta_table *mt = NULL;
    int n = 0;
    rk_status st = rk_store_meta_parse(rep->str, rep->len, prefix, &mt, &n, err);
    for (int x = 0; st == RK_OK && x < s->n_tables; x++) {
        const rk_meta_table *a = &s->tabs[x].m, *b = NULL;
        for (int i = 0; i < n; i++)
            if (!strcmp(mt[i].name, a->name)) b = &mt[i];
        if (!b || b->dim != a->dim || b->codec != a->codec || b->rows != a->rows || b->keyed != a->keyed)
            st = rk_fail(err, RK_EFORMAT, "redis tier: version %s: table '%s' is not the one in store %s", prefix,
                         a->name, s->path);
    }
    rk_free(mt);
    return st;
}

rk_status rk_store_redis_attach(rk_store *s, rk_redis *r, rk_err *err) {
    if (s->tier) return rk_fail(err, RK_EINVAL, "store %s: a Redis tier is attached already", s->path);
    rk_tier *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "redis tier: out of memory");
    t->r = r;
    rk_store_redis_prefix(s, t->prefix, sizeof t->prefix);
    t->vslot = rk_redis_crc16(t->prefix, strlen(t->prefix)) & (RK_REDIS_SLOTS - 1);
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(t->owner, sizeof t->owner, "%s:%d:%p", host, (int)getpid(), (void *)s);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    s->tier = t;
    char k[RK_TIER_KEY_MAX];
    ver_key(k, t->prefix, "ready");
    const char *get[] = {"GET", k};
    double deadline = rk_now() + 2.0;
    redisReply *rep = vcmd(r, t->vslot, deadline, err, 2, get);
    rk_status st = rep ? check_marker(s, t->prefix, rep, err) : RK_EIO;
    rk_redis_reply_free(rep);
    if (st == RK_OK) { /* start reading the update stream at its current end */
        ver_key(k, t->prefix, "updates");
        const char *last[] = {"XREVRANGE", k, "+", "-", "COUNT", "1"};
        rep = vcmd(r, t->vslot, deadline, err, 6, last);
        if (!rep || rep->type == REDIS_REPLY_ERROR)
            st = rk_fail(err, RK_EIO, "redis tier: version %s: cannot read the update stream%s%s", t->prefix,
                         rep ? ": " : "", rep ? rep->str : "");
        else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->type == REDIS_REPLY_ARRAY &&
                 rep->element[0]->elements == 2 && rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
            snprintf(t->last_id, sizeof t->last_id, "%s", rep->element[0]->element[0]->str);
        else
            snprintf(t->last_id, sizeof t->last_id, "0-0");
        rk_redis_reply_free(rep);
    }
    for (int x = 0; st == RK_OK && x < s->n_tables; x++) table_slots(&s->tabs[x], t->prefix);
    if (st == RK_OK) {
        renew_lease(t);
        if (pthread_create(&t->poller, NULL, poller_main, s)) st = rk_fail(err, RK_EINTERNAL, "redis tier: cannot start the poller");
        else t->started = 1;
    }
    if (st) rk_tier_detach(s);
    return st;
}

/* ---------------------------------------------------------------- publish */

typedef struct {
    rk_redis *r;
    const char *prefix;
    rk_store_table *tb;
    rk_redis_item *it;
    char *keys;
    unsigned char *vals;
    uint64_t lastkey[RK_REDIS_LOAD_ROWS];
    size_t n;
    uint16_t vslot;
    rk_progress *pr;
    uint64_t loaded;
} loader;

/* Send the buffered rows (MSET + WAIT), then record the next key to load. */
static rk_status flush_rows(loader *L, rk_err *err) {
    if (!L->n) return RK_OK;
    const rk_redis_opts *o = rk_redis_options(L->r);
    double deadline = rk_now() + 10.0 + o->wait_ms / 1e3;
    rk_status st = rk_redis_run(L->r, RK_REDIS_SET, L->it, L->n, o->wait_replicas, deadline, err);
    if (st == RK_OK) {
        char k[RK_TIER_KEY_MAX], what[RK_STORE_NAME_MAX + 8], next[24];
        snprintf(what, sizeof what, "load/%s", L->tb->m.name);
        ver_key(k, L->prefix, what);
        snprintf(next, sizeof next, "%llu", (unsigned long long)(L->lastkey[L->n - 1] + 1));
        const char *argv[] = {"SET", k, next};
        redisReply *rep = vcmd(L->r, L->vslot, deadline, err, 3, argv);
        if (!rep || rep->type == REDIS_REPLY_ERROR) st = rk_fail(err, RK_EIO, "redis tier: cannot record load progress of table '%s'", L->tb->m.name);
        rk_redis_reply_free(rep);
    }
    if (st == RK_OK) {
        if (L->pr) rk_progress_add(L->pr, L->n);
        L->loaded += L->n;
        L->n = 0;
    }
    return st;
}

static rk_status load_table(rk_store *s, loader *L, uint64_t from, rk_err *err) {
    rk_store_table *tb = L->tb;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_fill_cache(ro, 0);
    rocksdb_iterator_t *iter = rocksdb_create_iterator_cf(s->db, ro, tb->cf);
    unsigned char kb[8];
    rk_store_be64(kb, from);
    rk_status st = RK_OK;
    for (rocksdb_iter_seek(iter, (const char *)kb, 8); st == RK_OK && rocksdb_iter_valid(iter); rocksdb_iter_next(iter)) {
        size_t kl, vl;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(iter, &kl);
        const char *v = rocksdb_iter_value(iter, &vl);
        if (kl != 8 || vl != tb->row_bytes) {
            st = rk_fail(err, RK_EFORMAT, "store %s: table '%s' has a record of %zu / %zu bytes", s->path, tb->m.name, kl, vl);
            break;
        }
        uint64_t key = 0;
        for (int i = 0; i < 8; i++) key = key << 8 | k[i];
        char *kk = L->keys + L->n * RK_TIER_KEY_MAX;
        unsigned char *vv = L->vals + L->n * tb->row_bytes;
        memcpy(vv, v, vl);
        L->it[L->n] = (rk_redis_item){kk, (size_t)row_key(kk, L->prefix, tb->m.name, key), tb->rslot[key % RK_REDIS_GROUPS],
                                      vv, vl, NULL, 0, RK_REDIS_FAILED};
        L->lastkey[L->n++] = key;
        if (L->n == RK_REDIS_LOAD_ROWS) st = flush_rows(L, err);
    }
    char *rerr = NULL;
    rocksdb_iter_get_error(iter, &rerr);
    if (rerr && st == RK_OK) st = rk_fail(err, rk_rocks_status(rerr), "store %s: table '%s': %s", s->path, tb->m.name, rerr);
    rocksdb_free(rerr);
    rocksdb_iter_destroy(iter);
    rocksdb_readoptions_destroy(ro);
    if (st == RK_OK) st = flush_rows(L, err);
    return st;
}

/* Next key to load for table tb (0 when no progress is recorded). */
static rk_status load_from(loader *L, uint64_t *from, rk_err *err) {
    char k[RK_TIER_KEY_MAX], what[RK_STORE_NAME_MAX + 8];
    snprintf(what, sizeof what, "load/%s", L->tb->m.name);
    ver_key(k, L->prefix, what);
    const char *argv[] = {"GET", k};
    redisReply *rep = vcmd(L->r, L->vslot, rk_now() + 5.0, err, 2, argv);
    if (!rep) return RK_EIO;
    *from = rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
    rk_redis_reply_free(rep);
    return RK_OK;
}

/* SET a binary value on the version's slot. */
static rk_status vset(rk_redis *r, uint16_t vslot, const char *key, const void *val, size_t vlen, rk_err *err) {
    const char *argv[] = {"SET", key, val};
    size_t lens[] = {3, strlen(key), vlen};
    redisReply *rep = rk_redis_command(r, vslot, 3, argv, lens, rk_now() + 5.0, err);
    rk_status st = !rep ? RK_EIO : RK_OK;
    if (rep && rep->type == REDIS_REPLY_ERROR) st = rk_fail(err, RK_EIO, "redis tier: SET %s: %s", key, rep->str);
    rk_redis_reply_free(rep);
    return st;
}

/* The tables' default (OOV) rows as stored, under {prefix}/oov/TABLE: a
 * cluster-only open (rk_store_open_redis) serves unknown ids with them. */
static rk_status publish_oov(rk_store *s, rk_redis *r, const char *prefix, uint16_t vslot, rk_err *err) {
    rk_status st = RK_OK;
    for (int x = 0; st == RK_OK && x < s->n_tables; x++) {
        const rk_store_table *tb = &s->tabs[x];
        if (!tb->oov_raw) continue;
        char k[RK_TIER_KEY_MAX], what[RK_STORE_NAME_MAX + 8];
        snprintf(what, sizeof what, "oov/%s", tb->m.name);
        ver_key(k, prefix, what);
        st = vset(r, vslot, k, tb->oov_raw, tb->row_bytes, err);
    }
    return st;
}

rk_status rk_store_redis_publish(rk_store *s, rk_redis *r, int progress, uint64_t *rows_loaded, rk_err *err) {
    if (rows_loaded) *rows_loaded = 0;
    char prefix[RK_TIER_PREFIX_MAX], k[RK_TIER_KEY_MAX];
    rk_store_redis_prefix(s, prefix, sizeof prefix);
    uint16_t vslot = rk_redis_crc16(prefix, strlen(prefix)) & (RK_REDIS_SLOTS - 1);
    ver_key(k, prefix, "ready");
    const char *get[] = {"GET", k};
    redisReply *rep = vcmd(r, vslot, rk_now() + 5.0, err, 2, get);
    if (!rep) return RK_EIO;
    int done = rep->type == REDIS_REPLY_STRING;
    rk_status st = done ? check_marker(s, prefix, rep, err) : RK_OK;
    rk_redis_reply_free(rep);
    if (done) return st ? st : publish_oov(s, r, prefix, vslot, err); /* versions published before the default rows were */
    loader L = {.r = r, .prefix = prefix, .vslot = vslot};
    size_t maxrb = 0;
    uint64_t total = 0;
    for (int x = 0; x < s->n_tables; x++) {
        maxrb = s->tabs[x].row_bytes > maxrb ? s->tabs[x].row_bytes : maxrb;
        total += s->tabs[x].m.rows;
    }
    L.it = rk_malloc(RK_REDIS_LOAD_ROWS * sizeof *L.it);
    L.keys = rk_malloc((size_t)RK_REDIS_LOAD_ROWS * RK_TIER_KEY_MAX);
    L.vals = rk_malloc(RK_REDIS_LOAD_ROWS * (maxrb ? maxrb : 1));
    rk_progress pr;
    if (progress) rk_progress_start(&pr, "publish-redis", "rows", total), L.pr = &pr;
    if (!L.it || !L.keys || !L.vals) st = rk_fail(err, RK_ENOMEM, "redis tier: out of memory");
    for (int x = 0; st == RK_OK && x < s->n_tables; x++) {
        uint64_t from = 0;
        L.tb = &s->tabs[x];
        table_slots(L.tb, prefix);
        st = load_from(&L, &from, err);
        if (st == RK_OK && from && L.pr) rk_progress_add(L.pr, from < L.tb->m.rows ? from : L.tb->m.rows); /* resumed */
        if (st == RK_OK) st = load_table(s, &L, from, err);
        if (st) rk_err_prefix(err, "publish %s table '%s'", prefix, L.tb->m.name);
    }
    if (progress) rk_progress_finish(&pr);
    if (st == RK_OK) st = publish_oov(s, r, prefix, vslot, err);
    if (st == RK_OK) { /* the marker last: replicas attach only to a complete version */
        rk_meta_table *mt = rk_calloc((size_t)s->n_tables + 1, sizeof *mt);
        for (int x = 0; mt && x < s->n_tables; x++) mt[x] = s->tabs[x].m;
        char *meta = mt ? rk_store_meta_format(mt, s->n_tables) : NULL;
        rk_free(mt);
        if (!meta) st = rk_fail(err, RK_ENOMEM, "redis tier: out of memory");
        const char *set[] = {"SET", k, meta};
        if (st == RK_OK && !(rep = vcmd(r, vslot, rk_now() + 5.0, err, 3, set))) st = RK_EIO;
        else if (st == RK_OK && rep->type == REDIS_REPLY_ERROR) st = rk_fail(err, RK_EIO, "redis tier: completion marker: %s", rep->str);
        if (st == RK_OK) rk_redis_reply_free(rep);
        rk_free(meta);
    }
    if (rows_loaded) *rows_loaded = L.loaded;
    rk_free(L.it), rk_free(L.keys), rk_free(L.vals);
    return st;
}

/* ---------------------------------------------------------------- drop */

/* SCAN one master for keys matching pattern: count them, and UNLINK them when unlink. */
static rk_status scan_master(rk_redis *r, const char *addr, const char *pattern, int unlink, uint64_t *count, rk_err *err) {
    char cursor[32] = "0";
    rk_status st = RK_OK;
    for (int guard = 0; st == RK_OK && guard < 1000000; guard++) {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        size_t lens[6];
        for (int i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
        redisReply *rep = rk_redis_command_at(r, addr, 6, argv, lens, rk_now() + 5.0, err);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            rk_redis_reply_free(rep);
            return rep ? rk_fail(err, RK_EIO, "redis %s: bad SCAN reply", addr) : RK_EIO;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *ks = rep->element[1];
        *count += ks->elements;
        if (unlink && ks->elements) { /* UNLINK grouped by slot, pipelined */
            rk_redis_item *it = rk_calloc(ks->elements, sizeof *it);
            if (!it) st = rk_fail(err, RK_ENOMEM, "redis tier: out of memory");
            for (size_t i = 0; it && i < ks->elements; i++)
                it[i] = (rk_redis_item){ks->element[i]->str, ks->element[i]->len,
                                        rk_redis_slot(ks->element[i]->str, ks->element[i]->len), NULL, 0, NULL, 0, 0};
            if (it) st = rk_redis_run(r, RK_REDIS_DEL, it, ks->elements, 0, rk_now() + 10.0, err);
            rk_free(it);
        }
        rk_redis_reply_free(rep);
        if (!strcmp(cursor, "0")) break;
    }
    return st;
}

/* ---------------------------------------------------------------- lineages */

#define RK_LINEAGE_MAX 100

static int lineage_key(char *k, const char *lineage, const char *what) {
    return snprintf(k, RK_TIER_KEY_MAX, "{rk/lineage/%s}%s", lineage, what);
}

/* The lineage recorded for prefix into buf ("" when none); RK_EIO when Redis does not answer. */
static rk_status version_lineage(rk_redis *r, const char *prefix, char *buf, size_t cap, rk_err *err) {
    char k[RK_TIER_KEY_MAX];
    ver_key(k, prefix, "lineage");
    const char *argv[] = {"GET", k};
    redisReply *rep = vcmd(r, rk_redis_crc16(prefix, strlen(prefix)) & (RK_REDIS_SLOTS - 1), rk_now() + 5.0, err, 2, argv);
    if (!rep) return RK_EIO;
    snprintf(buf, cap, "%s", rep->type == REDIS_REPLY_STRING ? rep->str : "");
    rk_redis_reply_free(rep);
    return RK_OK;
}

/* A command on the lineage's slot; NULL (err set) on no answer or an error reply. */
static redisReply *lcmd(rk_redis *r, const char *lineage, rk_err *err, int argc, const char **argv) {
    char k[RK_TIER_KEY_MAX];
    int n = lineage_key(k, lineage, "");
    redisReply *rep = vcmd(r, rk_redis_slot(k, (size_t)n), rk_now() + 5.0, err, argc, argv);
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        rk_fail(err, RK_EIO, "redis tier: lineage '%s': %s: %s", lineage, argv[0], rep->str);
        rk_redis_reply_free(rep);
        rep = NULL;
    }
    return rep;
}

rk_status rk_redis_lineage_add(rk_redis *r, const char *lineage, const char *prefix, uint64_t *dropped, rk_err *err) {
    if (dropped) *dropped = 0;
    if (!lineage[0] || strlen(lineage) > RK_LINEAGE_MAX)
        return rk_fail(err, RK_EINVAL, "redis tier: lineage name must be 1..%d bytes, got %zu", RK_LINEAGE_MAX, strlen(lineage));
    char set[RK_TIER_KEY_MAX], seq[RK_TIER_KEY_MAX], vk[RK_TIER_KEY_MAX], num[32];
    lineage_key(set, lineage, "");
    lineage_key(seq, lineage, "/seq");
    ver_key(vk, prefix, "lineage");
    const char *incr[] = {"INCR", seq};
    redisReply *rep = lcmd(r, lineage, err, 2, incr);
    if (!rep) return RK_EIO;
    snprintf(num, sizeof num, "%lld", rep->integer);
    rk_redis_reply_free(rep);
    rk_status st = vset(r, rk_redis_crc16(prefix, strlen(prefix)) & (RK_REDIS_SLOTS - 1), vk, lineage, strlen(lineage), err);
    const char *zadd[] = {"ZADD", set, num, prefix};
    if (st == RK_OK && !(rep = lcmd(r, lineage, err, 4, zadd))) st = RK_EIO;
    if (st) return rk_err_prefix(err, "recording version %s in lineage '%s'", prefix, lineage);
    rk_redis_reply_free(rep);
    const char *older[] = {"ZRANGE", set, "0", "-2"}; /* every version but the newest */
    if (!(rep = lcmd(r, lineage, err, 4, older))) return RK_EIO;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        rk_err e = {0};
        rk_status ds = rk_redis_drop_version(r, rep->element[i]->str, NULL, &e);
        if (ds == RK_OK && dropped) (*dropped)++;
        else if (ds != RK_OK && ds != RK_EEXIST && st == RK_OK) st = ds, *err = e; /* the next publish retries it */
    }
    rk_redis_reply_free(rep);
    return st;
}

/* After this replica let go of its version (rk_tier_detach): with
 * opts.drop_retired, drop it when a newer version of its lineage exists
 * and no replica holds a lease. The newest version is never dropped here,
 * so a restarting replica finds the version it served. */
static void drop_if_retired(rk_tier *t) {
    char lineage[RK_LINEAGE_MAX + 8];
    if (!rk_redis_options(t->r)->drop_retired || version_lineage(t->r, t->prefix, lineage, sizeof lineage, NULL) || !lineage[0])
        return;
    char set[RK_TIER_KEY_MAX];
    lineage_key(set, lineage, "");
    const char *newest[] = {"ZREVRANGE", set, "0", "0"};
    redisReply *rep = lcmd(t->r, lineage, NULL, 4, newest);
    int retired = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
                  rep->element[0]->type == REDIS_REPLY_STRING && strcmp(rep->element[0]->str, t->prefix) != 0;
    rk_redis_reply_free(rep);
    if (!retired) return;
    rk_err e = {0};
    uint64_t n = 0;
    rk_status st = rk_redis_drop_version(t->r, t->prefix, &n, &e);
    if (st == RK_OK)
        rk_info("redis tier: dropped retired version %s of lineage '%s' (%llu keys): no replica serves it", t->prefix,
                lineage, (unsigned long long)n);
    else if (st != RK_EEXIST)
        rk_warn("redis tier: dropping retired version %s: %s (the next publish of lineage '%s' retries)", t->prefix,
                e.msg, lineage);
}

rk_status rk_redis_drop_version(rk_redis *r, const char *prefix, uint64_t *deleted, rk_err *err) {
    if (deleted) *deleted = 0;
    char lineage[RK_LINEAGE_MAX + 8];
    if (version_lineage(r, prefix, lineage, sizeof lineage, err)) return RK_EIO;
    char addrs[64][64], pat[RK_TIER_KEY_MAX];
    int n = rk_redis_masters(r, addrs, 64);
    uint64_t leases = 0, count = 0;
    snprintf(pat, sizeof pat, "{%s}/lease/*", prefix);
    rk_status st = RK_OK;
    for (int i = 0; st == RK_OK && i < n; i++) st = scan_master(r, addrs[i], pat, 0, &leases, err);
    if (st == RK_OK && leases)
        return rk_fail(err, RK_EEXIST, "redis tier: version %s is in use: %llu replica lease(s) alive", prefix,
                       (unsigned long long)leases);
    char k[RK_TIER_KEY_MAX];
    ver_key(k, prefix, "ready"); /* the marker first: no replica attaches to a version being dropped */
    const char *del[] = {"UNLINK", k};
    redisReply *rep = vcmd(r, rk_redis_crc16(prefix, strlen(prefix)) & (RK_REDIS_SLOTS - 1), rk_now() + 5.0, err, 2, del);
    if (!rep) return RK_EIO;
    rk_redis_reply_free(rep);
    snprintf(pat, sizeof pat, "{%s*", prefix);
    for (int i = 0; st == RK_OK && i < n; i++) st = scan_master(r, addrs[i], pat, 1, &count, err);
    if (deleted) *deleted = count;
    if (st == RK_OK && lineage[0]) { /* out of its lineage only once every key is gone: a retry finds it there */
        char set[RK_TIER_KEY_MAX];
        lineage_key(set, lineage, "");
        const char *zrem[] = {"ZREM", set, prefix};
        if (!(rep = lcmd(r, lineage, err, 3, zrem))) st = RK_EIO;
        rk_redis_reply_free(rep);
    }
    return st;
}

/* ---------------------------------------------------------------- cluster-only open */

/* Table tb's default row from {prefix}/oov/TABLE. */
static rk_status remote_oov(rk_store *s, rk_redis *r, uint16_t vslot, rk_store_table *tb, rk_err *err) {
    char k[RK_TIER_KEY_MAX], what[RK_STORE_NAME_MAX + 8];
    snprintf(what, sizeof what, "oov/%s", tb->m.name);
    ver_key(k, s->remote, what);
    const char *argv[] = {"GET", k};
    redisReply *rep = vcmd(r, vslot, rk_now() + 5.0, err, 2, argv);
    if (!rep) return RK_EIO;
    rk_status st = RK_OK;
    if (rep->type != REDIS_REPLY_STRING || rep->len != tb->row_bytes)
        st = rk_fail(err, RK_EFORMAT, "store %s: table '%s': default (OOV) row missing in the cluster or of the wrong size "
                                      "(publish the version again with `rank store publish-redis`)", s->path, tb->m.name);
    tb->oov = st ? NULL : rk_malloc((size_t)tb->m.dim * sizeof(float));
    tb->oov_raw = st ? NULL : rk_malloc(tb->row_bytes);
    if (st == RK_OK && (!tb->oov || !tb->oov_raw)) st = rk_fail(err, RK_ENOMEM, "store %s: out of memory", s->path);
    if (st == RK_OK) {
        memcpy(tb->oov_raw, rep->str, tb->row_bytes);
        rk_codec_decode(tb->m.codec, tb->oov_raw, tb->m.dim, tb->oov);
    }
    rk_redis_reply_free(rep);
    return st;
}

/* Bind names[0..n) (NULL: every table of the marker) to s's tables. */
static rk_status bind_remote(rk_store *s, rk_redis *r, uint16_t vslot, const rk_meta_table *mt, int n_mt,
                             const char *const *names, const int *dims, int n_tables, rk_err *err) {
    if (!names && n_tables == 0) n_tables = n_mt;
    s->tabs = rk_calloc((size_t)(n_tables ? n_tables : 1), sizeof *s->tabs);
    if (!s->tabs) return rk_fail(err, RK_ENOMEM, "store %s: out of memory", s->path);
    s->n_tables = n_tables;
    for (int t = 0; t < n_tables; t++) {
        const char *want = names ? names[t] : mt[t].name;
        int mi = -1;
        for (int i = 0; i < n_mt; i++)
            if (!strcmp(mt[i].name, want)) mi = i;
        if (mi < 0) return rk_fail(err, RK_ENOTFOUND, "store %s: table '%s' missing from the published version", s->path, want);
        rk_store_table *tb = &s->tabs[t];
        tb->m = mt[mi];
        tb->row_bytes = rk_codec_row_bytes(tb->m.codec, tb->m.dim);
        if (dims && dims[t] != tb->m.dim)
            return rk_fail(err, RK_EFORMAT, "store %s: table '%s' has dim %d, expected %d", s->path, want, tb->m.dim, dims[t]);
        rk_status st = tb->m.has_oov ? remote_oov(s, r, vslot, tb, err) : RK_OK;
        if (st) return st;
    }
    return RK_OK;
}

rk_status rk_store_open_redis(rk_redis *r, const char *prefix, const char *const *names, const int *dims, int n_tables,
                              const rk_store_opts *opts, rk_store **out, rk_err *err) {
    *out = NULL;
    rk_store_opts defo = RK_STORE_OPTS_DEFAULT;
    if (!opts) opts = &defo;
    rk_status cs = rk_store_check_opts(prefix, opts, err);
    if (cs) return cs;
    if (!prefix[0] || strlen(prefix) >= RK_TIER_PREFIX_MAX)
        return rk_fail(err, RK_EINVAL, "redis tier: version prefix must be 1..%d bytes", RK_TIER_PREFIX_MAX - 1);
    rk_store *s = rk_store_alloc(opts);
    if (!s) return rk_fail(err, RK_ENOMEM, "store redis:%s: out of memory", prefix);
    s->o.writable = 0; /* updates go to the cluster (rk_tier_apply) */
    if (rk_redis_options(r)->cache_bytes >= 0 && opts->cache_bytes) s->o.cache_bytes = (size_t)rk_redis_options(r)->cache_bytes;
    snprintf(s->remote, sizeof s->remote, "%s", prefix);
    snprintf(s->path, sizeof s->path, "redis:%s", prefix);
    uint16_t vslot = rk_redis_crc16(prefix, strlen(prefix)) & (RK_REDIS_SLOTS - 1);
    char k[RK_TIER_KEY_MAX];
    ver_key(k, prefix, "ready");
    const char *get[] = {"GET", k};
    redisReply *rep = vcmd(r, vslot, rk_now() + 5.0, err, 2, get);
    rk_meta_table *mt = NULL;
    int n_mt = 0;
    rk_status st = RK_EIO;
    if (rep && rep->type != REDIS_REPLY_STRING)
        st = rk_fail(err, RK_ENOTFOUND, "redis tier: version %s is not (fully) loaded in the cluster: no completion marker "
                                        "(publish it with `rank store publish-redis`)", prefix);
    else if (rep)
        st = rk_store_meta_parse(rep->str, rep->len, s->path, &mt, &n_mt, err);
    rk_redis_reply_free(rep);
    if (st == RK_OK) st = bind_remote(s, r, vslot, mt, n_mt, names, dims, n_tables, err);
    rk_free(mt);
    if (st == RK_OK) st = rk_store_setup_caches(s, err);
    if (st == RK_OK) st = rk_store_redis_attach(s, r, err);
    if (st) {
        rk_store_close(s);
        return st;
    }
    *out = s;
    return RK_OK;
}
