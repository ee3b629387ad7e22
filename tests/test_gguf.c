/* GGUF reader tests: facts of the real default model, a synthetic file with
 * every value type, and hostile input (each must fail with a message that
 * names the problem, never crash). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "error.h"
#include "gguf.h"
#include "gguf_builder.h"
#include "quant.h"

#ifndef FASA_BUILD_DIR
#define FASA_BUILD_DIR "."
#endif

/* ---- helpers ----------------------------------------------------------- */

/* Parses a copy of exactly `len` bytes, so that AddressSanitizer catches any
 * read past the end. */
static fasa_status open_copy(const void *data, size_t len, uint8_t **copy, gguf_file **g) {
    *copy = malloc(len ? len : 1);
    assert_non_null(*copy);
    if (len) memcpy(*copy, data, len);
    fasa_clear_error();
    return fasa_gguf_open_buffer(*copy, len, g);
}

static void expect_error(fasa_status got, fasa_status want, const char *substr) {
    if (got != want || !strstr(fasa_last_error(), substr))
        print_error("expected status %d with a message containing \"%s\";\n"
                    "got status %d: %s\n",
                    want, substr, got, fasa_last_error());
    assert_int_equal(got, want);
    assert_non_null(strstr(fasa_last_error(), substr));
}

static void expect_bad(const gguf_builder *b, const char *substr) {
    uint8_t *copy;
    gguf_file *g = NULL;
    fasa_status st = open_copy(b->data, b->len, &copy, &g);
    expect_error(st, FASA_E_FORMAT, substr);
    assert_null(g);
    free(copy);
}

static gguf_file *open_ok(const gguf_builder *b, uint8_t **copy) {
    gguf_file *g = NULL;
    fasa_status st = open_copy(b->data, b->len, copy, &g);
    if (st) print_error("unexpected failure: %s\n", fasa_last_error());
    assert_int_equal(st, FASA_OK);
    assert_non_null(g);
    return g;
}

static const gguf_kv *find_kv(const gguf_file *g, const char *key) {
    const gguf_kv *kv = fasa_gguf_find_kv(g, key);
    if (!kv) print_error("key %s not found\n", key);
    assert_non_null(kv);
    return kv;
}

static void assert_str_eq(gguf_str s, const char *want) {
    if (!fasa_gguf_str_eq(s, want)) print_error("got '%.*s', expected '%s'\n", (int)s.len, s.data, want);
    assert_true(fasa_gguf_str_eq(s, want));
}

/* ---- the synthetic file ------------------------------------------------ */

#define SYN_ALIGN 64
#define SYN_N_KV 23
#define SYN_N_TENSORS 3
#define SYN_IQ2_XXS 16 /* a ggml type quant.h does not compute with */

/* Every value type, arrays of scalars and of strings, a non-default
 * alignment, and three tensors: f32 [4 x 3] at 0, q8_0 [64 x 2] at 64 (ending
 * exactly at the end of the file) and an iq2_xxs one at 192. */
static void build_synthetic(gguf_builder *b, uint32_t version) {
    gb_header(b, version, SYN_N_TENSORS, SYN_N_KV);
    gb_key(b, "t.u8", GGUF_TYPE_UINT8), gb_u8(b, 200);
    gb_key(b, "t.i8", GGUF_TYPE_INT8), gb_u8(b, (uint8_t)-100);
    gb_key(b, "t.u16", GGUF_TYPE_UINT16), gb_u16(b, 60000);
    gb_key(b, "t.i16", GGUF_TYPE_INT16), gb_u16(b, (uint16_t)-30000);
    gb_kv_u32(b, "t.u32", 4000000000u);
    gb_key(b, "t.i32", GGUF_TYPE_INT32), gb_u32(b, (uint32_t)-2000000000);
    gb_key(b, "t.i32_pos", GGUF_TYPE_INT32), gb_u32(b, 123);
    gb_key(b, "t.f32", GGUF_TYPE_FLOAT32), gb_f32(b, 1.5f);
    gb_key(b, "t.bool", GGUF_TYPE_BOOL), gb_u8(b, 1);
    gb_kv_str(b, "t.str", "hello, gguf");
    gb_kv_str(b, "t.str_empty", "");
    gb_key(b, "t.u64", GGUF_TYPE_UINT64), gb_u64(b, 5000000000ull);
    gb_key(b, "t.u64_max", GGUF_TYPE_UINT64), gb_u64(b, UINT64_MAX);
    gb_key(b, "t.i64", GGUF_TYPE_INT64), gb_u64(b, (uint64_t)INT64_C(-5000000000000));
    gb_key(b, "t.f64", GGUF_TYPE_FLOAT64), gb_f64(b, 0.25);
    gb_key(b, "t.f64_big", GGUF_TYPE_FLOAT64), gb_f64(b, 1e300);
    gb_arr(b, "t.arr_u8", GGUF_TYPE_UINT8, 3), gb_u8(b, 1), gb_u8(b, 2), gb_u8(b, 3);
    gb_arr(b, "t.arr_i32", GGUF_TYPE_INT32, 2), gb_u32(b, (uint32_t)-1), gb_u32(b, 7);
    gb_arr(b, "t.arr_f64", GGUF_TYPE_FLOAT64, 2), gb_f64(b, 0.5), gb_f64(b, -2.0);
    gb_arr(b, "t.arr_str", GGUF_TYPE_STRING, 3);
    gb_str(b, "a"), gb_str(b, ""), gb_str(b, "<|im_start|>");
    gb_arr(b, "t.arr_empty", GGUF_TYPE_UINT64, 0);
    gb_arr(b, "t.arr_bool", GGUF_TYPE_BOOL, 2), gb_u8(b, 0), gb_u8(b, 1);
    gb_kv_u32(b, "general.alignment", SYN_ALIGN);

    gb_tensor_info(b, "w.f32", 2, (uint64_t[]){4, 3}, FASA_TYPE_F32, 0);
    gb_tensor_info(b, "w.q8", 2, (uint64_t[]){64, 2}, FASA_TYPE_Q8_0, 64);
    gb_tensor_info(b, "w.iq2", 1, (uint64_t[]){256}, SYN_IQ2_XXS, 192);
    gb_pad(b, SYN_ALIGN);
    for (int i = 0; i < 12; i++) gb_f32(b, (float)i);
    gb_pad(b, SYN_ALIGN);
    for (int i = 0; i < 2 * 2 * 34; i++) gb_u8(b, (uint8_t)i);
}

