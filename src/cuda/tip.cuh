/* Token importance prediction (TIP) and exact top-k token selection.
 *
 *  tip_score_kernel   one pass over the label cache: per token and unit, the
 *                     score q[label coords] . label (q summed over the unit's
 *                     query heads, which is exact because the label set is the
 *                     KV head's). Scores go to global memory (4 bytes a token:
 *                     they stay in L2) and into a per-unit histogram of their
 *                     top 12 key bits (shared-memory histogram per CTA, then
 *                     fire-and-forget atomic adds).
 *  select_kernel      every CTA finds the bin holding the k-th largest score
 *                     from that histogram, re-reads its chunk of scores, takes
 *                     the tokens of higher bins outright and sets aside those
 *                     of the boundary bin. The last CTA of a unit resolves the
 *                     remaining 20 key bits over those candidates alone (two
 *                     10-bit shared-memory histograms) and completes the list.
 * The focused attention over the list is then the gather variant of the
 * attention kernel (attn.cuh): three launches per layer. With ATTN, the
 * selection kernel also attends to the tokens it takes (split-K partials
 * merged by the last CTA): two launches, which measured slower on an H100
 * (docs/perf-notes.md) and is kept as an option.
 * Keys are the float bits made monotone, so the selection is exact for any
 * scores; ties at the threshold are broken arbitrarily, and the order of the
 * selected indices is arbitrary. Histograms and counters go back to zero in
 * the last CTA of each unit, so every layer of a graph can share the scratch. */
#ifndef FASA_CUDA_TIP_CUH
#define FASA_CUDA_TIP_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "attn.cuh"

#define TIP_FULL_MASK 0xffffffffu
#define TIP_THREADS 256
#define TIP_BITS1 12 /* first key digit: sign, exponent, 3 mantissa bits */
#define TIP_BINS1 (1 << TIP_BITS1)
#define TIP_SHIFT1 (32 - TIP_BITS1)
#define TIP_UNROLL 8 /* label loads per lane in flight per batch (4 when U > 1: registers) */
#define SEL_THREADS 128
#define SEL_BITS 10 /* the remaining 20 key bits, in two passes */
#define SEL_UNROLL 16

typedef struct tip_args {
    const void *labels;         /* [n_kv][cap][n_lab] fp16 or int8 */
    const float *lab_scale;     /* [n_kv][cap] per-token scale of int8 labels, else NULL */
    int64_t lab_head_stride;    /* label elements between KV heads */
    int64_t scale_head_stride;  /* scales between KV heads */
    const int32_t *lab_idx;     /* [n_kv][n_lab] coordinates into D */
    const float *q;             /* [n_heads][D] */
    int32_t D, n_lab, group, hpu; /* units per KV head = group / hpu */
    int32_t n_tokens, chunk;    /* chunk: tokens per CTA */
    float *scores;              /* [n_units][score_stride] */
    int64_t score_stride;
    uint32_t *hist;             /* [n_units][TIP_BINS1], zero on entry */
} tip_args;

typedef struct select_args {
    const float *scores;
    int64_t score_stride;
    int32_t n_tokens, chunk, k;   /* chunk: tokens per CTA, a multiple of 1024 */
    int32_t scratch_bytes;        /* shared memory between the token list and the pass histogram */
    uint32_t *hist;               /* TIP's histograms; zeroed again by each unit's last CTA */
    int32_t *sel;                 /* [n_units][sel_stride] selected token indices */
    int32_t sel_stride;
    uint32_t *sel_count;          /* [n_units] */
    uint2 *cand;                  /* [n_units][cand_stride] (key, token) of the boundary bin */
    int64_t cand_stride;
    uint32_t *cand_count;         /* [n_units] */
    uint32_t *arrivals;           /* [n_units] */
    attn_args attn;               /* ATTN: q, K, V, out and the partial-output scratch */
} select_args;

