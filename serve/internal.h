/* serve/internal.h — private to serve/ (server.c, service.c, client.c,
 * metrics.c, payload.c, ...): the protobuf-c allocator, the request
 * payload readers and the live counters the server keeps and metrics.c
 * publishes. */
#ifndef RK_SERVE_INTERNAL_H
#define RK_SERVE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <protobuf-c/protobuf-c.h>

#include "serve.h"

/* protobuf-c allocations through rk_malloc / rk_free (so tests can inject
 * allocation failures); used by the gRPC client and server (client.c). */
extern ProtobufCAllocator rk_pb_allocator;

/* Wire checks before unpacking a message of descriptor d (wire.c): a NUL
 * byte inside a string field (protobuf-c would cut the string there), a
 * singular message field given more than once and field numbers outside
 * 1..2^29-1 are refused: -1 with msg naming the field
 * path ("candidates[3].ad_id: ..."). 0 otherwise, also for malformed bytes,
 * which unpack then refuses. */
int rk_pb_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, char *msg, size_t cap);

/* Strict UTF-8 (RFC 3629) of p[0, n) with no NUL (wire.c): what every
 * request string must be, so a client can decode the text rankd echoes. */
int rk_utf8_ok(const unsigned char *p, size_t n);
/* absl::SetMutexDeadlockDetectionMode(kIgnore) (absl_mode.cc; rk_grpc_init). */
void rk_absl_deadlock_detection_off(void);
/* The longest prefix of s[0, len) of at most max bytes that does not end
 * inside a UTF-8 sequence (for echoing a client's string, shortened). */
size_t rk_utf8_prefix(const char *s, size_t len, size_t max);

/* rankd's own RankRequest decoder (decode.c): 0 and *out (allocated
 * through a, with one copy of buf that its strings and bytes fields point
 * into: buf need not outlive it) for a request that both
 * rk_pb_check and protobuf-c's unpack accept, with the tree unpack would
 * build (unknown fields dropped). -1 for anything else, including an
 * allocation failure: the caller then runs rk_pb_check and unpack, which
 * say what is wrong. */
struct Rankd__V1__RankRequest;
int rk_rank_request_decode(const uint8_t *buf, size_t len, ProtobufCAllocator *a,
                           struct Rankd__V1__RankRequest **out);
/* The same for one User message (the user field's payload): what
 * rk_rank_request_decode would build for it. */
struct Rankd__V1__User;
int rk_user_decode(const uint8_t *buf, size_t len, ProtobufCAllocator *a, struct Rankd__V1__User **out);

/* ---- a request message's bytes (payload.c) */

/* Why rk_payload_read / rk_payload_bytes could not give the bytes. */
enum { RK_PAYLOAD_BIG = -1, RK_PAYLOAD_BAD = -2, RK_PAYLOAD_NOMEM = -3 };

/* Copy the message bb into buf[cap], inflating a gzip or deflate one. Its
 * length; RK_PAYLOAD_BIG when it is (or inflates to) more than cap bytes,
 * found without inflating beyond cap (a compressed one longer than cap is
 * not inflated at all); RK_PAYLOAD_BAD when a compressed one is damaged,
 * truncated or followed by more bytes (why[] says which); RK_PAYLOAD_NOMEM
 * when zlib could not get its memory. */
long rk_payload_read(uint8_t *buf, size_t cap, grpc_byte_buffer *bb, char *why, size_t why_len);

/* rk_payload_read, but a plain message in one slice is given in place
 * (*out points into bb, no copy); else *out = buf. */
long rk_payload_bytes(uint8_t *buf, size_t cap, grpc_byte_buffer *bb, const uint8_t **out, char *why,
                      size_t why_len);

/* The status for n < 0 from the two above, read under cap: INVALID_ARGUMENT
 * (why[] already says why) or RESOURCE_EXHAUSTED (its text written to why[]:
 * too large, or out of memory). */
grpc_status_code rk_payload_status(long n, size_t cap, const grpc_byte_buffer *bb, char *why, size_t why_len);

/* ---- service (service.c) */
/* The server routed calls to this service by model_name / model_version
 * already: the service no longer compares them with its model.json. */
void rk_service_set_routed(rk_service *s);
/* The direct path (service.c) on or off; on by default wherever the model
 * allows it. Off: every request takes the tree path (tests compare them). */
void rk_service_set_direct(rk_service *s, int on);
/* Requests the direct path scored and requests it gave up (to the tree path). */
void rk_service_direct_counts(const rk_service *s, uint64_t *scored, uint64_t *gave_up);

/* ---- repository helpers (repository.c) */
/* One warm-up request (max(1, min(max_candidates, 16)) candidates, every
 * hashed sparse feature given a value, every dense one) through each of
 * svc[n]; an error names the service's answer. */
rk_status rk_warmup(const rk_model *m, rk_service **svc, int n, int max_candidates, rk_err *err);
/* Can requests built for `served` be answered by `next`? Every feature of
 * served must be in next with the same side and kind, and the aliases must
 * be the same: RK_EINVAL naming the first difference. Features only next
 * has are allowed (requests leave them empty). */
rk_status rk_schema_check(const rk_model *served, const rk_model *next, rk_err *err);

/* ---- transport security and Admin authentication (auth.c) */
typedef struct rk_auth rk_auth;
/* From o's tls_* and admin_* fields (files read now). Errors name the
 * option and file: half a key pair, a non-PEM file, a short token, an
 * allow list without mutual TLS, --updates off loopback without auth. */
