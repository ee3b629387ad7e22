/* libFuzzer target for chat-template detection (chat_template_detect) and
 * prompt formatting (chat_template_format). The input is the template text
 * as a GGUF file may hold it: any bytes, NUL included, not terminated.
 *
 * Each iteration checks the result against rules restated here:
 *   - the style is ChatML when the text holds <|im_start|>, else Llama 3
 *     when it holds <|start_header_id|>, else none;
 *   - the default system prompt is the first system turn written as literal
 *     text (no '{', quote or NUL) up to <|im_end|>: turns opened with a real
 *     newline first, then those opened with an escaped \n (read as a newline
 *     inside the turn); none when there is no such turn;
 *   - a formatted prompt is exactly the style's system turn (given, or the
 *     default), the user turn and the assistant header; with no style,
 *     formatting fails with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what) {
    fprintf(stderr, "fuzz_chat: %s\n", what);
    abort();
}

static bool has(const char *s, size_t n, const char *pat) { return memmem(s, n, pat, strlen(pat)) != NULL; }

/* The literal text of the first turn opened by `open` (escaped: \n read as
 * a newline), malloc'd; NULL when there is none. */
static char *first_literal_turn(const char *s, size_t n, const char *open, bool escaped) {
    const size_t m = strlen(open);
    for (const char *p = memmem(s, n, open, m); p; p = memmem(p + 1, n - (size_t)(p + 1 - s), open, m)) {
        const char *body = p + m, *end = memmem(body, n - (size_t)(body - s), "<|im_end|>", 10);
        if (!end) return NULL;
        const size_t k = (size_t)(end - body);
        if (memchr(body, '{', k) || memchr(body, '\'', k) || memchr(body, '\0', k)) continue;
        char *t = malloc(k + 1), *w = t;
        if (!t) die("out of memory");
        for (size_t i = 0; i < k; i++) {
            const bool nl = escaped && i + 1 < k && body[i] == '\\' && body[i + 1] == 'n';
            *w++ = nl ? '\n' : body[i];
            i += nl;
        }
        *w = '\0';
        return t;
    }
    return NULL;
}

static void check_detect(const char *s, size_t n, const chat_template *t) {
    const chat_style want = has(s, n, "<|im_start|>")          ? CHAT_CHATML
                            : has(s, n, "<|start_header_id|>") ? CHAT_LLAMA3
                                                               : CHAT_NONE;
    if (t->style != want) die("wrong style");
    char *sys = NULL;
    if (want == CHAT_CHATML && !(sys = first_literal_turn(s, n, "<|im_start|>system\n", false)))
        sys = first_literal_turn(s, n, "<|im_start|>system\\n", true);
    if (!sys != !t->default_system || (sys && strcmp(sys, t->default_system))) {
        fprintf(stderr, "default system prompt: got '%s', expected '%s'\n",
                t->default_system ? t->default_system : "(none)", sys ? sys : "(none)");
        die("wrong default system prompt");
    }
    free(sys);
}

/* The prompt the header of chat.h describes. */
static char *expected_prompt(chat_style style, const char *sys, const char *user) {
    const bool ml = style == CHAT_CHATML;
    const char *so = ml ? "<|im_start|>system\n" : "<|start_header_id|>system<|end_header_id|>\n\n";
    const char *uo = ml ? "<|im_start|>user\n" : "<|start_header_id|>user<|end_header_id|>\n\n";
    const char *end = ml ? "<|im_end|>\n" : "<|eot_id|>";
    const char *ao = ml ? "<|im_start|>assistant\n" : "<|start_header_id|>assistant<|end_header_id|>\n\n";
    const size_t n = (sys ? strlen(so) + strlen(sys) + strlen(end) : 0) + strlen(uo) + strlen(user) +
                     strlen(end) + strlen(ao) + 1;
    char *out = malloc(n);
    if (!out) die("out of memory");
    *out = '\0';
    if (sys) strcat(strcat(strcat(out, so), sys), end);
    strcat(strcat(strcat(strcat(out, uo), user), end), ao);
    return out;
}

static void check_format(const chat_template *t, const char *sys, const char *user) {
    char *got = chat_template_format(t, sys, user);
    if (t->style == CHAT_NONE) {
        if (got || !strstr(fasa_last_error(), "chat template")) die("formatting without a style must fail clearly");
        return;
    }
    char *want = expected_prompt(t->style, sys ? sys : t->default_system, user);
    if (!got || strcmp(got, want)) die("wrong prompt");
    free(want);
    free(got);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data;
    chat_template t;
    if (chat_template_detect(s, size, &t) != FASA_OK) die(fasa_last_error());
    check_detect(s, size, &t);
    /* The messages are user text: the input itself (up to a NUL) is one. */
    char *text = strndup(s, size);
    if (!text) die("out of memory");
    check_format(&t, NULL, "Hello");
    check_format(&t, "Be brief.", text);
    check_format(&t, text, "%s%n");
    free(text);
    chat_template_free(&t);
    return 0;
}
