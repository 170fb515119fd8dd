"""Four outcomes a reader can act on, and power at the registered effect (issue: a decisive book)."""
import numpy as np
import pytest

from dclib import verdicts
from dclib.claims import Claim


def paired(n_both: int, only_first: int, only_second: int, n_neither: int = 0):
    first = [True] * n_both + [True] * only_first + [False] * only_second + [False] * n_neither
    second = [True] * n_both + [False] * only_first + [True] * only_second + [False] * n_neither
    return np.array(first), np.array(second)


def claim(effect=None, statistic="mcnemar", margin=None) -> Claim:
    return Claim("x", "Table 0", "A beats B.", "somewhere", "A against B", statistic, margin=margin, effect=effect,
                 effect_source="a test")


@pytest.mark.parametrize("counts, effect, outcome", [
    ((80, 30, 2), 0.2, "reproduces"),               # 30 vs 2 discordant: significant for the paper
    ((80, 2, 30), 0.2, "contradicted"),             # significant against it
    ((190, 3, 3, 4), 0.2, verdicts.EXCLUDED),       # 0 +- ~2 points: the paper's 20 points ruled out
    ((8, 3, 3, 1), 0.2, "not detected"),            # n = 15: the interval still reaches 20 points
    ((190, 3, 3, 4), None, "not detected"),         # nothing registered: nothing to exclude
])
def test_each_outcome_is_reachable_on_constructed_outcomes(counts, effect, outcome):
    verdict = claim(effect).evaluate({"A vs B": paired(*counts)}, "constructed")
    assert verdict.outcome == outcome
    text = verdict.sentence()
    assert {"reproduces": "**Reproduces**", "contradicted": "**Contradicted**", verdicts.EXCLUDED: "excluded",
            "not detected": "**Not detected**"}[outcome] in text


def test_not_detected_says_the_power_it_had_and_the_n_it_needs():
    verdict = claim(0.2).evaluate({"A vs B": paired(8, 3, 3, 1)}, "constructed")
    c = verdict.comparisons[0]
    assert 0 < c.power < 0.8 and c.n_needed > c.n
    assert f"{c.n_needed:,} images" in verdict.sentence()
    assert {"registered effect", "power there", "n for 80%"} <= set(verdict.table().columns)


def test_the_n_the_issue_names_for_expected_norm():
    """0.6 points at 5% discordance: about 11,000 images (Connor's formula)."""
    assert 10_500 < verdicts.mcnemar_n(0.006, 0.05) < 11_500
    n = verdicts.mcnemar_n(0.1, 0.2)
    assert verdicts.mcnemar_power(0.1, 0.2, n) >= 0.8 > verdicts.mcnemar_power(0.1, 0.2, n - 5)


def test_mcnemar_power_matches_a_simulation():
    rng = np.random.default_rng(0)
    n, effect, psi = 150, 0.1, 0.2  # discordant 20%: 15% for A, 5% for B
    hits = 0
    for _ in range(400):
        u = rng.random(n)
        a, b = u < 0.15, (u >= 0.15) & (u < 0.20)
        hits += verdicts.mcnemar("s", a | ~(a | b) & (u < 0.6), b | ~(a | b) & (u < 0.6)).p_value < 0.05
    assert abs(hits / 400 - verdicts.mcnemar_power(effect, psi, n)) < 0.08


def test_binomial_power_and_n_agree():
    n = verdicts.binomial_n(0.1, 0.25)
    assert verdicts.binomial_power(0.1, 0.25, n) >= 0.8 > verdicts.binomial_power(0.1, 0.25, n - 10)


def test_a_one_point_non_inferiority_margin_cannot_succeed_at_the_books_n():
    """Tables 6-7 (n = 100) and Table 8 (n = 150): zero discordant images still leave a wider interval."""
    assert not verdicts.noninferiority_reachable(100, 0.01) and not verdicts.noninferiority_reachable(150, 0.01)
    assert verdicts.noninferiority_reachable(194, 0.01) and not verdicts.noninferiority_reachable(193, 0.01)
    assert verdicts.noninferiority_power(0.01, 0.0, 150) == 0.0
    n = verdicts.noninferiority_n(0.01, 0.02)
    assert verdicts.noninferiority_reachable(n, 0.01) and verdicts.noninferiority_power(0.01, 0.02, n) >= 0.8
    # the book's design, as the Agresti-Min test meets it: all 150 agree, and it still cannot pass
    same = np.ones(150, bool)
    verdict = claim(0.0, "noninferiority", margin=0.01).evaluate({"new vs old": (same, same)}, "constructed")
    assert verdict.outcome == "not detected" and verdict.comparisons[0].power == 0.0


def test_claims_without_a_registered_effect_read_as_before():
    verdict = claim().evaluate({"A vs B": paired(20, 3, 3, 4)}, "constructed")
    assert "registered effect" not in verdict.table().columns and "Power at" not in verdict.sentence()
    assert "Registered effect" not in claim().preregistration()
    assert "Registered effect" in claim({"A vs B": 0.2}).preregistration()
