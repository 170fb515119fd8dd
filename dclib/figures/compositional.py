"""Figures of the Table 3 page (notebooks/compositional.ipynb): Winoground-style text scores by swap type."""
from __future__ import annotations

import numpy as np


def text_score_bars(outcomes: dict, name: str = "", title: str = "Winoground-style text score"):
    """Text score (%) per swap type, one bar per model, from :func:`dclib.compositional.compare_on_pairs`
    ({model: :func:`~dclib.compositional.winoground_table`}). Items with a caption-template split (the embedded
    pairs) get one panel per split (train, heldout); otherwise one panel titled ``name``. Swap types keep the
    order of the last model's table; the dotted line is chance (25%)."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    last = list(outcomes.values())[-1]
    splits = ["train", "heldout"] if last.template_split.notna().any() else [None]
    swaps = list(dict.fromkeys(last.swap_type))
    fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.2), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, split in zip(axes, splits):
        for k, model in enumerate(outcomes):
            t = outcomes[model] if split is None else outcomes[model][outcomes[model].template_split == split]
            values = [100 * t[t.swap_type == s].text.mean() for s in swaps]
            ax.bar(np.arange(len(swaps)) + (k - 0.5) * 0.38, values, 0.38, label=model)
        ax.axhline(25, color="k", ls=":", lw=1, label="chance")
        ax.set_xticks(range(len(swaps)), swaps)
        ax.set_title(f"{split} caption templates" if split else str(name))
    axes[0].set_ylabel("text score (%)")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
