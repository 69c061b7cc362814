/*
 * rank/config.c — model config: defaults, JSON parsing with errors that name
 * the key, and JSON writing (the "config" part of model.json).
 *
 * A config file (under configs/) and a bundle's model.json share this
 * format; model.json adds "format_version", "version", "metrics",
 * "training", "tables", "dense" and "sid", which the parser accepts and skips.
 */
#include "rank.h"
#include "internal.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <string.h>

rk_status rk_model_cfg_default(rk_model_cfg *c, rk_err *err) {
    memset(c, 0, sizeof *c);
    c->tower.hidden = rk_malloc(2 * sizeof(int));
    if (!c->tower.hidden) return rk_fail(err, RK_ENOMEM, "config: out of memory");
    c->format_version = RK_FORMAT_VERSION;
    snprintf(c->name, sizeof c->name, "model");
    snprintf(c->label_column, sizeof c->label_column, "label");
    c->tower.type = RK_TOWER_DCNV2;
    c->tower.n_cross = 2;
    c->tower.n_hidden = 2;
    c->tower.hidden[0] = 256;
    c->tower.hidden[1] = 128;
    rk_train_cfg *t = &c->train;
    t->seed = 1;
    t->batch_size = 256;
    t->max_epochs = 10;
    t->patience = 2;
    t->lr_dense = 1e-3f;
    t->lr_embed = 0.05f;
    t->adam_b1 = 0.9f;
    t->adam_b2 = 0.999f;
    t->adam_eps = 1e-8f;
    t->adagrad_eps = 1e-10f;
    t->init_std_embed = 0.05f;
    t->zero_unseen_rows = 1;
    t->shuffle = 1;
    t->threads = 2;
    c->fusion.type = RK_FUSION_CONFIDENCE;
    c->fusion.tau = 1.0f;
    c->fusion.lambda = 0.5f;
    c->fusion.w_fused = 1.0f;
    c->fusion.w_member = 1.0f;
    return RK_OK;
}

void rk_model_cfg_free(rk_model_cfg *c) {
    if (!c) return;
    rk_free(c->features);
    rk_free(c->tower.hidden);
    for (int i = 0; c->members && i < c->n_members; i++) rk_free(c->members[i].tower.hidden);
    rk_free(c->members);
    rk_strmap_destroy(c->by_name);
    memset(c, 0, sizeof *c);
}

static int *dup_ints(const int *a, int n) {
    int *d = rk_malloc((size_t)(n ? n : 1) * sizeof(int));
    if (d && n) memcpy(d, a, (size_t)n * sizeof(int));
    return d;
}

/* The name index of c's features; RK_EINVAL naming a repeated name. */
static rk_status index_names(rk_model_cfg *c, rk_err *err) {
    rk_strmap_destroy(c->by_name);
    if (!(c->by_name = rk_strmap_create((size_t)c->n_features))) return rk_fail(err, RK_ENOMEM, "config: out of memory");
    for (int i = 0; i < c->n_features; i++) {
        const char *nm = c->features[i].name;
        rk_status s = rk_strmap_put(c->by_name, nm, strlen(nm), i);
        if (s == RK_EEXIST)
            return rk_fail(err, RK_EINVAL, "features[%d].name: '%s' repeats features[%d]", i, nm,
                           rk_strmap_get(c->by_name, nm, strlen(nm)));
        if (s) return rk_fail(err, RK_ENOMEM, "config: out of memory");
    }
    return RK_OK;
}

rk_status rk_model_cfg_copy(rk_model_cfg *dst, const rk_model_cfg *src, rk_err *err) {
    *dst = *src;
    dst->features = NULL;
    dst->members = NULL;
    dst->tower.hidden = NULL;
    dst->by_name = NULL;
    int nm = src->n_members;
    dst->n_members = 0; /* members[] filled below: free only what exists */
    dst->features = rk_malloc((size_t)(src->n_features ? src->n_features : 1) * sizeof(rk_feature));
    dst->tower.hidden = dup_ints(src->tower.hidden, src->tower.n_hidden);
    dst->members = rk_calloc((size_t)(nm ? nm : 1), sizeof(rk_member_cfg));
    rk_status s = dst->features && dst->tower.hidden && dst->members ? RK_OK : RK_ENOMEM;
    for (int i = 0; s == RK_OK && i < nm; i++) {
        dst->members[i] = src->members[i];
        dst->members[i].tower.hidden = dup_ints(src->members[i].tower.hidden, src->members[i].tower.n_hidden);
        dst->n_members = i + 1;
        if (!dst->members[i].tower.hidden) s = RK_ENOMEM;
    }
    if (s) {
        rk_model_cfg_free(dst);
        return rk_fail(err, RK_ENOMEM, "config: out of memory copying %d features", src->n_features);
    }
    if (src->n_features) memcpy(dst->features, src->features, (size_t)src->n_features * sizeof(rk_feature));
    if ((s = index_names(dst, err))) rk_model_cfg_free(dst);
    return s;
}

