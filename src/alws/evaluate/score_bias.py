"""The bias of an ALWS gradient where the exact answer is known, for any model.

For data drawn from the model itself, ``x ~ p_theta``, the exact score has mean zero:
``E_x[grad_theta log p_theta(x)] = 0``. Averaging a gradient estimator over data sets drawn from the
model therefore measures its bias at ``theta`` with no reference computation: a parameter whose mean
lies many standard errors from zero is pushed away from the truth by the estimator itself, so
training that reaches the truth does not stay there (on Hodgkin-Huxley the fast path's gradient for
the observation noise sits 5.9 standard errors above zero at the truth: docs/results.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..learner import ALWS
from ..model import trainable_parameters
from ..validation import check_int

__all__ = ["ScoreBias", "score_bias"]


@dataclass
class ScoreBias:
    """Per parameter (keys as ``named_parameters``, shapes as the parameter): the mean ALWS gradient
    over the data sets, its standard error (from the spread of the data sets' means) and
    ``z = mean / standard_error`` (0 where both are 0: a parameter ``log_joint`` does not use)."""

    mean: dict[str, torch.Tensor]
    standard_error: dict[str, torch.Tensor]
    z: dict[str, torch.Tensor]
    datasets: int
    repeats: int

    def worst(self) -> tuple[str, float]:
        """The parameter with the largest ``|z|`` of any entry, and that ``z``."""
        name = max(self.z, key=lambda k: float(self.z[k].abs().max()))
        flat = self.z[name].reshape(-1)
        return name, float(flat[flat.abs().argmax()])

    def rows(self) -> list[dict]:
        """One JSON-able row per parameter entry: ``parameter``, ``index``, ``mean``, ``standard_error``, ``z``."""
        out = []
        for name in self.mean:
            for i, (m, s, z) in enumerate(zip(*(t.reshape(-1).tolist() for t in (self.mean[name], self.standard_error[name], self.z[name])))):
                out.append({"parameter": name, "index": i, "mean": m, "standard_error": s, "z": z})
        return out


def score_bias(model: nn.Module, n_data: int, datasets: int = 12, repeats: int = 2, warm: int = 0, learner: ALWS | None = None,
               **options) -> ScoreBias:
    """Mean ALWS gradient of ``mean_b log p(x_b)`` over ``datasets`` data sets of ``n_data`` points
    drawn from ``model`` at its current parameters (left unchanged), each with ``repeats``
    gradients on fresh sleep samples.

    Args:
        model: a model following the protocol (see :mod:`alws.model`).
        n_data: points per data set (as many as a training step's wake batch).
        datasets: independent data sets (at least 2: the standard error is their spread).
        repeats: gradients per data set.
        warm: learner calls on a first data set before measuring, so that a learned kernel has
            trained (on sleep samples) and the hyper-parameters have been selected as in training.
        learner: an :class:`alws.ALWS` on ``model`` to measure (then no ``options``).
        **options: for a new :class:`alws.ALWS` (``n_sleep``, ``features``, ``exponential_family``, ...).

    Runs under the global random state (seed it with :func:`alws.seeding.seeded`).
    """
    check_int("n_data", n_data, 1)
    check_int("datasets", datasets, 2)
    check_int("repeats", repeats, 1)
    check_int("warm", warm, 0)
    if learner is None:
        learner = ALWS(model, **options)
    elif options:
        raise TypeError(f"score_bias: give a learner or its options, not both ({', '.join(options)})")
    elif learner.model is not model:
        raise ValueError("score_bias: the learner was built on another model")
    named = trainable_parameters(model)
    params = [p for _, p in named]

    def draw() -> torch.Tensor:
        with torch.no_grad():
            return model.sample(n_data)[1]

    first = draw()
    for _ in range(warm):
        learner.loss(first)
    per_set = []
    for _ in range(datasets):
        x = draw()
        total = [torch.zeros_like(p) for p in params]
        for _ in range(repeats):
            loss, _ = learner.loss(x)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            total = [t if g is None else t - g.detach() for t, g in zip(total, grads)]
        per_set.append([t / repeats for t in total])
    mean, se, z = {}, {}, {}
    for i, (name, _) in enumerate(named):
        values = torch.stack([row[i] for row in per_set]).double()  # [datasets, *shape]
        mean[name], se[name] = values.mean(0), values.std(0) / math.sqrt(datasets)
        z[name] = torch.where(se[name] > 0, mean[name] / se[name].clamp_min(1e-300), torch.zeros_like(mean[name]))
    return ScoreBias(mean, se, z, datasets, repeats)
