/*
 * serve/ — rankd's serving front end: the rankd.v1.Ranker service
 * (serve/service.c), the gRPC server that hosts it and the Admin and Health
 * services (serve/server.c), and a small blocking gRPC client
 * (serve/client.c) for the tools, the load tester and the tests.
 *
 * This header is the module's whole interface. It sits above rank/ (the
 * models, the trainer, the scorer, the bundle): serve/ calls rank/, never
 * the other way round.
 */
#ifndef RK_SERVE_H
#define RK_SERVE_H

#include "rank.h"

/*
 * Status codes in this header are gRPC status codes (grpc_status_code:
 * 0 OK, 3 INVALID_ARGUMENT, 4 DEADLINE_EXCEEDED, 5 NOT_FOUND,
 * 8 RESOURCE_EXHAUSTED, 12 UNIMPLEMENTED, 13 INTERNAL, 14 UNAVAILABLE),
 * kept as int so this header does not pull in gRPC. The protobuf-c message
 * types come from the generated "rank.pb-c.h" (build tree, rk_proto).
 */

struct Rankd__V1__RankRequest;
struct Rankd__V1__RankResponse;

typedef struct {
    const char *listen;      /* "HOST:PORT"; port 0 picks a free port */
    int threads;             /* worker threads, each with its own scorer and arena (default 2) */
    int max_candidates;      /* candidates per request; more -> RESOURCE_EXHAUSTED (default 1000) */
    int max_values_per_row;  /* sparse values per feature per row; more -> RESOURCE_EXHAUSTED (default 256) */
    int max_message_bytes;   /* gRPC max receive message size, bytes (default 4 MiB) */
    int requests_per_worker; /* Rank calls kept requested from gRPC per worker (default 4):
                              * the calls core can hand over without waiting for the
                              * polling worker to re-post */
    int queue_depth;         /* accepted Rank calls waiting for a worker; a call that
                              * finds the queue full is answered RESOURCE_EXHAUSTED at
                              * once (default 64) */
    int grace_ms;            /* shutdown: in-flight calls get this long before they are
                              * cancelled (default 5000) */
    const char *encoder_dir; /* text encoder (embed.h) for candidates[i].content_text of
                              * ads unknown to a semantic-ID model's item records; each
                              * worker opens its own (~90 MB: weights + a 512-token
                              * workspace). NULL (default): content_text is ignored */
    const char *device;      /* towers on: "cpu" / NULL (default), "cuda[:N]" (a GPU; start-up
                              * fails naming the CUDA error when none works) or "auto" (a GPU
                              * when one works, else the CPU); each worker opens its own
                              * (one stream each), see nn.h rk_device_open */
    const char *image_encoder_dir; /* vision encoder (embed.h, DINOv2) for candidates[i].
                              * content_image, as encoder_dir for text; each worker opens
                              * its own (~90 MB: weights + a one-image workspace). NULL
                              * (default): content_image is ignored */
    int updates;             /* 1: serve rankd.v1.Admin/ApplyUpdates (the model must be
                              * opened writable, rk_model_open_ex) and open reloaded
                              * versions writable; 0 (default): FAILED_PRECONDITION */
    size_t ram_tables_bytes; /* reloaded versions: rk_model_tables_to_ram budget (default 0) */
    const char *metrics_listen; /* "HOST:PORT" (port 0: a free one) for the Prometheus text
                              * endpoint GET /metrics (libmicrohttpd thread; names in
                              * README "Metrics"); NULL (default): none */
    /* TLS (serve/auth.c): PEM server certificate + key; with a client CA every
     * client must present a certificate it signed (mutual TLS). NULL: plaintext. */
    const char *tls_cert_file, *tls_key_file, *tls_client_ca_file;
    /* Admin authentication (with updates): a bearer token file (first line,
     * >= 16 bytes; "authorization: Bearer <token>"), and/or a comma-separated
     * list of allowed client-certificate common names (needs mutual TLS).
     * Neither: Admin only when listening on loopback. */
    const char *admin_token_file, *admin_allow_cn;
    int access_log_sample;   /* N > 0: one "access:" log line per N Rank calls per worker
                              * (request id, model, version, status, times); 0 (default):
                              * none. Errors are logged at most once a second per worker. */
    int no_reflection;       /* 1: no gRPC server reflection; 0 (default): grpc.reflection.v1alpha
                              * and v1 ServerReflection list the services and give their
                              * descriptors (serve/reflection.c) */
    int own_model;           /* 1: the server destroys the start-up model once no request
                              * holds it (after a reload, or at stop); 0 (default): the
                              * caller destroys it after rk_server_stop */
} rk_server_opts;
#define RK_SERVER_OPTS_DEFAULT                                                         \
    {                                                                                  \
        .listen = "127.0.0.1:50051", .threads = 2, .max_candidates = 1000,            \
        .max_values_per_row = 256, .max_message_bytes = 4 << 20,                      \
        .requests_per_worker = 4, .queue_depth = 64, .grace_ms = 5000                  \
    }

