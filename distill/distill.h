/*
 * distill/distill.h — the whole interface of rankd's ExFM module: one
 * foundation model (teacher) teaches many small vertical models (students)
 * on a time-ordered stream (Liang et al., "External Large Foundation Model",
 * WWW 2025 companion, arXiv 2502.17494; papers.md §3, §6.5, §7 claim 8).
 *
 * The paper's body was not read: the equations follow the re-implementation
 * cited in papers.md §3(b), and every choice the notes call ambiguous
 * (§3(i)) is an option here with the recommended default.
 *
 * Pieces, bottom up:
 *   losses      the student's serving-head / auxiliary-head / single-head KD
 *               losses with label scaling and loss weight (§3(b) Eq. 1-5, 7),
 *               the auxiliary head's backward with gradient scaling into the
 *               backbone, and the student adapter (Eq. 6), all with
 *               hand-written gradients checked against PyTorch
 *               (tests/ref/gen_exfm_ref.py).
 *   stream      a TSV of time-ordered examples cut into chunks, with
 *               (overlapping) verticals from a genre-family mapping.
 *   DAS         the data augmentation system: the teacher's logit for each
 *               example id, computed once per unique id across verticals and
 *               logged in a RocksDB column family (store/); students read
 *               only this log.
 *   run         streaming training with progressive validation: for each
 *               chunk, score it first, then train one pass over it; optional
 *               checkpoint per chunk.
 *
 * Serving: a student checkpoint is an ordinary rank/ bundle (serving head
 * and backbone only: model.json, dense.safetensors, tables/) plus
 * `exfm_training.safetensors` holding the training-only auxiliary head and
 * adapter. rk_model_open (rank score, rankd) never reads that file, so the
 * served pCTR is the same with and without it.
 *
 * Module position: above rank/ (towers, trainer step, bundle, metrics),
 * store/ (the DAS log) and nn/ (layers, losses, Adam). Errors: rk_status
 * with a message naming the file, row, field or option.
 */
#ifndef RK_DISTILL_H
#define RK_DISTILL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "rank.h"

/* ====================================================================== losses */

/* How a student uses the teacher. */
typedef enum {
    RK_EXFM_NONE = 0, /* student alone: L = -h(z_S, y) */
    RK_EXFM_KD = 1,   /* single-head KD (papers.md §3(b), presumed Eq. 2):
                       * L = -h(z_S, y) - w h(z_S, t_F), on the serving head */
    RK_EXFM_AH = 2,   /* auxiliary head (Eq. 3-5, 7):
                       * L = -h(z_S, y) - w h(z_D, t_F) [- w_sa h(z_D, sg(sigma(z_SA)))] */
} rk_exfm_mode;

/* Options (plain struct; rk_exfm_cfg c = RK_EXFM_CFG_DEFAULT;). None of the
 * values is the paper's (papers.md §3(c): MISSING); defaults follow §3(i). */
typedef struct {
    rk_exfm_mode mode;
    float w;         /* loss weight of the distillation term (Eq. 5's w), >= 0; default 1 */
    float alpha;     /* label scaling: t_F = min(1, alpha p_F) (Eq. 4; clip as the
                      * re-implementation; §3(i).2), > 0; default 1 */
    float beta;      /* gradient scaling: the backbone receives beta x the auxiliary
                      * head's gradient (the head itself gets it unscaled), >= 0; default 1 */
    int adapter;     /* 1: student adapter on (RK_EXFM_AH only): its stop-gradient
                      * output supervises the same auxiliary head (§3(i).3) */
    float w_sa;      /* weight of the adapter-target term (Eq. 7), >= 0; default 1 */
    int sa_hidden;   /* adapter width: MLP 1 -> sa_hidden (ReLU) -> 1 on the teacher's
                      * logit (§3(i).1), 1..256; default 8 */
    float lr_sa;     /* adapter Adam learning rate; default 1e-3 */
} rk_exfm_cfg;
#define RK_EXFM_CFG_DEFAULT {RK_EXFM_NONE, 1.0f, 1.0f, 1.0f, 0, 1.0f, 8, 1e-3f}

