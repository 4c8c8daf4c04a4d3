"""Estimates of ``log p(x)`` per data point: importance sampling and annealed importance sampling."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..seeding import seeded
from ..validation import check_data, check_int, tree_map

__all__ = ["LogLikelihood", "importance_log_likelihood", "ais_log_likelihood"]


@dataclass
class LogLikelihood:
    """An estimate of ``mean_b log p(x_b)`` in nats per data point.

    ``mean``: the estimate; ``se``: its standard error over data points; ``per_point [B]``: each
    point's estimate; ``mc_se [B]``: each point's Monte Carlo standard error (delta method,
    ``sd(w) / (sqrt(K) mean(w))``); ``ess [B]``: effective sample size of each point's weights.
    Importance sampling and AIS estimates are biased low (Jensen) by an amount that shrinks as
    the effective sample size grows.
    """

    mean: float
    se: float
    per_point: torch.Tensor
    mc_se: torch.Tensor
    ess: torch.Tensor


def _summarise(log_w: torch.Tensor) -> LogLikelihood:
    """``log_w [B, K]`` log importance weights -> :class:`LogLikelihood`."""
    k = log_w.shape[1]
    per_point = torch.logsumexp(log_w, 1) - math.log(k)
    w = torch.exp(log_w - log_w.max(1, keepdim=True).values)
    ess = w.sum(1) ** 2 / (w * w).sum(1)
    mc_se = w.std(1) / (math.sqrt(k) * w.mean(1))
    se = float(per_point.std() / math.sqrt(per_point.shape[0])) if per_point.shape[0] > 1 else float("nan")
    return LogLikelihood(float(per_point.mean()), se, per_point.detach(), mc_se.detach(), ess.detach())


def _repeat_latent(z, times: int):
    return tree_map(lambda leaf: leaf.repeat_interleave(times, 0), z)


@torch.no_grad()
def importance_log_likelihood(model: nn.Module, x: torch.Tensor, n_samples: int = 1000, proposal=None, chunk_size: int = 2**16) -> LogLikelihood:
    """Importance-sampling estimate of ``log p(x_b)`` for each row of ``x [B, *x_shape]``.

    ``proposal=None`` samples latents from the prior (needs ``model.log_prior``): weights are
    ``p(x | z) = p(z, x) / p(z)``. Otherwise ``proposal(x_b)`` must return a torch distribution
    over the latent for the rows given (e.g. a trained encoder), with ``sample((K,))`` and
    ``log_prob``; weights are ``p(z, x) / q(z | x)``.
    """
    check_int("n_samples", n_samples, 1)
    x = check_data(x)
    rows = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        if proposal is None:
            if not callable(getattr(model, "log_prior", None)):
                raise TypeError(f"{type(model).__name__} has no log_prior(z): pass a proposal, or define log_prior for prior sampling")
            z, _ = model.sample(n_samples)
            log_q = model.log_prior(z)
        else:
            q = proposal(xb)
            z = q.sample((n_samples,)).reshape(n_samples, *q.event_shape)
            log_q = q.log_prob(z.reshape(n_samples, *q.batch_shape, *q.event_shape)).reshape(n_samples)
        xs = xb.expand(n_samples, *xb.shape[1:])
        rows.append(model.log_joint(z, xs) - log_q)
    return _summarise(torch.stack(rows))


def ais_log_likelihood(
    model: nn.Module,
    x: torch.Tensor,
    n_chains: int = 100,
    n_temperatures: int = 200,
    n_mh_steps: int = 2,
    step_size: float = 0.3,
    seed: int | None = None,
) -> LogLikelihood:
    """Annealed importance sampling (Neal 2001) for models with a real latent ``z [n, d]``.

    Anneals from the prior (``model.log_prior``; chains start at ``model.sample``) to the
    posterior along ``p(z) p(x | z)^beta`` over ``n_temperatures`` equally spaced values of beta, each followed by ``n_mh_steps`` random-walk Metropolis moves whose step size adapts
    towards a 0.3-0.5 acceptance rate. Returns the same summary as
    :func:`importance_log_likelihood` (weights over ``n_chains`` chains per data point).
    """
    check_int("n_chains", n_chains, 1)
    check_int("n_temperatures", n_temperatures, 1)
    x = check_data(x)
    if not callable(getattr(model, "log_prior", None)):
        raise TypeError(f"{type(model).__name__} has no log_prior(z); AIS starts from the prior")
    betas = torch.linspace(0, 1, n_temperatures + 1, dtype=torch.float64)
    rows = []
    with seeded(seed), torch.no_grad():
        for b in range(x.shape[0]):
            xs = x[b : b + 1].expand(n_chains, *x.shape[1:])
            z, _ = model.sample(n_chains)
            if not isinstance(z, torch.Tensor) or not z.is_floating_point():
                raise TypeError("ais_log_likelihood needs a real-valued tensor latent z [n, d]")
            prior = model.log_prior(z)
            log_lik = model.log_joint(z, xs) - prior
            log_w = torch.zeros(n_chains, dtype=torch.float64, device=x.device)
            scale = torch.full((n_chains,) + (1,) * (z.dim() - 1), step_size, dtype=z.dtype, device=z.device)
            for t in range(1, n_temperatures + 1):
                log_w += (betas[t] - betas[t - 1]).item() * log_lik.double()
                beta = betas[t].item()
                for _ in range(n_mh_steps):
                    proposal = z + scale * torch.randn_like(z)
                    p_prior = model.log_prior(proposal)
                    p_lik = model.log_joint(proposal, xs) - p_prior
                    log_accept = (p_prior + beta * p_lik) - (prior + beta * log_lik)
                    accept = torch.log(torch.rand_like(log_accept)) < log_accept
                    mask = accept.reshape(-1, *([1] * (z.dim() - 1)))
                    z = torch.where(mask, proposal, z)
                    prior = torch.where(accept, p_prior, prior)
                    log_lik = torch.where(accept, p_lik, log_lik)
                    scale = scale * torch.where(mask, 1.1, 0.9)  # per-chain adaptation
            rows.append(log_w)
    return _summarise(torch.stack(rows))
