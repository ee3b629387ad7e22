/* Matrix products on block-format weights, for decode (one token) and for a
 * prompt chunk (several tokens per weight pass).
 *
 *   y[t][r] = sum_c W[r][c] x[t][c]    t < n_tok, r < rows
 *
 * W stays in its GGUF block format; a warp takes ROWS consecutive rows and
 * its lanes walk the row in groups of 8 elements (quant_block.h decodes a
 * group), so consecutive lanes read consecutive bytes. Each row is first
 * copied into shared memory with 16-byte loads (a block's fields are
 * unaligned bytes; decoding them from shared memory costs one narrow load
 * each instead of one global load each), a chunk at a time, double
 * buffered with cp.async so the next chunk's bytes are in flight while the
 * lanes decode this one. The activations are read through the read-only
 * cache: every warp of the grid reads the same x. The versions this kernel
 * was chosen from, and their timings, are in bench/cuda/qmatmul.cu and
 * docs/perf-notes.md. */
#ifndef FASA_CUDA_QMATMUL_CUH
#define FASA_CUDA_QMATMUL_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "../quant.h"
#include "../quant_block.h"
#include "launch.cuh"
#include "mma.cuh"

/* Elements per block and bytes per block of each format as the kernels see
 * them (whole-element formats in blocks of 8). */
template <int T> struct qfmt;
#define QFMT(T_, ELEMS, BYTES, FN)                                                               \
    template <> struct qfmt<T_> {                                                                \
        static constexpr int elems = ELEMS, bytes = BYTES;                                       \
        static __device__ __forceinline__ void dequant8(const uint8_t *b, int j, float *o) { FN(b, j, o); } \
    };
QFMT(FASA_TYPE_F32, 8, 32, qb_dequant8_f32)
QFMT(FASA_TYPE_F16, 8, 16, qb_dequant8_f16)
QFMT(FASA_TYPE_BF16, 8, 16, qb_dequant8_bf16)
QFMT(FASA_TYPE_Q4_0, 32, 18, qb_dequant8_q4_0)
QFMT(FASA_TYPE_Q4_1, 32, 20, qb_dequant8_q4_1)
QFMT(FASA_TYPE_Q5_0, 32, 22, qb_dequant8_q5_0)
QFMT(FASA_TYPE_Q5_1, 32, 24, qb_dequant8_q5_1)
QFMT(FASA_TYPE_Q8_0, 32, 34, qb_dequant8_q8_0)
QFMT(FASA_TYPE_Q2_K, 256, 84, qb_dequant8_q2_k)
QFMT(FASA_TYPE_Q3_K, 256, 110, qb_dequant8_q3_k)
QFMT(FASA_TYPE_Q4_K, 256, 144, qb_dequant8_q4_k)
QFMT(FASA_TYPE_Q5_K, 256, 176, qb_dequant8_q5_k)
QFMT(FASA_TYPE_Q6_K, 256, 210, qb_dequant8_q6_k)
#undef QFMT

/* Calls f.template operator()<T>() for the format type id; false for one
 * the kernels do not know. Every launch dispatches through this one list. */
template <class F> static bool qfmt_dispatch(uint32_t type, const F &f) {
    switch (type) {
#define QCASE(T_)                                                                                \
    case T_: f.template operator()<T_>(); return true;
        QCASE(FASA_TYPE_F32) QCASE(FASA_TYPE_F16) QCASE(FASA_TYPE_BF16) QCASE(FASA_TYPE_Q4_0)
        QCASE(FASA_TYPE_Q4_1) QCASE(FASA_TYPE_Q5_0) QCASE(FASA_TYPE_Q5_1) QCASE(FASA_TYPE_Q8_0)
        QCASE(FASA_TYPE_Q2_K) QCASE(FASA_TYPE_Q3_K) QCASE(FASA_TYPE_Q4_K) QCASE(FASA_TYPE_Q5_K)
        QCASE(FASA_TYPE_Q6_K)
#undef QCASE
    }
    return false;
}

#define QMM_WARPS 4         /* warps per CTA */
#define QMM_CHUNK 2048      /* bytes of a row staged per buffer */

typedef struct qmm_args {
    const uint8_t *w;   /* rows of row_bytes each; the allocation extends 16 bytes past the last row */
    int64_t row_bytes;
    int64_t rows, cols;
    const float *x;     /* [n_tok][ldx] */
    int64_t ldx;
    float *y;           /* [n_tok][ldy] */
    int64_t ldy;
    int32_t n_tok;
    const float *bias;  /* optional [rows], added to every token's output */
} qmm_args;


/* Stages row bytes [off, off + chunk) (16-byte aligned span covering
 * them) into buf; returns the offset of byte `off` inside buf. */
