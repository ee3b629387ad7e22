#include "eval/needle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "eval/corpus.h"

static const char *const kind_names[NEEDLE_N_KINDS] = {"passkey", "number", "uuid", "multikey", "multivalue",
                                                       "vartrack"};

const char *needle_kind_name(needle_kind k) { return k >= 0 && k < NEEDLE_N_KINDS ? kind_names[k] : "?"; }

bool needle_kind_parse(const char *s, size_t len, needle_kind *out) {
    for (int k = 0; k < NEEDLE_N_KINDS; k++)
        if (strlen(kind_names[k]) == len && !strncmp(s, kind_names[k], len)) {
            *out = (needle_kind)k;
            return true;
        }
    return false;
}

/* Keys of the "special magic number" needles. */
static const char *const key_words[] = {
    "amber",   "basil",   "cedar",    "dolphin", "ember",   "falcon",  "garnet",  "harbor", "iris",    "juniper",
    "kestrel", "lantern", "meadow",   "nutmeg",  "orchid",  "pepper",  "quartz",  "raven",  "saffron", "thistle",
    "umber",   "velvet",  "willow",   "yarrow",  "zephyr",  "anchor",  "beacon",  "cobalt", "drizzle", "elm",
    "fennel",  "glacier", "hazel",    "indigo",  "jasmine", "kelp",    "lichen",  "marble", "nectar",  "opal",
    "pebble",  "quill",   "rosemary", "sparrow", "tundra",  "violet",  "walnut",  "zinnia",
};
enum { N_KEYS = sizeof key_words / sizeof key_words[0], MAX_NEEDLES = 8 };

/* What a case says, before tokenization. */
typedef struct plan {
    const char *intro;
    char question[200];
    char answer_prefix[200];
    char needles[MAX_NEEDLES][160];
    int32_t n_needles;
    bool chain; /* needles must appear in order (variable tracking) */
} plan;

static void pick_distinct(uint64_t *rng, int32_t n, int32_t range, int32_t *out) {
    for (int32_t i = 0; i < n; i++) {
        bool dup;
        do {
            out[i] = (int32_t)(eval_rng_next(rng) % (uint64_t)range);
            dup = false;
            for (int32_t j = 0; j < i; j++) dup |= out[j] == out[i];
        } while (dup);
    }
}

static void make_uuid(uint64_t *rng, char *out, size_t cap) {
    const uint64_t a = eval_rng_next(rng), b = eval_rng_next(rng);
    snprintf(out, cap, "%08llx-%04llx-%04llx-%04llx-%012llx", (unsigned long long)(a >> 32),
             (unsigned long long)((a >> 16) & 0xffff), (unsigned long long)(a & 0xffff),
             (unsigned long long)(b >> 48), (unsigned long long)(b & 0xffffffffffffull));
}

static void magic_needle(char *out, const char *what, const char *key, const char *value) {
    snprintf(out, 160, " One of the special magic %s for %s is: %s.", what, key, value);
}

static void plan_passkey(uint64_t *rng, plan *p, needle_case *c) {
    snprintf(c->values[0], 40, "%d", 10000 + (int)(eval_rng_next(rng) % 90000));
    c->n_values = 1;
    p->intro = "An important piece of information is hidden inside a lot of unrelated text. "
               "Find it and remember it: I will ask you about it afterwards.";
    snprintf(p->needles[0], 160, " The pass key is %s. Remember it. %s is the pass key.", c->values[0], c->values[0]);
    p->n_needles = 1;
    snprintf(p->question, sizeof p->question, "What is the pass key?");
    snprintf(p->answer_prefix, sizeof p->answer_prefix, "The pass key is");
    c->max_answer = 12;
}

/* number, uuid, multikey and multivalue: the "special magic" family. */
static void plan_magic(needle_kind kind, uint64_t *rng, plan *p, needle_case *c) {
    const bool uuid = kind == NEEDLE_UUID, multi_value = kind == NEEDLE_MULTIVALUE;
    const char *what = uuid ? "uuids" : "numbers";
    int32_t keys[4];
    pick_distinct(rng, 4, N_KEYS, keys);
    const char *key = key_words[keys[0]];
    p->intro = uuid ? "Some special magic uuids are hidden in the text below. Remember them: I will ask you about "
                      "them afterwards."
                    : "Some special magic numbers are hidden in the text below. Remember them: I will ask you "
                      "about them afterwards.";
    p->n_needles = kind == NEEDLE_MULTIKEY || multi_value ? 4 : 1;
    int32_t nums[4];
    pick_distinct(rng, 4, 9000000, nums);
    for (int32_t i = 0; i < p->n_needles; i++) {
        char value[40];
        if (uuid) make_uuid(rng, value, sizeof value);
        else snprintf(value, sizeof value, "%d", 1000000 + nums[i]);
        /* multikey: needle 0 holds the asked key, the others are distractors. */
        magic_needle(p->needles[i], what, multi_value ? key : key_words[keys[i]], value);
        if (i == 0 || multi_value) snprintf(c->values[c->n_values++], 40, "%s", value);
    }
    if (multi_value) {
        snprintf(p->question, sizeof p->question, "What are all the special magic numbers for %s given in the text?", key);
        snprintf(p->answer_prefix, sizeof p->answer_prefix, "The special magic numbers for %s given in the text are", key);
        c->max_answer = 64;
    } else {
        snprintf(p->question, sizeof p->question, "What is the special magic %s for %s given in the text?",
                 uuid ? "uuid" : "number", key);
        snprintf(p->answer_prefix, sizeof p->answer_prefix, "The special magic %s for %s given in the text is",
                 uuid ? "uuid" : "number", key);
        c->max_answer = uuid ? 48 : 16;
    }
}

