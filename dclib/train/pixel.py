"""Class-conditional pixel-space DDPMs for digits and MNIST (the DiT analogue of the book).

diffusers ``UNet2DModel`` with a class embedding table of K + 1 rows (row K = null class), eps-prediction,
T = 1000 linear betas, 10% label dropout (so classifier-free guidance works), AdamW with warm-up and cosine
decay, EMA weights, early stopping on a held-out loss. Saved as a DDPMPipeline folder with id2label.

A recipe with ``learned_variance`` is the DiT analogue: the UNet outputs twice the image channels (eps, then
v in [-1, 1] interpolating log sigma^2 between the posterior variance and beta_t, ``learned_range``) and trains
on improved DDPM's hybrid objective L_simple + lambda L_vlb. lambda = 0.001 of the VLB summed over T = 1000
timesteps is the per-timestep term with weight 1, which is what DiT adds to its MSE. The VLB term sees the eps
half detached (the "frozen mean"), so it trains the variance only and L_simple alone shapes eps.
"""
from __future__ import annotations

import copy
import time
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from ..adapters.loading import quiet_hf_logging
from ..data import embedded_arrays
from ..images import resize_center_crop, to_tensor
from ..objectives import GaussianPosterior
from .common import EMA, count_parameters, folder_size_mb, seeded
from .loop import Optimisation, StepLoss, train_loop


@dataclass
class PixelRecipe(Optimisation):
    name: str
    dataset: str  # embedded dataset name of the training split
    resolution: int
    block_out_channels: tuple = (32, 64)
    layers_per_block: int = 1
    add_attention: bool = False  # the mid-block attention costs time and does not help at 4x4 / 4x4
    _: KW_ONLY  # the rest by keyword, as Optimisation's settings (some given new values here) are
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    label_dropout: float = 0.1
    val_fraction: float = 0.1
    checkpoints: tuple = (250, 500, 1000, 2000)
    learned_variance: bool = False  # twice the output channels, learned_range variance, hybrid loss
    extra: dict = field(default_factory=dict)


RECIPES = {
    # ~0.1 s per step on 2 cores: about 7 minutes
    # (no intermediate checkpoints shipped: the version sweep uses MNIST's, and the package must stay small)
    "digits": PixelRecipe("digits", "digits-train", 8, (32, 64), steps=4000, checkpoints=()),
    # 28x28 MNIST prepared at 16x16; ~0.19 s per step at batch 64 on 2 cores: about 16 minutes
    "mnist": PixelRecipe("mnist", "mnist-train", 16, (32, 64, 64), steps=5000, batch_size=64,
                         checkpoints=(250, 500, 1000, 2500)),
    # MNIST's recipe with a learned variance (Table 5 needs one); 3000 steps, as MNIST's held-out loss is within
    # 3% of its 5000-step value by then
    "mnist-learned-variance": PixelRecipe("mnist-learned-variance", "mnist-train", 16, (32, 64, 64), steps=3000,
                                          batch_size=64, checkpoints=(), learned_variance=True),
}


