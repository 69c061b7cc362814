/*
 * tools/rank_store.c — `rank store`: the embedding store's CLI, a thin main
 * over store.h and rank.h.
 *
 *   rank store convert --model IN --codec fp32|fp16|int8 --out OUT [--force]
 *   rank store info    (--model BUNDLE [--member NAME] | --store DIR) [--verify]
 *   rank store apply   (--model BUNDLE [--member NAME] | --store DIR) --table NAME --input FILE [--batch N]
 *                      [--redis-cluster SEEDS]
 *   rank store publish-redis (--model BUNDLE [--member NAME] | --store DIR) --redis-cluster SEEDS
 *                      [--lineage NAME]
 *   rank store thin    --model BUNDLE --out DIR --redis-cluster SEEDS
 *   rank store drop-redis    (--model BUNDLE [--member NAME] | --store DIR | --prefix P) --redis-cluster SEEDS
 *
 * apply reads one update per line: the row id, then dim floats, separated
 * by tabs, spaces or commas ('#' starts a comment); values must be finite
 * with |v| <= 1e6 (RK_STORE_MAX_ABS); an input without any update line, or
 * with a NUL byte in a line, is an error (exit 1). Each batch of N lines is
 * one atomic, WAL-fsynced write: when the command reports a batch as
 * applied, it survives kill -9. The store is opened writable, so nothing
 * else may hold it open read-write meanwhile. The semantic-ID records
 * tables ("sid.<feature>") are refused: they hold codes, not embeddings.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rank.h"
#include "store.h"

int rank_store_main(int argc, char **argv);

static void store_usage(FILE *o) {
    fprintf(o,
            "usage: rank store COMMAND [options]\n"
            "  convert --model IN --codec fp32|fp16|int8 --out OUT [--force]\n"
            "      copy bundle IN to OUT with every embedding table in the given row codec\n"
            "  info (--model BUNDLE [--member NAME] | --store DIR) [--verify]\n"
            "      tables, codecs, rows, bytes per row; --verify scans every key with checksums;\n"
            "      --member NAME: that member's tables/ of an ensemble bundle (members/NAME/)\n"
            "  apply (--model BUNDLE [--member NAME] | --store DIR) --table NAME --input FILE [--batch N]\n"
            "      apply row updates (lines 'ROW v1 ... vDIM', ROW in 0..rows-1, each value finite with |v| <= 1e6)\n"
            "      through the WAL, N rows per atomic batch (default 256); an input with no update is an error;\n"
            "      not to semantic-ID records tables sid.* (rebuild those with `rank sid` and `rank train`);\n"
            "      --redis-cluster SEEDS: also to the version's rows in a Redis Cluster (MSET, WAIT 1 replica,\n"
            "      the update stream every rankd replica follows); the version must be published there\n"
            "  publish-redis (--model BUNDLE [--member NAME] | --store DIR) --redis-cluster HOST:PORT[,...]\n"
            "                [--lineage NAME]\n"
            "      load the tables into a Redis Cluster under the version's prefix (rk/IDENTITY of tables/),\n"
            "      pipelined, resumable (rerun after an interruption), completion marker last; then record it as\n"
            "      the newest version of lineage NAME (default with --model: model.json's name, '/MEMBER' added\n"
            "      for a member; --store: none) and drop the lineage's older versions no rankd serves (lease)\n"
            "  thin --model BUNDLE --out DIR --redis-cluster SEEDS\n"
            "      copy BUNDLE to DIR without its tables/ (each member's too), after checking that every one\n"
            "      is fully published in the cluster: rankd --redis-cluster serves DIR from the cluster alone\n"
            "  drop-redis (--model BUNDLE [--member NAME] | --store DIR | --prefix P) --redis-cluster SEEDS\n"
            "      delete a version's keys from the cluster; refused while a rankd replica serves it (lease)\n");
}

static int fail(const rk_err *e) {
    fprintf(stderr, "rank store: error: %s\n", e->msg);
    return 1;
}

/* The store directory: --store DIR, BUNDLE/tables, or for an ensemble
 * bundle (members/NAME/ instead of tables/) BUNDLE/members/MEMBER/tables.
 * NULL after printing why (cmd names the subcommand). */
