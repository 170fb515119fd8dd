"""Caption grammar for shapes scenes: templates with named slots, split into TRAIN and HELD-OUT wording.

Slots: {shape1} {colour1} {size1} {where1} (position phrase, one-object scenes only) and {shape2}
{colour2} {size2}. In two-object scenes object 1 is the left (relation "left_of") or top ("above") one,
so "right of"/"below" templates name object 2 first. A template may leave attributes unmentioned.

HELD-OUT templates use framing and relation wording ("a photo of", "to the left of", "underneath",
"together with", ...) that no TRAIN template produces, so a model trained on TRAIN captions is tested on
new phrasings of known concepts. Some held-out words never occur in training captions at all ("photo",
"object", "underneath", ...). The zero-shot prompts are held-out templates.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Position word -> phrase used for the {where1} slot.
WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
         "center": "in the center"}

TEMPLATE_SPLITS = ("train", "heldout")
# Which scenes a template can describe: one object, two objects in a given relation, or two in any.
KINDS = ("one", "left_of", "above", "two")


@dataclass(frozen=True)
class Template:
    id: str       # stable, e.g. "one-train-3", "left_of-heldout-0"
    split: str    # "train" or "heldout"
    kind: str     # one of KINDS
    text: str

    def fits(self, scene: dict) -> bool:
        if scene["n_objects"] == 1:
            return self.kind == "one"
        return self.kind in ("two", scene["relation"])


_TEXTS = {
    ("one", "train"): [
        "a {colour1} {shape1}",
        "a {size1} {colour1} {shape1}",
        "a {colour1} {shape1} {where1}",
        "a {size1} {colour1} {shape1} {where1}",
        "there is a {size1} {colour1} {shape1} {where1}",
        "an image of a {colour1} {shape1}",
        "a {shape1} {where1}",
        "a {size1} {shape1}",
        "{where1} is a {colour1} {shape1}",
        "a {shape1} in {colour1}",
    ],
    ("one", "heldout"): [
        "a photo of a {colour1} object.",      # zero-shot colour prompt
        "a picture of a {shape1}.",            # zero-shot shape prompt
        "a picture of an object {where1}.",    # zero-shot position prompt
        "a {shape1} coloured {colour1} {where1}",
        "the picture shows a {size1} {colour1} {shape1}",
    ],
    ("left_of", "train"): [
        "a {colour1} {shape1} left of a {colour2} {shape2}",
        "a {colour2} {shape2} right of a {colour1} {shape1}",
        "a {size1} {colour1} {shape1} left of a {size2} {colour2} {shape2}",
        "a {colour1} {shape1} on the left and a {colour2} {shape2} on the right",
    ],
    ("left_of", "heldout"): [
        "a {colour1} {shape1} to the left of a {colour2} {shape2}",
        "a {colour2} {shape2} with a {colour1} {shape1} to its left",
    ],
    ("above", "train"): [
        "a {colour1} {shape1} above a {colour2} {shape2}",
        "a {colour2} {shape2} below a {colour1} {shape1}",
        "a {size1} {colour1} {shape1} above a {size2} {colour2} {shape2}",
        "a {colour1} {shape1} at the top and a {colour2} {shape2} at the bottom",
    ],
    ("above", "heldout"): [
        "a {colour2} {shape2} underneath a {colour1} {shape1}",
        "a {colour1} {shape1} with a {colour2} {shape2} beneath it",
    ],
    ("two", "train"): [
        "a {colour1} {shape1} and a {colour2} {shape2}",
        "there is a {colour2} {shape2} and a {colour1} {shape1}",
    ],
    ("two", "heldout"): [
        "two shapes: a {colour1} {shape1} and a {colour2} {shape2}",
        "a {colour1} {shape1} together with a {colour2} {shape2}",
    ],
}

TEMPLATES: tuple[Template, ...] = tuple(
    Template(id=f"{kind}-{split}-{k}", split=split, kind=kind, text=text)
    for (kind, split), texts in _TEXTS.items()
    for k, text in enumerate(texts)
)
TRAIN_TEMPLATES = tuple(t for t in TEMPLATES if t.split == "train")
HELDOUT_TEMPLATES = tuple(t for t in TEMPLATES if t.split == "heldout")
TEMPLATE_BY_ID = {t.id: t for t in TEMPLATES}

# The held-out templates used as zero-shot prompts, one per task.
ZERO_SHOT_TEMPLATE_IDS = {"colour": "one-heldout-0", "shape": "one-heldout-1", "position": "one-heldout-2"}


def templates(split: str, scene: dict | None = None, kinds: tuple[str, ...] | None = None) -> list[Template]:
    """Templates of one split, optionally only those that fit `scene` and/or have a kind in `kinds`."""
    if split not in TEMPLATE_SPLITS:
        raise ValueError(f"template split must be one of {TEMPLATE_SPLITS}, got {split!r}")
    return [t for t in TEMPLATES if t.split == split and (scene is None or t.fits(scene))
            and (kinds is None or t.kind in kinds)]


_A_BEFORE_VOWEL = re.compile(r"\ba (?=[aeiou])")


def fill(text: str, **slots: str) -> str:
    """Fill a template's slots and fix the article ("a orange" -> "an orange")."""
    return _A_BEFORE_VOWEL.sub("an ", text.format(**slots))


def caption(scene: dict, template: Template) -> str:
    """The caption `template` gives `scene` (the template must fit the scene)."""
    if not template.fits(scene):
        raise ValueError(f"template {template.id} does not fit a {scene['n_objects']}-object scene")
    slots = {f"{attr}{k}": scene[f"{attr}{k}"] for k in (1, 2) for attr in ("shape", "colour", "size")
             if scene.get(f"{attr}{k}") is not None}
    if scene["n_objects"] == 1:
        slots["where1"] = WHERE[scene["pos1"]]
    return fill(template.text, **slots)
