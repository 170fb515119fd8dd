"""Timestep weighting learned from a few labels."""
import numpy as np
import pytest

from dclib.errors import InputError
from dclib.experiments import ErrorSet
from dclib.plan import even_timesteps
from dclib.weighting import TimestepWeights, bin_errors


def test_bin_errors_by_hand():
    errors = np.array([[[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 2.0, 2.0]]])  # 1 image, 2 conditionings, 4 samples
    timesteps = np.array([[100, 300, 600, 900]])
    out = bin_errors(errors, timesteps, np.array([0, 1]), np.array([0, 500, 1000]))
    assert out.tolist() == [[[2.0, 6.0], [2.0, 2.0]]]
    # two conditionings of one class: the one with the lower overall mean stands for the class
    out = bin_errors(errors, timesteps, np.array([0, 0]), np.array([0, 500, 1000]))
    assert out.tolist() == [[[2.0, 2.0]]]
    with pytest.raises(InputError, match="bin"):
        bin_errors(errors, timesteps, np.array([0, 1]), np.linspace(0, 1000, 9))


def synthetic(n, rng, n_classes=4):
    """Only the low-t quarter of the timesteps tells the classes apart; the rest is loud noise."""
    ts = np.array(even_timesteps(40))
    labels = rng.integers(0, n_classes, n)
    errors = 0.5 + rng.normal(0, 0.02, (n, n_classes, 40))
    errors[:, :, ts >= 250] += rng.normal(0, 0.3, (n, n_classes, int((ts >= 250).sum())))
    errors[np.arange(n), labels, :] -= np.where(ts < 250, 0.03, 0.0)
    return ErrorSet(errors, np.tile(ts, (n, 1)), labels, np.arange(n_classes), [str(i) for i in range(n)])


def test_learned_weights_find_the_informative_timesteps_and_help_on_held_out_images():
    rng = np.random.default_rng(0)
    fit_set, test_set = synthetic(200, rng), synthetic(400, rng)
    w = TimestepWeights(n_bins=4).fit(fit_set)
    assert w.normalized.argmax() == 0 and w.normalized[0] > 3 * w.normalized[1:].max()
    learned = w.correct(test_set).mean()
    uniform = w.correct(test_set, np.ones(4)).mean()
    assert learned > uniform + 0.2
    # uniform weights over equal-sized bins are Algorithm 1
    assert np.array_equal(w.predictions(test_set, np.ones(4)), test_set.predictions())


def test_fewer_timesteps_than_bins_fits_fewer_bins_and_says_so():
    from dclib.weighting import judge_on_held_out, usable_bins

    rng = np.random.default_rng(0)
    ts = np.array(even_timesteps(2))  # [250, 750]
    n = 12
    labels = rng.integers(0, 3, n)
    errors = 0.5 + rng.normal(0, 0.01, (n, 3, 2))
    errors[np.arange(n), labels] -= 0.05
    es = ErrorSet(errors, np.tile(ts, (n, 1)), labels, np.arange(3), [str(i) for i in range(n)])
    assert usable_bins(es.timesteps, 3, 1000) == 2 and usable_bins(es.timesteps, 2, 1000) == 2
    assert usable_bins(np.tile(even_timesteps(10), (2, 1)), 5, 1000) == 5  # enough timesteps: as asked
    assert usable_bins(np.tile(even_timesteps(28), (1, 1)), 28, 1000) < 28  # even spacing leaves a bin empty
    weights, table, right = judge_on_held_out(es, 6, 3, 1000)  # the old code stopped: "use fewer bins"
    assert weights.n_bins == 2 and len(weights.weights) == 2
    assert "n_bins = 3" in weights.note and "2 timesteps" in weights.note and "\n" not in weights.note
    assert list(table.n) == [6, 6] and all(len(r) == 6 for r in right.values())
    assert judge_on_held_out(es, 6, 2, 1000)[0].note == ""
