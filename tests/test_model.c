/* Model loading and forward-pass properties:
 *  - a tiny synthetic Llama model (built here as GGUF) loads, and variants
 *    with a missing key, a missing tensor, a wrong shape or an unknown
 *    architecture fail with a message naming the problem;
 *  - on the real model: batched prefill equals token-by-token decode, an f16
 *    KV cache stays close to f32, bad token ids and a full context are errors
 *    that leave the cache unchanged;
 *  - RoPE pair layouts and shift invariance; GQA head mapping of attention. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "attn/dense.h"
#include "backend.h"
#include "backend_cpu.h"
#include "context.h"
#include "kv.h"
#include "labels.h"
#include "fasa.h"
#include "gguf_builder.h"
#include "model.h"
#include "quant.h"

/* ---- a tiny synthetic model ------------------------------------------- */

enum { T_EMBD = 32, T_HEADS = 4, T_KV = 2, T_FF = 64, T_LAYERS = 2, T_VOCAB = 256 };

typedef struct tiny_opts {
    const char *arch;         /* default "llama" */
    const char *drop_key;     /* metadata key to leave out */
    const char *drop_tensor;  /* tensor to leave out */
    const char *bad_shape;    /* tensor whose rows get one extra */
    uint32_t head_count;      /* default T_HEADS */
    const char *extra_vector; /* an extra [T_EMBD] tensor no part of the model reads */
} tiny_opts;

typedef struct tiny_tensor {
    char name[64];
    uint64_t ne[2];
    uint32_t n_dims;
} tiny_tensor;

static int tiny_tensors(const tiny_opts *o, tiny_tensor *t) {
    int n = 0;
    const uint64_t hd = T_EMBD, kvd = T_EMBD / T_HEADS * T_KV;
#define ADD(nm, c, r, nd)                                                                  \
    do {                                                                                   \
        tiny_tensor x = {"", {c, r}, nd};                                                  \
        snprintf(x.name, sizeof x.name, "%s", nm);                                         \
        if (!o->drop_tensor || strcmp(o->drop_tensor, x.name)) {                           \
            if (o->bad_shape && !strcmp(o->bad_shape, x.name)) x.ne[x.n_dims - 1] += 1;    \
            t[n++] = x;                                                                    \
        }                                                                                  \
    } while (0)
    ADD("token_embd.weight", T_EMBD, T_VOCAB, 2);
    ADD("output_norm.weight", T_EMBD, 1, 1);
    if (o->extra_vector) ADD(o->extra_vector, T_EMBD, 1, 1);
    for (int l = 0; l < T_LAYERS; l++) {
        char nm[64];
        static const struct {
            const char *s;
            uint64_t c, r;
            uint32_t nd;
        } L[] = {{"attn_norm", T_EMBD, 1, 1}, {"ffn_norm", T_EMBD, 1, 1}, {"attn_q", T_EMBD, 0, 2},
                 {"attn_k", T_EMBD, 1, 2},    {"attn_v", T_EMBD, 1, 2},   {"attn_output", 0, T_EMBD, 2},
                 {"ffn_gate", T_EMBD, T_FF, 2}, {"ffn_up", T_EMBD, T_FF, 2}, {"ffn_down", T_FF, T_EMBD, 2}};
        for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, L[i].s);
            uint64_t c = L[i].c ? L[i].c : hd, r = L[i].r;
            if (!strcmp(L[i].s, "attn_q")) r = hd;
            if (!strcmp(L[i].s, "attn_k") || !strcmp(L[i].s, "attn_v")) r = kvd;
            ADD(nm, c, r, L[i].nd);
        }
    }
#undef ADD
    return n;
}

/* GPT-2 byte-to-unicode: printable Latin-1 bytes stand for themselves, the
 * rest are shifted to U+0100 and up. Written as UTF-8. */
static void byte_token(int byte, char *out) {
    static int map[256];
    static int ready = 0;
    if (!ready) {
        int n = 0;
        for (int b = 0; b < 256; b++) {
            const int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            map[b] = printable ? b : 256 + n++;
        }
        ready = 1;
    }
    const int cp = map[byte];
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) * 0x1.0p-53 - 0.5);
}