static void test_synthetic_round_trip(void **state) {
    (void)state;
    for (uint32_t version = 2; version <= 3; version++) {
        gguf_builder b = {0};
        build_synthetic(&b, version);
        uint8_t *copy;
        gguf_file *g = open_ok(&b, &copy);

        assert_int_equal(g->version, version);
        assert_int_equal(g->n_kv, SYN_N_KV);
        assert_int_equal(g->n_tensors, SYN_N_TENSORS);
        assert_int_equal(g->alignment, SYN_ALIGN);
        assert_false(g->owns_mapping);
        assert_ptr_equal(g->base, copy);
        assert_int_equal(g->size, b.len);

        assert_int_equal(find_kv(g, "t.u8")->type, GGUF_TYPE_UINT8);
        assert_int_equal(find_kv(g, "t.u8")->v.u64, 200);
        assert_int_equal(find_kv(g, "t.i8")->v.i64, -100);
        assert_int_equal(find_kv(g, "t.u16")->v.u64, 60000);
        assert_int_equal(find_kv(g, "t.i16")->v.i64, -30000);
        assert_int_equal(find_kv(g, "t.u32")->v.u64, 4000000000u);
        assert_int_equal(find_kv(g, "t.i32")->type, GGUF_TYPE_INT32);
        assert_true(find_kv(g, "t.i32")->v.i64 == -2000000000);
        assert_true(find_kv(g, "t.f32")->v.f64 == 1.5);
        assert_int_equal(find_kv(g, "t.bool")->type, GGUF_TYPE_BOOL);
        assert_true(find_kv(g, "t.bool")->v.b);
        assert_str_eq(find_kv(g, "t.str")->v.str, "hello, gguf");
        assert_int_equal(find_kv(g, "t.str_empty")->v.str.len, 0);
        assert_true(find_kv(g, "t.u64")->v.u64 == 5000000000ull);
        assert_true(find_kv(g, "t.i64")->v.i64 == INT64_C(-5000000000000));
        assert_true(find_kv(g, "t.f64")->v.f64 == 0.25);

        const gguf_kv *kv = find_kv(g, "t.arr_u8");
        assert_int_equal(kv->type, GGUF_TYPE_ARRAY);
        assert_int_equal(kv->arr_type, GGUF_TYPE_UINT8);
        assert_int_equal(kv->arr_len, 3);
        assert_memory_equal(kv->arr_data, "\x01\x02\x03", 3);
        assert_null(kv->arr_str);

        kv = find_kv(g, "t.arr_i32");
        int32_t i32[2];
        memcpy(i32, kv->arr_data, sizeof i32);
        assert_int_equal(kv->arr_len, 2);
        assert_int_equal(i32[0], -1);
        assert_int_equal(i32[1], 7);

        kv = find_kv(g, "t.arr_f64");
        double f64[2];
        memcpy(f64, kv->arr_data, sizeof f64);
        assert_true(f64[0] == 0.5 && f64[1] == -2.0);

        kv = find_kv(g, "t.arr_str");
        assert_int_equal(kv->arr_type, GGUF_TYPE_STRING);
        assert_int_equal(kv->arr_len, 3);
        assert_non_null(kv->arr_str);
        assert_str_eq(kv->arr_str[0], "a");
        assert_str_eq(kv->arr_str[1], "");
        assert_str_eq(kv->arr_str[2], "<|im_start|>");

        assert_int_equal(find_kv(g, "t.arr_empty")->arr_len, 0);
        assert_int_equal(find_kv(g, "t.arr_empty")->arr_type, GGUF_TYPE_UINT64);
        assert_memory_equal(find_kv(g, "t.arr_bool")->arr_data, "\x00\x01", 2);

        /* The data section starts at the first multiple of the alignment
         * after the tensor infos; the q8_0 tensor ends at the end of file. */
        assert_int_equal(g->data_offset % SYN_ALIGN, 0);
        assert_int_equal(g->data_offset + 64 + 2 * 2 * 34, b.len);

        const gguf_tensor *t = fasa_gguf_find_tensor(g, "w.f32");
        assert_non_null(t);
        assert_str_eq(t->name, "w.f32");
        assert_int_equal(t->n_dims, 2);
        assert_int_equal(t->ne[0], 4);
        assert_int_equal(t->ne[1], 3);
        assert_int_equal(t->ne[2], 1);
        assert_int_equal(t->ne[3], 1);
        assert_int_equal(t->type, FASA_TYPE_F32);
        assert_int_equal(t->n_bytes, 48);
        assert_ptr_equal(t->data, copy + g->data_offset);
        float f[12];
        memcpy(f, t->data, sizeof f);
        for (int i = 0; i < 12; i++) assert_true(f[i] == (float)i);

        t = fasa_gguf_find_tensor(g, "w.q8");
        assert_non_null(t);
        assert_int_equal(t->type, FASA_TYPE_Q8_0);
        assert_int_equal(t->offset, 64);
        assert_int_equal(t->n_bytes, 2 * 2 * 34);
        assert_ptr_equal(t->data, copy + g->data_offset + 64);
        assert_int_equal(((const uint8_t *)t->data)[135], 135);

        /* Known to ggml, unknown to quant.h: left for the model loader. */
        t = fasa_gguf_find_tensor(g, "w.iq2");
        assert_non_null(t);
        assert_int_equal(t->type, SYN_IQ2_XXS);
        assert_int_equal(t->n_bytes, 0);
        assert_null(t->data);

        assert_ptr_equal(&g->tensors[1], fasa_gguf_find_tensor(g, "w.q8"));
        assert_null(fasa_gguf_find_tensor(g, "w"));
        assert_null(fasa_gguf_find_tensor(g, "w.q8x"));
        assert_null(fasa_gguf_find_kv(g, "t.u"));
        assert_null(fasa_gguf_find_kv(g, "t.missing"));

        fasa_gguf_close(g);
        free(copy);
        gb_free(&b);
    }
}

