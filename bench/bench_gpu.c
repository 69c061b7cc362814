/*
 * bench/bench_gpu.c — the GPU backend against the CPU on the same machine,
 * in one run (the device check of bench/device.sh).
 *
 *   bench_gpu [--seconds S] [--config configs/movielens_dcnv2.json]
 *
 * 1. Towers: the demo DCNv2 (the config given: 97-d input, 2 cross layers,
 *    MLP 128-64) and a production-size DCNv2 (32 sparse features x dim 32 =
 *    1,024-d input, 3 cross layers, MLP 1024-512-256), random weights from
 *    rk_model_create (seed fixed). CPU: rk_model_forward (OpenBLAS, all the
 *    machine's cores unless OPENBLAS_NUM_THREADS says otherwise); GPU:
 *    rk_tower_dev_forward, the path rankd --device cuda takes (tower input
 *    copied to the device through pinned memory, logits back, synchronous).
 *    Candidates/s at 200, 1,000 and 10,000 rows per batch; parity = max
 *    |pCTR_gpu - pCTR_cpu| over every batch size.
 * 2. A MiniLM-shaped encoder stack (6 layers, hidden 384, 12 heads, MLP
 *    1536, random weights) over 64 packed sentences of 8-48 tokens, built
 *    from nn.h's ops on each side (fused QKV, packed attention, output
 *    projection, residual LayerNorm, GELU MLP, residual LayerNorm; mean pool,
 *    L2 normalize): sentences/s at batch 64 and the smallest cosine between a
 *    sentence's CPU and GPU embedding.
 *
 * It reaches into rank/internal.h (rk_model_forward, rk_work) to time the
 * tower alone, as the store benchmarks reach into store/'s private header.
 * Without a GPU it prints the CPU figures and says why the GPU ones are
 * missing. Last line:
 *   bench-gpu-ops: parity_max_diff=X tower_speedup_b1000=X tower_cand_per_s_b10000=X
 *                  text_speedup_b64=X text_min_cosine=X
 */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../rank/internal.h"

static double min_seconds = 2.0;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static void print_cpu(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512], model[256] = "unknown";
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *c = strchr(line, ':');
        if (n++ == 0 && c) snprintf(model, sizeof model, "%s", c + 2);
    }
    model[strcspn(model, "\n")] = 0;
    if (f) fclose(f);
    printf("cpu: %s (%d logical CPUs); openblas core=%s threads=%d; OPENBLAS_CORETYPE=%s\n", model, n,
           openblas_get_corename(), openblas_get_num_threads(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)");
}

/* ---------------------------------------------------------------- towers */

static rk_model *make_model(const char *json) {
    rk_model_cfg cfg;
    rk_model *m = NULL;
    rk_err e = {0};
    if (rk_model_cfg_parse(json, &cfg, &e) || rk_model_create(&cfg, &m, &e)) {
        fprintf(stderr, "bench_gpu: model: %s\n", e.msg);
        exit(1);
    }
    return m;
}

static char *large_config(void) {
    static char buf[16384];
    int n = snprintf(buf, sizeof buf, "{\"name\":\"large-dcnv2\",\"label_column\":\"label\",\"features\":[");
    for (int i = 0; i < 32; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      "%s{\"name\":\"f%d\",\"kind\":\"sparse\",\"side\":\"%s\",\"table_size\":1024,\"dim\":32}",
                      i ? "," : "", i, i < 16 ? "user" : "item");
    snprintf(buf + n, sizeof buf - (size_t)n,
             "],\"tower\":{\"type\":\"dcnv2\",\"cross_layers\":3,\"hidden\":[1024,512,256]},"
             "\"train\":{\"seed\":7}}");
    return buf;
}

/* Candidates/s of the tower over B rows: CPU when td == NULL. logit[B] out. */
static double tower_rate(const rk_model *m, rk_work *w, rk_tower_dev *td, int B, float *logit) {
    rk_err e = {0};
    long iters = 0;
    double t0 = rk_now(), el = 0;
    do {
        if (td) {
            if (rk_tower_dev_forward(td, w->x0, B, logit, &e)) {
                fprintf(stderr, "bench_gpu: %s\n", e.msg);
                exit(1);
            }
        } else {
            rk_model_forward(m, w, B);
            memcpy(logit, w->logit, (size_t)B * sizeof *logit);
        }
        iters++;
        el = rk_now() - t0;
    } while (el < min_seconds || iters < 3);
    return (double)B * (double)iters / el;
}

typedef struct {
    double cpu[3], gpu[3], parity;
} tower_fig;

static const int batches[3] = {200, 1000, 10000};

