"""Image generators as latent-variable models: ``z ~ N(0, I)``, pixels from an MLP or DCGAN generator."""
from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

from ..model import LatentVariableModel

__all__ = ["ImageModel", "MLPGenerator", "DCGANGenerator"]


class MLPGenerator(nn.Module):
    """``z [n, d] -> [n, C, H, W]``: two hidden layers (``hidden``, ``2 * hidden``, LeakyReLU)."""

    def __init__(self, latent_dim: int, shape: tuple, hidden: int = 256):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(2 * hidden, math.prod(self.shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[0], *self.shape)


class DCGANGenerator(nn.Module):
    """DCGAN-style ``z [n, d] -> [n, C, H, W]`` for ``H, W`` divisible by 4: a linear layer to
    ``2 * width`` maps of ``H/4 x W/4``, then two stride-2 transposed convolutions (GroupNorm and
    ReLU between: unlike BatchNorm, the same function of each ``z`` whatever the batch, which
    sleep samples and the log-joint need). Meant for a GPU; on a CPU the MLP is faster."""

    def __init__(self, latent_dim: int, shape: tuple, width: int = 64):
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"the DCGAN generator needs image sides divisible by 4, got {h}x{w}")
        self.shape, self.start = tuple(shape), (2 * width, h // 4, w // 4)
        self.project = nn.Linear(latent_dim, math.prod(self.start))
        self.net = nn.Sequential(
            nn.GroupNorm(8, 2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.GroupNorm(8, width), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).reshape(z.shape[0], *self.start))


class ImageModel(LatentVariableModel):
    """``z ~ N(0, I_d)``, ``x [C, H, W] | z ~ Bernoulli(logits = G(z))`` (``likelihood="bernoulli"``)
    or ``N(G(z), sigma^2)`` with one learned ``sigma`` (``"gaussian"``); ``G`` an
    :class:`MLPGenerator` or :class:`DCGANGenerator`. Both likelihoods take the exponential-family
    fast path. ``rsample(n)`` gives the noise-free images (probabilities or means),
    differentiable in the parameters (for WGAN-GP).

    ``init_scale`` multiplies the generator's last layer at initialisation (weights only). With
    PyTorch's default initialisation the MLP's outputs vary by about 0.2 across ``z``, so a
    Bernoulli image hardly depends on ``z``: ALWS's regression of the targets on ``x`` then sees no
    signal and its gradient only matches the mean image (docs/results.md, Experiment VI).

    ``mean_range=(low, high)`` bounds a Gaussian likelihood's mean to that interval,
    ``low + (high - low) sigmoid(G(z))`` (the pixels' range, as the method's authors bounded theirs
    with ``tanh`` for data in ``[-1, 1]``); ``None`` leaves it unbounded, ``G(z)``."""

    def __init__(self, shape: tuple, latent_dim: int = 16, likelihood: str = "gaussian", generator: str = "mlp", hidden: int = 256,
                 sigma: float = 0.2, init_scale: float = 1.0, mean_range: tuple[float, float] | None = None):
        super().__init__()
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        if generator not in ("mlp", "dcgan"):
            raise ValueError(f"generator must be 'mlp' or 'dcgan', got {generator!r}")
        if mean_range is not None:
            low, high = (float(v) for v in mean_range)
            if likelihood != "gaussian":
                raise ValueError("mean_range bounds a Gaussian likelihood's mean; a Bernoulli mean is already in (0, 1)")
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"mean_range must be two finite numbers low < high, got {mean_range!r}")
            mean_range = (low, high)
        self.mean_range = mean_range
        self.shape, self.latent_dim, self.kind = tuple(shape), latent_dim, likelihood
        self.generator = MLPGenerator(latent_dim, shape, hidden) if generator == "mlp" else DCGANGenerator(latent_dim, shape)
        if init_scale != 1.0:
            last = [m for m in self.generator.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
            with torch.no_grad():
                last.weight.mul_(init_scale)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))

    def _device(self):
        return next(self.parameters()).device

    def prior(self, n: int) -> D.Distribution:
        zero = torch.zeros(n, self.latent_dim, device=self._device())
        return D.Independent(D.Normal(zero, torch.ones_like(zero)), 1)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior(z.shape[0]).log_prob(z)

    def _gaussian_mean(self, out: torch.Tensor) -> torch.Tensor:
        if self.mean_range is None:
            return out
        low, high = self.mean_range
        return low + (high - low) * torch.sigmoid(out)

    def likelihood(self, z: torch.Tensor) -> D.Distribution:
        out = self.generator(z)
        if self.kind == "bernoulli":
            return D.Independent(D.Bernoulli(logits=out), 3)
        return D.Independent(D.Normal(self._gaussian_mean(out), self.log_sigma.exp()), 3)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        out = self.generator(z)
        return torch.sigmoid(out) if self.kind == "bernoulli" else self._gaussian_mean(out)

    def rsample(self, n: int) -> torch.Tensor:
        return self.mean_image(self.prior(n).sample())

    def sample(self, n: int):
        with torch.no_grad():
            z = self.prior(n).sample()
            return z, self.likelihood(z).sample()
