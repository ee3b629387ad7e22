/* Block-format decoding of eight consecutive elements, written once for the
 * CPU (C) and the GPU (CUDA device code): the GPU's matrix kernels decode a
 * weight row eight elements per thread with these, and the CPU's tests check
 * them against the scalar decoders and the gguf package's output. The field
 * unpacking of the K-quants lives here too, shared by every decoder.
 *
 * qb_dequant8_<fmt>(block, j, out): elements 8j .. 8j + 7 of one block
 * (j < QB_GROUPS); the layouts are described in quant.c. F32, F16 and BF16
 * are taken in "blocks" of 8 elements. */
#ifndef FASA_QUANT_BLOCK_H
#define FASA_QUANT_BLOCK_H

#include <stdint.h>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define QB_FN __device__ __forceinline__ static
static __device__ __forceinline__ float qb_f16(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | p[1] << 8)));
}
static __device__ __forceinline__ float qb_bf16(const uint8_t *p) {
    return __uint_as_float((uint32_t)(p[0] | p[1] << 8) << 16);
}
static __device__ __forceinline__ float qb_f32(const uint8_t *p) {
    return __uint_as_float((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}
#else
#include <string.h>
#define QB_FN static inline
float quant_f16_to_f32_scalar(uint16_t h);
static inline float qb_f16(const uint8_t *p) { return quant_f16_to_f32_scalar((uint16_t)(p[0] | p[1] << 8)); }
static inline float qb_bf16(const uint8_t *p) {
    const uint32_t bits = (uint32_t)(p[0] | p[1] << 8) << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}
static inline float qb_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, sizeof f);
    return f;
}
#endif

/* q4_k and q5_k pack eight 6-bit scales and eight 6-bit mins in 12 bytes:
 * sub-blocks 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins);
 * sub-blocks 4-7 in the nibbles of bytes 8-11 (scale low, min high) with
 * their top two bits in the spare high bits of bytes 0-3 and 4-7. */
QB_FN void quant_k_scale_min(const uint8_t *s, int sub, int *sc, int *mn) {
    if (sub < 4) {
        *sc = s[sub] & 63;
        *mn = s[sub + 4] & 63;
    } else {
        *sc = (s[sub + 4] & 0xf) | ((s[sub - 4] >> 6) << 4);
        *mn = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
    }
}

/* q3_k packs sixteen 6-bit scales, stored offset by 32, in 12 bytes: the low
 * four bits of scale j in byte j % 8 (low nibble for j < 8, high nibble
 * after), the top two in byte 8 + j % 4 at bits 2 (j / 4). */
