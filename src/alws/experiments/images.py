"""Experiment VI: image generation, ALWS against six baselines on equal wall-clock budgets.

``alws run images --set dataset=NAME`` trains one :class:`alws.models.ImageModel` (``z ~ N(0,
I_d)``, an MLP or DCGAN-style generator; Bernoulli likelihood for binarised data, Gaussian with a
learned noise otherwise) per method, each for ``seconds_per_method`` of wall time:

- ``alws-projection``: ALWS with the fixed kernel: random Fourier features of a fixed random
  projection of ``x`` to ``projection_dim`` numbers;
- ``alws-learned``: ALWS with a learned kernel (:mod:`alws.kernel_learning`): the feature map
  ``features`` (default ``"auto"``: a linear projection to ``feature_dim`` numbers) trained on the
  model's own sleep samples, never the data, to minimise held-out regression error;
- ``vae``, ``sf-vae``, ``sivi``, ``rws``, ``wgan-gp``, ``vae-flow``: :mod:`alws.baselines` with the
  same generator (conv encoders/critic built from the data shape).

Samples are scored by FID and KID (:mod:`alws.sample_quality`) in the feature space of a small
network trained on the dataset's training split (cached; see :func:`feature_network`), against
the test split; the row ``data (train)`` scores training images, the floor for that test-set
size. Outputs: ``results.json``, ``table.md`` and ``samples.png`` (real | each method, 10 x 2).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .base import KernelConfig

NAME = "images"
DESCRIPTION = "Experiment VI: image generation (MNIST family, natural patches, CIFAR-10/CelebA from files); FID/KID vs six baselines"

#: Every method, in the order of the table and the grid.
METHODS = ("alws-projection", "alws-learned", "vae", "sf-vae", "sivi", "rws", "wgan-gp", "vae-flow")


@dataclass
class Config(KernelConfig):
    """Default: binarised MNIST, every method for 60 s of wall time (about 10 minutes in all)."""

    dataset: str = "binarised-mnist"
    data_path: str | None = None
    image_size: int = 32
    n_train: int | None = None
    n_test: int = 1000
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seconds_per_method: float = 60.0
    max_steps: int = 100000
    latent_dim: int = 16
    generator: str = "mlp"
    hidden: int = 256
    batch_size: int = 100
    lr: float = 1e-3  # the baselines' learning rate
    alws_lr: float = 3e-3
    n_sleep: int = 1000  # 5000 with random features is affordable, but gives ~4x fewer steps per budget
    regression: str = "rff"
    n_features: int = 1000
    exponential_family: str = "auto"
    projection_dim: int = 32
    kernel_every: int = 1  # the schedule of the measurements in docs/results.md
    particles: int = 8
    n_critic: int = 5
    n_eval: int = 1000
    feature_epochs: int = 2
    feature_train_max: int = 20000
    cache_dir: str | None = None

    def validate(self):
        super().validate()
        from ..data import DATASETS, check_available
        from ..errors import DataError

        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        try:
            check_available(self.dataset, self.data_path)
        except DataError as error:
            raise ConfigError(str(error)) from None
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method(s) {unknown or '(none given)'}; valid: {', '.join(METHODS)}")
        if not self.seconds_per_method > 0:
            raise ConfigError(f"seconds_per_method (the budget) must be > 0, got {self.seconds_per_method}")
        for key in ("max_steps", "latent_dim", "hidden", "batch_size", "n_features", "projection_dim", "particles",
                    "n_critic", "feature_epochs", "feature_train_max", "image_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("n_sleep", "n_eval", "n_test"):
            if getattr(self, key) < 2:
                raise ConfigError(f"{key} must be >= 2, got {getattr(self, key)}")
        if self.n_train is not None and self.n_train < 2:
            raise ConfigError(f"n_train must be >= 2 (or null for all), got {self.n_train}")
        for key in ("lr", "alws_lr"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        if self.generator not in ("mlp", "dcgan"):
            raise ConfigError(f"generator must be 'mlp' or 'dcgan', got {self.generator!r}")


PRESETS = {
    "smoke": {"methods": ["alws-projection", "alws-learned", "vae"], "seconds_per_method": 5.0, "n_train": 1000, "n_test": 200,
              "n_sleep": 1000, "n_features": 300, "n_eval": 200, "feature_epochs": 1, "feature_train_max": 1000, "hidden": 64},
}


def _train_method(method: str, config: Config, train: torch.Tensor, likelihood: str, ctx) -> tuple:
    from .. import baselines
    from ..features import RandomProjection
    from ..learner import fit
    from ..models import ImageModel

    torch.manual_seed(config.seed)
    shape = tuple(train.shape[1:])
    model = ImageModel(shape, config.latent_dim, likelihood, config.generator, config.hidden).to(config.device)
    checkpoint = ctx.checkpoint(method)
    common = dict(batch_size=config.batch_size, lr=config.lr, seed=config.seed, checkpoint=checkpoint, resume=checkpoint.exists(),
                  checkpoint_every=200, progress=ctx.show_progress, steps=config.max_steps, max_seconds=config.seconds_per_method)
    start = time.perf_counter()
    if method.startswith("alws"):
        if method == "alws-projection":
            kernel = config.kernel_options(RandomProjection(shape, config.projection_dim, seed=config.seed).to(config.device))
        else:
            kernel = config.kernel_options()
        history = fit(model, train, n_sleep=config.n_sleep, regression=config.regression, n_features=config.n_features,
                      exponential_family=config.exponential_family_option(), **kernel, **{**common, "lr": config.alws_lr})
    else:
        options = {"particles": config.particles} if method in ("iwae", "rws", "sivi") else {}
        if method == "wgan-gp":
            options = {"n_critic": config.n_critic}
        history = baselines.fit(method, model, train, **options, **common)
    return model, time.perf_counter() - start, len(history)


def _generate(model, n: int, binary: bool, seed: int) -> torch.Tensor:
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    with torch.no_grad():
        if binary:
            _, x = model.sample(n)
        else:
            x = model.rsample(n).clamp(0, 1)
    torch.set_rng_state(state)
    return x.cpu()


def run(config: Config, ctx) -> dict:
    from ..data import load_dataset
    from ..sample_quality import feature_network, fid, kid

    train_set = load_dataset(config.dataset, config.data_path, "train", config.n_train, config.seed, config.image_size)
    test_set = load_dataset(config.dataset, config.data_path, "test", config.n_test, config.seed, config.image_size)
    if train_set.shape != test_set.shape:
        raise ConfigError(f"train images are {train_set.shape}, test images {test_set.shape}: the splits must match")
    likelihood = "bernoulli" if train_set.binary else "gaussian"
    ctx.log.info("data: %s train / %s test images %s from %s", len(train_set), len(test_set), train_set.shape, train_set.source)
    net, feature_info = feature_network(train_set.images[: config.feature_train_max],
                                        None if train_set.labels is None else train_set.labels[: config.feature_train_max],
                                        key=f"{config.dataset}-{config.image_size}", epochs=config.feature_epochs, seed=config.seed,
                                        cache_dir=config.cache_dir, progress=ctx.show_progress)
    test_features = net.features(test_set.images)
    # one global scale for every feature set (the test features' root mean square), so that
    # KID's cubic kernel (a.b / F + 1)^3 sees entries of order one whatever the network
    scale = test_features.pow(2).mean().sqrt().clamp_min(1e-12)
    test_features = test_features / scale
    n_eval = min(config.n_eval, len(train_set))
    reference = train_set.images[torch.randperm(len(train_set), generator=torch.Generator().manual_seed(config.seed))[:n_eval]]
    ref_features = net.features(reference) / scale
    kid_mean, kid_std = kid(ref_features, test_features, seed=config.seed)
    results = {
        "dataset": {"name": config.dataset, "source": train_set.source, "n_train": len(train_set), "n_test": len(test_set),
                    "shape": list(train_set.shape), "likelihood": likelihood},
        "feature_network": feature_info,
        "data_reference": {"fid": fid(ref_features, test_features), "kid": kid_mean, "kid_std": kid_std},
        "methods": {},
    }
    train = train_set.images.to(config.device)
    grids = {"real": reference[:20]}
    for method in config.methods:
        def compute(method=method):
            model, seconds, steps = _train_method(method, config, train, likelihood, ctx)
            samples = _generate(model, n_eval, train_set.binary, config.seed)
            features = net.features(samples) / scale
            k_mean, k_std = kid(features, test_features, seed=config.seed)
            return {"fid": fid(features, test_features), "kid": k_mean, "kid_std": k_std, "train_seconds": seconds, "steps": steps,
                    "examples": samples[:20].tolist()}

        row = dict(ctx.method(method, compute))
        results["methods"][method] = row
        if row["status"] != "finished":
            grids[method] = None
            continue
        grids[method] = torch.tensor(row.pop("examples"))
        ctx.log.info("%s: FID %.3f KID %.4f (%d steps, %.0f s)", method, row["fid"], row["kid"], row["steps"], row["train_seconds"])
    table = markdown_table(results)
    (ctx.out_dir / "table.md").write_text(table + "\n")
    figure(grids, config.dataset, ctx)
    print(table)
    return results


def markdown_table(results: dict) -> str:
    """``| method | FID | KID (sd) | wall time (s) | steps |`` for one dataset; a method that
    diverged gets a row saying at which step."""
    d = results["dataset"]
    lines = [f"**{d['name']}** ({d['n_train']} train / {d['n_test']} test, {d['likelihood']} likelihood; features: {results['feature_network']['task']})",
             "", "| method | FID | KID (sd over subsets) | wall time (s) | steps |", "|---|---|---|---|---|"]
    ref = results["data_reference"]
    lines.append(f"| data (train images) | {ref['fid']:.3g} | {ref['kid']:.3g} ({ref['kid_std']:.2g}) | - | - |")
    for method, r in results["methods"].items():
        if r.get("status", "finished") != "finished":
            lines.append(f"| {method} | {r['status']} at step {r.get('step')} | - | {r.get('train_seconds', 0):.0f} | - |")
            continue
        lines.append(f"| {method} | {r['fid']:.3g} | {r['kid']:.3g} ({r['kid_std']:.2g}) | {r['train_seconds']:.0f} | {r['steps']} |")
    return "\n".join(lines)


def report(results: dict) -> str:
    return markdown_table(results)


def figure(grids: dict, dataset: str, ctx) -> None:
    """Columns: real | each method; each a 10 x 2 block of samples."""
    import matplotlib.pyplot as plt

    names = list(grids)
    fig, axes = plt.subplots(1, len(names), figsize=(1.3 * len(names), 6))
    for ax, name in zip(axes if len(names) > 1 else [axes], names):
        if grids[name] is None:  # the method diverged: say so in its column
            ax.text(0.5, 0.5, "diverged", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_title(name, fontsize=7)
            ax.axis("off")
            continue
        images = grids[name][:20]
        c, h, w = images.shape[1:]
        block = torch.ones(10 * h + 9, 2 * w + 1, c)
        for i, image in enumerate(images):
            r, col = i % 10, i // 10
            block[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = image.permute(1, 2, 0).clamp(0, 1)
        ax.imshow(block.squeeze(-1).numpy() if c == 1 else block.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(dataset)
    fig.tight_layout()
    ctx.save_figure(fig, "samples")
