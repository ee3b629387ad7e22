/* fasa perplexity: exp(mean negative log-likelihood) of a text under the
 * model, over windows of -c tokens. With --stride S < ctx the windows slide
 * by S and only the last S tokens of each (all of the first) are scored, so
 * every scored token sees at least ctx - S tokens of context; by default the
 * windows are disjoint chunks and every token but a window's first is scored.
 *
 * With --decode D the last D tokens of each window are decoded one at a time
 * after a dense prefill of the rest, and only they are scored: this is how a
 * sparse decode-attention policy (--attn) is measured, since prefill is
 * always dense. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "perplexity";

static void help(void) {
    printf("usage: fasa perplexity [options] -f FILE\n\n"
           "  -m, --model FILE     GGUF model (default %s)\n"
           "  -f, --file FILE      text to score\n"
           "  -c, --ctx N          window length in tokens (default 512)\n"
           "      --stride S       slide windows by S tokens, scoring the last S (default: ctx, disjoint)\n"
           "      --max-tokens N   score only the first N tokens of the text (default: all)\n"
           "      --score-last N   score only the last N tokens of each window (llama.cpp's\n"
           "                       llama-perplexity scores the last ctx/2 - 1; default: all but the first)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "      --kv-type T      KV cache element type: f32 or f16 (default f32)\n"
           "      --decode D       decode the last D tokens of each window one by one and score\n"
           "                       only them (default 0; with a sparse --attn: min(256, ctx/2))\n"
           "      --json           print one JSON object instead of text\n"
           "  -h, --help           this help\n",
           CLI_DEFAULT_MODEL);
    cli_attn_help();
}

typedef struct ppl_opts {
    const char *model, *file;
    int64_t ctx, stride, max_tokens, threads, decode, score_last;
    bool json;
    fasa_kv_type kv_type;
    cli_attn attn;
} ppl_opts;

static int parse(int argc, char **argv, ppl_opts *o) {
    enum { O_STRIDE = 256, O_MAX, O_KV, O_JSON, O_DECODE, O_LAST };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"file", required_argument, 0, 'f'},
        {"ctx", required_argument, 0, 'c'},       {"threads", required_argument, 0, 't'},
        {"stride", required_argument, 0, O_STRIDE}, {"max-tokens", required_argument, 0, O_MAX},
        {"kv-type", required_argument, 0, O_KV},  {"json", no_argument, 0, O_JSON},
        {"decode", required_argument, 0, O_DECODE}, {"help", no_argument, 0, 'h'},
        {"score-last", required_argument, 0, O_LAST},
        CLI_ATTN_OPTIONS,                         {0, 0, 0, 0},
    };
    *o = (ppl_opts){.ctx = 512, .decode = -1};
    cli_attn_init(&o->attn);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:f:c:t:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'f': o->file = optarg; break;
        case 'c': ok = cli_int(CMD, "-c", optarg, 2, 1 << 24, &o->ctx); break;
        case 't': ok = cli_int(CMD, "-t", optarg, 1, 1024, &o->threads); break;
        case O_STRIDE: ok = cli_int(CMD, "--stride", optarg, 1, 1 << 24, &o->stride); break;
        case O_MAX: ok = cli_int(CMD, "--max-tokens", optarg, 2, INT32_MAX, &o->max_tokens); break;
        case O_KV: ok = cli_kv_type(CMD, optarg, &o->kv_type); break;
        case O_JSON: o->json = true; break;
        case O_DECODE: ok = cli_int(CMD, "--decode", optarg, 0, 1 << 24, &o->decode); break;
        case O_LAST: ok = cli_int(CMD, "--score-last", optarg, 1, 1 << 24, &o->score_last); break;
        case 'h': help(); return -1;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        case '?': return cli_fail(CMD, "unknown option '%s' (see fasa perplexity --help)", argv[optind - 1]);
        default: ok = cli_attn_option(CMD, c, optarg, &o->attn); break;
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!o->file) return cli_fail(CMD, "no text given: pass -f FILE");
    if (!o->stride) o->stride = o->ctx;
    if (o->stride > o->ctx) return cli_fail(CMD, "--stride %lld is larger than the window -c %lld",
                                            (long long)o->stride, (long long)o->ctx);
    if (o->decode < 0) o->decode = cli_attn_is_sparse(&o->attn) ? (o->ctx / 2 < 256 ? o->ctx / 2 : 256) : 0;
    if (o->decode >= o->ctx)
        return cli_fail(CMD, "--decode %lld must be smaller than the window -c %lld", (long long)o->decode,
                        (long long)o->ctx);
    if (o->decode && o->stride != o->ctx)
        return cli_fail(CMD, "--decode scores the end of disjoint windows; it cannot be combined with --stride");
    if (o->score_last && (o->decode || o->stride != o->ctx))
        return cli_fail(CMD, "--score-last scores the end of disjoint windows; it cannot be combined with --stride "
                             "or --decode");
    if (o->score_last >= o->ctx)
        return cli_fail(CMD, "--score-last %lld must be smaller than the window -c %lld", (long long)o->score_last,
                        (long long)o->ctx);
    return 0;
}

/* -log p(target) from one row of logits, in double. */
static double token_nll(const float *logits, int32_t n_vocab, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

typedef struct ppl_acc {
    double nll;
    int64_t n;
} ppl_acc;

/* Evaluates one window [start, start + len) and scores the tokens whose
 * index inside the window is >= first_scored. Tokens from index `dense_end`
 * on are evaluated one at a time (decode steps). */
static bool score_window(fasa_context *ctx, const int32_t *ids, int32_t len, int32_t first_scored,
                         int32_t dense_end, float *logits, int32_t n_vocab, int32_t n_batch, ppl_acc *acc,
                         cli_progress *prog, int64_t done_before) {
    fasa_context_reset(ctx);
    for (int32_t i = 0; i < len - 1;) {
        int32_t nb = len - 1 - i < n_batch ? len - 1 - i : n_batch;
        if (i >= dense_end) nb = 1;
        else if (i + nb > dense_end) nb = dense_end - i;
        /* A chunk that predicts no scored token needs no logits. */
        const bool scored = i + nb >= first_scored;
        if (fasa_eval(ctx, ids + i, nb, scored ? logits : NULL, true) != FASA_OK) return false;
        cli_progress_update(prog, done_before + i + nb);
        if (!scored) {
            i += nb;
            continue;
        }
        /* logits row t predicts ids[i + t + 1] */
        for (int32_t t = 0; t < nb; t++) {
            const int32_t target = i + t + 1;
            if (target < first_scored) continue;
            acc->nll += token_nll(logits + (int64_t)t * n_vocab, n_vocab, ids[target]);
            acc->n++;
        }
        i += nb;
    }
    return true;
}

static int run(ppl_opts *o, fasa_model *m) {
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    size_t len;
    char *text = cli_read_file(CMD, o->file, &len);
    if (!text) return 1;
    int32_t n_tok;
    int32_t *ids = cli_tokenize(CMD, m, text, len, fasa_model_add_bos(m), false, &n_tok);
    free(text);
    if (!ids) return 1;
    if (o->max_tokens && n_tok > o->max_tokens) n_tok = (int32_t)o->max_tokens;
    const int32_t W = (int32_t)o->ctx, S = (int32_t)o->stride;
    if (n_tok < W) {
        free(ids);
        return cli_fail(CMD, "'%s' has %d tokens, fewer than one window of %d; use a smaller -c", o->file,
                        n_tok, W);
    }
    cli_warn_ctx(CMD, m, W);
    const int32_t n_batch = 256;
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = W;
    cp.n_threads = (int32_t)o->threads;
    cp.n_batch = n_batch;
    cp.kv_type = o->kv_type;
    cp.device = o->attn.device;
    cp.f32_activations = o->attn.f32_act;
    fasa_context *ctx = NULL;
    float *logits = malloc((size_t)n_batch * info.n_vocab * sizeof *logits);
    int rc = 1;
    if (!logits) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (fasa_context_init(m, &cp, &ctx) != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    if (!cli_attn_apply(CMD, m, ctx, &o->attn)) goto done;
    const int32_t n_windows = 1 + (n_tok - W) / S;
    ppl_acc acc = {0};
    cli_progress prog;
    cli_progress_start(&prog, "perplexity", "tok", (int64_t)n_windows * W);
    const double t0 = cli_now();
    for (int32_t w = 0; w < n_windows; w++) {
        const int32_t D = (int32_t)o->decode;
        const int32_t first = D ? W - D : o->score_last ? W - (int32_t)o->score_last : (w == 0 || S == W) ? 1 : W - S;
        /* The token before the first scored one is the first decode step. */
        const int32_t dense_end = D ? W - D - 1 : W;
        if (!score_window(ctx, ids + (int64_t)w * S, W, first, dense_end, logits, info.n_vocab, n_batch, &acc, &prog,
                          (int64_t)w * W)) {
            cli_progress_end(&prog);
            cli_fail(CMD, "%s", fasa_last_error());
            goto done;
        }
    }
    cli_progress_end(&prog);
    const double secs = cli_now() - t0, ppl = exp(acc.nll / (double)acc.n);
    if (o->json)
        printf("{\"ppl\": %.6f, \"nll\": %.8f, \"tokens\": %lld, \"ctx\": %d, \"stride\": %d, "
               "\"windows\": %d, \"decode\": %lld, \"attn\": \"%s\", \"budget\": %d, \"kv_type\": \"%s\", "
               "\"device\": \"%s\", \"seconds\": %.3f}\n",
               ppl, acc.nll / (double)acc.n, (long long)acc.n, W, S, n_windows, (long long)o->decode,
               o->attn.p.method, o->attn.p.budget, o->kv_type == FASA_KV_F16 ? "f16" : "f32",
               cli_device_name(o->attn.device), secs);
    else
        printf("perplexity %.4f over %lld tokens (%d windows of %d, stride %d, %lld decoded, attention %s) in %.1f s\n",
               ppl, (long long)acc.n, n_windows, W, S, (long long)o->decode, o->attn.p.method, secs);
    rc = 0;
done:
    fasa_context_free(ctx);
    free(logits);
    free(ids);
    return rc;
}

int cmd_perplexity(int argc, char **argv) {
    ppl_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st < 0 ? 0 : st;
    fasa_model *m = cli_load_model(CMD, o.model);
    if (!m) return 1;
    int rc = run(&o, m);
    cli_attn_free(&o.attn);
    fasa_model_free(m);
    return rc;
}
