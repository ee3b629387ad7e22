/* In-memory GGUF writer for tests.
 *
 * Writes a file field by field, so that a test can build a valid file or a
 * deliberately broken one (a wrong count, a bad type id, a short string)
 * without patching bytes afterwards. Header-only (static inline functions).
 * It aborts on out-of-memory, which is not what these tests examine.
 *
 *   gguf_builder b = {0};
 *   gb_header(&b, 3, 1, 1);                      // version, n_tensors, n_kv
 *   gb_kv_u32(&b, "general.alignment", 32);
 *   gb_tensor_info(&b, "w", 2, (uint64_t[]){4, 2}, 0, 0);  // F32, offset 0
 *   gb_pad(&b, 32);
 *   gb_zeros(&b, 4 * 2 * 4);
 *   ... use b.data, b.len ...
 *   gb_free(&b);
 */
#ifndef FASA_TESTS_GGUF_BUILDER_H
#define FASA_TESTS_GGUF_BUILDER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

typedef struct gguf_builder {
    uint8_t *data;
    size_t len;
    size_t cap;
} gguf_builder;

static inline void gb_free(gguf_builder *b) {
    free(b->data);
    *b = (gguf_builder){0};
}

static inline void gb_raw(gguf_builder *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *data = realloc(b->data, cap);
        if (!data) {
            fprintf(stderr, "gguf_builder: out of memory\n");
            abort();
        }
        b->data = data;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* Scalars are written in host order: the tests run on little-endian hosts,
 * as does the reader (it refuses to compile elsewhere). */
static inline void gb_u8(gguf_builder *b, uint8_t v) { gb_raw(b, &v, sizeof v); }
static inline void gb_u16(gguf_builder *b, uint16_t v) { gb_raw(b, &v, sizeof v); }
static inline void gb_u32(gguf_builder *b, uint32_t v) { gb_raw(b, &v, sizeof v); }
static inline void gb_u64(gguf_builder *b, uint64_t v) { gb_raw(b, &v, sizeof v); }
static inline void gb_f32(gguf_builder *b, float v) { gb_raw(b, &v, sizeof v); }
static inline void gb_f64(gguf_builder *b, double v) { gb_raw(b, &v, sizeof v); }

static inline void gb_zeros(gguf_builder *b, size_t n) {
    for (size_t i = 0; i < n; i++) gb_u8(b, 0);
}

/* A GGUF string: u64 length, then the bytes without a NUL. */
static inline void gb_str(gguf_builder *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_raw(b, s, strlen(s));
}

static inline void gb_header(gguf_builder *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gb_raw(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* The start of a key-value pair; the caller writes the value. */
static inline void gb_key(gguf_builder *b, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
}

static inline void gb_kv_u32(gguf_builder *b, const char *key, uint32_t v) {
    gb_key(b, key, GGUF_TYPE_UINT32);
    gb_u32(b, v);
}

static inline void gb_kv_str(gguf_builder *b, const char *key, const char *v) {
    gb_key(b, key, GGUF_TYPE_STRING);
    gb_str(b, v);
}

/* The start of an array pair; the caller writes the n elements. */
static inline void gb_arr(gguf_builder *b, const char *key, uint32_t elem_type, uint64_t n) {
    gb_key(b, key, GGUF_TYPE_ARRAY);
    gb_u32(b, elem_type);
    gb_u64(b, n);
}

static inline void gb_tensor_info(gguf_builder *b, const char *name, uint32_t n_dims,
                                  const uint64_t *ne, uint32_t type, uint64_t offset) {
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

/* Zero bytes up to the next multiple of `align` (the start of the data section). */
static inline void gb_pad(gguf_builder *b, size_t align) {
    while (b->len % align) gb_u8(b, 0);
}

#endif