/* Check ranges; RK_EINVAL naming the field. */
rk_status rk_exfm_cfg_check(const rk_exfm_cfg *c, rk_err *err);

/* Eq. 1 as a loss: BCE of a logit z against a soft target t in [0, 1],
 * -h(z, t) = max(z, 0) - z t + log(1 + exp(-|z|)); d/dz = sigmoid(z) - t.
 * Reference value: -h(0, 1) = ln 2 (papers.md §6.5). */
double rk_exfm_bce(double z, double t);

/* The student's loss over n rows (mean over n) and its gradients.
 * z_s[n]: serving-head logits; z_d[n]: auxiliary-head logits (read only in
 * RK_EXFM_AH; may be NULL otherwise); y[n]: labels 0/1; p_f[n]: the teacher's
 * probability per row, NaN where the log has no teacher prediction (the
 * distillation terms then skip that row); q[n]: sigma(adapter logit), the
 * adapter's stop-gradient target (read only when c->adapter; NaN = skip).
 * Writes dz_s[n] and, in RK_EXFM_AH, dz_d[n] = d loss / d logit (the 1/n
 * mean included). Returns the loss. Terms per row (t_F = min(1, alpha p_F)):
 *   NONE  -h(z_s, y)
 *   KD    -h(z_s, y) - w h(z_s, t_F)
 *   AH    -h(z_s, y) - w h(z_d, t_F) - [adapter] w_sa h(z_d, q)          */
double rk_exfm_loss(const rk_exfm_cfg *c, int n, const float *z_s, const float *z_d, const float *y,
                    const float *p_f, const float *q, float *dz_s, float *dz_d);

/* The auxiliary head: z_d[n] = h[n, H] a_w[H] + a_b (a Linear(H, 1) on the
 * backbone output h, beside the serving head). */
void rk_exfm_aux_forward(float *z_d, const float *h, const float *a_w, const float *a_b, int n, int H);
/* Its backward with gradient scaling: da_w[H] += dz_d^T h, da_b += sum dz_d
 * (accumulated, unscaled: the head learns at full rate); dh[n, H] = beta
 * dz_d a_w (written), the gradient the backbone receives. */
void rk_exfm_aux_backward(float *dh, float *da_w, float *da_b, const float *dz_d, const float *h,
                          const float *a_w, float beta, int n, int H);

/* The student adapter (papers.md §3(b) Eq. 6): z_SA = W2 relu(W1 z_F + b1) + b2,
 * z_F the teacher's logit, trained with L_sta = mean -h(z_SA, y) on fresh
 * labels by Adam (lr_sa, betas 0.9/0.999, eps 1e-8). Parameters in one
 * allocation, named like torch.nn.Sequential(Linear(1,K), ReLU, Linear(K,1)):
 * "0.weight" [K,1], "0.bias" [K], "2.weight" [1,K], "2.bias" [1]. */
typedef struct rk_exfm_adapter rk_exfm_adapter;
/* K = hidden width (1..256), init as torch.nn.Linear from seed. */
rk_status rk_exfm_adapter_create(int K, float lr, uint64_t seed, int max_rows, rk_exfm_adapter **out,
                                 rk_err *err);
void rk_exfm_adapter_destroy(rk_exfm_adapter *a);
/* Parameters [K + K + K + 1] in the order above (for tests / checkpoints). */
float *rk_exfm_adapter_params(rk_exfm_adapter *a, size_t *n);
/* z_sa[n] = adapter(z_f) (n <= max_rows; z_f finite). */
void rk_exfm_adapter_forward(rk_exfm_adapter *a, const float *z_f, int n, float *z_sa);
/* One Adam step on L_sta over rows where z_f is finite (mean over those
 * rows); returns L_sta before the step (NaN when no row has a teacher, and
 * then nothing changes). grad (may be NULL) receives the gradient [same
 * layout as the parameters] that was applied. Algorithm 1 step (i). */
double rk_exfm_adapter_step(rk_exfm_adapter *a, const float *z_f, const float *y, int n, float *grad);

/* ====================================================================== stream */

#define RK_EXFM_MAX_VERTICALS 8
/* A vertical's name: 1..RK_EXFM_VNAME_MAX of [A-Za-z0-9_-] (it is a path
 * component of checkpoints and a JSON string). */
