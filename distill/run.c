/*
 * distill/run.c — streaming training of the ExFM teacher (foundation model)
 * and of the vertical students (distill.h).
 *
 * Teacher: one pass per chunk over the rows of every vertical (shuffled
 * within the chunk with the config's seed; a biased teacher sees one
 * vertical's rows bias_factor times, or its rows once and each row outside
 * it with probability 1/bias_factor), binary cross-entropy on labels. After
 * chunk c it is version c + 1 and labels chunk c + 1 + staleness through
 * the DAS log, so a chunk's teacher never saw that chunk's labels.
 *
 * Student: progressive validation — chunk c is scored before any of its
 * labels is read — then one pass over it in time order. Per mini-batch,
 * Algorithm 1 of papers.md §3(a): (i) adapter step on the fresh labels,
 * (ii) its stop-gradient output q, (iii) student step through rank/'s
 * trainer with the serving-head gradient and, in AH mode, the auxiliary
 * head's gradient scaled by beta at the backbone output.
 */
#include "distill.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- teacher */

typedef struct {
    rk_trainer *tr;
    const rk_dataset *d;
    int bs;
} teacher_ctx;

static rk_status teacher_score(void *ctx, const uint32_t *ids, int n, float *logit, rk_err *err) {
    teacher_ctx *t = ctx;
    for (int i0 = 0; i0 < n; i0 += t->bs) {
        int m = n - i0 < t->bs ? n - i0 : t->bs;
        const float *z;
        rk_status s = rk_trainer_forward(t->tr, &t->d->b, ids + i0, m, &z, NULL, NULL, err);
        if (s) return s;
        memcpy(logit + i0, z, (size_t)m * sizeof(float));
    }
    return RK_OK;
}

static rk_status check_rows(const rk_dataset *d, const rk_model_cfg *cfg, const rk_stream *st, rk_err *err) {
    if (d->b.n_rows != st->n_rows)
        return rk_fail(err, RK_EINVAL, "%s: %d examples, the stream has %d rows (load both from the same TSV)", d->path, d->b.n_rows,
                       st->n_rows);
    if (!d->has_labels)
        return rk_fail(err, RK_EFORMAT, "%s: no column '%s' (the label column of the config)", d->path, cfg->label_column);
    return RK_OK;
}

