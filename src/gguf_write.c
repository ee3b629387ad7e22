#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

#define GGUF_ALIGN 32

typedef struct wtensor {
    uint64_t bytes;
} wtensor;

struct gguf_writer {
    char *path;
    FILE *f;
    uint8_t *meta;      /* key/value section, then tensor infos */
    size_t meta_len, meta_cap;
    uint64_t n_kv;
    uint8_t *infos;
    size_t infos_len, infos_cap;
    wtensor *tensors;
    uint64_t n_tensors, cap_tensors;
    uint64_t data_off;  /* next tensor's offset in the data section */
    uint64_t cur;       /* tensor being written */
    uint64_t cur_done;  /* its bytes so far */
    int started;
    fasa_status err;
};

static fasa_status grow(uint8_t **buf, size_t *len, size_t *cap, const void *p, size_t n) {
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n) c *= 2;
        uint8_t *b = realloc(*buf, c);
        if (!b) return fasa_error(FASA_E_NOMEM, "out of memory writing GGUF metadata");
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return FASA_OK;
}

static fasa_status meta(gguf_writer *w, const void *p, size_t n) { return grow(&w->meta, &w->meta_len, &w->meta_cap, p, n); }

static fasa_status meta_str(gguf_writer *w, const char *s, uint64_t n) {
    fasa_status st = meta(w, &n, 8);
    return st ? st : meta(w, s, (size_t)n);
}

static fasa_status key(gguf_writer *w, const char *k, uint32_t type) {
    if (w->started) return fasa_error(FASA_E_ARG, "GGUF writer: metadata after the tensor data began");
    w->n_kv++;
    fasa_status st = meta_str(w, k, strlen(k));
    return st ? st : meta(w, &type, 4);
}

fasa_status fasa_gguf_writer_open(const char *path, gguf_writer **out) {
    *out = NULL;
    gguf_writer *w = fasa_calloc(1, sizeof *w, "GGUF writer");
    if (!w) return FASA_E_NOMEM;
    if (!(w->path = strdup(path)) || !(w->f = fopen(path, "wb"))) {
        fasa_status st = w->path ? fasa_error(FASA_E_IO, "cannot create '%s': %s", path, strerror(errno))
                                 : fasa_error(FASA_E_NOMEM, "out of memory");
        free(w->path);
        free(w);
        return st;
    }
    *out = w;
    return FASA_OK;
}

fasa_status fasa_gguf_writer_u32(gguf_writer *w, const char *k, uint32_t v) {
    fasa_status st = key(w, k, GGUF_TYPE_UINT32);
    return st ? st : meta(w, &v, 4);
}
fasa_status fasa_gguf_writer_f32(gguf_writer *w, const char *k, float v) {
    fasa_status st = key(w, k, GGUF_TYPE_FLOAT32);
    return st ? st : meta(w, &v, 4);
}
fasa_status fasa_gguf_writer_bool(gguf_writer *w, const char *k, bool v) {
    const uint8_t b = v;
    fasa_status st = key(w, k, GGUF_TYPE_BOOL);
    return st ? st : meta(w, &b, 1);
}
fasa_status fasa_gguf_writer_str(gguf_writer *w, const char *k, const char *v) {
    fasa_status st = key(w, k, GGUF_TYPE_STRING);
    return st ? st : meta_str(w, v, strlen(v));
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    }
    return 0;
}

/* A scalar from the reader's widened value, narrowed back to its type. */
static fasa_status put_scalar(gguf_writer *w, const gguf_kv *kv) {
    uint8_t b[8];
    const size_t n = scalar_size(kv->type);
    switch (kv->type) {
    case GGUF_TYPE_FLOAT32: {
        const float f = (float)kv->v.f64;
        memcpy(b, &f, 4);
        break;
    }
    case GGUF_TYPE_FLOAT64: memcpy(b, &kv->v.f64, 8); break;
    case GGUF_TYPE_BOOL: b[0] = kv->v.b; break;
    case GGUF_TYPE_INT8: case GGUF_TYPE_INT16: case GGUF_TYPE_INT32: case GGUF_TYPE_INT64:
        memcpy(b, &kv->v.i64, n); /* little-endian: the low bytes */
        break;
    default: memcpy(b, &kv->v.u64, n); break;
    }
    return meta(w, b, n);
}

fasa_status fasa_gguf_writer_copy(gguf_writer *w, const gguf_kv *kv) {
    char k[256];
    snprintf(k, sizeof k, "%.*s", (int)(kv->key.len < 255 ? kv->key.len : 255), kv->key.data);
    fasa_status st = key(w, k, kv->type);
    if (st) return st;
    if (kv->type == GGUF_TYPE_STRING) return meta_str(w, kv->v.str.data, kv->v.str.len);
    if (kv->type != GGUF_TYPE_ARRAY) return put_scalar(w, kv);
    if ((st = meta(w, &kv->arr_type, 4)) || (st = meta(w, &kv->arr_len, 8))) return st;
    if (kv->arr_type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; !st && i < kv->arr_len; i++) st = meta_str(w, kv->arr_str[i].data, kv->arr_str[i].len);
        return st;
    }
    return meta(w, kv->arr_data, (size_t)(kv->arr_len * scalar_size(kv->arr_type)));
}

