"""Benchmark: how much one simulated blowfly series says about each parameter.

The blowfly experiment asks every learned parameter to land within 30% of the truth from a
single 180-day series. This measures whether the series can tell such values apart at all:
for each parameter it simulates ``--series`` series at the truth (the true lag fixed) and as
many with that one parameter moved by a factor (``--factors``, default 0.3 and 1.5: the edges
of the seeds' learned values), and reports how far apart the two distributions of the
experiment's kernel summaries (:func:`alws.experiments.blowfly.series_summaries`) are: the
Mahalanobis distance between their means under the pooled covariance, in units of the spread of
one series. A distance below about 1 means one series cannot tell the two values apart through
these statistics, so no method fitted to one series can be expected to recover the parameter
to 30%. ``floor``: the same distance between two independent samples at the truth (what finite
samples alone give).

    python benchmarks/blowfly_identifiability.py [--series 400] [--factors 0.3 1.5]
"""
from __future__ import annotations

import argparse

import torch

from alws.experiments.blowfly import SIMULATION_TRUTH, series_summaries
from alws.models.blowfly import POSITIVE, Blowfly
from alws.seeding import seeded
from common import write


def summaries(values: dict, n: int, seed: int, n_steps: int = 180, max_lag: int = 20) -> torch.Tensor:
    """``[n, S]`` summaries of ``n`` series simulated at ``values`` with the true lag."""
    model = Blowfly(n_steps, max_lag, **values)
    with torch.no_grad():
        model.lag_logits.fill_(-30.0)
        model.lag_logits[SIMULATION_TRUTH["lag"] - 1] = 30.0
    with seeded(seed):
        return series_summaries(model.sample(n)[1])


def mahalanobis(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance between the means of samples ``a, b [n, S]`` under their pooled covariance."""
    pooled = torch.cov(torch.cat([a - a.mean(0), b - b.mean(0)]).T)
    diff = b.mean(0) - a.mean(0)
    jitter = 1e-9 * pooled.diagonal().mean() * torch.eye(len(diff), dtype=pooled.dtype)
    return float(diff @ torch.linalg.solve(pooled + jitter, diff)) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.3, 1.5])
    args = parser.parse_args()
    truth = {k: v for k, v in SIMULATION_TRUTH.items() if k != "lag"}
    reference = summaries(truth, args.series, seed=0)
    floor = mahalanobis(reference, summaries(truth, args.series, seed=1))
    print(f"two samples at the truth (the floor of this estimate): {floor:.2f}")
    rows = []
    for name in POSITIVE:
        for factor in args.factors:
            moved = summaries({**truth, name: truth[name] * factor}, args.series, seed=1)
            rows.append({"parameter": name, "truth": truth[name], "factor": factor, "mahalanobis": mahalanobis(reference, moved)})
            print(f"{name:8s} x {factor:<4g} Mahalanobis distance {rows[-1]['mahalanobis']:.2f}")
    write("blowfly_identifiability", {"series": args.series, "floor": floor, "rows": rows})


if __name__ == "__main__":
    main()
