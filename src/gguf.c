/* GGUF v2/v3 reader; the contract is in gguf.h.
 *
 * Layout of a file (little-endian throughout):
 *   "GGUF" | version u32 | n_tensors u64 | n_kv u64
 *   n_kv      x  key string | value type u32 | value
 *   n_tensors x  name string | n_dims u32 | ne u64[n_dims] | type u32 | offset u64
 *   zero padding up to `alignment` | tensor data, tensor i at data_offset + offset_i
 * A string is a u64 byte count and the bytes (no NUL); an array value is an
 * element type u32, a u64 count and the elements.
 *
 * Parsing is one forward pass of a cursor. Every read goes through
 * cursor_need(), and every count is checked against the bytes left before
 * anything is allocated for it, so memory and time stay proportional to the
 * file size whatever the file claims. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "quant.h"

/* Arrays and tensor data are handed out as raw views of the file. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader hands out little-endian views of the file: it needs a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
/* Smallest possible encodings, used to bound counts before allocating. A
 * key-value pair: key length (8) + value type (4) + a 1-byte value. A tensor
 * info: name length (8) + n_dims (4) + one dimension (8) + type (4) + offset (8). */
#define GGUF_MIN_KV_BYTES 13
#define GGUF_MIN_TENSOR_INFO_BYTES 32

/* A tensor type ggml never defined (quant_type_name has no name for it) is
 * a corrupt file. A type ggml defines that quant.h cannot compute with is
 * still accepted here: the model loader reports it, because "this build
 * cannot run iq2_xs" is a different message from "corrupt file". */
static bool ggml_type_known(uint32_t type) { return quant_type_name(type) != NULL; }

static const char *const value_type_names[GGUF_TYPE_COUNT] = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",   "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64",
};

/* Bytes of one scalar; 0 for the variable-size string and array. */
static const uint8_t value_type_size[GGUF_TYPE_COUNT] = {
    [GGUF_TYPE_UINT8] = 1,  [GGUF_TYPE_INT8] = 1,  [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4, [GGUF_TYPE_INT32] = 4, [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_UINT64] = 8, [GGUF_TYPE_INT64] = 8, [GGUF_TYPE_FLOAT64] = 8,
};

/* Names sorted for binary search; sorting also puts duplicates side by side. */
typedef struct name_ref {
    gguf_str name;
    uint64_t index;
} name_ref;

/* What gguf_file does not show: the name used in messages and the indexes. */
typedef struct gguf_file_impl {
    gguf_file pub; /* first, so that a gguf_file * converts back */
    char *name;    /* the path, or "GGUF buffer" */
    name_ref *kv_index;
    name_ref *tensor_index;
} gguf_file_impl;

static const gguf_file_impl *impl_of(const gguf_file *g) { return (const gguf_file_impl *)g; }

/* ---- cursor ------------------------------------------------------------ */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *name; /* prefixed onto every message */
} cursor;

static fasa_status fail(const cursor *c, const char *fmt, ...) FASA_PRINTF(2, 3);

static fasa_status fail(const cursor *c, const char *fmt, ...) {
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fasa_error(FASA_E_FORMAT, "%s: %s", c->name, msg);
}

static uint64_t cursor_left(const cursor *c) { return c->size - c->pos; }

