"""SDXL and FLUX adapters, and LoRA weights: x_t, conditionings and predictions against each pipeline's own
scheduler, ``encode_prompt`` and a direct denoiser call with the inputs the pipeline builds, on tiny pipelines
saved with ``save_pretrained`` and loaded back through ``from_pretrained`` and the command line."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dclib import DiffusionClassifier
from dclib.adapters import FluxAdapter, StableDiffusionXLAdapter
from dclib.errors import InputError, ModelNotFoundError

PROMPTS = ["a photo of a dog", "a photo of a cat", "a red car"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from dclib.testing.tiny import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-sdxl-flux"), names=["sdxl", "flux", "flux-schnell", "sd"])


@pytest.fixture(scope="module")
def classifiers(folders):
    return {name: DiffusionClassifier.from_pretrained(folders[name]) for name in ("sdxl", "flux", "flux-schnell")}


@pytest.fixture(scope="module")
def image():
    return (np.random.RandomState(0).rand(40, 52, 3) * 255).astype(np.uint8)


def noise_for(x0, n, seed=0):
    return torch.randn(n, *x0.shape, generator=torch.Generator().manual_seed(seed))


def classify_through_the_cli(clf, folder, tmp_path, capsys, extra=()):
    from dclib.cli import main

    path = tmp_path / "img.png"
    Image.fromarray((np.random.RandomState(2).rand(24, 30, 3) * 255).astype(np.uint8)).save(path)
    d = clf.classify(str(path), prompts=PROMPTS, schedule="2,1:2,4").to_dict()
    assert d["prediction_name"] in PROMPTS and np.isfinite(d["mean_errors"]).all()
    assert main(["classify", str(path), "--model", folder, "--prompts", *PROMPTS, "--schedule", "2,1:2,4",
                 "--json", *extra]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["prediction_name"] == d["prediction_name"] and row["evaluations"] == d["evaluations"] == 10
    np.testing.assert_allclose(row["conditioning_mean_errors"], d["conditioning_mean_errors"], rtol=1e-6)
    return row


# ------------------------------------------------------------------------------------------------------ SDXL
def test_sdxl_loads_with_scaled_vae_latents(classifiers, image):
    a = classifiers["sdxl"].adapter
    assert isinstance(a, StableDiffusionXLAdapter) and a.text_conditioned and not a.flow_matching
    assert a.resolution == 32 and a.sample_shape == (4, 16, 16)
    pixels = a.preprocess(image)
    with torch.no_grad():
        mean = a.vae.encode(pixels[None]).latent_dist.mean
    torch.testing.assert_close(a.encode_images(pixels[None]), mean * a.vae.config.scaling_factor)


def test_sdxl_x_t_is_the_schedulers_noising(classifiers, image):
    from diffusers import DDPMScheduler

    clf = classifiers["sdxl"]
    a = clf.adapter
    x0 = clf.encode_image(image)[0]
    t = torch.tensor([0, 10, 500, 999])
    eps = noise_for(x0, len(t))
    # SDXL samples with Euler, whose alphas_cumprod are those of the DDPM noising its training scripts use
    assert type(a.scheduler).__name__ == "EulerDiscreteScheduler"
    ddpm = DDPMScheduler.from_config(a.scheduler.config)
    assert torch.equal(a.alphas_cumprod, ddpm.alphas_cumprod)
    xt = a.q_sample(x0.expand(len(t), *x0.shape), eps, t)
    torch.testing.assert_close(xt, ddpm.add_noise(x0.expand(len(t), *x0.shape), eps, t), rtol=1e-6, atol=1e-6)
    assert torch.equal(a.target(x0[None], eps, t), eps)


def test_sdxl_conditioning_is_the_pipelines_encode_prompt(classifiers):
    a = classifiers["sdxl"].adapter
    with torch.inference_mode():
        embeds, _, pooled, _ = a.pipe.encode_prompt(PROMPTS[:2], do_classifier_free_guidance=False)
    got_embeds, got_pooled = a.unpack_condition(a.encode_conditions(PROMPTS[:2]))
    assert got_embeds.shape == (2, 77, 64) and got_pooled.shape == (2, 32)  # both encoders' states, pooled of the 2nd
    assert torch.equal(got_embeds, embeds) and torch.equal(got_pooled, pooled)
    # guidance's unconditional input: zeros, as the pipeline's force_zeros_for_empty_prompt makes it
    assert a.pipe.config.force_zeros_for_empty_prompt and not a.null_condition().any()


def test_sdxl_prediction_is_a_direct_unet_call_with_the_pipelines_inputs(folders, image):
    # a classifier of its own: the module's one caches each prompt's encoding from the batch it first came in (the
    # conditioning test encodes two prompts at once), which differs from a one-prompt encode in the last bits
    clf = DiffusionClassifier.from_pretrained(folders["sdxl"])
    a, pipe = clf.adapter, clf.adapter.pipe
    x0 = clf.encode_image(image)[0]
    t = torch.tensor([300, 800])
    eps = noise_for(x0, 2, seed=1)
    errors = clf.score(x0, clf.conditionings(PROMPTS[:1]), timesteps=t, noise=eps).errors[0]
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS[:1], do_classifier_free_guidance=False)
    time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert time_ids.tolist() == [[32, 32, 0, 0, 32, 32]] and torch.equal(a.time_ids, time_ids)
    with torch.inference_mode():
        xt = a.q_sample(x0.expand(2, *x0.shape), eps, t)
        direct = pipe.unet(xt, t, encoder_hidden_states=embeds.expand(2, -1, -1),
                           added_cond_kwargs={"text_embeds": pooled.expand(2, -1), "time_ids": time_ids.repeat(2, 1)},
                           return_dict=False)[0]
        pred = a.model_output(xt, t, a.encode_conditions(PROMPTS[:1]).expand(2, -1))[0]
    torch.testing.assert_close(pred, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(errors, ((eps - direct) ** 2).mean((1, 2, 3)), rtol=1e-5, atol=1e-7)
    # the micro-conditioning reaches the UNet: another original size, another prediction
    a.set_size_conditioning(original_size=(16, 24))
    try:
        assert a.time_ids.tolist() == [[16, 24, 0, 0, 32, 32]]
        assert not torch.allclose(a.predict(xt, t, a.encode_conditions(PROMPTS[:1]).expand(2, -1))[0], pred)
    finally:
        a.set_size_conditioning()


def test_sdxl_vae_stays_float32_under_float16(classifiers):
    from dclib.testing.tiny import tiny_sdxl_pipeline

    a = StableDiffusionXLAdapter(tiny_sdxl_pipeline(), dtype=torch.float16)
    assert a.unet.dtype == torch.float16 and a.vae.dtype == torch.float32  # force_upcast: fp16 SDXL VAEs overflow


def test_sdxl_classifies_through_the_cli(classifiers, folders, tmp_path, capsys):
    classify_through_the_cli(classifiers["sdxl"], folders["sdxl"], tmp_path, capsys)


# ------------------------------------------------------------------------------------------------------ FLUX
def _pipeline_schedule(pipe, image_seq_len, steps=1000):
    """The pipeline's own sampling schedule (FluxPipeline.__call__ step 5) at ``steps`` steps."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    sched = type(pipe.scheduler).from_config(pipe.scheduler.config)
    cfg = sched.config
    mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                         cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return sched


