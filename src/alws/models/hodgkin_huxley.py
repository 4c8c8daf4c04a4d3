"""A noisy Hodgkin-Huxley neuron as a latent-variable model (Experiment V.1).

Four states (V, m, h, n) with sodium, potassium and leak currents (rate functions in the form of
Pospischil et al. 2008, with threshold ``V_T``), Euler-discretised at ``dt`` ms. Process noise
enters the membrane equation each step; the observation is ``x_t = V_t + noise``. The latent is
the whole voltage path ``V_{1..T}`` (``[n, T]``); the gates are deterministic functions of it, so
``log p(z)`` is a sum of Gaussian transition densities and ``p(x | z)`` is ``Normal(V, sigma_obs)``
(an exponential family: the fast path applies).

Units: V in mV, t in ms, conductances in mS/cm^2, C_m in uF/cm^2, currents in uA/cm^2.
"""
from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

from ..errors import ConfigError
from ..model import LatentVariableModel

__all__ = ["HodgkinHuxley", "step_current", "spike_times", "rates", "PARAMETERS", "LOG_SCALE", "TRUTH", "VOLT_UNIT"]

#: Names of the learned parameters; ``LOG_SCALE`` ones are stored as logarithms.
PARAMETERS = ("C_m", "g_l", "E_l", "g_Na", "E_Na", "g_K", "E_K", "V_T", "sigma_process", "sigma_obs")
LOG_SCALE = ("C_m", "g_l", "g_Na", "g_K", "sigma_process", "sigma_obs")
#: Voltage-valued parameters are stored in units of ``VOLT_UNIT`` mV, so that an optimiser step of a
#: given size moves them about as far, relatively, as the log-scale ones.
VOLT_UNIT = 10.0
TRUTH = {"C_m": 1.0, "g_l": 0.1, "E_l": -70.42, "g_Na": 50.0, "E_Na": 50.0, "g_K": 5.0, "E_K": -90.0, "V_T": -60.0, "sigma_process": 0.1, "sigma_obs": 1.0}
WRONG_START = {"C_m": 2.0, "g_l": 0.2, "E_l": -60.0, "g_Na": 40.0, "E_Na": 40.0, "g_K": 3.0, "E_K": -80.0, "V_T": -50.0, "sigma_process": 1.0, "sigma_obs": 30.0}


#: Soft limit (mV) on the Euler increment of V per step, ``dV -> L tanh(dV / L)``. At the true
#: parameters the largest increment is 35 mV (a spike's upstroke), changed by 1% at L = 200; it
#: keeps explicit Euler from diverging at parameter values the optimiser passes through (a run
#: of 600 steps produced non-finite traces at step 121 without it). Part of the model, so
#: sampling and ``log_prior`` agree.
MAX_STEP_MV = 200.0


def x_over_expm1(y: torch.Tensor) -> torch.Tensor:
    """``y / (exp(y) - 1)``, continuous (= 1) at ``y = 0`` and with finite gradient there."""
    small = y.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(y), y)
    return torch.where(small, 1.0 - y / 2.0 + y * y / 12.0, safe / torch.expm1(safe))


def rates(v: torch.Tensor, v_t: torch.Tensor) -> tuple:
    """Opening/closing rates ``(alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n)`` in 1/ms.

    The m and n rates have removable 0/0 points (at ``V - V_T = 13, 40, 15``); they are written with
    :func:`x_over_expm1`, so they are finite and continuous there.
    """
    u = v - v_t
    alpha_m = 1.28 * x_over_expm1(-(u - 13.0) / 4.0)
    beta_m = 1.4 * x_over_expm1((u - 40.0) / 5.0)
    alpha_h = 0.128 * torch.exp(-(u - 17.0) / 18.0)
    beta_h = 4.0 / (1.0 + torch.exp(-(u - 40.0) / 5.0))
    alpha_n = 0.16 * x_over_expm1(-(u - 15.0) / 5.0)
    beta_n = 0.5 * torch.exp(-(u - 10.0) / 40.0)
    return alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n


