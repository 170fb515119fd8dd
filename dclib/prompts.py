"""Conditionings and the classes they stand for.

Text models read the official repository's prompt CSVs as they are (columns ``prompt,classname,classidx``,
several prompts per class allowed); the predicted class is the class of the best prompt. Class-conditional
models use class indices, named by the model's ``id2label``.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import Sequence

from .errors import InputError


@dataclass(frozen=True)
class Conditionings:
    """``values[i]`` is what the model is conditioned on (a prompt or a class index); it stands for class
    ``class_idx[i]`` whose name is ``class_names[class_idx[i]]``."""

    values: tuple
    class_idx: tuple[int, ...]
    class_names: tuple[str, ...]

    def __post_init__(self):
        if not self.values:
            raise InputError("no conditionings given")
        if len(self.values) != len(self.class_idx):
            raise InputError("each conditioning needs a class index")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def labels(self) -> list[str]:
        return [str(v) for v in self.values]

    @classmethod
    def from_prompts(cls, prompts: Sequence[str]) -> "Conditionings":
        """One class per prompt, named by the prompt."""
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts given")
        return cls(tuple(prompts), tuple(range(len(prompts))), tuple(prompts))

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, int]], source: str = "prompts") -> "Conditionings":
        """Rows of (prompt, classname, classidx); class indices must be 0..K-1 without gaps."""
        if not rows:
            raise InputError(f"{source}: no prompts")
        names: dict[int, str] = {}
        for prompt, name, idx in rows:
            if idx in names and names[idx] != name:
                raise InputError(f"{source}: class index {idx} is named both {names[idx]!r} and {name!r}")
            names[idx] = name
        missing = sorted(set(range(max(names) + 1)) - set(names))
        if min(names) < 0 or missing:
            raise InputError(f"{source}: class indices must be 0..{max(names)} without gaps; missing {missing[:10]}")
        return cls(tuple(r[0] for r in rows), tuple(r[2] for r in rows),
                   tuple(names[i] for i in range(len(names))))

    @classmethod
    def from_class_indices(cls, indices: Sequence[int], class_names: Sequence[str]) -> "Conditionings":
        """Class-conditional models: conditioning i is class index ``indices[i]``."""
        indices = [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < len(class_names)]
        if bad:
            raise InputError(f"class indices must be in [0, {len(class_names)}); got {bad[:5]}")
        return cls(tuple(indices), tuple(indices), tuple(class_names))


    @classmethod
    def from_class_names(cls, class_names: Sequence[str], template: str = "a photo of a {}.") -> "Conditionings":
        """One prompt per class, ``template`` filled with the class name (underscores read as spaces, as in
        ``american_bulldog``); the class keeps the name as given, so dataset labels match it by name."""
        names = [str(n) for n in class_names]
        if not names:
            raise InputError("no class names to build prompts from")
        if template.count("{}") != 1:
            raise InputError(f"a prompt template needs exactly one '{{}}' for the class name; got {template!r}")
        return cls(tuple(template.format(n.replace("_", " ")) for n in names), tuple(range(len(names))),
                   tuple(names))


#: The default prompt template when a dataset carries no prompts: the CLIP-style wording the paper uses.
DEFAULT_TEMPLATE = "a photo of a {}."


def read_prompt_file(path: str | os.PathLike) -> Conditionings:
    """A prompt CSV (``prompt,classname,classidx``, the official format) or a text file, one prompt a line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"prompt file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read prompt file {path}: {err}") from None
    if not text.strip():
        raise InputError(f"prompt file is empty: {path}")
    if not path.lower().endswith(".csv"):
        return Conditionings.from_prompts([line.strip() for line in text.splitlines() if line.strip()])
    reader = csv.DictReader(text.splitlines())
    needed = {"prompt", "classname", "classidx"}
    header = set(reader.fieldnames or [])
    if not needed <= header:
        raise InputError(f"{path}: a prompt CSV needs the columns prompt,classname,classidx "
                         f"(found {','.join(reader.fieldnames or []) or 'no header'})")
    rows = []
    for line_no, row in enumerate(reader, start=2):
        prompt, name, idx = row.get("prompt"), row.get("classname"), row.get("classidx")
        if prompt is None or name is None or idx is None or not prompt.strip():
            raise InputError(f"{path}:{line_no}: malformed row (need prompt,classname,classidx)")
        try:
            rows.append((prompt, name, int(idx)))
        except ValueError:
            raise InputError(f"{path}:{line_no}: classidx must be an integer, got {idx!r}") from None
    return Conditionings.from_rows(rows, source=path)


