/* GGUF v2/v3 reader.
 *
 * The file is memory-mapped read-only; strings, arrays and tensor data are
 * views into the mapping (never copied), so a gguf_file must outlive every
 * pointer taken from it. Every length, count, offset and dimension read from
 * the file is checked against the file size and against integer overflow
 * before it is used: a hostile file yields FASA_E_FORMAT with a message that
 * names the offending field, never a crash or an unbounded allocation. */
#ifndef FASA_GGUF_H
#define FASA_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fasa.h"

enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

/* A string inside the mapping: not NUL-terminated. */
typedef struct gguf_str {
    uint64_t len;
    const char *data;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type; /* enum gguf_value_type */
    union {
        uint64_t u64; /* every unsigned integer type, widened */
        int64_t i64;  /* every signed integer type, widened */
        double f64;   /* FLOAT32 and FLOAT64, widened */
        bool b;
        gguf_str str;
    } v;
    /* Arrays (type == GGUF_TYPE_ARRAY): element type, count and raw
     * little-endian elements. For string arrays `arr_str` holds one view per
     * element (allocated by the reader); otherwise it is NULL. Nested arrays
     * are rejected. */
    uint32_t arr_type;
    uint64_t arr_len;
    const uint8_t *arr_data;
    gguf_str *arr_str;
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    uint32_t type;              /* ggml type id, see quant.h */
    uint64_t offset;            /* relative to the start of the data section */
    uint64_t n_bytes;           /* checked: fits inside the file */
    const void *data;           /* points into the mapping */
} gguf_tensor;

typedef struct gguf_file {
    const uint8_t *base; /* the whole file */
    size_t size;
    bool owns_mapping;   /* true when opened from a path (munmap on close) */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; /* start of the tensor data section */
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
} gguf_file;

/* Opens and validates a file. On failure *out is NULL and the error message
 * names the path and the problem. */
fasa_status fasa_gguf_open(const char *path, gguf_file **out);

/* Same, over a caller-owned buffer that must outlive the result (tests, fuzzing). */
fasa_status fasa_gguf_open_buffer(const void *buf, size_t size, gguf_file **out);

void fasa_gguf_close(gguf_file *g);

const gguf_kv *fasa_gguf_find_kv(const gguf_file *g, const char *key);
const gguf_tensor *fasa_gguf_find_tensor(const gguf_file *g, const char *name);

/* Typed getters. Integer getters accept any integer type whose value fits;
 * float getters accept FLOAT32/FLOAT64. A missing key or a wrong type is
 * FASA_E_FORMAT with a message naming the key. */
fasa_status fasa_gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
fasa_status fasa_gguf_get_i64(const gguf_file *g, const char *key, int64_t *out);
fasa_status fasa_gguf_get_f32(const gguf_file *g, const char *key, float *out);
fasa_status fasa_gguf_get_bool(const gguf_file *g, const char *key, bool *out);
fasa_status fasa_gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* An array whose element type must be `elem_type`. */
fasa_status fasa_gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type,
                         const gguf_kv **out);

/* Compares a gguf_str with a NUL-terminated string. */
bool fasa_gguf_str_eq(gguf_str s, const char *cstr);

/* Human-readable name of a value type ("uint32", "string", ...). */
const char *fasa_gguf_type_name(uint32_t type);

#endif
