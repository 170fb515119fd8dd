"""The many-class world: 256 classes "{colour} {pattern} {shape}" (8 x 4 x 8), one object per 32x32 picture.

What it is for: measuring how the cost of Diffusion Classifier grows with the number of classes, on a class set
shaped like ImageNet's. The classes have a natural hierarchy (shape families: round, angular, pointed; colour
families: warm, cool) and near neighbours a small model confuses (a pentagon and a hexagon 16 pixels across,
orange and red, teal and green, striped and dotted at 5-pixel periods).

Class order is a seeded permutation (``CLASSES``), and the nested sub-sets are its prefixes: the 25, 50, 100 and
200 classes of ``manyclass-test-25`` ... ``-200`` are ``CLASSES[:k]`` with the same class indices as in the full
set, and their images are the full test set's images of those classes (same ids, same pixels, same noise keys),
so a 256-class error matrix holds each sub-set's errors in its first k columns: score once, slice. Image k of a
split shows class ``k % 256``: every prefix of 256 images holds each class once. Rendering randomness (position,
size, colour jitter, pattern phase and angle, background) comes from (split seed, k) alone, so any image is
reproducible by itself.

Evaluation pictures (the test and dev splits) are harder than training pictures (``EVALUATION_NUISANCE``): per
picture the object is shrunk, faded towards the background and noised, by draws from its ranges. A text-to-image
model trained to its plateau on the clean pictures tells the classes apart on clean pictures (100 of 100 at 200
classes, 20 timesteps, when this was written), which leaves a pruning schedule nothing to lose; on small, faint
objects the near neighbours (orange, red and pink as they fade, pentagon and star, stripes too fine to see) are
confused as a natural test set's are. The ranges were set on the dev split, before any pruning was measured, for
top-1 inside the 40-85% band the many-class benchmark asks for at 200 classes. The nuisance draws from a stream of
its own, so each evaluation picture is its clean drawing made harder.

Wording: training captions use the TRAIN templates; the prompts the test sets carry use the held-out template
``"a picture of a {colour} {pattern} {shape}."`` ("picture" is in no training caption).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from dclib.data.captions import fill
from dclib.data.common import ImageSplit
from dclib.data.shapes_render import SIZE, SUPERSAMPLE, supersampled_mask

SHAPE_FAMILIES = {"round": ("circle", "hexagon", "pentagon"), "angular": ("square", "diamond"),
                  "pointed": ("triangle", "star", "cross")}
SHAPES = tuple(s for family in SHAPE_FAMILIES.values() for s in family)
COLOUR_FAMILIES = {"warm": ("red", "orange", "yellow", "pink"), "cool": ("green", "teal", "blue", "purple")}
COLOURS = {"red": (215, 35, 35), "orange": (240, 120, 20), "yellow": (225, 190, 20), "pink": (230, 85, 170),
           "green": (35, 155, 50), "teal": (20, 150, 150), "blue": (35, 70, 215), "purple": (135, 45, 175)}
COLOUR_NAMES = tuple(c for family in COLOUR_FAMILIES.values() for c in family)
PATTERNS = ("solid", "striped", "dotted", "hollow")

ORDER_SEED, TRAIN_SEED, DEV_SEED, TEST_SEED, VAL_SEED = 30, 31, 32, 33, 34
TRAIN_PER_CLASS, DEV_PER_CLASS, TEST_PER_CLASS = 200, 2, 10
SUBSET_SIZES = (25, 50, 100, 200)

CANONICAL = tuple(f"{c} {p} {s}" for s in SHAPES for c in COLOUR_NAMES for p in PATTERNS)
#: The classes in the seeded order whose prefixes are the nested sub-sets.
CLASSES = tuple(CANONICAL[i] for i in np.random.default_rng(ORDER_SEED).permutation(len(CANONICAL)))

PERIOD = 5.0       # stripe period and dot spacing, pixels: 2.5 latent pixels of a 16x16 latent, above its Nyquist
DOT_RADIUS = 1.3
OUTLINE = 2.4      # width of a hollow object's outline, pixels, measured inward from its edge (every shape alike)
PAPER = 248.0      # the light paint of stripes and dots

TRAIN_TEMPLATES = ("a {colour} {pattern} {shape}", "a {pattern} {colour} {shape}", "a {pattern} {shape} in {colour}",
                   "an image of a {colour} {pattern} {shape}", "a {shape} that is {colour} and {pattern}",
                   "a {colour} {shape}", "a {pattern} {shape}", "a {colour} {pattern} shape")
HELDOUT_TEMPLATES = ("a picture of a {colour} {pattern} {shape}.", "the picture shows a {pattern} {colour} {shape}")
PROMPT_TEMPLATE = HELDOUT_TEMPLATES[0]


def class_attributes(name: str) -> dict:
    colour, pattern, shape = name.split()
    return {"colour": colour, "pattern": pattern, "shape": shape}


#: Each attribute's values, in the order a class name spells them ("{colour} {pattern} {shape}").
ATTRIBUTE_VALUES = {"colour": COLOUR_NAMES, "pattern": PATTERNS, "shape": SHAPES}
ATTRIBUTES = tuple(ATTRIBUTE_VALUES)


def attribute_indices(name: str) -> tuple[int, ...]:
    """Where each attribute of class ``name`` sits among that attribute's values (``ATTRIBUTES`` order)."""
    a = class_attributes(name)
    return tuple(ATTRIBUTE_VALUES[k].index(a[k]) for k in ATTRIBUTES)


