/* Architectures as data: what differs between the model families this build
 * runs, as one table entry each. The forward pass is shared; an entry says
 * how RoPE pairs coordinates, which optional tensors the family carries
 * (and so which few lines of maths run), and how it chats when the file has
 * no template. A new family is an entry here plus the maths it really adds. */
#ifndef FASA_ARCH_H
#define FASA_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "fasa.h"
#include "gguf.h"

/* Optional parts of the shared block, as flags of an entry. */
enum {
    ARCH_QKV_BIAS = 1u << 0, /* blk.N.attn_{q,k,v}.bias added after the products */
};

typedef struct arch_desc {
    const char *name;             /* general.architecture; also the metadata key prefix */
    fasa_rope_layout rope_layout; /* which coordinates RoPE rotates together */
    uint32_t features;            /* ARCH_* flags */
    chat_style chat;              /* turn format when the file has no chat template */
} arch_desc;

/* Sizes a tensor's dimensions are given in. */
typedef enum arch_dim {
    ARCH_DIM_EMBD,  /* n_embd */
    ARCH_DIM_Q,     /* n_heads * head_dim */
    ARCH_DIM_KV,    /* n_kv_heads * head_dim */
    ARCH_DIM_FF,    /* n_ff */
} arch_dim;

/* One tensor of every block "blk.N.<name>": a matrix of `rows` rows of
 * `cols` elements (kept in its block format), or a vector of `cols` floats
 * (rows == cols, converted to f32 at load). `offset` places it in
 * fasa_layer; `needs` is the feature flag that makes it part of the
 * block (0: always). */
typedef struct arch_tensor {
    const char *name;
    arch_dim cols, rows;
    int is_vector;
    size_t offset;
    uint32_t needs;
} arch_tensor;

/* The entry for a general.architecture value, or NULL. */
const arch_desc *arch_find(gguf_str name);
/* The known names, comma separated ("llama, qwen2"), for messages. */
void arch_list(char *buf, size_t cap);

/* The block's tensors, in load order; *n gets their count. */
const arch_tensor *arch_layer_tensors(size_t *n);

#endif
