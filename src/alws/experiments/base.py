"""What every experiment shares: configs, presets, overrides, run directories, stages and resume.

An experiment is a module in :mod:`alws.experiments` that defines

- ``NAME`` and ``DESCRIPTION``;
- ``Config``: a dataclass deriving from :class:`ExperimentConfig` (:class:`TrainingConfig` for an
  experiment that trains models); defaults = the default run; each field's constraints are
  declared beside it with :func:`setting` and checked by ``validate()``, which a config extends
  only for checks across fields;
- ``PRESETS``: ``{"smoke": {...overrides...}, ...}`` (``"default"`` is implicit);
- ``run(config, ctx) -> dict``: the results (JSON-able); figures go through ``ctx``;
- optionally ``report(results) -> str``: a table for the terminal.

A run directory holds ``config.json`` (the full resolved config), ``results.json``, ``*.png``
figures, ``checkpoints/``, ``stages/`` (finished pieces of work, reused by ``alws resume``) and
``run.log``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import sys
import time
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..schedules import LR_SCHEDULES
from ..training import TENSORBOARD_DIR, atomic_write_text, seed_everything
from .registry import EXPERIMENTS

__all__ = [
    "setting",
    "ExperimentConfig",
    "KernelConfig",
    "finished",
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



def setting(default: Any = MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None, about: str | None = None,
            default_factory: Any = MISSING):
    """A config field with its constraints declared beside it, checked by
    :meth:`ExperimentConfig.validate` on the value (or on each entry of a list; ``None`` passes):
    bounds ``ge`` (>=), ``gt`` (>), ``le`` (<=), ``lt`` (<), and ``choices`` (an iterable, or a
    callable returning one, for names known only once a module is imported); ``about`` names what
    the field is in the error message. A subclass that redeclares the field with another default
    keeps the constraints."""
    metadata = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "about": about}.items() if v is not None}
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _constraints(config_cls) -> dict:
    """Field name -> its declared constraints, the most derived declaration that has any."""
    found = {}
    for klass in reversed(config_cls.__mro__):
        for name, f in getattr(klass, "__dataclass_fields__", {}).items():
            if f.metadata:
                found[name] = f.metadata
    return found


def _check_declared(config) -> None:
    for name, rules in _constraints(type(config)).items():
        value = getattr(config, name)
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            if entry is None:
                continue
            if "choices" in rules:
                choices = rules["choices"]() if callable(rules["choices"]) else rules["choices"]
                if entry not in choices:
                    raise ConfigError(f"unknown {name} {entry!r}; valid: {', '.join(map(str, choices))}")
                continue
            about = f" ({rules['about']})" if "about" in rules else ""
            for rule, holds, words in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                       ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                if rule in rules and not holds(entry, rules[rule]):
                    raise ConfigError(f"{name} must be {words} {rules[rule]}{about}, got {entry!r}")


def _regression_choices():
    from ..regression import BACKENDS

    return ["auto", *BACKENDS]


@dataclass
class ExperimentConfig:
    """Fields every experiment has."""

    seed: int = 0
    device: str = "cpu"
    #: also write every trainer's per-step scalars as TensorBoard events under ``tensorboard/``
    tensorboard: bool = False

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of its declared range (see :func:`setting`)
        or a device or extra that is not there; subclasses extend this for checks across fields."""
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be 'cpu' or 'cuda[:k]', got {self.device!r}")
        if self.tensorboard:
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ConfigError("tensorboard=true needs TensorBoard: pip install 'alws[tensorboard]'")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"device {self.device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                                  "use --device cpu, or install a CUDA build of torch")
        _check_declared(self)


def _feature_choices(extra=()):
    def choices():
        from ..features import FEATURES

        return ["auto", "none", *FEATURES, *extra]

    return choices


