"""Figures of the Table 10 page (notebooks/version_sweep.ipynb): accuracy across model versions."""
from __future__ import annotations

import pandas as pd

from . import finish, percent_yerr


def accuracy_by_version(table: pd.DataFrame, x: str = "training step",
                        title: str = "Accuracy across model versions"):
    """Accuracy (95% interval) against ``x`` (a column: "training step", log scale, or "version"), one series per
    ``run`` of the table (columns run, accuracy, ci_low, ci_high and ``x``): runs whose name starts with
    "checkpoints" as a line, independent runs as squares."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run, group in table.groupby("run", sort=False):
        ax.errorbar(group[x], 100 * group.accuracy,
                    yerr=percent_yerr(group),
                    fmt="o-" if run.startswith("checkpoints") else "s", capsize=4, label=run)
    ax.set_xscale("log" if x == "training step" else "linear")
    return finish(ax, x, "accuracy (%)", title)
