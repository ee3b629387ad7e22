/* Public token and chat entry points: thin wrappers that keep the tokenizer
 * and template details behind the model handle. */
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
    return chat_template_format(&m->chat, system, user);
}
