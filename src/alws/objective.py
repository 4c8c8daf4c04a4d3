"""What a training method is, and the one function that trains any of them.

Every method (ALWS and each baseline) is an :class:`Objective`: it owns its modules (model,
encoder, critic) and, once :meth:`Objective.configure` has been called, its optimisers; its
:meth:`Objective.step` computes one minibatch's loss, steps, and returns the step's record. The
loop around it (seeding, minibatches, progress, history, checkpoints with exact resume, the NaN
guard, time budgets) is :class:`alws.training.Trainer`, shared by all of them and driven by
:func:`train`. The options that loop needs are one :class:`TrainOptions`.

The shape follows Pyro's ``pyro.infer`` (an ELBO object with ``loss_and_grads``; ``SVI`` is the
loop) and scikit-learn's estimators (constructors store and check their arguments; work starts at
the public entry).
"""
from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .averaging import ParameterAverage
from .errors import ConfigError
from .schedules import check_lr_schedule, make_lr_scheduler
from .training import History, Trainer, fingerprint, make_optimizer, with_time_budget
from .validation import check_data, check_int, check_positive

__all__ = ["TrainOptions", "Objective", "train"]


@dataclasses.dataclass
class TrainOptions:
    """The options every method's training shares.

    Attributes:
        steps: total optimiser steps (a resumed run continues up to this count).
        batch_size: minibatch size ``B`` of the data per step.
        lr, optimizer: learning rate and ``"adam"`` / ``"adamw"`` / ``"sgd"`` / ``params -> Optimizer``.
        checkpoint: file path for atomic checkpoints every ``checkpoint_every`` steps.
        resume: continue from ``checkpoint`` exactly where it stopped.
        seed: seeds every generator at the start of a fresh run.
        callbacks: ``cb(step, record)`` after each step; raise :class:`alws.StopTraining` to stop.
        progress: a tqdm bar (True), nothing (False), or by default a bar on a terminal and a plain
            line every few seconds otherwise.
        clip_grad_norm: optional gradient-norm clipping.
        max_seconds: stop once this much wall time has passed since the method was called (set-up
            included; a budget matched to another method's); ``steps`` still caps the run.
        average_from: Polyak-Ruppert averaging (:class:`alws.averaging.ParameterAverage`): the
            trained parameters end at the mean of their iterates from this step (1-based,
            inclusive) to the last, rather than at the last iterate; the optimiser's path is
            unchanged. ``None`` (default): the last iterate.
        lr_schedule, lr_end_factor: the learning rate over the run (:mod:`alws.schedules`):
            ``"constant"`` (default), ``"cosine"`` or ``"linear"`` from ``lr`` at the first step to
            ``lr * lr_end_factor`` (default 0.01) at step ``steps``, for every optimiser of the
            method; each step's record has its ``lr``. The horizon is ``steps``, so a run stopped
            early by ``max_seconds`` ends before the rate has decayed (and warns), and a scheduled
            run resumes only with the same ``steps``.
    """

    steps: int = 1000
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: Any = "adam"
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 100
    resume: bool = False
    seed: int | None = None
    callbacks: Sequence[Callable] = ()
    progress: bool | None = None
    clip_grad_norm: float | None = None
    max_seconds: float | None = None
    average_from: int | None = None
    lr_schedule: str = "constant"
    lr_end_factor: float = 0.01

    def __post_init__(self):
        check_int("steps", self.steps, 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        check_positive("lr", self.lr)
        if self.clip_grad_norm is not None:
            check_positive("clip_grad_norm", self.clip_grad_norm)
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {self.max_seconds}")
        if self.average_from is not None:
            check_int("average_from", self.average_from, 1)
            if self.average_from > self.steps:
                raise ConfigError(f"average_from={self.average_from} is after the last step ({self.steps}): no step would be averaged; "
                                  f"choose a step <= steps (e.g. {self.steps // 2 + 1} for the second half), or None")
        check_lr_schedule(self.lr_schedule, self.lr_end_factor)

    @classmethod
    def split(cls, options: "TrainOptions | None", keywords: dict) -> tuple["TrainOptions", dict]:
        """``(training options, the other keywords)`` from a call's keywords: the keywords named
        like a field of this class build the options (refused when ``options`` is also given)."""
        names = {f.name for f in dataclasses.fields(cls)}
        mine = {k: keywords[k] for k in keywords if k in names}
        rest = {k: v for k, v in keywords.items() if k not in names}
        if options is None:
            return cls(**mine), rest
        if mine:
            raise ConfigError(f"pass training options either as options=TrainOptions(...) or as keywords, not both ({', '.join(mine)})")
        if not isinstance(options, cls):
            raise ConfigError(f"options must be an alws.TrainOptions, got {type(options).__name__}")
        return options, rest

    def describe(self) -> dict:
        """What of these options a checkpoint must match to be resumed."""
        optimizer = self.optimizer if isinstance(self.optimizer, str) else getattr(self.optimizer, "__qualname__", repr(self.optimizer))
        described = {"batch_size": self.batch_size, "lr": self.lr, "optimizer": optimizer, "seed": self.seed, "clip_grad_norm": self.clip_grad_norm}
        if self.average_from is not None:  # only when set: checkpoints from before the option still resume
            described["average_from"] = self.average_from
        if self.lr_schedule != "constant":  # likewise; the schedule's horizon is the run's length
            described["lr_schedule"] = {"kind": self.lr_schedule, "end_factor": self.lr_end_factor, "steps": self.steps}
        return described


class Objective:
    """One training method on the shared loop.

    Subclasses set :attr:`name` and implement :meth:`modules`, :meth:`parameters` (what the
    default :meth:`configure` optimises), :meth:`step` and :meth:`describe`; they may override
    :meth:`prepare` (check and place the data), :meth:`configure` (several optimisers) and
    :meth:`stateful` (other checkpointed state).
    """

    #: Shown on the progress bar.
    name: str = "objective"

    def modules(self) -> Mapping[str, nn.Module]:
        """``name -> module`` whose state is checkpointed."""
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        """The tensors the default optimiser trains."""
        raise NotImplementedError

    def stateful(self) -> Mapping[str, object]:
        """Other checkpointed objects (``state_dict`` / ``load_state_dict``)."""
        return {}

    def describe(self) -> dict:
        """JSON-able settings a checkpoint must match to be resumed."""
        raise NotImplementedError

    def prepare(self, data) -> torch.Tensor:
        """``data`` checked (finite, non-empty) and as a tensor ``[M, ...]`` on the right device."""
        return check_data(data)

    def configure(self, options: TrainOptions) -> dict[str, torch.optim.Optimizer]:
        """Build the optimisers (once, before the first step) and keep what :meth:`step` needs."""
        self.clip_grad_norm = options.clip_grad_norm
        self.optimizer = make_optimizer(options.optimizer, self.parameters(), options.lr)
        return {"optimizer": self.optimizer}

    def step(self, batch: torch.Tensor, context: Trainer) -> dict:
        """One optimiser step on ``batch [B, ...]``; returns the step's record (with ``loss``).
        ``context`` is the running :class:`~alws.training.Trainer` (its ``data``, ``sampler``)."""
        raise NotImplementedError


def _scheduled(step: Callable[[torch.Tensor, int], dict], schedulers: Mapping[str, torch.optim.lr_scheduler.LRScheduler]) -> Callable:
    """``step`` with every schedule brought to step ``index`` first (1-based: ``index - 1`` schedule
    steps taken), so the rate is a function of the step alone, also after a resume from a state saved
    at any point; the record gets the rate the step used (``lr``; ``lr_NAME`` per optimiser when there
    are several)."""

    def scheduled(batch: torch.Tensor, index: int) -> dict:
        for scheduler in schedulers.values():
            while scheduler.last_epoch < index - 1:
                scheduler.step()
        record = step(batch, index)
        for name, scheduler in schedulers.items():
            record["lr" if len(schedulers) == 1 else f"lr_{name}"] = float(scheduler.get_last_lr()[0])
        return record

    return scheduled


def train(objective: Objective, data, options: TrainOptions | None = None, started: float | None = None) -> History:
    """Train ``objective`` on ``data`` with ``options`` on the shared loop; returns its history.

    ``started``: a ``time.perf_counter()`` reading from which ``options.max_seconds`` counts
    (default: now); pass the time the public entry was called so that the budget covers set-up.
    """
    started = time.perf_counter() if started is None else started
    options = options if options is not None else TrainOptions()
    if not isinstance(objective, Objective):
        raise ConfigError(f"train needs an alws Objective, got {type(objective).__name__}")
    data = objective.prepare(data)
    optimizers = objective.configure(options)
    modules = dict(objective.modules())
    stateful, callbacks = dict(objective.stateful()), list(options.callbacks)
    average = None
    if options.average_from is not None:
        average = ParameterAverage(objective.parameters(), options.average_from)
        stateful["parameter_average"] = average
        callbacks.insert(0, average)  # first: the other callbacks see averaged_steps in the record
    schedulers = {name: make_lr_scheduler(optimizer, options.lr_schedule, options.steps, options.lr_end_factor)
                  for name, optimizer in optimizers.items() if options.lr_schedule != "constant"}
    stateful.update({f"lr_schedule:{name}": scheduler for name, scheduler in schedulers.items()})
    trainer = Trainer(
        modules=modules,
        optimizers=optimizers,
        stateful=stateful,
        data=data,
        batch_size=options.batch_size,
        fingerprint=fingerprint(modules, {**objective.describe(), **options.describe()}),
        checkpoint=options.checkpoint,
        checkpoint_every=options.checkpoint_every,
        resume=options.resume,
        seed=options.seed,
        callbacks=with_time_budget(callbacks, options.max_seconds, started),
        progress=options.progress,
        description=objective.name,
    )
    step = lambda batch, index: objective.step(batch, trainer)  # noqa: E731
    history = trainer.run(_scheduled(step, schedulers) if schedulers else step, options.steps)
    if schedulers and trainer.step < options.steps:
        rate = next(iter(schedulers.values())).get_last_lr()[0]  # the rate of the last step taken
        warnings.warn(f"lr_schedule={options.lr_schedule!r} spans {options.steps} steps, but training stopped at step {trainer.step} "
                      f"(a time budget or a callback), with the rate at {rate:.3g} (lr {options.lr:.3g}): it had not decayed to "
                      f"lr * lr_end_factor; set steps to the number the budget allows", stacklevel=2)
    if average is not None and not average.apply():  # the checkpoint keeps the last iterate and the mean
        warnings.warn(f"average_from={options.average_from} was not reached: training stopped at step {trainer.step} "
                      f"(a time budget or a callback), so the parameters are the last iterate, not an average", stacklevel=2)
    return history
