/* GGUF v3 writer, streaming: metadata and tensor descriptions are collected
 * first, then the tensor data is written in the order the tensors were
 * declared, so a file of many gigabytes never sits in memory (fasa synth). */
#ifndef FASA_GGUF_WRITE_H
#define FASA_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct gguf_writer gguf_writer;

fasa_status fasa_gguf_writer_open(const char *path, gguf_writer **out);
/* Closes the file; an error when the data written does not match the
 * tensors declared (the file is then removed). */
fasa_status fasa_gguf_writer_close(gguf_writer *w);

/* Metadata, in the order given. */
fasa_status fasa_gguf_writer_u32(gguf_writer *w, const char *key, uint32_t v);
fasa_status fasa_gguf_writer_f32(gguf_writer *w, const char *key, float v);
fasa_status fasa_gguf_writer_bool(gguf_writer *w, const char *key, bool v);
fasa_status fasa_gguf_writer_str(gguf_writer *w, const char *key, const char *v);
/* A key of another file, copied as it is (arrays included). */
fasa_status fasa_gguf_writer_copy(gguf_writer *w, const gguf_kv *kv);
/* A string array: n strings of lens[i] bytes (not NUL-terminated). */
fasa_status fasa_gguf_writer_str_array(gguf_writer *w, const char *key, uint64_t n,
                                  const char *(*get)(void *user, uint64_t i, uint64_t *len), void *user);
fasa_status fasa_gguf_writer_i32_array(gguf_writer *w, const char *key, uint64_t n, int32_t (*get)(void *user, uint64_t i),
                                  void *user);

/* Declares a tensor (ne[0] is the row length, as GGUF stores it). */
fasa_status fasa_gguf_writer_tensor(gguf_writer *w, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type);
/* The next declared tensor's bytes, in one or more pieces. */
fasa_status fasa_gguf_writer_data(gguf_writer *w, const void *bytes, size_t n);

#endif
