"""Error tensors over datasets, the analyses on them, and the statistics the book reports."""
import numpy as np
import pytest
from datasets import Dataset
from PIL import Image

from dclib import Plan, ScoreOptions, even_plan
from dclib.experiments import ErrorSet, cached, compare_settings, score_dataset
from dclib.stats import clopper_pearson, summarize
from dclib.timestep_analysis import separation_by_timestep
from dclib.verdicts import mcnemar


@pytest.fixture(scope="module")
def tiny_dataset():
    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(8, 8) * 255).astype(np.uint8)) for _ in range(4)]
    return Dataset.from_dict({"image": images, "label": [0, 1, 2, 3], "id": [f"img{i}" for i in range(4)]})


def test_subsets_of_an_error_tensor_equal_direct_runs(classifiers, tiny_dataset):
    clf = classifiers["pixel"]
    full = score_dataset(clf, tiny_dataset, Plan.from_timesteps([100, 500, 900]), progress=False)
    assert full.errors.shape == (4, 10, 3)
    one = score_dataset(clf, tiny_dataset, Plan.from_timesteps([500]), progress=False)
    np.testing.assert_allclose(full.errors[..., [1]], one.errors, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(full.predictions([1]), one.predictions())
    mask = np.zeros((4, 3), bool)
    mask[:, 1] = True
    np.testing.assert_array_equal(full.predictions(mask), one.predictions())
    # the classifier's own Algorithm 1 agrees with the tensor's argmin
    direct = [clf.classify(row["image"], image_id=row["id"], schedule=1).prediction  # Even 1 = {500}
              for row in tiny_dataset]
    np.testing.assert_array_equal(direct, one.predictions())


def test_independent_noise_differs_from_shared(classifiers, tiny_dataset):
    clf = classifiers["pixel"]
    shared = score_dataset(clf, tiny_dataset, even_plan(3), progress=False)
    independent = score_dataset(clf, tiny_dataset, even_plan(3), shared_noise=False, progress=False)
    assert not np.allclose(shared.errors, independent.errors)
    # the first conditioning's noise is keyed differently too, so no column is identical
    assert not np.allclose(shared.errors[:, 0], independent.errors[:, 0])


def test_save_load_and_cache(classifiers, tiny_dataset, tmp_path):
    clf = classifiers["pixel"]
    calls = []

    def compute():
        calls.append(1)
        return score_dataset(clf, tiny_dataset, even_plan(2), progress=False)

    a = cached(tmp_path / "e.npz", compute)
    b = cached(tmp_path / "e.npz", compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(a.errors, b.errors)
    assert b.ids == a.ids and (b.labels == a.labels).all()


def test_compare_settings_and_paired_test(classifiers, tiny_dataset):
    clf = classifiers["pixel"]
    table, sets = compare_settings(clf, tiny_dataset, {"l2": {}, "l1": {"options": ScoreOptions(loss="l1")}},
                                   even_plan(2))
    assert list(table.setting) == ["l2", "l1"] and (table.n == 4).all()
    assert (table.ci_low <= table.accuracy).all() and (table.accuracy <= table.ci_high).all()
    d = mcnemar("l2 vs l2", sets["l2"], sets["l2"])
    assert d.counts == {"only_better_right": 0, "only_worse_right": 0} and d.p_value == 1.0


@pytest.mark.parametrize("shared_noise", [True, False])
def test_losses_scored_in_one_pass_equal_separate_runs(classifiers, tiny_dataset, monkeypatch, shared_noise):
    clf = classifiers["pixel"]
    plan = even_plan(3)
    calls = []
    forward = clf.adapter.model_output  # every denoiser call goes through it
    monkeypatch.setattr(clf.adapter, "model_output", lambda *a, **k: calls.append(1) or forward(*a, **k))
    settings = {name: {"options": ScoreOptions(loss=loss), "shared_noise": shared_noise}
                for name, loss in [("squared", "l2"), ("absolute", "l1"), ("huber", "huber")]}
    table, sets = compare_settings(clf, tiny_dataset, settings, plan)
    one_pass = len(calls)
    for name, kwargs in settings.items():
        alone = score_dataset(clf, tiny_dataset, plan, progress=False, **kwargs)
        np.testing.assert_allclose(sets[name].errors, alone.errors, rtol=1e-6)
        assert sets[name].meta["options"]["loss"] == kwargs["options"].loss
    assert one_pass > 0 and len(calls) == 4 * one_pass  # the three separate runs called the denoiser 3x as often
    assert list(table.setting) == list(settings)


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(0, 10)
    assert low == 0 and high == pytest.approx(0.3084971, abs=1e-6)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.1870860, abs=1e-6) and high == pytest.approx(0.8129140, abs=1e-6)
    s = summarize([0, 1, 1, 2], [0, 1, 2, 2])
    assert s.accuracy == 0.75 and s.mean_per_class_accuracy == pytest.approx((1 + 1 + 0.5) / 3)


def test_error_set_select_keeps_rows_aligned():
    n = 5
    errors = np.arange(n * 2 * 3, dtype=float).reshape(n, 2, 3)
    es = ErrorSet(errors, np.arange(n * 3).reshape(n, 3), np.arange(n) % 2, np.array([0, 1]), [f"i{i}" for i in range(n)])
    for rows, picked in [(slice(1, 3), [1, 2]), ([4, 0], [4, 0]), (range(2), [0, 1])]:
        sub = es.select(rows)
        assert sub.ids == [f"i{i}" for i in picked] and sub.n_images == len(picked)
        assert np.array_equal(sub.errors, errors[picked]) and np.array_equal(sub.labels, es.labels[picked])
        assert np.array_equal(sub.timesteps, es.timesteps[picked]) and np.array_equal(sub.class_idx, es.class_idx)


def test_separation_by_timestep_is_the_ideal_observers_d_prime():
    import torch

    from fakes import LinearAdapter

    adapter = LinearAdapter([0.0])
    a, b = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    b[0, 0, 0, :2] = 3.0  # ||a - b|| = sqrt(18)
    b[1] = 0.5  # ||a - b|| = 0.5 * 4 = 2
    d = separation_by_timestep(adapter, a, b)
    abar = adapter.alphas_cumprod.double()
    snr_sqrt = (abar / (1 - abar)).sqrt().numpy()
    assert d.shape == (2, 1000)
    np.testing.assert_allclose(d[0], np.sqrt(18) * snr_sqrt, rtol=1e-5)
    np.testing.assert_allclose(d[1], 2 * snr_sqrt, rtol=1e-5)
    assert np.all(np.diff(d[1]) < 0)  # noisier timesteps hide the difference more
    assert separation_by_timestep(adapter, a, a).max() == 0


# ------------------------------------------------------------------------- open_experiment: any model, any data
@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    from dclib.testing import save_image_folder, save_prompt_csv

    root = tmp_path_factory.mktemp("user-data")
    return save_image_folder(root / "images"), save_prompt_csv(root / "prompts.csv")


def test_open_experiment_reads_the_dataset_as_evaluate_does(tiny_models, user_data):
    """A text model on an image folder without prompts: one prompt per subfolder from the template, labels in
    the folder's sorted order, ids = paths inside the folder (what `evaluate` keys the noise by)."""
    from dclib.experiments import open_experiment
    from dclib.runs import open_dataset

    folder, _ = user_data
    clf, data, conds = open_experiment(tiny_models["sd"], folder, template="a photo of a {}, a kind of thing.",
                                       shuffle_seed=None)  # the dataset's own order, on request
    assert conds.values == ("a photo of a car, a kind of thing.", "a photo of a cat, a kind of thing.",
                            "a photo of a dog, a kind of thing.")
    assert conds.class_names == ("car", "cat", "dog")
    assert data["label"] == [0, 0, 1, 1, 2, 2] and data["id"] == open_dataset(folder).ids
    assert data[3]["id"] == "cat/cat-1.png" and data[3]["image"].size == (40, 40)
    assert [r["label"] for r in data.select([5, 0])] == [2, 0]
    errors = score_dataset(clf, data, even_plan(2), conds, progress=False)
    assert errors.errors.shape == (6, 3, 2) and list(errors.labels) == data["label"]


def test_open_experiment_matches_labels_to_a_prompt_csv_by_name(tiny_models, user_data):
    from dclib.experiments import open_experiment

    folder, csv = user_data
    _, data, conds = open_experiment(tiny_models["sd"], folder, csv, n_images=4, shuffle_seed=None)
    assert conds.class_names == ("dog", "cat", "car") and len(conds) == 6  # two prompts per class
    assert len(data) == 4 and data["label"] == [2, 2, 1, 1]  # car -> 2, cat -> 1 in the CSV's numbering
    # by default the first images are a seeded sample stratified by class: the folder is stored class by class
    _, data, _ = open_experiment(tiny_models["sd"], folder, csv, n_images=3)
    assert sorted(data["label"]) == [0, 1, 2]


def test_open_experiment_shuffle_seed_draws_a_random_order_of_the_whole_split(tiny_models, user_data):
    """With shuffle_seed, n_images keeps the first rows of a seeded order stratified by class (a class-balanced
    random subset even of a split stored class by class); labels and ids follow their rows, so each image keeps
    the noise its id keys."""
    from dclib.errors import InputError
    from dclib.experiments import open_experiment
    from dclib.runs import stratified_order

    folder, _ = user_data
    clf, full, conds = open_experiment(tiny_models["sd"], folder, shuffle_seed=None)
    order = stratified_order(full["label"], 3)
    assert sorted(full["label"][r] for r in order[:3]) == [0, 1, 2]
    _, data, _ = open_experiment(clf, folder, n_images=4, shuffle_seed=3)
    assert data.rows == order[:4] and order != sorted(order)
    assert data["id"] == [full["id"][r] for r in order[:4]] and data["label"] == [full["label"][r] for r in order[:4]]
    _, again, _ = open_experiment(clf, folder, n_images=2, shuffle_seed=3)
    assert again.rows == order[:2]  # a smaller subset is the start of the same random order
    a = score_dataset(clf, data, even_plan(2), conds, progress=False)
    b = score_dataset(clf, full, even_plan(2), conds, progress=False)
    np.testing.assert_array_equal(a.errors, b.errors[order[:4]])  # the same images, scored as in the dataset's order
    for bad in (-1, 1.5, "0", True):
        with pytest.raises(InputError, match="shuffle_seed must be"):
            open_experiment(clf, folder, shuffle_seed=bad)


def test_open_experiment_class_conditional_and_bad_input(tiny_models, user_data):
    from dclib.errors import InputError
    from dclib.experiments import open_experiment

    folder, _ = user_data
    # the folder's names are none of the DiT's classes: refused, unless label i is class i by request
    with pytest.raises(InputError, match="do not match by name"):
        open_experiment(tiny_models["dit"], folder)
    _, data, conds = open_experiment(tiny_models["dit"], folder, label_mapping="by-index", shuffle_seed=None)
    assert conds.n_classes == 10 and data["label"] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(InputError, match="exactly one"):
        open_experiment(tiny_models["sd"], folder, template="a photo")
    with pytest.raises(InputError, match="dataset folder not found"):
        open_experiment(tiny_models["sd"], "./no/such/folder")
    with pytest.raises(InputError, match="do not match by name"):
        open_experiment(tiny_models["sd"], folder, ["a photo of a red thing", "a photo of a blue thing"])


def test_noise_variance_summary_and_accuracy_by_sample_count_by_hand():
    from dclib.timestep_analysis import accuracy_by_sample_count, noise_variance_summary

    # one image, classes (0, 1, 1: two prompts for class 1), 2 timesteps x 2 eps; true class 1
    errors = np.array([[[1.0, 3.0, 2.0, 2.0],    # class 0
                        [0.0, 2.0, 1.0, 1.0],    # class 1 (true): the same eps pattern, 1 lower
                        [5.0, 5.0, 5.0, 5.0]]])  # class 1, second prompt: ignored as "the true class"
    es = ErrorSet(errors, np.array([[0, 0, 500, 500]]), np.array([1]), np.array([0, 1, 1]), ["a"])
    row = noise_variance_summary(es, 2, 2).iloc[0]
    assert row["std of error over eps"] == pytest.approx(0.5)  # std(0, 2) = 1, std(1, 1) = 0
    assert row["std of paired difference over eps"] == 0.0  # class 0 - true is 1 for every eps
    table, right = accuracy_by_sample_count({"x": es}, 4, [1, 4])
    assert list(table.timesteps) == [1, 4] and list(table.setting) == ["x", "x"]
    assert right["x", 4].tolist() == [True] and table.accuracy[1] == 1.0


def test_single_timestep_accuracy_and_attribute_separation(classifiers):
    from dclib.timestep_analysis import attribute_separation, single_timestep_accuracy

    # two images, two classes, timesteps 100 and 900: right at t = 100 only
    errors = np.array([[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 2.0]]])
    es = ErrorSet(errors, np.array([[100, 900], [100, 900]]), np.array([0, 1]), np.array([0, 1]), ["a", "b"])
    table = single_timestep_accuracy(es)
    assert table.t.tolist() == [100, 900] and table.accuracy.tolist() == [1.0, 0.0]
    curve = attribute_separation(classifiers["sd"], "colour", 2)
    assert curve.shape == (classifiers["sd"].adapter.num_train_timesteps,)
    assert np.all(np.diff(curve) <= 1e-6)  # more noise, less separation
