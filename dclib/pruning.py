"""Pruning measured on saved errors: replay any schedule from full error matrices, check that a replay tells what
real model calls do, and compare evaluation strategies (accuracy against denoiser evaluations per image).

The schedules themselves (Algorithm 2's KeepList/TrialList and statistical paired pruning) are in
:mod:`dclib.schedules`; ``top_k_candidates`` is the other pruning of the paper (Appendix B): keep only the k
classes a weak discriminative model ranks highest, then run Diffusion Classifier on those.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .decide import decide
from .errors import InputError
from .plan import Plan, strided_positions
from .prompts import Conditionings
from .schedules import EvaluationSchedule, TreeSchedule, parse_schedule
from .stats import clopper_pearson


def top_k_candidates(weak_probabilities: np.ndarray, k: int) -> np.ndarray:
    """Appendix B: per image, the ``k`` classes a weak discriminative model ranks highest ([n, k], best first)."""
    probs = np.asarray(weak_probabilities)
    if not 1 <= k <= probs.shape[-1]:
        raise InputError(f"k must lie in [1, {probs.shape[-1]}], got {k}")
    # stable sort on -p so ties keep the lower class index first
    return np.argsort(-probs, axis=-1, kind="stable")[..., :k]


def replay_score_fn(errors: np.ndarray, timesteps: np.ndarray, repeats: np.ndarray | None = None):
    """A ``score`` callback that reads one image's saved errors [n_cond, n_samples] instead of calling a model.

    Samples are looked up by their (t, repeat) identity, so any plan drawn from the saved one replays exactly
    what a live run with the same seed would compute.
    """
    timesteps = np.asarray(timesteps)
    if repeats is None:
        repeats = np.array(Plan.from_timesteps(timesteps.tolist()).repeats)
    column = {(int(t), int(k)): i for i, (t, k) in enumerate(zip(timesteps, repeats))}

    def score(indices, plan: Plan) -> np.ndarray:
        try:
            cols = [column[key] for key in plan.keys()]
        except KeyError as exc:
            raise InputError(f"the saved errors have no sample {exc.args[0]} (t, repeat)") from None
        return errors[np.ix_(list(indices), cols)]

    return score


def replay(error_set, schedule, candidates: np.ndarray | None = None, num_train_timesteps: int = 1000,
           details: bool = False) -> dict:
    """Accuracy and mean denoiser evaluations per image of ``schedule`` (``"100"``, ``"5,1:10,100"``,
    ``"paired:100"`` ...) replayed from an :class:`dclib.experiments.ErrorSet` of full error matrices.

    ``candidates[i]`` (e.g. :func:`top_k_candidates` of a weak model) restricts image i to those classes'
    conditionings (Appendix B pre-pruning). The schedule's samples must be among the saved ones.
    ``details`` adds the per-image ``predictions`` and ``evaluations``.
    """
    sched = parse_schedule(schedule)
    class_idx = np.asarray(error_set.class_idx)
    n_classes = int(class_idx.max()) + 1
    correct, evaluations, predictions = 0, [], []
    for i in range(error_set.n_images):
        rows = np.arange(len(class_idx)) if candidates is None else np.flatnonzero(np.isin(class_idx, candidates[i]))
        conds = Conditionings(tuple(int(r) for r in rows), tuple(int(c) for c in class_idx[rows]),
                              tuple(str(k) for k in range(n_classes)))
        score = replay_score_fn(error_set.errors[i][rows], error_set.timesteps[i])
        result = decide(score, conds, _for_candidates(sched, rows, candidates), num_train_timesteps)
        correct += int(result.prediction == error_set.labels[i])
        evaluations.append(result.evaluations)
        predictions.append(result.prediction)
    low, high = clopper_pearson(correct, error_set.n_images)
    out = {"schedule": str(sched), "accuracy": correct / error_set.n_images, "ci_low": low, "ci_high": high,
           "evaluations_per_image": float(np.mean(evaluations)), "n": error_set.n_images}
    if details:
        out.update(predictions=predictions, evaluations=evaluations)
    return out


def _for_candidates(schedule, rows, candidates):
    """A label tree restricted to an image's candidate conditionings ``rows`` (other schedules need nothing)."""
    return schedule.restricted(rows) if candidates is not None and isinstance(schedule, TreeSchedule) else schedule


def classify_live(classifier, dataset, n_images: int, schedule, candidates: np.ndarray | None = None,
                  prompts=None, seed: int = 0, batch_size: "int | str" = "auto") -> dict:
    """Classify the first ``n_images`` rows of ``dataset`` (rows with ``image``, ``label`` and optionally ``id``)
    with real denoiser calls: per-image ``predictions`` and ``evaluations``, ``accuracy`` and the mean
    ``seconds_per_image``. ``candidates[i]`` restricts image i to those classes: their class labels for a
    class-conditional model, the prompts standing for them (in the prompts' order, as :func:`replay` keeps them)
    for a text model."""
    text = classifier.adapter.text_conditioned
    conds = classifier.conditionings(prompts) if text else None
    schedule = parse_schedule(schedule)
    predictions, evaluations, seconds, correct = [], [], [], 0
    for i in range(n_images):
        row = dataset[i]
        labels, image_prompts, rows = None, conds if text else prompts, None
        if candidates is not None and text:
            rows = keep = np.flatnonzero(np.isin(conds.class_idx, candidates[i]))
            image_prompts = Conditionings(tuple(conds.values[r] for r in keep), tuple(conds.class_idx[r] for r in keep),
                                          conds.class_names)
        elif candidates is not None:
            rows = labels = [int(c) for c in candidates[i]]
        started = time.perf_counter()
        result = classifier.classify(row["image"], prompts=image_prompts, image_id=row.get("id", i),
                                     schedule=_for_candidates(schedule, rows, candidates), seed=seed,
                                     batch_size=batch_size, class_labels=labels)
        seconds.append(time.perf_counter() - started)
        predictions.append(result.prediction)
        evaluations.append(result.evaluations)
        correct += int(result.prediction == row["label"])
    return {"predictions": predictions, "evaluations": evaluations, "accuracy": correct / max(n_images, 1),
            "seconds_per_image": float(np.mean(seconds)) if seconds else 0.0}