rk_status rk_teacher_run(const rk_model_cfg *tcfg, const rk_dataset *td, const rk_stream *st, const rk_teacher_opts *o,
                         rk_das *das, rk_teacher_report *rep, rk_err *err) {
    memset(rep, 0, sizeof *rep);
    rk_status s = check_rows(td, tcfg, st, err);
    if (s) return s;
    if (o->staleness < 0) return rk_fail(err, RK_EINVAL, "teacher: staleness must be >= 0, got %d", o->staleness);
    if (o->bias_factor < 1) return rk_fail(err, RK_EINVAL, "teacher: bias_factor must be >= 1, got %d", o->bias_factor);
    if (o->bias_vertical >= st->n_verticals)
        return rk_fail(err, RK_EINVAL, "teacher: bias vertical %d, the stream has %d", o->bias_vertical, st->n_verticals);
    const int BS = o->batch_size > 0 ? o->batch_size : tcfg->train.batch_size;
    double t0 = rk_now();
    rk_model *m = NULL;
    rk_trainer *tr = NULL;
    int maxc = 0;
    for (int c = 0; c < st->n_chunks; c++)
        if (st->chunk_start[c + 1] - st->chunk_start[c] > maxc) maxc = st->chunk_start[c + 1] - st->chunk_start[c];
    size_t cap = (size_t)maxc * (size_t)(o->bias_factor > 1 ? o->bias_factor : 1);
    uint32_t *order = rk_malloc(cap * sizeof(uint32_t));
    uint32_t *req = rk_malloc((size_t)maxc * (size_t)st->n_verticals * sizeof(uint32_t));
    float *dz = rk_malloc((size_t)BS * sizeof(float));
    if (!order || !req || !dz) {
        s = rk_fail(err, RK_ENOMEM, "teacher: out of memory");
        goto done;
    }
    openblas_set_num_threads(tcfg->train.threads);
    if ((s = rk_model_create(tcfg, &m, err))) goto done;
    if ((s = rk_trainer_create(m, &td->b, BS, &tr, err))) goto done;
    rk_rng rng;
    rk_rng_seed(&rng, tcfg->train.seed ^ 0x7eac4e7ULL);
    teacher_ctx ctx = {tr, td, BS};
    for (int c = 0; c < st->n_chunks; c++) {
        /* train one pass on chunk c */
        int n = 0;
        for (int r = st->chunk_start[c]; r < st->chunk_start[c + 1]; r++) {
            if (!st->vmask[r]) continue;
            int in_bias = o->bias_vertical >= 0 && ((st->vmask[r] >> o->bias_vertical) & 1);
            int times = in_bias && !o->bias_subsample ? o->bias_factor : 1;
            if (o->bias_subsample && o->bias_vertical >= 0 && !in_bias && rk_rng_uniform(&rng) * o->bias_factor >= 1) continue;
            for (int k = 0; k < times; k++) order[n++] = (uint32_t)r;
        }
        for (int i = n - 1; i > 0; i--) {
            uint32_t j = (uint32_t)rk_rng_below(&rng, (uint64_t)i + 1), x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        for (int b0 = 0; b0 < n; b0 += BS) {
            if (o->stop && *o->stop) {
                s = rk_fail(err, RK_ECANCELED, "teacher: stopped in chunk %d", c);
                goto done;
            }
            int b = n - b0 < BS ? n - b0 : BS;
            const float *z, *y;
            if ((s = rk_trainer_forward(tr, &td->b, order + b0, b, &z, NULL, &y, err))) goto done;
            double loss = rk_bce_logits(z, y, b, dz);
            if (!isfinite(loss)) {
                s = rk_fail(err, RK_ENUMERIC, "teacher: loss became non-finite in chunk %d (lower the learning rates)", c);
                goto done;
            }
            rk_trainer_step(tr, dz, NULL);
        }
        /* publish version c + 1: it labels chunk c + 1 + staleness */
        int t = c + 1 + o->staleness;
        if (t >= st->n_chunks) continue;
        size_t nr = 0;
        for (int v = 0; v < st->n_verticals; v++) nr += (size_t)rk_stream_rows(st, t, v, req + nr, maxc);
        size_t scored;
        if ((s = rk_das_log(das, req, nr, teacher_score, &ctx, c + 1, &scored, err))) goto done;
        rep->requested += nr;
        rep->scored += scored;
    }
    rep->seconds = rk_now() - t0;
done:
    rk_trainer_destroy(tr);
    rk_model_destroy(m);
    rk_free(order);
    rk_free(req);
    rk_free(dz);
    return s;
}

/* ---------------------------------------------------------------- student */

void rk_student_report_free(rk_student_report *r) {
    rk_free(r->pctr);
    rk_free(r->label);
    rk_free(r->chunk);
    rk_free(r->id);
    memset(r, 0, sizeof *r);
}

/* A checkpoint: the serving bundle (rank/ format, published atomically by
 * rk_model_save) plus the training-only parameters in
 * exfm_training.safetensors, written beside it under a temporary name and
 * renamed in last, so a checkpoint with that file is complete. (Staging the
 * whole directory under a temporary name and letting rk_model_save publish
 * it gave names like chunk-014.tmp-exfm-PID.tmp-PID.) On failure the chunk
 * directory is removed. */
static rk_status save_checkpoint(const rk_model *m, const char *root, const char *vname, int c, const float *aux, int H,
                                 rk_exfm_adapter *ad, const rk_exfm_cfg *x, rk_err *err) {
    char dir[1024], tmp[1200], path[1200];
    snprintf(dir, sizeof dir, "%s/%s", root, vname);
    rk_status s = rk_mkdir_p(dir, err);
    if (s) return s;
    snprintf(dir, sizeof dir, "%s/%s/chunk-%03d", root, vname, c);
    if (rk_path_exists(dir)) return rk_fail(err, RK_EEXIST, "checkpoint %s: already exists", dir);
    char metrics[256];
    snprintf(metrics, sizeof metrics, "{\"exfm\": {\"chunk\": %d, \"vertical\": \"%s\", \"mode\": %d, \"adapter\": %d}}", c, vname,
             (int)x->mode, x->adapter);
    if ((s = rk_model_save(m, dir, metrics, 0, err))) return s;
    snprintf(path, sizeof path, "%s/exfm_training.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    rk_st_writer *w;
    if ((s = rk_st_writer_create(&w, err))) goto fail;
    if (aux) {
        int64_t shw[2] = {1, H}, shb[1] = {1};
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "aux_head.weight", aux, 2, shw, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "aux_head.bias", aux + H, 1, shb, err);
    }
    if (ad && s == RK_OK) {
        size_t np;
        const float *p = rk_exfm_adapter_params(ad, &np);
        int64_t K = (int64_t)(np - 1) / 3, s0[2] = {K, 1}, s1[1] = {K}, s2[2] = {1, K}, s3[1] = {1};
        s = rk_st_writer_add_f32(w, "adapter.0.weight", p, 2, s0, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "adapter.0.bias", p + K, 1, s1, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "adapter.2.weight", p + 2 * K, 2, s2, err);
        if (s == RK_OK) s = rk_st_writer_add_f32(w, "adapter.2.bias", p + 3 * K, 1, s3, err);
    }
    if (s == RK_OK) s = rk_st_writer_add_meta(w, "role", "training-only: never loaded by rank score / rankd", err);
    if (s == RK_OK) s = rk_st_writer_write(w, tmp, err);
    rk_st_writer_destroy(w);
    if (s) goto fail;
    if (rename(tmp, path) != 0) {
        s = rk_fail(err, RK_EIO, "checkpoint %s: rename from %s failed: %s", path, tmp, strerror(errno));
        goto fail;
    }
    return rk_fsync_dir(dir, err);
fail:
    rk_rm_rf(dir, NULL);
    return s;
}

rk_status rk_student_run(const rk_model_cfg *scfg, const rk_dataset *sd, const rk_stream *st, rk_das *das,
                         const rk_student_opts *o, rk_student_report *rep, rk_model **out_model, rk_err *err) {
    memset(rep, 0, sizeof *rep);
    if (out_model) *out_model = NULL;
    rk_status s = check_rows(sd, scfg, st, err);
    if (s) return s;
    const rk_exfm_cfg *x = &o->exfm;
    if ((s = rk_exfm_cfg_check(x, err))) return s;
    if (o->vertical < 0 || o->vertical >= st->n_verticals)
        return rk_fail(err, RK_EINVAL, "student: vertical %d, the stream has %d", o->vertical, st->n_verticals);
    if (x->mode != RK_EXFM_NONE && !das) return rk_fail(err, RK_EINVAL, "student: mode needs a DAS log (teacher predictions)");
    if (scfg->n_members) return rk_fail(err, RK_EINVAL, "student: an ensemble config cannot be a student");
    const int BS = scfg->train.batch_size, v = o->vertical;
    int total = 0, maxc = 0;
    for (int c = 0; c < st->n_chunks; c++) {
        int n = 0;
        for (int r = st->chunk_start[c]; r < st->chunk_start[c + 1]; r++) n += (st->vmask[r] >> v) & 1;
        total += n;
        if (n > maxc) maxc = n;
    }
    if (total == 0) return rk_fail(err, RK_EINVAL, "student: vertical '%s' has no rows", st->vname[v]);
    size_t maxrow = 1;
    for (int f = 0; f < scfg->n_features; f++) {
        if (scfg->features[f].kind != RK_FEAT_SPARSE) continue;
        for (int r = 0; r < sd->b.n_rows; r++) {
            size_t L = sd->b.offsets[f][r + 1] - sd->b.offsets[f][r];
            if (L > maxrow) maxrow = L;
        }
    }
    rk_model *m = NULL;
    rk_trainer *tr = NULL;
    rk_exfm_adapter *ad = NULL;
    rk_batch eb = {0};
    uint32_t *ids = rk_malloc((size_t)maxc * sizeof(uint32_t));
    float *zf = rk_malloc((size_t)maxc * sizeof(float));
    float *pf = rk_malloc((size_t)maxc * sizeof(float));
    float *bufs = rk_malloc((size_t)BS * 5 * sizeof(float));
    float *aux = NULL, *dh = NULL;
    rep->pctr = rk_malloc((size_t)total * sizeof(float));
    rep->label = rk_malloc((size_t)total * sizeof(float));
    rep->chunk = rk_malloc((size_t)total * sizeof(int));
    rep->id = rk_malloc((size_t)total * sizeof(uint32_t));
    if (!ids || !zf || !pf || !bufs || !rep->pctr || !rep->label || !rep->chunk || !rep->id) {
        s = rk_fail(err, RK_ENOMEM, "student: out of memory");
        goto done;
    }
    float *zsa = bufs, *q = bufs + BS, *zd = bufs + 2 * BS, *dzs = bufs + 3 * BS, *dzd = bufs + 4 * BS;
    openblas_set_num_threads(scfg->train.threads);
    if ((s = rk_model_create(scfg, &m, err))) goto done;
    if ((s = rk_trainer_create(m, &sd->b, BS, &tr, err))) goto done;
    if ((s = rk_batch_alloc(&eb, scfg, maxc, (size_t)maxc * maxrow, err))) goto done;
    const int H = rk_model_backbone_dim(m);
    /* auxiliary head: [a_w H | a_b 1], its gradient and Adam moments; own RNG
     * stream so the backbone's init is the same as without it */
    float *ag = NULL, *am = NULL, *av = NULL;
    long astep = 0;
    if (x->mode == RK_EXFM_AH) {
        aux = rk_calloc(4 * (size_t)(H + 1), sizeof(float));
        dh = rk_malloc((size_t)BS * (size_t)H * sizeof(float));
        if (!aux || !dh) {
            s = rk_fail(err, RK_ENOMEM, "student: out of memory for the auxiliary head");
            goto done;
        }
        ag = aux + (H + 1), am = aux + 2 * (H + 1), av = aux + 3 * (H + 1);
        rk_rng rng;
        rk_rng_seed(&rng, scfg->train.seed ^ 0xa0c5eadULL);
        double bound = 1 / sqrt((double)H);
        for (int i = 0; i <= H; i++) aux[i] = (float)((2 * rk_rng_uniform(&rng) - 1) * bound);
    }
    if (x->adapter && (s = rk_exfm_adapter_create(x->sa_hidden, x->lr_sa, scfg->train.seed ^ 0x5adaULL, BS, &ad, err))) goto done;
    int k = 0;
    for (int c = 0; c < st->n_chunks; c++) {
        int n = rk_stream_rows(st, c, v, ids, maxc);
        if (n == 0) continue;
        /* (1) progressive validation: score chunk c before reading its labels */
        rk_batch_gather(&sd->b, scfg, ids, n, &eb);
        if ((s = rk_model_predict(m, &eb, rep->pctr + k, err))) goto done;
        for (int i = 0; i < n; i++) {
            rep->label[k + i] = sd->b.labels[ids[i]];
            rep->chunk[k + i] = c;
            rep->id[k + i] = ids[i];
        }
        k += n;
        /* (2) the teacher's logits from the log (never the teacher itself) */
        if (x->mode != RK_EXFM_NONE) {
            if ((s = rk_das_get(das, ids, (size_t)n, zf, NULL, err))) goto done;
            for (int i = 0; i < n; i++) pf[i] = isnan(zf[i]) ? NAN : rk_sigmoid(zf[i]);
        }
        /* (3) one pass in time order */
        for (int b0 = 0; b0 < n; b0 += BS) {
            if (o->stop && *o->stop) {
                s = rk_fail(err, RK_ECANCELED, "student '%s': stopped in chunk %d", st->vname[v], c);
                goto done;
            }
            int b = n - b0 < BS ? n - b0 : BS;
            const float *zs, *h, *y;
            if ((s = rk_trainer_forward(tr, &sd->b, ids + b0, b, &zs, &h, &y, err))) goto done;
            if (ad) {
                /* Algorithm 1 (i)-(ii): adapter step, then its stop-gradient output */
                rk_exfm_adapter_step(ad, zf + b0, y, b, NULL);
                for (int i = 0; i < b; i++) q[i] = isnan(zf[b0 + i]) ? 0 : zf[b0 + i]; /* masked below */
                rk_exfm_adapter_forward(ad, q, b, zsa);
                for (int i = 0; i < b; i++) q[i] = isnan(zf[b0 + i]) ? NAN : rk_sigmoid(zsa[i]);
            }
            if (x->mode == RK_EXFM_AH) rk_exfm_aux_forward(zd, h, aux, aux + H, b, H);
            double loss = rk_exfm_loss(x, b, zs, zd, y, x->mode != RK_EXFM_NONE ? pf + b0 : NULL, ad ? q : NULL, dzs, dzd);
            if (!isfinite(loss)) {
                s = rk_fail(err, RK_ENUMERIC,
                            "student mode=%s vertical=%s: loss became non-finite in chunk %d (w=%g alpha=%g beta=%g w_sa=%g "
                            "lr_sa=%g; lower them or the config's learning rates)",
                            x->mode == RK_EXFM_NONE ? "none" : x->mode == RK_EXFM_KD ? "kd" : x->adapter ? "ah_sa" : "ah",
                            st->vname[v], c, x->w, x->alpha, x->beta, x->w_sa, x->lr_sa);
                goto done;
            }
            if (x->mode != RK_EXFM_NONE)
                for (int i = 0; i < b; i++) rep->distilled += !isnan(pf[b0 + i]);
            if (x->mode == RK_EXFM_AH) {
                memset(ag, 0, (size_t)(H + 1) * sizeof(float));
                rk_exfm_aux_backward(dh, ag, ag + H, dzd, h, aux, x->beta, b, H);
                rk_adam_step(aux, ag, am, av, (size_t)H + 1, scfg->train.lr_dense, scfg->train.adam_b1, scfg->train.adam_b2,
                             scfg->train.adam_eps, ++astep);
            }
            rk_trainer_step(tr, dzs, x->mode == RK_EXFM_AH ? dh : NULL);
        }
        if (o->checkpoint_dir &&
            (s = save_checkpoint(m, o->checkpoint_dir, st->vname[v], c, x->mode == RK_EXFM_AH ? aux : NULL, H, ad, x, err)))
            goto done;
    }
    rep->n = k;
    {
        size_t a = 0;
        while (a < (size_t)k && rep->chunk[a] < o->warmup) a++;
        if (a == (size_t)k) {
            s = rk_fail(err, RK_EINVAL, "student '%s': no rows after the %d warm-up chunks", st->vname[v], o->warmup);
            goto done;
        }
        if ((s = rk_metrics_compute(rep->pctr + a, rep->label + a, (size_t)k - a, &rep->after_warmup, err))) goto done;
    }
    if (out_model) {
        *out_model = m;
        m = NULL;
    }
done:
    rk_trainer_destroy(tr);
    rk_model_destroy(m);
    rk_exfm_adapter_destroy(ad);
    rk_batch_free(&eb);
    rk_free(ids);
    rk_free(zf);
    rk_free(pf);
    rk_free(bufs);
    rk_free(aux);
    rk_free(dh);
    if (s) rk_student_report_free(rep);
    return s;
}
