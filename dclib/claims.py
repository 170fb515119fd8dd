"""The paper's claims, registered before any result, and the verdicts the book's pages record for them.

Each :class:`Claim` states what the paper says (quoted from its text or captions, with the figure or table),
the comparisons a page runs, the direction the paper predicts, the statistic and alpha. A page displays its
claim first, runs its experiment, and passes per-image outcomes to :meth:`Claim.evaluate`; the outcome rule
lives in :mod:`dclib.verdicts`, the same for every claim. Nothing here depends on what the results are.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pandas as pd

from . import verdicts
from .errors import InputError
from .paper import paper_cell, paper_table, text_effect
from .reporting import current_preset, results_dir

ALPHA = 0.05
# Tables 6-7: the largest accuracy loss the paper reports from pruning (CLIP top-20 on Pets, 87.3 -> 86.4),
# rounded up; "keeps accuracy" is tested as "loses at most this much".
KEEPS_ACCURACY_MARGIN = 0.01


# Where the paper gives no number (its figures, a sentence of its text), each comparison is powered for this
# smallest effect of interest instead: ours, stated as ours, not read off the paper.
INTEREST = 0.05
INTEREST_SOURCE = ("the paper gives no number: 5 points of accuracy, the smallest effect of interest registered "
                   "here (not the paper's)")


def paper_gap(name: str, column: str, key: str, better, worse, **where) -> tuple[float, str]:
    """(the paper's accuracy difference better - worse as a fraction, where it comes from) for two rows of a paper
    table told apart by ``key`` (other rows fixed by ``where``)."""
    high, low = (paper_cell(name, column, **where, **{key: v}) for v in (better, worse))
    fixed = "".join(f", {k} {v}" for k, v in where.items())
    return round((high - low) / 100, 6), f"{name} ({column}{fixed}): {better} {high:g} vs {worse} {low:g}"


def noise_sampling_effects() -> tuple[dict, str]:
    """Table 12: N(0, I) against each other noise distribution, one effect per comparison label of the page."""
    table = paper_table("table12_noise_sampling").set_index("noise_distribution").pets_accuracy_10pct_subset
    reference = "eps ~ N(0 I)"
    return ({f"N(0, I) vs {k}": round(float(table[reference] - v) / 100, 6)
             for k, v in table.items() if k != reference},
            f"table12_noise_sampling (Pets 10% subset): N(0, I) {table[reference]:g} against each other row")


def smallest_paper_gap(name: str, key: str, better, others, columns) -> tuple[float, str]:
    """The smallest of the paper's differences ``better`` - each of ``others`` over ``columns`` (datasets or
    categories) of a table: the effect every one of those comparisons at least shows."""
    gap, source = min((paper_gap(name, c, key, better, o) for o in others for c in columns), key=lambda g: g[0])
    return gap, f"{source}, the smallest over {', '.join(map(str, columns))}" + (
        f" and {', '.join(others)}" if len(others) > 1 else "")


def compositional_effects() -> tuple[dict, str]:
    """Table 3: per swap category, Diffusion Classifier's text score minus the better of the two contrastive
    models' (the claim is "better than both")."""
    baselines = ("CLIP ViT-L/14", "OpenCLIP ViT-H/14")
    effects = {f"{c} swaps": smallest_paper_gap("table3_winoground_text_score", "model", "Diffusion Classifier",
                                                baselines, [c])[0] for c in ("object", "relation", "both")}
    return effects, "table3_winoground_text_score: Diffusion Classifier minus the better of CLIP ViT-L/14 and " \
                    "OpenCLIP ViT-H/14 in each category"


def _registered(value_and_source: tuple, paper: bool = True) -> dict:
    return {"effect": value_and_source[0], "effect_source": value_and_source[1], "paper_effect": paper}


