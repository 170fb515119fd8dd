"""The scoring engine against hand computations and its invariances."""
import numpy as np
import pytest
import torch

from dclib import Plan, ScoreOptions, Scorer, even_plan, make_noise
from dclib.errors import InputError
from fakes import LinearAdapter


def setup(offsets=(0.0, 0.3, -0.2), n=6, seed=0):
    adapter = LinearAdapter(offsets)
    x0 = torch.linspace(-1, 1, 16).view(1, 4, 4)
    plan = Plan.from_timesteps([0, 100, 500, 500, 900, 999][:n])
    noise = make_noise(plan, x0.shape, seed=seed, image_id="img")
    return adapter, x0, plan, noise


def expected(adapter, x0, plan, noise, loss="l2", w=0.0, crop=0):
    """Direct numpy computation of the error matrix, one pair at a time."""
    abar = adapter.scheduler.alphas_cumprod.double().numpy()
    x0n, out = x0.double().numpy(), np.zeros((len(adapter.offsets), len(plan)))
    for c, b in enumerate(adapter.offsets.double().numpy()):
        for s, t in enumerate(plan.timesteps):
            eps = noise[s].double().numpy()
            xt = np.sqrt(abar[t]) * x0n + np.sqrt(1 - abar[t]) * eps
            pred_c, pred_u = adapter.a * xt + b, adapter.a * xt
            pred = (1 + w) * pred_c - w * pred_u
            d = eps - pred
            if crop:
                d = d[..., crop:-crop, crop:-crop]
            if loss == "l2":
                e = d ** 2
            elif loss == "l1":
                e = np.abs(d)
            else:
                e = np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5)
            out[c, s] = e.mean()
    return out


@pytest.mark.parametrize("loss", ["l2", "l1", "huber"])
def test_losses_match_hand_computation(loss):
    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    got = Scorer(adapter, ScoreOptions(loss=loss)).score(x0, cond, torch.tensor(plan.timesteps), noise)
    np.testing.assert_allclose(got.errors.numpy(), expected(adapter, x0, plan, noise, loss), rtol=1e-5, atol=1e-6)
    assert got.evaluations == 3 * len(plan)


def test_l2_hand_value_for_a_perfect_and_an_offset_model():
    # a = 0 and offset 0: eps_pred = 0, so the l2 error is the mean of eps^2; an offset b adds b^2 - 2 b mean(eps).
    adapter = LinearAdapter([0.0, 1.0], a=0.0)
    x0 = torch.zeros(1, 4, 4)
    eps = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 16
    got = Scorer(adapter).score(x0, adapter.encode_conditions([0, 1]), torch.tensor([10]), eps).errors
    e = eps.flatten().double()
    assert got[0, 0].item() == pytest.approx((e ** 2).mean().item(), rel=1e-6)
    assert got[1, 0].item() == pytest.approx(((e - 1) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, -1.0])
def test_classifier_free_guidance_formula(w):
    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    result = Scorer(adapter, ScoreOptions(guidance=w)).score(x0, cond, torch.tensor(plan.timesteps), noise)
    np.testing.assert_allclose(result.errors.numpy(), expected(adapter, x0, plan, noise, w=w), rtol=1e-5, atol=1e-6)
    # the unconditional predictions are made once per sample, not once per conditioning
    assert result.evaluations == 3 * len(plan) + (len(plan) if w else 0)


@pytest.mark.parametrize("crop", [1])
def test_error_map_cropping(crop):
    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    result = Scorer(adapter, ScoreOptions(crop=crop)).score(x0, cond, torch.tensor(plan.timesteps), noise,
                                                            return_maps=True)
    np.testing.assert_allclose(result.errors.numpy(), expected(adapter, x0, plan, noise, crop=crop), rtol=1e-5)
    assert result.maps.shape == (3, len(plan), 2, 2)
    np.testing.assert_allclose(result.maps.mean((-1, -2)).numpy(), result.errors.numpy(), rtol=1e-5)
    with pytest.raises(InputError):
        Scorer(adapter, ScoreOptions(crop=2)).score(x0, cond, torch.tensor(plan.timesteps), noise)


