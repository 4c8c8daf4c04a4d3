"""The model protocol.

A model is a ``torch.nn.Module`` with

- ``sample(n) -> (z, x)``: ancestral samples; ``x`` is a tensor ``[n, *x_shape]``, ``z`` a tensor
  or a tuple/list/dict of tensors, each with leading dimension ``n`` (discrete, on a circle,
  whole trajectories: anything);
- ``log_joint(z, x) -> Tensor[n]``: ``log p_theta(z, x)`` in nats, differentiable in the
  module's parameters.

Optional hooks switch on the exponential-family fast path (regressing functions of ``z`` only):

- ``log_prior(z) -> [n]`` and ``likelihood(z) -> torch.distributions.ExponentialFamily`` over
  ``x`` (possibly wrapped in ``Independent``; see :mod:`alws.families` for supported families), or
- ``log_prior(z)``, ``natural_params(z) -> [n, S]``, ``log_normalizer(z) -> [n]`` and
  ``sufficient_stats(x) -> [n, S]`` for any other family.

Either way ``log_joint(z, x)`` must equal ``log_prior(z) + natural_params(z) . S(x) -
log_normalizer(z)`` up to a term that does not depend on the parameters (the base measure);
:func:`check_model` verifies this. Subclassing :class:`LatentVariableModel` is optional.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import families
from .errors import ModelProtocolError
from .validation import check_data, leading_size, tree_leaves

__all__ = ["LatentVariableModel", "ModelInfo", "check_model", "exponential_family", "ExponentialFamilyTerms", "trainable_parameters"]


class LatentVariableModel(nn.Module):
    """Optional base class. ``log_joint`` defaults to ``log_prior(z) + likelihood(z).log_prob(x)``."""

    def sample(self, n: int):  # pragma: no cover - interface
        """Draw ``n`` ancestral samples: returns ``(z, x)``, ``x: [n, *x_shape]``."""
        raise NotImplementedError

    def log_joint(self, z, x: torch.Tensor) -> torch.Tensor:
        """``log p(z, x)``, shape ``[n]`` (nats)."""
        if not (hasattr(self, "log_prior") and hasattr(self, "likelihood")):
            raise NotImplementedError(f"{type(self).__name__} must define log_joint, or log_prior and likelihood")
        log_lik = self.likelihood(z).log_prob(x)
        return self.log_prior(z) + log_lik.reshape(log_lik.shape[0], -1).sum(1)


class ExponentialFamilyTerms:
    """Access to ``log_prior``, ``eta``, ``Phi`` and ``S`` of a model with fast-path hooks."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.explicit = all(callable(getattr(model, h, None)) for h in ("natural_params", "log_normalizer", "sufficient_stats"))
        self._family = None

    def targets(self, z) -> torch.Tensor:
        """``[log_prior(z) - Phi(z), eta(z)]``, shape ``[n, 1 + S]``: the fast path's regression targets."""
        n = leading_size(z)
        if self.explicit:
            eta, phi = self.model.natural_params(z), self.model.log_normalizer(z)
        else:
            dist = self.model.likelihood(z)
            self._family = dist
            eta, phi = families.natural_terms(dist, n)
        return torch.cat([(self.model.log_prior(z) - phi).reshape(n, 1), eta.reshape(n, -1)], 1)

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """``[1, S(x)]``, shape ``[B, 1 + S]``: what the fast path's targets are paired with."""
        if self.explicit:
            s = self.model.sufficient_stats(x)
        else:
            if self._family is None:
                with torch.no_grad(), _own_random_state(self.model):
                    z, _ = self.model.sample(1)
                    self._family = self.model.likelihood(z)
            s = families.sufficient_statistics(self._family, x)
        s = s.reshape(x.shape[0], -1)
        return torch.cat([torch.ones_like(s[:, :1]), s], 1)


