/* KV and label cache maintenance: appending tokens, deriving labels from K,
 * and (for benchmarks) filling a cache with reproducible random values.
 * These run once per token, not per step, so they favour plainness. */
#ifndef FASA_CUDA_CACHE_CUH
#define FASA_CUDA_CACHE_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef struct cache_args {
    __half *k, *v;            /* [n_kv][cap][D] (device or mapped host) */
    int64_t head_stride;      /* cap * D */
    int32_t n_kv, D, pos0, n; /* tokens pos0 .. pos0+n-1 */
    void *labels;             /* [n_kv][cap][n_lab], NULL when the cache has none */
    float *lab_scale;         /* [n_kv][cap] for int8 labels */
    int64_t cap;
    int32_t n_lab;
    bool int8_labels;
    const int32_t *lab_idx;   /* [n_kv][n_lab] device */
} cache_args;

/* src: [n][n_kv][D] fp32, the model's per-token layout. */
__global__ void cache_store_kernel(const cache_args a, const float *ksrc, const float *vsrc) {
    const int64_t total = (int64_t)a.n * a.n_kv * a.D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % a.D);
        const int h = (int)((i / a.D) % a.n_kv);
        const int64_t t = i / ((int64_t)a.D * a.n_kv);
        const int64_t dst = h * a.head_stride + (a.pos0 + t) * a.D + d;
        a.k[dst] = __float2half_rn(ksrc[i]);
        a.v[dst] = __float2half_rn(vsrc[i]);
    }
}

/* splitmix64 finalizer: a reproducible uniform value in [-1, 1) per index. */
__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void cache_random_kernel(const cache_args a, uint64_t seed) {
    const int64_t total = (int64_t)a.n * a.n_kv * a.D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % a.D);
        const int h = (int)((i / a.D) % a.n_kv);
        const int64_t t = i / ((int64_t)a.D * a.n_kv);
        const int64_t dst = h * a.head_stride + (a.pos0 + t) * a.D + d;
        a.k[dst] = __float2half_rn(hash_uniform(seed, 2 * (uint64_t)i));
        a.v[dst] = __float2half_rn(hash_uniform(seed, 2 * (uint64_t)i + 1));
    }
}

/* One warp per (token, KV head): label j = K[lab_idx[j]], as stored (fp16),
 * or int8 with scale max|label| / 127 (0 when the label is all zeros). */
__global__ void cache_label_kernel(const cache_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    if (w >= (int64_t)a.n * a.n_kv) return;
    const int h = (int)(w % a.n_kv);
    const int64_t t = a.pos0 + w / a.n_kv;
    const __half *krow = a.k + h * a.head_stride + t * a.D;
    const int32_t *idx = a.lab_idx + h * a.n_lab;
    const int64_t base = (h * a.cap + t) * a.n_lab;
    if (!a.int8_labels) {
        __half *dst = reinterpret_cast<__half *>(a.labels) + base;
        for (int j = lane; j < a.n_lab; j += 32) dst[j] = krow[idx[j]];
        return;
    }
    float amax = 0.f;
    for (int j = lane; j < a.n_lab; j += 32) amax = fmaxf(amax, fabsf(__half2float(krow[idx[j]])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float scale = amax / 127.f;
    int8_t *dst = reinterpret_cast<int8_t *>(a.labels) + base;
    for (int j = lane; j < a.n_lab; j += 32) {
        const float x = __half2float(krow[idx[j]]);
        dst[j] = (int8_t)(scale > 0.f ? fminf(fmaxf(rintf(x / scale), -127.f), 127.f) : 0.f);
    }
    if (lane == 0) a.lab_scale[h * a.cap + t] = scale;
}

static inline unsigned cache_grid(int64_t total, int threads) {
    int64_t b = (total + threads - 1) / threads;
    return (unsigned)(b < 65535 * 8 ? (b < 1 ? 1 : b) : 65535 * 8);
}

#endif
