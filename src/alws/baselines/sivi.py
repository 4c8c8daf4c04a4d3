"""Semi-implicit variational inference (Yin & Zhou 2018).

Hand-written (Pyro has no SIVI); needs only the model's ``sample`` and ``log_joint`` and a
:class:`~alws.baselines.encoders.SemiImplicitEncoder` (anything with ``mixing(x, k)``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelProtocolError
from ..training import guarded_step
from ..validation import check_int
from .base import EncoderObjective
from .encoders import SemiImplicitEncoder, make_encoder

__all__ = ["SIVI", "sivi_loss"]


class SIVI(EncoderObjective):
    """Maximises ``E[log p(x, z) - log mean_j q(z | psi_j)]`` over ``particles + 1`` mixing draws
    ``psi_j`` (``z`` from the first); see :func:`sivi_loss`."""

    name = "sivi"

    def __init__(self, model: nn.Module, encoder: nn.Module | None = None, *, particles: int = 8, **options):
        super().__init__(model, encoder, **options)
        check_int("particles", particles, 1)
        self.particles = particles

    def build_encoder(self, data: torch.Tensor) -> nn.Module:
        base = make_encoder(self.model, data, self.encoder_family)
        return SemiImplicitEncoder(int(data[0].numel()), base.z_dim).to(data.device)

    def prepare(self, data) -> torch.Tensor:
        data = super().prepare(data)
        if not callable(getattr(self.encoder, "mixing", None)):
            raise ModelProtocolError("sivi needs a semi-implicit encoder with a mixing(x, k) method (see SemiImplicitEncoder)")
        return data

    def describe(self) -> dict:
        return {**super().describe(), "particles": self.particles}

    def step(self, batch: torch.Tensor, context) -> dict:
        loss, value = sivi_loss(self.model, self.encoder, batch, self.particles)
        return {"loss": value, "grad_norm": guarded_step(loss, self.optimizer, self.clip_grad_norm)}


def sivi_loss(model: nn.Module, encoder: "SemiImplicitEncoder", x: torch.Tensor, particles: int):
    """Negative semi-implicit bound per data point (Yin & Zhou 2018), ``(loss, float)``.

    Draws ``psi_0..psi_K`` (``K = particles``) per data point, ``z ~ q(z | psi_0)``
    (reparameterised), and uses ``log q(z | x) ~ log mean_j q(z | psi_j)``: a lower bound on the
    ELBO that tightens as ``K`` grows.
    """
    q = encoder.mixing(x, particles + 1)  # batch [K+1, B, d]
    z = q.loc[0] + q.scale[0] * torch.randn_like(q.loc[0])
    log_q = torch.logsumexp(q.log_prob(z.unsqueeze(0)).sum(-1), 0) - torch.log(torch.tensor(float(particles + 1)))
    loss = -(model.log_joint(z, x) - log_q).mean()
    return loss, float(loss.detach())
