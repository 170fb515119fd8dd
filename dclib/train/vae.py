"""Stage 1 of the text-to-image recipe: train the small ``AutoencoderKL``, then encode the scenes once."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from .loop import StepLoss, train_loop
from .scenes import ScenePool
from .shapes_models import build_vae
from .shapes_recipes import ShapesRecipe


def train_vae(recipe: ShapesRecipe, pool: ScenePool, gen: torch.Generator, steps: int | None = None,
              progress: bool = True):
    """Reconstruction (MSE) + small KL; returns the frozen VAE and facts. Trained in fp32."""
    steps = recipe.vae_steps if steps is None else steps
    started = time.perf_counter()
    vae = build_vae(recipe).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)

    def step_loss(step: int) -> StepLoss:
        x = pool.pixels(torch.randint(0, len(pool), (recipe.vae_batch,), generator=gen))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        mse = F.mse_loss(recon, x)
        kl = posterior.kl().mean()
        return StepLoss(mse + recipe.vae_kl_weight * kl, mse.item(),
                        postfix={"mse": f"{mse.item():.4f}", "kl": f"{kl.item():.0f}"})

    # no EMA and no evaluation: the VAE is only a means to latents, judged by its final reconstruction
    losses = train_loop(vae, opt, step_loss, steps, lr=recipe.vae_lr, warmup=recipe.vae_warmup,
                        grad_clip=recipe.grad_clip, desc=f"train {recipe.name} VAE", progress=progress).losses
    vae.eval().requires_grad_(False)
    rec = losses[-1] if losses else float("nan")
    return vae, {"vae_steps": steps, "vae_final_mse": rec, "vae_seconds": round(time.perf_counter() - started, 1)}


@torch.no_grad()
def encode_latents(vae, pool: ScenePool, idx=None, batch: int = 500) -> torch.Tensor:
    """Posterior means (unscaled) of the pool's images, [n, 4, 16, 16] float32."""
    idx = np.arange(len(pool)) if idx is None else np.asarray(idx)
    return torch.cat([vae.encode(pool.pixels(idx[i:i + batch])).latent_dist.mean for i in range(0, len(idx), batch)])


@torch.inference_mode()
def reconstruction_mse(vae, pixels: torch.Tensor) -> float:
    return float(F.mse_loss(vae.decode(vae.encode(pixels).latent_dist.mean).sample, pixels))
