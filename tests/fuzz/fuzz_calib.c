/* libFuzzer target for the calibration file reader (calib_parse, the body
 * of fasa_calib_load). The model it checks the file against is synthetic: a
 * small shape (2 layers, 4 query / 2 KV heads, head dim 8) keeps a valid
 * file under 2 KB, so that mutations reach the per-head and per-group
 * checks instead of spending their time on thousands of CA values.
 *
 * Every input must either fail with a message that names the file, or give
 * a calibration that
 *   - holds only what the format allows (CA and recalls in [0, 1], rankings
 *     that sort the CA values, greedy orders of distinct FCs),
 *   - gives valid label coordinates for every KV head and n_tip, and
 *   - survives fasa_calib_save and a second read: the writer's output is
 *     read back (values rounded to 6 digits), and a second round trip
 *     changes nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "calib/calib.h"

#define NAME "fuzz-input"
#define PREFIX "calibration '" NAME "': "

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const fasa_model_info shape = {
    .arch = "llama",
    .n_layers = 2,
    .n_heads = 4,
    .n_kv_heads = 2,
    .head_dim = 8,
    .rope_layout = FASA_ROPE_HALF,
    .rope_base = 10000.0f,
    .tensor_hash = 0x0123456789abcdefull,
};
enum { F = 4 }; /* head_dim / 2 */

static char save_path[4096];

static void die(const char *what) {
    fprintf(stderr, "fuzz_calib: %s\n", what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(save_path, sizeof save_path, "%s/fuzz_calib_%d.json", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    return 0;
}

/* Reads a file into a NUL-terminated buffer, as fasa_calib_load does. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot reopen the saved calibration");
    char *text = NULL;
    size_t cap = 0;
    *len = 0;
    for (;;) {
        if (*len + 4096 + 1 > cap && !(text = realloc(text, cap = 2 * cap + 8192))) die("out of memory");
        const size_t got = fread(text + *len, 1, 4096, f);
        *len += got;
        if (got < 4096) break;
    }
    fclose(f);
    text[*len] = '\0';
    return text;
}

static fasa_calib *save_and_reload(const fasa_calib *c) {
    if (fasa_calib_save(c, save_path) != FASA_OK) die(fasa_last_error());
    size_t len;
    char *text = slurp(save_path, &len);
    fasa_calib *back = NULL;
    if (calib_parse(text, len, NAME, &shape, &back) != FASA_OK) {
        fprintf(stderr, "the writer's output is rejected: %s\n%s\n", fasa_last_error(), text);
        abort();
    }
    free(text);
    unlink(save_path);
    return back;
}

/* What the format allows, checked value by value. */
static void check_contents(const fasa_calib *c) {
    if (c->n_layers != shape.n_layers || c->n_heads != shape.n_heads || c->head_dim != shape.head_dim ||
        c->n_kv_heads != shape.n_kv_heads || c->budget < 1 || c->n_tokens < 1 || c->n_decode < 1 ||
        c->n_greedy < 0 || c->n_greedy > F)
        die("shape or settings out of range");
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t h = 0; h < c->n_heads; h++) {
            const double *ca = c->ca + calib_at(c, l, h);
            const int32_t *r = fasa_calib_ranking(c, l, h);
            unsigned seen = 0;
            for (int32_t i = 0; i < F; i++) {
                if (!(ca[i] >= 0.0 && ca[i] <= 1.0)) die("CA value outside [0, 1]");
                if (r[i] < 0 || r[i] >= F || (seen & 1u << r[i])) die("ranking is not a permutation");
                seen |= 1u << r[i];
                if (i && (ca[r[i - 1]] < ca[r[i]] || (ca[r[i - 1]] == ca[r[i]] && r[i - 1] > r[i])))
                    die("ranking does not sort the CA values (descending, ties to the lower FC)");
            }
        }
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t h = 0; h < c->n_kv_heads; h++) {
            unsigned seen = 0;
            for (int32_t t = 0; t < c->n_greedy; t++) {
                const int32_t fc = c->greedy[calib_group_at(c, l, h) + t];
                const double m = c->greedy_mass[calib_group_at(c, l, h) + t];
                if (fc < 0 || fc >= F || (seen & 1u << fc)) die("greedy order with a repeated or bad FC");
                if (!(m >= 0.0 && m <= 1.0)) die("greedy recall outside [0, 1]");
                seen |= 1u << fc;
            }
        }
}

/* What FASA derives from the file: 2 * n_tip distinct coordinates, ascending. */
static void check_label_coords(const fasa_calib *c) {
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t h = 0; h < c->n_kv_heads; h++)
            for (int32_t n_tip = 1; n_tip <= F; n_tip++) {
                int32_t coords[2 * F];
                if (fasa_calib_label_coords(c, l, h, n_tip, coords) != FASA_OK) die(fasa_last_error());
                for (int32_t i = 0; i < 2 * n_tip; i++)
                    if (coords[i] < 0 || coords[i] >= c->head_dim || (i && coords[i] <= coords[i - 1]))
                        die("label coordinates not distinct, ascending and in range");
            }
}

/* a and b agree up to `tol` in every value (0: exactly). */
static void check_same(const fasa_calib *a, const fasa_calib *b, double tol) {
    if (a->budget != b->budget || a->n_tokens != b->n_tokens || a->n_decode != b->n_decode ||
        a->n_greedy != b->n_greedy)
        die("settings changed by a save and reload");
    const int64_t n = (int64_t)a->n_layers * a->n_heads * F;
    for (int64_t i = 0; i < n; i++)
        if (fabs(a->ca[i] - b->ca[i]) > tol) die("CA values changed by a save and reload");
    if (tol == 0.0 && memcmp(a->rank, b->rank, (size_t)n * sizeof *a->rank)) die("ranking changed by a reload");
    for (int32_t l = 0; l < a->n_layers; l++)
        for (int32_t h = 0; h < a->n_kv_heads; h++)
            for (int32_t t = 0; t < a->n_greedy; t++) {
                const int64_t at = calib_group_at(a, l, h) + t, bt = calib_group_at(b, l, h) + t;
                if (a->greedy[at] != b->greedy[bt] || fabs(a->greedy_mass[at] - b->greedy_mass[bt]) > tol)
                    die("greedy order changed by a save and reload");
            }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1); /* the file reader's buffer: NUL-terminated */
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fasa_calib *c = NULL;
    fasa_status st = calib_parse(text, size, NAME, &shape, &c);
    free(text);
    if (st != FASA_OK) {
        if (c || (st == FASA_E_FORMAT && strncmp(fasa_last_error(), PREFIX, sizeof PREFIX - 1)))
            die("a failed read must return no calibration and name the file in its message");
        return 0;
    }
    check_contents(c);
    check_label_coords(c);
    fasa_calib *once = save_and_reload(c), *twice = save_and_reload(once);
    check_same(c, once, 5e-7 + 1e-12); /* the writer rounds to 6 digits */
    check_same(once, twice, 0.0);
    fasa_calib_free(twice);
    fasa_calib_free(once);
    fasa_calib_free(c);
    return 0;
}
