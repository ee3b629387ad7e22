/* Causal attention of a prompt chunk on tensor cores (flash attention).
 *
 * The chunk's n queries are the tokens at pos0 .. pos0 + n - 1, whose K and
 * V are already in the cache; query t attends to cached tokens 0 .. pos0 + t.
 * A CTA takes one KV head and 64 or 128 query rows: the rows are (token,
 * head) pairs of that KV head's group (GQA packed: row = token * group +
 * head), so K and V tiles are read once for all the heads that share them.
 * Its warps own 16 rows each; the CTA walks the keys in tiles of 64, K and V
 * double-buffered in shared memory through cp.async, S = Q K^T and O += P V
 * as m16n8k16 MMAs with fp32 accumulators, and an online softmax in base 2
 * (Q is pre-scaled by softmax_scale * log2 e). P goes from S's accumulator
 * layout to the A operand of P V without moving (mma.cuh). Only tiles past
 * the CTA's first query position are masked.
 *
 * Precision: Q and P enter the MMAs as fp16 (K and V are fp16 in the cache),
 * the scores and sums are fp32. The output is written in fp16: it feeds the
 * output projection's fp16 product, and it is a convex combination of fp16
 * V rows, so it cannot leave fp16's range. */
#ifndef FASA_CUDA_FLASH_CUH
#define FASA_CUDA_FLASH_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "launch.cuh"
#include "mma.cuh"

#define FLASH_KEYS 64 /* keys per tile */

typedef struct flash_args {
    const float *q;          /* [n][n_heads][D] fp32, post-RoPE */
    __half *out;             /* [n][n_heads][D] */
    const __half *k, *v;     /* cache base [n_kv][cap][D] (device or mapped host) */
    int64_t head_stride;     /* cap * D */
    int32_t n, n_heads, group, pos0;
    int32_t tokens_per_cta;  /* rows per CTA / group (set by flash_launch) */
    float scale_log2;
} flash_args;

template <int D, int ROWS> constexpr int flash_smem_bytes() { return (ROWS + 4 * FLASH_KEYS) * (D + 8) * 2; }