static const char *store_dir(const char *cmd, const char *model, const char *store, const char *member, char *buf,
                             size_t cap) {
    if (store) {
        if (member) {
            fprintf(stderr, "rank store %s: --member goes with --model (an ensemble bundle), not --store\n", cmd);
            return NULL;
        }
        return store;
    }
    char members[4096];
    snprintf(members, sizeof members, "%s/members", model);
    DIR *d = opendir(members);
    if (!d) {
        if (member && !rk_is_dir(model)) {
            fprintf(stderr, "rank store %s: error: model bundle %s: %s\n", cmd, model,
                    rk_path_exists(model) ? "not a directory" : "does not exist");
            return NULL;
        }
        if (member) {
            fprintf(stderr, "rank store %s: error: model bundle %s is not an ensemble (no members/): drop --member\n",
                    cmd, model);
            return NULL;
        }
        snprintf(buf, cap, "%s/tables", model);
        return buf;
    }
    char names[1024] = "";
    size_t len = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && len < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", de->d_name);
    closedir(d);
    if (!member) {
        fprintf(stderr,
                "rank store %s: error: model bundle %s is an ensemble: each member has its own tables/ under "
                "members/ (%s); give --member NAME\n",
                cmd, model, names);
        return NULL;
    }
    snprintf(buf, cap, "%s/members/%s/tables", model, member);
    char mdir[4200];
    snprintf(mdir, sizeof mdir, "%s/members/%s", model, member);
    struct stat sb;
    if (strchr(member, '/') || stat(mdir, &sb) || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "rank store %s: error: ensemble %s has no member '%s' (members: %s)\n", cmd, model, member,
                names);
        return NULL;
    }
    return buf;
}

static int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *codec = NULL;
    int force = 0, c;
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"out", 1, 0, 'o'}, {"codec", 1, 0, 'c'},
                                   {"force", 0, 0, 'f'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') in = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 'c') codec = optarg;
        else if (c == 'f') force = 1;
        else {
            store_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!in || !out || !codec) {
        fprintf(stderr, "rank store convert: --model, --codec and --out are required\n");
        return 2;
    }
    rk_err e = {0};
    double t0 = rk_now();
    if (rk_model_convert(in, out, codec, force, &e)) return fail(&e);
    printf("converted %s -> %s (codec %s) in %.2fs\n", in, out, codec, rk_now() - t0);
    return 0;
}

static int cmd_info(int argc, char **argv) {
    const char *model = NULL, *store = NULL, *member = NULL;
    int verify = 0, c;
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"store", 1, 0, 's'}, {"verify", 0, 0, 'v'},
                                   {"member", 1, 0, 'M'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 's') store = optarg;
        else if (c == 'v') verify = 1;
        else if (c == 'M') member = optarg;
        else {
            store_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!model == !store) {
        fprintf(stderr, "rank store info: give exactly one of --model and --store\n");
        return 2;
    }
    char buf[4096];
    const char *dir = store_dir("info", model, store, member, buf, sizeof buf);
    if (!dir) return 2;
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = 0;
    rk_store *s;
    rk_err e = {0};
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) return fail(&e);
    printf("store %s: %d tables\n", dir, rk_store_n_tables(s));
    int rc = 0;
    for (int t = 0; t < rk_store_n_tables(s); t++) {
        rk_table_info ti;
        rk_store_table_info(s, t, &ti);
        printf("  %-16s codec=%s dim=%d rows=%llu row_bytes=%zu default=%s", ti.name, rk_codec_name(ti.codec), ti.dim,
               (unsigned long long)ti.rows, ti.row_bytes, ti.has_oov_row ? "oov-row" : "zeros");
        if (verify) {
            uint64_t n;
            if (rk_store_count_keys(s, t, &n, &e)) {
                printf("\n");
                rc = fail(&e);
                break;
            }
            printf(" keys=%llu verified", (unsigned long long)n);
        }
        printf("\n");
    }
    rk_store_close(s);
    return rc;
}

