"""The analyses and figures of the Table 1 (zero-shot), Table 3 (compositional) and Table 10 (version sweep)
pages: each analysis against a small hand computation, each figure drawn from a tiny synthetic table."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from datasets import Dataset
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PIL import Image

from dclib import compositional as comp
from dclib import even_plan
from dclib.error_cache import ErrorCache
from dclib.prompts import Conditionings
from dclib import zero_shot_baselines as zsb
from dclib.figures import compositional as comp_figures
from dclib.figures import version_sweep as version_figures
from dclib.figures import zero_shot_table as zst_figures


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def zero_shot_rows(task, accuracies, n=4, classes=3):
    """A zero_shot_comparison table for one task: {method: accuracy}, every method zero-shot but UNet features."""
    return pd.DataFrame([{"task": task, "method": m, "zero_shot": m != "UNet features (LR)", "accuracy": a,
                          "ci_low": max(a - 0.2, 0), "ci_high": min(a + 0.2, 1), "n": n, "classes": classes}
                         for m, a in accuracies.items()])


# --- dclib.zero_shot_baselines -------------------------------------------------------------------------------------

def opened_task(name, labels, rows=(("a red circle", "red", 0), ("a blue circle", "blue", 1)), images=None):
    data = Dataset.from_dict({"label": list(labels)} if images is None else {"image": images, "label": list(labels)})
    return zsb.ZeroShotTask(name, data, list(rows), 2, None)


def test_zero_shot_comparisons_runs_each_task_in_order_and_keys_correctness_by_task(monkeypatch):
    calls = []

    def fake(task, classifier, model, contrastive, **options):
        calls.append((task.name, classifier, model, contrastive, options))
        return (zero_shot_rows(task.name, {"Diffusion Classifier": 0.5, "contrastive": 0.25}),
                {"Diffusion Classifier": np.array([task.name == "shape"])})

    monkeypatch.setattr(zsb, "zero_shot_comparison", fake)
    tasks = [opened_task("colour", [0]), opened_task("shape", [1])]
    table, right = zsb.zero_shot_comparisons("clf", tasks, "m", None, n_images=3, seed=7, progress=False)
    assert [c[0] for c in calls] == ["colour", "shape"]
    assert calls[0][1:] == ("clf", "m", None, {"n_images": 3, "seed": 7, "progress": False})
    assert table.task.tolist() == ["colour", "colour", "shape", "shape"] and table.index.tolist() == [0, 1, 2, 3]
    assert list(right) == [("colour", "Diffusion Classifier"), ("shape", "Diffusion Classifier")]
    assert right["shape", "Diffusion Classifier"].tolist() == [True]


def test_zero_shot_comparison_scores_the_first_images_against_their_own_labels(monkeypatch):
    """Every baseline replaced by a fake that predicts class 0: correctness is prediction == the task's label, on
    the task's first n images; the features baseline is skipped without labelled images."""
    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)) for _ in range(5)]
    task = opened_task("colour", [0, 1, 0, 1, 1], images=images)
    schedules = []
    monkeypatch.setattr(zsb, "evaluate_dataset", lambda clf, data, **kw: schedules.append(kw["schedule"]) or type(
        "S", (), {"predictions": np.zeros(len(data), int)})())
    plans = []  # Algorithm 1 goes through score_dataset (and the error cache)
    monkeypatch.setattr(zsb, "score_dataset", lambda clf, data, plan, conds, **kw: plans.append(plan) or type(
        "E", (), {"predictions": lambda self: np.zeros(len(data), int)})())

    class Fixed:
        def predict(self, x):
            return np.zeros(len(x), int)

    generated = np.zeros((2, 8, 8, 3), np.uint8)
    monkeypatch.setattr(zsb, "synthetic_data_baseline", lambda *a, **k: (Fixed(), generated, None))
    clf = type("C", (), {"adapter": type("A", (), {"device": "cpu", "num_train_timesteps": 1000})()})()
    table, right = zsb.zero_shot_comparison(task, clf, "m", None, n_images=4, progress=False)
    assert table.method.tolist() == ["Diffusion Classifier", "synthetic data (CNN)"]
    assert right["Diffusion Classifier"].tolist() == [True, False, True, False]
    assert table.accuracy.tolist() == [0.5, 0.5] and (table.n == 4).all() and (table.classes == 2).all()
    table, _ = zsb.zero_shot_comparison(task._replace(schedule="5,1:25,250"), clf, "m", None, n_images=None,
                                        schedule="10", progress=False)
    # the task's own schedule; None: every image
    assert plans == [even_plan(50)] and schedules == ["5,1:25,250"] and (table.n == 5).all()


