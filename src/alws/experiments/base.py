"""What every experiment shares: configs, presets, overrides, run directories, stages and resume.

An experiment is a module in :mod:`alws.experiments` that defines

- ``NAME`` and ``DESCRIPTION``;
- ``Config``: a dataclass deriving from :class:`ExperimentConfig` (defaults = the default run),
  with ``validate()`` raising :class:`alws.ConfigError` on values out of range;
- ``PRESETS``: ``{"smoke": {...overrides...}, ...}`` (``"default"`` is implicit);
- ``run(config, ctx) -> dict``: the results (JSON-able); figures go through ``ctx``;
- optionally ``report(results) -> str``: a table for the terminal.

A run directory holds ``config.json`` (the full resolved config), ``results.json``, ``*.png``
figures, ``checkpoints/``, ``stages/`` (finished pieces of work, reused by ``alws resume``) and
``run.log``.
"""
from __future__ import annotations

import importlib
import json
import logging
import sys
import time
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..training import atomic_write_text, seed_everything

__all__ = [
    "ExperimentConfig",
    "TrainingConfig",
    "RunContext",
    "EXPERIMENTS",
    "load_experiment",
    "resolve_config",
    "parse_override",
    "record_parameters",
    "parameter_trajectory",
    "run_experiment",
    "resume_experiment",
]

#: Experiment name -> module under ``alws.experiments``.
EXPERIMENTS = {
    "gradient-estimation": "gradient_estimation",
    "blowfly": "blowfly",
    "hodgkin-huxley": "hodgkin_huxley",
    "gabor-ring": "gabor_ring",
    "pinwheel": "pinwheel",
    "ica": "ica",
    "images": "images",
    "images-benchmark": "images_benchmark",
}


@dataclass
class ExperimentConfig:
    """Fields every experiment has."""

    seed: int = 0
    device: str = "cpu"

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range (subclasses extend this). The
        common keys ``regression`` and ``exponential_family`` are checked here for every
        experiment that has them."""
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:k]', got {self.device!r}")
        regression = getattr(self, "regression", "auto")
        if regression not in ("auto", "exact", "rff", "nystrom"):
            raise ConfigError(f"unknown regression {regression!r}; valid: auto, exact, rff, nystrom")
        path = getattr(self, "exponential_family", "auto")
        if path not in ("auto", "true", "false"):
            raise ConfigError(f"exponential_family must be 'auto', 'true' or 'false', got {path!r}")

    def exponential_family_option(self):
        """The config's ``exponential_family`` word as :func:`alws.fit` takes it."""
        return {"auto": "auto", "true": True, "false": False}[getattr(self, "exponential_family", "auto")]