def test_flux_loads_with_shifted_scaled_latents(classifiers, image):
    a = classifiers["flux"].adapter
    assert isinstance(a, FluxAdapter) and a.flow_matching and a.text_conditioned and a.betas is None
    assert a.resolution == a.vae.config.sample_size == 16 and a.sample_shape == (4, 8, 8)
    pixels = a.preprocess(image)
    cfg = a.vae.config
    with torch.no_grad():
        mean = a.vae.encode(pixels[None]).latent_dist.mean
    torch.testing.assert_close(a.encode_images(pixels[None]), (mean - cfg.shift_factor) * cfg.scaling_factor)
    d = a.describe()
    assert d["dynamic_shifting"] and d["guidance_scale"] == 3.5 and d["max_sequence_length"] == 512
    s = classifiers["flux-schnell"].adapter.describe()
    assert not s["dynamic_shifting"] and s["guidance_scale"] is None and s["max_sequence_length"] == 256
    with pytest.raises(InputError, match="multiple of 4"):
        FluxAdapter(a.pipe, resolution=18)


@pytest.mark.parametrize("name", ["flux", "flux-schnell"])
def test_flux_sigmas_and_x_t_are_the_pipelines(classifiers, image, name):
    clf = classifiers[name]
    a = clf.adapter
    sched = _pipeline_schedule(a.pipe, image_seq_len=16)  # 4x4 tokens of 2x2 latent patches
    T = a.num_train_timesteps
    torch.testing.assert_close(a.sigmas, sched.sigmas[:-1].flip(0).float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a.model_timesteps, sched.timesteps.flip(0).float(), rtol=1e-6, atol=1e-4)
    if name == "flux-schnell":  # shift 1: sigma = s = (t + 1) / T
        np.testing.assert_allclose(a.sigmas.numpy(), np.arange(1, T + 1) / T, rtol=1e-6)
    else:  # shifted by resolution: exp(mu) / (exp(mu) + 1 / s - 1), mu linear in the token count
        mu = 0.5 + (1.15 - 0.5) * (16 - 256) / (4096 - 256)
        s = np.arange(1, T + 1) / T
        np.testing.assert_allclose(a.sigmas.numpy(), np.exp(mu) / (np.exp(mu) + 1 / s - 1), rtol=1e-5)
    x0 = clf.encode_image(image)[0]
    t = torch.tensor([0, 250, 999])
    eps = noise_for(x0, len(t))
    xt = a.q_sample(x0.expand(len(t), *x0.shape), eps, t)
    ref = sched.scale_noise(x0.expand(len(t), *x0.shape), sched.timesteps[T - 1 - t], eps)
    torch.testing.assert_close(xt, ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(a.target(x0[None], eps, t), eps - x0)  # the velocity


def test_flux_conditioning_is_the_pipelines_encode_prompt(classifiers):
    for name, length in [("flux", 512), ("flux-schnell", 256)]:
        a = classifiers[name].adapter
        with torch.inference_mode():  # as the adapter encodes (T5's kernels differ by ~1e-5 with autograd on)
            embeds, pooled, text_ids = a.pipe.encode_prompt(PROMPTS[:2], max_sequence_length=length)
        got_embeds, got_pooled = a.unpack_condition(a.encode_conditions(PROMPTS[:2]))
        assert got_embeds.shape == (2, length, 32) and got_pooled.shape == (2, 32)
        assert torch.equal(got_embeds, embeds) and torch.equal(got_pooled, pooled)
        assert torch.equal(a.txt_ids, text_ids)


@pytest.mark.parametrize("name", ["flux", "flux-schnell"])
def test_flux_prediction_is_a_direct_transformer_call_with_the_pipelines_inputs(classifiers, image, name):
    clf = classifiers[name]
    a, pipe = clf.adapter, clf.adapter.pipe
    x0 = clf.encode_image(image)[0]
    t = torch.tensor([100, 700])
    eps = noise_for(x0, 2, seed=2)
    errors = clf.score(x0, clf.conditionings(PROMPTS[1:2]), timesteps=t, noise=eps).errors[0]
    # everything as FluxPipeline.__call__ builds it
    sched = _pipeline_schedule(pipe, image_seq_len=16)
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPTS[1:2], max_sequence_length=a.max_sequence_length)
    latent_ids = pipe._prepare_latent_image_ids(1, 4, 4, "cpu", embeds.dtype)
    guidance = torch.full([1], 3.5, dtype=torch.float32).expand(2) if pipe.transformer.config.guidance_embeds else None
    assert (guidance is None) == (name == "flux-schnell")
    timestep = sched.timesteps[a.num_train_timesteps - 1 - t].to(torch.float32)
    with torch.inference_mode():
        xt = a.q_sample(x0.expand(2, *x0.shape), eps, t)
        packed = pipe._pack_latents(xt, 2, 4, 8, 8)
        assert packed.shape == (2, 16, 16)
        velocity = pipe.transformer(hidden_states=packed, timestep=timestep / 1000, guidance=guidance,
                                    pooled_projections=pooled.expand(2, -1),
                                    encoder_hidden_states=embeds.expand(2, -1, -1), txt_ids=text_ids,
                                    img_ids=latent_ids, return_dict=False)[0]
        direct = pipe._unpack_latents(velocity, 16, 16, pipe.vae_scale_factor)
        pred = a.model_output(xt, t, a.encode_conditions(PROMPTS[1:2]).expand(2, -1))[0]
    torch.testing.assert_close(pred, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(errors, ((eps - x0 - direct) ** 2).mean((1, 2, 3)), rtol=1e-5, atol=1e-7)


def test_flux_classifies_through_the_cli(classifiers, folders, tmp_path, capsys):
    classify_through_the_cli(classifiers["flux"], folders["flux"], tmp_path, capsys)


# ------------------------------------------------------------------------------------------------------ LoRA
@pytest.fixture(scope="module")
def sd_lora(folders, tmp_path_factory):
    """A random (non-zero) LoRA on the tiny SD UNet's attention, saved as diffusers' training scripts save it."""
    pytest.importorskip("peft")
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(folders["sd"], subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    out = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)), safe_serialization=True)
    assert [p.name for p in out.iterdir()] == ["pytorch_lora_weights.safetensors"]
    return out