/* ---- service: one serialized RankRequest in, one RankResponse out (no gRPC) */

/* Per-worker Rank handler: owns an rk_scorer for o->max_candidates rows, a
 * bump arena for protobuf-c unpack, and the response buffers, all sized at
 * creation and reused; not thread-safe (one per worker). m must outlive it. */
typedef struct rk_service rk_service;
rk_status rk_service_create(const rk_model *m, const rk_server_opts *o, rk_service **out,
                            rk_err *err);
void rk_service_destroy(rk_service *s);

/* Handle one request: req[len] is a serialized rankd.v1.RankRequest; t0 is
 * rk_now() when the call was picked up (timing.total_us counts from it).
 * Returns a gRPC status code. On 0 (OK), *resp and *resp_len hold the
 * serialized RankResponse, owned by s and valid until the next call. On any
 * other code err->msg names the field, e.g.
 *   "candidates[3].sparse[1].name: unknown feature 'foo'". */
int rk_service_handle(rk_service *s, const uint8_t *req, size_t len, double t0,
                      const uint8_t **resp, size_t *resp_len, rk_err *err);

/* rankd --encoder: the encoder in dir must be the one the item records'
 * embeddings were made with. Its identity (rk_text_encoder_identity) is
 * compared with "encoder xxh64:..." in each semantic-ID feature's records
 * version (written by `rank encode text` + `rank sid`): RK_EINVAL naming the
 * feature and both when they differ; records without one (older files) get
 * a warning. The records' text template is logged, as clients must build
 * content_text the same way. rk_server_start calls it. */
rk_status rk_model_check_encoder(const rk_model *m, const char *dir, rk_err *err);

/* rankd --image-encoder: as rk_model_check_encoder for the vision encoder in
 * dir, against the "encoder xxh64:..., image '...'" clause of the records
 * version (`rank encode image` + `rank sid`). The clause's recipe also gives
 * the pooling and normalization the records' embeddings were made with:
 * *pool (RK_VIT_POOL_CLS/MEAN) and *normalize (may be NULL). */
rk_status rk_model_check_image_encoder(const rk_model *m, const char *dir, int *pool, int *normalize, rk_err *err);

/* candidates[i].content_image limits: encoded bytes and declared pixels
 * (checked before decoding allocates: peak ~3 B/pixel + libjpeg's buffers). */
#define RK_MAX_CONTENT_IMAGE_BYTES (4 << 20)
#define RK_MAX_CONTENT_IMAGE_PIXELS 8000000

/* Longest candidates[i].content_text accepted, bytes (the encoder reads at
 * most 256 word pieces, ~1-2 KiB of text; longer is INVALID_ARGUMENT). */
#define RK_MAX_CONTENT_TEXT_BYTES 8192

/* Bound the next rk_service_handle call's request-time text encoding (the
 * only per-candidate work that can take long: ~0.1 s per 2 KiB text).
 * Before each candidates[i].content_text is encoded the service checks
 * rk_now() against deadline (rk_now() seconds; 0: none) and stop(ctx)
 * (NULL: none): past the deadline it returns DEADLINE_EXCEEDED (4), when
 * stop returns non-zero UNAVAILABLE (14), both naming the candidate reached.
 * The setting holds until changed. */
void rk_service_set_deadline(rk_service *s, double deadline, int (*stop)(void *ctx), void *ctx);

/* Server-side stage times of one call, microseconds. */
typedef struct {
    double decode_us;  /* the request read up to its candidates (from t0); the tree path: all of it */
    double lookup_us;  /* validation and hashing done (the direct path: the candidates read
                        * from the wire on the way), embedding rows fetched and pooled */
    double model_us;   /* towers over the N-candidate batch, sigmoid */
    double encode_us;  /* response built and serialized */
    int n_candidates;  /* candidates scored */
} rk_stage_times;
/* Stage times of the last call answered OK by s. */
void rk_service_last_timing(const rk_service *s, rk_stage_times *out);
/* Bytes the service holds for requests now: the decoder's warm arena block
 * (sized from max_candidates) + overflow chunks of a request in flight + the
 * response buffer. Memory bound per worker: during one request at most
 * 16 x max_message_bytes of overflow beyond the warm block (64 MiB at the
 * default 4 MiB), returned when the request ends; the response buffer grows
 * to at most max_message_bytes for one response (a larger one is
 * RESOURCE_EXHAUSTED) and back to its warm size on the next call. */
