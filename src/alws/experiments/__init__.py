"""The experiments of the paper, one module each; ``alws run NAME`` runs one (see :mod:`.base`)."""
from __future__ import annotations

import importlib

from .registry import EXPERIMENTS

__all__ = ["EXPERIMENTS", "ExperimentConfig", "RunContext", "load_experiment", "resume_experiment", "run_experiment"]


def __getattr__(name: str):  # the run machinery imports torch: load it on first use
    if name in ("ExperimentConfig", "RunContext", "load_experiment", "resume_experiment", "run_experiment"):
        return getattr(importlib.import_module(".base", __name__), name)
    raise AttributeError(f"module 'alws.experiments' has no attribute {name!r}")
