/* Block formats and their kernels, checked against decoders written here
 * from the format descriptions (not the library's scalar path), against
 * float64 references, against blocks decoded by the PyPI `gguf` package,
 * and against rows of the real model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_internal.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint8_t rng_byte(uint64_t *s) { return (uint8_t)(rng_next(s) >> 56); }

static float rng_uniform(uint64_t *s) { /* [-1, 1) */
    return (float)((double)(rng_next(s) >> 11) * 0x1.0p-52 - 1.0);
}

/* A random finite half between about 2^-9 and 2, either sign, built from
 * its bit fields so it does not depend on the library's encoder. */
static uint16_t rng_half(uint64_t *s) {
    uint64_t r = rng_next(s);
    uint16_t exp = (uint16_t)(6 + r % 10);
    return (uint16_t)(((r >> 8) & 1) << 15 | exp << 10 | ((r >> 16) & 0x3ff));
}

/* Value of a half from its definition, in double (exact). */
static double half_value(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v = exp == 0 ? ldexp(mant, -24) : exp == 31 ? (mant ? NAN : INFINITY) : ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static void put_half(uint8_t *p, uint16_t h) {
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- formats, as the test understands them ------------------------------ */

typedef struct test_format {
    uint32_t type;
    const char *name;
    int64_t block_size;
    size_t block_bytes;
} test_format;

static const test_format formats[] = {
    {FASA_TYPE_F32, "f32", 1, 4},        {FASA_TYPE_F16, "f16", 1, 2},
    {FASA_TYPE_BF16, "bf16", 1, 2},      {FASA_TYPE_Q4_0, "q4_0", 32, 18},
    {FASA_TYPE_Q4_1, "q4_1", 32, 20},    {FASA_TYPE_Q5_0, "q5_0", 32, 22},
    {FASA_TYPE_Q5_1, "q5_1", 32, 24},    {FASA_TYPE_Q8_0, "q8_0", 32, 34},
    {FASA_TYPE_Q2_K, "q2_k", 256, 84},   {FASA_TYPE_Q3_K, "q3_k", 256, 110},
    {FASA_TYPE_Q4_K, "q4_k", 256, 144},  {FASA_TYPE_Q5_K, "q5_k", 256, 176},
    {FASA_TYPE_Q6_K, "q6_k", 256, 210},
};
#define N_FORMATS (sizeof formats / sizeof formats[0])

/* Random bytes for a row of n elements; scale fields get sane finite halfs
 * (random bytes there would make NaNs and infinities). */
static const test_format *format_of(uint32_t type) {
    for (size_t i = 0; i < N_FORMATS; i++)
        if (formats[i].type == type) return &formats[i];
    fail_msg("type %u is not in the test's format list", type);
    return NULL;
}

static uint8_t *make_row(const test_format *f, int64_t n, uint64_t *s) {
    size_t nb = (size_t)(n / f->block_size), bytes = nb * f->block_bytes;
    uint8_t *row = malloc(bytes);
    assert_non_null(row);
    for (size_t i = 0; i < bytes; i++) row[i] = rng_byte(s);
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = row + b * f->block_bytes;
        switch (f->type) {
        case FASA_TYPE_F32: {
            float v = rng_uniform(s) * 4.0f;
            memcpy(blk, &v, 4);
            break;
        }
        case FASA_TYPE_F16: put_half(blk, rng_half(s)); break;
        case FASA_TYPE_BF16: put_half(blk, (uint16_t)(float_bits(rng_uniform(s) * 4.0f) >> 16)); break;
        case FASA_TYPE_Q4_0:
        case FASA_TYPE_Q5_0:
        case FASA_TYPE_Q8_0: put_half(blk, rng_half(s)); break;
        case FASA_TYPE_Q4_1:
        case FASA_TYPE_Q5_1:
        case FASA_TYPE_Q4_K:
        case FASA_TYPE_Q5_K:
            put_half(blk, rng_half(s));
            put_half(blk + 2, rng_half(s));
            break;
        case FASA_TYPE_Q2_K:
            put_half(blk + 80, rng_half(s));
            put_half(blk + 82, rng_half(s));
            break;
        case FASA_TYPE_Q3_K: put_half(blk + 108, rng_half(s)); break;
        case FASA_TYPE_Q6_K: put_half(blk + 208, rng_half(s)); break;
        }
    }
    return row;
}

/* Sub-block j (< 8) of q4_k / q5_k: 6-bit scale and min from the 12 bytes
 * at sc. j < 4: low 6 bits of bytes j and j+4. j >= 4: nibbles of byte
 * j+4 (scale low, min high) plus bits 6-7 of bytes j-4 (scale) and j (min)
 * on top. */
static void spec_k_scale_min(const uint8_t *sc, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = sc[j] % 64;
        *min = sc[j + 4] % 64;
    } else {
        *scale = sc[j + 4] % 16 + (sc[j - 4] / 64) * 16;
        *min = sc[j + 4] / 16 + (sc[j] / 64) * 16;
    }
}

/* Element i (< 32) of q5_0 / q5_1: nibble from the 16 bytes at qs (low
 * nibbles first), fifth bit i of the 4 bytes at qh read as one
 * little-endian 32-bit word, i.e. bit i % 8 of byte i / 8. */
static int spec_q5_code(const uint8_t *qh, const uint8_t *qs, int i) {
    int nibble = i < 16 ? qs[i] % 16 : qs[i - 16] / 16;
    return nibble + 16 * ((qh[i / 8] >> (i % 8)) % 2);
}