/* Every proper prefix of a valid file is a truncated file. */
static void test_synthetic_truncated_everywhere(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_synthetic(&b, 3);
    for (size_t cut = 0; cut < b.len; cut++) {
        uint8_t *copy;
        gguf_file *g = NULL;
        fasa_status st = open_copy(b.data, cut, &copy, &g);
        if (st != FASA_E_FORMAT || !strstr(fasa_last_error(), "end of the file"))
            print_error("cut at %zu of %zu\n", cut, b.len);
        expect_error(st, FASA_E_FORMAT, "end of the file");
        assert_null(g);
        free(copy);
    }
    gb_free(&b);
}

/* ---- the real model ---------------------------------------------------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static gguf_file *open_model(void) {
    gguf_file *g = NULL;
    fasa_status st = fasa_gguf_open(FASA_TEST_MODEL, &g);
    if (st) print_error("%s (fetch it with scripts/fetch-model.sh)\n", fasa_last_error());
    assert_int_equal(st, FASA_OK);
    return g;
}

static void test_model_facts(void **state) {
    (void)state;
    gguf_file *g = open_model();
    assert_true(g->owns_mapping);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_tensors, 272);
    assert_int_equal(g->n_kv, 33);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(g->data_offset, 1785664); /* as gguf-py reports it */

    gguf_str s;
    assert_int_equal(fasa_gguf_get_str(g, "general.architecture", &s), FASA_OK);
    assert_str_eq(s, "llama");
    uint32_t u;
    assert_int_equal(fasa_gguf_get_u32(g, "llama.block_count", &u), FASA_OK);
    assert_int_equal(u, 30);
    assert_int_equal(fasa_gguf_get_u32(g, "llama.embedding_length", &u), FASA_OK);
    assert_int_equal(u, 576);
    assert_int_equal(fasa_gguf_get_u32(g, "llama.attention.head_count", &u), FASA_OK);
    assert_int_equal(u, 9);
    assert_int_equal(fasa_gguf_get_u32(g, "llama.attention.head_count_kv", &u), FASA_OK);
    assert_int_equal(u, 3);
    float f;
    assert_int_equal(fasa_gguf_get_f32(g, "llama.rope.freq_base", &f), FASA_OK);
    assert_true(f == 100000.0f);

    const gguf_kv *tokens;
    assert_int_equal(fasa_gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &tokens), FASA_OK);
    assert_int_equal(tokens->arr_len, 49152);
    assert_str_eq(tokens->arr_str[1], "<|im_start|>");
    const gguf_kv *merges;
    assert_int_equal(fasa_gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &merges), FASA_OK);
    assert_int_equal(merges->arr_len, 48900);
    const gguf_kv *types;
    assert_int_equal(fasa_gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, &types),
                     FASA_OK);
    assert_int_equal(types->arr_len, 49152);

    const gguf_tensor *t = fasa_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, FASA_TYPE_Q8_0);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 49152);
    assert_int_equal(t->n_bytes, (uint64_t)49152 * (576 / 32) * 34);
    assert_ptr_equal(t->data, g->base + 1785664);

    t = fasa_gguf_find_tensor(g, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_int_equal(t->type, FASA_TYPE_Q4_1);
    assert_int_equal(t->ne[0], 576);
    assert_int_equal(t->ne[1], 576);
    assert_int_equal(t->n_bytes, 576 * (576 / 32) * 20);
    assert_ptr_equal(t->data, g->base + 33806656);

    /* Every tensor of this model has a type quant.h runs, and lies inside the mapping. */
    uint64_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *ti = &g->tensors[i];
        assert_non_null(ti->data);
        assert_true((const uint8_t *)ti->data >= g->base + g->data_offset);
        assert_true((const uint8_t *)ti->data + ti->n_bytes <= g->base + g->size);
        char name[128];
        assert_true(ti->name.len < sizeof name);
        memcpy(name, ti->name.data, ti->name.len);
        name[ti->name.len] = '\0';
        assert_ptr_equal(fasa_gguf_find_tensor(g, name), ti);
        total += ti->n_bytes;
    }
    assert_true(total > 90000000 && total <= g->size - g->data_offset);
    fasa_gguf_close(g);
}