def looks_like_path(text: str) -> bool:
    """A ``--prompts`` value meant as a file: no spaces, and a folder separator or a file suffix (``prompts.cvs``,
    ``data/pets.csv``). Prompts are sentences; taking a misspelled file name as the one prompt would score it."""
    text = str(text).strip()
    return bool(text) and not any(ch.isspace() for ch in text) and (
        "/" in text or "\\" in text or re.search(r"\.[A-Za-z][A-Za-z0-9]{0,4}$", text) is not None)


def require_candidates(conds: Conditionings) -> Conditionings:
    """At least two candidate classes: with one, every image gets it with probability 1, a number that looks
    like an answer."""
    classes = sorted(set(conds.class_idx))
    if len(classes) < 2:
        only = ", ".join(repr(str(v)) for v in conds.values[:3])
        raise InputError(f"a classifier needs at least two candidates; got {len(classes)} class ({only}): pass "
                         "several prompts (a list, a prompt file, or 'a|b' in one string) or class labels")
    return conds


def resolve_conditionings(prompts=None, class_labels=None, class_names: Sequence[str] | None = None,
                          text_conditioned: bool = True) -> Conditionings:
    """Build conditionings from what a user passed: a prompt file, a list of prompts, or class labels (a string
    that looks like a file name must be an existing file). One is enough here (scoring a single prompt is a
    fair low-level question); classifying checks :func:`require_candidates`."""
    if isinstance(prompts, Conditionings):
        return prompts
    if text_conditioned:
        if class_labels is not None:
            raise InputError("this model is conditioned on text: pass prompts, not class labels")
        if prompts is None:
            raise InputError("this model is conditioned on text: pass prompts (a list or a prompt file)")
        if isinstance(prompts, (str, os.PathLike)):
            if os.path.isfile(prompts):
                return read_prompt_file(prompts)
            if looks_like_path(prompts):
                raise InputError(f"prompt file not found: {prompts} (a prompt is a sentence; a file must exist)")
            return Conditionings.from_prompts([p.strip() for p in str(prompts).split("|") if p.strip()])
        prompts = list(prompts)
        if prompts and all(isinstance(p, (tuple, list)) and len(p) == 3 for p in prompts):
            return Conditionings.from_rows(prompts)  # (prompt, class name, class index) rows, as in a prompt CSV
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise InputError(f"prompts must be strings or (prompt, class name, class index) rows; got {bad[0]!r}")
        return Conditionings.from_prompts(prompts)
    names = list(class_names or [])
    if prompts is not None and class_labels is None:
        class_labels = prompts
    if class_labels is None or (isinstance(class_labels, str) and class_labels == "all"):
        return Conditionings.from_class_indices(range(len(names)), names)
    if isinstance(class_labels, str):
        class_labels = [v.strip() for v in class_labels.split(",") if v.strip()]
    indices = []
    for label in class_labels:
        if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
            indices.append(int(label))
        elif label in names:
            indices.append(names.index(label))
        else:
            raise InputError(f"unknown class {label!r}; classes are {', '.join(names[:20])}"
                             + (" ..." if len(names) > 20 else ""))
    return Conditionings.from_class_indices(indices, names)