def test_algorithm_1_through_the_error_cache_predicts_as_classify_does(classifiers, tmp_path):
    """Table 1's Diffusion Classifier column on a flat schedule: score_dataset's predictions (read back by the
    per-timestep probe) equal classify's, image by image."""
    clf = classifiers["sd"]
    rng = np.random.RandomState(3)
    images = [Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(6)]
    rows = [("a cat", "cat", 0), ("a dog", "dog", 1), ("a bird", "bird", 2)]
    task = zsb.ZeroShotTask("animals", Dataset.from_dict({"image": images, "label": [0, 1, 2, 0, 1, 2]}), rows, 3,
                            None)
    assert zsb.flat_plan("7") == even_plan(7) and zsb.flat_plan("5,1:25,250") is None
    assert zsb.flat_plan("paired:20") is None
    plan = zsb.flat_plan("7")
    via_cache = zsb.score_dataset(clf, task.test, plan, Conditionings.from_rows(rows), seed=2, progress=False,
                                  cache=ErrorCache(tmp_path)).predictions()
    classified = zsb.evaluate_dataset(clf, task.test, progress=False, prompts=rows, schedule="7", seed=2).predictions
    assert np.array_equal(via_cache, np.asarray(classified))


def test_predict_in_chunks_equals_one_call_and_reads_every_image_once():
    data = Dataset.from_dict({"image": list(range(7)), "label": [0] * 7})
    calls = []
    out = zsb.predict_in_chunks(data, lambda images: calls.append(list(images)) or [2 * i for i in images], chunk=3)
    assert out.tolist() == [0, 2, 4, 6, 8, 10, 12] and calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_dataset_task_opens_like_every_page_and_draws_labelled_images_from_its_train_split(classifiers, tmp_path):
    from datasets import ClassLabel, DatasetDict, Features
    from datasets import Image as ImageFeature

    from dclib.errors import InputError
    from dclib.runs import stratified_order
    from dclib.testing import save_image_folder, save_prompt_csv

    folder, csv = save_image_folder(tmp_path / "pets"), save_prompt_csv(tmp_path / "pets.csv")
    specs = zsb.zero_shot_task_specs(["shape"], dataset=folder, prompts=csv)
    assert specs == [{"dataset": folder, "prompts": csv, "template": "a photo of a {}.", "split": None,
                      "train_split": None}]
    assert zsb.zero_shot_task_specs(["shape"]) == ["shape"]
    task, = zsb.open_zero_shot_tasks(classifiers["sd"], ["shape"], dataset=folder, prompts=csv)
    assert task.name == folder and task.labelled is None and len(task.test) == 6 and task.n_classes == 3
    assert sorted({r[1] for r in task.rows}) == ["car", "cat", "dog"]  # the CSV gives some classes two prompts
    # an image folder has one split: naming it as the train split would train on the test images
    leaky = zsb.open_zero_shot_task(classifiers["sd"], {"dataset": folder, "train_split": "train"})
    with pytest.raises(InputError, match="is the split the task tests on"):
        leaky.labelled(2)
    rng = np.random.RandomState(0)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["cat", "dog", "car"])})
    split = lambda n, offset: Dataset.from_dict({  # noqa: E731
        "image": [Image.fromarray((rng.rand(8, 8, 3) * 255).astype(np.uint8)) for _ in range(n)],
        "label": [(i + offset) % 3 for i in range(n)]}, features=features)
    saved = str(tmp_path / "saved")
    DatasetDict({"train": split(9, 0), "test": split(4, 1)}).save_to_disk(saved)
    spec = {"dataset": saved, "name": "pets", "split": "test", "train_split": "train",
            "template": "a photo of a {}, a type of pet."}
    with_train = zsb.open_zero_shot_task(classifiers["sd"], spec, seed=1)
    assert with_train.name == "pets" and len(with_train.test) == 4
    images, labels = with_train.labelled(5)
    order = stratified_order([i % 3 for i in range(9)], 1)[:5]  # a class-stratified sample drawn with the seed
    assert labels.tolist() == [i % 3 for i in order] and len(images) == 5 and set(labels[:3]) == {0, 1, 2}


