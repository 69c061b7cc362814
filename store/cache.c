/*
 * store/cache.c — the RAM row cache in front of RocksDB (see
 * store_internal.h for the layout).
 *
 * Why CLOCK and not LRU: a hit in LRU relinks the entry at the list head —
 * two pointers per entry (16 bytes, which alone would break the 1.3x
 * memory target for 64-byte rows) and writes to three entries per hit. A
 * CLOCK hit only sets a one-byte reference bit; eviction sweeps the bits.
 * On the Zipf workloads of embedding lookups CLOCK's hit rate is within a
 * point or two of LRU's (it is the second-chance approximation of LRU).
 *
 * Memory per cached row: stride (8-byte key + encoded row) + 1 reference
 * byte + 1.5 x 4-byte index entries = row_bytes + 15 bytes.
 *
 * Concurrency: one mutex per shard; lookups copy/decode the row under it, so
 * a reader never sees a row being overwritten by an update. A batch lookup
 * (rk_cache_get_batch) groups its keys by shard (counting sort over chunks
 * of RK_CACHE_BATCH_CHUNK keys) and takes each shard's lock once per chunk
 * instead of once per key. A key's shard
 * is the top bits of its hash, its index home the low 32 bits (fastrange).
 */
#define _GNU_SOURCE
#include <string.h>

#include "store_internal.h"

#define RK_CACHE_INDEX_FACTOR_NUM 3 /* index capacity = 1.5 x slots */
#define RK_CACHE_INDEX_FACTOR_DEN 2

size_t rk_cache_bytes_per_row(size_t row_bytes) {
    return 8 + row_bytes + 1 + 4 * RK_CACHE_INDEX_FACTOR_NUM / RK_CACHE_INDEX_FACTOR_DEN;
}

rk_status rk_cache_init(rk_cache *c, uint64_t slots, int n_shards, size_t row_bytes, rk_err *err) {
    memset(c, 0, sizeof *c);
    if (n_shards < 1) n_shards = 1;
    while (n_shards > 1 && (uint64_t)n_shards * 8 > slots) n_shards >>= 1; /* >= 8 slots per shard */
    int bits = 0;
    while ((1 << bits) < n_shards) bits++;
    n_shards = 1 << bits;
    c->n_shards = n_shards;
    c->shard_shift = bits ? 64 - bits : 64;
    c->row_bytes = row_bytes;
    c->stride = 8 + row_bytes;
    c->shards = rk_calloc((size_t)n_shards, sizeof *c->shards);
    if (!c->shards) return rk_fail(err, RK_ENOMEM, "row cache: out of memory");
    c->bytes = (size_t)n_shards * sizeof *c->shards;
    for (int i = 0; i < n_shards; i++) {
        rk_cache_shard *sh = &c->shards[i];
        pthread_mutex_init(&sh->mu, NULL);
        uint64_t ns = slots / (uint64_t)n_shards + ((uint64_t)i < slots % (uint64_t)n_shards);
        if (ns > 0x7fffffffu) ns = 0x7fffffffu;
        sh->nslots = (uint32_t)ns;
        if (!ns) continue;
        sh->icap = (uint32_t)(ns * RK_CACHE_INDEX_FACTOR_NUM / RK_CACHE_INDEX_FACTOR_DEN + 1);
        sh->index = rk_calloc(sh->icap, sizeof *sh->index);
        sh->ref = rk_calloc(ns, 1);
        sh->data = rk_malloc(ns * c->stride);
        if (!sh->index || !sh->ref || !sh->data) {
            rk_cache_free(c);
            return rk_fail(err, RK_ENOMEM, "row cache: out of memory for %llu rows of %zu bytes",
                           (unsigned long long)slots, row_bytes);
        }
        c->bytes += sh->icap * sizeof *sh->index + ns + ns * c->stride;
        c->slots += ns;
    }
    return RK_OK;
}