static void write_tiny(const tiny_opts *o, const char *path) {
    tiny_tensor t[64];
    const int nt = tiny_tensors(o, t);
    struct {
        const char *key;
        uint32_t v;
    } u32[] = {{"llama.block_count", T_LAYERS},      {"llama.embedding_length", T_EMBD},
               {"llama.feed_forward_length", T_FF},  {"llama.attention.head_count", o->head_count ? o->head_count : T_HEADS},
               {"llama.attention.head_count_kv", T_KV}, {"llama.context_length", 128}};
    const int n_u32 = sizeof u32 / sizeof u32[0];
    int n_kv = 0;
    for (int i = 0; i < n_u32; i++) n_kv += !o->drop_key || strcmp(o->drop_key, u32[i].key);
    n_kv += 4; /* architecture, tokenizer model, tokens, merges */
    gguf_builder b = {0};
    gb_header(&b, 3, (uint64_t)nt, (uint64_t)n_kv);
    gb_kv_str(&b, "general.architecture", o->arch ? o->arch : "llama");
    for (int i = 0; i < n_u32; i++)
        if (!o->drop_key || strcmp(o->drop_key, u32[i].key)) gb_kv_u32(&b, u32[i].key, u32[i].v);
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_arr(&b, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, T_VOCAB);
    for (int i = 0; i < T_VOCAB; i++) {
        char s[4];
        byte_token(i, s);
        gb_str(&b, s);
    }
    gb_arr(&b, "tokenizer.ggml.merges", GGUF_TYPE_STRING, 0);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        gb_tensor_info(&b, t[i].name, t[i].n_dims, t[i].ne, FASA_TYPE_F32, off);
        off += (t[i].ne[0] * (t[i].n_dims == 2 ? t[i].ne[1] : 1) * 4 + 31) / 32 * 32;
    }
    gb_pad(&b, 32);
    for (int i = 0; i < nt; i++) {
        const uint64_t n = t[i].ne[0] * (t[i].n_dims == 2 ? t[i].ne[1] : 1);
        const int norm = t[i].n_dims == 1;
        for (uint64_t j = 0; j < n; j++) gb_f32(&b, norm ? 1.0f + 0.1f * frand() : 0.3f * frand());
        gb_pad(&b, 32);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b.data, 1, b.len, f), b.len);
    fclose(f);
    gb_free(&b);
}

static char tiny_path[256];

static void expect_load_error(const tiny_opts *o, fasa_status code, const char *needle) {
    write_tiny(o, tiny_path);
    fasa_model *m = NULL;
    fasa_status st = fasa_model_load(tiny_path, &m);
    if (st != code) fail_msg("expected status %d, got %d (%s)", code, st, fasa_last_error());
    assert_null(m);
    if (!strstr(fasa_last_error(), needle)) fail_msg("message '%s' lacks '%s'", fasa_last_error(), needle);
}

static void test_tiny_loads_and_runs(void **state) {
    tiny_opts o = {0};
    write_tiny(&o, tiny_path);
    fasa_model *m;
    if (fasa_model_load(tiny_path, &m) != FASA_OK) fail_msg("%s", fasa_last_error());
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    assert_int_equal(in.n_layers, T_LAYERS);
    assert_int_equal(in.n_heads, T_HEADS);
    assert_int_equal(in.n_kv_heads, T_KV);
    assert_int_equal(in.head_dim, T_EMBD / T_HEADS);
    assert_int_equal(in.n_vocab, T_VOCAB);
    assert_int_equal(in.rope_layout, FASA_ROPE_INTERLEAVED);
    fasa_context *c;
    assert_int_equal(fasa_context_init(m, NULL, &c), FASA_OK);
    assert_int_equal(fasa_context_n_ctx(c), 128); /* the model's training context by default */
    int32_t toks[5] = {72, 101, 108, 108, 111};
    float logits[T_VOCAB];
    assert_int_equal(fasa_eval(c, toks, 5, logits, false), FASA_OK);
    for (int i = 0; i < T_VOCAB; i++) assert_true(isfinite(logits[i]));
    fasa_context_free(c);
    fasa_model_free(m);
}

static void test_tiny_bad_variants(void **state) {
    expect_load_error(&(tiny_opts){.drop_key = "llama.block_count"}, FASA_E_FORMAT, "llama.block_count");
    expect_load_error(&(tiny_opts){.drop_key = "llama.embedding_length"}, FASA_E_FORMAT, "llama.embedding_length");
    expect_load_error(&(tiny_opts){.arch = "gptneox"}, FASA_E_UNSUPPORTED,
                      "'gptneox' is not supported (supported: llama, qwen2)");
    /* A qwen2 file relabelled as llama: its biases would be silently skipped. */
    expect_load_error(&(tiny_opts){.extra_vector = "blk.0.attn_q.bias"}, FASA_E_UNSUPPORTED,
                      "tensor 'blk.0.attn_q.bias' is not part of a 'llama' model");
    expect_load_error(&(tiny_opts){.drop_tensor = "blk.1.ffn_up.weight"}, FASA_E_FORMAT,
                      "'blk.1.ffn_up.weight' is missing");
    expect_load_error(&(tiny_opts){.drop_tensor = "output_norm.weight"}, FASA_E_FORMAT,
                      "'output_norm.weight' is missing");
    expect_load_error(&(tiny_opts){.bad_shape = "blk.0.attn_k.weight"}, FASA_E_FORMAT,
                      "'blk.0.attn_k.weight' has shape");
    expect_load_error(&(tiny_opts){.head_count = 3}, FASA_E_FORMAT, "not a multiple of 2 KV heads");
    fasa_model *m = NULL;
    assert_int_equal(fasa_model_load("/nonexistent/model.gguf", &m), FASA_E_IO);
    assert_non_null(strstr(fasa_last_error(), "/nonexistent/model.gguf"));
}

