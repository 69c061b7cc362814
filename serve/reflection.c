/*
 * serve/reflection.c — gRPC server reflection (grpc.reflection.v1alpha and
 * v1 ServerReflection, the same messages on the wire) answered from the
 * FileDescriptorSet of every proto rankd serves (rank.proto, health.proto,
 * both reflection.proto), which the build makes with protoc
 * --include_imports and compiles in (rk_descriptor_set, cmake/embed.cmake).
 *
 * At start the set is indexed once: each file's name, its bytes (a span of
 * the set: answers point into it, nothing is re-encoded), its imports, and
 * every fully-qualified symbol it declares (packages' messages, nested
 * messages, fields, oneofs, enums, enum values in their enum's scope,
 * extensions, services and methods). A request is answered from the index:
 * list_services, file_by_filename and file_containing_symbol (the file and
 * every file it imports, transitively), all_extension_numbers_of_type (none:
 * rankd's protos declare no extensions); an unknown file, symbol or
 * extension gets an error_response NOT_FOUND naming it. The stream itself
 * (one answer per request message) is server.c's.
 *
 * The set is parsed by walking the protobuf wire format (fields 1-8 of
 * FileDescriptorProto and the descriptor messages inside): descriptor.proto
 * is not part of Debian's protobuf-c or protobuf-compiler.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "internal.h"

extern const unsigned char rk_descriptor_set[];
extern const size_t rk_descriptor_set_len;

#define MAX_FILES 32
#define MAX_DEPS 16
#define MAX_SYMBOLS 1024
#define NAME_MAX_LEN 256

enum { SYM_MESSAGE = 1, SYM_OTHER = 2, SYM_SERVICE = 3 };

typedef struct {
    char name[NAME_MAX_LEN];
    const uint8_t *bytes;
    size_t len;
    int n_deps;
    int deps[MAX_DEPS];         /* file indexes, resolved after every file is read */
    char dep_names[MAX_DEPS][NAME_MAX_LEN];
} refl_file;

typedef struct {
    char name[NAME_MAX_LEN];
    int file, kind;
} refl_symbol;

struct rk_reflection {
    int n_files, n_symbols;
    refl_file files[MAX_FILES];
    refl_symbol symbols[MAX_SYMBOLS];
};

/* ------------------------------------------------------------ wire walk */

/* A message's top-level fields, one by one. */
typedef struct {
    const uint8_t *p, *end;
} pb_cur;

