"""Timestep weights learned from a few labels (notebooks/timestep_weighting.ipynb, an extension)."""
from __future__ import annotations

import numpy as np

from . import percent_yerr


def weights_and_accuracy(weights, table, n_fit: int, n_test: int):
    """Left: the fitted per-bin weights (mean 1) over the timestep bins, against uniform; right: held-out accuracy
    (%) with its 95% interval, uniform then learned.

    ``weights``: a fitted :class:`dclib.weighting.TimestepWeights` (its ``edges`` and ``normalized``); ``table``:
    the accuracy table of :func:`dclib.weighting.judge_on_held_out`; ``n_fit`` / ``n_test`` go into the titles."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    edges = weights.edges
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), gridspec_kw={"width_ratios": [1.6, 1]})
    axes[0].bar((edges[:-1] + edges[1:]) / 2, weights.normalized, width=0.9 * np.diff(edges), color="C1")
    axes[0].axhline(1, color="k", ls=":", lw=1, label="uniform")
    axes[0].set_xlabel("timestep bin")
    axes[0].set_ylabel("weight (mean 1)")
    axes[0].set_title(f"weights fitted on {n_fit} labelled images")
    axes[0].legend(fontsize=8)
    axes[1].bar(["uniform", "learned"], 100 * table.accuracy,
                yerr=percent_yerr(table), capsize=4,
                color=["C0", "C1"])
    axes[1].set_ylim(max(0, 100 * table.ci_low.min() - 10), 100)
    axes[1].set_ylabel("held-out accuracy (%)")
    axes[1].set_title(f"{n_test} other images")
    fig.tight_layout()
    return fig
