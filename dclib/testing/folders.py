"""A user's data as a GPU user brings it, at tiny scale: an image folder with one subfolder per class and a
prompt CSV in the official format. The notebook tests run every paper page on these and the tiny pipelines."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from dclib.data.shapes import write_prompt_csv

TINY_CLASSES = ("cat", "dog", "car")


def save_image_folder(root: str | Path, classes: Sequence[str] = TINY_CLASSES, per_class: int = 2, size: int = 40,
                      seed: int = 0) -> str:
    """``root/CLASS/CLASS-k.png``: ``per_class`` random RGB images per class (the pixels mean nothing)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}-{k}.png")
    return str(root)


def save_prompt_csv(path: str | Path, classes: Sequence[str] = TINY_CLASSES,
                    templates: Sequence[str] = ("a photo of a {}.", "a picture of a {}.")) -> str:
    """Several prompts per class (``prompt,classname,classidx``), classes listed in reverse order of the folder's
    sorted subfolders, so a reader must match labels by name."""
    ordered = list(reversed(sorted(classes)))
    write_prompt_csv([(t.format(c), c, i) for i, c in enumerate(ordered) for t in templates], path)
    return str(path)
