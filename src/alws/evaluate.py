"""Reference quantities for checking estimators.

- :func:`quadrature_log_marginal`: ``log p_theta(x)`` by tensor-product Gauss-Hermite quadrature
  for models whose latent is a low-dimensional real vector, differentiable in theta;
- :func:`exact_gradient`: the gradient of that log marginal (per point or of the mean), the
  reference against which gradient estimators are measured;
- :func:`relative_error`, :func:`cosine_similarity`: how far an estimate is from a reference.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import trainable_parameters
from .seeding import seeded
from .validation import check_data, check_int

__all__ = [
    "gauss_hermite_grid",
    "quadrature_log_marginal",
    "exact_gradient",
    "relative_error",
    "cosine_similarity",
    "LogLikelihood",
    "importance_log_likelihood",
    "ais_log_likelihood",
    "amari_distance",
    "mmd",
]


def gauss_hermite_grid(dim: int, n_nodes: int, dtype=torch.float64, device=None):
    """Nodes ``[G, dim]`` and log-weights ``[G]`` (``G <= n_nodes**dim``) integrating against N(0, I_dim)."""
    # Golub-Welsch for the probabilists' Hermite polynomials: nodes are the eigenvalues of the
    # Jacobi matrix with off-diagonal sqrt(k); weights are the squared first eigenvector entries.
    # Stable for any n (numpy's hermgauss overflows beyond about 150 nodes).
    off = torch.sqrt(torch.arange(1, n_nodes, dtype=torch.float64))
    nodes1, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    weights = vectors[0] ** 2
    keep = weights > 0  # extreme nodes whose weight underflows contribute nothing
    nodes1 = nodes1[keep].to(dtype=dtype, device=device)
    logw1 = torch.log(weights[keep] / weights.sum()).to(dtype=dtype, device=device)
    grids = torch.meshgrid(*([nodes1] * dim), indexing="ij")
    lgrids = torch.meshgrid(*([logw1] * dim), indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], 1), sum(g.reshape(-1) for g in lgrids)


def quadrature_log_marginal(
    model: nn.Module,
    x: torch.Tensor,
    dim: int,
    n_nodes: int = 64,
    loc: torch.Tensor | float = 0.0,
    scale: torch.Tensor | float = 1.0,
    chunk_size: int = 2**18,
) -> torch.Tensor:
    """``log p(x_b) = log integral p(z, x_b) dz`` for each row of ``x [B, *x_shape]``: ``[B]``, nats.

    The integral is taken against a Gaussian reference ``N(loc, diag(scale^2))`` with
    ``n_nodes**dim`` Gauss-Hermite nodes: ``p(x) = E_ref[p(z, x) / ref(z)]``. Choose the reference
    close to the prior (the default is the standard normal) so that the integrand ``p(z, x) /
    ref(z)`` is smooth; check convergence by doubling ``n_nodes``. The latent passed to
    ``model.log_joint`` is a tensor ``[n, dim]``. Differentiable in the model's parameters.
    """
    check_int("dim", dim, 1)
    check_int("n_nodes", n_nodes, 1)
    if n_nodes**dim > 10**7:
        raise ValueError(f"{n_nodes}**{dim} quadrature nodes is too many; quadrature is for low-dimensional latents")
    x = check_data(x)
    dtype = next(model.parameters()).dtype
    nodes, logw = gauss_hermite_grid(dim, n_nodes, torch.float64, x.device)
    loc = torch.as_tensor(loc, dtype=torch.float64, device=x.device)
    scale = torch.as_tensor(scale, dtype=torch.float64, device=x.device)
    z = loc + scale * nodes  # [G, dim]
    # log of the reference density at z, up to the nodes' N(0, I) density already in logw
    log_ref = torch.distributions.Normal(loc, scale).log_prob(z).sum(1)
    log_w = (logw - log_ref).to(dtype)
    z = z.to(dtype)
    g = z.shape[0]
    per_chunk = max(1, chunk_size // g)
    out = []
    for xb in torch.split(x, per_chunk):
        b = xb.shape[0]
        zz = z.repeat(b, 1)
        xx = xb.repeat_interleave(g, 0)
        lj = model.log_joint(zz, xx).reshape(b, g)
        out.append(torch.logsumexp(lj + log_w, 1))
    return torch.cat(out)


def exact_gradient(model: nn.Module, x: torch.Tensor, dim: int, n_nodes: int = 64, reduce: str = "mean", **kwargs) -> dict:
    """Gradient of ``mean_b log p(x_b)`` (``reduce="mean"``) or of each ``log p(x_b)``
    (``reduce="none"``, shapes ``[B, *param.shape]``) by quadrature; keys as ``named_parameters``."""
    named = trainable_parameters(model)
    params = [p for _, p in named]
    logp = quadrature_log_marginal(model, x, dim, n_nodes, **kwargs)
    if reduce == "mean":
        grads = torch.autograd.grad(logp.mean(), params, allow_unused=True)
    else:
        rows = [torch.autograd.grad(logp[b], params, retain_graph=True, allow_unused=True) for b in range(logp.shape[0])]
        grads = [None if rows[0][i] is None else torch.stack([r[i] for r in rows]) for i in range(len(params))]
    out = {}
    for (name, p), g in zip(named, grads):
        shape = p.shape if reduce == "mean" else (x.shape[0], *p.shape)
        out[name] = torch.zeros(shape, dtype=p.dtype, device=p.device) if g is None else g.detach()
    return out


def _flatten(grads: dict, batched: bool) -> torch.Tensor:
    parts = [g.reshape(g.shape[0], -1) if batched else g.reshape(1, -1) for g in grads.values()]
    return torch.cat(parts, 1).to(torch.float64)


def relative_error(estimate: dict, reference: dict, batched: bool = False) -> float:
    """``||estimate - reference|| / ||reference||`` over all parameters (and points, if batched)."""
    e, r = _flatten(estimate, batched), _flatten({k: reference[k] for k in estimate}, batched)
    return float(torch.linalg.norm(e - r) / torch.linalg.norm(r).clamp_min(1e-300))


def cosine_similarity(estimate: dict, reference: dict, batched: bool = False) -> float:
    """Cosine between estimate and reference over all parameters; if ``batched``, the mean over points."""
    e, r = _flatten(estimate, batched), _flatten({k: reference[k] for k in estimate}, batched)
    return float(torch.nn.functional.cosine_similarity(e, r, dim=1, eps=1e-300).mean())


# ---------------------------------------------------------------------------------------------
# Log-likelihood estimates, and distances between matrices and between samples
# ---------------------------------------------------------------------------------------------
import math  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from .kernels import GaussianKernel, median_heuristic  # noqa: E402
from .validation import tree_map  # noqa: E402


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
