"""PyTorch peers for the CUDA decode-attention kernels, timed on the same shapes.

  SDPA dense     torch scaled_dot_product_attention over the whole cache
                 (fp16, GQA through enable_gqa).
  naive FASA     the paper-code style pipeline in PyTorch ops: label scores
                 (matmul over the label cache), torch.topk, gather of the chosen
                 K/V rows, SDPA over them.

Each is timed per layer over several layers' caches used in turn (so the
working set exceeds L2, as in fasa_step), with CUDA events, median of
replays, both as eager launches and replayed from a captured CUDA graph.

With --ours (the CSV of fasa_step --bench) it also prints the comparison and
the issue's targets.

usage: python3 peers.py [--csv OUT] [--ours fasa_step.csv] [--quick]
"""
import argparse
import csv
import math
import statistics
import sys

import torch
import torch.nn.functional as F

SHAPES = [("llama3-8b", 32, 8, 128), ("smollm2-135m", 9, 3, 64)]
CONTEXTS = [4096, 16384, 32768, 65536, 131072]


def timed(fn, reps=25, warm=3):
    """Median milliseconds of fn() over reps runs, CUDA events."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def timed_graph(fn, reps=25):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return timed(g.replay, reps)


def make_layers(n_heads, n_kv, d, n, n_lab, n_layers, gen):
    layers = []
    for _ in range(n_layers):
        k = torch.rand(1, n_kv, n, d, device="cuda", dtype=torch.float16, generator=gen) * 2 - 1
        v = torch.rand(1, n_kv, n, d, device="cuda", dtype=torch.float16, generator=gen) * 2 - 1
        q = (torch.rand(1, n_heads, 1, d, device="cuda", dtype=torch.float16, generator=gen) * 2 - 1) * 8
        lab_idx = torch.stack([torch.randperm(d // 2, device="cuda", generator=gen)[: n_lab // 2]
                               for _ in range(n_kv)])
        lab_idx = torch.stack([2 * lab_idx, 2 * lab_idx + 1], dim=-1).reshape(n_kv, n_lab)
        labels = torch.gather(k, 3, lab_idx[None, :, None, :].expand(1, n_kv, n, n_lab)).contiguous()
        layers.append(dict(q=q, k=k, v=v, lab_idx=lab_idx, labels=labels))
    return layers


def sdpa_dense(L):
    return F.scaled_dot_product_attention(L["q"], L["k"], L["v"], enable_gqa=True)


def naive_fasa(L, n_fac):
    q, k, v, labels, lab_idx = L["q"], L["k"], L["v"], L["labels"], L["lab_idx"]
    n_heads, n_kv, d = q.shape[1], k.shape[1], q.shape[3]
    g = n_heads // n_kv
    # TIP: one token set per KV group, scores summed over the group's heads
    qg = q.view(1, n_kv, g, d).sum(2)                                # [1, kv, d]
    ql = torch.gather(qg, 2, lab_idx[None])                          # [1, kv, n_lab]
    scores = torch.matmul(labels, ql.unsqueeze(-1)).squeeze(-1)      # [1, kv, n]
    idx = torch.topk(scores, n_fac, dim=-1).indices                  # [1, kv, n_fac]
    gi = idx.unsqueeze(-1).expand(-1, -1, -1, d)
    kg, vg = torch.gather(k, 2, gi), torch.gather(v, 2, gi)
    return F.scaled_dot_product_attention(q, kg, vg, enable_gqa=True)


def run_peers(quick, gen):
    rows = []
    contexts = [32768, 131072] if quick else CONTEXTS
    print("PyTorch %s, %s" % (torch.__version__, torch.cuda.get_device_name()))
    print("%-13s %7s %-22s %5s %5s %12s %12s %8s" % ("shape", "n", "method", "N_tip", "N_fac",
                                                     "eager us/L", "graph us/L", "GB/s(g)"))
    for name, h, kv, d in SHAPES:
        for n in contexts:
            kv_bytes = 4.0 * kv * n * d
            n_layers = max(2, min(16, math.ceil(768e6 / kv_bytes)))
            for n_tip in (16, 8):
                layers = make_layers(h, kv, d, n, 2 * n_tip, n_layers, gen)
                cases = [("sdpa dense", 0)] if n_tip == 16 else []
                cases += [("naive FASA (torch)", f) for f in (256, 1024, 2048) if f < n]
                for method, n_fac in cases:
                    if n_fac:
                        fn = lambda: [naive_fasa(L, n_fac) for L in layers]
                    else:
                        fn = lambda: [sdpa_dense(L) for L in layers]
                    eager = timed(fn) * 1e3 / n_layers
                    try:
                        graph = timed_graph(fn) * 1e3 / n_layers
                    except Exception as e:  # capture can fail for some ops; report eager only
                        print("  graph capture failed for %s: %s" % (method, e), file=sys.stderr)
                        graph = float("nan")
                    gbs = kv_bytes / (graph * 1e-6) / 1e9 if not n_fac else float("nan")
                    print("%-13s %7d %-22s %5d %5d %12.2f %12.2f %8.0f" % (
                        name, n, method, n_tip if n_fac else 0, n_fac, eager, graph, gbs))
                    rows.append(dict(shape=name, n=n, method=method, n_tip=n_tip if n_fac else 0,
                                     n_fac=n_fac, eager_us=eager, graph_us=graph))
                del layers
                torch.cuda.empty_cache()
    return rows


def report(rows, ours_path):
    ours = list(csv.DictReader(open(ours_path)))
    copy = next(float(r["gbs"]) for r in ours if r["method"] == "copy bandwidth")

    def our(shape, n, method, n_tip=None, n_fac=None):
        for r in ours:
            if (r["shape"], int(r["n"]), r["method"]) == (shape, n, method) and \
               (n_tip is None or int(r["n_tip"]) == n_tip) and (n_fac is None or int(r["n_fac"]) == n_fac):
                return r
        return None

    def peer(shape, n, method, n_fac=0, n_tip=None):
        for r in rows:
            if (r["shape"], r["n"], r["method"], r["n_fac"]) == (shape, n, method, n_fac) and \
               (n_tip is None or r["n_tip"] == n_tip):
                return r
        return None

    print("\ncomparison (us per layer; SDPA as eager / graph; ours in a graph); copy bandwidth %.0f GB/s" % copy)
    print("%-13s %7s | %15s | %8s %6s | %8s %7s %7s | %8s %7s | %8s %8s" % (
        "shape", "n", "SDPA e/g", "dense", "%copy", "FASA-C", "xSDPAe", "xSDPAg", "FASA-M", "xSDPAe",
        "M dev MB", "dense MB"))
    checks = []
    for name, _, _, _ in SHAPES:
        for n in sorted({r["n"] for r in rows if r["shape"] == name}):
            sd = peer(name, n, "sdpa dense")
            dn = our(name, n, "dense (ours)")
            fc = our(name, n, "FASA-C fp16", 16, 256)
            fm = our(name, n, "FASA-M fp16", 16, 256)
            if not (sd and dn and fc and fm):
                continue
            d_us, c_us, m_us = float(dn["us_per_layer"]), float(fc["us_per_layer"]), float(fm["us_per_layer"])
            pct = 100 * float(dn["gbs"]) / copy
            print("%-13s %7d | %7.1f/%7.1f | %8.1f %5.0f%% | %8.1f %6.1fx %6.1fx | %8.1f %6.2fx | %8.1f %8.1f" % (
                name, n, sd["eager_us"], sd["graph_us"], d_us, pct, c_us, sd["eager_us"] / c_us,
                sd["graph_us"] / c_us, m_us, sd["eager_us"] / m_us, float(fm["device_mb_per_layer"]),
                float(dn["device_mb_per_layer"])))
            if name != "llama3-8b":
                continue
            best_sdpa = min(sd["eager_us"], sd["graph_us"])
            if n >= 32768:
                checks.append(("dense >= SDPA (faster of eager/graph) at %dK" % (n // 1024), d_us <= best_sdpa))
            if n >= 65536:
                checks.append(("dense >= 80%% of copy bandwidth at %dK (%.0f%%)" % (n // 1024, pct), pct >= 80))
            if n == 32768:
                checks.append(("FASA-C N_tip16 N_fac256 >= 3x SDPA at 32K (%.1fx eager, %.1fx graph)" % (
                    sd["eager_us"] / c_us, sd["graph_us"] / c_us), best_sdpa / c_us >= 3))
                ratio = float(fm["device_mb_per_layer"]) / float(dn["device_mb_per_layer"])
                checks.append(("FASA-M device KV memory <= 1/6 of dense at 32K (%.3f)" % ratio, ratio <= 1 / 6))
            if n == 131072:
                checks.append(("FASA-C N_tip16 N_fac256 >= 5x SDPA at 128K (%.1fx eager, %.1fx graph)" % (
                    sd["eager_us"] / c_us, sd["graph_us"] / c_us), best_sdpa / c_us >= 5))
                checks.append(("FASA-M latency <= SDPA dense at 128K (%.1f vs %.1f us)" % (m_us, best_sdpa),
                               m_us <= best_sdpa))
    print("\ntargets (llama3-8b shapes; SDPA = the faster of its eager and graph timings):")
    for what, ok in checks:
        print("  %-4s %s" % ("met" if ok else "MISS", what))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", help="write the peer timings here")
    ap.add_argument("--ours", help="fasa_step --bench CSV to compare against")
    ap.add_argument("--quick", action="store_true", help="32K and 128K only")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    gen = torch.Generator(device="cuda")
    gen.manual_seed(torch.seed() & 0xffffffff)
    with torch.no_grad():
        rows = run_peers(a.quick, gen)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    if a.ours:
        report(rows, a.ours)


if __name__ == "__main__":
    main()
