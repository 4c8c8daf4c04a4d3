import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from alws.data import binarise, load_dataset, read_cifar10, read_idx, read_idx_split, read_image_directory, read_npz_images
from alws.errors import DataError


def write_idx(path, array, compress=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + body
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) * 7 % 251).reshape(2, 3, 4).astype(dtype)
    write_idx(tmp_path / "a.idx", array, compress)
    out = read_idx(tmp_path / "a.idx")
    assert out.shape == (2, 3, 4) and np.array_equal(out, array)


def test_idx_errors_name_the_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    array = np.zeros((2, 3), dtype=np.uint8)
    write_idx(tmp_path / "short", array)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(DataError, match="short.*promises shape"):
        read_idx(tmp_path / "short")


def test_idx_split_directory_reads_images_and_labels_and_says_what_it_looked_for(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5).astype(np.uint8))
    x, y = read_idx_split(tmp_path, "train")
    assert x.shape == (5, 1, 6, 6) and np.array_equal(x[:, 0], images) and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        read_idx_split(tmp_path, "test")
    dataset = load_dataset("mnist", path=tmp_path, split="train")
    assert dataset.images.shape == (5, 1, 6, 6) and float(dataset.images.max()) <= 1.0


def test_cifar_batches_are_read_in_channel_first_layout(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = []
    for i in (1, 2):
        data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump({b"data": data, b"labels": [i, 0, 1, 2]}, handle)
        batches.append(data)
    images, labels = read_cifar10(tmp_path, "train")
    assert images.shape == (8, 3, 32, 32)
    assert np.array_equal(images[0, 0].ravel(), batches[0][0, :1024])  # red plane first
    assert np.array_equal(images[5, 2].ravel(), batches[1][1, 2048:])
    assert labels.tolist() == [1, 0, 1, 2, 2, 0, 1, 2]
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10(tmp_path, "test")
    assert load_dataset("cifar10", path=tmp_path).images.shape == (8, 3, 32, 32)


def test_celeba_from_an_image_directory_and_from_npz(tmp_path):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)).save(folder / f"{i:03d}.png")
    train = load_dataset("celeba", path=folder, split="train", image_size=16)
    test = load_dataset("celeba", path=folder, split="test", image_size=16)
    assert train.images.shape == (9, 3, 16, 16) and test.images.shape == (1, 3, 16, 16)
    np.savez(tmp_path / "faces.npz", images=rng.integers(0, 256, (6, 20, 20, 3)).astype(np.uint8))
    images, labels = read_npz_images(tmp_path / "faces.npz")
    assert images.shape == (6, 3, 20, 20) and labels is None
    assert load_dataset("celeba", path=tmp_path / "faces.npz", image_size=8).images.shape == (5, 3, 8, 8)


def test_images_of_mixed_sizes_are_refused_naming_two_files(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="mixed sizes.*a.png.*b.png"):
        read_image_directory(tmp_path)
    assert read_image_directory(tmp_path, size=8)[0].shape == (2, 3, 8, 8)


def test_binarisation_is_deterministic_under_a_seed_and_follows_the_pixel_probabilities():
    images = torch.full((200, 1, 10, 10), 0.3)
    a, b, c = binarise(images, 5), binarise(images, 5), binarise(images, 6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(float(a.mean()) - 0.3) < 0.01


def test_registry_errors_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'svhn'; valid: binarised-mnist"):
        load_dataset("svhn")
    with pytest.raises(DataError, match="CIFAR-10 is not shipped"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="CelebA is not shipped"):
        load_dataset("celeba")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", path=tmp_path / "nowhere")
    with pytest.raises(DataError, match="no IDX images"):
        load_dataset("fashion-mnist", path=tmp_path)


def test_packaged_sources():
    mnist = load_dataset("mnist", split="test")
    assert mnist.images.shape == (1000, 1, 28, 28) and len(mnist.labels.unique()) == 10
    binary = load_dataset("binarised-mnist", split="train", limit=50)
    assert binary.binary and set(binary.images.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binary.images, load_dataset("binarised-mnist", split="train", limit=50).images)
    patches = load_dataset("natural-patches", split="test")
    assert patches.images.shape == (2000, 1, 16, 16) and 0 <= float(patches.images.min()) and float(patches.images.max()) <= 1


def test_debian_fashion_mnist_when_installed():
    from alws.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    test = load_dataset("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and torch.bincount(test.labels).tolist() == [1000] * 10


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "owned"),))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing to load builtins.exec"):
        read_cifar10(tmp_path, "test")
    assert not (tmp_path / "owned").exists()


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((2, 4, 4))}, "no array named 'images' \\(found: pictures\\)"),
    ({"images": np.zeros((3, 4, 4)), "labels": np.arange(2)}, "one integer per image.*for 3 images"),
    ({"images": np.full((2, 4, 4), np.nan)}, "32 NaN or infinite"),
    ({"images": np.array([[["a"] * 4] * 4] * 2)}, "must be numbers"),
])
def test_npz_images_are_checked(tmp_path, arrays, message):
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_npz_images(tmp_path / "x.npz")


def test_object_and_truncated_npz_files_are_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", images=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="cannot read the arrays"):
        read_npz_images(tmp_path / "objects.npz")
    np.savez(tmp_path / "full.npz", images=np.zeros((50, 8, 8)))
    raw = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cannot read"):
        read_npz_images(tmp_path / "cut.npz")
