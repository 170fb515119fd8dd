"""Text-to-image models for the shapes scenes, trained from scratch on CPU (the Stable Diffusion analogue).

``train_shapes`` builds ``embedded:shapes``: a real ``StableDiffusionPipeline`` folder --
a small ``AutoencoderKL`` (32x32x3 -> 4x16x16 latents, trained first, then frozen; ``scaling_factor`` =
1 / std of the training latents, as SD did), a ``CLIPTextModel`` trained jointly with a
``UNet2DConditionModel`` that reads every text token through cross-attention (a pooled text vector cannot
bind colours to objects, see shared/notes/embedded-model-findings.md), eps-prediction, DDPM
``scaled_linear`` betas 0.00085..0.012, T = 1000 (SD's schedule).

``train_shapes_clip`` builds ``embedded:shapes-clip``: the contrastive baseline, a transformers
``CLIPModel`` (small ViT on 32x32 images; a text tower of the same size as the diffusion model's text
encoder, same tokenizer) trained with a symmetric InfoNCE loss on the same scenes and TRAIN captions.

Training data: the 50k ``embedded:shapes-train`` scenes (``render_scenes(50_000, TRAIN_SEED)``), re-captioned
at every draw with a random TRAIN template that fits the scene (so each picture is seen with all its TRAIN
wordings). HELD-OUT templates are never used for training; they give the validation losses that measure
generalisation to new wordings.
"""
from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .common import EMA, cosine_lr, count_parameters, folder_size_mb, write_card

# Seed of the validation scenes (shapes-train uses 1, shapes-test 2, shapes-wino 3).
VAL_SEED = 11
_SLOT = re.compile(r"\{(\w+)\}")


# ----------------------------------------------------------------------------------------------- tokenizer


def caption_words() -> list[str]:
    """Every word any TRAIN or HELD-OUT caption can contain (so held-out words are known tokens)."""
    from ..data import COLOUR_NAMES, SHAPES, SIZES
    from ..data import captions as cap

    words: set[str] = set()
    for t in cap.TEMPLATES:
        words.update(re.findall(r"[a-z]+", _SLOT.sub(" ", t.text.lower())))
    for phrase in cap.WHERE.values():
        words.update(phrase.split())
    words.update(SHAPES)
    words.update(COLOUR_NAMES)
    words.update(SIZES)
    words.add("an")  # captions.fill turns "a orange" into "an orange"
    return sorted(words)


def build_word_tokenizer(words=None, model_max_length: int = 16):
    """The shapes vocabulary as a CLIPTokenizer with one token per caption word (train and held-out words)."""
    from ..testing.tiny import build_clip_tokenizer

    return build_clip_tokenizer(caption_words() if words is None else words, model_max_length)


def longest_caption_tokens(tokenizer) -> int:
    """Token count (with BOS/EOS) of the longest caption any template can produce."""
    from ..data import COLOUR_NAMES, SHAPES, SIZES
    from ..data import captions as cap

    longest = 0
    for t in cap.TEMPLATES:
        for where in cap.WHERE.values():
            # every shape/colour/size word is one token, so any filler gives the same length, up to "a"/"an"
            for colour in COLOUR_NAMES[:1] + ("orange",):
                slots = {"shape1": SHAPES[0], "shape2": SHAPES[0], "colour1": colour, "colour2": colour,
                         "size1": SIZES[0], "size2": SIZES[0], "where1": where}
                longest = max(longest, len(tokenizer(cap.fill(t.text, **slots)).input_ids))
    return longest