/* ---- the real model ------------------------------------------------------ */

static fasa_model *real;

static fasa_context *real_context(int32_t n_ctx, fasa_kv_type type) {
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = n_ctx;
    p.n_threads = 2;
    p.kv_type = type;
    p.n_batch = 7; /* an odd chunk size: prefill crosses chunk boundaries */
    fasa_context *c;
    assert_int_equal(fasa_context_init(real, &p, &c), FASA_OK);
    return c;
}

static const int32_t prompt[] = {1589, 314, 253, 4569, 21902, 14494, 28, 338, 253, 2244,
                                 665, 281, 6231, 282, 253, 1123, 10930, 28, 1492, 325};
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

static double rel_err(const float *a, const float *b, int64_t n) {
    double e = 0.0, s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return e / s;
}

static void test_prefill_equals_decode(void **state) {
    fasa_model_info in;
    fasa_model_get_info(real, &in);
    const int64_t V = in.n_vocab;
    float *all = malloc(N_PROMPT * V * sizeof *all), *one = malloc(V * sizeof *one);
    fasa_context *a = real_context(64, FASA_KV_F32), *b = real_context(64, FASA_KV_F32);
    assert_int_equal(fasa_eval(a, prompt, N_PROMPT, all, true), FASA_OK);
    for (int t = 0; t < N_PROMPT; t++) {
        assert_int_equal(fasa_eval(b, &prompt[t], 1, one, false), FASA_OK);
        const double e = rel_err(one, all + t * V, V);
        if (e > 1e-5) fail_msg("position %d: decode vs prefill relative error %.3g", t, e);
    }
    /* The last-only logits of a batched call equal the last row of all logits
     * (one product is a matrix-vector, the other a matrix-matrix kernel). */
    fasa_context_reset(a);
    assert_int_equal(fasa_eval(a, prompt, N_PROMPT, one, false), FASA_OK);
    assert_true(rel_err(one, all + (N_PROMPT - 1) * V, V) < 1e-5);
    fasa_context_free(a);
    fasa_context_free(b);
    free(all);
    free(one);
}

static void test_f16_cache_close_to_f32(void **state) {
    fasa_model_info in;
    fasa_model_get_info(real, &in);
    float *x = malloc(in.n_vocab * sizeof *x), *y = malloc(in.n_vocab * sizeof *y);
    fasa_context *a = real_context(64, FASA_KV_F32), *b = real_context(64, FASA_KV_F16);
    assert_int_equal(fasa_eval(a, prompt, N_PROMPT, x, false), FASA_OK);
    assert_int_equal(fasa_eval(b, prompt, N_PROMPT, y, false), FASA_OK);
    const double e = rel_err(y, x, in.n_vocab);
    print_message("f16 vs f32 KV cache: relative logit error %.3g\n", e);
    assert_true(e < 1e-2);
    assert_true(e > 0.0); /* the f16 path really rounds */
    fasa_context_free(a);
    fasa_context_free(b);
    free(x);
    free(y);
}

static void test_eval_errors(void **state) {
    fasa_model_info in;
    fasa_model_get_info(real, &in);
    float *x = malloc(in.n_vocab * sizeof *x);
    fasa_context *c = real_context(8, FASA_KV_F32);
    int32_t bad[2] = {5, in.n_vocab};
    assert_int_equal(fasa_eval(c, bad, 2, x, false), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "outside the vocabulary"));
    assert_int_equal(fasa_context_n_past(c), 0);
    bad[1] = -1;
    assert_int_equal(fasa_eval(c, bad, 2, x, false), FASA_E_ARG);
    assert_int_equal(fasa_eval(c, prompt, 6, x, false), FASA_OK);
    assert_int_equal(fasa_eval(c, prompt, 3, x, false), FASA_E_CONTEXT);
    assert_non_null(strstr(fasa_last_error(), "do not fit"));
    assert_int_equal(fasa_context_n_past(c), 6);
    assert_int_equal(fasa_eval(c, prompt, 2, x, false), FASA_OK);
    assert_int_equal(fasa_context_n_past(c), 8);
    assert_int_equal(fasa_context_truncate(c, 9), FASA_E_ARG);
    assert_int_equal(fasa_context_truncate(c, 3), FASA_OK);
    assert_int_equal(fasa_context_n_past(c), 3);
    fasa_context_free(c);
    free(x);
}

