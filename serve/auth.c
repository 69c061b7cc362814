/*
 * serve/auth.c — transport security and Admin authentication for rankd.
 *
 * TLS: with a server certificate and key (PEM) the gRPC port is served
 * through gRPC core's SSL server credentials; with a client CA as well,
 * every client must present a certificate signed by it (mutual TLS).
 * Without them the port is plaintext, meant for loopback development (a
 * warning is logged for any other address).
 *
 * Admin (rankd.v1.Admin/ApplyUpdates, enabled with --updates) is then
 * authenticated, either by a bearer token ("authorization: Bearer <token>"
 * request metadata, compared in constant time with the token file's first
 * line) or by the client certificate's common name under mutual TLS (an
 * allow list). With neither configured, Admin is accepted only when the
 * server listens on a loopback address. The identity that passed ("token",
 * "cn:NAME", "loopback") is returned for the update log line.
 *
 * The server certificate's dates are read at start-up (OpenSSL): one that
 * has expired or is not yet valid, which every client would refuse in the
 * handshake, or that expires within RK_CERT_WARN_DAYS, is a warning naming
 * the file and the date.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"

struct rk_auth {
    char *token;              /* bearer token, NUL-terminated; NULL: none */
    size_t token_len;
    char allow[1024];         /* comma-separated client-certificate CNs; "" none */
    int loopback;             /* the gRPC listen address is loopback */
    int mtls;
    grpc_server_credentials *creds;
};

int rk_listen_is_loopback(const char *hostport) {
    const char *colon = strrchr(hostport, ':');
    size_t n = colon ? (size_t)(colon - hostport) : strlen(hostport);
    static const char *lo[] = {"127.0.0.1", "[::1]", "localhost", "::1"};
    for (size_t i = 0; i < sizeof lo / sizeof lo[0]; i++)
        if (strlen(lo[i]) == n && !memcmp(lo[i], hostport, n)) return 1;
    return n > 4 && !memcmp(hostport, "127.", 4);
}

static rk_status read_pem(const char *what, const char *path, char **out, rk_err *err) {
    rk_status st = rk_read_file(path, out, NULL, err);
    if (st) return rk_err_prefix(err, "%s", what);
    if (!strstr(*out, "-----BEGIN ")) {
        rk_free(*out);
        *out = NULL;
        return rk_fail(err, RK_EFORMAT, "%s %s: not a PEM file", what, path);
    }
    return RK_OK;
}

#define RK_CERT_WARN_DAYS 14

/* "2026-12-05 04:40:34 UTC" */
static void cert_time(const ASN1_TIME *t, char *out, size_t cap) {
    struct tm tm;
    if (!ASN1_TIME_to_tm(t, &tm) || !strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm)) snprintf(out, cap, "(unreadable)");
}

/* Warn when the first certificate of pem is outside its dates, or close to
 * its end. Nothing when OpenSSL cannot read it (gRPC then refuses it). */
static void warn_cert_dates(const char *path, const char *pem) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    char when[64];
    int days = 0, secs = 0;
    if (x && X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        cert_time(X509_get0_notAfter(x), when, sizeof when);
        rk_warn("tls certificate %s expired on %s: clients will refuse the TLS handshake", path, when);
    } else if (x && X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        cert_time(X509_get0_notBefore(x), when, sizeof when);
        rk_warn("tls certificate %s is not valid before %s: clients will refuse the TLS handshake until then", path, when);
    } else if (x && ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) && days < RK_CERT_WARN_DAYS) {
        cert_time(X509_get0_notAfter(x), when, sizeof when);
        rk_warn("tls certificate %s expires on %s (in %d days %d hours)", path, when, days, secs / 3600);
    }
    X509_free(x);
    BIO_free(b);
}

static rk_status load_token(rk_auth *a, const char *path, rk_err *err) {
    char *t = NULL;
    size_t len = 0;
    rk_status st = rk_read_text(path, &t, &len, err); /* a NUL is refused (it cut the token short), a BOM dropped */
    if (st) return rk_err_prefix(err, "admin token file");
    size_t n = strcspn(t, "\r\n");
    t[n] = 0;
    if (n < 16) {
        rk_free(t);
        return rk_fail(err, RK_EINVAL, "admin token file %s: first line is %zu bytes, want at least 16", path, n);
    }
    a->token = t;
    a->token_len = n;
    return RK_OK;
}