__device__ __forceinline__ int qmm_stage(uint8_t *buf, const uint8_t *row, int64_t off, int64_t row_bytes,
                                         int lane, int chunk = QMM_CHUNK) {
    const uint8_t *start = row + off;
    const uintptr_t a = (uintptr_t)start & ~(uintptr_t)15;
    const int lead = (int)((uintptr_t)start - a);
    const int64_t end = off + chunk < row_bytes ? off + chunk : row_bytes;
    const int n16 = (int)((lead + (end - off) + 15) / 16);
    for (int i = lane; i < n16; i += 32) cp16_zfill(buf + 16 * i, (const void *)(a + 16 * i), true);
    return lead;
}

/* One warp, ROWS rows, NT tokens. Chunks hold whole blocks. */
template <int T, int NT>
__global__ void __launch_bounds__(QMM_WARPS * 32) qmm_kernel(const qmm_args a) {
    using F = qfmt<T>;
    constexpr int GPB = F::elems / 8; /* groups of 8 per block */
    constexpr int BLOCKS_PER_CHUNK = (QMM_CHUNK - 16) / F::bytes;
    __shared__ __align__(16) uint8_t smem[QMM_WARPS][2][QMM_CHUNK + 16];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * QMM_WARPS + warp;
    if (r >= a.rows) return;
    const uint8_t *row = a.w + r * a.row_bytes;
    const int64_t n_blocks = a.cols / F::elems;
    const int64_t chunk_bytes = (int64_t)BLOCKS_PER_CHUNK * F::bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;

    int lead[2];
    lead[0] = qmm_stage(smem[warp][0], row, 0, a.row_bytes, lane);
    cp_commit();
    int buf = 0;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += BLOCKS_PER_CHUNK, buf ^= 1) {
        const int64_t next = (b0 + BLOCKS_PER_CHUNK) * F::bytes;
        if (next < a.row_bytes) lead[buf ^ 1] = qmm_stage(smem[warp][buf ^ 1], row, next, a.row_bytes, lane);
        cp_commit();
        cp_wait<1>();
        __syncwarp();
        const uint8_t *chunk = smem[warp][buf] + lead[buf];
        const int nb = (int)(n_blocks - b0 < BLOCKS_PER_CHUNK ? n_blocks - b0 : BLOCKS_PER_CHUNK);
        for (int g = lane; g < nb * GPB; g += 32) {
            float w8[8];
            F::dequant8(chunk + (g / GPB) * F::bytes, g % GPB, w8);
            const int64_t c = (b0 * F::elems) + 8 * (int64_t)g;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                if (t >= a.n_tok) break;
                const float4 *xp = reinterpret_cast<const float4 *>(a.x + t * a.ldx + c);
                const float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
                acc[t] += w8[0] * x0.x + w8[1] * x0.y + w8[2] * x0.z + w8[3] * x0.w + w8[4] * x1.x +
                          w8[5] * x1.y + w8[6] * x1.z + w8[7] * x1.w;
            }
        }
        __syncwarp(); /* the buffer is refilled two chunks on */
        (void)chunk_bytes;
    }
    cp_wait<0>();
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < a.n_tok) a.y[t * a.ldy + r] = v + (a.bias ? a.bias[r] : 0.f);
    }
}

/* ---- decode kernels for the K-quants most models are made of ------------
 * The generic kernel above decodes eight elements per lane from shared
 * memory, one narrow load per field, and measured instruction bound
 * (docs/perf-notes.md); one token on Q4_K or Q6_K weights takes these. */

/* quant_k_scale_min on the 12 scale bytes held in three words (registers,
 * where a byte array indexed at run time would go to local memory). */
__device__ __forceinline__ void qmm_k_scale_min(uint32_t w0, uint32_t w1, uint32_t w2, int s, int &sc, int &mn) {
    if (s < 4) {
        sc = (int)(w0 >> 8 * s) & 63;
        mn = (int)(w1 >> 8 * s) & 63;
    } else {
        const int j = 8 * (s - 4);
        const uint32_t b = (w2 >> j) & 0xff;
        sc = (int)((b & 0xf) | ((w0 >> j >> 6) & 3) << 4);
        mn = (int)((b >> 4) | ((w1 >> j >> 6) & 3) << 4);
    }
}

__device__ __forceinline__ float qmm_half(uint32_t bits16) {
    return __half2float(__ushort_as_half((unsigned short)(bits16 & 0xffff)));
}

