"""Statistical class pruning: drop a conditioning once a paired test says it is worse than the current best.

The paper's Algorithm 2 prunes with a hand-picked KeepList/TrialList. Clark & Jaini (2023) instead drop
classes that paired tests on shared noise show to be implausible. This module does that with a stated bound on
the error it cares about, dropping the conditioning whose expected error is lowest:

* The pool is ``n_timesteps`` evenly spaced timesteps (the official grid), cut into ``strata`` contiguous bins.
  Each round adds one not-yet-used timestep from every bin (in a seeded random order within the bin), so
  after ``r`` rounds every bin holds ``r`` samples and the full budget is exactly Algorithm 1 on the grid,
  with the same noise (noise is keyed by (t, repeat)).
* Every surviving conditioning is scored on the round's samples (the same samples for all). Then each one is
  compared with the current best b on the differences d_s = err_c,s - err_b,s over all shared samples.
  The error level varies by orders of magnitude with t, so the test is stratified: the mean difference is the
  average of the per-bin means and its variance sum_h s_h^2 / (r S^2) uses only within-bin variances.
* c is dropped when the one-sided t statistic exceeds the (1 - alpha / (R (K - 1))) quantile of Student's t
  with S (r - 1) degrees of freedom, R the maximum number of rounds and K the number of conditionings. By a
  union bound over rounds and over which conditioning is the current best, the conditioning with the lowest
  expected error is dropped with probability at most ``alpha`` (under the t approximation).
* It stops when one conditioning is left or the budget is spent; survivors are then ranked by mean error.

``top_k_candidates`` is the other pruning of the paper (Appendix B): keep only the k classes a weak
discriminative model ranks highest, then run Diffusion Classifier on those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import InputError
from .plan import Plan, even_timesteps, strided_positions


@dataclass(frozen=True)
class PairedPruning:
    """Sequential paired-test pruning over ``n_timesteps`` evenly spaced timesteps (see the module doc)."""

    n_timesteps: int = 100
    strata: int = 5
    alpha: float = 0.01
    min_rounds: int = 2  # a within-bin variance needs two samples per bin
    n_trials: int = 1
    seed: int = 0  # order of the timesteps within each bin (not the noise)

    def __post_init__(self):
        if self.strata < 1 or self.n_timesteps < 2 * self.strata:
            raise InputError(f"paired pruning needs at least 2 timesteps per stratum (got {self.n_timesteps} "
                             f"timesteps in {self.strata} strata)")
        if not 0.0 < self.alpha < 1.0:
            raise InputError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.min_rounds < 2:
            raise InputError("min_rounds must be >= 2")

    @classmethod
    def parse(cls, spec: str, n_trials: int = 1) -> "PairedPruning":
        """``"paired"``, ``"paired:100"`` or ``"paired:100,alpha=0.05,strata=10"``."""
        text = str(spec).strip()
        if not text.startswith("paired"):
            raise InputError(f"not a paired-pruning schedule: {spec!r}")
        kwargs: dict = {"n_trials": n_trials}
        rest = text[len("paired"):].lstrip(":")
        try:
            for i, part in enumerate(p.strip() for p in rest.split(",") if p.strip()):
                if "=" in part:
                    key, value = (s.strip() for s in part.split("=", 1))
                    if key not in ("alpha", "strata", "min_rounds", "seed"):
                        raise InputError(f"unknown paired-pruning option {key!r} (alpha, strata, min_rounds, seed)")
                    kwargs[key] = float(value) if key == "alpha" else int(value)
                elif i == 0:
                    kwargs["n_timesteps"] = int(part)
                else:
                    raise ValueError(part)
        except ValueError:
            raise InputError(f"cannot read schedule {spec!r}: use paired, paired:N or "
                             "paired:N,alpha=0.01,strata=5") from None
        return cls(**kwargs)

    @property
    def rounds_max(self) -> int:
        return self.n_timesteps // self.strata

    def round_timesteps(self, num_train_timesteps: int = 1000) -> list[list[int]]:
        """The timesteps each round adds (one per stratum); the first ``rounds_max * strata`` of the grid."""
        grid = even_timesteps(self.n_timesteps, num_train_timesteps)
        per = self.rounds_max
        rng = np.random.default_rng(self.seed)
        bins = [[grid[h * per + j] for j in rng.permutation(per)] for h in range(self.strata)]
        return [[b[r] for b in bins] for r in range(per)]

    def round_plans(self, num_train_timesteps: int = 1000) -> list[Plan]:
        return [Plan(tuple(t for t in ts for _ in range(self.n_trials)),
                     tuple(k for _ in ts for k in range(self.n_trials)))
                for ts in self.round_timesteps(num_train_timesteps)]

    def max_evaluations(self, n_conditionings: int) -> int:
        return n_conditionings * self.rounds_max * self.strata * self.n_trials

    def critical_value(self, n_conditionings: int, rounds_done: int) -> float:
        from scipy.stats import t as student_t

        comparisons = self.rounds_max * max(n_conditionings - 1, 1)
        return float(student_t.ppf(1.0 - self.alpha / comparisons, df=self.strata * (rounds_done * self.n_trials - 1)))

    def __str__(self) -> str:
        return f"paired:{self.n_timesteps},alpha={self.alpha:g},strata={self.strata}"


def stratified_paired_t(diff: np.ndarray, strata: np.ndarray) -> float:
    """t statistic of the mean of ``diff`` (equal samples per stratum) with the within-stratum variance only."""
    labels = np.unique(strata)
    means = np.array([diff[strata == h].mean() for h in labels])
    var = np.array([diff[strata == h].var(ddof=1) / (strata == h).sum() for h in labels])
    se = np.sqrt(var.sum()) / len(labels)
    mean = means.mean()
    if se == 0.0:
        return np.inf if mean > 0 else (-np.inf if mean < 0 else 0.0)
    return float(mean / se)


def run_paired_pruning(score, n_conditionings: int, pruning: PairedPruning, num_train_timesteps: int = 1000
                       ) -> tuple[np.ndarray, Plan, int, int, dict]:
    """Run the sequential procedure with the ``score(indices, plan) -> errors`` callback of :mod:`dclib.decide`.

    Returns (errors [n_cond, n_samples] with NaN where not scored, the full plan, the best conditioning, pairs
    scored, facts: rounds run and the round each conditioning was dropped in).
    """
    plans = pruning.round_plans(num_train_timesteps)
    full = Plan((), ())
    for p in plans:
        full = full + p
    # stratum of every column of the full plan (the round's timesteps are listed bin by bin)
    stratum = np.array([h for _ in plans for h in range(pruning.strata) for _ in range(pruning.n_trials)])
    errors = np.full((n_conditionings, len(full)), np.nan)
    alive = list(range(n_conditionings))
    dropped_in = np.full(n_conditionings, -1)
    offset = pairs = rounds = 0
    for r, plan in enumerate(plans):
        if len(alive) <= 1:
            break
        errors[alive, offset:offset + len(plan)] = score(alive, plan)
        pairs += len(alive) * len(plan)
        offset += len(plan)
        rounds = r + 1
        if rounds < pruning.min_rounds:
            continue
        seen = errors[:, :offset]
        means = seen[alive].mean(1)
        best = alive[int(np.argmin(means))]
        crit = pruning.critical_value(n_conditionings, rounds)
        keep = [c for c in alive
                if c == best or stratified_paired_t(seen[c] - seen[best], stratum[:offset]) <= crit]
        dropped_in[[c for c in alive if c not in keep]] = rounds
        alive = keep
    means = np.nanmean(errors[alive], 1) if offset else np.zeros(len(alive))
    best = alive[int(np.argmin(means))]
    return errors, full, best, pairs, {"rounds": rounds, "dropped_in_round": dropped_in.tolist()}


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
    from .decide import decide
    from .evaluate import clopper_pearson
    from .plan import Schedule
    from .prompts import Conditionings

    sched = Schedule.parse(schedule)
    class_idx = np.asarray(error_set.class_idx)
    n_classes = int(class_idx.max()) + 1
    correct, evaluations, predictions = 0, [], []
    for i in range(error_set.n_images):
        rows = np.arange(len(class_idx)) if candidates is None else np.flatnonzero(np.isin(class_idx, candidates[i]))
        conds = Conditionings(tuple(int(r) for r in rows), tuple(int(c) for c in class_idx[rows]),
                              tuple(str(k) for k in range(n_classes)))
        score = replay_score_fn(error_set.errors[i][rows], error_set.timesteps[i])
        result = decide(score, conds, sched, num_train_timesteps)
        correct += int(result.prediction == error_set.labels[i])
        evaluations.append(result.evaluations)
        predictions.append(result.prediction)
    low, high = clopper_pearson(correct, error_set.n_images)
    out = {"schedule": str(sched), "accuracy": correct / error_set.n_images, "ci_low": low, "ci_high": high,
           "evaluations_per_image": float(np.mean(evaluations)), "n": error_set.n_images}
    if details:
        out.update(predictions=predictions, evaluations=evaluations)
    return out


def classify_live(classifier, dataset, n_images: int, schedule, candidates: np.ndarray | None = None,
                  prompts=None, seed: int = 0, batch_size: "int | str" = "auto") -> dict:
    """Classify the first ``n_images`` rows of ``dataset`` (rows with ``image``, ``label`` and optionally ``id``)
    with real denoiser calls: per-image ``predictions`` and ``evaluations``, ``accuracy`` and the mean
    ``seconds_per_image``. ``candidates[i]`` restricts image i to those classes: their class labels for a
    class-conditional model, the prompts standing for them (in the prompts' order, as :func:`replay` keeps them)
    for a text model."""
    import time

    from .prompts import Conditionings

    text = classifier.adapter.text_conditioned
    conds = classifier.conditionings(prompts) if text else None
    predictions, evaluations, seconds, correct = [], [], [], 0
    for i in range(n_images):
        row = dataset[i]
        labels, image_prompts = None, conds if text else prompts
        if candidates is not None and text:
            keep = np.flatnonzero(np.isin(conds.class_idx, candidates[i]))
            image_prompts = Conditionings(tuple(conds.values[r] for r in keep), tuple(conds.class_idx[r] for r in keep),
                                          conds.class_names)
        elif candidates is not None:
            labels = [int(c) for c in candidates[i]]
        started = time.perf_counter()
        result = classifier.classify(row["image"], prompts=image_prompts, image_id=row.get("id", i),
                                     schedule=schedule, seed=seed, batch_size=batch_size, class_labels=labels)
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
    schedule: str
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
    live ``seconds_per_image`` and (for ``methods``) whether live equals replay. Returns (table, {label:
    per-image correctness}) for paired tests.
    """
    import pandas as pd

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
    return pd.DataFrame(rows), right
