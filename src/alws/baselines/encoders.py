"""Encoders (amortised posteriors) for the baselines."""
from __future__ import annotations

import torch
from torch import distributions as D
from torch import nn

from ..errors import ConfigError, ModelProtocolError

__all__ = ["MLPEncoder", "ConvEncoder", "FlowEncoder", "SemiImplicitEncoder", "Critic", "FAMILIES", "make_encoder", "check_encoder"]

#: Reparameterisable families for the encoder's output.
FAMILIES = {"normal": D.Normal, "laplace": D.Laplace}


class MLPEncoder(nn.Module):
    """``x [B, ...] -> q(z | x)``: an MLP (``x_dim -> hidden -> hidden -> 2 z_dim``) giving the
    location and log-scale of a factorised Normal or Laplace over ``z [B, z_dim]``."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 64, family: str = "normal"):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown encoder family {family!r}; valid: {', '.join(FAMILIES)}")
        self.family, self.z_dim = family, z_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x: torch.Tensor) -> D.Distribution:
        out = self.net(x.reshape(x.shape[0], -1).to(self.net[0].weight.dtype))
        loc, log_scale = out.split(self.z_dim, -1)
        return D.Independent(FAMILIES[self.family](loc, log_scale.clamp(-8, 5).exp()), 1)


class ConvEncoder(nn.Module):
    """``x [B, C, H, W]`` (or ``[B, H, W]``) ``-> q(z | x)``: two stride-2 convolutions, then a
    linear layer to the location and log-scale of a factorised Normal or Laplace over ``z``."""

    def __init__(self, image_shape: tuple, z_dim: int, channels: int = 32, family: str = "normal"):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown encoder family {family!r}; valid: {', '.join(FAMILIES)}")
        self.image_shape = tuple(image_shape) if len(image_shape) == 3 else (1, *image_shape)
        self.family, self.z_dim = family, z_dim
        c, h, w = self.image_shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten()
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, c, h, w)).shape[1]
        self.head = nn.Linear(flat, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> D.Distribution:
        out = self.head(self.conv(x.reshape(x.shape[0], *self.image_shape).to(self.head.weight.dtype)))
        loc, log_scale = out.split(self.z_dim, -1)
        return D.Independent(FAMILIES[self.family](loc, log_scale.clamp(-8, 5).exp()), 1)


class FlowEncoder(nn.Module):
    """An encoder followed by ``n_flows`` normalising-flow layers (Pyro's planar flows, shared
    across data points): ``q(z | x) = (f_K o ... o f_1)_# q_0(z | x)``. Returns a Pyro
    ``TransformedDistribution`` over ``z [B, z_dim]``."""

    def __init__(self, base: MLPEncoder, n_flows: int = 4):
        super().__init__()
        from pyro.distributions import transforms

        self.base = base
        self.flows = nn.ModuleList([transforms.planar(base.z_dim) for _ in range(n_flows)])

    def forward(self, x: torch.Tensor):
        import pyro.distributions as pyro_dist

        from ..pyro import as_pyro_distribution

        return pyro_dist.TransformedDistribution(as_pyro_distribution(self.base(x)), list(self.flows))


class SemiImplicitEncoder(nn.Module):
    """Semi-implicit encoder (Yin & Zhou 2018): ``psi = T(x, eps)`` with noise ``eps ~ N(0, I)``
    fed into an MLP, and an explicit ``q(z | psi) = Normal(loc(psi), scale(psi))``, so that
    ``q(z | x) = integral q(z | psi) q(psi | x) dpsi`` is an implicit mixture."""

    def __init__(self, x_dim: int, z_dim: int, noise_dim: int = 8, hidden: int = 64):
        super().__init__()
        self.z_dim, self.noise_dim = z_dim, noise_dim
        self.net = nn.Sequential(nn.Linear(x_dim + noise_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))

    def mixing(self, x: torch.Tensor, k: int) -> D.Normal:
        """``q(z | psi_j)`` for ``k`` noise draws per data point: batch ``[k, B, z_dim]``."""
        flat = x.reshape(x.shape[0], -1).to(self.net[0].weight.dtype)
        eps = torch.randn(k, flat.shape[0], self.noise_dim, dtype=flat.dtype, device=flat.device)
        out = self.net(torch.cat([flat.unsqueeze(0).expand(k, *flat.shape), eps], -1))
        loc, log_scale = out.split(self.z_dim, -1)
        return D.Normal(loc, log_scale.clamp(-8, 5).exp())

    def forward(self, x: torch.Tensor) -> D.Distribution:
        """One mixture component per data point (``q(z | psi)`` for a single noise draw)."""
        q = self.mixing(x, 1)
        return D.Independent(D.Normal(q.loc[0], q.scale[0]), 1)


class Critic(nn.Module):
    """WGAN critic ``x [B, ...] -> [B]``: an MLP without normalisation layers (the gradient penalty
    is taken per sample, which batch normalisation would break)."""

    def __init__(self, x_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1).to(self.net[0].weight.dtype))[:, 0]


def make_encoder(model: nn.Module, data: torch.Tensor, family: str = "normal", hidden: int = 64) -> nn.Module:
    """An encoder from the data to the model's latent size (``[n, d]`` latents, read from
    ``model.sample``): a :class:`ConvEncoder` for images (per-point shape ``[C, H, W]`` or
    ``[H, W]`` with sides of at least 8), an :class:`MLPEncoder` otherwise."""
    with torch.no_grad():
        z, _ = model.sample(2)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ModelProtocolError(
            f"the default encoder needs real vector latents z [n, d]; {type(model).__name__}.sample gives "
            f"{type(z).__name__}{tuple(z.shape) if isinstance(z, torch.Tensor) else ''}: pass an encoder"
        )
    shape = tuple(data.shape[1:])
    if len(shape) in (2, 3) and min(shape[-2:]) >= 8:
        return ConvEncoder(shape, int(z.shape[1]), family=family).to(data.device)
    return MLPEncoder(int(data[0].numel()), int(z.shape[1]), hidden, family).to(data.device)


def check_encoder(model: nn.Module, encoder: nn.Module, data: torch.Tensor, needs_rsample: bool) -> None:
    """Refuse an encoder whose distribution for 2 data points does not match the shape of 2 of the
    model's latents, or (``needs_rsample``) cannot be reparameterised."""
    with torch.no_grad():
        q = encoder(data[:2])
        z, _ = model.sample(2)
    shape = tuple(q.batch_shape) + tuple(q.event_shape)
    if not isinstance(z, torch.Tensor) or shape != tuple(z.shape):
        expected = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ModelProtocolError(
            f"the encoder's distribution for 2 data points has shape {shape} (batch + event), but the model's latents "
            f"for 2 samples have shape {expected}"
        )
    if needs_rsample and not q.has_rsample:
        raise ConfigError(f"the encoder's {type(q).__name__} is not reparameterisable; vae and iwae need rsample (use sf-vae or rws)")
