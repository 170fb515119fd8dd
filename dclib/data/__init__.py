"""Embedded datasets: real digits that ship inside installed packages, shifted copies of their test
splits, and procedural "shapes" scenes with captions. Nothing is downloaded.

    from dclib.data import load_embedded, list_embedded
    ds = load_embedded("embedded:digits-test")    # datasets.Dataset: image, label, id, ...
"""
from dclib.data.captions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES, Template, caption, templates
from dclib.data.common import ImageSplit, stable_seed
from dclib.data.registry import embedded_arrays, embedded_prompt_file, list_embedded, load_embedded, zero_shot_task
from dclib.data.shapes import render_scenes, sample_scenes, wino_dataset, write_prompt_csv, zero_shot_prompts
from dclib.data.shapes_render import COLOUR_NAMES, POSITIONS, SHAPES, SIZES, render_scene
from dclib.data.shifts import SHIFT_NAMES, shift_image

__all__ = [
    "COLOUR_NAMES", "HELDOUT_TEMPLATES", "ImageSplit", "POSITIONS", "SHAPES", "SHIFT_NAMES", "SIZES",
    "TRAIN_TEMPLATES", "Template", "caption", "embedded_arrays", "embedded_prompt_file", "list_embedded", "load_embedded",
    "render_scene", "render_scenes", "sample_scenes", "shift_image", "stable_seed", "templates",
    "wino_dataset", "write_prompt_csv", "zero_shot_prompts", "zero_shot_task",
]
