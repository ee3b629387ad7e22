/* Matrix products of a prompt chunk on tensor cores.
 *
 *   y[t][r] = alpha * sum_c W[r][c] x[t][c] (+ bias[r])   t < M tokens, r < N rows
 *
 * A weight matrix is first expanded from its GGUF block format into an fp16
 * copy (gemm_dequant_f16: one pass that reads the blocks once and writes
 * 2 bytes per weight), then multiplied by the chunk's fp16 activations with
 * m16n8k16 MMAs and fp32 accumulators. For a chunk of hundreds of tokens
 * the expansion costs a few percent of the product: the product reads each
 * weight once per 128 tokens, from L2.
 *
 * fp16 activations: the chunk's input is scaled by a power of two (exact)
 * so that its largest magnitude is at most 2^14, far from fp16's 65504
 * (a SwiGLU output of some models reaches thousands); the product is
 * scaled back by alpha, read from device memory. The mantissa is fp16's 11
 * bits, more than the 8 bits of the int8 rounding the decode products use.
 *
 * Tiles: a CTA of 8 warps computes 128 tokens x 128 rows, stepping 32
 * columns at a time through a 3-stage cp.async pipeline; each warp owns
 * 64 x 32 of the tile (4 x 4 MMA tiles). Shared rows are padded to 40
 * halves so that ldmatrix's eight 16-byte row reads fall in distinct banks. */
#ifndef FASA_CUDA_GEMM_CUH
#define FASA_CUDA_GEMM_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "launch.cuh"
#include "mma.cuh"
#include "qmatmul.cuh"

#define GEMM_BM 128
#define GEMM_BN 128
#define GEMM_BK 32
#define GEMM_LD (GEMM_BK + 8) /* halves per shared row */
#define GEMM_STAGES 3
#define GEMM_THREADS 256
#define GEMM_SMEM (GEMM_STAGES * (GEMM_BM + GEMM_BN) * GEMM_LD * 2)
#define GEMM_XMAX 16384.0f /* the largest magnitude the fp16 input is scaled to */

typedef struct gemm_args {
    const __half *x; /* [M][ldx] */
    int64_t ldx;
    const __half *w; /* [N][ldw] */
    int64_t ldw;
    float *y;        /* [M][ldy] */
    int64_t ldy;
    int32_t M, N, K; /* K a multiple of 8 */
    const float *bias;  /* [N] or NULL */
    const float *alpha; /* device scalar or NULL (1) */
} gemm_args;

/* W (rows x cols in format T) -> fp16 [rows][cols]: one thread per 8 weights. */
template <int T>
__global__ void gemm_dequant_f16_kernel(const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t cols, __half *out) {
    using F = qfmt<T>;
    constexpr int GPB = F::elems / 8;
    pdl_enter();
    const int64_t groups = rows * (cols / 8), per_row = cols / 8;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < groups; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / per_row, g = i % per_row;
        float f[8];
        F::dequant8(w + r * row_bytes + (g / GPB) * F::bytes, (int)(g % GPB), f);
        uint4 h;
        h.x = half2_bits(__floats2half2_rn(f[0], f[1]));
        h.y = half2_bits(__floats2half2_rn(f[2], f[3]));
        h.z = half2_bits(__floats2half2_rn(f[4], f[5]));
        h.w = half2_bits(__floats2half2_rn(f[6], f[7]));
        *reinterpret_cast<uint4 *>(out + r * cols + 8 * g) = h;
    }
}

/* *amax = max(*amax, max |x|) as float bits (non-negative floats order as
 * unsigned integers); *amax must start at 0. NaN propagates as a NaN bit
 * pattern, larger than every finite one. */
__global__ void gemm_absmax_kernel(const float *x, int64_t n, unsigned *amax) {
    __shared__ unsigned s[32];
    pdl_enter();
    unsigned m = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        m = max(m, __float_as_uint(fabsf(x[i])));
    for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) s[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x < 32) {
        m = threadIdx.x < (blockDim.x >> 5) ? s[threadIdx.x] : 0;
        for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (threadIdx.x == 0) atomicMax(amax, m);
    }
}