size_t rk_service_memory(const rk_service *s);

/* Semantic IDs served by s so far (rk_scorer_sid_counters): ads whose id the
 * item records do not know and that came without a content embedding (scored
 * with the default: an empty bag for the item feature), and ads assigned codes
 * at request time from candidates[i].content_embedding. */
void rk_service_sid_counters(const rk_service *s, uint64_t *unknown, uint64_t *assigned);
/* EmbSum fallbacks of s so far (rank/embsum.h; the model carries an EmbSum
 * bundle): out[0] users whose UPE came from recent_item_ids, out[1] users
 * given the default UPE, out[2] ads whose CPE came from content_text. */
void rk_service_embsum_counters(const rk_service *s, uint64_t out[3]);
/* The model's EmbSum bundle, or NULL. */
const struct rk_embsum_bundle *rk_service_embsum(const rk_service *s);

/* ---- server */

typedef struct {
    uint64_t rank_ok;         /* Rank calls answered OK */
    uint64_t rank_failed;     /* Rank calls answered with any other status (all below included) */
    uint64_t rank_expired;    /* ... DEADLINE_EXCEEDED when a worker picked them up (no model work),
                               * or reached while encoding candidates' content_text */
    uint64_t rank_rejected;   /* ... RESOURCE_EXHAUSTED because the queue was full */
    uint64_t health;          /* Health/Check calls */
    uint64_t unimplemented;   /* calls to unknown methods */
    /* Sums over the Rank calls answered OK, microseconds: waiting in the
     * queue, then the stages of rk_stage_times. Divide by rank_ok. */
    double queue_us, decode_us, lookup_us, model_us, encode_us;
    /* Semantic-ID models, over the calls answered OK: ads unknown to the item
     * records that came without content (scored with the default, an empty
     * bag), and ads given codes at request time (rk_service_sid_counters). */
    uint64_t sid_unknown, sid_assigned;
} rk_server_counters;

typedef struct rk_server rk_server;

/* grpc_init(), after setting gRPC up for this process (once): its log lines
 * through rk_log as "grpc (file:line): ...", rate-limited, and Abseil's
 * debug-build lock-order graph off (serve/absl_mode.cc). rk_server_start
 * and rk_client_create call it; so does any rankd program that uses gRPC
 * core directly (rank-bench). Pair each with grpc_shutdown(). */
void rk_grpc_init(void);

/* Start serving m on o->listen: calls rk_grpc_init(), binds (SO_REUSEPORT off,
 * so a port held by another process fails), starts o->threads workers and
 * returns. *bound_port receives the port actually bound (useful with port 0).
 * Serves /rankd.v1.Ranker/Rank and /grpc.health.v1.Health/Check; every other
 * method is answered UNIMPLEMENTED. m must outlive the server.
 * Errors: RK_EIO "cannot listen on HOST:PORT: address in use or invalid",
 * RK_EINVAL for bad options, scorer creation errors. Block SIGINT/SIGTERM in
 * the calling thread first if the process sigwaits (c-stack.md §2.2). */
/* m may be NULL: the server starts with no model (Health NOT_SERVING, Rank
 * UNAVAILABLE) until rk_server_reload or rk_server_load_version loads one. */
rk_status rk_server_start(const rk_server_opts *o, const rk_model *m, rk_server **out,
                          int *bound_port, rk_err *err);
/* Switch to the bundle at dir while the current one serves: open it (writable
 * when o->updates; tables to RAM within o->ram_tables_bytes), build every
 * worker's scorer for it, then swap the serving version under a mutex. A
 * request runs entirely on the version it took when a worker picked it up,
 * so every answer is the old or the new bundle's, never a mix; the old
 * version is closed when the last request holding it finishes. dir is
 * resolved (symlinks) first; the same directory as the serving version is
 * a no-op (*switched = 0), unless the bundle was saved again at that path
 * since (another directory inode: rk_model_save's temp dir + rename), which
 * is a new version. On error the old version keeps serving. A retired
 * version is closed once no call holds it (its store's LOCK released, so a
 * writable bundle can be switched back to); the caller's start-up model
 * (own_model 0) stays open until rk_server_stop, and a reload back to its
 * bundle serves that model again rather than opening the store twice.
 * Serialized with other reloads; any thread but not concurrently with
 * rk_server_stop. Requests are validated against the version they run on
 * (a bundle with other features answers by its own model.json). Errors:
 * those of rk_model_open_ex / rk_model_tables_to_ram / scorer creation. */
