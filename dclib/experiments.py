"""Compute once, analyse many: full error tensors over a dataset, opened the way every notebook opens one.

``score_dataset`` scores every conditioning of every image on a plan and keeps the whole tensor
[n_images, n_conditionings, n_samples]; accuracy for a subset of the samples (one timestep, the first k trials,
another strategy) is then a cheap reduction, and every subset sees exactly the noise a direct run would.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from .classifier import DiffusionClassifier
from .error_cache import ErrorCache
from .errors import InputError
from .noise import NoiseDistribution
from .objectives import LOSSES
from .plan import Plan
from .prompts import DEFAULT_TEMPLATE, Conditionings, require_candidates
from .runs import DatasetSource, label_mapping as map_labels, open_dataset, open_image, stratified_order
from .scoring import ScoreOptions, Scorer
from .stats import EvaluationSummary, clopper_pearson, summarize


@dataclass
class ErrorSet:
    """errors[i, c, s]: error of conditioning c on sample s of image i."""
    errors: np.ndarray
    timesteps: np.ndarray  # [n_images, n_samples]
    labels: np.ndarray  # [n_images]
    class_idx: np.ndarray  # [n_conditionings]: the class each conditioning stands for
    ids: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return self.errors.shape[0]

    def predictions(self, columns: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Algorithm 1 on a subset of the samples: the class of the conditioning with the lowest mean error.

        ``columns`` is a list of sample indices shared by all images, or a boolean mask [n_images, n_samples].
        """
        errors = self.errors
        if columns is None:
            means = errors.mean(-1)
        elif isinstance(columns, np.ndarray) and columns.dtype == bool:
            mask = columns[:, None, :]
            means = np.where(mask, errors, 0).sum(-1) / np.maximum(mask.sum(-1), 1)
        else:
            means = errors[..., list(columns)].mean(-1)
        return self.class_idx[means.argmin(-1)]

    def accuracy(self, columns=None) -> float:
        return float((self.predictions(columns) == self.labels).mean())

    def accuracy_ci(self, columns=None, confidence: float = 0.95) -> tuple[float, float, float]:
        correct = int((self.predictions(columns) == self.labels).sum())
        low, high = clopper_pearson(correct, self.n_images, confidence)
        return correct / self.n_images, low, high

    def select(self, rows: slice | Sequence[int]) -> "ErrorSet":
        """The images ``rows`` (a slice or indices), as ``datasets.Dataset.select`` picks rows."""
        idx = np.arange(self.n_images)[rows] if isinstance(rows, slice) else np.asarray(list(rows), dtype=int)
        return ErrorSet(self.errors[idx], self.timesteps[idx], self.labels[idx], self.class_idx,
                        [self.ids[i] for i in idx], dict(self.meta))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, errors=self.errors, timesteps=self.timesteps, labels=self.labels,
                            class_idx=self.class_idx, ids=np.array(self.ids), meta=np.array(repr(self.meta)))

    @classmethod
    def load(cls, path: str | Path) -> "ErrorSet":
        z = np.load(path, allow_pickle=False)
        return cls(z["errors"], z["timesteps"], z["labels"], z["class_idx"], [str(v) for v in z["ids"]],
                   {"source": str(path)})


class LabelledImages:
    """The images an experiment scores, read from any dataset :func:`dclib.runs.open_dataset` opens.

    ``data[i]`` is ``{"image": PIL image, "label": the model's class index, "id": the id that keys its noise}``;
    ``data["label"]`` (or ``"image"``, ``"id"``) is a whole column. Images are decoded when read.
    """
    def __init__(self, source: DatasetSource, rows: Sequence[int], label_table: Sequence[int] | None = None,
                 labels: Sequence[int] | None = None):
        self.source, self.rows, self.label_table = source, list(rows), label_table
        if labels is None:  # the label column alone, read once (a row read would also load the image bytes)
            column = list(source.dataset[source.label_column])
            labels = [int(column[r]) if label_table is None else int(label_table[column[r]]) for r in self.rows]
        self.labels = list(labels)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, str):
            if key == "image":
                return [self[i]["image"] for i in range(len(self))]
            if key == "label":
                return list(self.labels)
            if key == "id":
                return [self.source.ids[r] for r in self.rows]
            raise KeyError(key)
        row = self.rows[key]
        image_id = self.source.ids[row]
        return {"image": open_image(self.source.dataset[row][self.source.image_column], image_id),
                "label": self.labels[key], "id": image_id}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def select(self, positions) -> "LabelledImages":
        """The images at ``positions`` (e.g. ``range(10)``), as ``datasets.Dataset.select`` picks rows."""
        positions = list(positions)
        return LabelledImages(self.source, [self.rows[i] for i in positions], self.label_table,
                              [self.labels[i] for i in positions])