@dataclass
class KernelConfig(ExperimentConfig):
    """The kernel of experiments that train with :func:`alws.fit` (see :class:`alws.ALWS`).

    ``features``: ``"auto"`` (a learned linear projection for high-dimensional ``x``), ``"none"``
    (the fixed kernel on raw ``x``), or a feature map by name (``linear``, ``mlp``, ``conv``,
    ``random-projection``), or one of the experiment's own (``extra_features``);
    ``learn_kernel``: ``True`` / ``False`` / ``"auto"``; the ``kernel_*`` fields set the
    kernel-learning schedule; ``weights``: ``"krr"``, ``"nonnegative"`` or ``"bounded"``; ``bandwidth_grid``,
    ``ridge_grid``, ``select_max``: the selection's multipliers, ridges and subsample (``None``: the library's; see
    :class:`alws.ALWS`).
    """

    features: str = "auto"
    feature_dim: int = setting(16, ge=1)
    kernel: str = "gaussian"
    learn_kernel: bool | str = setting("auto", choices=(True, False, "auto"))
    kernel_every: int = setting(2, ge=1)
    kernel_steps: int = setting(1, ge=1)
    kernel_samples: int | None = setting(None, ge=2)
    kernel_lr: float = setting(0.01, gt=0)
    kernel_lr_decay: int | None = setting(None, ge=1)
    kernel_hyperparameters: str = setting("selection", choices=("selection", "learned"))
    kernel_objective: str = setting("auto", choices=("auto", "targets", "directional", "log-likelihood"))
    select_directions: int | None = setting(None, ge=1)  # None: the library's choice (8 with a learned kernel, else 2)
    weights: str = setting("krr", choices=("krr", "nonnegative", "bounded"))
    # the selection's multipliers of the median distance and its subsample; None: the library's
    bandwidth_grid: list[float] | None = setting(None, gt=0)
    ridge_grid: list[float] | None = setting(None, gt=0)
    select_max: int | None = setting(None, ge=2)
    stein: bool | list = False  # Stein control variate: True, False or a list of parameter names (see alws.ALWS)

    #: feature names an experiment accepts beyond the library's (e.g. its own hand-made features)
    extra_features = ()
    #: for keys an older run's config.json lacks: the behaviour that run had (before the key existed)
    older_run_values = {"kernel_objective": "targets", "select_directions": 2}

    def __post_init__(self):
        self.learn_kernel = _three_way(self.learn_kernel)

    def validate(self) -> None:
        super().validate()
        from ..kernels import make_kernel

        valid = _feature_choices(self.extra_features)()
        if self.features not in valid:
            raise ConfigError(f"unknown features {self.features!r}; valid: {', '.join(valid)}")
        try:
            make_kernel(self.kernel)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        from ..stein import check_stein_setting

        check_stein_setting(self.stein)  # before the run starts, not at the learner's construction

    def kernel_options(self, features=None) -> dict:
        """The kernel keywords of :func:`alws.fit`; ``features`` replaces the config's word (for an
        experiment's own feature map)."""
        return {
            "features": self.features if features is None else features,
            "feature_dim": self.feature_dim,
            "kernel": self.kernel,
            "learn_kernel": self.learn_kernel,
            "kernel_every": self.kernel_every,
            "kernel_steps": self.kernel_steps,
            "kernel_samples": self.kernel_samples,
            "kernel_lr": self.kernel_lr,
            "kernel_lr_decay": self.kernel_lr_decay,
            "kernel_hyperparameters": self.kernel_hyperparameters,
            "kernel_objective": self.kernel_objective,
            "select_directions": self.select_directions,
            "weights": self.weights,
            "stein": self.stein,
            **({} if self.bandwidth_grid is None else {"bandwidth_grid": tuple(self.bandwidth_grid)}),
            **({} if self.ridge_grid is None else {"ridge_grid": tuple(self.ridge_grid)}),
            **({} if self.select_max is None else {"select_max": self.select_max}),
        }


def _three_way(value):
    """``True`` / ``False`` / ``"auto"``, also from the words ``"true"`` / ``"false"`` of older configs."""
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


