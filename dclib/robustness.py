"""Effective robustness (Taori et al. 2020) of a diffusion classifier against discriminative models trained on the
same labels: the analogue of the paper's Table 4 and Fig. 6.

The paper finds DiT's Diffusion Classifier well above the line through ImageNet classifiers on **ImageNet-A**,
a set of natural images collected because they fool a ResNet-50 (natural adversarial examples), and reports no
such gain on ImageNet-V2 or ObjectNet. The analogue here is :func:`adversarial_split`: shifted test images
(every embedded shift pooled) that a held-out discriminative filter model misclassifies. The line is fitted on
probit-scaled accuracies, as Taori et al. do, with accuracies of 0 or 1 moved half an image inwards so the
probit stays finite.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .baselines import CNNClassifier, make_baseline_family, prepare
from .classifier import DiffusionClassifier
from .data import embedded_arrays, load_embedded
from .data.common import ImageSplit, split_to_dataset
from .data.shifts import shifted_test_split
from .experiments import score_dataset
from .plan import even_plan
from .stats import clopper_pearson, expected_ood, fit_line

# The filter plays ResNet-50's role for ImageNet-A: a discriminative model trained on the same split, kept out of
# the fitted family (its own seed and width), whose mistakes define the adversarial set.
FILTER_WIDTH = 16


def adversarial_split(task: str, filter_model, resolution: int, shifts) -> ImageSplit:
    """The shifted test images of ``task`` (every shift in ``shifts``, pooled) that ``filter_model`` (fitted on the
    training split at ``resolution``) misclassifies."""
    pool = [shifted_test_split(task, s) for s in shifts]
    # Image-major order (image 0 under every shift, then image 1, ...), so that any prefix mixes all shifts.
    images = np.stack([p.images for p in pool], axis=1).reshape(-1, *pool[0].images.shape[1:])
    labels = np.stack([np.asarray(p.labels) for p in pool], axis=1).reshape(-1)
    ids = [i for row in zip(*(p.ids for p in pool)) for i in row]
    wrong = np.flatnonzero(filter_model.predict(prepare(images, resolution)) != labels)
    return ImageSplit(images=images[wrong], labels=labels[wrong].tolist(), ids=[ids[i] for i in wrong],
                      class_names=pool[0].class_names, extra={})


def robustness_comparison(model: str, task: str, resolution: int, shifts, n_images: int, n_timesteps: int,
                          cnn_epochs: int, seed: int = 0):
    """Accuracy of the discriminative family and of Diffusion Classifier on the clean test split, each shift and
    the adversarial split (the first ``n_images`` of each). Returns (table with one row per method and set,
    per-image correctness of Diffusion Classifier by set)."""
    train = embedded_arrays(f"{task}-train")
    x_train, y_train = prepare(train.images, resolution), np.asarray(train.labels)
    filter_model = CNNClassifier(epochs=cnn_epochs, seed=seed + 1, width=FILTER_WIDTH).fit(x_train, y_train)
    splits = {"clean": embedded_arrays(f"{task}-test"), **{s: shifted_test_split(task, s) for s in shifts},
              "adversarial": adversarial_split(task, filter_model, resolution, shifts)}
    rows = []
    for method, clf in make_baseline_family(seed, cnn_epochs).items():
        clf.fit(x_train, y_train)
        for name, split in splits.items():
            x, y = prepare(split.images[:n_images], resolution), np.asarray(split.labels[:n_images])
            rows.append({"method": method, "set": name, "correct": int((clf.predict(x) == y).sum()), "n": len(y)})
    dc = DiffusionClassifier.from_pretrained(model)
    right = {}
    for name, split in splits.items():
        data = load_embedded(f"{task}-test") if name == "clean" else split_to_dataset(split)
        errors = score_dataset(dc, data, even_plan(n_timesteps, dc.adapter.num_train_timesteps), n_images=n_images,
                               seed=seed, progress=False)
        right[name] = errors.predictions() == errors.labels
        rows.append({"method": "Diffusion Classifier", "set": name, "correct": int(right[name].sum()),
                     "n": len(right[name])})
    table = pd.DataFrame(rows)
    table["classes"] = len(train.class_names)
    table["accuracy"] = table.correct / table.n
    table[["ci_low", "ci_high"]] = [clopper_pearson(c, n, 0.995) for c, n in zip(table.correct, table.n)]
    return table, right


def line_reference(table: pd.DataFrame, shifted: str, model: str = "Diffusion Classifier") -> dict:
    """Where the discriminative models' probit line puts ``model`` on set ``shifted``, given its clean accuracy.

    ``reference`` is the larger of that prediction and chance: a classifier at or below chance shows no
    robustness, whatever the line predicts."""
    wide = table.pivot(index="method", columns="set", values="accuracy")
    n = table.pivot(index="method", columns="set", values="n")
    family = [m for m in wide.index if m != model]
    coeffs = fit_line(wide.loc[family, "clean"], wide.loc[family, shifted], n.loc[family, "clean"],
                      n.loc[family, shifted])
    line = expected_ood(coeffs, wide.loc[model, "clean"], n.loc[model, "clean"])
    return {"set": shifted, "slope": float(coeffs[0]), "intercept": float(coeffs[1]), "line": line,
            "reference": max(line, 1 / int(table.classes.iloc[0])), "accuracy": float(wide.loc[model, shifted]),
            "effective robustness": float(wide.loc[model, shifted]) - line}
