"""Adapters load through from_pretrained and prepare images and conditionings as the paper does."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dclib import DiffusionClassifier, ScoreOptions
from dclib.errors import InputError, ModelNotFoundError
from dclib.images import preprocess, resize_center_crop
from dclib.testing import build_clip_tokenizer


def test_each_family_loads_behind_its_adapter(classifiers):
    kinds = {name: type(c.adapter).__name__ for name, c in classifiers.items()}
    assert kinds == {"sd": "StableDiffusionAdapter", "sd-v": "StableDiffusionAdapter", "dit": "DiTAdapter",
                     "pixel": "PixelUNetAdapter"}
    assert classifiers["sd-v"].adapter.prediction_type == "v_prediction"
    assert classifiers["dit"].adapter.learned_variance
    assert classifiers["dit"].adapter.class_names[3] == "class_3"
    assert classifiers["pixel"].adapter.class_names == [str(i) for i in range(10)]
    assert classifiers["pixel"].adapter.null_class == 10


def test_different_prompts_get_different_token_ids(classifiers):
    tok = classifiers["sd"].adapter.tokenizer
    ids = tok(["a photo of a dog", "a photo of a cat", "a red circle left of a blue square"]).input_ids
    assert ids[0] != ids[1] and len(set(map(tuple, ids))) == 3
    assert len(ids[0]) == 7  # <bos> a photo of a dog <eos>: one token per known word
    assert len(build_clip_tokenizer(["zebra"])) > 512


def test_prompt_embeddings_are_computed_once(classifiers):
    a = classifiers["sd"].adapter
    calls = []
    original = a._encode_conditions
    a._encode_conditions = lambda prompts: calls.append(list(prompts)) or original(prompts)
    try:
        a.encode_conditions(["new prompt one", "new prompt two"])
        a.encode_conditions(["new prompt two", "new prompt one", "new prompt three"])
    finally:
        a._encode_conditions = original
    assert calls == [["new prompt one", "new prompt two"], ["new prompt three"]]


def test_latent_is_vae_posterior_mean_times_scaling_factor(classifiers, rgb_image):
    a = classifiers["sd"].adapter
    pixels = a.preprocess(rgb_image)
    assert pixels.shape == (3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    x0 = a.encode_images(pixels[None])[0]
    with torch.no_grad():
        direct = a.vae.encode(pixels[None]).latent_dist.mean[0] * a.vae.config.scaling_factor
    torch.testing.assert_close(x0, direct)
    assert tuple(x0.shape) == a.sample_shape == (4, 16, 16)


def test_resize_shortest_edge_bicubic_then_center_crop():
    img = Image.fromarray((np.arange(60 * 90 * 3) % 251).astype(np.uint8).reshape(60, 90, 3))
    out = resize_center_crop(img, 30)
    ref = img.resize((45, 30), Image.Resampling.BICUBIC).crop((8, 0, 38, 30))  # left = round(15 / 2) = 8
    assert out.size == (30, 30) and np.array_equal(np.asarray(out), np.asarray(ref))


def _normalized(image):
    """torchvision's ToTensor() then Normalize(0.5, 0.5), written out: [C, H, W] in [-1, 1]."""
    return torch.from_numpy((np.asarray(image, np.float32) / 255 - 0.5) / 0.5).permute(2, 0, 1)


def test_sd_images_are_prepared_as_the_official_sd_evaluation(classifiers, rgb_image):
    """torchvision Resize(32, BICUBIC): the short side 40 -> 32, the long one int(32 * 52 / 40) = 41; then
    CenterCrop(32): left = round((41 - 32) / 2) = 4 (round half to even), top 0."""
    ref = Image.fromarray(rgb_image).resize((41, 32), Image.Resampling.BICUBIC).crop((4, 0, 36, 32))
    assert torch.equal(classifiers["sd"].adapter.preprocess(rgb_image), _normalized(ref))


def test_dit_images_are_prepared_as_the_official_dit_evaluation(classifiers):
    """ADM's center_crop_arr at 16 px on a 150 x 70 image: BOX halvings while the short side is >= 32
    (150x70 -> 75x35 -> 37x17), bicubic to a short side of 16 with rounded sides (37 * 16 / 17 = 34.8 -> 35),
    then the center crop with offsets rounded down ((35 - 16) // 2 = 9)."""
    image = Image.fromarray((np.arange(70 * 150 * 3) * 7 % 256).astype(np.uint8).reshape(70, 150, 3))
    ref = image.resize((75, 35), Image.Resampling.BOX).resize((37, 17), Image.Resampling.BOX)
    ref = ref.resize((35, 16), Image.Resampling.BICUBIC).crop((9, 0, 25, 16))
    a = classifiers["dit"].adapter
    assert a.resolution == 16
    got = a.preprocess(image)
    assert torch.equal(got, _normalized(ref))
    assert not torch.equal(got, preprocess(image, 16))  # the SD / paper path gives other pixels here