/* The 2-bit code of element i (< 256) of q2_k / q3_k: the 256 elements are
 * two halves of 128; in a half, element 32g + l is bits 2g, 2g+1 of byte
 * 32 * half + l of the 64 code bytes at qs. */
static int spec_crumb(const uint8_t *qs, int i) {
    int half = i / 128, g = (i % 128) / 32, l = i % 32;
    return (qs[32 * half + l] >> (2 * g)) % 4;
}

/* Element i of a block, in double, straight from the format description. */
static double spec_element(uint32_t type, const uint8_t *b, int i) {
    switch (type) {
    case FASA_TYPE_F32: {
        float v;
        memcpy(&v, b, 4);
        return v;
    }
    case FASA_TYPE_F16: return half_value(get_u16(b));
    case FASA_TYPE_BF16: return (double)bits_float((uint32_t)get_u16(b) << 16);
    case FASA_TYPE_Q4_0: {
        int q = i < 16 ? b[2 + i] & 15 : b[2 + i - 16] >> 4;
        return (q - 8) * half_value(get_u16(b));
    }
    case FASA_TYPE_Q4_1: {
        int q = i < 16 ? b[4 + i] & 15 : b[4 + i - 16] >> 4;
        return q * half_value(get_u16(b)) + half_value(get_u16(b + 2));
    }
    case FASA_TYPE_Q8_0: return (int8_t)b[2 + i] * half_value(get_u16(b));
    case FASA_TYPE_Q5_0: return (spec_q5_code(b + 2, b + 6, i) - 16) * half_value(get_u16(b));
    case FASA_TYPE_Q5_1:
        return spec_q5_code(b + 4, b + 8, i) * half_value(get_u16(b)) + half_value(get_u16(b + 2));
    case FASA_TYPE_Q2_K: {
        /* 16 scale bytes first, one per 16 elements: scale in the low
         * nibble, min in the high one; then 64 code bytes, d, dmin. */
        int s = b[i / 16];
        return half_value(get_u16(b + 80)) * (s % 16) * spec_crumb(b + 16, i) -
               half_value(get_u16(b + 82)) * (s / 16);
    }
    case FASA_TYPE_Q3_K: {
        /* 32 hmask bytes (bit i / 32 of byte i % 32 set: no -4 offset), 64
         * code bytes, 12 scale bytes, d. Scale j = i / 16 (6 bits, stored
         * + 32): low 4 bits in byte j % 8, low nibble for j < 8, high
         * nibble otherwise; high 2 bits at bits 2 (j / 4) of byte 8 + j % 4. */
        int j = i / 16;
        int lo = j < 8 ? b[96 + j] % 16 : b[96 + j - 8] / 16;
        int hi = (b[104 + j % 4] >> (2 * (j / 4))) % 4;
        int q = spec_crumb(b + 32, i) - ((b[i % 32] >> (i / 32)) % 2 ? 0 : 4);
        return half_value(get_u16(b + 108)) * (lo + 16 * hi - 32) * q;
    }
    case FASA_TYPE_Q4_K:
    case FASA_TYPE_Q5_K: {
        /* d, dmin, 12 scale bytes, [q5_k: 32 qh bytes], 128 nibble bytes.
         * Sub-block j of 32 takes nibble bytes 32 (j / 2) .. +31, low
         * nibbles for even j; q5_k adds bit j of qh byte i % 32 as 16. */
        int j = i / 32, scale, min;
        spec_k_scale_min(b + 4, j, &scale, &min);
        bool q5 = type == FASA_TYPE_Q5_K;
        int byte = b[(q5 ? 48 : 16) + 32 * (j / 2) + i % 32];
        int q = j % 2 ? byte / 16 : byte % 16;
        if (q5) q += 16 * ((b[16 + i % 32] >> j) % 2);
        return half_value(get_u16(b)) * scale * q - half_value(get_u16(b + 2)) * min;
    }
    case FASA_TYPE_Q6_K: {
        /* Halves of 128; in a half, element 32g + l: ql byte l + 32 (g % 2),
         * nibble g / 2; qh byte l, bits 2g, 2g+1; scale per 16 elements. */
        int half = i / 128, g = (i % 128) / 32, l = i % 32;
        int lo = b[64 * half + 32 * (g % 2) + l];
        lo = g / 2 ? lo / 16 : lo % 16;
        int hi = (b[128 + 32 * half + l] >> (2 * g)) % 4;
        int8_t scale = (int8_t)b[192 + i / 16];
        return half_value(get_u16(b + 208)) * scale * (lo + 16 * hi - 32);
    }
    }
    fail_msg("no spec decoder for type %u", type);
    return 0;
}

static void spec_dequant(const test_format *f, const uint8_t *row, double *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = spec_element(f->type, row + (size_t)(i / f->block_size) * f->block_bytes,
                              (int)(i % f->block_size));
}

/* ---- traits -------------------------------------------------------------- */

