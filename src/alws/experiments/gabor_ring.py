"""Experiment II: a latent on a circle. Gabor filters of uniformly distributed orientation.

Data (:func:`gabor_filters`): ``size x size`` images on the square ``[-1, 1]^2``,
``exp(-(u^2 + aspect^2 v^2) / (2 width^2)) cos(2 pi u / wavelength)`` with ``u, v`` the
coordinates rotated by the orientation ``theta ~ U[0, pi)``.

Model (:class:`RingGenerator`): an angle ``a ~ U(-pi, pi)``, ``z = (cos a, sin a)`` and
``x | z ~ N(G(z), sigma^2 I)`` with an MLP generator ``G`` and a learned ``sigma``. ALWS only
samples ``z``, so the circle needs no reparameterisation. The comparison is a VAE with a Gaussian
latent in R^2 (``latent="gaussian"``) on the same generator and wall time.

Metrics: MMD between generated and held-out images (:func:`alws.evaluate.mmd`), and the
distribution of orientations of generated filters, each estimated from its power spectrum
(:func:`orientation`), against the uniform distribution: circular variance of ``2 theta``
(1 for uniform orientations, 0 for a single one) and the Kolmogorov-Smirnov distance.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import distributions as D
from torch import nn

from ..seeding import seeded
from ..evaluate import mmd
from ..model import LatentVariableModel
from .base import TrainingConfig, finished, setting

NAME = "gabor-ring"
DESCRIPTION = "Experiment II: Gabor filters with a latent on a circle; MMD and orientation uniformity vs a Gaussian-latent VAE"


def gabor_filters(theta: torch.Tensor, size: int = 16, aspect: float = 0.8, wavelength: float = 1.0, width: float = 0.3) -> torch.Tensor:
    """Images ``[n, size, size]`` of Gabor filters at orientations ``theta [n]`` (radians), on a
    grid over ``[-1, 1]^2`` (x to the right, y up); ``width``, ``wavelength`` in those units."""
    grid = torch.linspace(-1, 1, size, dtype=torch.float64)
    y, x = torch.meshgrid(-grid, grid, indexing="ij")
    c, s = torch.cos(theta.double())[:, None, None], torch.sin(theta.double())[:, None, None]
    u = x * c + y * s
    v = -x * s + y * c
    envelope = torch.exp(-(u**2 + aspect**2 * v**2) / (2 * width**2))
    return (envelope * torch.cos(2 * math.pi * u / wavelength)).float()


def orientation(images: torch.Tensor, pad: int = 64) -> torch.Tensor:
    """Orientation in ``[0, pi)`` of each image ``[n, H, W]`` from its power spectrum.

    The spectrum is zero-padded to ``pad x pad``; the orientation is half the angle of the
    power-weighted mean of ``exp(2 i phi)`` over frequencies with angle ``phi`` (the doubled angle
    makes ``phi`` and ``phi + pi``, the same orientation, agree). Mean is removed first.
    """
    x = images.double() - images.double().mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x, s=(pad, pad)).abs() ** 2
    freq = torch.fft.fftfreq(pad, dtype=torch.float64)
    fy, fx = torch.meshgrid(-freq, freq, indexing="ij")  # rows run downwards: flip y
    phi = torch.atan2(fy, fx)
    weight = power * (fx**2 + fy**2 > 0)
    c = (weight * torch.cos(2 * phi)).sum((-2, -1))
    s = (weight * torch.sin(2 * phi)).sum((-2, -1))
    return torch.remainder(0.5 * torch.atan2(s, c), math.pi).float()


def orientation_uniformity(theta: torch.Tensor) -> dict:
    """Circular variance of ``2 theta`` (uniform: about 1) and the Kolmogorov-Smirnov distance
    and p-value of ``theta / pi`` against U(0, 1)."""
    from scipy.stats import kstest

    doubled = 2 * theta.double()
    resultant = float(torch.sqrt(torch.cos(doubled).mean() ** 2 + torch.sin(doubled).mean() ** 2))
    ks = kstest((theta.double() / math.pi).numpy(), "uniform")
    return {"circular_variance": 1 - resultant, "ks_distance": float(ks.statistic), "ks_pvalue": float(ks.pvalue)}


class RingGenerator(LatentVariableModel):
    """``z`` on the unit circle (``latent="ring"``) or ``z ~ N(0, I_2)`` (``"gaussian"``), then
    ``x [n, size, size] ~ N(G(z), sigma^2)`` with ``G`` an MLP 2-``hidden``-``hidden``-size^2."""

    def __init__(self, size: int = 16, hidden: int = 128, latent: str = "ring", sigma: float = 0.3, seed: int = 0):
        super().__init__()
        if latent not in ("ring", "gaussian"):
            raise ValueError(f"latent must be 'ring' or 'gaussian', got {latent!r}")
        self.size, self.latent = size, latent
        with seeded(seed):
            self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, size * size))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def prior(self, n: int) -> D.Distribution:
        """The Gaussian latent's prior (the VAE's; the ring's angle prior is ``U(-pi, pi)``)."""
        zero = torch.zeros(n, 2, device=self.log_sigma.device)
        return D.Independent(D.Normal(zero, torch.ones_like(zero)), 1)

    def sample_latent(self, n: int) -> torch.Tensor:
        if self.latent == "gaussian":
            return self.prior(n).sample()
        a = (torch.rand(n, device=self.log_sigma.device) * 2 - 1) * math.pi
        return torch.stack([torch.cos(a), torch.sin(a)], 1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent == "gaussian":
            return self.prior(z.shape[0]).log_prob(z)
        return torch.full((z.shape[0],), -math.log(2 * math.pi), device=z.device)  # uniform angle; no parameters

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[0], self.size, self.size)

    def likelihood(self, z: torch.Tensor) -> D.Distribution:
        return D.Independent(D.Normal(self.mean(z), self.log_sigma.exp()), 2)

    def sample(self, n: int):
        with torch.no_grad():
            z = self.sample_latent(n)
            return z, self.likelihood(z).sample()


