/* Split-K decode attention on tensor cores, dense or over gathered rows.
 *
 * One CTA handles one "unit" (a KV head with the query heads that share it,
 * or one query head when each head selects its own tokens) over one chunk of
 * tokens; its warps take 16-token steps. A step is two m16n8k16 MMAs per 16
 * dimensions for Q.K^T and one per 8 dimensions for P.V, fed straight from
 * 16-byte global loads: no shared memory, no shuffles on the data path.
 *
 * Why it needs no transposes: the reduction dimension of an MMA may be
 * permuted freely as long as both operands agree. For Q.K^T each thread loads
 * 8 contiguous dimensions of one K row and hands them to the MMA as the
 * k-slots it owns; Q's fragment is built with the same permutation. For P.V
 * the k-slots are tokens: a thread owns tokens 2c, 2c+1, 2c+8, 2c+9 of the
 * step (c = lane % 4), loads those 4 V rows and pairs them with PRMT; and
 * these are exactly the tokens whose scores the Q.K^T accumulator left in
 * that thread, so P goes from accumulator to operand without moving.
 *
 * Precision: fp32 q and the fp32 probabilities are each split into fp16
 * hi + lo parts that occupy rows g and g+8 of the 16-row A operand (a group
 * has at most 8 query heads), so one MMA yields both halves and the sum keeps
 * about 22 bits; accumulation is fp32.
 *
 * Rows g >= heads-per-unit of the A operand are zero padding. The softmax is
 * online, in base 2 (q is pre-scaled by softmax_scale * log2 e). A CTA's warps
 * merge through shared memory; CTAs of one unit merge in the last CTA to
 * arrive (an atomic arrival counter), which saves a second launch. */
#ifndef FASA_CUDA_ATTN_CUH
#define FASA_CUDA_ATTN_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "launch.cuh"
#include "mma.cuh"

#define ATTN_FULL_MASK 0xffffffffu
#define ATTN_MAX_WARPS 8
#define ATTN_MAX_SPLITS 512

typedef struct attn_args {
    const __half *k, *v;     /* cache base: [n_kv][cap][D] fp16 (device or mapped host) */
    int64_t head_stride;     /* elements between KV heads */
    const float *q;          /* [n_heads][D] */
    float *out;              /* [n_heads][D] */
    const int32_t *rows;     /* gather: [n_units][rows_stride] token indices; NULL = dense */
    int32_t rows_stride;
    int32_t n_tokens;        /* tokens attended per unit */
    int32_t n_rows;          /* cached tokens: gathered indices are clamped below it */
    int32_t group;           /* query heads per KV head */
    int32_t hpu;             /* query heads per unit: group, or 1 */
    int32_t chunk;           /* tokens per CTA, a multiple of 16 */
    int32_t n_splits;        /* CTAs per unit: ceil(n_tokens / chunk) */
    float scale_log2;        /* softmax scale * log2(e) */
    float *part_o;           /* [n_units][n_splits][hpu][D] unnormalized partial outputs */
    float2 *part_ml;         /* [n_units][n_splits][hpu] (running max, denominator) */
    unsigned *arrivals;      /* [n_units]; zero before a launch, left zero after */
} attn_args;

/* x0, x1 -> fp16 pairs (hi, lo) with hi + lo = x to about 22 bits. */
__device__ __forceinline__ void split_pair(float x0, float x1, uint32_t &hi, uint32_t &lo) {
    const __half2 h = __floats2half2_rn(x0, x1);
    const float2 hf = __half22float2(h);
    hi = half2_bits(h);
    lo = half2_bits(__floats2half2_rn(x0 - hf.x, x1 - hf.y));
}

__device__ __forceinline__ uint32_t u4_word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* Plain 16-byte load: valid on device memory and on mapped pinned host memory. */
__device__ __forceinline__ uint4 ld16(const void *p) { return *reinterpret_cast<const uint4 *>(p); }

/* Q as the A operand, k-step ks covering dims L*32 + c*8 + hh*4 + {0..3}
 * (L = ks/2, hh = ks%2): the dims a K row load hands this thread. */
template <int D>
__device__ __forceinline__ void attn_load_q(const float *qrow, bool live, float scale, int c,
                                            uint32_t (&qf)[D / 16][4]) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
        const int d0 = (ks >> 1) * 32 + c * 8 + (ks & 1) * 4;
        float4 x = live ? *reinterpret_cast<const float4 *>(qrow + d0) : make_float4(0.f, 0.f, 0.f, 0.f);
        split_pair(x.x * scale, x.y * scale, qf[ks][0], qf[ks][1]);
        split_pair(x.z * scale, x.w * scale, qf[ks][2], qf[ks][3]);
    }
}