static void test_traits(void **state) {
    (void)state;
    for (size_t i = 0; i < N_FORMATS; i++) {
        const quant_traits *t = quant_traits_of(formats[i].type);
        assert_non_null(t);
        assert_string_equal(t->name, formats[i].name);
        assert_int_equal(t->block_size, formats[i].block_size);
        assert_int_equal(t->block_bytes, formats[i].block_bytes);
    }
    const uint32_t unsupported[] = {4, 5, 9, 15, 16, 20, 23, 29, 31, 34, 39, 41, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        assert_null(quant_traits_of(unsupported[i]));
        assert_int_equal(quant_row_bytes(unsupported[i], 256), 0);
    }
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q4_1, 576), 360);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q8_0, 576), 612);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q4_K, 512), 288);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q6_K, 256), 210);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q5_0, 576), 396);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q5_1, 576), 432);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q2_K, 512), 168);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q3_K, 256), 110);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q5_K, 1536), 1056);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q5_1, 80), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q3_K, 288), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_F16, 7), 14);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q4_1, 33), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q4_0, 48), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q4_K, 32), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q6_K, 300), 0);
    assert_int_equal(quant_row_bytes(FASA_TYPE_Q8_0, -32), 0);
    /* 2^63 - 1 elements of 4 bytes do not fit in a 64-bit size_t. */
    assert_int_equal(quant_row_bytes(FASA_TYPE_F32, INT64_MAX), 0);
}

/* ggml's numbering; the gaps are retired or never-used ids. */
static void test_type_names(void **state) {
    (void)state;
    static const char *const names[] = {
        [0] = "f32",     [1] = "f16",      [2] = "q4_0",   [3] = "q4_1",    [6] = "q5_0",
        [7] = "q5_1",    [8] = "q8_0",     [9] = "q8_1",   [10] = "q2_k",   [11] = "q3_k",
        [12] = "q4_k",   [13] = "q5_k",    [14] = "q6_k",  [15] = "q8_k",   [16] = "iq2_xxs",
        [17] = "iq2_xs", [18] = "iq3_xxs", [19] = "iq1_s", [20] = "iq4_nl", [21] = "iq3_s",
        [22] = "iq2_s",  [23] = "iq4_xs",  [24] = "i8",    [25] = "i16",    [26] = "i32",
        [27] = "i64",    [28] = "f64",     [29] = "iq1_m", [30] = "bf16",   [34] = "tq1_0",
        [35] = "tq2_0",  [39] = "mxfp4",   [40] = "nvfp4", [41] = "q1_0",
    };
    const uint32_t n_names = sizeof names / sizeof names[0];
    for (uint32_t id = 0; id < n_names + 8; id++) {
        const char *got = quant_type_name(id), *want = id < n_names ? names[id] : NULL;
        if (want)
            assert_string_equal(got, want);
        else
            assert_null(got);
        /* A supported type's traits carry the same name. */
        if (quant_traits_of(id)) assert_string_equal(quant_traits_of(id)->name, got);
    }
    assert_null(quant_type_name(UINT32_MAX));
    /* Every format the test knows, in id order, and nothing else. */
    assert_string_equal(quant_supported_names(),
                        "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, bf16");
    size_t n_supported = 0;
    for (uint32_t id = 0; id < 64; id++) n_supported += quant_traits_of(id) != NULL;
    assert_int_equal(n_supported, N_FORMATS);
}

static void test_bad_arguments_are_loud(void **state) {
    (void)state;
    uint8_t row[64] = {0};
    float x[32] = {0}, y[6] = {0};
    assert_true(isnan(quant_dot(5, row, x, 32)));
    quant_dequant_row(5, row, y, 6);
    for (int i = 0; i < 6; i++) assert_true(isnan(y[i]));
    quant_matmul(5, row, 3, 32, x, 2, y, 1);
    for (int i = 0; i < 6; i++) assert_true(isnan(y[i]));
    /* A row that is not a whole number of blocks is as wrong as a bad type. */
    assert_true(isnan(quant_dot(FASA_TYPE_Q4_1, row, x, 16)));
    quant_dequant_row(FASA_TYPE_Q4_1, row, y, 6);
    for (int i = 0; i < 6; i++) assert_true(isnan(y[i]));
    for (int i = 0; i < 6; i++) y[i] = 0.0f;
    quant_matmul(FASA_TYPE_Q8_0, row, 3, 16, x, 2, y, 1);
    for (int i = 0; i < 6; i++) assert_true(isnan(y[i]));
    /* No columns: every output is an empty sum. */
    for (int i = 0; i < 6; i++) y[i] = NAN;
    quant_matmul(FASA_TYPE_Q8_0, row, 3, 0, x, 2, y, 2);
    for (int i = 0; i < 6; i++) assert_true(y[i] == 0.0f);
}

/* ---- half precision ------------------------------------------------------ */

/* f32 bits the IEEE conversion of half h must give (NaNs come out quiet,
 * as the F16C instruction makes them). */
static uint32_t expected_f32_bits(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
        return sign | 0x7fc00000 | (uint32_t)(h & 0x3ff) << 13;
    return float_bits((float)half_value(h));
}

static void test_f16_to_f32_all(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        uint32_t want = expected_f32_bits((uint16_t)h);
        assert_int_equal(float_bits(quant_f16_to_f32_scalar((uint16_t)h)), want);
        assert_int_equal(float_bits(fasa_f16_to_f32((uint16_t)h)), want);
    }
}

typedef uint16_t (*to_f16_fn)(float);

static void check_to_f16_roundtrip(to_f16_fn to_f16) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = (float)half_value((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            /* NaN: sign and payload survive, quiet bit set. */
            uint16_t got = to_f16(bits_float(expected_f32_bits((uint16_t)h)));
            assert_int_equal(got, h | 0x200);
        } else {
            assert_int_equal(to_f16(f), h);
        }
    }
}

/* Between two neighbouring halfs a < b: the midpoint goes to the one with
 * an even mantissa, anything off the midpoint to the nearer one. Includes
 * the subnormal range, zero, and the overflow edge (65504 -> inf at 65520). */
