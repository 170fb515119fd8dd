"""Figures of notebooks/error_variance.ipynb (Fig. 2: why the noise is shared across classes)."""
from __future__ import annotations

from typing import Sequence

from . import finish, percent_yerr


def error_curves_figure(image, curves, class_names: Sequence[str]):
    """Fig. 2: the image, its true class's error and the closest wrong class's error against the timestep (one
    colour per eps, the wrong class dashed), and their paired difference. ``curves`` is
    :func:`dclib.timestep_analysis.paired_error_curves` of that image."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it

    t, label, other = curves.timesteps, class_names[curves.true_class], class_names[curves.other_class]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [0.5, 1.2, 1.2]})
    axes[0].imshow(image, cmap="gray_r"); axes[0].axis("off"); axes[0].set_title(label)
    for k in range(curves.true_errors.shape[1]):
        axes[1].plot(t, curves.true_errors[:, k], color=f"C{k}", lw=1.2, label=f"eps {k + 1}")
        axes[1].plot(t, curves.other_errors[:, k], color=f"C{k}", lw=1.2, ls="--")
        axes[2].plot(t, curves.other_errors[:, k] - curves.true_errors[:, k], color=f"C{k}", lw=1.2)
    axes[1].set_title(f"error: {label} (solid), {other} (dashed)", fontsize=9)
    axes[2].set_title(f"difference: {other} - {label}", fontsize=9)
    axes[2].axhline(0, color="k", lw=0.6)
    for ax in axes[1:]:
        ax.set_xlabel("timestep t")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_by_timesteps_figure(accuracy, timestep_counts: Sequence[int], title: str):
    """Accuracy (95% interval) against timesteps per class, one line per setting: ``accuracy`` is the table of
    :func:`dclib.timestep_analysis.accuracy_by_sample_count` (setting / timesteps / accuracy / ci_low / ci_high)."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it

    fig, ax = plt.subplots(figsize=(5.5, 3.3))
    for j, (name, g) in enumerate(accuracy.groupby("setting", sort=False)):
        ax.errorbar(g.timesteps, 100 * g.accuracy, yerr=percent_yerr(g), marker="o", capsize=3, color=f"C{j}",
                    label=name)
    ax.set_xscale("log")
    ax.set_xticks(timestep_counts, [str(k) for k in timestep_counts])
    return finish(ax, "timesteps per class", "accuracy (%)", title)
