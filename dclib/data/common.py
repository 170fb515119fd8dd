"""Shared helpers for the embedded datasets: stable seeds and conversion to Hugging Face Datasets."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from strings/ints, identical across processes.

    Python's hash() is salted per process (PYTHONHASHSEED), so it cannot be used for per-image seeds.
    """
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class ImageSplit:
    """A labelled image split as plain arrays; the Dataset is built from this (and tests use it directly).

    images: uint8, [n, h, w] (grayscale) or [n, h, w, 3] (RGB).
    extra: further per-row columns (lists or 1-d arrays of length n), kept in insertion order.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        if self.images.dtype != np.uint8:
            raise TypeError(f"images must be uint8, got {self.images.dtype}")
        if len(self.labels) != n or len(self.ids) != n:
            raise ValueError("images, labels and ids must have the same length")
        for key, column in self.extra.items():
            if len(column) != n:
                raise ValueError(f"extra column {key!r} has {len(column)} rows, expected {n}")
        # Splits are cached and shared; read-only arrays make accidental in-place edits fail loudly.
        self.images.setflags(write=False)
        if isinstance(self.labels, np.ndarray):
            self.labels.setflags(write=False)

    def __len__(self) -> int:
        return len(self.images)


def to_pil(array: np.ndarray) -> PILImage.Image:
    """uint8 [h, w] -> mode "L", [h, w, 3] -> mode "RGB"."""
    # fromarray infers the mode from shape and dtype (its `mode` argument is deprecated in Pillow).
    return PILImage.fromarray(np.ascontiguousarray(array))


def _value_feature(column) -> Value:
    sample = next((v for v in column if v is not None), None)
    if isinstance(sample, (bool, np.bool_)):
        return Value("bool")
    if isinstance(sample, (int, np.integer)):
        return Value("int64")
    if isinstance(sample, (float, np.floating)):
        return Value("float64")
    return Value("string")


def _plain(column) -> list:
    # Arrow wants Python scalars; numpy scalars of mixed widths would otherwise need casting.
    return [v.item() if isinstance(v, np.generic) else v for v in column]


def split_to_dataset(split: ImageSplit) -> Dataset:
    """Columns: image (datasets.Image), label (ClassLabel), id (string), then the extra columns."""
    columns = {
        "image": [to_pil(a) for a in split.images],
        "label": [int(v) for v in split.labels],
        "id": list(split.ids),
    }
    features = {
        "image": Image(),
        "label": ClassLabel(names=list(split.class_names)),
        "id": Value("string"),
    }
    for key, column in split.extra.items():
        columns[key] = _plain(column)
        features[key] = _value_feature(columns[key])
    return Dataset.from_dict(columns, features=Features(features))