static void plan_vartrack(uint64_t *rng, plan *p, needle_case *c) {
    enum { HOPS = 5 };
    char names[HOPS][8];
    for (int32_t i = 0; i < HOPS; i++) {
        bool dup;
        do {
            for (int32_t j = 0; j < 5; j++) names[i][j] = (char)('A' + eval_rng_next(rng) % 26);
            names[i][5] = '\0';
            dup = false;
            for (int32_t j = 0; j < i; j++) dup |= !strcmp(names[i], names[j]);
        } while (dup);
        snprintf(c->values[i], 40, "%s", names[i]);
    }
    c->n_values = HOPS;
    const int value = 10000 + (int)(eval_rng_next(rng) % 90000);
    p->intro = "Follow the chain of variable assignments hidden in the text below: I will ask you about it afterwards.";
    snprintf(p->needles[0], 160, " VAR %s = %d.", names[0], value);
    for (int32_t i = 1; i < HOPS; i++) snprintf(p->needles[i], 160, " VAR %s = VAR %s.", names[i], names[i - 1]);
    p->n_needles = HOPS;
    p->chain = true;
    snprintf(p->question, sizeof p->question, "Which variables are assigned the value %d in the text, directly or "
                                              "through other variables?", value);
    snprintf(p->answer_prefix, sizeof p->answer_prefix, "The variables assigned the value %d are", value);
    c->max_answer = 48;
}

static int32_t *tokenize(const fasa_model *m, const char *text, bool bos, int32_t *n, fasa_status *st) {
    const size_t len = strlen(text);
    const int32_t cap = (int32_t)len + 2;
    int32_t *ids = fasa_malloc((size_t)cap, sizeof *ids, "prompt tokens");
    if (!ids) {
        *st = FASA_E_NOMEM;
        return NULL;
    }
    if ((*st = fasa_tokenize(m, text, len, bos, true, ids, cap, n))) {
        free(ids);
        return NULL;
    }
    return ids;
}

/* Whether the text may be cut after token id: it ends a sentence or line. */
static bool is_boundary(const fasa_model *m, int32_t id) {
    char piece[64];
    const int32_t n = fasa_token_piece(m, id, piece, sizeof piece);
    return n > 0 && strchr(".!?\n", piece[n - 1]) != NULL;
}

/* The sentence boundary nearest to filler index p (searching 48 tokens each
 * way), or p itself when there is none. */
static int32_t snap(const fasa_model *m, const int32_t *hay, int32_t n_fill, int32_t p) {
    for (int32_t k = 0; k < 48; k++) {
        if (p + k <= n_fill && (p + k == 0 || is_boundary(m, hay[p + k - 1]))) return p + k;
        if (p - k >= 0 && (p - k == 0 || is_boundary(m, hay[p - k - 1]))) return p - k;
    }
    return p;
}

