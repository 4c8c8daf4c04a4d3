"""Experiment V.1: a noisy Hodgkin-Huxley neuron (``alws run hodgkin-huxley``).

The model (:class:`alws.models.hodgkin_huxley.HodgkinHuxley`) starts deliberately wrong and
learns its parameters by ALWS from simulated voltage traces; learned against true parameters,
and spike statistics of simulations against the data's.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..features import LinearProjection
from ..learner import fit
from ..models.hodgkin_huxley import PARAMETERS, TRUTH, WRONG_START, HodgkinHuxley, spike_times, step_current
from ..seeding import seeded
from .base import ExperimentConfig, KernelConfig, TrainingConfig, apply_overrides, parameter_trajectory, record_parameters, setting

__all__ = ["HodgkinHuxley", "Config", "run"]

#: What the second stage changes (``refine_with``): each parameter tensor's path chosen by
#: leave-one-out error, the roughness features beside the learned projection, and a linear part
#: in the kernel, so that the plain path can learn ``sigma_obs`` from how rough the data are; and
#: twice the sleep samples, for the weak pull on ``sigma_process`` and ``g_l`` near the truth.
REFINE_WITH = {"exponential_family": "per-parameter", "features": "learned+roughness", "kernel": "gaussian+linear", "n_sleep": 400}
#: The keys ``refine_with`` may change: the kernel's (every key :class:`KernelConfig` adds), the
#: regression's, the learning rate and its schedule, the averaging of the iterates; not the data, the budget or
#: the seed.
REFINABLE = (*(f.name for f in dataclasses.fields(KernelConfig) if f.name not in {g.name for g in dataclasses.fields(ExperimentConfig)}),
             "n_sleep", "regression", "exponential_family", "lr", "lr_schedule", "lr_end_factor", "average", "roughness_weight", "bin_steps")

NAME = "hodgkin-huxley"
DESCRIPTION = "Experiment V.1: noisy Hodgkin-Huxley neuron, parameters learned from simulated voltage traces"


@dataclass
class Config(TrainingConfig):
    """Trace length ``n_steps`` Euler steps of ``dt`` ms; ``n_traces`` data traces from :data:`TRUTH`.

    ``exponential_family=True`` (the default) forces the fast path: at the deliberately wrong
    start every path's leave-one-out error is about 1 (per-sample gradients are unpredictable), and
    the automatic choice then picks the plain path, whose gradient for log sigma_obs is about 0,
    while the fast path gets its sign and size right (about -166; sigma_obs enters through a
    natural parameter that is constant across samples; measured at 300 steps, 4 traces, N=200).
    ``features``: ``"auto"`` (a linear projection of the trace learned on sleep samples, the
    kernel of the research code), ``"raw"`` (the fixed kernel on whole traces), ``"binned"``
    (:class:`BinnedTrace`), ``"learned+roughness"`` (:class:`ProjectionAndRoughness`) or any
    feature map of :class:`alws.experiments.base.KernelConfig`.

    Two stages: ``steps`` steps with these settings, then ``refine_steps`` more with the keys of
    ``refine_with`` replaced (default :data:`REFINE_WITH`; ``refine_steps=0`` for one stage). The
    fast path's gradient for ``sigma_obs`` is biased upward by the regression's miss of the voltage
    path (about 800 mV^2 per trace at the truth, `benchmarks/gradient_at_truth.py`), which keeps
    the posterior broad while the dynamics are learned; the second stage learns ``sigma_obs``
    through the plain path and the traces' roughness (its bias at the truth: a thousandth of the
    fast path's).
    """

    extra_features = ("raw", "binned", "learned+roughness")

    n_steps: int = setting(600, ge=20, about="shorter is too short for the step current, on for the middle 80%")
    dt: float = setting(0.05, gt=0, about="ms")
    n_traces: int = setting(10, ge=1)  # a step uses min(batch_size, n_traces) of them: all, by default
    current: float = 10.0
    current_noise: float = 0.5
    bin_steps: int = setting(20, ge=1)
    roughness_weight: float = setting(1.0, gt=0, about="spread of the roughness features (features=\"learned+roughness\") relative to the projection's")
    exponential_family: bool | str = True
    steps: int = 400
    refine_steps: int = setting(200, ge=0, about="steps of the second stage (0: none)")
    refine_with: dict = dataclasses.field(default_factory=lambda: dict(REFINE_WITH))
    n_simulations: int = setting(20, ge=1)
    likelihood_particles: int = setting(1000, ge=0, about="particles of the filter that estimates log p(data) at the truth, the start and the end (0: skip)")
    record_every: int = setting(5, ge=1)
    # the kernel-learning schedule the measurements in docs/results.md ran with
    kernel_every: int = 1
    kernel_samples: int | None = 100

    older_run_values = {**TrainingConfig.older_run_values, "refine_steps": 0}

    def validate(self):
        super().validate()
        if self.bin_steps > self.n_steps:
            raise ConfigError(f"bin_steps must be in 1..n_steps, got {self.bin_steps}")
        if self.refine_steps:
            self.refined()

    def refined(self) -> "Config":
        """The second stage's config: this one with the keys of ``refine_with`` replaced (checked
        like ``--set`` values; only the regression's keys and ``lr``, :data:`REFINABLE`)."""
        unknown = sorted(set(self.refine_with) - set(REFINABLE))
        if unknown:
            raise ConfigError(f"refine_with: {', '.join(unknown)} cannot change between stages; valid keys: {', '.join(REFINABLE)}")
        values = apply_overrides(type(self), dataclasses.asdict(self), self.refine_with, "refine_with")
        config = type(self)(**{**values, "refine_steps": 0, "refine_with": {}})
        config.validate()
        return config


