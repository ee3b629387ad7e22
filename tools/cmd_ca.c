/* fasa ca: the Contextual Agreement table (the paper's Table 1) for a model:
 * how much of the exact top-K each method's choice recovers. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "measure/ca.h"

static const char *CMD = "ca";

static void help(void) {
    printf("usage: fasa ca [options] --calib FILE -f TEXT\n\n"
           "Decodes the end of a text with exact attention and reports, for each method and budget K,\n"
           "the mean overlap (%%) of its selection with the exact top-K tokens of every query head\n"
           "(CA), and the share (%%) of each head's exact attention weight its tokens hold (mass\n"
           "recall), averaged over layers, heads and decode steps.\n\n"
           "  -m, --model FILE     GGUF model (default %s)\n"
           "  -f, --file FILE      text\n"
           "      --calib FILE     calibration for fasa rows\n"
           "      --ctx T          tokens of context at the last step (default 4096)\n"
           "      --offset N       skip the first N tokens of the text (default 0)\n"
           "      --decode D       decode steps measured (default 32)\n"
           "      --budgets LIST   comma list of K (default 64,256,512,1024,2048)\n"
           "      --fc LIST        fasa rows: dominant chunks per head (default head_dim/16,/8,/4)\n"
           "      --methods LIST   comma list (default random,stream,snapkv,quest,sparq,fasa)\n"
           "      --per-layer      also print CA and mass recall per layer\n"
           "      --json           print JSON instead of a table\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "  -h, --help           this help\n",
           CLI_DEFAULT_MODEL);
    cli_attn_help();
}

/* Parses "a,b,c" of positive integers into out (at most cap). */
static int parse_int_list(const char *opt, const char *s, int32_t *out, int cap) {
    int n = 0;
    char *copy = strdup(s);
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
        int64_t v;
        if (n == cap || !cli_int(CMD, opt, tok, 1, INT32_MAX, &v)) {
            if (n == cap) cli_fail(CMD, "%s: at most %d values", opt, cap);
            free(copy);
            return -1;
        }
        out[n++] = (int32_t)v;
    }
    free(copy);
    if (!n) cli_fail(CMD, "%s: empty list", opt);
    return n ? n : -1;
}

static void progress(void *user, int32_t done, int32_t total) { cli_progress_update(user, done); }

static void print_table(const char *title, const ca_candidate *cands, int n_cands, const int32_t *budgets,
                        int n_budgets, const double *v) {
    printf("%s\n\n| method |", title);
    for (int b = 0; b < n_budgets; b++) printf(" K=%d |", budgets[b]);
    printf("\n|---|");
    for (int b = 0; b < n_budgets; b++) printf("---|");
    printf("\n");
    for (int i = 0; i < n_cands; i++) {
        printf("| %s |", cands[i].label);
        for (int b = 0; b < n_budgets; b++) printf(" %.1f |", 100.0 * v[i * n_budgets + b]);
        printf("\n");
    }
    printf("\n");
}

/* One table per budget: layers down, methods across, "CA / mass" in each cell. */
static void print_layers(const ca_candidate *cands, int n_cands, const int32_t *budgets, int n_budgets, int b,
                         const ca_result *r, int n_layers) {
    printf("per layer at K=%d: CA %% / mass recall %%\n\n| layer |", budgets[b]);
    for (int i = 0; i < n_cands; i++) printf(" %s |", cands[i].label);
    printf("\n|---|");
    for (int i = 0; i < n_cands; i++) printf("---|");
    printf("\n");
    for (int l = 0; l < n_layers; l++) {
        printf("| %d |", l);
        for (int i = 0; i < n_cands; i++) {
            const size_t at = ((size_t)i * n_budgets + b) * n_layers + l;
            printf(" %.1f / %.1f |", 100.0 * r->ca_layer[at], 100.0 * r->mass_layer[at]);
        }
        printf("\n");
    }
    printf("\n");
}

static void print_series(const char *name, const double *v, int n, int stride) {
    printf(", \"%s\": [", name);
    for (int k = 0; k < n; k++) printf("%s%.6f", k ? ", " : "", v[(size_t)k * stride]);
    printf("]");
}

