"""The analysis and figures the loss-function, objective and timestep-weighting pages call: verdict inputs and the
held-out comparison against small hand computations, each figure drawn from a tiny synthetic table."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dclib.experiments import ErrorSet  # noqa: E402
from dclib.figures.loss_functions import accuracy_by_loss  # noqa: E402
from dclib.figures.objective import accuracy_by_objective  # noqa: E402
from dclib.figures.timestep_weighting import weights_and_accuracy  # noqa: E402
from dclib.claims import verdict_inputs  # noqa: E402
from dclib.stats import clopper_pearson  # noqa: E402
from dclib.weighting import LEARNED, UNIFORM, TimestepWeights, judge_on_held_out  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def comparison_table(settings, accuracies, n=20, **columns):
    """A compare_settings-like table: accuracy with a made-up interval of +-0.1 (clipped)."""
    acc = np.array(accuracies)
    return pd.DataFrame({**columns, "setting": settings, "accuracy": acc,
                         "ci_low": np.clip(acc - 0.1, 0, 1), "ci_high": np.clip(acc + 0.1, 0, 1), "n": n})


# ---- dclib.claims.verdict_inputs

def test_verdict_inputs_by_hand():
    table = comparison_table(["l2", "l1", "huber"], [0.6, 0.55, 0.6125], n=8, model="embedded:zeroshot")
    sets = {"l2": "A", "l1": "B", "huber": "C"}
    got = verdict_inputs(table, sets, "Huber vs squared l2", ("huber", "l2"), "embedded:zeroshot-test", 10)
    assert got == {"outcomes": {"Huber vs squared l2": ("C", "A")},
                   "setting": "embedded:zeroshot, 8 images of embedded:zeroshot-test, 10 timesteps",
                   "ours": "Accuracy: l2 60.0%, l1 55.0%, huber 61.3%."}
    # the page's own image count wins over the table's
    assert verdict_inputs(table, sets, "x", ("l2", "l1"), "d", 2, n_images=30)["setting"] == \
        "embedded:zeroshot, 30 images of d, 2 timesteps"


def test_verdict_inputs_take_every_setting_in_table_order_and_feed_a_claim():
    from dclib.claims import CLAIMS

    table = comparison_table(["uniform", "vlb", "uniform+vlb"], [0.5, 0.25, 0.4], n=4, model="m", variance="learned")
    right = {"uniform": np.array([1, 1, 0, 0], bool), "vlb": np.array([1, 0, 0, 0], bool),
             "uniform+vlb": np.array([1, 1, 0, 0], bool)}
    got = verdict_inputs(table, right, "uniform l2 vs VLB", ("uniform", "vlb"), "d", 3)
    assert got["ours"] == "Accuracy: uniform 50.0%, vlb 25.0%, uniform+vlb 40.0%."
    assert got["outcomes"]["uniform l2 vs VLB"][0] is right["uniform"]
    verdict = CLAIMS["objective_vlb"].evaluate(**got)
    assert verdict.setting == "m, 4 images of d, 3 timesteps" and verdict.ours == got["ours"]


# ---- dclib.weighting.judge_on_held_out

def two_bin_errors():
    """6 images, 2 classes, 4 samples at t = 100, 300, 600, 900 (bins [0, 500), [500, 1000)). In the low bin the
    true class's error is lower by 0.1; in the high bin the other class's is, by 0.2 on images 0, 1 and by 0.05 on
    the rest."""
    labels = np.array([0, 1, 0, 1, 0, 1])
    errors = np.full((6, 2, 4), 1.0)
    for i, y in enumerate(labels):
        errors[i, y, :2] -= 0.1                         # low bin: true class lower by 0.1
        errors[i, 1 - y, 2:] -= 0.2 if i < 2 else 0.05  # high bin: the other class lower
    ts = np.tile([100, 300, 600, 900], (6, 1))
    return ErrorSet(errors, ts, labels, np.array([0, 1]), [str(i) for i in range(6)])


def test_judge_on_held_out_by_hand():
    errors = two_bin_errors()
    # uniform: mean error of the true class minus the other's = (-0.1 + 0.05) / 2 < 0 on images 2..5: all right;
    # (-0.1 + 0.2) / 2 > 0 on images 0, 1: both wrong
    weights, table, right = judge_on_held_out(errors, 2, 2, 1000)
    assert isinstance(weights, TimestepWeights) and weights.n_bins == 2 and weights.num_train_timesteps == 1000
    assert list(right) == [UNIFORM, LEARNED] and table.weighting.tolist() == [UNIFORM, LEARNED]
    assert right[UNIFORM].tolist() == [True] * 4          # held out: images 2..5
    assert right[LEARNED].tolist() == [True] * 4          # fitted on 0, 1 the low bin weighs more: still right
    assert weights.normalized[0] > weights.normalized[1]  # images 0, 1 need the low bin to win
    assert table.n.tolist() == [4, 4] and table.accuracy.tolist() == [1.0, 1.0]
    low, high = clopper_pearson(4, 4)
    assert table.ci_low.tolist() == [low, low] and table.ci_high.tolist() == [high, high]
    # the same as fitting and judging by hand
    by_hand = TimestepWeights(n_bins=2, num_train_timesteps=1000).fit(errors.select(slice(0, 2)))
    np.testing.assert_array_equal(by_hand.weights, weights.weights)


def test_judge_on_held_out_counts_the_held_out_images_only():
    errors = two_bin_errors()
    flipped = ErrorSet(errors.errors[::-1].copy(), errors.timesteps, errors.labels[::-1].copy(), errors.class_idx,
                       errors.ids[::-1])  # images 0, 1 (uniform gets them wrong) are now held out last
    _, table, right = judge_on_held_out(flipped, 2, 2, 1000)
    assert len(right[UNIFORM]) == 4 and right[UNIFORM].tolist() == [True, True, False, False]
    assert table.accuracy[0] == 0.5 and table.n[0] == 4


# ---- dclib.figures

def test_accuracy_by_loss_draws_one_panel_per_kind():
    runs = [comparison_table(["l2", "l1", "huber"], [0.6, 0.5, 0.6], n=8, model=m).assign(kind=k)
            for k, m in (("zero-shot", "sd"), ("supervised", "dit"))]
    fig = accuracy_by_loss(pd.concat(runs, ignore_index=True))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, title in zip(fig.axes, ["zero-shot: sd (8 images)", "supervised: dit (8 images)"]):
        assert ax.get_title() == title
        assert [p.get_height() for p in ax.patches] == pytest.approx([60, 50, 60])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["l2", "l1", "huber"]
    assert fig.axes[0].get_ylabel() == "accuracy (%)"
    assert fig.axes[0].get_ylim() == pytest.approx((30, 75))  # 100 * (min ci_low) - 10, 100 * (max ci_high) + 5


def test_accuracy_by_objective_draws_one_bar_per_row():
    table = pd.concat([comparison_table(["uniform", "elbo"], [0.7, 0.4], model="a", variance="fixed"),
                       comparison_table(["uniform", "vlb", "uniform+vlb"], [0.8, 0.5, 0.75], model="b",
                                        variance="learned")], ignore_index=True)
    fig = accuracy_by_objective(table, 20)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "Timestep weighting and objective (20 images)"
    assert [p.get_height() for p in ax.patches] == pytest.approx([70, 40, 80, 50, 75])
    assert [t.get_text() for t in ax.get_xticklabels()][1] == "elbo\n(fixed var.)"
    colors = [p.get_facecolor() for p in ax.patches]
    assert colors[0] == colors[1] != colors[2] == colors[4]


def test_weights_and_accuracy_draws_the_weights_and_the_two_accuracies():
    weights = TimestepWeights(n_bins=4, num_train_timesteps=1000, weights=np.array([2.0, 1.0, 0.5, 0.5]))
    table = pd.DataFrame({"weighting": [UNIFORM, LEARNED], "accuracy": [0.5, 0.75], "ci_low": [0.3, 0.5],
                          "ci_high": [0.7, 0.9], "n": 20})
    fig = weights_and_accuracy(weights, table, 10, 20)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert [p.get_height() for p in left.patches] == pytest.approx([2.0, 1.0, 0.5, 0.5])  # mean 1
    assert [p.get_x() + p.get_width() / 2 for p in left.patches] == pytest.approx([125, 375, 625, 875])
    assert len(left.lines) == 1 and left.get_title() == "weights fitted on 10 labelled images"
    assert [p.get_height() for p in right.patches] == pytest.approx([50, 75])
    assert right.get_title() == "20 other images" and right.get_ylim() == pytest.approx((20, 100))
