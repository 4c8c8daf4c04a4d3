"""Stein control variates for the wake gradient of models with a continuous latent.

For a continuous latent ``z [K]`` whose posterior density vanishes at the edge of its support,
Stein's identity (integration by parts) with ``f(z) = z`` gives, for every data point ``x``,

    E_{p(z | x)}[ s(z, x) ] = 0,      s(z, x) = grad_z log p(z, x) z^T + I      [K, K].

So for any linear map ``C`` from ``K x K`` matrices to parameters, ``grad_theta log p(z, x) -
C s(z, x)`` has the same posterior mean as the ALWS target ``grad_theta log p(z, x)``: the wake
gradient is unchanged in expectation, but the part of the target that ``s`` explains no longer
depends on how well the kernel weights match the posterior. :class:`SteinControlVariate` fits
``C`` by least squares of per-sample parameter gradients on ``s`` over sleep samples (the
coefficient that minimises the average posterior variance of the corrected target, because
``s`` has conditional mean zero given every ``x``), and turns the weighted sum
``S = sum_n a_n s(z_n, x)`` into a correction of the gradient.

Where it pays: a sharp likelihood with a parameter acting on ``z`` (noisy ICA: ``x ~ N(W z,
sigma^2 I)``). There ``W^T grad_W log p(z, x) = s(z, x) + sign(z) z^T - I`` for a Laplace prior,
so the corrected target's component in the span of ``W`` is ``sign(z) z^T - I``, of order one,
instead of a difference of terms of order ``1 / sigma^2`` whose small remainder (the rotation of
``W``) the regression cannot resolve.
"""
from __future__ import annotations

import math

import torch

from .errors import ConfigError
from .model import trainable_parameters

__all__ = ["SteinControlVariate", "check_stein_setting"]


def check_stein_setting(value) -> None:
    """Refuse a ``stein`` value other than ``True``, ``False`` or a non-empty list of names."""
    if not (value is True or value is False or (isinstance(value, (list, tuple)) and value and all(isinstance(n, str) for n in value))):
        raise ConfigError(f"stein must be True, False or a list of parameter names, got {value!r}")


