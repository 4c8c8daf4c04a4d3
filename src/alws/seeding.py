"""The one way alws seeds a piece of work: :func:`seeded`.

A block that needs reproducible random numbers runs inside ``with seeded(seed):``; torch's global
generators (CPU, and CUDA where CUDA is in use) are seeded on entry and restored on exit, so the
block neither depends on nor moves the caller's random stream. Where a function can take a
``generator=`` argument, a local ``torch.Generator().manual_seed(seed)`` does the same job. Model
constructors use one of the two and never call ``torch.manual_seed``.

The one owner of the global stream during training is :class:`alws.training.Trainer`, which
seeds Python, NumPy and torch at the start of a run and saves and restores all three in its
checkpoints (exact resume).
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["seeded"]


def _cuda_devices() -> list[int]:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the block with torch's global generators seeded to ``seed`` and restored afterwards.

    ``seed=None`` runs the block on the caller's stream unchanged (nothing forked or seeded).
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=_cuda_devices()):
        torch.manual_seed(seed)
        yield
