"""Stage 2 of the text-to-image recipe and the recipe end to end: ``train_shapes`` builds ``embedded:shapes``.

The text encoder and the UNet train jointly on the frozen VAE's latents (eps- or v-prediction, optionally with
every noise level weighted alike); the shipped weights are the EMA, saved as a ``StableDiffusionPipeline``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import EMA, bf16_autocast, count_parameters, folder_size_mb, start_training, write_card
from .loop import ResumeFile, StepLoss, train_loop
from .shapes_models import (build_scheduler, build_text_encoder, build_unet, build_vae, check_prediction_type,
                            save_pipeline, use_fast_cpu_attention)
from .shapes_recipes import ShapesRecipe
from .tokenizer import build_word_tokenizer, tokenize
from .vae import encode_latents, reconstruction_mse, train_vae
from .worlds import world_of


def training_target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output: eps, or v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022)."""
    check_prediction_type(prediction_type)
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



def trained_vae(recipe: ShapesRecipe, pool, gen: torch.Generator, rng: np.random.Generator, steps: int,
                progress: bool, saved: Path, key: str):
    """:func:`train_vae`, or the VAE that a stopped run of the same recipe (``key``) saved at ``saved`` after it,
    with the random state it left (so the next stage draws what it would have drawn)."""
    if saved.exists():
        state = torch.load(saved, weights_only=True)
        if state["key"] != key:
            raise ValueError(f"{saved} holds a stopped run of another recipe or step count: delete it to start "
                             "afresh, or train into another folder")
        vae = build_vae(recipe)
        vae.load_state_dict(state["vae"])
        vae.eval().requires_grad_(False)
        gen.set_state(state["gen"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        return vae, json.loads(state["facts"])
    vae, facts = train_vae(recipe, pool, gen, steps, progress)
    saved.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "vae": vae.state_dict(), "gen": gen.get_state(), "rng": json.dumps(rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(), "facts": json.dumps(facts)}, saved.with_suffix(".tmp"))
    os.replace(saved.with_suffix(".tmp"), saved)
    return vae, facts


def train_shapes(out: Path, steps: int | None = None, progress: bool = True, recipe: ShapesRecipe | None = None,
                 vae_steps: int | None = None) -> dict:
    """Train ``embedded:shapes`` into ``out`` (a StableDiffusionPipeline folder); returns the facts."""
    recipe = recipe or ShapesRecipe()
    if recipe.loss_weighting not in LOSS_WEIGHTINGS:  # before minutes of VAE training, not after
        raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {recipe.loss_weighting!r}")
    vae_steps = recipe.vae_steps if vae_steps is None else vae_steps
    world = world_of(recipe)  # before minutes of VAE training, too
    out, steps, gen, rng, started = start_training(out, recipe, steps)

    pool, val = world.pools(recipe.n_scenes, recipe.n_val)
    render_seconds = time.perf_counter() - started

    # ---- stage 1: VAE, then frozen; latents of the whole pool computed once. A stopped run keeps both stages'
    # progress in out/resume (the same weights as a run never stopped; tests/test_train_shapes.py)
    key = json.dumps({"recipe": asdict(recipe), "steps": steps, "vae_steps": vae_steps}, sort_keys=True)
    vae, vae_facts = trained_vae(recipe, pool, gen, rng, vae_steps, progress, out / "resume" / "vae.pt", key)
    t0 = time.perf_counter()
    latents = encode_latents(vae, pool)
    scaling = float(recipe.latent_scale / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents *= scaling
    val_latents = encode_latents(vae, val) * scaling
    vae_facts.update(scaling_factor=scaling, encode_seconds=round(time.perf_counter() - t0, 1),
                     val_reconstruction_mse=reconstruction_mse(vae, val.pixels(np.arange(len(val)))))

    # ---- stage 2: text encoder + UNet, jointly
    tokenizer = build_word_tokenizer(world.words(), model_max_length=recipe.max_length)
    longest = world.longest_tokens(tokenizer)
    if longest > recipe.max_length:
        raise ValueError(f"max_length {recipe.max_length} truncates captions of {longest} tokens")
    text_encoder = build_text_encoder(recipe, tokenizer)
    unet = build_unet(recipe, latents.shape[-1])
    use_fast_cpu_attention(unet, text_encoder)
    model = torch.nn.ModuleDict({"unet": unet, "text": text_encoder}).train()
    ema = EMA(model, recipe.ema_decay)
    opt = recipe.adamw(model)
    scheduler = build_scheduler(recipe)
    abar = scheduler.alphas_cumprod  # float32, for the v-prediction target

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
    val_xt = scheduler.add_noise(val_latents, val_eps, val_t)
    val_target = training_target(recipe.prediction_type, val_latents, val_eps, abar[val_t].view(-1, 1, 1, 1))

    balance = None if recipe.loss_weighting == "none" else \
        TimestepLossBalance(floor=1.0 if recipe.loss_weighting == "per-timestep-boost" else None)

    def step_loss(step: int) -> StepLoss:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen)
        texts, _ = pool.captions(idx.numpy(), rng)
        texts = ["" if drop else t for t, drop in zip(texts, rng.random(len(texts)) < recipe.caption_dropout)]
        ids = tokenize(tokenizer, texts)
        x0 = latents[idx]
        t = torch.randint(0, 1000, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = scheduler.add_noise(x0, eps, t)
        with bf16_autocast(recipe.bf16):
            cond = text_encoder(ids)[0]
            pred = unet(xt, t, encoder_hidden_states=cond).sample
        target = training_target(recipe.prediction_type, x0, eps, abar[t].view(-1, 1, 1, 1))
        per_sample = F.mse_loss(pred.float(), target, reduction="none").flatten(1).mean(1)
        loss = (per_sample * balance(t, per_sample.detach())).mean() if balance else per_sample.mean()
        return StepLoss(loss, per_sample.mean().item())  # the history reports the unweighted loss

    @torch.inference_mode()
    def evaluate(m, step: int) -> dict:
        m.eval()
        row = {}
        for k, ids in val_ids.items():
            pred = m["unet"](val_xt, val_t, encoder_hidden_states=m["text"](ids)[0]).sample
            row[f"val_{k}"] = round(float(F.mse_loss(pred, val_target)), 5)
        return row

    def save(path: Path) -> None:
        save_pipeline(vae, ema.model["text"], tokenizer, ema.model["unet"], path, recipe)

    saved = []

    def save_checkpoint(step: int) -> None:
        save(out / "checkpoints" / f"step-{step:05d}")
        saved.append(f"step-{step:05d}")

    def random_state() -> dict:
        return {"gen": gen.get_state(), "rng": json.dumps(rng.bit_generator.state),
                "balance": None if balance is None else balance.running}

    def set_random_state(state: dict) -> None:
        gen.set_state(state["gen"])
        rng.bit_generator.state = json.loads(state["rng"])
        if balance is not None:
            balance.running = state["balance"]

    resume = ResumeFile(out / "resume" / "unet.pt", recipe.eval_every, random_state, set_random_state, key)
    t_train = time.perf_counter()
    log = train_loop(
        model, opt, step_loss, steps, lr=recipe.lr, warmup=recipe.warmup, grad_clip=recipe.grad_clip, ema=ema,
        evaluate=evaluate, eval_every=recipe.eval_every,
        describe=lambda row: {"loss": f"{row['train_loss']:.4f}", "val": f"{row['val_train']:.4f}",
                              "shuffled": f"{row['val_shuffled']:.4f}"},
        checkpoints=recipe.checkpoints, save_checkpoint=save_checkpoint,
        resume=resume,
        desc=f"train {recipe.name} UNet", progress=progress)
    history = log.history
    saved[:0] = [f"step-{c:05d}" for c in recipe.checkpoints if c <= log.resumed_from and c < steps]
    train_seconds = time.perf_counter() - t_train
    save(out)
    (out / "resume" / "vae.pt").unlink(missing_ok=True)  # the final weights are saved: nothing to go on from
    resume.done()
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
        "resumed_from_step": log.resumed_from,  # > 0: the seconds above are of this process only
        "unet_seconds_all_runs": None if log.earlier_seconds is None  # every process's steps (None: unrecorded)
        else round(log.earlier_seconds + train_seconds, 1),
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
                                                                          vae_steps_run=vae_steps,
                                                                          data=world.data.format(**asdict(recipe))))
    facts["size_mb"] = round(folder_size_mb(out), 2)
    return facts


SHAPES_CARD = """
A Stable Diffusion pipeline in miniature, trained from scratch by dclib on CPU (`dclib.train.shapes.train_shapes`).

- Data: {data}; HELD-OUT templates are never trained on. 10% of captions are dropped to "" (the
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
- Validation losses use fixed (t, eps) on {n_val} other pictures: `val_train` (TRAIN wording), `val_heldout`
  (HELD-OUT wording), `val_shuffled` (another picture's caption), `val_null` (empty prompt). The gap between
  `val_shuffled` and `val_train` is what the classifier uses.
"""
