/*
 * tests/test_distill_cli.c — `rank distill` as a user runs it (the real
 * binary): --json is valid JSON (null where NE/AUC are undefined, with the
 * `distilled` count), vertical names cannot leave --out, bad input is
 * refused before anything is created with a message naming the flag and the
 * value typed, a run that fails late or is interrupted (SIGINT, SIGTERM)
 * leaves nothing behind and the same --out works on the next run, and what
 * a killed run (SIGKILL) left is swept by the next one.
 *
 * Data: the first 3000 events of the bundled MovieLens (rank data
 * movielens; its schema.json kept as input-schema.json), 6 chunks, 2 warm-up, the small teacher: a full run takes a
 * few seconds.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "distill.h"

#define RANK RK_BINARY_DIR "/bin/rank"
#define CFGS "--teacher-config " RK_SOURCE_DIR "/configs/exfm_teacher_small.json --student-config " RK_SOURCE_DIR \
             "/configs/exfm_student.json --chunks 6 --warmup 2"

static char tmpdir[256];

/* tmpdir/s.tsv: the header and the first 3000 rows of MovieLens train.tsv */
static void setup(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rk-test-distill-cli-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    char ml[512], cmd[2048];
    snprintf(ml, sizeof ml, "%s/ml", tmpdir);
    rk_err e;
    cr_assert_eq(rk_data_movielens(RK_SOURCE_DIR "/data/movielens", ml, &e), RK_OK, "%s", e.msg);
    snprintf(cmd, sizeof cmd, "head -n 3001 %s/train.tsv > %s/s.tsv && cp %s/schema.json %s/input-schema.json && rm -rf %s", ml,
             tmpdir, ml, tmpdir, ml);
    cr_assert_eq(system(cmd), 0);
}
static void teardown(void) { rk_rm_rf(tmpdir, NULL); }

/* Run `rank distill ARGS` (shell syntax) in tmpdir; stdout/stderr in out.txt/err.txt. Returns the exit code. */
static int distill(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int distill(const char *fmt, ...) {
    char args[3000], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && " RANK " distill %s >out.txt 2>err.txt", tmpdir, args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

static char *slurp(const char *name) {
    static char buf[1 << 16];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "r");
    buf[0] = 0;
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
    }
    return buf;
}

static int exists(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return rk_path_exists(path);
}

/* Entries of tmpdir other than the inputs and the captured output (what a run left). */
static int leftovers(char *names, size_t cap) {
    DIR *d = opendir(tmpdir);
    cr_assert_not_null(d);
    struct dirent *de;
    int n = 0;
    names[0] = 0;
    while ((de = readdir(d))) {
        const char *x = de->d_name;
        if (!strcmp(x, ".") || !strcmp(x, "..") || !strcmp(x, "out.txt") || !strcmp(x, "err.txt") || strstr(x, ".tsv") ||
            !strcmp(x, "schema.json") || strstr(x, "input-"))
            continue;
        n++;
        strncat(names, x, cap - strlen(names) - 2);
        strncat(names, " ", cap - strlen(names) - 1);
    }
    closedir(d);
    return n;
}

#define EXPECT_NOTHING_LEFT()                                                   \
    do {                                                                        \
        char left_[1024];                                                       \
        cr_expect_eq(leftovers(left_, sizeof left_), 0, "left behind: %s", left_); \
    } while (0)

/* A refused run: exit code rc_want, the stderr has every needle, nothing was created. */
static void refused(int rc, int rc_want, const char *const *needles) {
    const char *err = slurp("err.txt");
    cr_expect_eq(rc, rc_want, "exit %d, want %d; stderr: %s", rc, rc_want, err);
    for (; *needles; needles++) cr_expect(strstr(err, *needles) != NULL, "stderr lacks \"%s\": %s", *needles, err);
    EXPECT_NOTHING_LEFT();
}
#define REFUSED(rc, want, ...) refused(rc, want, (const char *const[]){__VA_ARGS__, NULL})

