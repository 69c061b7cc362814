/*
 * bench/soak.c — `make soak`: rankd's serving path under hours-like use,
 * shortened to MINUTES (default 30).
 *
 * In one process: an rk_server (2 workers, online updates on) serving
 * MovieLens-shaped bundles (the movielens_dcnv2 config, random weights):
 * a first one, then two others (a, b) in turn,
 * two client threads sending Rank calls of 50 candidates at 50% of the
 * capacity measured first (closed loop, 5 s), a version switch between a
 * and b every 30 s (rk_server_reload), and ApplyUpdates of 16
 * movie_id rows every 100 ms. The process RSS is sampled every 10 s; its
 * slope (least squares, after the first quarter of the run) is the leak
 * signal, beside the slope of the bytes malloc has handed out and not had
 * back (mallinfo2: all arenas; RSS above it is the allocator's retention,
 * not a leak). Every non-OK answer counts as failed.
 *
 *   soak [--minutes M] [--dir DIR]
 * Last line: soak: minutes=M requests=N failed=F rss_slope_mb_per_min=X
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rank.h"
#include "rank.pb-c.h"
#include "serve.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif

#define N_REQ 64
#define N_CAND 50

static char addr[64];
static uint8_t *reqs[N_REQ];
static size_t req_len[N_REQ];
static atomic_int stop, measuring;
static atomic_long n_ok, n_failed, n_updates;
static double rate_per_client; /* 0: closed loop */

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void make_requests(void) {
    rk_rng r;
    rk_rng_seed(&r, 7);
    static const char *genres[] = {"Action", "Drama", "Comedy", "War", "Sci-Fi", "Romance"};
    for (int q = 0; q < N_REQ; q++) {
        char uid[16], hour[8], wd[8], hist_s[20][12], ad[N_CAND][12], year_s[8];
        char *hist[20], *hv[1] = {hour}, *wv[1] = {wd};
        snprintf(uid, sizeof uid, "%llu", (unsigned long long)rk_rng_below(&r, 600));
        snprintf(hour, sizeof hour, "%d", (int)rk_rng_below(&r, 24));
        snprintf(wd, sizeof wd, "%d", (int)rk_rng_below(&r, 7));
        (void)year_s;
        for (int i = 0; i < 20; i++) {
            snprintf(hist_s[i], sizeof hist_s[i], "%llu", (unsigned long long)rk_rng_below(&r, 9000));
            hist[i] = hist_s[i];
        }
        Rankd__V1__RankRequest rq = RANKD__V1__RANK_REQUEST__INIT;
        Rankd__V1__User u = RANKD__V1__USER__INIT;
        Rankd__V1__SparseFeature sh = RANKD__V1__SPARSE_FEATURE__INIT, sw = RANKD__V1__SPARSE_FEATURE__INIT;
        sh.name = "hour", sh.values = hv, sh.n_values = 1;
        sw.name = "weekday", sw.values = wv, sw.n_values = 1;
        Rankd__V1__SparseFeature *us[2] = {&sh, &sw};
        u.user_id = uid, u.recent_item_ids = hist, u.n_recent_item_ids = 20, u.sparse = us, u.n_sparse = 2;
        Rankd__V1__Candidate c[N_CAND], *cp[N_CAND];
        Rankd__V1__SparseFeature g[N_CAND], *gp[N_CAND];
        Rankd__V1__DenseFeature y[N_CAND], *yp[N_CAND];
        char *gv[N_CAND][2];
        for (int i = 0; i < N_CAND; i++) {
            rankd__v1__candidate__init(&c[i]);
            rankd__v1__sparse_feature__init(&g[i]);
            rankd__v1__dense_feature__init(&y[i]);
            snprintf(ad[i], sizeof ad[i], "%llu", (unsigned long long)rk_rng_below(&r, 9000));
            c[i].ad_id = ad[i];
            gv[i][0] = (char *)genres[rk_rng_below(&r, 6)];
            gv[i][1] = (char *)genres[rk_rng_below(&r, 6)];
            g[i].name = "genres", g[i].values = gv[i], g[i].n_values = 2, gp[i] = &g[i];
            y[i].name = "year", y[i].value = 1950 + (float)rk_rng_below(&r, 70), yp[i] = &y[i];
            c[i].sparse = &gp[i], c[i].n_sparse = 1, c[i].dense = &yp[i], c[i].n_dense = 1;
            cp[i] = &c[i];
        }
        rq.request_id = "soak", rq.user = &u, rq.candidates = cp, rq.n_candidates = N_CAND;
        req_len[q] = rankd__v1__rank_request__get_packed_size(&rq);
        reqs[q] = malloc(req_len[q]);
        rankd__v1__rank_request__pack(&rq, reqs[q]);
    }
}