int rk_model_cfg_input_dim(const rk_model_cfg *c) {
    int d = 0;
    for (int i = 0; i < c->n_features; i++) d += c->features[i].kind == RK_FEAT_SPARSE ? c->features[i].dim : 1;
    return d;
}

int rk_model_cfg_find_n(const rk_model_cfg *c, const char *name, size_t len) {
    RK_ASSERT(c->by_name || c->n_features == 0);
    return c->by_name ? rk_strmap_get(c->by_name, name, len) : -1;
}

int rk_model_cfg_find(const rk_model_cfg *c, const char *name) { return rk_model_cfg_find_n(c, name, strlen(name)); }

static int key_in(const char *k, const char *const *allowed) {
    for (; *allowed; allowed++)
        if (!strcmp(k, *allowed)) return 1;
    return 0;
}

static rk_status check_keys(json_t *o, const char *where, const char *const *allowed, rk_err *err) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        (void)v;
        if (!key_in(k, allowed)) return rk_fail(err, RK_EINVAL, "%s: unknown key '%s'", where, k);
    }
    return RK_OK;
}

static rk_status get_str(json_t *o, const char *key, const char *where, char *dst, size_t cap, int required, rk_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return required ? rk_fail(err, RK_EINVAL, "%s.%s: missing", where, key) : RK_OK;
    if (!json_is_string(v)) return rk_fail(err, RK_EINVAL, "%s.%s: expected a string", where, key);
    const char *s = json_string_value(v);
    if (strlen(s) >= cap || (required && !s[0]))
        return rk_fail(err, RK_EINVAL, "%s.%s: must be 1..%zu characters", where, key, cap - 1);
    snprintf(dst, cap, "%s", s);
    return RK_OK;
}

static rk_status get_num(json_t *o, const char *key, const char *where, double lo, double hi, double *dst, rk_err *err) {
    json_t *v = json_object_get(o, key);
    if (!v) return RK_OK;
    if (!json_is_number(v)) return rk_fail(err, RK_EINVAL, "%s.%s: expected a number", where, key);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi) return rk_fail(err, RK_EINVAL, "%s.%s: %g outside [%g, %g]", where, key, x, lo, hi);
    *dst = x;
    return RK_OK;
}

#define GET_INT(o, key, where, lo, hi, field)                                   \
    do {                                                                        \
        double _x = (double)(field);                                            \
        if ((s = get_num(o, key, where, lo, hi, &_x, err)) != RK_OK) return s;  \
        if (_x != floor(_x)) return rk_fail(err, RK_EINVAL, "%s.%s: expected an integer", where, key); \
        (field) = _x;                                                           \
    } while (0)
#define GET_FLT(o, key, where, lo, hi, field)                                   \
    do {                                                                        \
        double _x = (double)(field);                                            \
        if ((s = get_num(o, key, where, lo, hi, &_x, err)) != RK_OK) return s;  \
        (field) = _x;                                                           \
    } while (0)

