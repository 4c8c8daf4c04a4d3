"""Benchmark (a): one ALWS step against the sum of its parts, measured in the same run.

Parts: sampling N sleep pairs; kernel matrix + Cholesky + wake weights; forward and backward of the
weighted log-joint. The step is ``ALWS.loss`` + backward + Adam step with hyper-parameters held
fixed (selection runs every ``select_every`` steps; its cost is reported separately, per call and
amortised). Target: step / sum of parts <= 1.3.

    python benchmarks/step_cost.py [--sizes 500 1000 2000 4000] [--repeats 5] [--device cpu]
    python benchmarks/step_cost.py --sizes 1000 --x-dim 784 --regression rff --fast-path   # image-sized x

With ``--x-dim`` other than 32, ``--regression`` other than exact or ``--fast-path`` the JSON
name says so (``step_cost_cpu_x784_rff_fast.json``), leaving the default table alone.
"""
from __future__ import annotations

import argparse
import inspect

import torch

from alws.learner import ALWS
from common import MLPGenerator, median_time, write


def measure(n: int, repeats: int, device: str, batch: int = 100, x_dim: int = 32, regression: str = "exact",
            fast_path: bool = False) -> dict:
    torch.manual_seed(0)
    model = MLPGenerator(x_dim=x_dim).to(device)
    with torch.no_grad():
        data = model.sample(batch)[1]
    learner = ALWS(model, n_sleep=n, regression=regression, select_every=0, features="none",  # the core step; see kernel_learning.py
                   exponential_family=True if fast_path else "auto")
    learner.loss(data)  # first call selects the hyper-parameters (and the path)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    selection = median_time(lambda: learner.select(*_selection_args(learner, data)), max(1, repeats // 2), device)

    def step():
        loss, _ = learner.loss(data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    z, x = learner.sleep()
    phi, phi_wake = learner.embed(x), learner.embed(data)
    sel = learner.selection
    r = learner.statistics(data) / batch

    def regression():
        learner.regressor.fit(learner.embed(x), sel.bandwidth, sel.ridge).weights(phi_wake, r)

    w = learner.regressor.fit(phi, sel.bandwidth, sel.ridge).weights(phi_wake, r)

    def forward_backward():
        t = learner.targets(z, x)
        optimizer.zero_grad()
        (-(t * w.to(t.dtype)).sum()).backward()

    parts = {
        "sample": median_time(lambda: learner.sleep(), repeats, device),
        "kernel_cholesky_weights": median_time(regression, repeats, device),
        "forward_backward": median_time(forward_backward, repeats, device),
    }
    total = sum(parts.values())
    step_time = median_time(step, repeats, device)
    return {
        "n_sleep": n,
        "path": "exponential-family" if learner.exponential_family_path else "log-joint",
        "parts_s": parts,
        "sum_of_parts_s": total,
        "step_s": step_time,
        "ratio": step_time / total,
        "selection_s": selection,
        "selection_amortised_s": selection / inspect.signature(ALWS).parameters["select_every"].default,
    }


def _selection_args(learner, data):
    z, x = learner.sleep()
    return z, learner.embed(x), learner.embed(data), x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--x-dim", type=int, default=32, help="dimension of x (the wake statistics of the fast path: 1 + 2 x_dim)")
    parser.add_argument("--regression", default="exact", choices=["exact", "rff", "nystrom"])
    parser.add_argument("--fast-path", action="store_true", help="force the exponential-family path")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        row = measure(n, args.repeats, args.device, x_dim=args.x_dim, regression=args.regression, fast_path=args.fast_path)
        rows.append(row)
        print(f"N={n:>5}: step {row['step_s']:.4f} s, parts {row['sum_of_parts_s']:.4f} s, ratio {row['ratio']:.3f}, selection {row['selection_s']:.3f} s")
    name = f"step_cost_{args.device.replace(':', '')}"
    if args.x_dim != 32 or args.regression != "exact" or args.fast_path:
        name += f"_x{args.x_dim}_{args.regression}" + ("_fast" if args.fast_path else "")
    write(name, {"target_ratio": 1.3, "device": args.device, "x_dim": args.x_dim, "regression": args.regression,
                 "rows": rows, "max_ratio": max(r["ratio"] for r in rows)})


if __name__ == "__main__":
    main()