void rk_cache_free(rk_cache *c) {
    if (c->shards) {
        for (int i = 0; i < c->n_shards; i++) {
            pthread_mutex_destroy(&c->shards[i].mu);
            rk_free(c->shards[i].index);
            rk_free(c->shards[i].ref);
            rk_free(c->shards[i].data);
        }
        rk_free(c->shards);
    }
    memset(c, 0, sizeof *c);
}

static inline uint64_t slot_key(const rk_cache *c, const rk_cache_shard *sh, uint32_t slot) {
    uint64_t k;
    memcpy(&k, sh->data + (size_t)slot * c->stride, 8);
    return k;
}

/* Index position holding key, or UINT32_MAX. Caller holds sh->mu. */
static inline uint32_t find_pos(const rk_cache *c, const rk_cache_shard *sh, uint64_t key, uint64_t h) {
    uint32_t p = rk_cache_home(sh, h);
    for (;;) {
        uint32_t v = sh->index[p];
        if (!v) return UINT32_MAX;
        if (slot_key(c, sh, v - 1) == key) return p;
        if (++p == sh->icap) p = 0;
    }
}

size_t rk_cache_get_batch(rk_cache *c, const uint64_t *keys, size_t n, rk_codec codec, int dim, float *out,
                          unsigned char *hit) {
    memset(hit, 0, n);
    if (!c->slots) return 0;
    enum { CHUNK = RK_CACHE_BATCH_CHUNK };
    uint64_t h[CHUNK];
    uint16_t order[CHUNK], start[257];
    uint8_t shard[CHUNK];
    const size_t dstride = (size_t)dim;
    size_t hits = 0;
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        const size_t m = n - c0 < CHUNK ? n - c0 : CHUNK;
        /* pass 1: hash, shard, prefetch the index entry; count per shard */
        memset(start, 0, (size_t)(c->n_shards + 1) * sizeof *start);
        for (size_t i = 0; i < m; i++) {
            h[i] = rk_cache_hash(keys[c0 + i]);
            const rk_cache_shard *sh = rk_cache_shard_of(c, h[i]);
            shard[i] = (uint8_t)(sh - c->shards);
            if (sh->nslots) __builtin_prefetch(&sh->index[rk_cache_home(sh, h[i])]);
            start[shard[i] + 1]++;
        }
        for (int k = 0; k < c->n_shards; k++) start[k + 1] += start[k];
        for (size_t i = 0; i < m; i++) order[start[shard[i]]++] = (uint16_t)i; /* start[k] = end of shard k now */
        /* pass 2: one lock per shard for all its keys of the chunk */
        size_t j = 0;
        for (int k = 0; k < c->n_shards; k++) {
            size_t end = start[k];
            if (j == end) continue;
            rk_cache_shard *sh = &c->shards[k];
            if (!sh->nslots) {
                j = end;
                continue;
            }
            pthread_mutex_lock(&sh->mu);
            for (; j < end; j++) {
                if (j + 4 < end) { /* the slot of a key 4 ahead; its index entry came with pass 1 */
                    size_t a = order[j + 4];
                    uint32_t v = sh->index[rk_cache_home(sh, h[a])];
                    if (v) __builtin_prefetch(sh->data + (size_t)(v - 1) * c->stride + 8);
                }
                size_t i = order[j];
                uint32_t p = find_pos(c, sh, keys[c0 + i], h[i]);
                if (p == UINT32_MAX) {
                    sh->misses++;
                    continue;
                }
                uint32_t slot = sh->index[p] - 1;
                rk_codec_decode(codec, sh->data + (size_t)slot * c->stride + 8, dim, out + (c0 + i) * dstride);
                if (!sh->ref[slot]) sh->ref[slot] = 1;
                sh->hits++;
                hit[c0 + i] = 1;
                hits++;
            }
            pthread_mutex_unlock(&sh->mu);
        }
    }
    return hits;
}