/* ---- decode products with int8 activations ------------------------------
 * The activations of a decoded token are rounded once per input vector to
 * int8 in groups of 32 (x ~ d q, d = max |x| / 127, q = round(x / d): the
 * CPU's quant_x8.c definition, so both backends compute the same products),
 * and a lane's 8 weights meet them in two dp4a instructions instead of 8
 * conversions and 8 FMAs. A lane takes 8 consecutive elements of a block,
 * so a warp step reads one block and 256 consecutive activation bytes;
 * each warp keeps QMM_KQ_UNROLL blocks' loads in flight before using the
 * first, and a row is split over several warps when the matrix has few
 * rows, so that every multiprocessor has work. Versions and timings:
 * bench/cuda/qmatmul.cu and docs/perf-notes.md. */

struct qmm_x8 {
    const int8_t *q; /* [cols] */
    const float *d;  /* [cols / 32] */
};

/* Rounds the group of 32 values v (one per lane of a whole warp) into
 * q[lane] and *d. */
__device__ __forceinline__ void qmm_round32(float v, int lane, int8_t *q, float *d) {
    float m = fabsf(v);
    bool finite = isfinite(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    finite = __all_sync(0xffffffffu, finite);
    const float dg = finite ? m / 127.f : __int_as_float(0x7fc00000); /* NaN in, NaN out */
    q[lane] = (int8_t)(finite && m > 0.f ? __float2int_rn(v / dg) : 0);
    if (lane == 0) *d = dg;
}

/* x to int8, one warp per group of 32. n is a multiple of 32. */
__global__ void qmm_quantize_x8_kernel(const float *x, int64_t n, int8_t *q, float *d) {
    pdl_enter();
    const int64_t g = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (32 * g >= n) return;
    qmm_round32(x[32 * g + lane], lane, q + 32 * g, d + g);
}

/* Q4_K: sub-block s is d sc[s] n - dmin mn[s]; a lane's part of it is
 * d_x (d sc sum(n q) - dmin mn sum(q)) over its 8 elements. */
struct qmm_kq_q4k {
    static constexpr int bytes = 144;
    struct frag {
        uint4 h; /* d | dmin, and the 12 scale bytes */
        uint2 q, x;
        float dx;
    };
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, const qmm_args &, const qmm_x8 &x8,
                                                int64_t b, int lane) {
        const int s = lane >> 2, off = 8 * (lane & 3);
        f.h = *reinterpret_cast<const uint4 *>(blk);
        f.q = *reinterpret_cast<const uint2 *>(blk + 16 + 32 * (s >> 1) + off);
        f.x = __ldg(reinterpret_cast<const uint2 *>(x8.q + 256 * b + 8 * lane));
        f.dx = __ldg(x8.d + 8 * b + s);
    }
    static __device__ __forceinline__ float dot(const frag &f, int lane) {
        const int s = lane >> 2, shift = 4 * (s & 1);
        int sc, mn;
        qmm_k_scale_min(f.h.y, f.h.z, f.h.w, s, sc, mn);
        const int nq = __dp4a((int)((f.q.y >> shift) & 0x0F0F0F0Fu), (int)f.x.y,
                              __dp4a((int)((f.q.x >> shift) & 0x0F0F0F0Fu), (int)f.x.x, 0));
        const int sq = __dp4a(0x01010101, (int)f.x.y, __dp4a(0x01010101, (int)f.x.x, 0));
        return f.dx * (qmm_half(f.h.x) * (float)(sc * nq) - qmm_half(f.h.x >> 16) * (float)(mn * sq));
    }
};

/* Q6_K (210-byte blocks, only 2-byte aligned): lane l takes elements 8 l ..
 * 8 l + 7; its low nibbles and high bit pairs are read as three aligned
 * words each and shifted into place; the codes minus 32 as signed bytes. */
