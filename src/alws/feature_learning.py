"""Kernel feature maps for high-dimensional data such as images (``features=`` of :class:`alws.ALWS`).

- :class:`RandomProjection`: a fixed Gaussian projection of the flattened input to ``dim``
  numbers (seeded; no training).
- :class:`AdaptiveFeatures`: an MLP ``x -> dim`` numbers trained, between ALWS steps, to make the
  kernel regression accurate: on fresh *sleep* samples of the model (never the real data), it
  fits kernel ridge regression of the regression targets on one half and minimises the
  standardised squared error of its predictions on the other half (:meth:`update`). The targets
  are the fast path's ``[log p(z) - Phi(z), eta(z)]`` when the model has the hooks, else ``z``
  (a tensor latent), else ``log p(z, x)``.

Both are ``nn.Module``; ALWS evaluates them without gradients and in eval mode.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .model import exponential_family

__all__ = ["RandomProjection", "AdaptiveFeatures"]


class RandomProjection(nn.Module):
    """``x [n, *shape] -> x_flat @ P / sqrt(D)`` with a fixed seeded Gaussian ``P [D, dim]``."""

    def __init__(self, in_features: int, dim: int = 64, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(in_features, dim, generator=generator) / math.sqrt(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).to(self.projection.dtype) @ self.projection


class AdaptiveFeatures(nn.Module):
    """An MLP ``x [n, *shape] -> [n, dim]`` (``in_features -> hidden -> dim``, tanh) trained by
    :meth:`update` to minimise held-out kernel-regression error on the model's sleep samples."""

    def __init__(self, in_features: int, dim: int = 32, hidden: int = 256, lr: float = 1e-3, seed: int = 0):
        super().__init__()
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        torch.set_rng_state(state)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.history: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1).to(self.net[0].weight.dtype))

    def _targets(self, model: nn.Module, z, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            terms = exponential_family(model)
            if terms is not None:
                t = terms.targets(z)
            elif isinstance(z, torch.Tensor) and z.is_floating_point():
                t = z.reshape(z.shape[0], -1)
            else:
                t = model.log_joint(z, x).reshape(-1, 1)
            t = t.double()
            return (t - t.mean(0)) / t.std(0).clamp_min(1e-8)

    def validation_error(self, model: nn.Module, n: int = 1000, ridge: float = 1e-3) -> torch.Tensor:
        """Mean squared error (standardised targets) of kernel ridge regression fitted on ``n``
        sleep samples, predicting another ``n``: differentiable in the feature network."""
        z, x = model.sample(2 * n)
        t = self._targets(model, z, x)
        phi = self.forward(x).double()
        a, b = phi[:n], phi[n:]
        sq = torch.cdist(a, a) ** 2
        bandwidth2 = sq.detach().median().clamp_min(1e-12)  # median heuristic, fixed within a step
        K = torch.exp(-sq / (2 * bandwidth2))
        k = torch.exp(-(torch.cdist(b, a) ** 2) / (2 * bandwidth2))
        L = torch.linalg.cholesky(K + n * ridge * torch.eye(n, dtype=K.dtype, device=K.device))
        weights = torch.cholesky_solve(t[:n], L)
        return ((k @ weights - t[n:]) ** 2).mean()

    def update(self, model: nn.Module, steps: int = 5, n: int = 500) -> float:
        """``steps`` Adam steps on :meth:`validation_error`; returns the last error."""
        self.train()
        for _ in range(steps):
            loss = self.validation_error(model, n)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.history.append(float(loss.detach()))
        self.eval()
        return self.history[-1]
