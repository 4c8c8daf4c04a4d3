"""``alws run images-benchmark``: Experiment VI on several datasets within one total budget.

Runs :mod:`alws.experiments.images` on each of ``datasets`` (default binarised MNIST, MNIST and
Fashion-MNIST) with every method, giving each (dataset, method) pair the same wall time:
``budget_minutes * overhead_fraction / (datasets x methods)``; the remaining fraction covers the
feature networks and scoring. Each dataset's run lands in its own sub-directory (with its
``results.json``, ``table.md`` and ``samples.png``); the benchmark writes the combined
``table.md`` and ``results.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from . import images
from .base import ExperimentConfig, RunContext, setting

NAME = "images-benchmark"
DESCRIPTION = "Experiment VI on binarised MNIST, MNIST and Fashion-MNIST, every method, within a total budget (default 60 minutes)"


@dataclass
class Config(ExperimentConfig):
    """Default: three datasets x eight methods in about one hour on 2 CPU cores."""

    datasets: list[str] = field(default_factory=lambda: ["binarised-mnist", "mnist", "fashion-mnist"])
    methods: list[str] = field(default_factory=lambda: list(images.METHODS))
    budget_minutes: float = setting(60.0, gt=0)
    training_fraction: float = setting(0.8, gt=0, le=1)
    overrides: dict = field(default_factory=dict)  # other keys of the images experiment, for every dataset

    def validate(self):
        super().validate()
        if not self.datasets:
            raise ConfigError("datasets is empty")
        for dataset in self.datasets:
            self.images_config(dataset).validate()

    def seconds_per_method(self) -> float:
        return 60 * self.budget_minutes * self.training_fraction / (len(self.datasets) * len(self.methods))

    def images_config(self, dataset: str) -> images.Config:
        values = {**asdict(images.Config()), **self.overrides, "dataset": dataset, "methods": list(self.methods),
                  "seconds_per_method": self.seconds_per_method(), "seed": self.seed, "device": self.device}
        unknown = [k for k in values if k not in asdict(images.Config())]
        if unknown:
            raise ConfigError(f"unknown images keys in overrides: {unknown}; valid: {', '.join(asdict(images.Config()))}")
        return images.Config(**values)


PRESETS = {"smoke": {"datasets": ["binarised-mnist"], "methods": ["alws-projection", "vae"], "budget_minutes": 0.25,
                     "overrides": {**images.PRESETS["smoke"], "methods": ["alws-projection", "vae"]}}}


def run(config: Config, ctx) -> dict:
    per_dataset, tables = {}, []
    for dataset in config.datasets:
        sub = RunContext(ctx.out_dir / dataset, ctx.progress, ctx.resume, ctx.log)
        sub.out_dir.mkdir(parents=True, exist_ok=True)
        ctx.log.info("images-benchmark: %s, %.1f s per method", dataset, config.seconds_per_method())
        per_dataset[dataset] = sub.stage("results", lambda dataset=dataset, sub=sub: images.run(config.images_config(dataset), sub))
        ctx.figures.extend(f"{dataset}/{name}" for name in sub.figures)
        tables.append(images.markdown_table(per_dataset[dataset]))
    table = "\n\n".join(tables)
    (ctx.out_dir / "table.md").write_text(table + "\n")
    return {"seconds_per_method": config.seconds_per_method(), "datasets": per_dataset}


def report(results: dict) -> str:
    return "\n\n".join(images.markdown_table(r) for r in results["datasets"].values())
