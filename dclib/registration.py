"""How a claim of the paper is registered and tested: :class:`Claim` (the paper's words, the comparisons, the
direction, the statistic, the registered effect and how the sample size is planned), its dated
:class:`Amendment` s, and the :class:`Verdict` a page records. The outcome rule lives in :mod:`dclib.verdicts`,
the same for every claim; the claims themselves are registered in :mod:`dclib.claims`. Nothing here depends on
what the results are.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatch

import pandas as pd

from . import verdicts
from .errors import InputError
from .reporting import current_preset, results_dir

ALPHA = 0.05


@dataclass(frozen=True)
class Amendment:
    """A dated change to a registration, made before the pages that test it were re-run. ``before`` holds the
    claim's fields as they were (``Claim.original`` rebuilds the original registration from it, so a page shows
    the original's outcome beside the amended one); None where the amendment added the claim."""

    date: str
    change: str
    paper: str  # the paper's sentence (or table) the amendment rests on
    reason: str
    before: dict | None


@dataclass(frozen=True)
class Planning:
    """What a registration plans its sample size with: for McNemar and non-inferiority the fraction of discordant
    images, for a binomial test the chance rate; ``source`` says where the number comes from (a pilot on images
    the test does not use, or a stated bound)."""

    rate: float
    source: str