static int cmd_apply(int argc, char **argv) {
    const char *model = NULL, *store = NULL, *tname = NULL, *input = NULL, *member = NULL;
    long batch = 256;
    int c;
    const char *seeds = NULL;
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"store", 1, 0, 's'}, {"table", 1, 0, 't'},
                                   {"input", 1, 0, 'i'}, {"batch", 1, 0, 'b'}, {"member", 1, 0, 'M'},
                                   {"redis-cluster", 1, 0, 'C'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 's') store = optarg;
        else if (c == 't') tname = optarg;
        else if (c == 'i') input = optarg;
        else if (c == 'M') member = optarg;
        else if (c == 'C') seeds = optarg;
        else if (c == 'b') {
            long long x;
            rk_err be = {0};
            if (rk_parse_int("--batch", optarg, 1, 1000000, &x, &be)) {
                fprintf(stderr, "rank store apply: %s\n", be.msg);
                return 2;
            }
            batch = (long)x;
        } else {
            store_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!model == !store || !tname || !input) {
        fprintf(stderr, "rank store apply: one of --model/--store, and --table and --input are required\n");
        return 2;
    }
    /* the "sid.<feature>" tables hold each item's semantic-ID codes (rank/sid.c):
     * integers in 0..K-1 that must match the bundle's codebooks and
     * model.json; a row update cannot keep that consistent */
    if (!strncmp(tname, "sid.", 4)) {
        fprintf(stderr,
                "rank store apply: error: table '%s' holds semantic-ID item records (codes, not embedding rows) and "
                "cannot be updated row by row; to change them, rebuild the records with `rank sid build` (or `rank sid "
                "assign` for new items) and retrain with `rank train`\n",
                tname);
        return 2;
    }
    char buf[4096];
    const char *dir = store_dir("apply", model, store, member, buf, sizeof buf);
    if (!dir) return 2;
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.writable = 1;
    o.cache_bytes = 0;
    rk_store *s;
    rk_err e = {0};
    rk_redis *redis = NULL;
    if (seeds && rk_redis_create(seeds, NULL, &redis, &e)) return fail(&e);
    rk_store_set_tier(redis);
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) {
        rk_redis_destroy(redis);
        return fail(&e);
    }
    int t = rk_store_find(s, tname);
    if (t < 0) {
        fprintf(stderr, "rank store apply: error: store %s has no table '%s'\n", dir, tname);
        rk_store_close(s);
        return 1;
    }
    rk_table_info ti;
    rk_store_table_info(s, t, &ti);
    FILE *f = strcmp(input, "-") ? fopen(input, "r") : stdin;
    if (!f) {
        fprintf(stderr, "rank store apply: error: %s: %s\n", input, strerror(errno));
        rk_store_close(s);
        return 1;
    }
    uint64_t *rows = rk_malloc((size_t)batch * sizeof *rows);
    float *vals = rk_malloc((size_t)batch * (size_t)ti.dim * sizeof(float));
    char *line = NULL;
    size_t cap = 0, n = 0, total = 0, batches = 0;
    long lineno = 0;
    int rc = 0;
    double t0 = rk_now();
    if (!rows || !vals) {
        fprintf(stderr, "rank store apply: error: out of memory for a batch of %ld rows of %d values\n", batch, ti.dim);
        rc = 1;
    }
    while (rc == 0) {
        ssize_t len = getline(&line, &cap, f);
        if (len >= 0) {
            lineno++;
            const char *nul = memchr(line, 0, (size_t)len);
            if (nul) { /* the parser would stop there: the rest of the line silently dropped */
                fprintf(stderr, "rank store apply: error: %s line %ld: a NUL byte at byte %zu\n", input, lineno,
                        (size_t)(nul - line) + 1);
                rc = 1;
                break;
            }
            if (lineno == 1 && !strncmp(line, "\xEF\xBB\xBF", 3)) memmove(line, line + 3, (size_t)len - 2); /* a BOM */
            char *hash = strchr(line, '#');
            if (hash) *hash = 0;
            char *p = line, *end;
            while (*p == ' ' || *p == '\t') p++;
            if (!*p || *p == '\n' || *p == '\r') continue;
            errno = 0;
            unsigned long long r = isdigit((unsigned char)*p) ? strtoull(p, &end, 10) : 0;
            if (!isdigit((unsigned char)*p) || errno || (*end && !strchr(" \t,\r\n", *end)) || r >= ti.rows) {
                size_t tl = strcspn(p, " \t,\r\n");
                fprintf(stderr,
                        "rank store apply: error: %s line %ld: row '%.*s': expected a row id (an integer in 0..%llu)\n",
                        input, lineno, (int)(tl > 40 ? 40 : tl), p, (unsigned long long)ti.rows - 1);
                rc = 1;
                break;
            }
            p = end;
            for (int j = 0; j < ti.dim && rc == 0; j++) {
                while (*p == ' ' || *p == '\t' || *p == ',') p++;
                float v = strtof(p, &end);
                if (end == p || (*end && !strchr(" \t,\r\n", *end))) {
                    size_t tl = strcspn(p, " \t,\r\n");
                    if (tl == 0)
                        fprintf(stderr, "rank store apply: error: %s line %ld (row %llu): expected %d values, got %d\n",
                                input, lineno, r, ti.dim, j);
                    else
                        fprintf(stderr,
                                "rank store apply: error: %s line %ld (row %llu): value %d of %d: expected a number, "
                                "got '%.*s'\n",
                                input, lineno, r, j + 1, ti.dim, (int)(tl > 40 ? 40 : tl), p);
                    rc = 1;
                }
                vals[n * (size_t)ti.dim + (size_t)j] = v;
                p = end;
            }
            while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' || *p == '\r') p++;
            if (rc == 0 && *p) {
                fprintf(stderr, "rank store apply: error: %s line %ld: more than %d values\n", input, lineno, ti.dim);
                rc = 1;
            }
            if (rc) break;
            rows[n++] = r;
        }
        if ((size_t)n == (size_t)batch || (len < 0 && n > 0)) {
            if (rk_store_apply(s, t, rows, n, vals, &e)) {
                rk_err_prefix(&e, "after %zu acknowledged rows", total);
                rc = fail(&e);
                break;
            }
            total += n;
            batches++;
            n = 0;
        }
        if (len < 0) {
            if (ferror(f)) { /* not the end of the file: a directory, an I/O error */
                fprintf(stderr, "rank store apply: error: %s: read failed after line %ld: %s (%zu rows applied)\n", input,
                        lineno, strerror(errno), total);
                rc = 1;
            }
            break;
        }
    }
    if (rc == 0 && total == 0) {
        fprintf(stderr, "rank store apply: error: %s: no updates (no row lines; blank lines and # comments are skipped)\n",
                input);
        rc = 1;
    }
    if (rc == 0)
        printf("applied %zu rows to table '%s' in %zu batches (each WAL-fsynced%s before acknowledging) in %.3fs\n",
               total, tname, batches, redis ? " and WAITed for a Redis replica" : "", rk_now() - t0);
    free(line);
    rk_free(rows);
    rk_free(vals);
    if (f != stdin) fclose(f);
    rk_store_close(s);
    rk_store_set_tier(NULL);
    rk_redis_destroy(redis);
    return rc;
}

