/* fasa eval TASK: runs a grid of decode-attention configurations over a
 * task's samples and appends one JSON line per measured cell to
 * DIR/results.jsonl. Cells already in the file are skipped, so an
 * interrupted run resumes where it stopped. The tasks live in src/eval/. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval/task.h"

static const char *CMD = "eval";

static const char *const default_texts = "data/austen/emma.txt,data/austen/pride.txt,data/code/python-stdlib.txt,"
                                         "data/austen/mansfield.txt,data/austen/sense.txt,data/austen/northanger.txt";

/* Per-task defaults: contexts, decode length, samples. */
static const struct task_defaults {
    const char *name;
    const char *ctx;
    int32_t decode;
    int32_t samples;
    const char *what;
} tasks[] = {
    {"ppl", "4096,7168", 512, 3, "perplexity of D tokens decoded after a dense prefill of P (--ctx) tokens"},
    {"needle", "2048,4096,7168", 0, 1, "retrieval: passkey and RULER-style needles in a haystack"},
    {"gen", "1024", 256, 1, "greedy generation: agreement with full, KL, repetition"},
    {"ca", "4096", 32, 1, "contextual agreement of each method's selection with the exact top-K"},
    {"qa", NULL, 64, 1, "a question about a document (--doc, --question), answered under each method"},
};

static void help(void) {
    printf("usage: fasa eval TASK [options]\n\ntasks:\n");
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++) printf("  %-8s %s\n", tasks[i].name, tasks[i].what);
    printf("\n"
           "  -m, --model FILE     GGUF model (default %s)\n"
           "      --attn LIST      methods (default full,oracle,fasa,stream,h2o,snapkv,quest,sparq,random)\n"
           "      --budget LIST    token budgets (default 64,128,256,512,1024)\n"
           "      --fc LIST        fasa: N_tip values (default head_dim/16, /8, 3/16: 4,8,12 for d = 64)\n"
           "      --calib FILE     calibration for fasa (from `fasa calibrate`)\n"
           "      --ctx LIST       ppl: prefill lengths P [4096,7168]; needle: prompt lengths [2048,4096,7168];\n"
           "                       gen: book prompt length [1024]; ca: context [4096]\n"
           "      --decode N       ppl: tokens decoded and scored [512]; gen: tokens generated [256];\n"
           "                       ca: decode steps measured [32]; qa: longest answer [64]\n"
           "      --samples N      windows / prompts per context (ppl 3, others 1); sample s reads text s mod n\n"
           "      --seed S         passage offsets and needle values (default 1)\n"
           "      --out DIR        results folder (default out/eval): DIR/results.jsonl\n"
           "      --text LIST      evaluation texts (default: five Austen novels and Python sources,\n"
           "                       made by scripts/make-data.sh; persuasion.txt is kept for calibration)\n"
           "      --kinds LIST     needle: passkey,number,uuid,multikey,multivalue,vartrack (default all)\n"
           "      --depths LIST    needle: depths in [0, 1] (default 10 depths 0 .. 1)\n"
           "      --haystack H     needle: book (default) or filler (repeated plain sentences)\n"
           "      --chat / --no-chat  needle and qa prompts in the chat template (default on);\n"
           "                       gen: chat requests instead of book passages (default off)\n"
           "      --doc FILE       qa: the document the question is about (prefilled densely)\n"
           "      --question TEXT  qa: the question (decoded through each method)\n"
           "      --expect LIST    qa: strings a right answer contains (comma list; score = fraction found)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "      --kv-type T      KV cache element type: f32 or f16 (default f32)\n"
           "  -h, --help           this help\n\n"
           "`fasa report DIR` turns the results into tables and plots.\n",
           CLI_DEFAULT_MODEL);
    cli_attn_help();
}

typedef struct eval_opts {
    const struct task_defaults *task;
    const char *model, *methods, *out, *texts, *kinds, *depths, *ctx;
    const char *budgets, *fcs;
    const char *doc, *question, *expect;
    int64_t threads, decode, samples, seed;
    int chat; /* -1 task default */
    bool filler;
    fasa_kv_type kv_type;
    cli_attn attn;
} eval_opts;

