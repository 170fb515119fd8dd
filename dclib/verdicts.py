"""One verdict procedure for every reproduction claim of the book.

A claim (``dclib.claims.CLAIMS``) is registered before any result: the paper's words, the comparisons, the
direction the paper predicts, the statistic and alpha. A page shows that registration, runs its experiment and
hands the per-image outcomes to the claim, which returns one of five outcomes:

* **reproduces**: significant in the paper's direction. A claim made of several comparisons ("w = 0 beats every
  other w") needs every one of them: an intersection-union test, which keeps the level alpha without correction.
* **contradicted**: at least one comparison significant against the paper, after Holm's correction over the
  claim's comparisons (so the chance of calling a true claim contradicted stays at most alpha).
* **paper's effect excluded** (only for a claim registered with the effect it is powered for, and not for a
  non-inferiority claim, which is its margin): neither of the above, but some comparison's 95% interval lies
  wholly below the registered effect. The paper's effect is ruled
  out on this model and task although the direction is not significantly reversed: a finding about this setting,
  not a verdict on the paper.
* **not detected**: none of these. It comes with the smallest effect the sample could have detected (80% power at
  alpha) and, for a registered effect, the power this sample had for it and the n that 80% would need, so a
  reader sees whether the test could have found the paper's effect.
* **not testable here**: every comparison was left out by the claim's validity gate (:func:`validity_gate`: the
  classifier the claim is about is not above chance on that task, so the task cannot test it). A gate that leaves
  out only some comparisons narrows the claim to the rest, and the verdict says which were left out.

Power and sample size (:func:`mcnemar_power`, :func:`mcnemar_n`, :func:`binomial_n`, :func:`noninferiority_n`)
use the normal approximations a registration plans with; :func:`noninferiority_reachable` says whether a
non-inferiority design can succeed at all at its n (with no discordant image, the Agresti-Min interval still has
half-width z / (n + 2): a 1-point margin needs n >= 194 before any data can establish it).

The statistics, each on paired per-image outcomes (the same images, the same (t, eps) samples):

* ``mcnemar``: exact McNemar test on the images one setting gets right and the other wrong; effect = accuracy
  difference, with its Agresti-Min 95% interval beside it.
* ``trend``: a monotone claim over ordered settings (training checkpoints). Page's test for binary outcomes: the
  statistic is sum_k c_k acc_k with centred ranks c_k, its null distribution that of permuting each image's
  outcomes across the settings (exact variance, normal approximation); effect = the least-squares change in
  accuracy from the first setting to the last.
* ``noninferiority``: "keeps accuracy" claims (adaptive evaluation). The paired accuracy difference's 95%
  interval (Agresti-Min adjusted Wald) must lie above ``-margin``; contradicted when it lies below.
* ``binomial``: a rate against a fixed chance level (exact binomial test), e.g. how often the true class's
  reconstruction is the closest.

A comparison a run cannot test at all (a trend over fewer than three settings, e.g. two models given to the
model-versions page) enters as :func:`untestable`: p = 1 and no effect, so it can never count for or against the
paper; the claim comes out *not detected*, and the verdict's sentence gives the reason instead of a detectable effect.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from .errors import InputError

EXCLUDED = "paper's effect excluded"
NOT_TESTABLE = "not testable here"
OUTCOMES = ("reproduces", "contradicted", EXCLUDED, "not detected", NOT_TESTABLE)
POWER = 0.8
TREND_MIN_SETTINGS = 3  # Page's trend test needs at least this many ordered settings
STATISTICS = ("mcnemar", "trend", "noninferiority", "binomial")


def correctness(x) -> np.ndarray:
    """Per-image correctness: an ErrorSet (predictions == labels) or any boolean array."""
    if hasattr(x, "predictions") and hasattr(x, "labels"):
        return np.asarray(x.predictions() == x.labels, bool)
    return np.asarray(x, bool)


def _z(p: float) -> float:
    return float(stats.norm.ppf(p))


@dataclass
class Comparison:
    """One tested comparison of a claim. ``effect`` is signed so that positive is the paper's direction."""

    label: str
    statistic: str
    n: int
    effect: float
    p_value: float
    detectable: float  # smallest |effect| detectable at POWER (in the effect's units)
    # 95% interval where one is computed: of the effect, or for a non-inferiority comparison of the accuracy
    # difference (its effect is that difference plus the margin; :func:`difference` gives what tables show)
    interval: tuple[float, float] | None = None
    counts: dict = field(default_factory=dict)
    p_against: float | None = None  # for a one-sided test: p of "significantly against the paper"; else p_value
    direction: int = 0  # +1 significant for the paper, -1 significant against it, 0 neither (set by decide)
    reason: str = ""  # why the comparison could not be tested (:func:`untestable`); "" for a tested one
    #: the effect the claim is powered for (the paper's own where it gives one), in the units of ``interval``:
    #: accuracy difference, or rate minus chance; None when the claim registers none
    registered: float | None = None
    power: float | None = None  # power at ``registered`` with this n and the observed discordance
    n_needed: int | None = None  # images that 80% power at ``registered`` would need
    excluded: bool = False  # the 95% interval lies wholly below ``registered`` (set by decide)
    gated: bool = False  # left out by the claim's validity gate (:func:`validity_gate`): says nothing about the claim