static void print_json(const ca_candidate *cands, int n_cands, const int32_t *budgets, int n_budgets,
                       const ca_result *r, int n_layers, int64_t ctx, int64_t offset, int64_t decode) {
    printf("{\"ctx\": %lld, \"offset\": %lld, \"decode\": %lld, \"budgets\": [", (long long)ctx, (long long)offset,
           (long long)decode);
    for (int b = 0; b < n_budgets; b++) printf("%s%d", b ? ", " : "", budgets[b]);
    printf("], \"rows\": [");
    for (int i = 0; i < n_cands; i++) {
        printf("%s{\"method\": \"%s\", \"n_tip\": %d", i ? ", " : "", cands[i].params.method, cands[i].params.n_tip);
        print_series("ca", r->ca + (size_t)i * n_budgets, n_budgets, 1);
        print_series("mass", r->mass + (size_t)i * n_budgets, n_budgets, 1);
        if (n_layers) {
            printf(", \"per_layer\": [");
            for (int b = 0; b < n_budgets; b++) {
                const size_t at = ((size_t)i * n_budgets + b) * n_layers;
                printf("%s{\"budget\": %d", b ? ", " : "", budgets[b]);
                print_series("ca", r->ca_layer + at, n_layers, 1);
                print_series("mass", r->mass_layer + at, n_layers, 1);
                printf("}");
            }
            printf("]");
        }
        printf("}");
    }
    printf("]}\n");
}

