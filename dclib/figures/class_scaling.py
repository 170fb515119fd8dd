"""Figures of notebooks/class_scaling.ipynb (cost against the number of classes)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import finish


def results_frame(report: dict) -> pd.DataFrame:
    """:func:`dclib.class_scaling.measure`'s records as a table, one row per (class count, method), accuracies and
    differences in points."""
    rows = pd.DataFrame(report["results"]).drop(columns=["correct"], errors="ignore")
    rows["accuracy (%)"] = 100 * rows.accuracy
    rows["low"], rows["high"] = (100 * rows.accuracy_ci.str[i] for i in (0, 1))
    rows["difference to (a), points"] = 100 * rows.difference_to_a
    rows["diff low"], rows["diff high"] = (100 * rows.difference_ci.str[i] for i in (0, 1))
    return rows


def cost_and_accuracy_figure(report: dict, title: str, margin: float):
    """Left: denoiser evaluations per image against classes (log-log), one line per method, beside a line of slope 1
    through the reference's first point (cost in proportion to the classes, as the paper's schedules grow). Right:
    each method's accuracy difference to the reference with its 95% interval, against classes, the margin, and the
    contrastive partner classifying alone (grey: no denoiser call)."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it
    import seaborn as sns

    rows = results_frame(report)
    methods = list(dict.fromkeys(rows.method))
    palette = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6))
    sns.lineplot(rows, x="classes", y="evaluations_per_image", hue="method", hue_order=methods, palette=palette,
                 marker="o", ax=left)
    handles, labels = left.get_legend_handles_labels()  # the methods: one legend under both panels
    reference = rows[rows.method.str.startswith("(a)")].sort_values("classes")
    counts = np.array(sorted(rows.classes.unique()), float)
    if len(reference):
        k0, e0 = reference.classes.iloc[0], reference.evaluations_per_image.iloc[0]
        left.plot(counts, e0 * counts / k0, ":", color="grey", label="slope 1 (cost in proportion to classes)")
    left.set_yscale("log")
    finish(left, "classes", "denoiser evaluations per image", "Cost")
    offsets = np.linspace(-0.06, 0.06, len(methods))  # side by side at each count, on the log axis
    for offset, method in zip(offsets, methods):
        if method.startswith("(a)"):  # the reference: zero by definition
            continue
        sub = rows[rows.method == method].sort_values("classes")
        right.errorbar(sub.classes * np.exp(offset), sub["difference to (a), points"],
                       yerr=[sub["difference to (a), points"] - sub["diff low"],
                             sub["diff high"] - sub["difference to (a), points"]],
                       fmt="o-", capsize=3, color=palette[method], label=method)
    partner = pd.DataFrame(report.get("partner_alone", []))
    if len(partner):  # the partner alone: what pre-pruning could owe to it (no denoiser call, so not on the left)
        partner = partner.sort_values("classes")
        diff, low, high = (100 * partner.difference_to_a, 100 * partner.difference_ci.str[0],
                           100 * partner.difference_ci.str[1])
        right.errorbar(partner.classes, diff, yerr=[diff - low, high - diff], fmt="s--", capsize=3, color="grey",
                       alpha=0.8, label="contrastive partner alone")
        handles, labels = right.get_legend_handles_labels()[0][-1:] + handles, ["contrastive partner alone"] + labels
    right.axhline(0, color="black", lw=0.8)
    right.axhline(-100 * margin, color="red", ls="--", lw=1, label=f"margin (-{100 * margin:g} points)")
    finish(right, "classes", "accuracy minus the reference's (points, 95% interval)", "Accuracy kept")
    for ax in (left, right):  # the class counts themselves on a log axis, not powers of ten
        ax.set_xscale("log")
        ax.set_xticks(counts, [f"{k:g}" for k in counts])
        ax.minorticks_off()
        own = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels()) if lab not in labels]  # slope 1, margin
        if own:
            ax.legend(*zip(*own), fontsize=9, loc="upper left" if ax is left else "lower left")
        else:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=10, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig


def training_curve_figure(history: list[dict], title: str):
    """The model card's validation losses against training steps: the caption's own (TRAIN and HELD-OUT wording),
    another picture's and the empty prompt's; the gap between another picture's caption and its own is what the
    classifier reads."""
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    labels = {"val_train": "own caption (TRAIN wording)", "val_heldout": "own caption (HELD-OUT wording)",
              "val_shuffled": "another picture's caption", "val_null": "empty prompt"}
    for column, label in labels.items():
        if column in frame:
            ax.plot(frame.step, frame[column], "o-", ms=3, label=label)
    finish(ax, "training step", "validation loss (fixed t, eps)", title)
    return fig
