"""Statistics the library reports: accuracy intervals, the stratified paired t statistic of statistical pruning,
and the probit line of effective robustness. The pre-registered tests behind a reproduction verdict (McNemar,
trend, non-inferiority, binomial, Holm) live in :mod:`dclib.verdicts`, which states the verdict rule with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


# ------------------------------------------------------------------------------------------ accuracy
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
    """Accuracy with its 95% Clopper-Pearson interval and the mean per-class accuracy."""
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


# ------------------------------------------------------------------------------------------ paired differences
def stratified_paired_t(diff: np.ndarray, strata: np.ndarray) -> float:
    """t statistic of the mean of ``diff`` (equal samples per stratum) with the within-stratum variance only:
    the mean is the average of the per-stratum means, its variance sum_h s_h^2 / (r S^2)."""
    labels = np.unique(strata)
    means = np.array([diff[strata == h].mean() for h in labels])
    var = np.array([diff[strata == h].var(ddof=1) / (strata == h).sum() for h in labels])
    se = np.sqrt(var.sum()) / len(labels)
    mean = means.mean()
    if se == 0.0:
        return np.inf if mean > 0 else (-np.inf if mean < 0 else 0.0)
    return float(mean / se)


# ------------------------------------------------------------------------------------------ effective robustness
def probit(accuracy, n) -> np.ndarray:
    """Probit of accuracies measured on n items, clipped to [0.5/n, 1 - 0.5/n] so 0 and 1 stay finite."""
    acc, n = np.asarray(accuracy, float), np.asarray(n, float)
    return stats.norm.ppf(np.clip(acc, 0.5 / n, 1 - 0.5 / n))


def fit_line(id_acc, ood_acc, n_id, n_ood) -> np.ndarray:
    """Least-squares line probit(OOD) = a probit(ID) + b through the reference models (Taori et al. 2020);
    returns [a, b]. Models that all share one ID accuracy fix no slope: the line is then flat at their mean."""
    x, y = probit(id_acc, n_id), probit(ood_acc, n_ood)
    if np.ptp(x) == 0:
        return np.array([0.0, float(np.mean(y))])
    return np.polyfit(x, y, 1)


def expected_ood(coeffs, id_acc: float, n_id: int) -> float:
    """The OOD accuracy the line predicts for a model with ID accuracy ``id_acc``."""
    return float(stats.norm.cdf(np.polyval(coeffs, probit(id_acc, n_id))))