static void *client_main(void *p) {
    long id = (long)p;
    rk_client *c;
    rk_err e = {0};
    if (rk_client_create(addr, &c, &e)) {
        atomic_fetch_add(&n_failed, 1);
        return NULL;
    }
    double next = rk_now();
    for (long k = id; !atomic_load(&stop); k++) {
        if (rate_per_client > 0) {
            next += 1.0 / rate_per_client;
            double w = next - rk_now();
            if (w > 0) sleep_s(w);
        }
        rk_call_result r;
        int bad = rk_client_call(c, "/rankd.v1.Ranker/Rank", reqs[k % N_REQ], req_len[k % N_REQ], 30000, &r, &e) != RK_OK;
        if (!bad) bad = r.code != 0, rk_call_result_free(&r);
        if (atomic_load(&measuring)) atomic_fetch_add(bad ? &n_failed : &n_ok, 1);
    }
    rk_client_destroy(c);
    return NULL;
}

static void *updates_main(void *p) {
    (void)p;
    rk_client *c;
    rk_err e = {0};
    if (rk_client_create(addr, &c, &e)) {
        atomic_fetch_add(&n_failed, 1);
        return NULL;
    }
    rk_rng r;
    rk_rng_seed(&r, 11);
    uint64_t rows[16];
    float v[16 * 16];
    while (!atomic_load(&stop)) {
        for (int i = 0; i < 16; i++) rows[i] = rk_rng_below(&r, 16384);
        for (int i = 0; i < 16 * 16; i++) v[i] = (float)(rk_rng_normal(&r) * 0.05);
        Rankd__V1__ApplyUpdatesRequest u = RANKD__V1__APPLY_UPDATES_REQUEST__INIT;
        u.table = "movie_id", u.rows = rows, u.n_rows = 16, u.values = v, u.n_values = 16 * 16;
        uint8_t buf[2048];
        size_t n = rankd__v1__apply_updates_request__pack(&u, buf);
        rk_call_result res;
        int bad = rk_client_call(c, "/rankd.v1.Admin/ApplyUpdates", buf, n, 30000, &res, &e) != RK_OK;
        if (!bad) {
            bad = res.code != 0;
            if (bad) fprintf(stderr, "soak: ApplyUpdates: %d %s\n", res.code, res.msg);
            rk_call_result_free(&res);
        }
        atomic_fetch_add(bad ? &n_failed : &n_updates, 1);
        sleep_s(0.1);
    }
    rk_client_destroy(c);
    return NULL;
}

static double rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atof(line + 6);
    if (f) fclose(f);
    return kb / 1024.0;
}

/* Bytes allocated and not yet freed, all arenas and mmapped chunks. */
static double heap_mb(void) {
    struct mallinfo2 mi = mallinfo2();
    return (double)(mi.uordblks + mi.hblkhd) / (1024.0 * 1024.0);
}

/* Least-squares slope of ys over xs, from x >= x0. */
static double slope_from(const double *xs, const double *ys, int n, double x0) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (xs[i] < x0) continue;
        sx += xs[i], sy += ys[i], sxx += xs[i] * xs[i], sxy += xs[i] * ys[i], k++;
    }
    return k > 1 && k * sxx - sx * sx > 0 ? (k * sxy - sx * sy) / (k * sxx - sx * sx) : 0;
}

static void make_bundle(const char *dir, uint64_t seed) {
    char *text;
    rk_err e = {0};
    rk_model_cfg c;
    rk_model *m;
    if (rk_read_file(RK_SOURCE_DIR "/configs/movielens_dcnv2.json", &text, NULL, &e) ||
        rk_model_cfg_parse(text, &c, &e)) {
        fprintf(stderr, "soak: %s\n", e.msg);
        exit(1);
    }
    rk_free(text);
    c.train.seed = seed;
    snprintf(c.version, sizeof c.version, "soak-%llu", (unsigned long long)seed);
    if (rk_model_create(&c, &m, &e) || rk_model_save(m, dir, NULL, 1, &e)) {
        fprintf(stderr, "soak: %s\n", e.msg);
        exit(1);
    }
    rk_model_destroy(m);
}

