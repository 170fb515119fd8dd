"""Shapes scenes as data: scene sampling, training batches, test sets, zero-shot tasks and
Winoground-style compositional pairs. Rendering is in shapes_render, wording in captions.

Every scene is a dict of structured attributes:
  n_objects (1 or 2), shape1, colour1, size1, pos1, shape2, colour2, size2, pos2, relation
  ("left_of"/"above", None for one object), background, render_seed, caption, template_id,
  template_split.
Object 1 is the left/top object of a two-object scene; two-object attributes are None for one object.
Scene k of `render_scenes(n, seed)` depends only on (seed, k), so any prefix is reproducible alone.
"""
from __future__ import annotations

import csv
import os
from functools import lru_cache

import numpy as np
from datasets import Dataset, Features, Image, Value

from dclib.data import captions as cap
from dclib.data.common import ImageSplit, to_pil
from dclib.data.shapes_render import BACKGROUNDS, COLOUR_NAMES, POSITIONS, RELATIONS, SHAPES, SIZES, render_scene

TRAIN_SEED, TEST_SEED, WINO_SEED = 1, 2, 3
FEATURE_TRAIN_SEED = 4  # labelled scenes for the "model features" baseline (the diffusion validation set uses 11)
VARIANT_SEED = 5  # scenes re-rendered once per value of one attribute (attribute_variants)
CLUTTER_SEED = 6  # the zero-shot benchmark's test scenes (clutter_test_split)
CALIBRATION_SEED = 12  # cluttered scenes a model card's temperature is fitted on (dclib.train.card_temperature)
TRAIN_SIZE = 50_000
TEST_SIZE = 1_000
WINO_PER_SWAP = 200
# Share of one-object scenes in training data; the rest have two objects.
P_SINGLE = 0.4
SWAP_TYPES = ("attribute", "relation", "both")  # what moves between the two pictures of a pair
# Winoground's tag for each (Thrush et al. 2022): its *object* swaps exchange noun phrases (our "relation": the
# two objects trade places), its *relation* swaps exchange verbs, adjectives or prepositions (our "attribute":
# the colour adjectives trade places), and *both* does the two at once (our "both": the nouns move, the colour
# adjectives stay, which is a noun-phrase swap plus an adjective swap).
WINOGROUND_TAGS = {"attribute": "relation", "relation": "object", "both": "both"}
ZERO_SHOT_TASKS = ("shape", "colour", "position")
CLUTTER_TASK = "clutter"  # the zero-shot benchmark (embedded:zeroshot-test) as a task of zero_shot_task


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_scene(rng: np.random.Generator, n_objects: int) -> dict:
    """Random attributes for a scene (no caption yet). Two objects never share both shape and colour,
    so every caption names them distinguishably."""
    scene = {"n_objects": n_objects, "shape1": _pick(rng, SHAPES), "colour1": _pick(rng, COLOUR_NAMES),
             "size1": _pick(rng, SIZES), "pos1": None, "shape2": None, "colour2": None, "size2": None,
             "pos2": None, "relation": None}
    if n_objects == 1:
        scene["pos1"] = _pick(rng, POSITIONS)
    elif n_objects == 2:
        scene["relation"] = _pick(rng, RELATIONS)
        scene["pos1"], scene["pos2"] = ("left", "right") if scene["relation"] == "left_of" else ("top", "bottom")
        while True:
            scene["shape2"], scene["colour2"] = _pick(rng, SHAPES), _pick(rng, COLOUR_NAMES)
            if (scene["shape2"], scene["colour2"]) != (scene["shape1"], scene["colour1"]):
                break
        scene["size2"] = _pick(rng, SIZES)
    else:
        raise ValueError(f"n_objects must be 1 or 2, got {n_objects}")
    scene["background"] = _pick(rng, BACKGROUNDS)
    scene["render_seed"] = int(rng.integers(2**63 - 1))
    return scene


def with_caption(scene: dict, template: cap.Template) -> dict:
    return {**scene, "caption": cap.caption(scene, template), "template_id": template.id,
            "template_split": template.split}


def _scene_rng(seed: int, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, k])