_INTEREST = _registered((INTEREST, INTEREST_SOURCE), paper=False)
ZERO_SHOT_DATASETS = ("food", "cifar10", "aircraft", "pets", "flowers", "stl10", "imagenet", "objectnet")


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

    def registered_effect(self, label: str) -> float | None:
        """The effect comparison ``label`` is powered for (None: none registered)."""
        if isinstance(self.effect, dict):
            return self.effect.get(label)
        return self.effect

    def preregistration(self) -> str:
        lines = [f"**Claim ({self.figure}).** {self.paper}", "",
                 f"**Paper's setting:** {self.paper_setting}.", "",
                 f"**Pre-registered test:** {self.comparisons}. Statistic: {_STATISTIC_TEXT[self.statistic]}; "
                 f"alpha = {self.alpha}. Outcome: *reproduces* if every comparison is significant in the paper's "
                 "direction, *contradicted* if any is significant against it (Holm-adjusted), else *not "
                 "detected* (with the smallest effect this sample could detect at 80% power)."]
        if self.effect is not None:
            effects = (", ".join(f"{k} {_points(v)}" for k, v in self.effect.items()) if isinstance(self.effect, dict)
                       else _points(self.effect))
            excluded = "*Paper's effect excluded*" if self.paper_effect else "*Effect of interest excluded*"
            lines += ["", f"**Registered effect:** {effects} ({self.effect_source}). {excluded} if neither of the "
                          "first two and a comparison's 95% interval lies wholly below its registered effect; *not "
                          "detected* then reports the power at the registered effect and the n that 80% needs."]
        if self.narrowed:
            lines += ["", f"**Narrower than the paper:** {self.narrowed}"]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.preregistration()

    def evaluate(self, outcomes: dict, setting: str, ours: str = "") -> "Verdict":
        """Test the claim on per-image outcomes, keyed by comparison label:

        * ``mcnemar``: (better, worse), the setting the paper predicts more accurate first;
        * ``noninferiority``: (new, reference), new predicted to lose at most ``margin``;
        * ``trend``: a list of per-setting outcomes in the order the paper predicts rising accuracy;
        * ``binomial``: (hits, chance).

        Outcomes are ErrorSets or boolean per-image arrays. ``setting`` says what ran (model, data, sizes).
        """
        if not outcomes:
            raise InputError(f"{self.key}: no comparisons to test")
        tests = []
        for label, value in outcomes.items():
            if self.statistic == "mcnemar":
                tests.append(verdicts.mcnemar(label, *value, alpha=self.alpha))
            elif self.statistic == "noninferiority":
                tests.append(verdicts.noninferiority(label, *value, margin=self.margin, alpha=self.alpha))
            elif self.statistic == "trend":  # fewer than 3 settings: untestable, so "not detected" with why
                tests.append(verdicts.trend_if_testable(label, value, alpha=self.alpha))
            else:
                tests.append(verdicts.binomial(label, *value, alpha=self.alpha))
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

    @property
    def detectable(self) -> float:
        """The smallest effect the sample could detect in every comparison that did not come out for the paper
        (all of them where all did): the claim needs each one."""
        open_ = [c.detectable for c in self.comparisons if c.direction != 1]
        return max(open_ or [c.detectable for c in self.comparisons])

    @property
    def differs(self) -> str:
        text = f"Paper: {self.claim.paper_setting}. Here: {self.setting}."
        return f"{text} {self.claim.narrowed}" if self.claim.narrowed else text

    def sentence(self) -> str:
        if self.outcome == "reproduces":
            return f"**Reproduces**: every comparison is significant in the paper's direction (alpha = {self.claim.alpha})."
        if self.outcome == "contradicted":
            against = ", ".join(c.label for c in self.comparisons if c.direction == -1)
            return f"**Contradicted**: significant against the paper for {against} (Holm-adjusted)."
        if self.outcome == verdicts.EXCLUDED:
            ruled_out = "; ".join(f"{c.label}: 95% interval [{_points(c.interval[0])}, {_points(c.interval[1])}] "
                                  f"below the registered {_points(c.registered)}"
                                  for c in self.comparisons if c.excluded)
            if not self.claim.paper_effect:  # a smallest effect of interest: the paper gave no number to rule out
                return (f"**Effect of interest excluded on this model and task**: {ruled_out}. The direction is not "
                        "significantly reversed; this rules out an effect of the registered size in this setting "
                        "only (the paper gives no number).")
            return (f"**Paper's effect excluded on this model and task**: {ruled_out}. The direction is not "
                    "significantly reversed; this rules out the paper's effect size in this setting only.")
        untested = [c for c in self.comparisons if c.reason]
        if untested:  # one line: why the test could not run (and what else was not significant)
            missing = ", ".join(c.label for c in self.comparisons if c.direction != 1 and not c.reason)
            return ("**Not detected**: not testable here: " + "; ".join(c.reason for c in untested) + "."
                    + (f" Not significant for {missing}." if missing else ""))
        missing = ", ".join(c.label for c in self.comparisons if c.direction != 1)
        powered = [c for c in self.comparisons if c.direction != 1 and c.power is not None]
        weakest = min(powered, key=lambda c: c.power) if powered else None
        power = "" if weakest is None else (
            f" Power at the registered effect ({_points(weakest.registered)} for {weakest.label}): "
            f"{100 * weakest.power:.0f}%" + (f"; 80% would need {weakest.n_needed:,} images." if weakest.power < 0.8
                                             else "."))
        return (f"**Not detected**: not significant for {missing}. This sample could detect effects of at least "
                f"{_points(self.detectable)} (80% power).{power}")

    def table(self) -> pd.DataFrame:
        rows = []
        for c in self.comparisons:
            rows.append({"comparison": c.label, "statistic": c.statistic, "n": c.n,
                         "effect (paper's direction)": _points(c.effect),
                         "95% interval": "" if c.interval is None else f"[{_points(c.interval[0])}, {_points(c.interval[1])}]",
                         "p": "" if c.reason else f"{c.p_value:.2g}",
                         "detectable at 80%": "" if c.reason else _points(c.detectable),
                         **({} if c.registered is None else {
                             "registered effect": _points(c.registered),
                             "power there": "" if c.power is None else f"{100 * c.power:.0f}%",
                             "n for 80%": "" if c.n_needed is None else f"{c.n_needed:,}"}),
                         "result": comparison_result(c.reason, c.excluded, c.direction)})
        return pd.DataFrame(rows)

    def _repr_markdown_(self) -> str:
        body = [self.sentence(), ""]
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
                "ours": self.ours, "preset": self.preset,
                "comparisons": [asdict(c) for c in self.comparisons]}

    def record(self) -> "Verdict":
        """Save for the reproduction-status page (results/verdicts/KEY.json) and return self for display."""
        folder = results_dir() / "verdicts"
        folder.mkdir(exist_ok=True)
        (folder / f"{self.claim.key}.json").write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return self


