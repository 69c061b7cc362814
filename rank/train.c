/*
 * rank/train.c — mini-batch training with early stopping.
 *
 * Loss: binary cross-entropy on the logit, mean over the batch.
 * Dense parameters: Adam (Kingma & Ba 2015). Embedding rows: Adagrad
 * (Duchi et al. 2011) over the rows a batch touched only — sparse updates,
 * as torch.optim.Adagrad does with sparse embedding gradients.
 * Each epoch shuffles the training rows with the config's seed, then the
 * validation AUC decides the best epoch; training stops after `patience`
 * epochs without improvement and the best epoch's parameters are kept.
 * Same seed + same thread count = same model, bit for bit.
 */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Copy rows idx[0..n) of the dataset into the batch (CSR rebuilt). */
void rk_batch_gather(const rk_batch *src, const rk_model_cfg *c, const uint32_t *idx, int n, rk_batch *dst) {
    dst->n_rows = n;
    for (int f = 0; f < c->n_features; f++) {
        if (c->features[f].kind != RK_FEAT_SPARSE) continue;
        uint32_t k = 0;
        dst->offsets[f][0] = 0;
        for (int i = 0; i < n; i++) {
            uint32_t a = src->offsets[f][idx[i]], b = src->offsets[f][idx[i] + 1];
            memcpy(dst->rows[f] + k, src->rows[f] + a, (size_t)(b - a) * sizeof(uint64_t));
            k += b - a;
            dst->offsets[f][i + 1] = k;
        }
    }
    for (int i = 0; i < n; i++) {
        memcpy(dst->dense + (size_t)i * c->n_features, src->dense + (size_t)idx[i] * c->n_features,
               (size_t)c->n_features * sizeof(float));
        dst->labels[i] = src->labels[idx[i]];
    }
}

static rk_status evaluate(const rk_model *m, const rk_dataset *d, rk_metrics *out, rk_err *err) {
    float *p = rk_malloc((size_t)d->b.n_rows * sizeof(float));
    if (!p) return rk_fail(err, RK_ENOMEM, "evaluate: out of memory");
    rk_status s = rk_model_predict(m, &d->b, p, err);
    if (s == RK_OK) s = rk_metrics_compute(p, d->b.labels, (size_t)d->b.n_rows, out, err);
    rk_free(p);
    return s;
}

typedef struct {
    float *params;
    float **tables; /* [n_features] */
    int n;
} snapshot;

static void snap_free(snapshot *s) {
    rk_free(s->params);
    for (int f = 0; s->tables && f < s->n; f++) rk_free(s->tables[f]);
    rk_free(s->tables);
}

static size_t table_floats(const rk_feature *f) { return (size_t)f->table_size * (size_t)f->dim; }

static rk_status snap_take(snapshot *s, const rk_model *m, int to_model, rk_err *err) {
    if (!to_model && !s->params) {
        s->params = rk_malloc((m->n_floats ? m->n_floats : 1) * sizeof(float));
        s->tables = rk_calloc((size_t)m->cfg.n_features + 1, sizeof *s->tables);
        s->n = m->cfg.n_features;
        if (!s->params || !s->tables) return rk_fail(err, RK_ENOMEM, "train: out of memory for a snapshot");
        for (int f = 0; f < m->cfg.n_features; f++) {
            if (!m->tables[f]) continue;
            s->tables[f] = rk_malloc(table_floats(&m->cfg.features[f]) * sizeof(float));
            if (!s->tables[f]) return rk_fail(err, RK_ENOMEM, "train: out of memory for a snapshot");
        }
    }
    if (to_model) memcpy(m->params, s->params, m->n_floats * sizeof(float));
    else memcpy(s->params, m->params, m->n_floats * sizeof(float));
    for (int f = 0; f < m->cfg.n_features; f++) {
        if (!m->tables[f]) continue;
        size_t n = table_floats(&m->cfg.features[f]) * sizeof(float);
        if (to_model) memcpy(m->tables[f], s->tables[f], n);
        else memcpy(s->tables[f], m->tables[f], n);
    }
    return RK_OK;
}

/* Zero every table row that no training example hashes to: such a row was
 * never trained and holds its random init, which would give an id unseen in
 * training a random embedding instead of the table's default (zero). */