/* Larger score -> larger unsigned key. */
__device__ __forceinline__ uint32_t score_key(float s) {
    const uint32_t u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Exclusive prefix sum over the CTA (blockDim.x a multiple of 32). */
__device__ uint32_t block_exclusive_sum(uint32_t v, uint32_t *warp_tot) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(TIP_FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_tot[warp] = x;
    __syncthreads();
    uint32_t before = 0;
    for (int w = 0; w < warp; ++w) before += warp_tot[w];
    __syncthreads(); /* warp_tot may be reused at once */
    return before + x - v;
}

/* The bin holding the need-th largest element (need >= 1) of a shared-memory
 * histogram of n_bins (a multiple of 4 * blockDim.x): {bin, how many of that
 * bin are still needed}, to every thread; {0, 0} if the histogram holds fewer
 * than need elements (inconsistent input: callers then select nothing). */
__device__ int2 block_find_boundary(const uint32_t *hist, int n_bins, uint32_t need, uint32_t *scratch) {
    __shared__ int2 found;
    const int per = n_bins / blockDim.x;
    const int lo = n_bins - per * (threadIdx.x + 1); /* thread t owns the t-th group of bins from the top */
    if (threadIdx.x == 0) found = make_int2(0, 0);
    uint32_t sum = 0;
    for (int b = lo; b < lo + per; b += 4) {
        const uint4 h = *reinterpret_cast<const uint4 *>(&hist[b]);
        sum += h.x + h.y + h.z + h.w;
    }
    uint32_t above = block_exclusive_sum(sum, scratch); /* also orders the write of `found` above */
    if (above < need && need <= above + sum) {
        for (int b = lo + per - 1; b >= lo; --b) {
            const uint32_t h = hist[b];
            if (need <= above + h) {
                found = make_int2(b, (int)(need - above));
                break;
            }
            above += h;
        }
    }
    __syncthreads();
    const int2 r = found;
    __syncthreads();
    return r;
}

/* n 16-byte words from global memory (written by other CTAs) to shared memory,
 * eight loads in flight per thread. */
__device__ __forceinline__ void copy_to_smem(uint4 *dst, const uint4 *src, int n) {
    for (int i0 = 0; i0 < n; i0 += 8 * blockDim.x) {
        uint4 t[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int i = i0 + j * blockDim.x + threadIdx.x;
            if (i < n) t[j] = __ldcg(&src[i]);
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const int i = i0 + j * blockDim.x + threadIdx.x;
            if (i < n) dst[i] = t[j];
        }
    }
}

__device__ __forceinline__ void dot_label(const uint4 raw, const float *qs, float &acc, __half) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        acc += qs[2 * i] * f.x + qs[2 * i + 1] * f.y;
    }
}

__device__ __forceinline__ void dot_label(const uint4 raw, const float *qs, float &acc, int8_t) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 16; ++i) acc += qs[i] * (float)(int8_t)(w[i >> 2] >> (8 * (i & 3)));
}

/* One batch of label loads: UNR tokens per lane group, 16 bytes per lane. */
template <typename LT, int UNR>
__device__ __forceinline__ void tip_load(const LT *lab, const float *scl, int n_lab, int t0, int slots, int slot,
                                         int r, int t_end, uint4 (&raw)[UNR], float (&sc)[UNR]) {
    constexpr int EPL = 16 / sizeof(LT);
#pragma unroll
    for (int j = 0; j < UNR; ++j) {
        const int t = t0 + j * slots + slot;
        const bool ok = t < t_end;
        raw[j] = ok ? *reinterpret_cast<const uint4 *>(lab + (int64_t)t * n_lab + r * EPL) : make_uint4(0u, 0u, 0u, 0u);
        sc[j] = scl && ok ? scl[t] : 1.f;
    }
}