struct qmm_kq_q6k {
    static constexpr int bytes = 210;
    struct frag {
        uint32_t ql[3], qh[3];
        int sh_l, sh_h;
        uint32_t dsc; /* d (16 bits) and the lane's scale byte */
        uint2 x;
        float dx;
    };
    static __device__ __forceinline__ void words3(const uint8_t *p, uint32_t *w, int &sh) {
        const uint32_t *a = reinterpret_cast<const uint32_t *>((uintptr_t)p & ~(uintptr_t)3);
        sh = (int)((uintptr_t)p & 3) * 8;
        w[0] = a[0], w[1] = a[1], w[2] = a[2];
    }
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, const qmm_args &, const qmm_x8 &x8,
                                                int64_t b, int lane) {
        const int half = lane >> 4, g = (lane >> 2) & 3, off = 8 * (lane & 3);
        words3(blk + 64 * half + 32 * (g & 1) + off, f.ql, f.sh_l);
        words3(blk + 128 + 32 * half + off, f.qh, f.sh_h);
        f.dsc = (uint32_t)blk[208] | (uint32_t)blk[209] << 8 | (uint32_t)blk[192 + lane / 2] << 16;
        f.x = __ldg(reinterpret_cast<const uint2 *>(x8.q + 256 * b + 8 * lane));
        f.dx = __ldg(x8.d + 8 * b + (lane >> 2));
    }
    static __device__ __forceinline__ float dot(const frag &f, int lane) {
        const int g = (lane >> 2) & 3, ls = 4 * (g >> 1), hs = 2 * g;
        const uint32_t l0 = __funnelshift_r(f.ql[0], f.ql[1], f.sh_l), l1 = __funnelshift_r(f.ql[1], f.ql[2], f.sh_l);
        const uint32_t h0 = __funnelshift_r(f.qh[0], f.qh[1], f.sh_h), h1 = __funnelshift_r(f.qh[1], f.qh[2], f.sh_h);
        const uint32_t n0 = ((l0 >> ls) & 0x0F0F0F0Fu) | (((h0 >> hs) & 0x03030303u) << 4);
        const uint32_t n1 = ((l1 >> ls) & 0x0F0F0F0Fu) | (((h1 >> hs) & 0x03030303u) << 4);
        const int nq =
            __dp4a((int)__vsub4(n1, 0x20202020u), (int)f.x.y, __dp4a((int)__vsub4(n0, 0x20202020u), (int)f.x.x, 0));
        return f.dx * qmm_half(f.dsc) * (float)((int)(int8_t)(f.dsc >> 16) * nq);
    }
};

/* Blocks whose loads a warp has in flight before it uses the first. */
#ifndef QMM_KQ_UNROLL
#define QMM_KQ_UNROLL 4
#endif

/* KSPLIT warps share a row (each takes every KSPLIT-th block; their sums
 * meet in shared memory); 8 warps per CTA. KQ decodes one block per warp
 * step (the workbench's float-activation decoders fit here too). */
