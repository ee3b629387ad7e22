/* Times quant_matmul at the default model's shapes and reports fractions of
 * what the machine can do:
 *   decode  (n_tok = 1):   GB/s of weight bytes, over the bandwidth of a
 *                          large memory read measured here;
 *   prefill (n_tok = 512): GFLOP/s, over the FMA peak measured here.
 * Every figure is the median of several runs, for 1 and 2 threads.
 *
 * Single small matrices stay in cache between runs, so the decode figure
 * that matters is "model sweep": every 2-D weight of the 30 layers plus the
 * output projection, each in its own buffer, in forward order, as one
 * decoded token reads them.
 *
 * For formats with an int8 decode kernel, that kernel alone from L1 too.
 *
 * usage: bench_matmul [runs] [format ...]
 *   runs     repetitions per figure (default 7)
 *   format   block formats to time one by one (default q4_1 q8_0, the
 *            default model's); any of q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k
 *            q4_k q5_k q6_k */
#include "quant.h"
#include "quant_internal.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_matmul: cannot allocate %zu bytes\n", bytes);
        exit(1);
    }
    return p;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The block formats this bench can make weights for, and where their f16
 * fields lie in a block (the scale d; the min or dmin m, or -1 for none):
 * random bytes there could be NaN or infinity. */
typedef struct bench_format {
    uint32_t type;
    int d_at, m_at;
} bench_format;

static const bench_format bench_formats[] = {
    {FASA_TYPE_Q4_0, 0, -1},   {FASA_TYPE_Q4_1, 0, 2},   {FASA_TYPE_Q5_0, 0, -1}, {FASA_TYPE_Q5_1, 0, 2},
    {FASA_TYPE_Q8_0, 0, -1},   {FASA_TYPE_Q2_K, 80, 82}, {FASA_TYPE_Q3_K, 108, -1},
    {FASA_TYPE_Q4_K, 0, 2},    {FASA_TYPE_Q5_K, 0, 2},   {FASA_TYPE_Q6_K, 208, -1},
};
#define N_BENCH_FORMATS (sizeof bench_formats / sizeof bench_formats[0])

static const bench_format *bench_format_of(uint32_t type) {
    for (size_t i = 0; i < N_BENCH_FORMATS; i++)
        if (bench_formats[i].type == type) return &bench_formats[i];
    return NULL;
}

static const bench_format *bench_format_named(const char *name) {
    for (size_t i = 0; i < N_BENCH_FORMATS; i++)
        if (!strcmp(quant_traits_of(bench_formats[i].type)->name, name)) return &bench_formats[i];
    return NULL;
}

/* Random weights of a block format: random quants, small finite scales (so
 * no NaN/inf slows or skews anything). */
static void *make_weights(uint32_t type, int64_t rows, int64_t cols, uint64_t *s) {
    const quant_traits *t = quant_traits_of(type);
    const bench_format *f = bench_format_of(type);
    size_t bytes = (size_t)rows * quant_row_bytes(type, cols);
    uint8_t *w = xmalloc(bytes);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(rng_next(s) >> 56);
    for (size_t b = 0; b < bytes; b += t->block_bytes) {
        uint16_t d = fasa_f32_to_f16(0.01f * (float)(1 + rng_next(s) % 100));
        uint16_t m = fasa_f32_to_f16(-0.05f * (float)(1 + rng_next(s) % 10));
        memcpy(w + b + f->d_at, &d, 2);
        if (f->m_at >= 0) memcpy(w + b + f->m_at, &m, 2);
    }
    return w;
}

static float *make_x(int64_t n, uint64_t *s) {
    float *x = xmalloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((double)(rng_next(s) >> 11) * 0x1.0p-52 - 1.0);
    return x;
}

/* ---- physical limits ----------------------------------------------------- */

/* Read bandwidth: sum of a 1 GiB float array, bigger than any cache. The
 * sum is kept in 32 independent lanes so that adds are not the limit. */
