"""Render the executed pages into the site: a generated ``_toc.yml`` and ``jupyter-book build``.

Jupyter Book renders ``_build/PRESET/src`` (links to ``book/*.md`` and, as ``book/executed``, to the preset's
executed copies) into ``_build/PRESET/_build/html``, warnings as errors. The render is skipped when none of its
inputs changed since the last successful one (``_build/PRESET/.book_stamp.json``), and is a full one (``--all``)
when the configuration, the extension, the versions or a page title changed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import book_paths as paths


class RenderError(RuntimeError):
    pass


def fold_code_for_readers(nb: dict) -> dict:
    """What a reader sees: the parameters cell and papermill's injected cell are dropped (the page's ``start_page``
    cell shows the values it ran with); every other code cell keeps its outputs, its code folded (hide-input)."""
    cells = []
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if cell["cell_type"] == "code" and {"parameters", "injected-parameters"} & set(tags):
            continue
        if cell["cell_type"] == "code" and not {"hide-input", "remove-input", "remove-cell"} & set(tags):
            tags.append("hide-input")
        cells.append(cell)
    return {**nb, "cells": cells}


def write_toc(notebooks: list[dict], preset: str) -> Path:
    """``_build/PRESET/_toc.yml``: intro, how to reproduce, one page per notebook in order, the API reference,
    references."""
    chapters = [{"file": "book/reproduce"}]
    chapters += [{"file": f"book/executed/{nb['name']}", **({"title": str(nb["title"])} if nb.get("title") else {})}
                 for nb in notebooks]
    chapters += [{"file": "book/api"}]
    toc = paths.build_dir(preset) / "_toc.yml"
    toc.parent.mkdir(parents=True, exist_ok=True)
    toc.write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro",
                                   "chapters": chapters + [{"file": "book/references"}]}, sort_keys=False))
    return toc


def page_title(path: Path) -> str:
    """The first level-1 heading of a Markdown page or of a notebook's Markdown cells ("" if none)."""
    if not path.exists():
        return ""
    text = path.read_text()
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c.get("source", "")) for c in json.loads(text).get("cells", [])
                         if c.get("cell_type") == "markdown")
    return next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")


def book_inputs_hash(notebooks: list[dict], preset: str) -> dict:
    """``setup``: what an incremental Sphinx build would not notice (configuration, extension, versions, every
    page title: each page's previous/next links show its neighbours' titles) -> ``--all``. ``pages``: the page
    sources -> incremental build."""
    from importlib.metadata import version

    ext = paths.BOOK / "_ext"
    setup = [paths.ROOT / "_config.yml", paths.build_dir(preset) / "_toc.yml", *sorted(ext.rglob("*.py")),
             *sorted(ext.rglob("*.css"))]
    versions = ",".join(version(d) for d in ("jupyter-book", "sphinx", "sphinx-book-theme", "myst-nb"))
    pages = sorted(paths.BOOK.glob("*.md")) + [paths.executed_dir(preset) / f"{nb['name']}.ipynb" for nb in notebooks]
    titles = paths.content_hash(*(page_title(p).encode() for p in pages))
    return {"setup": paths.files_hash(p for p in setup if p.exists()) + ":" + versions + ":" + titles,
            "pages": paths.files_hash(pages)}


def stage_source(preset: str) -> Path:
    """The folder Jupyter Book reads: links to book/*.md and, as book/executed, to the preset's executed copies,
    so pages keep the names the toc and the {doc} links give them in every preset."""
    src = paths.build_dir(preset) / "src"
    shutil.rmtree(src, ignore_errors=True)  # removes the links, not what they point to
    (src / "book").mkdir(parents=True)
    links = {p.name: p for p in paths.BOOK.glob("*.md")} | {"executed": paths.executed_dir(preset)}
    for name, target in links.items():
        (src / "book" / name).symlink_to(os.path.relpath(target, src / "book"))
    return src


def jupyter_book_build(preset: str, inputs: dict, force: bool) -> str:
    out, html = paths.build_dir(preset), paths.site_dir(preset)
    stamp = out / ".book_stamp.json"
    try:
        last = json.loads(stamp.read_text()) if (html / "index.html").exists() else {}
    except (OSError, json.JSONDecodeError):
        last = {}
    if not force and last == inputs:
        return "unchanged"
    full = force or last.get("setup") != inputs["setup"]
    stamp.unlink(missing_ok=True)
    if full:  # a clean output: pages no longer listed must not linger in the site
        shutil.rmtree(out / "_build", ignore_errors=True)
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(stage_source(preset)), "--path-output",
           str(out), "--config", str(paths.ROOT / "_config.yml"), "--toc", str(out / "_toc.yml"), "-W",
           "--keep-going", *(["--all"] if full else [])]
    proc = subprocess.run(cmd, cwd=paths.ROOT, env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (out / "jupyter-book.log").write_text(proc.stdout)
    if proc.returncode != 0 or not (html / "index.html").exists():
        problems = [line for line in proc.stdout.splitlines() if "WARNING" in line or "ERROR" in line][-10:]
        raise RenderError(f"jupyter-book build failed (exit {proc.returncode}); its output is in "
                          f"{(out / 'jupyter-book.log').relative_to(paths.ROOT)}" + "".join("\n" + p for p in problems))
    stamp.write_text(json.dumps(inputs) + "\n")
    return "built (full)" if full else "built (incremental)"


