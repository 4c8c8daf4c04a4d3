"""Exact references for gradient estimators, and how far an estimate is from one.

- :func:`quadrature_log_marginal`: ``log p_theta(x)`` by tensor-product Gauss-Hermite quadrature
  for models whose latent is a low-dimensional real vector, differentiable in theta;
- :func:`exact_gradient`: the gradient of that log marginal (per point or of the mean), the
  reference against which gradient estimators are measured;
- :func:`relative_error`, :func:`cosine_similarity`: how far an estimate is from a reference.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model import trainable_parameters
from ..validation import check_data, check_int

__all__ = ["gauss_hermite_grid", "quadrature_log_marginal", "exact_gradient", "relative_error", "cosine_similarity"]


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
