"""Sphinx tweaks for the dclib book (loaded from _config.yml as a local extension).

* Drops sphinx-thebe's scripts from every page. Jupyter Book 1.0.4 always loads sphinx_thebe, which adds
  its inline config script twice (``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been
  declared`` in the console) and would fetch thebe from a CDN when activated. The book has no live code.
* Sets the theme's ``default_mode`` (an html_context value) to ``light``: with it empty, pydata-sphinx-theme logs
  ``Got invalid theme mode`` as a console error on a first visit.
* Declares an empty favicon when none is configured, so browsers do not request a missing /favicon.ico.
* Adds static/dclib.css: wide output tables scroll inside their cell instead of being clipped.
"""
from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


def _page_context(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    kept, seen = [], set()
    for js in scripts:
        filename = str(getattr(js, "filename", "") or "")
        body = (getattr(js, "attributes", None) or {}).get("body", "") or ""
        if "THEBE_JS_URL" in body or filename.endswith("sphinx-thebe.js"):
            continue
        key = (filename, body)
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    context["script_files"] = kept
    if not context.get("default_mode"):
        context["default_mode"] = "light"
    if not app.config.html_favicon:
        # No favicon: say so, or browsers request /favicon.ico and log its 404 as a console error.
        context["metatags"] = context.get("metatags", "") + '\n<link rel="icon" href="data:,">'


def _add_static(app):
    app.config.html_static_path.append(str(STATIC))


def setup(app):
    app.connect("builder-inited", _add_static)
    app.add_css_file("dclib.css")
    app.connect("html-page-context", _page_context, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
