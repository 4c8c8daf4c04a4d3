"""Distances for learned models: between mixing matrices (Amari) and between samples (MMD)."""
from __future__ import annotations

import torch

from ..kernels import GaussianKernel, median_heuristic

__all__ = ["amari_distance", "mmd"]


def amari_distance(estimate: torch.Tensor, truth: torch.Tensor) -> float:
    """Normalised Amari distance between mixing matrices ``[D, K]`` (0 iff equal up to
    permutation and scaling of columns; at most 1).

    With ``P = pinv(truth) @ estimate`` (``[K, K]``), it is the mean over rows and columns of
    ``sum_j |P_ij| / max_j |P_ij| - 1``, divided by ``2 (K - 1)``.
    """
    p = (torch.linalg.pinv(truth.double()) @ estimate.double()).abs()
    k = p.shape[0]
    if k == 1:
        return 0.0
    rows = (p.sum(1) / p.max(1).values - 1).sum()
    cols = (p.sum(0) / p.max(0).values - 1).sum()
    return float((rows + cols) / (2 * k * (k - 1)))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None, unbiased: bool = True) -> float:
    """Squared maximum mean discrepancy between samples ``x [n, ...]`` and ``y [m, ...]`` with a
    Gaussian kernel (bandwidth: median heuristic on the pooled samples unless given).

    ``unbiased=True`` gives the U-statistic (mean 0 when both come from one distribution; it can
    be slightly negative); ``False`` the V-statistic (exactly 0 for identical sets).
    """
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    if bandwidth is None:
        bandwidth = median_heuristic(torch.cat([x, y]))
    k = GaussianKernel()
    kxx, kyy, kxy = k(x, x, bandwidth), k(y, y, bandwidth), k(x, y, bandwidth)
    n, m = x.shape[0], y.shape[0]
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least 2 samples in each set")
        return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean())
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
