/*
 * tests/test_data.c — rk_data_movielens on small hand-made fixtures (exact
 * expected output lines, written out by hand below), on malformed inputs
 * (exact error messages), and on the bundled ml-latest-small.
 */
#define _GNU_SOURCE /* asprintf, vasprintf, mkdtemp */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rank.h"

#ifndef RK_SOURCE_DIR
#define RK_SOURCE_DIR "."
#endif

#define HEADER "label\ttimestamp\tuser_id\tmovie_id\tgenres\tyear\thour\tweekday\thistory\trating\n"

/* ------------------------------------------------------------------ helpers */

static char *make_tmpdir(void) {
    char tmpl[] = "/tmp/rk_test_data_XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert(d != NULL, "mkdtemp failed");
    return strdup(d);
}

static void rm_dir(char *d) {
    rk_err err = {0};
    cr_expect_eq(rk_rm_rf(d, &err), RK_OK, "%s", err.msg);
    free(d);
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rk_err err = {0};
    cr_assert_eq(rk_write_file(path, text, strlen(text), &err), RK_OK, "%s", err.msg);
}

/* Contents of dir/name; caller frees with rk_free. */
static char *read_text(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *buf = NULL;
    rk_err err = {0};
    cr_assert_eq(rk_read_file(path, &buf, NULL, &err), RK_OK, "%s", err.msg);
    return buf;
}

static int exists(const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return rk_path_exists(path);
}

static void expect_file(const char *dir, const char *name, const char *want) {
    char *got = read_text(dir, name);
    cr_expect_str_eq(got, want, "%s differs", name);
    rk_free(got);
}

