"""Kernel ridge regression back-ends that return wake weights, and leave-one-out selection.

Every back-end is fitted on the sleep inputs ``X [N, D]`` (float64) with a bandwidth and a ridge
``lambda`` (the system is ``K + N lambda I``), and then answers one question: for wake inputs
``X* [B, D]`` and wake statistics ``R [B, q]``, what are the weights ``W = A R [N, q]``, where
``A [N, B]`` maps sleep targets to predictions at the wake points (``f(X*) = A^T Y``)? The learner's
loss is then ``-sum(W * T(theta))`` for sleep targets ``T [N, q]``: no autograd through the solve.

With ``center=True`` (the default) the regression predicts ``mean(Y) + KRR(Y - mean(Y))``, so every
column of ``A`` sums to one: a target that is constant across samples (a log-normaliser of the
prior, say) gets its gradient exactly.

Back-ends:

- :class:`ExactKRR`: Cholesky of ``K + N lambda I``. ``O(N^3)`` time, ``O(N^2)`` memory.
- :class:`RandomFeatureRidge`: random Fourier features ``psi [N, M]``;
  ``A = Psi (Psi^T Psi + N lambda I)^-1 psi(X*)^T``. ``Psi^T Psi`` is accumulated in chunks, so
  memory is ``O(M^2 + chunk * M)`` beyond the inputs; time ``O(N M^2 + M^3)``.
- :class:`NystromRidge`: the same with Nystrom features on ``m`` inducing points drawn from the
  sleep inputs.
"""
from __future__ import annotations

import dataclasses

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from .kernels import Kernel, NystromFeatures, RandomFourierFeatures
from .linalg import cholesky_and_jitter, threads_for

__all__ = [
    "KernelRidge",
    "ExactKRR",
    "RandomFeatureRidge",
    "NystromRidge",
    "BACKENDS",
    "choose_backend",
    "check_exact_memory",
    "make_regressor",
    "loo_errors",
    "Selection",
    "select_among",
    "select_hyperparameters",
]


