"""Cost against the number of classes: evaluations and seconds per image and top-1 (95% intervals) at several class
counts, for a reference fixed in advance and the pruning schedules dclib offers, on the same images and noise.

Why: the cost of Diffusion Classifier grows with the number of classes (the paper's ImageNet schedule makes about
100,000 denoiser calls per image), and what makes it usable is a schedule whose cost grows slower than the class
count at no loss of accuracy. This module draws that curve; ``benchmarks/class_scaling.py`` prints it as JSON and the
book's class-scaling page plots it and tests its claim.

Class counts: a dataset name holding ``{k}`` opens one dataset per count (``embedded:manyclass-test-K``: nested
sets with the same class indices, each with its own prompt CSV), ``n_images`` of each in a seeded class-balanced
order; any other dataset is cut into nested class subsets (prefixes of one seeded class order, a subset keeping the
images of its classes and only their prompts). Each count is scored once on ``grid`` evenly spaced timesteps
(shared noise keyed by image id, kept in an error cache when one is given) and every method replayed from it
(:func:`dclib.pruning.compare_methods`), so all methods see the same images and samples:

* (a) the reference, fixed in advance: Algorithm 1 with 25 evenly spaced timesteps (strided points of the grid);
* (b) paired pruning, ``paired:GRID,alpha=0.01``;
* (c) top-k pre-pruning with the contrastive model (Appendix B), then (a) on the k candidates;
* (d) the label tree: the dataset's own groups where it has them (``dclib.data.manyclass.class_groups``), and one
  built from the prompts' text embeddings (:func:`dclib.label_tree.tree_from_embeddings`), each pruned by
  :class:`dclib.schedules.TreeSchedule` at alpha 0.01;
* (e) the best combination: of top-k (k in ``dev_top_k``) followed by (a), paired pruning or a tree, the one with
  the highest accuracy at no more than ``COST_SHARE`` of (a)'s evaluations, chosen by live runs on ``n_dev`` images
  of the ``dev`` split (classes of the count, images the measurement does not use), at the largest count.

At the largest count every method also runs live on the first ``n_live`` images for its seconds per image, and
(b)-(e) are checked against their replay (same predictions and evaluation counts; (a) is its own replay). The
contrastive model's seconds per image and each tree's building seconds are reported beside, and so is the partner
classifying alone (``partner_alone``: its top 1 against (a) and (e)), since a combination that beats (a) may owe it
all to its partner. The paired accuracy
difference to (a) comes with its Agresti-Min interval; the fitted log-log slope of evaluations against classes is
reported only for methods whose lower 95% bound of that difference is at least ``-MARGIN`` at every count.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import verdicts
from .claims import SCALING_COST_SHARE, SCALING_MARGIN
from .data import load_embedded
from .data.registry import embedded_prompt_file
from .errors import InputError
from .experiments import ErrorSet, open_experiment, score_dataset
from .label_tree import prompt_embeddings, tree_from_embeddings, tree_from_groups
from .paper import paper_cell, paper_table
from .plan import even_plan, even_timesteps, strided_positions
from .prompts import Conditionings, read_prompt_file
from .pruning import LiveRun, Method, classify_live, compare_methods, top_k_candidates
from .runs import stratified_order
from .schedules import TreeSchedule
from .stats import clopper_pearson

REFERENCE_TIMESTEPS = 25
REFERENCE = f"Algorithm 1, {REFERENCE_TIMESTEPS} timesteps"
# the accuracy bound (the difference to (a) no worse than -MARGIN, 95% lower bound) and (e)'s cost bound (at most
# this share of (a)'s evaluations per image): the book's class-scaling claim registers both
MARGIN, COST_SHARE = SCALING_MARGIN, SCALING_COST_SHARE
ALPHA = 0.01       # paired and tree pruning


@dataclass(frozen=True)
class ScalingSetup:
    """What one curve measures (the defaults: the issue's many-class benchmark)."""

    dataset: str = "embedded:manyclass-test-{k}"
    classes: tuple[int, ...] = (25, 50, 100, 200)
    n_images: int = 250
    grid: int = REFERENCE_TIMESTEPS
    top_k: int = 5
    dev_top_k: tuple[int, ...] = (5, 10)
    branching: int = 4
    n_live: int = 50
    dev: str = "embedded:manyclass-dev"
    n_dev: int = 100
    seed: int = 0
    batch_size: int = 1000

    def __post_init__(self):
        grid = even_timesteps(self.grid)
        if [grid[i] for i in strided_positions(self.grid, REFERENCE_TIMESTEPS)] != even_timesteps(REFERENCE_TIMESTEPS):
            raise ValueError(f"grid {self.grid}: its strided {REFERENCE_TIMESTEPS} points are not the official "
                             f"{REFERENCE_TIMESTEPS} evenly spaced timesteps (which (a) and (c) run); use 25")
        object.__setattr__(self, "classes", tuple(sorted(int(k) for k in self.classes)))

    @property
    def per_count(self) -> bool:
        return "{k}" in self.dataset


def class_subset(errors: ErrorSet, conds: Conditionings, scores: np.ndarray, classes: np.ndarray):
    """The images of ``classes`` and only their prompts, classes renumbered 0..k-1 in ``classes``' order."""
    new = {int(c): i for i, c in enumerate(classes)}
    images = np.flatnonzero(np.isin(errors.labels, classes))
    rows = np.flatnonzero(np.isin(conds.class_idx, classes))
    subset = ErrorSet(errors.errors[images][:, rows], errors.timesteps[images],
                      np.array([new[int(y)] for y in errors.labels[images]]),
                      np.array([new[int(conds.class_idx[r])] for r in rows]), [errors.ids[i] for i in images])
    sub_conds = Conditionings(tuple(conds.values[r] for r in rows), tuple(new[int(conds.class_idx[r])] for r in rows),
                              tuple(conds.class_names[int(c)] for c in classes))
    return subset, sub_conds, rows, scores[images][:, classes], images


def class_groups_of(dataset: str, k: int):
    """The dataset's own label tree for its first ``k`` classes, where it has one (the many-class sets)."""
    if "manyclass" in dataset:
        from .data import manyclass

        return manyclass.class_groups(k)
    return None


def open_count(setup: ScalingSetup, clf, k: int):
    """(images, conditionings) of the ``k``-class problem of a ``{k}`` dataset: ``n_images`` in a seeded
    class-balanced order, with the set's own prompt CSV (its class indices are the dataset's labels)."""
    name = setup.dataset.format(k=k)
    data = load_embedded(name) if name.startswith("embedded:") else None
    if data is None:
        _, data, conds = open_experiment(clf, name, n_images=setup.n_images, shuffle_seed=setup.seed)
        return data, conds
    data = data.select(stratified_order(data["label"], seed=setup.seed)[:setup.n_images])
    return data, read_prompt_file(embedded_prompt_file(name))


def schedules_for(setup: ScalingSetup, clf, conds, groups) -> tuple[dict, dict]:
    """What follows the pre-pruning (or runs alone) on one class count, by label: (a), paired pruning and the label
    trees; and {label: seconds to build it}."""
    embeddings = prompt_embeddings(clf, conds)
    schedules = {REFERENCE: str(REFERENCE_TIMESTEPS), "paired pruning": f"paired:{setup.grid},alpha={ALPHA}"}
    seconds = {}
    builders = {"label tree, text embeddings": lambda: tree_from_embeddings(conds, embeddings, setup.branching)}
    if groups is not None:
        builders = {"label tree, natural groups": lambda: tree_from_groups(conds, groups, embeddings), **builders}
    for label, build in builders.items():
        started = time.perf_counter()
        schedules[label] = TreeSchedule(build(), n_timesteps=setup.grid, alpha=ALPHA)
        seconds[label] = round(time.perf_counter() - started, 3)
    return schedules, seconds


def methods_for(setup: ScalingSetup, schedules: dict, weak_scores, combo: tuple | None) -> list[Method]:
    """(b)-(e) of one class count; ``combo``: (e)'s (top-k, label of what follows), or None."""
    k = weak_scores.shape[1]
    methods = [Method("(b) paired pruning", schedules["paired pruning"]),
               Method(f"(c) top-{min(setup.top_k, k)} + {REFERENCE}", schedules[REFERENCE],
                      top_k_candidates(weak_scores, min(setup.top_k, k)))]
    methods += [Method(f"(d) {label}", schedule) for label, schedule in schedules.items() if "tree" in label]
    if combo is not None:
        methods.append(Method(f"(e) top-{min(combo[0], k)} + {combo[1]}", schedules[combo[1]],
                              top_k_candidates(weak_scores, min(combo[0], k))))
    return methods


def choose_combination(setup: ScalingSetup, clf, weak, k: int) -> dict:
    """(e): of top-k (each of ``dev_top_k``) then (a), paired pruning or a tree, the combination with the highest
    live accuracy on ``n_dev`` dev images of the ``k`` classes among those spending at most ``COST_SHARE`` of
    (a)'s evaluations per image (fewer evaluations break ties; with none that cheap, the cheapest of the most
    accurate)."""
    dev = load_embedded(setup.dev)
    labels = dev["label"]
    dev = dev.select([i for i in stratified_order(labels, seed=setup.seed) if labels[i] < k][:setup.n_dev])
    conds = read_prompt_file(embedded_prompt_file(setup.dataset.format(k=k)))
    weak_scores = weak.classify(list(dev["image"]), conds).class_scores
    schedules, _ = schedules_for(setup, clf, conds, class_groups_of(setup.dataset, k))
    budget = COST_SHARE * REFERENCE_TIMESTEPS * conds.n_classes
    tried = []
    for top_k in setup.dev_top_k:
        candidates = top_k_candidates(weak_scores, min(top_k, conds.n_classes))
        for label, schedule in schedules.items():
            live = classify_live(clf, dev, len(dev), schedule, candidates, prompts=conds, seed=setup.seed,
                                 batch_size=setup.batch_size)
            tried.append({"top_k": top_k, "then": label, "dev_accuracy": live["accuracy"],
                          "dev_evaluations_per_image": float(np.mean(live["evaluations"]))})
    within = [t for t in tried if t["dev_evaluations_per_image"] <= budget]
    best = max(within or tried, key=lambda t: (t["dev_accuracy"], -t["dev_evaluations_per_image"]))
    return {"dev": setup.dev, "n_dev": len(dev), "classes": k, "budget_evaluations_per_image": budget,
            "tried": tried, "chosen": best, "within_budget": bool(within)}


def log_log_slope(curve: list[dict]) -> float:
    """The least-squares slope of log(evaluations per image) against log(classes) over one method's records."""
    x = np.log([r["classes"] for r in curve])
    y = np.log([r["evaluations_per_image"] for r in curve])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def slopes_within_bound(results: list[dict], margin: float = MARGIN) -> dict:
    """{method: fitted log-log slope of evaluations per image against classes}, only for methods whose lower 95%
    bound of the difference to (a) is at least ``-margin`` at every count (a cheap method that loses accuracy has
    no slope worth reporting)."""
    slopes = {}
    for label in dict.fromkeys(r["method"] for r in results):
        curve = [r for r in results if r["method"] == label]
        if len(curve) > 1 and all(r["difference_ci"][0] >= -margin for r in curve):
            slopes[label] = log_log_slope(curve)
    return slopes


def measure(clf, weak, setup: ScalingSetup = ScalingSetup(), cache=None, progress: bool = True) -> dict:
    """The curve: one record per (class count, method) under ``results``, the chosen combination, the slopes within
    the bound, and the scoring rate of the evaluations made now (errors read back from ``cache`` are not counted)."""
    counts = setup.classes
    T = clf.adapter.num_train_timesteps
    plan = even_plan(setup.grid, T)
    torch.manual_seed(setup.seed)

    def scored(data, conds):
        started = time.perf_counter()
        errors = score_dataset(clf, data, plan, conds, seed=setup.seed, batch_size=setup.batch_size, cache=cache,
                               progress=progress)
        made = errors.errors.size - errors.meta["cached_samples"] * len(conds)
        return errors, time.perf_counter() - started, made

    problems = {}  # k -> (errors, conds, data, weak scores, weak seconds per image)
    scoring_seconds, n_scored = 0.0, 0
    if setup.per_count:
        for k in counts:
            data, conds = open_count(setup, clf, k)
            errors, seconds, made = scored(data, conds)
            started = time.perf_counter()
            weak_scores = weak.classify(list(data["image"]), conds).class_scores
            problems[k] = (errors, conds, data, weak_scores, (time.perf_counter() - started) / len(data))
            scoring_seconds, n_scored = scoring_seconds + seconds, n_scored + made
    else:
        _, data, conds = open_experiment(clf, setup.dataset, n_images=setup.n_images, shuffle_seed=setup.seed)
        errors, scoring_seconds, n_scored = scored(data, conds)
        started = time.perf_counter()
        weak_all = weak.classify(list(data["image"]), conds).class_scores
        weak_seconds = (time.perf_counter() - started) / len(data)
        order = np.random.default_rng(setup.seed).permutation(conds.n_classes)  # nested: prefixes of one order
        for k in counts:
            subset, sub_conds, _, sub_scores, images = class_subset(errors, conds, weak_all, np.sort(order[:k]))
            problems[k] = (subset, sub_conds, data.select(images.tolist()), sub_scores, weak_seconds)

    largest = counts[-1]
    selection = choose_combination(setup, clf, weak, largest) if setup.per_count else None
    combo = None if selection is None else (selection["chosen"]["top_k"], selection["chosen"]["then"])
    results, partner = [], []
    for k in counts:
        errors, conds, data, weak_scores, weak_seconds = problems[k]
        schedules, tree_seconds = schedules_for(setup, clf, conds, class_groups_of(setup.dataset, k)
                                                if setup.per_count else None)
        live = LiveRun(clf, data, min(setup.n_live, len(data)), conds, setup.seed, setup.batch_size) \
            if k == largest and setup.n_live else None
        table, right = compare_methods(errors, setup.grid, [REFERENCE_TIMESTEPS],
                                       methods_for(setup, schedules, weak_scores, combo), T, live=live)
        reference = right[REFERENCE]
        for row in table.to_dict("records"):
            method, seconds = row["method"], row["seconds_per_image"]
            difference, difference_ci = _paired_difference(right[method], reference)
            results.append({
                "classes": k, "method": "(a) " + method if method == REFERENCE else method,
                "n_images": int(len(reference)), "accuracy": round(float(row["accuracy"]), 4),
                "accuracy_ci": [round(row["ci_low"], 4), round(row["ci_high"], 4)],
                "evaluations_per_image": round(float(row["evaluations_per_image"]), 1),
                "share_of_reference": round(float(row["evaluations_per_image"]) / (REFERENCE_TIMESTEPS * len(conds)),
                                            4),
                "seconds_per_image": None if seconds is None or np.isnan(seconds) else round(float(seconds), 3),
                "live_equals_replay": row["live equals replay"],
                "correct": right[method].astype(int).tolist(),
                "only_method_right": int((right[method] & ~reference).sum()),
                "only_reference_right": int((~right[method] & reference).sum()),
                "difference_to_a": difference, "difference_ci": difference_ci,
                "tree_seconds": next((v for label, v in tree_seconds.items() if label in method), None),
                "contrastive_seconds_per_image": round(weak_seconds, 4) if "top-" in method else None})
        best = next((v for method, v in right.items() if method.startswith("(e)")), None)
        partner.append(partner_alone(k, weak_scores.argmax(1) == errors.labels, reference, best, weak_seconds))
    device = f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    return {"device": device, "setup": asdict(setup), "scoring_seconds": round(scoring_seconds, 1),
            "evals_per_second": round(n_scored / scoring_seconds, 1) if n_scored and scoring_seconds > 1
            else None,  # of the evaluations made in this run (none when every error was read back)
            "combination": selection, "results": results, "partner_alone": partner,
            "log_log_slopes_within_bound": slopes_within_bound(results)}


def _paired_difference(first: np.ndarray, second: np.ndarray) -> tuple[float, list[float]]:
    """first - second in accuracy, with its Agresti-Min 95% interval."""
    d, se, z = verdicts.agresti_min(int((first & ~second).sum()), int((~first & second).sum()), len(first))
    return round(float(first.mean() - second.mean()), 4), [round(d - z * se, 4), round(d + z * se, 4)]


def partner_alone(k: int, right: np.ndarray, reference: np.ndarray, best: np.ndarray | None,
                  seconds: float) -> dict:
    """The contrastive partner classifying by itself (its top 1, no denoiser call) at ``k`` classes, against (a)
    and against (e): what a combination is worth beside the model that pre-prunes for it. A partner more accurate
    than (a) makes (e) look good against (a) for its own sake."""
    low, high = clopper_pearson(int(right.sum()), len(right))
    to_a, to_a_ci = _paired_difference(right, reference)
    record = {"classes": k, "n_images": int(len(right)), "accuracy": round(float(right.mean()), 4),
              "accuracy_ci": [round(low, 4), round(high, 4)], "difference_to_a": to_a, "difference_ci": to_a_ci,
              "seconds_per_image": round(seconds, 4)}
    if best is not None:
        record["e_minus_partner"], record["e_minus_partner_ci"] = _paired_difference(best, right)
    return record


def partner_summary(report: dict) -> str:
    """One sentence on the contrastive partner alone at the largest count, beside (a) and (e)."""
    p = max(report.get("partner_alone", []), key=lambda r: r["classes"], default=None)
    if p is None:
        return "The partner alone was not measured."
    pts = lambda v: f"{100 * v:+.1f}"
    text = (f"At {p['classes']} classes the contrastive partner alone (its top 1, no denoiser call) gets "
            f"{100 * p['accuracy']:.1f}% [{100 * p['accuracy_ci'][0]:.1f}, {100 * p['accuracy_ci'][1]:.1f}], "
            f"{pts(p['difference_to_a'])} points against (a) [{pts(p['difference_ci'][0])}, "
            f"{pts(p['difference_ci'][1])}]")
    if "e_minus_partner" in p:
        lo, hi = p["e_minus_partner_ci"]
        text += f"; (e) minus the partner: {pts(p['e_minus_partner'])} points [{pts(lo)}, {pts(hi)}]"
    return text + "."


def comparison_label(k: int) -> str:
    return f"best combination vs {REFERENCE}, {k} classes"


def _at_largest(report: dict) -> tuple[int, dict]:
    """(the largest class count of a report, {method letter "(a)" ... "(e)": its record at that count})."""
    k = max(r["classes"] for r in report["results"])
    return k, {r["method"].split(" ")[0]: r for r in report["results"] if r["classes"] == k}


def claim_outcomes(report: dict) -> dict:
    """{comparison label: ((e)'s per-image correctness, (a)'s)} at the largest class count: what the book's
    class-scaling claim tests (``dclib.claims.CLAIMS["class_scaling"]``)."""
    k, at_k = _at_largest(report)
    if "(e)" not in at_k:
        raise InputError("the class-scaling claim tests the best combination (e), which is chosen on a dev split: "
                         "measure a '{k}' dataset with one")
    return {comparison_label(k): (np.array(at_k["(e)"]["correct"], bool), np.array(at_k["(a)"]["correct"], bool))}


def targets(report: dict) -> dict:
    """The many-class targets, read off a report at its largest class count: (e)'s share of the reference's
    evaluations (at most ``COST_SHARE``), its live seconds per image against the reference's (at least 10x fewer),
    the 95% lower bound of its accuracy difference (at least ``-MARGIN``), and its log-log slope of evaluations
    against classes (below 0.5; None where some count misses the accuracy bound)."""
    k, at_k = _at_largest(report)
    best, reference = at_k.get("(e)"), at_k["(a)"]
    if best is None:
        return {}
    speedup = (reference["seconds_per_image"] / best["seconds_per_image"]
               if reference["seconds_per_image"] and best["seconds_per_image"] else None)
    slope = report["log_log_slopes_within_bound"].get(best["method"])
    return {"classes": k, "method": best["method"], "evaluations_per_image": best["evaluations_per_image"],
            "share_of_reference": best["share_of_reference"],
            "share_met": bool(best["share_of_reference"] <= COST_SHARE),
            "seconds_speedup": None if speedup is None else round(float(speedup), 1),
            "speedup_met": None if speedup is None else bool(speedup >= 10),
            "difference_low": best["difference_ci"][0], "bound_met": bool(best["difference_ci"][0] >= -MARGIN),
            "slope": slope, "slope_met": None if slope is None else bool(slope < 0.5)}


def summary(report: dict) -> str:
    """One sentence for a verdict's "ours": the best combination's share of the reference's evaluations at the
    largest count and its log-log slope (live seconds are left out: they differ from run to run)."""
    t = targets(report)
    if not t:
        return "No best combination was chosen (no dev split)."
    slope = (f"log-log slope of its evaluations against classes {t['slope']:.2f}" if t["slope"] is not None else
             "no slope reported: at some class count its accuracy interval reaches below the margin")
    return (f"At {t['classes']} classes, {t['method']}: {100 * t['share_of_reference']:.1f}% of the reference's "
            f"evaluations, accuracy difference at least {100 * t['difference_low']:.1f} points (95% lower bound); "
            f"{slope}.")


def paper_evaluations_per_image(dataset: str = "imagenet") -> float:
    """Table 6: the denoiser evaluations per image of the paper's adaptive schedule for ``dataset``."""
    return float(paper_table("table6_adaptive_schedules").set_index("dataset").total_evaluations[dataset])


def paper_calls_per_second(dataset: str = "imagenet") -> float:
    """The paper's own rate of denoiser calls (Stable Diffusion 2.0 at 512 px on an RTX 3090): Table 6's evaluations
    per image of ``dataset``'s adaptive schedule over Table 7's seconds per image (ImageNet: 100,000 in 1,000 s)."""
    seconds = paper_cell("table7_inference_time", dataset, row="Diffusion Classifier seconds per image (RTX 3090)")
    return paper_evaluations_per_image(dataset) / seconds


def extrapolate(report: dict, classes: int = 1000, calls_per_second: float | None = None,
                method: str | None = None) -> dict:
    """What a method would spend per image at ``classes`` classes if its evaluations kept growing with the log-log
    slope fitted on the measured counts, E(K) = E(k_max) (K / k_max)^slope, beside the reference's 25 K and the
    paper's own ImageNet schedule (Table 6); seconds at ``calls_per_second`` (default: the paper's rate,
    :func:`paper_calls_per_second`). An extrapolation from the measured counts, not a measurement.

    ``method`` None: the best combination (e), and only with the slope the targets report (empty when a count
    missed the accuracy bound). A method's letter (``"(b)"``) or label: that method's curve whatever its accuracy,
    with ``accuracy_kept`` saying whether it met the bound at every count (a cost without the accuracy is no
    recommendation)."""
    if method is None:
        t = targets(report)
        if not t or t["slope"] is None:
            return {}
        label, k, calls_at_k, slope, kept = t["method"], t["classes"], t["evaluations_per_image"], t["slope"], True
    else:
        curve = sorted((r for r in report["results"] if r["method"] == method or r["method"].split(" ")[0] == method),
                       key=lambda r: r["classes"])
        if len({r["method"] for r in curve}) != 1 or len(curve) < 2:
            raise InputError(f"extrapolate: {method!r} names no single method measured at two or more class counts")
        label, k, calls_at_k = curve[-1]["method"], curve[-1]["classes"], curve[-1]["evaluations_per_image"]
        slope = log_log_slope(curve)
        kept = label in report["log_log_slopes_within_bound"]
    rate = paper_calls_per_second() if calls_per_second is None else float(calls_per_second)
    calls = calls_at_k * (classes / k) ** slope
    paper_schedule = paper_evaluations_per_image("imagenet")
    return {"classes": classes, "method": label, "from_classes": k, "slope": slope, "accuracy_kept": kept,
            "evaluations_per_image": round(calls), "reference_evaluations_per_image": REFERENCE_TIMESTEPS * classes,
            "paper_schedule_evaluations_per_image": round(paper_schedule), "calls_per_second": round(rate, 1),
            "seconds_per_image": round(calls / rate, 1),
            "paper_schedule_seconds_per_image": round(paper_schedule / rate, 1)}
