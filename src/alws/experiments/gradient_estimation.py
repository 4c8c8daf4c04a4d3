"""Experiment I: gradient estimation against an exact reference.

Model: ``z1, z2 ~ N(0, 1)``, ``x | z ~ N(softplus(b . z) - |b|^2, sigma_x^2)``, ``x`` scalar. For each
``(b, sigma_x)`` and a set of data points ``x*`` drawn from the model, the exact per-point gradient
``grad_b log p(x*)`` comes from 2-D Gauss-Hermite quadrature (:mod:`alws.evaluate`); every estimator
is scored by its relative L2 error and cosine similarity against it, over repeats, as the number
of sleep samples ``N`` grows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributions as D
from torch import nn

from .. import evaluate
from ..training import Progress
from ..errors import ConfigError
from ..seeding import seeded
from ..learner import ALWS
from ..model import LatentVariableModel
from .base import ExperimentConfig, setting

NAME = "gradient-estimation"
DESCRIPTION = "Experiment I: ALWS gradient error vs sleep samples against exact quadrature gradients"


class SoftplusRegression(LatentVariableModel):
    """``z ~ N(0, I_2)``, ``x | z ~ N(softplus(b . z) - |b|^2, sigma_x^2)``; parameter ``b [2]``; ``x: [n, 1]``."""

    def __init__(self, b, sigma_x: float):
        super().__init__()
        self.b = nn.Parameter(torch.as_tensor(b, dtype=torch.float64).clone())
        self.register_buffer("sigma_x", torch.tensor(float(sigma_x), dtype=torch.float64))

    def sample(self, n):
        z = torch.randn(n, 2, dtype=self.b.dtype, device=self.b.device)
        return z, self.likelihood(z).sample()

    def prior(self, n):
        """``N(0, I_2)`` for ``n`` latents (batch ``[n]``, event ``[2]``)."""
        return D.Independent(D.Normal(torch.zeros(n, 2, dtype=self.b.dtype, device=self.b.device), 1.0), 1)

    def log_prior(self, z):
        return self.prior(z.shape[0]).log_prob(z)

    def likelihood(self, z):
        mean = nn.functional.softplus(z @ self.b) - self.b @ self.b
        return D.Normal(mean[:, None], self.sigma_x)


@dataclass
class Config(ExperimentConfig):
    """Defaults give the full run (about 3 minutes on 2 CPU cores)."""

    b_values: tuple[tuple[float, float], ...] = ((1.0, 0.5), (1.5, -1.0))
    sigma_x_values: tuple[float, ...] = (0.1, 1.0)
    n_sleep_values: tuple[int, ...] = setting((100, 300, 1000, 3000), ge=2)
    estimators: tuple[str, ...] = setting(("alws-exact", "alws-exact-ef", "alws-exact-plain", "alws-rff", "alws-nystrom"),
                                          choices=lambda: list(ESTIMATORS))
    n_points: int = setting(50, ge=1)
    repeats: int = setting(20, ge=1)
    n_features: int = setting(300, ge=1)
    select_max: int = setting(500, ge=2)
    quadrature_nodes: int = setting(100, ge=1)
    baselines: tuple[str, ...] = setting(("vae", "iwae", "rws", "sf-vae"), choices=lambda: list(BASELINES))
    particle_values: tuple[int, ...] = setting((1, 10, 100, 1000), ge=1)
    encoder_steps: int = setting(3000, ge=1)
    encoder_seconds_max: float = setting(10.0, gt=0)

    def validate(self):
        super().validate()
        if not self.b_values or any(len(b) != 2 or not all(math.isfinite(v) for v in b) for b in self.b_values):
            raise ConfigError(f"b_values must be a non-empty list of 2-vectors, got {self.b_values!r}")
        if not self.sigma_x_values or any(not (math.isfinite(s) and s > 0) for s in self.sigma_x_values):
            raise ConfigError(f"sigma_x_values must be positive, got {self.sigma_x_values!r}")
        if not self.n_sleep_values:
            raise ConfigError("n_sleep_values is empty")
        if not self.estimators:
            raise ConfigError(f"estimators is empty; valid: {', '.join(ESTIMATORS)}")
        if self.baselines and not self.particle_values:
            raise ConfigError("particle_values is empty")


PRESETS = {
    # `make run`: the method at work on every setting in about one minute on 2 CPU cores
    "quick": {
        "estimators": ["alws-exact", "alws-rff"],
        "n_sleep_values": [100, 300, 1000, 3000],
        "repeats": 10,
        "baselines": ["vae", "iwae", "rws"],
        "particle_values": [10, 100, 1000],
        "encoder_seconds_max": 5.0,
    },
    "smoke": {
        "b_values": [[1.0, 0.5]],
        "sigma_x_values": [1.0],
        "n_sleep_values": [100, 300],
        "n_points": 10,
        "repeats": 2,
        "n_features": 100,
        "quadrature_nodes": 40,
        "particle_values": [1, 10],
        "encoder_steps": 30,
        "encoder_seconds_max": 2.0,
    }
}

#: Baseline gradient estimators: the method that trains the encoder (on the data, with b fixed),
#: and whether the estimate self-normalises importance weights (IWAE, RWS) or averages plain
#: encoder samples (VAE, score-function VAE).
BASELINES = {"vae": False, "iwae": True, "rws": True, "sf-vae": False}

#: Estimator name -> options of :func:`alws.gradient`.
ESTIMATORS = {
    "alws-exact": {"regression": "exact"},
    "alws-exact-ef": {"regression": "exact", "exponential_family": True},
    "alws-exact-plain": {"regression": "exact", "exponential_family": False},
    "alws-rff": {"regression": "rff"},
    "alws-nystrom": {"regression": "nystrom"},
}


def _summary(values: np.ndarray) -> dict:
    """Per-N summary of ``values [n_N, repeats]``."""
    return {
        "median": np.median(values, 1).tolist(),
        "q25": np.quantile(values, 0.25, 1).tolist(),
        "q75": np.quantile(values, 0.75, 1).tolist(),
        "mean": values.mean(1).tolist(),
        "std": values.std(1).tolist(),
        "all": values.tolist(),
    }


def exact_reference(model, x, nodes):
    """Per-point exact gradient and its quadrature error (nodes vs 2 * nodes)."""
    exact = evaluate.exact_gradient(model, x, dim=2, n_nodes=nodes, reduce="none")
    finer = evaluate.exact_gradient(model, x, dim=2, n_nodes=2 * nodes, reduce="none")
    return finer, evaluate.relative_error(exact, finer, batched=True)


def run_setting(config: Config, b, sigma_x, index: int, bar) -> dict:
    """All estimators at one ``(b, sigma_x)``."""
    model = SoftplusRegression(b, sigma_x).to(config.device)
    with seeded(config.seed * 1000 + index), torch.no_grad():
        _, x = model.sample(config.n_points)
    exact, quad_error = exact_reference(model, x, config.quadrature_nodes)
    out = {
        "b": list(b),
        "sigma_x": sigma_x,
        "n_points": config.n_points,
        "quadrature_relative_error": quad_error,
        "exact_gradient_norm": float(torch.linalg.norm(exact["b"], dim=1).mean()),
        "estimators": {},
    }
    for name in config.estimators:
        options = {**ESTIMATORS[name], "n_features": config.n_features, "select_max": config.select_max}
        errors = np.zeros((len(config.n_sleep_values), config.repeats))
        cosines, seconds = np.zeros_like(errors), np.zeros_like(errors)
        paths = []
        for i, n_sleep in enumerate(config.n_sleep_values):
            # One learner per N: hyper-parameters (and path) are selected by leave-one-out on the
            # first repeat and then held, as in training between re-selections.
            learner = ALWS(model, n_sleep=n_sleep, select_every=0, **options)
            for r in range(config.repeats):
                start = time.perf_counter()
                with seeded(10_000 * index + 100 * r + i):
                    estimate, record = learner.per_point_gradients(x)
                seconds[i, r] = time.perf_counter() - start
                errors[i, r] = evaluate.relative_error(estimate, exact, batched=True)
                cosines[i, r] = evaluate.cosine_similarity(estimate, exact, batched=True)
                bar.update(1)
            paths.append({k: record[k] for k in ("path", "bandwidth", "ridge", "loo_error")})
        out["estimators"][name] = {
            "budget": "n_sleep",
            "n_sleep": list(config.n_sleep_values),
            "relative_error": _summary(errors),
            "cosine": _summary(cosines),
            "seconds": _summary(seconds),
            "options": dict(options),
            "selected": paths,
        }
    if config.baselines:
        # Each encoder gets the wall time ALWS (exact, all N and repeats) took here, capped.
        alws_seconds = sum(sum(row) for row in out["estimators"].get("alws-exact", {}).get("seconds", {}).get("all", [[config.encoder_seconds_max]]))
        budget = min(alws_seconds, config.encoder_seconds_max)
        out["baseline_encoder_budget_seconds"] = budget
        out["estimators"].update(run_baselines(config, model, x, exact, index, budget, bar))
    return out


def baseline_gradients(model, encoder, x, particles: int, weighted: bool) -> dict:
    """Per-point gradient estimates ``{"b": [B, 2]}`` from an encoder ``q(z | x)``.

    ``weighted=False``: ``mean_s grad log p(z_s, x_b)`` with ``z_s ~ q(z | x_b)`` (the ELBO's
    gradient in the model's parameters); ``True``: self-normalised importance weights
    ``w_s ~ p(z_s, x_b) / q(z_s | x_b)`` (the IWAE / wake-theta gradient).
    """
    with torch.no_grad():
        q = encoder(x)
        z = q.sample((particles,))  # [S, B, 2]
        log_q = q.log_prob(z)
    b = x.shape[0]
    xs = x.unsqueeze(0).expand(particles, *x.shape).reshape(particles * b, *x.shape[1:])
    log_p = model.log_joint(z.reshape(particles * b, 2), xs).reshape(particles, b)
    with torch.no_grad():
        w = torch.softmax(log_p - log_q, 0) if weighted else torch.full_like(log_p, 1.0 / particles)
        select = torch.zeros(b, particles, b, dtype=log_p.dtype, device=log_p.device)
        rows = torch.arange(b, device=log_p.device)
        select[rows, :, rows] = w.T
    return {"b": torch.autograd.grad(log_p, model.b, select, is_grads_batched=True)[0]}


def run_baselines(config: Config, model, x, exact, index: int, budget: float, bar) -> dict:
    """Encoders trained for at most ``budget`` seconds each; per-point gradients vs particles."""
    from .. import baselines as methods

    from ..errors import NonFiniteError

    out = {}
    for name in config.baselines:
        with seeded(config.seed * 1000 + index):
            encoder = methods.make_encoder(model, x).to(torch.float64)
        try:
            history = methods.fit(name, model, x, steps=config.encoder_steps, batch_size=x.shape[0], lr=3e-3, seed=config.seed,
                                  encoder=encoder, train_model=False, max_seconds=budget, progress=False)
        except NonFiniteError as error:  # recorded; the other estimators go on
            out[name] = {"budget": "particles", "status": "diverged", "step": getattr(error, "step", None), "error": str(error)}
            bar.update(len(config.particle_values) * config.repeats)
            continue
        errors = np.zeros((len(config.particle_values), config.repeats))
        cosines, seconds = np.zeros_like(errors), np.zeros_like(errors)
        for i, particles in enumerate(config.particle_values):
            for r in range(config.repeats):
                start = time.perf_counter()
                with seeded(20_000 * index + 100 * r + i):
                    estimate = baseline_gradients(model, encoder, x, particles, BASELINES[name])
                seconds[i, r] = time.perf_counter() - start
                errors[i, r] = evaluate.relative_error(estimate, exact, batched=True)
                cosines[i, r] = evaluate.cosine_similarity(estimate, exact, batched=True)
                bar.update(1)
        out[name] = {
            "budget": "particles",
            "particles": list(config.particle_values),
            "relative_error": _summary(errors),
            "cosine": _summary(cosines),
            "seconds": _summary(seconds),
            "encoder_training": {"seconds": sum(h["time"] for h in history), "steps": len(history),
                                 "budget_seconds": budget, "final_loss": history[-1]["loss"]},
        }
    return out


def run(config: Config, ctx) -> dict:
    settings = [(b, s) for b in config.b_values for s in config.sigma_x_values]
    per_setting = (len(config.estimators) * len(config.n_sleep_values) + len(config.baselines) * len(config.particle_values)) * config.repeats
    total = len(settings) * per_setting
    bar = Progress(total, f"{NAME} estimates", ctx.show_progress)
    results = []
    for index, (b, sigma_x) in enumerate(settings):
        key = f"setting-{index}"
        cached = (ctx.out_dir / "stages" / f"{key}.json").exists()
        results.append(ctx.stage(key, lambda: run_setting(config, b, sigma_x, index, bar)))
        if cached:
            bar.update(per_setting)
        ctx.log.info("setting %d (b=%s, sigma_x=%s) done", index, b, sigma_x)
    bar.close()
    out = {"settings": results, "table": table_rows(results)}
    figure(results, ctx)
    print(report(out))
    return out


def table_rows(settings: list) -> list:
    """One row per (setting, estimator, N): median relative error and cosine."""
    rows = []
    for s in settings:
        for name, est in s["estimators"].items():
            if est.get("status") == "diverged":
                continue
            budgets = est[est.get("budget", "n_sleep")]
            for i, budget in enumerate(budgets):
                rows.append(
                    {
                        "b": s["b"],
                        "sigma_x": s["sigma_x"],
                        "estimator": name,
                        "budget": budget,
                        "relative_error_median": est["relative_error"]["median"][i],
                        "relative_error_iqr": [est["relative_error"]["q25"][i], est["relative_error"]["q75"][i]],
                        "cosine_median": est["cosine"]["median"][i],
                        "seconds_mean": est["seconds"]["mean"][i],
                    }
                )
    return rows


def report(results: dict) -> str:
    """One compact table per setting: median relative error [interquartile range] of each
    estimator, by sleep samples N (ALWS) or particles K (baselines)."""
    blocks = []
    for s in results["settings"]:
        b = "(" + ", ".join(f"{v:g}" for v in s["b"]) + ")"
        for budget, label in (("n_sleep", "N"), ("particles", "K")):
            rows = {name: est for name, est in s["estimators"].items() if est.get("budget", "n_sleep") == budget}
            failed = [name for name, est in rows.items() if est.get("status") == "diverged"]
            rows = {name: est for name, est in rows.items() if name not in failed}
            if not rows:
                continue
            values = next(iter(rows.values()))[budget]
            lines = [f"b = {b}, sigma_x = {s['sigma_x']:g}: median relative error [IQR] vs {'sleep samples' if label == 'N' else 'particles'} {label}",
                     f"{'estimator':<18}" + "".join(f"{label + '=' + str(v):>22}" for v in values)]
            for name, est in rows.items():
                e = est["relative_error"]
                cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(e["median"], e["q25"], e["q75"])]
                lines.append(f"{name:<18}" + "".join(f"{c:>22}" for c in cells))
            lines += [f"{name:<18} diverged while training its encoder" for name in failed]
            if label == "K" and "baseline_encoder_budget_seconds" in s:
                lines.append(f"(encoders trained for {s['baseline_encoder_budget_seconds']:.1f} s each)")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def figure(settings: list, ctx) -> None:
    """Relative error (median, interquartile band): ALWS variants against sleep samples N in the
    top row, the baselines against particles K in the bottom row, one column per setting, one
    y-scale for every panel, the legends below the panels."""
    import matplotlib.pyplot as plt

    kinds = [("n_sleep", "sleep samples N (ALWS)"), ("particles", "particles K (baselines)")]
    kinds = [k for k in kinds if any(e.get("budget", "n_sleep") == k[0] for s in settings for e in s["estimators"].values())]
    width = 3.4 * len(settings) + 2.6  # room for the legends on the right
    fig, axes = plt.subplots(len(kinds), len(settings), figsize=(width, 3.2 * len(kinds) + 0.8), squeeze=False, sharey=True)
    names = list(dict.fromkeys(n for s in settings for n in s["estimators"]))
    markers = "osD^vP*X"
    for row, (budget, xlabel) in enumerate(kinds):
        for j, s in enumerate(settings):
            ax = axes[row, j]
            chosen = {n: e for n, e in s["estimators"].items() if e.get("budget", "n_sleep") == budget and e.get("status") != "diverged"}
            for k, (name, est) in enumerate(chosen.items()):
                m = est["relative_error"]
                # a small horizontal offset per series, so that series which coincide stay visible
                x = [v * 1.06 ** (k - (len(chosen) - 1) / 2) for v in est[budget]]
                i = names.index(name)
                ax.plot(x, m["median"], marker=markers[i % len(markers)], ls="-" if k % 2 == 0 else "--", color=f"C{i % 10}",
                        label=name, ms=5)
                ax.fill_between(x, m["q25"], m["q75"], color=f"C{i % 10}", alpha=0.15)
            ax.set(xscale="log", yscale="log", xlabel=xlabel)
            ticks = next(iter(chosen.values()))[budget] if chosen else []
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            if row == 0:
                ax.set_title(f"b={tuple(s['b'])}, $\\sigma_x$={s['sigma_x']:g}", fontsize=10)
            if j == 0:
                ax.set_ylabel("relative error of the gradient")
    for row in range(len(kinds)):
        handles = {}
        for ax in axes[row]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        axes[row, -1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Experiment I: error of the gradient against exact quadrature (median and interquartile band)")
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / width, 0.97))
    ctx.save_figure(fig, "gradient_error")
