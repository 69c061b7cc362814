/*
 * bench/roofline.c — the C side of `make bench-roofline` (bench/bench_roofline.sh).
 *
 *   roofline info                     CPU model, OpenBLAS core, GEMM kernel in use
 *   roofline peak                     one core's FMA peak, GFLOP/s
 *   roofline gemm M K N               OpenBLAS sgemm (x W^T) vs rk_gemm_forward (and its
 *                                     AVX2 kernel on an AVX-512 CPU), GFLOP/s
 *   roofline tower BUNDLE B SECONDS   the tower alone (rk_tower_run): candidates/s, GFLOP/s
 *   roofline tower-dump BUNDLE X0.f32 B OUT.f32
 *                                     logits of B tower inputs (raw float32 [B, D]),
 *                                     for the parity check of the ONNX export
 *
 * Figures print as "key=value" on one line. Times are this process's CPU
 * seconds (it is single-threaded): on a shared machine the time another
 * process holds the core is not counted against either side. The FMA peak runs independent
 * fma chains (16 x 512-bit and 12 x 256-bit accumulators, more than the FMA
 * latency x throughput of any current core) and takes the faster ISA: the
 * peak the machine can reach on one core. Every timing loop is bounded by
 * time and by a repetition cap.
 */
#include <cblas.h>
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn.h"
#include "rank.h"

char *openblas_get_corename(void);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* on-core time: the machine is shared */
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void cpu_model(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) || !c) continue;
        snprintf(buf, cap, "%s", c + 2);
        buf[strcspn(buf, "\n")] = 0;
        break;
    }
    fclose(f);
}

#define PEAK_ITERS 20000000L

__attribute__((target("avx512f"))) static double peak512(void) {
    __m512 c[16], a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 16; i++) c[i] = _mm512_set1_ps((float)i);
    double t0 = now_s();
    for (long it = 0; it < PEAK_ITERS; it++)
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) c[i] = _mm512_fmadd_ps(c[i], a, b);
    double t = now_s() - t0;
    float s = 0;
    for (int i = 0; i < 16; i++) s += _mm512_reduce_add_ps(c[i]);
    if (s == 12345.0f) puts(""); /* keeps the chains */
    return 2.0 * 16 * 16 * PEAK_ITERS / t / 1e9;
}

__attribute__((target("avx2,fma"))) static double peak256(void) {
    __m256 c[12], a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_ps((float)i);
    double t0 = now_s();
    for (long it = 0; it < PEAK_ITERS; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) c[i] = _mm256_fmadd_ps(c[i], a, b);
    double t = now_s() - t0;
    float v[8], s = 0;
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(v, c[i]);
        for (int j = 0; j < 8; j++) s += v[j];
    }
    if (s == 12345.0f) puts("");
    return 2.0 * 12 * 8 * PEAK_ITERS / t / 1e9;
}

static int cmd_peak(void) {
    __builtin_cpu_init();
    double p512 = __builtin_cpu_supports("avx512f") ? peak512() : 0;
    double p256 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? peak256() : 0;
    double best = p512 > p256 ? p512 : p256;
    printf("fma_peak_gflops=%.2f avx512_gflops=%.2f avx2_gflops=%.2f\n", best, p512, p256);
    return 0;
}

static float *randv(size_t n, unsigned *seed) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) exit(1);
    for (size_t i = 0; i < n; i++) v[i] = (float)rand_r(seed) / RAND_MAX - 0.5f;
    return v;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* OpenBLAS, rk_gemm's kernel in use and, on an AVX-512 CPU, its AVX2
 * kernel too (the fallback, measured on every machine), interleaved, 0.2 s
 * each, 5 rounds; medians. */
