#!/usr/bin/env python
"""Build the dclib book: execute the notebooks with papermill, write _toc.yml, run Jupyter Book.

    .venv/bin/python book/build_book.py [--preset small|book|paper] [--only NAME ...] [--force] [--no-build]

* ``book/notebooks.yml`` lists the notebooks in order: ``notebooks: [{name: NAME, title: TITLE}, ...]``;
  notebook NAME is ``notebooks/NAME.ipynb`` (an entry's optional ``path`` names another file).
* Preset ``small`` runs each notebook with its own defaults (its ``parameters`` cell); presets ``book`` and
  ``paper`` inject the notebook's entry under their name in ``book/params.yml``. The ``paper`` preset (a GPU
  with the paper's models and datasets) runs only the pages it has settings for, and first checks that every
  hub model and dataset they name is in the local Hugging Face cache when the hub is offline: it stops before
  executing anything, with one line naming the first that is missing.
* The presets share nothing they write, so `make test` (preset small) never touches what `make book`
  built: each has its own results (``results/PRESET/``, given to the kernels as ``$DCLIB_RESULTS_DIR``, with
  ``$DCLIB_PRESET``), executed copies (``book/executed/PRESET/``) and site (``_build/PRESET/html``).
* Each notebook is executed (kernel ``python3``, working directory = repository root) into
  ``book/executed/PRESET/NAME.ipynb``. A stamp ``NAME.stamp.json`` beside it records what it was run from: the
  notebook's bytes, the injected parameters, the preset and the content hash of ``dclib/**/*.py``. A notebook
  whose stamp matches is skipped. A failed notebook makes the script exit non-zero after naming it.
* An entry with ``reads_results: true`` (the reproduction-status page) also re-runs when the verdicts the other
  notebooks saved in ``results/PRESET/verdicts/`` change, so list it last.
* ``_toc.yml`` is generated: intro, reproduce, one page per notebook, references.
* Jupyter Book renders ``_build/PRESET/html`` with warnings as errors from ``_build/PRESET/src``, links to
  ``book/*.md`` and to the preset's executed copies as ``book/executed``. It is skipped when none of its
  inputs changed since the last successful build (``_build/PRESET/.book_stamp.json``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "_build"
TOC = ROOT / "_toc.yml"
KERNEL = "python3"
PRESETS = ("small", "book", "paper")
# Parameters that name models, and datasets, in a page's parameters (checked by the paper preset's preflight).
MODEL_PARAMETERS = ("model", "models", "variants", "supervised_model", "weak_model", "sd_model", "contrastive",
                    "learned_variance_model", "discriminative")
DATASET_PARAMETERS = ("dataset", "supervised_dataset", "pairs", "tasks", "shifted")


# Everything a build writes is per preset (functions, not constants: tests point ROOT, BOOK and BUILD elsewhere).
def results_folder(preset: str) -> Path:
    return ROOT / "results" / preset


def executed_dir(preset: str) -> Path:
    return BOOK / "executed" / preset


def build_dir(preset: str) -> Path:
    return BUILD / preset


def site_dir(preset: str) -> Path:
    return build_dir(preset) / "html"


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_bytes(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def dclib_source_hash() -> str:
    """Content hash of dclib/**/*.py (paths and bytes), independent of mtimes."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "dclib").rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(ROOT).as_posix().encode()
        data = path.read_bytes()
        h.update(sha256_bytes(rel, data).encode())
    return h.hexdigest()


def load_yaml(path: Path, default):
    if not path.exists():
        return default
    data = yaml.safe_load(path.read_text())
    return default if data is None else data


def load_notebook_list() -> list[dict]:
    data = load_yaml(BOOK / "notebooks.yml", {"notebooks": []})
    entries = data.get("notebooks") if isinstance(data, dict) else data
    entries = entries or []
    if not isinstance(entries, list):
        raise BuildError("book/notebooks.yml: `notebooks` must be a list")
    out, seen = [], set()
    for i, e in enumerate(entries):
        if isinstance(e, str):
            e = {"name": e}
        if not isinstance(e, dict) or not e.get("name"):
            raise BuildError(f"book/notebooks.yml: entry {i} needs a `name`")
        name = str(e["name"])
        if name in seen:
            raise BuildError(f"book/notebooks.yml: notebook {name!r} is listed twice")
        seen.add(name)
        # `path` (optional, relative to the repository root) overrides notebooks/NAME.ipynb.
        src = (ROOT / str(e["path"])) if e.get("path") else NOTEBOOKS / f"{name}.ipynb"
        if not src.exists():
            raise BuildError(f"book/notebooks.yml lists {name!r} but {src} does not exist")
        out.append({"name": name, "title": e.get("title"), "source": src, "reads_results": bool(e.get("reads_results"))})
    return out


