/*
 * tools/rankd.c — the ranking server: a thin main over rk_server.
 *
 *   rankd (--model DIR | --model-repository DIR) --listen HOST:PORT [options]
 *         (rankd --help lists them; --config FILE gives them as JSON, flags win)
 *
 * --model-repository serves DIR/<model>/<version>/ through rk_repo
 * (serve/repository.c): scanned at start, on SIGHUP and every
 * --poll-seconds. --metrics-listen serves GET /metrics; --tls-* and
 * --admin-* secure the port and Admin (serve/auth.c). On SIGINT/SIGTERM the
 * server first answers health NOT_SERVING for --drain-ms.
 *
 * SIGINT, SIGTERM and SIGHUP are blocked before gRPC starts, so every thread
 * gRPC or the server creates inherits the mask (c-stack.md §2.2 step 1), and
 * the main thread takes them from a signalfd or, when a thread that does not
 * block them caught one, from a self-pipe (see on_signal); on SIGINT/SIGTERM the server drains and the
 * process exits 0 after a final line of request counters and the mean time
 * per stage of the calls answered OK (queue, decode, lookup, model, encode).
 * Port 0 picks a free port; the log line "listening on HOST:PORT" carries
 * the port actually bound (tests parse it).
 *
 * SIGHUP: reload. --model is resolved again (a publisher writes each bundle
 * version into its own directory and then atomically repoints a symlink,
 * e.g. `ln -s v2 current.new && mv -T current.new current`); if it now names
 * another directory, that version is opened while the old one serves and
 * the server switches to it (rk_server_reload); the old version closes when
 * its last request finishes. A failed reload is logged and the old version
 * keeps serving. Every store is first opened by a child process (this
 * executable, --rk-store-probe-serve, kept; rk_store_set_probe) so that a table file
 * that makes RocksDB assert is refused instead of aborting rankd. --updates opens the tables writable and serves
 * rankd.v1.Admin/ApplyUpdates (online row updates through the WAL).
 * Exit codes: 0 clean shutdown, 1 start-up failure (model, port), 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "serve.h"
#include "store.h"

static void usage(FILE *o) {
    fprintf(o,
            "usage: rankd (--model DIR | --model-repository DIR) --listen HOST:PORT [--threads N]\n"
            "             [--blas-threads N]\n"
            "             [--max-candidates N] [--queue-depth N] [--requests-per-worker N]\n"
            "             [--max-message-bytes N] [--ram-tables-mb N] [--encoder DIR] [--image-encoder DIR]\n"
            "             [--updates] [--device cpu|auto|cuda[:N]] [--metrics-listen HOST:PORT] [--version]\n"
            "             [--redis-cluster HOST:PORT[,HOST:PORT...] [--redis-timeout-ms N]\n"
            "              [--redis-fallback rocksdb|default] [--redis-cache-mb N]]\n"
            "       rankd --help | --version\n"
            "\n"
            "  Serves rankd.v1.Ranker/Rank and grpc.health.v1.Health/Check for the model\n"
            "  bundle DIR. Port 0 picks a free port (see the 'listening on' log line).\n"
            "\n"
            "  --threads N            worker threads, each with its own scorer (default 2)\n"
            "  --blas-threads N       OpenBLAS threads each matrix product may use (default 1;\n"
            "                         OpenBLAS 0.3.21 has one pool for the process)\n"
            "  --max-candidates N     candidates per request (default 1000); buffers are sized\n"
            "                         for it at start-up, more -> RESOURCE_EXHAUSTED\n"
            "  --queue-depth N        accepted requests waiting for a worker (default 64); when\n"
            "                         full, new requests get RESOURCE_EXHAUSTED at once\n"
            "  --requests-per-worker N  Rank calls kept requested from gRPC per worker (default 4)\n"
            "  --max-message-bytes N  largest request accepted, bytes (default 4194304)\n"
            "  --ram-tables-mb N      serve embedding tables from RAM when they fit in N MiB\n"
            "                         (default 512; 0: always read RocksDB)\n"
            "  --encoder DIR          text encoder (all-MiniLM-L6-v2 layout) for candidates'\n"
            "                         content_text: a semantic-ID model assigns codes to ads its\n"
            "                         item records do not know from their text (one per worker);\n"
            "                         a model with an EmbSum bundle (rank embsum export/attach)\n"
            "                         computes CPEs of unknown ads and UPEs from recent_item_ids;\n"
            "                         content_text: UTF-8, no NUL, at most 8192 bytes, only\n"
            "                         whitespace = none; else INVALID_ARGUMENT\n"
            "  --image-encoder DIR    vision encoder (DINOv2, scripts/setup-vision.sh) for\n"
            "                         candidates' content_image (JPEG/PNG, at most 4 MiB and\n"
            "                         8 megapixels, else INVALID_ARGUMENT), as --encoder for\n"
            "                         text; with both, text and image embeddings concatenated\n"
            "  --device SPEC          where the towers run: cpu (default); cuda or cuda:N, an\n"
            "                         NVIDIA GPU through librankd_cuda.so (start-up fails naming\n"
            "                         the CUDA error when it does not work; never a silent\n"
            "                         fallback); auto: a GPU when one works, else the CPU.\n"
            "                         Embedding bags are pooled on the CPU either way\n"
            "  --updates              open the bundle's tables writable and serve\n"
            "                         rankd.v1.Admin/ApplyUpdates (durable online row updates)\n"
            "  --redis-cluster SEEDS  embedding rows from a Redis Cluster between the RAM cache\n"
            "                         and RocksDB (README \"Redis Cluster tier\"): the version\n"
            "                         must have been loaded (`rank store publish-redis`), else\n"
            "                         the bundle is refused; --updates then writes to the\n"
            "                         cluster (WAIT 1 replica) and every replica's cache follows\n"
            "                         the update stream; the local tables stay read-only. Not\n"
            "                         with --ram-tables-mb > 0 (RAM copies would miss updates).\n"
            "                         A bundle without tables/ (`rank store thin`) is served\n"
            "                         from the cluster alone (no RocksDB fallback). A version\n"
            "                         replaced by a newer one of its lineage is dropped from the\n"
            "                         cluster when the last replica lets go of it\n"
            "  --redis-timeout-ms N   a lookup's Redis budget (default 50): keys not answered in\n"
            "                         time (node down, failover) get the fallback\n"
            "  --redis-fallback WHAT  rocksdb (default): such keys are read from the bundle's\n"
            "                         tables; default: they get the table's default row\n"
            "                         (counted, printed at exit)\n"
            "  --redis-cache-mb N     RAM row cache in front of Redis, MiB (default: the store's\n"
            "                         64 MiB)\n"
            "  --metrics-listen HOST:PORT  Prometheus text endpoint GET /metrics on its own\n"
            "                         address (port 0: a free one, see the 'metrics on' line)\n"
            "  --version              print the version and exit\n"
            "  --model-repository DIR serve DIR/<model>/<version>/ bundles (TF Serving's layout,\n"
            "                         <version> a decimal number), several models at once, routed\n"
            "                         by RankRequest.model_name (+ model_version); a version is\n"
            "                         opened, schema-checked against the served one and warmed up\n"
            "                         before it takes traffic; one that fails is refused (logged)\n"
            "                         and the old one keeps serving; retired versions drain first\n"
            "  --version-policy P     latest:N (default latest:1) or specific:V1,V2,...\n"
            "  --poll-seconds N       rescan the repository every N s (default 0: on SIGHUP only)\n"
            "  --drain-ms N           on SIGINT/SIGTERM, answer health NOT_SERVING while still\n"
            "                         serving for N ms before stopping (default 0)\n"
            "  --grace-ms N           then give in-flight calls N ms before cancelling (default 5000)\n"
            "  --no-reflection        do not serve gRPC server reflection (default: served, v1alpha\n"
            "                         and v1: the services and their proto descriptors)\n"
            "  --log-level L          debug, info (default), warn or error\n"
            "  --log-json             one JSON object per log line (ts, level, program, msg)\n"
            "  --access-log-sample N  one access line per N Rank calls per worker (default 0: none;\n"
            "                         errors are logged with their request id, at most 1/s/worker)\n"
            "  --config FILE          flags from a JSON object {\"long-flag\": value, ...};\n"
            "                         flags given on the command line win\n"
            "  --tls-cert F --tls-key F  TLS on the gRPC port (PEM server certificate and key);\n"
            "                         without them the port is plaintext (for loopback development)\n"
            "  --tls-client-ca F      mutual TLS: every client presents a certificate signed by F\n"
            "  --admin-token-file F   Admin calls need 'authorization: Bearer <first line of F>'\n"
            "  --admin-allow-cn A,B   or a client certificate (mutual TLS) with one of these CNs;\n"
            "                         --updates with neither is allowed on loopback only. Every\n"
            "                         update is logged (who, model, table, rows) and counted\n"
            "\n"
            "  A request whose deadline has passed when a worker picks it up gets\n"
            "  DEADLINE_EXCEEDED without model work; the deadline (and a shutdown) is also\n"
            "  checked before each content_text or content_image is encoded (DEADLINE_EXCEEDED /\n"
            "  UNAVAILABLE).\n"
            "  Health (grpc.health.v1 Check): \"\" and rankd.v1.Ranker are SERVING once a model\n"
            "  is loaded, a model's name while it has a version; NOT_SERVING when draining.\n"
            "  SIGHUP with --model-repository: rescan it (and retry refused versions).\n"
            "  SIGHUP: re-resolve --model (e.g. a symlink to the current version) and switch\n"
            "  to it if it names another bundle, while the old one keeps serving. A bundle\n"
            "  that fails to open (at start or on SIGHUP) is refused with a message naming\n"
            "  the file or table; each store is first opened in a child process, so a table\n"
            "  file damaged in a way that aborts RocksDB is refused instead of killing rankd.\n"
            "  SIGINT/SIGTERM: finish in-flight calls, print counters, exit 0.\n");
}

/* Signals reach the main loop by one of two paths, so that none is lost and
 * none takes its default action (terminating rankd):
 *  - a thread that does not block them (OpenBLAS starts its thread pool in a
 *    library constructor, before main can block anything) runs on_signal,
 *    which writes the signal number into a pipe;
 *  - otherwise the signal stays pending for the process, blocked in every
 *    thread, and the main loop reads it from a signalfd.
 * sigwait alone was not enough: while the main thread is busy (a reload
 * takes 10-300 ms), a second SIGHUP went to an OpenBLAS thread and killed
 * the process with SIGHUP's default action. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(sig_pipe[1], &b, 1); /* async-signal-safe; a full pipe drops a duplicate */
    (void)r;
    errno = saved;
}

