"""Evaluate a classifier over a dataset (in memory; the resumable run store builds on this)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import stats
from tqdm import tqdm


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for k successes out of n."""
    if n == 0:
        return (0.0, 1.0)
    alpha = 1 - confidence
    low = stats.beta.ppf(alpha / 2, k, n - k + 1) if k > 0 else 0.0
    high = stats.beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


@dataclass
class EvaluationSummary:
    n: int
    correct: int
    accuracy: float
    mean_per_class_accuracy: float
    ci95: tuple[float, float]
    evaluations_per_image: float
    seconds_per_image: float
    predictions: np.ndarray
    labels: np.ndarray

    def to_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "mean_per_class_accuracy": self.mean_per_class_accuracy,
                "ci95": list(self.ci95), "evaluations_per_image": self.evaluations_per_image,
                "seconds_per_image": self.seconds_per_image}


def summarize(predictions, labels, evaluations=None, seconds=None) -> EvaluationSummary:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    correct = int((predictions == labels).sum())
    n = len(labels)
    per_class = [float((predictions[labels == c] == c).mean()) for c in np.unique(labels)]
    return EvaluationSummary(
        n=n, correct=correct, accuracy=correct / max(n, 1),
        mean_per_class_accuracy=float(np.mean(per_class)) if per_class else 0.0,
        ci95=clopper_pearson(correct, n), predictions=predictions, labels=labels,
        evaluations_per_image=float(np.mean(evaluations)) if evaluations is not None and len(evaluations) else 0.0,
        seconds_per_image=float(np.mean(seconds)) if seconds is not None and len(seconds) else 0.0)


def evaluate_dataset(classifier, dataset, limit: int | None = None, progress: bool = True, desc: str = "evaluate",
                     **classify_kwargs) -> EvaluationSummary:
    """Classify every row of a Hugging Face dataset with ``image``/``label``/``id`` columns."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels, evals, secs = [], [], [], []
    for i in tqdm(range(n), desc=desc, disable=not progress):
        row = dataset[i]
        started = time.perf_counter()
        result = classifier.classify(row["image"], image_id=row.get("id", i), **classify_kwargs)
        preds.append(result.prediction)
        labels.append(int(row["label"]))
        evals.append(result.evaluations)
        secs.append(time.perf_counter() - started)
    return summarize(preds, labels, evals, secs)