def load_pixels(dataset: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images prepared exactly as the classifier prepares them (bicubic resize + center crop, [-1, 1])."""
    split = embedded_arrays(dataset)
    pixels = torch.stack([to_tensor(resize_center_crop(Image.fromarray(np.asarray(a)), resolution), 1)
                          for a in split.images])
    return pixels, torch.tensor(np.asarray(split.labels), dtype=torch.long), list(split.class_names)


# the betas of build_scheduler's linear schedule (the learned variance's posterior reads them)
BETAS = torch.linspace(1e-4, 0.02, 1000)


def build_scheduler(learned_variance: bool = False) -> DDPMScheduler:
    """T = 1000 linear betas 1e-4..0.02; ``learned_range`` when the UNet also outputs its variance."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False, variance_type="learned_range" if learned_variance else "fixed_small")


def build_pipeline(unet, class_names):
    learned = unet.config.out_channels == 2 * unet.config.in_channels
    pipe = DDPMPipeline(unet=unet, scheduler=build_scheduler(learned))
    pipe.register_to_config(id2label={str(i): n for i, n in enumerate(class_names)})
    return pipe


def save(unet, class_names, path: Path) -> None:
    with quiet_hf_logging():
        half = copy.deepcopy(unet).to(torch.float16)  # fp16 on disk keeps the package small; loads as fp32
        build_pipeline(half, class_names).save_pretrained(path, safe_serialization=True)


def build_unet(recipe: PixelRecipe, n_classes: int) -> UNet2DModel:
    """Class-conditional UNet: K + 1 class embeddings (row K = the null class for label dropout)."""
    n_levels = len(recipe.block_out_channels)
    return UNet2DModel(sample_size=recipe.resolution, in_channels=1, out_channels=2 if recipe.learned_variance else 1,
                       block_out_channels=recipe.block_out_channels, layers_per_block=recipe.layers_per_block,
                       down_block_types=("DownBlock2D",) * n_levels, up_block_types=("UpBlock2D",) * n_levels,
                       norm_num_groups=8, num_class_embeds=n_classes + 1, add_attention=recipe.add_attention)


def split_validation(recipe: PixelRecipe, n_images: int, gen: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation rows, training rows) of the recipe's training split: the first draw of its seeded generator.
    The validation rows are never trained on and no test or figure uses them, so the model card's temperature
    is fitted there (:mod:`dclib.train.card_temperature`)."""
    gen = gen if gen is not None else torch.Generator().manual_seed(recipe.seed)
    perm = torch.randperm(n_images, generator=gen)
    n_val = int(n_images * recipe.val_fraction)
    return perm[:n_val], perm[n_val:]


def train(recipe: PixelRecipe, out: Path, steps: int | None = None, progress: bool = True) -> dict:
    steps = steps or recipe.steps
    out = Path(out)
    gen, _ = seeded(recipe.seed)
    pixels, labels, class_names = load_pixels(recipe.dataset, recipe.resolution)
    n_classes = len(class_names)
    val_idx, train_idx = split_validation(recipe, len(pixels), gen)

    unet = build_unet(recipe, n_classes)
    ema = EMA(unet, recipe.ema_decay)
    opt = recipe.adamw(unet)
    scheduler = build_scheduler(recipe.learned_variance)
    posterior = GaussianPosterior(BETAS, "learned_range") if recipe.learned_variance else None

    def losses(model, x0, t, eps, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_simple, L_vlb in bits per dimension; 0 without a learned variance)."""
        xt = scheduler.add_noise(x0, eps, t)
        out = model(xt, t, class_labels=y).sample
        simple = F.mse_loss(out[:, :1], eps)
        if posterior is None:
            return simple, torch.zeros(())
        vlb = posterior.vlb_terms(x0, xt, t, out[:, :1].detach(), out[:, 1:]).mean()
        return simple, vlb

    # a fixed held-out batch of (t, eps) so validation losses are comparable across steps
    vgen = torch.Generator().manual_seed(recipe.seed + 1)
    val_x = pixels[val_idx]
    val_t = torch.randint(0, 1000, (len(val_x),), generator=vgen)
    val_eps = torch.randn(val_x.shape, generator=vgen)
    val_y = labels[val_idx]

    def step_loss(step: int) -> StepLoss:
        idx = train_idx[torch.randint(0, len(train_idx), (recipe.batch_size,), generator=gen)]
        x0, y = pixels[idx], labels[idx].clone()
        y[torch.rand(len(y), generator=gen) < recipe.label_dropout] = n_classes  # null class
        t = torch.randint(0, 1000, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        simple, vlb = losses(unet, x0, t, eps, y)
        loss = simple + vlb
        return StepLoss(loss, loss.item())

    best = (float("inf"), 0)

    def evaluate(model, step: int) -> dict:
        nonlocal best
        with torch.inference_mode():
            simple, vlb = (float(x) for x in losses(model, val_x, val_t, val_eps, val_y))
        v = simple + vlb  # the objective trained on, so early stopping also watches the variance
        if v < best[0]:
            best = (v, step)
            save(model, class_names, out)  # early stopping: the shipped weights are the best EMA
        return {"val_loss": simple, **({"val_vlb_bits_per_dim": vlb} if posterior is not None else {})}

    started = time.perf_counter()
    history = train_loop(
        unet, opt, step_loss, steps, lr=recipe.lr, warmup=recipe.warmup, grad_clip=recipe.grad_clip, ema=ema,
        evaluate=evaluate, eval_every=recipe.eval_every, train_loss_window=1,  # the last step's loss
        describe=lambda row: {"loss": f"{row['train_loss']:.4f}",
                              "val": f"{row['val_loss'] + row.get('val_vlb_bits_per_dim', 0.0):.4f}"},
        checkpoints=recipe.checkpoints,
        save_checkpoint=lambda step: save(ema.model, class_names, out / "checkpoints" / f"step-{step:05d}"),
        desc=f"train {recipe.name}", progress=progress).history
    seconds = time.perf_counter() - started
    return {
        "model": f"embedded:{recipe.name}",
        "recipe": asdict(recipe),
        "steps_run": steps,
        "best_step": best[1],
        "best_val_loss": best[0],
        "parameters": count_parameters(unet),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "train_seconds": round(seconds, 1),
        "history": history,
        "size_mb": round(folder_size_mb(out), 2),
    }