@pytest.mark.parametrize("w, crop", [(0.0, 0), (1.5, 1)])
def test_several_losses_from_one_pass_match_hand_computation(w, crop):
    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    own = ScoreOptions(loss="l1", guidance=w, crop=crop)
    variants = tuple(ScoreOptions(loss=loss, guidance=w, crop=crop) for loss in ("huber", "l2", "l1"))
    result = Scorer(adapter, own).score(x0, cond, torch.tensor(plan.timesteps), noise, variants=variants)
    assert list(result.by_options) == [own, *variants[:2]] and result.by_options[own] is result.errors
    for options, errors in result.by_options.items():
        np.testing.assert_allclose(errors.numpy(), expected(adapter, x0, plan, noise, options.loss, w=w, crop=crop),
                                   rtol=1e-5, atol=1e-6)
    # the denoiser ran once per pair, not once per loss
    assert result.evaluations == 3 * len(plan) + (len(plan) if w else 0)
    assert Scorer(adapter).score(x0, cond, torch.tensor(plan.timesteps), noise).by_options is None
    with pytest.raises(InputError, match="unknown loss"):
        ScoreOptions(loss="l3")
    with pytest.raises(InputError, match="a scoring variant is a ScoreOptions"):
        Scorer(adapter).score(x0, cond, torch.tensor(plan.timesteps), noise, variants=("l1",))


def test_guidance_weights_crops_and_objectives_from_one_pass_equal_their_own_runs(classifiers, rgb_image):
    """Variants differing in guidance, crop and objective share the conditional (and one unconditional) pass."""
    clf = classifiers["dit"]  # learned variance: the VLB objective uses the model's own variance output
    x0, image_id = clf.encode_image(rgb_image)
    cond = clf.adapter.encode_conditions([0, 3, 7])
    plan = even_plan(6)
    variants = (ScoreOptions(guidance=2.0), ScoreOptions(guidance=-1.0, crop=1), ScoreOptions(objective="vlb"),
                ScoreOptions(objective="elbo"), ScoreOptions(loss="huber", crop=1))
    shared = Scorer(clf.adapter, batch_size=7).score_plan(x0, cond, plan, 5, image_id, variants=variants)
    for options in (ScoreOptions(), *variants):
        alone = Scorer(clf.adapter, options, batch_size=7).score_plan(x0, cond, plan, 5, image_id).errors
        torch.testing.assert_close(shared.by_options[options], alone, rtol=1e-5, atol=1e-7)
    assert shared.evaluations == 3 * len(plan) + len(plan)  # one unconditional pass serves both weights


@pytest.mark.parametrize("w, crop, batch_size", [(0.0, 0, 64), (1.5, 1, 5)])
def test_unshared_noise_scores_each_conditioning_on_its_own_noise_in_one_pass(w, crop, batch_size):
    adapter, x0, plan, _ = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    scorer = Scorer(adapter, ScoreOptions(guidance=w, crop=crop), batch_size=batch_size)
    result = scorer.score_plan(x0, cond, plan, seed=3, image_id="img", shared_noise=False)
    for c in range(3):  # conditioning c against its own keyed noise, computed by hand one pair at a time
        own = make_noise(plan, x0.shape, seed=3, image_id=f"img|cond{c}")
        np.testing.assert_allclose(result.errors[c].numpy(), expected(adapter, x0, plan, own, w=w, crop=crop)[c],
                                   rtol=1e-5, atol=1e-6)
    # every (conditioning, sample) pair has its own x_t, so guidance needs one unconditional call per pair
    assert result.evaluations == 3 * len(plan) * (2 if w else 1)
    with pytest.raises(InputError, match="noise must have shape"):
        scorer.score(x0, cond, torch.tensor(plan.timesteps), torch.zeros(2, len(plan), *x0.shape))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batched_equals_looped(batch_size):
    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1, 2])
    batched = Scorer(adapter, batch_size=batch_size).score(x0, cond, torch.tensor(plan.timesteps), noise).errors
    looped = torch.stack([
        torch.cat([Scorer(adapter, batch_size=1).score(x0, cond[c:c + 1], torch.tensor([t]), noise[s:s + 1]).errors[0]
                   for s, t in enumerate(plan.timesteps)])
        for c in range(3)])
    assert torch.equal(batched, looped)


