"""Flow-matching models (SD3): x_t, the velocity target and the timestep convention against hand computations
and diffusers' own scheduler, through the same engine, classifier and CLI as every other family."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from dclib import DiffusionClassifier, ScoreOptions, Scorer, even_plan, logit_normal_plan
from dclib.adapters import StableDiffusion3Adapter
from dclib.adapters.flow_matching import flow_sigmas
from dclib.errors import InputError
from dclib.plan import logit_normal_timesteps

PROMPTS = ["a photo of a dog", "a photo of a cat", "a red car"]


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    from dclib.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-sd3"), names=["sd3"])["sd3"]


@pytest.fixture(scope="module")
def clf(sd3_folder):
    return DiffusionClassifier.from_pretrained(sd3_folder)


@pytest.fixture(scope="module")
def pixels(clf):
    return clf.adapter.preprocess((np.random.RandomState(0).rand(40, 52, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def x0(clf, pixels):
    return clf.encode_image(pixels)[0]


class OracleTransformer:
    """Predicts the exact velocity eps - x0 = (x_t - x0) / sigma, reading sigma from the timestep it is given
    (sigma * T), plus a per-prompt offset: the error is then known by hand."""

    def __init__(self, x0, pooled_to_offset, T=1000):
        self.x0, self.table, self.T = x0, pooled_to_offset, T

    def __call__(self, hidden_states, timestep, encoder_hidden_states, pooled_projections):
        sigma = (timestep / self.T).view(-1, 1, 1, 1)
        offset = torch.stack([self.table[tuple(p.tolist())] for p in pooled_projections]).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(hidden_states - self.x0) / sigma + offset)


def test_loads_behind_the_flow_adapter_with_shifted_latents(clf, sd3_folder):
    a = clf.adapter
    assert isinstance(a, StableDiffusion3Adapter) and a.flow_matching and a.text_conditioned
    assert a.sample_shape == (4, 8, 8) and a.resolution == 16
    assert a.betas is None and a.describe()["shift"] == 3.0
    pixels = a.preprocess((np.random.RandomState(1).rand(20, 20, 3) * 255).astype(np.uint8))
    x0 = a.encode_images(pixels[None])
    cfg = a.vae.config
    assert cfg.shift_factor != 0
    with torch.no_grad():
        mean = a.vae.encode(pixels[None]).latent_dist.mean
        torch.testing.assert_close(x0, (mean - cfg.shift_factor) * cfg.scaling_factor)
        torch.testing.assert_close(a.decode(x0), a.vae.decode(mean).sample, rtol=1e-5, atol=1e-5)


def test_sigmas_timesteps_and_x_t_follow_the_scheduler(clf, x0):
    a, T, shift = clf.adapter, 1000, 3.0
    s = np.arange(1, T + 1) / T  # t = 0 .. T-1 is s = (t + 1) / T
    by_hand = shift * s / (1 + (shift - 1) * s)
    np.testing.assert_allclose(a.sigmas.numpy(), by_hand, rtol=1e-6)
    np.testing.assert_allclose(a.model_timesteps.numpy(), by_hand * T, rtol=1e-6)  # the transformer sees sigma * T
    assert a.sigmas[-1] == 1.0  # t = T - 1 is pure noise

    t = torch.tensor([0, 1, 250, 500, 999])
    eps = torch.randn(len(t), *x0.shape, generator=torch.Generator().manual_seed(0))
    xt = a.q_sample(x0.expand(len(t), *x0.shape), eps, t)
    sigma = torch.tensor(by_hand, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(xt, (1 - sigma) * x0 + sigma * eps)
    # diffusers' forward process at the scheduler timestep of the same sigma (its grid runs in decreasing noise)
    sched = type(a.scheduler).from_config(a.scheduler.config)
    ref = sched.scale_noise(x0.expand(len(t), *x0.shape), sched.timesteps[T - 1 - t], eps)
    assert torch.equal(xt, ref)
    assert torch.equal(a.target(x0[None], eps, t), eps - x0)
    torch.testing.assert_close(a.to_eps(eps - x0, xt, t), eps, rtol=1e-5, atol=1e-5)  # x_t = eps - (1 - sigma) v


def test_exact_velocity_gives_zero_error_and_losses_apply(clf, pixels, x0, monkeypatch):
    a = clf.adapter
    pooled = a.unpack_condition(a.encode_conditions(PROMPTS))[1]
    offsets = {tuple(p.tolist()): torch.tensor(b) for p, b in zip(pooled, [0.0, 0.1, -0.3])}
    monkeypatch.setattr(a, "transformer", OracleTransformer(x0, offsets))
    conds = clf.conditionings(PROMPTS)
    for loss, expected in [("l2", [0, 0.01, 0.09]), ("l1", [0, 0.1, 0.3]), ("huber", [0, 0.005, 0.045])]:
        errors = clf.score(x0, conds, even_plan(10), options=ScoreOptions(loss=loss)).errors
        np.testing.assert_allclose(errors.numpy(), np.repeat([expected], 10, 0).T, atol=1e-5 if loss == "l1" else 1e-6)
    result = clf.classify(pixels, prompts=PROMPTS, schedule=5)
    assert result.prediction_name == "a photo of a dog"
    assert result.to_dict()["conditioning_mean_errors"][0] < 1e-9
    # guidance on velocities: (1 + w) (v + b) - w v = v + (1 + w) b, and the empty prompt here gets b = 0
    offsets[tuple(a.unpack_condition(a.null_condition())[1][0].tolist())] = torch.tensor(0.0)
    guided = clf.score(x0, conds, even_plan(4), options=ScoreOptions(guidance=1.0)).errors
    np.testing.assert_allclose(guided.numpy()[:, 0], [0, 0.04, 0.36], atol=1e-6)


def test_same_seed_same_errors_and_batched_equals_looped(clf, x0):
    conds = clf.conditionings(PROMPTS)
    plan = even_plan(4)
    first = clf.score(x0, conds, plan, seed=3, image_id="img", batch_size=64).errors
    again = clf.score(x0, conds, plan, seed=3, image_id="img", batch_size=64).errors
    looped = clf.score(x0, conds, plan, seed=3, image_id="img", batch_size=1).errors
    other_seed = clf.score(x0, conds, plan, seed=4, image_id="img", batch_size=64).errors
    assert torch.equal(first, again) and not torch.equal(first, other_seed)
    torch.testing.assert_close(looped, first, rtol=1e-5, atol=1e-6)
    assert torch.equal(looped.mean(1).argsort(), first.mean(1).argsort())  # the same ranking, so the same prediction


def test_classify_through_the_classifier_and_the_cli(clf, sd3_folder, tmp_path, capsys):
    from dclib.cli import main

    path = tmp_path / "img.png"
    Image.fromarray((np.random.RandomState(2).rand(24, 30, 3) * 255).astype(np.uint8)).save(path)
    result = clf.classify(str(path), prompts=PROMPTS, schedule="2,1:2,4")
    d = result.to_dict()
    assert d["prediction_name"] in PROMPTS and d["evaluations"] == 3 * 2 + 2 * 2
    assert np.isfinite(d["mean_errors"]).all()
    assert main(["classify", str(path), "--model", sd3_folder, "--prompts", *PROMPTS, "--schedule", "2,1:2,4",
                 "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["prediction_name"] == d["prediction_name"] and row["evaluations"] == d["evaluations"]
    np.testing.assert_allclose(row["conditioning_mean_errors"], d["conditioning_mean_errors"], rtol=1e-6)


def test_prompt_embeddings_are_the_pipelines_and_computed_once(clf):
    a = clf.adapter
    embeds, _, pooled, _ = a.pipe.encode_prompt(PROMPTS[:2], None, None, do_classifier_free_guidance=False)
    got_embeds, got_pooled = a.unpack_condition(a.encode_conditions(PROMPTS[:2]))
    assert got_embeds.shape == (2, 77 + 256, 64)  # CLIP tokens, then T5 tokens
    torch.testing.assert_close(got_embeds, embeds)
    torch.testing.assert_close(got_pooled, pooled)
    calls = []
    original = a._encode_conditions
    a._encode_conditions = lambda prompts: calls.append(list(prompts)) or original(prompts)
    try:
        a.encode_conditions(["a green square", "a dog"])
        a.encode_conditions(["a dog", "a green square"])
    finally:
        a._encode_conditions = original
    assert calls == [["a green square", "a dog"]]


def test_without_t5_its_tokens_are_zeros(clf, x0):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**{**clf.adapter.pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    a = StableDiffusion3Adapter(pipe)
    embeds, pooled = a.unpack_condition(a.encode_conditions(["a dog"]))
    with_t5 = clf.adapter.unpack_condition(clf.adapter.encode_conditions(["a dog"]))
    assert embeds.shape == with_t5[0].shape and not embeds[:, 77:].any()
    torch.testing.assert_close(embeds[:, :77], with_t5[0][:, :77])
    torch.testing.assert_close(pooled, with_t5[1])
    assert torch.isfinite(DiffusionClassifier(a).score(x0, clf.conditionings(PROMPTS), even_plan(2)).errors).all()


@pytest.mark.parametrize("objective", ["elbo", "vlb", "uniform+vlb"])
def test_diffusion_only_objectives_are_refused(clf, pixels, objective):
    with pytest.raises(InputError, match="not defined for flow-matching models"):
        clf.classify(pixels, prompts=PROMPTS[:2], schedule=2, objective=objective)
    with pytest.raises(InputError, match="not defined for flow-matching models"):
        Scorer(clf.adapter, ScoreOptions(objective=objective))


def test_ddim_inversion_is_refused(clf, x0):
    from dclib.interpret import invert_and_reconstruct

    with pytest.raises(InputError, match="flow-matching"):
        invert_and_reconstruct(clf.adapter, x0, "a dog", ["a dog"])


def test_dynamic_shifting_matches_the_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    sigmas, timesteps = flow_sigmas(sched, image_seq_len=1024)
    sched.set_timesteps(1000, mu=calculate_shift(1024, 256, 4096, 0.5, 1.15))
    torch.testing.assert_close(sigmas, sched.sigmas[:-1].flip(0))
    torch.testing.assert_close(timesteps, sched.timesteps.flip(0))
    with pytest.raises(InputError, match="token count"):
        flow_sigmas(sched)


def test_logit_normal_plan_is_sd3s_training_density_and_deterministic():
    T = 1000
    ts = logit_normal_timesteps(5, T, 7)
    z = np.random.default_rng(7).normal(0.0, 1.0, 5)
    assert ts == [T - 1 - int(T / (1 + np.exp(-v))) for v in z]  # index floor(sigmoid(z) T) of the decreasing grid
    plan = logit_normal_plan(4000, T, 7)
    assert plan == logit_normal_plan(4000, T, np.random.default_rng(7)) != logit_normal_plan(4000, T, 8)
    t = np.array(plan.timesteps)
    assert t.min() >= 0 and t.max() < T and abs(t.mean() - (T - 1) / 2) < 15
    assert np.mean(np.abs(t - 500) < 250) > 0.6  # logit-normal puts ~68% of samples in the middle half
    assert len(set(plan.keys())) == len(plan)  # repeated timesteps get fresh repeat indices (fresh noise)
    assert logit_normal_plan(100, T, 0, mean=2.0).timesteps != logit_normal_plan(100, T, 0).timesteps