class Experiment(NamedTuple):
    classifier: DiffusionClassifier
    data: LabelledImages
    conditionings: Conditionings


def open_experiment(model, dataset, prompts=None, *, template: str = DEFAULT_TEMPLATE, n_images: int | None = None,
                    split: str | None = None, shuffle_seed: int | None = 0, resolution: int | None = None,
                    dtype: str | None = "float32", device: str | None = "auto", lora: str | None = None,
                    label_mapping: str | None = None) -> Experiment:
    """What every book page starts from: (classifier, test images, candidate conditionings).

    ``model``: a hub id, a local diffusers folder, ``embedded:NAME`` or a loaded ``DiffusionClassifier``.
    ``dataset``: ``embedded:NAME``, an image folder (one subfolder per class), a ``save_to_disk`` folder or a
    Hugging Face dataset id (with ``split``), opened as ``dclib evaluate`` opens it.
    ``prompts`` (text models): a prompt CSV, a text file or a list; default the dataset's own prompt CSV if it
    carries one, else ``template`` filled with each of the dataset's class names. Class-conditional models take
    every class (or the labels in ``prompts``). Dataset labels become the model's class indices by name, and a
    dataset whose classes and the conditionings' classes differ stops with one line (``label_mapping=
    "by-index"``, asked for explicitly, reads label i as class i; see :func:`dclib.runs.label_mapping`).
    ``n_images`` keeps the first rows of a class-stratified random order drawn with ``shuffle_seed`` (see
    :func:`image_rows`; None: the dataset's own order, on request). The paper evaluates random subsets, and a test
    split stored class by class (the official Oxford-IIIT Pets test list is ordered by breed) would otherwise give
    its first classes only; so a page that takes the first images of the experiment gets a class-balanced random
    subset of whatever size it asks for.
    """
    source = open_dataset(dataset, split)
    clf = model if isinstance(model, DiffusionClassifier) else DiffusionClassifier.from_pretrained(
        model, torch_dtype=dtype, device=device, resolution=resolution, lora=lora)
    conds = clf.conditionings(prompts, dataset=source.spec, label_names=source.label_names, template=template)
    _, table = map_labels(source.label_names, require_candidates(conds), label_mapping)
    column = list(source.dataset[source.label_column])  # read once: it orders the rows and labels them
    rows = image_rows(len(column), n_images, shuffle_seed, column)
    labels = [int(column[r]) if table is None else int(table[column[r]]) for r in rows]
    return Experiment(clf, LabelledImages(source, rows, table, labels), conds)


def image_rows(n_rows: int, n_images: int | None = None, shuffle_seed: int | None = 0,
               labels: Sequence | None = None) -> list[int]:
    """The rows an experiment takes, in order: the first ``n_images`` (None: all) of a seeded order stratified by
    ``labels`` (:func:`dclib.runs.stratified_order`; without labels, a seeded random order), so any prefix is a
    class-balanced random subset even of a folder stored class by class. ``shuffle_seed=None`` asks for the
    dataset's own order instead."""
    if shuffle_seed is None:
        rows = list(range(n_rows))
    else:
        if isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, (int, np.integer)) or shuffle_seed < 0:
            raise InputError(f"shuffle_seed must be a non-negative integer or None, got {shuffle_seed!r}")
        rows = stratified_order(range(n_rows) if labels is None else labels, int(shuffle_seed))
    return rows if n_images is None else rows[:int(n_images)]


