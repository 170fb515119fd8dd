"""Where notebooks write their numbers, and small helpers for the book's tables."""
from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    """``$DCLIB_RESULTS_DIR`` (book/build_book.py sets it per preset), else ``results/PRESET/`` at the root of
    the checkout (the folder holding _toc.yml, found from the working directory upwards, else the working
    directory) with PRESET = ``current_preset()``, so a smoke run never overwrites the book's numbers.
    Created if missing."""
    env = os.environ.get("DCLIB_RESULTS_DIR")
    if env:
        path = Path(env)
    else:
        here = Path.cwd().resolve()
        root = next((p for p in (here, *here.parents) if (p / "_toc.yml").exists()), here)
        path = root / "results" / current_preset()
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_preset() -> str:
    """The book preset this kernel runs under ($DCLIB_PRESET, set by book/build_book.py); a notebook run by hand
    counts as the small preset, a smoke run."""
    return os.environ.get("DCLIB_PRESET", "small")
