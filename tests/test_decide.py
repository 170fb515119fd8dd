"""Algorithms 1 and 2 on hand-made error matrices, and the prompt-to-class mapping."""
import numpy as np
import pytest

from dclib import Conditionings, Plan, Schedule
from dclib.decide import decide, posterior, run_schedule
from fakes import replay


def test_algorithm_2_keeps_the_lowest_mean_errors_and_scores_survivors_only():
    # 4 conditionings; stage 1 has 2 samples, stage 2 adds 2 more
    m = np.array([[1.0, 1.0, 9.0, 9.0],
                  [0.5, 0.6, 0.7, 0.7],
                  [0.4, 0.5, 0.9, 0.9],
                  [3.0, 3.0, 0.0, 0.0]])
    score, calls = replay(m)
    stages = [Plan.from_timesteps([10, 20]), Plan.from_timesteps([30, 40])]
    errors, plan, best, pairs = run_schedule(score, 4, stages, keep=(2, 1))
    # after stage 1 the means are 1.0, 0.55, 0.45, 3.0: keep 2 and 1; after stage 2: 0.625 vs 0.675 -> 1 wins
    assert best == 1
    assert pairs == 4 * 2 + 2 * 2
    assert np.isnan(errors[0, 2:]).all() and np.isnan(errors[3, 2:]).all()
    np.testing.assert_array_equal(errors[[1, 2]], m[[1, 2]])
    assert plan.timesteps == (10, 20, 30, 40)


def test_algorithm_1_is_argmin_of_the_mean():
    m = np.array([[0.3, 0.3, 0.3], [0.1, 0.9, 0.1], [0.2, 0.2, 0.2]])
    score, _ = replay(m)
    errors, _, best, pairs = run_schedule(score, 3, [Plan.from_timesteps([1, 2, 3])], keep=(1,))
    assert best == 2 and pairs == 9  # means 0.3, 0.367, 0.2


def test_several_prompts_per_class_predict_the_class_of_the_best_prompt():
    conds = Conditionings.from_rows([("a dog", "dog", 0), ("a puppy", "dog", 0), ("a cat", "cat", 1),
                                     ("a kitten", "cat", 1)])
    m = np.array([[0.5, 0.5], [0.45, 0.45], [0.6, 0.6], [0.2, 0.3]])
    score, _ = replay(m)
    result = decide(score, conds, Schedule((1,), (2,)), 1000)
    assert result.best_conditioning == 3 and result.prediction == 1 and result.prediction_name == "cat"
    np.testing.assert_allclose(result.class_errors, [0.45, 0.25])
    d = result.to_dict()
    assert d["classes"] == ["cat", "dog"] and d["evaluations"] == 8
    assert sum(d["probabilities"]) == pytest.approx(1.0)


def test_posterior_is_softmax_of_negative_error():
    p = posterior(np.array([1.0, 2.0, np.inf]), temperature=0.5)
    np.testing.assert_allclose(p, [1 / (1 + np.exp(-2)), np.exp(-2) / (1 + np.exp(-2)), 0.0])


def test_ranking_puts_the_prediction_first_even_if_a_pruned_class_had_a_lower_partial_mean():
    conds = Conditionings.from_prompts(["a", "b", "c"])
    m = np.array([[0.1, 0.1, 0.1, 0.1], [0.05, 0.3, 0.3, 0.3], [0.2, 0.2, 0.2, 0.2]])
    score, _ = replay(m)
    result = decide(score, conds, Schedule((2, 1), (1, 4)), 1000)
    # stage 1: means 0.1, 0.05, 0.2 -> keep b and a; stage 2: a 0.1 vs b 0.2375 -> a
    assert result.prediction_name == "a"
    assert result.to_dict()["classes"][0] == "a"


def test_a_pruned_conditioning_is_estimated_on_the_winners_footing():
    from dclib.decide import paired_mean_errors

    # conditioning 1 was pruned after the first two (easy, low-error) samples: its raw partial mean 0.15 is
    # below the winner's full mean 0.5, but on the samples both saw it is 0.05 worse than the winner
    errors = np.array([[0.1, 0.1, 0.9, 0.9],
                       [0.15, 0.15, np.nan, np.nan],
                       [0.6, 0.6, 0.6, 0.6]])
    est = paired_mean_errors(errors)
    np.testing.assert_allclose(est, [0.5, 0.55, 0.6])
    conds = Conditionings.from_rows([("a", "a", 0), ("b", "b", 1), ("c", "c", 2)])
    scored = np.nan_to_num(errors)  # a scored error is never NaN (decide refuses it): NaN marks "not scored"
    result = decide(lambda idx, plan: scored[np.ix_(idx, range(len(plan)))], conds, Schedule((1,), (4,)), 1000)
    result.errors = errors  # as if Algorithm 2 had pruned conditioning 1
    probs = result.probabilities
    assert probs.argmax() == 0 and 0 < probs[1] < probs[0]
    np.testing.assert_allclose(result.partial_mean_errors, [0.5, 0.15, 0.6])


def test_any_object_that_follows_the_schedule_protocol_runs_through_classify(classifiers, rgb_image):
    """A user's schedule on the one staged engine: here 'score all on 2 timesteps, keep the best 2, add 2 more'."""
    from dclib.decide import keep_lowest, run_stages
    from dclib.schedules import ScheduleRun, parse_schedule

    class KeepTwo:
        n_trials = 1

        def run(self, score, n_conditionings, num_train_timesteps=1000):
            stages = [Plan.from_timesteps([250, 750]), Plan.from_timesteps([100, 900])]
            errors, plan, best, pairs, _ = run_stages(score, n_conditionings, stages, keep_lowest((2, 1)))
            return ScheduleRun(errors, plan, best, pairs, {"custom": True})

        def max_evaluations(self, n_conditionings):
            return 2 * n_conditionings + 4

        def __str__(self):
            return "keep-two"

    custom = KeepTwo()
    assert parse_schedule(custom) is custom
    result = classifiers["sd"].classify(rgb_image, prompts=["a cat", "a dog", "a car"], schedule=custom)
    assert result.evaluations == 3 * 2 + 2 * 2 and result.settings["schedule"] == "keep-two"
    assert result.schedule_facts == {"custom": True} and int(np.isfinite(result.errors).sum()) == 10


def test_decide_counts_the_evaluations_a_score_call_reports():
    """Guidance spends an unconditional prediction per sample beside the pairs: decide returns the true count."""
    errors = np.arange(12, dtype=float).reshape(3, 4)
    conds = Conditionings.from_prompts(["a", "b", "c"])

    replayed, _ = replay(errors)

    def with_unconditional(indices, plan):
        return replayed(indices, plan), len(indices) * len(plan) + len(plan)

    plain = decide(replay(errors)[0], conds, Schedule.parse("4"), 1000)
    guided = decide(with_unconditional, conds, Schedule.parse("4"), 1000)
    assert plain.evaluations == plain.scored_pairs == 12
    assert guided.scored_pairs == 12 and guided.evaluations == 12 + 4


def test_classify_under_guidance_reports_its_unconditional_evaluations(classifiers, rgb_image):
    clf = classifiers["sd"]
    plain = clf.classify(rgb_image, prompts=["a cat", "a dog"], schedule="3")
    guided = clf.classify(rgb_image, prompts=["a cat", "a dog"], schedule="3", guidance=1.0)
    assert plain.evaluations == plain.scored_pairs == 6
    assert guided.scored_pairs == 6 and guided.evaluations == 6 + 3  # one unconditional call per sample
