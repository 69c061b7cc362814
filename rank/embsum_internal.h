/*
 * rank/embsum_internal.h — private to rank/embsum*.c: the layout of the
 * EmbSum model (parameters in one allocation, llm.c style) and of its
 * loaded data. Kept apart from rank/internal.h so EmbSum stays in its own
 * files.
 */
#ifndef RK_EMBSUM_INTERNAL_H
#define RK_EMBSUM_INTERNAL_H

#include "internal.h"

/* Pointers into one parameter-sized array (parameters, gradients, Adam state). */
typedef struct {
    float *Cu;   /* [m, dc]  user codes */
    float *Wau;  /* [d, dc]  user attention map */
    float *Ci;   /* [k, dc]  item codes */
    float *Wai;  /* [d, dc]  item attention map */
    float *Pu;   /* [d, d]   UPE projection (Linear layout, out x in) */
    float *Wg;   /* [d, d]   global user vector map */
    float *bg;   /* [d] */
    float *cal;  /* [2]      calibration: scale a, bias b */
} rk_embsum_ptrs;

struct rk_embsum {
    rk_embsum_cfg cfg;
    int d;
    size_t n_floats;
    float *params;
    rk_embsum_ptrs p;
};

void rk_embsum_point(const rk_embsum_cfg *c, int d, float *base, rk_embsum_ptrs *p, size_t *n_floats);

struct rk_embsum_work {
    int max_n, d;
    float *H;        /* [max_n, d]  UPE inputs (sessions + global vector) */
    float *E;        /* [16, d] */
    float *A, *Z;    /* [16, max_n], [max_n, dc] */
    float *S, *W;    /* [16 * 16] */
};

/* One split's per-user inputs. Offsets are [n_users + 1]. */
typedef struct {
    int32_t *sess_off;        /* session rows of each user */
    float *sess_first, *sess_mean; /* [rows, d] */
    int32_t *hist_off, *hist; /* history item indices, oldest first */
    int32_t *pos_off, *pos;   /* positives (label 1) of the period, by item index */
    int32_t *neg;             /* valid/test: 4 sampled negatives per positive, [pos_off[n_users] * 4] */
} rk_embsum_split;

#define RK_EMBSUM_EVAL_NEG 4

struct rk_embsum_data {
    int d, g, p;
    int n_items;
    int64_t *item_id;         /* sorted */
    char **item_text;         /* CPE text: title | genres | tags */
    char **item_short;        /* session text of an item: title (genres) */
    char *text_buf;
    uint32_t *item_genres;    /* bit per genre */
    int n_genres;
    float *tok;               /* [tok_off[n_items], d] row-normalized token states */
    int32_t *tok_off;
    float *item_vec;          /* [n_items, d] sentence vectors (normalized mean of tokens) */
    int n_users;
    int64_t *user_id;         /* sorted */
    int32_t *rated_off, *rated; /* every item each user rated, sorted */
    rk_embsum_split sp[3];
    float *summary;           /* [n_users, d] encoded summaries, or NULL */
    uint8_t *has_summary;
};

struct rk_embsum_bundle {
    rk_embsum *e;
    rk_store *st;
    rk_embsum_work *w;
    char version[128], codec[8];
    /* items.tsv: texts of every item the bundle was built from */
    int n_items;
    int64_t *item_id;
    char **item_short, **item_text, *text_buf;
    float *default_upe;       /* [m, d]: mean of the stored UPEs */
    /* request scratch (rank/embsum_serve.c), grown to the largest request */
    int cap;
    float *upe;                  /* [m, d] */
    float *cpe_all, *prod, *score; /* [cap, k*d], [cap*k, m] products, [cap] */
    uint64_t *keys;              /* [cap] */
    int32_t *unknown;            /* [cap] candidates needing a request-time CPE */
};

/* Index of id in sorted ids[n], -1 if absent. */
int rk_embsum_find(const int64_t *ids, int n, int64_t id);
/* Session vectors of user u in split s per the pooling. */
static inline const float *rk_embsum_sessions(const rk_embsum_data *d, int s, int u, rk_session_pool pool, int *ns) {
    const rk_embsum_split *sp = &d->sp[s];
    *ns = sp->sess_off[u + 1] - sp->sess_off[u];
    return (pool == RK_SESSION_FIRST ? sp->sess_first : sp->sess_mean) + (size_t)sp->sess_off[u] * d->d;
}
/* Training loss of one example (user u of split, candidates items[0..C),
 * items[0] the positive) and its gradient into grad[n_floats] (for tests:
 * the hand-written backward against finite differences). */
double rk_embsum_example_loss(const rk_embsum *e, const rk_embsum_data *d, int split, int u, const int32_t *items,
                              int C, float *grad);
/* MIND's per-impression metrics of scores y[n] with labels lab[n]. */
void rk_rank_metrics_add(const float *y, const uint8_t *lab, int n, double *auc, double *mrr, double *ndcg5,
                         double *ndcg10);

#endif /* RK_EMBSUM_INTERNAL_H */
