/*
 * bench/malloc_count.c — an LD_PRELOAD shim that counts heap allocations
 * (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) of a
 * whole process — rankd with gRPC core and RocksDB included — and writes
 * "allocations=N" to $MALLOC_COUNT_OUT when the process exits.
 *
 * bench/bench_serve.sh runs rankd under it twice, serving N1 and N2
 * requests; (count(N2) - count(N1)) / (N2 - N1) is the number of
 * allocations per request on the request path, start-up and shutdown
 * cancelling out. Not used by tests or by rankd itself.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static atomic_ullong count;
static int initializing;

/* dlsym itself may calloc: serve those from a static buffer */
static _Alignas(16) char boot[16384];
static size_t boot_used;

static void *boot_alloc(size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (boot_used + n > sizeof boot) return NULL;
    void *p = boot + boot_used;
    boot_used += n;
    return p;
}
static int is_boot(void *p) { return (char *)p >= boot && (char *)p < boot + sizeof boot; }

static void init(void) {
    initializing = 1;
    real_malloc = dlsym(RTLD_NEXT, "malloc");
    real_calloc = dlsym(RTLD_NEXT, "calloc");
    real_realloc = dlsym(RTLD_NEXT, "realloc");
    real_free = dlsym(RTLD_NEXT, "free");
    real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = dlsym(RTLD_NEXT, "memalign");
    initializing = 0;
}

void *malloc(size_t n) {
    if (!real_malloc) {
        if (initializing) return boot_alloc(n);
        init();
    }
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_malloc(n);
}

void *calloc(size_t a, size_t b) {
    if (!real_calloc) {
        if (initializing) return boot_alloc(a * b); /* static: already zero */
        init();
    }
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_calloc(a, b);
}

void *realloc(void *p, size_t n) {
    if (!real_realloc) init();
    if (is_boot(p)) {
        void *q = real_malloc(n);
        if (q) memcpy(q, p, n < sizeof boot ? n : sizeof boot);
        return q;
    }
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_realloc(p, n);
}

void free(void *p) {
    if (!p || is_boot(p)) return;
    if (!real_free) init();
    real_free(p);
}

int posix_memalign(void **out, size_t al, size_t n) {
    if (!real_posix_memalign) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_posix_memalign(out, al, n);
}

void *aligned_alloc(size_t al, size_t n) {
    if (!real_aligned_alloc) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_aligned_alloc(al, n);
}

void *memalign(size_t al, size_t n) {
    if (!real_memalign) init();
    atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
    return real_memalign(al, n);
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("MALLOC_COUNT_OUT");
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "allocations=%llu\n", (unsigned long long)atomic_load(&count));
    fclose(f);
}