class SteinControlVariate:
    """Fits ``C`` on sleep latents and corrects the wake gradient (see the module docstring).

    ``C`` is chosen to cancel the part of the target that moves with the data: for a likelihood
    in an exponential family, ``grad_theta log p(z, x) = J_theta(z)^T S(x) + (terms in z)`` and
    ``grad_z log p(z, x) = J_z(z)^T S(x) + (terms in z)``, with ``J`` the Jacobians of the natural
    parameters ``eta(z)``. ``C`` minimises ``sum_n E_u |J_theta(z_n)^T u - C vec(J_z(z_n)^T u
    z_n^T)|^2`` over directions ``u ~ N(0, I)`` of ``S``, in closed form from the Jacobians (no
    sampling noise: a least-squares fit on per-sample gradients instead was measured to be too
    noisy to cancel anything). For noisy ICA it is exactly ``W (W^T W)^-1``.

    Args:
        model: the latent-variable model; its ``sample`` must return ``z`` as one float tensor
            ``[N, ...]`` (``K`` numbers each), differentiable through ``log_joint``.
        natural_params: ``eta(z) -> [n, q]`` (the fast path's targets after the first column).
        names: the parameters whose gradient is corrected (default: every trainable one).
        samples: sleep latents used to fit ``C`` (default ``max(32, 2 K)``, at most ``N``; ``C`` needs at
            least ``K`` for a full-rank fit).
        ridge: ridge of the solve, relative to the mean diagonal of its matrix.
        max_entries: refuse when ``C [P, K^2]`` or the cotangents ``[K^2, n, q]`` would exceed
            this many numbers (large networks: leave ``stein`` off).
    """

    def __init__(self, model, natural_params, names=None, samples: int | None = None, ridge: float = 1e-8, max_entries: float = 5e7):
        self.model, self.natural_params = model, natural_params
        known = [name for name, _ in trainable_parameters(model)]
        unknown = [name for name in (names or []) if name not in known]
        if unknown:
            raise ConfigError(f"stein names parameters {unknown} that {type(model).__name__} does not have; its parameters: {known}")
        self.names = list(known if names is None else names)
        self.samples, self.ridge, self.max_entries = samples, ridge, max_entries
        self.coefficients: torch.Tensor | None = None  # C [P, K*K]

    @staticmethod
    def latent_dim(z) -> int:
        """``K`` for a sleep latent ``z [N, ...]``; refuses latents Stein's identity cannot use."""
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            kind = type(z).__name__ if not isinstance(z, torch.Tensor) else f"a {z.dtype} tensor"
            raise ConfigError(f"stein=True needs one continuous latent tensor z; this model's sample returns {kind} "
                              "(discrete latents or several latent blocks have no Stein identity here)")
        return math.prod(z.shape[1:])

    def parameters(self) -> list:
        """The corrected parameters, in the model's order."""
        return [p for name, p in trainable_parameters(self.model) if name in self.names]

    def fit(self, z: torch.Tensor) -> None:
        """Fit ``C`` on (at most ``samples`` of) the sleep latents ``z [N, ...]``."""
        k = self.latent_dim(z)
        n = min(len(z), self.samples or max(32, 2 * k))
        params = self.parameters()
        z = z[:n].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            eta = self.natural_params(z).reshape(n, -1)  # [n, q]
            q = eta.shape[1]
            size = max(sum(p.numel() for p in params), n * q) * k * k
            if size > self.max_entries:
                raise ConfigError(f"stein=True would need {size:.3g} numbers ({k} latents, {q} natural parameters, {n} samples); "
                                  f"the limit is {self.max_entries:.3g}: leave stein off for this model")
            eye = torch.eye(q, dtype=eta.dtype, device=eta.device)[:, None, :].expand(q, n, q)
            jz = torch.autograd.grad(eta, z, eye, is_grads_batched=True, retain_graph=True)[0].reshape(q, n, k).permute(1, 0, 2)  # [n, q, K]
            flat_z = z.detach().reshape(n, k)
            cot = (jz[:, :, :, None] * flat_z[:, None, None, :]).permute(2, 3, 0, 1).reshape(k * k, n, q)  # [(k, l), n, q]
            grads = torch.autograd.grad(eta, params, cot, is_grads_batched=True, allow_unused=True)
        cross = torch.cat([torch.zeros(k * k, p.numel(), dtype=torch.float64, device=eta.device) if g is None else g.reshape(k * k, -1).double()
                           for p, g in zip(params, grads)], 1).T  # [P, K^2]
        jzd, zd = jz.double(), flat_z.double()
        gram = torch.einsum("nqa,nqb,nl,nm->albm", jzd, jzd, zd, zd).reshape(k * k, k * k)
        gram.diagonal().add_(self.ridge * gram.diagonal().mean().clamp_min(1e-300))
        self.coefficients = torch.linalg.solve(gram, cross.T).T  # [P, K^2]; gram is symmetric

    def statistic(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``s(z_n, x_n)`` flattened, ``[n, K*K]`` (float64, no gradient): posterior mean zero."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            score = torch.autograd.grad(self.model.log_joint(z, x).sum(), z)[0]
        flat_z, flat_score = z.detach().reshape(len(z), -1), score.reshape(len(z), -1)
        eye = torch.eye(flat_z.shape[1], dtype=flat_z.dtype, device=flat_z.device)
        return (flat_score[:, :, None] * flat_z[:, None, :] + eye).reshape(len(z), -1).double()

    def correction(self, z_grad: torch.Tensor, surrogate: torch.Tensor, mass: torch.Tensor) -> list[torch.Tensor]:
        """``C vec(S)`` split into one tensor per parameter, for ``S = sum_n grad_{z_n} L z_n^T +
        mass I``, where ``surrogate`` ``L`` is the weighted sum of the sleep targets (computed from
        ``z_grad``, which requires grad) and ``mass = sum_n a_n`` (the weights' total)."""
        score = torch.autograd.grad(surrogate, z_grad, retain_graph=True)[0]
        flat_z, flat_score = z_grad.detach().reshape(len(z_grad), -1).double(), score.reshape(len(z_grad), -1).double()
        S = flat_score.T @ flat_z + mass * torch.eye(flat_z.shape[1], dtype=torch.float64, device=flat_z.device)
        c = self.coefficients @ S.reshape(-1)
        out, start = [], 0
        for p in self.parameters():
            out.append(c[start : start + p.numel()].reshape(p.shape).to(p.dtype))
            start += p.numel()
        return out
