"""Amendments keep the original registration beside the amended one; the validity gate leaves out tasks on which
the classifier is at chance; and each claim plans its sample size from its registration (book/params.yml's
``{powered: ...}`` entries), on constructed outcomes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dclib import verdicts
from dclib.claims import CLAIMS, Amendment, Claim, powered_size, preset_sizes, resolve_sizes, sample_size_table
from dclib.scoreboard import scoreboard, scoreboard_by_claim
from dclib.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PAPER_TEXT = ROOT.parent / "shared" / "seeds" / "li2023-diffusion-classifier-paper.txt"  # read by the test that needs it


def _pair(n_both: int, only_first: int, only_second: int, n_neither: int):
    first = np.array([1] * n_both + [1] * only_first + [0] * only_second + [0] * n_neither, bool)
    second = np.array([1] * n_both + [0] * only_first + [1] * only_second + [0] * n_neither, bool)
    return first, second


GATED = Claim("gated", "Fig. X", "A beats B on every task.", "paper", "A vs B per task", "mcnemar", gate=True,
              effect=0.05, effect_source="test", amendments=(Amendment("2026-12-05", "gate", "p", "r",
                                                                         {"gate": False}),))


def test_a_task_at_chance_is_left_out_and_the_rest_decides():
    strong = _pair(60, 30, 0, 10)  # A right on 90 of 100, B on 60: for the paper
    at_chance = _pair(5, 0, 30, 65)  # A right on 5 of 100 with chance 0.5: gated, although B is far better
    outcomes = {"easy: A vs B": strong, "position: A vs B": at_chance}
    verdict = GATED.evaluate(outcomes, "constructed", chance={"easy: A vs B": 0.1, "position: A vs B": 0.5})
    assert verdict.outcome == "reproduces"
    gated = [c for c in verdict.comparisons if c.gated]
    assert [c.label for c in gated] == ["position: A vs B"] and "not above chance" in gated[0].reason
    assert "validity gate" in verdict.sentence() and "position" in verdict.sentence()
    # the original registration (no gate) sees the reversed task: contradicted, shown beside
    assert verdict.original_outcome == "contradicted"
    assert "Original registration" in verdict._repr_markdown_()


def test_a_claim_with_every_task_gated_is_not_testable_here():
    verdict = GATED.evaluate({"position: A vs B": _pair(10, 5, 5, 80)}, "constructed",
                             chance={"position: A vs B": 0.2})
    assert verdict.outcome == verdicts.NOT_TESTABLE and verdict.sentence().startswith("**Not testable here**")
    with pytest.raises(InputError, match="chance rate"):
        GATED.evaluate({"position: A vs B": _pair(10, 5, 5, 80)}, "constructed")


def test_the_gate_passes_a_classifier_above_chance_unchanged():
    c = verdicts.mcnemar("x", *_pair(50, 20, 10, 20))
    assert verdicts.validity_gate(c, _pair(50, 20, 10, 20)[0], 0.5) is c  # 70 of 100 against 0.5
    assert verdicts.validity_gate(c, _pair(50, 2, 10, 38)[0], 0.5).gated  # 52 of 100: not significantly above


def test_every_amendment_is_dated_rests_on_the_paper_and_rebuilds_the_original():
    for key, claim in CLAIMS.items():
        for a in claim.amendments:
            assert a.date == "2026-12-05" and a.change and a.paper and a.reason, key
        original = claim.original()
        if claim.amendments and original is not None:
            assert original.amendments == () and original != claim, key
    # the contrastive claim was stricter than the paper: per task with the Pets gap, now pooled with the mean gap
    original = CLAIMS["zero_shot_contrastive"].original()
    assert original.labels == ("*: DC vs contrastive",) and original.effect is None  # before any registered effect
    assert CLAIMS["noise_sampling_text"].original() is None  # added by an amendment
    text = " ".join(PAPER_TEXT.read_text().split())
    assert "none of these importance sampling strategies improve accuracy" in text
    assert "our method outperforms CLIP ResNet-50 and is competitive with OpenCLIP ViT-H" in text


def test_labels_pick_the_comparisons_a_claim_tests():
    pooled = CLAIMS["zero_shot_contrastive"]
    outcomes = {"shape: DC vs contrastive": _pair(40, 20, 10, 30), "colour: DC vs contrastive": _pair(40, 0, 30, 30),
                "pooled over the tasks (DC vs contrastive)": tuple(np.concatenate(v) for v in zip(
                    _pair(40, 20, 10, 30), _pair(40, 0, 30, 30)))}
    verdict = pooled.evaluate(outcomes, "constructed")
    assert [c.label for c in verdict.comparisons] == ["pooled over the tasks (DC vs contrastive)"]
    assert verdict.original_outcome == "contradicted"  # per task, colour is significantly against


# ------------------------------------------------------------------------------------------ sample sizes
def test_planned_n_is_the_power_calculation_at_the_registered_effect():
    claim = CLAIMS["objective_vlb"]
    n = claim.n_for_power()
    assert n == verdicts.mcnemar_n(claim.effect, claim.planning.rate)
    assert claim.power_at(n) >= 0.8 > claim.power_at(n - 10)
    assert claim.sample_size(1000) == n and claim.sample_size(50) == 50
    # a non-inferiority design that cannot succeed at its n is refused, not run
    with pytest.raises(InputError, match="whatever the data"):
        CLAIMS["adaptive_evaluation"].sample_size(100)
    assert powered_size(["objective_vlb", "objective_elbo"], 1000) == max(
        CLAIMS["objective_vlb"].n_for_power(), CLAIMS["objective_elbo"].n_for_power())
    assert powered_size("compositional", 100, per=2) == 50
    with pytest.raises(InputError, match="no claim"):
        powered_size("objective_vbl", 100)
    assert resolve_sizes({"n_images": {"powered": "objective_vlb", "at_most": 50}, "seed": 1}) == {"n_images": 50,
                                                                                                 "seed": 1}
    with pytest.raises(InputError, match="check at_mots"):
        resolve_sizes({"n_images": {"powered": "objective_vlb", "at_mots": 50}})


def _book_sizes() -> dict:
    """claim key -> images per comparison at the book preset, from book/params.yml's powered entries."""
    return preset_sizes(yaml.safe_load((ROOT / "book" / "params.yml").read_text())["book"])