rk_status rk_server_reload(rk_server *s, const char *dir, int *switched, rk_err *err);
/* Model repository (serve/repository.c drives these; any thread, not
 * concurrently with rk_server_stop). Several models are served at once,
 * each with up to 8 versions; a Rank call is routed by model_name (empty:
 * the only model) and model_version (empty: the model's newest, by num;
 * else a version's label, its model.json version or "name/version").
 *
 * Load the bundle at dir as version label (num orders versions, newest
 * first) of model name: opened off the request path (writable with
 * o->updates, tables to RAM within o->ram_tables_bytes, encoder checked),
 * its feature schema checked against the model's newest version
 * (rk_schema_check: refused, naming the feature, when requests built for
 * the served version would fail on it), one warm-up request answered by
 * every worker's service, then it takes traffic. On error nothing changes.
 * Errors: RK_EEXIST (already served), RK_EINVAL (limits, schema), those of
 * rk_model_open_ex and scorer creation, warm-up failures. */
rk_status rk_server_load_version(rk_server *s, const char *name, const char *label, long long num,
                                 const char *dir, rk_err *err);
/* Stop routing to version label of model name, wait (up to o->grace_ms)
 * for the calls running on it, and close it. The model goes with its last
 * version. RK_ENOTFOUND when not served. */
rk_status rk_server_unload_version(rk_server *s, const char *name, const char *label, rk_err *err);

typedef struct {
    char name[128], version[128];
    char dir[4096];
    long long num;  /* -1: not a repository version */
} rk_served_version;
/* The versions served now (at most cap into out, models in load order,
 * newest version first); returns how many there are. */
int rk_server_list(rk_server *s, rk_served_version *out, int cap);

/* Health: rk_server_drain makes grpc.health.v1 answer NOT_SERVING for
 * every service (Check and Watch) while calls are still served; call it
 * before rk_server_stop to let load balancers move away first. */
void rk_server_drain(rk_server *s);

/* ---- model repository (serve/repository.c): DIR/<model>/<version>/ */
#define RK_REPO_MAX_SPECIFIC 16
#define RK_REPO_MAX_MODELS 16
typedef struct {
    const char *dir;          /* the repository */
    int latest;               /* serve the N highest versions of each model (1..8; default 1) */
    long long specific[RK_REPO_MAX_SPECIFIC]; /* or exactly these versions (n_specific > 0) */
    int n_specific;
    int poll_s;               /* scan every poll_s seconds (0: only rk_repo_scan calls) */
} rk_repo_opts;
typedef struct {
    int loaded, refused, unloaded; /* versions, in one scan */
} rk_repo_stats;
typedef struct rk_repo rk_repo;
/* A repository over server s (which must outlive it); scans nothing yet. */
rk_status rk_repo_create(rk_server *s, const rk_repo_opts *o, rk_repo **out, rk_err *err);
/* One scan (module comment of repository.c): load the wanted versions not
 * served, then unload the served ones no longer wanted; each load, refusal
 * (with its reason) and unload is logged. retry != 0 also retries versions
 * refused before (SIGHUP); else they are retried only once their model.json
 * changes. Errors: only an unreadable repository (RK_ENOTFOUND). */
rk_status rk_repo_scan(rk_repo *r, int retry, rk_repo_stats *rs, rk_err *err);
/* Start the polling thread (o->poll_s > 0; else nothing). */
rk_status rk_repo_start_polling(rk_repo *r, rk_err *err);
/* Stop polling and free r (the served versions stay with the server). */
void rk_repo_destroy(rk_repo *r);

/* Version string and directory of the serving bundle (copied into buf). */
void rk_server_current(rk_server *s, char *version, size_t vcap, char *dir, size_t dcap);
/* Port of the metrics endpoint (o->metrics_listen), 0 when none. */
int rk_server_metrics_port(const rk_server *s);
/* Counters so far (relaxed atomic reads; any thread). */
void rk_server_get_counters(const rk_server *s, rk_server_counters *out);
/* Stop: refuse new calls, give in-flight calls o->grace_ms, cancel the rest,
 * wait for every call context, join the workers, free everything and call
 * grpc_shutdown(). final (may be NULL) receives the final counters. */