static void zero_unseen(rk_model *m, const rk_batch *train) {
    for (int f = 0; f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE || !m->tables[f]) continue;
        uint8_t *seen = rk_calloc((size_t)ft->table_size, 1);
        if (!seen) continue; /* keep the init rather than fail a finished training */
        for (uint32_t k = 0; k < train->offsets[f][train->n_rows]; k++) seen[train->rows[f][k]] = 1;
        for (uint64_t r = 0; r < ft->table_size; r++)
            if (!seen[r]) memset(m->tables[f] + r * (size_t)ft->dim, 0, (size_t)ft->dim * sizeof(float));
        rk_free(seen);
    }
}

/* Per-tower training state: one for a single model, one per ensemble member. */
typedef struct {
    rk_model *m;
    rk_work w;
    float *g, *am, *av;                  /* dense gradient and Adam moments */
    float **dtab;                        /* [n_features] embedding gradients (touched rows only non-zero) */
    float **gs;                          /* [n_features] Adagrad accumulators */
    int n;                               /* features */
    snapshot best;
} tower_state;

static void tower_free(tower_state *t) {
    rk_work_free(&t->w);
    rk_free(t->g);
    rk_free(t->am);
    rk_free(t->av);
    for (int f = 0; t->dtab && t->gs && f < t->n; f++) {
        rk_free(t->dtab[f]);
        rk_free(t->gs[f]);
    }
    rk_free(t->dtab);
    rk_free(t->gs);
    snap_free(&t->best);
}