static int cmd_gemm(int M, int K, int N) {
    unsigned seed = 16;
    float *x = randv((size_t)M * K, &seed), *W = randv((size_t)N * K, &seed), *b = randv((size_t)N, &seed);
    float *y = malloc((size_t)M * N * sizeof *y), *Wp = malloc(rk_gemm_packed_floats(K, N) * sizeof *Wp);
    if (!y || !Wp) return 1;
    rk_gemm_pack(Wp, W, N, K);
    const rk_gemm_kernel in_use = rk_gemm_kernel_get();
    const int runs = in_use == RK_GEMM_AVX512 ? 3 : 2; /* OpenBLAS, in use[, AVX2] */
    double flop = 2.0 * M * K * N, g[3][5];
    for (int r = 0; r < 5; r++)
        for (int which = 0; which < runs; which++) {
            if (which) rk_gemm_kernel_set(which == 1 ? in_use : RK_GEMM_AVX2);
            long n = 0;
            double t0 = now_s(), t;
            do {
                if (which == 0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
                else
                    rk_gemm_forward(y, x, Wp, b, M, K, N, RK_EPI_BIAS, NULL, NULL);
                n++;
                t = now_s() - t0;
            } while (t < 0.2 && n < 1000000);
            g[which][r] = flop * n / t / 1e9;
        }
    rk_gemm_kernel_set(in_use);
    for (int w = 0; w < runs; w++) qsort(g[w], 5, sizeof g[w][0], cmp_d);
    printf("gemm M=%d K=%d N=%d openblas_gflops=%.2f rk_gemm_gflops=%.2f", M, K, N, g[0][2], g[1][2]);
    if (runs == 3) printf(" rk_gemm_avx2_gflops=%.2f", g[2][2]);
    printf("\n");
    free(x), free(W), free(b), free(y), free(Wp);
    return 0;
}

/* FLOPs of one candidate through the tower (multiply-adds x 2). */
static double tower_flop(const rk_model_cfg *c) {
    double D = rk_model_cfg_input_dim(c), f = 2.0 * c->tower.n_cross * D * D, prev = D;
    for (int i = 0; i < c->tower.n_hidden; i++) {
        f += 2.0 * prev * c->tower.hidden[i];
        prev = c->tower.hidden[i];
    }
    return f + 2.0 * prev;
}

static int open_tower(const char *bundle, int B, rk_model **m, rk_tower_run **t) {
    rk_err e = {0};
    if (rk_model_open(bundle, m, &e) || rk_tower_run_create(*m, B, t, &e)) {
        fprintf(stderr, "roofline: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int cmd_tower(const char *bundle, int B, double seconds) {
    rk_model *m;
    rk_tower_run *t;
    if (open_tower(bundle, B, &m, &t)) return 1;
    const rk_model_cfg *c = rk_model_config(m);
    int D = rk_model_cfg_input_dim(c);
    float *x0 = rk_tower_run_input(t);
    unsigned seed = 16;
    for (size_t i = 0; i < (size_t)B * D; i++) x0[i] = (float)rand_r(&seed) / RAND_MAX - 0.5f;
    rk_tower_run_forward(t, B); /* warm */
    long n = 0;
    double t0 = now_s(), el;
    do {
        rk_tower_run_forward(t, B);
        n++;
        el = now_s() - t0;
    } while (el < seconds && n < 10000000);
    double cps = (double)B * n / el;
    printf("tower B=%d D=%d flop_per_candidate=%.0f candidates_per_s=%.1f gflops=%.2f kernel=%s\n", B, D, tower_flop(c),
           cps, cps * tower_flop(c) / 1e9, rk_gemm_kernel_name(rk_gemm_kernel_get()));
    rk_tower_run_destroy(t);
    rk_model_destroy(m);
    return 0;
}

static int cmd_tower_dump(const char *bundle, const char *in, int B, const char *out) {
    rk_model *m;
    rk_tower_run *t;
    if (open_tower(bundle, B, &m, &t)) return 1;
    size_t D = (size_t)rk_model_cfg_input_dim(rk_model_config(m));
    FILE *f = fopen(in, "rb");
    int ok = f && fread(rk_tower_run_input(t), sizeof(float), (size_t)B * D, f) == (size_t)B * D;
    if (f) fclose(f);
    if (!ok) {
        fprintf(stderr, "roofline: %s: expected %zu float32 values\n", in, (size_t)B * D);
        return 1;
    }
    const float *logit = rk_tower_run_forward(t, B);
    FILE *o = fopen(out, "wb");
    ok = o && fwrite(logit, sizeof(float), (size_t)B, o) == (size_t)B;
    if (o && fclose(o)) ok = 0;
    rk_tower_run_destroy(t);
    rk_model_destroy(m);
    if (!ok) fprintf(stderr, "roofline: %s: write failed\n", out);
    return !ok;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "info")) {
        char cpu[256];
        cpu_model(cpu, sizeof cpu);
        const char *ct = getenv("OPENBLAS_CORETYPE");
        printf("cpu=\"%s\" openblas_core=%s openblas_coretype_env=%s rk_gemm_kernel=%s\n", cpu, openblas_get_corename(),
               ct ? ct : "(unset)", rk_gemm_kernel_name(rk_gemm_kernel_get()));
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "peak")) return cmd_peak();
    if (argc == 5 && !strcmp(argv[1], "gemm")) return cmd_gemm(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "tower") && atoi(argv[3]) > 0) return cmd_tower(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "tower-dump") && atoi(argv[4]) > 0)
        return cmd_tower_dump(argv[2], argv[3], atoi(argv[4]), argv[5]);
    fprintf(stderr, "usage: roofline info | peak | gemm M K N | tower BUNDLE B SECONDS | tower-dump BUNDLE X0.f32 B OUT.f32\n");
    return 2;
}
