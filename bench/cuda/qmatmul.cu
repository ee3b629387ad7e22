/* Workbench for the decode matrix-vector kernels on block-format weights
 * (src/cuda/qmatmul.cuh): validates every version against a float64 CPU
 * reference built from the CPU's scalar decoders, then times each on the
 * Llama-3.1-8B shapes of the Q4_K_M mix, rotating among enough copies of
 * the weights that L2 holds none of them.
 *
 *   v1   the generic kernel: rows staged in shared memory, 8 elements per
 *        lane decoded with one narrow load per field (any format)
 *   v2   Q4_K / Q6_K kernels: a 32-element sub-block per lane, word loads
 *        from global memory, activations shared by R rows (R = 1, 2, 4)
 *   v3   the same with 8 consecutive elements of a block per lane, so that
 *        a warp step reads one block and coalesced activations
 *   v4   v3 with U = 4 blocks' loads in flight per warp before the first is
 *        used, and K warps per row (K = 1, 2, 4, or chosen from the row count)
 *        meeting in shared memory
 *   v5   v4 with the activations rounded to int8 in groups of 32 and dp4a
 *        (in the product, qmm_launch_x8 with ksplit >= 0); checked against
 *        the float64 product with the rounded activations, and its distance
 *        from the product with the float ones reported
 *   v6   v5's decoding with each row staged through shared memory by 16-byte
 *        cp.async, two pieces of 2, 4 or 8 KB in flight per warp (the
 *        default before version 7, with 4 KB pieces)
 *   v7   eight lanes per block (a quarter block each, one 16-byte load of
 *        Q4_K codes), U warp steps of four blocks in flight per warp; the
 *        product's default. Its fused forms (Q and K in one launch; gate and
 *        up in one launch writing SwiGLU) are checked against the float64
 *        reference, and a Llama-3.1-8B layer's products are timed in a CUDA
 *        graph of 8 layers: v6 one launch per matrix, v7 the same, v7 fused
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -Iinclude -Isrc -Isrc/cuda bench/cuda/qmatmul.cu \
 *        build/quant.o -o qmatmul        (quant.o: src/quant.c and src/quant_simd.c, see run.sh)
 *   ./qmatmul [--reps N] */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_ops.cuh"

extern "C" {
void quant_dequant_ref(uint32_t type, const void *src, float *dst, int64_t n);

}

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

static uint64_t rng = 0x1234567;
static uint64_t next64() {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
static void put_half(uint8_t *p, float v) {
    const uint16_t h = fasa_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random codes with small finite scales (values need not be centred here). */
static void fill(uint32_t type, uint8_t *w, size_t bytes, size_t block_bytes) {
    for (size_t i = 0; i < bytes; i += 8) {
        const uint64_t r = next64();
        memcpy(w + i, &r, bytes - i < 8 ? bytes - i : 8);
    }
    for (size_t b = 0; b < bytes; b += block_bytes) {
        uint8_t *k = w + b;
        const float d = 0.001f * (float)(1 + next64() % 16), m = 0.001f * (float)(next64() % 16);
        if (type == FASA_TYPE_Q4_K) put_half(k, d), put_half(k + 2, m);
        else if (type == FASA_TYPE_Q6_K) put_half(k + 208, d);
    }
}

typedef struct shape {
    const char *what;
    uint32_t type;
    int64_t rows, cols;
} shape;

static const shape shapes[] = {
    {"attn_q/o 4096x4096", FASA_TYPE_Q4_K, 4096, 4096},   {"attn_k 1024x4096", FASA_TYPE_Q4_K, 1024, 4096},
    {"ffn_gate/up 14336x4096", FASA_TYPE_Q4_K, 14336, 4096}, {"attn_v 1024x4096", FASA_TYPE_Q6_K, 1024, 4096},
    {"ffn_down 4096x14336", FASA_TYPE_Q6_K, 4096, 14336}, {"output 128256x4096", FASA_TYPE_Q6_K, 128256, 4096},
};

/* ---- helpers of versions 2 to 4 (float activations) ---- */
/* Four bytes of w (each < 256) as exact floats. */
__device__ __forceinline__ void qmm_bytes_to_float(uint32_t w, float *f) {
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7650 + k) ) - 8388608.0f;
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

/* ---- version 3, the product before version 5: float activations, one
 * warp per row ---- */
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

/* ---- version 4: version 3 with U blocks' loads in flight per warp before
 * the first is used, and K warps per row so that a matrix of few rows
 * still covers the GPU (measured: docs/perf-notes.md). ---- */
__device__ __forceinline__ float qmm_dot8(const float *f, float4 x0, float4 x1) {
    return f[0] * x0.x + f[1] * x0.y + f[2] * x0.z + f[3] * x0.w + f[4] * x1.x + f[5] * x1.y + f[6] * x1.z +
           f[7] * x1.w;
}

__device__ __forceinline__ float qmm_sum8(float4 x0, float4 x1) {
    return (x0.x + x0.y) + (x0.z + x0.w) + (x1.x + x1.y) + (x1.z + x1.w);
}

/* Q4_K: lane l takes elements 32 s + off .. + 7 of the block, s = l / 4. */
struct qmm_q4k {
    static constexpr int bytes = 144;
    struct frag {
        uint4 h;  /* d | dmin, and the 12 scale bytes */
        uint2 q;
        float4 x0, x1;
    };
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, const qmm_args &a, const qmm_x8 &,
                                                int64_t b, int lane) {
        const float *x = a.x + 256 * b;
        const int s = lane >> 2, off = 8 * (lane & 3);
        f.h = *reinterpret_cast<const uint4 *>(blk);
        f.q = *reinterpret_cast<const uint2 *>(blk + 16 + 32 * (s >> 1) + off);
        const float4 *xp = reinterpret_cast<const float4 *>(x + 32 * s + off);
        f.x0 = __ldg(xp), f.x1 = __ldg(xp + 1);
    }
    static __device__ __forceinline__ float dot(const frag &f, int lane) {
        const int s = lane >> 2, shift = 4 * (s & 1);
        int sc, mn;
        qmm_k_scale_min(f.h.y, f.h.z, f.h.w, s, sc, mn);
        float w[8];
        qmm_u64_to_float8((f.q.x >> shift) & 0x0F0F0F0Fu, (f.q.y >> shift) & 0x0F0F0F0Fu, w);
        return qmm_half(f.h.x) * (float)sc * qmm_dot8(w, f.x0, f.x1) -
               qmm_half(f.h.x >> 16) * (float)mn * qmm_sum8(f.x0, f.x1);
    }
};