def test_q_sample_equals_scheduler_add_noise():
    from diffusers import DDPMScheduler

    from dclib.adapters.base import DiffusionAdapter

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    adapter = DiffusionAdapter(scheduler)
    x0, eps = torch.randn(5, 4, 8, 8), torch.randn(5, 4, 8, 8)
    t = torch.tensor([0, 10, 500, 998, 999])
    torch.testing.assert_close(adapter.q_sample(x0, eps, t), scheduler.add_noise(x0, eps, t))


def test_v_prediction_converted_to_eps():
    from diffusers import DDPMScheduler

    from dclib.adapters.base import DiffusionAdapter

    adapter = DiffusionAdapter(DDPMScheduler(prediction_type="v_prediction"))
    adapter.prediction_type = "v_prediction"
    x0, eps, t = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8), torch.tensor([1, 250, 600, 999])
    x_t = adapter.q_sample(x0, eps, t)
    abar = adapter.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0  # the model's training target
    torch.testing.assert_close(adapter.to_eps(v, x_t, t), eps, atol=1e-5, rtol=1e-5)


def test_elbo_objective_weights():
    from dclib.objectives import elbo_weights

    adapter, x0, plan, noise = setup()
    cond = adapter.encode_conditions([0, 1])
    uniform = Scorer(adapter).score(x0, cond, torch.tensor(plan.timesteps), noise).errors
    weighted = Scorer(adapter, ScoreOptions(objective="elbo")).score(x0, cond, torch.tensor(plan.timesteps), noise).errors
    betas = adapter.betas
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    # the fake scheduler has no variance_type: DDPMScheduler's default fixed_small, sigma_t^2 = beta~_t, whose
    # weight is beta_t / (2 alpha_t (1 - abar_{t-1})); at t = 0 sigma_0^2 is clipped to beta~_1
    w = betas / (2 * (1 - betas) * (1 - abar_prev))
    w[0] = betas[0] ** 2 / (2 * betas[1] * (1 - abar[0]) / (1 - abar[1]) * (1 - betas[0]) * (1 - abar[0]))
    torch.testing.assert_close(elbo_weights(betas), w)
    torch.testing.assert_close(weighted, uniform * w[list(plan.timesteps)].float(), rtol=1e-5, atol=1e-7)
    # fixed_large, sigma_t^2 = beta_t: DDPM eq. 12 for t >= 1
    large = betas / (2 * (1 - betas) * (1 - abar))
    torch.testing.assert_close(elbo_weights(betas, "fixed_large")[1:], large[1:])


def test_options_are_validated():
    with pytest.raises(InputError):
        ScoreOptions(loss="l3")
    with pytest.raises(InputError):
        ScoreOptions(objective="vlb", loss="l1")
    learned_config = LinearAdapter([0.0])
    learned_config.scheduler.config.variance_type = "learned_range"  # but the model outputs eps only
    with pytest.raises(InputError, match="predicts its variance"):
        Scorer(learned_config, ScoreOptions(objective="vlb"))
    adapter, x0, plan, noise = setup()
    with pytest.raises(InputError, match="noise must have shape"):
        Scorer(adapter).score(x0, adapter.encode_conditions([0]), torch.tensor(plan.timesteps), noise[:2])
    with pytest.raises(InputError, match="timesteps"):
        Scorer(adapter).score(x0, adapter.encode_conditions([0]), torch.tensor([1000]), noise[:1])


