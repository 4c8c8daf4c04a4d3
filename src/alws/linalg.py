"""Cholesky factorisation with jitter-and-retry, failing loudly with the condition number."""
from __future__ import annotations

import contextlib

import torch

from .errors import NotPositiveDefiniteError

__all__ = ["cholesky_with_jitter", "cholesky_and_jitter", "threads_for", "SINGLE_THREAD_BELOW"]

#: Matrix sizes below which a factorisation runs on one thread, measured by
#: ``benchmarks/threads.py`` on a 2-core machine. Quiet, two threads are 1.2-2x faster from
#: n = 300 up (Cholesky 1000: 7.7 ms on one thread, 4.6 ms on two); with both cores busy, two
#: threads wait for each other: eigh 200 took 2.4 ms on one thread and 1,675 ms on two, Cholesky
#: 1000 8 ms and 28 ms. The leave-one-out selection's eigendecompositions (at most ``select_max``
#: = 500 points) therefore always run on one thread, and so do Cholesky factors below 1000 rows;
#: from 1000 rows (the default N) a quiet machine's second core pays (an ALWS step at N = 1000:
#: 21 ms with two threads, 29 ms with one), and a busy machine is better served by
#: ``OMP_NUM_THREADS=1`` for the whole run (README, Threads).
SINGLE_THREAD_BELOW = {"cholesky": 1000, "eigh": 1001}


@contextlib.contextmanager
def threads_for(n: int, op: str):
    """Run the block on one thread when an ``n x n`` ``op`` (``"cholesky"``, ``"eigh"``) is small
    enough that waiting for other threads costs more than it saves (see
    :data:`SINGLE_THREAD_BELOW`); otherwise leave torch's thread count alone."""
    if n >= SINGLE_THREAD_BELOW.get(op, 0) or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

#: Jitter tried in turn, relative to the mean of the diagonal.
JITTERS = (0.0, 1e-10, 1e-8, 1e-6, 1e-4)


def cholesky_and_jitter(a: torch.Tensor, what: str = "kernel matrix") -> tuple[torch.Tensor, float]:
    """``(L, jitter)``: the lower Cholesky factor of the symmetric matrix ``a [n, n]`` and the
    jitter (absolute, 0 if none) that had to be added to its diagonal.

    Jitter is tried in turn relative to the mean of the diagonal (see :data:`JITTERS`); raises
    :class:`NotPositiveDefiniteError` with the eigenvalue range and condition number if no amount
    works.
    """
    scale = float(a.diagonal().abs().mean()) if a.numel() else 1.0
    # a finite sum proves every entry finite (NaN and inf propagate); only otherwise look entry by entry
    if not torch.isfinite(a.sum()) and not torch.isfinite(a).all():
        raise NotPositiveDefiniteError(f"{what} ({a.shape[0]}x{a.shape[1]}) contains NaN or infinite entries")
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    with threads_for(a.shape[0] if a.device.type == "cpu" else 10**9, "cholesky"):
        for jitter in JITTERS:
            chol, info = torch.linalg.cholesky_ex(a + (jitter * scale) * eye if jitter else a)
            if int(info) == 0:
                return chol, jitter * scale
    eig = torch.linalg.eigvalsh(a)
    lo, hi = float(eig[0]), float(eig[-1])
    cond = abs(hi / lo) if lo != 0 else float("inf")
    raise NotPositiveDefiniteError(
        f"{what} ({a.shape[0]}x{a.shape[1]}) is not positive definite even with jitter {JITTERS[-1] * scale:.3g} "
        f"added to the diagonal: eigenvalues in [{lo:.4g}, {hi:.4g}], condition number {cond:.4g}. "
        "Check that the kernel is positive definite, or increase the ridge."
    )


def cholesky_with_jitter(a: torch.Tensor, what: str = "kernel matrix") -> torch.Tensor:
    """The lower Cholesky factor of :func:`cholesky_and_jitter` (the jitter dropped)."""
    return cholesky_and_jitter(a, what)[0]
