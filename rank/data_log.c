/*
 * rank/data_log.c — `rank data log`: any delimited log (CSV or TSV, with or
 * without a header) into the train/valid/test TSVs `rank train` reads, by a
 * small schema file (JSON) that gives each column a role and a transform.
 *
 * Schema (unknown keys are errors):
 *   "delimiter": "\t" or "," (any one byte); "quotes": RFC 4180 quoting
 *   (default true for ",", false otherwise); "header": whether row 1 names
 *   the columns; "columns": the names when there is no header (with one, an
 *   optional check of it); "label": the label column (0/1, or 0.0/1.0);
 *   "missing": the tokens that mean "no value" (default [""]);
 *   "features": [{"column", "name" (default: the column), "kind": "sparse" or
 *   "dense", "transform", "separator"}], where
 *     sparse transform "none" (the value itself, or with "separator" the
 *       values of a multi-valued field) or "log_squared" (an integer v > 2
 *       becomes floor(ln(v)^2), others stay as they are: the bucketing of
 *       the Criteo winners, Juan et al. 2016);
 *     dense transform "none" or "log1p" (negatives clamped to 0 first, as
 *       DLRM does for Criteo); standardization is rank train's own (mean and
 *       std of train.tsv, kept in model.json);
 *   "crosses": [{"name", "columns": [a, b, ...]}]: a sparse feature whose
 *     value joins the columns' values with 0x1F (hashed by the model like
 *     any value); missing when any part is;
 *   "split": {"method": "ordered" (file order, the log's time order: the
 *     first 1 - valid - test of the rows train, then valid, then test) or
 *     "random" (each row by a seeded draw), "valid", "test" (fractions),
 *     "seed"}.
 * Output: train.tsv, valid.tsv, test.tsv (header: label, then the features
 * and crosses in schema order; '|' between multiple values; missing = empty)
 * and schema.json (the input schema, the row counts and positive rates).
 * Each file is written to NAME.tmp, fsynced and renamed in. Every error
 * names the file, row and column. The input is read whole into memory.
 *
 * The engine (rk_data_log_convert: schema roles, the split, the TSV writer)
 * is shared with the MovieLens preset (rank/data_movielens.c), which joins
 * and derives its columns into an in-memory log and declares its schema.
 */
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { T_NONE = 0, T_LOG1P, T_LOG_SQUARED } xform;

typedef struct {
    char name[RK_NAME_MAX];
    int col;             /* input column */
    int dense;
    xform t;
    char sep;            /* multi-valued separator, 0 = single */
    int n_parts, *parts; /* crosses: input columns */
} out_col;

typedef struct {
    char delim;
    int quotes, header;
    int n_cols;
    char **cols;         /* [n_cols] names (owned) */
    int label;
    json_t *missing;     /* array of strings (borrowed from root) */
    int n_out;
    out_col *out;        /* [n_out] */
    int random;
    double valid, test;
    uint64_t seed;
} log_schema;

static void schema_free(log_schema *s) {
    for (int i = 0; s->cols && i < s->n_cols; i++) rk_free(s->cols[i]);
    rk_free(s->cols);
    for (int i = 0; s->out && i < s->n_out; i++) rk_free(s->out[i].parts);
    rk_free(s->out);
    memset(s, 0, sizeof *s);
}

static int col_index(const log_schema *s, const char *name) {
    for (int i = 0; i < s->n_cols; i++)
        if (!strcmp(s->cols[i], name)) return i;
    return -1;
}

static rk_status check_keys(json_t *o, const char *where, const char *const *keys, rk_err *err) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int ok = 0;
        (void)v;
        for (int i = 0; keys[i]; i++) ok |= !strcmp(k, keys[i]);
        if (!ok) return rk_fail(err, RK_EINVAL, "%s: unknown key '%s'", where, k);
    }
    return RK_OK;
}

/* The keys of o that, when given, must be strings: str_of falls back to its
 * default on any other type, which once turned "kind": 7 into a sparse
 * feature and "delimiter": 44 into a tab without a word. */
