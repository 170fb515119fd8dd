"""Figures of the reproduction-status page (notebooks/reproduction_status.ipynb): the scoreboard's forest plot."""
from __future__ import annotations

import numpy as np
import pandas as pd

OUTCOME_COLOURS = {"reproduces": "C2", "contradicted": "C3", "paper's effect excluded": "C4",
                   "not detected": "C1", "not testable here": "gray"}


def forest_plot(board: pd.DataFrame, title: str = "Our effects beside the paper's"):
    """One row per comparison of :func:`dclib.scoreboard.scoreboard`: our accuracy difference in the paper's direction
    with its 95% interval (coloured by the claim's outcome), the registered effect (a diamond: the paper's number;
    an open diamond: a smallest effect of interest where the paper gives none), a non-inferiority claim's margin
    (a red bar), zero dotted. A comparison the validity gate left out has no interval and says so in its label."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported
    import seaborn as sns

    board = board.reset_index(drop=True)
    labels = [f"{f}: {c}" + (" (gated out)" if str(r).startswith("gated") else "")
              for f, c, r in zip(board.figure, board.comparison, board.result)]
    y = np.arange(len(board))
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.27 * len(board)))
        if not board.empty:
            sns.scatterplot(x=100 * board.ours, y=y, hue=board.outcome, palette=OUTCOME_COLOURS, ax=ax, s=30,
                            zorder=3)
        for outcome, rows in board.groupby("outcome"):
            ax.errorbar(100 * rows.ours, rows.index, xerr=[100 * (rows.ours - rows.ci_low),
                                                           100 * (rows.ci_high - rows.ours)],
                        fmt="none", ecolor=OUTCOME_COLOURS.get(outcome, "gray"), capsize=2, lw=1)
        registered = board[board.registered.notna()]
        for paper, marker in ((True, "D"), (False, "d")):
            rows = registered[registered.paper_effect == paper]
            ax.scatter(100 * rows.registered.astype(float), rows.index, marker=marker, s=28, zorder=4,
                       facecolors="k" if paper else "none", edgecolors="k",
                       label="paper's effect" if paper else "effect of interest (no number in the paper)")
        margins = board[board.threshold_kind == "margin"]  # where a non-inferiority difference must stay above
        if not margins.empty:
            ax.scatter(100 * margins.threshold.astype(float), margins.index, marker="|", s=90, color="C3", zorder=4,
                       label="non-inferiority margin")
        if board.empty:  # no page has recorded a verdict in this build
            ax.text(0.5, 0.5, "no verdicts recorded", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(0, color="gray", ls=":", lw=1)
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy difference in the paper's direction (points)")
        ax.set_title(title)
        if not board.empty:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6 / (1.2 + 0.27 * len(board))), ncol=3)
        fig.tight_layout()
    return fig
