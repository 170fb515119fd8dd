"""What a run folder records about where its results came from: library versions, the model's identity (hub
commit, or a sha256 over a local folder), and the comparison of a stored configuration with a resumed one."""
from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from ..adapters.loading import resolve_model_path
from .store import RUNTIME_KEYS

def short_json(value: Any, width: int = 60) -> str:
    """``value`` as compact JSON, cut to ``width`` characters (for one-line messages)."""
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def compare_configs(existing: dict, new: dict) -> tuple[list[str], list[str]]:
    """(differing result-defining keys, differing runtime keys such as versions)."""
    strict, soft = [], []
    for key in sorted(set(existing) | set(new)):
        if existing.get(key) == new.get(key):
            continue
        if key in RUNTIME_KEYS:
            sub_a, sub_b = existing.get(key) or {}, new.get(key) or {}
            soft += [f"{key}.{k} ({short_json(sub_a.get(k), 30)} -> {short_json(sub_b.get(k), 30)})"
                     for k in sorted(set(sub_a) | set(sub_b)) if sub_a.get(k) != sub_b.get(k)]
        else:
            strict.append(key)
    return strict, soft


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("dclib", "diffusers", "torch", "transformers", "accelerate", "datasets", "pyarrow", "numpy"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = None
    return out


def hash_model_folder(path: str | Path) -> str:
    """sha256 over a diffusers pipeline folder's model_index.json and the files of its components (weights,
    configs, tokenizer files), each hashed with its relative path."""
    root = Path(path)
    index = root / "model_index.json"
    files: list[Path] = []
    if index.exists():
        spec = json.loads(index.read_text())
        components = [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v
                      and v[0] is not None]
        files = [index] + sorted(f for c in components if (root / c).is_dir() for f in (root / c).rglob("*")
                                 if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    else:
        files = sorted(f for f in root.rglob("*")
                       if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def model_identity(model: str | None, revision: str | None = None) -> dict:
    """Hub id + the cached snapshot's commit hash, or a sha256 over a local folder's weight files."""
    if model is None:
        return {"source": "in-memory"}
    path = resolve_model_path(model)
    if os.path.isdir(path):
        source = "embedded" if str(model).startswith("embedded:") else "local"
        return {"source": source, "sha256": hash_model_folder(path)}
    commit = None
    try:
        cached = try_to_load_from_cache(model, "model_index.json", revision=revision)
        if isinstance(cached, str):
            commit = Path(cached).parent.name
    except Exception:
        pass
    return {"source": "hub", "hub_id": model, "revision": revision, "commit": commit}