/* The K and V rows one 16-token step of a warp needs, in registers. */
template <int D>
struct attn_rows {
    uint4 k0[D / 32], k1[D / 32], v[4][D / 64];
    int rv[4]; /* V-row tokens 2c, 2c+1, 2c+8, 2c+9; -1 past the end */
};

/* Issues a step's loads. idx is this lane's token row (lanes 0..15 hold the
 * step's 16 rows; -1 past the end). Q.K^T needs rows g and 8+g, P.V rows
 * 2c, 2c+1, 2c+8, 2c+9. */
template <int D>
__device__ __forceinline__ void attn_load(const __half *K, const __half *V, int idx, int g, int c, attn_rows<D> &r) {
    const uint4 z4 = make_uint4(0u, 0u, 0u, 0u);
    const int rk0 = __shfl_sync(ATTN_FULL_MASK, idx, g);
    const int rk1 = __shfl_sync(ATTN_FULL_MASK, idx, 8 + g);
    r.rv[0] = __shfl_sync(ATTN_FULL_MASK, idx, 2 * c);
    r.rv[1] = __shfl_sync(ATTN_FULL_MASK, idx, 2 * c + 1);
    r.rv[2] = __shfl_sync(ATTN_FULL_MASK, idx, 2 * c + 8);
    r.rv[3] = __shfl_sync(ATTN_FULL_MASK, idx, 2 * c + 9);
#pragma unroll
    for (int L = 0; L < D / 32; ++L) {
        r.k0[L] = rk0 >= 0 ? ld16(K + (int64_t)rk0 * D + L * 32 + c * 8) : z4;
        r.k1[L] = rk1 >= 0 ? ld16(K + (int64_t)rk1 * D + L * 32 + c * 8) : z4;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int b = 0; b < D / 64; ++b)
            r.v[i][b] = r.rv[i] >= 0 ? ld16(V + (int64_t)r.rv[i] * D + b * 64 + g * 8) : z4;
}

/* Scores, online softmax and P.V for one loaded step. */
template <int D>
__device__ __forceinline__ void attn_compute(const attn_rows<D> &r, int c, const uint32_t (&qf)[D / 16][4],
                                             float &m_run, float &l_run, float (&acc)[D / 8][4]) {
    (void)c;
    float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
        const uint4 &x0 = r.k0[ks >> 1], &x1 = r.k1[ks >> 1];
        mma_16816(s0, qf[ks], (ks & 1) ? x0.z : x0.x, (ks & 1) ? x0.w : x0.y);
        mma_16816(s1, qf[ks], (ks & 1) ? x1.z : x1.x, (ks & 1) ? x1.w : x1.y);
    }
    /* Row g holds the hi part of head g's score, row g+8 the lo part. */
    float sc[4] = {s0[0] + s0[2], s0[1] + s0[3], s1[0] + s1[2], s1[1] + s1[3]};
#pragma unroll
    for (int i = 0; i < 4; ++i)
        if (r.rv[i] < 0) sc[i] = -INFINITY;

    float mx = fmaxf(fmaxf(sc[0], sc[1]), fmaxf(sc[2], sc[3]));
    mx = fmaxf(mx, __shfl_xor_sync(ATTN_FULL_MASK, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(ATTN_FULL_MASK, mx, 2));
    const float m_new = fmaxf(m_run, mx); /* finite: token 0 of a step always exists */
    const float alpha = exp2f(m_run - m_new);
    float p[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) p[i] = exp2f(sc[i] - m_new);
    l_run = l_run * alpha + ((p[0] + p[1]) + (p[2] + p[3]));
    m_run = m_new;
    if (__any_sync(ATTN_FULL_MASK, alpha != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] *= alpha;
    }

    uint32_t pf[4];
    split_pair(p[0], p[1], pf[0], pf[1]);
    split_pair(p[2], p[3], pf[2], pf[3]);
#pragma unroll
    for (int b = 0; b < D / 64; ++b)
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            /* n-slot g of n-tile (b, j) is dim b*64 + g*8 + j. */
            const uint32_t sel = (j & 1) ? 0x7632u : 0x5410u;
            const uint32_t b0 = __byte_perm(u4_word(r.v[0][b], j >> 1), u4_word(r.v[1][b], j >> 1), sel);
            const uint32_t b1 = __byte_perm(u4_word(r.v[2][b], j >> 1), u4_word(r.v[3][b], j >> 1), sel);
            mma_16816(acc[b * 8 + j], pf, b0, b1);
        }
}

