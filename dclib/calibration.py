"""Calibrated probabilities from denoising errors: temperature and vector scaling, ECE, reliability diagrams.

**Temperature units.** The paper's posterior (eq. 6, uniform prior) is a softmax over the *summed* squared error
of the noise prediction::

    p(c | x) = exp(-E_t,eps ||eps - eps_theta(x_t, c)||^2) / sum_j exp(-E_t,eps ||eps - eps_theta(x_t, c_j)||^2)

with ``||.||^2`` summed over all ``d`` elements of the noise (``d = 256`` for the 1x16x16 MNIST model,
``4 * 64 * 64 = 16384`` for SD 2 latents at 512 px; :func:`noise_elements`). dclib's errors are per-element means,
``e = ||eps - eps_theta||^2 / d`` (as the official code's ``mse_loss(...).mean(dim=(1, 2, 3))``), and its
temperature divides those: ``softmax(-e / T)`` (:func:`dclib.decide.posterior`). Both are the same posterior when

    T_paper = d * T        (:func:`paper_temperature`, :func:`per_element_temperature`)

so dclib's default ``T = 1`` is the paper's ``T = d``: ``d`` times flatter than eq. 6, and nearly uniform because
per-element class errors differ in the third or fourth decimal. That flatness is an artifact of the
normalisation, not a property of eq. 6. Eq. 6 itself (paper ``T = 1``, dclib ``T = 1 / d``) turns the same gaps
into ``d`` times larger logits; whether that is over- or under-confident depends on the model, ``d`` and the
number of samples (notebooks/calibration.ipynb measures it). The paper only takes eq. 6's argmax, which no
temperature changes, and nothing in the method fixes ``T``; this module fits it (or a per-class affine map) on a
labelled calibration set, as post-hoc calibration does for any classifier (Guo et al., ICML 2017). A
:class:`Calibrator` given ``n_elements = d`` reports every temperature in both units (its file, its reliability
labels); ``temperature`` fields stay in dclib's per-element units, which the errors are stored in. With another
loss (``l1``, ``huber``) "the paper's units" means the summed loss, by the same factor ``d``.

**Logits.** For image ``i`` and class ``k``, ``z[i, k] = -(e[i, k] - min_j e[i, j])`` where ``e[i, k]`` is the class
error of :func:`dclib.decide.class_errors`: the mean error of the class's best conditioning over the samples it
was scored on. A class without any candidate conditioning has ``e = inf`` and gets probability exactly 0.

**Per-image normalisation** (``normalize=True``, the default) subtracts each image's lowest error. Softmax is
shift-invariant, and so is temperature scaling (``(z - m) / T = z / T - m / T``: one constant per row), so for
``method="temperature"`` it changes nothing but the size of the numbers. Vector scaling is *not* shift-invariant
(``a_k (z_k - m) + b_k`` moves each class by ``a_k m``), and the absolute error level of an image (its contrast,
how hard it is to denoise at all) is a nuisance that varies far more between images than the differences between
classes do; without normalisation that level leaks into the per-class scales. Normalising makes the features the
error *gaps* to the best class.

**Methods.**

- ``temperature``: ``p = softmax(z / T)``, one scalar ``T > 0`` fitted by minimising the mean negative
  log-likelihood (NLL) on the calibration set. The NLL is convex in ``1 / T``, hence unimodal in ``log T``; it is
  minimised by a bounded 1-D search over ``log T`` (scipy's bounded Brent), from a data-driven starting scale
  and over +-30 nats around it, so errors of any magnitude (SD's ~1e-1 or a tiny model's ~1e-3) work. The
  labels are smoothed by 1 / (n + 2) by default (``smoothing``), so a calibration set the classifier gets all
  right gives a confidence near (n + 1) / (n + 2), not certainty. With ``smoothing=0`` and every image right,
  the NLL keeps falling as ``T -> 0``; the fit then stops at the bound and ``fitted_on["at_bound"]`` says so.
- ``vector``: ``p = softmax(a * z + b)`` with a per-class scale ``a_k = exp(u_k) / T`` (``T`` from temperature
  scaling, so ``a_k > 0`` and a lower error always means a higher logit) and bias ``b_k``. ``u`` and ``b`` are
  fitted with L-BFGS-B on ``mean NLL + l2 / 2 * (sum u_k^2 + sum b_k^2)`` (``l2 = 0.01`` by default): light
  regularisation towards temperature scaling (``u = 0, b = 0``), which also pins the bias (softmax ignores a
  common shift) and keeps classes absent from the calibration set at the temperature-scaled answer.

**Pruned classes** (Algorithm 2, paired pruning). A conditioning pruned after an early stage keeps an
estimate from the samples it saw, never probability zero: :attr:`dclib.decide.Classification.mean_errors` gives
it the winner's mean plus its paired mean difference to the winner on those samples
(:func:`dclib.decide.paired_mean_errors`), which puts it on the winner's footing (a raw partial mean comes from
other, possibly easier, samples and could even undercut the winner). A calibrator acts on that class-error
vector, exactly as :attr:`~dclib.decide.Classification.probabilities` does, so a pruned class gets a small but
nonzero calibrated probability. The estimate rests on fewer samples and the calibrator does not model that, so
fit it on runs with the same schedule you will classify with (the error scale depends on the schedule, the
number of trials, the loss and the model; a mismatch is warned about by the CLI).

Metrics: :func:`expected_calibration_error` (equal-width bins, default 15, with the maximum calibration error),
:func:`calibration_metrics` (ECE, MCE, NLL, Brier, accuracy), :func:`reliability` (per-bin confidence, accuracy,
count) and :func:`plot_reliability`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .decide import class_errors as _class_errors
from .decide import mean_errors as _mean_errors
from .decide import posterior
from .errors import InputError

FORMAT = "dclib-calibration/1"
METHODS = ("temperature", "vector")
DEFAULT_BINS = 15


# ------------------------------------------------------------------------------------------ logits
def logits_from_errors(class_errors, normalize: bool = True) -> np.ndarray:
    """``z = -class_errors`` ([n, K] or [K]), minus each row's lowest error when ``normalize``; ``-inf`` where a
    class has no error (no candidate conditioning)."""
    e = np.asarray(class_errors, dtype=np.float64)
    finite = np.isfinite(e)
    z = np.where(finite, -e, -np.inf)
    if normalize:
        best = np.where(finite, e, np.inf).min(axis=-1, keepdims=True)
        best = np.where(np.isfinite(best), best, 0.0)
        z = np.where(finite, -(e - best), -np.inf)
    return z


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ignoring ``-inf`` entries; a row with no finite logit is uniform (as decide.posterior)."""
    logits = np.atleast_2d(logits)
    finite = np.isfinite(logits)
    top = np.where(finite, logits, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(finite, np.exp(np.where(finite, logits - top, 0.0)), 0.0)
    total = p.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    p[empty] = 1.0 / logits.shape[1]
    total[empty] = 1.0
    return p / total


def uncalibrated_probabilities(class_errors, temperature: float = 1.0) -> np.ndarray:
    """:func:`dclib.decide.posterior` on every row of ``class_errors`` [n, K] (what ``classify`` reports), at the
    per-element ``temperature``; the paper's eq. 6 is ``temperature=per_element_temperature(1, d)``."""
    e = np.atleast_2d(np.asarray(class_errors, dtype=np.float64))
    return np.stack([posterior(row, temperature) for row in e]) if len(e) else np.zeros((0, e.shape[1]))


# ------------------------------------------------------------------------------------------ temperature units
def noise_elements(source, crop: int = 0) -> int:
    """``d``: how many elements each error averages over, which converts dclib's per-element temperature into the
    paper's (see the module docstring). ``source`` is an adapter, a :class:`~dclib.DiffusionClassifier` or the
    shape of one sample (e.g. ``(4, 64, 64)``); ``crop`` is :class:`~dclib.scoring.ScoreOptions`' ``crop``,
    which averages over the error map without ``crop`` pixels at each edge."""
    adapter = getattr(source, "adapter", source)
    shape = tuple(int(v) for v in getattr(adapter, "sample_shape", source))
    if len(shape) < 2 or min(shape) < 1:
        raise InputError(f"a sample shape needs at least two positive dimensions; got {shape}")
    if crop:  # the engine crops the last two (spatial) dimensions of the error map before averaging
        height, width = shape[-2] - 2 * crop, shape[-1] - 2 * crop
        if min(height, width) < 1:
            raise InputError(f"crop {crop} removes the whole {shape[-2:]} error map")
        shape = shape[:-2] + (height, width)
    return math.prod(shape)


def paper_temperature(temperature: float, d: int) -> float:
    """The paper's temperature (eq. 6: softmax of the summed squared error) equal to dclib's per-element
    ``temperature``: ``softmax(-e / T) = softmax(-(d e) / (d T))`` and ``d e`` is the summed error."""
    return float(temperature) * int(d)


def per_element_temperature(temperature_paper: float, d: int) -> float:
    """dclib's per-element temperature equal to the paper's ``temperature_paper``; eq. 6 as printed is
    ``per_element_temperature(1, d) = 1 / d``."""
    return float(temperature_paper) / int(d)


def format_temperature(temperature: float, d: int | None = None) -> str:
    """``"T=0.00132"``, and with ``d`` the paper's value beside it: ``"T=0.00132, paper T=0.339"``."""
    text = f"T={temperature:.3g}"
    return text if d is None else f"{text}, paper T={paper_temperature(temperature, d):.3g}"


# ------------------------------------------------------------------------------------------ metrics
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


def plot_reliability(before: Reliability, after: Reliability | None = None, ax=None, title: str | None = None):
    """A reliability diagram: accuracy per confidence bin before (outlined) and after calibration (filled),
    with the diagonal of perfect calibration and each curve's ECE in the legend. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="perfect calibration")
    styles = [(before, dict(facecolor="none", edgecolor="tab:red", lw=1.5), "tab:red", "before"),
              (after, dict(facecolor="tab:blue", edgecolor="tab:blue", alpha=0.45), "tab:blue", "after")]
    for rel, bar_style, color, default in styles:
        if rel is None:
            continue
        edges = np.asarray(rel.edges)
        width = np.diff(edges)
        used = np.asarray(rel.count) > 0
        name = rel.label or default
        ax.bar(edges[:-1][used], np.asarray(rel.accuracy)[used], width=width[used], align="edge",
               label=f"{name} (ECE {rel.ece:.3f}, n {int(np.sum(rel.count))})", **bar_style)
        ax.plot(np.asarray(rel.confidence)[used], np.asarray(rel.accuracy)[used], "o", color=color, ms=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)
    return ax


# ------------------------------------------------------------------------------------------ fitting
def _nll_and_grad(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of softmax(logits), computed in log space (finite however sharp), and its gradient with respect
    to the (finite) logits."""
    p = _softmax(logits)
    n = len(labels)
    rows = np.arange(n)
    finite = np.isfinite(logits)
    top = np.where(finite, logits, -np.inf).max(axis=1)
    shifted = np.where(finite, logits - top[:, None], -np.inf)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    nll = float((log_z - shifted[rows, labels]).mean())
    grad = p.copy()
    grad[rows, labels] -= 1.0
    return nll, grad / n


def _initial_temperature(z: np.ndarray) -> float:
    """A data-driven scale for the search: the median spread of the finite, nonzero normalised logits."""
    gaps = np.abs(z[np.isfinite(z) & (z != 0)])
    return float(np.median(gaps)) if gaps.size else 1.0


def _smoothed_nll(logits: np.ndarray, labels: np.ndarray, alpha: float) -> float:
    """Mean cross-entropy against labels smoothed by ``alpha`` (spread evenly over the other finite classes)."""
    finite = np.isfinite(logits)
    top = np.where(finite, logits, -np.inf).max(axis=1, keepdims=True)
    shifted = np.where(finite, logits - top, -np.inf)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    true = log_p[rows, labels]
    others = finite.copy()
    others[rows, labels] = False
    n_others = np.maximum(others.sum(1), 1)
    other = np.where(others, log_p, 0.0).sum(1) / n_others
    return float(-((1 - alpha) * true + alpha * other).mean())


def fit_temperature(z: np.ndarray, labels: np.ndarray, span: float = 30.0, smoothing: float = 0.0
                    ) -> tuple[float, bool]:
    """The temperature minimising the NLL of softmax(z / T); (T, whether the search stopped at a bound).

    ``smoothing`` moves that much of each label's mass evenly onto the other classes (see :class:`Calibrator`).
    """
    from scipy.optimize import minimize_scalar

    center = math.log(_initial_temperature(z))
    lo, hi = center - span, center + span
    def nll(log_t: float) -> float:
        return _smoothed_nll(z / math.exp(log_t), labels, smoothing)

    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-9, "maxiter": 500})
    log_t, best = float(res.x), float(res.fun)
    # No finite optimum: every image right with a margin (NLL -> 0 as T -> 0, flat once it underflows) or no
    # information (NLL falls towards the uniform answer as T -> infinity). Then take that bound and say so.
    for bound in (lo, hi):
        value = nll(bound)
        if value <= best + 1e-12 * max(1.0, abs(best)):
            log_t, best = bound, value
    at_bound = min(log_t - lo, hi - log_t) < 1e-3
    return math.exp(log_t), bool(at_bound)


