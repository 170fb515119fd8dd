"""The one verdict procedure: synthetic per-image outcomes must land on each of the outcomes where they
should, for every statistic, and the paper's numbers are read by exact key."""
import json

import numpy as np
import pytest

from dclib import verdicts
from dclib.claims import CLAIMS, Claim
from dclib.scoreboard import status_table
from dclib.errors import InputError
from dclib.paper import paper_values


def paired(n, only_first, only_second, both=0):
    """Two correctness arrays over n images with the given discordant and concordant-right counts."""
    a, b = np.zeros(n, bool), np.zeros(n, bool)
    a[:only_first] = True
    b[only_first:only_first + only_second] = True
    a[only_first + only_second:only_first + only_second + both] = True
    b[only_first + only_second:only_first + only_second + both] = True
    return a, b


def claim(statistic, **kw):
    return Claim("synthetic", "Fig. 0", "A beats B.", "nowhere", "A against B", statistic, **kw)


def test_mcnemar_three_outcomes():
    strong = claim("mcnemar").evaluate({"A vs B": paired(200, 30, 5, 100)}, "synthetic")
    assert strong.outcome == "reproduces"
    against = claim("mcnemar").evaluate({"A vs B": paired(200, 5, 30, 100)}, "synthetic")
    assert against.outcome == "contradicted"
    weak = claim("mcnemar").evaluate({"A vs B": paired(200, 8, 6, 100)}, "synthetic")
    assert weak.outcome == "not detected"
    # the detectable effect is reported and exceeds the observed one
    assert weak.detectable > abs(weak.comparisons[0].effect)


def test_exact_mcnemar_matches_hand_computation():
    c = verdicts.mcnemar("x", *paired(50, 7, 1, 20))
    # two-sided exact binomial on 8 discordant pairs, 7 vs 1: 2 * (C(8,0) + C(8,1)) / 2**8
    assert c.p_value == pytest.approx(2 * 9 / 256)
    assert c.effect == pytest.approx(6 / 50)
    low, high = c.interval
    assert low < c.effect < high


def test_detectable_effect_shrinks_with_sample_size():
    small = verdicts.mcnemar("x", *paired(50, 3, 3, 20)).detectable
    large = verdicts.mcnemar("x", *paired(5000, 300, 300, 2000)).detectable
    assert large < small / 5


def test_conjunction_needs_every_comparison_and_one_contradiction_is_enough():
    c = claim("mcnemar")
    both = c.evaluate({"1": paired(200, 30, 5), "2": paired(200, 40, 2)}, "s")
    assert both.outcome == "reproduces"
    one = c.evaluate({"1": paired(200, 30, 5), "2": paired(200, 5, 5)}, "s")
    assert one.outcome == "not detected"
    mixed = c.evaluate({"1": paired(200, 30, 5), "2": paired(200, 2, 40)}, "s")
    assert mixed.outcome == "contradicted"
    assert [x.direction for x in mixed.comparisons] == [1, -1]


def test_holm_correction_guards_contradicted():
    assert verdicts.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    # p = 0.03 against the paper, alone: contradicted; among three comparisons it does not survive Holm
    a, b = paired(100, 5, 16)
    p = verdicts.mcnemar("x", a, b).p_value
    assert 0.01 < p < 0.05
    alone = claim("mcnemar").evaluate({"1": (a, b)}, "s")
    assert alone.outcome == "contradicted"
    family = claim("mcnemar").evaluate({"1": (a, b), "2": paired(100, 3, 3), "3": paired(100, 3, 3)}, "s")
    assert family.outcome == "not detected"


def test_trend_three_outcomes():
    rng = np.random.default_rng(0)
    n = 300

    def ordered(accs):
        return [rng.random(n) < a for a in accs]

    assert claim("trend").evaluate({"steps": ordered([0.5, 0.6, 0.7, 0.8])}, "s").outcome == "reproduces"
    assert claim("trend").evaluate({"steps": ordered([0.8, 0.7, 0.6, 0.5])}, "s").outcome == "contradicted"
    flat = claim("trend").evaluate({"steps": ordered([0.7, 0.7, 0.7, 0.7])}, "s")
    assert flat.outcome in ("not detected",)
    assert flat.detectable > 0


