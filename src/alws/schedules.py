"""Learning-rate schedules over a training run (``TrainOptions.lr_schedule``).

With a constant step, Adam keeps moving every parameter by about ``lr`` (in its own units) per
step however close it is to the optimum: where the gradient is an estimate (ALWS's sleep-sample
regression, a baseline's Monte Carlo objective) the iterates then wander around the optimum at
that scale rather than settle on it. A step that decays to a small fraction of ``lr`` by the last
step lets them settle (Robbins and Monro's condition, in the finite-horizon form that deep
learning uses), where the estimate's mean vanishes: at the optimum only where the estimate is
unbiased (on Hodgkin-Huxley it is not, far from the truth: docs/results.md, V.1). The schedule is a function of the step only, applied by PyTorch's
``torch.optim.lr_scheduler.LambdaLR``; its state is checkpointed with the run, so a resumed run
takes the same steps as an uninterrupted one.
"""
from __future__ import annotations

import math

import torch

from .errors import ConfigError

__all__ = ["LR_SCHEDULES", "lr_factor", "check_lr_schedule", "make_lr_scheduler"]

#: The schedules by name: ``"constant"`` (``lr`` throughout), ``"cosine"`` (half a cosine from
#: ``lr`` to ``lr * end_factor``), ``"linear"`` (a straight line between the same two values).
LR_SCHEDULES = ("constant", "cosine", "linear")


def check_lr_schedule(schedule: str, end_factor: float) -> None:
    """Refuse an unknown schedule or an end factor outside ``[0, 1]`` (:class:`ConfigError`)."""
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
    if isinstance(end_factor, bool) or not isinstance(end_factor, (int, float)) or not 0 <= end_factor <= 1:
        raise ConfigError(f"lr_end_factor must be a number in [0, 1] (the learning rate at the last step, as a fraction of lr), "
                          f"got {end_factor!r}")


def lr_factor(schedule: str, index: int, steps: int, end_factor: float) -> float:
    """The multiplier of ``lr`` at step ``index`` (0-based) of ``steps``: 1 at the first step,
    ``end_factor`` at the last (index ``steps - 1``) and beyond (a resumed run asked for more steps)."""
    if schedule == "constant" or steps <= 1:
        return 1.0
    progress = min(index, steps - 1) / (steps - 1)
    if schedule == "cosine":
        return end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1.0 - end_factor) * progress
    raise ConfigError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


def make_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int,
                      end_factor: float) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A ``LambdaLR`` that multiplies each of ``optimizer``'s learning rates by
    :func:`lr_factor` over ``steps`` steps (call its ``step()`` once after each optimiser step);
    ``None`` for ``"constant"``."""
    check_lr_schedule(schedule, end_factor)
    if schedule == "constant":
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda index: lr_factor(schedule, index, steps, end_factor))
