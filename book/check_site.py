#!/usr/bin/env python
"""Check a built book in a real browser (headless Chromium driven by Selenium).

    .venv/bin/python book/check_site.py _build/book/_build/html [--page book/intro.html ...] [--timeout 30]

Serves the site with a local http.server on 127.0.0.1 (a free port, loopback only), opens every HTML page
(all *.html except search.html, genindex.html and the _static/_sources/_images folders), and checks:

* figures: every <img> loaded (naturalWidth > 0) and, unless hidden on purpose, has a non-zero rendered size;
  a page rendered from a notebook must show at least one image;
* equations: every math element (Sphinx's ``.math``) was typeset by MathJax (holds an ``mjx-container``) and
  MathJax reported no TeX error (``mjx-merror``);
* internal links: every href to a page of the site answers 200 and its #anchor exists in that page;
* resources: nothing was requested outside the local server and the server answered no request with an error;
* console: the browser log has no SEVERE entry;
* readers: on a notebook page no code input is shown unfolded (build_book tags code cells hide-input), and no
  table is wider than the content column unless it sits in a horizontally scrolling box.

Prints one line per page and exits 1 if any check failed (2 if the browser could not be started).
Uses Debian's chromium + chromium-driver (``make browser`` installs them).
"""
from __future__ import annotations

import argparse
import functools
import html.parser
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1024"]
SKIP_PAGES = {"search.html", "genindex.html", "py-modindex.html"}
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}


# ----------------------------------------------------------------------------------------------- server
class _Handler(SimpleHTTPRequestHandler):
    errors: list = []  # (path, status) of every request answered with an error; replaced per server

    def log_message(self, fmt, *args):  # quiet
        pass

    def log_request(self, code="-", size="-"):
        try:
            code_i = int(code)
        except (TypeError, ValueError):
            code_i = 0
        if code_i >= 400 and urllib.parse.urlsplit(self.path).path != "/favicon.ico":
            self.errors.append((self.path, code_i))