int main(int argc, char **argv) {
    double minutes = 30;
    const char *dir = "/tmp/rk_soak";
    for (int i = 1; i + 1 < argc; i += 2) {
        rk_err e = {0};
        if (!strcmp(argv[i], "--minutes")) {
            if (rk_parse_double("--minutes", argv[i + 1], 0.1, 1440, &minutes, &e)) {
                fprintf(stderr, "soak: %s\n", e.msg);
                return 2;
            }
        } else if (!strcmp(argv[i], "--dir")) {
            dir = argv[i + 1];
        }
    }
    rk_log_set_program("soak");
    rk_log_blas_info();
    {
        FILE *ci = fopen("/proc/cpuinfo", "r");
        char line[256];
        while (ci && fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10)) {
                printf("soak: cpu %s", strchr(line, ':') ? strchr(line, ':') + 2 : line);
                break;
            }
        if (ci) fclose(ci);
    }
    /* the first version is the caller's (the server borrows it: it stays
     * open until the stop); the switches alternate between a and b */
    char first[600], a[600], b[600];
    snprintf(first, sizeof first, "%s/first", dir);
    snprintf(a, sizeof a, "%s/a", dir);
    snprintf(b, sizeof b, "%s/b", dir);
    make_bundle(first, 3);
    make_bundle(a, 1);
    make_bundle(b, 2);
    make_requests();
    rk_err e = {0};
    rk_model *m;
    if (rk_model_open_ex(first, 1, &m, &e)) {
        fprintf(stderr, "soak: %s\n", e.msg);
        return 1;
    }
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    o.listen = "127.0.0.1:0";
    o.threads = 2;
    o.updates = 1;
    rk_server *srv;
    int port = 0;
    if (rk_server_start(&o, m, &srv, &port, &e)) {
        fprintf(stderr, "soak: %s\n", e.msg);
        return 1;
    }
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    pthread_t cl[2], up;
    /* capacity: 2 closed-loop clients for 5 s */
    for (long i = 0; i < 2; i++) pthread_create(&cl[i], NULL, client_main, (void *)i);
    sleep_s(1);
    atomic_store(&measuring, 1);
    double t0 = rk_now();
    sleep_s(5);
    double cap = (double)atomic_load(&n_ok) / (rk_now() - t0);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(cl[i], NULL);
    atomic_store(&stop, 0);
    atomic_store(&n_ok, 0);
    atomic_store(&n_failed, 0);
    rate_per_client = cap / 2 / 2;
    char la[64] = "";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf && fgets(la, sizeof la, lf)) la[strcspn(la, "\n")] = 0;
    if (lf) fclose(lf);
    printf("soak: capacity %.0f req/s (2 clients, closed loop), running at %.0f req/s for %.1f min; loadavg %s\n", cap,
           cap / 2, minutes, la);
    fflush(stdout);
    for (long i = 0; i < 2; i++) pthread_create(&cl[i], NULL, client_main, (void *)i);
    pthread_create(&up, NULL, updates_main, NULL);
    int n_s = 0, cap_s = (int)(minutes * 6) + 8, switches = 0;
    double *ts = malloc((size_t)cap_s * sizeof *ts), *rs = malloc((size_t)cap_s * sizeof *rs),
           *hs = malloc((size_t)cap_s * sizeof *hs);
    t0 = rk_now();
    double next_switch = t0 + 30, next_sample = t0;
    long failed_switches = 0;
    while (rk_now() - t0 < minutes * 60) {
        double now = rk_now();
        if (now >= next_sample && n_s < cap_s) {
            ts[n_s] = (now - t0) / 60, rs[n_s] = rss_mb(), hs[n_s] = heap_mb();
            if (n_s % 6 == 0) /* progress, once a minute */
                fprintf(stderr, "soak: %.1f min: rss_mb=%.1f heap_inuse_mb=%.1f requests=%ld failed=%ld\n", ts[n_s],
                        rs[n_s], hs[n_s], atomic_load(&n_ok) + atomic_load(&n_failed), atomic_load(&n_failed));
            n_s++;
            next_sample += 10;
        }
        if (now >= next_switch) {
            int sw = 0;
            if (rk_server_reload(srv, switches % 2 ? b : a, &sw, &e) || !sw) {
                fprintf(stderr, "soak: switch failed: %s\n", e.msg);
                failed_switches++;
            }
            switches++;
            next_switch += 30;
        }
        sleep_s(0.2);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++) pthread_join(cl[i], NULL);
    pthread_join(up, NULL);
    rk_server_stop(srv, NULL);
    rk_model_destroy(m);
    /* slopes after the first quarter (warm-up: caches, arenas, RocksDB) */
    double slope = slope_from(ts, rs, n_s, minutes / 4), hslope = slope_from(ts, hs, n_s, minutes / 4);
    printf("soak: switches=%d failed_switches=%ld updates=%ld rss_first_mb=%.1f rss_last_mb=%.1f samples=%d\n", switches,
           failed_switches, atomic_load(&n_updates), n_s ? rs[0] : 0, n_s ? rs[n_s - 1] : 0, n_s);
    printf("soak: heap_inuse_first_mb=%.1f heap_inuse_last_mb=%.1f heap_inuse_slope_mb_per_min=%.3f\n",
           n_s ? hs[0] : 0, n_s ? hs[n_s - 1] : 0, hslope);
    printf("soak: minutes=%.1f requests=%ld failed=%ld rss_slope_mb_per_min=%.3f\n", minutes,
           atomic_load(&n_ok) + atomic_load(&n_failed), atomic_load(&n_failed) + failed_switches, slope);
    free(ts), free(rs), free(hs);
    for (int i = 0; i < N_REQ; i++) free(reqs[i]);
    rk_rm_rf(dir, NULL);
    return atomic_load(&n_failed) + failed_switches ? 1 : 0;
}
