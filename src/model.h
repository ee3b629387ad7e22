/* A model of one of the architectures in arch.c: weights as views into the
 * GGUF mapping, and the forward pass. The model knows nothing of how an attention policy selects
 * tokens; it hands each layer's queries and the KV cache to attention. */
#ifndef FASA_MODEL_H
#define FASA_MODEL_H

#include <stdint.h>

#include "arch.h"
#include "chat.h"
#include "fasa.h"
#include "gguf.h"
#include "kv.h"
#include "tokenizer.h"

/* A 2-D weight matrix in its block format: `rows` rows of `cols` elements. */
typedef struct fasa_weight {
    const void *data;
    uint32_t type;
    int64_t rows;
    int64_t cols;
} fasa_weight;

/* One block; its tensors are listed in arch.c. Vectors are owned f32
 * copies; the biases are NULL where the architecture has none. */
typedef struct fasa_layer {
    float *attn_norm; /* [n_embd] */
    float *ffn_norm;
    float *bq, *bk, *bv; /* [n_heads * head_dim], [n_kv_heads * head_dim] x 2 */
    fasa_weight wq, wk, wv, wo;
    fasa_weight w_gate, w_up, w_down;
} fasa_layer;

struct fasa_model {
    gguf_file *gguf;
    const arch_desc *arch;
    fasa_tokenizer *tok;
    fasa_model_info info;
    float rms_eps;
    float *inv_freq;        /* [head_dim / 2]: base^(-2i/d), scaled */
    fasa_weight tok_embd;   /* [n_vocab] rows of n_embd */
    fasa_weight output;     /* tok_embd when the embeddings are tied */
    float *output_norm;
    fasa_layer *layers;
    chat_template chat;
};

/* The i-th rotation pair (frequency chunk) of a head vector under a layout:
 * the two coordinates RoPE rotates together at frequency inv_freq[i]. */
static inline void fasa_rope_pair(fasa_rope_layout layout, int32_t head_dim, int32_t i,
                                  int32_t *a, int32_t *b) {
    if (layout == FASA_ROPE_INTERLEAVED) {
        *a = 2 * i;
        *b = 2 * i + 1;
    } else {
        *a = i;
        *b = i + head_dim / 2;
    }
}

/* Rotates every head of a [n_heads][head_dim] vector in place for position
 * pos, using precomputed cos/sin of pos * inv_freq[i] ([head_dim / 2] each). */
void fasa_rope_apply(float *x, int32_t n_heads, int32_t head_dim, fasa_rope_layout layout,
                     const float *cos_t, const float *sin_t);

#endif