/* U units per KV head: 1 when the group shares one token set, else group. */
template <typename LT, int U>
__global__ void __launch_bounds__(TIP_THREADS, U == 1 ? 2 : 1) tip_score_kernel(const tip_args a) {
    constexpr int EPL = 16 / sizeof(LT); /* label elements per lane: one 16-byte load */
    constexpr int UNR = U == 1 ? TIP_UNROLL : 4;
    extern __shared__ uint32_t tip_hist[]; /* [U][TIP_BINS1] */
    const int kvh = blockIdx.y, tid = threadIdx.x, lane = tid & 31;
    const int lpt = a.n_lab / EPL; /* lanes per token, a power of two */
    const int r = lane & (lpt - 1);
    const int slot = tid / lpt, slots = blockDim.x / lpt, step = UNR * slots;
    const LT *lab = reinterpret_cast<const LT *>(a.labels) + kvh * a.lab_head_stride;
    const float *scl = a.lab_scale ? a.lab_scale + kvh * a.scale_head_stride : NULL;
    const int t_begin = blockIdx.x * a.chunk;
    const int t_end = min(t_begin + a.chunk, a.n_tokens);

    pdl_wait();
    /* The first labels are in flight while q is gathered. */
    uint4 raw[UNR];
    float sc[UNR];
    tip_load<LT, UNR>(lab, scl, a.n_lab, t_begin, slots, slot, r, t_end, raw, sc);
    for (int i = tid; i < U * TIP_BINS1; i += blockDim.x) tip_hist[i] = 0;
    float qs[U][EPL];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
        for (int e = 0; e < EPL; ++e) {
            const int coord = a.lab_idx[kvh * a.n_lab + r * EPL + e];
            float s = 0.f;
#pragma unroll
            for (int h = 0; h < 8; ++h)
                if (h < a.hpu) s += a.q[(int64_t)(kvh * a.group + u * a.hpu + h) * a.D + coord];
            qs[u][e] = s;
        }
    __syncthreads();

    for (int t0 = t_begin; t0 < t_end; t0 += step) {
        uint4 nraw[UNR]; /* the next batch, in flight during this one */
        float nsc[UNR];
        tip_load<LT, UNR>(lab, scl, a.n_lab, t0 + step, slots, slot, r, t_end, nraw, nsc);
#pragma unroll
        for (int j = 0; j < UNR; ++j) {
            const int t = t0 + j * slots + slot;
            float part[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                part[u] = 0.f;
                dot_label(raw[j], qs[u], part[u], LT());
                for (int o = 1; o < lpt; o <<= 1) part[u] += __shfl_xor_sync(TIP_FULL_MASK, part[u], o);
            }
            if (t < t_end) {
#pragma unroll
                for (int u = 0; u < U; ++u)
                    if (r == u % lpt) {
                        const float s = part[u] * sc[j];
                        a.scores[(int64_t)(kvh * U + u) * a.score_stride + t] = s;
                        atomicAdd(&tip_hist[u * TIP_BINS1 + (score_key(s) >> TIP_SHIFT1)], 1u);
                    }
            }
        }
#pragma unroll
        for (int j = 0; j < UNR; ++j) raw[j] = nraw[j], sc[j] = nsc[j];
    }
    __syncthreads();
    uint32_t *ghist = a.hist + (int64_t)kvh * U * TIP_BINS1;
    for (int i = tid; i < U * TIP_BINS1; i += blockDim.x)
        if (tip_hist[i]) atomicAdd(&ghist[i], tip_hist[i]);
    pdl_trigger();
}

/* Candidate access in shared or global memory (the latter written by other CTAs). */
__device__ __forceinline__ uint2 cand_get(const uint2 *c, uint32_t i, bool global) {
    return global ? __ldcg(&c[i]) : c[i];
}

/* Among m candidates whose top digit is bin B, the key T such that `need`
 * of them are >= T: returns T and, in need, how many keys equal to T to take. */
__device__ uint32_t resolve_threshold(const uint2 *cl, bool global, uint32_t m, uint32_t B, uint32_t &need,
                                      uint32_t *hist_s, uint32_t *scratch) {
    uint32_t prefix = B << TIP_SHIFT1, mask = ~0u << TIP_SHIFT1;
    const uint32_t dmask = (1u << SEL_BITS) - 1u;
    for (int shift = SEL_BITS; shift >= 0; shift -= SEL_BITS) {
        for (int i = threadIdx.x; i < (1 << SEL_BITS); i += blockDim.x) hist_s[i] = 0;
        __syncthreads();
        for (uint32_t i = threadIdx.x; i < m; i += blockDim.x) {
            const uint32_t key = cand_get(cl, i, global).x;
            if ((key & mask) == prefix) atomicAdd(&hist_s[(key >> shift) & dmask], 1u);
        }
        __syncthreads();
        const int2 b = block_find_boundary(hist_s, 1 << SEL_BITS, need, scratch);
        prefix |= (uint32_t)b.x << shift;
        mask |= dmask << shift;
        need = (uint32_t)b.y;
    }
    return prefix;
}

