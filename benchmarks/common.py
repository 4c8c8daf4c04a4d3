"""Helpers shared by the benchmarks: a mid-sized model, timing, and JSON output."""
from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import distributions as D
from torch import nn

import alws
from alws.training import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


class MLPGenerator(alws.LatentVariableModel):
    """``z ~ N(0, I_k)``, ``x | z ~ N(MLP(z), diag(sigma^2))``, ``x`` in R^D: a small decoder."""

    def __init__(self, z_dim=8, x_dim=32, hidden=64):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.log_sigma = nn.Parameter(torch.zeros(x_dim))

    def sample(self, n):
        z = torch.randn(n, self.z_dim, device=self.log_sigma.device)
        return z, self.likelihood(z).sample()

    def rsample(self, n):
        z = torch.randn(n, self.z_dim, device=self.log_sigma.device)
        return self.likelihood(z).rsample()

    def prior(self, n):
        return D.Independent(D.Normal(torch.zeros(n, self.z_dim, device=self.log_sigma.device), 1.0), 1)

    def log_prior(self, z):
        return self.prior(z.shape[0]).log_prob(z)

    def likelihood(self, z):
        return D.Normal(self.net(z), self.log_sigma.exp())


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, repeats: int, device="cpu") -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (after one warm-up call), seconds."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def parse_sets(pairs: list[str]) -> dict:
    """``{key: value}`` from ``KEY=JSON`` pairs (a benchmark's ``--set`` options over an experiment's config)."""
    values = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            raise SystemExit(f"--set {key}: {text!r} is not JSON (strings need quotes: '\"fashion-mnist\"')") from None
    return values


def write(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=1))
    print(f"wrote {path}")
    return path