/* The power of two that brings amax to at most GEMM_XMAX (1 when it is
 * already, or when amax is not finite: then the product is not either). */
__device__ __forceinline__ float gemm_input_scale(unsigned amax_bits) {
    const float a = __uint_as_float(amax_bits);
    if (!(a > GEMM_XMAX) || isinf(a)) return 1.0f;
    return exp2f(-ceilf(log2f(a / GEMM_XMAX)));
}

/* xh = x * scale as fp16 (rows of ld halves), alpha = 1 / scale. */
__global__ void gemm_to_f16_kernel(const float *x, int64_t rows, int64_t cols, __half *xh, const unsigned *amax,
                                   float *alpha) {
    pdl_enter();
    const float s = gemm_input_scale(*amax);
    if (blockIdx.x == 0 && threadIdx.x == 0) *alpha = 1.0f / s;
    const int64_t n = rows * cols / 2;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float2 v = reinterpret_cast<const float2 *>(x)[i];
        reinterpret_cast<__half2 *>(xh)[i] = __floats2half2_rn(v.x * s, v.y * s);
    }
}

__global__ void __launch_bounds__(GEMM_THREADS) gemm_f16_kernel(const gemm_args a) {
    extern __shared__ __align__(16) __half gemm_smem[];
    __half *sa = gemm_smem;                                   /* [STAGES][BM][LD] */
    __half *sb = gemm_smem + GEMM_STAGES * GEMM_BM * GEMM_LD; /* [STAGES][BN][LD] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 2, wn = warp & 3; /* 2 x 4 warps: 64 tokens x 32 rows each */
    const int64_t m0 = (int64_t)blockIdx.y * GEMM_BM, n0 = (int64_t)blockIdx.x * GEMM_BN;
    const int kt_n = (a.K + GEMM_BK - 1) / GEMM_BK;
    pdl_wait();

    /* Stage kt's tiles: each of 256 threads copies 2 of A's 512 16-byte
     * pieces and 2 of B's. */
    auto load = [&](int kt, int stage) {
        const int k0 = kt * GEMM_BK;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int p = tid + i * GEMM_THREADS, r = p >> 2, c = (p & 3) * 8;
            const bool kin = k0 + c < a.K;
            const int64_t m = m0 + r, n = n0 + r;
            const bool va = kin && m < a.M, vb = kin && n < a.N;
            cp16_zfill(sa + (stage * GEMM_BM + r) * GEMM_LD + c, va ? a.x + m * a.ldx + k0 + c : a.x, va);
            cp16_zfill(sb + (stage * GEMM_BN + r) * GEMM_LD + c, vb ? a.w + n * a.ldw + k0 + c : a.w, vb);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

#pragma unroll
    for (int s = 0; s < GEMM_STAGES - 1; s++) {
        if (s < kt_n) load(s, s);
        cp_commit();
    }
    for (int kt = 0; kt < kt_n; kt++) {
        cp_wait<GEMM_STAGES - 2>();
        __syncthreads(); /* tile kt landed for all; everyone is done with tile kt - 1's stage */
        if (kt + GEMM_STAGES - 1 < kt_n) load(kt + GEMM_STAGES - 1, (kt + GEMM_STAGES - 1) % GEMM_STAGES);
        cp_commit();
        const __half *ta = sa + (kt % GEMM_STAGES) * GEMM_BM * GEMM_LD;
        const __half *tb = sb + (kt % GEMM_STAGES) * GEMM_BN * GEMM_LD;
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; kk += 16) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++)
                ldsm_x4(af[i], ta + (wm * 64 + i * 16 + (lane & 15)) * GEMM_LD + kk + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                uint32_t r[4];
                ldsm_x4(r, tb + (wn * 32 + j * 16 + (lane & 7) + (lane >> 4) * 8) * GEMM_LD + kk + ((lane >> 3) & 1) * 8);
                bf[2 * j][0] = r[0];
                bf[2 * j][1] = r[1];
                bf[2 * j + 1][0] = r[2];
                bf[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) mma_16816(acc[i][j], af[i], bf[j][0], bf[j][1]);
        }
    }
    cp_wait<0>();
    pdl_trigger();

    const float alpha = a.alpha ? *a.alpha : 1.0f;
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t n = n0 + wn * 32 + j * 8 + 2 * c;
            if (n >= a.N) continue;
            const bool two = n + 1 < a.N;
            const float b0 = a.bias ? a.bias[n] : 0.f, b1 = a.bias && two ? a.bias[n + 1] : 0.f;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int64_t m = m0 + wm * 64 + i * 16 + g + 8 * h;
                if (m >= a.M) continue;
                float *y = a.y + m * a.ldy + n;
                const float v0 = acc[i][j][2 * h] * alpha + b0, v1 = acc[i][j][2 * h + 1] * alpha + b1;
                if (two && !((uintptr_t)y & 7)) {
                    *reinterpret_cast<float2 *>(y) = make_float2(v0, v1);
                } else {
                    y[0] = v0;
                    if (two) y[1] = v1;
                }
            }
        }
}