static size_t count_lines(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Appends printf output to a growing heap string. */
static void cat(char **s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *add = NULL;
    cr_assert(vasprintf(&add, fmt, ap) >= 0);
    va_end(ap);
    size_t a = *s ? strlen(*s) : 0, b = strlen(add);
    *s = realloc(*s, a + b + 1);
    memcpy(*s + a, add, b + 1);
    free(add);
}

/* ------------------------------------------------------------------ fixture */

/* movies: quoted title with a comma (2), quoted title with "" (3), no year
 * (4), trailing space after the year plus "(no genres listed)" (5), a year
 * range that is not (YYYY) (6), two years where the last one counts (7),
 * and 10..34 for user 3's long history. */
static char *fixture_movies(const char *eol) {
    char *s = NULL;
    cat(&s, "movieId,title,genres%s", eol);
    cat(&s, "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy%s", eol);
    cat(&s, "2,\"American President, The (1995)\",Comedy|Drama|Romance%s", eol);
    cat(&s, "3,\"11'09\"\"01 - September 11 (2002)\",Drama%s", eol);
    cat(&s, "4,Babylon 5,Sci-Fi%s", eol);
    cat(&s, "5,Hyena Road (2015) ,(no genres listed)%s", eol);
    cat(&s, "6,Death Note: Desu n\xc3\xb4to (2006\xe2\x80\x93" "2007),(no genres listed)%s", eol);
    cat(&s, "7,\"Film (1990), Remade (2001)\",Drama%s", eol);
    for (int m = 10; m <= 34; m++) cat(&s, "%d,Movie %d (2000),Drama%s", m, m, eol);
    return s;
}

/* ratings, deliberately out of order:
 *   user 2: movie 7 at t=500, movie 6 at t=1000
 *   user 1: movies 2 and 1 at t=1000 (same second), 4 and 3 at t=2000,
 *           5 at 964982703 = 2000-07-30 18:45:03 UTC, a Sunday
 *   user 3: movie 10+i at t = 3000 + 3600 i, i = 0..24 (written newest
 *           first), so hour = i for i < 24 and i = 24 is Friday 00:50;
 *           ratings cycle 5 (label 1), 3.5 (0), 0.5 (0).
 * 32 rows: n_train = floor(25.6) = 25, n_valid = floor(28.8) - 25 = 3,
 * n_test = 4 (rounding instead of flooring would give 26/3/3). */
static char *fixture_ratings(const char *eol) {
    static const char *cycle[3] = {"5", "3.5", "0.5"};
    char *s = NULL;
    cat(&s, "userId,movieId,rating,timestamp%s", eol);
    cat(&s, "1,5,5.0,964982703%s", eol);
    for (int i = 24; i >= 0; i--) cat(&s, "3,%d,%s,%d%s", 10 + i, cycle[i % 3], 3000 + 3600 * i, eol);
    cat(&s, "1,4,2.5,2000%s", eol);
    cat(&s, "1,3,4,2000%s", eol);
    cat(&s, "2,6,4.5,1000%s", eol);
    cat(&s, "1,2,3.5,1000%s", eol);
    cat(&s, "1,1,4.0,1000%s", eol);
    cat(&s, "2,7,1.0,500%s", eol);
    return s;
}

/* Global order and expected rows, by hand:
 *   p0  t=500   u2 m7   history ""        (first event)
 *   p1  t=1000  u1 m1   history ""
 *   p2  t=1000  u1 m2   history ""        (m1 has the same second: not strictly before)
 *   p3  t=1000  u2 m6   history "7"
 *   p4  t=2000  u1 m3   history "2|1"     (m2 is later in the global order -> more recent)
 *   p5  t=2000  u1 m4   history "2|1"     (m3, same second, excluded)
 *   p6.. u3 i=0..24, history = the previous min(i, 20) movies, newest first
 *   p31 t=964982703 u1 m5 history "4|3|2|1"
 * All small timestamps are on Thursday 1970-01-01 (weekday 3). */
static const char *EXPECT_TRAIN_HEAD =
    HEADER
    "0\t500\t2\t7\tDrama\t2001\t0\t3\t\t1.0\n"
    "1\t1000\t1\t1\tAdventure|Animation|Children|Comedy|Fantasy\t1995\t0\t3\t\t4.0\n"
    "0\t1000\t1\t2\tComedy|Drama|Romance\t1995\t0\t3\t\t3.5\n"
    "1\t1000\t2\t6\t\t\t0\t3\t7\t4.5\n"
    "1\t2000\t1\t3\tDrama\t2002\t0\t3\t2|1\t4\n"
    "0\t2000\t1\t4\tSci-Fi\t\t0\t3\t2|1\t2.5\n"
    "1\t3000\t3\t10\tDrama\t2000\t0\t3\t\t5\n"
    "0\t6600\t3\t11\tDrama\t2000\t1\t3\t10\t3.5\n"
    "0\t10200\t3\t12\tDrama\t2000\t2\t3\t11|10\t0.5\n";

static const char *EXPECT_TRAIN_LAST =
    "1\t67800\t3\t28\tDrama\t2000\t18\t3\t27|26|25|24|23|22|21|20|19|18|17|16|15|14|13|12|11|10\t5\n";

static const char *EXPECT_VALID =
    HEADER
    "0\t71400\t3\t29\tDrama\t2000\t19\t3\t28|27|26|25|24|23|22|21|20|19|18|17|16|15|14|13|12|11|10\t3.5\n"
    "0\t75000\t3\t30\tDrama\t2000\t20\t3\t29|28|27|26|25|24|23|22|21|20|19|18|17|16|15|14|13|12|11|10\t0.5\n"
    "1\t78600\t3\t31\tDrama\t2000\t21\t3\t30|29|28|27|26|25|24|23|22|21|20|19|18|17|16|15|14|13|12|11\t5\n";

static const char *EXPECT_TEST =
    HEADER
    "0\t82200\t3\t32\tDrama\t2000\t22\t3\t31|30|29|28|27|26|25|24|23|22|21|20|19|18|17|16|15|14|13|12\t3.5\n"
    "0\t85800\t3\t33\tDrama\t2000\t23\t3\t32|31|30|29|28|27|26|25|24|23|22|21|20|19|18|17|16|15|14|13\t0.5\n"
    "1\t89400\t3\t34\tDrama\t2000\t0\t4\t33|32|31|30|29|28|27|26|25|24|23|22|21|20|19|18|17|16|15|14\t5\n"
    "1\t964982703\t1\t5\t\t2015\t18\t6\t4|3|2|1\t5.0\n";

static void convert_fixture(const char *eol, char **in_out, char **out_out) {
    char *in = make_tmpdir();
    char *m = fixture_movies(eol), *r = fixture_ratings(eol);
    write_text(in, "movies.csv", m);
    write_text(in, "ratings.csv", r);
    free(m);
    free(r);
    char *out = NULL;
    cr_assert(asprintf(&out, "%s/out/nested", in) > 0);
    rk_err err = {0};
    rk_status s = rk_data_movielens(in, out, &err);
    cr_assert_eq(s, RK_OK, "rk_data_movielens: %s", err.msg);
    *in_out = in;
    *out_out = out;
}

static void check_fixture_outputs(const char *out) {
    char *train = read_text(out, "train.tsv");
    cr_expect(strncmp(train, EXPECT_TRAIN_HEAD, strlen(EXPECT_TRAIN_HEAD)) == 0,
              "train.tsv starts:\n%.1200s\nexpected:\n%s", train, EXPECT_TRAIN_HEAD);
    cr_expect_eq(count_lines(train), 1 + 25, "train rows");
    size_t tl = strlen(train), el = strlen(EXPECT_TRAIN_LAST);
    cr_expect(tl >= el && strcmp(train + tl - el, EXPECT_TRAIN_LAST) == 0,
              "train.tsv ends:\n%s", train + (tl > 200 ? tl - 200 : 0));
    rk_free(train);
    expect_file(out, "valid.tsv", EXPECT_VALID);
    expect_file(out, "test.tsv", EXPECT_TEST);
    const char *names[] = {"train.tsv.tmp", "valid.tsv.tmp", "test.tsv.tmp", "schema.json.tmp"};
    for (size_t i = 0; i < 4; i++) cr_expect(!exists(out, names[i]), "%s left behind", names[i]);
}

/* ------------------------------------------------------------------ fixture tests */

Test(data, fixture_exact_rows) {
    char *in, *out;
    convert_fixture("\n", &in, &out);
    check_fixture_outputs(out);
    free(out);
    rm_dir(in);
}

Test(data, crlf_input_gives_the_same_rows) {
    char *in, *out;
    convert_fixture("\r\n", &in, &out);
    check_fixture_outputs(out);
    free(out);
    rm_dir(in);
}

Test(data, output_is_deterministic_and_rewritable) {
    char *in, *out;
    convert_fixture("\n", &in, &out);
    char *a[4];
    const char *names[4] = {"train.tsv", "valid.tsv", "test.tsv", "schema.json"};
    for (int i = 0; i < 4; i++) a[i] = read_text(out, names[i]);
    rk_err err = {0};
    cr_assert_eq(rk_data_movielens(in, out, &err), RK_OK, "second run: %s", err.msg);
    for (int i = 0; i < 4; i++) {
        char *b = read_text(out, names[i]);
        cr_expect_str_eq(a[i], b, "%s changed between runs", names[i]);
        rk_free(a[i]);
        rk_free(b);
    }
    free(out);
    rm_dir(in);
}

Test(data, schema_json) {
    char *in, *out;
    convert_fixture("\n", &in, &out);
    char *text = read_text(out, "schema.json");
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    cr_assert(root != NULL, "schema.json: %s", je.text);

    /* Columns, in the header's order, each with a type and a description. */
    const char *want[] = {"label", "timestamp", "user_id", "movie_id", "genres",
                          "year", "hour", "weekday", "history", "rating"};
    json_t *cols = json_object_get(root, "columns");
    cr_assert_eq(json_array_size(cols), 10);
    for (size_t i = 0; i < 10; i++) {
        json_t *c = json_array_get(cols, i);
        cr_expect_str_eq(json_string_value(json_object_get(c, "name")), want[i]);
        cr_expect(json_is_string(json_object_get(c, "type")), "column %zu type", i);
        cr_expect(json_string_length(json_object_get(c, "description")) > 5, "column %zu", i);
        /* rating (the label's source) is marked: rk_dataset_load refuses it as a feature */
        cr_expect_eq(json_is_true(json_object_get(c, "label_derived")), i == 9, "column %zu label_derived", i);
    }
    json_t *label = json_object_get(root, "label");
    cr_expect_str_eq(json_string_value(json_object_get(label, "definition")), "rating >= 4.0");
    /* labels 1: u1 m1, m3, m5; u2 m6; u3 i = 0,3,...,24 (9) -> 13 of 32. */
    cr_expect_eq(json_integer_value(json_object_get(label, "positives")), 13);
    cr_expect_eq(json_integer_value(json_object_get(root, "rows")), 32);

    struct {
        const char *name;
        long long rows, pos, tmin, tmax;
    } sp[3] = {{"train", 25, 10, 500, 67800},
               {"valid", 3, 1, 71400, 78600},
               {"test", 4, 2, 82200, 964982703}};
    /* Positives: train p1 (4.0), p3 (4.5), p4 (4) and u3 i = 0,3,...,18 (7) -> 10;
     * valid u3 i = 21 -> 1; test u3 i = 24 and u1 m5 (5.0) -> 2. */
    json_t *splits = json_object_get(root, "splits");
    for (int i = 0; i < 3; i++) {
        json_t *o = json_object_get(splits, sp[i].name);
        cr_assert(o != NULL, "split %s", sp[i].name);
        cr_expect_eq(json_integer_value(json_object_get(o, "rows")), sp[i].rows, "%s rows", sp[i].name);
        cr_expect_eq(json_integer_value(json_object_get(o, "positives")), sp[i].pos, "%s pos", sp[i].name);
        cr_expect_eq(json_integer_value(json_object_get(o, "min_timestamp")), sp[i].tmin, "%s", sp[i].name);
        cr_expect_eq(json_integer_value(json_object_get(o, "max_timestamp")), sp[i].tmax, "%s", sp[i].name);
    }
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(splits, "test"), "max_time")),
                     "2000-07-30T18:45:03Z");
    /* Test users 1, 3 both appear in train; test movies 32, 33, 34, 5 do not. */
    json_t *cold = json_object_get(root, "test_cold_start");
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_users")), 2);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_users_unseen_in_train")), 0);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_items")), 4);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_items_unseen_in_train")), 4);
    json_t *src = json_object_get(root, "sources");
    cr_assert_eq(json_array_size(src), 2);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(src, 0), "file")), "ratings.csv");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(src, 0), "data_rows")), 32);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(src, 1), "file")), "movies.csv");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(src, 1), "data_rows")), 32);
    json_decref(root);
    rk_free(text);
    free(out);
    rm_dir(in);
}

