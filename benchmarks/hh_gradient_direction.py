"""Benchmark: does the ALWS gradient point up the Hodgkin-Huxley likelihood where training is?

At a point of a finished run's trajectory (by default the end of its first stage) this compares,
parameter by parameter, two gradients of ``log p(data)`` (nats, summed over the run's traces, in
the model's parameter units: logarithms of the positive parameters, potentials in 10 mV):

- the likelihood's own, by central finite differences of the particle-filter estimate
  (:func:`alws.experiments.hodgkin_huxley.data_log_likelihood`) with common random numbers: each
  pair ``theta +- h e_i`` uses the same filter seed, averaged over ``--fd-repeats`` seeds;
- the ALWS estimate of the same, with the learner of the stage that follows (``--stage 2``, the
  default) or of the first stage (``--stage 1``), after ``--warm`` learner calls on the data (its
  kernel is trained on sleep samples only, as in training), over ``--repeats`` fresh draws of the
  sleep samples: mean, standard error, and how often a single draw has the likelihood's sign (a
  single draw is what each Adam step sees);
- how typical the data are for the model there: ``log p(x)`` per trace of the data against that
  of traces the model simulates (the sleep samples' kind).

    python benchmarks/hh_gradient_direction.py --run runs/hh-s0 [--step 400] [--stage 2] [--repeats 8]

Writes ``results/hh_gradient_direction_NAME.json`` (``NAME``: the run directory's name and the step).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from alws.experiments import hodgkin_huxley as hh
from alws.experiments.base import config_of_run
from alws.learner import ALWS
from alws.models.hodgkin_huxley import PARAMETERS, HodgkinHuxley
from alws.seeding import seeded
from common import write
from hh_likelihood import experiment_data


def natural_name(parameter: str) -> str:
    """``"log_g_Na" -> "g_Na"``: the name in :data:`PARAMETERS` of one of the model's parameter tensors."""
    return parameter.removeprefix("log_")


def likelihood_gradient(model: HodgkinHuxley, data, h: float, particles: int, repeats: int) -> dict:
    """Per parameter: the mean over ``repeats`` filter seeds of the central difference of
    ``log p(data)`` when the model's parameter tensor moves by ``+-h``, and its spread."""
    out = {}
    for parameter_name, parameter in model.named_parameters():
        diffs = []
        for seed in range(repeats):
            ends = []
            for delta in (h, -h):
                with torch.no_grad():
                    parameter += delta
                    ends.append(hh.data_log_likelihood(model.current, model.dt, data, model.values(), particles, seed))
                    parameter -= delta
            diffs.append((ends[0] - ends[1]) / (2 * h))
        out[natural_name(parameter_name)] = {"mean": statistics.fmean(diffs), "sd": statistics.stdev(diffs) if repeats > 1 else None}
    return out


def typicality(model: HodgkinHuxley, data: torch.Tensor, particles: int) -> dict:
    """``log p(x)`` per trace (nats) of the data and of as many traces simulated from ``model``:
    where the data are far less likely than the model's own traces, no sleep sample resembles
    them and the regression's value at the data is an extrapolation."""
    with torch.no_grad(), seeded(12345):
        _, simulated = model.sample(data.shape[0])
        generator = torch.Generator().manual_seed(0)
        own = model.log_marginal(simulated, particles, generator)
        theirs = model.log_marginal(data, particles, generator)
    return {"data_mean": float(theirs.mean()), "simulated_mean": float(own.mean()), "simulated_sd": float(own.std())}


