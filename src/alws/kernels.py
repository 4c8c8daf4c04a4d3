"""Kernels on vectors and the feature maps that approximate them.

Inputs are matrices ``[n, D]`` (flatten samples first, or pass them through a feature map).
Squared distances are formed as ``|x|^2 + |y|^2 - 2 x.y`` with one matmul and clamped at 0, so no
``[n, m, D]`` difference tensor is ever built. The bandwidth (length scale) ``sigma`` is passed
per call, because hyper-parameter selection changes it while the kernel family stays fixed.
"""
from __future__ import annotations

import math

import torch

from .linalg import cholesky_with_jitter

__all__ = [
    "squared_distances",
    "median_heuristic",
    "Kernel",
    "GaussianKernel",
    "MaternKernel",
    "RandomFourierFeatures",
    "NystromFeatures",
    "KERNELS",
    "make_kernel",
]


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``[n, m]`` between rows of ``x [n, D]`` and ``y [m, D]``."""
    x2 = (x * x).sum(1, keepdim=True)
    y2 = (y * y).sum(1, keepdim=True)
    return (x2 + y2.T - 2.0 * x @ y.T).clamp_min_(0.0)


def median_heuristic(x: torch.Tensor, max_points: int = 1000, default: float | None = 1.0) -> float | None:
    """Median pairwise Euclidean distance among (at most ``max_points`` evenly spaced) rows of ``x``.

    Returns ``default`` (1.0, so that a bandwidth is always positive) if the median is zero (most
    points coincide) or not finite.
    """
    if x.shape[0] > max_points:
        x = x[torch.linspace(0, x.shape[0] - 1, max_points, device=x.device).long()]
    d2 = squared_distances(x, x)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1, device=x.device)
    d = d2[iu[0], iu[1]].sqrt()
    med = float(d.median()) if d.numel() else 0.0
    return med if med > 0 and math.isfinite(med) else default


class Kernel:
    """A stationary kernel ``k(x, y) = kappa(|x - y| / sigma)`` with ``kappa(0) = 1``, plus an
    optional linear part: ``k(x, y) + linear * x.y / sigma^2``.

    The linear part (``linear > 0``, e.g. ``make_kernel("gaussian+linear")``) puts every linear
    function of the inputs in the regression's reach at the cost of one ridge penalty, so the
    linear part of ``E[t | x]`` is fitted exactly (most of the posterior mean in near-linear
    models: factor models, ICA at low noise). It expects centred inputs; :class:`alws.ALWS`
    centres its kernel inputs on the sleep samples' mean.
    """

    name = "kernel"
    #: Weight of the linear part (0: none).
    linear: float = 0.0

    def from_squared_distances(self, d2: torch.Tensor, bandwidth: float) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> torch.Tensor:
        """Gram matrix ``[n, m]``."""
        gram = self.from_squared_distances(squared_distances(x, y), bandwidth)
        if self.linear:
            gram = gram + (x @ y.T) * self.linear / bandwidth / bandwidth
        return gram

    def with_linear(self, weight: float) -> "Kernel":
        """This kernel with a linear part of weight ``weight`` (returns ``self``)."""
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"the linear part's weight must be a finite number >= 0, got {weight!r}")
        self.linear = float(weight)
        return self

    def _suffix(self) -> str:
        return f"+linear({self.linear:g})" if self.linear else ""

    def sample_frequencies(self, n: int, dim: int, dtype, device) -> torch.Tensor:
        """``[dim, n]`` frequencies from the kernel's spectral density at bandwidth 1 (Bochner)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(){self._suffix()}"


class GaussianKernel(Kernel):
    """``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))``."""

    name = "gaussian"

    def from_squared_distances(self, d2, bandwidth):
        return torch.exp(d2 * -0.5 / bandwidth / bandwidth)  # two divisions: no overflow or underflow of bandwidth**2

    def sample_frequencies(self, n, dim, dtype, device):
        return torch.randn(dim, n, dtype=dtype, device=device)


