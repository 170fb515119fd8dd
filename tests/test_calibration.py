"""Calibrated probabilities (dclib.calibration): temperature / vector scaling against hand computations, ECE,
pruned classes, the calibration file, and `calibrate` / `classify --calibration` on the embedded digits model."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from dclib import Conditionings, Schedule
from dclib.calibration import (Calibrator, brier_score, calibration_metrics, class_errors_from_classifications,
                               class_errors_from_error_set, expected_calibration_error, fit_temperature,
                               format_temperature, logits_from_errors, negative_log_likelihood, noise_elements,
                               paper_temperature, per_element_temperature, plot_reliability, reliability,
                               uncalibrated_probabilities)
from dclib.calibration_data import class_errors_from_run, load_calibration_data
from dclib.cli import main
from dclib.decide import class_errors, decide, mean_errors, posterior
from dclib.errors import InputError
from dclib.experiments import ErrorSet
from fakes import LinearAdapter, replay


def nll_at(errors, labels, t):
    """Mean NLL of softmax(-errors / t), vectorised over a grid of temperatures t [G] -> [G]."""
    logits = -errors[None] / np.asarray(t, dtype=np.float64).reshape(-1, 1, 1)
    top = logits.max(-1, keepdims=True)
    log_p = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return -log_p[:, np.arange(len(labels)), labels].mean(-1)


# ------------------------------------------------------------------------------------------ temperature
def test_temperature_two_classes_analytic_optimum():
    # every image has the error gap d = 0.01 between the classes, the lower-error class is right 3 times out of 4:
    # the optimum puts sigmoid(d / T) = 3/4, so T = d / ln 3
    errors = np.array([[0.50, 0.51]] * 3 + [[0.50, 0.51]])
    labels = np.array([0, 0, 0, 1])
    cal = Calibrator("temperature", smoothing=0).fit(errors, labels)
    assert cal.temperature == pytest.approx(0.01 / math.log(3), rel=1e-6)
    np.testing.assert_allclose(cal.transform(errors)[:, 0], 0.75, rtol=1e-6)
    assert cal.fitted_on["after"]["nll"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # at dclib's default T = 1 per element (the paper's T = d) the posterior is nearly uniform
    assert cal.fitted_on["before"]["mean_confidence"] == pytest.approx(1 / (1 + math.exp(-0.01)))


def test_temperature_matches_a_brute_force_grid():
    rng = np.random.default_rng(0)
    n, k = 200, 3
    labels = rng.integers(0, k, n)
    errors = 0.3 + 0.002 * rng.normal(size=(n, k))
    errors[np.arange(n), labels] -= 0.002  # informative but noisy
    t = Calibrator("temperature", smoothing=0).fit(errors, labels).temperature
    grid = np.exp(np.linspace(np.log(1e-5), np.log(1.0), 2001))  # steps of 0.6%
    nlls = nll_at(errors, labels, grid)
    best = grid[int(np.argmin(nlls))]
    assert t == pytest.approx(best, rel=0.01)
    assert nll_at(errors, labels, t)[0] <= nlls.min() + 1e-9
    assert nll_at(errors, labels, t)[0] == pytest.approx(negative_log_likelihood(
        np.stack([posterior(e, t) for e in errors]), labels))


def test_normalisation_changes_nothing_for_temperature_scaling():
    rng = np.random.default_rng(1)
    errors = 0.2 + 0.01 * rng.random((50, 4)) + rng.random((50, 1))  # image-dependent error level
    labels = errors.argmin(1)
    labels[:10] = (labels[:10] + 1) % 4
    a = Calibrator("temperature").fit(errors, labels)
    b = Calibrator("temperature", normalize=False).fit(errors, labels)
    assert a.temperature == pytest.approx(b.temperature, rel=1e-6)
    np.testing.assert_allclose(a.transform(errors), b.transform(errors), atol=1e-9)
    # and the temperature calibrator is exactly decide's posterior at the fitted temperature
    np.testing.assert_allclose(a.transform(errors[0]), posterior(errors[0], a.temperature), atol=1e-12)


def test_all_correct_with_a_margin_stops_at_the_bound_and_says_so():
    errors = np.array([[0.1, 0.2], [0.3, 0.1]])
    cal = Calibrator(smoothing=0).fit(errors, [0, 1])
    assert cal.fitted_on["at_bound"] and cal.fitted_on["after"]["nll"] < 1e-6
    # by default the labels are smoothed by 1 / (n + 2) = 1/4: confident, not certain (3/4 on average)
    cal = Calibrator().fit(errors, [0, 1])
    assert not cal.fitted_on["at_bound"]
    confidence = cal.transform(errors).max(1)
    assert np.all((confidence > 0.6) & (confidence < 0.9))
    # a 50/50 set wants T -> infinity (the uniform answer)
    t, at_bound = fit_temperature(logits_from_errors(np.array([[0.0, 1.0], [0.0, 1.0]])), np.array([0, 1]))
    assert at_bound and t > 1e6


# ------------------------------------------------------------------------------------------ temperature units
def test_paper_and_per_element_temperatures_convert_by_d():
    assert noise_elements((1, 16, 16)) == 256  # the MNIST model's noise
    assert noise_elements((4, 64, 64)) == 16384  # SD 2 latents at 512 px
    assert noise_elements((4, 64, 64), crop=8) == 4 * 48 * 48  # a cropped error map averages over fewer elements
    assert noise_elements(LinearAdapter([0.0])) == 16
    assert noise_elements(type("Classifier", (), {"adapter": LinearAdapter([0.0])})()) == 16
    with pytest.raises(InputError, match="removes the whole"):
        noise_elements((1, 4, 4), crop=2)
    assert paper_temperature(1.0, 256) == 256.0  # dclib's default is d times flatter than eq. 6
    assert per_element_temperature(1.0, 256) == 1 / 256  # eq. 6 as printed, in dclib's units
    assert per_element_temperature(paper_temperature(0.0013, 16384), 16384) == pytest.approx(0.0013, rel=1e-12)
    assert format_temperature(1 / 256, 256) == "T=0.00391, paper T=1" and format_temperature(0.5) == "T=0.5"


def test_posterior_at_paper_temperature_one_is_the_softmax_of_the_summed_error():
    # eps_pred = b_c (a = 0): dclib's error is the per-element mean of (eps - b_c)^2 over the 1x4x4 noise; eq. 6
    # takes the softmax of minus the summed squared error, averaged over the samples (E_t,eps)
    from dclib.scoring import Scorer

    adapter = LinearAdapter([0.0, 0.1, 0.25], a=0.0)
    d = noise_elements(adapter)
    eps = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 4, 4))).float()
    errors = Scorer(adapter).score(torch.zeros(1, 4, 4), adapter.encode_conditions([0, 1, 2]),
                                   torch.tensor([10, 500]), eps).errors.double().numpy()  # [3 classes, 2 samples]
    e = eps.double().numpy()
    summed = np.array([((e - b) ** 2).sum(axis=(1, 2, 3)).mean() for b in (0.0, 0.1, 0.25)])
    by_hand = np.exp(-(summed - summed.min()))
    by_hand /= by_hand.sum()
    mean_error = errors.mean(1)
    np.testing.assert_allclose(mean_error * d, summed, rtol=1e-5)  # dclib's errors are the sum over d
    np.testing.assert_allclose(posterior(mean_error, per_element_temperature(1, d)), by_hand, rtol=1e-4)
    np.testing.assert_allclose(uncalibrated_probabilities(mean_error[None], per_element_temperature(1, d))[0],
                               by_hand, rtol=1e-4)
    # dclib's T = 1 is eq. 6 at the paper's T = d: the same logits divided by d, much flatter
    flat = np.exp(-(summed - summed.min()) / d)
    np.testing.assert_allclose(posterior(mean_error, 1.0), flat / flat.sum(), rtol=1e-4)
    assert posterior(mean_error, 1.0).max() < 0.4 < by_hand.max()


def test_calibrator_reports_both_temperatures(tmp_path):
    errors, labels = miscalibrated(200, 5)
    d = 256
    cal = Calibrator(n_elements=d).fit(errors, labels, uncalibrated_temperature=per_element_temperature(1, d))
    assert cal.paper_temperature == pytest.approx(d * cal.temperature)
    assert cal.fitted_on["uncalibrated_temperature"] == 1 / d
    assert cal.fitted_on["uncalibrated_paper_temperature"] == pytest.approx(1.0)
    eq6 = np.stack([posterior(row, 1 / d) for row in errors])  # "before" is eq. 6 itself
    assert cal.fitted_on["before"]["nll"] == pytest.approx(negative_log_likelihood(eq6, labels))
    before, after = cal.reliability(errors, labels, uncalibrated_temperature=1 / d)
    assert before.label == "uncalibrated (T=0.00391, paper T=1)"
    assert after.label == f"temperature scaling ({format_temperature(cal.temperature, d)})"
    cal.save(tmp_path / "cal.json")
    saved = json.loads((tmp_path / "cal.json").read_text())
    assert saved["n_elements"] == d and saved["paper_temperature"] == pytest.approx(d * saved["temperature"])
    assert Calibrator.load(tmp_path / "cal.json").paper_temperature == pytest.approx(cal.paper_temperature)
    # without d the file says so (null) and the labels give dclib's temperature only; older files load unchanged
    plain = Calibrator().fit(errors, labels)
    assert plain.paper_temperature is None and plain.to_dict()["paper_temperature"] is None
    assert plain.reliability(errors, labels)[0].label == "uncalibrated (T=1)"
    del saved["n_elements"], saved["paper_temperature"]
    assert Calibrator.from_dict(saved).n_elements is None
    with pytest.raises(InputError, match="positive integer"):
        Calibrator(n_elements=0)


# ------------------------------------------------------------------------------------------ metrics
def test_ece_mce_nll_brier_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    # 10 bins: (0.9, 1] holds 0.95 right and 0.95 wrong: |0.5 - 0.95| = 0.45; (0.6, 0.7] holds 0.65 and 0.7 (the
    # right edge belongs to the bin), both right: |1 - 0.675| = 0.325. ECE = 0.5 * 0.45 + 0.5 * 0.325
    ece, mce = expected_calibration_error(probs, labels, n_bins=10)
    assert ece == pytest.approx(0.3875) and mce == pytest.approx(0.45)
    r = reliability(probs, labels, n_bins=10)
    assert r.count.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert r.confidence[6] == pytest.approx(0.675) and r.accuracy[9] == pytest.approx(0.5)
    assert np.isnan(r.accuracy[0]) and r.to_dict()["accuracy"][0] is None
    nll = -(math.log(0.95) + math.log(0.05) + math.log(0.65) + math.log(0.7)) / 4
    assert negative_log_likelihood(probs, labels) == pytest.approx(nll)
    brier = (2 * 0.05 ** 2 + 2 * 0.95 ** 2 + 2 * 0.35 ** 2 + 2 * 0.3 ** 2) / 4
    assert brier_score(probs, labels) == pytest.approx(brier)
    m = calibration_metrics(probs, labels)  # default 15 bins: 0.95 -> (14/15, 1], 0.65 -> (9/15, 10/15], 0.7 -> (10/15, 11/15]
    assert m["accuracy"] == 0.75 and m["n_bins"] == 15
    assert m["ece"] == pytest.approx(0.5 * 0.45 + 0.25 * 0.35 + 0.25 * 0.3)
    # the classifier's own predictions (pruning) replace argmax: image 3 predicted class 0 with p 0.35, wrong
    m2 = calibration_metrics(probs, labels, n_bins=10, predictions=[0, 0, 0, 1])
    assert m2["accuracy"] == 0.5


def test_plot_reliability_draws_before_and_after():
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    errors = 0.3 + 0.01 * rng.random((40, 3))
    labels = errors.argmin(1)
    cal = Calibrator().fit(errors, labels)
    before, after = cal.reliability(errors, labels)
    ax = plot_reliability(before, after)
    assert len(ax.patches) == int((before.count > 0).sum() + (after.count > 0).sum())
    assert "ECE" in ax.get_legend().get_texts()[1].get_text()


# ------------------------------------------------------------------------------------------ vector scaling
def miscalibrated(n, seed):
    """3 classes whose error gaps have different scales and class 0 an error offset: one temperature cannot fix
    both."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    noise = np.array([0.001, 0.004, 0.004])
    errors = 0.5 + rng.normal(size=(n, 3)) * noise
    errors[np.arange(n), labels] -= 0.003
    errors[:, 0] -= 0.002  # class 0 looks better than it is
    return errors, labels