static void check_to_f16_rounding(to_f16_fn to_f16) {
    for (uint16_t a = 0; a < 0x7c00; a++) {
        uint16_t b = (uint16_t)(a + 1);
        double hi = b == 0x7c00 ? 65536.0 : half_value(b);
        float mid = (float)((half_value(a) + hi) / 2); /* exact: 12 significant bits */
        for (int sign = 0; sign < 2; sign++) {
            float m = sign ? -mid : mid;
            uint16_t s = (uint16_t)(sign << 15);
            assert_int_equal(to_f16(m), s | ((a & 1) ? b : a));
            assert_int_equal(to_f16(nextafterf(m, 0.0f)), s | a);
            assert_int_equal(to_f16(nextafterf(m, sign ? -INFINITY : INFINITY)), s | b);
        }
    }
    assert_int_equal(to_f16(1e10f), 0x7c00);
    assert_int_equal(to_f16(-INFINITY), 0xfc00);
    assert_int_equal(to_f16(1e-30f), 0x0000);
    assert_int_equal(to_f16(-1e-30f), 0x8000);
    assert_int_equal(to_f16(bits_float(1)), 0x0000); /* f32 subnormal */
    assert_int_equal(to_f16(-0.0f), 0x8000);
}

static void test_f32_to_f16_scalar(void **state) {
    (void)state;
    check_to_f16_roundtrip(quant_f32_to_f16_scalar);
    check_to_f16_rounding(quant_f32_to_f16_scalar);
}

static void test_f32_to_f16_public(void **state) {
    (void)state;
    check_to_f16_roundtrip(fasa_f32_to_f16);
    check_to_f16_rounding(fasa_f32_to_f16);
}