static rk_status check_strings(json_t *o, const char *where, const char *const *keys, rk_err *err) {
    for (int i = 0; keys[i]; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (v && !json_is_string(v)) /* "schema label", "schema features[0].kind" as the other errors */
            return rk_fail(err, RK_EINVAL, "%s%s%s: expected a string", where, strcmp(where, "schema") ? "." : " ", keys[i]);
    }
    return RK_OK;
}

static const char *str_of(json_t *o, const char *key, const char *dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

/* Column names: from "columns", or the header record of the input. */
static rk_status set_columns(log_schema *s, json_t *names, rk_dsv_field *hdr, int n, rk_err *err) {
    s->n_cols = n;
    if (!(s->cols = rk_calloc((size_t)n + 1, sizeof *s->cols))) return rk_fail(err, RK_ENOMEM, "schema: out of memory");
    for (int i = 0; i < n; i++) {
        const char *nm = hdr ? hdr[i].s : json_string_value(json_array_get(names, (size_t)i));
        if (!nm) return rk_fail(err, RK_EINVAL, "schema columns[%d]: expected a string", i);
        for (int j = 0; j < i; j++)
            if (!strcmp(s->cols[j], nm))
                return rk_fail(err, RK_EINVAL, "schema columns: %s names column %d '%.40s' twice (also column %d)",
                               hdr ? "the input's header" : "the schema", i + 1, nm, j + 1);
        if (!(s->cols[i] = rk_strdup(nm))) return rk_fail(err, RK_ENOMEM, "schema: out of memory");
    }
    return RK_OK;
}

static rk_status parse_feature(log_schema *s, json_t *fo, int i, out_col *oc, rk_err *err) {
    static const char *const keys[] = {"column", "name", "kind", "transform", "separator", NULL};
    char where[48];
    snprintf(where, sizeof where, "schema features[%d]", i);
    rk_status st = json_is_object(fo) ? check_keys(fo, where, keys, err) : rk_fail(err, RK_EINVAL, "%s: expected an object", where);
    if (st == RK_OK) st = check_strings(fo, where, keys, err);
    if (st) return st;
    const char *col = str_of(fo, "column", NULL), *kind = str_of(fo, "kind", "sparse"), *t = str_of(fo, "transform", "none");
    const char *nm = str_of(fo, "name", col), *sep = str_of(fo, "separator", "");
    if (!col || (oc->col = col_index(s, col)) < 0)
        return rk_fail(err, RK_EINVAL, "%s.column: '%s' is not a column of the input", where, col ? col : "(missing)");
    if (oc->col == s->label) return rk_fail(err, RK_EINVAL, "%s.column: '%s' is the label column", where, col);
    if (strlen(nm) == 0 || strlen(nm) >= RK_NAME_MAX || strpbrk(nm, "\t|\n"))
        return rk_fail(err, RK_EINVAL, "%s.name: '%s' must be 1..%d characters without tab or '|'", where, nm, RK_NAME_MAX - 1);
    snprintf(oc->name, sizeof oc->name, "%s", nm);
    if (strcmp(kind, "sparse") && strcmp(kind, "dense"))
        return rk_fail(err, RK_EINVAL, "%s.kind: '%s' is not sparse or dense", where, kind);
    oc->dense = !strcmp(kind, "dense");
    if (!strcmp(t, "none")) oc->t = T_NONE;
    else if (!strcmp(t, "log1p") && oc->dense) oc->t = T_LOG1P;
    else if (!strcmp(t, "log_squared") && !oc->dense) oc->t = T_LOG_SQUARED;
    else
        return rk_fail(err, RK_EINVAL, "%s.transform: '%s' does not apply to a %s feature (sparse: none, log_squared; dense: none, log1p)",
                       where, t, kind);
    if (strlen(sep) > 1 || (sep[0] && (oc->dense || oc->t != T_NONE)))
        return rk_fail(err, RK_EINVAL, "%s.separator: one character, for a sparse feature without transform", where);
    if (sep[0] && sep[0] == s->delim && !s->quotes) /* the field never holds it: a bag of one, silently */
        return rk_fail(err, RK_EINVAL, "%s.separator: '%s' is the delimiter, which a field holds only with quotes on", where, sep);
    oc->sep = sep[0];
    return RK_OK;
}

static rk_status parse_cross(log_schema *s, json_t *co, int i, out_col *oc, rk_err *err) {
    static const char *const keys[] = {"name", "columns", NULL};
    char where[48];
    snprintf(where, sizeof where, "schema crosses[%d]", i);
    rk_status st = json_is_object(co) ? check_keys(co, where, keys, err) : rk_fail(err, RK_EINVAL, "%s: expected an object", where);
    if (st == RK_OK) st = check_strings(co, where, (const char *const[]){"name", NULL}, err);
    if (st) return st;
    const char *nm = str_of(co, "name", "");
    json_t *cs = json_object_get(co, "columns");
    if (!nm[0] || strlen(nm) >= RK_NAME_MAX || strpbrk(nm, "\t|\n"))
        return rk_fail(err, RK_EINVAL, "%s.name: 1..%d characters without tab or '|'", where, RK_NAME_MAX - 1);
    if (!json_is_array(cs) || json_array_size(cs) < 2)
        return rk_fail(err, RK_EINVAL, "%s.columns: expected an array of at least 2 column names", where);
    snprintf(oc->name, sizeof oc->name, "%s", nm);
    oc->n_parts = (int)json_array_size(cs);
    if (!(oc->parts = rk_calloc((size_t)oc->n_parts, sizeof(int)))) return rk_fail(err, RK_ENOMEM, "schema: out of memory");
    for (int k = 0; k < oc->n_parts; k++) {
        const char *c = json_string_value(json_array_get(cs, (size_t)k));
        if (!c || (oc->parts[k] = col_index(s, c)) < 0)
            return rk_fail(err, RK_EINVAL, "%s.columns[%d]: '%s' is not a column of the input", where, k, c ? c : "(not a string)");
        if (oc->parts[k] == s->label) return rk_fail(err, RK_EINVAL, "%s.columns[%d]: '%s' is the label column", where, k, c);
        for (int j = 0; j < k; j++)
            if (oc->parts[j] == oc->parts[k])
                return rk_fail(err, RK_EINVAL, "%s.columns[%d]: '%s' is also columns[%d] (a column crossed with itself)",
                               where, k, c, j);
    }
    return RK_OK;
}

static rk_status parse_split(log_schema *s, json_t *sp, rk_err *err) {
    static const char *const keys[] = {"method", "valid", "test", "seed", NULL};
    s->valid = s->test = 0.1;
    s->seed = 1;
    if (!sp) return RK_OK;
    rk_status st = json_is_object(sp) ? check_keys(sp, "schema split", keys, err) : rk_fail(err, RK_EINVAL, "schema split: expected an object");
    if (st == RK_OK) st = check_strings(sp, "schema split", (const char *const[]){"method", NULL}, err);
    if (st) return st;
    const char *m = str_of(sp, "method", "ordered");
    if (strcmp(m, "ordered") && strcmp(m, "random"))
        return rk_fail(err, RK_EINVAL, "schema split.method: '%s' is not ordered or random", m);
    s->random = !strcmp(m, "random");
    json_t *v = json_object_get(sp, "valid"), *t = json_object_get(sp, "test"), *sd = json_object_get(sp, "seed");
    if (v) s->valid = json_number_value(v);
    if (t) s->test = json_number_value(t);
    if (sd) s->seed = (uint64_t)json_integer_value(sd);
    if ((v && !json_is_number(v)) || (t && !json_is_number(t)) || (sd && !json_is_integer(sd)) || s->valid <= 0 ||
        s->test < 0 || s->valid + s->test >= 1)
        return rk_fail(err, RK_EINVAL, "schema split: valid > 0, test >= 0 (fractions, valid + test < 1) and an integer seed");
    return RK_OK;
}

/* Roles of the schema; hdr: the input's header record (NULL without). */
static rk_status schema_roles(log_schema *s, json_t *root, rk_dsv_field *hdr, int n_hdr, rk_err *err) {
    json_t *names = json_object_get(root, "columns");
    rk_status st;
    if (!s->header && (!json_is_array(names) || json_array_size(names) == 0))
        return rk_fail(err, RK_EINVAL, "schema columns: required (an array of names) when the input has no header");
    if (s->header && names && json_array_size(names) != (size_t)n_hdr)
        return rk_fail(err, RK_EINVAL, "schema columns: %zu names, the header has %d columns", json_array_size(names), n_hdr);
    if ((st = set_columns(s, names, hdr, s->header ? n_hdr : (int)json_array_size(names), err))) return st;
    for (int i = 0; s->header && names && i < n_hdr; i++)
        if (!json_is_string(json_array_get(names, (size_t)i)) || strcmp(json_string_value(json_array_get(names, (size_t)i)), hdr[i].s))
            return rk_fail(err, RK_EINVAL, "schema columns[%d]: the header names column %d '%.40s'", i, i + 1, hdr[i].s);
    const char *lab = str_of(root, "label", NULL);
    if (!lab || (s->label = col_index(s, lab)) < 0)
        return rk_fail(err, RK_EINVAL, "schema label: '%s' is not a column of the input", lab ? lab : "(missing)");
    json_t *fs = json_object_get(root, "features"), *cs = json_object_get(root, "crosses");
    if (!json_is_array(fs) || json_array_size(fs) == 0) return rk_fail(err, RK_EINVAL, "schema features: expected a non-empty array");
    if (cs && !json_is_array(cs)) return rk_fail(err, RK_EINVAL, "schema crosses: expected an array");
    size_t nf = json_array_size(fs), nc = json_array_size(cs);
    if (!(s->out = rk_calloc(nf + nc, sizeof *s->out))) return rk_fail(err, RK_ENOMEM, "schema: out of memory");
    for (size_t i = 0; i < nf + nc; i++) {
        s->n_out = (int)i + 1;
        st = i < nf ? parse_feature(s, json_array_get(fs, i), (int)i, &s->out[i], err)
                    : parse_cross(s, json_array_get(cs, i - nf), (int)(i - nf), &s->out[i], err);
        if (st) return st;
        if (!strcmp(s->out[i].name, "label")) return rk_fail(err, RK_EINVAL, "schema: 'label' is the output's label column name");
        for (size_t j = 0; j < i; j++)
            if (!strcmp(s->out[j].name, s->out[i].name))
                return rk_fail(err, RK_EINVAL, "schema: output name '%s' appears twice", s->out[i].name);
    }
    return parse_split(s, json_object_get(root, "split"), err);
}

/* ---------------------------------------------------------------- values */

static int is_missing(const log_schema *s, const char *v) {
    size_t i;
    json_t *m;
    if (!s->missing) return !v[0];
    json_array_foreach(s->missing, i, m) if (json_is_string(m) && !strcmp(json_string_value(m), v)) return 1;
    return 0;
}

typedef struct {
    FILE *f;
    char tmp[4200], path[4096];
    size_t rows, pos;
} out_file;

/* A value the output can carry: no tab, newline or '|' (the TSV's own). */
static rk_status put_value(FILE *f, const char *v, const char *file, size_t row, const char *col, rk_err *err) {
    if (strpbrk(v, "\t\n\r|"))
        return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: value '%.40s' holds a tab, newline or '|', which the TSV output reserves",
                       file, row, col, v);
    fputs(v, f);
    return RK_OK;
}

