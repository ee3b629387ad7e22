/* Dumps real attention inputs and the CPU engine's outputs for a few layers,
 * so that other backends (the CUDA kernels) can be validated on what the
 * default model actually produces rather than on random numbers.
 *
 * The model evaluates the first N tokens of a text (dense, f32 KV cache),
 * then decodes one more. For each chosen layer the folder gets, as raw
 * little-endian arrays (shapes in header.txt):
 *
 *   l<L>.q.f32       [n_heads][head_dim]            post-RoPE queries of the decoded token
 *   l<L>.k.f32       [n_kv_heads][n][head_dim]      post-RoPE keys of all n = N + 1 cached tokens
 *   l<L>.v.f32       [n_kv_heads][n][head_dim]      values
 *   l<L>.coords.i32  [n_kv_heads][n_label]          FASA label coordinates from the calibration
 *   l<L>.dense.f32   [n_heads][head_dim]            dense attention output (fasa_attention_step, budget n)
 *   l<L>.fasa.f32    [n_heads][head_dim]            FASA output at the given budget, one set per KV group
 *   l<L>.sel.i32     [n_heads][budget]              positions FASA chose (ascending)
 *
 * The queries of every layer are caught at the decode step by a policy whose
 * select records them and answers "attend to everything" (so the decode is
 * exact); the context itself keeps only the last layer's.
 *
 * usage: dump_kv [-m MODEL] [-f TEXT] [-n N] [--layers 1,15,29] [--calib FILE]
 *                [--fc N_TIP] [--budget N] [-t THREADS] -o DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attn/policy.h"
#include "backend_cpu.h"
#include "fasa.h"

typedef struct opts {
    const char *model, *text, *layers, *calib, *out;
    int32_t n, n_tip, budget, threads;
} opts;

static int usage(void) {
    fprintf(stderr, "usage: dump_kv [-m MODEL] [-f TEXT] [-n N] [--layers LIST] [--calib FILE] [--fc N_TIP]\n"
                    "               [--budget N] [-t THREADS] -o DIR\n");
    return 2;
}

/* ---- the recording policy --------------------------------------------- */

typedef struct record_state {
    float *q; /* [n_layers][n_heads][head_dim]: the decode step's queries */
} record_state;

static fasa_status record_init(attn_policy *p) {
    const attn_shape *s = &p->shape;
    record_state *st = calloc(1, sizeof *st);
    if (st) st->q = calloc((size_t)s->n_layers * s->n_heads * s->head_dim, sizeof *st->q);
    if (!st || !st->q) {
        free(st);
        fprintf(stderr, "dump_kv: out of memory for the query record\n");
        return FASA_E_NOMEM;
    }
    p->state = st;
    p->scratch_floats = 0;
    return FASA_OK;
}

static void record_free(attn_policy *p) {
    record_state *st = p->state;
    if (!st) return;
    free(st->q);
    free(st);
}

/* Different KV groups write disjoint rows, so concurrent calls are safe. */
static int32_t record_select(attn_policy *p, const attn_query *aq, int32_t *idx, float *scratch) {
    (void)idx, (void)scratch;
    record_state *st = p->state;
    const attn_shape *s = &p->shape;
    float *dst = st->q + ((size_t)aq->layer * s->n_heads + aq->q_head) * s->head_dim;
    memcpy(dst, aq->q, (size_t)aq->n_q * s->head_dim * sizeof *dst);
    return -1;
}

static const attn_policy_ops record_ops = {
    .name = "record-queries",
    .per_head_default = false,
    .init = record_init,
    .free = record_free,
    .select = record_select,
};

/* ---- input ------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "dump_kv: cannot open %s: %s (scripts/make-data.sh makes the default text)\n", path,
                strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "dump_kv: cannot read %s\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[size] = 0;
    *len = (size_t)size;
    return buf;
}

/* The first `need` tokens of the text. Tokenizing a whole novel is slow, so
 * a prefix is tokenized, cut at a line end (never inside a UTF-8 sequence),
 * and grown until it yields enough tokens. */
static int32_t *tokenize_prefix(const fasa_model *m, const char *text, size_t len, int32_t need) {
    int32_t *ids = NULL;
    for (size_t want = (size_t)need * 8; ; want *= 2) {
        size_t cut = want < len ? want : len;
        while (cut < len && cut > 0 && text[cut - 1] != '\n') cut--;
        if (cut == 0) cut = want < len ? want : len;
        /* A token covers at least one byte: cut + 1 ids always suffice. */
        int32_t n = 0;
        ids = malloc((cut + 2) * sizeof *ids);
        if (!ids || fasa_tokenize(m, text, cut, fasa_model_add_bos(m), false, ids, (int32_t)cut + 2, &n)) break;
        if (n >= need) return ids;
        free(ids);
        ids = NULL;
        if (cut == len) {
            fprintf(stderr, "dump_kv: the text has %d tokens, %d are needed (lower -n)\n", n, need);
            return NULL;
        }
    }
    fprintf(stderr, "dump_kv: tokenizing: %s\n", fasa_last_error());
    free(ids);
    return NULL;
}

