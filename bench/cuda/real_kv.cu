/* The CUDA decode steps validated on real inputs: the queries, keys, values
 * and label coordinates of the default model, with the CPU engine's outputs
 * for them, as scripts/dump-real-kv.sh writes them (bench/dump_kv.c).
 *
 * For every dumped layer and every variant (FASA-C with fp16 and int8
 * labels, FASA-M; each with the three-launch pipeline and, marked "1k",
 * with the one-kernel cluster step where the device has it), the cache is filled through fasa_cuda_layer_append, one
 * dense and one FASA step run (outputs poisoned with NaN first), and:
 *   (b) each output is compared with a float64 CPU reference over the fp16
 *       K/V the GPU holds (relative error < 1e-3), and each selected set with
 *       the float64 top-N_fac of the label scores the GPU sees (ties aside);
 *   (a) each output is compared with the CPU engine's. The GPU stores K, V
 *       and labels in fp16, the engine in f32, so the two differ by the
 *       rounding of the inputs: the check is |gpu - cpu| <= |ref over fp16
 *       inputs - ref over f32 inputs| + 1e-3 (relative), both references in
 *       float64 and each over the set its side selected; the selected sets
 *       must agree except for tokens whose f32 score lies within the largest
 *       fp16 rounding of any score of the threshold (fp16 labels only: int8
 *       labels move scores by design, so their overlap is reported alone).
 * The dump itself is checked too: the engine's outputs against float64
 * references on its f32 inputs, its selection against the f32 top-N_fac.
 *
 * usage: real_kv [DIR]   (default out/real_kv); exit 0 when every check passes */
#include <string>

#include "common.cuh"

extern "C" {
#include "fasa_cuda.h"
#include "fasa_cuda_internal.h"
}