/* One 16-token step of one warp: loads, then computes. */
template <int D>
__device__ __forceinline__ void attn_step(const __half *K, const __half *V, int idx, int g, int c,
                                          const uint32_t (&qf)[D / 16][4], float &m_run, float &l_run,
                                          float (&acc)[D / 8][4]) {
    attn_rows<D> r;
    attn_load<D>(K, V, idx, g, c, r);
    attn_compute<D>(r, c, qf, m_run, l_run, acc);
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(ATTN_FULL_MASK, x, o));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(ATTN_FULL_MASK, x, o);
    return x;
}

__device__ __forceinline__ void prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* Warp state of the online softmax: running max, this lane's share of the
 * denominator, and the P.V accumulator fragments. */
template <int D>
struct attn_warp {
    float m, l;
    float acc[D / 8][4];
    __device__ __forceinline__ void init() {
        m = -INFINITY;
        l = 0.f;
#pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
    }
};

/* A warp attends to list[0..count) (token rows; clamped below n_rows) in
 * 16-token steps s = first, first + stride, ... With PIPE the next step's
 * rows are loaded while this one computes (costs a second set of registers). */
template <int D, bool PIPE>
__device__ __forceinline__ void attn_warp_list(const __half *K, const __half *V, const uint32_t (&qf)[D / 16][4],
                                               const int32_t *list, int count, int n_rows, int first, int stride,
                                               attn_warp<D> &w) {
    const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int n_steps = (count + 15) / 16;
    auto row = [&](int s) {
        const int i = s * 16 + (lane & 15);
        return i < count ? min(max(list[i], 0), n_rows - 1) : -1;
    };
    if (!PIPE) {
        for (int s = first; s < n_steps; s += stride) attn_step<D>(K, V, row(s), g, c, qf, w.m, w.l, w.acc);
        return;
    }
    attn_rows<D> ra, rb;
    if (first < n_steps) attn_load<D>(K, V, row(first), g, c, ra);
    for (int s = first; s < n_steps; s += 2 * stride) {
        const int s1 = s + stride, s2 = s + 2 * stride;
        if (s1 < n_steps) attn_load<D>(K, V, row(s1), g, c, rb);
        attn_compute<D>(ra, c, qf, w.m, w.l, w.acc);
        if (s2 < n_steps) attn_load<D>(K, V, row(s2), g, c, ra);
        if (s1 < n_steps) attn_compute<D>(rb, c, qf, w.m, w.l, w.acc);
    }
}

/* Merges the CTA's warps (shared memory `smem`: n_warps * hpu * (D + 2)
 * floats) and calls emit(h, d, O, M, L) once per output element of head h:
 * O the unnormalized output, M the max, L the denominator (M = -inf, L = 0,
 * O = 0 when the CTA saw no token). Ends with a barrier: smem is free again. */
template <int D, class Emit>
__device__ __forceinline__ void attn_cta_combine(attn_warp<D> &w, int hpu, float *smem, Emit emit) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    w.l += __shfl_xor_sync(ATTN_FULL_MASK, w.l, 1);
    w.l += __shfl_xor_sync(ATTN_FULL_MASK, w.l, 2);
    float *so = smem; /* [n_warps][hpu][D] */
    float2 *sml = reinterpret_cast<float2 *>(smem + n_warps * hpu * D); /* [n_warps][hpu] */
    if (g < hpu) {
        float *o = so + (warp * hpu + g) * D;
#pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) {
            const int d0 = (nt >> 3) * 64 + 2 * c * 8 + (nt & 7);
            o[d0] = w.acc[nt][0] + w.acc[nt][2];
            o[d0 + 8] = w.acc[nt][1] + w.acc[nt][3];
        }
        if (c == 0) sml[warp * hpu + g] = make_float2(w.m, w.l);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hpu * D; i += blockDim.x) {
        const int h = i / D, d = i - h * D;
        float M = -INFINITY;
        for (int k = 0; k < n_warps; ++k) M = fmaxf(M, sml[k * hpu + h].x);
        float O = 0.f, L = 0.f;
        if (M != -INFINITY)
            for (int k = 0; k < n_warps; ++k) {
                const float e = exp2f(sml[k * hpu + h].x - M);
                O += e * so[(k * hpu + h) * D + d];
                L += e * sml[k * hpu + h].y;
            }
        emit(h, d, O, M, L);
    }
    __syncthreads();
}

