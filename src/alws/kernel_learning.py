"""Kernels that learn: a feature map (and the kernel's bandwidth and ridge) trained on held-out
sleep samples to minimise the error of the regression the wake gradient uses.

Every update draws ``2 n`` *fresh* samples from the model (never the data; never the step's own
sleep samples), fits kernel ridge regression of the learning targets on the first ``n`` through
the current features, predicts the other ``n``, and takes an Adam step on

    error = mean_j  mean_i (prediction_ij - y_ij)^2 / var_i(y_ij)

(1 = no better than the mean), differentiated through the Cholesky solve in float64. The targets
``y`` are those of :meth:`alws.ALWS.kernel_targets`: the exponential-family targets
``[log p(z) - Phi(z), eta(z)]`` when the model has the fast-path hooks (functions of ``z`` only,
so the objective is not drowned in the likelihood's noise), else ``log p(z, x)``; or their
directional derivatives ``v . grad_theta`` along random directions (``objective="directional"``).
With the held-out points' statistics ``s = [1, S(x)]`` (``objective="log-likelihood"``) the error
is that of the contraction the wake step uses, ``(prediction_j - y_j) . s_j``, over the variance
of ``y_j . s_j``: each coordinate of ``eta`` counts by how much it moves the log-likelihood of
the points, not by its own variance (the method's authors trained their image kernels on this).

The bandwidth is ``exp(log_bandwidth)`` times the median distance between the fitted features
(held fixed within an update), so the objective does not change with the features' overall scale;
a map with a ``renormalise()`` method (:class:`alws.features.LinearProjection`) is rescaled after
every step, so that scale does not drift either. The ridge ``lambda`` (system ``K + n lambda I``) is
``exp(log_ridge)``. Both start at the research code's values (the median, 1e-3) and are learned
with the features.

Cost per update: sampling ``2 n`` points, their targets, the features' forward and backward on
``2 n`` points, one ``n x n`` Cholesky with its backward (``O(n^3)``), times ``steps``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .kernels import Kernel, squared_distances

__all__ = ["KernelLearning", "heldout_error"]

#: Range in which the learned log-bandwidth multiplier and log-ridge are kept.
LOG_BANDWIDTH_RANGE = (math.log(0.05), math.log(20.0))
LOG_RIDGE_RANGE = (math.log(1e-8), math.log(1.0))


def _median_distance(d2: torch.Tensor) -> torch.Tensor:
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, 1, device=d2.device)
    med = d2.detach()[iu[0], iu[1]].median().sqrt()
    return torch.where(med > 0, med, torch.ones_like(med))


def heldout_error(
    phi_fit: torch.Tensor,
    y_fit: torch.Tensor,
    phi_val: torch.Tensor,
    y_val: torch.Tensor,
    kernel: Kernel,
    log_bandwidth: torch.Tensor,
    log_ridge: torch.Tensor,
    statistics_val: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative held-out error of kernel ridge regression, differentiable in every input.

    ``phi_fit [n, D]``, ``y_fit [n, c]`` fit the regression (centred targets, as the learner's);
    ``phi_val [m, D]``, ``y_val [m, c]`` score it. The bandwidth is ``exp(log_bandwidth)`` times the
    median distance among ``phi_fit`` (not differentiated). Returns the mean over target columns
    with non-zero variance of ``mean_i (pred - y)^2 / var(y)``, a scalar tensor; with
    ``statistics_val [m, c]``, ``mean_i ((pred_i - y_i) . s_i)^2 / var_i(y_i . s_i)``.
    """
    n = phi_fit.shape[0]
    centre = phi_fit.mean(0, keepdim=True)
    phi_fit, phi_val = phi_fit - centre, phi_val - centre
    d2 = squared_distances(phi_fit, phi_fit)
    bandwidth = _median_distance(d2) * log_bandwidth.exp()
    gram = kernel.from_squared_distances(d2, bandwidth)
    if kernel.linear:
        gram = gram + (phi_fit @ phi_fit.T) * kernel.linear / bandwidth / bandwidth
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    system = gram + n * log_ridge.exp() * eye
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) != 0:  # numerically indefinite: add a little jitter (not differentiated)
        chol, info = torch.linalg.cholesky_ex(system + 1e-8 * float(system.diagonal().abs().mean()) * eye)
    if int(info) != 0:  # non-finite features or a broken kernel: no error to learn from
        return torch.full((), math.nan, dtype=torch.float64, device=gram.device)
    mean = y_fit.mean(0, keepdim=True)
    prediction = kernel(phi_val, phi_fit, bandwidth) @ torch.cholesky_solve(y_fit - mean, chol) + mean
    if statistics_val is not None:
        statistics_val = statistics_val.to(prediction.dtype)
        contracted = (y_val * statistics_val).sum(1)
        var = contracted.var(unbiased=False)
        if not bool(var > 0):
            return (prediction.sum() * 0.0).to(torch.float64)
        return ((prediction - y_val) * statistics_val).sum(1).pow(2).mean() / var
    var = y_val.var(0, unbiased=False)
    keep = var > 1e-12 * var.max().clamp_min(1e-300)
    if not bool(keep.any()):
        return (prediction.sum() * 0.0).to(torch.float64)
    return ((prediction - y_val)[:, keep].pow(2).mean(0) / var[keep]).mean()


def _decay(steps: int | None) -> Callable[[int], float]:
    """The learning-rate factor at Adam step ``t``: 1, or ``sqrt(steps / t)`` once ``t > steps``."""
    if steps is None:
        return lambda t: 1.0
    return lambda t: 1.0 if t <= steps else math.sqrt(steps / t)


