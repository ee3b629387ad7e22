/* The whole FASA decode step of one layer in one kernel, on thread-block
 * clusters (sm_90).
 *
 * Why: the three-launch pipeline of tip.cuh spends most of its time on
 * dependency latency, not bytes (docs/perf-notes.md): two kernel boundaries,
 * the scores written to global memory and read back, and chains of global
 * atomics and arrival counters. Here one cluster of C CTAs owns one KV group
 * (unit) and everything between the label pass and the output stays on chip:
 *
 *  1. TIP   each CTA scores its slice of the unit's tokens from the label
 *           cache (the tip.cuh loads and dot products) into shared memory,
 *           as monotone keys, with a 12-bit histogram of them.
 *  2.       cluster barrier. CTA r sums bins [r*B/C, (r+1)*B/C) of all C
 *           histograms through distributed shared memory and sends the
 *           slice total to every CTA.
 *  3.       cluster barrier. Every CTA finds, from the C totals and one
 *           remote slice, the bin holding the k-th largest key, scans its
 *           own keys, keeps the tokens above that bin and lists the ones in
 *           it (the candidates).
 *  4.       cluster barrier (split: arrive, work, wait). CTA 0 gathers the
 *           candidates and resolves the remaining 20 key bits exactly (the
 *           tip.cuh passes); meanwhile every CTA attends to its own tokens
 *           (attn.cuh, gather form) and pushes its partial softmax state
 *           into CTA 0's shared memory.
 *  5.       CTA 0 attends to the chosen candidates, waits at the last
 *           cluster barrier for every partial, merges them and writes the
 *           output.
 * The selection is exact (ties at the threshold broken arbitrarily); the
 * chosen indices also go to a global list so that callers can read them.
 * Measured on an H200 (docs/perf-notes.md): faster than the three launches
 * while a CTA's share of the labels is small (short contexts, few label
 * coordinates), slower beyond, where its label pass on C x units SMs at 8
 * warps each is the bottleneck; fasa_cuda.cu chooses by that share. */
#ifndef FASA_CUDA_CLUSTER_CUH
#define FASA_CUDA_CLUSTER_CUH

#include <cooperative_groups.h>

#include "attn.cuh"
#include "tip.cuh"

#define CL_THREADS 256
#define CL_UNROLL 16 /* label loads per lane in flight per batch */
#define CL_MAX 16    /* CTAs per cluster (16 needs the non-portable size attribute) */
#define CL_STAGE 2048 /* candidates CTA 0 stages in shared memory; more go through global memory */

typedef struct cluster_args {
    tip_args tip;      /* labels, scales, lab_idx, q, D, n_lab, group; chunk = tokens per CTA */
    attn_args attn;    /* k, v, head_stride, q, out, n_rows, group, hpu (= group), scale_log2 */
    int32_t k;         /* tokens to select (n_fac), < n_tokens */
    int32_t k_cap;     /* capacity of a CTA's token list, >= k */
    int32_t *sel;      /* [n_units][sel_stride]: the selected tokens (any order) */
    int32_t sel_stride;
    uint2 *cand;       /* [n_units][cand_stride]: candidates that do not fit CL_STAGE */
    int64_t cand_stride;
    long long *trace;  /* workbench only (NULL in the library): [n_units][C][CL_TRACE] clock64 at phase ends */
} cluster_args;

#define CL_TRACE 10

/* Shared-memory layout, the same in every CTA of a launch (so that a remote
 * CTA's arrays sit at the same offsets). Offsets in bytes. */
typedef struct cluster_layout {
    size_t keys, hist, red, tot, nsel, ncand, q, list, cands, stage, comb, part, total;
} cluster_layout;

static inline __host__ __device__ size_t cl_align(size_t x) { return (x + 15) / 16 * 16; }

/* Histogram bins per CTA's slice: TIP_BINS1 / C rounded up to whole warps
 * (C need not divide it; the last slices are then short or empty). */
static inline __host__ __device__ int cl_bins_per_cta(int C) { return (TIP_BINS1 / C + (TIP_BINS1 % C != 0) + 31) / 32 * 32; }