/* String-array views are built once at open, so opening is cheap. The bound
 * is loose (the target is well under 50 ms) so that sanitizer builds and busy
 * machines pass; it still catches accidental quadratic work. */
static void test_model_opens_fast(void **state) {
    (void)state;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_ms();
        gguf_file *g = open_model();
        fasa_gguf_close(g);
        double dt = now_ms() - t0;
        if (dt < best) best = dt;
    }
    print_message("gguf_open + gguf_close of the default model: %.2f ms (best of 5)\n", best);
    assert_true(best < 500.0);
}

/* A prefix of the real file: cuts across the header, the metadata (about
 * 1.7 MB, mostly the vocabulary) and the tensor infos, each read as a buffer
 * of exactly that size. */
static void test_model_truncated(void **state) {
    (void)state;
    enum { prefix = 2 << 20, n_cuts = 300 };
    FILE *fp = fopen(FASA_TEST_MODEL, "rb");
    assert_non_null(fp);
    uint8_t *head = malloc(prefix);
    assert_non_null(head);
    assert_int_equal(fread(head, 1, prefix, fp), prefix);
    fclose(fp);

    size_t cuts[n_cuts + 6];
    size_t n = 0;
    for (size_t i = 0; i < n_cuts; i++) cuts[n++] = i * (size_t)prefix / n_cuts + i % 7;
    /* around the end of the tensor infos and the start of the data section */
    const size_t data_offset = 1785664;
    const size_t edges[] = {
        data_offset - 33, data_offset - 1, data_offset, data_offset + 1, 23, 24};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) cuts[n++] = edges[i];

    for (size_t i = 0; i < n; i++) {
        uint8_t *copy;
        gguf_file *g = NULL;
        fasa_status st = open_copy(head, cuts[i], &copy, &g);
        if (st != FASA_E_FORMAT || !strstr(fasa_last_error(), "end of the file"))
            print_error("cut at %zu\n", cuts[i]);
        expect_error(st, FASA_E_FORMAT, "end of the file");
        assert_null(g);
        free(copy);
    }
    free(head);
}

/* ---- hostile headers and metadata -------------------------------------- */

static void test_bad_magic(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_raw(&b, "GGUX", 4), gb_u32(&b, 3), gb_u64(&b, 0), gb_u64(&b, 0);
    expect_bad(&b, "not a GGUF file: it starts with bytes 47 47 55 58");
    gb_free(&b);
}

