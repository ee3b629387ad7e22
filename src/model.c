/* Loading a model from GGUF: hyperparameters, weight views, shape and type
 * checks. Every tensor the architecture (arch.c) needs is checked for
 * presence, block type and shape here, so the forward pass can trust them;
 * and every tensor of the file must be one of them, since a tensor we do
 * not know is maths we would silently skip. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

static fasa_status arch_key(const char *arch, const char *suffix, char *buf, size_t cap) {
    if ((size_t)snprintf(buf, cap, "%s.%s", arch, suffix) >= cap)
        return fasa_error(FASA_E_FORMAT, "metadata key '%s.%s' too long", arch, suffix);
    return FASA_OK;
}

static fasa_status get_arch_u32(const gguf_file *g, const char *arch, const char *suffix,
                                int32_t *out, int32_t lo, int32_t hi) {
    char key[128];
    uint32_t v;
    fasa_status st = arch_key(arch, suffix, key, sizeof key);
    if (st == FASA_OK) st = fasa_gguf_get_u32(g, key, &v);
    if (st != FASA_OK) return st;
    if ((int64_t)v < lo || (int64_t)v > hi)
        return fasa_error(FASA_E_FORMAT, "metadata %s = %u is outside the supported range [%d, %d]",
                          key, v, lo, hi);
    *out = (int32_t)v;
    return FASA_OK;
}

/* Optional float key: keeps *out when the key is absent. */
static fasa_status get_arch_f32_opt(const gguf_file *g, const char *arch, const char *suffix,
                                    float *out) {
    char key[128];
    fasa_status st = arch_key(arch, suffix, key, sizeof key);
    if (st != FASA_OK) return st;
    if (!fasa_gguf_find_kv(g, key)) return FASA_OK;
    return fasa_gguf_get_f32(g, key, out);
}

