/* fasa synth: writes a random-weight GGUF model of a given Llama shape, for
 * measuring speed where a real model of that size cannot be brought (its
 * output is noise; its work per token is the real model's). Every block is
 * valid: random codes, with scale fields set so that each block's values
 * have mean zero and an RMS of 1/sqrt(row length), which keeps activations
 * finite through any number of layers. The tokenizer is copied from another
 * GGUF, padded with unused tokens up to the preset's vocabulary. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "calib/calib.h"
#include "error.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

static const char *CMD = "synth";

typedef struct preset {
    const char *name;
    uint32_t n_layers, n_embd, n_heads, n_kv_heads, n_ff, n_vocab, n_ctx;
    float rope_base, eps;
    bool tied; /* no output matrix: the embeddings serve */
} preset;

/* n_vocab 0: the tokenizer's own. */
static const preset presets[] = {
    {"llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, 131072, 500000.0f, 1e-5f, false},
    {"smollm2-135m", 30, 576, 9, 3, 1536, 0, 8192, 100000.0f, 1e-5f, true},
    {"tiny", 2, 512, 8, 2, 1024, 0, 4096, 10000.0f, 1e-5f, false},
};

typedef struct mix {
    const char *name;
    uint32_t embd, out, attn, attn_v, ffn, ffn_down; /* tensor types */
} mix;

static const mix mixes[] = {
    {"q4_k_m", FASA_TYPE_Q4_K, FASA_TYPE_Q6_K, FASA_TYPE_Q4_K, FASA_TYPE_Q6_K, FASA_TYPE_Q4_K, FASA_TYPE_Q6_K},
    {"f16", FASA_TYPE_F16, FASA_TYPE_F16, FASA_TYPE_F16, FASA_TYPE_F16, FASA_TYPE_F16, FASA_TYPE_F16},
    {"q8_0", FASA_TYPE_Q8_0, FASA_TYPE_Q8_0, FASA_TYPE_Q8_0, FASA_TYPE_Q8_0, FASA_TYPE_Q8_0, FASA_TYPE_Q8_0},
    {"q4_1", FASA_TYPE_Q8_0, FASA_TYPE_Q8_0, FASA_TYPE_Q4_1, FASA_TYPE_Q4_1, FASA_TYPE_Q4_1, FASA_TYPE_Q4_1},
};

static void help(void) {
    printf("usage: fasa synth -o FILE [options]\n\n"
           "Writes a random-weight GGUF model of a Llama shape (architecture llama), to measure\n"
           "speed without the real weights. Its text is noise; its work per token is the real one's.\n\n"
           "  -o, --out FILE       the GGUF file to write\n"
           "      --preset P       llama-3.1-8b (default), smollm2-135m or tiny (2 layers, 512 wide)\n"
           "      --mix M          tensor types: q4_k_m (Q4_K; Q6_K for attn_v, ffn_down and output;\n"
           "                       default), f16, q8_0, q4_1\n"
           "      --layers N       override the preset's layer count\n"
           "      --tokenizer FILE GGUF to copy the tokenizer from (default %s)\n"
           "      --seed S         random seed (default 1)\n"
           "      --calib FILE     also write a calibration for the model with random chunk scores\n"
           "                       (to time fasa: its speed does not depend on which chunks it takes)\n"
           "  -h, --help           this help\n",
           CLI_DEFAULT_MODEL);
}

/* ---- random blocks ---------------------------------------------------- */

static uint64_t next64(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Where a format keeps its f16 scale (d) and its min field (0: none):
 * x = d * A + m * B, with A and B fixed by the block's other bytes. */
static void scale_fields(uint32_t type, int *d_at, int *m_at) {
    *m_at = -1;
    switch (type) {
    case FASA_TYPE_Q4_1: case FASA_TYPE_Q5_1: case FASA_TYPE_Q4_K: case FASA_TYPE_Q5_K: *d_at = 0, *m_at = 2; return;
    case FASA_TYPE_Q2_K: *d_at = 80, *m_at = 82; return;
    case FASA_TYPE_Q3_K: *d_at = 108; return;
    case FASA_TYPE_Q6_K: *d_at = 208; return;
    default: *d_at = 0; return; /* q4_0, q5_0, q8_0 */
    }
}

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = fasa_f32_to_f16(v);
    memcpy(p, &h, 2);
}

static double mean_of(const float *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s / n;
}

/* One block of random codes, its scales set for mean 0 and RMS `rms`. */
static void random_block(uint32_t type, const quant_traits *t, uint8_t *b, float rms, uint64_t *rng, float *a,
                         float *bb) {
    for (size_t i = 0; i < t->block_bytes; i += 8) {
        const uint64_t r = next64(rng);
        memcpy(b + i, &r, t->block_bytes - i < 8 ? t->block_bytes - i : 8);
    }
    int d_at, m_at;
    scale_fields(type, &d_at, &m_at);
    const int n = (int)t->block_size;
    put_f16(b + d_at, 1.0f);
    if (m_at >= 0) put_f16(b + m_at, 0.0f);
    quant_dequant_row(type, b, a, n);
    double ratio = 0.0;
    if (m_at >= 0) {
        put_f16(b + d_at, 0.0f);
        put_f16(b + m_at, 1.0f);
        quant_dequant_row(type, b, bb, n);
        const double mb = mean_of(bb, n);
        ratio = mb != 0.0 ? -mean_of(a, n) / mb : 0.0;
    }
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        const double v = a[i] + ratio * (m_at >= 0 ? bb[i] : 0.0);
        ss += v * v;
    }
    const double d = ss > 0 ? rms / sqrt(ss / n) : 0.0;
    put_f16(b + d_at, (float)d);
    if (m_at >= 0) put_f16(b + m_at, (float)(d * ratio));
}