def live_check(classifier, dataset, error_set, schedule, n_images: int, candidates: np.ndarray | None = None,
               prompts=None, seed: int = 0, batch_size: "int | str" = "auto") -> dict:
    """Does :func:`replay` of ``schedule`` from the saved error matrices tell what real model calls do? The
    first ``n_images`` rows classified live (the noise keyed by the same seed and image ids as ``error_set``'s)
    against their replay: the same predictions and the same evaluation counts, plus the live time per image."""
    live = classify_live(classifier, dataset, n_images, schedule, candidates, prompts, seed, batch_size)
    replayed = replay(error_set.select(slice(0, n_images)), schedule,
                      None if candidates is None else candidates[:n_images],
                      classifier.adapter.num_train_timesteps, details=True)
    return {"schedule": replayed["schedule"], "images": n_images,
            "same_predictions": live["predictions"] == replayed["predictions"],
            "same_evaluations": live["evaluations"] == replayed["evaluations"],
            "live_accuracy": live["accuracy"], "replayed_accuracy": replayed["accuracy"],
            "live_evaluations_per_image": float(np.mean(live["evaluations"])) if n_images else 0.0,
            "replayed_evaluations_per_image": replayed["evaluations_per_image"],
            "seconds_per_image": live["seconds_per_image"]}


@dataclass(frozen=True)
class Method:
    """One way to spend denoiser evaluations, replayed from saved errors: a schedule (``"5,1:10,100"``,
    ``"paired:100"``, ``"100"`` ...) and optionally per-image candidate classes (top-k pre-pruning)."""

    label: str
    schedule: "str | EvaluationSchedule"  # a spec, or a schedule object (a TreeSchedule built from a label tree)
    candidates: np.ndarray | None = None


@dataclass(frozen=True)
class LiveRun:
    """Classify the first ``n_images`` rows of ``dataset`` for real: the time per image, and the check that a
    replay tells what real model calls do (same predictions, same evaluation counts)."""

    classifier: object
    dataset: object
    n_images: int
    conditionings: object = None
    seed: int = 0
    batch_size: "int | str" = "auto"


def compare_methods(error_set, grid: int, algorithm1: Sequence[int] = (), methods: Sequence[Method] = (),
                    num_train_timesteps: int = 1000, live: LiveRun | None = None):
    """Accuracy (95% interval) against evaluations per image of several evaluation strategies on the same images,
    all read from one :class:`dclib.experiments.ErrorSet` scored on ``grid`` evenly spaced timesteps.

    ``algorithm1``: Algorithm 1 with n timesteps, n strided points of the grid (as the official adaptive code
    takes a stage's timesteps). ``methods``: replayed with :func:`replay`. With ``live``, each row also gets the
    live ``seconds_per_image`` and (for ``methods``) whether live equals replay (a RuntimeError if not). Returns
    (table, {label: per-image correctness}) for paired tests.
    """
    rows, right = [], {}
    n_conditionings = error_set.errors.shape[1]
    for n in algorithm1:
        label = f"Algorithm 1, {n} timesteps"
        columns = strided_positions(grid, int(n))
        acc, low, high = error_set.accuracy_ci(columns)
        right[label] = error_set.predictions(columns) == error_set.labels
        seconds = None
        if live is not None:  # the official n-point grid: the same cost as n strided points
            seconds = classify_live(live.classifier, live.dataset, live.n_images, str(n), prompts=live.conditionings,
                                    seed=live.seed, batch_size=live.batch_size)["seconds_per_image"]
        rows.append({"method": label, "schedule": str(n), "accuracy": acc, "ci_low": low, "ci_high": high,
                     "evaluations_per_image": int(n) * n_conditionings, "seconds_per_image": seconds,
                     "live equals replay": None})
    for m in methods:
        row = replay(error_set, m.schedule, m.candidates, num_train_timesteps, details=True)
        right[m.label] = np.array(row["predictions"]) == error_set.labels
        seconds, same = None, None
        if live is not None:
            check = live_check(live.classifier, live.dataset, error_set, m.schedule, live.n_images, m.candidates,
                               prompts=live.conditionings, seed=live.seed, batch_size=live.batch_size)
            seconds, same = check["seconds_per_image"], check["same_predictions"] and check["same_evaluations"]
        rows.append({"method": m.label, **{k: row[k] for k in ("schedule", "accuracy", "ci_low", "ci_high",
                                                               "evaluations_per_image")},
                     "seconds_per_image": seconds, "live equals replay": same})
        if same is False:  # the replay is what the accuracies rest on: a live run that disagrees voids them
            raise RuntimeError(f"{m.label}: a live run disagrees with its replay from the saved errors")
    return pd.DataFrame(rows), right