#define BW_LANES 32
static double measure_bandwidth(int n_threads, int runs) {
    const int64_t n = (int64_t)1 << 28;
    float *a = xmalloc((size_t)n * sizeof *a);
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double t[32], sink = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = now_s(), sum = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : sum)
        {
            int ith = omp_get_thread_num(), nth = omp_get_num_threads();
            int64_t blocks = n / BW_LANES;
            int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
            float acc[BW_LANES] = {0};
            for (int64_t b = b0; b < b1; b++)
                for (int j = 0; j < BW_LANES; j++) acc[j] += a[b * BW_LANES + j];
            for (int j = 0; j < BW_LANES; j++) sum += acc[j];
        }
        t[r] = now_s() - t0;
        sink += sum;
    }
    if (sink == 42) printf("!");
    free(a);
    return (double)n * sizeof(float) / median(t, runs) * 1e-9;
}

/* FMA peak: 12 independent chains of the widest FMA this build has, enough
 * to cover its latency on two ports. Intrinsics, because the compiler's own
 * vectorizer may prefer narrower vectors than the matmul kernels use. */
#if defined(__AVX512F__)
typedef __m512 peak_vec;
#define PEAK_LANES 16
#define PEAK_SET1 _mm512_set1_ps
#define PEAK_FMA _mm512_fmadd_ps
#define PEAK_SUM _mm512_reduce_add_ps
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 peak_vec;
#define PEAK_LANES 8
#define PEAK_SET1 _mm256_set1_ps
#define PEAK_FMA _mm256_fmadd_ps
static float PEAK_SUM(__m256 v) {
    float f[8], s = 0;
    _mm256_storeu_ps(f, v);
    for (int i = 0; i < 8; i++) s += f[i];
    return s;
}
#else
typedef float peak_vec;
#define PEAK_LANES 1
#define PEAK_SET1(a) (a)
#define PEAK_FMA fmaf
#define PEAK_SUM(a) (a)
#endif
#define PEAK_CHAINS 12

static double measure_fma_peak(int n_threads, int runs) {
    const int64_t iters = 50 * 1000 * 1000;
    double t[32], sink = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = now_s(), total = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
        {
            peak_vec acc[PEAK_CHAINS];
            peak_vec m = PEAK_SET1(0.999999f), c = PEAK_SET1(1e-7f * (float)(1 + omp_get_thread_num()));
            for (int k = 0; k < PEAK_CHAINS; k++) acc[k] = PEAK_SET1((float)k);
            for (int64_t i = 0; i < iters; i++) {
                /* unrolled, or the chains would go through memory */
#pragma GCC unroll 16
                for (int k = 0; k < PEAK_CHAINS; k++) acc[k] = PEAK_FMA(acc[k], m, c);
            }
            for (int k = 0; k < PEAK_CHAINS; k++) total += PEAK_SUM(acc[k]);
        }
        t[r] = now_s() - t0;
        sink += total;
    }
    if (sink == 42) printf("!");
    return 2.0 * (double)iters * PEAK_CHAINS * PEAK_LANES * n_threads / median(t, runs) * 1e-9;
}

/* ---- quant_matmul ------------------------------------------------------ */

typedef struct shape {
    const char *what;
    int64_t rows, cols;
} shape;

/* The model's 2-D weights as rows x cols (GGUF dims reversed), then the
 * FFN of the long-context model (Qwen2.5-Coder-1.5B), whose rows are whole
 * blocks of the 256-element formats as well (576 is not). */
static const shape shapes[] = {
    {"attn_q/o", 576, 576},           {"attn_k/v", 192, 576},       {"ffn_gate/up", 1536, 576},
    {"ffn_down", 576, 1536},          {"output", 49152, 576},       {"1.5B ffn_gate/up", 8960, 1536},
    {"1.5B ffn_down", 1536, 8960},
};

typedef void (*matmul_fn)(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x,
                          int64_t n_tok, float *y, int n_threads);

static double time_matmul(matmul_fn mm, uint32_t type, const void *w, const shape *sh, const float *x,
                          int64_t n_tok, float *y, int n_threads, int runs) {
    double t[32];
    mm(type, w, sh->rows, sh->cols, x, n_tok, y, n_threads); /* warm-up */
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        mm(type, w, sh->rows, sh->cols, x, n_tok, y, n_threads);
        t[r] = now_s() - t0;
    }
    return median(t, runs);
}