/* Backward-shift deletion of index position p (linear probing). */
static void index_delete(const rk_cache *c, rk_cache_shard *sh, uint32_t p) {
    uint32_t cap = sh->icap, hole = p, q = p;
    for (;;) {
        if (++q == cap) q = 0;
        uint32_t v = sh->index[q];
        if (!v) break;
        uint32_t home = rk_cache_home(sh, rk_cache_hash(slot_key(c, sh, v - 1)));
        /* Move v into the hole when its home is not cyclically in (hole, q]. */
        int in_range = hole <= q ? (home > hole && home <= q) : (home > hole || home <= q);
        if (!in_range) {
            sh->index[hole] = v;
            hole = q;
        }
    }
    sh->index[hole] = 0;
}

void rk_cache_gens(rk_cache *c, uint64_t *gens) {
    for (int i = 0; i < c->n_shards; i++) gens[i] = __atomic_load_n(&c->shards[i].gen, __ATOMIC_ACQUIRE);
}

void rk_cache_fill(rk_cache *c, uint64_t key, const void *row, const uint64_t *gens) {
    if (!c->slots) return;
    uint64_t h = rk_cache_hash(key);
    rk_cache_shard *sh = rk_cache_shard_of(c, h);
    if (!sh->nslots) return;
    pthread_mutex_lock(&sh->mu);
    if (sh->gen != gens[sh - c->shards] || find_pos(c, sh, key, h) != UINT32_MAX) {
        pthread_mutex_unlock(&sh->mu);
        return;
    }
    uint32_t slot;
    if (sh->used < sh->nslots) {
        slot = sh->used++;
    } else {
        /* CLOCK: clear reference bits until an unreferenced slot comes up. */
        while (sh->ref[sh->hand]) {
            sh->ref[sh->hand] = 0;
            if (++sh->hand == sh->nslots) sh->hand = 0;
        }
        slot = sh->hand;
        if (++sh->hand == sh->nslots) sh->hand = 0;
        uint64_t old = slot_key(c, sh, slot);
        uint32_t op = find_pos(c, sh, old, rk_cache_hash(old));
        RK_ASSERT(op != UINT32_MAX);
        index_delete(c, sh, op);
        sh->evictions++;
    }
    unsigned char *d = sh->data + (size_t)slot * c->stride;
    memcpy(d, &key, 8);
    memcpy(d + 8, row, c->row_bytes);
    sh->ref[slot] = 0; /* a new entry must earn its second chance */
    uint32_t p = rk_cache_home(sh, h);
    while (sh->index[p])
        if (++p == sh->icap) p = 0;
    __atomic_store_n(&sh->index[p], slot + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&sh->mu);
}

void rk_cache_update(rk_cache *c, uint64_t key, const void *row) {
    if (!c->slots) return;
    uint64_t h = rk_cache_hash(key);
    rk_cache_shard *sh = rk_cache_shard_of(c, h);
    if (!sh->nslots) return;
    pthread_mutex_lock(&sh->mu);
    __atomic_store_n(&sh->gen, sh->gen + 1, __ATOMIC_RELEASE);
    uint32_t p = find_pos(c, sh, key, h);
    if (p != UINT32_MAX) memcpy(sh->data + (size_t)(sh->index[p] - 1) * c->stride + 8, row, c->row_bytes);
    pthread_mutex_unlock(&sh->mu);
}

void rk_cache_stats(rk_cache *c, uint64_t *hits, uint64_t *misses, uint64_t *evictions, uint64_t *entries) {
    for (int i = 0; c->shards && i < c->n_shards; i++) {
        rk_cache_shard *sh = &c->shards[i];
        pthread_mutex_lock(&sh->mu);
        *hits += sh->hits;
        *misses += sh->misses;
        *evictions += sh->evictions;
        *entries += sh->used;
        pthread_mutex_unlock(&sh->mu);
    }
}
