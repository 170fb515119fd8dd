"""The small preset (`make test`, `make book-quick`) and the book preset (`make book`) never share a folder:
not their results, not their executed copies, not their site. A test run must not replace the book's numbers.

The build tests run book/build_book.py's own functions on a tiny fake checkout in a temporary folder.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import build_book  # noqa: E402
from dclib.pages import page_parameters  # noqa: E402


def _apart(a: Path, b: Path) -> bool:
    return not (a.is_relative_to(b) or b.is_relative_to(a))


def _snapshot(*folders: Path) -> dict:
    """Every file (links not followed) under the folders: path -> (bytes, mtime)."""
    files = [p for f in folders for p in sorted(f.rglob("*")) if p.is_file() and not p.is_symlink()]
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def _folders(preset: str) -> list[Path]:
    """Where a build of this preset writes (its site lies in its build folder)."""
    assert build_book.site_dir(preset).is_relative_to(build_book.build_dir(preset))
    return [build_book.results_folder(preset), build_book.executed_dir(preset), build_book.build_dir(preset)]


def test_each_preset_writes_to_its_own_folders(monkeypatch):
    # A results folder inherited from the shell must not put both presets' numbers in one place.
    monkeypatch.setenv("DCLIB_RESULTS_DIR", str(ROOT / "results"))
    for preset in build_book.PRESETS:
        env = build_book.kernel_env(preset)
        assert env["DCLIB_RESULTS_DIR"] == str(build_book.results_folder(preset))
        assert env["DCLIB_PRESET"] == preset
    # Not even nested: with book/executed/small inside book/executed, the other preset's site would read it.
    for a, b in itertools.combinations(build_book.PRESETS, 2):
        for mine, theirs in itertools.product(_folders(a), _folders(b)):
            assert _apart(mine, theirs), (mine, theirs)


def test_make_targets_use_their_presets_folders():
    """`make test` runs the small preset only (nbval through notebooks/conftest.py, then the quick book), and
    each book target checks the site its own preset built."""
    recipes, target = {}, None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if m := re.match(r"^([\w-]+):", line):
            target = m.group(1)
        elif line.startswith("\t") and target:
            recipes.setdefault(target, []).append(line.strip())
    for name, preset in (("book", "book"), ("book-quick", "small")):
        text = "\n".join(recipes[name])
        assert f"build_book.py --preset {preset}" in text, text
        checked = re.search(r"check_site\.py (\S+)", text).group(1)
        assert ROOT / checked == build_book.site_dir(preset), (name, checked)
    assert "--preset book" not in "\n".join(recipes["test"])

    spec = importlib.util.spec_from_file_location("notebooks_conftest", ROOT / "notebooks" / "conftest.py")
    nbval_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nbval_conftest)
    assert nbval_conftest.PRESET == "small"

    site_test = (ROOT / "tests" / "test_book_site.py").read_text()
    assert '"--preset", "small"' in site_test and '"--preset", "book"' not in site_test


def test_results_dir_and_current_preset(monkeypatch, tmp_path):
    from dclib.reporting import current_preset, results_dir

    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "notebooks.yml").write_text("notebooks: []\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("DCLIB_RESULTS_DIR", raising=False)
    monkeypatch.delenv("DCLIB_PRESET", raising=False)
    assert current_preset() == "small"  # a notebook run by hand is a smoke run
    assert results_dir() == tmp_path / "results" / "small"
    monkeypatch.setenv("DCLIB_PRESET", "book")
    assert current_preset() == "book"
    assert results_dir() == tmp_path / "results" / "book"
    monkeypatch.setenv("DCLIB_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert results_dir() == tmp_path / "elsewhere"


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A tiny checkout for build_book: the real _config.yml and book extension, three prose pages and one
    notebook, with build_book's paths pointed at it."""
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    shutil.copytree(ROOT / "book" / "_ext", tmp_path / "book" / "_ext")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n\nSee {doc}`executed/page` and {doc}`reproduce`.\n")
    (tmp_path / "book" / "reproduce.md").write_text("# Reproduce\n\nText.\n")
    (tmp_path / "book" / "references.md").write_text("# References\n\nText.\n")
    (tmp_path / "book" / "api.md").write_text("# API reference\n\nText.\n")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Page"),
        nbformat.v4.new_code_cell("scale = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "from dclib.reporting import current_preset, results_dir\n"
            "(results_dir() / 'out.txt').write_text(f'{current_preset()} {scale}')\n"
            "print('preset', current_preset())"),
    ]
    nbformat.write(nb, tmp_path / "notebooks" / "page.ipynb")
    for name, value in (("ROOT", tmp_path), ("BOOK", tmp_path / "book"), ("NOTEBOOKS", tmp_path / "notebooks"),
                        ("BUILD", tmp_path / "_build")):
        monkeypatch.setattr(build_book.paths, name, value)
    monkeypatch.delenv("DCLIB_RESULTS_DIR", raising=False)
    return {"name": "page", "title": "Page", "source": tmp_path / "notebooks" / "page.ipynb",
            "reads_results": True}