def parameters_for(name: str, preset: str, params: dict) -> dict:
    if preset == "small":
        return {}
    p = params.get(name) or {}
    if not isinstance(p, dict):
        raise BuildError(f"book/params.yml: entry {name!r} must be a mapping of parameter -> value")
    return p


def _in_hub_cache(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub.constants import HF_HUB_CACHE

    folder = Path(HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    return any(folder.glob("snapshots/*/*"))


def missing_inputs(name: str, params: dict) -> list[str]:
    """What a page's parameters name that is missing: hub models and datasets neither local nor in the hub cache,
    and local folders and class maps (a path starting with ".", "/" or "~") that do not exist."""
    missing = []
    for key, repo_type in [(k, "model") for k in MODEL_PARAMETERS] + [(k, "dataset") for k in DATASET_PARAMETERS]:
        values = params.get(key)
        values = list(values.values()) if isinstance(values, dict) else values  # shifted: {name: set}
        for value in values if isinstance(values, list) else [values]:
            if key == "tasks" and not isinstance(value, dict):
                continue  # Table 1's embedded task names
            if isinstance(value, dict):  # a dataset spec (Table 1's tasks, a shifted set) names its dataset
                if isinstance(value.get("class_map"), str) and not os.path.exists(os.path.expanduser(value["class_map"])):
                    missing.append(f"local file {value['class_map']!r} ({name}: {key}) does not exist")
                value = value.get("dataset")
            if not isinstance(value, str) or value.startswith("embedded:") or os.path.exists(os.path.expanduser(value)):
                continue
            if value.startswith((".", "/", "~")):
                missing.append(f"local folder {value!r} ({name}: {key}) does not exist")
            elif not _in_hub_cache(value, repo_type):
                missing.append(f"{repo_type} {value!r} ({name}: {key}) is not in the local Hugging Face cache")
    return missing


def preflight(notebooks: list[dict], preset: str, params: dict) -> None:
    """Offline, stop before any execution when a page of the preset names a hub model or dataset that is not in
    the local cache (online, the build downloads them)."""
    from dclib.runs import hub_offline

    if not hub_offline():
        return
    for nb in notebooks:
        missing = missing_inputs(nb["name"], parameters_for(nb["name"], preset, params))
        if missing:
            how = ("; download it first (`hf download`) on a machine with network, as the hub is offline "
                   "(HF_HUB_OFFLINE=1)" if missing[0].endswith("cache") else "; see the README's GPU section")
            raise BuildError(f"preset {preset}: {missing[0]}{how}"
                             + (f"; {len(missing) - 1} more on this page" if len(missing) > 1 else ""))


def kernel_env(preset: str) -> dict:
    env = dict(os.environ)
    # Set, not defaulted: an inherited $DCLIB_RESULTS_DIR would let the two presets write into one folder.
    env["DCLIB_RESULTS_DIR"] = str(results_folder(preset))
    env["DCLIB_PRESET"] = preset
    # The Makefile exports MPLBACKEND=Agg for scripts and tests; inside a kernel that would stop figures from
    # being captured as outputs, so notebooks get the inline backend.
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for k, v in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                 ("TOKENIZERS_PARALLELISM", "false"), ("PYTHONHASHSEED", "0")):
        env.setdefault(k, v)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


def notebook_stamp(nb: dict, params: dict, preset: str, code_hash: str) -> dict:
    """What an executed copy was made from; the copy is reused while this stays the same."""
    stamp = {"notebook_sha256": sha256_bytes(nb["source"].read_bytes()),
             "parameters": params, "preset": preset, "dclib_sha256": code_hash, "kernel": KERNEL}
    if nb.get("reads_results"):
        verdicts = sorted((results_folder(preset) / "verdicts").glob("*.json"))
        stamp["results_sha256"] = _files_hash(verdicts) if verdicts else ""
    return stamp


def _assignments(source: str) -> dict:
    """``name = literal`` lines of a parameters cell, in order (values as written)."""
    import ast

    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.get_source_segment(source, node.value)
    return values


def fold_code_for_readers(nb: dict) -> dict:
    """What a reader sees: the parameters cell and papermill's injected cell give way to one small table of the
    values the page ran with; every other code cell keeps its outputs with its code folded (hide-input)."""
    cells, params, table_at = [], {}, None
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if cell["cell_type"] == "code" and ("parameters" in tags or "injected-parameters" in tags):
            params.update(_assignments("".join(cell["source"])))
            table_at = len(cells) if table_at is None else table_at
            continue
        if cell["cell_type"] == "code" and not {"hide-input", "remove-input", "remove-cell"} & set(tags):
            tags.append("hide-input")
        cells.append(cell)
    if table_at is not None:
        # one line per value: a value written over several lines (a dict of shifted sets) would break the row
        rows = "\n".join(f"| `{k}` | `{' '.join(v.split()).replace('|', '&#124;')}` |" for k, v in params.items())
        cells.insert(table_at, {"cell_type": "markdown", "id": "run-parameters", "metadata": {"tags": ["run-parameters"]},
                                "source": f"**This run's parameters**\n\n| parameter | value |\n| --- | --- |\n{rows}\n"})
    return {**nb, "cells": cells}


def save_executed(name: str, finished: Path, stamp: dict) -> None:
    """Move a finished executed copy (a file in the executed folder of the stamp's preset) into place, its code
    folded for readers (:func:`fold_code_for_readers`), then write its stamp (last: a copy without one is never
    reused)."""
    executed = executed_dir(stamp["preset"])
    stamp_path = executed / f"{name}.stamp.json"
    stamp_path.unlink(missing_ok=True)
    nb = json.loads(finished.read_text())
    finished.write_text(json.dumps(fold_code_for_readers(nb), indent=1, ensure_ascii=False) + "\n")
    finished.replace(executed / f"{name}.ipynb")
    (executed / f"{name}.failed.ipynb").unlink(missing_ok=True)
    stamp_path.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")


def is_current(name: str, stamp: dict) -> bool:
    executed = executed_dir(stamp["preset"])
    out, stamp_path = executed / f"{name}.ipynb", executed / f"{name}.stamp.json"
    if not (out.exists() and stamp_path.exists()):
        return False
    try:
        return json.loads(stamp_path.read_text()) == stamp
    except json.JSONDecodeError:
        return False


def execute(nb: dict, params: dict, stamp: dict, force: bool) -> str:
    """Execute one notebook unless its stamp matches. Returns 'skipped' or 'executed'."""
    name, preset = nb["name"], stamp["preset"]
    executed = executed_dir(preset)
    out = executed / f"{name}.ipynb"
    stamp_path = executed / f"{name}.stamp.json"
    if not force and is_current(name, stamp):
        return "skipped (unchanged)"
    src_shown = os.path.relpath(nb["source"], ROOT)
    log(f"  {name}: executing {src_shown} -> {out.relative_to(ROOT)}")
    executed.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)
    tmp = executed / f".{name}.running.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(nb["source"]), str(tmp),
           "--kernel", KERNEL, "--cwd", str(ROOT), "--log-level", "WARNING",
           "--request-save-on-cell-execute", "--no-progress-bar",
           "--parameters_yaml", yaml.safe_dump(params)]
    proc = subprocess.run(cmd, cwd=ROOT, env=kernel_env(preset), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        failed = executed / f"{name}.failed.ipynb"
        if tmp.exists():
            tmp.replace(failed)
        lines = proc.stdout.strip().splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("papermill.exceptions.")), None)
        tail = "\n".join(lines[start + 1:][-40:] if start is not None else lines[-40:])
        raise BuildError(f"notebook {name!r} ({src_shown}) failed; partial output in "
                         f"{failed.relative_to(ROOT)}\n{tail}")
    save_executed(name, tmp, stamp)
    return "executed"


