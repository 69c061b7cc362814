/*
 * rank/data_movielens.c — MovieLens ml-latest-small -> time-ordered CTR
 * examples (train.tsv, valid.tsv, test.tsv, schema.json).
 *
 * How it works:
 *   1. movies.csv and ratings.csv are read whole (rk_read_file) and parsed in
 *      place by a small RFC 4180 reader: fields split on ',', records on LF
 *      or CRLF, a field that starts with '"' runs to the matching '"' and may
 *      hold commas, newlines and "" (an escaped quote). A '"' inside an
 *      unquoted field, or anything but a separator after a closing quote, is
 *      an error. A UTF-8 byte-order mark is skipped; other bytes pass
 *      through untouched (titles are UTF-8). "Row" in messages is the CSV
 *      record number (header = row 1), which is the line number unless a
 *      quoted field spans lines.
 *   2. Each movie keeps its genres ("(no genres listed)" -> "") and year:
 *      the last "(YYYY)" (exactly four digits) anywhere in the title, "" if
 *      there is none: "Runaway Brain (1995) " (trailing space) has 1995,
 *      "Death Note: Desu nôto (2006–2007)" has none. Movies are sorted by id for binary search; a duplicate
 *      movieId is an error.
 *   3. Every rating becomes an event; a movieId missing from movies.csv, a
 *      rating outside [0.5, 5] or a malformed number is an error naming the
 *      file, row and column (nothing is skipped silently). Events are sorted
 *      by (timestamp, userId, movieId), then by input row so duplicates keep
 *      a deterministic order.
 *   4. History: events are grouped per user in global order (a second sort
 *      of (user, position) pairs). Within a user timestamps never decrease,
 *      so the events strictly before an event's timestamp are a prefix of
 *      the user's list; its last <= 20 entries, newest first, are the
 *      history. Events with the same earlier timestamp count as more recent
 *      the later they are in the global order (i.e. larger movieId).
 *   5. The events, joined and derived into the columns of COLS, form one
 *      in-memory tab-separated log that goes through `rank data log`'s
 *      engine (rk_data_log_convert, rank/data_log.c) under the schema this
 *      preset declares (log_schema_json): the ordered split n_train =
 *      floor(0.8 n), n_valid = floor(0.9 n) - n_train, the rest test, and
 *      its TSV writer ("<name>.tmp", fsynced, renamed into place).
 *      schema.json (this preset's own, with the split's time ranges and
 *      cold-start counts) goes last, then the directory is fsynced.
 *
 *   6. items.csv (movieId, title, genres, tags): the content text of each
 *      movie for the text encoder, with tags.csv joined per movie (distinct
 *      tags in file order, ", "-separated); see write_items.
 *
 * O(n log n) time, O(n) memory: ~0.1 s for the 100,836 ratings.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ML_HISTORY_MAX 20

/* ------------------------------------------------------------------ buffer */

typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = rk_realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sbuf_put(sbuf *b, const char *s, size_t n) {
    if (sbuf_reserve(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

static int sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sbuf_printf(sbuf *b, const char *fmt, ...) {
    for (int pass = 0; pass < 2; pass++) {
        size_t room = b->cap > b->len ? b->cap - b->len : 0;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return 0;
        }
        if (sbuf_reserve(b, (size_t)n)) return -1;
    }
    return -1;
}

/* ------------------------------------------------------------------ CSV */

#define ML_MAX_FIELDS 8 /* the widest file (ratings.csv / tags.csv: 4 columns) with room */

/* Records come from core's reader (rk_dsv_next: RFC 4180, in place). */
typedef rk_dsv_field csv_field;
typedef rk_dsv_reader csv_reader;

static int csv_next(csv_reader *r, csv_field *f, int *nf, rk_err *err) { return rk_dsv_next(r, f, ML_MAX_FIELDS, nf, err); }

/* ------------------------------------------------------------------ fields */

/* Decimal integer, optional leading '-' when neg is set, at most 18 digits. */
static int parse_int(const csv_field *f, int neg, int64_t *out) {
    const char *s = f->s;
    size_t n = f->len, i = 0;
    int minus = 0;
    if (neg && n > 0 && s[0] == '-') minus = 1, i = 1;
    if (i == n || n - i > 18) return -1;
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = minus ? -v : v;
    return 0;
}

/* Plain decimal: digits, optionally '.' and digits; at least one digit. No
 * sign, exponent, hex, inf or nan (strtod alone would take those). */
static int parse_decimal(const csv_field *f, double *out) {
    const char *s = f->s;
    size_t n = f->len, i = 0, digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++, digits++;
    }
    if (i != n || digits == 0 || n > 32) return -1;
    *out = strtod(s, NULL);
    return 0;
}

static rk_status bad_field(rk_err *err, const csv_reader *r, const char *col, const char *what,
                           const csv_field *f) {
    return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: %s, got '%.40s%s'", r->file, r->row,
                   col, what, f->s, f->len > 40 ? "..." : "");
}

