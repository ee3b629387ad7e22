#include "chat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* A bounded strstr: the template comes from the file and holds any bytes. */
static const char *find(const char *s, size_t n, const char *pat) {
    const size_t m = strlen(pat);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (!memcmp(s + i, pat, m)) return s + i;
    return NULL;
}

/* The text [p, e) of a template's system turn, with an escaped \n read as a
 * newline when `escaped`; NULL (no error) when it is a Jinja expression
 * rather than literal text, or holds a NUL byte. */
static fasa_status literal_text(const char *p, const char *e, bool escaped, char **out) {
    *out = NULL;
    if (memchr(p, '\0', (size_t)(e - p)) || memchr(p, '{', (size_t)(e - p)) || memchr(p, '\'', (size_t)(e - p)))
        return FASA_OK;
    char *t = fasa_malloc((size_t)(e - p) + 1, 1, "chat system prompt");
    if (!t) return FASA_E_NOMEM;
    size_t w = 0;
    for (const char *c = p; c < e; c++) {
        const bool nl = escaped && c + 1 < e && c[0] == '\\' && c[1] == 'n';
        t[w++] = nl ? '\n' : *c;
        c += nl;
    }
    t[w] = '\0';
    *out = t;
    return FASA_OK;
}

/* The first system turn the template writes literally, up to <|im_end|>.
 * Templates end the role line with a real newline or with the two characters
 * \n of a Jinja string literal (Qwen's); a turn whose text is an expression
 * (the conversation's own system message) is skipped. */
static fasa_status chatml_default_system(const char *s, size_t n, char **out) {
    static const char *opens[] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    for (int k = 0; k < 2; k++) {
        const size_t m = strlen(opens[k]);
        for (const char *p = find(s, n, opens[k]); p; p = find(p + m, n - (size_t)(p + m - s), opens[k])) {
            const char *e = find(p + m, n - (size_t)(p + m - s), "<|im_end|>");
            if (!e) break;
            fasa_status st = literal_text(p + m, e, k == 1, out);
            if (st || *out) return st;
        }
    }
    return FASA_OK;
}

fasa_status chat_template_detect(const char *text, size_t len, chat_template *out) {
    *out = (chat_template){CHAT_NONE, NULL};
    if (find(text, len, "<|im_start|>")) {
        out->style = CHAT_CHATML;
        return chatml_default_system(text, len, &out->default_system);
    }
    if (find(text, len, "<|start_header_id|>")) out->style = CHAT_LLAMA3;
    return FASA_OK;
}

void chat_template_free(chat_template *t) {
    free(t->default_system);
    t->default_system = NULL;
}

char *chat_template_format(const chat_template *t, const char *system, const char *user) {
    if (!user) {
        fasa_error(FASA_E_ARG, "chat: no user message");
        return NULL;
    }
    if (!system) system = t->default_system;
    const char *fmt_sys = NULL, *fmt_user = NULL;
    switch (t->style) {
    case CHAT_CHATML:
        fmt_sys = "<|im_start|>system\n%s<|im_end|>\n";
        fmt_user = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n";
        break;
    case CHAT_LLAMA3:
        fmt_sys = "<|start_header_id|>system<|end_header_id|>\n\n%s<|eot_id|>";
        fmt_user = "<|start_header_id|>user<|end_header_id|>\n\n%s<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    case CHAT_NONE:
        fasa_error(FASA_E_UNSUPPORTED, "the model has no chat template this build understands "
                                       "(ChatML or Llama 3); use a plain prompt instead");
        return NULL;
    }
    const size_t n = (system ? strlen(fmt_sys) + strlen(system) : 0) + strlen(fmt_user) + strlen(user) + 1;
    char *out = fasa_malloc(n, 1, "chat prompt");
    if (!out) return NULL;
    const int w = system ? snprintf(out, n, fmt_sys, system) : 0;
    snprintf(out + w, n - (size_t)w, fmt_user, user);
    return out;
}