static void test_bf16(void **state) {
    (void)state;
    assert_true(fasa_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(fasa_bf16_to_f32(0xc040) == -3.0f);
    assert_true(isinf(fasa_bf16_to_f32(0x7f80)));
    uint64_t s = 7;
    for (int i = 0; i < 1000; i++) {
        uint16_t h = (uint16_t)rng_next(&s);
        assert_int_equal(float_bits(fasa_bf16_to_f32(h)), (uint32_t)h << 16);
    }
}

/* ---- dequantize and dot -------------------------------------------------- */

/* Block formats: 16 blocks' worth; per-element formats: not a multiple of
 * 32, so the vector kernels' tail runs too. */
/* The eight-element decoders the GPU kernels use (quant_block.h), by type. */
typedef void (*block8_fn)(const uint8_t *b, int j, float *out);
static block8_fn block8_of(uint32_t type) {
    switch (type) {
    case FASA_TYPE_F32: return qb_dequant8_f32;
    case FASA_TYPE_F16: return qb_dequant8_f16;
    case FASA_TYPE_BF16: return qb_dequant8_bf16;
    case FASA_TYPE_Q4_0: return qb_dequant8_q4_0;
    case FASA_TYPE_Q4_1: return qb_dequant8_q4_1;
    case FASA_TYPE_Q5_0: return qb_dequant8_q5_0;
    case FASA_TYPE_Q5_1: return qb_dequant8_q5_1;
    case FASA_TYPE_Q8_0: return qb_dequant8_q8_0;
    case FASA_TYPE_Q2_K: return qb_dequant8_q2_k;
    case FASA_TYPE_Q3_K: return qb_dequant8_q3_k;
    case FASA_TYPE_Q4_K: return qb_dequant8_q4_k;
    case FASA_TYPE_Q5_K: return qb_dequant8_q5_k;
    case FASA_TYPE_Q6_K: return qb_dequant8_q6_k;
    }
    return NULL;
}

static int64_t test_len(const test_format *f) {
    return f->block_size == 1 ? 4096 + 13 : 16 * 256;
}

static void test_dequant_matches_spec(void **state) {
    (void)state;
    uint64_t s = 1;
    for (size_t fi = 0; fi < N_FORMATS; fi++) {
        const test_format *f = &formats[fi];
        int64_t n = test_len(f);
        uint8_t *row = make_row(f, n, &s);
        double *want = malloc((size_t)n * sizeof *want);
        float *got = malloc((size_t)n * sizeof *got), *ref = malloc((size_t)n * sizeof *ref);
        assert_non_null(want);
        assert_non_null(got);
        assert_non_null(ref);
        spec_dequant(f, row, want, n);
        quant_dequant_row(f->type, row, got, n);
        quant_dequant_ref(f->type, row, ref, n);
        /* Every format's value is one rounding of an exact product/sum, so
         * both paths must give the correctly rounded float exactly (up to
         * the sign of a zero). */
        for (int64_t i = 0; i < n; i++) {
            if (got[i] != (float)want[i] || ref[i] != got[i])
                fail_msg("%s element %lld: kernel %.9g, scalar %.9g, spec %.9g", f->name, (long long)i,
                         (double)got[i], (double)ref[i], want[i]);
        }
        free(row);
        free(want);
        free(got);
        free(ref);
    }
}

/* Every group of eight elements, as the GPU decodes them, against the
 * format description; a whole-element format is taken 8 elements at a time. */
static void test_block8_matches_spec(void **state) {
    (void)state;
    uint64_t s = 11;
    for (size_t fi = 0; fi < N_FORMATS; fi++) {
        const test_format *f = &formats[fi];
        const int64_t n = test_len(f) / 8 * 8, per = f->block_size >= 8 ? f->block_size : 8;
        const size_t bytes = f->block_size >= 8 ? f->block_bytes : 8 * f->block_bytes;
        block8_fn fn = block8_of(f->type);
        assert_non_null(fn);
        uint8_t *row = make_row(f, n, &s);
        double *want = malloc((size_t)n * sizeof *want);
        assert_non_null(want);
        spec_dequant(f, row, want, n);
        for (int64_t e0 = 0; e0 < n; e0 += 8) {
            float got[8];
            fn(row + (size_t)(e0 / per) * bytes, (int)(e0 % per / 8), got);
            for (int i = 0; i < 8; i++)
                if (got[i] != (float)want[e0 + i])
                    fail_msg("%s element %lld: block8 %.9g, spec %.9g", f->name, (long long)(e0 + i), (double)got[i],
                             want[e0 + i]);
        }
        free(row);
        free(want);
    }
}

static void test_dot(void **state) {
    (void)state;
    uint64_t s = 2;
    for (size_t fi = 0; fi < N_FORMATS; fi++) {
        const test_format *f = &formats[fi];
        int64_t n = test_len(f);
        uint8_t *row = make_row(f, n, &s);
        double *w = malloc((size_t)n * sizeof *w);
        float *x = malloc((size_t)n * sizeof *x);
        assert_non_null(w);
        assert_non_null(x);
        spec_dequant(f, row, w, n);
        for (int64_t i = 0; i < n; i++) x[i] = rng_uniform(&s);
        /* Lengths that stop short exercise odd block counts too. */
        for (int64_t len = f->block_size; len <= n; len = len * 3 + f->block_size) {
            if (len > n) len = n;
            double want = 0, mag = 0;
            for (int64_t i = 0; i < len; i++) {
                want += w[i] * x[i];
                mag += fabs(w[i] * x[i]);
            }
            double tol = 1e-5 * mag + 1e-30;
            double got = quant_dot(f->type, row, x, len), ref = quant_dot_ref(f->type, row, x, len);
            if (fabs(got - want) > tol || fabs(ref - want) > tol)
                fail_msg("%s dot over %lld: kernel %.9g, scalar %.9g, want %.9g (tol %.3g)", f->name,
                         (long long)len, got, ref, want, tol);
            if (len == n) break;
        }
        free(row);
        free(w);
        free(x);
    }
}

/* ---- matrix product ------------------------------------------------------ */

static void check_matmul(const test_format *f, int64_t rows, int64_t cols, int64_t n_tok, int n_threads,
                         uint64_t *s) {
    uint8_t *w = make_row(f, rows * cols, s);
    double *wd = malloc((size_t)(rows * cols) * sizeof *wd);
    float *x = malloc((size_t)(n_tok * cols) * sizeof *x);
    /* Guard elements after y catch writes past rows * n_tok. */
    const int64_t guard = 37;
    float *y = malloc((size_t)(rows * n_tok + guard) * sizeof *y);
    assert_non_null(wd);
    assert_non_null(x);
    assert_non_null(y);
    spec_dequant(f, w, wd, rows * cols);
    for (int64_t i = 0; i < n_tok * cols; i++) x[i] = rng_uniform(s);
    /* NaN everywhere: any read of y before it is written shows up. */
    for (int64_t i = 0; i < rows * n_tok; i++) y[i] = NAN;
    for (int64_t i = 0; i < guard; i++) y[rows * n_tok + i] = 12345.0f;

    quant_matmul(f->type, w, rows, cols, x, n_tok, y, n_threads);

    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t r = 0; r < rows; r++) {
            double want = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                want += wd[r * cols + c] * x[t * cols + c];
                mag += fabs(wd[r * cols + c] * x[t * cols + c]);
            }
            double got = y[t * rows + r];
            if (!(fabs(got - want) <= 1e-5 * mag + 1e-30))
                fail_msg("%s matmul rows %lld cols %lld n_tok %lld threads %d: y[%lld][%lld] = %.9g, want %.9g",
                         f->name, (long long)rows, (long long)cols, (long long)n_tok, n_threads,
                         (long long)t, (long long)r, got, want);
        }
    }
    for (int64_t i = 0; i < guard; i++) assert_true(y[rows * n_tok + i] == 12345.0f);
    free(w);
    free(wd);
    free(x);
    free(y);
}

static void test_matmul(void **state) {
    (void)state;
    uint64_t s = 3;
    const int64_t row_counts[] = {1, 7, 129};
    const int64_t tok_counts[] = {1, 3, 17, 64};
    for (size_t fi = 0; fi < N_FORMATS; fi++) {
        const test_format *f = &formats[fi];
        /* 576 = 2 column panels of 256 plus a partial one; 301 is not even
         * a multiple of 32 (per-element formats only). */
        int64_t cols = f->block_size == 256 ? 512 : f->block_size == 32 ? 576 : 301;
        for (size_t ri = 0; ri < 3; ri++)
            for (size_t ti = 0; ti < 4; ti++)
                for (int th = 1; th <= 2; th++) check_matmul(f, row_counts[ri], cols, tok_counts[ti], th, &s);
    }
}

/* Rows longer than the prefill path's column panel (2048), so partial
 * products over column slices must add up in y. */
static void test_matmul_long_rows(void **state) {
    (void)state;
    uint64_t s = 4;
    const uint32_t types[] = {FASA_TYPE_Q4_1, FASA_TYPE_Q5_0, FASA_TYPE_Q5_1, FASA_TYPE_Q8_0, FASA_TYPE_Q2_K,
                              FASA_TYPE_Q3_K, FASA_TYPE_Q4_K, FASA_TYPE_Q5_K, FASA_TYPE_F16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const test_format *f = format_of(types[i]);
        int64_t cols = f->block_size == 256 ? 2304 : f->block_size == 32 ? 2624 : 2061;
        check_matmul(f, 33, cols, 13, 2, &s);
        check_matmul(f, 5, cols, 1, 1, &s);
    }
}