@dataclass
class TrainingConfig(KernelConfig):
    """The fields every experiment that trains with :func:`alws.fit` shares (each experiment
    redeclares the defaults it needs; the constraints stay). ``exponential_family``: ``True`` (the
    fast path), ``False`` (regress the log-joint), ``"auto"`` (chosen by leave-one-out error) or
    ``"per-parameter"`` (chosen by leave-one-out error for each parameter tensor). ``average``: the
    fraction of the last steps over whose iterates the parameters are averaged at the end
    (Polyak-Ruppert, ``TrainOptions.average_from``; 0: the last iterate), counted from ``steps``
    (a run stopped earlier by a time budget averages only the steps inside that window; before
    it, it keeps the last iterate and warns). ``lr_schedule`` and ``lr_end_factor``: the learning
    rate over the run (``TrainOptions.lr_schedule``: ``"constant"``, ``"cosine"`` or ``"linear"``
    down to ``lr * lr_end_factor`` at the last step)."""

    steps: int = setting(200, ge=1)
    batch_size: int = setting(100, ge=1)
    n_sleep: int = setting(200, ge=2)
    lr: float = setting(0.03, gt=0)
    regression: str = setting("exact", choices=_regression_choices)
    exponential_family: bool | str = setting("auto", choices=(True, False, "auto", "per-parameter"))
    average: float = setting(0.0, ge=0, le=1)
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES)
    lr_end_factor: float = setting(0.01, ge=0, le=1)

    def __post_init__(self):
        super().__post_init__()
        self.exponential_family = _three_way(self.exponential_family)

    def alws_options(self, features=None) -> dict:
        """The keywords of :func:`alws.fit` that this config sets beyond the training options:
        ``n_sleep``, ``regression``, ``exponential_family`` and the kernel's."""
        return {"n_sleep": self.n_sleep, "regression": self.regression, "exponential_family": self.exponential_family,
                **self.kernel_options(features)}


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


