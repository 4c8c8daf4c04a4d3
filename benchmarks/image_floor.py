"""Benchmark: where ALWS's image FID levels off, against the VAE and an oracle weighting of the same sleep samples.

On the images experiment's model and data (``alws.experiments.images``; ``--set KEY=JSON``
overrides any config key), three trainings of the same freshly initialised generator, each scored
by FID on 1000 samples every ``--every`` steps up to ``--steps``:

- ``alws``: the experiment's ``alws-learned`` settings;
- ``alws-importance``: the same learner, sleep samples and step, but every wake point's weights over
  the step's ``N`` sleep latents replaced by self-normalised importance weights,
  ``softmax_n log p(x*_b | z_n)``: the exact posterior restricted to those latents (the prior is the
  proposal). No weighting of the step's sleep latents can say more about ``x*_b`` than this; it is
  an oracle for the question "is the kernel regression what holds the generator back, or the
  latents it has to work with?", not a method (its effective sample size is recorded: near 1);
- ``vae``: the VAE baseline with the experiment's learning rate.

At the end of each: the decoder's entropy per image (nats; ``model.likelihood(z).entropy()`` over
1000 prior latents: how uncertain the generator is about its pixels; the samples the FID scores
are drawn from it), the mean time per step and, for the two ALWS runs, the median over the last
100 steps of the effective number of sleep samples a data point's weights spread over
(:func:`point_ess`; recorded where the step forms per-point weights, as with binary images) and the kernel learner's last held-out error (1 = no better than the
targets' mean).

    python benchmarks/image_floor.py [--seed 0] [--steps 600] [--every 100] [--methods alws alws-importance vae]
                                     [--set n_sleep=3000] [--name NAME]

Writes ``results/image_floor_NAME.json`` (``NAME`` defaults to dataset and seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

import alws
from alws import baselines
from alws.errors import ConfigError
from alws.experiments import images
from alws.learner import ALWS, ALWSObjective
from alws.objective import TrainOptions
from alws.seeding import seeded
from alws.training import StopTraining
from common import parse_sets, write
from fid_over_training import image_run

METHODS = ("alws", "alws-importance", "vae")


def point_ess(weights: torch.Tensor) -> float:
    """Median over wake points (columns of ``weights [N, B]``) of ``(sum_n |a_nb|)^2 / sum_n a_nb^2``:
    how many sleep samples a data point's weights spread over."""
    return float((weights.abs().sum(0).pow(2) / weights.pow(2).sum(0).clamp_min(1e-300)).median())


class RecordedWeights(ALWS):
    """:class:`alws.ALWS` unchanged, recording :func:`point_ess` of the wake weights (``point_ess``)
    where the step forms them per point (``weights="bounded"`` or ``"nonnegative"``)."""

    def wake_weights(self, phi_wake, record=None, table=None):
        weights = super().wake_weights(phi_wake, record, table)
        if record is not None:
            record["point_ess"] = point_ess(weights)
        return weights


class ImportanceWeights(ALWS):
    """:class:`alws.ALWS` with each wake point's weights over the sleep samples set to
    ``softmax_n table_nb`` (on the fast path ``table_nb = log p(x*_b | z_n)`` up to a term constant
    in ``n``): self-normalised importance sampling of the step's sleep latents."""

    def wake_weights(self, phi_wake, record=None, table=None):
        if table is None:
            raise ConfigError("alws-importance needs the table of log-likelihoods: run it with weights='bounded'")
        if self.path.name != "exponential-family":
            raise ConfigError(f"alws-importance needs the fast path (log p(x* | z_n) from the statistics); this step is on {self.path.name!r}")
        weights = torch.softmax(table.double(), dim=0)
        if record is not None:
            record["point_ess"] = point_ess(weights)
        return weights


class RecordedObjective(ALWSObjective):
    """ALWS as :func:`alws.fit` trains it, with :class:`RecordedWeights`' record."""

    learner_class = RecordedWeights


class ImportanceObjective(ALWSObjective):
    """The oracle: ALWS's step with :class:`ImportanceWeights`."""

    learner_class = ImportanceWeights


def train(method: str, seed: int, sets: list[str], steps: int, every: int) -> dict:
    run = image_run(seed, sets)
    config, model = run.config, run.model
    scores, clock = [], {"trained": 0.0, "since": time.perf_counter()}

    def callback(step: int, record: dict) -> None:
        clock["trained"] += time.perf_counter() - clock["since"]
        if step % every == 0:
            scores.append({"step": step, "seconds": round(clock["trained"], 1), "fid": run.score()})
            print(f"{method:16s} step {step:5d}  {clock['trained']:6.0f} s  FID {scores[-1]['fid']:.3f}", flush=True)
        if step >= steps:
            raise StopTraining()
        clock["since"] = time.perf_counter()

    options = TrainOptions(steps=10**7, batch_size=config.batch_size, seed=seed, callbacks=[callback], progress=False,
                           lr=config.lr if method == "vae" else config.alws_lr)
    fit_options = images.alws_fit_options(config, run.likelihood)
    if method == "vae":
        history = baselines.fit("vae", model, run.train.images, options)
    else:
        if method == "alws-importance":
            fit_options["weights"] = "bounded"  # the learner computes the table of log-likelihoods for it
        objective = (RecordedObjective if method == "alws" else ImportanceObjective)(model, **fit_options)
        history = alws.fit(objective, run.train.images, options)
    with torch.no_grad(), seeded(20_000 + seed):
        z = model.prior(1000).sample()
        entropy = float(model.likelihood(z).entropy().mean())
    late = list(history)[-100:]
    extra = {}
    ess = [r["point_ess"] for r in late if "point_ess" in r]
    if ess:  # how many sleep samples a data point's weights spread over, late in training
        extra["point_ess_median_last_100"] = statistics.median(ess)
    if method != "vae":
        extra["kernel_error_last"] = late[-1].get("kernel_error")
    return {"fid": scores, "last_fid": scores[-1]["fid"] if scores else None, "entropy_per_image": entropy,
            "seconds_per_step": clock["trained"] / max(len(history), 1), "steps": len(history), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="an images-experiment config key")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.every < 1 or args.steps < args.every:
        parser.error("--every must be >= 1 and --steps >= --every")
    results = {method: train(method, args.seed, args.set, args.steps, args.every) for method in args.methods}
    dataset = dataclasses.replace(images.Config(seed=args.seed), **parse_sets(args.set)).dataset
    name = args.name or f"{dataset}_seed{args.seed}"
    write(f"image_floor_{name}", {"seed": args.seed, "steps": args.steps, "every": args.every, "sets": args.set, "methods": results})
    for method, r in results.items():
        print(f"{method:16s} FID at step {args.steps}: {r['last_fid']:.3f}  entropy/image {r['entropy_per_image']:.1f} nats  "
              f"{1000 * r['seconds_per_step']:.0f} ms/step")


if __name__ == "__main__":
    main()
