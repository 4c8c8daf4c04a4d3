"""The blowfly population model (Wood 2010 form) and the reader of its count series (Experiment V.2).

Latents per series: the lag ``tau ~ Cat(softmax(logits))`` on ``{1..max_lag}``, and daily noise
``e_t ~ Gamma(1/sigma_p^2, rate 1/sigma_p^2)``, ``eps_t ~ Gamma(1/sigma_d^2, rate 1/sigma_d^2)``
(both mean 1). The population follows

    N_t = P N_{t-tau} exp(-N_{t-tau} / N0) e_t + N_{t-1} exp(-delta eps_t),   t = 1..T,

from initial values ``N_{-max_lag+1..0}`` that are parameters, and is observed as
``x_t ~ LogNormal(log N_t, sigma_n^2)``. Positive parameters are stored as logarithms, so they stay
in range by construction. ``z = (tau [n], e [n, T], eps [n, T])``; ``x: [n, T]``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch import distributions as D
from torch import nn

from ..errors import DataError
from ..model import LatentVariableModel

__all__ = ["Blowfly", "load_counts", "POSITIVE"]

#: Positive parameters, stored as ``log_NAME``.
POSITIVE = ("P", "N0", "delta", "sigma_p", "sigma_d", "sigma_n")


def load_counts(path, column: str | None = None, max_lag: int = 20) -> torch.Tensor:
    """Counts ``[T]`` (float64) from a CSV file with a header.

    Uses ``column`` if given, else the column named ``adults``, else the last column whose values
    are all numeric (a UTF-8 byte-order mark is skipped). Raises :class:`DataError` naming the
    file (and line) for a missing or non-text file, no numeric column, counts that are not
    positive and finite, or fewer than ``max_lag + 1`` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"blowfly data file {path} does not exist")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not part of the header
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not a text CSV file (byte {error.start} is not UTF-8)") from None
    except csv.Error as error:
        raise DataError(f"{path} is not a readable CSV file: {error}") from None
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header line and data rows, found {len(rows)} line(s)")
    header, body = [h.strip() for h in rows[0]], rows[1:]

    def numeric(j):
        try:
            return all(len(r) > j and math.isfinite(float(r[j])) or (len(r) > j and r[j].strip().lower() in ("nan", "inf", "-inf")) for r in body)
        except ValueError:
            return False

    if column is not None:
        if column not in header:
            raise DataError(f"{path}: no column {column!r}; columns are {header}")
        j = header.index(column)
    elif "adults" in header:
        j = header.index("adults")
    else:
        candidates = [j for j in range(len(header)) if numeric(j)]
        if not candidates:
            raise DataError(f"{path}: no numeric column (columns: {header})")
        j = candidates[-1]
    values = []
    for line, row in enumerate(body, start=2):
        try:
            value = float(row[j])
        except (ValueError, IndexError):
            raise DataError(f"{path}, line {line}: {header[j]!r} is not a number: {row!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{path}, line {line}: count {row[j]!r} is not finite")
        if value <= 0:
            raise DataError(f"{path}, line {line}: count {value:g} is {'negative' if value < 0 else 'zero'}; the model's "
                            "log-normal observations need positive counts")
        values.append(value)
    if len(values) < max_lag + 1:
        raise DataError(f"{path}: {len(values)} counts, but the model needs at least max_lag + 1 = {max_lag + 1}")
    return torch.tensor(values, dtype=torch.float64)


class Blowfly(LatentVariableModel):
    """Wood's (2010) blowfly model over ``n_steps`` observations with lags ``1..max_lag``."""

    def __init__(self, n_steps: int, max_lag: int = 20, P: float = 6.0, N0: float = 400.0, delta: float = 0.2,
                 sigma_p: float = 0.5, sigma_d: float = 0.5, sigma_n: float = 0.1, initial: float = 1000.0):
        super().__init__()
        if max_lag < 1 or n_steps < 1:
            raise ValueError(f"max_lag and n_steps must be >= 1, got {max_lag}, {n_steps}")
        self.n_steps, self.max_lag = n_steps, max_lag
        for name, value in zip(POSITIVE, (P, N0, delta, sigma_p, sigma_d, sigma_n)):
            setattr(self, f"log_{name}", nn.Parameter(torch.tensor(math.log(value), dtype=torch.float64)))
        self.lag_logits = nn.Parameter(torch.zeros(max_lag, dtype=torch.float64))
        self.log_initial = nn.Parameter(torch.full((max_lag,), math.log(initial), dtype=torch.float64))

    def value(self, name: str) -> torch.Tensor:
        return getattr(self, f"log_{name}").exp()

    def values(self) -> dict:
        out = {name: float(self.value(name).detach()) for name in POSITIVE}
        out["lag_probabilities"] = torch.softmax(self.lag_logits.detach(), 0).tolist()
        return out

    def lag_prior(self) -> D.Categorical:
        """Distribution of ``tau - 1`` (index 0 is a lag of one step)."""
        return D.Categorical(logits=self.lag_logits)

    def noise_prior(self, name: str) -> D.Gamma:
        shape = self.value(name) ** -2
        return D.Gamma(shape, shape)

    def population(self, tau: torch.Tensor, e: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``N_{1..T}`` ``[n, T]`` for lags ``tau [n]`` (1..max_lag) and noise ``e, eps [n, T]``."""
        n = tau.shape[0]
        history = list(self.log_initial.exp().expand(n, self.max_lag).unbind(1))  # N_{-L+1..0}
        P, N0, delta = self.value("P"), self.value("N0"), self.value("delta")
        index = (self.max_lag - tau).long()[:, None]  # position of N_{t-tau} in the last max_lag values
        out = []
        for t in range(e.shape[1]):
            window = torch.stack(history[-self.max_lag :], 1)
            lagged = window.gather(1, index)[:, 0]
            current = P * lagged * torch.exp(-lagged / N0) * e[:, t] + history[-1] * torch.exp(-delta * eps[:, t])
            history.append(current)
            out.append(current)
        return torch.stack(out, 1)

    def sample(self, n: int):
        with torch.no_grad():
            tau = self.lag_prior().sample((n,)) + 1
            e = self.noise_prior("sigma_p").sample((n, self.n_steps))
            eps = self.noise_prior("sigma_d").sample((n, self.n_steps))
            z = (tau, e, eps)
            return z, self.likelihood(z).sample()

    def log_prior(self, z) -> torch.Tensor:
        tau, e, eps = z
        return (self.lag_prior().log_prob(tau - 1) + self.noise_prior("sigma_p").log_prob(e).sum(1)
                + self.noise_prior("sigma_d").log_prob(eps).sum(1))

    def likelihood(self, z) -> D.Distribution:
        return D.LogNormal(torch.log(self.population(*z)), self.value("sigma_n"))

    def log_joint(self, z, x: torch.Tensor) -> torch.Tensor:
        return self.log_prior(z) + self.likelihood(z).log_prob(x).sum(1)
