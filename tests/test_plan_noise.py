"""Plans follow the official evaluation exactly; noise is keyed and has the stated distributions."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from dclib import NoiseDistribution, Plan, Schedule, even_plan, even_timesteps, fixed_plan, make_noise, uniform_plan, window_plan
from dclib.errors import InputError
from dclib.noise import expected_normal_norm


def official_stage_timesteps(n_samples, T=1000):
    """The official eval_prob_adaptive.py loop, written out as it is there."""
    max_n_samples = max(n_samples)
    start = T // max_n_samples // 2
    t_to_eval = list(range(start, T, T // max_n_samples))[:max_n_samples]
    t_evaluated, stages = set(), []
    for n in n_samples:
        curr = t_to_eval[len(t_to_eval) // n // 2::len(t_to_eval) // n][:n]
        curr = [t for t in curr if t not in t_evaluated]
        t_evaluated.update(curr)
        stages.append(curr)
    return stages


def test_even_timesteps_are_the_official_midpoints():
    assert even_timesteps(10) == [50, 150, 250, 350, 450, 550, 650, 750, 850, 950]
    assert even_timesteps(1) == [500]
    assert even_timesteps(1000) == list(range(1000))
    assert even_timesteps(250)[:3] == [2, 6, 10] and len(even_timesteps(250)) == 250
    plan = even_plan(5, n_trials=2)
    assert plan.timesteps == (100, 100, 300, 300, 500, 500, 700, 700, 900, 900)
    assert plan.repeats == (0, 1) * 5


@pytest.mark.parametrize("trials", [(25, 250), (20, 50, 100, 500), (50, 500), (100, 500), (50, 100, 500, 1000)])
def test_adaptive_stages_match_the_official_code(trials):
    keep = tuple(range(len(trials), 0, -1))
    stages = Schedule(keep, trials).stage_timesteps()
    assert stages == official_stage_timesteps(trials)
    # later stages reuse the earlier timesteps: all stages together are exactly the final stage's set
    assert sorted(t for s in stages for t in s) == sorted(official_stage_timesteps((trials[-1],))[0])


def test_strided_positions_of_a_grid():
    from dclib.plan import strided_positions

    assert strided_positions(100, 10) == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert strided_positions(100, 3) == [16, 49, 82]  # stride 33, half a stride in
    assert strided_positions(7, 7) == list(range(7))
    for bad in [(10, 0), (10, 11)]:
        with pytest.raises(InputError):
            strided_positions(*bad)


def test_schedule_parsing_and_evaluation_counts():
    s = Schedule.parse("5,1:25,250")
    assert s.keep == (5, 1) and s.trials == (25, 250)
    assert Schedule.parse("100") == Schedule((1,), (100,))
    # Table 6: CIFAR10 2750 and Food101 5120 total evaluations
    assert Schedule.parse("5,1:50,500").max_evaluations(10) == 2750
    assert Schedule.parse("20,10,5,1:20,50,100,500").max_evaluations(101) == 5120
    for bad in ["5,2:25,250", "1,5:25,250", "5,1:250,25", "5,1:25", "x", "0:10", "5,5,1:1,2,3"]:
        with pytest.raises(InputError):
            Schedule.parse(bad)


def test_fixed_window_and_uniform_plans():
    p = fixed_plan([0, 500, 999], 7)
    assert p.timesteps == (0, 500, 999, 0, 500, 999, 0) and p.repeats == (0, 0, 0, 1, 1, 1, 2)
    assert window_plan(500, 25, 3).timesteps == (475, 500, 525)
    u = uniform_plan(2000, 1000, np.random.default_rng(0))
    assert len(set(u.keys())) == 2000 and 0 <= min(u.timesteps) and max(u.timesteps) < 1000
    with pytest.raises(InputError, match="index 999"):
        fixed_plan([1000], 1).check(1000)


def test_noise_is_keyed_by_sample_not_by_position():
    big, small = even_plan(1000), even_plan(10)
    n_big, n_small = make_noise(big, (1, 4, 4), seed=3, image_id="a"), make_noise(small, (1, 4, 4), seed=3, image_id="a")
    for i, key in enumerate(small.keys()):
        assert torch.equal(n_small[i], n_big[big.keys().index(key)])  # Even 10 is a subset of Even 1000
    reordered = Plan(tuple(reversed(small.timesteps)), tuple(reversed(small.repeats)))
    assert torch.equal(make_noise(reordered, (1, 4, 4), seed=3, image_id="a").flip(0), n_small)
    assert not torch.equal(make_noise(small, (1, 4, 4), seed=3, image_id="b"), n_small)
    assert not torch.equal(make_noise(small, (1, 4, 4), seed=4, image_id="a"), n_small)


def test_noise_distribution_statistics():
    plan = Plan.from_timesteps([500] * 200)
    shape = (4, 16, 16)
    normal = make_noise(plan, shape, distribution="normal")
    assert abs(normal.mean().item()) < 0.01 and abs(normal.std().item() - 1) < 0.01
    assert torch.count_nonzero(make_noise(plan, shape, distribution="zero")) == 0
    for low, high in [(-1.0, 1.0), (-2.5, 2.5)]:
        trunc = make_noise(plan, shape, distribution=NoiseDistribution("truncated", low, high))
        assert trunc.min() >= low and trunc.max() <= high
        assert abs(trunc.std().item() - stats.truncnorm(low, high).std()) < 0.01
    d = math.prod(shape)
    expected = expected_normal_norm(d)
    mc = torch.randn(20000, d, generator=torch.Generator().manual_seed(0)).norm(dim=1).mean().item()
    assert abs(expected - mc) < 0.01
    rescaled = make_noise(plan, shape, distribution="expected_norm")
    torch.testing.assert_close(rescaled.flatten(1).norm(dim=1), torch.full((200,), expected), rtol=1e-5, atol=1e-4)
    assert NoiseDistribution.parse("truncated:-2.5,2.5") == NoiseDistribution("truncated", -2.5, 2.5)
    with pytest.raises(InputError):
        NoiseDistribution.parse("laplace")
