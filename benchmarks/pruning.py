#!/usr/bin/env python
"""Accuracy vs denoiser evaluations per image: Algorithm 1 at several budgets, the paper's Algorithm 2
schedules (Table 6's 10-class shapes, on a 100-timestep grid), dclib's statistical paired-test pruning, and
top-k pre-pruning with a weak discriminative model (Appendix B), on the embedded tasks.

    python benchmarks/pruning.py [--tasks digits,mnist,shapes-shape,zeroshot] [--n-images 300] [--live 10]

Every method is replayed from one saved full error matrix per task (Even 100, shared noise; cached under
benchmarks/.cache), so all methods see exactly the same (t, eps) samples; ``--live`` images are then
classified for real with the paper schedule and each paired setting, and must give the replayed predictions
and evaluation counts. Prints one JSON object: {"results": [{"task", "method", "accuracy",
"evaluations_per_image", ...}], "live_check": ..., "targets": ...}.
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

from dclib import DiffusionClassifier  # noqa: E402
from dclib.experiments import cached, score_dataset  # noqa: E402
from dclib.plan import even_plan  # noqa: E402
from dclib.pruning import Method, compare_methods, live_check, top_k_candidates  # noqa: E402

CACHE = Path(__file__).parent / ".cache"
GRID = 100
ALGORITHM_1 = ["5", "10", "20", "50", "100"]
# Table 6 for the 10-class datasets: CIFAR-10 "5,1:50,500" and STL-10 "5,1:100,500", on a grid of 100
PAPER = {"5,1:10,100": "Table 6 CIFAR-10 shape", "5,1:20,100": "Table 6 STL-10 shape"}
PAIRED = ["paired:100,alpha=0.001", "paired:100,alpha=0.01", "paired:100,alpha=0.05", "paired:100,alpha=0.2"]


def task_setup(task: str, n_images: int, seed: int):
    """(classifier, dataset, conditionings or None, weak class scores [n, K] (higher = likelier), weak model name)."""
    from dclib.data import embedded_arrays, load_embedded

    if task in ("digits", "mnist"):
        from dclib.baselines import CNNClassifier, prepare

        clf = DiffusionClassifier.from_pretrained(f"embedded:{task}")
        data = load_embedded(f"{task}-test").select(range(n_images))
        train = embedded_arrays(f"{task}-train")
        res = clf.adapter.resolution
        # deliberately weak: a few epochs (the paper's pre-pruner only needs a high top-k accuracy)
        weak = CNNClassifier(epochs=2, seed=seed).fit(prepare(train.images, res), np.asarray(train.labels))
        probs = weak.predict_proba(prepare([np.asarray(im) for im in data["image"]], res))
        return clf, data, None, probs, "CNN, 2 epochs"
    if task.startswith("shapes-"):
        from dclib.contrastive import ContrastiveModel
        from dclib.data import zero_shot_task
        from dclib.prompts import Conditionings

        data, _, rows = zero_shot_task(task.split("-", 1)[1])
        data = data.select(range(min(n_images, len(data))))
        clf = DiffusionClassifier.from_pretrained("embedded:shapes")
        weak = ContrastiveModel.from_pretrained("embedded:shapes-clip")
        # class scores rank the classes as probabilities would: top-k and argmax need nothing more
        return clf, data, Conditionings.from_rows(rows), weak.classify(list(data["image"]), rows).class_scores, \
            "embedded:shapes-clip"
    if task == "zeroshot":  # the zero-shot benchmark: 24 fine-grained classes, cluttered scenes, held-out wording
        from dclib.contrastive import ContrastiveModel
        from dclib.experiments import open_experiment

        clf, data, conds = open_experiment("embedded:zeroshot", "embedded:zeroshot-test", n_images=n_images)
        weak = ContrastiveModel.from_pretrained("embedded:shapes-clip")
        return clf, data, conds, weak.classify(list(data["image"]), conds).class_scores, "embedded:shapes-clip"
    raise SystemExit(f"unknown task {task!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="digits,mnist")
    ap.add_argument("--n-images", type=int, default=300)
    ap.add_argument("--live", type=int, default=10, help="images re-classified live to confirm the replay")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--cache", type=Path, default=CACHE, help="folder of the saved full error matrices")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    results, live, targets = [], [], []
    for task in args.tasks.split(","):
        clf, data, conds, weak_scores, weak_name = task_setup(task, args.n_images, args.seed)
        started = time.perf_counter()
        errors = cached(args.cache / f"{task}-even{GRID}-n{len(data)}-seed{args.seed}.npz",
                        lambda: score_dataset(clf, data, even_plan(GRID, clf.adapter.num_train_timesteps),
                                              conditionings=conds, seed=args.seed, batch_size=args.batch_size))
        score_seconds = time.perf_counter() - started
        top = top_k_candidates(weak_scores, args.top_k)
        weak_acc = float((weak_scores.argmax(1) == errors.labels).mean())
        weak_topk = float(np.mean([label in t for label, t in zip(errors.labels, top)]))

        # Algorithm 1 with n timesteps: n strided points of the saved 100-grid, the way the official adaptive code
        # takes a stage's timesteps (the official even grid of n itself is not a subset: 100, 300, ... vs 105, ...)
        paper_methods = [Method(f"Algorithm 2 {s} ({name})", s) for s, name in PAPER.items()]
        paired_methods = [Method(f"paired pruning, {s.split(',', 1)[1]}", s) for s in PAIRED]
        top_methods = [Method(f"{weak_name} top-{args.top_k} + Algorithm 1, 100", "100", top),
                       Method(f"{weak_name} top-{args.top_k} + paired, alpha=0.01", "paired:100,alpha=0.01", top)]
        table, _ = compare_methods(errors, GRID, [int(n) for n in ALGORITHM_1],
                                   paper_methods + paired_methods + top_methods, clf.adapter.num_train_timesteps)
        rows = {r["method"]: {"task": task, **{k: v for k, v in r.items() if k not in ("seconds_per_image",
                                                                                   "live equals replay")},
                              "n": errors.n_images} for r in table.to_dict("records")}
        for m in top_methods:
            rows[m.label].update(weak_accuracy=weak_acc, weak_top_k_accuracy=weak_topk)
        results.extend(rows.values())
        paper = [rows[m.label] for m in paper_methods]
        paired = [rows[m.label] for m in paired_methods]

        # The target: the paper schedule's accuracy with at most half its evaluations, or higher
        # accuracy at no more evaluations.
        for p in paper:
            wins = [q for q in paired if (q["accuracy"] >= p["accuracy"] and q["evaluations_per_image"] <= 0.5 * p["evaluations_per_image"])
                    or (q["accuracy"] > p["accuracy"] and q["evaluations_per_image"] <= p["evaluations_per_image"])]
            targets.append({"task": task, "paper_schedule": p["schedule"], "paper_accuracy": p["accuracy"],
                            "paper_evaluations": p["evaluations_per_image"],
                            "met_by": [q["schedule"] for q in wins]})

        # live confirmation: the same predictions and evaluation counts from real model calls
        sample = errors.n_images if args.live < 0 else min(args.live, errors.n_images)
        for schedule in list(PAPER) + PAIRED:
            live.append({"task": task, **live_check(clf, data, errors, schedule, sample, prompts=conds,
                                                    seed=args.seed, batch_size=args.batch_size)})
        results.append({"task": task, "method": "(full error matrix)", "seconds": round(score_seconds, 1),
                        "n": errors.n_images})
    print(json.dumps({"device": f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                      "grid": GRID, "results": results, "live_check": live, "targets": targets}, indent=1))


if __name__ == "__main__":
    main()
