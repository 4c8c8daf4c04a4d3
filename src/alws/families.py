"""Exponential-family terms of a torch likelihood, for the ALWS fast path.

A likelihood ``p(x|z) = h(x) exp(eta(z) . S(x) - Phi(z))`` splits into natural parameters
``eta(z)``, a log-normaliser ``Phi(z)`` and sufficient statistics ``S(x)``. torch's
``ExponentialFamily`` classes provide ``eta`` (``_natural_params``) and ``Phi``
(``_log_normalizer``); this module supplies ``S(x)`` for each of them, and flattens all three to
one row per sample so that the learner can regress them.

Shapes: a distribution over ``x`` of shape ``[n, *rest]`` gives ``eta: [n, S]``, ``Phi: [n]`` and
``S(x): [n, S]``, where ``S`` counts natural-parameter entries per sample.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import distributions as D

from .errors import ModelProtocolError

__all__ = ["SUFFICIENT_STATISTICS", "natural_terms", "sufficient_statistics", "is_supported"]

# S(x) per family, in the order of torch's ``_natural_params``.
SUFFICIENT_STATISTICS: dict[type, Callable[[torch.Tensor], tuple]] = {
    D.Normal: lambda x: (x, x * x),
    D.Bernoulli: lambda x: (x,),
    D.ContinuousBernoulli: lambda x: (x,),
    D.Poisson: lambda x: (x,),
    D.Exponential: lambda x: (x,),
    D.Gamma: lambda x: (torch.log(x), x),
    D.Beta: lambda x: (torch.log(x), torch.log1p(-x)),
    D.Dirichlet: lambda x: (torch.log(x),),
    # LogNormal is a Normal in log x: base measure 1/x (parameter-free), S = (log x, log^2 x).
    D.LogNormal: lambda x: (torch.log(x), torch.log(x) ** 2),
}


def _unwrap(dist: D.Distribution) -> D.Distribution:
    while isinstance(dist, D.Independent):
        dist = dist.base_dist
    return dist


def is_supported(dist: D.Distribution) -> bool:
    """True when ``dist`` (possibly wrapped in ``Independent``) is a family listed above."""
    return type(_unwrap(dist)) in SUFFICIENT_STATISTICS


def _check(dist: D.Distribution) -> D.Distribution:
    base = _unwrap(dist)
    if type(base) not in SUFFICIENT_STATISTICS:
        names = ", ".join(sorted(cls.__name__ for cls in SUFFICIENT_STATISTICS))
        raise ModelProtocolError(
            f"likelihood(z) returned {type(base).__name__}, which has no registered sufficient statistics; "
            f"supported: {names}. Define natural_params/log_normalizer/sufficient_stats on the model instead."
        )
    return base


def _bernoulli_terms(base: D.Bernoulli) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    # torch forms Bernoulli's natural parameter as logit(probs) and its log-normaliser as
    # log1p(exp(eta)): in float32, probs = sigmoid(logits) rounds to 1 beyond logits ~ 17 and to 0
    # below ~ -104, giving eta = +-inf, Phi = inf and NaN gradients (how long image runs on the fast
    # path went to NaN). The logits themselves and softplus are exact at any size.
    logits = base.logits
    return (logits,), torch.nn.functional.softplus(logits)


#: Natural parameters and log-normaliser computed stably where torch's generic form is not.
_STABLE_TERMS: dict[type, Callable] = {D.Bernoulli: _bernoulli_terms}


def natural_terms(dist: D.Distribution, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eta [n, S], Phi [n])`` of a likelihood distribution over ``n`` samples."""
    base = _check(dist)
    if isinstance(base, D.LogNormal):
        base = base.base_dist
    if type(base) in _STABLE_TERMS:
        params, phi = _STABLE_TERMS[type(base)](base)
    else:
        params = base._natural_params
        phi = base._log_normalizer(*params)
    eta = torch.cat([p.expand(base.batch_shape + base.event_shape).reshape(n, -1) for p in params], 1)
    return eta, phi.expand(base.batch_shape).reshape(n, -1).sum(1)


def sufficient_statistics(dist: D.Distribution, x: torch.Tensor) -> torch.Tensor:
    """``S(x) [n, S]`` in the layout of :func:`natural_terms` (``dist`` only selects the family)."""
    base = _check(dist)
    n = x.shape[0]
    return torch.cat([s.reshape(n, -1) for s in SUFFICIENT_STATISTICS[type(base)](x)], 1)
