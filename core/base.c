/*
 * core/base.c — status text, error messages, logging, allocation with fault
 * injection, hashing, RNG, clock and file helpers.
 */
#define _GNU_SOURCE
#include "core.h"

#include <cblas.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <jansson.h>
#include <xxhash.h>

const char *rk_status_str(rk_status s) {
    switch (s) {
#define RK_X_CASE(name, val, text) \
    case name:                     \
        return text;
        RK_STATUS_LIST(RK_X_CASE)
#undef RK_X_CASE
    }
    return "unknown status";
}

rk_status rk_fail(rk_err *err, rk_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

rk_status rk_err_prefix(rk_err *err, const char *fmt, ...) {
    if (!err) return RK_EINTERNAL;
    char pre[256], old[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    old[sizeof old - 1] = 0;
    snprintf(err->msg, sizeof err->msg, "%s: %s", pre, old);
    return err->code;
}

void rk_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "rankd: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

/* ------------------------------------------------------------- logging */

/* Threshold and format: set once at start-up (rk_log_set_level /
 * rk_log_set_json) before other threads log, or from RK_LOG_LEVEL. */
static int log_level = -1;
static int log_json;

int rk_log_parse_level(const char *s, rk_log_level *out) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i])) {
            *out = (rk_log_level)i;
            return 0;
        }
    return -1;
}

void rk_log_set_level(rk_log_level lvl) { log_level = (int)lvl; }
void rk_log_set_json(int on) { log_json = on != 0; }

static int log_threshold(void) {
    if (log_level < 0) {
        rk_log_level l = RK_LOG_INFO;
        (void)rk_log_parse_level(getenv("RK_LOG_LEVEL"), &l);
        log_level = (int)l;
    }
    return log_level;
}

int rk_log_enabled(rk_log_level lvl) { return (int)lvl >= log_threshold(); }

static const char *log_program = "rankd";

void rk_log_set_program(const char *name) { log_program = (name && *name) ? name : "rankd"; }

/* src into dst[cap] with every control byte (< 0x20, 0x7f) written as \n,
 * \r, \t or \xNN: a message that carries a client's string (a model
 * name, a request id) stays one line and cannot forge another. */
static void log_escape(const char *src, char *dst, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < cap; p++) {
        unsigned c = *p;
        const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
        if (c >= 0x20 && c != 0x7f) dst[o++] = (char)c;
        else if (named) dst[o++] = named[0], dst[o++] = named[1];
        else o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
    }
    dst[o] = 0;
}

void rk_log(rk_log_level lvl, const char *fmt, ...) {
    if ((int)lvl < log_threshold()) return;
    char ts[40], msg[1024], line[4 * sizeof msg];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* --log-json: one JSON object per line, escaped by jansson; the text
     * line otherwise, or when jansson fails (no failure path worth more) */
    static const char *lv[] = {"debug", "info", "warn", "error"};
    json_t *o = log_json ? json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "level", lv[lvl], "program", log_program, "msg", msg)
                         : NULL;
    char *js = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (js) {
        fprintf(stderr, "%s\n", js);
    } else {
        log_escape(msg, line, sizeof line);
        fprintf(stderr, "%s %c %s %s\n", log_program, "DIWE"[lvl], ts, line);
    }
    free(js);
    json_decref(o);
}

void rk_log_blas_info(void) {
    const char *ct = getenv("OPENBLAS_CORETYPE");
    rk_info("openblas: core=%s threads=%d config=\"%s\" OPENBLAS_CORETYPE=%s",
            openblas_get_corename(), openblas_get_num_threads(), openblas_get_config(),
            ct ? ct : "(unset)");
}

/* ------------------------------------------------------------- memory */

static atomic_long alloc_countdown; /* 0 = off; else fail when it reaches 1 */

static int alloc_should_fail(void) {
    long c = atomic_load(&alloc_countdown);
    if (c == 0) return 0;
    if (c == 1) return 1; /* stays failing */
    atomic_fetch_sub(&alloc_countdown, 1);
    return 0;
}

void rk_alloc_fail_after(long n) { atomic_store(&alloc_countdown, n); }