static rk_status parse_feature(json_t *fo, int i, rk_feature *f, rk_err *err) {
    char where[64];
    snprintf(where, sizeof where, "features[%d]", i);
    if (!json_is_object(fo)) return rk_fail(err, RK_EINVAL, "%s: expected an object", where);
    static const char *const keys[] = {"name", "column", "kind", "side", "table_size", "dim", "pooling",
                                       "max_values", "log1p", "mean", "std", "param", "ngram", "sid", NULL};
    rk_status s = check_keys(fo, where, keys, err);
    if (s) return s;
    if ((s = get_str(fo, "name", where, f->name, sizeof f->name, 1, err))) return s;
    memcpy(f->column, f->name, sizeof f->column); /* same size; name is NUL-terminated */
    if ((s = get_str(fo, "column", where, f->column, sizeof f->column, 0, err))) return s;
    char kind[16] = "sparse", side[16] = "";
    if ((s = get_str(fo, "kind", where, kind, sizeof kind, 0, err))) return s;
    if ((s = get_str(fo, "side", where, side, sizeof side, 1, err))) return s;
    if (!strcmp(kind, "sparse")) f->kind = RK_FEAT_SPARSE;
    else if (!strcmp(kind, "dense")) f->kind = RK_FEAT_DENSE;
    else return rk_fail(err, RK_EINVAL, "%s.kind: '%s' is not sparse or dense", where, kind);
    if (!strcmp(side, "user")) f->side = RK_SIDE_USER;
    else if (!strcmp(side, "item")) f->side = RK_SIDE_ITEM;
    else return rk_fail(err, RK_EINVAL, "%s.side: '%s' is not user or item", where, side);
    {
        /* keys of the other kind are errors, not ignored */
        static const char *const sparse_only[] = {"table_size", "dim", "pooling", "max_values", "param", "ngram", "sid", NULL};
        static const char *const dense_only[] = {"log1p", "mean", "std", NULL};
        const char *const *other = f->kind == RK_FEAT_SPARSE ? dense_only : sparse_only;
        for (int k = 0; other[k]; k++)
            if (json_object_get(fo, other[k]))
                return rk_fail(err, RK_EINVAL, "%s.%s: feature '%s' is %s; \"%s\" applies to %s features only", where,
                               other[k], f->name, f->kind == RK_FEAT_SPARSE ? "sparse" : "dense", other[k],
                               f->kind == RK_FEAT_SPARSE ? "dense" : "sparse");
    }
    if (f->kind == RK_FEAT_SPARSE) {
        f->table_size = 0;
        f->dim = 16;
        GET_INT(fo, "table_size", where, 1, RK_MAX_TABLE_ROWS, f->table_size);
        if (!f->table_size) return rk_fail(err, RK_EINVAL, "%s.table_size: missing", where);
        GET_INT(fo, "dim", where, 1, 1024, f->dim);
        char pool[16] = "sum";
        if ((s = get_str(fo, "pooling", where, pool, sizeof pool, 0, err))) return s;
        if (!strcmp(pool, "sum")) f->pool = RK_BAG_SUM;
        else if (!strcmp(pool, "mean")) f->pool = RK_BAG_MEAN;
        else return rk_fail(err, RK_EINVAL, "%s.pooling: '%s' is not sum or mean", where, pool);
        GET_INT(fo, "max_values", where, 0, 1e6, f->max_values);
        char param[32] = "hash";
        if ((s = get_str(fo, "param", where, param, sizeof param, 0, err))) return s;
        if ((s = rk_sid_param_parse(param, &f->param, err))) return rk_err_prefix(err, "%s.param", where);
        f->ngram = 0;
        GET_INT(fo, "ngram", where, 0, RK_SID_MAX_LEVELS, f->ngram);
        f->sid[0] = 0;
        if ((s = get_str(fo, "sid", where, f->sid, sizeof f->sid, 0, err))) return s;
        if (f->param == RK_PARAM_HASH && json_object_get(fo, "sid"))
            return rk_fail(err, RK_EINVAL, "%s.sid: feature '%s' has param hash (the default), which uses no item records",
                           where, f->name);
        if (f->param != RK_PARAM_PREFIX_NGRAM && json_object_get(fo, "ngram"))
            return rk_fail(err, RK_EINVAL, "%s.ngram: feature '%s' has param %s; \"ngram\" applies to prefix_ngram only",
                           where, f->name, rk_sid_param_name(f->param));
        f->items = NULL;
    } else {
        json_t *l = json_object_get(fo, "log1p");
        if (l && !json_is_boolean(l) && !(json_is_string(l) && !strcmp(json_string_value(l), "clamp")))
            return rk_fail(err, RK_EINVAL, "%s.log1p: expected true, false or \"clamp\" (log1p(max(x, 0)))", where);
        f->log1p = !l ? RK_LOG1P_OFF : json_is_string(l) ? RK_LOG1P_CLAMP : json_is_true(l) ? RK_LOG1P_ON : RK_LOG1P_OFF;
        f->mean = 0;
        f->std = 1;
        GET_FLT(fo, "mean", where, -1e30, 1e30, f->mean);
        GET_FLT(fo, "std", where, 1e-30, 1e30, f->std);
    }
    return RK_OK;
}

static rk_status parse_train(json_t *tr, rk_train_cfg *t, rk_err *err) {
    rk_status s;
    const char *w = "train";
    GET_INT(tr, "seed", w, 0, 9007199254740992.0, t->seed);
    GET_INT(tr, "batch_size", w, 1, 65536, t->batch_size);
    GET_INT(tr, "max_epochs", w, 1, 1000, t->max_epochs);
    GET_INT(tr, "patience", w, 1, 1000, t->patience);
    GET_FLT(tr, "lr_dense", w, 0, 10, t->lr_dense);
    GET_FLT(tr, "lr_embed", w, 0, 10, t->lr_embed);
    GET_FLT(tr, "adam_b1", w, 0, 0.999999, t->adam_b1);
    GET_FLT(tr, "adam_b2", w, 0, 0.999999, t->adam_b2);
    GET_FLT(tr, "adam_eps", w, 0, 1, t->adam_eps);
    GET_FLT(tr, "adagrad_eps", w, 0, 1, t->adagrad_eps);
    GET_FLT(tr, "init_std_embed", w, 0, 10, t->init_std_embed);
    GET_INT(tr, "threads", w, 1, 64, t->threads);
    GET_FLT(tr, "l2_embed", w, 0, 100, t->l2_embed);
    GET_FLT(tr, "l2_dense", w, 0, 100, t->l2_dense);
    GET_FLT(tr, "dropout", w, 0, 0.95, t->dropout);
    json_t *z = json_object_get(tr, "zero_unseen_rows");
    if (z && !json_is_boolean(z)) return rk_fail(err, RK_EINVAL, "train.zero_unseen_rows: expected true or false");
    if (z) t->zero_unseen_rows = json_is_true(z);
    json_t *sh = json_object_get(tr, "shuffle");
    if (sh && !json_is_boolean(sh)) return rk_fail(err, RK_EINVAL, "train.shuffle: expected true or false");
    if (sh) t->shuffle = json_is_true(sh);
    return RK_OK;
}

