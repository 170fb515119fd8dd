#!/usr/bin/env python
"""Cost against the number of classes: evaluations per image and top-1 (95% intervals) for nested, seeded class
subsets of one zero-shot task, for a reference fixed in advance and the pruning schedules dclib offers.

    python benchmarks/class_scaling.py [--model embedded:zeroshot] [--dataset embedded:zeroshot-test]
        [--classes 6,12,24] [--n-images 240] [--grid 50]

Methods, on the same images and (t, eps) samples (one saved full error matrix on the official ``--grid``,
replayed; noise keyed by image id, so a live run gives the same predictions):

* (a) reference: Algorithm 1 with 25 evenly strided timesteps of the grid;
* (b) paired pruning (``paired:GRID,alpha=0.01``);
* (c) top-k pre-pruning with the contrastive model, then Algorithm 1 with 25 timesteps;
* (d) the label tree from the prompts' text embeddings (``dclib.label_tree.tree_from_embeddings``), pruned with
  :class:`dclib.schedules.TreeSchedule`;
* (e) top-k, then the tree.

A class subset keeps the images of its classes and only their prompts. Per method and class count: accuracy
with its Clopper-Pearson interval, evaluations per image, the paired accuracy difference to (a) with its
Agresti-Min interval, and the seconds spent building the tree. The fitted log-log slope of evaluations against
classes is reported only for methods whose lower 95% bound of the difference to (a) is above -3 points at every
class count. Seconds per image are not measured live here: ``evals_per_second`` of the full scoring pass is given
to convert. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dclib import verdicts  # noqa: E402
from dclib.contrastive import ContrastiveModel  # noqa: E402
from dclib.experiments import ErrorSet, cached, open_experiment, score_dataset  # noqa: E402
from dclib.label_tree import prompt_embeddings, tree_from_embeddings  # noqa: E402
from dclib.plan import even_plan, strided_positions  # noqa: E402
from dclib.prompts import Conditionings  # noqa: E402
from dclib.pruning import replay, top_k_candidates  # noqa: E402
from dclib.schedules import TreeSchedule  # noqa: E402
from dclib.stats import clopper_pearson  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
REFERENCE_TIMESTEPS = 25
MARGIN = 0.03  # the accuracy bound: the difference to (a) no worse than -3 points (95% lower bound)


def class_subset(errors: ErrorSet, conds: Conditionings, scores: np.ndarray, classes: np.ndarray):
    """The images of ``classes`` and only their prompts, classes renumbered 0..k-1 in ``classes``' order."""
    new = {int(c): i for i, c in enumerate(classes)}
    images = np.flatnonzero(np.isin(errors.labels, classes))
    rows = np.flatnonzero(np.isin(conds.class_idx, classes))
    subset = ErrorSet(errors.errors[images][:, rows], errors.timesteps[images],
                      np.array([new[int(y)] for y in errors.labels[images]]),
                      np.array([new[int(conds.class_idx[r])] for r in rows]), [errors.ids[i] for i in images])
    sub_conds = Conditionings(tuple(conds.values[r] for r in rows), tuple(new[int(conds.class_idx[r])] for r in rows),
                              tuple(conds.class_names[int(c)] for c in classes))
    return subset, sub_conds, rows, scores[images][:, classes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded:zeroshot")
    ap.add_argument("--dataset", default="embedded:zeroshot-test")
    ap.add_argument("--contrastive", default="embedded:shapes-clip")
    ap.add_argument("--classes", default="6,12,24")
    ap.add_argument("--n-images", type=int, default=240)
    ap.add_argument("--grid", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--branching", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    clf, data, conds = open_experiment(args.model, args.dataset, n_images=args.n_images)
    name = f"{args.model}-{args.dataset}".replace(":", "_").replace("/", "_")
    started = time.perf_counter()
    errors = cached(args.cache / f"class-scaling-{name}-even{args.grid}-n{len(data)}-seed{args.seed}.npz",
                    lambda: score_dataset(clf, data, even_plan(args.grid, clf.adapter.num_train_timesteps),
                                          conditionings=conds, seed=args.seed, batch_size=args.batch_size))
    scoring_seconds = time.perf_counter() - started
    weak = ContrastiveModel.from_pretrained(args.contrastive).classify(list(data["image"]), conds).class_scores
    embeddings = prompt_embeddings(clf, conds)
    order = np.random.default_rng(args.seed).permutation(conds.n_classes)  # nested subsets: prefixes of one order
    T = clf.adapter.num_train_timesteps
    reference_columns = strided_positions(args.grid, REFERENCE_TIMESTEPS)

    results = []
    for k in [int(v) for v in args.classes.split(",")]:
        classes = np.sort(order[:k])
        subset, sub_conds, rows, sub_scores = class_subset(errors, conds, weak, classes)
        built = time.perf_counter()
        tree = tree_from_embeddings(sub_conds, embeddings[rows], branching=args.branching)
        tree_seconds = time.perf_counter() - built
        top = top_k_candidates(sub_scores, min(args.top_k, k))
        tree_schedule = TreeSchedule(tree, n_timesteps=args.grid, alpha=0.01)
        reference = subset.predictions(reference_columns) == subset.labels
        methods = {
            "(a) Algorithm 1, 25 timesteps": None,
            "(b) paired pruning": (f"paired:{args.grid},alpha=0.01", None),
            f"(c) top-{args.top_k} + Algorithm 1, 25": (str(REFERENCE_TIMESTEPS), top),
            "(d) label tree": (tree_schedule, None),
            f"(e) top-{args.top_k} + label tree": (tree_schedule, top),
        }
        for label, method in methods.items():
            if method is None:
                right, evaluations = reference, REFERENCE_TIMESTEPS * len(sub_conds)
            elif method[0] == str(REFERENCE_TIMESTEPS):  # top-k + (a): the same strided columns, candidates only
                keep = [np.isin(subset.class_idx, top[i]) for i in range(subset.n_images)]
                means = subset.errors[..., reference_columns].mean(-1)
                right = np.array([subset.class_idx[np.where(keep[i], means[i], np.inf).argmin()] == subset.labels[i]
                                  for i in range(subset.n_images)])
                evaluations = REFERENCE_TIMESTEPS * float(np.mean([k.sum() for k in keep]))
            else:
                out = replay(subset, method[0], method[1], T, details=True)
                right = np.array(out["predictions"]) == subset.labels
                evaluations = out["evaluations_per_image"]
            a, b = int((right & ~reference).sum()), int((~right & reference).sum())
            d, se, z = verdicts.agresti_min(a, b, len(right))
            results.append({"classes": k, "method": label, "n_images": int(len(right)),
                            "accuracy": round(float(right.mean()), 4),
                            "accuracy_ci": [round(v, 4) for v in clopper_pearson(int(right.sum()), len(right))],
                            "evaluations_per_image": round(float(evaluations), 1),
                            "difference_to_a": round(float(right.mean() - reference.mean()), 4),
                            "difference_ci": [round(d - z * se, 4), round(d + z * se, 4)],
                            "tree_seconds": round(tree_seconds, 3) if "tree" in label else None})
    slopes = {}
    for label in dict.fromkeys(r["method"] for r in results):
        curve = [r for r in results if r["method"] == label]
        if all(r["difference_ci"][0] >= -MARGIN for r in curve) and len(curve) > 1:
            x = np.log([r["classes"] for r in curve])
            y = np.log([r["evaluations_per_image"] for r in curve])
            slopes[label] = round(float(np.polyfit(x, y, 1)[0]), 3)
    n_evals = errors.errors.size
    device = f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(json.dumps({"device": device,
                      "model": args.model, "dataset": args.dataset, "grid": args.grid,
                      "scoring_seconds": round(scoring_seconds, 1),
                      "evals_per_second": round(n_evals / scoring_seconds, 1) if scoring_seconds > 1 else None,
                      "results": results, "log_log_slopes_within_bound": slopes}, indent=1))


if __name__ == "__main__":
    main()
