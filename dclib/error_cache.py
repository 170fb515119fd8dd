"""Errors scored once and read back by every experiment that needs them again.

A sample's error for one conditioning is fixed by: the model (its weights, and how it runs: resolution, dtype,
device, autocast, LoRA), the image, the conditioning, the scoring options, and the sample itself, whose noise
dclib keys by (seed, image id, t, repeat) (:mod:`dclib.noise`). So the same (t, repeat) of the same image is the
same sample in every plan: the 10 evenly spaced timesteps lie on the 50-point grid, a stage of Algorithm 2 on the
full schedule, Fig. 4's "Even 10" is Algorithm 1 with 10 timesteps. Pages of the book that score the same images
on overlapping plans then pay once (:func:`dclib.experiments.score_dataset` reads and fills the cache). A pass under
the default options also saves the l1 and Huber errors of the same predictions (a few elementwise operations), so
a later comparison of losses on those samples (Tables 8-9) makes no denoiser call.

Nothing stale is ever read: the key holds all of the above, the image's pixel hash beside its id, and a hash of
dclib's own source, so any change to the code or the weights starts a new cache. Read-back errors equal a fresh
computation to float32 precision (a different batch may round differently on CPU; ``tests/test_scoring.py``).
Each write is a new file, renamed into place, so experiments running at once never lose each other's errors.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plan import Plan
from .runs.provenance import model_identity

#: The environment variable that switches the cache on for every experiment of a process (the book build sets it).
ENVIRONMENT = "DCLIB_ERROR_CACHE"


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """sha256 over dclib's Python source (paths and bytes): errors from other code are never read back."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class CacheContext:
    """The errors of one (model, conditionings, options, noise, seed) for any image and sample."""

    folder: Path

    def _image_folder(self, image_key: str) -> Path:
        return self.folder / _digest(image_key)

    def read(self, image_key: str, plan: Plan, n_conditionings: int) -> np.ndarray:
        """errors [n_conditionings, len(plan)] for the samples saved before, NaN for the others."""
        out = np.full((n_conditionings, len(plan)), np.nan, np.float32)
        folder = self._image_folder(image_key)
        if not folder.is_dir():
            return out
        column = {key: i for i, key in enumerate(plan.keys())}
        for path in folder.glob("*.npz"):
            with np.load(path, allow_pickle=False) as saved:  # each array is read from the file once
                timesteps, repeats, errors = saved["timesteps"], saved["repeats"], saved["errors"]
            for j, key in enumerate(zip(timesteps.tolist(), repeats.tolist())):
                if key in column:
                    out[:, column[key]] = errors[:, j]
        return out

    def write(self, image_key: str, plan: Plan, errors: np.ndarray) -> None:
        """Save errors [n_conditionings, len(plan)] of ``plan``'s samples (a new file, renamed into place)."""
        folder = self._image_folder(image_key)
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = folder / f"{name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, timesteps=np.asarray(plan.timesteps, np.int64), repeats=np.asarray(plan.repeats, np.int64),
                     errors=np.asarray(errors, np.float32))
        os.replace(tmp, folder / f"{name}.npz")


class ErrorCache:
    """A folder of saved errors: ``folder/<dclib source hash>/<context>/<image>/*.npz``.

    ``ErrorCache(folder)`` in code, or ``$DCLIB_ERROR_CACHE`` for a whole process (:meth:`from_environment`).
    """

    def __init__(self, folder: str | os.PathLike):
        self.root = Path(folder)
        self.folder = self.root / source_fingerprint()[:16]

    @classmethod
    def from_environment(cls) -> "ErrorCache | None":
        folder = os.environ.get(ENVIRONMENT)
        return cls(folder) if folder else None

    def contexts(self, classifier, conditionings, variants, noise, shared_noise: bool, seed: int
                 ) -> dict:
        """{options: where its errors live} for each of ``variants`` (:class:`~dclib.scoring.ScoreOptions`) of
        one scoring setup; empty for a model dclib cannot identify (built in memory, or a hub id without a cached
        snapshot), whose errors are then not cached. The weights are hashed once for all variants."""
        adapter = classifier.adapter
        if adapter.model_id is None:
            return {}
        identity = model_identity(adapter.model_id, getattr(adapter, "revision", None))
        if identity.get("source") == "hub" and not identity.get("commit"):
            return {}  # a hub id without a pinned snapshot may change under the same name
        base = {"model": identity, "adapter": adapter.describe(), "autocast": str(adapter.autocast),
                "conditionings": [str(v) for v in conditionings.values], "noise": str(noise),
                "shared_noise": bool(shared_noise), "seed": int(seed)}
        return {options: self._context({**base, "options": options.to_dict()}) for options in variants}

    def _context(self, setup: dict) -> CacheContext:
        folder = self.folder / _digest(setup)
        if not (folder / "setup.json").exists():  # for a reader of the folder; never read back
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"setup.{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(setup, indent=1, default=str))
            os.replace(tmp, folder / "setup.json")
        return CacheContext(folder)

    def prune(self) -> list[Path]:
        """Remove the errors of other dclib sources (they are never read again); returns what was removed."""
        stale = [p for p in self.root.glob("*") if p.is_dir() and p != self.folder] if self.root.is_dir() else []
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return stale