static inline __host__ __device__ cluster_layout cluster_layout_for(int chunk, int C, int k_cap, int hpu, int D) {
    cluster_layout L;
    size_t o = 0;
    L.keys = o, o = cl_align(o + (size_t)chunk * 4);           /* this CTA's score keys */
    L.hist = o, o = cl_align(o + (size_t)TIP_BINS1 * 4);       /* histogram; later the resolve passes' */
    L.red = o, o = cl_align(o + (size_t)cl_bins_per_cta(C) * 4); /* this CTA's slice of the summed histogram */
    L.tot = o, o = cl_align(o + CL_MAX * 4);                   /* slice totals of every CTA */
    L.nsel = o, o = cl_align(o + CL_MAX * 4);                  /* tokens each CTA keeps */
    L.ncand = o, o = cl_align(o + CL_MAX * 4);                 /* candidates each CTA lists (CTA 0) */
    L.q = o, o = cl_align(o + (size_t)hpu * D * 4);            /* the group's queries */
    L.list = o, o = cl_align(o + (size_t)k_cap * 4);           /* tokens this CTA attends to */
    L.cands = o, o = cl_align(o + (size_t)chunk * 4);          /* this CTA's candidates */
    L.stage = o, o = cl_align(o + (size_t)CL_STAGE * 8);       /* CTA 0: (key, token) of all candidates */
    L.comb = o, o = cl_align(o + (size_t)(CL_THREADS / 32) * hpu * (D + 2) * 4); /* warp merge */
    L.part = o, o = cl_align(o + (size_t)C * hpu * (D + 2) * 4); /* CTA 0: every CTA's partial */
    L.total = o;
    return L;
}

/* A cluster barrier does not order this CTA's own shared-memory accesses
 * for tools that only know __syncthreads; CTA-local reuse below also
 * passes a __syncthreads, which costs nothing after the cluster barrier. */