def alws_gradients(model: HodgkinHuxley, data: torch.Tensor, options: dict, warm: int, repeats: int) -> list[dict]:
    """``repeats`` ALWS estimates of ``grad sum_b log p(x_b)`` (one per fresh set of sleep samples)."""
    learner = ALWS(model, **options)
    for _ in range(warm):
        learner.loss(data)
    draws = []
    for _ in range(repeats):
        loss, _ = learner.loss(data)
        names, parameters = zip(*model.named_parameters())
        grads = torch.autograd.grad(loss, parameters)
        draws.append({natural_name(n): -float(g) * data.shape[0] for n, g in zip(names, grads)})  # the loss is minus the batch mean
    return draws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished hodgkin-huxley run directory")
    parser.add_argument("--step", type=int, default=None, help="trajectory row (default: the end of the first stage)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=2, help="whose learner estimates the gradient")
    parser.add_argument("--warm", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--h", type=float, default=0.01, help="finite-difference step in the model's units")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--fd-repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seeds the sleep samples")
    args = parser.parse_args()
    run_dir = Path(args.run)
    config = config_of_run(hh, json.loads((run_dir / "config.json").read_text())["config"], str(run_dir))
    step = config.steps if args.step is None else args.step
    rows = {row["step"]: row for row in json.loads((run_dir / "results.json").read_text())["parameter_trajectory"]}
    if step not in rows:
        raise SystemExit(f"step {step} is not a trajectory row of {run_dir}; rows: {sorted(rows)[:5]} ...")
    values = {name: rows[step][name] for name in PARAMETERS}
    current, data = experiment_data(config)
    started = time.perf_counter()
    model = HodgkinHuxley(current, config.dt, params=values)
    reference = likelihood_gradient(model, data, args.h, args.particles, args.fd_repeats)
    stage = config.refined() if args.stage == 2 else config
    typical = typicality(model, data, args.particles)
    print(f"log p per trace (nats): data {typical['data_mean']:.1f}, the model's own traces {typical['simulated_mean']:.1f} "
          f"(spread {typical['simulated_sd']:.1f})")
    with seeded(args.seed):
        draws = alws_gradients(model, data, stage.alws_options(hh.kernel_features(stage)), args.warm, args.repeats)
    table = []
    for name in PARAMETERS:
        samples = [d[name] for d in draws]
        mean, sd = statistics.fmean(samples), statistics.stdev(samples)
        ref = reference[name]["mean"]
        table.append({"parameter": name, "value": values[name], "likelihood_gradient": ref, "likelihood_gradient_sd": reference[name]["sd"],
                      "alws_mean": mean, "alws_standard_error": sd / math.sqrt(len(samples)),
                      "alws_sign_agrees": math.copysign(1, mean) == math.copysign(1, ref),
                      "draws_with_the_likelihoods_sign": sum(math.copysign(1, s) == math.copysign(1, ref) for s in samples) / len(samples)})
        print(f"{name:>14s} = {values[name]:9.4g}   likelihood {ref:+11.4g} (sd {reference[name]['sd'] or 0:7.2g})"
              f"   ALWS {mean:+11.4g} (s.e. {table[-1]['alws_standard_error']:8.3g})   draws with its sign {table[-1]['draws_with_the_likelihoods_sign']:.2f}")
    ref_vector = torch.tensor([r["likelihood_gradient"] for r in table])
    cosines = [float(torch.nn.functional.cosine_similarity(torch.tensor([d[n] for n in PARAMETERS]), ref_vector, dim=0)) for d in draws]
    mean_cosine = float(torch.nn.functional.cosine_similarity(torch.tensor([r["alws_mean"] for r in table]), ref_vector, dim=0))
    print(f"cosine with the likelihood's gradient: mean of draws {statistics.fmean(cosines):+.3f}, of the draws' mean {mean_cosine:+.3f}")
    write(f"hh_gradient_direction_{run_dir.name}_step{step}_stage{args.stage}", {
        "run": str(run_dir), "step": step, "stage": args.stage, "warm": args.warm, "repeats": args.repeats, "h": args.h,
        "particles": args.particles, "fd_repeats": args.fd_repeats, "seed": args.seed, "values": values, "log_p_per_trace": typical, "rows": table,
        "cosine_of_draws": cosines, "cosine_of_mean": mean_cosine, "seconds": time.perf_counter() - started,
    })


if __name__ == "__main__":
    main()
