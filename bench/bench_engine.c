/* End-to-end speed of a model on any backend: prefill of a prompt of N
 * tokens, then decode at several depths of cached context, dense or FASA.
 *
 * Decode at depth T is timed with the cache filled directly with T tokens of
 * random keys and values (context_fill_random): the work of a decode step
 * does not depend on their values. With --fill prefill the T tokens are a
 * real prefill instead, timed too (end to end: a prompt, then its decode).
 * Prefill is timed on a real prompt of --prefill tokens, after D tokens of
 * random cache for each D of --prefill-depths (llama-bench's -p N -d D).
 * Every decode step samples greedily where the logits are (one host sync per
 * token, as `fasa generate` runs). Reported: median tokens/s of the steps,
 * the bytes a step must read (weights + K/V rows, or FASA's labels and
 * selected rows), and that over the time as a fraction of --bw. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "context.h"
#include "attn/bytes.h"
#include "fasa.h"

typedef struct opts {
    const char *model, *depths, *attn, *calib, *device, *prefill_depths;
    bool fill_prefill;
    int32_t budget, n_tip, reps, prefill, threads, label_type, batch;
    double bw;
    bool f32_act;
} opts;

static int usage(void) {
    fprintf(stderr, "usage: bench_engine -m MODEL [--device cpu|cuda|cuda-m] [--depths 0,4096,...] [--attn full|fasa]\n"
                    "                    [--budget N] [--fc N] [--calib FILE] [--reps N] [--prefill N] [--bw BYTES/S]\n"
                    "                    [-t THREADS] [--f32-act] [--labels f32|f16|int8] [--prefill-depths 0,...]\n"
                    "                    [--fill random|prefill] [--batch N]\n");
    return 1;
}

static fasa_device device_of(const char *s) {
    return !strcmp(s, "cuda") ? FASA_DEVICE_CUDA : !strcmp(s, "cuda-m") ? FASA_DEVICE_CUDA_HOST_KV : FASA_DEVICE_CPU;
}

static fasa_context *new_context(fasa_model *m, const opts *o, int32_t n_ctx) {
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = o->threads;
    cp.n_batch = o->batch;
    cp.kv_type = FASA_KV_F16;
    cp.device = device_of(o->device);
    cp.f32_activations = o->f32_act;
    fasa_context *c = NULL;
    if (fasa_context_init(m, &cp, &c) != FASA_OK) fprintf(stderr, "bench_engine: %s\n", fasa_last_error());
    return c;
}

/* n pseudo-random tokens of the vocabulary, as a prompt. */
static int32_t *prompt_tokens(int32_t n, const fasa_model_info *in) {
    int32_t *tok = malloc((size_t)(n > 0 ? n : 1) * sizeof *tok);
    for (int i = 0; tok && i < n; i++) tok[i] = 100 + (int32_t)(((int64_t)i * 7919) % (in->n_vocab - 200));
    return tok;
}

/* Prefill of o->prefill real (pseudo-random) tokens after `depth` tokens of
 * random cache: median of 3, tokens/s. */
static double time_prefill(fasa_model *m, const opts *o, const fasa_model_info *in, int32_t depth) {
    fasa_context *c = new_context(m, o, depth + o->prefill + 1);
    if (!c) return -1;
    int32_t *tok = prompt_tokens(o->prefill, in);
    float *logits = malloc((size_t)in->n_vocab * sizeof *logits);
    double t[3];
    for (int r = 0; r < 3; r++) {
        fasa_context_reset(c);
        if (depth > 0 && context_fill_random(c, depth, 777)) {
            fprintf(stderr, "bench_engine: depth %d: %s\n", depth, fasa_last_error());
            t[r] = 1e30;
            continue;
        }
        const double t0 = bench_now();
        if (fasa_eval(c, tok, o->prefill, logits, false) != FASA_OK) {
            fprintf(stderr, "bench_engine: prefill: %s\n", fasa_last_error());
            t[r] = 1e30;
        } else {
            t[r] = bench_now() - t0;
        }
    }
    free(tok);
    free(logits);
    fasa_context_free(c);
    return o->prefill / bench_median(t, 3);
}