def test_explicit_timesteps_and_noise_reproduce_an_external_implementation(classifiers, rgb_image):
    """The low-level call takes explicit t and eps, and matches the official evaluation loop written out."""
    clf = classifiers["sd"]
    a = clf.adapter
    x0, _ = clf.encode_image(rgb_image)
    prompts = ["a photo of a dog", "a photo of a cat"]
    conds = clf.conditionings(prompts)
    ts = torch.tensor([5, 250, 995])
    eps = torch.randn(3, *x0.shape, generator=torch.Generator().manual_seed(3))
    got = clf.score(x0, conds, timesteps=ts, noise=eps).errors
    # official eval_error: noised latent from scheduler.alphas_cumprod, unet(x_t, t, text), mse mean over (1,2,3)
    tok = a.tokenizer(prompts, padding="max_length", max_length=a.tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    with torch.inference_mode():
        emb = a.text_encoder(tok.input_ids)[0]
        ref = torch.zeros(2, 3)
        abar = a.scheduler.alphas_cumprod
        for c in range(2):
            for s in range(3):
                xt = x0 * abar[ts[s]] ** 0.5 + eps[s] * (1 - abar[ts[s]]) ** 0.5
                pred = a.unet(xt[None], ts[s:s + 1], encoder_hidden_states=emb[c:c + 1]).sample
                ref[c, s] = torch.nn.functional.mse_loss(eps[s:s + 1], pred, reduction="none").mean()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["sd", "sd-v", "dit", "pixel"])
def test_same_seed_same_errors_whatever_the_batch_size(classifiers, rgb_image, name):
    clf = classifiers[name]
    conds = clf.conditionings(["a photo of a dog", "a red car", "a blue circle"]) if clf.adapter.text_conditioned \
        else clf.conditionings(class_labels=[0, 3, 7])
    x0, image_id = clf.encode_image(rgb_image)
    plan = even_plan(10, n_trials=2)
    runs = [clf.score(x0, conds, plan, seed=7, image_id=image_id, batch_size=b).errors for b in (1, 7, 64)]
    # CPU kernels may round differently for different batch shapes; errors agree to float32 precision
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], rtol=1e-5, atol=1e-6)
    again = clf.score(x0, conds, plan, seed=7, image_id=image_id, batch_size=7).errors
    assert torch.equal(again, runs[1])
    other_seed = clf.score(x0, conds, plan, seed=8, image_id=image_id, batch_size=7).errors
    assert not torch.allclose(other_seed, runs[1])


def test_auto_batch_size():
    from dclib.scoring import batch_from_memory

    # 10 GB free, 30 MB per pair, 80% usable -> 266 pairs -> 264 (a multiple of 8)
    assert batch_from_memory(10e9, 30e6) == 264
    assert batch_from_memory(10e9, 1e3) == 1024  # capped
    assert batch_from_memory(1e6, 30e6) == 1  # always at least one pair
    assert batch_from_memory(5 * 30e6 / 0.8, 30e6) == 5  # below one multiple: not rounded down to 0


def test_auto_batch_size_on_cpu_and_through_the_api(classifiers, rgb_image):
    from dclib.errors import InputError
    from dclib.scoring import AUTO_CPU_BATCH, Scorer

    clf = classifiers["pixel"]
    assert Scorer(clf.adapter, batch_size="auto").batch_size == AUTO_CPU_BATCH
    with pytest.raises(InputError, match="auto"):
        Scorer(clf.adapter, batch_size="big")
    a = clf.classify(rgb_image, schedule=5, batch_size="auto")
    b = clf.classify(rgb_image, schedule=5, batch_size=AUTO_CPU_BATCH)
    assert np.array_equal(a.errors, b.errors)
