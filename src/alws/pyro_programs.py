"""alws models and encoders as Pyro programs: the other direction from :mod:`alws.pyro`.

:func:`to_pyro` turns an alws model with ``prior(n)`` and ``likelihood(z)`` hooks into a Pyro model
function, :func:`encoder_guide` turns an encoder ``x -> q(z | x)`` into a Pyro guide, and
:func:`as_pyro_distribution` / :func:`non_reparameterised` convert the distributions between
them. The Pyro-backed baselines (VAE, IWAE, score-function VAE, VAE with flows) train these pairs
with Pyro's ELBOs (see :mod:`alws.baselines.elbo`).
"""
from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as pyro_dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn

from .errors import ModelProtocolError

__all__ = ["to_pyro", "encoder_guide", "as_pyro_distribution", "non_reparameterised", "NonReparameterised", "to_event"]




def as_pyro_distribution(d: torch.distributions.Distribution):
    """The Pyro version of a torch distribution (same class name and parameters).

    ``Independent`` wrappers are kept; for families parameterised by either ``probs`` or
    ``logits`` the one the distribution was built with is used.
    """
    if isinstance(d, TorchDistributionMixin):
        return d
    if isinstance(d, torch.distributions.Independent):
        return pyro_dist.Independent(as_pyro_distribution(d.base_dist), d.reinterpreted_batch_ndims)
    cls = getattr(pyro_dist, type(d).__name__, None)
    if cls is None:
        raise ModelProtocolError(f"no Pyro counterpart of torch distribution {type(d).__name__}")
    params = {k: d.__dict__[k] for k in d.arg_constraints if k in d.__dict__}
    if "logits" in params and "probs" in params:
        params.pop("probs")
    return cls(**params)


class NonReparameterised(pyro_dist.Independent):
    """An ``Independent`` whose samples carry no gradient, so Pyro's estimators use score-function
    (REINFORCE) gradients for it. (Setting ``has_rsample_(False)`` on an ``Independent`` fails:
    the property has no setter, and Pyro's plate broadcasting copies it onto expanded copies.)"""

    @property
    def has_rsample(self):
        return False

    @has_rsample.setter
    def has_rsample(self, value):
        pass  # always False

    def rsample(self, sample_shape=torch.Size()):
        raise NotImplementedError("NonReparameterised has no rsample")

    def expand(self, batch_shape, _instance=None):
        return super().expand(batch_shape, _instance=self._get_checked_instance(NonReparameterised, _instance))


def non_reparameterised(d):
    """``d`` (a Pyro distribution) marked non-reparameterisable; vector events stay events."""
    if isinstance(d, pyro_dist.Independent):
        return NonReparameterised(d.base_dist, d.reinterpreted_batch_ndims)
    return d.has_rsample_(False)


def to_event(d, batch_dims_to_keep: int = 1):
    """``d`` with all but its first ``batch_dims_to_keep`` batch dimensions made event dimensions."""
    extra = len(d.batch_shape) - batch_dims_to_keep
    return d.to_event(extra) if extra > 0 else d


def to_pyro(model: nn.Module, name: str = "alws_model") -> Callable:
    """A Pyro model ``pyro_model(x)`` for an alws model with ``prior(n)`` (a distribution over
    ``n`` latents, batch shape ``[n, ...]``) and ``likelihood(z)`` hooks.

    Latent site ``"z"`` and observed site ``"x"`` sit in ``pyro.plate("data", len(x))``; the
    model's parameters are registered with ``pyro.module``. Methods that need only ``log_joint``
    do not use this; the Pyro-backed ones (VAE, IWAE, score-function VAE) do.
    """
    missing = [h for h in ("prior", "likelihood") if not callable(getattr(model, h, None))]
    if missing:
        raise ModelProtocolError(
            f"{type(model).__name__} lacks {' and '.join(missing)}: the Pyro-backed baselines need prior(n) and likelihood(z) "
            "as distributions (log_joint alone is enough for ALWS)"
        )

    def pyro_model(x):
        pyro.module(name, model)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", to_event(as_pyro_distribution(model.prior(x.shape[0]))))
            likelihood = as_pyro_distribution(model.likelihood(z))
            # the per-point dimensions of x are event dimensions (counted from the right, so that
            # extra leading dimensions, e.g. Pyro's vectorised particles, stay batch dimensions)
            extra = x.dim() - 1 - len(likelihood.event_shape)
            pyro.sample("x", likelihood.to_event(extra) if extra > 0 else likelihood, obs=x)

    return pyro_model


def encoder_guide(encoder: nn.Module, name: str, score_function: bool = False) -> Callable:
    """A Pyro guide ``guide(x)`` for :func:`to_pyro`'s model: latent site ``"z"`` drawn from
    ``encoder(x)`` inside ``pyro.plate("data", len(x))``, the encoder registered as ``name``.
    ``score_function=True`` marks ``z`` non-reparameterised, so Pyro's ELBOs use score-function
    gradients for it (with a decaying-average baseline)."""
    infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}} if score_function else {}

    def guide(x):
        pyro.module(name, encoder)
        with pyro.plate("data", x.shape[0]):
            q = as_pyro_distribution(encoder(x))
            pyro.sample("z", to_event(non_reparameterised(q) if score_function else q), infer=infer)

    return guide
