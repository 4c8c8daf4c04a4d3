"""alws: maximum-likelihood learning of latent-variable models by amortised learning with wake-sleep.

A model needs only ``sample(n) -> (z, x)`` and a differentiable ``log_joint(z, x)``; see
:mod:`alws.model`. Train with :func:`alws.fit`, estimate gradients with :func:`alws.gradient`.
"""
from .errors import (
    ALWSError,
    CheckpointError,
    ConfigError,
    DataError,
    ModelProtocolError,
    NonFiniteError,
    NotPositiveDefiniteError,
)
from .learner import ALWS, fit, gradient
from .model import LatentVariableModel, check_model
from .training import History, StopTraining

__version__ = "0.1.0"

__all__ = [
    "ALWS",
    "fit",
    "gradient",
    "check_model",
    "LatentVariableModel",
    "History",
    "StopTraining",
    "ALWSError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ModelProtocolError",
    "NonFiniteError",
    "NotPositiveDefiniteError",
]