def test_trend_with_two_settings_is_refused_and_matches_mcnemar_normal_form():
    with pytest.raises(InputError):
        verdicts.trend("x", [np.ones(5, bool), np.zeros(5, bool)])
    # all images constant across settings: no information, p = 1
    c = verdicts.trend("x", [np.ones(5, bool)] * 3)
    assert c.p_value == 1.0 and c.detectable == np.inf


def test_noninferiority_three_outcomes():
    c = claim("noninferiority", margin=0.02)
    # 2000 images, identical predictions but for 4 discordant ones each way: within a 2-point margin
    assert c.evaluate({"new vs ref": paired(2000, 4, 4, 1500)}, "s").outcome == "reproduces"
    # loses 30 points on 200 images: significantly worse than the margin
    assert c.evaluate({"new vs ref": paired(200, 2, 62, 100)}, "s").outcome == "contradicted"
    # 30 images: cannot establish a 2-point margin
    small = c.evaluate({"new vs ref": paired(30, 0, 0, 25)}, "s")
    assert small.outcome == "not detected"
    assert small.detectable > 0.02


def test_binomial_three_outcomes():
    c = claim("binomial")
    hits = lambda k, n: np.arange(n) < k
    assert c.evaluate({"rate": (hits(40, 50), 0.2)}, "s").outcome == "reproduces"
    assert c.evaluate({"rate": (hits(0, 100), 0.5)}, "s").outcome == "contradicted"
    assert c.evaluate({"rate": (hits(2, 10), 0.2)}, "s").outcome == "not detected"


def test_verdict_records_and_status_table_lists_every_claim(tmp_path, monkeypatch):
    monkeypatch.setenv("DCLIB_RESULTS_DIR", str(tmp_path))
    v = CLAIMS["guidance"].evaluate({"w = 0 vs w = 10": paired(100, 20, 2, 50)}, "embedded:mnist, 100 images")
    v.record()
    saved = json.loads((tmp_path / "verdicts" / "guidance.json").read_text())
    assert saved["outcome"] == "reproduces" and saved["figure"] == "Fig. 8"
    assert "Here: embedded:mnist, 100 images" in saved["differs"]
    table = status_table()
    assert len(table) == len(CLAIMS)
    assert table.set_index("page").loc["guidance", "outcome"] == "reproduces"
    assert (table.set_index("page").drop("guidance").outcome == "not run").all()
    assert "Not" not in v.sentence() and "Reproduces" in v._repr_markdown_()


def test_every_claim_is_well_formed():
    for key, c in CLAIMS.items():
        assert c.key == key and c.statistic in verdicts.STATISTICS
        assert (c.margin is not None) == (c.statistic == "noninferiority")
        assert c.figure in c.preregistration()


def test_paper_values_by_exact_key():
    values = paper_values("table12_noise_sampling", "noise_distribution", ["eps ~ N(0 I)"], "pets_accuracy_10pct_subset")
    assert values.iloc[0] == 87.5
    with pytest.raises(InputError, match="no row 'N\\(0, I\\)'"):
        paper_values("table12_noise_sampling", "noise_distribution", ["N(0, I)"], "pets_accuracy_10pct_subset")


def test_a_trend_over_two_settings_is_not_testable_here_and_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DCLIB_RESULTS_DIR", str(tmp_path))
    rising = [np.arange(100) < 10, np.arange(100) < 90]  # 10% -> 90%: never "reproduces" without a trend test
    v = CLAIMS["version_sweep"].evaluate({"accuracy across checkpoints": rising}, "two models")
    assert v.outcome == "not detected"
    (c,) = v.comparisons
    assert c.direction == 0 and c.p_value == 1.0 and "at least 3 ordered settings" in c.reason
    assert c.counts["accuracies"] == [0.1, 0.9] and c.n == 100
    sentence = v.sentence()
    assert "\n" not in sentence and "not testable here" in sentence and "at least 3" in sentence
    assert v.table().result.tolist() == ["not testable here"] and "not testable here" in v._repr_markdown_()
    v.record()
    assert json.loads((tmp_path / "verdicts" / "version_sweep.json").read_text())["outcome"] == "not detected"
    # three settings or more: Page's test as before; the trend statistic itself still refuses two
    assert CLAIMS["version_sweep"].evaluate({"x": rising + [np.arange(100) < 95]}, "s").comparisons[0].reason == ""
    with pytest.raises(InputError):
        verdicts.trend("x", rising)
