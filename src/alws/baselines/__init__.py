"""Baselines trained by the same loop as ALWS (:class:`alws.training.Trainer`).

``alws.baselines.fit(method, model, data, ...)`` trains ``model`` (and an encoder) in place with
one of :data:`METHODS` and returns the same :class:`alws.History` as :func:`alws.fit`, with the
same progress bar, checkpoints, exact resume and NaN guard. Pyro implements these objectives, so
they come from Pyro:

- ``vae``: reparameterised ELBO (``pyro.infer.Trace_ELBO``), one sample per data point;
- ``iwae``: importance-weighted bound with ``particles`` samples (``RenyiELBO(alpha=0)``);

These need the model's ``prior(n)`` and ``likelihood(z)`` as distributions (see
:func:`alws.pyro.to_pyro`).

- ``rws``: reweighted wake-sleep with ``particles`` samples *per data point* (hand-written:
  Pyro's ``ReweightedWakeSleep`` forms one importance weight per particle for the whole
  minibatch, and its docstring says minibatches are unsupported; the two agree at batch size 1,
  which the tests check). Wake-theta, wake-phi and (with ``insomnia < 1``) sleep-phi updates.
  Needs only ``sample`` and ``log_joint`` plus an encoder.

- ``sivi``: semi-implicit variational inference (Yin & Zhou 2018) with a
  :class:`SemiImplicitEncoder`, maximising ``E[log p(x, z) - log mean_j q(z | psi_j)]`` over
  ``particles + 1`` mixing draws ``psi_j`` (``z`` from the first); hand-written (Pyro has no SIVI).
  Needs only ``sample`` and ``log_joint``.

- ``wgan-gp``: the same generator trained adversarially (Gulrajani et al. 2017): a
  :class:`Critic` takes ``n_critic`` steps per generator step on ``E[D(fake)] - E[D(real)] +
  10 E[(|grad D(x_hat)| - 1)^2]``; the generator minimises ``-E[D(fake)]``. Needs the model's
  ``rsample(n)`` (samples differentiable in its parameters); hand-written (Pyro has no GAN).
  The history's ``loss`` is the critic's Wasserstein estimate ``E[D(real)] - E[D(fake)]``.

Cost per step: ``vae`` and ``vae-flow`` one encoder pass and one ``log_joint`` per data point;
``iwae``, ``rws`` and ``sivi`` ``particles`` of each; ``sf-vae`` as ``vae``, with a
higher-variance encoder gradient; ``wgan-gp`` ``n_critic`` critic updates and one generator
update. ``benchmarks/methods.py`` measures them against ALWS.
"""
from __future__ import annotations

import time

from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError, ModelProtocolError
from ..model import check_model
from ..training import History, Trainer, fingerprint, guarded_step, make_optimizer, with_time_budget
from ..validation import check_choice, check_data, check_int, check_positive
from .encoders import ConvEncoder, Critic, FlowEncoder, MLPEncoder, SemiImplicitEncoder

__all__ = ["METHODS", "fit", "fit_pyro", "rws_loss", "sivi_loss", "gradient_penalty", "MLPEncoder", "ConvEncoder", "FlowEncoder", "SemiImplicitEncoder", "Critic", "make_encoder"]

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


