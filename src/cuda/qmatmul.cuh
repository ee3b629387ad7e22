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

__device__ __forceinline__ void qmm_cp16(void *smem, const void *gmem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void qmm_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void qmm_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void qmm_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

/* Stages row bytes [off, off + QMM_CHUNK) (16-byte aligned span covering
 * them) into buf; returns the offset of byte `off` inside buf. */
__device__ __forceinline__ int qmm_stage(uint8_t *buf, const uint8_t *row, int64_t off, int64_t row_bytes,
                                         int lane) {
    const uint8_t *start = row + off;
    const uintptr_t a = (uintptr_t)start & ~(uintptr_t)15;
    const int lead = (int)((uintptr_t)start - a);
    const int64_t end = off + QMM_CHUNK < row_bytes ? off + QMM_CHUNK : row_bytes;
    const int n16 = (int)((lead + (end - off) + 15) / 16);
    for (int i = lane; i < n16; i += 32) qmm_cp16(buf + 16 * i, (const void *)(a + 16 * i));
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
    qmm_commit();
    int buf = 0;
    for (int64_t b0 = 0; b0 < n_blocks; b0 += BLOCKS_PER_CHUNK, buf ^= 1) {
        const int64_t next = (b0 + BLOCKS_PER_CHUNK) * F::bytes;
        if (next < a.row_bytes) lead[buf ^ 1] = qmm_stage(smem[warp][buf ^ 1], row, next, a.row_bytes, lane);
        qmm_commit();
        qmm_wait_prev();
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
    qmm_wait_all();
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && t < a.n_tok) a.y[t * a.ldy + r] = v + (a.bias ? a.bias[r] : 0.f);
    }
}

/* ---- decode kernels for the K-quants most models are made of ------------
 *
 * The generic kernel decodes eight elements per lane from shared memory,
 * one narrow load per field, and measured instruction bound (docs/perf-
 * notes.md). For one token these read straight from global memory with
 * word loads, the activations shared by R rows. A nibble becomes a float by
 * a byte permute into a float's mantissa (exact), and Q4_K's min is applied
 * once per lane: sum((d sc q - dmin mn) x) = d sc sum(q x) - dmin mn sum(x). */

/* Four bytes of w (each < 256) as exact floats. */
__device__ __forceinline__ void qmm_bytes_to_float(uint32_t w, float *f) {
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7650 + k) ) - 8388608.0f;
}

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

/* The warp's R row sums, reduced across lanes and written with the bias. */
template <int R>
__device__ __forceinline__ void qmm_store_rows(const float (&acc)[R], const qmm_args &a, int64_t r0, int lane) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
        float v = acc[r];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0 && r0 + r < a.rows) a.y[r0 + r] = v + (a.bias ? a.bias[r0 + r] : 0.f);
    }
}

/* A lane takes 8 consecutive elements of a block, so a warp reads a whole
 * block per step and consecutive lanes read consecutive activations (an
 * earlier one-sub-block-per-lane layout made every activation load touch 32
 * cache lines; bench/cuda/qmatmul.cu keeps it as version 2). Fields are word
 * loads. */
__device__ __forceinline__ void qmm_u64_to_float8(uint32_t lo, uint32_t hi, float *f) {
    qmm_bytes_to_float(lo, f);
    qmm_bytes_to_float(hi, f + 4);
}

template <int R>
__global__ void __launch_bounds__(256) q4k_matvec_kernel(const qmm_args a) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * 8 + warp) * R;
    if (r0 >= a.rows) return;
    const int64_t n_blocks = a.cols / 256;
    const int s = lane >> 2, off = 8 * (lane & 3);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float4 *xp = reinterpret_cast<const float4 *>(a.x + 256 * b + 32 * s + off);
        const float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
        const float xs = (x0.x + x0.y) + (x0.z + x0.w) + (x1.x + x1.y) + (x1.z + x1.w);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r0 + r >= a.rows) break;
            const uint8_t *blk = a.w + (r0 + r) * a.row_bytes + b * 144;
            const uint32_t *hw = reinterpret_cast<const uint32_t *>(blk);
            const uint32_t dm = hw[0];
            int sc, mn;
            qmm_k_scale_min(hw[1], hw[2], hw[3], s, sc, mn);
            const uint2 q = *reinterpret_cast<const uint2 *>(blk + 16 + 32 * (s >> 1) + off);
            const int shift = 4 * (s & 1);
            float f[8];
            qmm_u64_to_float8((q.x >> shift) & 0x0F0F0F0Fu, (q.y >> shift) & 0x0F0F0F0Fu, f);
            const float dot = f[0] * x0.x + f[1] * x0.y + f[2] * x0.z + f[3] * x0.w + f[4] * x1.x + f[5] * x1.y +
                              f[6] * x1.z + f[7] * x1.w;
            const float d = __half2float(__ushort_as_half((unsigned short)(dm & 0xffff)));
            const float dmin = __half2float(__ushort_as_half((unsigned short)(dm >> 16)));
            acc[r] += d * (float)sc * dot - dmin * (float)mn * xs;
        }
    }
    qmm_store_rows<R>(acc, a, r0, lane);
}