static void bench_tower(const char *name, rk_model *m, rk_device *dev, tower_fig *out) {
    memset(out, 0, sizeof *out);
    for (int k = 0; k < 3; k++) {
        int B = batches[k];
        rk_work w;
        rk_err e = {0};
        if (rk_work_init(&w, m, B, 0, &e)) {
            fprintf(stderr, "bench_gpu: %s\n", e.msg);
            exit(1);
        }
        for (size_t i = 0; i < (size_t)B * (size_t)m->D; i++) w.x0[i] = frand();
        float *lc = malloc((size_t)B * sizeof *lc), *lg = malloc((size_t)B * sizeof *lg);
        out->cpu[k] = tower_rate(m, &w, NULL, B, lc);
        rk_tower_dev *td = NULL;
        if (dev && rk_tower_dev_create(m, dev, B, &td, &e) == RK_OK) {
            out->gpu[k] = tower_rate(m, &w, td, B, lg);
            for (int i = 0; i < B; i++) {
                double d = fabs((double)rk_sigmoid(lg[i]) - (double)rk_sigmoid(lc[i]));
                if (d > out->parity) out->parity = d;
            }
            rk_tower_dev_destroy(td);
        } else if (dev) {
            fprintf(stderr, "bench_gpu: %s\n", e.msg);
            exit(1);
        }
        printf("tower %-6s B=%-5d D=%-4d cpu=%.0f cand/s", name, B, m->D, out->cpu[k]);
        if (dev) printf(" gpu=%.0f cand/s speedup=%.2fx", out->gpu[k], out->gpu[k] / out->cpu[k]);
        printf("\n");
        free(lc), free(lg);
        rk_work_free(&w);
    }
}

/* ---------------------------------------------------------------- encoder stack */

enum { L_ENC = 6, D_ENC = 384, H_ENC = 12, F_ENC = 1536, N_SENT = 64 };

typedef struct {
    float *wqkv, *bqkv, *wo, *bo, *g1, *b1, *w1, *bb1, *w2, *bb2, *g2, *b2;
} enc_layer;

static size_t enc_layer_floats(void) {
    return (size_t)3 * D_ENC * D_ENC + 3 * D_ENC + (size_t)D_ENC * D_ENC + D_ENC + 4 * D_ENC +
           2 * (size_t)F_ENC * D_ENC + F_ENC + D_ENC;
}

static void point_layer(float *p, enc_layer *l) {
#define TAKE(f, n) (l->f = p, p += (n))
    TAKE(wqkv, (size_t)3 * D_ENC * D_ENC);
    TAKE(bqkv, 3 * D_ENC);
    TAKE(wo, (size_t)D_ENC * D_ENC);
    TAKE(bo, D_ENC);
    TAKE(g1, D_ENC);
    TAKE(b1, D_ENC);
    TAKE(w1, (size_t)F_ENC * D_ENC);
    TAKE(bb1, F_ENC);
    TAKE(w2, (size_t)D_ENC * F_ENC);
    TAKE(bb2, D_ENC);
    TAKE(g2, D_ENC);
    TAKE(b2, D_ENC);
#undef TAKE
}

/* Activations of T tokens: x, qkv, attn, tmp, ff. */
typedef struct {
    float *x, *qkv, *att, *tmp, *ff, *out;
} enc_act;

static void enc_cpu(const float *params, const float *x_in, const int32_t *off, int T, int max_len, enc_act *a,
                    float *scratch) {
    memcpy(a->x, x_in, (size_t)T * D_ENC * sizeof(float));
    for (int li = 0; li < L_ENC; li++) {
        enc_layer l;
        point_layer((float *)params + li * enc_layer_floats(), &l);
        rk_linear_forward(a->qkv, a->x, l.wqkv, l.bqkv, T, D_ENC, 3 * D_ENC);
        rk_attention_forward(a->att, a->qkv, off, N_SENT, H_ENC, D_ENC / H_ENC, scratch);
        rk_linear_forward(a->tmp, a->att, l.wo, l.bo, T, D_ENC, D_ENC);
        rk_layernorm_forward(a->x, a->tmp, a->x, l.g1, l.b1, T, D_ENC, 1e-12f);
        rk_linear_forward(a->ff, a->x, l.w1, l.bb1, T, D_ENC, F_ENC);
        rk_gelu_forward(a->ff, a->ff, (size_t)T * F_ENC);
        rk_linear_forward(a->tmp, a->ff, l.w2, l.bb2, T, F_ENC, D_ENC);
        rk_layernorm_forward(a->x, a->tmp, a->x, l.g2, l.b2, T, D_ENC, 1e-12f);
    }
    rk_mean_pool_forward(a->out, a->x, off, N_SENT, D_ENC);
    rk_l2_normalize(a->out, N_SENT, D_ENC, 1e-12f);
    (void)max_len;
}