static int cmp_int(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Insertion points in the filler for each needle: the first at the depth,
 * the others uniform (after the first, in order, for a chain). */
static void place(const fasa_model *m, const plan *p, const needle_spec *spec, uint64_t *rng, const int32_t *hay,
                  int32_t n_fill, int32_t *at) {
    at[0] = snap(m, hay, n_fill, (int32_t)(spec->depth * n_fill + 0.5));
    for (int32_t i = 1; i < p->n_needles; i++) {
        const int32_t lo = p->chain ? at[0] : 0;
        at[i] = snap(m, hay, n_fill, lo + (int32_t)(eval_rng_unit(rng) * (n_fill - lo + 1)));
        if (p->chain && at[i] < at[0]) at[i] = at[0];
    }
    if (p->chain) qsort(at + 1, (size_t)(p->n_needles - 1), sizeof *at, cmp_int);
}

typedef struct parts {
    int32_t *head, *question, *needle[MAX_NEEDLES];
    int32_t n_head, n_question, n_needle[MAX_NEEDLES];
} parts;

static void parts_free(parts *t) {
    free(t->head);
    free(t->question);
    for (int32_t i = 0; i < MAX_NEEDLES; i++) free(t->needle[i]);
}

/* Tokenizes the instruction (with the chat template's opening), the
 * needles and the question (with the template's closing and the answer's
 * first words). */
static fasa_status tokenize_parts(const fasa_model *m, const plan *p, bool chat, parts *t) {
    static const char *const mark = "@@USER@@";
    char *tmpl = chat ? fasa_chat_prompt(m, NULL, mark) : NULL;
    const char *at = tmpl ? strstr(tmpl, mark) : NULL;
    const int head_len = at ? (int)(at - tmpl) : 0;
    const char *foot = at ? at + strlen(mark) : "\n";
    const size_t hn = (size_t)head_len + strlen(p->intro) + 8;
    const size_t qn = strlen(p->question) + strlen(foot) + strlen(p->answer_prefix) + 8;
    char *head = malloc(hn), *question = malloc(qn);
    fasa_status st = FASA_OK;
    if (!head || !question) st = fasa_error(FASA_E_NOMEM, "out of memory building a retrieval prompt");
    if (!st) {
        snprintf(head, hn, "%.*s%s\n\n", head_len, at ? tmpl : "", p->intro);
        snprintf(question, qn, "\n\n%s%s%s", p->question, foot, p->answer_prefix);
        t->head = tokenize(m, head, fasa_model_add_bos(m), &t->n_head, &st);
    }
    if (!st) t->question = tokenize(m, question, false, &t->n_question, &st);
    for (int32_t i = 0; !st && i < p->n_needles; i++) t->needle[i] = tokenize(m, p->needles[i], false, &t->n_needle[i], &st);
    free(tmpl);
    free(head);
    free(question);
    return st;
}

/* Writes head, then filler with the needles spliced in at their points. */
static void assemble(const parts *t, const plan *p, const int32_t *hay, int32_t n_fill, const int32_t *at,
                     needle_case *c) {
    int32_t w = 0, f = 0;
    memcpy(c->tokens, t->head, (size_t)t->n_head * sizeof *c->tokens);
    w = c->hay_start = t->n_head;
    bool done[MAX_NEEDLES] = {0};
    for (;;) {
        /* The next needle to splice: the lowest point, earlier needles first. */
        int32_t next = -1;
        for (int32_t i = 0; i < p->n_needles; i++)
            if (!done[i] && (next < 0 || at[i] < at[next])) next = i;
        const int32_t until = next < 0 ? n_fill : at[next];
        memcpy(c->tokens + w, hay + f, (size_t)(until - f) * sizeof *c->tokens);
        w += until - f;
        f = until;
        if (next < 0) break;
        if (next == 0) c->needle_pos = w;
        memcpy(c->tokens + w, t->needle[next], (size_t)t->n_needle[next] * sizeof *c->tokens);
        w += t->n_needle[next];
        done[next] = true;
    }
    c->n_tokens = w;
}

fasa_status needle_make(const fasa_model *m, const needle_spec *spec, const int32_t *hay, int32_t n_hay,
                        needle_case *c) {
    *c = (needle_case){0};
    if (spec->kind < 0 || spec->kind >= NEEDLE_N_KINDS || spec->depth < 0.0 || spec->depth > 1.0)
        return fasa_error(FASA_E_ARG, "needle: invalid kind or depth");
    uint64_t rng = spec->seed ^ ((uint64_t)spec->kind << 56);
    plan p = {0};
    if (spec->kind == NEEDLE_PASSKEY) plan_passkey(&rng, &p, c);
    else if (spec->kind == NEEDLE_VARTRACK) plan_vartrack(&rng, &p, c);
    else plan_magic(spec->kind, &rng, &p, c);
    snprintf(c->needle_text, sizeof c->needle_text, "%s", p.needles[0]);

    parts t = {0};
    fasa_status st = tokenize_parts(m, &p, spec->chat, &t);
    int32_t fixed = t.n_head;
    for (int32_t i = 0; i < p.n_needles; i++) fixed += t.n_needle[i];
    const int32_t n_fill = spec->length - fixed;
    if (!st && n_fill < 32)
        st = fasa_error(FASA_E_ARG, "a %s prompt of %d tokens is too short: the instruction and needles alone take %d",
                        needle_kind_name(spec->kind), spec->length, fixed);
    if (!st && n_hay < n_fill)
        st = fasa_error(FASA_E_ARG, "needle: %d filler tokens given, %d needed", n_hay, n_fill);
    if (!st && (!(c->tokens = fasa_malloc((size_t)spec->length, sizeof *c->tokens, "retrieval prompt")) ||
                !(c->question = fasa_malloc((size_t)t.n_question, sizeof *c->question, "retrieval question"))))
        st = FASA_E_NOMEM;
    if (!st) {
        int32_t at[MAX_NEEDLES];
        place(m, &p, spec, &rng, hay, n_fill, at);
        assemble(&t, &p, hay, n_fill, at, c);
        c->n_fill = n_fill;
        memcpy(c->question, t.question, (size_t)t.n_question * sizeof *c->question);
        c->n_question = t.n_question;
    }
    parts_free(&t);
    if (st) needle_case_free(c);
    return st;
}

void needle_case_free(needle_case *c) {
    free(c->tokens);
    free(c->question);
    c->tokens = c->question = NULL;
}

fasa_status needle_filler(const fasa_model *m, int32_t n, int32_t *tokens) {
    fasa_status st;
    int32_t len;
    int32_t *unit = tokenize(m, " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
                             false, &len, &st);
    if (!unit) return st;
    for (int32_t i = 0; i < n; i++) tokens[i] = unit[i % len];
    free(unit);
    return FASA_OK;
}