static void write_text(const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static json_t *load_json(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    cr_assert_not_null(j, "%s: invalid JSON: line %d: %s", name, je.line, je.text);
    return j;
}

TestSuite(distill_cli, .init = setup, .fini = teardown, .timeout = 240);

Test(distill_cli, json_is_valid_with_distilled_and_checkpoints_have_plain_names) {
    int rc = distill("--stream s.tsv " CFGS " --modes none,kd --out o --json r.json --checkpoints --verticals 'x_1:Drama;Y-2:Comedy'");
    cr_assert_eq(rc, 0, "%s", slurp("err.txt"));
    json_t *j = load_json("r.json");
    json_t *res = json_object_get(j, "results");
    cr_assert_eq(json_array_size(res), 4);
    json_t *kd = json_array_get(res, 2);
    cr_expect_str_eq(json_string_value(json_object_get(kd, "mode")), "kd");
    cr_expect_str_eq(json_string_value(json_object_get(kd, "vertical")), "x_1");
    cr_expect(json_is_real(json_object_get(kd, "ne")) && json_is_real(json_object_get(kd, "auc")));
    cr_expect_gt(json_integer_value(json_object_get(kd, "distilled")), 0, "the distilled count of stdout is in the JSON");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(res, 0), "distilled")), 0);
    json_decref(j);
    /* stdout says the same count */
    cr_expect(strstr(slurp("out.txt"), "student mode=kd vertical=x_1 ") != NULL);
    /* checkpoints: chunk-NNN only, no temporaries left */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && test -f o/checkpoints/kd/Y-2/chunk-005/exfm_training.safetensors && "
                              "! find o -name '*tmp*' | grep -q .", tmpdir);
    cr_expect_eq(system(cmd), 0, "a complete checkpoint and no *tmp* names under --out");
    snprintf(cmd, sizeof cmd, "cd %s && ls o/checkpoints/kd/Y-2 | tr '\\n' ' ' > ls.txt", tmpdir);
    cr_assert_eq(system(cmd), 0);
    cr_expect_str_eq(slurp("ls.txt"), "chunk-000 chunk-001 chunk-002 chunk-003 chunk-004 chunk-005 ");
}

Test(distill_cli, undefined_ne_auc_are_null_with_a_message) {
    /* every label 0: NE and AUC are undefined (not 'nan' in the JSON) */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && awk -F'\\t' 'BEGIN{OFS=\"\\t\"} NR>1{$1=0} {print}' s.tsv > zero.tsv", tmpdir);
    cr_assert_eq(system(cmd), 0);
    int rc = distill("--stream zero.tsv " CFGS " --modes none --out o --json r.json");
    cr_assert_eq(rc, 0, "%s", slurp("err.txt"));
    json_t *j = load_json("r.json");
    json_t *r0 = json_array_get(json_object_get(j, "results"), 0), *t0 = json_array_get(json_object_get(j, "teacher"), 0);
    cr_expect(json_is_null(json_object_get(r0, "ne")) && json_is_null(json_object_get(r0, "auc")));
    cr_expect(json_is_real(json_object_get(r0, "logloss")), "logloss is defined");
    cr_expect(json_is_null(json_object_get(t0, "ne")) && json_is_null(json_object_get(t0, "auc")));
    json_decref(j);
    const char *err = slurp("err.txt");
    cr_expect(strstr(err, "student mode=none vertical=action: NE and AUC are undefined: 0 of the") != NULL, "%s", err);
    cr_expect(strstr(err, "labels in chunks 2..5 are 1 (one class only)") != NULL, "%s", err);
}

Test(distill_cli, vertical_names_cannot_leave_out) {
    REFUSED(distill("--stream s.tsv " CFGS " --out o --checkpoints --verticals '../../../../escaped:Drama'"), 1,
            "--verticals '../../../../escaped:Drama': name '../../../../escaped' may contain only letters, digits, '_' and '-'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --json r.json --verticals 'dr\"am\\a:Drama;x:Comedy'"), 1,
            "--verticals 'dr\"am\\a:Drama;x:Comedy': name 'dr\"am\\a' may contain only");
    /* empty entries and genres were skipped (strtok) */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:Drama;;b:Comedy'"), 1,
            "--verticals 'a:Drama;;b:Comedy': entry 2 is empty");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:Drama;'"), 1, "--verticals 'a:Drama;': entry 2 is empty");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:Drama,,Comedy'"), 1,
            "--verticals 'a:Drama,,Comedy': 'a' has an empty genre");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:Drama,'"), 1, "'a' has an empty genre");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:'"), 1, "'a' has no genre");
}