static rk_status parse_tower(json_t *tw, const char *where, rk_tower_cfg *t, rk_err *err) {
    static const char *const tk[] = {"type", "cross_layers", "hidden", NULL};
    rk_status s;
    if (!json_is_object(tw)) return rk_fail(err, RK_EINVAL, "%s: expected an object", where);
    if ((s = check_keys(tw, where, tk, err))) return s;
    char type[16] = "dcnv2";
    if ((s = get_str(tw, "type", where, type, sizeof type, 0, err))) return s;
    if (!strcmp(type, "dcnv2")) t->type = RK_TOWER_DCNV2;
    else if (!strcmp(type, "dnn")) t->type = RK_TOWER_DNN;
    else if (!strcmp(type, "deepfm")) t->type = RK_TOWER_DEEPFM;
    else return rk_fail(err, RK_EINVAL, "%s.type: '%s' is not dnn, dcnv2 or deepfm", where, type);
    double x = t->type == RK_TOWER_DCNV2 ? (t->n_cross ? t->n_cross : 2) : 0;
    if ((s = get_num(tw, "cross_layers", where, 0, RK_MAX_CROSS_LAYERS, &x, err))) return s;
    if (x != floor(x)) return rk_fail(err, RK_EINVAL, "%s.cross_layers: expected an integer", where);
    if (t->type != RK_TOWER_DCNV2 && x != 0)
        return rk_fail(err, RK_EINVAL, "%s.cross_layers: only a dcnv2 tower has cross layers", where);
    t->n_cross = (int)x;
    json_t *h = json_object_get(tw, "hidden");
    if (h) {
        if (!json_is_array(h)) return rk_fail(err, RK_EINVAL, "%s.hidden: expected an array of widths", where);
        if (json_array_size(h) > RK_MAX_HIDDEN_LAYERS)
            return rk_fail(err, RK_EINVAL, "%s.hidden: %zu layers, at most %d", where, json_array_size(h), RK_MAX_HIDDEN_LAYERS);
        int *hw = rk_realloc(t->hidden, (json_array_size(h) ? json_array_size(h) : 1) * sizeof(int));
        if (!hw) return rk_fail(err, RK_ENOMEM, "%s.hidden: out of memory", where);
        t->hidden = hw;
        t->n_hidden = (int)json_array_size(h);
        for (int i = 0; i < t->n_hidden; i++) {
            json_t *w = json_array_get(h, (size_t)i);
            if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 8192)
                return rk_fail(err, RK_EINVAL, "%s.hidden[%d]: expected an integer in 1..8192", where, i);
            t->hidden[i] = (int)json_integer_value(w);
        }
    }
    return RK_OK;
}