rk_status rk_auth_create(const rk_server_opts *o, rk_auth **out, rk_err *err);
/* SSL server credentials (TLS) or insecure ones; the caller releases them. */
grpc_server_credentials *rk_auth_server_credentials(rk_auth *a);
int rk_auth_tls(const rk_auth *a);
/* May this Admin call pass? 0 and who = "token" | "cn:NAME" | "loopback";
 * -1 and who = why not. */
int rk_auth_admin(const rk_auth *a, grpc_call *call, const grpc_metadata_array *md, char *who,
                  size_t cap);
void rk_auth_destroy(rk_auth *a);
/* 127.x.x.x, [::1] or localhost before the last ':'. */
int rk_listen_is_loopback(const char *hostport);

/* ---- server reflection (reflection.c) */
typedef struct rk_reflection rk_reflection;
/* The index of the compiled-in descriptor set (files, imports, symbols). */
rk_status rk_reflection_create(rk_reflection **out, rk_err *err);
/* One serialized ServerReflectionRequest (v1alpha or v1: the same bytes)
 * in, its ServerReflectionResponse out (*out rk_malloc'd, *out_len bytes):
 * unknown files and symbols are answered with an error_response. RK_EINVAL
 * when the bytes are not a request, RK_ENOMEM. */
rk_status rk_reflection_answer(const rk_reflection *r, const uint8_t *in, size_t in_len, uint8_t **out,
                               size_t *out_len, rk_err *err);
void rk_reflection_destroy(rk_reflection *r);

/* ---- metrics (metrics.c) */

#define RK_HIST_BUCKETS 15 /* finite latency buckets, 50 us .. 2.5 s; plus +Inf */
enum { RK_ST_QUEUE = 0, RK_ST_DECODE, RK_ST_LOOKUP, RK_ST_MODEL, RK_ST_ENCODE, RK_ST_TOTAL, RK_N_STAGES };
#define RK_N_CODES 17 /* gRPC status codes 0..16 */

/* One writer thread's counters for one model version: only that thread
 * writes (rk_stat_add), anyone reads (relaxed). A cache line of its own. */
typedef struct {
    _Alignas(64) atomic_ullong codes[RK_N_CODES]; /* calls answered, by gRPC status */
    atomic_ullong candidates;                     /* candidates scored (OK calls) */
    atomic_ullong sid_unknown, sid_assigned;      /* semantic-ID fallbacks */
    atomic_ullong embsum[3];                      /* EmbSum fallbacks (rk_service_embsum_counters) */
    atomic_ullong update_rows, update_calls;      /* Admin/ApplyUpdates applied */
    atomic_ullong hist[RK_N_STAGES][RK_HIST_BUCKETS + 1]; /* per bucket (not cumulative) */
    atomic_ullong sum_ns[RK_N_STAGES];
} rk_wstats;

/* Single-writer add: a relaxed load and store, no locked instruction. */
static inline void rk_stat_add(atomic_ullong *a, uint64_t d) {
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + d, memory_order_relaxed);
}

/* A model version's counters: n stripes, one per writer thread. Lives until
 * rk_live_destroy. */
typedef struct rk_vstats {
    struct rk_vstats *next;
    char model[128], version[128];
    int n;
    rk_wstats *w;
    void *base;                 /* allocation behind w */
    const rk_model *live;       /* for the store cache counters; NULL once detached */
    uint64_t cache_final[3];    /* hits, misses, evictions when detached */
    atomic_int serving;         /* 1 while taking traffic */
} rk_vstats;

/* Server-wide gauges and counters (written by the server, read by scrapes). */
typedef struct { /* 64 bytes apart: two workers' flags never share a line */
    atomic_int v;
    char pad[64 - sizeof(atomic_int)];
} rk_padded_int;
typedef struct {
    int n_workers, queue_cap;
    rk_padded_int *busy;        /* [n_workers]: 1 while worker i handles a call */
    atomic_int queue_len;
    atomic_ullong rejected, unimplemented, health, admin_denied;
    atomic_ullong unrouted[RK_N_CODES]; /* Rank calls answered before reaching a model version
                                 * (expired in the queue, no such model, none loaded) */
    atomic_ullong reloads[3];   /* ok, unchanged, failed */
    char grpc_version[32];
} rk_server_gauges;

/* Bucket index of a latency in seconds (RK_HIST_BUCKETS = +Inf). */
int rk_live_bucket(double seconds);

typedef struct rk_live rk_live;
/* n_stripes writer threads; g (owned by the caller) must outlive m. */
rk_status rk_live_create(int n_stripes, rk_server_gauges *g, rk_live **out, rk_err *err);
/* Register the counters of a new version of model, labelled model=name,
 * version=version. NULL on out of memory. Owned by m. */
rk_vstats *rk_live_version(rk_live *m, const char *name, const char *version, const rk_model *model,
                           rk_err *err);
/* Before model is destroyed: keep its store cache counters' last values. */
void rk_live_version_detach(rk_live *m, rk_vstats *v);
/* Prometheus text (format 0.0.4) of everything; rk_malloc'd (*len bytes,
 * not NUL-terminated), NULL on out of memory. */
char *rk_live_render(rk_live *m, size_t *len);
/* Serve GET /metrics on hostport ("HOST:PORT", port 0 = free) from a
 * libmicrohttpd thread. *bound_port: the port bound. */
rk_status rk_live_listen(rk_live *m, const char *hostport, int *bound_port, rk_err *err);
/* Sums over every version (rk_server_get_counters; server-wide fields left 0). */
void rk_live_totals(rk_live *m, rk_server_counters *out);
/* Stops the HTTP thread and frees every record. */
void rk_live_destroy(rk_live *m);

#endif /* RK_SERVE_INTERNAL_H */