def fit_vector(z: np.ndarray, labels: np.ndarray, temperature: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (scale, bias) of softmax(scale * z + bias), scale = exp(u) / temperature, minimising the mean
    NLL + l2 / 2 (|u|^2 + |b|^2) with L-BFGS-B."""
    from scipy.optimize import minimize

    k = z.shape[1]
    finite = np.isfinite(z)
    zf = np.where(finite, z, 0.0)

    def objective(theta: np.ndarray):
        u, b = theta[:k], theta[k:]
        a = np.exp(u) / temperature
        logits = np.where(finite, zf * a + b, -np.inf)
        nll, g = _nll_and_grad(logits, labels)
        g = np.where(finite, g, 0.0)
        grad_u = (g * zf).sum(0) * a + l2 * u
        grad_b = g.sum(0) + l2 * b
        return nll + 0.5 * l2 * float((u ** 2).sum() + (b ** 2).sum()), np.concatenate([grad_u, grad_b])

    res = minimize(objective, np.zeros(2 * k), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-10, "ftol": 1e-14})
    u, b = res.x[:k], res.x[k:]
    return np.exp(u) / temperature, b


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
    """Maps class errors [n, K] to calibrated probabilities (see the module docstring for the method).

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
        """Fit on a labelled calibration set: ``class_errors`` [n, K] (e.g. :func:`class_errors_from_run`),
        ``labels`` [n]. ``predictions`` (the classifier's own, when pruning may have made them differ from
        ``argmax``) are used for ECE only. Records before/after metrics in ``fitted_on``; "before" is the
        uncalibrated posterior softmax(-error / ``uncalibrated_temperature``), per element (the default 1, what
        ``classify`` reports, is the paper's ``T = n_elements``; eq. 6 is ``1 / n_elements``)."""
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
        p = _softmax(self.logits(e))
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


# ------------------------------------------------------------------------------------------ data sources
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


#: run config keys that define the error scale; a calibrator remembers them and classify warns on a mismatch.
SOURCE_KEYS = ("model", "schedule", "n_trials", "loss", "objective", "guidance", "crop", "noise")


def class_errors_from_run(run_dir: str | os.PathLike) -> CalibrationData:
    """Class errors of the finished, labelled images of an ``evaluate`` run folder, from the stored
    per-conditioning mean errors (paired estimates for pruned conditionings) and the run's conditioning classes."""
    from . import runs

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
        from .experiments import ErrorSet

        try:
            error_set = ErrorSet.load(p)
        except Exception as err:
            raise InputError(f"cannot read saved errors {p}: {err}") from None
        return class_errors_from_error_set(error_set)
    raise InputError(f"{path} is neither an evaluate run folder nor a saved ErrorSet (.npz)")


def source_mismatches(calibrator: Calibrator, **current) -> list[str]:
    """Keys of :data:`SOURCE_KEYS` where ``current`` settings differ from those the calibrator was fitted on."""
    fitted = (calibrator.fitted_on or {}).get("source") or {}
    out = []
    for key, value in current.items():
        if key in fitted and fitted[key] is not None and value is not None and str(fitted[key]) != str(value):
            out.append(f"{key} {fitted[key]!r} -> {value!r}")
    return out
