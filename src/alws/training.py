"""The loop every trainer shares (ALWS and every baseline).

:class:`Trainer` owns seeding, minibatching, the progress bar, the per-step history, callbacks,
atomic checkpoints with exact resume, and the NaN/inf guard. A method supplies only a
``step(batch, step) -> record`` function that computes its loss and calls :func:`guarded_step`.

Exact resume: a checkpoint holds the modules, optimisers, any other stateful objects, the
minibatch order, the history and the state of every random number generator (Python, NumPy,
torch CPU and CUDA), so a resumed run reproduces the uninterrupted one bit for bit on the same
machine.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import CheckpointError, NonFiniteError

__all__ = [
    "StopTraining",
    "with_time_budget",
    "History",
    "MinibatchSampler",
    "Trainer",
    "guarded_step",
    "atomic_save",
    "atomic_write_text",
    "seed_everything",
    "make_optimizer",
    "fingerprint",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "alws-checkpoint-v1"


class StopTraining(Exception):
    """Raise from a callback to end training cleanly after the current step (a checkpoint is written)."""


class History(list):
    """Per-step records (dicts). ``history.column("loss")`` gives one field across steps."""

    def column(self, key: str) -> list:
        return [record.get(key) for record in self]

    def to_json(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, json.dumps(list(self), indent=1, default=float))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(optimizer, params, lr: float) -> torch.optim.Optimizer:
    """``"adam"``, ``"adamw"``, ``"sgd"`` or a callable ``params -> Optimizer``."""
    params = list(params)
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    choices = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if optimizer not in choices:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(choices)} or a callable params -> Optimizer")
    return choices[optimizer](params, lr=lr)


def guarded_step(loss, optimizer: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> float:
    """Backward, check, optionally clip, and step; returns the gradient norm.

    ``loss`` is a scalar tensor, or a callable that computes the gradients itself and returns
    the loss value (for libraries whose objectives call ``backward`` internally, such as Pyro's
    ``loss_and_grads``). Raises :class:`NonFiniteError` when the loss or any gradient is NaN/inf,
    *before* the optimiser touches the parameters, so they are never left non-finite.
    """
    optimizer.zero_grad(set_to_none=True)
    if callable(loss):
        value = float(loss())
    else:
        value = float(loss.detach())
        if math.isfinite(value):
            loss.backward()
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"loss is {value}; parameters left at their values before this step")
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm if clip_grad_norm else math.inf)
    if not bool(torch.isfinite(norm)):
        bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p.grad).all())]
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(
            f"gradient is non-finite (in {len(bad)} of {len(params)} parameter tensors); "
            "parameters left at their values before this step"
        )
    optimizer.step()
    return float(norm)


class MinibatchSampler:
    """Shuffled minibatches of ``batch_size`` indices into ``n`` items; epoch by epoch, own generator."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        self.n, self.batch_size = n, min(batch_size, n)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.position = state["order"], state["position"]


def fingerprint(modules: Mapping[str, torch.nn.Module], config: dict) -> dict:
    """What a checkpoint must match to be resumed: each module's class and parameter shapes,
    and the JSON-able ``config`` of the run (resume refuses any difference, naming it)."""
    return {
        "modules": {
            name: {"class": type(m).__qualname__, "parameters": {n: list(p.shape) for n, p in m.named_parameters()}}
            for name, m in modules.items()
        },
        "config": config,
    }


