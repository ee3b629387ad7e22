/* Tokenizer built from GGUF metadata (tokenizer.ggml.*).
 *
 * Two models: byte-level BPE (`gpt2`, with merges, GPT-2 byte-to-unicode
 * mapping and a pre-tokenizer chosen by tokenizer.ggml.pre) and Llama
 * SentencePiece (`llama`, scores + byte fallback <0xXX>). Special/control
 * tokens (token_type 3, e.g. <|im_start|>) are matched in the text only when
 * parse_special is set. */
#ifndef FASA_TOKENIZER_H
#define FASA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fasa.h"
#include "gguf.h"

typedef struct fasa_tokenizer fasa_tokenizer;

/* Builds the vocabulary from g (which may be closed afterwards: strings are copied). */
fasa_status tokenizer_init(const gguf_file *g, fasa_tokenizer **out);
void tokenizer_free(fasa_tokenizer *t);

int32_t tokenizer_n_vocab(const fasa_tokenizer *t);
int32_t tokenizer_bos(const fasa_tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const fasa_tokenizer *t);
bool tokenizer_add_bos(const fasa_tokenizer *t); /* tokenizer.ggml.add_bos_token */
/* End of generation: eos, or a chat end marker such as <|im_end|> / <|eot_id|>. */
bool tokenizer_is_eog(const fasa_tokenizer *t, int32_t id);

/* Encodes `len` bytes of UTF-8 text (invalid UTF-8 is encoded byte-wise, never
 * rejected). Writes at most `cap` ids; *n_out is the full count, so a caller
 * with too small a buffer learns the size needed (FASA_E_ARG is returned). */
fasa_status tokenizer_encode(const fasa_tokenizer *t, const char *text, size_t len,
                             bool add_bos, bool parse_special,
                             int32_t *ids, int32_t cap, int32_t *n_out);

/* The bytes a token stands for (GPT-2 byte mapping undone, SentencePiece
 * U+2581 turned into a space, <0xXX> into the byte). Returns the length
 * written (truncated to cap), or -1 for an id out of range. Control tokens
 * give their text only when `special` is set, else nothing. */
int32_t tokenizer_piece(const fasa_tokenizer *t, int32_t id, bool special, char *buf, int32_t cap);

/* Looks up an exact vocabulary string; -1 if absent. */
int32_t tokenizer_find(const fasa_tokenizer *t, const char *text);

#endif
