"""Baselines trained by the same loop as ALWS (:func:`alws.objective.train`).

Each method is an :class:`~alws.objective.Objective` in one file:

| method | objective | file |
|---|---|---|
| ``vae``, ``iwae``, ``sf-vae``, ``vae-flow`` | :class:`ELBO` (Pyro's bounds) | ``baselines/elbo.py`` |
| hand-written Pyro model/guide pairs | :class:`PyroELBO` | ``baselines/elbo.py`` |
| ``rws`` | :class:`RWS` | ``baselines/rws.py`` |
| ``sivi`` | :class:`SIVI` | ``baselines/sivi.py`` |
| ``wgan-gp`` | :class:`WGANGP` | ``baselines/wgan.py`` |

(ALWS itself: :class:`alws.learner.ALWSObjective`.) ``alws.baselines.fit(method, model, data,
...)`` builds the method's objective with :func:`make_objective` and trains it in place, returning
the same :class:`alws.History` as :func:`alws.fit`, with the same progress bar, checkpoints, exact
resume and NaN guard; ``alws.fit(objective, data, ...)`` does the same for an objective built by
hand.

Cost per step: ``vae`` and ``vae-flow`` one encoder pass and one ``log_joint`` per data point;
``iwae``, ``rws`` and ``sivi`` ``particles`` of each; ``sf-vae`` as ``vae``, with a
higher-variance encoder gradient; ``wgan-gp`` ``n_critic`` critic updates and one generator
update. ``benchmarks/methods.py`` measures them against ALWS.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..objective import Objective, TrainOptions, train
from ..training import History
from ..validation import check_choice
from .elbo import ELBO, PyroELBO
from .encoders import ConvEncoder, Critic, FlowEncoder, MLPEncoder, SemiImplicitEncoder, make_encoder
from .rws import RWS, rws_loss
from .sivi import SIVI, sivi_loss
from .wgan import WGANGP, gradient_penalty

__all__ = [
    "METHODS", "make_objective", "fit", "fit_pyro", "ELBO", "PyroELBO", "RWS", "SIVI", "WGANGP", "rws_loss", "sivi_loss",
    "gradient_penalty", "MLPEncoder", "ConvEncoder", "FlowEncoder", "SemiImplicitEncoder", "Critic", "make_encoder",
]

#: Method name -> short description.
METHODS = {
    "vae": "reparameterised ELBO (Pyro Trace_ELBO)",
    "iwae": "importance-weighted bound with `particles` samples (Pyro RenyiELBO, alpha=0)",
    "sf-vae": "ELBO with score-function encoder gradients and a baseline (Pyro TraceGraph_ELBO)",
    "vae-flow": "reparameterised ELBO with an encoder followed by planar flows (Pyro transforms)",
    "rws": "reweighted wake-sleep, per data point, `particles` samples (hand-written)",
    "sivi": "semi-implicit variational inference, `particles` extra mixing draws (hand-written)",
    "wgan-gp": "Wasserstein GAN with gradient penalty; needs model.rsample(n) (hand-written)",
}


def make_objective(
    method: str,
    model: nn.Module,
    *,
    encoder: nn.Module | None = None,
    encoder_family: str = "normal",
    particles: int = 8,
    insomnia: float = 1.0,
    n_flows: int = 4,
    n_critic: int = 5,
    critic: nn.Module | None = None,
    train_model: bool = True,
) -> Objective:
    """The objective of baseline ``method`` (see :data:`METHODS`) for ``model``.

    ``encoder``: a module ``x [B, ...] -> distribution over z`` (batch ``[B]``); built for the data
    by :func:`make_encoder` when omitted. ``train_model=False`` trains only the encoder (the
    model's parameters stay fixed: amortised inference at given parameters). ``particles``:
    samples per data point (``iwae``, ``rws``, ``sivi``); ``insomnia``: the wake-phi share of
    RWS's encoder update; ``n_flows``: planar flows of ``vae-flow``; ``n_critic``, ``critic``: the
    WGAN-GP critic's steps per generator step and the critic module.
    """
    check_choice("method", method, METHODS)
    common = {"encoder_family": encoder_family, "train_model": train_model}
    if method == "wgan-gp":
        return WGANGP(model, critic, n_critic=n_critic)
    if method == "rws":
        return RWS(model, encoder, particles=particles, insomnia=insomnia, **common)
    if method == "sivi":
        return SIVI(model, encoder, particles=particles, **common)
    return ELBO(method, model, encoder, particles=particles, n_flows=n_flows, **common)


def fit(method: str, model: nn.Module, data, options: TrainOptions | None = None, **keywords) -> History:
    """Train ``model`` (and an encoder, or a critic) in place with baseline ``method``.

    ``options`` (a :class:`~alws.objective.TrainOptions`) or its fields as keywords (``steps``,
    ``batch_size``, ``lr``, ``optimizer``, ``checkpoint``, ``checkpoint_every``, ``resume``,
    ``seed``, ``callbacks``, ``progress``, ``clip_grad_norm``, ``max_seconds``: as in
    :func:`alws.fit`); the other keywords go to :func:`make_objective`. The history's ``loss`` is
    the negative bound per data point (WGAN-GP: the critic's Wasserstein estimate).
    """
    started = time.perf_counter()  # a time budget covers the set-up too
    options, rest = TrainOptions.split(options, keywords)
    return train(make_objective(method, model, **rest), data, options, started)


def fit_pyro(method: str, pyro_model: Callable, guide: Callable, modules: Mapping[str, nn.Module], data,
             options: TrainOptions | None = None, *, particles: int = 8, penalty: Callable[[], torch.Tensor] | None = None,
             **keywords) -> History:
    """Train a hand-written Pyro ``pyro_model(x)`` / ``guide(x)`` pair with ``method`` (``vae``,
    ``iwae`` or ``sf-vae``) on the shared loop: :class:`PyroELBO` (``modules``, ``particles``,
    ``penalty``) with the training options of :func:`fit`."""
    started = time.perf_counter()
    options, rest = TrainOptions.split(options, keywords)
    if rest:
        raise ConfigError(f"unknown options of fit_pyro: {', '.join(rest)}")
    return train(PyroELBO(method, pyro_model, guide, modules, particles=particles, penalty=penalty), data, options, started)