def test_vector_scaling_reduces_the_nll_of_a_miscalibrated_set():
    errors, labels = miscalibrated(600, 0)
    temp = Calibrator("temperature").fit(errors, labels)
    vec = Calibrator("vector").fit(errors, labels)
    assert vec.fitted_on["after"]["nll"] < temp.fitted_on["after"]["nll"] - 0.02  # 0.822 vs 0.863
    assert temp.fitted_on["after"]["nll"] < temp.fitted_on["before"]["nll"] - 0.2  # vs 1.097 at T = 1
    assert (vec.scale > 0).all() and vec.scale[0] > vec.scale[1]  # class 0's gaps are the least noisy
    test_errors, test_labels = miscalibrated(600, 1)  # held out
    held_t, held_v = temp.evaluate(test_errors, test_labels), vec.evaluate(test_errors, test_labels)
    assert held_v["after"]["nll"] < held_t["after"]["nll"] < held_t["before"]["nll"]
    assert held_v["after"]["ece"] < held_v["before"]["ece"]


def test_vector_scaling_l2_pulls_towards_temperature_scaling():
    errors, labels = miscalibrated(300, 2)
    strong = Calibrator("vector", l2=1e4).fit(errors, labels)
    np.testing.assert_allclose(strong.scale, 1 / strong.temperature, rtol=1e-2)
    np.testing.assert_allclose(strong.bias, 0, atol=1e-3)