template <class KQ, int KSPLIT, int U>
__global__ void __launch_bounds__(256) qmm_kq_kernel(const qmm_args a, const qmm_x8 x8) {
    __shared__ float part[8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (8 / KSPLIT) + warp / KSPLIT;
    const int64_t n_blocks = a.cols / 256;
    float acc = 0.f;
    if (row < a.rows) {
        const uint8_t *w = a.w + row * a.row_bytes;
        for (int64_t b0 = warp % KSPLIT; b0 < n_blocks; b0 += (int64_t)KSPLIT * U) {
            typename KQ::frag f[U];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int64_t b = b0 + (int64_t)u * KSPLIT;
                if (b < n_blocks) KQ::load(f[u], w + b * KQ::bytes, a, x8, b, lane);
            }
#pragma unroll
            for (int u = 0; u < U; ++u)
                if (b0 + (int64_t)u * KSPLIT < n_blocks) acc += KQ::dot(f[u], lane);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (KSPLIT > 1) {
        if (lane == 0) part[warp] = acc;
        __syncthreads();
        if (warp % KSPLIT || lane) return;
        for (int k = 1; k < KSPLIT; ++k) acc += part[warp + k];
    }
    if (lane == 0 && row < a.rows) a.y[row] = acc + (a.bias ? a.bias[row] : 0.f);
}

/* Warps per row: a matrix of few rows is split so that it still covers
 * the GPU several times over (132 multiprocessors on an H200). */
static int qmm_kq_split(int64_t rows) { return rows <= 2048 ? 4 : rows <= 8192 ? 2 : 1; }

template <class KQ> static void qmm_kq_launch(const qmm_args &a, const qmm_x8 &x8, cudaStream_t st, int ksplit) {
    const unsigned grid = (unsigned)((a.rows * ksplit + 7) / 8);
    if (ksplit == 4) qmm_kq_kernel<KQ, 4, QMM_KQ_UNROLL><<<grid, 256, 0, st>>>(a, x8);
    else if (ksplit == 2) qmm_kq_kernel<KQ, 2, QMM_KQ_UNROLL><<<grid, 256, 0, st>>>(a, x8);
    else qmm_kq_kernel<KQ, 1, QMM_KQ_UNROLL><<<grid, 256, 0, st>>>(a, x8);
}

/* The same products with the row staged through shared memory (version 6,
 * the default): a warp
 * per row copies QMM_CHUNK-byte pieces of it with 16-byte cp.async (two
 * pieces in flight, as the generic kernel does) and decodes blocks from
 * there. A warp then has up to 4 KB of its row in flight instead of the few
 * blocks the register loads above hold, which is what a matrix-vector
 * product needs to reach DRAM bandwidth (bytes in flight = bandwidth x
 * latency, about 30 KB per multiprocessor on an H200). */
template <class KQ, int WARPS, int CHUNK>
__global__ void __launch_bounds__(WARPS * 32) qmm_kq_staged_kernel(const qmm_args a, const qmm_x8 x8) {
    constexpr int NB = (CHUNK - 16) / KQ::bytes; /* whole blocks per piece */
    __shared__ __align__(16) uint8_t smem[WARPS][2][CHUNK + 16];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARPS + warp;
    if (row >= a.rows) return;
    const uint8_t *w = a.w + row * a.row_bytes;
    const int64_t n_blocks = a.cols / 256, n_pieces = (n_blocks + NB - 1) / NB;
    int lead_cur = qmm_stage(smem[warp][0], w, 0, a.row_bytes, lane, CHUNK), lead_next = 0;
    cp_commit();
    float acc = 0.f;
    for (int64_t c = 0; c < n_pieces; ++c) {
        const int cur = (int)(c & 1);
        if (c + 1 < n_pieces) {
            lead_next = qmm_stage(smem[warp][cur ^ 1], w, (c + 1) * NB * KQ::bytes, a.row_bytes, lane, CHUNK);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncwarp();
        const uint8_t *buf = smem[warp][cur] + lead_cur;
        const int64_t b0 = c * NB;
        const int nb = n_blocks - b0 < NB ? (int)(n_blocks - b0) : NB;
#pragma unroll 2
        for (int i = 0; i < nb; ++i) {
            typename KQ::frag f;
            KQ::load(f, buf + i * KQ::bytes, a, x8, b0 + i, lane);
            acc += KQ::dot(f, lane);
        }
        __syncwarp(); /* the buffer is refilled two pieces on */
        lead_cur = lead_next;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) a.y[row] = acc + (a.bias ? a.bias[row] : 0.f);
}

/* Piece size of the staged kernel: 2, 4 or 8 KB (8, 4 or 2 warps per CTA,
 * 33 KB of shared memory either way); 4 KB measured best on an H200. */
#ifndef QMM_KQ_PIECE
#define QMM_KQ_PIECE 4096
#endif

template <class KQ>
static void qmm_kq_staged_launch(const qmm_args &a, const qmm_x8 &x8, cudaStream_t st, int piece = QMM_KQ_PIECE) {
    if (piece == 8192) qmm_kq_staged_kernel<KQ, 2, 8192><<<(unsigned)((a.rows + 1) / 2), 64, 0, st>>>(a, x8);
    else if (piece == 4096) qmm_kq_staged_kernel<KQ, 4, 4096><<<(unsigned)((a.rows + 3) / 4), 128, 0, st>>>(a, x8);
    else qmm_kq_staged_kernel<KQ, 8, 2048><<<(unsigned)((a.rows + 7) / 8), 256, 0, st>>>(a, x8);
}

/* ---- version 7: eight lanes per block, a row's blocks in flight ----------
 * A warp step covers four blocks (lanes 8i .. 8i + 7 take block i of the
 * step, a quarter of its elements each), so a lane's share of a block is one
 * 16-byte load (Q4_K's codes; Q6_K's 2-byte aligned blocks as aligned words)
 * and a warp keeps U steps, 4 U blocks, in flight in few registers: a whole
 * 4096-column row at U = 4 (2.3 KB of Q4_K), where versions 5 and 6 held one
 * block per warp step in registers or staged the row through shared memory.
 * One launch also takes several matrices of one format that read the same
 * input (segments: Q and K), and gate and up together, whose warps compute a
 * row of each and write silu(gate) * up (the CPU's SwiGLU). */

/* A weight load that skips L1 (the activations live there). */
__device__ __forceinline__ uint4 qmm_ld_stream(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t qmm_ld_stream32(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}

struct qmm_seg {
    const uint8_t *w;  /* rows of row_bytes each */
    int64_t row_bytes, rows;
    float *y;          /* [rows] */
    const float *bias; /* optional [rows] */
};

struct qmm_multi {
    qmm_seg s[3];
    int32_t n;    /* segments; rows of the launch = their rows, one after another */
    int32_t glu;  /* 1: s[0] gate and s[1] up of one shape; s[0].y = silu(gate) * up */
    int64_t cols; /* a multiple of 256 */
};

/* Q4_K: lane k of a block loads code bytes 16 k .. 16 k + 15, the low and
 * high nibbles of sub-blocks 2 j and 2 j + 1 (j = k / 2), 16 elements of each. */
struct qmm7_q4k {
    static constexpr int bytes = 144;
    struct frag {
        uint4 h, q; /* d | dmin and the 12 scale bytes; 16 code bytes */
    };
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, int k) {
        f.h = qmm_ld_stream(blk);
        f.q = qmm_ld_stream(blk + 16 + 16 * k);
    }
    static __device__ __forceinline__ float dot(const frag &f, const qmm_x8 &x8, int64_t b, int k) {
        const int j = k >> 1;
        const int8_t *xp = x8.q + 256 * b + 64 * j + 16 * (k & 1);
        const int4 xl = __ldg(reinterpret_cast<const int4 *>(xp)), xh = __ldg(reinterpret_cast<const int4 *>(xp + 32));
        const float2 dx = __ldg(reinterpret_cast<const float2 *>(x8.d + 8 * b + 2 * j));
        const uint32_t m4 = 0x0F0F0F0Fu, one = 0x01010101u;
        int nl = __dp4a((int)(f.q.x & m4), xl.x, 0), nh = __dp4a((int)((f.q.x >> 4) & m4), xh.x, 0);
        nl = __dp4a((int)(f.q.y & m4), xl.y, nl), nh = __dp4a((int)((f.q.y >> 4) & m4), xh.y, nh);
        nl = __dp4a((int)(f.q.z & m4), xl.z, nl), nh = __dp4a((int)((f.q.z >> 4) & m4), xh.z, nh);
        nl = __dp4a((int)(f.q.w & m4), xl.w, nl), nh = __dp4a((int)((f.q.w >> 4) & m4), xh.w, nh);
        const int sl = __dp4a((int)one, xl.w, __dp4a((int)one, xl.z, __dp4a((int)one, xl.y, __dp4a((int)one, xl.x, 0))));
        const int sh = __dp4a((int)one, xh.w, __dp4a((int)one, xh.z, __dp4a((int)one, xh.y, __dp4a((int)one, xh.x, 0))));
        int sc0, mn0, sc1, mn1;
        qmm_k_scale_min(f.h.y, f.h.z, f.h.w, 2 * j, sc0, mn0);
        qmm_k_scale_min(f.h.y, f.h.z, f.h.w, 2 * j + 1, sc1, mn1);
        const float d = qmm_half(f.h.x), dmin = qmm_half(f.h.x >> 16);
        return dx.x * (d * (float)(sc0 * nl) - dmin * (float)(mn0 * sl)) +
               dx.y * (d * (float)(sc1 * nh) - dmin * (float)(mn1 * sh));
    }
};

/* Q6_K: lane k of a block takes elements l0 .. l0 + 7 (l0 = 8 (k & 3)) of
 * the four 32-element quarters of half h = k / 4; their low nibbles are
 * bytes l0 .. of ql's two 32-byte runs, their high bit pairs bytes l0 .. of
 * qh, each read as three aligned words and shifted into place (every offset
 * is a multiple of 8 from the block's start, so one shift serves all). */
struct qmm7_q6k {
    static constexpr int bytes = 210;
    struct frag {
        uint32_t la[3], lb[3], qh[3], sc[3];
        uint32_t d;
        int sh;
    };
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, int k) {
        const int h = k >> 2, l0 = 8 * (k & 3);
        const uint32_t *a = reinterpret_cast<const uint32_t *>((uintptr_t)blk & ~(uintptr_t)3);
        f.sh = (int)((uintptr_t)blk & 3) * 8;
        const uint32_t *pa = a + (64 * h + l0) / 4, *pb = a + (64 * h + 32 + l0) / 4, *ph = a + (128 + 32 * h + l0) / 4,
                       *ps = a + (192 + 8 * h) / 4;
#pragma unroll
        for (int i = 0; i < 3; ++i) {
            f.la[i] = qmm_ld_stream32(pa + i), f.lb[i] = qmm_ld_stream32(pb + i);
            f.qh[i] = qmm_ld_stream32(ph + i), f.sc[i] = qmm_ld_stream32(ps + i);
        }
        f.d = *reinterpret_cast<const uint16_t *>(blk + 208);
    }
    static __device__ __forceinline__ float dot(const frag &f, const qmm_x8 &x8, int64_t b, int k) {
        const int h = k >> 2, l0 = 8 * (k & 3), is = (k & 3) >> 1;
        const uint32_t a0 = __funnelshift_r(f.la[0], f.la[1], f.sh), a1 = __funnelshift_r(f.la[1], f.la[2], f.sh);
        const uint32_t b0 = __funnelshift_r(f.lb[0], f.lb[1], f.sh), b1 = __funnelshift_r(f.lb[1], f.lb[2], f.sh);
        const uint32_t h0 = __funnelshift_r(f.qh[0], f.qh[1], f.sh), h1 = __funnelshift_r(f.qh[1], f.qh[2], f.sh);
        const uint32_t s0 = __funnelshift_r(f.sc[0], f.sc[1], f.sh), s1 = __funnelshift_r(f.sc[1], f.sc[2], f.sh);
        const int8_t *xp = x8.q + 256 * b + 128 * h + l0;
        const float4 dx = __ldg(reinterpret_cast<const float4 *>(x8.d + 8 * b + 4 * h));
        const float dxs[4] = {dx.x, dx.y, dx.z, dx.w};
        float acc = 0.f;
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            const uint32_t lo0 = m & 1 ? b0 : a0, lo1 = m & 1 ? b1 : a1;
            const int ls = 4 * (m >> 1), hs = 2 * m;
            const uint32_t n0 = ((lo0 >> ls) & 0x0F0F0F0Fu) | (((h0 >> hs) & 0x03030303u) << 4);
            const uint32_t n1 = ((lo1 >> ls) & 0x0F0F0F0Fu) | (((h1 >> hs) & 0x03030303u) << 4);
            const int2 x = __ldg(reinterpret_cast<const int2 *>(xp + 32 * m));
            const int nq = __dp4a((int)__vsub4(n1, 0x20202020u), x.y, __dp4a((int)__vsub4(n0, 0x20202020u), x.x, 0));
            const uint32_t sw = m < 2 ? s0 : s1; /* scale byte is + 2 m of the half's 8 */
            const int sc = (int)(int8_t)(sw >> (8 * (is + 2 * (m & 1))));
            acc += dxs[m] * (float)(sc * nq);
        }
        return qmm_half(f.d) * acc;
    }
};

/* NM matrices per warp (1, or 2 for gate and up), U warp steps of loads in
 * flight per matrix before the first is used; 8 warps per CTA. Launched as
 * a programmatic dependent launch: the first weight loads (which no kernel
 * writes) are issued before waiting for the kernel that made x8. */
template <class KQ, int NM, int U>
__global__ void __launch_bounds__(256) qmm7_kernel(const qmm_multi m, const qmm_x8 x8) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, k = lane & 7, sub = lane >> 3;
    int64_t row = (int64_t)blockIdx.x * 8 + warp;
    int s = 0;
    if (NM == 1)
        while (s < m.n - 1 && row >= m.s[s].rows) row -= m.s[s].rows, ++s;
    if (row >= m.s[s].rows) return;
    const int64_t nb = m.cols / 256;
    const uint8_t *w[NM];
#pragma unroll
    for (int i = 0; i < NM; ++i) w[i] = m.s[s + i].w + row * m.s[s + i].row_bytes;
    float acc[NM];
#pragma unroll
    for (int i = 0; i < NM; ++i) acc[i] = 0.f;
    for (int64_t b0 = sub; b0 < nb; b0 += 4 * U) {
        typename KQ::frag f[NM][U];
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int i = 0; i < NM; ++i)
                if (b0 + 4 * u < nb) KQ::load(f[i][u], w[i] + (b0 + 4 * u) * KQ::bytes, k);
        if (b0 == sub) pdl_wait();
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
            for (int i = 0; i < NM; ++i)
                if (b0 + 4 * u < nb) acc[i] += KQ::dot(f[i][u], x8, b0 + 4 * u, k);
    }
    pdl_trigger();