void *rk_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}
void *rk_calloc(size_t count, size_t size) {
    if (alloc_should_fail()) return NULL;
    if (count == 0 || size == 0) return calloc(1, 1);
    return calloc(count, size);
}
void *rk_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}
char *rk_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = rk_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}
void rk_free(void *p) { free(p); }

/* ------------------------------------------------------------- hashing */

uint64_t rk_hash64(const void *data, size_t len, uint64_t seed) {
    return (uint64_t)XXH64(data, len, (XXH64_hash_t)seed);
}

uint64_t rk_feature_row(const char *feature, const char *value, size_t value_len,
                        uint64_t table_size) {
    RK_ASSERT(table_size > 0);
    /* Short keys (nearly all): one-shot XXH64 over name 0x1f value on the
     * stack, several times cheaper per call than the streaming state; the
     * same bytes, so the same hash. */
    char buf[256];
    size_t nl = strlen(feature);
    if (nl + 1 + value_len <= sizeof buf) {
        memcpy(buf, feature, nl);
        buf[nl] = 0x1f;
        memcpy(buf + nl + 1, value, value_len);
        return (uint64_t)XXH64(buf, nl + 1 + value_len, 0) % table_size;
    }
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    XXH64_update(&st, feature, strlen(feature));
    XXH64_update(&st, "\x1f", 1);
    XXH64_update(&st, value, value_len);
    return (uint64_t)XXH64_digest(&st) % table_size;
}

/* ------------------------------------------------------------- string map */

typedef struct {
    char *key;   /* NULL: empty slot */
    size_t len;
    uint64_t h;
    int value;
} strmap_slot;

struct rk_strmap {
    strmap_slot *slot;
    size_t cap, n; /* cap: a power of two, kept at least twice n */
};

rk_strmap *rk_strmap_create(size_t n) {
    rk_strmap *m = rk_calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cap = 16;
    while (m->cap < 2 * n) m->cap *= 2;
    m->slot = rk_calloc(m->cap, sizeof *m->slot);
    if (!m->slot) {
        rk_free(m);
        return NULL;
    }
    return m;
}

void rk_strmap_destroy(rk_strmap *m) {
    if (!m) return;
    for (size_t i = 0; i < m->cap; i++) rk_free(m->slot[i].key);
    rk_free(m->slot);
    rk_free(m);
}

/* Slot of key (h, s, len): its own, or the empty one where it would go. */
static strmap_slot *strmap_find(const rk_strmap *m, uint64_t h, const char *s, size_t len) {
    for (size_t i = (size_t)h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        strmap_slot *e = &m->slot[i];
        if (!e->key || (e->h == h && e->len == len && !memcmp(e->key, s, len))) return e;
    }
}

static rk_status strmap_grow(rk_strmap *m) {
    rk_strmap bigger = {rk_calloc(2 * m->cap, sizeof(strmap_slot)), 2 * m->cap, m->n};
    if (!bigger.slot) return RK_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].key) *strmap_find(&bigger, m->slot[i].h, m->slot[i].key, m->slot[i].len) = m->slot[i];
    rk_free(m->slot);
    *m = bigger;
    return RK_OK;
}

rk_status rk_strmap_put(rk_strmap *m, const char *s, size_t len, int value) {
    if (2 * (m->n + 1) > m->cap && strmap_grow(m)) return RK_ENOMEM;
    uint64_t h = rk_hash64(s, len, 0);
    strmap_slot *e = strmap_find(m, h, s, len);
    if (e->key) return RK_EEXIST;
    char *k = rk_malloc(len + 1);
    if (!k) return RK_ENOMEM;
    memcpy(k, s, len);
    k[len] = 0;
    *e = (strmap_slot){k, len, h, value};
    m->n++;
    return RK_OK;
}

int rk_strmap_get(const rk_strmap *m, const char *s, size_t len) {
    const strmap_slot *e = strmap_find(m, rk_hash64(s, len, 0), s, len);
    return e->key ? e->value : -1;
}

size_t rk_strmap_count(const rk_strmap *m) { return m->n; }