@pytest.mark.timeout(120)
def test_a_small_run_leaves_the_book_presets_results_and_copies_alone(checkout):
    code = build_book.dclib_source_hash()
    stamp = build_book.notebook_stamp(checkout, {"scale": 100}, "book", code)
    assert build_book.execute(checkout, {"scale": 100}, stamp, force=False) == "executed"
    assert (build_book.results_folder("book") / "out.txt").read_text() == "book 100"
    before = _snapshot(*_folders("book"))
    assert before

    stamp = build_book.notebook_stamp(checkout, {}, "small", code)
    assert build_book.execute(checkout, {}, stamp, force=True) == "executed"
    assert (build_book.results_folder("small") / "out.txt").read_text() == "small 1"
    executed = nbformat.read(build_book.executed_dir("small") / "page.ipynb", as_version=4)
    assert "preset small" in json.dumps(executed.cells[-1].outputs)
    assert _snapshot(*_folders("book")) == before


@pytest.mark.timeout(180)
def test_a_small_site_build_leaves_the_book_site_alone(checkout):
    # What `make book` left: its executed copy, a site and a build stamp.
    for preset in build_book.PRESETS:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell(f"# Page\n\n{preset} numbers")]
        build_book.executed_dir(preset).mkdir(parents=True)
        nbformat.write(nb, build_book.executed_dir(preset) / "page.ipynb")
    book_site = build_book.site_dir("book")
    book_site.mkdir(parents=True)
    (book_site / "index.html").write_text("the book")
    (build_book.build_dir("book") / ".book_stamp.json").write_text("{}\n")
    before = _snapshot(*_folders("book"))

    build_book.write_toc([checkout], "small")
    inputs = build_book.book_inputs_hash([checkout], "small")
    assert inputs != build_book.book_inputs_hash([checkout], "book")  # each preset renders its own copies
    assert build_book.jupyter_book_build("small", inputs, force=False) == "built (full)"
    page = (build_book.site_dir("small") / "book" / "executed" / "page.html").read_text()
    assert "small numbers" in page and "book numbers" not in page
    assert (build_book.site_dir("small") / "book" / "intro.html").exists()
    assert _snapshot(*_folders("book")) == before


def test_every_preset_parameter_is_a_parameter_of_its_page():
    """A typo in book/params.yml would be injected by papermill as a new variable and silently ignored."""
    import yaml

    presets = yaml.safe_load((ROOT / "book" / "params.yml").read_text())
    assert set(presets) == {"book", "paper"}
    for preset, pages in presets.items():
        for page, params in pages.items():
            names = set(page_parameters(ROOT / "notebooks" / f"{page}.ipynb"))
            assert set(params) <= names, (preset, page, sorted(set(params) - names))
    # ... and a typo inside a Table 1 dataset spec would fail only on the GPU, hours in
    from dclib.schedules import parse_schedule
    from dclib.zero_shot_baselines import TASK_KEYS

    for task in presets["paper"]["zero_shot_table"]["tasks"]:
        assert set(task) <= set(TASK_KEYS) and "dataset" in task and task["template"].count("{}") == 1, task
        parse_schedule(task["schedule"])
    # ... and every paper page on a hub dataset takes a seeded random subset, not the first rows of a split that
    # may be stored class by class
    for page, params in presets["paper"].items():
        if any(not str(params.get(k, "embedded:")).startswith("embedded:") for k in ("dataset", "supervised_dataset")):
            assert isinstance(params.get("shuffle_seed"), int), page