static int parse(int argc, char **argv, eval_opts *o) {
    enum { O_CTX = 256, O_DECODE, O_SAMPLES, O_SEED, O_OUT, O_TEXT, O_KINDS, O_DEPTHS, O_HAY, O_CHAT, O_NOCHAT, O_KV,
           O_DOC, O_QUESTION, O_EXPECT };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"threads", required_argument, 0, 't'},
        {"ctx", required_argument, 0, O_CTX},     {"decode", required_argument, 0, O_DECODE},
        {"samples", required_argument, 0, O_SAMPLES}, {"seed", required_argument, 0, O_SEED},
        {"out", required_argument, 0, O_OUT},     {"text", required_argument, 0, O_TEXT},
        {"kinds", required_argument, 0, O_KINDS}, {"depths", required_argument, 0, O_DEPTHS},
        {"haystack", required_argument, 0, O_HAY}, {"chat", no_argument, 0, O_CHAT},
        {"no-chat", no_argument, 0, O_NOCHAT},    {"kv-type", required_argument, 0, O_KV},
        {"doc", required_argument, 0, O_DOC},     {"question", required_argument, 0, O_QUESTION},
        {"expect", required_argument, 0, O_EXPECT},
        {"help", no_argument, 0, 'h'},            CLI_ATTN_OPTIONS,
        {0, 0, 0, 0},
    };
    *o = (eval_opts){.methods = "full,oracle,fasa,stream,h2o,snapkv,quest,sparq,random", .out = "out/eval",
                     .texts = default_texts, .budgets = "64,128,256,512,1024", .decode = -1, .samples = -1,
                     .seed = 1, .chat = -1};
    cli_attn_init(&o->attn);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return help(), -1;
    if (argc < 2 || argv[1][0] == '-') return cli_fail(CMD, "name a task: ppl, needle, gen, ca or qa (see fasa eval --help)");
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0]; i++)
        if (!strcmp(argv[1], tasks[i].name)) o->task = &tasks[i];
    if (!o->task) return cli_fail(CMD, "unknown task '%s' (known: ppl, needle, gen, ca, qa)", argv[1]);
    optind = 2;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:t:h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 't': ok = cli_int(CMD, "-t", optarg, 1, 1024, &o->threads); break;
        case O_CTX: o->ctx = optarg; break;
        case O_DECODE: ok = cli_int(CMD, "--decode", optarg, 1, 1 << 20, &o->decode); break;
        case O_SAMPLES: ok = cli_int(CMD, "--samples", optarg, 1, 100000, &o->samples); break;
        case O_SEED: ok = cli_int(CMD, "--seed", optarg, 0, INT64_MAX, &o->seed); break;
        case O_OUT: o->out = optarg; break;
        case O_TEXT: o->texts = optarg; break;
        case O_KINDS: o->kinds = optarg; break;
        case O_DEPTHS: o->depths = optarg; break;
        case O_HAY:
            if (strcmp(optarg, "book") && strcmp(optarg, "filler"))
                return cli_fail(CMD, "--haystack expects book or filler, got '%s'", optarg);
            o->filler = !strcmp(optarg, "filler");
            break;
        case O_CHAT: o->chat = 1; break;
        case O_NOCHAT: o->chat = 0; break;
        case O_KV: ok = cli_kv_type(CMD, optarg, &o->kv_type); break;
        case O_DOC: o->doc = optarg; break;
        case O_QUESTION: o->question = optarg; break;
        case O_EXPECT: o->expect = optarg; break;
        case 'h': help(); return -1;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        case '?': return cli_fail(CMD, "unknown option '%s' (see fasa eval --help)", argv[optind - 1]);
        /* --attn, --budget and --fc take lists here. */
        case CLI_ATTN_BASE + 0: o->methods = optarg; break;
        case CLI_ATTN_BASE + 1: o->budgets = optarg; break;
        case CLI_ATTN_BASE + 2: o->fcs = optarg; break;
        default: ok = cli_attn_option(CMD, c, optarg, &o->attn); break;
        }
        if (!ok) return 1;
    }
    if (optind < argc) return cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
    if (!cli_attn_cpu_only(CMD, &o->attn)) return 1;
    const bool qa = !strcmp(o->task->name, "qa");
    if (qa && (!o->doc || !o->question)) return cli_fail(CMD, "qa needs --doc FILE and --question TEXT");
    if (!qa && (o->doc || o->question || o->expect))
        return cli_fail(CMD, "--doc, --question and --expect belong to the qa task");
    return 0;
}

