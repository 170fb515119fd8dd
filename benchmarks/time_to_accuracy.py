#!/usr/bin/env python
"""Time to the same accuracy: the official Diffusion Classifier evaluation (Algorithm 2 with the paper's
schedule, one image at a time, the denoiser called in batches of 32, no dclib engine) vs dclib's best default
configuration (the scoring engine with batch_size="auto" and row-parallel CPU calls, paired-test pruning, and
optionally top-k pre-pruning with a weak model), on the same images of each embedded task.

    python benchmarks/time_to_accuracy.py [--tasks digits,mnist,shapes-shape,shapes-colour] [--n-images 100]
                                          [--paper-schedule 5,1:10,100] [--dclib-schedule paired:100,alpha=0.01]
                                          [--top-k K]

Both sides classify every image live (real denoiser calls; nothing is replayed), image by image in
alternating order so that drift in the machine's speed falls on both alike, after one untimed warm-up image
each. The reference is ``reference_errors`` of benchmarks/throughput.py (the official eval_prob_adaptive.py
loop: Python lists of (prompt, t, noise index), batches of 32, the eager denoiser) driven stage by stage as
the official Algorithm 2 does (keep the lowest mean errors over all samples seen so far). It takes the
official stage timesteps and, to see the same (t, eps) samples as dclib, dclib's keyed noise. Each side's time
per image runs from the image to its prediction (preprocessing, encoding, noise, denoiser calls); the
reference encodes the conditionings once per task, as the official code does, dclib once per image.
With ``--top-k`` the weak model's cost is bounded by the whole wall time of ``task_setup`` of
benchmarks/pruning.py (loading the data and models, training and running the weak model) spread over the
images, and added to dclib's time for the ratio.

Prints one JSON object: {"machine": {"cpu", "cpu_count", "torch_threads", "torch"}, "paper_schedule",
"dclib_schedule", "top_k", "results": [{"task", "n", "reference": {...}, "dclib": {...}, "speedup",
"mcnemar": {...}, "not_worse", "agreement"}]}; each side has "seconds_per_image", "evaluations_per_image",
"accuracy", "ci_low", "ci_high" (Clopper-Pearson 95%). "speedup" is the reference's seconds per image over
dclib's; "not_worse" is: not (exact McNemar p < 0.05 and dclib less accurate).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), HERE]

from pruning import PAPER, task_setup  # noqa: E402  (benchmarks/pruning.py)
from throughput import reference_errors  # noqa: E402  (benchmarks/throughput.py)

from dclib.adapters.cpu_threads import plan_workers  # noqa: E402
from dclib.stats import clopper_pearson  # noqa: E402
from dclib.noise import make_noise  # noqa: E402
from dclib.schedules import Schedule  # noqa: E402
from dclib.prompts import Conditionings  # noqa: E402
from dclib.pruning import classify_live, top_k_candidates  # noqa: E402
from dclib.scoring import auto_batch_size  # noqa: E402
from dclib.verdicts import mcnemar  # noqa: E402

TASKS = "digits,mnist,shapes-shape,shapes-colour"
PAPER_SCHEDULE = next(s for s, name in PAPER.items() if "CIFAR-10" in name)  # Table 6's 10-class schedule
DCLIB_SCHEDULE = "paired:100,alpha=0.01"
OFFICIAL_BATCH = 32


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def official_classify(clf, cond, conds: Conditionings, image, image_id, schedule: Schedule, seed: int):
    """One image the official way: Algorithm 2 stage by stage, every stage's (prompt, t) pairs through the
    reference loop in batches of 32, then the ``keep`` prompts with the lowest mean error over all their samples
    survive. Returns (predicted class, denoiser evaluations)."""
    adapter = clf.adapter
    x0, _ = clf.encode_image(image)
    alive = list(range(len(conds)))
    seen = [[] for _ in alive]  # per prompt, its errors so far
    evaluations = 0
    for keep, plan in zip(schedule.keep, schedule.stage_plans(adapter.num_train_timesteps)):
        if len(plan):
            noise = make_noise(plan, x0.shape, seed, image_id)
            errors = reference_errors(adapter, x0, cond[alive], torch.tensor(plan.timesteps), noise,
                                      batch_size=OFFICIAL_BATCH)
            for row, c in zip(errors.tolist(), alive):
                seen[c].extend(row)
            evaluations += len(alive) * len(plan)
        alive = sorted(alive, key=lambda c: (float(np.mean(seen[c])), c))[:keep]
    return int(conds.class_idx[alive[0]]), evaluations


def restrict(conds: Conditionings, classes) -> Conditionings:
    """The conditionings of ``classes`` only (top-k pre-pruning of a text-conditioned task)."""
    keep = {int(c) for c in classes}
    rows = [i for i, k in enumerate(conds.class_idx) if k in keep]
    return Conditionings(tuple(conds.values[i] for i in rows), tuple(conds.class_idx[i] for i in rows),
                         conds.class_names)


def summary(predictions, evaluations, seconds, labels, schedule, **extra) -> dict:
    correct = int(np.sum(np.asarray(predictions) == labels))
    low, high = clopper_pearson(correct, len(labels))
    return {"schedule": schedule, **extra, "seconds_per_image": float(np.mean(seconds)),
            "evaluations_per_image": float(np.mean(evaluations)), "accuracy": correct / len(labels),
            "ci_low": low, "ci_high": high}


def run_task(task: str, args) -> dict:
    started = time.perf_counter()
    clf, data, conds, weak_scores, weak_name = task_setup(task, args.n_images, args.seed)
    setup_seconds = time.perf_counter() - started
    adapter = clf.adapter
    n = len(data)
    labels = np.asarray(data["label"])
    all_conds = conds if conds is not None else clf.conditionings()
    cond = adapter.encode_conditions(list(all_conds.values))  # the official code encodes the prompts once
    paper = Schedule.parse(args.paper_schedule)
    top = top_k_candidates(weak_scores, args.top_k) if args.top_k else None

    def reference(i):
        row = data[i]
        t0 = time.perf_counter()
        pred, evals = official_classify(clf, cond, all_conds, row["image"], row["id"], paper, args.seed)
        return pred, evals, time.perf_counter() - t0

    def ours(i):
        one = data.select([i])  # classify_live keys the noise by the row's id, as the reference does
        if top is None:
            out = classify_live(clf, one, 1, args.dclib_schedule, prompts=conds, seed=args.seed)
        elif conds is None:  # class-conditional: the candidates are class labels
            out = classify_live(clf, one, 1, args.dclib_schedule, top[i:i + 1], seed=args.seed)
        else:  # text prompts: the candidates' prompts
            out = classify_live(clf, one, 1, args.dclib_schedule, prompts=restrict(conds, top[i]), seed=args.seed)
        return out["predictions"][0], out["evaluations"][0], out["seconds_per_image"]

    reference(0), ours(0)  # untimed warm-up (allocations, worker threads)
    runs = {reference: [], ours: []}
    for i in range(n):
        for side in ((reference, ours) if i % 2 == 0 else (ours, reference)):
            runs[side].append(side(i))
    (ref_pred, ref_evals, ref_s), (our_pred, our_evals, our_s) = (list(zip(*runs[reference])),
                                                                  list(zip(*runs[ours])))
    batch = auto_batch_size(adapter)
    ref = summary(ref_pred, ref_evals, ref_s, labels, str(paper), batch_size=OFFICIAL_BATCH)
    dc = summary(our_pred, our_evals, our_s, labels, str(Schedule.parse(args.dclib_schedule)), batch_size=batch,
                 top_k=args.top_k or None)
    if adapter.device.type == "cpu":
        dc["cpu_workers"], dc["cpu_threads_per_worker"] = plan_workers(batch, adapter.cpu_workers)
    ours_total = dc["seconds_per_image"]
    if top is not None:
        dc["weak_model"] = weak_name
        dc["weak_top_k_accuracy"] = float(np.mean([label in t for label, t in zip(labels, top)]))
        dc["weak_seconds_per_image_bound"] = setup_seconds / n
        ours_total += setup_seconds / n
    test = mcnemar(f"{task}: dclib vs official", np.asarray(our_pred) == labels, np.asarray(ref_pred) == labels)
    return {"task": task, "n": n, "classes": all_conds.n_classes, "setup_seconds": round(setup_seconds, 1),
            "reference": ref, "dclib": dc, "speedup": ref["seconds_per_image"] / ours_total,
            "mcnemar": {"effect": test.effect, "p_value": test.p_value, "interval": test.interval,
                        "counts": test.counts},
            "not_worse": not (test.p_value < 0.05 and test.effect < 0),
            "agreement": float(np.mean(np.asarray(our_pred) == np.asarray(ref_pred)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--paper-schedule", default=PAPER_SCHEDULE,
                    help="the official side's Algorithm 2 schedule (default: Table 6's CIFAR-10 shape on a "
                         "100-timestep grid, as benchmarks/pruning.py; the paper's own is 5,1:50,500)")
    ap.add_argument("--dclib-schedule", default=DCLIB_SCHEDULE)
    ap.add_argument("--top-k", type=int, default=0, help="pre-prune to a weak model's top k classes (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    results = [run_task(task, args) for task in args.tasks.split(",") if task]
    print(json.dumps({"machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
                                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
                      "paper_schedule": args.paper_schedule, "dclib_schedule": args.dclib_schedule,
                      "top_k": args.top_k or None, "results": results}, indent=1))


if __name__ == "__main__":
    main()