/* 8 bytes from a 2-byte aligned address: three aligned words, shifted. */
__device__ __forceinline__ uint2 qmm_load8_a2(const uint8_t *p) {
    const uint32_t *a = reinterpret_cast<const uint32_t *>((uintptr_t)p & ~(uintptr_t)3);
    const int sh = (int)((uintptr_t)p & 3) * 8;
    const uint32_t w0 = a[0], w1 = a[1], w2 = a[2];
    return make_uint2(__funnelshift_r(w0, w1, sh), __funnelshift_r(w1, w2, sh));
}

template <int R>
__global__ void __launch_bounds__(256) q6k_matvec_kernel(const qmm_args a) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * 8 + warp) * R;
    if (r0 >= a.rows) return;
    const int64_t n_blocks = a.cols / 256;
    const int half = lane >> 4, g = (lane >> 2) & 3, off = 8 * (lane & 3);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float4 *xp = reinterpret_cast<const float4 *>(a.x + 256 * b + 8 * lane);
        const float4 x0 = __ldg(xp), x1 = __ldg(xp + 1);
        const float xs = (x0.x + x0.y) + (x0.z + x0.w) + (x1.x + x1.y) + (x1.z + x1.w);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r0 + r >= a.rows) break;
            const uint8_t *blk = a.w + (r0 + r) * a.row_bytes + b * 210;
            const uint2 ql = qmm_load8_a2(blk + 64 * half + 32 * (g & 1) + off);
            const uint2 qh = qmm_load8_a2(blk + 128 + 32 * half + off);
            const int ls = 4 * (g >> 1), hs = 2 * g;
            const uint32_t q0 = ((ql.x >> ls) & 0x0F0F0F0Fu) | (((qh.x >> hs) & 0x03030303u) << 4);
            const uint32_t q1 = ((ql.y >> ls) & 0x0F0F0F0Fu) | (((qh.y >> hs) & 0x03030303u) << 4);
            float f[8];
            qmm_u64_to_float8(q0, q1, f);
            const float dot = f[0] * x0.x + f[1] * x0.y + f[2] * x0.z + f[3] * x0.w + f[4] * x1.x + f[5] * x1.y +
                              f[6] * x1.z + f[7] * x1.w;
            const float d = __half2float(__ushort_as_half((unsigned short)(blk[208] | blk[209] << 8)));
            acc[r] += d * (float)(int8_t)blk[192 + lane / 2] * (dot - 32.f * xs);
        }
    }
    qmm_store_rows<R>(acc, a, r0, lane);
}

/* Rows per warp of the K-quant decode kernels (the workbench times 1, 2, 4;
 * more rows share the activations but cost occupancy, and measured slower). */
#ifndef QMM_KQ_ROWS
#define QMM_KQ_ROWS 1
#endif

/* The K-quant decode kernel for one token, when there is one for the type. */
static bool qmm_launch_kquant(uint32_t type, const qmm_args &a, cudaStream_t st, int rows_per_warp = QMM_KQ_ROWS) {
    if (a.n_tok != 1 || (type != FASA_TYPE_Q4_K && type != FASA_TYPE_Q6_K)) return false;
    const unsigned grid = (unsigned)((a.rows + 8 * rows_per_warp - 1) / (8 * rows_per_warp));
    const bool q4 = type == FASA_TYPE_Q4_K;
#define QKQ(R_)                                                                                                 \
    if (rows_per_warp == R_) {                                                                                  \
        if (q4) q4k_matvec_kernel<R_><<<grid, 256, 0, st>>>(a);                                                 \
        else q6k_matvec_kernel<R_><<<grid, 256, 0, st>>>(a);                                                    \
        return true;                                                                                            \
    }
    QKQ(1) QKQ(2) QKQ(4)
#undef QKQ
    return false;
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
    return qmm_launch_kquant(type, a, st) || qfmt_dispatch(type, qmm_launcher{a, st});
}

/* Whether the kernels know a format. */
struct qfmt_known {
    template <int T> void operator()() const {}
};

#endif