def _own_random_state(model: nn.Module):
    """A context in which sampling does not advance the global random state (probing a model's
    family must not change the samples a seeded run draws next, nor an exact resume)."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    return torch.random.fork_rng(devices=devices)


def exponential_family(model: nn.Module) -> ExponentialFamilyTerms | None:
    """Fast-path accessor when ``model`` has the hooks (see module docstring), else ``None``.

    A ``likelihood(z)`` whose family has no registered sufficient statistics (see
    :mod:`alws.families`) gives ``None``: such a model uses the plain log-joint path.
    """
    if not callable(getattr(model, "log_prior", None)):
        return None
    terms = ExponentialFamilyTerms(model)
    if terms.explicit:
        return terms
    if callable(getattr(model, "likelihood", None)):
        with torch.no_grad(), _own_random_state(model):
            z, _ = model.sample(1)
            if families.is_supported(model.likelihood(z)):
                return terms
    return None


@dataclass
class ModelInfo:
    """What :func:`check_model` learned: per-sample shape of ``x`` and whether the fast path applies."""

    x_shape: tuple
    x_dtype: torch.dtype
    device: torch.device
    exponential_family: bool


def trainable_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, parameter)`` for every parameter of ``model`` that requires a gradient, in
    ``named_parameters()`` order: what every trainer optimises and every gradient is keyed by."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def check_model(model: Any, x: Any = None, n: int = 4) -> ModelInfo:
    """Run the protocol once on ``n`` samples and raise an error that says exactly what is wrong.

    Checks: ``model`` is an ``nn.Module`` with trainable parameters; ``sample(n)`` returns
    ``(z, x)`` with leading dimension ``n``; ``log_joint(z, x)`` returns a finite ``[n]`` tensor that
    depends on at least one parameter; fast-path hooks (if any) agree with ``log_joint`` up to a
    parameter-free term. If data ``x`` is given, its per-sample shape must match the samples' and
    it must be finite and non-empty.
    """
    name = type(model).__name__
    if not isinstance(model, nn.Module):
        raise ModelProtocolError(f"model must be a torch.nn.Module, got {name}")
    for method in ("sample", "log_joint"):
        if not callable(getattr(model, method, None)):
            raise ModelProtocolError(f"{name} has no method {method}(); the protocol needs sample(n) and log_joint(z, x)")
    params = trainable_parameters(model)
    if not params:
        raise ModelProtocolError(f"{name} has no trainable parameters (requires_grad=True); nothing to learn")
    with torch.no_grad():
        out = model.sample(n)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise ModelProtocolError(f"{name}.sample({n}) must return a pair (z, x); got {type(out).__name__}")
    z, xs = out
    if not isinstance(xs, torch.Tensor) or xs.dim() == 0 or xs.shape[0] != n:
        shape = tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__
        raise ModelProtocolError(f"{name}.sample({n}) returned x of shape {shape}; expected a tensor [{n}, ...]")
    leaves = [leaf for leaf in tree_leaves(z) if isinstance(leaf, torch.Tensor)]
    if not leaves or any(leaf.dim() == 0 or leaf.shape[0] != n for leaf in leaves):
        shapes = [tuple(leaf.shape) for leaf in leaves]
        raise ModelProtocolError(f"{name}.sample({n}) returned latents with shapes {shapes}; each needs leading dimension {n}")
    if xs.is_floating_point() and not bool(torch.isfinite(xs).all()):
        bad = int((~torch.isfinite(xs)).sum())
        raise ModelProtocolError(f"{name}.sample({n}) returned x with {bad} non-finite (NaN or infinite) value(s) at the current "
                                 "parameters; a simulator that diverges there needs other starting values or a bounded update")
    lj = model.log_joint(z, xs)
    if not isinstance(lj, torch.Tensor) or tuple(lj.shape) != (n,):
        shape = tuple(lj.shape) if isinstance(lj, torch.Tensor) else type(lj).__name__
        raise ModelProtocolError(f"{name}.log_joint(z, x) returned shape {shape} for {n} samples; expected ({n},)")
    if not bool(torch.isfinite(lj).all()):
        raise ModelProtocolError(f"{name}.log_joint(z, x) is not finite on the model's own samples: {lj.detach().tolist()}")
    grads = torch.autograd.grad(lj.sum(), [p for _, p in params], allow_unused=True, retain_graph=True) if lj.requires_grad else []
    if all(g is None or not bool(g.abs().sum() > 0) for g in grads):
        raise ModelProtocolError(
            f"{name}.log_joint(z, x) does not depend on any parameter (its gradient is zero for all of "
            f"{[k for k, _ in params]}); check that it uses the module's parameters and is not detached"
        )
    ef = exponential_family(model)
    if ef is not None:
        _check_exponential_family(model, ef, z, xs, lj, [p for _, p in params])
    if x is not None:
        check_data(x, tuple(xs.shape[1:]))
    return ModelInfo(tuple(xs.shape[1:]), xs.dtype, xs.device, ef is not None)


def _check_exponential_family(model, ef, z, xs, lj, params) -> None:
    name = type(model).__name__
    try:
        t = ef.targets(z)
        s = ef.statistics(xs)
    except ModelProtocolError:
        raise
    except Exception as error:  # noqa: BLE001 - report any failure of the user's hooks
        raise ModelProtocolError(f"{name}'s exponential-family hooks failed: {error!r}") from error
    if t.shape != s.shape:
        raise ModelProtocolError(
            f"{name}: natural parameters give shape {tuple(t.shape[1:])} per sample but sufficient statistics give "
            f"{tuple(s.shape[1:])}; they must match"
        )
    surrogate = (t * s).sum(1)
    diff = torch.autograd.grad((lj - surrogate).sum(), params, allow_unused=True, retain_graph=True)
    full = torch.autograd.grad(lj.sum(), params, allow_unused=True)
    gap = sum(float(d.abs().sum()) for d in diff if d is not None)
    scale = sum(float(g.abs().sum()) for g in full if g is not None)
    if gap > 1e-3 * max(scale, 1e-8):
        raise ModelProtocolError(
            f"{name}'s exponential-family hooks disagree with log_joint: the gradient of log_joint - (log_prior + "
            f"eta.S - Phi) is {gap:.3g} (gradient of log_joint: {scale:.3g}); fix the hooks or pass "
            "exponential_family=False"
        )