# ------------------------------------------------------------------------------------------ pruned classes
def test_pruned_classes_get_their_partial_estimate_never_zero():
    conds = Conditionings.from_rows([("a", "a", 0), ("b", "b", 1), ("c", "c", 2), ("d", "d", 3)])
    m = np.array([[0.50, 0.50, 0.50, 0.50],
                  [0.52, 0.52, 0.52, 0.52],
                  [0.60, 0.60, 0.60, 0.60],   # pruned after 2 samples
                  [0.70, 0.70, 0.70, 0.70]])  # pruned after 2 samples
    result = decide(replay(m)[0], conds, Schedule((2, 1), (2, 4)), 1000)
    assert np.isnan(result.errors[2:, 2:]).all() and result.n_samples.tolist() == [4, 4, 2, 2]
    np.testing.assert_allclose(result.class_errors, [0.5, 0.52, 0.6, 0.7])  # partial means
    assert (result.probabilities > 0).all()  # decide already keeps them
    cal = Calibrator().fit(np.array([[0.5, 0.52, 0.6, 0.7], [0.55, 0.5, 0.6, 0.7], [0.5, 0.51, 0.56, 0.7]]),
                           [0, 1, 1])
    p = cal.transform(result.class_errors)
    assert (p > 0).all() and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p, posterior(result.class_errors, cal.temperature), atol=1e-12)
    assert p[2] > p[3]
    # a class without any candidate conditioning (inf) gets exactly 0, as in decide.posterior
    assert cal.transform(np.array([0.5, 0.52, np.inf, 0.7]))[2] == 0.0