/* Splits a comma list into a NULL-terminated array of strings inside a copy. */
static char **split(const char *s, int32_t *n, char **copy) {
    *copy = strdup(s);
    int32_t cap = 2;
    for (const char *p = s; *p; p++) cap += *p == ',';
    char **v = calloc((size_t)cap, sizeof *v);
    *n = 0;
    if (!*copy || !v) return free(v), NULL;
    for (char *tok = strtok(*copy, ","); tok; tok = strtok(NULL, ",")) v[(*n)++] = tok;
    return v;
}

static bool parse_kinds(const char *s, needle_kind *out, int32_t *n) {
    *n = 0;
    for (const char *p = s; *p;) {
        const char *comma = strchr(p, ',');
        const size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (*n == NEEDLE_N_KINDS || !needle_kind_parse(p, len, &out[*n]))
            return cli_fail(CMD, "--kinds: unknown kind '%.*s' (known: passkey, number, uuid, multikey, multivalue, "
                                 "vartrack)", (int)len, p), false;
        (*n)++;
        p += len + (comma ? 1 : 0);
    }
    return *n > 0 || !cli_fail(CMD, "--kinds: empty list");
}

static bool parse_depths(const char *s, double *out, int32_t *n) {
    char *copy;
    int32_t m;
    char **v = split(s, &m, &copy);
    *n = 0;
    bool ok = v && m > 0 && m <= 64;
    for (int32_t i = 0; ok && i < m; i++) ok = cli_float(CMD, "--depths", v[i], 0.0, 1.0, &out[(*n)++]);
    if (v && (m == 0 || m > 64)) cli_fail(CMD, "--depths: give 1 to 64 values in [0, 1]");
    free(v);
    free(copy);
    return ok;
}

typedef struct eval_lists {
    int32_t budgets[32], fcs[16], ctxs[32];
    int32_t n_budgets, n_fcs, n_ctxs;
    needle_kind kinds[NEEDLE_N_KINDS];
    int32_t n_kinds;
    double depths[64];
    int32_t n_depths;
} eval_lists;

static bool parse_lists(const eval_opts *o, const fasa_model_info *info, eval_lists *l) {
    /* qa's context is its document. */
    const char *ctx = o->ctx ? o->ctx : o->task->ctx;
    if ((l->n_budgets = eval_parse_ints("--budget", o->budgets, 1, 1 << 24, l->budgets, 32)) < 0 ||
        (ctx && (l->n_ctxs = eval_parse_ints("--ctx", ctx, 2, 1 << 24, l->ctxs, 32)) < 0))
        return cli_fail(CMD, "%s", fasa_last_error()), false;
    l->n_fcs = 0;
    if (o->fcs && (l->n_fcs = eval_parse_ints("--fc", o->fcs, 1, 4096, l->fcs, 16)) < 0)
        return cli_fail(CMD, "%s", fasa_last_error()), false;
    if (!o->fcs) {
        const int32_t d = info->head_dim, defaults[3] = {d / 16, d / 8, 3 * d / 16};
        for (int32_t i = 0; i < 3; i++)
            if (defaults[i] >= 1 && (l->n_fcs == 0 || l->fcs[l->n_fcs - 1] != defaults[i])) l->fcs[l->n_fcs++] = defaults[i];
    }
    if (!parse_kinds(o->kinds ? o->kinds : "passkey,number,uuid,multikey,multivalue,vartrack", l->kinds, &l->n_kinds))
        return false;
    if (o->depths) return parse_depths(o->depths, l->depths, &l->n_depths);
    l->n_depths = 10;
    for (int32_t i = 0; i < 10; i++) l->depths[i] = i / 9.0;
    return true;
}

static void progress(void *user, const eval_progress *p) {
    int64_t *announced = user;
    if (!*announced) {
        fprintf(stderr, "fasa eval: %lld of %lld cells to measure (the others are already in the results file)\n",
                (long long)p->todo, (long long)p->total);
        *announced = 1;
    }
    if (!p->cell) {
        fprintf(stderr, "  %s\n", p->line);
        return;
    }
    const double eta = p->done ? p->elapsed / p->done * (double)(p->todo - p->done) : 0.0;
    fprintf(stderr, "[%lld/%lld] %s  (%.0f s, ETA %.0f min)\n", (long long)p->done, (long long)p->todo, p->line,
            p->elapsed, eta / 60.0);
}

