"""Benchmark: per-step wall time and peak memory of ALWS against each baseline, same model and batch.

Model: the MLP decoder of ``common.MLPGenerator`` (8-D latent, 32-D x); data: 2000 points from
it; wake/minibatch size 100. Each method runs in a fresh subprocess (so its peak resident memory
is its own) for ``--steps`` steps; the per-step time is the median of the history's ``time``
after ``--warmup`` steps. ALWS runs with N sleep samples (exact KRR); the baselines with
``particles`` samples per point where they use several; WGAN-GP with 5 critic steps per
generator step.

    python benchmarks/methods.py [--steps 60] [--n-sleep 1000] [--particles 8] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, statistics, sys, torch
sys.path.insert(0, sys.argv[6])
from common import MLPGenerator
import alws
from alws import baselines
method, steps, n_sleep, particles, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
truth = MLPGenerator()
with torch.no_grad():
    data = truth.sample(2000)[1]
model = MLPGenerator()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if method == "alws":
    history = alws.fit(model, data, steps=steps, batch_size=100, n_sleep=n_sleep, lr=1e-3, seed=0, progress=False, regression="exact")
else:
    history = baselines.fit(method, model, data, steps=steps, batch_size=100, lr=1e-3, seed=0, progress=False, particles=particles)
times = history.column("time")[warmup:]
print(json.dumps({"method": method, "median_step_s": statistics.median(times), "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "baseline_rss_bytes": base, "final_loss": history[-1]["loss"]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--n-sleep", type=int, default=1000)
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["alws", "vae", "iwae", "sf-vae", "vae-flow", "rws", "sivi", "wgan-gp"])
    args = parser.parse_args()
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    rows = []
    for method in args.methods:
        done = subprocess.run([sys.executable, "-c", CHILD, method, str(args.steps), str(args.n_sleep), str(args.particles), str(args.warmup), here],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["peak_rss_gb"] = row["peak_rss_bytes"] / 1e9
        row["growth_over_baseline_gb"] = (row["peak_rss_bytes"] - row["baseline_rss_bytes"]) / 1e9
        rows.append(row)
        print(f"{method:<9} {row['median_step_s'] * 1000:8.2f} ms/step   peak RSS {row['peak_rss_gb']:.3f} GB (+{row['growth_over_baseline_gb']:.3f} GB)")
    from common import write

    write("methods_cpu", {"steps": args.steps, "warmup": args.warmup, "n_sleep": args.n_sleep, "particles": args.particles, "batch_size": 100, "rows": rows})


if __name__ == "__main__":
    main()