def comparison_result(reason, excluded: bool, direction: int | None) -> str:
    """How one comparison came out, in words (a verdict's table, the scoreboard)."""
    if reason:
        return "not testable here"
    if excluded:
        return "paper's effect excluded"
    return {1: "for the paper", -1: "against the paper", 0: "not significant"}.get(direction, "")


def _points(x: float) -> str:
    if x != x:  # NaN: the effect of a comparison that could not be tested
        return "not tested"
    return "inf" if x == float("inf") else f"{100 * x:.1f} pts"


def recorded_verdicts(folder=None) -> dict[str, dict]:
    """claim key -> the verdict its page recorded (:meth:`Verdict.record`) in ``folder`` (default: this build's
    ``results/PRESET/verdicts``)."""
    folder = folder or results_dir() / "verdicts"
    recorded = {}
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        entry = json.loads(path.read_text())
        if "claim" in entry:
            recorded[entry["claim"]] = entry
    return recorded


def status_table(folder=None) -> pd.DataFrame:
    """Every registered claim with the outcome its page recorded in this build ("not run" where none)."""
    recorded = recorded_verdicts(folder)
    rows = []
    for claim in CLAIMS.values():
        e = recorded.get(claim.key)
        rows.append({"figure": claim.figure, "claim": claim.paper, "test": claim.comparisons,
                     "statistic": claim.statistic,
                     "outcome": e["outcome"] if e else "not run",
                     "smallest detectable effect": _points(e["detectable"]) if e else "",
                     "here": e["setting"] if e else "", "preset": e["preset"] if e else "", "page": claim.key})
    return pd.DataFrame(rows)


def short_claim(text: str, width: int = 64) -> str:
    """The claim's first ``width`` characters, cut at a word (the page holds the full wording)."""
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " ..."


SCOREBOARD_COLUMNS = ["figure", "claim", "comparison", "outcome", "ours", "ci_low", "ci_high", "registered",
                      "paper_effect", "threshold", "threshold_kind", "power", "n_needed", "result"]


