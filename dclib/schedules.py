"""Schedules: how many samples each conditioning is scored on before the decision.

A schedule is anything with the small protocol :class:`EvaluationSchedule`: ``run(score, n_conditionings,
num_train_timesteps)`` asks the ``score(indices, plan)`` callback of :mod:`dclib.decide` for errors stage by stage
and returns a :class:`ScheduleRun` (which reports the pairs it scored); ``max_evaluations`` bounds the work
beforehand; ``str()`` is the spec that :func:`parse_schedule` reads back. Two families:

* :class:`Schedule`, the paper's Algorithm 1 (one stage) and Algorithm 2 (KeepList/TrialList), with the official
  timestep choice;
* :class:`PairedPruning`, statistical pruning in the spirit of Clark & Jaini (2023), with a stated bound on the
  chance of dropping the conditioning whose expected error is lowest;
* :class:`TreeSchedule`, the same paired pruning over a label tree: whole groups first, then their members
  (:mod:`dclib.label_tree` builds trees from groups, parent ids or text embeddings).

:mod:`dclib.decide` runs any of them without knowing which, so the import graph is plan -> decide -> schedules
(-> pruning, which replays schedules on saved errors).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol, runtime_checkable

import ast

import numpy as np
from scipy.stats import t as student_t

from .decide import ScoreFn, run_schedule, run_stages
from .errors import InputError
from .plan import Plan, even_timesteps, strided_positions
from .stats import stratified_paired_t


class ScheduleRun(NamedTuple):
    """What a schedule's run leaves: errors [n_conditionings, n_samples] with NaN where a pruned conditioning
    was not scored, the full plan (columns of ``errors``), the best conditioning, the (conditioning, sample)
    pairs scored, and facts to report with the decision."""

    errors: np.ndarray
    plan: Plan
    best: int
    pairs: int
    facts: dict


@runtime_checkable
class EvaluationSchedule(Protocol):
    """What :func:`dclib.decide.decide` needs of a schedule; any object with these passes :func:`parse_schedule`
    unchanged (its ``str`` is what a run's config records)."""

    n_trials: int

    def run(self, score: ScoreFn, n_conditionings: int, num_train_timesteps: int = 1000) -> ScheduleRun: ...

    def max_evaluations(self, n_conditionings: int) -> int: ...


def parse_schedule(spec, n_trials: int = 1) -> "EvaluationSchedule":
    """``100`` or ``"100"`` -> Algorithm 1 with 100 timesteps; ``"5,1:25,250"`` -> Algorithm 2 with KeepList
    (5, 1) and TrialList (25, 250); ``"paired:100,alpha=0.01"`` -> :class:`PairedPruning`;
    ``"tree:((0,1),(2,3)),n=100"`` -> :class:`TreeSchedule` (``"tree:auto"``, ``"tree:GROUPS.json"`` -> a
    :class:`NamedTree`, resolved against the candidates by ``classify``). A schedule (anything that follows
    :class:`EvaluationSchedule`) passes through unchanged."""
    if isinstance(spec, EvaluationSchedule):
        return spec
    if isinstance(spec, str) and spec.strip().startswith("paired"):
        return PairedPruning.parse(spec, n_trials)
    if isinstance(spec, str) and spec.strip().startswith("tree"):
        return TreeSchedule.parse(spec, n_trials)
    if isinstance(spec, int):
        return Schedule((1,), (spec,), n_trials)
    text = str(spec).strip()
    try:
        if ":" in text:
            keep_text, trials_text = text.split(":")
            keep = tuple(int(v) for v in keep_text.split(",") if v.strip())
            trials = tuple(int(v) for v in trials_text.split(",") if v.strip())
        else:
            keep, trials = (1,), (int(text),)
    except ValueError:
        raise InputError(f"cannot read schedule {spec!r}: use N (evenly spaced timesteps), "
                         "KEEP,...:TRIALS,... such as 5,1:25,250, or paired:N") from None
    return Schedule(keep, trials, n_trials)


# ------------------------------------------------------------------------------------------ Algorithms 1 and 2
@dataclass(frozen=True)
class Schedule:
    """Algorithm 2: after stage i every surviving conditioning has been scored on ``trials[i]`` timesteps
    (times ``n_trials`` noises each) and the ``keep[i]`` best survive. ``Schedule((1,), (100,))`` is
    Algorithm 1 with 100 evenly spaced timesteps."""

    keep: tuple[int, ...]
    trials: tuple[int, ...]
    n_trials: int = 1

    def __post_init__(self):
        if not self.keep or len(self.keep) != len(self.trials):
            raise InputError("a schedule needs as many KeepList entries as TrialList entries "
                             f"(got keep={list(self.keep)}, trials={list(self.trials)})")
        if self.keep[-1] != 1:
            raise InputError(f"the KeepList must end in 1 (got {list(self.keep)})")
        if any(b >= a for a, b in zip(self.keep, self.keep[1:])):
            raise InputError(f"the KeepList must be strictly decreasing (got {list(self.keep)})")
        if any(k < 1 for k in self.keep) or any(n < 1 for n in self.trials):
            raise InputError("KeepList and TrialList entries must be positive integers")
        if any(b <= a for a, b in zip(self.trials, self.trials[1:])):
            raise InputError(f"the TrialList must be strictly increasing (got {list(self.trials)})")
        if self.n_trials < 1:
            raise InputError("n_trials must be >= 1")

    parse = staticmethod(parse_schedule)

    def stage_timesteps(self, num_train_timesteps: int = 1000) -> list[list[int]]:
        """The new timesteps each stage adds, exactly as the official adaptive evaluation picks them.

        All stages draw from the evenly spaced grid of ``max(trials)`` points; stage i takes
        ``trials[i]`` evenly strided points of that grid and evaluates the ones not evaluated yet.
        """
        grid = even_timesteps(max(self.trials), num_train_timesteps)
        done: set[int] = set()
        stages = []
        for n in self.trials:
            chosen = [grid[i] for i in strided_positions(len(grid), n)]
            new = [t for t in chosen if t not in done]
            done.update(new)
            stages.append(new)
        return stages

    def stage_plans(self, num_train_timesteps: int = 1000) -> list[Plan]:
        return [Plan.with_trials(ts, self.n_trials) for ts in self.stage_timesteps(num_train_timesteps)]

    def run(self, score: ScoreFn, n_conditionings: int, num_train_timesteps: int = 1000) -> ScheduleRun:
        errors, plan, best, pairs = run_schedule(score, n_conditionings, self.stage_plans(num_train_timesteps),
                                                 self.keep)
        return ScheduleRun(errors, plan, best, pairs, {})

    def max_evaluations(self, n_conditionings: int) -> int:
        """Denoiser evaluations for one image (no CFG), as Table 6 counts them."""
        total, alive, prev = 0, n_conditionings, 0
        for keep, n in zip(self.keep, self.trials):
            total += alive * (n - prev) * self.n_trials
            alive, prev = min(keep, alive), n
        return total

    def __str__(self) -> str:
        return ",".join(map(str, self.keep)) + ":" + ",".join(map(str, self.trials))


# ------------------------------------------------------------------------------------------ statistical pruning
@dataclass(frozen=True)
class PairedPruning:
    """Drop a conditioning once a paired test on shared noise says it is worse than the current best.

    * The pool is ``n_timesteps`` evenly spaced timesteps (the official grid), cut into ``strata`` contiguous
      bins. Each round adds one not-yet-used timestep from every bin (in a seeded random order within the bin),
      so after ``r`` rounds every bin holds ``r`` samples and the full budget is exactly Algorithm 1 on the grid,
      with the same noise (noise is keyed by (t, repeat)).
    * Every surviving conditioning is scored on the round's samples. Then each one is compared with the current
      best b on the differences d_s = err_c,s - err_b,s over all shared samples. The error level varies by
      orders of magnitude with t, so the test is stratified (:func:`dclib.stats.stratified_paired_t`).
    * c is dropped when the one-sided t statistic exceeds the (1 - alpha / (R (K - 1))) quantile of Student's t
      with S (r - 1) degrees of freedom, R the maximum number of rounds and K the number of conditionings. By a
      union bound over rounds and over which conditioning is the current best, the conditioning with the lowest
      expected error is dropped with probability at most ``alpha`` (under the t approximation).
    * It stops when one conditioning is left or the budget is spent; survivors are then ranked by mean error.
    """

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
        return [Plan.with_trials(ts, self.n_trials) for ts in self.round_timesteps(num_train_timesteps)]

    def max_evaluations(self, n_conditionings: int) -> int:
        return n_conditionings * self.rounds_max * self.strata * self.n_trials

    def sample_strata(self) -> np.ndarray:
        """The stratum of every sample of the full plan, in order (each round lists its timesteps bin by bin)."""
        return np.tile(np.repeat(np.arange(self.strata), self.n_trials), self.rounds_max)

    def critical_value(self, n_conditionings: int, rounds_done: int) -> float:
        comparisons = self.rounds_max * max(n_conditionings - 1, 1)
        return float(student_t.ppf(1.0 - self.alpha / comparisons, df=self.strata * (rounds_done * self.n_trials - 1)))

    def run(self, score: ScoreFn, n_conditionings: int, num_train_timesteps: int = 1000) -> ScheduleRun:
        errors, plan, best, pairs, facts = run_paired_pruning(score, n_conditionings, self, num_train_timesteps)
        return ScheduleRun(errors, plan, best, pairs, {"pruning_rounds": facts["rounds"]})

    def __str__(self) -> str:
        return f"paired:{self.n_timesteps},alpha={self.alpha:g},strata={self.strata}"


def run_paired_pruning(score: ScoreFn, n_conditionings: int, pruning: PairedPruning, num_train_timesteps: int = 1000
                       ) -> tuple[np.ndarray, Plan, int, int, dict]:
    """Run the sequential procedure of :class:`PairedPruning` on the staged engine (:func:`dclib.decide.run_stages`)
    with a ``score(indices, plan) -> errors`` callback: after each round from ``min_rounds`` on, a conditioning
    goes when its stratified paired t against the current best exceeds the critical value.

    Returns (errors [n_cond, n_samples] with NaN where not scored, the full plan, the best conditioning, pairs
    scored, facts: rounds run and the round each conditioning was dropped in).
    """
    plans = pruning.round_plans(num_train_timesteps)
    stratum = pruning.sample_strata()
    dropped_in = np.full(n_conditionings, -1)

    def select(errors: np.ndarray, alive: list[int], n_seen: int, rounds: int) -> list[int]:
        if rounds < pruning.min_rounds:
            return alive
        seen = errors[:, :n_seen]
        best = alive[int(np.argmin(seen[alive].mean(1)))]
        crit = pruning.critical_value(n_conditionings, rounds)
        keep = [c for c in alive if c == best or stratified_paired_t(seen[c] - seen[best], stratum[:n_seen]) <= crit]
        dropped_in[[c for c in alive if c not in keep]] = rounds
        return keep

    errors, full, best, pairs, rounds = run_stages(score, n_conditionings, plans, select, stop_at_one=True)
    return errors, full, best, pairs, {"rounds": rounds, "dropped_in_round": dropped_in.tolist()}


# ------------------------------------------------------------------------------------------ hierarchical pruning
def tree_leaves(node) -> list[int]:
    """The conditioning indices under ``node`` (an int leaf or a tuple of subtrees), in order."""
    return [node] if isinstance(node, int) else [leaf for child in node for leaf in tree_leaves(child)]


def tree_nodes(node) -> int:
    """Nodes of a tree below its root (every group and every leaf)."""
    return 0 if isinstance(node, int) else sum(1 + tree_nodes(child) for child in node)


@dataclass(frozen=True)
class TreeSchedule:
    """Paired pruning over a label tree: drop whole groups of classes first, then descend into the groups left.

    * ``tree`` is nested tuples of conditioning indices: an int is a leaf, a tuple a group of subtrees; every
      conditioning appears once. A group is scored through its representative, its first leaf (the builders of
      :mod:`dclib.label_tree` put the member nearest the group's centre first).
    * Rounds as in :class:`PairedPruning` (its ``n_timesteps``, ``strata``, ``seed``): each adds one timestep per
      stratum of the official grid, the same samples for every node alive, noise keyed by (t, repeat).
    * After each round from ``min_rounds`` on, a node is dropped when the stratified paired t of its representative
      against the best representative alive exceeds the (1 - alpha / (R (N - 1))) quantile of Student's t, R the
      rounds and N the nodes of the tree. By a union bound, over the whole run the node whose representative has
      the lowest expected error among those compared is dropped with probability at most ``alpha``. That the true
      class survives needs, besides, its group's representative to stand for it: measured
      (``benchmarks/class_scaling.py``), not guaranteed.
    * A group descends into its children after ``level_rounds`` rounds at its level, or at once when it is the only
      node alive. Its first child has its representative, so it keeps every sample; the others are scored on every
      sample seen so far as they join (:func:`dclib.decide.run_stages`), so all comparisons stay paired. When the
      budget is spent, every leaf of a group still alive is scored on all samples and the lowest mean error wins.
    * A tree of one level (every leaf a child of the root) is :class:`PairedPruning` exactly.
    """

    tree: tuple
    n_timesteps: int = 100
    strata: int = 5
    alpha: float = 0.01
    min_rounds: int = 2
    level_rounds: int = 3
    n_trials: int = 1
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.tree, int) or not self.tree:
            raise InputError("a label tree needs at least one group of conditionings")
        leaves = tree_leaves(self.tree)
        if sorted(leaves) != list(range(len(leaves))):
            raise InputError("a label tree must hold every conditioning index 0..K-1 exactly once "
                             f"(got {len(leaves)} leaves, {len(set(leaves))} distinct)")
        if self.level_rounds < self.min_rounds:
            raise InputError(f"level_rounds ({self.level_rounds}) must be at least min_rounds ({self.min_rounds})")
        self.rounds  # the round settings are checked there

    @property
    def rounds(self) -> PairedPruning:
        """The rounds (timesteps, strata, alpha, critical values) this tree prunes with."""
        return PairedPruning(self.n_timesteps, self.strata, self.alpha, self.min_rounds, self.n_trials, self.seed)

    @classmethod
    def parse(cls, spec: str, n_trials: int = 1) -> "TreeSchedule | NamedTree":
        """``"tree:((0,1),(2,3))"``, with options after it: ``n=100``, ``alpha=0.01``, ``strata=5``,
        ``level_rounds=3``, ``min_rounds=2``, ``seed=0``. ``"tree:auto"`` or ``"tree:GROUPS.json"`` (same options,
        and ``branching=8`` for ``auto``) name a tree by classes instead: a :class:`NamedTree`."""
        text = str(spec).strip()
        body = text[len("tree"):].lstrip(":")
        if not body.startswith("("):
            source, _, options = body.partition(",")
            return NamedTree(source.strip(), options.strip(), n_trials)
        try:
            depth, end = 0, None
            for i, ch in enumerate(body):
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth == 0:
                    end = i + 1
                    break
            tree = ast.literal_eval(body[:end])
        except (ValueError, SyntaxError, TypeError):
            raise InputError(f"cannot read schedule {spec!r}: use tree:((0,1),(2,3)),n=100,alpha=0.01 (nested "
                             "groups of conditioning indices), tree:auto or tree:GROUPS.json") from None
        return cls(as_tree(tree), **tree_options(body[end:], n_trials))

    def max_evaluations(self, n_conditionings: int) -> int:
        return self.rounds.max_evaluations(n_conditionings)

    def restricted(self, rows) -> "TreeSchedule":
        """The same schedule on the conditionings ``rows`` only (top-k pre-pruning keeps some classes): the other
        leaves leave the tree, the rest are renumbered by their position in ``rows``, and a group left with one
        member is that member."""
        position = {int(r): i for i, r in enumerate(rows)}

        def keep(node):
            if isinstance(node, int):
                return position.get(node)
            children = [k for k in (keep(c) for c in node) if k is not None]
            return tuple(children) if children else None

        tree = keep(self.tree)
        if tree is None:
            raise InputError("none of the label tree's conditionings is among the candidates")
        tree = as_tree(tree)
        return replace(self, tree=(tree,) if isinstance(tree, int) else tree)

    def run(self, score: ScoreFn, n_conditionings: int, num_train_timesteps: int = 1000) -> ScheduleRun:
        rounds = self.rounds
        plans = rounds.round_plans(num_train_timesteps)
        stratum = rounds.sample_strata()
        n_nodes = tree_nodes(self.tree)
        alive = list(self.tree)  # nodes; each scored through its representative, tree_leaves(node)[0]
        at_level, levels = 0, 1

        def select(errors: np.ndarray, reps: list[int], n_seen: int, done: int) -> list[int]:
            nonlocal alive, at_level, levels
            at_level += 1
            if done >= rounds.min_rounds and len(alive) > 1:
                seen = errors[:, :n_seen]
                best = reps[int(np.argmin(seen[reps].mean(1)))]
                crit = rounds.critical_value(n_nodes, done)
                alive = [node for node, r in zip(alive, reps)
                         if r == best or stratified_paired_t(seen[r] - seen[best], stratum[:n_seen]) <= crit]
            groups = [n for n in alive if not isinstance(n, int)]
            if groups and done >= rounds.rounds_max:  # the budget is spent: every leaf left is scored and decides
                alive = [leaf for node in alive for leaf in tree_leaves(node)]
                levels += 1
            elif groups and (len(alive) == 1 or at_level >= self.level_rounds):
                alive = [child for node in alive for child in ((node,) if isinstance(node, int) else node)]
                at_level, levels = 0, levels + 1
            return [tree_leaves(node)[0] for node in alive]

        first = [tree_leaves(node)[0] for node in alive]
        errors, full, best, pairs, done = run_stages(score, n_conditionings, plans, select, stop_at_one=True,
                                                     first=first)
        return ScheduleRun(errors, full, best, pairs, {"pruning_rounds": done, "tree_levels": levels})

    def __str__(self) -> str:
        return (f"tree:{_tree_text(self.tree)},n={self.n_timesteps},alpha={self.alpha:g},strata={self.strata},"
                f"level_rounds={self.level_rounds},min_rounds={self.min_rounds},seed={self.seed}")


