/*
 * rank/embsum_data.c — EmbSum's inputs from `rank data movielens` output.
 *
 * How it works:
 *   1. items.csv (movieId, title, genres, tags; RFC 4180, core's rk_dsv_*) gives
 *      each item two texts: the CPE text "title | genres | tags" and the
 *      short "title (genres)" used inside session texts, and a genre bit
 *      set (for the multi-genre segment).
 *   2. train.tsv, valid.tsv, test.tsv (time-ordered; columns label,
 *      user_id, movie_id) are read in order as one event list, so each
 *      user's events are in time order. Periods per user, as fractions of
 *      the user's own events: train targets [40%, 80%), valid [80%, 90%),
 *      test the last 10% (every user of ml-latest-small has >= 20 ratings,
 *      so >= 2 test events). A user's history in a period is their last
 *      g*p events before it, oldest first; positives are their label-1
 *      (rating >= 4) events of the period.
 *   3. Sessions: the history is cut from its newest end into chunks of p
 *      items (the oldest may be shorter); a session's text is its items'
 *      short texts joined by ". ". Each session text is encoded once; its
 *      [CLS] state and its token mean, both L2-normalized, are kept.
 *   4. Item token states: each CPE text, at most item_tokens tokens, every
 *      state row L2-normalized; the item's sentence vector is the
 *      normalized mean of its states (= the encoder's own output).
 *   5. Impressions (valid, test): per user with a history and positives,
 *      the positives plus 4 negatives each, drawn uniformly from the
 *      catalogue among items the user never rated (data seed).
 *   6. Steps 3-4 are cached in cache_dir as safetensors, keyed by the
 *      encoder identity, the sizes and the data files' byte counts.
 */
