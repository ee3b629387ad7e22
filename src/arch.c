#include "arch.h"

#include <stddef.h>
#include <stdio.h>

#include "model.h"

static const arch_desc archs[] = {
    /* GGUF's llama conversion permutes Q and K so that pairs are adjacent. */
    {"llama", FASA_ROPE_INTERLEAVED, 0, CHAT_NONE},
    /* Qwen2 keeps the Hugging Face half-split pairs and biases on Q, K, V. */
    {"qwen2", FASA_ROPE_HALF, ARCH_QKV_BIAS, CHAT_CHATML},
};

#define VEC(n, dim, field, needs) {n, dim, dim, 1, offsetof(fasa_layer, field), needs}
#define MAT(n, cols, rows, field) {n, cols, rows, 0, offsetof(fasa_layer, field), 0}
static const arch_tensor layer_tensors[] = {
    VEC("attn_norm.weight", ARCH_DIM_EMBD, attn_norm, 0),
    MAT("attn_q.weight", ARCH_DIM_EMBD, ARCH_DIM_Q, wq),
    MAT("attn_k.weight", ARCH_DIM_EMBD, ARCH_DIM_KV, wk),
    MAT("attn_v.weight", ARCH_DIM_EMBD, ARCH_DIM_KV, wv),
    VEC("attn_q.bias", ARCH_DIM_Q, bq, ARCH_QKV_BIAS),
    VEC("attn_k.bias", ARCH_DIM_KV, bk, ARCH_QKV_BIAS),
    VEC("attn_v.bias", ARCH_DIM_KV, bv, ARCH_QKV_BIAS),
    MAT("attn_output.weight", ARCH_DIM_Q, ARCH_DIM_EMBD, wo),
    VEC("ffn_norm.weight", ARCH_DIM_EMBD, ffn_norm, 0),
    MAT("ffn_gate.weight", ARCH_DIM_EMBD, ARCH_DIM_FF, w_gate),
    MAT("ffn_up.weight", ARCH_DIM_EMBD, ARCH_DIM_FF, w_up),
    MAT("ffn_down.weight", ARCH_DIM_FF, ARCH_DIM_EMBD, w_down),
};
#undef VEC
#undef MAT

const arch_desc *arch_find(gguf_str name) {
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (fasa_gguf_str_eq(name, archs[i].name)) return &archs[i];
    return NULL;
}

void arch_list(char *buf, size_t cap) {
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof archs / sizeof archs[0] && w < cap; i++)
        w += (size_t)snprintf(buf + w, cap - w, "%s%s", i ? ", " : "", archs[i].name);
}

const arch_tensor *arch_layer_tensors(size_t *n) {
    *n = sizeof layer_tensors / sizeof layer_tensors[0];
    return layer_tensors;
}
