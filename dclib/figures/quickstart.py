"""Figures of notebooks/quickstart.ipynb."""
from __future__ import annotations

from typing import Sequence


def predictions_figure(images: Sequence, labels: Sequence[int], results: Sequence, class_names: Sequence[str]):
    """Each image with its label and prediction (red when wrong) above the mean error of every class minus the
    lowest (the predicted class in red): ``results[i]`` is the :class:`dclib.decide.Classification` of
    ``images[i]``, whose true class index is ``labels[i]``."""
    import matplotlib.pyplot as plt  # picks a backend on import: only drawing needs it

    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), gridspec_kw={"height_ratios": [1, 1.2]}, squeeze=False)
    for k, (image, label, r) in enumerate(zip(images, labels, results)):
        axes[0, k].imshow(image, cmap="gray_r")
        axes[0, k].set_title(f"label {class_names[label]}\npred {r.prediction_name}", fontsize=9,
                             color="black" if r.prediction == label else "red")
        axes[0, k].axis("off")
        errors = r.class_errors
        axes[1, k].bar(range(len(errors)), errors - errors.min(),
                       color=["C3" if i == r.prediction else "C0" for i in range(len(errors))])
        axes[1, k].set_xticks(range(0, len(errors), 3))
        axes[1, k].set_yticks([])
    axes[1, 0].set_ylabel("error - min")
    fig.tight_layout()
    return fig
