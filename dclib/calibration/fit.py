"""The fitters: a temperature by bounded 1-D search on the (smoothed) NLL, and per-class vector scaling by
L-BFGS-B (see :mod:`dclib.calibration` for the method)."""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from ..decide import softmax


def _nll_and_grad(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of softmax(logits), computed in log space (finite however sharp), and its gradient with respect
    to the (finite) logits."""
    p = softmax(logits)
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
