"""Calibration metrics over equal-width confidence bins: reliability data, ECE / MCE, NLL, Brier score."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

DEFAULT_BINS = 15


def _confidence(probs: np.ndarray, predictions=None) -> tuple[np.ndarray, np.ndarray]:
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    pred = probs.argmax(1) if predictions is None else np.asarray(predictions, dtype=np.int64)
    return probs[np.arange(len(probs)), pred], pred


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1], each closed on the right: (0, 1/B], (1/B, 2/B], ... (0 goes to the first)."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


@dataclass
class Reliability:
    """Reliability-diagram data: per equal-width confidence bin, the mean confidence, the accuracy and the count
    (NaN confidence and accuracy for an empty bin)."""

    edges: np.ndarray  # [n_bins + 1]
    confidence: np.ndarray  # [n_bins]
    accuracy: np.ndarray  # [n_bins]
    count: np.ndarray  # [n_bins]
    label: str = ""

    @property
    def ece(self) -> float:
        n = self.count.sum()
        used = self.count > 0
        if n == 0:
            return 0.0
        return float((self.count[used] / n * np.abs(self.accuracy[used] - self.confidence[used])).sum())

    @property
    def mce(self) -> float:
        used = self.count > 0
        return float(np.abs(self.accuracy[used] - self.confidence[used]).max()) if used.any() else 0.0

    def to_dict(self) -> dict:
        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {"label": self.label, "edges": [float(v) for v in self.edges], "confidence": clean(self.confidence),
                "accuracy": clean(self.accuracy), "count": [int(v) for v in self.count], "ece": self.ece,
                "mce": self.mce}


def reliability(probs, labels, n_bins: int = DEFAULT_BINS, predictions=None, label: str = "") -> Reliability:
    """Bin the confidence of each prediction (``argmax p``, or ``predictions`` when given) into ``n_bins``
    equal-width bins and measure the accuracy in each."""
    if n_bins < 1:
        raise InputError("the number of bins must be >= 1")
    conf, pred = _confidence(probs, predictions)
    correct = (pred == np.asarray(labels, dtype=np.int64)).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, correct, minlength=n_bins) / count
    return Reliability(np.linspace(0.0, 1.0, n_bins + 1), confidence, accuracy, count, label)


def expected_calibration_error(probs, labels, n_bins: int = DEFAULT_BINS, predictions=None) -> tuple[float, float]:
    """(ECE, MCE) with ``n_bins`` equal-width bins: ECE = sum_b n_b / n |acc_b - conf_b|, MCE = max_b |...|."""
    r = reliability(probs, labels, n_bins, predictions)
    return r.ece, r.mce


def negative_log_likelihood(probs, labels) -> float:
    """Mean -log p[label] (inf if some label has probability 0)."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    p = probs[np.arange(len(probs)), np.asarray(labels, dtype=np.int64)]
    with np.errstate(divide="ignore"):
        return float(-np.log(p).mean())


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: mean over images of sum_k (p_k - [k == label])^2 (0 best, 2 worst)."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(probs)), np.asarray(labels, dtype=np.int64)] = 1.0
    return float(((probs - onehot) ** 2).sum(1).mean())


def calibration_metrics(probs, labels, n_bins: int = DEFAULT_BINS, predictions=None) -> dict:
    """ECE, MCE (``n_bins`` equal-width bins), NLL, Brier, accuracy and mean confidence."""
    conf, pred = _confidence(probs, predictions)
    labels = np.asarray(labels, dtype=np.int64)
    ece, mce = expected_calibration_error(probs, labels, n_bins, predictions)
    return {"n": int(len(labels)), "ece": ece, "mce": mce, "nll": negative_log_likelihood(probs, labels),
            "brier": brier_score(probs, labels), "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
            "mean_confidence": float(conf.mean()) if len(conf) else 0.0, "n_bins": int(n_bins)}
