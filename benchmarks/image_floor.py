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
- ``vae``: the VAE baseline with the experiment's learning rate;
- ``anchored-oracle``, ``alws-anchored``, ``alws-anchored-plain``: sleep latents drawn near each
  wake point's remembered latent. Every training image keeps one latent (a memory, started at a
  prior draw); after each step it becomes the step's sleep latent with the largest
  ``log p(z_n, x*_b)``. Each step draws ``--prior-share`` of its ``N`` sleep latents from the prior
  and the rest as ``m_b + spread * e`` around the memories ``m_b`` of the wake batch (``e``
  standard normal; one of them is ``m_b`` itself), so the sleep samples come from the defensive
  mixture ``q(z) = share * p(z) + (1 - share) * mean_b N(z; m_b, spread^2 I)`` and reach the data's
  posteriors. The three differ in the weights of a wake point over them:
  ``anchored-oracle`` the exact importance weights ``softmax_n(log p(z_n, x*_b) - log q(z_n))``
  (an oracle, as above); ``alws-anchored`` ALWS's bounded kernel ridge weights (a regression on
  samples from ``q``) times the ratios ``p(z_n) / q(z_n)``, cut at zero and renormalised per
  point (consistent for ``E_p[. | x*]``); ``alws-anchored-plain`` the kernel weights alone (the
  regression's posterior under ``q``: biased toward the memories).

At the end of each: the decoder's entropy per image (nats; ``model.likelihood(z).entropy()`` over
1000 prior latents: how uncertain the generator is about its pixels; the samples the FID scores
are drawn from it), the mean time per step and, for the two ALWS runs, the median over the last
100 steps of the effective number of sleep samples a data point's weights spread over
(:func:`point_ess`; recorded where the step forms per-point weights, as with binary images) and the kernel learner's last held-out error (1 = no better than the
targets' mean).

    python benchmarks/image_floor.py [--seed 0] [--steps 600] [--every 100] [--methods alws alws-importance vae]
                                     [--set n_sleep=3000] [--spread 0.1] [--prior-share 0.5] [--name NAME]

Writes ``results/image_floor_NAME.json`` (``NAME`` defaults to dataset and seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
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
ANCHORED = ("anchored-oracle", "alws-anchored", "alws-anchored-plain")


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


class AnchoredSleep(ALWS):
    """:class:`alws.ALWS` whose step draws its sleep latents from the defensive mixture around the
    wake batch's remembered latents (see the module docstring). ``memory [M, d]`` holds one latent
    per training image; ``index`` maps an image's bytes to its row (the step sees only the images).
    Kernel learning and selection draw their own samples from the prior, as in :class:`alws.ALWS`."""

    mode, spread, prior_share = "oracle", 0.1, 0.5
    memory: torch.Tensor
    index: dict

    def prepare(self, x_wake):
        rows = x_wake.reshape(x_wake.shape[0], -1).to(torch.uint8).cpu().numpy()
        self.wake_rows = torch.tensor([self.index[row.tobytes()] for row in rows])
        return super().prepare(x_wake)

    def sleep(self, n=None):
        if n is not None:  # kernel learning's and the selection's own draws: from the model
            return super().sleep(n)
        anchors = self.memory[self.wake_rows]  # [B, d]
        batch, dim = anchors.shape
        per_point = max(1, round(self.n_sleep * (1 - self.prior_share) / batch))
        n_prior = self.n_sleep - per_point * batch
        if n_prior < 1:
            raise ConfigError(f"n_sleep={self.n_sleep} leaves no prior draws beside {per_point} per wake point")
        noise = torch.randn(batch, per_point, dim)
        noise[:, 0] = 0.0
        z = torch.cat([torch.randn(n_prior, dim), (anchors[:, None] + self.spread * noise).reshape(-1, dim)])
        log_prior = -0.5 * z.pow(2).sum(1) - 0.5 * dim * math.log(2 * math.pi)
        near = -0.5 * (z[:, None] - anchors[None]).pow(2).sum(-1) / self.spread ** 2 - 0.5 * dim * math.log(2 * math.pi * self.spread ** 2)
        share = n_prior / self.n_sleep
        log_q = torch.logaddexp(math.log(share) + log_prior, math.log(1 - share) + torch.logsumexp(near, 1) - math.log(batch))
        self.log_ratio, self.z_sleep = (log_prior - log_q).double(), z
        with torch.no_grad():
            return z, self.model.likelihood(z).sample()

    def wake_weights(self, phi_wake, record=None, table=None):
        self.memory[self.wake_rows] = self.z_sleep[table.argmax(0)]  # table: log p(z_n, x*_b) + const
        if self.mode == "oracle":
            weights = torch.softmax(table.double() + self.log_ratio[:, None], 0)
        else:
            weights = super().wake_weights(phi_wake, record, table)
            if self.mode == "ratio":
                weights = weights.clamp_min(0.0) * self.log_ratio.exp()[:, None]
                weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-300)
        if record is not None:
            record["point_ess"] = point_ess(weights)
        return weights