__device__ __forceinline__ void cl_arrive(void) {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cl_wait(void) {
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

__device__ __forceinline__ uint32_t warp_sum_u32(uint32_t x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(TIP_FULL_MASK, x, o);
    return x;
}

/* In one warp: the bin of hist[0..n) (n a multiple of 32, bins read through
 * `at`) holding the need-th largest element, counting from the top bin, and
 * how many of that bin are needed. */
template <class At>
__device__ int2 warp_find_from_top(int n, uint32_t need, At at) {
    const int lane = threadIdx.x & 31, per = n / 32;
    const int hi = n - per * lane; /* lane l owns bins [hi - per, hi), top lanes first */
    uint32_t sum = 0;
    for (int b = hi - per; b < hi; ++b) sum += at(b);
    uint32_t incl = sum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(TIP_FULL_MASK, incl, o);
        if (lane >= o) incl += y;
    }
    uint32_t above = incl - sum;
    int2 r = make_int2(-1, 0);
    if (above < need && need <= incl)
        for (int b = hi - 1; b >= hi - per; --b) {
            const uint32_t h = at(b);
            if (need <= above + h) {
                r = make_int2(b, (int)(need - above));
                break;
            }
            above += h;
        }
    const unsigned who = __ballot_sync(TIP_FULL_MASK, r.x >= 0);
    const int src = who ? __ffs(who) - 1 : 0;
    r.x = __shfl_sync(TIP_FULL_MASK, r.x, src);
    r.y = __shfl_sync(TIP_FULL_MASK, r.y, src);
    return who ? r : make_int2(0, 0);
}

#define CL_MARK(i)                                                                              \
    do {                                                                                        \
        if (a.trace && tid == 0) a.trace[((int64_t)unit * C + r) * CL_TRACE + (i)] = clock64();  \
    } while (0)

template <typename LT, int D>
__global__ void __launch_bounds__(CL_THREADS, 1) cluster_step_kernel(const cluster_args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    constexpr int EPL = 16 / sizeof(LT), UNR = CL_UNROLL;
    extern __shared__ __align__(16) unsigned char cl_smem[];
    __shared__ uint32_t scratch[32];
    __shared__ uint32_t n_list_s, n_cand_s, n_bnd_s, eq_taken, bd_bin, bd_need;
    __shared__ uint32_t warp_above[CL_THREADS / 32], warp_in[CL_THREADS / 32];
    const int C = (int)cluster.num_blocks(), r = (int)cluster.block_rank();
    const int unit = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n_warps = CL_THREADS / 32;
    const tip_args &t = a.tip;
    const attn_args &at = a.attn;
    const int hpu = at.hpu, bpc = cl_bins_per_cta(C);
    const cluster_layout L = cluster_layout_for(t.chunk, C, a.k_cap, hpu, D);
    uint32_t *keys = reinterpret_cast<uint32_t *>(cl_smem + L.keys);
    uint32_t *hist = reinterpret_cast<uint32_t *>(cl_smem + L.hist);
    uint32_t *red = reinterpret_cast<uint32_t *>(cl_smem + L.red);
    uint32_t *tot = reinterpret_cast<uint32_t *>(cl_smem + L.tot);
    uint32_t *nsel = reinterpret_cast<uint32_t *>(cl_smem + L.nsel);
    uint32_t *ncand = reinterpret_cast<uint32_t *>(cl_smem + L.ncand);
    float *q_s = reinterpret_cast<float *>(cl_smem + L.q);
    int32_t *list = reinterpret_cast<int32_t *>(cl_smem + L.list);
    int32_t *cands = reinterpret_cast<int32_t *>(cl_smem + L.cands);
    uint2 *stage = reinterpret_cast<uint2 *>(cl_smem + L.stage);
    float *comb = reinterpret_cast<float *>(cl_smem + L.comb);
    float *part = reinterpret_cast<float *>(cl_smem + L.part);
    const int t_begin = r * t.chunk, t_end = min(t_begin + t.chunk, t.n_tokens);

    /* ---- 1. TIP over this CTA's slice ---------------------------------- */
    const int lpt = t.n_lab / EPL; /* lanes per token, a power of two */
    const int rl = lane & (lpt - 1), slot = tid / lpt, slots = CL_THREADS / lpt, step = UNR * slots;
    const LT *lab = reinterpret_cast<const LT *>(t.labels) + unit * t.lab_head_stride;
    const float *scl = t.lab_scale ? t.lab_scale + unit * t.scale_head_stride : NULL;
    pdl_wait();
    CL_MARK(0);
    uint4 raw[UNR];
    float sc[UNR];
    tip_load<LT, UNR>(lab, scl, t.n_lab, t_begin, slots, slot, rl, t_end, raw, sc);
    for (int i = tid; i < TIP_BINS1; i += CL_THREADS) hist[i] = 0;
    for (int i = tid; i < hpu * D / 4; i += CL_THREADS)
        reinterpret_cast<float4 *>(q_s)[i] =
            reinterpret_cast<const float4 *>(t.q + (int64_t)unit * hpu * D)[i];
    float qs[EPL];
#pragma unroll
    for (int e = 0; e < EPL; ++e) {
        const int coord = t.lab_idx[unit * t.n_lab + rl * EPL + e];
        float s = 0.f;
        for (int h = 0; h < hpu; ++h) s += t.q[(int64_t)(unit * hpu + h) * D + coord];
        qs[e] = s;
    }
    if (tid == 0) n_list_s = n_cand_s = n_bnd_s = eq_taken = 0;
    __syncthreads();
    for (int t0 = t_begin; t0 < t_end; t0 += step) {
        uint4 nraw[UNR];
        float nsc[UNR];
        tip_load<LT, UNR>(lab, scl, t.n_lab, t0 + step, slots, slot, rl, t_end, nraw, nsc);
#pragma unroll
        for (int j = 0; j < UNR; ++j) {
            const int tok = t0 + j * slots + slot;
            float part_s = 0.f;
            dot_label(raw[j], qs, part_s, LT());
            for (int o = 1; o < lpt; o <<= 1) part_s += __shfl_xor_sync(TIP_FULL_MASK, part_s, o);
            if (tok < t_end && rl == 0) {
                const uint32_t key = score_key(part_s * sc[j]);
                keys[tok - t_begin] = key;
                atomicAdd(&hist[key >> TIP_SHIFT1], 1u);
            }
        }
#pragma unroll
        for (int j = 0; j < UNR; ++j) raw[j] = nraw[j], sc[j] = nsc[j];
    }
    pdl_trigger();
    CL_MARK(1);
    cl_arrive();
    cl_wait();
    __syncthreads();
    CL_MARK(2);

    /* ---- 2. this CTA's slice of the cluster's histogram ---------------- */
    uint32_t my_total = 0;
    for (int i = tid; i < bpc; i += CL_THREADS) {
        uint32_t s = 0;
        const int bin = r * bpc + i;
        if (bin < TIP_BINS1)
            for (int c = 0; c < C; ++c) s += cluster.map_shared_rank(hist, c)[bin];
        red[i] = s;
        my_total += s;
    }
    my_total = warp_sum_u32(my_total);
    if (lane == 0) scratch[warp] = my_total;
    __syncthreads();
    if (tid < C) {
        uint32_t s = 0;
        for (int w = 0; w < n_warps; ++w) s += scratch[w];
        cluster.map_shared_rank(tot, tid)[r] = s;
    }
    cl_arrive();
    cl_wait();
    __syncthreads();
    CL_MARK(3);

    /* ---- 3. the boundary bin; this CTA's tokens above it and in it ------ */
    /* The slice holding the k-th largest, copied here (hist is free: the
     * other CTAs read it before the last barrier). */
    uint32_t need_s = (uint32_t)a.k;
    int s_bd = 0;
    for (int c = C - 1; c >= 0; --c) {
        if (need_s <= tot[c]) {
            s_bd = c;
            break;
        }
        need_s -= tot[c];
    }
    {
        const uint32_t *rs = cluster.map_shared_rank(red, s_bd);
        for (int i = tid; i < bpc; i += CL_THREADS) hist[i] = rs[i];
    }
    __syncthreads();
    if (warp == 0) {
        const int2 b = warp_find_from_top(bpc, need_s, [&](int i) { return hist[i]; });
        if (lane == 0) bd_bin = (uint32_t)(s_bd * bpc + b.x), bd_need = (uint32_t)b.y;
    }
    __syncthreads();
    const uint32_t B = bd_bin, need0 = bd_need;
    /* Two passes over the keys (shared memory, cheap): count per warp, then
     * write at the warp's offset; no atomics, and the lists stay in token
     * order. Warp w takes keys [w * span, (w + 1) * span). */
    const int n_here = max(t_end - t_begin, 0), span = (n_here + 32 * n_warps - 1) / (32 * n_warps) * 32;
    const int w_begin = warp * span, w_end = min(w_begin + span, n_here);
    uint32_t n_above = 0, n_in = 0;
    for (int i0 = w_begin; i0 < w_end; i0 += 32) { /* warp-uniform: span is a multiple of 32 */
        const int i = i0 + lane;
        const bool live = i < w_end;
        const uint32_t bin = live ? keys[i] >> TIP_SHIFT1 : 0u;
        n_above += __popc(__ballot_sync(TIP_FULL_MASK, live && bin > B));
        n_in += __popc(__ballot_sync(TIP_FULL_MASK, live && bin == B));
    }
    if (lane == 0) warp_above[warp] = n_above, warp_in[warp] = n_in;
    __syncthreads();
    uint32_t at_above = 0, at_in = 0;
    for (int w2 = 0; w2 < warp; ++w2) at_above += warp_above[w2], at_in += warp_in[w2];
    if (tid == 0) {
        uint32_t sa = 0, si = 0;
        for (int w2 = 0; w2 < n_warps; ++w2) sa += warp_above[w2], si += warp_in[w2];
        n_list_s = sa, n_cand_s = si;
    }
    const uint32_t lt = (1u << lane) - 1u;
    for (int i0 = w_begin; i0 < w_end; i0 += 32) {
        const int i = i0 + lane;
        const bool live = i < w_end;
        const uint32_t bin = live ? keys[i] >> TIP_SHIFT1 : 0u;
        const unsigned ma = __ballot_sync(TIP_FULL_MASK, live && bin > B);
        const unsigned mi = __ballot_sync(TIP_FULL_MASK, live && bin == B);
        const uint32_t pa = at_above + __popc(ma & lt), pi = at_in + __popc(mi & lt);
        if (live && bin > B && pa < (uint32_t)a.k) list[pa] = t_begin + i;
        if (live && bin == B && pi < (uint32_t)t.chunk) cands[pi] = t_begin + i;
        at_above += __popc(ma);
        at_in += __popc(mi);
    }
    __syncthreads();
    /* The counts are consistent by construction (k - need0 tokens above the
     * boundary in all); the bounds only keep inconsistent input in range. */
    const uint32_t n_mine = min(n_list_s, (uint32_t)a.k - need0);
    if (tid < C) cluster.map_shared_rank(nsel, tid)[r] = n_mine;
    if (tid == 0) cluster.map_shared_rank(ncand, 0)[r] = min(n_cand_s, (uint32_t)t.chunk);
    CL_MARK(4);
    cl_arrive();

    /* ---- 4. attend to this CTA's tokens; CTA 0 resolves the boundary ---- */
    uint32_t qf[D / 16][4];
    {
        const int g = lane >> 2;
        attn_load_q<D>(q_s + (g < hpu ? g : 0) * D, g < hpu, at.scale_log2, lane & 3, qf);
    }
    const int kvh = unit;
    const __half *K = at.k + (int64_t)kvh * at.head_stride, *V = at.v + (int64_t)kvh * at.head_stride;
    attn_warp<D> w;
    w.init();
    attn_warp_list<D, false>(K, V, qf, list, (int)n_mine, at.n_rows, warp, n_warps, w);
    cl_wait(); /* every CTA's counts are in */
    __syncthreads();
    CL_MARK(5);
    uint32_t off = 0;
    for (int c = 0; c < r; ++c) off += nsel[c];
    int32_t *gsel = a.sel + (int64_t)unit * a.sel_stride;
    for (uint32_t i = tid; i < n_mine; i += CL_THREADS)
        if (off + i < (uint32_t)a.k) gsel[off + i] = list[i];

    if (r != 0) {
        float *dst = cluster.map_shared_rank(part, 0) + (size_t)r * hpu * (D + 2);
        attn_cta_combine<D>(w, hpu, comb, [&](int h, int d, float O, float M, float Lsum) {
            dst[h * (D + 2) + d] = O;
            if (d == 0) dst[h * (D + 2) + D] = M, dst[h * (D + 2) + D + 1] = Lsum;
        });
        CL_MARK(6);
        cl_arrive(); /* partial delivered; CTA 0 has finished reading this CTA's candidates */
        cl_wait();
        CL_MARK(7);
        return;
    }

    /* CTA 0: gather the candidates (key, token) of every CTA, one per thread
     * at a time, so that the remote loads of all CTAs are in flight together. */
    uint32_t first[CL_MAX + 1];
    first[0] = 0;
#pragma unroll
    for (int c = 0; c < CL_MAX; ++c) first[c + 1] = first[c] + (c < C ? ncand[c] : 0u);
    const uint32_t m = first[CL_MAX];
    const bool global = m > CL_STAGE;
    uint2 *cl_list = global ? a.cand + unit * a.cand_stride : stage;
    for (uint32_t i = tid; i < m; i += CL_THREADS) {
        int c = 0; /* the last CTA whose candidates start at or before i */
        uint32_t base = 0;
#pragma unroll
        for (int j = 1; j < CL_MAX; ++j)
            if (j < C && i >= first[j]) c = j, base = first[j];
        const int32_t tok = cluster.map_shared_rank(cands, c)[i - base];
        cl_list[i] = make_uint2(cluster.map_shared_rank(keys, c)[tok - c * t.chunk], (uint32_t)tok);
    }
    if (global) __threadfence_block();
    __syncthreads();
    CL_MARK(6);
    cl_arrive(); /* no remote reads after this: the other CTAs may finish */
    uint32_t need = need0, T = 0;
    const bool take_all = m <= need0;
    if (!take_all) T = resolve_threshold(cl_list, global, m, B, need, hist, scratch);
    CL_MARK(8);
    /* The chosen candidates follow CTA 0's own tokens in its list, and the
     * other CTAs' tokens in the global one. */
    int32_t *bnd = list + n_mine;
    for (uint32_t i0 = 0; i0 < m; i0 += CL_THREADS) {
        const uint32_t i = i0 + tid;
        if (i >= m) break;
        const uint2 e = cand_get(cl_list, i, global);
        bool take = take_all || e.x > T;
        if (!take && e.x == T) take = atomicAdd(&eq_taken, 1u) < need;
        if (take) {
            const uint32_t pos = atomicAdd(&n_bnd_s, 1u);
            if (pos < need0) {
                bnd[pos] = (int32_t)e.y;
                gsel[a.k - need0 + pos] = (int32_t)e.y;
            }
        }
    }
    __syncthreads();
    attn_warp_list<D, false>(K, V, qf, bnd, (int)need0, at.n_rows, warp, n_warps, w);
    attn_cta_combine<D>(w, hpu, comb, [&](int h, int d, float O, float M, float Lsum) {
        part[h * (D + 2) + d] = O;
        if (d == 0) part[h * (D + 2) + D] = M, part[h * (D + 2) + D + 1] = Lsum;
    });
    cl_wait(); /* every partial is in */
    __syncthreads();
    CL_MARK(7);

    /* ---- 5. merge the C partials ---------------------------------------- */
    for (int i = tid; i < hpu * D; i += CL_THREADS) {
        const int h = i / D, d = i - h * D;
        float M = -INFINITY;
        for (int c = 0; c < C; ++c) M = fmaxf(M, part[(c * hpu + h) * (D + 2) + D]);
        float O = 0.f, Lsum = 0.f;
        for (int c = 0; c < C; ++c) {
            const float *pc = part + (c * hpu + h) * (D + 2);
            if (pc[D] == -INFINITY) continue; /* a CTA that attended to no token */
            const float e = exp2f(pc[D] - M);
            O += e * pc[d];
            Lsum += e * pc[D + 1];
        }
        at.out[(int64_t)(unit * hpu + h) * D + d] = O / Lsum;
    }
    CL_MARK(9);
#endif
}

/* ---- host side ---------------------------------------------------------- */

static inline void *cluster_kernel_ptr(bool int8_labels, int D) {
    if (int8_labels) return D == 128 ? (void *)cluster_step_kernel<int8_t, 128> : (void *)cluster_step_kernel<int8_t, 64>;
    return D == 128 ? (void *)cluster_step_kernel<__half, 128> : (void *)cluster_step_kernel<__half, 64>;
}

/* Lets the kernel use up to smem_limit bytes of dynamic shared memory and
 * clusters over the portable 8 CTAs. */
static inline cudaError_t cluster_prepare(bool int8_labels, int D, int smem_limit) {
    const void *k = cluster_kernel_ptr(int8_labels, D);
    cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_limit);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return e;
}

/* How many clusters of C CTAs (smem bytes each) fit on the device at once. */
static inline cudaError_t cluster_active(bool int8_labels, int D, int C, int n_units, size_t smem, int *active) {
    *active = 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(C, n_units);
    cfg.blockDim = dim3(CL_THREADS);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = C;
    attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    return cudaOccupancyMaxActiveClusters(active, cluster_kernel_ptr(int8_labels, D), &cfg);
}

static inline cudaError_t cluster_launch(const cluster_args *a, bool int8_labels, int D, int C, int n_units,
                                         size_t smem, cudaStream_t st, bool pdl) {
    const dim3 grid(C, n_units), block(CL_THREADS);
    if (int8_labels)
        return D == 128 ? launch_kc(cluster_step_kernel<int8_t, 128>, grid, block, smem, st, pdl, (unsigned)C, *a)
                        : launch_kc(cluster_step_kernel<int8_t, 64>, grid, block, smem, st, pdl, (unsigned)C, *a);
    return D == 128 ? launch_kc(cluster_step_kernel<__half, 128>, grid, block, smem, st, pdl, (unsigned)C, *a)
                    : launch_kc(cluster_step_kernel<__half, 64>, grid, block, smem, st, pdl, (unsigned)C, *a);
}

#endif
