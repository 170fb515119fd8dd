#!/usr/bin/env python
"""Compare two results folders by value (a refactor's check that the book's numbers did not move):

    .venv/bin/python book/compare_results.py BEFORE/results/book AFTER/results/book

Every CSV is compared by value on the columns both have (timing columns left out; a column only one side has is
reported, not failed), every verdict JSON by its outcome, setting, text and each comparison's label, effect, p, n and
interval, any other file byte for byte. Prints one line per difference and a count; exits 1 if any differed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

TIMING_COLUMNS = {"seconds_per_image", "seconds", "wall_s"}
VERDICT_KEYS = ("outcome", "setting", "ours")
COMPARISON_KEYS = ("label", "effect", "p_value", "n", "interval")


def differences(before: Path, after: Path) -> tuple[list[str], list[str], int]:
    """(differences, notes, files the same)."""
    files = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()}
                   | {p.relative_to(after) for p in after.rglob("*") if p.is_file()})
    diffs, notes, same = [], [], 0
    for rel in files:
        a, b = before / rel, after / rel
        if not (a.exists() and b.exists()):
            diffs.append(f"only {'after' if b.exists() else 'before'}: {rel}")
        elif rel.suffix == ".csv":
            x, y = pd.read_csv(a), pd.read_csv(b)
            columns = [c for c in x.columns if c in y.columns and c not in TIMING_COLUMNS]
            try:
                pd.testing.assert_frame_equal(x[columns], y[columns])
                same += 1
                if extra := sorted((set(x.columns) ^ set(y.columns)) - TIMING_COLUMNS):
                    notes.append(f"same values, columns differ: {rel} {extra}")
            except AssertionError as e:
                diffs.append(f"{rel}: {' '.join(str(e).split())[:200]}")
        elif rel.suffix == ".json":
            x, y = json.loads(a.read_text()), json.loads(b.read_text())
            cx, cy = ([[c.get(k) for k in COMPARISON_KEYS] for c in v.get("comparisons", [])] for v in (x, y))
            changed = [k for k in VERDICT_KEYS if x.get(k) != y.get(k)] + (["comparisons"] if cx != cy else [])
            if changed:
                diffs.append(f"{rel}: {', '.join(changed)}")
            else:
                same += 1
        elif a.read_bytes() != b.read_bytes():
            diffs.append(f"{rel}: bytes differ")
        else:
            same += 1
    return diffs, notes, same


def main(argv=None) -> int:
    before, after = (Path(p) for p in (argv or sys.argv[1:]))
    diffs, notes, same = differences(before, after)
    print("\n".join(diffs + notes + [f"{same} the same, {len(diffs)} different"]))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