def test_every_registration_has_its_power_at_the_book_n_and_no_design_is_unreachable():
    sizes = _book_sizes()
    for key, claim in CLAIMS.items():
        if claim.statistic == "trend":  # Page's trend test: no power calculation
            continue
        assert key in sizes, f"{key}: its book sample size is typed, not planned ({{powered: {key}, ...}})"
        n, power = sizes[key], claim.power_at(sizes[key])
        assert 0 <= power <= 1, key
        if power < 0.8:  # the page states the n it would need
            assert claim.n_for_power() > n and f"{claim.n_for_power():,}" in claim.preregistration(), key
        if claim.statistic == "noninferiority":
            assert verdicts.noninferiority_reachable(n, claim.margin), key


def test_the_sample_size_table_shows_every_planned_claim_with_its_book_n():
    table = sample_size_table("book").set_index("claim")
    planned = [k for k, c in CLAIMS.items() if c.n_for_power() is not None]
    assert list(table.index) == planned and (table["preset n"] != "").all()
    vlb = table.loc["objective_vlb"]
    assert vlb["n for 80%"] == f"{CLAIMS['objective_vlb'].n_for_power():,}" and vlb["power there"].endswith("%")
    assert table.loc["compositional", "preset n"] == "100"  # 50 picture pairs per swap, two items each


def test_the_scoreboard_names_the_original_outcome_and_the_gated_comparisons(tmp_path, monkeypatch):
    monkeypatch.setenv("DCLIB_RESULTS_DIR", str(tmp_path))
    strong, at_chance = _pair(60, 30, 0, 10), _pair(5, 0, 30, 65)
    outcomes = {"object swaps": at_chance, "relation swaps": strong, "both swaps": strong}
    verdict = CLAIMS["compositional"].evaluate(outcomes, "constructed", chance=dict.fromkeys(outcomes, 0.25))
    folder = tmp_path / "verdicts"
    folder.mkdir()
    (folder / "compositional.json").write_text(__import__("json").dumps(verdict.to_dict()))
    row = scoreboard_by_claim(scoreboard(folder)).iloc[0]
    assert row.outcome == "reproduces (first registered: contradicted)"
    assert "gated out: object swaps" in row["settled by"]
