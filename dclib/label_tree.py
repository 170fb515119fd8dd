"""Label trees for :class:`dclib.schedules.TreeSchedule`: which classes are pruned together.

A tree is nested tuples of conditioning indices (an int is a leaf, a tuple a group). Three ways to get one:

* :func:`tree_from_groups`: groups named by the user, e.g. a JSON ``{"red": ["red circle", "red square"], ...}``
  (nested dicts for deeper trees);
* :func:`tree_from_parents`: a parent per class, as a prompt CSV's ``parent`` column may give it, with ``/`` for
  deeper paths (``animal/dog``), as WordNet parent ids give ImageNet's hierarchy;
* :func:`tree_from_embeddings`: none given: the classes clustered by their prompts' text embeddings
  (average-linkage cosine clustering, :func:`scipy.cluster.hierarchy.linkage`), ``branching`` groups per level.

Every group lists first the member nearest its centre where embeddings are given (its representative, scored
for the whole group), else its first member. A class with several conditionings is a group of them.

:func:`resolve_schedule` turns the schedules ``tree:auto`` and ``tree:GROUPS.json`` (a
:class:`~dclib.schedules.NamedTree`) into a tree of indices once the candidates are known.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from .errors import InputError
from .prompts import Conditionings
from .schedules import NamedTree, TreeSchedule, as_tree, tree_leaves, tree_options
from .settings import ClassifySettings


def _class_nodes(conditionings: Conditionings) -> list:
    """One node per class: its conditioning index, or a group of them (several prompts for one class)."""
    by_class: dict[int, list[int]] = {}
    for i, k in enumerate(conditionings.class_idx):
        by_class.setdefault(int(k), []).append(i)
    return [as_tree(by_class[k]) if k in by_class else None for k in range(conditionings.n_classes)]


def _medoid_first(node, embeddings: np.ndarray | None):
    """``node`` with, at every level, the child whose representative is nearest the group's mean embedding first."""
    if isinstance(node, int) or embeddings is None:
        return node
    children = [_medoid_first(c, embeddings) for c in node]
    reps = np.stack([embeddings[tree_leaves(c)[0]] for c in children])
    centre = embeddings[tree_leaves(node)].mean(0)
    first = int(np.argmin(np.linalg.norm(reps - centre, axis=1)))
    return tuple([children[first]] + children[:first] + children[first + 1:])


def tree_from_groups(conditionings: Conditionings, groups, embeddings: np.ndarray | None = None) -> tuple:
    """A tree from named groups of class names: a dict {group: [class names or nested dicts]}, a list of lists,
    or the path of a JSON file holding either. Every class must appear exactly once; one that is missing or
    unknown stops with its name."""
    if isinstance(groups, (str, os.PathLike)):
        try:
            with open(groups) as f:
                groups = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read the label groups {os.fspath(groups)!r}: {err}") from None
    names = {n: k for k, n in enumerate(conditionings.class_names)}
    nodes = _class_nodes(conditionings)
    seen: list[str] = []

    def build(item):
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, str):
            if item not in names:
                raise InputError(f"label groups: no class {item!r}; classes: {', '.join(list(names)[:10])} ...")
            seen.append(item)
            return nodes[names[item]]
        if not isinstance(item, (list, tuple)) or not item:
            raise InputError(f"label groups: a group is a non-empty list of class names, not {item!r}")
        return tuple(build(i) for i in item)

    tree = as_tree(build(groups))
    missing = [n for n, k in names.items() if nodes[k] is not None and n not in seen]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if missing or twice:
        raise InputError("label groups must name every class once: "
                         + "; ".join(filter(None, [missing and f"missing {', '.join(missing[:5])}",
                                                   twice and f"twice {', '.join(twice[:5])}"])))
    return _medoid_first(tree, embeddings)


def tree_from_parents(conditionings: Conditionings, parents: Sequence[str], embeddings: np.ndarray | None = None
                      ) -> tuple:
    """A tree from each class's parent (``parents[k]`` for class k: a name, or a path ``a/b`` for deeper trees)."""
    if len(parents) != conditionings.n_classes:
        raise InputError(f"label tree: {len(parents)} parents for {conditionings.n_classes} classes")
    nested: dict = {}
    for name, parent in zip(conditionings.class_names, parents):
        level = nested
        for part in [p for p in str(parent).split("/") if p]:
            level = level.setdefault(part, {})
        level.setdefault("", []).append(name)  # the classes directly under this path

    def as_groups(level: dict) -> list:
        return [*level.get("", []), *(as_groups(v) for k, v in level.items() if k)]

    return tree_from_groups(conditionings, as_groups(nested), embeddings)


