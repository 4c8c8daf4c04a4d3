"""Training curves of a run directory, while it runs or after it stopped (``alws plot DIR``).

Every trainer with a checkpoint streams its per-step records to ``NAME.history.jsonl`` beside
the checkpoint (one JSON object per line, flushed as written; see
:class:`alws.training.Trainer`). :func:`plot_run` reads every such file under a run directory
and draws each numeric quantity (loss, leave-one-out error, effective sample size, kernel error,
and the experiment's own metric where it records one: Amari distance, MMD, held-out
log-likelihood, ...) against the step and against wall time, one line per trainer.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import ConfigError

__all__ = ["read_history", "find_histories", "plot_run", "CURVES"]

#: Quantities drawn first, in this order, when present; other numeric fields follow.
CURVES = ("loss", "loo_error", "ess", "kernel_error", "amari", "mmd", "circular_variance", "test_log_likelihood", "sigma")
#: Fields that are bookkeeping, not curves.
_SKIP = {"step", "time", "wall_s", "selected", "jitter", "bandwidth", "ridge", "grad_norm", "penalty"}


def read_history(path: Path) -> list[dict]:
    """The records of one ``*.history.jsonl`` file; a last line cut off by a kill is ignored."""
    records = []
    with open(path) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the line being written when the process stopped
    return records


def find_histories(run_dir: Path) -> dict[str, Path]:
    """``{label: path}`` of every history file under ``run_dir`` (labels relative to it)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a directory")
    found = {}
    for path in sorted(run_dir.rglob("*.history.jsonl")):
        relative = path.relative_to(run_dir)
        parts = [p for p in relative.parts[:-1] if p != "checkpoints"]
        found["/".join([*parts, path.name[: -len(".history.jsonl")]])] = path
    return found


def _numeric(records: list[dict]) -> list[str]:
    keys = []
    for record in records:
        for key, value in record.items():
            if key not in keys and key not in _SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                keys.append(key)
    return sorted(keys, key=lambda k: (CURVES.index(k) if k in CURVES else len(CURVES), k))


def plot_run(run_dir, out: Path | None = None) -> Path:
    """Draw the training curves of ``run_dir`` into ``out`` (default ``run_dir/training_curves.png``)
    and return its path. Raises :class:`ConfigError` when the directory holds no history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    histories = {label: read_history(path) for label, path in find_histories(run_dir).items()}
    histories = {label: records for label, records in histories.items() if records}
    if not histories:
        raise ConfigError(f"{run_dir} holds no training history (*.history.jsonl beside its checkpoints): nothing to plot")
    keys = []
    for records in histories.values():
        keys += [k for k in _numeric(records) if k not in keys]
    keys = sorted(keys, key=lambda k: (CURVES.index(k) if k in CURVES else len(CURVES), k))
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 2.3 * len(keys) + 0.6), squeeze=False)
    for label, records in histories.items():
        steps = [r["step"] for r in records]
        clock, total = [], 0.0
        for r in records:
            total += r.get("time", 0.0)
            clock.append(total)
        for row, key in enumerate(keys):
            points = [(s, c, r[key]) for s, c, r in zip(steps, clock, records)
                      if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if not points:
                continue
            s, c, v = zip(*points)
            style = "-" if len(points) > 30 else "o-"
            axes[row, 0].plot(s, v, style, ms=3, lw=1, label=label)
            axes[row, 1].plot(c, v, style, ms=3, lw=1, label=label)
    for row, key in enumerate(keys):
        axes[row, 0].set_ylabel(key)
        if key in ("loo_error", "kernel_error", "amari", "mmd"):
            for ax in axes[row]:
                ax.set_yscale("symlog" if key == "mmd" else "log")
    axes[-1, 0].set_xlabel("step")
    axes[-1, 1].set_xlabel("training wall time (s)")
    axes[0, 1].legend(fontsize=7, loc="best")
    fig.suptitle(f"training curves: {run_dir}", fontsize=10)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "training_curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
