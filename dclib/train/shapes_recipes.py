"""The shapes recipes' settings: ``ShapesRecipe`` (embedded:shapes, embedded:shapes-25k) and ``ClipRecipe``
(embedded:shapes-clip), with the measured time budgets they were sized by."""
from __future__ import annotations

from dataclasses import dataclass

from .loop import Optimisation

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


@dataclass(kw_only=True)
class TextTower:
    """The captions' text encoder both shapes recipes build (trained jointly with the UNet, or as CLIP's text
    tower) and the word tokenizer's length."""

    max_length: int = 16           # tokenizer.model_max_length; the longest caption is 15 tokens with BOS/EOS
    text_hidden: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_intermediate: int = 256


@dataclass
class ShapesRecipe(TextTower, Optimisation):
    name: str = "shapes"
    world: str = "shapes"          # what it trains on (dclib.train.worlds): "shapes" scenes or "manyclass" pictures
    n_scenes: int = 50_000         # the embedded:shapes-train scenes (render_scenes(50_000, TRAIN_SEED))
    n_val: int = 256               # validation scenes (seed VAL_SEED) with fixed (t, eps)
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
    bf16: bool = True              # bf16 autocast (fp32 master weights); ~1.5x faster on AVX512-BF16 CPUs
    checkpoints: tuple = (500, 1000, 2000)


#: Independently trained text-to-image models of the shapes world (Table 10's "model versions"). The second is a
#: smaller budget from scratch, as SD 1.x and 2.x are separate runs: its own seed, the first half of the training
#: scenes, half the VAE and UNet steps, no intermediate checkpoints.
SHAPES_RECIPES = {
    "shapes": ShapesRecipe(),
    "shapes-25k": ShapesRecipe(name="shapes-25k", n_scenes=25_000, vae_steps=400, steps=2000, checkpoints=(),
                               seed=1),
    # The many-class world (the many-class issue: cost against the number of classes): 256 classes, 200 pictures
    # each, the shapes architecture. Evaluated every 500 steps on 512 validation pictures, so the curve shows
    # whether the loss still falls. A first run of 8,000 steps, sized to fit a session (the VAE took 0.5 s/step).
    # float32: trained on an AMD EPYC without AVX-512, where bf16 autocast ran 10x slower than float32.
    "manyclass": ShapesRecipe(name="manyclass", world="manyclass", n_scenes=51_200, n_val=512, steps=8000,
                              eval_every=500, checkpoints=(2000, 4000), seed=3, bf16=False),
}


@dataclass
class ClipRecipe(TextTower, Optimisation):
    name: str = "shapes-clip"
    world: str = "shapes"          # what it trains on (dclib.train.worlds), as ShapesRecipe.world
    n_scenes: int = 50_000
    n_val: int = 512
    vision_hidden: int = 96
    vision_layers: int = 4
    vision_heads: int = 4
    vision_intermediate: int = 384
    patch_size: int = 4            # 8x8 patches of a 32x32 image
    projection_dim: int = 64
    steps: int = 1200              # 0.93-1.04 s/step (1 contended thread)
    batch_size: int = 256
    weight_decay: float = 0.05
    # shapes: per two-object scene, up to this many swapped captions (3 = all; 0 = none); manyclass: per picture,
    # up to this many captions of classes one named attribute away
    hard_negatives: int = 3
    bf16: bool = True
    # manyclass: train and validate on pictures made harder as the evaluation pictures are (same nuisance ranges)
    hard_pictures: bool = False


#: the contrastive models by name (``python -m dclib train NAME``): each a partner of the text-to-image model of its
#: world, for Table 1's baseline and for top-k pre-pruning
CLIP_RECIPES = {
    "shapes-clip": ClipRecipe(),
    # float32, as the many-class text-to-image model (this host runs bf16 autocast 10x slower); on hard pictures,
    # since the first partner, trained on clean ones, kept the true class in its top 10 for 72% of the 200-class
    # test pictures (the many-class benchmark of stop 45)
    "manyclass-clip": ClipRecipe(name="manyclass-clip", world="manyclass", n_scenes=51_200, n_val=512,
                                 hard_negatives=2, bf16=False, hard_pictures=True),
}
