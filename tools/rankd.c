/*
 * tools/rankd.c — the ranking server: a thin main over rk_server.
 *
 *   rankd --model DIR --listen HOST:PORT [--threads N] [--blas-threads N]
 *         [--max-candidates N] [--queue-depth N] [--max-message-bytes N]
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
 * executable, --rk-store-probe DIR; rk_store_set_probe) so that a table file
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

#include "serve.h"
#include "store.h"

static void usage(FILE *o) {
    fprintf(o,
            "usage: rankd --model DIR --listen HOST:PORT [--threads N] [--blas-threads N]\n"
            "             [--max-candidates N] [--queue-depth N] [--requests-per-worker N]\n"
            "             [--max-message-bytes N] [--ram-tables-mb N] [--encoder DIR] [--updates]\n"
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
            "                         content_text: UTF-8, no NUL, at most 8192 bytes, only\n"
            "                         whitespace = none; else INVALID_ARGUMENT\n"
            "  --updates              open the bundle's tables writable and serve\n"
            "                         rankd.v1.Admin/ApplyUpdates (durable online row updates)\n"
            "\n"
            "  A request whose deadline has passed when a worker picks it up gets\n"
            "  DEADLINE_EXCEEDED without model work; the deadline (and a shutdown) is also\n"
            "  checked before each content_text is encoded (DEADLINE_EXCEEDED / UNAVAILABLE).\n"
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
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "rankd: %s: expected an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv) {
    int probe = rk_store_probe_main(argc, argv);
    if (probe >= 0) return probe;
    /* a damaged SST can abort RocksDB: open every store (start-up and
     * reloads) in a child first, so that the server refuses it instead */
    rk_store_set_probe("/proc/self/exe");
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    const char *model = NULL, *listen = NULL;
    int blas_threads = 1, ram_mb = 512, updates = 0;
    static struct option opts[] = {{"model", 1, 0, 'm'},       {"listen", 1, 0, 'l'},
                                   {"threads", 1, 0, 't'},     {"max-candidates", 1, 0, 'c'},
                                   {"max-message-bytes", 1, 0, 'b'},
                                   {"blas-threads", 1, 0, 'B'},  {"queue-depth", 1, 0, 'q'},
                                   {"requests-per-worker", 1, 0, 'r'},
                                   {"ram-tables-mb", 1, 0, 'R'}, {"encoder", 1, 0, 'E'},
                                   {"updates", 0, 0, 'U'},
                                   {"help", 0, 0, 'h'},        {"version", 0, 0, 'V'},
                                   {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'E': o.encoder_dir = optarg; break;
        case 'l': listen = optarg; break;
        case 't': bad = parse_int("--threads", optarg, 1, 256, &o.threads); break;
        case 'c': bad = parse_int("--max-candidates", optarg, 1, 1000000, &o.max_candidates); break;
        case 'b': bad = parse_int("--max-message-bytes", optarg, 64, INT_MAX, &o.max_message_bytes); break;
        case 'R': bad = parse_int("--ram-tables-mb", optarg, 0, 1 << 30, &ram_mb); break;
        case 'B': bad = parse_int("--blas-threads", optarg, 1, 64, &blas_threads); break;
        case 'q': bad = parse_int("--queue-depth", optarg, 1, 1000000, &o.queue_depth); break;
        case 'r': bad = parse_int("--requests-per-worker", optarg, 1, 1024, &o.requests_per_worker); break;
        case 'U': updates = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("rankd %s\n", RK_VERSION); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc || !model || !listen) {
        if (optind < argc) fprintf(stderr, "rankd: unexpected argument '%s'\n", argv[optind]);
        else fprintf(stderr, "rankd: --model and --listen are required (see --help)\n");
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
    rk_model *m = NULL;
    if (rk_model_open_ex(model, updates, &m, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        return 1;
    }
    rk_info("model %s from %s", rk_model_version(m), rk_model_dir(m));
    size_t ram = 0;
    if (ram_mb > 0 && rk_model_tables_to_ram(m, (size_t)ram_mb << 20, &ram, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        rk_model_destroy(m);
        return 1;
    }
    if (ram) rk_info("embedding tables in RAM: %.1f MiB", ram / 1048576.0);
    else rk_info("embedding tables served from RocksDB (--ram-tables-mb %d)", ram_mb);
    o.updates = updates;
    o.ram_tables_bytes = (size_t)ram_mb << 20;
    o.own_model = 1; /* a reload may retire the start-up version */
    rk_server *srv = NULL;
    int port = 0;
    if (rk_server_start(&o, m, &srv, &port, &e)) {
        fprintf(stderr, "rankd: %s\n", e.msg);
        rk_model_destroy(m); /* a failed start leaves it to us */
        return 1;
    }
    /* The bound address: the listen host with the port actually bound. */
    const char *colon = strrchr(listen, ':');
    int host_len = colon ? (int)(colon - listen) : (int)strlen(listen);
    rk_info("listening on %.*s:%d (threads=%d blas_threads=%d max_candidates=%d queue_depth=%d "
            "max_message_bytes=%d)",
            host_len, listen, port, o.threads, blas_threads, o.max_candidates, o.queue_depth,
            o.max_message_bytes);

    int sig = 0;
    for (;;) {
        sig = next_signal(sfd);
        if (sig != SIGHUP) break;
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
    rk_info("%s: draining", sig == SIGINT ? "SIGINT" : "SIGTERM");
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
    return 0;
}
