"""Benchmark (b): random-feature ridge regression (M = 1000) for N from 10^3 to 2 x 10^5.

Each size runs in a fresh subprocess so that its peak resident memory is its own. Reports the
time to fit (accumulate Psi^T Psi in chunks, Cholesky) and compute wake weights, the peak memory
of the process and its growth over the baseline (interpreter + torch + the N sleep inputs
themselves), and the log-log slope of time against N. Targets: slope about 1 (linear in N),
peak memory under 2 GB at N = 2 x 10^5.

    python benchmarks/rff_scaling.py [--sizes ...] [--features 1000] [--dim 16] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from alws.kernels import GaussianKernel
from alws.regression import RandomFeatureRidge
n, m, dim, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
x = torch.randn(n, dim, dtype=torch.float64, device=device)
xw = torch.randn(100, dim, dtype=torch.float64, device=device)
r = torch.randn(100, 3, dtype=torch.float64, device=device)
reg = RandomFeatureRidge(GaussianKernel(), n_features=m)
reg.fit(x[:1000], 1.0, 1e-4).weights(xw, r)  # warm-up
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
times = []
for _ in range(3):
    start = time.perf_counter()
    w = reg.fit(x, 3.0, 1e-4).weights(xw, r)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"n": n, "seconds": sorted(times)[1], "peak_rss_bytes": peak, "baseline_rss_bytes": base, "weights_shape": list(w.shape)}
if device.startswith("cuda"):
    out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
print(json.dumps(out))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10_000, 30_000, 100_000, 200_000])
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.features), str(args.dim), args.device], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["peak_rss_gb"] = row["peak_rss_bytes"] / 1e9
        row["growth_over_baseline_gb"] = (row["peak_rss_bytes"] - row["baseline_rss_bytes"]) / 1e9
        rows.append(row)
        print(f"N={n:>7}: {row['seconds']:.3f} s, peak RSS {row['peak_rss_gb']:.3f} GB (+{row['growth_over_baseline_gb']:.3f} GB over baseline)")
    big = [r for r in rows if r["n"] >= 10_000] or rows
    xs, ys = [math.log(r["n"]) for r in big], [math.log(r["seconds"]) for r in big]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / max(sum((a - mx) ** 2 for a in xs), 1e-12)
    from common import write

    write(
        f"rff_scaling_{args.device.replace(':', '')}",
        {"n_features": args.features, "dim": args.dim, "device": args.device, "rows": rows,
         "loglog_slope_n_ge_1e4": slope, "peak_rss_gb_at_max_n": rows[-1]["peak_rss_gb"], "target_peak_gb": 2.0},
    )
    print(f"log-log slope of time vs N (N >= 1e4): {slope:.3f}")


if __name__ == "__main__":
    main()
