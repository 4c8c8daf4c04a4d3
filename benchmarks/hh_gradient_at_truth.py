"""Benchmark: the bias of the ALWS gradient on Hodgkin-Huxley, measured where the exact answer is known.

At the true parameters the exact score has mean zero over data sets drawn from the model
(``E_x[grad log p(x)] = 0``), so the mean of the ALWS gradient over many such data sets is its
bias there (:func:`alws.evaluate.score_bias`), and a parameter whose mean is many standard errors
from zero is pushed away from the truth by the estimator itself. This builds the experiment's learner (``alws.experiments.
hodgkin_huxley.Config`` with ``--set KEY=JSON`` over the defaults) on the true model (``--point
NAME=VALUE`` moves the truth), trains its kernel for ``--warm`` steps on one data set (the
kernel sees sleep samples only), then draws ``--datasets`` data sets of ``n_traces`` traces and
takes ``--repeats`` gradients on each (fresh sleep samples each time). Gradients are per data
set of ``n_traces`` traces, in the model's parameters (log scale for conductances and noise
scales, units of 10 mV for potentials).

It also splits what the wake weights ``A [N, B]`` say about the observation noise, per trace:
``estimate = sum_n A_nb |x*_b - V_n|^2`` (what the fast path's gradient for ``sigma_obs`` uses),
``plug_in = |x*_b - sum_n A_nb V_n|^2``, ``true = |x*_b - V*_b|^2`` (the data's own voltage path,
known here), ``miss = |V*_b - sum_n A_nb V_n|^2`` (how far the regression's posterior mean path
is from the true one) and ``T sigma_obs^2`` (the expectation of ``true``).

    python benchmarks/hh_gradient_at_truth.py [--set exponential_family='"per-parameter"'] [--point sigma_obs=5] [--name NAME]

Writes ``results/hh_gradient_at_truth_NAME.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from alws.experiments import hodgkin_huxley as hh
from alws.evaluate import score_bias
from alws.learner import ALWS
from alws.models.hodgkin_huxley import TRUTH, HodgkinHuxley, step_current
from alws.seeding import seeded
from common import parse_sets, write


def noise_split(learner: ALWS, v_data: torch.Tensor, data: torch.Tensor) -> dict:
    """Per-trace means of the terms in the module docstring, from one fresh set of sleep samples."""
    v_sleep, _, phi_wake, _ = learner.prepare(data)  # outside no_grad: the kernel may train here
    with torch.no_grad():
        a = learner.wake_weights(phi_wake).to(data.dtype)  # [N, B]
        posterior_mean = a.T @ v_sleep
        terms = {
            "estimate": (a * ((data[None] - v_sleep[:, None]) ** 2).sum(-1)).sum(0),
            "plug_in": ((data - posterior_mean) ** 2).sum(-1),
            "true": ((data - v_data) ** 2).sum(-1),
            "miss": ((v_data - posterior_mean) ** 2).sum(-1),
        }
        return {k: float(v.mean()) for k, v in terms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--point", action="append", default=[], metavar="NAME=VALUE", help="a true parameter moved")
    parser.add_argument("--warm", type=int, default=60)
    parser.add_argument("--datasets", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    config = dataclasses.replace(hh.Config(seed=args.seed), **parse_sets(args.sets))
    config.validate()
    point = dict(TRUTH)
    for pair in args.point:
        key, _, value = pair.partition("=")
        if key not in TRUTH:
            raise SystemExit(f"--point {key}: not a parameter; valid: {', '.join(TRUTH)}")
        point[key] = float(value)
    current = step_current(config.n_steps, config.current, config.current_noise, seed=config.seed)
    model = HodgkinHuxley(current, config.dt, params=point)
    learner = ALWS(model, **config.alws_options(hh.kernel_features(config)))
    started = time.perf_counter()
    with seeded(args.seed):
        bias = score_bias(model, config.n_traces, args.datasets, args.repeats, args.warm, learner=learner)
        splits = []
        for _ in range(args.datasets):
            with torch.no_grad():
                v_data, data = model.sample(config.n_traces)
            splits.append(noise_split(learner, v_data, data))
    rows = bias.rows()
    split = {k: sum(s[k] for s in splits) / len(splits) for k in splits[0]}
    split["T_sigma_obs_squared"] = config.n_steps * point["sigma_obs"] ** 2
    for row in rows:
        print(f"{row['parameter']:>18s}  mean {row['mean']:+10.4g}  s.e. {row['standard_error']:9.3g}  z {row['z']:+6.1f}")
    print("noise split per trace (mV^2): " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()))
    name = args.name or f"seed{args.seed}"
    write(f"hh_gradient_at_truth_{name}", {
        "sets": parse_sets(args.sets), "point": point, "warm": args.warm, "datasets": args.datasets, "repeats": args.repeats,
        "seed": args.seed, "path": learner.path.name, "seconds": time.perf_counter() - started, "rows": rows, "noise_split": split,
    })


if __name__ == "__main__":
    main()