def test_lora_changes_predictions_as_the_pipelines_own_loader_does(folders, sd_lora, image):
    from diffusers import StableDiffusionPipeline

    base = DiffusionClassifier.from_pretrained(folders["sd"])
    tuned = DiffusionClassifier.from_pretrained(folders["sd"], lora=str(sd_lora))
    ref = StableDiffusionPipeline.from_pretrained(folders["sd"], safety_checker=None, requires_safety_checker=False)
    ref.load_lora_weights(str(sd_lora), use_safetensors=True)
    x0 = base.encode_image(image)[0]
    t = torch.tensor([50, 600])
    eps = noise_for(x0, 2, seed=3)
    with torch.inference_mode():
        xt = base.adapter.q_sample(x0.expand(2, *x0.shape), eps, t)
        cond = base.adapter.encode_conditions(PROMPTS[:1]).expand(2, -1, -1)
        plain = base.adapter.model_output(xt, t, cond)[0]
        with_lora = tuned.adapter.model_output(xt, t, cond)[0]
        direct = ref.unet(xt, t, encoder_hidden_states=cond).sample
    assert (with_lora - plain).abs().max() > 1e-3
    torch.testing.assert_close(with_lora, direct, rtol=1e-5, atol=1e-6)
    lora = tuned.adapter.describe()["lora"]
    assert lora["source"] == "local" and lora["components"] == ["unet"] and len(lora["sha256"]) == 64
    assert lora["path"].endswith("pytorch_lora_weights.safetensors") and base.adapter.describe()["lora"] is None