def test_bad_zero_shot_tasks_are_one_line_errors(classifiers):
    from dclib.errors import InputError

    with pytest.raises(InputError, match="a dict with 'dataset'"):
        zsb.open_zero_shot_task(classifiers["sd"], {"datset": "x"})
    with pytest.raises(InputError, match="needs a text-to-image model"):
        zsb.open_zero_shot_task(classifiers["dit"], {"dataset": "embedded:digits-test"})


def test_paired_correctness_pairs_diffusion_classifier_with_a_baseline_per_task():
    a, b, c, d = (np.array(x) for x in ([True, False], [False, False], [True], [True]))
    right = {("shape", "Diffusion Classifier"): a, ("shape", "synthetic data (CNN)"): b,
             ("colour", "Diffusion Classifier"): c, ("colour", "synthetic data (CNN)"): d}
    pairs = zsb.paired_correctness(right, "synthetic data (CNN)", "synthetic data")
    assert list(pairs) == ["shape: DC vs synthetic data", "colour: DC vs synthetic data",
                           "pooled over the tasks (DC vs synthetic data)"]
    assert pairs["shape: DC vs synthetic data"][0] is a and pairs["shape: DC vs synthetic data"][1] is b
    pooled = pairs["pooled over the tasks (DC vs synthetic data)"]  # the tasks' images one after the other
    assert pooled[0].tolist() == [True, False, True] and pooled[1].tolist() == [False, False, True]
    assert list(zsb.paired_correctness(right, "synthetic data (CNN)"))[:2] == [
        "shape: DC vs synthetic data (CNN)", "colour: DC vs synthetic data (CNN)"]
    # chance per task (1 / classes), and over the pooled images the mean weighted by each task's images
    tasks = [zsb.ZeroShotTask("shape", None, [], 4, None), zsb.ZeroShotTask("colour", None, [], 2, None)]
    rates = zsb.chance_rates(tasks, pairs)
    assert rates["shape: DC vs synthetic data"] == 0.25 and rates["colour: DC vs synthetic data"] == 0.5
    assert rates["pooled over the tasks (DC vs synthetic data)"] == pytest.approx((2 * 0.25 + 0.5) / 3)


def test_accuracy_sentence_lists_methods_alphabetically_within_tasks_in_table_order():
    table = pd.concat([zero_shot_rows("shape", {"synthetic": 0.5, "Diffusion Classifier": 0.75}),
                       zero_shot_rows("colour", {"synthetic": 1.0, "Diffusion Classifier": 0.25})])
    assert zsb.accuracy_sentence(table) == ("shape: Diffusion Classifier 75%, synthetic 50%; "
                                            "colour: Diffusion Classifier 25%, synthetic 100%.")


def test_single_timestep_by_task_equals_scoring_each_task_by_hand(classifiers):
    from dclib import Conditionings, Plan, even_timesteps
    from dclib.experiments import score_dataset
    from dclib.timestep_analysis import single_timestep_accuracy

    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)) for _ in range(3)]
    data = Dataset.from_dict({"image": images, "label": [0, 1, 0]})
    rows = [("a red circle", "red", 0), ("a blue circle", "blue", 1)]
    clf = classifiers["sd"]
    tasks = [zsb.ZeroShotTask(name, data, rows, 2, None) for name in ("colour", "clutter")]
    table = zsb.single_timestep_by_task(clf, tasks, n_timesteps=2, n_images=2, seed=3)
    assert table.task.tolist() == ["colour"] * 2 + ["clutter"] * 2 and table.t.tolist() == even_timesteps(2) * 2
    assert (table.chance == 0.5).all()
    errors = score_dataset(clf, data, Plan.from_timesteps(even_timesteps(2)), Conditionings.from_rows(rows),
                           n_images=2, seed=3, progress=False)
    expected = single_timestep_accuracy(errors)
    for task in ("colour", "clutter"):
        got = table[table.task == task].reset_index(drop=True)[list(expected.columns)]
        pd.testing.assert_frame_equal(got, expected)


