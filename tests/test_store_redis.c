/*
 * tests/test_store_redis.c — the store's Redis Cluster tier against a real
 * cluster (scripts/redis-cluster.sh: 3 masters + 3 replicas on free loopback
 * ports, started and torn down by each test that needs one): CRC16 slots,
 * publish (bulk, resumable, completion marker), lookups equal to RocksDB's,
 * MOVED after a slot moves, updates seen by a second replica within the
 * stated bound, drop refused while a replica serves the version, and a
 * master killed mid-traffic: lookups stay within their deadline, degrade to
 * the default row (counted), the failover is followed, and an acknowledged
 * update survives it (WAIT 1).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "store_internal.h"

static char tmpdir[256], seeds[512], ports[6][16];
static int cluster_up;

static void cluster_start(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-redis-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh start %s/cluster %d", RK_SOURCE_DIR, tmpdir, (int)getpid());
    cr_assert_eq(system(cmd), 0, "cannot start the test cluster (%s)", cmd);
    cluster_up = 1;
    char envp[300], line[600];
    snprintf(envp, sizeof envp, "%s/cluster/env", tmpdir);
    FILE *f = fopen(envp, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "RK_REDIS_SEEDS=", 15)) snprintf(seeds, sizeof seeds, "%s", line + 15);
        if (!strncmp(line, "RK_REDIS_PORTS=\"", 16))
            cr_assert_eq(sscanf(line + 16, "%15s %15s %15s %15s %15s %15[0-9]", ports[0], ports[1], ports[2], ports[3],
                                ports[4], ports[5]), 6);
    }
    fclose(f);
    cr_assert(seeds[0]);
}

static void cluster_stop(void) {
    if (cluster_up) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh stop %s/cluster", RK_SOURCE_DIR, tmpdir);
        (void)system(cmd);
    }
    rk_rm_rf(tmpdir, NULL);
}

static rk_redis *connect_cluster(int rocksdb_fallback, int timeout_ms) {
    rk_redis_opts o = RK_REDIS_OPTS_DEFAULT;
    o.rocksdb_fallback = rocksdb_fallback;
    o.timeout_ms = timeout_ms;
    rk_redis *r = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_redis_create(seeds, &o, &r, &e), RK_OK, "%s", e.msg);
    return r;
}

#define ROWS 3000
#define DIM 8

/* A version at path: tables "a" (fp32, ROWS rows) and "b" (int8, ROWS/2), values N(0, 0.1) from seed. */
static void write_two(const char *path, uint64_t seed) {
    float *d = malloc((size_t)(ROWS + ROWS / 2) * DIM * sizeof(float));
    rk_rng g;
    rk_rng_seed(&g, seed);
    for (size_t i = 0; i < (size_t)(ROWS + ROWS / 2) * DIM; i++) d[i] = (float)(rk_rng_normal(&g) * 0.1);
    rk_table_spec spec[2] = {{"a", DIM, ROWS, d}, {"b", DIM, ROWS / 2, d + (size_t)ROWS * DIM}};
    rk_table_opts to[2] = {{RK_CODEC_FP32, NULL}, {RK_CODEC_INT8, NULL}};
    rk_err e = {0};
    cr_assert_eq(rk_store_write_ex(path, spec, 2, to, &e), RK_OK, "%s", e.msg);
    free(d);
}

static rk_store *open_ro(const char *path, size_t cache_bytes) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = cache_bytes;
    o.verify = 0;
    rk_store *s = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_ex(path, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    return s;
}

/* Redis's own CLUSTER KEYSLOT agrees with ours. */
Test(store_redis, crc16_and_slots) {
    cr_assert_eq(rk_redis_crc16("123456789", 9), 0x31C3); /* Redis Cluster spec's test vector */
    cr_assert_eq(rk_redis_slot("{user1000}.following", 20), rk_redis_slot("{user1000}.followers", 20));
    cr_assert_eq(rk_redis_slot("foo{}{bar}", 10), rk_redis_crc16("foo{}{bar}", 10) & 16383); /* empty tag: whole key */
    cr_assert_eq(rk_redis_slot("foo{{bar}}zap", 13), rk_redis_crc16("{bar", 4) & 16383);
    rk_err e = {0};
    rk_redis *r = NULL;
    cr_assert_eq(rk_redis_create("127.0.0.1", NULL, &r, &e), RK_EINVAL);
    cr_assert(strstr(e.msg, "'127.0.0.1'"), "%s", e.msg);
    cr_assert_eq(rk_redis_create("127.0.0.1:0", NULL, &r, &e), RK_EINVAL);
    cr_assert_eq(rk_redis_create("", NULL, &r, &e), RK_EINVAL);
}