def _describe_difference(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(current), key=str):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _describe_difference(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return out


class Trainer:
    """Runs ``step(batch, step) -> record`` for ``steps`` steps over minibatches of ``data``.

    Args:
        modules: ``name -> nn.Module`` whose state is checkpointed (the model, encoders, critics).
        optimizers: ``name -> Optimizer``, checkpointed.
        data: tensor ``[M, ...]``; minibatches ``data[idx]`` of ``batch_size`` rows.
        fingerprint: JSON-able description of the model and config; a checkpoint whose
            fingerprint differs is refused on resume, naming the differences.
        stateful: other objects with ``state_dict``/``load_state_dict`` (e.g. the ALWS learner).
        checkpoint: path of the checkpoint file (``None``: no checkpoints).
        checkpoint_every: write a checkpoint every so many steps (and at the end, on
            interruption and on a non-finite loss).
        resume: continue from ``checkpoint``. If false and the file exists, :class:`CheckpointError`
            is raised rather than overwriting it.
        seed: seeds every generator at the start of a fresh run (ignored on resume, where the
            saved generator states are restored).
        callbacks: callables ``cb(step, record)``; raise :class:`StopTraining` to stop.
        progress: show a tqdm bar; ``None`` means only when stderr is a terminal.
    """

    def __init__(
        self,
        *,
        modules: Mapping[str, torch.nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        data: torch.Tensor,
        batch_size: int,
        fingerprint: dict,
        stateful: Mapping[str, object] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        resume: bool = False,
        seed: int | None = None,
        callbacks: Iterable[Callable] = (),
        progress: bool | None = None,
        description: str = "training",
    ):
        self.modules, self.optimizers = dict(modules), dict(optimizers)
        self.stateful = dict(stateful or {})
        self.data, self.fingerprint = data, fingerprint
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every, self.resume, self.seed = checkpoint_every, resume, seed
        self.callbacks = list(callbacks)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.description = description
        self.sampler = MinibatchSampler(data.shape[0], batch_size, 0 if seed is None else seed)
        self.history = History()
        self.step = 0

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "stateful": {k: s.state_dict() for k, s in self.stateful.items()},
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "history": list(self.history),
        }

    def save(self) -> None:
        if self.checkpoint is not None:
            atomic_save(self.state_dict(), self.checkpoint)

    def load(self) -> None:
        path = self.checkpoint
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not an alws checkpoint (format {CHECKPOINT_FORMAT} expected)")
        diff = _describe_difference(state["fingerprint"], self.fingerprint)
        if diff:
            raise CheckpointError(f"checkpoint {path} was written for another model or config: " + "; ".join(diff))
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.stateful.items():
            s.load_state_dict(state["stateful"][k])
        self.sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"])
        self.history = History(state["history"])
        self.step = state["step"]

    # -- the loop ------------------------------------------------------------------------------
    def run(self, step_fn: Callable[[torch.Tensor, int], dict], steps: int) -> History:
        """Run until ``steps`` steps are done in total (a resumed run continues its count)."""
        if self.checkpoint is not None and self.checkpoint.exists():
            if not self.resume:
                raise CheckpointError(
                    f"checkpoint {self.checkpoint} already exists; pass resume=True to continue it, or choose another path"
                )
            self.load()
        elif self.resume and self.checkpoint is not None:
            raise CheckpointError(f"resume=True but checkpoint {self.checkpoint} does not exist")
        elif self.seed is not None:
            seed_everything(self.seed)
        bar = tqdm(total=steps, initial=self.step, desc=self.description, disable=not self.progress, dynamic_ncols=True)
        consistent = True  # false while a step is half done: its state must not be checkpointed
        try:
            while self.step < steps:
                step = self.step + 1
                batch = self.data[self.sampler.next().to(self.data.device)]
                start = time.perf_counter()
                consistent = False
                try:
                    record = dict(step_fn(batch, step))
                except NonFiniteError as error:
                    self.save()
                    where = f"; last good state saved to {self.checkpoint}" if self.checkpoint else ""
                    raise NonFiniteError(f"step {step}: {error}{where}") from error
                record = {"step": step, **record, "time": time.perf_counter() - start}
                self.history.append(record)
                self.step = step
                consistent = True
                bar.update(1)
                if "loss" in record:
                    bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                stop = False
                for callback in self.callbacks:
                    try:
                        callback(step, record)
                    except StopTraining:
                        stop = True
                if self.checkpoint is not None and (step % self.checkpoint_every == 0 or step == steps or stop):
                    self.save()
                if stop:
                    break
        except KeyboardInterrupt:
            if consistent:  # otherwise the last periodic checkpoint is the newest consistent state
                self.save()
            raise
        finally:
            bar.close()
        return self.history


def with_time_budget(callbacks, max_seconds: float | None) -> list:
    """``callbacks`` plus, if ``max_seconds`` is given, one that stops training after that much time."""
    callbacks = list(callbacks)
    if max_seconds is not None:
        import time

        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        clock = {"start": None}

        def budget(step, record):
            clock["start"] = clock["start"] or time.perf_counter() - record["time"]
            if time.perf_counter() - clock["start"] >= max_seconds:
                raise StopTraining

        callbacks.append(budget)
    return callbacks