@dataclass
class Config(TrainingConfig):
    """Default: 10,000 training / 1,000 test filters of 16x16, about 5 minutes per method."""

    size: int = setting(16, ge=4, about="pixels")
    aspect: float = setting(0.8, gt=0)
    wavelength: float = setting(1.0, gt=0)
    width: float = setting(0.3, gt=0)
    n_train: int = setting(10000, ge=1)
    n_test: int = setting(1000, ge=1)
    hidden: int = setting(128, ge=1)
    steps: int = 3000
    n_sleep: int = 1000
    lr: float = 0.003
    # False: regress the log-joint itself. The fast path (regressing G(z)/sigma^2 and
    # |G(z)|^2/(2 sigma^2) separately, 513 targets) collapsed every filter to one orientation here
    # (circular variance 0.02 after 400 smoke steps, against 0.83 for the plain path).
    exponential_family: bool | str = False
    baseline: bool = True
    vae_lr: float = setting(0.003, gt=0)
    n_eval: int = setting(1000, ge=2)
    record_every: int = setting(100, ge=1)


PRESETS = {"smoke": {"n_train": 500, "n_test": 200, "hidden": 32, "steps": 60, "n_sleep": 200, "lr": 0.01, "vae_lr": 0.01, "n_eval": 200,
                     "record_every": 20}}


def evaluate(model: RingGenerator, test: torch.Tensor, n: int, seed: int) -> dict:
    """MMD to ``test`` and orientation uniformity of ``n`` generated filters (noise-free means:
    the filters themselves, not the pixel noise)."""
    with seeded(seed), torch.no_grad():
        images = model.mean(model.sample_latent(n)).cpu()
    return {"mmd": mmd(images, test[:n].cpu()), "sigma": float(model.log_sigma.detach().exp()),
            **orientation_uniformity(orientation(images)), "_images": images}