class KernelLearning:
    """Trains ``features`` (an ``nn.Module``), a bandwidth multiplier and a ridge on held-out sleep samples.

    Args:
        features: the feature map ``x [n, *x_shape] -> [n, D]`` (its trainable parameters are learned).
        kernel: the kernel on the features.
        every: update every so many learner steps (1: every step).
        steps: Adam steps per update.
        samples: ``n``; each Adam step draws ``2 n`` fresh sleep samples (``n`` to fit, ``n`` to score).
        lr: Adam's learning rate for the features, the log-bandwidth and the log-ridge.
        warmup: Adam steps at the first update (the kernel starts close to useful).
        lr_decay: ``None`` (default): a constant rate; ``T`` (Adam steps): ``lr`` for the first
            ``T`` steps, then ``lr * sqrt(T / t)`` at step ``t`` (a
            :class:`torch.optim.lr_scheduler.LambdaLR`), so that a long run's features settle
            while a short run keeps the full rate.
    """

    def __init__(self, features: nn.Module, kernel: Kernel, *, every: int = 1, steps: int = 1, samples: int = 500, lr: float = 1e-2,
                 warmup: int = 20, lr_decay: int | None = None):
        self.features, self.kernel = features, kernel
        self.every, self.steps, self.samples, self.lr, self.warmup = every, steps, samples, lr, warmup
        self.lr_decay = lr_decay
        device = next(features.parameters()).device
        self.log_bandwidth = torch.zeros((), dtype=torch.float64, device=device, requires_grad=True)
        self.log_ridge = torch.tensor(math.log(1e-3), dtype=torch.float64, device=device, requires_grad=True)
        trainable = [p for p in features.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam([{"params": trainable}, {"params": [self.log_bandwidth, self.log_ridge]}], lr=lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _decay(lr_decay))
        self.updates = 0
        self.error = math.nan
        self.skipped = 0

    def describe(self) -> dict:
        described = {"every": self.every, "steps": self.steps, "samples": self.samples, "lr": self.lr, "warmup": self.warmup}
        return described if self.lr_decay is None else {**described, "lr_decay": self.lr_decay}

    @property
    def bandwidth_multiplier(self) -> float:
        return float(self.log_bandwidth.detach().exp())

    @property
    def ridge(self) -> float:
        """The learned ``lambda`` for ``n = samples`` fitted points."""
        return float(self.log_ridge.detach().exp())

    def due(self, call: int) -> bool:
        """Whether learner call number ``call`` (0-based) starts with an update."""
        return call % self.every == 0

    def objective(self, x: torch.Tensor, y: torch.Tensor, statistics: torch.Tensor | None = None) -> torch.Tensor:
        """Held-out error for samples ``x [2n, ...]`` with targets ``y [2n, c]`` (fit on the first
        half), contracted with ``statistics [2n, c]`` when given (see :func:`heldout_error`)."""
        n = x.shape[0] // 2
        phi = self.features(x).reshape(x.shape[0], -1).to(torch.float64)
        y = y.to(torch.float64)
        return heldout_error(phi[:n], y[:n], phi[n:], y[n:], self.kernel, self.log_bandwidth, self.log_ridge,
                             None if statistics is None else statistics[n:])

    def update(self, sample_targets: Callable[[int], tuple], steps: int | None = None) -> float:
        """``steps`` Adam steps (default: ``self.steps``, or ``warmup`` at the first update).

        ``sample_targets(m) -> (x [m, ...], y [m, c])`` draws ``m`` fresh sleep samples and their
        learning targets, or ``(x, y, statistics [m, c])`` to score the contracted error.
        Non-finite samples, targets, error or gradients skip the Adam step (counted in ``skipped``).
        Returns the last held-out error (before its step).
        """
        if steps is None:
            steps = max(self.steps, self.warmup) if self.updates == 0 else self.steps
        was_training = self.features.training
        self.features.train()
        try:
            for _ in range(steps):
                x, y, *statistics = sample_targets(2 * self.samples)
                statistics = statistics[0] if statistics else None
                finite = bool(torch.isfinite(y).all()) and (statistics is None or bool(torch.isfinite(statistics).all()))
                if not (finite and (not x.is_floating_point() or bool(torch.isfinite(x).all()))):
                    self.skipped += 1  # the model produced non-finite samples; the learner's step reports them
                    continue
                error = self.objective(x, y, statistics)
                value = float(error.detach())
                self.optimizer.zero_grad(set_to_none=True)
                if not math.isfinite(value):
                    self.skipped += 1
                    continue
                error.backward()
                grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
                if not all(bool(torch.isfinite(g).all()) for g in grads):
                    self.optimizer.zero_grad(set_to_none=True)
                    self.skipped += 1
                    continue
                self.optimizer.step()
                self.scheduler.step()
                if callable(getattr(self.features, "renormalise", None)):
                    self.features.renormalise()
                with torch.no_grad():
                    self.log_bandwidth.clamp_(*LOG_BANDWIDTH_RANGE)
                    self.log_ridge.clamp_(*LOG_RIDGE_RANGE)
                self.error = value
        finally:
            self.features.train(was_training)
        self.updates += 1
        return self.error

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "log_bandwidth": self.log_bandwidth.detach().clone(),
            "log_ridge": self.log_ridge.detach().clone(),
            "updates": self.updates,
            "error": self.error,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_bandwidth.copy_(state["log_bandwidth"])
            self.log_ridge.copy_(state["log_ridge"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # absent from checkpoints written before the schedule existed
            self.scheduler.load_state_dict(state["scheduler"])
        self.updates, self.error, self.skipped = state["updates"], state["error"], state["skipped"]
