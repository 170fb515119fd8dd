"""The shapes scenes a text-to-image recipe trains on, and which captions are true of which scene.

``ScenePool`` renders scenes once and re-captions them at every draw with a random template that fits;
``caption_truth`` and ``hard_negatives`` tell the contrastive loss which captions describe an image.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from ..data import captions as cap
from ..data import render_scenes
from ..data.shapes import TRAIN_SEED, swapped_scene

# Seed of the validation scenes (shapes-train uses 1, shapes-test 2, shapes-wino 3).
VAL_SEED = 11
TEMPLATE_SLOT = re.compile(r"\{(\w+)\}")  # a caption template's slots, "{colour1}"


def scene_pools(n_train: int, n_val: int, hard_pictures: bool = False) -> tuple["ScenePool", "ScenePool"]:
    """The training scenes (seed TRAIN_SEED) and the validation scenes (seed VAL_SEED) of a shapes recipe. The
    shapes world's evaluation scenes are drawn as its training scenes are, so it has no hard pictures to ask for."""
    if hard_pictures:
        raise ValueError("hard_pictures: only the many-class world has evaluation nuisance, not 'shapes'")
    return ScenePool(n_train, TRAIN_SEED), ScenePool(n_val, VAL_SEED)


class ScenePool:
    """Rendered scenes plus random TRAIN (or HELD-OUT) captions drawn per use."""

    def __init__(self, n: int, seed: int, p_single: float = 0.4):
        self.images, self.scenes = render_scenes(n, seed, p_single=p_single, template_split="train")
        self._fits: dict[tuple[str, str], list] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def fitting(self, scene: dict, split: str = "train") -> list:
        key = (split, "one" if scene["n_objects"] == 1 else scene["relation"])
        if key not in self._fits:
            self._fits[key] = cap.templates(split, scene)
        return self._fits[key]

    def captions(self, idx, rng: np.random.Generator, split: str = "train") -> tuple[list[str], list]:
        """A random fitting template of `split` per scene: (captions, templates)."""
        texts, temps = [], []
        for i in np.asarray(idx).tolist():
            scene = self.scenes[i]
            options = self.fitting(scene, split)
            template = options[int(rng.integers(len(options)))]
            texts.append(cap.caption(scene, template))
            temps.append(template)
        return texts, temps

    def pixels(self, idx) -> torch.Tensor:
        return pixels_of(self.images, idx)


def pixels_of(images: np.ndarray, idx) -> torch.Tensor:
    """uint8 HWC -> float [n, 3, 32, 32] in [-1, 1] (dclib.images.to_tensor's mapping)."""
    x = torch.from_numpy(np.ascontiguousarray(images[np.asarray(idx)]))
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- caption truth


_ATTRS = ("shape1", "colour1", "size1", "pos1", "shape2", "colour2", "size2")
_SLOT_ATTR = {"shape1": "shape1", "colour1": "colour1", "size1": "size1", "where1": "pos1", "shape2": "shape2",
              "colour2": "colour2", "size2": "size2"}


def _scene_codes(scenes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Scene attributes as an int array [n, 7] (-1 for absent) and the scene kind: 0 one, 1 left_of, 2 above."""
    codes = np.array([[hash(s[a]) if s[a] is not None else -1 for a in _ATTRS] for s in scenes], np.int64)
    kind = np.array([0 if s["n_objects"] == 1 else (1 if s["relation"] == "left_of" else 2) for s in scenes])
    return codes, kind


def _template_mask(template) -> np.ndarray:
    slots = set(TEMPLATE_SLOT.findall(template.text))
    return np.array([any(_SLOT_ATTR[s] == a for s in slots) for a in _ATTRS])


_SWAP = np.array([4, 1 + 4, 2 + 4, 3, 0, 1, 2])  # object 1 <-> object 2 (pos stays: it is set by the relation)


def caption_truth(scenes: list[dict], caption_scenes: list[dict], caption_templates: list) -> np.ndarray:
    """truth[i, j]: caption j (template j filled from caption_scenes[j]) is a true description of scenes[i].

    True when template j fits scene i and every attribute the template mentions agrees; templates of kind
    "two" ("a red circle and a blue square") do not state the order, so either object order matches.
    """
    codes, kind = _scene_codes(scenes)
    ccodes, _ = _scene_codes(caption_scenes)
    masks = np.stack([_template_mask(t) for t in caption_templates])            # [m, 7]
    tkind = np.array([{"one": 0, "left_of": 1, "above": 2, "two": 3}[t.kind] for t in caption_templates])
    fits = np.where(tkind[None] == 3, kind[:, None] > 0, kind[:, None] == tkind[None])
    same = (codes[:, None, :] == ccodes[None, :, :]) | ~masks[None]
    truth = same.all(-1)
    swapped = (codes[:, _SWAP][:, None, :] == ccodes[None, :, :]) | ~masks[None]
    truth |= swapped.all(-1) & (tkind[None] == 3)
    return truth & fits


def swap_scene(scene: dict, how: str) -> dict:
    """The shapes-wino swaps: 'attribute' (colours exchanged), 'relation' (objects exchanged), 'both'."""
    return swapped_scene(scene, how)


def hard_negatives(scenes: list[dict], templates: list, rng: np.random.Generator | None = None,
                   per_scene: int | None = None) -> tuple[list[str], list[dict], list]:
    """Swapped captions of two-object scenes under the same template ("attribute": colours exchanged,
    "relation": objects exchanged, "both": shapes and sizes exchanged), kept only when they are false of the
    scene they were made from (exchanging the objects of "a red circle and a blue square" is not a negative).
    With ``per_scene``, at most that many (drawn with ``rng``) per scene."""
    cands = [(k, swap_scene(scene, how), template) for k, (scene, template) in enumerate(zip(scenes, templates))
             if scene["n_objects"] == 2 for how in ("attribute", "relation", "both")]
    if not cands:
        return [], [], []
    truth = caption_truth([scenes[k] for k, _, _ in cands], [o for _, o, _ in cands], [t for _, _, t in cands])
    valid: dict[int, list] = {}
    for c, (k, other, template) in enumerate(cands):
        if not truth[c, c]:
            valid.setdefault(k, []).append((other, template))
    texts, neg_scenes, neg_templates = [], [], []
    for k, options in valid.items():
        if per_scene is not None and len(options) > per_scene:
            options = [options[i] for i in sorted((rng or np.random.default_rng()).choice(len(options), per_scene,
                                                                                          replace=False))]
        for other, template in options:
            texts.append(cap.caption(other, template))
            neg_scenes.append(other)
            neg_templates.append(template)
    return texts, neg_scenes, neg_templates