/* ---- output ------------------------------------------------------------ */

static int write_array(const char *dir, int32_t layer, const char *what, const void *data, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/l%d.%s", dir, layer, what);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f)) {
        fprintf(stderr, "dump_kv: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* One layer: gather its cache, compute the CPU outputs, write everything. */
static int dump_layer(const opts *o, const fasa_model_info *in, const cpu_backend *c, const fasa_calib *cal,
                      const float *q, int32_t layer) {
    const int32_t H = in->n_heads, KV = in->n_kv_heads, d = in->head_dim, n = c->kv.n_tokens;
    const int32_t L = 2 * o->n_tip, B = o->budget;
    const size_t kv_floats = (size_t)KV * n * d;
    float *k = malloc(kv_floats * sizeof *k), *v = malloc(kv_floats * sizeof *v);
    float *labels = malloc((size_t)KV * n * L * sizeof *labels);
    float *dense = malloc((size_t)H * d * sizeof *dense), *fasa = malloc((size_t)H * d * sizeof *fasa);
    int32_t *coords = malloc((size_t)KV * L * sizeof *coords), *sel = malloc((size_t)H * B * sizeof *sel);
    int rc = 1;
    if (!k || !v || !labels || !dense || !fasa || !coords || !sel) {
        fprintf(stderr, "dump_kv: out of memory for layer %d\n", layer);
        goto done;
    }
    for (int32_t h = 0; h < KV; h++) {
        if (fasa_calib_label_coords(cal, layer, h, o->n_tip, coords + (size_t)h * L)) {
            fprintf(stderr, "dump_kv: %s\n", fasa_last_error());
            goto done;
        }
        for (int32_t t = 0; t < n; t++) {
            const size_t r = (size_t)h * n + t;
            memcpy(k + r * d, kv_k_row(&c->kv, layer, h, t), (size_t)d * sizeof *k);
            memcpy(v + r * d, kv_v_row(&c->kv, layer, h, t), (size_t)d * sizeof *v);
            for (int32_t j = 0; j < L; j++) labels[r * L + j] = k[r * d + coords[(size_t)h * L + j]];
        }
    }
    fasa_step s = {.n_heads = H, .n_kv_heads = KV, .head_dim = d, .n_tokens = n, .q = q, .k = k, .v = v,
                   .labels = labels, .label_coords = coords, .n_label = L, .budget = n, .per_head = false,
                   .out = dense, .selected = NULL};
    if (fasa_attention_step(&s)) goto fail;
    s.budget = B;
    s.out = fasa;
    s.selected = sel;
    if (fasa_attention_step(&s)) goto fail;
    rc = write_array(o->out, layer, "q.f32", q, (size_t)H * d * sizeof *q) ||
         write_array(o->out, layer, "k.f32", k, kv_floats * sizeof *k) ||
         write_array(o->out, layer, "v.f32", v, kv_floats * sizeof *v) ||
         write_array(o->out, layer, "coords.i32", coords, (size_t)KV * L * sizeof *coords) ||
         write_array(o->out, layer, "dense.f32", dense, (size_t)H * d * sizeof *dense) ||
         write_array(o->out, layer, "fasa.f32", fasa, (size_t)H * d * sizeof *fasa) ||
         write_array(o->out, layer, "sel.i32", sel, (size_t)H * B * sizeof *sel);
    goto done;
fail:
    fprintf(stderr, "dump_kv: layer %d: %s\n", layer, fasa_last_error());
done:
    free(k), free(v), free(labels), free(dense), free(fasa), free(coords), free(sel);
    return rc;
}

static int write_header(const opts *o, const fasa_model_info *in, int32_t n, const bool *chosen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/header.txt", o->out);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "dump_kv: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    const char *base = strrchr(o->model, '/'), *tbase = strrchr(o->text, '/');
    fprintf(f, "format fasa-real-kv 1\n");
    fprintf(f, "model %s\ntext %s\n", base ? base + 1 : o->model, tbase ? tbase + 1 : o->text);
    fprintf(f, "n_heads %d\nn_kv_heads %d\nhead_dim %d\nn_tokens %d\n", in->n_heads, in->n_kv_heads, in->head_dim, n);
    fprintf(f, "n_tip %d\nn_label %d\nbudget %d\n", o->n_tip, 2 * o->n_tip, o->budget);
    fprintf(f, "layers");
    for (int32_t l = 0; l < in->n_layers; l++)
        if (chosen[l]) fprintf(f, " %d", l);
    fprintf(f, "\n");
    return fclose(f) != 0;
}

int main(int argc, char **argv) {
    opts o = {"models/SmolLM2-135M-Instruct.Q4_1.gguf", "data/austen/emma.txt", "1,15,29", "calib/smollm2-k256.json",
              NULL, 2048, 8, 256, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "-m")) o.model = v;
        else if (!strcmp(a, "-f")) o.text = v;
        else if (!strcmp(a, "-n")) o.n = atoi(v);
        else if (!strcmp(a, "--layers")) o.layers = v;
        else if (!strcmp(a, "--calib")) o.calib = v;
        else if (!strcmp(a, "--fc")) o.n_tip = atoi(v);
        else if (!strcmp(a, "--budget")) o.budget = atoi(v);
        else if (!strcmp(a, "-t")) o.threads = atoi(v);
        else if (!strcmp(a, "-o")) o.out = v;
        else return usage();
        i++;
    }
    if (!o.out || o.n < 1 || o.n_tip < 1 || o.budget < 1 || o.threads < 0) return usage();
    if (o.budget > o.n) {
        fprintf(stderr, "dump_kv: budget %d must be below the %d cached tokens for FASA to select\n", o.budget, o.n + 1);
        return 2;
    }
    if (mkdir(o.out, 0777) && errno != EEXIST) {
        fprintf(stderr, "dump_kv: cannot create %s: %s\n", o.out, strerror(errno));
        return 1;
    }

    fasa_model *m = NULL;
    fasa_calib *cal = NULL;
    fasa_context *c = NULL;
    int32_t *ids = NULL;
    bool *chosen = NULL;
    char *text = NULL;
    int rc = 1;
    if (fasa_model_load(o.model, &m) || fasa_calib_load(o.calib, m, &cal)) {
        fprintf(stderr, "dump_kv: %s\n", fasa_last_error());
        goto done;
    }
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    if (2 * o.n_tip > in.head_dim) {
        fprintf(stderr, "dump_kv: --fc %d exceeds the %d frequency chunks of a head\n", o.n_tip, in.head_dim / 2);
        goto done;
    }
    chosen = calloc((size_t)in.n_layers, sizeof *chosen);
    if (!chosen || attn_parse_layers(o.layers, in.n_layers, chosen)) {
        fprintf(stderr, "dump_kv: --layers %s: %s\n", o.layers, fasa_last_error());
        goto done;
    }
    size_t len = 0;
    if (!(text = read_file(o.text, &len)) || !(ids = tokenize_prefix(m, text, len, o.n + 1))) goto done;

    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = o.n + 1;
    cp.n_threads = o.threads;
    cp.kv_type = FASA_KV_F32;
    const fasa_attn_params ap = {.method = "record-queries", .budget = 1, .per_head = 2, .dense_layers = ""};
    attn_policy *p = NULL;
    fprintf(stderr, "dump_kv: evaluating %d tokens of %s, then one decode step\n", o.n, o.text);
    if (fasa_context_init(m, &cp, &c) || fasa_eval(c, ids, o.n, NULL, false)) goto engine_error;
    const attn_shape shape = context_attn_shape(c);
    if (attn_policy_create_ops(&record_ops, &ap, &shape, fasa_context_n_past(c), &p)) goto engine_error;
    const record_state *rec = p->state; /* owned by the context from here on */
    if (context_install_policy(c, p) || fasa_eval(c, ids + o.n, 1, NULL, false)) goto engine_error;
    const cpu_backend *cb = context_cpu(c, "dump_kv");
    if (!cb) goto engine_error;

    /* The context keeps the last layer's queries: the record must agree. */
    const size_t HD = (size_t)in.n_heads * in.head_dim;
    if (memcmp(rec->q + (size_t)(in.n_layers - 1) * HD, cb->q, HD * sizeof *cb->q)) {
        fprintf(stderr, "dump_kv: the recorded queries of the last layer differ from the context's\n");
        goto done;
    }
    int32_t n_dump = 0;
    for (int32_t l = 0; l < in.n_layers; l++) {
        if (!chosen[l]) continue;
        n_dump++;
        const float *q = rec->q + (size_t)l * HD;
        if (dump_layer(&o, &in, cb, cal, q, l)) goto done;
    }
    if (n_dump == 0) {
        fprintf(stderr, "dump_kv: --layers %s names no layer\n", o.layers);
        goto done;
    }
    rc = write_header(&o, &in, cb->kv.n_tokens, chosen);
    if (!rc) fprintf(stderr, "dump_kv: wrote %d layers x %d tokens to %s\n", n_dump, cb->kv.n_tokens, o.out);
    goto done;
engine_error:
    fprintf(stderr, "dump_kv: %s\n", fasa_last_error());
done:
    fasa_context_free(c);
    fasa_calib_free(cal);
    fasa_model_free(m);
    free(ids);
    free(chosen);
    free(text);
    return rc;
}
