/* The --attn family of options: one parser and one help text for every
 * command that runs a decode-attention policy. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_attn_init(cli_attn *a) { *a = (cli_attn){.p = {.method = "full"}}; }

bool cli_attn_is_sparse(const cli_attn *a) { return a->p.method && strcmp(a->p.method, "full") != 0; }

static bool known_method(const char *name) {
    for (const char *const *m = fasa_attn_methods(); *m; m++)
        if (!strcmp(*m, name)) return true;
    return false;
}

bool cli_attn_option(const char *cmd, int code, const char *val, cli_attn *a) {
    int64_t v = 0;
    bool ok = true;
    fasa_attn_params *p = &a->p;
    switch (code - CLI_ATTN_BASE) {
    case 0:
        if (!known_method(val)) {
            char list[256] = "";
            for (const char *const *m = fasa_attn_methods(); *m; m++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", list[0] ? ", " : "", *m);
            return cli_fail(cmd, "unknown --attn method '%s' (known: %s)", val, list), false;
        }
        p->method = val;
        return true;
    case 1: ok = cli_int(cmd, "--budget", val, 1, INT32_MAX, &v), p->budget = (int32_t)v; break;
    case 2: ok = cli_int(cmd, "--fc", val, 1, 512, &v), p->n_tip = (int32_t)v; break;
    case 3: a->calib_path = val; return true;
    case 4: p->dense_layers = val; return true;
    case 5:
        if (!strcmp(val, "head")) p->per_head = 1;
        else if (!strcmp(val, "group")) p->per_head = 2;
        else return cli_fail(cmd, "--select expects head or group, got '%s'", val), false;
        return true;
    case 6:
        if (!strcmp(val, "kv-head")) p->fc_union = FASA_FC_KV_HEAD;
        else if (!strcmp(val, "union")) p->fc_union = FASA_FC_UNION;
        else if (!strcmp(val, "alloc")) p->fc_union = FASA_FC_ALLOC;
        else return cli_fail(cmd, "--fc-choice expects kv-head, union or alloc, got '%s'", val), false;
        return true;
    case 7: ok = cli_int(cmd, "--sinks", val, 0, INT32_MAX, &v), p->n_sink = (int32_t)v; break;
    case 8: ok = cli_int(cmd, "--recent", val, 0, INT32_MAX, &v), p->n_recent = (int32_t)v; break;
    case 9: ok = cli_int(cmd, "--window", val, 1, INT32_MAX, &v), p->window = (int32_t)v; break;
    case 10: ok = cli_int(cmd, "--pool", val, 1, 1025, &v), p->pool_kernel = (int32_t)v; break;
    case 11: ok = cli_int(cmd, "--refresh", val, 0, INT32_MAX, &v), p->refresh = (int32_t)v; break;
    case 12: ok = cli_int(cmd, "--page", val, 1, 1 << 20, &v), p->page = (int32_t)v; break;
    case 13: ok = cli_int(cmd, "--sparq-r", val, 1, 4096, &v), p->sparq_r = (int32_t)v; break;
    case 14: ok = cli_int(cmd, "--attn-seed", val, 0, INT64_MAX, &v), p->seed = (uint64_t)v; break;
    case 15:
        if (!strcmp(val, "cpu")) a->device = FASA_DEVICE_CPU;
        else if (!strcmp(val, "cuda")) a->device = FASA_DEVICE_CUDA;
        else if (!strcmp(val, "cuda-m")) a->device = FASA_DEVICE_CUDA_HOST_KV;
        else return cli_fail(cmd, "--device expects cpu, cuda or cuda-m, got '%s'", val), false;
        return true;
    case 16: a->f32_act = true; return true;
    case 17:
        if (!strcmp(val, "f32")) p->label_type = FASA_LABELS_F32;
        else if (!strcmp(val, "f16")) p->label_type = FASA_LABELS_F16;
        else if (!strcmp(val, "int8")) p->label_type = FASA_LABELS_INT8;
        else return cli_fail(cmd, "--labels expects f32, f16 or int8, got '%s'", val), false;
        return true;
    default: return cli_fail(cmd, "internal error: unknown attention option %d", code), false;
    }
    return ok;
}

void cli_attn_help(void) {
    printf("\ndecode attention (prefill is always dense):\n"
           "      --attn NAME      full (default), fasa, oracle, stream, h2o, snapkv, quest, sparq, random\n"
           "      --budget N       tokens attended per head per decode step\n"
           "      --calib FILE     calibration for fasa (from `fasa calibrate`)\n"
           "      --fc N           fasa: dominant frequency chunks per head (default head_dim/8)\n"
           "      --dense-layers L comma list of layers kept dense (fasa default: 0)\n"
           "      --select S       head: choose tokens per query head; group: one set per KV group\n"
           "      --fc-choice C    fasa: kv-head (group's mean ranking, default), union, or alloc (--fc\n"
           "                       chunks per KV head on average, shared out by the greedy recall\n"
           "                       of a calibration made with --greedy G > --fc)\n"
           "      --labels T       fasa: label cache f32 (CPU default), f16 (GPU default), or int8\n"
           "                       (one scale per token and KV head)\n"
           "      --sinks N        stream: sink tokens (default 8); fasa: first N tokens always taken\n"
           "                       (default 0, as in the paper)\n"
           "      --recent N       h2o: recent tokens (default budget/2); fasa: last N tokens always taken\n"
           "                       (default 0, as in the paper)\n"
           "      --window N       snapkv: observation window (default 32)\n"
           "      --pool K         snapkv: pooling kernel (default 7)\n"
           "      --refresh N      snapkv: re-select every N decoded tokens (default 0: never)\n"
           "      --page N         quest: page size (default 16)\n"
           "      --sparq-r R      sparq: query coordinates used (default head_dim/4)\n"
           "      --attn-seed S    random: seed\n"
           "      --device D       where the model runs: cpu (default), cuda (an NVIDIA GPU; weights, K, V\n"
           "                       and labels in GPU memory: FASA-C) or cuda-m (K and V in pinned host\n"
           "                       memory, the selected rows read over PCIe: FASA-M); on a GPU --attn is\n"
           "                       full or fasa (fasa: --select group, --fc 4, 8, 16 ...)\n"
           "      --f32-act        CPU: keep the activations of decode products in f32 (default: rounded\n"
           "                       to int8 in groups of 32 for Q4_K and Q6_K weights, integer dot products)\n");
}

const char *cli_device_name(fasa_device d) {
    return d == FASA_DEVICE_CUDA ? "cuda" : d == FASA_DEVICE_CUDA_HOST_KV ? "cuda-m" : "cpu";
}

bool cli_attn_cpu_only(const char *cmd, const cli_attn *a) {
    if (a->device == FASA_DEVICE_CPU) return true;
    return cli_fail(cmd, "--device: `fasa %s` runs on the CPU only (fasa generate and fasa perplexity take "
                         "--device cuda and cuda-m)", cmd), false;
}

bool cli_attn_apply(const char *cmd, const fasa_model *m, fasa_context *c, cli_attn *a) {
    if (a->calib_path && !a->calib) {
        if (fasa_calib_load(a->calib_path, m, &a->calib) != FASA_OK) return cli_fail(cmd, "%s", fasa_last_error()), false;
    }
    a->p.calib = a->calib;
    if (fasa_context_set_attention(c, &a->p) != FASA_OK) return cli_fail(cmd, "%s", fasa_last_error()), false;
    return true;
}

void cli_attn_free(cli_attn *a) {
    fasa_calib_free(a->calib);
    a->calib = NULL;
}