rk_status rk_auth_create(const rk_server_opts *o, rk_auth **out, rk_err *err) {
    *out = NULL;
    if (!o->tls_cert_file != !o->tls_key_file)
        return rk_fail(err, RK_EINVAL, "tls: give both the certificate and the key, or neither");
    if (o->tls_client_ca_file && !o->tls_cert_file)
        return rk_fail(err, RK_EINVAL, "tls: a client CA (mutual TLS) needs the server certificate and key");
    if (o->admin_allow_cn && !o->tls_client_ca_file)
        return rk_fail(err, RK_EINVAL, "admin: a client-certificate allow list needs mutual TLS (the client CA)");
    if (o->admin_allow_cn && strlen(o->admin_allow_cn) >= sizeof((rk_auth *)0)->allow)
        return rk_fail(err, RK_EINVAL, "admin: allow list longer than 1023 bytes");
    rk_auth *a = rk_calloc(1, sizeof *a);
    if (!a) return rk_fail(err, RK_ENOMEM, "auth: out of memory");
    a->loopback = rk_listen_is_loopback(o->listen);
    if (o->admin_allow_cn) snprintf(a->allow, sizeof a->allow, "%s", o->admin_allow_cn);
    rk_status st = o->admin_token_file ? load_token(a, o->admin_token_file, err) : RK_OK;
    char *cert = NULL, *key = NULL, *ca = NULL;
    if (st == RK_OK && o->tls_cert_file) st = read_pem("tls certificate", o->tls_cert_file, &cert, err);
    if (st == RK_OK && o->tls_key_file) st = read_pem("tls key", o->tls_key_file, &key, err);
    if (st == RK_OK && o->tls_client_ca_file) st = read_pem("tls client CA", o->tls_client_ca_file, &ca, err);
    if (st == RK_OK && cert) {
        warn_cert_dates(o->tls_cert_file, cert);
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        a->mtls = ca != NULL;
        a->creds = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1, ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (!a->creds) st = rk_fail(err, RK_EINVAL, "tls: gRPC refused the certificate/key pair");
    }
    rk_free(cert);
    rk_free(key);
    rk_free(ca);
    if (st == RK_OK && !cert && !a->loopback)
        rk_warn("plaintext gRPC on %s, a non-loopback address: give --tls-cert/--tls-key", o->listen);
    if (st == RK_OK && o->updates && !a->token && !a->allow[0]) {
        if (!a->loopback)
            st = rk_fail(err, RK_EINVAL,
                         "admin: --updates on %s needs authentication (--admin-token-file, or --admin-allow-cn "
                         "with mutual TLS); unauthenticated Admin is only for loopback",
                         o->listen);
        else
            rk_warn("admin: Admin/ApplyUpdates without authentication (loopback only)");
    }
    if (st) {
        rk_auth_destroy(a);
        return st;
    }
    *out = a;
    return RK_OK;
}

grpc_server_credentials *rk_auth_server_credentials(rk_auth *a) {
    return a->creds ? a->creds : grpc_insecure_server_credentials_create();
}

int rk_auth_tls(const rk_auth *a) { return a->creds != NULL; }

void rk_auth_destroy(rk_auth *a) {
    if (!a) return;
    rk_free(a->token);
    rk_free(a);
}

/* Constant-time comparison of n bytes. */
static int same(const char *x, const char *y, size_t n) {
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++) d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

/* Exactly one authorization entry, and it is the token: a call that also
 * carries other credentials is refused rather than let in by one of them. */
static int bearer_ok(const rk_auth *a, const grpc_metadata_array *md) {
    int entries = 0, ok = 0;
    for (size_t i = 0; i < md->count; i++) {
        const grpc_metadata *m = &md->metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) != 13 || memcmp(GRPC_SLICE_START_PTR(m->key), "authorization", 13)) continue;
        size_t n = GRPC_SLICE_LENGTH(m->value);
        const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
        entries++;
        ok = n == 7 + a->token_len && !memcmp(v, "Bearer ", 7) && same(v + 7, a->token, a->token_len);
    }
    return entries == 1 && ok;
}

/* The client certificate's CN when it is on the allow list: 1 and *cn set. */
static int cn_ok(const rk_auth *a, grpc_call *call, char *cn, size_t cap) {
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx) return 0;
    int ok = 0;
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_CN_PROPERTY_NAME);
    const grpc_auth_property *p;
    while (!ok && (p = grpc_auth_property_iterator_next(&it))) {
        size_t n = p->value_length;
        for (const char *s = a->allow; *s && !ok;) {
            size_t k = strcspn(s, ",");
            if (k == n && !memcmp(s, p->value, n)) {
                ok = 1;
                snprintf(cn, cap, "cn:%.*s", (int)n, p->value);
            }
            s += k + (s[k] == ',');
        }
    }
    grpc_auth_context_release(ctx);
    return ok;
}

int rk_auth_admin(const rk_auth *a, grpc_call *call, const grpc_metadata_array *md, char *who, size_t cap) {
    if (a->token && bearer_ok(a, md)) {
        snprintf(who, cap, "token");
        return 0;
    }
    if (a->allow[0] && cn_ok(a, call, who, cap)) return 0;
    if (!a->token && !a->allow[0] && a->loopback) {
        snprintf(who, cap, "loopback");
        return 0;
    }
    snprintf(who, cap, "%s", a->token ? "no valid bearer token" : "no allowed client certificate");
    return -1;
}