Test(data, label_derived_column_is_refused_as_a_feature) {
    char *in, *out;
    convert_fixture("\n", &in, &out);
    char *text, path[1024];
    rk_err e;
    cr_assert_eq(rk_read_file(RK_SOURCE_DIR "/configs/exfm_student.json", &text, NULL, &e), RK_OK, "%s", e.msg);
    rk_model_cfg cfg;
    cr_assert_eq(rk_model_cfg_parse(text, &cfg, &e), RK_OK, "%s", e.msg);
    rk_free(text);
    snprintf(path, sizeof path, "%s/train.tsv", out);
    rk_dataset d;
    cr_assert_eq(rk_dataset_fit_dense(path, &cfg, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_dataset_load(path, &cfg, &d, &e), RK_OK, "%s", e.msg);
    rk_dataset_free(&d);
    int f = cfg.n_features - 1;
    cr_assert_str_eq(cfg.features[f].name, "year");
    strcpy(cfg.features[f].column, "rating"); /* a dense feature reading the raw rating */
    cr_expect_eq(rk_dataset_fit_dense(path, &cfg, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "feature 'year' reads column 'rating'") && strstr(e.msg, "schema.json marks as derived from the label"),
              "%s", e.msg);
    cr_expect_eq(rk_dataset_load(path, &cfg, &d, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "it would leak the label") != NULL, "%s", e.msg);
    strcpy(cfg.features[f].column, "label");
    cr_expect_eq(rk_dataset_load(path, &cfg, &d, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "feature 'year' reads the label column 'label'") != NULL, "%s", e.msg);
    rk_model_cfg_free(&cfg);
    free(out);
    rm_dir(in);
}

Test(data, csv_quoting_rules) {
    /* RFC 4180: any field may be quoted; "" inside quotes is one '"'; a
     * quoted field may hold commas and newlines. The unescaped genres text
     * reaches the output unchanged. */
    char *in = make_tmpdir();
    write_text(in, "movies.csv",
               "movieId,title,genres\n"
               "\"1\",\"Say \"\"Hi\"\", Then\nLeave (1987)\",\"Comedy|\"\"Odd\"\"\"\n");
    write_text(in, "ratings.csv",
               "userId,movieId,rating,timestamp\n"
               "\"7\",\"1\",\"4.5\",\"86400\"\n");
    rk_err err = {0};
    cr_assert_eq(rk_data_movielens(in, in, &err), RK_OK, "%s", err.msg);
    /* 1 row: n_train = 0, n_valid = 0, test = 1. 86400 = Friday 1970-01-02 00:00. */
    expect_file(in, "train.tsv", HEADER);
    expect_file(in, "valid.tsv", HEADER);
    expect_file(in, "test.tsv", HEADER "1\t86400\t7\t1\tComedy|\"Odd\"\t1987\t0\t4\t\t4.5\n");
    rm_dir(in);
}

/* ------------------------------------------------------------------ malformed input */

static const char *GOOD_MOVIES =
    "movieId,title,genres\n"
    "1,Toy Story (1995),Animation\n"
    "2,\"Comma, The (1999)\",Drama\n";

/* Runs the conversion on the given files and expects code and a message
 * containing substr; nothing may be written to the output directory. */
static void expect_error(const char *movies, const char *ratings, rk_status code,
                         const char *substr) {
    char *in = make_tmpdir();
    if (movies) write_text(in, "movies.csv", movies);
    if (ratings) write_text(in, "ratings.csv", ratings);
    char *out = NULL;
    cr_assert(asprintf(&out, "%s/out", in) > 0);
    rk_err err = {0};
    rk_status s = rk_data_movielens(in, out, &err);
    cr_expect_eq(s, code, "status %d (%s), expected %d; message: %s", s, rk_status_str(s), code,
                 err.msg);
    cr_expect(strstr(err.msg, substr) != NULL, "message '%s' lacks '%s'", err.msg, substr);
    cr_expect(!exists(out, "train.tsv") && !exists(out, "schema.json"), "output written on error");
    free(out);
    rm_dir(in);
}

Test(data_errors, bad_rating_text) {
    expect_error(GOOD_MOVIES,
                 "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,x,200\n",
                 RK_EFORMAT, "ratings.csv row 3, column rating: expected a number, got 'x'");
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,nan,100\n", RK_EFORMAT,
                 "ratings.csv row 2, column rating: expected a number, got 'nan'");
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,,100\n", RK_EFORMAT,
                 "ratings.csv row 2, column rating: expected a number, got ''");
}