def make_encoder(model: nn.Module, data: torch.Tensor, family: str = "normal", hidden: int = 64) -> nn.Module:
    """An encoder from the data to the model's latent size (``[n, d]`` latents, read from
    ``model.sample``): a :class:`ConvEncoder` for images (per-point shape ``[C, H, W]`` or
    ``[H, W]`` with sides of at least 8), an :class:`MLPEncoder` otherwise."""
    with torch.no_grad():
        z, _ = model.sample(2)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ModelProtocolError(
            f"the default encoder needs real vector latents z [n, d]; {type(model).__name__}.sample gives "
            f"{type(z).__name__}{tuple(z.shape) if isinstance(z, torch.Tensor) else ''}: pass an encoder"
        )
    shape = tuple(data.shape[1:])
    if len(shape) in (2, 3) and min(shape[-2:]) >= 8:
        return ConvEncoder(shape, int(z.shape[1]), family=family).to(data.device)
    return MLPEncoder(int(data[0].numel()), int(z.shape[1]), hidden, family).to(data.device)


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
    insomnia: float = 1.0,
    n_flows: int = 4,
    n_critic: int = 5,
    critic: nn.Module | None = None,
    train_model: bool = True,
    max_seconds: float | None = None,
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
    :func:`make_encoder` when omitted. ``train_model=False`` trains only the encoder (the model's
    parameters stay fixed: amortised inference at given parameters). ``max_seconds`` stops
    training once that much wall time has passed (a budget matched to another method's).
    The history's ``loss`` is the negative bound per data point.
    """
    started = time.perf_counter()  # a time budget covers the set-up too
    check_choice("method", method, METHODS)
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_int("particles", particles, 1)
    check_positive("lr", lr)
    info = check_model(model, data)
    data = check_data(data, info.x_shape, dtype=info.x_dtype).to(info.device)
    if not 0.0 <= insomnia <= 1.0:
        raise ConfigError(f"insomnia must be in [0, 1], got {insomnia}")
    if method == "wgan-gp":
        return _fit_wgan(model, data, steps, batch_size, critic, n_critic, lr, optimizer, checkpoint, checkpoint_every, resume, seed,
                         callbacks, progress, clip_grad_norm, (max_seconds, started))
    if encoder is None:
        if method == "sivi":
            base = make_encoder(model, data, encoder_family)
            encoder = SemiImplicitEncoder(int(data[0].numel()), base.z_dim).to(data.device)
        else:
            encoder = make_encoder(model, data, encoder_family)
            if method == "vae-flow":
                encoder = FlowEncoder(encoder, n_flows)
    if method == "sivi" and not callable(getattr(encoder, "mixing", None)):
        raise ModelProtocolError("sivi needs a semi-implicit encoder with a mixing(x, k) method (see SemiImplicitEncoder)")
    _check_encoder(model, encoder, data, needs_rsample=method in ("vae", "iwae", "vae-flow", "sivi"))
    trained = (list(model.parameters()) if train_model else []) + list(encoder.parameters())
    opt = make_optimizer(optimizer, trained, lr)
    if method in ("rws", "sivi"):
        objective = rws_loss if method == "rws" else (lambda m, e, x, k, _: sivi_loss(m, e, x, k))

        def step(batch, index):
            loss, bound = objective(model, encoder, batch, particles, insomnia)
            return {"loss": bound, "grad_norm": guarded_step(loss, opt, clip_grad_norm)}

    else:
        step = _pyro_step(method, model, encoder, particles, opt, clip_grad_norm)
    modules = {"model": model, "encoder": encoder}
    config = {"method": method, "batch_size": batch_size, "lr": lr, "particles": particles, "insomnia": insomnia, "n_flows": n_flows,
              "train_model": train_model, "seed": seed}
    return _trainer(modules, {"optimizer": opt}, data, batch_size, config, checkpoint, checkpoint_every, resume, seed, callbacks,
                    (max_seconds, started), progress, method).run(step, steps)


def _trainer(modules, optimizers, data, batch_size, config, checkpoint, checkpoint_every, resume, seed, callbacks, budget,
             progress, description) -> Trainer:
    """The shared :class:`Trainer` of every baseline: fingerprint from ``modules`` and ``config``,
    the wall-time budget ``(max_seconds, started)`` added to ``callbacks``."""
    return Trainer(
        modules=modules, optimizers=optimizers, data=data, batch_size=batch_size, fingerprint=fingerprint(modules, config),
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, seed=seed,
        callbacks=with_time_budget(callbacks, *budget), progress=progress, description=description,
    )


def rws_loss(model: nn.Module, encoder: nn.Module, x: torch.Tensor, particles: int, insomnia: float = 1.0):
    """Per-data-point reweighted wake-sleep surrogate for a minibatch ``x [B, ...]``.

    With ``K = particles`` draws ``z_bk ~ q(z | x_b)`` (not reparameterised) and normalised weights
    ``w_bk`` of ``p(z_bk, x_b) / q(z_bk | x_b)`` over ``k`` *for each b*, the surrogate's gradient
    is wake-theta ``-mean_b sum_k w_bk grad log p(z_bk, x_b)`` for the model and
    ``insomnia * wake-phi + (1 - insomnia) * sleep-phi`` for the encoder, with wake-phi
    ``-mean_b sum_k w_bk grad log q(z_bk | x_b)`` and sleep-phi ``-mean grad log q(z | x)`` over
    ``B`` pairs ``(z, x) ~ p``. Returns ``(surrogate, bound)``; ``bound`` is the negative
    importance-weighted bound per data point (a float).
    """
    b = x.shape[0]
    q = encoder(x)
    with torch.no_grad():
        z = q.sample((particles,))  # [K, B, d]
    log_q = q.log_prob(z)  # [K, B]
    xs = x.unsqueeze(0).expand(particles, *x.shape).reshape(particles * b, *x.shape[1:])
    log_p = model.log_joint(z.reshape(particles * b, *z.shape[2:]), xs).reshape(particles, b)
    log_w = log_p - log_q.detach()
    weights = torch.softmax(log_w, 0).detach()
    surrogate = -(weights * log_p).sum(0).mean()
    if insomnia > 0:
        surrogate = surrogate - insomnia * (weights * log_q).sum(0).mean()
    if insomnia < 1:
        with torch.no_grad():
            z_sleep, x_sleep = model.sample(b)
        surrogate = surrogate - (1 - insomnia) * encoder(x_sleep).log_prob(z_sleep).mean()
    bound = -float((torch.logsumexp(log_w.detach(), 0) - torch.log(torch.tensor(float(particles)))).mean())
    return surrogate, bound


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``E[(|grad_x D(x_hat)| - 1)^2]`` at random interpolates ``x_hat`` of real and fake samples."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), dtype=real.dtype, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return ((grad.reshape(grad.shape[0], -1).norm(dim=1) - 1) ** 2).mean()


def _fit_wgan(model, data, steps, batch_size, critic, n_critic, lr, optimizer, checkpoint, checkpoint_every, resume, seed,
              callbacks, progress, clip_grad_norm, budget):
    if not callable(getattr(model, "rsample", None)):
        raise ModelProtocolError(
            f"method 'wgan-gp' needs {type(model).__name__}.rsample(n): samples x differentiable in the parameters "
            "(sample(n) runs without gradients)"
        )
    check_int("n_critic", n_critic, 1)
    with torch.no_grad():
        probe = model.rsample(2)
    if tuple(probe.shape[1:]) != tuple(data.shape[1:]):
        raise ModelProtocolError(f"{type(model).__name__}.rsample gives per-sample shape {tuple(probe.shape[1:])}, the data {tuple(data.shape[1:])}")
    critic = critic if critic is not None else Critic(int(data[0].numel())).to(device=data.device)
    gen_opt = make_optimizer(optimizer, model.parameters(), lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    sampler_holder = {}

    def step(batch, index):
        for _ in range(n_critic):
            real = sampler_holder["trainer"].data[sampler_holder["trainer"].sampler.next().to(data.device)]
            with torch.no_grad():
                fake = model.rsample(real.shape[0])
            critic_loss = critic(fake).mean() - critic(real).mean() + 10.0 * gradient_penalty(critic, real, fake)
            guarded_step(critic_loss, critic_opt, clip_grad_norm)
        generator_loss = -critic(model.rsample(batch.shape[0])).mean()
        grad_norm = guarded_step(generator_loss, gen_opt, clip_grad_norm)
        with torch.no_grad():
            wasserstein = float(critic(batch).mean() - critic(model.rsample(batch.shape[0])).mean())
        return {"loss": wasserstein, "critic_loss": float(critic_loss.detach()), "grad_norm": grad_norm}

    modules = {"model": model, "critic": critic}
    config = {"method": "wgan-gp", "batch_size": batch_size, "lr": lr, "n_critic": n_critic, "seed": seed}
    trainer = _trainer(modules, {"generator": gen_opt, "critic": critic_opt}, data, batch_size, config, checkpoint, checkpoint_every,
                       resume, seed, callbacks, budget, progress, "wgan-gp")
    sampler_holder["trainer"] = trainer
    return trainer.run(step, steps)


def sivi_loss(model: nn.Module, encoder: "SemiImplicitEncoder", x: torch.Tensor, particles: int):
    """Negative semi-implicit bound per data point (Yin & Zhou 2018), ``(loss, float)``.

    Draws ``psi_0..psi_K`` (``K = particles``) per data point, ``z ~ q(z | psi_0)``
    (reparameterised), and uses ``log q(z | x) ~ log mean_j q(z | psi_j)``: a lower bound on the
    ELBO that tightens as ``K`` grows.
    """
    q = encoder.mixing(x, particles + 1)  # batch [K+1, B, d]
    z = q.loc[0] + q.scale[0] * torch.randn_like(q.loc[0])
    log_q = torch.logsumexp(q.log_prob(z.unsqueeze(0)).sum(-1), 0) - torch.log(torch.tensor(float(particles + 1)))
    loss = -(model.log_joint(z, x) - log_q).mean()
    return loss, float(loss.detach())


def _pyro_step(method, model, encoder, particles, opt, clip_grad_norm):
    """One step of a Pyro-backed objective for an alws model and an encoder."""
    from ..pyro import to_pyro

    tag = f"{method}_{id(model)}"
    pyro_model = to_pyro(model, f"model_{tag}")
    guide = _guide(encoder, f"encoder_{tag}", score_function=method == "sf-vae")
    return _pyro_objective_step(method, pyro_model, guide, particles, opt, clip_grad_norm)


def _pyro_objective_step(method, pyro_model, guide, particles, opt, clip_grad_norm, penalty=None):
    """One step of ``method``'s Pyro objective for a model/guide pair, scaled per data point
    (loss and gradients alike); ``penalty()`` (a scalar) is added to the loss when given."""
    from pyro import poutine
    from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO

    import pyro

    if method == "sf-vae":
        # TraceGraph_ELBO keeps its decaying-average baselines in the global param store, keyed
        # by site: drop any left by an earlier fit (they have that fit's minibatch shape).
        store = pyro.get_param_store()
        for key in [k for k in store.keys() if k.startswith("__baseline_avg_downstream_cost_")]:
            del store[key]
    if method in ("vae", "vae-flow"):
        objective = Trace_ELBO()
    elif method == "iwae":
        objective = RenyiELBO(alpha=0.0, num_particles=particles, max_plate_nesting=1)
    else:
        objective = TraceGraph_ELBO()

    def step(batch, index):
        scale = 1.0 / batch.shape[0]
        scaled_model, scaled_guide = poutine.scale(pyro_model, scale), poutine.scale(guide, scale)
        if method in ("vae", "vae-flow"):
            loss = objective.differentiable_loss(scaled_model, scaled_guide, batch)
            value = float(loss.detach())
            if penalty is not None:
                loss = loss + penalty()
            grad_norm = guarded_step(loss, opt, clip_grad_norm)
        else:
            holder = {}

            def backward():
                holder["loss"] = objective.loss_and_grads(scaled_model, scaled_guide, batch)
                if penalty is None:
                    return holder["loss"]
                extra = penalty()
                extra.backward()
                return holder["loss"] + float(extra.detach())

            grad_norm = guarded_step(backward, opt, clip_grad_norm)
            value = holder["loss"]
        return {"loss": value, "grad_norm": grad_norm}

    return step


def fit_pyro(
    method: str,
    pyro_model: Callable,
    guide: Callable,
    modules: dict,
    data,
    *,
    steps: int = 1000,
    batch_size: int = 100,
    particles: int = 8,
    penalty: Callable[[], torch.Tensor] | None = None,
    max_seconds: float | None = None,
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
    """Train a hand-written Pyro ``pyro_model(x)`` / ``guide(x)`` pair with ``method`` (``vae``,
    ``iwae`` or ``sf-vae``; the guide decides which sites are reparameterised) through the shared
    :class:`~alws.training.Trainer`, for models whose latents are not one vector (e.g. a discrete
    component and a continuous one). ``modules``: ``name -> nn.Module`` holding every trained
    parameter (checkpointed; both functions must use only these). ``penalty()``: optional scalar
    added to the loss per step (MAP terms per data point)."""
    started = time.perf_counter()
    check_choice("method", method, ("vae", "iwae", "sf-vae"))
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_positive("lr", lr)
    data = check_data(data)
    params = [p for m in modules.values() for p in m.parameters()]
    opt = make_optimizer(optimizer, params, lr)
    step = _pyro_objective_step(method, pyro_model, guide, particles, opt, clip_grad_norm, penalty)
    config = {"method": method, "batch_size": batch_size, "lr": lr, "particles": particles, "seed": seed}
    return _trainer(modules, {"optimizer": opt}, data, batch_size, config, checkpoint, checkpoint_every, resume, seed, callbacks,
                    (max_seconds, started), progress, method).run(step, steps)


def _guide(encoder: nn.Module, name: str, score_function: bool = False) -> Callable:
    import pyro

    from ..pyro import _to_event, as_pyro_distribution, non_reparameterised

    infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}} if score_function else {}

    def guide(x):
        pyro.module(name, encoder)
        with pyro.plate("data", x.shape[0]):
            q = as_pyro_distribution(encoder(x))
            pyro.sample("z", _to_event(non_reparameterised(q) if score_function else q), infer=infer)

    return guide


def _check_encoder(model, encoder, data, needs_rsample: bool) -> None:
    with torch.no_grad():
        q = encoder(data[:2])
        z, _ = model.sample(2)
    shape = tuple(q.batch_shape) + tuple(q.event_shape)
    if not isinstance(z, torch.Tensor) or shape != tuple(z.shape):
        expected = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ModelProtocolError(
            f"the encoder's distribution for 2 data points has shape {shape} (batch + event), but the model's latents "
            f"for 2 samples have shape {expected}"
        )
    if needs_rsample and not q.has_rsample:
        raise ConfigError(f"the encoder's {type(q).__name__} is not reparameterisable; vae and iwae need rsample (use sf-vae or rws)")