static void test_bad_version(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 1, 0, 0);
    expect_bad(&b, "GGUF version 1 is not supported");
    gb_free(&b);
    gb_header(&b, 99, 0, 0);
    expect_bad(&b, "GGUF version 99 is not supported (this build reads versions 2 and 3)");
    gb_free(&b);
    gb_header(&b, 0, 0, 0);
    expect_bad(&b, "GGUF version 0 is not supported");
    gb_free(&b);
}

static void test_big_endian(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, __builtin_bswap32(3), 0, 0);
    expect_bad(&b, "big-endian GGUF not supported");
    gb_free(&b);
    gb_raw(&b, "FUGG", 4), gb_u32(&b, 3), gb_u64(&b, 0), gb_u64(&b, 0);
    expect_bad(&b, "big-endian GGUF not supported");
    gb_free(&b);
}

static void test_huge_counts(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, UINT64_C(1) << 62, 0);
    gb_zeros(&b, 64);
    expect_bad(&b, "tensor count 4611686018427387904 at byte 8 cannot fit");
    gb_free(&b);
    gb_header(&b, 3, 0, UINT64_C(1) << 62);
    gb_zeros(&b, 64);
    expect_bad(&b, "kv count 4611686018427387904 at byte 16 cannot fit");
    gb_free(&b);
    gb_header(&b, 3, UINT64_MAX, UINT64_MAX);
    expect_bad(&b, "cannot fit");
    gb_free(&b);
}

static void test_string_past_end(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 1000), gb_zeros(&b, 16);
    expect_bad(&b, "kv 0: key at byte 24 has length 1000, which runs past the end of the file");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k", GGUF_TYPE_STRING), gb_u64(&b, UINT64_MAX), gb_raw(&b, "abc", 3);
    expect_bad(&b, "kv 0 ('k'): string value at byte 37 has length 18446744073709551615");
    gb_free(&b);

    /* an element of a string array */
    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "k", GGUF_TYPE_STRING, 2), gb_str(&b, "ok"), gb_u64(&b, 5), gb_raw(&b, "abc", 3);
    expect_bad(&b,
               "kv 0 ('k'): string 1 at byte 59 has length 5, which runs past the end of the file");
    gb_free(&b);
}

static void test_huge_array(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "a", GGUF_TYPE_UINT32, UINT64_C(1) << 60), gb_zeros(&b, 64);
    expect_bad(&b, "kv 0 ('a'): array length 1152921504606846976 at byte 41 cannot fit");
    gb_free(&b);

    /* each string needs at least its 8-byte length */
    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "a", GGUF_TYPE_STRING, 9), gb_zeros(&b, 64);
    expect_bad(&b, "room for at most 8 string elements");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "a", GGUF_TYPE_FLOAT64, UINT64_MAX / 4), gb_zeros(&b, 64);
    expect_bad(&b, "room for at most 8 float64 elements");
    gb_free(&b);
}

static void test_bad_value_types(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "n", GGUF_TYPE_ARRAY, 1), gb_u32(&b, GGUF_TYPE_UINT32), gb_u64(&b, 1), gb_u32(&b, 7);
    expect_bad(
        &b,
        "kv 0 ('n'): array element type at byte 37 is array, and nested arrays are not supported");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k", 13), gb_u32(&b, 0);
    expect_bad(&b, "kv 0 ('k'): unknown value type 13 at byte 33");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k", UINT32_MAX), gb_u32(&b, 0);
    expect_bad(&b, "unknown value type 4294967295");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_arr(&b, "k", 77, 1), gb_u32(&b, 0);
    expect_bad(&b, "kv 0 ('k'): unknown array element type 77 at byte 37");
    gb_free(&b);

    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k", GGUF_TYPE_BOOL), gb_u8(&b, 2);
    expect_bad(&b, "kv 0 ('k'): bool value at byte 37 is 2, must be 0 or 1");
    gb_free(&b);
}

static void test_duplicate_key(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, 0, 3);
    gb_kv_u32(&b, "k", 1), gb_kv_u32(&b, "other", 2), gb_kv_str(&b, "k", "again");
    expect_bad(&b, "kv 2 ('k') at byte 62 repeats the key of kv 0");
    gb_free(&b);
}

static void test_bad_alignment(void **state) {
    (void)state;
    const uint32_t bad[] = {0, 3, 48};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gguf_builder b = {0};
        gb_header(&b, 3, 0, 1);
        gb_kv_u32(&b, "general.alignment", bad[i]);
        char want[80];
        snprintf(want, sizeof want, "general.alignment is %u, must be a nonzero power of two",
                 bad[i]);
        expect_bad(&b, want);
        gb_free(&b);
    }
    gguf_builder b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.alignment", GGUF_TYPE_UINT64), gb_u64(&b, 32);
    expect_bad(&b, "general.alignment has type uint64, must be uint32");
    gb_free(&b);
}