static int install_signals(const sigset_t *sigs, int *sfd) {
    if (pipe(sig_pipe) != 0) return -1;
    for (int i = 0; i < 2; i++)
        if (fcntl(sig_pipe[i], F_SETFL, O_NONBLOCK) != 0 || fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) || sigaction(SIGTERM, &sa, NULL) || sigaction(SIGHUP, &sa, NULL)) return -1;
    *sfd = signalfd(-1, sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    return *sfd < 0 ? -1 : 0;
}

/* The next of SIGINT / SIGTERM / SIGHUP, whichever path it came by. */
static int next_signal(int sfd) {
    for (;;) {
        unsigned char b;
        if (read(sig_pipe[0], &b, 1) == 1) return b;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) return (int)si.ssi_signo;
        struct pollfd p[2] = {{.fd = sig_pipe[0], .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        (void)poll(p, 2, -1);
    }
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    long long v;
    rk_err e = {0};
    if (rk_parse_int(opt, s, lo, hi, &v, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* --version-policy latest:N | specific:V1,V2,... */
static int parse_policy(const char *s, rk_repo_opts *ro) {
    if (!strncmp(s, "latest:", 7)) {
        ro->n_specific = 0;
        return parse_int("--version-policy latest", s + 7, 1, 8, &ro->latest);
    }
    if (!strncmp(s, "specific:", 9)) {
        const char *p = s + 9;
        ro->n_specific = 0;
        for (;;) {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p || v < 0 || (*end && *end != ',') || ro->n_specific == RK_REPO_MAX_SPECIFIC) break;
            ro->specific[ro->n_specific++] = v;
            if (!*end) return 0;
            p = end + 1;
        }
    }
    fprintf(stderr, "rankd: --version-policy '%s': expected latest:N (1..8) or specific:V1,V2,... "
                    "(at most %d decimal versions)\n", s, RK_REPO_MAX_SPECIFIC);
    return -1;
}

static const struct option opts[] = {{"model", 1, 0, 'm'},       {"listen", 1, 0, 'l'},
                                   {"threads", 1, 0, 't'},     {"max-candidates", 1, 0, 'c'},
                                   {"max-message-bytes", 1, 0, 'b'},
                                   {"blas-threads", 1, 0, 'B'},  {"queue-depth", 1, 0, 'q'},
                                   {"requests-per-worker", 1, 0, 'r'},
                                   {"ram-tables-mb", 1, 0, 'R'}, {"encoder", 1, 0, 'E'},
                                   {"updates", 0, 0, 'U'},      {"metrics-listen", 1, 0, 'M'},
                                   {"version", 0, 0, 'V'},      {"model-repository", 1, 0, 'D'},
                                   {"version-policy", 1, 0, 'P'}, {"poll-seconds", 1, 0, 'S'},
                                   {"drain-ms", 1, 0, 'W'},     {"grace-ms", 1, 0, 'G'},
                                   {"tls-cert", 1, 0, 1001},    {"tls-key", 1, 0, 1002},
                                   {"tls-client-ca", 1, 0, 1003}, {"admin-token-file", 1, 0, 1004},
                                   {"admin-allow-cn", 1, 0, 1005},
                                   {"log-level", 1, 0, 1007},   {"log-json", 0, 0, 1008},
                                   {"access-log-sample", 1, 0, 1009}, {"config", 1, 0, 1010},
                                   {"image-encoder", 1, 0, 'I'}, {"device", 1, 0, 1011},
                                   {"redis-cluster", 1, 0, 'C'}, {"redis-timeout-ms", 1, 0, 'T'},
                                   {"redis-fallback", 1, 0, 'F'}, {"redis-cache-mb", 1, 0, 'K'},
                                   {"no-reflection", 0, 0, 1012},
                                   {"help", 0, 0, 'h'},        {0, 0, 0, 0}};

/* Flags from --config FILE: a JSON object whose keys are rankd's long flag
 * names ("model-repository": "/srv/models", "threads": 4, "updates": true).
 * They go before the command line's own flags, and a flag the command line
 * gives is skipped from the file: flags win. *nargv is argv with the
 * config's flags inserted (and --config FILE removed); 2 on a usage error. */
static char **cfg_argv;   /* the expanded argv (freed at exit: optarg points into it) */
static int cfg_first, cfg_end; /* cfg_argv[cfg_first..cfg_end) were strdup'd */

static void free_config(void) {
    for (int i = cfg_first; i < cfg_end; i++) free(cfg_argv[i]);
    free(cfg_argv);
}

static int expand_config(int argc, char **argv, int *nargc, char ***nargv) {
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) path = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9)) path = argv[i] + 9;
    }
    *nargc = argc;
    *nargv = argv;
    if (!path) return 0;
    char *text = NULL;
    size_t len = 0;
    rk_err e = {0};
    if (rk_read_file(path, &text, &len, &e)) {
        fprintf(stderr, "rankd: --config: %s\n", e.msg);
        return 2;
    }
    const char *nul = memchr(text, 0, len); /* json_loads stopped there: the rest was ignored */
    if (nul) {
        fprintf(stderr, "rankd: --config %s: a NUL byte at byte %zu\n", path, (size_t)(nul - text) + 1);
        rk_free(text);
        return 2;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je); /* each key once */
    rk_free(text);
    if (!root || !json_is_object(root)) {
        if (root) fprintf(stderr, "rankd: --config %s: not a JSON object\n", path);
        else fprintf(stderr, "rankd: --config %s: line %d: %s\n", path, je.line, je.text);
        json_decref(root);
        return 2;
    }
    char **out = calloc((size_t)(argc + 2 * json_object_size(root) + 1), sizeof *out);
    int n = 0, bad = 0;
    out[n++] = argv[0];
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        const struct option *op = opts;
        while (op->name && strcmp(op->name, key)) op++;
        if (!op->name || !strcmp(key, "config") || !strcmp(key, "help") || !strcmp(key, "version")) {
            fprintf(stderr, "rankd: --config %s: unknown key '%s' (keys are rankd's long flags)\n", path, key);
            bad = 1;
            break;
        }
        int on_cli = 0;
        size_t kl = strlen(key);
        for (int i = 1; i < argc; i++)
            on_cli |= !strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, key, kl) && (!argv[i][2 + kl] || argv[i][2 + kl] == '=');
        char buf[64];
        const char *v = NULL;
        if (op->has_arg == no_argument) { /* types are checked even when the command line wins */
            if (!json_is_boolean(val)) {
                fprintf(stderr, "rankd: --config %s: '%s' must be true or false\n", path, key);
                bad = 1;
                break;
            }
            if (json_is_false(val) || on_cli) continue;
        } else if (on_cli && (json_is_string(val) || json_is_integer(val))) {
            continue;
        } else if (json_is_string(val)) {
            v = json_string_value(val);
        } else if (json_is_integer(val)) {
            snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(val));
            v = buf;
        } else {
            fprintf(stderr, "rankd: --config %s: '%s' must be a string or an integer\n", path, key);
            bad = 1;
            break;
        }
        char flag[160];
        snprintf(flag, sizeof flag, "--%s", key);
        out[n++] = strdup(flag);
        if (v) out[n++] = strdup(v);
    }
    json_decref(root);
    cfg_argv = out;
    cfg_first = 1;
    cfg_end = n;
    atexit(free_config);
    if (bad) return 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            i++;
            continue;
        }
        if (!strncmp(argv[i], "--config=", 9)) continue;
        out[n++] = argv[i];
    }
    *nargc = n;
    *nargv = out;
    return 0;
}