def apply_overrides(config_cls, values: dict, overrides: dict, source: str) -> dict:
    """``values`` with each of ``overrides`` coerced to its field's type; an unknown key is refused
    naming ``source`` (where the overrides came from)."""
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
    values = apply_overrides(cls, values, presets[preset], f"preset {preset!r}")
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        loaded = loaded.get("config", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a JSON object of config keys")
        values = apply_overrides(cls, values, loaded, str(path))
    parsed = dict(parse_override(item) if isinstance(item, str) else item for item in overrides)
    values = apply_overrides(cls, values, parsed, "--set")
    if seed is not None:
        values = apply_overrides(cls, values, {"seed": seed}, "--seed")
    if device is not None:
        values = apply_overrides(cls, values, {"device": device}, "--device")
    config = cls(**values)
    config.validate()
    return config


class RunContext:
    """Handed to an experiment's ``run``: where to write, and how to skip work already done.

    ``config_sha256`` keys every stage: a stage file written under another config (another run's
    directory, an edited config) is recomputed, never reused.
    """

    def __init__(self, out_dir: Path, progress: bool | None, resume: bool, logger: logging.Logger, config_sha256: str = ""):
        self.out_dir, self.progress, self.resume, self.log = out_dir, progress, resume, logger
        self.config_sha256 = config_sha256
        self.figures: list[str] = []
        #: ``[{"method": name, "status": "diverged", "step": k, "error": message}]`` of :meth:`method`
        self.failures: list[dict] = []

    @property
    def show_progress(self) -> bool | None:
        """Progress display: ``False`` when asked for none, else ``None`` (a bar on a terminal,
        plain progress lines every few seconds otherwise; see :class:`alws.training.Trainer`)."""
        return False if self.progress is False else None

    def checkpoint(self, name: str) -> Path:
        """Path for a training checkpoint named ``name`` (under ``checkpoints/``)."""
        path = self.out_dir / "checkpoints" / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def train_options(self, name: str, config: ExperimentConfig, **options):
        """The :class:`alws.TrainOptions` of training run ``name``: checkpointed under
        ``checkpoints/NAME.pt`` (resumed when that file exists) every tenth of the steps, with the
        run's progress display and seed; ``steps``, ``batch_size``, ``lr`` and its schedule from ``config`` when
        it has them; ``options`` (any field of ``TrainOptions``) override. A config's ``average``
        (a fraction of the steps) becomes ``average_from``, the first averaged step."""
        from ..objective import TrainOptions

        checkpoint = self.checkpoint(name)
        values = {key: getattr(config, key) for key in ("steps", "batch_size", "lr", "lr_schedule", "lr_end_factor") if hasattr(config, key)}
        values = {**values, "seed": config.seed, "checkpoint": checkpoint, "resume": checkpoint.exists(),
                  "progress": self.show_progress, **options}
        values.setdefault("checkpoint_every", max(1, values.get("steps", 1000) // 10))
        average = getattr(config, "average", 0.0)
        if average > 0 and "average_from" not in values:
            steps = values.get("steps", TrainOptions.steps)
            values["average_from"] = steps - max(1, math.ceil(average * steps)) + 1
        return TrainOptions(**values)

    def stage(self, name: str, compute: Callable[[], Any]) -> Any:
        """Result of ``compute()``, stored as ``stages/NAME.json`` with the config's digest; a
        resumed run reads it back when the digest matches."""
        path = self.out_dir / "stages" / f"{name}.json"
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                stored = None
            if isinstance(stored, dict) and stored.get("config_sha256") == self.config_sha256 and "result" in stored:
                self.log.info("stage %s: reusing %s", name, path)
                return stored["result"]
            self.log.info("stage %s: %s was written under another config (or is damaged); recomputing", name, path)
        result = compute()
        atomic_write_text(path, json.dumps({"stage": name, "config_sha256": self.config_sha256, "result": result}, indent=1))
        return result

    def method(self, name: str, compute: Callable[[], dict], started: Callable[[], float] | None = None) -> dict:
        """:meth:`stage` for one method of a multi-method experiment: a method whose training
        diverges (non-finite loss or gradient, a kernel system that stays indefinite) is recorded
        as ``{"status": "diverged", "step": k, "error": ...}`` and the experiment goes on."""
        from ..errors import NonFiniteError, NotPositiveDefiniteError

        clock = time.perf_counter()

        def guarded():
            try:
                return {"status": "finished", **compute()}
            except (NonFiniteError, NotPositiveDefiniteError) as error:
                self.log.error("%s diverged: %s", name, error)
                return {"status": "diverged", "step": getattr(error, "step", None), "error": str(error),
                        "train_seconds": time.perf_counter() - clock}

        row = self.stage(name, guarded)
        if row.get("status") == "diverged":
            self.failures.append({"method": name, "status": "diverged", "step": row.get("step"), "error": row.get("error")})
        return row

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``NAME.png`` in the run directory and close it."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path.name)
        return path


def finished(methods: dict) -> dict:
    """The rows of ``methods`` (name -> result of :meth:`RunContext.method`) that finished."""
    return {name: row for name, row in methods.items() if row.get("status", "finished") == "finished"}


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


#: Marks a run directory's config.json.
RUN_FORMAT = "alws-run-1"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: carries the run directory, so the message can say what to resume."""

    def __init__(self, out_dir: Path):
        super().__init__(str(out_dir))
        self.out_dir = out_dir


def config_digest(config: dict) -> str:
    """SHA-256 of a config dict (sorted JSON): keys stages and detects an edited config.json."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a :class:`ConfigError` that names the file and the problem."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist ({what})") from None
    except OSError as error:
        raise ConfigError(f"cannot read {path} ({what}): {error}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} ({what}) is not valid JSON (truncated or edited?): {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} ({what}) must hold a JSON object, found {type(value).__name__}")
    return value


def _check_out_dir(out_dir: Path) -> None:
    """A new run writes only into a new or empty directory: never over a user's files or another run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory for the run (it is created if missing)")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if (out_dir / "config.json").exists() or (out_dir / "results.json").exists():
            raise ConfigError(f"{out_dir} already holds a run; use 'alws resume {out_dir}' or choose another --out")
        raise ConfigError(f"{out_dir} exists and is not empty, and it is not an alws run: a run writes only into a new or "
                          "empty directory (its files would be overwritten); choose another --out")


def _execute(module, name: str, preset: str, config, out_dir: Path, progress, resume: bool) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    values = asdict(config)
    digest = config_digest(values)
    record = {"format": RUN_FORMAT, "experiment": name, "preset": preset, "config": values, "config_sha256": digest}
    config_path = out_dir / "config.json"
    if not resume:
        atomic_write_text(config_path, json.dumps(record, indent=1))
    logger = _logger(out_dir)
    logger.info("%s %s (preset %s): %s", "resuming" if resume else "running", name, preset, json.dumps(values))
    seed_everything(config.seed)
    ctx = RunContext(out_dir, progress, resume, logger, digest)
    start = time.perf_counter()
    board = TENSORBOARD_DIR.set(out_dir / "tensorboard" if config.tensorboard else None)
    try:
        results = module.run(config, ctx)
    except KeyboardInterrupt:
        logger.info("interrupted")
        raise Interrupted(out_dir) from None
    finally:
        TENSORBOARD_DIR.reset(board)
    results = {
        "experiment": name,
        "preset": preset,
        "config": values,
        "wall_time_s": time.perf_counter() - start,
        "figures": ctx.figures,
        "failures": ctx.failures,
        **results,
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1))
    logger.info("finished in %.1f s; results in %s", results["wall_time_s"], out_dir / "results.json")
    return results


def run_experiment(name, preset="default", config_file=None, overrides=(), out_dir=None, seed=None, device=None, progress=None):
    """Resolve the config, run experiment ``name`` into ``out_dir`` and return ``(results, out_dir)``.

    ``out_dir`` must be new or empty (default ``runs/NAME-TIMESTAMP``); its name is printed to
    stderr before the work starts.
    """
    module = load_experiment(name)
    config = resolve_config(module, preset, config_file, overrides, seed, device)
    if out_dir is None:
        out_dir = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    print(f"alws: {name} (preset {preset}) -> run directory {out_dir}", file=sys.stderr, flush=True)
    return _execute(module, name, preset, config, out_dir, progress, resume=False), out_dir


def config_of_run(module, recorded: dict, where: str):
    """The config a run directory's ``config.json`` (its ``"config"`` entry) describes, validated.
    Keys added to the experiment after the run started take the value that reproduces what the run
    did (``Config.older_run_values``), not today's default."""
    older = {k: v for k, v in getattr(module.Config, "older_run_values", {}).items() if k not in recorded}
    values = apply_overrides(module.Config, asdict(module.Config()), {**older, **recorded}, where)
    config = module.Config(**values)
    config.validate()
    return config


def resume_experiment(out_dir, progress=None):
    """Continue the run in ``out_dir`` from its stages and checkpoints; returns ``(results, out_dir)``.

    A finished run is not run again: its results are returned as they are (``results["resumed"]``
    is then ``"already finished"``). An edited ``config.json`` is refused.
    """
    out_dir = Path(out_dir)
    path = out_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"{out_dir} holds no config.json; it is not an alws run directory")
    record = read_json(path, "the run's config")
    for key in ("experiment", "config"):
        if key not in record:
            raise ConfigError(f"{path} has no {key!r} entry: it is not an alws run's config (or it was edited)")
    if "config_sha256" in record and config_digest(record["config"]) != record["config_sha256"]:
        raise ConfigError(f"{path} was edited after the run started (its config no longer matches the one the stages and "
                          f"checkpoints were made with); start a new run from it: alws run {record['experiment']} --config {path} --out NEW_DIR")
    module = load_experiment(record["experiment"])
    if not isinstance(record["config"], dict):
        raise ConfigError(f"{path}: 'config' must be a JSON object")
    config = config_of_run(module, record["config"], str(path))
    if (out_dir / "results.json").exists():
        results = read_json(out_dir / "results.json", "the run's results")
        print(f"alws: {out_dir} is already finished (results.json); nothing to resume", file=sys.stderr, flush=True)
        return {**results, "resumed": "already finished"}, out_dir
    print(f"alws: resuming {record['experiment']} in {out_dir}", file=sys.stderr, flush=True)
    return _execute(module, record["experiment"], record.get("preset", "default"), config, out_dir, progress, resume=True), out_dir