static rk_status parse_ensemble(json_t *en, rk_model_cfg *c, rk_err *err) {
    static const char *const k[] = {"fusion", "tau", "learn_tau", "lambda", "w_fused", "w_member", "members", NULL};
    rk_status s;
    const char *w = "ensemble";
    if (!json_is_object(en)) return rk_fail(err, RK_EINVAL, "ensemble: expected an object");
    if ((s = check_keys(en, w, k, err))) return s;
    char fusion[16] = "confidence";
    if ((s = get_str(en, "fusion", w, fusion, sizeof fusion, 0, err))) return s;
    if (!strcmp(fusion, "confidence")) c->fusion.type = RK_FUSION_CONFIDENCE;
    else if (!strcmp(fusion, "mean")) c->fusion.type = RK_FUSION_MEAN;
    else return rk_fail(err, RK_EINVAL, "ensemble.fusion: '%s' is not confidence or mean", fusion);
    GET_FLT(en, "tau", w, 1e-3, 1e6, c->fusion.tau);
    GET_FLT(en, "lambda", w, 0, 100, c->fusion.lambda);
    GET_FLT(en, "w_fused", w, 0, 100, c->fusion.w_fused);
    GET_FLT(en, "w_member", w, 0, 100, c->fusion.w_member);
    json_t *lt = json_object_get(en, "learn_tau");
    if (lt && !json_is_boolean(lt)) return rk_fail(err, RK_EINVAL, "ensemble.learn_tau: expected true or false");
    c->fusion.learn_tau = lt && json_is_true(lt);
    json_t *ms = json_object_get(en, "members");
    if (!json_is_array(ms) || json_array_size(ms) < 1 || json_array_size(ms) > INT_MAX / 2)
        return rk_fail(err, RK_EINVAL, "ensemble.members: expected a non-empty array of members");
    if (json_array_size(ms) > RK_MAX_MEMBERS)
        return rk_fail(err, RK_EINVAL, "ensemble.members: %zu members, at most %d", json_array_size(ms), RK_MAX_MEMBERS);
    int n = (int)json_array_size(ms);
    if (!(c->members = rk_calloc((size_t)n, sizeof *c->members))) return rk_fail(err, RK_ENOMEM, "ensemble: out of memory");
    for (int i = 0; i < n; i++) {
        static const char *const mk[] = {"name", "tower", "dim", NULL};
        char where[48];
        snprintf(where, sizeof where, "ensemble.members[%d]", i);
        json_t *mo = json_array_get(ms, (size_t)i);
        rk_member_cfg *mc = &c->members[i];
        c->n_members = i + 1; /* rk_model_cfg_free frees members [0, n_members) */
        if (!json_is_object(mo)) return rk_fail(err, RK_EINVAL, "%s: expected an object", where);
        if ((s = check_keys(mo, where, mk, err))) return s;
        if ((s = get_str(mo, "name", where, mc->name, sizeof mc->name, 1, err))) return s;
        for (const char *p = mc->name; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
                return rk_fail(err, RK_EINVAL, "%s.name: '%s' may hold only a-z, 0-9, '_' and '-'", where, mc->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(c->members[j].name, mc->name))
                return rk_fail(err, RK_EINVAL, "%s.name: '%s' repeats members[%d]", where, mc->name, j);
        mc->tower = c->tower;
        if (!(mc->tower.hidden = dup_ints(c->tower.hidden, c->tower.n_hidden)))
            return rk_fail(err, RK_ENOMEM, "%s: out of memory", where);
        json_t *tw = json_object_get(mo, "tower");
        char tw_where[64];
        snprintf(tw_where, sizeof tw_where, "%s.tower", where);
        if (!tw) return rk_fail(err, RK_EINVAL, "%s: missing", tw_where);
        if ((s = parse_tower(tw, tw_where, &mc->tower, err))) return s;
        GET_INT(mo, "dim", where, 0, 1024, mc->dim);
    }
    return RK_OK;
}

rk_status rk_member_cfg_derive(const rk_model_cfg *ens, int i, rk_model_cfg *out, rk_err *err) {
    RK_ASSERT(i >= 0 && i < ens->n_members);
    rk_model_cfg view = *ens;
    view.n_members = 0; /* the member has no members and the ensemble's tower is not its own */
    view.tower = ens->members[i].tower;
    rk_status s = rk_model_cfg_copy(out, &view, err);
    if (s) return s;
    snprintf(out->name, sizeof out->name, "%s", ens->members[i].name);
    if (ens->members[i].dim > 0)
        for (int f = 0; f < out->n_features; f++)
            if (out->features[f].kind == RK_FEAT_SPARSE) out->features[f].dim = ens->members[i].dim;
    out->train.seed = ens->train.seed * 1000003ULL + (uint64_t)i + 1;
    return RK_OK;
}

/* The tower's dense weights (cross layers D x D + D each, the MLP's
 * layers) against RK_MAX_DENSE_WEIGHTS, naming the field that sizes them:
 * a config that asks for more is refused here, not by an allocation that
 * fails (or succeeds and swaps) at training. D = the embedding dims of the
 * sparse features + one per dense feature. */
static rk_status check_tower_size(const rk_model_cfg *c, const char *where, rk_err *err) {
    double d = 0;
    for (int f = 0; f < c->n_features; f++) d += c->features[f].kind == RK_FEAT_SPARSE ? c->features[f].dim : 1;
    double cross = c->tower.n_cross * (d * d + d), mlp = 0, prev = d, most = -1;
    int widest = 0; /* the layer with the most weights (the first of equals) */
    for (int i = 0; i < c->tower.n_hidden; i++) {
        double w = prev * c->tower.hidden[i] + c->tower.hidden[i];
        if (w > most) most = w, widest = i;
        mlp += w;
        prev = c->tower.hidden[i];
    }
    if (cross + mlp <= RK_MAX_DENSE_WEIGHTS) return RK_OK;
    if (cross >= mlp)
        return rk_fail(err, RK_EINVAL,
                       "%s.cross_layers: %d cross layers over %.0f inputs are %.3g weights; a tower holds at most %.3g "
                       "(README, \"Limits that remain\")", where, c->tower.n_cross, d, cross, (double)RK_MAX_DENSE_WEIGHTS);
    return rk_fail(err, RK_EINVAL, "%s.hidden[%d]: the MLP's %.3g weights (%.0f inputs) exceed a tower's %.3g "
                   "(README, \"Limits that remain\")", where, widest, mlp, d, (double)RK_MAX_DENSE_WEIGHTS);
}

static rk_status validate_tower(const rk_model_cfg *c, const char *where, rk_err *err) {
    rk_status s = check_tower_size(c, where, err);
    if (s || c->tower.type != RK_TOWER_DEEPFM) return s;
    int k = -1;
    for (int f = 0; f < c->n_features; f++) {
        if (c->features[f].kind != RK_FEAT_SPARSE) continue;
        if (k < 0) k = c->features[f].dim;
        else if (c->features[f].dim != k)
            return rk_fail(err, RK_EINVAL, "%s: a deepfm tower needs every sparse feature to have one dim (%d vs %d for '%s')",
                           where, k, c->features[f].dim, c->features[f].name);
    }
    if (k < 0) return rk_fail(err, RK_EINVAL, "%s: a deepfm tower needs sparse features", where);
    return RK_OK;
}

rk_status rk_model_cfg_parse(const char *text, rk_model_cfg *c, rk_err *err) {
    rk_status s = rk_model_cfg_default(c, err);
    if (s) return s;
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    if (!root) {
        rk_model_cfg_free(c); /* nothing is left to free after a failure */
        return rk_fail(err, RK_EFORMAT, "not valid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    }
    static const char *const top[] = {"name", "label_column", "features", "tower", "train", "aliases", "format_version",
                                      "version", "metrics", "training", "tables", "dense", "ensemble", "sid", NULL};
    if (!json_is_object(root)) {
        s = rk_fail(err, RK_EINVAL, "config: expected a JSON object");
        goto done;
    }
    if ((s = check_keys(root, "config", top, err))) goto done;
    json_t *fv = json_object_get(root, "format_version");
    if (fv) {
        if (!json_is_integer(fv)) {
            s = rk_fail(err, RK_EINVAL, "format_version: expected an integer");
            goto done;
        }
        if (json_integer_value(fv) != RK_FORMAT_VERSION) {
            s = rk_fail(err, RK_EVERSION, "format_version %lld is not supported (this rankd reads %d)",
                        (long long)json_integer_value(fv), RK_FORMAT_VERSION);
            goto done;
        }
    }
    if ((s = get_str(root, "name", "config", c->name, sizeof c->name, 0, err))) goto done;
    if ((s = get_str(root, "version", "config", c->version, sizeof c->version, 0, err))) goto done;
    if ((s = get_str(root, "label_column", "config", c->label_column, sizeof c->label_column, 0, err))) goto done;
    json_t *feats = json_object_get(root, "features");
    if (!json_is_array(feats) || json_array_size(feats) == 0) {
        s = rk_fail(err, RK_EINVAL, "features: expected a non-empty array");
        goto done;
    }
    if (json_array_size(feats) > INT_MAX / 2) {
        s = rk_fail(err, RK_EINVAL, "features: %zu features, more than this build can index", json_array_size(feats));
        goto done;
    }
    if (!(c->features = rk_calloc(json_array_size(feats), sizeof *c->features))) {
        s = rk_fail(err, RK_ENOMEM, "features: out of memory for %zu features", json_array_size(feats));
        goto done;
    }
    c->n_features = (int)json_array_size(feats);
    for (int i = 0; i < c->n_features; i++)
        if ((s = parse_feature(json_array_get(feats, (size_t)i), i, &c->features[i], err))) goto done;
    if ((s = index_names(c, err))) goto done;
    for (int i = 0; i < c->n_features; i++)
        if (!strcmp(c->features[i].column, c->label_column)) {
            s = rk_fail(err, RK_EINVAL, "features[%d].column: '%s' is the label column (the model would see its own label)", i,
                        c->label_column);
            goto done;
        }
    json_t *tw = json_object_get(root, "tower");
    if (tw && (s = parse_tower(tw, "tower", &c->tower, err))) goto done;
    json_t *en = json_object_get(root, "ensemble");
    if (en && (s = parse_ensemble(en, c, err))) goto done;
    json_t *tr = json_object_get(root, "train");
    if (tr) {
        static const char *const k[] = {"seed", "batch_size", "max_epochs", "patience", "lr_dense", "lr_embed",
                                        "adam_b1", "adam_b2", "adam_eps", "adagrad_eps", "init_std_embed", "threads",
                                        "zero_unseen_rows", "shuffle", "l2_embed", "l2_dense", "dropout", NULL};
        if (!json_is_object(tr)) {
            s = rk_fail(err, RK_EINVAL, "train: expected an object");
            goto done;
        }
        if ((s = check_keys(tr, "train", k, err))) goto done;
        if ((s = parse_train(tr, &c->train, err))) goto done;
    }
    json_t *al = json_object_get(root, "aliases");
    if (al) {
        static const char *const k[] = {"user_id", "recent_item_ids", "ad_id", NULL};
        if (!json_is_object(al)) {
            s = rk_fail(err, RK_EINVAL, "aliases: expected an object");
            goto done;
        }
        if ((s = check_keys(al, "aliases", k, err))) goto done;
        if ((s = get_str(al, "user_id", "aliases", c->alias_user_id, RK_NAME_MAX, 0, err))) goto done;
        if ((s = get_str(al, "recent_item_ids", "aliases", c->alias_recent_items, RK_NAME_MAX, 0, err))) goto done;
        if ((s = get_str(al, "ad_id", "aliases", c->alias_ad_id, RK_NAME_MAX, 0, err))) goto done;
        const char *names[3] = {c->alias_user_id, c->alias_recent_items, c->alias_ad_id};
        const char *keys3[3] = {"user_id", "recent_item_ids", "ad_id"};
        for (int i = 0; i < 3; i++) {
            int fi = names[i][0] ? rk_model_cfg_find(c, names[i]) : 0;
            if (fi < 0 || (names[i][0] && c->features[fi].kind != RK_FEAT_SPARSE)) {
                s = rk_fail(err, RK_EINVAL, "aliases.%s: '%s' is not a sparse feature", keys3[i], names[i]);
                goto done;
            }
            if (names[i][0] && (i < 2) != (c->features[fi].side == RK_SIDE_USER)) {
                s = rk_fail(err, RK_EINVAL, "aliases.%s: '%s' is on the wrong side", keys3[i], names[i]);
                goto done;
            }
        }
    }
    if (c->n_members == 0) {
        s = validate_tower(c, "tower", err);
    } else {
        for (int i = 0; i < c->n_members && s == RK_OK; i++) {
            rk_model_cfg mc;
            char where[48];
            if ((s = rk_member_cfg_derive(c, i, &mc, err))) break;
            snprintf(where, sizeof where, "ensemble.members[%d].tower", i);
            s = validate_tower(&mc, where, err);
            rk_model_cfg_free(&mc);
        }
    }
done:
    json_decref(root);
    if (s) rk_model_cfg_free(c); /* nothing is left to free after a failure */
    return s;
}

const char *rk_tower_name(rk_tower_type t) {
    return t == RK_TOWER_DCNV2 ? "dcnv2" : t == RK_TOWER_DEEPFM ? "deepfm" : "dnn";
}

static json_t *tower_json(const rk_tower_cfg *t) {
    json_t *tw = json_object(), *h = json_array();
    json_object_set_new(tw, "type", json_string(rk_tower_name(t->type)));
    json_object_set_new(tw, "cross_layers", json_integer(t->n_cross));
    for (int i = 0; i < t->n_hidden; i++) json_array_append_new(h, json_integer(t->hidden[i]));
    json_object_set_new(tw, "hidden", h);
    return tw;
}

json_t *rk_cfg_to_json(const rk_model_cfg *c) {
    json_t *root = json_object();
    json_object_set_new(root, "format_version", json_integer(RK_FORMAT_VERSION));
    json_object_set_new(root, "name", json_string(c->name));
    if (c->version[0]) json_object_set_new(root, "version", json_string(c->version));
    json_object_set_new(root, "label_column", json_string(c->label_column));
    json_t *feats = json_array();
    for (int i = 0; i < c->n_features; i++) {
        const rk_feature *f = &c->features[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(f->name));
        json_object_set_new(o, "column", json_string(f->column));
        json_object_set_new(o, "kind", json_string(f->kind == RK_FEAT_SPARSE ? "sparse" : "dense"));
        json_object_set_new(o, "side", json_string(f->side == RK_SIDE_USER ? "user" : "item"));
        if (f->kind == RK_FEAT_SPARSE) {
            json_object_set_new(o, "table_size", json_integer((json_int_t)f->table_size));
            json_object_set_new(o, "dim", json_integer(f->dim));
            json_object_set_new(o, "pooling", json_string(f->pool == RK_BAG_MEAN ? "mean" : "sum"));
            json_object_set_new(o, "max_values", json_integer(f->max_values));
            if (f->param != RK_PARAM_HASH) {
                json_object_set_new(o, "param", json_string(rk_sid_param_name(f->param)));
                if (f->ngram) json_object_set_new(o, "ngram", json_integer(f->ngram));
                if (f->sid[0]) json_object_set_new(o, "sid", json_string(f->sid));
            }
        } else {
            json_object_set_new(o, "log1p", f->log1p == RK_LOG1P_CLAMP ? json_string("clamp") : json_boolean(f->log1p));
            json_object_set_new(o, "mean", json_real(f->mean));
            json_object_set_new(o, "std", json_real(f->std));
        }
        json_array_append_new(feats, o);
    }
    json_object_set_new(root, "features", feats);
    json_object_set_new(root, "tower", tower_json(&c->tower));
    if (c->n_members) {
        json_t *en = json_object(), *ms = json_array();
        json_object_set_new(en, "fusion", json_string(c->fusion.type == RK_FUSION_MEAN ? "mean" : "confidence"));
        json_object_set_new(en, "tau", json_real(c->fusion.tau));
        json_object_set_new(en, "learn_tau", json_boolean(c->fusion.learn_tau));
        json_object_set_new(en, "lambda", json_real(c->fusion.lambda));
        json_object_set_new(en, "w_fused", json_real(c->fusion.w_fused));
        json_object_set_new(en, "w_member", json_real(c->fusion.w_member));
        for (int i = 0; i < c->n_members; i++) {
            json_t *mo = json_object();
            json_object_set_new(mo, "name", json_string(c->members[i].name));
            json_object_set_new(mo, "tower", tower_json(&c->members[i].tower));
            json_object_set_new(mo, "dim", json_integer(c->members[i].dim));
            json_array_append_new(ms, mo);
        }
        json_object_set_new(en, "members", ms);
        json_object_set_new(root, "ensemble", en);
    }
    const rk_train_cfg *t = &c->train;
    json_t *tr = json_object();
    json_object_set_new(tr, "seed", json_integer((json_int_t)t->seed));
    json_object_set_new(tr, "batch_size", json_integer(t->batch_size));
    json_object_set_new(tr, "max_epochs", json_integer(t->max_epochs));
    json_object_set_new(tr, "patience", json_integer(t->patience));
    json_object_set_new(tr, "lr_dense", json_real(t->lr_dense));
    json_object_set_new(tr, "lr_embed", json_real(t->lr_embed));
    json_object_set_new(tr, "adam_b1", json_real(t->adam_b1));
    json_object_set_new(tr, "adam_b2", json_real(t->adam_b2));
    json_object_set_new(tr, "adam_eps", json_real(t->adam_eps));
    json_object_set_new(tr, "adagrad_eps", json_real(t->adagrad_eps));
    json_object_set_new(tr, "init_std_embed", json_real(t->init_std_embed));
    json_object_set_new(tr, "threads", json_integer(t->threads));
    json_object_set_new(tr, "zero_unseen_rows", json_boolean(t->zero_unseen_rows));
    if (!t->shuffle) json_object_set_new(tr, "shuffle", json_false());
    if (t->l2_embed > 0) json_object_set_new(tr, "l2_embed", json_real(t->l2_embed));
    if (t->l2_dense > 0) json_object_set_new(tr, "l2_dense", json_real(t->l2_dense));
    if (t->dropout > 0) json_object_set_new(tr, "dropout", json_real(t->dropout));
    json_object_set_new(root, "train", tr);
    if (c->alias_user_id[0] || c->alias_recent_items[0] || c->alias_ad_id[0]) {
        json_t *al = json_object();
        if (c->alias_user_id[0]) json_object_set_new(al, "user_id", json_string(c->alias_user_id));
        if (c->alias_recent_items[0]) json_object_set_new(al, "recent_item_ids", json_string(c->alias_recent_items));
        if (c->alias_ad_id[0]) json_object_set_new(al, "ad_id", json_string(c->alias_ad_id));
        json_object_set_new(root, "aliases", al);
    }
    return root;
}

rk_status rk_dense_log1p(const rk_feature *f, double raw, double *out) {
    if (f->log1p == RK_LOG1P_OFF) *out = raw;
    else if (f->log1p == RK_LOG1P_CLAMP) *out = log1p(raw > 0 ? raw : 0);
    else if (raw <= -1) return RK_EINVAL;
    else *out = log1p(raw);
    return RK_OK;
}

const char *rk_dense_why(const rk_feature *f, double raw) {
    if (!isfinite(raw) || fabs(raw) > RK_DENSE_MAX_ABS) return "expected a finite number within +-1e+09";
    if (f->log1p == RK_LOG1P_ON && raw <= -1)
        return "log1p is undefined at or below -1 (a negative count? set \"log1p\": \"clamp\" in model.json to "
               "clamp at 0 first)";
    return "beyond +-1e+09 after standardization";
}

rk_status rk_dense_value(const rk_feature *f, double raw, float *out) {
    if (!isfinite(raw) || fabs(raw) > RK_DENSE_MAX_ABS) return RK_ENUMERIC;
    double x;
    if (rk_dense_log1p(f, raw, &x)) return RK_ENUMERIC;
    x = (x - f->mean) / f->std;
    if (!isfinite(x) || fabs(x) > RK_DENSE_MAX_ABS) return RK_ENUMERIC;
    *out = (float)x;
    return RK_OK;
}