def text_config(tokenizer, hidden: int, layers: int, heads: int, intermediate: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def tokenize(tokenizer, texts) -> torch.Tensor:
    """Exactly as dclib's StableDiffusionAdapter tokenizes prompts."""
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


# ----------------------------------------------------------------------------------------------- data


class ScenePool:
    """Rendered scenes plus random TRAIN (or HELD-OUT) captions drawn per use."""

    def __init__(self, n: int, seed: int, p_single: float = 0.4):
        from ..data import render_scenes

        self.images, self.scenes = render_scenes(n, seed, p_single=p_single, template_split="train")
        self._fits: dict[tuple[str, str], list] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def fitting(self, scene: dict, split: str = "train") -> list:
        from ..data import captions as cap

        key = (split, "one" if scene["n_objects"] == 1 else scene["relation"])
        if key not in self._fits:
            self._fits[key] = cap.templates(split, scene)
        return self._fits[key]

    def captions(self, idx, rng: np.random.Generator, split: str = "train") -> tuple[list[str], list]:
        """A random fitting template of `split` per scene: (captions, templates)."""
        from ..data import captions as cap

        texts, temps = [], []
        for i in np.asarray(idx).tolist():
            scene = self.scenes[i]
            options = self.fitting(scene, split)
            template = options[int(rng.integers(len(options)))]
            texts.append(cap.caption(scene, template))
            temps.append(template)
        return texts, temps

    def pixels(self, idx) -> torch.Tensor:
        """uint8 HWC -> float [n, 3, 32, 32] in [-1, 1] (dclib.images.to_tensor's mapping)."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[np.asarray(idx)]))
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- recipe


# Default budgets, measured 2026-11-24 with torch.set_num_threads(1) while 2-3 other training processes shared
# the 2-core machine (1 thread, contended; a 2-thread uncontended run is faster: the same machine's reference
# UNet benchmark ran 580 samples/s on 2 threads (shared/notes) vs 100-190 samples/s in these conditions):
#   render the 50k scenes ~21 s; VAE step (batch 64) 0.61-0.67 s; encoding 50k images 62-75 s;
#   UNet + text encoder step (batch 64, bf16 autocast, EMA) 0.42-0.49 s; CLIP step (batch 256 + ~350 hard
#   negative captions) 0.93-1.04 s.
# embedded:shapes: 21 + 800 x 0.64 + 70 + 4000 x 0.45 + evaluations ~ 2450 s on 1 contended thread, i.e.
#   ~27 min if 2 threads are only 1.5x faster (about 14 min at the reference benchmark's ratio).
# embedded:shapes-clip: 21 + 1200 x 1.0 ~ 1250 s on 1 contended thread, ~14 min at 1.5x (about 7 min at 3x).
# Measured later on 2 threads with nothing else running: the whole embedded:shapes recipe took 1297 s (render
#   12 s, VAE 219 s, encoding 33 s, UNet 1028 s = 0.26 s/step incl. evaluations), final val losses equal to the
#   shipped run's to 4 digits (weights differ by float rounding order: not bitwise the same as the 1-thread run).
# And embedded:shapes-clip on 2 threads, nothing else running: 591 s wall for `python -m dclib train shapes-clip`
#   (training 584 s incl. rendering, loop 0.48 s/step; then start-up and the accuracy measurement), peak RSS
#   4.2 GB.


@dataclass
class ShapesRecipe:
    name: str = "shapes"
    n_scenes: int = 50_000         # the embedded:shapes-train scenes (render_scenes(50_000, TRAIN_SEED))
    n_val: int = 256               # validation scenes (seed VAL_SEED) with fixed (t, eps)
    max_length: int = 16           # tokenizer.model_max_length; the longest caption is 15 tokens with BOS/EOS
    # text encoder (trained jointly with the UNet)
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 256
    # VAE stage
    vae_channels: tuple = (16, 32)
    vae_steps: int = 800           # 0.61-0.67 s/step (1 contended thread)
    vae_batch: int = 64
    vae_lr: float = 1e-3
    vae_warmup: int = 100
    vae_kl_weight: float = 1e-6    # x summed KL per image, next to a per-pixel mean MSE (near-deterministic)
    # UNet stage
    unet_channels: tuple = (32, 64)
    layers_per_block: int = 1
    heads: tuple = (1, 2)          # diffusers' `attention_head_dim` (= number of heads per level): head dim 32
    # which levels have a transformer block (self-attention + cross-attention to every text token); the 8x8
    # level and the mid block have one. Attention at 16x16 as well costs 1.55x per step.
    attention_levels: tuple = (False, True)
    steps: int = 4000              # 0.42-0.49 s/step (1 contended thread)
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    caption_dropout: float = 0.1   # -> "" (the null prompt for classifier-free guidance)
    # "epsilon" (SD 1.x) or "v_prediction" (SD 2.x 768-v): what the UNet outputs and the loss compares.
    # v-prediction made the model position-aware at high t but cost shape and colour accuracy (note of
    # 2026-11-24: 4000 steps, position 49% / shape 42% / colour 76% vs 27 / 89 / 98 for eps)
    prediction_type: str = "epsilon"
    # the DDPM noise schedule (T = 1000): SD's scaled_linear 0.00085..0.012, or DDPM's linear 1e-4..0.02
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # scaling_factor = latent_scale / std of the latents. 1 is SD's unit-variance convention; below 1 shifts
    # the whole schedule towards noise, so that x_t can hide an object's position (it never does at 1).
    latent_scale: float = 1.0
    # "none": the plain mean loss. "per-timestep": each sample's loss divided by the running mean loss at its
    # timestep (20 bins), so every noise level counts alike (the noisiest ones otherwise weigh ~10x less).
    # "per-timestep-boost": the same weights floored at 1 (noisy levels gain weight, none loses any).
    # Trials (note of 2026-11-24; 4000 steps, 100 held-out-wording scenes, 25 timesteps, position / shape /
    # colour): latent_scale 0.25 alone 25 / 99 / 95%; with "per-timestep" 40 / 95 / 89% (step 2000: 64 / 79 /
    # 96%), and that model reads position words (97-100% per timestep for t >= 600 in training wording, 93-99%
    # for t >= 625 in held-out wording), but the timesteps below ~400 add prompt-dependent noise that swamps it
    # in the uniform mean; with "per-timestep-boost" 48 / 79 / 88%. The shipped recipe (1, "none"): 27 / 89 / 98%.
    loss_weighting: str = "none"
    grad_clip: float = 1.0
    bf16: bool = True              # bf16 autocast (fp32 master weights); ~1.5x faster on AVX512-BF16 CPUs
    eval_every: int = 250
    checkpoints: tuple = (500, 1000, 2000)
    seed: int = 0


#: Independently trained text-to-image models of the shapes world (Table 10's "model versions"). The second is a
#: smaller budget from scratch, as SD 1.x and 2.x are separate runs: its own seed, the first half of the training
#: scenes, half the VAE and UNet steps, no intermediate checkpoints.
SHAPES_RECIPES = {
    "shapes": ShapesRecipe(),
    "shapes-25k": ShapesRecipe(name="shapes-25k", n_scenes=25_000, vae_steps=400, steps=2000, checkpoints=(),
                               seed=1),
}


@dataclass
class ClipRecipe:
    name: str = "shapes-clip"
    n_scenes: int = 50_000
    n_val: int = 512
    max_length: int = 16
    text_hidden: int = 64          # same text tower as ShapesRecipe
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 256
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 384
    patch_size: int = 4            # 8x8 patches of a 32x32 image
    projection_dim: int = 64
    steps: int = 1200              # 0.93-1.04 s/step (1 contended thread)
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.05
    ema_decay: float = 0.999
    hard_negatives: int = 3        # per two-object scene: up to this many swapped captions (3 = all; 0 = none)
    grad_clip: float = 1.0
    bf16: bool = True
    eval_every: int = 250
    seed: int = 0


# ----------------------------------------------------------------------------------------------- builders


def build_vae(recipe: ShapesRecipe):
    from diffusers import AutoencoderKL

    n = len(recipe.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                         block_out_channels=tuple(recipe.vae_channels), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=min(32, recipe.vae_channels[0]))


def build_unet(recipe: ShapesRecipe, latent_side: int):
    from diffusers import UNet2DConditionModel

    attn = tuple(recipe.attention_levels)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=latent_side, in_channels=4, out_channels=4, block_out_channels=tuple(recipe.unet_channels),
        layers_per_block=recipe.layers_per_block, down_block_types=down, up_block_types=up,
        cross_attention_dim=recipe.text_hidden,
        attention_head_dim=tuple(recipe.heads), use_linear_projection=True,
        norm_num_groups=min(32, recipe.unet_channels[0]))


def build_scheduler(recipe: ShapesRecipe | None = None):
    from diffusers import DDPMScheduler

    recipe = recipe or ShapesRecipe()
    _check_prediction_type(recipe.prediction_type)
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=recipe.beta_schedule, beta_start=recipe.beta_start,
                         beta_end=recipe.beta_end, prediction_type=recipe.prediction_type, clip_sample=False,
                         steps_offset=1)


PREDICTION_TYPES = ("epsilon", "v_prediction")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def training_target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
    _check_prediction_type(prediction_type)
    return eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0


LOSS_WEIGHTINGS = ("none", "per-timestep", "per-timestep-boost")


class TimestepLossBalance:
    """Weights that make every noise level count alike: mean running loss / running loss of the sample's
    timestep bin (exponential moving averages over training); ``floor`` clamps them from below."""

    def __init__(self, n_bins: int = 20, num_timesteps: int = 1000, decay: float = 0.99, floor: float | None = None):
        self.n_bins, self.num_timesteps, self.decay, self.floor = n_bins, num_timesteps, decay, floor
        self.running = torch.full((n_bins,), float("nan"))

    def __call__(self, t: torch.Tensor, per_sample_loss: torch.Tensor) -> torch.Tensor:
        bins = (t * self.n_bins) // self.num_timesteps
        for b in bins.unique().tolist():
            batch_mean = per_sample_loss[bins == b].mean()
            old = self.running[b]
            self.running[b] = batch_mean if torch.isnan(old) else self.decay * old + (1 - self.decay) * batch_mean
        seen = ~torch.isnan(self.running)
        weights = self.running[seen].mean() / self.running[bins]
        return weights if self.floor is None else weights.clamp(min=self.floor)


def build_pipeline(vae, text_encoder, tokenizer, unet, recipe: ShapesRecipe | None = None):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(recipe), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def save_pipeline(vae, text_encoder, tokenizer, unet, path: Path, recipe: ShapesRecipe | None = None) -> None:
    """fp16 weights on disk (small); dclib loads them as float32."""
    from ..adapters.loading import quiet_hf_logging

    with quiet_hf_logging():  # diffusers warns about casting with .to(); nothing here needs to stay fp32
        half = [copy.deepcopy(m).to(torch.float16) for m in (vae, text_encoder, unet)]
        build_pipeline(half[0], half[1], tokenizer, half[2], recipe).save_pretrained(path, safe_serialization=True)


def _autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


# ----------------------------------------------------------------------------------------------- VAE stage


def train_vae(recipe: ShapesRecipe, pool: ScenePool, gen: torch.Generator, steps: int | None = None,
              progress: bool = True):
    """Reconstruction (MSE) + small KL; returns the frozen VAE and facts. Trained in fp32."""
    steps = recipe.vae_steps if steps is None else steps
    vae = build_vae(recipe).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    started, rec = time.perf_counter(), float("nan")
    bar = tqdm(range(steps), desc=f"train {recipe.name} VAE", disable=not progress)
    for step in bar:
        x = pool.pixels(torch.randint(0, len(pool), (recipe.vae_batch,), generator=gen))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(recon, x)
        kl = posterior.kl().mean()
        loss = mse + recipe.vae_kl_weight * kl
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, recipe.vae_warmup, recipe.vae_lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), recipe.grad_clip)
        opt.step()
        rec = mse.item()
        bar.set_postfix(mse=f"{rec:.4f}", kl=f"{kl.item():.0f}")
    vae.eval().requires_grad_(False)
    return vae, {"vae_steps": steps, "vae_final_mse": rec, "vae_seconds": round(time.perf_counter() - started, 1)}


@torch.no_grad()
def encode_latents(vae, pool: ScenePool, idx=None, batch: int = 500) -> torch.Tensor:
    """Posterior means (unscaled) of the pool's images, [n, 4, 16, 16] float32."""
    idx = np.arange(len(pool)) if idx is None else np.asarray(idx)
    return torch.cat([vae.encode(pool.pixels(idx[i:i + batch])).latent_dist.mean for i in range(0, len(idx), batch)])


@torch.inference_mode()
def reconstruction_mse(vae, pixels: torch.Tensor) -> float:
    return float(F.mse_loss(vae.decode(vae.encode(pixels).latent_dist.mean).sample, pixels))


# ----------------------------------------------------------------------------------------------- diffusion


def train_shapes(out: Path, steps: int | None = None, progress: bool = True, recipe: ShapesRecipe | None = None,
                 vae_steps: int | None = None) -> dict:
    """Train ``embedded:shapes`` into ``out`` (a StableDiffusionPipeline folder); returns the facts."""
    from ..data.shapes import TRAIN_SEED
    from transformers import CLIPTextModel

    recipe = recipe or ShapesRecipe()
    if recipe.loss_weighting not in LOSS_WEIGHTINGS:  # before minutes of VAE training, not after
        raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {recipe.loss_weighting!r}")
    steps = recipe.steps if steps is None else steps
    vae_steps = recipe.vae_steps if vae_steps is None else vae_steps
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    started = time.perf_counter()

    pool = ScenePool(recipe.n_scenes, TRAIN_SEED)
    val = ScenePool(recipe.n_val, VAL_SEED)
    render_seconds = time.perf_counter() - started

    # ---- stage 1: VAE, then frozen; latents of the whole pool computed once
    vae, vae_facts = train_vae(recipe, pool, gen, vae_steps, progress)
    t0 = time.perf_counter()
    latents = encode_latents(vae, pool)
    scaling = float(recipe.latent_scale / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents *= scaling
    val_latents = encode_latents(vae, val) * scaling
    vae_facts.update(scaling_factor=scaling, encode_seconds=round(time.perf_counter() - t0, 1),
                     val_reconstruction_mse=reconstruction_mse(vae, val.pixels(np.arange(len(val)))))

    # ---- stage 2: text encoder + UNet, jointly
    tokenizer = build_word_tokenizer(model_max_length=recipe.max_length)
    longest = longest_caption_tokens(tokenizer)
    if longest > recipe.max_length:
        raise ValueError(f"max_length {recipe.max_length} truncates captions of {longest} tokens")
    text_encoder = CLIPTextModel(text_config(tokenizer, recipe.text_hidden, recipe.text_layers, recipe.text_heads,
                                             recipe.text_intermediate))
    unet = build_unet(recipe, latents.shape[-1])
    use_fast_cpu_attention(unet, text_encoder)
    model = torch.nn.ModuleDict({"unet": unet, "text": text_encoder}).train()
    ema = EMA(model, recipe.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    abar = build_scheduler(recipe).alphas_cumprod.float()

    # fixed validation (t, eps) and captions: TRAIN wording, HELD-OUT wording, and mismatched TRAIN captions
    vgen = torch.Generator().manual_seed(recipe.seed + 1)
    vrng = np.random.default_rng(recipe.seed + 1)
    val_t = torch.randint(0, 1000, (len(val),), generator=vgen)
    val_eps = torch.randn(val_latents.shape, generator=vgen)
    val_ids = {
        "train": tokenize(tokenizer, val.captions(np.arange(len(val)), vrng, "train")[0]),
        "heldout": tokenize(tokenizer, val.captions(np.arange(len(val)), vrng, "heldout")[0]),
    }
    val_ids["shuffled"] = torch.roll(val_ids["train"], 1, 0)
    val_ids["null"] = tokenize(tokenizer, [""] * len(val))
    a = abar[val_t].view(-1, 1, 1, 1)
    val_xt = a.sqrt() * val_latents + (1 - a).sqrt() * val_eps
    val_target = training_target(recipe.prediction_type, val_latents, val_eps, a)

    @torch.inference_mode()
    def val_losses(m) -> dict:
        m.eval()
        res = {k: float(F.mse_loss(m["unet"](val_xt, val_t, encoder_hidden_states=m["text"](ids)[0]).sample,
                                   val_target))
               for k, ids in val_ids.items()}
        return res

    def save(path: Path) -> None:
        save_pipeline(vae, ema.model["text"], tokenizer, ema.model["unet"], path, recipe)

    balance = None if recipe.loss_weighting == "none" else \
        TimestepLossBalance(floor=1.0 if recipe.loss_weighting == "per-timestep-boost" else None)
    history, losses, saved = [], [], []
    t_train = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {recipe.name} UNet", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen)
        texts, _ = pool.captions(idx.numpy(), rng)
        texts = ["" if drop else t for t, drop in zip(texts, rng.random(len(texts)) < recipe.caption_dropout)]
        ids = tokenize(tokenizer, texts)
        x0 = latents[idx]
        t = torch.randint(0, 1000, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        with _autocast(recipe.bf16):
            cond = text_encoder(ids)[0]
            pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, encoder_hidden_states=cond).sample
        per_sample = F.mse_loss(pred.float(), training_target(recipe.prediction_type, x0, eps, a),
                                reduction="none").flatten(1).mean(1)
        loss = (per_sample * balance(t, per_sample.detach())).mean() if balance else per_sample.mean()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, recipe.warmup, recipe.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        ema.update(model, step)
        losses.append(per_sample.mean().item())
        done = step + 1
        if done in recipe.checkpoints and done < steps:
            save(out / "checkpoints" / f"step-{done:05d}")
            saved.append(f"step-{done:05d}")
        if done % recipe.eval_every == 0 or done == steps:
            v = val_losses(ema.model)
            history.append({"step": done, "train_loss": float(np.mean(losses[-recipe.eval_every:])),
                            **{f"val_{k}": round(x, 5) for k, x in v.items()}})
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}", val=f"{v['train']:.4f}",
                            shuffled=f"{v['shuffled']:.4f}")
    train_seconds = time.perf_counter() - t_train
    save(out)
    final = history[-1] if history else {}
    facts = {
        "model": f"embedded:{recipe.name}",
        "recipe": asdict(recipe),
        "steps_run": steps,
        "parameters": {"vae": count_parameters(vae), "text_encoder": count_parameters(text_encoder),
                       "unet": count_parameters(unet), "total": count_parameters(vae, text_encoder, unet)},
        "vocab_size": len(tokenizer),
        "longest_caption_tokens": longest,
        "train_images": len(pool),
        "val_images": len(val),
        **vae_facts,
        "render_seconds": round(render_seconds, 1),
        "unet_seconds": round(train_seconds, 1),
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": final.get("train_loss"),
        "final_val_loss": final.get("val_train"),
        "final_val_loss_heldout_captions": final.get("val_heldout"),
        "final_val_loss_shuffled_captions": final.get("val_shuffled"),
        "final_val_loss_null_caption": final.get("val_null"),
        "history": history,
        "checkpoints": saved,
    }
    facts["size_mb"] = round(folder_size_mb(out), 2)
    write_card(out, f"embedded:{recipe.name}", facts, SHAPES_CARD.format(**asdict(recipe), steps_run=steps,
                                                                          vae_steps_run=vae_steps))
    facts["size_mb"] = round(folder_size_mb(out), 2)
    return facts


SHAPES_CARD = """
A Stable Diffusion pipeline in miniature, trained from scratch by dclib on CPU (`dclib.train.shapes.train_shapes`).

- Data: the {n_scenes} `embedded:shapes-train` scenes (32x32 RGB), each re-captioned at every draw with a random
  TRAIN template that fits it; HELD-OUT templates are never trained on. 10% of captions are dropped to "" (the
  null prompt, for classifier-free guidance).
- VAE: `AutoencoderKL` {vae_channels}, 4x16x16 latents, MSE + {vae_kl_weight} x KL, {vae_steps_run} steps of batch
  {vae_batch}, then frozen. `scaling_factor` = 1 / std of the posterior means of the training images (as SD).
- Text encoder: `CLIPTextModel` (hidden {text_hidden}, {text_layers} layers, {text_heads} heads), trained jointly
  with the UNet from scratch; `CLIPTokenizer` whose every caption word is one token, model_max_length {max_length}.
- UNet: `UNet2DConditionModel` {unet_channels}, {layers_per_block} layer(s) per block; transformer blocks (self-attn
  + cross-attention to every text token) at the levels marked {attention_levels} (16x16, 8x8) and in the mid block;
  {prediction_type} prediction, DDPM {beta_schedule} betas {beta_start}..{beta_end}, T = 1000. {steps_run} steps
  of batch {batch_size}, AdamW lr {lr} ({warmup} warm-up steps, cosine), bf16 autocast = {bf16}, grad clip {grad_clip},
  EMA {ema_decay} (the shipped weights). Weights stored as fp16; dclib loads them as float32.
- Validation losses use fixed (t, eps) on {n_val} other scenes: `val_train` (TRAIN wording), `val_heldout`
  (HELD-OUT wording), `val_shuffled` (another scene's caption), `val_null` (empty prompt). The gap between
  `val_shuffled` and `val_train` is what the classifier uses.
"""


# ----------------------------------------------------------------------------------------------- contrastive


_ATTRS = ("shape1", "colour1", "size1", "pos1", "shape2", "colour2", "size2")
_SLOT_ATTR = {"shape1": "shape1", "colour1": "colour1", "size1": "size1", "where1": "pos1", "shape2": "shape2",
              "colour2": "colour2", "size2": "size2"}


def _scene_codes(scenes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Scene attributes as an int array [n, 7] (-1 for absent) and the scene kind: 0 one, 1 left_of, 2 above."""
    codes = np.array([[hash(s[a]) if s[a] is not None else -1 for a in _ATTRS] for s in scenes], np.int64)
    kind = np.array([0 if s["n_objects"] == 1 else (1 if s["relation"] == "left_of" else 2) for s in scenes])
    return codes, kind


def _template_mask(template) -> np.ndarray:
    slots = set(_SLOT.findall(template.text))
    return np.array([any(_SLOT_ATTR[s] == a for s in slots) for a in _ATTRS])


_SWAP = np.array([4, 1 + 4, 2 + 4, 3, 0, 1, 2])  # object 1 <-> object 2 (pos stays: it is set by the relation)


def caption_truth(scenes: list[dict], caption_scenes: list[dict], caption_templates: list) -> np.ndarray:
    """truth[i, j]: caption j (template j filled from caption_scenes[j]) is a true description of scenes[i].

    True when template j fits scene i and every attribute the template mentions agrees; templates of kind
    "two" ("a red circle and a blue square") do not state the order, so either object order matches.
    """
    codes, kind = _scene_codes(scenes)
    ccodes, _ = _scene_codes(caption_scenes)
    masks = np.stack([_template_mask(t) for t in caption_templates])            # [m, 7]
    tkind = np.array([{"one": 0, "left_of": 1, "above": 2, "two": 3}[t.kind] for t in caption_templates])
    fits = np.where(tkind[None] == 3, kind[:, None] > 0, kind[:, None] == tkind[None])
    same = (codes[:, None, :] == ccodes[None, :, :]) | ~masks[None]
    truth = same.all(-1)
    swapped = (codes[:, _SWAP][:, None, :] == ccodes[None, :, :]) | ~masks[None]
    truth |= swapped.all(-1) & (tkind[None] == 3)
    return truth & fits


def swap_scene(scene: dict, how: str) -> dict:
    """The shapes-wino swaps: 'attribute' (colours exchanged), 'relation' (objects exchanged), 'both'."""
    from ..data.shapes import _swapped

    return _swapped(scene, how)


def hard_negatives(scenes: list[dict], templates: list, rng: np.random.Generator | None = None,
                   per_scene: int | None = None) -> tuple[list[str], list[dict], list]:
    """Swapped captions of two-object scenes under the same template ("attribute": colours exchanged,
    "relation": objects exchanged, "both": shapes and sizes exchanged), kept only when they are false of the
    scene they were made from (exchanging the objects of "a red circle and a blue square" is not a negative).
    With ``per_scene``, at most that many (drawn with ``rng``) per scene."""
    from ..data import captions as cap

    cands = [(k, swap_scene(scene, how), template) for k, (scene, template) in enumerate(zip(scenes, templates))
             if scene["n_objects"] == 2 for how in ("attribute", "relation", "both")]
    if not cands:
        return [], [], []
    truth = caption_truth([scenes[k] for k, _, _ in cands], [o for _, o, _ in cands], [t for _, _, t in cands])
    valid: dict[int, list] = {}
    for c, (k, other, template) in enumerate(cands):
        if not truth[c, c]:
            valid.setdefault(k, []).append((other, template))
    texts, neg_scenes, neg_templates = [], [], []
    for k, options in valid.items():
        if per_scene is not None and len(options) > per_scene:
            options = [options[i] for i in sorted((rng or np.random.default_rng()).choice(len(options), per_scene,
                                                                                          replace=False))]
        for other, template in options:
            texts.append(cap.caption(other, template))
            neg_scenes.append(other)
            neg_templates.append(template)
    return texts, neg_scenes, neg_templates


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log sum_{j positive} softmax(logits_i)_j, averaged over rows (InfoNCE with several true captions)."""
    pos = logits.masked_fill(~positive, float("-inf")).logsumexp(-1)
    return (logits.logsumexp(-1) - pos).mean()


def build_clip(recipe: ClipRecipe, tokenizer):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(image_size=32, patch_size=recipe.patch_size, num_channels=3,
                              hidden_size=recipe.vision_hidden, intermediate_size=recipe.vision_intermediate,
                              num_hidden_layers=recipe.vision_layers, num_attention_heads=recipe.vision_heads,
                              projection_dim=recipe.projection_dim)
    text = text_config(tokenizer, recipe.text_hidden, recipe.text_layers, recipe.text_heads, recipe.text_intermediate)
    text.projection_dim = recipe.projection_dim
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=recipe.projection_dim)
    return CLIPModel(config)


def save_clip(model, tokenizer, path: Path, recipe: ClipRecipe) -> None:
    from ..adapters.loading import quiet_hf_logging

    path = Path(path)
    with quiet_hf_logging():
        copy.deepcopy(model).to(torch.float16).save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
    # A marker so `embedded:shapes-clip` resolves through dclib.adapters.loading.resolve_model_path; the
    # diffusion loader rejects it with a clear "is a CLIPModel" message.
    (path / "model_index.json").write_text(json.dumps(
        {"_class_name": "CLIPModel", "_dclib_kind": "contrastive", "resolution": 32,
         "loader": "dclib.contrastive.ContrastiveModel"}, indent=2) + "\n")


def _clip_features(model, pixels, ids):
    from ..contrastive import image_embeddings, text_embeddings

    return image_embeddings(model, pixels), text_embeddings(model, ids)


def use_fast_cpu_attention(*models) -> None:
    """Plain (bmm + softmax) attention for training: on CPU, the backward pass of torch's fused SDPA kernel
    made up ~30% of a training step at these sequence lengths (16-256 tokens); the maths is the same, and
    nothing of this is saved (loading gives the library defaults back)."""
    from diffusers.models.attention_processor import AttnProcessor

    for model in models:
        if hasattr(model, "set_attn_processor"):
            model.set_attn_processor(AttnProcessor())
        else:
            for config in (model.config, getattr(model.config, "text_config", None),
                           getattr(model.config, "vision_config", None)):
                if config is not None:
                    config._attn_implementation = "eager"


def train_shapes_clip(out: Path, steps: int | None = None, progress: bool = True,
                      recipe: ClipRecipe | None = None) -> dict:
    """Train ``embedded:shapes-clip`` into ``out`` (CLIPModel + tokenizer, safetensors); returns the facts."""
    from ..data import captions as cap
    from ..data.shapes import TRAIN_SEED

    recipe = recipe or ClipRecipe()
    steps = recipe.steps if steps is None else steps
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    started = time.perf_counter()
    pool = ScenePool(recipe.n_scenes, TRAIN_SEED)
    val = ScenePool(recipe.n_val, VAL_SEED)
    tokenizer = build_word_tokenizer(model_max_length=recipe.max_length)
    model = build_clip(recipe, tokenizer).train()
    use_fast_cpu_attention(model)
    ema = EMA(model, recipe.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    max_scale = float(np.log(100.0))

    # validation: image->caption top-1 among the val captions (TRAIN wording), and binding: does the true
    # caption beat its colour-swapped version (TRAIN and HELD-OUT wording) on two-object scenes
    vrng = np.random.default_rng(recipe.seed + 1)
    val_idx = np.arange(len(val))
    val_pixels = val.pixels(val_idx)
    val_texts, val_temps = val.captions(val_idx, vrng, "train")
    val_truth = torch.from_numpy(caption_truth(val.scenes, val.scenes, val_temps))
    swap_sets = {}
    for split in ("train", "heldout"):
        pos, neg = [], []
        for scene in val.scenes:
            if scene["n_objects"] == 2 and scene["colour1"] != scene["colour2"] and scene["shape1"] != scene["shape2"]:
                options = val.fitting(scene, split)
                template = options[int(vrng.integers(len(options)))]
                pos.append(cap.caption(scene, template))
                neg.append(cap.caption(swap_scene(scene, "attribute"), template))
        swap_sets[split] = (np.array([i for i, s in enumerate(val.scenes) if s["n_objects"] == 2
                                      and s["colour1"] != s["colour2"] and s["shape1"] != s["shape2"]]),
                            tokenize(tokenizer, pos), tokenize(tokenizer, neg))
    val_ids = tokenize(tokenizer, val_texts)

    @torch.inference_mode()
    def evaluate(m) -> dict:
        m.eval()
        from ..contrastive import text_embeddings

        img, txt = _clip_features(m, val_pixels, val_ids)
        top = (img @ txt.T).argmax(-1)
        res = {"i2t_top1": float(val_truth[torch.arange(len(top)), top].float().mean())}
        for split, (rows, pos, neg) in swap_sets.items():
            tp, tn = text_embeddings(m, pos), text_embeddings(m, neg)
            res[f"colour_swap_{split}"] = float(((img[rows] * tp).sum(-1) > (img[rows] * tn).sum(-1)).float().mean())
        return res

    history, losses, n_neg = [], [], []
    t_train = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {recipe.name}", disable=not progress)
    for step in bar:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen).numpy()
        texts, temps = pool.captions(idx, rng)
        scenes = [pool.scenes[i] for i in idx]
        cap_scenes, cap_temps = list(scenes), list(temps)
        if recipe.hard_negatives:
            neg_texts, neg_scenes, neg_temps = hard_negatives(scenes, temps, rng, recipe.hard_negatives)
            texts, cap_scenes, cap_temps = texts + neg_texts, cap_scenes + neg_scenes, cap_temps + neg_temps
            n_neg.append(len(neg_texts))
        truth = torch.from_numpy(caption_truth(scenes, cap_scenes, cap_temps))
        b = len(idx)
        with _autocast(recipe.bf16):
            img, txt = _clip_features(model, pool.pixels(idx), tokenize(tokenizer, texts))
        logits = model.logit_scale.exp() * (img.float() @ txt.float().T)
        # image -> text over all captions (incl. hard negatives); text -> image over the batch's own captions
        loss = 0.5 * (multi_positive_nce(logits, truth) + multi_positive_nce(logits[:, :b].T, truth[:, :b].T))
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, recipe.warmup, recipe.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_scale)
        ema.update(model, step)
        losses.append(loss.item())
        done = step + 1
        if done % recipe.eval_every == 0 or done == steps:
            v = evaluate(ema.model)
            history.append({"step": done, "train_loss": float(np.mean(losses[-recipe.eval_every:])),
                            "logit_scale": model.logit_scale.exp().item(), **{k: round(x, 4) for k, x in v.items()}})
            bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", i2t=f"{v['i2t_top1']:.2f}",
                            swap=f"{v['colour_swap_train']:.2f}/{v['colour_swap_heldout']:.2f}")
    train_seconds = time.perf_counter() - t_train
    save_clip(ema.model, tokenizer, out, recipe)
    final = history[-1] if history else {}
    facts = {
        "model": f"embedded:{recipe.name}",
        "recipe": asdict(recipe),
        "steps_run": steps,
        "parameters": {"vision": count_parameters(model.vision_model, model.visual_projection),
                       "text": count_parameters(model.text_model, model.text_projection),
                       "total": count_parameters(model)},
        "vocab_size": len(tokenizer),
        "train_images": len(pool),
        "mean_hard_negatives_per_batch": round(float(np.mean(n_neg)), 1) if n_neg else 0,
        "train_seconds": round(time.perf_counter() - started, 1),
        "loop_seconds": round(train_seconds, 1),
        "final_train_loss": final.get("train_loss"),
        "final_logit_scale": final.get("logit_scale"),
        "final_val": {k: final.get(k) for k in ("i2t_top1", "colour_swap_train", "colour_swap_heldout")},
        "history": history,
    }
    facts["size_mb"] = round(folder_size_mb(out), 2)
    write_card(out, f"embedded:{recipe.name}", facts, CLIP_CARD.format(**asdict(recipe), steps_run=steps))
    facts["size_mb"] = round(folder_size_mb(out), 2)
    return facts


