"""Figures of notebooks/adaptive_evaluation.ipynb (Tables 6 and 7: adaptive evaluation and pre-pruning)."""
from __future__ import annotations

from . import finish, percent_yerr

#: method-label prefix -> matplotlib format, in the order the legend lists them
METHOD_STYLES = (("Algorithm 1", "o-"), ("Algorithm 2", "s"), ("paired pruning", "D"), ("contrastive top", "^"))


def accuracy_cost_figure(table, title: str):
    """Accuracy (95% interval) against denoiser evaluations per image, one series per kind of method (the
    label's prefix, :data:`METHOD_STYLES`): ``table`` is :func:`dclib.pruning.compare_methods`'s."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, marker in METHOD_STYLES:
        sub = table[table.method.str.startswith(kind)]
        ax.errorbar(sub.evaluations_per_image, 100 * sub.accuracy, yerr=percent_yerr(sub), fmt=marker, capsize=3,
                    label=kind)
    ax.set_xscale("log")
    return finish(ax, "denoiser evaluations per image", "accuracy (%)", title)