/* --model DIR: open it (tables to RAM within ram_mb) as rankd always did. */
static int open_model(const char *model, int updates, int ram_mb, rk_model **out) {
    rk_err e = {0};
    rk_model *m = NULL;
    if (rk_model_open_ex(model, updates, &m, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        return -1;
    }
    rk_info("model %s from %s", rk_model_version(m), rk_model_dir(m));
    size_t ram = 0;
    if (ram_mb > 0 && rk_model_tables_to_ram(m, (size_t)ram_mb << 20, &ram, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        rk_model_destroy(m);
        return -1;
    }
    if (ram) rk_info("embedding tables in RAM: %.1f MiB", ram / 1048576.0);
    else rk_info("embedding tables served from %s (--ram-tables-mb %d)",
                 rk_store_tier() ? "the Redis Cluster tier" : "RocksDB", ram_mb);
    *out = m;
    return 0;
}

int main(int argc, char **argv) {
    int probe = rk_store_probe_main(argc, argv);
    if (probe >= 0) return probe;
    /* a damaged SST can abort RocksDB: open every store (start-up and
     * reloads) in a child first, so that the server refuses it instead */
    rk_store_set_probe("/proc/self/exe");
    if (expand_config(argc, argv, &argc, &argv)) return 2;
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    const char *model = NULL, *listen = NULL;
    int blas_threads = 1, ram_mb = 512, updates = 0, drain_ms = 0, ram_given = 0;
    rk_repo_opts ro = {.latest = 1, .poll_s = 0};
    const char *redis_seeds = NULL;
    rk_redis_opts rro = RK_REDIS_OPTS_DEFAULT;

    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm':
            if (model) {
                fprintf(stderr, "rankd: --model given twice ('%s', then '%s'): one bundle per --model; "
                                "serve several with --model-repository\n", model, optarg);
                return 2;
            }
            model = optarg;
            break;
        case 'M': o.metrics_listen = optarg; break;
        case 'D': ro.dir = optarg; break;
        case 1001: o.tls_cert_file = optarg; break;
        case 1002: o.tls_key_file = optarg; break;
        case 1003: o.tls_client_ca_file = optarg; break;
        case 1004: o.admin_token_file = optarg; break;
        case 1005: o.admin_allow_cn = optarg; break;
        case 1007: {
            rk_log_level lv;
            if (rk_log_parse_level(optarg, &lv)) {
                fprintf(stderr, "rankd: --log-level '%s': expected debug, info, warn or error\n", optarg);
                return 2;
            }
            rk_log_set_level(lv);
            break;
        }
        case 1008: rk_log_set_json(1); break;
        case 1009: bad = parse_int("--access-log-sample", optarg, 0, 1000000000, &o.access_log_sample); break;
        case 1010: break; /* expanded before */
        case 1012: o.no_reflection = 1; break;
        case 'P': bad = parse_policy(optarg, &ro); break;
        case 'S': bad = parse_int("--poll-seconds", optarg, 0, 86400, &ro.poll_s); break;
        case 'W': bad = parse_int("--drain-ms", optarg, 0, 600000, &drain_ms); break;
        case 'G': bad = parse_int("--grace-ms", optarg, 0, 600000, &o.grace_ms); break;
        case 'V': printf("rankd %s\n", rk_version_string()); return 0;
        case 'E': o.encoder_dir = optarg; break;
        case 'I': o.image_encoder_dir = optarg; break;
        case 1011: o.device = optarg; break;
        case 'C': redis_seeds = optarg; break;
        case 'K': {
            int mb = 0;
            bad = parse_int("--redis-cache-mb", optarg, 0, 1 << 20, &mb);
            rro.cache_bytes = (long long)mb << 20;
            break;
        }
        case 'T': bad = parse_int("--redis-timeout-ms", optarg, 1, 60000, &rro.timeout_ms); break;
        case 'F':
            if (!strcmp(optarg, "rocksdb") || !strcmp(optarg, "default")) rro.rocksdb_fallback = !strcmp(optarg, "rocksdb");
            else bad = fprintf(stderr, "rankd: --redis-fallback: expected rocksdb or default, got '%s'\n", optarg) > 0;
            break;
        case 'l': listen = optarg; break;
        case 't': bad = parse_int("--threads", optarg, 1, 256, &o.threads); break;
        case 'c': bad = parse_int("--max-candidates", optarg, 1, 1000000, &o.max_candidates); break;
        case 'b': bad = parse_int("--max-message-bytes", optarg, 64, INT_MAX, &o.max_message_bytes); break;
        case 'R': bad = parse_int("--ram-tables-mb", optarg, 0, 1 << 30, &ram_mb), ram_given = 1; break;
        case 'B': bad = parse_int("--blas-threads", optarg, 1, 64, &blas_threads); break;
        case 'q': bad = parse_int("--queue-depth", optarg, 1, 1000000, &o.queue_depth); break;
        case 'r': bad = parse_int("--requests-per-worker", optarg, 1, 1024, &o.requests_per_worker); break;
        case 'U': updates = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc || !(model || ro.dir) || (model && ro.dir) || !listen) {
        if (optind < argc) fprintf(stderr, "rankd: unexpected argument '%s'\n", argv[optind]);
        else if (model && ro.dir) fprintf(stderr, "rankd: --model and --model-repository: give one of them\n");
        else fprintf(stderr, "rankd: --model (or --model-repository) and --listen are required (see --help)\n");
        return 2;
    }
    {
        /* HOST:PORT with a decimal port in 0..65535: gRPC would otherwise
         * take "host:99999" modulo 65536 and "host:" as port 443. */
        const char *colon = strrchr(listen, ':');
        const char *pt = colon ? colon + 1 : "";
        int ok = colon && colon != listen && *pt && strlen(pt) <= 5;
        for (const char *q = pt; ok && *q; q++) ok = *q >= '0' && *q <= '9';
        if (ok && atol(pt) > 65535) ok = 0;
        if (!ok) {
            fprintf(stderr, "rankd: --listen '%s': expected HOST:PORT with a port in 0..65535\n", listen);
            return 2;
        }
    }
    o.listen = listen;
    if (redis_seeds && ram_given && ram_mb > 0) {
        fprintf(stderr, "rankd: --ram-tables-mb %d with --redis-cluster: RAM copies of the tables would not see "
                        "other replicas' updates; use the store's RAM cache (--ram-tables-mb 0)\n", ram_mb);
        return 2;
    }
    if (redis_seeds) ram_mb = 0;

    /* Before any thread exists that gRPC or the server starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = -1;
    if (install_signals(&sigs, &sfd) != 0) {
        fprintf(stderr, "rankd: cannot install signal handling: %s\n", strerror(errno));
        return 1;
    }

    /* Parallelism comes from the workers; one BLAS thread each by default
     * (c-stack.md §5). */
    openblas_set_num_threads(blas_threads);
    rk_log_blas_info();
    rk_err e = {0};
    rk_redis *redis = NULL;
    if (redis_seeds) {
        rro.drop_retired = 1;
        if (rk_redis_create(redis_seeds, &rro, &redis, &e)) {
            fprintf(stderr, "rankd: %s\n", e.msg);
            return 1;
        }
        rk_store_set_tier(redis); /* every store rankd opens from now on (reloads too) */
        rk_info("Redis Cluster tier: %s (timeout %d ms, fallback %s)", redis_seeds, rro.timeout_ms,
                rro.rocksdb_fallback ? "rocksdb" : "default row");
    }
    rk_model *m = NULL;
    o.updates = updates;
    o.ram_tables_bytes = (size_t)ram_mb << 20;
    o.own_model = 1; /* a reload may retire the start-up version */
    if (model && open_model(model, updates, ram_mb, &m) != 0) return 1;
    rk_server *srv = NULL;
    int port = 0;
    if (rk_server_start(&o, m, &srv, &port, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        rk_model_destroy(m); /* a failed start leaves it to us */
        return 1;
    }
    rk_repo *repo = NULL;
    if (ro.dir) {
        rk_repo_stats rs;
        if (rk_repo_create(srv, &ro, &repo, &e) || rk_repo_scan(repo, 1, &rs, &e) ||
            rk_repo_start_polling(repo, &e)) {
            fprintf(stderr, "rankd: %s\n", e.msg);
            rk_repo_destroy(repo);
            rk_server_stop(srv, NULL);
            return 1;
        }
        rk_info("model repository %s: %d versions loaded, %d refused (policy %s%d, poll every %d s)", ro.dir,
                rs.loaded, rs.refused, ro.n_specific ? "specific, " : "latest:", ro.n_specific ? ro.n_specific : ro.latest,
                ro.poll_s);
        if (!rs.loaded) rk_warn("no model loaded yet: health NOT_SERVING, Rank UNAVAILABLE until one loads");
    }
    /* The bound address: the listen host with the port actually bound. */
    const char *colon = strrchr(listen, ':');
    int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);
    if (o.metrics_listen) {
        const char *mc = strrchr(o.metrics_listen, ':');
        rk_info("metrics on http://%.*s:%d/metrics", mc ? (int)(mc - o.metrics_listen) : 0, o.metrics_listen,
                rk_server_metrics_port(srv));
    }
    rk_info("listening on %.*s:%d (threads=%d blas_threads=%d max_candidates=%d queue_depth=%d "
            "max_message_bytes=%d tls=%s)",
            host_len, listen, port, o.threads, blas_threads, o.max_candidates, o.queue_depth,
            o.max_message_bytes, o.tls_cert_file ? (o.tls_client_ca_file ? "mutual" : "on") : "off");

    int sig = 0;
    for (;;) {
        sig = next_signal(sfd);
        if (sig != SIGHUP) break;
        if (repo) {
            rk_repo_stats rs;
            if (rk_repo_scan(repo, 1, &rs, &e)) rk_error("SIGHUP: %s", e.msg);
            else rk_info("SIGHUP: repository scanned: %d loaded, %d refused, %d unloaded", rs.loaded, rs.refused, rs.unloaded);
            continue;
        }
        int switched = 0;
        double t0 = rk_now();
        if (rk_server_reload(srv, model, &switched, &e)) {
            rk_error("SIGHUP: reload of %s failed, the old version keeps serving: %s", model, e.msg);
            continue;
        }
        char ver[256], dir[4096];
        rk_server_current(srv, ver, sizeof ver, dir, sizeof dir);
        if (switched) rk_info("SIGHUP: now serving model %s from %s (opened in %.0f ms)", ver, dir, (rk_now() - t0) * 1e3);
        else rk_info("SIGHUP: %s still names %s: nothing to reload", model, dir);
    }
    const char *sname = sig == SIGINT ? "SIGINT" : "SIGTERM";
    rk_server_drain(srv);
    rk_repo_destroy(repo);
    rk_info("%s: draining: health NOT_SERVING, calls still served for %d ms (--drain-ms)", sname, drain_ms);
    if (drain_ms > 0) {
        struct timespec ts = {drain_ms / 1000, (long)(drain_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
    }
    rk_info("%s: stopping (in-flight calls get %d ms)", sname, o.grace_ms);
    rk_server_counters cnt;
    rk_server_stop(srv, &cnt); /* destroys the serving model (own_model) */
    double n = cnt.rank_ok ? (double)cnt.rank_ok : 1.0;
    rk_info("stopped: rank_ok=%llu rank_failed=%llu rank_expired=%llu rank_rejected=%llu health=%llu "
            "unimplemented=%llu mean_us: queue=%.1f decode=%.1f lookup=%.1f model=%.1f encode=%.1f",
            (unsigned long long)cnt.rank_ok, (unsigned long long)cnt.rank_failed,
            (unsigned long long)cnt.rank_expired, (unsigned long long)cnt.rank_rejected,
            (unsigned long long)cnt.health, (unsigned long long)cnt.unimplemented, cnt.queue_us / n,
            cnt.decode_us / n, cnt.lookup_us / n, cnt.model_us / n, cnt.encode_us / n);
    if (cnt.sid_unknown || cnt.sid_assigned)
        rk_info("semantic IDs: %llu ads assigned codes at request time, %llu unknown ads scored with the default",
                (unsigned long long)cnt.sid_assigned, (unsigned long long)cnt.sid_unknown);
    if (redis) {
        rk_redis_stats rs;
        rk_redis_stats_get(redis, &rs);
        rk_info("redis: batches=%llu round_trips=%llu redirects=%llu map_refreshes=%llu connects=%llu "
                "connect_failures=%llu failed_keys=%llu default_rows=%llu stream_updates=%llu",
                (unsigned long long)rs.batches, (unsigned long long)rs.round_trips, (unsigned long long)rs.redirects,
                (unsigned long long)rs.map_refreshes, (unsigned long long)rs.connects,
                (unsigned long long)rs.connect_failures, (unsigned long long)rs.failed_items,
                (unsigned long long)rs.default_rows, (unsigned long long)rs.stream_updates);
        rk_redis_destroy(redis);
    }
    return 0;
}