@dataclass(frozen=True)
class Claim:
    key: str
    figure: str
    paper: str  # the paper's claim, in its words where it has them
    paper_setting: str  # the model and data the paper ran it on
    comparisons: str  # what is compared, in which direction
    statistic: str  # one of verdicts.STATISTICS
    narrowed: str = ""  # anything tested more narrowly than the paper states it
    margin: float | None = None  # non-inferiority margin (accuracy, 0-1)
    alpha: float = ALPHA
    #: the effect each comparison is powered for, in the paper's direction and the comparison's units (accuracy
    #: difference; rate minus chance; for non-inferiority the paper's own difference): one number for every
    #: comparison or {comparison label: effect}; the paper's where it gives one, with ``effect_source`` naming it
    effect: float | dict | None = None
    effect_source: str = ""
    #: False where ``effect`` is a smallest effect of interest (the paper gives no number), not the paper's
    paper_effect: bool = True
    #: the comparison labels (fnmatch patterns) of the page's outcomes that this claim tests; None: all of them
    labels: tuple | None = None
    #: validity gate: a comparison counts only where the classifier the claim is about (the first of each pair) is
    #: above chance on its task (:func:`dclib.verdicts.validity_gate`, one-sided binomial test at ``alpha``)
    gate: bool = False
    planning: Planning | None = None  # what the sample size is planned with (:meth:`n_for_power`)
    amendments: tuple = ()  # :class:`Amendment`, oldest first

    def registered_effect(self, label: str) -> float | None:
        """The effect comparison ``label`` is powered for (None: none registered)."""
        if isinstance(self.effect, dict):
            return self.effect.get(label)
        return self.effect

    def effects(self) -> list[float]:
        """Every registered effect (one per comparison label where they differ)."""
        if self.effect is None:
            return []
        return list(self.effect.values()) if isinstance(self.effect, dict) else [self.effect]

    def _n_and_power(self, effect: float, n: int = 0) -> tuple[int, float]:
        """(n for 80% power at ``effect``, power with ``n`` images) at the planning rate."""
        rate, alpha = self.planning.rate, self.alpha
        if self.statistic == "mcnemar":
            return verdicts.mcnemar_n(effect, rate, alpha=alpha), verdicts.mcnemar_power(effect, rate, n, alpha)
        if self.statistic == "noninferiority":
            return (verdicts.noninferiority_n(self.margin, rate, effect, alpha=alpha),
                    verdicts.noninferiority_power(self.margin, rate, n, effect, alpha))
        return verdicts.binomial_n(effect, rate, alpha=alpha), verdicts.binomial_power(effect, rate, n, alpha)

    def n_for_power(self) -> int | None:
        """Images per comparison that 80% power at every registered effect needs, with the planning rate (None:
        no registered effect or no planning rate, or a trend)."""
        if not self.effects() or self.planning is None or self.statistic == "trend":
            return None
        return max(self._n_and_power(e)[0] for e in self.effects())

    def power_at(self, n: int) -> float | None:
        """The least power over the registered effects with ``n`` images per comparison, at the planning rate."""
        if not self.effects() or self.planning is None or self.statistic == "trend":
            return None
        return min(self._n_and_power(e, n)[1] for e in self.effects())

    def sample_size(self, at_most: int) -> int:
        """The n a preset runs: what 80% power needs (:meth:`n_for_power`), or ``at_most`` (the data or the
        budget) where that is fewer; a non-inferiority claim never below the n at which it can succeed at all."""
        needed = self.n_for_power()
        n = int(at_most) if needed is None else min(needed, int(at_most))
        if self.statistic == "noninferiority" and not verdicts.noninferiority_reachable(n, self.margin, self.alpha):
            raise InputError(f"{self.key}: at most {at_most} images cannot establish non-inferiority at a "
                             f"{100 * self.margin:g}-point margin whatever the data; it needs at least "
                             f"{verdicts.noninferiority_n(self.margin, 0.0)}")
        return n

    def original(self) -> "Claim | None":
        """The registration as it stood before its amendments (None: an amendment added the claim)."""
        if not self.amendments:
            return self
        fields = {}
        for a in reversed(self.amendments):
            if a.before is None:
                return None
            fields.update(a.before)
        return replace(self, amendments=(), **fields)

    def preregistration(self) -> str:
        lines = [f"**Claim ({self.figure}).** {self.paper}", "",
                 f"**Paper's setting:** {self.paper_setting}.", "",
                 f"**Pre-registered test:** {self.comparisons}. Statistic: {_STATISTIC_TEXT[self.statistic]}; "
                 f"alpha = {self.alpha}. Outcome: *reproduces* if every comparison is significant in the paper's "
                 "direction, *contradicted* if any is significant against it (Holm-adjusted), else *not "
                 "detected* (with the smallest effect this sample could detect at 80% power)."]
        if self.effect is not None:
            effects = (", ".join(f"{k} {points(v)}" for k, v in self.effect.items()) if isinstance(self.effect, dict)
                       else points(self.effect))
            excluded = "*Paper's effect excluded*" if self.paper_effect else "*Effect of interest excluded*"
            if self.statistic == "noninferiority":  # the claim is the margin; the effect only plans the power
                rule = ("It plans the power (the true difference the test expects); the claim itself is the margin, "
                        "and an interval below minus the margin is *contradicted*.")
            else:
                rule = (f"{excluded} if neither of the first two and a comparison's 95% interval lies wholly below "
                        "its registered effect.")
            lines += ["", f"**Registered effect:** {effects} ({self.effect_source}). {rule} *Not detected* reports "
                          "the power at the registered effect and the n that 80% needs."]
        if self.gate:
            lines += ["", f"**Validity gate:** a comparison counts only where the classifier this claim is about is "
                          f"above chance on its task (one-sided binomial test, alpha = {self.alpha}); one that is not "
                          "reads *not testable here*, and a claim left with none is *not testable here*."]
        needed = self.n_for_power()
        if needed is not None:
            rate = (f"{100 * self.planning.rate:g}% of the images discordant" if self.statistic != "binomial"
                    else f"a chance rate of {100 * self.planning.rate:g}%")
            lines += ["", f"**Sample size:** 80% power at the registered effect needs {needed:,} images per "
                          f"comparison with {rate} ({self.planning.source}); "
                          "the `book` preset runs that many, or what the data and the budget allow, and the verdict "
                          "gives the power it had."]
        if self.narrowed:
            lines += ["", f"**Narrower than the paper:** {self.narrowed}"]
        for a in self.amendments:
            lines += ["", f"**Amendment ({a.date}):** {a.change} *Paper:* {a.paper} *Why:* {a.reason}"]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.preregistration()

    def evaluate(self, outcomes: dict, setting: str, ours: str = "", chance: dict | None = None) -> "Verdict":
        """Test the claim on per-image outcomes, keyed by comparison label:

        * ``mcnemar``: (better, worse), the setting the paper predicts more accurate first;
        * ``noninferiority``: (new, reference), new predicted to lose at most ``margin``;
        * ``trend``: a list of per-setting outcomes in the order the paper predicts rising accuracy;
        * ``binomial``: (hits, chance).

        Outcomes are ErrorSets or boolean per-image arrays; the claim tests the labels its ``labels`` patterns
        name. ``setting`` says what ran (model, data, sizes). ``chance`` ({label: chance rate of the task}) feeds
        the validity gate of a gated claim. The verdict also carries the outcome of the original registration
        (before its amendments) on the same outcomes.
        """
        verdict = self._test(outcomes, setting, ours, chance)
        original = self.original()
        if self.amendments:
            verdict.original_outcome = "not registered" if original is None else \
                original._test(outcomes, setting, ours, chance).outcome
        return verdict

    def _test(self, outcomes: dict, setting: str, ours: str, chance: dict | None) -> "Verdict":
        if self.labels is not None:
            outcomes = {k: v for k, v in outcomes.items() if any(fnmatch(k, pattern) for pattern in self.labels)}
        if not outcomes:
            raise InputError(f"{self.key}: no comparisons to test")
        if self.gate and not set(outcomes) <= set(chance or {}):
            raise InputError(f"{self.key}: a gated claim needs the chance rate of every comparison's task; missing "
                             f"{', '.join(sorted(set(outcomes) - set(chance or {})))}")
        tests = []
        for label, value in outcomes.items():
            if self.statistic == "mcnemar":
                test = verdicts.mcnemar(label, *value, alpha=self.alpha)
            elif self.statistic == "noninferiority":
                test = verdicts.noninferiority(label, *value, margin=self.margin, alpha=self.alpha)
            elif self.statistic == "trend":  # fewer than 3 settings: untestable, so "not detected" with why
                test = verdicts.trend_if_testable(label, value, alpha=self.alpha)
            else:
                test = verdicts.binomial(label, *value, alpha=self.alpha)
            if self.gate:
                test = verdicts.validity_gate(test, value[0], chance[label], self.alpha)
            tests.append(test)
        tests = [verdicts.with_power(t, self.registered_effect(t.label), self.alpha) for t in tests]
        outcome = verdicts.decide(tests, self.alpha)
        return Verdict(self, tests, outcome, setting, ours, current_preset())