/* The whole model on a GPU: where there is none (or no CUDA in the build)
 * the context fails with a clear CUDA error; where there is one, prefill
 * and decode (also after a truncation) give the CPU's logits, fp16 K/V on
 * both sides, sampling on the device draws the CPU sampler's tokens, and a
 * policy that selects through CPU callbacks is refused with the reason. */
/* The GPU's FASA selection against the CPU's: both contexts prefill the same
 * tokens and decode one more under fasa; for the last layer, the label
 * scores of every cached token are recomputed here from the CPU's fp16 keys
 * and its query (the sum over a KV group's query heads of q . K at the label
 * coordinates, the policy's definition), and the GPU's chosen set must be
 * their top N_fac, ties aside: every token one side chose and the other did
 * not scores within float noise (the two backends' K and q differ by it) of
 * the N_fac-th score. */
static int cmp_desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void gpu_selection_matches_cpu(const fasa_model_info *in) {
    enum { N_TOK = 160, FAC = 24, TIP = 8 };
    int32_t tok[N_TOK + 1];
    uint64_t r = 12345;
    for (int i = 0; i <= N_TOK; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((r >> 33) % (uint64_t)in->n_vocab);
    }
    fasa_calib_params cp = fasa_calib_default_params();
    cp.budget = 16;
    cp.n_decode = 8;
    cp.n_threads = 2;
    fasa_calib *cal;
    assert_int_equal(fasa_calibrate(real, tok, 64, &cp, &cal), FASA_OK);
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = 256;
    p.n_threads = 2;
    p.kv_type = FASA_KV_F16;
    fasa_context *c, *g;
    assert_int_equal(fasa_context_init(real, &p, &c), FASA_OK);
    p.device = FASA_DEVICE_CUDA;
    assert_int_equal(fasa_context_init(real, &p, &g), FASA_OK);
    const fasa_attn_params ap = {.method = "fasa", .budget = FAC, .calib = cal, .n_tip = TIP};
    assert_int_equal(fasa_context_set_attention(c, &ap), FASA_OK);
    assert_int_equal(fasa_context_set_attention(g, &ap), FASA_OK);
    assert_int_equal(fasa_eval(c, tok, N_TOK, NULL, false), FASA_OK);
    assert_int_equal(fasa_eval(g, tok, N_TOK, NULL, false), FASA_OK);
    float *lc = malloc(in->n_vocab * sizeof *lc);
    assert_int_equal(fasa_eval(c, &tok[N_TOK], 1, lc, false), FASA_OK);
    assert_int_equal(fasa_eval(g, &tok[N_TOK], 1, NULL, false), FASA_OK);

    const cpu_backend *b = (const cpu_backend *)c->be;
    const label_set *ls = b->policy->labels;
    const int32_t L = in->n_layers - 1, D = in->head_dim, n = N_TOK + 1, group = in->n_heads / in->n_kv_heads;
    assert_false(b->policy->dense_layer[L]);
    int32_t *sel = malloc((size_t)in->n_kv_heads * FAC * sizeof *sel);
    assert_int_equal(backend_cuda_last_selection(g, FAC, sel), FASA_OK);
    float *score = malloc(n * sizeof *score), *sorted = malloc(n * sizeof *sorted), *row = malloc(D * sizeof *row);
    int differ = 0;
    for (int32_t h = 0; h < in->n_kv_heads; h++) {
        const int32_t *co = label_coords(ls, L, h), nl = label_count(ls, L, h);
        float top = 0.f;
        for (int32_t t = 0; t < n; t++) {
            const float *k = kv_row_f32(&b->kv, kv_k_row(&b->kv, L, h, t), row);
            double s = 0;
            for (int32_t qh = h * group; qh < (h + 1) * group; qh++)
                for (int32_t i = 0; i < nl; i++) s += (double)label_mask(ls, L, qh)[i] * b->q[qh * D + co[i]] * k[co[i]];
            score[t] = sorted[t] = (float)s;
            top = fmaxf(top, fabsf((float)s));
        }
        qsort(sorted, n, sizeof *sorted, cmp_desc);
        const float thr = sorted[FAC - 1], tol = 2e-3f * top;
        bool chosen[N_TOK + 1] = {false};
        for (int i = 0; i < FAC; i++) {
            const int32_t t = sel[h * FAC + i];
            if (t < 0 || t >= n || chosen[t]) fail_msg("KV head %d: GPU selection entry %d is %d (repeated or out of range)", h, i, t);
            chosen[t] = true;
            if (score[t] < thr - tol)
                fail_msg("KV head %d: the GPU chose token %d scoring %g, below the CPU's %d-th score %g", h, t,
                         score[t], FAC, thr);
        }
        for (int32_t t = 0; t < n; t++) {
            if (!chosen[t] && score[t] > thr + tol)
                fail_msg("KV head %d: the GPU left out token %d scoring %g, above the CPU's %d-th score %g", h, t,
                         score[t], FAC, thr);
            differ += chosen[t] != (score[t] >= thr);
        }
    }
    print_message("GPU FASA selection (layer %d, %d KV heads, N_fac %d): %d token(s) differ from the CPU's top-%d, all "
                  "within float noise of its threshold\n", L, in->n_kv_heads, FAC, differ, FAC);
    free(score), free(sorted), free(row), free(sel), free(lc);
    fasa_context_free(c);
    fasa_context_free(g);
    fasa_calib_free(cal);
}

