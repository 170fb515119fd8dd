"""dclib.class_scaling's bookkeeping on hand-made reports: the slope only within the accuracy bound, the claim's
outcomes and the targets read at the largest count, the figures drawn (the measurement itself runs end to end in
tests/test_benchmarks.py)."""
import matplotlib

matplotlib.use("Agg")  # no display in tests

import numpy as np
import pytest
from matplotlib.figure import Figure

from dclib import class_scaling, verdicts
from dclib.class_scaling import REFERENCE, ScalingSetup, claim_outcomes, slopes_within_bound, targets
from dclib.errors import InputError


def record(k, method, evaluations, correct, reference_correct, seconds=None):
    correct, reference_correct = np.array(correct, bool), np.array(reference_correct, bool)
    a, b = int((correct & ~reference_correct).sum()), int((~correct & reference_correct).sum())
    d, se, z = verdicts.agresti_min(a, b, len(correct))
    return {"classes": k, "method": method, "n_images": len(correct), "accuracy": correct.mean(),
            "accuracy_ci": [0.0, 1.0], "evaluations_per_image": evaluations,
            "share_of_reference": evaluations / (25 * k), "seconds_per_image": seconds,
            "correct": correct.astype(int).tolist(), "difference_to_a": correct.mean() - reference_correct.mean(),
            "difference_ci": [d - z * se, d + z * se]}


def report_of(cheap_correct_at_200):
    truth = [True] * 90 + [False] * 10
    results = []
    for k in (25, 50, 100, 200):
        reference = record(k, f"(a) {REFERENCE}", 25 * k, truth, truth, seconds=10.0 if k == 200 else None)
        cheap = cheap_correct_at_200 if k == 200 else truth
        results += [reference,
                    record(k, "(e) top-5 + paired pruning", 40 * np.sqrt(k), cheap, truth,
                           seconds=0.5 if k == 200 else None),
                    record(k, "(b) paired pruning", 20 * k, truth, truth)]
    return {"results": results, "log_log_slopes_within_bound": slopes_within_bound(results)}


def test_slopes_are_fitted_only_where_every_count_keeps_the_accuracy_bound():
    kept = report_of([True] * 90 + [False] * 10)
    assert kept["log_log_slopes_within_bound"]["(e) top-5 + paired pruning"] == pytest.approx(0.5)
    assert kept["log_log_slopes_within_bound"]["(b) paired pruning"] == pytest.approx(1.0)
    assert kept["log_log_slopes_within_bound"][f"(a) {REFERENCE}"] == pytest.approx(1.0)
    lost = report_of([True] * 70 + [False] * 30)  # 20 points lost at 200 classes: no slope for (e)
    assert "(e) top-5 + paired pruning" not in lost["log_log_slopes_within_bound"]


def test_the_claim_compares_e_with_a_at_the_largest_count_and_the_targets_are_read_there():
    cheap = [True] * 88 + [False] * 12
    report = report_of(cheap)
    ((label, (e, a)),) = claim_outcomes(report).items()
    assert label == f"best combination vs {REFERENCE}, 200 classes"
    assert e.tolist() == cheap and a.sum() == 90
    t = targets(report)
    assert t["classes"] == 200 and t["seconds_speedup"] == 20.0 and t["speedup_met"]
    assert t["share_of_reference"] == pytest.approx(40 * np.sqrt(200) / 5000) and t["share_met"] is False  # 11%
    assert t["bound_met"] == (t["difference_low"] >= -class_scaling.MARGIN)
    without_e = {"results": [r for r in report["results"] if not r["method"].startswith("(e)")],
                 "log_log_slopes_within_bound": {}}
    with pytest.raises(InputError, match="dev split"):
        claim_outcomes(without_e)
    assert targets(without_e) == {}
    sentence = class_scaling.summary(report)
    assert sentence.startswith("At 200 classes, (e) top-5 + paired pruning: 11.3% of the reference's evaluations")
    assert "no slope reported" in class_scaling.summary(report_of([True] * 70 + [False] * 30))
    kept = class_scaling.summary(report_of([True] * 90 + [False] * 10))
    assert "slope of its evaluations against classes 0.50" in kept


