"""Grey-scale patches cropped from photographs (Experiment IV's data and the ``natural-patches``
dataset)."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["natural_patches"]


def natural_patches(patch: int, n_patches: int, seed: int, images=None, standardise: bool = True) -> torch.Tensor:
    """``[n_patches, patch * patch]`` grey-scale patches cropped at seeded random places from
    ``images`` (a list of ``[H, W]`` or ``[H, W, 3]`` arrays; default: scikit-learn's sample
    photographs). ``standardise``: remove each patch's mean and scale the whole set to unit
    variance (otherwise the raw pixel values are kept)."""
    if images is None:
        from sklearn.datasets import load_sample_images

        images = load_sample_images().images
    grey = [np.asarray(im, dtype=np.float64) for im in images]
    grey = [im.mean(-1) if im.ndim == 3 else im for im in grey]
    smallest = min(min(im.shape) for im in grey)
    if patch > smallest:
        raise ConfigError(f"patch size {patch} is larger than the smallest image side ({smallest} pixels)")
    rng = np.random.default_rng(seed)
    out = np.empty((n_patches, patch * patch))
    for i in range(n_patches):
        im = grey[rng.integers(len(grey))]
        r, c = rng.integers(im.shape[0] - patch + 1), rng.integers(im.shape[1] - patch + 1)
        out[i] = im[r : r + patch, c : c + patch].ravel()
    if standardise:
        out -= out.mean(1, keepdims=True)
        out /= out.std()
    return torch.from_numpy(out).float()