template <int D, int ROWS>
__global__ void __launch_bounds__(ROWS * 2) flash_prefill_kernel(const flash_args a) {
    constexpr int THREADS = ROWS * 2;
    constexpr int LD = D + 8; /* halves per shared row: ldmatrix's 8 row reads hit distinct banks */
    extern __shared__ __align__(16) __half flash_smem[];
    __half *sq = flash_smem;                  /* [ROWS][LD] */
    __half *sk = sq + ROWS * LD;              /* [2][KEYS][LD] */
    __half *sv = sk + 2 * FLASH_KEYS * LD;    /* [2][KEYS][LD] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
    const int kvh = blockIdx.y, G = a.group;
    const int t0 = blockIdx.x * a.tokens_per_cta;
    const int n_tok = min(a.tokens_per_cta, a.n - t0);
    const int n_rows = n_tok * G;
    const int64_t first_pos = (int64_t)a.pos0 + t0;  /* the CTA's smallest query position */
    const int64_t n_keys = first_pos + n_tok;        /* keys its last query sees */
    const __half *kbase = a.k + kvh * a.head_stride, *vbase = a.v + kvh * a.head_stride;
    pdl_wait();

    /* Q rows -> fp16, scaled; rows past the chunk are zero. */
    for (int i = tid; i < ROWS * D / 4; i += THREADS) {
        const int r = i / (D / 4), d = (i % (D / 4)) * 4;
        float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < n_rows) {
            const int64_t t = t0 + r / G, h = (int64_t)kvh * G + r % G;
            x = *reinterpret_cast<const float4 *>(a.q + (t * a.n_heads + h) * D + d);
        }
        __half2 *dst = reinterpret_cast<__half2 *>(sq + r * LD + d);
        dst[0] = __floats2half2_rn(x.x * a.scale_log2, x.y * a.scale_log2);
        dst[1] = __floats2half2_rn(x.z * a.scale_log2, x.w * a.scale_log2);
    }

    auto load_tile = [&](int64_t key0, int buf) {
        constexpr int PIECES = FLASH_KEYS * D / 8; /* 16-byte pieces per matrix */
        for (int p = tid; p < PIECES; p += THREADS) {
            const int r = p / (D / 8), d = (p % (D / 8)) * 8;
            const int64_t key = key0 + r;
            const bool ok = key < n_keys;
            const int64_t off = (ok ? key : 0) * D + d;
            cp16_zfill(sk + (buf * FLASH_KEYS + r) * LD + d, kbase + off, ok);
            cp16_zfill(sv + (buf * FLASH_KEYS + r) * LD + d, vbase + off, ok);
        }
    };

    const int n_tiles = (int)((n_keys + FLASH_KEYS - 1) / FLASH_KEYS);
    load_tile(0, 0);
    cp_commit();
    __syncthreads();

    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
        ldsm_x4(qf[kk], sq + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);

    /* This thread's two rows (g and g + 8 of the warp's 16) and their positions. */
    int64_t pos[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = warp * 16 + g + 8 * h;
        pos[h] = r < n_rows ? first_pos + r / G : n_keys - 1;
    }
    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.f, 0.f};

    for (int tile = 0; tile < n_tiles; tile++) {
        const int buf = tile & 1;
        if (tile + 1 < n_tiles) load_tile((int64_t)(tile + 1) * FLASH_KEYS, buf ^ 1);
        cp_commit();
        cp_wait<1>();
        __syncthreads();
        const __half *tk = sk + buf * FLASH_KEYS * LD, *tv = sv + buf * FLASH_KEYS * LD;

        float s[FLASH_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < FLASH_KEYS / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
            for (int j = 0; j < FLASH_KEYS / 16; j++) {
                uint32_t b[4];
                ldsm_x4(b, tk + (j * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
                mma_16816(s[2 * j], qf[kk], b[0], b[1]);
                mma_16816(s[2 * j + 1], qf[kk], b[2], b[3]);
            }

        const int64_t key0 = (int64_t)tile * FLASH_KEYS;
        if (key0 + FLASH_KEYS - 1 > first_pos) { /* some key of the tile is past some row's position */
#pragma unroll
            for (int j = 0; j < FLASH_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    if (key0 + j * 8 + 2 * c + (e & 1) > pos[e >> 1]) s[j][e] = -INFINITY;
        }

        /* Online softmax per row; a row's 64 scores sit in the 4 lanes of its quad. */
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float m = mx[h];
#pragma unroll
            for (int j = 0; j < FLASH_KEYS / 8; j++) m = fmaxf(m, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            /* key 0 is in every row's range, so m is finite from the first tile on */
            corr[h] = exp2f(mx[h] - m);
            mx[h] = m;
            float rs = 0.f;
#pragma unroll
            for (int j = 0; j < FLASH_KEYS / 8; j++) {
                s[j][2 * h] = exp2f(s[j][2 * h] - m);
                s[j][2 * h + 1] = exp2f(s[j][2 * h + 1] - m);
                rs += s[j][2 * h] + s[j][2 * h + 1];
            }
            sum[h] = sum[h] * corr[h] + rs; /* this lane's share; the quad's shares add up at the end */
        }
#pragma unroll
        for (int j = 0; j < D / 8; j++) {
            o[j][0] *= corr[0];
            o[j][1] *= corr[0];
            o[j][2] *= corr[1];
            o[j][3] *= corr[1];
        }

#pragma unroll
        for (int kk = 0; kk < FLASH_KEYS / 16; kk++) {
            const uint32_t pf[4] = {half2_bits(__floats2half2_rn(s[2 * kk][0], s[2 * kk][1])),
                                    half2_bits(__floats2half2_rn(s[2 * kk][2], s[2 * kk][3])),
                                    half2_bits(__floats2half2_rn(s[2 * kk + 1][0], s[2 * kk + 1][1])),
                                    half2_bits(__floats2half2_rn(s[2 * kk + 1][2], s[2 * kk + 1][3]))};
#pragma unroll
            for (int j = 0; j < D / 16; j++) {
                uint32_t b[4];
                ldsm_x4_trans(b, tv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + j * 16 + (lane >> 4) * 8);
                mma_16816(o[2 * j], pf, b[0], b[1]);
                mma_16816(o[2 * j + 1], pf, b[2], b[3]);
            }
        }
        __syncthreads(); /* the next iteration's load refills the other buffer's partner */
    }
    pdl_trigger();

#pragma unroll
    for (int h = 0; h < 2; h++) {
        float l = sum[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int r = warp * 16 + g + 8 * h;
        if (r >= n_rows) continue;
        const float inv = 1.0f / l;
        const int64_t t = t0 + r / G, head = (int64_t)kvh * G + r % G;
        __half *dst = a.out + (t * a.n_heads + head) * D;
#pragma unroll
        for (int j = 0; j < D / 8; j++)
            *reinterpret_cast<__half2 *>(dst + j * 8 + 2 * c) =
                __floats2half2_rn(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
    }
}

/* Enqueues the kernel for head dimension D (64 or 128) with ROWS query rows per CTA. */
template <int D, int ROWS> static cudaError_t flash_launch_d(flash_args a, int32_t n_kv, cudaStream_t st) {
    a.tokens_per_cta = ROWS / a.group;
    /* the dynamic shared-memory limit is per function and device: set it every time (cheap) */
    const cudaError_t e = cudaFuncSetAttribute(flash_prefill_kernel<D, ROWS>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, flash_smem_bytes<D, ROWS>());
    if (e != cudaSuccess) return e;
    const dim3 grid((unsigned)((a.n + a.tokens_per_cta - 1) / a.tokens_per_cta), (unsigned)n_kv);
    return launch_k(flash_prefill_kernel<D, ROWS>, grid, dim3(ROWS * 2), (size_t)flash_smem_bytes<D, ROWS>(), st, true,
                    a);
}

/* rows: query rows per CTA, 64 or 128; 0 picks: 128 (K and V read from L2
 * half as often) once the chunk gives every multiprocessor a CTA anyway. */
static inline cudaError_t flash_launch(const flash_args &a, int32_t n_kv, int32_t D, cudaStream_t st, int rows = 0) {
    if (rows == 0) rows = (int64_t)a.n * a.group / 128 * n_kv >= 128 ? 128 : 64;
    if (D == 128) return rows == 128 ? flash_launch_d<128, 128>(a, n_kv, st) : flash_launch_d<128, 64>(a, n_kv, st);
    return rows == 128 ? flash_launch_d<64, 128>(a, n_kv, st) : flash_launch_d<64, 64>(a, n_kv, st);
}

#endif