/* Q6_K (210-byte blocks, only 2-byte aligned): lane l takes elements 8 l ..
 * 8 l + 7; its low nibbles and high bit pairs are read as three aligned
 * words each and shifted into place. */
struct qmm_q6k {
    static constexpr int bytes = 210;
    struct frag {
        uint32_t ql[3], qh[3];
        int sh_l, sh_h;
        uint32_t dsc; /* d (16 bits) and the lane's scale byte */
        float4 x0, x1;
    };
    static __device__ __forceinline__ void load(frag &f, const uint8_t *blk, const qmm_args &a, const qmm_x8 &,
                                                int64_t b, int lane) {
        const float *x = a.x + 256 * b;
        const int half = lane >> 4, g = (lane >> 2) & 3, off = 8 * (lane & 3);
        qmm_kq_q6k::words3(blk + 64 * half + 32 * (g & 1) + off, f.ql, f.sh_l);
        qmm_kq_q6k::words3(blk + 128 + 32 * half + off, f.qh, f.sh_h);
        f.dsc = (uint32_t)blk[208] | (uint32_t)blk[209] << 8 | (uint32_t)blk[192 + lane / 2] << 16;
        const float4 *xp = reinterpret_cast<const float4 *>(x + 8 * lane);
        f.x0 = __ldg(xp), f.x1 = __ldg(xp + 1);
    }
    static __device__ __forceinline__ float dot(const frag &f, int lane) {
        const int g = (lane >> 2) & 3, ls = 4 * (g >> 1), hs = 2 * g;
        const uint32_t l0 = __funnelshift_r(f.ql[0], f.ql[1], f.sh_l), l1 = __funnelshift_r(f.ql[1], f.ql[2], f.sh_l);
        const uint32_t h0 = __funnelshift_r(f.qh[0], f.qh[1], f.sh_h), h1 = __funnelshift_r(f.qh[1], f.qh[2], f.sh_h);
        float w[8];
        qmm_u64_to_float8(((l0 >> ls) & 0x0F0F0F0Fu) | (((h0 >> hs) & 0x03030303u) << 4),
                          ((l1 >> ls) & 0x0F0F0F0Fu) | (((h1 >> hs) & 0x03030303u) << 4), w);
        return qmm_half(f.dsc) * (float)(int8_t)(f.dsc >> 16) * (qmm_dot8(w, f.x0, f.x1) - 32.f * qmm_sum8(f.x0, f.x1));
    }
};