def test_describe_best_timesteps_picks_the_first_maximum_of_each_task():
    table = pd.DataFrame({"task": ["shape", "shape", "shape", "colour", "colour"], "t": [50, 150, 250, 50, 150],
                          "accuracy": [0.25, 0.75, 0.75, 1.0, 0.5], "ci_low": [0.0, 0.5, 0.5, 0.9, 0.1],
                          "ci_high": [0.5, 0.9, 0.9, 1.0, 0.9], "chance": [1 / 3] * 3 + [0.25] * 2})
    assert zsb.describe_best_timesteps(table) == (
        "shape: best single timestep t = 150: 75% (95% interval 50%-90%; chance 33%)\n"
        "colour: best single timestep t = 50: 100% (95% interval 90%-100%; chance 25%)")


def test_attribute_separations_skips_tasks_that_are_not_single_attribute(monkeypatch):
    seen = []
    monkeypatch.setattr(zsb, "attribute_separation",
                        lambda clf, task, n: seen.append((clf, task, n)) or np.full(3, len(task), float))
    tasks = ["shape", "clutter", opened_task("position", [0]), opened_task("./pets", [0])]
    separation = zsb.attribute_separations("clf", tasks, 5)
    assert list(separation) == ["shape", "position"] and seen == [("clf", "shape", 5), ("clf", "position", 5)]
    np.testing.assert_array_equal(separation["position"], [8.0, 8.0, 8.0])


def test_describe_separations_reads_the_middle_and_last_timestep():
    separation = {"shape": np.array([8.0, 4.0, 2.0, 0.5]), "position": np.array([9.0, 6.25, 3.0, 1.0])}
    assert zsb.describe_separations(separation) == zsb.describe_separations(separation, "shape")
    assert zsb.describe_separations({}).startswith("No embedded single-object task")
    assert zsb.describe_separations(separation, "shape") == (
        "shape: median d' 2.0 at t = 2, 0.50 at t = 3\n"
        "position: median d' 3.0 at t = 2, 1.00 at t = 3; 2.0x the shape curve")


# --- dclib.compositional -------------------------------------------------------------------------------------------

def outcome_table(text, swaps, splits=None):
    return pd.DataFrame({"id": range(len(text)), "swap_type": swaps, "template_split": splits or [None] * len(text),
                         "text": text, "image": [False] * len(text), "group": [False] * len(text)})


def test_compare_on_pairs_scores_both_models_on_the_same_items(classifiers):
    class Similarity:  # the right caption of each image scores highest: every text outcome right
        def __init__(self):
            self.calls = []

        def scores(self, images, captions):
            self.calls.append(list(captions))
            return np.eye(2)

    rng = np.random.RandomState(0)
    images = [Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)) for _ in range(4)]
    data = Dataset.from_dict({"image_0": images[:2], "image_1": images[2:], "caption_0": ["a b", "c d"],
                              "caption_1": ["b a", "d c"], "swap_type": ["object", "relation"]})
    clip = Similarity()
    plan = comp.even_plan(2, 1000)
    outcomes = comp.compare_on_pairs(classifiers["sd"], clip, data, plan, seed=1, progress=False)
    assert list(outcomes) == ["Diffusion Classifier", "contrastive"]
    assert clip.calls == [["a b", "b a"], ["c d", "d c"]] and outcomes["contrastive"].text.all()
    by_hand = comp.winoground_table(lambda ims, caps, item: comp.diffusion_match_scores(
        classifiers["sd"], ims, caps, plan, seed=1, item_id=item), data, progress=False)
    pd.testing.assert_frame_equal(outcomes["Diffusion Classifier"], by_hand)


def test_summarize_models_groups_by_template_split_only_when_the_items_have_one():
    outcomes = {"A": outcome_table([True, False, True, True], ["object", "object", "both", "both"],
                                   ["train", "heldout", "train", "heldout"]),
                "B": outcome_table([False, False, True, False], ["object", "object", "both", "both"],
                                   ["train", "heldout", "train", "heldout"])}
    split = comp.summarize_models(outcomes, Dataset.from_dict({"template_split": [], "swap_type": []}))
    assert split.index.names == ["model", "template_split", "swap_type"]
    assert split.loc[("A", "train", "object"), "text"] == 100.0 and split.loc[("B", "all", "all"), "text"] == 25.0
    plain = comp.summarize_models(outcomes, Dataset.from_dict({"swap_type": []}))
    assert plain.index.names == ["model", "swap_type"]
    assert plain.loc[("A", "object"), "text"] == 50.0 and plain.loc[("A", "all"), "text"] == 75.0


