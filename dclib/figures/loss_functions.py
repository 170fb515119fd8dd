"""Tables 8 and 9 (notebooks/loss_functions.ipynb): accuracy under the squared l2, l1 and Huber losses."""
from __future__ import annotations

from . import percent_yerr


def accuracy_by_loss(table):
    """Accuracy (%) with its 95% interval per loss, one panel per kind of run (zero-shot, supervised).

    ``table``: the page's table, ``compare_settings`` rows (setting, accuracy, ci_low, ci_high, n) with a ``model``
    and a ``kind`` column; panels follow the kinds' first appearance."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    runs = list(table.groupby("kind", sort=False))
    fig, axes = plt.subplots(1, len(runs), figsize=(8, 3.2), squeeze=False)
    for ax, (kind, t) in zip(axes[0], runs):
        ax.bar(t.setting, 100 * t.accuracy, yerr=percent_yerr(t), capsize=4, color=[f"C{i}" for i in range(len(t))])
        ax.set_ylim(max(0, 100 * t.ci_low.min() - 10), min(100, 100 * t.ci_high.max() + 5))
        ax.set_title(f"{kind}: {t.model.iloc[0]} ({t.n.iloc[0]} images)", fontsize=9)
    axes[0, 0].set_ylabel("accuracy (%)")
    fig.tight_layout()
    return fig
