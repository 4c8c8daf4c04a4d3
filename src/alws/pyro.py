"""Pyro models in alws: ``from_pyro`` turns a Pyro model (no guide) into the alws protocol.

The model is written the usual way: a callable ``model_fn(x, *args, **kwargs)`` with latent
``pyro.sample`` sites and one observed site ``pyro.sample(name, dist, obs=x)``, all inside a
``pyro.plate`` over the data (``pyro.plate("data", len(x))``); global quantities are
``pyro.param`` sites (or parameters of a ``PyroModule``). Then

- ``sample(n)`` runs the model on a dummy ``x`` of ``n`` rows with its observation unconditioned
  (``poutine.uncondition``), so the observed site is sampled too: ``z`` is ``{site: value}``;
- ``log_joint(z, x)`` conditions the latent sites on ``z`` and the observed one on ``x``, and sums
  every sample site's ``log_prob`` over all dimensions except the data plate: ``[n]``.

Discrete latents need no enumeration and no guide: ALWS only samples them.
"""
from __future__ import annotations

from typing import Callable

import torch

try:
    import pyro
    from pyro import poutine
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("alws.pyro needs Pyro: pip install 'alws[pyro]' (or pyro-ppl)") from error
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import transform_to

from .errors import ModelProtocolError

__all__ = ["PyroModel", "from_pyro", "to_pyro", "as_pyro_distribution", "non_reparameterised", "NonReparameterised"]


