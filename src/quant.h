/* Weight block formats and the kernels that compute with them.
 *
 * Weights stay in their GGUF block format (memory-mapped); these kernels
 * dequantize on the fly inside dot products and matrix products. Activations
 * are always f32, so the f32 path is accurate to float rounding against a
 * float64 reference. Each kernel has a portable scalar version and AVX2 /
 * AVX-512 versions chosen at compile time (-march=native); the tests check
 * the SIMD paths against the scalar ones. */
#ifndef FASA_QUANT_H
#define FASA_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ggml type ids, as stored in GGUF tensor infos. */
enum fasa_type {
    FASA_TYPE_F32 = 0,
    FASA_TYPE_F16 = 1,
    FASA_TYPE_Q4_0 = 2,
    FASA_TYPE_Q4_1 = 3,
    FASA_TYPE_Q5_0 = 6,
    FASA_TYPE_Q5_1 = 7,
    FASA_TYPE_Q8_0 = 8,
    FASA_TYPE_Q2_K = 10,
    FASA_TYPE_Q3_K = 11,
    FASA_TYPE_Q4_K = 12,
    FASA_TYPE_Q5_K = 13,
    FASA_TYPE_Q6_K = 14,
    FASA_TYPE_BF16 = 30,
};

typedef struct quant_traits {
    const char *name;  /* "q4_1" */
    int64_t block_size; /* elements per block */
    size_t block_bytes; /* bytes per block */
} quant_traits;

/* NULL for a type id this build cannot compute with. */
const quant_traits *quant_traits_of(uint32_t type);

/* The name of any type id ggml has defined ("q5_k", "iq2_xs", "bf16"),
 * whether or not this build computes with it, so that a refusal can say
 * what was refused; NULL for an id ggml never defined. */
const char *quant_type_name(uint32_t type);

/* The types this build computes with, in id order: "f32, f16, q4_0, ...". */
const char *quant_supported_names(void);

/* Bytes taken by a row of n elements; 0 if the type is unsupported, n is not
 * a multiple of the block size, or the size overflows. */
size_t quant_row_bytes(uint32_t type, int64_t n);

/* dst[0..n) = dequantized src row. n must be a multiple of the block size. */
void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* Dot product of one weight row (n elements) with an f32 vector. */
float quant_dot(uint32_t type, const void *row, const float *x, int64_t n);

/* Matrix product with a weight matrix of `rows` rows of `cols` elements each
 * (GGUF order: row r starts at r * quant_row_bytes(type, cols)):
 *   y[t * rows + r] = sum_c W[r][c] * x[t * cols + c]   for t < n_tok, r < rows.
 * n_tok == 1 is the decode path (one pass over W, split across threads by
 * rows); larger n_tok dequantizes W in cache-sized tiles and reuses each tile
 * across all tokens. Uses up to n_threads OpenMP threads. */
void quant_matmul(uint32_t type, const void *w, int64_t rows, int64_t cols,
                  const float *x, int64_t n_tok, float *y, int n_threads);

/* quant_matmul for decode with the activations rounded to int8 in groups
 * of 32 (x ~ d q, d = max |x| / 127) and integer dot products: the CPU's
 * fastest decode path, with its own numerics (quant_x8.c). Formats without
 * an integer kernel, rows not a multiple of 256 and prefill-sized token
 * counts take quant_matmul's exact f32 path. */
void quant_matmul_x8(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x,
                     int64_t n_tok, float *y, int n_threads);

/* One of several weight matrices multiplied by the same activations. */
typedef struct quant_product {
    uint32_t type;
    const void *w;
    int64_t rows;
    float *y; /* [n_tok][rows] */
} quant_product;
#define QUANT_MAX_PRODUCTS 4

/* quant_matmul_x8 for n matrices with rows of `cols` elements sharing x:
 * x is rounded once, and a decode step's products share one parallel
 * region (one fork and join for Q, K and V, or for gate and up). */
void quant_matmul_x8_set(const quant_product *p, int n, int64_t cols, const float *x, int64_t n_tok, int n_threads);

/* IEEE half <-> float, used by the F16 format and the f16 KV cache. */
float fasa_f16_to_f32(uint16_t h);
uint16_t fasa_f32_to_f16(float f);
float fasa_bf16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif

#endif