@dataclass
class TrainingConfig(ExperimentConfig):
    """Fields of experiments that train a model with :func:`alws.fit`."""

    steps: int = 200
    n_sleep: int = 200
    lr: float = 0.03
    regression: str = "exact"
    n_simulations: int = 20
    record_every: int = 5

    def validate(self) -> None:
        super().validate()
        for key in ("steps", "n_simulations", "record_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.n_sleep < 2:
            raise ConfigError(f"n_sleep must be >= 2, got {self.n_sleep}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def record_parameters(values: Callable[[], dict], every: int) -> Callable:
    """A training callback that stores ``values()`` in the step's history record every ``every``
    steps (and at step 1). History records are checkpointed, so the trajectory survives a resume;
    read it back with :func:`parameter_trajectory`."""

    def callback(step: int, record: dict) -> None:
        if step == 1 or step % every == 0:
            record["parameters"] = values()

    return callback


def parameter_trajectory(history) -> list:
    """``[{"step": s, **parameters}]`` from the records written by :func:`record_parameters`."""
    return [{"step": r["step"], **r["parameters"]} for r in history if "parameters" in r]


def load_experiment(name: str):
    """The module of experiment ``name``; unknown names are refused with the list of valid ones."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; valid: {', '.join(sorted(EXPERIMENTS))}")
    return importlib.import_module(f"alws.experiments.{EXPERIMENTS[name]}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is __import__("types").UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} expects {len(args)} entries, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return (tuple if origin is tuple else list)(_coerce(v, inner, key) for v in value)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} expects a JSON object, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} expects a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key} expects an integer, got {value!r}")
        return int(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} expects true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, bool):  # `--set key=true` parses as JSON true; the key wants a word
            return "true" if value else "false"
        if not isinstance(value, str):
            raise ConfigError(f"{key} expects a string, got {value!r}")
        return value
    return value


def _hints(config_cls) -> dict:
    return typing.get_type_hints(config_cls)


def _apply(config_cls, values: dict, overrides: dict, source: str) -> dict:
    hints = _hints(config_cls)
    valid = [f.name for f in fields(config_cls)]
    for key, value in overrides.items():
        if key not in hints:
            raise ConfigError(f"unknown config key {key!r} in {source}; valid keys: {', '.join(valid)}")
        values[key] = _coerce(value, hints[key], key)
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``; the value is read as JSON, else kept as a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r} (empty key)")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        if raw.strip() and raw.strip()[0] in "[{\"" or raw.strip() == "":
            raise ConfigError(f"--set {key}: value {raw!r} does not parse (use JSON, e.g. [1, 2] or 0.5)") from None
        return key, raw


def resolve_config(module, preset: str = "default", config_file=None, overrides=(), seed=None, device=None):
    """Defaults, then the preset, then a JSON config file, then ``--set`` overrides, then seed/device."""
    presets = {"default": {}, **getattr(module, "PRESETS", {})}
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r} for {module.NAME}; valid: {', '.join(presets)}")
    cls = module.Config
    values = asdict(cls())
    values = _apply(cls, values, presets[preset], f"preset {preset!r}")
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of config keys")
        values = _apply(cls, values, loaded, str(path))
    parsed = dict(parse_override(item) if isinstance(item, str) else item for item in overrides)
    values = _apply(cls, values, parsed, "--set")
    if seed is not None:
        values = _apply(cls, values, {"seed": seed}, "--seed")
    if device is not None:
        values = _apply(cls, values, {"device": device}, "--device")
    config = cls(**values)
    config.validate()
    return config


class RunContext:
    """Handed to an experiment's ``run``: where to write, and how to skip work already done."""

    def __init__(self, out_dir: Path, progress: bool | None, resume: bool, logger: logging.Logger):
        self.out_dir, self.progress, self.resume, self.log = out_dir, progress, resume, logger
        self.figures: list[str] = []

    @property
    def show_progress(self) -> bool:
        """Progress bars: as asked, else only when stderr is a terminal."""
        return sys.stderr.isatty() if self.progress is None else bool(self.progress)

    def checkpoint(self, name: str) -> Path:
        """Path for a training checkpoint named ``name`` (under ``checkpoints/``)."""
        path = self.out_dir / "checkpoints" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, name: str, compute: Callable[[], Any]) -> Any:
        """Result of ``compute()``, stored as ``stages/NAME.json``; a resumed run reads it back."""
        path = self.out_dir / "stages" / f"{name}.json"
        if path.exists():
            self.log.info("stage %s: reusing %s", name, path)
            return json.loads(path.read_text())
        result = compute()
        atomic_write_text(path, json.dumps(result, indent=1))
        return result

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``NAME.png`` in the run directory and close it."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path.name)
        return path


def _logger(out_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"alws.run.{out_dir}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.FileHandler(out_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _execute(module, name: str, preset: str, config, out_dir: Path, progress, resume: bool) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"experiment": name, "preset": preset, "config": asdict(config)}
    config_path = out_dir / "config.json"
    if not resume:
        atomic_write_text(config_path, json.dumps(record, indent=1))
    logger = _logger(out_dir)
    logger.info("%s %s (preset %s): %s", "resuming" if resume else "running", name, preset, json.dumps(asdict(config)))
    seed_everything(config.seed)
    ctx = RunContext(out_dir, progress, resume, logger)
    start = time.perf_counter()
    results = module.run(config, ctx)
    results = {
        "experiment": name,
        "preset": preset,
        "config": asdict(config),
        "wall_time_s": time.perf_counter() - start,
        "figures": ctx.figures,
        **results,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1))
    logger.info("finished in %.1f s; results in %s", results["wall_time_s"], out_dir / "results.json")
    return results


def run_experiment(name, preset="default", config_file=None, overrides=(), out_dir=None, seed=None, device=None, progress=None):
    """Resolve the config, run experiment ``name`` into ``out_dir`` and return ``(results, out_dir)``."""
    module = load_experiment(name)
    config = resolve_config(module, preset, config_file, overrides, seed, device)
    if out_dir is None:
        out_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() or (out_dir / "config.json").exists():
        raise ConfigError(f"{out_dir} already holds a run; use 'alws resume {out_dir}' or choose another --out")
    return _execute(module, name, preset, config, out_dir, progress, resume=False), out_dir


def resume_experiment(out_dir, progress=None):
    """Continue the run in ``out_dir`` from its stages and checkpoints; returns ``(results, out_dir)``."""
    out_dir = Path(out_dir)
    path = out_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"{out_dir} holds no config.json; it is not an alws run directory")
    record = json.loads(path.read_text())
    module = load_experiment(record["experiment"])
    values = _apply(module.Config, asdict(module.Config()), record["config"], str(path))
    config = module.Config(**values)
    config.validate()
    return _execute(module, record["experiment"], record.get("preset", "default"), config, out_dir, progress, resume=True), out_dir
