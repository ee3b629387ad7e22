/* The forward pass's small kernels on the GPU: embedding rows, RMSNorm
 * (with the residual add before it), RoPE, SwiGLU, and next-token selection
 * (greedy argmax and the sampler's top-k / top-p / temperature draw). Each
 * mirrors the CPU's code in forward.c and sampler.c, so that both backends
 * compute the same function; the matrix products are in qmatmul.cuh,
 * attention in attn.cuh.
 * The kernels the decode step launches run as programmatic dependent
 * launches (launch.cuh): each waits for its predecessor before touching
 * activations and lets its successor launch at once, so that the next
 * product's weight loads start while a small kernel runs. */
#ifndef FASA_CUDA_MODEL_OPS_CUH
#define FASA_CUDA_MODEL_OPS_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "qmatmul.cuh"

/* x[t] = the embedding row of tokens[t]: one thread per group of 8. */
template <int T>
__global__ void embed_kernel(const uint8_t *table, int64_t row_bytes, int32_t E, const int32_t *tokens, int32_t n,
                             float *x) {
    using F = qfmt<T>;
    pdl_enter();
    const int64_t groups = (int64_t)n * (E / 8);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < groups; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / (E / 8), g = i % (E / 8);
        const uint8_t *row = table + (int64_t)tokens[t] * row_bytes;
        F::dequant8(row + (g / (F::elems / 8)) * F::bytes, (int)(g % (F::elems / 8)), x + t * E + 8 * g);
    }
}

/* Block sum of v over blockDim.x threads (a multiple of 32, at most 1024). */
__device__ __forceinline__ float block_sum(float v, float *scratch32) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) scratch32[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? scratch32[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    return v;
}

/* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w: one CTA per token, after
 * x[t] += add[t] when add is given (the residual of the block before,
 * folded into this launch). With q8, out is also rounded to int8 in groups
 * of 32 (qmm_round32) for the products that read it; E is then a multiple
 * of 32 and blockDim.x a multiple of 32, so every warp rounds whole groups. */
__global__ void norm_kernel(float *x, const float *add, const float *w, float *out, int32_t E, float eps, int8_t *q8,
                            float *d8) {
    __shared__ float s[32];
    pdl_enter();
    float *xr = x + (int64_t)blockIdx.x * E;
    const float *ar = add ? add + (int64_t)blockIdx.x * E : nullptr;
    float ss = 0.f;
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        const float v = ar ? xr[i] + ar[i] : xr[i];
        if (ar) xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, s);
    const float r = rsqrtf(ss / E + eps);
    float *o = out + (int64_t)blockIdx.x * E;
    for (int i = threadIdx.x; i < E; i += blockDim.x) {
        const float v = xr[i] * r * w[i];
        o[i] = v;
        if (q8) qmm_round32(v, i & 31, q8 + (i & ~31), d8 + i / 32);
    }
}

/* RoPE on n tokens of q [n][n_heads][D] and k [n][n_kv][D] at positions
 * pos0 ..; the angle in double, as on the CPU (at large positions a float
 * product loses the low bits that set the fast frequencies' phase).
 * half_split: pairs (i, i + D/2), else (2i, 2i + 1). One thread per pair. */
