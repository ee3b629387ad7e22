/* fasa generate: prompt -> streamed continuation, with timing. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "generate";

static void help(void) {
    printf("usage: fasa generate [options] (-p PROMPT | -f FILE)\n\n"
           "  -m, --model FILE     GGUF model (default %s)\n"
           "  -p, --prompt TEXT    prompt text\n"
           "  -f, --file FILE      read the prompt from a file\n"
           "  -n, --n-predict N    tokens to generate (default 128)\n"
           "      --chat           wrap the prompt as a user turn of the model's chat template\n"
           "      --system TEXT    system prompt for --chat (default: the template's own)\n"
           "      --temp T         sampling temperature, 0 = greedy (default 0.7)\n"
           "      --top-p P        nucleus sampling threshold (default 0.9)\n"
           "      --top-k K        keep the K most likely tokens, 0 = all (default 40)\n"
           "      --seed S         random seed (default 42)\n"
           "  -c, --ctx N          context size in tokens (default: prompt + n, at most the model's)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "      --kv-type T      KV cache element type: f32 or f16 (default f32)\n"
           "      --special        parse control tokens such as <|im_start|> in the prompt\n"
           "  -h, --help           this help\n",
           CLI_DEFAULT_MODEL);
    cli_attn_help();
}

typedef struct gen_opts {
    const char *model, *prompt, *file, *system;
    int64_t n_predict, ctx, threads, top_k, seed;
    double temp, top_p;
    bool chat, special;
    fasa_kv_type kv_type;
    cli_attn attn;
} gen_opts;

/* Returns 0 to go on, 1 on a usage error, -1 after --help. */
static int parse(int argc, char **argv, gen_opts *o) {
    enum { O_CHAT = 256, O_SYSTEM, O_TEMP, O_TOPP, O_TOPK, O_SEED, O_KV, O_SPECIAL };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},    {"n-predict", required_argument, 0, 'n'},
        {"ctx", required_argument, 0, 'c'},     {"threads", required_argument, 0, 't'},
        {"chat", no_argument, 0, O_CHAT},       {"system", required_argument, 0, O_SYSTEM},
        {"temp", required_argument, 0, O_TEMP}, {"top-p", required_argument, 0, O_TOPP},
        {"top-k", required_argument, 0, O_TOPK}, {"seed", required_argument, 0, O_SEED},
        {"kv-type", required_argument, 0, O_KV}, {"special", no_argument, 0, O_SPECIAL},
        {"help", no_argument, 0, 'h'},          CLI_ATTN_OPTIONS,
        {0, 0, 0, 0},
    };
    *o = (gen_opts){.n_predict = 128, .top_k = 40, .seed = 42, .temp = 0.7, .top_p = 0.9};
    cli_attn_init(&o->attn);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:p:f:n:c:t:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'f': o->file = optarg; break;
        case 'n': ok = cli_int(CMD, "-n", optarg, 0, 1 << 24, &o->n_predict); break;
        case 'c': ok = cli_int(CMD, "-c", optarg, 1, 1 << 24, &o->ctx); break;
        case 't': ok = cli_int(CMD, "-t", optarg, 1, 1024, &o->threads); break;
        case O_CHAT: o->chat = true; break;
        case O_SYSTEM: o->system = optarg; break;
        case O_TEMP: ok = cli_float(CMD, "--temp", optarg, 0, 100, &o->temp); break;
        case O_TOPP: ok = cli_float(CMD, "--top-p", optarg, 1e-6, 1, &o->top_p); break;
        case O_TOPK: ok = cli_int(CMD, "--top-k", optarg, 0, INT32_MAX, &o->top_k); break;
        case O_SEED: ok = cli_int(CMD, "--seed", optarg, 0, INT64_MAX, &o->seed); break;
        case O_KV: ok = cli_kv_type(CMD, optarg, &o->kv_type); break;
        case O_SPECIAL: o->special = true; break;
        case 'h': help(); return -1;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        case '?': return cli_fail(CMD, "unknown option '%s' (see fasa generate --help)", argv[optind - 1]);
        default: ok = cli_attn_option(CMD, c, optarg, &o->attn); break;
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!o->prompt == !o->file) return cli_fail(CMD, "give exactly one of -p PROMPT or -f FILE");
    return 0;
}

/* Prints a token's bytes as they come; a UTF-8 character split across tokens
 * is simply completed by the next write. */
static void emit(const fasa_model *m, int32_t id) {
    char buf[256];
    int32_t n = fasa_token_piece(m, id, buf, sizeof buf);
    if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
}