fasa_status fasa_gguf_writer_str_array(gguf_writer *w, const char *k, uint64_t n,
                                  const char *(*get)(void *user, uint64_t i, uint64_t *len), void *user) {
    const uint32_t t = GGUF_TYPE_STRING;
    fasa_status st = key(w, k, GGUF_TYPE_ARRAY);
    if (!st) st = meta(w, &t, 4);
    if (!st) st = meta(w, &n, 8);
    for (uint64_t i = 0; !st && i < n; i++) {
        uint64_t len;
        const char *s = get(user, i, &len);
        st = meta_str(w, s, len);
    }
    return st;
}

fasa_status fasa_gguf_writer_i32_array(gguf_writer *w, const char *k, uint64_t n, int32_t (*get)(void *user, uint64_t i),
                                  void *user) {
    const uint32_t t = GGUF_TYPE_INT32;
    fasa_status st = key(w, k, GGUF_TYPE_ARRAY);
    if (!st) st = meta(w, &t, 4);
    if (!st) st = meta(w, &n, 8);
    for (uint64_t i = 0; !st && i < n; i++) {
        const int32_t v = get(user, i);
        st = meta(w, &v, 4);
    }
    return st;
}

fasa_status fasa_gguf_writer_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type) {
    if (w->started) return fasa_error(FASA_E_ARG, "GGUF writer: a tensor declared after the data began");
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) return fasa_error(FASA_E_ARG, "GGUF writer: %u dimensions", n_dims);
    uint64_t rows = 1;
    for (uint32_t i = 1; i < n_dims; i++) rows *= ne[i];
    const size_t row = quant_row_bytes(type, (int64_t)ne[0]);
    if (!row) return fasa_error(FASA_E_ARG, "GGUF writer: tensor '%s' has rows of %llu elements, not whole %s blocks",
                                name, (unsigned long long)ne[0], quant_type_name(type) ? quant_type_name(type) : "?");
    if (w->n_tensors == w->cap_tensors) {
        const uint64_t c = w->cap_tensors ? 2 * w->cap_tensors : 64;
        wtensor *t = realloc(w->tensors, c * sizeof *t);
        if (!t) return fasa_error(FASA_E_NOMEM, "out of memory writing GGUF tensor infos");
        w->tensors = t;
        w->cap_tensors = c;
    }
    const uint64_t bytes = rows * row, name_len = strlen(name);
    fasa_status st = grow(&w->infos, &w->infos_len, &w->infos_cap, &name_len, 8);
    if (!st) st = grow(&w->infos, &w->infos_len, &w->infos_cap, name, name_len);
    if (!st) st = grow(&w->infos, &w->infos_len, &w->infos_cap, &n_dims, 4);
    if (!st) st = grow(&w->infos, &w->infos_len, &w->infos_cap, ne, 8 * (size_t)n_dims);
    if (!st) st = grow(&w->infos, &w->infos_len, &w->infos_cap, &type, 4);
    if (!st) st = grow(&w->infos, &w->infos_len, &w->infos_cap, &w->data_off, 8);
    if (st) return st;
    w->tensors[w->n_tensors++] = (wtensor){bytes};
    w->data_off += (bytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    return FASA_OK;
}

static fasa_status out(gguf_writer *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n)
        return fasa_error(FASA_E_IO, "cannot write '%s': %s", w->path, strerror(errno));
    return FASA_OK;
}

static fasa_status pad(gguf_writer *w, uint64_t pos) {
    static const uint8_t zeros[GGUF_ALIGN] = {0};
    return out(w, zeros, (size_t)((GGUF_ALIGN - pos % GGUF_ALIGN) % GGUF_ALIGN));
}

static fasa_status start(gguf_writer *w) {
    const uint32_t magic = 0x46554747u, version = 3; /* "GGUF" little-endian */
    w->started = 1;
    fasa_status st = out(w, &magic, 4);
    if (!st) st = out(w, &version, 4);
    if (!st) st = out(w, &w->n_tensors, 8);
    if (!st) st = out(w, &w->n_kv, 8);
    if (!st) st = out(w, w->meta, w->meta_len);
    if (!st) st = out(w, w->infos, w->infos_len);
    if (!st) st = pad(w, 24 + w->meta_len + w->infos_len);
    return st;
}

fasa_status fasa_gguf_writer_data(gguf_writer *w, const void *bytes, size_t n) {
    if (w->err) return w->err;
    fasa_status st = w->started ? FASA_OK : start(w);
    while (!st && n > 0) {
        if (w->cur >= w->n_tensors) {
            st = fasa_error(FASA_E_ARG, "GGUF writer: more data than the tensors declared");
            break;
        }
        const uint64_t left = w->tensors[w->cur].bytes - w->cur_done, k = n < left ? n : left;
        if ((st = out(w, bytes, (size_t)k))) break;
        bytes = (const uint8_t *)bytes + k;
        n -= (size_t)k;
        w->cur_done += k;
        if (w->cur_done == w->tensors[w->cur].bytes) {
            st = pad(w, w->cur_done);
            w->cur++;
            w->cur_done = 0;
        }
    }
    if (st) w->err = st;
    return st;
}

fasa_status fasa_gguf_writer_close(gguf_writer *w) {
    fasa_status st = w->err;
    if (!st && !w->started) st = start(w);
    if (!st && (w->cur != w->n_tensors || w->cur_done))
        st = fasa_error(FASA_E_ARG, "GGUF writer: %llu of %llu tensors written", (unsigned long long)w->cur,
                        (unsigned long long)w->n_tensors);
    if (fclose(w->f) != 0 && !st) st = fasa_error(FASA_E_IO, "cannot write '%s': %s", w->path, strerror(errno));
    if (st) remove(w->path);
    free(w->path);
    free(w->meta);
    free(w->infos);
    free(w->tensors);
    free(w);
    return st;
}
