"""Experiment III: a hierarchical model (discrete then continuous latent) on pinwheel data.

Data (:func:`pinwheel`): ``arms`` arms of ``per_arm`` points; a point of arm ``k`` starts at
radius ``1 + radial_std * e1`` and tangential offset ``tangential_std * e2`` and is rotated by
``2 pi k / arms + rate * exp(radius)``; the set is centred.

Model (:class:`PinwheelMixture`): ``z1 ~ Cat(softmax(alpha))`` over ``K`` components,
``z2 | z1 = k ~ N(mu_k, L_k L_k^T)`` in R^2, ``x | z2 ~ N(f(z2), diag(sigma^2))`` with ``f`` an
MLP 2-``hidden``-2 (tanh). ``z = (z1 [n], z2 [n, 2])``. Weak priors on the parameters
(:func:`parameter_prior`) enter as MAP terms. ALWS needs no relaxation of ``z1``; the baseline
is a score-function VAE with ``q(z1 | x)`` categorical (REINFORCE with a baseline) and
``q(z2 | x, z1)`` Gaussian (reparameterised), via Pyro's ``TraceGraph_ELBO``, for the same wall
time. Metric: held-out log-likelihood by enumerating ``z1`` and importance-sampling ``z2`` from
``p(z2 | z1)`` (:func:`held_out_log_likelihood`), and the number of components the data use.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import distributions as D
from torch import nn

from ..errors import ConfigError
from ..seeding import seeded
from ..model import LatentVariableModel
from .base import TrainingConfig, finished, setting

NAME = "pinwheel"
DESCRIPTION = "Experiment III: mixture of K Gaussians through an MLP on 5-arm pinwheel data; held-out log-likelihood vs SF-VAE"


def pinwheel(arms: int = 5, per_arm: int = 500, radial_std: float = 0.3, tangential_std: float = 0.1, rate: float = 0.2,
             seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [arms * per_arm, 2], arm [arms * per_arm])``: the pinwheel, centred, in a seeded
    random order."""
    generator = torch.Generator().manual_seed(seed)
    n = arms * per_arm
    arm = torch.arange(arms).repeat_interleave(per_arm)
    e = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    radius = 1.0 + radial_std * e[:, 0]
    offset = tangential_std * e[:, 1]
    angle = 2 * math.pi * arm.double() / arms + rate * torch.exp(radius)
    c, s = torch.cos(angle), torch.sin(angle)
    x = torch.stack([c * radius - s * offset, s * radius + c * offset], 1)
    x = x - x.mean(0)
    order = torch.randperm(n, generator=generator)
    return x[order].float(), arm[order]


