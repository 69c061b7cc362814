/*
 * rank/client.c — a small blocking gRPC client on the C core API (1.51),
 * for `rank query` and the end-to-end tests.
 *
 * One insecure channel and one pluck completion queue; a call is a single
 * batch of the six unary ops (c-stack.md §2.3) plucked to completion, so the
 * client has one call in flight at a time. Raw calls take and return bytes,
 * which lets tests send garbage, oversized messages and unknown methods;
 * rk_client_rank and rk_client_health wrap them with protobuf-c.
 */
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"
#include "serve.h"
#include "rank.pb-c.h"

struct rk_client {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    char addr[256];
};

/* protobuf-c allocations through rk_malloc (fault injection in tests). */
static void *pb_alloc(void *d, size_t n) {
    (void)d;
    return rk_malloc(n);
}
static void pb_free(void *d, void *p) {
    (void)d;
    rk_free(p);
}
ProtobufCAllocator rk_pb_allocator = {pb_alloc, pb_free, NULL};

rk_status rk_client_create(const char *addr, rk_client **out, rk_err *err) {
    *out = NULL;
    if (!addr || !addr[0] || strlen(addr) >= sizeof((rk_client *)0)->addr)
        return rk_fail(err, RK_EINVAL, "addr: empty or too long");
    rk_client *c = rk_calloc(1, sizeof *c);
    if (!c) return rk_fail(err, RK_ENOMEM, "client: out of memory");
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    rk_grpc_init();
    grpc_arg args[3];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = -1; /* responses of 1000 candidates can be big */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = -1; /* let the server enforce its own limit */
    /* a target listing several replicas ("ipv4:127.0.0.1:P1,127.0.0.1:P2")
     * spreads calls over all of them; gRPC's default (pick_first) would use one */
    args[2].type = GRPC_ARG_STRING;
    args[2].key = GRPC_ARG_LB_POLICY_NAME;
    args[2].value.string = "round_robin";
    grpc_channel_args ca = {3, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(addr, creds, &ca);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    if (!c->ch || !c->cq) {
        rk_client_destroy(c);
        return rk_fail(err, RK_EINTERNAL, "client: cannot create a channel to %s", addr);
    }
    *out = c;
    return RK_OK;
}

void rk_client_destroy(rk_client *c) {
    if (!c) return;
    if (c->ch) grpc_channel_destroy(c->ch);
    if (c->cq) {
        grpc_completion_queue_shutdown(c->cq);
        grpc_completion_queue_destroy(c->cq);
    }
    rk_free(c);
    grpc_shutdown();
}

void rk_call_result_free(rk_call_result *r) {
    if (!r) return;
    rk_free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

rk_status rk_client_call(rk_client *c, const char *method, const void *req, size_t len,
                         int deadline_ms, rk_call_result *res, rk_err *err) {
    memset(res, 0, sizeof *res);
    double t0 = rk_now();
    gpr_timespec deadline =
        deadline_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                       gpr_time_from_millis(deadline_ms, GPR_TIMESPAN))
                        : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_slice method_sl = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                               method_sl, NULL, deadline, NULL);
    grpc_slice_unref(method_sl);
    if (!call) return rk_fail(err, RK_EINTERNAL, "%s: cannot create the call", method);

    grpc_slice req_sl = grpc_slice_from_copied_buffer(req, len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&req_sl, 1);
    grpc_slice_unref(req_sl);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;
    int tag;
    rk_status st = RK_OK;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (e != GRPC_CALL_OK) {
        st = rk_fail(err, RK_EINTERNAL, "%s: start_batch failed (%d)", method, (int)e);
    } else {
        grpc_event ev =
            grpc_completion_queue_pluck(c->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success)
            st = rk_fail(err, RK_EINTERNAL, "%s: the call did not complete", method);
    }
    if (!st) {
        res->code = (int)status;
        size_t dl = GRPC_SLICE_LENGTH(details);
        if (dl >= sizeof res->msg) dl = sizeof res->msg - 1;
        memcpy(res->msg, GRPC_SLICE_START_PTR(details), dl);
        res->msg[dl] = 0;
        if (recv) {
            grpc_byte_buffer_reader rd;
            if (!grpc_byte_buffer_reader_init(&rd, recv)) {
                st = rk_fail(err, RK_EFORMAT, "%s: cannot read the response", method);
            } else {
                grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
                grpc_byte_buffer_reader_destroy(&rd);
                res->body_len = GRPC_SLICE_LENGTH(all);
                res->body = rk_malloc(res->body_len);
                if (!res->body) st = rk_fail(err, RK_ENOMEM, "%s: out of memory", method);
                else memcpy(res->body, GRPC_SLICE_START_PTR(all), res->body_len);
                grpc_slice_unref(all);
            }
        }
    }
    res->seconds = rk_now() - t0;
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_byte_buffer_destroy(send);
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_call_unref(call);
    if (st) rk_call_result_free(res);
    return st;
}

rk_status rk_client_rank(rk_client *c, const Rankd__V1__RankRequest *req, int deadline_ms,
                         rk_call_result *res, Rankd__V1__RankResponse **resp, rk_err *err) {
    *resp = NULL;
    size_t n = rankd__v1__rank_request__get_packed_size(req);
    uint8_t *buf = rk_malloc(n ? n : 1);
    if (!buf) return rk_fail(err, RK_ENOMEM, "rank: out of memory for a %zu-byte request", n);
    rankd__v1__rank_request__pack(req, buf);
    rk_status st = rk_client_call(c, "/rankd.v1.Ranker/Rank", buf, n, deadline_ms, res, err);
    rk_free(buf);
    if (st) return st;
    if (res->code == 0) {
        *resp = rankd__v1__rank_response__unpack(&rk_pb_allocator, res->body_len, res->body);
        if (!*resp) st = rk_fail(err, RK_EFORMAT, "rank: the response is not a valid RankResponse");
    }
    rk_call_result_free(res);
    return st;
}

void rk_client_free_response(Rankd__V1__RankResponse *resp) {
    if (resp) rankd__v1__rank_response__free_unpacked(resp, &rk_pb_allocator);
}

rk_status rk_client_health(rk_client *c, const char *service, int deadline_ms,
                           rk_call_result *res, int *serving, rk_err *err) {
    *serving = 0;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(service ? service : "");
    size_t n = grpc__health__v1__health_check_request__get_packed_size(&req);
    uint8_t *buf = rk_malloc(n ? n : 1);
    if (!buf) return rk_fail(err, RK_ENOMEM, "health: out of memory");
    grpc__health__v1__health_check_request__pack(&req, buf);
    rk_status st =
        rk_client_call(c, "/grpc.health.v1.Health/Check", buf, n, deadline_ms, res, err);
    rk_free(buf);
    if (st) return st;
    if (res->code == 0) {
        Grpc__Health__V1__HealthCheckResponse *r = grpc__health__v1__health_check_response__unpack(
            &rk_pb_allocator, res->body_len, res->body);
        if (!r) st = rk_fail(err, RK_EFORMAT, "health: the response is not a valid HealthCheckResponse");
        else {
            *serving = (int)r->status;
            grpc__health__v1__health_check_response__free_unpacked(r, &rk_pb_allocator);
        }
    }
    rk_call_result_free(res);
    return st;
}