_STATISTIC_TEXT = {
    "mcnemar": "exact McNemar test on paired per-image correctness (two-sided), with an Agresti-Min 95% "
               "interval on the accuracy difference",
    "trend": "Page's trend test on paired per-image correctness across the ordered settings (two-sided)",
    "noninferiority": "non-inferiority test on the paired accuracy difference: its 95% interval (Agresti-Min) "
                      "must lie above minus the margin",
    "binomial": "exact binomial test against a fixed rate (two-sided), Clopper-Pearson interval",
}


@dataclass
class Verdict:
    claim: Claim
    comparisons: list[verdicts.Comparison]
    outcome: str
    setting: str
    ours: str = ""
    preset: str = "small"
    original_outcome: str | None = None  # the original registration's outcome on the same data (if amended)

    @property
    def counted(self) -> list[verdicts.Comparison]:
        """The comparisons the outcome rests on: all but those the validity gate left out."""
        return [c for c in self.comparisons if not c.gated]

    @property
    def detectable(self) -> float:
        """The smallest effect the sample could detect in every comparison that did not come out for the paper
        (all of them where all did): the claim needs each one."""
        counted = self.counted or self.comparisons
        open_ = [c.detectable for c in counted if c.direction != 1]
        return max(open_ or [c.detectable for c in counted])

    @property
    def differs(self) -> str:
        text = f"Paper: {self.claim.paper_setting}. Here: {self.setting}."
        return f"{text} {self.claim.narrowed}" if self.claim.narrowed else text

    def sentence(self) -> str:
        gated = [c for c in self.comparisons if c.gated]
        left_out = "" if not gated else (" Left out by the validity gate (not testable here): "
                                         + "; ".join(c.reason for c in gated) + ".")
        if self.outcome == verdicts.NOT_TESTABLE:
            return "**Not testable here**: " + "; ".join(c.reason for c in gated) + "."
        return self._sentence(self.counted) + left_out

    def _sentence(self, comparisons: list) -> str:
        if self.outcome == "reproduces":
            return f"**Reproduces**: every comparison is significant in the paper's direction (alpha = {self.claim.alpha})."
        if self.outcome == "contradicted":
            against = ", ".join(c.label for c in comparisons if c.direction == -1)
            return f"**Contradicted**: significant against the paper for {against} (Holm-adjusted)."
        if self.outcome == verdicts.EXCLUDED:
            ruled_out = "; ".join(f"{c.label}: 95% interval [{points(c.interval[0])}, {points(c.interval[1])}] "
                                  f"below the registered {points(c.registered)}"
                                  for c in comparisons if c.excluded)
            if not self.claim.paper_effect:  # a smallest effect of interest: the paper gave no number to rule out
                return (f"**Effect of interest excluded on this model and task**: {ruled_out}. The direction is not "
                        "significantly reversed; this rules out an effect of the registered size in this setting "
                        "only (the paper gives no number).")
            return (f"**Paper's effect excluded on this model and task**: {ruled_out}. The direction is not "
                    "significantly reversed; this rules out the paper's effect size in this setting only.")
        untested = [c for c in comparisons if c.reason]
        if untested:  # one line: why the test could not run (and what else was not significant)
            missing = ", ".join(c.label for c in comparisons if c.direction != 1 and not c.reason)
            return ("**Not detected**: not testable here: " + "; ".join(c.reason for c in untested) + "."
                    + (f" Not significant for {missing}." if missing else ""))
        missing = ", ".join(c.label for c in comparisons if c.direction != 1)
        powered = [c for c in comparisons if c.direction != 1 and c.power is not None]
        weakest = min(powered, key=lambda c: c.power) if powered else None
        power = "" if weakest is None else (
            f" Power at the registered effect ({points(weakest.registered)} for {weakest.label}): "
            f"{100 * weakest.power:.0f}%" + (f"; 80% would need {weakest.n_needed:,} images." if weakest.power < 0.8
                                             else "."))
        return (f"**Not detected**: not significant for {missing}. This sample could detect effects of at least "
                f"{points(self.detectable)} (80% power).{power}")

    def table(self) -> pd.DataFrame:
        rows = []
        for c in self.comparisons:
            rows.append({"comparison": c.label, "statistic": c.statistic, "n": c.n,
                         "effect (paper's direction)": points(verdicts.difference(c.effect, c.counts)),
                         "95% interval": "" if c.interval is None else f"[{points(c.interval[0])}, {points(c.interval[1])}]",
                         "p": "" if c.reason else f"{c.p_value:.2g}",
                         "detectable at 80%": "" if c.reason else points(c.detectable),
                         **({} if c.registered is None else {
                             "registered effect": points(c.registered),
                             "power there": "" if c.power is None else f"{100 * c.power:.0f}%",
                             "n for 80%": "" if c.n_needed is None else f"{c.n_needed:,}"}),
                         "result": comparison_result(c.reason, c.excluded, c.direction, c.gated)})
        return pd.DataFrame(rows)

    def _repr_markdown_(self) -> str:
        body = [self.sentence(), ""]
        if self.original_outcome is not None:
            body += [f"*Original registration (before the amendments above): {self.original_outcome}.*", ""]
        if self.ours:
            body += [self.ours, ""]
        body += [self.table().to_markdown(index=False), "", f"*Differs from the paper:* {self.differs}"]
        if self.preset != "book":
            body += ["", f"*Preset `{self.preset}`: a smoke run at a small scale, not evidence.*"]
        return "\n".join(body)

    def to_dict(self) -> dict:
        return {"claim": self.claim.key, "figure": self.claim.figure, "paper": self.claim.paper,
                "test": self.claim.comparisons, "statistic": self.claim.statistic, "outcome": self.outcome,
                "detectable": self.detectable, "setting": self.setting, "differs": self.differs,
                "ours": self.ours, "preset": self.preset, "original_outcome": self.original_outcome,
                "amendments": [asdict(a) for a in self.claim.amendments],
                "comparisons": [asdict(c) for c in self.comparisons]}

    def record(self) -> "Verdict":
        """Save for the reproduction-status page (results/verdicts/KEY.json) and return self for display."""
        folder = results_dir() / "verdicts"
        folder.mkdir(exist_ok=True)
        (folder / f"{self.claim.key}.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return self


def comparison_result(reason, excluded: bool, direction: int | None, gated: bool = False) -> str:
    """How one comparison came out, in words (a verdict's table, the scoreboard)."""
    if gated:
        return "gated: classifier at chance"
    if reason:
        return "not testable here"
    if excluded:
        return "paper's effect excluded"
    return {1: "for the paper", -1: "against the paper", 0: "not significant"}.get(direction, "")


def points(x: float) -> str:
    """An accuracy difference (a fraction) in points, as the verdict tables and the scoreboard print it."""
    if x != x:  # NaN: the effect of a comparison that could not be tested
        return "not tested"
    return "inf" if x == float("inf") else f"{100 * x:.1f} pts"
