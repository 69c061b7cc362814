/* serve/internal.h — private to serve/ (server.c, service.c, client.c). */
#ifndef RK_SERVE_INTERNAL_H
#define RK_SERVE_INTERNAL_H

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

#endif /* RK_SERVE_INTERNAL_H */
