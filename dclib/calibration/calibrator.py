"""The :class:`Calibrator` (fit, apply, check) and its JSON file; which run settings it remembers."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..decide import softmax
from ..errors import InputError
from ..settings import ClassifySettings
from .fit import fit_temperature, fit_vector
from .logits import format_temperature, logits_from_errors, paper_temperature, uncalibrated_probabilities
from .metrics import DEFAULT_BINS, Reliability, calibration_metrics, reliability

FORMAT = "dclib-calibration/1"
METHODS = ("temperature", "vector")
#: run config keys that define the error scale; a calibrator remembers them and classify warns on a mismatch.
SOURCE_KEYS = ("model", *ClassifySettings.METHOD_KEYS)


def _as_errors(class_errors, labels=None) -> tuple[np.ndarray, np.ndarray | None]:
    e = np.asarray(class_errors, dtype=np.float64)
    if e.ndim != 2:
        raise InputError(f"class errors must be a matrix [n_images, n_classes]; got shape {e.shape}")
    if np.isnan(e).any():
        raise InputError("class errors contain NaN (a class without errors is inf, see dclib.decide.class_errors)")
    if labels is None:
        return e, None
    y = np.asarray(labels)
    if y.shape != (len(e),):
        raise InputError(f"{len(e)} rows of class errors but labels of shape {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= e.shape[1]):
        raise InputError(f"labels must be class indices in [0, {e.shape[1]}); got {sorted(set(y.tolist()))[:10]}")
    return e, y


@dataclass
class Calibrator:
    """Maps class errors [n, K] to calibrated probabilities (see :mod:`dclib.calibration` for the method).

    >>> cal = Calibrator("temperature").fit(class_errors, labels)   # labelled calibration set
    >>> cal.transform(result.class_errors)                           # one Classification -> [K]
    >>> cal.save("calibration.json"); Calibrator.load("calibration.json", n_classes=10)
    """

    method: str = "temperature"
    normalize: bool = True
    l2: float = 0.01
    n_bins: int = DEFAULT_BINS
    #: label smoothing of the temperature fit; None: 1 / (n + 2) (Laplace's rule of succession). With every
    #: calibration image right, the plain NLL keeps falling as T -> 0 and would promise certainty; smoothed,
    #: the fit stops near a confidence of (n + 1) / (n + 2), and with some errors among many images it barely
    #: differs from the plain fit. 0 gives the plain maximum-likelihood temperature.
    smoothing: float | None = None
    temperature: float | None = None
    scale: np.ndarray | None = None  # vector scaling: per-class multiplier of the logits (exp(u) / temperature)
    bias: np.ndarray | None = None  # vector scaling: per-class bias
    n_classes: int | None = None
    class_names: list[str] | None = None
    fitted_on: dict = field(default_factory=dict)
    #: d, the number of elements each error averages over (:func:`noise_elements`). Optional: the fit does not
    #: use it; with it, temperatures are also reported in the paper's units (summed error, eq. 6).
    n_elements: int | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown calibration method {self.method!r}; choose {' or '.join(METHODS)}")
        if self.l2 < 0:
            raise InputError("the L2 weight must be >= 0")
        if self.n_elements is not None:
            if int(self.n_elements) != self.n_elements or self.n_elements < 1:
                raise InputError(f"n_elements must be a positive integer; got {self.n_elements!r}")
            self.n_elements = int(self.n_elements)

    @property
    def fitted(self) -> bool:
        return self.temperature is not None

    @property
    def paper_temperature(self) -> float | None:
        """The fitted temperature in the paper's units (``n_elements * temperature``); None without
        ``n_elements``. For vector scaling, the temperature its per-class scales start from."""
        return None if self.temperature is None else self._in_paper_units(self.temperature)

    # -------------------------------------------------------------------------------------- fit / apply
    def fit(self, class_errors, labels, predictions=None, class_names: Sequence[str] | None = None,
            source: dict | None = None, uncalibrated_temperature: float = 1.0) -> "Calibrator":
        """Fit on a labelled calibration set: ``class_errors`` [n, K] (e.g. from
        :func:`dclib.calibration_data.class_errors_from_run`), ``labels`` [n]. ``predictions`` (the classifier's
        own, when pruning may have made them differ from ``argmax``) are used for ECE only. Records before/after
        metrics in ``fitted_on``; "before" is the uncalibrated posterior softmax(-error /
        ``uncalibrated_temperature``), per element (the default 1, what ``classify`` reports, is the paper's
        ``T = n_elements``; eq. 6 is ``1 / n_elements``)."""
        e, y = _as_errors(class_errors, labels)
        if len(e) == 0:
            raise InputError("no calibration images (no finished, labelled rows)")
        if class_names is not None and len(class_names) != e.shape[1]:
            raise InputError(f"{len(class_names)} class names for {e.shape[1]} classes")
        missing = ~np.isfinite(e[np.arange(len(e)), y])
        if missing.any():
            raise InputError(f"{int(missing.sum())} calibration images are labelled with a class that has no "
                             f"candidate conditioning (e.g. label {int(y[missing][0])}); calibrate on the classes "
                             "that were scored")
        z = logits_from_errors(e, self.normalize)
        self.n_classes = int(e.shape[1])
        self.class_names = [str(v) for v in class_names] if class_names is not None else None
        smoothing = 1.0 / (len(y) + 2) if self.smoothing is None else float(self.smoothing)
        self.temperature, at_bound = fit_temperature(z, y, smoothing=smoothing)
        self.scale = self.bias = None
        if self.method == "vector":
            self.scale, self.bias = fit_vector(z, y, self.temperature, self.l2)
        before = calibration_metrics(uncalibrated_probabilities(e, uncalibrated_temperature), y, self.n_bins,
                                     predictions)
        after = calibration_metrics(self.transform(e), y, self.n_bins, predictions)
        self.fitted_on = {"n": int(len(e)), "class_counts": np.bincount(y, minlength=self.n_classes).tolist(),
                          "uncalibrated_temperature": float(uncalibrated_temperature),
                          "uncalibrated_paper_temperature": self._in_paper_units(uncalibrated_temperature),
                          "at_bound": at_bound,
                          "before": before, "after": after, **({"source": source} if source else {})}
        return self

    def _in_paper_units(self, temperature: float) -> float | None:
        """A per-element temperature in the paper's units; None without ``n_elements``."""
        return None if self.n_elements is None else paper_temperature(temperature, self.n_elements)

    def logits(self, class_errors) -> np.ndarray:
        """Calibrated logits ([n, K] or [K]); ``-inf`` for classes without a candidate conditioning."""
        if not self.fitted:
            raise InputError("the calibrator is not fitted: call fit() or load() first")
        e = np.asarray(class_errors, dtype=np.float64)
        if e.shape[-1] != self.n_classes:
            raise InputError(f"the calibrator was fitted on {self.n_classes} classes; got class errors for "
                             f"{e.shape[-1]}")
        z = logits_from_errors(e, self.normalize)
        if self.method == "temperature":
            return z / self.temperature
        finite = np.isfinite(z)
        return np.where(finite, np.where(finite, z, 0.0) * self.scale + self.bias, -np.inf)

    def transform(self, class_errors) -> np.ndarray:
        """Calibrated probabilities for class errors [n, K] (-> [n, K]) or one image's [K] (-> [K]). Pruned
        classes use their paired estimate and get nonzero probability; classes with error inf get 0."""
        e = np.asarray(class_errors, dtype=np.float64)
        p = softmax(self.logits(e))
        return p[0] if e.ndim == 1 else p

    def evaluate(self, class_errors, labels, predictions=None, uncalibrated_temperature: float = 1.0) -> dict:
        """{"before": metrics, "after": metrics} on a (held-out) labelled set."""
        e, y = _as_errors(class_errors, labels)
        return {"before": calibration_metrics(uncalibrated_probabilities(e, uncalibrated_temperature), y,
                                              self.n_bins, predictions),
                "after": calibration_metrics(self.transform(e), y, self.n_bins, predictions)}

    def reliability(self, class_errors, labels, predictions=None, uncalibrated_temperature: float = 1.0
                    ) -> tuple[Reliability, Reliability]:
        """(before, after) reliability data, for :func:`plot_reliability`; the labels name the temperatures, in
        both units when ``n_elements`` is known."""
        e, y = _as_errors(class_errors, labels)
        before = reliability(uncalibrated_probabilities(e, uncalibrated_temperature), y, self.n_bins, predictions,
                             label=f"uncalibrated ({format_temperature(uncalibrated_temperature, self.n_elements)})")
        fitted = f" ({format_temperature(self.temperature, self.n_elements)})" if self.method == "temperature" else ""
        after = reliability(self.transform(e), y, self.n_bins, predictions, label=f"{self.method} scaling{fitted}")
        return before, after

    def check(self, n_classes: int, class_names: Sequence[str] | None = None, source: str = "the calibrator") -> None:
        """Refuse (InputError) a calibrator fitted for another number of classes or other class names."""
        if self.n_classes != int(n_classes):
            raise InputError(f"{source} was fitted on {self.n_classes} classes, but the model has {n_classes} "
                             "candidate classes; fit a calibrator for this model and these classes "
                             "(python -m dclib calibrate)")
        if self.class_names is not None and class_names is not None and \
                [str(v) for v in class_names] != list(self.class_names):
            diff = next(i for i, (a, b) in enumerate(zip(self.class_names, class_names)) if a != str(b))
            raise InputError(f"{source} was fitted on other classes (class {diff} is {self.class_names[diff]!r}, "
                             f"here {str(class_names[diff])!r})")

    # -------------------------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        if not self.fitted:
            raise InputError("the calibrator is not fitted")
        return {"format": FORMAT, "method": self.method, "normalize": self.normalize, "l2": self.l2,
                "n_bins": self.n_bins, "smoothing": self.smoothing, "temperature": self.temperature,
                # the same temperature in the paper's units (written for readers; load recomputes it)
                "n_elements": self.n_elements, "paper_temperature": self.paper_temperature,
                "scale": None if self.scale is None else [float(v) for v in self.scale],
                "bias": None if self.bias is None else [float(v) for v in self.bias],
                "n_classes": self.n_classes, "class_names": self.class_names, "fitted_on": self.fitted_on}

    def save(self, path: str | os.PathLike) -> None:
        """Write a small JSON file (atomically)."""
        path = Path(path)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(json_safe(self.to_dict()), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> "Calibrator":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{source} is not a dclib calibration file (expected format {FORMAT!r})")
        try:
            cal = cls(method=d["method"], normalize=bool(d["normalize"]), l2=float(d.get("l2", 0.01)),
                      n_bins=int(d.get("n_bins", DEFAULT_BINS)), smoothing=d.get("smoothing"),
                      temperature=float(d["temperature"]),
                      scale=None if d.get("scale") is None else np.asarray(d["scale"], dtype=np.float64),
                      bias=None if d.get("bias") is None else np.asarray(d["bias"], dtype=np.float64),
                      n_classes=int(d["n_classes"]), class_names=d.get("class_names"),
                      fitted_on=d.get("fitted_on") or {}, n_elements=d.get("n_elements"))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{source} is malformed: {type(err).__name__} {err}") from None
        if not (cal.temperature > 0 and math.isfinite(cal.temperature)):
            raise InputError(f"{source}: the temperature must be a positive number")
        if cal.method == "vector" and (cal.scale is None or cal.bias is None or len(cal.scale) != cal.n_classes
                                       or len(cal.bias) != cal.n_classes):
            raise InputError(f"{source}: vector scaling needs a scale and a bias per class ({cal.n_classes})")
        if cal.class_names is not None and len(cal.class_names) != cal.n_classes:
            raise InputError(f"{source}: {len(cal.class_names)} class names for {cal.n_classes} classes")
        return cal

    @classmethod
    def load(cls, path: str | os.PathLike, n_classes: int | None = None,
             class_names: Sequence[str] | None = None) -> "Calibrator":
        """Read a file written by :meth:`save`; with ``n_classes`` (and ``class_names``), refuse one fitted for
        other classes (InputError)."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"calibration file not found: {path}") from None
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read calibration file {path}: {err}") from None
        cal = cls.from_dict(d, source=str(path))
        if n_classes is not None:
            cal.check(n_classes, class_names, source=f"calibration file {path}")
        return cal


def json_safe(value):
    """JSON without NaN/inf (not valid JSON): they become null, or "inf" for an infinite NLL."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def source_mismatches(calibrator: Calibrator, **current) -> list[str]:
    """Keys of :data:`SOURCE_KEYS` where ``current`` settings differ from those the calibrator was fitted on."""
    fitted = (calibrator.fitted_on or {}).get("source") or {}
    out = []
    for key, value in current.items():
        if key in fitted and fitted[key] is not None and value is not None and str(fitted[key]) != str(value):
            out.append(f"{key} {fitted[key]!r} -> {value!r}")
    return out
