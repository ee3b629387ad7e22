/* Decode attention, full versus a sparse policy (default fasa, budget 256,
 * N_tip 8), in the same run: the attention of all layers for one token
 * (selection + exact attention), and the whole decode step, at several
 * contexts. The KV cache is filled with random values (costs do not depend
 * on them); without --calib the fasa chunks come from a synthetic
 * calibration, which changes which coordinates are read, not how many.
 *
 * usage: bench_attention [-m MODEL] [-t THREADS] [--ctx 2048,4096,8192] [--reps N]
 *                        [--budget N] [--fc N] [--calib FILE] [--method NAME] [--select head|group]
 *                        [--kv-type f32|f16] */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "backend_cpu.h"
#include "fasa.h"
#include "calib/calib.h"

typedef struct opts {
    const char *model, *ctx_list, *calib, *method;
    int threads, reps, budget, n_tip, per_head;
    fasa_kv_type kv_type;
} opts;

static int usage(void) {
    fprintf(stderr, "usage: bench_attention [-m MODEL] [-t THREADS] [--ctx LIST] [--reps N] [--budget N] [--fc N]\n"
                    "                       [--calib FILE] [--method NAME] [--select head|group] [--kv-type f32|f16]\n");
    return 1;
}

/* Median seconds of one token's attention over all layers, and of a whole decode step. */
static void time_policy(fasa_context *ctx, const fasa_model_info *in, int T, int reps, double *attn, double *step) {
    cpu_backend *c = context_cpu(ctx, "bench_attention");
    double *t = malloc(sizeof(double) * reps);
    uint64_t x = 99;
    const int64_t nq = (int64_t)in->n_heads * in->head_dim;
    for (int r = 0; r < reps; r++) {
        for (int64_t i = 0; i < nq; i++) c->q[i] = 4.0f * bench_uniform(&x);
        const double t0 = bench_now();
        for (int32_t l = 0; l < in->n_layers; l++) forward_attention(c, l, T - 1, 1);
        t[r] = bench_now() - t0;
    }
    *attn = bench_median(t, reps);
    float *logits = malloc(sizeof(float) * in->n_vocab);
    int32_t tok = 1234;
    for (int r = 0; r < reps; r++) {
        fasa_context_truncate(ctx, T - 1);
        const double t0 = bench_now();
        fasa_eval(ctx, &tok, 1, logits, false);
        t[r] = bench_now() - t0;
    }
    *step = bench_median(t, reps);
    free(logits);
    free(t);
}

int main(int argc, char **argv) {
    opts o = {"models/SmolLM2-135M-Instruct.Q4_1.gguf", "2048,4096,8192", NULL, "fasa", omp_get_num_procs(), 21,
              256, 8, 0, FASA_KV_F32};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "-m")) o.model = v;
        else if (!strcmp(a, "-t")) o.threads = atoi(v);
        else if (!strcmp(a, "--ctx")) o.ctx_list = v;
        else if (!strcmp(a, "--reps")) o.reps = atoi(v);
        else if (!strcmp(a, "--budget")) o.budget = atoi(v);
        else if (!strcmp(a, "--fc")) o.n_tip = atoi(v);
        else if (!strcmp(a, "--calib")) o.calib = v;
        else if (!strcmp(a, "--method")) o.method = v;
        else if (!strcmp(a, "--select")) o.per_head = strcmp(v, "head") ? 2 : 1;
        else if (!strcmp(a, "--kv-type")) o.kv_type = strcmp(v, "f16") ? FASA_KV_F32 : FASA_KV_F16;
        else return usage();
        i++;
    }
    if (o.threads < 1 || o.reps < 3) return usage();
    fasa_model *m;
    if (fasa_model_load(o.model, &m) != FASA_OK) {
        fprintf(stderr, "bench_attention: %s\n", fasa_last_error());
        return 1;
    }
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    fasa_calib *cal = NULL;
    if (o.calib && fasa_calib_load(o.calib, m, &cal) != FASA_OK) {
        fprintf(stderr, "bench_attention: %s\n", fasa_last_error());
        return 1;
    }
    if (!cal) { /* synthetic: a fixed pseudo-random ranking per head */
        cal = calib_alloc(&in);
        uint64_t x = 7;
        for (int64_t i = 0; i < (int64_t)in.n_layers * in.n_heads * (in.head_dim / 2); i++)
            cal->ca[i] = 0.5 + bench_uniform(&x);
        calib_rank(cal);
    }
    const double bw = bench_read_bandwidth(o.threads);
    printf("model: %s; threads %d; KV %s; %s budget %d, N_tip %d; read bandwidth %.2f GB/s\n\n", in.name, o.threads,
           o.kv_type == FASA_KV_F16 ? "f16" : "f32", o.method, o.budget, o.n_tip, bw);
    printf("| context | full attn ms | %s attn ms | attn speedup | full attn GB/s (of read bw) | full step ms | "
           "%s step ms | step speedup |\n|---|---|---|---|---|---|---|---|\n", o.method, o.method);
    char *list = strdup(o.ctx_list);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        const int T = atoi(tok);
        fasa_context_params cp = fasa_context_default_params();
        cp.n_ctx = T;
        cp.n_threads = o.threads;
        cp.kv_type = o.kv_type;
        fasa_context *c;
        if (T < 2 || T > in.n_ctx_train || fasa_context_init(m, &cp, &c) != FASA_OK) {
            fprintf(stderr, "bench_attention: context %s: %s\n", tok, fasa_last_error());
            return 1;
        }
        context_fill_random(c, T - 1, 12345);
        double fa, fs, sa, ss;
        time_policy(c, &in, T, o.reps, &fa, &fs);
        const fasa_attn_params ap = {.method = o.method, .budget = o.budget, .n_tip = o.n_tip, .calib = cal,
                                     .per_head = o.per_head};
        if (fasa_context_set_attention(c, &ap) != FASA_OK) {
            fprintf(stderr, "bench_attention: %s\n", fasa_last_error());
            return 1;
        }
        time_policy(c, &in, T, o.reps, &sa, &ss);
        const double kv_bytes = 2.0 * in.n_layers * in.n_kv_heads * (double)T * in.head_dim * (o.kv_type == FASA_KV_F32 ? 4.0 : 2.0);
        printf("| %d | %.2f | %.2f | %.2fx | %.2f (%.0f%%) | %.2f | %.2f | %.2fx |\n", T, fa * 1e3, sa * 1e3, fa / sa,
               kv_bytes / fa / 1e9, 100.0 * kv_bytes / fa / 1e9 / bw, fs * 1e3, ss * 1e3, fs / ss);
        fflush(stdout);
        fasa_context_free(c);
    }
    free(list);
    fasa_calib_free(cal);
    fasa_model_free(m);
    return 0;
}
