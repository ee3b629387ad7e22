/* Engine speed on this machine: prefill and decode throughput of a model,
 * and decode's achieved memory bandwidth as a fraction of the machine's
 * measured read bandwidth (measured here, in the same run).
 *
 * Decode at a context of T tokens is timed with the KV cache filled directly
 * with random values rather than by prefilling T tokens: the work of a decode
 * step does not depend on the values, and this keeps the benchmark short.
 *
 * usage: bench_decode [-m MODEL] [-t THREADS] [--ctx 512,2048,8192] [--reps N] [--kv-type f32|f16] */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "context.h"
#include "fasa.h"
#include "quant.h"

int main(int argc, char **argv) {
    const char *model = "models/SmolLM2-135M-Instruct.Q4_1.gguf", *ctx_list = "512,2048,8192";
    int threads = omp_get_num_procs(), reps = 32;
    fasa_kv_type kv_type = FASA_KV_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx_list = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--kv-type") && i + 1 < argc) kv_type = strcmp(argv[++i], "f16") ? FASA_KV_F32 : FASA_KV_F16;
        else {
            fprintf(stderr, "usage: bench_decode [-m MODEL] [-t THREADS] [--ctx LIST] [--reps N] [--kv-type f32|f16]\n");
            return 1;
        }
    }
    if (threads < 1 || reps < 3) {
        fprintf(stderr, "bench_decode: need -t >= 1 and --reps >= 3\n");
        return 1;
    }
    fasa_model *m;
    if (fasa_model_load(model, &m) != FASA_OK) {
        fprintf(stderr, "bench_decode: %s\n", fasa_last_error());
        return 1;
    }
    fasa_model_info in;
    fasa_model_get_info(m, &in);
    const double bw = bench_read_bandwidth(threads);
    printf("model: %s (%s), %.1f MB of weights read per token\n", in.name, model, in.weight_bytes / 1e6);
    printf("threads: %d, KV cache: %s, measured read bandwidth: %.2f GB/s\n\n", threads,
           kv_type == FASA_KV_F16 ? "f16" : "f32", bw);

    /* Prefill: 512 tokens of a fixed id pattern, median of 3 runs. */
    enum { N_PREFILL = 512 };
    int32_t toks[N_PREFILL];
    for (int i = 0; i < N_PREFILL; i++) toks[i] = 100 + (i * 7919) % (in.n_vocab - 200);
    fasa_context_params cp = fasa_context_default_params();
    cp.n_threads = threads;
    cp.kv_type = kv_type;
    cp.n_ctx = N_PREFILL;
    cp.n_batch = N_PREFILL;
    fasa_context *c;
    if (fasa_context_init(m, &cp, &c) != FASA_OK) {
        fprintf(stderr, "bench_decode: %s\n", fasa_last_error());
        return 1;
    }
    float *logits = malloc((size_t)in.n_vocab * sizeof *logits);
    double tp[3];
    for (int r = 0; r < 3; r++) {
        fasa_context_reset(c);
        double t0 = bench_now();
        fasa_eval(c, toks, N_PREFILL, logits, false);
        tp[r] = bench_now() - t0;
    }
    fasa_context_free(c);
    const double flops = 2.0 * (double)in.n_params * N_PREFILL;
    printf("| prefill tokens | tok/s | GFLOP/s (weights only) |\n|---|---|---|\n");
    printf("| %d | %.1f | %.1f |\n\n", N_PREFILL, N_PREFILL / bench_median(tp, 3), flops / bench_median(tp, 3) / 1e9);

    printf("| context | decode tok/s | ms/token | bytes/token (MB) | GB/s | fraction of read bandwidth |\n");
    printf("|---|---|---|---|---|---|\n");
    char *list = strdup(ctx_list);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        const int T = atoi(tok);
        if (T < 1 || T > in.n_ctx_train) {
            fprintf(stderr, "bench_decode: context %s outside [1, %d]\n", tok, in.n_ctx_train);
            return 1;
        }
        cp.n_ctx = T + reps + 1;
        cp.n_batch = 1;
        if (fasa_context_init(m, &cp, &c) != FASA_OK) {
            fprintf(stderr, "bench_decode: %s\n", fasa_last_error());
            return 1;
        }
        context_fill_random(c, T - 1, 12345);
        double *t = malloc((size_t)reps * sizeof *t);
        int32_t tok_id = 1234;
        for (int r = 0; r < reps; r++) {
            double t0 = bench_now();
            fasa_eval(c, &tok_id, 1, logits, false);
            t[r] = bench_now() - t0;
        }
        /* Each step reads every weight once and the K and V rows of ~T positions. */
        const double kv_read = 2.0 * in.n_layers * in.n_kv_heads * (double)(T + reps / 2) * in.head_dim *
                               (kv_type == FASA_KV_F16 ? 2 : 4);
        const double bytes = (double)in.weight_bytes + kv_read, med = bench_median(t, reps);
        printf("| %d | %.1f | %.2f | %.1f | %.2f | %.0f%% |\n", T, 1.0 / med, med * 1e3, bytes / 1e6,
               bytes / med / 1e9, 100.0 * bytes / med / 1e9 / bw);
        free(t);
        fasa_context_free(c);
    }
    free(list);
    free(logits);
    fasa_model_free(m);
    return 0;
}