static void launch_v4(uint32_t type, const qmm_args &a, int ksplit) {
    if (!ksplit) ksplit = qmm_kq_split(a.rows);
    if (type == FASA_TYPE_Q4_K) qmm_kq_launch<qmm_q4k>(a, qmm_x8{}, 0, ksplit);
    else qmm_kq_launch<qmm_q6k>(a, qmm_x8{}, 0, ksplit);
}

/* Version 5, the product (qmm_launch_x8): version 4 with the activations
 * as int8 in groups of 32 and dp4a; their rounding is timed with it. */
static void launch_v5(uint32_t type, const qmm_args &a, const qmm_x8 &x8, int ksplit /* -1: version 6 */,
                      int piece = QMM_KQ_PIECE) {
    qmm_quantize_x8(a.x, a.cols, (int8_t *)x8.q, (float *)x8.d, 0);
    qmm_launch_x8(type, a, x8, 0, ksplit, piece);
}

/* Version 7, the product's default: eight lanes per block, U warp steps
 * (4 U blocks) of loads in flight; rounding timed with it as for v5. */
static void launch_v7(uint32_t type, const qmm_args &a, const qmm_x8 &x8, int unroll) {
    qmm_quantize_x8(a.x, a.cols, (int8_t *)x8.q, (float *)x8.d, 0);
    qmm7_launch_type(type, qmm_single(a), x8, 0, unroll);
}

/* ---- version 2, kept here for comparison: a lane takes one 32-element
 * sub-block (32 activations per lane, 128 bytes apart across the warp) ---- */
template <int R>
__global__ void __launch_bounds__(256) q4k_matvec2_kernel(const qmm_args a) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * 8 + warp) * R;
    if (r0 >= a.rows) return;
    const int64_t n_sub = a.cols / 32;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (int64_t sb = lane; sb < n_sub; sb += 32) {
        const int64_t b = sb >> 3;
        const int s = (int)(sb & 7);
        float xv[32], xs = 0.f;
        const float4 *xp = reinterpret_cast<const float4 *>(a.x + 32 * sb);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 v = __ldg(xp + i);
            xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
            xs += (v.x + v.y) + (v.z + v.w);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r0 + r >= a.rows) break;
            const uint8_t *blk = a.w + (r0 + r) * a.row_bytes + b * 144;
            const uint32_t dm = *reinterpret_cast<const uint32_t *>(blk);
            int sc, mn;
            qmm_k_scale_min(*reinterpret_cast<const uint32_t *>(blk + 4), *reinterpret_cast<const uint32_t *>(blk + 8),
                            *reinterpret_cast<const uint32_t *>(blk + 12), s, sc, mn);
            const uint4 *qp = reinterpret_cast<const uint4 *>(blk + 16 + 32 * (s >> 1));
            const uint4 q0 = qp[0], q1 = qp[1];
            const uint32_t qw[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
            const int shift = 4 * (s & 1);
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                float f[4];
                qmm_bytes_to_float((qw[i] >> shift) & 0x0F0F0F0Fu, f);
                dot += f[0] * xv[4 * i] + f[1] * xv[4 * i + 1] + f[2] * xv[4 * i + 2] + f[3] * xv[4 * i + 3];
            }
            const float d = __half2float(__ushort_as_half((unsigned short)(dm & 0xffff)));
            const float dmin = __half2float(__ushort_as_half((unsigned short)(dm >> 16)));
            acc[r] += d * (float)sc * dot - dmin * (float)mn * xs;
        }
    }
    qmm_store_rows<R>(acc, a, r0, lane);
}

/* 32 bytes from a 2-byte aligned address: nine aligned words, shifted. */
__device__ __forceinline__ void qmm_load32_a2(const uint8_t *p, uint32_t *w) {
    const uint32_t *a = reinterpret_cast<const uint32_t *>((uintptr_t)p & ~(uintptr_t)3);
    const int sh = (int)((uintptr_t)p & 3) * 8;
    uint32_t raw[9];
#pragma unroll
    for (int i = 0; i < 9; ++i) raw[i] = a[i];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = __funnelshift_r(raw[i], raw[i + 1], sh);
}

/* Q6_K (210-byte blocks, only 2-byte aligned): a lane takes elements
 * 32g .. 32g + 31 of one half-block: 32 bytes of low nibbles, 32 bytes of
 * high bit pairs, two int8 scales. x = d * sc * (q - 32). */
