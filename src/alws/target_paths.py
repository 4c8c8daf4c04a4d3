"""What the wake gradient regresses: the two target paths of ALWS behind one interface.

A path pairs sleep *targets* ``T(theta) [N, q]`` (functions of the sleep samples, differentiable
in the parameters) with wake *statistics* ``R [B, q]`` (functions of the data only), so that the
log-joint at a data point is ``log p(z, x*) = T(z) . R(x*)`` up to a parameter-free term. Kernel
ridge regression of ``T`` on the sleep samples' ``x``, evaluated at ``x*`` and contracted with
``R(x*)``, then estimates ``E[log p(z, x*) | x*]``, whose gradient is the ALWS estimate.

- :class:`LogJointPath` (the plain path): ``T = log p(z, x)`` (``q = 1``), ``R = 1``. Works for
  every model; the target depends on all of the sleep sample ``x``.
- :class:`ExponentialFamilyPath` (the fast path): for a likelihood in an exponential family,
  ``T = [log p(z) - Phi(z), eta(z)]`` and ``R = [1, S(x*)]``: every target is a function of ``z``
  only, which the regression predicts with lower variance (but a sharp likelihood amplifies its
  errors by ``1 / sigma^2``).
"""
from __future__ import annotations

import torch
from torch import nn

from .model import ExponentialFamilyTerms

__all__ = ["TargetPath", "LogJointPath", "ExponentialFamilyPath"]


class TargetPath:
    """One way of writing the log-joint as ``T(z, x) . R(x*)``."""

    #: shown in the history (``record["path"]``)
    name: str = ""
    #: whether this is the exponential-family (fast) path
    exponential_family: bool = False

    def targets(self, z, x: torch.Tensor) -> torch.Tensor:
        """``T [N, q]`` for sleep samples ``(z, x)``, differentiable in the model's parameters."""
        raise NotImplementedError

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """``R [B, q]`` (float64, no gradient) for data ``x [B, ...]``."""
        raise NotImplementedError


class LogJointPath(TargetPath):
    """``T = log p(z, x)``, ``R = 1``."""

    name = "log-joint"

    def __init__(self, model: nn.Module):
        self.model = model

    def targets(self, z, x: torch.Tensor) -> torch.Tensor:
        return self.model.log_joint(z, x).reshape(-1, 1)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)


class ExponentialFamilyPath(TargetPath):
    """``T = [log p(z) - Phi(z), eta(z)]``, ``R = [1, S(x)]`` (see :class:`alws.model.ExponentialFamilyTerms`)."""

    name = "exponential-family"
    exponential_family = True

    def __init__(self, terms: ExponentialFamilyTerms):
        self.terms = terms

    def targets(self, z, x: torch.Tensor) -> torch.Tensor:
        return self.terms.targets(z)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.terms.statistics(x).to(torch.float64)
