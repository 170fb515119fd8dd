"""The book builds and its site works in a real browser (headless Chromium via Selenium).

Skipped, with the reason, only when chromium + chromedriver are missing and cannot be installed
(`make browser` installs Debian's chromium and chromium-driver; `make test` depends on it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _have_browser() -> bool:
    return bool((shutil.which("chromium") or shutil.which("chromium-browser")) and shutil.which("chromedriver"))


@pytest.fixture(scope="module")
def browser():
    if not _have_browser() and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run("apt-get update -q && apt-get install -y -q chromium chromium-driver", shell=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    if not _have_browser():
        pytest.skip("chromium/chromedriver not installed and could not be installed "
                    "(Debian packages chromium, chromium-driver; `make browser`)")


def _run(*args, timeout):
    return subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>t</title></head>
<body><h1 id="top">Title</h1>{body}</body></html>"""


@pytest.mark.timeout(300)
def test_checker_passes_a_good_site_and_fails_a_broken_one(browser, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    _png(good / "fig.png")
    (good / "index.html").write_text(PAGE.format(body='<img src="fig.png"><a href="other.html#sec">other</a>'))
    (good / "other.html").write_text(PAGE.format(body='<p id="sec">x</p><a href="index.html#top">back</a>'))
    r = _run("book/check_site.py", str(good), timeout=240)
    assert r.returncode == 0, r.stdout

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "fig.png").unlink()  # missing figure
    (bad / "other.html").write_text(PAGE.format(
        body='<a href="index.html#nowhere">bad anchor</a><a href="missing.html">bad page</a>'
             '<script>throw new Error("boom")</script>'))
    r = _run("book/check_site.py", str(bad), timeout=240)
    assert r.returncode == 1, r.stdout
    out = r.stdout
    assert "image not loaded: fig.png" in out
    assert "no element with id 'nowhere'" in out
    assert "missing.html -> HTTP 404" in out
    assert "Uncaught Error: boom" in out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quick_book_builds_and_every_page_works_in_the_browser(browser):
    r = _run("book/build_book.py", "--preset", "small", timeout=1400)
    assert r.returncode == 0, r.stdout[-8000:]
    html = ROOT / "_build" / "small" / "_build" / "html"  # the small preset's site; _build/book is `make book`'s
    for page in ("index.html", "book/intro.html", "book/reproduce.html", "book/references.html"):
        assert (html / page).exists(), page
    listed = (yaml.safe_load((ROOT / "book" / "notebooks.yml").read_text()) or {}).get("notebooks") or []
    for entry in listed:
        name = entry["name"] if isinstance(entry, dict) else entry
        assert (html / "book" / "executed" / f"{name}.html").exists(), f"no page for notebook {name}"
    # the API reference, generated from the docstrings (autodoc), documents the public entry points
    api = (html / "book" / "api.html").read_text()
    for name in ("dclib.DiffusionClassifier.classify", "dclib.settings.ClassifySettings", "dclib.runs.evaluate",
                 "dclib.pages.ExperimentSpec", "dclib.Plan"):
        assert f'id="{name}"' in api, name

    r = _run("book/check_site.py", str(html), timeout=600)
    assert r.returncode == 0, r.stdout[-8000:]
    assert "FAIL" not in r.stdout


def test_a_changed_page_title_forces_a_full_rebuild(monkeypatch):
    """Neighbouring pages show a page's title in their previous/next links, which Sphinx does not refresh on
    an incremental build: the build stamp's "setup" part must change with any title."""
    sys.path.insert(0, str(ROOT / "book"))
    import build_book

    tmp_path = ROOT / "_build" / "test-title"  # inside the checkout: the stamp hashes paths relative to it
    shutil.rmtree(tmp_path, ignore_errors=True)
    (tmp_path / "executed" / "small").mkdir(parents=True)
    nb = tmp_path / "executed" / "small" / "page.ipynb"
    write = lambda title: nb.write_text('{"cells": [{"cell_type": "markdown", "source": ["# %s\\n", "text"]}]}' % title)
    write("Table 1: zero-shot")
    assert build_book.page_title(nb) == "Table 1: zero-shot"
    monkeypatch.setattr(build_book.paths, "BOOK", tmp_path)
    first = build_book.book_inputs_hash([{"name": "page"}], "small")
    nb.write_text(nb.read_text().replace("text", "other text"))
    second = build_book.book_inputs_hash([{"name": "page"}], "small")
    assert second["setup"] == first["setup"] and second["pages"] != first["pages"]  # incremental
    write("Table 1: zero-shot classification")
    assert build_book.book_inputs_hash([{"name": "page"}], "small")["setup"] != first["setup"]  # full
    shutil.rmtree(tmp_path)