/* ---- hostile tensor infos ---------------------------------------------- */

/* One tensor "w" and `data_bytes` bytes of data after the padding. The
 * tensor info starts at byte 24, its n_dims at byte 33, ne[0] at byte 37. */
static void build_one_tensor(gguf_builder *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                             uint64_t offset, size_t data_bytes) {
    gb_header(b, 3, 1, 0);
    gb_tensor_info(b, "w", n_dims, ne, type, offset);
    gb_pad(b, 32);
    gb_zeros(b, data_bytes);
}

static void test_one_tensor_ok(void **state) {
    (void)state;
    /* The baseline the hostile variants below depart from. */
    gguf_builder b = {0};
    build_one_tensor(&b, 1, (uint64_t[]){8}, FASA_TYPE_F32, 0, 32);
    uint8_t *copy;
    gguf_file *g = open_ok(&b, &copy);
    assert_int_equal(g->data_offset, 64);
    assert_int_equal(g->tensors[0].n_bytes, 32);
    fasa_gguf_close(g);
    free(copy);
    gb_free(&b);
}

static void test_bad_n_dims(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_one_tensor(&b, 0, NULL, FASA_TYPE_F32, 0, 32);
    expect_bad(&b, "tensor 0 ('w'): n_dims at byte 33 is 0, must be 1 to 4");
    gb_free(&b);
    build_one_tensor(&b, 5, (uint64_t[]){1, 1, 1, 1, 1}, FASA_TYPE_F32, 0, 32);
    expect_bad(&b, "tensor 0 ('w'): n_dims at byte 33 is 5, must be 1 to 4");
    gb_free(&b);
}

static void test_bad_dimensions(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_one_tensor(&b, 2, (uint64_t[]){8, 0}, FASA_TYPE_F32, 0, 32);
    expect_bad(&b, "tensor 0 ('w'): ne[1] at byte 45 is 0, every dimension must be at least 1");
    gb_free(&b);

    build_one_tensor(&b, 2, (uint64_t[]){UINT64_C(1) << 32, UINT64_C(1) << 32}, FASA_TYPE_F32, 0,
                     32);
    expect_bad(
        &b,
        "tensor 0 ('w'): ne[1] at byte 45 is 4294967296, which makes the element count overflow");
    gb_free(&b);

    build_one_tensor(&b, 1, (uint64_t[]){UINT64_MAX}, FASA_TYPE_F32, 0, 32);
    expect_bad(&b,
               "ne[0] at byte 37 is 18446744073709551615, which makes the element count overflow");
    gb_free(&b);

    /* 2^62 elements fit in int64, their 2^64 bytes do not */
    build_one_tensor(&b, 2, (uint64_t[]){UINT64_C(1) << 31, UINT64_C(1) << 31}, FASA_TYPE_F32, 0,
                     32);
    expect_bad(&b, "tensor 0 ('w'): data size overflows 64 bits");
    gb_free(&b);
}

static void test_unknown_tensor_type(void **state) {
    (void)state;
    const uint32_t bad[] = {4, 5, 31, 99, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gguf_builder b = {0};
        build_one_tensor(&b, 1, (uint64_t[]){8}, bad[i], 0, 32);
        char want[80];
        snprintf(want, sizeof want, "tensor 0 ('w'): unknown tensor type %u at byte 45", bad[i]);
        expect_bad(&b, want);
        gb_free(&b);
    }
}

static void test_bad_offsets(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_one_tensor(&b, 1, (uint64_t[]){8}, FASA_TYPE_F32, 4, 64);
    expect_bad(&b, "tensor 0 ('w'): data offset 4 is not a multiple of the alignment (32)");
    gb_free(&b);

    build_one_tensor(&b, 1, (uint64_t[]){8}, FASA_TYPE_F32, 4096, 32);
    expect_bad(&b, "tensor 0 ('w'): data offset 4096 from the data section at byte 64 starts past "
                   "the end of the file (96 bytes)");
    gb_free(&b);

    /* large enough to wrap around when added to the data section's start */
    build_one_tensor(&b, 1, (uint64_t[]){8}, FASA_TYPE_F32, UINT64_MAX - 31, 32);
    expect_bad(&b, "starts past the end of the file");
    gb_free(&b);

    build_one_tensor(&b, 1, (uint64_t[]){8}, FASA_TYPE_F32, 0, 31);
    expect_bad(&b, "tensor 0 ('w'): data ends at byte 96, past the end of the file (95 bytes)");
    gb_free(&b);

    /* a tensor of a type quant.h does not run still must start inside the file */
    build_one_tensor(&b, 1, (uint64_t[]){256}, SYN_IQ2_XXS, 64, 32);
    expect_bad(&b,
               "data offset 64 from the data section at byte 64 starts past the end of the file");
    gb_free(&b);
}