__global__ void rope_kernel(float *q, float *k, int32_t n, int32_t n_heads, int32_t n_kv, int32_t D, int32_t pos0,
                            const float *inv_freq, int half_split) {
    pdl_enter();
    const int32_t heads = n_heads + n_kv;
    const int64_t pairs = (int64_t)n * heads * (D / 2);
    for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < pairs; p += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(p % (D / 2));
        const int64_t th = p / (D / 2), t = th / heads;
        const int32_t h = (int32_t)(th % heads);
        float *v = h < n_heads ? q + (t * n_heads + h) * D : k + (t * n_kv + h - n_heads) * D;
        const int a = half_split ? i : 2 * i, b = half_split ? i + D / 2 : 2 * i + 1;
        double sd, cd;
        sincos((double)(pos0 + t) * (double)inv_freq[i], &sd, &cd);
        const float c = (float)cd, s = (float)sd, x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

/* gate = silu(gate) * up, as the CPU writes it. */
__global__ void swiglu_kernel(float *gate, const float *up, int64_t n) {
    pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* ---- next-token selection ------------------------------------------- */

/* The sampler's generator and draw, on the device (sampler.c). */
typedef struct sample_state {
    uint64_t rng;     /* splitmix64 state, advanced like the host sampler's */
    int32_t token;    /* the chosen token */
} sample_state;

__device__ __forceinline__ double splitmix_uniform(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* Greedy: the largest logit, the lowest id among equals. One CTA of 1024. */
__global__ void argmax_kernel(const float *logits, int32_t n, sample_state *out) {
    pdl_enter();
    __shared__ float sv[32];
    __shared__ int32_t si[32];
    float best = -INFINITY;
    int32_t id = 0x7fffffff;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x)
        if (logits[i] > best || (logits[i] == best && i < id)) best = logits[i], id = i;
    for (int o = 16; o > 0; o >>= 1) {
        const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
        const int32_t i2 = __shfl_xor_sync(0xffffffffu, id, o);
        if (b2 > best || (b2 == best && i2 < id)) best = b2, id = i2;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = best, si[warp] = id;
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
        id = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float b2 = __shfl_xor_sync(0xffffffffu, best, o);
            const int32_t i2 = __shfl_xor_sync(0xffffffffu, id, o);
            if (b2 > best || (b2 == best && i2 < id)) best = b2, id = i2;
        }
        if (lane == 0) out->token = id;
    }
}

/* Order-preserving key of a logit for a descending sort. */
__global__ void sample_keys_kernel(const float *logits, int32_t n, uint32_t *keys, int32_t *ids) {
    for (int32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t u = __float_as_uint(logits[i]);
        keys[i] = ~(u & 0x80000000u ? ~u : u | 0x80000000u); /* larger logit -> smaller key */
        ids[i] = i;
    }
}

/* The draw over candidates sorted by (logit descending, id ascending): the
 * first `keep` (top-k), softmax in double at temperature temp, cut at the
 * nucleus top_p, one uniform draw scaled by the kept mass, as sampler.c does
 * it. One CTA of 1024 threads; the scans run in chunks of 1024 candidates. */
__global__ void sample_draw_kernel(const float *logits, const int32_t *sorted_ids, int32_t keep, float temp,
                                   float top_p, sample_state *st) {
    __shared__ double part[1024];
    __shared__ double total_s;
    __shared__ int32_t cut_s;
    const int tid = threadIdx.x;
    const double mx = logits[sorted_ids[0]];
    /* total of exp((l - mx) / temp) over the kept candidates */
    double tot = 0.0;
    for (int32_t i = tid; i < keep; i += blockDim.x) tot += exp(((double)logits[sorted_ids[i]] - mx) / temp);
    part[tid] = tot;
    __syncthreads();
    for (int s = 512; s > 0; s >>= 1) {
        if (tid < s) part[tid] += part[tid + s];
        __syncthreads();
    }
    if (tid == 0) total_s = part[0], cut_s = keep;
    __syncthreads();
    /* The nucleus: the first i with cumulative probability >= top_p. */
    double carry = 0.0;
    for (int32_t base = 0; base < keep && cut_s == keep; base += blockDim.x) {
        const int32_t i = base + tid;
        const double pr = i < keep ? exp(((double)logits[sorted_ids[i]] - mx) / temp) : 0.0;
        part[tid] = pr;
        __syncthreads();
        /* inclusive scan, kept sequential per chunk for the host's summation order */
        if (tid == 0) {
            double c = carry;
            for (int k = 0; k < (int)blockDim.x && base + k < keep; ++k) {
                c += part[k] / total_s;
                if (c >= top_p && cut_s == keep) cut_s = base + k + 1;
            }
            carry = c;
        }
        __syncthreads();
    }
    if (tid == 0) {
        double mass = 0.0;
        for (int32_t i = 0; i < cut_s; ++i) mass += exp(((double)logits[sorted_ids[i]] - mx) / temp);
        double r = splitmix_uniform(&st->rng) * mass;
        int32_t pick = cut_s - 1;
        for (int32_t i = 0; i < cut_s; ++i) {
            r -= exp(((double)logits[sorted_ids[i]] - mx) / temp);
            if (r < 0.0) {
                pick = i;
                break;
            }
        }
        st->token = sorted_ids[pick];
    }
}

#endif
