#!/usr/bin/env python
"""Time and peak memory of classifying one image vs the number of conditionings (10, 100, 1000 prompts) on a
tiny Stable Diffusion pipeline built from configs (random weights; the cost is what is measured).

    python benchmarks/scaling.py [--classes 10,100,1000] [--timesteps 5] [--batch-size 256]

Each class count runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own; the
engine streams (conditioning x sample) pairs in fixed-size batches, so the peak should grow only with the
cached prompt embeddings, not with the number of pairs. Prints one JSON object:
{"device": ..., "results": [{"classes", "evaluations", "seconds", "evals_per_s", "peak_rss_mb",
"rss_before_classify_mb", "embeddings_mb", "peak_rss_mb_mmap_threshold_pinned"}, ...]}: the last is the same
run with glibc's MALLOC_MMAP_THRESHOLD_ pinned at 64 KiB (no heap growth from freed activations).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def one(n_classes: int, timesteps: int, batch_size: int, model_dir: str) -> dict:
    import resource

    import numpy as np
    import torch

    sys.path.insert(0, ROOT)
    from dclib import DiffusionClassifier

    torch.manual_seed(0)
    clf = DiffusionClassifier.from_pretrained(model_dir)
    image = (np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)
    prompts = [f"class {k}" for k in range(n_classes)]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = clf.classify(image, prompts=prompts, schedule=str(timesteps), batch_size=batch_size)
    seconds = time.perf_counter() - started
    emb = clf.adapter.encode_conditions(prompts[:1])
    return {"classes": n_classes, "evaluations": int(result.evaluations), "seconds": round(seconds, 3),
            "evals_per_s": round(result.evaluations / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_classify_mb": round(base_rss, 1),
            "embeddings_mb": round(emb.numel() * emb.element_size() * n_classes / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", default="10,100,1000")
    ap.add_argument("--timesteps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.timesteps, args.batch_size, args.model_dir)))
        return
    import tempfile

    import torch

    sys.path.insert(0, ROOT)
    from dclib.testing import tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "tiny-sd")
        tiny_sd_pipeline().save_pretrained(model_dir, safe_serialization=True)

        def child(n: int, **env) -> dict:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--timesteps", str(args.timesteps),
                                  "--batch-size", str(args.batch_size), "--model-dir", model_dir],
                                 check=True, capture_output=True, text=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
            return json.loads(out.stdout.strip().splitlines()[-1])

        results = []
        for n in map(int, args.classes.split(",")):
            row = child(n)
            # glibc raises its mmap threshold after large frees, so freed UNet activations stay in the heap and
            # the process's peak grows with the number of batches. A second run with the threshold pinned
            # separates that allocator effect from what the engine itself keeps.
            row["peak_rss_mb_mmap_threshold_pinned"] = child(n, MALLOC_MMAP_THRESHOLD_="65536")["peak_rss_mb"]
            results.append(row)
    print(json.dumps({"device": f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                      "model": "tiny StableDiffusionPipeline (dclib.testing.tiny_sd_pipeline)",
                      "timesteps": args.timesteps, "batch_size": args.batch_size, "results": results}, indent=1))


if __name__ == "__main__":
    main()