/* ------------------------------------------------------------------ movies */

typedef struct {
    int64_t id;
    size_t row;
    const char *genres; /* into the movies.csv buffer; "" when none listed */
    const char *title;  /* into the movies.csv buffer */
    char year[5];       /* "" when the title has no (YYYY) */
} movie;

/* The last "(dddd)" anywhere in the title, so trailing spaces ("Runaway
 * Brain (1995) ") need no trimming. */
static void title_year(const char *t, size_t n, char year[5]) {
    year[0] = 0;
    for (size_t i = n >= 6 ? n - 6 + 1 : 0; i-- > 0;) {
        const char *q = t + i;
        if (q[0] == '(' && q[5] == ')' && q[1] >= '0' && q[1] <= '9' && q[2] >= '0' &&
            q[2] <= '9' && q[3] >= '0' && q[3] <= '9' && q[4] >= '0' && q[4] <= '9') {
            memcpy(year, q + 1, 4);
            year[4] = 0;
            return;
        }
    }
}

static int cmp_movie(const void *a, const void *b) {
    const movie *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

static const movie *find_movie(const movie *m, size_t n, int64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && m[lo].id == id ? &m[lo] : NULL;
}

static rk_status parse_movies(char *buf, size_t len, movie **out, size_t *n_out, rk_err *err) {
    static const char *const cols[] = {"movieId", "title", "genres"};
    csv_reader r = {"movies.csv", cols, 3, buf, buf + len, 0, ',', 1};
    rk_status s = rk_dsv_header(&r, err);
    if (s != RK_OK) return s;
    size_t cap = 1024, n = 0;
    movie *m = rk_malloc(cap * sizeof *m);
    if (!m) return rk_fail(err, RK_ENOMEM, "movies.csv: out of memory");
    csv_field f[ML_MAX_FIELDS];
    int nf, got;
    while ((got = csv_next(&r, f, &nf, err)) == 1) {
        if (nf != 3) {
            s = rk_fail(err, RK_EFORMAT, "movies.csv row %zu: expected 3 fields, got %d", r.row, nf);
            goto fail;
        }
        if (n == cap) {
            movie *g = rk_realloc(m, 2 * cap * sizeof *m);
            if (!g) {
                s = rk_fail(err, RK_ENOMEM, "movies.csv: out of memory at row %zu", r.row);
                goto fail;
            }
            m = g;
            cap *= 2;
        }
        movie *mv = &m[n];
        if (parse_int(&f[0], 0, &mv->id)) {
            s = bad_field(err, &r, "movieId", "expected a non-negative integer", &f[0]);
            goto fail;
        }
        if (strpbrk(f[2].s, "\t\r\n")) {
            s = rk_fail(err, RK_EFORMAT, "movies.csv row %zu, column genres: contains a tab or newline",
                        r.row);
            goto fail;
        }
        mv->row = r.row;
        mv->genres = strcmp(f[2].s, "(no genres listed)") ? f[2].s : "";
        mv->title = f[1].s;
        title_year(f[1].s, f[1].len, mv->year);
        n++;
    }
    if (got < 0) {
        s = (rk_status)got;
        goto fail;
    }
    qsort(m, n, sizeof *m, cmp_movie);
    for (size_t i = 1; i < n; i++)
        if (m[i].id == m[i - 1].id) {
            s = rk_fail(err, RK_EFORMAT,
                        "movies.csv row %zu, column movieId: duplicate movieId %lld (first at row %zu)",
                        m[i].row, (long long)m[i].id, m[i - 1].row);
            goto fail;
        }
    *out = m;
    *n_out = n;
    return RK_OK;
fail:
    rk_free(m);
    return s;
}

/* ------------------------------------------------------------------ ratings */

typedef struct {
    int64_t ts, user, movie;
    size_t row;          /* ratings.csv row, the last sort key */
    const char *rating;  /* raw text, into the ratings.csv buffer */
    uint32_t midx;       /* index into the sorted movies */
    uint32_t uidx;       /* dense user index (set after grouping) */
    uint32_t hist_end;   /* history = ubyuser[hist_end - 1 .. hist_end - hist_len] */
    uint8_t hist_len;
    uint8_t label, hour, weekday;
} event;

static int cmp_event(const void *a, const void *b) {
    const event *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->movie != y->movie) return x->movie < y->movie ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

typedef struct {
    int64_t user;
    uint32_t pos; /* position in the sorted events */
} upos;

static int cmp_upos(const void *a, const void *b) {
    const upos *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static rk_status parse_ratings(char *buf, size_t len, const movie *mv, size_t n_mv, event **out,
                               size_t *n_out, rk_err *err) {
    static const char *const cols[] = {"userId", "movieId", "rating", "timestamp"};
    csv_reader r = {"ratings.csv", cols, 4, buf, buf + len, 0, ',', 1};
    rk_status s = rk_dsv_header(&r, err);
    if (s != RK_OK) return s;
    size_t cap = len / 24 + 16, n = 0; /* ~30 bytes per row in practice */
    event *ev = rk_malloc(cap * sizeof *ev);
    if (!ev) return rk_fail(err, RK_ENOMEM, "ratings.csv: out of memory");
    csv_field f[ML_MAX_FIELDS];
    int nf, got;
    while ((got = csv_next(&r, f, &nf, err)) == 1) {
        if (nf != 4) {
            s = rk_fail(err, RK_EFORMAT, "ratings.csv row %zu: expected 4 fields, got %d", r.row, nf);
            goto fail;
        }
        if (n == cap) {
            event *g = rk_realloc(ev, 2 * cap * sizeof *ev);
            if (!g) {
                s = rk_fail(err, RK_ENOMEM, "ratings.csv: out of memory at row %zu", r.row);
                goto fail;
            }
            ev = g;
            cap *= 2;
        }
        event *e = &ev[n];
        memset(e, 0, sizeof *e);
        double rating;
        if (parse_int(&f[0], 0, &e->user)) {
            s = bad_field(err, &r, "userId", "expected a non-negative integer", &f[0]);
            goto fail;
        }
        if (parse_int(&f[1], 0, &e->movie)) {
            s = bad_field(err, &r, "movieId", "expected a non-negative integer", &f[1]);
            goto fail;
        }
        if (parse_decimal(&f[2], &rating)) {
            s = bad_field(err, &r, "rating", "expected a number", &f[2]);
            goto fail;
        }
        if (!(rating >= 0.5 && rating <= 5.0)) {
            s = rk_fail(err, RK_EFORMAT, "ratings.csv row %zu, column rating: %s is outside [0.5, 5]",
                        r.row, f[2].s);
            goto fail;
        }
        if (parse_int(&f[3], 1, &e->ts)) {
            s = bad_field(err, &r, "timestamp", "expected an integer (Unix seconds)", &f[3]);
            goto fail;
        }
        time_t t = (time_t)e->ts;
        struct tm tm;
        if (!gmtime_r(&t, &tm)) {
            s = bad_field(err, &r, "timestamp", "out of range", &f[3]);
            goto fail;
        }
        const movie *m = find_movie(mv, n_mv, e->movie);
        if (!m) {
            s = rk_fail(err, RK_EFORMAT,
                        "ratings.csv row %zu, column movieId: movieId %lld is not in movies.csv",
                        r.row, (long long)e->movie);
            goto fail;
        }
        e->midx = (uint32_t)(m - mv);
        e->row = r.row;
        e->rating = f[2].s;
        e->label = rating >= 4.0;
        e->hour = (uint8_t)tm.tm_hour;
        e->weekday = (uint8_t)((tm.tm_wday + 6) % 7); /* tm: 0 = Sunday; ours: 0 = Monday */
        n++;
        if (n > UINT32_MAX - 1) {
            s = rk_fail(err, RK_ETOOBIG, "ratings.csv: more than %u rows", UINT32_MAX - 1);
            goto fail;
        }
    }
    if (got < 0) {
        s = (rk_status)got;
        goto fail;
    }
    if (n == 0) {
        s = rk_fail(err, RK_EFORMAT, "ratings.csv: no data rows after the header");
        goto fail;
    }
    *out = ev;
    *n_out = n;
    return RK_OK;
fail:
    rk_free(ev);
    return s;
}

/* ------------------------------------------------------------------ output */

static const char *const COLS[][3] = {
    {"label", "int", "1 if rating >= 4.0 else 0"},
    {"timestamp", "int", "event time, Unix seconds (UTC)"},
    {"user_id", "int", "MovieLens userId"},
    {"movie_id", "int", "MovieLens movieId"},
    {"genres", "string_list", "'|'-separated genres of the movie; \"\" for (no genres listed)"},
    {"year", "int_or_empty", "release year from the last (YYYY) in the title; \"\" if none"},
    {"hour", "int", "hour of day of the event, 0..23 (UTC)"},
    {"weekday", "int", "day of week of the event, 0 = Monday .. 6 = Sunday (UTC)"},
    {"history", "int_list",
     "the user's most recent <= 20 movie ids rated strictly before this event's timestamp, "
     "most recent first, '|'-separated"},
    {"rating", "float", "the raw rating, 0.5..5 (not a feature; for analysis)"},
};
#define N_COLS (sizeof COLS / sizeof COLS[0])

static rk_status write_atomic(const char *dir, const char *name, const char *data, size_t len,
                              rk_err *err) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return rk_fail(err, RK_EINVAL, "%s: output path too long", dir);
    return rk_write_file_atomic(path, data, len, err);
}

/* The joined, derived log: one record per event in global order, the
 * columns of COLS, tab-separated with a header; the generic engine
 * (rk_data_log_convert) splits and writes it. */
static rk_status build_log(sbuf *b, const event *ev, size_t n, const movie *mv, const upos *byuser, rk_err *err) {
    int bad = 0;
    for (size_t c = 0; c < N_COLS; c++) {
        bad |= sbuf_put(b, COLS[c][0], strlen(COLS[c][0]));
        bad |= sbuf_put(b, c + 1 < N_COLS ? "\t" : "\n", 1);
    }
    for (size_t i = 0; i < n && !bad; i++) {
        const event *e = &ev[i];
        const movie *m = &mv[e->midx];
        bad |= sbuf_printf(b, "%d\t%lld\t%lld\t%lld\t%s\t%s\t%d\t%d\t", e->label,
                           (long long)e->ts, (long long)e->user, (long long)e->movie, m->genres,
                           m->year, e->hour, e->weekday);
        for (unsigned h = 0; h < e->hist_len; h++)
            bad |= sbuf_printf(b, h ? "|%lld" : "%lld",
                               (long long)ev[byuser[e->hist_end - 1 - h].pos].movie);
        bad |= sbuf_printf(b, "\t%s\n", e->rating);
    }
    return bad ? rk_fail(err, RK_ENOMEM, "movielens: out of memory building the log") : RK_OK;
}

/* The preset's schema for the engine: the log above (tab, no quotes, a
 * header), every column a feature under its own name ('|'-lists multi-valued,
 * the rating dense), and the ordered 80/10/10 split. NULL when out of memory. */
static json_t *log_schema_json(void) {
    json_t *fs = json_array();
    for (size_t c = 1; c < N_COLS && fs; c++) {
        int list = strstr(COLS[c][1], "_list") != NULL, dense = !strcmp(COLS[c][1], "float");
        json_t *f = json_pack("{s:s,s:s}", "column", COLS[c][0], "kind", dense ? "dense" : "sparse");
        if (f && list && json_object_set_new(f, "separator", json_string("|"))) json_decref(f), f = NULL;
        if (!f || json_array_append_new(fs, f)) json_decref(fs), fs = NULL;
    }
    if (!fs) return NULL;
    return json_pack("{s:s,s:b,s:b,s:s,s:o,s:{s:s,s:f,s:f}}", "delimiter", "\t", "quotes", 0, "header", 1, "label", "label",
                     "features", fs, "split", "method", "ordered", "valid", 0.1, "test", 0.1);
}

/* The joined log through the engine (which makes out_dir); rows/pos: per
 * split (train, valid, test), the rows and positives it wrote. */
static rk_status write_splits(const char *out_dir, const event *ev, size_t n, const movie *mv, const upos *byuser,
                              size_t rows[3], size_t pos[3], rk_err *err) {
    sbuf b = {0};
    json_t *schema = NULL;
    rk_status s = build_log(&b, ev, n, mv, byuser, err);
    if (s == RK_OK && !(schema = log_schema_json())) s = rk_fail(err, RK_ENOMEM, "movielens: out of memory");
    if (s == RK_OK)
        s = rk_data_log_convert(schema, b.p, b.len, "movielens (ratings.csv joined with movies.csv)", out_dir, 0, rows, pos, err);
    json_decref(schema);
    rk_free(b.p);
    return s;
}

typedef struct {
    const char *name, *file;
    size_t lo, hi, pos;
} split_info;

/* Cold start in the test split, relative to train. */
typedef struct {
    size_t users, test_users, cold_users; /* distinct users */
    size_t test_items, cold_items;        /* distinct movies */
    size_t cold_item_rows;                /* test rows whose movie is not in train */
} cold_stats;

static void iso_utc(int64_t ts, char out[32]) {
    time_t t = (time_t)ts;
    struct tm tm;
    gmtime_r(&t, &tm); /* checked when parsed */
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static char *hex64(uint64_t h, char out[17]) {
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return out;
}

/* json_* returns NULL or -1 only on out-of-memory; collapse that to one check. */
static int jset(json_t *o, const char *k, json_t *v, int *bad) {
    if (!v || json_object_set_new(o, k, v)) *bad = 1;
    return *bad;
}

static rk_status write_schema(const char *dir, const char *in_dir, const split_info *sp,
                              const event *ev, size_t n, size_t n_pos, size_t n_movies,
                              const cold_stats *cs, size_t ratings_bytes, uint64_t ratings_h, size_t movies_bytes,
                              uint64_t movies_h, rk_err *err) {
    int bad = 0;
    char tmp[64], h[17];
    json_t *root = json_object();
    if (!root) return rk_fail(err, RK_ENOMEM, "schema.json: out of memory");
    jset(root, "dataset", json_string("movielens-ml-latest-small"), &bad);
    jset(root, "format_version", json_integer(RK_FORMAT_VERSION), &bad);
    jset(root, "delimiter", json_string("\t"), &bad);
    jset(root, "list_separator", json_string("|"), &bad);
    jset(root, "header", json_true(), &bad);

    json_t *cols = json_array();
    for (size_t c = 0; c < N_COLS && cols; c++) {
        json_t *o = json_object();
        if (!o) {
            bad = 1;
            break;
        }
        jset(o, "name", json_string(COLS[c][0]), &bad);
        jset(o, "type", json_string(COLS[c][1]), &bad);
        jset(o, "description", json_string(COLS[c][2]), &bad);
        /* the label is computed from it: rk_dataset_load refuses it as a feature */
        if (!strcmp(COLS[c][0], "rating")) jset(o, "label_derived", json_true(), &bad);
        if (json_array_append_new(cols, o)) bad = 1;
    }
    jset(root, "columns", cols, &bad);

    json_t *label = json_object();
    if (label) {
        jset(label, "column", json_string("label"), &bad);
        jset(label, "definition", json_string("rating >= 4.0"), &bad);
        jset(label, "positives", json_integer((json_int_t)n_pos), &bad);
        jset(label, "positive_rate", json_real((double)n_pos / (double)n), &bad);
    }
    jset(root, "label", label, &bad);

    json_t *order = json_array();
    if (order) {
        if (json_array_append_new(order, json_string("timestamp")) ||
            json_array_append_new(order, json_string("user_id")) ||
            json_array_append_new(order, json_string("movie_id")))
            bad = 1;
    }
    jset(root, "sort_order", order, &bad);
    jset(root, "history_max", json_integer(ML_HISTORY_MAX), &bad);
    jset(root, "rows", json_integer((json_int_t)n), &bad);

    json_t *splits = json_object();
    for (int i = 0; i < 3 && splits; i++) {
        json_t *o = json_object();
        if (!o) {
            bad = 1;
            break;
        }
        size_t rows = sp[i].hi - sp[i].lo;
        jset(o, "file", json_string(sp[i].file), &bad);
        jset(o, "rows", json_integer((json_int_t)rows), &bad);
        jset(o, "positives", json_integer((json_int_t)sp[i].pos), &bad);
        jset(o, "positive_rate", rows ? json_real((double)sp[i].pos / (double)rows) : json_null(),
             &bad);
        if (rows) {
            jset(o, "min_timestamp", json_integer(ev[sp[i].lo].ts), &bad);
            jset(o, "max_timestamp", json_integer(ev[sp[i].hi - 1].ts), &bad);
            iso_utc(ev[sp[i].lo].ts, tmp);
            jset(o, "min_time", json_string(tmp), &bad);
            iso_utc(ev[sp[i].hi - 1].ts, tmp);
            jset(o, "max_time", json_string(tmp), &bad);
        } else {
            jset(o, "min_timestamp", json_null(), &bad);
            jset(o, "max_timestamp", json_null(), &bad);
        }
        jset(splits, sp[i].name, o, &bad);
    }
    jset(root, "splits", splits, &bad);

    json_t *cold = json_object();
    if (cold) {
        jset(cold, "users", json_integer((json_int_t)cs->users), &bad);
        jset(cold, "test_users", json_integer((json_int_t)cs->test_users), &bad);
        jset(cold, "test_users_unseen_in_train", json_integer((json_int_t)cs->cold_users), &bad);
        jset(cold, "test_items", json_integer((json_int_t)cs->test_items), &bad);
        jset(cold, "test_items_unseen_in_train", json_integer((json_int_t)cs->cold_items), &bad);
        jset(cold, "test_rows_with_unseen_item", json_integer((json_int_t)cs->cold_item_rows),
             &bad);
    }
    jset(root, "test_cold_start", cold, &bad);

    json_t *src = json_array();
    const char *names[2] = {"ratings.csv", "movies.csv"};
    size_t rows[2] = {n, n_movies}, bytes[2] = {ratings_bytes, movies_bytes};
    uint64_t hs[2] = {ratings_h, movies_h};
    for (int i = 0; i < 2 && src; i++) {
        json_t *o = json_object();
        if (!o) {
            bad = 1;
            break;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", in_dir, names[i]);
        jset(o, "file", json_string(names[i]), &bad);
        jset(o, "path", json_string(path), &bad);
        jset(o, "data_rows", json_integer((json_int_t)rows[i]), &bad);
        jset(o, "bytes", json_integer((json_int_t)bytes[i]), &bad);
        jset(o, "xxh64", json_string(hex64(hs[i], h)), &bad);
        if (json_array_append_new(src, o)) bad = 1;
    }
    jset(root, "sources", src, &bad);

    rk_status s = bad ? rk_fail(err, RK_ENOMEM, "schema.json: out of memory") : rk_data_write_json(dir, "schema.json", root, err);
    json_decref(root);
    return s;
}

/* ------------------------------------------------------------------ main */

/* ------------------------------------------------------------------ items */

typedef struct {
    uint32_t midx;
    size_t row;
    const char *tag;
} tag_ref;

static int cmp_tag_ref(const void *a, const void *b) {
    const tag_ref *x = a, *y = b;
    if (x->midx != y->midx) return x->midx < y->midx ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

/* Append s to the CSV buffer as one RFC 4180 field (always quoted). */
static rk_status csv_put(char **buf, size_t *len, size_t *cap, const char *s, int last, rk_err *err) {
    size_t need = *len + 2 * strlen(s) + 4;
    if (need > *cap) {
        size_t c = *cap ? *cap : 1 << 16;
        while (c < need) c *= 2;
        char *g = rk_realloc(*buf, c);
        if (!g) return rk_fail(err, RK_ENOMEM, "items.csv: out of memory");
        *buf = g;
        *cap = c;
    }
    char *w = *buf + *len;
    *w++ = '"';
    for (; *s; s++) {
        if (*s == '"') *w++ = '"';
        *w++ = *s;
    }
    *w++ = '"';
    *w++ = last ? '\n' : ',';
    *len = (size_t)(w - *buf);
    return RK_OK;
}

/* items.csv: one row per movie (movieId, title, genres, tags), the content
 * text of the semantic-ID experiment. tags = the movie's distinct tags from
 * tags.csv (case-insensitive duplicates dropped), in file order, joined by
 * ", "; "" when the movie has none or tags.csv is absent. A tag row naming
 * an unknown movieId or a malformed one is an error naming the row. */
static rk_status write_items(const char *in_dir, const char *out_dir, const movie *mv, size_t n_mv, rk_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tags.csv", in_dir);
    char *tbuf = NULL, *out = NULL;
    size_t tlen = 0, nt = 0, cap_t = 0, olen = 0, ocap = 0;
    tag_ref *tags = NULL;
    rk_status s = RK_OK;
    if (!rk_path_exists(path))
        rk_info("movielens: %s not found: items.csv has empty tags (content text = title and genres only)", path);
    if (rk_path_exists(path)) {
        if ((s = rk_read_file(path, &tbuf, &tlen, err))) return s;
        static const char *const cols[] = {"userId", "movieId", "tag", "timestamp"};
        csv_reader r = {"tags.csv", cols, 4, tbuf, tbuf + tlen, 0, ',', 1};
        if ((s = rk_dsv_header(&r, err))) goto done;
        csv_field f[ML_MAX_FIELDS];
        int nf, got;
        while ((got = csv_next(&r, f, &nf, err)) == 1) {
            if (nf != 4) {
                s = rk_fail(err, RK_EFORMAT, "tags.csv row %zu: expected 4 fields, got %d", r.row, nf);
                goto done;
            }
            int64_t id;
            const movie *m;
            if (parse_int(&f[1], 0, &id) || !(m = find_movie(mv, n_mv, id))) {
                s = bad_field(err, &r, "movieId", "expected a movieId of movies.csv", &f[1]);
                goto done;
            }
            if (nt == cap_t) {
                cap_t = cap_t ? 2 * cap_t : 4096;
                tag_ref *g = rk_realloc(tags, cap_t * sizeof *tags);
                if (!g) {
                    s = rk_fail(err, RK_ENOMEM, "tags.csv: out of memory");
                    goto done;
                }
                tags = g;
            }
            tags[nt++] = (tag_ref){(uint32_t)(m - mv), r.row, f[2].s};
        }
        if (got < 0) {
            s = (rk_status)got;
            goto done;
        }
        qsort(tags, nt, sizeof *tags, cmp_tag_ref);
    }
    if ((s = csv_put(&out, &olen, &ocap, "movieId", 0, err)) || (s = csv_put(&out, &olen, &ocap, "title", 0, err)) ||
        (s = csv_put(&out, &olen, &ocap, "genres", 0, err)) || (s = csv_put(&out, &olen, &ocap, "tags", 1, err)))
        goto done;
    size_t t = 0;
    char *joined = NULL;
    size_t jcap = 0;
    for (size_t i = 0; i < n_mv && s == RK_OK; i++) {
        size_t jl = 0;
        size_t t0 = t;
        for (; t < nt && tags[t].midx == i; t++) {
            int dup = 0;
            for (size_t u = t0; u < t && !dup; u++) dup = !strcasecmp(tags[u].tag, tags[t].tag);
            if (dup || !tags[t].tag[0]) continue;
            size_t need = jl + strlen(tags[t].tag) + 3;
            if (need > jcap) {
                jcap = need * 2;
                char *g = rk_realloc(joined, jcap);
                if (!g) {
                    s = rk_fail(err, RK_ENOMEM, "items.csv: out of memory");
                    break;
                }
                joined = g;
            }
            jl += (size_t)sprintf(joined + jl, "%s%s", jl ? ", " : "", tags[t].tag);
        }
        if (s) break;
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)mv[i].id);
        if ((s = csv_put(&out, &olen, &ocap, id, 0, err)) || (s = csv_put(&out, &olen, &ocap, mv[i].title, 0, err)) ||
            (s = csv_put(&out, &olen, &ocap, mv[i].genres, 0, err)) ||
            (s = csv_put(&out, &olen, &ocap, jl ? joined : "", 1, err)))
            break;
    }
    rk_free(joined);
    if (s == RK_OK) s = write_atomic(out_dir, "items.csv", out, olen, err);
done:
    rk_free(out);
    rk_free(tags);
    rk_free(tbuf);
    return s;
}

rk_status rk_data_movielens(const char *in_dir, const char *out_dir, rk_err *err) {
    if (!in_dir || !out_dir) return rk_fail(err, RK_EINVAL, "movielens: NULL directory");
    double t0 = rk_now();
    rk_status s;
    char path[4096];
    char *mbuf = NULL, *rbuf = NULL;
    size_t mlen = 0, rlen = 0, n_mv = 0, n = 0;
    movie *mv = NULL;
    event *ev = NULL;
    upos *byuser = NULL;
    uint8_t *user_flags = NULL, *item_flags = NULL;

    if ((size_t)snprintf(path, sizeof path, "%s/movies.csv", in_dir) >= sizeof path)
        return rk_fail(err, RK_EINVAL, "%s: input path too long", in_dir);
    if ((s = rk_read_file(path, &mbuf, &mlen, err)) != RK_OK) goto done;
    /* Hash the sources (for schema.json) before the CSV parse rewrites them in place. */
    uint64_t movies_h = rk_hash64(mbuf, mlen, 0);
    if ((s = parse_movies(mbuf, mlen, &mv, &n_mv, err)) != RK_OK) goto done;

    snprintf(path, sizeof path, "%s/ratings.csv", in_dir);
    if ((s = rk_read_file(path, &rbuf, &rlen, err)) != RK_OK) goto done;
    uint64_t ratings_h = rk_hash64(rbuf, rlen, 0);
    if ((s = parse_ratings(rbuf, rlen, mv, n_mv, &ev, &n, err)) != RK_OK) goto done;

    qsort(ev, n, sizeof *ev, cmp_event);

    /* Per-user lists in global order, then the history prefix per event. */
    byuser = rk_malloc(n * sizeof *byuser);
    if (!byuser) {
        s = rk_fail(err, RK_ENOMEM, "movielens: out of memory grouping %zu events", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) byuser[i] = (upos){ev[i].user, (uint32_t)i};
    qsort(byuser, n, sizeof *byuser, cmp_upos);
    size_t n_users = 0;
    for (size_t a = 0; a < n; n_users++) {
        size_t b = a;
        while (b < n && byuser[b].user == byuser[a].user) b++;
        size_t j = a; /* byuser[a..j) have a timestamp < the current one */
        for (size_t k = a; k < b; k++) {
            event *e = &ev[byuser[k].pos];
            while (j < k && ev[byuser[j].pos].ts < e->ts) j++;
            size_t hl = j - a;
            e->hist_end = (uint32_t)j;
            e->hist_len = (uint8_t)(hl < ML_HISTORY_MAX ? hl : ML_HISTORY_MAX);
            e->uidx = (uint32_t)n_users;
        }
        a = b;
    }

    size_t rows[3] = {0}, pos[3] = {0};
    if ((s = write_splits(out_dir, ev, n, mv, byuser, rows, pos, err)) != RK_OK) goto done;
    size_t n_train = rows[0];
    split_info sp[3] = {{"train", "train.tsv", 0, rows[0], pos[0]},
                        {"valid", "valid.tsv", rows[0], rows[0] + rows[1], pos[1]},
                        {"test", "test.tsv", rows[0] + rows[1], n, pos[2]}};
    size_t n_pos = pos[0] + pos[1] + pos[2];

    /* Cold start in test: bit 1 = seen in train, bit 2 = seen in test. */
    user_flags = rk_calloc(n_users, 1);
    item_flags = rk_calloc(n_mv, 1);
    if (!user_flags || !item_flags) {
        s = rk_fail(err, RK_ENOMEM, "movielens: out of memory");
        goto done;
    }
    for (size_t k = 0; k < n; k++) {
        uint8_t bit = k < n_train ? 1 : k >= sp[2].lo ? 2 : 0;
        user_flags[ev[k].uidx] |= bit;
        item_flags[ev[k].midx] |= bit;
    }
    cold_stats cs = {.users = n_users};
    for (size_t u = 0; u < n_users; u++)
        if (user_flags[u] & 2) cs.test_users++, cs.cold_users += !(user_flags[u] & 1);
    for (size_t m = 0; m < n_mv; m++)
        if (item_flags[m] & 2) cs.test_items++, cs.cold_items += !(item_flags[m] & 1);
    for (size_t k = sp[2].lo; k < n; k++) cs.cold_item_rows += !(item_flags[ev[k].midx] & 1);

    if ((s = write_items(in_dir, out_dir, mv, n_mv, err)) != RK_OK) goto done;
    if ((s = write_schema(out_dir, in_dir, sp, ev, n, n_pos, n_mv, &cs, rlen, ratings_h, mlen,
                          movies_h, err)) != RK_OK)
        goto done;
    if ((s = rk_fsync_dir(out_dir, err)) != RK_OK) goto done;

    rk_info("movielens: %zu ratings of %zu movies by %zu users, positive rate %.4f; "
            "train %zu / valid %zu / test %zu; test users unseen in train: %zu of %zu; "
            "test items unseen in train: %zu of %zu (%.1f%%, %.2f%% of test rows); %.2f s -> %s",
            n, n_mv, n_users, (double)n_pos / (double)n, sp[0].hi - sp[0].lo,
            sp[1].hi - sp[1].lo, sp[2].hi - sp[2].lo, cs.cold_users, cs.test_users,
            cs.cold_items, cs.test_items,
            cs.test_items ? 100.0 * (double)cs.cold_items / (double)cs.test_items : 0.0,
            sp[2].hi > sp[2].lo
                ? 100.0 * (double)cs.cold_item_rows / (double)(sp[2].hi - sp[2].lo)
                : 0.0,
            rk_now() - t0, out_dir);
    s = RK_OK;
done:
    rk_free(user_flags);
    rk_free(item_flags);
    rk_free(byuser);
    rk_free(ev);
    rk_free(mv);
    rk_free(rbuf);
    rk_free(mbuf);
    return s;
}
