/*
 * tools/rank_encode.c — `rank encode text`: one embedding per CSV row.
 * (`rank encode image` and `rank encode join` are tools/rank_encode_image.c.)
 *
 *   rank encode text --model DIR --input FILE (--column NAME | --text-template T)
 *                    --id-column NAME --output FILE [--batch N] [--threads N] [--limit N]
 *
 * Reads a CSV file with a header (RFC 4180: comma-separated, fields may be
 * quoted with "..." and then hold commas, newlines and "" for a quote; LF or
 * CRLF line ends — as MovieLens' movies.csv), builds each row's text from one
 * column or from a template such as "{title} | {genres}", encodes batches of
 * --batch texts with the library's text encoder, and writes a safetensors
 * file with "embeddings" F32 [n, dim] and "ids" I64 [n] (the --id-column
 * values, which must be integers), in input order. Metadata records the
 * model directory, the text recipe and the dimension. A progress line shows
 * sentences/s; the last stdout line is
 *   encode: n=N dim=D batch=B threads=T seconds=S sent_per_s=R output=FILE
 * where seconds count tokenizing + encoding only (not loading or writing).
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"

/* ---------------------------------------------------------------- CSV */

typedef struct {
    char *buf;      /* the file, fields unescaped in place and NUL-terminated */
    char **field;   /* [n_rows * n_cols] pointers into buf; row 0 = header */
    size_t *len;    /* byte lengths */
    size_t n_rows;  /* including the header */
    int n_cols;
} csv_t;

static void csv_free(csv_t *c) {
    rk_free(c->buf);
    rk_free(c->field);
    rk_free(c->len);
}

/* Parse the whole file (core's reader, rk_dsv_next: RFC 4180, a UTF-8
 * byte-order mark skipped). Every row must have the header's field count;
 * blank lines are skipped. */
static rk_status csv_grow(csv_t *c, size_t need, size_t *cap, const char *path, rk_err *err) {
    if (need <= *cap) return RK_OK;
    while (*cap < need) *cap *= 2;
    char **nf = rk_realloc(c->field, *cap * sizeof *nf);
    if (nf) c->field = nf;
    size_t *nl = rk_realloc(c->len, *cap * sizeof *nl);
    if (nl) c->len = nl;
    return nf && nl ? RK_OK : rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
}

static rk_status csv_read(const char *path, csv_t *c, rk_err *err) {
    memset(c, 0, sizeof *c);
    size_t n;
    rk_status s = rk_read_file(path, &c->buf, &n, err);
    if (s) return s;
    rk_dsv_reader r = {path, NULL, 0, c->buf, c->buf + n, 0, ',', 1};
    rk_dsv_skip_bom(&r);
    int fcap = 1; /* the header's fields, at most */
    for (const char *p = r.p; p < r.end && *p != '\n'; p++) fcap += *p == ',';
    size_t cap = 1024, used = 0;
    rk_dsv_field *f = rk_malloc((size_t)fcap * sizeof *f);
    c->field = rk_malloc(cap * sizeof *c->field);
    c->len = rk_malloc(cap * sizeof *c->len);
    if (!f || !c->field || !c->len) {
        rk_free(f);
        return rk_fail(err, RK_ENOMEM, "%s: out of memory", path);
    }
    int nf, got;
    while ((got = rk_dsv_next(&r, f, fcap, &nf, err)) == 1) {
        if (r.row == 1) c->n_cols = nf;
        else if (nf == 1 && f[0].len == 0) continue; /* blank line */
        else if (nf != c->n_cols) {
            s = rk_fail(err, RK_EFORMAT, "%s: row %zu has %d fields, the header has %d", path, r.row, nf, c->n_cols);
            break;
        }
        if ((s = csv_grow(c, used + (size_t)nf, &cap, path, err))) break;
        for (int k = 0; k < nf; k++) {
            c->field[used + (size_t)k] = f[k].s;
            c->len[used + (size_t)k] = f[k].len;
        }
        used += (size_t)nf;
        r.cols = (const char *const *)c->field; /* the header's names, for messages */
        r.ncols = c->n_cols;
    }
    rk_free(f);
    if (got < 0) return (rk_status)got;
    if (s) return s;
    if (c->n_cols == 0) return rk_fail(err, RK_EFORMAT, "%s: empty file (no header)", path);
    c->n_rows = used / (size_t)c->n_cols;
    return RK_OK;
}