Test(data_errors, rating_out_of_range) {
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,5.5,100\n", RK_EFORMAT,
                 "ratings.csv row 2, column rating: 5.5 is outside [0.5, 5]");
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,4,1\n1,2,0.0,100\n",
                 RK_EFORMAT, "ratings.csv row 3, column rating: 0.0 is outside [0.5, 5]");
}

Test(data_errors, wrong_field_count) {
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,4.0\n",
                 RK_EFORMAT, "ratings.csv row 3: expected 4 fields, got 3");
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,4.0,100,9\n", RK_EFORMAT,
                 "ratings.csv row 2: expected 4 fields, got 5");
    /* An unquoted comma in a title splits it. */
    expect_error("movieId,title,genres\n1,Comma, The (1999),Drama\n",
                 "userId,movieId,rating,timestamp\n", RK_EFORMAT,
                 "movies.csv row 2: expected 3 fields, got 4");
    /* A blank line is a record with one empty field. */
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,4.0,100\n\n1,2,4.0,200\n",
                 RK_EFORMAT, "ratings.csv row 3: expected 4 fields, got 1");
}

Test(data_errors, bad_header) {
    expect_error(GOOD_MOVIES, "userId,movieId,score,timestamp\n1,1,4.0,100\n", RK_EFORMAT,
                 "ratings.csv row 1, column 3: bad header: expected 'rating', got 'score'");
    expect_error(GOOD_MOVIES, "userId,movieId,rating\n1,1,4.0\n", RK_EFORMAT,
                 "ratings.csv row 1: bad header: expected 4 columns, got 3");
    expect_error("movieId,name,genres\n1,A (1990),Drama\n", "userId,movieId,rating,timestamp\n",
                 RK_EFORMAT, "movies.csv row 1, column 2: bad header: expected 'title', got 'name'");
    expect_error(GOOD_MOVIES, "", RK_EFORMAT, "ratings.csv: empty file, expected a header row");
}

Test(data_errors, unknown_movie) {
    expect_error(GOOD_MOVIES,
                 "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,99,4.0,200\n", RK_EFORMAT,
                 "ratings.csv row 3, column movieId: movieId 99 is not in movies.csv");
}

Test(data_errors, bad_integers) {
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n-1,1,4.0,100\n", RK_EFORMAT,
                 "ratings.csv row 2, column userId: expected a non-negative integer, got '-1'");
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n1,1,4.0,12a\n", RK_EFORMAT,
                 "ratings.csv row 2, column timestamp: expected an integer (Unix seconds), got '12a'");
    expect_error("movieId,title,genres\nx1,A (1990),Drama\n", "userId,movieId,rating,timestamp\n",
                 RK_EFORMAT, "movies.csv row 2, column movieId: expected a non-negative integer, got 'x1'");
}

Test(data_errors, bad_movies_csv) {
    expect_error("movieId,title,genres\n1,\"Open (1990),Drama\n", "userId,movieId,rating,timestamp\n",
                 RK_EFORMAT, "movies.csv row 2, column title: unterminated quoted field");
    expect_error("movieId,title,genres\n1,\"A\"x (1990),Drama\n", "userId,movieId,rating,timestamp\n",
                 RK_EFORMAT, "movies.csv row 2, column title: unexpected 'x' after a closing quote");
    expect_error("movieId,title,genres\n1,A \"B\" (1990),Drama\n", "userId,movieId,rating,timestamp\n",
                 RK_EFORMAT, "movies.csv row 2, column title: '\"' inside an unquoted field");
    expect_error("movieId,title,genres\n1,A (1990),Drama\n2,B (1991),Drama\n1,C (1992),Drama\n",
                 "userId,movieId,rating,timestamp\n", RK_EFORMAT,
                 "movies.csv row 4, column movieId: duplicate movieId 1 (first at row 2)");
}

Test(data_errors, no_ratings_and_missing_files) {
    expect_error(GOOD_MOVIES, "userId,movieId,rating,timestamp\n", RK_EFORMAT,
                 "ratings.csv: no data rows after the header");
    expect_error(GOOD_MOVIES, NULL, RK_ENOTFOUND, "/ratings.csv: No such file or directory");
    expect_error(NULL, "userId,movieId,rating,timestamp\n1,1,4.0,100\n", RK_ENOTFOUND,
                 "/movies.csv: No such file or directory");
}

Test(data_errors, quoted_newline_counts_as_one_row) {
    /* The title of movie 1 spans two lines; the bad rating is on CSV row 3
     * of ratings.csv, and movies.csv's row 3 is movie 2 on line 4. */
    expect_error("movieId,title,genres\n1,\"Two\nLines (1990)\",Drama\n2,B (1991),Dr\"ama\n",
                 "userId,movieId,rating,timestamp\n", RK_EFORMAT,
                 "movies.csv row 3, column genres: '\"' inside an unquoted field");
}

Test(data_errors, out_of_memory_is_reported) {
    char *in = make_tmpdir();
    char *m = fixture_movies("\n"), *r = fixture_ratings("\n");
    write_text(in, "movies.csv", m);
    write_text(in, "ratings.csv", r);
    free(m);
    free(r);
    char *out = NULL;
    cr_assert(asprintf(&out, "%s/out", in) > 0);
    /* Fail the k-th allocation for every k until the conversion succeeds;
     * each failure must be a clean RK_ENOMEM (ASan checks for leaks). */
    int k, saw_enomem = 0;
    for (k = 1; k < 200; k++) {
        rk_err err = {0};
        rk_alloc_fail_after(k);
        rk_status s = rk_data_movielens(in, out, &err);
        rk_alloc_fail_after(0);
        if (s == RK_OK) break;
        cr_expect_eq(s, RK_ENOMEM, "alloc %d: status %d: %s", k, s, err.msg);
        saw_enomem = 1;
    }
    cr_expect(saw_enomem && k < 200, "k = %d", k);
    check_fixture_outputs(out);
    free(out);
    rm_dir(in);
}