static rk_status parse_num(const char *v, double *x, const char *file, size_t row, const char *col, rk_err *err) {
    char *end;
    errno = 0;
    *x = strtod(v, &end);
    if (end == v || *end || !isfinite(*x) || fabs(*x) > RK_DENSE_MAX_ABS)
        return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: expected a finite number within +-%g, got '%.40s'", file, row,
                       col, RK_DENSE_MAX_ABS, v);
    return RK_OK;
}

/* One output column of a record. */
static rk_status put_col(const log_schema *s, const out_col *oc, rk_dsv_field *f, FILE *o, const char *file, size_t row,
                         rk_err *err) {
    if (oc->n_parts) { /* a cross */
        for (int k = 0; k < oc->n_parts; k++)
            if (is_missing(s, f[oc->parts[k]].s)) return RK_OK;
        for (int k = 0; k < oc->n_parts; k++) {
            if (k) fputc(0x1f, o);
            rk_status st = put_value(o, f[oc->parts[k]].s, file, row, s->cols[oc->parts[k]], err);
            if (st) return st;
        }
        return RK_OK;
    }
    const char *v = f[oc->col].s, *cn = s->cols[oc->col];
    if (is_missing(s, v)) return RK_OK;
    double x;
    rk_status st;
    if (oc->t == T_LOG1P || oc->t == T_LOG_SQUARED || oc->dense) {
        if ((st = parse_num(v, &x, file, row, cn, err))) return st;
        if (oc->t == T_LOG1P) return fprintf(o, "%.9g", log1p(x < 0 ? 0 : x)), RK_OK;
        if (oc->t == T_LOG_SQUARED && x > 2) return fprintf(o, "%lld", (long long)floor(log(x) * log(x))), RK_OK;
        return put_value(o, v, file, row, cn, err);
    }
    if (!oc->sep) return put_value(o, v, file, row, cn, err);
    int first = 1; /* multi-valued: empty parts skipped */
    for (const char *p = v;;) {
        const char *q = strchr(p, oc->sep);
        size_t L = q ? (size_t)(q - p) : strlen(p);
        if (L) {
            char part[1024];
            if (L >= sizeof part)
                return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: a value of %zu bytes (at most %zu)", file, row, cn, L,
                               sizeof part - 1);
            memcpy(part, p, L);
            part[L] = 0;
            if (!first) fputc('|', o);
            if ((st = put_value(o, part, file, row, cn, err))) return st;
            first = 0;
        }
        if (!q) break;
        p = q + 1;
    }
    return RK_OK;
}

