"""Benchmark: an image model's FID *during* ALWS training, every ``--every`` seconds of training time.

The images experiment scores a method once, at the end of its budget; a run whose quality swings
from one hundred steps to the next then reads as a lottery. This trains one ALWS model on the
images experiment's data, model and settings (``alws.experiments.images.Config``; ``--set KEY=JSON``
overrides any of its keys) and scores FID on 1000 samples (drawn under a fixed seed, outside the
training stream) each time another ``--every`` seconds of training have passed (counted from the
call to :func:`alws.fit`, as the experiment's budget is, excluding the scoring itself). The result holds the FID trajectory and, per step, the regression's bandwidth and
ridge, the loss, the gradient norm and the kernel learner's held-out error, so that a swing in FID
can be read against what the learner chose.

    python benchmarks/fid_over_training.py --set dataset='"fashion-mnist"' [--seed 0] [--seconds 300] [--every 30]
                                           [--every-steps 25 --steps 1200]
                                           [--set select_directions=2] [--name NAME]

Writes ``results/fid_over_training_NAME.json`` (``NAME`` defaults to dataset and seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from typing import Callable

import torch

import alws
from alws.data import load_dataset
from alws.experiments import images
from alws.objective import TrainOptions
from alws.sample_quality import fid
from alws.training import StopTraining
from common import parse_sets, write

HISTORY_KEYS = ("step", "bandwidth", "ridge", "loss", "grad_norm", "kernel_error", "path", "bounded_share")


@dataclasses.dataclass
class ImageRun:
    """The images experiment's pieces for one training run: its config, data, FID scorer and model."""

    config: images.Config
    train: object  # alws.data dataset: ``images [n, C, H, W]``, ``binary``
    likelihood: str
    score: Callable[[], float]  # FID of 1000 fresh samples (drawn under a fixed seed, off the training stream)
    model: torch.nn.Module


def image_run(seed: int, sets: list[str], samples: int = 1000) -> ImageRun:
    """The images experiment's config (``--set KEY=JSON`` pairs over the defaults), data, FID scorer
    and freshly initialised model."""
    config = dataclasses.replace(images.Config(seed=seed), **parse_sets(sets))
    config.validate()
    train = load_dataset(config.dataset, config.data_path, "train", config.n_train, config.seed, config.image_size)
    test = load_dataset(config.dataset, config.data_path, "test", config.n_test, config.seed, config.image_size)
    likelihood = "bernoulli" if train.binary else "gaussian"
    net, scale, test_features, _ = images.feature_scorer(config, train, test, progress=False)
    model = images.build_model(config, train.images, likelihood)

    def score() -> float:
        state = torch.random.get_rng_state()
        drawn = images._generate(model, samples, train.binary, seed=10_000 + config.seed)
        torch.random.set_rng_state(state)
        return fid(net.features(drawn) / scale, test_features)

    return ImageRun(config, train, likelihood, score, model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=300.0, help="training time to run for")
    parser.add_argument("--every", type=float, default=30.0, help="training seconds between FID scores")
    parser.add_argument("--every-steps", type=int, default=None,
                        help="score every so many steps instead of every --every seconds (a trajectory read against the selections)")
    parser.add_argument("--steps", type=int, default=None, help="with --every-steps: stop after this many steps")
    parser.add_argument("--samples", type=int, default=1000, help="samples per FID score")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="an images-experiment config key")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    run = image_run(args.seed, args.set, args.samples)
    config, train, likelihood, model = run.config, run.train, run.likelihood, run.model

    clock = {"trained": 0.0, "since": time.perf_counter(), "next": args.every}
    scores = []

    def score(step: int, record: dict) -> None:
        clock["trained"] += time.perf_counter() - clock["since"]
        due = step % args.every_steps == 0 if args.every_steps else clock["trained"] >= clock["next"]
        if due:
            value = run.score()
            scores.append({"seconds": round(clock["trained"], 1), "step": step, "fid": value})
            print(f"{clock['trained']:6.0f} s  step {step:5d}  FID {value:.3f}", flush=True)
            clock["next"] += args.every
            if (args.steps is not None and step >= args.steps) or (args.steps is None and clock["trained"] >= args.seconds):
                raise StopTraining()
        clock["since"] = time.perf_counter()

    options = TrainOptions(steps=10**7, batch_size=config.batch_size, lr=config.alws_lr, seed=config.seed, callbacks=[score],
                           progress=False)
    history = alws.fit(model, train.images, options, **images.alws_fit_options(config, likelihood))
    values = [s["fid"] for s in scores]
    summary = {"median": statistics.median(values), "mean": statistics.mean(values), "max": max(values), "last": values[-1],
               "above_10": sum(v > 10 for v in values), "scores": len(values)} if values else {}
    name = args.name or f"{config.dataset}_seed{config.seed}"
    write(f"fid_over_training_{name}", {
        "config": dataclasses.asdict(config), "seconds": args.seconds, "every": args.every, "every_steps": args.every_steps, "steps": args.steps, "summary": summary, "fid": scores,
        "history": [{k: r.get(k) for k in HISTORY_KEYS} for r in history],
    })
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
