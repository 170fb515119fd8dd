"""Labelled calibration sets from disk: an ``evaluate`` run folder or a saved ErrorSet ``.npz``.

This reads run folders, so it sits above both :mod:`dclib.calibration` (which never imports :mod:`dclib.runs`)
and :mod:`dclib.runs`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import runs
from .calibration import SOURCE_KEYS, CalibrationData, class_errors_from_error_set
from .decide import class_errors as _class_errors
from .errors import InputError
from .experiments import ErrorSet


def class_errors_from_run(run_dir: str | os.PathLike) -> CalibrationData:
    """Class errors of the finished, labelled images of an ``evaluate`` run folder, from the stored
    per-conditioning mean errors (paired estimates for pruned conditionings) and the run's conditioning classes."""
    config = runs.read_config(run_dir)
    df = runs.load_results(run_dir)
    class_names = [str(v) for v in config.get("class_names") or []]
    class_idx = config.get("conditioning_classes")
    if class_idx is None or not class_names:
        raise InputError(f"{run_dir}: config.json lacks conditioning_classes / class_names")
    if len(df):
        df = df[(df["status"] == "ok") & df["label"].notna()]
    if len(df) == 0:
        raise InputError(f"{run_dir} has no finished, labelled images to calibrate on")
    errors = np.stack([_class_errors(np.asarray(m, dtype=np.float64), class_idx, len(class_names))
                       for m in df["mean_errors"]])
    source = {"kind": "run", "run_dir": str(Path(run_dir).expanduser().absolute()),
              **{k: config.get(k) for k in SOURCE_KEYS}, "dataset": config.get("dataset")}
    return CalibrationData(errors, df["label"].to_numpy(dtype=np.int64), df["prediction"].to_numpy(dtype=np.int64),
                           class_names, source)


def load_calibration_data(path: str | os.PathLike) -> CalibrationData:
    """An ``evaluate`` run folder, or an ErrorSet ``.npz`` (``ErrorSet.save`` / ``experiments.cached``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        return class_errors_from_run(p)
    if p.is_file() and p.suffix == ".npz":
        try:
            error_set = ErrorSet.load(p)
        except Exception as err:
            raise InputError(f"cannot read saved errors {p}: {err}") from None
        return class_errors_from_error_set(error_set)
    raise InputError(f"{path} is neither an evaluate run folder nor a saved ErrorSet (.npz)")
