"""Effective robustness (Taori et al. 2020) of a diffusion classifier against discriminative models trained on the
same labels: the paper's Table 4 and Fig. 6.

The paper finds DiT's Diffusion Classifier well above the line through ImageNet classifiers on **ImageNet-A**,
a set of natural images collected because they fool a ResNet-50 (natural adversarial examples), and reports no
such gain on ImageNet-V2 or ObjectNet. :func:`robustness_comparison` measures every method on an
in-distribution set ("clean") and on named shifted sets, with one of two discriminative families:

- image classifiers from the hub or local folders (:mod:`dclib.discriminative`), as the paper's ResNets and ViTs,
  on real datasets read as :func:`dclib.runs.open_dataset` reads any dataset;
- ``embedded:TASK-train``: logistic regression, MLPs and CNNs trained here on that split, for the embedded models.
  ImageNet-A's analogue is then :func:`adversarial_split`, built as ImageNet-A was: shifted test images (every
  shift pooled) that a held-out discriminative filter model misclassifies.

A shifted set may cover only some of the model's classes (ImageNet-A 200; ObjectNet 113 classes that stand for
125 ImageNet classes). Every method then predicts among that set's classes only, a class scoring the best of the
model classes it stands for, as the official evaluations project logits; and the in-distribution accuracy Fig. 6
sets against that set is measured on the same classes (the paper's "ImageNet (class-subsampled)"), the table's
set ``clean[NAME]``. The line is fitted on probit-scaled accuracies, as Taori et al. do, with accuracies of 0 or 1
moved half an image inwards so the probit stays finite.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .baselines import CNNClassifier, make_baseline_family, prepare
from .classifier import DiffusionClassifier
from .data import embedded_arrays
from .data.common import ImageSplit, split_to_dataset
from .discriminative import ImageClassifier
from .errors import InputError
from .experiments import LabelledImages, image_rows, score_dataset
from .plan import even_plan
from .runs import open_dataset
from .stats import clopper_pearson, expected_ood, fit_line

DC = "Diffusion Classifier"
EMBEDDED = "embedded:"
# The filter plays ResNet-50's role for ImageNet-A: a discriminative model trained on the same split, kept out of
# the fitted family (its own seed and width), whose mistakes define the adversarial set.
FILTER_WIDTH = 16
# Images scored at once on real sets: 1000 classes x 250 timesteps of errors take 1 MB per image, and the noise is
# keyed by image id, so scoring in chunks changes nothing.
CHUNK = 256


# ---------------------------------------------------------------------------------------------- class subsets
def read_class_map(class_map) -> dict[str, list]:
    """A set's class map: a dict, a JSON file ({set class name: model class name or index, a list of them, or
    names separated by "; " as in ObjectNet's map}) or a text file whose line i starts with the set class name
    that stands for model class i (ImageNet's ``LOC_synset_mapping.txt``: WordNet id, then names)."""
    if class_map is None or isinstance(class_map, Mapping):
        entries = dict(class_map or {})
    else:
        path = Path(class_map).expanduser()
        try:
            text = path.read_text()
        except OSError as err:
            raise InputError(f"cannot read class map {class_map}: {err.strerror or err}") from None
        if path.suffix == ".json":
            try:
                entries = json.loads(text)
            except json.JSONDecodeError as err:
                raise InputError(f"class map {class_map} is not valid JSON: {err}") from None
            if not isinstance(entries, dict):
                raise InputError(f"class map {class_map} must be a JSON object {{set class: model class(es)}}")
        else:
            entries = {line.split()[0]: i for i, line in enumerate(l for l in text.splitlines() if l.strip())}
    # ObjectNet's own map lists the ImageNet classes of one of its classes in one string, "; "-separated
    return {str(k): list(v) if isinstance(v, (list, tuple)) else v.split("; ") if isinstance(v, str) else [v]
            for k, v in entries.items()}


def _model_class(value, class_names: Sequence[str]) -> int | None:
    """A model class index from an index, a full class name, or one unique comma-separated synonym of one."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.strip().isdigit()):
        return int(value) if 0 <= int(value) < len(class_names) else None
    names = list(class_names)
    if value in names:
        return names.index(value)
    hits = [i for i, n in enumerate(names) if value in (s.strip() for s in str(n).split(","))]
    return hits[0] if len(hits) == 1 else None


def set_classes(label_names: Sequence[str], class_names: Sequence[str], class_map=None) -> list[list[int]]:
    """Each class of an evaluation set as the model classes it stands for (indices into ``class_names``).

    With a ``class_map`` (see :func:`read_class_map`) every set class must be in it; without one, set classes
    match model classes by name, or by index when every set class name is an integer (ImageNet-V2's folders)."""
    entries = read_class_map(class_map) if class_map is not None else None
    groups = []
    for name in label_names:
        values = entries.get(str(name)) if entries is not None else [name]
        found = [_model_class(v, class_names) for v in values] if values else [None]
        if values is None or None in found:
            where = "is not in the class map" if values is None else f"names no class of the model ({values[0]!r})"
            raise InputError(f"set class {name!r} {where}; pass a class_map that maps each set class to the "
                             f"model's classes (e.g. {class_names[0]!r})")
        groups.append(sorted(set(found)))
    return groups


def grouped_predictions(scores: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """The set class with the best score (higher is better) among the model classes it stands for, for each row
    of ``scores`` [n_images, n_model_classes]."""
    return np.stack([scores[:, list(g)].max(1) for g in groups], 1).argmax(1)


def _rows(method: str, name: str, correct: np.ndarray, classes: int) -> dict:
    return {"method": method, "set": name, "correct": int(np.sum(correct)), "n": len(correct), "classes": classes}


def _finish(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["accuracy"] = table.correct / table.n
    table[["ci_low", "ci_high"]] = [clopper_pearson(c, n, 0.995) for c, n in zip(table.correct, table.n)]
    return table


# ------------------------------------------------------------------------------------------ embedded family
def adversarial_split(task: str, filter_model, resolution: int, shifts) -> ImageSplit:
    """The shifted test images of ``task`` (embedded ``TASK-test-SHIFT`` for each of ``shifts``, pooled) that
    ``filter_model`` (fitted on the training split at ``resolution``) misclassifies."""
    return _adversarial([embedded_arrays(f"{task}-test-{s}") for s in shifts], filter_model, resolution)


def _adversarial(pool: list[ImageSplit], filter_model, resolution: int) -> ImageSplit:
    # Image-major order (image 0 under every shift, then image 1, ...), so that any prefix mixes all shifts.
    images = np.stack([p.images for p in pool], axis=1).reshape(-1, *pool[0].images.shape[1:])
    labels = np.stack([np.asarray(p.labels) for p in pool], axis=1).reshape(-1)
    ids = [i for row in zip(*(p.ids for p in pool)) for i in row]
    wrong = np.flatnonzero(filter_model.predict(prepare(images, resolution)) != labels)
    return ImageSplit(images=images[wrong], labels=labels[wrong].tolist(), ids=[ids[i] for i in wrong],
                      class_names=pool[0].class_names, extra={})


def _embedded_name(spec, role: str) -> str:
    if not (isinstance(spec, str) and spec.startswith(EMBEDDED)):
        raise InputError(f"the embedded discriminative family needs embedded {role} sets, got {spec!r}")
    return spec[len(EMBEDDED):]


def _embedded_comparison(dc, dataset, shifted, train, n_images, n_timesteps, cnn_epochs, seed, resolution):
    """The embedded family trained on ``train``; sets: clean, each shift, and the adversarial split."""
    train_split = embedded_arrays(train)
    x_train, y_train = prepare(train_split.images, resolution), np.asarray(train_split.labels)
    filter_model = CNNClassifier(epochs=cnn_epochs, seed=seed + 1, width=FILTER_WIDTH).fit(x_train, y_train)
    shifted_splits = {name: embedded_arrays(_embedded_name(spec, "shifted")) for name, spec in shifted.items()}
    splits = {"clean": embedded_arrays(_embedded_name(dataset, "in-distribution")), **shifted_splits,
              "adversarial": _adversarial(list(shifted_splits.values()), filter_model, resolution)}
    classes = len(train_split.class_names)
    rows = []
    for method, clf in make_baseline_family(seed, cnn_epochs).items():
        clf.fit(x_train, y_train)
        for name, split in splits.items():
            x, y = prepare(split.images[:n_images], resolution), np.asarray(split.labels[:n_images])
            rows.append(_rows(method, name, clf.predict(x) == y, classes))
    right = {}
    for name, split in splits.items():
        errors = score_dataset(dc, split_to_dataset(split), even_plan(n_timesteps, dc.adapter.num_train_timesteps),
                               n_images=n_images, seed=seed, progress=False)
        right[name] = errors.predictions() == errors.labels
        rows.append(_rows(DC, name, right[name], classes))
    return _finish(rows), right


# ----------------------------------------------------------------------------------------------- hub family
def _set_spec(spec, split):
    """A set given as a dataset (hub id, folder, embedded:NAME) or as {dataset, split, class_map}."""
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"dataset", "split", "class_map"}
        if "dataset" not in spec or unknown:
            raise InputError(f"a set is a dataset or {{dataset, split, class_map}}, got keys {sorted(spec)}")
        return spec["dataset"], spec.get("split"), spec.get("class_map")
    return spec, split, None


def _hub_comparison(dc, dataset, split, shifted, discriminative, n_images, n_timesteps, seed, shuffle_seed,
                    batch_size, device, dtype, progress):
    """The sets scored by Diffusion Classifier and every image classifier in ``discriminative``; each clean[NAME]
    re-reads the clean scores on NAME's classes."""
    nets = {str(m).rstrip("/").split("/")[-1]: ImageClassifier.from_pretrained(
        m, device=device, dtype=dtype, batch_size=batch_size if isinstance(batch_size, int) else 64)
        for m in discriminative}
    methods = {DC: dc.adapter.class_names, **{name: net.class_names for name, net in nets.items()}}
    plan = even_plan(n_timesteps, dc.adapter.num_train_timesteps)
    sets = {"clean": _set_spec(dataset, split), **{k: _set_spec(v, None) for k, v in shifted.items()}}
    rows, right, clean = [], {}, {}
    for name, (spec, set_split, class_map) in sets.items():
        source = open_dataset(spec, set_split)
        if not source.label_names:
            raise InputError(f"set {name!r} ({source.spec}) has no class names to match the models' classes")
        class_map = read_class_map(class_map) if class_map is not None else None  # read once, for every method
        groups = {m: set_classes(source.label_names, names, class_map) for m, names in methods.items()}
        if name == "clean" and any(len(g) != 1 for g in groups[DC]):
            raise InputError("each class of the clean set must stand for exactly one model class")
        column = source.dataset[source.label_column]  # a seeded order stratified by class, when a seed is given
        data = LabelledImages(source, image_rows(len(column), n_images, shuffle_seed, column))
        labels, n = np.array(data.labels, dtype=int), len(data)  # labels: the set's own class indices
        conds = dc.conditionings(class_labels=sorted({c for g in groups[DC] for c in g}))
        scores = {DC: np.full((n, len(methods[DC])), -np.inf)}
        for start in range(0, n, CHUNK):  # only mean errors are kept: [images, classes, samples] is large
            part = score_dataset(dc, data.select(range(start, min(start + CHUNK, n))), plan, conds,
                                 seed=seed, batch_size=batch_size, progress=progress)
            scores[DC][start:start + CHUNK, part.class_idx] = -part.errors.mean(-1)
        for m, net in nets.items():
            scores[m] = net.logits((item["image"] for item in data), progress=progress)
        for m in methods:
            correct = grouped_predictions(scores[m], groups[m]) == labels
            rows.append(_rows(m, name, correct, len(groups[m])))
            if m == DC:
                right[name] = correct
        if name == "clean":
            clean = {m: (scores[m], np.array([groups[m][y][0] for y in labels])) for m in methods}
            continue
        for m in methods:  # the clean images of this set's classes, predicted among this set's classes
            set_of = {c: k for k, g in enumerate(groups[m]) for c in g}
            score, model_labels = clean[m]
            keep = np.array([c in set_of for c in model_labels])
            if not keep.any():
                raise InputError(f"none of the {len(model_labels)} clean images is of a class of {name!r}: "
                                 f"raise n_images")
            truth = np.array([set_of[c] for c in model_labels[keep]], dtype=int)
            correct = grouped_predictions(score[keep], groups[m]) == truth
            rows.append(_rows(m, f"clean[{name}]", correct, len(groups[m])))
    return _finish(rows), right


def robustness_comparison(model, dataset, shifted: Mapping[str, object], discriminative, *, split: str | None = None,
                          n_images: int | None = 100, n_timesteps: int = 20, cnn_epochs: int = 20, seed: int = 0,
                          shuffle_seed: int | None = None, resolution: int | None = None, dtype: str = "float32",
                          device: str = "auto", batch_size="auto", progress: bool = False):
    """Accuracy of the discriminative family and of Diffusion Classifier on the clean set ``dataset`` and on each
    set of ``shifted`` ({name: dataset or {dataset, split, class_map}}), the first ``n_images`` of each (in a
    random order drawn with ``shuffle_seed``, if given).

    ``discriminative``: a list of image-classifier hub ids or folders, or ``embedded:TASK-train`` to train the
    embedded family on that split (then the sets must be embedded too, taken in order, and the ``adversarial``
    split is added). Returns (table with one row per method and set: correct, n, classes, accuracy, 99.5%
    Clopper-Pearson interval; Diffusion Classifier's per-image correctness by set)."""
    if not shifted:
        raise InputError("name at least one shifted set")
    dc = model if isinstance(model, DiffusionClassifier) else DiffusionClassifier.from_pretrained(
        model, torch_dtype=dtype, device=device, resolution=resolution)
    if isinstance(discriminative, str):
        if shuffle_seed is not None:
            raise InputError("the embedded family takes each set's first images; leave shuffle_seed at None")
        return _embedded_comparison(dc, dataset, dict(shifted), _embedded_name(discriminative, "training"),
                                    n_images, n_timesteps, cnn_epochs, seed, dc.adapter.resolution)
    if len(list(discriminative)) < 2:
        raise InputError("a line needs at least two discriminative models")
    return _hub_comparison(dc, dataset, split, dict(shifted), list(discriminative), n_images, n_timesteps, seed,
                           shuffle_seed, batch_size, device, dtype, progress)


def line_reference(table: pd.DataFrame, shifted: str, model: str = DC) -> dict:
    """Where the discriminative models' probit line puts ``model`` on set ``shifted``, given its accuracy on the
    clean images of that set's classes (``clean[shifted]`` if the table has it, else ``clean``).

    ``reference`` is the larger of that prediction and chance: a classifier at or below chance shows no
    robustness, whatever the line predicts."""
    clean = f"clean[{shifted}]" if f"clean[{shifted}]" in set(table.set) else "clean"
    wide = table.pivot(index="method", columns="set", values="accuracy")
    n = table.pivot(index="method", columns="set", values="n")
    family = [m for m in wide.index if m != model]
    coeffs = fit_line(wide.loc[family, clean], wide.loc[family, shifted], n.loc[family, clean],
                      n.loc[family, shifted])
    line = expected_ood(coeffs, wide.loc[model, clean], n.loc[model, clean])
    classes = int(table[(table.method == model) & (table.set == shifted)].classes.iloc[0])
    return {"set": shifted, "clean": clean, "slope": float(coeffs[0]), "intercept": float(coeffs[1]), "line": line,
            "chance": 1 / classes, "reference": max(line, 1 / classes), "accuracy": float(wide.loc[model, shifted]),
            "effective robustness": float(wide.loc[model, shifted]) - line}


def effective_robustness(table: pd.DataFrame, model: str = DC) -> pd.DataFrame:
    """:func:`line_reference` for every shifted set of a :func:`robustness_comparison` table, indexed by set."""
    sets = [s for s in table.set.unique() if s != "clean" and not s.startswith("clean[")]
    return pd.DataFrame([line_reference(table, s, model) for s in sets]).set_index("set")