def named_attributes(template: str) -> tuple[str, ...]:
    """The attributes a caption template names ("a {colour} {shape}": colour and shape): a caption is true of every
    picture that has them, whatever its other attributes."""
    return tuple(a for a in ATTRIBUTES if "{" + a + "}" in template)


def neighbour_classes(name: str) -> list[tuple[str, str]]:
    """(class, the attribute it changes) for every class one attribute away from ``name``: its nearest confusions."""
    a = class_attributes(name)
    return [(" ".join(b[k] for k in ATTRIBUTES), changed) for changed in ATTRIBUTES for v in ATTRIBUTE_VALUES[changed]
            if v != a[changed] for b in [{**a, changed: v}]]


def _mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Coverage in {0, 1} at SUPERSAMPLE x the picture's resolution (coordinates in picture pixels)."""
    return np.asarray(supersampled_mask(shape, cx, cy, r), np.float32) / 255.0


def _box(a: np.ndarray) -> np.ndarray:
    """Supersampled -> picture resolution by area averaging (exact antialiasing)."""
    return a.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE).mean((1, 3))


_U, _V = (np.mgrid[0:SIZE * SUPERSAMPLE, 0:SIZE * SUPERSAMPLE][::-1].astype(np.float32) + 0.5) / SUPERSAMPLE


@dataclass(frozen=True)
class Nuisance:
    """What makes a picture harder than a training picture, each drawn per picture uniformly from its range: the
    object shrunk by a factor in ``scale``, its colours pulled towards the background to a fraction ``contrast`` of
    their distance, and pixel noise of a standard deviation in ``noise`` (0-255 scale)."""

    scale: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    noise: tuple[float, float] = (0.0, 0.0)


#: The evaluation pictures (test and dev splits): smaller, fainter, noisier objects than the model trained on, so
#: that a model trained to its plateau still confuses near neighbours (see the module docstring).
EVALUATION_NUISANCE = Nuisance(scale=(0.55, 1.0), contrast=(0.5, 1.0), noise=(0.0, 6.0))


def render(name: str, seed, nuisance: Nuisance | None = None) -> np.ndarray:
    """uint8 [32, 32, 3]: class ``name`` drawn with the randomness of ``np.random.default_rng(seed)``; with
    ``nuisance``, made harder by draws from a stream of its own (``[*seed, 1]``), so the clean picture's randomness is
    unchanged."""
    attrs = class_attributes(name)
    rng = np.random.default_rng(seed)
    scale, contrast, noise = 1.0, 1.0, 0.0
    if nuisance is not None:
        extra = np.random.default_rng([*np.atleast_1d(seed), 1])
        scale, contrast, noise = (extra.uniform(*nuisance.scale), extra.uniform(*nuisance.contrast),
                                  extra.uniform(*nuisance.noise))
    r = rng.uniform(7.5, 9.0) * scale
    cx, cy = 16.0 + rng.uniform(-2.5, 2.5, size=2)
    colour = np.asarray(COLOURS[attrs["colour"]], np.float32) + rng.uniform(-12, 12, size=3)
    angle = rng.choice([math.pi / 4, 3 * math.pi / 4])
    phase = rng.uniform(0.0, PERIOD, size=2)
    base, tint = rng.uniform(200.0, 232.0), rng.uniform(-10.0, 10.0, size=3)
    image = np.broadcast_to(base + tint, (SIZE, SIZE, 3)).astype(np.float32)
    if rng.random() < 0.5:
        image = image + rng.normal(0.0, rng.uniform(2.0, 5.0), size=(SIZE, SIZE, 1)).astype(np.float32)

    mask = _mask(attrs["shape"], cx, cy, r)
    pattern = attrs["pattern"]
    if pattern == "solid":
        paint = mask
    elif pattern == "striped":
        along = _U * math.cos(angle) + _V * math.sin(angle) + phase[0]
        paint = mask * ((along / PERIOD) % 1.0 < 0.5)
    elif pattern == "dotted":
        du = (_U - phase[0]) % PERIOD - PERIOD / 2
        dv = (_V - phase[1]) % PERIOD - PERIOD / 2
        paint = mask * (du * du + dv * dv >= DOT_RADIUS ** 2)
    elif pattern == "hollow":
        # the band within OUTLINE of the edge: a smaller copy of the polygon would give a thin star or cross a
        # sub-pixel outline (its inradius is a fraction of r)
        mask = paint = mask * (distance_transform_edt(mask) <= OUTLINE * SUPERSAMPLE)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; valid: {', '.join(PATTERNS)}")
    coloured, light = _box(paint)[..., None], _box(mask - paint)[..., None]
    background = image
    image = image * (1.0 - coloured - light) + colour * coloured + PAPER * light
    if nuisance is not None:
        image = background + contrast * (image - background)
        image = image + extra.normal(0.0, noise, size=image.shape).astype(np.float32) if noise > 0 else image
    return np.rint(image).clip(0, 255).astype(np.uint8)