template <int R>
__global__ void __launch_bounds__(256) q6k_matvec2_kernel(const qmm_args a) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * 8 + warp) * R;
    if (r0 >= a.rows) return;
    const int64_t n_sub = a.cols / 32;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    for (int64_t sb = lane; sb < n_sub; sb += 32) {
        const int64_t b = sb >> 3;
        const int e0 = (int)(sb & 7) * 32, half = e0 / 128, g = e0 % 128 / 32;
        float xv[32], xs0 = 0.f, xs1 = 0.f;
        const float4 *xp = reinterpret_cast<const float4 *>(a.x + 32 * sb);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float4 v = __ldg(xp + i);
            xv[4 * i] = v.x, xv[4 * i + 1] = v.y, xv[4 * i + 2] = v.z, xv[4 * i + 3] = v.w;
            if (i < 4) xs0 += (v.x + v.y) + (v.z + v.w);
            else xs1 += (v.x + v.y) + (v.z + v.w);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            if (r0 + r >= a.rows) break;
            const uint8_t *blk = a.w + (r0 + r) * a.row_bytes + b * 210;
            uint32_t ql[8], qh[8];
            qmm_load32_a2(blk + 64 * half + 32 * (g & 1), ql);
            qmm_load32_a2(blk + 128 + 32 * half, qh);
            const float d = __half2float(__ushort_as_half((unsigned short)(blk[208] | blk[209] << 8)));
            const float s0 = d * (float)(int8_t)blk[192 + e0 / 16], s1 = d * (float)(int8_t)blk[193 + e0 / 16];
            float dot0 = 0.f, dot1 = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const uint32_t q = ((ql[i] >> (4 * (g >> 1))) & 0x0F0F0F0Fu) | (((qh[i] >> (2 * g)) & 0x03030303u) << 4);
                float f[4];
                qmm_bytes_to_float(q, f);
                const float part = f[0] * xv[4 * i] + f[1] * xv[4 * i + 1] + f[2] * xv[4 * i + 2] + f[3] * xv[4 * i + 3];
                if (i < 4) dot0 += part;
                else dot1 += part;
            }
            acc[r] += s0 * (dot0 - 32.f * xs0) + s1 * (dot1 - 32.f * xs1);
        }
    }
    qmm_store_rows<R>(acc, a, r0, lane);
}


static void launch_v2(uint32_t type, const qmm_args &a, int R) {
    const unsigned grid = (unsigned)((a.rows + 8 * R - 1) / (8 * R));
    const bool q4 = type == FASA_TYPE_Q4_K;
    if (R == 2) q4 ? q4k_matvec2_kernel<2><<<grid, 256>>>(a) : q6k_matvec2_kernel<2><<<grid, 256>>>(a);
    else q4 ? q4k_matvec2_kernel<4><<<grid, 256>>>(a) : q6k_matvec2_kernel<4><<<grid, 256>>>(a);
}

/* Launches version v: 1 generic; 22, 24 version 2 with 2 or 4 rows per warp;
 * 31 version 3; 40 version 4 (warps per row chosen by the row
 * count), 41, 42, 44 version 4 with 1, 2 or 4 warps per row; 50-54 the same
 * for version 5; 62, 64, 68 version 6 with 2, 4, 8 KB pieces; 71, 72, 74
 * version 7 with U = 1, 2, 4. */
static void launch(int v, uint32_t type, const qmm_args &a, const qmm_x8 &x8) {
    if (v == 1) qfmt_dispatch(type, qmm_launcher{a, 0});
    else if (v / 10 == 2) launch_v2(type, a, v % 10);
    else if (v == 31) qmm_launch_kquant(type, a, 0, 1);
    else if (v / 10 == 4) launch_v4(type, a, v % 10);
    else if (v / 10 == 5) launch_v5(type, a, x8, v % 10);
    else if (v / 10 == 7) launch_v7(type, a, x8, v % 10);
    else launch_v5(type, a, x8, -1, 1024 * (v % 10));
    CK(cudaGetLastError());
}

/* ---- a layer's products in a CUDA graph ------------------------------
 * 8 Llama-3.1-8B layers with their own random weights (1.1 GB, past L2),
 * one input per layer; each variant captured once and replayed. */
struct layer_w {
    uint8_t *q, *k, *v, *o, *gate, *up, *down;
};
static const int64_t LE = 4096, LKV = 1024, LF = 14336;