/* `ctx` and `field` name what is being read: "tensor 3 ('x')", "offset". */
static fasa_status cursor_need(const cursor *c, uint64_t n, const char *ctx, const char *field) {
    if (n <= cursor_left(c)) return FASA_OK;
    return fail(c, "%s: %s at byte %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                ctx, field, c->pos, c->size);
}

static fasa_status read_bytes(cursor *c, void *dst, size_t n, const char *ctx, const char *field) {
    fasa_status st = cursor_need(c, n, ctx, field);
    if (st) return st;
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return FASA_OK;
}

static fasa_status read_u32(cursor *c, const char *ctx, const char *field, uint32_t *out) {
    return read_bytes(c, out, sizeof *out, ctx, field);
}

static fasa_status read_u64(cursor *c, const char *ctx, const char *field, uint64_t *out) {
    return read_bytes(c, out, sizeof *out, ctx, field);
}

static fasa_status read_str(cursor *c, const char *ctx, const char *field, gguf_str *out) {
    uint64_t at = c->pos, len;
    fasa_status st = read_u64(c, ctx, field, &len);
    if (st) return st;
    if (len > cursor_left(c))
        return fail(c,
                    "%s: %s at byte %" PRIu64 " has length %" PRIu64
                    ", which runs past the end of the file (%" PRIu64 " bytes)",
                    ctx, field, at, len, c->size);
    out->len = len;
    out->data = (const char *)c->base + c->pos;
    c->pos += len;
    return FASA_OK;
}

/* A name from the file, made safe for a one-line message: at most 48 bytes,
 * anything but printable ASCII shown as '?'. */
static const char *printable(gguf_str s, char *buf, size_t cap) {
    size_t n = s.len < cap - 4 ? (size_t)s.len : cap - 4;
    if (n > 48) n = 48;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.data[i];
        buf[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    if (n < s.len) memcpy(buf + n, "...", 3), n += 3;
    buf[n] = '\0';
    return buf;
}

/* ---- header ------------------------------------------------------------ */

static fasa_status check_count(const cursor *c, uint64_t n, uint64_t at, uint64_t min_bytes,
                               const char *what, const char *items) {
    if (n <= cursor_left(c) / min_bytes) return FASA_OK;
    return fail(c,
                "%s %" PRIu64 " at byte %" PRIu64 " cannot fit: only %" PRIu64
                " bytes follow to the end of the file, room for at most %" PRIu64
                " %s (is the file truncated?)",
                what, n, at, cursor_left(c), cursor_left(c) / min_bytes, items);
}

static fasa_status read_header(cursor *c, gguf_file *g) {
    uint8_t magic[4];
    fasa_status st = read_bytes(c, magic, sizeof magic, "header", "magic");
    if (st) return st;
    if (memcmp(magic, "FUGG", 4) == 0)
        return fail(c, "big-endian GGUF not supported (the magic reads 'FUGG'); "
                       "use a little-endian conversion of the model");
    if (memcmp(magic, "GGUF", 4) != 0)
        return fail(c,
                    "not a GGUF file: it starts with bytes %02x %02x %02x %02x, "
                    "not the magic 'GGUF'",
                    magic[0], magic[1], magic[2], magic[3]);

    uint32_t version;
    if ((st = read_u32(c, "header", "version", &version))) return st;
    uint32_t swapped = __builtin_bswap32(version);
    if (version > 0xffff && swapped >= 1 && swapped <= 3)
        return fail(c,
                    "big-endian GGUF not supported (the version field reads 0x%08" PRIx32
                    ", which is version %" PRIu32 " byte-swapped); "
                    "use a little-endian conversion of the model",
                    version, swapped);
    if (version == 1)
        return fail(c, "GGUF version 1 is not supported (it predates 64-bit counts); "
                       "convert the model again with a current GGUF converter");
    if (version != 2 && version != 3)
        return fail(c,
                    "GGUF version %" PRIu32 " is not supported (this build reads versions 2 and 3)",
                    version);
    g->version = version;

    if ((st = read_u64(c, "header", "tensor count", &g->n_tensors))) return st;
    if ((st = read_u64(c, "header", "kv count", &g->n_kv))) return st;
    if ((st = check_count(c, g->n_tensors, 8, GGUF_MIN_TENSOR_INFO_BYTES, "tensor count",
                          "tensor infos")))
        return st;
    return check_count(c, g->n_kv, 16, GGUF_MIN_KV_BYTES, "kv count", "key-value pairs");
}

/* ---- metadata ---------------------------------------------------------- */

static fasa_status read_scalar(cursor *c, const char *ctx, uint32_t type, gguf_kv *kv) {
    if (type == GGUF_TYPE_STRING) return read_str(c, ctx, "string value", &kv->v.str);
    uint64_t at = c->pos;
    uint8_t raw[8];
    fasa_status st = read_bytes(c, raw, value_type_size[type], ctx, "value");
    if (st) return st;
    /* memcpy into the exact-width type, then widen (sign-extending signed ones). */
    int8_t i8;
    int16_t i16;
    int32_t i32;
    uint16_t u16;
    uint32_t u32;
    float f32;
    switch (type) {
    case GGUF_TYPE_UINT8: kv->v.u64 = raw[0]; break;
    case GGUF_TYPE_INT8: memcpy(&i8, raw, 1), kv->v.i64 = i8; break;
    case GGUF_TYPE_UINT16: memcpy(&u16, raw, 2), kv->v.u64 = u16; break;
    case GGUF_TYPE_INT16: memcpy(&i16, raw, 2), kv->v.i64 = i16; break;
    case GGUF_TYPE_UINT32: memcpy(&u32, raw, 4), kv->v.u64 = u32; break;
    case GGUF_TYPE_INT32: memcpy(&i32, raw, 4), kv->v.i64 = i32; break;
    case GGUF_TYPE_FLOAT32: memcpy(&f32, raw, 4), kv->v.f64 = f32; break;
    case GGUF_TYPE_UINT64: memcpy(&kv->v.u64, raw, 8); break;
    case GGUF_TYPE_INT64: memcpy(&kv->v.i64, raw, 8); break;
    case GGUF_TYPE_FLOAT64: memcpy(&kv->v.f64, raw, 8); break;
    case GGUF_TYPE_BOOL:
        if (raw[0] > 1)
            return fail(c, "%s: bool value at byte %" PRIu64 " is %u, must be 0 or 1", ctx, at,
                        raw[0]);
        kv->v.b = raw[0];
        break;
    }
    return FASA_OK;
}

static fasa_status read_string_elements(cursor *c, const char *ctx, gguf_kv *kv) {
    kv->arr_str = fasa_malloc(kv->arr_len, sizeof *kv->arr_str, "GGUF string array");
    if (!kv->arr_str) return FASA_E_NOMEM;
    /* The hot loop of the parser (the vocabulary): no message is formatted
     * unless something is wrong. */
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        uint64_t len;
        if (cursor_left(c) < sizeof len)
            return fail(c,
                        "%s: length of string %" PRIu64 " at byte %" PRIu64
                        " runs past the end of the file (%" PRIu64 " bytes)",
                        ctx, i, c->pos, c->size);
        memcpy(&len, c->base + c->pos, sizeof len);
        if (len > cursor_left(c) - sizeof len)
            return fail(c,
                        "%s: string %" PRIu64 " at byte %" PRIu64 " has length %" PRIu64
                        ", which runs past the end of the file (%" PRIu64 " bytes)",
                        ctx, i, c->pos, len, c->size);
        kv->arr_str[i].len = len;
        kv->arr_str[i].data = (const char *)c->base + c->pos + sizeof len;
        c->pos += sizeof len + len;
    }
    return FASA_OK;
}

static fasa_status read_array(cursor *c, const char *ctx, gguf_kv *kv) {
    uint64_t at = c->pos;
    fasa_status st = read_u32(c, ctx, "array element type", &kv->arr_type);
    if (st) return st;
    if (kv->arr_type == GGUF_TYPE_ARRAY)
        return fail(c,
                    "%s: array element type at byte %" PRIu64
                    " is array, and nested arrays are not supported",
                    ctx, at);
    if (kv->arr_type >= GGUF_TYPE_COUNT)
        return fail(c, "%s: unknown array element type %" PRIu32 " at byte %" PRIu64, ctx,
                    kv->arr_type, at);

    at = c->pos;
    if ((st = read_u64(c, ctx, "array length", &kv->arr_len))) return st;
    bool strings = kv->arr_type == GGUF_TYPE_STRING;
    uint64_t min_bytes = strings ? sizeof(uint64_t) : value_type_size[kv->arr_type];
    char what[32];
    snprintf(what, sizeof what, "%s elements", value_type_names[kv->arr_type]);
    char field[112];
    snprintf(field, sizeof field, "%s: array length", ctx);
    if ((st = check_count(c, kv->arr_len, at, min_bytes, field, what))) return st;

    kv->arr_data = c->base + c->pos;
    if (strings) return read_string_elements(c, ctx, kv);
    c->pos += kv->arr_len * min_bytes; /* cannot overflow: checked against the bytes left */
    return FASA_OK;
}

static fasa_status read_kv(cursor *c, uint64_t i, gguf_kv *kv) {
    char ctx[96], name[56];
    snprintf(ctx, sizeof ctx, "kv %" PRIu64, i);
    fasa_status st = read_str(c, ctx, "key", &kv->key);
    if (st) return st;
    snprintf(ctx, sizeof ctx, "kv %" PRIu64 " ('%s')", i, printable(kv->key, name, sizeof name));

    uint64_t at = c->pos;
    if ((st = read_u32(c, ctx, "value type", &kv->type))) return st;
    if (kv->type >= GGUF_TYPE_COUNT)
        return fail(c, "%s: unknown value type %" PRIu32 " at byte %" PRIu64, ctx, kv->type, at);
    if (kv->type == GGUF_TYPE_ARRAY) return read_array(c, ctx, kv);
    return read_scalar(c, ctx, kv->type, kv);
}

/* ---- name indexes ------------------------------------------------------ */

static int str_cmp(gguf_str a, gguf_str b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int d = n ? memcmp(a.data, b.data, n) : 0;
    if (d) return d;
    return (a.len > b.len) - (a.len < b.len);
}

static int name_ref_cmp(const void *pa, const void *pb) {
    const name_ref *a = pa, *b = pb;
    int d = str_cmp(a->name, b->name);
    if (d) return d;
    return (a->index > b->index) - (a->index < b->index);
}

/* Sorts refs[0..n) by name and rejects a name given twice. `kind` is "kv"
 * or "tensor", `noun` is "key" or "name", for the message. A sort rather than
 * a hash table keeps the worst case O(n log n) whatever names a file holds. */
static fasa_status index_sort(const cursor *c, name_ref *refs, uint64_t n, const char *kind,
                              const char *noun) {
    qsort(refs, n, sizeof *refs, name_ref_cmp);
    for (uint64_t i = 1; i < n; i++) {
        if (str_cmp(refs[i - 1].name, refs[i].name) != 0) continue;
        char name[56];
        uint64_t at = (uint64_t)((const uint8_t *)refs[i].name.data - c->base) - sizeof(uint64_t);
        return fail(c,
                    "%s %" PRIu64 " ('%s') at byte %" PRIu64 " repeats the %s of %s %" PRIu64
                    "; duplicate %ss are not allowed",
                    kind, refs[i].index, printable(refs[i].name, name, sizeof name), at, noun, kind,
                    refs[i - 1].index, noun);
    }
    return FASA_OK;
}

static const name_ref *index_find(const name_ref *refs, uint64_t n, const char *cstr) {
    gguf_str key = {strlen(cstr), cstr};
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int d = str_cmp(refs[mid].name, key);
        if (d == 0) return &refs[mid];
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static fasa_status read_metadata(cursor *c, gguf_file_impl *f) {
    gguf_file *g = &f->pub;
    /* calloc: arr_str must read NULL for gguf_close if parsing stops midway. */
    g->kv = fasa_calloc(g->n_kv, sizeof *g->kv, "GGUF metadata");
    f->kv_index = fasa_malloc(g->n_kv, sizeof *f->kv_index, "GGUF metadata index");
    if (!g->kv || !f->kv_index) return FASA_E_NOMEM;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        fasa_status st = read_kv(c, i, &g->kv[i]);
        if (st) return st;
        f->kv_index[i] = (name_ref){g->kv[i].key, i};
    }
    return index_sort(c, f->kv_index, g->n_kv, "kv", "key");
}

static fasa_status read_alignment(const cursor *c, gguf_file *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = fasa_gguf_find_kv(g, "general.alignment");
    if (!kv) return FASA_OK;
    if (kv->type != GGUF_TYPE_UINT32)
        return fail(c, "general.alignment has type %s, must be uint32", fasa_gguf_type_name(kv->type));
    if (kv->v.u64 == 0 || (kv->v.u64 & (kv->v.u64 - 1)) != 0)
        return fail(c, "general.alignment is %" PRIu64 ", must be a nonzero power of two",
                    kv->v.u64);
    g->alignment = kv->v.u64;
    return FASA_OK;
}

/* ---- tensor infos ------------------------------------------------------ */

static void tensor_ctx(char *buf, size_t cap, uint64_t i, const gguf_tensor *t) {
    char name[56];
    snprintf(buf, cap, "tensor %" PRIu64 " ('%s')", i, printable(t->name, name, sizeof name));
}

static fasa_status read_tensor_info(cursor *c, uint64_t i, gguf_tensor *t) {
    char ctx[96];
    snprintf(ctx, sizeof ctx, "tensor %" PRIu64, i);
    fasa_status st = read_str(c, ctx, "name", &t->name);
    if (st) return st;
    tensor_ctx(ctx, sizeof ctx, i, t);

    uint64_t at = c->pos;
    if ((st = read_u32(c, ctx, "n_dims", &t->n_dims))) return st;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(c, "%s: n_dims at byte %" PRIu64 " is %" PRIu32 ", must be 1 to %d", ctx, at,
                    t->n_dims, GGUF_MAX_DIMS);
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        at = c->pos;
        if ((st = read_u64(c, ctx, "dimension", &t->ne[d]))) return st;
        if (t->ne[d] == 0)
            return fail(c,
                        "%s: ne[%" PRIu32 "] at byte %" PRIu64
                        " is 0, every dimension must be at least 1",
                        ctx, d, at);
        if (t->ne[d] > INT64_MAX ||
            __builtin_mul_overflow(n_elements, (int64_t)t->ne[d], &n_elements))
            return fail(c,
                        "%s: ne[%" PRIu32 "] at byte %" PRIu64 " is %" PRIu64
                        ", which makes the element count overflow 64 bits",
                        ctx, d, at, t->ne[d]);
    }
    at = c->pos;
    if ((st = read_u32(c, ctx, "type", &t->type))) return st;
    if (!ggml_type_known(t->type))
        return fail(c, "%s: unknown tensor type %" PRIu32 " at byte %" PRIu64, ctx, t->type, at);
    return read_u64(c, ctx, "offset", &t->offset);
}