CLIP_CARD = """
The contrastive baseline for `embedded:shapes` (`dclib.train.shapes.train_shapes_clip`): a transformers
`CLIPModel` trained from scratch on CPU. Load it with `dclib.contrastive.ContrastiveModel.from_pretrained`
(`model_index.json` here is only a marker so `embedded:shapes-clip` resolves).

- Data: the same {n_scenes} `embedded:shapes-train` scenes and random TRAIN-template captions as `embedded:shapes`
  (no augmentation); images in [-1, 1] exactly as `dclib.images.preprocess(image, 32, 3)` prepares them.
- Vision tower: ViT, {patch_size}x{patch_size} patches of 32x32 images, hidden {vision_hidden}, {vision_layers} layers.
  Text tower: the same size as the diffusion model's text encoder (hidden {text_hidden}, {text_layers} layers,
  {text_heads} heads) and the same tokenizer. Projection {projection_dim}; learnable temperature (CLIP's
  init, clamped at 100).
- Loss: symmetric InfoNCE over batches of {batch_size}, with several positives where a caption is true of several
  images in the batch (e.g. "a red circle" of every one-object red-circle scene), so true matches are never
  pushed apart. Hard negatives: for every two-object scene, up to {hard_negatives} of its captions with colours
  exchanged, objects exchanged or shapes exchanged (same template; only swaps that make the caption false of
  the scene), drawn at random, are added as extra captions on the image -> text side.
- {steps_run} steps, AdamW lr {lr} ({warmup} warm-up, cosine), weight decay {weight_decay}, grad clip {grad_clip},
  bf16 autocast = {bf16}, EMA {ema_decay} (the shipped weights), fp16 on disk.
- Validation on other scenes: `i2t_top1` (image -> caption retrieval among val captions, TRAIN wording),
  `colour_swap_train` / `colour_swap_heldout` (true caption scores above its colour-swapped version).
"""
