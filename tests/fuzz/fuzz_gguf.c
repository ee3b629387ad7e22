/* libFuzzer target for the GGUF reader: parses the input, then uses what it
 * got the way a model loader would (every key through its typed getter, every
 * tensor looked up by name and its data touched), so that a wrong bound shows
 * up as a sanitizer report. See README.md for how to build and run it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Copies a name from the file into a C string; false if it holds a NUL or
 * does not fit (the public lookups take C strings). */
static bool to_cstr(gguf_str s, char *buf, size_t cap) {
    if (s.len >= cap || memchr(s.data, '\0', s.len)) return false;
    memcpy(buf, s.data, s.len);
    buf[s.len] = '\0';
    return true;
}

static void use_kv(const gguf_file *g, const gguf_kv *kv, volatile uint64_t *sink) {
    char key[256];
    if (!to_cstr(kv->key, key, sizeof key)) return;
    if (fasa_gguf_find_kv(g, key) != kv) abort(); /* keys are unique, the index must agree */
    uint32_t u;
    int64_t i;
    float f;
    bool b;
    gguf_str s;
    const gguf_kv *arr;
    /* Every getter on every key: wrong types must fail cleanly, not crash. */
    if (fasa_gguf_get_u32(g, key, &u) == FASA_OK) *sink += u;
    if (fasa_gguf_get_i64(g, key, &i) == FASA_OK) *sink += (uint64_t)i;
    if (fasa_gguf_get_f32(g, key, &f) == FASA_OK) *sink += (uint64_t)(f == f);
    if (fasa_gguf_get_bool(g, key, &b) == FASA_OK) *sink += b;
    if (fasa_gguf_get_str(g, key, &s) == FASA_OK && s.len) *sink += (uint8_t)s.data[s.len - 1];
    if (fasa_gguf_get_arr(g, key, kv->arr_type, &arr) == FASA_OK) {
        if (arr->arr_type == GGUF_TYPE_STRING) {
            for (uint64_t k = 0; k < arr->arr_len; k++)
                if (arr->arr_str[k].len)
                    *sink += (uint8_t)arr->arr_str[k].data[arr->arr_str[k].len - 1];
        } else if (arr->arr_len) {
            *sink += arr->arr_data[0];
        }
    }
}

static void use_tensor(const gguf_file *g, const gguf_tensor *t, volatile uint64_t *sink) {
    char name[256];
    if (to_cstr(t->name, name, sizeof name) && fasa_gguf_find_tensor(g, name) != t) abort();
    if (!t->data) return;
    const uint8_t *p = t->data;
    if (p < g->base || t->n_bytes > g->size || p + t->n_bytes > g->base + g->size) abort();
    *sink += p[0] + p[t->n_bytes - 1]; /* n_bytes >= 1: every dimension is >= 1 */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static volatile uint64_t sink;
    gguf_file *g = NULL;
    fasa_status st = fasa_gguf_open_buffer(data, size, &g);
    if (st != FASA_OK) {
        /* a format error must say where it comes from */
        if (g || (st == FASA_E_FORMAT && !strstr(fasa_last_error(), "GGUF buffer: "))) abort();
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) use_kv(g, &g->kv[i], &sink);
    for (uint64_t i = 0; i < g->n_tensors; i++) use_tensor(g, &g->tensors[i], &sink);
    fasa_gguf_close(g);
    return 0;
}