def scoreboard(folder=None) -> pd.DataFrame:
    """What the status page shows: one row per comparison of every verdict recorded in this build, in the
    registry's order. Columns: figure, claim (its key), comparison, outcome (the claim's), ours and ci_low, ci_high
    (our accuracy difference in the paper's direction and its 95% interval, NaN where untestable), registered (the
    effect the comparison is powered for) and paper_effect (whether that is the paper's number), threshold and
    threshold_kind ("margin": the non-inferiority margin, as a difference; "MDE": the smallest effect this sample
    could detect at 80% power), power (at the registered effect), n_needed (for 80%) and result."""
    recorded = recorded_verdicts(folder)
    rows = []
    for key, claim in CLAIMS.items():
        for c in recorded.get(key, {}).get("comparisons", []):
            margin = (c.get("counts") or {}).get("margin")
            interval = c.get("interval") or (float("nan"), float("nan"))
            rows.append({"figure": claim.figure, "claim": key, "comparison": c["label"],
                         "outcome": recorded[key]["outcome"], "ours": c["effect"], "ci_low": interval[0],
                         "ci_high": interval[1], "registered": c.get("registered"),
                         "paper_effect": claim.paper_effect if c.get("registered") is not None else None,
                         "threshold": -float(margin) if margin is not None else c.get("detectable"),
                         "threshold_kind": "margin" if margin is not None else "MDE",
                         "power": c.get("power"), "n_needed": c.get("n_needed"),
                         "result": comparison_result(c.get("reason"), c.get("excluded"), c.get("direction"))})
    return pd.DataFrame(rows, columns=SCOREBOARD_COLUMNS)


def scoreboard_by_claim(board: pd.DataFrame) -> pd.DataFrame:
    """One row per claim for the status page's table: the claim in short, its outcome, and the comparison that
    settles it (the first against the paper, else the first whose effect is excluded, else of those not for the
    paper, or all if every one is, the one with the least power at its registered effect or the smallest effect),
    with ours [95% interval], the registered effect and the MDE or margin, in points."""
    rows = []
    for key, group in board.groupby("claim", sort=False):
        order = [group.result.eq("against the paper"), group.result.eq("paper's effect excluded")]
        pick = next((group[o].iloc[0] for o in order if o.any()), None)
        if pick is None:  # the claim needs every comparison: one that did not come out settles it
            open_ = group[group.result != "for the paper"]
            pick = (open_ if len(open_) else group).sort_values(["power", "ours"], na_position="last").iloc[0]
        registered = "" if pick.registered is None or pick.registered != pick.registered else (
            _points(pick.registered) + ("" if pick.paper_effect else " (of interest)"))
        outcome = pick.outcome  # an excluded effect of interest is not the paper's (the paper gave no number)
        if outcome == verdicts.EXCLUDED and not CLAIMS[key].paper_effect:
            outcome = "effect of interest excluded"
        rows.append({"figure": pick.figure, "claim": short_claim(CLAIMS[key].paper), "outcome": outcome,
                     "settled by": pick.comparison,
                     "ours [95% interval]": "not tested" if pick.ours != pick.ours else
                     f"{_points(pick.ours)} [{_points(pick.ci_low)}, {_points(pick.ci_high)}]",
                     "paper's effect": registered,
                     "MDE or margin": "" if pick.threshold is None or pick.threshold != pick.threshold else
                     f"{pick.threshold_kind} {_points(abs(pick.threshold))}",
                     "n for 80%": "" if pick.n_needed is None or pick.n_needed != pick.n_needed else
                     f"{int(pick.n_needed):,}"})
    return pd.DataFrame(rows, columns=["figure", "claim", "outcome", "settled by", "ours [95% interval]",
                                       "paper's effect", "MDE or margin", "n for 80%"])


def _claims(*claims: Claim) -> dict[str, Claim]:
    return {c.key: c for c in claims}


SD_PETS = "Stable Diffusion 2.0, Oxford-IIIT Pets, zero-shot"
DIT_IMAGENET = "DiT-XL/2 trained on ImageNet, ImageNet validation set"