def write_toc(notebooks: list[dict]) -> None:
    chapters = [{"file": "book/reproduce"}]
    for nb in notebooks:
        entry = {"file": f"book/executed/{nb['name']}"}
        if nb.get("title"):
            entry["title"] = str(nb["title"])
        chapters.append(entry)
    chapters += [{"file": "book/references"}]
    toc = {"format": "jb-book", "root": "book/intro", "chapters": chapters}
    text = ("# Generated by book/build_book.py from book/notebooks.yml: edit that file, not this one.\n"
            + yaml.safe_dump(toc, sort_keys=False))
    if not TOC.exists() or TOC.read_text() != text:
        TOC.write_text(text)


def _files_hash(files) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_bytes(f.relative_to(ROOT).as_posix().encode(), f.read_bytes()).encode())
    return h.hexdigest()


def book_inputs_hash(notebooks: list[dict], preset: str) -> dict:
    """``setup``: what a page-by-page (incremental) Sphinx rebuild would not notice -> full rebuild.
    ``pages``: the page sources -> incremental rebuild."""
    from importlib.metadata import version

    setup = [ROOT / "_config.yml", TOC] + sorted((BOOK / "_ext").glob("*.py")) + sorted((BOOK / "_ext").rglob("*.css"))
    versions = ",".join(version(d) for d in ("jupyter-book", "sphinx", "sphinx-book-theme", "myst-nb"))
    pages = sorted(BOOK.glob("*.md")) + [executed_dir(preset) / f"{nb['name']}.ipynb" for nb in notebooks]
    # Every page's previous/next links show its neighbours' titles, which an incremental build does not
    # refresh: a changed title anywhere means a full rebuild.
    titles = sha256_bytes(*(page_title(p).encode() for p in pages))
    return {"setup": _files_hash(setup) + ":" + versions + ":" + titles, "pages": _files_hash(pages)}