def test_a_grid_whose_strided_points_are_not_the_official_25_is_refused():
    assert ScalingSetup(grid=25).classes == (25, 50, 100, 200)
    with pytest.raises(ValueError, match="use 25"):
        ScalingSetup(grid=75)
    assert ScalingSetup(classes=(200, 25)).classes == (25, 200)


def test_the_page_figures_draw_from_a_report_and_a_card_history():
    from dclib.figures.class_scaling import cost_and_accuracy_figure, results_frame, training_curve_figure

    report = report_of([True] * 88 + [False] * 12)
    frame = results_frame(report)
    assert "correct" not in frame and frame["difference to (a), points"].abs().max() == pytest.approx(2.0)
    assert isinstance(cost_and_accuracy_figure(report, "t", class_scaling.MARGIN), Figure)
    history = [{"step": s, "val_train": 1 / s, "val_heldout": 1 / s, "val_shuffled": 2 / s, "val_null": 1.5 / s}
               for s in (500, 1000)]
    assert isinstance(training_curve_figure(history, "t"), Figure)


def test_the_imagenet_arithmetic_extends_e_along_its_slope_at_the_papers_rate():
    assert class_scaling.paper_calls_per_second() == pytest.approx(100.0)  # Table 6: 100,000 calls; Table 7: 1,000 s
    assert class_scaling.paper_calls_per_second("pets") == pytest.approx(1890 / 18)
    out = class_scaling.extrapolate(report_of([True] * 90 + [False] * 10))
    # (e) makes 40 sqrt(K) evaluations: 40 sqrt(1000) = 1265 at 1,000 classes, 12.6 s at 100 calls per second
    assert out["slope"] == pytest.approx(0.5) and out["evaluations_per_image"] == round(40 * np.sqrt(1000))
    assert out["seconds_per_image"] == pytest.approx(12.6, abs=0.05) and out["paper_schedule_seconds_per_image"] == 1000
    assert out["reference_evaluations_per_image"] == 25_000
    missed = report_of([True] * 70 + [False] * 30)
    assert class_scaling.extrapolate(missed) == {}  # no slope: nothing to extend
    # named, a method's cost curve is carried along whatever its accuracy, and says whether the accuracy held
    cost_only = class_scaling.extrapolate(missed, method="(e)")
    assert cost_only["slope"] == pytest.approx(0.5) and cost_only["accuracy_kept"] is False
    assert cost_only["evaluations_per_image"] == out["evaluations_per_image"] and out["accuracy_kept"] is True
    with pytest.raises(InputError, match="names no single method"):
        class_scaling.extrapolate(missed, method="(z)")


def test_the_partner_alone_is_set_beside_a_and_e_by_hand():
    """Four pictures: partner right on 0 and 1, (a) on 0 and 2, (e) on 0, 1 and 2. The partner: 50% (Clopper-Pearson
    interval), 0 points against (a) (one discordant pair each way), (e) 25 points above it (one pair, (e)'s way)."""
    partner, a, e = (np.array(v, bool) for v in ([1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]))
    row = class_scaling.partner_alone(200, partner, a, e, seconds=0.0012)
    assert row["accuracy"] == 0.5 and row["difference_to_a"] == 0.0 and row["e_minus_partner"] == 0.25
    assert row["accuracy_ci"] == pytest.approx(class_scaling.clopper_pearson(2, 4), abs=1e-4)
    d, se, z = verdicts.agresti_min(1, 0, 4)
    assert row["e_minus_partner_ci"] == pytest.approx([d - z * se, d + z * se], abs=1e-4)
    assert row["difference_ci"][0] < 0 < row["difference_ci"][1]
    assert "e_minus_partner" not in class_scaling.partner_alone(200, partner, a, None, seconds=0.0)
    sentence = class_scaling.partner_summary({"partner_alone": [row, {**row, "classes": 25, "accuracy": 0.9}]})
    assert sentence.startswith("At 200 classes the contrastive partner alone (its top 1, no denoiser call) gets 50.0%")
    assert "+0.0 points against (a)" in sentence and "(e) minus the partner: +25.0 points" in sentence
    assert class_scaling.partner_summary({}) == "The partner alone was not measured."
    from dclib.figures.class_scaling import cost_and_accuracy_figure

    report = {**report_of([True] * 88 + [False] * 12), "partner_alone": [row]}
    assert isinstance(cost_and_accuracy_figure(report, "t", class_scaling.MARGIN), Figure)