def serve(root: Path):
    handler = type("Handler", (_Handler,), {"errors": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, handler


# ----------------------------------------------------------------------------------------------- links
class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" or (k == "name" and tag == "a"):
                self.ids.add(v)


class LinkChecker:
    def __init__(self, base: str):
        self.base = base
        self.cache: dict[str, tuple[int, set]] = {}

    def fetch(self, url: str) -> tuple[int, set]:
        if url not in self.cache:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    status = r.status
                    body = r.read()
                    ctype = r.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                status, body, ctype = e.code, b"", ""
            except Exception:
                status, body, ctype = 0, b"", ""
            ids = set()
            if status == 200 and "html" in ctype:
                p = _Ids()
                p.feed(body.decode("utf-8", "replace"))
                ids = p.ids
            self.cache[url] = (status, ids)
        return self.cache[url]

    def check(self, href: str) -> str | None:
        """Return a problem description, or None if the link resolves."""
        target, _, frag = href.partition("#")
        status, ids = self.fetch(target)
        if status != 200:
            return f"{href} -> HTTP {status or 'no answer'}"
        frag = urllib.parse.unquote(frag)
        if frag and frag not in ids:
            return f"{href} -> no element with id {frag!r}"
        return None


# ----------------------------------------------------------------------------------------------- browser
def find_browser() -> tuple[str, str]:
    chrome = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if not chrome or not driver:
        raise RuntimeError("chromium and chromedriver not found (Debian: apt-get install chromium chromium-driver, "
                           "or `make browser`)")
    return chrome, driver


def start_browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


PAGE_PROBE = r"""
const done = arguments[arguments.length - 1];
const deadline = Date.now() + arguments[0] * 1000;
function imagesDone() { return Array.from(document.images).every(i => i.complete); }
async function run() {
  while (document.readyState !== 'complete' && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
  const mathEls = document.querySelectorAll('.math');
  let mathjax = 'absent';
  if (mathEls.length) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() < deadline)
      await new Promise(r => setTimeout(r, 50));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      try {
        await Promise.race([MathJax.startup.promise, new Promise((_, j) => setTimeout(() => j('timeout'),
                            Math.max(0, deadline - Date.now())))]);
        mathjax = 'ok';
      } catch (e) { mathjax = 'error: ' + e; }
    } else { mathjax = 'not loaded'; }
  }
  while (!imagesDone() && Date.now() < deadline) await new Promise(r => setTimeout(r, 50));
  const hidden = el => el.offsetParent === null || getComputedStyle(el).visibility === 'hidden';
  const imgs = Array.from(document.images).map(i => {
    const r = i.getBoundingClientRect();
    return {src: i.currentSrc || i.src, complete: i.complete, natural: i.naturalWidth,
            width: r.width, height: r.height, hidden: hidden(i)};
  });
  const math = Array.from(mathEls).map(m => ({
    typeset: m.querySelector('mjx-container') !== null, error: m.querySelector('mjx-merror') !== null,
    text: (m.getAttribute('data-tex') || m.textContent || '').slice(0, 60)}));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({raw: a.getAttribute('href'), abs: a.href}));
  const resources = performance.getEntriesByType('resource').map(e => e.name);
  const notebook = document.querySelector('div.cell, .cell_output') !== null;
  const strayMerror = document.querySelectorAll('mjx-merror').length;
  // Code a reader sees without a click (hide-input folds it into a closed <details>).
  const unfolded = Array.from(document.querySelectorAll('div.cell_input'))
    .filter(e => !e.closest('details:not([open])') && !hidden(e)).length;
  // Tables wider than the content column and not inside a horizontally scrolling box are cut off.
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const right = article.getBoundingClientRect().right;
  const scrolls = t => { for (let e = t.parentElement; e && e !== article; e = e.parentElement) {
    const ox = getComputedStyle(e).overflowX; if (ox === 'auto' || ox === 'scroll') return true; } return false; };
  const overflowing = Array.from(article.querySelectorAll('table'))
    .filter(t => !hidden(t) && !scrolls(t) && t.getBoundingClientRect().right > right + 1).length;
  done({imgs, math, links, resources, notebook, mathjax, strayMerror, unfolded, overflowing, url: location.href});
}
run();
"""


def list_pages(root: Path) -> list[str]:
    pages = []
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP_DIRS or rel.as_posix() in SKIP_PAGES:
            continue
        pages.append(rel.as_posix())
    return pages


def is_notebook_page(root: Path, rel: str, probe: dict) -> bool:
    stem = rel[:-len(".html")]
    return (root / "_sources" / f"{stem}.ipynb").exists() or probe["notebook"]


def check_page(driver, root: Path, base: str, rel: str, links: LinkChecker, timeout: float) -> tuple[list, dict]:
    problems: list[str] = []
    url = urllib.parse.urljoin(base, urllib.parse.quote(rel))
    driver.get(url)
    probe = driver.execute_async_script(PAGE_PROBE, timeout)

    # figures
    imgs = probe["imgs"]
    shown = 0
    for im in imgs:
        name = im["src"].rsplit("/", 1)[-1][:60] if not im["src"].startswith("data:") else "data:image"
        if not im["complete"] or im["natural"] <= 0:
            problems.append(f"image not loaded: {name}")
        elif im["hidden"]:
            continue
        elif im["width"] <= 0 or im["height"] <= 0:
            problems.append(f"image has zero rendered size: {name}")
        else:
            shown += 1
    notebook = is_notebook_page(root, rel, probe)
    if notebook and shown == 0:
        problems.append("notebook page shows no image")

    # what a reader sees: code folded, tables inside the column
    if notebook and probe["unfolded"]:
        problems.append(f"{probe['unfolded']} code cell input(s) shown unfolded (tag them hide-input)")
    if probe["overflowing"]:
        problems.append(f"{probe['overflowing']} table(s) wider than the content column and not scrollable")

    # equations
    math = probe["math"]
    if math:
        if probe["mathjax"] != "ok":
            problems.append(f"MathJax {probe['mathjax']}")
        untypeset = [m["text"] for m in math if not m["typeset"]]
        if untypeset:
            problems.append(f"{len(untypeset)}/{len(math)} equations not rendered, e.g. {untypeset[0]!r}")
        errs = [m["text"] for m in math if m["error"]]
        if errs:
            problems.append(f"{len(errs)} equations with TeX errors, e.g. {errs[0]!r}")
    elif probe["strayMerror"]:
        problems.append(f"{probe['strayMerror']} MathJax errors on the page")

    # internal links
    n_links = 0
    for ln in probe["links"]:
        raw, absu = ln["raw"], ln["abs"]
        if not absu.startswith(base) or raw.startswith(("javascript:", "mailto:")) or raw in ("#", ""):
            continue
        n_links += 1
        err = links.check(absu)
        if err:
            problems.append(f"broken link {raw!r}: {err.replace(base, '/')}")

    # resources from elsewhere
    for res in probe["resources"]:
        if not res.startswith(base) and not res.startswith(("data:", "blob:")):
            problems.append(f"external resource requested: {res[:100]}")

    # console
    # A browser asks for /favicon.ico by itself when a page names no icon (the redirect page index.html does
    # not); that request says nothing about the site, so its 404 is not counted.
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
              and not e.get("message", "").startswith(base + "favicon.ico ")]
    for e in severe:
        problems.append(f"console: {e.get('message', '')[:200].replace(base, '/')}")

    summary = {"images": f"{shown}/{len(imgs)}", "math": f"{sum(m['typeset'] for m in math)}/{len(math)}",
               "links": n_links, "console": len(severe), "notebook": notebook}
    return problems, summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("site", type=Path, help="built site, e.g. _build/book/_build/html")
    ap.add_argument("--page", action="append", default=[], help="check only this page (relative path); repeatable")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a page to settle")
    ap.add_argument("--screenshots", type=Path, help="save a PNG of every page (top of the page) in this folder")
    args = ap.parse_args(argv)

    root = args.site.resolve()
    if not (root / "index.html").exists():
        print(f"check_site: {args.site} has no index.html", file=sys.stderr)
        return 2
    pages = args.page or list_pages(root)
    t0 = time.monotonic()
    httpd, handler = serve(root)
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    profile = tempfile.mkdtemp(prefix="check_site_profile_")
    failed = 0
    try:
        try:
            driver = start_browser(profile)
        except Exception as e:  # noqa: BLE001
            print(f"check_site: cannot start the browser: {e}", file=sys.stderr)
            return 2
        try:
            driver.set_page_load_timeout(args.timeout)
            driver.set_script_timeout(args.timeout + 10)
            links = LinkChecker(base)
            for rel in pages:
                before = len(handler.errors)
                try:
                    problems, s = check_page(driver, root, base, rel, links, args.timeout)
                    if args.screenshots:
                        args.screenshots.mkdir(parents=True, exist_ok=True)
                        driver.save_screenshot(str(args.screenshots / (rel.replace("/", "__")[:-5] + ".png")))
                except Exception as e:  # noqa: BLE001
                    problems, s = [f"could not check the page: {type(e).__name__}: {str(e)[:200]}"], None
                for path, code in handler.errors[before:]:
                    msg = f"server answered {code} for {path}"
                    if not any(path in p for p in problems):
                        problems.append(msg)
                status = "FAIL" if problems else "ok  "
                info = (f"images {s['images']:>5}  math {s['math']:>7}  links {s['links']:>3}  console {s['console']}"
                        + ("  [notebook]" if s["notebook"] else "")) if s else ""
                print(f"{status} {rel:<45} {info}", flush=True)
                for p in problems:
                    print(f"       - {p}", flush=True)
                failed += bool(problems)
        finally:
            driver.quit()
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"check_site: {len(pages) - failed}/{len(pages)} pages ok in {time.monotonic() - t0:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