def test_class_errors_from_results_and_error_sets_reuse_decide():
    conds = Conditionings.from_rows([("a", "x", 0), ("a2", "x", 0), ("b", "y", 1)])
    m1 = np.array([[0.3, 0.3], [0.2, 0.4], [0.5, 0.5]])
    m2 = np.array([[0.1, 0.1], [0.6, 0.6], [0.2, 0.2]])
    results = [decide(replay(m)[0], conds, Schedule((1,), (2,)), 1000) for m in (m1, m2)]
    np.testing.assert_allclose(class_errors_from_classifications(results), [[0.3, 0.5], [0.1, 0.2]])
    errors = np.stack([m1, m2])
    errors[1, 2, 1] = np.nan  # an unscored sample is skipped, as in the decision
    es = ErrorSet(errors, np.zeros((2, 2), int), np.array([0, 1]), np.array(conds.class_idx), ["i0", "i1"])
    data = class_errors_from_error_set(es)
    np.testing.assert_allclose(data.class_errors, [[0.3, 0.5], [0.1, 0.2]])
    assert data.labels.tolist() == [0, 1]
    np.testing.assert_allclose(class_errors_from_error_set(es, columns=[0]).class_errors, [[0.2, 0.5], [0.1, 0.2]])
    np.testing.assert_allclose(data.class_errors[1], class_errors(mean_errors(errors[1]), conds.class_idx, 2))


