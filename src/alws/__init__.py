"""alws: maximum-likelihood learning of latent-variable models by amortised learning with wake-sleep.

A model needs only ``sample(n) -> (z, x)`` and a differentiable ``log_joint(z, x)``; see
:mod:`alws.model`. Train with :func:`alws.fit`, estimate gradients with :func:`alws.gradient`; every method (ALWS
and each baseline) is an :class:`alws.Objective` trained by the same loop with the same
:class:`alws.TrainOptions`.

Names are imported on first use (PEP 562), so ``alws --help`` and ``alws list`` start without
loading torch.
"""
from __future__ import annotations

import importlib

from .errors import (
    ALWSError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelProtocolError,
    NonFiniteError,
    NotPositiveDefiniteError,
)

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    "ALWS": "learner",
    "ALWSObjective": "learner",
    "fit": "learner",
    "gradient": "learner",
    "check_model": "model",
    "LatentVariableModel": "model",
    "History": "training",
    "StopTraining": "training",
    "Objective": "objective",
    "TrainOptions": "objective",
}
#: Submodules reachable as attributes (``alws.kernels``, ...).
_SUBMODULES = {
    "baselines", "data", "evaluate", "experiments", "families", "features", "kernel_learning", "kernels", "learner", "linalg",
    "model", "models", "objective", "pyro", "pyro_programs", "regression", "sample_quality", "seeding", "training", "validation",
}

__all__ = [
    "ALWS",
    "ALWSObjective",
    "fit",
    "gradient",
    "check_model",
    "LatentVariableModel",
    "History",
    "StopTraining",
    "Objective",
    "TrainOptions",
    "ALWSError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ModelProtocolError",
    "NonFiniteError",
    "NotPositiveDefiniteError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'alws' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