/* ---- decode products with int8 activations (quant_x8.c) ----------------- */

/* One product through quant_matmul_x8 against this file's decoder: the
 * rounding of x is checked from its definition, y against the float64
 * product with the rounded x (tight), and against the product with x
 * itself within the bound the rounding allows (|x - d q| <= d / 2). */
static void check_matmul_x8(const test_format *f, int64_t rows, int64_t cols, int64_t n_tok, int n_threads,
                            uint64_t *s) {
    uint8_t *w = make_row(f, rows * cols, s);
    double *wd = malloc((size_t)(rows * cols) * sizeof *wd);
    float *x = malloc((size_t)(n_tok * cols) * sizeof *x), *y = malloc((size_t)(rows * n_tok) * sizeof *y);
    double *xq = malloc((size_t)cols * sizeof *xq), *half_step = malloc((size_t)cols * sizeof *half_step);
    assert_true(wd && x && y && xq && half_step);
    spec_dequant(f, w, wd, rows * cols);
    for (int64_t i = 0; i < n_tok * cols; i++) x[i] = rng_uniform(s) * (i % 97 == 0 ? 8.0f : 1.0f);
    for (int64_t i = 0; i < rows * n_tok; i++) y[i] = NAN;
    quant_matmul_x8(f->type, w, rows, cols, x, n_tok, y, n_threads);
    for (int64_t t = 0; t < n_tok; t++) {
        const float *xt = x + t * cols;
        for (int64_t g = 0; g < cols / 32; g++) { /* x' = d q as the definition says */
            float m = 0;
            for (int i = 0; i < 32; i++) m = fmaxf(m, fabsf(xt[32 * g + i]));
            const float d = m / 127.0f;
            for (int i = 0; i < 32; i++) {
                const float q = nearbyintf(xt[32 * g + i] / d);
                assert_true(fabsf(q) <= 127.0f);
                xq[32 * g + i] = (double)d * q;
                half_step[32 * g + i] = (double)d / 2;
            }
        }
        for (int64_t r = 0; r < rows; r++) {
            double want = 0, mag = 0, exact = 0, bound = 0;
            for (int64_t c = 0; c < cols; c++) {
                const double wc = wd[r * cols + c];
                want += wc * xq[c];
                mag += fabs(wc * xq[c]);
                exact += wc * xt[c];
                bound += fabs(wc) * half_step[c];
            }
            const double got = y[t * rows + r];
            if (!(fabs(got - want) <= 1e-5 * mag + 1e-30))
                fail_msg("%s matmul_x8 rows %lld cols %lld n_tok %lld threads %d: y[%lld][%lld] = %.9g, want %.9g",
                         f->name, (long long)rows, (long long)cols, (long long)n_tok, n_threads, (long long)t,
                         (long long)r, got, want);
            if (!(fabs(got - exact) <= bound * (1 + 1e-6) + 1e-5 * mag))
                fail_msg("%s matmul_x8: y[%lld][%lld] = %.9g is %.3g from the f32 product %.9g, over the bound %.3g",
                         f->name, (long long)t, (long long)r, got, fabs(got - exact), exact, bound);
        }
    }
    free(w), free(wd), free(x), free(y), free(xq), free(half_step);
}

static void test_matmul_x8(void **state) {
    (void)state;
    uint64_t s = 6;
    const uint32_t types[] = {FASA_TYPE_Q4_K, FASA_TYPE_Q6_K};
    for (size_t i = 0; i < 2; i++) {
        const test_format *f = format_of(types[i]);
        assert_non_null(quant_dot_x8_of(types[i]));
        assert_true(quant_gemm_x8_supports(types[i]));
        /* 1 and 3 tokens: the decode kernels; 6 and more: the prefill
         * panels (gemm_x8.c), with partial row panels (7, 129 rows), partial
         * token tiles, and rows longer than one panel (2304 columns) */
        const int64_t row_counts[] = {1, 7, 129}, token_counts[] = {1, 3, 6, 13};
        for (size_t ri = 0; ri < 3; ri++)
            for (size_t ti = 0; ti < 4; ti++)
                for (int th = 1; th <= 2; th++)
                    check_matmul_x8(f, row_counts[ri], ri == 2 ? 2304 : 512, token_counts[ti], th, &s);
    }
    /* Formats without an integer kernel take the f32 path: results
     * identical to quant_matmul's, for decode and prefill token counts. */
    const test_format *f = format_of(FASA_TYPE_Q4_1);
    assert_null(quant_dot_x8_of(FASA_TYPE_Q4_1));
    assert_false(quant_gemm_x8_supports(FASA_TYPE_Q4_1));
    const int64_t rows = 9, cols = 512;
    for (int64_t n_tok = 1; n_tok <= 8; n_tok += 7) {
        const test_format *g = f;
        uint8_t *w = make_row(g, rows * cols, &s);
        float *x = malloc((size_t)(n_tok * cols) * sizeof *x), *a = malloc((size_t)(rows * n_tok) * sizeof *a),
              *b = malloc((size_t)(rows * n_tok) * sizeof *b);
        assert_true(x && a && b);
        for (int64_t i = 0; i < n_tok * cols; i++) x[i] = rng_uniform(&s);
        quant_matmul(g->type, w, rows, cols, x, n_tok, a, 1);
        quant_matmul_x8(g->type, w, rows, cols, x, n_tok, b, 1);
        assert_memory_equal(a, b, (size_t)(rows * n_tok) * sizeof *a);
        free(w), free(x), free(a), free(b);
    }
}