class KernelRidge:
    """Base class: ``fit(X, bandwidth, ridge)`` then ``weights(X*, R)``."""

    name = "base"

    def __init__(self, kernel: Kernel, center: bool = True):
        self.kernel, self.center = kernel, center
        self.x = None
        #: jitter added to the diagonal by the last ``fit`` to make its factorisation succeed
        self.jitter = 0.0

    def fit(self, x: torch.Tensor, bandwidth: float, ridge: float) -> "KernelRidge":
        """Factorise the system for sleep inputs ``x [N, D]`` (float64)."""
        raise NotImplementedError

    def _raw_weights(self, x_wake: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, x_wake: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """``W = A R [N, q]`` for wake inputs ``x_wake [B, D]`` and wake statistics ``r [B, q]``."""
        c = self._raw_weights(x_wake, r)
        if self.center:
            c = c - c.mean(0, keepdim=True) + r.sum(0, keepdim=True) / c.shape[0]
        return c

    def loo_features(self, x: torch.Tensor) -> Callable | None:
        """What :func:`loo_errors` should score for inputs like ``x [n, D]``: ``None`` (exact KRR,
        which this back-end computes or approximates closely) or ``bandwidth -> (x -> [n, M])``,
        the back-end's own features."""
        return None

    def predict(self, x_wake: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predictions ``[B, q]`` at ``x_wake [B, D]`` for sleep targets ``y [N, q]`` (``A^T Y``)."""
        eye = torch.eye(x_wake.shape[0], dtype=x_wake.dtype, device=x_wake.device)
        return self.weights(x_wake, eye).T @ y


class ExactKRR(KernelRidge):
    """Exact kernel ridge regression by one float64 Cholesky factorisation of ``K + N lambda I``."""

    name = "exact"

    def fit(self, x, bandwidth, ridge):
        self.x, self.bandwidth = x, bandwidth
        gram = self.kernel(x, x, bandwidth)
        gram.diagonal().add_(x.shape[0] * ridge)
        self.chol, self.jitter = cholesky_and_jitter(gram, f"kernel matrix K + N lambda I (N={x.shape[0]}, lambda={ridge:.3g})")
        return self

    def _raw_weights(self, x_wake, r):
        cross = self.kernel(self.x, x_wake, self.bandwidth)  # [N, B]
        if r.shape[1] > r.shape[0]:  # more statistics than wake points: solve for the B columns, then contract
            return torch.cholesky_solve(cross, self.chol) @ r
        return torch.cholesky_solve(cross @ r, self.chol)


class FeatureRidge(KernelRidge):
    """Ridge regression on an explicit feature map, accumulated over chunks of ``chunk_size`` rows."""

    def __init__(self, kernel, n_features: int = 1000, center: bool = True, chunk_size: int = 4096):
        super().__init__(kernel, center)
        self.n_features, self.chunk_size = n_features, chunk_size

    def _features(self, x, bandwidth):
        raise NotImplementedError

    def _chunks(self, x):
        return torch.split(x, self.chunk_size)

    def fit(self, x, bandwidth, ridge):
        self.x = x
        self.psi = self._features(x, bandwidth)
        m = self.psi.n_features
        gram = torch.zeros(m, m, dtype=x.dtype, device=x.device)
        for chunk in self._chunks(x):
            p = self.psi(chunk)
            gram.addmm_(p.T, p)
        gram.diagonal().add_(x.shape[0] * ridge)
        self.chol, self.jitter = cholesky_and_jitter(gram, f"feature matrix Psi^T Psi + N lambda I (M={m}, lambda={ridge:.3g})")
        return self

    def _raw_weights(self, x_wake, r):
        if r.shape[1] > r.shape[0]:  # more statistics than wake points: weights for the B columns, then contract
            v = torch.cholesky_solve(self.psi(x_wake).T, self.chol)  # [M, B]
            return torch.cat([self.psi(chunk) @ v for chunk in self._chunks(self.x)], 0) @ r
        v = torch.cholesky_solve(self.psi(x_wake).T @ r, self.chol)  # [M, q]
        return torch.cat([self.psi(chunk) @ v for chunk in self._chunks(self.x)], 0)


class RandomFeatureRidge(FeatureRidge):
    """Ridge regression on random Fourier features (frequencies drawn once per input dimension)."""

    name = "rff"

    def __init__(self, kernel, n_features=1000, center=True, chunk_size=4096):
        super().__init__(kernel, n_features, center, chunk_size)
        self.rff = None

    def _features(self, x, bandwidth):
        if self.rff is None or self.rff.base.shape[0] != x.shape[1]:
            self.rff = RandomFourierFeatures(self.kernel, x.shape[1], self.n_features, x.dtype, x.device)
        elif self.rff.base.device != x.device or self.rff.base.dtype != x.dtype:
            # the same frequencies on the inputs' device (a checkpoint is loaded on the CPU)
            self.rff.base = self.rff.base.to(device=x.device, dtype=x.dtype)
        return self.rff.set_bandwidth(bandwidth)

    def loo_features(self, x):
        """The random features themselves when there are more of them (``M``) than points to
        score (``n``): then their regression can interpolate those points and, at a small ridge,
        is far noisier than exact KRR's (measured: an image run, M = 1000, n = 500, chose a
        ridge that exact KRR scored well and the random-feature gradients grew 50-fold). With
        ``M <= n`` they are a low-rank smoother and exact KRR's errors (``None``) chose better
        on Experiment I (M = 300; scoring the features instead raised the gradient error at
        N = 3000, sigma_x = 0.1, from 0.25 to 0.37). A ridge chosen on these features is used
        as chosen for all N (the learner rescales only exact KRR's choice)."""
        if self.n_features <= x.shape[0]:
            return None
        return lambda bandwidth: self._features(x, bandwidth)

    def state_dict(self) -> dict:
        return {"base": None if self.rff is None else self.rff.base.cpu()}

    def load_state_dict(self, state: dict) -> None:
        base = state.get("base")
        if base is not None:
            self.rff = RandomFourierFeatures(self.kernel, base.shape[0], 2 * base.shape[1], base.dtype, base=base)


class NystromRidge(FeatureRidge):
    """Ridge regression on Nystrom features with ``n_features`` inducing points drawn from the sleep inputs."""

    name = "nystrom"

    def _features(self, x, bandwidth):
        m = min(self.n_features, x.shape[0])
        idx = torch.randperm(x.shape[0], device=x.device)[:m]
        return NystromFeatures(self.kernel, x[idx], bandwidth)


BACKENDS = {"exact": ExactKRR, "rff": RandomFeatureRidge, "nystrom": NystromRidge}

#: ``regression="auto"`` uses exact KRR up to this many sleep samples (memory permitting).
AUTO_EXACT_MAX = 4096


def _free_memory_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def choose_backend(n: int, device: torch.device | str = "cpu") -> str:
    """``"exact"`` when ``n <= AUTO_EXACT_MAX`` and three ``n x n`` float64 matrices fit in half the
    free memory of ``device``; otherwise ``"rff"``."""
    need = 3 * 8 * n * n
    if n <= AUTO_EXACT_MAX and need < 0.5 * _free_memory_bytes(torch.device(device)):
        return "exact"
    return "rff"


def check_exact_memory(n: int, device: torch.device | str = "cpu") -> None:
    """Refuse exact regression on ``n`` sleep samples when its ``n x n`` float64 matrices (three of
    them at once) do not fit in the free memory of ``device``, before anything is allocated."""
    need = 3 * 8 * n * n
    free = _free_memory_bytes(torch.device(device))
    if need > free:
        from .errors import ConfigError

        raise ConfigError(
            f"regression='exact' with n_sleep={n} needs about {need / 2**30:.1f} GiB for its {n} x {n} kernel matrices, "
            f"more than the {free / 2**30:.1f} GiB free on {device}; use regression='rff' (memory O(M^2) for M random "
            "features) or 'nystrom', or fewer sleep samples"
        )


def make_regressor(name: str, kernel: Kernel, n_features: int = 1000, center: bool = True, chunk_size: int = 4096) -> KernelRidge:
    """A back-end by name (``exact``, ``rff`` or ``nystrom``)."""
    if name == "exact":
        return ExactKRR(kernel, center)
    return BACKENDS[name](kernel, n_features, center, chunk_size)


def loo_errors(x: torch.Tensor, y: torch.Tensor, kernel: Kernel, bandwidths, ridges, center: bool = True, statistics: torch.Tensor | None = None,
               features: Callable | None = None) -> torch.Tensor:
    """Closed-form leave-one-out error of exact KRR for every (bandwidth, ridge) pair.

    For ``G = K + n lambda I`` the LOO residual of sample ``i`` is ``[G^-1 y]_i / [G^-1]_ii``; one
    eigendecomposition of ``K`` per bandwidth serves every ridge. With ``features`` (``bandwidth ->
    map x -> [n, M]``, e.g. a random-feature back-end's) ``K`` is ``Psi Psi^T`` of those features:
    the errors of the ridge regression that back-end fits (one SVD of ``Psi`` per bandwidth), which
    at small ridges can be far larger than exact KRR's.

    Args:
        x: inputs ``[n, D]``.
        y: targets ``[n, k]`` (``k`` separate regressions), or ``[n, k, q]`` together with
            ``statistics [n, q]``: then each of the ``k`` quantities of interest is
            ``sum_j y[i, :, j] * statistics[i, j]`` and its LOO residual is the residuals of the ``q``
            regressions contracted with ``statistics[i]`` (how the exponential-family path predicts).

    Returns ``[len(bandwidths), len(ridges)]``: the mean squared LOO residual of each quantity
    divided by its variance (1 = no better than predicting its mean), averaged over the quantities
    with non-zero variance.
    """
    n = x.shape[0]
    if y.dim() == 2:
        y, statistics = y[:, :, None], None
    q = y.shape[2]
    truth = y[:, :, 0] if statistics is None else torch.einsum("ikq,iq->ik", y, statistics)
    var = truth.var(0, unbiased=False)
    keep = var > 1e-12 * var.max().clamp_min(1e-300)
    y, var = y[:, keep], var[keep]
    lam = [float(r) for r in ridges]
    out = torch.zeros(len(bandwidths), len(lam), dtype=x.dtype, device=x.device)
    if y.shape[1] == 0:
        return out
    flat = y.reshape(n, -1)
    flat = flat - flat.mean(0, keepdim=True) if center else flat
    for i, bandwidth in enumerate(bandwidths):
        with threads_for(n if x.device.type == "cpu" else 10**9, "eigh"):
            if features is None:
                s, u = torch.linalg.eigh(kernel(x, x, bandwidth))
            else:  # K = Psi Psi^T: its eigenvectors are Psi's left singular vectors (all n of them)
                u, singular, _ = torch.linalg.svd(features(bandwidth)(x).to(x.dtype), full_matrices=True)
                s = torch.zeros(n, dtype=x.dtype, device=x.device)
                s[: singular.shape[0]] = singular**2
        s = s.clamp_min(0.0)
        uy = u.T @ flat  # [n, k q]
        u2 = u * u
        inverses = [1.0 / (s + n * ridge) for ridge in lam]
        if statistics is None or q <= 2:
            for j, inv in enumerate(inverses):
                alpha = u @ (inv[:, None] * uy)  # G^-1 y
                resid = (alpha / (u2 @ inv)[:, None]).reshape(n, -1, q)
                resid = resid[:, :, 0] if statistics is None else torch.einsum("ikq,iq->ik", resid, statistics)
                out[i, j] = ((resid**2).mean(0) / var).mean()
        else:
            # contract before the ridge loop: [G^-1 Y_k]_i . s_i = sum_m u_im inv_m C_k[m, i] with
            # C_k = (U^T Y_k) S^T, so each ridge costs n^2 per quantity instead of n^2 q
            stats = statistics.to(flat.dtype)
            squared = torch.zeros(len(lam), y.shape[1], dtype=flat.dtype, device=flat.device)
            for k in range(y.shape[1]):
                contracted = uy[:, k * q:(k + 1) * q] @ stats.T  # [n (eigen), n (points)]
                for j, inv in enumerate(inverses):
                    resid = ((u * inv) * contracted.T).sum(1) / (u2 @ inv)
                    squared[j, k] = resid.pow(2).mean()
            out[i] = (squared / var).mean(1)
    return out


@dataclass(frozen=True)
class Selection:
    """Chosen hyper-parameters and their LOO error (relative, see :func:`loo_errors`).

    ``grid`` holds every ``(bandwidth, ridge)`` tried on the ``n_used`` samples and its error;
    ``ridge`` is the one to use on all ``N`` sleep samples: the grid's winner times
    ``ridge_scale`` (``n_used / N`` when a subsample chose it, so that the absolute ridge
    ``n lambda`` is kept). Immutable: the learner derives a new one with :func:`dataclasses.replace`.
    """

    bandwidth: float
    ridge: float
    loo_error: float
    n_used: int
    grid: dict = field(default_factory=dict)
    #: the bandwidth over the median distance it was chosen at (set by the learner)
    multiplier: float = math.nan
    #: ``ridge`` over the grid's winning ridge
    ridge_scale: float = 1.0


def select_hyperparameters(x, y, kernel, bandwidths, ridges, center=True, statistics=None, features=None) -> Selection:
    """The (bandwidth, ridge) pair of the grid with the smallest LOO error on ``(x, y)`` (see
    :func:`loo_errors` for ``features``)."""
    errors = loo_errors(x, y, kernel, bandwidths, ridges, center, statistics, features)
    errors = torch.nan_to_num(errors, nan=math.inf)
    flat = int(torch.argmin(errors))
    i, j = divmod(flat, errors.shape[1])
    grid = {"bandwidths": [float(b) for b in bandwidths], "ridges": [float(r) for r in ridges], "loo_errors": errors.tolist()}
    return Selection(float(bandwidths[i]), float(list(ridges)[j]), float(errors[i, j]), x.shape[0], grid)


def select_among(x: torch.Tensor, candidates, kernel, bandwidths, ridges, center: bool = True, n_total: int | None = None,
                 features: Callable | None = None, preferred=None, margin: float = 1.0):
    """Leave-one-out selection over several regression problems on the same inputs ``x [n, D]``.

    ``candidates``: ``[(key, y, statistics)]`` (see :func:`loo_errors` for ``y`` and
    ``statistics``), e.g. one per target path. Returns ``(key, selection)`` of the candidate and
    ``(bandwidth, ridge)`` with the smallest error. With ``n_total > n`` (the grid was searched on a
    subsample of ``n`` of ``n_total`` points) the ridge is rescaled by ``n / n_total``: the absolute
    ridge ``n lambda`` is kept, so ``lambda`` shrinks as ``N`` grows (a ``lambda`` tuned on ``n``
    points over-smooths at ``N > n``). With ``preferred`` (a key), another candidate wins only with
    an error below ``margin`` times the preferred candidate's (``0 < margin <= 1``).
    """
    if not 0.0 < margin <= 1.0:
        raise ValueError(f"margin must lie in (0, 1], got {margin}")
    scored = [(key, select_hyperparameters(x, y, kernel, bandwidths, ridges, center, statistics, features))
              for key, y, statistics in candidates]
    if not scored:
        raise ValueError("select_among needs at least one candidate")
    handicap = {key: (1.0 if preferred is None or key == preferred else 1.0 / margin) for key, _ in scored}
    key, selection = min(scored, key=lambda item: item[1].loo_error * handicap[item[0]])
    if n_total is not None and n_total > x.shape[0]:
        scale = x.shape[0] / n_total
        selection = dataclasses.replace(selection, ridge=selection.ridge * scale, ridge_scale=scale)
    return key, selection