/* ------------------------------------------------------------------ bundled data */

/* Expected figures were computed independently of this code with Python's
 * csv module (sort the rows by (timestamp, userId, movieId), split at
 * floor(0.8 n) and floor(0.9 n), count rating >= 4.0 per split); the total
 * also with
 *   awk -F, 'NR>1 && $3>=4' data/movielens/ratings.csv | wc -l   -> 48580
 * The earliest rating is `429,22,4.0,828124615` (the first of the two
 * ratings user 429 gave at 1996-03-29 18:36:55 UTC, a Friday); movie 22 is
 * "Copycat (1995)", Crime|Drama|Horror|Mystery|Thriller. The Python
 * reimplementation's three TSV files were byte-identical to ours. */
Test(data, bundled_movielens, .timeout = 60) {
    char *out = make_tmpdir();
    rk_err err = {0};
    double t0 = rk_now();
    rk_status s = rk_data_movielens(RK_SOURCE_DIR "/data/movielens", out, &err);
    double dt = rk_now() - t0;
    cr_assert_eq(s, RK_OK, "rk_data_movielens: %s", err.msg);
    cr_log_info("bundled MovieLens converted in %.2f s", dt);

    struct {
        const char *file;
        size_t rows, pos;
    } want[3] = {{"train.tsv", 80668, 39254}, {"valid.tsv", 10084, 5198}, {"test.tsv", 10084, 4128}};
    size_t total = 0, total_pos = 0;
    for (int i = 0; i < 3; i++) {
        char *t = read_text(out, want[i].file);
        cr_assert(strncmp(t, HEADER, strlen(HEADER)) == 0, "%s header", want[i].file);
        size_t rows = count_lines(t) - 1, pos = 0;
        for (char *l = strchr(t, '\n'); l && l[1]; l = strchr(l + 1, '\n')) pos += l[1] == '1';
        cr_expect_eq(rows, want[i].rows, "%s rows %zu", want[i].file, rows);
        cr_expect_eq(pos, want[i].pos, "%s positives %zu", want[i].file, pos);
        total += rows;
        total_pos += pos;
        if (i == 0) {
            const char *first = "1\t828124615\t429\t22\tCrime|Drama|Horror|Mystery|Thriller\t1995\t18\t4\t\t4.0\n";
            cr_expect(strncmp(t + strlen(HEADER), first, strlen(first)) == 0,
                      "first train row:\n%.200s", t + strlen(HEADER));
        }
        rk_free(t);
    }
    cr_expect_eq(total, 100836);
    cr_expect_eq(total_pos, 48580);

    char *text = read_text(out, "schema.json");
    json_t *root = json_loads(text, 0, NULL);
    cr_assert(root != NULL);
    json_t *cold = json_object_get(root, "test_cold_start");
    /* Same Python check: 54 of the 74 test users and 1347 of the 4428 test
     * movies never occur in train; 2029 test rows have such a movie. */
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_users")), 74);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_users_unseen_in_train")), 54);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_items")), 4428);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_items_unseen_in_train")), 1347);
    cr_expect_eq(json_integer_value(json_object_get(cold, "test_rows_with_unseen_item")), 2029);
    json_decref(root);
    rk_free(text);
    rm_dir(out);
}

/* items.csv: tags.csv joined per movie (distinct tags case-insensitively, in
 * file order), every field quoted, quotes doubled; movies without tags get "". */
Test(data, items_csv_joins_tags) {
    char *in = make_tmpdir();
    write_text(in, "movies.csv",
               "movieId,title,genres\n"
               "1,Toy Story (1995),Animation|Comedy\n"
               "2,\"Comma, The \"\"Movie\"\" (1999)\",Drama\n"
               "3,Untagged (2001),(no genres listed)\n");
    write_text(in, "ratings.csv",
               "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,3.0,200\n2,3,5.0,300\n");
    write_text(in, "tags.csv",
               "userId,movieId,tag,timestamp\n"
               "1,2,dark,10\n1,1,pixar,11\n2,1,fun,12\n2,1,Pixar,13\n3,2,\"twist, ending\",14\n");
    rk_err err = {0};
    cr_assert_eq(rk_data_movielens(in, in, &err), RK_OK, "%s", err.msg);
    expect_file(in, "items.csv",
                "\"movieId\",\"title\",\"genres\",\"tags\"\n"
                "\"1\",\"Toy Story (1995)\",\"Animation|Comedy\",\"pixar, fun\"\n"
                "\"2\",\"Comma, The \"\"Movie\"\" (1999)\",\"Drama\",\"dark, twist, ending\"\n"
                "\"3\",\"Untagged (2001)\",\"\",\"\"\n");
    /* a tag of a movie that movies.csv lacks names the row */
    write_text(in, "tags.csv", "userId,movieId,tag,timestamp\n1,1,ok,1\n1,9,bad,2\n");
    cr_expect_eq(rk_data_movielens(in, in, &err), RK_EFORMAT);
    cr_expect(strstr(err.msg, "tags.csv row 3, column movieId: expected a movieId of movies.csv, got '9'"), "%s",
              err.msg);
    rm_dir(in);
}

/* Every byte `rank data movielens` writes from the bundled data, pinned: the
 * length and xxHash64 (seed 0) of each file, as the converter wrote them at
 * 3ea71cd (before any rework of it; items.csv's pin taken at b50f52d, whose
 * converter and data are 3ea71cd's byte for byte). Issue 15 asks for the MovieLens
 * converter to become a preset of `rank data log` with identical files;
 * this is the comparison such a rework must pass (set RK_PRINT_PINS=1 to
 * print the values of a new converter instead of comparing). The checkout's
 * path, which schema.json names, is left out of the hash. */
/* Removes every occurrence of the checkout's path (RK_SOURCE_DIR) from buf,
 * so a pin does not depend on where the tree is cloned; returns the new
 * length. */