static double ref_row(uint32_t type, const uint8_t *w, int64_t row, int64_t cols, const double *x, float *tmp) {
    quant_dequant_ref(type, w + row * quant_row_bytes(type, cols), tmp, cols);
    double acc = 0;
    for (int64_t c = 0; c < cols; c++) acc += (double)tmp[c] * x[c];
    return acc;
}

/* variant 0: v6, one launch per matrix and SwiGLU apart; 1: v7, the same;
 * 2: v7 with Q+K and gate+up (SwiGLU inside) fused. */
static void layer_launch(int variant, const layer_w &L, float *x, float *y, float *f, float *g, float *u,
                         const qmm_x8 &x8, cudaStream_t st) {
    const int64_t r4 = quant_row_bytes(FASA_TYPE_Q4_K, LE), r6 = quant_row_bytes(FASA_TYPE_Q6_K, LE);
    const int64_t r6f = quant_row_bytes(FASA_TYPE_Q6_K, LF);
    int8_t *q = (int8_t *)x8.q;
    float *d = (float *)x8.d;
    const int ks = variant == 0 ? -1 : -2;
    auto one = [&](uint32_t type, const uint8_t *w, int64_t rb, int64_t rows, int64_t cols, const float *in, float *out) {
        qmm_args a = {w, rb, rows, cols, in, cols, out, rows, 1, nullptr};
        qmm_launch_x8(type, a, x8, st, ks);
    };
    qmm_quantize_x8(x, LE, q, d, st);
    if (variant == 2) {
        qmm_multi m = {};
        m.s[0] = qmm_seg{L.q, r4, LE, y, nullptr};
        m.s[1] = qmm_seg{L.k, r4, LKV, y + LE, nullptr};
        m.n = 2, m.cols = LE;
        qmm7_launch_type(FASA_TYPE_Q4_K, m, x8, st);
    } else {
        one(FASA_TYPE_Q4_K, L.q, r4, LE, LE, x, y);
        one(FASA_TYPE_Q4_K, L.k, r4, LKV, LE, x, y + LE);
    }
    one(FASA_TYPE_Q6_K, L.v, r6, LKV, LE, x, y + LE + LKV);
    qmm_quantize_x8(y, LE, q, d, st);
    one(FASA_TYPE_Q4_K, L.o, r4, LE, LE, y, y + LE + 2 * LKV);
    qmm_quantize_x8(y + LE + 2 * LKV, LE, q, d, st);
    if (variant == 2) {
        qmm_multi m = {};
        m.s[0] = qmm_seg{L.gate, r4, LF, g, nullptr};
        m.s[1] = qmm_seg{L.up, r4, LF, u, nullptr};
        m.n = 2, m.glu = 1, m.cols = LE;
        qmm7_launch_type(FASA_TYPE_Q4_K, m, x8, st);
    } else {
        one(FASA_TYPE_Q4_K, L.gate, r4, LF, LE, y + LE + 2 * LKV, g);
        one(FASA_TYPE_Q4_K, L.up, r4, LF, LE, y + LE + 2 * LKV, u);
        swiglu_kernel<<<(unsigned)((LF + 255) / 256), 256, 0, st>>>(g, u, LF);
    }
    qmm_quantize_x8(g, LF, q, d, st);
    one(FASA_TYPE_Q6_K, L.down, r6f, LE, LF, g, f);
}