/* The default lineage of a bundle: model.json's name, "/MEMBER" added for a member. */
static int bundle_lineage(const char *model, const char *member, char *buf, size_t cap) {
    char path[4200], *text = NULL;
    rk_err e = {0};
    rk_model_cfg cfg;
    snprintf(path, sizeof path, "%s/model.json", model);
    if (rk_read_file(path, &text, NULL, &e) || rk_model_cfg_parse(text, &cfg, &e)) {
        rk_free(text);
        fprintf(stderr, "rank store publish-redis: error: %s: %s\n", path, e.msg);
        return -1;
    }
    snprintf(buf, cap, "%s%s%s", cfg.name, member ? "/" : "", member ? member : "");
    rk_model_cfg_free(&cfg);
    rk_free(text);
    return 0;
}

/* publish-redis / drop-redis */
static int cmd_redis(const char *cmd, int argc, char **argv) {
    const char *model = NULL, *store = NULL, *member = NULL, *seeds = NULL, *prefix = NULL, *lineage = NULL;
    int c, drop = !strcmp(cmd, "drop-redis");
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"store", 1, 0, 's'}, {"member", 1, 0, 'M'},
                                   {"redis-cluster", 1, 0, 'C'}, {"prefix", 1, 0, 'p'}, {"lineage", 1, 0, 'l'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 's') store = optarg;
        else if (c == 'M') member = optarg;
        else if (c == 'C') seeds = optarg;
        else if (c == 'p' && drop) prefix = optarg;
        else if (c == 'l' && !drop) lineage = optarg;
        else {
            store_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!seeds || (!model + !store + !prefix) != 2) {
        fprintf(stderr, "rank store %s: --redis-cluster and one of --model/--store%s are required\n", cmd,
                drop ? "/--prefix" : "");
        return 2;
    }
    rk_err e = {0};
    rk_redis *r = NULL;
    rk_store *s = NULL;
    char buf[4096], pfx[128];
    const char *dir = prefix ? NULL : store_dir(cmd, model, store, member, buf, sizeof buf);
    if (!prefix && !dir) return 2;
    char lbuf[300] = "";
    if (!drop && !lineage && model && bundle_lineage(model, member, lbuf, sizeof lbuf)) return 1;
    if (lineage) snprintf(lbuf, sizeof lbuf, "%s", lineage);
    if (rk_redis_create(seeds, NULL, &r, &e)) return fail(&e);
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = 0;
    o.tier = 0;
    int rc = 0;
    if (dir && rk_store_open_ex(dir, NULL, NULL, 0, &o, &s, &e)) rc = fail(&e);
    if (rc == 0) {
        if (s) rk_store_redis_prefix(s, pfx, sizeof pfx);
        else snprintf(pfx, sizeof pfx, "%s", prefix);
        double t0 = rk_now();
        uint64_t n = 0;
        if (drop ? rk_redis_drop_version(r, pfx, &n, &e) : rk_store_redis_publish(s, r, 1, &n, &e)) rc = fail(&e);
        else if (drop) printf("dropped %s: %llu keys deleted\n", pfx, (unsigned long long)n);
        else {
            double dt = rk_now() - t0;
            printf("published %s: %llu rows loaded in %.2fs (%.0f rows/s)%s\n", pfx, (unsigned long long)n, dt,
                   dt > 0 ? n / dt : 0.0, n ? "" : " (already complete)");
            uint64_t dropped = 0;
            if (lbuf[0] && rk_redis_lineage_add(r, lbuf, pfx, &dropped, &e)) rc = fail(&e);
            else if (lbuf[0])
                printf("lineage '%s': %s is the newest version; %llu older version(s) dropped\n", lbuf, pfx,
                       (unsigned long long)dropped);
        }
    }
    rk_store_close(s);
    rk_redis_destroy(r);
    return rc;
}