static size_t drop_source_dir(char *buf, size_t len) {
    const char *dir = RK_SOURCE_DIR;
    size_t dl = strlen(dir), w = 0;
    for (size_t r = 0; r < len;) {
        if (r + dl <= len && !memcmp(buf + r, dir, dl)) r += dl;
        else buf[w++] = buf[r++];
    }
    return w;
}

Test(data, movielens_files_pinned, .timeout = 60) {
    static const struct {
        const char *file;
        size_t bytes;
        unsigned long long xxh64;
    } pin[] = {
        {"train.tsv", 11781597, 0x05aa2c658ea799e6ULL},
        {"valid.tsv", 1671096, 0x881409a513c0defcULL},
        {"test.tsv", 1652037, 0xba1074d2f18b4712ULL},
        {"schema.json", 3207, 0x3cc1aa39a07c3790ULL},
        {"items.csv", 607846, 0x657f254f1bf039c7ULL},
    };
    char *out = make_tmpdir();
    rk_err err = {0};
    cr_assert_eq(rk_data_movielens(RK_SOURCE_DIR "/data/movielens", out, &err), RK_OK, "%s", err.msg);
    for (size_t i = 0; i < sizeof pin / sizeof pin[0]; i++) {
        char path[1024], *buf = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", out, pin[i].file);
        cr_assert_eq(rk_read_file(path, &buf, &len, &err), RK_OK, "%s", err.msg);
        len = drop_source_dir(buf, len); /* schema.json names its inputs: the checkout's path */
        unsigned long long h = (unsigned long long)rk_hash64(buf, len, 0);
        if (getenv("RK_PRINT_PINS")) printf("        {\"%s\", %zu, 0x%016llxULL},\n", pin[i].file, len, h);
        else {
            cr_expect_eq(len, pin[i].bytes, "%s: %zu bytes, pinned %zu", pin[i].file, len, pin[i].bytes);
            cr_expect_eq(h, pin[i].xxh64, "%s: xxh64 %016llx, pinned %016llx", pin[i].file, h, pin[i].xxh64);
        }
        rk_free(buf);
    }
    rm_dir(out);
}

/* ------------------------------------------------------------------ rank data log */

/* A Criteo-format row (label, I1..I13, C1..C26; tab-separated, no header). */
static void criteo_row(char *b, size_t cap, size_t *n, int y, const char *ints[13], int k) {
    *n += (size_t)snprintf(b + *n, cap - *n, "%d", y);
    for (int i = 0; i < 13; i++) *n += (size_t)snprintf(b + *n, cap - *n, "\t%s", ints[i]);
    for (int i = 0; i < 26; i++) *n += (size_t)snprintf(b + *n, cap - *n, i == 3 && k % 4 == 0 ? "\t" : "\t%02x%d", i, k);
    *n += (size_t)snprintf(b + *n, cap - *n, "\n");
}

/* The shipped Criteo schema on raw train.txt's layout, values by hand:
 * log1p after clamping negatives (log1p(5) = 1.79175947, -1 -> 0), the
 * winners' bucketing (1382 -> floor(ln(1382)^2) = 52; <= 2 kept), missing
 * fields empty, the ordered 80/10/10 split of 20 rows (16/2/2), the header
 * the trainer reads, and a model config of all 39 fields trains on it. */
Test(data_log, criteo_raw_layout_by_hand) {
    char *d = make_tmpdir();
    char buf[65536];
    size_t n = 0;
    const char *r1[13] = {"1", "-1", "5", "0", "1382", "", "15", "2", "181", "1", "2", "", "2"};
    for (int k = 0; k < 20; k++) criteo_row(buf, sizeof buf, &n, k % 3 == 0, r1, k);
    write_text(d, "train.txt", buf);
    char in[1024], out[1024];
    snprintf(in, sizeof in, "%s/train.txt", d);
    snprintf(out, sizeof out, "%s/out", d);
    rk_err e = {0};
    cr_assert_eq(rk_data_log(RK_SOURCE_DIR "/configs/criteo_schema.json", in, out, &e), RK_OK, "%s", e.msg);
    char *tr = read_text(out, "train.tsv");
    char *nl = strchr(tr, '\n');
    cr_assert(nl);
    *nl = 0;
    cr_expect(!strncmp(tr, "label\tI1\tI2\t", 12), "%.60s", tr);
    cr_expect(strstr(tr, "\tI13\tI1_b\t") && strstr(tr, "\tI13_b\tC1\t") && strstr(tr, "\tC26"), "header: %s", tr);
    char *row = nl + 1;
    nl = strchr(row, '\n');
    *nl = 0;
    /* row 1 (k = 0): label 1; I: log1p(1), log1p(0) (clamped -1), log1p(5), log1p(0), log1p(1382), missing, ... */
    cr_expect(!strncmp(row, "1\t0.693147181\t0\t1.79175947\t0\t7.23201033\t\t2.77258872\t", 52), "dense: %.80s", row);
    /* buckets: 1 -> 1, -1 -> -1, 5 -> floor(ln5^2) = 2, 0, 1382 -> 52, missing, 15 -> 7, 2 -> 2, 181 -> 27 */
    cr_expect(strstr(row, "\t1\t-1\t2\t0\t52\t\t7\t2\t27\t1\t2\t\t2\t") != NULL, "buckets: %s", row);
    cr_expect(strstr(row, "\t000\t010\t020\t\t040\t") != NULL, "categorical, C4 missing: %s", row);
    rk_free(tr);
    char *sc = read_text(out, "schema.json");
    json_t *j = json_loads(sc, 0, NULL);
    cr_assert(j);
    json_t *w = json_object_get(j, "written");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(w, "train"), "rows")), 16);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(w, "valid"), "rows")), 2);
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(w, "test"), "rows")), 2);
    json_decref(j);
    rk_free(sc);
    /* the 39-field model config reads what was written */
    char *text;
    cr_assert_eq(rk_read_file(RK_SOURCE_DIR "/configs/criteo_dcnv2.json", &text, NULL, &e), RK_OK, "%s", e.msg);
    rk_model_cfg cfg;
    cr_assert_eq(rk_model_cfg_parse(text, &cfg, &e), RK_OK, "%s", e.msg);
    rk_free(text);
    cr_expect_eq(cfg.n_features, 39);
    snprintf(in, sizeof in, "%s/train.tsv", out);
    rk_dataset ds;
    cr_assert_eq(rk_dataset_fit_dense(in, &cfg, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_dataset_load(in, &cfg, &ds, &e), RK_OK, "%s", e.msg);
    cr_expect_eq(ds.b.n_rows, 16);
    rk_dataset_free(&ds);
    rk_model_cfg_free(&cfg);
    rm_dir(d);
}