static void bench_shapes(uint32_t type, int n_threads, int runs, double bw, double peak, uint64_t *s) {
    const int64_t prefill = 512;
    const char *name = quant_traits_of(type)->name;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *sh = &shapes[i];
        if (!quant_row_bytes(type, sh->cols)) {
            printf("%-5s %-16s %6lld x %-5lld    | %lld columns are not whole blocks: skipped\n", name,
                   sh->what, (long long)sh->rows, (long long)sh->cols, (long long)sh->cols);
            continue;
        }
        void *w = make_weights(type, sh->rows, sh->cols, s);
        float *x = make_x(prefill * sh->cols, s);
        float *y = xmalloc((size_t)(prefill * sh->rows) * sizeof *y);
        double bytes = (double)sh->rows * (double)quant_row_bytes(type, sh->cols);
        double t1 = time_matmul(quant_matmul, type, w, sh, x, 1, y, n_threads, runs);
        double t8 = time_matmul(quant_matmul_x8, type, w, sh, x, 1, y, n_threads, runs);
        double tp = time_matmul(quant_matmul, type, w, sh, x, prefill, y, n_threads, runs > 5 ? 5 : runs);
        double gbs = bytes / t1 * 1e-9, gbs8 = bytes / t8 * 1e-9, gflops = 2.0 * sh->rows * sh->cols * prefill / tp * 1e-9;
        printf("%-5s %-16s %6lld x %-5lld %dT | decode %8.1f us %7.1f GB/s (%4.0f%% bw) | int8 x %8.1f us %7.1f GB/s "
               "(%4.0f%% bw) | prefill-512 %8.2f ms %7.1f GFLOP/s (%3.0f%% peak)\n",
               name, sh->what, (long long)sh->rows, (long long)sh->cols, n_threads, t1 * 1e6, gbs,
               100 * gbs / bw, t8 * 1e6, gbs8, 100 * gbs8 / bw, tp * 1e3, gflops, 100 * gflops / peak);
        free(w);
        free(x);
        free(y);
    }
}

/* One decoded token's worth of weight reads: 30 layers of q, k, v, o, gate,
 * up, down (Q4_1) and the Q8_0 output projection, in forward order. */
static void bench_model_sweep(int n_threads, int runs, double bw, uint64_t *s) {
    enum { LAYERS = 30, PER_LAYER = 7 };
    const shape *layer[PER_LAYER] = {&shapes[0], &shapes[1], &shapes[1], &shapes[0],
                                     &shapes[2], &shapes[2], &shapes[3]};
    void *w[LAYERS * PER_LAYER];
    double bytes = 0;
    for (int i = 0; i < LAYERS * PER_LAYER; i++) {
        const shape *sh = layer[i % PER_LAYER];
        w[i] = make_weights(FASA_TYPE_Q4_1, sh->rows, sh->cols, s);
        bytes += (double)sh->rows * (double)quant_row_bytes(FASA_TYPE_Q4_1, sh->cols);
    }
    void *out = make_weights(FASA_TYPE_Q8_0, shapes[4].rows, shapes[4].cols, s);
    bytes += (double)shapes[4].rows * (double)quant_row_bytes(FASA_TYPE_Q8_0, shapes[4].cols);
    float *x = make_x(1536, s), *y = xmalloc(49152 * sizeof *y);

    double t[32];
    for (int r = -1; r < runs; r++) { /* r = -1: warm-up */
        double t0 = now_s();
        for (int i = 0; i < LAYERS * PER_LAYER; i++) {
            const shape *sh = layer[i % PER_LAYER];
            quant_matmul(FASA_TYPE_Q4_1, w[i], sh->rows, sh->cols, x, 1, y, n_threads);
        }
        quant_matmul(FASA_TYPE_Q8_0, out, shapes[4].rows, shapes[4].cols, x, 1, y, n_threads);
        if (r >= 0) t[r] = now_s() - t0;
    }
    double tm = median(t, runs), gbs = bytes / tm * 1e-9;
    printf("model sweep (%.1f MB of weights per token) %dT: %.2f ms/token, %.1f GB/s (%.0f%% of bw)\n",
           bytes * 1e-6, n_threads, tm * 1e3, gbs, 100 * gbs / bw);
    for (int i = 0; i < LAYERS * PER_LAYER; i++) free(w[i]);
    free(out);
    free(x);
    free(y);
}

