"""Sample quality: FID and KID in the feature space of a small network trained by us.

- :func:`frechet_distance` / :func:`fid`: ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``
  between Gaussians fitted to two feature sets ``[n, F]`` (float64; the matrix square roots by
  symmetric eigendecomposition, so the result is real and non-negative up to rounding).
- :func:`kid`: the unbiased MMD^2 with the cubic polynomial kernel ``(a.b / F + 1)^3``, averaged
  over random subsets (mean and standard deviation), as in Binkowski et al. (2018).
- :class:`FeatureNet`: a small convolutional classifier; its penultimate layer (``F`` = 64
  units) is the feature space. :func:`feature_network` trains it with a fixed seed on a
  dataset's training split (its labels, or, without labels, the rotation of the image by 0/90/
  180/270 degrees: a self-supervised task) and caches it on disk, keyed by dataset and settings.

Inception features are not used: they would need downloaded weights. Scores from different
feature networks are not comparable with each other or with published Inception FIDs.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .errors import DataError
from .seeding import seeded
from .training import atomic_save

__all__ = ["frechet_distance", "fid", "kid", "FeatureNet", "feature_network", "default_cache_dir"]


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Frechet (2-Wasserstein) distance squared between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``."""
    mu_a, mu_b, cov_a, cov_b = (t.double() for t in (mu_a, mu_b, cov_a, cov_b))
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between feature sets ``[n, F]`` and ``[m, F]`` (each needs at least 2 rows)."""
    if features_a.shape[0] < 2 or features_b.shape[0] < 2:
        raise ValueError("FID needs at least 2 feature vectors in each set")
    a, b = features_a.double(), features_b.double()
    return frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


def kid(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 50, subset_size: int = 500, seed: int = 0) -> tuple[float, float]:
    """``(mean, std)`` over ``subsets`` random subsets of the unbiased MMD^2 with kernel
    ``(a.b / F + 1)^3``; subsets have ``min(subset_size, n, m)`` rows from each set."""
    a, b = features_a.double(), features_b.double()
    size = min(subset_size, a.shape[0], b.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    dim = a.shape[1]
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:size]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:size]]
        kxx, kyy, kxy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        off = size * (size - 1)
        values.append(float((kxx.sum() - kxx.trace()) / off + (kyy.sum() - kyy.trace()) / off - 2 * kxy.mean()))
    values = torch.tensor(values)
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


class FeatureNet(nn.Module):
    """Two conv blocks and a 64-unit layer on images ``[n, C, H, W]`` (``H, W >= 8``); ``forward``
    gives class logits ``[n, classes]``, :meth:`features` the 64 features ``[n, 64]``."""

    def __init__(self, channels: int, classes: int, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Features ``[n, 64]`` (evaluated in batches, without gradients)."""
        with torch.no_grad():
            return torch.cat([self.body(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def default_cache_dir() -> Path:
    """``$ALWS_CACHE_DIR``, else ``$XDG_CACHE_HOME/alws``, else ``~/.cache/alws``."""
    if os.environ.get("ALWS_CACHE_DIR"):
        return Path(os.environ["ALWS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "alws"


def _rotation_task(images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    turns = torch.randint(0, 4, (images.shape[0],), generator=generator)
    rotated = torch.stack([torch.rot90(im, int(k), (1, 2)) for im, k in zip(images, turns)])
    return rotated, turns


def feature_network(images: torch.Tensor, labels: torch.Tensor | None, key: str, epochs: int = 2, seed: int = 0,
                    cache_dir=None, progress: bool = False) -> tuple[FeatureNet, dict]:
    """The feature network for a dataset: loaded from ``cache_dir`` if trained before with the
    same ``key``, data size and settings, else trained (Adam, batch 128, ``epochs`` passes, fixed
    ``seed``) on ``images [n, C, H, W]`` with ``labels`` (or the rotation task when ``None``) and
    saved atomically. Returns ``(net in eval mode, info)`` with the training accuracy and path."""
    if images.shape[-1] < 8 or images.shape[-2] < 8:
        raise DataError(f"the feature network needs images of at least 8x8 pixels, got {tuple(images.shape[-2:])}")
    settings = {"key": key, "shape": list(images.shape), "labels": labels is not None, "epochs": epochs, "seed": seed,
                "checksum": float(images[:: max(1, images.shape[0] // 100)].double().sum())}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / "features" / f"{key}-{digest}.pt"
    classes = 4 if labels is None else int(labels.max()) + 1
    net = FeatureNet(images.shape[1], classes)
    if path.exists():
        try:  # tensors and plain containers only: a planted file cannot run code; a damaged one is retrained
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            saved = {}
        if isinstance(saved, dict) and saved.get("settings") == settings:
            net.load_state_dict(saved["state"])
            return net.eval(), {**saved["info"], "path": str(path), "cached": True}
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):
        info = _train_feature_net(net, images, labels, epochs, generator, key, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"settings": settings, "state": net.state_dict(), "info": info}, path)
    return net.eval(), {**info, "path": str(path), "cached": False}


def _train_feature_net(net, images, labels, epochs: int, generator: torch.Generator, key: str, progress: bool) -> dict:
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = images.shape[0]
    correct = total = 0
    iterator = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"feature net ({key})")
    for epoch in iterator:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, 128):
            index = order[start : start + 128]
            x = images[index]
            y = labels[index] if labels is not None else None
            if labels is None:
                x, y = _rotation_task(x, generator)
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch == epochs - 1:
                correct += int((logits.argmax(1) == y).sum())
                total += len(y)
    return {"task": "rotation" if labels is None else "labels", "train_accuracy_last_epoch": correct / max(total, 1), "epochs": epochs}
