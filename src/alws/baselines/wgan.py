"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) for the same generator.

Hand-written (Pyro has no GAN). Needs the model's ``rsample(n)``: samples differentiable in its
parameters. The history's ``loss`` is the critic's Wasserstein estimate ``E[D(real)] - E[D(fake)]``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelProtocolError
from ..model import check_model
from ..objective import Objective, TrainOptions
from ..training import guarded_step, make_optimizer
from ..validation import check_data, check_int
from .encoders import Critic

__all__ = ["WGANGP", "gradient_penalty"]


class WGANGP(Objective):
    """A :class:`~alws.baselines.encoders.Critic` takes ``n_critic`` steps per generator step on
    ``E[D(fake)] - E[D(real)] + 10 E[(|grad D(x_hat)| - 1)^2]`` (Adam, betas 0.5 / 0.9); the
    generator minimises ``-E[D(fake)]``. The critic's real minibatches come from the loop's own
    minibatch sampler, so that they are checkpointed and resumed with it."""

    name = "wgan-gp"

    def __init__(self, model: nn.Module, critic: nn.Module | None = None, *, n_critic: int = 5):
        if not callable(getattr(model, "rsample", None)):
            raise ModelProtocolError(
                f"method 'wgan-gp' needs {type(model).__name__}.rsample(n): samples x differentiable in the parameters "
                "(sample(n) runs without gradients)"
            )
        check_int("n_critic", n_critic, 1)
        self.model, self.critic, self.n_critic = model, critic, n_critic

    def prepare(self, data) -> torch.Tensor:
        info = check_model(self.model, data)
        data = check_data(data, info.x_shape, dtype=info.x_dtype).to(info.device)
        with torch.no_grad():
            probe = self.model.rsample(2)
        if tuple(probe.shape[1:]) != tuple(data.shape[1:]):
            raise ModelProtocolError(f"{type(self.model).__name__}.rsample gives per-sample shape {tuple(probe.shape[1:])}, "
                                     f"the data {tuple(data.shape[1:])}")
        if self.critic is None:
            self.critic = Critic(int(data[0].numel())).to(device=data.device)
        return data

    def modules(self) -> dict:
        return {"model": self.model, "critic": self.critic}

    def parameters(self) -> list:
        return list(self.model.parameters())

    def configure(self, options: TrainOptions) -> dict:
        self.clip_grad_norm = options.clip_grad_norm
        self.generator_optimizer = make_optimizer(options.optimizer, self.parameters(), options.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=options.lr, betas=(0.5, 0.9))
        return {"generator": self.generator_optimizer, "critic": self.critic_optimizer}

    def describe(self) -> dict:
        return {"method": self.name, "n_critic": self.n_critic}

    def step(self, batch: torch.Tensor, context) -> dict:
        model, critic = self.model, self.critic
        for _ in range(self.n_critic):
            real = context.data[context.sampler.next().to(context.data.device)]
            with torch.no_grad():
                fake = model.rsample(real.shape[0])
            critic_loss = critic(fake).mean() - critic(real).mean() + 10.0 * gradient_penalty(critic, real, fake)
            guarded_step(critic_loss, self.critic_optimizer, self.clip_grad_norm)
        generator_loss = -critic(model.rsample(batch.shape[0])).mean()
        grad_norm = guarded_step(generator_loss, self.generator_optimizer, self.clip_grad_norm)
        with torch.no_grad():
            wasserstein = float(critic(batch).mean() - critic(model.rsample(batch.shape[0])).mean())
        return {"loss": wasserstein, "critic_loss": float(critic_loss.detach()), "grad_norm": grad_norm}


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``E[(|grad_x D(x_hat)| - 1)^2]`` at random interpolates ``x_hat`` of real and fake samples."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), dtype=real.dtype, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return ((grad.reshape(grad.shape[0], -1).norm(dim=1) - 1) ** 2).mean()
