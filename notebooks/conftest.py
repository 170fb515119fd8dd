"""nbval runs every notebook here with its own (small) parameters, in the small preset's kernel environment
(its results go to results/small/, never to the book preset's folder). Each book page that passes completely
is also saved as its small-preset executed copy (book/executed/small/) with the stamp
`book/build_book.py --preset small` would give it, so the quick book build of tests/test_book_site.py (run
after this directory by `make test`) renders these outputs instead of executing every notebook a second time.
A notebook with a failed or skipped cell saves nothing.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import build_book  # noqa: E402

PRESET = "small"  # nbval runs the notebooks' own defaults
_runs: dict[Path, dict] = {}  # notebook -> {"outputs": {cell_num: outputs}, "ok": bool}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """The kernel starts in the first cell's setup: give it the environment the book build gives its kernels
    (inline figures, offline hubs, the small preset's results folder), so the saved outputs hold the figures a
    reader sees."""
    if not isinstance(item, IPyNbCell):
        yield
        return
    saved = dict(os.environ)
    os.environ.update(build_book.kernel_env(PRESET))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # make test runs two notebooks at once (pytest-xdist): one torch thread per kernel, not two on two cores
        os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not isinstance(item, IPyNbCell):
        return
    report = outcome.get_result()
    path = Path(str(item.parent.fspath)).resolve()
    run = _runs.setdefault(path, {"outputs": {}, "ok": True})
    if report.failed or report.skipped:
        run["ok"] = False
    if report.when == "call" and report.passed:
        run["outputs"][item.cell_num] = item.test_outputs
    if report.when != "teardown":
        return
    n_code = sum(c.cell_type == "code" for c in item.parent.nb.cells)
    if item.cell_num == n_code - 1:
        _runs.pop(path)
        if run["ok"] and len(run["outputs"]) == n_code:
            _save_executed_copy(path, item.parent.nb, run["outputs"])


def _save_executed_copy(path: Path, nb, outputs: dict) -> None:
    entry = next((e for e in build_book.load_notebook_list() if e["source"].resolve() == path), None)
    if entry is None:  # not a page of the book
        return
    executed = copy.deepcopy(nb)
    count = 0
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(dict(o)) for o in outputs[count]]
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if out.output_type == "execute_result":
                    out.execution_count = count
    nbformat.validate(executed)
    stamp = build_book.notebook_stamp(entry, {}, PRESET, build_book.dclib_source_hash())
    executed_dir = build_book.executed_dir(PRESET)
    executed_dir.mkdir(parents=True, exist_ok=True)
    finished = executed_dir / f".{entry['name']}.saving.ipynb"
    nbformat.write(executed, finished)
    build_book.save_executed(entry["name"], finished, stamp)
