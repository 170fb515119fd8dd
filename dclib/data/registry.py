"""Names of the embedded datasets and the resolver `load_embedded(name)`.

Every dataset is built from data inside installed packages or procedurally (nothing is downloaded),
deterministically, once per process (cached).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from datasets import Dataset

from dclib.data import digits, manyclass, shapes, shifts
from dclib.data.common import ImageSplit, split_to_dataset
from dclib.errors import InputError

PREFIX = "embedded:"
DIGIT_FAMILIES = {"digits": digits.digits_split, "mnist": digits.mnist_split, "mnist16": digits.mnist16_split}


def _split_builders() -> dict[str, Callable[[], ImageSplit]]:
    """Names (without prefix) of the labelled image datasets -> array builders."""
    builders: dict[str, Callable[[], ImageSplit]] = {}
    for family, build in DIGIT_FAMILIES.items():
        for split in digits.SPLITS:
            builders[f"{family}-{split}"] = lambda b=build, s=split: b(s)
        for shift in shifts.SHIFT_NAMES:
            builders[f"{family}-test-{shift}"] = lambda f=family, s=shift: shifts.shifted_test_split(f, s)
    builders["shapes-train"] = shapes.train_split
    builders["shapes-test"] = shapes.test_split
    builders["zeroshot-test"] = shapes.clutter_test_split
    builders["manyclass-train"] = manyclass.train_split
    builders["manyclass-dev"] = manyclass.dev_split
    builders["manyclass-test"] = manyclass.test_split
    for k in manyclass.SUBSET_SIZES:
        builders[f"manyclass-test-{k}"] = lambda k=k: manyclass.test_split(k)
    return builders


#: Prompt CSVs (prompt,classname,classidx) that embedded test sets carry, used when no prompts are given.
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


_SPLITS = _split_builders()
# Datasets that are not one labelled image per row.
_OTHER: dict[str, Callable[[], Dataset]] = {"shapes-wino": shapes.wino_dataset}


def list_embedded() -> list[str]:
    """All embedded dataset names, with the `embedded:` prefix."""
    return [PREFIX + name for name in (*_SPLITS, *_OTHER)]


def _canonical(name: str) -> str:
    bare = name[len(PREFIX):] if isinstance(name, str) and name.startswith(PREFIX) else name
    if bare not in _SPLITS and bare not in _OTHER:
        raise InputError(f"unknown embedded dataset {name!r}; valid names: {', '.join(list_embedded())}")
    return bare


def embedded_arrays(name: str) -> ImageSplit:
    """The arrays behind a labelled embedded dataset (uint8 images, labels, ids, class names, extra
    columns): the fast path for training, with no PNG encode/decode. Not available for shapes-wino."""
    bare = _canonical(name)
    if bare not in _SPLITS:
        raise InputError(f"embedded dataset {name!r} has no array form; use load_embedded({name!r})")
    return _SPLITS[bare]()


def embedded_prompt_file(name) -> Path | None:
    """The prompt CSV an embedded dataset carries (for text-to-image models); None for one that carries none and
    for anything that is not an ``embedded:`` name (a folder, a hub id, a Dataset)."""
    if not (isinstance(name, str) and name.startswith(PREFIX)):
        return None
    path = PROMPTS_DIR / f"{_canonical(name)}.csv"
    return path if path.exists() else None


@lru_cache(maxsize=None)
def _dataset(bare: str) -> Dataset:
    if bare in _OTHER:
        return _OTHER[bare]()
    return split_to_dataset(_SPLITS[bare]())


def load_embedded(name: str) -> Dataset:
    """A Hugging Face Dataset by name, with or without the `embedded:` prefix (see list_embedded()).

    Labelled datasets have columns image (PIL), label (ClassLabel), id, plus extra columns; shifted test
    sets add clean_id; shapes sets add the scene attributes; shapes-wino has image_0/image_1 pairs.
    """
    # A fresh view of the cached table: set_format/set_transform act in place, and must not leak into
    # other callers' copies.
    return _dataset(_canonical(name)).with_format(None)


def zero_shot_task(name: str):
    """(dataset, class_names, prompts) for name in shape, colour, position, or ``clutter`` (the benchmark).

    dataset: the 1,000 shapes test scenes with `label` set to the task's class (for ``clutter``, the 500 scenes
    of embedded:zeroshot-test); prompts: rows of (prompt_text, class_name, class_idx), the same as a
    `prompt,classname,classidx` CSV.
    """
    if name == shapes.CLUTTER_TASK:
        return load_embedded("zeroshot-test"), list(shapes.CLUTTER_CLASSES), shapes.clutter_prompts()
    split = shapes.zero_shot_split(name)
    # with_format(None): a fresh view, so in-place set_format calls do not reach the cached copy.
    return _zero_shot_dataset(name).with_format(None), list(split.class_names), shapes.zero_shot_prompts(name)


@lru_cache(maxsize=None)
def _zero_shot_dataset(name: str):
    return split_to_dataset(shapes.zero_shot_split(name))
