"""The analyses and figures behind error_variance, adaptive_evaluation, quickstart and calibration: each analysis
against a small hand computation, each figure drawn from a tiny synthetic table."""
import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dclib.calibration import Calibrator
from dclib.decide import decide
from dclib.experiments import ErrorSet, classification_table
from dclib.figures.adaptive_evaluation import accuracy_cost_figure
from dclib.figures.calibration import reliability_figure
from dclib.figures.error_variance import accuracy_by_timesteps_figure, error_curves_figure
from dclib.figures.quickstart import predictions_figure
from dclib.prompts import Conditionings
from dclib.schedules import parse_schedule
from dclib.timestep_analysis import paired_error_curves
from fakes import replay


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def error_set_for_curves(class_idx, label):
    """One image scored on 2 timesteps x 2 eps (t-major, as even_plan(2, T, n_trials=2) orders them)."""
    rng = np.random.default_rng(0)
    errors = 1 + rng.random((1, len(class_idx), 4))
    return ErrorSet(errors, np.array([[250, 250, 750, 750]]), np.array([label]), np.array(class_idx), ["a"])


def test_paired_error_curves_pick_the_true_class_and_the_closest_wrong_one():
    s = error_set_for_curves([0, 1, 2], label=1)
    s.errors[0, 2] -= 0.5  # class 2 has the lowest mean error, class 0 the highest
    s.errors[0, 0] += 1.0
    curves = paired_error_curves(s, 0, n_timesteps=2, n_noises=2)
    np.testing.assert_array_equal(curves.timesteps, [250, 750])
    np.testing.assert_array_equal(curves.true_errors, [[s.errors[0, 1, 0], s.errors[0, 1, 1]],
                                                       [s.errors[0, 1, 2], s.errors[0, 1, 3]]])
    np.testing.assert_array_equal(curves.other_errors, s.errors[0, 2].reshape(2, 2))
    assert (curves.true_class, curves.other_class) == (1, 2)


def test_paired_error_curves_skip_other_prompts_of_the_true_class():
    # a prompt CSV may give a class several conditionings: conditionings 0 and 1 both stand for class 0
    s = error_set_for_curves([0, 0, 1], label=0)
    s.errors[0, 1] -= 1.0  # the best conditioning is the true class's second prompt: not "the closest wrong"
    curves = paired_error_curves(s, 0, n_timesteps=2, n_noises=2)
    np.testing.assert_array_equal(curves.true_errors, s.errors[0, 0].reshape(2, 2))  # its first conditioning
    np.testing.assert_array_equal(curves.other_errors, s.errors[0, 2].reshape(2, 2))
    assert (curves.true_class, curves.other_class) == (0, 1)


def classifications(matrices):
    conds = Conditionings((0, 1, 2), (0, 1, 2), ("cat", "dog", "car"))
    return [decide(replay(m)[0], conds, parse_schedule("2"), 1000) for m in matrices], conds


def test_classification_table_by_hand():
    matrices = [np.array([[0.3, 0.5], [0.1, 0.3], [0.6, 0.6]]),   # means 0.4, 0.2, 0.6: dog
                np.array([[0.2, 0.2], [0.5, 0.7], [0.3, 0.3]])]   # means 0.2, 0.6, 0.3: cat
    results, conds = classifications(matrices)
    table = classification_table(results, {"id": ["a", "b"], "label": [1, 2]}, conds.class_names)
    assert list(table.columns) == ["id", "label", "prediction", "probability", "evaluations"]
    assert table.id.tolist() == ["a", "b"]
    assert table.label.tolist() == ["dog", "car"]
    assert table.prediction.tolist() == ["dog", "cat"]
    expected = [np.exp(-0.2) / np.exp(-np.array([0.4, 0.2, 0.6])).sum(),  # eq. 6 at dclib's T = 1
                np.exp(-0.2) / np.exp(-np.array([0.2, 0.6, 0.3])).sum()]
    np.testing.assert_allclose(table.probability, expected)
    assert table.evaluations.tolist() == [6, 6]  # 3 classes x 2 timesteps


def test_error_curves_figure():
    s = error_set_for_curves([0, 1, 2], label=1)
    curves = paired_error_curves(s, 0, n_timesteps=2, n_noises=2)
    fig = error_curves_figure(np.zeros((8, 8)), curves, ["cat", "dog", "car"])
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    image, errors, difference = fig.axes
    assert image.get_title() == "dog" and len(image.images) == 1
    assert len(errors.lines) == 4  # true and other class, per eps
    assert len(difference.lines) == 3  # a difference per eps, and the zero line
    other = "cat" if curves.other_class == 0 else "car"
    assert difference.get_title() == f"difference: {other} - dog"
    np.testing.assert_array_equal(difference.lines[0].get_ydata(), curves.other_errors[:, 0] - curves.true_errors[:, 0])


