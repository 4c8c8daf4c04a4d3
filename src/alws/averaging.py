"""Polyak-Ruppert averaging of the trained parameters (``TrainOptions.average_from``).

With noisy gradients (a few sleep samples, a weakly identified parameter) the iterates of Adam
wander around the optimum rather than settle on it; their mean over the last stretch of training
is a lower-variance estimate of the same point (Polyak and Juditsky, 1992). :class:`ParameterAverage`
keeps that running mean from step ``start`` on, as a training callback, and is checkpointed with
the run, so a resumed run ends at the same average as an uninterrupted one. The update is
``torch.optim.swa_utils``' running mean.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim.swa_utils import get_swa_multi_avg_fn

__all__ = ["ParameterAverage"]


class ParameterAverage:
    """Running mean of ``parameters`` over the steps ``start, start + 1, ...`` of a training run.

    Args:
        parameters: the tensors to average (an objective's trained parameters; any shapes).
        start: the first step (1-based, as in the history) whose parameters enter the mean.

    Call it as a training callback ``(step, record)`` after each step: from ``start`` on it adds
    the parameters to the mean and records ``averaged_steps`` (how many are in it). :meth:`apply`
    then writes the mean into the parameters. The optimiser keeps stepping from the iterates, not
    from the mean, so averaging never changes the path of training.
    """

    def __init__(self, parameters: Iterable[torch.Tensor], start: int):
        self.parameters = list(parameters)
        self.start = int(start)
        self.count = 0
        self.averages: list[torch.Tensor] = []
        self._update = get_swa_multi_avg_fn()

    @torch.no_grad()
    def __call__(self, step: int, record: dict) -> None:
        if step < self.start:
            return
        current = [p.detach() for p in self.parameters]
        if self.count == 0:
            self.averages = [p.clone() for p in current]
        else:
            self._update(self.averages, current, self.count)
        self.count += 1
        record["averaged_steps"] = self.count

    @torch.no_grad()
    def apply(self) -> bool:
        """Write the mean into the parameters; ``False`` (and nothing changed) if no step was
        averaged yet (a run stopped by its time budget before ``start``)."""
        if self.count == 0:
            return False
        for parameter, average in zip(self.parameters, self.averages):
            parameter.copy_(average)
        return True

    def state_dict(self) -> dict:
        return {"start": self.start, "count": self.count, "averages": list(self.averages)}  # saved at once: no copy

    def load_state_dict(self, state: dict) -> None:
        if int(state["start"]) != self.start:  # the fingerprint already refuses this; a guard
            raise ValueError(f"the checkpoint averages from step {state['start']}, this run from step {self.start}")
        self.count = int(state["count"])
        self.averages = [a.to(p.device, p.dtype) for a, p in zip(state["averages"], self.parameters)]
