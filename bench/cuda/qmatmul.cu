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
 *        a warp step reads one block and coalesced activations (R = 1, 2, 4)
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -Iinclude -Isrc -Isrc/cuda bench/cuda/qmatmul.cu \
 *        build/quant.o -o qmatmul        (quant.o: src/quant.c and src/quant_simd.c, see run.sh)
 *   ./qmatmul [--reps N] */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmatmul.cuh"

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

/* Launches version v (1: generic; 10 V + R: K-quant version V with R rows per warp). */
static void launch(int v, uint32_t type, const qmm_args &a) {
    if (v == 1) qfmt_dispatch(type, qmm_launcher{a, 0});
    else if (v / 10 == 2) launch_v2(type, a, v % 10);
    else qmm_launch_kquant(type, a, 0, v % 10);
    CK(cudaGetLastError());
}

int main(int argc, char **argv) {
    int reps = 50;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bogus-flag")) return 2;
    const int versions[] = {1, 22, 24, 31, 32, 34};
    const int n_versions = sizeof versions / sizeof versions[0];
    int fails = 0;
    printf("| shape | type | MB | v1 GB/s | v2 R=2 | v2 R=4 | v3 R=1 | v3 R=2 | v3 R=4 | max rel err |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n");
    for (const shape &s : shapes) {
        const size_t row = quant_row_bytes(s.type, s.cols), bytes = row * s.rows;
        const size_t bb = s.type == FASA_TYPE_Q4_K ? 144 : 210;
        const int copies = (int)(256e6 / bytes) + 2;
        uint8_t *hw = (uint8_t *)malloc(bytes);
        float *hx = (float *)malloc(s.cols * sizeof(float)), *wrow = (float *)malloc(s.cols * sizeof(float));
        double *ref = (double *)malloc(s.rows * sizeof(double));
        float *hy = (float *)malloc(s.rows * sizeof(float));
        fill(s.type, hw, bytes, bb);
        for (int64_t c = 0; c < s.cols; c++) hx[c] = (float)((double)(next64() >> 11) * 0x1.0p-53 * 2 - 1);
        double ymax = 0;
        for (int64_t r = 0; r < s.rows; r++) {
            quant_dequant_ref(s.type, hw + r * row, wrow, s.cols);
            double acc = 0;
            for (int64_t c = 0; c < s.cols; c++) acc += (double)wrow[c] * hx[c];
            ref[r] = acc;
            ymax = fmax(ymax, fabs(acc));
        }
        uint8_t *dw;
        float *dx, *dy;
        CK(cudaMalloc(&dw, copies * bytes + 256));
        for (int k = 0; k < copies; k++) CK(cudaMemcpy(dw + k * bytes, hw, bytes, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&dx, s.cols * sizeof(float)));
        CK(cudaMalloc(&dy, s.rows * sizeof(float)));
        CK(cudaMemcpy(dx, hx, s.cols * sizeof(float), cudaMemcpyHostToDevice));
        double gbs[8] = {0}, err[8] = {0};
        for (int vi = 0; vi < n_versions; vi++) {
            qmm_args a = {dw, (int64_t)row, s.rows, s.cols, dx, s.cols, dy, s.rows, 1, nullptr};
            CK(cudaMemset(dy, 0xff, s.rows * sizeof(float))); /* NaN: every output must be written */
            launch(versions[vi], s.type, a);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(hy, dy, s.rows * sizeof(float), cudaMemcpyDeviceToHost));
            for (int64_t r = 0; r < s.rows; r++) err[vi] = fmax(err[vi], isfinite(hy[r]) ? fabs(hy[r] - ref[r]) / ymax : 1e9);
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
                launch(versions[vi], s.type, a);
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
        printf("| %s | %s | %.1f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.1e |\n", s.what, quant_type_name(s.type),
               bytes / 1e6, gbs[0], gbs[1], gbs[2], gbs[3], gbs[4], gbs[5], worst);
        fflush(stdout);
        cudaFree(dw);
        cudaFree(dx);
        cudaFree(dy);
        free(hw), free(hx), free(wrow), free(ref), free(hy);
    }
    printf("qmatmul: %d failed\n", fails);
    return fails != 0;
}