static fasa_status read_tensor_infos(cursor *c, gguf_file_impl *f) {
    gguf_file *g = &f->pub;
    g->tensors = fasa_calloc(g->n_tensors, sizeof *g->tensors, "GGUF tensor table");
    f->tensor_index = fasa_malloc(g->n_tensors, sizeof *f->tensor_index, "GGUF tensor index");
    if (!g->tensors || !f->tensor_index) return FASA_E_NOMEM;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        fasa_status st = read_tensor_info(c, i, &g->tensors[i]);
        if (st) return st;
        f->tensor_index[i] = (name_ref){g->tensors[i].name, i};
    }
    return index_sort(c, f->tensor_index, g->n_tensors, "tensor", "name");
}

/* ---- validation -------------------------------------------------------- */

/* Places tensor i's data in the file and checks that it fits. Types quant.h
 * does not know keep n_bytes = 0 and data = NULL (see ggml_type_known). */
static fasa_status validate_tensor(const cursor *c, const gguf_file *g, uint64_t i,
                                   gguf_tensor *t) {
    char ctx[96];
    tensor_ctx(ctx, sizeof ctx, i, t);
    if (t->offset % g->alignment != 0)
        return fail(c,
                    "%s: data offset %" PRIu64 " is not a multiple of the alignment (%" PRIu64 ")",
                    ctx, t->offset, g->alignment);
    if (g->data_offset > c->size || t->offset > c->size - g->data_offset)
        return fail(c,
                    "%s: data offset %" PRIu64 " from the data section at byte %" PRIu64
                    " starts past the end of the file (%" PRIu64 " bytes)",
                    ctx, t->offset, g->data_offset, c->size);
    uint64_t start = g->data_offset + t->offset;

    const quant_traits *q = quant_traits_of(t->type);
    if (!q) return FASA_OK;
    if (t->ne[0] % (uint64_t)q->block_size != 0)
        return fail(
            c, "%s: row length %" PRIu64 " is not a multiple of the %s block size (%" PRId64 ")",
            ctx, t->ne[0], q->name, q->block_size);
    /* ne[1..3] multiply without overflow: the whole product was checked. */
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3], row_bytes, n_bytes, end;
    if (__builtin_mul_overflow(t->ne[0] / (uint64_t)q->block_size, (uint64_t)q->block_bytes,
                               &row_bytes) ||
        __builtin_mul_overflow(rows, row_bytes, &n_bytes) ||
        __builtin_add_overflow(start, n_bytes, &end))
        return fail(c,
                    "%s: data size overflows 64 bits, past the end of the file (%" PRIu64 " bytes)",
                    ctx, c->size);
    if (end > c->size)
        return fail(
            c, "%s: data ends at byte %" PRIu64 ", past the end of the file (%" PRIu64 " bytes)",
            ctx, end, c->size);
    t->n_bytes = n_bytes;
    t->data = c->base + start;
    return FASA_OK;
}

