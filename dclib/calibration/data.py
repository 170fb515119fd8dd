"""Labelled class errors (what :meth:`Calibrator.fit` takes) from in-memory sources: classifications or an
ErrorSet. Run folders and saved ErrorSets are read by :mod:`dclib.calibration_data`, above this package."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..decide import class_errors as _class_errors
from ..decide import mean_errors as _mean_errors
from ..errors import InputError


@dataclass
class CalibrationData:
    """A labelled set of class errors: what :meth:`Calibrator.fit` takes."""

    class_errors: np.ndarray  # [n, K]
    labels: np.ndarray  # [n]
    predictions: np.ndarray | None = None  # the classifier's predictions (differ from argmax only with pruning)
    class_names: list[str] | None = None
    source: dict = field(default_factory=dict)


def class_errors_from_classifications(results: Sequence) -> np.ndarray:
    """Class errors [n, K] of a list of :class:`dclib.decide.Classification` (their ``class_errors``: paired
    means for pruned conditionings, inf for classes without a candidate)."""
    if not len(results):
        raise InputError("no classification results")
    rows = [np.asarray(r.class_errors, dtype=np.float64) for r in results]
    if len({len(r) for r in rows}) > 1:
        raise InputError("the results have different numbers of classes")
    return np.stack(rows)


def class_errors_from_error_set(error_set, columns=None, n_classes: int | None = None) -> CalibrationData:
    """Class errors of an :class:`dclib.experiments.ErrorSet` (Algorithm 1 on all its samples, or on the sample
    indices ``columns``), with its labels. NaN entries (unscored) are skipped as in the decision."""
    errors = np.asarray(error_set.errors, dtype=np.float64)
    if columns is not None:
        errors = errors[..., list(columns)]
    n, c, s = errors.shape
    class_idx = np.asarray(error_set.class_idx, dtype=np.int64)
    labels = np.asarray(error_set.labels, dtype=np.int64)
    k = n_classes if n_classes is not None else int(max(class_idx.max(), labels.max() if n else 0)) + 1
    means = _mean_errors(errors.reshape(n * c, s)).reshape(n, c)
    cls = np.stack([_class_errors(m, class_idx, k) for m in means]) if n else np.zeros((0, k))
    return CalibrationData(cls, labels, None, None, {"kind": "error_set", **{
        key: str(v) for key, v in (error_set.meta or {}).items() if key in ("source", "seed", "noise")}})