def test_v_prediction_model_scores_its_v_error(classifiers, rgb_image):
    """A v-prediction model is scored in v, the space it was trained in (as flow models on their velocity);
    the eps error would be the same per sample times abar_t."""
    clf = classifiers["sd-v"]
    a = clf.adapter
    x0, _ = clf.encode_image(rgb_image)
    ts = torch.tensor([100, 700])
    eps = torch.randn(2, *x0.shape, generator=torch.Generator().manual_seed(0))
    errors = clf.score(x0, clf.conditionings(["a dog"]), timesteps=ts, noise=eps).errors[0]
    emb = a.encode_conditions(["a dog"])
    with torch.inference_mode():
        xt = a.scheduler.add_noise(x0.expand(2, *x0.shape), eps, ts)
        v_hat = a.unet(xt, ts, encoder_hidden_states=emb.expand(2, -1, -1)).sample
        v = a.scheduler.get_velocity(x0.expand(2, *x0.shape), eps, ts)
        abar = a.scheduler.alphas_cumprod[ts].view(-1, 1, 1, 1)
        eps_hat = abar.sqrt() * v_hat + (1 - abar).sqrt() * xt
    torch.testing.assert_close(errors, ((v - v_hat) ** 2).mean((1, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(errors * abar.flatten(), ((eps - eps_hat) ** 2).mean((1, 2, 3)), rtol=1e-3, atol=1e-6)


def _vlb_reference(x0, xt, t, eps_hat, v, betas):
    """Improved-DDPM / DiT variational bound for one sample, in float64 numpy, straight from the formulas."""
    b = betas.double().numpy()
    a = 1 - b
    abar = np.cumprod(a)
    abar_prev = np.append(1.0, abar[:-1])
    x0, xt, eps_hat, v = (z.double().numpy() for z in (x0, xt, eps_hat, v))
    post_var = b * (1 - abar_prev) / (1 - abar)
    log_post = np.log(np.append(post_var[1], post_var[1:]))[t]
    mean = lambda start: (b[t] * np.sqrt(abar_prev[t]) / (1 - abar[t])) * start + \
        ((1 - abar_prev[t]) * np.sqrt(a[t]) / (1 - abar[t])) * xt
    pred_x0 = (xt - np.sqrt(1 - abar[t]) * eps_hat) / np.sqrt(abar[t])
    log_var = (v + 1) / 2 * np.log(b[t]) + (1 - (v + 1) / 2) * log_post
    m_true, m_model = mean(x0), mean(pred_x0)
    if t == 0:
        from scipy.stats import norm
        std = np.exp(0.5 * log_var)
        upper = np.where(x0 > 0.999, np.inf, x0 + 1 / 255)
        lower = np.where(x0 < -0.999, -np.inf, x0 - 1 / 255)
        p = norm.cdf((upper - m_model) / std) - norm.cdf((lower - m_model) / std)
        return float(np.mean(-np.log(np.maximum(p, 1e-12))) / np.log(2))
    kl = 0.5 * (-1 + log_var - log_post + np.exp(log_post - log_var) + (m_true - m_model) ** 2 * np.exp(-log_var))
    return float(kl.mean() / np.log(2))


@pytest.mark.parametrize("t", [0, 1, 300, 999])
def test_dit_vlb_objective_against_a_direct_computation(classifiers, rgb_image, t):
    clf = classifiers["dit"]
    a = clf.adapter
    x0, _ = clf.encode_image(rgb_image)
    eps = torch.randn(1, *x0.shape, generator=torch.Generator().manual_seed(t))
    ts = torch.tensor([t])
    conds = clf.conditionings(class_labels=[2])
    got = {o: clf.score(x0, conds, timesteps=ts, noise=eps, options=ScoreOptions(objective=o)).errors[0, 0].item()
           for o in ("vlb", "uniform", "uniform+vlb")}
    with torch.inference_mode():
        xt = a.q_sample(x0[None], eps, ts)
        out = a.transformer(xt, timestep=ts, class_labels=torch.tensor([2])).sample
    eps_hat, v = out[:, :4], out[:, 4:]
    ref = _vlb_reference(x0[None], xt, t, eps_hat, v, a.betas)
    # t = 0 uses the tanh approximation of the normal CDF, as DiT does
    assert got["vlb"] == pytest.approx(ref, rel=1e-3 if t else 2e-2)
    assert got["uniform+vlb"] == pytest.approx(got["vlb"] + got["uniform"], rel=1e-5)


def test_vlb_is_zero_for_the_exact_posterior():
    from dclib.objectives import GaussianPosterior

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    post = GaussianPosterior(betas)
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([5, 400, 999])
    abar = post.abar[t].float().view(-1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    terms = post.vlb_terms(x0, xt, t, eps, torch.full_like(x0, -1.0))  # v = -1: variance = posterior variance
    assert terms.abs().max() < 1e-4
    assert post.vlb_terms(x0, xt, t, eps + 0.1, torch.zeros_like(x0)).min() >= 0


def test_guidance_needs_a_null_class(tmp_path, rgb_image):
    from dclib.testing import tiny_pixel_pipeline

    tiny_pixel_pipeline(num_classes=3, null_class=False).save_pretrained(tmp_path / "m")
    clf = DiffusionClassifier.from_pretrained(str(tmp_path / "m"))
    clf.classify(rgb_image, schedule=2)
    with pytest.raises(InputError, match="null class"):
        clf.classify(rgb_image, schedule=2, guidance=1.0)


def test_unknown_or_bad_models_give_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        DiffusionClassifier.from_pretrained("no-such-org/no-such-model")
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        DiffusionClassifier.from_pretrained(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="no embedded model"):
        DiffusionClassifier.from_pretrained("embedded:nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelNotFoundError, match="supports"):
        DiffusionClassifier.from_pretrained(str(tmp_path / "x"))


def test_pickle_weights_are_refused(tmp_path, tiny_models):
    """Safetensors only: a folder holding only pickled .bin weights does not load."""
    import shutil

    from diffusers import UNet2DModel

    folder = tmp_path / "binonly"
    shutil.copytree(tiny_models["pixel"], folder)
    unet = UNet2DModel.from_pretrained(folder / "unet")
    for f in (folder / "unet").glob("*.safetensors"):
        f.unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    with pytest.raises(ModelNotFoundError):
        DiffusionClassifier.from_pretrained(str(folder))


def test_tokenizer_makes_every_listed_word_one_token():
    words = ["an", "and", "orange", "triangle", "diamond", "underneath", "a"]
    tok = build_clip_tokenizer(words)
    for w in words:
        assert len(tok(w).input_ids) == 3, w  # <bos> word <eos>
    assert len(tok("zebra").input_ids) > 3  # unknown words still tokenize, by bytes


def test_sd_prompts_are_encoded_in_chunks_with_the_same_result(classifiers):
    adapter = classifiers["sd"].adapter
    prompts = [f"a photo of a thing number {i}" for i in range(7)]
    whole = adapter._encode_conditions(prompts)
    calls = []
    adapter._cond_cache.clear()
    adapter.encode_batch_size = 3  # 3 + 3 + 1 prompts per text-encoder call
    encode = adapter._encode_conditions
    adapter._encode_conditions = lambda chunk: calls.append(len(chunk)) or encode(chunk)
    try:
        chunked = adapter.encode_conditions(prompts)
    finally:
        del adapter.encode_batch_size, adapter._encode_conditions
        adapter._cond_cache.clear()
    assert calls == [3, 3, 1]
    assert chunked.shape == whole.shape and torch.allclose(chunked, whole, atol=1e-6)


def test_autocast_default_is_bf16_on_cuda_and_off_on_cpu(monkeypatch):
    from dclib.adapters.loading import resolve_autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_autocast(None, cpu, torch.float32) is None
    assert resolve_autocast("auto", cuda, torch.float32) is torch.bfloat16
    assert resolve_autocast(None, cuda, torch.float16) is None  # half weights need no autocast
    assert resolve_autocast("none", cuda, torch.float32) is None
    assert resolve_autocast("bfloat16", cpu, torch.float32) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_autocast(None, cuda, torch.float32) is torch.float16
    with pytest.raises(InputError):
        resolve_autocast("int8", cpu, torch.float32)