/* ---------------------------------------------------------------- thin */

/* The store at dir must be fully published in r: same tables, dims,
 * codecs, rows and default rows as the completion marker says. */
static int check_published(rk_redis *r, const char *dir) {
    rk_err e = {0};
    rk_store *loc = NULL, *rem = NULL;
    rk_store_opts o = RK_STORE_OPTS_DEFAULT;
    o.cache_bytes = 0;
    o.tier = 0;
    o.verify = 0;
    char pfx[128];
    int rc = 0;
    if (rk_store_open_ex(dir, NULL, NULL, 0, &o, &loc, &e)) return fail(&e);
    rk_store_redis_prefix(loc, pfx, sizeof pfx);
    if (rk_store_open_redis(r, pfx, NULL, NULL, 0, &o, &rem, &e)) rc = fail(&e);
    for (int t = 0; rc == 0 && t < rk_store_n_tables(loc); t++) {
        rk_table_info a, b;
        rk_store_table_info(loc, t, &a);
        int u = rk_store_find(rem, a.name);
        if (u >= 0) rk_store_table_info(rem, u, &b);
        if (u < 0 || a.dim != b.dim || a.codec != b.codec || a.rows != b.rows || a.has_oov_row != b.has_oov_row) {
            fprintf(stderr, "rank store thin: error: %s: table '%s' is not the one published as %s\n", dir, a.name, pfx);
            rc = 1;
        }
    }
    rk_store_close(rem);
    rk_store_close(loc);
    return rc;
}

