/* Chat templates: which turn format a model's GGUF template describes, and
 * the default system prompt it writes when the user gives none. We recognise
 * a template by its markers and format turns ourselves rather than running a
 * Jinja interpreter. */
#ifndef FASA_CHAT_H
#define FASA_CHAT_H

#include <stddef.h>

#include "fasa.h"

typedef enum chat_style {
    CHAT_NONE = 0,
    CHAT_CHATML, /* <|im_start|>role\n...<|im_end|>\n */
    CHAT_LLAMA3, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
} chat_style;

typedef struct chat_template {
    chat_style style;
    char *default_system; /* malloc'd, NULL when the template writes none */
} chat_template;

/* Reads a template's text (len bytes, any content; need not be terminated).
 * Fails only when out of memory; an unknown template gives CHAT_NONE. */
fasa_status chat_template_detect(const char *text, size_t len, chat_template *out);
void chat_template_free(chat_template *t);

/* One user turn (after an optional system turn), ending where the
 * assistant's answer begins; malloc'd, or NULL with an error set. */
char *chat_template_format(const chat_template *t, const char *system, const char *user);

#endif