/* ------------------------------------------------------------- RNG */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rk_rng_seed(rk_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rk_rng_next(rk_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rk_rng_uniform(rk_rng *r) { return (double)(rk_rng_next(r) >> 11) * 0x1.0p-53; }

double rk_rng_normal(rk_rng *r) {
    double u1 = rk_rng_uniform(r), u2 = rk_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t rk_rng_below(rk_rng *r, uint64_t n) {
    RK_ASSERT(n > 0);
    return rk_rng_next(r) % n;
}

/* ------------------------------------------------------------- time */

double rk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------- files */

rk_status rk_read_file(const char *path, char **out, size_t *len, rk_err *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return rk_fail(err, errno == ENOENT ? RK_ENOTFOUND : RK_EIO, "%s: %s", path,
                               strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rk_fail(err, RK_EIO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = rk_malloc(n + 1);
    if (!buf) {
        close(fd);
        return rk_fail(err, RK_ENOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            close(fd);
            rk_free(buf);
            return rk_fail(err, RK_EIO, "%s: read failed: %s", path, r < 0 ? strerror(e) : "short read");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return RK_OK;
}

rk_status rk_read_text(const char *path, char **out, size_t *len, rk_err *err) {
    size_t n = 0;
    rk_status s = rk_read_file(path, out, &n, err);
    if (s) return s;
    char *b = *out;
    if (n >= 3 && !memcmp(b, "\xEF\xBB\xBF", 3)) { /* UTF-8 byte order mark */
        memmove(b, b + 3, n - 3 + 1);
        n -= 3;
    }
    const char *z = memchr(b, 0, n);
    if (z) {
        long line = 1;
        int col = 1;
        const char *bol = b;
        for (const char *p = b; p < z; p++) {
            if (*p == '\n') line++, col = 1, bol = p + 1;
            else if (*p == '\t') col++;
        }
        size_t byte = (size_t)(z - bol) + 1;
        char name[64] = ""; /* the column's name in the header (line 1) */
        const char *h = b;
        for (int c = 1; line > 1 && c < col && h; c++) h = strpbrk(h, "\t\n"), h = h && *h == '\t' ? h + 1 : NULL;
        if (line > 1 && h) {
            size_t k = strcspn(h, "\t\r\n");
            snprintf(name, sizeof name, " '%.*s'", (int)(k < 40 ? k : 40), h);
        }
        rk_free(b);
        *out = NULL;
        return rk_fail(err, RK_EFORMAT, "%s: row %ld, column %d%s (byte %zu of the row): a NUL byte; binary data in a "
                       "text file is refused", path, line, col, name, byte);
    }
    if (len) *len = n;
    return RK_OK;
}

/* Write fault injection (rk_write_fail_after): counts rk_write_file calls. */
static atomic_long write_countdown;
static atomic_int write_errno;

void rk_write_fail_after(long n, int errnum) {
    atomic_store(&write_errno, errnum ? errnum : ENOSPC);
    atomic_store(&write_countdown, n);
}

/* write(2), or -1 with errno set when an injected fault is due. */
static ssize_t write_or_fault(int fd, const void *p, size_t n, int first) {
    if (first) {
        long c = atomic_load(&write_countdown);
        if (c > 0 && (c == 1 || atomic_fetch_sub(&write_countdown, 1) == 1)) {
            atomic_store(&write_countdown, 1); /* every later write fails too */
            errno = atomic_load(&write_errno);
            return -1;
        }
    }
    return write(fd, p, n);
}

rk_status rk_write_file(const char *path, const void *data, size_t len, rk_err *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return rk_fail(err, RK_EIO, "%s: cannot create: %s", path, strerror(errno));
    const char *p = data;
    size_t left = len;
    int first = 1;
    while (left || first) {
        ssize_t w = write_or_fault(fd, p, left, first);
        first = 0;
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            return rk_fail(err, e == ENOSPC ? RK_ETOOBIG : RK_EIO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 && errno != EINVAL) { /* EINVAL: a device or FIFO that has nothing to sync */
        int e = errno;
        close(fd);
        return rk_fail(err, e == ENOSPC ? RK_ETOOBIG : RK_EIO, "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) != 0) return rk_fail(err, RK_EIO, "%s: close failed: %s", path, strerror(errno));
    return RK_OK;
}

rk_status rk_publish_file(const char *path, rk_status (*write_tmp)(void *ctx, const char *tmp, rk_err *err), void *ctx,
                          rk_err *err) {
    char tmp[4200], dir[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= sizeof tmp)
        return rk_fail(err, RK_EINVAL, "%s: path too long", path);
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return write_tmp(ctx, path, err); /* a device, FIFO or symbolic link: written through, not replaced */
    rk_status s = write_tmp(ctx, tmp, err);
    if (s == RK_OK && rename(tmp, path) != 0)
        s = rk_fail(err, RK_EIO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (s != RK_OK) {
        (void)unlink(tmp);
        return s;
    }
    rk_path_parent(path, dir, sizeof dir);
    return rk_fsync_dir(dir, err);
}

typedef struct {
    const void *data;
    size_t len;
} bytes_ctx;

static rk_status write_bytes(void *ctx, const char *tmp, rk_err *err) {
    const bytes_ctx *b = ctx;
    return rk_write_file(tmp, b->data, b->len, err);
}

rk_status rk_write_file_atomic(const char *path, const void *data, size_t len, rk_err *err) {
    bytes_ctx b = {data, len};
    return rk_publish_file(path, write_bytes, &b, err);
}

rk_status rk_mkdir_p(const char *path, rk_err *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return rk_fail(err, RK_EINVAL, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return rk_fail(err, RK_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    if (!rk_is_dir(path)) return rk_fail(err, RK_EIO, "%s: exists and is not a directory", path);
    return RK_OK;
}

rk_status rk_rm_rf(const char *path, rk_err *err) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? RK_OK : rk_fail(err, RK_EIO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return rk_fail(err, RK_EIO, "%s: %s", path, strerror(errno));
        struct dirent *e;
        rk_status s = RK_OK;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[4096];
            if ((size_t)snprintf(child, sizeof child, "%s/%s", path, e->d_name) >= sizeof child) {
                s = rk_fail(err, RK_EINVAL, "%s: path too long", path);
                break;
            }
            if ((s = rk_rm_rf(child, err)) != RK_OK) break;
        }
        closedir(d);
        if (s != RK_OK) return s;
        if (rmdir(path) != 0) return rk_fail(err, RK_EIO, "%s: rmdir: %s", path, strerror(errno));
    } else if (unlink(path) != 0) {
        return rk_fail(err, RK_EIO, "%s: unlink: %s", path, strerror(errno));
    }
    return RK_OK;
}

rk_status rk_fsync_dir(const char *path, rk_err *err) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return rk_fail(err, RK_EIO, "%s: %s", path, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0) return rk_fail(err, RK_EIO, "%s: fsync: %s", path, strerror(e));
    return RK_OK;
}

int rk_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int rk_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ------------------------------------------------------------- numbers */

rk_status rk_parse_int(const char *what, const char *text, long long lo, long long hi, long long *out, rk_err *err) {
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10);
    if (!*text || isspace((unsigned char)*text) || *end || errno || x < lo || x > hi)
        return rk_fail(err, RK_EINVAL, "%s: expected an integer in %lld..%lld, got '%.60s'", what, lo, hi, text);
    *out = x;
    return RK_OK;
}

rk_status rk_parse_u64(const char *what, const char *text, uint64_t *out, rk_err *err) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(text, &end, 10);
    if (!*text || !isdigit((unsigned char)*text) || *end || errno)
        return rk_fail(err, RK_EINVAL, "%s: expected an integer in 0..%llu, got '%.60s'", what,
                       (unsigned long long)UINT64_MAX, text);
    *out = x;
    return RK_OK;
}

rk_status rk_parse_double(const char *what, const char *text, double lo, double hi, double *out, rk_err *err) {
    char *end;
    double x = strtod(text, &end);
    if (!*text || isspace((unsigned char)*text) || *end || !isfinite(x) || x < lo || x > hi)
        return rk_fail(err, RK_EINVAL, "%s: expected a number in [%g, %g], got '%.60s'", what, lo, hi, text);
    *out = x;
    return RK_OK;
}

/* ------------------------------------------------------------- text */

char *rk_next_line(char **cursor) {
    char *p = *cursor;
    if (!*p) return NULL;
    char *nl = strchr(p, '\n');
    if (nl) {
        *nl = 0;
        *cursor = nl + 1;
    } else {
        *cursor = p + strlen(p);
    }
    size_t L = strlen(p);
    if (L && p[L - 1] == '\r') p[L - 1] = 0;
    return p;
}

int rk_split_tabs(char *line, char **fields, int max) {
    int n = 0;
    for (char *p = line;;) {
        if (n < max) fields[n] = p;
        n++;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = 0;
        p = t + 1;
    }
    return n;
}

/* ------------------------------------------------------------- progress */

void rk_progress_start(rk_progress *p, const char *label, const char *unit, uint64_t total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = rk_now();
    p->tty = isatty(STDERR_FILENO);
}

static void progress_print(rk_progress *p, int final) {
    double now = rk_now(), el = now - p->t0;
    double rate = el > 0 ? (double)p->done / el : 0;
    char rbuf[32];
    if (rate >= 1e6) snprintf(rbuf, sizeof rbuf, "%.2fM", rate / 1e6);
    else if (rate >= 1e3) snprintf(rbuf, sizeof rbuf, "%.1fk", rate / 1e3);
    else snprintf(rbuf, sizeof rbuf, "%.0f", rate);
    if (p->total) {
        double frac = (double)p->done / (double)p->total;
        double eta = rate > 0 ? (double)(p->total - (p->done < p->total ? p->done : p->total)) / rate : 0;
        fprintf(stderr, "%s%s %5.1f%% %llu/%llu  %s %s/s  %s %.1fs%s", p->tty ? "\r" : "", p->label,
                100.0 * frac, (unsigned long long)p->done, (unsigned long long)p->total, rbuf, p->unit,
                final ? "took" : "eta", final ? el : eta, (p->tty && !final) ? "   " : "\n");
    } else {
        fprintf(stderr, "%s%s %llu  %s %s/s  %.1fs%s", p->tty ? "\r" : "", p->label,
                (unsigned long long)p->done, rbuf, p->unit, el, (p->tty && !final) ? "   " : "\n");
    }
    fflush(stderr);
    p->printed = 1;
}

void rk_progress_add(rk_progress *p, uint64_t n) {
    p->done += n;
    double now = rk_now();
    double every = p->tty ? 0.1 : 5.0;
    if (now - p->last >= every) {
        p->last = now;
        progress_print(p, 0);
    }
}

void rk_progress_finish(rk_progress *p) { progress_print(p, 1); }

void rk_sweep_dead_writers(const char *path, int restore_old, const char *what) {
    char parent[4096], base[1024];
    const char *sl = strrchr(path, '/');
    rk_path_parent(path, parent, sizeof parent);
    snprintf(base, sizeof base, "%s", sl ? sl + 1 : path);
    size_t bl = strlen(base);
    DIR *d = bl ? opendir(parent) : NULL;
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strncmp(n, base, bl) != 0) continue;
        int is_tmp = !strncmp(n + bl, ".tmp-", 5), is_old = !strncmp(n + bl, ".old-", 5);
        if (!is_tmp && !is_old) continue;
        char *end;
        errno = 0;
        long pid = strtol(n + bl + 5, &end, 10);
        if (errno || *end || end == n + bl + 5 || pid <= 0) continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[4096 + 1024 + 2];
        snprintf(p, sizeof p, "%s/%s", parent, n);
        if (is_old && restore_old && !rk_path_exists(path) && rename(p, path) == 0) {
            rk_warn("%s %s: restored the previous one from %s (a publish died between its renames)", what, path, p);
            continue;
        }
        rk_warn("%s %s: removing %s left by a writer that died (pid %ld)", what, path, p, pid);
        (void)rk_rm_rf(p, NULL);
    }
    closedir(d);
}

int rk_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void rk_path_parent(const char *path, char *out, size_t cap) {
    const char *sl = strrchr(path, '/');
    if (!sl) snprintf(out, cap, ".");
    else snprintf(out, cap, "%.*s", sl > path ? (int)(sl - path) : 1, path);
}
