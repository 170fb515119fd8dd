#!/usr/bin/env python
"""Cost against the number of classes: evaluations and seconds per image and top-1 (95% intervals) at several class
counts, for a reference fixed in advance and the pruning schedules dclib offers, on the same images and noise.

    python benchmarks/class_scaling.py [--model embedded:manyclass] [--dataset "embedded:manyclass-test-{k}"]
        [--contrastive embedded:manyclass-clip] [--classes 25,50,100,200] [--n-images 250] [--grid 25]
        [--n-live 50] [--dev embedded:manyclass-dev] [--n-dev 100]

Class counts: a ``--dataset`` holding ``{k}`` opens one dataset per count (``embedded:manyclass-test-K``: nested
sets with the same class indices, each with its own prompt CSV), ``--n-images`` of each in a seeded class-balanced
order; any other dataset is cut into nested class subsets (prefixes of one seeded class order, a subset keeping the
images of its classes and only their prompts). Each count is scored once on the ``--grid`` evenly spaced timesteps
(shared noise keyed by image id; the errors kept in dclib's error cache under benchmarks/.cache/errors, keyed by
the weights and dclib's source) and every method replayed from it (:func:`dclib.pruning.compare_methods`), so all
methods see the same images and samples:

* (a) the reference, fixed in advance: Algorithm 1 with 25 evenly spaced timesteps (strided points of the grid);
* (b) paired pruning, ``paired:GRID,alpha=0.01``;
* (c) top-k pre-pruning with the contrastive model (Appendix B), then (a) on the k candidates;
* (d) the label tree: the dataset's own groups where it has them (``dclib.data.manyclass.class_groups``), and one
  built from the prompts' text embeddings (:func:`dclib.label_tree.tree_from_embeddings`), each pruned by
  :class:`dclib.schedules.TreeSchedule` at alpha 0.01;
* (e) the best combination: of top-k (k in ``--dev-top-k``) followed by (a), paired pruning or a tree, the one with
  the highest accuracy at no more than ``COST_SHARE`` of (a)'s evaluations, chosen by live runs on ``--n-dev`` images of the
  ``--dev`` split (classes of the count, images the measurement does not use), at the largest count.

At the largest count every method also runs live on the first ``--n-live`` images for its seconds per image, and
(b)-(e) are checked against their replay (same predictions and evaluation counts; (a) is its own replay). The contrastive
model's seconds per image and each tree's building seconds are reported beside. The paired accuracy difference to
(a) comes with its Agresti-Min interval; the fitted log-log slope of evaluations against classes is reported only
for methods whose lower 95% bound of that difference is at least -3 points at every count. Prints one JSON object.
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

from dclib import DiffusionClassifier, verdicts  # noqa: E402
from dclib.contrastive import ContrastiveModel  # noqa: E402
from dclib.data import load_embedded  # noqa: E402
from dclib.data.registry import embedded_prompt_file  # noqa: E402
from dclib.error_cache import ErrorCache  # noqa: E402
from dclib.experiments import ErrorSet, open_experiment, score_dataset  # noqa: E402
from dclib.label_tree import prompt_embeddings, tree_from_embeddings, tree_from_groups  # noqa: E402
from dclib.plan import even_plan, even_timesteps, strided_positions  # noqa: E402
from dclib.prompts import Conditionings, read_prompt_file  # noqa: E402
from dclib.pruning import LiveRun, Method, classify_live, compare_methods, top_k_candidates  # noqa: E402
from dclib.runs import stratified_order  # noqa: E402
from dclib.schedules import TreeSchedule  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
REFERENCE_TIMESTEPS = 25
REFERENCE = f"Algorithm 1, {REFERENCE_TIMESTEPS} timesteps"
MARGIN = 0.03      # the accuracy bound: the difference to (a) no worse than -3 points (95% lower bound)
COST_SHARE = 0.05  # (e) spends at most this share of (a)'s evaluations per image
ALPHA = 0.01       # paired and tree pruning


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
    return subset, sub_conds, rows, scores[images][:, classes], images


def class_groups_of(dataset: str, k: int):
    """The dataset's own label tree for its first ``k`` classes, where it has one (the many-class sets)."""
    if "manyclass" in dataset:
        from dclib.data import manyclass

        return manyclass.class_groups(k)
    return None


def open_count(args, clf, k: int):
    """(images, conditionings) of the ``k``-class problem of a ``{k}`` dataset: ``--n-images`` in a seeded
    class-balanced order, with the set's own prompt CSV (its class indices are the dataset's labels)."""
    name = args.dataset.format(k=k)
    data = load_embedded(name) if name.startswith("embedded:") else None
    if data is None:
        _, data, conds = open_experiment(clf, name, n_images=args.n_images, shuffle_seed=args.seed)
        return data, conds
    data = data.select(stratified_order(data["label"], seed=args.seed)[:args.n_images])
    return data, read_prompt_file(embedded_prompt_file(name))


