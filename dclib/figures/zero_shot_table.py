"""Figures of the Table 1 page (notebooks/zero_shot_table.ipynb): zero-shot accuracy by method and task, accuracy
from single timesteps, class separation under noise, and generations that share their noise across prompts."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import finish, percent_yerr


def accuracy_bars(table: pd.DataFrame, title: str = "Zero-shot classification (95% CIs)"):
    """Grouped bars of accuracy (95% interval) per task and method, from :func:`dclib.zero_shot_baselines.
    zero_shot_comparisons`' table (columns task, method, zero_shot, accuracy, ci_low, ci_high, classes), with
    each task's chance level as a black tick. Tasks and methods keep the table's order."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    tasks = list(dict.fromkeys(table.task))
    methods = list(dict.fromkeys(table.method))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(methods)
    for k, method in enumerate(methods):
        rows = table[table.method == method].set_index("task").loc[tasks]
        x = np.arange(len(tasks)) + (k - (len(methods) - 1) / 2) * width
        ax.bar(x, 100 * rows.accuracy, width, label=method + ("" if rows.zero_shot.iloc[0] else " (not zero-shot)"),
               yerr=percent_yerr(rows), capsize=3)
    chance = table.groupby("task").classes.first().loc[tasks]
    ax.scatter(np.arange(len(tasks)), 100 / chance, marker="_", s=900, color="k", label="chance", zorder=3)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def single_timestep_curves(per_timestep: pd.DataFrame, title: str = "zero-shot accuracy per timestep"):
    """Accuracy from one timestep alone against t, one line (95% band, dotted chance level) per task, from
    :func:`dclib.zero_shot_baselines.single_timestep_by_task` (columns task, t, accuracy, ci_low, ci_high,
    chance)."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for task, rows_t in per_timestep.groupby("task", sort=False):
        line, = ax.plot(rows_t.t, 100 * rows_t.accuracy, "o-", label=f"{task} (dotted: chance)")
        ax.fill_between(rows_t.t, 100 * rows_t.ci_low, 100 * rows_t.ci_high, color=line.get_color(), alpha=0.12)
        ax.axhline(100 * rows_t.chance.iloc[0], color=line.get_color(), ls=":", lw=1)
    return finish(ax, "timestep t", "accuracy, one timestep (%)", title, fontsize=10)


def separation_curves(separation: dict, title: str = "how far apart two classes stay in x_t"):
    """Median d' between classes against t (log scale, d' = 1 dotted), one line per task, from
    :func:`dclib.zero_shot_baselines.attribute_separations` ({task: curve [T]}); None when it is empty."""
    if not separation:
        return None
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for task, curve in separation.items():
        ax.plot(np.arange(len(curve)), curve, label=task)
    ax.axhline(1, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    return finish(ax, "timestep t", "median d' between classes", title, fontsize=10)


def shared_noise_grid(pictures: np.ndarray, prompt_of: np.ndarray, column_titles, n_rows: int, title: str = ""):
    """Generated pictures in a grid, one column per prompt and row k the k-th sample of each, from
    :func:`dclib.zero_shot_baselines.generate_images` (images [n, H, W, 3], prompt index [n], samples of a
    prompt consecutive); ``column_titles`` label the columns."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    n_columns = len(column_titles)
    fig, axes = plt.subplots(n_rows, n_columns, squeeze=False, figsize=(1.6 * n_columns, 1.6 * n_rows))
    for k, (picture, p) in enumerate(zip(pictures, prompt_of)):
        ax = axes[k % n_rows, p]
        ax.imshow(picture)
        ax.set_xticks([]), ax.set_yticks([])
        if k % n_rows == 0:
            ax.set_title(column_titles[p], fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