static int csv_col(const csv_t *c, const char *name, size_t name_len) {
    for (int j = 0; j < c->n_cols; j++)
        if (c->len[j] == name_len && !memcmp(c->field[j], name, name_len)) return j;
    return -1;
}

/* ---------------------------------------------------------------- text recipe */

/* A template is literal text with {COLUMN} placeholders; --column NAME is the
 * template "{NAME}". Parts: literal (col = -1) or a column index. */
typedef struct {
    int col;
    const char *lit;
    size_t len;
} part_t;

static int parse_template(const char *t, const csv_t *c, const char *path, part_t *parts, int max_parts) {
    int n = 0;
    const char *p = t;
    while (*p) {
        if (n == max_parts) {
            fprintf(stderr, "rank encode: --text-template: more than %d parts\n", max_parts);
            return -1;
        }
        if (*p == '{') {
            const char *e = strchr(p, '}');
            if (!e) {
                fprintf(stderr, "rank encode: --text-template: '{' without '}'\n");
                return -1;
            }
            int col = csv_col(c, p + 1, (size_t)(e - p - 1));
            if (col < 0) {
                fprintf(stderr, "rank encode: --text-template: %s has no column '%.*s'\n", path, (int)(e - p - 1), p + 1);
                return -1;
            }
            parts[n++] = (part_t){col, NULL, 0};
            p = e + 1;
        } else {
            const char *e = strchr(p, '{');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            parts[n++] = (part_t){-1, p, len};
            p += len;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *o) {
    fprintf(o,
            "usage: rank encode image --model DIR (--dir FOLDER | --list FILE) --output FILE ... (rank encode image --help)\n"
            "usage: rank encode join --text FILE --image FILE --output FILE   (text + image, concatenated by id)\n"
            "usage: rank encode text --model DIR --input FILE (--column NAME | --text-template T)\n"
            "                        --id-column NAME --output FILE [--batch N] [--threads N] [--limit N]\n"
            "\n"
            "  One sentence embedding per row of a CSV file (header first, RFC 4180 quoting).\n"
            "  --model DIR          HuggingFace-layout BERT directory (config.json, vocab.txt,\n"
            "                       model.safetensors), e.g. ~/.cache/rankd/models/all-MiniLM-L6-v2\n"
            "  --column NAME        the text is this column\n"
            "  --text-template T    the text is T with each {COLUMN} replaced by that column,\n"
            "                       e.g. '{title} | {genres}'\n"
            "  --id-column NAME     integer id of each row, stored as \"ids\" (I64)\n"
            "  --output FILE        safetensors: \"embeddings\" F32 [n, dim], \"ids\" I64 [n]\n"
            "  --batch N            texts per encoder call (default 64)\n"
            "  --threads N          OpenBLAS threads (default: OpenBLAS' own setting)\n"
            "  --limit N            only the first N rows\n");
}

int rank_encode_image_main(int argc, char **argv);                      /* tools/rank_encode_image.c */
int rank_encode_dup_ids(const int64_t *id, size_t n, size_t *a, size_t *b); /* tools/rank_encode_image.c */

int rank_encode_main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "image") || !strcmp(argv[1], "join"))) return rank_encode_image_main(argc, argv);
    if (argc < 2 || strcmp(argv[1], "text")) {
        int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    const char *model = NULL, *input = NULL, *column = NULL, *tmpl = NULL, *idcol = NULL, *output = NULL;
    long batch = 64, threads = 0, limit = -1;
    static struct option opts[] = {{"model", 1, 0, 'm'},  {"input", 1, 0, 'i'},         {"column", 1, 0, 'c'},
                                   {"text-template", 1, 0, 'T'}, {"id-column", 1, 0, 'd'}, {"output", 1, 0, 'o'},
                                   {"batch", 1, 0, 'b'},  {"threads", 1, 0, 't'},       {"limit", 1, 0, 'l'},
                                   {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long *dst = NULL, lo = 0, hi = 0;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'i': input = optarg; break;
        case 'c': column = optarg; break;
        case 'T': tmpl = optarg; break;
        case 'd': idcol = optarg; break;
        case 'o': output = optarg; break;
        case 'b': dst = &batch, lo = 1, hi = 65536; break;
        case 't': dst = &threads, lo = 1, hi = 256; break;
        case 'l': dst = &limit, lo = 0, hi = 1L << 40; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (dst) {
            long long v;
            rk_err pe = {0};
            if (rk_parse_int(ch == 'b' ? "--batch" : ch == 't' ? "--threads" : "--limit", optarg, lo, hi, &v, &pe)) {
                fprintf(stderr, "rank encode: %s\n", pe.msg);
                return 2;
            }
            *dst = (long)v;
        }
    }
    if (!model || !input || !idcol || !output || (!column == !tmpl)) {
        fprintf(stderr, "rank encode text: --model, --input, --id-column, --output and exactly one of --column or "
                        "--text-template are required\n");
        return 2;
    }

    int rc = 1;
    rk_err err = {0};
    csv_t csv = {0};
    rk_text_encoder *enc = NULL;
    const char **texts = NULL;
    char *textbuf = NULL;
    int64_t *ids = NULL;
    float *emb = NULL;
    rk_st_writer *w = NULL;
    char colt[300];
    if (column) {
        snprintf(colt, sizeof colt, "{%s}", column);
        tmpl = colt;
    }

    rk_text_encoder_opts eo = RK_TEXT_ENCODER_OPTS_DEFAULT;
    eo.threads = (int)threads;
    if (rk_text_encoder_open(model, &eo, &enc, &err)) goto fail_err;
    rk_log_blas_info();
    const int blas_threads = openblas_get_num_threads(); /* encode may lower it for tiny batches */
    if (csv_read(input, &csv, &err)) goto fail_err;
    part_t parts[64];
    int np = parse_template(tmpl, &csv, input, parts, 64);
    if (np < 0) goto done;
    int idc = csv_col(&csv, idcol, strlen(idcol));
    if (idc < 0) {
        fprintf(stderr, "rank encode: %s has no column '%s'\n", input, idcol);
        goto done;
    }
    size_t n = csv.n_rows - 1;
    if (limit >= 0 && (size_t)limit < n) n = (size_t)limit;
    const int dim = rk_text_encoder_dim(enc);
    /* Build every text once, into one buffer. */
    size_t total = 0;
    for (size_t r = 1; r <= n; r++)
        for (int k = 0; k < np; k++) total += parts[k].col < 0 ? parts[k].len : csv.len[r * csv.n_cols + parts[k].col];
    texts = rk_malloc((n ? n : 1) * sizeof *texts);
    size_t *lens = rk_malloc((n ? n : 1) * sizeof *lens);
    textbuf = rk_malloc(total + 1);
    ids = rk_malloc((n ? n : 1) * sizeof *ids);
    emb = rk_malloc((n ? n : 1) * (size_t)dim * sizeof *emb);
    if (!texts || !lens || !textbuf || !ids || !emb) {
        rk_free(lens);
        rk_fail(&err, RK_ENOMEM, "out of memory for %zu rows", n);
        goto fail_err;
    }
    char *tp = textbuf;
    for (size_t r = 1; r <= n; r++) {
        texts[r - 1] = tp;
        for (int k = 0; k < np; k++) {
            const char *src = parts[k].col < 0 ? parts[k].lit : csv.field[r * csv.n_cols + parts[k].col];
            size_t l = parts[k].col < 0 ? parts[k].len : csv.len[r * csv.n_cols + parts[k].col];
            memcpy(tp, src, l);
            tp += l;
        }
        lens[r - 1] = (size_t)(tp - texts[r - 1]);
        const char *idv = csv.field[r * csv.n_cols + idc];
        char *end;
        errno = 0;
        long long v = strtoll(idv, &end, 10);
        if (!*idv || *end || errno) {
            fprintf(stderr, "rank encode: %s: row %zu, column %s: expected an integer id, got '%s'\n", input, r + 1,
                    idcol, idv);
            rk_free(lens);
            goto done;
        }
        ids[r - 1] = v;
    }
    size_t da, db; /* each id once (as rank encode image): rank sid refuses repeats, rank encode join is ambiguous */
    int dup = rank_encode_dup_ids(ids, n, &da, &db);
    if (dup || n == 0) {
        if (dup > 0)
            fprintf(stderr, "rank encode: %s: rows %zu and %zu, column %s: id %lld given twice\n", input, da + 2, db + 2,
                    idcol, (long long)ids[da]);
        else if (dup < 0) fprintf(stderr, "rank encode: out of memory for %zu ids\n", n);
        else fprintf(stderr, "rank encode: %s: no rows to encode (a header only%s)\n", input, limit == 0 ? ", or --limit 0" : "");
        rk_free(lens);
        goto done;
    }

    rk_progress pr;
    rk_progress_start(&pr, "encode", "sent", n);
    double t0 = rk_now();
    for (size_t i = 0; i < n; i += (size_t)batch) {
        int b = (int)(n - i < (size_t)batch ? n - i : (size_t)batch);
        if (rk_text_encoder_encode(enc, texts + i, lens + i, b, emb + i * (size_t)dim, &err)) {
            /* find the row: "text K: ..." is relative to this batch */
            int k = -1;
            const char *msg = err.msg;
            if (sscanf(msg, "text %d:", &k) == 1 && (msg = strchr(msg, ':'))) msg += 2;
            fprintf(stderr, "rank: error: %s: row %zu (%s): %s\n", input, i + (size_t)(k < 0 ? 0 : k) + 2, tmpl,
                    msg ? msg : err.msg);
            rk_free(lens);
            goto done;
        }
        rk_progress_add(&pr, (uint64_t)b);
    }
    double secs = rk_now() - t0;
    rk_progress_finish(&pr);
    rk_free(lens);

    int64_t se[2] = {(int64_t)n, dim}, si[1] = {(int64_t)n};
    char ident[64];
    if (rk_text_encoder_identity(model, ident, sizeof ident, &err)) goto fail_err;
    char dims[32];
    snprintf(dims, sizeof dims, "%d", dim);
    if (rk_st_writer_create(&w, &err) || rk_st_writer_add_f32(w, "embeddings", emb, 2, se, &err) ||
        rk_st_writer_add_i64(w, "ids", ids, 1, si, &err) || rk_st_writer_add_meta(w, "model", model, &err) ||
        rk_st_writer_add_meta(w, "encoder", ident, &err) ||
        rk_st_writer_add_meta(w, "text", tmpl, &err) || rk_st_writer_add_meta(w, "id_column", idcol, &err) ||
        rk_st_writer_add_meta(w, "dim", dims, &err) || rk_st_writer_add_meta(w, "normalized", "true", &err) ||
        rk_st_writer_write(w, output, &err))
        goto fail_err;
    printf("encode: n=%zu dim=%d batch=%ld threads=%d seconds=%.3f sent_per_s=%.1f output=%s\n", n, dim, batch,
           blas_threads, secs, secs > 0 ? (double)n / secs : 0.0, output);
    rc = 0;
    goto done;
fail_err:
    fprintf(stderr, "rank: error: %s\n", err.msg);
done:
    rk_st_writer_destroy(w);
    rk_free(emb);
    rk_free(ids);
    rk_free(textbuf);
    rk_free(texts);
    csv_free(&csv);
    rk_text_encoder_close(enc);
    return rc;
}