static rk_status put_record(const log_schema *s, rk_dsv_field *f, out_file *of, const char *file, size_t row, rk_err *err) {
    const char *lv = f[s->label].s;
    int y = !strcmp(lv, "1") || !strcmp(lv, "1.0");
    if (!y && strcmp(lv, "0") && strcmp(lv, "0.0"))
        return rk_fail(err, RK_EFORMAT, "%s row %zu, column %s: expected a label 0 or 1, got '%.40s'", file, row,
                       s->cols[s->label], lv);
    fputc(y ? '1' : '0', of->f);
    for (int i = 0; i < s->n_out; i++) {
        fputc('\t', of->f);
        rk_status st = put_col(s, &s->out[i], f, of->f, file, row, err);
        if (st) return st;
    }
    fputc('\n', of->f);
    of->rows++;
    of->pos += (size_t)y;
    return RK_OK;
}

/* ---------------------------------------------------------------- files */

static rk_status open_out(out_file *of, const char *dir, const char *name, const log_schema *s, rk_err *err) {
    snprintf(of->path, sizeof of->path, "%s/%s", dir, name);
    snprintf(of->tmp, sizeof of->tmp, "%s.tmp", of->path);
    if (!(of->f = fopen(of->tmp, "w"))) return rk_fail(err, RK_EIO, "%s: cannot create: %s", of->tmp, strerror(errno));
    fputs("label", of->f);
    for (int i = 0; i < s->n_out; i++) fprintf(of->f, "\t%s", s->out[i].name);
    fputc('\n', of->f);
    return RK_OK;
}

