"""Where notebooks write their numbers, and small helpers for the book's tables."""
from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    """``$DCLIB_RESULTS_DIR``, else ``results/`` at the root of the checkout (the folder holding _toc.yml,
    found from the working directory upwards), else ``./results``. Created if missing."""
    env = os.environ.get("DCLIB_RESULTS_DIR")
    if env:
        path = Path(env)
    else:
        here = Path.cwd().resolve()
        root = next((p for p in (here, *here.parents) if (p / "_toc.yml").exists()), here)
        path = root / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_verdict(name: str, figure: str, paper_claim: str, reproduced: str, ours: str, scale: str) -> dict:
    """Save a notebook's one-line conclusion for the reproduction-status page (results/verdicts/NAME.json)."""
    import json

    entry = {"notebook": name, "figure": figure, "paper": paper_claim, "ours": ours, "reproduced": reproduced,
             "scale": scale}
    folder = results_dir() / "verdicts"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(entry, indent=1) + "\n")
    return entry


def verdict_word(reproduces: bool | None) -> str:
    return {True: "yes", False: "no", None: "partial"}[reproduces]


VERDICT_TEXT = {"yes": "reproduces", "partial": "is not confirmed at this sample size (no significant difference)",
                "no": "does not reproduce (significant difference the other way)"}


def paired_verdict(pairs, alpha: float = 0.05) -> str:
    """Verdict on a claim "A beats B" over one or more (A, B) pairs of ErrorSets scored on the same images.

    Each pair (ErrorSets, or boolean per-item correctness arrays) is tested with an exact McNemar test. "yes": every pair significant in the claimed direction;
    "no": at least one pair significant the other way; "partial": anything else.
    """
    from .experiments import paired_difference

    outcomes = []
    for better, worse in pairs:
        d = paired_difference(better, worse)
        if d["p_value"] < alpha:
            outcomes.append("right" if d["only_first_right"] > d["only_second_right"] else "wrong")
        else:
            outcomes.append("unclear")
    if "wrong" in outcomes:
        return "no"
    return "yes" if outcomes and all(o == "right" for o in outcomes) else "partial"