static void enc_gpu(rk_device *d, const float *params, const float *x_in, const int32_t *off, int T, int max_len,
                    enc_act *a) {
    rk_device_upload(d, a->x, x_in, (size_t)T * D_ENC * sizeof(float), NULL);
    for (int li = 0; li < L_ENC; li++) {
        enc_layer l;
        point_layer((float *)params + li * enc_layer_floats(), &l);
        rk_dev_linear_forward(d, a->qkv, a->x, l.wqkv, l.bqkv, T, D_ENC, 3 * D_ENC, 0);
        rk_dev_attention_forward(d, a->att, a->qkv, off, N_SENT, T, H_ENC, D_ENC / H_ENC, max_len);
        rk_dev_linear_forward(d, a->tmp, a->att, l.wo, l.bo, T, D_ENC, D_ENC, 0);
        rk_dev_layernorm_forward(d, a->x, a->tmp, a->x, l.g1, l.b1, T, D_ENC, 1e-12f);
        rk_dev_linear_forward(d, a->ff, a->x, l.w1, l.bb1, T, D_ENC, F_ENC, 0);
        rk_dev_gelu_forward(d, a->ff, a->ff, (size_t)T * F_ENC);
        rk_dev_linear_forward(d, a->tmp, a->ff, l.w2, l.bb2, T, F_ENC, D_ENC, 0);
        rk_dev_layernorm_forward(d, a->x, a->tmp, a->x, l.g2, l.b2, T, D_ENC, 1e-12f);
    }
    rk_dev_mean_pool_forward(d, a->out, a->x, off, N_SENT, D_ENC);
    rk_dev_l2_normalize(d, a->out, N_SENT, D_ENC, 1e-12f);
}

static void *dev_buf(rk_device *d, size_t bytes, const void *host) {
    void *p = NULL;
    rk_err e = {0};
    if (rk_device_alloc(d, bytes, &p, &e) || (host && rk_device_upload(d, p, host, bytes, &e))) {
        fprintf(stderr, "bench_gpu: %s\n", e.msg);
        exit(1);
    }
    return p;
}