/* Flush, fsync and rename into place. */
static rk_status close_out(out_file *of, int publish, rk_err *err) {
    if (!of->f) return RK_OK;
    int bad = fflush(of->f) != 0 || fsync(fileno(of->f)) != 0;
    int e = errno;
    bad |= fclose(of->f) != 0;
    of->f = NULL;
    if (!publish) return unlink(of->tmp), RK_OK;
    if (bad || rename(of->tmp, of->path) != 0) {
        unlink(of->tmp);
        return rk_fail(err, RK_EIO, "%s: cannot write: %s", of->path, strerror(bad ? e : errno));
    }
    return RK_OK;
}

static rk_status write_schema(const char *dir, json_t *root, const size_t *rows_of, const size_t *pos_of, rk_err *err) {
    static const char *const names[3] = {"train", "valid", "test"};
    json_t *o = json_deep_copy(root), *rows = json_object();
    for (int i = 0; i < 3; i++)
        json_object_set_new(rows, names[i], json_pack("{s:I,s:f}", "rows", (json_int_t)rows_of[i], "positive_rate",
                                                     rows_of[i] ? (double)pos_of[i] / (double)rows_of[i] : 0.0));
    json_object_set_new(o, "written", rows);
    rk_status st = rk_data_write_json(dir, "schema.json", o, err);
    json_decref(o);
    return st;
}

