"""Reweighted wake-sleep (Bornschein & Bengio 2015), per data point.

Hand-written: Pyro's ``ReweightedWakeSleep`` forms one importance weight per particle for the
whole minibatch (its docstring says minibatches are unsupported); the two agree at batch size 1,
which the tests check. Needs only the model's ``sample`` and ``log_joint`` plus an encoder.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..training import guarded_step
from ..validation import check_int
from .base import EncoderObjective

__all__ = ["RWS", "rws_loss"]


class RWS(EncoderObjective):
    """Wake-theta, wake-phi and (with ``insomnia < 1``) sleep-phi updates with ``particles``
    importance samples per data point (see :func:`rws_loss`)."""

    name = "rws"
    needs_rsample = False

    def __init__(self, model: nn.Module, encoder: nn.Module | None = None, *, particles: int = 8, insomnia: float = 1.0, **options):
        super().__init__(model, encoder, **options)
        check_int("particles", particles, 1)
        if not 0.0 <= insomnia <= 1.0:
            raise ConfigError(f"insomnia must be in [0, 1], got {insomnia}")
        self.particles, self.insomnia = particles, insomnia

    def describe(self) -> dict:
        return {**super().describe(), "particles": self.particles, "insomnia": self.insomnia}

    def step(self, batch: torch.Tensor, context) -> dict:
        loss, bound = rws_loss(self.model, self.encoder, batch, self.particles, self.insomnia)
        return {"loss": bound, "grad_norm": guarded_step(loss, self.optimizer, self.clip_grad_norm)}


def rws_loss(model: nn.Module, encoder: nn.Module, x: torch.Tensor, particles: int, insomnia: float = 1.0):
    """Per-data-point reweighted wake-sleep surrogate for a minibatch ``x [B, ...]``.

    With ``K = particles`` draws ``z_bk ~ q(z | x_b)`` (not reparameterised) and normalised weights
    ``w_bk`` of ``p(z_bk, x_b) / q(z_bk | x_b)`` over ``k`` *for each b*, the surrogate's gradient
    is wake-theta ``-mean_b sum_k w_bk grad log p(z_bk, x_b)`` for the model and
    ``insomnia * wake-phi + (1 - insomnia) * sleep-phi`` for the encoder, with wake-phi
    ``-mean_b sum_k w_bk grad log q(z_bk | x_b)`` and sleep-phi ``-mean grad log q(z | x)`` over
    ``B`` pairs ``(z, x) ~ p``. Returns ``(surrogate, bound)``; ``bound`` is the negative
    importance-weighted bound per data point (a float).
    """
    b = x.shape[0]
    q = encoder(x)
    with torch.no_grad():
        z = q.sample((particles,))  # [K, B, d]
    log_q = q.log_prob(z)  # [K, B]
    xs = x.unsqueeze(0).expand(particles, *x.shape).reshape(particles * b, *x.shape[1:])
    log_p = model.log_joint(z.reshape(particles * b, *z.shape[2:]), xs).reshape(particles, b)
    log_w = log_p - log_q.detach()
    weights = torch.softmax(log_w, 0).detach()
    surrogate = -(weights * log_p).sum(0).mean()
    if insomnia > 0:
        surrogate = surrogate - insomnia * (weights * log_q).sum(0).mean()
    if insomnia < 1:
        with torch.no_grad():
            z_sleep, x_sleep = model.sample(b)
        surrogate = surrogate - (1 - insomnia) * encoder(x_sleep).log_prob(z_sleep).mean()
    bound = -float((torch.logsumexp(log_w.detach(), 0) - torch.log(torch.tensor(float(particles)))).mean())
    return surrogate, bound