static void test_row_not_whole_blocks(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_one_tensor(&b, 2, (uint64_t[]){40, 2}, FASA_TYPE_Q8_0, 0, 256);
    expect_bad(&b, "tensor 0 ('w'): row length 40 is not a multiple of the q8_0 block size (32)");
    gb_free(&b);
}

static void test_duplicate_tensor_name(void **state) {
    (void)state;
    gguf_builder b = {0};
    gb_header(&b, 3, 2, 0);
    gb_tensor_info(&b, "w", 1, (uint64_t[]){8}, FASA_TYPE_F32, 0);
    gb_tensor_info(&b, "w", 1, (uint64_t[]){8}, FASA_TYPE_F32, 32);
    gb_pad(&b, 32);
    gb_zeros(&b, 64);
    expect_bad(&b, "tensor 1 ('w') at byte 57 repeats the name of tensor 0");
    gb_free(&b);
}

static void test_unprintable_name(void **state) {
    (void)state;
    /* Names from the file are shown on one line, without control bytes. */
    gguf_builder b = {0};
    build_one_tensor(&b, 1, (uint64_t[]){8}, 99, 0, 32);
    b.data[32] = '\n';
    expect_bad(&b, "tensor 0 ('?'): unknown tensor type 99");
    assert_null(strchr(fasa_last_error(), '\n'));
    gb_free(&b);
}

/* ---- opening paths ----------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void test_open_paths(void **state) {
    (void)state;
    const char *missing = FASA_BUILD_DIR "/test_gguf_no_such_file.gguf";
    gguf_file *g = (gguf_file *)&g; /* any non-NULL value: a failed open must reset it */
    expect_error(fasa_gguf_open(missing, &g), FASA_E_IO,
                 "test_gguf_no_such_file.gguf: cannot open: No such file or directory");
    assert_null(g);

    expect_error(fasa_gguf_open(FASA_BUILD_DIR, &g), FASA_E_IO, ": cannot read: Is a directory");
    assert_null(g);

    const char *empty = FASA_BUILD_DIR "/test_gguf_empty.gguf";
    write_file(empty, "", 0);
    expect_error(fasa_gguf_open(empty, &g), FASA_E_IO, "test_gguf_empty.gguf: file is empty");
    assert_null(g);
    remove(empty);

    /* A valid file through the mmap path. It stays behind as a fuzzing seed. */
    gguf_builder b = {0};
    build_synthetic(&b, 3);
    const char *path = FASA_BUILD_DIR "/test_gguf_synthetic.gguf";
    write_file(path, b.data, b.len);
    assert_int_equal(fasa_gguf_open(path, &g), FASA_OK);
    assert_true(g->owns_mapping);
    assert_int_equal(g->size, b.len);
    assert_memory_equal(g->base, b.data, b.len);
    assert_str_eq(find_kv(g, "t.arr_str")->arr_str[2], "<|im_start|>");
    fasa_gguf_close(g);

    /* A broken file's message starts with its path. */
    const char *cut = FASA_BUILD_DIR "/test_gguf_truncated.gguf";
    write_file(cut, b.data, b.len - 1);
    expect_error(fasa_gguf_open(cut, &g), FASA_E_FORMAT,
                 FASA_BUILD_DIR "/test_gguf_truncated.gguf: tensor 1 ('w.q8'): data ends at byte");
    assert_null(g);
    remove(cut);
    gb_free(&b);
}

/* ---- typed getters ----------------------------------------------------- */