#define TRY(call)                                                                               \
    do {                                                                                        \
        fasa_status s_ = (call);                                                                \
        if (s_ != FASA_OK) {                                                                    \
            fprintf(stderr, "%s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, fasa_last_error()); \
            exit(2);                                                                            \
        }                                                                                       \
    } while (0)

/* ---- the dump ---------------------------------------------------------- */

struct dump {
    std::string dir, model, text;
    int H = 0, KV = 0, D = 0, n = 0, n_tip = 0, n_lab = 0, budget = 0;
    std::vector<int> layers;
};

struct layer_data {
    std::vector<float> q, k, v, dense, fasa; /* k, v: [KV][n][D] */
    std::vector<int32_t> coords, sel;        /* sel: [H][budget] */
};

static void fail_input(const std::string &what) {
    fprintf(stderr, "real_kv: %s (make the dump with scripts/dump-real-kv.sh)\n", what.c_str());
    exit(2);
}

static dump read_header(const std::string &dir) {
    dump d;
    d.dir = dir;
    FILE *f = fopen((dir + "/header.txt").c_str(), "r");
    if (!f) fail_input("cannot open " + dir + "/header.txt");
    char line[1024], key[64], val[960];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%63s %959[^\n]", key, val) != 2) continue;
        const std::string k = key;
        if (k == "format" && strcmp(val, "fasa-real-kv 1")) fail_input("unknown dump format '" + std::string(val) + "'");
        else if (k == "model") d.model = val;
        else if (k == "text") d.text = val;
        else if (k == "n_heads") d.H = atoi(val);
        else if (k == "n_kv_heads") d.KV = atoi(val);
        else if (k == "head_dim") d.D = atoi(val);
        else if (k == "n_tokens") d.n = atoi(val);
        else if (k == "n_tip") d.n_tip = atoi(val);
        else if (k == "n_label") d.n_lab = atoi(val);
        else if (k == "budget") d.budget = atoi(val);
        else if (k == "layers")
            for (char *s = strtok(val, " "); s; s = strtok(NULL, " ")) d.layers.push_back(atoi(s));
    }
    fclose(f);
    if (d.H <= 0 || d.KV <= 0 || d.H % d.KV || d.D <= 0 || d.n <= 0 || d.n_lab != 2 * d.n_tip || d.budget <= 0 ||
        d.budget >= d.n || d.layers.empty())
        fail_input(dir + "/header.txt is incomplete or inconsistent");
    return d;
}

template <typename T>
static std::vector<T> read_array(const dump &d, int layer, const char *what, size_t count) {
    const std::string path = d.dir + "/l" + std::to_string(layer) + "." + what;
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) fail_input("cannot open " + path);
    std::vector<T> a(count);
    const size_t got = fread(a.data(), sizeof(T), count, f);
    const bool longer = fgetc(f) != EOF;
    fclose(f);
    if (got != count || longer)
        fail_input(path + " does not hold " + std::to_string(count) + " elements of " + std::to_string(sizeof(T)) +
                   " bytes");
    return a;
}

static layer_data read_layer(const dump &d, int layer) {
    layer_data L;
    const size_t kv = (size_t)d.KV * d.n * d.D, hd = (size_t)d.H * d.D;
    L.q = read_array<float>(d, layer, "q.f32", hd);
    L.k = read_array<float>(d, layer, "k.f32", kv);
    L.v = read_array<float>(d, layer, "v.f32", kv);
    L.dense = read_array<float>(d, layer, "dense.f32", hd);
    L.fasa = read_array<float>(d, layer, "fasa.f32", hd);
    L.coords = read_array<int32_t>(d, layer, "coords.i32", (size_t)d.KV * d.n_lab);
    L.sel = read_array<int32_t>(d, layer, "sel.i32", (size_t)d.H * d.budget);
    for (int32_t c : L.coords)
        if (c < 0 || c >= d.D) fail_input("a label coordinate is outside the head");
    for (int32_t t : L.sel)
        if (t < 0 || t >= d.n) fail_input("a selected position is outside the cache");
    return L;
}

/* ---- float64 references on the f32 inputs ---------------------------- */

/* ref_attention (common.cuh) reads fp16 bits; the engine's inputs are f32. */
static void ref_attention_f32(const float *q, const float *K, const float *V, int D, const int32_t *rows, int n,
                              double *out) {
    std::vector<double> s(n);
    double mx = -INFINITY, den = 0;
    for (int i = 0; i < n; ++i) {
        const float *k = K + (int64_t)(rows ? rows[i] : i) * D;
        double acc = 0;
        for (int d = 0; d < D; ++d) acc += (double)q[d] * k[d];
        s[i] = acc / sqrt((double)D);
        mx = std::max(mx, s[i]);
    }
    for (int d = 0; d < D; ++d) out[d] = 0;
    for (int i = 0; i < n; ++i) {
        const float *v = V + (int64_t)(rows ? rows[i] : i) * D;
        const double p = exp(s[i] - mx);
        den += p;
        for (int d = 0; d < D; ++d) out[d] += p * v[d];
    }
    for (int d = 0; d < D; ++d) out[d] /= den;
}

static double rel64(const std::vector<double> &a, const std::vector<double> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
    return sqrt(num / (den > 0 ? den : 1e-300));
}

/* Attention of every query head over the rows its KV group selected
 * (sel: [KV][k] per group, NULL = all n tokens), in float64. fp16 = the
 * fp16 copies K16/V16, else the f32 dump. */
static std::vector<double> reference(const dump &d, const layer_data &L, const std::vector<uint16_t> &K16,
                                     const std::vector<uint16_t> &V16, bool fp16, const int32_t *sel, int k) {
    std::vector<double> out((size_t)d.H * d.D);
    const int group = d.H / d.KV;
    for (int h = 0; h < d.H; ++h) {
        const int g = h / group;
        const size_t off = (size_t)g * d.n * d.D;
        const int32_t *rows = sel ? sel + (size_t)g * k : NULL;
        const int m = sel ? k : d.n;
        if (fp16) ref_attention(&L.q[(size_t)h * d.D], &K16[off], &V16[off], d.D, rows, m, &out[(size_t)h * d.D]);
        else ref_attention_f32(&L.q[(size_t)h * d.D], &L.k[off], &L.v[off], d.D, rows, m, &out[(size_t)h * d.D]);
    }
    return out;
}

/* Label scores of KV group g in float64 (q summed over the group's heads),
 * from the f32 keys or from the labels the GPU holds; *abs_max gets the
 * largest sum of |terms|, the scale of the f32 accumulation error. */
static std::vector<double> scores_f32(const dump &d, const layer_data &L, int g, double *abs_max) {
    const int group = d.H / d.KV;
    const int32_t *c = &L.coords[(size_t)g * d.n_lab];
    std::vector<double> qs(d.n_lab, 0.0), s(d.n);
    for (int j = 0; j < d.n_lab; ++j)
        for (int h = g * group; h < (g + 1) * group; ++h) qs[j] += L.q[(size_t)h * d.D + c[j]];
    *abs_max = 0;
    for (int t = 0; t < d.n; ++t) {
        const float *k = &L.k[((size_t)g * d.n + t) * d.D];
        double acc = 0, mag = 0;
        for (int j = 0; j < d.n_lab; ++j) acc += qs[j] * k[c[j]], mag += fabs(qs[j] * k[c[j]]);
        s[t] = acc;
        *abs_max = std::max(*abs_max, mag);
    }
    return s;
}

/* ---- the table --------------------------------------------------------- */

static int n_checks, n_fails;

static void row(int layer, const char *variant, const char *what, const char *value, const char *limit, bool ok) {
    printf("| %5d | %-10s | %-46s | %-24s | %-22s | %s |\n", layer, variant, what, value, limit, ok ? "PASS" : "FAIL");
    ++n_checks;
    n_fails += !ok;
}

static const char *fmt(char *buf, const char *f, double a, double b = 0) {
    snprintf(buf, 64, f, a, b);
    return buf;
}

/* ---- checks ------------------------------------------------------------ */

/* The dump is what the engine computes: outputs against float64 on its own
 * f32 inputs, its selection against the f32 top-N_fac (ties aside). */
static void check_dump(const dump &d, const layer_data &L, int layer) {
    char v[64];
    const int group = d.H / d.KV, B = d.budget;
    const std::vector<uint16_t> none;
    const std::vector<double> dense32 = reference(d, L, none, none, false, NULL, 0);
    double e = rel_error(L.dense.data(), dense32.data(), dense32.size());
    row(layer, "CPU dump", "engine dense vs float64 (f32 inputs)", fmt(v, "rel.err %.2e", e), "< 1e-3", e < 1e-3);
    std::vector<int32_t> cpu_sel((size_t)d.KV * B);
    bool ok = true;
    for (int g = 0; g < d.KV; ++g) {
        for (int h = g * group; h < (g + 1) * group; ++h)
            ok &= !memcmp(&L.sel[(size_t)h * B], &L.sel[(size_t)g * group * B], B * sizeof(int32_t));
        memcpy(&cpu_sel[(size_t)g * B], &L.sel[(size_t)g * group * B], B * sizeof(int32_t));
    }
    row(layer, "CPU dump", "engine: one token set per KV group", ok ? "yes" : "no", "same rows", ok);
    int outside = 0;
    ok = true;
    const char *why = "";
    for (int g = 0; g < d.KV; ++g) {
        double mag;
        const std::vector<double> s = scores_f32(d, L, g, &mag);
        bool o;
        const char *w;
        outside = std::max(outside, check_topk(s, &cpu_sel[(size_t)g * B], B, 1e-5 * mag + 1e-6, &o, &w));
        if (!o) ok = false, why = w;
    }
    snprintf(v, sizeof v, "%s, %d tied differ", ok ? "exact" : why, outside);
    row(layer, "CPU dump", "engine selection == f32 top-N_fac", v, "ties aside", ok);
    const std::vector<double> fasa32 = reference(d, L, none, none, false, cpu_sel.data(), B);
    e = rel_error(L.fasa.data(), fasa32.data(), fasa32.size());
    row(layer, "CPU dump", "engine FASA vs float64 over its selection", fmt(v, "rel.err %.2e", e), "< 1e-3", e < 1e-3);
}

struct variant {
    const char *name;
    fasa_cuda_mode mode;
    fasa_cuda_label_type lt;
    int cluster; /* tuning.cluster: -1 the three-launch pipeline, 0 the one-kernel step */
};
static const variant VARIANTS[] = {{"C fp16", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_F16, -1},
                                   {"C int8", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_I8, -1},
                                   {"M fp16", FASA_CUDA_MODE_M, FASA_CUDA_LABEL_F16, -1},
                                   {"C fp16 1k", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_F16, 0},
                                   {"C int8 1k", FASA_CUDA_MODE_C, FASA_CUDA_LABEL_I8, 0},
                                   {"M fp16 1k", FASA_CUDA_MODE_M, FASA_CUDA_LABEL_F16, 0}};

static void check_variant(const dump &d, const layer_data &L, int layer, const variant &var) {
    const int group = d.H / d.KV, B = d.budget, n = d.n, D = d.D, KV = d.KV;
    const char *vn = var.name;
    char v[64], lim[64];
    fasa_cuda_params p = fasa_cuda_default_params();
    p.n_heads = d.H;
    p.n_kv_heads = KV;
    p.head_dim = D;
    p.n_ctx = n;
    p.mode = var.mode;
    p.n_lab = d.n_lab;
    p.label_type = var.lt;
    p.per_head_select = false;
    p.n_fac_max = B;
    fasa_cuda_ctx *ctx;
    fasa_cuda_layer *l;
    TRY(fasa_cuda_ctx_init(&p, &ctx));
    fasa_cuda_tuning tu;
    fasa_cuda_ctx_get_tuning(ctx, &tu);
    tu.cluster = var.cluster;
    fasa_cuda_ctx_set_tuning(ctx, &tu);
    if (var.cluster >= 0 && fasa_cuda_ctx_cluster_size(ctx) == 0) { /* not on this device */
        fasa_cuda_ctx_free(ctx);
        return;
    }
    TRY(fasa_cuda_layer_init(ctx, L.coords.data(), &l));

    /* Append as the engine produced them: the prefill, then the decoded token. */
    const size_t tok = (size_t)KV * D;
    std::vector<float> hk(n * tok), hv(n * tok);
    for (int h = 0; h < KV; ++h)
        for (int t = 0; t < n; ++t) {
            memcpy(&hk[t * tok + (size_t)h * D], &L.k[((size_t)h * n + t) * D], D * sizeof(float));
            memcpy(&hv[t * tok + (size_t)h * D], &L.v[((size_t)h * n + t) * D], D * sizeof(float));
        }
    TRY(fasa_cuda_layer_append(l, hk.data(), hv.data(), n - 1));
    TRY(fasa_cuda_layer_append(l, hk.data() + (n - 1) * tok, hv.data() + (n - 1) * tok, 1));
    std::vector<uint16_t> K16((size_t)KV * n * D), V16(K16.size());
    TRY(fasa_cuda_layer_read_kv(l, K16.data(), V16.data()));
    size_t bad = 0;
    for (size_t i = 0; i < K16.size(); ++i) bad += K16[i] != f16_bits(L.k[i]) || V16[i] != f16_bits(L.v[i]);
    row(layer, vn, "append: cache == fp16(dumped K, V)", fmt(v, "%.0f mismatches", (double)bad), "0", bad == 0);

    const size_t hd = (size_t)d.H * D;
    std::vector<float> got(hd);
    float *dq, *dout;
    TRY(fasa_cuda_alloc(ctx, hd * 4, (void **)&dq));
    TRY(fasa_cuda_alloc(ctx, hd * 4, (void **)&dout));
    TRY(fasa_cuda_upload(ctx, dq, L.q.data(), hd * 4));
    auto run = [&](int n_fac) {
        CHECK(cudaMemset(dout, 0xff, hd * 4)); /* NaN poison: every output must be written */
        CHECK(cudaDeviceSynchronize());
        if (n_fac == 0) TRY(fasa_cuda_dense_step(l, dq, dout));
        else TRY(fasa_cuda_fasa_step(l, n_fac, dq, dout));
        TRY(fasa_cuda_ctx_sync(ctx));
        TRY(fasa_cuda_download(ctx, got.data(), dout, hd * 4));
    };
    /* (a) against the engine: bounded by the fp16 rounding of the inputs. */
    auto vs_engine = [&](const char *what, const std::vector<float> &cpu, const std::vector<double> &ref16,
                         const std::vector<double> &ref32) {
        std::vector<double> cpu64(cpu.begin(), cpu.end());
        std::vector<double> got64(got.begin(), got.end());
        const double e = rel64(got64, cpu64), bound = rel64(ref16, ref32) + 1e-3;
        snprintf(lim, sizeof lim, "<= %.2e (inputs %.1e)", bound, bound - 1e-3);
        row(layer, vn, what, fmt(v, "rel.err %.2e", e), lim, e <= bound);
    };

    /* Dense. */
    const std::vector<uint16_t> none;
    const std::vector<double> dense16 = reference(d, L, K16, V16, true, NULL, 0);
    const std::vector<double> dense32 = reference(d, L, none, none, false, NULL, 0);
    run(0);
    double e = rel_error(got.data(), dense16.data(), hd);
    row(layer, vn, "(b) dense vs float64 on the fp16 cache", fmt(v, "rel.err %.2e", e), "< 1e-3", e < 1e-3);
    vs_engine("(a) dense vs CPU engine", L.dense, dense16, dense32);

    /* FASA. */
    run(B);
    std::vector<int32_t> sel((size_t)KV * B), cpu_sel((size_t)KV * B);
    TRY(fasa_cuda_ctx_read_selection(ctx, B, sel.data()));
    for (int g = 0; g < KV; ++g) memcpy(&cpu_sel[(size_t)g * B], &L.sel[(size_t)g * group * B], B * sizeof(int32_t));
    std::vector<double> labels;
    host_labels(K16.data(), KV, n, D, L.coords.data(), d.n_lab, var.lt == FASA_CUDA_LABEL_I8, labels);
    bool kernel_ok = true, near_ok = true;
    int outside = 0, min_overlap = B;
    double worst = 0; /* largest |f32 score - threshold| / tolerance over differing tokens */
    const char *why = "";
    for (int g = 0; g < KV; ++g) {
        std::vector<double> s16;
        host_scores(labels, L.q.data(), D, n, d.n_lab, L.coords.data(), g, g * group, group, s16);
        double mag16 = 0;
        for (double x : s16) mag16 = std::max(mag16, fabs(x));
        double mag;
        const std::vector<double> s32 = scores_f32(d, L, g, &mag);
        bool ok;
        const char *w;
        /* The kernel: exact top-k of the scores it sees, in fp32 (as fasa_step checks). */
        outside = std::max(outside, check_topk(s16, &sel[(size_t)g * B], B, 1e-5 * std::max(mag, mag16) + 1e-6, &ok, &w));
        if (!ok) kernel_ok = false, why = w;
        /* Against the engine: tokens in one set only must be near-ties under fp16 rounding. */
        std::vector<char> in_gpu(n, 0), in_cpu(n, 0);
        for (int i = 0; i < B; ++i) in_gpu[sel[(size_t)g * B + i]] = 1, in_cpu[cpu_sel[(size_t)g * B + i]] = 1;
        std::vector<double> sorted(s32);
        std::nth_element(sorted.begin(), sorted.begin() + (B - 1), sorted.end(), std::greater<double>());
        const double thr = sorted[B - 1];
        double shift = 0;
        for (int t = 0; t < n; ++t) shift = std::max(shift, fabs(s16[t] - s32[t]));
        const double tol = 2 * shift + 1e-5 * mag + 1e-6;
        int overlap = 0;
        for (int t = 0; t < n; ++t) {
            overlap += in_gpu[t] && in_cpu[t];
            if (in_gpu[t] != in_cpu[t]) worst = std::max(worst, fabs(s32[t] - thr) / tol);
        }
        min_overlap = std::min(min_overlap, overlap);
    }
    near_ok = worst <= 1.0;
    snprintf(v, sizeof v, "%s, %d tied differ", kernel_ok ? "exact" : why, outside);
    row(layer, vn, "(b) selection == float64 top-N_fac of its labels", v, "ties aside", kernel_ok);
    snprintf(v, sizeof v, "overlap >= %d/%d", min_overlap, B);
    if (var.lt == FASA_CUDA_LABEL_F16) {
        snprintf(lim, sizeof lim, "diff near thr (%.2f)", worst);
        row(layer, vn, "(a) selection vs CPU engine's", v, lim, near_ok);
    } else {
        printf("| %5d | %-10s | %-46s | %-24s | %-22s | info |\n", layer, vn, "(a) selection vs CPU engine's", v,
               "int8 labels: none");
    }
    const std::vector<double> fasa16 = reference(d, L, K16, V16, true, sel.data(), B);
    const std::vector<double> fasa32 = reference(d, L, none, none, false, cpu_sel.data(), B);
    e = rel_error(got.data(), fasa16.data(), hd);
    row(layer, vn, "(b) FASA vs float64 over its selection", fmt(v, "rel.err %.2e", e), "< 1e-3", e < 1e-3);
    vs_engine("(a) FASA vs CPU engine", L.fasa, fasa16, fasa32);

    fasa_cuda_free(dq);
    fasa_cuda_free(dout);
    fasa_cuda_layer_free(l);
    fasa_cuda_ctx_free(ctx);
}

int main(int argc, char **argv) {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        fprintf(stderr, "usage: real_kv [DIR]   (default out/real_kv, made by scripts/dump-real-kv.sh)\n");
        return 2;
    }
    const dump d = read_header(argc == 2 ? argv[1] : "out/real_kv");
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("real K/V/q: %s, %s, %d tokens cached; %d/%d heads, d = %d; N_tip %d, N_fac %d; %s\n\n", d.model.c_str(),
           d.text.c_str(), d.n, d.H, d.KV, d.D, d.n_tip, d.budget, prop.name);
    printf("| layer | variant    | %-46s | %-24s | %-22s | result |\n", "check", "value", "limit");
    printf("|---|---|---|---|---|---|\n");
    for (int layer : d.layers) {
        const layer_data L = read_layer(d, layer);
        check_dump(d, L, layer);
        for (const variant &var : VARIANTS) check_variant(d, L, layer, var);
    }
    printf("\nreal_kv validation: %s (%d checks, %d failures)\n", n_fails ? "FAILED" : "passed", n_checks, n_fails);
    return n_fails ? 1 : 0;
}