/* The first tokens of a sequence on the GPU against the CPU: one token (a
 * decode step over a cache of one), then a second, and a two-token prompt
 * with every position's logits (attention over one and two cached tokens). */
static void gpu_first_tokens_match_cpu(const fasa_model_info *in) {
    const int64_t V = in->n_vocab;
    float *x = malloc(2 * V * sizeof *x), *y = malloc(2 * V * sizeof *y);
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = 16;
    p.n_threads = 2;
    p.kv_type = FASA_KV_F16;
    fasa_context *c = NULL, *g = NULL;
    assert_int_equal(fasa_context_init(real, &p, &c), FASA_OK);
    p.device = FASA_DEVICE_CUDA;
    assert_int_equal(fasa_context_init(real, &p, &g), FASA_OK);
    double e[3];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fasa_eval(c, &prompt[i], 1, x, false), FASA_OK);
        assert_int_equal(fasa_eval(g, &prompt[i], 1, y, false), FASA_OK);
        e[i] = rel_err(y, x, V);
    }
    assert_int_equal(fasa_context_truncate(c, 0), FASA_OK);
    assert_int_equal(fasa_context_truncate(g, 0), FASA_OK);
    assert_int_equal(fasa_eval(c, prompt, 2, x, true), FASA_OK);
    assert_int_equal(fasa_eval(g, prompt, 2, y, true), FASA_OK);
    e[2] = fmax(rel_err(y, x, V), rel_err(y + V, x + V, V));
    print_message("GPU first tokens: decode over 1 cached token %.3g, over 2 %.3g; a 2-token prompt %.3g\n", e[0], e[1],
                  e[2]);
    for (int i = 0; i < 3; i++)
        if (e[i] > 1e-3) fail_msg("GPU vs CPU on the first tokens: case %d, relative error %.3g", i, e[i]);
    fasa_context_free(c);
    fasa_context_free(g);
    free(x);
    free(y);
}

/* A prompt chunk on the GPU's tensor cores (gemm.cuh, flash.cuh) against
 * the CPU: 300 pseudo-random tokens in chunks of 128 (every chunk takes the
 * fp16 products), logits of every position, then a decode step; once with
 * the flash attention kernel and once with the per-token attention a chunk
 * deep in a long cache takes (FASA_CUDA_FLASH=0); and in chunks of 16, which
 * take the block-format products with f32 activations. The tensor-core
 * products round weights and activations to fp16 (2^-12 relative each):
 * on an H200 that put the worst position's logits 3.4e-3 from the CPU's
 * (position 0, whose activations are the model's largest) and the mean
 * 1.1e-3; the chunks of 16 stay within 1e-3. */
