/*
 * bench/store_crash.h — one crash trial of the store's online updates,
 * shared by tests/test_store.c (a few trials) and bench/bench_store_crash.c
 * (>= 100 trials). Header-only; uses the public store API.
 *
 * A trial: create a store with one table (R rows x 16 dims, every row at
 * update sequence 0); fork a child that opens it writable and applies
 * batches of 8 random row updates through rk_store_apply (WAL fsync'd),
 * writing each acknowledged batch {seq, rows[8]} to a pipe only after
 * rk_store_apply returned RK_OK; SIGKILL the child after a random delay;
 * reopen the store and check every row: row r written at sequence k holds
 * v[0] = r, v[j] = 16k + j for j >= 1. A row whose values do not fit that
 * pattern is torn; a row whose sequence is below the last acknowledged
 * sequence that wrote it lost an acknowledged update.
 */
#ifndef RK_BENCH_STORE_CRASH_H
#define RK_BENCH_STORE_CRASH_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define RK_CRASH_ROWS 512
#define RK_CRASH_DIM 16
#define RK_CRASH_BATCH 8

typedef struct {
    uint64_t acked;     /* acknowledged updates (rows) */
    uint64_t batches;   /* acknowledged batches */
    uint64_t lost;      /* rows missing an acknowledged update */
    uint64_t torn;      /* rows that fit no written value */
    char err[256];      /* set when the trial itself failed */
} rk_crash_result;

static void rk_crash_row(uint64_t row, uint64_t seq, float *v) {
    v[0] = (float)row;
    for (int j = 1; j < RK_CRASH_DIM; j++) v[j] = (float)(seq * RK_CRASH_DIM + (uint64_t)j);
}

static void rk_crash_child(const char *dir, uint64_t seed, int fd) {
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.writable = 1;
    o.cache_bytes = 1 << 20;
    rk_store *s;
    rk_err e = {0};
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) _exit(3);
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (uint64_t seq = 1;; seq++) {
        uint64_t rec[1 + RK_CRASH_BATCH];
        float v[RK_CRASH_BATCH * RK_CRASH_DIM];
        rec[0] = seq;
        for (int i = 0; i < RK_CRASH_BATCH; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            rec[1 + i] = x % RK_CRASH_ROWS;
            rk_crash_row(rec[1 + i], seq, v + i * RK_CRASH_DIM);
        }
        if (rk_store_apply(s, 0, rec + 1, RK_CRASH_BATCH, v, &e)) _exit(4);
        /* acknowledged: only now tell the parent */
        if (write(fd, rec, sizeof rec) != (ssize_t)sizeof rec) _exit(5);
    }
}

/* Run one trial in dir (must not exist; removed at the end). kill_us: delay
 * before SIGKILL in microseconds. Returns 0, or -1 with r->err set. */
static int rk_crash_trial(const char *dir, uint64_t seed, long kill_us, rk_crash_result *r) {
    memset(r, 0, sizeof *r);
    static float init[RK_CRASH_ROWS * RK_CRASH_DIM];
    for (uint64_t i = 0; i < RK_CRASH_ROWS; i++) rk_crash_row(i, 0, init + i * RK_CRASH_DIM);
    rk_table_spec spec = {"t", RK_CRASH_DIM, RK_CRASH_ROWS, init};
    rk_err e = {0};
    (void)rk_rm_rf(dir, NULL);
    if (rk_store_write(dir, &spec, 1, &e)) {
        snprintf(r->err, sizeof r->err, "create: %s", e.msg);
        return -1;
    }
    int p[2];
    if (pipe(p)) {
        snprintf(r->err, sizeof r->err, "pipe failed");
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        rk_crash_child(dir, seed, p[1]);
        _exit(0);
    }
    close(p[1]);
    struct timespec ts = {kill_us / 1000000, (kill_us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    static uint64_t last[RK_CRASH_ROWS];
    memset(last, 0, sizeof last);
    uint64_t rec[1 + RK_CRASH_BATCH];
    ssize_t got;
    size_t have = 0;
    unsigned char *buf = (unsigned char *)rec;
    while ((got = read(p[0], buf + have, sizeof rec - have)) > 0) {
        have += (size_t)got;
        if (have < sizeof rec) continue;
        have = 0;
        r->batches++;
        for (int i = 0; i < RK_CRASH_BATCH; i++) {
            r->acked++;
            if (rec[0] > last[rec[1 + i]]) last[rec[1 + i]] = rec[0];
        }
    }
    close(p[0]);
    if (!WIFSIGNALED(status)) {
        snprintf(r->err, sizeof r->err, "child exited with status %d before the kill", WEXITSTATUS(status));
        return -1;
    }
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.writable = 1; /* recover as a restarted server would */
    o.cache_bytes = 0;
    rk_store *s;
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) {
        snprintf(r->err, sizeof r->err, "reopen: %s", e.msg);
        return -1;
    }
    static uint64_t rows[RK_CRASH_ROWS];
    static float out[RK_CRASH_ROWS * RK_CRASH_DIM];
    for (uint64_t i = 0; i < RK_CRASH_ROWS; i++) rows[i] = i;
    if (rk_store_get(s, 0, rows, RK_CRASH_ROWS, out, NULL, &e)) {
        snprintf(r->err, sizeof r->err, "read: %s", e.msg);
        rk_store_close(s);
        return -1;
    }
    rk_store_close(s);
    for (uint64_t i = 0; i < RK_CRASH_ROWS; i++) {
        const float *v = out + i * RK_CRASH_DIM;
        uint64_t seq = (uint64_t)((v[1] - 1) / RK_CRASH_DIM);
        float want[RK_CRASH_DIM];
        rk_crash_row(i, seq, want);
        if (v[1] < 1 || memcmp(v, want, sizeof want)) r->torn++;
        else if (seq < last[i]) r->lost++;
    }
    (void)rk_rm_rf(dir, NULL);
    return 0;
}

#endif