def test_accuracy_by_timesteps_figure():
    accuracy = pd.DataFrame({"setting": ["shared", "shared", "independent", "independent"], "timesteps": [1, 2, 1, 2],
                             "accuracy": [0.5, 0.75, 0.25, 0.5], "ci_low": [0.1, 0.3, 0.0, 0.1],
                             "ci_high": [0.9, 1.0, 0.8, 0.9]})
    fig = accuracy_by_timesteps_figure(accuracy, [1, 2], "4 images")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and ax.get_title() == "4 images"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["shared", "independent"]
    np.testing.assert_allclose(np.asarray(ax.lines[0].get_ydata(), float), [50, 75])


def test_accuracy_cost_figure():
    table = pd.DataFrame({"method": ["Algorithm 1, 2 timesteps", "Algorithm 1, 4 timesteps", "Algorithm 2, 2,1:2,4",
                                     "paired pruning, paired:4", "contrastive top-2 + Algorithm 1, 4"],
                          "accuracy": [0.4, 0.6, 0.6, 0.5, 0.7], "ci_low": [0.1, 0.2, 0.2, 0.1, 0.3],
                          "ci_high": [0.8, 0.9, 0.9, 0.9, 1.0], "evaluations_per_image": [20, 40, 25, 22, 8]})
    fig = accuracy_cost_figure(table, "cost")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.containers) == 4 and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Algorithm 1", "Algorithm 2", "paired pruning",
                                                                   "contrastive top"]
    np.testing.assert_allclose(np.asarray(ax.lines[0].get_xdata(), float), [20, 40])


def test_predictions_figure():
    results, conds = classifications([np.array([[0.3, 0.5], [0.1, 0.3], [0.6, 0.6]]),
                                      np.array([[0.2, 0.2], [0.5, 0.7], [0.3, 0.3]])])
    fig = predictions_figure([np.zeros((8, 8)), np.ones((8, 8))], [1, 2], results, conds.class_names)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    top, bottom = fig.axes[:2], fig.axes[2:]
    assert top[0].get_title() == "label dog\npred dog" and top[1].get_title() == "label car\npred cat"
    assert matplotlib.colors.same_color(top[1].title.get_color(), "red")  # the wrong one
    assert all(len(ax.patches) == 3 for ax in bottom)  # a bar per class
    np.testing.assert_allclose([p.get_height() for p in bottom[0].patches], [0.2, 0.0, 0.4])


def test_reliability_figure():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    errors = 1 + 0.01 * rng.random((30, 3))
    errors[np.arange(30), labels] -= 0.005
    cals = {m: Calibrator(m).fit(errors, labels) for m in ("temperature", "vector")}
    fig = reliability_figure({m: c.reliability(errors, labels) for m, c in cals.items()}, "30 images")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["eq. 6 vs temperature scaling, 30 images",
                                                  "eq. 6 vs vector scaling, 30 images"]


def test_effective_robustness_figure_puts_each_model_at_its_probit_accuracies():
    from dclib.figures.supervised_robustness import effective_robustness_figure
    from dclib.robustness import line_reference
    from dclib.stats import probit

    acc = {("LR", "clean"): 0.9, ("LR", "adversarial"): 0.3, ("CNN", "clean"): 0.95, ("CNN", "adversarial"): 0.4,
           ("MLP", "clean"): 0.8, ("MLP", "adversarial"): 0.2, ("Diffusion Classifier", "clean"): 0.85,
           ("Diffusion Classifier", "adversarial"): 0.6}
    results = pd.DataFrame([{"method": m, "set": s, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.05,
                             "n": 20, "classes": 10} for (m, s), a in acc.items()])
    line = line_reference(results, "adversarial")
    fig = effective_robustness_figure(results, pd.Series(line), 20)
    ax = fig.axes[0]
    dots = ax.collections[0].get_offsets()
    np.testing.assert_allclose(sorted(dots[:, 0]), sorted(probit(np.array([0.9, 0.95, 0.8]), 20)))
    star = ax.containers[0].lines[0]
    np.testing.assert_allclose(np.asarray(star.get_xdata(), float), [probit(0.85, 20)])
    np.testing.assert_allclose(np.asarray(star.get_ydata(), float), [probit(0.6, 20)])
    fit = ax.lines[0]
    x, y = np.asarray(fit.get_xdata(), float), np.asarray(fit.get_ydata(), float)
    np.testing.assert_allclose(y, line["slope"] * x + line["intercept"])
    assert ax.get_ylabel() == "probit(accuracy on the adversarial split)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "Diffusion Classifier (99.5% CI)"
    # without n_images, the sets' own size (20) clips accuracies of 0 and 1
    again = effective_robustness_figure(results, pd.Series(line), None).axes[0]
    np.testing.assert_allclose(again.collections[0].get_offsets(), dots)