def anchored_objective(method: str, data: torch.Tensor, latent_dim: int, spread: float, prior_share: float) -> type:
    """The :class:`ALWSObjective` of an anchored ``method``, with a fresh memory for ``data``."""
    rows = data.reshape(data.shape[0], -1).to(torch.uint8).numpy()
    learner = type("Anchored", (AnchoredSleep,), {
        "mode": {"anchored-oracle": "oracle", "alws-anchored": "ratio", "alws-anchored-plain": "plain"}[method],
        "spread": spread, "prior_share": prior_share, "memory": torch.randn(data.shape[0], latent_dim),
        "index": {row.tobytes(): i for i, row in enumerate(rows)},
    })
    return type("AnchoredObjective", (ALWSObjective,), {"learner_class": learner})


def train(method: str, seed: int, sets: list[str], steps: int, every: int, spread: float = 0.1, prior_share: float = 0.5) -> dict:
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
        if method in ("alws-importance", *ANCHORED):
            fit_options["weights"] = "bounded"  # the learner computes the table of log-likelihoods for it
        if method in ANCHORED:
            if run.likelihood != "bernoulli":
                raise ConfigError(f"{method} keys its memory by the images' bytes: binary images only")
            objective_class = anchored_objective(method, run.train.images, config.latent_dim, spread, prior_share)
        else:
            objective_class = RecordedObjective if method == "alws" else ImportanceObjective
        objective = objective_class(model, **fit_options)
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
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS + ANCHORED)
    parser.add_argument("--spread", type=float, default=0.1, help="anchored methods: sd of the sleep latents around a memory")
    parser.add_argument("--prior-share", type=float, default=0.5, help="anchored methods: share of sleep latents from the prior")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="an images-experiment config key")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    if args.every < 1 or args.steps < args.every:
        parser.error("--every must be >= 1 and --steps >= --every")
    if not (args.spread > 0 and 0 < args.prior_share < 1):
        parser.error("--spread must be > 0 and --prior-share in (0, 1)")
    results = {method: train(method, args.seed, args.set, args.steps, args.every, args.spread, args.prior_share) for method in args.methods}
    dataset = dataclasses.replace(images.Config(seed=args.seed), **parse_sets(args.set)).dataset
    name = args.name or f"{dataset}_seed{args.seed}"
    anchored = {"spread": args.spread, "prior_share": args.prior_share} if set(args.methods) & set(ANCHORED) else {}
    write(f"image_floor_{name}", {"seed": args.seed, "steps": args.steps, "every": args.every, "sets": args.set, **anchored, "methods": results})
    for method, r in results.items():
        print(f"{method:16s} FID at step {args.steps}: {r['last_fid']:.3f}  entropy/image {r['entropy_per_image']:.1f} nats  "
              f"{1000 * r['seconds_per_step']:.0f} ms/step")


if __name__ == "__main__":
    main()