class PyroModel(nn.Module):
    """An alws model wrapping a Pyro model; build it with :func:`from_pyro`."""

    def __init__(self, model_fn: Callable, x_shape: tuple, x_dtype=torch.float32, args: tuple = (), kwargs: dict | None = None):
        super().__init__()
        self.model_fn = model_fn  # a PyroModule is registered as a submodule: its parameters become ours
        self.x_shape, self.x_dtype = tuple(x_shape), x_dtype
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        trace = poutine.trace(model_fn).get_trace(self._dummy(2), *self.args, **self.kwargs)
        samples = {n: site for n, site in trace.nodes.items() if site["type"] == "sample" and not site_is_subsample(site)}
        observed = [n for n, site in samples.items() if site["is_observed"]]
        name = type(model_fn).__name__ if isinstance(model_fn, nn.Module) else getattr(model_fn, "__name__", "model")
        if len(observed) != 1:
            raise ModelProtocolError(
                f"the Pyro model {name!r} has {len(observed)} observed sites {observed}; the adapter expects exactly one "
                "pyro.sample(..., obs=x) inside a pyro.plate over the data"
            )
        self.obs_site = observed[0]
        self.plate, self.plate_dim = self._data_plate(trace.nodes[self.obs_site], name)
        self.latent_sites = []
        for site_name, site in samples.items():
            if site["is_observed"]:
                continue
            frames = [f for f in site["cond_indep_stack"] if f.name == self.plate]
            if not frames:
                raise ModelProtocolError(
                    f"latent site {site_name!r} of {name!r} is outside the data plate {self.plate!r}: ALWS needs one latent per "
                    "data point; make global quantities pyro.param sites (they are learned), or put the site inside the plate"
                )
            self.latent_sites.append(site_name)
        state = pyro.get_param_store().get_state()
        self.param_names, self.constraints = [], {}
        self.unconstrained = nn.ParameterDict()
        for site_name, site in trace.nodes.items():
            if site["type"] == "param" and not isinstance(model_fn, nn.Module):
                self.param_names.append(site_name)
                self.constraints[site_name] = state["constraints"].get(site_name, torch.distributions.constraints.real)
                # the store's own unconstrained tensor: the Parameter shares its storage, so every
                # optimiser step shows in pyro.param(name) (constrained), as after SVI
                self.unconstrained[site_name.replace(".", "__")] = nn.Parameter(state["params"][site_name].detach())

    def _dummy(self, n: int) -> torch.Tensor:
        return torch.zeros((n, *self.x_shape), dtype=self.x_dtype)

    def _data_plate(self, site, name):
        n = site["value"].shape[0]
        for frame in site["cond_indep_stack"]:
            if frame.size == n and frame.vectorized:
                batch_dims = len(site["fn"].batch_shape)
                if frame.dim != -batch_dims:
                    raise ModelProtocolError(
                        f"the data plate {frame.name!r} of {name!r} must be the leftmost batch dimension of {self.obs_site!r} "
                        f"(dim {-batch_dims}), got dim {frame.dim}"
                    )
                return frame.name, frame.dim
        raise ModelProtocolError(
            f"the observed site {self.obs_site!r} of {name!r} is not inside a vectorised pyro.plate over the data (size {n}); "
            "write `with pyro.plate('data', len(x)): ... pyro.sample(name, dist, obs=x)`"
        )

    def constrained(self) -> dict:
        """``{param site: value}`` on the constrained scale (what ``pyro.param`` returns)."""
        with torch.no_grad():
            return {n: transform_to(self.constraints[n])(self.unconstrained[n.replace(".", "__")]) for n in self.param_names}

    def _fn(self):
        values = {n: transform_to(self.constraints[n])(self.unconstrained[n.replace(".", "__")]) for n in self.param_names}
        return poutine.substitute(self.model_fn, data=values) if values else self.model_fn

    def sample(self, n: int):
        with torch.no_grad():
            trace = poutine.trace(poutine.uncondition(self._fn())).get_trace(self._dummy(n), *self.args, **self.kwargs)
        z = {name: trace.nodes[name]["value"] for name in self.latent_sites}
        return z, trace.nodes[self.obs_site]["value"]

    def log_joint(self, z: dict, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        conditioned = poutine.condition(self._fn(), data=dict(z))
        trace = poutine.trace(conditioned).get_trace(x, *self.args, **self.kwargs)
        total = torch.zeros(n, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device)
        for name in (*self.latent_sites, self.obs_site):
            site = trace.nodes[name]
            lp = site["fn"].log_prob(site["value"])
            batch = lp.dim()
            lp = lp.movedim(batch + self.plate_dim, 0) if batch else lp.expand(n)
            total = total + lp.reshape(n, -1).sum(1)
        return total


def from_pyro(model_fn: Callable, x_shape=(), x_dtype=torch.float32, args: tuple = (), kwargs: dict | None = None) -> PyroModel:
    """Wrap a guide-free Pyro model ``model_fn(x, *args, **kwargs)`` as an alws model.

    ``x_shape``: the per-data-point shape of the observation (``()`` for scalars). The model is
    traced once to find its sites: exactly one observed site, inside a vectorised ``pyro.plate``
    over the data whose dimension is the leftmost batch dimension; every latent site inside that
    plate. ``pyro.param`` sites become the module's parameters, stored unconstrained and sharing
    storage with Pyro's param store: after :func:`alws.fit`, ``pyro.param(name)`` returns the
    learned value (constrained), as after ``SVI``. (Moving the module to another device makes
    copies: read them from ``model.constrained()`` then.)
    """
    return PyroModel(model_fn, x_shape, x_dtype, args, kwargs)


# ---------------------------------------------------------------------------------------------
# alws model -> Pyro model (for the baselines)
# ---------------------------------------------------------------------------------------------
import pyro.distributions as pyro_dist  # noqa: E402
from pyro.distributions.torch_distribution import TorchDistributionMixin  # noqa: E402


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


def _to_event(d, batch_dims_to_keep: int = 1):
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
            z = pyro.sample("z", _to_event(as_pyro_distribution(model.prior(x.shape[0]))))
            likelihood = as_pyro_distribution(model.likelihood(z))
            # the per-point dimensions of x are event dimensions (counted from the right, so that
            # extra leading dimensions, e.g. Pyro's vectorised particles, stay batch dimensions)
            extra = x.dim() - 1 - len(likelihood.event_shape)
            pyro.sample("x", likelihood.to_event(extra) if extra > 0 else likelihood, obs=x)

    return pyro_model