static fasa_status validate_tensors(const cursor *c, gguf_file *g) {
    /* The data section starts at the first aligned byte after the tensor infos. */
    if (__builtin_add_overflow(c->pos, g->alignment - 1, &g->data_offset))
        return fail(c, "data section offset overflows 64 bits");
    g->data_offset -= g->data_offset % g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        fasa_status st = validate_tensor(c, g, i, &g->tensors[i]);
        if (st) return st;
    }
    return FASA_OK;
}

/* ---- open / close ------------------------------------------------------ */

static fasa_status parse(const uint8_t *base, size_t size, const char *name, gguf_file **out) {
    gguf_file_impl *f = fasa_calloc(1, sizeof *f, "GGUF file");
    if (!f) return FASA_E_NOMEM;
    f->pub.base = base;
    f->pub.size = size;
    f->name = fasa_malloc(strlen(name) + 1, 1, "GGUF file name");
    if (!f->name) {
        fasa_gguf_close(&f->pub);
        return FASA_E_NOMEM;
    }
    memcpy(f->name, name, strlen(name) + 1);

    cursor c = {base, size, 0, f->name};
    fasa_status st = read_header(&c, &f->pub);
    if (!st) st = read_metadata(&c, f);
    if (!st) st = read_alignment(&c, &f->pub);
    if (!st) st = read_tensor_infos(&c, f);
    if (!st) st = validate_tensors(&c, &f->pub);
    if (st) {
        fasa_gguf_close(&f->pub);
        return st;
    }
    *out = &f->pub;
    return FASA_OK;
}