template <int D, bool ATTN>
__global__ void __launch_bounds__(SEL_THREADS) select_kernel(const select_args a) {
    extern __shared__ __align__(16) unsigned char sel_smem[];
    __shared__ uint32_t scratch[32];
    __shared__ uint32_t n_sel_s, n_cand_s, base_sel, base_cand, eq_taken;
    int32_t *sel_s = reinterpret_cast<int32_t *>(sel_smem);                   /* [chunk] */
    uint2 *cand_s = reinterpret_cast<uint2 *>(sel_smem + 4 * (size_t)a.chunk); /* [chunk] */
    float *fscratch = reinterpret_cast<float *>(cand_s);                       /* reused for attention */
    uint32_t *hist_s = reinterpret_cast<uint32_t *>(sel_smem + 4 * (size_t)a.chunk + a.scratch_bytes); /* [TIP_BINS1] */
    const int unit = blockIdx.y, tid = threadIdx.x, n_chunks = gridDim.x;
    const int lane = tid & 31, warp = tid >> 5, n_warps = blockDim.x >> 5;
    const attn_args &at = a.attn;
    const int head0 = unit * at.hpu, kvh = ATTN ? head0 / at.group : 0;
    const __half *K = ATTN ? at.k + (int64_t)kvh * at.head_stride : NULL;
    const __half *V = ATTN ? at.v + (int64_t)kvh * at.head_stride : NULL;
    constexpr int ROW_LINES = D * 2 / 128; /* 128-byte lines per K (or V) row */

    pdl_wait();
    uint32_t qf[D / 16][4];
    if (ATTN) {
        const int g = lane >> 2;
        attn_load_q<D>(at.q + (int64_t)(head0 + (g < at.hpu ? g : 0)) * D, g < at.hpu, at.scale_log2, lane & 3, qf);
    }
    /* The chunk's first scores are in flight while the boundary is found. */
    const float *sc = a.scores + unit * a.score_stride;
    const int t_begin = blockIdx.x * a.chunk, t_end = min(t_begin + a.chunk, a.n_tokens);
    float v[SEL_UNROLL];
#pragma unroll
    for (int j = 0; j < SEL_UNROLL; ++j) {
        const int t = t_begin + j * blockDim.x + tid;
        v[j] = t < t_end ? __ldcg(&sc[t]) : 0.f;
    }
    uint32_t *ghist = a.hist + (int64_t)unit * TIP_BINS1;
    copy_to_smem(reinterpret_cast<uint4 *>(hist_s), reinterpret_cast<const uint4 *>(ghist), TIP_BINS1 / 4);
    __syncthreads();
    const int2 bd = block_find_boundary(hist_s, TIP_BINS1, (uint32_t)a.k, scratch);
    const uint32_t B = (uint32_t)bd.x;
    if (tid == 0) n_sel_s = n_cand_s = 0;
    __syncthreads();

    /* This chunk's tokens above the boundary bin, and its candidates. */
    for (int t0 = t_begin; t0 < t_end; t0 += SEL_UNROLL * blockDim.x) {
        if (t0 != t_begin) {
#pragma unroll
            for (int j = 0; j < SEL_UNROLL; ++j) {
                const int t = t0 + j * blockDim.x + tid;
                v[j] = t < t_end ? __ldcg(&sc[t]) : 0.f;
            }
        }
#pragma unroll
        for (int j = 0; j < SEL_UNROLL; ++j) {
            const int t = t0 + j * blockDim.x + tid;
            if (t >= t_end) continue;
            const uint32_t key = score_key(v[j]), bin = key >> TIP_SHIFT1;
            if (bin > B) {
                sel_s[atomicAdd(&n_sel_s, 1u)] = t;
                if (ATTN)
                    for (int i = 0; i < ROW_LINES; ++i) {
                        prefetch_l2(K + (int64_t)t * D + i * 64);
                        prefetch_l2(V + (int64_t)t * D + i * 64);
                    }
            } else if (bin == B) {
                cand_s[atomicAdd(&n_cand_s, 1u)] = make_uint2(key, (uint32_t)t);
            }
        }
    }
    __syncthreads();
    const uint32_t ns = n_sel_s, nc = n_cand_s;
    if (tid == 0) {
        base_sel = ns ? atomicAdd(&a.sel_count[unit], ns) : 0u;
        base_cand = nc ? atomicAdd(&a.cand_count[unit], nc) : 0u;
    }
    __syncthreads();
    int32_t *gsel = a.sel + (int64_t)unit * a.sel_stride;
    uint2 *gcand = a.cand + unit * a.cand_stride;
    for (uint32_t i = tid; i < ns; i += blockDim.x)
        if (base_sel + i < (uint32_t)a.k) gsel[base_sel + i] = sel_s[i];
    for (uint32_t i = tid; i < nc; i += blockDim.x)
        if (base_cand + i < (uint64_t)a.cand_stride) gcand[base_cand + i] = cand_s[i];
    __syncthreads(); /* cand_s is free: attention scratch from here on */

    attn_warp<D> w;
    if (ATTN) {
        w.init();
        attn_warp_list<D, false>(K, V, qf, sel_s, (int)ns, at.n_rows, warp, n_warps, w);
        attn_store_partial<D>(at, w, unit, blockIdx.x, n_chunks + 1, fscratch);
    }
    if (!cta_arrive_last(&a.arrivals[unit], n_chunks)) return;

    /* Last CTA of the unit: which boundary-bin candidates make the top k. */
    /* The count and the candidates are fetched together: the first `chunk`
     * entries are staged before the count says how many are real. */
    const uint32_t m = min(__ldcg(&a.cand_count[unit]), (uint32_t)a.cand_stride);
    const uint32_t need0 = (uint32_t)bd.y;
    copy_to_smem(reinterpret_cast<uint4 *>(cand_s), reinterpret_cast<const uint4 *>(gcand),
                 (int)(min((uint64_t)a.chunk, (uint64_t)a.cand_stride) / 2));
    const bool global = m > (uint32_t)a.chunk; /* too many to stage in shared memory */
    __syncthreads();
    const uint2 *cl = global ? gcand : cand_s;
    uint32_t need = need0, T = 0;
    const bool take_all = m <= need0;
    if (!take_all) T = resolve_threshold(cl, global, m, B, need, hist_s, scratch);
    if (tid == 0) n_sel_s = 0, eq_taken = 0;
    __syncthreads();
    const uint32_t base = (uint32_t)a.k - need0; /* the other CTAs took exactly k - need0 */
    for (uint32_t i0 = 0; i0 < m; i0 += blockDim.x) {
        const uint32_t i = i0 + tid;
        if (i >= m) break;
        const uint2 e = cand_get(cl, i, global);
        bool take = take_all || e.x > T;
        if (!take && e.x == T) take = atomicAdd(&eq_taken, 1u) < need;
        if (take) {
            const uint32_t pos = atomicAdd(&n_sel_s, 1u);
            if (pos < need0) gsel[base + pos] = (int32_t)e.y;
            if (pos < (uint32_t)a.chunk) sel_s[pos] = (int32_t)e.y;
            if (ATTN)
                for (int j = 0; j < ROW_LINES; ++j) {
                    prefetch_l2(K + (int64_t)e.y * D + j * 64);
                    prefetch_l2(V + (int64_t)e.y * D + j * 64);
                }
        }
    }
    __syncthreads();
    if (ATTN) { /* the staged candidates are consumed: fscratch is free again */
        w.init();
        const uint32_t nb = min(n_sel_s, need0);
        attn_warp_list<D, false>(K, V, qf, nb <= (uint32_t)a.chunk ? sel_s : gsel + base, (int)nb, at.n_rows, warp,
                                 n_warps, w);
        attn_store_partial<D>(at, w, unit, n_chunks, n_chunks + 1, fscratch);
        __threadfence();
        __syncthreads();
        attn_merge_partials<D>(at, unit, n_chunks + 1, fscratch);
    }
    for (int i = tid; i < TIP_BINS1; i += blockDim.x) ghist[i] = 0;
    if (tid == 0) {
        a.sel_count[unit] = 0;
        a.cand_count[unit] = 0;
        a.arrivals[unit] = 0;
    }
}