def score_dataset(classifier, dataset, plan: Plan | Callable[[int], Plan], conditionings: Conditionings | None = None,
                  n_images: int | None = None, seed: int = 0, options: ScoreOptions | None = None,
                  noise: str | NoiseDistribution | None = None, shared_noise: bool = True,
                  batch_size: "int | str" = "auto", label_column: str = "label", progress: bool = True,
                  cache: ErrorCache | None = None) -> ErrorSet:
    """Errors of every conditioning on every sample of a plan, for the first ``n_images`` rows of a dataset.

    ``plan`` may be a function of the image index (e.g. uniform random timesteps drawn per image).
    ``shared_noise=False`` gives each conditioning its own noise (an ablation: the paper shares it).
    ``cache`` (default: ``$DCLIB_ERROR_CACHE`` if set, see :mod:`dclib.error_cache`) reads back the samples scored
    before under the same setup and saves the new ones; ``meta["cached_samples"]`` says how many were read.
    """
    options = options or ScoreOptions()
    return score_dataset_variants(classifier, dataset, plan, (options,), conditionings, n_images, seed, noise,
                                  shared_noise, batch_size, label_column, progress, cache)[options]


def loss_siblings(variants: Sequence[ScoreOptions]) -> tuple[ScoreOptions, ...]:
    """``variants`` and, for each that is the default scoring but for its loss, the same under every other loss: a
    few elementwise operations on predictions already made, which the error cache keeps so that a later comparison
    of losses (Tables 8-9) on samples scored before costs no denoiser call."""
    default = ScoreOptions()
    siblings = [replace(o, loss=loss) for o in variants if replace(o, loss=default.loss) == default for loss in LOSSES]
    return tuple(dict.fromkeys((*variants, *siblings)))


def score_dataset_variants(classifier, dataset, plan: Plan | Callable[[int], Plan], variants: Sequence[ScoreOptions],
                           conditionings: Conditionings | None = None, n_images: int | None = None, seed: int = 0,
                           noise: str | NoiseDistribution | None = None, shared_noise: bool = True,
                           batch_size: "int | str" = "auto", label_column: str = "label", progress: bool = True,
                           cache: ErrorCache | None = None) -> dict[ScoreOptions, ErrorSet]:
    """:func:`score_dataset` under several :class:`ScoreOptions` at once (losses, objectives, guidance weights,
    crops), {options: ErrorSet}: one denoiser pass (:meth:`Scorer.score`'s ``variants``), every variant measured
    on the same predictions, each equal to its own run."""
    variants = tuple(dict.fromkeys(variants))
    if not variants:
        raise InputError("no scoring options to score")
    conds = conditionings or classifier.conditionings()
    n = len(dataset) if n_images is None else min(n_images, len(dataset))
    scorer = Scorer(classifier.adapter, variants[0], batch_size=batch_size)
    encoded = classifier.adapter.encode_conditions(list(conds.values))
    dist = NoiseDistribution.parse(noise)
    cache = cache if cache is not None else ErrorCache.from_environment()
    # the cache also keeps what the same predictions give under the other losses (Tables 8-9 compare them)
    contexts = cache.contexts(classifier, conds, loss_siblings(variants), dist, shared_noise, seed) \
        if cache is not None else {}
    stored = tuple(contexts) if contexts else variants
    errors = {o: [] for o in variants}
    timesteps, labels, ids = [], [], []
    n_cached = 0
    for i in tqdm(range(n), desc="scoring images", disable=not progress):
        row = dataset[i]
        image_plan = plan(i) if callable(plan) else plan
        x0, content = classifier.encode_image(row["image"])
        image_id = row.get("id", i)
        key = f"{content}|{image_id}"  # the pixels the errors come from and the id that keys their noise
        known = {o: contexts[o].read(key, image_plan, len(conds)) for o in variants if o in contexts}
        missing = (np.isnan(np.stack(list(known.values()))).any(axis=(0, 1)) if known
                   else np.ones(len(image_plan), bool))
        if missing.any():
            todo = Plan(tuple(np.array(image_plan.timesteps)[missing].tolist()),
                        tuple(np.array(image_plan.repeats)[missing].tolist()))
            result = scorer.score_plan(x0, encoded, todo, seed, image_id, dist, shared_noise, variants=stored[1:])
            for o in stored:
                new = (result.by_options[o] if result.by_options else result.errors).numpy()
                if o in contexts:
                    contexts[o].write(key, todo, new)
                if o in errors:
                    known.setdefault(o, np.empty((len(conds), len(image_plan)), np.float32))[:, missing] = new
        n_cached += int((~missing).sum())
        for o in variants:
            errors[o].append(known[o])
        timesteps.append(np.array(image_plan.timesteps))
        labels.append(int(row[label_column]))
        ids.append(str(image_id))
    return {o: ErrorSet(np.stack(errors[o]), np.stack(timesteps), np.array(labels), np.array(conds.class_idx), ids,
                        {"seed": seed, "shared_noise": shared_noise, "options": o.to_dict(), "noise": str(dist),
                         "cached_samples": n_cached})
            for o in variants}


