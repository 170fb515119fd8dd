"""Figures of notebooks/calibration.ipynb (extension: calibrated probabilities)."""
from __future__ import annotations

from ..calibration import plot_reliability


def reliability_figure(reliabilities: dict, images: str):
    """Reliability diagrams side by side, one per calibration method: ``reliabilities`` maps a method name to the
    (before, after) pair of :meth:`dclib.calibration.Calibrator.reliability` (before: eq. 6); ``images`` names the
    images they were measured on, for the titles."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it

    fig, axes = plt.subplots(1, len(reliabilities), figsize=(8.5, 4.8), squeeze=False)
    for ax, (name, (before, after)) in zip(axes[0], reliabilities.items()):
        plot_reliability(before, after, ax=ax, title=f"eq. 6 vs {name} scaling, {images}")
    fig.tight_layout()
    return fig
