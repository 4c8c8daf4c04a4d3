"""Baselines trained by the same loop as ALWS (:class:`alws.training.Trainer`).

``alws.baselines.fit(method, model, data, ...)`` trains ``model`` (and an encoder) in place with
one of :data:`METHODS` and returns the same :class:`alws.History` as :func:`alws.fit`, with the
same progress bar, checkpoints, exact resume and NaN guard. Pyro implements these objectives, so
they come from Pyro:

- ``vae``: reparameterised ELBO (``pyro.infer.Trace_ELBO``), one sample per data point;
- ``iwae``: importance-weighted bound with ``particles`` samples (``RenyiELBO(alpha=0)``).

Both need the model's ``prior(n)`` and ``likelihood(z)`` as distributions (see
:func:`alws.pyro.to_pyro`) and a reparameterisable latent. The other methods of the paper's
comparisons (score-function VAE, reweighted wake-sleep, VAE with a flow, SIVI, WGAN-GP) are not
implemented yet.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError, ModelProtocolError
from ..model import check_model
from ..training import History, Trainer, guarded_step, make_optimizer
from ..validation import check_choice, check_data, check_int, check_positive
from .encoders import MLPEncoder

__all__ = ["METHODS", "fit", "MLPEncoder", "make_encoder"]

#: Method name -> short description.
METHODS = {
    "vae": "reparameterised ELBO (Pyro Trace_ELBO)",
    "iwae": "importance-weighted bound with `particles` samples (Pyro RenyiELBO, alpha=0)",
}


def make_encoder(model: nn.Module, data: torch.Tensor, family: str = "normal", hidden: int = 64) -> MLPEncoder:
    """An MLP encoder from the data's per-point size to the model's latent size (``prior(1)``)."""
    if not callable(getattr(model, "prior", None)):
        raise ModelProtocolError(f"{type(model).__name__} lacks prior(n): the encoder's latent size cannot be inferred")
    event = model.prior(1).event_shape
    if len(event) != 1:
        raise ModelProtocolError(f"the default encoder needs a vector latent; prior(1) has event shape {tuple(event)}")
    return MLPEncoder(int(data[0].numel()), int(event[0]), hidden, family).to(data.device)


def fit(
    method: str,
    model: nn.Module,
    data,
    *,
    steps: int = 1000,
    batch_size: int = 100,
    encoder: nn.Module | None = None,
    encoder_family: str = "normal",
    particles: int = 8,
    lr: float = 1e-3,
    optimizer="adam",
    checkpoint=None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int | None = None,
    callbacks: Iterable[Callable] = (),
    progress: bool | None = None,
    clip_grad_norm: float | None = None,
) -> History:
    """Train ``model`` and an encoder with a baseline ``method`` (see :data:`METHODS`).

    ``encoder``: a module ``x [B, ...] -> distribution over z`` (batch ``[B]``); built by
    :func:`make_encoder` when omitted. The history's ``loss`` is the negative bound per data point.
    """
    from pyro import poutine
    from pyro.infer import RenyiELBO, Trace_ELBO

    from ..pyro import to_pyro

    check_choice("method", method, METHODS)
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_int("particles", particles, 1)
    check_positive("lr", lr)
    info = check_model(model, data)
    data = check_data(data, info.x_shape, dtype=info.x_dtype).to(info.device)
    encoder = encoder if encoder is not None else make_encoder(model, data, encoder_family)
    _check_encoder(model, encoder, data)
    tag = f"{method}_{id(model)}"
    pyro_model, guide = to_pyro(model, f"model_{tag}"), _guide(encoder, f"encoder_{tag}")
    objective = Trace_ELBO() if method == "vae" else RenyiELBO(alpha=0.0, num_particles=particles, max_plate_nesting=1)
    opt = make_optimizer(optimizer, list(model.parameters()) + list(encoder.parameters()), lr)

    def step(batch, index):
        scale = 1.0 / batch.shape[0]
        scaled_model, scaled_guide = poutine.scale(pyro_model, scale), poutine.scale(guide, scale)
        if method == "vae":
            loss = objective.differentiable_loss(scaled_model, scaled_guide, batch)
            value = float(loss.detach())
            grad_norm = guarded_step(loss, opt, clip_grad_norm)
        else:
            holder = {}

            def backward():
                holder["loss"] = objective.loss_and_grads(scaled_model, scaled_guide, batch)
                return holder["loss"]

            grad_norm = guarded_step(backward, opt, clip_grad_norm)
            value = holder["loss"]
        return {"loss": value, "grad_norm": grad_norm}

    fingerprint = {
        "model": type(model).__qualname__,
        "parameters": {n: list(p.shape) for n, p in model.named_parameters()},
        "encoder": {n: list(p.shape) for n, p in encoder.named_parameters()},
        "config": {"method": method, "batch_size": batch_size, "lr": lr, "particles": particles, "seed": seed, "data_shape": list(data.shape)},
    }
    trainer = Trainer(
        modules={"model": model, "encoder": encoder}, optimizers={"optimizer": opt}, data=data, batch_size=batch_size,
        fingerprint=fingerprint, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, seed=seed,
        callbacks=callbacks, progress=progress, description=method,
    )
    return trainer.run(step, steps)


def _guide(encoder: nn.Module, name: str) -> Callable:
    import pyro

    from ..pyro import _to_event, as_pyro_distribution

    def guide(x):
        pyro.module(name, encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _to_event(as_pyro_distribution(encoder(x))))

    return guide


def _check_encoder(model, encoder, data) -> None:
    with torch.no_grad():
        q = encoder(data[:2])
        p = model.prior(2)
    if tuple(q.batch_shape) + tuple(q.event_shape) != tuple(p.batch_shape) + tuple(p.event_shape):
        raise ModelProtocolError(
            f"the encoder's distribution has batch {tuple(q.batch_shape)}, event {tuple(q.event_shape)} for 2 points, but the "
            f"model's latent (prior(2)) has batch {tuple(p.batch_shape)}, event {tuple(p.event_shape)}"
        )
    if not q.has_rsample:
        raise ConfigError(f"the encoder's {type(q).__name__} is not reparameterisable; vae and iwae need rsample")