void rk_server_stop(rk_server *s, rk_server_counters *final);

/* "MAJOR.MINOR.PATCH" of this build (CMake's project version); every tool's
 * --version prints it. */
const char *rk_version_string(void);

/* ---- client (tests, `rank query`) */

/* A blocking client on one insecure channel; one call at a time (not
 * thread-safe). Calls grpc_init(); destroy calls grpc_shutdown(). */
typedef struct rk_client rk_client;
rk_status rk_client_create(const char *addr, rk_client **out, rk_err *err);
void rk_client_destroy(rk_client *c);

typedef struct {
    int code;        /* gRPC status code of the call */
    char msg[256];   /* status details (truncated) */
    uint8_t *body;   /* response message bytes (rk_malloc'd; rk_call_result_free), or NULL */
    size_t body_len;
    double seconds;  /* wall time of the call */
} rk_call_result;
void rk_call_result_free(rk_call_result *r);

/* One unary call of method ("/pkg.Svc/Method") with raw request bytes.
 * deadline_ms <= 0: no deadline. Returns RK_OK whenever the call completed,
 * whatever its gRPC status (in res->code); errors only for local failures. */
rk_status rk_client_call(rk_client *c, const char *method, const void *req, size_t len,
                         int deadline_ms, rk_call_result *res, rk_err *err);
/* One Rank call. On res->code == 0, *resp is the decoded response (free with
 * rk_client_free_response); otherwise *resp = NULL and res->msg says why.
 * A response that does not decode is RK_EFORMAT. */
rk_status rk_client_rank(rk_client *c, const struct Rankd__V1__RankRequest *req,
                         int deadline_ms, rk_call_result *res,
                         struct Rankd__V1__RankResponse **resp, rk_err *err);
void rk_client_free_response(struct Rankd__V1__RankResponse *resp);
/* Health/Check for service ("" = the server). *serving receives the
 * ServingStatus (1 = SERVING) when res->code == 0. */
rk_status rk_client_health(rk_client *c, const char *service, int deadline_ms,
                           rk_call_result *res, int *serving, rk_err *err);

/* ---- RankRequests from TSV rows (serve/rows.c): the one path from a data
 * file to requests, for `rank query`, rank-bench and the tests */

typedef struct rk_req_rows rk_req_rows;
/* Read path through rk_read_text (a BOM dropped, CRLF lines, a NUL refused
 * naming row and column) and map each of cfg's features to the header column
 * named by its "column" (a repeated header name: the first). Sparse cells are
 * split on '|' (empty pieces kept: the server skips them, as the offline
 * reader does); a dense cell is a number within +-1e9 or empty (missing).
 * Blank lines are skipped. cfg must outlive the rows. Errors name the file
 * and row (its line, the header being row 1): "F: no header line",
 * "F row 1: no column 'C' (feature 'N')", "F row R: K fields, the header
 * has H", "F row R, column C: expected a finite number within +-1e+09, got
 * 'X'", "F: no rows after the header". */
rk_status rk_req_rows_read(const char *path, const rk_model_cfg *cfg, rk_req_rows **out, rk_err *err);
void rk_req_rows_destroy(rk_req_rows *t);
size_t rk_req_rows_count(const rk_req_rows *t);
/* Row r's line in the file (for messages). */
long rk_req_rows_line(const rk_req_rows *t, size_t r);
/* Row r's values of feature f (*n of them; a dense cell: one, "" when missing). */
char *const *rk_req_rows_values(const rk_req_rows *t, size_t r, int f, size_t *n);

typedef struct {
    const char *request_id, *model_name; /* NULL: unset */
    int return_timing;
    int no_aliases; /* 1: every feature by name; 0 (default): the model's aliases
                     * user.user_id and candidates[i].ad_id where declared and the
                     * cell has one value, user.recent_item_ids where declared */
} rk_req_opts;
/* The RankRequest for rows[0..n) of t: the user side from rows[0],
 * candidate i from rows[i], features in model.json order; every sparse /
 * dense list has room for all the model's features (a test may append).
 * One rk_malloc block (rk_free it); its strings point into t and o, which
 * must outlive it.
 * NULL when out of memory. o may be NULL (all defaults). */
struct Rankd__V1__RankRequest *rk_req_build(const rk_req_rows *t, const size_t *rows, size_t n, const rk_req_opts *o);

#endif /* RK_SERVE_H */