def step_current(n_steps: int, amplitude: float, noise: float, seed: int = 0) -> torch.Tensor:
    """Injected current ``[n_steps]``: 0 in the first and last 10%, ``amplitude`` between, plus
    a fixed (seeded) Gaussian noise of std ``noise`` wherever it is on."""
    gen = torch.Generator().manual_seed(seed)
    current = torch.zeros(n_steps, dtype=torch.float64)
    on, off = int(0.1 * n_steps), n_steps - int(0.1 * n_steps)
    current[on:off] = amplitude + noise * torch.randn(off - on, generator=gen, dtype=torch.float64)
    return current


class HodgkinHuxley(LatentVariableModel):
    """Noisy HH neuron over ``n_steps`` Euler steps of ``dt`` ms driven by ``current [n_steps]``.

    ``sample(n) -> (V [n, T], x [n, T])``; ``log_joint`` sums the Gaussian transitions of ``V``
    (given the deterministic gates) and the observation densities.
    """

    def __init__(self, current: torch.Tensor, dt: float = 0.05, params: dict | None = None, v0: float = -70.0):
        super().__init__()
        if dt <= 0:
            raise ConfigError(f"dt must be > 0 ms, got {dt}")
        self.dt, self.v0 = dt, v0
        self.register_buffer("current", torch.as_tensor(current, dtype=torch.float64))
        params = {**TRUTH, **(params or {})}
        for name in PARAMETERS:
            value = math.log(params[name]) if name in LOG_SCALE else params[name] / VOLT_UNIT
            setattr(self, f"log_{name}" if name in LOG_SCALE else name, nn.Parameter(torch.tensor(float(value), dtype=torch.float64)))

    def value(self, name: str) -> torch.Tensor:
        """A parameter on its natural scale (mV, mS/cm^2, uF/cm^2)."""
        return getattr(self, f"log_{name}").exp() if name in LOG_SCALE else getattr(self, name) * VOLT_UNIT

    def values(self) -> dict:
        return {name: float(self.value(name).detach()) for name in PARAMETERS}

    def _gates0(self, n):
        v = torch.full((n,), self.v0, dtype=torch.float64, device=self.current.device)
        am, bm, ah, bh, an, bn = rates(v, self.value("V_T"))
        return v, am / (am + bm), ah / (ah + bh), an / (an + bn)

    def _drift(self, v, m, h, n_gate, t):
        """Deterministic Euler update: ``(V mean increment, m, h, n at the next step)``."""
        p = self.value
        am, bm, ah, bh, an, bn = rates(v, p("V_T"))
        i_ion = p("g_Na") * m**3 * h * (v - p("E_Na")) + p("g_K") * n_gate**4 * (v - p("E_K")) + p("g_l") * (v - p("E_l"))
        dv = self.dt * (self.current[t] - i_ion) / p("C_m")
        dv = MAX_STEP_MV * torch.tanh(dv / MAX_STEP_MV)  # soft limit: see MAX_STEP_MV
        m = m + self.dt * (am * (1 - m) - bm * m)
        h = h + self.dt * (ah * (1 - h) - bh * h)
        n_gate = n_gate + self.dt * (an * (1 - n_gate) - bn * n_gate)
        return dv, m.clamp(0, 1), h.clamp(0, 1), n_gate.clamp(0, 1)

    def simulate(self, n: int) -> torch.Tensor:
        """Voltage paths ``[n, T]`` (no gradient)."""
        with torch.no_grad():
            v, m, h, g = self._gates0(n)
            out = torch.empty(n, self.current.shape[0], dtype=torch.float64, device=self.current.device)
            sigma = self.value("sigma_process")
            for t in range(self.current.shape[0]):
                dv, m, h, g = self._drift(v, m, h, g, t)
                v = v + dv + sigma * torch.randn_like(v)
                out[:, t] = v
            return out

    def sample(self, n: int):
        with torch.no_grad():
            v = self.simulate(n)
            return v, v + self.value("sigma_obs") * torch.randn_like(v)

    def log_prior(self, v: torch.Tensor) -> torch.Tensor:
        """``log p(V_{1..T})``, ``[n]``: Gaussian Euler transitions given the deterministic gates."""
        n = v.shape[0]
        prev, m, h, g = self._gates0(n)
        means = []
        for t in range(v.shape[1]):
            dv, m, h, g = self._drift(prev, m, h, g, t)
            means.append(prev + dv)
            prev = v[:, t]
        return D.Normal(torch.stack(means, 1), self.value("sigma_process")).log_prob(v).sum(1)

    def likelihood(self, v: torch.Tensor) -> D.Distribution:
        return D.Normal(v, self.value("sigma_obs"))

    def log_marginal(self, x: torch.Tensor, particles: int = 1000, generator: torch.Generator | None = None) -> torch.Tensor:
        """``log p(x)`` per trace, ``[n]``, by a fully adapted particle filter with ``particles``
        particles per trace (an unbiased estimate of ``p(x)``; exact for a one-step trace).

        The transition of ``V`` is Gaussian given the previous state and the observation is
        Gaussian, so each step's predictive density ``x_t | V_{t-1} ~ N(mean_t, sigma_process^2 +
        sigma_obs^2)`` and the conditional ``V_t | V_{t-1}, x_t`` are exact: particles are
        resampled by the former, then moved by the latter. Differentiable in the parameters through
        the moved particles (not through the resampling: a biased gradient, fine for a search, not
        for an estimate). ``x [n, T]`` in mV."""
        x = torch.as_tensor(x, dtype=torch.float64, device=self.current.device)
        if x.ndim != 2 or x.shape[1] != self.current.shape[0]:
            raise ValueError(f"x must be [n, {self.current.shape[0]}] traces, got {tuple(x.shape)}")
        if particles < 1:
            raise ValueError(f"particles must be >= 1, got {particles}")
        n = x.shape[0]
        s_p2, s_o2 = self.value("sigma_process") ** 2, self.value("sigma_obs") ** 2
        predictive_var = s_p2 + s_o2
        gain = s_p2 / predictive_var  # weight of the observation in V_t's conditional mean
        conditional_sd = (s_p2 * s_o2 / predictive_var).sqrt()
        v, m, h, g = (s.repeat(particles) for s in self._gates0(n))  # particle k of trace i at k * n + i
        total = torch.zeros(n, dtype=torch.float64, device=x.device)
        rows = torch.arange(n, device=x.device)
        for t in range(x.shape[1]):
            dv, m, h, g = self._drift(v, m, h, g, t)
            mean = v + dv
            xt = x[:, t].repeat(particles)
            log_w = (-0.5 * (xt - mean) ** 2 / predictive_var - 0.5 * torch.log(2 * math.pi * predictive_var)).reshape(particles, n)
            total = total + torch.logsumexp(log_w, 0) - math.log(particles)
            with torch.no_grad():
                pick = torch.multinomial(torch.softmax(log_w, 0).T, particles, replacement=True, generator=generator)  # [n, particles]
                index = (pick.T * n + rows).reshape(-1)
            mean, m, h, g, xt = mean[index], m[index], h[index], g[index], xt[index]
            noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device, generator=generator)
            v = mean + gain * (xt - mean) + conditional_sd * noise
        return total


def spike_times(trace: torch.Tensor, dt: float, threshold: float = 0.0) -> list:
    """Upward crossings of ``threshold`` mV in a trace ``[T]``, in ms."""
    above = trace >= threshold
    crossings = torch.nonzero(above[1:] & ~above[:-1]).reshape(-1) + 1
    return (crossings.double() * dt).tolist()