static void expect_rows(rk_store *s, int t, const uint64_t *keys, size_t n, rk_store *ref) {
    int dim = DIM;
    float *got = malloc(n * dim * sizeof(float)), *want = malloc(n * dim * sizeof(float));
    rk_err e = {0};
    cr_assert_eq(rk_store_get(s, t, keys, n, got, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_store_get(ref, t, keys, n, want, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(memcmp(got, want, n * dim * sizeof(float)), 0, "Redis rows differ from RocksDB's");
    free(got), free(want);
}

Test(store_redis, publish_lookup_update_drop, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[400];
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    write_two(path, 1);
    rk_redis *r = connect_cluster(0, 200);
    rk_store *ref = open_ro(path, 0), *pub = open_ro(path, 0);
    rk_err e = {0};

    /* not loaded: a replica refuses to attach */
    rk_store *ra = open_ro(path, 1 << 20);
    cr_assert_eq(rk_store_redis_attach(ra, r, &e), RK_ENOTFOUND);
    cr_assert(strstr(e.msg, "not (fully) loaded"), "%s", e.msg);

    /* an interrupted publish resumes: pretend table a stopped at row 1000 */
    char prefix[80], k[200];
    rk_store_redis_prefix(pub, prefix, sizeof prefix);
    snprintf(k, sizeof k, "{%s}/load/a", prefix);
    const char *argv[] = {"SET", k, "1000"};
    size_t lens[] = {3, strlen(k), 4};
    rk_redis_reply_free(rk_redis_command(r, rk_redis_slot(k, strlen(k)), 3, argv, lens, rk_now() + 2, &e));
    uint64_t loaded = 0;
    cr_assert_eq(rk_store_redis_publish(pub, r, 0, &loaded, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(loaded, (ROWS - 1000) + ROWS / 2, "loaded %llu", (unsigned long long)loaded);
    snprintf(k, sizeof k, "{%s/a/%u}%u", prefix, 999u % RK_REDIS_GROUPS, 999u); /* skipped by the resume */
    const char *g1[] = {"EXISTS", k};
    size_t gl[] = {6, strlen(k)};
    redisReply *rep = rk_redis_command(r, rk_redis_slot(k, strlen(k)), 2, g1, gl, rk_now() + 2, &e);
    cr_assert(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    rk_redis_reply_free(rep);
    /* complete: publishing again loads nothing */
    cr_assert_eq(rk_store_redis_publish(pub, r, 0, &loaded, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(loaded, 0);

    /* a full publish of a fresh copy of the key space: reset progress and reload */
    snprintf(k, sizeof k, "{%s}/ready", prefix);
    const char *dl[] = {"DEL", k};
    size_t dll[] = {3, strlen(k)};
    rk_redis_reply_free(rk_redis_command(r, rk_redis_slot(k, strlen(k)), 2, dl, dll, rk_now() + 2, &e));
    snprintf(k, sizeof k, "{%s}/load/a", prefix);
    dll[1] = strlen(k);
    rk_redis_reply_free(rk_redis_command(r, rk_redis_slot(k, strlen(k)), 2, dl, dll, rk_now() + 2, &e));
    cr_assert_eq(rk_store_redis_publish(pub, r, 0, &loaded, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(loaded, ROWS);

    /* two replicas on the version */
    cr_assert_eq(rk_store_redis_attach(ra, r, &e), RK_OK, "%s", e.msg);
    rk_store *rb = open_ro(path, 1 << 20);
    cr_assert_eq(rk_store_redis_attach(rb, r, &e), RK_OK, "%s", e.msg);
    uint64_t keys[600];
    for (int i = 0; i < 600; i++) keys[i] = (uint64_t)(i * 37 % ROWS);
    expect_rows(ra, 0, keys, 600, ref);
    for (int i = 0; i < 600; i++) keys[i] = (uint64_t)(i * 11 % (ROWS / 2));
    expect_rows(ra, 1, keys, 600, ref);
    rk_store_stats st;
    rk_store_stats_get(ra, -1, &st);
    cr_assert_eq(st.rocksdb_reads, 0, "every miss came from Redis");
    cr_assert_gt(st.redis_reads, 0);
    cr_assert_eq(st.redis_failed, 0);
    rk_redis_stats rs;
    rk_redis_stats_get(r, &rs);
    /* one round trip per master per lookup (3 masters, 2 lookups + the reference-free gets) */
    cr_assert_leq(rs.round_trips, rs.batches * 3);

    /* an update through replica a: replica b, with the row cached, sees it within poll_ms + a round trip */
    uint64_t row = 7;
    float old[DIM], nw[DIM], got[DIM];
    cr_assert_eq(rk_store_get(rb, 0, &row, 1, old, NULL, &e), RK_OK); /* cached in b now */
    for (int j = 0; j < DIM; j++) nw[j] = old[j] + 1.0f;
    double t0 = rk_now();
    cr_assert_eq(rk_store_apply(ra, 0, &row, 1, nw, &e), RK_OK, "%s", e.msg);
    double seen = -1;
    for (int i = 0; i < 2000 && seen < 0; i++) {
        cr_assert_eq(rk_store_get(rb, 0, &row, 1, got, NULL, &e), RK_OK);
        if (!memcmp(got, nw, sizeof nw)) seen = rk_now() - t0;
        else usleep(1000);
    }
    cr_log_info("update seen by replica b after %.1f ms", seen * 1e3);
    cr_assert_geq(seen, 0, "replica b never saw the update");
    cr_assert_lt(seen, 0.5, "replica b saw the update after %.3f s", seen);
    rk_store_stats_get(rb, -1, &st);
    cr_assert_geq(st.stream_updates, 1);

    /* MOVED: move an empty slot to another master behind the client's back */
    char addrs[8][64];
    int nm = rk_redis_masters(r, addrs, 8);
    cr_assert_eq(nm, 3);
    const char *kk = "{rk-test-moved}x";
    uint16_t slot = rk_redis_slot(kk, strlen(kk));
    char owner[64] = "", target[64] = "", target_id[64] = "", slotstr[8];
    snprintf(slotstr, sizeof slotstr, "%u", slot);
    for (int i = 0; i < nm; i++) {
        const char *ks[] = {"CLUSTER", "COUNTKEYSINSLOT", slotstr};
        size_t kl[] = {7, 15, strlen(slotstr)};
        rep = rk_redis_command_at(r, addrs[i], 3, ks, kl, rk_now() + 2, &e);
        cr_assert_not_null(rep);
        rk_redis_reply_free(rep);
    }
    {
        const char *ks[] = {"CLUSTER", "NODES"};
        size_t kl[] = {7, 5};
        rep = rk_redis_command_at(r, addrs[0], 2, ks, kl, rk_now() + 2, &e);
        cr_assert(rep && rep->type == REDIS_REPLY_STRING);
        /* the owner of slot: a master line whose ranges include it */
        for (char *ln = strtok(rep->str, "\n"); ln; ln = strtok(NULL, "\n")) {
            char id[64], addr[96], flags[64];
            if (sscanf(ln, "%63s %95s %63s", id, addr, flags) != 3 || !strstr(flags, "master")) continue;
            addr[strcspn(addr, "@")] = 0;
            int owns = 0;
            char *p = ln;
            for (int f = 0; f < 8 && p; f++) p = strchr(p + 1, ' ');
            while (p && *p) {
                unsigned lo, hi;
                int nread = 0;
                while (*p == ' ') p++;
                if (sscanf(p, "%u-%u%n", &lo, &hi, &nread) == 2) owns |= slot >= lo && slot <= hi;
                else if (sscanf(p, "%u%n", &lo, &nread) == 1) owns |= slot == lo;
                else break;
                p += nread;
            }
            if (owns) snprintf(owner, sizeof owner, "%s", addr);
            else if (!target[0]) snprintf(target, sizeof target, "%s", addr), snprintf(target_id, sizeof target_id, "%s", id);
        }
        rk_redis_reply_free(rep);
    }
    cr_assert(owner[0] && target[0]);
    for (int i = 0; i < nm; i++) { /* the target first, then the others (Redis's resharding order) */
        const char *addr = i == 0 ? target : addrs[i - 1];
        if (i > 0 && !strcmp(addrs[i - 1], target)) addr = addrs[nm - 1 == i - 1 ? 0 : nm - 1];
        const char *ks[] = {"CLUSTER", "SETSLOT", slotstr, "NODE", target_id};
        size_t kl[] = {7, 7, strlen(slotstr), 4, strlen(target_id)};
        rk_redis_reply_free(rk_redis_command_at(r, addr, 5, ks, kl, rk_now() + 2, &e));
    }
    for (int i = 0; i < nm; i++) { /* make sure every master agrees */
        const char *ks[] = {"CLUSTER", "SETSLOT", slotstr, "NODE", target_id};
        size_t kl[] = {7, 7, strlen(slotstr), 4, strlen(target_id)};
        rk_redis_reply_free(rk_redis_command_at(r, addrs[i], 5, ks, kl, rk_now() + 2, &e));
    }
    rk_redis_stats_get(r, &rs);
    uint64_t redirects0 = rs.redirects;
    unsigned char val[4] = {1, 2, 3, 4}, back[4];
    rk_redis_item it = {kk, strlen(kk), slot, val, 4, NULL, 0, 0};
    cr_assert_eq(rk_redis_run(r, RK_REDIS_SET, &it, 1, 1, rk_now() + 2, &e), RK_OK, "%s", e.msg);
    rk_redis_item ig = {kk, strlen(kk), slot, NULL, 0, back, 4, 0};
    cr_assert_eq(rk_redis_run(r, RK_REDIS_GET, &ig, 1, 0, rk_now() + 2, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(ig.state, RK_REDIS_FOUND);
    cr_assert_eq(memcmp(back, val, 4), 0);
    rk_redis_stats_get(r, &rs);
    cr_assert_geq(rs.redirects, redirects0 + 1, "the stale map was not corrected by a MOVED");

    /* drop: refused while replicas hold leases, then every key goes */
    uint64_t deleted = 0;
    cr_assert_eq(rk_redis_drop_version(r, prefix, &deleted, &e), RK_EEXIST);
    cr_assert(strstr(e.msg, "in use"), "%s", e.msg);
    rk_store_close(ra);
    rk_store_close(rb);
    cr_assert_eq(rk_redis_drop_version(r, prefix, &deleted, &e), RK_OK, "%s", e.msg);
    /* rows + load progress (a, b) + the update stream (ready is unlinked first) */
    cr_assert_eq(deleted, ROWS + ROWS / 2 + 2 + 1, "deleted %llu", (unsigned long long)deleted);
    rk_store *rc = open_ro(path, 0);
    cr_assert_eq(rk_store_redis_attach(rc, r, &e), RK_ENOTFOUND);
    rk_store_close(rc);
    rk_store_close(pub);
    rk_store_close(ref);
    rk_redis_destroy(r);
}

Test(store_redis, master_killed, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[400];
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    write_two(path, 3);
    const int timeout_ms = 50;
    rk_redis *r = connect_cluster(0, timeout_ms); /* no RocksDB fallback: degraded rows are default rows */
    rk_store *pub = open_ro(path, 0);
    rk_err e = {0};
    cr_assert_eq(rk_store_redis_publish(pub, r, 0, NULL, &e), RK_OK, "%s", e.msg);
    rk_store *s = open_ro(path, 64 << 10); /* a small cache: most rows come from Redis */
    cr_assert_eq(rk_store_redis_attach(s, r, &e), RK_OK, "%s", e.msg);

    /* an acknowledged update (WAIT 1) ... */
    uint64_t row = 42;
    float nw[DIM], got[DIM];
    for (int j = 0; j < DIM; j++) nw[j] = (float)j + 0.5f;
    cr_assert_eq(rk_store_apply(s, 0, &row, 1, nw, &e), RK_OK, "%s", e.msg);
    /* ... then kill -9 the master that holds it */
    char prefix[80], k[200];
    rk_store_redis_prefix(s, prefix, sizeof prefix);
    snprintf(k, sizeof k, "{%s/a/%u}42", prefix, 42u % RK_REDIS_GROUPS);
    const char *ks[] = {"CLUSTER", "KEYSLOT", k};
    size_t kl[] = {7, 7, strlen(k)};
    char addrs[8][64];
    int nm = rk_redis_masters(r, addrs, 8);
    redisReply *rep = rk_redis_command_at(r, addrs[0], 3, ks, kl, rk_now() + 2, &e);
    cr_assert(rep && rep->type == REDIS_REPLY_INTEGER);
    cr_assert_eq(rep->integer, rk_redis_slot(k, strlen(k)));
    rk_redis_reply_free(rep);
    char victim[64] = "";
    for (int i = 0; i < nm; i++) {
        const char *gk[] = {"EXISTS", k};
        size_t gl[] = {6, strlen(k)};
        rep = rk_redis_command_at(r, addrs[i], 2, gk, gl, rk_now() + 2, &e);
        if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) snprintf(victim, sizeof victim, "%s", addrs[i]);
        rk_redis_reply_free(rep);
    }
    cr_assert(victim[0]);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh kill %s/cluster %s", RK_SOURCE_DIR, tmpdir,
             strrchr(victim, ':') + 1);
    cr_assert_eq(system(cmd), 0);

    /* lookups keep answering within their deadline while the cluster fails over */
    uint64_t keys[2000];
    float *out = malloc(sizeof(float) * 2000 * DIM);
    double worst = 0, t_end = rk_now() + 20.0;
    int recovered = 0, degraded_seen = 0;
    rk_rng g;
    rk_rng_seed(&g, 5);
    while (rk_now() < t_end && !recovered) {
        for (int i = 0; i < 2000; i++) keys[i] = rk_rng_below(&g, ROWS);
        double t0 = rk_now();
        rk_store_stats before, after;
        rk_store_stats_get(s, -1, &before);
        cr_assert_eq(rk_store_get(s, 0, keys, 2000, out, NULL, &e), RK_OK, "%s", e.msg);
        double dt = rk_now() - t0;
        worst = dt > worst ? dt : worst;
        rk_store_stats_get(s, -1, &after);
        if (after.redis_defaulted > before.redis_defaulted) degraded_seen = 1;
        else if (degraded_seen) {
            cr_assert_eq(rk_store_get(s, 0, &row, 1, got, NULL, &e), RK_OK);
            if (after.redis_failed == before.redis_failed) recovered = 1;
        }
        usleep(20000);
    }
    rk_store_stats fin;
    rk_store_stats_get(s, -1, &fin);
    cr_log_info("failover: worst lookup %.1f ms, %llu keys defaulted, recovered %d", worst * 1e3,
                (unsigned long long)fin.redis_defaulted, recovered);
    cr_assert(degraded_seen, "the killed master never showed in the counters");
    cr_assert(recovered, "lookups did not recover after the failover");
    /* budget: timeout_ms for Redis + the cache and decode; generous for a loaded 2-core machine */
    cr_assert_lt(worst, timeout_ms / 1e3 + 0.25, "a lookup took %.3f s", worst);
    /* the acknowledged update survived on the promoted replica */
    rk_store *fresh = open_ro(path, 0);
    cr_assert_eq(rk_store_redis_attach(fresh, r, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_store_get(fresh, 0, &row, 1, got, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(memcmp(got, nw, sizeof nw), 0, "the acknowledged update was lost in the failover");
    rk_redis_stats rs;
    rk_redis_stats_get(r, &rs);
    cr_assert_geq(rs.map_refreshes, 2);
    rk_store_close(fresh);
    rk_store_close(s);
    rk_store_close(pub);
    rk_redis_destroy(r);
    free(out);
}

/* A master dies before a publish: the publish fails naming the node, and
 * nothing attaches to the half-loaded version. Once the cluster has failed
 * over, the promoted master has no replica, so the publish (WAIT 1) is still
 * refused, naming WAIT; after the killed node comes back (as a replica) the
 * publish completes from its progress keys, and every row equals RocksDB's. */
Test(store_redis, publish_resumes_after_failover, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[400];
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    write_two(path, 5);
    rk_redis_opts o = RK_REDIS_OPTS_DEFAULT;
    o.wait_ms = 300;
    rk_redis *r = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_redis_create(seeds, &o, &r, &e), RK_OK, "%s", e.msg);
    rk_store *pub = open_ro(path, 0), *ref = open_ro(path, 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh kill %s/cluster %s", RK_SOURCE_DIR, tmpdir, ports[0]);
    cr_assert_eq(system(cmd), 0);
    uint64_t total = 0, n = 0;
    rk_status st = rk_store_redis_publish(pub, r, 0, &n, &e);
    total += n;
    cr_assert_neq(st, RK_OK, "a publish with a master down succeeded");
    cr_assert(strstr(e.msg, ports[0]), "the error does not name the dead node: %s", e.msg);
    rk_store *early = open_ro(path, 0);
    /* ENOTFOUND (no marker), or EIO when the marker's slot is on the dead master */
    cr_assert_neq(rk_store_redis_attach(early, r, &e), RK_OK, "attached to a half-loaded version");
    rk_store_close(early);
    double t0 = rk_now();
    int waited = 0;
    while (rk_now() - t0 < 20.0 && !waited) { /* until the replica is promoted: then WAIT is what fails */
        st = rk_store_redis_publish(pub, r, 0, &n, &e);
        total += n;
        cr_assert_neq(st, RK_OK, "a publish without a replica for a shard succeeded");
        waited = strstr(e.msg, "WAIT") != NULL;
        usleep(100000);
    }
    cr_assert(waited, "no failover within 20 s: %s", e.msg);
    cr_log_info("failed over after %.1f s: %s", rk_now() - t0, e.msg);
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh restart %s/cluster %s", RK_SOURCE_DIR, tmpdir, ports[0]);
    cr_assert_eq(system(cmd), 0);
    t0 = rk_now();
    while (rk_now() - t0 < 30.0) { /* until the node has rejoined as a replica */
        st = rk_store_redis_publish(pub, r, 0, &n, &e);
        total += n;
        if (st == RK_OK) break;
        usleep(200000);
    }
    cr_assert_eq(st, RK_OK, "publish after the node came back: %s", e.msg);
    cr_log_info("publish completed %.1f s after the restart; %llu rows loaded in all", rk_now() - t0,
                (unsigned long long)total);
    /* resumed, not restarted: at most a chunk per table and attempt is loaded twice */
    cr_assert_geq(total, (uint64_t)(ROWS + ROWS / 2));
    rk_store *s = open_ro(path, 0);
    cr_assert_eq(rk_store_redis_attach(s, r, &e), RK_OK, "%s", e.msg);
    static uint64_t keys[ROWS];
    for (int i = 0; i < ROWS; i++) keys[i] = (uint64_t)i;
    expect_rows(s, 0, keys, ROWS, ref);
    expect_rows(s, 1, keys, ROWS / 2, ref);
    rk_store_stats st2;
    rk_store_stats_get(s, -1, &st2);
    cr_assert_eq(st2.rocksdb_reads, 0);
    cr_assert_eq(st2.redis_failed, 0);
    rk_store_close(s);
    rk_store_close(pub);
    rk_store_close(ref);
    rk_redis_destroy(r);
}

/* A hung master (SIGSTOP: connections open, no answers): a lookup ends by
 * the thread's deadline although the Redis timeout is 10x longer, its keys
 * on the hung master get the default row (counted), and once the master
 * resumes (SIGCONT) lookups are whole again. */
Test(store_redis, hung_master_bounded_by_thread_deadline, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[400];
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    write_two(path, 7);
    rk_redis *r = connect_cluster(0, 500);
    rk_store *pub = open_ro(path, 0), *ref = open_ro(path, 0);
    rk_err e = {0};
    cr_assert_eq(rk_store_redis_publish(pub, r, 0, NULL, &e), RK_OK, "%s", e.msg);
    rk_store *s = open_ro(path, 0); /* no cache: every key goes to Redis */
    cr_assert_eq(rk_store_redis_attach(s, r, &e), RK_OK, "%s", e.msg);
    static uint64_t keys[ROWS];
    for (int i = 0; i < ROWS; i++) keys[i] = (uint64_t)i;
    expect_rows(s, 0, keys, ROWS, ref); /* connections to every master are open now */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh kill %s/cluster %s STOP", RK_SOURCE_DIR, tmpdir, ports[0]);
    cr_assert_eq(system(cmd), 0);
    static float out[ROWS * DIM];
    rk_store_stats a, b;
    rk_store_stats_get(s, -1, &a);
    double t0 = rk_now();
    rk_store_set_thread_deadline(t0 + 0.05);
    cr_assert_eq(rk_store_get(s, 0, keys, ROWS, out, NULL, &e), RK_OK, "%s", e.msg);
    double dt = rk_now() - t0;
    rk_store_stats_get(s, -1, &b);
    cr_log_info("lookup with a hung master: %.1f ms, %llu keys defaulted", dt * 1e3,
                (unsigned long long)(b.redis_defaulted - a.redis_defaulted));
    cr_assert_lt(dt, 0.05 + 0.15, "the lookup took %.0f ms past a 50 ms deadline", dt * 1e3);
    cr_assert_gt(b.redis_defaulted - a.redis_defaulted, ROWS / 10, "the hung master's keys were not defaulted");
    cr_assert_lt(b.redis_defaulted - a.redis_defaulted, ROWS, "keys of healthy masters were defaulted");
    /* past the deadline: no Redis work at all */
    t0 = rk_now();
    cr_assert_eq(rk_store_get(s, 0, keys, 100, out, NULL, &e), RK_OK, "%s", e.msg);
    cr_assert_lt(rk_now() - t0, 0.05);
    rk_store_set_thread_deadline(0);
    snprintf(cmd, sizeof cmd, "bash %s/scripts/redis-cluster.sh kill %s/cluster %s CONT", RK_SOURCE_DIR, tmpdir, ports[0]);
    cr_assert_eq(system(cmd), 0);
    int whole = 0;
    for (int i = 0; i < 100 && !whole; i++) { /* the closed connection is reopened by a later lookup */
        rk_store_stats_get(s, -1, &a);
        cr_assert_eq(rk_store_get(s, 0, keys, ROWS, out, NULL, &e), RK_OK, "%s", e.msg);
        rk_store_stats_get(s, -1, &b);
        whole = b.redis_failed == a.redis_failed;
        if (!whole) usleep(50000);
    }
    cr_assert(whole, "lookups did not recover after SIGCONT");
    expect_rows(s, 0, keys, ROWS, ref);
    rk_store_close(s);
    rk_store_close(pub);
    rk_store_close(ref);
    rk_redis_destroy(r);
}

/* A version with a default (OOV) row for table "a": v (fp32, ROWS rows) and "b" (int8, ROWS/2). */
static void write_oov(const char *path, uint64_t seed, const float *oov) {
    float *d = malloc((size_t)(ROWS + ROWS / 2) * DIM * sizeof(float));
    rk_rng g;
    rk_rng_seed(&g, seed);
    for (size_t i = 0; i < (size_t)(ROWS + ROWS / 2) * DIM; i++) d[i] = (float)(rk_rng_normal(&g) * 0.1);
    rk_table_spec spec[2] = {{"a", DIM, ROWS, d}, {"b", DIM, ROWS / 2, d + (size_t)ROWS * DIM}};
    rk_table_opts to[2] = {{RK_CODEC_FP32, oov}, {RK_CODEC_INT8, NULL}};
    rk_err e = {0};
    cr_assert_eq(rk_store_write_ex(path, spec, 2, to, &e), RK_OK, "%s", e.msg);
    free(d);
}

/* Publish the store at path (a local handle, closed again); its prefix into pfx. */
static void publish_at(rk_redis *r, const char *path, char *pfx, size_t cap) {
    rk_store *s = open_ro(path, 0);
    rk_err e = {0};
    cr_assert_eq(rk_store_redis_publish(s, r, 0, NULL, &e), RK_OK, "%s", e.msg);
    rk_store_redis_prefix(s, pfx, cap);
    rk_store_close(s);
}

static rk_store *open_remote(rk_redis *r, const char *pfx, size_t cache_bytes) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = cache_bytes;
    rk_store *s = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_redis(r, pfx, NULL, NULL, 0, &o, &s, &e), RK_OK, "%s", e.msg);
    return s;
}

/* A version served from the cluster alone (no local tables): metadata and
 * default rows come from the cluster, every row (unknown ids and ids past
 * the table included) equals the local store's, local-only operations are
 * refused, an update through one cluster-only handle reaches another. */
Test(store_redis, cluster_only_open, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[400], pfx[80];
    snprintf(path, sizeof path, "%s/v1", tmpdir);
    float oov[DIM];
    for (int j = 0; j < DIM; j++) oov[j] = 0.25f * (float)(j + 1);
    write_oov(path, 7, oov);
    rk_redis *r = connect_cluster(0, 500);
    rk_store *ref = open_ro(path, 0);
    rk_store_redis_prefix(ref, pfx, sizeof pfx);
    rk_store *s = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_store_open_redis(r, pfx, NULL, NULL, 0, NULL, &s, &e), RK_ENOTFOUND, "an unpublished version opened");
    cr_assert(strstr(e.msg, "not (fully) loaded"), "%s", e.msg);
    publish_at(r, path, pfx, sizeof pfx);
    s = open_remote(r, pfx, 0);
    cr_assert_eq(rk_store_n_tables(s), 2);
    for (int t = 0; t < 2; t++) {
        rk_table_info a, b;
        rk_store_table_info(ref, t, &a);
        rk_store_table_info(s, t, &b);
        cr_assert(!strcmp(a.name, b.name) && a.dim == b.dim && a.codec == b.codec && a.rows == b.rows &&
                  a.has_oov_row == b.has_oov_row, "table %d: metadata differs from the local store's", t);
    }
    uint64_t keys[ROWS + 10];
    for (size_t i = 0; i < ROWS + 10; i++) keys[i] = (i * 7919) % (ROWS + 10); /* 10 ids past the table */
    expect_rows(s, 0, keys, ROWS + 10, ref);
    expect_rows(s, 1, keys, ROWS / 2 + 10, ref);
    float got[DIM];
    uint64_t past = ROWS + 3;
    size_t missing = 0;
    cr_assert_eq(rk_store_get(s, 0, &past, 1, got, &missing, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(missing, 1);
    cr_assert_eq(memcmp(got, oov, sizeof got), 0, "the default row is not the published one");
    uint64_t n = 0;
    cr_assert_eq(rk_store_count_keys(s, 0, &n, &e), RK_EINVAL);
    cr_assert(strstr(e.msg, "Redis Cluster"), "%s", e.msg);
    /* an update through s reaches a second cluster-only handle that had the row cached */
    rk_store *s2 = open_remote(r, pfx, 1 << 20);
    uint64_t row = 42;
    float before[DIM], upd[DIM], seen[DIM];
    cr_assert_eq(rk_store_get(s2, 0, &row, 1, before, NULL, &e), RK_OK, "%s", e.msg);
    for (int j = 0; j < DIM; j++) upd[j] = before[j] + 1.0f;
    cr_assert_eq(rk_store_apply(s, 0, &row, 1, upd, &e), RK_OK, "%s", e.msg);
    double t0 = rk_now();
    do {
        cr_assert_eq(rk_store_get(s2, 0, &row, 1, seen, NULL, &e), RK_OK, "%s", e.msg);
        if (memcmp(seen, upd, sizeof seen)) usleep(5000);
    } while (memcmp(seen, upd, sizeof seen) && rk_now() - t0 < 2.0);
    cr_assert_eq(memcmp(seen, upd, sizeof seen), 0, "the update never reached the second handle");
    rk_store_stats st;
    rk_store_stats_get(s2, -1, &st);
    cr_assert_eq(st.redis_defaulted, 0);
    rk_store_close(s2);
    rk_store_close(s);
    rk_store_close(ref);
    rk_redis_destroy(r);
}

/* Versions of one lineage drop by themselves: a publish drops the older
 * versions no replica holds; a leased one stays until its last replica
 * lets go of it (drop_retired), which then drops it; the newest version is
 * never dropped by a replica letting go. */
Test(store_redis, lineage_drops_old_versions, .init = cluster_start, .fini = cluster_stop, .timeout = 120) {
    char path[3][400], pfx[3][80];
    rk_redis *r = connect_cluster(0, 500);
    rk_redis_opts o = RK_REDIS_OPTS_DEFAULT;
    o.drop_retired = 1;
    rk_redis *rd = NULL;
    rk_err e = {0};
    cr_assert_eq(rk_redis_create(seeds, &o, &rd, &e), RK_OK, "%s", e.msg);
    for (int v = 0; v < 3; v++) {
        snprintf(path[v], sizeof path[v], "%s/v%d", tmpdir, v);
        write_two(path[v], 100 + (uint64_t)v);
    }
    uint64_t dropped = 9;
    cr_assert_eq(rk_redis_lineage_add(r, "", "rk/x", &dropped, &e), RK_EINVAL);
    publish_at(r, path[0], pfx[0], sizeof pfx[0]);
    cr_assert_eq(rk_redis_lineage_add(r, "model-a", pfx[0], &dropped, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(dropped, 0);
    rk_store *serving = open_remote(rd, pfx[0], 0); /* a replica serves v0: it holds a lease */
    publish_at(r, path[1], pfx[1], sizeof pfx[1]);
    cr_assert_eq(rk_redis_lineage_add(r, "model-a", pfx[1], &dropped, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(dropped, 0, "a version a replica serves was dropped");
    rk_store *check = open_remote(r, pfx[0], 0);
    rk_store_close(check);
    rk_store_close(serving); /* the last replica lets go of v0, which v1 replaced: dropped */
    rk_store *gone = NULL;
    cr_assert_eq(rk_store_open_redis(r, pfx[0], NULL, NULL, 0, NULL, &gone, &e), RK_ENOTFOUND, "v0 still loaded");
    uint64_t left = 9;
    cr_assert_eq(rk_redis_drop_version(r, pfx[0], &left, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(left, 0, "%llu keys of v0 were left", (unsigned long long)left);
    /* v1 is the newest: a replica letting go of it keeps it */
    serving = open_remote(rd, pfx[1], 0);
    rk_store_close(serving);
    check = open_remote(r, pfx[1], 0);
    rk_store_close(check);
    /* publishing v2 drops v1, which nobody serves */
    publish_at(r, path[2], pfx[2], sizeof pfx[2]);
    cr_assert_eq(rk_redis_lineage_add(r, "model-a", pfx[2], &dropped, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(dropped, 1);
    cr_assert_eq(rk_store_open_redis(r, pfx[1], NULL, NULL, 0, NULL, &gone, &e), RK_ENOTFOUND, "v1 still loaded");
    check = open_remote(r, pfx[2], 0);
    rk_store_close(check);
    rk_redis_destroy(rd);
    rk_redis_destroy(r);
}