TREE_OPTIONS = {"n": "n_timesteps", "alpha": "alpha", "strata": "strata", "level_rounds": "level_rounds",
                "min_rounds": "min_rounds", "seed": "seed"}


def tree_options(text: str, n_trials: int = 1, extra: tuple[str, ...] = ()) -> dict:
    """Keyword arguments of :class:`TreeSchedule` (and ``extra`` names, kept as given) from ``",n=100,alpha=0.01"``."""
    kwargs: dict = {"n_trials": n_trials}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, eq, value = (v.strip() for v in part.partition("="))
        if not eq or (key not in TREE_OPTIONS and key not in extra):
            raise InputError(f"tree schedule: cannot read option {part!r}; options: "
                             f"{', '.join([*TREE_OPTIONS, *extra])} (as name=value)")
        try:
            kwargs[TREE_OPTIONS.get(key, key)] = float(value) if key == "alpha" else int(value)
        except ValueError:
            raise InputError(f"tree schedule: option {key} takes a number, got {value!r}") from None
    return kwargs


@dataclass(frozen=True)
class NamedTree:
    """A tree schedule whose tree is named by classes, not indices: ``tree:auto`` (the classes clustered by their
    prompts' embeddings) or ``tree:GROUPS.json`` (groups of class names). It becomes a :class:`TreeSchedule` once
    the candidates are known: :func:`dclib.label_tree.resolve_schedule`, which ``classify`` and ``evaluate`` call;
    run before that, it says so. Options are checked when it is read."""

    source: str
    options: str = ""
    n_trials: int = 1

    def __post_init__(self):
        if not self.source:
            raise InputError("tree schedule: name a tree: tree:auto, tree:GROUPS.json or tree:((0,1),(2,3))")
        tree_options(self.options, self.n_trials, ("branching",) if self.source == "auto" else ())

    def run(self, score: ScoreFn, n_conditionings: int, num_train_timesteps: int = 1000) -> ScheduleRun:
        raise InputError(f"schedule {self} names its tree by classes: resolve it against the candidates first "
                         "(dclib.label_tree.resolve_schedule; classify and evaluate do)")

    def max_evaluations(self, n_conditionings: int) -> int:  # a tree's bound does not depend on its shape
        kwargs = tree_options(self.options, self.n_trials, ("branching",))
        return PairedPruning(**{k: v for k, v in kwargs.items() if k not in ("branching", "level_rounds")}
                             ).max_evaluations(n_conditionings)

    def __str__(self) -> str:
        return f"tree:{self.source}" + (f",{self.options}" if self.options else "")


def as_tree(node):
    """A label tree in its canonical form: lists (as JSON gives them) become tuples and a group of one subtree is
    that subtree, so equal trees compare and print alike."""
    if isinstance(node, bool) or not isinstance(node, (int, list, tuple)):
        raise InputError(f"a label tree holds conditioning indices and groups of them, not {node!r}")
    if isinstance(node, int):
        return node
    children = tuple(as_tree(child) for child in node)
    return children[0] if len(children) == 1 else children


def _tree_text(node) -> str:
    return str(node) if isinstance(node, int) else "(" + ",".join(_tree_text(c) for c in node) + ")"