static fasa_status read_hparams(fasa_model *m) {
    const gguf_file *g = m->gguf;
    fasa_model_info *in = &m->info;
    gguf_str arch;
    fasa_status st = fasa_gguf_get_str(g, "general.architecture", &arch);
    if (st != FASA_OK) return st;
    if (!(m->arch = arch_find(arch))) {
        char names[128];
        arch_list(names, sizeof names);
        return fasa_error(FASA_E_UNSUPPORTED, "model architecture '%.*s' is not supported (supported: %s)",
                          (int)(arch.len > 40 ? 40 : arch.len), arch.data, names);
    }
    snprintf(in->arch, sizeof in->arch, "%s", m->arch->name);
    in->rope_layout = m->arch->rope_layout;
    gguf_str name = {0, ""};
    if (fasa_gguf_find_kv(g, "general.name") && fasa_gguf_get_str(g, "general.name", &name) == FASA_OK)
        snprintf(in->name, sizeof in->name, "%.*s", (int)(name.len > 95 ? 95 : name.len), name.data);

    const char *ar = in->arch;
    if ((st = get_arch_u32(g, ar, "block_count", &in->n_layers, 1, 1024)) ||
        (st = get_arch_u32(g, ar, "embedding_length", &in->n_embd, 1, 1 << 16)) ||
        (st = get_arch_u32(g, ar, "feed_forward_length", &in->n_ff, 1, 1 << 20)) ||
        (st = get_arch_u32(g, ar, "attention.head_count", &in->n_heads, 1, 1024)) ||
        (st = get_arch_u32(g, ar, "context_length", &in->n_ctx_train, 1, 1 << 24)))
        return st;
    in->n_kv_heads = in->n_heads;
    char key[128];
    arch_key(ar, "attention.head_count_kv", key, sizeof key);
    if (fasa_gguf_find_kv(g, key) &&
        (st = get_arch_u32(g, ar, "attention.head_count_kv", &in->n_kv_heads, 1, in->n_heads)))
        return st;
    if (in->n_heads % in->n_kv_heads)
        return fasa_error(FASA_E_FORMAT, "%d query heads are not a multiple of %d KV heads",
                          in->n_heads, in->n_kv_heads);
    if (in->n_embd % in->n_heads)
        return fasa_error(FASA_E_FORMAT, "embedding length %d is not a multiple of %d heads",
                          in->n_embd, in->n_heads);
    in->head_dim = in->n_embd / in->n_heads;
    arch_key(ar, "attention.key_length", key, sizeof key);
    if (fasa_gguf_find_kv(g, key) && (st = get_arch_u32(g, ar, "attention.key_length", &in->head_dim, 2, 1024)))
        return st;
    if (in->head_dim % 2)
        return fasa_error(FASA_E_FORMAT, "head dimension %d is odd; RoPE needs pairs", in->head_dim);
    if (in->head_dim > FASA_MAX_HEAD_DIM)
        return fasa_error(FASA_E_UNSUPPORTED, "head dimension %d is over the %d this build supports", in->head_dim,
                          FASA_MAX_HEAD_DIM);
    int32_t rope_dims = in->head_dim;
    arch_key(ar, "rope.dimension_count", key, sizeof key);
    if (fasa_gguf_find_kv(g, key) && (st = get_arch_u32(g, ar, "rope.dimension_count", &rope_dims, 1, 1024)))
        return st;
    if (rope_dims != in->head_dim)
        return fasa_error(FASA_E_UNSUPPORTED, "partial rotary embeddings (%d of %d dims) are not supported",
                          rope_dims, in->head_dim);

    in->rope_base = 10000.0f;
    in->rope_scale = 1.0f;
    m->rms_eps = 1e-5f;
    if ((st = get_arch_f32_opt(g, ar, "rope.freq_base", &in->rope_base)) ||
        (st = get_arch_f32_opt(g, ar, "attention.layer_norm_rms_epsilon", &m->rms_eps)))
        return st;
    arch_key(ar, "rope.scaling.type", key, sizeof key);
    if (fasa_gguf_find_kv(g, key)) {
        gguf_str type;
        if ((st = fasa_gguf_get_str(g, key, &type))) return st;
        if (fasa_gguf_str_eq(type, "linear")) {
            if ((st = get_arch_f32_opt(g, ar, "rope.scaling.factor", &in->rope_scale))) return st;
        } else if (!fasa_gguf_str_eq(type, "none")) {
            return fasa_error(FASA_E_UNSUPPORTED, "RoPE scaling type '%.*s' is not supported (linear, none)",
                              (int)(type.len > 32 ? 32 : type.len), type.data);
        }
    }
    if (!(in->rope_base > 1.0f) || !isfinite(in->rope_base) || !(in->rope_scale > 0.0f) ||
        !isfinite(in->rope_scale))
        return fasa_error(FASA_E_FORMAT, "invalid RoPE base %g or scale %g", in->rope_base, in->rope_scale);
    if (!(m->rms_eps > 0.0f) || !isfinite(m->rms_eps))
        return fasa_error(FASA_E_FORMAT, "invalid RMSNorm epsilon %g", m->rms_eps);
    return FASA_OK;
}

/* Finds a tensor and records that the model uses it. */
static const gguf_tensor *use_tensor(fasa_model *m, const char *name, bool *used) {
    const gguf_tensor *t = fasa_gguf_find_tensor(m->gguf, name);
    if (t) used[t - m->gguf->tensors] = true;
    return t;
}

