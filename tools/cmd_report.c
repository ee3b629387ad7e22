/* fasa report DIR: Markdown tables from DIR/results.jsonl (to DIR/report.md
 * and stdout), then PNG plots with scripts/plot_results.py when the
 * project's Python venv is there. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "eval/report.h"
#include "eval/results.h"

static const char *CMD = "report";

static void help(void) {
    printf("usage: fasa report [options] DIR\n\n"
           "Reads DIR/results.jsonl (written by `fasa eval`), prints one Markdown table per task and\n"
           "writes it to DIR/report.md; then draws PNG plots into DIR with scripts/plot_results.py.\n\n"
           "      --no-plots       tables only\n"
           "      --python PATH    Python with matplotlib (default .venv/bin/python)\n"
           "      --script PATH    plotting script (default scripts/plot_results.py)\n"
           "  -h, --help           this help\n");
}

/* Runs python script dir; returns its exit status (or -1 when it could not start). */
static int run_plots(const char *python, const char *script, const char *dir) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* The tables went to stdout; the script's chatter goes to stderr. */
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl(python, python, script, dir, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Links every PNG of dir from the report, sorted by name. */
static void link_plots(FILE *f, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[256];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 256;) {
        const size_t len = strlen(e->d_name);
        if (len > 4 && !strcmp(e->d_name + len - 4, ".png")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    if (n) fprintf(f, "## Plots\n\n");
    for (int i = 0; i < n; i++) {
        if (names[i]) fprintf(f, "![%.*s](%s)\n\n", (int)strlen(names[i]) - 4, names[i], names[i]);
        free(names[i]);
    }
}

int cmd_report(int argc, char **argv) {
    enum { O_NOPLOTS = 256, O_PYTHON, O_SCRIPT };
    static const struct option opts[] = {
        {"no-plots", no_argument, 0, O_NOPLOTS}, {"python", required_argument, 0, O_PYTHON},
        {"script", required_argument, 0, O_SCRIPT}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *python = ".venv/bin/python", *script = "scripts/plot_results.py";
    bool plots = true;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_NOPLOTS: plots = false; break;
        case O_PYTHON: python = optarg; break;
        case O_SCRIPT: script = optarg; break;
        case 'h': help(); return 0;
        case ':': return cli_fail(CMD, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_fail(CMD, "unknown option '%s' (see fasa report --help)", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) return cli_fail(CMD, "give exactly one results folder (the --out DIR of fasa eval)");
    const char *dir = argv[optind];
    char path[4096], md[4096];
    snprintf(path, sizeof path, "%s/results.jsonl", dir);
    snprintf(md, sizeof md, "%s/report.md", dir);
    cJSON *arr;
    int32_t bad;
    if (eval_results_read(path, &arr, &bad) != FASA_OK) return cli_fail(CMD, "%s", fasa_last_error());
    if (bad) fprintf(stderr, "fasa report: note: %d unreadable lines in %s were skipped\n", bad, path);
    FILE *f = fopen(md, "w");
    if (!f) {
        cJSON_Delete(arr);
        return cli_fail(CMD, "cannot write '%s': %s", md, strerror(errno));
    }
    fasa_status st = eval_report_write(arr, stdout);
    if (!st) st = eval_report_write(arr, f);
    cJSON_Delete(arr);
    if (st) {
        fclose(f);
        return cli_fail(CMD, "%s", fasa_last_error());
    }
    if (plots) {
        if (access(python, X_OK) != 0 || access(script, R_OK) != 0)
            fprintf(stderr, "fasa report: plots skipped: %s or %s not found (run `make deps` from the repository root)\n",
                    python, script);
        else if (run_plots(python, script, dir) != 0)
            fprintf(stderr, "fasa report: the plotting script failed; the tables are complete\n");
        link_plots(f, dir);
    }
    if (fclose(f) != 0) return cli_fail(CMD, "error writing '%s'", md);
    fprintf(stderr, "fasa report: wrote %s\n", md);
    return 0;
}
