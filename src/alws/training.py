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

import contextvars
import hashlib
import io
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

from .errors import CheckpointError, ConfigError, NonFiniteError

__all__ = [
    "StopTraining",
    "Progress",
    "with_time_budget",
    "History",
    "MinibatchSampler",
    "Trainer",
    "guarded_step",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_checkpoint",
    "load_checkpoint",
    "data_fingerprint",
    "remove_stale_temporaries",
    "seed_everything",
    "make_optimizer",
    "fingerprint",
    "CHECKPOINT_FORMAT",
    "TENSORBOARD_DIR",
]

CHECKPOINT_FORMAT = "alws-checkpoint-v3"
#: Formats of earlier alws versions, refused with an explanation.
OLDER_CHECKPOINT_FORMATS = ("alws-checkpoint-v2",)

#: Where trainers also write TensorBoard scalars (a run directory's ``tensorboard/``), or ``None``.
TENSORBOARD_DIR: contextvars.ContextVar = contextvars.ContextVar("alws_tensorboard_dir", default=None)


class StopTraining(Exception):
    """Raise from a callback to end training cleanly after the current step (a checkpoint is written)."""


class History(list):
    """Per-step records (dicts). ``history.column("loss")`` gives one field across steps."""

    def column(self, key: str) -> list:
        return [record.get(key) for record in self]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, ``fsync`` and
    ``os.replace``: readers see the old file or the new one, never a half-written file. The file
    gets permissions ``mode`` (less the process umask), like any file the user writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files that interrupted atomic writes of ``path`` left behind
    (``.NAME.*.tmp`` beside it); returns their names."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp.name)
            except OSError:
                pass
    return removed


#: First bytes of every checkpoint file: the format, then a SHA-256 of the payload on its own line.
CHECKPOINT_MAGIC = b"ALWS-CHECKPOINT-2\n"


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` atomically as ``CHECKPOINT_MAGIC``, the payload's SHA-256 and the payload
    (``torch.save`` bytes), so that any corruption is detected on load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write_bytes(path, CHECKPOINT_MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`: verify its checksum, then load it with
    ``weights_only=True`` (tensors and plain containers only: a crafted file cannot run code).
    Raises :class:`CheckpointError` naming what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    if not raw.startswith(CHECKPOINT_MAGIC):
        if raw[:2] == b"PK" or raw[:1] == b"\x80":  # a plain torch.save file: zip or pickle
            raise CheckpointError(f"{path} is not an alws checkpoint of this version (written by torch.save or an alws before "
                                  "checksummed checkpoints); it is not loaded. Start a new run, or resume with the alws that wrote it")
        raise CheckpointError(f"{path} is not an alws checkpoint")
    header_end = raw.index(b"\n", len(CHECKPOINT_MAGIC)) if b"\n" in raw[len(CHECKPOINT_MAGIC):] else -1
    if header_end < 0:
        raise CheckpointError(f"checkpoint {path} is truncated (no checksum line)")
    digest, payload = raw[len(CHECKPOINT_MAGIC):header_end].decode("ascii", "replace"), raw[header_end + 1 :]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match their checksum (a damaged or edited file)")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"cannot load checkpoint {path}: {error}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold an alws checkpoint")
    return state