def test_text_score_pairs_and_sentence_follow_the_swap_types_present():
    outcomes = {"Diffusion Classifier": outcome_table([True, True, False], ["relation", "object", "object"]),
                "contrastive": outcome_table([False, True, True], ["relation", "object", "object"])}
    pairs = comp.text_score_pairs(outcomes)
    assert list(pairs) == ["object swaps", "relation swaps"]  # the claim's order; "both" is absent
    assert pairs["object swaps"][0].tolist() == [True, False] and pairs["relation swaps"][1].tolist() == [False]
    assert comp.describe_text_scores(outcomes) == (
        "Text score, Diffusion Classifier vs contrastive: relation 100.0% vs 0.0%, object 50.0% vs 100.0%.")


# --- figures -------------------------------------------------------------------------------------------------------

def test_accuracy_bars_draws_one_bar_group_per_method_and_the_chance_ticks():
    table = pd.concat([zero_shot_rows(t, {"Diffusion Classifier": 0.5, "contrastive": 0.75, "UNet features (LR)": 1.0})
                       for t in ("shape", "colour")])
    fig = zst_figures.accuracy_bars(table, "title")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(len(c) == 2 for c in bars)  # methods x tasks
    assert [t.get_text() for t in ax.get_xticklabels()] == ["shape", "colour"]
    labels = ax.get_legend_handles_labels()[1]
    assert "UNet features (LR) (not zero-shot)" in labels and "chance" in labels
    assert ax.get_title() == "title"


def test_single_timestep_curves_draws_a_line_and_a_chance_level_per_task():
    table = pd.DataFrame({"task": ["shape"] * 3 + ["colour"] * 3, "t": [50, 150, 250] * 2,
                          "accuracy": [0.3, 0.6, 0.4, 0.5, 0.9, 0.7], "ci_low": [0.1] * 6, "ci_high": [0.95] * 6,
                          "chance": [0.25] * 3 + [0.5] * 3})
    fig = zst_figures.single_timestep_curves(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 4 and len(fig.axes[0].collections) == 2  # 2 curves + 2 chance lines, 2 bands


def test_separation_curves_draws_one_line_per_task_and_the_unit_line():
    fig = zst_figures.separation_curves({"shape": np.linspace(5, 0.1, 10), "position": np.linspace(9, 2, 10)})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].lines) == 3 and fig.axes[0].get_yscale() == "log"


def test_shared_noise_grid_puts_each_prompt_in_its_column():
    pictures = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    fig = zst_figures.shared_noise_grid(pictures, np.array([0, 0, 1, 1, 2, 2]), ["left", "right", "top"], 2, "t")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["left", "right", "top"]  # row 0 carries the titles
    assert all(len(ax.images) == 1 for ax in fig.axes)


def test_text_score_bars_has_a_panel_per_template_split_or_one():
    swaps = ["object", "relation", "object", "relation"]
    split = {m: outcome_table([True, False, True, True], swaps, ["train", "train", "heldout", "heldout"])
             for m in ("Diffusion Classifier", "contrastive")}
    fig = comp_figures.text_score_bars(split, "pairs", "suptitle")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["train caption templates", "heldout caption templates"]
    assert all(len(ax.containers) == 2 and len(ax.lines) == 1 for ax in fig.axes)  # two models, chance
    plain = {m: outcome_table([True, False, True, True], swaps) for m in ("Diffusion Classifier", "contrastive")}
    fig = comp_figures.text_score_bars(plain, "pairs")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "pairs"
    assert [p.get_height() for p in fig.axes[0].containers[0]] == [100.0, 50.0]


def test_accuracy_by_version_draws_one_series_per_run():
    table = pd.DataFrame({"run": ["checkpoints of one run"] * 3 + ["independent run (seed 1, 10 scenes)"],
                          "version": [1, 2, 3, 4], "training step": [1000, 2000, 4000, 2000],
                          "accuracy": [0.3, 0.5, 0.6, 0.4], "ci_low": [0.1, 0.3, 0.4, 0.2],
                          "ci_high": [0.5, 0.7, 0.8, 0.6]})
    fig = version_figures.accuracy_by_version(table, "training step")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and ax.get_xscale() == "log"
    assert ax.get_legend_handles_labels()[1] == list(dict.fromkeys(table.run))
    assert version_figures.accuracy_by_version(table, "version").axes[0].get_xscale() == "linear"
