"""Statistical (paired-test) class pruning and top-k pre-pruning."""
import numpy as np
import pytest

from dclib.decide import decide, run_schedule
from dclib.errors import InputError
from dclib.plan import even_timesteps
from dclib.prompts import Conditionings
from dclib.pruning import replay_score_fn, top_k_candidates
from dclib.schedules import PairedPruning, Schedule, run_paired_pruning
from dclib.stats import stratified_paired_t


def synthetic_errors(n_cond, timesteps, gaps, rng, noise=0.05):
    """Errors whose level depends strongly on t (as real ones do), shared across conditionings, plus a per-
    conditioning offset ``gaps[c]`` and independent noise."""
    t = np.asarray(timesteps, float)
    level = 0.02 + (t / 1000.0) ** 2  # the shared, t-dependent part that pairing cancels
    shared = level * (1 + rng.standard_normal(len(t)))
    return shared[None] + np.asarray(gaps)[:, None] + noise * rng.standard_normal((n_cond, len(t)))


def test_rounds_cover_the_official_grid_one_timestep_per_stratum():
    p = PairedPruning(n_timesteps=20, strata=4, seed=3)
    rounds = p.round_timesteps(1000)
    assert len(rounds) == 5 and all(len(r) == 4 for r in rounds)
    assert sorted(t for r in rounds for t in r) == even_timesteps(20, 1000)
    for r in rounds:  # stratum h holds grid[5h:5h+5]
        assert [even_timesteps(20).index(t) // 5 for t in r] == [0, 1, 2, 3]
    assert p.round_timesteps(1000) == rounds  # deterministic
    assert PairedPruning(n_timesteps=20, strata=4, seed=4).round_timesteps(1000) != rounds


def test_stratified_t_by_hand():
    diff = np.array([1.0, 3.0, 10.0, 14.0])
    strata = np.array([0, 0, 1, 1])
    # bin means 2 and 12 -> mean 7; within-bin variances 2 and 8 over 2 samples each -> se = sqrt(1 + 4) / 2
    assert stratified_paired_t(diff, strata) == pytest.approx(7.0 / (np.sqrt(5.0) / 2))
    # a pooled (unstratified) variance would be far larger: stratification is what makes the test sharp
    pooled = diff.mean() / (diff.std(ddof=1) / 2)
    assert stratified_paired_t(diff, strata) > pooled
    assert stratified_paired_t(np.array([1.0, 1.0, 2.0, 2.0]), strata) == np.inf


def test_clearly_worse_conditionings_are_dropped_early_and_the_best_survives():
    rng = np.random.default_rng(0)
    p = PairedPruning(n_timesteps=40, strata=4, alpha=0.01)
    ts = even_timesteps(40)
    errors = synthetic_errors(5, ts, [0.0, 0.5, 0.5, 0.02, 1.0], rng)
    out, plan, best, pairs, facts = run_paired_pruning(replay_score_fn(errors, ts), 5, p)
    assert best == 0
    dropped = np.array(facts["dropped_in_round"])
    assert dropped[1] == dropped[2] == dropped[4] == p.min_rounds  # 10 standard errors worse: gone at once
    assert dropped[0] == -1
    assert pairs == np.isfinite(out).sum() < 5 * 40
    # what was scored is exactly the saved errors of those samples
    cols = [ts.index(t) for t in plan.timesteps]
    scored = np.isfinite(out)
    assert np.array_equal(out[scored], errors[:, cols][scored])


def test_without_pruning_it_is_algorithm_1_on_the_same_grid():
    rng = np.random.default_rng(1)
    ts = even_timesteps(30)
    errors = synthetic_errors(4, ts, [0.0, 0.001, 0.002, 0.003], rng, noise=0.2)
    p = PairedPruning(n_timesteps=30, strata=3, alpha=1e-12)  # nothing is ever significant at this level
    out, plan, best, pairs, _ = run_paired_pruning(replay_score_fn(errors, ts), 4, p)
    assert pairs == 4 * 30 and sorted(plan.timesteps) == ts
    ref, _, ref_best, _ = run_schedule(replay_score_fn(errors, ts), 4, Schedule.parse("30").stage_plans(), (1,))
    assert best == ref_best == int(errors.mean(1).argmin())


def test_the_true_best_is_rarely_dropped_when_classes_are_close():
    """Under the t approximation the best conditioning is dropped with probability <= alpha; check the rate
    on many synthetic images where it is only slightly better than the others."""
    rng = np.random.default_rng(2)
    p = PairedPruning(n_timesteps=40, strata=4, alpha=0.05)
    ts = even_timesteps(40)
    dropped_best = 0
    for _ in range(300):
        errors = synthetic_errors(6, ts, [0.0, 0.01, 0.01, 0.02, 0.02, 0.03], rng, noise=0.05)
        _, _, _, _, facts = run_paired_pruning(replay_score_fn(errors, ts), 6, p)
        dropped_best += facts["dropped_in_round"][0] != -1
    assert dropped_best / 300 <= 0.05


def test_decide_and_schedule_parse_accept_paired_specs():
    p = Schedule.parse("paired:40,alpha=0.05,strata=4")
    assert p == PairedPruning(n_timesteps=40, strata=4, alpha=0.05)
    assert Schedule.parse("paired") == PairedPruning()
    assert PairedPruning.parse(str(p)) == p
    for bad in ("paired:40,beta=1", "paired:x", "paired:6,strata=4", "paired:40,alpha=2"):
        with pytest.raises(InputError):
            Schedule.parse(bad)
    rng = np.random.default_rng(3)
    ts = even_timesteps(40)
    errors = synthetic_errors(3, ts, [0.3, 0.0, 0.3], rng)
    conds = Conditionings.from_rows([("a", "a", 0), ("b", "b", 1), ("c", "c", 2)])
    result = decide(replay_score_fn(errors, ts), conds, p, 1000)
    assert result.prediction == 1 and result.evaluations == result.extra["scored_pairs"] < 3 * 40
    probs = result.probabilities
    assert np.all(probs > 0) and probs.argmax() == 1  # pruned classes keep their partial estimate
    assert result.ranking()[0] == 1


def test_top_k_candidates():
    probs = np.array([[0.1, 0.5, 0.2, 0.2], [0.7, 0.1, 0.1, 0.1]])
    assert top_k_candidates(probs, 2).tolist() == [[1, 2], [0, 1]]
    with pytest.raises(InputError):
        top_k_candidates(probs, 5)


def test_replay_refuses_samples_that_were_not_saved():
    ts = even_timesteps(10)
    score = replay_score_fn(np.zeros((2, 10)), ts)
    with pytest.raises(InputError, match="no sample"):
        score([0, 1], Schedule.parse("20").stage_plans()[0])


def test_live_paired_pruning_on_the_embedded_digits_model():
    from dclib import DiffusionClassifier
    from dclib.data import load_embedded

    clf = DiffusionClassifier.from_pretrained("embedded:digits")
    data = load_embedded("digits-test").select(range(4))
    for row in data:
        full = clf.classify(row["image"], schedule="40", batch_size=500)
        pruned = clf.classify(row["image"], schedule="paired:40,strata=4", batch_size=500)
        assert pruned.prediction == full.prediction == row["label"]
        assert pruned.evaluations < full.evaluations
        # the samples it did score are the same (t, eps) as the full run's: identical errors
        cols = [full.plan.keys().index(k) for k in pruned.plan.keys()]
        scored = np.isfinite(pruned.errors)
        np.testing.assert_allclose(pruned.errors[scored], full.errors[:, cols][scored], rtol=1e-5)


def test_live_check_agrees_with_replay_and_notices_a_wrong_error_set():
    from dclib import DiffusionClassifier, even_plan
    from dclib.data import load_embedded
    from dclib.experiments import score_dataset
    from dclib.pruning import classify_live, live_check

    clf = DiffusionClassifier.from_pretrained("embedded:digits")
    data = load_embedded("digits-test").select(range(5))
    errors = score_dataset(clf, data, even_plan(20), seed=0, batch_size=500, progress=False)
    top = top_k_candidates(np.eye(10)[np.array(data["label"])] + 0.01 * np.arange(10), 3)
    for schedule, candidates in [("5,1:5,20", None), ("paired:20,strata=4", None), ("20", top)]:
        check = live_check(clf, data, errors, schedule, 3, candidates, seed=0, batch_size=500)
        assert check["same_predictions"] and check["same_evaluations"], schedule
        assert check["live_evaluations_per_image"] == check["replayed_evaluations_per_image"]
        assert check["seconds_per_image"] > 0 and check["images"] == 3
    live = classify_live(clf, data, 3, "20", top, seed=0, batch_size=500)
    assert live["evaluations"] == [3 * 20] * 3  # three candidate classes each
    assert all(p in t for p, t in zip(live["predictions"], top[:3]))
    # another seed's errors with the classes reversed: the check must fail (or it would mean nothing)
    other = score_dataset(clf, data, even_plan(20), seed=1, batch_size=500, progress=False)
    shuffled = type(errors)(other.errors[:, ::-1], other.timesteps, other.labels, other.class_idx, other.ids)
    check = live_check(clf, data, shuffled, "5,1:5,20", 3, seed=0, batch_size=500)
    assert not (check["same_predictions"] and check["same_evaluations"])


def test_live_check_with_a_text_model_restricts_the_prompts_to_the_candidates(classifiers):
    """Pre-pruning a zero-shot classifier (the paper's CLIP top-k): the candidates pick prompts, live == replay."""
    from dclib import even_plan
    from dclib.data import load_embedded
    from dclib.experiments import score_dataset
    from dclib.pruning import classify_live, live_check

    clf = classifiers["sd"]
    data = load_embedded("zeroshot-test").select(range(3))
    conds = clf.conditionings(dataset="embedded:zeroshot-test")
    errors = score_dataset(clf, data, even_plan(4), conds, seed=0, batch_size=500, progress=False)
    top = top_k_candidates(np.random.default_rng(0).random((3, 24)), 5)
    check = live_check(clf, data, errors, "4", 3, top, prompts=conds, seed=0, batch_size=500)
    assert check["same_predictions"] and check["same_evaluations"]
    live = classify_live(clf, data, 3, "4", top, prompts=conds, seed=0, batch_size=500)
    assert live["evaluations"] == [5 * 4] * 3 and all(p in t for p, t in zip(live["predictions"], top))


def test_compare_methods_reads_every_strategy_off_one_error_set():
    """Algorithm 1 rows are strided subsets of the grid, method rows are replays, and the per-image correctness
    returned for paired tests is the rows' accuracy."""
    from dclib.experiments import ErrorSet
    from dclib.plan import strided_positions
    from dclib.pruning import Method, compare_methods, replay

    rng = np.random.default_rng(0)
    grid, n_images, n_cond = 10, 12, 4
    timesteps = np.tile(even_timesteps(grid), (n_images, 1))
    labels = rng.integers(0, n_cond, n_images)
    errors = rng.random((n_images, n_cond, grid)) - 0.15 * (np.arange(n_cond)[None, :, None] == labels[:, None, None])
    es = ErrorSet(errors, timesteps, labels, np.arange(n_cond), [str(i) for i in range(n_images)])
    top = np.array([[int(l), (int(l) + 1) % n_cond] for l in labels])
    methods = [Method("adaptive", "2,1:5,10"), Method("top-2", "10", top)]
    table, right = compare_methods(es, grid, [2, 10], methods, 1000)
    assert list(table.method) == ["Algorithm 1, 2 timesteps", "Algorithm 1, 10 timesteps", "adaptive", "top-2"]
    assert table.accuracy[0] == es.accuracy(strided_positions(grid, 2)) and table.evaluations_per_image[1] == 40
    assert table.accuracy[2] == replay(es, "2,1:5,10")["accuracy"]
    assert table.accuracy[3] == replay(es, "10", top)["accuracy"] >= table.accuracy[1]  # fewer ways to be wrong
    assert all(right[m].mean() == a for m, a in zip(table.method, table.accuracy))
    assert table["seconds_per_image"].isna().all()  # nothing classified live without a LiveRun