#pragma unroll
    for (int i = 0; i < NM; ++i)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], o);
    if (lane) return;
    if (NM == 2) {
        const float g = acc[0];
        m.s[0].y[row] = g / (1.0f + expf(-g)) * acc[1];
    } else {
        m.s[s].y[row] = acc[0] + (m.s[s].bias ? m.s[s].bias[row] : 0.f);
    }
}

/* The one-matrix form of a product (no fusion). */
static qmm_multi qmm_single(const qmm_args &a) {
    qmm_multi m = {};
    m.s[0] = qmm_seg{a.w, a.row_bytes, a.rows, a.y, a.bias};
    m.n = 1;
    m.cols = a.cols;
    return m;
}

/* Warp steps in flight per matrix (0: per format, Q4_K 4, a 4096-column
 * row whole at 64 registers; Q6_K 2, whose 4 would take 97). */
#ifndef QMM7_UNROLL
#define QMM7_UNROLL 0
#endif

template <class KQ> static void qmm7_launch(const qmm_multi &m, const qmm_x8 &x8, cudaStream_t st, int unroll) {
    int64_t rows = 0;
    for (int i = 0; i < (m.glu ? 1 : m.n); i++) rows += m.s[i].rows;
    const dim3 grid((unsigned)((rows + 7) / 8)), block(256);
    if (m.glu) launch_k(unroll >= 4 ? qmm7_kernel<KQ, 2, 2> : qmm7_kernel<KQ, 2, 1>, grid, block, 0, st, true, m, x8);
    else
        launch_k(unroll >= 4 ? qmm7_kernel<KQ, 1, 4> : unroll == 2 ? qmm7_kernel<KQ, 1, 2> : qmm7_kernel<KQ, 1, 1>, grid,
                 block, 0, st, true, m, x8);
}