fasa_status fasa_gguf_open_buffer(const void *buf, size_t size, gguf_file **out) {
    if (!out) return fasa_error(FASA_E_ARG, "gguf_open_buffer: out is NULL");
    *out = NULL;
    if (!buf && size) return fasa_error(FASA_E_ARG, "gguf_open_buffer: buffer is NULL");
    return parse(buf, size, "GGUF buffer", out);
}

fasa_status fasa_gguf_open(const char *path, gguf_file **out) {
    if (!out) return fasa_error(FASA_E_ARG, "fasa_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return fasa_error(FASA_E_ARG, "fasa_gguf_open: path is NULL");
    /* O_NONBLOCK so that a FIFO given by mistake fails below instead of
     * blocking in open(); it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return fasa_error(FASA_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fasa_error(FASA_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    fasa_status status = FASA_OK;
    if (S_ISDIR(st.st_mode))
        status = fasa_error(FASA_E_IO, "%s: cannot read: %s", path, strerror(EISDIR));
    else if (!S_ISREG(st.st_mode))
        status = fasa_error(FASA_E_IO, "%s: not a regular file", path);
    else if (st.st_size == 0)
        status = fasa_error(FASA_E_IO, "%s: file is empty", path);
    else if ((uint64_t)st.st_size > SIZE_MAX)
        status = fasa_error(FASA_E_IO, "%s: file is too large to map", path);
    if (status) {
        close(fd);
        return status;
    }
    size_t size = (size_t)st.st_size;
    void *base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file alive */
    if (base == MAP_FAILED)
        return fasa_error(FASA_E_IO, "%s: cannot map %zu bytes: %s", path, size,
                          strerror(map_errno));

    status = parse(base, size, path, out);
    if (status) {
        munmap(base, size);
        return status;
    }
    (*out)->owns_mapping = true;
    return FASA_OK;
}

void fasa_gguf_close(gguf_file *g) {
    if (!g) return;
    gguf_file_impl *f = (gguf_file_impl *)g;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) free(g->kv[i].arr_str);
    free(g->kv);
    free(g->tensors);
    free(f->kv_index);
    free(f->tensor_index);
    free(f->name);
    if (g->owns_mapping) munmap((void *)g->base, g->size);
    free(f);
}