/* Writes a CTA's partial into slot `slot` of `n_slots` for unit `unit`. */
template <int D>
__device__ __forceinline__ void attn_store_partial(const attn_args &a, attn_warp<D> &w, int unit, int slot,
                                                   int n_slots, float *smem) {
    attn_cta_combine<D>(w, a.hpu, smem, [&](int h, int d, float O, float M, float L) {
        const int64_t at = ((int64_t)unit * n_slots + slot) * a.hpu + h;
        a.part_o[at * D + d] = O;
        if (d == 0) a.part_ml[at] = make_float2(M, L);
    });
}

/* out = sum_s w_s O_s / sum_s w_s l_s with w_s = 2^(m_s - M), over the S
 * partials of one unit; shared memory: S * hpu + hpu floats. */
template <int D>
__device__ void attn_merge_partials(const attn_args &a, int unit, int S, float *smem) {
    const int hpu = a.hpu, head0 = unit * hpu;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const float2 *ml = a.part_ml + (int64_t)unit * S * hpu;
    float *w = smem;             /* [S][hpu] */
    float *inv = smem + S * hpu; /* [hpu] */
    for (int h = warp; h < hpu; h += n_warps) {
        float M = -INFINITY;
        for (int s = lane; s < S; s += 32) M = fmaxf(M, __ldcg(&ml[s * hpu + h]).x);
        M = warp_max(M);
        float den = 0.f;
        for (int s = lane; s < S; s += 32) {
            const float2 x = __ldcg(&ml[s * hpu + h]);
            const float e = x.x == -INFINITY ? 0.f : exp2f(x.x - M);
            w[s * hpu + h] = e;
            den += e * x.y;
        }
        den = warp_sum(den);
        if (lane == 0) inv[h] = 1.f / den;
    }
    __syncthreads();
    const int n4 = hpu * D / 4;
    const float4 *po = reinterpret_cast<const float4 *>(a.part_o + (int64_t)unit * S * hpu * D);
    float4 *o4 = reinterpret_cast<float4 *>(a.out + (int64_t)head0 * D);
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        const int h = i / (D / 4);
        float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16
        for (int s = 0; s < S; ++s) {
            const float ws = w[s * hpu + h]; /* 0 for an empty partial, whose O is 0 */
            const float4 x = __ldcg(&po[(int64_t)s * n4 + i]);
            sum.x += ws * x.x, sum.y += ws * x.y, sum.z += ws * x.z, sum.w += ws * x.w;
        }
        const float r = inv[h];
        o4[i] = make_float4(sum.x * r, sum.y * r, sum.z * r, sum.w * r);
    }
    __syncthreads();
}

/* Arrival of a CTA at the end of a multi-CTA reduction: true in the last
 * one to arrive (which then sees every other CTA's writes); the counter is
 * left for the last CTA to reset. */
__device__ __forceinline__ bool cta_arrive_last(unsigned *counter, unsigned n_ctas) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == n_ctas - 1;
    __syncthreads();
    pdl_trigger(); /* what is left is this tail: let the next kernel launch */
    if (last) __threadfence();
    return last;
}