static void gpu_chunks_match_cpu(const fasa_model_info *in) {
    enum { N = 300 };
    const int64_t V = in->n_vocab;
    int32_t *tok = malloc(N * sizeof *tok);
    for (int i = 0; i < N; i++) tok[i] = 100 + (int32_t)(((int64_t)i * 7919) % (V - 200));
    float *x = malloc((size_t)N * V * sizeof *x), *y = malloc((size_t)N * V * sizeof *y);
    float *z = malloc(V * sizeof *z);
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = N + 8;
    p.n_threads = 2;
    p.kv_type = FASA_KV_F16;
    p.n_batch = 128;
    fasa_context *c = NULL;
    assert_int_equal(fasa_context_init(real, &p, &c), FASA_OK);
    assert_int_equal(fasa_eval(c, tok, N, x, true), FASA_OK);
    for (int cfg = 2; cfg >= 0; cfg--) { /* 2: flash, 1: token by token, 0: chunks of 16 (block-format products) */
        const int flash = cfg == 2;
        if (cfg == 1) setenv("FASA_CUDA_FLASH", "0", 1);
        p.n_batch = cfg ? 128 : 16;
        p.device = FASA_DEVICE_CUDA;
        fasa_context *g = NULL;
        assert_int_equal(fasa_context_init(real, &p, &g), FASA_OK);
        unsetenv("FASA_CUDA_FLASH");
        assert_int_equal(fasa_eval(g, tok, N, y, true), FASA_OK);
        double worst = 0, sum = 0;
        int at = 0;
        for (int t = 0; t < N; t++) {
            const double e = rel_err(y + (int64_t)t * V, x + (int64_t)t * V, V);
            sum += e;
            if (e > worst) worst = e, at = t;
        }
        print_message("GPU prefill of %d tokens in chunks of %d (%s): relative logit error worst %.3g (position %d), "
                      "mean %.3g\n", N, p.n_batch,
                      cfg == 2 ? "flash attention" : cfg ? "per-token attention" : "block-format products", worst, at,
                      sum / N);
        const double tol = cfg ? 5e-3 : 1e-3;
        if (worst > tol || sum / N > tol / 2)
            fail_msg("GPU vs CPU prefill: relative logit error %.3g at position %d (mean %.3g), over %.3g", worst, at,
                     sum / N, tol);
        fasa_context *d = NULL;
        if (flash) { /* the decode step after it */
            p.device = FASA_DEVICE_CPU;
            assert_int_equal(fasa_context_init(real, &p, &d), FASA_OK);
            assert_int_equal(fasa_eval(d, tok, N, NULL, false), FASA_OK);
            assert_int_equal(fasa_eval(d, &tok[5], 1, z, false), FASA_OK);
            assert_int_equal(fasa_eval(g, &tok[5], 1, y, false), FASA_OK);
            const double e = rel_err(y, z, V);
            if (e > 1e-3) fail_msg("decode after a GPU prefill: relative error %.3g", e);
            fasa_context_free(d);
        }
        fasa_context_free(g);
    }
    fasa_context_free(c);
    free(tok);
    free(x);
    free(y);
    free(z);
}

static void test_gpu_device(void **state) {
    fasa_model_info in;
    fasa_model_get_info(real, &in);
    fasa_context_params p = fasa_context_default_params();
    p.n_ctx = 64;
    p.n_threads = 2;
    p.kv_type = FASA_KV_F16;
    fasa_context *g = NULL;
    p.device = (fasa_device)7;
    assert_int_equal(fasa_context_init(real, &p, &g), FASA_E_ARG);
    assert_non_null(strstr(fasa_last_error(), "unknown device"));
    p.device = FASA_DEVICE_CUDA;
    const fasa_status st = fasa_context_init(real, &p, &g);
    if (st != FASA_OK) {
        assert_int_equal(st, FASA_E_UNSUPPORTED);
        if (!strstr(fasa_last_error(), "CUDA")) fail_msg("no-GPU message lacks 'CUDA': %s", fasa_last_error());
        assert_null(g);
        print_message("no usable GPU: %s\n", fasa_last_error());
        return;
    }
    fasa_context *c = real_context(64, FASA_KV_F16);
    float *x = malloc(in.n_vocab * sizeof *x), *y = malloc(in.n_vocab * sizeof *y);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(fasa_eval(c, prompt, 12, x, false), FASA_OK);
        assert_int_equal(fasa_eval(g, prompt, 12, y, false), FASA_OK);
        const double ep = rel_err(y, x, in.n_vocab);
        if (ep > 1e-3) fail_msg("round %d: GPU vs CPU prefill relative error %.3g", round, ep);
        for (int t = 12; t < N_PROMPT; t++) {
            assert_int_equal(fasa_eval(c, &prompt[t], 1, x, false), FASA_OK);
            assert_int_equal(fasa_eval(g, &prompt[t], 1, y, false), FASA_OK);
            const double e = rel_err(y, x, in.n_vocab);
            if (e > 1e-3) fail_msg("round %d, position %d: GPU vs CPU decode relative error %.3g", round, t, e);
        }
        assert_int_equal(fasa_context_truncate(c, 0), FASA_OK);
        assert_int_equal(fasa_context_truncate(g, 0), FASA_OK);
    }
    /* Sampling where the logits are: the same draws as on the CPU. */
    const fasa_sampler_params sp = {0.8f, 0.9f, 40, 7};
    fasa_sampler *sc, *sg;
    assert_int_equal(fasa_sampler_init(&sp, in.n_vocab, &sc), FASA_OK);
    assert_int_equal(fasa_sampler_init(&sp, in.n_vocab, &sg), FASA_OK);
    assert_int_equal(fasa_eval(c, prompt, 12, x, false), FASA_OK);
    assert_int_equal(fasa_eval(g, prompt, 12, y, false), FASA_OK);
    int32_t tc = fasa_sampler_sample(sc, x), tg = fasa_sampler_sample(sg, y);
    for (int t = 0; t < 16; t++) {
        assert_int_equal(tg, tc);
        assert_int_equal(fasa_decode_sample(c, tc, sc, &tc), FASA_OK);
        assert_int_equal(fasa_decode_sample(g, tg, sg, &tg), FASA_OK);
    }
    fasa_sampler_free(sc);
    fasa_sampler_free(sg);
    const fasa_attn_params stream = {.method = "stream", .budget = 16};
    assert_int_equal(fasa_context_set_attention(g, &stream), FASA_E_UNSUPPORTED);
    assert_non_null(strstr(fasa_last_error(), "CPU cache"));
    fasa_context_free(c);
    fasa_context_free(g);
    free(x);
    free(y);
    gpu_selection_matches_cpu(&in);
    gpu_first_tokens_match_cpu(&in);
    gpu_chunks_match_cpu(&in);
}