Test(distill_cli, bad_input_is_refused_before_anything_is_created) {
    /* the label column */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && cut -f2- s.tsv > input-nolabel.tsv", tmpdir);
    cr_assert_eq(system(cmd), 0);
    REFUSED(distill("--stream input-nolabel.tsv " CFGS " --out o --json r.json"), 1,
            "--stream input-nolabel.tsv: no column 'label' (the label column of --teacher-config");
    /* no teacher prediction after the warm-up */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --staleness 5"), 1, "--staleness 5 / --warmup 2: vertical 'action' has no row with a teacher prediction");
    /* a vertical with no rows */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --verticals 'a:Drama;b:NoSuchGenre'"), 1,
            "--verticals 'a:Drama;b:NoSuchGenre': vertical 'b' matches no row of --stream s.tsv");
    /* ensembles */
    REFUSED(distill("--stream s.tsv --teacher-config " RK_SOURCE_DIR "/configs/movielens_cetnet.json --student-config " RK_SOURCE_DIR
                    "/configs/exfm_student.json --out o"),
            1, "--teacher-config " RK_SOURCE_DIR "/configs/movielens_cetnet.json: an ensemble config");
    REFUSED(distill("--stream s.tsv --teacher-config " RK_SOURCE_DIR "/configs/exfm_teacher_small.json --student-config " RK_SOURCE_DIR
                    "/configs/movielens_cetnet.json --out o"),
            1, "--student-config " RK_SOURCE_DIR "/configs/movielens_cetnet.json: an ensemble config");
    /* --json: its directory, and never an input */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --json nodir/r.json"), 1, "--json nodir/r.json: cannot write in directory nodir: No such file or directory");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --json o"), 2, "--json o: is the --out directory");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --json ./s.tsv"), 1, "--json ./s.tsv: is the same file as --stream s.tsv");
    snprintf(cmd, sizeof cmd, "cp " RK_SOURCE_DIR "/configs/exfm_student.json %s/input-s.json", tmpdir);
    cr_assert_eq(system(cmd), 0);
    REFUSED(distill("--stream s.tsv --teacher-config " RK_SOURCE_DIR "/configs/exfm_teacher_small.json --student-config input-s.json "
                    "--out o --json input-s.json"),
            1, "--json input-s.json: is the same file as --student-config input-s.json");
    /* --modes */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --modes ''"), 2, "--modes '': empty mode");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --modes ,"), 2, "--modes ',': empty mode");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --modes kd,"), 2, "--modes 'kd,': empty mode");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --modes kd,kd"), 2, "--modes 'kd,kd': 'kd' appears twice");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --modes kd,xx"), 2, "--modes 'kd,xx': unknown mode 'xx'");
    /* knobs: the flag and the value typed */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --w 1e30 --beta 1e30 --modes ah"), 2, "--w: expected a number in [0, 1000], got '1e30'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --beta 1e30"), 2, "--beta: expected a number in [0, 1000], got '1e30'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --w-sa 1001"), 2, "--w-sa: expected a number in [0, 1000], got '1001'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --alpha 1e-50"), 2, "--alpha: expected a number in [1e-06, 1000], got '1e-50'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --alpha nan"), 2, "--alpha: expected a number in [1e-06, 1000], got 'nan'");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --lr-sa 0"), 2, "--lr-sa: expected a number in (0, 1], got '0'");
    /* the bias pair */
    REFUSED(distill("--stream s.tsv " CFGS " --out o --bias-factor 4"), 2, "--bias-factor without --bias-vertical");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --bias-vertical drama"), 2, "--bias-vertical without --bias-factor");
    REFUSED(distill("--stream s.tsv " CFGS " --out o --bias-vertical nope --bias-factor 2"), 1, "--bias-vertical: no vertical 'nope'");
    /* a stray argument */
    REFUSED(distill("--stream s.tsv " CFGS " --out o stray"), 2, "unexpected argument 'stray'");
    /* a student reading `rating`, which schema.json marks as the label's source */
    snprintf(cmd, sizeof cmd,
             "cd %s && sed 's/\"column\": \"year\"/\"column\": \"rating\"/; s/\"name\": \"year\"/\"name\": \"year\", \"column\": \"rating\"/' " RK_SOURCE_DIR
             "/configs/exfm_student.json > input-leak.json && grep -q rating input-leak.json && cp input-schema.json schema.json",
             tmpdir);
    cr_assert_eq(system(cmd), 0);
    REFUSED(distill("--stream s.tsv --teacher-config " RK_SOURCE_DIR "/configs/exfm_teacher_small.json --student-config input-leak.json "
                    "--out o"),
            1, "feature 'year' reads column 'rating' of s.tsv, which schema.json marks as derived from the label");
    snprintf(cmd, sizeof cmd, "rm %s/schema.json", tmpdir);
    cr_assert_eq(system(cmd), 0);
    /* the stream itself */
    write_text("input-ovf.tsv", "label\ttimestamp\tgenres\n1\t10\tDrama\n1\t99999999999999999999\tDrama\n1\t11\tDrama\n");
    REFUSED(distill("--stream input-ovf.tsv " CFGS " --out o"), 1, "input-ovf.tsv row 3, column timestamp: '99999999999999999999' overflows");
}

