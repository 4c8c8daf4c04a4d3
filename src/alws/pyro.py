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

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import transform_to

from .errors import ModelProtocolError
# the other direction, alws model -> Pyro program, is alws.pyro_programs; its names stay importable here
from .pyro_programs import NonReparameterised, as_pyro_distribution, non_reparameterised, to_pyro  # noqa: F401

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
