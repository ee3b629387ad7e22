/* fasa: command-line front end. Each command lives in its own cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"generate", cmd_generate, "generate text from a prompt (optionally as a chat turn)"},
    {"perplexity", cmd_perplexity, "measure perplexity of a model on a text file"},
    {"calibrate", cmd_calibrate, "find each head's dominant RoPE frequency chunks (for --attn fasa)"},
    {"ca", cmd_ca, "contextual-agreement table: how well each method recovers the exact top-k"},
    {"eval", cmd_eval, "evaluate methods side by side: ppl, needle, gen, ca (results to a folder)"},
    {"report", cmd_report, "tables and plots from a `fasa eval` results folder"},
    {"synth", cmd_synth, "write a random-weight GGUF model of a Llama shape (speed measurements)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: fasa COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`fasa COMMAND --help` describes a command's options. `fasa --version` prints the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("fasa %s\n", FASA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "fasa: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 1;
}
