/*
 * bench/inprocess.c — the in-process baseline of rank-bench --inprocess
 * and bench/service_cost.c: one already-unpacked RankRequest fed to an
 * rk_scorer (aliases, sparse values as the service adds them: empty values
 * skipped, at most max_values kept; dense values) and scored. No wire
 * decode, no validation beyond the scorer's own, no response.
 */
#include <string.h>

#include "inprocess.h"

static int feed_values(rk_scorer *s, int f, char *const *v, size_t n, int r0, int r1, int max_values) {
    int taken = 0;
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(v[k]);
        if (!len) continue;
        if (max_values > 0 && taken >= max_values) break;
        taken++;
        if (rk_scorer_add_sparse_rows(s, r0, r1, f, v[k], len, NULL)) return -1;
    }
    return 0;
}

int rk_bench_score_inprocess(rk_scorer *s, const rk_model_cfg *cfg, const Rankd__V1__RankRequest *q, float *pctr) {
    const int n = (int)q->n_candidates;
    if (rk_scorer_begin(s, n, NULL)) return -1;
    int a_user = cfg->alias_user_id[0] ? rk_model_cfg_find(cfg, cfg->alias_user_id) : -1;
    int a_hist = cfg->alias_recent_items[0] ? rk_model_cfg_find(cfg, cfg->alias_recent_items) : -1;
    int a_ad = cfg->alias_ad_id[0] ? rk_model_cfg_find(cfg, cfg->alias_ad_id) : -1;
    const Rankd__V1__User *u = q->user;
    if (u) {
        if (a_user >= 0 && u->user_id && u->user_id[0] &&
            feed_values(s, a_user, &u->user_id, 1, 0, n, cfg->features[a_user].max_values))
            return -1;
        if (a_hist >= 0 &&
            feed_values(s, a_hist, u->recent_item_ids, u->n_recent_item_ids, 0, n, cfg->features[a_hist].max_values))
            return -1;
        for (size_t j = 0; j < u->n_sparse; j++) {
            int f = rk_model_cfg_find(cfg, u->sparse[j]->name);
            if (f < 0 || feed_values(s, f, u->sparse[j]->values, u->sparse[j]->n_values, 0, n, cfg->features[f].max_values))
                return -1;
        }
        for (size_t j = 0; j < u->n_dense; j++) {
            int f = rk_model_cfg_find(cfg, u->dense[j]->name);
            for (int r = 0; r < n; r++)
                if (f < 0 || rk_scorer_set_dense(s, r, f, u->dense[j]->value, NULL)) return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        const Rankd__V1__Candidate *c = q->candidates[i];
        if (a_ad >= 0 && c->ad_id && c->ad_id[0] && feed_values(s, a_ad, &c->ad_id, 1, i, i + 1, 0)) return -1;
        for (size_t j = 0; j < c->n_sparse; j++) {
            int f = rk_model_cfg_find(cfg, c->sparse[j]->name);
            if (f < 0 || feed_values(s, f, c->sparse[j]->values, c->sparse[j]->n_values, i, i + 1, cfg->features[f].max_values))
                return -1;
        }
        for (size_t j = 0; j < c->n_dense; j++) {
            int f = rk_model_cfg_find(cfg, c->dense[j]->name);
            if (f < 0 || rk_scorer_set_dense(s, i, f, c->dense[j]->value, NULL)) return -1;
        }
    }
    return rk_scorer_run(s, pctr, NULL, NULL, NULL) ? -1 : 0;
}