/* ---- lookups and typed getters ----------------------------------------- */

const gguf_kv *fasa_gguf_find_kv(const gguf_file *g, const char *key) {
    if (!g || !key) return NULL;
    const name_ref *r = index_find(impl_of(g)->kv_index, g->n_kv, key);
    return r ? &g->kv[r->index] : NULL;
}

const gguf_tensor *fasa_gguf_find_tensor(const gguf_file *g, const char *name) {
    if (!g || !name) return NULL;
    const name_ref *r = index_find(impl_of(g)->tensor_index, g->n_tensors, name);
    return r ? &g->tensors[r->index] : NULL;
}

static fasa_status get_kv(const gguf_file *g, const char *key, const gguf_kv **out) {
    *out = fasa_gguf_find_kv(g, key);
    if (*out) return FASA_OK;
    return fasa_error(FASA_E_FORMAT, "%s: key '%s' is missing", impl_of(g)->name, key);
}

static fasa_status wrong_type(const gguf_file *g, const char *key, const gguf_kv *kv,
                              const char *expected) {
    if (kv->type == GGUF_TYPE_ARRAY)
        return fasa_error(FASA_E_FORMAT, "%s: key '%s' is an array of %s, expected %s",
                          impl_of(g)->name, key, fasa_gguf_type_name(kv->arr_type), expected);
    return fasa_error(FASA_E_FORMAT, "%s: key '%s' has type %s, expected %s", impl_of(g)->name, key,
                      fasa_gguf_type_name(kv->type), expected);
}