def run(config: Config, ctx) -> dict:
    from .. import baselines
    from ..learner import fit

    generator = torch.Generator().manual_seed(config.seed)
    theta = torch.rand(config.n_train + config.n_test, generator=generator) * math.pi
    images = gabor_filters(theta, config.size, config.aspect, config.wavelength, config.width)
    train_images, test = images[: config.n_train].to(config.device), images[config.n_train :]
    results = {"data": {"n_train": config.n_train, "n_test": config.n_test, **orientation_uniformity(orientation(test))}, "methods": {}}
    results["data"]["orientation_estimator_error_deg"] = float(
        torch.rad2deg(torch.remainder(orientation(test) - theta[config.n_train :] + math.pi / 2, math.pi) - math.pi / 2).abs().mean())
    samples = {}

    def recorder(model, start):
        def callback(step, record):
            if step % config.record_every == 0:
                metrics = evaluate(model, test, min(config.n_eval, 300), config.seed)
                record.update({"mmd": metrics["mmd"], "circular_variance": metrics["circular_variance"], "wall_s": time.perf_counter() - start})

        return callback

    def train(method: str) -> dict:
        model = RingGenerator(config.size, config.hidden, "ring" if method == "alws" else "gaussian", seed=config.seed).to(config.device)
        start = time.perf_counter()
        callbacks = [recorder(model, start)]
        if method == "alws":
            history = fit(model, train_images, ctx.train_options(method, config, callbacks=callbacks), **config.alws_options())
        else:
            options = ctx.train_options(method, config, steps=100 * config.steps, lr=config.vae_lr, lr_schedule="constant", callbacks=callbacks,
                                        checkpoint_every=max(1, config.steps // 10),
                                        max_seconds=results["methods"]["alws"]["train_seconds"])
            history = baselines.fit("vae", model, train_images, options)
        seconds = time.perf_counter() - start
        metrics = evaluate(model, test, config.n_eval, config.seed)
        images = metrics.pop("_images")
        curve = [{"step": r["step"], "wall_s": r["wall_s"], "mmd": r["mmd"], "circular_variance": r["circular_variance"]} for r in history if "mmd" in r]
        return {"train_seconds": seconds, "steps": len(history), **metrics, "curve": curve,
                "orientations": orientation(images).tolist(), "examples": images[:20].tolist()}

    for latent in ("ring", "gaussian"):
        initial = evaluate(RingGenerator(config.size, config.hidden, latent, seed=config.seed), test, config.n_eval, config.seed)
        results[f"initial_{latent}"] = {k: v for k, v in initial.items() if not k.startswith("_")}
    results["methods"]["alws"] = ctx.method("alws", lambda: train("alws"))
    if config.baseline:
        results["methods"]["vae"] = ctx.method("vae", lambda: train("vae"))
    for method, row in finished(results["methods"]).items():
        samples[method] = {"orientations": torch.tensor(row.pop("orientations")), "examples": torch.tensor(row.pop("examples"))}
    results["data"]["test_mmd_floor"] = mmd(train_images[: config.n_eval].cpu(), test[: config.n_eval])
    figures(test, theta[config.n_train :], samples, results, ctx)
    print(report(results))
    return results


def report(results: dict) -> str:
    d = results["data"]
    lines = [f"Gabor ring: {d['n_train']} train / {d['n_test']} test filters; orientation estimator error {d['orientation_estimator_error_deg']:.2f} deg; "
             f"MMD train vs test {d['test_mmd_floor']:.2e}",
             f"{'method':<6} {'MMD':>10} {'circ.var':>9} {'KS':>7} {'sigma':>8} {'steps':>6} {'seconds':>8}",
             f"{'data':<6} {'':>10} {d['circular_variance']:>9.3f} {d['ks_distance']:>7.3f}",
             f"{'start':<6} {results['initial_ring']['mmd']:>10.2e} {results['initial_ring']['circular_variance']:>9.3f} "
             f"{results['initial_ring']['ks_distance']:>7.3f}   (ring latent, before training)"]
    for method, r in results["methods"].items():
        if method not in finished(results["methods"]):
            lines.append(f"{method:<6} {r['status']} at step {r.get('step')}: {r.get('error')}")
            continue
        lines.append(f"{method:<6} {r['mmd']:>10.2e} {r['circular_variance']:>9.3f} {r['ks_distance']:>7.3f} {r['sigma']:>8.4f} {r['steps']:>6d} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def figures(test: torch.Tensor, test_theta: torch.Tensor, samples: dict, results: dict, ctx) -> None:
    import matplotlib.pyplot as plt

    rows = [("data", test[:20])] + [(m, s["examples"]) for m, s in samples.items()]
    fig, axes = plt.subplots(len(rows) * 2, 10, figsize=(10, 2.1 * len(rows)), squeeze=False)
    for i, (name, imgs) in enumerate(rows):
        for j in range(20):
            ax = axes[2 * i + j // 10, j % 10]
            ax.imshow(imgs[j].numpy(), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
        axes[2 * i, 0].set_ylabel(name, rotation=0, ha="right", va="center")
    ctx.save_figure(fig, "filters")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = torch.linspace(0, 180, 19).numpy()
    ax.hist(torch.rad2deg(test_theta).numpy(), bins=bins, density=True, histtype="step", color="k", label="data (true)")
    for method, s in samples.items():
        r = results["methods"][method]
        ax.hist(torch.rad2deg(s["orientations"]).numpy(), bins=bins, density=True, histtype="step",
                label=f"{method} (circ. var {r['circular_variance']:.2f}, KS {r['ks_distance']:.2f})")
    ax.set(xlabel="orientation (degrees)", ylabel="density", title="orientations of generated filters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    ctx.save_figure(fig, "orientations")
