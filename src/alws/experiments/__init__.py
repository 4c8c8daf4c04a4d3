"""The experiments of the ALWS paper, one module each; run them with ``alws run NAME``."""
from .base import EXPERIMENTS, ExperimentConfig, RunContext, load_experiment, resume_experiment, run_experiment

__all__ = ["EXPERIMENTS", "ExperimentConfig", "RunContext", "load_experiment", "run_experiment", "resume_experiment"]