def page_title(path: Path) -> str:
    """The first level-1 heading of a Markdown page or of a notebook's Markdown cells ("" if none)."""
    if not path.exists():
        return ""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text()).get("cells", [])
        text = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown")
    else:
        text = path.read_text()
    return next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")


def stage_source(preset: str) -> Path:
    """The folder Jupyter Book reads for one preset: links to book/*.md and, as book/executed, to the preset's
    executed copies. Pages keep the names _toc.yml and the {doc} links give them (book/executed/NAME) in both
    presets, and neither build sees the other preset's copies."""
    src = build_dir(preset) / "src"
    shutil.rmtree(src, ignore_errors=True)  # removes the links, not what they point to
    (src / "book").mkdir(parents=True)
    targets = {p.name: p for p in BOOK.glob("*.md")} | {"executed": executed_dir(preset)}
    for name, target in targets.items():
        (src / "book" / name).symlink_to(os.path.relpath(target, src / "book"))
    return src


# jupyter-book's command line always writes into <output>/_build/html; the function it calls takes the html
# folder itself, which keeps each preset's site at _build/PRESET/html (doctrees beside it).
SPHINX_BUILD = """
import sys
from jupyter_book.sphinx import build_sphinx
src, html, config, toc, fresh = sys.argv[1:]
result = build_sphinx(src, html, noconfig=True, path_config=config, warningiserror=True, keep_going=True,
                      freshenv=fresh == "1", confoverrides={"external_toc_path": toc, "latex_individualpages": False})
sys.exit(0 if result == 0 else 1)
"""