/* CSV with a header, a UTF-8 BOM, RFC 4180 quotes, a multi-valued column,
 * a cross, custom missing tokens and a seeded random split (same seed, same
 * files; the fractions roughly kept). */
Test(data_log, csv_header_quotes_cross_random_split) {
    char *d = make_tmpdir();
    char buf[1 << 16];
    size_t n = (size_t)snprintf(buf, sizeof buf, "\xEF\xBB\xBFid,click,site,app,tags\n");
    for (int k = 0; k < 400; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%d,%d,\"s,%d\",%s,\"a;b;;c%d\"\n", k, k % 5 == 0, k % 7,
                              k % 11 == 0 ? "NA" : k % 2 ? "x" : "y", k % 3);
    write_text(d, "log.csv", buf);
    write_text(d, "schema.json",
               "{\"delimiter\": \",\", \"header\": true, \"label\": \"click\", \"missing\": [\"\", \"NA\"],"
               " \"features\": [{\"column\": \"site\"}, {\"column\": \"app\"}, {\"column\": \"tags\", \"separator\": \";\"}],"
               " \"crosses\": [{\"name\": \"site_x_app\", \"columns\": [\"site\", \"app\"]}],"
               " \"split\": {\"method\": \"random\", \"seed\": 7, \"valid\": 0.2, \"test\": 0.2}}");
    char in[1024], sch[1024], out[1024], out2[1024];
    snprintf(in, sizeof in, "%s/log.csv", d);
    snprintf(sch, sizeof sch, "%s/schema.json", d);
    snprintf(out, sizeof out, "%s/o1", d);
    snprintf(out2, sizeof out2, "%s/o2", d);
    rk_err e = {0};
    cr_assert_eq(rk_data_log(sch, in, out, &e), RK_OK, "%s", e.msg);
    cr_assert_eq(rk_data_log(sch, in, out2, &e), RK_OK, "%s", e.msg);
    const char *files[3] = {"train.tsv", "valid.tsv", "test.tsv"};
    size_t rows = 0;
    for (int i = 0; i < 3; i++) {
        char *a = read_text(out, files[i]), *b = read_text(out2, files[i]);
        cr_expect_str_eq(a, b, "%s differs between two runs of one seed", files[i]);
        size_t r = 0;
        for (char *p = a; *p; p++) r += *p == '\n';
        r--; /* the header */
        cr_expect(i == 0 ? r > 180 && r < 300 : r > 50 && r < 110, "%s: %zu rows", files[i], r);
        rows += r;
        if (i == 0) cr_expect(!strncmp(a, "label\tsite\tapp\ttags\tsite_x_app\n", 31), "%.60s", a);
        rk_free(a);
        rk_free(b);
    }
    cr_expect_eq(rows, 400);
    /* row k = 0 (label 1): site "s,0", app NA (missing), tags a|b|c0, no cross */
    char all[1 << 16] = "";
    for (int i = 0; i < 3; i++) {
        char *a = read_text(out, files[i]);
        strncat(all, a, sizeof all - strlen(all) - 1);
        rk_free(a);
    }
    cr_expect(strstr(all, "\n1\ts,0\t\ta|b|c0\t\n") != NULL, "k=0 row");
    cr_expect(strstr(all, "\n0\ts,1\tx\ta|b|c1\ts,1\x1fx\n") != NULL, "k=1 row with its cross");
    rm_dir(d);
}

/* Errors name the file, row and column; nothing half-written is left. */
Test(data_log, errors_name_row_and_column) {
    char *d = make_tmpdir();
    char in[1024], sch[1024], out[1024];
    snprintf(in, sizeof in, "%s/log.tsv", d);
    snprintf(sch, sizeof sch, "%s/schema.json", d);
    snprintf(out, sizeof out, "%s/out", d);
    write_text(d, "schema.json",
               "{\"header\": false, \"columns\": [\"y\", \"n\", \"c\"], \"label\": \"y\","
               " \"features\": [{\"column\": \"n\", \"kind\": \"dense\", \"transform\": \"log1p\"}, {\"column\": \"c\"}]}");
    rk_err e = {0};
    write_text(d, "log.tsv", "1\t3\ta\n0\t4\tb\n2\t5\tc\n");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "log.tsv row 3, column y: expected a label 0 or 1, got '2'"), "%s", e.msg);
    cr_expect(!exists(d, "out/train.tsv") && !exists(d, "out/train.tsv.tmp"), "nothing half-written");
    write_text(d, "log.tsv", "1\t3\ta\n0\tx7\tb\n");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "log.tsv row 2, column n: expected a finite number"), "%s", e.msg);
    write_text(d, "log.tsv", "1\t3\ta\n0\t4\n");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "log.tsv row 2: 2 fields, expected 3"), "%s", e.msg);
    write_text(d, "log.tsv", "1\t3\ta|b\n0\t4\tb\n");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "row 1, column c: value 'a|b' holds a tab, newline or '|'"), "%s", e.msg);
    FILE *nf = fopen(in, "wb"); /* a NUL byte inside a field: refused, not read as 'a' */
    cr_assert(nf);
    fwrite("1\t3\ta\n0\t4\ta\0b\n", 1, 14, nf);
    fclose(nf);
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "log.tsv row 2, column c: NUL byte in the field"), "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"m\"}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema features[0].column: 'm' is not a column of the input"), "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"n\"}]}");
    write_text(d, "log.tsv", "1\t3\n"); /* one record: nothing to train on */
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EFORMAT);
    cr_expect(strstr(e.msg, "log.tsv: 1 data record: too few for a train split"), "%s", e.msg);
    cr_expect(!exists(d, "out/train.tsv"), "nothing written");
    /* the label as a feature or in a cross (the label leaks into the model); a column named twice */
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"y\", \"name\": \"y2\", \"kind\": \"dense\"}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema features[0].column: 'y' is the label column"), "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"n\"}],"
               " \"crosses\": [{\"name\": \"x\", \"columns\": [\"n\", \"y\"]}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema crosses[0].columns[1]: 'y' is the label column"), "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"n\"}],"
               " \"crosses\": [{\"name\": \"x\", \"columns\": [\"n\", \"n\"]}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema crosses[0].columns[1]: 'n' is also columns[0] (a column crossed with itself)"), "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"n\"}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema columns: the schema names column 3 'n' twice (also column 2)"), "%s", e.msg);
    write_text(d, "log.tsv", "y\tn\tn\n1\t3\ta\n");
    write_text(d, "schema.json", "{\"header\": true, \"label\": \"y\", \"features\": [{\"column\": \"n\"}]}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "schema columns: the input's header names column 3 'n' twice (also column 2)"), "%s", e.msg);
    /* --out names a file: the error is about --out, not the schema */
    write_text(d, "schema.json", "{\"header\": false, \"columns\": [\"y\", \"n\"], \"label\": \"y\", \"features\": [{\"column\": \"n\"}]}");
    write_text(d, "log.tsv", "1\t3\n0\t4\n1\t5\n0\t6\n1\t7\n0\t8\n1\t9\n0\t1\n1\t2\n0\t3\n");
    write_text(d, "afile", "x");
    char afile[1100];
    snprintf(afile, sizeof afile, "%s/afile", d);
    cr_expect_eq(rk_data_log(sch, in, afile, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "output directory (--out)") && strstr(e.msg, "afile: exists and is not a directory"), "%s", e.msg);
    cr_expect(!strstr(e.msg, "schema.json"), "the schema is not to blame: %s", e.msg);
    char under[1200];
    snprintf(under, sizeof under, "%s/afile/sub", d); /* a parent that is a file */
    cr_expect_neq(rk_data_log(sch, in, under, &e), RK_OK);
    cr_expect(strstr(e.msg, "output directory (--out)") && !strstr(e.msg, "schema.json"), "%s", e.msg);
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_OK, "%s", e.msg);
    write_text(d, "schema.json", "{\"header\": false, \"label\": \"y\", \"features\": [{\"column\": \"m\"}], \"bogus\": 1}");
    cr_expect_eq(rk_data_log(sch, in, out, &e), RK_EINVAL);
    cr_expect(strstr(e.msg, "unknown key 'bogus'"), "%s", e.msg);
    rm_dir(d);
}

