#!/usr/bin/env python
"""Refresh the outputs nbval checks: run notebooks with their own (small) parameters and keep, in the source
notebook, only the outputs of cells tagged ``nbval-check-output`` (every other output is stripped).

    .venv/bin/python book/store_checked_outputs.py [NAME ...]     # default: every notebooks/*.ipynb

Run it after changing a notebook; `make test` then checks those outputs with `pytest --nbval-lax`.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_book  # noqa: E402

ROOT = build_book.paths.ROOT
CHECK = "nbval-check-output"


def refresh(path: Path) -> None:
    """Execute ``path`` as `make test`'s nbval does (the small preset's kernel environment, one torch thread as each
    of its two workers has, the notebook's folder as working directory) and keep the checked cells' outputs in the
    source notebook."""
    with tempfile.TemporaryDirectory() as tmp:
        executed_path = Path(tmp) / path.name
        build_book.execute_page(path, executed_path, {}, {**build_book.kernel_env("small"), "OMP_NUM_THREADS": "1"},
                                cwd=path.parent)
        executed = nbformat.read(executed_path, as_version=4)
    source = nbformat.read(path, as_version=4)
    runs = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell, run in zip(source.cells, runs):
        if cell.cell_type != "code":
            continue
        checked = CHECK in cell.metadata.get("tags", [])
        # nbval treats a cell with outputs but no execution count as an error ("unrun reference cell")
        cell.execution_count = run.execution_count if checked else None
        cell.outputs = run.outputs if checked else []
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    source.metadata.pop("papermill", None)
    nbformat.write(source, path)
    print(f"stored checked outputs of {path.relative_to(ROOT)}")


def main(names: list[str]) -> None:
    paths = [ROOT / "notebooks" / f"{n}.ipynb" for n in names] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        refresh(path)


if __name__ == "__main__":
    main(sys.argv[1:])
