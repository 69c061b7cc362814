/* serve/internal.h — private to serve/ (server.c, service.c, client.c). */
#ifndef RK_SERVE_INTERNAL_H
#define RK_SERVE_INTERNAL_H

#include <protobuf-c/protobuf-c.h>

#include "serve.h"

/* protobuf-c allocations through rk_malloc / rk_free (so tests can inject
 * allocation failures); used by the gRPC client and server (client.c). */
extern ProtobufCAllocator rk_pb_allocator;

#endif /* RK_SERVE_INTERNAL_H */
