"""Factor analysis / probabilistic PCA: the reference model with an exact marginal likelihood."""
from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

from ..model import LatentVariableModel

__all__ = ["LinearGaussian"]


class LinearGaussian(LatentVariableModel):
    """Factor analysis / probabilistic PCA: ``z ~ N(0, I_k)``, ``x | z ~ N(W z + b, diag(sigma^2))``.

    Parameters: ``weight [D, k]``, ``bias [D]``, ``log_sigma [D]`` (or ``[1]`` if ``shared_noise``).
    The marginal ``p(x) = N(b, W W^T + diag(sigma^2))`` is exact (:meth:`log_marginal`), which makes
    this the model on which estimated gradients and likelihoods are checked. The likelihood is a
    ``Normal``, so the exponential-family fast path applies.
    """

    def __init__(self, x_dim: int, z_dim: int, sigma: float = 1.0, shared_noise: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(x_dim, z_dim) / math.sqrt(z_dim))
        self.bias = nn.Parameter(torch.zeros(x_dim))
        self.log_sigma = nn.Parameter(torch.full((1 if shared_noise else x_dim,), math.log(sigma)))
        self.z_dim = z_dim

    def sample(self, n: int):
        z = torch.randn(n, self.z_dim, device=self.weight.device, dtype=self.weight.dtype)
        return z, self.likelihood(z).sample()

    def prior(self, n: int) -> D.Distribution:
        """``N(0, I_k)`` for ``n`` latents: batch shape ``[n]``, event shape ``[k]``."""
        zeros = torch.zeros(n, self.z_dim, device=self.weight.device, dtype=self.weight.dtype)
        return D.Independent(D.Normal(zeros, 1.0), 1)

    def log_prior(self, z):
        return self.prior(z.shape[0]).log_prob(z)

    def likelihood(self, z):
        return D.Normal(z @ self.weight.T + self.bias, self.log_sigma.exp().expand(self.bias.shape))

    def rsample(self, n: int) -> torch.Tensor:
        """``x [n, D]`` differentiable in the parameters (reparameterised), for adversarial training."""
        z = torch.randn(n, self.z_dim, device=self.weight.device, dtype=self.weight.dtype)
        return self.likelihood(z).rsample()

    def marginal(self) -> D.MultivariateNormal:
        """``p(x)`` as a distribution."""
        cov = self.weight @ self.weight.T + torch.diag(self.log_sigma.exp().expand(self.bias.shape) ** 2)
        return D.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``, shape ``[n]``."""
        return self.marginal().log_prob(x)