/* Truncating and re-evaluating gives the same logits as a fresh run. */
static void test_truncate_recompute(void **state) {
    fasa_model_info in;
    fasa_model_get_info(real, &in);
    float *x = malloc(in.n_vocab * sizeof *x), *y = malloc(in.n_vocab * sizeof *y);
    fasa_context *c = real_context(64, FASA_KV_F32);
    assert_int_equal(fasa_eval(c, prompt, 12, x, false), FASA_OK);
    assert_int_equal(fasa_context_truncate(c, 5), FASA_OK);
    assert_int_equal(fasa_eval(c, prompt + 5, 7, y, false), FASA_OK);
    assert_true(rel_err(y, x, in.n_vocab) < 1e-5);
    fasa_context_free(c);
    free(x);
    free(y);
}

/* ---- RoPE and GQA -------------------------------------------------------- */

static void test_rope_pairs(void **state) {
    int32_t a, b;
    fasa_rope_pair(FASA_ROPE_INTERLEAVED, 64, 5, &a, &b);
    assert_int_equal(a, 10);
    assert_int_equal(b, 11);
    fasa_rope_pair(FASA_ROPE_HALF, 64, 5, &a, &b);
    assert_int_equal(a, 5);
    assert_int_equal(b, 37);
    /* Every coordinate belongs to exactly one pair under both layouts. */
    for (int layout = 0; layout < 2; layout++) {
        int seen[64] = {0};
        for (int i = 0; i < 32; i++) {
            fasa_rope_pair((fasa_rope_layout)layout, 64, i, &a, &b);
            seen[a]++, seen[b]++;
        }
        for (int i = 0; i < 64; i++) assert_int_equal(seen[i], 1);
    }
}

/* Rotating q to position p + s and k to position j + s leaves every pair's
 * dot product unchanged: RoPE encodes relative position per frequency. */
static void test_rope_shift_invariance(void **state) {
    enum { D = 16, H = D / 2 };
    float inv[H];
    for (int i = 0; i < H; i++) inv[i] = (float)pow(10000.0, -2.0 * i / D);
    for (int layout = 0; layout < 2; layout++) {
        float q0[D], k0[D];
        for (int i = 0; i < D; i++) q0[i] = frand(), k0[i] = frand();
        double dots[2][H];
        for (int s = 0; s < 2; s++) {
            const int shift = s ? 1000 : 0, pq = 37 + shift, pk = 5 + shift;
            float q[D], k[D], cq[H], sq[H], ck[H], sk[H];
            memcpy(q, q0, sizeof q);
            memcpy(k, k0, sizeof k);
            for (int i = 0; i < H; i++) {
                cq[i] = (float)cos((double)pq * inv[i]), sq[i] = (float)sin((double)pq * inv[i]);
                ck[i] = (float)cos((double)pk * inv[i]), sk[i] = (float)sin((double)pk * inv[i]);
            }
            fasa_rope_apply(q, 1, D, (fasa_rope_layout)layout, cq, sq);
            fasa_rope_apply(k, 1, D, (fasa_rope_layout)layout, ck, sk);
            for (int i = 0; i < H; i++) {
                int32_t a, b;
                fasa_rope_pair((fasa_rope_layout)layout, D, i, &a, &b);
                dots[s][i] = (double)q[a] * k[a] + (double)q[b] * k[b];
            }
            /* A rotation keeps each pair's length. */
            for (int i = 0; i < H; i++) {
                int32_t a, b;
                fasa_rope_pair((fasa_rope_layout)layout, D, i, &a, &b);
                assert_true(fabs(hypot(q[a], q[b]) - hypot(q0[a], q0[b])) < 1e-5);
            }
        }
        for (int i = 0; i < H; i++) assert_true(fabs(dots[0][i] - dots[1][i]) < 1e-4);
    }
}

