"""The error cache: samples scored once are read back under the same setup only, equal to a fresh computation, and
the denoiser runs for the missing samples alone."""
import numpy as np
import pytest
from datasets import Dataset
from PIL import Image

from dclib import ScoreOptions, even_plan
from dclib.error_cache import ENVIRONMENT, ErrorCache
from dclib.experiments import compare_settings, score_dataset
from dclib.plan import Plan


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(1)
    pictures = [Image.fromarray((rng.rand(8, 8) * 255).astype(np.uint8)) for _ in range(3)]
    return Dataset.from_dict({"image": pictures, "label": [0, 1, 2], "id": [f"img{i}" for i in range(3)]})


def _counting(monkeypatch, clf):
    pairs = []
    forward = clf.adapter.model_output  # every denoiser call goes through it
    monkeypatch.setattr(clf.adapter, "model_output", lambda *a, **k: pairs.append(len(a[0])) or forward(*a, **k))
    return pairs


def test_a_superset_plan_scores_only_its_new_samples_and_equals_a_fresh_run(classifiers, images, tmp_path,
                                                                            monkeypatch):
    clf = classifiers["pixel"]
    cache = ErrorCache(tmp_path / "cache")
    small = score_dataset(clf, images, even_plan(10), cache=cache, progress=False)  # 50, 150, ..., 950
    assert small.meta["cached_samples"] == 0
    pairs = _counting(monkeypatch, clf)
    big = score_dataset(clf, images, even_plan(50), cache=cache, progress=False)  # 10, 30, ..., 990: holds them
    assert big.meta["cached_samples"] == 3 * 10 and sum(pairs) == 3 * 40 * 10  # 40 new timesteps x 10 classes
    fresh = score_dataset(clf, images, even_plan(50), progress=False)
    np.testing.assert_allclose(big.errors, fresh.errors, rtol=1e-5, atol=1e-7)
    on_grid = [even_plan(50).timesteps.index(t) for t in even_plan(10).timesteps]
    np.testing.assert_array_equal(big.errors[..., on_grid], small.errors)  # read back exactly as saved
    pairs.clear()
    again = score_dataset(clf, images, even_plan(50), cache=cache, progress=False)
    assert sum(pairs) == 0 and again.meta["cached_samples"] == 3 * 50
    np.testing.assert_array_equal(again.errors, big.errors)


@pytest.mark.parametrize("change", [{"seed": 1}, {"options": ScoreOptions(crop=1)}, {"noise": "zero"},
                                    {"shared_noise": False}, {"conditionings": "three classes"}])
def test_another_setup_never_reads_the_saved_errors(classifiers, images, tmp_path, change):
    clf = classifiers["pixel"]
    cache = ErrorCache(tmp_path / "cache")
    score_dataset(clf, images, even_plan(5), cache=cache, progress=False)
    if change.get("conditionings"):
        change = {"conditionings": clf.conditionings(class_labels=[0, 1, 2])}
    other = score_dataset(clf, images, even_plan(5), cache=cache, progress=False, **change)
    assert other.meta["cached_samples"] == 0
    np.testing.assert_allclose(other.errors, score_dataset(clf, images, even_plan(5), progress=False,
                                                           **change).errors, rtol=1e-5, atol=1e-7)


def test_other_pixels_under_the_same_id_are_other_images(classifiers, images, tmp_path):
    clf = classifiers["pixel"]
    cache = ErrorCache(tmp_path / "cache")
    score_dataset(clf, images, even_plan(5), cache=cache, progress=False)
    flipped = images.map(lambda row: {"image": row["image"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)})
    assert score_dataset(clf, flipped, even_plan(5), cache=cache, progress=False).meta["cached_samples"] == 0


def test_variants_of_one_pass_fill_what_any_of_them_lacks(classifiers, images, tmp_path):
    clf = classifiers["pixel"]
    cache = ErrorCache(tmp_path / "cache")
    plan = Plan.from_timesteps([100, 500, 900])
    score_dataset(clf, images, plan, cache=cache, progress=False)  # l2 saved, the cropped error not
    settings = {"whole": {"options": ScoreOptions()}, "cropped": {"options": ScoreOptions(crop=1)}}
    _, first = compare_settings(clf, images, settings, plan, cache=cache)  # cropped missing: both in one pass
    assert first["whole"].meta["cached_samples"] == 0
    _, fresh = compare_settings(clf, images, settings, plan)  # no cache: nothing read
    _, again = compare_settings(clf, images, settings, plan, cache=cache)
    for name in settings:
        np.testing.assert_allclose(first[name].errors, fresh[name].errors, rtol=1e-5, atol=1e-7)
        assert again[name].meta["cached_samples"] == 3 * 3 and fresh[name].meta["cached_samples"] == 0
        np.testing.assert_array_equal(again[name].errors, first[name].errors)


@pytest.mark.parametrize("first_loss", ["l2", "huber"])
def test_a_pass_under_one_loss_saves_the_others_for_free(classifiers, images, tmp_path, monkeypatch, first_loss):
    clf = classifiers["pixel"]
    cache = ErrorCache(tmp_path / "cache")
    plan = Plan.from_timesteps([100, 500, 900])
    pairs = _counting(monkeypatch, clf)
    score_dataset(clf, images, plan, options=ScoreOptions(loss=first_loss), cache=cache, progress=False)
    assert sum(pairs) == 3 * 3 * 10  # one denoiser pass for the three losses
    pairs.clear()
    settings = {loss: {"options": ScoreOptions(loss=loss)} for loss in ["l2", "l1", "huber"]}
    _, read = compare_settings(clf, images, settings, plan, cache=cache)
    assert sum(pairs) == 0
    _, fresh = compare_settings(clf, images, settings, plan)
    for loss in settings:
        assert read[loss].meta["cached_samples"] == 3 * 3
        np.testing.assert_allclose(read[loss].errors, fresh[loss].errors, rtol=1e-5, atol=1e-7)
    assert not np.allclose(read["l1"].errors, read["l2"].errors)  # each its own loss, not a copy


def test_the_environment_switches_it_on_and_prune_drops_other_sources(classifiers, images, tmp_path, monkeypatch):
    clf = classifiers["pixel"]
    monkeypatch.setenv(ENVIRONMENT, str(tmp_path / "cache"))
    score_dataset(clf, images, even_plan(5), progress=False)
    assert score_dataset(clf, images, even_plan(5), progress=False).meta["cached_samples"] == 3 * 5
    old = tmp_path / "cache" / "0123456789abcdef"
    old.mkdir()
    cache = ErrorCache.from_environment()
    assert cache.prune() == [old] and not old.exists() and cache.folder.exists()
    monkeypatch.delenv(ENVIRONMENT)
    assert ErrorCache.from_environment() is None
    assert score_dataset(clf, images, even_plan(5), progress=False).meta["cached_samples"] == 0