def test_pages_that_take_prompts_take_the_shared_model_and_dataset_names():
    """`-p model ... -p dataset ... -p prompts ...` means the same on every page: a page with `prompts` names its
    model `model` (or `models`, the version sweep) and, where it reads a dataset, that dataset `dataset`, so
    papermill cannot warn "unknown parameter" and go on with the page's embedded defaults and the user's prompts."""
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        names = set(page_parameters(path))
        if "prompts" in names:
            assert names & {"model", "models"}, (path.name, sorted(names))
            assert "dataset" in names or not any(n.endswith("dataset") for n in names), (path.name, sorted(names))


def test_paper_preset_stops_at_once_offline_naming_what_is_missing(monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    executed = []
    monkeypatch.setattr(build_book, "execute", lambda *a, **k: executed.append(a) or "executed")
    assert build_book.main(["--preset", "paper", "--no-build"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert not executed and len(out) == 1, out
    assert "model 'stabilityai/stable-diffusion-2-base' (quickstart: model) is not in the local" in out[0]
    # Local folders and embedded models need no cache; a cached snapshot counts as present.
    assert build_book.missing_inputs("p", {"model": str(tmp_path), "dataset": "embedded:digits-test"}) == []
    repo = tmp_path / "empty-cache" / "datasets--timm--oxford-iiit-pet"  # laid out as a download leaves it
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "e69de29b").write_text("")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "README.md").symlink_to("../../blobs/e69de29b")
    cache = "is not in the local Hugging Face cache"
    assert build_book.missing_inputs("p", {"dataset": "timm/oxford-iiit-pet", "models": ["a/b"]}) == \
        [f"model 'a/b' (p: models) {cache}"]
    # Table 1's tasks: embedded task names need nothing, dataset specs name their dataset; Table 3's pairs too
    assert build_book.missing_inputs("p", {"tasks": ["shape", {"dataset": "timm/oxford-iiit-pet"},
                                                     {"dataset": "c/d", "template": "{}"}], "pairs": "w/x"}) == \
        [f"dataset 'w/x' (p: pairs) {cache}", f"dataset 'c/d' (p: tasks) {cache}"]
    # Table 4's shifted sets: hub ids, local folders and their class maps; its discriminative models
    shifted = {"a": "e/f", "b": {"dataset": str(tmp_path), "class_map": "./no-map.json"}, "c": "./no-folder"}
    assert build_book.missing_inputs("p", {"shifted": shifted, "discriminative": ["g/h", str(tmp_path)]}) == \
        [f"model 'g/h' (p: discriminative) {cache}", f"dataset 'e/f' (p: shifted) {cache}",
         "local file './no-map.json' (p: shifted) does not exist",
         "local folder './no-folder' (p: shifted) does not exist"]


def test_every_notebook_is_thin():
    """Parameters, a call into dclib, a plot and a sentence: at most 40 code lines besides the parameters cell (blank
    lines and comments not counted), and no function, lambda or class (analyses live in dclib, tested there)."""
    import ast

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
        lines = [line for src in code for line in src.splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(lines) <= 40, (path.name, len(lines))
        tree = ast.parse("\n".join(line for src in code for line in src.splitlines() if not line.startswith("%")))
        defined = [type(node).__name__ for node in ast.walk(tree)
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))]
        assert not defined, (path.name, defined)


