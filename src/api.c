/* Public token and chat entry points: thin wrappers that keep the tokenizer
 * and template details behind the model handle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "model.h"

fasa_status fasa_tokenize(const fasa_model *m, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t *ids, int32_t cap, int32_t *n_out) {
    return tokenizer_encode(m->tok, text, len, add_bos, parse_special, ids, cap, n_out);
}

int32_t fasa_token_piece(const fasa_model *m, int32_t id, char *buf, int32_t cap) {
    return tokenizer_piece(m->tok, id, false, buf, cap);
}

int32_t fasa_token_bos(const fasa_model *m) { return tokenizer_bos(m->tok); }
int32_t fasa_token_eos(const fasa_model *m) { return tokenizer_eos(m->tok); }
bool fasa_token_is_eog(const fasa_model *m, int32_t id) { return tokenizer_is_eog(m->tok, id); }
bool fasa_model_add_bos(const fasa_model *m) { return tokenizer_add_bos(m->tok); }

char *fasa_chat_prompt(const fasa_model *m, const char *system, const char *user) {
    if (!user) {
        fasa_error(FASA_E_ARG, "chat: no user message");
        return NULL;
    }
    if (!system) system = m->chat_default_system;
    const char *fmt_sys = NULL, *fmt_user = NULL;
    switch (m->chat_style) {
    case FASA_CHAT_CHATML:
        fmt_sys = "<|im_start|>system\n%s<|im_end|>\n";
        fmt_user = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n";
        break;
    case FASA_CHAT_LLAMA3:
        fmt_sys = "<|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>";
        fmt_user = "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    case FASA_CHAT_NONE:
        fasa_error(FASA_E_UNSUPPORTED, "the model has no chat template this build understands "
                                       "(ChatML or Llama 3); use a plain prompt instead");
        return NULL;
    }
    const size_t n = (system ? strlen(fmt_sys) + strlen(system) : 0) + strlen(fmt_user) + strlen(user) + 1;
    char *out = fasa_malloc(n, 1, "chat prompt");
    if (!out) return NULL;
    int w = system ? snprintf(out, n, fmt_sys, system) : 0;
    snprintf(out + w, n - (size_t)w, fmt_user, user);
    return out;
}
