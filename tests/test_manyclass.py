"""The many-class world (dclib.data.manyclass): classes, nested sub-sets, rendering, wording, the label tree."""
from __future__ import annotations

import numpy as np
import pytest

from dclib.data import embedded_arrays, embedded_prompt_file, manyclass
from dclib.data.manyclass import CLASSES, SUBSET_SIZES
from dclib.label_tree import tree_from_groups
from dclib.prompts import Conditionings, read_prompt_file
from dclib.schedules import tree_leaves


def test_classes_are_every_colour_pattern_shape_once_in_a_seeded_order():
    assert len(CLASSES) == 256 == len(set(CLASSES))
    assert sorted(CLASSES) == sorted(manyclass.CANONICAL)
    assert list(CLASSES) != list(manyclass.CANONICAL)  # permuted, so a prefix mixes shapes, colours and patterns
    first = {manyclass.class_attributes(n)["shape"] for n in CLASSES[:25]}
    assert len(first) >= 5


def test_test_set_has_ten_images_per_class_and_sub_sets_are_its_prefix_classes():
    full = embedded_arrays("manyclass-test")
    assert len(full) == 2560 and full.class_names == CLASSES
    assert np.array_equal(np.bincount(full.labels), np.full(256, 10))
    assert full.images.shape[1:] == (32, 32, 3)
    for k in SUBSET_SIZES:
        sub = embedded_arrays(f"manyclass-test-{k}")
        keep = full.labels < k
        assert sub.class_names == CLASSES[:k] and len(sub) == 10 * k
        # the same images under the same ids and the same class indices: a 256-class error matrix holds each size's
        assert sub.ids == [i for i, kept in zip(full.ids, keep) if kept]
        assert np.array_equal(sub.images, full.images[keep]) and np.array_equal(sub.labels, full.labels[keep])
    with pytest.raises(ValueError, match="sub-set"):
        manyclass.test_split(30)


def test_splits_are_disjoint_and_each_image_renders_alone():
    test, dev = embedded_arrays("manyclass-test"), embedded_arrays("manyclass-dev")
    assert len(dev) == 512 and not set(test.ids) & set(dev.ids)
    k = 777
    again = manyclass.render(CLASSES[k % 256], [manyclass.TEST_SEED, k], manyclass.EVALUATION_NUISANCE)
    assert np.array_equal(again, test.images[k]) and test.labels[k] == k % 256
    assert not np.array_equal(test.images[0], dev.images[0])


def test_evaluation_pictures_are_the_training_drawing_made_smaller_fainter_and_noisier():
    """The nuisance draws from a stream of its own: without it (or with none to apply) a picture is the clean one
    bit for bit; with it, the same object (place, colour, pattern) is smaller and closer to the background."""
    name, seed = "red solid square", [manyclass.TEST_SEED, 3]
    clean = manyclass.render(name, seed)
    assert np.array_equal(manyclass.render(name, seed, manyclass.Nuisance()), clean)
    small = manyclass.render(name, seed, manyclass.Nuisance(scale=(0.5, 0.5)))
    faint = manyclass.render(name, seed, manyclass.Nuisance(contrast=(0.3, 0.3))).astype(float)
    noisy = manyclass.render(name, seed, manyclass.Nuisance(noise=(10.0, 10.0))).astype(float)
    background = np.median(clean.reshape(-1, 3), 0)
    object_pixels = lambda img: (np.abs(img.astype(float) - background).max(-1) > 60).sum()
    assert 0 < object_pixels(small) < 0.4 * object_pixels(clean)
    inside = np.abs(clean.astype(float) - background).max(-1) > 60
    assert np.abs(faint[inside] - background).mean() < 0.45 * np.abs(clean[inside].astype(float) - background).mean()
    assert 5 < (noisy - clean).std() < 15
    hard = manyclass.render(name, seed, manyclass.EVALUATION_NUISANCE)
    assert np.array_equal(hard, manyclass.render(name, seed, manyclass.EVALUATION_NUISANCE))  # per picture, seeded