static fasa_status run_task(const char *task, const eval_env *e) {
    if (!strcmp(task, "ppl")) return eval_run_ppl(e);
    if (!strcmp(task, "needle")) return eval_run_needle(e);
    if (!strcmp(task, "gen")) return eval_run_gen(e);
    if (!strcmp(task, "qa")) return eval_run_qa(e);
    return eval_run_ca(e);
}

static int run(eval_opts *o, fasa_model *m) {
    fasa_model_info info;
    fasa_model_get_info(m, &info);
    eval_lists l = {0};
    if (!parse_lists(o, &info, &l)) return 1;
    if (o->attn.calib_path && fasa_calib_load(o->attn.calib_path, m, &o->attn.calib) != FASA_OK)
        return cli_fail(CMD, "%s", fasa_last_error());
    o->attn.p.calib = o->attn.calib;
    const bool is_ca = !strcmp(o->task->name, "ca");
    const eval_grid_spec gs = {o->methods, l.budgets, l.n_budgets, l.fcs, l.n_fcs, info.head_dim, !is_ca, o->attn.p};
    eval_grid grid;
    if (eval_grid_build(&gs, &grid) != FASA_OK) return cli_fail(CMD, "%s", fasa_last_error());
    int rc = 1;
    char *text_copy = NULL, **paths = NULL;
    int32_t n_paths = 0;
    eval_corpus corpus = {0};
    eval_results *res = NULL;
    const bool needs_text = !(!strcmp(o->task->name, "needle") && o->filler) &&
                            !(!strcmp(o->task->name, "gen") && o->chat == 1) && strcmp(o->task->name, "qa") != 0;
    char *expect_copy = NULL, **expect = NULL;
    int32_t n_expect = 0;
    if (o->expect && !(expect = split(o->expect, &n_expect, &expect_copy))) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (needs_text && (!(paths = split(o->texts, &n_paths, &text_copy)) ||
                       eval_corpus_load((const char *const *)paths, n_paths, &corpus) != FASA_OK)) {
        cli_fail(CMD, "%s", paths ? fasa_last_error() : "out of memory");
        goto done;
    }
    if (eval_results_open(o->out, &res) != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    if (eval_results_dropped_partial(res))
        fprintf(stderr, "fasa eval: note: removed the unfinished last line of %s (an interrupted write); its cell "
                        "will be measured again\n", eval_results_path(res));
    if (eval_results_bad_lines(res))
        fprintf(stderr, "fasa eval: note: %d unreadable lines in %s were skipped (their cells will be measured again)\n",
                eval_results_bad_lines(res), eval_results_path(res));
    int64_t announced = 0;
    const int chat = o->chat >= 0 ? o->chat : strcmp(o->task->name, "gen") != 0;
    const eval_env env = {
        .model = m, .grid = &grid, .results = res, .corpus = &corpus, .n_threads = (int32_t)o->threads,
        .kv_type = o->kv_type, .f32_activations = o->attn.f32_act, .seed = (uint64_t)o->seed,
        .n_samples = (int32_t)(o->samples > 0 ? o->samples : o->task->samples), .ctxs = l.ctxs, .n_ctxs = l.n_ctxs,
        .decode = (int32_t)(o->decode > 0 ? o->decode : o->task->decode), .kinds = l.kinds, .n_kinds = l.n_kinds,
        .depths = l.depths, .n_depths = l.n_depths, .filler = o->filler, .chat = chat != 0,
        .qa_doc = o->doc, .qa_question = o->question, .qa_expect = (const char *const *)expect, .n_qa_expect = n_expect,
        .progress = progress, .user = &announced,
    };
    const double t0 = cli_now();
    if (run_task(o->task->name, &env) != FASA_OK) {
        cli_fail(CMD, "%s", fasa_last_error());
        goto done;
    }
    if (!announced) fprintf(stderr, "fasa eval: every cell is already in %s\n", eval_results_path(res));
    else fprintf(stderr, "fasa eval: done in %.0f s; results in %s\n", cli_now() - t0, eval_results_path(res));
    rc = 0;
done:
    free(expect);
    free(expect_copy);
    eval_results_close(res);
    eval_corpus_free(&corpus);
    free(paths);
    free(text_copy);
    eval_grid_free(&grid);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    eval_opts o;
    int st = parse(argc, argv, &o);
    if (st) return st < 0 ? 0 : st;
    fasa_model *m = cli_load_model(CMD, o.model);
    if (!m) return 1;
    int rc = run(&o, m);
    cli_attn_free(&o.attn);
    fasa_model_free(m);
    return rc;
}