#define _GNU_SOURCE
#include "rank.h"
#include "embed.h"
#include "embsum_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int rk_embsum_find(const int64_t *ids, int n, int64_t id) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (ids[mid] == id) return mid;
        if (ids[mid] < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- items */

typedef struct {
    int64_t id;
    const char *title, *genres, *tags;
} item_row;

static int cmp_item_row(const void *a, const void *b) { return cmp_i64(&((const item_row *)a)->id, &((const item_row *)b)->id); }

static int genre_bit(char names[32][48], int *n, const char *g, size_t len) {
    for (int i = 0; i < *n; i++)
        if (strlen(names[i]) == len && !memcmp(names[i], g, len)) return i;
    if (*n >= 32 || len >= 48) return -1;
    memcpy(names[*n], g, len);
    names[*n][len] = 0;
    return (*n)++;
}

static rk_status load_items(rk_embsum_data *d, const char *dir, rk_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/items.csv", dir);
    char *buf = NULL;
    size_t len = 0;
    item_row *rows = NULL;
    rk_status s = rk_read_file(path, &buf, &len, err);
    if (s != RK_OK) return s;
    static const char *const cols[] = {"movieId", "title", "genres", "tags"};
    rk_dsv_reader r = {"items.csv", cols, 4, buf, buf + len, 0, ',', 1};
    size_t cap = 1024, n = 0, text_bytes = 0;
    rows = rk_malloc(cap * sizeof *rows);
    if (!rows) goto oom;
    if ((s = rk_dsv_header(&r, err)) != RK_OK) goto out;
    for (;;) {
        rk_dsv_field f[8];
        int nf, got = rk_dsv_next(&r, f, 8, &nf, err);
        if (got < 0) { s = (rk_status)got; goto out; }
        if (got == 0) break;
        if (nf != 4) { s = rk_fail(err, RK_EFORMAT, "items.csv row %zu: expected 4 columns, got %d", r.row, nf); goto out; }
        char *end;
        long long id = strtoll(f[0].s, &end, 10);
        if (!f[0].len || *end) { s = rk_fail(err, RK_EFORMAT, "items.csv row %zu, column movieId: '%.40s' is not an integer", r.row, f[0].s); goto out; }
        if (n == cap) {
            item_row *nr = rk_realloc(rows, (cap *= 2) * sizeof *rows);
            if (!nr) goto oom;
            rows = nr;
        }
        rows[n++] = (item_row){id, f[1].s, f[2].s, f[3].s};
        text_bytes += 2 * (f[1].len + f[2].len) + f[3].len + 16;
    }
    if (!n) { s = rk_fail(err, RK_EFORMAT, "items.csv: no items"); goto out; }
    qsort(rows, n, sizeof *rows, cmp_item_row);
    d->n_items = (int)n;
    d->item_id = rk_malloc(n * sizeof *d->item_id);
    d->item_text = rk_malloc(n * sizeof *d->item_text);
    d->item_short = rk_malloc(n * sizeof *d->item_short);
    d->item_genres = rk_calloc(n, sizeof *d->item_genres);
    d->text_buf = rk_malloc(text_bytes);
    if (!d->item_id || !d->item_text || !d->item_short || !d->item_genres || !d->text_buf) goto oom;
    char names[32][48];
    char *w = d->text_buf;
    for (size_t i = 0; i < n; i++) {
        if (i && rows[i].id == rows[i - 1].id) { s = rk_fail(err, RK_EFORMAT, "items.csv: movieId %lld appears twice", (long long)rows[i].id); goto out; }
        d->item_id[i] = rows[i].id;
        d->item_text[i] = w;
        w += sprintf(w, "%s | %s | %s", rows[i].title, rows[i].genres, rows[i].tags) + 1;
        d->item_short[i] = w;
        w += sprintf(w, "%s (%s)", rows[i].title, rows[i].genres) + 1;
        for (char *c = d->item_short[i]; *c; c++)
            if (*c == '|') *c = ' ';
        const char *g = rows[i].genres;
        while (*g) {
            const char *e = strchr(g, '|');
            size_t gl = e ? (size_t)(e - g) : strlen(g);
            int b = gl ? genre_bit(names, &d->n_genres, g, gl) : -1;
            if (b >= 0) d->item_genres[i] |= 1u << b;
            g += gl + (e ? 1 : 0);
        }
    }
    s = RK_OK;
    goto out;
oom:
    s = rk_fail(err, RK_ENOMEM, "items.csv: out of memory");
out:
    rk_free(rows);
    rk_free(buf);
    return s;
}

/* ---------------------------------------------------------------- events */

typedef struct {
    int32_t user, item; /* user: raw id until users are indexed */
    int64_t uid;
    uint8_t label;
} event;

typedef struct {
    event *ev;
    size_t n, cap;
} events;

/* Split a TSV line in place into at most max fields; returns the count. */
static int split_tabs(char *line, char **f, int max) {
    int k = 0;
    for (char *t = line; t && k < max; k++) {
        f[k] = t;
        char *tab = strchr(t, '\t');
        if (tab) *tab = 0;
        t = tab ? tab + 1 : NULL;
    }
    return k;
}

static int col_index(char *header, const char *name) {
    int k = 0;
    for (char *t = header; t; k++) {
        char *tab = strchr(t, '\t');
        size_t l = tab ? (size_t)(tab - t) : strlen(t);
        if (l == strlen(name) && !memcmp(t, name, l)) return k;
        t = tab ? tab + 1 : NULL;
    }
    return -1;
}

static rk_status load_events(const rk_embsum_data *d, const char *dir, const char *name, events *E, rk_err *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *buf = NULL;
    size_t len = 0;
    rk_status s = rk_read_file(path, &buf, &len, err);
    if (s != RK_OK) return s;
    char *line = buf, *nl = strchr(line, '\n');
    if (!nl) { s = rk_fail(err, RK_EFORMAT, "%s: no header line", name); goto out; }
    *nl = 0;
    static const char *const want[] = {"label", "user_id", "movie_id"};
    int ci[3];
    for (int k = 0; k < 3; k++)
        if ((ci[k] = col_index(line, want[k])) < 0) { s = rk_fail(err, RK_EFORMAT, "%s: no column '%s'", name, want[k]); goto out; }
    size_t row = 1;
    for (line = nl + 1; line < buf + len && *line; line = nl + 1) {
        row++;
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *fld[16] = {0};
        int k = split_tabs(line, fld, 16);
        int64_t v[3];
        for (int j = 0; j < 3; j++) {
            char *end;
            if (ci[j] >= k || !*fld[ci[j]]) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: missing", name, row, want[j]); goto out; }
            v[j] = strtoll(fld[ci[j]], &end, 10);
            if (*end) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: '%.30s' is not an integer", name, row, want[j], fld[ci[j]]); goto out; }
        }
        if (v[0] != 0 && v[0] != 1) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column label: %lld is not 0 or 1", name, row, (long long)v[0]); goto out; }
        int it = rk_embsum_find(d->item_id, d->n_items, v[2]);
        if (it < 0) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column movie_id: %lld is not in items.csv", name, row, (long long)v[2]); goto out; }
        if (E->n == E->cap) {
            size_t nc = E->cap ? 2 * E->cap : 65536;
            event *ne = rk_realloc(E->ev, nc * sizeof *ne);
            if (!ne) { s = rk_fail(err, RK_ENOMEM, "%s: out of memory", name); goto out; }
            E->ev = ne, E->cap = nc;
        }
        E->ev[E->n++] = (event){0, it, v[1], (uint8_t)v[0]};
        if (!nl) break;
    }
out:
    rk_free(buf);
    return s;
}

/* ---------------------------------------------------------------- encoder caches */

/* What the encoder caches depend on in DIR: each input file's size and a
 * hash of its bytes (rk_hash64 chained over 1 MiB blocks). Sizes alone
 * once let an edited items.csv of the same length reuse stale token states. */
static void data_digest(const char *dir, char *out, size_t cap) {
    static const char *const files[] = {"items.csv", "train.tsv", "valid.tsv", "test.tsv"};
    size_t o = 0;
    out[0] = 0;
    char *block = rk_malloc(1 << 20);
    for (int i = 0; i < 4 && o < cap; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        FILE *f = block ? fopen(p, "rb") : NULL;
        long long size = -1;
        uint64_t h = 0;
        if (f) {
            size_t n;
            size = 0;
            while ((n = fread(block, 1, 1 << 20, f)) > 0) h = rk_hash64(block, n, h), size += (long long)n;
            if (ferror(f)) size = -1;
            fclose(f);
        }
        o += (size_t)snprintf(out + o, cap - o, ";%lld:%016llx", size, (unsigned long long)h);
    }
    rk_free(block);
}

static void cache_key(const char *digest, const char *enc_id, const char *extra, char *key, size_t cap) {
    snprintf(key, cap, "%s;%s%s", enc_id, extra, digest);
}

/* A chunk of items [i, i + c) failed to encode with s (the encoder names
 * the text by its place in the chunk): encode them one at a time into the
 * chunk's rows to name the item that fails, by its movieId. */
static rk_status blame_item(rk_embsum_data *d, rk_text_encoder *enc, int T, int i, int c, rk_status s, rk_err *err) {
    for (int j = 0; j < c; j++) {
        int32_t off[2];
        rk_err e = {0};
        float *rows = d->tok + (size_t)d->tok_off[i] * d->d;
        if (rk_embsum_item_states(enc, (const char *const *)d->item_text + i + j, 1, T, rows, off, &e) != RK_OK) {
            const char *m = strncmp(e.msg, "text 0: ", 8) ? e.msg : e.msg + 8;
            return rk_fail(err, s, "items.csv movieId %lld, its text 'title | genres | tags': %s",
                           (long long)d->item_id[i + j], m);
        }
    }
    return rk_err_prefix(err, "items.csv movieId %lld..%lld", (long long)d->item_id[i], (long long)d->item_id[i + c - 1]);
}

/* Token states of every item (step 4), from the cache when it matches. */
static rk_status item_states(rk_embsum_data *d, rk_text_encoder *enc, const char *cache, const char *key, int T,
                             int quiet, rk_err *err) {
    const int D = d->d, n = d->n_items;
    char path[4200];
    rk_st_file *f = NULL;
    rk_status s;
    d->tok_off = rk_malloc(((size_t)n + 1) * sizeof(int32_t));
    d->tok = rk_malloc((size_t)n * T * D * sizeof(float));
    d->item_vec = rk_malloc((size_t)n * D * sizeof(float));
    if (!d->tok_off || !d->tok || !d->item_vec) return rk_fail(err, RK_ENOMEM, "item token states: out of memory");
    if (cache) snprintf(path, sizeof path, "%s/embsum_items_t%d.safetensors", cache, T);
    if (cache && rk_path_exists(path) && rk_st_open(path, &f, NULL) == RK_OK) {
        const char *k = rk_st_meta(f, "key");
        int nd;
        int64_t sh[4];
        if (k && !strcmp(k, key) && rk_st_shape(f, "tok", &nd, sh, NULL) == RK_OK && nd == 2 && sh[1] == D) {
            int64_t *off = rk_malloc(((size_t)n + 1) * sizeof *off);
            s = off ? rk_st_read_i64(f, "off", off, (size_t)n + 1, err) : RK_ENOMEM;
            if (s == RK_OK) s = rk_st_read_f32(f, "tok", d->tok, 2, sh, err);
            for (int i = 0; s == RK_OK && i <= n; i++) d->tok_off[i] = (int32_t)off[i];
            rk_free(off);
            rk_st_close(f);
            if (s != RK_OK) return s;
            goto pool;
        }
        rk_st_close(f);
    }
    {
        rk_progress pr;
        if (!quiet) rk_progress_start(&pr, "embsum item token states", "items", (uint64_t)n);
        const int chunk = 256;
        d->tok_off[0] = 0;
        for (int i = 0; i < n; i += chunk) {
            int c = n - i < chunk ? n - i : chunk;
            int32_t off[257];
            s = rk_embsum_item_states(enc, (const char *const *)d->item_text + i, c, T,
                                      d->tok + (size_t)d->tok_off[i] * D, off, err);
            if (s != RK_OK) return blame_item(d, enc, T, i, c, s, err);
            for (int j = 1; j <= c; j++) d->tok_off[i + j] = d->tok_off[i] + off[j];
            if (!quiet) rk_progress_add(&pr, (uint64_t)c);
        }
        if (!quiet) rk_progress_finish(&pr);
    }
    if (cache) {
        rk_st_writer *w = NULL;
        int64_t *off = rk_malloc(((size_t)n + 1) * sizeof *off);
        if (!off) return rk_fail(err, RK_ENOMEM, "item cache: out of memory");
        for (int i = 0; i <= n; i++) off[i] = d->tok_off[i];
        int64_t sh[2] = {d->tok_off[n], D}, sho[1] = {(int64_t)n + 1};
        s = rk_mkdir_p(cache, err);
        if (s == RK_OK) s = rk_st_writer_create(&w, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "tok", d->tok, 2, sh, err);
        if (s == RK_OK) s = rk_st_writer_add_i64(w, "off", off, 1, sho, err);
        if (s == RK_OK) s = rk_st_writer_add_meta(w, "key", key, err);
        if (s == RK_OK) s = rk_st_writer_write(w, path, err);
        rk_st_writer_destroy(w);
        rk_free(off);
        if (s != RK_OK) return s;
    }
pool:
    for (int i = 0; i < n; i++) {
        int32_t o[2] = {0, d->tok_off[i + 1] - d->tok_off[i]};
        rk_mean_pool_forward(d->item_vec + (size_t)i * D, d->tok + (size_t)d->tok_off[i] * D, o, 1, D);
    }
    rk_l2_normalize(d->item_vec, n, D, 1e-12f);
    return RK_OK;
}

/* Session texts of split s, user u (step 3) into texts[] (heap strings). */
static int session_texts(const rk_embsum_data *d, int s, int u, char **texts) {
    const rk_embsum_split *sp = &d->sp[s];
    const int32_t *h = sp->hist + sp->hist_off[u];
    int L = sp->hist_off[u + 1] - sp->hist_off[u], ns = (L + d->p - 1) / d->p;
    for (int j = 0; j < ns; j++) {
        int hi = L - (ns - 1 - j) * d->p, lo = hi - d->p < 0 ? 0 : hi - d->p;
        size_t bytes = 1;
        for (int i = lo; i < hi; i++) bytes += strlen(d->item_short[h[i]]) + 2;
        char *t = rk_malloc(bytes), *w = t;
        if (!t) return -1;
        for (int i = lo; i < hi; i++) w += sprintf(w, i > lo ? ". %s" : "%s", d->item_short[h[i]]);
        *w = 0;
        texts[j] = t;
    }
    return ns;
}

static rk_status session_vectors(rk_embsum_data *d, rk_text_encoder *enc, const char *cache, const char *key,
                                 int quiet, rk_err *err) {
    const int D = d->d, U = d->n_users;
    char path[4200];
    rk_status s = RK_OK;
    for (int sp = 0; sp < 3; sp++) {
        rk_embsum_split *x = &d->sp[sp];
        x->sess_off = rk_malloc(((size_t)U + 1) * sizeof(int32_t));
        if (!x->sess_off) return rk_fail(err, RK_ENOMEM, "sessions: out of memory");
        x->sess_off[0] = 0;
        for (int u = 0; u < U; u++) {
            int L = x->hist_off[u + 1] - x->hist_off[u];
            x->sess_off[u + 1] = x->sess_off[u] + (L + d->p - 1) / d->p;
        }
        size_t rows = (size_t)x->sess_off[U] + 1;
        x->sess_first = rk_malloc(rows * D * sizeof(float));
        x->sess_mean = rk_malloc(rows * D * sizeof(float));
        if (!x->sess_first || !x->sess_mean) return rk_fail(err, RK_ENOMEM, "sessions: out of memory");
    }
    rk_st_file *f = NULL;
    if (cache) snprintf(path, sizeof path, "%s/embsum_sessions_g%d_p%d.safetensors", cache, d->g, d->p);
    if (cache && rk_path_exists(path) && rk_st_open(path, &f, NULL) == RK_OK) {
        const char *k = rk_st_meta(f, "key");
        int ok = k && !strcmp(k, key);
        for (int sp = 0; ok && sp < 3; sp++) {
            char nf[32], nm[32];
            int64_t sh[2] = {d->sp[sp].sess_off[U], D};
            snprintf(nf, sizeof nf, "first%d", sp);
            snprintf(nm, sizeof nm, "mean%d", sp);
            ok = rk_st_read_f32(f, nf, d->sp[sp].sess_first, 2, sh, NULL) == RK_OK &&
                 rk_st_read_f32(f, nm, d->sp[sp].sess_mean, 2, sh, NULL) == RK_OK;
        }
        rk_st_close(f);
        if (ok) return RK_OK;
    }
    size_t total = 0;
    for (int sp = 0; sp < 3; sp++) total += (size_t)d->sp[sp].sess_off[U];
    rk_progress pr;
    if (!quiet) rk_progress_start(&pr, "embsum session vectors", "sessions", total);
    char *texts[RK_EMBSUM_MAX_CODES * 64];
    for (int sp = 0; sp < 3 && s == RK_OK; sp++)
        for (int u = 0; u < U && s == RK_OK; u++) {
            int ns = session_texts(d, sp, u, texts);
            if (ns < 0) return rk_fail(err, RK_ENOMEM, "sessions: out of memory");
            size_t o = (size_t)d->sp[sp].sess_off[u] * D;
            if (ns) s = rk_embsum_session_vectors(enc, (const char *const *)texts, ns, d->sp[sp].sess_first + o,
                                                  d->sp[sp].sess_mean + o, err);
            for (int j = 0; j < ns; j++) rk_free(texts[j]);
            if (s != RK_OK) return rk_err_prefix(err, "sessions of user %lld", (long long)d->user_id[u]);
            if (!quiet) rk_progress_add(&pr, (uint64_t)ns);
        }
    if (!quiet) rk_progress_finish(&pr);
    if (!cache) return RK_OK;
    rk_st_writer *w = NULL;
    s = rk_mkdir_p(cache, err);
    if (s == RK_OK) s = rk_st_writer_create(&w, err);
    for (int sp = 0; sp < 3 && s == RK_OK; sp++) {
        char nf[32], nm[32];
        int64_t sh[2] = {d->sp[sp].sess_off[U], D};
        snprintf(nf, sizeof nf, "first%d", sp);
        snprintf(nm, sizeof nm, "mean%d", sp);
        s = rk_st_writer_add_f32(w, nf, d->sp[sp].sess_first, 2, sh, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, nm, d->sp[sp].sess_mean, 2, sh, err);
    }
    if (s == RK_OK) s = rk_st_writer_add_meta(w, "key", key, err);
    if (s == RK_OK) s = rk_st_writer_write(w, path, err);
    rk_st_writer_destroy(w);
    return s;
}

/* ---------------------------------------------------------------- users, periods, impressions */

static int rated(const rk_embsum_data *d, int u, int32_t item) {
    const int32_t *r = d->rated + d->rated_off[u];
    int n = d->rated_off[u + 1] - d->rated_off[u];
    return bsearch(&item, r, (size_t)n, sizeof *r, cmp_i32) != NULL;
}

static rk_status index_users(rk_embsum_data *d, events *E, int32_t **ue_off, int32_t **ue, rk_err *err) {
    int64_t *ids = rk_malloc(E->n * sizeof *ids);
    if (!ids) return rk_fail(err, RK_ENOMEM, "users: out of memory");
    for (size_t i = 0; i < E->n; i++) ids[i] = E->ev[i].uid;
    qsort(ids, E->n, sizeof *ids, cmp_i64);
    size_t U = 0;
    for (size_t i = 0; i < E->n; i++)
        if (!U || ids[i] != ids[U - 1]) ids[U++] = ids[i];
    d->user_id = ids;
    d->n_users = (int)U;
    d->rated_off = rk_calloc(U + 1, sizeof(int32_t));
    d->rated = rk_malloc(E->n * sizeof(int32_t));
    if (!d->rated_off || !d->rated) return rk_fail(err, RK_ENOMEM, "users: out of memory");
    for (size_t i = 0; i < E->n; i++) {
        E->ev[i].user = rk_embsum_find(ids, (int)U, E->ev[i].uid);
        d->rated_off[E->ev[i].user + 1]++;
    }
    for (size_t u = 0; u < U; u++) d->rated_off[u + 1] += d->rated_off[u];
    int32_t *fill = rk_calloc(U, sizeof *fill);
    if (!fill) return rk_fail(err, RK_ENOMEM, "users: out of memory");
    for (size_t i = 0; i < E->n; i++) {
        int u = E->ev[i].user;
        d->rated[d->rated_off[u] + fill[u]++] = E->ev[i].item;
    }
    /* each user's events in file (= time) order, before sorting rated by item */
    *ue_off = rk_malloc((U + 1) * sizeof(int32_t));
    *ue = rk_malloc(E->n * sizeof(int32_t));
    if (!*ue_off || !*ue) { rk_free(fill); return rk_fail(err, RK_ENOMEM, "users: out of memory"); }
    memcpy(*ue_off, d->rated_off, (U + 1) * sizeof(int32_t));
    memset(fill, 0, U * sizeof *fill);
    for (size_t i = 0; i < E->n; i++) {
        int u = E->ev[i].user;
        (*ue)[(*ue_off)[u] + fill[u]++] = (int32_t)i;
    }
    /* sort each user's rated items and drop repeats (an item rated twice) */
    int32_t w = 0, start = 0;
    for (size_t u = 0; u < U; u++) {
        int32_t a = start, b = d->rated_off[u + 1];
        qsort(d->rated + a, (size_t)(b - a), sizeof(int32_t), cmp_i32);
        start = b;
        d->rated_off[u] = w;
        for (int32_t i = a; i < b; i++)
            if (i == a || d->rated[i] != d->rated[i - 1]) d->rated[w++] = d->rated[i];
    }
    d->rated_off[U] = w;
    rk_free(fill);
    return RK_OK;
}

/* Per-user periods, as fractions of the user's own time-ordered events:
 * train targets [0.4, 0.8), valid [0.8, 0.9), test [0.9, 1]; the history of
 * a period is the user's events before it. */
static const double PERIOD[3][2] = {{0.4, 0.8}, {0.8, 0.9}, {0.9, 1.0}};

/* Histories and positives of split s. ue: each user's events, in order. */
static rk_status build_split(rk_embsum_data *d, const events *E, const int32_t *ue_off, const int32_t *ue, int s,
                             uint64_t seed, rk_err *err) {
    const int U = d->n_users, gp = d->g * d->p;
    rk_embsum_split *x = &d->sp[s];
    x->hist_off = rk_calloc((size_t)U + 1, sizeof(int32_t));
    x->pos_off = rk_calloc((size_t)U + 1, sizeof(int32_t));
    if (!x->hist_off || !x->pos_off) return rk_fail(err, RK_ENOMEM, "split: out of memory");
    for (int u = 0; u < U; u++) {
        int n = ue_off[u + 1] - ue_off[u], cut = (int)(PERIOD[s][0] * n);
        x->hist_off[u + 1] = x->hist_off[u] + (cut < gp ? cut : gp);
    }
    x->hist = rk_malloc(((size_t)x->hist_off[U] + 1) * sizeof(int32_t));
    x->pos = rk_malloc(((size_t)E->n + 1) * sizeof(int32_t));
    if (!x->hist || !x->pos) return rk_fail(err, RK_ENOMEM, "split: out of memory");
    for (int u = 0; u < U; u++) {
        const int32_t *ev = ue + ue_off[u];
        int n = ue_off[u + 1] - ue_off[u], cut = (int)(PERIOD[s][0] * n), end = s == 2 ? n : (int)(PERIOD[s][1] * n);
        int L = x->hist_off[u + 1] - x->hist_off[u];
        for (int i = 0; i < L; i++) x->hist[x->hist_off[u] + i] = E->ev[ev[cut - L + i]].item;
        x->pos_off[u + 1] = x->pos_off[u];
        if (!L) continue;
        for (int i = cut; i < end; i++)
            if (E->ev[ev[i]].label) x->pos[x->pos_off[u + 1]++] = E->ev[ev[i]].item;
    }
    if (s == RK_SPLIT_TRAIN) return RK_OK;
    /* evaluation negatives, fixed by the data seed */
    size_t np = (size_t)x->pos_off[U];
    x->neg = rk_malloc((np * RK_EMBSUM_EVAL_NEG + 1) * sizeof(int32_t));
    if (!x->neg) return rk_fail(err, RK_ENOMEM, "split: out of memory");
    rk_rng r;
    rk_rng_seed(&r, seed * 1000003u + (uint64_t)s);
    for (int u = 0; u < U; u++) {
        int32_t *ng = x->neg + (size_t)x->pos_off[u] * RK_EMBSUM_EVAL_NEG;
        int want = (x->pos_off[u + 1] - x->pos_off[u]) * RK_EMBSUM_EVAL_NEG, have = 0;
        if (d->rated_off[u + 1] - d->rated_off[u] + want > d->n_items)
            return rk_fail(err, RK_EINVAL, "user %lld: too few unrated items for %d negatives", (long long)d->user_id[u], want);
        while (have < want) {
            int32_t it = (int32_t)rk_rng_below(&r, (uint64_t)d->n_items);
            int dup = rated(d, u, it);
            for (int j = 0; j < have && !dup; j++) dup = ng[j] == it;
            if (!dup) ng[have++] = it;
        }
    }
    return RK_OK;
}

/* summaries TSV: user_id <TAB> text. */
static rk_status load_summaries(rk_embsum_data *d, rk_text_encoder *enc, const char *path, rk_err *err) {
    char *buf = NULL;
    size_t len = 0;
    rk_status s = rk_read_text(path, &buf, &len, err); /* a NUL is refused: it would end the loop early */
    if (s != RK_OK) return s;
    d->summary = rk_calloc((size_t)d->n_users * d->d, sizeof(float));
    d->has_summary = rk_calloc((size_t)d->n_users, 1);
    if (!d->summary || !d->has_summary) { rk_free(buf); return rk_fail(err, RK_ENOMEM, "summaries: out of memory"); }
    size_t row = 0;
    for (char *line = buf, *nl; line < buf + len && *line; line = nl + 1) {
        row++;
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *tab = strchr(line, '\t'), *end;
        if (!tab) { s = rk_fail(err, RK_EFORMAT, "%s row %zu: expected user_id<TAB>summary", path, row); break; }
        *tab = 0;
        errno = 0;
        long long id = strtoll(line, &end, 10);
        if (!*line || *end || errno) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column user_id: '%.30s' is not an integer", path, row, line); break; }
        int u = rk_embsum_find(d->user_id, d->n_users, id);
        if (u < 0) { s = rk_fail(err, RK_ENOTFOUND, "%s row %zu, column user_id: user %lld is not in the data", path, row, id); break; }
        if (d->has_summary[u]) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column user_id: user %lld has a summary already", path, row, id); break; }
        if (!tab[1]) { s = rk_fail(err, RK_EFORMAT, "%s row %zu, column summary: empty", path, row); break; }
        const char *t = tab + 1;
        s = rk_text_encoder_encode(enc, &t, NULL, 1, d->summary + (size_t)u * d->d, err);
        if (s != RK_OK) { rk_err_prefix(err, "%s row %zu, column summary", path, row); break; }
        for (int j = 0; j < d->d; j++)
            if (!isfinite(d->summary[(size_t)u * d->d + j])) { s = rk_fail(err, RK_ENUMERIC, "%s row %zu, column summary: the encoded summary is not finite", path, row); break; }
        if (s != RK_OK) break;
        d->has_summary[u] = 1;
        if (!nl) break;
    }
    rk_free(buf);
    return s;
}

rk_status rk_embsum_data_load(const char *dir, rk_text_encoder *enc, const char *enc_id, const rk_embsum_cfg *c,
                              const char *cache, const char *summaries, uint64_t data_seed, int quiet,
                              rk_embsum_data **out, rk_err *err) {
    *out = NULL;
    rk_status s = rk_embsum_cfg_check(c, err);
    if (s != RK_OK) return s;
    rk_embsum_data *d = rk_calloc(1, sizeof *d);
    events E = {0};
    int32_t *ue_off = NULL, *ue = NULL;
    if (!d) return rk_fail(err, RK_ENOMEM, "embsum data: out of memory");
    d->d = rk_text_encoder_dim(enc);
    d->g = c->g, d->p = c->p;
    if ((s = load_items(d, dir, err)) != RK_OK) goto fail;
    if ((s = load_events(d, dir, "train.tsv", &E, err)) != RK_OK) goto fail;
    if ((s = load_events(d, dir, "valid.tsv", &E, err)) != RK_OK) goto fail;
    if ((s = load_events(d, dir, "test.tsv", &E, err)) != RK_OK) goto fail;
    if (!E.n) {
        s = rk_fail(err, RK_EFORMAT, "%s: train.tsv, valid.tsv and test.tsv hold no events", dir);
        goto fail;
    }
    if ((s = index_users(d, &E, &ue_off, &ue, err)) != RK_OK) goto fail;
    for (int sp = 0; sp < 3; sp++)
        if ((s = build_split(d, &E, ue_off, ue, sp, data_seed, err)) != RK_OK) goto fail;
    char key[1024], extra[64], digest[256] = "";
    if (cache) data_digest(dir, digest, sizeof digest);
    snprintf(extra, sizeof extra, "T%d", c->item_tokens);
    cache_key(digest, enc_id, extra, key, sizeof key);
    if ((s = item_states(d, enc, cache, key, c->item_tokens, quiet, err)) != RK_OK) goto fail;
    snprintf(extra, sizeof extra, "g%d p%d", c->g, c->p);
    cache_key(digest, enc_id, extra, key, sizeof key);
    if ((s = session_vectors(d, enc, cache, key, quiet, err)) != RK_OK) goto fail;
    if (summaries && (s = load_summaries(d, enc, summaries, err)) != RK_OK) goto fail;
    rk_free(E.ev), rk_free(ue_off), rk_free(ue);
    *out = d;
    return RK_OK;
fail:
    rk_free(E.ev), rk_free(ue_off), rk_free(ue);
    rk_embsum_data_free(d);
    return s;
}

void rk_embsum_data_free(rk_embsum_data *d) {
    if (!d) return;
    rk_free(d->item_id);
    rk_free(d->item_text);
    rk_free(d->item_short);
    rk_free(d->text_buf);
    rk_free(d->item_genres);
    rk_free(d->tok);
    rk_free(d->tok_off);
    rk_free(d->item_vec);
    rk_free(d->user_id);
    rk_free(d->rated_off);
    rk_free(d->rated);
    for (int s = 0; s < 3; s++) {
        rk_embsum_split *x = &d->sp[s];
        rk_free(x->sess_off), rk_free(x->sess_first), rk_free(x->sess_mean);
        rk_free(x->hist_off), rk_free(x->hist), rk_free(x->pos_off), rk_free(x->pos), rk_free(x->neg);
    }
    rk_free(d->summary);
    rk_free(d->has_summary);
    rk_free(d);
}

int rk_embsum_data_dim(const rk_embsum_data *d) { return d->d; }

size_t rk_embsum_data_n_impression_rows(const rk_embsum_data *d) {
    size_t n = 0;
    for (int s = RK_SPLIT_VALID; s <= RK_SPLIT_TEST; s++) n += (size_t)d->sp[s].pos_off[d->n_users] * (1 + RK_EMBSUM_EVAL_NEG);
    return n;
}

/* The impression rows as text, written through rk_write_file_atomic (a
 * device, FIFO or link is written through, never replaced by a file). */
rk_status rk_embsum_data_write_impressions(const rk_embsum_data *d, const char *path, rk_err *err) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    fprintf(f, "split\timpression\tuser_id\tmovie_id\tlabel\n");
    static const char *const names[] = {"train", "valid", "test"};
    for (int s = RK_SPLIT_VALID; s <= RK_SPLIT_TEST; s++) {
        const rk_embsum_split *x = &d->sp[s];
        for (int u = 0; u < d->n_users; u++) {
            int np = x->pos_off[u + 1] - x->pos_off[u];
            for (int i = 0; i < np; i++)
                fprintf(f, "%s\t%d\t%lld\t%lld\t1\n", names[s], u, (long long)d->user_id[u],
                        (long long)d->item_id[x->pos[x->pos_off[u] + i]]);
            for (int i = 0; i < np * RK_EMBSUM_EVAL_NEG; i++)
                fprintf(f, "%s\t%d\t%lld\t%lld\t0\n", names[s], u, (long long)d->user_id[u],
                        (long long)d->item_id[x->neg[(size_t)x->pos_off[u] * RK_EMBSUM_EVAL_NEG + i]]);
        }
    }
    int bad = ferror(f) != 0;
    bad |= fclose(f) != 0;
    rk_status st = bad ? rk_fail(err, RK_ENOMEM, "%s: out of memory", path) : rk_write_file_atomic(path, text, len, err);
    free(text);
    return st;
}