def test_patterns_colours_and_shapes_show_in_the_pixels():
    seed = [99, 0]
    pictures = {p: manyclass.render(f"blue {p} circle", seed).astype(float) for p in manyclass.PATTERNS}
    background = pictures["solid"][0, 0]
    for a in manyclass.PATTERNS:
        for b in manyclass.PATTERNS:
            if a < b:
                assert np.abs(pictures[a] - pictures[b]).mean() > 2, (a, b)
    # the solid object is blue where it is; hollow leaves the centre to the background
    centre = pictures["solid"][14:18, 14:18].mean((0, 1))
    assert centre[2] > 150 and centre[0] < 110
    assert np.abs(pictures["hollow"][15, 15] - background).max() < 30
    # a hollow outline is as wide for a star or a cross as for a circle (measured from the edge, not a smaller copy)
    def coloured_pixels(name):
        return (np.abs(manyclass.render(name, seed).astype(float) - background).max(-1) > 60).sum()
    def hollow_share(shape):  # a smaller copy of the outline would leave each shape the same share (~0.48)
        return coloured_pixels(f"red hollow {shape}") / coloured_pixels(f"red solid {shape}")
    for shape in ("star", "cross"):  # thin shapes: most of their area lies within 2.4 px of the edge
        assert hollow_share(shape) > hollow_share("circle") + 0.15, shape
    circle, pentagon = (manyclass.render(f"red solid {s}", seed) for s in ("circle", "pentagon"))
    assert 0 < np.abs(circle.astype(int) - pentagon.astype(int)).mean() < 20  # near neighbours, yet different
    with pytest.raises(ValueError, match="pattern"):
        manyclass.render("red plaid circle", seed)


def test_shipped_prompt_files_are_the_held_out_wording_of_each_size():
    for name, k in [("manyclass-test", 256), ("manyclass-dev", 256)] + [(f"manyclass-test-{k}", k)
                                                                       for k in SUBSET_SIZES]:
        conds = read_prompt_file(embedded_prompt_file(f"embedded:{name}"))
        rows = manyclass.prompt_rows(k)
        assert list(conds.values) == [r[0] for r in rows], name
        assert list(conds.class_names) == [r[1] for r in rows], name
    assert manyclass.prompt_rows(2) == [(f"a picture of a {CLASSES[0]}.", CLASSES[0], 0),
                                        (f"a picture of a {CLASSES[1]}.", CLASSES[1], 1)]
    # held-out: "picture" is in no training caption, and every prompt word is a known token
    assert not any("picture" in t for t in manyclass.TRAIN_TEMPLATES)
    words = set(manyclass.caption_words())
    assert all(w.strip(".") in words for prompt, _, _ in manyclass.prompt_rows() for w in prompt.split())


def test_natural_label_tree_holds_every_class_once_and_loads_as_a_tree():
    for k in (25, 256):
        groups = manyclass.class_groups(k)
        conds = Conditionings.from_rows(manyclass.prompt_rows(k))
        tree = tree_from_groups(conds, groups)
        assert sorted(tree_leaves(tree)) == list(range(k))
    assert set(manyclass.class_groups()) == {"round", "angular", "pointed"}
    assert len(manyclass.class_groups()["round"]["pentagon"]["warm"]) == 16  # 4 warm colours x 4 patterns


def test_the_card_measures_top1_with_intervals_on_each_class_count(tiny_models):
    """`python -m dclib train manyclass` measures the model it trained this way: zero-shot top-1 on the first pictures
    of each sub-set, with the set's own prompts (here on the tiny text-to-image model: only the bookkeeping)."""
    from dclib.train.run import NAMES, measure_manyclass

    assert "manyclass" in NAMES
    facts = measure_manyclass(tiny_models["sd"], limit=3, schedule="2", sizes=(25, 50), progress=False)
    assert facts["schedule"] == "2" and list(facts["top1"]) == [25, 50]
    for k, row in facts["top1"].items():
        assert row["dataset"] == f"embedded:manyclass-test-{k}" and row["n"] == 3
        low, high = row["ci95"]
        assert 0 <= low <= row["accuracy"] <= high <= 1 and row["accuracy"] * 3 == round(row["accuracy"] * 3)