def jupyter_book_build(preset: str, inputs: dict, force: bool) -> str:
    out, html = build_dir(preset), site_dir(preset)
    stamp = out / ".book_stamp.json"
    last = {}
    if stamp.exists() and (html / "index.html").exists():
        try:
            last = json.loads(stamp.read_text())
        except json.JSONDecodeError:
            last = {}
    if not force and last == inputs:
        return "unchanged"
    full = force or last.get("setup") != inputs["setup"]
    stamp.unlink(missing_ok=True)
    if full:
        # A clean output: pages of notebooks no longer listed must not linger in the site.
        for d in (html, out / ".doctrees", out / "jupyter_execute"):
            shutil.rmtree(d, ignore_errors=True)
    src = stage_source(preset)
    cmd = [sys.executable, "-c", SPHINX_BUILD, str(src), str(html), str(ROOT / "_config.yml"), str(TOC),
           "1" if full else "0"]
    env = dict(os.environ)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_path = out / "jupyter-book.log"
    log_path.write_text(proc.stdout)
    if proc.returncode != 0 or not (html / "index.html").exists():
        lines = proc.stdout.splitlines()
        problems = [ln for ln in lines if "WARNING" in ln or "ERROR" in ln or "Error" in ln]
        detail = "\n".join(problems[-40:] or lines[-40:])
        raise BuildError(f"jupyter-book build failed (exit {proc.returncode}); full log in "
                         f"{log_path.relative_to(ROOT)}\n{detail}")
    stamp.write_text(json.dumps(inputs) + "\n")
    return "built (full)" if full else "built (incremental)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="small",
                    help="small: notebook defaults; book, paper: defaults + that preset's entries in "
                         "book/params.yml (paper: a GPU with the paper's models; default: small)")
    ap.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME",
                    help="execute only these notebooks (the others keep their last executed copy)")
    ap.add_argument("--force", action="store_true", help="re-execute and rebuild even if nothing changed")
    ap.add_argument("--no-build", action="store_true", help="execute notebooks, skip jupyter-book")
    args = ap.parse_args(argv)

    t_all = time.monotonic()
    try:
        notebooks = load_notebook_list()
        names = [nb["name"] for nb in notebooks]
        unknown = [n for n in args.only if n not in names]
        if unknown:
            raise BuildError(f"--only {' '.join(unknown)}: not in book/notebooks.yml ({', '.join(names) or 'empty'})")
        presets = load_yaml(BOOK / "params.yml", {})
        params = presets.get(args.preset, {}) if isinstance(presets, dict) and args.preset != "small" else {}
        if not isinstance(params, dict):
            raise BuildError("book/params.yml must be a mapping: preset -> notebook name -> parameters")
        if args.preset == "paper":  # only the pages with a paper setting (and the status page reading their verdicts)
            notebooks = [nb for nb in notebooks if nb["name"] in params or nb.get("reads_results")]
            preflight(notebooks, args.preset, params)
        stray = sorted(set(params) - set(names))
        if stray:
            log(f"note: book/params.yml has entries for notebooks not in book/notebooks.yml: {', '.join(stray)}")
        code_hash = dclib_source_hash()
        log(f"book: preset {args.preset}, {len(notebooks)} notebook(s), dclib source {code_hash[:12]}")

        failures = []
        for i, nb in enumerate(notebooks, 1):
            name = nb["name"]
            out = executed_dir(args.preset) / f"{name}.ipynb"
            if args.only and name not in args.only:
                state = "kept" if out.exists() else "missing"
                log(f"[{i}/{len(notebooks)}] {name}: not selected ({state})")
                if not out.exists():
                    failures.append(name)
                continue
            p = parameters_for(name, args.preset, params)
            stamp = notebook_stamp(nb, p, args.preset, code_hash)
            t0 = time.monotonic()
            try:
                state = execute(nb, p, stamp, args.force)
            except BuildError as e:
                log(f"[{i}/{len(notebooks)}] {name}: FAILED after {time.monotonic() - t0:.1f}s\n{e}")
                failures.append(name)
                continue
            log(f"[{i}/{len(notebooks)}] {name}: {state} in {time.monotonic() - t0:.1f}s")
        if failures:
            raise BuildError(f"{len(failures)} notebook(s) failed or have no executed copy: {', '.join(failures)}")

        write_toc(notebooks)
        if args.no_build:
            log(f"book: notebooks done in {time.monotonic() - t_all:.1f}s (--no-build)")
            return 0
        t0 = time.monotonic()
        state = jupyter_book_build(args.preset, book_inputs_hash(notebooks, args.preset), args.force)
        log(f"jupyter-book: {state} in {time.monotonic() - t0:.1f}s -> {site_dir(args.preset).relative_to(ROOT)}")
    except BuildError as e:
        log(f"book: ERROR: {e}")
        return 1
    log(f"book: done in {time.monotonic() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