rk_status rk_data_write_json(const char *dir, const char *name, const json_t *o, rk_err *err) {
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return rk_fail(err, RK_EINVAL, "%s: output path too long", dir);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER), *b = NULL;
    size_t n = text ? strlen(text) : 0;
    rk_status st = text && (b = rk_malloc(n + 1)) ? RK_OK : rk_fail(err, RK_ENOMEM, "%s: out of memory", name);
    if (st == RK_OK) {
        memcpy(b, text, n);
        b[n] = '\n';
        st = rk_write_file_atomic(path, b, n + 1, err);
    }
    free(text); /* jansson's allocator */
    rk_free(b);
    return st;
}

/* ---------------------------------------------------------------- main */

static rk_status convert(log_schema *s, json_t *root, char *buf, size_t len, const char *file, const char *out_dir,
                         size_t min_train, size_t rows[3], size_t pos[3], rk_err *err) {
    rk_dsv_reader r = {file, NULL, 0, buf, buf + len, 0, s->delim, s->quotes};
    rk_dsv_skip_bom(&r);
    size_t total = rk_dsv_count(r.p, r.end, s->delim, s->quotes);
    int cap = 1, nf = 0;
    for (const char *p = r.p; p < r.end && *p != '\n'; p++) cap += *p == s->delim; /* the first record's fields, at most */
    rk_dsv_field *f = rk_malloc((size_t)cap * sizeof *f);
    out_file of[3] = {{0}};
    rk_status st = RK_OK;
    if (!f) return rk_fail(err, RK_ENOMEM, "%s: out of memory", file);
    int got = rk_dsv_next(&r, f, cap, &nf, err);
    if (got < 0) {
        st = (rk_status)got;
        goto done;
    }
    if (got == 0) {
        st = rk_fail(err, RK_EFORMAT, "%s: empty file", file);
        goto done;
    }
    if ((st = schema_roles(s, root, s->header ? f : NULL, nf, err))) goto done;
    r.cols = (const char *const *)s->cols;
    r.ncols = s->n_cols;
    int pending = !s->header; /* without a header the first record is data */
    size_t n_rec = total - (size_t)s->header, n_train = (size_t)((double)n_rec * (1 - s->valid - s->test));
    size_t n_valid = (size_t)((double)n_rec * (1 - s->test)) - n_train;
    if (n_train < min_train) {
        st = rk_fail(err, RK_EFORMAT, "%s: %zu data record%s: too few for a train split (valid %g, test %g)", file, n_rec,
                     n_rec == 1 ? "" : "s", s->valid, s->test);
        goto done;
    }
    if ((st = rk_mkdir_p(out_dir, err))) {
        rk_err_prefix(err, "output directory (--out)");
        goto done;
    }
    static const char *const files[3] = {"train.tsv", "valid.tsv", "test.tsv"};
    for (int i = 0; i < 3; i++)
        if ((st = open_out(&of[i], out_dir, files[i], s, err))) goto done;
    rk_rng rng;
    rk_rng_seed(&rng, s->seed);
    rk_progress pg;
    rk_progress_start(&pg, "convert", "rows", n_rec);
    for (size_t k = 0; pending || (got = rk_dsv_next(&r, f, cap, &nf, err)) == 1; k++, pending = 0) {
        if (nf != s->n_cols) {
            st = rk_fail(err, RK_EFORMAT, "%s row %zu: %d fields, expected %d", file, r.row, nf, s->n_cols);
            goto done;
        }
        double u = s->random ? rk_rng_uniform(&rng) : 0;
        int which = s->random ? (u < s->test ? 2 : u < s->test + s->valid ? 1 : 0) : (k < n_train ? 0 : k < n_train + n_valid ? 1 : 2);
        if ((st = put_record(s, f, &of[which], file, r.row, err))) goto done;
        rk_progress_add(&pg, 1);
    }
    if (got < 0) {
        st = (rk_status)got;
        goto done;
    }
    if (n_rec > 100000) rk_progress_finish(&pg);
    for (int i = 0; i < 3 && st == RK_OK; i++) st = close_out(&of[i], 1, err);
    for (int i = 0; i < 3; i++) rows[i] = of[i].rows, pos[i] = of[i].pos;
done:
    for (int i = 0; i < 3; i++) close_out(&of[i], 0, NULL);
    rk_free(f);
    return st;
}