# ------------------------------------------------------------------------------------------ the file
def test_save_load_round_trip_and_mismatches(tmp_path):
    errors, labels = miscalibrated(200, 3)
    for method in ("temperature", "vector"):
        cal = Calibrator(method).fit(errors, labels, class_names=["zero", "one", "two"])
        path = tmp_path / f"{method}.json"
        cal.save(path)
        d = json.loads(path.read_text())
        assert d["method"] == method and d["n_classes"] == 3 and d["class_names"] == ["zero", "one", "two"]
        assert {"n", "before", "after"} <= set(d["fitted_on"]) and d["fitted_on"]["n"] == 200
        assert d["fitted_on"]["after"]["ece"] < d["fitted_on"]["before"]["ece"]
        back = Calibrator.load(path, n_classes=3, class_names=["zero", "one", "two"])
        np.testing.assert_array_equal(back.transform(errors), cal.transform(errors))
        assert back.to_dict() == json.loads(json.dumps(cal.to_dict()))
    with pytest.raises(InputError, match="fitted on 3 classes, but the model has 10"):
        Calibrator.load(tmp_path / "vector.json", n_classes=10)
    with pytest.raises(InputError, match="other classes"):
        Calibrator.load(tmp_path / "vector.json", n_classes=3, class_names=["zero", "one", "deux"])
    with pytest.raises(InputError, match="fitted on 3 classes"):
        Calibrator.load(tmp_path / "vector.json").transform(np.zeros((2, 4)))
    with pytest.raises(InputError, match="not found"):
        Calibrator.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a dclib calibration file"):
        Calibrator.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="unknown calibration method"):
        Calibrator("platt")
    with pytest.raises(InputError, match="no candidate conditioning"):
        Calibrator().fit(np.array([[0.1, np.inf], [0.2, 0.1]]), [1, 1])


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    code = main(["evaluate", "--model", "embedded:digits", "--dataset", "embedded:digits-test", "--schedule", "10",
                 "--limit", "8", "--out", str(root / "run"), "--json", "--no-progress"])
    assert code == 0
    return root