/* Fresh-user trial 3: a schema value of the wrong type once fell back to the
 * key's default without a word ("kind": 7 a sparse feature, "delimiter": 44
 * a tab), a repeated key's last value won, a non-string "missing" entry was
 * skipped, and a separator equal to the delimiter (quotes off, so no field
 * can hold it) gave bags of one. */
Test(data_log, schema_types_duplicates_and_separator) {
    char *d = make_tmpdir();
    char in[1024], sch[1024], out[1024];
    snprintf(in, sizeof in, "%s/log.csv", d);
    snprintf(sch, sizeof sch, "%s/schema.json", d);
    snprintf(out, sizeof out, "%s/out", d);
    write_text(d, "log.csv", "y,n,c\n1,3,a\n0,4,b\n1,5,c\n0,6,d\n1,7,e\n0,8,f\n1,9,g\n0,1,h\n1,2,i\n0,3,j\n");
    static const char *const bad[][2] = {
        {"{\"delimiter\": 44, \"label\": \"y\", \"features\": [{\"column\": \"c\"}]}", "schema delimiter: expected a string"},
        {"{\"delimiter\": \",\", \"label\": \"y\", \"features\": [{\"column\": \"c\", \"kind\": 7}]}",
         "schema features[0].kind: expected a string"},
        {"{\"delimiter\": \",\", \"label\": \"y\", \"features\": [{\"column\": \"c\", \"separator\": 5}]}",
         "schema features[0].separator: expected a string"},
        {"{\"delimiter\": \",\", \"label\": \"y\", \"features\": [{\"column\": \"c\"}], \"crosses\": [{\"name\": 3, \"columns\": [\"n\", \"c\"]}]}",
         "schema crosses[0].name: expected a string"},
        {"{\"delimiter\": \",\", \"label\": \"y\", \"features\": [{\"column\": \"c\"}], \"split\": {\"method\": 1}}",
         "schema split.method: expected a string"},
        {"{\"delimiter\": \",\", \"label\": \"y\", \"missing\": [\"\", null], \"features\": [{\"column\": \"c\"}]}",
         "schema missing[1]: expected a string"},
        {"{\"delimiter\": \",\", \"delimiter\": \"\\t\", \"label\": \"y\", \"features\": [{\"column\": \"c\"}]}",
         "duplicate object key"},
        {"{\"delimiter\": \",\", \"quotes\": false, \"label\": \"y\", \"features\": [{\"column\": \"c\", \"separator\": \",\"}]}",
         "schema features[0].separator: ',' is the delimiter, which a field holds only with quotes on"},
    };
    rk_err e = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(d, "schema.json", bad[i][0]);
        cr_expect_neq(rk_data_log(sch, in, out, &e), RK_OK, "%s", bad[i][0]);
        cr_expect(strstr(e.msg, bad[i][1]) != NULL, "%s: %s", bad[i][0], e.msg);
        cr_expect(!exists(d, "out/train.tsv"), "%s: written", bad[i][0]);
    }
    /* with quotes on, a quoted field holds the delimiter: a separator then */
    write_text(d, "log.csv", "y,n,c\n1,3,\"a,b\"\n0,4,b\n1,5,c\n0,6,d\n1,7,e\n0,8,f\n1,9,g\n0,1,h\n1,2,i\n0,3,j\n");
    write_text(d, "schema.json", "{\"delimiter\": \",\", \"label\": \"y\", \"features\": [{\"column\": \"c\", \"separator\": \",\"}]}");
    cr_assert_eq(rk_data_log(sch, in, out, &e), RK_OK, "%s", e.msg);
    char p[1100], *t;
    snprintf(p, sizeof p, "%s/train.tsv", out);
    cr_assert_eq(rk_read_file(p, &t, NULL, &e), RK_OK, "%s", e.msg);
    cr_expect(strstr(t, "label\tc\n1\ta|b\n") == t, "%s", t);
    rk_free(t);
    rm_dir(d);
}