static int read_varint(pb_cur *c, uint64_t *v) {
    *v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (c->p >= c->end) return -1;
        uint8_t b = *c->p++;
        *v |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

/* The next field: 1 with its number and, when length-delimited, its bytes
 * (*val, *len; NULL for other wire types, which are skipped); 0 at the end;
 * -1 when malformed. */
static int next_field(pb_cur *c, uint32_t *field, const uint8_t **val, size_t *len) {
    if (c->p >= c->end) return 0;
    uint64_t key, x;
    if (read_varint(c, &key)) return -1;
    *field = (uint32_t)(key >> 3);
    *val = NULL;
    *len = 0;
    switch (key & 7) {
    case 0: return read_varint(c, &x) ? -1 : 1;
    case 1: if (c->end - c->p < 8) return -1; c->p += 8; return 1;
    case 5: if (c->end - c->p < 4) return -1; c->p += 4; return 1;
    case 2:
        if (read_varint(c, &x) || x > (uint64_t)(c->end - c->p)) return -1;
        *val = c->p;
        *len = (size_t)x;
        c->p += x;
        return 1;
    default: return -1;
    }
}

/* Field 1 (name) of a descriptor message, into out[cap]; -1 if missing or too long. */
static int msg_name(const uint8_t *p, size_t n, char *out, size_t cap) {
    pb_cur c = {p, p + n};
    uint32_t f;
    const uint8_t *v;
    size_t len;
    int r;
    while ((r = next_field(&c, &f, &v, &len)) == 1)
        if (f == 1 && v) {
            if (len >= cap || memchr(v, 0, len)) return -1;
            memcpy(out, v, len);
            out[len] = 0;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------------ index */

static rk_status add_symbol(rk_reflection *r, const char *scope, const char *name, int file, int kind, rk_err *err) {
    if (r->n_symbols == MAX_SYMBOLS)
        return rk_fail(err, RK_ETOOBIG, "reflection: more than %d symbols in the descriptor set", MAX_SYMBOLS);
    refl_symbol *s = &r->symbols[r->n_symbols];
    int n = snprintf(s->name, sizeof s->name, "%s%s%s", scope, scope[0] ? "." : "", name);
    if (n < 0 || (size_t)n >= sizeof s->name)
        return rk_fail(err, RK_ETOOBIG, "reflection: symbol %s.%s longer than %d bytes", scope, name, NAME_MAX_LEN - 1);
    s->file = file;
    s->kind = kind;
    r->n_symbols++;
    return RK_OK;
}

/* The descriptor message p[n] (its field 1 is the name) declared in scope
 * as a symbol of kind; its full name into full[NAME_MAX_LEN] (may be NULL).
 * what names it in errors. */
static rk_status declare(rk_reflection *r, const char *scope, const uint8_t *p, size_t n, int file, int kind,
                         const char *what, char *full, rk_err *err) {
    char name[NAME_MAX_LEN];
    if (msg_name(p, n, name, sizeof name)) return rk_fail(err, RK_EFORMAT, "reflection: %s: a %s has no name", scope, what);
    rk_status st = add_symbol(r, scope, name, file, kind, err);
    if (st == RK_OK && full) snprintf(full, NAME_MAX_LEN, "%s", r->symbols[r->n_symbols - 1].name);
    return st;
}

/* A ServiceDescriptorProto (its methods: field 2) or EnumDescriptorProto
 * (its values: field 2, declared in the enum's own scope: protobuf's rule,
 * enum values are siblings of their enum) in scope. */
static rk_status index_leafy(rk_reflection *r, const char *scope, const uint8_t *p, size_t n, int file, int service,
                             rk_err *err) {
    char full[NAME_MAX_LEN];
    rk_status st = declare(r, scope, p, n, file, service ? SYM_SERVICE : SYM_OTHER, service ? "service" : "enum", full, err);
    pb_cur c = {p, p + n};
    uint32_t f;
    const uint8_t *v;
    size_t len;
    while (st == RK_OK && next_field(&c, &f, &v, &len) == 1)
        if (f == 2 && v)
            st = declare(r, service ? full : scope, v, len, file, SYM_OTHER, service ? "method" : "enum value", NULL, err);
    return st;
}

/* A DescriptorProto in scope: the message, its fields, oneofs,
 * extensions, enums and nested messages (recursively, depth-limited). */
static rk_status index_message(rk_reflection *r, const char *scope, const uint8_t *p, size_t n, int file, int depth,
                               rk_err *err) {
    char full[NAME_MAX_LEN];
    if (depth > 32) return rk_fail(err, RK_EFORMAT, "reflection: messages nested deeper than 32 in %s", scope);
    rk_status st = declare(r, scope, p, n, file, SYM_MESSAGE, "message", full, err);
    pb_cur c = {p, p + n};
    uint32_t f;
    const uint8_t *v;
    size_t len;
    while (st == RK_OK && next_field(&c, &f, &v, &len) == 1) {
        if (!v) continue;
        if (f == 3) st = index_message(r, full, v, len, file, depth + 1, err);
        else if (f == 4) st = index_leafy(r, full, v, len, file, 0, err);
        else if (f == 2 || f == 6 || f == 8) /* field, extension, oneof_decl */
            st = declare(r, full, v, len, file, SYM_OTHER, "member", NULL, err);
    }
    return st;
}

/* One FileDescriptorProto: its name, imports and symbols. */
static rk_status index_file(rk_reflection *r, const uint8_t *p, size_t n, rk_err *err) {
    if (r->n_files == MAX_FILES) return rk_fail(err, RK_ETOOBIG, "reflection: more than %d files", MAX_FILES);
    int fi = r->n_files;
    refl_file *fl = &r->files[fi];
    memset(fl, 0, sizeof *fl);
    fl->bytes = p;
    fl->len = n;
    if (msg_name(p, n, fl->name, sizeof fl->name)) return rk_fail(err, RK_EFORMAT, "reflection: file %d has no name", fi);
    r->n_files++;
    char pkg[NAME_MAX_LEN] = "";
    pb_cur c = {p, p + n};
    uint32_t f;
    const uint8_t *v;
    size_t len;
    int k;
    while ((k = next_field(&c, &f, &v, &len)) == 1) /* the package first: symbols need it */
        if (f == 2 && v && len < sizeof pkg) memcpy(pkg, v, len), pkg[len] = 0;
    if (k < 0) return rk_fail(err, RK_EFORMAT, "reflection: file %s: malformed", fl->name);
    rk_status st = RK_OK;
    c.p = p;
    while (st == RK_OK && (k = next_field(&c, &f, &v, &len)) == 1) {
        if (!v) continue;
        if (f == 3) { /* dependency */
            if (fl->n_deps == MAX_DEPS || len >= NAME_MAX_LEN)
                return rk_fail(err, RK_ETOOBIG, "reflection: file %s: too many or too long imports", fl->name);
            memcpy(fl->dep_names[fl->n_deps], v, len);
            fl->dep_names[fl->n_deps++][len] = 0;
        } else if (f == 4) {
            st = index_message(r, pkg, v, len, fi, 0, err);
        } else if (f == 5 || f == 6) {
            st = index_leafy(r, pkg, v, len, fi, f == 6, err);
        } else if (f == 7) {
            st = declare(r, pkg, v, len, fi, SYM_OTHER, "extension", NULL, err);
        }
    }
    return st;
}

static int find_file(const rk_reflection *r, const char *name) {
    for (int i = 0; i < r->n_files; i++)
        if (!strcmp(r->files[i].name, name)) return i;
    return -1;
}

static const refl_symbol *find_symbol(const rk_reflection *r, const char *name) {
    if (name[0] == '.') name++; /* ".pkg.Msg", as type names are written in descriptors */
    for (int i = 0; i < r->n_symbols; i++)
        if (!strcmp(r->symbols[i].name, name)) return &r->symbols[i];
    return NULL;
}

rk_status rk_reflection_create(rk_reflection **out, rk_err *err) {
    *out = NULL;
    rk_reflection *r = rk_calloc(1, sizeof *r);
    if (!r) return rk_fail(err, RK_ENOMEM, "reflection: out of memory");
    pb_cur c = {rk_descriptor_set, rk_descriptor_set + rk_descriptor_set_len};
    uint32_t f;
    const uint8_t *v;
    size_t len;
    int k;
    rk_status st = RK_OK;
    while (st == RK_OK && (k = next_field(&c, &f, &v, &len)) == 1)
        if (f == 1 && v) st = index_file(r, v, len, err); /* FileDescriptorSet.file */
    if (st == RK_OK && k < 0) st = rk_fail(err, RK_EFORMAT, "reflection: the descriptor set is malformed");
    for (int i = 0; st == RK_OK && i < r->n_files; i++)
        for (int d = 0; st == RK_OK && d < r->files[i].n_deps; d++)
            if ((r->files[i].deps[d] = find_file(r, r->files[i].dep_names[d])) < 0)
                st = rk_fail(err, RK_EFORMAT, "reflection: %s imports %s, not in the descriptor set", r->files[i].name,
                             r->files[i].dep_names[d]);
    if (st) {
        rk_free(r);
        return st;
    }
    *out = r;
    return RK_OK;
}

void rk_reflection_destroy(rk_reflection *r) { rk_free(r); }

/* ------------------------------------------------------------ answers */

/* File fi and, first, every file it imports (transitively), each once. */
static void collect_files(const rk_reflection *r, int fi, int *seen, ProtobufCBinaryData *out, size_t *n) {
    if (seen[fi]) return;
    seen[fi] = 1;
    out[(*n)++] = (ProtobufCBinaryData){r->files[fi].len, (uint8_t *)r->files[fi].bytes};
    for (int d = 0; d < r->files[fi].n_deps; d++) collect_files(r, r->files[fi].deps[d], seen, out, n);
}

rk_status rk_reflection_answer(const rk_reflection *r, const uint8_t *in, size_t in_len, uint8_t **out,
                               size_t *out_len, rk_err *err) {
    *out = NULL;
    *out_len = 0;
    Grpc__Reflection__V1alpha__ServerReflectionRequest *req =
        grpc__reflection__v1alpha__server_reflection_request__unpack(&rk_pb_allocator, in_len, in);
    if (!req) return rk_fail(err, RK_EINVAL, "request is not a valid grpc.reflection.v1alpha.ServerReflectionRequest");
    Grpc__Reflection__V1alpha__ServerReflectionResponse resp = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__FileDescriptorResponse fdr = GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse lsr = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ExtensionNumberResponse enr = GRPC__REFLECTION__V1ALPHA__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse svc[MAX_FILES * 4], *svcp[MAX_FILES * 4];
    ProtobufCBinaryData files[MAX_FILES];
    int seen[MAX_FILES] = {0};
    char msg[NAME_MAX_LEN + 64];
    resp.valid_host = req->host;
    resp.original_request = req;
    int fi = -1;
    const refl_symbol *sym = NULL;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (int i = 0; i < r->n_symbols && lsr.n_service < MAX_FILES * 4; i++)
            if (r->symbols[i].kind == SYM_SERVICE) {
                grpc__reflection__v1alpha__service_response__init(&svc[lsr.n_service]);
                svc[lsr.n_service].name = (char *)r->symbols[i].name;
                svcp[lsr.n_service] = &svc[lsr.n_service];
                lsr.n_service++;
            }
        lsr.service = svcp;
        resp.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lsr;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        if ((fi = find_file(r, req->file_by_filename)) < 0)
            snprintf(msg, sizeof msg, "file not found: %.200s", req->file_by_filename);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        if ((sym = find_symbol(r, req->file_containing_symbol))) fi = sym->file;
        else snprintf(msg, sizeof msg, "symbol not found: %.200s", req->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        snprintf(msg, sizeof msg, "extension not found: %.200s field %d (rankd's protos declare no extensions)",
                 req->file_containing_extension->containing_type ? req->file_containing_extension->containing_type : "",
                 (int)req->file_containing_extension->extension_number);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        sym = find_symbol(r, req->all_extension_numbers_of_type);
        if (sym && sym->kind == SYM_MESSAGE) {
            enr.base_type_name = (char *)sym->name; /* no extensions: an empty list */
            resp.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &enr;
        } else {
            snprintf(msg, sizeof msg, "message type not found: %.200s", req->all_extension_numbers_of_type);
        }
        break;
    default:
        snprintf(msg, sizeof msg, "no message_request set");
        er.error_code = 12; /* UNIMPLEMENTED, as gRPC's C++ server answers it */
        break;
    }
    if (fi >= 0) {
        collect_files(r, fi, seen, files, &fdr.n_file_descriptor_proto);
        fdr.file_descriptor_proto = files;
        resp.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &fdr;
    } else if (!resp.message_response_case) {
        if (!er.error_code) er.error_code = 5; /* NOT_FOUND */
        er.error_message = msg;
        resp.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
    }
    rk_status st = RK_OK;
    size_t n = grpc__reflection__v1alpha__server_reflection_response__get_packed_size(&resp);
    uint8_t *buf = rk_malloc(n ? n : 1);
    if (!buf) st = rk_fail(err, RK_ENOMEM, "reflection: out of memory for a %zu-byte answer", n);
    else grpc__reflection__v1alpha__server_reflection_response__pack(&resp, buf);
    grpc__reflection__v1alpha__server_reflection_request__free_unpacked(req, &rk_pb_allocator);
    if (st == RK_OK) *out = buf, *out_len = n;
    return st;
}
