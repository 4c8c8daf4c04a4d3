"""Benchmark: does averaging the iterates (``TrainOptions.average_from``) improve an image model?

Trains the images experiment's ALWS model (``alws.experiments.images.Config``; ``--set KEY=JSON``
overrides any key) and, every ``--every-steps`` steps, scores FID on 1000 samples (fixed seed,
off the training stream) for the last iterate and for the generator whose parameters are
  - the mean of the last ``w`` iterates (``tail_w``, for each ``--windows`` w): what
    ``average_from`` gives a run that ends at that step;
  - an exponential moving average with decay ``d`` (``ema_d``, for each ``--decays`` d).
Training itself is not changed: the averages are scored and put back.

    python benchmarks/averaged_generator.py [--seed 0] [--steps 800] [--every-steps 100] [--set ...]

Writes ``results/averaged_generator_NAME.json`` (``NAME`` defaults to dataset and seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import torch

import alws
from alws.experiments import images
from alws.objective import TrainOptions
from alws.training import StopTraining
from common import write
from fid_over_training import image_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every-steps", type=int, default=100)
    parser.add_argument("--windows", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--decays", type=float, nargs="+", default=[0.95, 0.98])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="an images-experiment config key")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    run = image_run(args.seed, args.set)
    config, model = run.config, run.model
    params = [p for p in model.parameters() if p.requires_grad]
    ema = {d: None for d in args.decays}
    recent: list[list[torch.Tensor]] = []  # the last max(windows) iterates
    scores = []

    def score_with(values) -> float:
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        try:
            return run.score()
        finally:
            with torch.no_grad():
                for p, v in zip(params, saved):
                    p.copy_(v)

    def callback(step: int, record: dict) -> None:
        current = [p.detach().clone() for p in params]
        for d in args.decays:
            ema[d] = current if ema[d] is None else [d * e + (1 - d) * c for e, c in zip(ema[d], current)]
        recent.append(current)
        if len(recent) > max(args.windows):
            recent.pop(0)
        if step % args.every_steps == 0:
            row = {"step": step, "last": run.score()}
            row.update({f"ema_{d}": score_with(ema[d]) for d in args.decays})
            row.update({f"tail_{w}": score_with([torch.stack(ps).mean(0) for ps in zip(*recent[-w:])])
                        for w in args.windows if len(recent) >= w})
            scores.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if step >= args.steps:
                raise StopTraining()

    options = TrainOptions(steps=10**7, batch_size=config.batch_size, lr=config.alws_lr, seed=config.seed, callbacks=[callback],
                           progress=False)
    alws.fit(model, run.train.images, options, **images.alws_fit_options(config, run.likelihood))
    name = args.name or f"{config.dataset}_seed{config.seed}"
    write(f"averaged_generator_{name}", {"config": dataclasses.asdict(config), "windows": args.windows, "decays": args.decays,
                                         "every_steps": args.every_steps, "fid": scores})


if __name__ == "__main__":
    main()
