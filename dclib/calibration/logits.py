"""Logits from class errors, the uncalibrated posterior, and temperatures in dclib's per-element units and the
paper's summed-error units (see :mod:`dclib.calibration` for why they differ by ``d``)."""
from __future__ import annotations

import math

import numpy as np

from ..decide import posterior
from ..errors import InputError
from ..scoring import noise_elements  # noqa: F401  (re-exported: temperatures convert through it)


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


def uncalibrated_probabilities(class_errors, temperature: float = 1.0) -> np.ndarray:
    """:func:`dclib.decide.posterior` on every row of ``class_errors`` [n, K] (what ``classify`` reports), at the
    per-element ``temperature``; the paper's eq. 6 is ``temperature=per_element_temperature(1, d)``."""
    e = np.atleast_2d(np.asarray(class_errors, dtype=np.float64))
    return np.stack([posterior(row, temperature) for row in e]) if len(e) else np.zeros((0, e.shape[1]))


# ------------------------------------------------------------------------------------------ temperature units
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
