"""The calibration page's comparison: the uncalibrated posterior at dclib's and at the paper's temperature
against temperature and vector scaling fitted on other labelled images, judged on held-out ones, and the split
of the page's scored images into those two sets (:func:`split_fit_test`)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..decide import Classification, posterior
from ..errors import InputError
from .calibrator import Calibrator
from .data import CalibrationData, class_errors_from_error_set
from .logits import per_element_temperature, uncalibrated_probabilities
from .metrics import calibration_metrics

MIN_SPLIT = 2  # images on each side of a split clipped to a small set

COLUMNS = ["probabilities", "T (per element)", "T (paper)", "accuracy", "mean_confidence", "ece", "nll", "brier"]


class FitTestSplit(NamedTuple):
    """The calibration page's two disjoint labelled sets, how many images each holds, and ``note``: one line
    saying the set was split as it is because it held fewer than n_fit + n_test images ("" otherwise)."""

    fit: CalibrationData
    test: CalibrationData
    n_fit: int
    n_test: int
    note: str


def fit_test_sizes(n_available: int, n_fit: int, n_test: int) -> tuple[int, int, str]:
    """(images to fit on, other images to judge on, note) out of ``n_available`` images: ``n_fit`` and
    ``n_test`` when the set holds both, else the set split as it is, in the asked proportion with at least
    :data:`MIN_SPLIT` images on each side, and a one-line note saying so. Fewer than 2 * MIN_SPLIT images: a
    one-line :class:`InputError` with the set's size and what the page needs."""
    if n_fit < 1 or n_test < 1:
        raise InputError(f"n_fit and n_test must each be at least 1, got {n_fit} and {n_test}")
    asked = n_fit + n_test
    if n_available >= asked:
        return n_fit, n_test, ""
    if n_available < 2 * MIN_SPLIT:
        raise InputError(f"the dataset has {n_available} images; this page needs n_fit + n_test = {asked} (at "
                         f"least {2 * MIN_SPLIT}: {MIN_SPLIT} to fit on and {MIN_SPLIT} others to judge on)")
    fit = min(max(round(n_available * n_fit / asked), MIN_SPLIT), n_available - MIN_SPLIT)
    return fit, n_available - fit, (f"The dataset has {n_available} images, fewer than n_fit + n_test = {asked}: "
                                    f"fitting on the first {fit} and judging on the other {n_available - fit}.")


def split_fit_test(error_set, n_fit: int, n_test: int) -> FitTestSplit:
    """The first ``n_fit`` images of an :class:`dclib.experiments.ErrorSet` to fit the calibrators on and the
    next ``n_test`` to judge them on, as labelled class errors; a set with fewer images is split as it is
    (:func:`fit_test_sizes`), and the returned ``note`` says so."""
    n_fit, n_test, note = fit_test_sizes(error_set.n_images, n_fit, n_test)
    return FitTestSplit(class_errors_from_error_set(error_set.select(slice(0, n_fit))),
                        class_errors_from_error_set(error_set.select(slice(n_fit, n_fit + n_test))),
                        n_fit, n_test, note)


def compare_calibrations(fit: CalibrationData, test: CalibrationData, n_elements: int
                         ) -> tuple[pd.DataFrame, dict[str, Calibrator]]:
    """One row per way of turning errors into probabilities, with its metrics on ``test``: dclib's default
    (per-element T = 1), the paper's eq. 6 (summed error, T = 1), then temperature and vector scaling fitted on
    ``fit``. ``n_elements``: elements each error averages over (:func:`noise_elements`); the paper's temperature
    is that times dclib's. Returns (table, the fitted calibrators by method)."""
    eq6 = per_element_temperature(1.0, n_elements)
    calibrators = {m: Calibrator(m, n_elements=n_elements).fit(fit.class_errors, fit.labels)
                   for m in ("temperature", "vector")}
    rows = [{"probabilities": name, "T (per element)": t,
             **calibration_metrics(uncalibrated_probabilities(test.class_errors, t), test.labels)}
            for name, t in {"dclib default, T = 1": 1.0, "paper eq. 6, paper T = 1": eq6}.items()]
    for name, cal in calibrators.items():  # vector scaling has a scale per class, not one temperature
        t = cal.temperature if name == "temperature" else np.nan
        rows.append({"probabilities": f"{name} scaling", "T (per element)": t,
                     **cal.evaluate(test.class_errors, test.labels)["after"]})
    table = pd.DataFrame(rows)
    table.insert(2, "T (paper)", n_elements * table["T (per element)"])
    return table[COLUMNS], calibrators


def describe_comparison(table: pd.DataFrame, n_classes: int) -> str:
    """The page's sentence on a :func:`compare_calibrations` table: how (mis)calibrated eq. 6 is, what dclib's
    default gives, and the fitted temperature in the paper's units."""
    dclib_t1, paper_t1, fitted = (table.iloc[i] for i in range(3))
    direction = "under" if paper_t1["mean_confidence"] < paper_t1["accuracy"] else "over"
    return (f"At the paper's T = 1 (eq. 6, summed error) the mean confidence is {paper_t1['mean_confidence']:.2f} "
            f"at accuracy {paper_t1['accuracy']:.1%} ({direction}-confident, ECE {paper_t1['ece']:.2f}); "
            f"dclib's per-element T = 1 gives {dclib_t1['mean_confidence']:.2f} "
            f"(uniform: {1 / n_classes:.2f}); the fitted temperature is paper T = "
            f"{fitted['T (paper)']:.3g} (ECE {fitted['ece']:.2f}).")


def posterior_table(result: Classification, calibrator: Calibrator, n_elements: int) -> pd.DataFrame:
    """Per class of one classification: samples seen (fewer for classes an adaptive schedule pruned), the paired
    mean error, and the probability at dclib's T = 1, at the paper's eq. 6 and calibrated."""
    return pd.DataFrame({"class": result.conditionings.class_names, "samples seen": result.n_samples,
                         "paired mean error": result.class_errors, "p, dclib T = 1": result.probabilities,
                         "p, eq. 6": posterior(result.class_errors, per_element_temperature(1.0, n_elements)),
                         "calibrated p": calibrator.transform(result.class_errors)})