Test(distill_cli, a_late_failure_leaves_nothing_and_out_can_be_reused) {
    /* a teacher that diverges fails in the DAS log, after --out's staging
     * directory was created */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sed 's/\"lr_dense\": [0-9.e-]*/\"lr_dense\": 10/; s/\"lr_embed\": [0-9.e-]*/\"lr_embed\": 10/' " RK_SOURCE_DIR
             "/configs/exfm_teacher_small.json > %s/input-t.json",
             tmpdir);
    cr_assert_eq(system(cmd), 0);
    REFUSED(distill("--stream s.tsv --teacher-config input-t.json --student-config " RK_SOURCE_DIR
                    "/configs/exfm_student.json --chunks 6 --warmup 2 --out o --json r.json --checkpoints"),
            1, "teacher logit of example");
    int rc = distill("--stream s.tsv " CFGS " --modes none --out o --json r.json");
    cr_assert_eq(rc, 0, "the same --out after a failure: %s", slurp("err.txt"));
    json_decref(load_json("r.json"));
    /* and a second run is refused, saying what to do */
    rc = distill("--stream s.tsv " CFGS " --modes none --out o");
    cr_expect_eq(rc, 1);
    cr_expect(strstr(slurp("err.txt"), "--out o already exists (remove it") != NULL, "%s", slurp("err.txt"));
}

/* Start `rank distill ARGS` in tmpdir; wait until out.txt has `line`; send sig; return the exit code (128+sig if killed). */
static int interrupt(const char *args, const char *line, int sig, pid_t *pid_out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && exec " RANK " distill %s >out.txt 2>err.txt", tmpdir, args);
    char path[512];
    snprintf(path, sizeof path, "%s/out.txt", tmpdir);
    unlink(path); /* not the previous run's */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    *pid_out = pid;
    int st;
    for (int i = 0; i < 6000 && !strstr(slurp("out.txt"), line); i++) {
        cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "finished before '%s' appeared in stdout: %s", line, slurp("err.txt"));
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert(strstr(slurp("out.txt"), line) != NULL, "stdout is flushed line by line");
    kill(pid, sig);
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define ALL_MODES "--stream s.tsv " CFGS " --out o --json r.json --checkpoints"

Test(distill_cli, sigint_and_sigterm_stop_cleanly) {
    pid_t pid;
    int rc = interrupt(ALL_MODES, "student mode=none vertical=action", SIGINT, &pid);
    REFUSED(rc, 130, "rank distill: interrupted by SIGINT; removed what this run had written");
    cr_expect(strstr(slurp("out.txt"), "teacher vertical=drama") != NULL, "results so far are on stdout");
    rc = interrupt(ALL_MODES, "teacher:", SIGTERM, &pid);
    REFUSED(rc, 143, "interrupted by SIGTERM");
    rc = distill("--stream s.tsv " CFGS " --modes kd --out o --json r.json");
    cr_expect_eq(rc, 0, "the same --out after an interrupted run: %s", slurp("err.txt"));
}

Test(distill_cli, what_a_killed_run_left_is_swept) {
    pid_t pid;
    int rc = interrupt(ALL_MODES, "student mode=none vertical=action", SIGKILL, &pid);
    cr_assert_eq(rc, 128 + SIGKILL);
    char left[64];
    snprintf(left, sizeof left, "o.tmp-%ld", (long)pid);
    cr_expect(exists(left), "a killed run leaves its staging directory %s", left);
    cr_expect(!exists("o") && !exists("r.json"), "but never --out or --json");
    rc = distill("--stream s.tsv " CFGS " --modes kd --out o --json r.json");
    cr_expect_eq(rc, 0, "%s", slurp("err.txt"));
    cr_expect(!exists(left), "the next run removed %s", left);
    cr_expect(strstr(slurp("err.txt"), "left by a writer that died") != NULL, "%s", slurp("err.txt"));
}