/* ---- host side ---------------------------------------------------------- */

/* Tokens per CTA: about `per_sm` CTAs per multiprocessor over `rows` rows of
 * n_tokens, rounded to `align`, within [lo, hi]. */
static inline int32_t tip_chunk_for(int64_t n_tokens, int64_t rows, int n_sms, int per_sm, int32_t lo, int32_t hi,
                                    int32_t align) {
    const int64_t ctas = (int64_t)n_sms * per_sm;
    int64_t c = (n_tokens * rows + ctas - 1) / ctas;
    c = (c + align - 1) / align * align;
    if (c < lo) c = lo;
    if (c > hi) c = hi;
    return (int32_t)c;
}

static inline size_t tip_smem_bytes(int U) { return (size_t)U * TIP_BINS1 * sizeof(uint32_t); }

/* Shared memory of select_kernel: [chunk] token list, scratch (the chunk's
 * candidates, then attention), [2^SEL_BITS] pass histogram. */
static inline void select_smem(select_args *a, int D, int hpu, bool attn, size_t *total) {
    const int n_chunks = (a->n_tokens + a->chunk - 1) / a->chunk;
    size_t s = (size_t)a->chunk * 8;
    if (attn) {
        const size_t combine = (size_t)(SEL_THREADS / 32) * hpu * (D + 2) * 4;
        const size_t merge = ((size_t)(n_chunks + 1) * hpu + hpu) * 4;
        s = s > combine ? s : combine;
        s = s > merge ? s : merge;
    }
    a->scratch_bytes = (int32_t)((s + 15) / 16 * 16);
    *total = (size_t)a->chunk * 4 + a->scratch_bytes + (size_t)TIP_BINS1 * 4;
}

