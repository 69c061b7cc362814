/*
 * examples/score.c — score TSV rows in-process with librankd (rank.h).
 *
 *   cc score.c $(pkg-config --cflags --libs rankd) -o score
 *   ./score BUNDLE < test.tsv > pctr.tsv
 *
 * The header line names the columns; a column named like a model feature
 * feeds it ('|' between a sparse feature's values; an empty cell leaves it
 * unset). Consecutive rows with the same user-side cells are one request:
 * the user once, each row a candidate. Prints "pctr", then one per row;
 * stops at the first bad line (exit 1, the line number on stderr).
 */
#define _POSIX_C_SOURCE 200809L
#include <rank.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXC = 64, MAXN = 256, MAXV = 256 };
static rankd_model *m;
static rankd_batch *b;
static int feat[MAXC], ncol;  /* column -> feature index or -1 */
static char *line[MAXN], *cell[MAXN + 1][MAXC]; /* + the row that starts the next request */
static long lineno0;          /* file line of cell[0] (the header is line 1) */

static int split(char *s, char **out) { /* tab-separated cells of s, in place; -1: over MAXC */
    int n = 0;
    char *p = s;
    s[strcspn(s, "\r\n")] = 0;
    for (; p && n < MAXC; n++) {
        out[n] = p;
        if ((p = strchr(p, '\t'))) *p++ = 0;
    }
    return p ? -1 : n;
}

static int user_col(int c) { return feat[c] >= 0 && rankd_feature_side(m, feat[c]) == RANKD_SIDE_USER; }

/* Set column c of row i (-1: the user, from row 0) into the batch. */
static rankd_status set(int i, int c, rankd_error *e) {
    const char *name = rankd_feature_name(m, feat[c]);
    char *v = cell[i < 0 ? 0 : i][c], *end;
    if (!*v) return RANKD_OK;
    if (rankd_feature_kind(m, feat[c]) == RANKD_KIND_DENSE) {
        double x = strtod(v, &end);
        if (*end || end == v) {
            snprintf(e->message, sizeof e->message, "column '%s': '%.64s' is not a number", name, v);
            return e->code = RANKD_EINVAL;
        }
        return i < 0 ? rankd_batch_user_dense(b, name, x, e) : rankd_batch_candidate_dense(b, i, name, x, e);
    }
    const char *vals[MAXV];
    size_t n = 0;
    char *p = v;
    for (; p && n < MAXV; n++) {
        vals[n] = p;
        if ((p = strchr(p, '|'))) *p++ = 0;
    }
    if (p) {
        snprintf(e->message, sizeof e->message, "column '%s': more than %d values", name, MAXV);
        return e->code = RANKD_ETOOBIG;
    }
    return i < 0 ? rankd_batch_user_sparse(b, name, vals, n, e) : rankd_batch_candidate_sparse(b, i, name, vals, n, e);
}

static int flush(int n) { /* score rows 0..n-1 as one request and print them */
    rankd_error e;
    float p[MAXN];
    rankd_status st = rankd_batch_begin(b, n, &e);
    int bad = 0; /* the row of the failed set */
    for (int c = 0; c < ncol && !st; c++)
        for (int i = user_col(c) ? -1 : 0; feat[c] >= 0 && i < (user_col(c) ? 0 : n) && !st; i++)
            st = set(i, c, &e), bad = i < 0 ? 0 : i;
    if (st) fprintf(stderr, "score: line %ld: %s\n", lineno0 + bad, e.message);
    else if ((st = rankd_batch_score(b, p, &e))) fprintf(stderr, "score: lines %ld-%ld: %s\n", lineno0, lineno0 + n - 1, e.message);
    for (int i = 0; i < n; i++) {
        if (!st) printf("%.9g\n", p[i]);
        free(line[i]);
    }
    return st != RANKD_OK;
}

int main(int argc, char **argv) {
    rankd_error e;
    char *hdr = NULL, *names[MAXC];
    size_t cap = 0;
    if (argc != 2) return fprintf(stderr, "usage: score BUNDLE < rows.tsv\n"), 2;
    if (rankd_model_open(argv[1], NULL, &m, &e) || rankd_batch_create(m, &b, &e))
        return fprintf(stderr, "score: %s\n", e.message), 1;
    if (getline(&hdr, &cap, stdin) < 0) return fprintf(stderr, "score: no header line\n"), 1;
    if ((ncol = split(hdr, names)) < 0) return fprintf(stderr, "score: line 1: more than %d columns\n", MAXC), 1;
    for (int c = 0; c < ncol; c++) feat[c] = rankd_model_find_feature(m, names[c]);
    printf("pctr\n");
    int n = 0, rc = 0;
    long lineno = 1; /* the last line read */
    lineno0 = 2;
    while (!rc) {
        char *s = NULL;
        size_t sc = 0;
        int eof = getline(&s, &sc, stdin) < 0;
        if (!eof && split(s, cell[n]) != ncol) {
            fprintf(stderr, "score: line %ld: not %d tab-separated cells\n", lineno + 1, ncol);
            for (int i = 0; i < n; i++) free(line[i]);
            rc = 1;
            eof = 1;
        }
        int same = !eof && n < MAXN;
        for (int c = 0; c < ncol && same && n; c++) same = !user_col(c) || !strcmp(cell[n][c], cell[0][c]);
        if (!same && n && !rc) { /* the new row starts the next request */
            char *keep[MAXC];
            if (!eof) memcpy(keep, cell[n], sizeof keep);
            rc = flush(n);
            lineno0 += n;
            n = 0;
            if (!eof) memcpy(cell[0], keep, sizeof keep);
        }
        if (eof || rc) {
            free(s);
            break;
        }
        line[n++] = s;
        lineno++;
    }
    free(hdr);
    rankd_batch_destroy(b);
    rankd_model_close(m);
    return rc;
}