/* attn_dense_group against a float64 evaluation that maps query head qh of
 * the layer to KV head qh / group explicitly: head dims that take the vector
 * path in whole 64-column blocks (128), 64 plus 8 (72), 8 alone, and one that
 * is not a multiple of 8 (20); 21 keys (two whole tiles of 8 and a short
 * one) and a gathered subset. */
static void test_gqa_attention(void **state) {
    enum { NKV = 3, T = 21, MAX_D = 128, MAX_GROUP = 4 };
    const int dims[] = {8, 20, 72, 128};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        const int D = dims[di];
        for (int group = 1; group <= MAX_GROUP; group++) {
            fasa_kv kv;
            assert_int_equal(kv_init(&kv, 1, NKV, D, T, FASA_KV_F32), FASA_OK);
            float kr[NKV * MAX_D], vr[NKV * MAX_D];
            for (int t = 0; t < T; t++) {
                for (int i = 0; i < NKV * D; i++) kr[i] = frand(), vr[i] = frand();
                kv_store(&kv, 0, t, kr, vr);
            }
            kv.n_tokens = T;
            const int NH = NKV * group;
            float q[NKV * MAX_GROUP * MAX_D], out[NKV * MAX_GROUP * MAX_D];
            for (int i = 0; i < NH * D; i++) q[i] = 3 * frand() / sqrtf((float)D / 8);
            int32_t idx[] = {0, 4, 5, 9, 20};
            const int n_idx = sizeof idx / sizeof idx[0];
            float scratch[attn_dense_scratch(MAX_GROUP, T, MAX_D)];
            for (int use_idx = 0; use_idx < 2; use_idx++) {
                const int n = use_idx ? n_idx : T;
                for (int h = 0; h < NKV; h++)
                    attn_dense_group(&kv, 0, h, q + h * group * D, group, use_idx ? idx : NULL, n, 0.5f,
                                     out + h * group * D, scratch);
                for (int qh = 0; qh < NH; qh++) {
                    const int kh = qh / group;
                    double w[T], mx = -INFINITY, sum = 0, ref[MAX_D] = {0};
                    for (int j = 0; j < n; j++) {
                        const float *k = kv_k_row(&kv, 0, kh, use_idx ? idx[j] : j);
                        double s = 0;
                        for (int i = 0; i < D; i++) s += (double)q[qh * D + i] * k[i];
                        w[j] = 0.5 * s;
                        mx = fmax(mx, w[j]);
                    }
                    for (int j = 0; j < n; j++) sum += (w[j] = exp(w[j] - mx));
                    for (int j = 0; j < n; j++) {
                        const float *v = kv_v_row(&kv, 0, kh, use_idx ? idx[j] : j);
                        for (int i = 0; i < D; i++) ref[i] += w[j] / sum * v[i];
                    }
                    for (int i = 0; i < D; i++)
                        if (fabs(out[qh * D + i] - ref[i]) > 1e-5)
                            fail_msg("dim %d group %d head %d dim %d: %.7f vs %.7f", D, group, qh, i,
                                     out[qh * D + i], ref[i]);
                }
            }
            kv_free(&kv);
        }
    }
}

static int setup(void **state) {
    /* The build folder, or /tmp where the binary runs away from it (carried to a GPU machine). */
    const char *dir = access(FASA_BUILD_DIR, W_OK) == 0 ? FASA_BUILD_DIR : "/tmp";
    snprintf(tiny_path, sizeof tiny_path, "%s/tiny_model_%d.gguf", dir, (int)getpid());
    if (fasa_model_load(FASA_TEST_MODEL, &real) != FASA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", FASA_TEST_MODEL, fasa_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    fasa_model_free(real);
    unlink(tiny_path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_loads_and_runs),   cmocka_unit_test(test_tiny_bad_variants),
        cmocka_unit_test(test_prefill_equals_decode), cmocka_unit_test(test_f16_cache_close_to_f32),
        cmocka_unit_test(test_eval_errors),           cmocka_unit_test(test_truncate_recompute),
        cmocka_unit_test(test_rope_pairs),            cmocka_unit_test(test_rope_shift_invariance),
        cmocka_unit_test(test_gqa_attention),         cmocka_unit_test(test_gpu_device),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