static int layer_bench(int reps) {
    const int NL = 8;
    const int64_t r4 = quant_row_bytes(FASA_TYPE_Q4_K, LE), r6 = quant_row_bytes(FASA_TYPE_Q6_K, LE);
    const int64_t r6f = quant_row_bytes(FASA_TYPE_Q6_K, LF);
    const size_t sz[7] = {(size_t)(r4 * LE), (size_t)(r4 * LKV), (size_t)(r6 * LKV), (size_t)(r4 * LE),
                          (size_t)(r4 * LF), (size_t)(r4 * LF), (size_t)(r6f * LE)};
    const uint32_t ty[7] = {FASA_TYPE_Q4_K, FASA_TYPE_Q4_K, FASA_TYPE_Q6_K, FASA_TYPE_Q4_K,
                            FASA_TYPE_Q4_K, FASA_TYPE_Q4_K, FASA_TYPE_Q6_K};
    size_t layer_bytes = 0;
    for (int i = 0; i < 7; i++) layer_bytes += sz[i];
    layer_w L[NL];
    uint8_t *host[7];
    for (int i = 0; i < 7; i++) {
        host[i] = (uint8_t *)malloc(sz[i]);
        fill(ty[i], host[i], sz[i], ty[i] == FASA_TYPE_Q4_K ? 144 : 210);
    }
    for (int l = 0; l < NL; l++) {
        uint8_t **p[7] = {&L[l].q, &L[l].k, &L[l].v, &L[l].o, &L[l].gate, &L[l].up, &L[l].down};
        for (int i = 0; i < 7; i++) {
            CK(cudaMalloc(p[i], sz[i] + 256));
            CK(cudaMemcpy(*p[i], host[i], sz[i], cudaMemcpyHostToDevice)); /* the same values: one reference */
        }
    }
    float *x, *y, *f, *g, *u;
    int8_t *q8;
    float *d8;
    CK(cudaMalloc(&x, NL * LE * 4));
    CK(cudaMalloc(&y, (LE + 2 * LKV + LE) * 4));
    CK(cudaMalloc(&f, NL * LE * 4));
    CK(cudaMalloc(&g, LF * 4));
    CK(cudaMalloc(&u, LF * 4));
    CK(cudaMalloc(&q8, LF));
    CK(cudaMalloc(&d8, LF / 32 * 4));
    const qmm_x8 x8 = {q8, d8};
    float *hx = (float *)malloc(LE * 4);
    for (int64_t c = 0; c < LE; c++) hx[c] = (float)((double)(next64() >> 11) * 0x1.0p-53 * 2 - 1);
    for (int l = 0; l < NL; l++) CK(cudaMemcpy(x + l * LE, hx, LE * 4, cudaMemcpyHostToDevice));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    int fails = 0;

    /* The fused forms against float64: Q and K rows of one launch, and
     * silu(gate) * up, from x rounded as the kernels round it. */
    {
        double *xq = (double *)malloc(LE * sizeof(double));
        for (int64_t gi = 0; gi < LE / 32; gi++) {
            float mx = 0.f;
            for (int i = 0; i < 32; i++) mx = fmaxf(mx, fabsf(hx[32 * gi + i]));
            const float dg = mx / 127.f;
            for (int i = 0; i < 32; i++) xq[32 * gi + i] = dg > 0.f ? (double)dg * (double)lrintf(hx[32 * gi + i] / dg) : 0.0;
        }
        float *tmp = (float *)malloc(LF * 4), *hy = (float *)malloc(LF * 4), *hu = (float *)malloc(LF * 4);
        CK(cudaMemset(y, 0xff, (LE + LKV) * 4));
        CK(cudaMemset(g, 0xff, LF * 4));
        qmm_quantize_x8(x, LE, q8, d8, st);
        qmm_multi m = {};
        m.s[0] = qmm_seg{L[0].q, r4, LE, y, nullptr};
        m.s[1] = qmm_seg{L[0].k, r4, LKV, y + LE, nullptr};
        m.n = 2, m.cols = LE;
        qmm7_launch_type(FASA_TYPE_Q4_K, m, x8, st);
        qmm_multi mg = {};
        mg.s[0] = qmm_seg{L[0].gate, r4, LF, g, nullptr};
        mg.s[1] = qmm_seg{L[0].up, r4, LF, u, nullptr};
        mg.n = 2, mg.glu = 1, mg.cols = LE;
        qmm7_launch_type(FASA_TYPE_Q4_K, mg, x8, st);
        CK(cudaStreamSynchronize(st));
        CK(cudaGetLastError());
        CK(cudaMemcpy(hy, y, (LE + LKV) * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hu, g, LF * 4, cudaMemcpyDeviceToHost));
        double e_qk = 0, m_qk = 0, e_glu = 0, m_glu = 0;
        double *want = (double *)malloc(LF * sizeof(double));
        for (int64_t r = 0; r < LE + LKV; r++) {
            want[r] = r < LE ? ref_row(FASA_TYPE_Q4_K, host[0], r, LE, xq, tmp) : ref_row(FASA_TYPE_Q4_K, host[1], r - LE, LE, xq, tmp);
            m_qk = fmax(m_qk, fabs(want[r]));
        }
        for (int64_t r = 0; r < LE + LKV; r++) e_qk = fmax(e_qk, isfinite(hy[r]) ? fabs(hy[r] - want[r]) : 1e30);
        for (int64_t r = 0; r < LF; r++) {
            const double gv = ref_row(FASA_TYPE_Q4_K, host[4], r, LE, xq, tmp), uv = ref_row(FASA_TYPE_Q4_K, host[5], r, LE, xq, tmp);
            want[r] = gv / (1.0 + exp(-gv)) * uv;
            m_glu = fmax(m_glu, fabs(want[r]));
        }
        for (int64_t r = 0; r < LF; r++) e_glu = fmax(e_glu, isfinite(hu[r]) ? fabs(hu[r] - want[r]) : 1e30);
        printf("\nfused v7: Q+K in one launch max error %.2e of the largest output; gate+up with SwiGLU %.2e\n",
               e_qk / m_qk, e_glu / m_glu);
        if (!(e_qk / m_qk < 1e-4) || !(e_glu / m_glu < 1e-4)) {
            printf("FAIL: fused v7 products\n");
            fails++;
        }
        free(xq), free(tmp), free(hy), free(hu), free(want);
    }

    printf("\n| Llama-3.1-8B layer products (%.1f MB), graph of %d layers | us per layer | GB/s | launches per layer |\n"
           "|---|---|---|---|\n", layer_bytes / 1e6, NL);
    const char *names[3] = {"v6, a launch per matrix", "v7, a launch per matrix", "v7, Q+K and gate+up(+SwiGLU) fused"};
    const int launches[3] = {12, 12, 9};
    for (int variant = 0; variant < 3; variant++) {
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (int l = 0; l < NL; l++) layer_launch(variant, L[l], x + l * LE, y, f + l * LE, g, u, x8, st);
        CK(cudaStreamEndCapture(st, &graph));
        CK(cudaGraphInstantiate(&exec, graph, 0));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        float *t = (float *)malloc(reps * sizeof(float));
        for (int i = -3; i < reps; i++) {
            CK(cudaEventRecord(e0, st));
            CK(cudaGraphLaunch(exec, st));
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            if (i >= 0) CK(cudaEventElapsedTime(&t[i], e0, e1));
        }
        qsort(t, reps, sizeof(float), [](const void *p, const void *q) {
            const float a = *(const float *)p, b = *(const float *)q;
            return (a > b) - (a < b);
        });
        const double us = t[reps / 2] * 1e3 / NL;
        printf("| %s | %.1f | %.0f | %d |\n", names[variant], us, layer_bytes / (us * 1e-6) / 1e9, launches[variant]);
        free(t);
        CK(cudaGraphExecDestroy(exec));
        CK(cudaGraphDestroy(graph));
    }
    for (int l = 0; l < NL; l++) {
        uint8_t *p[7] = {L[l].q, L[l].k, L[l].v, L[l].o, L[l].gate, L[l].up, L[l].down};
        for (int i = 0; i < 7; i++) cudaFree(p[i]);
    }
    for (int i = 0; i < 7; i++) free(host[i]);
    cudaFree(x), cudaFree(y), cudaFree(f), cudaFree(g), cudaFree(u), cudaFree(q8), cudaFree(d8);
    free(hx);
    cudaStreamDestroy(st);
    return fails;
}