/* A whole-element format: values uniform with the wanted RMS. */
static void random_elements(uint32_t type, uint8_t *b, int64_t n, float rms, uint64_t *rng) {
    for (int64_t i = 0; i < n; i++) {
        const float v = (float)(((double)(next64(rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0) * rms * 1.7320508);
        if (type == FASA_TYPE_F32) memcpy(b + 4 * i, &v, 4);
        else if (type == FASA_TYPE_F16) put_f16(b + 2 * i, v);
        else {
            uint32_t u;
            memcpy(&u, &v, 4);
            const uint16_t h = (uint16_t)(u >> 16);
            memcpy(b + 2 * i, &h, 2);
        }
    }
}

/* Writes a rows x cols matrix of random blocks, a row at a time. */
static fasa_status write_matrix(gguf_writer *w, const char *name, uint32_t type, uint64_t rows, uint64_t cols,
                                uint64_t seed) {
    const quant_traits *t = quant_traits_of(type);
    const size_t row_bytes = quant_row_bytes(type, (int64_t)cols);
    if (!t || !row_bytes)
        return fasa_error(FASA_E_ARG, "%s: rows of %llu elements are not whole %s blocks; choose another --mix", name,
                          (unsigned long long)cols, quant_type_name(type));
    enum { STRIPE = 256 };
    uint8_t *buf = malloc(STRIPE * row_bytes);
    if (!buf) return fasa_error(FASA_E_NOMEM, "out of memory writing %s", name);
    const float rms = (float)(1.0 / sqrt((double)cols));
    fasa_status st = FASA_OK;
    for (uint64_t r0 = 0; !st && r0 < rows; r0 += STRIPE) {
        const uint64_t nr = rows - r0 < STRIPE ? rows - r0 : STRIPE;
#pragma omp parallel for schedule(dynamic, 16)
        for (uint64_t r = 0; r < nr; r++) {
            uint64_t rng = seed ^ (0x9E3779B97F4A7C15ull * (r0 + r + 1));
            uint8_t *row = buf + r * row_bytes;
            if (t->block_size == 1) {
                random_elements(type, row, (int64_t)cols, rms, &rng);
                continue;
            }
            float a[256], b[256];
            for (size_t k = 0; k < row_bytes; k += t->block_bytes) random_block(type, t, row + k, rms, &rng, a, b);
        }
        st = fasa_gguf_writer_data(w, buf, nr * row_bytes);
    }
    free(buf);
    return st;
}

static fasa_status write_ones(gguf_writer *w, uint64_t n) {
    float *v = malloc(n * sizeof *v);
    if (!v) return fasa_error(FASA_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++) v[i] = 1.0f;
    fasa_status st = fasa_gguf_writer_data(w, v, n * sizeof *v);
    free(v);
    return st;
}

/* ---- the tokenizer ---------------------------------------------------- */

typedef struct vocab {
    const gguf_kv *tokens, *types;
    uint64_t n;
    char pad[48];
} vocab;

static const char *token_at(void *user, uint64_t i, uint64_t *len) {
    vocab *v = user;
    if (i < v->tokens->arr_len) {
        *len = v->tokens->arr_str[i].len;
        return v->tokens->arr_str[i].data;
    }
    *len = (uint64_t)snprintf(v->pad, sizeof v->pad, "<|synth_pad_%llu|>", (unsigned long long)i);
    return v->pad;
}

static int32_t type_at(void *user, uint64_t i) {
    vocab *v = user;
    if (i >= v->tokens->arr_len) return 5; /* unused */
    if (!v->types) return 1;
    int32_t t = 1;
    const size_t sz = v->types->arr_type == GGUF_TYPE_INT32 || v->types->arr_type == GGUF_TYPE_UINT32 ? 4 : 1;
    memcpy(&t, v->types->arr_data + i * sz, sz);
    return t;
}

/* The source's tokenizer.* keys, the vocabulary padded to n_vocab. */
static fasa_status write_tokenizer(gguf_writer *w, const gguf_file *src, uint64_t n_vocab, uint64_t *out_vocab) {
    vocab v = {0};
    fasa_status st = fasa_gguf_get_arr(src, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &v.tokens);
    if (st) return st;
    v.types = fasa_gguf_find_kv(src, "tokenizer.ggml.token_type");
    v.n = n_vocab > v.tokens->arr_len ? n_vocab : v.tokens->arr_len;
    *out_vocab = v.n;
    for (uint64_t i = 0; !st && i < src->n_kv; i++) {
        const gguf_kv *kv = &src->kv[i];
        if (kv->key.len < 10 || memcmp(kv->key.data, "tokenizer.", 10)) continue;
        if (fasa_gguf_str_eq(kv->key, "tokenizer.ggml.tokens"))
            st = fasa_gguf_writer_str_array(w, "tokenizer.ggml.tokens", v.n, token_at, &v);
        else if (fasa_gguf_str_eq(kv->key, "tokenizer.ggml.token_type"))
            st = fasa_gguf_writer_i32_array(w, "tokenizer.ggml.token_type", v.n, type_at, &v);
        else
            st = fasa_gguf_writer_copy(w, kv);
    }
    return st;
}

/* ---- the model -------------------------------------------------------- */

/* The tensors of a block: a vector when rows is 0. */
typedef struct synth_tensor {
    const char *name;
    uint32_t type;
    uint64_t cols, rows;
} synth_tensor;

enum { LAYER_TENSORS = 9 };

static void layer_tensors(const preset *p, const mix *x, synth_tensor *t) {
    const uint64_t E = p->n_embd, F = p->n_ff, kvd = (uint64_t)p->n_embd / p->n_heads * p->n_kv_heads;
    const synth_tensor all[LAYER_TENSORS] = {
        {"attn_norm.weight", FASA_TYPE_F32, E, 0},   {"attn_q.weight", x->attn, E, E},
        {"attn_k.weight", x->attn, E, kvd},          {"attn_v.weight", x->attn_v, E, kvd},
        {"attn_output.weight", x->attn, E, E},       {"ffn_norm.weight", FASA_TYPE_F32, E, 0},
        {"ffn_gate.weight", x->ffn, E, F},           {"ffn_up.weight", x->ffn, E, F},
        {"ffn_down.weight", x->ffn_down, F, E},
    };
    memcpy(t, all, sizeof all);
}

static fasa_status write_model(const char *path, const preset *p, const mix *x, const gguf_file *tok, uint64_t seed) {
    gguf_writer *w;
    fasa_status st = fasa_gguf_writer_open(path, &w);
    if (st) return st;
    uint64_t V = 0;
    char name[96];
    snprintf(name, sizeof name, "synthetic %s %s (random weights)", p->name, x->name);
    if ((st = fasa_gguf_writer_str(w, "general.architecture", "llama")) || (st = fasa_gguf_writer_str(w, "general.name", name)) ||
        (st = fasa_gguf_writer_u32(w, "llama.block_count", p->n_layers)) ||
        (st = fasa_gguf_writer_u32(w, "llama.context_length", p->n_ctx)) ||
        (st = fasa_gguf_writer_u32(w, "llama.embedding_length", p->n_embd)) ||
        (st = fasa_gguf_writer_u32(w, "llama.feed_forward_length", p->n_ff)) ||
        (st = fasa_gguf_writer_u32(w, "llama.attention.head_count", p->n_heads)) ||
        (st = fasa_gguf_writer_u32(w, "llama.attention.head_count_kv", p->n_kv_heads)) ||
        (st = fasa_gguf_writer_f32(w, "llama.rope.freq_base", p->rope_base)) ||
        (st = fasa_gguf_writer_f32(w, "llama.attention.layer_norm_rms_epsilon", p->eps)) ||
        (st = write_tokenizer(w, tok, p->n_vocab, &V)))
        goto done;

    /* Declarations first (the writer streams the data in this order). */
    const uint64_t E = p->n_embd;
    synth_tensor t[LAYER_TENSORS];
    layer_tensors(p, x, t);
    fasa_status (*decl)(gguf_writer *, const char *, uint32_t, const uint64_t *, uint32_t) = fasa_gguf_writer_tensor;
    if ((st = decl(w, "token_embd.weight", 2, (uint64_t[]){E, V}, x->embd)) ||
        (st = decl(w, "output_norm.weight", 1, (uint64_t[]){E}, FASA_TYPE_F32)) ||
        (!p->tied && (st = decl(w, "output.weight", 2, (uint64_t[]){E, V}, x->out))))
        goto done;
    for (uint32_t l = 0; l < p->n_layers; l++)
        for (int i = 0; i < LAYER_TENSORS && !st; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "blk.%u.%s", l, t[i].name);
            st = decl(w, nm, t[i].rows ? 2 : 1, (uint64_t[]){t[i].cols, t[i].rows}, t[i].type);
        }
    uint64_t s = seed;
    if (st || (st = write_matrix(w, "token_embd", x->embd, V, E, s++)) || (st = write_ones(w, E))) goto done;
    if (!p->tied && (st = write_matrix(w, "output", x->out, V, E, s++))) goto done;
    for (uint32_t l = 0; l < p->n_layers && !st; l++) {
        fprintf(stderr, "\rfasa synth: layer %u of %u", l + 1, p->n_layers);
        for (int i = 0; i < LAYER_TENSORS && !st; i++)
            st = t[i].rows ? write_matrix(w, t[i].name, t[i].type, t[i].rows, t[i].cols, s++) : write_ones(w, t[i].cols);
    }
    fprintf(stderr, "\n");
done:;
    fasa_status st2 = fasa_gguf_writer_close(w);
    return st ? st : st2;
}

/* A calibration for the written model whose chunk scores are random: the
 * speed of a FASA step does not depend on which chunks it scores with. */
static fasa_status write_calib(const char *model_path, const char *path, uint64_t seed) {
    fasa_model *m;
    fasa_status st = fasa_model_load(model_path, &m);
    if (st) return st;
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    fasa_calib *c = calib_alloc(&in);
    if (!c) st = FASA_E_NOMEM;
    if (!st) {
        const int64_t n = (int64_t)in.n_layers * in.n_heads * (in.head_dim / 2);
        uint64_t rng = seed | 1;
        for (int64_t i = 0; i < n; i++) c->ca[i] = (double)(next64(&rng) >> 11) * 0x1.0p-53;
        c->budget = 256;
        c->n_tokens = 1;
        c->n_decode = 1;
        calib_rank(c);
        st = fasa_calib_save(c, path);
    }
    fasa_calib_free(c);
    fasa_model_free(m);
    return st;
}

int cmd_synth(int argc, char **argv) {
    enum { O_PRESET = 256, O_MIX, O_LAYERS, O_TOK, O_SEED, O_CALIB };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},        {"preset", required_argument, 0, O_PRESET},
        {"mix", required_argument, 0, O_MIX},      {"layers", required_argument, 0, O_LAYERS},
        {"tokenizer", required_argument, 0, O_TOK}, {"seed", required_argument, 0, O_SEED},
        {"calib", required_argument, 0, O_CALIB},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    const char *out = NULL, *calib = NULL, *tok_path = CLI_DEFAULT_MODEL, *preset_name = "llama-3.1-8b", *mix_name = "q4_k_m";
    int64_t layers = 0, seed = 1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'o': out = optarg; break;
        case O_PRESET: preset_name = optarg; break;
        case O_MIX: mix_name = optarg; break;
        case O_LAYERS: ok = cli_int(CMD, "--layers", optarg, 1, 1024, &layers); break;
        case O_TOK: tok_path = optarg; break;
        case O_SEED: ok = cli_int(CMD, "--seed", optarg, 0, INT64_MAX, &seed); break;
        case O_CALIB: calib = optarg; break;
        case 'h': help(); return 0;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_fail(CMD, "unknown option '%s' (see fasa synth --help)", argv[optind - 1]);
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!out) return cli_fail(CMD, "give the file to write with -o FILE");
    const preset *p = NULL;
    const mix *x = NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(presets[i].name, preset_name)) p = &presets[i];
    for (size_t i = 0; i < sizeof mixes / sizeof mixes[0]; i++)
        if (!strcmp(mixes[i].name, mix_name)) x = &mixes[i];
    if (!p) return cli_fail(CMD, "unknown --preset '%s' (known: llama-3.1-8b, smollm2-135m, tiny)", preset_name);
    if (!x) return cli_fail(CMD, "unknown --mix '%s' (known: q4_k_m, f16, q8_0, q4_1)", mix_name);
    preset pp = *p;
    if (layers) pp.n_layers = (uint32_t)layers;
    gguf_file *tok = NULL;
    if (fasa_gguf_open(tok_path, &tok) != FASA_OK) return cli_fail(CMD, "tokenizer source: %s", fasa_last_error());
    const double t0 = cli_now();
    fasa_status st = write_model(out, &pp, x, tok, (uint64_t)seed);
    fasa_gguf_close(tok);
    if (!st && calib) st = write_calib(out, calib, (uint64_t)seed);
    if (st) return cli_fail(CMD, "%s", fasa_last_error());
    fprintf(stderr, "fasa synth: wrote %s (%s, %s, %u layers) in %.1f s\n", out, pp.name, x->name, pp.n_layers,
            cli_now() - t0);
    return 0;
}
