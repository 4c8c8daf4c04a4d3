"""Benchmark: where learned kernel features pay, measured as gradient error against exact gradients.

Model: Experiment II's ring generator (an angle on the circle through an MLP to ``s x s``
images, Gaussian noise), trained for ``--pretrain`` ALWS steps on Gabor filters so that its
samples have structure, then frozen. Its exact gradient ``grad mean_b log p(x_b)`` comes from the
trapezoid rule on the circle (720 angles: spectrally accurate for a periodic integrand). For each
image size ``s`` (``D = s^2`` numbers) this compares ``alws.gradient`` (N = 1000, exact
regression) with the fixed kernel on raw ``x`` (``features="none"``) and with a learned linear
projection (``features="linear"``), over ``--seeds`` seeds: the numbers behind
``AUTO_FEATURES_MIN_DIM`` (``features="auto"`` learns when ``D`` is larger).

    python benchmarks/feature_switch.py [--sizes 2 3 4 8 16] [--seeds 5] [--pretrain 150] [--feature-dims 16 64]
                                        [--kernel-objectives targets log-likelihood]

With several ``--feature-dims`` each width of the learned projection gets its column
(``linear_16``, ``linear_64``, ...) and the results go to ``feature_switch_cpu_dims.json``; with
several ``--kernel-objectives`` (``alws.fit``'s ``kernel_objective``) each objective gets its
column (``linear_targets``, ...) and the results go to ``feature_switch_cpu_objectives.json``.
"""
from __future__ import annotations

import argparse
import math
import statistics

import torch

import alws
from alws.evaluate import relative_error
from alws.experiments.gabor_ring import RingGenerator, gabor_filters
from common import write


def exact_gradient(model: RingGenerator, x: torch.Tensor, angles: int = 720) -> dict:
    a = torch.arange(angles, dtype=torch.float32) * (2 * math.pi / angles)
    z = torch.stack([torch.cos(a), torch.sin(a)], 1)
    mean = model.mean(z).reshape(angles, -1)
    log_lik = torch.distributions.Normal(mean[None], model.log_sigma.exp()).log_prob(x.reshape(x.shape[0], 1, -1)).sum(-1)
    log_p = torch.logsumexp(log_lik, 1) - math.log(angles)
    names = [k for k, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(log_p.mean(), list(model.parameters()))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 4, 8, 16])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pretrain", type=int, default=150)
    parser.add_argument("--n-sleep", type=int, default=1000)
    parser.add_argument("--feature-dims", type=int, nargs="+", default=[16], help="widths of the learned projection")
    parser.add_argument("--kernel-objectives", nargs="+", default=["targets"], choices=["targets", "directional", "log-likelihood"],
                        help="what the learned projection is trained to predict")
    args = parser.parse_args()
    several = len(args.feature_dims) > 1
    objectives = len(args.kernel_objectives) > 1
    if several and objectives:
        parser.error("vary either --feature-dims or --kernel-objectives, not both")
    rows = []
    for size in args.sizes:
        generator = torch.Generator().manual_seed(0)
        data = gabor_filters(torch.rand(300, generator=generator) * math.pi, size, 0.8, 1.0, 0.3)
        model = RingGenerator(size, 32, "ring", sigma=0.3, seed=0)
        alws.fit(model, data, steps=args.pretrain, n_sleep=300, lr=0.01, seed=0, features="none", exponential_family=False, progress=False)
        reference = exact_gradient(model, data)
        row = {"size": size, "x_dim": size * size}
        variants = [("none", "none", 16, "targets")]
        if objectives:
            variants += [(f"linear_{objective}", "linear", args.feature_dims[0], objective) for objective in args.kernel_objectives]
        else:
            variants += [("linear" if not several else f"linear_{dim}", "linear", dim, args.kernel_objectives[0]) for dim in args.feature_dims]
        for column, features, dim, objective in variants:
            errors = [relative_error(alws.gradient(model, data, n_sleep=args.n_sleep, regression="exact", seed=s, features=features,
                                                   feature_dim=dim, kernel_objective=objective), reference)
                      for s in range(args.seeds)]
            row[column] = {"median": statistics.median(errors), "all": errors}
        rows.append(row)
        print(f"D={size * size:4d}: relative error, " + ", ".join(f"{column} {row[column]['median']:.3f}" for column, *_ in variants), flush=True)
    suffix = "_dims" if several else "_objectives" if objectives else ""
    write("feature_switch_cpu" + suffix, {"n_sleep": args.n_sleep, "pretrain_steps": args.pretrain, "seeds": args.seeds,
                                          "feature_dims": args.feature_dims, "kernel_objectives": args.kernel_objectives,
                                          "auto_min_dim": alws.learner.AUTO_FEATURES_MIN_DIM, "rows": rows})


if __name__ == "__main__":
    main()