class MaternKernel(Kernel):
    """Matern kernel with smoothness ``nu`` in {0.5, 1.5, 2.5} and length scale ``sigma``.

    Distances enter through ``sqrt(clamp(d2, min=tiny))``, so gradients stay finite at 0.
    """

    name = "matern"

    def __init__(self, nu: float = 2.5):
        if nu not in (0.5, 1.5, 2.5):
            raise ValueError(f"MaternKernel supports nu in (0.5, 1.5, 2.5), got {nu!r}")
        self.nu = nu

    def from_squared_distances(self, d2, bandwidth):
        r = d2.clamp_min(1e-30).sqrt() * (math.sqrt(2 * self.nu) / bandwidth)
        if self.nu == 0.5:
            return torch.exp(-r)
        if self.nu == 1.5:
            return (1 + r) * torch.exp(-r)
        return (1 + r + r * r / 3) * torch.exp(-r)

    def sample_frequencies(self, n, dim, dtype, device):
        # Spectral density: multivariate Student-t with 2 nu degrees of freedom.
        g = torch.randn(dim, n, dtype=dtype, device=device)
        u = torch.distributions.Chi2(torch.tensor(2 * self.nu, dtype=dtype, device=device)).sample((n,))
        return g * torch.sqrt(2 * self.nu / u)

    def __repr__(self):
        return f"MaternKernel(nu={self.nu}){self._suffix()}"


KERNELS = {"gaussian": GaussianKernel, "matern": MaternKernel}


def make_kernel(kernel) -> Kernel:
    """A :class:`Kernel` from an instance or a name in :data:`KERNELS`, optionally followed by
    ``+linear`` for a linear part of weight 1 (``"gaussian+linear"``, ``"matern+linear"``)."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str):
        base, plus, extra = kernel.partition("+")
        if base in KERNELS and (not plus or extra == "linear"):
            return KERNELS[base]().with_linear(1.0 if plus else 0.0)
    valid = [*KERNELS, *(f"{name}+linear" for name in KERNELS)]
    raise ValueError(f"unknown kernel {kernel!r}; valid: {', '.join(valid)} or a Kernel instance")


class RandomFourierFeatures:
    """Random Fourier features ``psi(x) [n, M]`` with ``psi(x).psi(y) ~ k(x, y)`` (Rahimi & Recht).

    Uses ``M/2`` frequencies ``omega ~ spectral density / sigma`` and the pair ``cos, sin`` for each
    (lower variance than random phases). The unit-bandwidth frequencies are drawn once, so a change
    of bandwidth rescales them instead of drawing anew. A kernel with a linear part adds the
    ``dim`` exact features ``sqrt(linear) x / sigma``.
    """

    def __init__(self, kernel: Kernel, dim: int, n_features: int, dtype=torch.float64, device=None, base=None):
        self.linear = kernel.linear
        self.n_frequencies = max(1, n_features // 2)
        if base is None:
            base = kernel.sample_frequencies(self.n_frequencies, dim, dtype, device)
        elif tuple(base.shape) != (dim, self.n_frequencies):
            raise ValueError(f"base frequencies must have shape ({dim}, {self.n_frequencies}), got {tuple(base.shape)}")
        self.base = base.to(dtype=dtype, device=device)
        self.bandwidth = 1.0

    @property
    def n_features(self) -> int:
        return 2 * self.n_frequencies + (self.base.shape[0] if self.linear else 0)

    def set_bandwidth(self, bandwidth: float) -> "RandomFourierFeatures":
        self.bandwidth = bandwidth
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        proj = x @ (self.base / self.bandwidth)
        parts = [torch.cos(proj) / math.sqrt(self.n_frequencies), torch.sin(proj) / math.sqrt(self.n_frequencies)]
        if self.linear:
            parts.append(x * (math.sqrt(self.linear) / self.bandwidth))
        return torch.cat(parts, 1)


class NystromFeatures:
    """Nystrom features ``psi(x) = k(x, Z) L^-T`` with ``L L^T = k(Z, Z)``, for inducing points ``Z [m, D]``.

    ``psi(x).psi(y) = k(x, Z) k(Z, Z)^-1 k(Z, y)``: the Nystrom approximation of ``k``.
    """

    def __init__(self, kernel: Kernel, inducing: torch.Tensor, bandwidth: float):
        self.kernel, self.inducing, self.bandwidth = kernel, inducing, bandwidth
        self.chol = cholesky_with_jitter(kernel(inducing, inducing, bandwidth), "Nystrom inducing-point kernel matrix")

    @property
    def n_features(self) -> int:
        return self.inducing.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        kxz = self.kernel(x, self.inducing, self.bandwidth)
        return torch.linalg.solve_triangular(self.chol, kxz.T, upper=False).T