def evaluate_dataset(classifier, dataset, limit: int | None = None, progress: bool = True, desc: str = "evaluate",
                     **classify_kwargs) -> EvaluationSummary:
    """Classify every row of a Hugging Face dataset with ``image``/``label``/``id`` columns, in memory (the
    resumable, distributed run store of ``dclib evaluate`` is :func:`dclib.runs.evaluate`)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, labels, evals, secs = [], [], [], []
    for i in tqdm(range(n), desc=desc, disable=not progress):
        row = dataset[i]
        started = time.perf_counter()
        result = classifier.classify(row["image"], image_id=row.get("id", i), **classify_kwargs)
        preds.append(result.prediction)
        labels.append(int(row["label"]))
        evals.append(result.evaluations)
        secs.append(time.perf_counter() - started)
    return summarize(preds, labels, evals, secs)


def classification_table(results: Sequence, dataset, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per classified image: its ``id``, true ``label`` and ``prediction`` (class names), the predicted
    class's ``probability`` and the denoiser ``evaluations`` spent. ``results[i]`` is the
    :class:`dclib.decide.Classification` of ``dataset[i]`` (rows with ``id`` and ``label`` columns)."""
    return pd.DataFrame({
        "id": dataset["id"],
        "label": [class_names[i] for i in dataset["label"]],
        "prediction": [r.prediction_name for r in results],
        "probability": [r.probabilities[r.prediction] for r in results],
        "evaluations": [r.evaluations for r in results],
    })


def cached(path: Path, compute: Callable[[], ErrorSet]) -> ErrorSet:
    """Load an ErrorSet saved by an earlier run with the same parameters, or compute and save it."""
    path = Path(path)
    if path.exists():
        return ErrorSet.load(path)
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    result.save(tmp)
    tmp.replace(path)
    return result


def compare_settings(classifier, dataset, settings: dict[str, dict], plan: Plan, n_images: int | None = None,
                     seed: int = 0, batch_size: "int | str" = "auto", progress: bool = False,
                     conditionings: Conditionings | None = None, cache: ErrorCache | None = None):
    """Accuracy (with 95% Clopper-Pearson intervals) of the same images under several scoring settings.

    ``settings`` maps a name to keyword arguments of :func:`score_dataset` (``options``, ``noise``,
    ``shared_noise``). Every setting sees the same images, timesteps and noise keys, so differences are paired.
    Settings that differ only in ``options`` (loss, objective, guidance, crop) share one denoiser pass
    (:func:`score_dataset_variants`).
    ``conditionings`` are the candidates (a text model's prompts); default: every class of a class-conditional model.
    ``cache``: as :func:`score_dataset`'s. Returns (table, {name: ErrorSet}).
    """
    # everything but the options -> (those kwargs, {name: options})
    groups: dict[str, tuple[dict, dict[str, ScoreOptions]]] = {}
    for name, kwargs in settings.items():
        rest = {k: v for k, v in kwargs.items() if k != "options"}
        groups.setdefault(repr(sorted(rest.items())), (rest, {}))[1][name] = kwargs.get("options") or ScoreOptions()
    by_name = {}
    for rest, variants in groups.values():
        scored = score_dataset_variants(classifier, dataset, plan, list(variants.values()), conditionings,
                                        n_images=n_images, seed=seed, batch_size=batch_size, progress=progress,
                                        cache=cache, **rest)
        by_name.update({name: scored[o] for name, o in variants.items()})
    sets, rows = {}, []
    for name in settings:
        errors = sets[name] = by_name[name]
        acc, low, high = errors.accuracy_ci()
        rows.append({"setting": name, "accuracy": acc, "ci_low": low, "ci_high": high, "n": errors.n_images})
    return pd.DataFrame(rows), sets
