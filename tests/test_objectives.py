"""The elbo and vlb objectives against diffusers' own scheduler, and v-prediction models scored in v.

The references below take the variances from diffusers' ``DDPMScheduler._get_variance`` and the means from its
``alphas_cumprod`` (the formulas of its ``step``), in float64; the denoiser is a tiny random UNet2DModel.
"""
import math

import numpy as np
import pytest
import torch

from dclib import ScoreOptions, Scorer
from dclib.adapters.pixel_unet import PixelUNetAdapter
from dclib.errors import InputError
from dclib.objectives import GaussianPosterior, discretized_gaussian_log_likelihood, elbo_weights
from dclib.testing.tiny import tiny_pixel_pipeline

TIMESTEPS = [0, 1, 10, 500, 999]


def float64_scheduler(scheduler):
    """The scheduler with its abar table in float64 (its float32 table is off by ~1e-4 relative at t = 1)."""
    scheduler.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def diffusers_log_variance(scheduler, t, v):
    """log sigma_t^2 of p(x_{t-1} | x_t) from ``_get_variance``. At t = 0 diffusers adds no noise (its value there
    is never used); like improved DDPM / DiT, the decoder takes the t = 1 posterior variance instead."""
    kind = scheduler.config.variance_type
    if t == 0:
        clipped = scheduler._get_variance(1, variance_type="fixed_small").log()
        if kind != "learned_range":
            return clipped
        frac = (v + 1) / 2
        return frac * scheduler._get_variance(0, variance_type="fixed_large").log() + (1 - frac) * clipped
    variance = scheduler._get_variance(t, predicted_variance=v)
    return variance if kind == "learned_range" else variance.log()  # learned_range returns the log already


def approx_cdf(z):
    """DiT's approximation of the standard normal CDF, written out."""
    return 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))


def exact_cdf(z):
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def decoder_nll_bits(x0, mean, log_var, cdf=approx_cdf):
    """DiT's discretized Gaussian decoder NLL in bits per dimension: 256 bins of width 2/255 on [-1, 1], the
    outermost bins open to +-infinity."""
    std = np.exp(0.5 * log_var)
    upper = np.where(x0 > 0.999, np.inf, (x0 + 1 / 255 - mean) / std)
    lower = np.where(x0 < -0.999, -np.inf, (x0 - 1 / 255 - mean) / std)
    mass = cdf(upper) - cdf(lower)
    return float(np.mean(-np.log(np.maximum(mass, 1e-12))) / np.log(2))