/* The schema's top-level keys and the input's format (delimiter, quotes,
 * header, missing). */
static rk_status schema_top(log_schema *s, json_t *root, rk_err *err) {
    static const char *const keys[] = {"delimiter", "quotes", "header", "columns", "label", "missing", "features", "crosses",
                                       "split", NULL};
    rk_status st = json_is_object(root) ? check_keys(root, "schema", keys, err) : rk_fail(err, RK_EINVAL, "schema: expected an object");
    if (st == RK_OK) st = check_strings(root, "schema", (const char *const[]){"delimiter", "label", NULL}, err);
    if (st) return st;
    const char *d = str_of(root, "delimiter", "\t");
    json_t *q = json_object_get(root, "quotes"), *h = json_object_get(root, "header");
    s->missing = json_object_get(root, "missing");
    if (strlen(d) != 1) return rk_fail(err, RK_EINVAL, "schema delimiter: one character, e.g. \"\\t\" or \",\"");
    if ((q && !json_is_boolean(q)) || (h && !json_is_boolean(h)) || (s->missing && !json_is_array(s->missing)))
        return rk_fail(err, RK_EINVAL, "schema: quotes and header are true or false, missing an array of strings");
    for (size_t i = 0; s->missing && i < json_array_size(s->missing); i++)
        if (!json_is_string(json_array_get(s->missing, i))) return rk_fail(err, RK_EINVAL, "schema missing[%zu]: expected a string", i);
    s->delim = d[0];
    s->quotes = q ? json_is_true(q) : s->delim == ',';
    s->header = h ? json_is_true(h) : 1;
    return RK_OK;
}

rk_status rk_data_log_convert(json_t *schema, char *buf, size_t len, const char *file, const char *out_dir, size_t min_train,
                              size_t rows[3], size_t pos[3], rk_err *err) {
    log_schema s = {0};
    rk_status st = schema_top(&s, schema, err);
    if (st == RK_OK) st = convert(&s, schema, buf, len, file, out_dir, min_train, rows, pos, err);
    schema_free(&s);
    return st;
}

rk_status rk_data_log(const char *schema_path, const char *in_path, const char *out_dir, rk_err *err) {
    json_error_t je;
    json_t *root = json_load_file(schema_path, JSON_REJECT_DUPLICATES, &je);
    if (!root) return rk_fail(err, RK_EFORMAT, "%s: %s (line %d)", schema_path, je.text, je.line);
    log_schema top = {0}; /* schema errors before the input is read */
    char *buf = NULL;
    size_t len = 0, rows[3] = {0}, pos[3] = {0};
    rk_status st = schema_top(&top, root, err);
    /* an output that can never be a directory fails before the input is read */
    if (st == RK_OK && rk_path_exists(out_dir) && !rk_is_dir(out_dir))
        st = rk_fail(err, RK_EINVAL, "output directory (--out) %s: exists and is not a directory", out_dir);
    if (st == RK_OK) st = rk_read_file(in_path, &buf, &len, err);
    if (st == RK_OK) st = rk_data_log_convert(root, buf, len, in_path, out_dir, 1, rows, pos, err);
    if (st == RK_OK) st = write_schema(out_dir, root, rows, pos, err);
    if (st == RK_OK) st = rk_fsync_dir(out_dir, err);
    if (st == RK_OK)
        rk_info("data log: %s -> %s: train %zu / valid %zu / test %zu rows, positive rate %.4f / %.4f / %.4f", in_path, out_dir,
                rows[0], rows[1], rows[2], rows[0] ? (double)pos[0] / (double)rows[0] : 0.0,
                rows[1] ? (double)pos[1] / (double)rows[1] : 0.0, rows[2] ? (double)pos[2] / (double)rows[2] : 0.0);
    /* schema errors name the schema file; input and output errors their own paths */
    const char *m = err ? err->msg : "";
    if (st && st != RK_ENOMEM && !strstr(m, in_path) && !strstr(m, out_dir)) rk_err_prefix(err, "%s", schema_path);
    rk_free(buf);
    json_decref(root);
    return st;
}
