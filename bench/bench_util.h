/* Small helpers shared by the benchmark programs. */
#ifndef FASA_BENCH_UTIL_H
#define FASA_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "kv.h"
#include "quant.h"

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v. */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static inline float bench_uniform(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return (float)((double)(*x >> 11) * 0x1.0p-53 - 0.5);
}

/* Fills the whole cache with random keys and values and marks n_tokens
 * cached: attention costs the same whatever the values are. */
/* Read bandwidth: sum a 1 GiB array with all threads; median of 5 passes. */
static inline double bench_read_bandwidth(int threads) {
    const size_t n = (size_t)1 << 28; /* floats */
    float *a = malloc(n * sizeof *a);
    if (!a) return 0.0;
#pragma omp parallel for num_threads(threads)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 1023);
    double t[5];
    volatile float sink = 0.0f;
    for (int r = 0; r < 5; r++) {
        double t0 = bench_now();
        float s = 0.0f;
#pragma omp parallel for simd reduction(+ : s) num_threads(threads)
        for (size_t i = 0; i < n; i++) s += a[i];
        t[r] = bench_now() - t0;
        sink += s;
    }
    (void)sink;
    free(a);
    return (double)(n * sizeof(float)) / bench_median(t, 5) / 1e9;
}

#endif