static rk_status tower_init(tower_state *t, rk_model *m, int BS, rk_err *err) {
    t->m = m;
    rk_status s = rk_work_init(&t->w, m, BS, 1, err);
    if (s) return s;
    t->w.dropout = m->cfg.train.dropout;
    rk_rng_seed(&t->w.drop_rng, m->cfg.train.seed ^ 0xd809ULL);
    size_t n = m->n_floats ? m->n_floats : 1;
    t->g = rk_calloc(n, sizeof(float));
    t->am = rk_calloc(n, sizeof(float));
    t->av = rk_calloc(n, sizeof(float));
    t->n = m->cfg.n_features;
    t->dtab = rk_calloc((size_t)t->n + 1, sizeof *t->dtab);
    t->gs = rk_calloc((size_t)t->n + 1, sizeof *t->gs);
    if (!t->g || !t->am || !t->av || !t->dtab || !t->gs) return rk_fail(err, RK_ENOMEM, "train: out of memory");
    for (int f = 0; f < m->cfg.n_features; f++) {
        if (m->cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        t->dtab[f] = rk_calloc(table_floats(&m->cfg.features[f]), sizeof(float));
        t->gs[f] = rk_calloc(table_floats(&m->cfg.features[f]), sizeof(float));
        if (!t->dtab[f] || !t->gs[f])
            return rk_fail(err, RK_ENOMEM, "train: out of memory for table '%s' state", m->cfg.features[f].name);
    }
    return RK_OK;
}

/* Backward from t->w.dlogit, then one optimizer step on dense (Adam) and on
 * the touched embedding rows (Adagrad). uniq: scratch of the batch's values. */
static void tower_step(tower_state *t, const rk_batch *bt, int n, long step, uint64_t *uniq) {
    rk_model *m = t->m;
    const rk_train_cfg *tc = &m->cfg.train;
    memset(t->g, 0, m->n_floats * sizeof(float));
    rk_model_backward(m, &t->w, n, t->g);
    if (tc->l2_dense > 0) /* d/dW of l2_dense/2 ||W||^2, weight matrices only */
        for (int p = 0; p < m->n_params; p++)
            if (m->pd[p].ndim == 2) cblas_saxpy((int)m->pd[p].n, tc->l2_dense, m->params + m->pd[p].off, 1, t->g + m->pd[p].off, 1);
    rk_adam_step(m->params, t->g, t->am, t->av, m->n_floats, tc->lr_dense, tc->adam_b1, tc->adam_b2, tc->adam_eps, step);
    for (int f = 0; f < m->cfg.n_features; f++) {
        const rk_feature *ft = &m->cfg.features[f];
        if (ft->kind != RK_FEAT_SPARSE) continue;
        size_t nv = bt->offsets[f][n];
        if (!nv) continue;
        rk_embedding_bag_backward(t->dtab[f], t->w.dx0 + m->col[f], (size_t)m->D, bt->offsets[f], bt->rows[f], n, ft->dim,
                                  ft->pool);
        memcpy(uniq, bt->rows[f], nv * sizeof(uint64_t));
        qsort(uniq, nv, sizeof(uint64_t), cmp_u64);
        size_t nu = 0;
        for (size_t k = 0; k < nv; k++)
            if (k == 0 || uniq[k] != uniq[nu - 1]) uniq[nu++] = uniq[k];
        if (tc->l2_embed > 0) /* the rows this batch touched only */
            for (size_t k = 0; k < nu; k++)
                cblas_saxpy(ft->dim, tc->l2_embed, m->tables[f] + uniq[k] * (size_t)ft->dim, 1, t->dtab[f] + uniq[k] * (size_t)ft->dim, 1);
        rk_adagrad_rows(m->tables[f], t->dtab[f], t->gs[f], uniq, nu, ft->dim, tc->lr_embed, tc->adagrad_eps);
        for (size_t k = 0; k < nu; k++) memset(t->dtab[f] + uniq[k] * (size_t)ft->dim, 0, (size_t)ft->dim * sizeof(float));
    }
}

rk_status rk_train(const rk_model_cfg *cfg_in, const rk_train_io *io, rk_model **out, rk_train_report *rep, rk_err *err) {
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    rk_model_cfg cfg;
    rk_status s = rk_model_cfg_copy(&cfg, cfg_in, err);
    if (s) return s;
    const int NF = cfg.n_features, NTS = cfg.n_members ? cfg.n_members : 1;
    rk_sid_items **sid_items = rk_calloc((size_t)NF + 1, sizeof *sid_items);
    rk_sid_codebook *sid_cb = rk_calloc((size_t)NF + 1, sizeof *sid_cb);
    tower_state *ts = rk_calloc((size_t)NTS, sizeof *ts);
    float *z = rk_malloc((size_t)NTS * sizeof(float));
    rk_dataset tr = {0}, va = {0}, te = {0};
    rk_model *m = NULL;
    uint64_t *uniq = NULL;
    uint32_t *perm = NULL;
    double *dz = NULL;
    rk_batch bt = {0};
    float best_log_tau = 0;
    if (!sid_items || !sid_cb || !ts || !z) {
        s = rk_fail(err, RK_ENOMEM, "train: out of memory for %d features", NF);
        goto done;
    }
    if ((s = rk_cfg_sid_attach(&cfg, sid_items, sid_cb, err))) goto done;
    if ((s = rk_dataset_fit_dense(io->train_path, &cfg, err))) goto done;
    if ((s = rk_dataset_load(io->train_path, &cfg, &tr, err))) goto done;
    if ((s = rk_dataset_load(io->valid_path, &cfg, &va, err))) goto done;
    if (io->test_path && (s = rk_dataset_load(io->test_path, &cfg, &te, err))) goto done;
    if (!tr.has_labels || !va.has_labels) {
        s = rk_fail(err, RK_EFORMAT, "%s: no label column '%s'", tr.has_labels ? io->valid_path : io->train_path, cfg.label_column);
        goto done;
    }
    {
        /* early stopping ranks epochs by validation AUC, which needs both classes */
        const rk_dataset *chk[2] = {&tr, &va};
        const char *paths[2] = {io->train_path, io->valid_path};
        for (int k = 0; k < 2; k++) {
            size_t pos = 0;
            for (int r = 0; r < chk[k]->b.n_rows; r++) pos += chk[k]->b.labels[r] > 0.5f;
            if (pos == 0 || pos == (size_t)chk[k]->b.n_rows) {
                s = rk_fail(err, RK_EINVAL, "%s: every label is %d; training and early stopping (validation AUC) need both classes",
                            paths[k], pos ? 1 : 0);
                goto done;
            }
        }
    }
    openblas_set_num_threads(cfg.train.threads);
    if ((s = rk_model_create(&cfg, &m, err))) goto done;
    for (int f = 0; f < cfg.n_features; f++) { /* the model (an ensemble: member 0) owns them from here */
        rk_model *owner = m->n_members ? m->member[0] : m;
        owner->sid_items[f] = sid_items[f];
        owner->sid_cb[f] = sid_cb[f];
        sid_items[f] = NULL;
        memset(&sid_cb[f], 0, sizeof sid_cb[f]);
    }
    const int BS = cfg.train.batch_size, N = tr.b.n_rows;
    const int M = m->n_members, NT = M ? M : 1;
    /* Largest bag total per feature in any batch: bounded by BS x widest row. */
    size_t maxrow = 1;
    for (int f = 0; f < cfg.n_features; f++) {
        if (cfg.features[f].kind != RK_FEAT_SPARSE) continue;
        for (int r = 0; r < N; r++) {
            size_t L = tr.b.offsets[f][r + 1] - tr.b.offsets[f][r];
            if (L > maxrow) maxrow = L;
        }
    }
    if ((s = rk_batch_alloc(&bt, &cfg, BS, (size_t)BS * maxrow, err))) goto done;
    for (int i = 0; i < NT; i++)
        if ((s = tower_init(&ts[i], M ? m->member[i] : m, BS, err))) goto done;
    uniq = rk_malloc((size_t)BS * maxrow * sizeof(uint64_t));
    perm = rk_malloc((size_t)N * sizeof(uint32_t));
    dz = rk_malloc((size_t)NT * sizeof(double));
    if (!uniq || !perm || !dz) {
        s = rk_fail(err, RK_ENOMEM, "train: out of memory");
        goto done;
    }
    for (int i = 0; i < N; i++) perm[i] = (uint32_t)i;
    rk_rng rng;
    rk_rng_seed(&rng, cfg.train.seed ^ 0x5eedULL);
    long step = 0;
    double best_auc = -1, train_time = 0;
    long train_examples = 0;
    int since_best = 0;
    float tau_m = 0, tau_v = 0; /* Adam state of log(tau) */
    const rk_train_cfg *tc = &cfg.train;
    for (int epoch = 1; epoch <= tc->max_epochs; epoch++) {
        for (int i = tc->shuffle ? N - 1 : 0; i > 0; i--) {
            uint32_t j = (uint32_t)rk_rng_below(&rng, (uint64_t)i + 1);
            uint32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        char label[32];
        snprintf(label, sizeof label, "epoch %d", epoch);
        rk_progress pg;
        rk_progress_start(&pg, label, "ex", (uint64_t)N);
        double loss_sum = 0, t0 = rk_now();
        for (int b0 = 0; b0 < N; b0 += BS) {
            int n = N - b0 < BS ? N - b0 : BS;
            rk_batch_gather(&tr.b, &cfg, perm + b0, n, &bt);
            for (int i = 0; i < NT; i++) {
                if ((s = rk_model_fill_x0(ts[i].m, &bt, &ts[i].w, NULL, err))) goto done;
                rk_model_forward(ts[i].m, &ts[i].w, n);
            }
            double loss;
            if (M == 0) {
                loss = rk_bce_logits(ts[0].w.logit, bt.labels, n, ts[0].w.dlogit);
            } else {
                /* collaborative loss, per example (rank/fusion.c) */
                double tau = exp((double)m->log_tau), dlt_sum = 0;
                loss = 0;
                for (int r = 0; r < n; r++) {
                    double dlt;
                    for (int i = 0; i < M; i++) z[i] = ts[i].w.logit[r];
                    loss += rk_collab_grad(&cfg.fusion, tau, z, M, bt.labels[r], dz, &dlt);
                    for (int i = 0; i < M; i++) ts[i].w.dlogit[r] = (float)(dz[i] / n);
                    dlt_sum += dlt;
                }
                loss /= n;
                if (cfg.fusion.learn_tau && cfg.fusion.type == RK_FUSION_CONFIDENCE) {
                    float g = (float)(dlt_sum / n);
                    rk_adam_step(&m->log_tau, &g, &tau_m, &tau_v, 1, tc->lr_dense, tc->adam_b1, tc->adam_b2, tc->adam_eps, step + 1);
                    if (m->log_tau < -6.9f) m->log_tau = -6.9f; /* tau >= 1e-3, as the config allows */
                }
            }
            if (!isfinite(loss)) {
                s = rk_fail(err, RK_ENUMERIC, "train: loss became non-finite at epoch %d step %ld (lower the learning rates)", epoch, step);
                goto done;
            }
            loss_sum += loss * n;
            step++;
            for (int i = 0; i < NT; i++) tower_step(&ts[i], &bt, n, step, uniq);
            rk_progress_add(&pg, (uint64_t)n);
        }
        train_time += rk_now() - t0;
        train_examples += N;
        if (!io->quiet) rk_progress_finish(&pg);
        rk_metrics vm;
        if ((s = evaluate(m, &va, &vm, err))) goto done;
        rep->epochs_run = epoch;
        int improved = vm.auc_defined && vm.auc > best_auc;
        if (!io->quiet)
            rk_info("epoch %d: train_loss=%.5f valid_auc=%.4f valid_logloss=%.5f valid_ne=%.4f%s", epoch, loss_sum / N, vm.auc,
                    vm.logloss, vm.ne, improved ? " (best)" : "");
        if (improved) {
            best_auc = vm.auc;
            rep->best_epoch = epoch;
            rep->valid = vm;
            since_best = 0;
            best_log_tau = m->log_tau;
            for (int i = 0; i < NT; i++)
                if ((s = snap_take(&ts[i].best, ts[i].m, 0, err))) goto done;
        } else if (++since_best >= tc->patience) {
            if (!io->quiet) rk_info("early stop: no valid AUC gain for %d epochs; keeping epoch %d", since_best, rep->best_epoch);
            break;
        }
    }
    for (int i = 0; i < NT; i++)
        if (ts[i].best.params && (s = snap_take(&ts[i].best, ts[i].m, 1, err))) goto done;
    if (rep->best_epoch) m->log_tau = best_log_tau;
    if (cfg.train.zero_unseen_rows) {
        for (int i = 0; i < NT; i++) zero_unseen(ts[i].m, &tr.b);
        /* the reported validation metrics are those of the model as saved,
         * so they differ from the best epoch's line above */
        rk_metrics before = rep->valid;
        if ((s = evaluate(m, &va, &rep->valid, err))) goto done;
        if (!io->quiet && rep->best_epoch)
            rk_info("train.zero_unseen_rows: rows no training example reached set to zero (were their random init); "
                    "valid_auc=%.4f valid_ne=%.4f after zeroing (epoch %d line: valid_auc=%.4f valid_ne=%.4f)",
                    rep->valid.auc, rep->valid.ne, rep->best_epoch, before.auc, before.ne);
    }
    rep->train_examples_per_s = train_time > 0 ? (double)train_examples / train_time : 0;
    rep->n_members = M;
    if (M && (!(rep->member_valid = rk_calloc((size_t)M, sizeof(rk_metrics))) ||
              !(rep->member_test = rk_calloc((size_t)M, sizeof(rk_metrics))))) {
        s = rk_fail(err, RK_ENOMEM, "train: out of memory");
        goto done;
    }
    for (int i = 0; i < M; i++)
        if ((s = evaluate(m->member[i], &va, &rep->member_valid[i], err))) goto done;
    if (io->test_path) {
        if (!te.has_labels) {
            s = rk_fail(err, RK_EFORMAT, "%s: no label column '%s'", io->test_path, cfg.label_column);
            goto done;
        }
        if ((s = evaluate(m, &te, &rep->test, err))) goto done;
        for (int i = 0; i < M; i++)
            if ((s = evaluate(m->member[i], &te, &rep->member_test[i], err))) goto done;
        rep->have_test = 1;
    }
    *out = m;
    m = NULL;
done:
    rk_model_destroy(m);
    for (int f = 0; sid_items && sid_cb && f < NF; f++) {
        rk_sid_items_destroy(sid_items[f]);
        rk_sid_codebook_free(&sid_cb[f]);
    }
    rk_free(sid_items);
    rk_free(sid_cb);
    rk_free(z);
    rk_dataset_free(&tr);
    rk_dataset_free(&va);
    rk_dataset_free(&te);
    rk_batch_free(&bt);
    for (int i = 0; ts && i < NTS; i++) tower_free(&ts[i]);
    rk_free(ts);
    rk_free(uniq);
    rk_free(perm);
    rk_free(dz);
    rk_model_cfg_free(&cfg);
    if (s) rk_train_report_free(rep);
    return s;
}

void rk_train_report_free(rk_train_report *rep) {
    if (!rep) return;
    rk_free(rep->member_valid);
    rk_free(rep->member_test);
    rep->member_valid = rep->member_test = NULL;
}

/* ---------------------------------------------------------------- online trainer */

struct rk_trainer {
    tower_state ts;
    rk_batch bt;
    uint64_t *uniq;
    int max_rows, n;
    long step;
};

int rk_model_backbone_dim(const rk_model *m) {
    const rk_tower_cfg *t = &m->cfg.tower;
    return t->n_hidden ? t->hidden[t->n_hidden - 1] : m->D;
}

void rk_trainer_destroy(rk_trainer *t) {
    if (!t) return;
    tower_free(&t->ts);
    rk_batch_free(&t->bt);
    rk_free(t->uniq);
    rk_free(t);
}

rk_status rk_trainer_create(rk_model *m, const rk_batch *src, int max_rows, rk_trainer **out, rk_err *err) {
    *out = NULL;
    if (m->n_members) return rk_fail(err, RK_EINVAL, "trainer: ensembles are not supported (single models only)");
    for (int f = 0; f < m->cfg.n_features; f++)
        if (m->cfg.features[f].kind == RK_FEAT_SPARSE && !m->tables[f])
            return rk_fail(err, RK_EINVAL, "trainer: table '%s' is not in memory", m->cfg.features[f].name);
    if (max_rows <= 0) return rk_fail(err, RK_EINVAL, "trainer: max_rows must be > 0, got %d", max_rows);
    size_t maxrow = 1;
    for (int f = 0; f < m->cfg.n_features; f++) {
        if (m->cfg.features[f].kind != RK_FEAT_SPARSE || !src->offsets[f]) continue;
        for (int r = 0; r < src->n_rows; r++) {
            size_t L = src->offsets[f][r + 1] - src->offsets[f][r];
            if (L > maxrow) maxrow = L;
        }
    }
    rk_trainer *t = rk_calloc(1, sizeof *t);
    if (!t) return rk_fail(err, RK_ENOMEM, "trainer: out of memory");
    rk_model_unpack(m); /* training changes the weights and needs the OpenBLAS path's activations */
    t->max_rows = max_rows;
    rk_status s = tower_init(&t->ts, m, max_rows, err);
    if (s == RK_OK) s = rk_batch_alloc(&t->bt, &m->cfg, max_rows, (size_t)max_rows * maxrow, err);
    if (s == RK_OK && !(t->uniq = rk_malloc((size_t)max_rows * maxrow * sizeof(uint64_t))))
        s = rk_fail(err, RK_ENOMEM, "trainer: out of memory");
    if (s) {
        rk_trainer_destroy(t);
        return s;
    }
    *out = t;
    return RK_OK;
}

rk_status rk_trainer_forward(rk_trainer *t, const rk_batch *src, const uint32_t *idx, int n, const float **logit,
                             const float **hidden, const float **labels, rk_err *err) {
    if (n <= 0 || n > t->max_rows) return rk_fail(err, RK_EINVAL, "trainer: batch of %d rows (1..%d)", n, t->max_rows);
    rk_model *m = t->ts.m;
    rk_batch_gather(src, &m->cfg, idx, n, &t->bt);
    rk_status s = rk_model_fill_x0(m, &t->bt, &t->ts.w, NULL, err);
    if (s) return s;
    rk_model_forward(m, &t->ts.w, n);
    t->n = n;
    const rk_tower_cfg *tw = &m->cfg.tower;
    *logit = t->ts.w.logit;
    if (hidden) *hidden = tw->n_hidden ? t->ts.w.act[tw->n_hidden - 1] : t->ts.w.xs[tw->n_cross];
    if (labels) *labels = t->bt.labels;
    return RK_OK;
}

void rk_trainer_step(rk_trainer *t, const float *dlogit, const float *dhidden) {
    memcpy(t->ts.w.dlogit, dlogit, (size_t)t->n * sizeof(float));
    t->ts.w.dh_extra = dhidden;
    tower_step(&t->ts, &t->bt, t->n, ++t->step, t->uniq);
    t->ts.w.dh_extra = NULL;
}