/* y[m][n] += bias[n] for m < M, n < N (after a product that took no bias). */
__global__ void gemm_bias_kernel(float *y, int64_t ldy, int64_t M, int64_t N, const float *bias) {
    pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < M * N; i += (int64_t)gridDim.x * blockDim.x)
        y[(i / N) * ldy + i % N] += bias[i % N];
}

/* ---- host side ---------------------------------------------------------- */

struct gemm_dequant_launcher {
    const uint8_t *w;
    int64_t row_bytes, rows, cols;
    __half *out;
    cudaStream_t st;
    cudaError_t *e;
    template <int T> void operator()() const {
        const int64_t groups = rows * (cols / 8);
        int64_t grid = (groups + 255) / 256;
        if (grid > 65535 * 8) grid = 65535 * 8;
        *e = launch_k(gemm_dequant_f16_kernel<T>, dim3((unsigned)grid), dim3(256), 0, st, true, w, row_bytes, rows,
                      cols, out);
    }
};

/* out = W as fp16 [rows][cols]; false for a format without a kernel. */
static inline bool gemm_dequant_f16(uint32_t type, const uint8_t *w, int64_t row_bytes, int64_t rows, int64_t cols,
                                    __half *out, cudaStream_t st, cudaError_t *e) {
    return qfmt_dispatch(type, gemm_dequant_launcher{w, row_bytes, rows, cols, out, st, e});
}

/* xh = x scaled into fp16 range, *alpha = the inverse scale; amax is a
 * device word this call zeroes first. */
static inline cudaError_t gemm_input_f16(const float *x, int64_t rows, int64_t cols, __half *xh, unsigned *amax,
                                         float *alpha, cudaStream_t st) {
    cudaError_t e = cudaMemsetAsync(amax, 0, sizeof *amax, st);
    const int64_t n = rows * cols;
    const unsigned grid = (unsigned)((n / 2 + 255) / 256 < 2048 ? (n / 2 + 255) / 256 : 2048);
    if (e == cudaSuccess) e = launch_k(gemm_absmax_kernel, dim3(grid ? grid : 1), dim3(256), 0, st, true, x, n, amax);
    if (e == cudaSuccess)
        e = launch_k(gemm_to_f16_kernel, dim3(grid ? grid : 1), dim3(256), 0, st, true, x, rows, cols, xh,
                     (const unsigned *)amax, alpha);
    return e;
}

static inline cudaError_t gemm_f16(const gemm_args &a, cudaStream_t st) {
    /* the dynamic shared-memory limit is per function and device: set it every time (cheap) */
    const cudaError_t e = cudaFuncSetAttribute(gemm_f16_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, GEMM_SMEM);
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((a.N + GEMM_BN - 1) / GEMM_BN), (unsigned)((a.M + GEMM_BM - 1) / GEMM_BM));
    return launch_k(gemm_f16_kernel, grid, dim3(GEMM_THREADS), GEMM_SMEM, st, true, a);
}

#endif