/* Copy the tree in -> out (out created), leaving out a tables/ folder beside a model.json. */
static rk_status copy_thin(const char *in, const char *out, rk_err *err) {
    if (mkdir(out, 0755)) return rk_fail(err, RK_EIO, "%s: %s", out, strerror(errno));
    DIR *d = opendir(in);
    if (!d) return rk_fail(err, RK_EIO, "%s: %s", in, strerror(errno));
    char mj[4200];
    snprintf(mj, sizeof mj, "%s/model.json", in);
    int bundle = rk_path_exists(mj);
    rk_status st = RK_OK;
    struct dirent *de;
    while (st == RK_OK && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || (bundle && !strcmp(de->d_name, "tables"))) continue;
        char a[4200], b[4200];
        snprintf(a, sizeof a, "%s/%s", in, de->d_name);
        snprintf(b, sizeof b, "%s/%s", out, de->d_name);
        if (rk_is_dir(a)) {
            st = copy_thin(a, b, err);
            continue;
        }
        char *data = NULL;
        size_t len = 0;
        st = rk_read_file(a, &data, &len, err);
        if (st == RK_OK) st = rk_write_file(b, data, len, err);
        rk_free(data);
    }
    closedir(d);
    if (st == RK_OK) st = rk_fsync_dir(out, err);
    return st;
}

static int cmd_thin(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *seeds = NULL;
    int c;
    static struct option opts[] = {{"model", 1, 0, 'm'}, {"out", 1, 0, 'o'}, {"redis-cluster", 1, 0, 'C'},
                                   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'm') model = optarg;
        else if (c == 'o') out = optarg;
        else if (c == 'C') seeds = optarg;
        else {
            store_usage(c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 2;
        }
    }
    if (!model || !out || !seeds) {
        fprintf(stderr, "rank store thin: --model, --out and --redis-cluster are required\n");
        return 2;
    }
    if (rk_path_exists(out)) {
        fprintf(stderr, "rank store thin: error: %s exists\n", out);
        return 1;
    }
    rk_err e = {0};
    rk_redis *r = NULL;
    if (rk_redis_create(seeds, NULL, &r, &e)) return fail(&e);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/tables", model);
    int rc = 0, n = 0;
    if (rk_is_dir(dir)) rc = check_published(r, dir), n++;
    snprintf(dir, sizeof dir, "%s/members", model);
    DIR *d = rc == 0 ? opendir(dir) : NULL;
    struct dirent *de;
    while (d && rc == 0 && (de = readdir(d))) {
        snprintf(dir, sizeof dir, "%s/members/%s/tables", model, de->d_name);
        if (de->d_name[0] != '.' && rk_is_dir(dir)) rc = check_published(r, dir), n++;
    }
    if (d) closedir(d);
    rk_redis_destroy(r);
    if (rc == 0 && n == 0) {
        fprintf(stderr, "rank store thin: error: %s: no tables/ (not a bundle, or thin already)\n", model);
        rc = 1;
    }
    char tmp[4200], parent[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", out, (int)getpid());
    if (rc == 0 && (copy_thin(model, tmp, &e) || (rename(tmp, out) && rk_fail(&e, RK_EIO, "%s: %s", out, strerror(errno))))) {
        (void)rk_rm_rf(tmp, NULL);
        rc = fail(&e);
    }
    if (rc == 0) {
        rk_path_parent(out, parent, sizeof parent);
        (void)rk_fsync_dir(parent, NULL);
        printf("thin bundle %s: %d table store(s) verified published, tables/ left out\n", out, n);
    }
    return rc;
}

int rank_store_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        store_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "convert")) return cmd_convert(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "apply")) return cmd_apply(argc - 1, argv + 1);
    if (!strcmp(argv[1], "publish-redis") || !strcmp(argv[1], "drop-redis")) return cmd_redis(argv[1], argc - 1, argv + 1);
    if (!strcmp(argv[1], "thin")) return cmd_thin(argc - 1, argv + 1);
    fprintf(stderr, "rank store: unknown command '%s'\n", argv[1]);
    store_usage(stderr);
    return 2;
}