def test_cli_calibrate_then_classify_with_calibration(digit_run, capsys):
    from dclib.data import load_embedded

    root = digit_run
    out = root / "calibration.json"
    assert main(["calibrate", str(root / "run"), "--out", str(out), "--plot", str(root / "rel.png")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 8 and summary["temperature"] > 0 and (root / "rel.png").stat().st_size > 0
    assert summary["after"]["nll"] < summary["before"]["nll"]
    assert summary["before"]["accuracy"] == summary["after"]["accuracy"]
    cal = Calibrator.load(out, n_classes=10)
    assert cal.fitted_on["source"]["schedule"] == "1:10" and cal.class_names == [str(i) for i in range(10)]

    image = root / "digit.png"
    load_embedded("digits-test")[20]["image"].save(image)
    # at the old default (T = 1 per element: near uniform), the calibrated probabilities are the sharper
    assert main(["classify", str(image), "--model", "embedded:digits", "--schedule", "10", "--calibration",
                 str(out), "--json", "--top", "10", "--temperature", "1"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["probability_source"] == "temperature 1 (given)"
    assert sum(d["calibrated_probabilities"]) == pytest.approx(1.0)
    assert sum(d["probabilities"]) == pytest.approx(1.0)  # the uncalibrated ones are kept
    assert max(d["calibrated_probabilities"]) > max(d["probabilities"])
    expected = posterior(np.array(d["mean_errors"]), cal.temperature)
    np.testing.assert_allclose(d["calibrated_probabilities"], expected, atol=1e-9)
    assert d["calibration"]["method"] == "temperature"

    # another schedule: a warning, not a refusal; text output names both
    assert main(["classify", str(image), "--model", "embedded:digits", "--schedule", "4", "--calibration",
                 str(out)]) == 0
    captured = capsys.readouterr()
    assert "fitted with other settings" in captured.err and "schedule" in captured.err
    assert "p: calibrated by" in captured.out and "(before " in captured.out  # each p says what it is

    # a calibration file for other classes is refused in one line, before any scoring
    d = json.loads(out.read_text())
    d["n_classes"], d["class_names"] = 3, ["0", "1", "2"]
    (root / "three.json").write_text(json.dumps(d))
    assert main(["classify", str(image), "--model", "embedded:digits", "--schedule", "10", "--calibration",
                 str(root / "three.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dclib: error:") and "fitted on 3 classes" in err and len(err.splitlines()) == 1


def test_cli_calibrate_vector_heldout_and_saved_errors(digit_run, tmp_path, capsys):
    assert main(["calibrate", str(digit_run / "run"), "--method", "vector", "--out", str(tmp_path / "v.json"),
                 "--heldout", str(digit_run / "run")]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["method"] == "vector" and s["heldout"]["after"]["nll"] == pytest.approx(s["after"]["nll"])
    errors, labels = miscalibrated(60, 4)
    es = ErrorSet(errors[:, :, None], np.zeros((60, 1), int), labels, np.arange(3), [str(i) for i in range(60)])
    es.save(tmp_path / "errors.npz")
    assert main(["calibrate", str(tmp_path / "errors.npz"), "--out", str(tmp_path / "e.json")]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["n"] == 60 and Calibrator.load(tmp_path / "e.json").n_classes == 3
    assert main(["calibrate", str(tmp_path / "nothing")]) == 2
    assert "neither" in capsys.readouterr().err


def test_calibration_data_reads_a_run_folder(digit_run):
    data = load_calibration_data(digit_run / "run")
    assert data.class_errors.shape == (8, 10) and data.class_names == [str(i) for i in range(10)]
    assert data.source["kind"] == "run" and data.source["schedule"] == "1:10"
    np.testing.assert_array_equal(class_errors_from_run(digit_run / "run").class_errors, data.class_errors)


def test_calibration_sits_below_runs():
    # the calibration core must not import run folders or experiments (dclib.calibration_data does, above both)
    code = ("import sys, dclib.calibration; "
            "print([m for m in sys.modules if m.startswith('dclib.runs') or m == 'dclib.experiments'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluate_no_longer_takes_a_temperature(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--model", "embedded:digits", "--dataset", "embedded:digits-test", "--temperature", "0.1",
              "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_the_pages_comparison_table_by_hand():
    from dclib.calibration import CalibrationData, compare_calibrations, describe_comparison

    fit_e, fit_y = miscalibrated(300, 0)
    test_e, test_y = miscalibrated(200, 1)
    d = 16
    table, cals = compare_calibrations(CalibrationData(fit_e, fit_y), CalibrationData(test_e, test_y), d)
    assert list(table.probabilities) == ["dclib default, T = 1", "paper eq. 6, paper T = 1", "temperature scaling",
                                         "vector scaling"]
    np.testing.assert_allclose(table["T (paper)"][:3], [d, 1.0, d * cals["temperature"].temperature])
    assert math.isnan(table["T (per element)"][3])
    eq6 = np.stack([posterior(e, 1.0 / d) for e in test_e])  # eq. 6: the summed error at T = 1
    assert table.ece[1] == pytest.approx(calibration_metrics(eq6, test_y)["ece"])
    assert table.nll[2] == pytest.approx(cals["temperature"].evaluate(test_e, test_y)["after"]["nll"])
    sentence = describe_comparison(table, fit_e.shape[1])
    assert f"paper T = {d * cals['temperature'].temperature:.3g}" in sentence
    assert ("over-confident" in sentence) == (table.mean_confidence[1] > table.accuracy[1])


def test_the_pages_split_keeps_what_was_asked_for_or_splits_a_smaller_set_as_it_is():
    from dclib.calibration import fit_test_sizes, split_fit_test

    assert fit_test_sizes(80, 40, 40) == (40, 40, "")
    assert fit_test_sizes(100, 40, 40)[:2] == (40, 40)
    # a smaller set: split in the asked proportion, disjoint, at least 2 on each side, and said in one line
    n_fit, n_test, note = fit_test_sizes(6, 5, 3)
    assert (n_fit, n_test) == (4, 2) and "\n" not in note and "6 images" in note and "= 8" in note
    assert fit_test_sizes(5, 40, 1)[:2] == (3, 2) and fit_test_sizes(5, 1, 40)[:2] == (2, 3)
    with pytest.raises(InputError, match=r"has 3 images; this page needs n_fit \+ n_test = 80") as exc:
        fit_test_sizes(3, 40, 40)
    assert "\n" not in str(exc.value)
    # on an ErrorSet smaller than n_fit + n_test (the old page took the rest as the test set and then read
    # data[n_fit], past the end)
    rng = np.random.default_rng(0)
    es = ErrorSet(rng.random((5, 3, 2)), np.zeros((5, 2), int), np.array([0, 1, 2, 0, 1]), np.arange(3),
                  [f"i{k}" for k in range(5)])
    split = split_fit_test(es, 40, 40)
    assert (split.n_fit, split.n_test) == (2, 3) and split.note
    assert len(split.fit.labels) == 2 and len(split.test.labels) == 3
    np.testing.assert_array_equal(split.test.labels, es.labels[2:])
    np.testing.assert_array_equal(split.fit.class_errors, class_errors_from_error_set(es.select([0, 1])).class_errors)
    # a set that holds both takes the first n_fit, then the next n_test, and says nothing
    whole = split_fit_test(es, 2, 2)
    assert (whole.n_fit, whole.n_test, whole.note) == (2, 2, "")
    np.testing.assert_array_equal(whole.test.labels, es.labels[2:4])