#define SELECT_MAX_SMEM (160 * 1024)

template <typename LT>
static inline cudaError_t tip_launch_t(const tip_args *a, int n_kv, int U, cudaStream_t st, bool pdl) {
    const dim3 grid((a->n_tokens + a->chunk - 1) / a->chunk, n_kv), block(TIP_THREADS);
    const size_t smem = tip_smem_bytes(U);
    switch (U) {
    case 1: return launch_k(tip_score_kernel<LT, 1>, grid, block, smem, st, pdl, *a);
    case 2: return launch_k(tip_score_kernel<LT, 2>, grid, block, smem, st, pdl, *a);
    case 3: return launch_k(tip_score_kernel<LT, 3>, grid, block, smem, st, pdl, *a);
    case 4: return launch_k(tip_score_kernel<LT, 4>, grid, block, smem, st, pdl, *a);
    case 5: return launch_k(tip_score_kernel<LT, 5>, grid, block, smem, st, pdl, *a);
    case 6: return launch_k(tip_score_kernel<LT, 6>, grid, block, smem, st, pdl, *a);
    case 7: return launch_k(tip_score_kernel<LT, 7>, grid, block, smem, st, pdl, *a);
    case 8: return launch_k(tip_score_kernel<LT, 8>, grid, block, smem, st, pdl, *a);
    default: return cudaErrorInvalidValue; /* rejected by the host code before */
    }
}

static inline cudaError_t tip_launch(const tip_args *a, bool int8_labels, int n_kv, int U, cudaStream_t st,
                                     bool pdl) {
    return int8_labels ? tip_launch_t<int8_t>(a, n_kv, U, st, pdl) : tip_launch_t<__half>(a, n_kv, U, st, pdl);
}

static inline cudaError_t select_launch(const select_args *a, int n_units, int D, bool attn, size_t smem,
                                        cudaStream_t st, bool pdl) {
    const dim3 grid((a->n_tokens + a->chunk - 1) / a->chunk, n_units), block(SEL_THREADS);
    if (!attn) return launch_k(select_kernel<64, false>, grid, block, smem, st, pdl, *a);
    return D == 128 ? launch_k(select_kernel<128, true>, grid, block, smem, st, pdl, *a)
                    : launch_k(select_kernel<64, true>, grid, block, smem, st, pdl, *a);
}

/* Raises the dynamic shared-memory limits above the 48 KB default. */
template <typename LT>
static inline cudaError_t tip_prepare_t(void) {
    cudaError_t e = cudaSuccess;
#define TIP_ATTR(U)                                                                                  \
    if (e == cudaSuccess)                                                                            \
        e = cudaFuncSetAttribute(tip_score_kernel<LT, U>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                 (int)tip_smem_bytes(U));
    TIP_ATTR(1) TIP_ATTR(2) TIP_ATTR(3) TIP_ATTR(4) TIP_ATTR(5) TIP_ATTR(6) TIP_ATTR(7) TIP_ATTR(8)
#undef TIP_ATTR
    return e;
}

static inline cudaError_t tip_prepare(void) {
    cudaError_t e = tip_prepare_t<__half>();
    if (e == cudaSuccess) e = tip_prepare_t<int8_t>();
    const cudaFuncAttribute A = cudaFuncAttributeMaxDynamicSharedMemorySize;
    if (e == cudaSuccess) e = cudaFuncSetAttribute(select_kernel<64, false>, A, SELECT_MAX_SMEM);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(select_kernel<64, true>, A, SELECT_MAX_SMEM);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(select_kernel<128, true>, A, SELECT_MAX_SMEM);
    return e;
}

#endif