int cmd_ca(int argc, char **argv) {
    enum { O_CTX = 256, O_OFFSET, O_DECODE, O_BUDGETS, O_FC, O_METHODS, O_JSON, O_LAYERS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"file", required_argument, 0, 'f'},
        {"threads", required_argument, 0, 't'},     {"ctx", required_argument, 0, O_CTX},
        {"offset", required_argument, 0, O_OFFSET}, {"decode", required_argument, 0, O_DECODE},
        {"budgets", required_argument, 0, O_BUDGETS}, {"fc-list", required_argument, 0, O_FC},
        {"methods", required_argument, 0, O_METHODS}, {"json", no_argument, 0, O_JSON},
        {"per-layer", no_argument, 0, O_LAYERS},
        {"help", no_argument, 0, 'h'},              CLI_ATTN_OPTIONS,
        {0, 0, 0, 0},
    };
    const char *model = NULL, *file = NULL, *methods = "random,stream,snapkv,quest,sparq,fasa";
    int64_t threads = 0, ctx = 4096, offset = 0, decode = 32;
    int32_t budgets[16] = {64, 256, 512, 1024, 2048}, fcs[16];
    int n_budgets = 5, n_fc = 0;
    bool json = false, per_layer = false;
    cli_attn base;
    cli_attn_init(&base);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:f:t:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 't': ok = cli_int(CMD, "-t", optarg, 1, 1024, &threads); break;
        case O_CTX: ok = cli_int(CMD, "--ctx", optarg, 2, 1 << 24, &ctx); break;
        case O_OFFSET: ok = cli_int(CMD, "--offset", optarg, 0, INT32_MAX, &offset); break;
        case O_DECODE: ok = cli_int(CMD, "--decode", optarg, 1, 1 << 20, &decode); break;
        case O_BUDGETS: ok = (n_budgets = parse_int_list("--budgets", optarg, budgets, 16)) > 0; break;
        case O_FC: ok = (n_fc = parse_int_list("--fc-list", optarg, fcs, 16)) > 0; break;
        case O_METHODS: methods = optarg; break;
        case O_JSON: json = true; break;
        case O_LAYERS: per_layer = true; break;
        case 'h': help(); return 0;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        case '?': return cli_fail(CMD, "unknown option '%s' (see fasa ca --help)", argv[optind - 1]);
        default:
            /* --fc N is accepted as a one-element --fc-list. */
            if (c == CLI_ATTN_BASE + 2) ok = (n_fc = parse_int_list("--fc", optarg, fcs, 16)) > 0;
            else ok = cli_attn_option(CMD, c, optarg, &base);
            break;
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!cli_attn_cpu_only(CMD, &base)) return 1;
    if (base.f32_act) return cli_fail(CMD, "--f32-act applies to generate, perplexity and eval"), 1;
    if (!file) return cli_fail(CMD, "no text given: pass -f FILE");
    if (decode >= ctx) return cli_fail(CMD, "--decode %lld must be smaller than --ctx %lld", (long long)decode, (long long)ctx);

    fasa_model *m = cli_load_model(CMD, model);
    if (!m) return 1;
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    if (!n_fc) {
        n_fc = 0;
        for (int div = 16; div >= 4; div /= 2)
            if (info.head_dim / div >= 1) fcs[n_fc++] = info.head_dim / div;
    }
    ca_candidate cands[64];
    int n_cands = 0, rc = 1;
    int32_t *ids = NULL;
    double *res = NULL, *mass = NULL, *ca_l = NULL, *mass_l = NULL;
    char *list = strdup(methods);
    bool ok = true;
    for (char *tok = strtok(list, ","); tok && ok; tok = strtok(NULL, ",")) {
        const int reps = strcmp(tok, "fasa") ? 1 : n_fc;
        for (int r = 0; r < reps && ok; r++) {
            if (n_cands == 64) ok = !cli_fail(CMD, "too many methods");
            ca_candidate *cd = &cands[n_cands++];
            cd->params = base.p;
            cd->params.method = tok;
            cd->params.dense_layers = ""; /* every layer is measured */
            if (strcmp(tok, "fasa")) snprintf(cd->label, sizeof cd->label, "%s", tok);
            else {
                cd->params.n_tip = fcs[r];
                snprintf(cd->label, sizeof cd->label, "fasa (%d FCs)", fcs[r]);
                if (!base.calib_path) ok = !cli_fail(CMD, "the fasa rows need a calibration: pass --calib FILE");
            }
        }
    }
    if (!ok) goto done;
    if (base.calib_path && fasa_calib_load(base.calib_path, m, &base.calib) != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    for (int i = 0; i < n_cands; i++) cands[i].params.calib = base.calib;

    size_t len;
    char *text = cli_read_file(CMD, file, &len);
    int32_t n = 0;
    if (!text || !(ids = cli_tokenize(CMD, m, text, len, fasa_model_add_bos(m), false, &n))) {
        free(text);
        goto done;
    }
    free(text);
    if (offset + ctx > n) {
        cli_fail(CMD, "'%s' has %d tokens; --offset %lld + --ctx %lld needs more", file, n, (long long)offset,
                 (long long)ctx);
        goto done;
    }
    if (ctx > info.n_ctx_train) {
        cli_fail(CMD, "--ctx %lld exceeds the model's context of %d", (long long)ctx, info.n_ctx_train);
        goto done;
    }
    const size_t cells = (size_t)n_cands * n_budgets, L = (size_t)info.n_layers;
    res = calloc(cells, sizeof *res);
    mass = calloc(cells, sizeof *mass);
    ca_l = calloc(cells * L, sizeof *ca_l);
    mass_l = calloc(cells * L, sizeof *mass_l);
    if (!res || !mass || !ca_l || !mass_l) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    cli_progress prog;
    cli_progress_start(&prog, "measuring", "steps", decode);
    const ca_request req = {cands, n_cands, budgets, n_budgets, (int32_t)decode, (int32_t)threads, progress, &prog};
    const ca_result out = {res, mass, ca_l, mass_l};
    const double t0 = cli_now();
    fasa_status st = ca_measure(m, ids + offset, (int32_t)ctx, &req, &out);
    cli_progress_end(&prog);
    if (st != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    if (json) print_json(cands, n_cands, budgets, n_budgets, &out, per_layer ? info.n_layers : 0, ctx, offset, decode);
    else {
        printf("context %lld, %lld decode steps, %d layers x %d heads (%.0f s)\n\n", (long long)ctx,
               (long long)decode, info.n_layers, info.n_heads, cli_now() - t0);
        print_table("compound CA (%)", cands, n_cands, budgets, n_budgets, res);
        print_table("attention-mass recall (%): the share of each head's exact softmax weight the chosen tokens hold",
                    cands, n_cands, budgets, n_budgets, mass);
        if (per_layer)
            for (int b = 0; b < n_budgets; b++) print_layers(cands, n_cands, budgets, n_budgets, b, &out, info.n_layers);
    }
    rc = 0;
done:
    free(res);
    free(mass);
    free(ca_l);
    free(mass_l);
    free(ids);
    free(list);
    cli_attn_free(&base);
    fasa_model_free(m);
    return rc;
}
