"""Evidence lower bounds from Pyro: the VAE, the IWAE, the score-function VAE and the VAE with a
flow encoder, for an alws model and an encoder, or for a hand-written Pyro model/guide pair.

- ``vae``: reparameterised ELBO (``pyro.infer.Trace_ELBO``), one sample per data point;
- ``vae-flow``: the same with an encoder followed by planar flows;
- ``iwae``: importance-weighted bound with ``particles`` samples (``RenyiELBO(alpha=0)``);
- ``sf-vae``: ELBO with score-function encoder gradients and a decaying-average baseline
  (``TraceGraph_ELBO``).

An alws model needs ``prior(n)`` and ``likelihood(z)`` as distributions for these (see
:func:`alws.pyro_programs.to_pyro`). Loss and gradients are per data point.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import nn

from ..objective import Objective
from ..training import guarded_step
from ..validation import check_choice, check_int
from .base import EncoderObjective
from .encoders import FlowEncoder, make_encoder

__all__ = ["ELBO", "PyroELBO", "ELBO_METHODS"]

#: Pyro-backed bounds: method -> Pyro loss class name.
ELBO_METHODS = {"vae": "Trace_ELBO", "vae-flow": "Trace_ELBO", "iwae": "RenyiELBO", "sf-vae": "TraceGraph_ELBO"}


class _PyroBound:
    """One step of ``method``'s Pyro bound for a model/guide pair, scaled per data point (loss and
    gradients alike); ``penalty()`` (a scalar) is added to the loss when given."""

    def __init__(self, method: str, pyro_model: Callable, guide: Callable, particles: int, penalty: Callable[[], torch.Tensor] | None):
        import pyro
        from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO

        if method == "sf-vae":
            # TraceGraph_ELBO keeps its decaying-average baselines in the global param store, keyed
            # by site: drop any left by an earlier fit (they have that fit's minibatch shape).
            store = pyro.get_param_store()
            for key in [k for k in store.keys() if k.startswith("__baseline_avg_downstream_cost_")]:
                del store[key]
        if method in ("vae", "vae-flow"):
            self.bound = Trace_ELBO()
        elif method == "iwae":
            self.bound = RenyiELBO(alpha=0.0, num_particles=particles, max_plate_nesting=1)
        else:
            self.bound = TraceGraph_ELBO()
        self.differentiable = method in ("vae", "vae-flow")
        self.pyro_model, self.guide, self.penalty = pyro_model, guide, penalty

    def step(self, batch: torch.Tensor, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None) -> dict:
        from pyro import poutine

        scale = 1.0 / batch.shape[0]
        model, guide = poutine.scale(self.pyro_model, scale), poutine.scale(self.guide, scale)
        if self.differentiable:
            loss = self.bound.differentiable_loss(model, guide, batch)
            value = float(loss.detach())
            if self.penalty is not None:
                loss = loss + self.penalty()
            return {"loss": value, "grad_norm": guarded_step(loss, optimizer, clip_grad_norm)}
        holder = {}

        def backward():
            holder["loss"] = self.bound.loss_and_grads(model, guide, batch)
            if self.penalty is None:
                return holder["loss"]
            extra = self.penalty()
            extra.backward()
            return holder["loss"] + float(extra.detach())

        grad_norm = guarded_step(backward, optimizer, clip_grad_norm)
        return {"loss": holder["loss"], "grad_norm": grad_norm}


class ELBO(EncoderObjective):
    """``method`` (see :data:`ELBO_METHODS`) for an alws model with ``prior``/``likelihood`` hooks
    and an encoder; ``n_flows`` planar flows follow the default encoder for ``vae-flow``."""

    def __init__(self, method: str, model: nn.Module, encoder: nn.Module | None = None, *, particles: int = 8, n_flows: int = 4,
                 **options):
        check_choice("method", method, ELBO_METHODS)
        super().__init__(model, encoder, **options)
        check_int("particles", particles, 1)
        self.name, self.particles, self.n_flows = method, particles, n_flows
        self.needs_rsample = method != "sf-vae"

    def build_encoder(self, data: torch.Tensor) -> nn.Module:
        encoder = make_encoder(self.model, data, self.encoder_family)
        return FlowEncoder(encoder, self.n_flows) if self.name == "vae-flow" else encoder

    def prepare(self, data) -> torch.Tensor:
        from ..pyro_programs import encoder_guide, to_pyro

        data = super().prepare(data)
        tag = f"{self.name}_{id(self.model)}"
        guide = encoder_guide(self.encoder, f"encoder_{tag}", score_function=self.name == "sf-vae")
        self.bound = _PyroBound(self.name, to_pyro(self.model, f"model_{tag}"), guide, self.particles, None)
        return data

    def describe(self) -> dict:
        return {**super().describe(), "particles": self.particles, "n_flows": self.n_flows}

    def step(self, batch: torch.Tensor, context) -> dict:
        return self.bound.step(batch, self.optimizer, self.clip_grad_norm)


class PyroELBO(Objective):
    """``method`` (``vae``, ``iwae`` or ``sf-vae``; the guide decides which sites are
    reparameterised) for a hand-written Pyro ``pyro_model(x)`` / ``guide(x)`` pair, for models
    whose latents are not one vector (e.g. a discrete component and a continuous one).
    ``modules``: ``name -> nn.Module`` holding every trained parameter (checkpointed; both
    functions must use only these). ``penalty()``: optional scalar added to the loss per step
    (MAP terms per data point)."""

    def __init__(self, method: str, pyro_model: Callable, guide: Callable, modules: Mapping[str, nn.Module], *, particles: int = 8,
                 penalty: Callable[[], torch.Tensor] | None = None):
        check_choice("method", method, ("vae", "iwae", "sf-vae"))
        check_int("particles", particles, 1)
        self.name, self.particles = method, particles
        self.pyro_model, self.guide, self._modules, self.penalty = pyro_model, guide, dict(modules), penalty

    def prepare(self, data) -> torch.Tensor:
        data = super().prepare(data)
        self.bound = _PyroBound(self.name, self.pyro_model, self.guide, self.particles, self.penalty)
        return data

    def modules(self) -> dict:
        return self._modules

    def parameters(self) -> list:
        return [p for m in self._modules.values() for p in m.parameters()]

    def describe(self) -> dict:
        return {"method": self.name, "particles": self.particles}

    def step(self, batch: torch.Tensor, context) -> dict:
        return self.bound.step(batch, self.optimizer, self.clip_grad_norm)
