#!/usr/bin/env python
"""Build the dclib book: papermill executes the pages, Jupyter Book renders them (book/render_site.py).

    .venv/bin/python book/build_book.py [--preset small|book|paper] [--only NAME ...] [--force] [--no-build]
                                        [--jobs N]

* ``book/notebooks.yml`` lists the pages in order (``name``, ``title``, optional ``path``, ``reads_results``: a page
  that reads the others' verdicts, run after them; ``reads``: pages listed before it whose scoring passes it reads
  back from the error cache, which ``--jobs N`` lets finish before starting it). Preset ``small`` runs each page on its own defaults; ``book``
  and ``paper`` inject its entry in ``book/params.yml``. ``paper`` (a GPU with the paper's models) runs only the
  pages it has settings for, after book/preflight.py.
* Each preset has its own results, executed copies and site (book/book_paths.py).
* :func:`execute_page` (papermill's Python API; a failure is papermill's ``PapermillExecutionError``) is the one way
  a page is executed, here and by book/store_checked_outputs.py. ``--jobs N`` runs N pages at once, each kernel on
  ``OMP_NUM_THREADS = cores // N``.
* An executed copy is reused while its stamp (``NAME.stamp.json``) matches: the notebook's bytes, the injected
  parameters, the preset, dclib's source hash (and, for ``reads_results`` pages, the saved verdicts). A stamp, not
  jupyter-cache, which keys a notebook by its code cells alone. Kernels share an error cache (dclib.error_cache).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import papermill
import yaml

from dclib.claims import resolve_sizes
from dclib.error_cache import ErrorCache, source_fingerprint
from dclib.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_paths as paths  # noqa: E402
from book_paths import PRESETS, build_dir, executed_dir, results_folder, site_dir  # noqa: E402,F401
from preflight import PreflightError, missing_inputs, preflight  # noqa: E402,F401
from render_site import (RenderError, book_inputs_hash, fold_code_for_readers, jupyter_book_build,  # noqa: E402,F401
                         page_title, write_toc)

KERNEL = "python3"


class BuildError(RuntimeError):
    pass


dclib_source_hash = source_fingerprint  # "this dclib", as the error cache keys it: a page's stamp holds it


def load_notebook_list() -> list[dict]:
    entries = (yaml.safe_load((paths.BOOK / "notebooks.yml").read_text()) or {}).get("notebooks") or []
    out = []
    for i, e in enumerate({"name": e} if isinstance(e, str) else e for e in entries):
        if not isinstance(e, dict) or not e.get("name") or e["name"] in {o["name"] for o in out}:
            raise BuildError(f"book/notebooks.yml: entry {i} needs a `name` not listed before")
        src = paths.ROOT / e["path"] if e.get("path") else paths.NOTEBOOKS / f"{e['name']}.ipynb"
        if not src.exists():
            raise BuildError(f"book/notebooks.yml lists {e['name']!r} but {src} does not exist")
        reads = e.get("reads") or []
        if not isinstance(reads, list) or any(r not in {o["name"] for o in out} for r in reads):
            raise BuildError(f"book/notebooks.yml: {e['name']!r} reads {reads!r}: list pages named before it")
        out.append({"name": str(e["name"]), "title": e.get("title"), "source": src,
                    "reads_results": bool(e.get("reads_results")), "reads": [str(r) for r in reads]})
    return out


def run_in_order(pages: list[dict], jobs: int, run: Callable[[dict], str | None]) -> list[str | None]:
    """``run(page)`` for every page, at most ``jobs`` at once, each started in list order once the pages it
    ``reads`` have finished (so it reads their errors instead of scoring them again). Returns run's results in the
    pages' order. With one job this is the list order; a page's ``reads`` are always listed before it, so the first
    waiting page can start once nothing runs."""
    results: dict[str, str | None] = {}
    waiting, running = list(pages), {}
    listed = {p["name"] for p in pages}  # a page read but not run here (another preset's selection) is no wait
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        while waiting or running:
            for page in [p for p in waiting if all(r in results or r not in listed for r in p.get("reads", []))]:
                if len(running) >= max(1, jobs):
                    break
                waiting.remove(page)
                running[pool.submit(run, page)] = page["name"]
            if not running:  # load_notebook_list refuses what would get here: a page reading one listed after it
                raise BuildError(f"no page can start: {', '.join(p['name'] for p in waiting)} wait for each other")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                results[running.pop(future)] = future.result()
    return [results[p["name"]] for p in pages]


def parameters_for(name: str, preset: str, params: dict) -> dict:
    """The page's entry for the preset, each sample size given as ``{powered: CLAIM, at_most: N}`` resolved by
    the power calculation of the claims it tests (:func:`dclib.claims.resolve_sizes`)."""
    p = {} if preset == "small" else params.get(name) or {}
    if not isinstance(p, dict):
        raise BuildError(f"book/params.yml: entry {name!r} must be a mapping of parameter -> value")
    try:
        return resolve_sizes(p)
    except InputError as e:
        raise BuildError(f"book/params.yml: entry {name!r}: {e}") from None


def kernel_env(preset: str, jobs: int = 1) -> dict:
    env = dict(os.environ)
    # Set, not defaulted: an inherited $DCLIB_RESULTS_DIR would let the two presets write into one folder.
    env.update(DCLIB_RESULTS_DIR=str(results_folder(preset)), DCLIB_PRESET=preset, PYDEVD_DISABLE_FILE_VALIDATION="1",
               # pages scoring the same samples (a timestep grid and its subsets, one image set) pay once
               DCLIB_ERROR_CACHE=str(results_folder(preset) / "error_cache"),
               # the Makefile's MPLBACKEND=Agg would keep figures out of a kernel's outputs
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    # as the Makefile sets them: offline, and no library notices on a page's outputs
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0",
                 "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}.items():
        env.setdefault(k, v)
    if preset == "small":
        # nbval compares the small preset's checked outputs exactly, and the math libraries pick their kernels by
        # the CPU's instruction set: on an AVX-512 host the float sums run in another order and a page that trains
        # a baseline prints other digits. Capped at AVX2, both kinds of 2-core machine this runs on print the same.
        for k, v in {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
                     "OPENBLAS_CORETYPE": "Haswell"}.items():
            env.setdefault(k, v)
    if jobs > 1:  # pages at once share the cores: one kernel per core, not every kernel on every core
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def notebook_stamp(nb: dict, params: dict, preset: str, code_hash: str) -> dict:
    """What an executed copy was made from; the copy is reused while this stays the same."""
    stamp = {"notebook_sha256": paths.content_hash(nb["source"].read_bytes()), "parameters": params, "preset": preset,
             "dclib_sha256": code_hash, "kernel": KERNEL}
    if nb.get("reads_results"):
        stamp["results_sha256"] = paths.files_hash(sorted((results_folder(preset) / "verdicts").glob("*.json")))
    return stamp


def save_executed(name: str, finished: Path, stamp: dict) -> None:
    """Move a finished executed copy into place, folded for readers, then write its stamp (last: a copy without
    one is never reused)."""
    executed = executed_dir(stamp["preset"])
    (executed / f"{name}.stamp.json").unlink(missing_ok=True)
    finished.write_text(json.dumps(fold_code_for_readers(json.loads(finished.read_text())), indent=1,
                                   ensure_ascii=False) + "\n")
    finished.replace(executed / f"{name}.ipynb")
    (executed / f"{name}.failed.ipynb").unlink(missing_ok=True)
    (executed / f"{name}.stamp.json").write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")


def is_current(name: str, stamp: dict) -> bool:
    executed = executed_dir(stamp["preset"])
    try:
        return (executed / f"{name}.ipynb").exists() and \
            json.loads((executed / f"{name}.stamp.json").read_text()) == stamp
    except (OSError, json.JSONDecodeError):
        return False


def execute_page(source: Path, output: Path, params: dict, env: dict, cwd: Path | None = None) -> None:
    """Execute one page with papermill (working directory ``cwd``, default the repository root; the kernel inherits
    ``env``) into ``output``; a failed cell raises papermill's ``PapermillExecutionError``, the partial notebook
    saved."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # papermill starts the kernel with this process's environment
    try:
        papermill.execute_notebook(str(source), str(output), parameters=params, kernel_name=KERNEL,
                                   cwd=str(cwd or paths.ROOT), progress_bar=False, request_save_on_cell_execute=True)
    finally:  # put back key by key: pages run at once (main sets their common environment first) never see a gap
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def execute(nb: dict, params: dict, stamp: dict, force: bool, jobs: int = 1) -> str:
    """Execute one page unless its stamp matches. Returns 'skipped (unchanged)' or 'executed'."""
    name, executed = nb["name"], executed_dir(stamp["preset"])
    if not force and is_current(name, stamp):
        return "skipped (unchanged)"
    executed.mkdir(parents=True, exist_ok=True)
    (executed / f"{name}.stamp.json").unlink(missing_ok=True)
    running = executed / f".{name}.running.ipynb"
    try:
        execute_page(nb["source"], running, params, kernel_env(stamp["preset"], jobs))
    except papermill.PapermillExecutionError as e:
        failed = running.replace(executed / f"{name}.failed.ipynb")
        raise BuildError(f"notebook {name!r} failed in cell {e.exec_count}: {e.ename}: {e.evalue}; partial output in "
                         f"{failed.relative_to(paths.ROOT)}") from None
    save_executed(name, running, stamp)
    return "executed"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="small",
                    help="small: each page's defaults; book, paper: with that preset's entries in book/params.yml")
    ap.add_argument("--only", nargs="+", action="extend", default=[], metavar="NAME",
                    help="execute only these pages (the others keep their last executed copy)")
    ap.add_argument("--force", action="store_true", help="re-execute and re-render even if nothing changed")
    ap.add_argument("--no-build", action="store_true", help="execute the pages, do not render the site")
    ap.add_argument("--jobs", type=int, default=1, help="pages executed at once (default 1)")
    args = ap.parse_args(argv)
    t_all = time.monotonic()
    try:
        notebooks = load_notebook_list()
        names = [nb["name"] for nb in notebooks]
        if unknown := [n for n in args.only if n not in names]:
            raise BuildError(f"--only {' '.join(unknown)}: not in book/notebooks.yml ({', '.join(names)})")
        params = (yaml.safe_load((paths.BOOK / "params.yml").read_text()) or {}).get(args.preset, {}) \
            if args.preset != "small" else {}
        if args.preset == "paper":  # only the pages with a paper setting (and the status page reading their verdicts)
            notebooks = [nb for nb in notebooks if nb["name"] in params or nb["reads_results"]]
            preflight({nb["name"]: parameters_for(nb["name"], args.preset, params) for nb in notebooks}, args.preset)
        code_hash = dclib_source_hash()
        print(f"book: preset {args.preset}, {len(notebooks)} page(s), {args.jobs} at once, dclib source "
              f"{code_hash[:12]}", flush=True)
        os.environ.update(kernel_env(args.preset, args.jobs))  # every kernel of this run: see execute_page
        ErrorCache(os.environ["DCLIB_ERROR_CACHE"]).prune()  # errors of an older dclib are never read again

        def run(nb: dict) -> str | None:  # the page's name if it failed or has no executed copy
            name, t0 = nb["name"], time.monotonic()
            if args.only and name not in args.only:
                kept = (executed_dir(args.preset) / f"{name}.ipynb").exists()
                print(f"  {name}: not selected ({'kept' if kept else 'missing'})", flush=True)
                return None if kept else name
            p = parameters_for(name, args.preset, params)
            try:
                state = execute(nb, p, notebook_stamp(nb, p, args.preset, code_hash), args.force, args.jobs)
            except BuildError as e:
                print(f"  {name}: FAILED after {time.monotonic() - t0:.1f}s: {e}", flush=True)
                return name
            print(f"  {name}: {state} in {time.monotonic() - t0:.1f}s", flush=True)
            return None

        # pages reading the others' verdicts run after them
        failures = run_in_order([nb for nb in notebooks if not nb["reads_results"]], args.jobs, run)
        failures += [run(nb) for nb in notebooks if nb["reads_results"]]
        if failures := [f for f in failures if f]:
            raise BuildError(f"{len(failures)} page(s) failed or have no executed copy: {', '.join(failures)}")
        write_toc(notebooks, args.preset)
        if not args.no_build:
            t0 = time.monotonic()
            state = jupyter_book_build(args.preset, book_inputs_hash(notebooks, args.preset), args.force)
            site = site_dir(args.preset).relative_to(paths.ROOT)
            print(f"jupyter-book: {state} in {time.monotonic() - t0:.1f}s -> {site}")
    except (BuildError, PreflightError, RenderError) as e:
        print(f"book: ERROR: {e}", flush=True)
        return 1
    print(f"book: done in {time.monotonic() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
