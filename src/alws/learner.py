"""Amortised learning by wake-sleep (Wenliang, Moskovitz, Kanagawa & Sahani, ICML 2020).

One step at parameters theta reads top to bottom:

1. **sleep**: draw ``(z_n, x_n) ~ p_theta``, ``n = 1..N``, without gradients; when a learned
   kernel is due, one update of its feature map on other, fresh sleep samples
   (:mod:`alws.kernel_learning`);
2. **weights**: kernel ridge regression from sleep ``x`` to sleep targets is linear in the
   targets, so its prediction at the wake minibatch is ``sum_n W_n . T_n(theta)`` with weights
   ``W = A R [N, q]`` computed once, under ``torch.no_grad``, by a float64 solve;
3. **weighted loss**: ``L(theta) = -sum_n W_n . T_n(theta)``, one forward and one backward over the
   sleep samples, exactly as cheap as maximum likelihood on ``N`` fully observed samples;
4. **step** with the optimiser.

Targets ``T`` are ``log p_theta(z_n, x_n)`` (``q = 1``, ``R = 1/B``), or on the exponential-family
fast path ``[log p(z_n) - Phi(z_n), eta(z_n)]`` with ``R = [1, S(x*_b)] / B``: functions of ``z``
only, so the likelihood's noise drops out of the regression and the variance falls.

Cost per step: ``N`` samples, one ``log_joint`` (or likelihood) forward and backward over ``N``
samples, plus the regression (``O(N^3)`` exact, ``O(N M^2)`` with ``M`` random/Nystrom features).
Hyper-parameters (bandwidth, ridge) are chosen by leave-one-out error on at most ``select_max``
sleep samples every ``select_every`` steps. A learned kernel adds one Adam step on
``2 * kernel_samples`` fresh samples per ``kernel_every`` steps (``benchmarks/kernel_learning.py``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import inspect
import math
import time
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .errors import ConfigError, NonFiniteError
from .features import check_features, describe_features, make_features
from .kernel_learning import KernelLearning
from .kernels import make_kernel, median_heuristic
from .model import check_model, exponential_family, trainable_parameters
from .objective import Objective, TrainOptions, train
from .regression import BACKENDS, check_exact_memory, choose_backend, loo_errors, make_regressor, select_among, Selection
from .seeding import seeded
from .stein import SteinControlVariate, check_stein_setting
from .target_paths import ExponentialFamilyPath, LogJointPath, TargetPath
from .training import History, guarded_step
from .validation import check_choice, check_data, check_int, check_positive, tree_map

__all__ = ["ALWS", "ALWSObjective", "gradient", "fit", "DEFAULT_BANDWIDTH_GRID", "DEFAULT_RIDGE_GRID", "AUTO_FEATURES_MIN_DIM", "AUTO_FEATURES_DIM", "PLAIN_PATH_MARGIN", "DATA_MEDIAN_MIN_POINTS"]

#: Multipliers of the median-heuristic bandwidth tried by leave-one-out selection.
DEFAULT_BANDWIDTH_GRID = (0.25, 0.5, 1.0, 2.0)
#: Ridge values lambda (the system is ``K + N lambda I``) tried by leave-one-out selection.
DEFAULT_RIDGE_GRID = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
#: With a learned kernel and at least this many wake points, the bandwidth is a multiple of the
#: median distance among the data's features rather than among pooled sleep and wake features
#: (:meth:`ALWS._median`); fewer points (a single series, a handful of traces) keep the pooled median.
DATA_MEDIAN_MIN_POINTS = 32
#: ``features="auto"`` learns a linear projection when ``x`` has more than this many numbers.
AUTO_FEATURES_MIN_DIM = 12
#: ``reach``: the median wake point keeps ``reach`` sleep samples within this many bandwidths
REACH_RADIUS = 2.0
#: ... to this many features.
AUTO_FEATURES_DIM = 16
#: ``exponential_family`` value that chooses the target path for each parameter tensor.
PER_PARAMETER = "per-parameter"
#: With fixed features that reduce ``x``, ``"auto"`` leaves the fast path only for a plain path whose
#: leave-one-out error is below this fraction of the fast path's: only where the fast path fails
#: outright. Measured (docs/results.md): plain / fast 0.064-7.0 on image projections, where the
#: plain path (error 0.99-1.0) stalls the generator; 0.0006-0.017 on the blowfly's summaries, where
#: the fast path (error 56-1770) collapses the population.
PLAIN_PATH_MARGIN = 1 / 30


class ALWS:
    """The ALWS gradient estimator for one model; :func:`fit` and :func:`gradient` drive it.

    For sleep inputs ``X [N, D]`` (features of the sleep samples), wake inputs ``X* [B, D]`` and a
    kernel ``k``, kernel ridge regression is linear in its targets: its prediction at the wake
    points is ``A^T T`` with ``A = (K + N lambda I)^-1 k(X, X*)``. The weights ``A`` are computed
    once per step without autograd, and the step's loss is ``-sum_n W_n . T_n(theta)`` with
    ``W = A R``: one forward and backward over the sleep samples. The targets ``T`` and wake
    statistics ``R`` come from the target path in use (:mod:`alws.target_paths`: the log-joint, or
    the exponential family's natural parameters); the path, bandwidth and ridge are chosen by
    leave-one-out error (:func:`alws.regression.select_among`), the regression itself is one of
    :data:`alws.regression.BACKENDS`, and a learned kernel is trained by
    :class:`alws.kernel_learning.KernelLearning`. This class wires them together for one step:
    sleep, (re)select, fit, weigh.

    Args:
        model: a model following :mod:`alws.model`'s protocol.
        n_sleep: sleep samples ``N`` per step (>= 2).
        regression: ``"exact"``, ``"rff"``, ``"nystrom"`` or ``"auto"`` (exact up to 4096 samples
            if memory allows, else random features).
        kernel: ``"gaussian"``, ``"matern"``, either with ``"+linear"`` (a linear part, see
            :class:`alws.kernels.Kernel`), or a :class:`alws.kernels.Kernel`.
        features: the map ``x [n, *x_shape] -> [n, D]`` applied before the kernel. ``"auto"``
            (default): a learned :class:`alws.features.LinearProjection` to
            :data:`AUTO_FEATURES_DIM` features when ``x`` has more than
            :data:`AUTO_FEATURES_MIN_DIM` numbers and the fast path is allowed (low-dimensional
            features serve regressions of functions of ``z``; the plain path's target
            ``log p(z, x)`` needs all of ``x``), else ``x`` itself; ``None`` / ``"none"``: ``x``
            flattened; a name in :data:`alws.features.FEATURES` (``"linear"``, ``"mlp"``,
            ``"conv"``, ``"random-projection"``); or any ``nn.Module`` or callable. It must
            never be trained on the data.
        feature_dim: output size of a feature map built by name.
        learn_kernel: train the feature map's parameters, a bandwidth multiplier and a ridge on
            held-out sleep samples (:class:`alws.kernel_learning.KernelLearning`). ``"auto"``
            (default): whenever the map has trainable parameters. ``True`` requires them.
        kernel_every, kernel_steps, kernel_samples, kernel_lr, kernel_warmup: the schedule: every
            ``kernel_every`` steps, ``kernel_steps`` Adam steps at learning rate ``kernel_lr``, each
            on ``2 * kernel_samples`` fresh sleep samples (default ``min(200, max(50, n_sleep / 4))``);
            ``kernel_warmup`` Adam steps at the first.
        kernel_lr_decay: ``None`` (default): ``kernel_lr`` throughout; ``T``: ``kernel_lr`` for
            the first ``T`` kernel-learning Adam steps, then ``kernel_lr * sqrt(T / t)``.
        kernel_objective: learning targets: ``"targets"`` (the exponential-family targets when the
            model has the hooks, else ``log p(z, x)``), ``"directional"`` (their derivatives
            along random parameter directions, like the leave-one-out selection) or
            ``"log-likelihood"`` (the targets' error contracted with the held-out points'
            statistics ``[1, S(x)]``, as the wake step contracts them: the error in the
            log-likelihood each point is given). ``"auto"`` (default): ``"log-likelihood"``
            for real-valued observations, ``"targets"`` when every number of ``x`` is an integer
            (binary, count data), as measured in docs/results.md.
        kernel_hyperparameters: with a learned kernel, where the regression's bandwidth and
            ridge come from: ``"selection"`` (default; leave-one-out grid search on the learned
            features, the bandwidth following the features' median distance between selections)
            or ``"learned"`` (the bandwidth multiplier and ridge trained with the features).
        bandwidth, ridge: fixed values; ``None`` selects them by leave-one-out error.
        bandwidth_grid: multipliers of the median pairwise distance of the pooled sleep and wake
            features (pooling keeps the data inside the kernel's reach early in training); with a
            learned kernel and a batch of at least :data:`DATA_MEDIAN_MIN_POINTS` points, of the
            data's features alone (their spread does not move with the model).
        ridge_grid: candidate ridge values ``lambda > 0``.
        select_every: re-select hyper-parameters every so many steps (0: only at the first).
        select_directions: random parameter directions ``v`` whose per-sample derivatives
            ``v . grad_theta`` the selection scores (and ``exponential_family="per-parameter"``
            compares), averaged. Each costs a double-backward pass over ``select_max`` samples per
            selection. ``None`` (default): 8 with a learned kernel, 2 without (the count before it
            could be set). With a learned kernel and 2, the leave-one-out surface changed from one
            selection to the next with the draw: on Fashion-MNIST 7 of 32 selections jumped to a
            ten times larger ridge, and every time the generator's samples blurred to their mean
            (FID 4 -> 16) until the next selection; with 8, 1 of 30, and Hodgkin-Huxley's
            sigma_obs came within 25% of its truth on one seed of two. Without one, 8 made
            4-source ICA worse (Amari 0.091 / 0.140 -> 0.152 / 0.209; docs/results.md).
        reach: the bandwidth is raised, at every step, until the median wake point has ``reach``
            sleep samples within two bandwidths (kernel value at least ``exp(-2)`` for the
            Gaussian); ``"auto"``: ``ceil(sqrt(N))``; 0: never raised; a fixed ``bandwidth`` is
            never raised. Without it, a model that drifts away from the data between two
            selections leaves the data beyond the kernel's reach: every weight becomes ``1/N``,
            the gradient is the mean of the sleep samples' own scores (zero on average, pure
            noise), and the parameters random-walk (measured on the blowfly: ESS 1000 of 1000
            from step 1041 to 1100, then the death rate ran from 0.18 to 11).
        select_max: leave-one-out selection uses at most this many sleep samples ``n``; when
            ``n < N`` the chosen ridge is rescaled to ``lambda * n / N`` (same absolute ridge),
            except where ``regression="rff"`` scored its own features (``M > n``): then ``lambda``
            is kept.
        n_features: random Fourier features ``M`` (``rff``) or inducing points (``nystrom``).
        exponential_family: ``"auto"``: when the model has the fast-path hooks, each selection
            picks the path (exponential-family or plain log-joint) with the smaller leave-one-out
            error; ``True`` always uses the hooks (and requires them); ``False`` always regresses
            ``log_joint``. The fast path is not always better: with a sharp likelihood its separate
            regressions of ``eta`` and ``Phi`` amplify errors by ``1/sigma^2``. With a learned
            kernel ``"auto"`` takes the fast path whenever the model has the hooks: the plain
            path's target ``log p(z, x)`` depends on every number of ``x``. With fixed features that
            map ``x`` to fewer numbers than it has (a projection, summaries), it takes the plain
            path only where its leave-one-out error is below 1/30 of the fast path's
            (:data:`PLAIN_PATH_MARGIN`): on a projection the smaller error of the plain path can
            still give the worse gradient (its regression cannot see what the projection drops).
            ``"per-parameter"``: each selection picks the path for every parameter tensor
            separately, the one with the smaller leave-one-out error of that parameter's
            directional derivatives (at the bandwidth and ridge chosen for all of them), so that
            e.g. a noise scale can come from the plain path while the parameters acting on
            ``z`` come from the fast path (Hodgkin-Huxley, docs/results.md). Costs two
            double-backward passes per parameter tensor at each selection and, when the paths
            are mixed, one more backward pass per step. Not combined with ``stein``.
        center: regress ``Y - mean(Y)`` and add the mean back (weights sum to one).
        weights: ``"krr"`` (default): the kernel ridge weights ``A`` as they are; ``"nonnegative"``:
            each wake point's weights with the negative entries cut and renormalised, a smoother
            that cannot violate Jensen's inequality. Kernel ridge weights are partly negative, and
            on the fast path with a learned noise scale (a Normal likelihood) they can make the
            implied posterior expectation of ``|x - mu(z)|^2`` too small, so that sigma collapses
            (noisy ICA: sigma 0.0009 for a truth of 0.1); cut weights overestimate it instead.
            ``"bounded"``: the kernel ridge weights, moved toward the nonnegative ones (per wake
            point, by the least fraction that suffices) until the estimate of ``log p(x* | z)``
            under them is at most the best sleep sample's ``max_n log p(x* | z_n)``. Signed
            weights let a step raise the estimate by making the negatively weighted samples
            fit ``x*`` worse, without bound: a runaway in which the estimate exceeds every
            sample's value (binarised MNIST with a ridge of 0.001: estimate +2,700 nats where the
            best sample has -270, FID 105). The bound removes that reward and leaves the
            weights untouched wherever the estimate is in range (docs/results.md).
        stein: ``True`` (every parameter), a list of parameter names, or ``False`` (default): a
            Stein control variate (:class:`alws.stein.SteinControlVariate`). For a continuous
            latent, ``s = grad_z log p(z, x) z^T + I`` has posterior mean zero; the part of the
            named parameters' targets that moves with the data through ``s`` is taken out of what
            the weights must get right (the coefficient in closed form from the natural
            parameters' Jacobians on ``max(32, 2 K)`` sleep latents, every step). Unbiased
            whenever the weights are. Pays for a parameter acting on ``z`` under a sharp
            likelihood (noisy ICA's ``W``: the rotation part's error 10 -> 0.8 times its size; Amari
            0.18 / 0.27 -> 0.091 / 0.140 with kernel ridge weights, docs/results.md);
            applied to a noise scale it drove noisy ICA's sigma to 0. Needs the fast-path hooks
            and ``z`` one float tensor.
        chunk_size: rows per chunk when accumulating random-feature sums.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        n_sleep: int = 1000,
        regression: str = "auto",
        kernel: Any = "gaussian",
        features: Any = "auto",
        feature_dim: int = AUTO_FEATURES_DIM,
        learn_kernel: bool | str = "auto",
        kernel_every: int = 2,
        kernel_steps: int = 1,
        kernel_samples: int | None = None,
        kernel_lr: float = 1e-2,
        kernel_warmup: int = 20,
        kernel_lr_decay: int | None = None,
        kernel_objective: str = "auto",
        kernel_hyperparameters: str = "selection",
        bandwidth: float | None = None,
        ridge: float | None = None,
        bandwidth_grid: Iterable[float] = DEFAULT_BANDWIDTH_GRID,
        ridge_grid: Iterable[float] = DEFAULT_RIDGE_GRID,
        select_every: int = 100,
        select_max: int = 500,
        select_directions: int | None = None,
        reach: int | str = "auto",
        n_features: int = 1000,
        exponential_family: bool | str = "auto",
        center: bool = True,
        weights: str = "krr",
        stein: bool | list = False,
        chunk_size: int = 4096,
    ):
        check_int("n_sleep", n_sleep, 2)
        check_choice("regression", regression, ["auto", *BACKENDS])
        check_positive("bandwidth", bandwidth, allow_none=True)
        check_positive("ridge", ridge, allow_none=True)
        self.bandwidth_grid, self.ridge_grid = tuple(bandwidth_grid), tuple(ridge_grid)
        if not self.bandwidth_grid or not self.ridge_grid:
            raise ValueError("bandwidth_grid and ridge_grid must be non-empty")
        for value in self.bandwidth_grid:
            check_positive("every bandwidth_grid entry", value)
        for value in self.ridge_grid:
            check_positive("every ridge (lambda) in ridge_grid", value)
        check_int("select_every", select_every, 0)
        check_int("select_max", select_max, 2)
        if select_directions is not None:
            check_int("select_directions (random parameter directions the selection scores)", select_directions, 1)
        if reach == "auto":
            reach = math.ceil(math.sqrt(n_sleep))
        check_int("reach (sleep samples within two bandwidths of the median wake point)", reach, 0)
        self.reach = min(reach, n_sleep)
        check_int("n_features", n_features, 2)
        check_int("chunk_size", chunk_size, 1)
        check_int("feature_dim", feature_dim, 1)
        check_int("kernel_every (steps between kernel-learning updates)", kernel_every, 1)
        check_int("kernel_steps (Adam steps per kernel-learning update)", kernel_steps, 1)
        if kernel_samples is None:
            kernel_samples = min(200, max(50, n_sleep // 4))
        check_int("kernel_samples (sleep samples per half of a kernel-learning batch)", kernel_samples, 2)
        check_int("kernel_warmup", kernel_warmup, 0)
        if kernel_lr_decay is not None:
            check_int("kernel_lr_decay (kernel-learning Adam steps at the full rate)", kernel_lr_decay, 1)
        check_positive("kernel_lr", kernel_lr)
        check_choice("learn_kernel", learn_kernel, ["auto", True, False])
        check_choice("kernel_objective", kernel_objective, ["auto", "targets", "directional", "log-likelihood"])
        check_choice("kernel_hyperparameters", kernel_hyperparameters, ["selection", "learned"])
        check_choice("weights", weights, ["krr", "nonnegative", "bounded"])
        self.weight_mode = weights
        if exponential_family not in ("auto", True, False, PER_PARAMETER):
            raise ValueError(f"exponential_family must be 'auto', True, False or {PER_PARAMETER!r}, got {exponential_family!r}")
        self.model, self.n_sleep = model, n_sleep
        self.kernel = make_kernel(kernel)
        self.fixed_bandwidth, self.fixed_ridge = bandwidth, ridge
        self.select_every, self.select_max = select_every, select_max
        self.center = center
        self.ef = _exponential_family_terms(model, exponential_family)
        self.ef_setting = exponential_family
        #: the target paths this model allows, by ``exponential_family``
        self.paths: dict[bool, TargetPath] = {False: LogJointPath(model)}
        if self.ef is not None:
            self.paths[True] = ExponentialFamilyPath(self.ef)
        self.exponential_family_path = False  # set by each selection
        #: with ``exponential_family="per-parameter"``: ``{name: True (fast path) / False}`` from
        #: the last selection (every parameter on ``exponential_family_path`` until then)
        self.parameter_paths: dict[str, bool] = {}
        device = next(model.parameters()).device
        self.features = self._resolve_features(features, feature_dim, device)
        self.kernel_learning = self._resolve_kernel_learning(
            learn_kernel, dict(every=kernel_every, steps=kernel_steps, samples=kernel_samples, lr=kernel_lr, warmup=kernel_warmup,
                               lr_decay=kernel_lr_decay))
        #: ``None``: 8 with a learned kernel, else 2 (as measured, docs/results.md)
        self.select_directions = select_directions or (2 if self.kernel_learning is None else 8)
        if kernel_objective == "auto":
            kernel_objective = "targets" if _integer_valued(self._probe) else "log-likelihood"
        self.kernel_objective, self.kernel_hyperparameters = kernel_objective, kernel_hyperparameters
        if self.features is not None:
            check_features(self.features, self._probe, trained=self.kernel_learning is not None)
        #: whether the kernel sees fewer numbers than ``x`` has (a projection or summaries of ``x``)
        self.features_reduce_x = self.features is not None and self.embed(self._probe).shape[1] < math.prod(self._probe.shape[1:])
        backend = choose_backend(n_sleep, device) if regression == "auto" else regression
        if backend == "exact":
            check_exact_memory(n_sleep, device)
        self.regressor = make_regressor(backend, self.kernel, n_features, center, chunk_size)
        check_stein_setting(stein)
        self.stein = None
        if stein is not False and exponential_family == PER_PARAMETER:
            raise ConfigError(f"stein is not combined with exponential_family={PER_PARAMETER!r}: choose one of them")
        if stein is not False:
            if self.ef is None:
                raise ConfigError(f"stein=True needs the exponential-family hooks, which {type(model).__name__} lacks (and "
                                  "exponential_family not False)")
            SteinControlVariate.latent_dim(self._probe_z)
            self.stein = SteinControlVariate(model, lambda z: self.ef.targets(z)[:, 1:], None if stein is True else list(stein))
        self._warned_out_of_reach = False
        self.selection: Selection | None = None
        self.calls = 0
        self._median_at = (-1, math.nan)  # (kernel updates, median distance of the features then)

    def _resolve_features(self, features, dim: int, device):
        """The feature map for ``features`` (see the class docstring), checked on a few samples."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            self._probe_z, x = self.model.sample(4)
        x_dim = math.prod(x.shape[1:])
        if isinstance(features, str):
            if features == "auto":
                # Learned low-dimensional features serve regressions of functions of z (the fast
                # path's targets); the plain path's target log p(z, x) needs all of x.
                fast_path = self.ef is not None and self.ef_setting in ("auto", True, PER_PARAMETER)
                features = "linear" if x_dim > AUTO_FEATURES_MIN_DIM and fast_path else "none"
            features = None if features == "none" else make_features(features, tuple(x.shape[1:]), dim).to(device)
        if features is not None and not callable(features):
            raise ValueError(f"features must be 'auto', 'none', a name, an nn.Module or a callable; got {type(features).__name__}")
        if isinstance(features, nn.Module):  # a map given as a module works on the model's device
            features = features.to(device)
        self._probe = x
        return features

    def _resolve_kernel_learning(self, learn: bool | str, schedule: dict) -> KernelLearning | None:
        # what a kernel learns to predict (and kernel_targets gives): the fast path's targets,
        # functions of z only, the better objective even where the plain path is forced for the
        # gradient (they predict the same conditional expectations); log p(z, x) without the hooks
        terms = self.ef if self.ef is not None else exponential_family(self.model)
        self._learning_path = self.paths[False] if terms is None else ExponentialFamilyPath(terms)
        trainable = isinstance(self.features, nn.Module) and any(p.requires_grad for p in self.features.parameters())
        if learn is True and not trainable:
            raise ValueError(
                "learn_kernel=True needs a feature map with trainable parameters (an nn.Module, e.g. features='linear', "
                f"'mlp' or 'conv'); got {describe_features(self.features)}"
            )
        if learn is False or not trainable:
            return None
        return KernelLearning(self.features, self.kernel, **schedule)

    # -- configuration -------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.regressor.name

    def describe(self) -> dict:
        """JSON-able configuration (goes into checkpoint fingerprints and run configs)."""
        return {
            "n_sleep": self.n_sleep,
            "regression": self.backend,
            "kernel": repr(self.kernel),
            "features": describe_features(self.features),
            "kernel_learning": None if self.kernel_learning is None else {
                **self.kernel_learning.describe(), "objective": self.kernel_objective, "hyperparameters": self.kernel_hyperparameters},
            "bandwidth": self.fixed_bandwidth,
            "ridge": self.fixed_ridge,
            "bandwidth_grid": list(self.bandwidth_grid),
            "ridge_grid": list(self.ridge_grid),
            "select_every": self.select_every,
            "select_max": self.select_max,
            # absent at 2, the count before it could be set, so that those checkpoints resume
            **({} if self.select_directions == 2 else {"select_directions": self.select_directions}),
            "n_features": getattr(self.regressor, "n_features", None),
            "exponential_family": self.ef_setting if self.ef is not None else False,
            "center": self.center,
            "weights": self.weight_mode,
        }

    def state_dict(self) -> dict:
        sel = self.selection
        return {
            "calls": self.calls,
            "selection": None if sel is None else [sel.bandwidth, sel.ridge, sel.loo_error, sel.n_used, sel.multiplier],
            "exponential_family_path": self.exponential_family_path,
            "parameter_paths": dict(self.parameter_paths),
            "regressor": self.regressor.state_dict() if hasattr(self.regressor, "state_dict") else {},
            # a feature map trained or initialised during the run resumes with it
            "features": self.features.state_dict() if isinstance(self.features, nn.Module) else None,
            "kernel_learning": None if self.kernel_learning is None else self.kernel_learning.state_dict(),
            "median_at": list(self._median_at),
        }

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]
        sel = state["selection"]
        self.selection = None if sel is None else Selection(*sel[:4], multiplier=sel[4] if len(sel) > 4 else math.nan)
        self.exponential_family_path = state["exponential_family_path"]
        self.parameter_paths = dict(state.get("parameter_paths", {}))
        if hasattr(self.regressor, "load_state_dict"):
            self.regressor.load_state_dict(state["regressor"])
        if state.get("features") is not None and isinstance(self.features, nn.Module):
            self.features.load_state_dict(state["features"])
        if state.get("kernel_learning") is not None and self.kernel_learning is not None:
            self.kernel_learning.load_state_dict(state["kernel_learning"])
        self._median_at = tuple(state.get("median_at", (-1, math.nan)))

    # -- the pieces ----------------------------------------------------------------------------
    def sleep(self, n: int | None = None):
        """``(z, x)``: ``n`` (default ``n_sleep``) samples from the model, without gradients."""
        with torch.no_grad(), _diverged_distributions("sample"):
            return self.model.sample(self.n_sleep if n is None else n)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel inputs ``[n, D]`` in float64: ``features(x)`` or ``x`` flattened.

        A feature ``nn.Module`` is evaluated in eval mode, so that batch-dependent layers
        (BatchNorm, dropout) map sleep and wake points with one and the same function.
        """
        with torch.no_grad():
            if self.features is None:
                phi = x
            elif isinstance(self.features, nn.Module):
                was_training = self.features.training
                self.features.eval()
                try:
                    phi = self.features(x)
                finally:
                    self.features.train(was_training)
            else:
                phi = self.features(x)
            return phi.reshape(x.shape[0], -1).to(torch.float64)

    @property
    def path(self) -> TargetPath:
        """The target path in use (chosen by the last selection; see :mod:`alws.target_paths`)."""
        return self.paths[self.exponential_family_path]

    def targets(self, z, x: torch.Tensor) -> torch.Tensor:
        """Sleep targets ``T(theta) [N, q]`` of the current path (differentiable in the parameters)."""
        with _diverged_distributions("log_joint"):
            return self.path.targets(z, x)

    def statistics(self, x_wake: torch.Tensor) -> torch.Tensor:
        """Wake statistics ``[B, q]`` paired with the targets: ``1`` or ``[1, S(x*)]`` (the fast
        path's when the parameters' paths are mixed)."""
        return self._paired_path().statistics(x_wake)

    def _paired_path(self) -> TargetPath:
        """The path whose wake statistics the weights pair with: the fast path when the parameters'
        paths are mixed, else the active one."""
        return self.paths[True] if self._mixed_paths() else self.path

    def _directional(self, t: torch.Tensor, n_directions: int) -> torch.Tensor:
        """``[n, n_directions, q]``: ``v . grad_theta t_nj`` for random directions ``v`` (double backward)."""
        u, grads = self._target_gradients(t)
        return _directions(u, grads, n_directions)

    def _target_gradients(self, t: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """``(u, grads)``: each trainable parameter's gradient of ``sum u * t`` as a function of a
        zero cotangent ``u`` shaped like ``t [n, q]`` (``None`` for parameters ``t`` does not use),
        so that contracting them with directions and differentiating in ``u`` gives per-target
        directional derivatives."""
        params = [p for _, p in trainable_parameters(self.model)]
        u = torch.zeros_like(t, requires_grad=True)
        return u, torch.autograd.grad(t, params, u, create_graph=True, allow_unused=True)

    def selection_candidates(self, z, x: torch.Tensor, n_directions: int | None = None) -> list:
        """Leave-one-out problems, one per allowed path: ``[(exponential_family, y, statistics)]``.

        Every candidate predicts the same quantities, the per-sample directional derivatives
        ``v . grad_theta log p(z_n, x_n)`` along random directions ``v``: exactly what the regression
        must get right for the gradient. The plain path regresses them directly; the
        exponential-family path regresses ``v . grad T_n`` and contracts the prediction with
        ``[1, S(x_n)]``. Where the model does not support double backward, the values of the
        targets stand in for their directional derivatives.
        """
        n_directions = self.select_directions if n_directions is None else n_directions
        forced = self._forced_path()
        allow_ef, allow_plain = forced in (None, True), forced in (None, False)
        fast = self.paths.get(True)
        with torch.enable_grad():
            # the fast path's targets when the model has them: the plain path's follow by contraction
            t = (fast or self.paths[False]).targets(z, x)
            stats = None if fast is None else fast.statistics(x)
            try:
                y = self._directional(t, n_directions)
            except RuntimeError:
                y = t[:, None, :]
        y = y.detach().to(torch.float64)
        out = []
        if allow_ef:
            out.append((True, y, stats))
        if allow_plain:
            out.append((False, y[:, :, 0] if stats is None else torch.einsum("ikq,iq->ik", y, stats), None))
        return out

    def kernel_targets(self, n: int) -> tuple[torch.Tensor, ...]:
        """``(x [n, *x_shape], y [n, c])``: ``n`` fresh sleep samples and the kernel-learning targets
        (float64, no gradient): see ``kernel_objective``. At most 256 target columns, a random subset
        when there are more; with ``"log-likelihood"`` every column and the statistics they are
        contracted with, ``(x, y, statistics [n, c])``."""
        z, x = self.sleep(n)
        if self.kernel_objective == "log-likelihood":
            with torch.no_grad():
                y = self._learning_path.targets(z, x).detach().reshape(n, -1).to(torch.float64)
                statistics = self._learning_path.statistics(x).detach().reshape(n, -1).to(torch.float64)
            return x, y, statistics
        if self.kernel_objective == "directional":
            with torch.enable_grad():
                t = self._learning_path.targets(z, x)
                try:
                    y = self._directional(t, 2).reshape(n, -1)
                except RuntimeError:  # no double backward: the values stand in
                    y = t
        else:
            with torch.no_grad():
                y = self._learning_path.targets(z, x)
        y = y.detach().reshape(n, -1).to(torch.float64)
        if y.shape[1] > 256:
            y = y[:, torch.randperm(y.shape[1], device=y.device)[:256]]
        return x, y

    def select(self, z, phi_sleep: torch.Tensor, phi_wake: torch.Tensor, x_sleep: torch.Tensor) -> Selection:
        """Choose bandwidth, ridge and path by leave-one-out error on at most ``select_max`` sleep samples."""
        n = min(self.select_max, phi_sleep.shape[0])
        median = self._median(phi_sleep, phi_wake)
        learned = self.kernel_learning is not None and self.kernel_hyperparameters == "learned"
        if self.fixed_bandwidth is not None and not 1e-6 <= self.fixed_bandwidth / median <= 1e6:
            raise ConfigError(
                f"bandwidth={self.fixed_bandwidth:.3g} is {self.fixed_bandwidth / median:.3g} times the median distance "
                f"({median:.3g}) between the kernel's inputs: every pair of points would look "
                f"{'unrelated' if self.fixed_bandwidth < median else 'identical'}. Choose a bandwidth near that distance, or "
                "leave it to the leave-one-out selection (bandwidth=None)"
            )
        if learned:
            bandwidths, ridges = [median * self.kernel_learning.bandwidth_multiplier], [self._learned_ridge()]
        else:
            bandwidths = [self.fixed_bandwidth] if self.fixed_bandwidth else [median * m for m in self.bandwidth_grid]
            ridges = [self.fixed_ridge] if self.fixed_ridge else list(self.ridge_grid)
        single_path = self._forced_path() is not None
        if len(bandwidths) == 1 and len(ridges) == 1 and single_path:
            self.exponential_family_path = self._forced_path()
            return Selection(bandwidths[0], ridges[0], math.nan, 0, multiplier=bandwidths[0] / median)
        candidates = self.selection_candidates(tree_map(lambda leaf: leaf[:n], z), x_sleep[:n])
        features = self.regressor.loo_features(phi_sleep[:n])
        # A subsample's ridge is kept absolute for all N (lambda * n / N) when exact KRR's errors
        # chose it. Not when the back-end's own random features were scored (more features than
        # points): their Gram matrix grows with N, so the same lambda keeps the same relative
        # smoothing, while lambda * n / N let the image runs at N = 5000 (M = 2000) fit noise: from
        # step 470 gradient norms of 20-420 and leave-one-out errors of 3.9-7.1 (docs/results.md).
        rescale = self.fixed_ridge is None and not learned and features is None
        prefer_fast = self.features_reduce_x and self.ef_setting == "auto"
        self.exponential_family_path, sel = select_among(phi_sleep[:n], candidates, self.kernel, bandwidths, ridges, self.center,
                                                         n_total=phi_sleep.shape[0] if rescale else None, features=features,
                                                         preferred=True if prefer_fast else None,
                                                         margin=PLAIN_PATH_MARGIN if prefer_fast else 1.0)
        if self.ef_setting == PER_PARAMETER and len(candidates) == 2:
            self.parameter_paths = self._choose_parameter_paths(tree_map(lambda leaf: leaf[:n], z), x_sleep[:n], phi_sleep[:n],
                                                                sel.bandwidth, sel.ridge / sel.ridge_scale)
        return dataclasses.replace(sel, multiplier=sel.bandwidth / median)

    def _choose_parameter_paths(self, z, x: torch.Tensor, phi: torch.Tensor, bandwidth: float, ridge: float,
                                n_directions: int | None = None) -> dict[str, bool]:
        """``{name: True (fast path) / False (plain)}``: for each parameter tensor, the path whose
        leave-one-out error of that tensor's directional derivatives is smaller at ``(bandwidth,
        ridge)`` on ``n`` sleep samples (``phi [n, D]`` their centred kernel inputs). The plain
        path's derivatives are the fast path's contracted with ``[1, S(x_n)]``, as in
        :meth:`selection_candidates`. Without double backward: ``{}`` (every tensor on the path
        chosen for all)."""
        n_directions = self.select_directions if n_directions is None else n_directions
        fast = self.paths[True]
        named = trainable_parameters(self.model)
        features = self.regressor.loo_features(phi)
        choice: dict[str, bool] = {}
        with torch.enable_grad():
            t = fast.targets(z, x)
            stats = fast.statistics(x)
            try:
                u, grads = self._target_gradients(t)
                for (name, _), g in zip(named, grads):
                    if g is None:  # not in the targets: unused by log_joint
                        continue
                    y = _directions(u, [g], n_directions).detach().to(torch.float64)  # [n, directions, q]
                    fast_error = loo_errors(phi, y, self.kernel, [bandwidth], [ridge], self.center, stats, features)[0, 0]
                    plain_error = loo_errors(phi, torch.einsum("ikq,iq->ik", y, stats), self.kernel, [bandwidth], [ridge],
                                             self.center, None, features)[0, 0]
                    choice[name] = bool(fast_error <= plain_error)
            except RuntimeError:
                return {}
        return choice

    def _mixed_paths(self) -> bool:
        """Whether the last per-parameter selection put some tensors on each path."""
        return len(set(self.parameter_paths.values())) == 2

    def _mixed_loss(self, z, x_sleep: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The surrogate loss when the parameters' paths differ: each tensor's gradient from its
        own path's surrogate (``w [N, 1 + S]``: the fast path's weights; its first column is the
        plain path's), returned as ``-sum_p p . g_p`` with ``g_p`` detached; and the value of the
        surrogate of the path chosen for all (what the history records)."""
        named = trainable_parameters(self.model)
        with _diverged_distributions("log_joint"):
            t_fast = self.paths[True].targets(z, x_sleep)
            t_plain = self.paths[False].targets(z, x_sleep)
        surrogates = {True: (t_fast * w.to(t_fast.dtype)).sum(), False: (t_plain * w[:, :1].to(t_plain.dtype)).sum()}
        loss = 0.0
        for on_fast in (True, False):
            chosen = [p for name, p in named if self.parameter_paths.get(name, self.exponential_family_path) == on_fast]
            grads = torch.autograd.grad(surrogates[on_fast], chosen, allow_unused=True, retain_graph=True) if chosen else []
            loss = loss - sum((p * g.detach()).sum() for p, g in zip(chosen, grads) if g is not None)
        if not isinstance(loss, torch.Tensor):  # no parameter reached: keep a differentiable zero
            loss = surrogates[True] * 0.0
        return loss, float(-surrogates[self.exponential_family_path].detach())

    def _forced_path(self) -> bool | None:
        """The path when it is not chosen by leave-one-out error: ``True`` (exponential family),
        ``False`` (log-joint), ``None`` (chosen). A learned kernel fixes the fast path: it is trained
        to predict the fast path's targets, functions of ``z``, while the plain path's target
        ``log p(z, x)`` needs all of ``x``. Fixed features that reduce ``x`` leave the choice open
        but weighted (:data:`PLAIN_PATH_MARGIN`, :meth:`select`): on the image model's learned and
        random projections the plain path's leave-one-out error is near 1 (it predicts nothing),
        and choosing it by error alone collapsed or stalled the generator (FID 72-139 against 5-12
        on the fast path), while hand-made summaries can serve the plain path where the fast path
        fails outright (the blowfly: 0.86-1.0 against 56-1770)."""
        if self.ef is None or self.ef_setting is False:
            return False
        if self.ef_setting == PER_PARAMETER:
            return None
        if self.ef_setting is True or self.kernel_learning is not None:
            return True
        return None

    def _median(self, phi_sleep: torch.Tensor, phi_wake: torch.Tensor) -> float:
        """The distance the bandwidth is a multiple of: with a learned kernel and at least
        :data:`DATA_MEDIAN_MIN_POINTS` wake points, the median distance among the wake (data)
        features alone (at most 200), taken after every kernel update; else the median among (at
        most ``select_max``, or 200 with a learned kernel) sleep and a quarter as many wake features.

        The data's spread moves only when the features do. The sleep samples' spread also moves
        with the model: a generator that blurs or drops modes draws its samples together, and a
        bandwidth that followed them narrowed with them, left the data further out of the
        kernel's reach and sped the collapse up (docs/results.md, "The bandwidth followed a
        collapsing model")."""
        if self.kernel_learning is not None and phi_wake.shape[0] >= DATA_MEDIAN_MIN_POINTS:
            median = median_heuristic(phi_wake, max_points=200, default=None)
            if median is not None:  # None: most data points coincide; the pooled median below
                return median
        n = min(self.select_max, phi_sleep.shape[0], 200 if self.kernel_learning is not None else phi_sleep.shape[0])
        return median_heuristic(torch.cat([phi_sleep[:n], phi_wake[: max(1, n // 4)]], 0))

    def _reach_bandwidth(self, phi_sleep: torch.Tensor, phi_wake: torch.Tensor, max_wake: int = 256) -> float:
        """The smallest bandwidth at which the median of (at most ``max_wake``) wake points has
        ``reach`` sleep samples within :data:`REACH_RADIUS` bandwidths: the median distance from
        a wake feature to its ``reach``-th nearest sleep feature, over the radius."""
        distances = torch.cdist(phi_wake[:max_wake].to(phi_sleep.dtype), phi_sleep)  # [B, N]
        kth = distances.kthvalue(self.reach, dim=1).values
        return float(kth.median()) / REACH_RADIUS

    def _learned_ridge(self) -> float:
        """The learned ``lambda`` rescaled from the kernel learner's ``n`` points to ``N`` (same absolute ridge)."""
        return self.kernel_learning.ridge * self.kernel_learning.samples / self.n_sleep

    def _due(self) -> bool:
        if self.selection is None:
            return True
        return self.select_every > 0 and self.calls % self.select_every == 0

    def _learn_kernel(self, x_sleep: torch.Tensor) -> None:
        """Initialise the feature map on its first sleep samples; update a learned kernel when due."""
        features = self.features
        if isinstance(features, nn.Module) and callable(getattr(features, "initialise", None)):
            flag = getattr(features, "initialised", None)
            if flag is not None and not bool(flag):
                if self.kernel_learning is not None:
                    # from fresh samples with their targets (a map may start at what predicts them)
                    x, y, *_ = self.kernel_targets(max(self.kernel_learning.samples, 2))
                    features.initialise(x, y)
                else:
                    features.initialise(x_sleep)
        if self.kernel_learning is not None and self.kernel_learning.due(self.calls):
            self.kernel_learning.update(self.kernel_targets)

    def prepare(self, x_wake: torch.Tensor):
        """Sleep, train the kernel if due, (re)select hyper-parameters if due, and fit the regression.

        Returns ``(z, x_sleep, phi_wake, record)``.
        """
        z, x_sleep = self.sleep()
        self._learn_kernel(x_sleep)
        phi_sleep, phi_wake = self.embed(x_sleep), self.embed(x_wake)
        if not bool(torch.isfinite(phi_sleep).all()):
            bad = int((~torch.isfinite(phi_sleep)).any(1).sum())
            raise NonFiniteError(f"{bad} of {phi_sleep.shape[0]} sleep samples x (or their features) are NaN/inf")
        centre = phi_sleep.mean(0, keepdim=True)  # for a kernel's linear part; stationary parts do not see it
        phi_sleep, phi_wake = phi_sleep - centre, phi_wake - centre
        selected = self._due()
        if selected:
            self.selection = self.select(z, phi_sleep, phi_wake, x_sleep)
        self.calls += 1
        sel = self.selection
        bandwidth, ridge = sel.bandwidth, sel.ridge
        if self.kernel_learning is not None and not selected:
            # the features moved since the selection: keep the bandwidth's ratio to their median
            # distance (recomputed once per kernel update: the features change only then)
            if self._median_at[0] != self.kernel_learning.updates:
                self._median_at = (self.kernel_learning.updates, self._median(phi_sleep, phi_wake))
            median = self._median_at[1]
            if self.kernel_hyperparameters == "learned":
                bandwidth, ridge = median * self.kernel_learning.bandwidth_multiplier, self._learned_ridge()
            elif self.fixed_bandwidth is None:
                bandwidth = median * sel.multiplier
        reach_bandwidth = self._reach_bandwidth(phi_sleep, phi_wake) if self.reach and self.fixed_bandwidth is None else 0.0
        bandwidth = max(bandwidth, reach_bandwidth)
        self.regressor.fit(phi_sleep, bandwidth, ridge)
        record = {
            "bandwidth": bandwidth,
            "reach_bandwidth": reach_bandwidth,
            "ridge": ridge,
            "jitter": self.regressor.jitter,
            "loo_error": sel.loo_error,
            "selected": selected,
            "path": self.path.name,
        }
        if self.kernel_learning is not None:
            record["kernel_error"] = self.kernel_learning.error
        return z, x_sleep, phi_wake, record

    def loss(self, x_wake: torch.Tensor):
        """Surrogate loss whose gradient is minus the ALWS estimate of ``grad mean_b log p(x*_b)``.

        ``x_wake [B, *x_shape]``. Returns ``(loss, record)``; ``record`` holds the surrogate value,
        the hyper-parameters, their LOO error and the effective number of sleep samples.
        """
        z, x_sleep, phi_wake, record = self.prepare(x_wake)
        plain_surrogate = not self._mixed_paths() and self.stein is None
        t = self.targets(z, x_sleep) if plain_surrogate else None
        with torch.no_grad():
            s = self.statistics(x_wake)
            r = s / x_wake.shape[0]
            if self.weight_mode == "krr":
                w = self.regressor.weights(phi_wake, r)
            else:
                table = self._estimand_table(z, x_sleep, s, t) if self.weight_mode == "bounded" else None
                w = self.wake_weights(phi_wake, record, table) @ r
        if self._mixed_paths():
            loss, record["loss"] = self._mixed_loss(z, x_sleep, w)
            record["path"] = "mixed"
        elif self.stein is None:
            loss = -(t * w.to(t.dtype)).sum()
            record["loss"] = float(loss.detach())
        else:
            loss, record["loss"] = self._stein_loss(z, x_sleep, w)
        a = w[:, 0]
        record["ess"] = float(a.abs().sum() ** 2 / (a * a).sum().clamp_min(1e-300))
        self._warn_if_out_of_reach(record["ess"], phi_wake)
        return loss, record

    def _stein_loss(self, z: torch.Tensor, x_sleep: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The surrogate loss with the Stein correction: minus ``sum_n w_n . T_n`` plus
        ``theta . C vec(S)`` (``C vec(S)`` detached), whose gradient is minus the corrected
        estimate; and the value of the uncorrected surrogate (what the history records)."""
        self.stein.fit(z)
        z_grad = z.detach().clone().requires_grad_(True)
        t = self.targets(z_grad, x_sleep)
        surrogate = (t * w.to(t.dtype)).sum()
        corrections = self.stein.correction(z_grad, surrogate, w[:, 0].sum())
        loss = -surrogate + sum((p * c.detach()).sum() for p, c in zip(self.stein.parameters(), corrections))
        return loss, float(-surrogate.detach())

    def _estimand_table(self, z, x_sleep: torch.Tensor, statistics: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, B]`` float64: what the weights average for each wake point, ``T_n . S(x*_b)`` (on
        the fast path ``log p(x*_b | z_n)`` up to terms constant in ``n``; on the plain path the
        sleep sample's ``log p(z_n, x_n)``). ``statistics [B, q]``; ``t [N, q]``: the targets if
        already computed (their values are used, not their graph)."""
        if t is None:
            with torch.no_grad(), _diverged_distributions("log_joint"):
                t = self._paired_path().targets(z, x_sleep)
        return t.detach().double() @ statistics.detach().double().T

    def wake_weights(self, phi_wake: torch.Tensor, record: dict | None = None, table: torch.Tensor | None = None) -> torch.Tensor:
        """``A [N, B]``: each wake point's weights over the sleep samples (columns sum to one with
        ``center=True``). With ``weights="nonnegative"`` the negative entries of the kernel ridge
        weights are cut and each column renormalised; ``record`` gets the share of weight mass
        that was negative, ``negative_weight``. With ``weights="bounded"`` each column moves from
        the kernel ridge weights toward the cut ones by the least fraction that brings its
        estimate ``sum_n A_nb table_nb`` down to ``max_n table_nb`` (``table [N, B]``, from
        :meth:`_estimand_table`); ``record`` gets the share of wake points moved,
        ``bounded_share``, and the mean fraction, ``bounded_move``."""
        eye = torch.eye(phi_wake.shape[0], dtype=torch.float64, device=phi_wake.device)
        a = self.regressor.weights(phi_wake, eye)
        if record is not None:
            record["negative_weight"] = float(a.clamp_max(0).abs().sum() / a.abs().sum().clamp_min(1e-300))
        if self.weight_mode == "krr":
            return a
        positive = a.clamp_min(0.0)
        total = positive.sum(0, keepdim=True)
        # a wake point with no positive weight at all (beyond the kernel's reach) gets uniform weights
        cut = torch.where(total > 0, positive / total.clamp_min(1e-300), torch.full_like(a, 1.0 / a.shape[0]))
        if self.weight_mode == "nonnegative":
            return cut
        if table is None or table.shape != a.shape:
            raise ValueError(f'weights="bounded" needs the [N, B] = {list(a.shape)} table of what the weights average')
        table = table.to(a.dtype)
        estimate, cut_estimate, best = (a * table).sum(0), (cut * table).sum(0), table.max(0).values
        # the estimate is linear in the fraction moved; the cut weights' estimate is at most the best
        over = estimate > best
        move = torch.where(over, (estimate - best) / (estimate - cut_estimate).clamp_min(1e-300), torch.zeros_like(estimate)).clamp(0.0, 1.0)
        if record is not None:
            record["bounded_share"] = float(over.double().mean())
            record["bounded_move"] = float(move.mean())
        return a + move * (cut - a)

    def _warn_if_out_of_reach(self, ess: float, phi_wake: torch.Tensor) -> None:
        """Warn (once) when every wake weight is the same: no data point is within the kernel's
        reach of any sleep sample, so the gradient only matches averages."""
        if self._warned_out_of_reach or ess < self.n_sleep * (1 - 1e-6):
            return
        self._warned_out_of_reach = True
        warnings.warn(
            f"every one of the {self.n_sleep} sleep samples carries the same weight (effective number {ess:.0f}): the data "
            "lie beyond the kernel's reach of the model's samples, so this gradient only matches averages. Start the model "
            "closer to the data, widen the bandwidth grid (bandwidth_grid=...) or leave reach on (reach='auto')",
            RuntimeWarning, stacklevel=3,
        )

    def per_point_gradients(self, x_wake: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
        """ALWS estimates of ``grad log p(x*_b)`` for each wake point ``x_wake [B, *x_shape]``:
        ``({name: [B, *param.shape]}, record)``."""
        z, x_sleep, phi_wake, record = self.prepare(x_wake)
        with torch.no_grad():
            s = self.statistics(x_wake)
            table = self._estimand_table(z, x_sleep, s) if self.weight_mode == "bounded" else None
            a = self.wake_weights(phi_wake, record, table)  # [N, B]
            w = a.T[:, :, None] * s[:, None, :]  # [B, N, q]
        if self.stein is not None:
            return self._stein_per_point(z, x_sleep, w, x_wake.shape[0]), record
        named = trainable_parameters(self.model)
        params = [p for _, p in named]
        if not self._mixed_paths():
            return _named_gradients(named, _batched_gradients(self.targets(z, x_sleep), params, w), (x_wake.shape[0],)), record
        record["path"] = "mixed"
        with _diverged_distributions("log_joint"):
            by_path = {True: _batched_gradients(self.paths[True].targets(z, x_sleep), params, w),
                       False: _batched_gradients(self.paths[False].targets(z, x_sleep), params, w[:, :, :1])}
        grads = [by_path[self.parameter_paths.get(name, self.exponential_family_path)][i] for i, (name, _) in enumerate(named)]
        return _named_gradients(named, grads, (x_wake.shape[0],)), record


    def _stein_per_point(self, z, x_sleep, w, batch: int) -> dict[str, torch.Tensor]:
        """Per-point Stein-corrected estimates (one backward pass per wake point)."""
        self.stein.fit(z)
        named = trainable_parameters(self.model)
        params = [p for _, p in named]
        rows = []
        for b in range(batch):
            z_grad = z.detach().clone().requires_grad_(True)
            t = self.targets(z_grad, x_sleep)
            surrogate = (t * w[b].to(t.dtype)).sum()
            corrections = self.stein.correction(z_grad, surrogate, w[b, :, 0].sum())
            grads = torch.autograd.grad(surrogate, params, allow_unused=True)
            by_name = dict(zip(self.stein.names, corrections))
            rows.append([g if g is None or name not in by_name else g - by_name[name] for (name, _), g in zip(named, grads)])
        grads = [None if rows[0][i] is None else torch.stack([row[i] for row in rows]) for i in range(len(params))]
        return _named_gradients(named, grads, (batch,))


def _integer_valued(x: torch.Tensor) -> bool:
    """Whether every number of the samples ``x`` is an integer (binary or count observations)."""
    return not x.is_floating_point() or bool((x == x.round()).all())


@contextlib.contextmanager
def _diverged_distributions(where: str):
    """Turn torch.distributions' refusal of a parameter (a scale that underflowed to 0, a NaN
    mean) inside the model's ``where`` into :class:`NonFiniteError`: the parameters have left the
    model's domain, which is a divergence of training, not a programming error."""
    try:
        yield
    except ValueError as error:
        if str(error).startswith("Expected parameter"):
            raise NonFiniteError(f"the model's {where} got invalid distribution parameters at the current values "
                                 f"(training diverged): {str(error).splitlines()[0]}") from error
        raise


def _directions(u: torch.Tensor, grads, n_directions: int) -> torch.Tensor:
    """``[n, n_directions, q]``: for random directions ``v`` over the tensors ``grads`` (from
    :meth:`ALWS._target_gradients`; ``None`` entries skipped), ``d/du (v . grads)``."""
    grads = [g for g in grads if g is not None]
    cols = []
    for _ in range(n_directions):
        s = sum((g * torch.randn_like(g)).sum() for g in grads)
        cols.append(torch.autograd.grad(s, u, retain_graph=True)[0])
    return torch.stack(cols, 1)


def _batched_gradients(t: torch.Tensor, params: list, w: torch.Tensor) -> list:
    """``[grad_p sum_nj w[b, n, j] t[n, j] for b]`` for each parameter (``None`` where unused):
    one batched backward pass over ``w [B, N, q]``, or one per row where that is unsupported."""
    w = w.to(t.dtype)
    try:
        return list(torch.autograd.grad(t, params, w, is_grads_batched=True, allow_unused=True, retain_graph=True))
    except RuntimeError:
        rows = [torch.autograd.grad(t, params, w[b], retain_graph=True, allow_unused=True) for b in range(w.shape[0])]
        return [None if rows[0][i] is None else torch.stack([row[i] for row in rows]) for i in range(len(params))]


def _named_gradients(named, grads, leading: tuple = ()) -> dict[str, torch.Tensor]:
    """``{name: gradient}`` with zeros of shape ``[*leading, *param.shape]`` for unused parameters."""
    return {
        name: torch.zeros((*leading, *p.shape), dtype=p.dtype, device=p.device) if g is None else g.detach()
        for (name, p), g in zip(named, grads)
    }


def _exponential_family_terms(model, setting):
    terms = exponential_family(model) if setting in ("auto", True, PER_PARAMETER) else None
    if setting is True and terms is None:
        raise ValueError(
            f"exponential_family=True but {type(model).__name__} lacks the hooks: define log_prior(z) and likelihood(z), "
            "or log_prior, natural_params, log_normalizer and sufficient_stats"
        )
    return terms


def gradient(
    model: nn.Module,
    x,
    n_sleep: int = 1000,
    regression: str = "auto",
    reduce: str = "mean",
    seed: int | None = None,
    **options,
) -> dict[str, torch.Tensor]:
    """ALWS estimate of the gradient of ``mean_b log p_theta(x_b)`` for every trainable parameter.

    Args:
        model: a model following the protocol (see :mod:`alws.model`).
        x: data ``[B, *x_shape]``.
        n_sleep, regression, **options: as for :class:`ALWS`.
        reduce: ``"mean"`` (gradient of the mean, shapes as the parameters) or ``"none"``
            (one gradient per data point, shapes ``[B, *param.shape]``).
        seed: if given, the sleep samples are drawn under this seed without disturbing the global
            random state.

    Returns ``{name: gradient}`` keyed as ``model.named_parameters()`` (zeros for parameters that
    ``log_joint`` does not use). The model's parameters and their ``.grad`` are left untouched.
    """
    check_choice("reduce", reduce, ["mean", "none"])
    info = check_model(model, x)
    x = check_data(x, info.x_shape, dtype=info.x_dtype).to(device=info.device)
    check_learner_options(ALWS, options)
    learner = ALWS(model, n_sleep=n_sleep, regression=regression, **options)
    named = trainable_parameters(model)
    with seeded(seed):
        if reduce == "none":
            return learner.per_point_gradients(x)[0]
        loss, _ = learner.loss(x)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return _named_gradients(named, [None if g is None else -g for g in grads])


class ALWSObjective(Objective):
    """Maximum likelihood for ``model`` with ALWS gradients, as an :class:`~alws.objective.Objective`.

    Each step's loss is :meth:`ALWS.loss` on the minibatch (plus ``penalty(model)`` when given);
    the :class:`ALWS` learner (selection, kernel learning) is checkpointed with the model.
    ``**options`` go to :class:`ALWS`.
    """

    name = "alws"
    #: the learner :meth:`prepare` builds (a subclass of :class:`ALWS` changes one piece of the step)
    learner_class: type = ALWS

    def __init__(self, model: nn.Module, n_sleep: int = 1000, penalty: Callable[[nn.Module], torch.Tensor] | None = None, **options):
        check_learner_options(self.learner_class, options)
        self.model, self.penalty = model, penalty
        self.n_sleep, self.options = n_sleep, options
        self.learner: ALWS | None = None

    def prepare(self, data) -> torch.Tensor:
        info = check_model(self.model, data)
        data = check_data(data, info.x_shape, dtype=info.x_dtype).to(device=info.device)
        self.learner = self.learner_class(self.model, n_sleep=self.n_sleep, **self.options)
        self.name = f"alws ({self.learner.backend}, N={self.n_sleep})"
        return data

    def modules(self) -> dict:
        return {"model": self.model}

    def parameters(self) -> list:
        return [p for _, p in trainable_parameters(self.model)]

    def stateful(self) -> dict:
        return {"learner": self.learner}

    def describe(self) -> dict:
        return {**self.learner.describe(), "penalty": None if self.penalty is None else getattr(self.penalty, "__qualname__", repr(self.penalty))}

    def step(self, batch: torch.Tensor, context) -> dict:
        loss, record = self.learner.loss(batch)
        if self.penalty is not None:
            extra = self.penalty(self.model)
            record["penalty"] = float(extra.detach())
            loss = loss + extra
        record["grad_norm"] = guarded_step(loss, self.optimizer, self.clip_grad_norm)
        return record


def check_learner_options(learner_class: type, options: dict) -> None:
    """Refuse keywords that ``learner_class`` does not take, naming them and the valid ones (a
    typo would otherwise surface as a ``TypeError`` only when training starts)."""
    parameters = inspect.signature(learner_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # a learner that takes any keyword checks its own
    valid = sorted(name for name, p in parameters.items() if name not in ("self", "model", "n_sleep")
                   and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        close = {name: difflib.get_close_matches(name, valid + [f.name for f in dataclasses.fields(TrainOptions)], n=1) for name in unknown}
        hint = "".join(f" (did you mean {match[0]}?)" for name, match in close.items() if match)
        hint += " (the model's device is used: move the model with model.to(device))" if "device" in unknown else ""
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}{hint}; training options: "
                          f"{', '.join(f.name for f in dataclasses.fields(TrainOptions))}; ALWS options: n_sleep, penalty, {', '.join(valid)}")


def fit(model: nn.Module | Objective, data, options: TrainOptions | None = None, **keywords) -> History:
    """Train ``model`` in place by maximum likelihood with ALWS gradients; or train any
    :class:`~alws.objective.Objective` (a baseline's, or your own) on the same loop.

    Args:
        model: a model following the protocol (see :mod:`alws.model`), or an ``Objective``.
        data: ``[M, *x_shape]`` tensor or array; moved to the model's device.
        options: a :class:`~alws.objective.TrainOptions`; or give its fields as keywords:
            ``steps`` (1000), ``batch_size`` (wake minibatch ``B``, 100), ``lr`` (1e-3),
            ``optimizer`` (``"adam"`` / ``"adamw"`` / ``"sgd"`` / ``params -> Optimizer``),
            ``checkpoint`` (file for atomic checkpoints every ``checkpoint_every`` = 100 steps),
            ``resume`` (continue from ``checkpoint`` exactly), ``seed`` (seeds every generator at
            the start), ``callbacks`` (``cb(step, record)``; raise :class:`alws.StopTraining` to
            stop), ``progress`` (bar / nothing / by default a bar on a terminal and plain lines
            otherwise), ``clip_grad_norm``, ``max_seconds`` (a wall-time budget from this call).
        **keywords: the rest go to :class:`ALWSObjective`: ``n_sleep`` (sleep samples ``N`` per
            step, 1000), ``penalty`` (``penalty(model) -> scalar`` added to the loss, e.g. minus
            a log prior over the parameters divided by the number of data points) and the options
            of :class:`ALWS` (``regression``, ``kernel``, ``features``, ``bandwidth``, ``ridge``,
            ``select_every``, ``exponential_family``, ...).

    Returns the :class:`alws.History` of per-step records: ``loss`` (the surrogate loss),
    ``loo_error``, ``bandwidth``, ``ridge``, ``ess`` (effective number of sleep samples),
    ``grad_norm`` and ``time`` (seconds).

    Raises :class:`alws.NonFiniteError` naming the step if a loss or gradient is NaN/inf (the
    parameters keep their last finite values, which are also checkpointed).
    """
    started = time.perf_counter()  # a time budget covers the set-up too
    options, rest = TrainOptions.split(options, keywords)
    if isinstance(model, Objective):
        if rest:
            raise ConfigError(f"{', '.join(rest)}: not training options; an Objective takes its own options when it is built")
        return train(model, data, options, started)
    return train(ALWSObjective(model, **rest), data, options, started)