def prompt_embeddings(classifier, conditionings: Conditionings) -> np.ndarray:
    """One vector per prompt from the model's own text encoder (its hidden states averaged over tokens):
    [n_conditionings, d], what :func:`tree_from_embeddings` clusters when no tree is given. A class-conditional
    model is conditioned on class indices, which say nothing of which classes are alike: refused."""
    if not classifier.adapter.text_conditioned:
        raise InputError("a tree from prompt embeddings needs a text model; give a class-conditional model its "
                         "tree as groups of class names (tree:GROUPS.json)")
    encoded = classifier.adapter.encode_conditions(list(conditionings.values)).float().cpu().numpy()
    return encoded.mean(axis=1) if encoded.ndim == 3 else encoded.reshape(len(encoded), -1)


def tree_from_embeddings(conditionings: Conditionings, embeddings: np.ndarray, branching: int = 8) -> tuple:
    """A tree from the conditionings' text embeddings ([n_conditionings, d], e.g. the text encoder's pooled
    output): the classes (a class's embedding the mean of its conditionings') split into at most ``branching``
    clusters by average-linkage cosine clustering, and each cluster again until it holds ``branching`` classes
    or fewer."""
    embeddings = np.asarray(embeddings, np.float64).reshape(len(conditionings), -1)
    if branching < 2:
        raise InputError(f"branching must be at least 2, got {branching}")
    nodes = _class_nodes(conditionings)
    classes = [k for k, node in enumerate(nodes) if node is not None]
    centre = np.stack([embeddings[tree_leaves(nodes[k])].mean(0) for k in classes])

    def split(members: list[int]):
        if len(members) <= branching:
            return tuple(nodes[classes[m]] for m in members)
        labels = fcluster(linkage(centre[members], method="average", metric="cosine"), branching, "maxclust")
        parts = [[m for m, lab in zip(members, labels) if lab == c] for c in sorted(set(labels))]
        if len(parts) == 1:  # identical embeddings: no structure to split on
            parts = [members[i::branching] for i in range(branching)]
        return tuple(split(p) for p in parts if p)

    return _medoid_first(as_tree(split(list(range(len(classes))))), embeddings)


def resolve_schedule(schedule, classifier, conditionings: Conditionings):
    """``schedule`` as it runs on ``conditionings``: a :class:`~dclib.schedules.NamedTree` becomes a
    :class:`~dclib.schedules.TreeSchedule`, ``tree:auto`` by :func:`tree_from_embeddings` (its ``branching``
    option, default 8) on the model's own :func:`prompt_embeddings`, ``tree:GROUPS.json`` by
    :func:`tree_from_groups` with the representatives chosen by the same embeddings (a class-conditional model's:
    each group's first member). Any other schedule is returned as it is. The result is deterministic, so a
    resumed run resolves the same tree."""
    if not isinstance(schedule, NamedTree):
        return schedule
    kwargs = tree_options(schedule.options, schedule.n_trials, ("branching",))
    branching = kwargs.pop("branching", 8)
    text = classifier.adapter.text_conditioned  # else the first member of each group stands for it
    embeddings = prompt_embeddings(classifier, conditionings) if text or schedule.source == "auto" else None
    if schedule.source == "auto":
        tree = tree_from_embeddings(conditionings, embeddings, branching)
    else:
        tree = tree_from_groups(conditionings, schedule.source, embeddings)
    return TreeSchedule((tree,) if isinstance(tree, int) else tree, **kwargs)


def resolve_settings(settings: ClassifySettings, classifier, conditionings: Conditionings) -> ClassifySettings:
    """``settings`` with its schedule resolved by :func:`resolve_schedule` (``settings`` itself when there is nothing
    to resolve): what ``classify`` and ``evaluate`` run and record."""
    schedule = resolve_schedule(settings.parsed_schedule, classifier, conditionings)
    return settings if schedule is settings.parsed_schedule else ClassifySettings.resolve(settings, schedule=schedule)