class PinwheelMixture(LatentVariableModel):
    """The hierarchical model above, with ``K`` components and an MLP of ``hidden`` units."""

    def __init__(self, K: int = 10, hidden: int = 20, sigma: float = 0.5, component_scale: float = 0.5, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.K = K
        self.alpha = nn.Parameter(torch.zeros(K))
        self.mu = nn.Parameter(torch.randn(K, 2, generator=generator))
        self.log_diag = nn.Parameter(torch.full((K, 2), math.log(component_scale)))
        self.off_diag = nn.Parameter(torch.zeros(K))
        with seeded(seed):
            self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        self.log_sigma = nn.Parameter(torch.full((2,), math.log(sigma)))

    def scale_tril(self) -> torch.Tensor:
        """``L [K, 2, 2]``: lower-triangular factors of the component covariances."""
        d = self.log_diag.exp()
        zero = torch.zeros_like(self.off_diag)
        return torch.stack([torch.stack([d[:, 0], zero], -1), torch.stack([self.off_diag, d[:, 1]], -1)], -2)

    def mixing(self) -> D.Categorical:
        return D.Categorical(logits=self.alpha)

    def component(self, z1: torch.Tensor | None = None) -> D.MultivariateNormal:
        """``p(z2 | z1)`` for labels ``z1 [n]`` (or all ``K`` components when ``None``)."""
        L = self.scale_tril()
        if z1 is None:
            return D.MultivariateNormal(self.mu, scale_tril=L)
        return D.MultivariateNormal(self.mu[z1], scale_tril=L[z1])

    def log_prior(self, z) -> torch.Tensor:
        z1, z2 = z
        return self.mixing().log_prob(z1) + self.component(z1).log_prob(z2)

    def likelihood(self, z) -> D.Distribution:
        return D.Independent(D.Normal(self.net(z[1]), self.log_sigma.exp()), 1)

    def sample(self, n: int):
        with torch.no_grad():
            z1 = self.mixing().sample((n,))
            z2 = self.component(z1).sample()
            return (z1, z2), self.likelihood((z1, z2)).sample()


def parameter_prior(model: PinwheelMixture, n_data: int, prior: dict):
    """MAP terms per data point: ``alpha ~ N(0, s_alpha^2)``, ``mu_k ~ N(0, s_mu^2 I)``,
    ``log`` component scales ``~ N(log 0.5, s_scale^2)``, the off-diagonal ``~ N(0, s_scale^2)``,
    MLP weights ``~ N(0, s_net^2)``, ``log sigma ~ N(log 0.1, s_scale^2)``. ``prior`` holds the
    ``s_*`` values."""

    def penalty(m: PinwheelMixture = model) -> torch.Tensor:
        total = (m.alpha**2).sum() / (2 * prior["alpha"] ** 2) + (m.mu**2).sum() / (2 * prior["mu"] ** 2)
        total = total + ((m.log_diag - math.log(0.5)) ** 2).sum() / (2 * prior["scale"] ** 2) + (m.off_diag**2).sum() / (2 * prior["scale"] ** 2)
        total = total + sum((w**2).sum() for w in m.net.parameters()) / (2 * prior["net"] ** 2)
        total = total + ((m.log_sigma - math.log(0.1)) ** 2).sum() / (2 * prior["scale"] ** 2)
        return total / n_data

    return penalty


@torch.no_grad()
def held_out_log_likelihood(model: PinwheelMixture, x: torch.Tensor, n_samples: int = 2000, seed: int = 0, chunk: int = 256) -> dict:
    """``log p(x)`` per point by enumerating ``z1`` and drawing ``n_samples`` values of ``z2``
    from each ``p(z2 | z1 = k)``: ``log sum_k pi_k mean_s N(x; f(z2_ks), sigma^2)``.

    Returns ``mean`` and ``se`` (nats per point, s.e. over points), ``responsibility [K]`` (the
    average posterior probability of each component) and ``components_used`` (components with
    average responsibility above 1 / (2 K)) and its effective number ``exp(entropy)``.
    """
    with seeded(seed):
        z2 = model.component().sample((n_samples,))  # [S, K, 2]
    means = model.net(z2)  # [S, K, 2]
    sigma = model.log_sigma.exp()
    log_pi = torch.log_softmax(model.alpha, 0)
    per_point, resp = [], []
    for start in range(0, x.shape[0], chunk):
        xb = x[start : start + chunk]  # [B, 2]
        log_lik = D.Normal(means[:, :, None, :], sigma).log_prob(xb[None, None]).sum(-1)  # [S, K, B]
        per_component = torch.logsumexp(log_lik, 0) - math.log(n_samples) + log_pi[:, None]  # [K, B]
        total = torch.logsumexp(per_component, 0)
        per_point.append(total)
        resp.append(torch.exp(per_component - total).T)
    per_point, resp = torch.cat(per_point), torch.cat(resp).mean(0)
    entropy = float(-(resp * torch.log(resp.clamp_min(1e-30))).sum())
    return {
        "mean": float(per_point.mean()),
        "se": float(per_point.std() / math.sqrt(per_point.shape[0])),
        "responsibility": resp.tolist(),
        "components_used": int((resp > 1 / (2 * model.K)).sum()),
        "effective_components": math.exp(entropy),
    }


class PinwheelGuide(nn.Module):
    """``q(z1 | x)`` (categorical logits from an MLP) and ``q(z2 | x, z1)`` (diagonal Gaussian
    from an MLP on ``[x, one_hot(z1)]``)."""

    def __init__(self, K: int, hidden: int = 64):
        super().__init__()
        self.K = K
        self.logits = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, K))
        self.z2 = nn.Sequential(nn.Linear(2 + K, hidden), nn.Tanh(), nn.Linear(hidden, 4))

    def component(self, x: torch.Tensor) -> D.Categorical:
        return D.Categorical(logits=self.logits(x))

    def continuous(self, x: torch.Tensor, z1: torch.Tensor) -> D.Normal:
        out = self.z2(torch.cat([x, nn.functional.one_hot(z1, self.K).to(x.dtype)], -1))
        return D.Normal(out[..., :2], nn.functional.softplus(out[..., 2:]) + 1e-4)


