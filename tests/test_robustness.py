"""Effective robustness (Fig. 6 analogue): the probit line, the chance floor and the adversarial split."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dclib import robustness
from dclib import stats as dstats
from dclib.data.shifts import shifted_test_split


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