QB_FN int quant_q3_k_scale(const uint8_t *s, int j) {
    int lo = (s[j % 8] >> (4 * (j / 8))) & 0xf;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

QB_FN void qb_dequant8_f32(const uint8_t *b, int j, float *out) {
    for (int i = 0; i < 8; i++) out[i] = qb_f32(b + 32 * j + 4 * i);
}
QB_FN void qb_dequant8_f16(const uint8_t *b, int j, float *out) {
    for (int i = 0; i < 8; i++) out[i] = qb_f16(b + 16 * j + 2 * i);
}
QB_FN void qb_dequant8_bf16(const uint8_t *b, int j, float *out) {
    for (int i = 0; i < 8; i++) out[i] = qb_bf16(b + 16 * j + 2 * i);
}

/* The 32-element nibble formats: group j < 4 reads bytes 8 (j % 2) .. + 7 of
 * the nibbles, low nibbles for j < 2; q5's fifth bit of element e is bit e
 * of qh. zero: 8 (q4_0), 16 (q5_0), or 0 with a min (q4_1, q5_1). */
QB_FN void qb_dequant8_32(const uint8_t *b, int j, float *out, int has_min, int fifth_bit) {
    const int qh_at = has_min ? 4 : 2, qs_at = qh_at + (fifth_bit ? 4 : 0);
    const int zero = has_min ? 0 : fifth_bit ? 16 : 8;
    const float d = qb_f16(b), m = has_min ? qb_f16(b + 2) : 0.0f;
    const uint32_t qh = fifth_bit ? (uint32_t)b[qh_at] | (uint32_t)b[qh_at + 1] << 8 | (uint32_t)b[qh_at + 2] << 16 |
                                        (uint32_t)b[qh_at + 3] << 24
                                  : 0u;
    const uint8_t *qs = b + qs_at + 8 * (j & 1);
    const int shift = 4 * (j >> 1);
    for (int i = 0; i < 8; i++) {
        const int e = 8 * j + i;
        const int q = ((qs[i] >> shift) & 0xf) | (int)((qh >> e) & 1) << 4;
        out[i] = (float)(q - zero) * d + m;
    }
}
QB_FN void qb_dequant8_q4_0(const uint8_t *b, int j, float *out) { qb_dequant8_32(b, j, out, 0, 0); }
QB_FN void qb_dequant8_q4_1(const uint8_t *b, int j, float *out) { qb_dequant8_32(b, j, out, 1, 0); }
QB_FN void qb_dequant8_q5_0(const uint8_t *b, int j, float *out) { qb_dequant8_32(b, j, out, 0, 1); }
QB_FN void qb_dequant8_q5_1(const uint8_t *b, int j, float *out) { qb_dequant8_32(b, j, out, 1, 1); }

QB_FN void qb_dequant8_q8_0(const uint8_t *b, int j, float *out) {
    const float d = qb_f16(b);
    for (int i = 0; i < 8; i++) out[i] = (float)(int8_t)b[2 + 8 * j + i] * d;
}

/* q2_k and q3_k: element e = 128h + 32g + l takes bits 2g..2g+1 of code byte
 * 32h + l; a group of 8 stays inside one (h, g) and one 16-element scale. */
QB_FN void qb_dequant8_q2_k(const uint8_t *b, int j, float *out) {
    const int e0 = 8 * j, s = b[e0 / 16];
    const float d = qb_f16(b + 80) * (float)(s & 0xf), m = qb_f16(b + 82) * (float)(s >> 4);
    const uint8_t *qs = b + 16 + 32 * (e0 / 128) + e0 % 32;
    const int shift = 2 * (e0 % 128 / 32);
    for (int i = 0; i < 8; i++) out[i] = d * (float)((qs[i] >> shift) & 3) - m;
}

QB_FN void qb_dequant8_q3_k(const uint8_t *b, int j, float *out) {
    const int e0 = 8 * j;
    const float d = qb_f16(b + 108) * (float)quant_q3_k_scale(b + 96, e0 / 16);
    const uint8_t *qs = b + 32 + 32 * (e0 / 128) + e0 % 32, *hm = b + e0 % 32;
    const int shift = 2 * (e0 % 128 / 32), bit = e0 / 32;
    for (int i = 0; i < 8; i++) out[i] = d * (float)(((qs[i] >> shift) & 3) - (((hm[i] >> bit) & 1) ? 0 : 4));
}

/* q4_k, and q5_k (`fifth_bit`) with its 32-byte qh plane before the nibbles. */
QB_FN void qb_dequant8_k(const uint8_t *b, int j, float *out, int fifth_bit) {
    const int e0 = 8 * j, sub = e0 / 32, qs_at = fifth_bit ? 48 : 16;
    int sc, mn;
    quant_k_scale_min(b + 4, sub, &sc, &mn);
    const float scale = qb_f16(b) * (float)sc, min = qb_f16(b + 2) * (float)mn;
    const uint8_t *qs = b + qs_at + 32 * (sub / 2) + e0 % 32, *qh = b + 16 + e0 % 32;
    const int shift = 4 * (sub & 1);
    for (int i = 0; i < 8; i++) {
        int q = (qs[i] >> shift) & 0xf;
        if (fifth_bit) q |= ((qh[i] >> sub) & 1) << 4;
        out[i] = scale * (float)q - min;
    }
}
QB_FN void qb_dequant8_q4_k(const uint8_t *b, int j, float *out) { qb_dequant8_k(b, j, out, 0); }
QB_FN void qb_dequant8_q5_k(const uint8_t *b, int j, float *out) { qb_dequant8_k(b, j, out, 1); }

QB_FN void qb_dequant8_q6_k(const uint8_t *b, int j, float *out) {
    const int e0 = 8 * j, half = e0 / 128, g = e0 % 128 / 32, l = e0 % 32;
    const float d = qb_f16(b + 208) * (float)(int8_t)b[192 + e0 / 16];
    const uint8_t *ql = b + 64 * half + 32 * (g & 1) + l, *qh = b + 128 + 32 * half + l;
    for (int i = 0; i < 8; i++) {
        const int lo = (ql[i] >> (4 * (g >> 1))) & 0xf, hi = (qh[i] >> (2 * g)) & 3;
        out[i] = d * (float)((lo | hi << 4) - 32);
    }
}

#endif