def schedules_for(args, clf, conds, groups) -> tuple[dict, dict]:
    """What follows the pre-pruning (or runs alone) on one class count, by label: (a), paired pruning and the label
    trees; and {label: seconds to build it}."""
    embeddings = prompt_embeddings(clf, conds)
    schedules = {REFERENCE: str(REFERENCE_TIMESTEPS), "paired pruning": f"paired:{args.grid},alpha={ALPHA}"}
    seconds = {}
    builders = {"label tree, text embeddings": lambda: tree_from_embeddings(conds, embeddings, args.branching)}
    if groups is not None:
        builders = {"label tree, natural groups": lambda: tree_from_groups(conds, groups, embeddings), **builders}
    for label, build in builders.items():
        started = time.perf_counter()
        schedules[label] = TreeSchedule(build(), n_timesteps=args.grid, alpha=ALPHA)
        seconds[label] = round(time.perf_counter() - started, 3)
    return schedules, seconds


def methods_for(args, schedules: dict, weak_scores, combo: tuple | None) -> list[Method]:
    """(b)-(e) of one class count; ``combo``: (e)'s (top-k, label of what follows), or None."""
    k = weak_scores.shape[1]
    methods = [Method("(b) paired pruning", schedules["paired pruning"]),
               Method(f"(c) top-{min(args.top_k, k)} + {REFERENCE}", schedules[REFERENCE],
                      top_k_candidates(weak_scores, min(args.top_k, k)))]
    methods += [Method(f"(d) {label}", schedule) for label, schedule in schedules.items() if "tree" in label]
    if combo is not None:
        methods.append(Method(f"(e) top-{min(combo[0], k)} + {combo[1]}", schedules[combo[1]],
                              top_k_candidates(weak_scores, min(combo[0], k))))
    return methods


