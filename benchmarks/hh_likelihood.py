"""Benchmark: Hodgkin-Huxley log-likelihoods of the data, at the truth and along ALWS runs.

The model's ``log p(x)`` has no closed form, but it is Markov with Gaussian transitions and
observations, so a fully adapted particle filter estimates it well
(:meth:`alws.models.hodgkin_huxley.HodgkinHuxley.log_marginal`). On the data set the experiment
trains on (its ``Config`` for ``--seed``, with a run's own config where ``--run`` is given) this
reports, in nats summed over the traces (mean and spread over ``--repeats`` filters of
``--particles`` particles):

- the truth, the deliberately wrong start, and the truth with each parameter moved by a factor
  (``--factor``; how sharply the data pin each parameter down);
- for each ``--run DIR`` (a finished ``alws run hodgkin-huxley`` directory): the learned
  parameters, and every ``--every``-th row of its ``parameter_trajectory`` (the end of the first
  stage included), with the relative errors of the row of highest log-likelihood.

The maximum-likelihood estimate is at least as likely as the truth, so a run whose end is many
nats below the truth has not reached it: what is left is the estimator's, not the data's.

    python benchmarks/hh_likelihood.py --seed S [--run runs/hh-S] [--particles 1000] [--repeats 3] [--every 25]

Writes ``results/hh_likelihood_seedS.json`` (``--name`` replaces ``seedS``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from alws.experiments import hodgkin_huxley as hh
from alws.models.hodgkin_huxley import LOG_SCALE, PARAMETERS, TRUTH, WRONG_START, HodgkinHuxley, step_current
from alws.seeding import seeded
from common import write


def experiment_data(config: hh.Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The current ``[T]`` and data traces ``[n_traces, T]`` of :func:`alws.experiments.hodgkin_huxley.run`."""
    current = step_current(config.n_steps, config.current, config.current_noise, seed=config.seed)
    truth = HodgkinHuxley(current, config.dt)
    with seeded(config.seed), torch.no_grad():
        _, data = truth.sample(config.n_traces)
    return current, data


def log_likelihood(current, dt, data, values: dict, particles: int, repeats: int) -> dict:
    """Mean and standard deviation over ``repeats`` particle filters (seeds ``0..repeats-1``) of
    ``sum_i log p(x_i)`` (nats; :func:`alws.experiments.hodgkin_huxley.data_log_likelihood`)."""
    draws = [hh.data_log_likelihood(current, dt, data, values, particles, seed=r) for r in range(repeats)]
    return {"mean": statistics.fmean(draws), "sd": statistics.stdev(draws) if repeats > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", action="append", default=[], metavar="DIR", help="a finished hodgkin-huxley run directory")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=25, help="trajectory steps between evaluated rows")
    parser.add_argument("--factor", type=float, default=1.5, help="each parameter moved by this factor (potentials: by (factor - 1) x 10 mV)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.particles < 1 or args.repeats < 1 or args.every < 1:
        parser.error("--particles, --repeats and --every must be >= 1")

    config = hh.Config(seed=args.seed)
    runs = []
    for directory in args.run:
        saved = json.loads((Path(directory) / "results.json").read_text())
        if saved.get("experiment") != hh.NAME:
            parser.error(f"{directory} is a run of {saved.get('experiment')!r}, not {hh.NAME!r}")
        runs.append((directory, saved))
    if runs:  # the data of the run (its own seed, trace length and current)
        keys = ("seed", "n_steps", "dt", "n_traces", "current", "current_noise")
        settings = {k: runs[0][1]["config"][k] for k in keys}
        for directory, saved in runs[1:]:
            if any(saved["config"][k] != settings[k] for k in keys):
                parser.error(f"{directory} was trained on other data than {runs[0][0]}")
        config = hh.Config(**settings)
    current, data = experiment_data(config)

    def ll(values):
        return log_likelihood(current, config.dt, data, values, args.particles, args.repeats)

    truth = ll(TRUTH)
    print(f"seed {config.seed}: log p(data) at the truth {truth['mean']:.1f} (sd {truth['sd']})", flush=True)
    results = {"seed": config.seed, "particles": args.particles, "repeats": args.repeats, "truth": truth, "wrong_start": ll(WRONG_START),
               "moved": {}, "runs": {}}
    for name in PARAMETERS:
        moved = dict(TRUTH)
        moved[name] = TRUTH[name] * args.factor if name in LOG_SCALE else TRUTH[name] + 10.0 * (args.factor - 1.0)
        results["moved"][name] = ll(moved)["mean"] - truth["mean"]
        print(f"  {name} moved: {results['moved'][name]:+.1f} nats", flush=True)
    for directory, saved in runs:
        rows = [row for row in saved["parameter_trajectory"] if row["step"] % args.every == 0]
        scored = []
        for row in rows:
            values = {k: row[k] for k in PARAMETERS}
            scored.append({"step": row["step"], "log_likelihood": ll(values)["mean"], "relative_error": hh.relative_errors(values)})
            print(f"  {directory} step {row['step']}: {scored[-1]['log_likelihood'] - truth['mean']:+.1f} nats from the truth", flush=True)
        learned = ll(saved["learned_parameters"])
        best = max(scored, key=lambda r: r["log_likelihood"])
        errors = best["relative_error"]
        results["runs"][directory] = {
            "learned": {"log_likelihood": learned, "below_truth": truth["mean"] - learned["mean"],
                        "relative_error": saved["relative_error"]["learned"]},
            "trajectory": scored,
            "most_likely_row": {**best, "median_relative_error": statistics.median(errors.values()),
                                "largest_relative_error": max(errors.values())},
        }
        print(f"{directory}: learned {truth['mean'] - learned['mean']:.1f} nats below the truth; most likely row: step {best['step']}, "
              f"{truth['mean'] - best['log_likelihood']:.1f} below, median error {statistics.median(errors.values()):.3f}, "
              f"largest {max(errors.values()):.3f}", flush=True)
    write(f"hh_likelihood_{args.name or f'seed{config.seed}'}", results)


if __name__ == "__main__":
    main()
