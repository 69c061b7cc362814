/*
 * tests/fuzz/fuzz_request.c — libFuzzer target: one serialized RankRequest
 * through a worker's rk_service_handle, as rankd runs it: the wire check
 * (NUL bytes in strings, repeated singular messages, field numbers), the
 * arena-bounded decode (rankd's own, protobuf-c for what it refuses), validation of every field and scoring
 * on a small model saved and opened at start-up. Any input must end in a
 * gRPC status with a message, never a crash; an OK response must decode.
 * Differential too: the same input through a second service with the
 * direct path off (service.c) must give the same status and message, or
 * the same response (timing aside: it is a clock). Any difference aborts.
 * RK_FUZZ_SEED_OUT=FILE writes one valid request there (the seed corpus).
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "internal.h"
#include "rank.h"
#include "rank.pb-c.h"
#include "serve.h"

static rk_service *svc, *tree; /* direct path on / off */
static char dir[256];

static void write_seed(const char *path) {
    Rankd__V1__RankRequest r = RANKD__V1__RANK_REQUEST__INIT;
    Rankd__V1__User u = RANKD__V1__USER__INIT;
    char *hist[3] = {"10", "11", "12"}, *hv[1] = {"7"}, *g[2] = {"Drama", "War"};
    u.user_id = "42";
    u.recent_item_ids = hist;
    u.n_recent_item_ids = 3;
    Rankd__V1__SparseFeature h = RANKD__V1__SPARSE_FEATURE__INIT, gs = RANKD__V1__SPARSE_FEATURE__INIT;
    h.name = "hour", h.values = hv, h.n_values = 1;
    Rankd__V1__SparseFeature *up[1] = {&h};
    u.sparse = up, u.n_sparse = 1;
    gs.name = "genres", gs.values = g, gs.n_values = 2;
    Rankd__V1__SparseFeature *cp[1] = {&gs};
    Rankd__V1__DenseFeature y = RANKD__V1__DENSE_FEATURE__INIT;
    y.name = "year", y.value = 1999;
    Rankd__V1__DenseFeature *dp[1] = {&y};
    Rankd__V1__Candidate c[2] = {RANKD__V1__CANDIDATE__INIT, RANKD__V1__CANDIDATE__INIT};
    Rankd__V1__Candidate *cs[2] = {&c[0], &c[1]};
    c[0].ad_id = "3753", c[1].ad_id = "260";
    for (int i = 0; i < 2; i++) c[i].sparse = cp, c[i].n_sparse = 1, c[i].dense = dp, c[i].n_dense = 1;
    r.request_id = "seed";
    r.user = &u;
    r.candidates = cs, r.n_candidates = 2;
    r.return_timing = 1;
    size_t n = rankd__v1__rank_request__get_packed_size(&r);
    uint8_t *b = malloc(n);
    rankd__v1__rank_request__pack(&r, b);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n) abort();
    fclose(f);
    free(b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    rk_log_set_program("fuzz_request");
    if (getenv("RK_FUZZ_SEED_OUT")) write_seed(getenv("RK_FUZZ_SEED_OUT"));
    rk_model_cfg c;
    rk_err e = {0};
    rk_model *m;
    if (rk_model_cfg_parse(RK_FUZZ_CFG, &c, &e) || rk_model_create(&c, &m, &e)) abort();
    rk_model_cfg_free(&c); /* the model keeps its own copy */
    snprintf(dir, sizeof dir, "/tmp/rk_fuzz_req_%ld", (long)getpid());
    (void)rk_rm_rf(dir, NULL);
    if (rk_model_save(m, dir, NULL, 1, &e)) abort();
    rk_model_destroy(m);
    if (rk_model_open(dir, &m, &e)) abort();
    rk_server_opts o = RK_SERVER_OPTS_DEFAULT;
    o.max_candidates = 64;
    o.max_message_bytes = 1 << 20;
    if (rk_service_create(m, &o, &svc, &e) || rk_service_create(m, &o, &tree, &e)) abort();
    rk_service_set_direct(tree, 0);
    return 0; /* the model lives as long as the process */
}

/* Do two responses say the same, their timing aside? */
static int same_response(const Rankd__V1__RankResponse *a, const Rankd__V1__RankResponse *b) {
    if (strcmp(a->request_id, b->request_id) || strcmp(a->model_version, b->model_version) ||
        a->n_scores != b->n_scores || !a->timing != !b->timing)
        return 0;
    for (size_t i = 0; i < a->n_scores; i++) {
        const Rankd__V1__Score *x = a->scores[i], *y = b->scores[i];
        if (strcmp(x->ad_id, y->ad_id) || memcmp(&x->pctr, &y->pctr, sizeof x->pctr) || x->n_towers != y->n_towers)
            return 0;
        for (size_t k = 0; k < x->n_towers; k++)
            if (strcmp(x->towers[k]->tower, y->towers[k]->tower) ||
                memcmp(&x->towers[k]->pctr, &y->towers[k]->pctr, sizeof(float)) ||
                memcmp(&x->towers[k]->weight, &y->towers[k]->weight, sizeof(float)))
                return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *resp, *tresp;
    size_t rl, trl;
    rk_err e = {0}, te = {0};
    int code = rk_service_handle(svc, data, size, rk_now(), &resp, &rl, &e);
    if (code == 0) {
        Rankd__V1__RankResponse *r = rankd__v1__rank_response__unpack(NULL, rl, resp);
        if (!r) abort();
        int tcode = rk_service_handle(tree, data, size, rk_now(), &tresp, &trl, &te);
        Rankd__V1__RankResponse *t = tcode ? NULL : rankd__v1__rank_response__unpack(NULL, trl, tresp);
        if (!t || !same_response(r, t)) {
            fprintf(stderr, "fuzz_request: the direct path's response differs from the tree path's (%d: %s)\n", tcode,
                    te.msg);
            abort();
        }
        rankd__v1__rank_response__free_unpacked(t, NULL);
        rankd__v1__rank_response__free_unpacked(r, NULL);
    } else {
        if (!e.msg[0]) abort();
        int tcode = rk_service_handle(tree, data, size, rk_now(), &tresp, &trl, &te);
        if (tcode != code || strcmp(e.msg, te.msg)) {
            fprintf(stderr, "fuzz_request: direct path %d '%s', tree path %d '%s'\n", code, e.msg, tcode, te.msg);
            abort();
        }
    }
    return 0;
}