def choose_combination(args, clf, weak, k: int) -> dict:
    """(e): of top-k (each of ``--dev-top-k``) then (a), paired pruning or a tree, the combination with the highest
    live accuracy on ``--n-dev`` dev images of the ``k`` classes among those spending at most ``COST_SHARE`` of
    (a)'s evaluations per image (fewer evaluations break ties; with none that cheap, the cheapest of the most
    accurate)."""
    dev = load_embedded(args.dev)
    labels = dev["label"]
    dev = dev.select([i for i in stratified_order(labels, seed=args.seed) if labels[i] < k][:args.n_dev])
    conds = read_prompt_file(embedded_prompt_file(args.dataset.format(k=k)))
    weak_scores = weak.classify(list(dev["image"]), conds).class_scores
    schedules, _ = schedules_for(args, clf, conds, class_groups_of(args.dataset, k))
    budget = COST_SHARE * REFERENCE_TIMESTEPS * conds.n_classes
    tried = []
    for top_k in args.dev_top_k:
        candidates = top_k_candidates(weak_scores, min(top_k, conds.n_classes))
        for label, schedule in schedules.items():
            live = classify_live(clf, dev, len(dev), schedule, candidates, prompts=conds, seed=args.seed,
                                 batch_size=args.batch_size)
            tried.append({"top_k": top_k, "then": label, "dev_accuracy": live["accuracy"],
                          "dev_evaluations_per_image": float(np.mean(live["evaluations"]))})
    within = [t for t in tried if t["dev_evaluations_per_image"] <= budget]
    best = max(within or tried, key=lambda t: (t["dev_accuracy"], -t["dev_evaluations_per_image"]))
    return {"dev": args.dev, "n_dev": len(dev), "classes": k, "budget_evaluations_per_image": budget,
            "tried": tried, "chosen": best, "within_budget": bool(within)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded:manyclass")
    ap.add_argument("--dataset", default="embedded:manyclass-test-{k}")
    ap.add_argument("--contrastive", default="embedded:manyclass-clip")
    ap.add_argument("--classes", default="25,50,100,200")
    ap.add_argument("--n-images", type=int, default=250)
    ap.add_argument("--grid", type=int, default=REFERENCE_TIMESTEPS)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--dev-top-k", default="5,10")
    ap.add_argument("--branching", type=int, default=4)
    ap.add_argument("--n-live", type=int, default=50)
    ap.add_argument("--dev", default="embedded:manyclass-dev")
    ap.add_argument("--n-dev", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    args.dev_top_k = [int(v) for v in args.dev_top_k.split(",") if v]
    counts = sorted(int(v) for v in args.classes.split(","))
    grid = even_timesteps(args.grid)
    if [grid[i] for i in strided_positions(args.grid, REFERENCE_TIMESTEPS)] != even_timesteps(REFERENCE_TIMESTEPS):
        raise SystemExit(f"--grid {args.grid}: its strided {REFERENCE_TIMESTEPS} points are not the official "
                         f"{REFERENCE_TIMESTEPS} evenly spaced timesteps (which (a) and (c) run); use 25")
    torch.manual_seed(args.seed)
    per_count = "{k}" in args.dataset

    clf = DiffusionClassifier.from_pretrained(args.model)
    weak = ContrastiveModel.from_pretrained(args.contrastive)
    T = clf.adapter.num_train_timesteps
    plan = even_plan(args.grid, T)

    cache = ErrorCache(args.cache / "errors")  # keyed by the model's weights and dclib's source: never stale

    def scored(data, conds):
        """(errors, seconds, evaluations made now): samples scored before are read back, not counted."""
        started = time.perf_counter()
        errors = score_dataset(clf, data, plan, conds, seed=args.seed, batch_size=args.batch_size, cache=cache)
        return errors, time.perf_counter() - started, errors.errors.size - errors.meta["cached_samples"] * len(conds)

    problems = {}  # k -> (errors, conds, data, weak scores, weak seconds per image)
    scoring_seconds, n_scored = 0.0, 0
    if per_count:
        for k in counts:
            data, conds = open_count(args, clf, k)
            errors, seconds, made = scored(data, conds)
            started = time.perf_counter()
            weak_scores = weak.classify(list(data["image"]), conds).class_scores
            problems[k] = (errors, conds, data, weak_scores, (time.perf_counter() - started) / len(data))
            scoring_seconds, n_scored = scoring_seconds + seconds, n_scored + made
    else:
        _, data, conds = open_experiment(clf, args.dataset, n_images=args.n_images, shuffle_seed=args.seed)
        errors, scoring_seconds, n_scored = scored(data, conds)
        started = time.perf_counter()
        weak_all = weak.classify(list(data["image"]), conds).class_scores
        weak_seconds = (time.perf_counter() - started) / len(data)
        order = np.random.default_rng(args.seed).permutation(conds.n_classes)  # nested: prefixes of one order
        for k in counts:
            subset, sub_conds, _, sub_scores, images = class_subset(errors, conds, weak_all, np.sort(order[:k]))
            problems[k] = (subset, sub_conds, data.select(images.tolist()), sub_scores, weak_seconds)

    largest = counts[-1]
    selection = choose_combination(args, clf, weak, largest) if per_count else None
    combo = None if selection is None else (selection["chosen"]["top_k"], selection["chosen"]["then"])
    results = []
    for k in counts:
        errors, conds, data, weak_scores, weak_seconds = problems[k]
        schedules, tree_seconds = schedules_for(args, clf, conds, class_groups_of(args.dataset, k) if per_count
                                                else None)
        live = LiveRun(clf, data, min(args.n_live, len(data)), conds, args.seed, args.batch_size) \
            if k == largest and args.n_live else None
        table, right = compare_methods(errors, args.grid, [REFERENCE_TIMESTEPS],
                                       methods_for(args, schedules, weak_scores, combo), T, live=live)
        reference = right[REFERENCE]
        for row in table.to_dict("records"):
            method, seconds = row["method"], row["seconds_per_image"]
            a = int((right[method] & ~reference).sum())
            b = int((~right[method] & reference).sum())
            d, se, z = verdicts.agresti_min(a, b, len(reference))
            results.append({
                "classes": k, "method": "(a) " + method if method == REFERENCE else method,
                "n_images": int(len(reference)), "accuracy": round(float(row["accuracy"]), 4),
                "accuracy_ci": [round(row["ci_low"], 4), round(row["ci_high"], 4)],
                "evaluations_per_image": round(float(row["evaluations_per_image"]), 1),
                "share_of_reference": round(float(row["evaluations_per_image"]) / (REFERENCE_TIMESTEPS * len(conds)),
                                            4),
                "seconds_per_image": None if seconds is None or np.isnan(seconds) else round(float(seconds), 3),
                "live_equals_replay": row["live equals replay"],
                "difference_to_a": round(float(right[method].mean() - reference.mean()), 4),
                "difference_ci": [round(d - z * se, 4), round(d + z * se, 4)],
                "tree_seconds": next((v for label, v in tree_seconds.items() if label in method), None),
                "contrastive_seconds_per_image": round(weak_seconds, 4) if "top-" in method else None})
    slopes = {}
    for label in dict.fromkeys(r["method"] for r in results):
        curve = [r for r in results if r["method"] == label]
        if len(curve) > 1 and all(r["difference_ci"][0] >= -MARGIN for r in curve):
            x = np.log([r["classes"] for r in curve])
            y = np.log([r["evaluations_per_image"] for r in curve])
            slopes[label] = round(float(np.polyfit(x, y, 1)[0]), 3)
    device = f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(json.dumps({"device": device, "model": args.model, "dataset": args.dataset, "contrastive": args.contrastive,
                      "grid": args.grid, "scoring_seconds": round(scoring_seconds, 1),
                      "evals_per_second": round(n_scored / scoring_seconds, 1) if n_scored and scoring_seconds > 1
                      else None,  # of the evaluations made in this run (none when every error was read back)
                      "combination": selection, "results": results, "log_log_slopes_within_bound": slopes},
                     indent=1, default=str))


if __name__ == "__main__":
    main()