/* Several matrices sharing x (quant_matmul_x8_set: one rounding of x, one
 * parallel region over all their rows in decode) give exactly what each
 * gives alone, for decode and prefill token counts, and a set with a format
 * that has no integer kernel gives that matrix its f32 product. */
static void test_matmul_x8_set(void **state) {
    (void)state;
    uint64_t s = 8;
    const uint32_t types[3] = {FASA_TYPE_Q4_K, FASA_TYPE_Q6_K, FASA_TYPE_Q4_K};
    const int64_t rows[3] = {7, 300, 129}, cols = 512;
    for (int mixed = 0; mixed < 2; mixed++)
        for (int64_t n_tok = 1; n_tok <= 13; n_tok += 12) {
            uint8_t *w[3];
            float *x = malloc((size_t)(n_tok * cols) * sizeof *x), *alone[3], *together[3];
            quant_product p[3];
            for (int i = 0; i < 3; i++) {
                const uint32_t type = mixed && i == 1 ? FASA_TYPE_Q4_1 : types[i];
                w[i] = make_row(format_of(type), rows[i] * cols, &s);
                alone[i] = malloc((size_t)(rows[i] * n_tok) * sizeof(float));
                together[i] = malloc((size_t)(rows[i] * n_tok) * sizeof(float));
                assert_true(alone[i] && together[i]);
                p[i] = (quant_product){type, w[i], rows[i], together[i]};
            }
            for (int64_t i = 0; i < n_tok * cols; i++) x[i] = rng_uniform(&s);
            quant_matmul_x8_set(p, 3, cols, x, n_tok, 2);
            for (int i = 0; i < 3; i++) {
                quant_matmul_x8(p[i].type, w[i], rows[i], cols, x, n_tok, alone[i], 2);
                assert_memory_equal(alone[i], together[i], (size_t)(rows[i] * n_tok) * sizeof(float));
                free(w[i]), free(alone[i]), free(together[i]);
            }
            free(x);
        }
}

/* A NaN or infinity in x makes every output it meets NaN, as on the f32 path. */
static void test_matmul_x8_not_finite(void **state) {
    (void)state;
    uint64_t s = 7;
    const test_format *f = format_of(FASA_TYPE_Q6_K);
    const int64_t rows = 3, cols = 512;
    uint8_t *w = make_row(f, rows * cols, &s);
    const float bad[2] = {NAN, INFINITY};
    for (int i = 0; i < 2; i++) {
        float x[512], y[3];
        for (int64_t c = 0; c < cols; c++) x[c] = rng_uniform(&s);
        x[300] = bad[i];
        quant_matmul_x8(f->type, w, rows, cols, x, 1, y, 1);
        for (int r = 0; r < rows; r++) assert_true(isnan(y[r]));
    }
    free(w);
}

/* ---- blocks decoded by the PyPI gguf package ------------------------------ */

static uint32_t get_u32(const uint8_t *p) { return (uint32_t)get_u16(p) | (uint32_t)get_u16(p + 2) << 16; }

/* One format's golden blocks: as a row (dequantize, scalar dequantize,
 * dot) and as a matrix of one block per row (matmul on the decode and the
 * prefill path), all against gguf's values. Each value is one rounding of
 * an exact expression in both decoders (see quant.c), so dequantization
 * must agree exactly; == also lets a zero's sign differ, which the order
 * of gguf's operations may decide otherwise. */
static void check_golden_blocks(const test_format *f, const uint8_t *blocks, const float *want, int64_t nb) {
    int64_t n = nb * f->block_size;
    const int64_t n_tok = 7;
    float *got = malloc((size_t)n * sizeof *got), *ref = malloc((size_t)n * sizeof *ref);
    float *x = malloc((size_t)(n_tok * f->block_size) * sizeof *x), *y = malloc((size_t)(n_tok * nb) * sizeof *y);
    assert_true(got && ref && x && y);
    quant_dequant_row(f->type, blocks, got, n);
    quant_dequant_ref(f->type, blocks, ref, n);
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i] || ref[i] != want[i])
            fail_msg("%s golden element %lld: kernel %.9g, scalar %.9g, gguf %.9g", f->name, (long long)i,
                     (double)got[i], (double)ref[i], (double)want[i]);
    uint64_t s = 5;
    for (int64_t i = 0; i < n_tok * f->block_size; i++) x[i] = rng_uniform(&s);
    for (int64_t t = 1; t <= n_tok; t += n_tok - 1) { /* 1: decode; n_tok: prefill tiles */
        quant_matmul(f->type, blocks, nb, f->block_size, x, t, y, 1);
        for (int64_t j = 0; j < t * nb; j++) {
            const float *w = want + (j % nb) * f->block_size, *xt = x + (j / nb) * f->block_size;
            double dot = 0, mag = 0;
            for (int64_t c = 0; c < f->block_size; c++) {
                dot += (double)w[c] * xt[c];
                mag += fabs((double)w[c] * xt[c]);
            }
            if (!(fabs(y[j] - dot) <= 1e-5 * mag + 1e-30))
                fail_msg("%s golden matmul n_tok %lld: y[%lld] = %.9g, want %.9g", f->name, (long long)t,
                         (long long)j, (double)y[j], dot);
        }
    }
    free(got);
    free(ref);
    free(x);
    free(y);
}

