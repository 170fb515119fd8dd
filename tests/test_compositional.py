"""Winoground text / image / group scores."""
import numpy as np
import pytest
from datasets import Dataset

from dclib.compositional import diffusion_match_scores, summarize_scores, wino_outcomes, winoground_table


def test_outcomes_by_hand():
    assert wino_outcomes(np.array([[2, 0], [1, 3]])) == {"text": True, "image": True, "group": True}
    # right captions for both images, but caption 0 prefers image 1 -> image score fails
    assert wino_outcomes(np.array([[2, 5], [1, 6]])) == {"text": True, "image": False, "group": False}
    assert wino_outcomes(np.array([[0, 0], [1, 1]])) == {"text": False, "image": False, "group": False}


def test_table_and_summary_with_a_fake_matcher():
    data = Dataset.from_dict({"image_0": [0, 1, 2, 3], "image_1": [0, 1, 2, 3], "caption_0": ["a"] * 4,
                              "caption_1": ["b"] * 4, "swap_type": ["attribute", "attribute", "relation", "both"]})
    good = lambda images, captions, item: np.array([[1.0, 0.0], [0.0, 1.0]])
    table = winoground_table(good, data, progress=False)
    assert table[["text", "image", "group"]].all().all()
    summary = summarize_scores(table)
    assert list(summary.index) == ["attribute", "both", "relation", "all"] and (summary == 100).all().all()


def test_diffusion_scores_share_samples_and_normalize(classifiers, rgb_image):
    clf = classifiers["sd"]
    images = [rgb_image, rgb_image[::-1].copy()]
    captions = ["a red circle left of a blue square", "a blue square left of a red circle"]
    s = diffusion_match_scores(clf, images, captions, plan=None, item_id="x")
    assert s.shape == (2, 2) and np.isfinite(s).all()
    again = diffusion_match_scores(clf, images, captions, item_id="x")
    np.testing.assert_array_equal(s, again)
    n = diffusion_match_scores(clf, images, captions, item_id="x", normalize="unconditional")
    # normalisation shifts each image's column by a constant: the text comparison (within a column) is unchanged
    np.testing.assert_allclose(n[0] - n[1], s[0] - s[1], rtol=1e-5, atol=1e-6)


def test_load_pairs_reads_winoground_schema_from_disk_and_refuses_bad_input(tmp_path):
    import datasets
    from PIL import Image

    from dclib.compositional import load_pairs
    from dclib.errors import InputError

    img = Image.new("RGB", (8, 8))
    ds = datasets.Dataset.from_dict({"id": [0], "image_0": [img], "image_1": [img], "caption_0": ["a b"],
                                     "caption_1": ["b a"], "tag": ["object"]},
                                    features=datasets.Features({"id": datasets.Value("int64"),
                                                                "image_0": datasets.Image(), "image_1": datasets.Image(),
                                                                "caption_0": datasets.Value("string"),
                                                                "caption_1": datasets.Value("string"),
                                                                "tag": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "wino"))
    loaded = load_pairs(str(tmp_path / "wino"))
    assert loaded[0]["swap_type"] == "object" and loaded[0]["caption_1"] == "b a"
    assert len(load_pairs("embedded:shapes-wino", per_swap=2)) == 12
    ds.remove_columns("caption_1").save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(InputError, match="caption_1"):
        load_pairs(str(tmp_path / "bad"))
    with pytest.raises(InputError, match="cannot load"):
        load_pairs("no-such-user/no-such-dataset")
