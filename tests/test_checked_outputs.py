"""`make test` checks what every page shows, not only that it runs: each page's code cells are tagged
``nbval-check-output``, their outputs stored in the notebook (book/store_checked_outputs.py), and nbval compares them
with a fresh run after book/nbval_sanitize.cfg has blanked the few volatile patterns (timings, temporary paths).

Per page, this test hands nbval itself (`pytest --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg`, as
`make test` runs it) a notebook whose cells re-emit the page's stored outputs: once against the stored outputs as
they are (must pass: the replay is faithful and nothing volatile is left), and once against a copy with one digit
of a checked output changed (must fail), for every checked cell that shows a number.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
import yaml
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "book" / "nbval_sanitize.cfg"
CHECK = "nbval-check-output"
PAGES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
# A page that reads the verdicts the other pages recorded (book/notebooks.yml: reads_results) shows whatever ran
# before it, and nbval runs the pages two at a time in no fixed order: only its parameters table is checked; what
# it shows is tested in tests/test_verdicts.py on verdicts made for the purpose.
READS_OTHER_PAGES = {e["name"] for e in yaml.safe_load((ROOT / "book" / "notebooks.yml").read_text())["notebooks"]
                     if e.get("reads_results")}
EMIT = """import json, sys
from IPython.display import publish_display_data
for o in json.loads({outputs!r}):
    if o["output_type"] == "stream":
        getattr(sys, o["name"]).write(o["text"])
    else:
        publish_display_data(o["data"], o.get("metadata", {{}}))"""


PATTERNS = get_sanitize_patterns(SANITIZE.read_text())  # read once: sanitize runs for every digit of every output


def sanitize(text: str) -> str:
    for regex, replace in PATTERNS:
        text = re.sub(regex, replace, text)
    return text


def change_one_digit(outputs: list) -> list | None:
    """A copy of ``outputs`` with the first digit that survives sanitizing changed (None if none does); images are
    not compared by nbval, so only text is touched."""
    for i, out in enumerate(outputs):
        fields = [("text",)] if out["output_type"] == "stream" else \
            [("data", k) for k in out.get("data", {}) if k.startswith("text/")]
        for path in fields:
            value = out
            for key in path:
                value = value[key]
            text = "".join(value) if isinstance(value, list) else value
            for m in re.finditer(r"\d", text):
                changed = text[:m.start()] + str((int(m.group()) + 1) % 10) + text[m.end():]
                if sanitize(changed) != sanitize(text):
                    altered = copy.deepcopy(outputs)
                    target = altered[i]
                    for key in path[:-1]:
                        target = target[key]
                    target[path[-1]] = changed
                    return altered
    return None


def checked_cells(page: str) -> list:
    nb = nbformat.read(ROOT / "notebooks" / f"{page}.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and CHECK in c.metadata.get("tags", [])]


def test_every_page_checks_its_results_and_its_verdict():
    for page in PAGES:
        nb = nbformat.read(ROOT / "notebooks" / f"{page}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
                continue
            if page in READS_OTHER_PAGES and "start_page(" not in cell.source:
                assert CHECK not in cell.metadata.get("tags", []), (page, "shows other pages' verdicts")
                continue
            assert CHECK in cell.metadata.get("tags", []), (page, cell.source[:80])
            if ".record()" in cell.source or "to_csv(" in cell.source:  # a verdict, a results table
                assert cell.outputs, (page, "no stored output: run book/store_checked_outputs.py", cell.source[:80])


@pytest.fixture(scope="module")
def nbval_results(tmp_path_factory):
    """Run nbval once over one replay notebook per page; returns {(page, cell index): passed}."""
    folder = tmp_path_factory.mktemp("replays")
    expected = {}
    for page in PAGES:
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                "display_name": "Python 3"}})
        for cell in checked_cells(page):
            outputs = [dict(o) for o in json.loads(json.dumps(cell.outputs))]
            altered = change_one_digit(outputs)
            if altered is None:
                continue
            for stored, passes in ((outputs, True), (altered, False)):
                replay = nbformat.v4.new_code_cell(EMIT.format(outputs=json.dumps(outputs)),
                                                   metadata={"tags": [CHECK]})
                replay.outputs = [nbformat.from_dict(o) for o in stored]
                replay.execution_count = len(nb.cells) + 1
                expected[(page, len(nb.cells))] = passes
                nb.cells.append(replay)
        nbformat.write(nb, folder / f"{page}.ipynb")
    report = folder / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", str(folder), "--nbval-lax", "--nbval-sanitize-with",
                    str(SANITIZE), "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={report}"],
                   cwd=folder, capture_output=True, text=True, timeout=600)
    passed = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        m = re.search(r"(\w+)\.ipynb::Cell (\d+)", case.get("classname", "") + "::" + case.get("name", ""))
        if m:
            passed[(m.group(1), int(m.group(2)))] = not any(child.tag in ("failure", "error") for child in case)
    return expected, passed


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", [p for p in PAGES if p not in READS_OTHER_PAGES])
def test_a_changed_number_on_the_page_fails_make_test(page, nbval_results):
    expected, passed = nbval_results
    cells = {k: v for k, v in expected.items() if k[0] == page}
    assert cells, f"{page}: no checked output shows a number"
    assert any(not v for v in cells.values())
    for key, passes in cells.items():
        assert key in passed, (key, sorted(passed)[:5])
        assert passed[key] == passes, (key, "should pass" if passes else "a changed digit went unnoticed")