CLAIMS = _claims(
    Claim("error_variance", "Fig. 2, Sec. 3.3",
          "By using the same (t_i, eps_i) for each conditioning input, our estimate of p(c | x) is much more "
          "accurate.", "Stable Diffusion 2.0; Fig. 2 shows the errors of one Pets image under two prompts",
          "classification with noise shared across the classes against independent noise per class, on the "
          "same images and timesteps", "mcnemar",
          narrowed="The paper shows the variance argument on one image; the accuracy gain is tested here.",
          **_INTEREST),
    Claim("single_timestep", "Fig. 3",
          "Accuracy is highest when an intermediate amount of noise is added (t = 500).", SD_PETS,
          "one timestep per class: the timestep of the grid nearest t = 500 against the smallest and against the "
          "largest timestep of the grid", "mcnemar", **_INTEREST),
    Claim("timestep_strategies", "Fig. 4",
          "All strategies improve when using the average error of more samples, but simply using evenly spaced "
          "timesteps is best.", SD_PETS,
          "at the largest trial count, N evenly spaced timesteps over the full range against every strategy that "
          "is not evenly spaced: Uniform, {0}, {500}, {1000}, {0, 500, 1000}, {475, 500, 525}", "mcnemar", **_INTEREST),
    Claim("guidance", "Fig. 8",
          "w = 0 (i.e., no classifier-free guidance) performs best.", SD_PETS + ", w in [-2, 10]",
          "w = 0 against every other guidance weight of the page, over the paper's range [-2, 10]", "mcnemar",
          **_INTEREST),
    Claim("cropping", "Fig. 9",
          "Any amount of cropping reduces accuracy.", SD_PETS + ", 0-30 latent pixels cropped off each side",
          "no crop against every crop of the page", "mcnemar", **_INTEREST),
    Claim("loss_zero_shot", "Table 8, App. C",
          "The Huber loss [...] roughly achieves the same performance as the theoretically-justified squared l2 "
          "loss (Pets: 86.6 vs 86.3).", SD_PETS, "Huber against squared l2 on the same denoiser outputs",
          "noninferiority", margin=KEEPS_ACCURACY_MARGIN,
          **_registered(paper_gap("table8_zero_shot_loss", "pets", "loss", "huber", "squared_l2")),
          narrowed=f"'Roughly the same' is tested as Huber losing at most {100 * KEEPS_ACCURACY_MARGIN:g} point. "
                   "The paper's other Table 8 finding, l1 better on roughly half of its eight datasets, needs "
                   "several datasets and is shown beside ours but not tested."),
    Claim("loss_supervised", "Table 9",
          "With the supervised DiT classifier, the squared l2 loss beats l1 (77.5 vs 74.9 at 256 px).",
          DIT_IMAGENET, "squared l2 against l1 on the same denoiser outputs", "mcnemar",
          **_registered(paper_gap("table9_supervised_loss", "imagenet", "loss", "squared_l2", "l1", resolution=256))),
    Claim("noise_sampling", "Table 12",
          "Every importance-sampling variant of eps underperforms eps ~ N(0, I).",
          "Stable Diffusion 2.0, a 10% subset of Pets",
          "eps ~ N(0, I) against each other noise distribution, same images, timesteps and noise keys", "mcnemar",
          **_registered(noise_sampling_effects())),
    Claim("objective_elbo", "Sec. 3.2 (eq. 3)",
          "We found that deviating from the uniform weighting used at training time hurts accuracy.",
          "Stable Diffusion 2.0, zero-shot (no numbers given)",
          "uniform weighting against the ELBO weights w_t of eq. 3 (sigma_t^2 from the model's scheduler)",
          "mcnemar", **_INTEREST),
    Claim("objective_vlb", "Table 5",
          "The uniform l2 weighting does best; the variational bound is clearly worse (71.6 vs 77.5 at 256 px).",
          DIT_IMAGENET, "uniform l2 against the variational bound (VLB) of a learned-variance model", "mcnemar",
          **_registered(paper_gap("table5_dit_objective", "imagenet", "objective", "l2", "vlb", resolution=256))),
    Claim("adaptive_evaluation", "Tables 6-7, Sec. 4.2",
          "The adaptive schedules keep accuracy at a fraction of the evaluations; pre-pruning with a weak "
          "discriminative model cuts inference time further at little accuracy cost.",
          "Stable Diffusion 2.0, Pets: KeepList (5, 1), TrialList (25, 250); CLIP ResNet-50 top-20 pre-pruning",
          "Algorithm 2 with the page's first adaptive schedule, and a weak zero-shot model's top-k followed by "
          "Algorithm 1, each against Algorithm 1 on the full grid", "noninferiority", margin=KEEPS_ACCURACY_MARGIN,
          **_registered(paper_gap("table7_inference_time", "pets", "row", "With CLIP RN50 top-20 pruning accuracy",
                                  "Diffusion Classifier accuracy")),
          narrowed=f"'Keeps accuracy' is tested as losing at most {100 * KEEPS_ACCURACY_MARGIN:g} point (the "
                   "paper's largest loss from pre-pruning in Table 7 is 0.9 points)."),
    Claim("version_sweep", "Table 10",
          "Within SD 1.x, accuracy tends to rise with more training (exceptions: CIFAR10, STL10).",
          "Stable Diffusion 1.1-1.5 (successive releases of one training run), eight zero-shot datasets",
          "accuracy across the checkpoints in training order, one trend", "trend",
          narrowed="SD 2.0 -> 2.1 (which the paper finds lowers accuracy) has no analogue here."),
    Claim("zero_shot_synthetic", "Table 1",
          "Zero-shot Diffusion Classifier significantly outperforms the baseline trained on data generated by "
          "the same diffusion model.", "Stable Diffusion 2.0, eight zero-shot datasets",
          "Diffusion Classifier against a CNN trained on images generated by the same model, on every task",
          "mcnemar",
          **_registered(smallest_paper_gap("table1_zero_shot", "method", "Diffusion Classifier",
                                           ("Synthetic SD Data",), ZERO_SHOT_DATASETS))),
    Claim("zero_shot_contrastive", "Table 1",
          "Zero-shot Diffusion Classifier outperforms CLIP ResNet-50.",
          "Stable Diffusion 2.0 vs CLIP ResNet-50, eight zero-shot datasets",
          "Diffusion Classifier against the contrastive model trained on the same image-caption data, on every "
          "task", "mcnemar",
          **_registered(paper_gap("table1_zero_shot", "pets", "method", "Diffusion Classifier", "CLIP ResNet-50")),
          narrowed="The contrastive model here is trained on the diffusion model's own data, not on a web-scale "
                   "corpus like CLIP's."),
    Claim("compositional", "Table 3",
          "Diffusion Classifier is significantly better than both contrastive baselines in each of the three "
          "swap categories (object, relation, both).", "Stable Diffusion 2.0 vs CLIP ViT-L/14 and OpenCLIP "
          "ViT-H/14, Winoground text score",
          "text score of Diffusion Classifier against the contrastive model in each Winoground swap category",
          "mcnemar", **_registered(compositional_effects())),
    Claim("supervised_robustness", "Table 4, Fig. 6",
          "On ImageNet-A, DiT's Diffusion Classifier lies far above the linear fit of in- vs out-of-distribution "
          "accuracy of discriminative models trained on the same labels (effective robustness; no such gain on "
          "ImageNet-V2 or ObjectNet).", DIT_IMAGENET + " vs ResNets and ViTs; ImageNet-A, 99.5% Clopper-Pearson "
          "intervals", "Diffusion Classifier's accuracy on the page's claim set (ImageNet-A; on the embedded models the "
          "adversarial split: shifted test images that a held-out CNN misclassifies, built as ImageNet-A was) against "
          "the accuracy the discriminative models' probit-scaled line predicts at its clean accuracy on the same "
          "classes, or chance where that is higher", "binomial",
          **_registered(text_effect("fig6_imagenet_a_effective_robustness")),
          narrowed="The line's prediction is treated as a fixed rate (its own fitting error is not propagated), and "
                   "it is one line where the paper breaks it at ResNet-50's accuracy; on the embedded models the "
                   "shifts are synthetic corruptions, not natural photos."),
    Claim("interpretability", "Fig. 7, App. D",
          "Inverting with DDIM and reconstructing under the same prompt, the correct class name reconstructs the "
          "image's class-descriptive features better than incorrect ones.",
          "Stable Diffusion 2.0, a few Pets and ImageNet images (qualitative)",
          "for each image, invert and reconstruct under every candidate prompt; how often the true class's "
          "reconstruction is the closest, against the chance rate 1 / number of classes", "binomial", **_INTEREST,
          narrowed="The paper shows examples; the rate over images is tested here."),
)


def verdict_inputs(table, sets: dict, label: str, pair: tuple[str, str], dataset: str, n_timesteps: int,
                   n_images: int | None = None) -> dict:
    """The keyword arguments of ``Claim.evaluate`` for one pair of settings of a ``compare_settings`` run.

    ``table`` is its table with a ``model`` column (one model), ``sets`` its error sets and ``pair`` the two setting
    names in the order the claim takes them. ``setting`` reads "MODEL, N images of DATASET, T timesteps" (N: the
    table's image count unless ``n_images`` is given) and ``ours`` lists every setting's accuracy in table order,
    e.g. "Accuracy: l2 60.0%, l1 55.0%, huber 60.0%.".
    """
    n = table.n.iloc[0] if n_images is None else n_images
    return {"outcomes": {label: (sets[pair[0]], sets[pair[1]])},
            "setting": f"{table.model.iloc[0]}, {n} images of {dataset}, {n_timesteps} timesteps",
            "ours": "Accuracy: " + ", ".join(f"{s} {a:.1%}" for s, a in zip(table.setting, table.accuracy)) + "."}
