"""Reliability diagrams."""
from __future__ import annotations

import numpy as np

from .metrics import Reliability


def plot_reliability(before: Reliability, after: Reliability | None = None, ax=None, title: str | None = None):
    """A reliability diagram: accuracy per confidence bin before (outlined) and after calibration (filled),
    with the diagonal of perfect calibration and each curve's ECE in the legend. Returns the axes."""
    import matplotlib.pyplot as plt  # optional and slow to import: only plotting needs it

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