/* int32 arrays widened to int64 for the dump; the writer borrows tensors
 * until rk_st_writer_write, so the copies live in keep[] until then. */
typedef struct {
    int64_t *keep[64];
    int n;
} dump_keep;

static rk_status dump_i32(rk_st_writer *w, dump_keep *k, const char *name, const int32_t *v, size_t n, rk_err *err) {
    if (k->n == 64) return rk_fail(err, RK_EINTERNAL, "dump: too many tensors");
    int64_t *t = k->keep[k->n++] = rk_malloc((n ? n : 1) * sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "dump: out of memory");
    for (size_t i = 0; i < n; i++) t[i] = v[i];
    int64_t sh[1] = {(int64_t)n};
    return rk_st_writer_add_i64(w, name, t, 1, sh, err);
}

rk_status rk_embsum_data_dump(const rk_embsum_data *d, const char *path, rk_err *err) {
    rk_st_writer *w = NULL;
    dump_keep keep = {{0}, 0};
    int32_t *hs = NULL, *gen = NULL;
    rk_status s = rk_st_writer_create(&w, err);
    const int U = d->n_users, D = d->d;
    int64_t sh[2] = {d->tok_off[d->n_items], D};
    if (s == RK_OK) s = rk_st_writer_add_f32(w, "tok", d->tok, 2, sh, err);
    if (s == RK_OK) s = dump_i32(w, &keep, "tok_off", d->tok_off, (size_t)d->n_items + 1, err);
    if (s == RK_OK) s = dump_i32(w, &keep, "rated_off", d->rated_off, (size_t)U + 1, err);
    if (s == RK_OK) s = dump_i32(w, &keep, "rated", d->rated, (size_t)d->rated_off[U], err);
    if (s == RK_OK && d->summary) {
        int64_t ss[2] = {U, D};
        s = rk_st_writer_add_f32(w, "summary", d->summary, 2, ss, err);
        hs = rk_malloc((size_t)U * sizeof *hs);
        for (int u = 0; hs && u < U; u++) hs[u] = d->has_summary[u];
        if (s == RK_OK) s = hs ? dump_i32(w, &keep, "has_summary", hs, (size_t)U, err) : RK_ENOMEM;
    }
    for (int x = 0; x < 3 && s == RK_OK; x++) {
        const rk_embsum_split *p = &d->sp[x];
        char n[64];
        int64_t ss[2] = {p->sess_off[U], D};
        snprintf(n, sizeof n, "s%d.first", x);
        s = rk_st_writer_add_f32(w, n, p->sess_first, 2, ss, err);
        snprintf(n, sizeof n, "s%d.mean", x);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, n, p->sess_mean, 2, ss, err);
        snprintf(n, sizeof n, "s%d.sess_off", x);
        if (s == RK_OK) s = dump_i32(w, &keep, n, p->sess_off, (size_t)U + 1, err);
        snprintf(n, sizeof n, "s%d.pos_off", x);
        if (s == RK_OK) s = dump_i32(w, &keep, n, p->pos_off, (size_t)U + 1, err);
        snprintf(n, sizeof n, "s%d.pos", x);
        if (s == RK_OK) s = dump_i32(w, &keep, n, p->pos, (size_t)p->pos_off[U], err);
        snprintf(n, sizeof n, "s%d.hist_off", x);
        if (s == RK_OK) s = dump_i32(w, &keep, n, p->hist_off, (size_t)U + 1, err);
        snprintf(n, sizeof n, "s%d.hist", x);
        if (s == RK_OK) s = dump_i32(w, &keep, n, p->hist, (size_t)p->hist_off[U], err);
        snprintf(n, sizeof n, "s%d.neg", x);
        if (s == RK_OK && p->neg) s = dump_i32(w, &keep, n, p->neg, (size_t)p->pos_off[U] * RK_EMBSUM_EVAL_NEG, err);
    }
    gen = rk_malloc((size_t)d->n_items * sizeof *gen);
    for (int i = 0; gen && i < d->n_items; i++) gen[i] = (int32_t)d->item_genres[i];
    if (s == RK_OK) s = gen ? dump_i32(w, &keep, "item_genres", gen, (size_t)d->n_items, err) : RK_ENOMEM;
    if (s == RK_OK) s = rk_st_writer_write(w, path, err);
    rk_st_writer_destroy(w);
    for (int i = 0; i < keep.n; i++) rk_free(keep.keep[i]);
    rk_free(hs), rk_free(gen);
    return s;
}

