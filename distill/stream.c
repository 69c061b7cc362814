/*
 * distill/stream.c — a time-ordered TSV as a stream of chunks with
 * verticals (distill.h). Chunks are equal-count in file order; a boundary
 * moves forward past rows of the same timestamp. Verticals come from the
 * `genres` column and a genre-family spec; a row may be in several.
 */
#include "distill.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLS 256
#define MAX_GENRES 32

typedef struct {
    int n;
    char genre[MAX_GENRES][32];
    int vert[MAX_GENRES];
} genre_map;

static rk_status parse_spec(const char *spec, rk_stream *s, genre_map *gm, rk_err *err) {
    char buf[1024];
    if (strlen(spec) >= sizeof buf) return rk_fail(err, RK_EINVAL, "verticals: spec longer than %zu bytes", sizeof buf - 1);
    strcpy(buf, spec);
    s->n_verticals = 0;
    gm->n = 0;
    /* strsep, not strtok: an empty entry (";;", a trailing ';') or genre
     * (",,") is refused, never skipped */
    char *rest = buf, *part;
    for (int k = 1; (part = strsep(&rest, ";")); k++) {
        if (!*part) return rk_fail(err, RK_EINVAL, "verticals: entry %d is empty (';' twice, or at an end)", k);
        char *colon = strchr(part, ':');
        if (!colon || colon == part)
            return rk_fail(err, RK_EINVAL, "verticals: '%.64s' is not NAME:GENRE,GENRE", part);
        if (s->n_verticals == RK_EXFM_MAX_VERTICALS)
            return rk_fail(err, RK_EINVAL, "verticals: more than %d", RK_EXFM_MAX_VERTICALS);
        *colon = 0;
        /* a name becomes a path component (checkpoints/MODE/NAME) and a JSON
         * string: keep it to a safe alphabet */
        size_t nl = strlen(part);
        if (nl > RK_EXFM_VNAME_MAX)
            return rk_fail(err, RK_EINVAL, "verticals: name '%.64s' is longer than %d characters", part, RK_EXFM_VNAME_MAX);
        if (strspn(part, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != nl)
            return rk_fail(err, RK_EINVAL, "verticals: name '%.64s' may contain only letters, digits, '_' and '-'", part);
        int v = s->n_verticals++;
        strcpy(s->vname[v], part);
        for (int u = 0; u < v; u++)
            if (!strcmp(s->vname[u], part)) return rk_fail(err, RK_EINVAL, "verticals: '%s' appears twice", part);
        int ng = 0;
        char *grest = colon[1] ? colon + 1 : NULL, *g;
        while ((g = strsep(&grest, ","))) {
            if (!*g) return rk_fail(err, RK_EINVAL, "verticals: '%s' has an empty genre (',' twice, or at an end)", part);
            if (gm->n == MAX_GENRES) return rk_fail(err, RK_EINVAL, "verticals: more than %d genres", MAX_GENRES);
            if (strlen(g) >= sizeof gm->genre[0]) return rk_fail(err, RK_EINVAL, "verticals: genre '%.64s' too long", g);
            strcpy(gm->genre[gm->n], g);
            gm->vert[gm->n++] = v;
            ng++;
        }
        if (!ng) return rk_fail(err, RK_EINVAL, "verticals: '%s' has no genre", part);
    }
    if (!s->n_verticals) return rk_fail(err, RK_EINVAL, "verticals: empty spec");
    return RK_OK;
}

rk_status rk_stream_check_spec(const char *spec, rk_err *err) {
    rk_stream s;
    genre_map gm;
    memset(&s, 0, sizeof s);
    return parse_spec(spec, &s, &gm, err);
}

void rk_stream_free(rk_stream *s) {
    rk_free(s->chunk_start);
    rk_free(s->vmask);
    memset(s, 0, sizeof *s);
}

rk_status rk_stream_load(const char *path, int n_chunks, const char *spec, rk_stream *out, rk_err *err) {
    memset(out, 0, sizeof *out);
    if (n_chunks < 1) return rk_fail(err, RK_EINVAL, "stream: chunks must be >= 1, got %d", n_chunks);
    genre_map gm;
    rk_status s = parse_spec(spec, out, &gm, err);
    if (s) return s;
    char *text;
    size_t len;
    if ((s = rk_read_text(path, &text, &len, err))) return s;
    char *cur = text, *line = rk_next_line(&cur), *fields[MAX_COLS];
    int64_t *ts = NULL;
    size_t cap = 0;
    int n = 0, c_ts = -1, c_g = -1;
    if (!line) {
        s = rk_fail(err, RK_EFORMAT, "%s: empty file", path);
        goto done;
    }
    int nc = rk_split_tabs(line, fields, MAX_COLS);
    for (int i = 0; i < nc && i < MAX_COLS; i++) {
        if (!strcmp(fields[i], "timestamp")) c_ts = i;
        if (!strcmp(fields[i], "genres")) c_g = i;
    }
    if ((c_ts < 0 || c_g < 0) && nc > MAX_COLS) {
        s = rk_fail(err, RK_EFORMAT, "%s row 1: %d columns in the header, more than the %d this reader handles (no '%s' among the first %d)",
                    path, nc, MAX_COLS, c_ts < 0 ? "timestamp" : "genres", MAX_COLS);
        goto done;
    }
    if (c_ts < 0 || c_g < 0) {
        s = rk_fail(err, RK_EFORMAT, "%s row 1: no column '%s' in the header", path, c_ts < 0 ? "timestamp" : "genres");
        goto done;
    }
    int row = 1; /* file row, header = 1 */
    while ((line = rk_next_line(&cur))) {
        row++;
        if (!*line) continue; /* rk_dataset_load skips blank lines too */
        int k = rk_split_tabs(line, fields, MAX_COLS);
        if (k <= c_ts || k <= c_g) {
            s = rk_fail(err, RK_EFORMAT, "%s row %d: %d columns, the header has %d", path, row, k, nc);
            goto done;
        }
        if ((size_t)n == cap) {
            cap = cap ? 2 * cap : 4096;
            int64_t *t2 = rk_realloc(ts, cap * sizeof *ts);
            uint8_t *m2 = rk_realloc(out->vmask, cap);
            if (m2) out->vmask = m2;
            if (t2) ts = t2;
            if (!t2 || !m2) {
                s = rk_fail(err, RK_ENOMEM, "stream: out of memory");
                goto done;
            }
        }
        char *end;
        errno = 0;
        long long t = strtoll(fields[c_ts], &end, 10);
        if (end != fields[c_ts] && !*end && errno == ERANGE) {
            s = rk_fail(err, RK_EFORMAT, "%s row %d, column timestamp: '%.32s' overflows a 64-bit integer", path, row, fields[c_ts]);
            goto done;
        }
        if (end == fields[c_ts] || *end) {
            s = rk_fail(err, RK_EFORMAT, "%s row %d, column timestamp: expected an integer, got '%.32s'", path, row, fields[c_ts]);
            goto done;
        }
        if (n && t < ts[n - 1]) {
            s = rk_fail(err, RK_EFORMAT, "%s row %d, column timestamp: %lld is before the previous row's %lld (the stream must be time-ordered)",
                        path, row, t, (long long)ts[n - 1]);
            goto done;
        }
        ts[n] = t;
        uint8_t mask = 0;
        char *save = NULL;
        for (char *g = strtok_r(fields[c_g], "|", &save); g; g = strtok_r(NULL, "|", &save))
            for (int j = 0; j < gm.n; j++)
                if (!strcmp(g, gm.genre[j])) mask |= (uint8_t)(1u << gm.vert[j]);
        out->vmask[n++] = mask;
    }
    if (n < n_chunks) {
        s = rk_fail(err, RK_EINVAL, "%s: %d rows, fewer than the %d chunks asked for", path, n, n_chunks);
        goto done;
    }
    out->n_rows = n;
    out->n_chunks = n_chunks;
    out->chunk_start = rk_malloc((size_t)(n_chunks + 1) * sizeof(int));
    if (!out->chunk_start) {
        s = rk_fail(err, RK_ENOMEM, "stream: out of memory");
        goto done;
    }
    out->chunk_start[0] = 0;
    for (int c = 1; c < n_chunks; c++) {
        int b = (int)((int64_t)n * c / n_chunks);
        if (b < out->chunk_start[c - 1]) b = out->chunk_start[c - 1];
        while (b > 0 && b < n && ts[b] == ts[b - 1]) b++;
        out->chunk_start[c] = b;
    }
    out->chunk_start[n_chunks] = n;
    for (int c = 0; c < n_chunks; c++)
        if (out->chunk_start[c + 1] <= out->chunk_start[c]) {
            s = rk_fail(err, RK_EINVAL, "%s: chunk %d is empty (too many chunks for %d rows with these timestamps)", path, c, n);
            goto done;
        }
done:
    rk_free(ts);
    rk_free(text);
    if (s) rk_stream_free(out);
    return s;
}

int rk_stream_rows(const rk_stream *s, int c, int v, uint32_t *ids, int cap) {
    int k = 0;
    for (int r = s->chunk_start[c]; r < s->chunk_start[c + 1] && k < cap; r++)
        if (v < 0 ? s->vmask[r] != 0 : (s->vmask[r] >> v) & 1) ids[k++] = (uint32_t)r;
    return k;
}