PRESETS = {"smoke": {"n_steps": 300, "n_traces": 4, "steps": 12, "refine_steps": 4, "refine_with": {**REFINE_WITH, "n_sleep": 60}, "n_sleep": 60, "n_simulations": 4, "record_every": 2, "bin_steps": 10,
                     "likelihood_particles": 100}}


class BinnedTrace:
    """Kernel features of traces ``[n, T]``: per bin of ``width`` steps, the mean voltage (mV) and
    the log mean squared step-to-step difference (the trace's roughness, which is what reveals the
    observation and process noise): ``[n, 2 * (T // width)]``. The roughness is scaled by
    ``roughness_scale`` mV so that both halves have comparable spread."""

    def __init__(self, width: int, roughness_scale: float = 10.0):
        self.width, self.roughness_scale = width, roughness_scale

    def __call__(self, x):
        n, t = x.shape
        usable = t - t % self.width
        bins = x[:, :usable].reshape(n, usable // self.width, self.width)
        rough = torch.log(torch.diff(bins, dim=2).pow(2).mean(2) + 1e-6)
        return torch.cat([bins.mean(2), self.roughness_scale * rough], 1)


class ProjectionAndRoughness(LinearProjection):
    """A learned linear projection of the trace (``dim`` features, :class:`alws.features.LinearProjection`)
    followed by ``segments`` fixed roughness features: per segment of the trace, the log of the
    median squared step-to-step difference, which is about ``log(2 sigma_obs^2 + ...)`` between
    spikes (the median ignores the spikes' large steps). Standardised on the first sleep samples
    and scaled to ``weight`` times the projection's spread: ``[n, dim + segments]``. The projection serves the
    fast path's targets (functions of the voltage path); the roughness gives the plain path what
    it needs for the noise scales, including a linear trend beyond the sleep samples when the
    kernel has a linear part."""

    def __init__(self, x_shape, dim: int = 16, segments: int = 4, weight: float = 1.0):
        super().__init__(x_shape, dim)
        if not weight > 0:
            raise ValueError(f"the roughness features' weight must be > 0, got {weight}")
        self.roughness_weight = float(weight)
        if not 1 <= segments <= self.in_features // 2:
            raise ValueError(f"segments must be in 1..{self.in_features // 2}, got {segments}")
        self.segments = segments
        self.register_buffer("roughness_mean", torch.zeros(segments))
        self.register_buffer("roughness_scale", torch.ones(segments))

    def roughness(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, segments]``: log median squared difference of each segment of the flattened trace."""
        flat = x.reshape(x.shape[0], -1).to(self.mean.dtype)
        steps = torch.diff(flat, dim=1).pow(2)
        usable = steps.shape[1] - steps.shape[1] % self.segments
        parts = steps[:, :usable].reshape(x.shape[0], self.segments, -1)
        return torch.log(parts.median(dim=2).values + 1e-8)

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> None:
        super().initialise(x, targets)
        r = self.roughness(x)
        spread = float(super().forward(x).std(0).mean())  # the projection's typical spread per feature
        self.roughness_mean.copy_(r.mean(0))
        self.roughness_scale.copy_(r.std(0).clamp_min(1e-6) / max(self.roughness_weight * spread, 1e-12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rough = (self.roughness(x) - self.roughness_mean) / self.roughness_scale
        return torch.cat([super().forward(x), rough.to(self.weight.dtype)], 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, segments={self.segments}, weight={self.roughness_weight:g}"


def spike_summary(traces: torch.Tensor, dt: float) -> dict:
    """Mean spike count, first-spike latency (ms) and inter-spike interval (ms) over traces ``[n, T]``."""
    counts, firsts, isis = [], [], []
    for trace in traces:
        times = spike_times(trace, dt)
        counts.append(len(times))
        if times:
            firsts.append(times[0])
        isis += [b - a for a, b in zip(times, times[1:])]
    mean = lambda v: float(sum(v) / len(v)) if v else None  # noqa: E731
    return {"spike_count": mean(counts), "first_spike_ms": mean(firsts), "isi_ms": mean(isis)}


def relative_errors(values: dict) -> dict:
    return {k: abs(values[k] - TRUTH[k]) / abs(TRUTH[k]) for k in PARAMETERS}


def kernel_features(config: Config):
    """The ``features`` argument of :func:`alws.fit` for the config's own feature words
    (``"binned"``, ``"raw"``, ``"learned+roughness"``); ``None`` (the config's word) otherwise."""
    own = {"binned": lambda: BinnedTrace(config.bin_steps), "raw": lambda: "none",
           "learned+roughness": lambda: ProjectionAndRoughness(config.n_steps, config.feature_dim, weight=config.roughness_weight)}
    return own[config.features]() if config.features in own else None


def data_log_likelihood(current: torch.Tensor, dt: float, data: torch.Tensor, values: dict, particles: int, seed: int = 0) -> float:
    """``log p(data)`` (nats, summed over the traces ``[n, T]``) at the parameter dict ``values``,
    by one :meth:`HodgkinHuxley.log_marginal` filter of ``particles`` particles seeded with
    ``seed``. The maximum-likelihood estimate is at least as likely as the truth, so the truth's
    value minus a run's bounds from below how far the run ended from it."""
    with torch.no_grad():
        generator = torch.Generator(device=data.device).manual_seed(seed)
        model = HodgkinHuxley(current, dt, params=values).to(data.device)
        return float(model.log_marginal(data, particles, generator).sum())


def run(config: Config, ctx) -> dict:
    current = step_current(config.n_steps, config.current, config.current_noise, seed=config.seed)
    truth = HodgkinHuxley(current, config.dt).to(config.device)
    model = HodgkinHuxley(current, config.dt, params=WRONG_START).to(config.device)
    with seeded(config.seed), torch.no_grad():
        _, data = truth.sample(config.n_traces)
        voltage = truth.simulate(config.n_traces)  # noise-free-observation traces for spike statistics
        before = model.simulate(config.n_simulations)
    initial = model.values()
    record = record_parameters(model.values, config.record_every)
    start = time.perf_counter()
    history = fit(model, data, ctx.train_options("alws", config, callbacks=[record]),
                  **config.alws_options(kernel_features(config)))
    trajectory = [{"step": 0, **initial}] + parameter_trajectory(history)
    if config.refine_steps:
        # the second stage: a new learner (paths, features, kernel of refine_with) on the first's model
        refined = config.refined()
        history = fit(model, data, ctx.train_options("alws-refine", refined, steps=config.refine_steps, seed=config.seed + 1,
                                                     callbacks=[record]),
                      **refined.alws_options(kernel_features(refined)))
        trajectory += [{**row, "step": config.steps + row["step"]} for row in parameter_trajectory(history)]
    seconds = time.perf_counter() - start
    learned = model.values()
    with seeded(config.seed + 1), torch.no_grad():
        after = model.simulate(config.n_simulations)
    likelihoods = {name: data_log_likelihood(current, config.dt, data, values, config.likelihood_particles, config.seed)
                   for name, values in {"truth": TRUTH, "initial": initial, "learned": learned}.items()} if config.likelihood_particles else {}
    results = {
        "train_seconds": seconds,
        "true_parameters": dict(TRUTH),
        "initial_parameters": initial,
        "learned_parameters": learned,
        "relative_error": {"initial": relative_errors(initial), "learned": relative_errors(learned)},
        "spikes": {"data": spike_summary(voltage, config.dt), "learned": spike_summary(after, config.dt), "initial": spike_summary(before, config.dt)},
        "parameter_trajectory": trajectory,
        **({"log_likelihood": likelihoods} if likelihoods else {}),
        "stages": {"steps": config.steps, "refine_steps": config.refine_steps, "refine_with": config.refine_with if config.refine_steps else {}},
    }
    figures(config, data, after, trajectory, ctx)
    print(report(results))
    return results


def report(results: dict) -> str:
    lines = [f"{'parameter':<14} {'truth':>9} {'initial':>9} {'learned':>9} {'rel.err':>8} (initial)"]
    for k in PARAMETERS:
        e0, e1 = results["relative_error"]["initial"][k], results["relative_error"]["learned"][k]
        lines.append(f"{k:<14} {results['true_parameters'][k]:>9.4g} {results['initial_parameters'][k]:>9.4g} {results['learned_parameters'][k]:>9.4g} {e1:>8.3f} ({e0:.3f})")
    number = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    if "log_likelihood" in results:
        ll = results["log_likelihood"]
        lines.append(f"log p(data), particle filter (nats): truth {ll['truth']:.1f}, initial {ll['initial']:.1f}, "
                     f"learned {ll['learned']:.1f} ({ll['truth'] - ll['learned']:.1f} below the truth)")
    for who in ("data", "learned", "initial"):
        s = results["spikes"][who]
        lines.append(f"spikes {who:<8}: count {number(s['spike_count'])}, first spike {number(s['first_spike_ms'])} ms, "
                     f"ISI {number(s['isi_ms'])} ms")
    return "\n".join(lines)


def figures(config, data, simulated, trajectory, ctx) -> None:
    import matplotlib.pyplot as plt

    t = torch.arange(config.n_steps) * config.dt
    fig, axes = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    axes[0].plot(t, data[0].cpu(), "k", lw=0.8)
    axes[0].set(title="data (observed voltage)", ylabel="mV")
    axes[1].plot(t, simulated[0].cpu(), color="tab:blue", lw=0.8)
    axes[1].set(title="simulated from the learned model", xlabel="ms", ylabel="mV")
    fig.tight_layout()
    ctx.save_figure(fig, "traces")
    fig, axes = plt.subplots(2, 5, figsize=(15, 5.5))
    steps = [row["step"] for row in trajectory]
    for ax, k in zip(axes.flat, PARAMETERS):
        ax.plot(steps, [row[k] for row in trajectory], label="learned")
        ax.axhline(TRUTH[k], color="k", ls="--", lw=1, label="truth")
        if config.refine_steps:
            ax.axvline(config.steps, color="0.6", ls=":", lw=1, label="second stage")
        ax.set(title=k, xlabel="step")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    ctx.save_figure(fig, "parameters")
