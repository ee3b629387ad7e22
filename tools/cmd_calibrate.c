/* fasa calibrate: find each head's dominant frequency chunks on a text and
 * write them to a calibration file. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "calib/calib.h"

static const char *CMD = "calibrate";

static void help(void) {
    printf("usage: fasa calibrate [options] -f TEXT -o FILE\n\n"
           "Decodes the end of a text densely and measures, at every step, layer and query head, how\n"
           "often each RoPE frequency chunk alone picks the same top-K* tokens as the full q.k.\n\n"
           "  -m, --model FILE     GGUF model (default %s)\n"
           "  -f, --file FILE      calibration text\n"
           "  -o, --out FILE       calibration file to write (JSON)\n"
           "      --budget K       K*, the top-k size agreement is measured at (default 256)\n"
           "      --tokens N       use the first N tokens of the text (default 2048)\n"
           "      --decode D       of which the last D are decoded and measured (default 128)\n"
           "      --greedy G       also choose each KV group's first G FCs greedily, as a set: G more\n"
           "                       passes over the D steps, each adding the FC that most raises the\n"
           "                       attention mass the group's compound top-K* holds (default 0)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "  -h, --help           this help\n",
           CLI_DEFAULT_MODEL);
}

static void progress(void *user, int32_t done, int32_t total) { cli_progress_update(user, done); }

int cmd_calibrate(int argc, char **argv) {
    enum { O_BUDGET = 256, O_TOKENS, O_DECODE, O_GREEDY };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"file", required_argument, 0, 'f'},
        {"out", required_argument, 0, 'o'},         {"threads", required_argument, 0, 't'},
        {"budget", required_argument, 0, O_BUDGET}, {"tokens", required_argument, 0, O_TOKENS},
        {"decode", required_argument, 0, O_DECODE}, {"greedy", required_argument, 0, O_GREEDY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model = NULL, *file = NULL, *out = NULL;
    int64_t threads = 0, n_tokens = 2048;
    fasa_calib_params cp = fasa_calib_default_params();
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:f:o:t:h", opts, NULL)) != -1) {
        int64_t v = 0;
        bool ok = true;
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'o': out = optarg; break;
        case 't': ok = cli_int(CMD, "-t", optarg, 1, 1024, &threads); break;
        case O_BUDGET: ok = cli_int(CMD, "--budget", optarg, 1, INT32_MAX, &v), cp.budget = (int32_t)v; break;
        case O_TOKENS: ok = cli_int(CMD, "--tokens", optarg, 2, INT32_MAX, &n_tokens); break;
        case O_DECODE: ok = cli_int(CMD, "--decode", optarg, 1, INT32_MAX, &v), cp.n_decode = (int32_t)v; break;
        case O_GREEDY: ok = cli_int(CMD, "--greedy", optarg, 0, 4096, &v), cp.greedy = (int32_t)v; break;
        case 'h': help(); return 0;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_fail(CMD, "unknown option '%s' (see fasa calibrate --help)", argv[optind - 1]);
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!file || !out) return cli_fail(CMD, "give the calibration text (-f) and the output file (-o)");
    cp.n_threads = (int32_t)threads;

    fasa_model *m = cli_load_model(CMD, model);
    if (!m) return 1;
    size_t len;
    char *text = cli_read_file(CMD, file, &len);
    int32_t n = 0, *ids = text ? cli_tokenize(CMD, m, text, len, fasa_model_add_bos(m), false, &n) : NULL;
    free(text);
    int rc = 1;
    if (!ids) goto done;
    if (n < n_tokens)
        fprintf(stderr, "fasa calibrate: note: '%s' has %d tokens, fewer than --tokens %lld; using all\n", file,
                n, (long long)n_tokens);
    else n = (int32_t)n_tokens;
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    if (n > info.n_ctx_train) {
        cli_fail(CMD, "--tokens %d exceeds the model's context of %d", n, info.n_ctx_train);
        goto done;
    }
    cli_progress prog;
    cli_progress_start(&prog, "calibrating", "steps", (int64_t)cp.n_decode * (cp.greedy + 1));
    cp.progress = progress;
    cp.user = &prog;
    const double t0 = cli_now();
    fasa_calib *cal = NULL;
    fasa_status st = fasa_calibrate(m, ids, n, &cp, &cal);
    cli_progress_end(&prog);
    if (st == FASA_OK) st = fasa_calib_save(cal, out);
    if (st != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        fasa_calib_free(cal);
        goto done;
    }
    /* A short summary: how much the best chunks agree, on average. */
    const int32_t F = info.head_dim / 2, tip = info.head_dim / 8 > 0 ? info.head_dim / 8 : 1;
    double best = 0.0, top = 0.0, all = 0.0;
    for (int32_t l = 0; l < info.n_layers; l++)
        for (int32_t h = 0; h < info.n_heads; h++) {
            const int32_t *r = fasa_calib_ranking(cal, l, h);
            best += fasa_calib_ca(cal, l, h, r[0]);
            for (int32_t i = 0; i < F; i++) {
                if (i < tip) top += fasa_calib_ca(cal, l, h, r[i]);
                else all += fasa_calib_ca(cal, l, h, r[i]);
            }
        }
    const double heads = (double)info.n_layers * info.n_heads;
    printf("calibrated %d layers x %d heads on %d tokens (%d decode steps, K* = %d) in %.1f s -> %s\n",
           info.n_layers, info.n_heads, n, cp.n_decode, cp.budget, cli_now() - t0, out);
    printf("mean CA: best chunk %.3f, top %d chunks %.3f, the other %d chunks %.3f\n", best / heads, tip,
           top / (heads * tip), F - tip, all / (heads * (F - tip)));
    if (cal->n_greedy > 0) {
        /* the compound recall the greedy sets reach, at a few sizes */
        printf("greedy sets, mean attention-mass recall of the group's top-%d:", cp.budget);
        for (int32_t r = 1; r <= cal->n_greedy; r *= 2) {
            double sum = 0.0;
            for (int32_t l = 0; l < info.n_layers; l++)
                for (int32_t h = 0; h < info.n_kv_heads; h++) sum += cal->greedy_mass[calib_group_at(cal, l, h) + r - 1];
            printf(" %d FCs %.3f%s", r, sum / ((double)info.n_layers * info.n_kv_heads), 2 * r <= cal->n_greedy ? "," : "");
        }
        printf("\n");
    }
    fasa_calib_free(cal);
    rc = 0;
done:
    free(ids);
    fasa_model_free(m);
    return rc;
}
