"""Where a book build reads and writes, per preset, and how it fingerprints what it read.

Presets share nothing they write, so `make test` (preset small) never touches what `make book` built. Functions of
module globals, not constants: tests point ROOT, BOOK, NOTEBOOKS and BUILD at a scratch checkout."""
from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "_build"
PRESETS = ("small", "book", "paper")


def results_folder(preset: str) -> Path:
    """The results pages write (given to their kernels as ``$DCLIB_RESULTS_DIR``)."""
    return ROOT / "results" / preset


def executed_dir(preset: str) -> Path:
    return BOOK / "executed" / preset


def build_dir(preset: str) -> Path:
    return BUILD / preset


def site_dir(preset: str) -> Path:
    return build_dir(preset) / "_build" / "html"  # where `jupyter-book build --path-output build_dir` writes


def content_hash(*parts: bytes) -> str:
    """sha256 of byte strings, each length-prefixed (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return h.hexdigest()


def files_hash(files) -> str:
    """Hash of files' paths (relative to ROOT) and bytes, independent of mtimes."""
    return content_hash(*(content_hash(f.relative_to(ROOT).as_posix().encode(), f.read_bytes()).encode()
                          for f in files))
