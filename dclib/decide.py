"""Decisions from errors: Algorithm 1 (argmin of the mean error) and Algorithm 2 (adaptive pruning).

Both take the errors through a callback ``score(conditioning_indices, plan) -> errors [len(indices), len(plan)]``
so the same code runs live on a model or replays a saved error matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import InputError, NonFiniteError, check_finite
from .plan import Plan
from .prompts import Conditionings

#: ``score(conditioning indices, plan) -> errors [len(indices), len(plan)]`` (or (errors, evaluations spent))
ScoreFn = Callable[[list[int], Plan], "np.ndarray | tuple[np.ndarray, int]"]


@dataclass
class Classification:
    """The outcome for one image."""

    prediction: int  # predicted class index
    prediction_name: str
    best_conditioning: int  # index of the conditioning with the lowest mean error
    conditionings: Conditionings
    errors: np.ndarray  # [n_conditionings, n_samples]; NaN where a pruned conditioning was not scored
    plan: Plan  # the samples, in evaluation order (columns of ``errors``)
    evaluations: int  # denoiser calls for this image
    temperature: float = 1.0
    seconds: float = 0.0
    scored_pairs: int = 0  # (conditioning, sample) errors computed: every other entry of ``errors`` is NaN
    schedule_facts: dict = field(default_factory=dict)  # what the schedule reports (paired pruning: its rounds)
    image_id: str | None = None  # the id that keyed the noise (set by ``DiffusionClassifier.classify``)
    settings: dict = field(default_factory=dict)  # ``ClassifySettings.to_dict()`` of the run, when classified
    #: what ``probabilities`` are: "uncalibrated (eq. 6)", a model card's temperature, or a given temperature
    probability_source: str = ""

    @property
    def extra(self) -> dict:
        """Schedule facts, pairs scored, the image id and the settings, as :meth:`to_dict` reports them."""
        image = {} if self.image_id is None else {"image_id": self.image_id}
        return {**self.schedule_facts, "scored_pairs": self.scored_pairs, **image, **self.settings}

    @property
    def n_samples(self) -> np.ndarray:
        """Samples each conditioning was scored on."""
        return np.isfinite(self.errors).sum(1)

    @property
    def mean_errors(self) -> np.ndarray:
        """Mean error per conditioning; for one pruned early, the paired estimate of :func:`paired_mean_errors`
        (the winner's mean plus the pruned one's mean difference to it on the samples both saw)."""
        return paired_mean_errors(self.errors)

    @property
    def partial_mean_errors(self) -> np.ndarray:
        """Raw mean error per conditioning over the samples it was scored on (fewer for pruned ones)."""
        return mean_errors(self.errors)

    @property
    def class_errors(self) -> np.ndarray:
        """Per class, the mean error of its best conditioning (inf for a class with none)."""
        return class_errors(self.mean_errors, self.conditionings.class_idx, self.conditionings.n_classes)

    @property
    def probabilities(self) -> np.ndarray:
        """Posterior over classes, softmax(-class_error / temperature) (paper eq. 6 with a uniform prior).

        A conditioning pruned early keeps a paired estimate from the samples it saw, not probability zero.
        """
        return posterior(self.class_errors, self.temperature)

    def ranking(self) -> list[int]:
        """Candidate class indices (those with a conditioning) from best to worst: classes that survived more
        pruning stages first (so the prediction leads), then by class error."""
        seen = np.zeros(self.conditionings.n_classes, dtype=np.int64)
        np.maximum.at(seen, np.asarray(self.conditionings.class_idx, dtype=np.int64), self.n_samples)
        cls_err = self.class_errors
        return sorted(set(self.conditionings.class_idx), key=lambda k: (-seen[k], cls_err[k], k))

    def to_dict(self, top: int | None = None) -> dict:
        names = self.conditionings.class_names
        order = self.ranking()[:top] if top else self.ranking()
        probs, cls_err = self.probabilities, self.class_errors
        return {
            "prediction": self.prediction,
            "prediction_name": self.prediction_name,
            "best_conditioning": str(self.conditionings.values[self.best_conditioning]),
            "classes": [names[i] for i in order],
            "class_indices": order,
            "mean_errors": [float(cls_err[i]) for i in order],
            "probabilities": [float(probs[i]) for i in order],
            "probability_source": self.probability_source,
            "temperature": float(self.temperature),
            "conditionings": self.conditionings.labels(),
            "conditioning_mean_errors": [float(v) for v in self.mean_errors],
            "conditioning_samples": [int(v) for v in self.n_samples],
            "evaluations": int(self.evaluations),
            "seconds": round(float(self.seconds), 4),
            **self.extra,
        }


def mean_errors(errors: np.ndarray) -> np.ndarray:
    counts = np.isfinite(errors).sum(1)
    sums = np.where(np.isfinite(errors), errors, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def paired_mean_errors(errors: np.ndarray) -> np.ndarray:
    """Mean errors on a common footing when some conditionings were pruned after fewer samples.

    A raw partial mean comes from other (t, eps) samples than the full means, so it is not comparable: early
    samples can be easier, and a pruned conditioning's partial mean can even fall below the winner's full mean.
    With shared noise the difference to the reference (the best of the conditionings scored on the most
    samples; the winner under Algorithm 2) is what each sample measures, so a pruned conditioning c gets
    ``mean(ref) + mean_s(e_cs - e_ref,s)`` over the samples both saw. Conditionings scored on every sample keep
    their plain mean; conditionings never scored get inf.
    """
    raw = mean_errors(errors)
    counts = np.isfinite(errors).sum(1)
    if counts.max(initial=0) == 0:
        return raw
    most = counts == counts.max()
    ref = np.flatnonzero(most)[np.argmin(raw[most])]
    out = raw.copy()
    for c in np.flatnonzero((counts > 0) & ~most):
        both = np.isfinite(errors[c]) & np.isfinite(errors[ref])
        if both.any():
            out[c] = raw[ref] + float(np.mean(errors[c, both] - errors[ref, both]))
    return out


def class_errors(cond_mean_errors: np.ndarray, class_idx: Sequence[int], n_classes: int) -> np.ndarray:
    out = np.full(n_classes, np.inf)
    np.minimum.at(out, np.asarray(class_idx, dtype=np.int64), cond_mean_errors)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax ignoring non-finite entries (probability 0); a row with no finite logit is uniform."""
    logits = np.atleast_2d(logits)
    finite = np.isfinite(logits)
    top = np.where(finite, logits, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.where(finite, np.exp(np.where(finite, logits - top, 0.0)), 0.0)
    total = p.sum(axis=1, keepdims=True)
    empty = total[:, 0] == 0
    p[empty] = 1.0 / logits.shape[1]
    total[empty] = 1.0
    return p / total


def posterior(errors: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(-errors / temperature) over one image's classes (paper eq. 6 with a uniform prior)."""
    return softmax(-np.asarray(errors, dtype=np.float64) / float(temperature))[0]


def check_temperature(temperature) -> float:
    """A positive, finite temperature: softmax(-error / T) means nothing otherwise."""
    value = check_finite("temperature", temperature)
    if value <= 0:
        raise InputError(f"temperature must be > 0, got {temperature!r}")
    return value


def finite_scores(score: ScoreFn) -> ScoreFn:
    """``score`` that raises :class:`NonFiniteError` on a NaN or inf error instead of returning it.

    The error matrices use NaN for "not scored", so a NaN from the model would silently drop that sample from
    its conditioning's mean, and an image whose every error is NaN would come out as its first class with
    error inf. No prediction is better than either.
    """

    def checked(indices: list[int], plan: Plan) -> np.ndarray:
        errors = score(indices, plan)
        bad = int(np.size(errors) - np.isfinite(errors).sum())
        if bad:
            raise NonFiniteError(f"{bad} of {np.size(errors)} errors are NaN or inf: the model returned non-finite "
                                 "values (try float32, or check the scoring options)")
        return errors

    return checked


#: ``select(errors, alive, n_seen, stage) -> survivors``: after stage ``stage`` (counted from 1), which of the
#: ``alive`` conditionings go on, given every error so far (``errors[:, :n_seen]`` is what has been scored). It may
#: name conditionings that were not alive (a label tree descending into a group): the engine scores them on every
#: sample seen so far before the next stage.
Select = Callable[[np.ndarray, list[int], int, int], list[int]]


def run_stages(score: ScoreFn, n_conditionings: int, stage_plans: Sequence[Plan], select: Select,
               stop_at_one: bool = False, first: Sequence[int] | None = None
               ) -> tuple[np.ndarray, Plan, int, int, int]:
    """The one staged engine every schedule runs on: stage i scores every surviving conditioning on the stage's
    new samples (the same samples for all, so differences between conditionings are paired), then ``select``
    says who survives. With ``stop_at_one``, stages stop once a single conditioning is left (nothing is left to
    compare it with).

    ``first`` are the conditionings alive at the start (default: all). A conditioning that ``select`` adds is scored
    on every earlier sample at once (a catch-up call), so it is compared on the same samples as the others.

    Returns (errors [n_cond, n_samples] with NaN where not scored, the full plan, the best conditioning: the
    survivor with the lowest mean error over the samples it saw, ties to the lower index; pairs scored; stages
    run).
    """
    full_plan = Plan.concat(stage_plans)
    errors = np.full((n_conditionings, len(full_plan)), np.nan)
    alive = list(range(n_conditionings)) if first is None else list(first)
    offset = pairs = stages = 0
    for plan in stage_plans:
        if stop_at_one and len(alive) <= 1:
            break
        if len(plan) and alive:
            errors[alive, offset:offset + len(plan)] = score(alive, plan)
            pairs += len(alive) * len(plan)
        offset += len(plan)
        stages += 1
        survivors = select(errors, alive, offset, stages)
        newcomers = [c for c in survivors if c not in alive]
        if any(np.isfinite(errors[c, :offset]).any() for c in newcomers):
            raise ValueError("select brought back a conditioning it had dropped; its samples would not be paired")
        if newcomers and offset:
            seen = Plan(full_plan.timesteps[:offset], full_plan.repeats[:offset])
            errors[newcomers, :offset] = score(newcomers, seen)
            pairs += len(newcomers) * offset
        alive = survivors
    means = mean_errors(errors[alive])
    best = min(range(len(alive)), key=lambda i: (means[i] if np.isfinite(means[i]) else np.inf, alive[i]))
    return errors, full_plan, alive[best], pairs, stages


def keep_lowest(keep: Sequence[int]) -> Select:
    """Algorithm 2's selection with the official semantics: after stage i, the ``keep[i]`` conditionings with the
    lowest mean error over all samples they have seen (ties go to the lower index)."""
    def select(errors: np.ndarray, alive: list[int], n_seen: int, stage: int) -> list[int]:
        means = mean_errors(errors[alive])
        order = sorted(range(len(alive)), key=lambda i: (means[i], alive[i]))
        return [alive[i] for i in order[:keep[stage - 1]]]

    return select


def run_schedule(score: ScoreFn, n_conditionings: int, stage_plans: Sequence[Plan], keep: Sequence[int]
                 ) -> tuple[np.ndarray, Plan, int, int]:
    """Algorithm 2 (a single stage with keep 1 is Algorithm 1) on :func:`run_stages`: returns (errors, the full
    plan, the best conditioning, pairs scored)."""
    errors, plan, best, pairs, _ = run_stages(score, n_conditionings, stage_plans, keep_lowest(keep))
    return errors, plan, best, pairs


def decide(score: ScoreFn, conditionings: Conditionings, schedule, num_train_timesteps: int,
           temperature: float = 1.0) -> Classification:
    """Classify with ``schedule`` (any :class:`dclib.schedules.EvaluationSchedule`: Algorithm 1 or 2, or paired
    pruning) using the ``score`` callback. Raises :class:`NonFiniteError` as soon as a scored error is NaN or inf.

    ``score`` returns the errors, or (errors, denoiser evaluations the call spent) when that is more than one per
    (conditioning, sample) pair (classifier-free guidance's unconditional predictions): ``evaluations`` is then the
    true count, and ``scored_pairs`` the pairs."""
    temperature = check_temperature(temperature)
    extra = [0]

    def counted(indices: list[int], plan: Plan) -> np.ndarray:
        out = score(indices, plan)
        if isinstance(out, tuple):
            out, spent = out
            extra[0] += int(spent) - len(indices) * len(plan)
        return out

    outcome = schedule.run(finite_scores(counted), len(conditionings), num_train_timesteps)
    cls = conditionings.class_idx[outcome.best]
    return Classification(prediction=int(cls), prediction_name=conditionings.class_names[cls],
                          best_conditioning=outcome.best, conditionings=conditionings, errors=outcome.errors,
                          plan=outcome.plan, evaluations=outcome.pairs + extra[0], temperature=temperature,
                          scored_pairs=outcome.pairs, schedule_facts=dict(outcome.facts))