/* tests/golden/quant_blocks.bin (tests/reference/make_quant_golden.py):
 * "fasaqgb1", then per format u32 type, u32 block count, the blocks and
 * their float32 values from gguf.quants.dequantize. */
static void test_gguf_golden_blocks(void **state) {
    (void)state;
    const char *path = FASA_TEST_DIR "/golden/quant_blocks.bin";
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    char magic[8];
    assert_int_equal(fread(magic, 1, sizeof magic, fp), sizeof magic);
    assert_memory_equal(magic, "fasaqgb1", sizeof magic);
    const uint32_t expected[] = {FASA_TYPE_Q5_0, FASA_TYPE_Q5_1, FASA_TYPE_Q2_K, FASA_TYPE_Q3_K, FASA_TYPE_Q5_K};
    size_t seen = 0;
    uint8_t head[8];
    while (fread(head, 1, sizeof head, fp) == sizeof head) {
        const test_format *f = format_of(get_u32(head));
        int64_t nb = get_u32(head + 4);
        assert_true(seen < 5 && f->type == expected[seen] && nb > 0 && nb <= 64);
        size_t bytes = (size_t)nb * f->block_bytes, n = (size_t)(nb * f->block_size);
        uint8_t *blocks = malloc(bytes);
        float *want = malloc(n * sizeof *want); /* the file's floats are little-endian, as is the host */
        assert_true(blocks && want);
        assert_int_equal(fread(blocks, 1, bytes, fp), bytes);
        assert_int_equal(fread(want, sizeof *want, n, fp), n);
        check_golden_blocks(f, blocks, want, nb);
        free(blocks);
        free(want);
        seen++;
    }
    assert_true(feof(fp));
    assert_int_equal(seen, 5);
    fclose(fp);
}

/* ---- the real model ------------------------------------------------------ */

/* Expected values from the model file, produced once with the PyPI `gguf`
 * package (0.19.0): GGUFReader gave each tensor's data offset, the row's
 * bytes were read at offset + row * row_bytes and decoded with
 * gguf.quants.dequantize; `sum` is the float64 sum of the whole row. */
typedef struct model_row {
    const char *tensor;
    uint32_t type;
    int64_t cols;
    long offset; /* file offset of the row */
    float first[8], last[8];
    double sum;
} model_row;

static const model_row model_rows[] = {
    {"blk.0.attn_q.weight row 0", FASA_TYPE_Q4_1, 576, 33806656,
     {-0.0963134765625f, 0.1573486328125f, -0.0963134765625f, -0.73046875f, 1.1719970703125f,
      -0.0963134765625f, 0.030517578125f, 0.6646728515625f},
     {0.12353515625f, -0.63671875f, -0.0665283203125f, 0.503662109375f, -0.0665283203125f,
      0.503662109375f, 0.503662109375f, 0.12353515625f},
     1.00726318359375},
    {"token_embd.weight row 1", FASA_TYPE_Q8_0, 576, 1786276,
     {-0.0238037109375f, -0.015869140625f, -0.0396728515625f, 0.015869140625f, -0.111083984375f,
      -0.0079345703125f, -0.0634765625f, 0.0714111328125f},
     {0.08747005462646484f, 0.028787612915039062f, 0.14061641693115234f, -0.06975460052490234f,
      0.10186386108398438f, 0.08193397521972656f, -0.004428863525390625f, -0.12843704223632812f},
     0.35922718048095703},
};

static void test_model_rows(void **state) {
    (void)state;
    FILE *fp = fopen(FASA_TEST_MODEL, "rb");
    if (!fp) fail_msg("cannot open the default model %s: fetch it first (see README)", FASA_TEST_MODEL);
    for (size_t i = 0; i < sizeof model_rows / sizeof model_rows[0]; i++) {
        const model_row *m = &model_rows[i];
        size_t bytes = quant_row_bytes(m->type, m->cols);
        uint8_t buf[1024];
        float v[576];
        assert_true(bytes <= sizeof buf);
        assert_int_equal(fseek(fp, m->offset, SEEK_SET), 0);
        assert_int_equal(fread(buf, 1, bytes, fp), bytes);
        quant_dequant_row(m->type, buf, v, m->cols);
        for (int j = 0; j < 8; j++) {
            if (v[j] != m->first[j] || v[m->cols - 8 + j] != m->last[j])
                fail_msg("%s: element %d or %lld differs from gguf's decoding", m->tensor, j,
                         (long long)(m->cols - 8 + j));
        }
        double sum = 0;
        for (int64_t j = 0; j < m->cols; j++) sum += v[j];
        assert_true(fabs(sum - m->sum) < 1e-9);
    }
    fclose(fp);
}

int main(void) {
    printf("quant kernels: %s\n", quant_simd_isa());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_bad_arguments_are_loud),
        cmocka_unit_test(test_f16_to_f32_all),
        cmocka_unit_test(test_f32_to_f16_scalar),
        cmocka_unit_test(test_f32_to_f16_public),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_matches_spec),
        cmocka_unit_test(test_block8_matches_spec),
        cmocka_unit_test(test_dot),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_long_rows),
        cmocka_unit_test(test_matmul_x8),
        cmocka_unit_test(test_matmul_x8_set),
        cmocka_unit_test(test_matmul_x8_not_finite),
        cmocka_unit_test(test_gguf_golden_blocks),
        cmocka_unit_test(test_model_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