def test_compare_results_finds_a_moved_number_and_ignores_timings(tmp_path):
    sys.path.insert(0, str(ROOT / "book"))
    import compare_results

    for side, accuracy, seconds in (("before", 0.5, 1.0), ("after", 0.5, 2.0)):
        (tmp_path / side / "verdicts").mkdir(parents=True)
        (tmp_path / side / "t.csv").write_text(f"method,accuracy,seconds_per_image\na,{accuracy},{seconds}\n")
        (tmp_path / side / "verdicts" / "v.json").write_text(json.dumps(
            {"outcome": "not detected", "comparisons": [{"label": "x", "effect": 0.1, "p_value": 0.5, "n": 8}]}))
    assert compare_results.differences(tmp_path / "before", tmp_path / "after")[::2] == ([], 2)
    (tmp_path / "after" / "t.csv").write_text("method,accuracy,seconds_per_image\na,0.6,2.0\n")
    (tmp_path / "after" / "verdicts" / "v.json").write_text(json.dumps(
        {"outcome": "reproduces", "comparisons": [{"label": "x", "effect": 0.1, "p_value": 0.01, "n": 8}]}))
    diffs, _, same = compare_results.differences(tmp_path / "before", tmp_path / "after")
    assert same == 0 and len(diffs) == 2 and "outcome, comparisons" in diffs[1]


def _timed_run(durations: dict, log: list):
    """A fake page runner: sleeps the page's time, logging (event, page, pages running) at start and end."""
    import threading
    import time

    lock, running = threading.Lock(), set()

    def run(page):
        with lock:
            running.add(page["name"])
            log.append(("start", page["name"], set(running)))
        time.sleep(durations[page["name"]])
        with lock:
            running.discard(page["name"])
            log.append(("end", page["name"], set(running)))
        return None if page["name"] != "b" else "b"  # b "fails": its readers still run

    return run


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_pages_start_in_list_order_after_the_pages_they_read(jobs):
    pages = [{"name": "a"}, {"name": "b"}, {"name": "c", "reads": ["a"]}, {"name": "d"},
             {"name": "e", "reads": ["b", "d"]}]
    log = []
    results = build_book.run_in_order(pages, jobs, _timed_run({"a": 0.3, "b": 0.05, "c": 0.05, "d": 0.05, "e": 0.05},
                                                              log))
    assert results == [None, "b", None, None, None]  # in the pages' order, failures included
    starts = [name for event, name, _ in log if event == "start"]
    ended = lambda name: next(i for i, (event, n, _) in enumerate(log) if event == "end" and n == name)
    started = lambda name: next(i for i, (event, n, _) in enumerate(log) if event == "start" and n == name)
    assert all(len(now) <= jobs for _, _, now in log)
    for page in pages:  # never before what it reads has finished
        assert all(ended(r) < started(page["name"]) for r in page.get("reads", []))
    if jobs == 1:
        assert starts == ["a", "b", "c", "d", "e"]
    else:  # c waits for the slow a; d, listed after it, goes first
        assert starts.index("d") < starts.index("c") and max(len(now) for _, _, now in log) > 1


def test_a_page_may_read_only_pages_listed_before_it(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    for name in ("one", "two"):
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / "notebooks" / f"{name}.ipynb")
    monkeypatch.setattr(build_book.paths, "BOOK", tmp_path)
    monkeypatch.setattr(build_book.paths, "NOTEBOOKS", tmp_path / "notebooks")
    (tmp_path / "notebooks.yml").write_text("notebooks:\n  - name: one\n    reads: [two]\n  - name: two\n")
    with pytest.raises(build_book.BuildError, match="'one' reads \\['two'\\]: list pages named before it"):
        build_book.load_notebook_list()
    (tmp_path / "notebooks.yml").write_text("notebooks:\n  - name: one\n  - name: two\n    reads: [one]\n")
    assert [p["reads"] for p in build_book.load_notebook_list()] == [[], ["one"]]


def test_the_books_reads_name_earlier_pages():
    pages = build_book.load_notebook_list()
    assert any(p["reads"] for p in pages)
    names = [p["name"] for p in pages]
    assert all(names.index(r) < names.index(p["name"]) for p in pages for r in p["reads"])


def test_a_read_page_that_is_not_run_is_no_wait():
    log = []
    results = build_book.run_in_order([{"name": "c", "reads": ["a"]}], 2, _timed_run({"c": 0.01}, log))
    assert results == [None] and [e[:2] for e in log] == [("start", "c"), ("end", "c")]
