/*
 * core/dsv.c — the project's one reader of delimiter-separated records
 * (CSV per RFC 4180, TSV logs), over a buffer held in memory: fields are
 * split and unquoted in place, so reading allocates nothing. Errors name the
 * file, the record (row, 1-based) and the column (its name when known).
 * Used by `rank data movielens` (MovieLens CSVs) and `rank data log` (any
 * delimited log: Criteo's TSV, Avazu's CSV).
 */
#include "core.h"

#include <stdio.h>
#include <string.h>

const char *rk_dsv_col_name(const rk_dsv_reader *r, int k, char tmp[16]) {
    if (k < r->ncols && r->cols) return r->cols[k];
    snprintf(tmp, 16, "%d", k + 1);
    return tmp;
}

static int at_eol(const char *p, const char *end) {
    return p >= end || *p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n');
}

void rk_dsv_skip_bom(rk_dsv_reader *r) {
    if (r->p + 3 <= r->end && !memcmp(r->p, "\xEF\xBB\xBF", 3)) r->p += 3;
}

/* A NUL byte would end the field early for every string reader downstream. */
static rk_status nul_byte(rk_dsv_reader *r, int k, rk_err *err) {
    char tmp[16];
    return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: NUL byte in the field", r->file, r->row,
                   rk_dsv_col_name(r, k, tmp));
}

/* One quoted field starting at *pp ('"'): unescaped in place; *wp gets the
 * end of the unescaped text. */
static rk_status quoted(rk_dsv_reader *r, int k, char **pp, char **wp, rk_err *err) {
    char *p = *pp + 1, *w = *pp, *end = r->end, tmp[16];
    for (;;) {
        if (p >= end)
            return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: unterminated quoted field", r->file, r->row,
                           rk_dsv_col_name(r, k, tmp));
        if (*p == '"') {
            if (p + 1 < end && p[1] == '"') {
                *w++ = '"';
                p += 2;
                continue;
            }
            p++;
            break;
        }
        if (!*p) return nul_byte(r, k, err);
        *w++ = *p++;
    }
    if (!(at_eol(p, end) || *p == r->delim))
        return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: unexpected '%c' after a closing quote", r->file,
                       r->row, rk_dsv_col_name(r, k, tmp), *p);
    *pp = p;
    *wp = w;
    return RK_OK;
}

int rk_dsv_next(rk_dsv_reader *r, rk_dsv_field *f, int max, int *nf, rk_err *err) {
    if (r->p >= r->end) return 0;
    r->row++;
    char *p = r->p, *end = r->end;
    int k = 0;
    for (;;) {
        char *start = p, *w = p, tmp[16];
        if (r->quotes && p < end && *p == '"') {
            rk_status s = quoted(r, k, &p, &w, err);
            if (s) return s;
        } else {
            while (!at_eol(p, end) && *p != r->delim) {
                if (r->quotes && *p == '"')
                    return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: '\"' inside an unquoted field", r->file,
                                   r->row, rk_dsv_col_name(r, k, tmp));
                if (!*p) return nul_byte(r, k, err);
                p++;
            }
            w = p;
        }
        char d = p < end ? *p : 0;
        if (k < max) {
            f[k].s = start;
            f[k].len = (size_t)(w - start);
        }
        k++;
        if (d == r->delim && p < end) {
            p++;
            *w = 0;
            continue;
        }
        if (d == '\r') p += 2;
        else if (d == '\n') p += 1;
        *w = 0; /* w <= the separator just consumed, or end (the NUL) */
        break;
    }
    r->p = p;
    *nf = k;
    return 1;
}

size_t rk_dsv_count(const char *p, const char *end, char delim, int quotes) {
    (void)delim;
    size_t n = 0;
    int in_q = 0, any = 0;
    for (; p < end; p++) {
        if (quotes && *p == '"') in_q = !in_q; /* "" inside quotes toggles twice: no change */
        if (*p == '\n' && !in_q) {
            n++;
            any = 0;
        } else {
            any = 1;
        }
    }
    return n + (size_t)any;
}

rk_status rk_dsv_header(rk_dsv_reader *r, rk_err *err) {
    rk_dsv_field f[32];
    int nf = 0;
    RK_ASSERT(r->ncols > 0 && r->ncols <= 32);
    rk_dsv_skip_bom(r);
    int got = rk_dsv_next(r, f, r->ncols, &nf, err);
    if (got < 0) return (rk_status)got;
    if (got == 0) return rk_fail(err, RK_EFORMAT, "%s: empty file, expected a header row", r->file);
    for (int k = 0; k < r->ncols && k < nf; k++)
        if (strcmp(f[k].s, r->cols[k]))
            return rk_fail(err, RK_EFORMAT, "%s row 1, column %d: bad header: expected '%s', got '%.40s'", r->file, k + 1,
                           r->cols[k], f[k].s);
    if (nf != r->ncols)
        return rk_fail(err, RK_EFORMAT, "%s row 1: bad header: expected %d columns, got %d", r->file, r->ncols, nf);
    return RK_OK;
}