/* Version 7 on type's weights (Q4_K or Q6_K); false for another type. */
static bool qmm7_launch_type(uint32_t type, const qmm_multi &m, const qmm_x8 &x8, cudaStream_t st,
                             int unroll = QMM7_UNROLL) {
    if (type == FASA_TYPE_Q4_K) qmm7_launch<qmm7_q4k>(m, x8, st, unroll ? unroll : 4);
    else if (type == FASA_TYPE_Q6_K) qmm7_launch<qmm7_q6k>(m, x8, st, unroll ? unroll : 2);
    else return false;
    return true;
}

/* Whether a product takes the int8 path: one token on Q4_K or Q6_K weights. */
static bool qmm_takes_x8(uint32_t type, int32_t n_tok) {
    return n_tok == 1 && (type == FASA_TYPE_Q4_K || type == FASA_TYPE_Q6_K);
}

/* Rounds x[0, n) into x8 (n a multiple of 32). */
static void qmm_quantize_x8(const float *x, int64_t n, int8_t *q, float *d, cudaStream_t st) {
    launch_k(qmm_quantize_x8_kernel, dim3((unsigned)((n / 32 + 7) / 8)), dim3(256), 0, st, true, x, n, q, d);
}

/* The kernel of the int8 path: QMM_KQ_DEFAULT warps per row of the
 * register-load kernel (0: qmm_kq_split's choice; workbench version 5), -1
 * for the staged kernel (version 6), or -2 for version 7 (the default;
 * bench/cuda/qmatmul.cu times them side by side, docs/perf-notes.md). */
