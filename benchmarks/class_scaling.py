#!/usr/bin/env python
"""Cost against the number of classes: evaluations and seconds per image and top-1 (95% intervals) at several class
counts, for a reference fixed in advance and the pruning schedules dclib offers, on the same images and noise
(what is measured, and how: :mod:`dclib.class_scaling`). Prints one JSON object.

    python benchmarks/class_scaling.py [--model embedded:manyclass] [--dataset "embedded:manyclass-test-{k}"]
        [--contrastive embedded:manyclass-clip] [--classes 25,50,100,200] [--n-images 250] [--grid 25]
        [--n-live 50] [--dev embedded:manyclass-dev] [--n-dev 100]

The errors are kept in dclib's error cache under benchmarks/.cache/errors (keyed by the weights and dclib's
source), so a stopped run goes on where it stopped. Beside the curve: the many-class targets at the largest count
(``dclib.class_scaling.targets``) and what the best combination would cost on ImageNet-1k if it kept its slope, at
the paper's own calls per second (``extrapolate``: an extrapolation, marked as one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dclib import DiffusionClassifier  # noqa: E402
from dclib.class_scaling import ScalingSetup, extrapolate, measure, targets  # noqa: E402
from dclib.contrastive import ContrastiveModel  # noqa: E402
from dclib.error_cache import ErrorCache  # noqa: E402

CACHE = Path(__file__).parent / ".cache"


def main() -> None:
    defaults = ScalingSetup()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="embedded:manyclass")
    ap.add_argument("--contrastive", default="embedded:manyclass-clip")
    for f in fields(ScalingSetup):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            ap.add_argument(f"--{f.name.replace('_', '-')}", default=",".join(map(str, value)),
                            type=lambda text: tuple(int(v) for v in text.split(",") if v))
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", default=value, type=type(value))
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    try:
        setup = ScalingSetup(**{f.name: getattr(args, f.name) for f in fields(ScalingSetup)})
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    clf = DiffusionClassifier.from_pretrained(args.model)
    weak = ContrastiveModel.from_pretrained(args.contrastive)
    report = measure(clf, weak, setup, cache=ErrorCache(args.cache / "errors"), progress=not args.no_progress)
    report.update(targets=targets(report), imagenet_extrapolation=extrapolate(report))  # the latter: not measured
    print(json.dumps({"model": args.model, "contrastive": args.contrastive, **report}, indent=1, default=str))


if __name__ == "__main__":
    main()