int main(int argc, char **argv) {
    int reps = 50;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bogus-flag")) return 2;
    const int versions[] = {1, 24, 31, 40, 41, 42, 44, 50, 51, 52, 54, 62, 64, 68, 71, 72, 74};
    const int n_versions = sizeof versions / sizeof versions[0];
    int fails = 0;
    printf("| shape | type | MB | v1 GB/s | v2 R=4 | v3 | v4 (auto) | v4 k=1 | v4 k=2 | v4 k=4 | v5 (auto) | v5 k=1 | v5 k=2 "
           "| v5 k=4 | v6 2 KB | v6 4 KB | v6 8 KB | v7 U=1 | v7 U=2 | v7 U=4 | max rel err | v5-v7: int8 x against float x |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const shape &s : shapes) {
        const size_t row = quant_row_bytes(s.type, s.cols), bytes = row * s.rows;
        const size_t bb = s.type == FASA_TYPE_Q4_K ? 144 : 210;
        const int copies = (int)(256e6 / bytes) + 2;
        uint8_t *hw = (uint8_t *)malloc(bytes);
        float *hx = (float *)malloc(s.cols * sizeof(float)), *wrow = (float *)malloc(s.cols * sizeof(float));
        double *ref = (double *)malloc(s.rows * sizeof(double)), *ref8 = (double *)malloc(s.rows * sizeof(double));
        double *xq = (double *)malloc(s.cols * sizeof(double)); /* x' = d q, as the kernel quantizes it */
        float *hy = (float *)malloc(s.rows * sizeof(float));
        fill(s.type, hw, bytes, bb);
        for (int64_t c = 0; c < s.cols; c++) hx[c] = (float)((double)(next64() >> 11) * 0x1.0p-53 * 2 - 1);
        for (int64_t g = 0; g < s.cols / 32; g++) {
            float mx = 0.f;
            for (int i = 0; i < 32; i++) mx = fmaxf(mx, fabsf(hx[32 * g + i]));
            const float dg = mx / 127.f;
            for (int i = 0; i < 32; i++) xq[32 * g + i] = dg > 0.f ? (double)dg * (double)lrintf(hx[32 * g + i] / dg) : 0.0;
        }
        double ymax = 0, ymax8 = 0;
        for (int64_t r = 0; r < s.rows; r++) {
            quant_dequant_ref(s.type, hw + r * row, wrow, s.cols);
            double acc = 0, acc8 = 0;
            for (int64_t c = 0; c < s.cols; c++) acc += (double)wrow[c] * hx[c], acc8 += (double)wrow[c] * xq[c];
            ref[r] = acc, ref8[r] = acc8;
            ymax = fmax(ymax, fabs(acc)), ymax8 = fmax(ymax8, fabs(acc8));
        }
        uint8_t *dw;
        float *dx, *dy;
        CK(cudaMalloc(&dw, copies * bytes + 256));
        for (int k = 0; k < copies; k++) CK(cudaMemcpy(dw + k * bytes, hw, bytes, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&dx, s.cols * sizeof(float)));
        CK(cudaMalloc(&dy, s.rows * sizeof(float)));
        CK(cudaMemcpy(dx, hx, s.cols * sizeof(float), cudaMemcpyHostToDevice));
        int8_t *dq;
        float *dd;
        CK(cudaMalloc(&dq, s.cols));
        CK(cudaMalloc(&dd, s.cols / 32 * sizeof(float)));
        const qmm_x8 x8 = {dq, dd};
        double gbs[24] = {0}, err[24] = {0}, err_x = 0;
        for (int vi = 0; vi < n_versions; vi++) {
            qmm_args a = {dw, (int64_t)row, s.rows, s.cols, dx, s.cols, dy, s.rows, 1, nullptr};
            CK(cudaMemset(dy, 0xff, s.rows * sizeof(float))); /* NaN: every output must be written */
            launch(versions[vi], s.type, a, x8);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(hy, dy, s.rows * sizeof(float), cudaMemcpyDeviceToHost));
            const bool v5 = versions[vi] >= 50;
            const double *want = v5 ? ref8 : ref, scale = v5 ? ymax8 : ymax;
            for (int64_t r = 0; r < s.rows; r++) {
                err[vi] = fmax(err[vi], isfinite(hy[r]) ? fabs(hy[r] - want[r]) / scale : 1e9);
                if (v5) err_x = fmax(err_x, fabs(hy[r] - ref[r]) / ymax);
            }
            if (err[vi] > 1e-4) {
                printf("FAIL: %s v%d: max relative error %.3g\n", s.what, versions[vi], err[vi]);
                fails++;
            }
            cudaEvent_t e0, e1;
            CK(cudaEventCreate(&e0));
            CK(cudaEventCreate(&e1));
            float *t = (float *)malloc(reps * sizeof(float));
            for (int i = -5; i < reps; i++) {
                a.w = dw + (size_t)((i + 5) % copies) * bytes;
                CK(cudaEventRecord(e0));
                launch(versions[vi], s.type, a, x8);
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                if (i >= 0) CK(cudaEventElapsedTime(&t[i], e0, e1));
            }
            qsort(t, reps, sizeof(float), [](const void *p, const void *q) {
                const float x = *(const float *)p, y = *(const float *)q;
                return (x > y) - (x < y);
            });
            gbs[vi] = bytes / (t[reps / 2] * 1e-3) / 1e9;
            free(t);
        }
        double worst = 0;
        for (int vi = 0; vi < n_versions; vi++) worst = fmax(worst, err[vi]);
        printf("| %s | %s | %.1f |", s.what, quant_type_name(s.type), bytes / 1e6);
        for (int vi = 0; vi < n_versions; vi++) printf(" %.0f |", gbs[vi]);
        printf(" %.1e | %.1e |\n", worst, err_x);
        fflush(stdout);
        cudaFree(dw);
        cudaFree(dx);
        cudaFree(dy);
        cudaFree(dq);
        cudaFree(dd);
        free(hw), free(hx), free(wrow), free(ref), free(ref8), free(xq), free(hy);
    }
    fails += layer_bench(reps);
    printf("qmatmul: %d failed\n", fails);
    return fails != 0;
}
