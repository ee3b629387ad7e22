/* Warp-level tensor-core pieces shared by the attention, prefill-attention
 * and matrix-product kernels: the m16n8k16 fp16 MMA with fp32 accumulators,
 * ldmatrix, and 16-byte cp.async copies that zero-fill what lies outside a
 * matrix.
 *
 * Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4):
 *   A (16x16, row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
 *   B (16x8, col-major):  b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
 *   C (16x8):             c0,c1 = (g, 2c..2c+1), c2,c3 = (g+8, 2c..2c+1)
 * ldmatrix gives lane (g, c) of each 8x8 matrix the pair (row g, columns
 * 2c, 2c+1), or with .trans the pair (rows 2c, 2c+1, column g): read from a
 * row-major tile, the first is an A fragment or (tile rows = n) a B
 * fragment, the second a B fragment whose tile rows are k. */
#ifndef FASA_CUDA_MMA_CUH
#define FASA_CUDA_MMA_CUH

#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t half2_bits(__half2 h) {
    union { __half2 h; uint32_t u; } x;
    x.h = h;
    return x.u;
}

/* Four 8x8 fp16 matrices from shared memory: lane l gives the address of
 * row l % 8 of matrix l / 8. */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *smem) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *smem) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* 16 bytes global -> shared, asynchronously; zeros when !valid (the source
 * is then not read, but must still be a mapped address). */
__device__ __forceinline__ void cp16_zfill(void *smem, const void *gmem, bool valid) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

#endif