static bool type_is_unsigned(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool type_is_signed(uint32_t t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static fasa_status out_of_range(const gguf_file *g, const char *key, const gguf_kv *kv,
                                const char *target) {
    if (type_is_signed(kv->type))
        return fasa_error(FASA_E_FORMAT, "%s: key '%s' is %" PRId64 ", which does not fit in %s",
                          impl_of(g)->name, key, kv->v.i64, target);
    if (type_is_unsigned(kv->type))
        return fasa_error(FASA_E_FORMAT, "%s: key '%s' is %" PRIu64 ", which does not fit in %s",
                          impl_of(g)->name, key, kv->v.u64, target);
    return fasa_error(FASA_E_FORMAT, "%s: key '%s' is %g, which does not fit in %s",
                      impl_of(g)->name, key, kv->v.f64, target);
}

fasa_status fasa_gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (type_is_unsigned(kv->type)) {
        if (kv->v.u64 > UINT32_MAX) return out_of_range(g, key, kv, "uint32");
        *out = (uint32_t)kv->v.u64;
        return FASA_OK;
    }
    if (type_is_signed(kv->type)) {
        if (kv->v.i64 < 0 || kv->v.i64 > (int64_t)UINT32_MAX)
            return out_of_range(g, key, kv, "uint32");
        *out = (uint32_t)kv->v.i64;
        return FASA_OK;
    }
    return wrong_type(g, key, kv, "an integer");
}

fasa_status fasa_gguf_get_i64(const gguf_file *g, const char *key, int64_t *out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (type_is_signed(kv->type)) {
        *out = kv->v.i64;
        return FASA_OK;
    }
    if (type_is_unsigned(kv->type)) {
        if (kv->v.u64 > INT64_MAX) return out_of_range(g, key, kv, "int64");
        *out = (int64_t)kv->v.u64;
        return FASA_OK;
    }
    return wrong_type(g, key, kv, "an integer");
}

fasa_status fasa_gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_TYPE_FLOAT32 && kv->type != GGUF_TYPE_FLOAT64)
        return wrong_type(g, key, kv, "a float");
    /* Converting a finite double beyond FLT_MAX to float is undefined. */
    if (isfinite(kv->v.f64) && fabs(kv->v.f64) > FLT_MAX)
        return out_of_range(g, key, kv, "float32");
    *out = (float)kv->v.f64;
    return FASA_OK;
}

fasa_status fasa_gguf_get_bool(const gguf_file *g, const char *key, bool *out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(g, key, kv, "bool");
    *out = kv->v.b;
    return FASA_OK;
}

fasa_status fasa_gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(g, key, kv, "string");
    *out = kv->v.str;
    return FASA_OK;
}

fasa_status fasa_gguf_get_arr(const gguf_file *g, const char *key, uint32_t elem_type,
                         const gguf_kv **out) {
    const gguf_kv *kv;
    fasa_status st = get_kv(g, key, &kv);
    if (st) return st;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != elem_type) {
        char expected[40];
        snprintf(expected, sizeof expected, "an array of %s", fasa_gguf_type_name(elem_type));
        return wrong_type(g, key, kv, expected);
    }
    *out = kv;
    return FASA_OK;
}

bool fasa_gguf_str_eq(gguf_str s, const char *cstr) {
    size_t n = strlen(cstr);
    return s.len == n && (n == 0 || memcmp(s.data, cstr, n) == 0);
}

const char *fasa_gguf_type_name(uint32_t type) {
    return type < GGUF_TYPE_COUNT ? value_type_names[type] : "unknown";
}