#ifndef QMM_KQ_DEFAULT
#define QMM_KQ_DEFAULT -2
#endif

/* y = W x' (+ bias) for one token with x' in x8; false unless qmm_takes_x8.
 * ksplit: as QMM_KQ_DEFAULT; piece: the staged kernel's piece bytes. */
static bool qmm_launch_x8(uint32_t type, const qmm_args &a, const qmm_x8 &x8, cudaStream_t st,
                          int ksplit = QMM_KQ_DEFAULT, int piece = QMM_KQ_PIECE) {
    if (!qmm_takes_x8(type, a.n_tok)) return false;
    const bool q4 = type == FASA_TYPE_Q4_K;
    if (ksplit == -2) return qmm7_launch_type(type, qmm_single(a), x8, st);
    if (ksplit < 0) {
        if (q4) qmm_kq_staged_launch<qmm_kq_q4k>(a, x8, st, piece);
        else qmm_kq_staged_launch<qmm_kq_q6k>(a, x8, st, piece);
        return true;
    }
    if (!ksplit) ksplit = qmm_kq_split(a.rows);
    if (q4) qmm_kq_launch<qmm_kq_q4k>(a, x8, st, ksplit);
    else qmm_kq_launch<qmm_kq_q6k>(a, x8, st, ksplit);
    return true;
}

/* Launches y = W x (+ bias) for n_tok tokens: passes of 8 tokens while at
 * least 8 remain (each weight byte read once per 8 tokens), then one pass
 * for the rest token by token. */
struct qmm_launcher {
    qmm_args a;
    cudaStream_t st;
    template <int T> void operator()() const {
        const unsigned grid = (unsigned)((a.rows + QMM_WARPS - 1) / QMM_WARPS);
        int32_t done = 0;
        for (; a.n_tok - done >= 8; done += 8) {
            qmm_args b = a;
            b.x += done * a.ldx;
            b.y += done * a.ldy;
            b.n_tok = 8;
            qmm_kernel<T, 8><<<grid, QMM_WARPS * 32, 0, st>>>(b);
        }
        for (; done < a.n_tok; ++done) {
            qmm_args b = a;
            b.x += done * a.ldx;
            b.y += done * a.ldy;
            b.n_tok = 1;
            qmm_kernel<T, 1><<<grid, QMM_WARPS * 32, 0, st>>>(b);
        }
    }
};

/* False for a format the kernels do not know. */
static bool qmm_launch(uint32_t type, const qmm_args &a, cudaStream_t st) {
    return qfmt_dispatch(type, qmm_launcher{a, st});
}

/* Whether the kernels know a format. */
struct qfmt_known {
    template <int T> void operator()() const {}
};

#endif