/* An int8 decode kernel alone (quant_dot_x8_of), one thread: 16 rows of
 * 1536 columns (14-20 KB) that stay in L1, each dotted KERNEL_REPS times per
 * run, so that the figure is the kernel's instruction throughput and not
 * the memory's; a full product runs at most this fast per thread. */
static void bench_x8_kernel(uint32_t type, int runs, uint64_t *s) {
    enum { ROWS = 16, COLS = 1536, KERNEL_REPS = 2000 };
    const quant_dot_x8_fn dot = quant_dot_x8_of(type);
    if (!dot) return;
    void *w = make_weights(type, ROWS, COLS, s);
    float *x = make_x(COLS, s);
    int8_t *q = xmalloc(COLS);
    float *d = xmalloc(COLS / 32 * sizeof *d), *s16 = xmalloc(COLS / 16 * sizeof *s16),
          *s32 = xmalloc(COLS / 32 * sizeof *s32);
    const quant_x8 x8 = {q, d, s16, s32};
    quant_x8_quantize(x, COLS, &x8);
    const size_t row_bytes = quant_row_bytes(type, COLS);
    volatile float sink = 0; /* keeps the dot products from being optimized away */
    double t[32];
    for (int r = -1; r < runs; r++) { /* r = -1: warm-up */
        double t0 = now_s();
        float acc = 0;
        for (int it = 0; it < KERNEL_REPS; it++)
            for (int row = 0; row < ROWS; row++) acc += dot((const uint8_t *)w + row * row_bytes, &x8, COLS);
        sink += acc;
        if (r >= 0) t[r] = now_s() - t0;
    }
    const double gbs = (double)KERNEL_REPS * ROWS * (double)row_bytes / median(t, runs) * 1e-9;
    printf("%-5s int8 kernel from L1, %d x %d, 1T: %.1f GB/s of weights\n", quant_traits_of(type)->name, ROWS, COLS,
           gbs);
    free(w), free(x), free(q), free(d), free(s16), free(s32);
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    if (runs < 1 || runs > 32) {
        fprintf(stderr, "bench_matmul: runs must be 1..32, got '%s'\n", argv[1]);
        return 1;
    }
    uint32_t types[N_BENCH_FORMATS] = {FASA_TYPE_Q4_1, FASA_TYPE_Q8_0};
    size_t n_types = 2;
    if (argc - 2 > (int)N_BENCH_FORMATS) {
        fprintf(stderr, "bench_matmul: at most %zu formats, got %d\n", N_BENCH_FORMATS, argc - 2);
        return 1;
    }
    if (argc > 2) n_types = 0;
    for (int i = 2; i < argc; i++) {
        const bench_format *f = bench_format_named(argv[i]);
        if (!f) {
            fprintf(stderr, "bench_matmul: unknown format '%s'; give some of q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k "
                            "q4_k q5_k q6_k\n", argv[i]);
            return 1;
        }
        types[n_types++] = f->type;
    }
    uint64_t seed = 1;
    double bw[3], peak[3];
    for (int th = 1; th <= 2; th++) {
        bw[th] = measure_bandwidth(th, runs);
        peak[th] = measure_fma_peak(th, runs);
        printf("machine %dT: read bandwidth %.1f GB/s (1 GiB sum), FMA peak %.1f GFLOP/s\n", th, bw[th],
               peak[th]);
    }
    for (int th = 1; th <= 2; th++) bench_model_sweep(th, runs, bw[th], &seed);
    for (size_t i = 0; i < n_types; i++) {
        bench_x8_kernel(types[i], runs, &seed);
        for (int th = 1; th <= 2; th++) bench_shapes(types[i], th, runs, bw[th], peak[th], &seed);
    }
    return 0;
}
