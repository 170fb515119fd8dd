"""Effective robustness (Table 4, Fig. 6): the probit line, the chance floor, the adversarial split, and the real-set
path (class subsets and class maps, image classifiers from folders)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dclib import robustness
from dclib import stats as dstats
from dclib.data.shifts import shifted_test_split
from dclib.errors import InputError, ModelNotFoundError


def test_line_through_models_on_an_exact_probit_line():
    id_acc = np.array([0.6, 0.7, 0.8, 0.9])
    ood = stats.norm.cdf(0.5 * stats.norm.ppf(id_acc) - 1.0)
    coeffs = dstats.fit_line(id_acc, ood, 10_000, 10_000)
    np.testing.assert_allclose(coeffs, [0.5, -1.0], atol=1e-9)
    assert dstats.expected_ood(coeffs, 0.85, 10_000) == pytest.approx(stats.norm.cdf(0.5 * stats.norm.ppf(0.85) - 1))


def test_probit_keeps_perfect_and_zero_accuracy_finite():
    values = dstats.probit([0.0, 1.0], 100)
    assert np.isfinite(values).all()
    assert values[0] == pytest.approx(stats.norm.ppf(0.005)) and values[1] == pytest.approx(-values[0])


def _table(dc_clean, dc_shifted):
    rows = []
    for m, (c, o) in {"a": (0.6, 0.02), "b": (0.8, 0.04), "c": (0.95, 0.06),
                      "Diffusion Classifier": (dc_clean, dc_shifted)}.items():
        rows += [{"method": m, "set": "clean", "accuracy": c, "n": 200}, {"method": m, "set": "adv", "accuracy": o, "n": 200}]
    table = pd.DataFrame(rows)
    table["classes"] = 10
    return table


def test_line_reference_never_counts_below_chance_as_robust():
    ref = robustness.line_reference(_table(0.97, 0.08), "adv")
    assert ref["line"] < 0.1 and ref["effective robustness"] > 0  # above the line ...
    assert ref["reference"] == pytest.approx(0.1)  # ... but the test is against chance, which is higher
    assert robustness.line_reference(_table(0.97, 0.3), "adv")["accuracy"] == pytest.approx(0.3)


class _WrongOnOdd:
    """A filter model that misclassifies every other pooled image."""

    def predict(self, x):
        return np.where(np.arange(len(x)) % 2 == 0, -1, 0)


def test_adversarial_split_keeps_what_the_filter_gets_wrong_mixing_every_shift():
    shifts = ["noise", "blur"]
    split = robustness.adversarial_split("digits", _WrongOnOdd(), 8, shifts)
    pool = [shifted_test_split("digits", s) for s in shifts]
    n = len(pool[0].labels)
    # image-major pool: ids alternate between the shifts; the filter is wrong on even positions (label != -1)
    # and on odd positions where the label is not 0
    assert split.ids[0].endswith("-noise") and split.ids[1].endswith("-blur")
    expected = sum(1 for i in range(2 * n) if i % 2 == 0 or pool[i % 2].labels[i // 2] != 0)
    assert len(split.labels) == expected


# ------------------------------------------------------------------------- real sets (the paper preset's path)
CLASSES = [f"class_{i}" for i in range(10)]


def test_set_classes_by_name_by_index_and_through_a_class_map(tmp_path):
    assert robustness.set_classes(["class_3", "class_1"], CLASSES) == [[3], [1]]
    assert robustness.set_classes(["0", "7"], CLASSES) == [[0], [7]]  # ImageNet-V2's folders
    synonyms = ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    # ObjectNet's map: one set class for several model classes, by full name, synonym, index or "; "-joined names
    assert robustness.set_classes(["clock", "fish"], synonyms, {"clock": [0, "goldfish"], "fish": "tench; goldfish"}) \
        == [[0, 1], [0, 1]]
    (tmp_path / "map.json").write_text('{"x": ["class_2", 4], "y": "class_0"}')
    assert robustness.set_classes(["y", "x"], CLASSES, tmp_path / "map.json") == [[0], [2, 4]]
    # ImageNet's LOC_synset_mapping.txt: line i names model class i by WordNet id (ImageNet-A's folders)
    (tmp_path / "synsets.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert robustness.set_classes(["n01443537"], synonyms, tmp_path / "synsets.txt") == [[1]]


@pytest.mark.parametrize("names,class_map,message", [
    (["cat"], None, "set class 'cat' names no class of the model"),
    (["x", "z"], {"x": "class_1"}, "set class 'z' is not in the class map"),
    (["x"], {"x": "class_99"}, "names no class of the model"),
    (["x"], "missing-map.json", "cannot read class map"),
])
def test_set_classes_refuses_what_it_cannot_match_in_one_line(names, class_map, message):
    with pytest.raises(InputError, match=message) as err:
        robustness.set_classes(names, CLASSES, class_map)
    assert "\n" not in str(err.value)


def test_grouped_predictions_take_the_best_model_class_of_each_set_class():
    scores = np.array([[0.1, 0.9, 0.2, 0.0],
                       [0.5, 0.1, 0.2, 0.6]])
    groups = [[0, 3], [2]]  # model class 1, the best of row 0, belongs to no set class
    np.testing.assert_array_equal(robustness.grouped_predictions(scores, groups), [1, 0])


def test_line_reference_reads_the_clean_images_of_the_shifted_sets_classes():
    table = _table(0.97, 0.3)
    sub = table[table.set == "clean"].assign(set="clean[adv]")
    sub["accuracy"] = sub.accuracy / 2
    ref = robustness.line_reference(pd.concat([table, sub]), "adv")
    assert ref["clean"] == "clean[adv]"
    x = dstats.probit(sub.accuracy[:3], 200)
    line = np.polyfit(x, dstats.probit([0.02, 0.04, 0.06], 200), 1)
    assert ref["line"] == pytest.approx(stats.norm.cdf(np.polyval(line, dstats.probit(0.97 / 2, 200))))


def test_a_line_through_models_of_one_clean_accuracy_is_flat():
    np.testing.assert_allclose(dstats.fit_line([0.5, 0.5], [0.2, 0.4], 100, 100),
                               [0.0, np.mean(dstats.probit([0.2, 0.4], 100))])


@pytest.fixture(scope="module")
def table4_setup(tmp_path_factory):
    """A tiny DiT (classes class_0 ... class_9), two saved image classifiers, a clean image folder of three classes,
    the same images of two of them as a shifted set, and the clean set again read through a class map."""
    import shutil

    from dclib.testing import save_image_folder, save_tiny_image_classifier, save_tiny_models

    root = tmp_path_factory.mktemp("table4")
    dit = save_tiny_models(root / "models", ["dit"])["dit"]
    nets = [save_tiny_image_classifier(root / f"resnet-{k}", CLASSES, seed=k, width=4 + 4 * k) for k in range(2)]
    clean = Path(save_image_folder(root / "clean", CLASSES[:3], per_class=3))
    for name in CLASSES[1:3]:
        shutil.copytree(clean / name, root / "two" / name)
    for name, other in (("class_0", "zero"), ("class_1", "one")):  # classes no model knows
        shutil.copytree(clean / name, root / "renamed" / other)
    return {"dit": dit, "nets": nets, "clean": str(clean), "two": str(root / "two"),
            "mapped": {"dataset": str(clean), "class_map": {"class_0": [0], "class_1": "1", "class_2": "class_2"}}}


def test_shifted_sets_made_of_clean_images_score_as_the_clean_images_of_their_classes(table4_setup):
    s = table4_setup
    table, right = robustness.robustness_comparison(
        s["dit"], s["clean"], {"two": s["two"], "mapped": s["mapped"]}, s["nets"], n_images=None, n_timesteps=3,
        device="cpu")
    acc = table.set_index(["method", "set"])
    assert set(table.method) == {"Diffusion Classifier", "resnet-0", "resnet-1"}
    for method in set(table.method):
        # the two-class set is the clean images of those classes, predicted among those classes
        assert acc.loc[(method, "two"), "n"] == acc.loc[(method, "clean[two]"), "n"] == 6
        assert acc.loc[(method, "two"), "correct"] == acc.loc[(method, "clean[two]"), "correct"]
        assert acc.loc[(method, "two"), "classes"] == 2
        # read through a class map (by index, by name), the clean set stays the clean set
        assert acc.loc[(method, "mapped"), "correct"] == acc.loc[(method, "clean"), "correct"]
        assert acc.loc[(method, "clean[mapped]"), "correct"] == acc.loc[(method, "clean"), "correct"]
    assert len(right["clean"]) == 9 and len(right["two"]) == 6
    np.testing.assert_array_equal(right["mapped"], right["clean"])
    lines = robustness.effective_robustness(table)
    assert list(lines.index) == ["two", "mapped"] and lines.loc["two", "clean"] == "clean[two]"


def test_table4_refuses_what_it_cannot_compare(table4_setup):
    s = table4_setup
    with pytest.raises(InputError, match="at least two discriminative models"):
        robustness.robustness_comparison(s["dit"], s["clean"], {"two": s["two"]}, s["nets"][:1], device="cpu")
    with pytest.raises(InputError, match="leave shuffle_seed at None"):
        robustness.robustness_comparison(s["dit"], s["clean"], {"two": s["two"]}, "embedded:digits-train",
                                         shuffle_seed=0, device="cpu")
    elsewhere = {"dataset": str(Path(s["two"]).parent / "renamed"), "class_map": {"zero": 0, "one": 0}}
    with pytest.raises(InputError, match="none of the 6 clean images is of a class of 'far'"):
        robustness.robustness_comparison(s["dit"], s["two"], {"far": elsewhere}, s["nets"], n_timesteps=1,
                                         device="cpu")
    with pytest.raises(InputError, match="names no class of the model"):
        robustness.robustness_comparison(s["dit"], s["clean"], {"bad": str(Path(s["two"]).parent / "renamed")}, s["nets"],
                                         n_timesteps=1, device="cpu")


def test_image_classifier_logits_do_not_depend_on_the_batch(table4_setup):
    from PIL import Image

    from dclib.discriminative import ImageClassifier

    images = [Image.new("RGB", (40, 30), (i * 40, 255 - i * 40, 90)) for i in range(5)]
    one = ImageClassifier.from_pretrained(table4_setup["nets"][1], device="cpu", batch_size=1)
    three = ImageClassifier.from_pretrained(table4_setup["nets"][1], device="cpu", batch_size=3)
    assert one.class_names == CLASSES
    np.testing.assert_allclose(one.logits(images), three.logits(iter(images)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        ImageClassifier.from_pretrained(table4_setup["clean"])


def test_real_sets_score_the_same_in_chunks(table4_setup, monkeypatch):
    s = table4_setup
    args = (s["dit"], s["clean"], {"two": s["two"]}, s["nets"])
    whole, right = robustness.robustness_comparison(*args, n_images=None, n_timesteps=2, device="cpu")
    monkeypatch.setattr(robustness, "CHUNK", 2)
    chunked, right_chunked = robustness.robustness_comparison(*args, n_images=None, n_timesteps=2, device="cpu")
    pd.testing.assert_frame_equal(whole, chunked)
    for name in right:
        np.testing.assert_array_equal(right[name], right_chunked[name])