def _split(prefix: str, seed: int, per_class: int, nuisance: Nuisance | None = None) -> ImageSplit:
    """Images k = 0 .. per_class x 256 - 1 of a split, image k of class k % 256."""
    labels = np.arange(per_class * len(CLASSES), dtype=np.int64) % len(CLASSES)
    images = np.stack([render(CLASSES[label], [seed, k], nuisance) for k, label in enumerate(labels)])
    attrs = [class_attributes(CLASSES[label]) for label in labels]
    return ImageSplit(images=images, labels=labels, ids=[f"{prefix}-{k:05d}" for k in range(len(labels))],
                      class_names=CLASSES, extra={a: [x[a] for x in attrs] for a in attrs[0]})


@lru_cache(maxsize=None)
def test_split(n_classes: int = len(CLASSES)) -> ImageSplit:
    """``embedded:manyclass-test`` (2,560 images, 10 per class) or, for ``n_classes`` < 256, the sub-set of its
    images whose class is among the first ``n_classes`` (``embedded:manyclass-test-25`` ...): cut from the full
    set, so nested by construction."""
    if n_classes not in (*SUBSET_SIZES, len(CLASSES)):
        raise ValueError(f"no many-class sub-set of {n_classes} classes; sizes: {SUBSET_SIZES + (len(CLASSES),)}")
    if n_classes == len(CLASSES):
        return _split("manyclass-test", TEST_SEED, TEST_PER_CLASS, EVALUATION_NUISANCE)
    full = test_split()
    keep = np.flatnonzero(full.labels < n_classes)
    return ImageSplit(images=full.images[keep], labels=full.labels[keep], ids=[full.ids[k] for k in keep],
                      class_names=CLASSES[:n_classes], extra={a: [v[k] for k in keep] for a, v in full.extra.items()})


@lru_cache(maxsize=None)
def dev_split() -> ImageSplit:
    """``embedded:manyclass-dev``: 512 images (2 per class) for choosing settings; no measurement uses them."""
    return _split("manyclass-dev", DEV_SEED, DEV_PER_CLASS, EVALUATION_NUISANCE)


@lru_cache(maxsize=None)
def train_split(per_class: int = TRAIN_PER_CLASS, seed: int = TRAIN_SEED, nuisance: Nuisance | None = None
                ) -> ImageSplit:
    """``embedded:manyclass-train``: 51,200 images (200 per class) the text-to-image model trains on; with
    ``nuisance``, the same drawings made harder (the contrastive partner's hard-picture recipe)."""
    return _split("manyclass-train", seed, per_class, nuisance)


@lru_cache(maxsize=None)
def val_split(per_class: int = 1, nuisance: Nuisance | None = None) -> ImageSplit:
    """Pictures the recipes measure their validation losses or top-1 on (seed of no other split)."""
    return _split("manyclass-val", VAL_SEED, per_class, nuisance)


def caption(name: str, template: str) -> str:
    return fill(template, **class_attributes(name))


def prompt_rows(n_classes: int = len(CLASSES)) -> list[tuple[str, str, int]]:
    """(prompt, class name, class index) of the first ``n_classes`` classes, in the held-out wording."""
    return [(caption(name, PROMPT_TEMPLATE), name, idx) for idx, name in enumerate(CLASSES[:n_classes])]


def write_prompt_files(folder) -> None:
    """The prompt CSVs the test sets carry (``dclib/data/prompts``): one per size, and the dev set's (all classes)."""
    from dclib.data.shapes import write_prompt_csv

    for name, k in [("manyclass-test", len(CLASSES)), ("manyclass-dev", len(CLASSES))] + \
            [(f"manyclass-test-{k}", k) for k in SUBSET_SIZES]:
        write_prompt_csv(prompt_rows(k), Path(folder) / f"{name}.csv")


def caption_words() -> list[str]:
    """Every word a TRAIN or HELD-OUT caption can hold (held-out words are known tokens, never trained on)."""
    words = {"an"} | set(SHAPES) | set(COLOUR_NAMES) | set(PATTERNS)
    for template in TRAIN_TEMPLATES + HELDOUT_TEMPLATES:
        words.update(w.strip(".,") for w in template.split() if not w.startswith("{"))
    return sorted(words)


def class_groups(n_classes: int = len(CLASSES)) -> dict:
    """The natural label tree of the first ``n_classes`` classes, as :func:`dclib.label_tree.tree_from_groups` takes
    it: shape family -> shape -> colour family -> classes (empty groups left out)."""
    tree: dict = {}
    for name in CLASSES[:n_classes]:
        a = class_attributes(name)
        shape_family = next(f for f, members in SHAPE_FAMILIES.items() if a["shape"] in members)
        colour_family = next(f for f, members in COLOUR_FAMILIES.items() if a["colour"] in members)
        tree.setdefault(shape_family, {}).setdefault(a["shape"], {}).setdefault(colour_family, []).append(name)
    return tree