def data_fingerprint(data: torch.Tensor) -> dict:
    """Shape, dtype and SHA-256 of the data's bytes: a checkpoint of a run on other data (even of
    the same shape) is refused on resume."""
    array = data.detach().cpu().contiguous()
    digest = hashlib.sha256(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"").hexdigest()
    return {"shape": list(array.shape), "dtype": str(array.dtype).replace("torch.", ""), "sha256": digest}


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
    every = [p for group in optimizer.param_groups for p in group["params"]]
    before = [p.detach().clone() for p in every]
    optimizer.step()
    if not all(bool(torch.isfinite(p).all()) for p in every):  # a finite gradient whose update overflowed
        with torch.no_grad():
            for p, old in zip(every, before):
                p.copy_(old)
        raise NonFiniteError(
            f"the optimiser's update made a parameter non-finite (gradient norm {float(norm):.3g}: a learning rate too "
            "large for it?); parameters left at their values before this step"
        )
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
            fingerprint differs is refused on resume, naming the differences. The data's shape,
            dtype and SHA-256 are added to it.
        stateful: other objects with ``state_dict``/``load_state_dict`` (e.g. the ALWS learner).
        checkpoint: path of the checkpoint file (``None``: no checkpoints).
        checkpoint_every: write a checkpoint every so many steps (and at the end, on
            interruption and on a non-finite loss).
        resume: continue from ``checkpoint``. If false and the file exists, :class:`CheckpointError`
            is raised rather than overwriting it.
        seed: seeds every generator at the start of a fresh run (ignored on resume, where the
            saved generator states are restored).
        callbacks: callables ``cb(step, record)``; raise :class:`StopTraining` to stop.
        progress: ``True``: a tqdm bar; ``False``: nothing; ``None`` (default): a bar when stderr is
            a terminal, otherwise (a pipe, a file, CI) one plain line every few seconds.
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
        self.data, self.fingerprint = data, {**fingerprint, "data": data_fingerprint(data)}
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every, self.resume, self.seed = checkpoint_every, resume, seed
        self.callbacks = list(callbacks)
        self.progress = progress  # see Progress
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

    def save(self, path: Path | None = None) -> None:
        path = path or self.checkpoint
        if path is not None:
            save_checkpoint(self.state_dict(), path)

    def load(self) -> None:
        path = self.checkpoint
        state = load_checkpoint(path)
        if state.get("format") in OLDER_CHECKPOINT_FORMATS:
            raise CheckpointError(f"{path} was written by an earlier alws (checkpoint format {state.get('format')}, before every method "
                                  f"became an Objective: its settings are recorded differently), so it is not resumed; start a new run, "
                                  f"or resume with the alws that wrote it")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not an alws checkpoint of this version (format {CHECKPOINT_FORMAT} expected, "
                                  f"found {state.get('format')!r})")
        diff = _describe_difference(state["fingerprint"], self.fingerprint)
        if diff:
            raise CheckpointError(f"checkpoint {path} was written for another model, data or config: " + "; ".join(diff))
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
        if self.checkpoint is not None:
            remove_stale_temporaries(self.checkpoint)  # left by a write that was killed
            remove_stale_temporaries(self.checkpoint.with_suffix(".history.jsonl"))
        if self.checkpoint is not None and self.checkpoint.exists():
            if not self.resume:
                raise CheckpointError(
                    f"checkpoint {self.checkpoint} already exists; pass resume=True to continue it, or choose another path"
                )
            self.load()
            if self.step > steps:
                raise CheckpointError(
                    f"checkpoint {self.checkpoint} is at step {self.step}, beyond the {steps} steps asked for; "
                    f"resume with steps >= {self.step}, or start a new run"
                )
        elif self.resume and self.checkpoint is not None:
            raise CheckpointError(f"resume=True but checkpoint {self.checkpoint} does not exist")
        elif self.seed is not None:
            seed_everything(self.seed)
        bar = Progress(steps, f"{self.description} steps", self.progress, initial=self.step)
        stream = self._open_history_stream()
        board = self._open_tensorboard()
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
                    where = ""
                    if self.checkpoint is not None:
                        # the periodic checkpoint stays the resumable state; the failure goes beside it
                        failed = self.checkpoint.with_name(self.checkpoint.name + ".failed")
                        self.save(failed)
                        kept = f"the last consistent checkpoint {self.checkpoint} is kept" if self.checkpoint.exists() else "no checkpoint was due yet"
                        where = f"; {kept}; the state at the failure is in {failed}"
                    failure = NonFiniteError(f"step {step}: {error}{where}")
                    failure.step = step
                    raise failure from error
                record = {"step": step, **record, "time": time.perf_counter() - start}
                self.history.append(record)
                self.step = step
                consistent = True
                bar.update(1, **({"loss": f"{record['loss']:.4g}"} if isinstance(record.get("loss"), float) else {}))
                stop = False
                for callback in self.callbacks:
                    try:
                        callback(step, record)
                    except StopTraining:
                        stop = True
                # streamed after the callbacks, which may add the experiment's metrics to the record
                if stream is not None:
                    stream.write(json.dumps(record, default=float) + "\n")
                    stream.flush()
                if board is not None:
                    for key, value in record.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                            board.add_scalar(key, value, step)
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
            if stream is not None:
                stream.close()
            if board is not None:
                board.close()
        return self.history

    @property
    def history_file(self) -> Path | None:
        """``NAME.history.jsonl`` beside the checkpoint: one JSON line per step, flushed as it
        is written, so a long run can be watched (``alws plot``) and an interrupted one plotted."""
        return None if self.checkpoint is None else self.checkpoint.with_suffix(".history.jsonl")

    def _open_history_stream(self):
        path = self.history_file
        if path is None:
            return None
        # start from the checkpoint's history (lines written after its last save are redone)
        atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in self.history))
        return open(path, "a", buffering=1)

    def _open_tensorboard(self):
        root = TENSORBOARD_DIR.get()
        if root is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ConfigError("tensorboard=true needs TensorBoard: pip install 'alws[tensorboard]'") from error
        name = self.checkpoint.stem if self.checkpoint is not None else self.description.split()[0]
        return SummaryWriter(log_dir=str(Path(root) / name))


class Progress:
    """Progress for any output: a tqdm bar on a terminal, a plain flushed line on stderr every
    ``every`` seconds (and at the first and last update) when stderr is a pipe or a file, nothing
    when ``show`` is ``False``. ``show=True`` forces the bar."""

    def __init__(self, total: int, description: str, show: bool | None = None, initial: int = 0, every: float = 5.0):
        self.total, self.description, self.every = total, description, every
        self.done = self.start_count = initial
        self.start, self.last = time.perf_counter(), -math.inf
        bar = show is True or (show is None and sys.stderr.isatty())
        self.lines = show is None and not bar
        self.bar = tqdm(total=total, initial=initial, desc=description, dynamic_ncols=True) if bar else None

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(**postfix, refresh=False)
            return
        if not self.lines:
            return
        now = time.perf_counter()
        if now - self.last < self.every and self.done not in (self.start_count + n, self.total):
            return
        self.last = now
        rate = (self.done - self.start_count) / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        eta = f", about {left / 60:.1f} min left at most" if math.isfinite(left) and self.done < self.total else ""
        print(f"{self.description}: {self.done}/{self.total}{extra}, {rate:.2f}/s{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def with_time_budget(callbacks, max_seconds: float | None, started: float | None = None) -> list:
    """``callbacks`` plus, if ``max_seconds`` is given, one that stops training once ``max_seconds``
    have passed since ``started`` (a ``time.perf_counter()`` reading; default: now). Pass the
    time the method was called, so the budget covers its set-up too. A step in progress is not
    cut short: the run can end past the budget by up to one step (report the real wall time)."""
    callbacks = list(callbacks)
    if max_seconds is not None:
        if not max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0, got {max_seconds}")
        start = time.perf_counter() if started is None else started

        def budget(step, record):
            if time.perf_counter() - start >= max_seconds:
                raise StopTraining

        callbacks.append(budget)
    return callbacks