def difference(effect: float, counts: dict | None) -> float:
    """The number a reader compares with a comparison's interval: its effect, except for a non-inferiority
    comparison, whose effect is the accuracy difference plus the margin (positive: within it) and whose interval
    is of the difference; there the difference, shown beside the margin."""
    margin = (counts or {}).get("margin")
    return effect - float(margin) if margin is not None else effect


def _paired(label: str, first, second) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' per-image correctness, refused unless they cover the same, non-empty list of images."""
    a, b = correctness(first), correctness(second)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise InputError(f"{label}: paired comparisons need the same, non-empty list of images on both sides")
    return a, b


def agresti_min(only_a: int, only_b: int, n: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """(difference, its standard error, z) of the paired accuracy difference by Agresti & Min (2005): 0.5 added to
    each cell of the paired 2x2 table, so a sample with few or no discordant images still has an interval as wide
    as the data allow (a bootstrap of the per-image differences collapses to a point when none is discordant)."""
    a, b, n_adj = only_a + 0.5, only_b + 0.5, n + 2
    d = (a - b) / n_adj
    return d, float(np.sqrt(max((a + b) / n_adj - d ** 2, 1e-12) / n_adj)), _z(1 - alpha / 2)


def mcnemar(label: str, better, worse, alpha: float = 0.05) -> Comparison:
    """The paper predicts ``better`` is more accurate than ``worse`` on the same images. Exact McNemar p; the
    difference's 95% interval by :func:`agresti_min`."""
    a, b = _paired(label, better, worse)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    # Discordant pairs needed before the exact test can reject at all: 2 * 0.5**k < alpha.
    k_min = int(np.ceil(np.log2(2 / alpha)))
    discordant = max(only_a + only_b, k_min) / n
    detectable = (_z(1 - alpha / 2) + _z(POWER)) * np.sqrt(discordant / n)
    d, se, z = agresti_min(only_a, only_b, n, alpha)
    return Comparison(label, "exact McNemar", n, float(a.mean() - b.mean()), float(p), float(min(detectable, 1.0)),
                      (float(d - z * se), float(d + z * se)), {"only_better_right": only_a, "only_worse_right": only_b})


def trend(label: str, ordered: Sequence, alpha: float = 0.05) -> Comparison:
    """The paper predicts accuracy rises along ``ordered`` (per-image correctness under each setting, in order)."""
    x = np.stack([correctness(o) for o in ordered], axis=1).astype(float)  # [n, K]
    n, k = x.shape
    if k < TREND_MIN_SETTINGS or not n:
        raise InputError(f"{label}: a trend needs at least {TREND_MIN_SETTINGS} ordered settings and one image")
    c = np.arange(k) - (k - 1) / 2
    acc = x.mean(0)
    s = float(c @ acc)
    m = x.sum(1)
    # Variance of sum_k c_k x_ik when image i's outcomes are permuted across the settings at random.
    var = float((m * (k - m)).sum() / (k * (k - 1)) * (c @ c) / n ** 2)
    to_effect = (k - 1) / float(c @ c)  # statistic -> fitted change from the first setting to the last
    if var == 0:
        p, detectable = 1.0, np.inf
    else:
        p = float(2 * stats.norm.sf(abs(s) / np.sqrt(var)))
        detectable = (_z(1 - alpha / 2) + _z(POWER)) * np.sqrt(var) * to_effect
    return Comparison(label, "Page's trend test", n, s * to_effect, p, float(detectable), None,
                      {"accuracies": [round(float(v), 4) for v in acc]})


def untestable(label: str, statistic: str, n: int, reason: str, counts: dict | None = None) -> Comparison:
    """A comparison this run cannot test (``reason``, one sentence): p = 1, no effect (NaN) and nothing
    detectable (inf), so :func:`decide` can never count it for or against the paper."""
    return Comparison(label, statistic, n, float("nan"), 1.0, float("inf"), None, dict(counts or {}),
                      reason=reason)


def validity_gate(c: Comparison, subject, chance: float, alpha: float = 0.05) -> Comparison:
    """``c`` unchanged if the classifier the claim is about (per-image correctness ``subject``) is above ``chance``
    on this task by a one-sided exact binomial test at ``alpha``; else an :func:`untestable` comparison, marked
    ``gated``, that says why and keeps the numbers it would have had. A task on which the classifier is at chance
    (a model that ignores the words telling its classes apart) cannot test a claim about that classifier."""
    hits = correctness(subject)
    test = stats.binomtest(int(hits.sum()), len(hits), chance, alternative="greater")
    if test.pvalue < alpha:
        return c
    gated = untestable(c.label, c.statistic, c.n,
                       f"{c.label}: the classifier is not above chance on this task ({hits.mean():.0%} against "
                       f"{chance:.0%}, one-sided binomial p = {test.pvalue:.2g})",
                       {**c.counts, "gate_accuracy": round(float(hits.mean()), 4), "gate_chance": chance,
                        "gate_p": float(test.pvalue), "effect_if_tested": c.effect})
    gated.gated = True
    return gated


def trend_if_testable(label: str, ordered: Sequence, alpha: float = 0.05) -> Comparison:
    """:func:`trend` when ``ordered`` holds at least :data:`TREND_MIN_SETTINGS` settings; with fewer (two models
    given), an :func:`untestable` comparison that keeps each setting's accuracy and says why."""
    if len(ordered) >= TREND_MIN_SETTINGS:
        return trend(label, ordered, alpha)
    x = [correctness(o) for o in ordered]
    return untestable(label, "Page's trend test", len(x[0]) if x else 0,
                      f"Page's trend test needs at least {TREND_MIN_SETTINGS} ordered settings, and this run has "
                      f"{len(x)}", {"accuracies": [round(float(v.mean()), 4) if len(v) else None for v in x]})


def noninferiority(label: str, new, reference, margin: float, alpha: float = 0.05) -> Comparison:
    """The paper predicts ``new`` loses at most ``margin`` accuracy against ``reference`` on the same images.

    Effect = accuracy(new) - accuracy(reference) + margin (positive: within the margin); the difference's interval by
    :func:`agresti_min`, so a sample with no discordant images still has width.
    ``p_value`` tests "within the margin", ``p_against`` "worse than the margin"; each is the one-sided p
    doubled, so that p < alpha exactly when the two-sided (1 - alpha) interval clears -margin, as for the
    two-sided tests.
    """
    a, b = _paired(label, new, reference)
    if not 0 <= margin < 1:
        raise InputError(f"{label}: the margin must be in [0, 1), got {margin}")
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    d, se, z = agresti_min(only_a, only_b, n, alpha)
    # Smallest margin this sample could establish at POWER if the true difference were zero.
    detectable = (z + _z(POWER)) * np.sqrt((only_a + only_b + 1) / (n + 2)) / np.sqrt(n + 2)
    return Comparison(label, f"non-inferiority (margin {100 * margin:g} points)", n,
                      float(a.mean() - b.mean() + margin), float(min(1.0, 2 * stats.norm.sf((d + margin) / se))),
                      float(detectable), (float(d - z * se), float(d + z * se)),
                      {"only_new_right": only_a, "only_reference_right": only_b, "margin": float(margin)},
                      p_against=float(min(1.0, 2 * stats.norm.cdf((d + margin) / se))))


def binomial(label: str, hits, chance: float, alpha: float = 0.05) -> Comparison:
    """The paper predicts the rate of ``hits`` (per-item booleans) is above ``chance``."""
    h = correctness(hits)
    n, k = len(h), int(h.sum())
    if not n or not 0 < chance < 1:
        raise InputError(f"{label}: needs at least one item and a chance level in (0, 1)")
    test = stats.binomtest(k, n, chance)
    p, ci = float(test.pvalue), test.proportion_ci(0.95, method="exact")
    detectable = (_z(1 - alpha / 2) + _z(POWER)) * np.sqrt(chance * (1 - chance) / n)
    return Comparison(label, "exact binomial test", n, k / n - chance, p, float(detectable),
                      (float(ci.low - chance), float(ci.high - chance)), {"hits": k, "chance": chance})


# ------------------------------------------------------------------------------------------ power
def mcnemar_power(effect: float, discordance: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided McNemar test to detect an accuracy difference ``effect`` among ``n`` paired images
    when a fraction ``discordance`` of them is discordant (normal approximation, Connor 1987)."""
    effect, psi = abs(float(effect)), float(discordance)
    if n <= 0 or effect <= 0 or psi <= 0:
        return 0.0
    psi = max(psi, effect)  # at least the effect's own discordant images
    spread = np.sqrt(max(psi - effect ** 2, 1e-12))
    return float(stats.norm.cdf((effect * np.sqrt(n) - _z(1 - alpha / 2) * np.sqrt(psi)) / spread))


def mcnemar_n(effect: float, discordance: float, power: float = POWER, alpha: float = 0.05) -> int:
    """Paired images the McNemar test needs for ``power`` at ``effect`` with ``discordance`` (Connor 1987): at 5%
    discordance, 0.6 points need about 11,000 images."""
    effect, psi = abs(float(effect)), max(float(discordance), abs(float(effect)))
    if effect <= 0:
        return int(1e9)
    root = _z(1 - alpha / 2) * np.sqrt(psi) + _z(power) * np.sqrt(max(psi - effect ** 2, 0.0))
    return int(np.ceil((root / effect) ** 2))


def binomial_n(effect: float, chance: float, power: float = POWER, alpha: float = 0.05) -> int:
    """Items the two-sided binomial test against ``chance`` needs for ``power`` when the true rate is
    ``chance + effect``."""
    p1 = min(max(chance + float(effect), 1e-9), 1 - 1e-9)
    if effect == 0:
        return int(1e9)
    root = _z(1 - alpha / 2) * np.sqrt(chance * (1 - chance)) + _z(power) * np.sqrt(p1 * (1 - p1))
    return int(np.ceil((root / abs(effect)) ** 2))


def binomial_power(effect: float, chance: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided binomial test against ``chance`` at true rate ``chance + effect`` (normal approx.)."""
    p1 = min(max(chance + float(effect), 1e-9), 1 - 1e-9)
    if n <= 0 or effect == 0:
        return 0.0
    shift = abs(effect) * np.sqrt(n) - _z(1 - alpha / 2) * np.sqrt(chance * (1 - chance))
    return float(stats.norm.cdf(shift / np.sqrt(p1 * (1 - p1))))


def noninferiority_n(margin: float, discordance: float, difference: float = 0.0, power: float = POWER,
                     alpha: float = 0.05) -> int:
    """Paired images a non-inferiority test at ``margin`` needs for ``power`` when the true difference is
    ``difference`` (0: no loss) and a fraction ``discordance`` is discordant; never fewer than
    :func:`noninferiority_reachable` allows."""
    gap = float(difference) + float(margin)
    if gap <= 0:
        return int(1e9)
    psi = max(float(discordance), abs(float(difference)))
    n = int(np.ceil(((_z(1 - alpha / 2) + _z(power)) ** 2) * max(psi - difference ** 2, 0.0) / gap ** 2))
    while not noninferiority_reachable(n, margin, alpha):
        n += 1
    return n


def noninferiority_power(margin: float, discordance: float, n: int, difference: float = 0.0,
                         alpha: float = 0.05) -> float:
    """Power of the non-inferiority test at ``margin`` with ``n`` paired images (normal approximation); 0 where
    the design cannot succeed at this n whatever the data (:func:`noninferiority_reachable`)."""
    if n <= 0 or not noninferiority_reachable(n, margin, alpha):
        return 0.0
    psi = max(float(discordance), abs(float(difference)))
    spread = np.sqrt(max(psi - difference ** 2, 1e-12) / n)
    return float(stats.norm.cdf((float(difference) + float(margin)) / spread - _z(1 - alpha / 2)))


def noninferiority_reachable(n: int, margin: float, alpha: float = 0.05) -> bool:
    """Whether a non-inferiority test at ``margin`` can succeed with ``n`` paired images at all: even with no
    discordant image the Agresti-Min interval has half-width z / (n + 2), which must be below the margin."""
    return _z(1 - alpha / 2) / (int(n) + 2) < float(margin)


def with_power(c: Comparison, registered: float | None, alpha: float = 0.05) -> Comparison:
    """``c`` with the registered effect, the power this sample had for it and the n 80% would need, from the
    observed discordance (McNemar, non-inferiority) or the chance rate (binomial). A trend gets neither."""
    c.registered = None if registered is None else float(registered)
    if c.registered is None or c.reason or c.statistic == "Page's trend test":
        return c
    if "McNemar" in c.statistic:
        psi = (c.counts["only_better_right"] + c.counts["only_worse_right"]) / max(c.n, 1)
        c.power, c.n_needed = mcnemar_power(registered, psi, c.n, alpha), mcnemar_n(registered, psi, POWER, alpha)
    elif c.statistic.startswith("non-inferiority"):
        margin = float(c.counts["margin"])
        psi = (c.counts["only_new_right"] + c.counts["only_reference_right"]) / max(c.n, 1)
        c.power = noninferiority_power(margin, psi, c.n, registered, alpha)
        c.n_needed = noninferiority_n(margin, psi, registered, POWER, alpha)
    elif c.statistic == "exact binomial test":
        chance = float(c.counts["chance"])
        c.power = binomial_power(registered, chance, c.n, alpha)
        c.n_needed = binomial_n(registered, chance, POWER, alpha)
    return c


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def decide(comparisons: Sequence[Comparison], alpha: float = 0.05) -> str:
    """The claim's outcome from its comparisons (and each comparison's ``direction``). Comparisons its validity
    gate left out do not count; a claim with none left is *not testable here*."""
    if not comparisons:
        raise InputError("a claim needs at least one comparison")
    comparisons = [c for c in comparisons if not c.gated]
    if not comparisons:
        return NOT_TESTABLE
    against = holm([c.p_value if c.p_against is None else c.p_against for c in comparisons])
    for c, p_against in zip(comparisons, against):
        if c.p_value < alpha and c.effect > 0:
            c.direction = 1
        elif p_against < alpha and c.effect < 0:
            c.direction = -1
        else:
            c.direction = 0
        # A non-inferiority claim is its margin: its registered effect (the difference the paper saw) plans the
        # power, and ruling that difference out says nothing against "loses at most the margin".
        c.excluded = (c.direction == 0 and c.registered is not None and c.interval is not None
                      and c.interval[1] < c.registered and not c.statistic.startswith("non-inferiority"))
    if any(c.direction == -1 for c in comparisons):
        return "contradicted"
    if all(c.direction == 1 for c in comparisons):
        return "reproduces"
    if any(c.excluded for c in comparisons):
        return EXCLUDED
    return "not detected"