/* Dense (rows == NULL) or gathered split-K attention. */
template <int D, bool GATHER>
__global__ void __launch_bounds__(ATTN_MAX_WARPS * 32) attn_split_kernel(const attn_args a) {
    static_assert(D == 64 || D == 128, "head_dim must be 64 or 128");
    extern __shared__ float attn_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const int unit = blockIdx.y, split = blockIdx.x;
    const int hpu = a.hpu, head0 = unit * hpu, kvh = head0 / a.group;
    const __half *K = a.k + (int64_t)kvh * a.head_stride;
    const __half *V = a.v + (int64_t)kvh * a.head_stride;
    const int start = split * a.chunk;
    const int end = min(start + a.chunk, a.n_tokens);
    const int n_steps = (end - start + 15) >> 4;

    pdl_wait();
    uint32_t qf[D / 16][4];
    attn_load_q<D>(a.q + (int64_t)(head0 + (g < hpu ? g : 0)) * D, g < hpu, a.scale_log2, c, qf);
    attn_warp<D> w;
    w.init();
    if (GATHER) {
        attn_warp_list<D, true>(K, V, qf, a.rows + (int64_t)unit * a.rows_stride + start, end - start, a.n_rows,
                                warp, n_warps, w);
    } else {
        /* Two steps in registers: the next step's rows are in flight while
         * this one computes (the register file allows it at this occupancy). */
        attn_rows<D> ra, rb;
        const int tl = start + (lane & 15);
        if (warp < n_steps) attn_load<D>(K, V, tl + warp * 16 < end ? tl + warp * 16 : -1, g, c, ra);
        for (int s = warp; s < n_steps; s += 2 * n_warps) {
            const int s1 = s + n_warps, s2 = s + 2 * n_warps;
            if (s1 < n_steps) attn_load<D>(K, V, tl + s1 * 16 < end ? tl + s1 * 16 : -1, g, c, rb);
            attn_compute<D>(ra, c, qf, w.m, w.l, w.acc);
            if (s2 < n_steps) attn_load<D>(K, V, tl + s2 * 16 < end ? tl + s2 * 16 : -1, g, c, ra);
            if (s1 < n_steps) attn_compute<D>(rb, c, qf, w.m, w.l, w.acc);
        }
    }

    const int S = a.n_splits;
    if (S == 1) {
        attn_cta_combine<D>(w, hpu, attn_smem, [&](int h, int d, float O, float M, float L) {
            a.out[(int64_t)(head0 + h) * D + d] = O / L;
        });
        pdl_trigger();
        return;
    }
    attn_store_partial<D>(a, w, unit, split, S, attn_smem);
    if (!cta_arrive_last(&a.arrivals[unit], S)) return;
    attn_merge_partials<D>(a, unit, S, attn_smem);
    if (threadIdx.x == 0) a.arrivals[unit] = 0;
}

/* Launch shape: `warps` warps per CTA and `steps_per_warp` 16-token steps per
 * warp per CTA; 0 = one full wave: as many CTAs as fit on the GPU at once
 * (n_sms * ctas_per_sm), so that no CTA waits for a second wave. */
static inline void attn_plan(attn_args *a, int n_units, int n_sms, int ctas_per_sm, int warps, int steps_per_warp) {
    const int64_t step_tokens = 16 * (int64_t)warps;
    int64_t chunk;
    if (steps_per_warp > 0) {
        chunk = (int64_t)steps_per_warp * step_tokens;
    } else {
        int64_t splits = (int64_t)n_sms * (ctas_per_sm > 0 ? ctas_per_sm : 1) / n_units;
        if (splits < 1) splits = 1;
        chunk = (a->n_tokens + splits - 1) / splits;
        chunk = (chunk + step_tokens - 1) / step_tokens * step_tokens;
    }
    while ((a->n_tokens + chunk - 1) / chunk > ATTN_MAX_SPLITS) chunk *= 2;
    a->chunk = (int32_t)chunk;
    a->n_splits = (int32_t)((a->n_tokens + chunk - 1) / chunk);
}

static inline size_t attn_smem_bytes(int hpu, int n_splits, int D, int warps) {
    const size_t combine = (size_t)warps * hpu * (D + 2);
    const size_t merge = (size_t)n_splits * hpu + hpu;
    return 4 * (combine > merge ? combine : merge);
}


static inline void *attn_kernel_ptr(int D, bool gather) {
    if (D == 128) return gather ? (void *)attn_split_kernel<128, true> : (void *)attn_split_kernel<128, false>;
    return gather ? (void *)attn_split_kernel<64, true> : (void *)attn_split_kernel<64, false>;
}

/* Resident CTAs per multiprocessor of the attention kernel at `warps` warps. */
static inline int attn_ctas_per_sm(int D, bool gather, int warps, int hpu) {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_kernel_ptr(D, gather), 32 * warps,
                                                      attn_smem_bytes(hpu, 1, D, warps)) != cudaSuccess)
        n = 2;
    return n > 0 ? n : 1;
}

static inline cudaError_t attn_launch(const attn_args *a, int n_units, int D, int warps, cudaStream_t st, bool pdl) {
    const dim3 grid(a->n_splits, n_units), block(32 * warps);
    const size_t smem = attn_smem_bytes(a->hpu, a->n_splits, D, warps);
    const bool gather = a->rows != NULL;
    if (D == 128)
        return gather ? launch_k(attn_split_kernel<128, true>, grid, block, smem, st, pdl, *a)
                      : launch_k(attn_split_kernel<128, false>, grid, block, smem, st, pdl, *a);
    return gather ? launch_k(attn_split_kernel<64, true>, grid, block, smem, st, pdl, *a)
                  : launch_k(attn_split_kernel<64, false>, grid, block, smem, st, pdl, *a);
}

#endif