/* Sentences/s on each side; *min_cos the worst sentence's CPU/GPU cosine. */
static void bench_encoder(rk_device *dev, double *cpu_sps, double *gpu_sps, double *min_cos) {
    int32_t off[N_SENT + 1] = {0};
    int max_len = 0;
    for (int s = 0; s < N_SENT; s++) {
        int len = 8 + (int)((frand() + 1.0f) * 20.0f); /* 8..48 */
        off[s + 1] = off[s] + len;
        if (len > max_len) max_len = len;
    }
    const int T = off[N_SENT];
    size_t np = enc_layer_floats() * L_ENC;
    float *params = malloc(np * sizeof *params), *x_in = malloc((size_t)T * D_ENC * sizeof *x_in);
    for (size_t i = 0; i < np; i++) params[i] = 0.05f * frand();
    for (int li = 0; li < L_ENC; li++) { /* LayerNorm gains near 1 */
        enc_layer l;
        point_layer(params + li * enc_layer_floats(), &l);
        for (int j = 0; j < D_ENC; j++) l.g1[j] = 1.0f + 0.1f * frand(), l.g2[j] = 1.0f + 0.1f * frand();
    }
    for (size_t i = 0; i < (size_t)T * D_ENC; i++) x_in[i] = frand();
    enc_act a = {malloc((size_t)T * D_ENC * 4), malloc((size_t)T * 3 * D_ENC * 4), malloc((size_t)T * D_ENC * 4),
                 malloc((size_t)T * D_ENC * 4), malloc((size_t)T * F_ENC * 4), malloc((size_t)N_SENT * D_ENC * 4)};
    float *scratch = malloc(rk_attention_scratch_floats(max_len) * sizeof *scratch);
    long iters = 0;
    double t0 = rk_now(), el;
    do {
        enc_cpu(params, x_in, off, T, max_len, &a, scratch);
        iters++;
        el = rk_now() - t0;
    } while (el < min_seconds || iters < 2);
    *cpu_sps = (double)N_SENT * (double)iters / el;
    printf("encoder (MiniLM-shaped, %d sentences, %d tokens) cpu=%.1f sentences/s", N_SENT, T, *cpu_sps);
    *gpu_sps = 0, *min_cos = 0;
    if (dev) {
        float *dparams = dev_buf(dev, np * 4, params);
        int32_t *doff = dev_buf(dev, sizeof off, off);
        enc_act g = {dev_buf(dev, (size_t)T * D_ENC * 4, NULL), dev_buf(dev, (size_t)T * 3 * D_ENC * 4, NULL),
                     dev_buf(dev, (size_t)T * D_ENC * 4, NULL), dev_buf(dev, (size_t)T * D_ENC * 4, NULL),
                     dev_buf(dev, (size_t)T * F_ENC * 4, NULL), dev_buf(dev, (size_t)N_SENT * D_ENC * 4, NULL)};
        float *got = malloc((size_t)N_SENT * D_ENC * 4);
        rk_err e = {0};
        iters = 0;
        t0 = rk_now();
        do {
            enc_gpu(dev, dparams, x_in, doff, T, max_len, &g);
            if (rk_device_download(dev, got, g.out, (size_t)N_SENT * D_ENC * 4, &e) || rk_device_sync(dev, &e)) {
                fprintf(stderr, "bench_gpu: encoder: %s\n", e.msg);
                exit(1);
            }
            iters++;
            el = rk_now() - t0;
        } while (el < min_seconds || iters < 2);
        *gpu_sps = (double)N_SENT * (double)iters / el;
        *min_cos = 1.0;
        for (int s = 0; s < N_SENT; s++) {
            double dot = 0, na = 0, nb = 0;
            for (int j = 0; j < D_ENC; j++) {
                double u = got[s * D_ENC + j], v = a.out[s * D_ENC + j];
                dot += u * v, na += u * u, nb += v * v;
            }
            double c = dot / (sqrt(na * nb) + 1e-30);
            if (c < *min_cos) *min_cos = c;
        }
        printf(" gpu=%.1f sentences/s speedup=%.2fx min_cosine=%.7f", *gpu_sps, *gpu_sps / *cpu_sps, *min_cos);
        float *bufs[] = {dparams, g.x, g.qkv, g.att, g.tmp, g.ff, g.out};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) rk_device_free(dev, bufs[i]);
        rk_device_free(dev, doff);
        free(got);
    }
    printf("\n");
    free(params), free(x_in), free(scratch);
    free(a.x), free(a.qkv), free(a.att), free(a.tmp), free(a.ff), free(a.out);
}

int main(int argc, char **argv) {
    const char *config = "configs/movielens_dcnv2.json";
    static struct option opts[] = {{"seconds", 1, 0, 's'}, {"config", 1, 0, 'c'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 's') min_seconds = atof(optarg);
        else if (c == 'c') config = optarg;
        else {
            fprintf(stderr, "usage: bench_gpu [--seconds S] [--config DEMO_CONFIG.json]\n");
            return 2;
        }
    }
    if (!(min_seconds > 0 && min_seconds < 600)) {
        fprintf(stderr, "bench_gpu: --seconds must be in (0, 600)\n");
        return 2;
    }
    print_cpu();
    rk_err e = {0};
    rk_device *dev = NULL;
    if (rk_device_open("cuda:0", &dev, &e)) printf("gpu: none (%s): CPU figures only\n", e.msg);
    else printf("gpu: %s\n", rk_device_describe(dev));
    char *demo_json = NULL;
    if (rk_read_file(config, &demo_json, NULL, &e)) {
        fprintf(stderr, "bench_gpu: %s\n", e.msg);
        return 1;
    }
    rk_model *demo = make_model(demo_json), *large = make_model(large_config());
    rk_free(demo_json);
    tower_fig fd, fl;
    bench_tower("demo", demo, dev, &fd);
    bench_tower("large", large, dev, &fl);
    double cpu_sps, gpu_sps, min_cos;
    bench_encoder(dev, &cpu_sps, &gpu_sps, &min_cos);
    double parity = fd.parity > fl.parity ? fd.parity : fl.parity;
    if (dev)
        printf("bench-gpu-ops: parity_max_diff=%.3g tower_speedup_b1000=%.2f tower_cand_per_s_b10000=%.0f "
               "text_speedup_b64=%.2f text_min_cosine=%.7f\n",
               parity, fd.gpu[1] / fd.cpu[1], fd.gpu[2], gpu_sps / cpu_sps, min_cos);
    else
        printf("bench-gpu-ops: gpu=none tower_cpu_cand_per_s_b1000=%.0f text_cpu_sentences_per_s_b64=%.1f\n",
               fd.cpu[1], cpu_sps);
    rk_model_destroy(demo);
    rk_model_destroy(large);
    rk_device_close(dev);
    return 0;
}