rk_status rk_embsum_pairs_read(const char *path, int want_split, rk_embsum_pairs *p, rk_err *err) {
    char *buf = NULL;
    size_t len = 0;
    memset(p, 0, sizeof *p);
    rk_status s = rk_read_text(path, &buf, &len, err); /* a NUL is refused, a BOM dropped */
    if (s != RK_OK) return s;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    p->user = rk_malloc(lines * sizeof *p->user);
    p->item = rk_malloc(lines * sizeof *p->item);
    p->split = rk_malloc(lines * sizeof *p->split);
    if (!p->user || !p->item || !p->split) {
        rk_free(buf);
        return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    }
    int cu = -1, ci = -1, cs = -1;
    size_t row = 0;
    for (char *line = buf, *nl; line < buf + len && *line && s == RK_OK; line = nl + 1) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        row++;
        char *f[32];
        int k = split_tabs(line, f, 32);
        if (row == 1) {
            for (int j = 0; j < k && s == RK_OK; j++) {
                int *c = !strcmp(f[j], "user_id") ? &cu : !strcmp(f[j], "movie_id") ? &ci : !strcmp(f[j], "split") ? &cs : NULL;
                if (c && *c >= 0) s = rk_fail(err, RK_EFORMAT, "%s row 1, column %d: '%s' appears twice", path, j + 1, f[j]);
                else if (c) *c = j;
            }
            if (s == RK_OK && (cu < 0 || ci < 0 || (want_split && cs < 0)))
                s = rk_fail(err, RK_EFORMAT, "%s: the header needs columns %suser_id and movie_id", path,
                            want_split ? "split, " : "");
        } else {
            char *end;
            if (cu >= k || ci >= k || (want_split && cs >= k)) {
                s = rk_fail(err, RK_EFORMAT, "%s row %zu: too few columns", path, row);
                break;
            }
            errno = 0; /* out of range: not an integer here either (strtoll would clamp it) */
            p->user[p->n] = strtoll(f[cu], &end, 10);
            if (!*f[cu] || *end || errno) {
                s = rk_fail(err, RK_EFORMAT, "%s row %zu, column user_id: '%.30s' is not an integer", path, row, f[cu]);
                break;
            }
            errno = 0;
            p->item[p->n] = strtoll(f[ci], &end, 10);
            if (!*f[ci] || *end || errno) {
                s = rk_fail(err, RK_EFORMAT, "%s row %zu, column movie_id: '%.30s' is not an integer", path, row, f[ci]);
                break;
            }
            p->split[p->n] = -1;
            if (want_split) {
                const char *sp = f[cs];
                p->split[p->n] = !strcmp(sp, "train") ? 0 : !strcmp(sp, "valid") ? 1 : !strcmp(sp, "test") ? 2 : -1;
                if (p->split[p->n] < 0) {
                    s = rk_fail(err, RK_EFORMAT, "%s row %zu, column split: '%.30s' is not train, valid or test", path,
                                row, sp);
                    break;
                }
            }
            p->n++;
        }
        if (!nl) break;
    }
    rk_free(buf);
    return s;
}

void rk_embsum_pairs_free(rk_embsum_pairs *p) {
    rk_free(p->user), rk_free(p->item), rk_free(p->split);
    memset(p, 0, sizeof *p);
}
