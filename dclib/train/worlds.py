"""The worlds a text-to-image recipe trains on (``ShapesRecipe.world``). A world gives the training and validation
pools (pictures whose captions are drawn per use, in TRAIN or HELD-OUT wording), the caption vocabulary, the
longest caption in tokens and the model card's sentence on the data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data import manyclass
from .scenes import pixels_of, scene_pools
from .tokenizer import caption_words, longest_caption_tokens


class ClassPool:
    """The pictures of a labelled many-class split, re-captioned at every draw with a random template of the asked
    wording (``manyclass.TRAIN_TEMPLATES`` or ``HELDOUT_TEMPLATES``), so each picture is seen in all its wordings."""

    TEMPLATES = {"train": manyclass.TRAIN_TEMPLATES, "heldout": manyclass.HELDOUT_TEMPLATES}

    def __init__(self, split):
        self.images, self.labels, self.class_names = split.images, split.labels, split.class_names

    def __len__(self) -> int:
        return len(self.images)

    def captions(self, idx, rng: np.random.Generator, split: str = "train") -> tuple[list[str], list[str]]:
        options = self.TEMPLATES[split]
        idx = np.asarray(idx).tolist()
        templates = [options[int(k)] for k in rng.integers(len(options), size=len(idx))]
        return [manyclass.caption(self.class_names[self.labels[i]], t) for i, t in zip(idx, templates)], templates

    def pixels(self, idx) -> torch.Tensor:
        return pixels_of(self.images, idx)


def manyclass_pools(n_train: int, n_val: int, hard_pictures: bool = False) -> tuple[ClassPool, ClassPool]:
    """``n_train`` training pictures (embedded:manyclass-train, as many per class) and ``n_val`` validation ones;
    ``hard_pictures``: both made harder as the evaluation pictures are (``manyclass.EVALUATION_NUISANCE``, drawn
    from each picture's own stream: the same ranges, never the test or dev pictures)."""
    k = len(manyclass.CLASSES)
    if n_train % k or n_val % k:
        raise ValueError(f"the many-class world has {k} classes: n_scenes and n_val must be multiples of {k}, "
                         f"got {n_train} and {n_val}")
    nuisance = manyclass.EVALUATION_NUISANCE if hard_pictures else None
    return (ClassPool(manyclass.train_split(n_train // k, nuisance=nuisance)),
            ClassPool(manyclass.val_split(n_val // k, nuisance=nuisance)))


def manyclass_longest_tokens(tokenizer) -> int:
    return max(len(tokenizer(manyclass.caption(name, template)).input_ids)
               for template in manyclass.TRAIN_TEMPLATES + manyclass.HELDOUT_TEMPLATES for name in manyclass.CLASSES)


@dataclass(frozen=True)
class World:
    pools: Callable[..., tuple]           # (n_train, n_val, hard_pictures=False) -> (training pool, validation pool)
    words: Callable[[], list[str]]        # every word a TRAIN or HELD-OUT caption can hold
    longest_tokens: Callable[..., int]    # tokenizer -> the longest caption's token count
    data: str                             # the card's sentence on the training data ({n_scenes} filled in)


WORLDS = {
    "shapes": World(scene_pools, caption_words, longest_caption_tokens,
                    "the {n_scenes} `embedded:shapes-train` scenes (32x32 RGB), each re-captioned at every draw with "
                    "a random\n  TRAIN template that fits it"),
    "manyclass": World(manyclass_pools, manyclass.caption_words, manyclass_longest_tokens,
                       "the {n_scenes} `embedded:manyclass-train` pictures (32x32 RGB, one object of 256 classes "
                       "colour x pattern x shape,\n  `dclib.data.manyclass`), each re-captioned at every draw with a "
                       "random TRAIN template"),
}


def world_of(recipe) -> World:
    if recipe.world not in WORLDS:
        raise ValueError(f"unknown world {recipe.world!r}; valid: {', '.join(WORLDS)}")
    return WORLDS[recipe.world]
