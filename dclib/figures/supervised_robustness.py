"""Fig. 6 (notebooks/supervised_robustness.ipynb): effective robustness on probit axes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import probit


def effective_robustness_figure(results: pd.DataFrame, line: pd.Series, n_images: int | None,
                                shifted: str = "adversarial",
                                model: str = "Diffusion Classifier"):
    """Probit(accuracy on ``shifted``) against probit(clean accuracy): the discriminative models as dots, their
    fitted line dashed, ``model`` as a star with its 99.5% interval, chance dotted.

    ``results``: :func:`dclib.robustness.robustness_comparison`'s table (method, set, accuracy, ci_low, ci_high,
    classes); ``line``: :func:`dclib.robustness.line_reference` of ``shifted`` (its slope and intercept);
    ``n_images`` (None: the largest set's size) moves accuracies of 0 or 1 half an image inwards, as the fit does.
    The x axis is the clean set the line was fitted on (``line["clean"]``: the clean images of the shifted set's
    classes where they differ)."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    clean = line.get("clean", "clean")
    n_images = n_images or int(results.n.max())
    wide = results.pivot(index="method", columns="set", values="accuracy")
    family = [m for m in wide.index if m != model]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(probit(wide.loc[family, clean], n_images), probit(wide.loc[family, shifted], n_images),
               label="discriminative")
    xs = np.linspace(probit(wide[clean].min(), n_images) - 0.3, probit(wide[clean].max(), n_images) + 0.3, 10)
    ax.plot(xs, line["slope"] * xs + line["intercept"], "C0--", lw=1, label="probit fit")
    ours = results[(results.method == model) & (results.set == shifted)].iloc[0]
    y = probit(ours.accuracy, n_images)
    ax.errorbar(probit(wide.loc[model, clean], n_images), y,
                yerr=[[y - probit(ours.ci_low, n_images)], [probit(ours.ci_high, n_images) - y]],
                fmt="*", color="C3", ms=12, capsize=3, label=f"{model} (99.5% CI)")
    ax.axhline(probit(1 / ours.classes, n_images), color="gray", ls=":", lw=1, label="chance")
    ax.set_xlabel("probit(clean accuracy)" if clean == "clean" else f"probit(clean accuracy, {shifted}'s classes)")
    ax.set_ylabel(f"probit(accuracy on the {shifted} split)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
