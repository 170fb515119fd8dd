"""What the reproduction-status page shows: the verdicts this build's pages recorded, read back per claim of
:data:`dclib.claims.CLAIMS` (:func:`status_table`), per comparison (:func:`scoreboard`) and per claim with the
comparison that settles it (:func:`scoreboard_by_claim`)."""
from __future__ import annotations

import json

import pandas as pd

from . import verdicts
from .claims import CLAIMS
from .registration import points, comparison_result
from .reporting import results_dir


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
                     "smallest detectable effect": points(e["detectable"]) if e else "",
                     "here": e["setting"] if e else "", "preset": e["preset"] if e else "", "page": claim.key})
    return pd.DataFrame(rows)


def short_claim(text: str, width: int = 64) -> str:
    """The claim's first ``width`` characters, cut at a word (the page holds the full wording)."""
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " ..."


SCOREBOARD_COLUMNS = ["figure", "claim", "comparison", "outcome", "original_outcome", "ours", "ci_low", "ci_high",
                      "registered", "paper_effect", "threshold", "threshold_kind", "power", "n_needed", "result"]


def scoreboard(folder=None) -> pd.DataFrame:
    """What the status page shows: one row per comparison of every verdict recorded in this build, in the
    registry's order. Columns: figure, claim (its key), comparison, outcome (the claim's) and original_outcome (the
    original registration's, where amended), ours and ci_low, ci_high
    (our accuracy difference in the paper's direction and its 95% interval, NaN where untestable; for a
    non-inferiority comparison the difference itself, beside the margin), registered (the effect the comparison
    is powered for) and paper_effect (whether that is the paper's number), threshold and
    threshold_kind ("margin": the non-inferiority margin, as a difference; "MDE": the smallest effect this sample
    could detect at 80% power), power (at the registered effect), n_needed (for 80%) and result."""
    recorded = recorded_verdicts(folder)
    rows = []
    for key, claim in CLAIMS.items():
        for c in recorded.get(key, {}).get("comparisons", []):
            margin = (c.get("counts") or {}).get("margin")
            interval = c.get("interval") or (float("nan"), float("nan"))
            ours = verdicts.difference(c["effect"], c.get("counts"))  # on the interval's and the margin's scale
            rows.append({"figure": claim.figure, "claim": key, "comparison": c["label"],
                         "outcome": recorded[key]["outcome"],
                         "original_outcome": recorded[key].get("original_outcome"), "ours": ours,
                         "ci_low": interval[0], "ci_high": interval[1], "registered": c.get("registered"),
                         "paper_effect": claim.paper_effect if c.get("registered") is not None else None,
                         "threshold": -float(margin) if margin is not None else c.get("detectable"),
                         "threshold_kind": "margin" if margin is not None else "MDE",
                         "power": c.get("power"), "n_needed": c.get("n_needed"),
                         "result": comparison_result(c.get("reason"), c.get("excluded"), c.get("direction"),
                                                     c.get("gated", False))})
    return pd.DataFrame(rows, columns=SCOREBOARD_COLUMNS)


#: The by-claim table's column of our effect; every number of that table is in accuracy points, without a unit, so
#: that eight columns fit the page's width.
OURS = "ours [95% CI]"


def _pts(x: float) -> str:
    return points(x).removesuffix(" pts")


def scoreboard_by_claim(board: pd.DataFrame) -> pd.DataFrame:
    """One row per claim for the status page's table: the claim in short, its outcome, and the comparison that
    settles it (the first against the paper, else the first whose effect is excluded, else of those not for the
    paper, or all if every one is, the one with the least power at its registered effect or the smallest effect),
    with ours [95% interval], the registered effect and the MDE or margin, in points (numbers without a unit, so
    the table fits a page). The outcome names the original registration's where the amendments changed it;
    "settled by" names the comparisons a validity gate left out."""
    rows = []
    for key, group in board.groupby("claim", sort=False):
        order = [group.result.eq("against the paper"), group.result.eq("paper's effect excluded")]
        pick = next((group[o].iloc[0] for o in order if o.any()), None)
        if pick is None:  # the claim needs every comparison: one that did not come out settles it
            counted = group[~group.result.str.startswith("gated")]
            counted = counted if len(counted) else group
            open_ = counted[counted.result != "for the paper"]
            pick = (open_ if len(open_) else counted).sort_values(["power", "ours"], na_position="last").iloc[0]
        registered = "" if pick.registered is None or pick.registered != pick.registered else (
            _pts(pick.registered) + ("" if pick.paper_effect else " (of interest)"))
        outcome = pick.outcome  # an excluded effect of interest is not the paper's (the paper gave no number)
        if outcome == verdicts.EXCLUDED and not CLAIMS[key].paper_effect:
            outcome = "effect of interest excluded"
        before = pick.original_outcome  # the original registration's, shown where the amendments changed it
        if isinstance(before, str) and before != pick.outcome:
            outcome += f" (first registered: {before})"
        gated = group.comparison[group.result.str.startswith("gated")].tolist()
        rows.append({"figure": pick.figure, "claim": short_claim(CLAIMS[key].paper, 44), "outcome": outcome,
                     "settled by": pick.comparison + (f"; gated out: {', '.join(gated)}" if gated else ""),
                     OURS: "not tested" if pick.ours != pick.ours else
                     f"{_pts(pick.ours)} [{_pts(pick.ci_low)}, {_pts(pick.ci_high)}]",
                     "paper's effect": registered,
                     "MDE or margin": "" if pick.threshold is None or pick.threshold != pick.threshold else
                     f"{pick.threshold_kind} {_pts(abs(pick.threshold))}",
                     "n for 80%": "" if pick.n_needed is None or pick.n_needed != pick.n_needed else
                     f"{int(pick.n_needed):,}"})
    return pd.DataFrame(rows, columns=["figure", "claim", "outcome", "settled by", OURS, "paper's effect",
                                       "MDE or margin", "n for 80%"])


def page_table(table: pd.DataFrame) -> str:
    """``table`` as the status page shows it: HTML without the index, in a smaller font, so that the by-claim
    table's eight columns fit the book's text column instead of scrolling sideways."""
    return f'<div style="font-size: 0.78em">{table.to_html(index=False, border=0, escape=True)}</div>'