def pyro_pair(model: PinwheelMixture, guide_net: PinwheelGuide):
    """Pyro ``(model_fn, guide_fn)`` for the score-function VAE (``z1`` by REINFORCE with a
    decaying-average baseline, ``z2`` reparameterised)."""
    import pyro
    import pyro.distributions as pd

    def model_fn(x):
        pyro.module("pinwheel_model", model)
        L = model.scale_tril()
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", pd.Categorical(logits=model.alpha))
            z2 = pyro.sample("z2", pd.MultivariateNormal(model.mu[z1], scale_tril=L[z1]))
            pyro.sample("x", pd.Normal(model.net(z2), model.log_sigma.exp()).to_event(1), obs=x)

    def guide_fn(x):
        pyro.module("pinwheel_guide", guide_net)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", pd.Categorical(logits=guide_net.logits(x)),
                             infer={"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}})
            q = guide_net.continuous(x, z1)
            pyro.sample("z2", pd.Normal(q.loc, q.scale).to_event(1))

    return model_fn, guide_fn


@dataclass
class Config(TrainingConfig):
    """Default: 5 arms x 500 points (80% train), K = 10, about 4 minutes per method on 2 cores."""

    arms: int = setting(5, ge=1)
    per_arm: int = setting(500, ge=1)
    radial_std: float = setting(0.3, ge=0, about="a standard deviation")
    tangential_std: float = setting(0.1, ge=0, about="a standard deviation")
    rate: float = 0.2
    test_fraction: float = setting(0.2, gt=0, lt=1)
    K: int = setting(10, ge=1)
    hidden: int = setting(20, ge=1)
    steps: int = 3000
    n_sleep: int = 1000
    lr: float = 0.01
    prior_alpha: float = setting(1.0, gt=0)
    prior_mu: float = setting(3.0, gt=0)
    prior_scale: float = setting(2.0, gt=0)
    prior_net: float = setting(3.0, gt=0)
    baseline: bool = True
    vae_lr: float = setting(0.01, gt=0)
    n_is_samples: int = setting(2000, ge=1)
    record_every: int = setting(50, ge=1)

    def validate(self):
        super().validate()
        if round(self.arms * self.per_arm * self.test_fraction) < 2 or round(self.arms * self.per_arm * (1 - self.test_fraction)) < 2:
            raise ConfigError("arms * per_arm too small for a train/test split of at least 2 points each")


PRESETS = {"smoke": {"per_arm": 80, "steps": 100, "n_sleep": 300, "n_is_samples": 200, "lr": 0.03, "vae_lr": 0.03, "record_every": 25}}


def run(config: Config, ctx) -> dict:
    from .. import baselines
    from ..learner import fit

    x, arm = pinwheel(config.arms, config.per_arm, config.radial_std, config.tangential_std, config.rate, config.seed)
    n_test = round(x.shape[0] * config.test_fraction)
    test, train = x[:n_test].to(config.device), x[n_test:].to(config.device)
    prior = {"alpha": config.prior_alpha, "mu": config.prior_mu, "scale": config.prior_scale, "net": config.prior_net}
    results = {"n_train": train.shape[0], "n_test": test.shape[0], "prior_scales": prior, "methods": {}}
    fitted = {}

    def evaluate(model, seconds, history):
        ll = held_out_log_likelihood(model, test, config.n_is_samples, seed=config.seed)
        train_ll = held_out_log_likelihood(model, train[:n_test], config.n_is_samples, seed=config.seed)
        curve = [{"step": r["step"], "wall_s": r["wall_s"], "test_log_likelihood": r["test_ll"]} for r in history if "test_ll" in r]
        return {"train_seconds": seconds, "steps": len(history), "test_log_likelihood": ll, "train_log_likelihood": train_ll["mean"],
                "curve": curve, "state": {k: v.tolist() for k, v in model.state_dict().items()}}

    def recorder(model, start):
        def callback(step, record):
            if step % config.record_every == 0:
                record["test_ll"] = held_out_log_likelihood(model, test, min(config.n_is_samples, 500), seed=config.seed)["mean"]
                record["wall_s"] = time.perf_counter() - start

        return callback

    def train_alws():
        model = PinwheelMixture(config.K, config.hidden, seed=config.seed).to(config.device)
        start = time.perf_counter()
        history = fit(model, train, ctx.train_options("alws", config, callbacks=[recorder(model, start)]),
                      penalty=parameter_prior(model, train.shape[0], prior), **config.alws_options())
        return evaluate(model, time.perf_counter() - start, history)

    def train_sf_vae():
        model = PinwheelMixture(config.K, config.hidden, seed=config.seed).to(config.device)
        guide = PinwheelGuide(config.K).to(config.device)
        model_fn, guide_fn = pyro_pair(model, guide)
        penalty = parameter_prior(model, train.shape[0], prior)
        start = time.perf_counter()
        options = ctx.train_options("sf-vae", config, steps=100 * config.steps, lr=config.vae_lr, lr_schedule="constant", callbacks=[recorder(model, start)],
                                    checkpoint_every=max(1, config.steps // 10), max_seconds=results["methods"]["alws"]["train_seconds"])
        history = baselines.fit_pyro("sf-vae", model_fn, guide_fn, {"model": model, "guide": guide}, train, options, penalty=penalty)
        return evaluate(model, time.perf_counter() - start, history)

    initial = PinwheelMixture(config.K, config.hidden, seed=config.seed).to(config.device)
    results["initial_test_log_likelihood"] = held_out_log_likelihood(initial, test, config.n_is_samples, seed=config.seed)["mean"]
    results["methods"]["alws"] = ctx.method("alws", train_alws)
    if config.baseline:
        results["methods"]["sf-vae"] = ctx.method("sf-vae", train_sf_vae)
    for method, row in finished(results["methods"]).items():
        model = PinwheelMixture(config.K, config.hidden)
        model.load_state_dict({k: torch.tensor(v) for k, v in row.pop("state").items()})
        fitted[method] = model
    figures(x, fitted, results, config.seed, ctx)
    print(report(results))
    return results


def report(results: dict) -> str:
    lines = [f"pinwheel: {results['n_train']} train / {results['n_test']} test points; initial model's test log-lik "
             f"{results['initial_test_log_likelihood']:.3f}",
             f"{'method':<8} {'test log-lik':>13} {'(s.e.)':>7} {'train log-lik':>14} {'components':>10} {'steps':>6} {'seconds':>8}"]
    for method, r in results["methods"].items():
        if method not in finished(results["methods"]):
            lines.append(f"{method:<8} {r['status']} at step {r.get('step')}: {r.get('error')}")
            continue
        ll = r["test_log_likelihood"]
        lines.append(f"{method:<8} {ll['mean']:>13.3f} {ll['se']:>7.3f} {r['train_log_likelihood']:>14.3f} {ll['components_used']:>10d} {r['steps']:>6d} {r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def figures(x: torch.Tensor, models: dict, results: dict, seed: int, ctx) -> None:
    import matplotlib.pyplot as plt

    panels = 1 + len(models)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4), sharex=True, sharey=True)
    axes[0].scatter(*x.T.numpy(), s=2, color="k")
    axes[0].set(title="data")
    for index, (ax, (method, model)) in enumerate(zip(axes[1:], models.items())):
        with seeded(seed + index):
            (z1, _), xs = model.sample(x.shape[0])
        ax.scatter(*xs.T.numpy(), s=2, c=z1.numpy(), cmap="tab10", vmin=0, vmax=9)
        with torch.no_grad():
            centres = model.net(model.mu).numpy()
        weights = torch.softmax(model.alpha.detach(), 0).numpy()
        ax.scatter(*centres.T, s=400 * weights + 10, marker="x", color="k", label="f(mu_k) (size: weight)")
        ll = results["methods"][method]["test_log_likelihood"]
        ax.set(title=f"{method}: test log-lik {ll['mean']:.2f} ({ll['components_used']} comps)")
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    ctx.save_figure(fig, "samples")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, r in finished(results["methods"]).items():
        ax.plot([c["wall_s"] for c in r["curve"]], [c["test_log_likelihood"] for c in r["curve"]], label=method)
    ax.set(xlabel="wall time (s)", ylabel="held-out log-likelihood (nats/point)", title="pinwheel")
    ax.legend()
    fig.tight_layout()
    ctx.save_figure(fig, "log_likelihood")