def sample_scenes(n: int, seed: int, p_single: float = P_SINGLE, template_split: str = "train") -> list[dict]:
    """n captioned scene dicts (no pixels); the caption template is drawn from `template_split`."""
    scenes = []
    for k in range(n):
        rng = _scene_rng(seed, k)
        n_objects = 1 if p_single >= 1.0 or rng.random() < p_single else 2
        scene = sample_scene(rng, n_objects)
        scenes.append(with_caption(scene, _pick(rng, cap.templates(template_split, scene))))
    return scenes


def render_scenes(n: int, seed: int, p_single: float = P_SINGLE,
                  template_split: str = "train") -> tuple[np.ndarray, list[dict]]:
    """Fast training data: (uint8 [n, 32, 32, 3], scene dicts). Deterministic in (n, seed, ...)."""
    scenes = sample_scenes(n, seed, p_single, template_split)
    images = np.stack([render_scene(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)
    return images, scenes


_SCENE_COLUMNS = ("n_objects", "shape1", "colour1", "size1", "pos1", "shape2", "colour2", "size2", "pos2",
                  "relation", "background", "caption", "template_id", "template_split")


def _scenes_split(prefix: str, images: np.ndarray, scenes: list[dict], label_attr: str = "shape1",
                  class_names: tuple[str, ...] = SHAPES) -> ImageSplit:
    return ImageSplit(
        images=images,
        labels=np.array([class_names.index(s[label_attr]) for s in scenes], np.int64),
        ids=[f"{prefix}-{k:05d}" for k in range(len(scenes))],
        class_names=class_names,
        extra={c: [s[c] for s in scenes] for c in _SCENE_COLUMNS},
    )


@lru_cache(maxsize=None)
def train_split(n: int = TRAIN_SIZE) -> ImageSplit:
    """One- and two-object scenes with TRAIN captions; label = shape of object 1 (the left/top one).

    Rendering 50k scenes takes ~10-15 s on 2 cores and the Hugging Face form (embedded:shapes-train)
    about as long again for PNG encoding, so training code should use render_scenes() or
    embedded_arrays("shapes-train") instead of decoding PIL images.
    """
    images, scenes = render_scenes(n, TRAIN_SEED)
    return _scenes_split("shapes-train", images, scenes)


@lru_cache(maxsize=None)
def test_split(n: int = TEST_SIZE) -> ImageSplit:
    """One-object scenes (different seed from training) with HELD-OUT captions; label = shape."""
    images, scenes = render_scenes(n, TEST_SEED, p_single=1.0, template_split="heldout")
    return _scenes_split("shapes-test", images, scenes)


_TASK_ATTR = {"shape": ("shape1", SHAPES), "colour": ("colour1", COLOUR_NAMES), "position": ("pos1", POSITIONS)}


def _task_attr(task: str) -> tuple[str, tuple[str, ...]]:
    """(scene attribute, class names) of a zero-shot task; a clear error for an unknown one."""
    if task not in _TASK_ATTR:
        raise ValueError(f"unknown zero-shot task {task!r}; valid: {', '.join(ZERO_SHOT_TASKS)}")
    return _TASK_ATTR[task]


@lru_cache(maxsize=None)
def zero_shot_split(task: str) -> ImageSplit:
    """The shapes test scenes labelled by one attribute (task in shape, colour, position)."""
    attr, names = _task_attr(task)
    base = test_split()
    return ImageSplit(images=base.images, labels=np.array([names.index(v) for v in base.extra[attr]], np.int64),
                      ids=base.ids, class_names=names, extra=dict(base.extra))


def labelled_scenes(task: str, n: int, seed: int = FEATURE_TRAIN_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` one-object scenes (uint8 [n, 32, 32, 3]) labelled for ``task``, from a seed no other split uses:
    labelled real training images for the non-zero-shot "model features" baseline of Table 1. For the
    ``clutter`` task: cluttered scenes like the benchmark's (:func:`clutter_scene`)."""
    if task == CLUTTER_TASK:
        images, _, labels = _clutter_scenes(n, seed)
        return images, labels
    attr, names = _task_attr(task)
    images, scenes = render_scenes(n, seed, p_single=1.0)
    return images, np.array([names.index(s[attr]) for s in scenes], np.int64)


def attribute_variants(task: str, n: int, seed: int = VARIANT_SEED) -> np.ndarray:
    """uint8 [n, n_classes, 32, 32, 3]: ``n`` one-object scenes, each rendered once per class of ``task``
    with everything else (the other attributes, jitter, colour noise, background) unchanged; what
    telling the task's classes apart means in pixels."""
    attr, names = _task_attr(task)
    scenes = sample_scenes(n, seed, p_single=1.0)
    return np.stack([np.stack([render_scene({**s, attr: value}) for value in names]) for s in scenes]) if scenes \
        else np.zeros((0, len(names), 32, 32, 3), np.uint8)


def zero_shot_prompts(task: str) -> list[tuple[str, str, int]]:
    """(prompt, class name, class index) rows for a task, worded with its HELD-OUT template."""
    attr, names = _task_attr(task)
    template = cap.TEMPLATE_BY_ID[cap.ZERO_SHOT_TEMPLATE_IDS[task]]
    slot = "where1" if attr == "pos1" else attr  # captions word a position as a phrase ("on the left")
    rows = []
    for idx, name in enumerate(names):
        value = cap.WHERE[name] if slot == "where1" else name
        rows.append((cap.fill(template.text, **{slot: value}), name, idx))
    return rows


# ---------------------------------------------------------------------------------------------------
# The zero-shot benchmark: fine-grained classes in cluttered scenes

#: Colours a class can have; the distractor object is always in one of the others, so it is never a class.
CLUTTER_CLASS_COLOURS = ("red", "green", "blue", "yellow")
CLUTTER_DISTRACTOR_COLOURS = tuple(c for c in COLOUR_NAMES if c not in CLUTTER_CLASS_COLOURS)
CLUTTER_CLASSES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in CLUTTER_CLASS_COLOURS)
CLUTTER_TEST_SIZE = 500
#: Held-out wording: "picture" is never in a training caption.
CLUTTER_PROMPT = "a picture of a {colour1} {shape1}."


def clutter_scene(rng: np.random.Generator) -> tuple[dict, int]:
    """(scene, class index): a two-object scene whose one class object (a colour of CLUTTER_CLASS_COLOURS, any
    shape and size, on a random side) shares the picture with a small distractor of any shape in a colour no
    class has. Telling 24 colour-shape classes apart with an unrelated object beside them is where the model
    errs: with single objects it is at 100%; with a distractor of any size at 55% and with a small one at 63%
    (100 scenes, 50 timesteps); on these 500 scenes 59.8% at 20 timesteps (README)."""
    scene = sample_scene(rng, 2)
    target = 1 + int(rng.integers(2))
    other = 3 - target
    scene[f"colour{target}"] = _pick(rng, CLUTTER_CLASS_COLOURS)
    scene[f"colour{other}"] = _pick(rng, CLUTTER_DISTRACTOR_COLOURS)
    scene[f"size{other}"] = "small"
    scene["target"] = target
    return scene, CLUTTER_CLASSES.index(f"{scene[f'colour{target}']} {scene[f'shape{target}']}")


def _clutter_scenes(n: int, seed: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """(uint8 images [n, 32, 32, 3], scene dicts, class indices) of ``n`` cluttered scenes; scene k depends only
    on (seed, k)."""
    pairs = [clutter_scene(_scene_rng(seed, k)) for k in range(n)]
    images = np.stack([render_scene(s) for s, _ in pairs]) if pairs else np.zeros((0, 32, 32, 3), np.uint8)
    return images, [s for s, _ in pairs], np.array([label for _, label in pairs], np.int64)


@lru_cache(maxsize=None)
def clutter_test_split(n: int = CLUTTER_TEST_SIZE) -> ImageSplit:
    """The zero-shot benchmark (embedded:zeroshot-test): ``n`` cluttered scenes (see :func:`clutter_scene`),
    labelled by the class object's colour and shape, from a seed no other split uses."""
    images, scenes, labels = _clutter_scenes(n, CLUTTER_SEED)
    return ImageSplit(images=images, labels=labels,
                      ids=[f"zeroshot-test-{k:05d}" for k in range(n)], class_names=CLUTTER_CLASSES,
                      extra={c: [s[c] for s in scenes] for c in (*_SCENE_COLUMNS[:11], "target")})


def clutter_prompts() -> list[tuple[str, str, int]]:
    """(prompt, class name, class index) rows of the zero-shot benchmark, in HELD-OUT wording."""
    return [(cap.fill(CLUTTER_PROMPT, colour1=name.split()[0], shape1=name.split()[1]), name, idx)
            for idx, name in enumerate(CLUTTER_CLASSES)]


def write_prompt_csv(rows, path: str | os.PathLike) -> None:
    """Write (prompt, classname, classidx) rows as a CSV with header `prompt,classname,classidx`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "classname", "classidx"])
        for prompt, classname, classidx in rows:
            writer.writerow([prompt, classname, int(classidx)])


# ---------------------------------------------------------------------------------------------------
# Winoground-style pairs


def swapped_scene(scene: dict, swap_type: str) -> dict:
    """The partner scene: same render seed and background, attributes moved as `swap_type` says."""
    other = dict(scene)
    if swap_type == "attribute":    # colours exchanged between the two objects
        other["colour1"], other["colour2"] = scene["colour2"], scene["colour1"]
    elif swap_type == "relation":   # the objects (with all their attributes) exchange places
        for attr in ("shape", "colour", "size"):
            other[f"{attr}1"], other[f"{attr}2"] = scene[f"{attr}2"], scene[f"{attr}1"]
    elif swap_type == "both":       # both swaps at once: shapes (and sizes) move, colours stay in place
        for attr in ("shape", "size"):
            other[f"{attr}1"], other[f"{attr}2"] = scene[f"{attr}2"], scene[f"{attr}1"]
    else:
        raise ValueError(f"unknown swap type {swap_type!r}; valid: {', '.join(SWAP_TYPES)}")
    return other


def _wino_scene(rng: np.random.Generator) -> dict:
    # Distinct shapes and colours, so every swap changes both the picture and the caption.
    while True:
        scene = sample_scene(rng, 2)
        if scene["shape1"] != scene["shape2"] and scene["colour1"] != scene["colour2"]:
            return scene


@lru_cache(maxsize=None)
def wino_rows(per_swap: int = WINO_PER_SWAP) -> tuple[dict, ...]:
    """Rows with image_0/image_1 as uint8 arrays. Each scene pair appears twice, captioned once with a
    TRAIN and once with a HELD-OUT template, so the two wordings are compared on the same pictures."""
    rows = []
    for s, swap_type in enumerate(SWAP_TYPES):
        for k in range(per_swap):
            rng = _scene_rng(WINO_SEED, s * 1_000_000 + k)
            scene_0 = _wino_scene(rng)
            scene_1 = swapped_scene(scene_0, swap_type)
            image_0, image_1 = render_scene(scene_0), render_scene(scene_1)
            # Swapping the order of objects joined by "and" would not change the meaning, so relation
            # swaps need a template that states the relation.
            kinds = (scene_0["relation"],) if swap_type != "attribute" else None
            for split in cap.TEMPLATE_SPLITS:
                template = _pick(rng, cap.templates(split, scene_0, kinds))
                rows.append({
                    "id": f"shapes-wino-{swap_type}-{k:04d}-{split}",
                    "image_0": image_0, "image_1": image_1,
                    "caption_0": cap.caption(scene_0, template), "caption_1": cap.caption(scene_1, template),
                    "swap_type": WINOGROUND_TAGS[swap_type], "swap": swap_type, "template_split": split,
                    "template_id": template.id,
                    "relation": scene_0["relation"],
                })
    return tuple(rows)


def wino_dataset(per_swap: int = WINO_PER_SWAP):
    """HF Dataset: id, image_0, image_1 (RGB), caption_0, caption_1, swap_type (Winoground's tag), template_split,
    template_id, relation, swap (what moved, in this world's terms). image_0 matches caption_0 and image_1
    matches caption_1."""
    rows = wino_rows(per_swap)
    string_cols = ("id", "caption_0", "caption_1", "swap_type", "template_split", "template_id", "relation", "swap")
    columns = {c: [r[c] for r in rows] for c in string_cols}
    columns["image_0"] = [to_pil(r["image_0"]) for r in rows]
    columns["image_1"] = [to_pil(r["image_1"]) for r in rows]
    features = {c: Value("string") for c in string_cols}
    features.update(image_0=Image(), image_1=Image())
    order = ["id", "image_0", "image_1", "caption_0", "caption_1", "swap_type", "template_split",
             "template_id", "relation", "swap"]
    return Dataset.from_dict({c: columns[c] for c in order}, features=Features({c: features[c] for c in order}))