#define RK_EXFM_VNAME_MAX 31

/* A time-ordered TSV cut into chunks, with verticals. Rows keep file order
 * (row i = the i-th example; its example id for the DAS log is i). */
typedef struct {
    int n_rows;
    int n_chunks;
    int *chunk_start;           /* [n_chunks + 1]: chunk c = rows [start[c], start[c+1]) */
    int n_verticals;
    char vname[RK_EXFM_MAX_VERTICALS][32];
    uint8_t *vmask;             /* [n_rows]: bit v set = row belongs to vertical v */
} rk_stream;

/* Default vertical mapping for MovieLens genre families (a movie belongs to
 * every family one of its genres is in, so verticals overlap):
 *   action: Action, Adventure, Sci-Fi, Thriller, War, Western, Crime
 *   comedy: Comedy, Romance, Children, Animation, Musical, Fantasy
 *   drama:  Drama, Documentary, Mystery, Horror, Film-Noir              */
#define RK_EXFM_ML_VERTICALS                                                                     \
    "action:Action,Adventure,Sci-Fi,Thriller,War,Western,Crime;"                                 \
    "comedy:Comedy,Romance,Children,Animation,Musical,Fantasy;"                                  \
    "drama:Drama,Documentary,Mystery,Horror,Film-Noir"

/* Read path's `timestamp` and `genres` columns (rank data movielens TSV),
 * cut the rows into n_chunks chunks of equal count in file order (a boundary
 * moves forward past equal timestamps, so one second never spans two
 * chunks) and assign verticals from spec ("name:G1,G2;name2:G3", at most
 * RK_EXFM_MAX_VERTICALS, names as RK_EXFM_VNAME_MAX). Errors: RK_EFORMAT
 * naming the file and row (timestamps must not decrease or overflow int64;
 * missing column; `timestamp`/`genres` past the first 256 columns),
 * RK_EINVAL (bad spec, fewer rows than chunks, an empty chunk). Free with
 * rk_stream_free. */
rk_status rk_stream_load(const char *path, int n_chunks, const char *spec, rk_stream *out, rk_err *err);
/* Check a vertical spec alone (the same errors as rk_stream_load's). */
rk_status rk_stream_check_spec(const char *spec, rk_err *err);
void rk_stream_free(rk_stream *s);
/* Rows of chunk c in vertical v (v < 0: rows in any vertical), in order:
 * writes up to cap ids into ids, returns the count. */
int rk_stream_rows(const rk_stream *s, int c, int v, uint32_t *ids, int cap);

/* ====================================================================== DAS log */

/* The teacher-prediction log: a store (store/) with one column family
 * "das_teacher" of n_examples rows of 2 floats [teacher logit, teacher
 * version + 1]; key = example id. A row whose second value is 0 was never
 * logged. Written through rk_store_apply (synced WAL, atomic per batch). */
typedef struct rk_das rk_das;
/* Create the log at dir (must not exist) for ids [0, n_examples). */
rk_status rk_das_create(const char *dir, uint64_t n_examples, rk_das **out, rk_err *err);
void rk_das_close(rk_das *d);
/* The teacher: fills logit[n] for example ids[0..n). */
typedef rk_status (*rk_das_score_fn)(void *ctx, const uint32_t *ids, int n, float *logit, rk_err *err);
/* Log the teacher's prediction for the requested ids: requests may repeat
 * ids (verticals overlap) and ids already in the log are skipped; the rest
 * are sorted, deduplicated and given to score in batches, so the teacher
 * scores every unique id exactly once. version: the teacher's version
 * (>= 0). *n_scored (may be NULL) gets how many ids were scored now.
 * Errors: score's error; RK_ENUMERIC for a non-finite teacher logit (naming
 * the id); RK_EINVAL for an id out of range; store errors. */
rk_status rk_das_log(rk_das *d, const uint32_t *ids, size_t n, rk_das_score_fn score, void *ctx, int version,
                     size_t *n_scored, rk_err *err);
/* Read the log: logit[n] (NaN where not logged), version[n] (-1 where not
 * logged; may be NULL). */