/* Finds a 2-D weight and checks its type and shape (cols x rows as GGUF ne). */
static fasa_status get_weight(fasa_model *m, bool *used, const char *name, int64_t cols, int64_t rows,
                              fasa_weight *w) {
    const gguf_tensor *t = use_tensor(m, name, used);
    if (!t) return fasa_error(FASA_E_FORMAT, "required tensor '%s' is missing", name);
    const quant_traits *qt = quant_traits_of(t->type);
    if (!qt || !t->data)
        return fasa_error(FASA_E_UNSUPPORTED,
                          "tensor '%s' has type %s (id %u), which this build cannot run (supported: %s)", name,
                          quant_type_name(t->type) ? quant_type_name(t->type) : "unknown", t->type,
                          quant_supported_names());
    if (t->n_dims != 2 || (int64_t)t->ne[0] != cols || (int64_t)t->ne[1] != rows)
        return fasa_error(FASA_E_FORMAT,
                          "tensor '%s' has shape [%llu, %llu] (%u dims), expected [%lld, %lld]", name,
                          (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->n_dims,
                          (long long)cols, (long long)rows);
    *w = (fasa_weight){t->data, t->type, rows, cols};
    m->info.weight_bytes += t->n_bytes;
    m->info.n_params += (uint64_t)(rows * cols);
    return FASA_OK;
}

/* Vectors (norms, biases) are small; convert them to f32 once. */
static fasa_status get_vector(fasa_model *m, bool *used, const char *name, int64_t n, float **out) {
    const gguf_tensor *t = use_tensor(m, name, used);
    if (!t) return fasa_error(FASA_E_FORMAT, "required tensor '%s' is missing", name);
    if (t->n_dims != 1 || (int64_t)t->ne[0] != n)
        return fasa_error(FASA_E_FORMAT, "tensor '%s' has %u dims and %llu elements, expected a vector of %lld",
                          name, t->n_dims, (unsigned long long)t->ne[0], (long long)n);
    if (!quant_traits_of(t->type) || !t->data || !quant_row_bytes(t->type, n))
        return fasa_error(FASA_E_UNSUPPORTED,
                          "tensor '%s' has type %s (id %u), which this build cannot run (supported: %s)", name,
                          quant_type_name(t->type) ? quant_type_name(t->type) : "unknown", t->type,
                          quant_supported_names());
    *out = fasa_malloc((size_t)n, sizeof(float), name);
    if (!*out) return FASA_E_NOMEM;
    quant_dequant_row(t->type, t->data, *out, n);
    m->info.weight_bytes += t->n_bytes;
    m->info.n_params += (uint64_t)n;
    return FASA_OK;
}

static int64_t dim_size(const fasa_model_info *in, arch_dim d) {
    switch (d) {
    case ARCH_DIM_EMBD: return in->n_embd;
    case ARCH_DIM_Q: return (int64_t)in->n_heads * in->head_dim;
    case ARCH_DIM_KV: return (int64_t)in->n_kv_heads * in->head_dim;
    case ARCH_DIM_FF: return in->n_ff;
    }
    return 0;
}

static fasa_status load_layer(fasa_model *m, bool *used, int32_t l) {
    size_t n;
    const arch_tensor *tt = arch_layer_tensors(&n);
    for (size_t i = 0; i < n; i++) {
        if (tt[i].needs && !(m->arch->features & tt[i].needs)) continue;
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", l, tt[i].name);
        char *field = (char *)&m->layers[l] + tt[i].offset;
        const int64_t cols = dim_size(&m->info, tt[i].cols), rows = dim_size(&m->info, tt[i].rows);
        fasa_status st = tt[i].is_vector ? get_vector(m, used, name, cols, (float **)(void *)field)
                                         : get_weight(m, used, name, cols, rows, (fasa_weight *)(void *)field);
        if (st) return st;
    }
    return FASA_OK;
}

/* The first tensor of the file no part of the model read, named. */
static fasa_status check_all_used(const fasa_model *m, const bool *used) {
    const gguf_file *g = m->gguf;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!used[i])
            return fasa_error(FASA_E_UNSUPPORTED,
                              "tensor '%.*s' is not part of a '%s' model as this build runs it (a variant of "
                              "the architecture it does not support?); refusing to ignore it",
                              (int)(g->tensors[i].name.len > 64 ? 64 : g->tensors[i].name.len),
                              g->tensors[i].name.data, m->arch->name);
    return FASA_OK;
}

static fasa_status load_weights(fasa_model *m, bool *used) {
    const fasa_model_info *in = &m->info;
    const int64_t E = in->n_embd;
    fasa_status st = get_weight(m, used, "token_embd.weight", E, in->n_vocab, &m->tok_embd);
    if (st) return st;
    /* The embedding matrix is read one row per token, not whole. */
    m->info.weight_bytes -= quant_row_bytes(m->tok_embd.type, E) * (uint64_t)(in->n_vocab - 1);
    if (fasa_gguf_find_tensor(m->gguf, "output.weight")) {
        if ((st = get_weight(m, used, "output.weight", E, in->n_vocab, &m->output))) return st;
    } else {
        m->output = m->tok_embd; /* tied embeddings */
        m->info.weight_bytes += quant_row_bytes(m->tok_embd.type, E) * (uint64_t)in->n_vocab;
    }
    if ((st = get_vector(m, used, "output_norm.weight", E, &m->output_norm))) return st;

    m->layers = fasa_calloc((size_t)in->n_layers, sizeof *m->layers, "layer table");
    if (!m->layers) return FASA_E_NOMEM;
    for (int32_t l = 0; l < in->n_layers; l++)
        if ((st = load_layer(m, used, l))) return st;
    return check_all_used(m, used);
}