def test_lora_through_the_cli(folders, sd_lora, tmp_path, capsys):
    tuned = DiffusionClassifier.from_pretrained(folders["sd"], lora=str(sd_lora / "pytorch_lora_weights.safetensors"))
    classify_through_the_cli(tuned, folders["sd"], tmp_path, capsys, extra=["--lora", str(sd_lora)])


def test_lora_refuses_pickles_and_unsupported_models(folders, sd_lora, tmp_path):
    pytest.importorskip("peft")
    from dclib.testing import tiny_dit_pipeline

    for bad in ("weights.bin", str(tmp_path / "adapter.pt"), "owner/repo/lora.bin"):
        with pytest.raises(InputError, match="safetensors"):
            DiffusionClassifier.from_pretrained(folders["sd"], lora=bad)
    for missing in (str(tmp_path / "none.safetensors"), "loras/none.safetensors"):
        with pytest.raises(ModelNotFoundError, match="neither a local file"):
            DiffusionClassifier.from_pretrained(folders["sd"], lora=missing)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({}, pickled / "pytorch_lora_weights.bin")
    with pytest.raises(ModelNotFoundError, match="no .safetensors"):
        DiffusionClassifier.from_pretrained(folders["sd"], lora=str(pickled))
    tiny_dit_pipeline(num_classes=3).save_pretrained(tmp_path / "dit")
    with pytest.raises(InputError, match="does not take LoRA"):
        DiffusionClassifier.from_pretrained(str(tmp_path / "dit"), lora=str(sd_lora))
    with pytest.raises(InputError, match="does not fit this StableDiffusionXLPipeline: .*size mismatch"):
        DiffusionClassifier.from_pretrained(folders["sdxl"], lora=str(sd_lora))  # an SD LoRA on SDXL
    with pytest.raises(InputError, match="no weights for any component"):
        DiffusionClassifier.from_pretrained(folders["flux"], lora=str(sd_lora))  # no key names a FLUX module


def test_evaluate_records_the_lora_and_a_resume_must_load_the_same(folders, sd_lora, image, tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    from dclib import runs
    from dclib.cli import main

    ds = Dataset.from_dict({"image": [Image.fromarray(image)] * 2, "label": [0, 1]},
                           features=Features({"image": ImageFeature(), "label": ClassLabel(names=PROMPTS[:2])}))
    out = tmp_path / "run"
    runs.evaluate(folders["sd"], ds, out, prompts=PROMPTS[:2], schedule=2, lora=str(sd_lora), progress=False)
    recorded = json.loads((out / "config.json").read_text())["lora"]
    assert recorded["sha256"] == DiffusionClassifier.from_pretrained(folders["sd"], lora=str(sd_lora)).adapter.lora["sha256"]
    with pytest.raises(InputError, match="lora"):
        runs.evaluate(folders["sd"], ds, out, prompts=PROMPTS[:2], schedule=2, progress=False)
    # the CLI passes --lora through to the same run, which then resumes with nothing left to do
    ds.save_to_disk(str(tmp_path / "ds"))
    assert main(["evaluate", "--model", folders["sd"], "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "cli"),
                 "--prompts", *PROMPTS[:2], "--schedule", "2", "--lora", str(sd_lora), "--no-progress"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["lora"]["sha256"] == recorded["sha256"]