static int run(gen_opts *o, fasa_model *m) {
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    char *text = NULL;
    size_t len = 0;
    if (o->file) {
        if (!(text = cli_read_file(CMD, o->file, &len))) return 1;
    }
    const char *user = o->file ? text : o->prompt;
    char *chat = NULL;
    if (o->chat && !(chat = fasa_chat_prompt(m, o->system, user))) {
        free(text);
        return cli_fail(CMD, "%s", fasa_last_error());
    }
    /* prompt points into text or chat, which live until the end: it is
     * echoed after the prefill. */
    const char *prompt = chat ? chat : user;
    int32_t n_prompt = 0;
    int32_t *ids = cli_tokenize(CMD, m, prompt, strlen(prompt), fasa_model_add_bos(m), o->chat || o->special,
                                &n_prompt);
    fasa_context *ctx = NULL;
    fasa_sampler *smp = NULL;
    float *logits = NULL;
    int rc = 1;
    if (!ids) goto done;
    if (n_prompt == 0) {
        cli_fail(CMD, "the prompt is empty");
        goto done;
    }
    int64_t n_ctx = o->ctx ? o->ctx : n_prompt + o->n_predict;
    if (!o->ctx && n_ctx > info.n_ctx_train) n_ctx = info.n_ctx_train;
    if (n_prompt >= n_ctx) {
        cli_fail(CMD, "the prompt has %d tokens but the context holds %lld; use a shorter prompt%s", n_prompt,
                 (long long)n_ctx, o->ctx ? " or a larger -c" : "");
        goto done;
    }

    cli_warn_ctx(CMD, m, n_ctx);
    fasa_context_params cp = fasa_context_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_threads = (int32_t)o->threads;
    cp.kv_type = o->kv_type;
    cp.device = o->attn.device;
    cp.f32_activations = o->attn.f32_act;
    fasa_sampler_params sp = {(float)o->temp, (float)o->top_p, (int32_t)o->top_k, (uint64_t)o->seed};
    if (!(logits = malloc((size_t)info.n_vocab * sizeof *logits))) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (fasa_context_init(m, &cp, &ctx) != FASA_OK || fasa_sampler_init(&sp, info.n_vocab, &smp) != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    if (!cli_attn_apply(CMD, m, ctx, &o->attn)) goto done;

    /* Prefill in chunks so a long prompt shows progress. */
    cli_progress prog;
    cli_progress_start(&prog, "prefill", "tok", n_prompt);
    const double t0 = cli_now();
    for (int32_t i = 0; i < n_prompt; i += 256) {
        const int32_t nb = n_prompt - i < 256 ? n_prompt - i : 256;
        if (fasa_eval(ctx, ids + i, nb, logits, false) != FASA_OK) {
            cli_progress_end(&prog);
            cli_fail(CMD, "%s", fasa_last_error());
            goto done;
        }
        cli_progress_update(&prog, i + nb);
    }
    cli_progress_end(&prog);
    const double t1 = cli_now();
    if (!o->chat) fwrite(prompt, 1, strlen(prompt), stdout);

    /* Each decode step samples its successor where the logits are (on a
     * GPU they never come back to the host). */
    int32_t n_gen = 0, n_dec = 0, tok = fasa_sampler_sample(smp, logits);
    while (n_gen < o->n_predict) {
        if (fasa_token_is_eog(m, tok)) break;
        emit(m, tok);
        n_gen++;
        if (n_gen == o->n_predict || fasa_context_n_past(ctx) >= fasa_context_n_ctx(ctx)) break;
        if (fasa_decode_sample(ctx, tok, smp, &tok) != FASA_OK) {
            cli_fail(CMD, "%s", fasa_last_error());
            goto done;
        }
        n_dec++;
    }
    const double t2 = cli_now();
    printf("\n");
    fprintf(stderr, "\nprefill: %d tokens in %.3f s (%.1f tok/s)\ndecode:  %d tokens in %.3f s (%.1f tok/s)\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0), n_dec, t2 - t1, n_dec > 0 ? n_dec / (t2 - t1) : 0.0);
    rc = 0;
done:
    fasa_sampler_free(smp);
    fasa_context_free(ctx);
    free(logits);
    free(ids);
    free(chat);
    free(text);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st < 0 ? 0 : st;
    fasa_model *m = cli_load_model(CMD, o.model);
    if (!m) return 1;
    int rc = run(&o, m);
    cli_attn_free(&o.attn);
    fasa_model_free(m);
    return rc;
}