/* Identifies the weights a calibration was made for: two files with the same
 * tensor table are the same model for our purposes. */
static uint64_t tensor_table_hash(const gguf_file *g) {
    uint64_t h = 0xcbf29ce484222325ull;
#define MIX(ptr, len)                                                        \
    for (size_t b_ = 0; b_ < (size_t)(len); b_++) {                          \
        h ^= ((const uint8_t *)(ptr))[b_];                                   \
        h *= 0x100000001b3ull;                                               \
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        MIX(t->name.data, t->name.len);
        MIX(&t->type, sizeof t->type);
        MIX(t->ne, sizeof t->ne);
        MIX(&t->offset, sizeof t->offset);
    }
#undef MIX
    return h;
}

static fasa_status init_rope(fasa_model *m) {
    const int32_t half = m->info.head_dim / 2;
    m->inv_freq = fasa_malloc((size_t)half, sizeof(float), "RoPE frequencies");
    if (!m->inv_freq) return FASA_E_NOMEM;
    for (int32_t i = 0; i < half; i++)
        m->inv_freq[i] = (float)(pow((double)m->info.rope_base, -2.0 * i / m->info.head_dim) /
                                 m->info.rope_scale);
    return FASA_OK;
}

static fasa_status detect_chat(fasa_model *m) {
    gguf_str t;
    if (!fasa_gguf_find_kv(m->gguf, "tokenizer.chat_template")) return FASA_OK;
    fasa_status st = fasa_gguf_get_str(m->gguf, "tokenizer.chat_template", &t);
    return st ? st : chat_template_detect(t.data, t.len, &m->chat);
}

fasa_status fasa_model_load(const char *path, fasa_model **out) {
    *out = NULL;
    if (!path) return fasa_error(FASA_E_ARG, "no model path given");
    fasa_model *m = fasa_calloc(1, sizeof *m, "model");
    if (!m) return FASA_E_NOMEM;
    fasa_status st = fasa_gguf_open(path, &m->gguf);
    if (!st) st = read_hparams(m);
    if (!st) st = tokenizer_init(m->gguf, &m->tok);
    bool *used = NULL;
    if (!st && !(used = fasa_calloc(m->gguf->n_tensors, sizeof *used, "tensor table"))) st = FASA_E_NOMEM;
    if (!st) {
        m->info.n_vocab = tokenizer_n_vocab(m->tok);
        st = load_weights(m, used);
    }
    free(used);
    if (!st) st = init_rope(m);
    if (!st) st = detect_chat(m);
    if (!st && m->chat.style == CHAT_NONE) m->chat.style = m->arch->chat;
    if (st) {
        if (m->gguf && st != FASA_E_IO) {
            /* Prefix the file name so the user knows which model is at fault. */
            char msg[512];
            snprintf(msg, sizeof msg, "%s", fasa_last_error());
            if (!strstr(msg, path)) fasa_error(st, "%s: %s", path, msg);
        }
        fasa_model_free(m);
        return st;
    }
    m->info.tensor_hash = tensor_table_hash(m->gguf);
    *out = m;
    return FASA_OK;
}

void fasa_model_free(fasa_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int32_t l = 0; l < m->info.n_layers; l++) {
            free(m->layers[l].attn_norm);
            free(m->layers[l].ffn_norm);
            free(m->layers[l].bq);
            free(m->layers[l].bk);
            free(m->layers[l].bv);
        }
        free(m->layers);
    }
    free(m->output_norm);
    free(m->inv_freq);
    chat_template_free(&m->chat);
    tokenizer_free(m->tok);
    fasa_gguf_close(m->gguf);
    free(m);
}

void fasa_model_get_info(const fasa_model *m, fasa_model_info *info) { *info = m->info; }