def vlb_reference(scheduler, x0, x_t, t, eps_hat, v):
    """Bits per dimension: the decoder NLL at t = 0, else KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))."""
    abar = scheduler.alphas_cumprod
    a_t, a_prev = abar[t], abar[t - 1] if t > 0 else scheduler.one
    beta_t = 1 - a_t / a_prev
    coef_x0, coef_xt = a_prev.sqrt() * beta_t / (1 - a_t), (1 - beta_t).sqrt() * (1 - a_prev) / (1 - a_t)
    pred_x0 = (x_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()
    true_mean, model_mean = coef_x0 * x0 + coef_xt * x_t, coef_x0 * pred_x0 + coef_xt * x_t
    model_lv = diffusers_log_variance(scheduler, t, v)
    if t == 0:
        return decoder_nll_bits(x0.numpy(), model_mean.numpy(), model_lv.numpy())
    true_lv = scheduler._get_variance(t, variance_type="fixed_small").log()
    kl = 0.5 * (-1 + model_lv - true_lv + (true_lv - model_lv).exp()
                + (true_mean - model_mean) ** 2 * (-model_lv).exp())
    return float(kl.mean() / math.log(2))


def pixel_case(variance_type="fixed_small", prediction_type="epsilon"):
    """A tiny 1x8x8 class-conditional UNet behind its adapter, a quantised image with both extreme values, noise."""
    adapter = PixelUNetAdapter(tiny_pixel_pipeline(variance_type=variance_type, prediction_type=prediction_type))
    pixels = np.random.RandomState(0).randint(0, 256, (1, 8, 8))
    pixels[0, 0, :2] = (0, 255)
    x0 = torch.from_numpy(pixels / 127.5 - 1.0).float()
    noise = torch.randn(len(TIMESTEPS), *x0.shape, generator=torch.Generator().manual_seed(0))
    return adapter, x0, noise


def raw_output(adapter, x0, noise, label=3):
    """(x_t, the UNet's output) straight from diffusers, float64."""
    t = torch.tensor(TIMESTEPS)
    x_t = adapter.scheduler.add_noise(x0.expand(len(t), *x0.shape), noise, t)
    with torch.no_grad():
        out = adapter.unet(x_t, t, class_labels=torch.full((len(t),), label)).sample
    return x_t.double(), out.double()


def scores(adapter, x0, noise, objective, label=3):
    cond = adapter.encode_conditions([label])
    return Scorer(adapter, ScoreOptions(objective=objective), batch_size=8).score(
        x0, cond, torch.tensor(TIMESTEPS), noise).errors[0].double()


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_vlb_terms_match_diffusers_scheduler(variance_type):
    adapter, x0, noise = pixel_case(variance_type)
    assert adapter.variance_type == variance_type and adapter.learned_variance == (variance_type == "learned_range")
    got = scores(adapter, x0, noise, "vlb")
    x_t, out = raw_output(adapter, x0, noise)
    scheduler = float64_scheduler(adapter.scheduler)
    channels = x0.shape[0]
    eps_hat = out[:, :channels]
    v = out[:, channels:] if variance_type == "learned_range" else None
    ref = [vlb_reference(scheduler, x0.double(), x_t[i], t, eps_hat[i], None if v is None else v[i])
           for i, t in enumerate(TIMESTEPS)]
    np.testing.assert_allclose(got.numpy(), ref, rtol=2e-4)
    # the l2 half of uniform+vlb is the eps half of the output, for learned and fixed variances alike
    l2 = ((noise.double() - eps_hat) ** 2).mean((1, 2, 3))
    np.testing.assert_allclose(scores(adapter, x0, noise, "uniform").numpy(), l2.numpy(), rtol=1e-5)
    np.testing.assert_allclose(scores(adapter, x0, noise, "uniform+vlb").numpy(), (got + l2).numpy(), rtol=1e-5)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_elbo_weights_follow_the_scheduler_variance(variance_type):
    """With a fixed variance the KL for t >= 1 is w_t ||eps - eps^||^2 (in nats) plus a constant: the elbo
    objective and the vlb use the same sigma_t^2."""
    adapter, x0, noise = pixel_case(variance_type)
    elbo, vlb = scores(adapter, x0, noise, "elbo"), scores(adapter, x0, noise, "vlb") * math.log(2)
    scheduler = float64_scheduler(adapter.scheduler)
    t = torch.tensor(TIMESTEPS[1:])
    small = torch.stack([scheduler._get_variance(int(s), variance_type="fixed_small") for s in t])
    sigma2 = small if variance_type == "fixed_small" else scheduler.betas.double()[t]
    # the log-variance terms of the KL: zero when p's variance is q's own
    constant = 0.5 * (-1 + sigma2.log() - small.log() + small / sigma2)
    np.testing.assert_allclose(elbo[1:].numpy(), (vlb[1:] - constant).numpy(), rtol=2e-4)
    betas = scheduler.betas.double()
    abar = scheduler.alphas_cumprod
    w = betas[t] ** 2 / (2 * sigma2 * (1 - betas[t]) * (1 - abar[t]))
    torch.testing.assert_close(elbo_weights(betas, variance_type)[t], w)


def test_decoder_nll_at_t0_is_dits_discretized_gaussian_by_hand():
    """Item B: the t = 0 term in bits per dimension, by hand, including both open-ended edge bins."""
    x0 = torch.tensor([-1.0, -1 + 2 / 255, 0.2, 1.0]).view(1, 1, 2, 2)
    model_x0 = x0 + torch.tensor([0.004, -0.003, 0.0, -0.002]).view(1, 1, 2, 2)
    post = GaussianPosterior(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), "fixed_small")
    abar = post.abar[0].float()
    x_t = abar.sqrt() * x0 + 0.3  # any x_t: at t = 0 the decoder's mean is the x0 estimate (coef_xt = 0)
    eps_hat = (x_t - abar.sqrt() * model_x0) / (1 - abar).sqrt()  # the eps whose x0 estimate is model_x0
    got = post.vlb_terms(x0, x_t, torch.tensor([0]), eps_hat).mean().item()
    b0, b1 = 1e-4, 1e-4 + (0.02 - 1e-4) / 999
    sigma2 = b1 * b0 / (1 - (1 - b0) * (1 - b1))  # beta~_1 = beta_1 (1 - abar_0) / (1 - abar_1): t = 0, clipped
    x0n, meann = x0.double().numpy(), model_x0.double().numpy()
    assert got == pytest.approx(decoder_nll_bits(x0n, meann, np.log(sigma2)), rel=1e-4)
    # DiT's tanh approximation of the normal CDF moves the term by under 5% here
    assert got == pytest.approx(decoder_nll_bits(x0n, meann, np.log(sigma2), cdf=exact_cdf), rel=5e-2)
    # and dclib's helper is that approximation itself
    helper = -discretized_gaussian_log_likelihood(x0.double(), model_x0.double(),
                                                  torch.tensor(0.5 * np.log(sigma2))).mean() / math.log(2)
    assert float(helper) == pytest.approx(decoder_nll_bits(x0n, meann, np.log(sigma2)), rel=1e-9)


def test_v_prediction_is_scored_in_v_and_the_bounds_in_eps():
    """Item C: the uniform objective compares v with diffusers' get_velocity; elbo converts to eps first."""
    adapter, x0, noise = pixel_case(prediction_type="v_prediction")
    x_t, v_hat = raw_output(adapter, x0, noise)
    t = torch.tensor(TIMESTEPS)
    v = adapter.scheduler.get_velocity(x0.expand(len(t), *x0.shape), noise, t).double()
    np.testing.assert_allclose(scores(adapter, x0, noise, "uniform").numpy(), ((v - v_hat) ** 2).mean((1, 2, 3)),
                               rtol=1e-4)
    abar = adapter.scheduler.alphas_cumprod.double()[t].view(-1, 1, 1, 1)
    eps_hat = abar.sqrt() * v_hat + (1 - abar).sqrt() * x_t
    w = elbo_weights(adapter.betas, "fixed_small")[t]
    np.testing.assert_allclose(scores(adapter, x0, noise, "elbo").numpy(),
                               (w * ((noise.double() - eps_hat) ** 2).mean((1, 2, 3))).numpy(), rtol=1e-4)
    # samplers still get an eps estimate
    cond = adapter.encode_conditions([3]).expand(len(t))
    eps_pred, _ = adapter.predict(x_t.float(), t, cond)
    torch.testing.assert_close(eps_pred.double(), eps_hat, rtol=1e-4, atol=1e-5)


def test_learned_variance_types_need_a_variance_output():
    adapter, x0, noise = pixel_case("fixed_small")
    adapter.scheduler.register_to_config(variance_type="learned_range")  # an eps-only model with such a config
    with pytest.raises(InputError, match="predicts its variance"):
        Scorer(adapter, ScoreOptions(objective="vlb"))
    assert Scorer(adapter, ScoreOptions(objective="uniform")).options.objective == "uniform"
