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
                              * acceptor to re-post */
    int queue_depth;         /* accepted Rank calls waiting for a worker; a call that
                              * finds the queue full is answered RESOURCE_EXHAUSTED at
                              * once (default 64) */
    int grace_ms;            /* shutdown: in-flight calls get this long before they are
                              * cancelled (default 5000) */
    const char *encoder_dir; /* text encoder (embed.h) for candidates[i].content_text of
                              * ads unknown to a semantic-ID model's item records; each
                              * worker opens its own (~90 MB: weights + a 512-token
                              * workspace). NULL (default): content_text is ignored */
    int updates;             /* 1: serve rankd.v1.Admin/ApplyUpdates (the model must be
                              * opened writable, rk_model_open_ex) and open reloaded
                              * versions writable; 0 (default): FAILED_PRECONDITION */
    size_t ram_tables_bytes; /* reloaded versions: rk_model_tables_to_ram budget (default 0) */
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
    double decode_us;  /* protobuf unpack (from t0) */
    double lookup_us;  /* hashing done, embedding rows fetched and pooled */
    double model_us;   /* towers over the N-candidate batch, sigmoid */
    double encode_us;  /* response built and serialized */
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

/* Start serving m on o->listen: calls grpc_init(), binds (SO_REUSEPORT off,
 * so a port held by another process fails), starts o->threads workers and
 * returns. *bound_port receives the port actually bound (useful with port 0).
 * Serves /rankd.v1.Ranker/Rank and /grpc.health.v1.Health/Check; every other
 * method is answered UNIMPLEMENTED. m must outlive the server.
 * Errors: RK_EIO "cannot listen on HOST:PORT: address in use or invalid",
 * RK_EINVAL for bad options, scorer creation errors. Block SIGINT/SIGTERM in
 * the calling thread first if the process sigwaits (c-stack.md §2.2). */
rk_status rk_server_start(const rk_server_opts *o, const rk_model *m, rk_server **out,
                          int *bound_port, rk_err *err);
/* Switch to the bundle at dir while the current one serves: open it (writable
 * when o->updates; tables to RAM within o->ram_tables_bytes), build every
 * worker's scorer for it, then swap the serving version under a mutex. A
 * request runs entirely on the version it took when a worker picked it up,
 * so every answer is the old or the new bundle's, never a mix; the old
 * version is closed when the last request holding it finishes. dir is
 * resolved (symlinks) first; the same directory as the serving version is
 * a no-op (*switched = 0). On error the old version keeps serving.
 * Serialized with other reloads; any thread but not concurrently with
 * rk_server_stop. Requests are validated against the version they run on
 * (a bundle with other features answers by its own model.json). Errors:
 * those of rk_model_open_ex / rk_model_tables_to_ram / scorer creation. */
rk_status rk_server_reload(rk_server *s, const char *dir, int *switched, rk_err *err);
/* Version string and directory of the serving bundle (copied into buf). */
void rk_server_current(rk_server *s, char *version, size_t vcap, char *dir, size_t dcap);
/* Counters so far (relaxed atomic reads; any thread). */
void rk_server_get_counters(const rk_server *s, rk_server_counters *out);
/* Stop: refuse new calls, give in-flight calls o->grace_ms, cancel the rest,
 * wait for every call context, join the workers, free everything and call
 * grpc_shutdown(). final (may be NULL) receives the final counters. */
void rk_server_stop(rk_server *s, rk_server_counters *final);

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

#endif /* RK_SERVE_H */
