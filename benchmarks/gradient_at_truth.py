"""Benchmark: the bias of the ALWS gradient where the exact answer is known (Hodgkin-Huxley, blowfly).

At the true parameters the exact score has mean zero over data sets drawn from the model
(``E_x[grad log p(x)] = 0``), so the mean of the ALWS gradient over many such data sets is its
bias there (:func:`alws.evaluate.score_bias`), and a parameter whose mean is many standard errors
from zero is pushed away from the truth by the estimator itself. This builds the experiment's
learner (its ``Config`` with ``--set KEY=JSON`` over the defaults) on the true model (``--point
NAME=VALUE`` moves the truth), trains its kernel and selects its hyper-parameters for ``--warm``
steps on one data set (the kernel sees sleep samples only), then draws ``--datasets`` data sets
and takes ``--repeats`` gradients on each (fresh sleep samples each time). A data set is what the
experiment trains on: ``n_traces`` voltage traces (Hodgkin-Huxley), one series (blowfly).
Gradients are in the model's parameters (log scale for positive ones; Hodgkin-Huxley potentials
in units of 10 mV).

For Hodgkin-Huxley it also splits what the wake weights ``A [N, B]`` say about the observation
noise, per trace: ``estimate = sum_n A_nb |x*_b - V_n|^2`` (what the fast path's gradient for
``sigma_obs`` uses), ``plug_in = |x*_b - sum_n A_nb V_n|^2``, ``true = |x*_b - V*_b|^2`` (the
data's own voltage path, known here), ``miss = |V*_b - sum_n A_nb V_n|^2`` (how far the
regression's posterior mean path is from the true one) and ``T sigma_obs^2`` (the expectation of
``true``).

    python benchmarks/gradient_at_truth.py hodgkin-huxley [--set exponential_family='"per-parameter"'] [--point sigma_obs=5] [--name NAME]
    python benchmarks/gradient_at_truth.py blowfly --datasets 40

Writes ``results/gradient_at_truth_EXPERIMENT_NAME.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from alws.evaluate import score_bias
from alws.experiments import blowfly as bf
from alws.experiments import hodgkin_huxley as hh
from alws.learner import ALWS
from alws.models.hodgkin_huxley import HodgkinHuxley, step_current
from alws.seeding import seeded
from common import parse_sets, write


def noise_split(learner: ALWS, v_data: torch.Tensor, data: torch.Tensor) -> dict:
    """Per-trace means of the Hodgkin-Huxley terms in the module docstring, from one fresh set of sleep samples."""
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


def hodgkin_huxley(config: hh.Config, point: dict):
    """``(model at the truth, points per data set, learner options, truth values)``."""
    unknown = sorted(set(point) - set(hh.TRUTH))
    if unknown:
        raise SystemExit(f"--point {', '.join(unknown)}: not a parameter; valid: {', '.join(hh.TRUTH)}")
    truth = {**hh.TRUTH, **point}
    current = step_current(config.n_steps, config.current, config.current_noise, seed=config.seed)
    model = HodgkinHuxley(current, config.dt, params=truth)
    return model, config.n_traces, config.alws_options(hh.kernel_features(config)), truth


def blowfly(config: bf.Config, point: dict):
    """As :func:`hodgkin_huxley`; the initial values are the simulated series' first count, as
    the experiment's model starts."""
    series, model = bf.simulated_data(config.n_steps, config.max_lag, config.seed)
    unknown = sorted(set(point) - set(bf.POSITIVE))
    if unknown:
        raise SystemExit(f"--point {', '.join(unknown)}: not a parameter; valid: {', '.join(bf.POSITIVE)}")
    with torch.no_grad():
        model.log_initial.fill_(float(torch.log(series[0])))
        for name, value in point.items():
            getattr(model, f"log_{name}").fill_(math.log(value))
    return model, 1, config.alws_options(bf.kernel_features(config)), {k: float(model.value(k).detach()) for k in bf.POSITIVE}


SETUPS = {"hodgkin-huxley": (hh.Config, hodgkin_huxley), "blowfly": (bf.Config, blowfly)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(SETUPS))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--point", action="append", default=[], metavar="NAME=VALUE", help="a true parameter moved")
    parser.add_argument("--warm", type=int, default=60)
    parser.add_argument("--datasets", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    config_class, setup = SETUPS[args.experiment]
    config = dataclasses.replace(config_class(seed=args.seed), **parse_sets(args.sets))
    config.validate()
    point = {}
    for pair in args.point:
        key, _, value = pair.partition("=")
        point[key] = float(value)
    model, n_data, options, truth = setup(config, point)
    learner = ALWS(model, **options)
    started = time.perf_counter()
    split = None
    with seeded(args.seed):
        bias = score_bias(model, n_data, args.datasets, args.repeats, args.warm, learner=learner)
        if args.experiment == "hodgkin-huxley":
            splits = []
            for _ in range(args.datasets):
                with torch.no_grad():
                    v_data, data = model.sample(n_data)
                splits.append(noise_split(learner, v_data, data))
            split = {k: sum(s[k] for s in splits) / len(splits) for k in splits[0]}
            split["T_sigma_obs_squared"] = config.n_steps * truth["sigma_obs"] ** 2
    rows = [row for row in bias.rows() if row["parameter"] not in ("log_initial", "lag_logits")]
    for row in rows:
        print(f"{row['parameter']:>18s}  mean {row['mean']:+10.4g}  s.e. {row['standard_error']:9.3g}  z {row['z']:+6.1f}")
    if split is not None:
        print("noise split per trace (mV^2): " + ", ".join(f"{k} {v:.0f}" for k, v in split.items()))
    name = args.name or f"seed{args.seed}"
    write(f"gradient_at_truth_{args.experiment}_{name}", {
        "experiment": args.experiment, "sets": parse_sets(args.sets), "point": truth, "warm": args.warm, "datasets": args.datasets,
        "repeats": args.repeats, "seed": args.seed, "path": learner.path.name, "seconds": time.perf_counter() - started,
        "rows": rows, **({"noise_split": split} if split is not None else {}),
    })


if __name__ == "__main__":
    main()
