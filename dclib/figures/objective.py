"""Eq. 3 and Table 5 (notebooks/objective.ipynb): accuracy under uniform, ELBO and variational-bound weighting."""
from __future__ import annotations

from . import percent_yerr


def accuracy_by_objective(table, n_images: int):
    """Accuracy (%) with its 95% interval per objective, blue for the fixed-variance model, orange for the learned.

    ``table``: the page's table, ``compare_settings`` rows (setting, accuracy, ci_low, ci_high) with a ``variance``
    column ("fixed" or "learned"); ``n_images`` goes into the title."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = [f"{s}\n({v} var.)" for v, s in zip(table.variance, table.setting)]
    ax.bar(labels, 100 * table.accuracy, yerr=percent_yerr(table), capsize=4,
           color=["C0" if v == "fixed" else "C1" for v in table.variance])
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Timestep weighting and objective ({n_images} images)")
    fig.tight_layout()
    return fig