static void test_getters(void **state) {
    (void)state;
    gguf_builder b = {0};
    build_synthetic(&b, 3);
    uint8_t *copy;
    gguf_file *g = open_ok(&b, &copy);

    uint32_t u;
    assert_int_equal(fasa_gguf_get_u32(g, "t.u8", &u), FASA_OK);
    assert_int_equal(u, 200);
    assert_int_equal(fasa_gguf_get_u32(g, "t.i32_pos", &u), FASA_OK);
    assert_int_equal(u, 123);
    assert_int_equal(fasa_gguf_get_u32(g, "t.u32", &u), FASA_OK);
    assert_int_equal(u, 4000000000u);
    expect_error(fasa_gguf_get_u32(g, "t.missing", &u), FASA_E_FORMAT,
                 "GGUF buffer: key 't.missing' is missing");
    expect_error(fasa_gguf_get_u32(g, "t.str", &u), FASA_E_FORMAT,
                 "key 't.str' has type string, expected an integer");
    expect_error(fasa_gguf_get_u32(g, "t.f32", &u), FASA_E_FORMAT,
                 "key 't.f32' has type float32, expected an integer");
    expect_error(fasa_gguf_get_u32(g, "t.i32", &u), FASA_E_FORMAT,
                 "key 't.i32' is -2000000000, which does not fit in uint32");
    expect_error(fasa_gguf_get_u32(g, "t.i8", &u), FASA_E_FORMAT,
                 "key 't.i8' is -100, which does not fit in uint32");
    expect_error(fasa_gguf_get_u32(g, "t.u64", &u), FASA_E_FORMAT,
                 "key 't.u64' is 5000000000, which does not fit in uint32");

    int64_t i;
    assert_int_equal(fasa_gguf_get_i64(g, "t.i64", &i), FASA_OK);
    assert_true(i == INT64_C(-5000000000000));
    assert_int_equal(fasa_gguf_get_i64(g, "t.u64", &i), FASA_OK);
    assert_true(i == 5000000000);
    assert_int_equal(fasa_gguf_get_i64(g, "t.i16", &i), FASA_OK);
    assert_true(i == -30000);
    expect_error(fasa_gguf_get_i64(g, "t.u64_max", &i), FASA_E_FORMAT,
                 "key 't.u64_max' is 18446744073709551615, which does not fit in int64");
    expect_error(fasa_gguf_get_i64(g, "t.bool", &i), FASA_E_FORMAT,
                 "key 't.bool' has type bool, expected an integer");

    float f;
    assert_int_equal(fasa_gguf_get_f32(g, "t.f32", &f), FASA_OK);
    assert_true(f == 1.5f);
    assert_int_equal(fasa_gguf_get_f32(g, "t.f64", &f), FASA_OK);
    assert_true(f == 0.25f);
    expect_error(fasa_gguf_get_f32(g, "t.f64_big", &f), FASA_E_FORMAT,
                 "key 't.f64_big' is 1e+300, which does not fit in float32");
    expect_error(fasa_gguf_get_f32(g, "t.u32", &f), FASA_E_FORMAT,
                 "key 't.u32' has type uint32, expected a float");

    bool flag = false;
    assert_int_equal(fasa_gguf_get_bool(g, "t.bool", &flag), FASA_OK);
    assert_true(flag);
    expect_error(fasa_gguf_get_bool(g, "t.u8", &flag), FASA_E_FORMAT,
                 "key 't.u8' has type uint8, expected bool");

    gguf_str s;
    assert_int_equal(fasa_gguf_get_str(g, "t.str", &s), FASA_OK);
    assert_str_eq(s, "hello, gguf");
    expect_error(fasa_gguf_get_str(g, "t.arr_str", &s), FASA_E_FORMAT,
                 "key 't.arr_str' is an array of string, expected string");

    const gguf_kv *kv = NULL;
    assert_int_equal(fasa_gguf_get_arr(g, "t.arr_i32", GGUF_TYPE_INT32, &kv), FASA_OK);
    assert_ptr_equal(kv, fasa_gguf_find_kv(g, "t.arr_i32"));
    expect_error(fasa_gguf_get_arr(g, "t.arr_str", GGUF_TYPE_INT32, &kv), FASA_E_FORMAT,
                 "key 't.arr_str' is an array of string, expected an array of int32");
    expect_error(fasa_gguf_get_arr(g, "t.u32", GGUF_TYPE_STRING, &kv), FASA_E_FORMAT,
                 "key 't.u32' has type uint32, expected an array of string");
    expect_error(fasa_gguf_get_arr(g, "nope", GGUF_TYPE_STRING, &kv), FASA_E_FORMAT,
                 "key 'nope' is missing");

    assert_string_equal(fasa_gguf_type_name(GGUF_TYPE_FLOAT64), "float64");
    assert_string_equal(fasa_gguf_type_name(GGUF_TYPE_COUNT), "unknown");
    assert_true(fasa_gguf_str_eq((gguf_str){0, ""}, ""));
    assert_false(fasa_gguf_str_eq((gguf_str){2, "ab"}, "abc"));

    fasa_gguf_close(g);
    free(copy);
    gb_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_round_trip),
        cmocka_unit_test(test_synthetic_truncated_everywhere),
        cmocka_unit_test(test_model_facts),
        cmocka_unit_test(test_model_opens_fast),
        cmocka_unit_test(test_model_truncated),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_big_endian),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_string_past_end),
        cmocka_unit_test(test_huge_array),
        cmocka_unit_test(test_bad_value_types),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_one_tensor_ok),
        cmocka_unit_test(test_bad_n_dims),
        cmocka_unit_test(test_bad_dimensions),
        cmocka_unit_test(test_unknown_tensor_type),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_row_not_whole_blocks),
        cmocka_unit_test(test_duplicate_tensor_name),
        cmocka_unit_test(test_unprintable_name),
        cmocka_unit_test(test_open_paths),
        cmocka_unit_test(test_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
