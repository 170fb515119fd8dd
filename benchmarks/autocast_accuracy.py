#!/usr/bin/env python
"""Does bf16 autocast on CPU change what Diffusion Classifier predicts? The same test images, timesteps and
noise scored in float32 and under bf16 autocast; accuracy of each, the images where they disagree, an exact
McNemar test, and the speed of each.

    python benchmarks/autocast_accuracy.py [--model embedded:mnist] [--dataset embedded:mnist-test] [--n-images 200]

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dclib import DiffusionClassifier, even_plan  # noqa: E402
from dclib.data import load_embedded  # noqa: E402
from dclib.experiments import score_dataset  # noqa: E402
from dclib.verdicts import mcnemar  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded:mnist")
    ap.add_argument("--dataset", default="embedded:mnist-test")
    ap.add_argument("--n-images", type=int, default=200)
    ap.add_argument("--timesteps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    data = load_embedded(args.dataset)
    rows = {}
    sets = {}
    for name, autocast in (("float32", None), ("bf16 autocast", "bfloat16")):
        clf = DiffusionClassifier.from_pretrained(args.model, autocast=autocast)
        started = time.perf_counter()
        sets[name] = score_dataset(clf, data, even_plan(args.timesteps, clf.adapter.num_train_timesteps),
                                   n_images=args.n_images, batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - started
        acc, low, high = sets[name].accuracy_ci()
        evals = sets[name].errors.shape[0] * sets[name].errors.shape[1] * sets[name].errors.shape[2]
        rows[name] = {"accuracy": acc, "ci95": [low, high], "seconds": round(seconds, 1),
                      "evals_per_s": round(evals / seconds, 1)}
    a, b = sets["float32"], sets["bf16 autocast"]
    print(json.dumps({
        "device": f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": args.model, "dataset": args.dataset, "n_images": a.n_images, "timesteps": args.timesteps,
        "results": rows, "different_predictions": int((a.predictions() != b.predictions()).sum()),
        "max_abs_error_diff": float(abs(a.errors - b.errors).max()),
        "mcnemar_float32_vs_bf16": mcnemar("float32 vs bf16", a, b).__dict__}, indent=1))


if __name__ == "__main__":
    main()