static int run_depth(fasa_model *m, const opts *o, const fasa_model_info *in, const fasa_attn_params *ap, int32_t T) {
    fasa_context *c = new_context(m, o, T + o->reps + 8);
    if (!c) return 1;
    int rc = 1;
    double *t = malloc((size_t)o->reps * sizeof *t);
    fasa_sampler *s = NULL;
    const fasa_sampler_params sp = {0.0f, 1.0f, 0, 1};
    double prefill_s = 0;
    if (fasa_context_set_attention(c, ap) || fasa_sampler_init(&sp, in->n_vocab, &s)) {
        fprintf(stderr, "bench_engine: depth %d: %s\n", T, fasa_last_error());
        goto done;
    }
    if (T > 0 && o->fill_prefill) { /* a real prompt of T tokens, through the policy's own prefill */
        int32_t *tok = prompt_tokens(T, in);
        const double t0 = bench_now();
        const fasa_status st = tok ? fasa_eval(c, tok, T, NULL, false) : FASA_E_NOMEM;
        prefill_s = bench_now() - t0;
        free(tok);
        if (st) {
            fprintf(stderr, "bench_engine: prefill of %d tokens: %s\n", T, fasa_last_error());
            goto done;
        }
    } else if (T > 0 && context_fill_random(c, T, 12345)) {
        fprintf(stderr, "bench_engine: depth %d: %s\n", T, fasa_last_error());
        goto done;
    }
    int32_t tok = 1234;
    for (int r = -3; r < o->reps; r++) { /* three warm-up steps */
        const double t0 = bench_now();
        if (fasa_decode_sample(c, tok, s, &tok) != FASA_OK) {
            fprintf(stderr, "bench_engine: decode at depth %d: %s\n", T, fasa_last_error());
            goto done;
        }
        if (r >= 0) t[r] = bench_now() - t0;
    }
    const double sec = bench_median(t, o->reps);
    const int32_t mid = T + 3 + o->reps / 2;
    fasa_attn_params bp = *ap; /* the labels as the device keeps them by default: f32 on the CPU, f16 on a GPU */
    if (!bp.label_type) bp.label_type = device_of(o->device) == FASA_DEVICE_CPU ? FASA_LABELS_F32 : FASA_LABELS_F16;
    const double bytes = (double)in->weight_bytes + attn_step_bytes(in, ap->method ? &bp : NULL, mid, 2);
    printf("| %d | %s | %.1f | %.3f | %.0f | %.1f | %.0f | %.0f%% |\n", T, ap->method ? ap->method : "full", 1.0 / sec,
           sec * 1e3, fasa_context_device_bytes(c) / 1e6, bytes / 1e6, bytes / sec / 1e9,
           o->bw > 0 ? 100.0 * bytes / sec / o->bw : 0.0);
    if (prefill_s > 0) printf("|   | (after a real prefill of %d tokens: %.1f tok/s, %.2f s) | | | | | | |\n", T, T / prefill_s, prefill_s);
    fflush(stdout);
    rc = 0;
done:
    fasa_sampler_free(s);
    free(t);
    fasa_context_free(c);
    return rc;
}

int main(int argc, char **argv) {
    opts o = {.model = "models/SmolLM2-135M-Instruct.Q4_1.gguf", .depths = "0,4096", .attn = "full", .device = "cpu",
              .prefill_depths = "0", .budget = 256, .reps = 32, .prefill = 512};
    static const struct option lo[] = {
        {"device", required_argument, 0, 1}, {"depths", required_argument, 0, 2}, {"attn", required_argument, 0, 3},
        {"budget", required_argument, 0, 4}, {"fc", required_argument, 0, 5},     {"calib", required_argument, 0, 6},
        {"reps", required_argument, 0, 7},   {"prefill", required_argument, 0, 8}, {"bw", required_argument, 0, 9},
        {"f32-act", no_argument, 0, 10},     {"labels", required_argument, 0, 11},
        {"prefill-depths", required_argument, 0, 12}, {"fill", required_argument, 0, 13},
        {"batch", required_argument, 0, 14},          {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "m:t:", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o.model = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        case 1: o.device = optarg; break;
        case 2: o.depths = optarg; break;
        case 3: o.attn = optarg; break;
        case 4: o.budget = atoi(optarg); break;
        case 5: o.n_tip = atoi(optarg); break;
        case 6: o.calib = optarg; break;
        case 7: o.reps = atoi(optarg); break;
        case 8: o.prefill = atoi(optarg); break;
        case 9: o.bw = atof(optarg); break;
        case 10: o.f32_act = true; break;
        case 11:
            o.label_type = !strcmp(optarg, "f32") ? FASA_LABELS_F32 : !strcmp(optarg, "f16") ? FASA_LABELS_F16
                           : !strcmp(optarg, "int8")                          ? FASA_LABELS_INT8
                                                                              : -1;
            if (o.label_type < 0) return usage();
            break;
        case 12: o.prefill_depths = optarg; break;
        case 13:
            if (strcmp(optarg, "random") && strcmp(optarg, "prefill")) return usage();
            o.fill_prefill = !strcmp(optarg, "prefill");
            break;
        case 14: o.batch = atoi(optarg); break;
        default: return usage();
        }
    }
    if (o.reps < 1 || o.prefill < 0 || o.batch < 0) return usage();
    fasa_model *m;
    fasa_calib *cal = NULL;
    if (fasa_model_load(o.model, &m) != FASA_OK || (o.calib && fasa_calib_load(o.calib, m, &cal) != FASA_OK)) {
        fprintf(stderr, "bench_engine: %s\n", fasa_last_error());
        return 1;
    }
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    fasa_attn_params ap = {0};
    if (strcmp(o.attn, "full")) ap = (fasa_attn_params){.method = o.attn, .budget = o.budget, .n_tip = o.n_tip, .calib = cal,
                                 .label_type = o.label_type};
    printf("model %s: %d layers, %d/%d heads of %d, %.2f GB of weights read per token; device %s\n", in.name,
           in.n_layers, in.n_heads, in.n_kv_heads, in.head_dim, in.weight_bytes / 1e9, o.device);
    if (o.prefill > 0) {
        char *pd = strdup(o.prefill_depths);
        for (char *tok = pd ? strtok(pd, ",") : NULL; tok; tok = strtok(NULL, ",")) {
            const int32_t d = atoi(tok);
            const double tps = d >= 0 ? time_prefill(m, &o, &in, d) : -1;
            printf("prefill of %d tokens at depth %d: %.1f tok/s\n", o.prefill, d, tps);
            fflush(stdout);
        }
        free(pd);
        printf("\n");
    }
    printf("| depth | attention | decode tok/s | ms/token | device MB | MB read/token | GB/s | of --bw |\n"
           "|---|---|---|---|---|---|---|---|\n");
    int rc = 0;
    char *list = strdup(o.depths);
    for (char *tok = strtok(list, ","); tok && !rc; tok = strtok(NULL, ",")) rc = run_depth(m, &o, &in, &ap, atoi(tok));
    free(list);
    fasa_calib_free(cal);
    fasa_model_free(m);
    return rc;
}