rk_status rk_das_get(rk_das *d, const uint32_t *ids, size_t n, float *logit, int *version, rk_err *err);

/* ====================================================================== teacher */

typedef struct {
    int staleness;        /* chunk t is labelled by the teacher trained through chunk
                           * t - 1 - staleness (none for earlier chunks); >= 0 */
    int bias_vertical;    /* -1: none; else this vertical is over-represented in the
                           * teacher's training data by bias_factor: */
    int bias_factor;      /* >= 1 */
    int bias_subsample;   /* 0: its rows are seen bias_factor times per chunk;
                           * 1: its rows are seen once, each row outside it with
                           * probability 1/bias_factor */
    int batch_size;       /* 0: the config's */
    const volatile sig_atomic_t *stop; /* NULL, or a flag (set by a signal handler):
                           * when non-zero, stop between mini-batches with RK_ECANCELED */
} rk_teacher_opts;
#define RK_TEACHER_OPTS_DEFAULT {0, -1, 1, 0, 0, NULL}

typedef struct {
    size_t scored;        /* teacher calls (unique example ids scored) */
    size_t requested;     /* ids requested by all verticals (with repeats) */
    double seconds;
} rk_teacher_report;

/* The foundation model: train tcfg's model streaming over the union of the
 * verticals (one pass per chunk, in time order, rows in any vertical), and
 * after chunk c log its logits for chunk c + 1 + staleness through DAS
 * (every vertical requests its rows; DAS dedups). td: the stream's TSV
 * featurized for tcfg (rk_dataset_load). Its labels are read only from
 * chunks it trains on. */
rk_status rk_teacher_run(const rk_model_cfg *tcfg, const rk_dataset *td, const rk_stream *st,
                         const rk_teacher_opts *o, rk_das *das, rk_teacher_report *rep, rk_err *err);

/* ====================================================================== students */

typedef struct {
    rk_exfm_cfg exfm;
    int vertical;           /* which vertical's rows the student sees */
    int warmup;             /* chunks [0, warmup) are not counted in the metrics */
    const char *checkpoint_dir; /* NULL: none; else DIR/VERTICAL/chunk-NNN per chunk
                             * (bundle + exfm_training.safetensors, written last: a
                             * checkpoint is complete when that file is there) */
    const volatile sig_atomic_t *stop; /* as rk_teacher_opts.stop */
} rk_student_opts;

typedef struct {
    int n;                  /* rows scored (all chunks of the vertical) */
    float *pctr, *label;    /* [n] progressive-validation pCTR and label (rk_malloc'd) */
    int *chunk;             /* [n] chunk of each row */
    uint32_t *id;           /* [n] example id */
    rk_metrics after_warmup;/* over rows of chunks >= warmup */
    size_t distilled;       /* training rows that had a teacher prediction */
} rk_student_report;
void rk_student_report_free(rk_student_report *r);

/* Errors of both runs: RK_ECANCELED when *stop was set; RK_ENUMERIC when the
 * loss becomes non-finite (naming the chunk, and for a student its mode and
 * the distillation knobs). */

/* Train a student of scfg (a single model; its `tower` is the backbone +
 * serving head) streaming over vertical o->vertical: for each chunk c, score
 * its rows with the current model (progressive validation: before any of
 * chunk c's labels is used), then read the teacher logits of those rows
 * from das (may be NULL in RK_EXFM_NONE) and train one pass in time order,
 * mini-batches of scfg's batch_size. Per batch (papers.md §3(a) Algorithm 1):
 * (i) adapter step on fresh labels, (ii) q = sg(sigma(adapter)), (iii)
 * student step: serving head + auxiliary head, backbone gradient = serving
 * gradient + beta x auxiliary gradient. sd: the TSV featurized for scfg.
 * *out_model (may be NULL) receives the final student (serving part). */
rk_status rk_student_run(const rk_model_cfg *scfg, const rk_dataset *sd, const rk_stream *st, rk_das *das,
                         const rk_student_opts *o, rk_student_report *rep, rk_model **out_model, rk_err *err);

#endif /* RK_DISTILL_H */
