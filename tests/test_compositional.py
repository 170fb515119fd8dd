"""Winoground text / image / group scores."""
import numpy as np
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
